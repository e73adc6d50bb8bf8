//! The dispatcher's own cost per delivery: accept an event, mark it durable, tick (match,
//! admit, sign in a batch, build the request), report a 200. No IO: this is the core's
//! share of the per-delivery budget (the engine aims at >= 100,000 deliveries/s per VM).
//!
//! Each iteration runs a batch of 1,000 events through a fresh dispatcher with `fanout`
//! webhooks subscribed; criterion's time divided by `1,000 * fanout` is the cost per
//! delivery (also shown as throughput).

use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use herald_core::session::Session;
use herald_core::{
    AttemptResult, Command, Dispatcher, DispatcherConfig, EventFilter, EventId, EventType,
    NewEvent, Outcome, ResponseHeaders, SendRequest, TenantId, WebhookId, WebhookSpec,
    API_VERSION_DEFAULT,
};
use herald_http::Url;
use herald_sign::Scheme;
use std::hint::black_box;

const EVENTS: usize = 1_000;
const T0: u64 = 1_700_000_000_000;

fn setup(fanout: usize) -> (Dispatcher, Vec<NewEvent>) {
    let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
    let tenant = TenantId::parse("acme").unwrap();
    for i in 0..fanout {
        let mut spec = WebhookSpec::new(
            Url::parse(&format!("http://127.0.0.1:{}/hook", 9000 + i)).unwrap(),
            vec![EventFilter::parse("order.*").unwrap()],
            Scheme::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
        );
        spec.limits.in_flight_max = 256;
        d.upsert_webhook(
            T0,
            tenant.clone(),
            WebhookId::parse(&format!("wh_{i}")).unwrap(),
            spec,
        )
        .unwrap();
    }
    let data = format!("{{\"order_id\":\"o_1\",\"pad\":\"{}\"}}", "x".repeat(400)).into_bytes();
    let events = (0..EVENTS)
        .map(|i| NewEvent {
            id: EventId::parse(&format!("evt_{i:08}")).unwrap(),
            event_type: EventType::parse("order.created").unwrap(),
            api_version: API_VERSION_DEFAULT.to_string(),
            created_at_ms: T0,
            location_id: None,
            data: data.clone(),
            idempotency: None,
        })
        .collect();
    let mut out = Vec::new();
    d.drain_commands(&mut out);
    (d, events)
}

/// The receiver's answer to every request: a 200 after 1 ms.
fn answered_200(req: &SendRequest) -> Outcome {
    Outcome {
        delivery: req.delivery,
        attempt: req.attempt,
        result: AttemptResult::Response {
            status: 200,
            retry_after: None,
        },
        latency_ms: 1,
        response_body: Vec::new(),
        response_headers: ResponseHeaders::new(),
    }
}

fn run(mut d: Dispatcher, events: Vec<NewEvent>) -> usize {
    deliver(&mut d, &events, answered_200)
}

/// Accepts `events` 100 at a time (each chunk one millisecond), marks them durable,
/// ticks and answers every send with `answer`; returns the deliveries made.
fn deliver(d: &mut Dispatcher, events: &[NewEvent], answer: fn(&SendRequest) -> Outcome) -> usize {
    let tenant = TenantId::parse("acme").unwrap();
    let mut commands = Vec::new();
    let mut delivered = 0;
    let mut now = T0;
    for chunk in events.chunks(100) {
        now += 1;
        delivered += turn(
            d,
            &tenant,
            chunk.iter().cloned(),
            now,
            &mut commands,
            answer,
        );
    }
    d.tick(now);
    delivered
}

/// One turn at `now`: `events` accepted for `tenant` and made durable, the sends due
/// started and each answered with `answer` at once; the sends made.
fn turn(
    d: &mut Dispatcher,
    tenant: &TenantId,
    events: impl IntoIterator<Item = NewEvent>,
    now: u64,
    commands: &mut Vec<Command>,
    answer: fn(&SendRequest) -> Outcome,
) -> usize {
    for event in events {
        let accepted = d.accept_event(now, tenant, event).unwrap();
        d.records_durable(accepted.append);
    }
    d.tick(now);
    commands.clear();
    d.drain_commands(commands);
    let mut sent = 0;
    for command in commands.drain(..) {
        if let Command::Send(req) = command {
            sent += 1;
            d.attempt_finished(now, answer(&req));
            black_box(&req.headers);
        }
    }
    sent
}

/// The same work driven as the shard loop drives it: through a [`Session`], each
/// `Append` reported with a journal sequence number, each publish's reply held until its
/// record is durable, one group commit per batch of 100 events.
fn run_session(d: Dispatcher, events: Vec<NewEvent>) -> usize {
    let tenant = TenantId::parse("acme").unwrap();
    let mut session: Session<usize> = Session::new(d);
    let mut commands = Vec::new();
    let mut seq = 0;
    let mut delivered = 0;
    let mut answered = 0;
    let mut now = T0;
    let mut outcomes = Vec::new();
    for chunk in events.chunks(100) {
        now += 1;
        for (i, event) in chunk.iter().enumerate() {
            let accepted = session
                .dispatcher_mut()
                .accept_event(now, &tenant, event.clone())
                .unwrap();
            answered += usize::from(session.hold(accepted.append, i).is_some());
        }
        for pass in 0..2 {
            if pass == 1 {
                session.dispatcher_mut().tick(now);
            }
            commands.clear();
            session.drain_commands(&mut commands);
            for command in commands.drain(..) {
                match command {
                    Command::Append { id, .. } => {
                        seq += 1;
                        session.appended(id, seq);
                    }
                    Command::Send(req) => {
                        delivered += 1;
                        black_box(&req.headers);
                        outcomes.push(answered_200(&req));
                    }
                }
            }
            // The group commit: everything appended so far is durable.
            answered += session.durable(seq).count();
        }
        let generation = session.generation();
        for outcome in outcomes.drain(..) {
            session.attempt_finished(now, generation, outcome);
        }
    }
    session.dispatcher_mut().tick(now);
    assert_eq!(
        answered,
        events.len(),
        "every publish answered once durable"
    );
    delivered
}

/// Runs the events through a dispatcher; returns the deliveries made.
type Driver = fn(Dispatcher, Vec<NewEvent>) -> usize;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatcher");
    group.sample_size(10);
    for fanout in [1, 10] {
        group.throughput(Throughput::Elements((EVENTS * fanout) as u64));
        // The dispatcher alone, and driven through a session as the shard loop drives it.
        let drivers: [(&str, Driver); 2] = [("deliver", run), ("session", run_session)];
        for (name, drive) in drivers {
            group.bench_function(format!("{name}_fanout_{fanout}"), |b| {
                b.iter_batched(
                    || setup(fanout),
                    |(d, events)| {
                        let delivered = drive(d, events);
                        assert_eq!(delivered, EVENTS * fanout);
                        delivered
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

/// Deliveries finished and kept in the log for the checkpoint bench (the shard's log
/// keeps up to 100,000 per shard by default; a checkpoint writes all of them).
const LOG_DELIVERIES: usize = 20_000;

/// A dispatcher whose log holds `LOG_DELIVERIES` successful deliveries, each with the
/// two response headers a typical receiver sends.
fn with_log() -> Dispatcher {
    let (mut d, template) = setup(1);
    let events: Vec<NewEvent> = (0..LOG_DELIVERIES)
        .map(|i| NewEvent {
            id: EventId::parse(&format!("evt_{i:08}")).unwrap(),
            ..template[0].clone()
        })
        .collect();
    let delivered = deliver(&mut d, &events, |req| Outcome {
        response_headers: ResponseHeaders::bounded([
            ("content-type", "application/json"),
            ("date", "Tue, 01 Dec 2026 21:00:00 GMT"),
        ]),
        ..answered_200(req)
    });
    assert_eq!(delivered, LOG_DELIVERIES);
    let mut commands = Vec::new();
    d.drain_commands(&mut commands);
    d
}

/// A checkpoint of a state that is mostly the delivery log: building and encoding its
/// parts (what a shard does on its thread before writing them). Criterion's time over
/// `LOG_DELIVERIES` is the cost per delivery held.
fn bench_checkpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(10);
    group.throughput(Throughput::Elements(LOG_DELIVERIES as u64));
    let d = with_log();
    assert_eq!(d.stats().deliveries_retained, LOG_DELIVERIES);
    group.bench_function("log_20k_parts_4mib", |b| {
        b.iter(|| black_box(encode_checkpoint(&d)))
    });
    // As the shard does it: each part also located (where it holds its events' bodies,
    // which validates a part that holds any), and the moves collected.
    group.bench_function("log_20k_parts_4mib_located", |b| {
        b.iter(|| {
            let mut buffer = herald_core::RecordBuffer::new();
            let mut parts = d.checkpoint_parts(T0 + 1_000_000, 4 << 20);
            let at = herald_core::PayloadAt {
                segment: 1,
                offset: 0,
            };
            while parts.next_into(&mut buffer).unwrap() {
                parts.stored(&buffer, at).unwrap();
            }
            black_box(parts.into_moves())
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_checkpoint);

/// `DISPATCHER_FIXED=FANOUT,ITERATIONS` runs the session driver that many times on
/// fresh dispatchers and nothing else: a fixed amount of work whose instruction count
/// (`valgrind --tool=callgrind --toggle-collect='dispatcher::fixed_session*'`) is the
/// same on every run, so that a change of a few percent shows on a noisy machine where
/// criterion's times spread by ±15 %. Without it, the criterion benches.
fn main() {
    if let Ok(spec) = std::env::var("DISPATCHER_FIXED") {
        let parsed = spec
            .split_once(',')
            .and_then(|(fanout, n)| Some((fanout.parse().ok()?, n.parse().ok()?)));
        let Some((fanout, iterations)) = parsed else {
            eprintln!("DISPATCHER_FIXED={spec:?}: expected FANOUT,ITERATIONS, e.g. 1,4");
            std::process::exit(2);
        };
        for _ in 0..iterations {
            let (d, events) = setup(fanout);
            assert_eq!(fixed_session(d, events), EVENTS * fanout);
        }
        return;
    }
    if let Ok(spec) = std::env::var("DISPATCHER_LOG_TURNS") {
        let Ok(events) = spec.parse::<usize>() else {
            eprintln!("DISPATCHER_LOG_TURNS={spec:?}: expected EVENTS, e.g. 400000");
            std::process::exit(2);
        };
        let spread = match std::env::var("DISPATCHER_LOG_TENANTS") {
            Ok(spec) => match spec.parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    eprintln!("DISPATCHER_LOG_TENANTS={spec:?}: expected TENANTS >= 1, e.g. 8");
                    std::process::exit(2);
                }
            },
            Err(_) => None,
        };
        let unbounded = std::env::var_os("DISPATCHER_LOG_UNBOUNDED").is_some();
        log_turns(events, spread, unbounded);
        return;
    }
    if let Ok(spec) = std::env::var("DISPATCHER_FIXED_CHECKPOINT") {
        let Ok(iterations) = spec.parse::<usize>() else {
            eprintln!("DISPATCHER_FIXED_CHECKPOINT={spec:?}: expected ITERATIONS, e.g. 4");
            std::process::exit(2);
        };
        let d = with_log();
        for _ in 0..iterations {
            assert!(fixed_checkpoint(&d) > LOG_DELIVERIES);
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// `checkpoint/log_20k_parts_4mib`'s work once, under a name of its own for callgrind
/// (`DISPATCHER_FIXED_CHECKPOINT=ITERATIONS`, `--toggle-collect='dispatcher::fixed_checkpoint*'`;
/// instructions per delivery held = the total / (ITERATIONS × `LOG_DELIVERIES`)).
#[inline(never)]
fn fixed_checkpoint(d: &Dispatcher) -> usize {
    encode_checkpoint(d)
}

/// Builds and encodes every part of `d`'s checkpoint into one reused buffer, as a shard
/// does; the bytes encoded.
fn encode_checkpoint(d: &Dispatcher) -> usize {
    let mut bytes = 0;
    let mut buffer = herald_core::RecordBuffer::new();
    let mut parts = d.checkpoint_parts(T0 + 1_000_000, 4 << 20);
    while parts.next_into(&mut buffer).unwrap() {
        bytes += buffer.len();
    }
    bytes
}

/// [`run_session`] under a name of its own, for callgrind to count.
#[inline(never)]
fn fixed_session(d: Dispatcher, events: Vec<NewEvent>) -> usize {
    run_session(d, events)
}

/// Events per turn of [`log_turns`].
const LOG_TURN: usize = 200;

/// `DISPATCHER_LOG_TURNS=EVENTS`: how long the dispatcher's turns take while one tenant
/// floods its share of the delivery log and another keeps an old delivery at the log's
/// front (the flooding tenant's evictions then stand behind other entries in the log's
/// own order). Publishes EVENTS to the flooding tenant in turns of [`LOG_TURN`]
/// (accept, send, answer 200) with the default limits (a log of 100,000, half of it
/// per tenant), and prints the median, p99.9 and longest turn once the tenant's share
/// is full, and the turns over 1.5 ms. Figures only.
///
/// With `DISPATCHER_LOG_TENANTS=N` the turns go to N other tenants in turn instead (an
/// even load: the log's own limit evicts); with `DISPATCHER_LOG_UNBOUNDED=1` the log's
/// limits are too high to evict anything, so that the same turns without evictions are
/// the baseline an eviction's cost is read against.
fn log_turns(events: usize, spread: Option<usize>, unbounded: bool) {
    let mut config = DispatcherConfig::default();
    if unbounded {
        config.log_finished_max = usize::MAX / 4;
        config.log_finished_per_tenant_max = usize::MAX / 4;
    }
    let mut d = Dispatcher::new(config, T0);
    let quiet = TenantId::parse("quiet").unwrap();
    let flooding = TenantId::parse("flooding").unwrap();
    let spread: Vec<TenantId> = (0..spread.unwrap_or(0))
        .map(|i| TenantId::parse(&format!("even_{i}")).unwrap())
        .collect();
    for tenant in [&quiet, &flooding].into_iter().chain(&spread) {
        let mut spec = WebhookSpec::new(
            Url::parse("http://127.0.0.1:9000/hook").unwrap(),
            vec![EventFilter::parse("order.*").unwrap()],
            Scheme::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
        );
        spec.limits.in_flight_max = 256;
        let webhook = WebhookId::parse("wh_0").unwrap();
        d.upsert_webhook(T0, tenant.clone(), webhook, spec).unwrap();
    }
    let (_, template) = setup(0);
    let event = |i: usize| NewEvent {
        id: EventId::parse(&format!("evt_{i:08}")).unwrap(),
        ..template[0].clone()
    };
    let mut commands = Vec::new();
    let mut now = T0 + 1;
    turn(&mut d, &quiet, [event(0)], now, &mut commands, answered_200);
    // Turns are counted once the limit that evicts is reached (with the default limits):
    // the flooding tenant's share, or the whole log's when the load is spread.
    let defaults = DispatcherConfig::default();
    let share = if spread.is_empty() {
        defaults.log_finished_per_tenant_max
    } else {
        defaults.log_finished_max
    };
    let mut times = Vec::new();
    for n in 0..events / LOG_TURN {
        now += 1;
        let started = std::time::Instant::now();
        let ids = 1 + n * LOG_TURN..1 + (n + 1) * LOG_TURN;
        let to = if spread.is_empty() {
            &flooding
        } else {
            &spread[n % spread.len()]
        };
        turn(&mut d, to, ids.map(event), now, &mut commands, answered_200);
        if (n + 1) * LOG_TURN > share {
            times.push((n, started.elapsed().as_micros()));
        }
    }
    let slow: Vec<(usize, u128)> = times
        .iter()
        .copied()
        .filter(|&(_, us)| us > 1_500)
        .collect();
    let mut sorted: Vec<u128> = times.iter().map(|&(_, us)| us).collect();
    sorted.sort_unstable();
    if sorted.is_empty() {
        println!("no turn after the log's limit was reached: give more than {share} events");
        return;
    }
    println!(
        "{} turns of {LOG_TURN} events after the log's limit was reached{}: median {} µs, \
         p99.9 {} µs, longest {} µs; {} over 1.5 ms (turn, µs): {:?}",
        sorted.len(),
        match (spread.len(), unbounded) {
            (0, false) => " (the flooding tenant's share)".to_owned(),
            (0, true) => " (the flooding tenant's share, none evicted)".to_owned(),
            (n, false) => format!(" ({n} tenants in turn)"),
            (n, true) => format!(" ({n} tenants in turn, none evicted)"),
        },
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 999 / 1000],
        sorted[sorted.len() - 1],
        slow.len(),
        &slow[..slow.len().min(8)],
    );
}
