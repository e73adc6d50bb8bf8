//! End to end against real receivers on loopback: herald-sink over plain HTTP and TLS
//! (a generated CA the engine is told to trust), verifying every signature as it
//! arrives, and Python's http.server as an HTTP implementation not written here.

mod common;

use std::collections::BTreeSet;

use common::{deliveries, engine, envelope_id, event, secret, spec, tenant, verifying_key, WAIT};
use herald::{DeliveryStatus, Scheme};
use herald_sink::Sink;

const EVENTS_PER_CASE: usize = 20;

struct Case {
    tenant: &'static str,
    tls: bool,
    /// Use `localhost` (resolved by the engine) instead of the IP literal.
    localhost: bool,
    scheme: Scheme,
}

#[test]
fn plain_and_tls_receivers_get_every_event_signed() {
    let cases = [
        Case {
            tenant: "plain-standard",
            tls: false,
            localhost: false,
            scheme: Scheme::Standard,
        },
        Case {
            tenant: "plain-stripe",
            tls: false,
            localhost: false,
            scheme: Scheme::Stripe {
                header: "Crumb-Signature".into(),
            },
        },
        Case {
            tenant: "tls-standard",
            tls: true,
            localhost: false,
            scheme: Scheme::Standard,
        },
        Case {
            tenant: "tls-ed25519-localhost",
            tls: true,
            localhost: true,
            scheme: Scheme::Ed25519,
        },
        Case {
            tenant: "tls-olo",
            tls: true,
            localhost: false,
            scheme: Scheme::Olo,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut sinks = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let secret = secret(&case.scheme, i as u8 + 1);
        let mut builder = Sink::builder().verify(
            case.scheme.clone(),
            &[&verifying_key(&case.scheme, &secret)],
        );
        if case.tls {
            builder = builder.ca_pem_out(dir.path().join(format!("ca-{i}.pem")));
        }
        sinks.push((builder.start().unwrap(), secret));
    }
    let ca_paths: Vec<_> = sinks
        .iter()
        .filter_map(|(sink, _)| sink.ca_pem_path().map(|p| p.to_path_buf()))
        .collect();
    let ca_refs: Vec<_> = ca_paths.iter().map(|p| p.as_path()).collect();
    let herald = engine(&dir.path().join("data"), 2, &ca_refs);

    let mut published = Vec::new();
    for (case, (sink, secret)) in cases.iter().zip(&sinks) {
        let url = if case.localhost {
            sink.localhost_url("/hook")
        } else {
            sink.url("/hook")
        };
        assert_eq!(url.starts_with("https://"), case.tls);
        let tenant = tenant(case.tenant);
        herald
            .create_webhook(&tenant, spec(&url, case.scheme.clone(), secret, None))
            .unwrap();
        let mut ids = BTreeSet::new();
        for n in 0..EVENTS_PER_CASE {
            let id = herald
                .publish(&tenant, event(serde_json::json!({ "n": n })))
                .unwrap();
            ids.insert(id.as_str().to_owned());
        }
        published.push(ids);
    }

    for ((case, (sink, _)), ids) in cases.iter().zip(&sinks).zip(&published) {
        let stats = sink
            .wait_for(EVENTS_PER_CASE as u64, WAIT)
            .unwrap_or_else(|e| panic!("{}: {e}", case.tenant));
        assert_eq!(stats.verify_failed, 0, "{}: {stats:?}", case.tenant);
        assert_eq!(stats.verified, EVENTS_PER_CASE as u64, "{}", case.tenant);
        assert_eq!(stats.tls_errors, 0, "{}", case.tenant);
        let requests = sink.requests();
        let received: BTreeSet<String> = requests.iter().map(|r| envelope_id(&r.body)).collect();
        assert_eq!(&received, ids, "{}: every event, once", case.tenant);
        for request in &requests {
            assert_eq!(request.method, "POST");
            assert_eq!(request.path(), "/hook");
            assert_eq!(request.header("content-type"), Some("application/json"));
            assert!(
                request
                    .header("user-agent")
                    .is_some_and(|ua| ua.starts_with("herald/")),
                "{:?}",
                request.header("user-agent")
            );
            let envelope: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!(envelope["tenant_id"], case.tenant);
            assert_eq!(envelope["type"], "order.created");
        }
        // The receiver has answered every request, but the engine records each outcome
        // only once it has read the response: wait for the log to catch up.
        let log = common::wait_until(
            "every delivery logged as a success",
            WAIT,
            || {
                let log = deliveries(&herald, &tenant(case.tenant));
                (log.len() == EVENTS_PER_CASE
                    && log.iter().all(|d| d.status == DeliveryStatus::Success))
                .then_some(log)
            },
            || format!("{:?}", deliveries(&herald, &tenant(case.tenant))),
        );
        assert_eq!(log.len(), EVENTS_PER_CASE, "{}", case.tenant);
    }
    herald.shutdown().unwrap();
}

#[test]
fn python_http_server_receives_signed_events() {
    let python = common::PythonReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 1, &[]);
    let tenant = tenant("python");
    let scheme = Scheme::Standard;
    let secret = secret(&scheme, 9);
    let url = python.url("/py/hook?source=herald");
    herald
        .create_webhook(&tenant, spec(&url, scheme.clone(), &secret, None))
        .unwrap();
    let mut ids = BTreeSet::new();
    for n in 0..3 {
        let id = herald
            .publish(&tenant, event(serde_json::json!({ "n": n })))
            .unwrap();
        ids.insert(id.as_str().to_owned());
    }
    let verifier = herald_sign::Verifier::new(scheme, &[&secret]).unwrap();
    let mut received = BTreeSet::new();
    for _ in 0..3 {
        let request = python.next_request(WAIT);
        assert_eq!(request.path, "/py/hook?source=herald");
        verifier
            .verify(
                &request.headers,
                &url,
                request.body.as_bytes(),
                common::now_s(),
            )
            .unwrap_or_else(|e| panic!("signature from python's view does not verify: {e}"));
        received.insert(envelope_id(request.body.as_bytes()));
    }
    assert_eq!(received, ids);
    // HTTP/1.0 with a close after each answer: the engine must have seen three clean
    // 200s, not transport errors.
    let log = common::wait_until(
        "three successful deliveries",
        WAIT,
        || {
            let log = deliveries(&herald, &tenant);
            (log.len() == 3 && log.iter().all(|d| d.status == DeliveryStatus::Success))
                .then_some(log)
        },
        || format!("{:?}", deliveries(&herald, &tenant)),
    );
    assert!(log
        .iter()
        .all(|d| d.response_status == Some(200) && d.attempt == 1));
    assert!(log.iter().all(|d| &*d.response_body == b"ok"));
    herald.shutdown().unwrap();
}
