//! Smoke run of `herald bench pending` with small numbers: every delivery stays
//! pending, the clean stop checkpoints that state, and the restart replays the state
//! (the checkpoint's parts and what followed it), not the history of every record;
//! deleting the webhook then ends every delivery.
//! Benchmarks report; nothing here asserts a timing or a memory figure.

use herald_bench::pending::{run_pending, PendingPlan};
use herald_bench::progress::Progress;

#[test]
fn pending_backlog_checkpoints_and_restarts_with_every_delivery() {
    let deliveries = 300;
    let plan = PendingPlan {
        deliveries,
        payload_bytes: 100,
        shards: 1,
        window: 64,
        data_dir: None,
    };
    let report = run_pending(&plan, &mut Progress::quiet()).unwrap();
    assert_eq!(report.pending, deliveries);
    assert_eq!(report.pending_after_restart, deliveries, "{report:?}");
    assert!(report.journal_segments >= 1, "{report:?}");
    // The clean stop checkpointed the backlog: the restart read its parts.
    assert!(report.replayed_bytes > 0, "{report:?}");
    // Each delivery journaled its event, an attempt and its outcome: replaying that
    // history would take three frames per delivery. The restart replays the state.
    assert!(report.replayed_frames >= 1, "{report:?}");
    assert!(
        report.replayed_frames < deliveries,
        "replay grew with history: {report:?}"
    );
    // Deleting the webhook ended every pending delivery (the run waits for none to be
    // left), each with its record.
    assert!(
        report.end_journal_bytes >= deliveries * 20,
        "the ending wrote a record per delivery: {report:?}"
    );
    assert!(report.ended_ms >= report.delete_ms, "{report:?}");
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "rss_anon_before_bytes",
        "rss_anon_after_bytes",
        "bytes_per_pending",
        "checkpoint_bytes",
        "checkpoint_ms",
        "stop_ms",
        "restart_ready_ms",
        "restart_cpu_ms",
        "replayed_frames",
        "delete_ms",
        "ended_ms",
        "stall_max_ms",
        "end_journal_bytes",
    ] {
        assert!(json.get(key).is_some(), "JSON lacks {key}: {json}");
    }
    assert!(report.table().contains("bytes per pending"));
}

#[test]
fn pending_refuses_bad_knobs() {
    let plan = PendingPlan {
        deliveries: 0,
        payload_bytes: 100,
        shards: 1,
        window: 64,
        data_dir: None,
    };
    let error = run_pending(&plan, &mut Progress::quiet()).unwrap_err();
    assert!(
        matches!(error, herald_bench::BenchError::Config(_)),
        "{error}"
    );
}
