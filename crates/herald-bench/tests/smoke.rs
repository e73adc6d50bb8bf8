//! Smoke runs of each mode with small counts: the report is complete and consistent.
//! Benchmarks report; nothing here asserts a timing. The remote mode drives a real
//! `herald serve` started in process (herald-api's `Server`), over http and https; the
//! `tools/` scripts run on reports these runs write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald_bench::progress::Progress;
use herald_bench::raw::{run_raw, RawPlan};
use herald_bench::run::run;
use herald_bench::sweep::{sweep, SweepPlan};
use herald_bench::{svg, Knobs, Plan, REPORT_KEYS};

fn plan(knobs: Knobs) -> Plan {
    Plan::resolve(&Knobs {
        shards: Some(1),
        drain_timeout: Some(Duration::from_secs(60)),
        ..knobs
    })
    .unwrap()
}

fn json_of(report: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(report).unwrap()
}

fn assert_keys(json: &serde_json::Value) {
    for key in REPORT_KEYS {
        assert!(json.get(key).is_some(), "JSON lacks {key}: {json}");
    }
    for key in [
        "attempts_succeeded",
        "attempts_retryable",
        "attempts_final",
        "retries_sent",
        "retries_pending",
        "deliveries_pending",
        "deliveries_failed",
        "deliveries_exhausted",
    ] {
        assert!(
            json["retries"].get(key).is_some(),
            "JSON lacks retries.{key}: {json}"
        );
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a script of `tools/` with python3 (the CI script installs it) and returns its
/// standard output.
fn tool(name: &str, args: &[&Path]) -> String {
    let output = Command::new("python3")
        .arg(repo().join("tools").join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running python3 tools/{name} (is python3 installed?): {e}"));
    assert!(
        output.status.success(),
        "tools/{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every accepted event has a record, shared by its deliveries; an attempt has at most
/// one of its own (its outcome's, which it shares with the outcomes reported in the same
/// turn) and its start none. So a run without retries writes at least one record per
/// event and fewer than one per event plus one per delivery.
fn assert_journal_records(report: &herald_bench::report::Report) {
    let records = report.journal_records.unwrap();
    assert!(records >= report.accepted, "{report:?}");
    assert!(records < report.accepted + report.delivered, "{report:?}");
}

fn assert_svg_parses(text: &str) {
    let doc = roxmltree::Document::parse(text).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
}

/// `raw_per_s` is the mean of the raw runs before and after the engine's exactly when
/// the one before used the connections the engine opened (`raw_bracketed`), else the
/// one after; the ratio is taken against it.
fn assert_raw_rule(report: &herald_bench::report::Report) {
    let raw = report
        .raw
        .as_ref()
        .expect("--compare-raw measured after the run");
    let before = report
        .raw_before
        .as_ref()
        .expect("a closed loop with a count of events is measured before the run too");
    assert_eq!(
        report.raw_bracketed,
        before.connections == raw.connections,
        "bracketed when the connections agree: {} before, {} after",
        before.connections,
        raw.connections
    );
    let expected = if report.raw_bracketed {
        (before.raw_per_s + raw.raw_per_s) / 2.0
    } else {
        raw.raw_per_s
    };
    assert_eq!(report.raw_per_s, Some(expected.round()));
    assert_eq!(
        report.ratio_to_raw,
        Some((report.deliveries_per_s / expected * 1000.0).round() / 1000.0)
    );
    assert_eq!(
        report.ratio_after_publishing_to_raw,
        report
            .deliveries_after_publishing_per_s
            .map(|after| (after / expected * 1000.0).round() / 1000.0),
        "the rate once the publishing was over, against the same ceiling"
    );
    assert_eq!(
        before.body_bytes, raw.body_bytes,
        "the envelopes' size, foreseen"
    );
}

/// A closed loop whose receiver answers slowly goes on delivering well after its
/// publishing: the rate after it is reported, and so is that rate against the ceiling.
#[test]
fn the_rate_after_the_publishing_is_set_against_the_raw_ceiling() {
    let plan = plan(Knobs {
        events: Some(400),
        tenants: Some(1),
        webhooks_per_tenant: Some(1),
        latency_ms: Some("20".to_owned()),
        compare_raw: Some(true),
        ..Knobs::default()
    });
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert_eq!(report.delivered, 400);
    assert!(
        report.deliveries_after_publishing_per_s.is_some(),
        "400 deliveries of 20 ms over 16 connections outlast their publishing: {:?}",
        report.timeline
    );
    assert!(report.ratio_after_publishing_to_raw.unwrap() > 0.0);
    assert_raw_rule(&report);
    assert!(
        report
            .table()
            .contains("once the publishing was over) (raw:"),
        "{}",
        report.table()
    );
}

/// One endpoint and a backlog from the start: the engine opens its whole in-flight
/// limit, as the raw run before it foresaw, so the ceiling is taken on both sides of
/// the run.
#[test]
fn the_raw_ceiling_brackets_a_closed_loop() {
    let plan = plan(Knobs {
        events: Some(3000),
        tenants: Some(1),
        webhooks_per_tenant: Some(1),
        payload_bytes: Some(300),
        compare_raw: Some(true),
        ..Knobs::default()
    });
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert_eq!(report.delivered, 3000);
    let before = report.raw_before.as_ref().unwrap();
    assert_eq!(
        before.connections, 16,
        "the default in-flight limit of one webhook"
    );
    assert_eq!(before.requests, 3000, "as many requests as deliveries");
    assert_eq!(before.non_success, 0);
    assert_eq!(report.connections, 16);
    assert!(report.raw_bracketed);
    assert_raw_rule(&report);
    let json = json_of(&report);
    assert_eq!(json["raw_bracketed"], true);
    assert_eq!(json["raw_before"]["connections"], 16);
    let text = report.table();
    assert!(
        text.contains(&format!(
            "(mean of {:.0}/s before and {:.0}/s after the engine)",
            before.raw_per_s,
            report.raw.as_ref().unwrap().raw_per_s
        )),
        "{text}"
    );

    // Four events open at most four connections: the run before foresaw sixteen, so
    // only the one after counts.
    let plan = self::plan(Knobs {
        events: Some(4),
        tenants: Some(1),
        webhooks_per_tenant: Some(1),
        compare_raw: Some(true),
        ..Knobs::default()
    });
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert!(report.connections <= 4, "{}", report.connections);
    assert_eq!(report.raw_before.as_ref().unwrap().connections, 16);
    assert!(!report.raw_bracketed);
    assert_raw_rule(&report);
    assert!(report.table().contains("not the engine's"));
}

#[test]
fn embedded_publishers_hand_events_over_in_batches() {
    // Tenants change every `batch` events (a chunk of the run each), and each publisher
    // hands over its partial batch at the end: 610 events in batches of 50 over 2
    // publishers are 12 full batches and one of 10; one at a time, 610 hand-offs.
    for (batch, calls) in [(50, 13), (1, 610)] {
        let plan = plan(Knobs {
            events: Some(610),
            tenants: Some(3),
            webhooks_per_tenant: Some(2),
            publishers: Some(2),
            batch: Some(batch),
            window: Some(100),
            ..Knobs::default()
        });
        let report = run(&plan, &mut Progress::quiet()).unwrap();
        assert_eq!(report.accepted, 610, "batch {batch}");
        assert_eq!(report.publish_errors, 0, "batch {batch}");
        assert_eq!(report.delivered, 1220, "batch {batch}: accepted × fan-out");
        assert_eq!(report.latency_samples, 1220, "batch {batch}");
        assert_eq!(report.batch, batch, "batch {batch}");
        assert_eq!(report.publish_calls, calls, "batch {batch}");
        let json = json_of(&report);
        assert_eq!(json["publish_calls"], calls);
    }
}

#[test]
fn closed_loop_delivers_every_event_to_every_webhook() {
    let plan = plan(Knobs {
        events: Some(600),
        tenants: Some(3),
        webhooks_per_tenant: Some(2),
        compare_raw: Some(true),
        ..Knobs::default()
    });
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert_eq!(report.accepted, 600);
    assert_eq!(report.publish_errors, 0);
    assert_eq!(report.deliveries_expected, 1200);
    assert_eq!(report.delivered, 1200, "delivered = accepted × fan-out");
    assert_eq!(report.attempts, 1200);
    assert!(!report.drain_timed_out);
    assert_eq!(
        report.latency_samples, 1200,
        "every delivery carried its send time"
    );
    assert!(report.p50_us <= report.p99_us && report.p99_us <= report.max_us);
    assert_eq!(report.retries.attempts_succeeded, Some(1200));
    assert_eq!(report.retries.attempts_retryable, Some(0));
    assert_eq!(report.statuses.get("200"), Some(&1200));
    assert_journal_records(&report);
    assert!(report.journal_bytes_per_delivery.unwrap() > 0.0);
    assert!(report.raw_per_s.unwrap() > 0.0, "raw > 0");
    assert!(report.ratio_to_raw.unwrap() > 0.0);
    let raw = report.raw.as_ref().unwrap();
    assert_eq!(raw.non_success, 0);
    assert!(raw.requests >= 1200);
    assert!(!report.timeline.is_empty());
    assert_eq!(report.timeline.last().unwrap().delivered, 1200);
    // Embedded, every sample counts the engine's checkpoints; the last one was taken
    // after the drain, as the report's total was.
    for sample in &report.timeline {
        assert!(sample.checkpoints.is_some(), "{sample:?}");
        assert!(
            sample.checkpoints_underway.is_some_and(|n| n <= 2),
            "{sample:?}"
        );
    }
    assert_eq!(
        report.timeline.last().unwrap().checkpoints,
        report.checkpoints
    );
    // 1,200 deliveries fill no shard's delivery log: nothing evicted, and with no
    // checkpoint either the table warns that the run is short of the steady state.
    assert_eq!(report.deliveries_evicted, Some(0));
    assert_eq!(report.checkpoints, Some(0));
    assert!(report.short_run_caution().is_some());
    // Six endpoints over six origins by default; the raw ceiling used the same ports and
    // as many connections as the engine opened.
    assert_eq!(report.origins, 6);
    assert_eq!(raw.origins, 6);
    assert!(report.connections >= 6, "a connection per origin at least");
    assert_eq!(raw.connections as u64, report.connections);
    assert_raw_rule(&report);
    assert_eq!(report.figures_source, "engine");
    assert_eq!(report.shards, Some(1));
    // One shard leaves a CPU over on a machine of several: pinned by default.
    let pinned = report.cores > 1;
    assert_eq!(report.pinned, Some(pinned));
    let engine_row = if pinned {
        "1 shards on 2 cores, pinned"
    } else {
        "1 shards on 1 cores, floating"
    };
    assert!(
        report.cores > 2 || report.table().contains(engine_row),
        "{}",
        report.table()
    );
    assert!(report.engine_cpu_us_per_delivery.is_some());
    // The syncs' tail: the slowest at or past the p99, and how many were over 10 ms.
    let over = report
        .journal_syncs_over_10ms
        .expect("embedded: syncs counted");
    assert!(over <= report.journal_syncs.unwrap());
    match (report.journal_sync_p99_us, report.journal_sync_max_us) {
        (Some(p99), Some(max)) => assert!(max >= p99, "{p99} {max}"),
        (p99, None) => assert!(over > 0 || p99.is_none(), "past a second is over 10 ms"),
        (None, Some(max)) => panic!("a p99 past a second under a slowest of {max} µs"),
    }
    assert!(report.table().contains("over 10 ms"), "{}", report.table());
    // Every publish waits for its sync: its turn is committed urgently.
    let urgent = report
        .journal_commits_urgent
        .expect("embedded: commits counted");
    assert!(urgent > 0, "{report:?}");
    assert!(report.journal_commits_lazy.is_some());
    assert!(
        report.table().contains(&format!("{urgent} urgently")),
        "{}",
        report.table()
    );
    // The journal's sync thread lives through the run (a spare thread may come and go):
    // its CPU is read, and it is part of the engine's.
    let journal = report
        .journal_cpu_us_per_delivery
        .expect("the journal's threads are found by their names");
    assert!(journal <= report.engine_cpu_us_per_delivery.unwrap() + 0.1);

    let host = report
        .host_cpu
        .expect("a run of thousands of deliveries spans clock ticks of /proc/stat");
    assert_host_shares(&host);
    assert!(host.busy > 0.0, "the run kept a CPU busy: {host:?}");

    let json = json_of(&report);
    assert_keys(&json);
    assert!(json["host_cpu"]["steal"].is_f64(), "{}", json["host_cpu"]);
    assert!(json["deliveries_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        json["server_rss_bytes"],
        serde_json::Value::Null,
        "embedded"
    );
    assert_svg_parses(&svg::run_svg(&report).unwrap());

    // tools/bench-table makes a Markdown table of it, with the median row.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("closed.json");
    std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
    let table = tool("bench-table", &[Path::new("--median"), &path, &path]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("| file | run | deliveries/s |"),
        "{table}"
    );
    // Python's "{:,.0f}": thousands separated by commas.
    let digits = format!("{:.0}", report.deliveries_per_s);
    let mut with_commas = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            with_commas.push(',');
        }
        with_commas.push(c);
    }
    assert!(
        lines[2].starts_with(&format!(
            "| closed.json | embedded, closed, 3×2, 1 shards, 6 origins | {with_commas} |"
        )),
        "{table}"
    );
    assert!(lines[4].starts_with("| **median of 2** |"), "{table}");
    assert_eq!(lines.len(), 5, "{table}");
}

#[test]
fn open_loop_over_tls_with_an_event_mix() {
    let plan = plan(Knobs {
        events: Some(300),
        rate: Some(1000.0),
        tenants: Some(2),
        webhooks_per_tenant: Some(2),
        tls: Some(true),
        scheme: Some("stripe".into()),
        verify: Some(true),
        event_mix: Some("order.created:3,payment.processed:1".into()),
        ..Knobs::default()
    });
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert_eq!(report.load_model, "open");
    assert_eq!(report.rate_offered, Some(1000.0));
    assert_eq!((report.accepted, report.delivered), (300, 600));
    assert!(report.tls);
    assert_eq!(report.latency_samples, 600);
    assert_keys(&json_of(&report));
    assert_eq!(json_of(&report)["raw_per_s"], serde_json::Value::Null);
}

#[test]
fn failing_receivers_show_up_as_retries_by_class() {
    let plan = plan(Knobs {
        events: Some(400),
        tenants: Some(4),
        webhooks_per_tenant: Some(2),
        status_mix: Some("200:90,500:7,429:3".into()),
        retry_after_s: Some(1),
        seed: Some(7),
        // One retry, soon, so the run sees it.
        retry_schedule_ms: Some(vec![50]),
        ..Knobs::default()
    });
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert!(!report.drain_timed_out);
    assert_eq!(report.accepted, 400);
    let r = &report.retries;
    let retryable = r.attempts_retryable.unwrap();
    assert!(retryable > 0, "{r:?}");
    assert_eq!(
        r.attempts_succeeded.unwrap() + retryable + r.attempts_final.unwrap(),
        report.attempts,
        "the engine's attempts are the sink's answers"
    );
    assert_eq!(r.attempts_succeeded.unwrap(), report.delivered);
    // Every delivery succeeded, used up its one retry, or is held back (an endpoint's
    // breaker opens after consecutive failures; the run then reports it as pending).
    assert_eq!(
        report.delivered + r.deliveries_exhausted.unwrap() + r.deliveries_pending.unwrap(),
        report.deliveries_expected
    );
    assert!(report.statuses.contains_key("500"));
}

#[test]
fn failing_endpoints_are_chosen_by_the_seed() {
    let plan = plan(Knobs {
        events: Some(200),
        tenants: Some(20),
        webhooks_per_tenant: Some(5),
        failing_endpoints_percent: Some(10.0),
        failing_status: Some(404),
        ..Knobs::default()
    });
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    let failed = report.retries.attempts_final.unwrap();
    assert!(failed > 0, "some of 100 endpoints fail at 10 %");
    assert_eq!(report.statuses.get("404"), Some(&failed));
    assert_eq!(report.delivered + failed, report.deliveries_expected);
}

#[test]
fn raw_alone_measures_the_ceiling() {
    let report = run_raw(&RawPlan {
        connections: 4,
        requests: 2000,
        duration: None,
        body_bytes: 456,
        tls: false,
        scheme: herald::Scheme::Standard,
        sink_threads: 1,
        origins: 2,
    })
    .unwrap();
    assert_eq!(report.requests, 2000);
    assert_eq!(report.non_success, 0);
    assert!(report.raw_per_s > 0.0);
    assert_eq!(report.body_bytes, 456);
    assert_eq!(report.latency.samples, 2000);
    assert_eq!((report.connections, report.origins), (4, 2));
    assert!(report.sink_cpu_us_per_request.is_some());
    if let Some(host) = &report.host_cpu {
        assert_host_shares(host);
    }
    assert!(report.table().contains("(sink "), "{}", report.table());
}

/// Shares of the machine's CPU time: each within 0..=1, together all of it.
fn assert_host_shares(host: &herald_bench::report::HostCpuShares) {
    for share in [host.busy, host.idle, host.steal] {
        assert!((0.0..=1.0).contains(&share), "{host:?}");
    }
    assert!(
        (host.busy + host.idle + host.steal - 1.0).abs() < 1e-9,
        "{host:?}"
    );
}

/// A sweep that could measure nothing is refused before its probe runs.
#[test]
fn a_sweep_that_measures_nothing_is_refused_at_once() {
    let good = || SweepPlan {
        base: plan(Knobs::default()),
        slo_p99_ms: 50.0,
        step_duration: Duration::from_secs(1),
        start_rate: None,
        step_rate: None,
        steps_max: 2,
        shards: vec![1],
        need_rate: None,
    };
    let cases: Vec<(&str, SweepPlan)> = vec![
        (
            "step_duration",
            SweepPlan {
                step_duration: Duration::ZERO,
                ..good()
            },
        ),
        (
            "start_rate",
            SweepPlan {
                start_rate: Some(f64::INFINITY),
                ..good()
            },
        ),
        (
            "step_rate",
            SweepPlan {
                step_rate: Some(0.0),
                ..good()
            },
        ),
        (
            "need_rate",
            SweepPlan {
                need_rate: Some(-5.0),
                ..good()
            },
        ),
        (
            "sweep_shards",
            SweepPlan {
                shards: vec![1, 0],
                ..good()
            },
        ),
        (
            "sweep_shards",
            SweepPlan {
                shards: vec![257],
                ..good()
            },
        ),
    ];
    for (name, plan) in cases {
        let error = sweep(&plan, &mut Progress::quiet())
            .unwrap_err()
            .to_string();
        assert!(error.contains(name), "{name}: {error}");
    }
}

#[test]
fn sweep_finds_a_knee_and_sizes() {
    let base = plan(Knobs {
        tenants: Some(2),
        ..Knobs::default()
    });
    let report = sweep(
        &SweepPlan {
            base,
            // Loose enough that loopback meets it at these rates on any machine; the
            // test checks the shape of the report, not the figures.
            slo_p99_ms: 10_000.0,
            // A step keeps up when its deliveries over publishing and draining reach 0.9
            // of the rate: 2 s leaves the drain 0.2 s on a loaded machine (300 ms left
            // it 33 ms).
            step_duration: Duration::from_secs(2),
            start_rate: Some(200.0),
            step_rate: Some(200.0),
            steps_max: 2,
            shards: vec![1],
            need_rate: Some(1000.0),
        },
        &mut Progress::quiet(),
    )
    .unwrap();
    assert_eq!(report.series.len(), 1);
    let series = &report.series[0];
    assert_eq!(series.steps.len(), 2);
    assert!(series.steps.iter().all(|s| s.pass), "{:?}", series.steps);
    assert_eq!(series.knee_rate, Some(400.0));
    assert!(!series.slo_broken, "the steps ran out first");
    assert!(
        report
            .sizing
            .starts_with("1000 events/s at fan-out 1, p99 ≤ 10000 ms: "),
        "{}",
        report.sizing
    );
    // A shard per core at the knee's 400 events/s per shard: 1,000 events/s take 3.
    assert_eq!(report.cores_needed, Some(3), "{}", report.sizing);
    assert!(
        report.sizing.contains(": 3 cores like this one"),
        "{}",
        report.sizing
    );
    assert!(report.cores_needed_by_cpu.is_some());
    assert_svg_parses(&svg::sweep_svg(&report).unwrap());

    // tools/bench-plot draws the sweep; tools/bench-table lists its steps and sizing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep.json");
    std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
    let plot = dir.path().join("sweep.svg");
    tool("bench-plot", &[Path::new("-o"), &plot, &path]);
    let text = std::fs::read_to_string(&plot).unwrap();
    assert_svg_parses(&text);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let points = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .count();
    assert_eq!(points, 2, "a point per step");
    assert!(text.contains("SLO 10000 ms"), "{text}");
    let table = tool("bench-table", &[&path]);
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("| sweep.json | 1 |"))
            .count(),
        2,
        "{table}"
    );
    assert!(table.contains(&report.sizing), "{table}");
}

#[test]
fn scenarios_in_benches_resolve() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let knobs = Knobs::from_file(&path).unwrap();
            Plan::resolve(&knobs).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen > 0, "no scenario files in {}", dir.display());
}

#[test]
fn flapping_receivers_go_down_and_come_back() {
    let plan = plan(Knobs {
        duration: Some(Duration::from_millis(1500)),
        rate: Some(400.0),
        tenants: Some(2),
        flap_period: Some(Duration::from_millis(600)),
        flap_down: Some(Duration::from_millis(200)),
        retry_schedule_ms: Some(vec![50, 100]),
        ..Knobs::default()
    });
    assert!(!plan.receiver.never_fails(), "a flapping receiver fails");
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert!(!report.drain_timed_out);
    assert_eq!(report.accepted, 600);
    // Down parts answer 503, up parts the model (200).
    assert!(
        report.statuses.get("503").is_some_and(|n| *n > 0),
        "{:?}",
        report.statuses
    );
    assert!(
        report.statuses.get("200").is_some_and(|n| *n > 0),
        "{:?}",
        report.statuses
    );
    let r = &report.retries;
    assert_eq!(
        report.delivered + r.deliveries_exhausted.unwrap() + r.deliveries_pending.unwrap(),
        report.deliveries_expected
    );
    assert!(report
        .timeline
        .iter()
        .all(|s| s.rss_bytes.is_some_and(|b| b > 0)));
    assert!(Plan::resolve(&Knobs {
        flap_period: Some(Duration::from_millis(10)),
        ..Knobs::default()
    })
    .unwrap_err()
    .to_string()
    .contains("flap_period"));
}

#[test]
fn flap_down_sets_the_outage_within_the_period() {
    let resolve = |period: Option<u64>, down: Option<u64>| {
        Plan::resolve(&Knobs {
            flap_period: period.map(Duration::from_millis),
            flap_down: down.map(Duration::from_millis),
            ..Knobs::default()
        })
        .map(|plan| (plan.receiver.flap_period, plan.receiver.flap_down))
        .map_err(|e| e.to_string())
    };
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(resolve(Some(60_000), None), Ok((ms(60_000), ms(30_000))));
    assert_eq!(
        resolve(Some(60_000), Some(5_000)),
        Ok((ms(60_000), ms(5_000)))
    );
    assert_eq!(resolve(None, None), Ok((None, None)));
    for (period, down, named) in [
        (None, Some(5_000), "flap_down needs flap_period"),
        (Some(60_000), Some(60_000), "flap_down must leave"),
        (Some(60_000), Some(59_950), "flap_down must leave"),
        (Some(1_000), Some(50), "flap_down must leave"),
    ] {
        let error = resolve(period, down).unwrap_err();
        assert!(error.contains(named), "{period:?} {down:?}: {error}");
    }
    // Flags and scenario files both take it.
    let knobs = Knobs::from_toml("flap_period = \"60s\"\nflap_down = \"5s\"\n").unwrap();
    assert_eq!(knobs.flap_down, ms(5_000));
}

const ADMIN_KEY: &str = "bench-smoke-admin-key-0123456789";

/// A `herald serve` in this process, on loopback, allowed to deliver to loopback.
struct Server {
    server: Option<herald_api::Server>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(adjust: impl FnOnce(&mut herald_api::Config, &Path)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = herald_api::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            shards: 1,
            ..herald_api::Config::default()
        };
        config.egress.allow_cidrs.push("127.0.0.0/8".to_owned());
        adjust(&mut config, dir.path());
        let server = herald_api::Server::start(config, Some(ADMIN_KEY.to_owned())).unwrap();
        Server {
            server: Some(server),
            _dir: dir,
        }
    }

    fn port(&self) -> u16 {
        self.server.as_ref().unwrap().local_addr().port()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.shutdown();
        }
    }
}

fn remote_knobs(target: String) -> Knobs {
    Knobs {
        target: Some(target),
        api_key: Some(ADMIN_KEY.to_owned()),
        drain_timeout: Some(Duration::from_secs(60)),
        ..Knobs::default()
    }
}

/// Checks a remote run against what the server's /metrics counted.
fn assert_remote_report(report: &herald_bench::Report, accepted: u64, fanout: u64) {
    assert_eq!(report.mode, "remote");
    assert_eq!(report.figures_source, "metrics");
    assert_eq!(report.accepted, accepted);
    assert_eq!(
        report.delivered,
        accepted * fanout,
        "delivered = accepted × fan-out"
    );
    assert!(!report.drain_timed_out);
    assert_eq!(report.shards, Some(1), "the server's herald_shards");
    assert!(
        report
            .timeline
            .iter()
            .all(|s| s.checkpoints.is_none() && s.checkpoints_underway.is_none()),
        "a remote server's shards are not sampled"
    );
    // The server's counters, not the sink's.
    assert_eq!(report.retries.attempts_succeeded, Some(report.delivered));
    assert_eq!(report.retries.attempts_retryable, Some(0));
    assert_eq!(report.retries.retries_sent, Some(0));
    assert_eq!(report.retries.deliveries_pending, Some(0));
    assert_journal_records(report);
    assert!(report.journal_bytes_per_delivery.unwrap() > 0.0);
    assert!(report.journal_syncs.unwrap() > 0);
    // From the server's herald_journal_commits_total: its publishes were urgent.
    assert!(report.journal_commits_urgent.unwrap() > 0, "{report:?}");
    assert!(report.journal_commits_lazy.is_some());
    // Where /proc exists (Linux), the server exports its process figures.
    if Path::new("/proc/self/stat").exists() {
        assert!(report.cpu_us_per_delivery.is_some(), "{report:?}");
        assert_eq!(
            report.engine_cpu_us_per_delivery,
            report.cpu_us_per_delivery
        );
        assert!(report.peak_rss_bytes.unwrap() > 0);
        assert!(report.server_rss_bytes.unwrap() > 0);
        assert!(report.disk_write_bytes_per_delivery.is_some());
    }
    // The server's disk is not the harness's to read: unknown, not 0.
    assert_eq!(report.device, None);
    let json = json_of(report);
    assert_keys(&json);
    assert_eq!(
        json["device_write_bytes_per_delivery"],
        serde_json::Value::Null
    );
    // The server's threads are not the harness's to read either.
    assert_eq!(json["journal_cpu_us_per_delivery"], serde_json::Value::Null);
    assert_svg_parses(&svg::run_svg(report).unwrap());
}

#[test]
fn remote_mode_publishes_over_rest_and_reads_the_server_metrics() {
    let server = Server::start(|_, _| {});
    let plan = Plan::resolve(&Knobs {
        events: Some(200),
        tenants: Some(2),
        webhooks_per_tenant: Some(2),
        batch: Some(10),
        compare_raw: Some(true),
        ..remote_knobs(format!("http://127.0.0.1:{}", server.port()))
    })
    .unwrap();
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert_remote_report(&report, 200, 2);
    assert!(report.raw_per_s.unwrap() > 0.0, "raw > 0");
    assert_eq!(report.origins, 4);
}

/// A CA, and a certificate it issued for 127.0.0.1 and localhost: `(ca_pem, chain_pem
/// (leaf then CA), key_pem)`.
fn issue() -> (String, String, String) {
    let pki = herald_sink::Pki::generate("bench test CA").unwrap();
    let leaf = pki.issue(&["127.0.0.1", "localhost"]).unwrap();
    (pki.ca_pem().to_owned(), leaf.chain_pem, leaf.key_pem)
}

#[test]
fn remote_mode_over_https_with_a_tls_sink() {
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (server_ca, server_chain, server_key) = issue();
    let (sink_ca, sink_chain, sink_key) = issue();
    let server_ca = write("server-ca.pem", &server_ca);
    let (server_chain, server_key) = (
        write("server.pem", &server_chain),
        write("server-key.pem", &server_key),
    );
    let sink_ca = write("sink-ca.pem", &sink_ca);
    let (sink_chain, sink_key) = (
        write("sink.pem", &sink_chain),
        write("sink-key.pem", &sink_key),
    );
    let server = Server::start(|config, _| {
        config.tls = Some(herald_api::config::TlsConfig {
            cert: server_chain.clone(),
            key: server_key.clone(),
        });
        config.egress.extra_ca_pems.push(sink_ca.clone());
    });
    let target = format!("https://127.0.0.1:{}", server.port());

    // Without the server's CA the harness refuses the certificate and says what to do.
    let untrusting = Plan::resolve(&Knobs {
        events: Some(10),
        tenants: Some(1),
        ..remote_knobs(target.clone())
    })
    .unwrap();
    let err = run(&untrusting, &mut Progress::quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--ca-file"), "{err}");

    let plan = Plan::resolve(&Knobs {
        events: Some(150),
        tenants: Some(3),
        webhooks_per_tenant: Some(1),
        ca_file: Some(server_ca),
        sink_cert: Some(sink_chain),
        sink_key: Some(sink_key),
        compare_raw: Some(true),
        ..remote_knobs(target)
    })
    .unwrap();
    assert!(plan.tls, "a sink certificate means TLS");
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert!(report.tls);
    assert_remote_report(&report, 150, 1);
    let raw = report.raw.as_ref().unwrap();
    assert!(raw.tls && raw.raw_per_s > 0.0, "{raw:?}");
}

#[test]
fn remote_knobs_are_checked() {
    let cases: &[(Knobs, &str)] = &[
        (
            Knobs {
                tls: Some(true),
                ..remote_knobs("http://127.0.0.1:1".into())
            },
            "--sink-cert",
        ),
        (
            Knobs {
                ca_file: Some("ca.pem".into()),
                ..remote_knobs("http://127.0.0.1:1".into())
            },
            "plain http",
        ),
        (
            Knobs {
                ca_file: Some("ca.pem".into()),
                ..Knobs::default()
            },
            "needs --target",
        ),
        (
            Knobs {
                sink_cert: Some("c.pem".into()),
                sink_key: Some("k.pem".into()),
                ..Knobs::default()
            },
            "embedded runs generate",
        ),
        (
            Knobs {
                origins: Some(herald_sink::LISTENERS_MAX + 1),
                ..Knobs::default()
            },
            "origins",
        ),
    ];
    for (knobs, needle) in cases {
        let err = Plan::resolve(knobs).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn remote_sweep_steps_the_server_and_sizes() {
    let server = Server::start(|_, _| {});
    let base = Plan::resolve(&Knobs {
        tenants: Some(2),
        ..remote_knobs(format!("http://127.0.0.1:{}", server.port()))
    })
    .unwrap();
    let report = sweep(
        &SweepPlan {
            base,
            slo_p99_ms: 10_000.0,
            // Long enough that the drain fits the keep-up share under load (see above).
            step_duration: Duration::from_secs(2),
            start_rate: Some(100.0),
            step_rate: Some(100.0),
            steps_max: 1,
            shards: vec![],
            need_rate: Some(500.0),
        },
        &mut Progress::quiet(),
    )
    .unwrap();
    assert_eq!(report.mode, "remote");
    assert_eq!(report.series.len(), 1);
    let series = &report.series[0];
    assert_eq!(series.shards, Some(1), "the server's shards");
    assert_eq!(series.steps.len(), 1);
    assert!(series.steps[0].pass, "{:?}", series.steps);
    assert!(series.steps[0].engine_cpu_us_per_delivery.is_some());
    assert!(
        report
            .sizing
            .starts_with("500 events/s at fan-out 1, p99 ≤ 10000 ms: "),
        "{}",
        report.sizing
    );
    assert!(
        report.sizing.contains("cores like the server's"),
        "{}",
        report.sizing
    );
    assert_svg_parses(&svg::sweep_svg(&report).unwrap());
}

/// tools/perf-split turns sample counts into µs per delivery by kind of work: each
/// sample is 1/hz s of a thread's time, split over the deliveries of the span. Only the
/// named threads count, even where another thread's samples fell in the same symbol.
#[test]
fn perf_split_divides_samples_by_kind_of_work_and_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.txt");
    // The shape of `perf report --no-children --sort comm,sym --stdio -g none -n`.
    std::fs::write(
        &report,
        "# Samples: 170 of event 'cpu-clock:ppp'\n\
         #\n\
         # Overhead       Samples  Command          Symbol\n\
         #\n\
         \x20   35.29%            60  herald-sink-0    [k] tcp_sendmsg_locked\n\
         \x20   17.65%            30  herald-shard-0-  [k] tcp_sendmsg_locked\n\
         \x20    5.88%            10  herald-shard-1-  [k] tcp_sendmsg_locked\n\
         \x20   11.76%            20  herald-shard-1-  [.] herald_core::dispatcher::Dispatcher::emit\n\
         \x20    5.88%            10  herald-shard-0-  [.] _mi_page_malloc_zero\n\
         \x20    5.88%            10  herald-shard-0-  [k] native_write_msr\n\
         \x20    5.88%            10  herald-shard-1-  [.] __memmove_avx512_unaligned_erms\n\
         \x20    5.88%            10  herald-shard-0-  [k] something_else\n\
         \x20    5.88%            10  swapper          [k] pv_native_safe_halt\n",
    )
    .unwrap();
    let table = tool(
        "perf-split",
        &[
            Path::new("--deliveries"),
            Path::new("100"),
            Path::new("--hz"),
            Path::new("1000"),
            Path::new("--report"),
            &report,
        ],
    );
    // 40 samples at 1 kHz = 40 ms over 100 deliveries = 400 µs each.
    for row in [
        "| kernel: network (TCP, loopback, sockets) | 400.00 |",
        "| user: Herald's code | 200.00 |",
        "| user: allocator | 100.00 |",
        "| kernel: timers, IPIs, scheduler, membarrier | 100.00 |",
        "| user: copies | 100.00 |",
        "| kernel: other | 100.00 |",
        "| all | 1000.00 |",
    ] {
        assert!(table.lines().any(|line| line == row), "{row} in\n{table}");
    }
}
