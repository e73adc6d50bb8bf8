//! `herald sink`: a webhook receiver for trying Herald (or any sender) out and for
//! measuring it: keep-alive HTTP/1.1 on an event loop (one thread by default, so it
//! takes little from the sender it measures and holds thousands of idle connections),
//! optional TLS, optional signature verification, and a rate line every second.
//!
//! Exit codes: 0 after `--duration-s` (or never, until killed); 2 usage errors (bad
//! arguments, an unusable secret, an address that cannot be bound).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use herald_sign::Scheme;
use herald_sink::{Action, Sink, Stats};

const EXIT_USAGE: u8 = 2;

/// Longest run asked for with `--duration-s`: one day.
pub const DURATION_S_MAX: u64 = 86_400;

/// Arguments of `herald sink`.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve https with a freshly generated CA (certificate for localhost and 127.0.0.1).
    #[arg(long)]
    tls: bool,
    /// Where to write the CA PEM senders must trust [default: herald-sink-ca.pem in the
    /// temporary directory]. Implies --tls.
    #[arg(long, value_name = "PATH")]
    ca_out: Option<PathBuf>,
    /// Verify signatures with this secret (repeat for rotation; `whpk_…` public keys for
    /// ed25519) and count failures.
    #[arg(long = "secret", value_name = "SECRET")]
    secrets: Vec<String>,
    /// Signature scheme of --secret: standard, ed25519, stripe or olo.
    #[arg(long, default_value = "standard")]
    scheme: Scheme,
    /// Signature header for the stripe scheme [default: X-Olympus-Signature].
    #[arg(long, value_name = "NAME")]
    header: Option<String>,
    /// Status to answer every request with (200..=599).
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// `Retry-After` seconds to send with --status (e.g. 429 or 503).
    #[arg(long, value_name = "SECS")]
    retry_after: Option<u64>,
    /// Wait this long before answering each request (at most 60000).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
    /// Measure publish→arrival latency from this JSON field of each body (Unix ns).
    #[arg(long, value_name = "FIELD")]
    latency_field: Option<String>,
    /// Most connections served at once (the soft descriptor limit is raised to fit).
    #[arg(long, default_value_t = herald_sink::CONNECTIONS_MAX_DEFAULT)]
    connections_max: usize,
    /// Event-loop threads serving the connections.
    #[arg(long, value_name = "N", default_value_t = herald_sink::THREADS_DEFAULT)]
    threads: usize,
    /// Stop after this many seconds [default: run until killed].
    #[arg(long, value_name = "SECS")]
    duration_s: Option<u64>,
}

/// Runs `herald sink`.
pub fn run(args: SinkArgs) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("herald sink: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn serve(args: SinkArgs) -> Result<(), String> {
    if args.duration_s.is_some_and(|s| s > DURATION_S_MAX) {
        return Err(format!("--duration-s is at most {DURATION_S_MAX}"));
    }
    let mut action = match args.retry_after {
        Some(seconds) => Action::RetryAfter {
            status: args.status,
            seconds,
        },
        None => Action::Status(args.status),
    };
    if args.delay_ms > 0 {
        action = Action::delay(args.delay_ms, action);
    }
    let scheme = match (args.scheme, args.header) {
        (Scheme::Stripe { .. }, Some(header)) => Scheme::Stripe { header },
        (_, Some(_)) => return Err("--header applies to --scheme stripe only".into()),
        (scheme, None) => scheme,
    };
    let mut builder = Sink::builder()
        .listen(args.listen)
        .default_action(action)
        .connections_max(args.connections_max)
        .threads(args.threads)
        // Counters only: a long run must not accumulate bodies.
        .requests_max(0);
    let tls = args.tls || args.ca_out.is_some();
    if tls {
        let path = args
            .ca_out
            .unwrap_or_else(|| std::env::temp_dir().join("herald-sink-ca.pem"));
        builder = builder.ca_pem_out(path);
    }
    if !args.secrets.is_empty() {
        let keys: Vec<&str> = args.secrets.iter().map(String::as_str).collect();
        builder = builder.verify(scheme, &keys);
    }
    if let Some(field) = &args.latency_field {
        builder = builder.latency_field(field);
    }
    let sink = builder.start().map_err(|e| e.to_string())?;
    println!("listening on {}", sink.url("/"));
    if let Some(path) = sink.ca_pem_path() {
        println!(
            "CA certificate (trust it in the sender): {}",
            path.display()
        );
    }

    let started = Instant::now();
    let mut previous = Stats::default();
    let mut tick = 1u64;
    loop {
        // Sleep to the next whole second since start, so lines do not drift.
        let next = started + Duration::from_secs(tick);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let stats = sink.stats();
        println!("{}", rate_line(tick, &previous, &stats, &sink));
        previous = stats;
        if args.duration_s.is_some_and(|limit| tick >= limit) {
            break;
        }
        tick += 1;
    }
    sink.shutdown();
    Ok(())
}

fn rate_line(second: u64, previous: &Stats, now: &Stats, sink: &Sink) -> String {
    let mut line = format!(
        "t={second}s rate={}/s requests={} ok={} not_ok={} verify_failed={} bad_requests={} connections={}",
        now.requests - previous.requests,
        now.requests,
        now.successes(),
        now.statuses.iter().map(|(_, n)| n).sum::<u64>() - now.successes(),
        now.verify_failed,
        now.bad_requests,
        now.connections_open,
    );
    let latency = sink.latency();
    if !latency.is_empty() {
        line.push_str(&format!(
            " p50_us={} p99_us={} max_us={}",
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
            latency.max()
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SinkArgs,
    }

    fn args(extra: &[&str]) -> SinkArgs {
        Wrapper::try_parse_from(std::iter::once("sink").chain(extra.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn usage_errors_stop_before_serving() {
        let cases: &[(&[&str], &str)] = &[
            (&["--scheme", "olo", "--header", "X"], "--header"),
            (&["--duration-s", "86401"], "--duration-s"),
            (&["--status", "42", "--duration-s", "1"], "status 42"),
            (&["--delay-ms", "60001", "--duration-s", "1"], "delay_ms"),
            (
                &["--secret", "nope", "--duration-s", "1"],
                "verification keys",
            ),
            (
                &["--connections-max", "0", "--duration-s", "1"],
                "connections_max",
            ),
            (&["--threads", "0", "--duration-s", "1"], "threads"),
        ];
        for (extra, needle) in cases {
            let message = serve(args(extra)).unwrap_err();
            assert!(message.contains(needle), "{extra:?}: {message}");
        }
    }

    #[test]
    fn arguments_parse() {
        let parsed = args(&[
            "--listen",
            "127.0.0.1:9000",
            "--scheme",
            "stripe",
            "--header",
            "Crumb-Signature",
            "--secret",
            "a",
            "--secret",
            "b",
        ]);
        assert_eq!(parsed.listen.port(), 9000);
        assert_eq!(parsed.secrets, ["a", "b"]);
        assert_eq!(parsed.scheme, Scheme::stripe());
        assert!(Wrapper::try_parse_from(["sink", "--scheme", "hmac"]).is_err());
    }

    #[test]
    fn rate_line_reports_the_difference() {
        let sink = Sink::start_default().unwrap();
        let previous = Stats {
            requests: 10,
            ..Stats::default()
        };
        let now = Stats {
            requests: 25,
            statuses: vec![(200, 20), (500, 5)],
            ..Stats::default()
        };
        let line = rate_line(3, &previous, &now, &sink);
        assert!(
            line.starts_with("t=3s rate=15/s requests=25 ok=20 not_ok=5"),
            "{line}"
        );
    }
}
