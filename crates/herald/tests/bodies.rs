//! Pending deliveries keep where the journal holds their event's envelope, not a copy,
//! and read it back when they are sent. This drives the cases where that position
//! changes or could go stale: checkpoints (the bodies move into the checkpoint's parts)
//! and the compaction that deletes the segments before them, then a restart (the bodies
//! are where the replayed checkpoint holds them). Every delivery must then arrive with
//! exactly its event's body, correctly signed.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use herald::{EventFilter, Herald, RetrySchedule, Scheme, TenantId, WebhookSpec};
use herald_sink::{Action, Sink};
use support::{padded_event, wait_for};

/// Smallest journal segment (64 KiB): the backlog's records and checkpoints fill
/// several, so checkpoints compact old ones away while deliveries wait.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// Events of ~1 KiB each: several segments' worth of bodies.
const EVENTS: usize = 240;
const WAIT: Duration = Duration::from_secs(60);

fn engine(dir: &Path) -> Herald {
    // The breaker stays open briefly: once the receiver answers, deliveries flow within
    // a fraction of a second.
    let mut dispatcher = herald::DispatcherConfig::default();
    dispatcher.health.breaker_open_ms = 50;
    dispatcher.health.breaker_open_ms_max = 200;
    Herald::builder()
        .dispatcher_config(dispatcher)
        .data_dir(dir)
        .shards(1)
        .pin_threads(false)
        .allow_cidr("127.0.0.0/8")
        .journal_segment_bytes(SEGMENT_BYTES)
        .checkpoint_records(60)
        .checkpoint_interval(Duration::from_millis(200))
        .shutdown_grace(Duration::from_secs(2))
        .start()
        .unwrap()
}

fn segment_bases(dir: &Path) -> BTreeSet<String> {
    walk(dir)
        .into_iter()
        .filter(|name| name.ends_with(".seg"))
        .collect()
}

fn walk(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            names.extend(walk(&entry.path()));
        } else {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names
}

#[test]
fn bodies_read_back_from_the_journal_survive_checkpoints_compaction_and_restart() {
    let secret = herald_sign::generate_secret(&Scheme::Standard, &[5; 32]);
    let sink = Sink::builder()
        .verify(Scheme::Standard, &[&secret])
        .default_action(Action::Status(503))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let herald = engine(dir.path());
    let mut spec = WebhookSpec::new(
        herald::Url::parse(&sink.url("/hook")).unwrap(),
        vec![EventFilter::parse("*").unwrap()],
        Scheme::Standard,
        secret.clone(),
    );
    // Retries every 200 ms for long enough: deliveries stay pending while the receiver
    // answers 503, so their records and the checkpoints roll the journal over.
    spec.retry_schedule = Some(RetrySchedule::new(vec![200; 24]).unwrap());
    herald.create_webhook(&tenant, spec).unwrap();
    let before = segment_bases(dir.path());
    for n in 0..EVENTS {
        herald.publish(&tenant, padded_event("evt", n)).unwrap();
    }
    // Checkpoints compacted the segments the events were first journaled in away.
    wait_for(WAIT, || {
        let now = segment_bases(dir.path());
        let first_gone = before.iter().all(|name| !now.contains(name));
        let checkpoints = herald.stats().unwrap()[0].checkpoints_written;
        (first_gone && checkpoints >= 2).then_some(())
    });
    let stats = herald.stats().unwrap()[0];
    assert!(
        stats.dispatcher.pending_deliveries > 0,
        "deliveries still wait for the receiver"
    );
    // The totals count every checkpoint written, each copying the pending bodies: more
    // than the latest alone, and part of what the journal took.
    assert!(
        stats.checkpoint_bytes_total > stats.checkpoint_bytes_last
            && stats.checkpoint_bytes_total <= stats.journal_bytes_appended,
        "{stats:?}"
    );
    assert!(stats.checkpoint_cpu_us_total > 0, "{stats:?}");
    herald.shutdown().unwrap();
    drop(herald);

    // After a restart the bodies are where the replayed checkpoint holds them.
    let herald = engine(dir.path());
    sink.set_default_action(Action::ok()).unwrap();
    wait_for(WAIT, || {
        let stats = herald.stats().unwrap()[0].dispatcher;
        (stats.pending_deliveries == 0).then_some(())
    });
    let requests = sink.requests_to("/hook");
    let mut delivered = BTreeSet::new();
    for request in &requests {
        assert_eq!(
            request.verify,
            Some(Ok(())),
            "every request carries a valid signature over its body"
        );
        let envelope: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let n = envelope["data"]["n"].as_u64().unwrap() as usize;
        assert_eq!(
            envelope["id"],
            format!("evt_{n}"),
            "the body is its event's"
        );
        assert_eq!(envelope["data"]["pad"], "x".repeat(1000));
        if request.action == Action::ok() {
            delivered.insert(n);
        }
    }
    assert_eq!(
        delivered,
        (0..EVENTS).collect::<BTreeSet<_>>(),
        "every event delivered"
    );
    herald.shutdown().unwrap();
}
