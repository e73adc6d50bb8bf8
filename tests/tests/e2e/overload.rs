//! Overload at the front door: 10,000 idle connections do not stop new requests from
//! being served (over `connections_max` each newcomer closes the oldest idle
//! connection), and a flood of writes (publishes, batches, webhook changes, recovers,
//! test sends) against a small intake answers 503 with `Retry-After` at once while the
//! server's memory stays bounded.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_e2e::*;
use herald_sink::Sink;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use serde_json::{json, Value};

/// Idle connections opened against the server.
const IDLE_CONNECTIONS: usize = 10_000;
/// Descriptors the test process needs beyond them (the sink, the server's pipes, cargo's).
const DESCRIPTORS_SPARE: u64 = 1_024;
/// The server's cap in the idle test: well below the idle connections, so that most of
/// them must make room for later ones.
const CONNECTIONS_MAX: usize = 1_000;
/// Threads opening the idle connections.
const OPENERS: usize = 10;
/// The last idle connections, opened one after the other once the rest are open.
const NEWEST: usize = 100;
/// Publisher threads in the flood.
const FLOODERS: usize = 48;
/// Bound on the server's resident memory during the flood: a behaviour bound (intake,
/// connections and pending deliveries are all capped), far above what it takes.
const FLOOD_RSS_MAX: u64 = 512 << 20;
/// Bound on the flood: it ends once this many publishes (and
/// [`FLOOD_REFUSALS_PER_ROUTE`] of each other route) got a 503, or fails after
/// [`FLOOD_TIMEOUT`].
const FLOOD_REFUSALS: u64 = 200;
const FLOOD_TIMEOUT: Duration = Duration::from_secs(60);

/// Raises this process's soft descriptor limit to `wanted` (up to the hard limit);
/// panics naming both when the hard limit is lower.
fn fit_descriptors(wanted: u64) {
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|soft| soft >= wanted) {
        return;
    }
    if let Some(hard) = limit.maximum {
        assert!(
            hard >= wanted,
            "this test needs {wanted} file descriptors; the hard RLIMIT_NOFILE is {hard} \
             (raise it, e.g. `ulimit -Hn {wanted}` as root)"
        );
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        },
    )
    .unwrap_or_else(|e| panic!("raising RLIMIT_NOFILE to {wanted}: {e}"));
}

/// Whether the server closed `stream` (end of input or reset), without waiting.
fn closed_by_server(stream: &TcpStream) -> bool {
    stream
        .set_nonblocking(true)
        .expect("a socket can be made non-blocking");
    let mut byte = [0u8; 1];
    let mut reader = stream;
    match reader.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// `VmRSS` of process `pid`, bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The value of an unlabelled gauge in `/metrics`.
fn gauge(server: &Server, name: &str) -> Option<u64> {
    let text = server.client().get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn ten_thousand_idle_connections_do_not_starve_new_requests() {
    fit_descriptors(IDLE_CONNECTIONS as u64 + DESCRIPTORS_SPARE);
    let site = Site::new();
    let server = Server::start(
        &site,
        // Every connection comes from this host's one address: the cap per address is
        // set aside, the test is about the server's.
        &Options::default().config(&format!(
            "[limits]\nconnections_max = {CONNECTIONS_MAX}\nconnections_per_address_max = {IDLE_CONNECTIONS}\n"
        )),
    );
    let addr = server.addr();
    let rss_before = rss_bytes(server.pid());

    let opening = std::time::Instant::now();
    // Connections that never send a byte, opened by a few threads at a time, then the
    // newest few one after the other.
    let opener = |first: usize| {
        move || -> Vec<TcpStream> {
            (first..first + (IDLE_CONNECTIONS - NEWEST) / OPENERS)
                .map(|n| {
                    TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("idle connection {n}: {e}"))
                })
                .collect()
        }
    };
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    let handles: Vec<_> = (0..OPENERS)
        .map(|t| std::thread::spawn(opener(t * (IDLE_CONNECTIONS - NEWEST) / OPENERS)))
        .collect();
    for handle in handles {
        idle.extend(handle.join().expect("an opener panicked"));
    }
    for n in IDLE_CONNECTIONS - NEWEST..IDLE_CONNECTIONS {
        idle.push(
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("idle connection {n}: {e}")),
        );
    }
    let opened_in = opening.elapsed();

    // A new request is served at once (within the client's timeout), and so is a
    // publish: the idle ones cannot hold the server.
    server.client().get("/healthz").expect(200);
    let tenant = create_tenant(&server.admin(), "tenant_idle");
    publish(&tenant, &json!({"type": "order.created", "data": {}}));

    // They made room: the server closed the oldest ones, so that it never holds more
    // than its cap (plus connections closing at this moment).
    let open = wait_until(
        "the server's open connections back under its cap",
        BOUND,
        || gauge(&server, "herald_api_open_connections"),
        |open| open.is_some_and(|n| n <= CONNECTIONS_MAX as u64 + 1),
    )
    .unwrap_or_default();
    let closed = idle.iter().filter(|s| closed_by_server(s)).count();
    assert!(
        closed >= IDLE_CONNECTIONS - CONNECTIONS_MAX,
        "only {closed} of {IDLE_CONNECTIONS} idle connections were closed; the cap is {CONNECTIONS_MAX}"
    );
    // The newest idle ones are still open (the few requests since closed older ones):
    // the oldest made room.
    let newest_open = idle[IDLE_CONNECTIONS - NEWEST..]
        .iter()
        .filter(|s| !closed_by_server(s))
        .count();
    assert!(
        newest_open >= NEWEST / 2,
        "only {newest_open} of the {NEWEST} newest idle connections are open: room was \
         not made from the oldest"
    );
    let rss_after = rss_bytes(server.pid());
    println!(
        "idle connections: {IDLE_CONNECTIONS} opened in {opened_in:.1?}, {closed} closed by the server to make room \
         (cap {CONNECTIONS_MAX}), {newest_open} of the newest {NEWEST} still open, {open} open at the end; a new request and a publish were served; \
         server RSS {:.1} → {:.1} MiB",
        rss_before.unwrap_or(0) as f64 / 1048576.0,
        rss_after.unwrap_or(0) as f64 / 1048576.0
    );
    drop(idle);
    server.client().get("/healthz").expect(200);
}

/// Bound on one wait for the server's own state.
const BOUND: Duration = Duration::from_secs(30);

/// A write route the flood calls, and what it answers when it is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `POST /v1/events`: 202.
    Publish,
    /// `POST /v1/events/batch` of [`FLOOD_BATCH`] events: 200, every item 202.
    Batch,
    /// `PATCH /v1/webhooks/{id}` (its description): 200.
    Patch,
    /// `POST /v1/webhooks/{id}/recover`: 202.
    Recover,
    /// `POST /v1/webhooks/{id}/test`: 202.
    TestSend,
}

impl Write {
    /// The flood's writes, one per kind; flooder thread `t` sends `ALL[t % 5]`.
    const ALL: [Write; 5] = [
        Write::Publish,
        Write::Batch,
        Write::Patch,
        Write::Recover,
        Write::TestSend,
    ];

    /// 503s the flood waits for from this route.
    fn refusals_wanted(self) -> u64 {
        match self {
            Write::Publish => FLOOD_REFUSALS,
            _ => FLOOD_REFUSALS_PER_ROUTE,
        }
    }

    /// The request's method, path and body for flooder `t`'s `n`-th call.
    fn request(self, webhook: &str, t: usize, n: u64) -> (&'static str, String, Value) {
        let event = |i: usize| json!({"type": "order.created", "data": {"t": t, "n": n, "i": i}});
        match self {
            Write::Publish => ("POST", "/v1/events".to_string(), event(0)),
            Write::Batch => (
                "POST",
                "/v1/events/batch".to_string(),
                json!({"events": (0..FLOOD_BATCH).map(event).collect::<Vec<_>>()}),
            ),
            Write::Patch => (
                "PATCH",
                format!("/v1/webhooks/{webhook}"),
                json!({"description": format!("flood {t} {n}")}),
            ),
            Write::Recover => (
                "POST",
                format!("/v1/webhooks/{webhook}/recover"),
                json!({"since": "2020-01-01T00:00:00Z"}),
            ),
            Write::TestSend => (
                "POST",
                format!("/v1/webhooks/{webhook}/test"),
                json!({"event_type": "order.created"}),
            ),
        }
    }

    /// Whether `answer` is this route's answer to a write it took.
    fn taken(self, answer: &Resp) -> bool {
        match self {
            Write::Publish | Write::Recover | Write::TestSend => answer.status == 202,
            Write::Patch => answer.status == 200,
            Write::Batch => {
                answer.status == 200
                    && answer.json()["data"].as_array().is_some_and(|items| {
                        items.len() == FLOOD_BATCH && items.iter().all(|i| i["status"] == 202)
                    })
            }
        }
    }
}

/// Events per batch in the flood.
const FLOOD_BATCH: usize = 5;
/// 503s the flood waits for from each route other than publish.
const FLOOD_REFUSALS_PER_ROUTE: u64 = 10;

/// Per write route: answers taken, and 503s.
#[derive(Default)]
struct Tally {
    taken: [AtomicU64; Write::ALL.len()],
    refused: [AtomicU64; Write::ALL.len()],
}

#[test]
fn a_flood_of_writes_answers_503_with_retry_after_in_bounded_memory() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    // One tenant's flood fills the intake queue: its own cap on requests under way (left
    // unset, an eighth of the queue) is set above the flood.
    let server = Server::start(
        &site,
        &Options::default()
            .config("[limits]\nintake_capacity = 1\nrequests_in_flight_per_tenant_max = 512\n"),
    );
    let tenant = create_tenant(&server.admin(), "tenant_flood");
    let webhook = create_webhook(
        &tenant,
        &json!({"url": sink.url("/flood"), "events": ["order.*"]}),
    )["id"]
        .as_str()
        .expect("webhook id")
        .to_string();
    let pid = server.pid();
    let rss_start = rss_bytes(pid).expect("the server's /proc status is readable");

    let done = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let wrong = Arc::new(Mutex::new(Vec::<String>::new()));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|t| {
            let (tenant, webhook, done, tally, wrong) = (
                tenant.clone(),
                webhook.clone(),
                done.clone(),
                tally.clone(),
                wrong.clone(),
            );
            let kind = t % Write::ALL.len();
            let write = Write::ALL[kind];
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(Ordering::Acquire) {
                    n += 1;
                    let (method, path, body) = write.request(&webhook, t, n);
                    let answer = tenant.send(Req {
                        method,
                        path: &path,
                        headers: vec![("Content-Type", "application/json".to_string())],
                        body: Some(serde_json::to_vec(&body).expect("JSON serialises")),
                    });
                    let mut wrong = wrong.lock().unwrap_or_else(|e| e.into_inner());
                    match answer {
                        Ok(a) if write.taken(&a) => {
                            tally.taken[kind].fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(a) if a.status == 503 => {
                            tally.refused[kind].fetch_add(1, Ordering::Relaxed);
                            let retry_after =
                                a.header("retry-after").and_then(|v| v.parse::<u64>().ok());
                            if retry_after.is_none() || a.error_code() != "unavailable" {
                                wrong.push(format!(
                                    "{write:?}: 503 without Retry-After or error shape: {:?} {}",
                                    a.headers,
                                    a.text()
                                ));
                            }
                        }
                        Ok(a) => wrong.push(format!("{write:?}: {} {}", a.status, a.text())),
                        Err(e) => wrong.push(format!("{write:?}: no answer: {e}")),
                    }
                }
            })
        })
        .collect();

    // Sample the server's memory while the flood lasts; it ends once every route was
    // refused often enough.
    let mut rss_max = rss_start;
    let mut samples = 0;
    let wanted: Vec<String> = Write::ALL
        .iter()
        .map(|w| format!("{w:?} {}", w.refusals_wanted()))
        .collect();
    wait_for(
        &format!(
            "503s under the flood from every write route ({})",
            wanted.join(", ")
        ),
        FLOOD_TIMEOUT,
        || {
            if let Some(rss) = rss_bytes(pid) {
                rss_max = rss_max.max(rss);
                samples += 1;
            }
            Write::ALL
                .iter()
                .enumerate()
                .all(|(k, w)| tally.refused[k].load(Ordering::Relaxed) >= w.refusals_wanted())
                .then_some(())
        },
    );
    done.store(true, Ordering::Release);
    for flooder in flooders {
        flooder.join().expect("a flooder panicked");
    }
    let wrong = wrong.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        wrong.is_empty(),
        "unexpected answers under the flood: {:?}",
        &wrong[..wrong.len().min(10)]
    );
    assert!(
        rss_max < FLOOD_RSS_MAX,
        "the server's RSS reached {rss_max} bytes under the flood (bound {FLOOD_RSS_MAX})"
    );
    // The server is still whole: it answers, and takes a publish again.
    server.client().get("/healthz").expect(200);
    let after = wait_for("a publish accepted after the flood", BOUND, || {
        tenant
            .send(Req {
                method: "POST",
                path: "/v1/events",
                headers: vec![("Content-Type", "application/json".to_string())],
                body: Some(br#"{"type":"order.created","data":{"after":true}}"#.to_vec()),
            })
            .ok()
            .filter(|a| a.status == 202)
    });
    let after_id = after.json()["id"].as_str().expect("id").to_string();
    wait_received(&sink, "/flood", &after_id);
    let counts: Vec<String> = Write::ALL
        .iter()
        .enumerate()
        .map(|(k, w)| {
            format!(
                "{w:?} {} taken / {} refused",
                tally.taken[k].load(Ordering::Relaxed),
                tally.refused[k].load(Ordering::Relaxed)
            )
        })
        .collect();
    println!(
        "write flood: {FLOODERS} threads; {}; every refusal a 503 + Retry-After; \
         server RSS {:.1} MiB at the start, {:.1} MiB at most over {samples} samples",
        counts.join(", "),
        rss_start as f64 / 1048576.0,
        rss_max as f64 / 1048576.0
    );
}
