//! Tenant isolation as a property, on one live server with three tenants: proptest
//! generates webhooks (each with a random filter) and events (random types) for random
//! tenants; each tenant creates its webhooks and publishes its events with its own key.
//! Then:
//!
//! * every request the receiver gets comes from an event of the webhook's own tenant,
//!   and matches that webhook's filter: the URL path names the webhook's tenant, the
//!   `webhook-id` header names the event, whose tenant the test knows;
//! * every expected delivery (same tenant, filter matches) arrives;
//! * each tenant's delivery log holds exactly its own (webhook, event) pairs;
//! * no key sees another tenant's data: the other tenants' webhooks and deliveries are
//!   404 by id (also as a filter, and under the webhook's deliveries), lists hold only
//!   the key's own, and `Herald-Tenant` naming another tenant is a 404.
//!
//! `HERALD_E2E_ISOLATION_CASES=N` runs N generated cases (default [`CASES_DEFAULT`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use herald_e2e::*;
use herald_sink::Sink;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

/// Generated cases in the default (CI) run.
const CASES_DEFAULT: u32 = 20;
/// The tenants of the test.
const TENANTS: [&str; 3] = ["tenant_iso_a", "tenant_iso_b", "tenant_iso_c"];
/// Filters a webhook may get.
const FILTERS: [&str; 6] = [
    "*",
    "order.*",
    "order.created",
    "payment.*",
    "payment.captured",
    "table.updated",
];
/// Types an event may have.
const TYPES: [&str; 5] = [
    "order.created",
    "order.updated",
    "payment.captured",
    "payment.refunded",
    "table.updated",
];

#[derive(Debug, Clone)]
struct Case {
    /// (tenant, filter) per webhook.
    webhooks: Vec<(usize, usize)>,
    /// (tenant, type) per event.
    events: Vec<(usize, usize)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((0..TENANTS.len(), 0..FILTERS.len()), 1..7),
        prop::collection::vec((0..TENANTS.len(), 0..TYPES.len()), 1..10),
    )
        .prop_map(|(webhooks, events)| Case { webhooks, events })
}

fn matches(filter: &str, event_type: &str) -> bool {
    match filter.strip_suffix(".*") {
        _ if filter == "*" => true,
        Some(prefix) => event_type
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => filter == event_type,
    }
}

/// `/iso/<case>/<tenant index>/<webhook index>`.
fn parse_path(path: &str) -> Option<(usize, usize, usize)> {
    let mut parts = path.strip_prefix("/iso/")?.split('/');
    let case = parts.next()?.parse().ok()?;
    let tenant = parts.next()?.parse().ok()?;
    let webhook = parts.next()?.parse().ok()?;
    Some((case, tenant, webhook))
}

struct World {
    server: Server,
    sink: Sink,
    keys: Vec<Client>,
    next_case: AtomicUsize,
    /// Totals over the run, for the summary: webhooks, events, deliveries received,
    /// requests made with a key for another tenant's data.
    webhooks: AtomicUsize,
    events: AtomicUsize,
    delivered: AtomicUsize,
    probes: AtomicUsize,
}

impl World {
    fn check(&self, case: &Case) -> Result<(), TestCaseError> {
        let number = self.next_case.fetch_add(1, Ordering::Relaxed);
        // Webhooks: (owner, filter, id).
        let mut webhooks = Vec::new();
        for (index, &(owner, filter)) in case.webhooks.iter().enumerate() {
            let created = create_webhook(
                &self.keys[owner],
                &json!({
                    "url": self.sink.url(&format!("/iso/{number}/{owner}/{index}")),
                    "events": [FILTERS[filter]],
                }),
            );
            let id = created["id"].as_str().expect("id").to_string();
            webhooks.push((owner, FILTERS[filter], id));
        }
        // Events: id → (publisher, type).
        let mut events = BTreeMap::new();
        for &(publisher, kind) in &case.events {
            let envelope = publish(
                &self.keys[publisher],
                &json!({"type": TYPES[kind], "data": {"case": number, "tenant": publisher}}),
            );
            let id = envelope["id"].as_str().expect("event id").to_string();
            events.insert(id, (publisher, TYPES[kind]));
        }
        // (webhook index, event id) pairs that must be delivered.
        let mut expected = BTreeSet::new();
        for (index, (owner, filter, _)) in webhooks.iter().enumerate() {
            for (event, (publisher, kind)) in &events {
                if owner == publisher && matches(filter, kind) {
                    expected.insert((index, event.clone()));
                }
            }
        }

        let received_pairs = || -> BTreeSet<(usize, String)> {
            self.sink
                .requests()
                .iter()
                .filter_map(|record| {
                    let (n, _, index) = parse_path(record.path())?;
                    (n == number).then(|| (index, webhook_id_of(record)))
                })
                .collect()
        };
        wait_for(
            &format!("case {number}: the {} expected deliveries", expected.len()),
            DELIVERY_TIMEOUT,
            || received_pairs().is_superset(&expected).then_some(()),
        );

        self.webhooks.fetch_add(webhooks.len(), Ordering::Relaxed);
        self.events.fetch_add(events.len(), Ordering::Relaxed);
        self.delivered.fetch_add(expected.len(), Ordering::Relaxed);
        // Every request of this case: its webhook's tenant published its event, and
        // the webhook's filter selects its type.
        for record in self.sink.requests() {
            let Some((n, owner, index)) = parse_path(record.path()) else {
                continue;
            };
            if n != number {
                continue;
            }
            let event = webhook_id_of(&record);
            let Some(&(publisher, kind)) = events.get(&event) else {
                return Err(TestCaseError::fail(format!(
                    "case {number}: webhook {index} of {} got an event this case did not publish: {event}",
                    TENANTS[owner]
                )));
            };
            prop_assert_eq!(
                owner,
                publisher,
                "case {}: {}'s webhook {} got {}'s event {}",
                number,
                TENANTS[owner],
                index,
                TENANTS[publisher],
                event
            );
            prop_assert!(
                matches(webhooks[index].1, kind),
                "case {number}: filter {} got {kind}",
                webhooks[index].1
            );
            prop_assert_eq!(
                body_json(&record)["data"]["tenant"].clone(),
                json!(publisher)
            );
        }

        // Each tenant's log: exactly its own pairs.
        let mut delivery_ids = Vec::new();
        for (tenant, key) in self.keys.iter().enumerate() {
            let mut logged = BTreeSet::new();
            for (index, (owner, _, id)) in webhooks.iter().enumerate() {
                if *owner != tenant {
                    continue;
                }
                for delivery in deliveries(key, id, "") {
                    let event = delivery["event_id"].as_str().expect("event_id").to_string();
                    delivery_ids.push((tenant, delivery["id"].as_str().expect("id").to_string()));
                    logged.insert((index, event));
                }
            }
            let own: BTreeSet<(usize, String)> = expected
                .iter()
                .filter(|(index, _)| webhooks[*index].0 == tenant)
                .cloned()
                .collect();
            prop_assert_eq!(&logged, &own, "case {}: {}'s log", number, TENANTS[tenant]);
        }

        // No key sees another tenant's webhooks or deliveries.
        for (tenant, key) in self.keys.iter().enumerate() {
            let listed: BTreeSet<String> = key.get("/v1/webhooks?limit=100").expect(200)["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|w| w["id"].as_str().expect("id").to_string())
                .collect();
            for (owner, _, id) in &webhooks {
                if *owner == tenant {
                    prop_assert!(
                        listed.contains(id),
                        "{} does not list its {id}",
                        TENANTS[tenant]
                    );
                    continue;
                }
                prop_assert!(!listed.contains(id), "{} lists {id}", TENANTS[tenant]);
                for path in [
                    format!("/v1/webhooks/{id}"),
                    format!("/v1/webhooks/{id}/deliveries"),
                    format!("/v1/deliveries?webhook_id={id}"),
                ] {
                    let status = key.get(&path).status;
                    self.probes.fetch_add(1, Ordering::Relaxed);
                    prop_assert_eq!(status, 404, "{} GET {}", TENANTS[tenant], path);
                }
            }
            for (owner, delivery) in &delivery_ids {
                if *owner != tenant {
                    let status = key.get(&format!("/v1/deliveries/{delivery}")).status;
                    self.probes.fetch_add(1, Ordering::Relaxed);
                    prop_assert_eq!(
                        status,
                        404,
                        "{} sees delivery {}",
                        TENANTS[tenant],
                        delivery
                    );
                }
            }
            let all: Vec<Value> = key.get("/v1/deliveries?limit=100").expect(200)["data"]
                .as_array()
                .expect("data")
                .clone();
            for delivery in &all {
                let webhook = delivery["webhook_id"].as_str().unwrap_or_default();
                prop_assert!(
                    webhooks
                        .iter()
                        .all(|(owner, _, id)| id != webhook || *owner == tenant),
                    "{} lists another tenant's delivery {delivery}",
                    TENANTS[tenant]
                );
            }
            let other = TENANTS[(tenant + 1) % TENANTS.len()];
            let status = key.acting_for(other).get("/v1/webhooks").status;
            prop_assert_eq!(status, 404, "{} acting for {}", TENANTS[tenant], other);
        }

        for (owner, _, id) in &webhooks {
            self.keys[*owner]
                .delete(&format!("/v1/webhooks/{id}"))
                .expect(204);
        }
        Ok(())
    }
}

#[test]
fn events_never_cross_tenants() {
    let cases = std::env::var("HERALD_E2E_ISOLATION_CASES")
        .ok()
        .map(|v| v.parse().expect("HERALD_E2E_ISOLATION_CASES is a number"))
        .unwrap_or(CASES_DEFAULT);
    let site = Site::new();
    let server = Server::start(&site, &Options::default().config(crate::FAST_RETRIES));
    let admin = server.admin();
    let keys = TENANTS.iter().map(|t| create_tenant(&admin, t)).collect();
    let world = World {
        sink: Sink::start_default().expect("the sink starts"),
        server,
        keys,
        next_case: AtomicUsize::new(0),
        webhooks: AtomicUsize::new(0),
        events: AtomicUsize::new(0),
        delivered: AtomicUsize::new(0),
        probes: AtomicUsize::new(0),
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| world.check(&case));
    if let Err(failure) = result {
        panic!(
            "{failure}\nserver log:\n{}",
            log_tail(world.server.log_path(), 8192)
        );
    }
    eprintln!(
        "isolation: {} cases, {} webhooks, {} events, {} deliveries checked, {} requests for another tenant's data (all 404)",
        world.next_case.load(Ordering::Relaxed),
        world.webhooks.load(Ordering::Relaxed),
        world.events.load(Ordering::Relaxed),
        world.delivered.load(Ordering::Relaxed),
        world.probes.load(Ordering::Relaxed),
    );
}
