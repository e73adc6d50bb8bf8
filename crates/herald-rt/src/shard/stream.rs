//! The live event stream: every event of a tenant, in journal order, as its
//! `EventAccepted` record becomes durable, with a bounded replay window for clients that
//! reconnect.
//!
//! # Shape
//!
//! ```text
//! shard thread: append(EventAccepted) ─► StreamTap.pending ─► durable ─► ShardStream
//!                                                                         ├─ window: per tenant, bounded
//!                                                                         └─ subscribers: bounded queues
//! foreign thread: Subscription::recv ◄── backlog (replayed from the window, a chunk at a time) then the queue
//! ```
//!
//! * **Sequence.** An event's `seq` is the journal sequence number of its
//!   `EventAccepted` record. A tenant lives on exactly one shard and a journal's numbers
//!   only grow, so `seq` grows per tenant, survives restarts and needs no extra record.
//!   It is not dense: records of other kinds and other tenants take numbers in between.
//! * **Window.** The shard keeps each tenant's recent events, bounded by age
//!   ([`StreamConfig::window_ms`]), by count per tenant ([`StreamConfig::window_events_max`])
//!   and by envelope bytes per shard ([`StreamConfig::window_bytes_max`]). It keeps where
//!   the journal holds each envelope (read through the journal's read-only mapping, also
//!   from subscribers' threads), not a copy, and renders an event's message only for
//!   the subscribers it is sent to. It holds only events the journal still holds: on
//!   start it is rebuilt from every journal frame still on disk, and events in segments
//!   the journal deletes (those before the latest checkpoint's, on roll and on a clean
//!   stop) leave it then, so a live window reaches back as far as a restarted one.
//! * **Resume.** A subscriber that gives `after = S` gets every event with `seq > S`
//!   from the window, then live events, with no gap and no repeat (where the replay ends
//!   and the queue begins is fixed under one lock). When an event after `S` may have
//!   left the window, the subscription is refused with [`SubscribeError::OutsideWindow`],
//!   so the client knows to resynchronise. The replay is taken from the window
//!   [`REPLAY_CHUNK_EVENTS`] at a time as the subscriber reads; one that reads so slowly
//!   that the window drops events it has yet to replay is cut off
//!   ([`StreamEnd::Overflowed`]), as one whose queue fills is.
//! * **Bounds.** The shard only ever `try_send`s into a subscriber's bounded queue; a
//!   subscriber whose queue is full is cut off ([`StreamEnd::Overflowed`]) and never
//!   slows the shard or other subscribers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use herald_core::record::{self, EventAccepted};
use herald_core::{EventFilter, EventType, FastHashMap, Record, RECORD_VERSION};

/// Default age of the oldest event kept for resuming: ten minutes covers a client's
/// reconnect after a network change, a redeploy or a laptop lid.
pub const STREAM_WINDOW_MS_DEFAULT: u64 = 10 * 60 * 1000;
/// Default most events kept per tenant for resuming: a busy tenant's ten minutes.
pub const STREAM_WINDOW_EVENTS_MAX_DEFAULT: usize = 100_000;
/// Default most bytes of events (their envelopes) kept per shard for resuming (the
/// oldest go first): what the window may hold the journal's mapped pages for, whatever
/// the number of tenants.
pub const STREAM_WINDOW_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// Largest per-subscription queue: beyond this a client is better served by resuming
/// from the window than by a queue held for it.
pub const STREAM_QUEUE_MAX_LIMIT: usize = 1 << 20;
/// Most events a replaying subscription copies out of the window per hold of its lock.
/// The lock is the shard thread's too (every durable event passes through it), and a
/// resume from the window's far end reaches back up to `window_events_max` events
/// (100,000 by default): copied whole, with a location filter read per event, that held
/// the shard for tens of milliseconds per subscriber and kept a copy of the range (40
/// bytes an event, and the journal segments it maps) for as long as the client took to
/// read it. 1,024 entries copy in microseconds; the filter is applied outside the lock.
pub const REPLAY_CHUNK_EVENTS: usize = 1024;
/// Entries of departed events the window's order queue may hold beyond as many as the
/// live ones before it is compacted: a small window compacts now and then, not at every
/// event.
const ORDER_SLACK: usize = 64;

/// The stream's replay window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Events older than this (by accept time) leave the window.
    pub window_ms: u64,
    /// Most events kept per tenant.
    pub window_events_max: usize,
    /// Most bytes (envelopes) kept per shard.
    pub window_bytes_max: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            window_ms: STREAM_WINDOW_MS_DEFAULT,
            window_events_max: STREAM_WINDOW_EVENTS_MAX_DEFAULT,
            window_bytes_max: STREAM_WINDOW_BYTES_MAX_DEFAULT,
        }
    }
}

/// One event on the stream.
#[derive(Debug)]
pub struct StreamEvent {
    /// Per-tenant sequence (the journal sequence number of the event's record).
    pub seq: u64,
    /// Event type, for filters.
    pub event_type: EventType,
    /// `location_id` of the envelope, for filters.
    pub location_id: Option<String>,
    /// When the event was accepted (Unix ms).
    pub accepted_at_ms: u64,
    /// The message: the event's envelope (the webhook body's fields) with a leading
    /// `"seq"` member, rendered once for all the live subscribers it is sent to (and
    /// once for each subscriber that replays it from the window).
    pub message: Arc<str>,
}

impl StreamEvent {
    /// Builds the stream event of an accepted record, or `None` when the record holds no
    /// envelope (a record journaled before envelopes were kept for every event).
    pub fn of(seq: u64, accepted: &EventAccepted) -> Option<StreamEvent> {
        let event_type = EventType::parse(&accepted.event_type).ok()?;
        StreamEvent::with_type(seq, accepted, event_type, &mut String::new())
    }

    /// [`StreamEvent::of`] with the event type already parsed, rendering the message in
    /// `scratch` (kept by the caller, so that only the message's own copy is allocated).
    fn with_type(
        seq: u64,
        accepted: &EventAccepted,
        event_type: EventType,
        scratch: &mut String,
    ) -> Option<StreamEvent> {
        StreamEvent::render(seq, event_type, accepted.at_ms, &accepted.body, scratch)
    }

    /// The stream event of envelope `body` (`None` unless it is UTF-8 text of a JSON
    /// object, as every envelope is), rendered in `scratch`.
    fn render(
        seq: u64,
        event_type: EventType,
        accepted_at_ms: u64,
        body: &[u8],
        scratch: &mut String,
    ) -> Option<StreamEvent> {
        use std::fmt::Write;
        let text = std::str::from_utf8(body).ok()?;
        let members = text.strip_prefix('{')?;
        let location_id = herald_core::envelope_location_id(body).map(str::to_string);
        scratch.clear();
        scratch.reserve(text.len() + 24);
        write!(scratch, "{{\"seq\":{seq},").expect("writing to a String");
        scratch.push_str(members);
        Some(StreamEvent {
            seq,
            event_type,
            location_id,
            accepted_at_ms,
            message: Arc::from(scratch.as_str()),
        })
    }
}

/// An event's envelope as the window keeps it: where the journal holds it, or (events
/// appended without a position) a copy.
#[derive(Clone, Debug)]
pub(crate) enum Envelope {
    /// Read through the journal's mapping.
    Mapped(herald_journal::Mapped),
    /// Its own copy.
    Owned(Arc<[u8]>),
}

impl Envelope {
    fn bytes(&self) -> &[u8] {
        match self {
            Envelope::Mapped(mapped) => mapped.bytes(),
            Envelope::Owned(bytes) => bytes,
        }
    }
}

/// An event as the window keeps it: its envelope where the journal holds it (40 bytes
/// in all, against ~400 for a rendered message and its [`StreamEvent`]: with a
/// million deliveries pending, the last 100,000 events of their tenant cost ~40 MB
/// rendered), rendered into a [`StreamEvent`] only for the subscribers it is sent to.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    seq: u64,
    accepted_at_ms: u64,
    event_type: EventType,
    envelope: Envelope,
}

impl Kept {
    /// `envelope` as the window keeps it, if it can be shown: a JSON object (its text is
    /// checked when rendered; the shard wrote it, from data it checked).
    pub(crate) fn new(
        seq: u64,
        accepted_at_ms: u64,
        event_type: EventType,
        envelope: Envelope,
    ) -> Option<Kept> {
        (envelope.bytes().first() == Some(&b'{')).then_some(Kept {
            seq,
            accepted_at_ms,
            event_type,
            envelope,
        })
    }

    fn passes(&self, filter: &StreamFilter) -> bool {
        filter.matches_parts(&self.event_type, || {
            herald_core::envelope_location_id(self.envelope.bytes())
        })
    }

    fn render(&self, scratch: &mut String) -> Option<Arc<StreamEvent>> {
        StreamEvent::render(
            self.seq,
            self.event_type.clone(),
            self.accepted_at_ms,
            self.envelope.bytes(),
            scratch,
        )
        .map(Arc::new)
    }

    fn len(&self) -> usize {
        self.envelope.bytes().len()
    }
}

/// Most names (tenants and event types each) [`Names`] keeps before it starts over: a
/// shard sees a bounded set of both in practice (event types are at most 4,096 per
/// dispatcher), and a burst of new names costs only the parses and copies the cache
/// would have saved.
const STREAM_NAMES_MAX: usize = 4096;

/// The tap's shared copies of tenant ids and event types, so that an event on the
/// stream parses and copies neither when its tenant and type were seen before.
#[derive(Default)]
struct Names {
    tenants: FastHashMap<Box<str>, Arc<str>>,
    types: FastHashMap<Box<str>, EventType>,
}

impl Names {
    fn tenant(&mut self, tenant: &str) -> Arc<str> {
        if let Some(shared) = self.tenants.get(tenant) {
            return Arc::clone(shared);
        }
        if self.tenants.len() >= STREAM_NAMES_MAX {
            self.tenants.clear();
        }
        let shared: Arc<str> = Arc::from(tenant);
        self.tenants.insert(Box::from(tenant), Arc::clone(&shared));
        shared
    }

    fn event_type(&mut self, event_type: &str) -> Option<EventType> {
        if let Some(parsed) = self.types.get(event_type) {
            return Some(parsed.clone());
        }
        let parsed = EventType::parse(event_type).ok()?;
        if self.types.len() >= STREAM_NAMES_MAX {
            self.types.clear();
        }
        self.types.insert(Box::from(event_type), parsed.clone());
        Some(parsed)
    }
}

/// Which events a subscriber receives: event-type filters as webhooks have them
/// (none: every type), optionally narrowed to locations (an event without a location
/// then does not match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFilter {
    /// Event-type filters; empty means every type.
    pub events: Vec<EventFilter>,
    /// Location ids; empty means every location (and none).
    pub locations: Vec<String>,
}

impl StreamFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &StreamEvent) -> bool {
        self.matches_parts(&event.event_type, || event.location_id.as_deref())
    }

    /// Whether an event of `event_type` at `location` passes (the location is looked
    /// up only when a filter names locations).
    fn matches_parts<'a>(
        &self,
        event_type: &EventType,
        location: impl FnOnce() -> Option<&'a str>,
    ) -> bool {
        let type_ok = self.events.is_empty() || self.events.iter().any(|f| f.matches(event_type));
        type_ok
            && (self.locations.is_empty()
                || location().is_some_and(|location| self.locations.iter().any(|l| l == location)))
    }
}

/// Why a subscription could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// Events after `after` may have left the replay window: the client must
    /// resynchronise (read current state elsewhere) and subscribe without `after`.
    #[error(
        "events after seq {after} are no longer in the replay window (it holds this tenant's \
         events after seq {floor}); resynchronise and subscribe again without `after`"
    )]
    OutsideWindow {
        /// The resume point asked for.
        after: u64,
        /// Every event of the tenant with a larger seq is in the window.
        floor: u64,
    },
    /// `after` is beyond anything this server journaled (a resume point from another
    /// server or from before its data was wiped).
    #[error(
        "seq {after} is ahead of this server's stream (its last is {last}); resynchronise \
         and subscribe again without `after`"
    )]
    Ahead {
        /// The resume point asked for.
        after: u64,
        /// The last seq the shard journaled.
        last: u64,
    },
    /// The engine is stopping.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Its queue was full when an event arrived, or (replaying from the window) events
    /// it had yet to replay left the window: the subscriber read too slowly and was cut
    /// off. Resume with `after` = the last seq received.
    Overflowed,
    /// The engine stopped.
    ShuttingDown,
}

const OPEN: u8 = 0;
const OVERFLOWED: u8 = 1;
const STOPPED: u8 = 2;

struct Subscriber {
    id: u64,
    filter: StreamFilter,
    sender: async_channel::Sender<Arc<StreamEvent>>,
    state: Arc<AtomicU8>,
}

struct TenantStream {
    events: VecDeque<Kept>,
    /// Highest seq of this tenant's events that is no longer in `events` (or may never
    /// have been): a resume from below it could miss events.
    floor: u64,
    subscribers: Vec<Subscriber>,
}

struct Window {
    tenants: FastHashMap<Arc<str>, TenantStream>,
    /// Every event in the window by seq, naming its tenant, oldest first, for age and
    /// byte eviction across tenants; events are added in seq order, so a queue. An event
    /// that left its tenant's entry by the per-tenant count stays here until it reaches
    /// the front or the queue is compacted (`stale`): an entry is live exactly when its
    /// tenant's oldest event is at or before its seq, since a tenant's events only leave
    /// from the front.
    order: VecDeque<(u64, Arc<str>)>,
    /// Events held in the tenants' entries (the live entries of `order`).
    events: usize,
    bytes: usize,
    /// Floor of tenants without an entry (entries are dropped when they hold nothing).
    floor: u64,
    /// Highest seq the shard made durable.
    last_seq: u64,
    closed: bool,
    next_subscriber: u64,
}

/// One journaled record as the window's rebuild sees it.
pub(crate) enum Journaled {
    /// An accepted event of a tenant.
    Event(Arc<str>, Kept),
    /// An accepted event at this seq whose envelope cannot be shown (an older layout).
    Unreadable(u64),
    /// A tenant's events were purged at this seq.
    Purged(Arc<str>, u64),
    /// The journal could not be read on from here.
    Broken,
}

/// One shard's stream: its window and subscribers. Shared between the shard thread
/// (which adds events) and the threads that subscribe; the lock is held for a few
/// pointer copies per event and subscriber.
pub struct ShardStream {
    config: StreamConfig,
    window: Mutex<Window>,
}

impl std::fmt::Debug for ShardStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStream")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ShardStream {
    /// An empty stream.
    pub fn new(config: StreamConfig) -> ShardStream {
        ShardStream {
            config,
            window: Mutex::new(Window {
                tenants: FastHashMap::default(),
                order: VecDeque::new(),
                events: 0,
                bytes: 0,
                floor: 0,
                last_seq: 0,
                closed: false,
                next_subscriber: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // The window holds no invariant a panic half-way could break beyond a lost event.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the window from journaled records, oldest first: `first_seq` is the first
    /// frame still on disk (nothing older is known), `last_seq` the journal's last. The
    /// window's bounds hold throughout, so a long journal costs no more memory than the
    /// window.
    pub(crate) fn rebuild(
        &self,
        first_seq: u64,
        last_seq: u64,
        records: impl IntoIterator<Item = Journaled>,
        now_ms: u64,
    ) {
        let mut window = self.lock();
        window.floor = first_seq.saturating_sub(1);
        window.last_seq = last_seq;
        for record in records {
            match record {
                Journaled::Event(tenant, event) => {
                    self.insert(&mut window, tenant, event);
                    self.evict(&mut window, now_ms);
                }
                // An accepted event the window cannot show: resuming across it must fail.
                Journaled::Unreadable(seq) => Self::forget_through(&mut window, seq),
                Journaled::Purged(tenant, seq) => Self::purge_in(&mut window, &tenant, seq),
                // The rest cannot be read: nothing up to the journal's end is known.
                Journaled::Broken => {
                    Self::forget_through(&mut window, last_seq);
                    break;
                }
            }
        }
        self.evict(&mut window, now_ms);
    }

    /// Drops every event of `tenant` (purged at `seq`): resuming its stream from before
    /// `seq` is refused as outside the window. Its subscribers, if any, stay.
    pub(crate) fn purge(&self, tenant: &str, seq: u64) {
        let mut window = self.lock();
        Self::purge_in(&mut window, tenant, seq);
    }

    fn purge_in(window: &mut Window, tenant: &str, seq: u64) {
        let Some(stream) = window.tenants.get_mut(tenant) else {
            return;
        };
        stream.floor = stream.floor.max(seq);
        for event in stream.events.drain(..) {
            window.bytes -= event.len();
            window.events -= 1;
        }
        // Their entries in `order` are skipped as they reach its front (an event that
        // already left its tenant's entry).
        if stream.subscribers.is_empty() {
            window.tenants.remove(tenant);
            window.floor = window.floor.max(seq);
        }
    }

    /// Drops every event up to `seq` and raises every floor to it.
    fn forget_through(window: &mut Window, seq: u64) {
        window.floor = window.floor.max(seq);
        for tenant in window.tenants.values_mut() {
            tenant.floor = tenant.floor.max(seq);
            while tenant.events.front().is_some_and(|event| event.seq <= seq) {
                if let Some(event) = tenant.events.pop_front() {
                    window.bytes -= event.len();
                    window.events -= 1;
                }
            }
        }
        while window.order.front().is_some_and(|(at, _)| *at <= seq) {
            window.order.pop_front();
        }
        window
            .tenants
            .retain(|_, tenant| !tenant.events.is_empty() || !tenant.subscribers.is_empty());
    }

    /// Drops every event the journal no longer holds (it holds `first_seq` on), as a
    /// restart would: the window reads envelopes through the journal's mappings, which
    /// would otherwise keep compacted segments on disk.
    pub(crate) fn journal_from(&self, first_seq: u64) {
        let through = first_seq.saturating_sub(1);
        let mut window = self.lock();
        if window.floor < through {
            Self::forget_through(&mut window, through);
        }
    }

    /// Adds durable events (in seq order) and hands each to the matching subscribers,
    /// rendered once for all of them (`scratch` is the rendering's buffer).
    pub(crate) fn publish_with(
        &self,
        events: &mut Vec<(Arc<str>, Kept)>,
        now_ms: u64,
        scratch: &mut String,
    ) {
        let mut window = self.lock();
        for (tenant, event) in events.drain(..) {
            window.last_seq = window.last_seq.max(event.seq);
            if let Some(stream) = window.tenants.get_mut(&tenant) {
                let mut rendered: Option<Arc<StreamEvent>> = None;
                // Read from the envelope once for all the subscribers whose filters name
                // locations (a tenant may have hundreds, and this runs on the shard's
                // thread under the window's lock).
                let mut location: Option<Option<&str>> = None;
                stream.subscribers.retain(|subscriber| {
                    let passes = subscriber.filter.matches_parts(&event.event_type, || {
                        *location.get_or_insert_with(|| {
                            herald_core::envelope_location_id(event.envelope.bytes())
                        })
                    });
                    if !passes {
                        return !subscriber.sender.is_closed();
                    }
                    if rendered.is_none() {
                        rendered = event.render(scratch);
                    }
                    let Some(rendered) = rendered.as_ref() else {
                        return true;
                    };
                    match subscriber.sender.try_send(Arc::clone(rendered)) {
                        Ok(()) => true,
                        Err(async_channel::TrySendError::Full(_)) => {
                            subscriber.state.store(OVERFLOWED, Ordering::Release);
                            subscriber.sender.close();
                            false
                        }
                        Err(async_channel::TrySendError::Closed(_)) => false,
                    }
                });
            }
            self.insert(&mut window, tenant, event);
        }
        self.evict(&mut window, now_ms);
    }

    fn insert(&self, window: &mut Window, tenant: Arc<str>, event: Kept) {
        let floor = window.floor;
        debug_assert!(
            window.order.back().is_none_or(|(at, _)| *at < event.seq),
            "events are added in seq order"
        );
        window.bytes += event.len();
        window.events += 1;
        window.order.push_back((event.seq, Arc::clone(&tenant)));
        let stream = window
            .tenants
            .entry(tenant)
            .or_insert_with(|| TenantStream {
                events: VecDeque::new(),
                floor,
                subscribers: Vec::new(),
            });
        stream.events.push_back(event);
        if stream.events.len() > self.config.window_events_max {
            if let Some(oldest) = stream.events.pop_front() {
                stream.floor = stream.floor.max(oldest.seq);
                window.bytes -= oldest.len();
                window.events -= 1;
                // Its entry in `order` goes when it reaches the front, or here when the
                // entries of such events outnumber the live ones (a queue bounded by
                // twice the window, in amortised constant time per event).
                if window.order.len() > 2 * window.events + ORDER_SLACK {
                    let tenants = &window.tenants;
                    window.order.retain(|(seq, tenant)| {
                        tenants.get(tenant).is_some_and(|stream| {
                            stream.events.front().is_some_and(|front| front.seq <= *seq)
                        })
                    });
                }
            }
        }
    }

    /// Drops the oldest events while the window is over its age or byte bound, and the
    /// entries of tenants left with neither events nor subscribers.
    fn evict(&self, window: &mut Window, now_ms: u64) {
        let oldest_kept_ms = now_ms.saturating_sub(self.config.window_ms);
        while let Some((seq, tenant)) = window.order.front() {
            let seq = *seq;
            let tenant = Arc::clone(tenant);
            let Some(stream) = window
                .tenants
                .get_mut(&tenant)
                .filter(|stream| stream.events.front().is_some_and(|front| front.seq == seq))
            else {
                // An event that already left its tenant's entry (by the per-tenant count).
                window.order.pop_front();
                continue;
            };
            let too_old = stream
                .events
                .front()
                .is_some_and(|event| event.accepted_at_ms < oldest_kept_ms);
            if !too_old && window.bytes <= self.config.window_bytes_max {
                break;
            }
            // Events of a tenant are in seq order, so its front is the oldest overall.
            debug_assert_eq!(stream.events.front().map(|e| e.seq), Some(seq));
            if let Some(oldest) = stream.events.pop_front() {
                stream.floor = stream.floor.max(oldest.seq);
                window.bytes -= oldest.len();
                window.events -= 1;
            }
            window.order.pop_front();
            if stream.events.is_empty() && stream.subscribers.is_empty() {
                let floor = stream.floor;
                window.tenants.remove(&tenant);
                window.floor = window.floor.max(floor);
            }
        }
    }

    /// Subscribes to `tenant`'s events that pass `filter`: those after `after` still in
    /// the window first (refused if some may be gone), then live ones through a queue of
    /// `queue_max` events (clamped to 1..=[`STREAM_QUEUE_MAX_LIMIT`]).
    pub fn subscribe(
        self: &Arc<Self>,
        tenant: &str,
        filter: StreamFilter,
        after: Option<u64>,
        queue_max: usize,
        now_ms: u64,
    ) -> Result<Subscription, SubscribeError> {
        let mut window = self.lock();
        if window.closed {
            return Err(SubscribeError::ShuttingDown);
        }
        self.evict(&mut window, now_ms);
        let floor = window.floor;
        let last = window.last_seq;
        let key: Arc<str> = match window.tenants.get_key_value(tenant) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(tenant),
        };
        let stream = window
            .tenants
            .entry(Arc::clone(&key))
            .or_insert_with(|| TenantStream {
                events: VecDeque::new(),
                floor,
                subscribers: Vec::new(),
            });
        let mut replay = None;
        if let Some(after) = after {
            let refusal = if after > last {
                Some(SubscribeError::Ahead { after, last })
            } else if after < stream.floor {
                Some(SubscribeError::OutsideWindow {
                    after,
                    floor: stream.floor,
                })
            } else {
                None
            };
            if let Some(refusal) = refusal {
                if stream.events.is_empty() && stream.subscribers.is_empty() {
                    window.tenants.remove(&key);
                }
                return Err(refusal);
            }
            // Events up to `last` come from the window, taken a chunk at a time as the
            // subscriber reads (`Subscription::next_kept`); later ones reach its queue.
            replay = Some(Replay {
                after,
                through: last,
            });
        }
        let (sender, receiver) = async_channel::bounded(queue_max.clamp(1, STREAM_QUEUE_MAX_LIMIT));
        let state = Arc::new(AtomicU8::new(OPEN));
        let id = window.next_subscriber;
        window.next_subscriber += 1;
        // Looked up again: `window.next_subscriber` was borrowed in between.
        if let Some(stream) = window.tenants.get_mut(&key) {
            stream.subscribers.push(Subscriber {
                id,
                filter: filter.clone(),
                sender,
                state: Arc::clone(&state),
            });
        }
        Ok(Subscription {
            shard: Arc::clone(self),
            tenant: key,
            id,
            filter,
            replay,
            backlog: VecDeque::new(),
            receiver,
            state,
            cut_off: false,
            scratch: String::new(),
        })
    }

    /// Appends to `out` up to [`REPLAY_CHUNK_EVENTS`] of `tenant`'s events in the window
    /// with `after < seq <= through`, in order; `Err` when an event after `after` may
    /// have left the window (or the tenant's entry is gone: the stream closed).
    fn replay_chunk(
        &self,
        tenant: &str,
        after: u64,
        through: u64,
        out: &mut VecDeque<Kept>,
    ) -> Result<(), ()> {
        let window = self.lock();
        let Some(stream) = window.tenants.get(tenant) else {
            return Err(());
        };
        if stream.floor > after {
            return Err(());
        }
        let start = stream.events.partition_point(|event| event.seq <= after);
        out.extend(
            stream
                .events
                .range(start..)
                .take_while(|event| event.seq <= through)
                .take(REPLAY_CHUNK_EVENTS)
                .cloned(),
        );
        Ok(())
    }

    /// Ends every subscription ([`StreamEnd::ShuttingDown`]) and refuses new ones.
    pub(crate) fn close(&self) {
        let mut window = self.lock();
        window.closed = true;
        for stream in window.tenants.values_mut() {
            for subscriber in stream.subscribers.drain(..) {
                // A subscriber already cut off keeps its reason.
                let _ = subscriber.state.compare_exchange(
                    OPEN,
                    STOPPED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                subscriber.sender.close();
            }
        }
    }

    fn unsubscribe(&self, tenant: &Arc<str>, id: u64) {
        let mut window = self.lock();
        if let Some(stream) = window.tenants.get_mut(tenant) {
            stream.subscribers.retain(|subscriber| subscriber.id != id);
            if stream.events.is_empty() && stream.subscribers.is_empty() {
                let floor = stream.floor;
                window.tenants.remove(tenant);
                window.floor = window.floor.max(floor);
            }
        }
    }

    /// Events and bytes in the window, and live subscribers (for tests and figures).
    pub fn window_size(&self) -> (usize, usize, usize) {
        let window = self.lock();
        let subscribers = window.tenants.values().map(|t| t.subscribers.len()).sum();
        (window.events, window.bytes, subscribers)
    }
}

/// What a subscription has yet to replay from the window: its tenant's events with
/// `after < seq <= through`.
#[derive(Debug, Clone, Copy)]
struct Replay {
    after: u64,
    through: u64,
}

/// A live subscription: events replayed from the window, then live ones. Dropping it
/// unsubscribes.
pub struct Subscription {
    shard: Arc<ShardStream>,
    tenant: Arc<str>,
    id: u64,
    filter: StreamFilter,
    /// What is left to take from the window, if anything.
    replay: Option<Replay>,
    /// Events taken from the window (at most [`REPLAY_CHUNK_EVENTS`]), filtered and
    /// rendered as they are received.
    backlog: VecDeque<Kept>,
    receiver: async_channel::Receiver<Arc<StreamEvent>>,
    state: Arc<AtomicU8>,
    /// Events it had yet to replay left the window: it ended, whatever its queue holds
    /// (received, those would follow a gap).
    cut_off: bool,
    scratch: String,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("tenant", &self.tenant)
            .field("backlog", &self.backlog.len())
            .field("queued", &self.receiver.len())
            .finish()
    }
}

impl Subscription {
    /// The next event, waiting for one (runtime-agnostic); `Err` once the subscription
    /// ended.
    pub async fn recv(&mut self) -> Result<Arc<StreamEvent>, StreamEnd> {
        if let Some(event) = self.next_kept()? {
            return Ok(event);
        }
        match self.receiver.recv().await {
            Ok(event) => Ok(event),
            Err(_) => Err(self.end()),
        }
    }

    /// The next event if one is ready: `Ok(None)` when none is yet.
    pub fn try_recv(&mut self) -> Result<Option<Arc<StreamEvent>>, StreamEnd> {
        if let Some(event) = self.next_kept()? {
            return Ok(Some(event));
        }
        match self.receiver.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(async_channel::TryRecvError::Empty) => Ok(None),
            Err(async_channel::TryRecvError::Closed) => Err(self.end()),
        }
    }

    /// Like [`Subscription::recv`], blocking the calling thread.
    pub fn blocking_recv(&mut self) -> Result<Arc<StreamEvent>, StreamEnd> {
        if let Some(event) = self.next_kept()? {
            return Ok(event);
        }
        match self.receiver.recv_blocking() {
            Ok(event) => Ok(event),
            Err(_) => Err(self.end()),
        }
    }

    /// The next event replayed from the window that passes the filter, rendered (one
    /// that is not text, which the shard never writes, is skipped); `Ok(None)` once the
    /// replay is done. `Err` when the subscription was cut off because events it had
    /// yet to replay left the window (the window moves on while a client reads).
    fn next_kept(&mut self) -> Result<Option<Arc<StreamEvent>>, StreamEnd> {
        if self.cut_off {
            return Err(self.end());
        }
        loop {
            while let Some(kept) = self.backlog.pop_front() {
                if !kept.passes(&self.filter) {
                    continue;
                }
                if let Some(event) = kept.render(&mut self.scratch) {
                    return Ok(Some(event));
                }
            }
            let Some(replay) = self.replay.as_mut() else {
                return Ok(None);
            };
            if self
                .shard
                .replay_chunk(
                    &self.tenant,
                    replay.after,
                    replay.through,
                    &mut self.backlog,
                )
                .is_err()
            {
                return Err(self.cut_off());
            }
            match self.backlog.back() {
                Some(last) => replay.after = last.seq,
                None => self.replay = None,
            }
        }
    }

    /// Ends the subscription: the live queue is closed and what it holds never received.
    fn cut_off(&mut self) -> StreamEnd {
        self.cut_off = true;
        self.replay = None;
        // Unless the engine stopped first, which keeps its reason.
        let _ = self
            .state
            .compare_exchange(OPEN, OVERFLOWED, Ordering::AcqRel, Ordering::Acquire);
        self.receiver.close();
        self.shard.unsubscribe(&self.tenant, self.id);
        self.end()
    }

    /// Events waiting: those taken from the window (up to [`REPLAY_CHUNK_EVENTS`] at a
    /// time; some may not pass the filter) and not yet received, plus the live queue.
    pub fn pending(&self) -> usize {
        self.backlog.len() + self.receiver.len()
    }

    fn end(&self) -> StreamEnd {
        match self.state.load(Ordering::Acquire) {
            OVERFLOWED => StreamEnd::Overflowed,
            _ => StreamEnd::ShuttingDown,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shard.unsubscribe(&self.tenant, self.id);
    }
}

/// Where an `EventAccepted` payload holds the event's envelope: offset in the payload
/// and length.
pub(crate) fn envelope_position(payload: &[u8]) -> Option<(u32, u32)> {
    record::body_spans(payload)
        .ok()
        .and_then(|spans| spans.first().copied().flatten())
}

/// [`envelope_position`] of the payload [`Record::encode_into`] just wrote into
/// `encoded`, without validating those bytes again: an append of an event found its
/// envelope by checked access, which walked every string of the record it had itself
/// serialized a moment before (and listed the one span in a `Vec`).
pub(crate) fn encoded_envelope_position(encoded: &record::RecordBuffer) -> Option<(u32, u32)> {
    // SAFETY: `encoded` holds exactly the bytes rkyv's serializer wrote for a `Record`
    // (`Record::encode_into` returns the buffer it serialized into, and callers pass it
    // on unchanged), in rkyv's own aligned buffer. Unchecked access is sound for bytes
    // the serializer of the same type produced: every offset and every string in them
    // is one it wrote.
    #[allow(unsafe_code)]
    let archived = unsafe { rkyv::access_unchecked::<record::ArchivedRecord>(encoded) };
    record::archived_event_body_span(encoded, archived)
}

/// Wall-clock Unix milliseconds: the time base of `accepted_at_ms`.
pub(crate) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An event appended but not yet durable: where its envelope lies in the journal, or
/// (appended without a position) a copy.
struct Appended {
    tenant: Arc<str>,
    seq: u64,
    accepted_at_ms: u64,
    event_type: EventType,
    envelope: AppendedEnvelope,
}

enum AppendedEnvelope {
    /// In the journal at this position, this long (readable once written).
    At(herald_journal::Position, usize),
    /// A copy.
    Owned(Arc<[u8]>),
}

/// The shard thread's side: events appended but not yet durable, released to the
/// [`ShardStream`] once the journal's durable sequence covers them.
pub(crate) struct StreamTap {
    stream: Arc<ShardStream>,
    pending: VecDeque<Appended>,
    released: Vec<(Arc<str>, Kept)>,
    names: Names,
    scratch: String,
    /// The journal's first sequence number last told to the stream.
    journal_first_seq: u64,
}

impl StreamTap {
    pub(crate) fn new(stream: Arc<ShardStream>) -> StreamTap {
        StreamTap {
            stream,
            pending: VecDeque::new(),
            released: Vec::new(),
            names: Names::default(),
            scratch: String::new(),
            journal_first_seq: 0,
        }
    }

    /// Rebuilds the window from every frame still in `journal`.
    pub(crate) fn rebuild(&self, journal: &herald_journal::Journal, now_ms: u64) {
        let last_seq = journal.last_seq();
        let first_seq = match journal.replay_all().next() {
            Some(Ok(frame)) => frame.seq,
            // Broken at once: the loop below forgets everything.
            Some(Err(_)) => last_seq,
            None => last_seq + 1,
        };
        let mut frames = journal.replay_all();
        let mut broken = false;
        let records = std::iter::from_fn(|| loop {
            if broken {
                return None;
            }
            let Ok(frame) = frames.next()? else {
                broken = true;
                return Some(Journaled::Broken);
            };
            let purge = frame.kind == record::kind::TENANT_PURGED;
            if frame.kind != record::kind::EVENT_ACCEPTED && !purge {
                continue;
            }
            if frame.version != RECORD_VERSION {
                return Some(Journaled::Unreadable(frame.seq));
            }
            if purge {
                return Some(
                    match Record::decode(frame.kind, frame.version, frame.payload) {
                        Ok(Record::TenantPurged(purged)) => {
                            Journaled::Purged(Arc::from(purged.tenant.as_str()), frame.seq)
                        }
                        // A purge that cannot be read: nothing before it may be shown.
                        _ => Journaled::Unreadable(frame.seq),
                    },
                );
            }
            let kept = match Record::decode(frame.kind, frame.version, frame.payload) {
                Ok(Record::EventAccepted(accepted)) => envelope_position(frame.payload)
                    .and_then(|(offset, len)| {
                        journal.mapped(frame.position.after(u64::from(offset)), len as usize)
                    })
                    .zip(EventType::parse(&accepted.event_type).ok())
                    .and_then(|(mapped, event_type)| {
                        Kept::new(
                            frame.seq,
                            accepted.at_ms,
                            event_type,
                            Envelope::Mapped(mapped),
                        )
                    })
                    .map(|kept| (Arc::clone(&accepted.tenant), kept)),
                _ => None,
            };
            return Some(match kept {
                Some((tenant, kept)) => Journaled::Event(tenant, kept),
                None => Journaled::Unreadable(frame.seq),
            });
        });
        self.stream.rebuild(first_seq, last_seq, records, now_ms);
    }

    /// A record was appended at `seq`; for an event, `envelope_at` is where the journal
    /// holds its envelope and how long it is (`None`: the stream keeps a copy). Events
    /// wait for durability.
    pub(crate) fn appended(
        &mut self,
        seq: u64,
        record: &Record,
        envelope_at: Option<(herald_journal::Position, usize)>,
    ) {
        let accepted = match record {
            Record::EventAccepted(accepted) => accepted,
            Record::TenantPurged(purged) => {
                // Gone at once, durable or not: the tenant is being deleted.
                self.pending.retain(|event| *event.tenant != *purged.tenant);
                self.stream.purge(&purged.tenant, seq);
                return;
            }
            _ => return,
        };
        // No envelope to show (none is empty): left off, as a rebuild leaves it.
        if accepted.body.first() != Some(&b'{') {
            return;
        }
        let Some(event_type) = self.names.event_type(&accepted.event_type) else {
            return;
        };
        let envelope = match envelope_at {
            Some((at, len)) => AppendedEnvelope::At(at, len),
            None => AppendedEnvelope::Owned(Arc::from(accepted.body.as_slice())),
        };
        self.pending.push_back(Appended {
            tenant: self.names.tenant(&accepted.tenant),
            seq,
            accepted_at_ms: accepted.at_ms,
            event_type,
            envelope,
        });
    }

    /// The journal is durable through `durable_seq` and holds frames from `first_seq`
    /// on: release what it covers, its envelopes read through `mapped` (the journal's
    /// [`herald_journal::Journal::mapped`]).
    pub(crate) fn durable(
        &mut self,
        durable_seq: u64,
        first_seq: u64,
        mapped: impl Fn(herald_journal::Position, usize) -> Option<herald_journal::Mapped>,
    ) {
        while self
            .pending
            .front()
            .is_some_and(|event| event.seq <= durable_seq)
        {
            let Some(event) = self.pending.pop_front() else {
                break;
            };
            let envelope = match event.envelope {
                AppendedEnvelope::At(at, len) => mapped(at, len).map(Envelope::Mapped),
                AppendedEnvelope::Owned(bytes) => Some(Envelope::Owned(bytes)),
            };
            let Some(envelope) = envelope else {
                // Durable but not readable where it was written (never expected):
                // nobody may resume across it unknowingly.
                self.release();
                self.stream.journal_from(event.seq + 1);
                continue;
            };
            // `appended` kept only envelopes that are objects, and the journal holds the
            // same bytes: not checked again here, where reading the first byte through
            // the mapping would fault in each new journal page on the shard's thread.
            self.released.push((
                event.tenant,
                Kept {
                    seq: event.seq,
                    accepted_at_ms: event.accepted_at_ms,
                    event_type: event.event_type,
                    envelope,
                },
            ));
        }
        self.release();
        // Only when it moved: the window's lock is not taken for nothing every turn.
        if first_seq != self.journal_first_seq {
            self.journal_first_seq = first_seq;
            self.stream.journal_from(first_seq);
        }
    }

    fn release(&mut self) {
        if !self.released.is_empty() {
            self.stream
                .publish_with(&mut self.released, wall_clock_ms(), &mut self.scratch);
        }
    }

    /// The journal refused a record: events not yet durable were never journaled.
    pub(crate) fn discard_pending(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(
        tenant: &str,
        event_type: &str,
        location: Option<&str>,
        at_ms: u64,
    ) -> EventAccepted {
        let location = location.map_or("null".to_string(), |l| format!("\"{l}\""));
        EventAccepted {
            at_ms,
            tenant: tenant.into(),
            event_id: herald_core::EventId::parse("evt_1").unwrap(),
            event_type: event_type.into(),
            body: format!(
                "{{\"id\":\"evt_1\",\"type\":\"{event_type}\",\"api_version\":\"2024-06-01\",\
                 \"created_at\":\"2026-01-01T00:00:00.000Z\",\"tenant_id\":\"{tenant}\",\
                 \"location_id\":{location},\"data\":{{\"location_id\":\"decoy\"}}}}"
            )
            .into_bytes(),
            deliveries: Default::default(),
            created_at_ms: at_ms,
            idempotency: None,
        }
    }

    fn kept(seq: u64, accepted: &EventAccepted) -> Kept {
        Kept::new(
            seq,
            accepted.at_ms,
            EventType::parse(&accepted.event_type).unwrap(),
            Envelope::Owned(Arc::from(accepted.body.as_slice())),
        )
        .unwrap()
    }

    fn event(seq: u64, tenant: &str, event_type: &str, at_ms: u64) -> (Arc<str>, Kept) {
        let record = accepted(tenant, event_type, None, at_ms);
        (Arc::from(tenant), kept(seq, &record))
    }

    impl ShardStream {
        fn publish(&self, events: &mut Vec<(Arc<str>, Kept)>, now_ms: u64) {
            self.publish_with(events, now_ms, &mut String::new());
        }
    }

    fn stream(config: StreamConfig) -> Arc<ShardStream> {
        Arc::new(ShardStream::new(config))
    }

    fn seqs(subscription: &mut Subscription) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(Some(event)) = subscription.try_recv() {
            out.push(event.seq);
        }
        out
    }

    #[test]
    fn the_message_is_the_envelope_with_a_leading_seq() {
        let record = accepted("acme", "order.created", Some("loc_1"), 5);
        let event = StreamEvent::of(42, &record).unwrap();
        let value: serde_json::Value = serde_json::from_str(&event.message).unwrap();
        assert_eq!(value["seq"], 42);
        assert_eq!(value["type"], "order.created");
        assert_eq!(value["tenant_id"], "acme");
        assert_eq!(value["location_id"], "loc_1");
        assert_eq!(value["data"]["location_id"], "decoy");
        assert_eq!(event.location_id.as_deref(), Some("loc_1"));
        let mut empty = record.clone();
        empty.body.clear();
        assert!(StreamEvent::of(1, &empty).is_none());
    }

    #[test]
    fn filters_match_types_like_webhooks_and_narrow_to_locations() {
        let at = |event_type: &str, location: Option<&str>| {
            StreamEvent::of(1, &accepted("t", event_type, location, 0)).unwrap()
        };
        let filter = |events: &[&str], locations: &[&str]| StreamFilter {
            events: events
                .iter()
                .map(|e| EventFilter::parse(e).unwrap())
                .collect(),
            locations: locations.iter().map(|l| l.to_string()).collect(),
        };
        /// Event filters, locations, the event's type and location, whether it passes.
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a str, Option<&'a str>, bool);
        let cases: &[Case<'_>] = &[
            (&[], &[], "order.created", None, true),
            (&["*"], &[], "anything.at.all", None, true),
            (&["order.*"], &[], "order.created", None, true),
            (&["order.*"], &[], "order", None, false),
            (&["order.*"], &[], "orders.created", None, false),
            (
                &["order.*", "kds.ticket.bumped"],
                &[],
                "kds.ticket.bumped",
                None,
                true,
            ),
            (
                &["order.*", "kds.ticket.bumped"],
                &[],
                "kds.ticket.created",
                None,
                false,
            ),
            (&[], &["loc_1"], "order.created", Some("loc_1"), true),
            (&[], &["loc_1"], "order.created", Some("loc_2"), false),
            (&[], &["loc_1"], "order.created", None, false),
            (
                &["order.*"],
                &["loc_1", "loc_2"],
                "order.created",
                Some("loc_2"),
                true,
            ),
            (
                &["payment.*"],
                &["loc_1"],
                "order.created",
                Some("loc_1"),
                false,
            ),
        ];
        for (events, locations, event_type, location, expected) in cases {
            assert_eq!(
                filter(events, locations).matches(&at(event_type, *location)),
                *expected,
                "{events:?} {locations:?} {event_type} {location:?}"
            );
        }
    }

    #[test]
    fn resume_replays_the_window_then_live_events_without_gap_or_repeat() {
        let stream = stream(StreamConfig::default());
        stream.publish(
            &mut vec![
                event(3, "a", "order.created", 10),
                event(5, "b", "order.created", 10),
                event(8, "a", "order.paid", 10),
            ],
            10,
        );
        let mut all = stream
            .subscribe("a", StreamFilter::default(), Some(0), 16, 10)
            .unwrap();
        let mut after_3 = stream
            .subscribe("a", StreamFilter::default(), Some(3), 16, 10)
            .unwrap();
        let mut live = stream
            .subscribe("a", StreamFilter::default(), None, 16, 10)
            .unwrap();
        stream.publish(&mut vec![event(9, "a", "order.created", 11)], 11);
        assert_eq!(seqs(&mut all), [3, 8, 9]);
        assert_eq!(seqs(&mut after_3), [8, 9]);
        assert_eq!(seqs(&mut live), [9]);
        // Other tenants' events never show.
        let mut b = stream
            .subscribe("b", StreamFilter::default(), Some(0), 16, 11)
            .unwrap();
        assert_eq!(seqs(&mut b), [5]);
    }

    /// Live events reach each subscriber whose filter they pass, the location read once
    /// per event for all the subscribers that name locations.
    #[test]
    fn live_events_reach_the_subscribers_of_their_location() {
        let stream = stream(StreamConfig::default());
        let at = |locations: &[&str]| StreamFilter {
            events: Vec::new(),
            locations: locations.iter().map(|l| l.to_string()).collect(),
        };
        let mut loc_1 = stream.subscribe("a", at(&["loc_1"]), None, 16, 0).unwrap();
        let mut loc_2 = stream.subscribe("a", at(&["loc_2"]), None, 16, 0).unwrap();
        let mut both = stream
            .subscribe("a", at(&["loc_2", "loc_1"]), None, 16, 0)
            .unwrap();
        let mut all = stream
            .subscribe("a", StreamFilter::default(), None, 16, 0)
            .unwrap();
        let events = [
            (1, Some("loc_1")),
            (2, Some("loc_2")),
            (3, None),
            (4, Some("loc_1")),
        ];
        for (seq, location) in events {
            let record = accepted("a", "order.created", location, 0);
            stream.publish(&mut vec![(Arc::from("a"), kept(seq, &record))], 0);
        }
        assert_eq!(seqs(&mut loc_1), [1, 4]);
        assert_eq!(seqs(&mut loc_2), [2]);
        assert_eq!(seqs(&mut both), [1, 2, 4]);
        assert_eq!(seqs(&mut all), [1, 2, 3, 4]);
    }

    /// A resume from far back is taken from the window a chunk at a time: every event
    /// after the resume point that passes the filter, in order, then live ones, with no
    /// more than a chunk copied out of the window at once.
    #[test]
    fn a_long_replay_is_taken_a_chunk_at_a_time_without_gap_or_repeat() {
        let stream = stream(StreamConfig::default());
        let total = 3 * REPLAY_CHUNK_EVENTS as u64 + 5;
        let kind = |seq: u64| {
            if seq.is_multiple_of(3) {
                "order.paid"
            } else {
                "order.created"
            }
        };
        // Another tenant's events in between (seqs are the journal's, shared).
        for seq in 1..=total {
            stream.publish(
                &mut vec![
                    event(2 * seq, "a", kind(seq), 10),
                    event(2 * seq + 1, "b", "x.y", 10),
                ],
                10,
            );
        }
        let only_paid = StreamFilter {
            events: vec![EventFilter::parse("order.paid").unwrap()],
            locations: Vec::new(),
        };
        let mut paid = stream.subscribe("a", only_paid, Some(14), 4, 10).unwrap();
        let mut all = stream
            .subscribe("a", StreamFilter::default(), Some(0), 4, 10)
            .unwrap();
        // Nothing is copied out of the window before it is read.
        assert_eq!(all.pending(), 0);
        stream.publish(&mut vec![event(500_000, "a", "order.paid", 11)], 11);
        let mut got = Vec::new();
        while let Some(event) = all.try_recv().unwrap() {
            assert!(all.pending() <= REPLAY_CHUNK_EVENTS + 1);
            got.push(event.seq);
        }
        let want: Vec<u64> = (1..=total).map(|seq| 2 * seq).chain([500_000]).collect();
        assert_eq!(got, want);
        let want: Vec<u64> = (8..=total)
            .filter(|seq| seq % 3 == 0)
            .map(|seq| 2 * seq)
            .chain([500_000])
            .collect();
        assert_eq!(seqs(&mut paid), want);
    }

    /// Events a slow replay has yet to take leave the window: the subscription ends as
    /// an overflow does, and what its live queue holds is not received after the gap.
    #[test]
    fn a_replay_the_window_moves_past_is_cut_off() {
        let config = StreamConfig {
            window_ms: 60_000,
            window_events_max: 2 * REPLAY_CHUNK_EVENTS,
            window_bytes_max: usize::MAX,
        };
        let stream = stream(config);
        let n = 2 * REPLAY_CHUNK_EVENTS as u64;
        for seq in 1..=n {
            stream.publish(&mut vec![event(seq, "a", "x.y", 0)], 0);
        }
        // Its queue has room for every live event: only the replay falls behind.
        let mut slow = stream
            .subscribe("a", StreamFilter::default(), Some(0), 2 * n as usize, 0)
            .unwrap();
        assert_eq!(slow.try_recv().unwrap().unwrap().seq, 1);
        // Over half the window moves on while the first chunk is read: the second
        // chunk's first event is gone.
        for seq in n + 1..=n + n / 2 + 1 {
            stream.publish(&mut vec![event(seq, "a", "x.y", 0)], 0);
        }
        for seq in 2..=REPLAY_CHUNK_EVENTS as u64 {
            assert_eq!(slow.try_recv().unwrap().unwrap().seq, seq);
        }
        assert_eq!(slow.pending(), n as usize / 2 + 1, "the live events queued");
        assert_eq!(slow.try_recv().unwrap_err(), StreamEnd::Overflowed);
        assert_eq!(slow.try_recv().unwrap_err(), StreamEnd::Overflowed);
        assert_eq!(slow.blocking_recv().unwrap_err(), StreamEnd::Overflowed);
        assert_eq!(stream.window_size().2, 0, "it left the subscribers");
        // A resume from the last seq received is refused, so the client resynchronises.
        assert!(matches!(
            stream.subscribe(
                "a",
                StreamFilter::default(),
                Some(REPLAY_CHUNK_EVENTS as u64),
                8,
                0
            ),
            Err(SubscribeError::OutsideWindow { .. })
        ));
    }

    #[test]
    fn a_resume_point_outside_the_window_is_refused() {
        let config = StreamConfig {
            window_ms: 1000,
            window_events_max: 2,
            window_bytes_max: usize::MAX,
        };
        let stream = stream(config);
        stream.publish(
            &mut vec![
                event(1, "a", "x.y", 0),
                event(2, "a", "x.y", 0),
                event(4, "a", "x.y", 0),
            ],
            0,
        );
        // Seq 1 left by count: resuming after 1 is fine, after 0 is not.
        assert!(stream
            .subscribe("a", StreamFilter::default(), Some(1), 4, 0)
            .is_ok());
        assert_eq!(
            stream
                .subscribe("a", StreamFilter::default(), Some(0), 4, 0)
                .unwrap_err(),
            SubscribeError::OutsideWindow { after: 0, floor: 1 }
        );
        assert_eq!(
            stream
                .subscribe("a", StreamFilter::default(), Some(5), 4, 0)
                .unwrap_err(),
            SubscribeError::Ahead { after: 5, last: 4 }
        );
        // By age: everything accepted before now - window_ms is gone.
        assert_eq!(
            stream
                .subscribe("a", StreamFilter::default(), Some(2), 4, 1001)
                .unwrap_err(),
            SubscribeError::OutsideWindow { after: 2, floor: 4 }
        );
        assert!(stream
            .subscribe("a", StreamFilter::default(), Some(4), 4, 1001)
            .is_ok());
        assert_eq!(stream.window_size().0, 0);
    }

    /// A busy tenant held to its count while others' events stay: the order queue keeps
    /// within twice the window (entries of events that left by count are dropped), and
    /// the byte bound still takes the oldest event overall, skipping those entries.
    #[test]
    fn the_count_bound_keeps_the_order_queue_bounded_and_true() {
        let busy_bytes = event(1, "busy", "x.y", 0).1.len();
        let quiet_bytes = event(1, "quiet", "x.y", 0).1.len();
        let stream = stream(StreamConfig {
            window_ms: u64::MAX,
            window_events_max: 10,
            window_bytes_max: usize::MAX,
        });
        stream.publish(&mut vec![event(1, "quiet", "x.y", 0)], 0);
        for seq in 2..=10_001 {
            stream.publish(&mut vec![event(seq, "busy", "x.y", 0)], 0);
            let window = stream.lock();
            assert!(
                window.order.len() <= 2 * window.events + ORDER_SLACK + 1,
                "at {seq}: {} entries for {} events",
                window.order.len(),
                window.events
            );
        }
        assert_eq!(stream.window_size(), (11, quiet_bytes + 10 * busy_bytes, 0));
        let mut busy = stream
            .subscribe("busy", StreamFilter::default(), Some(9_991), 16, 0)
            .unwrap();
        assert_eq!(seqs(&mut busy), (9_992..=10_001).collect::<Vec<_>>());
        // Now a byte bound of ten events: the quiet tenant's (the oldest) goes first, then
        // the busy one's oldest, however many departed entries sit in front of it.
        let stream2 = Arc::new(ShardStream::new(StreamConfig {
            window_ms: u64::MAX,
            window_events_max: 10,
            window_bytes_max: busy_bytes * 10,
        }));
        stream2.publish(&mut vec![event(1, "quiet", "x.y", 0)], 0);
        for seq in 2..=50 {
            stream2.publish(&mut vec![event(seq, "busy", "x.y", 0)], 0);
        }
        assert_eq!(stream2.window_size().0, 10);
        assert!(matches!(
            stream2.subscribe("quiet", StreamFilter::default(), Some(0), 4, 0),
            Err(SubscribeError::OutsideWindow { .. })
        ));
        let mut busy = stream2
            .subscribe("busy", StreamFilter::default(), Some(40), 16, 0)
            .unwrap();
        assert_eq!(seqs(&mut busy), (41..=50).collect::<Vec<_>>());
    }

    #[test]
    fn the_byte_bound_evicts_the_oldest_across_tenants() {
        let one = event(1, "a", "x.y", 0).1.len();
        let stream = stream(StreamConfig {
            window_ms: u64::MAX,
            window_events_max: 100,
            window_bytes_max: one * 2,
        });
        stream.publish(
            &mut vec![
                event(1, "a", "x.y", 0),
                event(2, "b", "x.y", 0),
                event(3, "c", "x.y", 0),
            ],
            0,
        );
        assert_eq!(stream.window_size().0, 2);
        assert!(matches!(
            stream.subscribe("a", StreamFilter::default(), Some(0), 4, 0),
            Err(SubscribeError::OutsideWindow { floor: 1, .. })
        ));
        // A tenant that never had an event cannot tell what it missed either.
        assert!(matches!(
            stream.subscribe("z", StreamFilter::default(), Some(0), 4, 0),
            Err(SubscribeError::OutsideWindow { floor: 1, .. })
        ));
        assert!(stream
            .subscribe("b", StreamFilter::default(), Some(0), 4, 0)
            .is_ok());
    }

    #[test]
    fn a_rebuild_keeps_the_bounds_and_forgets_what_it_cannot_read() {
        let config = StreamConfig {
            window_ms: 1000,
            window_events_max: 2,
            window_bytes_max: usize::MAX,
        };
        let event = |seq: u64, tenant: &str| {
            let record = accepted(tenant, "x.y", None, 5000);
            Journaled::Event(Arc::from(tenant), kept(seq, &record))
        };
        let all = StreamFilter::default;
        let rebuilt = stream(config.clone());
        let records = vec![
            event(3, "a"),
            event(5, "a"),
            event(6, "b"),
            event(8, "a"),
            Journaled::Unreadable(9),
            event(10, "b"),
        ];
        rebuilt.rebuild(3, 20, records, 5000);
        // Seq 9 could be anyone's: nobody resumes across it.
        for tenant in ["a", "c"] {
            assert!(matches!(
                rebuilt.subscribe(tenant, all(), Some(8), 4, 5000),
                Err(SubscribeError::OutsideWindow { floor: 9, .. })
            ));
        }
        let mut b = rebuilt.subscribe("b", all(), Some(9), 4, 5000).unwrap();
        assert_eq!(seqs(&mut b), [10]);
        assert_eq!(rebuilt.window_size().0, 1);
        // A journal that cannot be read on: nothing up to its end is known.
        let broken = stream(config);
        broken.rebuild(
            1,
            7,
            vec![event(1, "a"), Journaled::Broken, event(7, "a")],
            5000,
        );
        assert!(matches!(
            broken.subscribe("a", all(), Some(1), 4, 5000),
            Err(SubscribeError::OutsideWindow { floor: 7, .. })
        ));
        assert_eq!(broken.window_size().0, 0);
        assert!(broken.subscribe("a", all(), Some(7), 4, 5000).is_ok());
    }

    #[test]
    fn a_purged_tenants_events_leave_the_window_and_stay_gone_after_a_rebuild() {
        let all = StreamFilter::default;
        let check = |s: &Arc<ShardStream>| {
            assert!(matches!(
                s.subscribe("a", all(), Some(0), 8, 0),
                Err(SubscribeError::OutsideWindow { floor: 4, .. })
            ));
            let mut a = s.subscribe("a", all(), Some(4), 8, 0).unwrap();
            assert_eq!(seqs(&mut a), [5]);
            let mut b = s.subscribe("b", all(), Some(0), 8, 0).unwrap();
            assert_eq!(seqs(&mut b), [2]);
            assert_eq!(s.window_size().0, 2);
        };
        let live = stream(StreamConfig::default());
        live.publish(
            &mut vec![
                event(1, "a", "x.y", 0),
                event(2, "b", "x.y", 0),
                event(3, "a", "x.y", 0),
            ],
            0,
        );
        live.purge("a", 4);
        live.publish(&mut vec![event(5, "a", "x.y", 0)], 0);
        check(&live);

        let journaled = |seq: u64, tenant: &str| {
            let record = accepted(tenant, "x.y", None, 0);
            Journaled::Event(Arc::from(tenant), kept(seq, &record))
        };
        let rebuilt = stream(StreamConfig::default());
        let records = vec![
            journaled(1, "a"),
            journaled(2, "b"),
            journaled(3, "a"),
            Journaled::Purged(Arc::from("a"), 4),
            journaled(5, "a"),
        ];
        rebuilt.rebuild(1, 5, records, 0);
        check(&rebuilt);

        // An event appended before the purge and durable only after it is not shown.
        let tapped = stream(StreamConfig::default());
        let mut tap = StreamTap::new(Arc::clone(&tapped));
        let purged = record::TenantPurged {
            at_ms: 0,
            tenant: "a".to_string(),
            deliveries: 0,
            keys: 0,
        };
        // (The tap dates the window's age by the wall clock.)
        let now = wall_clock_ms();
        let at_now = |tenant: &str| Record::EventAccepted(accepted(tenant, "x.y", None, now));
        tap.appended(1, &at_now("a"), None);
        tap.appended(2, &at_now("b"), None);
        tap.appended(3, &Record::TenantPurged(purged), None);
        tap.durable(3, 1, |_, _| None);
        assert_eq!(tapped.window_size().0, 1);
        let mut b = tapped.subscribe("b", all(), Some(0), 8, now).unwrap();
        assert_eq!(seqs(&mut b), [2]);
    }

    #[test]
    fn a_full_queue_cuts_off_its_subscriber_only() {
        let stream = stream(StreamConfig::default());
        let mut slow = stream
            .subscribe("a", StreamFilter::default(), None, 2, 0)
            .unwrap();
        let mut fast = stream
            .subscribe("a", StreamFilter::default(), None, 16, 0)
            .unwrap();
        for seq in 1..=3 {
            stream.publish(&mut vec![event(seq, "a", "x.y", 0)], 0);
            assert_eq!(seqs(&mut fast), [seq]);
        }
        assert_eq!(slow.try_recv().unwrap().unwrap().seq, 1);
        assert_eq!(slow.try_recv().unwrap().unwrap().seq, 2);
        assert_eq!(slow.try_recv().unwrap_err(), StreamEnd::Overflowed);
        assert_eq!(stream.window_size().2, 1);
        drop(fast);
        assert_eq!(stream.window_size().2, 0);
    }

    #[test]
    fn closing_ends_subscriptions_and_refuses_new_ones() {
        let stream = stream(StreamConfig::default());
        let mut subscription = stream
            .subscribe("a", StreamFilter::default(), None, 2, 0)
            .unwrap();
        stream.close();
        assert_eq!(
            subscription.blocking_recv().unwrap_err(),
            StreamEnd::ShuttingDown
        );
        assert_eq!(
            stream
                .subscribe("a", StreamFilter::default(), None, 2, 0)
                .unwrap_err(),
            SubscribeError::ShuttingDown
        );
    }

    #[test]
    fn the_tap_releases_events_only_once_durable_and_drops_refused_ones() {
        let stream = stream(StreamConfig::default());
        let mut subscription = stream
            .subscribe("a", StreamFilter::default(), None, 16, 0)
            .unwrap();
        let mut tap = StreamTap::new(Arc::clone(&stream));
        for seq in [2, 4] {
            tap.appended(
                seq,
                &Record::EventAccepted(accepted("a", "x.y", None, 0)),
                None,
            );
        }
        tap.durable(3, 1, |_, _| None);
        assert_eq!(seqs(&mut subscription), [2]);
        tap.discard_pending();
        tap.durable(10, 1, |_, _| None);
        assert_eq!(seqs(&mut subscription), Vec::<u64>::new());
    }

    #[test]
    fn an_envelope_is_found_in_a_record_just_encoded_as_in_one_read_back() {
        let now = wall_clock_ms();
        let mut buffer = record::RecordBuffer::new();
        for record in [
            Record::EventAccepted(accepted("a", "order.created", Some("loc_1"), now)),
            Record::EventAccepted(EventAccepted {
                body: Vec::new(),
                ..accepted("b", "order.paid", None, now)
            }),
            Record::DeliveryFinished(record::DeliveryFinished {
                at_ms: now,
                delivery: 7,
                status: "failed".to_owned(),
                reason: None,
            }),
        ] {
            let (_, _, payload) = record.encode_into(buffer).unwrap();
            let found = encoded_envelope_position(&payload);
            assert_eq!(found, envelope_position(&payload), "{record:?}");
            match &record {
                Record::EventAccepted(event) if !event.body.is_empty() => {
                    let (offset, len) = found.unwrap();
                    let span = offset as usize..(offset + len) as usize;
                    assert_eq!(&payload[span], &event.body[..]);
                }
                _ => assert_eq!(found, None),
            }
            buffer = payload;
        }
    }

    #[test]
    fn the_window_reads_envelopes_through_the_journal_and_forgets_what_it_no_longer_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) =
            herald_journal::Journal::open(herald_journal::JournalConfig::new(dir.path())).unwrap();
        let stream = stream(StreamConfig::default());
        let mut tap = StreamTap::new(Arc::clone(&stream));
        let now = wall_clock_ms();
        let records = [
            accepted("a", "order.created", Some("loc_1"), now),
            accepted("a", "order.paid", None, now),
        ];
        let mut seqs_appended = Vec::new();
        for record in &records {
            let record = Record::EventAccepted(record.clone());
            let (kind, version, payload) = record.encode().unwrap();
            let (seq, at) = journal.append_placed(kind, version, &payload).unwrap();
            let (offset, len) = envelope_position(&payload).unwrap();
            tap.appended(
                seq,
                &record,
                Some((at.after(u64::from(offset)), len as usize)),
            );
            seqs_appended.push(seq);
        }
        journal.sync().unwrap();
        tap.durable(journal.durable_seq(), journal.first_seq(), |at, len| {
            journal.mapped(at, len)
        });
        assert_eq!(stream.window_size().0, 2);
        {
            let window = stream.lock();
            let kept = &window.tenants.get("a").unwrap().events;
            assert!(kept
                .iter()
                .all(|k| matches!(k.envelope, Envelope::Mapped(_))));
        }
        // Replayed from the window, filtered by the location in the envelope, rendered
        // as `StreamEvent::of` renders it.
        let located = StreamFilter {
            events: Vec::new(),
            locations: vec!["loc_1".to_string()],
        };
        let mut subscription = stream.subscribe("a", located, Some(0), 16, now).unwrap();
        let got = subscription.try_recv().unwrap().expect("the located event");
        let want = StreamEvent::of(seqs_appended[0], &records[0]).unwrap();
        assert_eq!(got.message, want.message);
        assert_eq!(got.location_id.as_deref(), Some("loc_1"));
        assert!(subscription.try_recv().unwrap().is_none());
        // Once the journal no longer holds them, they leave the window.
        tap.durable(journal.durable_seq(), seqs_appended[1], |at, len| {
            journal.mapped(at, len)
        });
        assert_eq!(
            stream.window_size().0,
            1,
            "the journal holds the second one"
        );
        tap.durable(journal.durable_seq(), seqs_appended[1] + 1, |at, len| {
            journal.mapped(at, len)
        });
        assert_eq!(stream.window_size().0, 0);
        assert!(matches!(
            stream.subscribe("a", StreamFilter::default(), Some(0), 16, now),
            Err(SubscribeError::OutsideWindow { .. })
        ));
    }

    #[test]
    fn the_tap_renders_what_stream_event_of_renders_and_shares_names() {
        let stream = stream(StreamConfig::default());
        let mut subscription = stream
            .subscribe("a", StreamFilter::default(), None, 16, 0)
            .unwrap();
        let mut tap = StreamTap::new(Arc::clone(&stream));
        let records: Vec<EventAccepted> = [(5, Some("loc_1")), (7, None), (1234567, None)]
            .into_iter()
            .map(|(at, location)| accepted("a", "order.created", location, at))
            .collect();
        let seqs = [3u64, 9, 18_446_744_073_709_551_615];
        for (seq, record) in seqs.iter().zip(&records) {
            tap.appended(*seq, &Record::EventAccepted(record.clone()), None);
        }
        // An event type no filter could match is left off the stream, as `of` leaves it.
        tap.appended(
            20,
            &Record::EventAccepted(accepted("a", "no..type", None, 0)),
            None,
        );
        tap.durable(u64::MAX, 1, |_, _| None);
        for (seq, record) in seqs.iter().zip(&records) {
            let got = subscription.try_recv().unwrap().expect("an event");
            let want = StreamEvent::of(*seq, record).unwrap();
            assert_eq!(got.seq, want.seq);
            assert_eq!(got.message, want.message);
            assert_eq!(got.location_id, want.location_id);
            assert_eq!(got.event_type, want.event_type);
            assert_eq!(got.accepted_at_ms, want.accepted_at_ms);
        }
        assert!(subscription.try_recv().unwrap().is_none());

        let mut names = Names::default();
        let first = names.tenant("acme");
        assert!(Arc::ptr_eq(&first, &names.tenant("acme")));
        for n in 0..STREAM_NAMES_MAX * 2 {
            names.tenant(&format!("t{n}"));
            names.event_type(&format!("e.t{n}")).unwrap();
        }
        assert!(names.tenants.len() <= STREAM_NAMES_MAX);
        assert!(names.types.len() <= STREAM_NAMES_MAX);
        assert_eq!(&*names.tenant("acme"), "acme");
        assert!(names.event_type("no..type").is_none());
    }
}
