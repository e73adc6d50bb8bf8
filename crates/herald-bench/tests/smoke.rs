//! Smoke runs of each mode with small counts: the report is complete and consistent.
//! Benchmarks report; nothing here asserts a timing.

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
}

fn assert_svg_parses(text: &str) {
    let doc = roxmltree::Document::parse(text).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
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
    // Each delivery is at least its attempt-start and outcome records.
    assert!(report.records_per_delivery.unwrap() >= 2.0);
    assert!(report.journal_bytes_per_delivery.unwrap() > 0.0);
    assert!(report.raw_per_s.unwrap() > 0.0, "raw > 0");
    assert!(report.ratio_to_raw.unwrap() > 0.0);
    let raw = report.raw.as_ref().unwrap();
    assert_eq!(raw.non_success, 0);
    assert!(raw.requests >= 1200);
    assert!(!report.timeline.is_empty());
    assert_eq!(report.timeline.last().unwrap().delivered, 1200);

    let json = json_of(&report);
    assert_keys(&json);
    assert!(json["deliveries_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_svg_parses(&svg::run_svg(&report).unwrap());
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
    })
    .unwrap();
    assert_eq!(report.requests, 2000);
    assert_eq!(report.non_success, 0);
    assert!(report.raw_per_s > 0.0);
    assert_eq!(report.body_bytes, 456);
    assert_eq!(report.latency.samples, 2000);
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
            step_duration: Duration::from_millis(300),
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
    assert!(report.sizing.ends_with("cores like this one"));
    assert_svg_parses(&svg::sweep_svg(&report).unwrap());
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
        retry_schedule_ms: Some(vec![50, 100]),
        ..Knobs::default()
    });
    assert!(!plan.receiver.never_fails(), "a flapping receiver fails");
    let report = run(&plan, &mut Progress::quiet()).unwrap();
    assert!(!report.drain_timed_out);
    assert_eq!(report.accepted, 600);
    // Down halves answer 503, up halves the model (200).
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
