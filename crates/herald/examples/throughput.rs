//! End-to-end throughput: an embedded engine delivering signed webhooks to a keep-alive
//! sink on loopback, compared with the raw loopback ceiling of the same sink in the same
//! run.
//!
//! ```text
//! cargo run --release -p herald --example throughput -- \
//!     [--events N] [--tenants T] [--fanout F] [--payload-bytes B] [--tls] [--shards S]
//! ```
//!
//! 1. Starts a sink (herald-sink; counters only, latency read from the body).
//! 2. Starts the engine on a temporary directory (journal on disk, group commit), creates
//!    T tenants × F webhooks pointing at the sink, and publishes N events (each carrying
//!    its publish instant, so the sink measures publish→receive latency on arrival) from
//!    publisher threads that keep a window of receipts in flight so that many publishes
//!    share one journal sync.
//! 3. Waits (bounded) for every delivery, printing progress each second.
//! 4. Measures the ceiling on the same sink: a minimal keep-alive client with as many
//!    connections as the engine used, sending requests of the same size, with no
//!    journal, scheduling or signing. Prints the figures and ends with one JSON line.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use herald::{
    Error, Event, EventFilter, EventType, Herald, PublishReceipt, Scheme, TenantId, Url,
    WebhookSpec,
};
use herald_sink::{run_load, LoadConfig, Sink};

/// Name of the body field carrying the publish instant (Unix ns).
const LATENCY_FIELD: &str = "sent_unix_ns";
/// Most events in one run (the sink and the ceiling keep counters only, but the journal
/// grows by about the payload size per event).
const EVENTS_MAX: u64 = 50_000_000;
/// Most receipts one publisher keeps outstanding.
const WINDOW_MAX: usize = 65_536;

#[derive(Debug, Parser)]
#[command(about = "End-to-end delivery throughput of an embedded engine on loopback")]
struct Args {
    /// Events to publish.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Tenants (events are spread evenly over them).
    #[arg(long, default_value_t = 16)]
    tenants: usize,
    /// Webhooks per tenant (every webhook receives every event of its tenant).
    #[arg(long, default_value_t = 1)]
    fanout: usize,
    /// Padding bytes in each event's data.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Deliver over TLS (a generated CA the engine trusts).
    #[arg(long)]
    tls: bool,
    /// Engine shards [default: available cores].
    #[arg(long)]
    shards: Option<usize>,
    /// Publisher threads.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Publish receipts each publisher keeps in flight (group commit needs many).
    #[arg(long, default_value_t = 2048)]
    window: usize,
    /// Verify every signature at the sink (costs sink CPU in the same process).
    #[arg(long)]
    verify: bool,
    /// Connections of the ceiling's load client [default: as many as the engine opened].
    #[arg(long, default_value_t = 0)]
    ceiling_connections: usize,
    /// Skip the ceiling measurement.
    #[arg(long)]
    no_ceiling: bool,
    /// Give up waiting for deliveries after this long.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Directory for the journals [default: a temporary directory, removed at the end].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    if args.events == 0 || args.events > EVENTS_MAX {
        return Err(format!("--events must be 1..={EVENTS_MAX}").into());
    }
    if args.tenants == 0 || args.fanout == 0 || args.publishers == 0 {
        return Err("--tenants, --fanout and --publishers must be at least 1".into());
    }
    if args.window == 0 || args.window > WINDOW_MAX {
        return Err(format!("--window must be 1..={WINDOW_MAX}").into());
    }
    let deliveries_expected = args.events * args.fanout as u64;
    let scheme = Scheme::Standard;
    let secret = herald_sign::generate_secret(&scheme, &[7; 32]);

    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let mut sink = Sink::builder()
        .requests_max(0)
        .latency_field(LATENCY_FIELD)
        .connections_max(1024);
    if args.tls {
        sink = sink.ca_pem_out(temp.path().join("ca.pem"));
    }
    if args.verify {
        sink = sink.verify(scheme.clone(), &[&secret]);
    }
    let sink = sink.start()?;
    println!(
        "sink on {} (tls={}, verify={})",
        sink.url("/"),
        args.tls,
        args.verify
    );

    let base = sink.stats();

    // ---------------------------------------------------------------- the engine
    let mut builder = Herald::builder()
        .data_dir(&data_dir)
        .allow_cidr("127.0.0.0/8")
        .intake_capacity(herald::INTAKE_CAPACITY_DEFAULT);
    if let Some(shards) = args.shards {
        builder = builder.shards(shards);
    }
    if let Some(path) = sink.ca_pem_path() {
        builder = builder.extra_ca_pem(path);
    }
    let herald = builder.start()?;
    let tenants: Vec<TenantId> = (0..args.tenants)
        .map(|t| TenantId::parse(&format!("tenant-{t}")))
        .collect::<Result<_, _>>()?;
    for (t, tenant) in tenants.iter().enumerate() {
        for f in 0..args.fanout {
            let spec = WebhookSpec::new(
                Url::parse(&sink.url(&format!("/t{t}/w{f}")))?,
                vec![EventFilter::parse("*")?],
                scheme.clone(),
                secret.clone(),
            );
            herald.create_webhook(tenant, spec)?;
        }
    }
    println!(
        "engine: {} shards on {}, {} tenants x {} webhooks; publishing {} events ({} deliveries)",
        herald.shards(),
        data_dir.display(),
        args.tenants,
        args.fanout,
        args.events,
        deliveries_expected
    );

    let published = AtomicU64::new(0);
    let publishing_done = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let timeout = Duration::from_secs(args.timeout_s);
    let started = Instant::now();
    let pad = "x".repeat(args.payload_bytes);
    let event_type = EventType::parse("order.created")?;

    let outcome: Result<(Duration, Duration), Failure> = std::thread::scope(|scope| {
        // Progress, once a second, until everything is delivered.
        scope.spawn(|| {
            let mut previous = 0;
            let mut second = 0u64;
            while !finished.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                let elapsed = started.elapsed();
                if elapsed.as_secs() <= second {
                    continue;
                }
                second = elapsed.as_secs();
                let delivered = sink.stats().successes() - base.successes();
                println!(
                    "t={second}s published={} delivered={delivered} rate={}/s",
                    published.load(Ordering::Relaxed),
                    delivered - previous
                );
                previous = delivered;
            }
        });

        let publishers: Vec<_> = (0..args.publishers)
            .map(|p| {
                let herald = herald.clone();
                let (tenants, pad, event_type, published) =
                    (&tenants, &pad, &event_type, &published);
                let args = &args;
                scope.spawn(move || -> Result<(), String> {
                    let mut window: VecDeque<PublishReceipt> = VecDeque::with_capacity(args.window);
                    let mut n = p as u64;
                    while n < args.events {
                        if window.len() == args.window {
                            settle(window.pop_front(), published)?;
                        }
                        let tenant = &tenants[(n % tenants.len() as u64) as usize];
                        let now_ns = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_err(|e| e.to_string())?
                            .as_nanos();
                        let data = format!(
                            "{{\"{LATENCY_FIELD}\":{now_ns},\"seq\":{n},\"pad\":\"{pad}\"}}"
                        );
                        let mut event =
                            Event::from_json_bytes(event_type.clone(), data.into_bytes());
                        loop {
                            match herald.try_publish(tenant, event) {
                                Ok(receipt) => {
                                    window.push_back(receipt);
                                    break;
                                }
                                Err(error @ Error::Backpressure { .. }) => {
                                    // Queue full: the oldest receipt resolving frees room.
                                    event = match error.into_event() {
                                        Some((_, event)) => event,
                                        None => return Err("backpressure without the event".into()),
                                    };
                                    if window.is_empty() {
                                        std::thread::sleep(Duration::from_micros(100));
                                    } else {
                                        settle(window.pop_front(), published)?;
                                    }
                                }
                                Err(error) => return Err(format!("publish failed: {error}")),
                            }
                        }
                        n += args.publishers as u64;
                    }
                    while let Some(receipt) = window.pop_front() {
                        settle(Some(receipt), published)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for publisher in publishers {
            publisher
                .join()
                .map_err(|_| "a publisher thread panicked".to_string())??;
        }
        let publish_elapsed = started.elapsed();
        publishing_done.store(true, Ordering::Release);

        let waited = sink.wait_until(
            &format!("{deliveries_expected} deliveries"),
            timeout.saturating_sub(started.elapsed()),
            |stats| stats.successes() - base.successes() >= deliveries_expected,
        );
        let deliver_elapsed = started.elapsed();
        finished.store(true, Ordering::Release);
        match waited {
            Ok(_) => Ok((publish_elapsed, deliver_elapsed)),
            Err(error) => Err(format!(
                "not every delivery arrived within --timeout-s {}: {} of {deliveries_expected} (published {}); {error}",
                args.timeout_s,
                error.stats.successes() - base.successes(),
                published.load(Ordering::Relaxed)
            )
            .into()),
        }
    });
    let engine_stats = herald.stats().ok();
    herald.shutdown()?;
    let (publish_elapsed, deliver_elapsed) = outcome?;

    let stats = sink.stats();
    let latency = sink.latency();
    let deliveries_per_s = deliveries_expected as f64 / deliver_elapsed.as_secs_f64();
    let publish_per_s = args.events as f64 / publish_elapsed.as_secs_f64();
    let connections = stats.connections_accepted - base.connections_accepted;
    println!(
        "engine: {} events published in {:.2} s ({:.0}/s); {} deliveries in {:.2} s: {:.0} deliveries/s over {} connections",
        args.events,
        publish_elapsed.as_secs_f64(),
        publish_per_s,
        deliveries_expected,
        deliver_elapsed.as_secs_f64(),
        deliveries_per_s,
        connections
    );
    println!(
        "publish→receive latency: p50 {} µs, p99 {} µs, max {} µs ({} samples)",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.max(),
        latency.len()
    );
    if args.verify {
        println!(
            "signatures: {} verified, {} failed",
            stats.verified - base.verified,
            stats.verify_failed - base.verify_failed
        );
    }
    if let Some(shards) = &engine_stats {
        for (i, shard) in shards.iter().enumerate() {
            println!(
                "shard {i}: journal seq {} durable {}",
                shard.journal_last_seq, shard.journal_durable_seq
            );
        }
    }
    // Measured after the engine run (its latency figures are taken above), with as many
    // connections as the engine opened, so both use the sink the same way.
    let ceiling = if args.no_ceiling {
        None
    } else {
        let connections = match args.ceiling_connections {
            0 => usize::try_from(connections)
                .unwrap_or(herald_sink::LOAD_CONNECTIONS_MAX)
                .clamp(1, herald_sink::LOAD_CONNECTIONS_MAX),
            n => n,
        };
        Some(measure_ceiling(
            &sink,
            &args,
            connections,
            deliveries_expected.min(500_000),
        )?)
    };
    let ceiling_per_s = ceiling.as_ref().map(|c| c.per_s);
    if let Some(ceiling_per_s) = ceiling_per_s {
        println!(
            "engine / raw loopback ceiling: {:.2}",
            deliveries_per_s / ceiling_per_s
        );
    }
    let json = serde_json::json!({
        "events": args.events,
        "tenants": args.tenants,
        "fanout": args.fanout,
        "payload_bytes": args.payload_bytes,
        "tls": args.tls,
        "shards": herald.shards(),
        "deliveries": deliveries_expected,
        "deliveries_per_s": deliveries_per_s.round(),
        "publish_per_s": publish_per_s.round(),
        "p50_us": latency.value_at_quantile(0.5),
        "p99_us": latency.value_at_quantile(0.99),
        "max_us": latency.max(),
        "ceiling_per_s": ceiling_per_s.map(f64::round),
        "ratio_to_ceiling": ceiling_per_s.map(|c| (deliveries_per_s / c * 1000.0).round() / 1000.0),
    });
    println!("{json}");
    Ok(())
}

/// The raw loopback ceiling: the same sink, the same request sizes, `connections`
/// keep-alive connections, no journal, scheduling or signing.
fn measure_ceiling(
    sink: &Sink,
    args: &Args,
    connections: usize,
    requests: u64,
) -> Result<herald_sink::LoadReport, Failure> {
    sink.reset_latency();
    let report = run_load(
        sink.addr(),
        &LoadConfig {
            connections,
            requests,
            target: "/ceiling".into(),
            // The engine's envelope adds about 200 bytes around the data.
            payload_bytes: args.payload_bytes + 200,
            latency_field: Some(LATENCY_FIELD.into()),
            // Same header sizes as a Standard Webhooks signature.
            headers: vec![
                ("User-Agent".into(), "herald/0.1.0".into()),
                ("webhook-id".into(), format!("evt_{}", "0".repeat(32))),
                ("webhook-timestamp".into(), "1795334400".into()),
                (
                    "webhook-signature".into(),
                    format!("v1,{}=", "A".repeat(43)),
                ),
            ],
            tls_ca_pem: sink.ca_pem().map(str::to_owned),
        },
    )?;
    let latency = sink.latency();
    println!(
        "ceiling: {} requests over {connections} keep-alive connections in {:.2} s: {:.0}/s, p50 {} µs, p99 {} µs",
        report.requests,
        report.elapsed.as_secs_f64(),
        report.per_s,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99)
    );
    Ok(report)
}

/// Waits for one receipt (the event is durable once it resolves) and counts it.
fn settle(receipt: Option<PublishReceipt>, published: &AtomicU64) -> Result<(), String> {
    if let Some(receipt) = receipt {
        receipt.wait().map_err(|e| format!("publish failed: {e}"))?;
        published.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
