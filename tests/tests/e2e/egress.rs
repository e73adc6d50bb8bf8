//! The egress guard at the API, on a server started without `--allow-loopback`: every
//! refused range (loopback, RFC 1918, link-local and the metadata address, unique-local,
//! unspecified, and the IPv4-mapped, NAT64 and 6to4 forms of refused IPv4 addresses) is
//! a 400 on `url` at create and at PATCH, naming the address class; odd spellings of
//! loopback and names that resolve to it (`localhost`) too; allowlisted CIDRs
//! (`[egress] allow_cidrs`) and public neighbours of the refused ranges are accepted.

use herald_e2e::*;
use serde_json::json;

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
