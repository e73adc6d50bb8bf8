//! What a run measured: the [`Report`] (every figure, serialised as the `--json` file)
//! and its end-of-run table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles drawn in the latency spectrum (and kept in the JSON).
pub const SPECTRUM_PERCENTILES: [f64; 15] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

/// Latency figures of one histogram (µs).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// `(percentile, µs)` at [`SPECTRUM_PERCENTILES`].
    pub spectrum: Vec<(f64, u64)>,
}

impl Latency {
    /// Figures of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let at = |q: f64| histogram.value_at_quantile(q);
        Latency {
            samples: histogram.len(),
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: histogram.max(),
            spectrum: SPECTRUM_PERCENTILES
                .iter()
                .map(|&p| (p, at(p / 100.0)))
                .collect(),
        }
    }
}

/// The p99 of `latency`, µs; 0 when it holds nothing.
pub fn p99_of(latency: &hdrhistogram::Histogram<u64>) -> u64 {
    if latency.is_empty() {
        0
    } else {
        latency.value_at_quantile(0.99)
    }
}

/// The p99 of the latencies in `latency` that were not yet in `before` (an earlier
/// state of the same histogram), µs; 0 when there are none.
pub fn p99_since(
    latency: &hdrhistogram::Histogram<u64>,
    before: Option<&hdrhistogram::Histogram<u64>>,
) -> u64 {
    match before {
        None => p99_of(latency),
        Some(before) => {
            let mut since = latency.clone();
            // A run's latencies only accumulate, so this cannot fail; if it did the span
            // would read as everything so far.
            let _ = since.subtract(before);
            p99_of(&since)
        }
    }
}

/// One point of the timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since publishing began.
    pub t_s: f64,
    /// Events acknowledged (durable) so far.
    pub accepted: u64,
    /// Successful deliveries at the sink so far.
    pub delivered: u64,
    /// Requests the sink answered so far (successes, failures, retries).
    pub attempts: u64,
    /// Deliveries not finished (embedded: the engine's count; remote: accepted ×
    /// fan-out − delivered).
    pub pending: u64,
    /// p99 of the latencies so far, µs.
    pub p99_us: u64,
    /// p99 of the latencies recorded since the previous sample, µs (0 when none were):
    /// where in the run the tail comes from, which the cumulative figure hides.
    pub p99_interval_us: u64,
    /// Resident set size of this process now (`VmRSS`), bytes: the engine's, sink's and
    /// publishers' memory embedded, the sink's and publishers' against a remote server.
    pub rss_bytes: Option<u64>,
    /// Checkpoints the engine's shards finished so far in the run (embedded only): where
    /// one ends, its segments before it are deleted, so a tail that lines up with a
    /// change here is the checkpoint's.
    pub checkpoints: Option<u64>,
    /// Shards writing a checkpoint between their turns at this sample (embedded only).
    pub checkpoints_underway: Option<u64>,
}

/// Figures of the raw ceiling: the same sink, no engine.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RawReport {
    /// Requests sent and answered.
    pub requests: u64,
    /// Answers that were not 2xx.
    pub non_success: u64,
    /// Keep-alive connections.
    pub connections: usize,
    /// Sink listeners (origins) the connections were spread over.
    pub origins: usize,
    /// Body bytes of each request.
    pub body_bytes: usize,
    /// Over TLS.
    pub tls: bool,
    /// Wall time, s.
    pub elapsed_s: f64,
    /// Requests per second.
    pub raw_per_s: f64,
    /// Send→arrival latency at the sink.
    pub latency: Latency,
    /// Process CPU per request, µs (load client + sink).
    pub cpu_us_per_request: Option<f64>,
    /// The sink's threads' share of it, µs per request: with one sink thread, a share
    /// near `1e6 / raw_per_s` means that thread was the bound.
    pub sink_cpu_us_per_request: Option<f64>,
    /// Shares of the machine's CPU time during the run (every process).
    pub host_cpu: Option<HostCpuShares>,
}

/// How the machine's CPUs spent the run (`/proc/stat`, every process and the kernel):
/// shares of all cores' time, summing to 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct HostCpuShares {
    /// Running anything.
    pub busy: f64,
    /// Idle, waiting for I/O included (a thread waiting on io_uring counts there too).
    pub idle: f64,
    /// Taken by the hypervisor (`steal`): time the figures lost to other guests.
    pub steal: f64,
    /// Share of the run's wall time in which some task (of any process) waited for I/O
    /// (`/proc/pressure/io`); `null` where the kernel does not report it.
    pub io_stalled: Option<f64>,
}

/// Steal above this share of the run marks its figures as taken on a machine other
/// guests were using: run to run they then vary by more than most changes being
/// compared (on a 2-core VM whose steal reached 23–43 % that day, the same build's
/// closed loop ran 40,000 to 62,000 deliveries/s within an hour). I/O stalls are not a
/// sign of it: the journal's own syncs are stalls.
pub const CONTENDED_STEAL: f64 = 0.10;

impl HostCpuShares {
    /// Between two readings.
    pub fn between(
        before: Option<crate::sysstat::HostCpu>,
        after: Option<crate::sysstat::HostCpu>,
    ) -> Option<HostCpuShares> {
        let shares = after?.shares_since(&before?)?;
        Some(HostCpuShares {
            busy: shares.busy,
            idle: shares.idle,
            steal: shares.steal,
            io_stalled: shares.io_stalled,
        })
    }

    /// A warning when other guests took much of the machine during the run (see
    /// [`CONTENDED_STEAL`]).
    pub fn caution(&self) -> Option<String> {
        (self.steal >= CONTENDED_STEAL).then(|| {
            format!(
                "other guests took {:.1} % of the cores: figures vary run to run; compare \
                 builds in alternated runs, or on a quiet machine",
                self.steal * 100.0
            )
        })
    }

    /// The table's text: `busy 86.0 %, idle 12.1 %, steal 1.9 % of 2 cores`, then the
    /// I/O stalls when known.
    pub fn text(&self) -> String {
        let io = self.io_stalled.map_or_else(String::new, |io| {
            format!(
                "; some task waited for I/O {:.1} % of the time (this run's own syncs included)",
                io * 100.0
            )
        });
        format!(
            "busy {:.1} %, idle {:.1} % (I/O wait included), steal {:.1} % of {} cores (this machine, every process){io}",
            self.busy * 100.0,
            self.idle * 100.0,
            self.steal * 100.0,
            crate::sysstat::cores()
        )
    }
}

/// Attempts and deliveries by outcome class (the engine's counters; remote runs have
/// the sink's statuses only).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Retries {
    /// Attempts answered 2xx.
    pub attempts_succeeded: Option<u64>,
    /// Attempts that failed retryably (408, 429, 5xx, timeouts, connection errors).
    pub attempts_retryable: Option<u64>,
    /// Attempts that failed finally (3xx, other 4xx, 410).
    pub attempts_final: Option<u64>,
    /// Attempts beyond each delivery's first (attempts − deliveries created).
    pub retries_sent: Option<u64>,
    /// Deliveries that made an attempt and wait for a retry at the end.
    pub retries_pending: Option<u64>,
    /// Deliveries not finished at the end (waiting for a retry, or held back by an
    /// endpoint's breaker or rate limit before their first attempt).
    pub deliveries_pending: Option<u64>,
    /// Deliveries ended by a final failure.
    pub deliveries_failed: Option<u64>,
    /// Deliveries whose every attempt failed.
    pub deliveries_exhausted: Option<u64>,
}

/// Everything a run measured; `--json` writes it as is. Figures that do not apply to a
/// run, or that cannot be known in its mode, are `null`, never 0 (e.g. `raw_per_s`
/// without `--compare-raw`; remotely, the server's CPU when its `/metrics` does not
/// export `process_cpu_seconds_total`, and the device's writes).
///
/// Remotely (`mode` = `remote`) the engine figures come from the server's `GET /metrics`
/// read before and after the run (`figures_source` = `metrics`): `cpu_us_per_delivery`,
/// `engine_cpu_us_per_delivery` and `disk_write_bytes_per_delivery` are the server
/// process's, `peak_rss_bytes` is the server's peak since it started, and the journal
/// and retry figures are the server's counters (which include any other load on it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// `embedded` or `remote`.
    pub mode: String,
    /// Scenario name, if any.
    pub scenario: Option<String>,
    /// `closed` or `open`.
    pub load_model: String,
    /// Offered rate of an open-loop run, events/s.
    pub rate_offered: Option<f64>,
    /// Tenants.
    pub tenants: usize,
    /// Webhooks per tenant.
    pub webhooks_per_tenant: usize,
    /// Deliveries per event.
    pub fanout: u64,
    /// Bytes of each event's data.
    pub payload_bytes: usize,
    /// Signature scheme.
    pub scheme: String,
    /// Deliveries over TLS.
    pub tls: bool,
    /// Engine shards (remote: the server's `herald_shards`).
    pub shards: Option<usize>,
    /// Where the engine figures come from: `engine` (the embedded engine's stats) or
    /// `metrics` (the remote server's `GET /metrics`).
    pub figures_source: String,
    /// Online CPUs of this machine.
    pub cores: usize,
    /// Shard threads under `SCHED_BATCH`, as asked for (`None`: the engine's default,
    /// on).
    pub batch_scheduling: Option<bool>,
    /// Whether the embedded engine's shard threads were pinned to CPUs (`None`: remote).
    pub pinned: Option<bool>,
    /// Responses awaited on the shards' own rings, as asked for (`None`: the engine's
    /// default, on).
    pub socket_ring: Option<bool>,
    /// Journal group size asked for.
    pub group_records: Option<usize>,
    /// Journal group delay asked for, µs.
    pub group_delay_us: Option<u64>,
    /// Journal group delay for records nobody waits for asked for, µs.
    #[serde(default)]
    pub lazy_delay_us: Option<u64>,

    /// Events published and acknowledged.
    pub accepted: u64,
    /// Publishes refused (errors other than back-pressure).
    pub publish_errors: u64,
    /// Events per hand-off asked for (`--batch`).
    pub batch: usize,
    /// Hand-offs to the engine: publish calls it took (embedded: `try_publish`, or
    /// `publish_batch` with `--batch` above 1) or REST requests sent (remote).
    pub publish_calls: u64,
    /// accepted × fan-out.
    pub deliveries_expected: u64,
    /// 2xx answers at the sink.
    pub delivered: u64,
    /// All answers at the sink (retries and failures included).
    pub attempts: u64,
    /// Seconds spent publishing.
    pub publish_s: f64,
    /// Seconds from the first publish to the last delivery.
    pub elapsed_s: f64,
    /// The run stopped waiting before everything settled.
    pub drain_timed_out: bool,
    /// accepted / publish_s.
    pub accepted_per_s: f64,
    /// delivered / elapsed_s.
    pub deliveries_per_s: f64,
    /// Deliveries per second once the publishing was over, from the first timeline
    /// sample after it to the last delivery ([`after_publishing_per_s`]): what the
    /// engine delivers when it accepts nothing, which a closed loop's figure above mixes
    /// with the publishing phase (where accepting the events takes much of the CPU).
    /// `None` when less than [`AFTER_PUBLISHING_S_MIN`] of the run followed the
    /// publishing (open loops publish until their end).
    pub deliveries_after_publishing_per_s: Option<f64>,
    /// attempts / elapsed_s.
    pub attempts_per_s: f64,
    /// The raw ceiling's requests/s (`--compare-raw`): the mean of the measurements
    /// before and after the engine's run when both used its connections
    /// (`raw_bracketed`), else the one after it.
    pub raw_per_s: Option<f64>,
    /// deliveries_per_s / raw_per_s.
    pub ratio_to_raw: Option<f64>,
    /// deliveries_after_publishing_per_s / raw_per_s: the delivery path alone against
    /// the raw ceiling, once a closed loop's publishing (accepting and journaling its
    /// events) no longer shares the CPU with it. `None` without both figures.
    pub ratio_after_publishing_to_raw: Option<f64>,
    /// The raw run after the engine's, over the connections the engine opened.
    pub raw: Option<RawReport>,
    /// The raw run before the engine's (a closed loop with a count of events), over the
    /// connections the engine was expected to open: every endpoint's in-flight limit.
    pub raw_before: Option<RawReport>,
    /// `raw_per_s` is the mean of `raw_before` and `raw`: the engine opened the
    /// connections `raw_before` used, so that the host's drift during the run, which
    /// moves the raw ceiling by a fifth within minutes, counts on both sides of it.
    pub raw_bracketed: bool,

    /// Latency median, µs: each event's publish (closed loop) or scheduled send time
    /// (open loop) to the arrival of a request at the sink.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// Latency samples (requests with the send-time field).
    pub latency_samples: u64,
    /// `[percentile, µs]` pairs.
    pub latency_spectrum_us: Vec<(f64, u64)>,

    /// What [`Report::cpu_us_per_delivery`] covers.
    pub cpu_scope: String,
    /// Process CPU (user + system) per delivery, µs.
    pub cpu_us_per_delivery: Option<f64>,
    /// The engine's share: process CPU less the sink's and the harness's threads.
    pub engine_cpu_us_per_delivery: Option<f64>,
    /// The sink's threads.
    pub sink_cpu_us_per_delivery: Option<f64>,
    /// The harness's threads: the publishers, and the sampler behind the progress line
    /// and the timeline (embedded runs; before 6 Dec 2026, evening, the publishers only,
    /// and the sampler's CPU was counted as the engine's).
    pub load_cpu_us_per_delivery: Option<f64>,
    /// Embedded: the part of the engine's that its journals' threads took (the group
    /// commit's `fdatasync`s and the next segments' preparation): what the device's
    /// syncs cost in CPU. `null` remotely.
    pub journal_cpu_us_per_delivery: Option<f64>,
    /// Cores kept busy on average: CPU / elapsed of this process (embedded) or of the
    /// server (remote).
    pub cores_busy: Option<f64>,
    /// How this machine's CPUs spent the run, every process's time and the
    /// hypervisor's: idle time in a closed loop is time the run waited on something
    /// other than CPU; steal is time taken from the figures by other guests.
    pub host_cpu: Option<HostCpuShares>,
    /// Peak resident memory, bytes: embedded, this process during the run (VmHWM);
    /// remote, the server process since it started.
    pub peak_rss_bytes: Option<u64>,
    /// Remote: the server's resident memory at the end of the run, bytes.
    pub server_rss_bytes: Option<u64>,
    /// This process's CPU per delivery (sink, publishers and, embedded, the engine), µs.
    pub harness_cpu_us_per_delivery: Option<f64>,
    /// This process's peak resident memory during the run, bytes.
    pub harness_peak_rss_bytes: Option<u64>,

    /// Journal bytes appended (frames, headers, padding, checkpoints).
    pub journal_bytes: Option<u64>,
    /// Journal records appended.
    pub journal_records: Option<u64>,
    /// Journal syncs.
    pub journal_syncs: Option<u64>,
    /// Shard turns whose records were committed urgently: synced within the group delay
    /// because a reply or a delivery waited for one of them.
    pub journal_commits_urgent: Option<u64>,
    /// Shard turns whose records (attempt outcomes alone) were committed lazily: synced
    /// within the lazy delay (`lazy_delay_us`), sharing a later sync.
    pub journal_commits_lazy: Option<u64>,
    /// The journal's sync time (one group commit's `fdatasync`) at the median and at the
    /// 99th percentile over the run's syncs, as the upper bound of the histogram bucket
    /// it falls in (`herald::JOURNAL_SYNC_BOUNDS_US`), µs: a delivery is sent only once
    /// its event's sync is done, so this is a floor under publish→receive latency
    /// (embedded only; `None` without syncs or past a second).
    pub journal_sync_p50_us: Option<u64>,
    /// See `journal_sync_p50_us`.
    pub journal_sync_p99_us: Option<u64>,
    /// The slowest sync of the run, as the upper bound of its bucket, µs (`None`: past a
    /// second, or no syncs; embedded only): one slow sync holds every delivery of the
    /// events it makes durable, which a p99 over thousands of syncs does not show.
    pub journal_sync_max_us: Option<u64>,
    /// Syncs slower than 10 ms, the open loop's latency goal at p99 (embedded only).
    pub journal_syncs_over_10ms: Option<u64>,
    /// Checkpoints the engine's shards completed during the run (embedded only).
    pub checkpoints: Option<u64>,
    /// Shard-thread time of the latest checkpoint (building, encoding and appending its
    /// parts, spread over the shard's turns), the largest over the shards, ms (embedded
    /// only; none completed: `None`).
    pub checkpoint_busy_ms: Option<f64>,
    /// Journal bytes of that checkpoint (embedded only).
    pub checkpoint_bytes: Option<u64>,
    /// Shard-thread CPU time of every checkpoint written during the run, summed over
    /// the shards (abandoned ones included), ms (embedded only). With a backlog, each
    /// checkpoint copies every pending event's body: a closed loop long enough to
    /// checkpoint pays it, a 200,000-event one does not.
    #[serde(default)]
    pub checkpoint_cpu_ms_total: Option<f64>,
    /// Journal bytes of every checkpoint written during the run (embedded only; part of
    /// `journal_bytes`).
    #[serde(default)]
    pub checkpoint_bytes_total: Option<u64>,
    /// `checkpoint_cpu_ms_total` per delivery, µs (part of the engine's CPU).
    #[serde(default)]
    pub checkpoint_cpu_us_per_delivery: Option<f64>,
    /// Finished deliveries the delivery log evicted during the run (none until it is
    /// full: 100,000 finished deliveries per shard by default). `None`: a server
    /// without the series.
    #[serde(default)]
    pub deliveries_evicted: Option<u64>,
    /// journal_bytes / delivered.
    pub journal_bytes_per_delivery: Option<f64>,
    /// journal_records / delivered.
    pub records_per_delivery: Option<f64>,
    /// Bytes the engine's process asked the storage layer to write (`write_bytes` of
    /// `/proc/self/io`; remotely the server's `herald_process_disk_write_bytes_total`).
    pub disk_write_bytes: Option<u64>,
    /// disk_write_bytes / delivered.
    pub disk_write_bytes_per_delivery: Option<f64>,
    /// The block device holding the data directory (`/proc/diskstats` name); remote:
    /// unknown.
    pub device: Option<String>,
    /// Bytes written to that device during the run, by every process
    /// (`/proc/diskstats` sectors written × 512).
    pub device_write_bytes: Option<u64>,
    /// device_write_bytes / delivered.
    pub device_write_bytes_per_delivery: Option<f64>,

    /// Keep-alive connections the sender opened to the sink.
    pub connections: u64,
    /// Sink listeners (origins) the endpoints were spread over.
    pub origins: usize,
    /// Retries by class.
    pub retries: Retries,
    /// Sink answers by status.
    pub statuses: BTreeMap<String, u64>,
    /// The timeline.
    pub timeline: Vec<Sample>,
}

/// Shortest stretch after the publishing that [`after_publishing_per_s`] reports a rate
/// for: a quarter of a second holds one timeline sample's worth of deliveries at least.
pub const AFTER_PUBLISHING_S_MIN: f64 = 0.25;

/// Deliveries per second from the first `timeline` sample at or after `publish_s` to
/// `elapsed_s`, when `delivered` were done in all: `None` when that stretch is shorter
/// than [`AFTER_PUBLISHING_S_MIN`] or no sample falls in it.
pub fn after_publishing_per_s(
    timeline: &[Sample],
    publish_s: f64,
    elapsed_s: f64,
    delivered: u64,
) -> Option<f64> {
    let from = timeline.iter().find(|s| s.t_s >= publish_s)?;
    let span_s = elapsed_s - from.t_s;
    (span_s >= AFTER_PUBLISHING_S_MIN)
        .then(|| delivered.saturating_sub(from.delivered) as f64 / span_s)
}

/// Where a run's tail came from: the timeline sample whose own p99 (`p99_interval_us`)
/// was the highest, and how many samples' p99 exceeded `over_us` of those that recorded
/// any latency. `None` without such a sample.
pub fn worst_interval(timeline: &[Sample], over_us: u64) -> Option<(&Sample, usize, usize)> {
    let recorded = timeline.iter().filter(|s| s.p99_interval_us > 0);
    let worst = recorded.clone().max_by_key(|s| s.p99_interval_us)?;
    let over = recorded
        .clone()
        .filter(|s| s.p99_interval_us > over_us)
        .count();
    Some((worst, over, recorded.count()))
}

/// The latency a timeline sample's p99 is compared with in the text report: the
/// open-loop goal's.
const INTERVAL_P99_US_FLAGGED: u64 = 10_000;

/// Keys every report's JSON holds (tests check them; tools rely on them).
pub const REPORT_KEYS: [&str; 37] = [
    "deliveries_per_s",
    "deliveries_after_publishing_per_s",
    "accepted_per_s",
    "raw_per_s",
    "ratio_to_raw",
    "ratio_after_publishing_to_raw",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "cpu_us_per_delivery",
    "peak_rss_bytes",
    "journal_bytes_per_delivery",
    "records_per_delivery",
    "disk_write_bytes_per_delivery",
    "retries",
    "statuses",
    "timeline",
    "latency_spectrum_us",
    "delivered",
    "accepted",
    "mode",
    "figures_source",
    "shards",
    "origins",
    "connections",
    "engine_cpu_us_per_delivery",
    "journal_cpu_us_per_delivery",
    "harness_cpu_us_per_delivery",
    "server_rss_bytes",
    "device_write_bytes_per_delivery",
    "journal_bytes",
    "journal_records",
    "journal_commits_urgent",
    "journal_commits_lazy",
    "host_cpu",
];

/// `a / b` when `b > 0`.
pub(crate) fn per(a: Option<u64>, b: u64) -> Option<f64> {
    (b > 0).then_some(a? as f64 / b as f64)
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn bytes(value: Option<u64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(b) if b >= 10 << 20 => format!("{} MiB", b >> 20),
        Some(b) if b >= 10 << 10 => format!("{} KiB", b >> 10),
        Some(b) => format!("{b} B"),
    }
}

impl Report {
    /// A warning when an embedded run ended before the engine's steady state: it wrote
    /// no checkpoint and its delivery log evicted nothing, so its CPU per delivery
    /// leaves out what a longer run at the same load also pays.
    pub fn short_run_caution(&self) -> Option<String> {
        (self.checkpoints == Some(0) && self.deliveries_evicted == Some(0)).then(|| {
            format!(
                "no checkpoint written and no delivery evicted: a longer run also pays for \
                 checkpoints (each copies the pending events' bodies) and for evicting \
                 deliveries from the full log, which this run's CPU per delivery leaves \
                 out; for the steady state, run until both happen (by default a shard \
                 checkpoints every {} records and its log keeps {} finished deliveries)",
                herald::CHECKPOINT_RECORDS_DEFAULT,
                herald::LOG_FINISHED_MAX_DEFAULT
            )
        })
    }

    /// The end-of-run table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(t, "  {name:<32} {value}");
        };
        let load = match self.rate_offered {
            Some(rate) => format!("open loop at {rate:.0} events/s"),
            None => "closed loop".to_owned(),
        };
        row(
            "run",
            format!(
                "{}{}, {load}, {} tenants × {} webhooks, {} B payload, {}{}",
                self.mode,
                self.scenario
                    .as_ref()
                    .map_or_else(String::new, |s| format!(" ({s})")),
                self.tenants,
                self.webhooks_per_tenant,
                self.payload_bytes,
                self.scheme,
                if self.tls { ", TLS" } else { "" }
            ),
        );
        row(
            "engine",
            match (self.mode.as_str(), self.shards) {
                ("remote", Some(s)) => {
                    format!("remote, {s} shards; this machine has {} cores", self.cores)
                }
                (_, Some(s)) => format!(
                    "{s} shards on {} cores{}{}",
                    self.cores,
                    match self.pinned {
                        Some(true) => ", pinned",
                        Some(false) => ", floating",
                        None => "",
                    },
                    match (self.batch_scheduling, self.socket_ring) {
                        (Some(false), Some(false)) =>
                            ", default scheduling (SCHED_BATCH off), glommio's ring for responses",
                        (Some(false), _) => ", default scheduling (SCHED_BATCH off)",
                        (_, Some(false)) => ", glommio's ring for responses (socket ring off)",
                        _ => "",
                    }
                ),
                (_, None) => format!("remote; this machine has {} cores", self.cores),
            },
        );
        row(
            "sink",
            format!(
                "{} origins, {} connections opened",
                self.origins, self.connections
            ),
        );
        row(
            "accepted",
            format!(
                "{} events in {:.2} s: {:.0}/s{}{}",
                self.accepted,
                self.publish_s,
                self.accepted_per_s,
                if self.publish_errors > 0 {
                    format!(" ({} refused)", self.publish_errors)
                } else {
                    String::new()
                },
                if self.batch > 1 {
                    format!(
                        ", in {} hand-offs of up to {} events",
                        self.publish_calls, self.batch
                    )
                } else {
                    String::new()
                }
            ),
        );
        row(
            "delivered",
            format!(
                "{} of {} in {:.2} s: {:.0}/s ({} attempts, {:.0}/s){}{}",
                self.delivered,
                self.deliveries_expected,
                self.elapsed_s,
                self.deliveries_per_s,
                self.attempts,
                self.attempts_per_s,
                match self.deliveries_after_publishing_per_s {
                    Some(rate) => format!("; {rate:.0}/s once the publishing was over"),
                    None => String::new(),
                },
                if self.drain_timed_out {
                    " — gave up waiting"
                } else {
                    ""
                }
            ),
        );
        if let (Some(raw), Some(ratio), Some(raw_per_s)) =
            (&self.raw, self.ratio_to_raw, self.raw_per_s)
        {
            let bracket = match (&self.raw_before, self.raw_bracketed) {
                (Some(before), true) => format!(
                    " (mean of {:.0}/s before and {:.0}/s after the engine)",
                    before.raw_per_s, raw.raw_per_s
                ),
                (Some(before), false) => format!(
                    " (after the engine; the {:.0}/s before it used {} connections, \
                     not the engine's {})",
                    before.raw_per_s, before.connections, raw.connections
                ),
                (None, _) => String::new(),
            };
            row(
                "raw ceiling",
                format!(
                    "{raw_per_s:.0}/s{bracket} over {} connections to {} origins; \
                     engine / raw = {ratio:.3}{} (raw: {} µs of CPU per request, sink {}; \
                     host busy {})",
                    raw.connections,
                    raw.origins,
                    match self.ratio_after_publishing_to_raw {
                        Some(after) => format!(" ({after:.3} once the publishing was over)"),
                        None => String::new(),
                    },
                    opt(raw.cpu_us_per_request, 1),
                    opt(raw.sink_cpu_us_per_request, 1),
                    raw.host_cpu
                        .map_or_else(|| "-".to_owned(), |h| format!("{:.1} %", h.busy * 100.0)),
                ),
            );
        }
        row(
            "latency µs (p50 p90 p99 p99.9 max)",
            format!(
                "{} {} {} {} {} ({} samples)",
                self.p50_us,
                self.p90_us,
                self.p99_us,
                self.p999_us,
                self.max_us,
                self.latency_samples
            ),
        );
        if let Some((worst, over, of)) = worst_interval(&self.timeline, INTERVAL_P99_US_FLAGGED) {
            row(
                "worst interval p99",
                format!(
                    "{:.1} ms at {:.2} s ({over} of {of} timeline samples over {} ms)",
                    worst.p99_interval_us as f64 / 1000.0,
                    worst.t_s,
                    INTERVAL_P99_US_FLAGGED / 1000
                ),
            );
        }
        row(
            "CPU µs per delivery",
            format!(
                "{} (engine {}, sink {}, load {}; {})",
                opt(self.cpu_us_per_delivery, 1),
                opt(self.engine_cpu_us_per_delivery, 1),
                opt(self.sink_cpu_us_per_delivery, 1),
                opt(self.load_cpu_us_per_delivery, 1),
                self.cpu_scope
            ),
        );
        if let Some(journal) = self.journal_cpu_us_per_delivery {
            row(
                "journal threads",
                format!("{journal:.1} µs of CPU per delivery (part of the engine's: its syncs)"),
            );
        }
        row("cores busy", opt(self.cores_busy, 2));
        if let Some(host) = &self.host_cpu {
            row("host CPU", host.text());
            if let Some(caution) = host.caution() {
                row("caution", caution);
            }
        }
        row(
            "peak RSS",
            if self.figures_source == "metrics" {
                format!(
                    "server {} (since it started; {} now), this process {}",
                    bytes(self.peak_rss_bytes),
                    bytes(self.server_rss_bytes),
                    bytes(self.harness_peak_rss_bytes)
                )
            } else {
                bytes(self.peak_rss_bytes)
            },
        );
        row(
            "journal per delivery",
            format!(
                "{} B, {} records ({} syncs{})",
                opt(self.journal_bytes_per_delivery, 0),
                opt(self.records_per_delivery, 2),
                self.journal_syncs
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                match (self.journal_commits_urgent, self.journal_commits_lazy) {
                    (Some(urgent), Some(lazy)) => {
                        format!("; turns committed {urgent} urgently, {lazy} lazily")
                    }
                    _ => String::new(),
                }
            ),
        );
        // Embedded runs only (a server's figures have no sync histogram here); with
        // syncs, a quantile without a bound lies past the last one.
        if self.figures_source != "metrics" && self.journal_syncs.is_some_and(|n| n > 0) {
            let bound = |us: Option<u64>| {
                us.map_or_else(
                    || "> 1 s".to_owned(),
                    |us| format!("≤ {:.1} ms", us as f64 / 1e3),
                )
            };
            row(
                "journal sync p50 / p99",
                format!(
                    "{} / {}; slowest {}, {} over 10 ms (a delivery waits for its event's \
                     sync)",
                    bound(self.journal_sync_p50_us),
                    bound(self.journal_sync_p99_us),
                    bound(self.journal_sync_max_us),
                    self.journal_syncs_over_10ms.unwrap_or(0)
                ),
            );
        }
        if let (Some(n), Some(ms), Some(b)) = (
            self.checkpoints,
            self.checkpoint_busy_ms,
            self.checkpoint_bytes,
        ) {
            let all = match (
                self.checkpoint_cpu_ms_total,
                self.checkpoint_bytes_total,
                self.checkpoint_cpu_us_per_delivery,
            ) {
                (Some(total_ms), Some(total_b), Some(us)) => format!(
                    "; in all {total_ms:.0} ms of the shards' CPU ({us:.2} µs per delivery) \
                     for {} ({} B per delivery)",
                    bytes(Some(total_b)),
                    opt(per(Some(total_b), self.delivered), 0)
                ),
                _ => String::new(),
            };
            row(
                "checkpoints",
                format!(
                    "{n} written; the latest took {ms:.1} ms on its shard's thread for {}{all}",
                    bytes(Some(b))
                ),
            );
        }
        if let Some(evicted) = self.deliveries_evicted {
            row(
                "delivery log",
                if evicted > 0 {
                    format!("{evicted} finished deliveries evicted (the log was full)")
                } else {
                    "none evicted (the log never filled)".to_owned()
                },
            );
        }
        if let Some(caution) = self.short_run_caution() {
            row("caution", caution);
        }
        row(
            "disk writes per delivery",
            format!(
                "{} B asked by the process; {} B to the device{}",
                opt(self.disk_write_bytes_per_delivery, 0),
                opt(self.device_write_bytes_per_delivery, 0),
                self.device
                    .as_ref()
                    .map_or_else(String::new, |d| format!(" ({d}, every process)"))
            ),
        );
        let r = &self.retries;
        let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        row(
            "attempts ok / retryable / final",
            format!(
                "{} / {} / {} (retries sent {}, pending {}; deliveries pending {}, failed {}, exhausted {})",
                n(r.attempts_succeeded),
                n(r.attempts_retryable),
                n(r.attempts_final),
                n(r.retries_sent),
                n(r.retries_pending),
                n(r.deliveries_pending),
                n(r.deliveries_failed),
                n(r.deliveries_exhausted)
            ),
        );
        row(
            "sink statuses",
            self.statuses
                .iter()
                .map(|(s, n)| format!("{s}:{n}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        t
    }
}

impl RawReport {
    /// The raw run's table.
    pub fn table(&self) -> String {
        format!(
            "  {:<32} {} requests over {} connections to {} origins ({} B bodies{}) in {:.2} s: {:.0}/s\n  {:<32} {} {} {} {}\n  {:<32} {} (sink {})\n{}",
            "raw ceiling",
            self.requests,
            self.connections,
            self.origins,
            self.body_bytes,
            if self.tls { ", TLS" } else { "" },
            self.elapsed_s,
            self.raw_per_s,
            "latency µs (p50 p99 p99.9 max)",
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.p999_us,
            self.latency.max_us,
            "CPU µs per request",
            opt(self.cpu_us_per_request, 1),
            opt(self.sink_cpu_us_per_request, 1),
            self.host_cpu.map_or_else(String::new, |host| {
                let caution = host
                    .caution()
                    .map_or_else(String::new, |c| format!("  {:<32} {c}\n", "caution"));
                format!("  {:<32} {}\n{caution}", "host CPU", host.text())
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    #[test]
    fn the_rate_after_the_publishing_counts_from_the_first_sample_after_it() {
        let at = |t_s: f64, delivered: u64| Sample {
            t_s,
            delivered,
            ..Sample::default()
        };
        let timeline = [at(0.25, 100), at(0.5, 250), at(0.75, 400), at(1.0, 1_000)];
        // Published for 0.6 s: counted from the sample at 0.75 s (400 delivered) to the
        // last delivery at 1.75 s (2,400 delivered): 2,000 in 1 s.
        assert_eq!(
            after_publishing_per_s(&timeline, 0.6, 1.75, 2_400),
            Some(2_000.0)
        );
        // A publishing that ends on a sample counts from that sample.
        assert_eq!(
            after_publishing_per_s(&timeline, 0.5, 1.5, 1_250),
            Some(1_000.0)
        );
        // Too short a stretch after it, or no sample after it: no figure.
        assert_eq!(after_publishing_per_s(&timeline, 0.9, 1.2, 1_100), None);
        assert_eq!(after_publishing_per_s(&timeline, 1.1, 3.0, 5_000), None);
    }

    #[test]
    fn the_worst_interval_is_the_sample_with_the_highest_own_p99() {
        let at = |t_s: f64, p99_interval_us: u64| Sample {
            t_s,
            p99_interval_us,
            ..Sample::default()
        };
        // A sample that recorded no latency (0) counts neither way.
        let timeline = [
            at(0.25, 4_000),
            at(0.5, 0),
            at(0.75, 31_000),
            at(1.0, 12_000),
        ];
        let (worst, over, of) = worst_interval(&timeline, 10_000).unwrap();
        assert_eq!((worst.t_s, worst.p99_interval_us), (0.75, 31_000));
        assert_eq!((over, of), (2, 3));
        assert!(worst_interval(&[at(0.25, 0)], 10_000).is_none());
        assert!(worst_interval(&[], 10_000).is_none());
    }

    #[test]
    fn a_run_short_of_the_steady_state_is_flagged_in_the_table() {
        let short = Report {
            checkpoints: Some(0),
            deliveries_evicted: Some(0),
            ..Report::default()
        };
        let caution = short.short_run_caution().unwrap();
        assert!(caution.contains("no checkpoint written"), "{caution}");
        let table = short.table();
        assert!(
            table.contains("none evicted (the log never filled)"),
            "{table}"
        );
        assert!(table.contains(&caution), "{table}");
        // Either one seen: the run reached the steady state's costs.
        let evicting = Report {
            deliveries_evicted: Some(5),
            ..short.clone()
        };
        assert_eq!(evicting.short_run_caution(), None);
        assert!(evicting
            .table()
            .contains("5 finished deliveries evicted (the log was full)"));
        let checkpointed = Report {
            checkpoints: Some(1),
            ..short.clone()
        };
        assert_eq!(checkpointed.short_run_caution(), None);
        // Not known (a server without the series): no warning, no row.
        let remote = Report::default();
        assert_eq!(remote.short_run_caution(), None);
        assert!(!remote.table().contains("delivery log"));
    }

    #[test]
    fn a_contended_machine_is_flagged_in_the_table() {
        let quiet = HostCpuShares {
            busy: 0.9,
            idle: 0.08,
            steal: 0.02,
            io_stalled: Some(0.01),
        };
        assert_eq!(quiet.caution(), None);
        assert!(
            quiet
                .text()
                .contains("; some task waited for I/O 1.0 % of the time"),
            "{}",
            quiet.text()
        );
        let stolen = HostCpuShares {
            steal: 0.34,
            io_stalled: None,
            ..quiet
        };
        let caution = stolen.caution().unwrap();
        assert!(caution.contains("took 34.0 % of the cores"), "{caution}");
        assert!(
            !stolen.text().contains("waited for I/O"),
            "{}",
            stolen.text()
        );
        // The journal's own syncs stall on I/O: that alone is no sign of a shared machine.
        let syncing = HostCpuShares {
            io_stalled: Some(0.25),
            ..quiet
        };
        assert_eq!(syncing.caution(), None);
    }

    #[test]
    fn the_p99_since_an_earlier_state_counts_only_what_came_after_it() {
        let mut latency = Histogram::<u64>::new(3).unwrap();
        assert_eq!(p99_of(&latency), 0);
        // A slow start...
        latency.record_n(80_000, 1_000).unwrap();
        let before = latency.clone();
        // ...then a fast span.
        latency.record_n(2_000, 1_000).unwrap();
        let whole = p99_of(&latency);
        let since = p99_since(&latency, Some(&before));
        assert!(
            whole >= 79_000,
            "the whole run's p99 is the slow start's: {whole}"
        );
        assert!(
            (1_990..=2_010).contains(&since),
            "the fast span alone: {since}"
        );
        assert_eq!(p99_since(&latency, None), whole);
        // Nothing new since: no p99 to report.
        assert_eq!(p99_since(&latency, Some(&latency.clone())), 0);
    }
}
