//! Crash test: a child process appends and syncs in a loop, printing every
//! sequence number the journal acknowledged as durable; the parent SIGKILLs it
//! at random moments, reopens the journal and checks that every acknowledged
//! record is present and intact. The child also writes checkpoints of several parts,
//! large enough that kills land inside them and that they span segments: after every
//! reopen, replay starts at the latest complete checkpoint, returns exactly its parts,
//! and skips a checkpoint the kill cut short. Its checkpoints let segments go often
//! enough that later segments are written over their files (format version 2), and the
//! kills land there too. Every third record is committed lazily (written at once,
//! synced within a longer delay or with the next acknowledgement), so kills also land
//! among records that wait for a lazy sync. The child is this test binary re-run with an
//! environment variable naming the journal directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use herald_journal::{format, Journal, JournalConfig, SEGMENT_BYTES_MIN};
use rand::{Rng, SeedableRng};

const CHILD_DIR_ENV: &str = "HERALD_JOURNAL_CRASH_CHILD_DIR";
/// Kill/reopen rounds; bounded so the test stays around ten seconds in debug.
const ROUNDS: usize = 100;
/// Records the child appends before it stops by itself (a bound, in case the
/// parent never kills it).
const CHILD_RECORDS_MAX: u64 = 2_000_000;
/// Parts of each checkpoint the child writes.
const CHECKPOINT_PARTS: u32 = 3;
/// Bytes of each checkpoint part: three of them take most of a smallest segment, so
/// checkpoints often span two.
const CHECKPOINT_PART_BYTES: usize = 20_000;

/// Part `index` of the checkpoint whose first frame is `first_seq`: both numbers, then
/// bytes derived from them.
fn checkpoint_part(first_seq: u64, index: u32) -> Vec<u8> {
    let mut part = first_seq.to_le_bytes().to_vec();
    part.extend_from_slice(&index.to_le_bytes());
    part.extend((0..CHECKPOINT_PART_BYTES).map(|i| (first_seq as usize + i) as u8));
    part
}

fn config(dir: &Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir);
    // Small segments so rolls, retention and the last-segment rule all happen.
    c.segment_bytes = SEGMENT_BYTES_MIN;
    c.group_records_max = 16;
    c.group_delay_us = 200;
    // Lazily committed records (every third, below) wait longer than the group's.
    c.lazy_delay_us = 5_000;
    c
}

/// Payload of record `seq`: its length and bytes are a function of seq, so the
/// parent can check every record it reads back.
fn payload(seq: u64) -> Vec<u8> {
    // Mostly small, now and then large: large copies widen the window in
    // which a kill tears a frame.
    let len = if seq.is_multiple_of(5) {
        (seq * 7919 % 30_000) as usize
    } else {
        (seq * 7919 % 700) as usize
    };
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

fn child(dir: &Path) {
    let (mut journal, _) = match Journal::open(config(dir)) {
        Ok(opened) => opened,
        Err(e) => {
            println!("open-error {e}");
            return;
        }
    };
    let mut appended = 0;
    while appended < CHILD_RECORDS_MAX {
        let seq = journal.last_seq() + 1;
        let got = journal.append(1, 1, &payload(seq)).unwrap();
        assert_eq!(got, seq);
        appended += 1;
        if seq % 3 == 0 {
            // Written now, synced within the lazy delay or by the next acknowledgement:
            // kills land among records waiting either way.
            journal.commit_lazy().unwrap();
        }
        if seq % 97 == 0 {
            // Each part names the checkpoint's first frame and its own index.
            let checkpoint_seq = seq + 1;
            let mut writer = journal.begin_checkpoint();
            for index in 0..CHECKPOINT_PARTS {
                writer
                    .part(&checkpoint_part(checkpoint_seq, index))
                    .unwrap();
            }
            assert_eq!(writer.finish().unwrap(), checkpoint_seq);
        }
        if appended % 32 == 0 {
            let durable = journal.sync().unwrap();
            // One line per acknowledgement; Rust's stdout is line-buffered
            // to a pipe via LineWriter, so a line is out once printed.
            println!("durable {durable}");
        }
    }
}

#[test]
fn crash_child() {
    // Does nothing unless re-run by `sigkill_at_random_moments_loses_nothing_acknowledged`.
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child(Path::new(&dir));
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("HERALD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash test seed {seed} (set HERALD_CRASH_SEED to reproduce)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged_max = 0u64;
    let mut torn_tails = 0;
    // Segments found written over a reused file (format version 2) after a kill: the
    // journal reuses the files of segments its checkpoints let go, and the kills must
    // land among those too.
    let mut reused_seen = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness prints its own lines too; keep the child's.
                if !(line.starts_with("durable ") || line.starts_with("open-error ")) {
                    continue;
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to get going (first acknowledgement), then let
        // it run a random while so kills land in appends, syncs and rolls.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child acknowledged nothing");
        assert!(first.starts_with("durable "), "child said {first}");
        std::thread::sleep(Duration::from_micros(rng.random_range(0..20_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for line in std::iter::once(first).chain(rx.try_iter()) {
            let seq: u64 = line
                .strip_prefix("durable ")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("round {round}: child said {line}"));
            acknowledged_max = acknowledged_max.max(seq);
        }

        // The sync thread moves the durable mark on before it acknowledges, and the
        // page cache keeps it across the kill: it covers everything acknowledged, so
        // recovery never takes damage to an acknowledged frame for a torn tail.
        let mark = std::fs::read(dir.path().join(format::DURABLE_MARK_FILE))
            .ok()
            .and_then(|bytes| format::decode_durable_mark_file(&bytes));
        assert!(
            mark.is_some_and(|mark| mark >= acknowledged_max),
            "round {round} (seed {seed}): durable mark {mark:?}, acknowledged {acknowledged_max}"
        );
        let (journal, recovery) = Journal::open(config(dir.path()))
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): reopen failed: {e}"));
        if recovery.torn_tail.is_some() {
            torn_tails += 1;
        }
        reused_seen += std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "seg"))
            .filter(|path| std::fs::read(path).unwrap()[8..12] == 2u32.to_le_bytes())
            .count();
        let last = recovery.last_seq.unwrap_or(0);
        assert!(
            last >= acknowledged_max,
            "round {round} (seed {seed}): acknowledged {acknowledged_max} but only {last} recovered"
        );
        // Every record still on disk, from the oldest retained segment on, is
        // intact and in order; the checkpoint replay reaches the same end.
        // Only checkpoint frames are left out: a run of at most a whole checkpoint
        // (its parts and end marker) right after a record with seq % 97 == 0.
        let mut expected: Option<u64> = None;
        let mut last_record = 0;
        for frame in journal.replay_all() {
            let frame = frame.unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
            if let Some(e) = expected {
                let skipped = frame.seq - e;
                assert!(
                    skipped == 0
                        || (last_record % 97 == 0 && skipped <= u64::from(CHECKPOINT_PARTS) + 1),
                    "round {round} (seed {seed}): {skipped} frames missing before {}",
                    frame.seq
                );
            }
            expected = Some(frame.seq + 1);
            if frame.is_checkpoint() {
                let first = recovery
                    .checkpoint_seq
                    .expect("parts of a complete checkpoint");
                let index = (frame.seq - first) as u32;
                assert!(index < CHECKPOINT_PARTS, "round {round}: part {index}");
                assert_eq!(
                    frame.payload,
                    checkpoint_part(first, index),
                    "round {round}: part {index} of the checkpoint at {first}"
                );
            } else {
                last_record = frame.seq;
                assert_eq!(
                    frame.payload,
                    payload(frame.seq),
                    "round {round}: record {} differs",
                    frame.seq
                );
            }
        }
        // At the end, at most a checkpoint the kill cut short is left out.
        let replayed_last = expected.map_or(0, |e| e - 1);
        let last_seq = recovery.last_seq.unwrap_or(0);
        assert!(
            replayed_last <= last_seq && last_seq - replayed_last <= u64::from(CHECKPOINT_PARTS),
            "round {round} (seed {seed}): replay ended at {replayed_last}, the journal at {last_seq}"
        );
        // Replay starts with the latest complete checkpoint's parts, all of them.
        if let Some(checkpoint) = recovery.checkpoint_seq {
            let parts: Vec<u64> = journal
                .replay()
                .map(|f| f.unwrap())
                .take_while(|f| f.is_checkpoint())
                .map(|f| f.seq)
                .collect();
            let expected_parts: Vec<u64> =
                (checkpoint..checkpoint + u64::from(CHECKPOINT_PARTS)).collect();
            assert_eq!(parts, expected_parts, "round {round} (seed {seed})");
        }
        drop(journal);
    }
    println!(
        "{ROUNDS} rounds in {:?}: acknowledged up to {acknowledged_max}, {torn_tails} torn tails, \
         {reused_seen} segments on reused files",
        started.elapsed()
    );
    assert!(acknowledged_max > 0);
    assert!(
        reused_seen > 0,
        "no kill left a segment written over a reused file"
    );
}
