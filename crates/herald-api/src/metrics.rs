//! `GET /metrics`: Prometheus text exposition, through `prometheus-client`.
//!
//! The API's own counters live here; the engine's figures are read from
//! [`herald::Herald::stats_async`] at scrape time and exposed as constant metrics, so
//! the engine keeps its counters where they are cheap (per shard, no atomics). The
//! process's own CPU, memory and disk writes ([`ProcessFigures`], from `/proc/self` on
//! Linux) are read at scrape time too, under the conventional `process_*` names, so that
//! a capacity benchmark driving this server from outside (`herald bench --target`) can
//! charge the server's cost to each delivery.

use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// Labels of `herald_api_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (`/v1/webhooks/{id}`), never the raw path: ids would make the
    /// label set unbounded.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of `herald_inbound_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboundLabels {
    /// A configured source name, or `unknown` (bounded: names come from the config).
    pub source: String,
    /// `accepted`, `duplicate`, `ignored` (unmapped type) or `rejected`.
    pub result: &'static str,
}

/// The API's own metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    inbound: Family<InboundLabels, Counter>,
    /// Requests whose bytes did not arrive in time.
    pub request_timeouts: Counter,
    /// Open `GET /v1/ws` streams.
    pub ws_clients: Gauge,
    /// Messages (events) written to stream clients.
    pub ws_messages_sent: Counter,
    /// Stream clients closed because their send queue filled.
    pub ws_slow_consumer_closes: Counter,
    request_seconds: Histogram,
    /// Serialises scrapes (the registry is built per scrape).
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            inbound: Family::default(),
            request_timeouts: Counter::default(),
            ws_clients: Gauge::default(),
            ws_messages_sent: Counter::default(),
            ws_slow_consumer_closes: Counter::default(),
            request_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ]),
            scrape: Mutex::new(()),
        }
    }
}

/// A histogram whose buckets were counted elsewhere (non-cumulative counts per upper
/// bound in seconds; the last bound is `f64::MAX` for `+Inf`).
#[derive(Debug)]
struct BucketHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl TypedMetric for BucketHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BucketHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Labels of the engine's labelled counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Labels of the journal's commits by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Engine figures summed over shards.
#[derive(Debug)]
pub struct EngineFigures {
    /// Shards answering.
    pub shards: usize,
    /// Webhooks.
    pub webhooks: u64,
    /// Pending deliveries (waiting for an attempt or a retry, or in flight).
    pub pending: u64,
    /// Of those, waiting for a retry.
    pub retries_pending: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Deliveries waiting for their event to become durable.
    pub awaiting_durable: u64,
    /// Outbound connections open.
    pub connections_open: u64,
    /// Outbound connections opened.
    pub connections_opened: u64,
    /// Outbound requests on a reused connection.
    pub connections_reused: u64,
    /// Journal bytes appended.
    pub journal_bytes: u64,
    /// Journal records over the journals' lives (each shard's last sequence number).
    pub journal_records: u64,
    /// Shard turns whose records were committed to be synced within the group delay
    /// (something waited for them), and lazily (attempt outcomes alone).
    pub journal_commits: (u64, u64),
    /// Journal sync latency, microseconds.
    pub journal_sync_us: herald::Histogram,
    /// Checkpoints the shards completed since they started.
    pub checkpoints: u64,
    /// Shards writing a checkpoint between their turns now.
    pub checkpoints_underway: u64,
    /// Deliveries those checkpoints keep a copy of (changed since they began).
    pub checkpoint_copies: u64,
    /// Shard-thread CPU time spent writing checkpoints since start, microseconds.
    pub checkpoint_cpu_us: u64,
    /// Journal bytes of the checkpoints written since start.
    pub checkpoint_bytes: u64,
    /// Webhooks disabled or deleted whose pending deliveries are still being ended.
    pub endings_underway: u64,
    /// The dispatchers' counters, merged.
    pub counters: herald::Counters,
}

impl EngineFigures {
    /// Sums the shards' stats.
    pub fn from_stats(stats: &[herald::ShardStats]) -> EngineFigures {
        let mut figures = EngineFigures {
            shards: stats.len(),
            webhooks: 0,
            pending: 0,
            retries_pending: 0,
            in_flight: 0,
            awaiting_durable: 0,
            connections_open: 0,
            connections_opened: 0,
            connections_reused: 0,
            journal_bytes: 0,
            journal_records: 0,
            journal_commits: (0, 0),
            journal_sync_us: herald::ShardStats::default().journal_sync_us,
            checkpoints: 0,
            checkpoints_underway: 0,
            checkpoint_copies: 0,
            checkpoint_cpu_us: 0,
            checkpoint_bytes: 0,
            endings_underway: 0,
            counters: herald::Counters::default(),
        };
        for shard in stats {
            let d = &shard.dispatcher;
            figures.webhooks += d.webhooks as u64;
            figures.pending += d.pending_deliveries as u64;
            figures.retries_pending += d.retries_pending as u64;
            figures.in_flight += shard.sends_in_flight as u64;
            figures.awaiting_durable += d.awaiting_durable as u64;
            figures.connections_open += shard.connections_open as u64;
            figures.connections_opened += shard.client.connections_opened;
            figures.connections_reused += shard.client.connections_reused;
            figures.journal_bytes += shard.journal_bytes_appended;
            figures.journal_records += shard.journal_last_seq;
            figures.journal_commits.0 += shard.journal_commits_urgent;
            figures.journal_commits.1 += shard.journal_commits_lazy;
            figures.journal_sync_us.merge(&shard.journal_sync_us);
            figures.checkpoints += shard.checkpoints_written;
            figures.checkpoints_underway += u64::from(shard.checkpoint_underway);
            figures.checkpoint_copies += shard.checkpoint_copies;
            figures.checkpoint_cpu_us += shard.checkpoint_cpu_us_total;
            figures.checkpoint_bytes += shard.checkpoint_bytes_total;
            figures.endings_underway += shard.endings_underway;
            figures.counters.merge(&shard.counters);
        }
        figures
    }
}

/// Clock ticks per second of `/proc/self/stat` times (`USER_HZ`: 100 on every Linux ABI
/// the kernel builds for; `sysconf(_SC_CLK_TCK)` would need `unsafe` or a libc binding).
const USER_HZ: f64 = 100.0;

/// This process's cost so far, read from `/proc/self` (Linux). A figure `/proc` does
/// not give is `None` and left out of the exposition rather than shown as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    /// User + system CPU time, seconds (`/proc/self/stat` utime + stime).
    pub cpu_seconds: Option<f64>,
    /// Resident set size now, bytes (`VmRSS`).
    pub resident_bytes: Option<u64>,
    /// Peak resident set size since start, bytes (`VmHWM`).
    pub resident_peak_bytes: Option<u64>,
    /// Bytes this process caused to be sent to the storage layer (`/proc/self/io`
    /// `write_bytes`: page-cache writeback and direct IO charged to it).
    pub disk_write_bytes: Option<u64>,
}

impl ProcessFigures {
    /// Reads `/proc/self` now.
    pub fn read() -> ProcessFigures {
        let read = |name: &str| std::fs::read_to_string(format!("/proc/self/{name}")).ok();
        let status = read("status");
        let status_bytes = |key: &str| -> Option<u64> {
            let line = status.as_deref()?.lines().find(|l| l.starts_with(key))?;
            let kib: u64 = line[key.len()..]
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kib * 1024)
        };
        ProcessFigures {
            cpu_seconds: read("stat").as_deref().and_then(stat_cpu_seconds),
            resident_bytes: status_bytes("VmRSS"),
            resident_peak_bytes: status_bytes("VmHWM"),
            disk_write_bytes: read("io").as_deref().and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("write_bytes:"))?
                    .trim()
                    .parse()
                    .ok()
            }),
        }
    }
}

/// utime + stime of a `stat` line, seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// A histogram of `unit_per_second` units as Prometheus seconds buckets.
fn seconds_histogram(histogram: &herald::Histogram, units_per_second: f64) -> BucketHistogram {
    let mut buckets: Vec<(f64, u64)> = histogram
        .bounds
        .iter()
        .zip(histogram.counts.iter())
        .map(|(&bound, &count)| (bound as f64 / units_per_second, count))
        .collect();
    let counted: u64 = histogram.counts.iter().sum();
    buckets.push((f64::MAX, histogram.count.saturating_sub(counted)));
    BucketHistogram {
        sum: histogram.sum as f64 / units_per_second,
        count: histogram.count,
        buckets,
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe_request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// Counts one inbound webhook by source and result.
    pub fn observe_inbound(&self, source: &str, result: &'static str) {
        self.inbound
            .get_or_create(&InboundLabels {
                source: source.to_string(),
                result,
            })
            .inc();
    }

    /// Records how long a request took to answer.
    pub fn observe_latency(&self, seconds: f64) {
        self.request_seconds.observe(seconds);
    }

    /// The exposition text: the API's metrics, the engine's figures, the open API
    /// connections and the process's own figures.
    pub fn render(
        &self,
        engine: &EngineFigures,
        process: &ProcessFigures,
        api_connections: usize,
    ) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let mut registry = Registry::with_prefix("herald");
        registry.register(
            "api_requests",
            "API requests answered, by route pattern and status",
            self.requests.clone(),
        );
        registry.register(
            "inbound_requests",
            "Inbound provider webhooks, by source and result",
            self.inbound.clone(),
        );
        registry.register(
            "api_request_timeouts",
            "API requests that did not arrive within limits.header_read_timeout_ms",
            self.request_timeouts.clone(),
        );
        registry.register(
            "ws_clients",
            "Open WebSocket stream connections (GET /v1/ws)",
            self.ws_clients.clone(),
        );
        registry.register(
            "ws_messages_sent",
            "Events written to WebSocket stream clients",
            self.ws_messages_sent.clone(),
        );
        registry.register(
            "ws_slow_consumer_closes",
            "WebSocket stream clients closed because their send queue (ws.send_queue_max) filled",
            self.ws_slow_consumer_closes.clone(),
        );
        registry.register_with_unit(
            "api_request_duration",
            "Time from a complete API request to its answer",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        registry.register(
            "api_open_connections",
            "Open API connections",
            ConstGauge::new(gauge(api_connections as u64)),
        );
        registry.register(
            "shards",
            "Shards answering",
            ConstGauge::new(gauge(engine.shards as u64)),
        );
        registry.register(
            "webhooks",
            "Webhooks, all tenants",
            ConstGauge::new(gauge(engine.webhooks)),
        );
        let c = &engine.counters;
        registry.register(
            "events_accepted",
            "Events accepted (durable) since start, duplicates excluded",
            ConstCounter::new(c.events_accepted),
        );
        registry.register(
            "events_duplicate",
            "Publishes answered as repeats of an earlier event (idempotency key)",
            ConstCounter::new(c.events_duplicate),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        for (outcome, value) in [
            ("success", c.deliveries_succeeded),
            ("failed", c.deliveries_failed),
            ("exhausted", c.deliveries_exhausted),
            ("webhook_disabled", c.deliveries_webhook_disabled),
            ("webhook_deleted", c.deliveries_webhook_deleted),
            ("no_live_secret", c.deliveries_no_live_secret),
        ] {
            deliveries
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(value);
        }
        registry.register(
            "deliveries",
            "Deliveries ended since start, by outcome",
            deliveries,
        );
        registry.register(
            "deliveries_evicted",
            "Finished deliveries dropped from the delivery log for its limits since start (none until the log is full)",
            ConstCounter::new(c.deliveries_evicted),
        );
        let attempts = Family::<OutcomeLabels, Counter>::default();
        for (outcome, value) in [
            ("success", c.attempts_succeeded),
            ("retryable", c.attempts_retryable),
            ("final", c.attempts_final),
        ] {
            attempts
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(value);
        }
        registry.register(
            "attempts",
            "Delivery attempts since start, by outcome class",
            attempts,
        );
        registry.register_with_unit(
            "attempt_duration",
            "Delivery attempt latency, send to outcome",
            Unit::Seconds,
            seconds_histogram(&c.attempt_latency_ms, 1e3),
        );
        registry.register(
            "pending_deliveries",
            "Deliveries not yet ended (waiting, retrying or in flight)",
            ConstGauge::new(gauge(engine.pending)),
        );
        registry.register(
            "pending_retries",
            "Deliveries waiting for a retry",
            ConstGauge::new(gauge(engine.retries_pending)),
        );
        registry.register(
            "in_flight_requests",
            "Outbound webhook requests in flight",
            ConstGauge::new(gauge(engine.in_flight)),
        );
        registry.register(
            "awaiting_durable_deliveries",
            "Deliveries whose event is not yet durable",
            ConstGauge::new(gauge(engine.awaiting_durable)),
        );
        registry.register(
            "outbound_connections_open",
            "Outbound connections open (idle included)",
            ConstGauge::new(gauge(engine.connections_open)),
        );
        registry.register(
            "outbound_connections_opened",
            "Outbound connections opened",
            ConstCounter::new(engine.connections_opened),
        );
        registry.register(
            "outbound_connections_reused",
            "Outbound requests sent on a kept-alive connection",
            ConstCounter::new(engine.connections_reused),
        );
        registry.register_with_unit(
            "journal_appended",
            "Journal bytes appended since start (frames, checkpoints included)",
            Unit::Bytes,
            ConstCounter::new(engine.journal_bytes),
        );
        registry.register(
            "journal_records",
            "Journal records appended over the journals' lives (each shard's last sequence number)",
            ConstCounter::new(engine.journal_records),
        );
        let commits = Family::<KindLabels, Counter>::default();
        for (kind, value) in [
            ("urgent", engine.journal_commits.0),
            ("lazy", engine.journal_commits.1),
        ] {
            commits.get_or_create(&KindLabels { kind }).inc_by(value);
        }
        registry.register(
            "journal_commits",
            "Shard turns whose records were committed to the journal since start: urgent (a reply or a delivery waited for a record: synced within the group delay) or lazy (attempt outcomes alone: synced within the lazy delay)",
            commits,
        );
        registry.register(
            "checkpoints",
            "Checkpoints the shards completed since they started",
            ConstCounter::new(engine.checkpoints),
        );
        registry.register(
            "checkpoints_underway",
            "Shards writing a checkpoint a few parts per turn now",
            ConstGauge::new(gauge(engine.checkpoints_underway)),
        );
        registry.register(
            "checkpoint_copies",
            "Deliveries the checkpoints underway keep a copy of (changed since they began)",
            ConstGauge::new(gauge(engine.checkpoint_copies)),
        );
        registry.register_with_unit(
            "checkpoint_cpu",
            "CPU time the shards' threads spent writing checkpoints since start (abandoned ones included; each copies every pending event's body)",
            Unit::Seconds,
            ConstCounter::new(engine.checkpoint_cpu_us as f64 / 1e6),
        );
        registry.register_with_unit(
            "checkpoint_written",
            "Journal bytes of the checkpoints written since start (abandoned ones included; part of herald_journal_appended_bytes_total)",
            Unit::Bytes,
            ConstCounter::new(engine.checkpoint_bytes),
        );
        registry.register(
            "webhook_endings_underway",
            "Webhooks disabled or deleted whose pending deliveries are still being ended, a bounded number per shard turn (they count as pending until then)",
            ConstGauge::new(gauge(engine.endings_underway)),
        );
        if let Some(bytes) = process.resident_peak_bytes {
            registry.register_with_unit(
                "process_resident_memory_peak",
                "Peak resident memory since the process started (VmHWM)",
                Unit::Bytes,
                ConstGauge::new(gauge(bytes)),
            );
        }
        if let Some(bytes) = process.disk_write_bytes {
            registry.register_with_unit(
                "process_disk_write",
                "Bytes the process caused to be written to storage (/proc/self/io write_bytes)",
                Unit::Bytes,
                ConstCounter::new(bytes),
            );
        }
        registry.register_with_unit(
            "journal_sync_duration",
            "Journal sync (fdatasync) latency",
            Unit::Seconds,
            seconds_histogram(&engine.journal_sync_us, 1e6),
        );
        // The conventional process metrics, without the herald_ prefix.
        let mut process_registry = Registry::default();
        if let Some(seconds) = process.cpu_seconds {
            process_registry.register_with_unit(
                "process_cpu",
                "Total user and system CPU time spent",
                Unit::Seconds,
                ConstCounter::new(seconds),
            );
        }
        if let Some(bytes) = process.resident_bytes {
            process_registry.register_with_unit(
                "process_resident_memory",
                "Resident memory size",
                Unit::Bytes,
                ConstGauge::new(gauge(bytes)),
            );
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode_registry(&mut text, &registry)
            .and_then(|()| {
                prometheus_client::encoding::text::encode_registry(&mut text, &process_registry)
            })
            .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut text))
            .expect("encoding to a String succeeds");
        text
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_sums_shards_and_names_every_family() {
        let mut shard = herald::ShardStats::default();
        shard.counters.events_accepted = 5;
        shard.counters.deliveries_succeeded = 3;
        shard.counters.attempts_retryable = 2;
        shard.counters.deliveries_evicted = 4;
        shard.counters.attempt_latency_ms.observe(3);
        shard.counters.attempt_latency_ms.observe(40);
        shard.counters.attempt_latency_ms.observe(1_000_000);
        shard.journal_bytes_appended = 4096;
        shard.journal_sync_us.observe(700);
        shard.journal_commits_urgent = 9;
        shard.journal_commits_lazy = 4;
        shard.sends_in_flight = 1;
        shard.journal_last_seq = 40;
        shard.checkpoints_written = 3;
        shard.checkpoint_underway = true;
        shard.checkpoint_copies = 11;
        shard.checkpoint_cpu_us_total = 250_000;
        shard.checkpoint_bytes_total = 1024;
        shard.endings_underway = 1;
        let figures = EngineFigures::from_stats(&[shard, shard]);
        let metrics = Metrics::default();
        metrics.observe_request("/v1/events", 202);
        let process = ProcessFigures {
            cpu_seconds: Some(1.5),
            resident_bytes: Some(4096),
            resident_peak_bytes: Some(8192),
            disk_write_bytes: Some(512),
        };
        let text = metrics.render(&figures, &process, 7);
        for line in [
            "herald_events_accepted_total 10",
            "herald_deliveries_total{outcome=\"success\"} 6",
            "herald_attempts_total{outcome=\"retryable\"} 4",
            "herald_deliveries_evicted_total 8",
            "herald_attempt_duration_seconds_count 6",
            "herald_attempt_duration_seconds_bucket{le=\"0.005\"} 2",
            "herald_attempt_duration_seconds_bucket{le=\"+Inf\"} 6",
            "herald_journal_appended_bytes_total 8192",
            "herald_journal_sync_duration_seconds_count 2",
            "herald_journal_commits_total{kind=\"urgent\"} 18",
            "herald_journal_commits_total{kind=\"lazy\"} 8",
            "herald_in_flight_requests 2",
            "herald_api_open_connections 7",
            "herald_shards 2",
            "herald_journal_records_total 80",
            "herald_checkpoints_total 6",
            "herald_checkpoints_underway 2",
            "herald_checkpoint_copies 22",
            "herald_checkpoint_cpu_seconds_total 0.5",
            "herald_checkpoint_written_bytes_total 2048",
            "herald_webhook_endings_underway 2",
            "herald_api_requests_total{route=\"/v1/events\",status=\"202\"} 1",
            "process_cpu_seconds_total 1.5",
            "process_resident_memory_bytes 4096",
            "herald_process_resident_memory_peak_bytes 8192",
            "herald_process_disk_write_bytes_total 512",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu_seconds(line), Some(3.0));
        assert_eq!(stat_cpu_seconds("garbage"), None);
    }

    #[test]
    fn absent_process_figures_are_left_out() {
        let text = Metrics::default().render(
            &EngineFigures::from_stats(&[]),
            &ProcessFigures::default(),
            0,
        );
        assert!(!text.contains("process_"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        if std::path::Path::new("/proc/self/stat").exists() {
            let read = ProcessFigures::read();
            assert!(read.cpu_seconds.is_some() && read.resident_bytes.unwrap() > 0);
        }
    }
}
