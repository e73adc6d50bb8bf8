//! `tools/perf-goals` drives the real binary's `herald bench` through every goal's
//! measurement (at its quick sizes, which judge nothing) and tables what the reports
//! hold: each goal's figure is the median of its reports, judged against the goal's
//! target, and the open loop runs at half the closed loops' median rate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn perf_goals(args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/perf-goals");
    Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running python3 tools/perf-goals (is python3 installed?): {e}"))
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
    assert!(stderr.contains("[7/7] bench pending"), "progress: {stderr}");
    let table = String::from_utf8(run.stdout).unwrap();

    let plain: Vec<Value> = (1..=2)
        .map(|i| read_json(out.join(format!("plain-{i}.json"))))
        .collect();
    let tls: Vec<Value> = (1..=2)
        .map(|i| read_json(out.join(format!("tls-{i}.json"))))
        .collect();
    let fanout = read_json(out.join("fanout.json"));
    let open = read_json(out.join("open.json"));
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
    assert_eq!(goals.len(), 10, "{summary}");
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
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| ")).count(),
        11,
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

    // A directory that holds reports is not written over.
    let refused = perf_goals(&["--herald", bin, "--out", out.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already holds reports"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
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
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let log = out.join("plain-1.log");
    assert!(
        stderr.contains(&format!(
            "herald exited with status 1; its output is in {}",
            log.display()
        )),
        "{stderr}"
    );
    assert!(log.is_file());
    assert!(
        !out.join("goals.json").exists(),
        "no table from a failed run"
    );
}
