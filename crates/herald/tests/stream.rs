//! The event stream through the public API: live events, resume, restart, bounds.

use herald::{Event, EventFilter, Herald, StreamEnd, StreamFilter, SubscribeError, TenantId};

fn start(dir: &std::path::Path) -> Herald {
    Herald::builder()
        .data_dir(dir)
        .shards(2)
        .start()
        .expect("engine starts")
}

fn event(event_type: &str, n: u64) -> Event {
    Event::parse(event_type, &serde_json::json!({ "n": n })).unwrap()
}

fn message(event: &herald::StreamEvent) -> serde_json::Value {
    serde_json::from_str(&event.message).expect("a stream message is JSON")
}

#[test]
fn subscribers_get_durable_events_and_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let other = TenantId::parse("other").unwrap();
    let mut seqs = Vec::new();
    {
        let herald = start(dir.path());
        let mut all = herald
            .subscribe(&acme, StreamFilter::default(), None, 64)
            .unwrap();
        let orders = StreamFilter {
            events: vec![EventFilter::parse("order.*").unwrap()],
            locations: Vec::new(),
        };
        let mut only_orders = herald.subscribe(&acme, orders, None, 64).unwrap();
        // No webhook matches these: the stream carries them all the same.
        for (n, event_type) in ["order.created", "payment.captured", "order.paid"]
            .into_iter()
            .enumerate()
        {
            herald.publish(&acme, event(event_type, n as u64)).unwrap();
        }
        herald.publish(&other, event("order.created", 9)).unwrap();
        for n in 0..3u64 {
            let received = all.blocking_recv().unwrap();
            let value = message(&received);
            assert_eq!(value["seq"], received.seq);
            assert_eq!(value["tenant_id"], "acme");
            assert_eq!(value["data"]["n"], n);
            seqs.push(received.seq);
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(only_orders.blocking_recv().unwrap().seq, seqs[0]);
        assert_eq!(only_orders.blocking_recv().unwrap().seq, seqs[2]);
        // Nothing of the other tenant's.
        assert!(all.try_recv().unwrap().is_none());
        herald.shutdown().unwrap();
        assert_eq!(all.blocking_recv().unwrap_err(), StreamEnd::ShuttingDown);
    }
    let herald = start(dir.path());
    let mut resumed = herald
        .subscribe(&acme, StreamFilter::default(), Some(seqs[0]), 64)
        .unwrap();
    assert_eq!(resumed.blocking_recv().unwrap().seq, seqs[1]);
    assert_eq!(resumed.blocking_recv().unwrap().seq, seqs[2]);
    herald.publish(&acme, event("order.created", 3)).unwrap();
    let live = resumed.blocking_recv().unwrap();
    assert!(live.seq > seqs[2]);
    assert_eq!(message(&live)["data"]["n"], 3);
    let ahead = herald
        .subscribe(
            &acme,
            StreamFilter::default(),
            Some(live.seq + 1_000_000),
            64,
        )
        .unwrap_err();
    assert!(matches!(ahead, SubscribeError::Ahead { .. }), "{ahead:?}");
    herald.shutdown().unwrap();
}

#[test]
fn a_small_window_refuses_resume_points_it_no_longer_covers() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::builder()
        .data_dir(dir.path())
        .shards(1)
        .stream_window(std::time::Duration::from_secs(600), 2, 1 << 20)
        .start()
        .unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let mut live = herald
        .subscribe(&acme, StreamFilter::default(), None, 8)
        .unwrap();
    for n in 0..4 {
        herald.publish(&acme, event("order.created", n)).unwrap();
    }
    let seqs: Vec<u64> = (0..4).map(|_| live.blocking_recv().unwrap().seq).collect();
    let refused = herald
        .subscribe(&acme, StreamFilter::default(), Some(seqs[0]), 8)
        .unwrap_err();
    assert_eq!(
        refused,
        SubscribeError::OutsideWindow {
            after: seqs[0],
            floor: seqs[1]
        }
    );
    let mut resumed = herald
        .subscribe(&acme, StreamFilter::default(), Some(seqs[1]), 8)
        .unwrap();
    assert_eq!(resumed.blocking_recv().unwrap().seq, seqs[2]);
    herald.shutdown().unwrap();
}

#[test]
fn a_subscriber_that_does_not_read_is_cut_off_and_others_keep_up() {
    let dir = tempfile::tempdir().unwrap();
    let herald = start(dir.path());
    let acme = TenantId::parse("acme").unwrap();
    let mut slow = herald
        .subscribe(&acme, StreamFilter::default(), None, 4)
        .unwrap();
    let mut fast = herald
        .subscribe(&acme, StreamFilter::default(), None, 4)
        .unwrap();
    for n in 0..20 {
        herald.publish(&acme, event("order.created", n)).unwrap();
        assert_eq!(message(&fast.blocking_recv().unwrap())["data"]["n"], n);
    }
    for _ in 0..4 {
        slow.blocking_recv().unwrap();
    }
    assert_eq!(slow.blocking_recv().unwrap_err(), StreamEnd::Overflowed);
    herald.shutdown().unwrap();
}
