//! The knobs of a run: one struct that is both the command line (`clap`) and a scenario
//! file (TOML, unknown keys refused), merged with flags on top, then resolved into a
//! checked [`Plan`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use herald::{EventType, Scheme};
use serde::{Deserialize, Deserializer};

use crate::BenchError;

/// Most tenants in one run (each is a registry entry and, remotely, an API call).
pub const TENANTS_MAX: usize = 100_000;
/// Most webhooks per tenant (the engine's own per-tenant limit is higher; a fan-out past
/// this is not a capacity question any platform asked).
pub const WEBHOOKS_PER_TENANT_MAX: usize = 1_000;
/// Most events in one run: the journal grows by about the payload per event.
pub const EVENTS_MAX: u64 = 100_000_000;
/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Highest open-loop rate, events/s.
pub const RATE_MAX: f64 = 10_000_000.0;
/// Largest event payload (the engine's envelope limit is 256 KiB).
pub const PAYLOAD_BYTES_MAX: usize = 200 * 1024;
/// Most publisher threads (each holds a window of receipts or one API connection).
pub const PUBLISHERS_MAX: usize = 256;
/// Most events one publisher keeps outstanding (published, not yet durable).
pub const WINDOW_MAX: usize = 65_536;
/// Largest REST batch (the API's own limit).
pub const BATCH_MAX: usize = 1_000;
/// Most entries in an event mix.
pub const EVENT_MIX_MAX: usize = 64;
/// Most retry delays in a schedule (the engine's own limit is 24).
pub const RETRY_SCHEDULE_MAX: usize = 24;

/// Shortest flap period: each half must outlast the sink's own reaction to a change of
/// model (immediate) by far, and a flapping receiver is an outage pattern, not noise.
pub const FLAP_PERIOD_MIN: Duration = Duration::from_millis(200);
/// Shortest up or down part of a flap period (half the shortest period, for the same
/// reason).
pub const FLAP_PHASE_MIN: Duration = Duration::from_millis(100);

/// Most sink listeners (origins) in one run: herald-sink's own limit.
pub const ORIGINS_MAX: usize = herald_sink::LISTENERS_MAX;
/// Default origins, at most: the engine caps connections per origin and shard (32), so
/// one origin would cap a run at 32 connections per shard where a platform's receivers
/// are spread over many hosts; 8 lift that cap past what a loopback sink can take on a
/// small machine while keeping the raw ceiling's connection count modest.
pub const ORIGINS_DEFAULT_MAX: usize = 8;

/// Smallest event payload: the latency and sequence members need this much.
pub const PAYLOAD_BYTES_MIN: usize = 64;

/// Every knob of `herald bench run`, as flags and as scenario-file keys (the same names
/// in snake case). Unset knobs take the scenario file's value, then the default.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Scenario file (TOML) with any of these knobs; flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub scenario: Option<PathBuf>,
    /// A name for the scenario (file only), printed and kept in the JSON.
    #[arg(skip)]
    #[serde(default)]
    pub name: Option<String>,
    /// Free text (file only).
    #[arg(skip)]
    #[serde(default)]
    pub description: Option<String>,

    /// Tenants; events are spread evenly over them [default: 16].
    #[arg(long)]
    #[serde(default)]
    pub tenants: Option<usize>,
    /// Webhooks per tenant, each subscribed to every event: the fan-out [default: 1].
    #[arg(long, visible_alias = "fanout", value_name = "F")]
    #[serde(default, alias = "fanout")]
    pub webhooks_per_tenant: Option<usize>,
    /// Events to publish [default: 200000, unless --duration].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub events: Option<u64>,
    /// Publish for this long instead of a count (e.g. 10s, 2min).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, deserialize_with = "de_duration")]
    pub duration: Option<Duration>,
    /// Open loop: publish at this many events/s on a fixed schedule, latency counted from
    /// each event's scheduled time [default: closed loop, as fast as it goes].
    #[arg(long, value_name = "EVENTS_PER_S")]
    #[serde(default)]
    pub rate: Option<f64>,
    /// Bytes of each event's data (JSON) [default: 256].
    #[arg(long, value_name = "BYTES")]
    #[serde(default)]
    pub payload_bytes: Option<usize>,
    /// Event types and weights, e.g. order.created:40,payment.processed:20
    /// [default: order.created].
    #[arg(long, value_name = "TYPE:WEIGHT,…")]
    #[serde(default)]
    pub event_mix: Option<String>,
    /// Signature scheme of every webhook: standard, ed25519, stripe or olo
    /// [default: standard].
    #[arg(long)]
    #[serde(default)]
    pub scheme: Option<String>,
    /// Deliver over TLS: embedded, the sink's generated CA is trusted by the engine;
    /// remote, the sink serves --sink-cert [default: on when --sink-cert is given].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    pub tls: Option<bool>,
    /// Engine shards [default: one per core].
    #[arg(long)]
    #[serde(default)]
    pub shards: Option<usize>,
    /// Shard threads under Linux's SCHED_BATCH policy (a woken shard does not preempt
    /// the running thread) [default: the engine's, on].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    pub batch_scheduling: Option<bool>,
    /// Shard threads pinned to CPUs: auto (pinned when there are more CPUs than
    /// shards), always or never [default: the engine's, auto].
    #[arg(long, value_name = "auto|always|never")]
    #[serde(default)]
    pub pinning: Option<String>,
    /// Responses awaited on each shard's own io_uring, which never interrupts a running
    /// shard [default: the engine's, on].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    pub socket_ring: Option<bool>,
    /// Journal group commit: most records per sync [default: the engine's].
    #[arg(long, value_name = "RECORDS")]
    #[serde(default)]
    pub group_records: Option<usize>,
    /// Journal group commit: least time between the starts of two syncs, µs [default: the engine's].
    #[arg(long, value_name = "US")]
    #[serde(default)]
    pub group_delay_us: Option<u64>,
    /// Journal group commit for records nobody waits for (attempt outcomes while no
    /// publish or delivery waits), µs [default: the engine's].
    #[arg(long, value_name = "US")]
    #[serde(default)]
    pub lazy_delay_us: Option<u64>,
    /// Retry delays in ms (comma-separated), so that retries happen within the run
    /// [default: the engine's schedule, minutes to hours].
    #[arg(long, value_delimiter = ',', value_name = "MS,…")]
    #[serde(default)]
    pub retry_schedule_ms: Option<Vec<u64>>,

    /// Receiver latency: MS, or MEDIAN_MS,p99=MS (e.g. 5,p99=50).
    #[arg(long, value_name = "MODEL")]
    #[serde(default)]
    pub latency_ms: Option<String>,
    /// Receiver answers, STATUS:WEIGHT,… (e.g. 200:97,500:2,429:1).
    #[arg(long, value_name = "MIX")]
    #[serde(default)]
    pub status_mix: Option<String>,
    /// Retry-After seconds sent with 429 and 503 answers.
    #[arg(long, visible_alias = "retry-after", value_name = "SECS")]
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    /// Seed of the receiver's draws and of the choice of failing endpoints [default: 1].
    #[arg(long)]
    #[serde(default)]
    pub seed: Option<u64>,
    /// Share of endpoints that always fail, in percent (0..=100).
    #[arg(long, value_name = "PERCENT")]
    #[serde(default)]
    pub failing_endpoints_percent: Option<f64>,
    /// Status those endpoints answer [default: 500].
    #[arg(long, value_name = "STATUS")]
    #[serde(default)]
    pub failing_status: Option<u16>,
    /// Share of endpoints that answer slowly, in percent (0..=100).
    #[arg(long, value_name = "PERCENT")]
    #[serde(default)]
    pub slow_endpoints_percent: Option<f64>,
    /// How slowly those endpoints answer, ms [default: 1000].
    #[arg(long, value_name = "MS")]
    #[serde(default)]
    pub slow_ms: Option<u64>,
    /// Receivers flap: at the end of every period (its second half, or the last
    /// `--flap-down`) each endpoint the failing and slow scripts leave alone answers 503
    /// (down), then its model again (up); publishing ends on a healthy receiver (e.g.
    /// 20s).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, deserialize_with = "de_duration")]
    pub flap_period: Option<Duration>,
    /// How long each outage of a flapping receiver lasts, within `--flap-period`; each
    /// period is up for the rest (e.g. 5s with a 60s period: available 92 % of the
    /// time) [default: half the period].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, deserialize_with = "de_duration")]
    pub flap_down: Option<Duration>,
    /// Sink listeners (ports), each an origin the engine pools connections for
    /// separately; endpoints are spread over them round-robin, and the raw ceiling uses
    /// the same ports [default: one per endpoint, at most 8].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub origins: Option<usize>,
    /// Event-loop threads of the sink [default: 1].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub sink_threads: Option<usize>,
    /// Verify every signature at the sink (costs sink CPU).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    pub verify: Option<bool>,

    /// Publisher threads (remote: one API connection each) [default: 2].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub publishers: Option<usize>,
    /// Events each publisher keeps outstanding (embedded), published and not yet durable
    /// [default: 2048].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub window: Option<usize>,
    /// Events per hand-off, all of one tenant: embedded, one `publish_batch` (at most
    /// --window); remote, one REST request (1 uses POST /v1/events, more
    /// POST /v1/events/batch). In an open loop a batch goes when its last event is due,
    /// and its events' latency includes the wait [default: 1].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub batch: Option<usize>,
    /// Also measure the raw ceiling of the same sink and report the ratio (a closed
    /// loop of --events N: before and after the engine's run, their mean)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    pub compare_raw: Option<bool>,
    /// Give up waiting for deliveries this long after publishing ends [default: 300s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, deserialize_with = "de_duration")]
    pub drain_timeout: Option<Duration>,

    /// Drive a running `herald serve` at this URL instead of an embedded engine.
    #[arg(long, value_name = "URL")]
    #[serde(default)]
    pub target: Option<String>,
    /// PEM file of the CA (or certificate) to trust for an https target, besides the
    /// system's roots.
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The sink's TLS certificate chain (PEM), for --tls against a remote server: it must
    /// be issued by a CA the server trusts (`[egress] extra_ca_pems`) for the sink's
    /// address.
    #[arg(long, value_name = "FILE", requires = "sink_key")]
    #[serde(default)]
    pub sink_cert: Option<PathBuf>,
    /// The private key (PEM) of --sink-cert.
    #[arg(long, value_name = "FILE", requires = "sink_cert")]
    #[serde(default)]
    pub sink_key: Option<PathBuf>,
    /// The server's admin key (remote mode) [default: $HERALD_ADMIN_KEY].
    #[arg(long, value_name = "KEY")]
    #[serde(skip)]
    pub api_key: Option<String>,
    /// Address of the sink [default: 127.0.0.1:0].
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    pub sink_listen: Option<SocketAddr>,
    /// Journal directory of the embedded engine [default: a temporary directory,
    /// removed at the end].
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// The flap period and its down part, checked: the period within
/// [`FLAP_PERIOD_MIN`]`..=`[`DURATION_MAX`], each part at least [`FLAP_PHASE_MIN`]; the
/// down part is half the period unless given, and needs a period.
fn flapping(
    period: Option<Duration>,
    down: Option<Duration>,
) -> Result<(Option<Duration>, Option<Duration>), BenchError> {
    let Some(period) = period else {
        return match down {
            Some(_) => Err(config(
                "flap_down needs flap_period (the cycle it is part of)".to_string(),
            )),
            None => Ok((None, None)),
        };
    };
    if !(FLAP_PERIOD_MIN..=DURATION_MAX).contains(&period) {
        return Err(config(format!(
            "flap_period must be {FLAP_PERIOD_MIN:?}..={DURATION_MAX:?}, got {period:?}"
        )));
    }
    let down = down.unwrap_or(period / 2);
    if down < FLAP_PHASE_MIN || period.saturating_sub(down) < FLAP_PHASE_MIN {
        return Err(config(format!(
            "flap_down must leave at least {FLAP_PHASE_MIN:?} down and {FLAP_PHASE_MIN:?} up \
             in each {period:?} flap_period, got {down:?}"
        )));
    }
    Ok((Some(period), Some(down)))
}

impl Knobs {
    /// Reads a scenario file: TOML with the knobs' names; unknown keys are refused.
    pub fn from_file(path: &Path) -> Result<Knobs, BenchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::Config(format!("reading {}: {e}", path.display())))?;
        Knobs::from_toml(&text).map_err(|e| match e {
            BenchError::Config(m) => BenchError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses scenario TOML.
    pub fn from_toml(text: &str) -> Result<Knobs, BenchError> {
        toml::from_str(text).map_err(|e| BenchError::Config(e.to_string()))
    }

    /// These knobs with every knob set in `over` replacing this one's.
    pub fn overlay(self, over: Knobs) -> Knobs {
        macro_rules! pick {
            ($($field:ident),* $(,)?) => {
                Knobs { $($field: over.$field.or(self.$field),)* }
            };
        }
        pick!(
            scenario,
            name,
            description,
            tenants,
            webhooks_per_tenant,
            events,
            duration,
            rate,
            payload_bytes,
            event_mix,
            scheme,
            tls,
            shards,
            batch_scheduling,
            pinning,
            socket_ring,
            group_records,
            group_delay_us,
            lazy_delay_us,
            retry_schedule_ms,
            latency_ms,
            status_mix,
            retry_after_s,
            seed,
            failing_endpoints_percent,
            failing_status,
            slow_endpoints_percent,
            slow_ms,
            flap_period,
            flap_down,
            origins,
            sink_threads,
            verify,
            publishers,
            window,
            batch,
            compare_raw,
            drain_timeout,
            target,
            ca_file,
            sink_cert,
            sink_key,
            api_key,
            sink_listen,
            data_dir,
        )
    }

    /// The scenario file named by `--scenario` (if any) with these flags on top.
    pub fn with_scenario_file(self) -> Result<Knobs, BenchError> {
        match &self.scenario {
            Some(path) => Ok(Knobs::from_file(path)?.overlay(self)),
            None => Ok(self),
        }
    }
}

/// How much to publish.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// This many events.
    Events(u64),
    /// For this long.
    Duration(Duration),
}

/// The load model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// As fast as the engine accepts, with a bounded window of unanswered publishes.
    Closed,
    /// A fixed schedule of this many events/s; latency counts from the schedule.
    Open {
        /// Events per second.
        rate: f64,
    },
}

/// The receiver's behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct Receiver {
    /// Latency model in herald-sink's syntax (`5` or `5,p99=50`).
    pub latency_ms: Option<String>,
    /// Status mix in herald-sink's syntax (`200:97,500:2,429:1`).
    pub status_mix: Option<String>,
    /// Retry-After seconds on 429/503.
    pub retry_after_s: Option<u64>,
    /// Seed of every draw.
    pub seed: u64,
    /// Percent of endpoints that always fail.
    pub failing_endpoints_percent: f64,
    /// Their status.
    pub failing_status: u16,
    /// Percent of endpoints that answer slowly.
    pub slow_endpoints_percent: f64,
    /// Their delay.
    pub slow_ms: u64,
    /// Period of the receivers' up/down cycle, if they flap.
    pub flap_period: Option<Duration>,
    /// The down part of each period (set whenever `flap_period` is).
    pub flap_down: Option<Duration>,
    /// Sink event-loop threads.
    pub threads: usize,
    /// Verify signatures.
    pub verify: bool,
}

impl Receiver {
    /// Whether every answer is a 2xx (then delivered = accepted × fan-out must hold).
    pub fn never_fails(&self) -> bool {
        let mix_all_2xx = self.status_mix.as_deref().is_none_or(|text| {
            text.parse::<herald_sink::StatusMix>().is_ok_and(|mix| {
                mix.entries()
                    .iter()
                    .all(|(status, _)| (200..300).contains(status))
            })
        });
        mix_all_2xx && self.failing_endpoints_percent == 0.0 && self.flap_period.is_none()
    }
}

/// A remote `herald serve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Base URL (`http://host:port` or `https://host:port`).
    pub url: herald::Url,
    /// Admin key.
    pub api_key: String,
    /// PEM of a CA to trust for https, besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// A checked run: every knob resolved to a value.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Scenario name, if any.
    pub name: Option<String>,
    /// Tenants.
    pub tenants: usize,
    /// Webhooks per tenant (the fan-out).
    pub webhooks_per_tenant: usize,
    /// How much to publish.
    pub amount: Amount,
    /// Load model.
    pub load: Load,
    /// Bytes of each event's data.
    pub payload_bytes: usize,
    /// Event types with weights.
    pub event_mix: Vec<(EventType, u32)>,
    /// Signature scheme.
    pub scheme: Scheme,
    /// Deliveries over TLS.
    pub tls: bool,
    /// Engine shards (`None`: one per core).
    pub shards: Option<usize>,
    /// Shard threads under `SCHED_BATCH` (`None`: the engine's default).
    pub batch_scheduling: Option<bool>,
    /// Shard threads pinned to CPUs (`None`: the engine's default).
    pub pinning: Option<herald::Pinning>,
    /// Responses awaited on the shards' own rings (`None`: the engine's default).
    pub socket_ring: Option<bool>,
    /// Journal group size.
    pub group_records: Option<usize>,
    /// Journal group delay.
    pub group_delay: Option<Duration>,
    /// Journal group delay for records nobody waits for.
    pub lazy_delay: Option<Duration>,
    /// Retry delays.
    pub retry_schedule: Option<Vec<Duration>>,
    /// The receiver.
    pub receiver: Receiver,
    /// Publisher threads.
    pub publishers: usize,
    /// Events outstanding per embedded publisher.
    pub window: usize,
    /// Events per hand-off (embedded `publish_batch`, remote REST request).
    pub batch: usize,
    /// Measure the raw ceiling too.
    pub compare_raw: bool,
    /// Drain bound.
    pub drain_timeout: Duration,
    /// Remote server, if any.
    pub target: Option<Target>,
    /// Sink address (the first listener's).
    pub sink_listen: SocketAddr,
    /// Sink listeners: origins the endpoints are spread over.
    pub origins: usize,
    /// The sink's own certificate chain and key (PEM files), remote TLS only.
    pub sink_identity: Option<(PathBuf, PathBuf)>,
    /// Engine data directory.
    pub data_dir: Option<PathBuf>,
}

fn config(message: String) -> BenchError {
    BenchError::Config(message)
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    low: T,
    high: T,
) -> Result<T, BenchError> {
    if value < low || value > high {
        return Err(config(format!(
            "{name} = {value} is outside {low}..={high}"
        )));
    }
    Ok(value)
}

fn percent(name: &str, value: Option<f64>) -> Result<f64, BenchError> {
    let value = value.unwrap_or(0.0);
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return Err(config(format!("{name} = {value} is outside 0..=100")));
    }
    Ok(value)
}

/// Parses `type:weight,…` (a bare type weighs 1).
pub fn parse_event_mix(text: &str) -> Result<Vec<(EventType, u32)>, BenchError> {
    let mut mix = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.rsplit_once(':') {
            Some((name, weight)) => {
                let weight: u32 = weight.trim().parse().map_err(|_| {
                    config(format!(
                        "event_mix: weight of {name:?} is not a whole number"
                    ))
                })?;
                (name.trim(), weight)
            }
            None => (part, 1),
        };
        if weight == 0 {
            return Err(config(format!("event_mix: {name:?} has weight 0")));
        }
        let event_type = EventType::parse(name)
            .map_err(|e| config(format!("event_mix: {name:?} is not an event type: {e}")))?;
        if mix.iter().any(|(t, _): &(EventType, u32)| *t == event_type) {
            return Err(config(format!("event_mix: {name:?} appears twice")));
        }
        mix.push((event_type, weight));
    }
    if mix.is_empty() || mix.len() > EVENT_MIX_MAX {
        return Err(config(format!(
            "event_mix needs 1..={EVENT_MIX_MAX} entries, got {}",
            mix.len()
        )));
    }
    Ok(mix)
}

impl Plan {
    /// Resolves knobs (scenario file already merged) into a plan, with defaults, or
    /// says which knob is wrong.
    pub fn resolve(knobs: &Knobs) -> Result<Plan, BenchError> {
        let tenants = check_range("tenants", knobs.tenants.unwrap_or(16), 1, TENANTS_MAX)?;
        let webhooks_per_tenant = check_range(
            "webhooks_per_tenant",
            knobs.webhooks_per_tenant.unwrap_or(1),
            1,
            WEBHOOKS_PER_TENANT_MAX,
        )?;
        let amount = match (knobs.events, knobs.duration) {
            (Some(_), Some(_)) => {
                return Err(config("events and duration exclude each other".into()))
            }
            (Some(n), None) => Amount::Events(check_range("events", n, 1, EVENTS_MAX)?),
            (None, Some(d)) => {
                if d.is_zero() || d > DURATION_MAX {
                    return Err(config(format!(
                        "duration = {} is outside (0, 24h]",
                        humantime::format_duration(d)
                    )));
                }
                Amount::Duration(d)
            }
            (None, None) => Amount::Events(200_000),
        };
        let load = match knobs.rate {
            None => Load::Closed,
            Some(rate) if rate.is_finite() && rate > 0.0 && rate <= RATE_MAX => Load::Open { rate },
            Some(rate) => {
                return Err(config(format!(
                    "rate = {rate} is outside (0, {RATE_MAX}] events/s"
                )))
            }
        };
        if let (Load::Open { rate }, Amount::Duration(d)) = (load, amount) {
            if rate * d.as_secs_f64() > EVENTS_MAX as f64 {
                return Err(config(format!(
                    "rate × duration exceeds EVENTS_MAX = {EVENTS_MAX}"
                )));
            }
        }
        let payload_bytes = check_range(
            "payload_bytes",
            knobs.payload_bytes.unwrap_or(256),
            PAYLOAD_BYTES_MIN,
            PAYLOAD_BYTES_MAX,
        )?;
        let event_mix = parse_event_mix(knobs.event_mix.as_deref().unwrap_or("order.created"))?;
        let pinning = match knobs.pinning.as_deref() {
            Some(name) => Some(herald::Pinning::parse(name).ok_or_else(|| {
                config(format!(
                    "pinning must be auto, always or never, not {name:?}"
                ))
            })?),
            None => None,
        };
        let scheme = match &knobs.scheme {
            Some(name) => Scheme::from_str(name).map_err(|e| config(format!("scheme: {e}")))?,
            None => Scheme::Standard,
        };
        let shards = knobs
            .shards
            .map(|s| check_range("shards", s, 1, 256))
            .transpose()?;
        let group_records = knobs
            .group_records
            .map(|r| check_range("group_records", r, 1, 1 << 20))
            .transpose()?;
        let group_delay = knobs
            .group_delay_us
            .map(|us| check_range("group_delay_us", us, 0, 1_000_000).map(Duration::from_micros))
            .transpose()?;
        let lazy_delay = knobs
            .lazy_delay_us
            .map(|us| check_range("lazy_delay_us", us, 0, 1_000_000).map(Duration::from_micros))
            .transpose()?;
        let retry_schedule = match &knobs.retry_schedule_ms {
            Some(delays) if delays.len() > RETRY_SCHEDULE_MAX => {
                return Err(config(format!(
                    "retry_schedule_ms has at most {RETRY_SCHEDULE_MAX} delays"
                )))
            }
            Some(delays) => Some(delays.iter().map(|&ms| Duration::from_millis(ms)).collect()),
            None => None,
        };
        let failing_status = knobs.failing_status.unwrap_or(500);
        check_range("failing_status", failing_status, 200, 599)?;
        let (flap_period, flap_down) = flapping(knobs.flap_period, knobs.flap_down)?;
        let receiver = Receiver {
            latency_ms: knobs.latency_ms.clone(),
            status_mix: knobs.status_mix.clone(),
            retry_after_s: knobs.retry_after_s,
            seed: knobs.seed.unwrap_or(1),
            failing_endpoints_percent: percent(
                "failing_endpoints_percent",
                knobs.failing_endpoints_percent,
            )?,
            failing_status,
            slow_endpoints_percent: percent(
                "slow_endpoints_percent",
                knobs.slow_endpoints_percent,
            )?,
            slow_ms: check_range(
                "slow_ms",
                knobs.slow_ms.unwrap_or(1000),
                0,
                herald_sink::DELAY_MS_MAX,
            )?,
            flap_period,
            flap_down,
            threads: check_range(
                "sink_threads",
                knobs.sink_threads.unwrap_or(herald_sink::THREADS_DEFAULT),
                1,
                herald_sink::THREADS_MAX,
            )?,
            verify: knobs.verify.unwrap_or(false),
        };
        crate::receiver::parse(&receiver)?;
        let target = match &knobs.target {
            Some(url) => {
                let url =
                    herald::Url::parse(url).map_err(|e| config(format!("target {url:?}: {e}")))?;
                if knobs.ca_file.is_some() && !url.is_tls() {
                    return Err(config(
                        "ca_file is for an https target; this one is plain http".into(),
                    ));
                }
                let api_key = knobs
                    .api_key
                    .clone()
                    .or_else(|| std::env::var("HERALD_ADMIN_KEY").ok())
                    .ok_or_else(|| config("target needs --api-key (or HERALD_ADMIN_KEY)".into()))?;
                Some(Target {
                    url,
                    api_key,
                    ca_file: knobs.ca_file.clone(),
                })
            }
            None if knobs.ca_file.is_some() => {
                return Err(config(
                    "ca_file trusts an https target; it needs --target".into(),
                ))
            }
            None => None,
        };
        let sink_identity = match (&knobs.sink_cert, &knobs.sink_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(config(
                    "sink_cert and sink_key go together (a certificate chain and its key)".into(),
                ))
            }
        };
        let tls = knobs.tls.unwrap_or(sink_identity.is_some());
        match (&target, tls, &sink_identity) {
            (None, _, Some(_)) => {
                return Err(config(
                    "sink_cert is for a remote server; embedded runs generate the sink's \
                     certificate and trust it"
                        .into(),
                ))
            }
            (Some(_), true, None) => {
                return Err(config(
                    "tls against a remote server needs --sink-cert and --sink-key: a \
                     certificate for the sink's address issued by a CA the server trusts \
                     ([egress] extra_ca_pems)"
                        .into(),
                ))
            }
            (_, false, Some(_)) => {
                return Err(config("sink_cert with tls = false".into()));
            }
            _ => {}
        }
        let endpoints = tenants * webhooks_per_tenant;
        let origins = check_range(
            "origins",
            knobs
                .origins
                .unwrap_or_else(|| endpoints.min(ORIGINS_DEFAULT_MAX)),
            1,
            ORIGINS_MAX,
        )?;
        if target.is_some() {
            for (set, name) in [
                (knobs.shards.is_some(), "shards"),
                (knobs.batch_scheduling.is_some(), "batch_scheduling"),
                (knobs.pinning.is_some(), "pinning"),
                (knobs.socket_ring.is_some(), "socket_ring"),
                (knobs.group_records.is_some(), "group_records"),
                (knobs.group_delay_us.is_some(), "group_delay_us"),
                (knobs.lazy_delay_us.is_some(), "lazy_delay_us"),
                (knobs.retry_schedule_ms.is_some(), "retry_schedule_ms"),
                (knobs.data_dir.is_some(), "data_dir"),
            ] {
                if set {
                    return Err(config(format!(
                        "{name} configures the embedded engine; a remote server has its own"
                    )));
                }
            }
        }
        let window = check_range("window", knobs.window.unwrap_or(2048), 1, WINDOW_MAX)?;
        let batch = check_range("batch", knobs.batch.unwrap_or(1), 1, BATCH_MAX)?;
        // An embedded publisher keeps at most `window` events outstanding: a batch larger
        // than that could never be handed over whole.
        if target.is_none() && batch > window {
            return Err(config(format!(
                "batch {batch} is larger than window {window}: an embedded publisher keeps \
                 at most `window` events outstanding, so raise --window (window) or lower \
                 --batch (batch)"
            )));
        }
        Ok(Plan {
            name: knobs.name.clone(),
            tenants,
            webhooks_per_tenant,
            amount,
            load,
            payload_bytes,
            event_mix,
            scheme,
            tls,
            shards,
            batch_scheduling: knobs.batch_scheduling,
            pinning,
            socket_ring: knobs.socket_ring,
            group_records,
            group_delay,
            lazy_delay,
            retry_schedule,
            receiver,
            publishers: check_range(
                "publishers",
                knobs.publishers.unwrap_or(2),
                1,
                PUBLISHERS_MAX,
            )?,
            window,
            batch,
            compare_raw: knobs.compare_raw.unwrap_or(false),
            drain_timeout: knobs.drain_timeout.unwrap_or(Duration::from_secs(300)),
            target,
            sink_listen: knobs
                .sink_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            origins,
            sink_identity,
            data_dir: knobs.data_dir.clone(),
        })
    }

    /// Deliveries each event makes.
    pub fn fanout(&self) -> u64 {
        self.webhooks_per_tenant as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_keys_and_flags_merge() {
        let file = Knobs::from_toml(
            r#"
            name = "dinner"
            tenants = 2000
            webhooks_per_tenant = 3
            duration = "30s"
            rate = 5000.0
            event_mix = "order.created:40,payment.processed:20"
            failing_endpoints_percent = 1
            retry_schedule_ms = [100, 1000]
            "#,
        )
        .unwrap();
        let flags = Knobs {
            tenants: Some(10),
            ..Knobs::default()
        };
        let plan = Plan::resolve(&file.overlay(flags)).unwrap();
        assert_eq!(plan.tenants, 10, "flags win");
        assert_eq!(plan.webhooks_per_tenant, 3);
        assert_eq!(plan.amount, Amount::Duration(Duration::from_secs(30)));
        assert_eq!(plan.load, Load::Open { rate: 5000.0 });
        assert_eq!(plan.event_mix.len(), 2);
        assert_eq!(plan.receiver.failing_endpoints_percent, 1.0);
        assert!(!plan.receiver.never_fails());
        assert_eq!(
            plan.retry_schedule,
            Some(vec![Duration::from_millis(100), Duration::from_secs(1)])
        );
        assert_eq!(plan.name.as_deref(), Some("dinner"));
        assert_eq!(plan.origins, ORIGINS_DEFAULT_MAX, "30 endpoints, 8 origins");
        let one = Plan::resolve(&Knobs {
            tenants: Some(1),
            ..Knobs::default()
        })
        .unwrap();
        assert_eq!(one.origins, 1, "never more origins than endpoints");
        let set = Knobs::from_toml("origins = 3").unwrap();
        assert_eq!(Plan::resolve(&set).unwrap().origins, 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let err = Knobs::from_toml("tenant = 3").unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        assert!(
            Knobs::from_toml("api_key = \"x\"").is_err(),
            "keys stay off files"
        );
        let cases: &[(Knobs, &str)] = &[
            (
                Knobs {
                    tenants: Some(0),
                    ..Knobs::default()
                },
                "tenants",
            ),
            (
                Knobs {
                    events: Some(1),
                    duration: Some(Duration::from_secs(1)),
                    ..Knobs::default()
                },
                "exclude",
            ),
            (
                Knobs {
                    rate: Some(-1.0),
                    ..Knobs::default()
                },
                "rate",
            ),
            (
                Knobs {
                    scheme: Some("hmac".into()),
                    ..Knobs::default()
                },
                "scheme",
            ),
            (
                Knobs {
                    event_mix: Some("order.created:0".into()),
                    ..Knobs::default()
                },
                "weight 0",
            ),
            (
                Knobs {
                    failing_endpoints_percent: Some(101.0),
                    ..Knobs::default()
                },
                "failing_endpoints_percent",
            ),
            (
                Knobs {
                    payload_bytes: Some(10),
                    ..Knobs::default()
                },
                "payload_bytes",
            ),
            (
                Knobs {
                    target: Some("http://127.0.0.1:1".into()),
                    api_key: Some("k".into()),
                    shards: Some(1),
                    ..Knobs::default()
                },
                "shards configures the embedded engine",
            ),
            (
                Knobs {
                    pinning: Some("sometimes".into()),
                    ..Knobs::default()
                },
                "pinning must be auto, always or never, not \"sometimes\"",
            ),
            (
                Knobs {
                    target: Some("http://127.0.0.1:1".into()),
                    api_key: Some("k".into()),
                    pinning: Some("never".into()),
                    ..Knobs::default()
                },
                "pinning configures the embedded engine",
            ),
            (
                Knobs {
                    batch: Some(65),
                    window: Some(64),
                    ..Knobs::default()
                },
                "batch 65 is larger than window 64",
            ),
        ];
        for (knobs, needle) in cases {
            let err = Plan::resolve(knobs).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // The window bounds only an embedded publisher's batches.
        let remote = Plan::resolve(&Knobs {
            target: Some("http://127.0.0.1:1".into()),
            api_key: Some("k".into()),
            batch: Some(65),
            window: Some(64),
            ..Knobs::default()
        })
        .unwrap();
        assert_eq!(remote.batch, 65);
        let embedded = Plan::resolve(&Knobs {
            batch: Some(64),
            window: Some(64),
            ..Knobs::default()
        })
        .unwrap();
        assert_eq!(embedded.batch, 64);
    }

    #[test]
    fn event_mix_parses() {
        let mix = parse_event_mix("order.created:3, inventory.low_stock").unwrap();
        assert_eq!(mix[0].0.as_str(), "order.created");
        assert_eq!((mix[0].1, mix[1].1), (3, 1));
        assert!(parse_event_mix("").is_err());
        assert!(parse_event_mix("a:1,a:2").is_err());
        assert!(parse_event_mix("bad type:1").is_err());
    }
}
