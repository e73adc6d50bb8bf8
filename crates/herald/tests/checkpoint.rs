//! A shard whose state is larger than one journal frame checkpoints it in parts (here:
//! the smallest segments, so a frame holds at most 64 KiB and a backlog of a few hundred
//! pending deliveries takes several), and a restart rebuilds every delivery from those
//! parts: replay reads the checkpoint, not the history of every record.

mod support;

use herald::{Event, EventFilter, Herald, Scheme, TenantId, WebhookSpec};
use support::closed_url;

/// Smallest journal segment: its frames hold at most 64 KiB.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// Deliveries: with ~1 KiB of event data each the checkpoint is several hundred KiB.
const DELIVERIES: u64 = 400;

fn engine(dir: &std::path::Path) -> Herald {
    Herald::builder()
        .data_dir(dir)
        .shards(1)
        .allow_cidr("127.0.0.0/8")
        .journal_segment_bytes(SEGMENT_BYTES)
        .start()
        .unwrap()
}

fn pending(herald: &Herald) -> u64 {
    herald
        .stats()
        .unwrap()
        .iter()
        .map(|s| s.dispatcher.pending_deliveries as u64)
        .sum()
}

#[test]
fn a_backlog_larger_than_a_frame_checkpoints_in_parts_and_restarts_whole() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let herald = engine(dir.path());
    let spec = WebhookSpec::new(
        closed_url(),
        vec![EventFilter::parse("*").unwrap()],
        Scheme::Standard,
        herald_sign::generate_secret(&Scheme::Standard, &[3; 32]),
    );
    herald.create_webhook(&tenant, spec).unwrap();
    let padding = "x".repeat(1000);
    for n in 0..DELIVERIES {
        let event = Event::parse(
            "order.created",
            &serde_json::json!({ "n": n, "pad": padding }),
        )
        .unwrap();
        herald.publish(&tenant, event).unwrap();
    }
    // Every publish was acknowledged durable; its delivery is pending once it failed to
    // connect or waits behind the open breaker.
    assert_eq!(pending(&herald), DELIVERIES);
    let journaled = herald.stats().unwrap()[0].journal_last_seq;
    assert!(journaled >= DELIVERIES, "an EventAccepted record each");
    herald.shutdown().unwrap();
    drop(herald);

    let herald = engine(dir.path());
    let stats = herald.stats().unwrap()[0];
    assert_eq!(stats.dispatcher.pending_deliveries as u64, DELIVERIES);
    // The clean stop's checkpoint did not fit one 64 KiB frame: it is in parts, and the
    // restart read those parts (and nothing else: the stop wrote no record after it).
    assert!(
        stats.replayed_bytes > SEGMENT_BYTES,
        "the checkpoint is larger than a frame: {stats:?}"
    );
    assert!(
        stats.replayed_frames > 1 && stats.replayed_frames < DELIVERIES,
        "replay read the checkpoint's parts, not every record: {stats:?}"
    );
    herald.shutdown().unwrap();
}
