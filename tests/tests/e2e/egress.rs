//! The egress guard at the API, on a server started without `--allow-loopback`: every
//! refused range (loopback, RFC 1918, link-local and the metadata address, unique-local,
//! unspecified, and the IPv4-mapped, NAT64 and 6to4 forms of refused IPv4 addresses) is
//! a 400 on `url` at create and at PATCH, naming the address class; odd spellings of
//! loopback and names that resolve to it (`localhost`) too; allowlisted CIDRs
//! (`[egress] allow_cidrs`) and public neighbours of the refused ranges are accepted.
//!
//! At delivery: a name rebound to a refused address after create is refused then
//! (`egress_denied`, nothing sent), and redirects are final failures, never followed.

use herald_e2e::*;
use herald_sink::hostile::{Behaviour, Hostile};
use herald_sink::Sink;
use serde_json::{json, Value};

/// The allowlist of this test's server: one private IPv4 range and one unique-local
/// IPv6 range.
const CONFIG: &str = "[egress]\nallow_cidrs = [\"10.20.0.0/16\", \"fd12:3456::/32\"]\n";

#[test]
fn every_refused_range_is_a_400_at_create_naming_the_class() {
    let site = Site::new();
    let server = Server::start(&site, &Options::default().no_loopback().config(CONFIG));
    let tenant = create_tenant(&server.admin(), "tenant_egress");

    // (URL, the class the message must name)
    let refused: &[(&str, &str)] = &[
        // 127.0.0.0/8 and ::1
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://127.1.2.3/hook", "loopback"),
        ("http://127.255.255.254/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("https://[::1]:8443/hook", "loopback"),
        // 10/8, 172.16/12, 192.168/16 (outside the allowlisted 10.20/16)
        ("http://10.0.0.1/hook", "private"),
        ("http://10.21.0.1/hook", "private"),
        ("http://10.255.255.255/hook", "private"),
        ("http://172.16.0.1/hook", "private"),
        ("http://172.20.10.10/hook", "private"),
        ("http://172.31.255.254/hook", "private"),
        ("http://192.168.0.1/hook", "private"),
        ("http://192.168.255.254/hook", "private"),
        // 169.254.169.254 and the rest of link-local, IPv4 and IPv6
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://169.254.0.1/hook", "link-local"),
        ("http://169.254.255.254/hook", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        // fd00::/8 (and the rest of unique-local fc00::/7), outside fd12:3456::/32
        ("http://[fd00::1]/hook", "unique-local"),
        ("http://[fdff:ffff::1]/hook", "unique-local"),
        ("http://[fd12:3457::1]/hook", "unique-local"),
        ("http://[fc00::1]/hook", "unique-local"),
        // 0.0.0.0 and ::
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://0.0.0.0:9000/hook", "unspecified"),
        ("http://0.1.2.3/hook", "unspecified"),
        ("http://[::]/hook", "unspecified"),
        // IPv4-mapped IPv6
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://[::ffff:7f00:1]/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://[::ffff:192.168.1.1]/hook", "private"),
        ("http://[::ffff:169.254.169.254]/hook", "cloud metadata"),
        ("http://[::ffff:0.0.0.0]/hook", "unspecified"),
        // NAT64 (64:ff9b::/96) around refused IPv4 addresses
        ("http://[64:ff9b::127.0.0.1]/hook", "loopback"),
        ("http://[64:ff9b::7f00:1]/hook", "loopback"),
        ("http://[64:ff9b::10.0.0.1]/hook", "private"),
        ("http://[64:ff9b::a9fe:a9fe]/hook", "cloud metadata"),
        ("http://[64:ff9b::c0a8:101]/hook", "private"),
        // 6to4 (2002::/16) around refused IPv4 addresses
        ("http://[2002:7f00:1::1]/hook", "loopback"),
        ("http://[2002:a00:1::]/hook", "private"),
        ("http://[2002:a9fe:a9fe::1]/hook", "cloud metadata"),
        ("http://[2002:c0a8:101::]/hook", "private"),
        // Names that resolve to loopback
        ("http://localhost/hook", "loopback"),
        ("http://localhost:9000/hook", "loopback"),
        ("http://LOCALHOST/hook", "loopback"),
    ];
    // Other spellings of a loopback address: refused as malformed or as loopback, never
    // accepted.
    let odd: &[&str] = &[
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://0x7f.0.0.1/hook",
        "http://0177.0.0.1/hook",
        "http://127.1/hook",
        "http://127.0.1/hook",
        "http://[0:0:0:0:0:0:0:1]/hook",
        "http://[::127.0.0.1]/hook",
        "http://localhost./hook",
        "http://127.0.0.1%2f@10.20.0.1/hook",
        "http://user@127.0.0.1/hook",
        "http://[::1%25lo]/hook",
    ];
    // Allowlisted and public neighbours of the refused ranges.
    let accepted: &[&str] = &[
        "http://10.20.0.1/hook",
        "http://10.20.255.254:8080/hook",
        "http://[::ffff:10.20.3.4]/hook",
        "http://[fd12:3456::1]/hook",
        "http://172.15.255.254/hook",
        "http://172.32.0.1/hook",
        "http://192.169.0.1/hook",
        "http://169.255.0.1/hook",
        "http://11.0.0.1/hook",
        "http://[2606:4700:4700::1111]/hook",
        "http://[2002:808:808::1]/hook",
        "http://[64:ff9b::8.8.8.8]/hook",
    ];

    let mut failures = Vec::new();
    for (url, class) in refused {
        let answer = tenant.post("/v1/webhooks", &json!({"url": url, "events": ["*"]}));
        let ok = answer.status == 400 && {
            let body = answer.json();
            body["error"]["field"] == "url"
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(class))
        };
        if !ok {
            failures.push(format!(
                "create {url}: want 400 on url naming {class:?}; got {} {}",
                answer.status,
                answer.text()
            ));
        }
    }
    for url in odd {
        let answer = tenant.post("/v1/webhooks", &json!({"url": url, "events": ["*"]}));
        let ok = answer.status == 400 && answer.json()["error"]["field"] == "url";
        if !ok {
            failures.push(format!(
                "create {url}: want 400 on url; got {} {}",
                answer.status,
                answer.text()
            ));
        }
    }
    let mut created = Vec::new();
    for url in accepted {
        let answer = tenant.post("/v1/webhooks", &json!({"url": url, "events": ["*"]}));
        if answer.status == 201 {
            created.push(answer.json()["id"].as_str().unwrap_or_default().to_string());
        } else {
            failures.push(format!(
                "create {url}: want 201; got {} {}",
                answer.status,
                answer.text()
            ));
        }
    }
    // A PATCH to a refused address is refused as well, and changes nothing.
    if let Some(id) = created.first() {
        for (url, class) in refused.iter().step_by(4) {
            let answer = tenant.patch(&format!("/v1/webhooks/{id}"), &json!({"url": url}));
            let ok = answer.status == 400
                && answer.json()["error"]["field"] == "url"
                && answer.error_message().contains(class);
            if !ok {
                failures.push(format!(
                    "PATCH to {url}: want 400 naming {class:?}; got {} {}",
                    answer.status,
                    answer.text()
                ));
            }
        }
        let kept = tenant.get(&format!("/v1/webhooks/{id}")).expect(200);
        if kept["url"] != accepted[0] {
            failures.push(format!("a refused PATCH changed the webhook: {kept}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        refused.len() + odd.len() + accepted.len(),
        failures.join("\n")
    );
    println!(
        "egress: {} refused-range URLs and {} odd loopback spellings refused with 400, {} allowlisted or public URLs accepted, {} PATCHes refused",
        refused.len(),
        odd.len(),
        accepted.len(),
        refused.len().div_ceil(4)
    );
}

/// A receiver answering a redirect (301, 302, 307, 308) with `Location:` pointing at
/// another receiver: the delivery fails at once (one attempt, the 3xx recorded), and
/// the other receiver never gets a request.
#[test]
fn redirects_are_final_failures_and_never_followed() {
    let site = Site::new();
    let server = Server::start(&site, &Options::default().config(crate::FAST_RETRIES));
    let tenant = create_tenant(&server.admin(), "tenant_redirects");
    let target = Sink::start_default().expect("the sink starts");

    let statuses = [301u16, 302, 307, 308];
    let cases: Vec<(u16, Hostile, String)> = statuses
        .iter()
        .map(|&status| {
            let redirecting = Hostile::start(Behaviour::Redirect {
                status,
                location: target.url(&format!("/moved-{status}")),
            })
            .expect("a redirecting server starts");
            let webhook = create_webhook(
                &tenant,
                &json!({"url": redirecting.url("/hook"), "events": ["order.*"]}),
            );
            let id = webhook["id"].as_str().expect("id").to_string();
            (status, redirecting, id)
        })
        .collect();
    let event = publish(&tenant, &json!({"type": "order.created", "data": {"n": 1}}));
    let event_id = event["id"].as_str().expect("event id");

    for (status, redirecting, webhook_id) in &cases {
        let logged = wait_delivery(&tenant, webhook_id, event_id, "failed");
        assert_eq!(logged["attempts"], 1, "{status}: not retried: {logged}");
        let detail = tenant
            .get(&format!(
                "/v1/deliveries/{}",
                logged["id"].as_str().expect("id")
            ))
            .expect(200);
        let history = detail["attempt_history"].as_array().expect("history");
        assert_eq!(history.len(), 1, "{status}: {detail}");
        assert_eq!(history[0]["response_code"], *status, "{status}: {detail}");
        assert_eq!(
            history[0]["error"],
            format!("status_{status}"),
            "{status}: {detail}"
        );
        assert_eq!(redirecting.requests(), 1, "{status}: one request, no retry");
    }
    let followed = target.requests();
    assert!(
        followed.is_empty(),
        "a redirect was followed: the Location target got {:?}",
        followed
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );
}

/// Lines this test adds to `/etc/hosts`, marked so that they (and only they) are
/// removed again, also when the test fails.
struct HostsFile {
    mark: String,
}

impl HostsFile {
    const PATH: &'static str = "/etc/hosts";

    /// `None` (with the reason) when `/etc/hosts` cannot be written here (not root).
    fn open() -> Result<HostsFile, String> {
        let hosts = HostsFile {
            mark: format!("# herald-e2e rebinding test {}", std::process::id()),
        };
        hosts.set(&[]).map_err(|e| format!("{}: {e}", Self::PATH))?;
        Ok(hosts)
    }

    /// Replaces this test's entries with `entries` (address, name). Written in place:
    /// in containers `/etc/hosts` is often a mount point that cannot be renamed over.
    fn set(&self, entries: &[(&str, &str)]) -> std::io::Result<()> {
        let text = std::fs::read_to_string(Self::PATH)?;
        let mut kept: String = text
            .lines()
            .filter(|line| !line.ends_with(&self.mark))
            .map(|line| format!("{line}\n"))
            .collect();
        for (address, name) in entries {
            kept.push_str(&format!("{address} {name} {}\n", self.mark));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(Self::PATH)
            .and_then(|mut file| std::io::Write::write_all(&mut file, kept.as_bytes()))
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        if let Err(error) = self.set(&[]) {
            eprintln!(
                "egress: could not remove this test's lines ({}) from {}: {error}",
                self.mark,
                Self::PATH
            );
        }
    }
}

/// DNS rebinding: a name that resolved to an allowlisted address when its webhook was
/// created, and resolves to loopback when the delivery is made, is refused at delivery
/// (a final `egress_denied` attempt) and the loopback receiver gets nothing. A second
/// name that keeps its allowlisted answer is delivered to (the control).
///
/// The server is restarted between the change and the publish: the engine caches
/// answers (30 s), and a delivery made within that time connects to the address checked
/// at create, which is safe; the restart makes the delivery resolve afresh.
///
/// Names change their answer through `/etc/hosts`, which needs root (CI runs as root);
/// without it the test says so on stderr and checks nothing.
#[test]
fn a_name_rebound_to_a_refused_address_is_refused_at_delivery() {
    let hosts = match HostsFile::open() {
        Ok(hosts) => hosts,
        Err(error) => {
            eprintln!("egress: cannot edit /etc/hosts here (not root?): {error}; skipped");
            return;
        }
    };
    let pid = std::process::id();
    let rebound = format!("rebound-{pid}.herald-e2e.test");
    let steady = format!("steady-{pid}.herald-e2e.test");
    // The loopback receiver a rebound delivery would reach, and the control receiver on
    // the allowlisted 127.0.0.2.
    let loopback = Sink::start_default().expect("the sink starts");
    let control = Sink::builder()
        .listen("127.0.0.2:0".parse().expect("an address"))
        .start()
        .expect("the sink starts on 127.0.0.2");
    let rebound_url = format!("http://{rebound}:{}/hook", loopback.addr().port());
    let steady_url = format!("http://{steady}:{}/hook", control.addr().port());

    let config = "[egress]\nallow_cidrs = [\"127.0.0.2/32\"]\n";
    let options = Options::default().no_loopback().config(config);
    let site = Site::new();
    let server = Server::start(&site, &options);
    let tenant = create_tenant(&server.admin(), "tenant_rebinding");
    hosts
        .set(&[("127.0.0.2", &rebound), ("127.0.0.2", &steady)])
        .expect("/etc/hosts written");
    let rebound_hook = create_webhook(&tenant, &json!({"url": rebound_url, "events": ["order.*"]}));
    let steady_hook = create_webhook(&tenant, &json!({"url": steady_url, "events": ["order.*"]}));
    assert_eq!(server.terminate().code(), Some(0));

    // The name now points at loopback, which this server refuses.
    hosts
        .set(&[("127.0.0.1", &rebound), ("127.0.0.2", &steady)])
        .expect("/etc/hosts written");
    let server = Server::start(&site, &options);
    let tenant = server.admin().acting_for("tenant_rebinding");
    // What create says of the name now: refused, naming loopback.
    let answer = tenant.post(
        "/v1/webhooks",
        &json!({"url": rebound_url, "events": ["order.*"]}),
    );
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.error_message().contains("loopback"),
        "{}",
        answer.text()
    );

    let event = publish(&tenant, &json!({"type": "order.created", "data": {"n": 1}}));
    let event_id = event["id"].as_str().expect("event id");
    let steady_id = steady_hook["id"].as_str().expect("id");
    wait_delivery(&tenant, steady_id, event_id, "success");
    assert_eq!(
        control.requests_to("/hook").len(),
        1,
        "the control delivery"
    );

    let rebound_id = rebound_hook["id"].as_str().expect("id");
    let logged = wait_delivery(&tenant, rebound_id, event_id, "failed");
    assert_eq!(
        logged["attempts"], 1,
        "an egress refusal is final: {logged}"
    );
    let detail = tenant
        .get(&format!(
            "/v1/deliveries/{}",
            logged["id"].as_str().expect("id")
        ))
        .expect(200);
    let attempt = &detail["attempt_history"][0];
    assert_eq!(attempt["error"], "egress_denied", "{detail}");
    assert_eq!(
        attempt["response_code"],
        Value::Null,
        "nothing was sent: {detail}"
    );
    assert!(
        loopback.requests().is_empty(),
        "the loopback receiver got the rebound delivery"
    );
    drop(hosts);
}
