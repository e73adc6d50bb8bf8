//! Configuration: refused files and flags exit with status 2 naming the key; the egress
//! settings (`require_https`, loopback not allowed) refuse webhook URLs with a 400; the
//! admin key generated on a first start is printed once and keeps working.

use std::time::Duration;

use herald_e2e::*;
use herald_sink::Sink;
use serde_json::json;

/// A refused configuration must make the process exit well within this.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    // (config file, extra flags, HERALD_ADMIN_KEY, what stderr must name)
    let cases: &[(&str, &[&str], Option<&str>, &str)] = &[
        ("lisen = \"127.0.0.1:0\"\n", &[], Some(ADMIN_KEY), "lisen"),
        ("[limits]\nbody_max = 5\n", &[], Some(ADMIN_KEY), "body_max"),
        ("[egress]\nallow = []\n", &[], Some(ADMIN_KEY), "allow"),
        ("[nonsense]\nx = 1\n", &[], Some(ADMIN_KEY), "nonsense"),
        ("shards = \"two\"\n", &[], Some(ADMIN_KEY), "shards"),
        ("log_format = \"xml\"\n", &[], Some(ADMIN_KEY), "log_format"),
        (
            "[signing]\ndefault_scheme = \"md5\"\n",
            &[],
            Some(ADMIN_KEY),
            "default_scheme",
        ),
        (
            "[retry]\nschedule_s = [-1]\n",
            &[],
            Some(ADMIN_KEY),
            "schedule_s",
        ),
        (
            "[retry]\nschedule_s = \"fast\"\n",
            &[],
            Some(ADMIN_KEY),
            "schedule_s",
        ),
        (
            "[limits]\nconnections_max = 0\n",
            &[],
            Some(ADMIN_KEY),
            "connections_max",
        ),
        (
            "[limits]\nbody_bytes_max = -1\n",
            &[],
            Some(ADMIN_KEY),
            "body_bytes_max",
        ),
        (
            "[limits]\nheader_read_timeout_ms = 0\n",
            &[],
            Some(ADMIN_KEY),
            "header_read_timeout_ms",
        ),
        ("admin_key = \"short\"\n", &[], None, "admin_key"),
        ("[tls]\ncert = \"a.pem\"\n", &[], Some(ADMIN_KEY), "key"),
        (
            "[egress]\nextra_ca_pems = [\"/nonexistent/ca.pem\"]\n",
            &[],
            Some(ADMIN_KEY),
            "extra_ca_pem",
        ),
        (
            "[journal]\nsegment_bytes = 1000\n",
            &[],
            Some(ADMIN_KEY),
            "journal.segment_bytes",
        ),
        (
            "[ws]\njwt_secret = \"short\"\n",
            &[],
            Some(ADMIN_KEY),
            "ws.jwt_secret",
        ),
        (
            "[ws]\njwt_public_key_pem = \"/nonexistent/jwt.pem\"\n",
            &[],
            Some(ADMIN_KEY),
            "ws.jwt_public_key_pem",
        ),
        (
            "[ws]\nreplay_events_max = 0\n",
            &[],
            Some(ADMIN_KEY),
            "ws.replay_events_max",
        ),
        (
            "[ws]\nping_interval_ms = 30000\nidle_timeout_ms = 10000\n",
            &[],
            Some(ADMIN_KEY),
            "ws.idle_timeout_ms",
        ),
        ("[ws]\nqueue = 5\n", &[], Some(ADMIN_KEY), "queue"),
        ("", &["--shards", "two"], Some(ADMIN_KEY), "shards"),
        ("", &["--log-format", "xml"], Some(ADMIN_KEY), "log-format"),
        ("", &["--no-such-flag"], Some(ADMIN_KEY), "no-such-flag"),
        ("", &[], Some("short"), "HERALD_ADMIN_KEY"),
    ];
    let mut failures = Vec::new();
    for (config, flags, admin_key, names) in cases {
        let site = Site::new();
        let mut options = Options::default().admin_key(*admin_key);
        if !config.is_empty() {
            options = options.config(config);
        }
        for flag in *flags {
            options = options.arg(flag);
        }
        let exited = run_to_exit(&site, &options, EXIT_TIMEOUT);
        let status = exited.status.code();
        if status != Some(2) || !exited.stderr.contains(names) {
            failures.push(format!(
                "config {config:?} flags {flags:?}: expected exit 2 naming {names:?}; got {status:?}, stderr: {}",
                exited.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn egress_settings_refuse_webhook_urls() {
    let sink = Sink::start_default().expect("the sink starts");

    // Loopback not allowed (no --allow-loopback): a receiver on 127.0.0.1 is refused.
    let site = Site::new();
    let server = Server::start(&site, &Options::default().no_loopback());
    let tenant = create_tenant(&server.admin(), "tenant_guarded");
    let refused = tenant.post(
        "/v1/webhooks",
        &json!({"url": sink.url("/x"), "events": ["*"]}),
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(
        refused.json()["error"]["field"],
        "url",
        "{}",
        refused.text()
    );
    assert!(
        refused.error_message().contains("loopback"),
        "{}",
        refused.text()
    );
    let localhost = tenant.post(
        "/v1/webhooks",
        &json!({"url": sink.localhost_url("/x"), "events": ["*"]}),
    );
    assert_eq!(
        localhost.status,
        400,
        "localhost resolves to loopback: {}",
        localhost.text()
    );
    let mapped = tenant.post(
        "/v1/webhooks",
        &json!({"url": format!("http://[::ffff:127.0.0.1]:{}/x", sink.addr().port()), "events": ["*"]}),
    );
    assert_eq!(
        mapped.status,
        400,
        "IPv4-mapped loopback: {}",
        mapped.text()
    );
    drop(server);

    // The same receiver with --allow-loopback is accepted (the control).
    let site = Site::new();
    let server = Server::start(&site, &Options::default());
    let tenant = create_tenant(&server.admin(), "tenant_open");
    create_webhook(&tenant, &json!({"url": sink.url("/x"), "events": ["*"]}));
    drop(server);

    // require_https: plain http is refused even where loopback is allowed.
    let site = Site::new();
    let server = Server::start(
        &site,
        &Options::default().config("[egress]\nrequire_https = true\n"),
    );
    let tenant = create_tenant(&server.admin(), "tenant_https");
    let refused = tenant.post(
        "/v1/webhooks",
        &json!({"url": sink.url("/x"), "events": ["*"]}),
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(
        refused.json()["error"]["field"],
        "url",
        "{}",
        refused.text()
    );
    assert!(
        refused.error_message().contains("https"),
        "{}",
        refused.text()
    );
}

#[test]
fn generated_admin_key_is_shown_once_and_works() {
    let site = Site::new();
    // A first start that fails once the key store is open (here a CA file that cannot
    // be read, found when the engine starts) keeps no key: nobody saw one printed.
    let failed = run_to_exit(
        &site,
        &Options::default()
            .admin_key(None)
            .config("[egress]\nextra_ca_pems = [\"/nonexistent/ca.pem\"]\n"),
        EXIT_TIMEOUT,
    );
    assert_eq!(failed.status.code(), Some(2), "{}", failed.stderr);
    assert!(!failed.stdout.contains("hra_"), "{}", failed.stdout);
    let server = Server::start(&site, &Options::default().admin_key(None));
    let line = server
        .stdout_lines()
        .into_iter()
        .find(|l| l.starts_with("admin key"))
        .unwrap_or_else(|| panic!("no admin key line on stdout: {:?}", server.stdout_lines()));
    let key = line
        .rsplit(' ')
        .next()
        .expect("the key ends the line")
        .to_string();
    assert!(key.starts_with("hra_"), "{line}");
    let admin = server.client().key(&key);
    create_tenant(&admin, "tenant_first");
    assert_eq!(
        server.client().key(ADMIN_KEY).get("/v1/tenants").status,
        401,
        "only the generated key is the admin key"
    );
    let status = server.terminate();
    assert!(status.success(), "{status}");

    let server = Server::start(&site, &Options::default().admin_key(None));
    assert!(
        server.stdout_lines().iter().all(|l| !l.contains("hra_")),
        "the key is shown on the first start only: {:?}",
        server.stdout_lines()
    );
    let tenants = admin.on(&server).get("/v1/tenants").expect(200);
    assert_eq!(tenants["data"][0]["id"], "tenant_first", "{tenants}");
}

#[test]
fn json_logs_and_sigint_stop() {
    let site = Site::new();
    let server = Server::start(&site, &Options::default().arg("--log-format").arg("json"));
    create_tenant(&server.admin(), "tenant_logs");
    let log_path = server.log_path().to_path_buf();
    let status = server.stop_with("INT");
    assert!(status.success(), "SIGINT → exit 0; got {status}");
    let log = std::fs::read_to_string(&log_path).expect("the log is readable");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("--log-format json wrote a line that is not JSON ({e}): {line}")
        });
        assert!(parsed.is_object(), "{line}");
    }
}

/// The ready line names the shards and whether their threads are pinned, as the
/// config's `pinning` asked.
#[test]
fn the_ready_line_says_whether_shards_are_pinned() {
    for (pinning, pinned) in [("never", false), ("always", true)] {
        let site = Site::new();
        let server = Server::start(
            &site,
            &Options::default()
                .config(&format!("shards = 1\npinning = \"{pinning}\"\n"))
                .arg("--log-format")
                .arg("json"),
        );
        let log_path = server.log_path().to_path_buf();
        let status = server.stop_with("TERM");
        assert!(status.success(), "SIGTERM → exit 0; got {status}");
        let log = std::fs::read_to_string(&log_path).expect("the log is readable");
        let ready: serde_json::Value = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "herald serve ready")
            .unwrap_or_else(|| panic!("no ready line: {log}"));
        assert_eq!(ready["shards"], 1, "{ready}");
        assert_eq!(ready["pinned"], pinned, "pinning = {pinning}: {ready}");
        // Whether signing hashes HMAC tags in lanes on this CPU, as the library says.
        assert_eq!(ready["hmac_lanes"], herald_sign::hmac_lanes(), "{ready}");
    }
}

/// The `Max open files` soft and hard limits of a process, from `/proc/PID/limits`
/// (`None`: unlimited).
fn open_files_limits(pid: u32) -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let mut next = || fields.next().and_then(|f| f.parse().ok());
    (next(), next())
}

/// Started under a soft limit of 1,024 open files (systemd's default for services), the
/// server raises it toward the hard limit to what its shard's connections and the API's
/// may need, and grows its descriptor table to that once at start.
#[test]
fn serve_raises_a_low_open_files_limit_and_sizes_its_descriptor_table() {
    let site = Site::new();
    let server = Server::start(&site, &Options::default().soft_open_files(1024));
    let pid = server.pid();
    let (soft, hard) = open_files_limits(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let table: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("an FDSize line");
    let _ = server.stop_with("TERM");
    // One shard: 1,024 connections and 4,096 slots besides, within the hard limit.
    let wanted = hard.unwrap_or(u64::MAX).min(1024 + 4096);
    assert!(
        soft.is_none_or(|soft| soft >= wanted),
        "soft limit {soft:?} after the start, wanted {wanted} (hard {hard:?})"
    );
    assert!(
        table >= wanted.min(4096),
        "descriptor table of {table} slots, wanted {wanted}"
    );
}
