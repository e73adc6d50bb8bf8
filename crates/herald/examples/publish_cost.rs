//! What accepting an event costs, without deliveries: an engine whose tenants have no
//! webhooks, publishers handing events over one at a time (`try_publish`, a window of
//! receipts) or in batches of one tenant (`try_publish_batch_detailed_async`). Every
//! event is validated, enveloped, journaled and made durable; none is sent.
//!
//! ```text
//! cargo run --release -p herald --example publish_cost -- [--events 400000] [--batch 1]
//!     [--payload-bytes 1024] [--tenants 16] [--publishers 2] [--window 2048]
//! ```
//!
//! Prints one JSON line: events/s and the process's CPU µs per event (publishers and
//! shards together; the system allocator, not the `herald` binary's mimalloc). Compare
//! a batch of 1 with larger ones in alternated runs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use herald::{Event, EventType, Herald, TenantId, Unsent};

#[path = "support/cpu.rs"]
mod cpu;
use cpu::cpu_us;

/// The flags, their defaults and their largest values.
const FLAGS: [(&str, usize, usize); 6] = [
    ("--events", 400_000, 100_000_000),
    ("--batch", 1, herald::PUBLISH_BATCH_MAX),
    ("--payload-bytes", 1024, 1 << 20),
    ("--tenants", 16, 100_000),
    ("--publishers", 2, 64),
    ("--window", 2048, 1 << 20),
];

/// The flags' values, in `FLAGS` order; an unknown flag, a missing value or one out of
/// range is refused.
fn parse(args: &[String]) -> Result<[usize; 6], String> {
    let mut values = FLAGS.map(|(_, default, _)| default);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let Some(at) = FLAGS.iter().position(|(name, _, _)| name == flag) else {
            let known: Vec<&str> = FLAGS.iter().map(|(name, _, _)| *name).collect();
            return Err(format!(
                "unknown argument {flag:?}; known: {}",
                known.join(" ")
            ));
        };
        let (name, _, max) = FLAGS[at];
        let value = rest.next().ok_or_else(|| format!("{name} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("{name}: not a number: {value}"))?;
        if n == 0 || n > max {
            return Err(format!("{name} must be 1..={max}, got {n}"));
        }
        values[at] = n;
    }
    Ok(values)
}

/// What a batch hand-off resolves to: one answer per event.
type BatchAnswers = Result<Vec<Result<herald::Published, herald::Error>>, herald::Error>;

/// One publisher's outstanding hand-offs.
enum Outstanding {
    Event(herald::PublishReceipt),
    Batch(std::pin::Pin<Box<dyn std::future::Future<Output = BatchAnswers> + Send>>),
}

fn settle(outstanding: Outstanding) -> Result<(), String> {
    match outstanding {
        Outstanding::Event(receipt) => receipt.wait().map(|_| ()).map_err(|e| e.to_string()),
        Outstanding::Batch(receipt) => {
            let answers = futures_lite::future::block_on(receipt).map_err(|e| e.to_string())?;
            answers
                .into_iter()
                .try_for_each(|a| a.map(|_| ()).map_err(|e| e.to_string()))
        }
    }
}

/// Hands `events` (one tenant's) over, waiting for the oldest hand-off under
/// back-pressure (taken off `outstanding` and `window_events`).
fn hand_over(
    herald: &Herald,
    tenant: &TenantId,
    mut events: Vec<Event>,
    outstanding: &mut VecDeque<(usize, Outstanding)>,
    window_events: &mut usize,
) -> Result<Outstanding, String> {
    loop {
        let handed = if events.len() == 1 {
            let event = events.pop().expect("one event");
            herald.try_publish(tenant, event).map(Outstanding::Event)
        } else {
            herald
                .try_publish_batch_detailed_async(tenant, events)
                .map(|r| Outstanding::Batch(Box::pin(r)))
        };
        match handed {
            Ok(o) => return Ok(o),
            Err(error @ herald::Error::Backpressure { .. }) => {
                events = match error.into_unsent() {
                    Some(Unsent::Event { event, .. }) => vec![*event],
                    Some(Unsent::Events { events, .. }) => events,
                    _ => return Err("back-pressure without the events".into()),
                };
                // The queue is full: the oldest hand-off resolving makes room.
                match outstanding.pop_front() {
                    Some((n, oldest)) => {
                        *window_events -= n;
                        settle(oldest)?;
                    }
                    None => std::thread::sleep(Duration::from_micros(100)),
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn main() {
    if let Err(error) = run() {
        eprintln!("publish_cost: {error}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [events, batch, payload, tenants, publishers, window] = parse(&args)?;
    if window < batch {
        return Err(format!("--window {window} is smaller than --batch {batch}").into());
    }
    if events < publishers {
        return Err(format!("--events {events} is fewer than --publishers {publishers}").into());
    }
    let dir = tempfile::tempdir()?;
    let herald = Herald::builder().data_dir(dir.path()).start()?;
    let tenant_ids: Vec<TenantId> = (0..tenants)
        .map(|t| TenantId::parse(&format!("tenant-{t}")))
        .collect::<Result<_, _>>()?;
    let event_type = EventType::parse("order.created")?;
    let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(payload.saturating_sub(10)));

    let started = Instant::now();
    let cpu_before = cpu_us();
    // Each publisher's share; the remainder goes to the first ones.
    let share = |p: usize| events / publishers + usize::from(p < events % publishers);
    std::thread::scope(|scope| -> Result<(), String> {
        let handles: Vec<_> = (0..publishers)
            .map(|p| {
                let (herald, tenant_ids, event_type, data) =
                    (&herald, &tenant_ids, &event_type, &data);
                scope.spawn(move || -> Result<(), String> {
                    let mut window_events = 0usize;
                    let mut outstanding: VecDeque<(usize, Outstanding)> = VecDeque::new();
                    let mut sent = 0;
                    let mut chunk = p;
                    while sent < share(p) {
                        let count = batch.min(share(p) - sent);
                        let tenant = &tenant_ids[chunk % tenant_ids.len()];
                        chunk += publishers;
                        while window_events + count > window {
                            let (n, oldest) = outstanding.pop_front().ok_or("window empty")?;
                            window_events -= n;
                            settle(oldest)?;
                        }
                        let made = (0..count)
                            .map(|_| {
                                Event::from_json_bytes(event_type.clone(), data.as_bytes().to_vec())
                            })
                            .collect();
                        let handed =
                            hand_over(herald, tenant, made, &mut outstanding, &mut window_events)?;
                        outstanding.push_back((count, handed));
                        window_events += count;
                        sent += count;
                    }
                    for (_, o) in outstanding {
                        settle(o)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a publisher panicked".to_owned())??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_us() - cpu_before) as f64;
    herald.shutdown()?;
    println!(
        "{{\"events\":{events},\"batch\":{batch},\"events_per_s\":{:.0},\"cpu_us_per_event\":{:.3}}}",
        events as f64 / elapsed,
        cpu / events as f64
    );
    Ok(())
}
