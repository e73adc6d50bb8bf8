//! The tests' receiver: herald-sink (the workspace's one loopback receiver) with a
//! status per path, and every request kept for the test to read.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_sink::{Action, Sink};

/// Status meaning "do not answer": the request is held (up to
/// [`herald_sink::DELAY_MS_MAX`]), then the connection is closed unanswered.
pub const HANG: u16 = 0;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("receiver got a non-JSON body")
    }
}

/// A running receiver; stops on drop.
pub struct Receiver {
    sink: Sink,
    /// Status to answer per path; 200 when absent.
    statuses: Arc<Mutex<HashMap<String, u16>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let statuses: Arc<Mutex<HashMap<String, u16>>> = Arc::default();
        let chosen = Arc::clone(&statuses);
        // The answer is the status in force when the request arrived: a test that
        // changes the status after seeing N requests changes the answer of request N+1.
        let sink = Sink::builder()
            .responder(move |request: &herald_http::Request| {
                let path = herald_sink::target_path(&request.target);
                match chosen.lock().unwrap().get(path).copied().unwrap_or(200) {
                    HANG => Action::delay(herald_sink::DELAY_MS_MAX, Action::Close),
                    status => Action::Status(status),
                }
            })
            .start()
            .expect("the receiver starts");
        Receiver { sink, statuses }
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        self.sink.url(path)
    }

    /// Status to answer on `path`; [`HANG`] holds each request unanswered.
    pub fn set_status(&self, path: &str, status: u16) {
        self.statuses
            .lock()
            .unwrap()
            .insert(path.to_string(), status);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.sink
            .requests()
            .into_iter()
            .map(|r| Received {
                path: r.path().to_owned(),
                method: r.method,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
                    .collect(),
                body: r.body,
            })
            .collect()
    }

    /// Waits until `done(received)` holds, or panics after `timeout` with what arrived.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "receiver timed out after {timeout:?}; got {} requests: {:#?}",
                received.len(),
                received
                    .iter()
                    .map(|r| (&r.path, r.header("webhook-id")))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Event `n` of a run: an `order.created` of about 1 KiB with id `{prefix}_{n}`.
pub fn padded_event(prefix: &str, n: usize) -> herald::Event {
    herald::Event::parse(
        "order.created",
        &serde_json::json!({"n": n, "pad": "x".repeat(1000)}),
    )
    .unwrap()
    .with_id(herald::EventId::parse(&format!("{prefix}_{n}")).unwrap())
}

/// The event ids (`webhook-id`) of the requests received.
pub fn arrived_ids(received: &[Received]) -> std::collections::BTreeSet<String> {
    received
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect()
}

/// The event ids of every delivery in `tenant`'s delivery log, page by page.
/// What a refusal may leave, checked: no event answered as refused was delivered
/// (`delivered`: the ids the receiver saw).
pub fn assert_none_refused_delivered(
    delivered: &std::collections::BTreeSet<String>,
    refused: &std::collections::BTreeSet<String>,
) {
    assert!(
        delivered.is_disjoint(refused),
        "refused events were delivered: {:?}",
        delivered.intersection(refused).collect::<Vec<_>>()
    );
}

/// After a restart (`herald`, on the same data), the journal holds every acknowledged
/// event of `tenant` and no refused one.
pub fn assert_journal_holds(
    herald: &herald::Herald,
    tenant: &herald::TenantId,
    acknowledged: &std::collections::BTreeSet<String>,
    refused: &std::collections::BTreeSet<String>,
) {
    let logged = logged_event_ids(herald, tenant);
    assert!(
        logged.is_superset(acknowledged),
        "acknowledged events missing after the restart: {:?}",
        acknowledged.difference(&logged).collect::<Vec<_>>()
    );
    assert!(logged.is_disjoint(refused), "refused events were journaled");
}

pub fn logged_event_ids(
    herald: &herald::Herald,
    tenant: &herald::TenantId,
) -> std::collections::BTreeSet<String> {
    let mut logged = std::collections::BTreeSet::new();
    let mut after = None;
    loop {
        let page = herald
            .deliveries(herald::DeliveryQuery {
                limit: 1000,
                after,
                ..herald::DeliveryQuery::tenant(tenant.clone())
            })
            .unwrap();
        logged.extend(page.items.iter().map(|r| r.event_id.to_string()));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return logged,
        }
    }
}

/// Polls `probe` every 5 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A URL on 127.0.0.1 whose port has nothing listening: deliveries there fail to connect
/// and stay pending, waiting for their next attempt a minute later.
pub fn closed_url() -> herald::Url {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    herald::Url::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap()
}
