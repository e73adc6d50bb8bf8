//! Hostile receivers: each webhook points at a loopback server that misbehaves in one
//! way (never answers, answers one byte a second, endless headers, an endless chunked
//! body, garbage, half a response then close, a reset, TLS with an expired, self-signed
//! or wrong-host certificate). Every attempt must end as a classified failure (the
//! delivery log's `attempt_history` names the error) and the delivery as `failed` once
//! its schedule is spent; a valid TLS receiver under the same CA is the control.
//! Meanwhile another tenant's deliveries keep arriving, all of them.
//!
//! `HERALD_E2E_HOSTILE_COPIES=N` (default 1) runs N servers (and webhooks) of each kind
//! at once, for a heavier run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use herald_e2e::*;
use herald_sink::hostile::{Behaviour, Hostile};
use herald_sink::{CertDefect, Pki, Sink};
use serde_json::json;

/// Request timeout of every hostile webhook: short, so the slow cases end quickly.
const TIMEOUT_MS: u64 = 2_000;
/// One retry: two attempts per delivery.
const SCHEDULE_S: [f64; 1] = [0.2];
/// Events the well-behaved tenant publishes while the hostile deliveries run.
const NORMAL_EVENTS: usize = 40;

/// Servers of each kind unless `HERALD_E2E_HOSTILE_COPIES` says otherwise.
const COPIES_DEFAULT: usize = 1;
/// Most servers of each kind (each holds up to two connections at a time here).
const COPIES_MAX: usize = 50;

/// Resident memory of a process in KiB (Linux `/proc`), for the figures.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A hostile server to start.
#[derive(Clone)]
enum Serve {
    /// Plain HTTP, misbehaving as the behaviour says.
    Plain(Behaviour),
    /// TLS with this certificate, answering a well-formed `200` once the handshake
    /// succeeds.
    Tls(Arc<rustls::ServerConfig>),
}

impl Serve {
    fn start(&self) -> Hostile {
        match self {
            Serve::Plain(behaviour) => Hostile::start(behaviour.clone()),
            Serve::Tls(config) => Hostile::start_tls(Behaviour::OkThenClose, Arc::clone(config)),
        }
        .expect("a hostile server starts")
    }
}

#[test]
fn hostile_receivers_end_as_classified_failures_while_others_flow() {
    let ca = Pki::generate("herald-e2e hostile CA").expect("a CA");
    let loopback = ["127.0.0.1"];
    let tls = |defect| {
        let config = ca
            .issue_defective(&loopback, defect)
            .and_then(|identity| identity.server_config())
            .expect("a server certificate");
        Serve::Tls(config)
    };
    // (case, server, the error every attempt must end with; None: success)
    let cases: Vec<(&str, Serve, Option<&str>)> = vec![
        (
            "never answers",
            Serve::Plain(Behaviour::Silent),
            Some("request_timeout"),
        ),
        (
            "one byte a second",
            Serve::Plain(Behaviour::Drip(Duration::from_secs(1))),
            Some("request_timeout"),
        ),
        (
            "endless headers",
            Serve::Plain(Behaviour::EndlessHeaders),
            Some("protocol"),
        ),
        // A 200 whose body never ends: cut off at the client's limit, but its status
        // is the answer (the receiver took the event; retrying would send it again).
        (
            "endless chunked body",
            Serve::Plain(Behaviour::EndlessChunkedBody),
            None,
        ),
        (
            "garbage instead of HTTP",
            Serve::Plain(Behaviour::Garbage),
            Some("protocol"),
        ),
        (
            "closes mid-response",
            Serve::Plain(Behaviour::CloseMidResponse),
            Some("protocol"),
        ),
        (
            "resets the connection",
            Serve::Plain(Behaviour::Reset),
            Some("protocol"),
        ),
        (
            "TLS, expired certificate",
            tls(CertDefect::Expired),
            Some("tls"),
        ),
        (
            "TLS, self-signed certificate",
            tls(CertDefect::SelfSigned),
            Some("tls"),
        ),
        (
            "TLS, wrong-host certificate",
            tls(CertDefect::WrongHost),
            Some("tls"),
        ),
        (
            "TLS, valid certificate (control)",
            tls(CertDefect::None),
            None,
        ),
    ];
    let copies = std::env::var("HERALD_E2E_HOSTILE_COPIES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(COPIES_DEFAULT)
        .clamp(1, COPIES_MAX);
    let cases: Vec<(&str, Serve, Option<&str>)> =
        (0..copies).flat_map(|_| cases.iter().cloned()).collect();
    let servers: Vec<Hostile> = cases.iter().map(|(_, serve, _)| serve.start()).collect();

    let site = Site::new();
    let ca_path = site.write("hostile-ca.pem", ca.ca_pem());
    let config = format!(
        "{}\n[egress]\nextra_ca_pems = [{:?}]\n",
        crate::FAST_RETRIES,
        ca_path.display().to_string()
    );
    let server = Server::start(&site, &Options::default().config(&config));
    let admin = server.admin();
    let hostile_tenant = create_tenant(&admin, "tenant_hostile");
    let normal_tenant = create_tenant(&admin, "tenant_normal");
    let sink = Sink::start_default().expect("the sink starts");
    create_webhook(
        &normal_tenant,
        &json!({"url": sink.url("/normal"), "events": ["*"]}),
    );
    let webhooks: Vec<String> = servers
        .iter()
        .map(|hostile| {
            let webhook = create_webhook(
                &hostile_tenant,
                &json!({
                    "url": hostile.url("/hook"),
                    "events": ["order.*"],
                    "timeout_ms": TIMEOUT_MS,
                    "retry_schedule_s": SCHEDULE_S,
                }),
            );
            webhook["id"].as_str().expect("id").to_string()
        })
        .collect();
    let rss_before = rss_kib(server.pid());

    // One event fans out to every hostile receiver while the other tenant publishes.
    let event = publish(
        &hostile_tenant,
        &json!({"type": "order.created", "data": {"hostile": true}}),
    );
    let event_id = event["id"].as_str().expect("id").to_string();
    let normal = normal_tenant.clone();
    let publisher = std::thread::spawn(move || {
        (0..NORMAL_EVENTS)
            .map(|n| {
                let envelope =
                    publish(&normal, &json!({"type": "order.created", "data": {"n": n}}));
                std::thread::sleep(Duration::from_millis(50));
                envelope["id"].as_str().expect("id").to_string()
            })
            .collect::<BTreeSet<String>>()
    });

    let mut failures = Vec::new();
    let mut figures = Vec::new();
    for (((case, _, expected), webhook_id), hostile) in cases.iter().zip(&webhooks).zip(&servers) {
        let wanted = if expected.is_some() {
            "failed"
        } else {
            "success"
        };
        let listed = wait_delivery(&hostile_tenant, webhook_id, &event_id, wanted);
        let id = listed["id"].as_str().expect("delivery id");
        let detail = hostile_tenant
            .get(&format!("/v1/deliveries/{id}"))
            .expect(200);
        let history = detail["attempt_history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let errors: Vec<String> = history
            .iter()
            .map(|a| a["error"].as_str().unwrap_or("none").to_string())
            .collect();
        let times: Vec<String> = history
            .iter()
            .map(|a| a["response_time_ms"].to_string())
            .collect();
        match expected {
            Some(error) => {
                let classified = history.len() == 1 + SCHEDULE_S.len()
                    && history.iter().all(|a| {
                        a["error"] == *error
                            && a["response_code"].is_null()
                            && a["finished_at"].is_string()
                    });
                if !classified || detail["last_error"] != *error {
                    failures.push(format!(
                        "{case}: expected {} attempts failing with {error}; got {detail}",
                        1 + SCHEDULE_S.len()
                    ));
                }
            }
            None => {
                if detail["response_code"] != 200 {
                    failures.push(format!("{case}: the control did not succeed: {detail}"));
                }
            }
        }
        figures.push(format!(
            "{case}: {} attempts, errors {}, ms {}, {} connections",
            history.len(),
            errors.join("/"),
            times.join("/"),
            hostile.connections()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The other tenant's deliveries all arrived.
    let published = publisher.join().expect("the publisher thread");
    wait_for(
        "every event of the well-behaved tenant at its receiver",
        DELIVERY_TIMEOUT,
        || {
            let arrived: BTreeSet<String> = sink
                .requests_to("/normal")
                .iter()
                .filter_map(event_id_of)
                .collect();
            arrived.is_superset(&published).then_some(())
        },
    );
    server.client().get("/healthz").expect(200);
    let rss_after = rss_kib(server.pid());
    println!(
        "hostile receivers ({} servers, {} normal events all delivered, server RSS {:?} KiB before, {:?} KiB after):\n  {}",
        cases.len(),
        published.len(),
        rss_before,
        rss_after,
        figures.join("\n  ")
    );
}
