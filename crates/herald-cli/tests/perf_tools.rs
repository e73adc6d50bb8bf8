//! The performance scripts of `tools/` driving the real binary's `herald bench`:
//! `tools/perf-goals` through every goal's measurement (at its quick sizes, which judge
//! nothing), each goal's figure the median of its reports judged against the goal's
//! target and the open loop at half the closed loops' median rate; `tools/perf-pairs`
//! alternating two builds, each pair's ratios and their medians taken from the reports;
//! `tools/pgo-build`'s training workloads, each run with the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Runs a script of `tools/` with python3 (the CI script installs it).
fn script(name: &str, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools")
        .join(name);
    Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running python3 tools/{name} (is python3 installed?): {e}"))
}

fn perf_goals(args: &[&str]) -> Output {
    script("perf-goals", args)
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    assert!(n > 0);
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn figure(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("the report holds {key}: {report}"))
}

fn goal<'a>(goals: &'a [Value], name: &str) -> &'a Value {
    goals
        .iter()
        .find(|g| g["goal"] == name)
        .unwrap_or_else(|| panic!("goals.json has a row for {name}: {goals:?}"))
}

/// The row's value is `expected` and its verdict follows the target.
/// `n` with thousands separated by commas, as Python's `{:,.0f}` prints it.
fn fmt_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn assert_goal(goals: &[Value], name: &str, expected: f64, target: f64, higher_is_better: bool) {
    let row = goal(goals, name);
    let value = row["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} was measured: {row}"));
    assert!(
        (value - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{name}: {value} against the reports' {expected}"
    );
    let met = if higher_is_better {
        value >= target
    } else {
        value <= target
    };
    assert_eq!(row["met"], Value::Bool(met), "{name}: {row}");
    let status = row["status"].as_str().unwrap();
    assert_eq!(status == "met", met, "{name}: {row}");
}

#[test]
fn perf_goals_measures_every_goal_with_the_binary_and_reads_its_reports_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("goals");
    let bin = env!("CARGO_BIN_EXE_herald");
    let run = perf_goals(&[
        "--quick",
        "--repeat",
        "2",
        "--herald",
        bin,
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "tools/perf-goals failed: {stderr}");
    assert!(
        stderr.contains(&format!("[12/12] {bin} bench pending")),
        "progress: {stderr}"
    );
    let table = String::from_utf8(run.stdout).unwrap();

    let plain: Vec<Value> = (1..=2)
        .map(|i| read_json(out.join(format!("plain-{i}.json"))))
        .collect();
    let tls: Vec<Value> = (1..=2)
        .map(|i| read_json(out.join(format!("tls-{i}.json"))))
        .collect();
    let fanout = read_json(out.join("fanout.json"));
    let open = read_json(out.join("open.json"));
    let one_shard: Vec<Value> = (1..=2)
        .map(|i| read_json(out.join(format!("one-shard-{i}.json"))))
        .collect();
    let pending = read_json(out.join("pending.json"));
    for name in [
        "plain-1", "plain-2", "tls-1", "tls-2", "fanout", "open", "pending",
    ] {
        assert!(out.join(format!("{name}.log")).is_file(), "{name}.log kept");
    }
    // The runs are the ones the goals name.
    for r in &plain {
        assert_eq!(r["load_model"], "closed");
        assert_eq!(r["tls"], false);
        assert_eq!(r["payload_bytes"], 1024);
        assert_eq!(r["tenants"], 16);
        assert!(r["raw_per_s"].as_f64().unwrap() > 0.0, "--compare-raw: {r}");
    }
    for r in &tls {
        assert_eq!(r["tls"], true);
        assert!(r["ratio_to_raw"].as_f64().is_some(), "--compare-raw: {r}");
    }
    assert_eq!(fanout["fanout"], 10);
    assert_eq!(fanout["tenants"], 1);
    // Half the closed loops' median rate, rounded down to 100 events/s.
    let half = median(
        plain
            .iter()
            .map(|r| figure(r, "deliveries_per_s"))
            .collect(),
    ) / 2.0;
    let rate = ((half as u64) / 100 * 100).max(100);
    assert_eq!(open["load_model"], "open");
    assert_eq!(
        open["rate_offered"].as_f64(),
        Some(rate as f64),
        "half the plain runs' median rate, rounded down to 100/s"
    );
    assert!(figure(&pending, "pending") > 0.0);

    let summary = read_json(out.join("goals.json"));
    assert_eq!(summary["quick"], true);
    let goals = summary["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 13, "{summary}");
    let of =
        |reports: &[Value], key: &str| median(reports.iter().map(|r| figure(r, key)).collect());
    let disk = |r: &Value| {
        figure(r, "disk_write_bytes_per_delivery") / figure(r, "journal_bytes_per_delivery")
    };
    assert_goal(
        goals,
        "deliveries/s, plain text",
        of(&plain, "deliveries_per_s"),
        100_000.0,
        true,
    );
    assert_goal(
        goals,
        "deliveries/s, TLS",
        of(&tls, "deliveries_per_s"),
        80_000.0,
        true,
    );
    assert_goal(
        goals,
        "ratio to `herald bench raw`, plain text",
        of(&plain, "ratio_to_raw"),
        0.70,
        true,
    );
    assert_goal(
        goals,
        "ratio to `herald bench raw`, TLS",
        of(&tls, "ratio_to_raw"),
        0.70,
        true,
    );
    assert_goal(
        goals,
        "CPU µs per delivery, whole box",
        of(&plain, "cpu_us_per_delivery"),
        15.0,
        false,
    );
    assert_goal(
        goals,
        "p99 publish → receive at half the maximum, open loop",
        figure(&open, "p99_us") / 1000.0,
        10.0,
        false,
    );
    // The open loop's rate and its slowest journal sync, beside the table.
    let slowest = match open["journal_sync_max_us"].as_f64() {
        Some(us) => format!("≤ {} ms", us / 1000.0),
        None => "over 1 s".to_owned(),
    };
    // Then where its tail came from: the first and the worst interval of its timeline.
    let intervals: Vec<&Value> = open["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .filter(|s| s["p99_interval_us"].as_u64().is_some_and(|us| us > 0))
        .collect();
    let first = intervals.first().expect("an interval with deliveries");
    let worst = intervals
        .iter()
        .rev()
        .max_by_key(|s| s["p99_interval_us"].as_u64())
        .expect("an interval with deliveries");
    let ms = |s: &Value| s["p99_interval_us"].as_u64().unwrap() as f64 / 1000.0;
    let during = if worst["checkpoints_underway"].as_u64().unwrap_or(0) > 0 {
        " during a checkpoint"
    } else {
        ""
    };
    assert!(
        table.contains(&format!(
            "open loop at {} events/s (its slowest journal sync {slowest}, {} over 10 ms; \
             p99 per timeline interval: the first {:.1} ms, the worst {:.1} ms at {:.2} s{during})",
            fmt_thousands(rate),
            open["journal_syncs_over_10ms"],
            ms(first),
            ms(worst),
            worst["t_s"].as_f64().unwrap(),
        )),
        "{table}"
    );
    // Known only where the journals were on a block device (not `tmpfs`).
    if plain.iter().all(|r| !r["device"].is_null()) {
        assert_goal(
            goals,
            "disk writes per delivery, many tenants",
            median(plain.iter().map(disk).collect()),
            2.0,
            false,
        );
    }
    if !fanout["device"].is_null() {
        assert_goal(
            goals,
            "disk writes per delivery, fan-out 10",
            disk(&fanout),
            2.0,
            false,
        );
    }
    assert_goal(
        goals,
        "`RssAnon` per pending delivery",
        figure(&pending, "bytes_per_pending"),
        256.0,
        false,
    );
    assert_goal(
        goals,
        "ready after a restart with the backlog",
        figure(&pending, "restart_ready_ms"),
        2000.0,
        false,
    );
    assert!(
        table.starts_with("Quick sizes: these figures check the tool"),
        "{table}"
    );
    // Scaling is reported, not judged: the plain runs' shards (one per core) against
    // one shard.
    for r in &one_shard {
        assert_eq!(r["shards"], 1, "{r}");
        assert_eq!(r["tenants"], 16);
    }
    let shards = plain[0]["shards"].as_u64().unwrap();
    let scaling = goal(
        goals,
        &format!("deliveries/s, 1 shard against {shards} shards (scaling)"),
    );
    let expected = of(&plain, "deliveries_per_s") / of(&one_shard, "deliveries_per_s");
    let value = scaling["value"].as_f64().unwrap();
    assert!((value - expected).abs() <= 1e-9 * expected, "{scaling}");
    assert_eq!(scaling["met"], Value::Null, "{scaling}");
    assert_eq!(scaling["status"], "reported");
    // The ratio with events handed over in batches is reported beside the goal's.
    let batched: Vec<Value> = (1..=2)
        .map(|i| read_json(out.join(format!("batched-{i}.json"))))
        .collect();
    for r in &batched {
        assert_eq!(r["batch"], 64, "{r}");
        assert_eq!(r["tenants"], 16);
        assert!(
            figure(r, "publish_calls") < figure(r, "accepted"),
            "handed over in batches: {r}"
        );
    }
    let row = goal(
        goals,
        "ratio to `herald bench raw`, plain text, events handed over in batches of 64",
    );
    let expected = of(&batched, "ratio_to_raw");
    let value = row["value"].as_f64().unwrap();
    assert!((value - expected).abs() <= 1e-9 * expected, "{row}");
    assert_eq!(row["met"], Value::Null, "{row}");
    assert_eq!(row["status"], "reported");
    assert!(
        row["measured"].as_str().unwrap().ends_with(&format!(
            "against {:.3} one event at a time",
            of(&plain, "ratio_to_raw")
        )),
        "{row}"
    );
    // So is the long closed loop's CPU per delivery, with what its checkpoints took
    // and how many deliveries its log evicted.
    let long = read_json(out.join("long.json"));
    assert_eq!(long["load_model"], "closed");
    assert_eq!(long["tenants"], 16);
    assert!(long["raw_per_s"].is_null(), "no raw ceiling: {long}");
    let row = goal(
        goals,
        &format!(
            "CPU µs per delivery, whole box, closed loop of {} events",
            fmt_thousands(figure(&long, "accepted") as u64)
        ),
    );
    assert_eq!(
        row["value"].as_f64(),
        long["cpu_us_per_delivery"].as_f64(),
        "{row}"
    );
    assert_eq!(row["met"], Value::Null, "{row}");
    assert_eq!(row["status"], "reported");
    let measured = row["measured"].as_str().unwrap();
    assert!(
        measured.contains(&format!("{} checkpoints", long["checkpoints"]))
            && measured.contains(&format!(
                "{} deliveries evicted",
                fmt_thousands(figure(&long, "deliveries_evicted") as u64)
            ))
            && measured.ends_with(&format!(
                "against {:.1} µs in the goal's runs",
                of(&plain, "cpu_us_per_delivery")
            )),
        "{row}"
    );
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| ")).count(),
        14,
        "{table}"
    );

    // The reports alone give the same table.
    let again = perf_goals(&["--from", out.to_str().unwrap()]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), table);

    // Reports of runs that handed events over one at a time (a binary from before
    // embedded runs took --batch) are not read as batched.
    let older = dir.path().join("older");
    std::fs::create_dir(&older).unwrap();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let mut report = read_json(path.clone());
        if name.starts_with("batched-") {
            report["batch"] = Value::from(1);
            report["publish_calls"] = report["accepted"].clone();
        }
        std::fs::write(older.join(&name), report.to_string()).unwrap();
    }
    let relabelled = perf_goals(&["--from", older.to_str().unwrap()]);
    assert!(relabelled.status.success());
    let summary = read_json(older.join("goals.json"));
    let row = goal(
        summary["goals"].as_array().unwrap(),
        "ratio to `herald bench raw`, plain text, events handed over in batches of 64",
    );
    assert_eq!(row["value"], Value::Null, "{row}");
    assert_eq!(
        row["status"],
        "not measured (the binary did not hand events over in batches of 64)"
    );

    // A directory that holds reports is not written over.
    let refused = perf_goals(&["--herald", bin, "--out", out.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already holds reports"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// A script stopped with status 1 at the run `report` of a `herald` that failed, and
/// said where that run's output is.
fn assert_failed_naming_log(run: &Output, report: &str, log: &Path) {
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!(
            "{report}: herald exited with status 1; its output is in {}",
            log.display()
        )),
        "{stderr}"
    );
}

#[test]
fn perf_goals_names_the_log_of_a_measurement_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("goals");
    // `false` exits with status 1 whatever it is asked.
    let run = perf_goals(&[
        "--quick",
        "--herald",
        "/bin/false",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = out.join("plain-1.log");
    assert_failed_naming_log(&run, "plain-1.json", &log);
    assert!(log.is_file());
    assert!(
        !out.join("goals.json").exists(),
        "no table from a failed run"
    );
}

/// B's figure over A's, as the table gives it; a key `x/y` is the quotient of two.
fn ratio_of(a: &Value, b: &Value, key: &str) -> f64 {
    if let Some((num, den)) = key.split_once('/') {
        return (figure(b, num) / figure(b, den)) / (figure(a, num) / figure(a, den));
    }
    let scale = if key.ends_with("_us") { 1000.0 } else { 1.0 };
    (figure(b, key) / scale) / (figure(a, key) / scale)
}

#[test]
fn perf_pairs_alternates_the_builds_and_takes_each_pairs_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pairs");
    let a = env!("CARGO_BIN_EXE_herald");
    // The same build under a second name: the tool runs whichever binary it is given.
    let b_path = dir.path().join("herald-b");
    std::os::unix::fs::symlink(a, &b_path).unwrap();
    let b = b_path.to_str().unwrap();
    let bench = [
        "bench",
        "run",
        // Enough that the receiver's CPU time reads above zero (it is counted in clock
        // ticks), so that the engine/receiver quotient is defined in every run.
        "--events",
        "5000",
        "--tenants",
        "2",
        "--payload-bytes",
        "64",
    ];
    let mut args = vec!["--pairs", "3", "--out", out.to_str().unwrap(), a, b, "--"];
    args.extend(bench);
    let run = script("perf-pairs", &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "tools/perf-pairs failed: {stderr}");
    // A B, then B A, then A B: the order alternates from pair to pair.
    let order: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(order, [a, b, b, a, a, b], "{stderr}");
    let table = String::from_utf8(run.stdout).unwrap();
    assert!(table.starts_with(&format!("A = {a}\nB = {b}\n")), "{table}");

    let summary = read_json(out.join("pairs.json"));
    let pairs = summary["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3);
    let keys = [
        ("deliveries/s", "deliveries_per_s"),
        ("engine µs/delivery", "engine_cpu_us_per_delivery"),
        ("box µs/delivery", "cpu_us_per_delivery"),
        (
            "engine/receiver CPU",
            "engine_cpu_us_per_delivery/sink_cpu_us_per_delivery",
        ),
        ("p50 ms", "p50_us"),
        ("p99 ms", "p99_us"),
    ];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); keys.len()];
    for (i, pair) in pairs.iter().enumerate() {
        let n = i + 1;
        let ra = read_json(out.join(format!("a-{n}.json")));
        let rb = read_json(out.join(format!("b-{n}.json")));
        for r in [&ra, &rb] {
            assert_eq!(r["delivered"], 5000, "the bench command ran as given: {r}");
            assert_eq!(r["tenants"], 2);
        }
        for (k, (heading, key)) in keys.iter().enumerate() {
            let expected = ratio_of(&ra, &rb, key);
            let got = pair["figures"][heading]["ratio"].as_f64().unwrap();
            assert!(
                (got - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                "pair {n}, {heading}: {got} against {expected}"
            );
            ratios[k].push(expected);
        }
    }
    // No --compare-raw: no ratio to raw to compare, and no column for it.
    assert!(summary["summary"].get("ratio to raw").is_none());
    for (k, (heading, _key)) in keys.iter().enumerate() {
        let s = &summary["summary"][heading];
        let m = median(ratios[k].clone());
        let got = s["ratio_median"].as_f64().unwrap();
        assert!((got - m).abs() <= 1e-9 * m.abs().max(1.0), "{heading}: {s}");
        let more_is_better = *heading == "deliveries/s";
        let ahead = ratios[k]
            .iter()
            .filter(|&&q| if more_is_better { q > 1.0 } else { q < 1.0 })
            .count();
        assert_eq!(s["b_ahead"].as_u64(), Some(ahead as u64), "{heading}: {s}");
    }
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| ")).count(),
        5,
        "{table}"
    );
    assert!(
        table.contains("engine/receiver CPU: A → B (B/A)"),
        "{table}"
    );
}

/// `--a-args` and `--b-args`: two settings of one build, each run with its own.
#[test]
fn perf_pairs_compares_two_settings_of_one_build() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("settings");
    let bin = env!("CARGO_BIN_EXE_herald");
    let run = script(
        "perf-pairs",
        &[
            "--pairs",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--a-args",
            "--batch 1",
            "--b-args",
            "--batch 10",
            bin,
            bin,
            "--",
            "bench",
            "run",
            "--events",
            "200",
            "--tenants",
            "2",
            "--payload-bytes",
            "64",
        ],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "tools/perf-pairs failed: {stderr}");
    for n in 1..=2 {
        let a = read_json(out.join(format!("a-{n}.json")));
        let b = read_json(out.join(format!("b-{n}.json")));
        assert_eq!((&a["batch"], &a["publish_calls"]), (&1.into(), &200.into()));
        assert_eq!((&b["batch"], &b["publish_calls"]), (&10.into(), &20.into()));
        for r in [&a, &b] {
            assert_eq!(r["delivered"], 200, "the bench command ran too: {r}");
        }
    }
    let table = String::from_utf8(run.stdout).unwrap();
    assert!(
        table.starts_with(&format!("A = {bin} (--batch 1)\nB = {bin} (--batch 10)\n")),
        "{table}"
    );
    let summary = read_json(out.join("pairs.json"));
    assert_eq!(summary["a_args"], serde_json::json!(["--batch", "1"]));
    assert_eq!(summary["b_args"], serde_json::json!(["--batch", "10"]));
}

#[test]
fn perf_pairs_refuses_what_it_cannot_compare() {
    let bin = env!("CARGO_BIN_EXE_herald");
    for (args, says) in [
        (vec![bin, bin, "bench", "run"], "follows `--`"),
        (vec![bin, "--", "bench", "run"], "give two herald binaries"),
        (vec![bin, bin, "--", "bench", "raw"], "`bench run …`"),
        (
            vec![bin, bin, "--", "bench", "run", "--json", "x"],
            "--json is set by the tool",
        ),
        (
            vec!["/nonexistent/herald", bin, "--", "bench", "run"],
            "not an executable",
        ),
        (
            vec!["--pairs", "0", bin, bin, "--", "bench", "run"],
            "--pairs takes a count",
        ),
        (
            vec!["--b-args", "--json x", bin, bin, "--", "bench", "run"],
            "leave it out of --b-args",
        ),
        (
            vec!["--a-args", "--batch '1", bin, bin, "--", "bench", "run"],
            "--a-args: No closing quotation",
        ),
    ] {
        let run = script("perf-pairs", &args);
        assert_eq!(run.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// `tools/pgo-build --train-with`: every training workload of the profile-guided build
/// runs with the binary, each a real run whose report shows the path it is there to
/// train (retries sent, TLS, each scheme, the served API and its stream), and the server
/// it drives is stopped cleanly.
#[test]
fn pgo_build_training_runs_every_workload_with_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("training");
    let run = script(
        "pgo-build",
        &[
            "--train-with",
            env!("CARGO_BIN_EXE_herald"),
            "--quick",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let runs = [
        "plain",
        "tls",
        "open-loop",
        "fanout",
        "retries",
        "stripe",
        "olo",
        "ed25519",
        "pending",
        "serve-batches",
        "serve-single",
        "stream",
    ];
    assert!(
        stdout.contains(&format!(
            "{} training runs passed ({})",
            runs.len(),
            runs.join(", ")
        )),
        "{stdout}"
    );
    let report = |name: &str| read_json(out.join(format!("{name}.json")));
    for name in runs.iter().filter(|n| !["pending", "stream"].contains(*n)) {
        let r = report(name);
        let expected = figure(&r, "deliveries_expected");
        assert!(expected > 0.0, "{name}: {r}");
        assert_eq!(
            figure(&r, "delivered"),
            expected,
            "{name}: every delivery arrived"
        );
        let remote = name.starts_with("serve-");
        assert_eq!(
            r["mode"],
            if remote { "remote" } else { "embedded" },
            "{name}"
        );
    }
    assert!(
        figure(&report("retries")["retries"], "retries_sent") > 0.0,
        "failing answers were retried"
    );
    assert_eq!(report("tls")["tls"], true);
    for scheme in ["stripe", "olo", "ed25519"] {
        assert_eq!(report(scheme)["scheme"], scheme);
    }
    assert_eq!(report("fanout")["fanout"], 10);
    assert_eq!(report("open-loop")["load_model"], "open");
    let pending = report("pending");
    assert!(figure(&pending, "pending") > 0.0, "{pending}");
    assert_eq!(
        figure(&pending, "pending_after_restart"),
        figure(&pending, "pending"),
        "the backlog was replayed"
    );
    for name in ["serve-batches", "serve-single"] {
        assert_eq!(report(name)["figures_source"], "metrics", "{name}");
    }
    // The served stream: every event to the unfiltered subscriber, a quarter to the
    // filtered one, the last ten to the one resumed from the window; the console served.
    let stream = report("stream");
    let published = figure(&stream, "published");
    assert!(published > 0.0, "{stream}");
    let subscribers = stream["subscribers"].as_array().unwrap();
    let queries: Vec<&str> = subscribers
        .iter()
        .map(|s| s["query"].as_str().unwrap())
        .collect();
    assert_eq!(
        queries[..2],
        ["all", "events=order.*&location_id=loc_1"],
        "{stream}"
    );
    assert!(queries[2].starts_with("after="), "{stream}");
    let expected: Vec<f64> = subscribers.iter().map(|s| figure(s, "expected")).collect();
    assert_eq!(
        expected,
        [published, (published / 4.0).ceil(), 10.0],
        "{stream}"
    );
    for s in subscribers {
        assert_eq!(figure(s, "received"), figure(s, "expected"), "{stream}");
    }
    for path in ["/console", "/console/console.js", "/console/console.css"] {
        assert_eq!(stream["console"][path], 200, "{stream}");
    }
    let serve_log = std::fs::read_to_string(out.join("serve.log")).unwrap();
    assert!(serve_log.contains("stopped cleanly"), "{serve_log}");
}

#[test]
fn pgo_build_names_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let missing = script(
        "pgo-build",
        &["--train-with", "/nonexistent/herald", "--quick"],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("--train-with /nonexistent/herald: not an executable file"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let out = dir.path().join("training");
    // `false` exits with status 1 whatever it is asked.
    let failing = script(
        "pgo-build",
        &[
            "--train-with",
            "/bin/false",
            "--quick",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_failed_naming_log(&failing, "plain.json", &out.join("plain.log"));
}
