//! Engine configuration: [`Builder`], from [`crate::Herald::builder`].

use std::path::PathBuf;
use std::time::Duration;

use herald_core::{DispatcherConfig, RetrySchedule};
use herald_rt::shard::stream::StreamConfig;
use herald_rt::shard::{
    Engine, EngineConfig, Pinning, ShardConfig, INTAKE_CAPACITY_MAX, IO_MEMORY_BYTES_MAX,
    SHARDS_MAX,
};
use herald_rt::{Cidr, ClientConfig, EgressPolicy, TrustAnchors};

use crate::{Herald, StartError};

/// Default per-shard intake queue.
pub const INTAKE_CAPACITY_DEFAULT: usize = 4096;
/// Default glommio `io_memory` per shard: the journal is memory-mapped and sockets use
/// ordinary buffers, so a small reservation is enough and keeps several shards under an
/// 8 MiB `RLIMIT_MEMLOCK`.
pub const IO_MEMORY_BYTES_DEFAULT: usize = 512 << 10;

/// Configures and starts an engine. Every setting has a default except
/// [`data_dir`](Builder::data_dir).
///
/// ```no_run
/// let herald = herald::Herald::builder()
///     .data_dir("/var/lib/herald")
///     .shards(2)
///     .intake_capacity(4096)
///     .start()?;
/// # Ok::<(), herald::StartError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct Builder {
    data_dir: Option<PathBuf>,
    shards: Option<usize>,
    intake_capacity: usize,
    allow_cidrs: Vec<String>,
    extra_ca_pems: Vec<PathBuf>,
    require_https: bool,
    pinning: Pinning,
    batch_scheduling: bool,
    socket_ring: bool,
    io_memory_bytes: usize,
    dispatcher: DispatcherConfig,
    retry_delays: Option<Vec<Duration>>,
    idempotency_window: Option<Duration>,
    journal_group_delay: Option<Duration>,
    journal_lazy_delay: Option<Duration>,
    journal_group_records_max: Option<usize>,
    journal_segment_bytes: Option<u64>,
    journal_segments_max: Option<usize>,
    shutdown_grace: Option<Duration>,
    checkpoint_records: Option<u64>,
    checkpoint_interval: Option<Duration>,
    awaiting_durable_max: Option<usize>,
    stream: StreamConfig,
}

/// Whole milliseconds of `duration`, saturating (no setting comes near `u64::MAX` ms).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            data_dir: None,
            shards: None,
            intake_capacity: INTAKE_CAPACITY_DEFAULT,
            allow_cidrs: Vec::new(),
            extra_ca_pems: Vec::new(),
            require_https: false,
            pinning: Pinning::Auto,
            batch_scheduling: true,
            socket_ring: true,
            io_memory_bytes: IO_MEMORY_BYTES_DEFAULT,
            dispatcher: DispatcherConfig::default(),
            retry_delays: None,
            idempotency_window: None,
            journal_group_delay: None,
            journal_lazy_delay: None,
            journal_group_records_max: None,
            journal_segment_bytes: None,
            journal_segments_max: None,
            shutdown_grace: None,
            checkpoint_records: None,
            checkpoint_interval: None,
            awaiting_durable_max: None,
            stream: StreamConfig::default(),
        }
    }
}

impl Builder {
    /// Where journals live: one directory per shard below it (`shard-<i>`). Required.
    /// Reopen a directory with the same shard count: tenants are routed by
    /// [`crate::shard_of`].
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Builder {
        self.data_dir = Some(path.into());
        self
    }

    /// Number of shards (threads), 1..=256. Default: the available cores.
    pub fn shards(mut self, shards: usize) -> Builder {
        self.shards = Some(shards);
        self
    }

    /// Bounded intake queue per shard (default 4096). When full, `try_*` calls fail with
    /// [`crate::Error::Backpressure`] and give the item back; other calls wait.
    pub fn intake_capacity(mut self, capacity: usize) -> Builder {
        self.intake_capacity = capacity;
        self
    }

    /// Permits sending to a non-public network, e.g. `"127.0.0.0/8"` for tests, or a
    /// private range for internal receivers. Repeatable. By default loopback, private,
    /// link-local, CGNAT, multicast and cloud-metadata addresses are refused.
    pub fn allow_cidr(mut self, cidr: impl Into<String>) -> Builder {
        self.allow_cidrs.push(cidr.into());
        self
    }

    /// Trusts the CA certificates of a PEM file for https receivers, in addition to the
    /// system roots. Repeatable.
    pub fn extra_ca_pem(mut self, path: impl Into<PathBuf>) -> Builder {
        self.extra_ca_pems.push(path.into());
        self
    }

    /// Refuses plain `http://` endpoints (default: allowed): creating or updating a
    /// webhook with an `http://` url is [`crate::Error::Invalid`] (field `url`), as is
    /// [`crate::Herald::check_url`] of one, and an existing one fails at send time.
    pub fn require_https(mut self, require: bool) -> Builder {
        self.require_https = require;
        self
    }

    /// Whether shard threads are pinned to CPUs (default [`Pinning::Auto`]: shard `i` on
    /// the `i`-th online CPU when there are more CPUs than shards, floating when the
    /// shards take every CPU; see [`Pinning`] for why).
    pub fn pinning(mut self, pinning: Pinning) -> Builder {
        self.pinning = pinning;
        self
    }

    /// `true`: [`Pinning::Always`] (shard `i` on the `i`-th online CPU whenever there are
    /// enough); `false`: [`Pinning::Never`].
    pub fn pin_threads(mut self, pin: bool) -> Builder {
        self.pinning = if pin { Pinning::Always } else { Pinning::Never };
        self
    }

    /// Runs shard threads under Linux's `SCHED_BATCH` policy (default `true`): the same
    /// share of the CPU, but a shard woken by a response or a publish does not preempt
    /// the thread running on its core; it runs at the next scheduling point and takes
    /// the completions waiting by then together. Raises deliveries per second when the
    /// cores are busy; turn it off if the process shares its cores with latency-bound
    /// work that shards should preempt. A shard that cannot switch logs a warning and
    /// runs under the default policy.
    pub fn batch_scheduling(mut self, batch: bool) -> Builder {
        self.batch_scheduling = batch;
        self
    }

    /// Awaits responses on a ring of each shard's own, set up so that a completion never
    /// interrupts the running shard (`IORING_SETUP_COOP_TASKRUN`), instead of glommio's
    /// (default `true`): fewer interrupts, more deliveries per second. Kernels without
    /// such rings (before 5.19) use glommio's whatever this says.
    pub fn socket_ring(mut self, on: bool) -> Builder {
        self.socket_ring = on;
        self
    }

    /// glommio `io_memory` per shard, at most 2 MiB (default 512 KiB).
    pub fn io_memory_bytes(mut self, bytes: usize) -> Builder {
        self.io_memory_bytes = bytes;
        self
    }

    /// Retry schedule of webhooks without their own: the delays before each retry, each
    /// measured from the previous attempt's failure (the first attempt is immediate; an
    /// empty list means one attempt only). Default: +1 min, +5 min, +30 min, +2 h, +8 h,
    /// +24 h (7 attempts). At most [`herald_core::RETRIES_MAX`] delays of at most 7 days
    /// each, checked by [`start`](Self::start). Overrides the schedule of
    /// [`dispatcher_config`](Self::dispatcher_config).
    pub fn retry_schedule(mut self, retry_delays: Vec<Duration>) -> Builder {
        self.retry_delays = Some(retry_delays);
        self
    }

    /// How long an event's idempotency key is remembered after the event was accepted
    /// (default 24 hours; millisecond resolution). Keys survive restarts (they are
    /// journaled); at most [`herald_core::IDEMPOTENCY_KEYS_MAX`] per shard are kept, the
    /// oldest forgotten first. Overrides the window of
    /// [`dispatcher_config`](Self::dispatcher_config).
    pub fn idempotency_window(mut self, window: Duration) -> Builder {
        self.idempotency_window = Some(window);
        self
    }

    /// The whole dispatcher policy (retry schedule, jitter, health, per-shard limits).
    pub fn dispatcher_config(mut self, config: DispatcherConfig) -> Builder {
        self.dispatcher = config;
        self
    }

    /// Group commit: journal syncs start at least this far apart unless
    /// [`Builder::journal_group_records_max`] records wait, so that records appended
    /// meanwhile share one; a record appended after a longer pause is synced at once
    /// (default 1 ms, at most 1 s; microsecond resolution). Publishes are
    /// acknowledged after the sync.
    pub fn journal_group_delay(mut self, delay: Duration) -> Builder {
        self.journal_group_delay = Some(delay);
        self
    }

    /// Group commit for records nobody waits for: a shard turn's attempt outcomes,
    /// while no publish, operation or delivery waits for a record, are synced this long
    /// after the last sync began (default 10 ms, at most 1 s, never less than the group
    /// delay), sharing a sync with later records; any record someone waits for syncs
    /// them at once with it. A power loss (or a crash right after the journal began a new
    /// segment) may lose this much of them, and their deliveries are then sent again (at
    /// least once).
    pub fn journal_lazy_delay(mut self, delay: Duration) -> Builder {
        self.journal_lazy_delay = Some(delay);
        self
    }

    /// Group commit: sync the journal once this many records wait (default 256).
    pub fn journal_group_records_max(mut self, records: usize) -> Builder {
        self.journal_group_records_max = Some(records);
        self
    }

    /// Journal segment file size (default 64 MiB; a multiple of 4096).
    pub fn journal_segment_bytes(mut self, bytes: u64) -> Builder {
        self.journal_segment_bytes = Some(bytes);
        self
    }

    /// Most journal segment files per shard (default 1024; 2..=65,536): bounds the
    /// journal's disk use to this many segments. Changes are refused with a storage
    /// error while the journal is at the limit and its latest checkpoint frees
    /// nothing; the shard writes a checkpoint then and takes changes again once the
    /// state fits. A checkpoint written at the limit may use up to as many segments
    /// again, until it is complete and the older segments go. When that checkpoint itself
    /// leaves no room (the state, pending deliveries above all, fills the limit), nothing
    /// the shard can do frees any: changes are refused with an error that says so and
    /// names this setting and [`Builder::journal_segment_bytes`], until the engine is
    /// started again with a higher limit.
    pub fn journal_segments_max(mut self, segments: usize) -> Builder {
        self.journal_segments_max = Some(segments);
        self
    }

    /// How long [`crate::Herald::shutdown`] waits for requests in flight before leaving
    /// them to be retried after the next start (default 5 s; millisecond resolution).
    pub fn shutdown_grace(mut self, grace: Duration) -> Builder {
        self.shutdown_grace = Some(grace);
        self
    }

    /// Writes a journal checkpoint after this many records (default 200,000), so that
    /// replay is short and old segments can be deleted. At least 1. A checkpoint is the
    /// whole state, so one is written by count only once the journal also grew by as
    /// many bytes as the previous checkpoint took (a large backlog is not written again
    /// every few records); a clean shutdown writes one too.
    pub fn checkpoint_records(mut self, records: u64) -> Builder {
        self.checkpoint_records = Some(records);
        self
    }

    /// Writes a journal checkpoint this long after the previous one when anything was
    /// written since (default 5 minutes; millisecond resolution).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Builder {
        self.checkpoint_interval = Some(interval);
        self
    }

    /// Most requests per shard that were carried out and wait for the journal to become
    /// durable before being answered (default 65,536; at least 1). Beyond it requests
    /// stay queued, so a slow disk shows up as back-pressure.
    pub fn awaiting_durable_max(mut self, requests: usize) -> Builder {
        self.awaiting_durable_max = Some(requests);
        self
    }

    /// How far back a subscriber of the event stream ([`crate::Herald::subscribe`]) can
    /// resume: events accepted within `window` (default 10 minutes), at most `events_max`
    /// per tenant (default 100,000, at least 1) and `bytes_max` of envelopes per shard
    /// (default 64 MiB; the oldest go first), as far as the journal still holds them
    /// (the window reads them from the journal: segments deleted after a checkpoint take
    /// their events out of it, as a restart would).
    pub fn stream_window(
        mut self,
        window: Duration,
        events_max: usize,
        bytes_max: usize,
    ) -> Builder {
        self.stream = StreamConfig {
            window_ms: millis(window),
            window_events_max: events_max,
            window_bytes_max: bytes_max,
        };
        self
    }

    /// Opens (or creates) every shard's journal, replays it, and starts the shards.
    /// Returns once all are serving.
    ///
    /// It also prepares the process for the shards' connections: the soft limit on open
    /// files (`RLIMIT_NOFILE`) is raised, never lowered and never past the hard limit,
    /// to shards × 1,024 connections + 4,096 (at most 65,536), and the descriptor table
    /// is grown to that size once, here, rather than while shards connect (growing it
    /// in a multi-threaded process stalls every thread opening a descriptor for an RCU
    /// grace period, milliseconds).
    pub fn start(self) -> Result<Herald, StartError> {
        let config = |message: String| StartError::Config { message };
        let data_dir = self
            .data_dir
            .ok_or_else(|| config("data_dir is required".to_string()))?;
        let shards = self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if !(1..=SHARDS_MAX).contains(&shards) {
            return Err(config(format!(
                "shards must be 1..={SHARDS_MAX}, got {shards}"
            )));
        }
        if !(1..=INTAKE_CAPACITY_MAX).contains(&self.intake_capacity) {
            return Err(config(format!(
                "intake_capacity must be 1..={INTAKE_CAPACITY_MAX}, got {}",
                self.intake_capacity
            )));
        }
        if self.io_memory_bytes > IO_MEMORY_BYTES_MAX {
            return Err(config(format!(
                "io_memory_bytes must be at most {IO_MEMORY_BYTES_MAX}, got {}",
                self.io_memory_bytes
            )));
        }
        let mut egress = EgressPolicy::new();
        egress.require_https = self.require_https;
        for text in &self.allow_cidrs {
            let cidr =
                Cidr::parse(text).map_err(|e| config(format!("allow_cidr {text:?}: {e}")))?;
            egress
                .allow(cidr)
                .map_err(|e| config(format!("allow_cidr {text:?}: {e}")))?;
        }
        let mut trust = TrustAnchors::system();
        for path in &self.extra_ca_pems {
            trust
                .add_pem_file(path)
                .map_err(|e| config(format!("extra_ca_pem {}: {e}", path.display())))?;
        }
        let mut dispatcher = self.dispatcher;
        if let Some(delays) = self.retry_delays {
            dispatcher.retry_schedule =
                RetrySchedule::new(delays.into_iter().map(millis).collect())
                    .map_err(|e| config(format!("retry_schedule: {e}")))?;
        }
        if let Some(window) = self.idempotency_window {
            dispatcher.idempotency_window_ms = millis(window);
        }
        let mut client = ClientConfig::new(trust);
        client.egress = egress;
        client.socket_ring = self.socket_ring;
        let mut shard = ShardConfig::new(client);
        shard.dispatcher = dispatcher;
        if let Some(delay) = self.journal_group_delay {
            shard.journal_group_delay_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        }
        if let Some(delay) = self.journal_lazy_delay {
            shard.journal_lazy_delay_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        }
        if let Some(records) = self.journal_group_records_max {
            shard.journal_group_records_max = records;
        }
        if let Some(bytes) = self.journal_segment_bytes {
            shard.journal_segment_bytes = bytes;
        }
        if let Some(segments) = self.journal_segments_max {
            shard.journal_segments_max = segments;
        }
        if let Some(grace) = self.shutdown_grace {
            shard.shutdown_grace_ms = millis(grace);
        }
        if let Some(records) = self.checkpoint_records {
            shard.checkpoint_records = records.max(1);
        }
        if let Some(interval) = self.checkpoint_interval {
            shard.checkpoint_interval_ms = millis(interval);
        }
        if let Some(requests) = self.awaiting_durable_max {
            shard.awaiting_durable_max = requests.max(1);
        }
        if self.stream.window_events_max == 0 || self.stream.window_bytes_max == 0 {
            return Err(config(format!(
                "stream_window: events_max and bytes_max must be at least 1, got {} and {}",
                self.stream.window_events_max, self.stream.window_bytes_max
            )));
        }
        shard.stream = self.stream;
        let require_https = self.require_https;
        let engine = Engine::start(EngineConfig {
            data_dir,
            shards,
            intake_capacity: self.intake_capacity,
            pinning: self.pinning,
            batch_scheduling: self.batch_scheduling,
            io_memory_bytes: self.io_memory_bytes,
            shard,
        })
        .map_err(|error| match error {
            herald_rt::shard::StartError::Config(message) => StartError::Config { message },
            herald_rt::shard::StartError::Storage { shard, error } => StartError::Storage {
                shard,
                message: error.message().to_string(),
                source: error.cause(),
            },
            herald_rt::shard::StartError::Runtime {
                shard,
                message,
                source,
            } => StartError::Runtime {
                shard,
                message,
                source,
            },
        })?;
        Ok(Herald::from_engine(engine, require_https))
    }
}
