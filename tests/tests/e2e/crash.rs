//! Crash consistency under repeated SIGKILL: one `herald serve` site is killed at seeded
//! random moments, again and again, while publishers load it over the REST API (several
//! tenants and webhooks, some publishes with `Idempotency-Key`, keys reused), a changer
//! thread creates and deletes tenants, mints and revokes keys and creates, patches,
//! disables, enables and deletes webhooks, and the receivers are flaky (a seeded status mix of
//! 500s and 503s with slow answers) or go down and come back (closed, then not
//! listening at all).
//!
//! After the last restart, with healthy receivers: every publish answered 202 reaches
//! every matching webhook at least once with a 2xx answer (receivers count by
//! `webhook-id`; duplicates are allowed and reported), and the delivery log holds it
//! once per webhook; every acknowledged change holds; every reuse of an idempotency key
//! got the same event id.
//!
//! `HERALD_E2E_SEED=N` repeats a run's choices (kill moments, publishes, changes,
//! receiver answers; thread interleavings still vary), `HERALD_E2E_KILLS=N` sets the
//! number of kills (default [`KILLS_DEFAULT`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_e2e::*;
use herald_sign::{Scheme, Verifier};
use herald_sink::{Action, LatencyModel, Record, Sink, StatusMix};
use serde_json::{json, Value};

/// Kills in the default run.
const KILLS_DEFAULT: usize = 20;
/// Publisher threads.
const PUBLISHERS: usize = 3;
/// Pause before each publish of one publisher.
const PUBLISH_PAUSE: Duration = Duration::from_millis(20);
/// Tenants that take the load (each with three webhooks).
const LOAD_TENANTS: usize = 3;
/// Shortest and longest time a server lives before its SIGKILL, ms.
const LIFE_MS: (u64, u64) = (300, 1800);
/// Bound on every acknowledged event reaching its webhooks after the last restart (the
/// retries of the schedule below, plus a breaker opened by a receiver that was down).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries short enough to happen within the run, and enough of them (about 10 s in
/// all) that a receiver down for a few seconds, or a run of 5xx, does not exhaust one.
/// Keys per tenant: the changer mints many.
const CONFIG: &str = "[retry]\nschedule_s = [0.2, 0.4, 0.8, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n\
                      [limits]\nkeys_per_tenant_max = 1000\n";
/// Event types the publishers send; the load webhooks filter on them.
const LOAD_TYPES: [&str; 2] = ["order.created", "payment.processed"];
/// Event type only the changer's webhooks subscribe to.
const CHURN_TYPE: &str = "inventory.low_stock";

/// SplitMix64: small, seedable, and the same everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// A generator of its own for stream `n` (one per thread).
    fn fork(&self, n: u64) -> Rng {
        let mut forked = Rng(self.0 ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        forked.next();
        forked
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a whole number: {e}")),
    )
}

/// The live server's clients, or `None` between a kill and the next start.
#[derive(Default)]
struct Live {
    admin: Option<Client>,
    /// Load tenants' clients, in order.
    tenants: Vec<Client>,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One acknowledged publish.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    tenant: usize,
    event_type: &'static str,
}

/// What the publishers saw.
#[derive(Default)]
struct Published {
    acked: Vec<Acked>,
    /// Idempotency key → (tenant, body, ids answered with 202).
    keyed: BTreeMap<String, (usize, Value, BTreeSet<String>)>,
    /// 202s for a key that had one already (the same id, checked at the end).
    replays: usize,
    /// Requests that got no answer (the server died under them).
    unanswered: usize,
    /// 503s (back-pressure): not acknowledged, fine.
    refused: usize,
    /// Answers no request here should get.
    unexpected: Vec<String>,
}

/// A load webhook: fixed for the whole run.
#[derive(Debug, Clone)]
struct LoadHook {
    tenant: usize,
    id: String,
    /// Which sink (0 flaky, 1 the one that goes down) and path.
    sink: usize,
    path: String,
    types: Vec<&'static str>,
    secret: String,
}

/// What the changer expects of a webhook it made.
#[derive(Debug, Clone)]
struct ChurnHook {
    tenant: usize,
    id: String,
    path: String,
    description: String,
    status: &'static str,
    deleted: bool,
    /// A change got no answer: its state is not known, so it is not checked.
    uncertain: bool,
}

/// A key the changer minted.
#[derive(Debug, Clone)]
struct MintedKey {
    tenant_id: String,
    key_id: String,
    api_key: String,
    revoked: bool,
    uncertain: bool,
}

/// What the changer saw acknowledged.
#[derive(Default)]
struct Changes {
    tenants: Vec<(String, String)>,
    /// Tenants whose deletion was acknowledged, with the key they had.
    deleted_tenants: Vec<(String, String)>,
    /// Each changer tenant's probe: the event id answered to its one publish with
    /// `Idempotency-Key: probe` (none when that publish got no answer).
    probes: BTreeMap<String, String>,
    keys: Vec<MintedKey>,
    hooks: Vec<ChurnHook>,
    acknowledged: usize,
    unanswered: usize,
    unexpected: Vec<String>,
}

/// A receiver that goes down (connections closed without an answer, then nothing
/// listening on its port) and comes back on the same port. Requests recorded by each of
/// its lives are kept.
struct Flapping {
    addr: std::net::SocketAddr,
    sink: Mutex<Option<Sink>>,
    archived: Mutex<Vec<Record>>,
}

impl Flapping {
    fn start() -> Flapping {
        let sink = Sink::builder()
            .requests_max(1_000_000)
            .start()
            .expect("the sink starts");
        Flapping {
            addr: sink.addr(),
            sink: Mutex::new(Some(sink)),
            archived: Mutex::new(Vec::new()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Takes it down: first every request is closed unanswered (so no 2xx can be
    /// answered after the records are taken), then the listener goes away.
    fn down(&self) {
        let Some(sink) = lock(&self.sink).take() else {
            return;
        };
        sink.set_default_action(Action::Close)
            .expect("Close is a valid action");
        std::thread::sleep(Duration::from_millis(50));
        lock(&self.archived).extend(sink.take_requests());
        sink.shutdown();
    }

    /// Brings it back on the same port (retrying the bind for a while).
    fn up(&self) {
        let mut guard = lock(&self.sink);
        if guard.is_some() {
            return;
        }
        let sink = wait_for(
            &format!("the receiver to listen again on {}", self.addr),
            Duration::from_secs(10),
            || {
                Sink::builder()
                    .listen(self.addr)
                    .requests_max(1_000_000)
                    .start()
                    .ok()
            },
        );
        *guard = Some(sink);
    }

    fn requests(&self) -> Vec<Record> {
        let mut all = lock(&self.archived).clone();
        if let Some(sink) = lock(&self.sink).as_ref() {
            all.extend(sink.requests());
        }
        all
    }
}

/// Sends a JSON request; `None` when the server gave no answer.
fn send_json(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
    extra: Vec<(&str, String)>,
) -> Option<Resp> {
    let mut headers = extra;
    if body.is_some() {
        headers.push(("Content-Type", "application/json".to_string()));
    }
    client
        .send(Req {
            method,
            path,
            headers,
            body: body.map(|b| serde_json::to_vec(b).expect("JSON serialises")),
        })
        .ok()
}

/// Publishes the changer's probe event as `client` (`Idempotency-Key: probe`); its event
/// id when answered with 202.
fn publish_probe(client: &Client) -> Option<String> {
    let body = json!({"type": "probe.sent", "data": {}});
    let answer = send_json(
        client,
        "POST",
        "/v1/events",
        Some(&body),
        vec![("Idempotency-Key", "probe".to_string())],
    )?;
    (answer.status == 202).then(|| answer.json()["id"].as_str().unwrap_or_default().to_string())
}

fn publisher(
    p: usize,
    mut rng: Rng,
    live: Shared<Live>,
    published: Shared<Published>,
    stop: Arc<AtomicBool>,
) {
    let mut own_keys: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let clients = lock(&live).tenants.clone();
        if clients.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let tenant = rng.below(LOAD_TENANTS as u64) as usize;
        let event_type = LOAD_TYPES[rng.below(LOAD_TYPES.len() as u64) as usize];
        n += 1;
        // One publish in five carries an Idempotency-Key: a new one, or (half the time)
        // one this thread used before, with the same body.
        let keyed = rng.below(5) == 0;
        let (tenant, body, key) = if keyed && !own_keys.is_empty() && rng.below(2) == 0 {
            let key = own_keys[rng.below(own_keys.len() as u64) as usize].clone();
            let (tenant, body, _) = lock(&published).keyed[&key].clone();
            (tenant, body, Some(key))
        } else {
            let body = json!({"type": event_type, "data": {"publisher": p, "n": n}});
            if keyed {
                let key = format!("idem-{p}-{n}");
                lock(&published)
                    .keyed
                    .insert(key.clone(), (tenant, body.clone(), BTreeSet::new()));
                own_keys.push(key.clone());
                (tenant, body, Some(key))
            } else {
                (tenant, body, None)
            }
        };
        let headers = key.iter().map(|k| ("Idempotency-Key", k.clone())).collect();
        // Paced: a few thousand events in the run keep the final checks short.
        std::thread::sleep(PUBLISH_PAUSE);
        let answer = send_json(&clients[tenant], "POST", "/v1/events", Some(&body), headers);
        let mut seen = lock(&published);
        match answer {
            Some(a) if a.status == 202 => {
                let id = a.json()["id"].as_str().map(str::to_string);
                match id {
                    Some(id) => {
                        if let Some(key) = &key {
                            let answered = &mut seen.keyed.get_mut(key).expect("recorded").2;
                            // An event is counted once: at the first 202 for its key
                            // (the final check asserts no key got two ids).
                            if !answered.insert(id.clone()) || answered.len() > 1 {
                                seen.replays += 1;
                                continue;
                            }
                        }
                        let event_type = LOAD_TYPES
                            .iter()
                            .find(|t| **t == body["type"])
                            .expect("a load type");
                        seen.acked.push(Acked {
                            id,
                            tenant,
                            event_type,
                        });
                    }
                    None => seen
                        .unexpected
                        .push(format!("202 without id: {}", a.text())),
                }
            }
            Some(a) if a.status == 503 => seen.refused += 1,
            Some(a) => seen
                .unexpected
                .push(format!("publish: {} {}", a.status, a.text())),
            None => {
                seen.unanswered += 1;
                drop(seen);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Makes seeded random changes, paced, recording which were acknowledged.
fn changer(
    mut rng: Rng,
    live: Shared<Live>,
    changes: Shared<Changes>,
    churn_url: String,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let (admin, clients) = {
            let l = lock(&live);
            (l.admin.clone(), l.tenants.clone())
        };
        let Some(admin) = admin else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        std::thread::sleep(Duration::from_millis(rng.between(10, 60)));
        n += 1;
        let c = lock(&changes);
        let choice = rng.below(10);
        let hooks_alive: Vec<usize> = c
            .hooks
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.deleted && !h.uncertain)
            .map(|(i, _)| i)
            .collect();
        let keys_live: Vec<usize> = c
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| !k.revoked && !k.uncertain)
            .map(|(i, _)| i)
            .collect();
        // Requests are sent with the lock released (a kill may take a while to show).
        match choice {
            0 => {
                drop(c);
                let id = format!("churn_tenant_{n}");
                let answer = send_json(
                    &admin,
                    "POST",
                    "/v1/tenants",
                    Some(&json!({"id": id})),
                    vec![],
                );
                let mut c = lock(&changes);
                match answer {
                    Some(a) if a.status == 201 => {
                        let key = a.json()["api_key"].as_str().unwrap_or_default().to_string();
                        drop(c);
                        // Something for its deletion to purge: an event (no webhook: the
                        // stream's window) and its idempotency key.
                        let probe = publish_probe(&admin.key(&key));
                        c = lock(&changes);
                        if let Some(event) = probe {
                            c.probes.insert(id.clone(), event);
                        }
                        c.tenants.push((id, key));
                        c.acknowledged += 1;
                    }
                    Some(a) => {
                        c.unexpected
                            .push(format!("create tenant: {} {}", a.status, a.text()))
                    }
                    None => c.unanswered += 1,
                }
            }
            1 => {
                drop(c);
                let tenant = rng.below(LOAD_TENANTS as u64) as usize;
                let tenant_id = format!("load_{tenant}");
                let answer = send_json(
                    &admin,
                    "POST",
                    &format!("/v1/tenants/{tenant_id}/keys"),
                    Some(&json!({})),
                    vec![],
                );
                let mut c = lock(&changes);
                match answer {
                    Some(a) if a.status == 201 => {
                        let body = a.json();
                        c.keys.push(MintedKey {
                            tenant_id,
                            key_id: body["id"].as_str().unwrap_or_default().to_string(),
                            api_key: body["api_key"].as_str().unwrap_or_default().to_string(),
                            revoked: false,
                            uncertain: false,
                        });
                        c.acknowledged += 1;
                    }
                    Some(a) => c
                        .unexpected
                        .push(format!("mint key: {} {}", a.status, a.text())),
                    None => c.unanswered += 1,
                }
            }
            2 if !keys_live.is_empty() => {
                let i = keys_live[rng.below(keys_live.len() as u64) as usize];
                let key = c.keys[i].clone();
                drop(c);
                let answer = send_json(
                    &admin,
                    "DELETE",
                    &format!("/v1/tenants/{}/keys/{}", key.tenant_id, key.key_id),
                    None,
                    vec![],
                );
                let mut c = lock(&changes);
                match answer {
                    Some(a) if a.status == 204 => {
                        c.keys[i].revoked = true;
                        c.acknowledged += 1;
                    }
                    Some(a) => c
                        .unexpected
                        .push(format!("revoke key: {} {}", a.status, a.text())),
                    None => c.keys[i].uncertain = true,
                }
            }
            // A tenant the changer made (it has no webhook): one whose deletion gets no
            // answer is in neither list, so nothing is checked of it.
            5 if !c.tenants.is_empty() => {
                let mut c = c;
                let i = rng.below(c.tenants.len() as u64) as usize;
                let (id, key) = c.tenants.swap_remove(i);
                drop(c);
                let target = format!("/v1/tenants/{id}");
                let answer = send_json(&admin, "DELETE", &target, None, vec![]);
                let mut c = lock(&changes);
                match answer {
                    Some(a) if a.status == 204 => {
                        c.deleted_tenants.push((id, key));
                        c.acknowledged += 1;
                    }
                    Some(a) => {
                        c.unexpected
                            .push(format!("delete tenant: {} {}", a.status, a.text()))
                    }
                    None => c.unanswered += 1,
                }
            }
            3 | 4 if hooks_alive.len() < 4 || choice == 3 => {
                drop(c);
                let tenant = rng.below(LOAD_TENANTS as u64) as usize;
                let path = format!("/churn/{n}");
                let description = format!("made by change {n}");
                let answer = send_json(
                    &clients[tenant],
                    "POST",
                    "/v1/webhooks",
                    Some(
                        &json!({"url": format!("{churn_url}{path}"), "events": [CHURN_TYPE],
                        "description": description}),
                    ),
                    vec![],
                );
                let mut c = lock(&changes);
                match answer {
                    Some(a) if a.status == 201 => {
                        c.hooks.push(ChurnHook {
                            tenant,
                            id: a.json()["id"].as_str().unwrap_or_default().to_string(),
                            path,
                            description,
                            status: "active",
                            deleted: false,
                            uncertain: false,
                        });
                        c.acknowledged += 1;
                    }
                    Some(a) => {
                        c.unexpected
                            .push(format!("create webhook: {} {}", a.status, a.text()))
                    }
                    None => c.unanswered += 1,
                }
            }
            _ if !hooks_alive.is_empty() => {
                let i = hooks_alive[rng.below(hooks_alive.len() as u64) as usize];
                let hook = c.hooks[i].clone();
                drop(c);
                let client = &clients[hook.tenant];
                let target = format!("/v1/webhooks/{}", hook.id);
                // Patch (move it and describe it anew), disable or enable, or delete.
                let what = rng.below(4);
                let (method, body, mut after) = match what {
                    0 | 1 => {
                        let path = format!("/churn/{n}");
                        let description = format!("patched by change {n}");
                        let body = json!({"url": format!("{churn_url}{path}"), "description": description});
                        let after = ChurnHook {
                            path,
                            description,
                            ..hook.clone()
                        };
                        ("PATCH", Some(body), after)
                    }
                    2 => {
                        let status = if hook.status == "active" {
                            "disabled"
                        } else {
                            "active"
                        };
                        let after = ChurnHook {
                            status,
                            ..hook.clone()
                        };
                        ("PATCH", Some(json!({"status": status})), after)
                    }
                    _ => (
                        "DELETE",
                        None,
                        ChurnHook {
                            deleted: true,
                            ..hook.clone()
                        },
                    ),
                };
                let answer = send_json(client, method, &target, body.as_ref(), vec![]);
                let mut c = lock(&changes);
                match answer {
                    Some(a) if matches!(a.status, 200 | 204) => {
                        c.hooks[i] = after;
                        c.acknowledged += 1;
                    }
                    Some(a) => {
                        c.unexpected
                            .push(format!("{method} {target}: {} {}", a.status, a.text()))
                    }
                    None => {
                        after = hook;
                        after.uncertain = true;
                        c.hooks[i] = after;
                        c.unanswered += 1;
                    }
                }
            }
            _ => {}
        }
    }
}

fn seed() -> u64 {
    env_number("HERALD_E2E_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

/// The 2xx-answered requests of `records`, by (path, `webhook-id`).
fn successes(records: &[Record]) -> BTreeMap<(String, String), usize> {
    let mut by = BTreeMap::new();
    for record in records {
        let ok = record
            .action
            .status()
            .is_some_and(|s| (200..300).contains(&s));
        if let (true, Some(id)) = (ok, record.header("webhook-id")) {
            *by.entry((record.path().to_string(), id.to_string()))
                .or_default() += 1;
        }
    }
    by
}

#[test]
fn repeated_sigkill_loses_no_acknowledged_event_or_change() {
    let seed = seed();
    let kills = env_number("HERALD_E2E_KILLS").map_or(KILLS_DEFAULT, |k| k as usize);
    println!("crash consistency: HERALD_E2E_SEED={seed} HERALD_E2E_KILLS={kills}");
    eprintln!("crash consistency: HERALD_E2E_SEED={seed} HERALD_E2E_KILLS={kills}");
    let started = Instant::now();
    let mut rng = Rng(seed);

    // Receivers: flaky (5xx and slow answers, seeded), one that goes down and comes
    // back, and a healthy one for the changer's webhooks.
    let flaky = Sink::builder()
        .requests_max(1_000_000)
        .seed(seed)
        .status_mix(StatusMix::new(&[(200, 85), (500, 10), (503, 5)]).expect("a valid mix"))
        .answer_latency(LatencyModel::log_normal(2.0, 80.0).expect("a valid model"))
        .start()
        .expect("the sink starts");
    let flapping = Arc::new(Flapping::start());
    let churn = Sink::builder()
        .requests_max(1_000_000)
        .start()
        .expect("the sink starts");

    let site = Site::new();
    let options = Options::default().config(CONFIG);
    let server = Server::start(&site, &options);
    let admin = server.admin();
    let mut tenants = Vec::new();
    let mut hooks = Vec::new();
    for t in 0..LOAD_TENANTS {
        let tenant = create_tenant(&admin, &format!("load_{t}"));
        let wanted: [(usize, &str, Vec<&'static str>); 3] = [
            (0, "orders", vec!["order.*"]),
            (0, "payments", vec!["payment.*"]),
            (1, "all", vec!["order.*", "payment.*"]),
        ];
        for (sink, name, events) in wanted {
            let path = format!("/t{t}/{name}");
            let url = if sink == 0 {
                flaky.url(&path)
            } else {
                flapping.url(&path)
            };
            let secret = standard_secret((hooks.len() + 1) as u8);
            let webhook = create_webhook(
                &tenant,
                &json!({"url": url, "events": events, "secret": secret}),
            );
            hooks.push(LoadHook {
                tenant: t,
                id: webhook["id"].as_str().expect("id").to_string(),
                sink,
                path,
                types: LOAD_TYPES
                    .iter()
                    .copied()
                    .filter(|ty| {
                        events
                            .iter()
                            .any(|e| ty.starts_with(e.trim_end_matches('*')))
                    })
                    .collect(),
                secret,
            });
        }
        tenants.push(tenant);
    }

    let live: Shared<Live> = Arc::new(Mutex::new(Live {
        admin: Some(admin.clone()),
        tenants: tenants.clone(),
    }));
    let published: Shared<Published> = Arc::default();
    let changes: Shared<Changes> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in 0..PUBLISHERS {
        let (r, l, s, st) = (
            rng.fork(p as u64 + 1),
            live.clone(),
            published.clone(),
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || publisher(p, r, l, s, st)));
    }
    {
        let (r, l, c, st) = (rng.fork(100), live.clone(), changes.clone(), stop.clone());
        let url = format!("http://{}", churn.addr());
        threads.push(std::thread::spawn(move || changer(r, l, c, url, st)));
    }
    // The receiver that flaps: up 0.5–3 s, down 0.2–1.5 s.
    let outages = Arc::new(AtomicUsize::new(0));
    let flapper = {
        let (mut r, f, st, o) = (
            rng.fork(200),
            flapping.clone(),
            stop.clone(),
            outages.clone(),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(r.between(500, 3000)));
                f.down();
                o.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(r.between(200, 1500)));
                f.up();
            }
            f.up();
        })
    };

    // Kill at random moments; restart at once, except after the last kill: load and
    // changes stop there, the receivers heal, and the last start serves the checks.
    let mut server = Some(server);
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.between(LIFE_MS.0, LIFE_MS.1)));
        {
            let mut l = lock(&live);
            l.admin = None;
            l.tenants.clear();
        }
        server.take().expect("a server runs").kill();
        let acked = lock(&published).acked.len();
        eprintln!(
            "kill {}/{kills} at {:.1}s: {acked} publishes acknowledged so far",
            k + 1,
            started.elapsed().as_secs_f64()
        );
        if k + 1 < kills {
            let restarted = Server::start(&site, &options);
            let mut l = lock(&live);
            l.admin = Some(restarted.admin());
            l.tenants = tenants.iter().map(|t| t.on(&restarted)).collect();
            server = Some(restarted);
        }
    }
    stop.store(true, Ordering::Release);
    for thread in threads {
        thread.join().expect("a load thread panicked");
    }
    flapper
        .join()
        .expect("the flapping receiver's thread panicked");
    flaky.set_status_mix(None);
    flaky.set_answer_latency(None);
    let server = Server::start(&site, &options);
    let load_time = started.elapsed();

    let published = std::mem::take(&mut *lock(&published));
    let changes = std::mem::take(&mut *lock(&changes));
    assert!(
        published.unexpected.is_empty(),
        "unexpected publish answers: {:?}",
        published.unexpected
    );
    assert!(
        changes.unexpected.is_empty(),
        "unexpected change answers: {:?}",
        changes.unexpected
    );
    let tenants: Vec<Client> = tenants.iter().map(|t| t.on(&server)).collect();

    // Every reuse of an idempotency key answered the same event id.
    let mut keys_reused = 0;
    for (key, (_, _, ids)) in &published.keyed {
        assert!(ids.len() <= 1, "Idempotency-Key {key} answered {ids:?}");
        keys_reused += usize::from(!ids.is_empty());
    }
    let ids: BTreeSet<&str> = published.acked.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        published.acked.len(),
        "an event id was answered twice outside idempotency keys"
    );

    // Every acknowledged event reaches every matching webhook with a 2xx.
    let wanted: Vec<(usize, String)> = published
        .acked
        .iter()
        .flat_map(|a| {
            hooks
                .iter()
                .enumerate()
                .filter(|(_, h)| h.tenant == a.tenant && h.types.contains(&a.event_type))
                .map(|(i, _)| (i, a.id.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let records = |sink: usize| {
        if sink == 0 {
            flaky.requests()
        } else {
            flapping.requests()
        }
    };
    let settle_start = Instant::now();
    let mut missing_at_restart = None;
    let delivered = wait_for(
        &format!("{} deliveries of acknowledged events", wanted.len()),
        SETTLE_TIMEOUT,
        || {
            let got: BTreeMap<(String, String), usize> = successes(&records(0))
                .into_iter()
                .chain(successes(&records(1)))
                .collect();
            let missing: Vec<&(usize, String)> = wanted
                .iter()
                .filter(|(i, id)| !got.contains_key(&(hooks[*i].path.clone(), id.clone())))
                .collect();
            missing_at_restart.get_or_insert(missing.len());
            if missing.is_empty() {
                Some(got)
            } else {
                std::thread::sleep(Duration::from_millis(200));
                None
            }
        },
    );
    let settled_in = settle_start.elapsed();
    let duplicates: usize = wanted
        .iter()
        .map(|(i, id)| delivered[&(hooks[*i].path.clone(), id.clone())] - 1)
        .sum();
    // Every request that arrived is signed with its webhook's secret.
    for sink in [0, 1] {
        let addr = if sink == 0 {
            flaky.addr()
        } else {
            flapping.addr
        };
        let records = records(sink);
        for hook in hooks.iter().filter(|h| h.sink == sink) {
            let verifier =
                Verifier::new(Scheme::Standard, &[hook.secret.as_str()]).expect("a valid secret");
            for record in records.iter().filter(|r| r.path() == hook.path) {
                let url = format!("http://{addr}{}", record.target);
                if let Err(e) = verifier.verify(&text_headers(record), &url, &record.body, now_s())
                {
                    panic!("a delivery to {} does not verify: {e}", hook.path);
                }
            }
        }
    }

    // The log holds each acknowledged event once per matching webhook.
    let mut logged = 0;
    for (i, hook) in hooks.iter().enumerate() {
        let log = deliveries(&tenants[hook.tenant], &hook.id, "");
        let mut per_event: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &log {
            *per_event
                .entry(d["event_id"].as_str().unwrap_or_default())
                .or_default() += 1;
        }
        for (_, id) in wanted.iter().filter(|(w, _)| *w == i) {
            let n = per_event.get(id.as_str()).copied().unwrap_or(0);
            assert_eq!(n, 1, "{id} is in the log of {} {n} times", hook.id);
            logged += 1;
        }
        assert!(
            per_event.values().all(|n| *n == 1),
            "an event fanned out twice to {}",
            hook.id
        );
    }

    // Acknowledged changes hold.
    for (id, key) in &changes.tenants {
        let answer = server.client().key(key).get("/v1/webhooks");
        assert_eq!(
            answer.status,
            200,
            "tenant {id} made before a kill: {}",
            answer.text()
        );
    }
    let mut probes_checked = 0;
    for (id, key) in &changes.deleted_tenants {
        let answer = server.client().key(key).get("/v1/webhooks");
        assert_eq!(
            answer.status, 401,
            "tenant {id} was deleted before a kill: its key"
        );
        let answer = server.admin().get(&format!("/v1/tenants/{id}"));
        assert_eq!(answer.status, 404, "tenant {id} was deleted before a kill");
        // Made again, it sees nothing the deleted one left: its probe's key is forgotten.
        if let Some(before) = changes.probes.get(id) {
            let made = server.admin().post("/v1/tenants", &json!({"id": id}));
            assert_eq!(made.status, 201, "tenant {id} made again: {}", made.text());
            let key = made.json()["api_key"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let after = publish_probe(&server.client().key(&key));
            assert!(after.is_some(), "tenant {id} made again publishes");
            assert_ne!(
                after.as_ref(),
                Some(before),
                "tenant {id} made again was answered with its deleted namesake's event"
            );
            probes_checked += 1;
        }
    }
    let mut keys_checked = (0, 0);
    for key in changes.keys.iter().filter(|k| !k.uncertain) {
        let status = server.client().key(&key.api_key).get("/v1/webhooks").status;
        if key.revoked {
            assert_eq!(status, 401, "key {} was revoked before a kill", key.key_id);
            keys_checked.1 += 1;
        } else {
            assert_eq!(status, 200, "key {} was minted before a kill", key.key_id);
            keys_checked.0 += 1;
        }
    }
    let certain: Vec<&ChurnHook> = changes.hooks.iter().filter(|h| !h.uncertain).collect();
    for hook in &certain {
        let answer = tenants[hook.tenant].get(&format!("/v1/webhooks/{}", hook.id));
        if hook.deleted {
            assert_eq!(
                answer.status,
                404,
                "webhook {} was deleted: {}",
                hook.id,
                answer.text()
            );
            continue;
        }
        let got = answer.expect(200);
        assert_eq!(
            got["url"],
            format!("http://{}{}", churn.addr(), hook.path),
            "{got}"
        );
        assert_eq!(got["description"], hook.description, "{got}");
        assert_eq!(got["status"], hook.status, "{got}");
    }
    // And deliveries follow them: an event of the changer's type reaches the enabled
    // webhooks at their current URL, and no disabled or deleted one.
    let mut final_events = Vec::new();
    for tenant in &tenants {
        let event = publish(
            tenant,
            &json!({"type": CHURN_TYPE, "data": {"final": true}}),
        );
        final_events.push(event["id"].as_str().expect("id").to_string());
    }
    for hook in certain
        .iter()
        .filter(|h| !h.deleted && h.status == "active")
    {
        wait_received(&churn, &hook.path, &final_events[hook.tenant]);
    }
    for hook in certain
        .iter()
        .filter(|h| h.deleted || h.status == "disabled")
    {
        let stray = churn
            .requests_to(&hook.path)
            .iter()
            .any(|r| r.header("webhook-id") == Some(final_events[hook.tenant].as_str()));
        assert!(
            !stray,
            "a {} webhook got a delivery",
            if hook.deleted { "deleted" } else { "disabled" }
        );
    }

    let summary = format!(
        "crash consistency (seed {seed}): {kills} SIGKILLs in {:.1}s; {} publishes acknowledged \
         ({} with an Idempotency-Key, {keys_reused} keys answered, {} replays answered), {} unanswered, {} refused with 503; \
         {} deliveries wanted, 0 lost, {duplicates} duplicates, {logged} log entries checked; \
         {} missing at the last start, all in after {settled_in:.1?}; changes: {} acknowledged \
         ({} tenants, {} deleted ({probes_checked} made again, finding nothing of before), {} live and {} revoked keys, {} webhooks checked), {} unanswered; \
         receiver outages {}",
        load_time.as_secs_f64(),
        published.acked.len(),
        published.keyed.len(),
        published.replays,
        published.unanswered,
        published.refused,
        wanted.len(),
        missing_at_restart.unwrap_or(0),
        changes.acknowledged,
        changes.tenants.len(),
        changes.deleted_tenants.len(),
        keys_checked.0,
        keys_checked.1,
        certain.len(),
        changes.unanswered,
        outages.load(Ordering::Relaxed),
    );
    println!("{summary}");
    eprintln!("{summary}");
}
