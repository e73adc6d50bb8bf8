//! `herald bench run`: a sink, an engine (embedded, or a remote `herald serve`), the
//! publishers (closed or open loop), the sampler that feeds the progress line and the
//! timeline, the drain, and the figures.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use herald::{
    Error as HeraldError, Event, EventFilter, EventType, Herald, PublishReceipt, Published,
    ShardStats, TenantId, Url, WebhookSpec,
};
use herald_sink::{Action, Sink, SinkBuilder, StatusMix};

use crate::metrics::{self, Scrape, ServerFigures};
use crate::progress::Progress;
use crate::remote::{self, Client};
use crate::report::{p99_of, p99_since, per, Latency, Report, Retries, Sample};
use crate::scenario::{Amount, Load, Plan, Receiver};
use crate::sysstat::{self, Snapshot};
use crate::{raw, BenchError, LATENCY_FIELD, SINK_THREAD_PREFIX};

/// Timeline points kept; past this the sampling interval doubles and every other point
/// is dropped, so a day-long run stays a few hundred KiB of JSON.
const TIMELINE_MAX: usize = 4096;
/// First sampling interval.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Threads that create webhooks at the start (group commit shares their syncs).
const SETUP_THREADS: usize = 8;
/// In remote mode with failing receivers, the run ends once the sink saw no request for
/// this long after publishing ended (the server's retries are not observable otherwise).
const REMOTE_QUIET: Duration = Duration::from_secs(2);
/// The raw comparison sends at most this many requests (a few seconds at loopback
/// speed) and at least this few.
const RAW_REQUESTS_MAX: u64 = 500_000;
const RAW_REQUESTS_MIN: u64 = 2_000;

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// SplitMix64 of `x`: a fixed, seedable hash for choices that must repeat across runs.
pub(crate) fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The path of webhook `w` of tenant `t` at the sink.
fn endpoint_path(t: usize, w: usize) -> String {
    format!("/t{t}/w{w}")
}

/// The URL of webhook `w` of tenant `t`: endpoints go round-robin over the sink's
/// listeners, each a separate origin to the engine's pools.
fn endpoint_url(sink: &Sink, plan: &Plan, t: usize, w: usize) -> String {
    sink.url_on(t * plan.webhooks_per_tenant + w, &endpoint_path(t, w))
}

/// Which endpoints fail and which are slow, chosen by the seed: `(failing, slow)` paths.
fn bad_endpoints(plan: &Plan) -> (Vec<String>, Vec<String>) {
    let r = &plan.receiver;
    let mut failing = Vec::new();
    let mut slow = Vec::new();
    for t in 0..plan.tenants {
        for w in 0..plan.webhooks_per_tenant {
            let e = (t * plan.webhooks_per_tenant + w) as u64;
            // A share in hundredths of a percent, drawn per endpoint.
            let draw = (mix64(r.seed ^ mix64(e)) % 10_000) as f64 / 100.0;
            if draw < r.failing_endpoints_percent {
                failing.push(endpoint_path(t, w));
            } else if draw < r.failing_endpoints_percent + r.slow_endpoints_percent {
                slow.push(endpoint_path(t, w));
            }
        }
    }
    (failing, slow)
}

/// The sink's settings for `plan`: counters only, latency from [`LATENCY_FIELD`], the
/// receiver model, scripts for failing and slow endpoints.
pub(crate) fn sink_builder(plan: &Plan, temp: &std::path::Path) -> Result<SinkBuilder, BenchError> {
    let r = &plan.receiver;
    let mut builder = Sink::builder()
        .listen(plan.sink_listen)
        .listeners(plan.origins)
        .requests_max(0)
        .latency_field(LATENCY_FIELD)
        .threads(r.threads);
    match &plan.sink_identity {
        Some((cert, key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| BenchError::Config(format!("reading {}: {e}", path.display())))
            };
            builder = builder.tls_identity(read(cert)?, read(key)?);
        }
        None if plan.tls => builder = builder.ca_pem_out(temp.join("ca.pem")),
        None => {}
    }
    if r.verify {
        let secret = secret(plan);
        let key = match plan.scheme {
            herald::Scheme::Ed25519 => herald_sign::public_key(&secret)
                .map_err(|e| BenchError::Config(format!("ed25519 key: {e}")))?,
            _ => secret,
        };
        builder = builder.verify(plan.scheme.clone(), &[&key]);
    }
    builder = crate::receiver::apply(builder, r)?;
    let (failing, slow) = bad_endpoints(plan);
    if failing.len() + slow.len() > herald_sink::SCRIPTED_PATHS_MAX {
        return Err(BenchError::Config(format!(
            "{} failing or slow endpoints exceed the sink's {} scripted paths",
            failing.len() + slow.len(),
            herald_sink::SCRIPTED_PATHS_MAX
        )));
    }
    let failing_action = match r.retry_after_s {
        Some(seconds) if matches!(r.failing_status, 429 | 503) => Action::RetryAfter {
            status: r.failing_status,
            seconds,
        },
        _ => Action::Status(r.failing_status),
    };
    for path in failing {
        builder = builder.script(&path, vec![failing_action.clone()]);
    }
    for path in slow {
        builder = builder.script(&path, vec![Action::delay(r.slow_ms, Action::ok())]);
    }
    Ok(builder)
}

/// The signing secret of every webhook of the run.
pub(crate) fn secret(plan: &Plan) -> String {
    herald_sign::generate_secret(&plan.scheme, &[7; 32])
}

/// One event's data: the send-time member first (the sink reads the first occurrence),
/// a sequence number, and padding to `payload_bytes`.
pub(crate) fn event_data(send_unix_ns: u64, seq: u64, payload_bytes: usize) -> Vec<u8> {
    use std::io::Write;
    // One allocation and a fill, not a character at a time: the publishers share the
    // box with the engine, and their CPU counts in the whole box's per delivery.
    let close = b"\"}";
    let mut data = Vec::with_capacity(payload_bytes.max(64));
    write!(
        data,
        "{{\"{LATENCY_FIELD}\":{send_unix_ns},\"seq\":{seq},\"pad\":\""
    )
    .expect("writing to a Vec");
    let pad = payload_bytes.saturating_sub(data.len() + close.len());
    data.resize(data.len() + pad, b'x');
    data.extend_from_slice(close);
    data
}

/// Picks event `n`'s type from the weighted mix (a fixed function of seed and `n`).
fn event_type_of(mix: &[(EventType, u32)], total: u64, seed: u64, n: u64) -> &EventType {
    if mix.len() == 1 {
        return &mix[0].0;
    }
    let mut ticket = mix64(seed.rotate_left(17) ^ n) % total;
    for (event_type, weight) in mix {
        if ticket < u64::from(*weight) {
            return event_type;
        }
        ticket -= u64::from(*weight);
    }
    &mix[mix.len() - 1].0
}

/// Counters the publishers share.
#[derive(Debug, Default)]
struct Shared {
    accepted: AtomicU64,
    publish_errors: AtomicU64,
    /// Hand-offs to the engine: publish calls it took (embedded) or REST requests sent
    /// (remote).
    publish_calls: AtomicU64,
    /// First error that stopped a publisher.
    failure: Mutex<Option<String>>,
    stop: AtomicBool,
    /// CPU of the harness's own threads in the run, µs: the publishers that ended, and the
    /// sampler up to the run's end.
    load_cpu_us: AtomicU64,
}

/// Where events go: an embedded engine or a remote server.
enum Engine {
    Embedded {
        herald: Herald,
        tenants: Arc<Vec<TenantId>>,
        base: Vec<ShardStats>,
        /// The journal directory (its block device's writes are reported).
        data_dir: std::path::PathBuf,
        _temp: Option<tempfile::TempDir>,
    },
    Remote {
        target: crate::scenario::Target,
        tenants: Arc<Vec<String>>,
    },
}

/// What [`Herald::try_publish_batch_detailed_async`] hands back: one answer per event
/// once every accepted one is durable.
type BatchReceipt = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Vec<Result<Published, HeraldError>>, HeraldError>>
            + Send,
    >,
>;

/// An embedded publisher's outstanding hand-offs, oldest first.
enum Outstanding {
    /// One event (`--batch 1`).
    Event(PublishReceipt),
    /// A batch of this many events.
    Batch(usize, BatchReceipt),
}

impl Outstanding {
    fn events(&self) -> usize {
        match self {
            Outstanding::Event(_) => 1,
            Outstanding::Batch(count, _) => *count,
        }
    }
}

/// A publisher's side of the engine.
enum Lane {
    Embedded {
        herald: Herald,
        tenants: Arc<Vec<TenantId>>,
        window: VecDeque<Outstanding>,
        /// Events in `window`.
        window_events: usize,
        /// Most events outstanding (`--window`).
        window_max: usize,
        /// Events gathered for the next `publish_batch` (with `--batch` above 1).
        batch: Vec<Event>,
        batch_tenant: Option<usize>,
        batch_max: usize,
    },
    Remote {
        /// Boxed: a client holds its buffers inline.
        client: Box<Client>,
        tenants: Arc<Vec<String>>,
        batch: Vec<u8>,
        batch_tenant: Option<usize>,
        batch_len: usize,
        batch_max: usize,
    },
}

impl Lane {
    /// Hands over one event; blocks (bounded by the engine) when the window is full.
    fn submit(
        &mut self,
        tenant: usize,
        event_type: &EventType,
        data: Vec<u8>,
        shared: &Shared,
    ) -> Result<(), BenchError> {
        // A batch holds one tenant's events: a new tenant sends what is gathered. (The
        // publishers change tenants every `--batch` events, when a batch was just sent;
        // this keeps a batch to one tenant whatever the order of the events.)
        match self {
            Lane::Remote {
                batch_tenant: Some(t),
                ..
            } if *t != tenant => self.flush(shared)?,
            Lane::Embedded {
                batch_tenant: Some(t),
                ..
            } if *t != tenant => self.hand_over_batch(shared)?,
            _ => {}
        }
        match self {
            Lane::Embedded {
                batch,
                batch_tenant,
                batch_max,
                ..
            } if *batch_max > 1 => {
                batch.push(Event::from_json_bytes(event_type.clone(), data));
                *batch_tenant = Some(tenant);
                if batch.len() >= *batch_max {
                    self.hand_over_batch(shared)?;
                }
                Ok(())
            }
            Lane::Embedded {
                herald,
                tenants,
                window,
                window_events,
                window_max,
                ..
            } => {
                make_room(1, window, window_events, *window_max, shared);
                let tenant = &tenants[tenant];
                hand_over(
                    Event::from_json_bytes(event_type.clone(), data),
                    |event| herald.try_publish(tenant, event).map(Outstanding::Event),
                    |error| error.into_event().map(|(_, event)| event),
                    window,
                    window_events,
                    shared,
                )
            }
            Lane::Remote {
                batch,
                batch_tenant,
                batch_len,
                batch_max,
                ..
            } => {
                if *batch_len > 0 {
                    batch.push(b',');
                }
                batch.extend_from_slice(b"{\"type\":\"");
                batch.extend_from_slice(event_type.as_str().as_bytes());
                batch.extend_from_slice(b"\",\"data\":");
                batch.extend_from_slice(&data);
                batch.push(b'}');
                *batch_len += 1;
                *batch_tenant = Some(tenant);
                if *batch_len >= *batch_max {
                    self.flush(shared)?;
                }
                Ok(())
            }
        }
    }

    /// Hands the gathered batch to the engine in one `publish_batch` (embedded), once
    /// the window has room for it; under back-pressure it waits for the oldest
    /// hand-off and tries again, as single events do.
    fn hand_over_batch(&mut self, shared: &Shared) -> Result<(), BenchError> {
        let Lane::Embedded {
            herald,
            tenants,
            window,
            window_events,
            window_max,
            batch,
            batch_tenant,
            ..
        } = self
        else {
            return Ok(());
        };
        let Some(tenant) = batch_tenant.take() else {
            return Ok(());
        };
        let events = std::mem::take(batch);
        let count = events.len();
        make_room(count, window, window_events, *window_max, shared);
        let tenant = &tenants[tenant];
        hand_over(
            events,
            |events| {
                herald
                    .try_publish_batch_detailed_async(tenant, events)
                    .map(|receipt| Outstanding::Batch(count, Box::pin(receipt)))
            },
            |error| match error.into_unsent() {
                Some(herald::Unsent::Events { events, .. }) => Some(events),
                _ => None,
            },
            window,
            window_events,
            shared,
        )
    }

    /// Waits for everything handed over (embedded; a partial batch is handed over
    /// first) or sends the partial batch (remote).
    fn flush(&mut self, shared: &Shared) -> Result<(), BenchError> {
        match self {
            Lane::Embedded { .. } => {
                self.hand_over_batch(shared)?;
                if let Lane::Embedded {
                    window,
                    window_events,
                    ..
                } = self
                {
                    while !window.is_empty() {
                        settle_oldest(window, window_events, shared);
                    }
                }
                Ok(())
            }
            Lane::Remote {
                client,
                tenants,
                batch,
                batch_tenant,
                batch_len,
                batch_max,
            } => {
                let Some(tenant) = batch_tenant.take() else {
                    return Ok(());
                };
                let count = std::mem::take(batch_len) as u64;
                let tenant = tenants[tenant].as_str();
                let accepted = if *batch_max == 1 {
                    let response = client.call("POST", "/v1/events", Some(tenant), batch)?;
                    u64::from(response.status == 202)
                } else {
                    let mut body = Vec::with_capacity(batch.len() + 16);
                    body.extend_from_slice(b"{\"events\":[");
                    body.extend_from_slice(batch);
                    body.extend_from_slice(b"]}");
                    let response = client.call("POST", "/v1/events/batch", Some(tenant), &body)?;
                    if response.status == 200 {
                        count_batch_accepted(&response.body)
                    } else {
                        0
                    }
                };
                batch.clear();
                shared.publish_calls.fetch_add(1, Ordering::Relaxed);
                shared.accepted.fetch_add(accepted, Ordering::Relaxed);
                shared
                    .publish_errors
                    .fetch_add(count - accepted.min(count), Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

/// Accepted events of a batch answer: `"status":202` per accepted one.
fn count_batch_accepted(body: &[u8]) -> u64 {
    let needle = b"\"status\":202";
    body.windows(needle.len()).filter(|w| w == needle).count() as u64
}

/// Waits for the oldest hand-offs until `count` more events fit in the window (or none
/// is left outstanding).
fn make_room(
    count: usize,
    window: &mut VecDeque<Outstanding>,
    window_events: &mut usize,
    window_max: usize,
    shared: &Shared,
) {
    while !window.is_empty() && *window_events + count > window_max {
        settle_oldest(window, window_events, shared);
    }
}

/// Hands `item` over with `try_hand_over` and lists it in `window`. Under back-pressure
/// (`give_back` takes the item back out of the error) the oldest hand-off resolving makes
/// room, and the item is tried again.
fn hand_over<T>(
    mut item: T,
    mut try_hand_over: impl FnMut(T) -> Result<Outstanding, HeraldError>,
    give_back: impl Fn(HeraldError) -> Option<T>,
    window: &mut VecDeque<Outstanding>,
    window_events: &mut usize,
    shared: &Shared,
) -> Result<(), BenchError> {
    loop {
        match try_hand_over(item) {
            Ok(outstanding) => {
                *window_events += outstanding.events();
                window.push_back(outstanding);
                shared.publish_calls.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(error @ HeraldError::Backpressure { .. }) => {
                item = give_back(error).ok_or_else(|| {
                    BenchError::Engine("back-pressure without what was handed over".into())
                })?;
                if window.is_empty() {
                    std::thread::sleep(Duration::from_micros(100));
                } else {
                    settle_oldest(window, window_events, shared);
                }
            }
            Err(error) => return Err(BenchError::Engine(format!("publish failed: {error}"))),
        }
    }
}

/// Waits for the oldest hand-off in `window` (its events are durable once it resolves)
/// and counts its events.
fn settle_oldest(window: &mut VecDeque<Outstanding>, window_events: &mut usize, shared: &Shared) {
    let Some(oldest) = window.pop_front() else {
        return;
    };
    *window_events -= oldest.events();
    let (accepted, failed) = match oldest {
        Outstanding::Event(receipt) => match receipt.wait() {
            Ok(_) => (1, 0),
            Err(_) => (0, 1),
        },
        Outstanding::Batch(count, receipt) => match futures_lite::future::block_on(receipt) {
            Ok(answers) => {
                let accepted = answers.iter().filter(|a| a.is_ok()).count() as u64;
                (accepted, answers.len() as u64 - accepted)
            }
            Err(_) => (0, count as u64),
        },
    };
    shared.accepted.fetch_add(accepted, Ordering::Relaxed);
    shared.publish_errors.fetch_add(failed, Ordering::Relaxed);
}

/// The engine's data directory: `given`, or `data` in a new temporary directory named
/// with `prefix` (removed when the returned guard is dropped).
pub(crate) fn data_dir_or_temporary(
    given: Option<&std::path::Path>,
    prefix: &str,
) -> Result<(std::path::PathBuf, Option<tempfile::TempDir>), BenchError> {
    match given {
        Some(dir) => Ok((dir.to_path_buf(), None)),
        None => {
            let temp = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .map_err(|e| BenchError::Io(format!("temporary directory: {e}")))?;
            Ok((temp.path().join("data"), Some(temp)))
        }
    }
}

impl Engine {
    fn start(plan: &Plan, sink: &Sink, progress: &mut Progress) -> Result<Engine, BenchError> {
        match &plan.target {
            None => Engine::embedded(plan, sink, progress),
            Some(target) => Engine::remote(plan, target, sink, progress),
        }
    }

    fn embedded(plan: &Plan, sink: &Sink, progress: &mut Progress) -> Result<Engine, BenchError> {
        let (data_dir, temp) = data_dir_or_temporary(plan.data_dir.as_deref(), "herald-bench-")?;
        let mut builder = Herald::builder()
            .data_dir(&data_dir)
            .allow_cidr("127.0.0.0/8")
            .intake_capacity(herald::INTAKE_CAPACITY_DEFAULT)
            // A few tenants may hold a run's whole backlog: the harness measures the
            // engine, not the per-tenant limit. A closed loop of more deliveries than a
            // shard's default room has the room to hold them all: it would otherwise
            // shed events once a shard held a million, and measure something else.
            .dispatcher_config({
                let room = match plan.amount {
                    Amount::Events(events) => {
                        usize::try_from(events.saturating_mul(plan.fanout())).unwrap_or(usize::MAX)
                    }
                    Amount::Duration(_) => 0,
                }
                .max(herald::PENDING_DELIVERIES_MAX_DEFAULT);
                herald::DispatcherConfig {
                    pending_deliveries_max: room,
                    pending_deliveries_per_tenant_max: room,
                    ..herald::DispatcherConfig::default()
                }
            });
        if let Some(shards) = plan.shards {
            builder = builder.shards(shards);
        }
        if let Some(path) = sink.ca_pem_path() {
            builder = builder.extra_ca_pem(path);
        }
        if let Some(batch) = plan.batch_scheduling {
            builder = builder.batch_scheduling(batch);
        }
        if let Some(pinning) = plan.pinning {
            builder = builder.pinning(pinning);
        }
        if let Some(ring) = plan.socket_ring {
            builder = builder.socket_ring(ring);
        }
        if let Some(records) = plan.group_records {
            builder = builder.journal_group_records_max(records);
        }
        if let Some(delay) = plan.group_delay {
            builder = builder.journal_group_delay(delay);
        }
        if let Some(delay) = plan.lazy_delay {
            builder = builder.journal_lazy_delay(delay);
        }
        if let Some(schedule) = &plan.retry_schedule {
            builder = builder.retry_schedule(schedule.clone());
        }
        let herald = builder
            .start()
            .map_err(|e| BenchError::Engine(format!("starting the engine: {e}")))?;
        let tenants: Vec<TenantId> = (0..plan.tenants)
            .map(|t| TenantId::parse(&format!("bench-{t}")))
            .collect::<Result<_, _>>()
            .map_err(|e| BenchError::Engine(format!("tenant id: {e}")))?;
        progress.note(&format!(
            "engine: {} shards, data in {}; HMAC {}; creating {} webhooks",
            herald.shards(),
            data_dir.display(),
            if herald_sign::hmac_lanes() {
                "hashed four messages at a time (SHA extensions)"
            } else {
                "hashed one message at a time (no SHA extensions)"
            },
            plan.tenants * plan.webhooks_per_tenant
        ));
        let secret = secret(plan);
        let filters =
            vec![EventFilter::parse("*").map_err(|e| BenchError::Engine(format!("filter: {e}")))?];
        let created: Result<(), BenchError> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..SETUP_THREADS.min(plan.tenants))
                .map(|i| {
                    let (herald, tenants, secret, filters) = (&herald, &tenants, &secret, &filters);
                    scope.spawn(move || -> Result<(), BenchError> {
                        for t in (i..plan.tenants).step_by(SETUP_THREADS) {
                            for w in 0..plan.webhooks_per_tenant {
                                let url = Url::parse(&endpoint_url(sink, plan, t, w))
                                    .map_err(|e| BenchError::Engine(format!("url: {e}")))?;
                                let spec = WebhookSpec::new(
                                    url,
                                    filters.clone(),
                                    plan.scheme.clone(),
                                    secret.clone(),
                                );
                                herald.create_webhook(&tenants[t], spec).map_err(|e| {
                                    BenchError::Engine(format!("creating a webhook: {e}"))
                                })?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for worker in workers {
                worker
                    .join()
                    .map_err(|_| BenchError::Engine("a setup thread panicked".into()))??;
            }
            Ok(())
        });
        created?;
        let base = herald
            .stats()
            .map_err(|e| BenchError::Engine(format!("engine stats: {e}")))?;
        Ok(Engine::Embedded {
            herald,
            tenants: Arc::new(tenants),
            base,
            data_dir,
            _temp: temp,
        })
    }

    fn remote(
        plan: &Plan,
        target: &crate::scenario::Target,
        sink: &Sink,
        progress: &mut Progress,
    ) -> Result<Engine, BenchError> {
        // Tenant ids unique to this run, so runs against one server do not collide.
        let run = format!("{:x}", unix_ns() / 1_000_000);
        let tenants: Vec<String> = (0..plan.tenants)
            .map(|t| format!("bench-{run}-{t}"))
            .collect();
        progress.note(&format!(
            "remote: creating {} tenants and {} webhooks on {}",
            plan.tenants,
            plan.tenants * plan.webhooks_per_tenant,
            target.url.host_header()
        ));
        let secret = secret(plan);
        let scheme = plan.scheme.name();
        let mut client = Client::new(target)?;
        for tenant in &tenants {
            let body = serde_json::json!({ "id": tenant }).to_string();
            remote::expect(
                client.call("POST", "/v1/tenants", None, body.as_bytes())?,
                201,
                "POST /v1/tenants",
            )?;
        }
        let created: Result<(), BenchError> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..SETUP_THREADS.min(plan.tenants))
                .map(|i| {
                    let (tenants, secret) = (&tenants, &secret);
                    scope.spawn(move || -> Result<(), BenchError> {
                        let mut client = Client::new(target)?;
                        for t in (i..plan.tenants).step_by(SETUP_THREADS) {
                            for w in 0..plan.webhooks_per_tenant {
                                let body = serde_json::json!({
                                    "url": endpoint_url(sink, plan, t, w),
                                    "events": ["*"],
                                    "secret": secret,
                                    "signature": { "scheme": scheme },
                                    "description": "herald bench",
                                })
                                .to_string();
                                remote::expect(
                                    client.call(
                                        "POST",
                                        "/v1/webhooks",
                                        Some(&tenants[t]),
                                        body.as_bytes(),
                                    )?,
                                    201,
                                    "POST /v1/webhooks",
                                )?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for worker in workers {
                worker
                    .join()
                    .map_err(|_| BenchError::Remote("a setup thread panicked".into()))??;
            }
            Ok(())
        });
        created?;
        Ok(Engine::Remote {
            target: target.clone(),
            tenants: Arc::new(tenants),
        })
    }

    fn lane(&self, plan: &Plan) -> Result<Lane, BenchError> {
        Ok(match self {
            Engine::Embedded {
                herald, tenants, ..
            } => Lane::Embedded {
                herald: herald.clone(),
                tenants: tenants.clone(),
                window: VecDeque::with_capacity(plan.window),
                window_events: 0,
                window_max: plan.window,
                batch: Vec::with_capacity(plan.batch),
                batch_tenant: None,
                // Never more than the window (the plan refuses it), so a batch always fits.
                batch_max: plan.batch,
            },
            Engine::Remote { target, tenants } => Lane::Remote {
                client: Box::new(Client::new(target)?),
                tenants: tenants.clone(),
                batch: Vec::new(),
                batch_tenant: None,
                batch_len: 0,
                batch_max: plan.batch,
            },
        })
    }

    fn stats(&self) -> Option<Vec<ShardStats>> {
        match self {
            Engine::Embedded { herald, .. } => herald.stats().ok(),
            Engine::Remote { .. } => None,
        }
    }

    fn shards(&self) -> Option<usize> {
        match self {
            Engine::Embedded { herald, .. } => Some(herald.shards()),
            Engine::Remote { .. } => None,
        }
    }

    /// Whether the embedded engine's shards are pinned to CPUs (`None` remotely).
    fn pinned(&self) -> Option<bool> {
        match self {
            Engine::Embedded { herald, .. } => Some(herald.pinned()),
            Engine::Remote { .. } => None,
        }
    }

    /// The remote server's `GET /metrics` (`None` embedded).
    fn scrape(&self) -> Option<Result<Scrape, BenchError>> {
        match self {
            Engine::Embedded { .. } => None,
            Engine::Remote { target, .. } => {
                Some(Client::new(target).and_then(|mut client| metrics::scrape(&mut client)))
            }
        }
    }

    /// The block device of the embedded engine's journal (`None` remotely: the server's
    /// disk is not this machine's to read).
    fn device(&self) -> Option<String> {
        match self {
            Engine::Embedded { data_dir, .. } => sysstat::block_device_of(data_dir),
            Engine::Remote { .. } => None,
        }
    }
}

/// Engine figures summed over shards, as differences from the start.
#[derive(Debug, Default, Clone, Copy)]
struct EngineTotals {
    pending: u64,
    retries_pending: u64,
    in_flight: u64,
    deliveries_created: u64,
    attempts_succeeded: u64,
    attempts_retryable: u64,
    attempts_final: u64,
    deliveries_failed: u64,
    deliveries_exhausted: u64,
    /// Finished deliveries the delivery logs evicted (`Counters::deliveries_evicted`).
    deliveries_evicted: u64,
    journal_bytes: u64,
    journal_records: u64,
    journal_syncs: u64,
    /// Shard turns committed urgently and lazily (`ShardStats::journal_commits_urgent`,
    /// `journal_commits_lazy`).
    journal_commits: (u64, u64),
    /// Syncs per bucket of [`herald::JOURNAL_SYNC_BOUNDS_US`] (a sync slower than the
    /// last bound is counted in `journal_syncs` only).
    journal_sync_buckets: [u64; herald::HISTOGRAM_BUCKETS],
    checkpoints: u64,
    /// Of the shards that completed one during the run: the largest shard-thread time
    /// of its latest checkpoint, µs, and that checkpoint's bytes.
    checkpoint_last: Option<(u64, u64)>,
    /// Shard-thread CPU time (µs) and journal bytes of every checkpoint written during
    /// the run, summed over the shards (abandoned ones included).
    checkpoint_cpu_us_total: u64,
    checkpoint_bytes_total: u64,
}

/// The bucket bound (µs) at or under which the `q` quantile of the run's journal syncs
/// lies; `None` without syncs, or when it lies past the last bound (over a second).
fn sync_quantile_bound(t: &EngineTotals, q: f64) -> Option<u64> {
    if t.journal_syncs == 0 {
        return None;
    }
    let rank = ((t.journal_syncs as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    t.journal_sync_buckets
        .iter()
        .zip(herald::JOURNAL_SYNC_BOUNDS_US)
        .find_map(|(&count, bound)| {
            seen += count;
            (seen >= rank).then_some(bound)
        })
}

/// Syncs slower than `us` (a bound of [`herald::JOURNAL_SYNC_BOUNDS_US`]): those in the
/// buckets above it and those past the last bound.
fn syncs_over(t: &EngineTotals, us: u64) -> u64 {
    debug_assert!(herald::JOURNAL_SYNC_BOUNDS_US.contains(&us));
    let bucketed: u64 = t.journal_sync_buckets.iter().sum();
    let above: u64 = t
        .journal_sync_buckets
        .iter()
        .zip(herald::JOURNAL_SYNC_BOUNDS_US)
        .filter(|(_, bound)| *bound > us)
        .map(|(count, _)| count)
        .sum();
    above + t.journal_syncs.saturating_sub(bucketed)
}

fn totals(now: &[ShardStats], base: &[ShardStats]) -> EngineTotals {
    let mut t = EngineTotals::default();
    for (i, s) in now.iter().enumerate() {
        let b = base.get(i).cloned().unwrap_or_default();
        let c = &s.counters;
        let bc = &b.counters;
        t.pending += s.dispatcher.pending_deliveries as u64;
        t.retries_pending += s.dispatcher.retries_pending as u64;
        t.in_flight += s.dispatcher.in_flight as u64;
        t.deliveries_created += c.deliveries_created - bc.deliveries_created;
        t.attempts_succeeded += c.attempts_succeeded - bc.attempts_succeeded;
        t.attempts_retryable += c.attempts_retryable - bc.attempts_retryable;
        t.attempts_final += c.attempts_final - bc.attempts_final;
        t.deliveries_failed += c.deliveries_failed - bc.deliveries_failed;
        t.deliveries_exhausted += c.deliveries_exhausted - bc.deliveries_exhausted;
        t.deliveries_evicted += c.deliveries_evicted - bc.deliveries_evicted;
        t.journal_bytes += s.journal_bytes_appended - b.journal_bytes_appended;
        t.journal_records += s.journal_last_seq - b.journal_last_seq;
        t.journal_syncs += s.journal_sync_us.count - b.journal_sync_us.count;
        t.journal_commits.0 += s.journal_commits_urgent - b.journal_commits_urgent;
        t.journal_commits.1 += s.journal_commits_lazy - b.journal_commits_lazy;
        for ((sum, now), before) in t
            .journal_sync_buckets
            .iter_mut()
            .zip(s.journal_sync_us.counts)
            .zip(b.journal_sync_us.counts)
        {
            *sum += now - before;
        }
        let checkpoints = s.checkpoints_written - b.checkpoints_written;
        t.checkpoints += checkpoints;
        t.checkpoint_cpu_us_total += s.checkpoint_cpu_us_total - b.checkpoint_cpu_us_total;
        t.checkpoint_bytes_total += s.checkpoint_bytes_total - b.checkpoint_bytes_total;
        if checkpoints > 0
            && t.checkpoint_last
                .is_none_or(|(us, _)| s.checkpoint_us_last > us)
        {
            t.checkpoint_last = Some((s.checkpoint_us_last, s.checkpoint_bytes_last));
        }
    }
    t
}

/// What the sampler thread records.
#[derive(Debug, Default)]
struct Timeline {
    samples: Vec<Sample>,
    every: Duration,
}

/// Runs one benchmark and returns its figures. `progress` gets the live line.
pub fn run(plan: &Plan, progress: &mut Progress) -> Result<Report, BenchError> {
    let temp = tempfile::Builder::new()
        .prefix("herald-bench-sink-")
        .tempdir()
        .map_err(|e| BenchError::Io(format!("temporary directory: {e}")))?;
    let sink = sink_builder(plan, temp.path())?
        .start()
        .map_err(|e| BenchError::Sink(e.to_string()))?;
    progress.note(&format!(
        "sink on {} ({} thread{})",
        sink.url("/"),
        plan.receiver.threads,
        if plan.receiver.threads == 1 { "" } else { "s" }
    ));
    // The raw ceiling before the engine's run too, where the connections it will open
    // are known, so that the ratio does not rest on one moment of a drifting host.
    let raw_before = match raw_bracket(plan) {
        Some(bracket) if plan.compare_raw => {
            progress.note(&format!(
                "raw ceiling before the engine: {} requests over {} connections",
                bracket.requests, bracket.connections
            ));
            Some(raw_ceiling(
                plan,
                &sink,
                bracket.connections,
                bracket.requests,
                bracket.body_bytes,
            )?)
        }
        _ => None,
    };
    let body_bytes_base = sink.stats().body_bytes;
    let engine = Engine::start(plan, &sink, progress)?;
    let result = drive(plan, &sink, &engine, progress);
    if let Engine::Embedded { herald, .. } = &engine {
        let _ = herald.shutdown();
    }
    let mut report = result?;
    if plan.compare_raw {
        let connections = usize::try_from(report.connections)
            .unwrap_or(herald_sink::LOAD_CONNECTIONS_MAX)
            .clamp(1, herald_sink::LOAD_CONNECTIONS_MAX);
        let requests = report.delivered.clamp(RAW_REQUESTS_MIN, RAW_REQUESTS_MAX);
        progress.note(&format!(
            "raw ceiling: {requests} requests over {connections} connections"
        ));
        // The engine's bodies as they arrived: the envelope around the data.
        let body_bytes = usize::try_from(
            sink.stats().body_bytes.saturating_sub(body_bytes_base) / report.attempts.max(1),
        )
        .unwrap_or(plan.payload_bytes);
        let raw = raw_ceiling(plan, &sink, connections, requests, body_bytes)?;
        report.raw_bracketed = raw_before
            .as_ref()
            .is_some_and(|before| before.connections == raw.connections);
        let raw_per_s = match &raw_before {
            Some(before) if report.raw_bracketed => (before.raw_per_s + raw.raw_per_s) / 2.0,
            _ => raw.raw_per_s,
        };
        report.raw_per_s = Some(raw_per_s.round());
        let ratio = |per_s: f64| (per_s / raw_per_s * 1000.0).round() / 1000.0;
        report.ratio_to_raw = (raw_per_s > 0.0).then(|| ratio(report.deliveries_per_s));
        report.ratio_after_publishing_to_raw = report
            .deliveries_after_publishing_per_s
            .filter(|_| raw_per_s > 0.0)
            .map(ratio);
        report.raw = Some(raw);
        report.raw_before = raw_before;
    }
    sink.shutdown();
    Ok(report)
}

/// What the raw run before the engine's sends: as many requests as the engine will
/// deliver, over the connections it will open, with bodies of its envelopes' size.
struct RawBracket {
    connections: usize,
    requests: u64,
    body_bytes: usize,
}

/// The raw run before the engine's, for a closed loop with a count of events: a backlog
/// from the start, so every endpoint's pool grows to its in-flight limit (the bench's
/// webhooks keep the default). Other runs open what their rate needs, known only after.
fn raw_bracket(plan: &Plan) -> Option<RawBracket> {
    let (Load::Closed, Amount::Events(events)) = (plan.load, plan.amount) else {
        return None;
    };
    let endpoints = plan.tenants.saturating_mul(plan.webhooks_per_tenant);
    let in_flight = usize::try_from(herald_core::IN_FLIGHT_DEFAULT).unwrap_or(usize::MAX);
    let deliveries = events.saturating_mul(plan.webhooks_per_tenant as u64);
    Some(RawBracket {
        connections: endpoints
            .saturating_mul(in_flight)
            .clamp(1, herald_sink::LOAD_CONNECTIONS_MAX),
        requests: deliveries.clamp(RAW_REQUESTS_MIN, RAW_REQUESTS_MAX),
        body_bytes: envelope_bytes(plan),
    })
}

/// Bytes of the envelope the engine will wrap around one event of this run's size.
fn envelope_bytes(plan: &Plan) -> usize {
    let data = event_data(unix_ns(), 0, plan.payload_bytes);
    let fallback = data.len();
    let (Ok(id), Ok(tenant), Some((event_type, _))) = (
        herald_core::EventId::parse(&format!("evt_{}", "0".repeat(32))),
        TenantId::parse("bench-0"),
        plan.event_mix.first(),
    ) else {
        return fallback;
    };
    let event = herald_core::NewEvent {
        id,
        event_type: event_type.clone(),
        api_version: herald_core::API_VERSION_DEFAULT.to_owned(),
        created_at_ms: unix_ns() / 1_000_000,
        location_id: None,
        data,
        idempotency: None,
    };
    herald_core::encode_envelope(&tenant, &event).map_or(fallback, |body| body.len())
}

/// One raw-ceiling run against the run's sink.
fn raw_ceiling(
    plan: &Plan,
    sink: &Sink,
    connections: usize,
    requests: u64,
    body_bytes: usize,
) -> Result<crate::report::RawReport, BenchError> {
    // An https sink with a given certificate: its chain file ends with the issuer.
    let ca_pem = match (sink.ca_pem(), &plan.sink_identity) {
        (Some(pem), _) => Some(pem.to_owned()),
        (None, Some((chain, _))) => std::fs::read_to_string(chain).ok(),
        (None, None) => None,
    };
    raw::measure(
        sink,
        connections,
        requests,
        body_bytes,
        &plan.scheme,
        ca_pem.as_deref(),
    )
}

/// Stop condition of one publisher.
fn events_total(plan: &Plan) -> Option<u64> {
    match (plan.amount, plan.load) {
        (Amount::Events(n), _) => Some(n),
        (Amount::Duration(d), Load::Open { rate }) => Some((rate * d.as_secs_f64()).ceil() as u64),
        (Amount::Duration(_), Load::Closed) => None,
    }
}

fn drive(
    plan: &Plan,
    sink: &Sink,
    engine: &Engine,
    progress: &mut Progress,
) -> Result<Report, BenchError> {
    let fanout = plan.fanout();
    let shared = Shared::default();
    let sink_base = sink.stats();
    sink.reset_latency();
    let rss_reset = sysstat::reset_peak_rss();
    let before = Snapshot::take(SINK_THREAD_PREFIX);
    let scrape_before = engine.scrape().transpose()?;
    let device = engine.device();
    let device_before = device.as_deref().and_then(sysstat::device_write_bytes);
    let mix_total: u64 = plan.event_mix.iter().map(|(_, w)| u64::from(*w)).sum();
    let total = events_total(plan);
    let chunk = plan.batch as u64;
    let publishing = AtomicBool::new(true);
    let timeline = Mutex::new(Timeline {
        samples: Vec::new(),
        every: SAMPLE_EVERY,
    });
    let base_stats = match engine {
        Engine::Embedded { base, .. } => base.clone(),
        Engine::Remote { .. } => Vec::new(),
    };
    let mut lanes = (0..plan.publishers)
        .map(|_| engine.lane(plan))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let started_unix_ns = unix_ns();
    // A sample, and the latencies so far (the progress line's p99 covers the span since
    // the line it showed before, which may be several samples back).
    let sample = |t: Duration, before: &mut Option<Histogram<u64>>| -> (Sample, Histogram<u64>) {
        let stats = sink.stats();
        let accepted = shared.accepted.load(Ordering::Relaxed);
        let delivered = stats.successes() - sink_base.successes();
        let now_stats = engine.stats();
        let engine_totals = now_stats.as_deref().map(|now| totals(now, &base_stats));
        let pending = match &engine_totals {
            Some(t) => t.pending,
            None => (accepted * fanout).saturating_sub(delivered),
        };
        let checkpoints_underway = now_stats
            .as_deref()
            .map(|now| now.iter().filter(|shard| shard.checkpoint_underway).count() as u64);
        let latency = sink.latency();
        let p99_interval_us = p99_since(&latency, before.as_ref());
        *before = Some(latency.clone());
        let sample = Sample {
            t_s: t.as_secs_f64(),
            accepted,
            delivered,
            attempts: stats.requests - sink_base.requests,
            pending,
            p99_us: p99_of(&latency),
            p99_interval_us,
            rss_bytes: sysstat::rss_bytes(),
            checkpoints: engine_totals.as_ref().map(|t| t.checkpoints),
            checkpoints_underway,
        };
        (sample, latency)
    };

    let sampler_done = AtomicBool::new(false);
    let (publish_elapsed, end, drain_timed_out, after) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            // The sampler's own CPU (merging every connection's latency histogram at each
            // sample) is the harness's, not the engine's: counted with the publishers'.
            let cpu_at_start = sysstat::thread_cpu_us();
            let mut latency_before = None;
            let mut next = started;
            loop {
                let every = timeline.lock().map(|t| t.every).unwrap_or(SAMPLE_EVERY);
                next += every;
                while Instant::now() < next && !sampler_done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                // Read before sampling: the last sample is then taken after the drain
                // ended, so the timeline ends with every delivery counted.
                let last = sampler_done.load(Ordering::Acquire);
                if last {
                    // Up to the run's end (its CPU figures were taken before `last`);
                    // the last sample comes after it.
                    if let Some(used) = cpu_at_start
                        .zip(sysstat::thread_cpu_us())
                        .map(|(start, now)| now.saturating_sub(start))
                    {
                        shared.load_cpu_us.fetch_add(used, Ordering::Relaxed);
                    }
                }
                let (now, latency) = sample(started.elapsed(), &mut latency_before);
                progress.show(&now, latency);
                if let Ok(mut t) = timeline.lock() {
                    t.samples.push(now);
                    if t.samples.len() >= TIMELINE_MAX {
                        let kept: Vec<Sample> = t.samples.iter().step_by(2).cloned().collect();
                        t.samples = kept;
                        t.every *= 2;
                    }
                }
                if last {
                    break;
                }
            }
            progress.finish();
        });

        let flapper =
            plan.receiver
                .flap_period
                .zip(plan.receiver.flap_down)
                .map(|(period, down)| {
                    let publishing = &publishing;
                    scope.spawn(move || flap(sink, &plan.receiver, period, down, publishing))
                });

        let publishers: Vec<_> = lanes
            .drain(..)
            .enumerate()
            .map(|(p, mut lane)| {
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("bench-publish-{p}"))
                    .spawn_scoped(scope, move || {
                        let result = publish(
                            plan,
                            &mut lane,
                            p as u64,
                            total,
                            chunk,
                            mix_total,
                            started,
                            started_unix_ns,
                            shared,
                        )
                        .and_then(|()| lane.flush(shared));
                        if let Some(us) = sysstat::thread_cpu_us() {
                            shared.load_cpu_us.fetch_add(us, Ordering::Relaxed);
                        }
                        if let Err(e) = result {
                            shared.stop.store(true, Ordering::Release);
                            if let Ok(mut failure) = shared.failure.lock() {
                                failure.get_or_insert(e.to_string());
                            }
                        }
                    })
            })
            .collect();
        let mut spawn_failure = None;
        for publisher in publishers {
            match publisher {
                Ok(handle) => {
                    if handle.join().is_err() {
                        spawn_failure = Some("a publisher thread panicked".to_owned());
                    }
                }
                Err(e) => spawn_failure = Some(format!("spawning a publisher: {e}")),
            }
        }
        if let Some(message) = spawn_failure {
            if let Ok(mut failure) = shared.failure.lock() {
                failure.get_or_insert(message);
            }
        }
        let publish_elapsed = started.elapsed();
        publishing.store(false, Ordering::Release);
        if let Some(flapper) = flapper {
            if flapper.join().is_err() {
                if let Ok(mut failure) = shared.failure.lock() {
                    failure.get_or_insert("the flapping receiver's thread panicked".to_owned());
                }
            }
        }
        let (end, timed_out, after) = drain(
            plan,
            sink,
            engine,
            &sink_base,
            &base_stats,
            &shared,
            started,
        );
        sampler_done.store(true, Ordering::Release);
        let _ = sampler.join();
        (publish_elapsed, end, timed_out, after)
    });
    if let Some(failure) = shared.failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(BenchError::Engine(failure));
    }

    let stats = sink.stats();
    let latency = Latency::of(&sink.latency());
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let delivered = stats.successes() - sink_base.successes();
    let attempts = stats.requests - sink_base.requests;
    let elapsed_s = end.as_secs_f64().max(1e-9);
    let publish_s = publish_elapsed.as_secs_f64().max(1e-9);
    let engine_totals = engine.stats().map(|now| totals(&now, &base_stats));
    let device_write_bytes = device
        .as_deref()
        .and_then(sysstat::device_write_bytes)
        .zip(device_before)
        .map(|(a, b)| a.saturating_sub(b));
    let server = match &scrape_before {
        Some(before) => Some(settled_server_figures(engine, before, attempts)?),
        None => None,
    };
    // Saturating: the sink's CPU is summed over its live threads, and a thread that
    // ended between the two readings takes its time with it.
    let cpu_us = after
        .cpu_us
        .zip(before.cpu_us)
        .map(|(a, b)| a.saturating_sub(b));
    let sink_cpu_us = after
        .sink_cpu_us
        .zip(before.sink_cpu_us)
        .map(|(a, b)| a.saturating_sub(b));
    let load_cpu_us = Some(shared.load_cpu_us.load(Ordering::Relaxed));
    let journal_cpu_us = match engine {
        Engine::Embedded { .. } => after
            .journal_cpu_us
            .zip(before.journal_cpu_us)
            .map(|(a, b)| a.saturating_sub(b)),
        Engine::Remote { .. } => None,
    };
    // Remotely the engine is the server process, as its /metrics counts it.
    let server_cpu_us = server.as_ref().and_then(|f| f.cpu_us);
    let engine_cpu_us = match engine {
        Engine::Embedded { .. } => cpu_us
            .zip(sink_cpu_us)
            .zip(load_cpu_us)
            .map(|((all, sink), load)| all.saturating_sub(sink + load)),
        Engine::Remote { .. } => server_cpu_us,
    };
    let write_bytes = match engine {
        Engine::Embedded { .. } => after
            .write_bytes
            .zip(before.write_bytes)
            .map(|(a, b)| a.saturating_sub(b)),
        Engine::Remote { .. } => server.as_ref().and_then(|f| f.disk_write_bytes),
    };
    let journal = match (engine_totals, &server) {
        (Some(t), _) => (
            Some(t.journal_bytes),
            Some(t.journal_records),
            Some(t.journal_syncs),
        ),
        (None, Some(f)) => (f.journal_bytes, f.journal_records, f.journal_syncs),
        (None, None) => (None, None, None),
    };
    let journal_commits = match (engine_totals, &server) {
        (Some(t), _) => (Some(t.journal_commits.0), Some(t.journal_commits.1)),
        (None, Some(f)) => (f.journal_commits_urgent, f.journal_commits_lazy),
        (None, None) => (None, None),
    };
    let harness_peak_rss_bytes = if rss_reset || matches!(engine, Engine::Embedded { .. }) {
        sysstat::peak_rss_bytes()
    } else {
        None
    };
    let mut statuses = BTreeMap::new();
    for (status, n) in &stats.statuses {
        let n = n - sink_base.status_count(*status);
        if n > 0 {
            statuses.insert(status.to_string(), n);
        }
    }
    let server_classes = server
        .as_ref()
        .filter(|f| f.attempts_succeeded.is_some() && f.attempts_retryable.is_some());
    let retries = match (engine_totals, server_classes) {
        (Some(t), _) => Retries {
            attempts_succeeded: Some(t.attempts_succeeded),
            attempts_retryable: Some(t.attempts_retryable),
            attempts_final: Some(t.attempts_final),
            retries_sent: Some(
                (t.attempts_succeeded + t.attempts_retryable + t.attempts_final)
                    .saturating_sub(t.deliveries_created),
            ),
            retries_pending: Some(t.retries_pending),
            deliveries_pending: Some(t.pending),
            deliveries_failed: Some(t.deliveries_failed),
            deliveries_exhausted: Some(t.deliveries_exhausted),
        },
        (None, Some(f)) => Retries {
            attempts_succeeded: f.attempts_succeeded,
            attempts_retryable: f.attempts_retryable,
            attempts_final: f.attempts_final,
            retries_sent: f
                .attempts_succeeded
                .zip(f.attempts_retryable)
                .zip(f.attempts_final)
                .map(|((ok, retry), end)| (ok + retry + end).saturating_sub(accepted * fanout)),
            retries_pending: f.retries_pending,
            deliveries_pending: f.deliveries_pending,
            deliveries_failed: f.deliveries_failed,
            deliveries_exhausted: f.deliveries_exhausted,
        },
        // A server without these series: the classes as the sink answered them.
        (None, None) => Retries {
            attempts_succeeded: Some(delivered),
            attempts_retryable: Some(
                stats
                    .statuses
                    .iter()
                    .filter(|(s, _)| matches!(s, 408 | 429 | 500..=599))
                    .map(|(s, n)| n - sink_base.status_count(*s))
                    .sum(),
            ),
            attempts_final: Some(
                attempts
                    - delivered
                    - stats
                        .statuses
                        .iter()
                        .filter(|(s, _)| matches!(s, 408 | 429 | 500..=599))
                        .map(|(s, n)| n - sink_base.status_count(*s))
                        .sum::<u64>(),
            ),
            retries_sent: Some(attempts.saturating_sub(accepted * fanout)),
            ..Retries::default()
        },
    };
    let timeline = timeline.into_inner().map(|t| t.samples).unwrap_or_default();
    Ok(Report {
        mode: match engine {
            Engine::Embedded { .. } => "embedded",
            Engine::Remote { .. } => "remote",
        }
        .to_owned(),
        scenario: plan.name.clone(),
        load_model: match plan.load {
            Load::Closed => "closed",
            Load::Open { .. } => "open",
        }
        .to_owned(),
        rate_offered: match plan.load {
            Load::Open { rate } => Some(rate),
            Load::Closed => None,
        },
        tenants: plan.tenants,
        webhooks_per_tenant: plan.webhooks_per_tenant,
        fanout,
        payload_bytes: plan.payload_bytes,
        scheme: plan.scheme.name().to_owned(),
        tls: plan.tls,
        shards: engine
            .shards()
            .or_else(|| server.as_ref().and_then(|f| f.shards)),
        figures_source: match engine {
            Engine::Embedded { .. } => "engine",
            Engine::Remote { .. } => "metrics",
        }
        .to_owned(),
        cores: sysstat::cores(),
        batch_scheduling: plan.batch_scheduling,
        pinned: engine.pinned(),
        socket_ring: plan.socket_ring,
        group_records: plan.group_records,
        group_delay_us: plan
            .group_delay
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        lazy_delay_us: plan
            .lazy_delay
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        accepted,
        publish_errors: shared.publish_errors.load(Ordering::Relaxed),
        batch: plan.batch,
        publish_calls: shared.publish_calls.load(Ordering::Relaxed),
        deliveries_expected: accepted * fanout,
        delivered,
        attempts,
        publish_s,
        elapsed_s,
        drain_timed_out,
        accepted_per_s: accepted as f64 / publish_s,
        deliveries_per_s: delivered as f64 / elapsed_s,
        deliveries_after_publishing_per_s: crate::report::after_publishing_per_s(
            &timeline, publish_s, elapsed_s, delivered,
        ),
        attempts_per_s: attempts as f64 / elapsed_s,
        raw_per_s: None,
        ratio_to_raw: None,
        ratio_after_publishing_to_raw: None,
        raw: None,
        raw_before: None,
        raw_bracketed: false,
        p50_us: latency.p50_us,
        p90_us: latency.p90_us,
        p99_us: latency.p99_us,
        p999_us: latency.p999_us,
        max_us: latency.max_us,
        latency_samples: latency.samples,
        latency_spectrum_us: latency.spectrum,
        cpu_scope: match engine {
            Engine::Embedded { .. } => {
                "one process: engine + sink + the harness's load (engine = process − sink − publisher and sampler threads)"
            }
            Engine::Remote { .. } => {
                "the server process (process_cpu_seconds_total of its /metrics); sink and \
                 publishers are this process's"
            }
        }
        .to_owned(),
        cpu_us_per_delivery: match engine {
            Engine::Embedded { .. } => per(cpu_us, delivered),
            Engine::Remote { .. } => per(server_cpu_us, delivered),
        },
        engine_cpu_us_per_delivery: per(engine_cpu_us, delivered),
        sink_cpu_us_per_delivery: per(sink_cpu_us, delivered),
        load_cpu_us_per_delivery: per(load_cpu_us, delivered),
        journal_cpu_us_per_delivery: per(journal_cpu_us, delivered),
        harness_cpu_us_per_delivery: per(cpu_us, delivered),
        cores_busy: match engine {
            Engine::Embedded { .. } => cpu_us,
            Engine::Remote { .. } => server_cpu_us,
        }
        .map(|us| us as f64 / 1e6 / elapsed_s),
        host_cpu: crate::report::HostCpuShares::between(before.host, after.host),
        peak_rss_bytes: match engine {
            Engine::Embedded { .. } => harness_peak_rss_bytes,
            Engine::Remote { .. } => server.as_ref().and_then(|f| f.peak_rss_bytes),
        },
        server_rss_bytes: server.as_ref().and_then(|f| f.rss_bytes),
        harness_peak_rss_bytes,
        journal_bytes: journal.0,
        journal_records: journal.1,
        journal_syncs: journal.2,
        journal_commits_urgent: journal_commits.0,
        journal_commits_lazy: journal_commits.1,
        journal_sync_p50_us: engine_totals
            .as_ref()
            .and_then(|t| sync_quantile_bound(t, 0.50)),
        journal_sync_p99_us: engine_totals
            .as_ref()
            .and_then(|t| sync_quantile_bound(t, 0.99)),
        journal_sync_max_us: engine_totals
            .as_ref()
            .and_then(|t| sync_quantile_bound(t, 1.0)),
        journal_syncs_over_10ms: engine_totals.as_ref().map(|t| syncs_over(t, 10_000)),
        checkpoints: engine_totals.as_ref().map(|t| t.checkpoints),
        checkpoint_busy_ms: engine_totals
            .as_ref()
            .and_then(|t| t.checkpoint_last)
            .map(|(us, _)| us as f64 / 1e3),
        checkpoint_bytes: engine_totals
            .as_ref()
            .and_then(|t| t.checkpoint_last)
            .map(|(_, bytes)| bytes),
        checkpoint_cpu_ms_total: engine_totals
            .as_ref()
            .map(|t| t.checkpoint_cpu_us_total as f64 / 1e3),
        checkpoint_bytes_total: engine_totals.as_ref().map(|t| t.checkpoint_bytes_total),
        checkpoint_cpu_us_per_delivery: engine_totals
            .as_ref()
            .and_then(|t| per(Some(t.checkpoint_cpu_us_total), delivered)),
        deliveries_evicted: match (&engine_totals, &server) {
            (Some(t), _) => Some(t.deliveries_evicted),
            (None, Some(f)) => f.deliveries_evicted,
            (None, None) => None,
        },
        journal_bytes_per_delivery: per(journal.0, delivered),
        records_per_delivery: per(journal.1, delivered),
        disk_write_bytes: write_bytes,
        disk_write_bytes_per_delivery: per(write_bytes, delivered),
        device,
        device_write_bytes,
        device_write_bytes_per_delivery: per(device_write_bytes, delivered),
        connections: stats.connections_accepted - sink_base.connections_accepted,
        origins: sink.addrs().len(),
        retries,
        statuses,
        timeline,
    })
}

/// While `publishing`, keeps the sink's endpoints up (the receiver's model) for the
/// first `period - down` of each `period` and takes them down (every answer the scripts
/// leave alone is a 503) for the last `down`; leaves them up.
fn flap(
    sink: &Sink,
    receiver: &Receiver,
    period: Duration,
    down: Duration,
    publishing: &AtomicBool,
) {
    let (_, model) = crate::receiver::parse(receiver).unwrap_or((None, None));
    let outage = Some(StatusMix::new(&[(503, 1)]).expect("503:1 is a valid mix"));
    let up_for = period.saturating_sub(down);
    let mut next = Instant::now() + up_for;
    let mut up = true;
    while publishing.load(Ordering::Acquire) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        up = !up;
        sink.set_status_mix(if up { model.clone() } else { outage.clone() });
        next += if up { up_for } else { down };
    }
    sink.set_status_mix(model);
}

/// Open loop: a publisher that must wait for an event's scheduled time sleeps to the
/// end of the `PACE_QUANTUM` slot the time falls in, then publishes every event due by
/// then, so it wakes at most once per quantum whatever the rate. One sleep per event
/// cost ~10 µs of the publisher's CPU per event on a 2-core VM (a timer, a switch out
/// and back in, and a wake that may preempt a shard), CPU and cores the engine under
/// test then lacks. An event published up to a quantum late still counts its latency
/// from its scheduled time, so the quantum can only raise the figures (by half of it
/// on average), never hide a delay.
const PACE_QUANTUM: Duration = Duration::from_micros(250);

/// When a publisher waiting for an event due at `due` (since the run's start) wakes: the
/// end of its [`PACE_QUANTUM`] slot, never before `due`.
fn pace_wake(due: Duration) -> Duration {
    let slot = PACE_QUANTUM.as_nanos();
    let wake = due.as_nanos().div_ceil(slot) * slot;
    Duration::from_nanos(u64::try_from(wake).unwrap_or(u64::MAX))
}

/// One publisher's loop: chunks `p, p + P, p + 2P, …` of `chunk` events each.
#[allow(clippy::too_many_arguments)] // reason: one call site; a struct would only rename these
fn publish(
    plan: &Plan,
    lane: &mut Lane,
    p: u64,
    total: Option<u64>,
    chunk: u64,
    mix_total: u64,
    started: Instant,
    started_unix_ns: u64,
    shared: &Shared,
) -> Result<(), BenchError> {
    let publishers = plan.publishers as u64;
    let mut c = p;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let first = c * chunk;
        match (total, plan.amount) {
            (Some(total), _) if first >= total => return Ok(()),
            (None, Amount::Duration(d)) if started.elapsed() >= d => return Ok(()),
            _ => {}
        }
        let last = match total {
            Some(total) => (first + chunk).min(total),
            None => first + chunk,
        };
        let tenant = (c % plan.tenants as u64) as usize;
        for n in first..last {
            let send_unix_ns = match plan.load {
                Load::Closed => unix_ns(),
                Load::Open { rate } => {
                    // The schedule: event n is due at start + n / rate. Its latency
                    // counts from then, however late the publisher gets to it.
                    let due = Duration::from_secs_f64(n as f64 / rate);
                    let elapsed = started.elapsed();
                    if due > elapsed {
                        std::thread::sleep(pace_wake(due) - elapsed);
                    }
                    started_unix_ns + u64::try_from(due.as_nanos()).unwrap_or(u64::MAX)
                }
            };
            let event_type = event_type_of(&plan.event_mix, mix_total, plan.receiver.seed, n);
            let data = event_data(send_unix_ns, n, plan.payload_bytes);
            lane.submit(tenant, event_type, data, shared)?;
        }
        c += publishers;
    }
}

/// How long the server may take to record the outcomes of attempts the sink has
/// already answered, before its figures are reported as they are.
const SERVER_SETTLE: Duration = Duration::from_secs(5);

/// The server's figures since `before`, once its `/metrics` show an outcome for each of
/// the `attempts` the sink answered (or after [`SERVER_SETTLE`]). The sink counts a
/// request when it answers; the server counts it when the answer is back, a moment
/// later, so a scrape taken at once would miss the last outcomes.
fn settled_server_figures(
    engine: &Engine,
    before: &Scrape,
    attempts: u64,
) -> Result<ServerFigures, BenchError> {
    let deadline = Instant::now() + SERVER_SETTLE;
    loop {
        let Some(after) = engine.scrape().transpose()? else {
            return Err(BenchError::Remote(
                "the server's /metrics went away during the run".to_owned(),
            ));
        };
        let figures = ServerFigures::between(before, &after);
        let outcomes = [
            figures.attempts_succeeded,
            figures.attempts_retryable,
            figures.attempts_final,
        ]
        .iter()
        .map(|n| n.unwrap_or(0))
        .sum::<u64>();
        // A server without these series cannot tell: take what it gives.
        let counted = figures.attempts_succeeded.is_some();
        if !counted || outcomes >= attempts || Instant::now() >= deadline {
            return Ok(figures);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every accepted event's deliveries settled, or the drain timeout. Returns
/// the time of the last request at the sink (since `started`), whether it gave up, and
/// the process's readings at that last request (so an idle wait for retries that never
/// come does not count as work).
#[allow(clippy::too_many_arguments)] // reason: one call site; a struct would only rename these
fn drain(
    plan: &Plan,
    sink: &Sink,
    engine: &Engine,
    sink_base: &herald_sink::Stats,
    base_stats: &[ShardStats],
    shared: &Shared,
    started: Instant,
) -> (Duration, bool, Snapshot) {
    let expected = shared.accepted.load(Ordering::Relaxed) * plan.fanout();
    let deadline = Instant::now() + plan.drain_timeout;
    let delivered = |s: &herald_sink::Stats| s.successes() - sink_base.successes();
    if plan.receiver.never_fails() || expected == 0 {
        // Every delivery succeeds: wait for the count (the sink polls its counters,
        // leaving the engine alone).
        let waited = sink.wait_until(&format!("{expected} deliveries"), plan.drain_timeout, |s| {
            delivered(s) >= expected
        });
        let end = started.elapsed();
        return (end, waited.is_err(), Snapshot::take(SINK_THREAD_PREFIX));
    }
    // Retries held back by a breaker or a long Retry-After may not come within the run:
    // once every delivery has been tried and the sink heard nothing for longer than the
    // longest retry delay, what is left is reported as retries pending.
    let quiet = plan
        .retry_schedule
        .as_ref()
        .and_then(|delays| delays.iter().max().copied())
        .map_or(REMOTE_QUIET, |longest| {
            (longest + REMOTE_QUIET).max(REMOTE_QUIET)
        });
    let mut last_requests = sink.stats().requests;
    let mut last_change = started.elapsed();
    let mut at_last_change = Snapshot::take(SINK_THREAD_PREFIX);
    loop {
        let stats = sink.stats();
        if stats.requests != last_requests {
            last_requests = stats.requests;
            last_change = started.elapsed();
            at_last_change = Snapshot::take(SINK_THREAD_PREFIX);
        }
        let quiet_for = started.elapsed().saturating_sub(last_change);
        let settled = match engine.stats() {
            Some(now) => {
                let t = totals(&now, base_stats);
                let untried = t.pending - t.retries_pending.min(t.pending);
                // With the default schedule retries are minutes away: a delivery waiting
                // for one has shown its first outcome. With a schedule of the run's own,
                // wait for the retries too. Either way, deliveries an open breaker or a
                // long Retry-After holds back end the wait once the sink has been quiet.
                t.deliveries_created >= expected
                    && t.in_flight == 0
                    && (t.pending == 0
                        || (plan.retry_schedule.is_none() && untried == 0)
                        || quiet_for >= quiet)
            }
            None => delivered(&stats) >= expected || quiet_for >= REMOTE_QUIET,
        };
        if settled {
            return (last_change, false, at_last_change);
        }
        if Instant::now() >= deadline {
            return (started.elapsed(), true, Snapshot::take(SINK_THREAD_PREFIX));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_quantiles_are_the_bounds_of_the_buckets_they_fall_in() {
        let bounds = herald::JOURNAL_SYNC_BOUNDS_US;
        let mut t = EngineTotals::default();
        assert_eq!(sync_quantile_bound(&t, 0.5), None, "no syncs");
        // 98 syncs in the 500 µs bucket, 2 in the 10 ms one.
        t.journal_sync_buckets[2] = 98;
        t.journal_sync_buckets[6] = 2;
        t.journal_syncs = 100;
        assert_eq!(bounds[2], 500);
        assert_eq!(sync_quantile_bound(&t, 0.5), Some(500));
        assert_eq!(sync_quantile_bound(&t, 0.98), Some(500));
        assert_eq!(sync_quantile_bound(&t, 0.99), Some(bounds[6]));
        assert_eq!(sync_quantile_bound(&t, 1.0), Some(bounds[6]), "the slowest");
        assert_eq!(
            syncs_over(&t, 10_000),
            0,
            "10 ms is the bucket's bound: not over"
        );
        assert_eq!(syncs_over(&t, 5_000), 2);
        // One in the 250 ms bucket: the slowest, and over 10 ms.
        t.journal_sync_buckets[10] = 1;
        t.journal_syncs = 101;
        assert_eq!(sync_quantile_bound(&t, 1.0), Some(250_000));
        assert_eq!(syncs_over(&t, 10_000), 1);
        // Two more past the last bound: counted, in no bucket.
        t.journal_syncs = 103;
        assert_eq!(sync_quantile_bound(&t, 0.99), None, "past a second");
        assert_eq!(sync_quantile_bound(&t, 1.0), None);
        assert_eq!(sync_quantile_bound(&t, 0.5), Some(500));
        assert_eq!(syncs_over(&t, 10_000), 3);
    }

    #[test]
    fn a_paced_publisher_wakes_at_slot_ends_never_before_the_event_is_due() {
        let q = PACE_QUANTUM;
        assert_eq!(pace_wake(Duration::ZERO), Duration::ZERO);
        assert_eq!(pace_wake(Duration::from_nanos(1)), q);
        assert_eq!(pace_wake(q), q, "due at a slot's end: no later");
        assert_eq!(pace_wake(q + Duration::from_nanos(1)), 2 * q);
        // Events of one slot share one wake-up.
        let rate = 52_000.0;
        let wakes: std::collections::BTreeSet<Duration> = (0..52_000u64)
            .map(|n| pace_wake(Duration::from_secs_f64(n as f64 / rate)))
            .collect();
        assert!(wakes.len() as u128 <= Duration::from_secs(1).as_nanos() / q.as_nanos() + 1);
        for n in 0..10_000u64 {
            let due = Duration::from_secs_f64(n as f64 / 7_919.0);
            let wake = pace_wake(due);
            assert!(wake >= due && wake - due < q, "{n}: {due:?} -> {wake:?}");
        }
    }

    #[test]
    fn event_data_is_padded_json_with_the_marker_first() {
        let data = event_data(123, 7, 256);
        assert_eq!(data.len(), 256);
        let value: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(value[LATENCY_FIELD], 123);
        assert_eq!(value["seq"], 7);
        assert_eq!(
            herald_sink::find_json_integer(&data, LATENCY_FIELD),
            Some(123)
        );
    }

    #[test]
    fn event_mix_draws_by_weight_and_repeats() {
        let mix = crate::scenario::parse_event_mix("a.b:3,c.d:1").unwrap();
        let count = (0..40_000)
            .filter(|&n| event_type_of(&mix, 4, 9, n).as_str() == "a.b")
            .count();
        assert!((29_000..=31_000).contains(&count), "{count}");
        assert_eq!(
            event_type_of(&mix, 4, 9, 77).as_str(),
            event_type_of(&mix, 4, 9, 77).as_str()
        );
    }

    #[test]
    fn batch_answers_are_counted() {
        let body = br#"{"data":[{"status":202,"event":{}},{"status":400,"error":{}},{"status":202,"event":{}}]}"#;
        assert_eq!(count_batch_accepted(body), 2);
    }
}
