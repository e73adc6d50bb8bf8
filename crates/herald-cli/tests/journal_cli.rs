//! `herald journal check` and `herald bench journal` as a user runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use herald_journal::{Journal, JournalConfig, SEGMENT_BYTES_MIN};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch_dir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// A journal of small segments: `records` records of 1000 bytes.
fn build(dir: &Path, records: u64) -> Vec<PathBuf> {
    build_then(dir, records, |_| {})
}

/// [`build`], then `then` with the journal before it is synced and closed: its segment
/// files.
fn build_then(dir: &Path, records: u64, then: impl FnOnce(&mut Journal)) -> Vec<PathBuf> {
    let mut config = JournalConfig::new(dir);
    config.segment_bytes = SEGMENT_BYTES_MIN;
    let (mut journal, _) = Journal::open(config).unwrap();
    for _ in 0..records {
        journal.append(1, 1, &[7u8; 1000]).unwrap();
    }
    then(&mut journal);
    journal.sync().unwrap();
    drop(journal);
    segment_files(dir)
}

/// `herald journal check` of `dir`, which must succeed: its output.
fn check_sound(dir: &Path) -> String {
    let out = herald(&["journal", "check", "--data-dir", dir.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    stdout
}

/// `herald journal check` names the latest checkpoint and what it covers: here one
/// written across other appends, opened after record 3, its part after record 4.
#[test]
fn check_names_the_checkpoint_and_what_it_covers() {
    let dir = scratch_dir();
    let mut config = JournalConfig::new(dir.path());
    config.segment_bytes = SEGMENT_BYTES_MIN;
    let (mut journal, _) = Journal::open(config).unwrap();
    for _ in 0..3 {
        journal.append(1, 1, b"covered").unwrap();
    }
    let mut handle = journal.open_checkpoint();
    journal.append(1, 1, b"after what it covers").unwrap();
    journal.checkpoint_part(&mut handle, b"state").unwrap();
    assert_eq!(journal.finish_checkpoint(handle).unwrap(), 5);
    journal.sync().unwrap();
    drop(journal);
    let stdout = check_sound(dir.path());
    assert!(
        stdout.contains("last_seq 6  bytes 352  checkpoint_seq 5  checkpoint_covers_seq 3\n"),
        "{stdout}"
    );
}

const HEADER: usize = 64;
const FRAME: usize = 32 + 1008;

#[test]
fn check_reports_a_sound_journal() {
    let dir = scratch_dir();
    let segments = build(dir.path(), 150);
    let stdout = check_sound(dir.path());
    let summary = format!(
        "segments {}  records 150  first_seq 1  last_seq 150  bytes {}",
        segments.len(),
        150 * FRAME
    );
    assert!(stdout.contains(&summary), "{stdout}");
    assert!(stdout.contains("durable mark: seq 150\n"), "{stdout}");
    assert!(stdout.contains("torn tail: none"), "{stdout}");
    assert!(stdout.lines().last() == Some("sound"), "{stdout}");
    // Without its mark the journal is still sound, and check says what it cannot tell.
    fs::remove_file(dir.path().join(herald_journal::format::DURABLE_MARK_FILE)).unwrap();
    let stdout = check_sound(dir.path());
    assert!(
        stdout.contains(
            "durable mark: none (the end of the log cannot be checked against what was \
             acknowledged)\n"
        ),
        "{stdout}"
    );
}

#[test]
fn check_reports_a_torn_tail_as_sound() {
    let dir = scratch_dir();
    let segments = build(dir.path(), 80);
    let last = segments.last().unwrap();
    let mut bytes = fs::read(last).unwrap();
    // Tear the last frame of the last segment: zero its second half.
    // 62 frames of 1040 bytes fill a 64 KiB segment.
    let records_in_last = 80 - (segments.len() - 1) * 62;
    let last_frame = HEADER + (records_in_last - 1) * FRAME;
    bytes[last_frame + 500..last_frame + FRAME].fill(0);
    fs::write(last, &bytes).unwrap();
    // Its sync never completed: the durable mark is at the record before it.
    let mark = dir.path().join(herald_journal::format::DURABLE_MARK_FILE);
    fs::write(&mark, herald_journal::format::encode_durable_mark(79)).unwrap();
    let out = herald(&[
        "journal",
        "check",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("records 79"), "{stdout}");
    let torn = format!("torn tail: {} at offset {last_frame}", last.display());
    assert!(stdout.contains(&torn), "{stdout}");
}

/// Damage in the last segment with intact frames after it, all past what the journal's
/// durable mark says was made durable (a sync cut short by a power loss): a torn tail,
/// sound, and the check says how many intact records go with it. Once the mark covers
/// the damaged frame, the same damage is corruption.
#[test]
fn check_reports_damage_past_the_durable_mark_as_a_torn_tail_naming_the_intact_records() {
    let dir = scratch_dir();
    let segments = build(dir.path(), 80);
    let last = segments.last().unwrap();
    let records_in_last = 80 - (segments.len() - 1) * 62;
    assert!(records_in_last >= 4, "{records_in_last}");
    // The third-last frame damaged, the two after it intact; durable up to the frame
    // before it.
    let damaged = HEADER + (records_in_last - 3) * FRAME;
    let mut bytes = fs::read(last).unwrap();
    bytes[damaged + 100] ^= 4;
    fs::write(last, &bytes).unwrap();
    let mark = dir.path().join(herald_journal::format::DURABLE_MARK_FILE);
    fs::write(&mark, herald_journal::format::encode_durable_mark(77)).unwrap();
    let stdout = check_sound(dir.path());
    assert!(stdout.contains("records 77"), "{stdout}");
    let torn = format!(
        "torn tail: {} at offset {damaged}: payload CRC mismatch ({} bytes to discard on open, \
         with 2 intact records after the damage that were never made durable)",
        last.display(),
        // Up to the last non-zero byte: the last frame's padding is zero already.
        3 * FRAME - 8
    );
    assert!(stdout.contains(&torn), "{stdout}");
    fs::write(&mark, herald_journal::format::encode_durable_mark(78)).unwrap();
    let out = herald(&[
        "journal",
        "check",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("2 intact records follow it"));
}

#[test]
fn check_fails_on_corruption_before_the_tail_and_repair_truncates() {
    let dir = scratch_dir();
    let segments = build(dir.path(), 150);
    assert!(segments.len() >= 3);
    let mut bytes = fs::read(&segments[0]).unwrap();
    let offset = HEADER + 10 * FRAME;
    bytes[offset + 100] ^= 4;
    fs::write(&segments[0], &bytes).unwrap();
    let dir_arg = dir.path().to_str().unwrap();

    let out = herald(&["journal", "check", "--data-dir", dir_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let named = format!("segment {} offset {offset}", segments[0].display());
    assert!(stderr.contains(&named), "{stderr}");
    // Check alone changes nothing.
    assert_eq!(fs::read(&segments[0]).unwrap(), bytes);

    let out = herald(&["journal", "check", "--data-dir", dir_arg, "--repair"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "repaired: truncated {} at offset {offset}",
            segments[0].display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("140 records"), "{stdout}");
    let out = herald(&["journal", "check", "--data-dir", dir_arg]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("records 10  first_seq 1  last_seq 10"));
}

/// A journal a running process holds is checked with a note that it was in use, a
/// problem found only after three checks in a row, and never repaired: `--repair`
/// refuses before reading it, changing nothing.
#[test]
fn a_journal_in_use_is_checked_again_before_a_problem_is_reported_and_never_repaired() {
    let dir = scratch_dir();
    let segments = build(dir.path(), 150);
    let dir_arg = dir.path().to_str().unwrap();
    let mut config = JournalConfig::new(dir.path());
    config.segment_bytes = SEGMENT_BYTES_MIN;
    let (held, _) = Journal::open(config).unwrap();

    let out = herald(&["journal", "check", "--data-dir", dir_arg]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.lines().last() == Some("sound"), "{stdout}");
    assert!(
        stderr.contains("in use: a running process holds this journal"),
        "{stderr}"
    );
    assert!(!stderr.contains("checks"), "{stderr}");

    let mut bytes = fs::read(&segments[0]).unwrap();
    bytes[HEADER + 10 * FRAME + 100] ^= 4;
    fs::write(&segments[0], &bytes).unwrap();
    let out = herald(&["journal", "check", "--data-dir", dir_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the same problem was found in 3 checks 200ms apart"),
        "{stderr}"
    );

    let out = herald(&["journal", "check", "--data-dir", dir_arg, "--repair"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stop it before repairing"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_eq!(fs::read(&segments[0]).unwrap(), bytes);
    assert_eq!(
        segment_files(dir.path()),
        segments,
        "a refused repair deletes no segment"
    );

    // Once the process lets go, the journal is no longer in use and is repaired.
    drop(held);
    let out = herald(&["journal", "check", "--data-dir", dir_arg, "--repair"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("repaired: truncated"), "{stdout}");
    assert!(
        !text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
}

/// The segment files in `dir`, sorted.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

/// The first segment file removed from a journal that never checkpointed: its records
/// are missing, which check reports naming them, the first segment present and the way
/// out; `--repair` refuses, changing nothing.
#[test]
fn check_reports_missing_oldest_segments_and_repair_refuses_them() {
    let dir = scratch_dir();
    let segments = build(dir.path(), 150);
    assert!(segments.len() >= 3);
    fs::remove_file(&segments[0]).unwrap();
    let kept: Vec<Vec<u8>> = segments[1..].iter().map(|s| fs::read(s).unwrap()).collect();
    let dir_arg = dir.path().to_str().unwrap();
    let missing = format!(
        "history missing: seq 1..=62 missing: the first segment present, {}, starts at seq 63, \
         but no complete checkpoint is present to start from, so replay needs every record \
         from seq 1; restore the journal's missing or damaged segment files from a backup",
        segments[1].display()
    );

    let out = herald(&["journal", "check", "--data-dir", dir_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{stderr}", text(&out.stdout));
    assert!(stderr.contains(&missing), "{stderr}");
    assert!(!stderr.contains("--repair"), "{stderr}");
    assert!(!text(&out.stdout).contains("sound"));

    let out = herald(&["journal", "check", "--data-dir", dir_arg, "--repair"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{stderr}", text(&out.stdout));
    assert!(stderr.contains(&missing), "{stderr}");
    assert!(stderr.contains("not repaired, nothing changed"), "{stderr}");
    assert!(!segments[0].exists());
    for (segment, bytes) in segments[1..].iter().zip(&kept) {
        assert_eq!(&fs::read(segment).unwrap(), bytes, "{}", segment.display());
    }
}

/// A segment file removed from the middle of a journal whose later complete checkpoint
/// covers every record up to the gap: check exits 1 and says that a repair deletes the
/// segment files before the gap whole, losing nothing; `--repair` does so and says what
/// went, keeping the checkpoint and every record after it.
#[test]
fn check_reports_a_gap_a_later_checkpoint_covers_and_repair_drops_the_segments_before_it() {
    let dir = scratch_dir();
    let segments = build_then(dir.path(), 300, |journal| {
        assert_eq!(journal.checkpoint(b"state").unwrap(), 301);
        for _ in 0..5 {
            journal.append(1, 1, &[8u8; 1000]).unwrap();
        }
    });
    assert_eq!(segments.len(), 5);
    fs::remove_file(&segments[2]).unwrap();
    let kept: Vec<Vec<u8>> = segments[3..].iter().map(|s| fs::read(s).unwrap()).collect();
    let dir_arg = dir.path().to_str().unwrap();
    let defect = "the segment's last frames are missing or damaged: it ends at seq 124, the \
                  next segment starts at seq 187";
    let (gap_segment, gap_offset) = (segments[1].display(), HEADER + 62 * FRAME);

    let out = herald(&["journal", "check", "--data-dir", dir_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{stderr}", text(&out.stdout));
    let covered = format!(
        "corrupt: segment {gap_segment} offset {gap_offset}: {defect}; the checkpoint at seq 301 covers every record up to seq 300, so a \
         repair deletes the 2 segment files up to it whole (every record before seq 187), \
         losing nothing (rerun with --repair to do so)\n"
    );
    assert!(stderr.contains(&covered), "{stderr}");
    assert!(!stderr.contains("history missing"), "{stderr}");
    assert!(
        segments[0].exists() && segments[1].exists(),
        "check changed nothing"
    );

    let out = herald(&["journal", "check", "--data-dir", dir_arg, "--repair"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let repaired = format!(
        "repaired: deleted 2 segment files whole, every record before seq 187 (124 valid \
         records; {gap_segment} at offset {gap_offset}: {defect}); the checkpoint at seq 301 covers them (up to seq 300); lost 0 \
         records\n"
    );
    assert!(stdout.contains(&repaired), "{stdout}");
    assert!(!stdout.contains("truncated"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("sound"), "{stdout}");
    assert!(!segments[0].exists() && !segments[1].exists());
    for (segment, bytes) in segments[3..].iter().zip(&kept) {
        assert_eq!(&fs::read(segment).unwrap(), bytes, "{}", segment.display());
    }
    let stdout = check_sound(dir.path());
    assert!(
        stdout.contains("records 121  first_seq 187  last_seq 307"),
        "{stdout}"
    );
    assert!(
        stdout.contains("checkpoint_seq 301  checkpoint_covers_seq 300"),
        "{stdout}"
    );
}

#[test]
fn check_of_a_missing_directory_is_an_error() {
    let dir = scratch_dir();
    let missing = dir.path().join("nope");
    let out = herald(&["journal", "check", "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a directory"));
}

#[test]
fn bench_arguments_are_bounded() {
    let dir = scratch_dir();
    let d = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--seconds", "0"], "--seconds 0 must be in 1..=120"),
        (&["--seconds", "121"], "--seconds 121 must be in 1..=120"),
        (
            &["--record-bytes", "0"],
            "--record-bytes 0 must be in 1..=1048576",
        ),
        (
            &["--record-bytes", "1048577"],
            "--record-bytes 1048577 must be in 1..=1048576",
        ),
        (&["--group", "0"], "--group 0 must be in 1..=65536"),
        (&["--group", "65537"], "--group 65537 must be in 1..=65536"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["bench", "journal", "--data-dir", d];
        args.extend_from_slice(extra);
        let out = herald(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(
            text(&out.stderr).contains(message),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn bench_prints_progress_and_a_final_json_line() {
    let dir = scratch_dir();
    let out = herald(&[
        "bench",
        "journal",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--seconds",
        "1",
        "--record-bytes",
        "512",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("phase 1/2") && stderr.contains("phase 2/2"),
        "{stderr}"
    );
    let last = stdout.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    assert!(
        json["durable_records_per_s"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    assert!(json["appends_per_s"].as_f64().unwrap() > 0.0, "{last}");
    assert!(json["sync_p99_us"].is_u64(), "{last}");
    assert_eq!(json["record_bytes"], 512);
    // The scratch journal is removed afterwards.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_creates_a_missing_data_dir_and_keep_leaves_a_checkable_journal() {
    let dir = scratch_dir();
    let missing = dir.path().join("not").join("yet");
    let out = herald(&[
        "bench",
        "journal",
        "--data-dir",
        missing.to_str().unwrap(),
        "--seconds",
        "1",
        "--record-bytes",
        "256",
        "--keep",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let kept: Vec<PathBuf> = fs::read_dir(&missing)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        stderr.contains(&format!("kept the journal in {}", kept[0].display())),
        "{stderr}"
    );
    let check = herald(&["journal", "check", "--data-dir", kept[0].to_str().unwrap()]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
}
