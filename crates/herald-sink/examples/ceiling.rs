//! The raw loopback ceiling: a sink and a minimal keep-alive client in one process.
//!
//! `cargo run --release -p herald-sink --example ceiling -- [REQUESTS] [CONNECTIONS] [PAYLOAD_BYTES] [tls]`

use herald_sink::{run_load, LoadConfig, Sink};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let requests = arg(0, 200_000)?;
    let connections = usize::try_from(arg(1, 8)?)?;
    let payload_bytes = usize::try_from(arg(2, 256)?)?;
    let tls = args.get(3).is_some_and(|s| s == "tls");
    let sink = Sink::builder()
        .tls(tls)
        .requests_max(0)
        .latency_field("sent_unix_ns")
        .start()?;
    let report = run_load(
        sink.addr(),
        &LoadConfig {
            connections,
            requests,
            target: "/ceiling".into(),
            payload_bytes,
            latency_field: Some("sent_unix_ns".into()),
            headers: Vec::new(),
            tls_ca_pem: sink.ca_pem().map(str::to_owned),
        },
    )?;
    let latency = sink.latency();
    println!(
        "{{\"requests\":{},\"connections\":{connections},\"tls\":{tls},\"per_s\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        report.requests,
        report.per_s,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99)
    );
    Ok(())
}
