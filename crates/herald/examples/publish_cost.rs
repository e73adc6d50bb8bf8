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
//! shards together). Compare a batch of 1 with larger ones in alternated runs.

use std::collections::VecDeque;
use std::time::Instant;

use herald::{Event, EventType, Herald, TenantId};

#[path = "support/cpu.rs"]
mod cpu;
use cpu::cpu_ticks;

fn arg(args: &[String], name: &str, default: usize, max: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => {
            let value = args
                .get(i + 1)
                .ok_or_else(|| format!("{name} needs a value"))?;
            let n: usize = value
                .parse()
                .map_err(|_| format!("{name}: not a number: {value}"))?;
            if n == 0 || n > max {
                return Err(format!("{name} must be 1..={max}, got {n}"));
            }
            Ok(n)
        }
    }
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let events = arg(&args, "--events", 400_000, 100_000_000)?;
    let batch = arg(&args, "--batch", 1, herald::PUBLISH_BATCH_MAX)?;
    let payload = arg(&args, "--payload-bytes", 1024, 1 << 20)?;
    let tenants = arg(&args, "--tenants", 16, 100_000)?;
    let publishers = arg(&args, "--publishers", 2, 64)?;
    let window = arg(&args, "--window", 2048, 1 << 20)?.max(batch);
    let dir = tempfile::tempdir()?;
    let herald = Herald::builder().data_dir(dir.path()).start()?;
    let tenant_ids: Vec<TenantId> = (0..tenants)
        .map(|t| TenantId::parse(&format!("tenant-{t}")))
        .collect::<Result<_, _>>()?;
    let event_type = EventType::parse("order.created")?;
    let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(payload.saturating_sub(10)));

    let started = Instant::now();
    let cpu_before = cpu_ticks();
    let per_publisher = events / publishers;
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
                    while sent < per_publisher {
                        let count = batch.min(per_publisher - sent);
                        let tenant = &tenant_ids[chunk % tenant_ids.len()];
                        chunk += publishers;
                        while window_events + count > window {
                            let (n, oldest) = outstanding.pop_front().ok_or("window empty")?;
                            window_events -= n;
                            settle(oldest)?;
                        }
                        let make =
                            || Event::from_json_bytes(event_type.clone(), data.as_bytes().to_vec());
                        let handed = if batch == 1 {
                            herald.try_publish(tenant, make()).map(Outstanding::Event)
                        } else {
                            let batch_events: Vec<Event> = (0..count).map(|_| make()).collect();
                            herald
                                .try_publish_batch_detailed_async(tenant, batch_events)
                                .map(|r| Outstanding::Batch(Box::pin(r)))
                        };
                        match handed {
                            Ok(o) => {
                                outstanding.push_back((count, o));
                                window_events += count;
                                sent += count;
                            }
                            Err(herald::Error::Backpressure { .. }) => {
                                // Made again on the next round: the queue is full, the
                                // oldest hand-off resolving makes room.
                                chunk -= publishers;
                                match outstanding.pop_front() {
                                    Some((n, oldest)) => {
                                        window_events -= n;
                                        settle(oldest)?;
                                    }
                                    None => std::thread::yield_now(),
                                }
                            }
                            Err(e) => return Err(e.to_string()),
                        }
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
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    let cpu_us = (cpu_ticks() - cpu_before) as f64 * 10_000.0;
    let published = per_publisher * publishers;
    herald.shutdown()?;
    println!(
        "{{\"events\":{published},\"batch\":{batch},\"events_per_s\":{:.0},\"cpu_us_per_event\":{:.3}}}",
        published as f64 / elapsed,
        cpu_us / published as f64
    );
    Ok(())
}
