//! The operator console (`/console`) in a real browser: Debian's headless Chromium
//! driven over WebDriver against the real `herald serve`, with a `herald-sink` receiver
//! and a scripted receiver that answers with chosen statuses and bodies.
//!
//! One story, in the order an operator would live it: sign in; create a webhook and
//! send it a test event (delivered, in the log); move it to a failing receiver whose
//! body is hostile markup (the attempt detail shows the code and the body as inert
//! text; no script runs); retry once the receiver recovers; rotate the secret (shown
//! once); disable and enable; delete with a confirmation; the admin key with the tenant
//! picker; another tenant's key sees none of it; sign out. Screenshots go to
//! `target/console-screenshots/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_e2e::browser::{screenshot_dir, Browser};
use herald_e2e::*;
use herald_http::{Limits, RequestParser};
use herald_sink::Sink;
use serde_json::{json, Value};

use crate::FAST_RETRIES;

/// Markup a hostile receiver answers with: if the console ever parsed it as HTML, the
/// script (or the image's error handler) would set `window.__heraldPwned`.
const HOSTILE_BODY: &str = "<script>window.__heraldPwned = 1</script>\
<img src=x onerror=\"window.__heraldPwned = 2\"><b>not bold</b>";

/// A receiver answering every request with the status and body currently set, one
/// request per connection (`Connection: close`), on a thread of its own.
struct ScriptedReceiver {
    addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedReceiver {
    fn start(status: u16, body: &str) -> ScriptedReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port can be bound");
        let addr = listener
            .local_addr()
            .expect("bound sockets have an address");
        let answer = Arc::new(Mutex::new((status, body.to_string())));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answer, hits, stop) = (answer.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (status, body) = answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if answer_one(stream, status, &body) {
                        hits.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        ScriptedReceiver {
            addr,
            answer,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = (status, body.to_string());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads one request (bounded) and answers it; whether a whole request arrived.
fn answer_one(mut stream: TcpStream, status: u16, body: &str) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        match parser.feed(&buf[..n]) {
            Ok((_, Some(_request))) => break,
            Ok((_, None)) => {}
            Err(_) => return false,
        }
    }
    let mut out = Vec::new();
    herald_http::encode_response(
        &mut out,
        status,
        &[
            // The receiver claims HTML: the console must still show it as text.
            ("Content-Type", b"text/html; charset=utf-8"),
            ("Connection", b"close"),
        ],
        body.as_bytes(),
    )
    .expect("the receiver's answer encodes");
    let _ = stream.write_all(&out);
    true
}

impl Drop for ScriptedReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The console's page and assets as the server sends them.
fn check_headers_and_weight(server: &Server) {
    let client = server.client();
    let mut total = 0;
    for path in [
        "/console",
        "/console/",
        "/console/console.js",
        "/console/console.css",
    ] {
        let resp = client.get(path);
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let csp = resp.header("Content-Security-Policy").unwrap_or_default();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP {csp:?} lacks {directive}"
            );
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            resp.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{path}"
        );
        if path != "/console/" {
            total += resp.body.len();
        }
    }
    assert!(
        total < 200 * 1024,
        "the first page loads {total} bytes (limit 200 KB)"
    );
    // Unknown assets are not found, and the assets need no key (the page has none yet).
    assert_eq!(client.get("/console/missing.js").status, 404);
}

/// Signs in through the form with `key`.
fn sign_in(browser: &Browser, base: &str, key: &str) {
    browser.goto(&format!("{base}/console"));
    browser.wait("form#signin input[name=\"api_key\"]");
    browser.fill("input[name=\"api_key\"]", key);
    browser.click("form#signin button[type=\"submit\"]");
}

fn sign_out(browser: &Browser) {
    browser.click("#sign-out");
    browser.wait("form#signin input[name=\"api_key\"]");
    let stored = browser.execute("return sessionStorage.length", vec![]);
    assert_eq!(
        stored,
        json!(0),
        "signing out leaves nothing in sessionStorage"
    );
}

/// Opens a console page by its route (`#/…`) and waits for its heading. The heading
/// on screen before is marked, so that the wait is for the new page's.
fn open(browser: &Browser, base: &str, route: &str, title: &str) {
    browser.execute(
        "const title = document.getElementById('page-title');
         if (title) title.setAttribute('data-left', '');
         return null",
        vec![],
    );
    browser.goto(&format!("{base}/console#{route}"));
    browser.wait_text("#page-title:not([data-left])", title);
}

/// Panics unless every visible form control has an accessible name (a `<label>`,
/// `aria-label`, `aria-labelledby`, or a button's own text).
fn assert_labelled(browser: &Browser, page: &str) {
    let unlabelled = browser.execute(
        "return [...document.querySelectorAll('input, select, textarea, button')]
            .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby')
                && !(el.tagName === 'BUTTON' && el.textContent.trim()))
            .map((el) => el.tagName + ' ' + (el.name || el.id || el.className))",
        vec![],
    );
    assert_eq!(unlabelled, json!([]), "{page}: controls without a label");
}

/// Publishes `count` events for `tenant` in batches of 1,000 (one API call each).
fn publish_many(tenant: &Client, count: usize) {
    for first in (0..count).step_by(1000) {
        let events: Vec<Value> = (first..(first + 1000).min(count))
            .map(|n| json!({"type": "inventory.updated", "data": {"sku": format!("sku_{n}")}}))
            .collect();
        let answer = tenant
            .post("/v1/events/batch", &json!({ "events": events }))
            .expect(200);
        let accepted = answer["data"].as_array().map_or(0, |items| {
            items.iter().filter(|i| i["status"] == 202).count()
        });
        assert_eq!(accepted, events.len(), "batch from {first}: {answer}");
    }
}

/// The key must never reach the address bar.
fn assert_key_not_in_url(browser: &Browser, key: &str) {
    let url = browser.url();
    assert!(!url.contains(key), "the API key is in the URL: {url}");
}

#[test]
fn operator_console_in_a_real_browser() {
    let browser = Browser::start(1280, 900);
    let shots = screenshot_dir();
    let shot = |name: &str| browser.screenshot(&shots.join(format!("{name}.png")));

    let site = Site::new();
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    check_headers_and_weight(&server);
    let base = format!("http://{}", server.addr());
    let admin = server.admin();
    let (acme, acme_key) = tenant(&admin, "acme");
    let (_globex, globex_key) = tenant(&admin, "globex");
    let sink = Sink::builder().start().expect("the sink starts");
    let flaky = ScriptedReceiver::start(422, HOSTILE_BODY);
    // A tenant with a long delivery log (delivered while the story goes on).
    const BULK_EVENTS: usize = 10_000;
    let (bulk, _) = tenant(&admin, "bulk");
    create_webhook(&bulk, &json!({"url": sink.url("/bulk"), "events": ["*"]}));
    publish_many(&bulk, BULK_EVENTS);

    // ---- sign in: a wrong key is refused with the API's message, then the right one.
    sign_in(&browser, &base, "hrk_not_a_real_key");
    browser.wait_text("#signin-errors", "not valid");
    assert_key_not_in_url(&browser, "hrk_not_a_real_key");
    assert_labelled(&browser, "sign-in");
    // By keyboard: the key, then Enter.
    browser.fill("input[name=\"api_key\"]", &format!("{acme_key}\u{E007}"));
    browser.wait_text("#page-title", "Overview");
    browser.wait_text("#who", "tenant key");
    assert_key_not_in_url(&browser, &acme_key);
    browser.wait_text("main", "No webhooks yet");

    // ---- create a webhook to the sink through the form; its secret is shown once.
    browser.click("#nav a[data-page=\"webhooks\"]");
    browser.wait_text("#webhook-list", "No webhooks yet");
    browser.click("#new-webhook");
    browser.wait("#webhook-form");
    assert_labelled(&browser, "new webhook");
    // The API's error message is shown, and the field it names is marked.
    browser.fill(
        "#webhook-form input[name=\"url\"]",
        "ftp://example.com/hooks",
    );
    browser.fill(
        "#webhook-form input[name=\"events\"]",
        "order.*, payment.processed",
    );
    browser.click("#webhook-form button[type=\"submit\"]");
    browser.wait_text("#form-errors", "url");
    browser.wait("#webhook-form input[name=\"url\"][aria-invalid=\"true\"]");
    browser.fill("#webhook-form input[name=\"url\"]", &sink.url("/hooks"));
    browser.fill(
        "#webhook-form input[name=\"description\"]",
        "orders to the sink",
    );
    browser.click("#webhook-form button[type=\"submit\"]");
    browser.wait_text("#created", "Created webhook");
    let secret = string(browser.property("#secret-value", "value"));
    assert!(secret.starts_with("whsec_"), "{secret}");
    let webhooks = acme.get("/v1/webhooks").expect(200);
    let webhook_id = string(webhooks["data"][0]["id"].clone());
    assert_eq!(webhooks["data"][0]["url"], sink.url("/hooks"));
    assert!(
        webhooks["data"][0].get("secret").is_none(),
        "listings never show secrets"
    );
    shot("01-webhook-created");

    // ---- test send from the catalog: followed until delivered, signed with that secret.
    browser.click("main a[href^=\"#/test\"]");
    browser.wait("#test-form");
    assert_labelled(&browser, "test send");
    browser.choose("#test-type", "order.created");
    let preview: Value = serde_json::from_str(&string(browser.property("#test-payload", "value")))
        .expect("the preview is JSON");
    let catalog = acme.get("/v1/event-types").expect(200);
    let sample = catalog["data"]
        .as_array()
        .and_then(|types| types.iter().find(|t| t["type"] == "order.created"))
        .map(|t| t["sample"].clone())
        .expect("order.created is in the catalog");
    assert_eq!(preview, sample, "the preview is the catalog's sample");
    browser.click("#test-send");
    browser.wait("#follow-status[data-status=\"success\"]");
    let delivery_id = browser.text("#test-delivery-id");
    let delivered = sink.requests_to("/hooks");
    assert_eq!(delivered.len(), 1, "one test delivery");
    assert_all_verified(&sink, &delivered, &[&secret]);
    shot("02-test-send");

    // ---- the delivery log lists it as delivered; filters narrow it.
    browser.click("#nav a[data-page=\"deliveries\"]");
    browser.wait(&format!(
        "#deliveries-table tr[data-id=\"{delivery_id}\"][data-status=\"success\"]"
    ));
    assert_labelled(&browser, "deliveries");
    open(&browser, &base, "/deliveries?status=failed", "Deliveries");
    browser.wait_text("#delivery-results", "No deliveries match");
    open(
        &browser,
        &base,
        "/deliveries?status=success&type=order.created",
        "Deliveries",
    );
    browser.wait(&format!("#deliveries-table tr[data-id=\"{delivery_id}\"]"));
    // By its event's id (the filter `event_id` of `GET /v1/deliveries`).
    let test_event = string(
        acme.get(&format!("/v1/deliveries/{delivery_id}"))
            .expect(200)["event_id"]
            .clone(),
    );
    open(
        &browser,
        &base,
        &format!("/deliveries?event={test_event}"),
        "Deliveries",
    );
    browser.wait(&format!("#deliveries-table tr[data-id=\"{delivery_id}\"]"));
    assert_eq!(
        browser.count("#deliveries-table tbody tr"),
        1,
        "only its event's delivery"
    );
    open(&browser, &base, "/deliveries?event=evt_none", "Deliveries");
    browser.wait_text("#delivery-results", "No deliveries match");

    // ---- edit: move the webhook to a receiver that fails with a hostile body.
    open(
        &browser,
        &base,
        &format!("/webhooks/{webhook_id}/edit"),
        "Edit webhook",
    );
    browser.wait_text("#webhook-form", "Endpoint URL");
    shot("10-edit-webhook");
    browser.fill("#webhook-form input[name=\"url\"]", &flaky.url("/flaky"));
    browser.click("#webhook-form button[type=\"submit\"]");
    browser.wait_text("#flash", "Saved webhook");
    assert_eq!(
        acme.get(&format!("/v1/webhooks/{webhook_id}")).expect(200)["url"],
        flaky.url("/flaky")
    );

    // ---- test send to the failing receiver: the attempt detail shows code and body.
    open(
        &browser,
        &base,
        &format!("/test?webhook={webhook_id}&type=order.created"),
        "Test send",
    );
    browser.click("#test-send");
    browser.wait("#follow-status[data-status=\"failed\"]");
    let failed_id = browser.text("#test-delivery-id");
    browser.click("#follow-link");
    browser.wait_text("#delivery-code", "422");
    browser.wait_text("#delivery-error", "status_422");
    browser.wait_text("#attempts-table", "HTTP 422");
    let shown = string(browser.property("#response-body", "textContent"));
    assert_eq!(shown, HOSTILE_BODY, "the body is shown verbatim, as text");
    let inert = browser.execute(
        "return {
            pwned: window.__heraldPwned === undefined ? null : window.__heraldPwned,
            elements: document.getElementById('response-body').childElementCount,
            images: document.querySelectorAll('main img').length,
            bold: document.querySelectorAll('main b').length,
        }",
        vec![],
    );
    assert_eq!(
        inert,
        json!({"pwned": null, "elements": 0, "images": 0, "bold": 0}),
        "the hostile body ran or became markup"
    );
    shot("03-hostile-body-inert");

    // ---- the receiver recovers; retry from the detail page succeeds.
    flaky.set(200, "ok");
    let hits_before = flaky.hits();
    browser.click("#retry");
    browser.wait("#retry-queued");
    browser.wait("#delivery-status[data-status=\"success\"]");
    browser.wait_text("#delivery-attempts", "2");
    assert!(flaky.hits() > hits_before, "the retry reached the receiver");
    assert_eq!(
        acme.get(&format!("/v1/deliveries/{failed_id}")).expect(200)["status"],
        "success"
    );
    assert_labelled(&browser, "delivery detail");
    shot("04-retried");

    // ---- recover since a time: a delivery that failed while the receiver was down is
    // re-sent once it is back.
    flaky.set(503, "down for maintenance");
    let down = publish(
        &acme,
        &json!({"type": "order.updated", "data": {"order_id": "ord_2"}}),
    );
    let down_id = string(down["id"].clone());
    // FAST_RETRIES: two quick retries, then the delivery is exhausted (failed).
    let failed = wait_delivery(&acme, &webhook_id, &down_id, "failed");
    assert_eq!(failed["response_code"], 503, "{failed}");
    flaky.set(200, "ok");
    open(&browser, &base, "/deliveries?status=failed", "Deliveries");
    browser.wait("#deliveries-table tr[data-status=\"failed\"]");
    browser.click("#recover summary");
    browser.choose("#recover-webhook", &webhook_id);
    browser.click("#recover-form button[type=\"submit\"]");
    browser.wait_text("#recover-form", "Re-queued 1 delivery");
    wait_delivery(&acme, &webhook_id, &down_id, "success");

    // ---- rotate the secret: the new one is shown once, then gone from the page.
    open(&browser, &base, "/webhooks", "Webhooks");
    let row = format!("#webhooks-table tr[data-id=\"{webhook_id}\"]");
    browser.wait_text(&format!("{row} [data-health]"), "Success (1 h)");
    shot("05-webhooks");
    browser.click(&format!("{row} button[data-action=\"rotate\"]"));
    browser.wait("dialog[open] input[name=\"grace_s\"]");
    browser.click("dialog[open] button[type=\"submit\"]");
    browser.wait("#secret-panel #secret-value");
    let rotated = string(browser.property("#secret-value", "value"));
    assert!(
        rotated.starts_with("whsec_") && rotated != secret,
        "{rotated}"
    );
    browser.click("#copy-secret");
    browser.wait_text("#secret-panel [role=\"status\"]", "C");
    // The list's other actions do not take it away before it is acknowledged.
    browser.click("#refresh-webhooks");
    browser.wait(&row);
    assert_eq!(
        string(browser.property("#secret-value", "value")),
        rotated,
        "a refresh keeps the secret shown"
    );
    open(&browser, &base, "/overview", "Overview");
    open(&browser, &base, "/webhooks", "Webhooks");
    browser.wait(&row);
    assert_eq!(
        browser.count("#secret-value"),
        0,
        "the secret is shown once"
    );
    assert!(acme
        .get(&format!("/v1/webhooks/{webhook_id}"))
        .expect(200)
        .get("secret")
        .is_none());

    // ---- disable and enable.
    browser.click(&format!("{row} button[data-action=\"disable\"]"));
    browser.wait(&format!("{row} button[data-action=\"enable\"]"));
    assert_eq!(
        acme.get(&format!("/v1/webhooks/{webhook_id}")).expect(200)["status"],
        "disabled"
    );
    browser.click(&format!("{row} button[data-action=\"enable\"]"));
    browser.wait(&format!("{row} button[data-action=\"disable\"]"));
    assert_eq!(
        acme.get(&format!("/v1/webhooks/{webhook_id}")).expect(200)["status"],
        "active"
    );

    // ---- the other pages render from the API.
    open(&browser, &base, "/overview", "Overview");
    browser.wait("#ov-rate");
    browser.wait("svg.chart");
    browser.wait_text("#ov-webhooks", "1");
    browser.wait_until("two /metrics samples (a rate)", || {
        (!browser.text("#ov-rate").contains('—')).then_some(())
    });
    shot("07-overview");
    open(&browser, &base, "/catalog", "Event catalog");
    browser.wait("article[data-type=\"order.created\"] pre");
    assert!(
        browser.count("article.catalog-item") >= 20,
        "the whole catalog is listed"
    );
    assert_labelled(&browser, "catalog");
    shot("09-catalog");
    open(&browser, &base, "/tail", "Live tail");
    browser.wait_text("#tail-status", "Following");
    let event = publish(
        &acme,
        &json!({"type": "order.created", "data": {"order_id": "ord_tail"}}),
    );
    let event_id = string(event["id"].clone());
    browser.wait_text("#tail-rows", &event_id);
    browser.wait("#tail-rows tr[data-status=\"success\"]");
    shot("08-live-tail");

    // ---- phone width: nothing overflows sideways.
    browser.resize(390, 844);
    open(&browser, &base, "/deliveries", "Deliveries");
    browser.wait(&format!("#deliveries-table tr[data-id=\"{delivery_id}\"]"));
    let overflow = browser.execute(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        vec![],
    );
    assert!(
        overflow.as_i64().is_some_and(|px| px <= 0),
        "sideways overflow at phone width: {overflow}px"
    );
    shot("06-phone-deliveries");
    browser.resize(1280, 900);

    // ---- the admin key picks a tenant, then sees that tenant's webhooks.
    sign_out(&browser);
    sign_in(&browser, &base, ADMIN_KEY);
    browser.wait("#tenant-picker select[name=\"tenant\"]");
    assert_labelled(&browser, "tenant picker");
    browser.choose("#tenant", "bulk");
    browser.click("#tenant-form button[type=\"submit\"]");
    browser.wait_text("#page-title", "Overview");
    // A long log pages by cursor, a bounded number of rows at a time.
    open(&browser, &base, "/deliveries?limit=100", "Deliveries");
    for page in 1..=3 {
        browser.wait_text("#delivery-results .pager", &format!("Page {page} "));
        browser.wait_until(&format!("100 rows on page {page}"), || {
            (browser.count("#deliveries-table tbody tr") == 100).then_some(())
        });
        browser.click("#next-page");
    }
    assert_eq!(
        browser.execute(
            "return document.querySelectorAll('tr').length < 200",
            vec![]
        ),
        json!(true)
    );
    // Switching tenants from the top bar.
    browser.choose("#tenant-switch", "acme");
    open(&browser, &base, "/webhooks", "Webhooks");
    browser.wait(&row);
    assert_key_not_in_url(&browser, ADMIN_KEY);

    // ---- another tenant's key sees none of it.
    sign_out(&browser);
    sign_in(&browser, &base, &globex_key);
    browser.wait_text("#page-title", "Overview");
    open(&browser, &base, "/webhooks", "Webhooks");
    browser.wait_text("#webhook-list", "No webhooks yet");
    open(&browser, &base, "/deliveries", "Deliveries");
    browser.wait_text("#delivery-results", "No deliveries match");
    open(
        &browser,
        &base,
        &format!("/deliveries/{failed_id}"),
        "Delivery",
    );
    browser.wait_text("#delivery-detail", "no delivery");
    assert_eq!(browser.count("#response-body"), 0);

    // ---- delete with a confirmation: cancelling keeps it.
    sign_out(&browser);
    sign_in(&browser, &base, &acme_key);
    browser.wait_text("#page-title", "Overview");
    open(&browser, &base, "/webhooks", "Webhooks");
    browser.click(&format!("{row} button[data-action=\"delete\"]"));
    browser.wait("dialog[open]");
    browser.keys("\u{E00C}"); // Escape cancels.
    browser.wait_gone("dialog");
    acme.get(&format!("/v1/webhooks/{webhook_id}")).expect(200);
    browser.click(&format!("{row} button[data-action=\"delete\"]"));
    browser.click("dialog[open] button[type=\"submit\"]");
    browser.wait_text("#webhook-list", "No webhooks yet");
    acme.get(&format!("/v1/webhooks/{webhook_id}")).expect(404);

    // ---- sign out: the key is forgotten, and the pages ask for it again.
    sign_out(&browser);
    browser.goto(&format!("{base}/console#/webhooks"));
    browser.wait("form#signin input[name=\"api_key\"]");

    // The keys never reach the server's log.
    let log = server.log();
    for key in [acme_key.as_str(), globex_key.as_str(), ADMIN_KEY] {
        assert!(!log.contains(key), "an API key is in the server's log");
    }
    let bulk_delivered = wait_for("the bulk events delivered", DELIVERY_TIMEOUT, || {
        let n = sink.requests_to("/bulk").len();
        (n >= BULK_EVENTS).then_some(n)
    });
    assert_eq!(bulk_delivered, BULK_EVENTS);

    // Nothing tried to run inline code or failed in the page's script.
    let problems: Vec<(String, String)> = browser
        .console_log()
        .into_iter()
        .filter(|(_, message)| {
            message.contains("Content Security Policy") || message.contains("Uncaught")
        })
        .collect();
    assert!(
        problems.is_empty(),
        "the browser console reported: {problems:?}"
    );
}

fn string(value: Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_string()
}

/// Creates tenant `id`; its client and its key (for typing into the sign-in form).
fn tenant(admin: &Client, id: &str) -> (Client, String) {
    let created = admin.post("/v1/tenants", &json!({ "id": id })).expect(201);
    let key = string(created["api_key"].clone());
    (admin.key(&key), key)
}
