//! Micro figure: sequential POSTs over one keep-alive connection to a local receiver.
//!
//! ```text
//! cargo run --release -p herald-rt --example keepalive_loop -- [--requests N] [--body-bytes B] [--tls]
//! ```
//!
//! Prints requests/s for `HttpClient::send` and two baselines over their own keep-alive
//! connections to the same receiver: a blocking std client, and a bare glommio
//! write/read loop (same executor settings, no pool, parser or timers). The ratio to the
//! glommio loop is the client's own overhead; compare ratios across runs, as this VM is
//! noisy.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use herald_rt::{Cidr, ClientConfig, HttpClient, OutboundRequest, TrustAnchors};

struct Args {
    requests: usize,
    body_bytes: usize,
    tls: bool,
}

/// CPU time this thread has run, in ns (the first field of schedstat). Wall-clock rates
/// on a shared 2-core VM swing with the neighbours' load; CPU per request does not.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn parse_args() -> Args {
    let mut args = Args {
        requests: 20_000,
        body_bytes: 256,
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--requests" => args.requests = number("--requests"),
            "--body-bytes" => args.body_bytes = number("--body-bytes"),
            "--tls" => args.tls = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    // The receiver: herald-sink on its event loop, answering 200 with keep-alive.
    let sink = herald_sink::Sink::builder()
        .tls(args.tls)
        .start()
        .expect("the sink starts");
    let addr = sink.addr();
    let ca_pem = sink.ca_pem().map(str::to_owned);
    // The sink's 200: the bytes the baselines read back per request.
    let mut ok = Vec::new();
    herald_http::encode_response(&mut ok, 200, &[], b"").unwrap();
    let response_bytes = ok.len();

    let body = vec![b'x'; args.body_bytes];
    let scheme = if args.tls { "https" } else { "http" };
    let url =
        herald_http::Url::parse(&format!("{scheme}://localhost:{}/hook", addr.port())).unwrap();

    // The baselines send these bytes: what the client encodes for the same request.
    let mut wire = Vec::new();
    herald_http::encode_request(
        &mut wire,
        "POST",
        &url.target,
        &url.host_header(),
        &[("Content-Type", b"application/json")],
        &body,
    )
    .unwrap();

    // The ceiling: a blocking client, same request bytes (plain only).
    let ceiling = if args.tls {
        None
    } else {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut response = vec![0u8; response_bytes];
        let started = Instant::now();
        for _ in 0..args.requests {
            stream.write_all(&wire).unwrap();
            stream.read_exact(&mut response).unwrap();
        }
        Some(args.requests as f64 / started.elapsed().as_secs_f64())
    };

    // The glommio floor: the same exchange with nothing but the socket (plain only).
    let requests = args.requests;
    let raw_glommio = if args.tls {
        None
    } else {
        let rate = glommio::LocalExecutorBuilder::default()
            .io_memory(512 * 1024)
            .spawn(move || async move {
                use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut response = vec![0u8; response_bytes];
                let started = Instant::now();
                let cpu = thread_cpu_ns();
                for _ in 0..requests {
                    stream.write_all(&wire).await.unwrap();
                    stream.read_exact(&mut response).await.unwrap();
                }
                let cpu_us = (thread_cpu_ns() - cpu) as f64 / 1e3 / requests as f64;
                (requests as f64 / started.elapsed().as_secs_f64(), cpu_us)
            })
            .unwrap()
            .join()
            .unwrap();
        Some(rate)
    };

    let (rate, cpu_us, stats) = glommio::LocalExecutorBuilder::default()
        .io_memory(512 * 1024)
        .spawn(move || async move {
            let body = bytes::Bytes::from(body);
            let trust = match ca_pem {
                Some(pem) => {
                    let mut trust = TrustAnchors::empty();
                    trust.add_pem(pem.as_bytes()).unwrap();
                    trust
                }
                None => TrustAnchors::empty(),
            };
            let mut config = ClientConfig::new(trust);
            config
                .egress
                .allow(Cidr::parse("127.0.0.0/8").unwrap())
                .unwrap();
            config.egress.allow(Cidr::parse("::1").unwrap()).unwrap();
            let client = HttpClient::new(config);
            // Warm-up: DNS, connect, handshake.
            client
                .send(OutboundRequest::new(url.clone(), body.clone()))
                .await
                .unwrap();
            let started = Instant::now();
            let cpu = thread_cpu_ns();
            for _ in 0..requests {
                let response = client
                    .send(OutboundRequest::new(url.clone(), body.clone()))
                    .await
                    .unwrap();
                assert_eq!(response.status, 200);
            }
            let rate = requests as f64 / started.elapsed().as_secs_f64();
            let cpu_us = (thread_cpu_ns() - cpu) as f64 / 1e3 / requests as f64;
            (rate, cpu_us, client.stats())
        })
        .unwrap()
        .join()
        .unwrap();

    assert_eq!(stats.connections_opened, 1, "one keep-alive connection");
    println!(
        "herald-rt HttpClient ({scheme}, body {} B): {rate:.0} requests/s over 1 connection, {cpu_us:.1} us CPU/request",
        args.body_bytes
    );
    if let (Some(ceiling), Some((floor, floor_cpu_us))) = (ceiling, raw_glommio) {
        println!("blocking std client (same bytes): {ceiling:.0} requests/s");
        println!(
            "bare glommio loop (same bytes): {floor:.0} requests/s, {floor_cpu_us:.1} us CPU/request"
        );
        println!(
            "client/glommio-loop: rate ratio {:.2}, CPU ratio {:.2}",
            rate / floor,
            cpu_us / floor_cpu_us
        );
    }
}
