//! The shard thread: start-up (journal open + replay) and the serving loop.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_core::session::{self, JournalFrame, RecoveryError, Session};
use herald_core::{
    AppendId, AttemptResult, BodyPos, BodyStore, Command, Dispatcher, DispatcherConfig, Outcome,
    PayloadAt, Record, RecordBuffer, ResponseHeaders, SendRequest,
};
use herald_journal::{Journal, JournalConfig, JournalError};

use super::intake::IntakeReceiver;
use super::notify::LocalNotify;
use super::oneshot::{Reply, Wakeups};
use super::status::{ShardExit, ShardStatus, StartError, StorageError};
use super::stream::{ShardStream, StreamTap};
use super::wake::{Wake, WakeReceiver};
use super::{
    Failure, Published, Request, ShardConfig, ShardStats, TestSent, WebhookInfo, WebhookWrite,
    IDLE_WAKE_MS,
};
use crate::{HttpClient, OutboundRequest, TransportError};

/// Wall-clock milliseconds since the Unix epoch: the dispatcher's time base (retry
/// times are journaled as Unix ms and must survive restarts).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Everything a shard thread is started with.
pub(crate) struct ShardSetup {
    pub(crate) index: usize,
    pub(crate) dir: PathBuf,
    pub(crate) config: ShardConfig,
    pub(crate) intake: IntakeReceiver<Request>,
    pub(crate) wake: WakeReceiver,
    pub(crate) status: Arc<ShardStatus>,
    pub(crate) stream: Arc<ShardStream>,
    pub(crate) ready: mpsc::Sender<(usize, Result<(), StartError>)>,
}

/// A reply waiting for its records to become durable.
enum Ack {
    Unit(Reply<Result<(), Failure>>),
    Event(
        Reply<Result<herald_core::EventId, Failure>>,
        herald_core::EventId,
    ),
    Purge(
        Reply<Result<herald_core::TenantPurge, Failure>>,
        herald_core::TenantPurge,
    ),
    Resent(
        Reply<Result<herald_core::Resent, Failure>>,
        herald_core::Resent,
    ),
    Published(Reply<Result<Published, Failure>>, Published),
    Test(Reply<Result<TestSent, Failure>>, TestSent),
    /// Per-event results of a batch, each accepted one with the record it waits for
    /// (the reply is held for the last); the accepted ones become `Ok` when durable.
    Batch(Reply<Vec<BatchResult>>, Vec<(AppendId, BatchResult)>),
}

/// One event's result in a batch publish.
type BatchResult = Result<Published, Failure>;

impl Ack {
    fn succeed(self) {
        let mut wakeups = Wakeups::default();
        self.succeed_deferred(&mut wakeups);
    }

    /// Answers with success, the receiver's wake-up left to `wakeups`
    /// ([`Reply::send_deferred`]).
    fn succeed_deferred(self, wakeups: &mut Wakeups) {
        match self {
            Ack::Unit(reply) => reply.send_deferred(Ok(()), wakeups),
            Ack::Event(reply, id) => reply.send_deferred(Ok(id), wakeups),
            Ack::Purge(reply, purge) => reply.send_deferred(Ok(purge), wakeups),
            Ack::Resent(reply, resent) => reply.send_deferred(Ok(resent), wakeups),
            Ack::Published(reply, published) => reply.send_deferred(Ok(published), wakeups),
            Ack::Test(reply, sent) => reply.send_deferred(Ok(sent), wakeups),
            Ack::Batch(reply, results) => {
                reply.send_deferred(results.into_iter().map(|(_, r)| r).collect(), wakeups);
            }
        }
    }

    /// Answers with `failure` a reply whose records will not become durable through
    /// this dispatcher; `durable` is the last record that did.
    fn fail(self, failure: Failure, durable: AppendId) {
        match self {
            Ack::Unit(reply) => reply.send(Err(failure)),
            Ack::Event(reply, _) => reply.send(Err(failure)),
            Ack::Purge(reply, _) => reply.send(Err(failure)),
            Ack::Resent(reply, _) => reply.send(Err(failure)),
            Ack::Published(reply, _) => reply.send(Err(failure)),
            Ack::Test(reply, _) => reply.send(Err(failure)),
            Ack::Batch(reply, results) => reply.send(fail_batch(results, &failure, durable)),
        }
    }
}

/// The accepted events of a batch whose records are durable keep their success (the
/// journal holds them: they will be delivered, and a publisher told otherwise would
/// send them again); the others get `failure`; refused ones keep their own error.
fn fail_batch(
    results: Vec<(AppendId, BatchResult)>,
    failure: &Failure,
    durable: AppendId,
) -> Vec<BatchResult> {
    results
        .into_iter()
        .map(|(append, result)| {
            result.and_then(|published| {
                if append <= durable {
                    Ok(published)
                } else {
                    Err(failure.clone())
                }
            })
        })
        .collect()
}

/// Largest record buffer kept for reuse: records are small; a rare big one (a webhook
/// with many secrets and headers, a checkpoint) is not worth holding on to.
const RECORD_BUFFER_KEPT_BYTES_MAX: usize = 64 * 1024;

/// A checkpoint part aims at this fraction of the largest part the journal takes: the
/// dispatcher's size estimate is generous, an event's deliveries may run to twice the
/// target before they continue in the next part, and a quarter leaves room for both
/// while keeping parts (and the buffer one is encoded into) a few MiB.
const CHECKPOINT_PART_TARGET_DIVISOR: u64 = 4;

/// Target size of a part of a checkpoint written between turns: about a quarter of a
/// millisecond of building and encoding (a finished delivery with its kept response
/// costs ~1.5 µs and ~330 bytes), so that a part holds up its turn by about that much.
const CHECKPOINT_STEP_PART_BYTES: usize = 64 * 1024;

/// Most time one turn gives a checkpoint being written between turns (at least one
/// part, when its share allows one): the shard's own work waits behind it.
const CHECKPOINT_TURN_BUDGET: Duration = Duration::from_millis(1);

/// Share of the shard's time a checkpoint being written between turns may take, over
/// its whole course: a checkpoint of 100,000 deliveries costs ~160 ms of the shard's
/// thread, which taken at once on a busy shard delays every event behind it, while a
/// quarter of the time spreads it over ~0.65 s that the shard's spare time absorbs.
/// An idle shard keeps to the share too (the copies a checkpoint keeps live that much
/// longer; a clean stop abandons one underway and writes a whole one at once).
const CHECKPOINT_TIME_SHARE: f64 = 0.25;

/// A checkpoint being written a part at a time between turns; see
/// [`Shard::write_checkpoint`].
struct CheckpointUnderway {
    journal: herald_journal::CheckpointHandle,
    parts: herald_core::Checkpoint,
    /// Records since the previous checkpoint when it began (counted again if it is
    /// abandoned).
    records_before: u64,
    /// Frame bytes appended for it so far.
    bytes: u64,
    /// Time spent on it on the shard thread.
    busy: Duration,
    /// When it began.
    began: Instant,
}

/// CPU time of the calling thread, µs (a system call: read around a checkpoint's turn
/// only, not per delivery).
fn thread_cpu_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000
}

/// What the shard's checkpoints and its start-up replay cost ([`ShardStats`] figures).
#[derive(Clone, Copy, Debug, Default)]
struct CheckpointFigures {
    written: u64,
    seq_last: u64,
    bytes_last: u64,
    us_last: u64,
    replayed_frames: u64,
    replayed_bytes: u64,
    /// `journal_bytes_appended` right after the latest checkpoint.
    appended_at_last: u64,
    /// Shard-thread CPU time and journal bytes of every checkpoint since start, abandoned
    /// ones included ([`ShardStats::checkpoint_cpu_us_total`]).
    cpu_us_total: u64,
    bytes_total: u64,
}

/// What finished send tasks report back to the loop: each outcome with the generation
/// of the dispatcher that asked for the send.
type Finished = Vec<(u64, Outcome)>;

/// First delay before probing a journal that refused a record again.
const STORAGE_PROBE_DELAY_MIN: Duration = Duration::from_millis(50);
/// Longest delay between two probes: once space frees, the shard takes changes again
/// within this, while a disk that stays full costs one failed `fallocate` per period.
const STORAGE_PROBE_DELAY_MAX: Duration = Duration::from_secs(2);

/// The journal refused a record for a reason that can pass (a full disk, a segment file
/// it could not create, a record it could not take). The records from the refused one
/// on were never journaled, so the dispatcher that made them was replaced by one rebuilt
/// from the journal: memory again holds exactly what is durable. Until the journal can
/// write again the shard answers queries, refuses changes with a storage error, fires no
/// timers (a send would need its attempt journaled) and probes the journal with a
/// growing delay.
struct Blocked {
    /// Why, for callers whose changes are refused.
    error: StorageError,
    /// Payload size of the refused record: the probe makes room for one like it.
    payload_bytes: u64,
    next_probe: Instant,
    delay: Duration,
    /// A checkpoint at the segment limit left no room (logged once).
    state_fills_the_limit: bool,
}

/// What a blocked shard's refusals add to the journal's error.
const REFUSED_UNTIL_WRITABLE: &str = "; changes are refused until the journal can write again";

/// What they add when a checkpoint of the state, written at the segment limit, left no
/// room: nothing the shard can do frees any (ending deliveries would take records too).
const STATE_FILLS_THE_LIMIT: &str = "; the shard's state, in a checkpoint written at the \
     limit, leaves no room under it: changes are refused until the engine is started \
     again with more segments (journal_segments_max) or larger ones \
     (journal_segment_bytes)";

/// Syncs the journal. A write that found no space withdrew what it could not write
/// ([`JournalError::Withdrawn`]); what it wrote is synced then.
fn sync_written(journal: &mut Journal) -> Result<u64, JournalError> {
    match journal.sync() {
        Err(error) if error.is_storage_full() && journal.withdrawn_from().is_some() => {
            journal.sync()
        }
        synced => synced,
    }
}

/// Why [`Shard::append`] could not journal a record.
enum AppendFailure {
    /// The journal can take records again once the cause passes (see [`Blocked`]).
    Passing {
        error: StorageError,
        payload_bytes: u64,
    },
    /// The journal is unusable for this process (a failed sync: the kernel may have
    /// dropped the written pages, so only reopening from disk tells what is durable).
    Permanent(StorageError),
}

struct Shard {
    index: usize,
    config: ShardConfig,
    journal: Journal,
    /// The segments event bodies are handed to requests from.
    segment_bytes: SegmentBytes,
    /// The dispatcher with the bookkeeping every driver shares (herald-core's session,
    /// which the simulator runs too): journal sequence numbers, replies held until
    /// their records are durable, the generation of sends.
    session: Session<Ack>,
    /// Receivers of the replies answered in one go, woken once all are answered.
    wakeups: Wakeups,
    client: Rc<HttpClient>,
    intake: IntakeReceiver<Request>,
    wake: Arc<Wake>,
    status: Arc<ShardStatus>,
    local: Rc<LocalNotify>,
    finished: Rc<RefCell<Finished>>,
    sends_in_flight: Rc<RefCell<usize>>,
    commands: Vec<Command>,
    records_since_checkpoint: u64,
    /// Reused for every record's serialization (one allocation per record otherwise,
    /// plus the reallocations while it grows).
    record_buffer: RecordBuffer,
    last_checkpoint: Instant,
    last_sweep: Instant,
    /// Set when the journal failed for good (a failed sync): the shard stops and answers
    /// nothing more.
    storage_failure: Option<StorageError>,
    /// Set while the journal cannot take records; see [`Blocked`].
    blocked: Option<Blocked>,
    /// Counters of dispatchers replaced by a rebuild, so the shard's stay monotonic.
    counters_replaced: herald_core::Counters,
    /// Journal frame bytes appended since start.
    journal_bytes_appended: u64,
    /// Turns whose records were committed to be synced within the group delay, and
    /// within the lazy delay ([`ShardStats::journal_commits_urgent`]).
    journal_commits: (u64, u64),
    /// Journal sync latencies since start, folded in from the journal's bounded sample
    /// ring at every idle sweep and stats request (the ring holds far more syncs than
    /// happen between two).
    journal_sync_us: herald_core::Histogram,
    /// Accepted events on their way to the event stream once durable.
    stream: StreamTap,
    /// Checkpoints written and the start-up replay, for [`ShardStats`].
    checkpoints: CheckpointFigures,
    /// The checkpoint being written between turns.
    checkpoint: Option<CheckpointUnderway>,
}

/// Entry point of a shard thread (runs inside its glommio executor).
pub(crate) async fn run_shard(setup: ShardSetup) -> ShardExit {
    let ShardSetup {
        index,
        dir,
        mut config,
        intake,
        wake,
        status,
        stream,
        ready,
    } = setup;
    let report = |result: Result<(), StartError>| {
        // The engine stops waiting only after every shard reported or died; a closed
        // channel means start-up already failed elsewhere.
        let _ = ready.send((index, result));
    };
    let storage = |error: StorageError| StartError::Storage {
        shard: index,
        error,
    };

    let journal_config = JournalConfig {
        dir: dir.clone(),
        segment_bytes: config.journal_segment_bytes,
        group_records_max: config.journal_group_records_max,
        group_delay_us: config.journal_group_delay_us,
        lazy_delay_us: config.journal_lazy_delay_us,
        segments_max: config.journal_segments_max,
        repair: false,
    };
    let (mut journal, recovery) = match Journal::open(journal_config) {
        Ok(opened) => opened,
        Err(error) => {
            let fault = error.fault();
            let failure = StorageError::caused(&dir.display().to_string(), error);
            let message = failure.message().to_string();
            // A bad setting or a directory already open elsewhere is the caller's to fix.
            let (start_error, exit) = match fault {
                herald_journal::Fault::Caller => (
                    StartError::Config(format!("shard {index}: {message}")),
                    ShardExit::Storage(failure),
                ),
                herald_journal::Fault::Storage => {
                    (storage(failure.clone()), ShardExit::Storage(failure))
                }
                // The host refused the journal a thread: nothing on disk is wrong.
                herald_journal::Fault::Environment => (
                    StartError::Runtime {
                        shard: index,
                        message: message.clone(),
                        source: failure.cause(),
                    },
                    ShardExit::Runtime(message),
                ),
            };
            report(Err(start_error));
            status.set_stopped();
            return exit;
        }
    };
    // An event whose record the journal would refuse is the caller's error, refused when
    // it is accepted: not a storage fault found at the append, which holds the shard.
    config.dispatcher.record_bytes_max = config.dispatcher.record_bytes_max.min(
        usize::try_from(journal.checkpoint_part_bytes_max())
            .unwrap_or(usize::MAX)
            .saturating_sub(CHECKPOINT_ITEM_SLACK_BYTES),
    );
    let mut checkpoints = CheckpointFigures::default();
    let replayed = (
        &mut checkpoints.replayed_frames,
        &mut checkpoints.replayed_bytes,
    );
    let dispatcher = match recover(&journal, &config.dispatcher, now_ms(), replayed) {
        Ok(dispatcher) => dispatcher,
        Err(error) => {
            let failure = StorageError::caused(&dir.display().to_string(), error);
            report(Err(storage(failure.clone())));
            status.set_failed(ShardExit::Storage(failure.clone()));
            return ShardExit::Storage(failure);
        }
    };
    let tap = StreamTap::new(stream);
    tap.rebuild(&journal, now_ms());
    let stats = dispatcher.stats();
    tracing::info!(
        shard = index,
        dir = %dir.display(),
        records = recovery.records,
        checkpoint_seq = ?recovery.checkpoint_seq,
        torn_tail = recovery.torn_tail.is_some(),
        torn_tail_bytes = recovery.torn_tail.as_ref().map_or(0, |t| t.bytes_discarded),
        torn_tail_intact_records = recovery
            .torn_tail
            .as_ref()
            .map_or(0, |t| t.intact_frames_discarded),
        durable_mark = ?recovery.durable_mark,
        webhooks = stats.webhooks,
        pending_deliveries = stats.pending_deliveries,
        "shard recovered its journal"
    );
    if let Some(failure) = &recovery.after_failure {
        tracing::warn!(
            shard = index,
            dir = %dir.display(),
            %failure,
            "the journal had failed before: its segments were read from the disk, not the \
             page cache, so that frames the disk did not take are not taken as recovered"
        );
    }
    if recovery.durable_mark.is_none() && recovery.records > 0 {
        tracing::warn!(
            shard = index,
            dir = %dir.display(),
            "the journal had no durable mark: whether its log ends where the acknowledged \
             records do could not be checked (a journal from an older build, or a mark that \
             could not be written)"
        );
    }

    let shard_wake = wake.wake().clone();
    let notifier = shard_wake.clone();
    journal.set_durable_notify(Box::new(move |_| notifier.notify()));
    let wake_file = match wake.into_glommio() {
        Ok(file) => file,
        Err(error) => {
            let message = format!("binding the wake eventfd: {error}");
            report(Err(StartError::Runtime {
                shard: index,
                message: message.clone(),
                source: Some(Arc::new(error)),
            }));
            status.set_stopped();
            // The host's doing (the executor's reactor), not the disk's.
            return ShardExit::Runtime(message);
        }
    };
    let local = Rc::new(LocalNotify::default());
    let reader_notify = local.clone();
    // Turns foreign threads' wake-ups into local ones; ends with the executor.
    glommio::spawn_local(async move {
        loop {
            match wake_file.read_at(0, 8).await {
                Ok(_) => reader_notify.notify(),
                Err(error) => {
                    // Without this task the shard still wakes on its timers (at most
                    // IDLE_WAKE_MS apart), so it degrades instead of hanging.
                    tracing::error!(shard = index, %error, "reading the wake eventfd failed");
                    break;
                }
            }
        }
    })
    .detach();

    let client = Rc::new(HttpClient::new(config.client.clone()));
    let mut shard = Shard {
        index,
        config,
        journal,
        segment_bytes: SegmentBytes::default(),
        session: Session::new(dispatcher),
        wakeups: Wakeups::default(),
        client,
        intake,
        wake: shard_wake,
        status,
        local,
        finished: Rc::new(RefCell::new(Vec::new())),
        sends_in_flight: Rc::new(RefCell::new(0)),
        commands: Vec::new(),
        records_since_checkpoint: 0,
        record_buffer: RecordBuffer::new(),
        last_checkpoint: Instant::now(),
        last_sweep: Instant::now(),
        storage_failure: None,
        blocked: None,
        counters_replaced: herald_core::Counters::default(),
        journal_bytes_appended: 0,
        journal_commits: (0, 0),
        journal_sync_us: herald_core::Histogram::new(&super::JOURNAL_SYNC_BOUNDS_US),
        stream: tap,
        checkpoints,
        checkpoint: None,
    };
    // Replay may have produced records (deliveries of deleted webhooks ended); journal
    // them before serving.
    shard.pump();
    report(Ok(()));
    // Replay's buffers are freed; what stays is the state. (After the start is
    // reported, so that readiness does not wait for it.)
    super::memory::release_freed_memory();
    let exit = shard.serve().await;
    match &exit {
        ShardExit::Clean => shard.status.set_stopped(),
        failed => shard.status.set_failed(failed.clone()),
    }
    exit
}

/// One attempt's exchange with its receiver, as the outcome reports it: the result, the
/// response's body (or the error's text) and its kept headers.
async fn exchange(
    client: &HttpClient,
    outbound: &OutboundRequest,
    started: Instant,
) -> (AttemptResult, Vec<u8>, ResponseHeaders) {
    match client.send_from(outbound, started).await {
        Ok(response) => {
            // Bounded here, so that a response with many headers costs no more than the
            // kept ones while its outcome waits for the shard's turn; within the limits
            // the parser's buffer is taken over, not copied.
            let headers = ResponseHeaders::from_received(response.headers);
            (
                AttemptResult::Response {
                    status: response.status,
                    retry_after: response.retry_after,
                },
                response.body,
                headers,
            )
        }
        Err(error) => (
            AttemptResult::Transport(map_transport(&error)),
            error.to_string().into_bytes(),
            ResponseHeaders::new(),
        ),
    }
}

/// Room kept in a record's bound for a checkpoint's part, which holds an event with at
/// least one of its deliveries: the delivery's kept response body (4 KiB), headers
/// (2 KiB), attempt history (32 entries of under 80 bytes) and ids, under 10 KiB.
const CHECKPOINT_ITEM_SLACK_BYTES: usize = 16 * 1024;

/// Rebuilds a dispatcher from the journal, from its last checkpoint on
/// ([`herald_core::session::recover`], as the simulator does), counting the frames and
/// payload bytes it replays into `replayed`.
fn recover(
    journal: &Journal,
    config: &DispatcherConfig,
    now_ms: u64,
    replayed: (&mut u64, &mut u64),
) -> Result<Dispatcher, RecoveryError<JournalError>> {
    let (frames_replayed, bytes_replayed) = replayed;
    let frames = journal.replay().map(|frame| {
        frame.map(|frame| {
            *frames_replayed += 1;
            *bytes_replayed += frame.payload.len() as u64;
            JournalFrame {
                seq: frame.seq,
                kind: frame.kind,
                version: frame.version,
                checkpoint: frame.is_checkpoint(),
                payload: frame.payload,
                at: Some(PayloadAt {
                    segment: frame.position.segment,
                    offset: frame.position.offset,
                }),
            }
        })
    });
    // Every append of an event reports where its envelope landed (`Shard::append`).
    session::recover(config.clone(), now_ms, frames).map(|mut dispatcher| {
        dispatcher.report_envelopes();
        dispatcher
    })
}

/// The core's class of a transport error (the outcome's; the detail goes into the
/// attempt's response body).
fn map_transport(error: &TransportError) -> herald_core::TransportError {
    use herald_core::TransportError as Core;
    match error {
        TransportError::Dns(_) => Core::Dns,
        TransportError::EgressRefused(_) => Core::EgressDenied,
        TransportError::Connect(_) => Core::Connect,
        TransportError::ConnectTimeout(_) => Core::ConnectTimeout,
        TransportError::PoolFull(_) => Core::PoolFull,
        TransportError::Tls(_) => Core::Tls,
        TransportError::RequestTimeout(_) => Core::RequestTimeout,
        // Nothing was sent and nothing would be: a final failure, not a retry.
        TransportError::InvalidRequest(_) => Core::InvalidRequest,
        // Connection broken mid-exchange or a malformed response: "the exchange failed",
        // retried by schedule.
        _ => Core::Protocol,
    }
}

impl Shard {
    /// The shard loop. Serving, it turns and sleeps until the next deadline or wake-up.
    /// Once asked to stop it keeps turning (taking what is queued, letting sends in
    /// flight finish) until nothing is in flight or the grace period is over, then makes
    /// everything durable and answers every waiter ([`Shard::stop`]).
    async fn serve(&mut self) -> ShardExit {
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        let mut closing_since: Option<Instant> = None;
        loop {
            self.wake.awake();
            self.local.take();
            self.turn();
            if let Some(error) = self.storage_failure.clone() {
                return self.stop_failed(error);
            }
            if closing_since.is_none() && self.status.is_closing() {
                closing_since = Some(Instant::now());
            }
            let sleep = match closing_since {
                Some(started) => {
                    let elapsed = started.elapsed();
                    let in_flight = *self.sends_in_flight.borrow();
                    if (in_flight == 0 && self.intake.is_empty()) || elapsed >= grace {
                        return self.stop();
                    }
                    (grace - elapsed).min(Duration::from_millis(100))
                }
                None => {
                    let now = now_ms();
                    // A blocked shard fires no timers: only its next probe wakes it.
                    let deadline = match &self.blocked {
                        None => self.session.dispatcher().next_deadline_ms(),
                        Some(blocked) => {
                            let wait = blocked.next_probe.saturating_duration_since(Instant::now());
                            Some(now + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX / 2) + 1)
                        }
                    };
                    let ready_now = (!self.intake.is_empty()
                        && self.session.held() < self.config.awaiting_durable_max)
                        || !self.finished.borrow().is_empty()
                        || (self.blocked.is_none() && deadline.is_some_and(|d| d <= now));
                    // A checkpoint underway goes on a few parts per turn, within its
                    // share of the shard's time: the shard sleeps until its share allows
                    // more rather than turn without doing anything.
                    let checkpoint_wait = self.checkpoint_wait();
                    if ready_now || checkpoint_wait == Some(Duration::ZERO) {
                        futures_lite::future::yield_now().await;
                        continue;
                    }
                    let sleep_ms = deadline
                        .map_or(IDLE_WAKE_MS, |d| d.saturating_sub(now))
                        .min(IDLE_WAKE_MS);
                    let sleep = Duration::from_millis(sleep_ms.max(1));
                    checkpoint_wait.map_or(sleep, |wait| sleep.min(wait))
                }
            };
            // A notification that arrived during the turn: go round again, but let send
            // tasks and the reactor run first, so that a stream of foreign notifications
            // cannot starve them.
            if !self.wake.prepare_sleep() {
                futures_lite::future::yield_now().await;
                continue;
            }
            futures_lite::future::or(self.local.wait(), glommio::timer::sleep(sleep)).await;
        }
    }

    /// The journal failed for good: record the cause first (so callers that find the
    /// shard gone see it), then fail every waiter.
    fn stop_failed(&mut self, error: StorageError) -> ShardExit {
        self.status.set_failed(ShardExit::Storage(error.clone()));
        // Records the sync thread made durable before the failure (the journal's
        // durable sequence moves only after a sync that succeeded) are answered as
        // such: their publishers must not be told they failed, and publish them again.
        self.advance_durable();
        self.fail_everything(&error);
        ShardExit::Storage(error)
    }

    /// One turn: intake, outcomes, commands, durability, tick, checkpoint.
    fn turn(&mut self) {
        let now = now_ms();
        // While too many replies wait for the disk, leave requests in the intake queue:
        // callers then see back-pressure instead of the shard buffering without bound.
        let room = self
            .config
            .awaiting_durable_max
            .max(1)
            .saturating_sub(self.session.held());
        // Each request is handled as it is taken, not gathered first: a publish is a
        // few hundred bytes, and every move of it is a copy.
        let mut taken = 0;
        while taken < self.config.intake_batch_max.max(1).min(room) {
            let Some(request) = self.intake.try_take() else {
                break;
            };
            taken += 1;
            self.handle(now, request);
        }
        if taken > 0 {
            self.intake.made_room();
        }
        let closing = self.status.is_closing();
        // Every outcome that arrived is reported before the commands are drained, so
        // the dispatcher journals them as one record (`AttemptsFinished`).
        let finished = std::mem::take(&mut *self.finished.borrow_mut());
        for (generation, outcome) in finished {
            if !self.session.is_current(generation) {
                // Asked for by a dispatcher since rebuilt from the journal, which holds
                // this attempt as in flight and sends it again (at least once).
                continue;
            }
            self.log_outcome(&outcome);
            self.session.attempt_finished(now, generation, outcome);
        }
        self.pump();
        self.advance_durable();
        // A closing shard starts no new sends; what is due stays journaled as pending.
        // A blocked one neither: the attempt could not be journaled.
        if !closing
            && self.blocked.is_none()
            && self
                .session
                .dispatcher()
                .next_deadline_ms()
                .is_some_and(|d| d <= now)
        {
            self.session
                .dispatcher_mut()
                .tick_with(now, &JournalBodies(&self.journal, &self.segment_bytes));
            self.pump();
        }
        self.maybe_checkpoint(now);
        self.block_after_withdrawal();
        // A segment compaction let go is unmapped once its requests end, not held here.
        self.segment_bytes.prune(self.journal.first_seq());
        self.probe_storage();
        self.block_after_withdrawal();
        if self.last_sweep.elapsed() >= Duration::from_millis(IDLE_WAKE_MS) {
            self.last_sweep = Instant::now();
            self.client.sweep_idle();
            self.take_sync_samples();
        }
    }

    fn handle(&mut self, now: u64, request: Request) {
        if self.storage_failure.is_some() {
            // Dropping the reply tells the caller the shard stopped.
            return;
        }
        if let Some(blocked) = &self.blocked {
            if changes_state(&request) {
                refuse(request, Failure::Storage(blocked.error.clone()));
                return;
            }
        }
        match request {
            Request::UpsertWebhook {
                tenant,
                id,
                spec,
                write,
                reply,
            } => {
                let dispatcher = self.session.dispatcher_mut();
                let changed = match write {
                    WebhookWrite::Put => dispatcher.upsert_webhook(now, tenant, id, *spec),
                    WebhookWrite::Update => dispatcher.update_webhook(now, tenant, id, *spec),
                    WebhookWrite::Settings => {
                        dispatcher.update_webhook_settings(now, tenant, id, *spec)
                    }
                };
                match changed {
                    Ok(append) => self.defer(append, Ack::Unit(reply)),
                    Err(error) => reply.send(Err(Failure::Registry(error))),
                }
            }
            Request::DeleteWebhook { tenant, id, reply } => {
                match self
                    .session
                    .dispatcher_mut()
                    .delete_webhook(now, &tenant, &id)
                {
                    Ok(append) => self.defer(append, Ack::Unit(reply)),
                    Err(error) => reply.send(Err(Failure::Registry(error))),
                }
            }
            Request::GetWebhook { tenant, id, reply } => {
                reply.send(
                    self.session
                        .dispatcher()
                        .webhook(&tenant, &id)
                        .map(webhook_info),
                );
            }
            Request::ListWebhooks {
                tenant,
                after,
                limit,
                reply,
            } => {
                let list = self
                    .session
                    .dispatcher()
                    .webhooks(&tenant)
                    .filter(|view| after.as_ref().is_none_or(|after| view.id > after))
                    .take(limit)
                    .map(webhook_info)
                    .collect();
                reply.send(list);
            }
            Request::Publish {
                tenant,
                event,
                reply,
            } => match self
                .session
                .dispatcher_mut()
                .accept_event(now, &tenant, event)
            {
                Ok(accepted) => {
                    let append = accepted.append;
                    self.defer(append, Ack::Published(reply, Published::of(accepted)));
                }
                Err(error) => reply.send(Err(Failure::Accept(error))),
            },
            Request::PublishBatch {
                tenant,
                events,
                reply,
            } => {
                let mut last = AppendId(0);
                let dispatcher = self.session.dispatcher_mut();
                let results = events
                    .into_iter()
                    .map(|event| match dispatcher.accept_event(now, &tenant, event) {
                        Ok(accepted) => {
                            let append = accepted.append;
                            last = last.max(append);
                            (append, Ok(Published::of(accepted)))
                        }
                        Err(error) => (AppendId(0), Err(Failure::Accept(error))),
                    })
                    .collect();
                self.defer(last, Ack::Batch(reply, results));
            }
            Request::Deliveries { query, reply } => {
                reply.send(self.session.dispatcher().deliveries(&query));
            }
            Request::Delivery { tenant, id, reply } => {
                reply.send(self.session.dispatcher().delivery(&tenant, id));
            }
            Request::RetryDelivery { tenant, id, reply } => {
                match self
                    .session
                    .dispatcher_mut()
                    .retry_delivery(now, &tenant, id)
                {
                    Ok(append) => self.defer(append, Ack::Unit(reply)),
                    Err(error) => reply.send(Err(Failure::Op(error))),
                }
            }
            Request::ResendFailed {
                tenant,
                webhook,
                since_ms,
                after,
                most,
                reply,
            } => match self.session.dispatcher_mut().resend_failed_step(
                now,
                &tenant,
                &webhook,
                since_ms,
                after,
                most,
                herald_core::QUERY_SCAN_MAX,
            ) {
                Ok(resent) => {
                    // Its records are whatever it made; wait for the last of them.
                    let append = self.session.dispatcher().last_append();
                    self.defer(append, Ack::Resent(reply, resent));
                }
                Err(error) => reply.send(Err(Failure::Op(error))),
            },
            Request::PurgeTenant { tenant, reply } => {
                match self.session.dispatcher_mut().purge_tenant(now, &tenant) {
                    Ok(purge) => self.defer(purge.append, Ack::Purge(reply, purge)),
                    Err(error) => reply.send(Err(Failure::Op(error))),
                }
            }
            Request::SendTestEvent {
                tenant,
                webhook,
                event_type,
                reply,
            } => match self
                .session
                .dispatcher_mut()
                .send_test_event(now, &tenant, &webhook, event_type)
            {
                Ok(accepted) => self.defer(accepted.append, Ack::Event(reply, accepted.event_id)),
                Err(error) => reply.send(Err(Failure::Op(error))),
            },
            Request::SendTestEventWith {
                tenant,
                webhook,
                event,
                reply,
            } => match self
                .session
                .dispatcher_mut()
                .send_test_event_with(now, &tenant, &webhook, event)
            {
                Ok(accepted) => {
                    let sent = TestSent {
                        event_id: accepted.event_id,
                        // A test send targets exactly one webhook, and an accepted event
                        // has one delivery per target.
                        delivery: accepted
                            .first_delivery
                            .expect("an accepted test send has its one delivery"),
                    };
                    self.defer(accepted.append, Ack::Test(reply, sent));
                }
                Err(error) => reply.send(Err(Failure::Op(error))),
            },
            Request::CheckUrl { url, reply } => {
                // The lookup may take a while: answer from a task, not the shard loop.
                let client = self.client.clone();
                glommio::spawn_local(async move {
                    reply.send(client.check_url(&url, crate::CHECK_URL_TIMEOUT_MS).await);
                })
                .detach();
            }
            Request::Stats { reply } => {
                self.take_sync_samples();
                let mut counters = self.counters_replaced;
                counters.merge(&self.session.dispatcher().counters());
                reply.send(ShardStats {
                    dispatcher: self.session.dispatcher().stats(),
                    counters,
                    journal_last_seq: self.journal.last_seq(),
                    journal_durable_seq: self.journal.durable_seq(),
                    journal_bytes_appended: self.journal_bytes(),
                    journal_commits_urgent: self.journal_commits.0,
                    journal_commits_lazy: self.journal_commits.1,
                    journal_sync_us: self.journal_sync_us,
                    sends_in_flight: *self.sends_in_flight.borrow(),
                    connections_open: self.client.connections_open(),
                    client: self.client.stats(),
                    checkpoints_written: self.checkpoints.written,
                    checkpoint_underway: self.checkpoint.is_some(),
                    endings_underway: self.session.dispatcher().endings_underway() as u64,
                    checkpoint_copies: self.session.dispatcher().checkpoint_copies() as u64,
                    checkpoint_seq_last: self.checkpoints.seq_last,
                    checkpoint_bytes_last: self.checkpoints.bytes_last,
                    checkpoint_us_last: self.checkpoints.us_last,
                    checkpoint_cpu_us_total: self.checkpoints.cpu_us_total,
                    checkpoint_bytes_total: self.checkpoints.bytes_total,
                    replayed_frames: self.checkpoints.replayed_frames,
                    replayed_bytes: self.checkpoints.replayed_bytes,
                });
            }
        }
    }

    /// Folds the journal's recent sync durations into the shard's histogram.
    fn take_sync_samples(&mut self) {
        for sample_us in self.journal.take_sync_samples_us() {
            self.journal_sync_us.observe(sample_us);
        }
    }

    /// Answers `ack` once `append` is durable (at once for `AppendId(0)`).
    fn defer(&mut self, append: AppendId, ack: Ack) {
        if let Some(ack) = self.session.hold(append, ack) {
            ack.succeed();
        }
    }

    /// Drains the dispatcher's commands in order: appends to the journal, sends as
    /// spawned tasks. Does nothing while the journal cannot take records: the commands
    /// wait in the dispatcher.
    fn pump(&mut self) {
        if self.blocked.is_some() || self.storage_failure.is_some() {
            return;
        }
        let mut commands = std::mem::take(&mut self.commands);
        self.session.drain_commands(&mut commands);
        let mut failure = None;
        for command in commands.drain(..) {
            if failure.is_some() {
                // Made by the dispatcher about to be replaced; the rebuilt one makes
                // whatever still follows from the journal.
                continue;
            }
            match command {
                Command::Append { id, record } => {
                    let mut appended = self.append(id, &record);
                    if matches!(appended, Err(AppendFailure::Passing { .. }))
                        && self.checkpoint.is_some()
                        && self.journal.segment_count() >= self.journal.config().segments_max
                    {
                        // At the segment limit only a complete checkpoint frees segments,
                        // and the one underway has already taken some of the room the
                        // limit leaves checkpoints: finish it (its parts may pass the
                        // limit), and the record's roll waits for it to be durable and
                        // compacts. Abandoning it would leave its segments for good.
                        self.advance_checkpoint(None);
                        appended = self.append(id, &record);
                    }
                    failure = appended.err();
                }
                Command::Send(request) => self.spawn_send(request),
            }
        }
        self.commands = commands;
        if failure.is_none() {
            // One write for the turn's records; only written records can become
            // durable. A write that found no space withdrew the records it did not
            // write (the shard blocks as for a refused record); any other failed write
            // fails the journal for good (see `commit`). Synced within the group delay
            // while a reply or a delivery waits for a record; otherwise (attempt
            // outcomes alone: nobody waits for them, and one lost before its sync only
            // sends its delivery again) within the journal's lazy delay, sharing the
            // sync's fixed cost.
            let urgent = self.session.held() > 0 || self.session.dispatcher().awaits_durability();
            if self.journal.staged_records() > 0 {
                let (urgent_commits, lazy_commits) = &mut self.journal_commits;
                *if urgent { urgent_commits } else { lazy_commits } += 1;
            }
            let committed = if urgent {
                self.journal.commit()
            } else {
                self.journal.commit_lazy()
            };
            if let Err(error) = committed {
                failure = Some(if error.is_storage_full() {
                    AppendFailure::Passing {
                        error: StorageError::of(error),
                        payload_bytes: 0,
                    }
                } else {
                    AppendFailure::Permanent(StorageError::of(error))
                });
            }
        }
        match failure {
            None => {}
            Some(AppendFailure::Permanent(error)) => self.storage_failure = Some(error),
            Some(AppendFailure::Passing {
                error,
                payload_bytes,
            }) => self.block(error, payload_bytes),
        }
    }

    fn append(&mut self, id: AppendId, record: &Record) -> Result<(), AppendFailure> {
        let buffer = std::mem::take(&mut self.record_buffer);
        let (kind, version, payload) = record.encode_into(buffer).map_err(|error| {
            // Refused like a full disk: the rebuilt dispatcher no longer holds the record.
            AppendFailure::Passing {
                error: StorageError::caused(
                    &format!("encoding record {:#06x}", record.kind()),
                    error,
                ),
                payload_bytes: 0,
            }
        })?;
        let payload_bytes = payload.len() as u64;
        let appended = self.journal.append_placed(kind, version, &payload);
        // Where the journal holds an accepted event's envelope: its deliveries and the
        // stream's window keep that instead of a copy (read back when signing, see
        // herald_core::body, and when streaming).
        // The dispatcher was told this report follows every append of an event
        // (`Dispatcher::report_envelopes`, in `recover`): its deliveries hold no copy of
        // the body until then.
        let mut envelope_at = None;
        if let (Ok((_, at)), Record::EventAccepted(event)) = (&appended, record) {
            if !event.body.is_empty() {
                let body = super::stream::encoded_envelope_position(&payload)
                    .and_then(|span| payload_at(*at).body(span));
                let dispatcher = self.session.dispatcher_mut();
                match body {
                    Some(body) => {
                        if !event.deliveries.is_empty() {
                            dispatcher.body_stored(id, body);
                        }
                        envelope_at = Some((journal_position(body), body.len as usize));
                    }
                    None => dispatcher.body_kept(id, &event.body),
                }
            }
        }
        // A buffer grown by one huge record is not kept.
        if payload.capacity() <= RECORD_BUFFER_KEPT_BYTES_MAX {
            self.record_buffer = payload;
        }
        match appended {
            Ok((seq, _)) => {
                self.journal_bytes_appended += herald_journal::frame_bytes(payload_bytes);
                self.stream.appended(seq, record, envelope_at);
                self.session.appended(id, seq);
                self.records_since_checkpoint += 1;
                Ok(())
            }
            Err(error @ herald_journal::JournalError::SyncFailed { .. }) => {
                Err(AppendFailure::Permanent(StorageError::of(error)))
            }
            Err(error) => Err(AppendFailure::Passing {
                error: StorageError::of(error),
                payload_bytes,
            }),
        }
    }

    /// The journal refused a record for a reason that can pass: answer what is durable,
    /// refuse the rest, rebuild the dispatcher from the journal and wait for the journal
    /// to write again (see [`Blocked`]).
    fn block(&mut self, error: StorageError, payload_bytes: u64) {
        tracing::error!(
            shard = self.index,
            %error,
            "the journal refused a record; changes are refused until it can write again"
        );
        // Everything appended before the refused record becomes durable: the replies
        // waiting for it are answered as usual. This waits for one sync on the shard
        // thread; it happens once per refusal.
        if let Err(error) = sync_written(&mut self.journal) {
            self.storage_failure = Some(StorageError::of(error));
            return;
        }
        self.advance_durable();
        self.stream.discard_pending();
        // A checkpoint underway describes the dispatcher about to be replaced.
        self.abandon_checkpoint();
        // The rest was never journaled: not carried out.
        let refusal = error.then(REFUSED_UNTIL_WRITABLE);
        let durable = self.session.durable_through();
        for ack in self.session.abandon() {
            ack.fail(Failure::Storage(refusal.clone()), durable);
        }
        let dispatcher = match recover(
            &self.journal,
            &self.config.dispatcher,
            now_ms(),
            (&mut 0, &mut 0),
        ) {
            Ok(dispatcher) => dispatcher,
            Err(error) => {
                self.storage_failure =
                    Some(StorageError::caused("rebuilding from the journal", error));
                return;
            }
        };
        // The session asserts that every reply was answered, from the journal's state,
        // and drops outcomes of sends the replaced dispatcher asked for.
        let replaced = self.session.replace(dispatcher);
        self.counters_replaced.merge(&replaced.counters());
        // Nothing made of records a write withdrew is held any more: their sequence
        // numbers may go to the rebuilt dispatcher's records.
        self.journal.resume_after_withdrawal();

        // Blocked again while blocked (a probe's checkpoint at the segment limit withdrawn
        // on storage that copies on write): the probes keep backing off rather than
        // rebuild the dispatcher every 50 ms while the disk stays full.
        let delay = self
            .blocked
            .as_ref()
            .map_or(STORAGE_PROBE_DELAY_MIN, |blocked| {
                (blocked.delay * 2).min(STORAGE_PROBE_DELAY_MAX)
            });
        self.blocked = Some(Blocked {
            error: refusal,
            payload_bytes,
            next_probe: Instant::now() + delay,
            delay,
            state_fills_the_limit: false,
        });
    }

    /// Bytes of the records this shard appended and the journal holds: the frames a
    /// write that found no space withdrew are not counted (their sequence numbers go to
    /// the next records, which are).
    fn journal_bytes(&self) -> u64 {
        self.journal_bytes_appended - self.journal.withdrawn_bytes()
    }

    /// A write that found no space withdrew records outside [`Shard::pump`] (which
    /// blocks at once): a checkpoint's part, or its commit. The records before them are
    /// written; the dispatcher made the withdrawn ones, so it is rebuilt as for a refused
    /// record.
    fn block_after_withdrawal(&mut self) {
        if self.storage_failure.is_some() {
            return;
        }
        if let Some(refusal) = self.journal.withdrawal() {
            self.block(StorageError::of(refusal), 0);
        }
    }

    /// While blocked: when the probe is due, asks the journal to make room for a record
    /// like the refused one; on success the shard takes changes and fires timers again.
    fn probe_storage(&mut self) {
        let Some(blocked) = &mut self.blocked else {
            return;
        };
        if Instant::now() < blocked.next_probe {
            return;
        }
        if self.journal.segment_count() >= self.journal.config().segments_max {
            self.checkpoint_at_segment_limit();
        }
        let Some(blocked) = &mut self.blocked else {
            return;
        };
        if self.storage_failure.is_some() {
            return;
        }
        match self.journal.ensure_room(blocked.payload_bytes) {
            Ok(()) => {
                tracing::info!(
                    shard = self.index,
                    "the journal can write again; taking changes"
                );
                self.blocked = None;
                // What the rebuilt dispatcher queued (replay's own records) goes first.
                self.pump();
            }
            Err(error @ herald_journal::JournalError::SyncFailed { .. }) => {
                self.storage_failure = Some(StorageError::of(error));
            }
            Err(error) => {
                blocked.delay = (blocked.delay * 2).min(STORAGE_PROBE_DELAY_MAX);
                blocked.next_probe = Instant::now() + blocked.delay;
                tracing::debug!(shard = self.index, %error, delay_ms = blocked.delay.as_millis() as u64, "the journal still cannot write");
                let state_fills_the_limit = self.records_since_checkpoint == 0
                    && matches!(
                        error,
                        herald_journal::JournalError::SegmentsExhausted { .. }
                    );
                if state_fills_the_limit && !blocked.state_fills_the_limit {
                    tracing::error!(
                        shard = self.index,
                        segments_max = self.journal.config().segments_max,
                        segment_bytes = self.journal.config().segment_bytes,
                        "the shard's state fills the journal's segment limit; raise it and restart"
                    );
                }
                blocked.state_fills_the_limit = state_fills_the_limit;
                blocked.error = StorageError::of(error).then(if state_fills_the_limit {
                    STATE_FILLS_THE_LIMIT
                } else {
                    REFUSED_UNTIL_WRITABLE
                });
            }
        }
    }

    /// While blocked at the journal's segment limit: only a checkpoint lets old segments
    /// go, and a blocked shard writes none by schedule. So the probe writes one of the
    /// rebuilt dispatcher's state (which is what the journal holds), waits for it to be
    /// durable and compacts; when the state fits, the next record has room again. The
    /// journal lets a checkpoint go past the limit (bounded) to make this possible.
    fn checkpoint_at_segment_limit(&mut self) {
        if self.records_since_checkpoint == 0 {
            // The latest checkpoint already holds this state: another frees nothing.
            return;
        }
        // A checkpoint must follow every record it summarises. The rebuilt dispatcher
        // may have made records of its own (deliveries of webhooks gone while it was
        // down are ended) that could not be journaled yet; its state is then ahead of
        // the journal and no checkpoint can be written until they are.
        self.session.drain_commands(&mut self.commands);
        if self
            .commands
            .iter()
            .any(|command| matches!(command, Command::Append { .. }))
        {
            tracing::debug!(
                shard = self.index,
                "records wait to be journaled; no checkpoint at the segment limit"
            );
            return;
        }
        // On a segment of its own, so that compaction lets go of every segment before it.
        if let Err(error) = self.journal.roll_for_checkpoint() {
            tracing::warn!(shard = self.index, %error, "no segment for a checkpoint at the segment limit");
            if let herald_journal::JournalError::SyncFailed { .. } = error {
                self.storage_failure = Some(StorageError::of(error));
            }
            return;
        }
        let written = self.checkpoints.written;
        self.begin_checkpoint(now_ms(), true);
        self.advance_checkpoint(None);
        if self.checkpoints.written == written || self.storage_failure.is_some() {
            // Said why already.
            return;
        }
        if let Err(error) = sync_written(&mut self.journal) {
            self.storage_failure = Some(StorageError::of(error));
            return;
        }
        self.advance_durable();
        match self.journal.compact() {
            Ok(done) => tracing::info!(
                shard = self.index,
                segments_deleted = done.segments_deleted,
                segments = self.journal.segment_count(),
                "checkpoint written at the journal's segment limit"
            ),
            Err(error) => {
                tracing::warn!(shard = self.index, %error, "compacting the journal failed")
            }
        }
    }

    /// One log line per attempt outcome, naming tenant, webhook, event and delivery:
    /// failures at `info` (operators look for them), successes at `debug` (one per
    /// delivery would flood the log at full rate). The ids are borrowed from the
    /// dispatcher, so nothing is copied unless the line is written.
    fn log_outcome(&self, outcome: &Outcome) {
        let success = matches!(outcome.result, AttemptResult::Response { status, .. } if (200..300).contains(&status));
        let level_on = if success {
            tracing::enabled!(tracing::Level::DEBUG)
        } else {
            tracing::enabled!(tracing::Level::INFO)
        };
        if !level_on {
            return;
        }
        let Some((tenant, webhook, event)) =
            self.session.dispatcher().delivery_ids(outcome.delivery)
        else {
            return;
        };
        let delivery = outcome.delivery;
        let attempt = outcome.attempt;
        let latency_ms = outcome.latency_ms;
        match &outcome.result {
            AttemptResult::Response { status, .. } if success => tracing::debug!(
                shard = self.index, %tenant, %webhook, %event, %delivery, attempt, status, latency_ms,
                "delivered"
            ),
            AttemptResult::Response { status, .. } => tracing::info!(
                shard = self.index, %tenant, %webhook, %event, %delivery, attempt, status, latency_ms,
                "attempt failed: receiver answered {status}"
            ),
            AttemptResult::Transport(error) => tracing::info!(
                shard = self.index, %tenant, %webhook, %event, %delivery, attempt, error = error.name(), latency_ms,
                "attempt failed: no response"
            ),
        }
    }

    fn spawn_send(&mut self, request: SendRequest) {
        let outbound = OutboundRequest {
            url: request.url,
            headers: request.headers,
            body: request.body,
            connect_timeout_ms: request.connect_timeout_ms,
            request_timeout_ms: request.request_timeout_ms,
        };
        let delivery = request.delivery;
        let attempt = request.attempt;
        let generation = self.session.generation();
        let client = self.client.clone();
        let finished = self.finished.clone();
        let local = self.local.clone();
        let in_flight = self.sends_in_flight.clone();
        *in_flight.borrow_mut() += 1;
        // Boxed before it is spawned: the future is ~900 bytes, and handing it to the
        // executor by value copied it several times on the way into its task.
        glommio::spawn_local(Box::pin(async move {
            let started = Instant::now();
            let (result, response_body, response_headers) =
                exchange(&client, &outbound, started).await;
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            finished.borrow_mut().push((
                generation,
                Outcome {
                    delivery,
                    attempt,
                    result,
                    latency_ms,
                    response_body,
                    response_headers,
                },
            ));
            *in_flight.borrow_mut() -= 1;
            local.notify();
        }))
        .detach();
    }

    /// Tells the session how far the journal is durable (it tells the dispatcher) and
    /// answers the replies whose records are now durable.
    fn advance_durable(&mut self) {
        let durable_seq = self.journal.durable_seq();
        let journal = &self.journal;
        self.stream
            .durable(durable_seq, journal.first_seq(), |at, len| {
                journal.mapped(at, len)
            });
        for ack in self.session.durable(durable_seq) {
            ack.succeed_deferred(&mut self.wakeups);
        }
        self.wakeups.wake();
    }

    fn maybe_checkpoint(&mut self, now: u64) {
        if self.checkpoint.is_some() {
            self.advance_checkpoint(Some(CHECKPOINT_TURN_BUDGET));
            return;
        }
        // By count only once the journal grew by as much as the last checkpoint took:
        // a large state (a backlog of a million deliveries checkpoints to hundreds of
        // MiB) would otherwise be written again every `checkpoint_records` records, and
        // checkpoints would outweigh the records many times. So checkpoints stay at most
        // about half of what the journal writes, and replay at most about twice the state.
        let grown = self
            .journal_bytes()
            .saturating_sub(self.checkpoints.appended_at_last)
            >= self.checkpoints.bytes_last;
        // Not while a disabled or deleted webhook's backlog is being ended: its records
        // would start a checkpoint of deliveries about to end (and keep a copy of each one
        // the ending reaches before the checkpoint does); the count waits for the end,
        // unless the journal holds half the segments it may: then a checkpoint is what
        // keeps it from its limit.
        let ending = self.session.dispatcher().endings_underway() > 0
            && self.journal.segment_count() * 2 < self.journal.config().segments_max;
        let due =
            (self.records_since_checkpoint >= self.config.checkpoint_records && grown && !ending)
                || (self.records_since_checkpoint > 0
                    && self.last_checkpoint.elapsed()
                        >= Duration::from_millis(self.config.checkpoint_interval_ms));
        if due {
            self.write_checkpoint(now, false);
        }
    }

    /// Writes a checkpoint of the dispatcher's state as it is now: its parts one journal
    /// frame each, so that a state of any size checkpoints and replay after a restart is
    /// bounded by the state, not the history. `now_whole`: all of it in this turn (at
    /// the segment limit, and on the way out); otherwise its webhooks and keys now and
    /// its deliveries a few parts per turn ([`CHECKPOINT_TURN_BUDGET`],
    /// [`CHECKPOINT_TIME_SHARE`]), while events
    /// and outcomes are journaled between its parts, so that no turn waits for the whole
    /// state. The journal's checkpoint covers the records journaled before it began, and
    /// recovery replays those after (`Journal::open_checkpoint`); the dispatcher keeps
    /// the deliveries it has yet to write as they were when it began
    /// (`Dispatcher::begin_checkpoint`). A part that cannot be written abandons the
    /// checkpoint (the journal ignores it; the previous one stays where replay starts,
    /// and its segments are kept).
    fn write_checkpoint(&mut self, now: u64, now_whole: bool) {
        if self.storage_failure.is_some() || self.blocked.is_some() {
            return;
        }
        // The checkpoint must follow every record it summarises.
        self.pump();
        if self.blocked.is_some() || self.storage_failure.is_some() {
            return;
        }
        self.begin_checkpoint(now, now_whole);
        self.advance_checkpoint((!now_whole).then_some(CHECKPOINT_TURN_BUDGET));
    }

    /// Begins a checkpoint whose records are all in the journal already (the callers see
    /// to it); [`Shard::advance_checkpoint`] writes it.
    fn begin_checkpoint(&mut self, now: u64, now_whole: bool) {
        debug_assert!(self.checkpoint.is_none(), "one checkpoint at a time");
        // Whatever happens next, the next attempt waits for another full period: a
        // checkpoint that failed must not be retried on every turn.
        self.last_checkpoint = Instant::now();
        let records_before = std::mem::take(&mut self.records_since_checkpoint);
        let part_bytes_max =
            (self.journal.checkpoint_part_bytes_max() / CHECKPOINT_PART_TARGET_DIVISOR) as usize;
        let part_bytes = if now_whole {
            part_bytes_max
        } else {
            // Small journal segments take smaller parts still.
            CHECKPOINT_STEP_PART_BYTES.min(part_bytes_max)
        };
        let journal = self.journal.open_checkpoint();
        let parts = self
            .session
            .dispatcher_mut()
            .begin_checkpoint(now, part_bytes);
        self.checkpoint = Some(CheckpointUnderway {
            journal,
            parts,
            records_before,
            bytes: 0,
            busy: Duration::ZERO,
            began: Instant::now(),
        });
    }

    /// Writes parts of the checkpoint underway: its webhooks and keys whatever the
    /// budget (nothing may change them before they are written), then parts while it
    /// stays within its share of the shard's time ([`CHECKPOINT_TIME_SHARE`]) and this
    /// turn's `budget` (`None`: to the end, in this turn), and ends it once its last
    /// part is written.
    fn advance_checkpoint(&mut self, budget: Option<Duration>) {
        let Some(mut underway) = self.checkpoint.take() else {
            return;
        };
        let started = Instant::now();
        let cpu_started = thread_cpu_us();
        // Its share of the time since it began, less what it took, up to the budget.
        let budget = budget.map(|budget| {
            started
                .saturating_duration_since(underway.began)
                .mul_f64(CHECKPOINT_TIME_SHARE)
                .saturating_sub(underway.busy)
                .min(budget)
        });
        let mut buffer = std::mem::take(&mut self.record_buffer);
        let mut written = 0;
        let result = loop {
            let spent = budget.is_some_and(|budget| started.elapsed() >= budget);
            let one_at_least = written > 0 || budget.is_some_and(|b| b.is_zero());
            if underway.parts.is_done()
                || (spent && one_at_least && underway.parts.registry_written())
            {
                break Ok(());
            }
            let encoded = self.session.dispatcher_mut().checkpoint_part_into(
                &mut underway.parts,
                &JournalBodies(&self.journal, &self.segment_bytes),
                &mut buffer,
            );
            match encoded {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(error) => break Err(format!("encoding a checkpoint part: {error}")),
            }
            let payload = std::mem::take(&mut buffer);
            let appended = self
                .journal
                .checkpoint_part(&mut underway.journal, &payload)
                .map_err(|error| error.to_string());
            let bytes = herald_journal::frame_bytes(
                herald_journal::CHECKPOINT_PART_HEADER_BYTES + payload.len() as u64,
            );
            // Where its bodies now lie: the events keep those positions once the
            // checkpoint is complete (the segments before it may then go).
            let stored = appended.and_then(|at| {
                underway
                    .parts
                    .stored(&payload, payload_at(at))
                    .map_err(|error| format!("locating a checkpoint part's bodies: {error}"))
            });
            buffer = payload;
            if let Err(error) = stored {
                break Err(error);
            }
            underway.bytes += bytes;
            self.checkpoints.bytes_total += bytes;
            self.journal_bytes_appended += bytes;
            written += 1;
        };
        // A buffer grown by the checkpoint's parts is not kept.
        if buffer.capacity() <= RECORD_BUFFER_KEPT_BYTES_MAX {
            buffer.clear();
            self.record_buffer = buffer;
        }
        underway.busy += started.elapsed();
        self.checkpoints.cpu_us_total = self
            .checkpoints
            .cpu_us_total
            .saturating_add(thread_cpu_us().saturating_sub(cpu_started));
        let finished = match result {
            Ok(()) if !underway.parts.is_done() => {
                self.checkpoint = Some(underway);
                return;
            }
            Ok(()) => self
                .journal
                .finish_checkpoint(underway.journal)
                .map_err(|error| error.to_string()),
            Err(error) => Err(error),
        };
        match finished {
            Ok(_) => {
                // Before the checkpoint can be durable, and the segments before it
                // deleted.
                self.session
                    .dispatcher_mut()
                    .finish_checkpoint(underway.parts);
                let end = herald_journal::frame_bytes(herald_journal::CHECKPOINT_PART_HEADER_BYTES);
                self.journal_bytes_appended += end;
                self.checkpoints.bytes_total += end;
                let seq_last = self.journal.checkpoint_last_seq();
                if let Err(error) = self.journal.commit() {
                    // A write that found no space withdrew records: the turn blocks
                    // after it (`block_after_withdrawal`).
                    if !error.is_storage_full() {
                        self.storage_failure = Some(StorageError::of(error));
                    }
                }
                if self.journal.checkpoint_last_seq() == seq_last {
                    self.checkpoints.appended_at_last = self.journal_bytes();
                    self.checkpoints.written += 1;
                    self.checkpoints.seq_last = seq_last.unwrap_or(0);
                    self.checkpoints.bytes_last = underway.bytes + end;
                    self.checkpoints.us_last =
                        u64::try_from(underway.busy.as_micros()).unwrap_or(u64::MAX);
                } else {
                    // Its end marker was withdrawn: the journal's latest checkpoint is
                    // the one before it, and the records it covered are owed another.
                    self.records_since_checkpoint += underway.records_before.max(1);
                }
                // Its parts and its copies of the deliveries it had yet to write are
                // freed now (after the commit, which is not delayed by it).
                super::memory::release_freed_memory();
            }
            Err(error) => {
                tracing::warn!(
                    shard = self.index,
                    %error,
                    "checkpoint not written; old journal segments are kept"
                );
                // The journal's checkpoint was abandoned with its handle.
                self.session
                    .dispatcher_mut()
                    .abandon_checkpoint(underway.parts);
                self.records_since_checkpoint += underway.records_before;
            }
        }
    }

    /// How long until the checkpoint underway may write its next part (zero: now), if
    /// one is underway; see [`CHECKPOINT_TIME_SHARE`].
    fn checkpoint_wait(&self) -> Option<Duration> {
        let underway = self.checkpoint.as_ref()?;
        let due = underway.began + underway.busy.div_f64(CHECKPOINT_TIME_SHARE);
        Some(due.saturating_duration_since(Instant::now()))
    }

    /// Drops the checkpoint underway, if any (the journal ignores what it wrote of it).
    fn abandon_checkpoint(&mut self) {
        if let Some(underway) = self.checkpoint.take() {
            drop(underway.journal);
            self.session
                .dispatcher_mut()
                .abandon_checkpoint(underway.parts);
            self.records_since_checkpoint += underway.records_before;
        }
    }

    /// The journal failed: every waiting reply gets the storage error.
    fn fail_everything(&mut self, error: &StorageError) {
        let durable = self.session.durable_through();
        for ack in self.session.abandon() {
            ack.fail(Failure::Storage(error.clone()), durable);
        }
        let mut batch = Vec::new();
        while self.intake.drain_into(1024, &mut batch) > 0 {
            for request in batch.drain(..) {
                refuse(request, Failure::Storage(error.clone()));
            }
        }
    }

    /// Stop, once what was queued was taken and sends in flight finished (or the grace
    /// period ran out): make everything durable, answer every waiter.
    fn stop(&mut self) -> ShardExit {
        if self.storage_failure.is_none() {
            // A restart then replays the state, not the records since the last
            // checkpoint.
            // One begun between turns is dropped: a whole one now covers more.
            self.abandon_checkpoint();
            if self.records_since_checkpoint > 0 {
                self.write_checkpoint(now_ms(), true);
            }
            self.pump();
            if let Err(error) = sync_written(&mut self.journal) {
                self.storage_failure = Some(StorageError::of(error));
            } else {
                self.advance_durable();
                // The checkpoint just written is durable: the segments before it go
                // now rather than at the next roll, so the restart opens only what it
                // replays. A failure here costs disk space, not data.
                if let Err(error) = self.journal.compact() {
                    tracing::warn!(shard = self.index, %error, "old journal segments not deleted");
                }
            }
        }
        if let Some(error) = self.storage_failure.clone() {
            return self.stop_failed(error);
        }
        // Anything still waiting could not be made durable before stopping.
        let durable = self.session.durable_through();
        for ack in self.session.abandon() {
            ack.fail(Failure::ShuttingDown, durable);
        }
        let mut batch = Vec::new();
        while self.intake.drain_into(1024, &mut batch) > 0 {
            for request in batch.drain(..) {
                refuse(request, Failure::ShuttingDown);
            }
        }
        ShardExit::Clean
    }
}

/// Whether a request changes state (so needs the journal), as opposed to a query.
fn changes_state(request: &Request) -> bool {
    match request {
        Request::UpsertWebhook { .. }
        | Request::DeleteWebhook { .. }
        | Request::Publish { .. }
        | Request::PublishBatch { .. }
        | Request::RetryDelivery { .. }
        | Request::ResendFailed { .. }
        | Request::PurgeTenant { .. }
        | Request::SendTestEvent { .. }
        | Request::SendTestEventWith { .. } => true,
        Request::GetWebhook { .. }
        | Request::ListWebhooks { .. }
        | Request::Deliveries { .. }
        | Request::Delivery { .. }
        | Request::CheckUrl { .. }
        | Request::Stats { .. } => false,
    }
}

/// Answers a request that will not be carried out.
fn refuse(request: Request, failure: Failure) {
    match request {
        Request::UpsertWebhook { reply, .. }
        | Request::DeleteWebhook { reply, .. }
        | Request::RetryDelivery { reply, .. } => reply.send(Err(failure)),
        Request::Publish { reply, .. } => reply.send(Err(failure)),
        Request::SendTestEvent { reply, .. } => reply.send(Err(failure)),
        Request::ResendFailed { reply, .. } => reply.send(Err(failure)),
        Request::PurgeTenant { reply, .. } => reply.send(Err(failure)),
        Request::SendTestEventWith { reply, .. } => reply.send(Err(failure)),
        Request::PublishBatch { events, reply, .. } => {
            reply.send(events.iter().map(|_| Err(failure.clone())).collect())
        }
        // Queries have no error form: dropping the reply reports the stop.
        Request::GetWebhook { .. }
        | Request::ListWebhooks { .. }
        | Request::Deliveries { .. }
        | Request::Delivery { .. }
        | Request::CheckUrl { .. }
        | Request::Stats { .. } => {}
    }
}

fn webhook_info(view: herald_core::WebhookView<'_>) -> WebhookInfo {
    WebhookInfo {
        tenant: view.tenant.clone(),
        id: view.id.clone(),
        spec: view.spec.clone(),
        health: view.health.clone(),
        pending: view.pending,
        created_at_ms: view.created_at_ms,
        updated_at_ms: view.updated_at_ms,
    }
}

/// Where a journal payload lies, as the core names it.
fn payload_at(at: herald_journal::Position) -> PayloadAt {
    PayloadAt {
        segment: at.segment,
        offset: at.offset,
    }
}

/// The journal's position of a body the core stored.
fn journal_position(at: BodyPos) -> herald_journal::Position {
    herald_journal::Position {
        segment: at.segment,
        offset: u64::from(at.offset),
    }
}

/// Segments' mappings as `Bytes`, for handing event bodies to requests: a body is a
/// slice of its segment's (a reference count more), not a `Bytes` of its own (an
/// allocation per send). At most [`SEGMENT_BYTES_HELD`] segments, the latest used; a
/// segment the journal let go is dropped at the shard's next turn ([`SegmentBytes::
/// prune`]) or next send, so that it is unmapped (and its file's space freed) once the
/// requests that still hold its bodies end.
#[derive(Default)]
struct SegmentBytes {
    held: RefCell<Vec<(u64, Bytes)>>,
}

/// Segments [`SegmentBytes`] holds at once: sends take their bodies from the newest
/// segments, and retries of older events from one or two more.
const SEGMENT_BYTES_HELD: usize = 4;

impl SegmentBytes {
    /// Drops the segments older than `first_seq`, the journal's oldest frame.
    fn prune(&self, first_seq: u64) {
        let mut held = self.held.borrow_mut();
        if held.iter().any(|(base, _)| *base < first_seq) {
            held.retain(|(base, _)| *base >= first_seq);
        }
    }

    /// The `len` bytes at `at`, when they were written to their segment's file.
    fn slice(&self, journal: &Journal, at: herald_journal::Position, len: usize) -> Option<Bytes> {
        if !journal.is_written(at, len) {
            return None;
        }
        self.prune(journal.first_seq());
        let mut held = self.held.borrow_mut();
        let index = match held.iter().position(|(base, _)| *base == at.segment) {
            Some(index) => index,
            None => {
                let whole = Bytes::from_owner(journal.mapped_segment(at, len)?);
                if held.len() == SEGMENT_BYTES_HELD {
                    // The least recently added; its requests keep their own slices.
                    held.remove(0);
                }
                held.push((at.segment, whole));
                held.len() - 1
            }
        };
        // In bounds: `is_written` checked the range against the segment's mapping.
        let start = at.offset as usize;
        Some(held[index].1.slice(start..start + len))
    }
}

/// Event bodies read back through the journal's mapping (see `herald_core::body`).
struct JournalBodies<'a>(&'a Journal, &'a SegmentBytes);

impl BodyStore for JournalBodies<'_> {
    fn body(&self, at: BodyPos) -> Option<&[u8]> {
        self.0.bytes_at(journal_position(at), at.len as usize)
    }

    /// Held through the segment's mapping, not copied: a request in flight keeps the
    /// mapping (and, if the segment is compacted meanwhile, the deleted file) until it
    /// ends, which its timeout bounds. Bytes still staged (a checkpoint's part not yet
    /// written when the checkpoint moved its bodies) are copied.
    fn shared(&self, at: BodyPos) -> Option<Bytes> {
        match self.1.slice(self.0, journal_position(at), at.len as usize) {
            Some(slice) => Some(slice),
            None => self.body(at).map(Bytes::copy_from_slice),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::{classify, OutcomeClass};

    /// The dispatcher bounds a record of outcomes by an estimate that its tests check
    /// against the encoded size; the journal must take that record whatever segment size
    /// is configured, down to the smallest.
    #[test]
    fn a_record_of_outcomes_fits_the_smallest_segment() {
        let smallest = herald_journal::JournalConfig {
            segment_bytes: herald_journal::SEGMENT_BYTES_MIN,
            ..herald_journal::JournalConfig::new("unused")
        };
        let bound = herald_core::record::OUTCOMES_RECORD_BYTES_MAX as u64;
        assert!(bound <= smallest.payload_bytes_max());
    }

    /// A body the journal has written is handed to a request through the segment's
    /// mapping, not copied; one still staged is copied, since the mapping cannot hold it.
    #[test]
    fn stored_bodies_are_shared_through_the_mapping_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) =
            Journal::open(herald_journal::JournalConfig::new(dir.path())).unwrap();
        let payload = br#"{"type":"order.created","data":{"n":1}}"#;
        let (_, at) = journal.append_placed(1, 1, payload).unwrap();
        let pos = BodyPos {
            segment: at.segment,
            offset: u32::try_from(at.offset).unwrap(),
            len: payload.len() as u32,
        };
        let segments = SegmentBytes::default();
        let staged = JournalBodies(&journal, &segments).shared(pos).unwrap();
        assert_eq!(&staged[..], &payload[..]);
        assert!(
            segments.held.borrow().is_empty(),
            "staged bytes hold no segment"
        );
        journal.commit().unwrap();
        let store = JournalBodies(&journal, &segments);
        let written = store.shared(pos).unwrap();
        assert_eq!(&written[..], &payload[..]);
        assert_eq!(
            written.as_ptr(),
            store.body(pos).unwrap().as_ptr(),
            "held through the mapping"
        );
        assert_ne!(
            staged.as_ptr(),
            written.as_ptr(),
            "the staged bytes were copied"
        );
        // A second send of the body is a slice of the same segment's mapping.
        let again = store.shared(pos).unwrap();
        assert_eq!(again.as_ptr(), written.as_ptr());
        assert_eq!(segments.held.borrow().len(), 1);
        // A segment the journal still holds stays; one older than its first frame goes.
        segments.prune(journal.first_seq());
        assert_eq!(segments.held.borrow().len(), 1);
        segments.prune(at.segment + 1);
        assert!(segments.held.borrow().is_empty());
        // The request's hold outlives the journal's borrow and the journal itself.
        drop(journal);
        drop(segments);
        assert_eq!(&written[..], &payload[..]);
        assert_eq!(&again[..], &payload[..]);
    }

    /// Bodies from many segments: at most SEGMENT_BYTES_HELD segments are held, and each
    /// body still reads back.
    #[test]
    fn bodies_of_many_segments_hold_a_few_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = herald_journal::JournalConfig {
            segment_bytes: herald_journal::SEGMENT_BYTES_MIN,
            ..herald_journal::JournalConfig::new(dir.path())
        };
        let (mut journal, _) = Journal::open(config).unwrap();
        let mut placed = Vec::new();
        for i in 0..400u32 {
            let payload = vec![b'a' + (i % 26) as u8; 1000];
            let (_, at) = journal.append_placed(1, 1, &payload).unwrap();
            placed.push((at, payload));
        }
        journal.commit().unwrap();
        assert!(journal.segment_count() > SEGMENT_BYTES_HELD + 1);
        let segments = SegmentBytes::default();
        let store = JournalBodies(&journal, &segments);
        let mut sent = Vec::new();
        for (at, payload) in &placed {
            let pos = BodyPos {
                segment: at.segment,
                offset: u32::try_from(at.offset).unwrap(),
                len: payload.len() as u32,
            };
            sent.push(store.shared(pos).unwrap());
            assert!(segments.held.borrow().len() <= SEGMENT_BYTES_HELD);
        }
        for (bytes, (_, payload)) in sent.iter().zip(&placed) {
            assert_eq!(&bytes[..], &payload[..]);
        }
    }

    #[test]
    fn transport_errors_keep_their_blame() {
        let detail = || "detail".to_string();
        // (error, its class, whether it tells of the receiver's health)
        let cases = [
            (TransportError::Dns(detail()), OutcomeClass::Retry, true),
            (
                TransportError::Connection(detail()),
                OutcomeClass::Retry,
                true,
            ),
            (
                TransportError::Protocol(detail()),
                OutcomeClass::Retry,
                true,
            ),
            // The shard's own connection budget, not the receiver: retried, and not
            // counted against the endpoint.
            (
                TransportError::PoolFull(detail()),
                OutcomeClass::Retry,
                false,
            ),
            // The receiver is not at fault and retrying cannot help: final.
            (
                TransportError::EgressRefused(detail()),
                OutcomeClass::Final,
                false,
            ),
            (
                TransportError::InvalidRequest(detail()),
                OutcomeClass::Final,
                false,
            ),
        ];
        for (error, want, blames_receiver) in cases {
            let result = AttemptResult::Transport(map_transport(&error));
            assert_eq!(classify(&result), want, "{error:?}");
            assert_eq!(result.reached_receiver(), blames_receiver, "{error:?}");
        }
    }
}
