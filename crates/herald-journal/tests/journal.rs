//! Behaviour of the journal through its public API: append/replay, group
//! commit, recovery, checkpoints and retention, limits.

mod common;
use common::{replayed, segment_files, snapshot};

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_journal::{
    check, format, frame_bytes, CoveredSegments, Fault, Journal, JournalConfig, JournalError,
    KnownKinds, MissingHistory, TornTail, CHECKPOINT_VERSION, KIND_CHECKPOINT, KIND_RESERVED_MIN,
    SEGMENT_BYTES_MIN,
};

const SMALL_SEGMENT_BYTES: u64 = SEGMENT_BYTES_MIN;

fn config(dir: &Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir);
    c.segment_bytes = SMALL_SEGMENT_BYTES;
    c.group_delay_us = 200;
    c
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize * 31 + i * 7) as u8)
        .collect()
}

fn collect(journal: &Journal) -> Vec<(u64, u16, u16, Vec<u8>)> {
    journal
        .replay()
        .map(|f| {
            let f = f.unwrap();
            (f.seq, f.kind, f.version, f.payload.to_vec())
        })
        .collect()
}

#[test]
fn append_sync_reopen_replays_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.records, 0);
    assert_eq!(recovery.segments, 1);
    let mut expected = Vec::new();
    for i in 0..500u64 {
        let p = payload(i, (i % 300) as usize);
        let seq = journal.append(7, 2, &p).unwrap();
        assert_eq!(seq, i + 1);
        expected.push((seq, 7u16, 2u16, p));
    }
    assert_eq!(journal.sync().unwrap(), 500);
    assert_eq!(journal.durable_seq(), 500);
    assert!(
        journal.segment_count() > 1,
        "500 records of up to 300 bytes roll 64 KiB segments"
    );
    assert_eq!(collect(&journal), expected);
    drop(journal);

    let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.records, 500);
    assert_eq!(recovery.first_seq, Some(1));
    assert_eq!(recovery.last_seq, Some(500));
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(journal.durable_seq(), 500);
    assert_eq!(collect(&journal), expected);
}

#[test]
fn a_new_segment_is_named_only_once_everything_before_it_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // No timer or count sync: only the explicit one below.
    cfg.group_delay_us = herald_journal::GROUP_DELAY_US_MAX;
    cfg.group_records_max = herald_journal::GROUP_RECORDS_MAX_LIMIT;
    let (mut journal, _) = Journal::open(cfg).unwrap();
    let p = vec![1u8; 1000];
    while journal.segment_count() < 3 {
        journal.append(1, 1, &p).unwrap();
    }
    // After a power loss a named segment never follows a torn one, so the
    // rolled segments stay under temporary names until a sync covers the
    // segments before them.
    assert_eq!(segment_files(dir.path()).len(), 1);
    journal.sync().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 3);
    drop(journal);
    let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.segments, 3);
    assert_eq!(journal.replay().count() as u64, recovery.records);
}

#[test]
fn payloads_are_sixteen_byte_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    for len in [0usize, 1, 15, 16, 17, 100] {
        journal.append(1, 1, &vec![1u8; len]).unwrap();
    }
    for frame in journal.replay() {
        assert_eq!(frame.unwrap().payload.as_ptr() as usize % 16, 0);
    }
}

#[test]
fn group_commit_makes_records_durable_without_explicit_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    let notified = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&notified);
    journal.set_durable_notify(Box::new(move |seq| {
        seen.fetch_max(seq, Ordering::SeqCst);
    }));
    let handle = journal.durable_handle();
    let mut last = 0;
    for i in 0..10u64 {
        last = journal.append(1, 1, &payload(i, 40)).unwrap();
    }
    // Appended records are staged until committed: nothing can be durable yet.
    assert!(matches!(
        handle.wait_durable(last, Duration::from_millis(10)),
        Err(JournalError::NotAppended { .. })
    ));
    assert_eq!(journal.staged_records(), 10);
    journal.commit().unwrap();
    assert_eq!(journal.staged_records(), 0);
    // No explicit sync: the timer (group_delay_us) makes them durable.
    assert_eq!(
        handle.wait_durable(last, Duration::from_secs(10)).unwrap(),
        last
    );
    assert!(journal.durable_seq() >= last);
    // The callback runs after durable_seq is published; give it the same bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while notified.load(Ordering::SeqCst) < last && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(notified.load(Ordering::SeqCst), last);
}

/// Records committed lazily are made durable without anyone asking (within the lazy
/// delay), and a reopened journal holds them.
#[test]
fn lazily_committed_records_become_durable_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.lazy_delay_us = 20_000;
    let (mut journal, _) = Journal::open(cfg).unwrap();
    let handle = journal.durable_handle();
    let mut last = 0;
    for i in 0..5u64 {
        last = journal.append(1, 1, &payload(i, 40)).unwrap();
    }
    journal.commit_lazy().unwrap();
    assert_eq!(journal.staged_records(), 0);
    assert_eq!(
        handle.wait_durable(last, Duration::from_secs(30)).unwrap(),
        last
    );
    journal.commit().unwrap();
    drop(journal);
    let (journal, _) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(journal.last_seq(), last);
}

/// Group commit spaces syncs a group delay apart, counted from the last sync's start:
/// a record committed after a pause of a whole delay is synced at once, not a delay
/// later, and one committed just after that sync waits for the next window.
#[test]
fn a_record_after_a_pause_is_synced_at_once_and_the_next_waits_for_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.group_delay_us = herald_journal::GROUP_DELAY_US_MAX;
    let delay = Duration::from_micros(cfg.group_delay_us);
    let (mut journal, _) = Journal::open(cfg).unwrap();
    let handle = journal.durable_handle();
    std::thread::sleep(delay + Duration::from_millis(50));
    let first = journal.append(1, 1, b"after a pause").unwrap();
    let first_committed = std::time::Instant::now();
    journal.commit().unwrap();
    // Waiting a whole delay from here would run out first.
    assert_eq!(
        handle.wait_durable(first, delay * 4 / 5).unwrap(),
        first,
        "a record after a pause waited for a group delay"
    );
    let second = journal.append(1, 1, b"right after").unwrap();
    journal.commit().unwrap();
    // Its window opens a delay after the first sync started. Checked only while the
    // check ends well inside that window: a machine so loaded that the first sync and
    // the wake-up took half a delay could see the window open during the check.
    let waited = delay / 4;
    if first_committed.elapsed() + waited < delay / 2 {
        assert!(
            matches!(
                handle.wait_durable(second, waited),
                Err(JournalError::DurableTimeout { .. })
            ),
            "a sync started within a group delay of the last one"
        );
    }
    assert_eq!(handle.wait_durable(second, delay * 2).unwrap(), second);
}

#[test]
fn wait_durable_rejects_a_sequence_never_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    journal.append(1, 1, b"x").unwrap();
    journal.commit().unwrap();
    let err = journal
        .wait_durable(5, Duration::from_millis(10))
        .unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::NotAppended {
                seq: 5,
                last_seq: 1
            }
        ),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::Caller);
}

#[test]
fn limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let max = cfg.payload_bytes_max();
    assert_eq!(max, SMALL_SEGMENT_BYTES - 64 - 32);
    let (mut journal, _) = Journal::open(cfg).unwrap();
    // The largest record fits in a fresh segment, one byte more does not.
    journal.append(1, 1, &vec![9u8; max as usize]).unwrap();
    let err = journal
        .append(1, 1, &vec![9u8; max as usize + 1])
        .unwrap_err();
    assert!(
        matches!(err, JournalError::RecordTooLarge { payload_bytes, payload_bytes_max }
        if payload_bytes == max + 1 && payload_bytes_max == max)
    );
    let err = journal.append(KIND_RESERVED_MIN, 1, b"x").unwrap_err();
    assert!(matches!(err, JournalError::ReservedKind { kind } if kind == KIND_RESERVED_MIN));
    journal.sync().unwrap();
    assert_eq!(collect(&journal).len(), 1);
}

#[test]
fn config_bounds_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = fn(&mut JournalConfig);
    let cases: [(Edit, &str); 9] = [
        (
            |c| c.segment_bytes = SEGMENT_BYTES_MIN - 4096,
            "segment_bytes",
        ),
        (
            |c| c.segment_bytes = herald_journal::SEGMENT_BYTES_MAX + 4096,
            "segment_bytes",
        ),
        (|c| c.segment_bytes = SEGMENT_BYTES_MIN + 1, "segment_bytes"),
        (|c| c.group_records_max = 0, "group_records_max"),
        (
            |c| c.group_records_max = herald_journal::GROUP_RECORDS_MAX_LIMIT + 1,
            "group_records_max",
        ),
        (
            |c| c.group_delay_us = herald_journal::GROUP_DELAY_US_MAX + 1,
            "group_delay_us",
        ),
        (
            |c| c.lazy_delay_us = herald_journal::GROUP_DELAY_US_MAX + 1,
            "lazy_delay_us",
        ),
        (|c| c.segments_max = 1, "segments_max"),
        (
            |c| c.segments_max = herald_journal::SEGMENTS_MAX_LIMIT + 1,
            "segments_max",
        ),
    ];
    for (edit, expected) in cases {
        let mut c = config(dir.path());
        edit(&mut c);
        match Journal::open(c) {
            Err(JournalError::InvalidConfig { field, .. }) => assert_eq!(field, expected),
            other => panic!("expected InvalidConfig({expected}), got {other:?}"),
        }
    }
}

#[test]
fn a_second_handle_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_journal, _) = Journal::open(config(dir.path())).unwrap();
    let err = Journal::open(config(dir.path())).unwrap_err();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
}

/// A lock let go a moment ago may still be held for that moment (by a child process
/// another thread was starting as the journal closed, which holds a copy of the lock's
/// file description until it runs its program): open and the in-use probe wait for it
/// to be let go rather than refuse at once. Here a second description of the lock file,
/// locked and let go 50 ms later, stands for that child.
#[test]
fn a_lock_held_for_a_moment_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(config(dir.path())).unwrap());
    let lock_path = dir.path().join("journal.lock");
    let hold = || {
        let lock = fs::File::open(&lock_path).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(lock);
        })
    };
    let holder = hold();
    assert!(!herald_journal::in_use(dir.path()).unwrap());
    holder.join().unwrap();
    let holder = hold();
    let (journal, _) = Journal::open(config(dir.path())).unwrap();
    holder.join().unwrap();
    assert!(
        herald_journal::in_use(dir.path()).unwrap(),
        "held by the journal"
    );
    drop(journal);
}

#[test]
fn unknown_kinds_are_named_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    journal.append(1, 1, b"a").unwrap();
    journal.append(1, 2, b"b").unwrap();
    journal.append(9, 1, b"c").unwrap();
    let known = KnownKinds::new().with(1, 2).with(9, 1);
    assert_eq!(
        journal.replay_known(&known).filter(Result::is_ok).count(),
        3
    );

    let cases = [
        (KnownKinds::new().with(1, 2), (3u64, 9u16, 1u16)),
        (KnownKinds::new().with(1, 1).with(9, 1), (2, 1, 2)),
    ];
    for (known, (seq, kind, version)) in cases {
        let results: Vec<_> = journal.replay_known(&known).collect();
        let last = results.last().unwrap();
        match last {
            Err(JournalError::UnknownKind {
                seq: s,
                kind: k,
                version: v,
            }) => {
                assert_eq!((*s, *k, *v), (seq, kind, version))
            }
            other => panic!("expected UnknownKind, got {other:?}"),
        }
        assert_eq!(
            results.len() as u64,
            seq,
            "replay stops at the unknown kind"
        );
    }
}

#[test]
fn checkpoint_starts_replay_and_bounds_disk_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segments_max = 1024;
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    let mut segments_seen_max = 0;
    let mut last_checkpoint = 0;
    // Steady load, ~40 segments' worth of records: publishers wait for
    // durability every 50 records, a checkpoint every 300 (~2 segments).
    for i in 0..6000u64 {
        journal.append(1, 1, &payload(i, 400)).unwrap();
        if i % 50 == 49 {
            journal.sync().unwrap();
        }
        if i % 300 == 299 {
            last_checkpoint = journal.checkpoint(&i.to_le_bytes()).unwrap();
        }
        segments_seen_max = segments_seen_max.max(segment_files(dir.path()).len());
    }
    // Retention on roll alone keeps it to the checkpoint's segment and the
    // ones after it: far below segments_max.
    assert!(
        segments_seen_max <= 5,
        "disk use bounded: saw {segments_seen_max} segments"
    );
    journal.sync().unwrap();
    journal.compact().unwrap();
    let frames = collect(&journal);
    assert_eq!(frames[0].0, last_checkpoint);
    assert_eq!(frames[0].1, KIND_CHECKPOINT);
    assert_eq!(frames[0].3, 5999u64.to_le_bytes());
    // The checkpoint's one part is returned; its end marker is not.
    assert_eq!(frames.len(), 1);
    assert_eq!(journal.last_seq(), last_checkpoint + 1);
    drop(journal);

    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.checkpoint_seq, Some(last_checkpoint));
    assert_eq!(
        journal.replay().next().unwrap().unwrap().seq,
        last_checkpoint
    );
    assert!(recovery.first_seq.unwrap() > 1, "old segments were deleted");
}

/// A checkpoint larger than a segment is written as parts over several segments;
/// after a reopen replay returns every part in order, then the records after it, and
/// the segments before its first part go.
#[test]
fn a_checkpoint_larger_than_a_segment_spans_segments_and_recovers_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    for i in 0..300u64 {
        journal.append(1, 1, &payload(i, 400)).unwrap();
    }
    let part_bytes = 20_000;
    // Six parts of 20 KB: about twice a 64 KiB segment.
    let parts: Vec<Vec<u8>> = (0..6u64).map(|i| payload(1000 + i, part_bytes)).collect();
    let too_large = vec![0u8; journal.checkpoint_part_bytes_max() as usize + 1];
    let mut writer = journal.begin_checkpoint();
    assert!(matches!(
        writer.part(&too_large),
        Err(JournalError::RecordTooLarge { .. })
    ));
    for part in &parts {
        writer.part(part).unwrap();
    }
    assert_eq!(writer.parts(), 6);
    let first = writer.finish().unwrap();
    let after = journal.append(1, 1, b"after").unwrap();
    assert_eq!(after, first + 7, "six parts and the end marker");
    journal.sync().unwrap();
    journal.compact().unwrap();
    drop(journal);

    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.checkpoint_seq, Some(first));
    assert!(recovery.segments >= 2, "the checkpoint spans segments");
    let frames = collect(&journal);
    assert_eq!(frames.len(), 7);
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(frames[i].0, first + i as u64);
        assert_eq!(frames[i].1, KIND_CHECKPOINT);
        assert_eq!(&frames[i].3, part);
    }
    assert_eq!(frames[6].0, after);
    assert_eq!(frames[6].3, b"after");
    assert!(
        recovery.first_seq.unwrap() > 1,
        "segments before the checkpoint were deleted"
    );
    // check agrees with recovery across the segment boundary.
    drop(journal);
    assert_eq!(check(dir.path()).unwrap().checkpoint_seq, Some(first));
}

/// A crash part way through a checkpoint (parts durable, no end marker) leaves the
/// previous checkpoint where replay starts, and its segments are kept.
#[test]
fn a_checkpoint_cut_short_is_ignored_and_the_previous_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    journal.append(1, 1, b"before").unwrap();
    let previous = journal.checkpoint(b"previous state").unwrap();
    let record = journal.append(1, 1, b"after the previous").unwrap();
    let mut writer = journal.begin_checkpoint();
    for i in 0..5u64 {
        writer.part(&payload(i, 20_000)).unwrap();
    }
    // The process dies here: the parts are on disk, the end marker never is.
    drop(writer);
    journal.sync().unwrap();
    drop(journal);

    let (mut journal, recovery) = Journal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.checkpoint_seq, Some(previous));
    let frames = collect(&journal);
    assert_eq!(
        frames,
        vec![
            (
                previous,
                KIND_CHECKPOINT,
                CHECKPOINT_VERSION,
                b"previous state".to_vec()
            ),
            (record, 1, 1, b"after the previous".to_vec()),
        ]
    );
    // Writing goes on after the abandoned parts; the next complete checkpoint counts.
    let next = journal.checkpoint(b"next state").unwrap();
    journal.sync().unwrap();
    drop(journal);
    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.checkpoint_seq, Some(next));
    assert_eq!(collect(&journal).len(), 1);
}

#[test]
fn at_segments_max_a_pending_checkpoint_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segments_max = 3;
    cfg.group_delay_us = herald_journal::GROUP_DELAY_US_MAX;
    cfg.group_records_max = herald_journal::GROUP_RECORDS_MAX_LIMIT;
    let (mut journal, _) = Journal::open(cfg).unwrap();
    // Never synced explicitly: reaching the limit must sync the checkpoint
    // and delete what it covers instead of failing.
    for i in 0..2000u64 {
        journal.append(1, 1, &payload(i, 400)).unwrap();
        if i % 100 == 99 {
            journal.checkpoint(b"c").unwrap();
        }
    }
    assert!(journal.segment_count() <= 3);
}

#[test]
fn without_checkpoints_segments_max_stops_appends_until_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segments_max = 2;
    let (mut journal, _) = Journal::open(cfg).unwrap();
    let p = vec![3u8; 1000];
    let err = loop {
        match journal.append(1, 1, &p) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, JournalError::SegmentsExhausted { segments_max: 2 }),
        "{err}"
    );
    let acknowledged = journal.last_seq();
    // A durable checkpoint lets the first segment go; appends resume.
    journal
        .checkpoint(b"state")
        .unwrap_or_else(|e| panic!("checkpoint: {e}"));
    journal.sync().unwrap();
    journal.append(1, 1, &p).unwrap();
    // The checkpoint's part and end marker, then the record.
    assert_eq!(journal.last_seq(), acknowledged + 3);
}

/// Fills a journal of `segments_max` 3 (after a first checkpoint) until an ordinary
/// append is refused at the limit; returns the journal and the records appended.
fn journal_at_segments_max(dir: &Path) -> (Journal, Vec<(u64, Vec<u8>)>) {
    let mut cfg = config(dir);
    cfg.segments_max = 3;
    let (mut journal, _) = Journal::open(cfg).unwrap();
    journal.checkpoint(b"old state").unwrap();
    let mut records = Vec::new();
    for i in 0.. {
        let p = payload(i, 1000);
        match journal.append(1, 1, &p) {
            Ok(seq) => records.push((seq, p)),
            Err(JournalError::SegmentsExhausted { segments_max: 3 }) => break,
            Err(e) => panic!("append {i}: {e}"),
        }
    }
    journal.sync().unwrap();
    assert_eq!(journal.segment_count(), 3);
    (journal, records)
}

/// Writes a checkpoint of `parts` parts of 4000 bytes; `finish` or drop it.
fn big_checkpoint_parts(
    journal: &mut Journal,
    parts: u64,
    finish: bool,
) -> Result<(), JournalError> {
    let mut writer = journal.begin_checkpoint();
    for i in 0..parts {
        writer.part(&payload(i, 4000))?;
    }
    if finish {
        writer.finish()?;
    }
    Ok(())
}

#[test]
fn at_segments_max_a_checkpoint_spanning_rolls_completes_and_frees_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = journal_at_segments_max(dir.path());
    // About 2.5 segments of checkpoint: it must roll past the limit twice.
    big_checkpoint_parts(&mut journal, 40, true).unwrap();
    assert!(journal.segment_count() > 3, "{}", journal.segment_count());
    let checkpoint_seq = journal.checkpoint_seq().unwrap();
    // Ordinary records still respect the limit until the checkpoint is durable
    // and compaction ran; a roll does both.
    journal.sync().unwrap();
    let freed = journal.compact().unwrap();
    assert!(freed.segments_deleted >= 2, "{freed:?}");
    assert!(journal.segment_count() <= 3, "{}", journal.segment_count());
    // Ordinary appends work again, until the limit counts the new checkpoint's segments.
    let mut appended = 0;
    while journal.append(1, 1, &payload(appended, 1000)).is_ok() {
        appended += 1;
    }
    assert!(appended >= 10, "{appended}");
    assert_eq!(journal.segment_count(), 3);
    // Replay starts at the new checkpoint: its 40 parts, then the new records.
    let frames = collect(&journal);
    assert_eq!(frames.len() as u64, 40 + appended);
    assert!(frames[..40].iter().all(|f| f.1 == KIND_CHECKPOINT));
    assert_eq!(frames[0].0, checkpoint_seq);
    assert_eq!(frames[39].3, payload(39, 4000));
}

#[test]
fn a_checkpoint_past_segments_max_is_bounded_to_twice_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = journal_at_segments_max(dir.path());
    // 100 parts of 4000 bytes are about six segments: more than 3 extra.
    let err = big_checkpoint_parts(&mut journal, 100, true).unwrap_err();
    assert!(
        matches!(err, JournalError::SegmentsExhausted { segments_max: 3 }),
        "{err}"
    );
    assert_eq!(
        journal.segment_count(),
        3 * (1 + herald_journal::CHECKPOINT_SEGMENTS_EXTRA_FACTOR)
    );
}

#[test]
fn a_crash_mid_checkpoint_past_segments_max_recovers_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, records) = journal_at_segments_max(dir.path());
    let old_checkpoint = journal.checkpoint_seq().unwrap();
    // The writer is dropped unfinished: a crash part way through.
    big_checkpoint_parts(&mut journal, 40, false).unwrap();
    assert!(journal.segment_count() > 3);
    drop(journal);

    let mut cfg = config(dir.path());
    cfg.segments_max = 3;
    let (mut journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.checkpoint_seq, Some(old_checkpoint));
    // Replay: the old checkpoint's part, then every record; the unfinished parts are skipped.
    let frames = collect(&journal);
    assert_eq!(frames.len(), 1 + records.len());
    assert_eq!(frames[0].3, b"old state");
    for (frame, (seq, p)) in frames[1..].iter().zip(&records) {
        assert_eq!((frame.0, &frame.3), (*seq, p));
    }
    // Past the limit ordinary appends are refused; a checkpoint still completes,
    // and once durable it frees the segments.
    let err = journal.append(1, 1, &vec![0; 60_000]).unwrap_err();
    assert!(
        matches!(err, JournalError::SegmentsExhausted { .. }),
        "{err}"
    );
    journal.checkpoint(b"new state").unwrap();
    journal.sync().unwrap();
    journal.compact().unwrap();
    assert!(journal.segment_count() <= 3, "{}", journal.segment_count());
    journal.append(1, 1, &payload(0, 1000)).unwrap();
}

#[test]
fn check_reports_a_sound_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    for i in 0..200u64 {
        journal.append(1, 1, &payload(i, 500)).unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    let report = check(dir.path()).unwrap();
    assert!(report.is_sound());
    assert_eq!(report.records, 200);
    assert_eq!(report.first_seq, Some(1));
    assert_eq!(report.last_seq, Some(200));
    assert_eq!(report.bytes, 200 * frame_bytes(500));
    assert_eq!(report.segments.len(), segment_files(dir.path()).len());
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        kind: u16,
        version: u16,
        len: usize,
    },
    /// Records enough to roll a segment or more (so compaction runs while a
    /// checkpoint is open, or between what it covers and its first part).
    Burst {
        records: usize,
    },
    /// A checkpoint written with the journal held (`begin_checkpoint`).
    Checkpoint {
        len: usize,
        parts: usize,
    },
    /// A checkpoint whose writer stops before its end marker (a failed write).
    Abandoned {
        parts: usize,
    },
    /// Opens a checkpoint written across appends (abandoning one still open).
    Open,
    /// The next part of the open checkpoint; with none open, a part of the latest
    /// abandoned handle, which must be refused.
    Part {
        len: usize,
    },
    /// Ends the open checkpoint.
    Finish,
    Sync,
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        8 => (0u16..4, 0u16..3, 0usize..3000).prop_map(|(kind, version, len)| Op::Append { kind, version, len }),
        1 => (10usize..40).prop_map(|records| Op::Burst { records }),
        1 => (0usize..64, 1usize..4).prop_map(|(len, parts)| Op::Checkpoint { len, parts }),
        1 => (0usize..3).prop_map(|parts| Op::Abandoned { parts }),
        1 => Just(Op::Open),
        2 => (0usize..5000).prop_map(|len| Op::Part { len }),
        1 => Just(Op::Finish),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

/// A checkpoint of the model: what it covers and its parts (seq, payload).
#[derive(Debug, Clone, Default)]
struct ModelCheckpoint {
    covers: u64,
    parts: Vec<(u64, Vec<u8>)>,
}

impl ModelCheckpoint {
    /// What replay returns with this checkpoint: its parts, then the records after
    /// what it covers.
    fn replay(&self, records: &[(u64, u16, u16, Vec<u8>)]) -> Vec<(u64, u16, u16, Vec<u8>)> {
        self.parts
            .iter()
            .map(|(seq, p)| (*seq, KIND_CHECKPOINT, CHECKPOINT_VERSION, p.clone()))
            .chain(records.iter().filter(|r| r.0 > self.covers).cloned())
            .collect()
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Whatever the mix of appends, checkpoints (written with the journal held, written
    /// across appends with records between their parts, or abandoned part way), syncs
    /// and reopens, replay returns exactly the latest complete checkpoint's parts and
    /// the records after what it covers; compaction on roll never loses one of them.
    #[test]
    fn append_replay_round_trip(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" }).unwrap();
        let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
        // The model: every ordinary record, the latest complete checkpoint, the one
        // open across appends, and the latest abandoned handle.
        let mut records: Vec<(u64, u16, u16, Vec<u8>)> = Vec::new();
        let mut complete: Option<ModelCheckpoint> = None;
        let mut open: Option<(herald_journal::CheckpointHandle, ModelCheckpoint)> = None;
        let mut abandoned: Option<herald_journal::CheckpointHandle> = None;
        let mut next_seq = 1u64;
        for op in ops {
            match op {
                Op::Append { kind, version, len } => {
                    let seq = next_seq;
                    let p = payload(seq, len);
                    proptest::prop_assert_eq!(journal.append(kind, version, &p).unwrap(), seq);
                    records.push((seq, kind, version, p));
                    next_seq += 1;
                }
                Op::Burst { records: count } => {
                    for _ in 0..count {
                        let p = payload(next_seq, 2500);
                        proptest::prop_assert_eq!(journal.append(3, 1, &p).unwrap(), next_seq);
                        records.push((next_seq, 3, 1, p));
                        next_seq += 1;
                    }
                }
                Op::Checkpoint { len, parts } => {
                    abandoned = open.take().map(|(handle, _)| handle).or(abandoned);
                    let first = next_seq;
                    let mut writer = journal.begin_checkpoint();
                    let mut model = ModelCheckpoint { covers: first - 1, parts: Vec::new() };
                    for i in 0..parts as u64 {
                        let p = payload(first + i, len);
                        writer.part(&p).unwrap();
                        model.parts.push((first + i, p));
                    }
                    proptest::prop_assert_eq!(writer.finish().unwrap(), first);
                    complete = Some(model);
                    next_seq += parts as u64 + 1;
                }
                Op::Abandoned { parts } => {
                    abandoned = open.take().map(|(handle, _)| handle).or(abandoned);
                    let mut writer = journal.begin_checkpoint();
                    for i in 0..parts as u64 {
                        writer.part(&payload(next_seq + i, 8)).unwrap();
                    }
                    drop(writer);
                    next_seq += parts as u64;
                }
                Op::Open => {
                    abandoned = open.take().map(|(handle, _)| handle).or(abandoned);
                    let handle = journal.open_checkpoint();
                    proptest::prop_assert_eq!(handle.covers_seq(), next_seq - 1);
                    let covers = next_seq - 1;
                    open = Some((handle, ModelCheckpoint { covers, parts: Vec::new() }));
                }
                Op::Part { len } => match (open.as_mut(), abandoned.as_mut()) {
                    (Some((handle, model)), _) => {
                        let p = payload(next_seq, len);
                        let at = journal.checkpoint_part(handle, &p).unwrap();
                        proptest::prop_assert_eq!(journal.bytes_at(at, len), Some(&p[..]));
                        model.parts.push((next_seq, p));
                        next_seq += 1;
                    }
                    (None, Some(handle)) => {
                        let refused = journal.checkpoint_part(handle, b"late");
                        proptest::prop_assert!(
                            matches!(refused, Err(JournalError::CheckpointAbandoned { .. })),
                            "{:?}", refused
                        );
                        proptest::prop_assert_eq!(journal.last_seq(), next_seq - 1);
                    }
                    (None, None) => {}
                },
                Op::Finish => {
                    if let Some((handle, mut model)) = open.take() {
                        if model.parts.is_empty() {
                            // A checkpoint with no part gets one empty part.
                            model.parts.push((next_seq, Vec::new()));
                            next_seq += 1;
                        }
                        proptest::prop_assert_eq!(
                            journal.finish_checkpoint(handle).unwrap(),
                            model.parts[0].0
                        );
                        next_seq += 1;
                        complete = Some(model);
                    }
                }
                Op::Sync => {
                    proptest::prop_assert_eq!(journal.sync().unwrap(), next_seq - 1);
                }
                Op::Reopen => {
                    // A handle of the journal before the reopen is abandoned.
                    abandoned = open.take().map(|(handle, _)| handle).or(abandoned);
                    drop(journal);
                    let (reopened, recovery) = Journal::open(config(dir.path())).unwrap();
                    proptest::prop_assert_eq!(recovery.torn_tail, None);
                    proptest::prop_assert_eq!(recovery.last_seq.unwrap_or(0), next_seq - 1);
                    proptest::prop_assert_eq!(
                        recovery.checkpoint_seq,
                        complete.as_ref().map(|c| c.parts[0].0)
                    );
                    proptest::prop_assert_eq!(
                        recovery.checkpoint_covers_seq,
                        complete.as_ref().map(|c| c.covers)
                    );
                    journal = reopened;
                }
            }
            let expected = match &complete {
                Some(checkpoint) => checkpoint.replay(&records),
                None => records.clone(),
            };
            proptest::prop_assert_eq!(collect(&journal), expected);
        }
    }
}

#[test]
fn handles_cross_threads() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    // A shard may open its journal and then move it to its own thread; foreign
    // threads wait on a DurableHandle.
    assert_send::<Journal>();
    assert_send_sync::<herald_journal::DurableHandle>();
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    let seq = journal.append(1, 1, b"x").unwrap();
    journal.commit().unwrap();
    let handle = journal.durable_handle();
    let waiter = std::thread::spawn(move || handle.wait_durable(seq, Duration::from_secs(30)));
    let mut journal = std::thread::spawn(move || {
        journal.sync().unwrap();
        journal
    })
    .join()
    .unwrap();
    assert!(waiter.join().unwrap().unwrap() >= seq);
    assert_eq!(journal.append(1, 1, b"y").unwrap(), seq + 1);
}

#[test]
fn the_durable_notify_runs_without_journal_locks_held() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    let handle = journal.durable_handle();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    // Waiting on durability from inside the callback would deadlock if the
    // callback ran under the sync thread's locks.
    journal.set_durable_notify(Box::new(move |seq| {
        let waited = handle.wait_durable(seq, Duration::from_secs(5));
        let _ = tx
            .lock()
            .unwrap()
            .send((seq, waited.map_err(|e| e.to_string())));
    }));
    let seq = journal.append(1, 1, b"x").unwrap();
    assert_eq!(journal.sync().unwrap(), seq);
    let (notified, waited) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(notified, seq);
    assert_eq!(waited, Ok(seq));
    // And appends proceed while callbacks run.
    for _ in 0..100 {
        journal.append(1, 1, b"y").unwrap();
    }
    assert_eq!(journal.sync().unwrap(), seq + 100);
    journal.clear_durable_notify();
}

#[test]
fn staged_records_reach_the_file_on_commit_on_overflow_and_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    let first = journal.append(1, 1, &payload(1, 100)).unwrap();
    // Replay reads a staged record from memory.
    assert_eq!(collect(&journal).len(), 1);
    journal.commit().unwrap();
    assert_eq!(collect(&journal).len(), 1);
    // More than the staging buffer holds goes out without a commit, whole frames
    // at a time, across a roll of these small segments.
    let big = herald_journal::STAGED_BYTES_MAX / 1000 + 300;
    let mut expected = vec![(first, payload(1, 100))];
    for i in 0..big as u64 {
        let p = payload(i, 1000);
        expected.push((journal.append(1, 1, &p).unwrap(), p));
    }
    assert!(journal.staged_records() < big as u64);
    assert_eq!(collect(&journal).len(), expected.len());
    // Dropping the journal commits (and syncs) what is staged.
    drop(journal);
    let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert!(recovery.torn_tail.is_none());
    let replayed = replayed(&journal);
    assert_eq!(replayed, expected);
}

/// A commit larger than [`herald_journal::WRITE_PIECE_BYTES`] goes to the file in pieces
/// that end on multiples of it; every byte lands where its frame belongs, from a start
/// that is not a piece boundary, across an overflow of the staging buffer and over
/// several pieces in one commit.
#[test]
fn a_commit_written_in_pieces_replays_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 4 * 1024 * 1024;
    let piece = herald_journal::WRITE_PIECE_BYTES as usize;
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    let mut expected = Vec::new();
    // One small committed record, so the big commit starts off a piece boundary.
    let p = payload(0, 333);
    expected.push((journal.append(3, 1, &p).unwrap(), p));
    journal.commit().unwrap();
    // Then more than the staging buffer holds, in odd sizes, committed at once.
    let mut staged_bytes = 0;
    let mut i = 1u64;
    while staged_bytes < herald_journal::STAGED_BYTES_MAX + 3 * piece {
        let p = payload(i, 1 + (i as usize * 977) % 5000);
        staged_bytes += frame_bytes(p.len() as u64) as usize;
        expected.push((journal.append(3, 1, &p).unwrap(), p));
        i += 1;
    }
    journal.commit().unwrap();
    journal.sync().unwrap();
    assert_eq!(
        journal.segment_count(),
        1,
        "one segment holds the whole test"
    );
    let read = replayed(&journal);
    assert_eq!(read, expected);
    drop(journal);
    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert!(recovery.torn_tail.is_none());
    assert_eq!(recovery.records, expected.len() as u64);
    let replayed = replayed(&journal);
    assert_eq!(replayed, expected);
}

/// A payload's position, from `append_placed`, a checkpoint part or replay, reads its
/// bytes back through the mapping: staged, written, after a reopen, and through a
/// detached reader after its segment is compacted away; a journal that no longer holds
/// the segment says so.
#[test]
fn positions_read_payloads_back_until_their_segment_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    let mut placed = Vec::new();
    for i in 0..400u64 {
        let bytes = payload(i, 300 + (i as usize % 50));
        let (seq, at) = journal.append_placed(1, 1, &bytes).unwrap();
        // Staged (not yet written): read from the staging buffer, not held through the
        // mapping (which does not see it yet).
        assert_eq!(journal.bytes_at(at, bytes.len()).unwrap(), &bytes[..]);
        assert!(journal.mapped(at, bytes.len()).is_none());
        assert!(journal.mapped_segment(at, bytes.len()).is_none());
        assert!(!journal.is_written(at, bytes.len()));
        placed.push((seq, at, bytes));
    }
    journal.sync().unwrap();
    assert!(journal.segment_count() > 1, "the records span segments");
    assert_eq!(journal.first_seq(), 1);
    for (_, at, bytes) in &placed {
        assert_eq!(journal.bytes_at(*at, bytes.len()).unwrap(), &bytes[..]);
        assert_eq!(
            journal.mapped(*at, bytes.len()).unwrap().bytes(),
            &bytes[..]
        );
        // A slice inside the payload.
        assert_eq!(journal.bytes_at(at.after(7), 20).unwrap(), &bytes[7..27]);
        // The whole segment's mapping holds the payload at its offset.
        assert!(journal.is_written(*at, bytes.len()));
        let whole = journal.mapped_segment(*at, bytes.len()).unwrap();
        let offset = at.offset as usize;
        assert_eq!(&whole.bytes()[offset..offset + bytes.len()], &bytes[..]);
        assert_eq!(whole.bytes().len() as u64, cfg.segment_bytes);
    }
    // Replay names the same positions.
    for (frame, (seq, at, bytes)) in journal.replay().zip(&placed) {
        let frame = frame.unwrap();
        assert_eq!((frame.seq, frame.position), (*seq, *at));
        assert_eq!(frame.payload, &bytes[..]);
    }
    // Nothing past what was appended, nothing in a segment that does not exist.
    let (_, last_at, last) = placed.last().unwrap();
    assert!(journal.bytes_at(*last_at, last.len() + 16).is_none());
    let mut missing = *last_at;
    missing.segment += 1_000_000;
    assert!(journal.bytes_at(missing, 1).is_none());

    let reader = journal.reader();
    let held = journal.mapped(placed[0].1, placed[0].2.len()).unwrap();
    let part = payload(9, 5000);
    let mut writer = journal.begin_checkpoint();
    let part_at = writer.part(&part).unwrap();
    writer.finish().unwrap();
    journal.sync().unwrap();
    assert_eq!(journal.bytes_at(part_at, part.len()).unwrap(), &part[..]);
    // Fill past the checkpoint's segment so compaction deletes the older ones.
    for i in 0..400u64 {
        journal.append(1, 1, &payload(i, 300)).unwrap();
    }
    journal.sync().unwrap();
    journal.compact().unwrap();
    let (_, first_at, first) = &placed[0];
    assert!(
        journal.bytes_at(*first_at, first.len()).is_none(),
        "the first segment was compacted away"
    );
    assert!(journal.mapped(*first_at, first.len()).is_none());
    assert!(journal.mapped_segment(*first_at, first.len()).is_none());
    assert!(!journal.is_written(*first_at, first.len()));
    assert!(
        journal.first_seq() > placed[0].0,
        "it holds frames from a later one"
    );
    // The reader made before still reads it, and so do bytes held before.
    assert_eq!(reader.bytes_at(*first_at, first.len()).unwrap(), &first[..]);
    assert_eq!(held.bytes(), &first[..]);
    // The last hold of the deleted segment is unmapped off this thread (the spare thread
    // gives it back once it is let go), not here.
    drop(reader);
    let unmapped = herald_journal::unmapped_elsewhere();
    drop(held);
    let waited = std::time::Instant::now();
    while herald_journal::unmapped_elsewhere() == unmapped {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "the segment was not unmapped elsewhere"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(journal.bytes_at(part_at, part.len()).unwrap(), &part[..]);
    drop(journal);

    // After a reopen replay starts at the checkpoint, whose part sits where it was.
    let (journal, _) = Journal::open(cfg).unwrap();
    let frame = journal.replay().next().unwrap().unwrap();
    assert_eq!(frame.position, part_at);
    assert_eq!(journal.bytes_at(part_at, part.len()).unwrap(), &part[..]);
}

/// Replay as (seq, kind, payload), checking that each frame's position reads its
/// payload back.
fn replayed_at(journal: &Journal) -> Vec<(u64, u16, Vec<u8>)> {
    journal
        .replay()
        .map(|f| {
            let f = f.unwrap();
            assert_eq!(
                journal.bytes_at(f.position, f.payload.len()),
                Some(f.payload),
                "frame {} reads back at its position",
                f.seq
            );
            (f.seq, f.kind, f.payload.to_vec())
        })
        .collect()
}

/// A checkpoint written across other appends, rolling segments between its parts:
/// replay returns its parts, then exactly the records after what it covers (those
/// appended after it was opened, before its first part included), in order, live and
/// after a reopen, each at its position.
#[test]
fn parts_interleaved_with_records_across_a_roll_replay_parts_then_records_after_covers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    let mut records = Vec::new();
    for i in 0..20u64 {
        let p = payload(i, 400);
        records.push((journal.append(1, 1, &p).unwrap(), 1, p));
    }
    let mut handle = journal.open_checkpoint();
    let covers = handle.covers_seq();
    assert_eq!(covers, journal.last_seq());
    // Appended after the checkpoint was opened, before its first part: not in it.
    for i in 0..5u64 {
        let p = payload(100 + i, 400);
        records.push((journal.append(1, 1, &p).unwrap(), 1, p));
    }
    let mut parts = Vec::new();
    for i in 0..6u64 {
        let part = payload(1000 + i, 8000);
        let at = journal.checkpoint_part(&mut handle, &part).unwrap();
        assert_eq!(journal.bytes_at(at, part.len()), Some(&part[..]));
        parts.push(part);
        for j in 0..10u64 {
            let p = payload(200 + i * 10 + j, 600);
            records.push((journal.append(2, 1, &p).unwrap(), 2, p));
        }
    }
    assert_eq!(handle.parts(), 6);
    let first = handle.first_seq().unwrap();
    assert_eq!(first, covers + 6, "the first part follows the five records");
    assert_eq!(journal.finish_checkpoint(handle).unwrap(), first);
    for i in 0..3u64 {
        let p = payload(900 + i, 100);
        records.push((journal.append(1, 1, &p).unwrap(), 1, p));
    }
    assert!(journal.segment_count() >= 2, "the checkpoint spans a roll");
    assert_eq!(journal.checkpoint_seq(), Some(first));
    assert_eq!(journal.checkpoint_covers_seq(), Some(covers));

    let expected: Vec<(u64, u16, Vec<u8>)> = {
        let mut parts_seen = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            // Part i follows part i - 1 and its ten records.
            parts_seen.push((first + 11 * i as u64, KIND_CHECKPOINT, part.clone()));
        }
        parts_seen
            .into_iter()
            .chain(
                records
                    .iter()
                    .filter(|(seq, _, _)| *seq > covers)
                    .map(|(seq, kind, p)| (*seq, *kind, p.clone())),
            )
            .collect()
    };
    assert_eq!(expected.len(), 6 + 5 + 60 + 3);
    assert_eq!(replayed_at(&journal), expected);
    journal.sync().unwrap();
    drop(journal);

    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.checkpoint_seq, Some(first));
    assert_eq!(recovery.checkpoint_covers_seq, Some(covers));
    assert_eq!(replayed_at(&journal), expected);
    drop(journal);
    let report = check(dir.path()).unwrap();
    assert_eq!(
        (report.checkpoint_seq, report.checkpoint_covers_seq),
        (Some(first), Some(covers))
    );
}

/// The last segment's written end, from `check`.
fn written_end(dir: &Path) -> (PathBuf, u64) {
    let report = check(dir).unwrap();
    let last = report.segments.last().unwrap();
    (last.path.clone(), 64 + last.bytes)
}

/// A crash that tears the end marker, or the last part before any end marker was
/// written, leaves the previous checkpoint in force: replay starts from it and returns
/// every record it does not cover, the interleaved ones included.
#[test]
fn a_crash_between_parts_leaves_the_previous_checkpoint_in_force() {
    for tear_end_marker in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
        journal.append(1, 1, b"covered by the previous").unwrap();
        let previous = journal.checkpoint(b"previous state").unwrap();
        let mut records = Vec::new();
        for i in 0..3u64 {
            let p = payload(i, 300);
            records.push((journal.append(1, 1, &p).unwrap(), p));
        }
        let mut handle = journal.open_checkpoint();
        for i in 0..4u64 {
            journal
                .checkpoint_part(&mut handle, &payload(50 + i, 9000))
                .unwrap();
            let p = payload(10 + i, 300);
            records.push((journal.append(1, 1, &p).unwrap(), p));
        }
        // The frame the crash tears: the end marker, or a last part with nothing after it.
        let torn_bytes = if tear_end_marker {
            journal.finish_checkpoint(handle).unwrap();
            frame_bytes(32)
        } else {
            journal
                .checkpoint_part(&mut handle, &payload(99, 500))
                .unwrap();
            drop(handle);
            frame_bytes(32 + 500)
        };
        let last = journal.sync().unwrap();
        drop(journal);
        let (segment, end) = written_end(dir.path());
        let mut bytes = fs::read(&segment).unwrap();
        // Half of the last frame reached the disk, and its sync never completed.
        bytes[(end - torn_bytes / 2) as usize..end as usize].fill(0);
        fs::write(&segment, &bytes).unwrap();
        set_durable_mark(dir.path(), last - 1);

        let (journal, recovery) = Journal::open(cfg).unwrap();
        assert!(
            recovery.torn_tail.is_some(),
            "tear end marker {tear_end_marker}"
        );
        assert_eq!(recovery.checkpoint_seq, Some(previous));
        assert_eq!(recovery.checkpoint_covers_seq, Some(previous - 1));
        let expected: Vec<(u64, u16, Vec<u8>)> =
            std::iter::once((previous, KIND_CHECKPOINT, b"previous state".to_vec()))
                .chain(records.iter().map(|(seq, p)| (*seq, 1, p.clone())))
                .collect();
        assert_eq!(
            replayed_at(&journal),
            expected,
            "tear end marker {tear_end_marker}"
        );
    }
}

/// Opening a checkpoint abandons the one open before: its later parts and its end
/// marker are refused and write nothing; the new one completes. A dropped handle, and
/// a handle of another journal, are abandoned too.
#[test]
fn an_abandoned_checkpoint_is_refused_and_a_new_one_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    journal.append(1, 1, b"one").unwrap();
    let mut abandoned = journal.open_checkpoint();
    journal
        .checkpoint_part(&mut abandoned, b"abandoned part")
        .unwrap();
    let between = journal.append(1, 1, b"two").unwrap();
    let mut current = journal.open_checkpoint();
    assert_eq!(current.covers_seq(), between);
    let last = journal.last_seq();
    let err = journal
        .checkpoint_part(&mut abandoned, b"late part")
        .unwrap_err();
    assert!(
        matches!(err, JournalError::CheckpointAbandoned { covers_seq: 1 }),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::Caller);
    assert_eq!(journal.last_seq(), last, "nothing written");
    journal
        .checkpoint_part(&mut current, b"current part")
        .unwrap();
    let after = journal.append(1, 1, b"three").unwrap();
    let err = journal.finish_checkpoint(abandoned).unwrap_err();
    assert!(
        matches!(err, JournalError::CheckpointAbandoned { .. }),
        "{err}"
    );
    assert_eq!(
        journal.last_seq(),
        after,
        "no end marker for the abandoned one"
    );
    let first = journal.finish_checkpoint(current).unwrap();
    assert_eq!(first, after - 1);
    let expected = vec![
        (first, KIND_CHECKPOINT, b"current part".to_vec()),
        (after, 1, b"three".to_vec()),
    ];
    assert_eq!(replayed_at(&journal), expected);

    // A handle of another journal is never this journal's open checkpoint.
    let other_dir = tempfile::tempdir().unwrap();
    let (mut other, _) = Journal::open(config(other_dir.path())).unwrap();
    let mut foreign = other.open_checkpoint();
    let _open_here = journal.open_checkpoint();
    assert!(matches!(
        journal.checkpoint_part(&mut foreign, b"x"),
        Err(JournalError::CheckpointAbandoned { .. })
    ));
    // A dropped handle leaves nothing behind; the next checkpoint counts.
    let mut dropped = journal.open_checkpoint();
    journal.checkpoint_part(&mut dropped, b"dropped").unwrap();
    drop(dropped);
    let last_record = journal.append(1, 1, b"four").unwrap();
    let next = journal.checkpoint(b"next state").unwrap();
    journal.sync().unwrap();
    drop(journal);
    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.checkpoint_seq, Some(next));
    assert_eq!(recovery.checkpoint_covers_seq, Some(last_record));
    assert_eq!(
        replayed_at(&journal),
        vec![(next, KIND_CHECKPOINT, b"next state".to_vec())]
    );
}

/// Compaction after a checkpoint written across rolls keeps the segment holding the
/// first frame it does not cover (before its first part) and deletes the ones before.
#[test]
fn compaction_keeps_the_segment_after_what_an_interleaved_checkpoint_covers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    for i in 0..150u64 {
        journal.append(1, 1, &payload(i, 1000)).unwrap();
    }
    let mut handle = journal.open_checkpoint();
    let covers = handle.covers_seq();
    let mut records = Vec::new();
    for i in 0..150u64 {
        let p = payload(500 + i, 1000);
        records.push((journal.append(1, 1, &p).unwrap(), p));
    }
    journal.checkpoint_part(&mut handle, b"state").unwrap();
    let first = journal.finish_checkpoint(handle).unwrap();
    journal.sync().unwrap();
    let bases: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap();
            name.parse().unwrap()
        })
        .collect();
    // The segment holding covers + 1, and the one holding the first part, later.
    let keep = *bases.iter().filter(|&&b| b <= covers + 1).max().unwrap();
    let first_base = *bases.iter().filter(|&&b| b <= first).max().unwrap();
    assert!(
        keep > bases[0] && keep < first_base,
        "{bases:?} {covers} {first}"
    );
    let freed = journal.compact().unwrap();
    assert_eq!(
        freed.segments_deleted,
        bases.iter().filter(|&&b| b < keep).count()
    );
    assert_eq!(
        segment_files(dir.path()).len(),
        bases.len() - freed.segments_deleted
    );
    let expected: Vec<(u64, u16, Vec<u8>)> =
        std::iter::once((first, KIND_CHECKPOINT, b"state".to_vec()))
            .chain(records.iter().map(|(seq, p)| (*seq, 1, p.clone())))
            .collect();
    assert_eq!(replayed_at(&journal), expected);
    drop(journal);
    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.first_seq, Some(keep));
    assert_eq!(replayed_at(&journal), expected);
}

/// At `segments_max`, a checkpoint written across appends may roll into its allowance;
/// records appended between its parts fill the segment the parts rolled to but never
/// start one past the limit. Once the checkpoint is durable, compaction brings the
/// journal back under the limit and replay returns its parts and those records.
#[test]
fn records_between_parts_at_segments_max_never_roll_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = journal_at_segments_max(dir.path());
    let mut handle = journal.open_checkpoint();
    let mut parts = Vec::new();
    let mut records = Vec::new();
    while journal.segment_count() == 3 {
        let part = payload(parts.len() as u64, 4000);
        let seq = journal.last_seq() + 1;
        journal.checkpoint_part(&mut handle, &part).unwrap();
        parts.push((seq, KIND_CHECKPOINT, part));
    }
    assert_eq!(
        journal.segment_count(),
        4,
        "a part rolled into the allowance"
    );
    // Records fill the new segment, then are refused rather than roll a fifth.
    let err = loop {
        let p = payload(records.len() as u64, 1000);
        match journal.append(1, 1, &p) {
            Ok(seq) => records.push((seq, 1, p)),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, JournalError::SegmentsExhausted { segments_max: 3 }),
        "{err}"
    );
    assert!(records.len() >= 10, "{}", records.len());
    assert_eq!(journal.segment_count(), 4);
    // The checkpoint's own frames still roll, and it completes.
    let part = payload(99, 60_000);
    let seq = journal.last_seq() + 1;
    journal.checkpoint_part(&mut handle, &part).unwrap();
    parts.push((seq, KIND_CHECKPOINT, part));
    assert_eq!(journal.segment_count(), 5);
    journal.finish_checkpoint(handle).unwrap();
    journal.sync().unwrap();
    journal.compact().unwrap();
    assert!(journal.segment_count() <= 3, "{}", journal.segment_count());
    let expected: Vec<(u64, u16, Vec<u8>)> = parts.into_iter().chain(records).collect();
    assert_eq!(replayed_at(&journal), expected);
    journal.append(1, 1, b"appends resume").unwrap();
}

/// A roll's compaction leaves deleting the segments to the journal's background thread
/// (the appender does not wait for unlinking and unmapping them): the journal stops
/// counting them at once, the files go shortly after, and an explicit `compact` or
/// closing the journal waits for them, oldest first, so a reopen finds only what
/// replay needs.
#[test]
fn a_rolls_compaction_deletes_segments_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    for i in 0..200u64 {
        journal.append(1, 1, &payload(i, 1000)).unwrap();
    }
    let before = journal.segment_count();
    assert!(before >= 3, "{before} segments");
    journal.checkpoint(b"state").unwrap();
    journal.sync().unwrap();
    // Records until the next roll, whose compaction lets the old segments go.
    let mut appended = 0u64;
    while journal.segment_count() >= before {
        journal
            .append(1, 1, &payload(1000 + appended, 1000))
            .unwrap();
        appended += 1;
        assert!(appended < 1000, "the journal never rolled");
    }
    let counted = journal.segment_count();
    // A new segment gets its final name once synced.
    journal.sync().unwrap();
    // The background thread deletes them; an explicit compaction waits for it.
    let freed = journal.compact().unwrap();
    assert_eq!(freed.segments_deleted, 0, "the roll already let them go");
    assert_eq!(segment_files(dir.path()).len(), counted);
    let first_kept = segment_files(dir.path())[0].clone();
    for i in 0..400u64 {
        journal.append(1, 1, &payload(5000 + i, 1000)).unwrap();
    }
    journal.checkpoint(b"later").unwrap();
    journal.sync().unwrap();
    for i in 0..100u64 {
        journal.append(1, 1, &payload(9000 + i, 1000)).unwrap();
    }
    let counted = journal.segment_count();
    journal.sync().unwrap();
    // Closing waits for the queued deletions.
    drop(journal);
    let files = segment_files(dir.path());
    assert!(!files.contains(&first_kept), "{files:?}");
    assert_eq!(files.len(), counted);
    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.segments, counted);
    let replayed = collect(&journal);
    assert_eq!(replayed[0].3, b"later".to_vec());
    assert_eq!(replayed.len(), 1 + 100);
}

/// A segment the background thread cannot delete stays queued with every later one (no
/// later segment goes before it, so the files stay one contiguous run and the journal
/// still opens), the journal's own compaction reports the error, and once the cause is
/// gone the next compaction deletes them all.
#[test]
fn a_segment_that_cannot_be_deleted_keeps_the_later_ones_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    for i in 0..200u64 {
        journal.append(1, 1, &payload(i, 1000)).unwrap();
    }
    journal.checkpoint(b"state").unwrap();
    // Synced: every segment has its final name.
    journal.sync().unwrap();
    let before = segment_files(dir.path());
    assert!(before.len() >= 3, "{before:?}");
    // The oldest segment's name now holds a directory: unlinking it fails.
    let oldest = before[0].clone();
    let aside = dir.path().join("aside");
    fs::rename(&oldest, &aside).unwrap();
    fs::create_dir(&oldest).unwrap();
    fs::write(oldest.join("keep"), b"x").unwrap();
    let mut appended = 0u64;
    let counted = journal.segment_count();
    while journal.segment_count() >= counted {
        journal
            .append(1, 1, &payload(1000 + appended, 1000))
            .unwrap();
        appended += 1;
        assert!(appended < 1000, "the journal never rolled");
    }
    journal.sync().unwrap();
    let err = journal.compact().unwrap_err();
    assert!(err.to_string().contains("remove"), "{err}");
    // Nothing after the oldest was deleted.
    let now = segment_files(dir.path());
    for path in &before {
        assert!(
            now.contains(path),
            "{path:?} deleted before the oldest: {now:?}"
        );
    }
    // The cause goes: the next compaction deletes them, oldest first.
    fs::remove_dir_all(&oldest).unwrap();
    fs::rename(&aside, &oldest).unwrap();
    journal.compact().unwrap();
    let now = segment_files(dir.path());
    assert!(
        before[..before.len() - 1].iter().all(|p| !now.contains(p)),
        "{now:?}"
    );
    drop(journal);
    let (journal, _) = Journal::open(cfg).unwrap();
    let replayed = collect(&journal);
    assert_eq!(replayed[0].3, b"state".to_vec());
    assert_eq!(replayed.len() as u64, 1 + appended);
}

/// A checkpoint that starts part way into a segment keeps that segment, with the
/// records before it; one started after `roll_for_checkpoint` keeps nothing older than
/// itself, so the journal is left with the checkpoint's own segments only.
#[test]
fn a_checkpoint_on_a_segment_of_its_own_lets_every_segment_before_it_go() {
    for roll in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
        let mut i = 0;
        // Two segments and a part of a third.
        while journal.segment_count() < 3 || i % 10 != 5 {
            journal.append(1, 1, &payload(i, 1000)).unwrap();
            i += 1;
        }
        if roll {
            assert!(journal.roll_for_checkpoint().unwrap());
            assert_eq!(journal.segment_count(), 4);
            // Nothing in the new segment yet: no second roll.
            assert!(!journal.roll_for_checkpoint().unwrap());
        }
        let first = journal.checkpoint(b"state").unwrap();
        journal.sync().unwrap();
        journal.compact().unwrap();
        let left = segment_files(dir.path());
        assert_eq!(left.len(), 1, "{left:?}");
        let base: u64 = left[0]
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if roll {
            assert_eq!(base, first, "the checkpoint opens its segment");
        } else {
            assert!(
                base < first,
                "records before the checkpoint share its segment"
            );
        }
        // Recovery starts from the checkpoint either way.
        drop(journal);
        let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
        assert_eq!(recovery.checkpoint_seq, Some(first));
        assert!(collect(&journal)
            .iter()
            .all(|(seq, kind, ..)| *seq >= first && *kind == herald_journal::KIND_CHECKPOINT));
    }
}

/// Format version of a segment file, from its header (a reused file's is 2).
fn segment_version(path: &Path) -> u32 {
    let bytes = fs::read(path).unwrap();
    u32::from_le_bytes(bytes[8..12].try_into().unwrap())
}

/// Appends under steady load with a checkpoint every ~2 segments until the active
/// segment is a reused file (the journal reuses the files of segments its checkpoints
/// let go); returns the last checkpoint's seq and every record appended after it.
fn until_the_active_segment_is_reused(journal: &mut Journal, dir: &Path) -> (u64, Vec<u64>) {
    let mut last_checkpoint = 0;
    let mut after: Vec<u64> = Vec::new();
    for i in 0..20_000u64 {
        let seq = journal.append(1, 1, &payload(i, 400)).unwrap();
        after.push(seq);
        if i % 50 == 49 {
            journal.sync().unwrap();
            let files = segment_files(dir);
            if i > 600 && segment_version(files.last().unwrap()) == 2 {
                return (last_checkpoint, after);
            }
        }
        if i % 300 == 299 {
            last_checkpoint = journal.checkpoint(&i.to_le_bytes()).unwrap();
            after.clear();
        }
    }
    panic!("no segment file was reused in 20,000 records");
}

/// Segments that checkpoints let go are reused as the next segments' files (version 2,
/// their old frames after the end): the journal reads back, recovers and checks as one
/// of new files does, and stale or torn bytes after a reused segment's end are neither
/// records nor damage.
#[test]
fn segments_written_over_reused_files_recover_and_check_clean() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    let (checkpoint, after) = until_the_active_segment_is_reused(&mut journal, dir.path());
    journal.sync().unwrap();
    let expected: Vec<u64> = std::iter::once(checkpoint).chain(after.clone()).collect();
    let replayed =
        |journal: &Journal| -> Vec<u64> { collect(journal).iter().map(|f| f.0).collect() };
    assert_eq!(replayed(&journal), expected);
    drop(journal);

    let report = check(dir.path()).unwrap();
    assert!(
        report.corruption.is_none() && report.torn_tail.is_none(),
        "{report:?}"
    );
    assert!(report.segments.last().unwrap().reused);
    let (journal, recovery) = Journal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(recovery.last_seq, after.last().copied());
    assert_eq!(replayed(&journal), expected);
    drop(journal);

    // A frame a crash tore at the active segment's end: the next frame's header, half
    // its payload. The records before it stay; the next appends write over it.
    let last = report.segments.last().unwrap();
    let end = 64 + last.bytes;
    let mut torn = Vec::new();
    {
        // A segment that holds that many empty frames (32 bytes each) and the next.
        let mut scratch_cfg = config(&dir.path().join("scratch"));
        scratch_cfg.segment_bytes = (64 + (after.last().unwrap() + 2) * 32 + 4096)
            .next_multiple_of(4096)
            .max(SMALL_SEGMENT_BYTES);
        let (mut scratch, _) = Journal::open(scratch_cfg).unwrap();
        for _ in 0..*after.last().unwrap() {
            scratch.append(1, 1, &[]).unwrap();
        }
        scratch.append(1, 1, &payload(7, 400)).unwrap();
        scratch.sync().unwrap();
        drop(scratch);
        let seg = &segment_files(&dir.path().join("scratch"))[0];
        let bytes = fs::read(seg).unwrap();
        let at = 64 + (*after.last().unwrap() as usize) * 32;
        torn.extend_from_slice(&bytes[at..at + 32 + 200]);
        let seq = u64::from_le_bytes(torn[8..16].try_into().unwrap());
        assert_eq!(seq, after.last().unwrap() + 1, "the next frame's header");
        // Its header CRC salted as the reused segment's own frames are, so that only
        // its payload is torn.
        let header = fs::read(&last.path).unwrap();
        let salt = u32::from_le_bytes(header[32..36].try_into().unwrap());
        assert_ne!(salt, 0, "a reused segment's salt");
        let crc = crc32c::crc32c(&torn[0..28]) ^ salt;
        torn[28..32].copy_from_slice(&crc.to_le_bytes());
    }
    {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(&last.path).unwrap();
        file.write_all_at(&torn, end).unwrap();
    }
    let (mut journal, recovery) = Journal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.last_seq, after.last().copied());
    assert_eq!(replayed(&journal), expected);
    let more: Vec<u64> = (0..20)
        .map(|i| journal.append(1, 1, &payload(10_000 + i, 100)).unwrap())
        .collect();
    journal.sync().unwrap();
    drop(journal);
    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.torn_tail, None);
    let expected: Vec<u64> = expected.into_iter().chain(more).collect();
    assert_eq!(replayed(&journal), expected);
}

/// A reused segment (version 2) ends at its first frame that does not decode, so damage
/// to its last frames shows as a gap before the next segment: opening refuses it, and
/// `repair` truncates there (that segment's damaged frames and every later segment go).
#[test]
fn damage_at_the_end_of_a_reused_segment_before_the_last_is_refused_then_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    until_the_active_segment_is_reused(&mut journal, dir.path());
    // One more segment after it: the reused one is no longer the last.
    let reused = segment_files(dir.path()).last().unwrap().clone();
    let mut i = 0;
    while segment_files(dir.path()).last().unwrap() == &reused {
        journal.append(1, 1, &payload(50_000 + i, 400)).unwrap();
        i += 1;
    }
    journal.sync().unwrap();
    drop(journal);
    let report = check(dir.path()).unwrap();
    let at = report
        .segments
        .iter()
        .position(|s| s.path == reused)
        .unwrap();
    let (damaged, next) = (&report.segments[at], &report.segments[at + 1]);
    assert!(damaged.reused);
    let last_seq = damaged.base_seq + damaged.records - 1;
    // The last frame's last payload byte (frames here are 400-byte payloads: 432 bytes).
    {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&damaged.path)
            .unwrap();
        let end = 64 + damaged.bytes;
        let at = end - frame_bytes(400) + 32 + 399;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    }
    let err = Journal::open(cfg.clone()).unwrap_err();
    assert!(matches!(err, JournalError::SegmentGap { .. }), "{err}");
    let mut repairing = cfg.clone();
    repairing.repair = true;
    let (journal, recovery) = Journal::open(repairing).unwrap();
    let repair = recovery.repair.expect("repaired");
    assert_eq!(repair.segment, damaged.path);
    assert_eq!(repair.segments_deleted, report.segments.len() - at - 1);
    assert!(!next.path.exists());
    assert_eq!(recovery.last_seq, Some(last_seq - 1));
    assert_eq!(journal.last_seq(), last_seq - 1);
    assert!(repair.records_lost > next.records, "{repair:?}");
    drop(journal);
    // The mark no longer names the sequence numbers the repair threw away.
    assert_eq!(durable_mark(dir.path()), Some(last_seq - 1));
    // Sound again, and appends go on from there.
    let (mut journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.last_seq, Some(last_seq - 1));
    assert_eq!(journal.append(1, 1, b"after").unwrap(), last_seq);
}

/// What the journal's durable mark records (`None`: missing or not decodable).
fn durable_mark(dir: &Path) -> Option<u64> {
    let bytes = fs::read(dir.join(format::DURABLE_MARK_FILE)).ok()?;
    format::decode_durable_mark_file(&bytes)
}

/// Sets the journal's durable mark to `seq`, as a power loss or crash leaves it when the
/// sync of the frames after `seq` never completed.
fn set_durable_mark(dir: &Path, seq: u64) {
    fs::write(
        dir.join(format::DURABLE_MARK_FILE),
        format::encode_durable_mark(seq),
    )
    .unwrap();
}

/// A power loss during a sync on a reused file may leave a later page of what the sync
/// was writing stored and an earlier one not (no extent conversion orders those writes).
/// The frames after the lost one were never durable, and the durable mark says so:
/// opening drops them as a torn tail, zeroed so that none is read back once appends reach
/// them, rather than refusing the journal. Damage to a frame at or before the mark (one
/// acknowledged), or with no mark to tell, is still refused.
#[test]
fn damage_past_the_durable_mark_is_a_torn_tail_and_damage_to_acknowledged_frames_is_not() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    let (checkpoint, after) = until_the_active_segment_is_reused(&mut journal, dir.path());
    let durable = journal.sync().unwrap();
    assert_eq!(durable, *after.last().unwrap());
    // Each sync moves the mark on before it acknowledges.
    assert_eq!(durable_mark(dir.path()), Some(durable));
    let expected: Vec<u64> = std::iter::once(checkpoint).chain(after).collect();
    for i in 0..3 {
        journal.append(1, 1, &payload(70_000 + i, 400)).unwrap();
    }
    drop(journal);
    assert_eq!(
        durable_mark(dir.path()),
        Some(durable + 3),
        "synced on drop"
    );
    let report = check(dir.path()).unwrap();
    assert!(
        report.is_sound() && report.torn_tail.is_none(),
        "{report:?}"
    );
    let segment = report.segments.last().unwrap().clone();
    assert!(segment.reused);
    let end = 64 + segment.bytes;
    let lost = end - 3 * frame_bytes(400);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment.path)
        .unwrap();
    // The first of the three damaged (a byte of its payload), the two after it intact.
    let flip = |at: u64| {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    };
    let refused = |why: &str| {
        let report = check(dir.path()).unwrap();
        assert!(!report.is_sound(), "{why}: {report:?}");
        let err = Journal::open(cfg.clone()).unwrap_err();
        assert!(
            matches!(err, JournalError::CorruptFrame { .. }),
            "{why}: {err}"
        );
    };
    flip(lost + 32 + 100);
    // The three were synced (the mark says so): damage to acknowledged frames.
    refused("damage before the mark");
    // No mark, or one that does not decode: nothing tells, so it is corruption.
    fs::remove_file(dir.path().join(format::DURABLE_MARK_FILE)).unwrap();
    refused("no mark");
    fs::write(dir.path().join(format::DURABLE_MARK_FILE), b"not a mark").unwrap();
    refused("a mark that does not decode");

    // The sync of the three cut short: the mark still at `durable`.
    set_durable_mark(dir.path(), durable);
    // From the first of the three to the end of the last, the two intact ones with it.
    let torn_as_expected = |torn: Option<TornTail>| {
        let torn = torn.expect("a torn tail");
        let found = (torn.offset, torn.bytes_discarded);
        assert_eq!(
            (found, torn.intact_frames_discarded),
            ((lost, end - lost), 2)
        );
    };
    let report = check(dir.path()).unwrap();
    assert!(report.is_sound(), "{report:?}");
    torn_as_expected(report.torn_tail);
    // An open that crashed part way through zeroing it (the first frame zeroed, the two
    // after it not yet) leaves the same torn tail to the next.
    file.write_all_at(&vec![0u8; frame_bytes(400) as usize], lost)
        .unwrap();
    let (mut journal, recovery) = Journal::open(cfg.clone()).unwrap();
    torn_as_expected(recovery.torn_tail);
    assert_eq!(recovery.last_seq, Some(durable));
    let replayed =
        |journal: &Journal| -> Vec<u64> { collect(journal).iter().map(|f| f.0).collect() };
    assert_eq!(replayed(&journal), expected);
    let mut zeros = vec![0xffu8; (end - lost) as usize];
    file.read_exact_at(&mut zeros, lost).unwrap();
    assert!(zeros.iter().all(|&b| b == 0), "the torn tail is zeroed");
    // One frame of the same size in the first one's place: the next frame after it
    // would be where the second of the three was, with its sequence number.
    let next = journal.append(1, 1, &payload(80_000, 400)).unwrap();
    assert_eq!(next, durable + 1);
    journal.sync().unwrap();
    drop(journal);
    let (journal, recovery) = Journal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.torn_tail, None);
    let mut expected = expected;
    expected.push(next);
    assert_eq!(replayed(&journal), expected, "nothing torn is read back");
    assert_eq!(collect(&journal).last().unwrap().3, payload(80_000, 400));
    drop(journal);
    assert_eq!(durable_mark(dir.path()), Some(next));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

    /// A power loss in the middle of a sync, sector by sector: after a sync, frames of
    /// random sizes are written and not synced; the device then holds, for each 512-byte
    /// sector they touched, either what it held before or what was written, in any mix,
    /// and a durable mark anywhere from the one open wrote up to the last sync's (the
    /// mark itself is not synced). Whether the segment is a reused file or a new one,
    /// the journal opens (never refused), keeps every frame synced, and reads back only
    /// frames written, in order, with the bytes they were written with.
    #[test]
    fn a_power_loss_mid_sync_loses_nothing_synced_and_never_refuses_the_journal(
        reused in proptest::prelude::any::<bool>(),
        sizes in proptest::collection::vec(0usize..1500, 1..12),
        stored in proptest::collection::vec(proptest::prelude::any::<bool>(), 64),
        mark_back in 0u64..1000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
        let opened_mark = durable_mark(dir.path()).unwrap();
        if reused {
            until_the_active_segment_is_reused(&mut journal, dir.path());
        } else {
            for i in 0..5 {
                journal.append(1, 1, &payload(i, 300)).unwrap();
            }
        }
        let durable = journal.sync().unwrap();
        let before: Vec<(u64, Vec<u8>)> =
            collect(&journal).into_iter().map(|f| (f.0, f.3)).collect();
        let segment = segment_files(dir.path()).pop().unwrap();
        let synced = fs::read(&segment).unwrap();
        let mut written = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let body = payload(90_000 + i as u64, size);
            written.push((journal.append(1, 1, &body).unwrap(), body));
        }
        journal.commit().unwrap();
        // Frames that would roll to a new segment are not this case.
        proptest::prop_assume!(segment_files(dir.path()).last() == Some(&segment));
        let unsynced = fs::read(&segment).unwrap();
        drop(journal);

        // The device after the power loss.
        let mut image = synced.clone();
        let changed: Vec<usize> = (0..synced.len() / 512)
            .filter(|&s| synced[s * 512..(s + 1) * 512] != unsynced[s * 512..(s + 1) * 512])
            .collect();
        for (i, &sector) in changed.iter().enumerate() {
            if stored[i % stored.len()] {
                image[sector * 512..(sector + 1) * 512]
                    .copy_from_slice(&unsynced[sector * 512..(sector + 1) * 512]);
            }
        }
        fs::write(&segment, &image).unwrap();
        set_durable_mark(dir.path(), durable - mark_back.min(durable - opened_mark));

        let (journal, recovery) = Journal::open(cfg)
            .unwrap_or_else(|e| panic!("refused after a power loss mid-sync: {e}"));
        let last = recovery.last_seq.unwrap();
        proptest::prop_assert!(last >= durable, "synced {durable}, recovered {last}");
        let expected: Vec<(u64, Vec<u8>)> = before
            .into_iter()
            .chain(written.into_iter().filter(|(seq, _)| *seq <= last))
            .collect();
        let read: Vec<(u64, Vec<u8>)> =
            collect(&journal).into_iter().map(|f| (f.0, f.3)).collect();
        proptest::prop_assert_eq!(read, expected);
    }
}

/// Damage to the last frames of a reused segment ends its log as stale bytes would, with
/// nothing after it to tell; the durable mark tells: those frames were acknowledged, so
/// the journal is refused (and `check` says which records are missing) rather than
/// opened without them. Repair accepts the loss and says so; the mark then follows the
/// log again. The last segment files removed from under a journal are refused the same way.
#[test]
fn a_log_that_ends_before_the_durable_mark_is_refused_until_repaired() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    until_the_active_segment_is_reused(&mut journal, dir.path());
    let durable = journal.sync().unwrap();
    drop(journal);
    let segment = check(dir.path()).unwrap().segments.pop().unwrap();
    assert!(segment.reused);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment.path)
        .unwrap();
    let at = 64 + segment.bytes - frame_bytes(400) + 132;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();

    let err = Journal::open(cfg.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::DurableMissing { last_seq, durable_mark, .. }
                if (last_seq, durable_mark) == (durable - 1, durable)
        ),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::Storage);
    assert_eq!(
        durable_mark(dir.path()),
        Some(durable),
        "open changed nothing"
    );
    let report = check(dir.path()).unwrap();
    let corruption = report.corruption.expect("the missing record is reported");
    assert_eq!(corruption.segment, segment.path);
    assert!(
        corruption
            .defect
            .contains(&format!("seq {durable}..={durable} missing")),
        "{}",
        corruption.defect
    );

    let mut repairing = cfg.clone();
    repairing.repair = true;
    let (journal, recovery) = Journal::open(repairing).unwrap();
    let repair = recovery.repair.expect("repaired");
    assert_eq!(repair.records_lost, 1);
    assert_eq!(journal.last_seq(), durable - 1);
    drop(journal);
    assert_eq!(durable_mark(dir.path()), Some(durable - 1));
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    assert_eq!(journal.append(1, 1, b"after").unwrap(), durable);
    drop(journal);

    // Every segment file removed, the mark left: the records it names are missing.
    for segment in segment_files(dir.path()) {
        fs::remove_file(segment).unwrap();
    }
    let err = Journal::open(cfg).unwrap_err();
    assert!(
        matches!(err, JournalError::DurableMissing { last_seq: 0, .. }),
        "{err}"
    );
    assert!(!check(dir.path()).unwrap().is_sound());
}

/// Damage with intact frames after it in a segment that is not the last is corruption
/// whatever the mark says (a segment is named only after the ones before it are synced,
/// so no power loss leaves it): refused, and nothing zeroed.
#[test]
fn damage_before_intact_frames_in_a_segment_before_the_last_is_refused_whatever_the_mark() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    while segment_files(dir.path()).len() < 3 {
        journal
            .append(1, 1, &payload(journal.last_seq(), 400))
            .unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    let report = check(dir.path()).unwrap();
    let first = &report.segments[0];
    // The second frame of the first segment damaged, the rest of it intact.
    let at = 64 + frame_bytes(400) + 32 + 7;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&first.path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    let before = fs::read(&first.path).unwrap();
    set_durable_mark(dir.path(), first.base_seq);
    let err = Journal::open(cfg).unwrap_err();
    assert!(matches!(err, JournalError::CorruptFrame { .. }), "{err}");
    assert_eq!(fs::read(&first.path).unwrap(), before, "nothing zeroed");
    let report = check(dir.path()).unwrap();
    assert!(
        report.torn_tail.is_none() && !report.is_sound(),
        "{report:?}"
    );
}

/// The durable notify runs once the mark covers what it announces: a crash right after
/// an acknowledgement finds the mark at or past it.
#[test]
fn the_durable_mark_covers_every_sequence_number_announced_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    let behind = Arc::new(AtomicU64::new(0));
    let announced = Arc::new(AtomicU64::new(0));
    let (path, b, a) = (dir.path().to_path_buf(), behind.clone(), announced.clone());
    journal.set_durable_notify(Box::new(move |seq| {
        a.fetch_add(1, Ordering::Relaxed);
        if durable_mark(&path).is_none_or(|mark| mark < seq) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }));
    for i in 0..400u64 {
        journal.append(1, 1, &payload(i, 100)).unwrap();
        journal.commit().unwrap();
        if i % 40 == 39 {
            journal.sync().unwrap();
        }
    }
    journal.sync().unwrap();
    journal.clear_durable_notify();
    assert!(announced.load(Ordering::Relaxed) >= 10);
    assert_eq!(behind.load(Ordering::Relaxed), 0);
}

/// The base sequence number of a segment file, from its name.
fn segment_base(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// The records `err` says are missing: it must be a storage fault of its own kind whose
/// message names them, the first segment present and the way out.
fn missing_history_of(err: JournalError) -> MissingHistory {
    let text = err.to_string();
    assert_eq!(err.fault(), Fault::Storage, "{text}");
    let JournalError::HistoryMissing { missing, .. } = err else {
        panic!("expected HistoryMissing, got {text}");
    };
    let named = [
        format!(
            "seq {}..={} missing",
            missing.needed_from,
            missing.first_seq - 1
        ),
        format!(
            "{}, starts at seq {}",
            missing.first_segment.display(),
            missing.first_seq
        ),
        "restore the journal's missing or damaged segment files from a backup".to_string(),
    ];
    for part in named {
        assert!(text.contains(&part), "{part:?} not in {text}");
    }
    missing
}

/// Opens the journal of `cfg` with repair: refused for records replay needs missing,
/// the ones `check` reports, and nothing in the directory changed. Returns them.
fn repair_refused_for_missing_history(cfg: &JournalConfig) -> MissingHistory {
    let before = snapshot(&cfg.dir);
    let mut repairing = cfg.clone();
    repairing.repair = true;
    let missing = missing_history_of(Journal::open(repairing).unwrap_err());
    assert_eq!(snapshot(&cfg.dir), before, "nothing changed");
    let report = check(&cfg.dir).unwrap();
    assert!(!report.is_sound(), "{report:?}");
    assert_eq!(report.history_missing.as_ref(), Some(&missing));
    missing
}

/// Appends `records` records of 1000 bytes (62 fill a segment).
fn append_records(journal: &mut Journal, records: u64) {
    for i in 0..records {
        journal.append(1, 1, &payload(i, 1000)).unwrap();
    }
}

/// A new journal of small segments in a directory of its own, with `records` records
/// ([`append_records`]).
fn new_journal(records: u64) -> (tempfile::TempDir, JournalConfig, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    append_records(&mut journal, records);
    (dir, cfg, journal)
}

/// A new journal with 150 records, a checkpoint of `state`, 150 more records, synced
/// and compacted: its first segment holds the checkpoint and the records before it that
/// share that segment.
fn compacted_after_a_checkpoint(state: &[u8]) -> (tempfile::TempDir, JournalConfig, Journal) {
    let (dir, cfg, mut journal) = new_journal(150);
    let checkpoint = journal.checkpoint(state).unwrap();
    append_records(&mut journal, 150);
    journal.sync().unwrap();
    journal.compact().unwrap();
    let files = segment_files(&cfg.dir);
    assert!(segment_base(&files[0]) < checkpoint && checkpoint < segment_base(&files[1]));
    (dir, cfg, journal)
}

/// Removes the first segment file of the journal of `cfg`, whose latest complete
/// checkpoint left then covers up to `checkpoint_covers_seq`: open refuses it, and so
/// does repair, changing nothing, for the records from the one after what that covers
/// up to the next segment, which `check` reports; neither changes any file. Returns
/// them.
fn first_segment_removed_is_refused(
    cfg: &JournalConfig,
    checkpoint_covers_seq: Option<u64>,
) -> MissingHistory {
    let files = segment_files(&cfg.dir);
    fs::remove_file(&files[0]).unwrap();
    let expected = MissingHistory {
        first_segment: files[1].clone(),
        first_seq: segment_base(&files[1]),
        needed_from: checkpoint_covers_seq.map_or(1, |covers| covers + 1),
        checkpoint_covers_seq,
    };
    let before = snapshot(&cfg.dir);
    let missing = missing_history_of(Journal::open(cfg.clone()).unwrap_err());
    assert_eq!(missing, expected);
    assert_eq!(snapshot(&cfg.dir), before, "nothing changed");
    assert_eq!(repair_refused_for_missing_history(cfg), expected);
    missing
}

/// Opens the journal of `cfg`: it must start at the journal's first record and replay
/// `records` records.
fn opens_whole(cfg: JournalConfig, records: usize) {
    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert_eq!(recovery.first_seq, Some(format::FIRST_SEQ));
    assert_eq!(replayed(&journal).len(), records);
}

/// A new journal, and one reopened empty or with records and no checkpoint, start at
/// the journal's first sequence number: nothing is missing, and `check` agrees.
#[test]
fn a_fresh_or_reopened_journal_misses_no_history() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    for records in [0, 0, 150] {
        let (mut journal, recovery) = Journal::open(cfg.clone()).unwrap();
        assert_eq!(recovery.checkpoint_seq, None);
        assert_eq!(journal.first_seq(), format::FIRST_SEQ);
        append_records(&mut journal, records);
        journal.sync().unwrap();
        drop(journal);
        let report = check(dir.path()).unwrap();
        assert!(
            report.is_sound() && report.history_missing.is_none(),
            "{report:?}"
        );
    }
    assert!(segment_files(dir.path()).len() >= 3);
    opens_whole(cfg, 150);
}

/// Removing the first segment file of a journal that never checkpointed loses records
/// replay starts from: refused, with repair too, naming them and the first segment
/// present; so is a repair of a gap further on that would keep that first segment (it
/// deletes nothing). With the files put back, as from a backup, the journal opens whole.
#[test]
fn a_journal_without_a_checkpoint_missing_its_first_segment_is_refused() {
    let (dir, cfg, mut journal) = new_journal(300);
    journal.sync().unwrap();
    drop(journal);
    let files = segment_files(dir.path());
    assert!(files.len() >= 5, "{files:?}");
    let backup: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let missing = first_segment_removed_is_refused(&cfg, None);
    assert!(
        missing.to_string().contains("no complete checkpoint"),
        "{missing}"
    );

    // A gap further on as well: the repair that would truncate there is refused first.
    fs::remove_file(&files[3]).unwrap();
    assert_eq!(repair_refused_for_missing_history(&cfg), missing);

    for i in [0, 3] {
        fs::write(&files[i], &backup[i]).unwrap();
    }
    opens_whole(cfg, 300);
}

/// A journal compacted after a checkpoint opens without the segments it let go; once
/// its first segment file, holding the checkpoint, is removed too, no checkpoint is left
/// and the records before the next segment are missing: refused, with repair too.
#[test]
fn a_compacted_journal_opens_but_not_once_its_first_segment_is_removed() {
    let (dir, cfg, journal) = compacted_after_a_checkpoint(b"state");
    let checkpoint = journal.checkpoint_seq();
    drop(journal);
    let (journal, recovery) = Journal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.checkpoint_seq, checkpoint);
    assert!(recovery.first_seq.unwrap() > 1, "{recovery:?}");
    drop(journal);
    let report = check(dir.path()).unwrap();
    assert!(report.is_sound(), "{report:?}");

    // Its last record torn as well, past the durable mark: a refused open leaves it as
    // it is (an open that succeeds zeroes it).
    let last = report.segments.last().unwrap();
    let at = (64 + last.bytes - frame_bytes(1000)) as usize;
    let mut bytes = fs::read(&last.path).unwrap();
    bytes[at + 500..at + frame_bytes(1000) as usize].fill(0);
    fs::write(&last.path, &bytes).unwrap();
    set_durable_mark(dir.path(), report.last_seq.unwrap() - 1);
    assert!(check(dir.path()).unwrap().torn_tail.is_some());
    first_segment_removed_is_refused(&cfg, None);
}

/// A checkpoint written across appends covers less than what lies before its first
/// part, and compaction keeps the segment holding the record after what it covers. With
/// that segment file removed the checkpoint is still there, but the records replay needs
/// after it are not: refused, naming them and what the checkpoint covers.
#[test]
fn the_records_after_what_a_present_checkpoint_covers_must_be_present() {
    let (dir, cfg, mut journal) = new_journal(150);
    let mut handle = journal.open_checkpoint();
    let covers = handle.covers_seq();
    append_records(&mut journal, 150);
    journal.checkpoint_part(&mut handle, b"state").unwrap();
    let checkpoint = journal.finish_checkpoint(handle).unwrap();
    journal.sync().unwrap();
    journal.compact().unwrap();
    drop(journal);
    let (journal, recovery) = Journal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.checkpoint_covers_seq, Some(covers));
    drop(journal);

    let files = segment_files(dir.path());
    assert!(segment_base(&files[0]) <= covers + 1 && covers + 1 < segment_base(&files[1]));
    assert!(segment_base(&files[1]) < checkpoint);
    let missing = first_segment_removed_is_refused(&cfg, Some(covers));
    assert!(
        missing.to_string().contains(&format!(
            "checkpoint present covers only up to seq {covers}"
        )),
        "{missing}"
    );
}

/// Damage to the checkpoint that let the earlier segments go is corruption, and a
/// repair there would cut the checkpoint off and keep a journal missing every record
/// before its first segment: `check` reports both, and repair is refused before it
/// deletes or zeroes anything.
#[test]
fn a_repair_that_would_cut_off_the_checkpoint_that_let_segments_go_is_refused() {
    use std::os::unix::fs::FileExt;
    let (dir, cfg, journal) = compacted_after_a_checkpoint(b"the state of every record before it");
    let part = journal.replay().next().unwrap().unwrap().position;
    drop(journal);
    let files = segment_files(dir.path());
    assert_eq!(segment_base(&files[0]), part.segment);
    let file = fs::OpenOptions::new().write(true).open(&files[0]).unwrap();
    file.write_all_at(b"X", part.offset).unwrap();

    assert!(matches!(
        Journal::open(cfg.clone()).unwrap_err(),
        JournalError::CorruptFrame { .. }
    ));
    let report = check(dir.path()).unwrap();
    assert_eq!(report.corruption.as_ref().unwrap().segment, files[0]);
    let missing = repair_refused_for_missing_history(&cfg);
    assert_eq!(
        missing,
        MissingHistory {
            first_segment: files[0].clone(),
            first_seq: part.segment,
            needed_from: 1,
            checkpoint_covers_seq: None,
        }
    );
}

/// Puts `dir` back as `snapshot` took it: its segment files and mark, nothing else.
fn put_back(dir: &Path, snapshot: &[(PathBuf, Vec<u8>)]) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.ends_with(".seg") || name.ends_with(".seg.tmp") {
            fs::remove_file(&path).unwrap();
        }
    }
    for (path, bytes) in snapshot {
        fs::write(path, bytes).unwrap();
    }
}

/// Compaction deletes the segments a checkpoint lets go oldest first, so a crash part
/// way through leaves every later one: each such state opens (no false refusal of the
/// oldest records replay needs) and replays the checkpoint and everything after it. A
/// later one deleted with an earlier one left, which compaction never does, is a gap.
#[test]
fn a_crash_part_way_through_compaction_leaves_a_journal_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segments_max = 1024;
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    for i in 0..600u64 {
        journal.append(1, 1, &payload(i, 400)).unwrap();
    }
    let checkpoint = journal.checkpoint(b"state").unwrap();
    let mut after = Vec::new();
    for i in 0..40u64 {
        let p = payload(i, 300);
        after.push((journal.append(1, 1, &p).unwrap(), p));
    }
    journal.sync().unwrap();
    drop(journal);
    let before = snapshot(dir.path());
    let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
    journal.compact().unwrap();
    drop(journal);
    let present = segment_files(dir.path());
    let doomed: Vec<PathBuf> = before
        .iter()
        .map(|(path, _)| path.clone())
        .filter(|path| path.extension().is_some_and(|e| e == "seg") && !present.contains(path))
        .collect();
    assert!(doomed.len() >= 3, "compaction let go of {doomed:?}");

    for deleted in 0..=doomed.len() {
        put_back(dir.path(), &before);
        for path in &doomed[..deleted] {
            fs::remove_file(path).unwrap();
        }
        let (journal, recovery) = Journal::open(cfg.clone())
            .unwrap_or_else(|e| panic!("{deleted} of {} deleted: {e}", doomed.len()));
        assert_eq!(recovery.checkpoint_seq, Some(checkpoint));
        let replayed: Vec<(u64, u16, Vec<u8>)> = journal
            .replay()
            .map(|f| {
                let f = f.unwrap();
                (f.seq, f.kind, f.payload.to_vec())
            })
            .collect();
        assert_eq!(
            replayed[0],
            (checkpoint, KIND_CHECKPOINT, b"state".to_vec())
        );
        let records: Vec<(u64, Vec<u8>)> = replayed[1..]
            .iter()
            .map(|(seq, _, p)| (*seq, p.clone()))
            .collect();
        assert_eq!(records, after);
    }

    put_back(dir.path(), &before);
    fs::remove_file(doomed.last().unwrap()).unwrap();
    assert!(matches!(
        Journal::open(cfg).map(|_| ()),
        Err(JournalError::SegmentGap { .. })
    ));
}

/// The replay of a journal from its latest complete checkpoint on: its parts, then every
/// record after what it covers, as (sequence number, kind, version, payload).
type Replayed = Vec<(u64, u16, u16, Vec<u8>)>;

/// A journal of small segments with 300 records of 1000 bytes (five segments: seq 1..=62,
/// 63..=124, 125..=186, 187..=248, then 249 on), a checkpoint of `state` covering them
/// (seq 301, its end marker 302) and 5 records after it (303..=307), synced. Nothing
/// rolls once the checkpoint is complete, so no compaction has let a segment go. Returns
/// the checkpoint's sequence number and the replay from it.
fn checkpointed_journal() -> (tempfile::TempDir, JournalConfig, u64, Replayed) {
    let (dir, cfg, mut journal) = new_journal(300);
    let checkpoint = journal.checkpoint(b"state").unwrap();
    append_records(&mut journal, 5);
    journal.sync().unwrap();
    let expected = collect(&journal);
    drop(journal);
    assert_eq!(checkpoint, 301);
    let bases: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|f| segment_base(f))
        .collect();
    assert_eq!(bases, [1, 63, 125, 187, 249]);
    (dir, cfg, checkpoint, expected)
}

/// A journal of small segments with 100 records of 1000 bytes, a checkpoint opened then
/// (covering them) and written across 200 more (its part at seq 301, so it lies in the
/// fifth segment, which starts at 249), then `after` records.
fn covering_100_from_301(after: u64) -> (tempfile::TempDir, JournalConfig, Journal) {
    let (dir, cfg, mut journal) = new_journal(100);
    let mut handle = journal.open_checkpoint();
    append_records(&mut journal, 200);
    journal
        .checkpoint_part(&mut handle, b"as of seq 100")
        .unwrap();
    assert_eq!(journal.finish_checkpoint(handle).unwrap(), 301);
    append_records(&mut journal, after);
    (dir, cfg, journal)
}

/// `cfg` with repair allowed.
fn repairing(cfg: &JournalConfig) -> JournalConfig {
    let mut repairing = cfg.clone();
    repairing.repair = true;
    repairing
}

/// Offset in its segment of the frame of record `seq` of a journal made by
/// [`append_records`] alone, in the segment starting at `base`.
fn record_offset(base: u64, seq: u64) -> u64 {
    64 + (seq - base) * frame_bytes(1000)
}

/// Flips a payload byte of the frame at `offset` of `segment`.
fn damage(segment: &Path, offset: u64) {
    let mut bytes = fs::read(segment).unwrap();
    bytes[offset as usize + 32 + 100] ^= 0x10;
    fs::write(segment, &bytes).unwrap();
}

/// Repairs the journal of `cfg`, damaged or with a gap that a later checkpoint covers,
/// where `check` says: the repair deletes whole, losing nothing, what `check` reported
/// (`covered`), every segment file before `kept`, and replays `expected` from the
/// checkpoint; then the journal is sound and opens without repair, replaying the same.
fn repair_drops_covered(
    cfg: &JournalConfig,
    covered: &CoveredSegments,
    kept: &[PathBuf],
    expected: &Replayed,
) {
    let report = check(&cfg.dir).unwrap();
    assert!(!report.is_sound(), "{report:?}");
    assert_eq!(report.covered.as_ref(), Some(covered));
    assert_eq!(
        (&report.corruption, &report.history_missing),
        (&None, &None)
    );
    assert_eq!(report.first_seq, Some(segment_base(&kept[0])));
    assert_eq!(report.checkpoint_seq, Some(covered.checkpoint_seq));

    let (journal, recovery) = Journal::open(repairing(cfg)).unwrap();
    assert_eq!(recovery.covered.as_ref(), Some(covered));
    assert_eq!(recovery.repair, None, "nothing lost");
    assert_eq!(recovery.first_seq, Some(segment_base(&kept[0])));
    assert_eq!(recovery.last_seq, Some(expected.last().unwrap().0));
    assert_eq!(recovery.checkpoint_seq, Some(covered.checkpoint_seq));
    assert_eq!(&collect(&journal), expected);
    drop(journal);
    assert_eq!(segment_files(&cfg.dir), kept);
    assert!(check(&cfg.dir).unwrap().is_sound());
    let (journal, recovery) = Journal::open(cfg.clone()).unwrap();
    assert_eq!((recovery.repair, recovery.covered), (None, None));
    assert_eq!(&collect(&journal), expected);
}

/// A segment file removed from the middle of a journal whose later complete checkpoint
/// covers every record up to the gap: open refuses it (a gap), and a repair, rather than
/// truncate at the gap and lose the checkpoint and every record after it, deletes the
/// segment files before the gap, whose records the checkpoint covers: replay from the
/// checkpoint is what it was, and the repair (and `check` before it) says what went.
#[test]
fn a_repair_at_a_gap_a_later_checkpoint_covers_drops_the_segments_before_it() {
    let (dir, cfg, checkpoint, expected) = checkpointed_journal();
    let files = segment_files(dir.path());
    fs::remove_file(&files[2]).unwrap();
    assert!(
        matches!(
            Journal::open(cfg.clone()).unwrap_err(),
            JournalError::SegmentGap {
                expected: 125,
                found: 187,
                ..
            }
        ),
        "a gap without repair is refused as before"
    );
    let covered = CoveredSegments {
        segment: files[1].clone(),
        offset: record_offset(63, 125),
        defect: "the segment's last frames are missing or damaged: it ends at seq 124, the \
                 next segment starts at seq 187"
            .to_string(),
        segments_deleted: 2,
        records: 124,
        first_seq_kept: 187,
        checkpoint_seq: checkpoint,
        checkpoint_covers_seq: 300,
    };
    repair_drops_covered(&cfg, &covered, &files[3..], &expected);
}

/// A segment file removed from the middle of a journal where no complete checkpoint after
/// the gap covers every record up to it: there is none at all, there is one only before
/// the gap, or the one after it was opened before the gap (written across appends) and
/// covers less. Repair truncates at the gap as it always did, counting what it lost.
#[test]
fn a_repair_at_a_gap_no_later_checkpoint_covers_truncates_there_counting_the_loss() {
    let no_checkpoint = || {
        let (dir, cfg, journal) = new_journal(310);
        (dir, cfg, journal)
    };
    let checkpoint_before_the_gap = || {
        let (dir, cfg, mut journal) = new_journal(50);
        journal.checkpoint(b"early").unwrap();
        append_records(&mut journal, 258);
        (dir, cfg, journal)
    };
    let checkpoint_covering_too_little = || covering_100_from_301(6);
    type Build = Box<dyn Fn() -> (tempfile::TempDir, JournalConfig, Journal)>;
    let cases: [(&str, Build); 3] = [
        ("no checkpoint", Box::new(no_checkpoint)),
        (
            "a checkpoint before the gap",
            Box::new(checkpoint_before_the_gap),
        ),
        (
            "a checkpoint covering too little",
            Box::new(checkpoint_covering_too_little),
        ),
    ];
    for (case, build) in cases {
        let (dir, cfg, mut journal) = build();
        journal.sync().unwrap();
        let last_seq = journal.last_seq();
        drop(journal);
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 5, "{case}");
        fs::remove_file(&files[2]).unwrap();
        let report = check(dir.path()).unwrap();
        assert_eq!(report.covered, None, "{case}");
        assert_eq!(report.corruption.unwrap().segment, files[3], "{case}");

        let (journal, recovery) = Journal::open(repairing(&cfg)).unwrap();
        assert_eq!(recovery.covered, None, "{case}");
        let repair = recovery.repair.expect("truncated");
        let kept_to = segment_base(&files[2]) - 1;
        assert_eq!(
            (repair.segment, repair.segments_deleted, repair.records_lost),
            (files[1].clone(), 2, last_seq - kept_to),
            "{case}: seq {}..={last_seq} lost and counted",
            kept_to + 1
        );
        assert_eq!(journal.last_seq(), kept_to, "{case}");
        drop(journal);
        assert_eq!(segment_files(dir.path()), files[..2], "{case}");
        assert!(check(dir.path()).unwrap().is_sound(), "{case}");
    }
}

/// Damage in a segment whose every record a later complete checkpoint covers, in a record
/// or in an earlier checkpoint's part (one that let the segments before it go, so that a
/// repair truncating there was refused: it would cut that checkpoint off and keep a
/// journal missing its oldest records). Replay starts from the later checkpoint and needs
/// none of the damaged bytes: the repair deletes the damaged segment file and every one
/// before it, losing nothing.
#[test]
fn damage_a_later_checkpoint_covers_is_repaired_by_dropping_the_segments_up_to_it() {
    // A record damaged in the second segment.
    let (dir, cfg, checkpoint, expected) = checkpointed_journal();
    let files = segment_files(dir.path());
    let offset = record_offset(63, 70);
    damage(&files[1], offset);
    assert!(matches!(
        Journal::open(cfg.clone()).unwrap_err(),
        JournalError::CorruptFrame { .. }
    ));
    let covered = CoveredSegments {
        segment: files[1].clone(),
        offset,
        defect: check(dir.path()).unwrap().covered.unwrap().defect,
        segments_deleted: 2,
        records: 62 + 7,
        first_seq_kept: 125,
        checkpoint_seq: checkpoint,
        checkpoint_covers_seq: 300,
    };
    repair_drops_covered(&cfg, &covered, &files[2..], &expected);

    // The part of an earlier checkpoint, which compaction left first, damaged.
    let (dir, cfg, mut journal) = new_journal(69);
    assert_eq!(journal.checkpoint(b"early").unwrap(), 70);
    let part = journal.replay().next().unwrap().unwrap().position;
    append_records(&mut journal, 229);
    journal.sync().unwrap();
    journal.compact().unwrap();
    let checkpoint = journal.checkpoint(b"late").unwrap();
    append_records(&mut journal, 5);
    journal.sync().unwrap();
    let expected = collect(&journal);
    drop(journal);
    let files = segment_files(dir.path());
    assert_eq!(segment_base(&files[0]), part.segment);
    let file = fs::OpenOptions::new().write(true).open(&files[0]).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"X", part.offset).unwrap();
    assert!(matches!(
        Journal::open(cfg.clone()).unwrap_err(),
        JournalError::CorruptFrame { .. }
    ));
    let report = check(dir.path()).unwrap();
    let covered = CoveredSegments {
        segment: files[0].clone(),
        offset: record_offset(63, 70),
        defect: report.covered.clone().unwrap().defect,
        segments_deleted: 1,
        records: 7,
        first_seq_kept: segment_base(&files[1]),
        checkpoint_seq: checkpoint,
        checkpoint_covers_seq: checkpoint - 1,
    };
    repair_drops_covered(&cfg, &covered, &files[1..], &expected);
}

/// Damage in a segment that also holds records a later checkpoint does not cover (the
/// checkpoint was opened part way into it, or lies in it): the segment cannot go whole,
/// so repair truncates at the damage as it always did, counting every record it loses,
/// checkpoint and all; none is dropped silently. So is damage in a record the
/// checkpoint does not cover.
#[test]
fn damage_in_a_segment_holding_records_a_later_checkpoint_does_not_cover_is_truncated() {
    let covering_100 = || {
        let (dir, cfg, mut journal) = covering_100_from_301(5);
        journal.sync().unwrap();
        drop(journal);
        (dir, cfg)
    };
    let covering_300 = || {
        let (dir, cfg, _, _) = checkpointed_journal();
        (dir, cfg)
    };
    type Build = Box<dyn Fn() -> (tempfile::TempDir, JournalConfig)>;
    // (case, journal, damaged segment index, its base, damaged record)
    let cases: [(&str, Build, usize, u64, u64); 3] = [
        (
            "a covered record beside uncovered ones",
            Box::new(covering_100),
            1,
            63,
            70,
        ),
        ("an uncovered record", Box::new(covering_100), 1, 63, 110),
        (
            "a covered record beside the checkpoint",
            Box::new(covering_300),
            4,
            249,
            260,
        ),
    ];
    for (case, build, index, base, seq) in cases {
        let (dir, cfg) = build();
        let files = segment_files(dir.path());
        assert_eq!(segment_base(&files[index]), base, "{case}");
        let last_seq = check(dir.path()).unwrap().last_seq.unwrap();
        damage(&files[index], record_offset(base, seq));
        let report = check(dir.path()).unwrap();
        assert_eq!(report.covered, None, "{case}");
        let corruption = report.corruption.expect("reported");
        assert_eq!(
            (&corruption.segment, corruption.offset),
            (&files[index], record_offset(base, seq)),
            "{case}"
        );

        let (journal, recovery) = Journal::open(repairing(&cfg)).unwrap();
        assert_eq!(recovery.covered, None, "{case}");
        let repair = recovery.repair.expect("truncated");
        assert_eq!(
            (repair.segment, repair.records_lost),
            (files[index].clone(), last_seq - seq + 1),
            "{case}: seq {seq}..={last_seq} lost and counted"
        );
        assert_eq!(journal.last_seq(), seq - 1, "{case}");
        assert_eq!(recovery.checkpoint_seq, None, "{case}");
        drop(journal);
        assert_eq!(segment_files(dir.path()), files[..=index], "{case}");
    }
}

/// A repair that lets covered segment files go deletes them oldest first, and only once
/// the rest has opened: each state a crash part way through leaves (each prefix of them
/// deleted) still holds the damage or the gap, so opening without repair refuses it as
/// before, changing nothing, and the next repair finishes the job, losing nothing. With
/// all of them gone the journal opens without repair.
#[test]
fn a_crash_part_way_through_a_repair_dropping_covered_segments_loses_nothing() {
    // (case, how the journal is harmed, segment files a repair lets go)
    type Harm = fn(&[PathBuf]);
    let cases: [(&str, Harm, usize); 2] = [
        ("a gap", |files| fs::remove_file(&files[3]).unwrap(), 3),
        (
            "damage",
            |files| damage(&files[2], record_offset(125, 130)),
            3,
        ),
    ];
    for (case, harm, doomed) in cases {
        let (dir, cfg, _, expected) = checkpointed_journal();
        let files = segment_files(dir.path());
        harm(&files);
        let before = snapshot(dir.path());
        let kept: Vec<PathBuf> = segment_files(dir.path())[doomed..].to_vec();
        for deleted in 0..=doomed {
            put_back(dir.path(), &before);
            for path in &files[..deleted] {
                fs::remove_file(path).unwrap();
            }
            let state = snapshot(dir.path());
            if deleted < doomed {
                let err = Journal::open(cfg.clone()).unwrap_err();
                assert!(
                    matches!(
                        err,
                        JournalError::SegmentGap { .. } | JournalError::CorruptFrame { .. }
                    ),
                    "{case}, {deleted} deleted: {err}"
                );
                assert_eq!(snapshot(dir.path()), state, "{case}: nothing changed");
                let covered = check(dir.path()).unwrap().covered.expect("reported");
                assert_eq!(covered.segments_deleted, doomed - deleted, "{case}");
                let (journal, recovery) = Journal::open(repairing(&cfg)).unwrap();
                assert_eq!(recovery.covered, Some(covered), "{case}");
                assert_eq!(recovery.repair, None, "{case}");
                drop(journal);
            }
            let (journal, recovery) = Journal::open(cfg.clone())
                .unwrap_or_else(|e| panic!("{case}, {deleted} deleted: {e}"));
            assert_eq!(recovery.covered, None, "{case}");
            assert_eq!(collect(&journal), expected, "{case}, {deleted} deleted");
            drop(journal);
            assert_eq!(segment_files(dir.path()), kept, "{case}");
        }
    }
}

/// A repair that would let covered segment files go but then finds the journal it keeps
/// cannot open (here a segment file whose name and header disagree, which no repair
/// mends) is refused having changed nothing: the covered files are deleted only once the
/// rest has opened.
#[test]
fn a_repair_refused_further_on_deletes_no_covered_segment() {
    let (dir, cfg, _, _) = checkpointed_journal();
    let files = segment_files(dir.path());
    fs::remove_file(&files[2]).unwrap();
    let stray = dir.path().join(format!("{:020}.seg", 400));
    fs::copy(&files[0], &stray).unwrap();
    let before = snapshot(dir.path());
    let err = Journal::open(repairing(&cfg)).unwrap_err();
    assert!(
        matches!(&err, JournalError::SegmentGap { segment, expected: 400, found: 1 } if *segment == stray),
        "{err}"
    );
    assert_eq!(snapshot(dir.path()), before, "nothing changed");
}

/// Damage in two places, each covered by a later complete checkpoint: one before the
/// first checkpoint, one between the two. The repair lets the segment files up to the
/// first damage go as the first checkpoint covers them, then those up to the second as
/// the second covers them, and reports both as one: every segment file before the
/// second damage's next, nothing lost.
#[test]
fn damage_in_two_places_each_covered_by_a_later_checkpoint_loses_nothing() {
    let (dir, cfg, mut journal) = new_journal(150);
    journal.sync().unwrap();
    // Compaction after the first checkpoint lets the first two segments go: kept aside
    // and put back below, as they were (sealed segments never change).
    let early: Vec<(PathBuf, Vec<u8>)> = snapshot(dir.path())[..2].to_vec();
    let first = journal.checkpoint(b"first").unwrap();
    append_records(&mut journal, 150);
    let second = journal.checkpoint(b"second").unwrap();
    append_records(&mut journal, 5);
    journal.sync().unwrap();
    let expected = collect(&journal);
    drop(journal);
    for (path, bytes) in &early {
        fs::write(path, bytes).unwrap();
    }
    let files = segment_files(dir.path());
    let bases: Vec<u64> = files.iter().map(|f| segment_base(f)).collect();
    assert_eq!(bases.len(), 5, "{bases:?}");
    assert!(bases[2] < first && first < bases[3], "{bases:?}");
    assert!(bases[4] < second, "{bases:?}");
    assert!(check(dir.path()).unwrap().is_sound());

    damage(&files[1], record_offset(63, 70));
    damage(&files[3], record_offset(bases[3], bases[3] + 5));
    let report = check(dir.path()).unwrap();
    let covered = report.covered.clone().expect("reported");
    assert_eq!(report.corruption, None);
    assert_eq!(
        (covered.segment.clone(), covered.segments_deleted),
        (files[3].clone(), 4)
    );
    let records_before_first = 62 + 7;
    let records_between = (bases[3] - bases[2]) + 5;
    assert_eq!(covered.records, records_before_first + records_between);
    assert_eq!(
        (covered.first_seq_kept, covered.checkpoint_seq),
        (bases[4], second)
    );
    repair_drops_covered(&cfg, &covered, &files[4..], &expected);
}

/// A journal is in use while a handle holds it, and only then; the probe neither takes
/// the lock for long nor creates the lock file, so a journal opens right after it, and
/// `check` says whether it read a journal in use.
#[test]
fn a_journal_is_in_use_while_a_handle_holds_it_and_the_probe_keeps_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!herald_journal::in_use(dir.path()).unwrap());
    assert!(
        !dir.path().join("journal.lock").exists(),
        "the probe creates no lock file"
    );
    let (mut journal, _) = Journal::open(config(dir.path())).unwrap();
    journal.append(1, 1, b"held").unwrap();
    journal.sync().unwrap();
    assert!(herald_journal::in_use(dir.path()).unwrap());
    assert!(check(dir.path()).unwrap().in_use);
    assert!(matches!(
        Journal::open(config(dir.path())),
        Err(JournalError::Locked { .. })
    ));
    drop(journal);
    assert!(!herald_journal::in_use(dir.path()).unwrap());
    let report = check(dir.path()).unwrap();
    assert!(!report.in_use && report.is_sound(), "{report:?}");
    // Probed just before: it opens.
    let (journal, _) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(collect(&journal).len(), 1);
}

/// Open and `check` say what the durable mark held: the last synced sequence number
/// after a clean close, and none once the mark is gone (whereupon open writes one again).
#[test]
fn open_and_check_report_the_durable_mark_and_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.durable_mark, None, "a new journal has no mark yet");
    drop(journal);
    let (mut journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.durable_mark, Some(0));
    for i in 0..5 {
        journal.append(1, 1, &payload(i, 40)).unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    assert_eq!(check(dir.path()).unwrap().durable_mark, Some(5));
    let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.durable_mark, Some(5));
    drop(journal);

    fs::remove_file(dir.path().join(format::DURABLE_MARK_FILE)).unwrap();
    let report = check(dir.path()).unwrap();
    assert_eq!(report.durable_mark, None);
    assert!(report.is_sound(), "{report:?}");
    let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.durable_mark, None);
    assert_eq!(recovery.records, 5);
    drop(journal);
    assert_eq!(
        durable_mark(dir.path()),
        Some(5),
        "open wrote the mark again"
    );
}
