//! Checks that an idle engine does not spin: starts an engine with pending retries (an
//! endpoint that refuses connections) and measures the process's CPU time while idle.
//!
//! ```text
//! cargo run --release -p herald --example idle_cpu -- [--seconds 3]
//! ```
//!
//! Prints one JSON line: `{"idle_seconds":3,"cpu_ms":…,"pending_deliveries":…}`. A
//! polling shard would burn close to `idle_seconds * 1000` ms per shard.

use std::time::Duration;

use herald::{Event, EventFilter, Herald, RetrySchedule, Scheme, TenantId, Url, WebhookSpec};

#[path = "support/cpu.rs"]
mod cpu;
use cpu::cpu_us;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3)
        .clamp(1, 60);
    let dir = tempfile::tempdir()?;
    let herald = Herald::builder()
        .data_dir(dir.path())
        .shards(2)
        .allow_cidr("127.0.0.0/8")
        .start()?;
    // A port nobody listens on: every attempt fails and waits for its next retry.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let secret = herald_sign::generate_secret(&Scheme::Standard, &[7; 32]);
    for t in 0..4 {
        let tenant = TenantId::parse(&format!("tenant-{t}"))?;
        let mut spec = WebhookSpec::new(
            Url::parse(&format!("http://127.0.0.1:{port}/hook"))?,
            vec![EventFilter::parse("*")?],
            Scheme::Standard,
            secret.clone(),
        );
        spec.retry_schedule = Some(RetrySchedule::new(vec![60_000; 3])?);
        herald.create_webhook(&tenant, spec)?;
        for n in 0..50 {
            herald.publish(&tenant, Event::parse("idle.check", &serde_json::json!(n))?)?;
        }
    }
    // Let the first attempts fail, then measure.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_us();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu_ms = (cpu_us() - before) / 1000;
    let pending: usize = herald
        .stats()?
        .iter()
        .map(|s| s.dispatcher.pending_deliveries)
        .sum();
    herald.shutdown()?;
    println!("{{\"idle_seconds\":{seconds},\"cpu_ms\":{cpu_ms},\"pending_deliveries\":{pending}}}");
    Ok(())
}
