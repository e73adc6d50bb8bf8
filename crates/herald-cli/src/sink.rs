//! `herald sink`: a webhook receiver for trying Herald (or any sender) out and for
//! measuring it: keep-alive HTTP/1.1 on an event loop (one thread by default, so it
//! takes little from the sender it measures and holds thousands of idle connections),
//! optional TLS, optional signature verification, and a rate line every second.
//!
//! To stand in for a real receiver when planning capacity, its answers can follow a
//! seeded model: `--status-mix 200:97,500:2,429:1`, `--latency-ms 5,p99=50` (log-normal
//! through the median and p99, or one number for a fixed delay), `--retry-after SECS` on
//! 429/503, `--seed N` to repeat a run's draws.
//!
//! Exit codes: 0 after `--duration-s` (or never, until killed); 2 usage errors (bad
//! arguments, an unusable secret, an address that cannot be bound).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_sign::Scheme;
use herald_sink::{Action, LatencyModel, Sink, Stats, StatusMix};

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
    #[arg(long, value_name = "PATH", conflicts_with = "cert")]
    ca_out: Option<PathBuf>,
    /// Serve https with this certificate chain (PEM, the leaf first) instead of a
    /// generated one: for a remote Herald that trusts its issuer (`[egress]
    /// extra_ca_pems`). Needs --key.
    #[arg(long, value_name = "PATH", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "PATH", requires = "cert")]
    key: Option<PathBuf>,
    /// Listening sockets: the first on --listen, the others on the following ports (or
    /// free ones with port 0). Each is a separate origin to a sender, which caps
    /// connections per origin (Herald: 32 per shard).
    #[arg(long, value_name = "N", default_value_t = 1)]
    listeners: usize,
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
    #[arg(long, default_value_t = 200, conflicts_with = "status_mix")]
    status: u16,
    /// Statuses drawn per request in proportion to weights, e.g. 200:97,500:2,429:1.
    #[arg(long, value_name = "STATUS:WEIGHT,..")]
    status_mix: Option<StatusMix>,
    /// `Retry-After` seconds to send with every 429 and 503 answer.
    #[arg(long, value_name = "SECS")]
    retry_after: Option<u64>,
    /// Wait before answering: MS for a fixed delay, or MEDIAN,p99=MS for a log-normal
    /// through those two points, e.g. 5,p99=50 (whole ms, at most 60000; a waiting
    /// answer holds no thread).
    #[arg(long, value_name = "MS[,p99=MS]", alias = "delay-ms")]
    latency_ms: Option<LatencyModel>,
    /// Seed of the --status-mix and --latency-ms draws [default: from the clock, printed
    /// at start].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
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

/// Checks the arguments and starts the sink; returns it with the line describing its
/// answers.
fn start(args: &SinkArgs) -> Result<(Sink, String), String> {
    if args.duration_s.is_some_and(|s| s > DURATION_S_MAX) {
        return Err(format!("--duration-s is at most {DURATION_S_MAX}"));
    }
    let seed = args.seed.unwrap_or_else(|| {
        // Any value will do; it is printed so that the run can be repeated.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let answers = describe_answers(args, seed);
    let scheme = match (args.scheme.clone(), args.header.clone()) {
        (Scheme::Stripe { .. }, Some(header)) => Scheme::Stripe { header },
        (_, Some(_)) => return Err("--header applies to --scheme stripe only".into()),
        (scheme, None) => scheme,
    };
    let mut builder = Sink::builder()
        .listen(args.listen)
        .listeners(args.listeners)
        .default_action(Action::Status(args.status))
        .seed(seed)
        .connections_max(args.connections_max)
        .threads(args.threads)
        // Counters only: a long run must not accumulate bodies.
        .requests_max(0);
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
        };
        builder = builder.tls_identity(read(cert)?, read(key)?);
    } else if args.tls || args.ca_out.is_some() {
        let path = args
            .ca_out
            .clone()
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
    if let Some(mix) = args.status_mix.clone() {
        builder = builder.status_mix(mix);
    }
    if let Some(model) = args.latency_ms.clone() {
        builder = builder.answer_latency(model);
    }
    if let Some(seconds) = args.retry_after {
        builder = builder.retry_after_s(seconds);
    }
    let sink = builder.start().map_err(|e| e.to_string())?;
    Ok((sink, answers))
}

fn serve(args: SinkArgs) -> Result<(), String> {
    let (sink, answers) = start(&args)?;
    // The sink's lines are its output: once standard output is closed (`| head -1` has
    // exited), it stops, as `yes | head` does.
    let mut open = true;
    for i in 0..sink.addrs().len() {
        open &= crate::say(format_args!("listening on {}", sink.url_on(i, "/")));
    }
    open &= crate::say(format_args!("answers: {answers}"));
    if let Some(path) = sink.ca_pem_path() {
        open &= crate::say(format_args!(
            "CA certificate (trust it in the sender): {}",
            path.display()
        ));
    }
    if !open {
        sink.shutdown();
        return Ok(());
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
        if !crate::say(format_args!(
            "{}",
            rate_line(tick, &previous, &stats, &sink)
        )) {
            break;
        }
        previous = stats;
        if args.duration_s.is_some_and(|limit| tick >= limit) {
            break;
        }
        tick += 1;
    }
    sink.shutdown();
    Ok(())
}

/// One line saying how requests are answered, e.g. `status mix 200:97,500:2,429:1,
/// latency 5,p99=50 ms, Retry-After 5 s on 429/503, seed 42`.
fn describe_answers(args: &SinkArgs, seed: u64) -> String {
    let mut parts = vec![match &args.status_mix {
        Some(mix) => format!("status mix {mix}"),
        None => format!("status {}", args.status),
    }];
    if let Some(model) = &args.latency_ms {
        parts.push(format!("latency {model} ms"));
    }
    if let Some(seconds) = args.retry_after {
        parts.push(format!("Retry-After {seconds} s on 429/503"));
    }
    let drawn = args.status_mix.is_some()
        || matches!(args.latency_ms, Some(LatencyModel::LogNormal { .. }));
    if drawn {
        parts.push(format!("seed {seed}"));
    }
    parts.join(", ")
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
    if now.statuses.len() > 1 {
        let statuses: Vec<String> = now
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}:{n}"))
            .collect();
        line.push_str(&format!(" statuses={}", statuses.join(",")));
    }
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
    fn receiver_model_arguments() {
        let parsed = args(&[
            "--status-mix",
            "200:97,500:2,429:1",
            "--latency-ms",
            "5,p99=50",
            "--retry-after",
            "5",
            "--seed",
            "42",
        ]);
        assert_eq!(
            describe_answers(&parsed, 42),
            "status mix 200:97,500:2,429:1, latency 5,p99=50 ms, Retry-After 5 s on 429/503, seed 42"
        );
        let fixed = args(&["--latency-ms", "20", "--status", "503"]);
        assert_eq!(fixed.latency_ms, Some(LatencyModel::Fixed { ms: 20 }));
        assert_eq!(describe_answers(&fixed, 1), "status 503, latency 20 ms");
        let old_spelling = args(&["--delay-ms", "7"]);
        assert_eq!(old_spelling.latency_ms, Some(LatencyModel::Fixed { ms: 7 }));
        for bad in [
            &["--status-mix", "200:0"][..],
            &["--status-mix", "200"],
            &["--latency-ms", "50,p99=5"],
            &["--latency-ms", "60001"],
            &["--status", "500", "--status-mix", "200:1"],
            &["--seed", "-1"],
        ] {
            let parsed =
                Wrapper::try_parse_from(std::iter::once("sink").chain(bad.iter().copied()));
            assert!(parsed.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_model_flags_reach_the_sink() {
        use std::io::{Read, Write};
        let (sink, answers) = start(&args(&[
            "--status-mix",
            "503:1",
            "--retry-after",
            "9",
            "--latency-ms",
            "1",
        ]))
        .unwrap();
        assert!(answers.starts_with("status mix 503:1"), "{answers}");
        let mut stream = std::net::TcpStream::connect(sink.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("\r\nRetry-After: 9\r\n"), "{answer}");
        assert_eq!(sink.stats().status_count(503), 1);
    }

    #[test]
    fn listeners_and_a_given_certificate_reach_the_sink() {
        let (sink, _) = start(&args(&["--listeners", "3"])).unwrap();
        assert_eq!(sink.addrs().len(), 3);
        for addr in sink.addrs() {
            assert!(std::net::TcpStream::connect(addr).is_ok(), "{addr}");
        }
        let missing = args(&[
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k.pem",
        ]);
        let err = start(&missing).unwrap_err();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
        assert!(
            Wrapper::try_parse_from(["sink", "--cert", "c.pem"]).is_err(),
            "--cert needs --key"
        );
        assert!(Wrapper::try_parse_from([
            "sink", "--cert", "c.pem", "--key", "k.pem", "--ca-out", "ca.pem"
        ])
        .is_err());
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
        assert!(line.ends_with(" statuses=200:20,500:5"), "{line}");
    }
}
