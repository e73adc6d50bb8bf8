//! `GET /metrics`: Prometheus text exposition, through `prometheus-client`.
//!
//! The API's own counters live here; the engine's figures are read from
//! [`herald::Herald::stats_async`] at scrape time and exposed as constant metrics, so
//! the engine keeps its counters where they are cheap (per shard, no atomics).

use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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

/// The API's own metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    /// Requests whose bytes did not arrive in time.
    pub request_timeouts: Counter,
    request_seconds: Histogram,
    /// Serialises scrapes (the registry is built per scrape).
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            request_timeouts: Counter::default(),
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

/// Engine figures summed over shards.
#[derive(Debug, Default)]
pub struct EngineFigures {
    /// Shards answering.
    pub shards: usize,
    /// Webhooks.
    pub webhooks: u64,
    /// Pending deliveries (waiting for an attempt or a retry).
    pub pending: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Deliveries waiting for their event to become durable.
    pub awaiting_durable: u64,
    /// Outbound connections opened.
    pub connections_opened: u64,
    /// Outbound requests on a reused connection.
    pub connections_reused: u64,
    /// Journal records appended / durable (sequence numbers).
    pub journal_records_appended: u64,
    /// Journal records durable.
    pub journal_records_durable: u64,
}

impl EngineFigures {
    /// Sums the shards' stats.
    pub fn from_stats(stats: &[herald::ShardStats]) -> EngineFigures {
        let mut figures = EngineFigures {
            shards: stats.len(),
            ..EngineFigures::default()
        };
        for shard in stats {
            let d = &shard.dispatcher;
            figures.webhooks += d.webhooks as u64;
            figures.pending += d.pending_deliveries as u64;
            figures.in_flight += shard.sends_in_flight as u64;
            figures.awaiting_durable += d.awaiting_durable as u64;
            figures.connections_opened += shard.client.connections_opened;
            figures.connections_reused += shard.client.connections_reused;
            figures.journal_records_appended += shard.journal_last_seq;
            figures.journal_records_durable += shard.journal_durable_seq;
        }
        figures
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

    /// Records how long a request took to answer.
    pub fn observe_latency(&self, seconds: f64) {
        self.request_seconds.observe(seconds);
    }

    /// The exposition text: the API's metrics, the engine's figures and the open API
    /// connections.
    pub fn render(&self, engine: &EngineFigures, api_connections: usize) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let mut registry = Registry::with_prefix("herald");
        registry.register(
            "api_requests",
            "API requests answered, by route pattern and status",
            self.requests.clone(),
        );
        registry.register(
            "api_request_timeouts",
            "API requests that did not arrive within limits.header_read_timeout_ms",
            self.request_timeouts.clone(),
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
        registry.register(
            "pending_deliveries",
            "Deliveries waiting for an attempt or a retry",
            ConstGauge::new(gauge(engine.pending)),
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
            "outbound_connections_opened",
            "Outbound connections opened",
            ConstCounter::new(engine.connections_opened),
        );
        registry.register(
            "outbound_connections_reused",
            "Outbound requests sent on a kept-alive connection",
            ConstCounter::new(engine.connections_reused),
        );
        registry.register(
            "journal_records_appended",
            "Journal records appended",
            ConstCounter::new(engine.journal_records_appended),
        );
        registry.register(
            "journal_records_durable",
            "Journal records made durable",
            ConstCounter::new(engine.journal_records_durable),
        );
        let _ = BucketHistogram {
            sum: 0.0,
            count: 0,
            buckets: Vec::new(),
        };
        let mut text = String::new();
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("encoding to a String succeeds");
        text
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
