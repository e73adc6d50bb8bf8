//! WebSocket fan-out figure: N stream clients on one tenant of an in-process
//! `herald serve`, one publisher posting batches over the REST API as fast as they are
//! acknowledged (closed loop). Reports events/s delivered to clients (all clients
//! together) and the publish→client latency (from just before the batch is sent, so it
//! includes the journal sync that must precede delivery) at p50/p99/max.
//!
//! ```text
//! cargo run --release -p herald-api --example ws_fanout -- --clients 1,10,100 --events 20000
//! ```
//!
//! Clients, publisher and server share the machine: on a small one the clients' own
//! JSON parsing competes with the server for CPU, so the figures are a lower bound.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ADMIN_KEY: &str = "ws-fanout-admin-key-0123456789";
/// Events per `POST /v1/events/batch`.
const BATCH: usize = 100;
/// How long a client waits for one frame before giving up (a stuck run ends).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One blocking HTTP/1.1 exchange on a keep-alive connection; returns status and body.
fn http(
    stream: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .expect("request written");
    let mut status_line = String::new();
    stream.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a length");
            }
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("the server accepts");
    stream.set_nodelay(true).expect("nodelay");
    BufReader::new(stream)
}

struct Figures {
    clients: usize,
    delivered: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn run(addr: SocketAddr, key: &str, clients: usize, events: usize) -> Figures {
    let mut readers = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for _ in 0..clients {
        let url = format!("ws://{addr}/v1/ws?events=bench.*");
        let key = key.to_string();
        let ready = ready_tx.clone();
        readers.push(std::thread::spawn(move || {
            use tungstenite::client::IntoClientRequest;
            let mut request = url.into_client_request().expect("url");
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {key}").parse().expect("header"),
            );
            let stream = TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(READ_TIMEOUT))
                .expect("timeout");
            let (mut ws, _) = tungstenite::client::client(request, stream).expect("handshake");
            ready.send(()).expect("main waits");
            let mut latencies = Vec::with_capacity(events);
            while latencies.len() < events {
                match ws.read().expect("a frame") {
                    tungstenite::Message::Text(text) => {
                        let received = now_ns();
                        let value: serde_json::Value =
                            serde_json::from_str(text.as_str()).expect("JSON");
                        let sent = value["data"]["t_ns"].as_u64().expect("t_ns");
                        latencies.push(received.saturating_sub(sent));
                    }
                    tungstenite::Message::Close(frame) => panic!("closed: {frame:?}"),
                    _ => {}
                }
            }
            let _ = ws.close(None);
            (latencies, Instant::now())
        }));
    }
    drop(ready_tx);
    for _ in 0..clients {
        ready_rx.recv().expect("a client connected");
    }
    let mut publisher = connect(addr);
    let started = Instant::now();
    let mut sent = 0;
    while sent < events {
        let n = BATCH.min(events - sent);
        let t_ns = now_ns();
        let batch: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({"type": "bench.tick", "data": {"t_ns": t_ns, "n": sent + i}})
            })
            .collect();
        let body = serde_json::json!({ "events": batch }).to_string();
        let (status, answer) = http(&mut publisher, "POST", "/v1/events/batch", key, &body);
        assert!(status < 300, "publish answered {status}: {answer}");
        sent += n;
    }
    let mut all = Vec::with_capacity(clients * events);
    let mut finished = started;
    for reader in readers {
        let (latencies, at) = reader.join().expect("a client finished");
        all.extend(latencies);
        finished = finished.max(at);
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize] as f64 / 1e6;
    Figures {
        clients,
        delivered: all.len(),
        seconds: finished.duration_since(started).as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

fn main() {
    let mut clients_list = vec![1usize, 10, 100];
    let mut events = 20_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--clients" => {
                clients_list = value
                    .split(',')
                    .map(|n| n.parse().expect("--clients N[,N…]"))
                    .collect()
            }
            "--events" => events = value.parse().expect("--events N"),
            _ => {
                eprintln!("usage: ws_fanout [--clients 1,10,100] [--events 20000]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "| clients | events published | deliveries | deliveries/s | p50 ms | p99 ms | max ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for clients in clients_list {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = herald_api::Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().to_path_buf(),
            shards: 1,
            ..herald_api::Config::default()
        };
        config.limits.body_bytes_max = 1 << 20;
        config.ws.connections_per_tenant_max = clients.max(1);
        // Every client comes from this host's one address.
        config.limits.connections_per_address_max = config.limits.connections_max;
        let server =
            herald_api::Server::start(config, Some(ADMIN_KEY.to_string())).expect("server starts");
        let addr = server.local_addr();
        let mut admin = connect(addr);
        let (status, created) = http(
            &mut admin,
            "POST",
            "/v1/tenants",
            ADMIN_KEY,
            r#"{"id":"bench"}"#,
        );
        assert_eq!(status, 201, "{created}");
        let created: serde_json::Value = serde_json::from_str(&created).expect("JSON");
        let key = created["api_key"].as_str().expect("api_key").to_string();
        let figures = run(addr, &key, clients, events);
        println!(
            "| {} | {events} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
            figures.clients,
            figures.delivered,
            figures.delivered as f64 / figures.seconds,
            figures.p50_ms,
            figures.p99_ms,
            figures.max_ms
        );
        server.shutdown().expect("clean stop");
    }
}
