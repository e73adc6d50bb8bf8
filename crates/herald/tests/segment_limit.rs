//! The journal's segment limit under the engine: with the smallest segments, a limit of
//! two segments and no checkpoint by schedule, publishing fills the journal until it
//! refuses records (`Error::Storage`). The events are delivered, so the state they
//! leave is small: the blocked shard writes a checkpoint as part of its probes, the
//! segments before it go, and it takes changes again by itself, without a restart.
//! Every acknowledged event is delivered, none refused is, and a restart finds every
//! acknowledged one in the journal.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use herald::{Error, EventFilter, Herald, Scheme, TenantId, Url, WebhookSpec};
use support::{arrived_ids as arrived, Receiver};

/// Upper bound of every wait; a passing run takes a small fraction of it.
const WAIT: Duration = Duration::from_secs(30);
/// Most publishes tried before the journal must have reached its limit (two segments of
/// 64 KiB hold a few dozen events of ~1 KiB with their attempts).
const PUBLISHES_MAX: usize = 2_000;

/// The engine with a limit of two segments and no checkpoint by count or time while
/// the test runs: only the limit's own.
fn engine(dir: &Path) -> Herald {
    engine_with(dir, 2, u64::MAX, Duration::from_secs(3600))
}

/// The engine on `dir` with the smallest segments, at most `segments_max` of them, and
/// checkpoints after `checkpoint_records` records or `checkpoint_interval`.
fn engine_with(
    dir: &Path,
    segments_max: usize,
    checkpoint_records: u64,
    checkpoint_interval: Duration,
) -> Herald {
    Herald::builder()
        .data_dir(dir)
        .shards(1)
        .allow_cidr("127.0.0.1/32")
        .journal_segment_bytes(herald_journal::SEGMENT_BYTES_MIN)
        .journal_segments_max(segments_max)
        .checkpoint_records(checkpoint_records)
        .checkpoint_interval(checkpoint_interval)
        .shutdown_grace(Duration::from_secs(2))
        .start()
        .expect("engine starts")
}

/// A receiver, and `herald` with one webhook of tenant `acme` pointing at it.
fn subscribed(herald: &Herald) -> (Receiver, TenantId) {
    let receiver = Receiver::start();
    let tenant = TenantId::parse("acme").unwrap();
    let secret = herald_sign::generate_secret(&Scheme::Standard, &[7; 32]);
    herald
        .create_webhook(
            &tenant,
            WebhookSpec::new(
                Url::parse(&receiver.url("/limit")).unwrap(),
                vec![EventFilter::parse("order.*").unwrap()],
                Scheme::Standard,
                secret,
            ),
        )
        .unwrap();
    (receiver, tenant)
}

/// Publishing without pause into a journal of three small segments while checkpoints
/// come every few records, each written a part at a time between turns, with records
/// between its parts, and the segments they let go deleted in the background: the
/// shard goes on taking events (if the journal refuses one at its limit, it resumes by
/// itself), and every acknowledged event is delivered.
#[test]
fn frequent_checkpoints_between_turns_keep_a_small_journal_going() {
    let data = tempfile::tempdir().unwrap();
    // Three segments, checkpoints every few records.
    let herald = engine_with(data.path(), 3, 8, Duration::from_millis(20));
    let (receiver, tenant) = subscribed(&herald);
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut refused = 0;
    let mut n = 0;
    while acknowledged.len() < 400 {
        n += 1;
        assert!(n < 20 * PUBLISHES_MAX, "the shard stopped taking events");
        match herald.publish(&tenant, event(n)) {
            Ok(id) => {
                acknowledged.insert(id.to_string());
            }
            Err(Error::Storage { .. }) => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(other) => panic!("at the segment limit: {other:?}"),
        }
    }
    let checkpoints = herald.stats().unwrap()[0].checkpoints_written;
    assert!(checkpoints > 10, "{checkpoints} checkpoints");
    receiver.wait_until(WAIT, |r| arrived(r).is_superset(&acknowledged));
    herald.shutdown().expect("a clean stop");
    eprintln!(
        "segment_limit with checkpoints: {} acknowledged, {refused} refused, {checkpoints} checkpoints",
        acknowledged.len()
    );
}

/// Every acknowledged event arrives and no refused one does; after a clean stop and a
/// restart on `dir`, the journal holds every acknowledged event and no refused one.
fn delivered_and_kept(
    herald: Herald,
    receiver: &Receiver,
    dir: &Path,
    tenant: &TenantId,
    acknowledged: &BTreeSet<String>,
    refused: &BTreeSet<String>,
) {
    let received = receiver.wait_until(WAIT, |r| arrived(r).is_superset(acknowledged));
    support::assert_none_refused_delivered(&arrived(&received), refused);
    herald.shutdown().expect("a clean stop");
    drop(herald);
    let herald = engine(dir);
    support::assert_journal_holds(&herald, tenant, acknowledged, refused);
}

fn event(n: usize) -> herald::Event {
    support::padded_event("evt_limit", n)
}

#[test]
fn a_shard_at_the_segment_limit_checkpoints_and_resumes_by_itself() {
    let data = tempfile::tempdir().unwrap();
    let herald = engine(data.path());
    let (receiver, tenant) = subscribed(&herald);

    // Publish, letting each event be delivered, until the journal refuses a record.
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut n = 0;
    let error = loop {
        assert!(n < PUBLISHES_MAX, "the journal never reached its limit");
        match herald.publish(&tenant, event(n)) {
            Ok(id) => {
                acknowledged.insert(id.to_string());
                let id = id.to_string();
                // Delivered (and its attempt journaled) before the next one: the
                // state left is the webhook and finished deliveries.
                receiver.wait_until(WAIT, |r| arrived(r).contains(&id));
            }
            Err(error) => {
                refused.insert(format!("evt_limit_{n}"));
                break error;
            }
        }
        n += 1;
    };
    assert!(
        matches!(error, Error::Storage { .. }),
        "the segment limit is a storage error: {error:?}"
    );
    assert!(
        error.to_string().contains("segments_max"),
        "the error names the limit: {error}"
    );
    assert!(
        acknowledged.len() > 10,
        "{} events fitted",
        acknowledged.len()
    );

    // Without a restart, the shard takes changes again: its probe checkpoints the
    // (small) state and the segments before the checkpoint go. With no other
    // checkpoint the journal fills again and again: each time the shard resumes by
    // itself.
    let refused_at_first_limit = refused.len();
    let mut publish_until_taken = |n: &mut usize| -> String {
        support::wait_for(WAIT, || {
            *n += 1;
            match herald.publish(&tenant, event(*n)) {
                Ok(id) => Some(id.to_string()),
                Err(Error::Storage { .. }) => {
                    refused.insert(format!("evt_limit_{n}"));
                    std::thread::sleep(Duration::from_millis(10));
                    None
                }
                Err(other) => panic!("at the segment limit: {other:?}"),
            }
        })
    };
    let mut taken = Vec::new();
    for _ in 0..3 * acknowledged.len() {
        let id = publish_until_taken(&mut n);
        receiver.wait_until(WAIT, |r| arrived(r).contains(&id));
        taken.push(id);
    }
    acknowledged.extend(taken);
    assert!(
        refused.len() > refused_at_first_limit,
        "the journal reached its limit again (and resumed): {} refused",
        refused.len()
    );

    delivered_and_kept(
        herald,
        &receiver,
        data.path(),
        &tenant,
        &acknowledged,
        &refused,
    );
    eprintln!(
        "segment_limit: {} acknowledged, {} refused at the limit, none lost",
        acknowledged.len(),
        refused.len()
    );
}

/// A batch that reaches the segment limit part way: the events whose records the
/// journal took before the refused one are durable and will be delivered, so they are
/// answered as accepted, and only the rest are refused. (Answering every event of the
/// batch with the error had publishers send the journaled ones again: duplicates.)
#[test]
fn a_batch_cut_by_the_segment_limit_is_answered_event_by_event() {
    /// Events per batch: ~40 KiB, so that most batches cross a 64 KiB segment's end.
    const BATCH: usize = 40;
    let data = tempfile::tempdir().unwrap();
    let herald = engine(data.path());
    let (receiver, tenant) = subscribed(&herald);
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut cut = None;
    let mut n = 0;
    while cut.is_none() {
        assert!(n < PUBLISHES_MAX, "no batch was cut by the segment limit");
        let ids: Vec<String> = (n..n + BATCH).map(|i| format!("evt_limit_{i}")).collect();
        let events = (n..n + BATCH).map(event).collect();
        n += BATCH;
        let results = match herald.publish_batch(&tenant, events) {
            Ok(results) => results,
            // A shard that is refusing changes refuses the whole batch.
            Err(Error::Storage { .. }) => {
                refused.extend(ids);
                continue;
            }
            Err(other) => panic!("publishing a batch: {other:?}"),
        };
        let taken = results.iter().take_while(|r| r.is_ok()).count();
        for (id, result) in ids.iter().zip(&results) {
            match result {
                Ok(event_id) => {
                    assert_eq!(event_id.as_str(), id);
                    acknowledged.insert(id.clone());
                }
                Err(error) => {
                    assert!(matches!(error, Error::Storage { .. }), "{error:?}");
                    refused.insert(id.clone());
                }
            }
        }
        // The journal takes records in order: the accepted events come first.
        assert!(
            results[taken..].iter().all(Result::is_err),
            "accepted events after a refused one: {results:?}"
        );
        if taken > 0 && taken < BATCH {
            cut = Some(taken);
        }
        // Delivered before the next batch: the state left is small.
        receiver.wait_until(WAIT, |r| arrived(r).is_superset(&acknowledged));
    }
    delivered_and_kept(
        herald,
        &receiver,
        data.path(),
        &tenant,
        &acknowledged,
        &refused,
    );
    eprintln!(
        "segment_limit: a batch of {BATCH} cut after {} events; {} acknowledged, {} refused",
        cut.unwrap_or_default(),
        acknowledged.len(),
        refused.len()
    );
}

/// A webhook with a backlog is disabled while another tenant fills the journal: its
/// deliveries end one per tick, so the ending is still under way when the journal
/// reaches its limit (in a debug build, as the suite runs). The shard must checkpoint and go on taking events (a rebuilt
/// dispatcher queues the rest of the ending instead of ending it all at once, which left
/// records waiting that no checkpoint could follow), and again after a restart.
#[test]
fn a_journal_at_its_limit_takes_events_again_while_a_backlog_ends() {
    let data = tempfile::tempdir().unwrap();
    let start = |dir: &Path| {
        Herald::builder()
            .data_dir(dir)
            .shards(1)
            .allow_cidr("127.0.0.1/32")
            .journal_segment_bytes(1024 * 1024)
            .journal_segments_max(4)
            .checkpoint_records(200)
            .checkpoint_interval(Duration::from_secs(3600))
            .dispatcher_config(herald::DispatcherConfig {
                endings_per_tick_max: 1,
                ..herald::DispatcherConfig::default()
            })
            .shutdown_grace(Duration::from_secs(2))
            .start()
            .expect("engine starts")
    };
    let herald = start(data.path());
    let secret = herald_sign::generate_secret(&Scheme::Standard, &[7; 32]);
    let backlog = TenantId::parse("backlog").unwrap();
    let spec = |url: Url| {
        WebhookSpec::new(
            url,
            vec![EventFilter::parse("order.*").unwrap()],
            Scheme::Standard,
            secret.clone(),
        )
    };
    let down = herald
        .create_webhook(&backlog, spec(support::closed_url()))
        .unwrap();
    // 1,500 pending deliveries of small events keep the ending going for 1,500 ticks
    // (about half of them were ended when a debug build reached the limit), and leave
    // room after a checkpoint there. With a thousand of the 1 KB events of the other
    // tests and the journal filled by 30 KB events, a debug build on a faster machine
    // reached the limit with most of the backlog pending and dozens of those events
    // waiting to be sent: a checkpoint of ~2.3 MB, which on segments of its own left
    // none, and the shard rightly reported a state that fills its limit
    // (`a_state_that_fills_the_limit_is_refused_with_the_settings_to_raise`).
    for n in 0..1_500 {
        let small = herald::Event::parse("order.created", &serde_json::json!({ "n": n }))
            .unwrap()
            .with_id(herald::EventId::parse(&format!("evt_backlog_{n}")).unwrap());
        herald.publish(&backlog, small).unwrap();
    }
    let mut disabled = spec(support::closed_url());
    disabled.status = herald::WebhookStatus::Disabled {
        reason: herald::DisableReason::Manual,
        at_ms: 0,
    };
    herald.update_webhook(&backlog, &down, disabled).unwrap();

    // ~6 MiB of events into a journal of 4 MiB: it reaches its limit at least once (in a
    // debug build; an optimized one may checkpoint fast enough not to). 10 KB each, so
    // that those waiting to be sent add little to the state.
    let (receiver, tenant) = subscribed(&herald);
    let big = |n: usize| {
        herald::Event::parse(
            "order.created",
            &serde_json::json!({ "n": n, "pad": "x".repeat(10_000) }),
        )
        .unwrap()
    };
    let publish_all = |herald: &Herald, from: usize, count: usize| {
        let deadline = std::time::Instant::now() + 2 * WAIT;
        let (mut taken, mut refused, mut n) = (0, 0, from);
        while taken < count && std::time::Instant::now() < deadline {
            match herald.publish(&tenant, big(n)) {
                Ok(_) => {
                    taken += 1;
                    n += 1;
                }
                Err(Error::Storage { .. }) => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(other) => panic!("publishing: {other}"),
            }
        }
        (taken, refused)
    };
    let (taken, refused) = publish_all(&herald, 0, 600);
    assert_eq!(
        taken, 600,
        "the shard stopped taking events ({refused} refused)"
    );
    herald.shutdown().unwrap();
    drop(herald);
    drop(receiver);

    let herald = start(data.path());
    let (taken, refused) = publish_all(&herald, 1_000, 20);
    assert_eq!(taken, 20, "after a restart ({refused} refused)");
    herald.shutdown().unwrap();
}

/// Events for a receiver that is down stay pending, so the state they make grows with
/// the journal: at the limit the shard's checkpoint of it leaves no room, and nothing
/// the shard can do frees any. Refusals then say so and name the settings to raise,
/// rather than promise that writes resume; a restart with a higher limit takes events
/// again, with every acknowledged one still pending.
#[test]
fn a_state_that_fills_the_limit_is_refused_with_the_settings_to_raise() {
    let data = tempfile::tempdir().unwrap();
    let herald = engine(data.path());
    let tenant = TenantId::parse("down").unwrap();
    let secret = herald_sign::generate_secret(&Scheme::Standard, &[7; 32]);
    let spec = WebhookSpec::new(
        support::closed_url(),
        vec![EventFilter::parse("order.*").unwrap()],
        Scheme::Standard,
        secret,
    );
    herald.create_webhook(&tenant, spec).unwrap();
    let (mut acknowledged, mut tried) = (0, 0);
    let deadline = std::time::Instant::now() + 2 * WAIT;
    let advice = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal named the limit's settings ({acknowledged} acknowledged)"
        );
        assert!(tried < PUBLISHES_MAX, "the journal never filled");
        tried += 1;
        match herald.publish(&tenant, event(tried)) {
            Ok(_) => acknowledged += 1,
            Err(error @ Error::Storage { .. }) => {
                let text = error.to_string();
                if text.contains("journal_segments_max") {
                    break text;
                }
                // Refused while the shard's probes (their delays double) checkpoint.
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(other) => panic!("publishing: {other}"),
        }
    };
    assert!(advice.contains("journal_segment_bytes"), "{advice}");
    assert!(acknowledged > 0);
    herald.shutdown().unwrap();
    drop(herald);

    let herald = engine_with(data.path(), 64, u64::MAX, Duration::from_secs(3600));
    herald.publish(&tenant, event(tried + 1)).unwrap();
    let pending: usize = herald
        .stats()
        .unwrap()
        .iter()
        .map(|s| s.dispatcher.pending_deliveries)
        .sum();
    assert_eq!(pending, acknowledged + 1);
    herald.shutdown().unwrap();
}

/// With the smallest segments, an event whose record the journal could not take is the
/// caller's error, refused when published (field `data`), and the shard goes on: the
/// next event to the same shard is accepted and delivered, with nothing refused as a
/// storage fault.
#[test]
fn an_event_too_large_for_the_segments_is_the_callers_error() {
    let data = tempfile::tempdir().unwrap();
    let herald = engine(data.path());
    let (receiver, tenant) = subscribed(&herald);
    let large = herald::Event::parse(
        "order.created",
        &serde_json::json!({ "pad": "x".repeat(100_000) }),
    )
    .unwrap();
    match herald.publish(&tenant, large) {
        Err(Error::Invalid { field, message, .. }) => {
            assert_eq!(field.as_deref(), Some("data"), "{message}");
            assert!(
                message.contains("larger than this server's journal takes"),
                "{message}"
            );
        }
        other => panic!("expected the caller's error, got {other:?}"),
    }
    // Just under what 64 KiB segments take, and a small one: both accepted.
    let fits = herald::Event::parse(
        "order.created",
        &serde_json::json!({ "pad": "x".repeat(30_000) }),
    )
    .unwrap();
    let fits = herald
        .publish(&tenant, fits)
        .expect("an event that fits is accepted");
    let small = herald
        .publish(&tenant, event(1))
        .expect("the shard goes on");
    let ids: BTreeSet<String> = [fits.as_str().to_string(), small.as_str().to_string()].into();
    receiver.wait_until(WAIT, |r| arrived(r).is_superset(&ids));
    herald.shutdown().expect("a clean stop");
}
