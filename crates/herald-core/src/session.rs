//! The shard session: the bookkeeping between a [`Dispatcher`] and its journal that every
//! driver needs, kept here so that the runtime's shard loop and the simulator run the same
//! code.
//!
//! A driver owns one [`Session`] per shard. It tells the session what happened (a record
//! was appended with a journal sequence number, the journal is durable up to a sequence
//! number, an attempt finished, a reply must wait for a record) and the session gives
//! back what follows: the commands to carry out ([`Session::pop_command`]), which replies
//! may now be released ([`Session::durable`]), and whether an outcome belongs to the
//! current dispatcher. It does no IO and reads no clock: the driver passes `now_ms` and
//! the journal's numbers in.
//!
//! ```
//! use herald_core::session::Session;
//! use herald_core::*;
//!
//! let now_ms = 1_700_000_000_000;
//! let mut session: Session<&str> = Session::new(Dispatcher::new(DispatcherConfig::default(), now_ms));
//! let tenant = TenantId::parse("acme").unwrap();
//! let spec = WebhookSpec::new(
//!     herald_http::Url::parse("https://receiver.example/hooks").unwrap(),
//!     vec![EventFilter::parse("order.*").unwrap()],
//!     herald_sign::Scheme::Standard,
//!     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
//! );
//! let append = session
//!     .dispatcher_mut()
//!     .upsert_webhook(now_ms, tenant, WebhookId::parse("wh_1").unwrap(), spec)
//!     .unwrap();
//! // The caller is answered once the record is durable, not before.
//! assert_eq!(session.hold(append, "created"), None);
//! let mut journal_seq = 0;
//! while let Some(command) = session.pop_command() {
//!     if let Command::Append { id, record: _ } = command {
//!         journal_seq += 1; // journal.append(..) returned this sequence number
//!         session.appended(id, journal_seq);
//!     }
//! }
//! assert_eq!(session.durable(journal_seq).collect::<Vec<_>>(), ["created"]);
//! ```

use std::collections::VecDeque;

use crate::body::{BodyPos, PayloadAt};
use crate::dispatcher::{AppendId, Command, Dispatcher, DispatcherConfig, Outcome, ReplayError};
use crate::record::{DecodeError, Record};

/// One dispatcher and the driver-side state that goes with it: which journal sequence
/// number each of its records got, how far the journal is durable, and the replies
/// (`R`, the driver's own type) waiting for their records to become durable.
///
/// Invariants, asserted in release builds because breaking one acknowledges work a crash
/// could lose, or loses work: records are appended in the order the dispatcher made them,
/// none skipped; journal sequence numbers only grow; a reply is released only once the
/// record it waits for is durable; no reply outlives the dispatcher it waits on
/// ([`Session::replace`]).
#[derive(Debug)]
pub struct Session<R> {
    dispatcher: Dispatcher,
    /// (journal seq, AppendId) of records appended but not yet known durable, in order.
    appended: VecDeque<(u64, AppendId)>,
    /// Highest AppendId appended to the journal.
    last_appended: AppendId,
    /// Journal sequence number of the latest record appended.
    last_seq: u64,
    /// Highest AppendId known durable (reported to the dispatcher).
    durable: AppendId,
    /// Replies waiting for durability, in the order they were held.
    waiting: VecDeque<(AppendId, R)>,
    /// Bumped by [`Session::replace`]: outcomes of sends the replaced dispatcher asked for
    /// are not the new one's.
    generation: u64,
}

impl<R> Session<R> {
    /// A session around `dispatcher` (fresh, or rebuilt by [`recover`]). Records it made
    /// and that were already polled are taken as handled and durable: the session
    /// accounts for what is polled through it.
    pub fn new(dispatcher: Dispatcher) -> Session<R> {
        let handled = handled_before(&dispatcher);
        Session {
            dispatcher,
            appended: VecDeque::new(),
            last_appended: handled,
            last_seq: 0,
            durable: handled,
            waiting: VecDeque::new(),
            generation: 0,
        }
    }

    /// The dispatcher, for queries.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The dispatcher, for inputs (webhook changes, events, manual operations, `tick`).
    /// Hold the replies of changes with [`Session::hold`]; report outcomes with
    /// [`Session::attempt_finished`] so that stale ones are dropped.
    pub fn dispatcher_mut(&mut self) -> &mut Dispatcher {
        &mut self.dispatcher
    }

    /// The next command to carry out, in order. After appending an `Append`'s record to
    /// the journal, report its sequence number with [`Session::appended`].
    pub fn pop_command(&mut self) -> Option<Command> {
        self.dispatcher.pop_command()
    }

    /// Moves every queued command to `out`, in order (see [`Session::pop_command`]).
    pub fn drain_commands(&mut self, out: &mut Vec<Command>) {
        self.dispatcher.drain_commands(out);
    }

    /// The record of `Append` `id` was appended to the journal as sequence number `seq`.
    ///
    /// # Panics
    /// If `id` is not the next record the dispatcher made (one was skipped or reordered)
    /// or `seq` does not follow the previous one: durability would then be reported for
    /// records the journal does not hold.
    pub fn appended(&mut self, id: AppendId, seq: u64) {
        assert_eq!(
            id.0,
            self.last_appended.0 + 1,
            "bug: records must reach the journal in the order made, none skipped"
        );
        assert!(
            seq > self.last_seq,
            "bug: journal sequence numbers must grow ({seq} after {})",
            self.last_seq
        );
        self.appended.push_back((seq, id));
        self.last_appended = id;
        self.last_seq = seq;
    }

    /// The journal is durable up to and including sequence number `durable_seq`: tells
    /// the dispatcher (whose deliveries of now durable events become due) and returns
    /// every reply that may be released, in the order of the records they wait for. The
    /// replies are taken out of the session whether or not the iterator is consumed:
    /// dropping one drops an answer.
    pub fn durable(&mut self, durable_seq: u64) -> impl Iterator<Item = R> + '_ {
        let mut through = self.durable;
        while let Some(&(seq, id)) = self.appended.front() {
            if seq > durable_seq {
                break;
            }
            through = id;
            self.appended.pop_front();
        }
        if through > self.durable {
            self.durable = through;
            self.dispatcher.records_durable(through);
        }
        let durable = self.durable;
        let released = self
            .waiting
            .iter()
            .take_while(|(append, _)| *append <= durable)
            .count();
        // Taken now, not lazily: a lazy drain would still remove the whole range when
        // dropped half-read, and the caller would lose answers it never saw.
        let released: Vec<R> = self
            .waiting
            .drain(..released)
            .map(|(_, reply)| reply)
            .collect();
        released.into_iter()
    }

    /// Holds `reply` until record `append` is durable; gives it back at once when it
    /// already is (or `append` is `AppendId(0)`: nothing to wait for).
    ///
    /// # Panics
    /// If the dispatcher never made record `append`: the reply would wait forever.
    pub fn hold(&mut self, append: AppendId, reply: R) -> Option<R> {
        assert!(
            append <= self.dispatcher.last_append(),
            "bug: a reply waits for record {} the dispatcher never made",
            append.0
        );
        if append <= self.durable {
            return Some(reply);
        }
        // Kept in record order, so that [`Session::durable`] releases a prefix: a reply
        // may wait on an older record than the last one held (an idempotent repeat waits
        // on the first publish's record), and releasing in the order held would keep it
        // behind a newer record that is not durable, or abandon it although its record
        // is durable.
        let at = self.waiting.partition_point(|(held, _)| *held <= append);
        self.waiting.insert(at, (append, reply));
        None
    }

    /// The last record known durable (`AppendId(0)` before any): a reply taken by
    /// [`Session::abandon`] that covers several records (a batch) may still hold some
    /// that are durable and will be carried out.
    pub fn durable_through(&self) -> AppendId {
        self.durable
    }

    /// Replies waiting for durability.
    pub fn held(&self) -> usize {
        self.waiting.len()
    }

    /// Takes every held reply: their records will not become durable through this
    /// dispatcher (the journal refused one, the process stops or crashed). The driver
    /// answers them with its error.
    pub fn abandon(&mut self) -> impl Iterator<Item = R> + '_ {
        self.waiting.drain(..).map(|(_, reply)| reply)
    }

    /// Replaces the dispatcher with one rebuilt from the journal ([`recover`]) and returns
    /// the replaced one (for its counters). Appended records are forgotten (the new
    /// dispatcher counts its records from 1) and the generation moves on, so outcomes of
    /// sends the replaced one asked for are dropped ([`Session::attempt_finished`]): the
    /// new one holds those attempts as in flight at a crash and sends them again.
    ///
    /// # Panics
    /// If replies are still held: answer them first ([`Session::durable`],
    /// [`Session::abandon`]); a reply left waiting would be answered by the new
    /// dispatcher's unrelated records.
    pub fn replace(&mut self, dispatcher: Dispatcher) -> Dispatcher {
        assert!(
            self.waiting.is_empty(),
            "bug: replies outlived the dispatcher they waited on"
        );
        let handled = handled_before(&dispatcher);
        self.appended.clear();
        self.last_appended = handled;
        self.last_seq = 0;
        self.durable = handled;
        self.generation += 1;
        std::mem::replace(&mut self.dispatcher, dispatcher)
    }

    /// The current generation: tag each send with it and report its outcome with it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a send of `generation` was asked for by the current dispatcher.
    pub fn is_current(&self, generation: u64) -> bool {
        generation == self.generation
    }

    /// Reports a finished attempt that generation `generation` asked for. `None` when
    /// that dispatcher was replaced since (the outcome is dropped); otherwise whether the
    /// dispatcher took it ([`Dispatcher::attempt_finished`]).
    pub fn attempt_finished(
        &mut self,
        now_ms: u64,
        generation: u64,
        outcome: Outcome,
    ) -> Option<bool> {
        if !self.is_current(generation) {
            return None;
        }
        Some(self.dispatcher.attempt_finished(now_ms, outcome))
    }
}

/// The last record `dispatcher` made that was polled before a session took it over
/// (`AppendId(0)` for a fresh or recovered one: its records are still queued).
fn handled_before(dispatcher: &Dispatcher) -> AppendId {
    let queued_appends = dispatcher
        .queued_commands()
        .filter(|command| matches!(command, Command::Append { .. }))
        .count() as u64;
    AppendId(dispatcher.last_append().0 - queued_appends)
}

/// The journal checkpoint frame version whose payloads are this build's checkpoint parts
/// (`herald_journal::CHECKPOINT_VERSION`). Checkpoints of journal version 1 were written
/// whole, with an older record layout ([`crate::RECORD_VERSION`] 4 and before): recovery
/// refuses them with [`DecodeError::Version`] rather than read them as parts.
pub const CHECKPOINT_FRAME_VERSION: u16 = 3;
/// Oldest journal checkpoint frame version read as parts: versions 2 and 3 differ only
/// in the journal's own part header, which replay strips, so their parts are the same
/// records.
pub const CHECKPOINT_FRAME_VERSION_MIN: u16 = 2;

/// One journal frame as recovery reads it.
#[derive(Clone, Copy, Debug)]
pub struct JournalFrame<'a> {
    /// The frame's journal sequence number (named in errors).
    pub seq: u64,
    /// Record kind ([`crate::record::kind`]); ignored for checkpoints.
    pub kind: u16,
    /// Record layout version; for a checkpoint, the journal's checkpoint frame version
    /// ([`CHECKPOINT_FRAME_VERSION_MIN`] to [`CHECKPOINT_FRAME_VERSION`] are read).
    pub version: u16,
    /// A checkpoint frame (`Journal::checkpoint`) rather than an appended record.
    pub checkpoint: bool,
    /// The encoded record, 16-byte aligned (as the journal stores it).
    pub payload: &'a [u8],
    /// Where the journal holds the payload, when its bytes stay readable there (through
    /// the driver's [`crate::BodyStore`]): the recovered events then keep positions
    /// instead of copies of their bodies (see [`crate::body`]). `None`: copies.
    pub at: Option<PayloadAt>,
}

/// Recovery could not rebuild a dispatcher from the journal. The source chain reaches the
/// journal's own error (`E`), the decoding error or the replay error.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError<E: std::error::Error + 'static> {
    /// The journal could not read a frame.
    #[error("{0}")]
    Journal(#[source] E),
    /// A frame does not decode as a record of this version.
    #[error("record {seq}: {source}")]
    Decode {
        /// The frame's journal sequence number.
        seq: u64,
        /// Why it does not decode.
        source: DecodeError,
    },
    /// A record does not apply to the state before it.
    #[error("record {seq}: {source}")]
    Replay {
        /// The frame's journal sequence number.
        seq: u64,
        /// Why it does not apply.
        source: ReplayError,
    },
}

/// Rebuilds a dispatcher from the frames of a journal, from its last checkpoint on, and
/// finishes recovery ([`Dispatcher::replay_finished`]): attempts in flight at the crash
/// become due now. Poll its commands afterwards (recovery may end deliveries).
pub fn recover<'a, E: std::error::Error + 'static>(
    config: DispatcherConfig,
    now_ms: u64,
    frames: impl IntoIterator<Item = Result<JournalFrame<'a>, E>>,
) -> Result<Dispatcher, RecoveryError<E>> {
    let mut dispatcher = Dispatcher::new(config, now_ms);
    for frame in frames {
        let frame = frame.map_err(RecoveryError::Journal)?;
        let seq = frame.seq;
        if frame.checkpoint {
            // The journal owns the checkpoint frame kind and its version; the payload
            // is a core record of the layout that frame version was written with.
            if !(CHECKPOINT_FRAME_VERSION_MIN..=CHECKPOINT_FRAME_VERSION).contains(&frame.version) {
                return Err(RecoveryError::Decode {
                    seq,
                    source: DecodeError::Version {
                        kind: crate::record::kind::CHECKPOINT,
                        version: frame.version,
                        supported: CHECKPOINT_FRAME_VERSION,
                    },
                });
            }
        }
        let (record, spans) = match frame.at {
            Some(_) => {
                Record::decode_located(frame.kind, frame.version, frame.checkpoint, frame.payload)
            }
            None if frame.checkpoint => {
                Record::decode_checkpoint(frame.payload).map(|r| (r, Vec::new()))
            }
            None => {
                Record::decode(frame.kind, frame.version, frame.payload).map(|r| (r, Vec::new()))
            }
        }
        .map_err(|source| RecoveryError::Decode { seq, source })?;
        let bodies: Vec<Option<BodyPos>> = match frame.at {
            Some(at) => spans
                .into_iter()
                .map(|span| span.and_then(|span| at.body(span)))
                .collect(),
            None => Vec::new(),
        };
        dispatcher
            .replay_located(&record, &bodies)
            .map_err(|source| RecoveryError::Replay { seq, source })?;
    }
    dispatcher.replay_finished(now_ms);
    Ok(dispatcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        AttemptResult, EventFilter, EventId, EventType, NewEvent, RegistryError, TenantId,
        WebhookId, WebhookSpec, API_VERSION_DEFAULT,
    };
    use herald_http::Url;
    use herald_sign::Scheme;

    const T0: u64 = 1_700_000_000_000;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn spec() -> WebhookSpec {
        WebhookSpec::new(
            Url::parse("https://receiver.example/hook").unwrap(),
            vec![EventFilter::parse("order.*").unwrap()],
            Scheme::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
        )
    }

    fn event(id: &str) -> NewEvent {
        NewEvent {
            id: EventId::parse(id).unwrap(),
            event_type: EventType::parse("order.created").unwrap(),
            api_version: API_VERSION_DEFAULT.to_string(),
            created_at_ms: T0,
            location_id: None,
            data: br#"{"n":1}"#.to_vec(),
            idempotency: None,
        }
    }

    /// A journal in memory: frames as the real one numbers them (checkpoints take a
    /// sequence number too).
    #[derive(Default)]
    struct Journal {
        frames: Vec<(u64, u16, u16, bool, rkyv::util::AlignedVec)>,
    }

    impl Journal {
        fn next_seq(&self) -> u64 {
            self.frames.len() as u64 + 1
        }

        fn push(&mut self, checkpoint: bool, record: &Record) -> u64 {
            let (kind, mut version, payload) = record.encode().unwrap();
            if checkpoint {
                version = CHECKPOINT_FRAME_VERSION;
            }
            let seq = self.next_seq();
            let mut aligned = rkyv::util::AlignedVec::new();
            aligned.extend_from_slice(&payload);
            self.frames.push((seq, kind, version, checkpoint, aligned));
            seq
        }

        /// Frames from the last checkpoint on.
        fn replay(&self) -> impl Iterator<Item = Result<JournalFrame<'_>, std::io::Error>> {
            let from = self.frames.iter().rposition(|frame| frame.3).unwrap_or(0);
            self.frames[from..]
                .iter()
                .map(|(seq, kind, version, checkpoint, payload)| {
                    Ok(JournalFrame {
                        seq: *seq,
                        kind: *kind,
                        version: *version,
                        checkpoint: *checkpoint,
                        payload,
                        at: None,
                    })
                })
        }
    }

    /// Appends every queued record; returns the sends.
    fn pump<R>(session: &mut Session<R>, journal: &mut Journal) -> Vec<crate::SendRequest> {
        let mut sends = Vec::new();
        while let Some(command) = session.pop_command() {
            match command {
                Command::Append { id, record } => {
                    let seq = journal.push(false, &record);
                    session.appended(id, seq);
                }
                Command::Send(request) => sends.push(request),
            }
        }
        sends
    }

    fn session() -> Session<&'static str> {
        Session::new(Dispatcher::new(DispatcherConfig::default(), T0))
    }

    /// Creates webhook `id` (its record queued, not yet appended).
    fn create<R>(s: &mut Session<R>, id: &str) -> AppendId {
        s.dispatcher_mut()
            .upsert_webhook(T0, tenant(), WebhookId::parse(id).unwrap(), spec())
            .unwrap()
    }

    /// Publishes event `id` (its record queued, not yet appended).
    fn publish<R>(s: &mut Session<R>, now_ms: u64, id: &str) -> crate::Accepted {
        s.dispatcher_mut()
            .accept_event(now_ms, &tenant(), event(id))
            .unwrap()
    }

    /// Outcomes reported in one turn share one record and one `AppendId`: the ids of the
    /// records after it still follow it one by one, replies wait for the right frames,
    /// and recovery applies every outcome.
    #[test]
    fn outcomes_of_one_turn_are_one_frame() {
        let mut journal = Journal::default();
        let mut s = session();
        create(&mut s, "wh_1");
        for i in 0..3 {
            publish(&mut s, T0, &format!("evt_{i}"));
        }
        pump(&mut s, &mut journal);
        let seq = journal.next_seq() - 1;
        s.durable(seq).for_each(drop);
        s.dispatcher_mut().tick(T0);
        let sends = pump(&mut s, &mut journal);
        assert_eq!(sends.len(), 3);
        assert_eq!(
            journal.next_seq() - 1,
            seq,
            "starting attempts writes nothing"
        );
        let generation = s.generation();
        for request in &sends {
            let outcome = Outcome {
                delivery: request.delivery,
                attempt: request.attempt,
                result: AttemptResult::Response {
                    status: 200,
                    retry_after: None,
                },
                latency_ms: 3,
                response_body: Vec::new(),
                response_headers: crate::ResponseHeaders::new(),
            };
            assert_eq!(s.attempt_finished(T0 + 5, generation, outcome), Some(true));
        }
        let outcomes = s.dispatcher().last_append();
        let created = create(&mut s, "wh_2");
        assert_eq!(created.0, outcomes.0 + 1);
        assert_eq!(s.hold(outcomes, "outcomes"), None);
        assert_eq!(s.hold(created, "created"), None);
        pump(&mut s, &mut journal);
        assert_eq!(
            journal.next_seq() - 1,
            seq + 2,
            "one frame of outcomes, one upsert"
        );
        let Some((_, kind, _, _, payload)) = journal.frames.get(seq as usize) else {
            panic!("the outcomes' frame");
        };
        let Ok(Record::AttemptsFinished(batch)) =
            Record::decode(*kind, crate::RECORD_VERSION, payload)
        else {
            panic!("the outcomes' frame holds them all");
        };
        let delivered: Vec<u64> = batch.iter().map(|o| o.delivery).collect();
        let sent: Vec<u64> = sends.iter().map(|r| r.delivery.0).collect();
        assert_eq!(delivered, sent);
        assert_eq!(s.durable(seq + 1).collect::<Vec<_>>(), ["outcomes"]);
        assert_eq!(s.durable(seq + 2).collect::<Vec<_>>(), ["created"]);
        let recovered = recover(DispatcherConfig::default(), T0 + 10, journal.replay()).unwrap();
        let stats = recovered.stats();
        assert_eq!((stats.pending_deliveries, stats.webhooks), (0, 2));
    }

    #[test]
    fn replies_wait_for_their_records_across_checkpoint_frames() {
        let mut journal = Journal::default();
        let mut s = session();
        let created = create(&mut s, "wh_1");
        assert_eq!(s.hold(created, "created"), None);
        pump(&mut s, &mut journal);
        // A checkpoint frame between two records: it has a sequence number and no id.
        let checkpoint = s.dispatcher().checkpoint(T0);
        journal.push(true, &checkpoint);
        let accepted = publish(&mut s, T0, "evt_1");
        assert_eq!(s.hold(accepted.append, "published"), None);
        pump(&mut s, &mut journal);
        assert_eq!(s.held(), 2);

        // Durable through the checkpoint: the webhook, not the event.
        assert_eq!(s.durable(2).collect::<Vec<_>>(), ["created"]);
        s.dispatcher_mut().tick(T0);
        assert!(
            pump(&mut s, &mut journal).is_empty(),
            "an event is not sent before its record is durable"
        );
        assert_eq!(s.durable(3).collect::<Vec<_>>(), ["published"]);
        s.dispatcher_mut().tick(T0);
        assert_eq!(pump(&mut s, &mut journal).len(), 1);
        // Already durable: given back at once, as is "nothing to wait for".
        assert_eq!(s.hold(created, "again"), Some("again"));
        assert_eq!(s.hold(AppendId(0), "query"), Some("query"));
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn a_reply_is_released_when_its_own_record_is_durable_whatever_the_order_held() {
        let mut journal = Journal::default();
        let mut s = session();
        create(&mut s, "wh_1");
        let first = publish(&mut s, T0, "evt_1").append;
        let second = publish(&mut s, T0, "evt_2").append;
        // Held newest first, as an idempotent repeat of the first publish would be.
        assert_eq!(s.hold(second, "second"), None);
        assert_eq!(s.hold(first, "first"), None);
        pump(&mut s, &mut journal);
        assert_eq!(s.durable(0).count(), 0, "nothing is durable yet");
        // Only the first event is durable: its reply goes, the second's waits.
        assert_eq!(s.durable(first.0).collect::<Vec<_>>(), ["first"]);
        assert_eq!(s.held(), 1);
        // The journal then refuses: only the reply whose record is not durable is
        // abandoned.
        assert_eq!(s.abandon().collect::<Vec<_>>(), ["second"]);
    }

    #[test]
    fn released_replies_are_taken_even_when_the_iterator_is_dropped_unread() {
        let mut journal = Journal::default();
        let mut s = session();
        let created = create(&mut s, "wh_1");
        let published = publish(&mut s, T0, "evt_1").append;
        assert_eq!(s.hold(created, "created"), None);
        assert_eq!(s.hold(published, "published"), None);
        pump(&mut s, &mut journal);
        let mut released = s.durable(published.0);
        assert_eq!(released.next(), Some("created"));
        drop(released);
        assert_eq!(s.held(), 0, "both replies left the session");
    }

    #[test]
    fn an_update_never_creates_a_webhook() {
        let mut s = session();
        let id = WebhookId::parse("wh_1").unwrap();
        let refused = s
            .dispatcher_mut()
            .update_webhook(T0, tenant(), id.clone(), spec());
        assert!(
            matches!(refused, Err(RegistryError::NotFound { .. })),
            "{refused:?}"
        );
        assert_eq!(
            s.dispatcher().last_append(),
            AppendId(0),
            "nothing recorded"
        );
        s.dispatcher_mut()
            .upsert_webhook(T0, tenant(), id.clone(), spec())
            .unwrap();
        let mut changed = spec();
        changed.description = Some("changed".to_string());
        let append = s
            .dispatcher_mut()
            .update_webhook(T0, tenant(), id.clone(), changed)
            .unwrap();
        assert_eq!(append, AppendId(2));
        assert_eq!(
            s.dispatcher()
                .webhook(&tenant(), &id)
                .unwrap()
                .spec
                .description
                .as_deref(),
            Some("changed")
        );
    }

    #[test]
    fn a_replaced_dispatcher_drops_its_outcomes_and_numbering() {
        let mut journal = Journal::default();
        let mut s = session();
        create(&mut s, "wh_1");
        let accepted = publish(&mut s, T0, "evt_1");
        pump(&mut s, &mut journal);
        let _ = s.durable(journal.next_seq() - 1).count();
        s.dispatcher_mut().tick(T0);
        let sends = pump(&mut s, &mut journal);
        assert_eq!(sends.len(), 1);
        let generation = s.generation();
        let late = publish(&mut s, T0, "evt_2");
        assert_eq!(s.hold(late.append, "late"), None);
        // The journal refuses the next record: what waits is abandoned, the dispatcher
        // rebuilt from what the journal holds.
        assert_eq!(s.abandon().collect::<Vec<_>>(), ["late"]);
        let rebuilt = recover(DispatcherConfig::default(), T0 + 1, journal.replay()).unwrap();
        s.replace(rebuilt);
        assert_ne!(s.generation(), generation);
        let outcome = Outcome {
            delivery: sends[0].delivery,
            attempt: sends[0].attempt,
            result: AttemptResult::Response {
                status: 200,
                retry_after: None,
            },
            latency_ms: 1,
            response_body: Vec::new(),
            response_headers: crate::ResponseHeaders::new(),
        };
        assert_eq!(s.attempt_finished(T0 + 2, generation, outcome), None);
        // The rebuilt dispatcher sends the attempt that was in flight again, and numbers
        // its records from 1 (`appended` asserts the order from the start).
        // The wheel rounds deadlines up to its tick: go from deadline to deadline.
        let (now, again) = loop {
            let now = s
                .dispatcher()
                .next_deadline_ms()
                .expect("the attempt is due again");
            s.dispatcher_mut().tick(now);
            let sent = pump(&mut s, &mut journal);
            if !sent.is_empty() {
                break (now, sent);
            }
        };
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].delivery, sends[0].delivery);
        assert_eq!(again[0].event_id, accepted.event_id);
        let next = publish(&mut s, now, "evt_3");
        pump(&mut s, &mut journal);
        assert_eq!(next.append, s.dispatcher().last_append());
        assert!(next.append <= AppendId(2), "{next:?}");
    }

    #[test]
    #[should_panic(expected = "in the order made")]
    fn a_skipped_record_is_a_bug() {
        let mut s = session();
        create(&mut s, "wh_1");
        create(&mut s, "wh_2");
        s.appended(AppendId(2), 1);
    }

    #[test]
    #[should_panic(expected = "sequence numbers must grow")]
    fn a_sequence_number_that_goes_back_is_a_bug() {
        let mut s = session();
        for id in ["wh_1", "wh_2"] {
            create(&mut s, id);
        }
        s.appended(AppendId(1), 5);
        s.appended(AppendId(2), 5);
    }

    #[test]
    fn records_polled_before_the_session_count_as_handled() {
        let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
        let created = d
            .upsert_webhook(T0, tenant(), WebhookId::parse("wh_1").unwrap(), spec())
            .unwrap();
        while d.pop_command().is_some() {}
        let queued = d
            .upsert_webhook(T0, tenant(), WebhookId::parse("wh_2").unwrap(), spec())
            .unwrap();
        let mut s: Session<&str> = Session::new(d);
        assert_eq!(s.hold(created, "earlier"), Some("earlier"));
        assert_eq!(s.hold(queued, "queued"), None);
        let mut journal = Journal::default();
        // The first record through the session is the one still queued.
        pump(&mut s, &mut journal);
        assert_eq!(s.durable(1).collect::<Vec<_>>(), ["queued"]);
    }

    #[test]
    #[should_panic(expected = "never made")]
    fn a_reply_for_a_record_never_made_is_a_bug() {
        session().hold(AppendId(1), "forever");
    }

    #[test]
    #[should_panic(expected = "outlived")]
    fn replies_must_not_outlive_their_dispatcher() {
        let mut s = session();
        let append = create(&mut s, "wh_1");
        let _ = s.hold(append, "waiting");
        s.replace(Dispatcher::new(DispatcherConfig::default(), T0));
    }

    #[test]
    fn a_checkpoint_of_another_frame_version_is_refused_not_misread() {
        let mut journal = Journal::default();
        let mut s = session();
        create(&mut s, "wh_1");
        pump(&mut s, &mut journal);
        let checkpoint = s.dispatcher().checkpoint(T0);
        journal.push(true, &checkpoint);
        assert!(recover(DispatcherConfig::default(), T0, journal.replay()).is_ok());
        // Parts of journal version 2 (an older part header, stripped by replay) are the
        // same records: journals written before version 3 still recover.
        journal.frames.last_mut().unwrap().2 = CHECKPOINT_FRAME_VERSION_MIN;
        assert!(recover(DispatcherConfig::default(), T0, journal.replay()).is_ok());
        // The same checkpoint as a whole-checkpoint frame of journal version 1 (written
        // with an older record layout): the last frame, so nothing after it would fail.
        journal.frames.last_mut().unwrap().2 = 1;
        let error = recover(DispatcherConfig::default(), T0, journal.replay()).unwrap_err();
        assert!(
            matches!(
                error,
                RecoveryError::Decode {
                    seq: 2,
                    source: DecodeError::Version { version: 1, .. }
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn recovery_errors_name_the_record_and_keep_their_cause() {
        use std::error::Error as _;
        let mut journal = Journal::default();
        let mut s = session();
        create(&mut s, "wh_1");
        pump(&mut s, &mut journal);
        // Cut the payload short so that it no longer decodes.
        let mut short = rkyv::util::AlignedVec::new();
        short.extend_from_slice(&journal.frames[0].4[..3]);
        journal.frames[0].4 = short;
        let error = recover(DispatcherConfig::default(), T0, journal.replay()).unwrap_err();
        assert!(
            matches!(error, RecoveryError::Decode { seq: 1, .. }),
            "{error:?}"
        );
        assert!(error.to_string().starts_with("record 1: "), "{error}");
        assert!(error
            .source()
            .unwrap()
            .downcast_ref::<DecodeError>()
            .is_some());

        let unreadable = std::iter::once(Err(std::io::Error::other("disk gone")));
        let error = recover(DispatcherConfig::default(), T0, unreadable).unwrap_err();
        let source = error.source().unwrap();
        assert_eq!(source.to_string(), "disk gone");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }
}
