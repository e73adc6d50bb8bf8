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

/// What `herald journal check` said of a damaged journal, and then `--repair`.
struct Repaired {
    /// The check's standard error.
    problem: String,
    /// The repair's standard output.
    repaired: String,
    /// The output of the check after it, which found the journal sound.
    sound: String,
}

/// `herald journal check` of `dir` fails (exit 1) saying `problem` and changes no file;
/// `--repair` then succeeds saying `repaired` and ends with "sound", and a check after
/// it finds the journal sound.
fn check_then_repair(dir: &Path, problem: &str, repaired: &str) -> Repaired {
    let dir_arg = dir.to_str().unwrap();
    let files = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), fs::read(p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let before = files(dir);
    let out = herald(&["journal", "check", "--data-dir", dir_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{stderr}", text(&out.stdout));
    assert!(stderr.contains(problem), "{stderr}");
    assert!(files(dir) == before, "check changed files");

    let out = herald(&["journal", "check", "--data-dir", dir_arg, "--repair"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(repaired), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("sound"), "{stdout}");
    Repaired {
        problem: stderr,
        repaired: stdout,
        sound: check_sound(dir),
    }
}

/// What `check` and `--repair` say of `damage` ("SEGMENT at offset N: DEFECT") when the
/// checkpoint at seq 301, covering every record up to seq 300, lets the two segment
/// files up to it go whole, holding `records` valid records, every one before
/// `first_kept`.
fn let_go_whole(damage: &str, first_kept: u64, records: u64) -> (String, String) {
    let (segment, rest) = damage.split_once(" at offset ").unwrap();
    let (offset, defect) = rest.split_once(": ").unwrap();
    (
        format!(
            "corrupt: segment {segment} offset {offset}: {defect}; the checkpoint at seq 301 \
             covers every record up to seq 300, so a repair deletes the 2 segment files up \
             to it whole (every record before seq {first_kept}), losing nothing (rerun with \
             --repair to do so)\n"
        ),
        format!(
            "repaired: deleted 2 segment files whole, every record before seq {first_kept} \
             ({records} valid records; {damage}); the checkpoint at seq 301 covers them (up \
             to seq 300); lost 0 records\n"
        ),
    )
}

/// Cuts the second of `segments` (of which there must be `count`) to half a smallest
/// segment, so that its header no longer matches it: its path as shown, and the defect
/// `check` names.
fn second_cut_short(segments: &[PathBuf], count: usize) -> (String, String) {
    assert_eq!(segments.len(), count);
    let half = SEGMENT_BYTES_MIN / 2;
    let file = fs::OpenOptions::new().write(true).open(&segments[1]);
    file.unwrap().set_len(half).unwrap();
    (
        segments[1].display().to_string(),
        format!("header says {SEGMENT_BYTES_MIN} bytes but the file has {half}"),
    )
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

/// Given a server's data directory, every shard's journal is checked in turn (never
/// repaired at once); a directory without a journal is an error, not "sound".
#[test]
fn a_servers_data_directory_is_checked_shard_by_shard_and_an_empty_one_holds_no_journal() {
    let dir = scratch_dir();
    let engine = dir.path().join("engine");
    for shard in 0..2u64 {
        build(&engine.join(format!("shard-{shard}")), 10 + shard);
    }
    for given in [dir.path(), engine.as_path()] {
        let out = herald(&["journal", "check", "--data-dir", given.to_str().unwrap()]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        for (shard, records) in [(0, 10), (1, 11)] {
            let header = format!(
                "journal {}",
                engine.join(format!("shard-{shard}")).display()
            );
            assert!(stdout.contains(&header), "{stdout}");
            assert!(stdout.contains(&format!("records {records} ")), "{stdout}");
        }
        assert_eq!(
            stdout.lines().filter(|l| *l == "sound").count(),
            2,
            "{stdout}"
        );
    }
    let out = herald(&[
        "journal",
        "check",
        "--repair",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("shard-0"),
        "{}",
        text(&out.stderr)
    );
    let empty = scratch_dir();
    let out = herald(&[
        "journal",
        "check",
        "--data-dir",
        empty.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("no journal"),
        "{}",
        text(&out.stderr)
    );
}

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

    let originals: Vec<Vec<u8>> = segments.iter().map(|s| fs::read(s).unwrap()).collect();
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
    // What the truncation changed was copied aside first, byte for byte, and the
    // journal leaves the copy alone.
    let saved: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(stdout.contains(&saved[0].display().to_string()), "{stdout}");
    for (segment, original) in segments.iter().zip(&originals) {
        let copy = fs::read(saved[0].join(segment.file_name().unwrap())).unwrap();
        assert!(copy == *original, "{}", segment.display());
    }
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
    let dir_arg = dir.path().to_str().unwrap();
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
    let defect = "the segment's last frames are missing or damaged: it ends at seq 124, the \
                  next segment starts at seq 187";
    let (gap_segment, gap_offset) = (segments[1].display(), HEADER + 62 * FRAME);

    let damage = format!("{gap_segment} at offset {gap_offset}: {defect}");
    let (covered, repaired) = let_go_whole(&damage, 187, 124);
    let out = check_then_repair(dir.path(), &covered, &repaired);
    assert!(!out.problem.contains("history missing"), "{}", out.problem);
    assert!(!out.repaired.contains("truncated"), "{}", out.repaired);
    assert!(!segments[0].exists() && !segments[1].exists());
    for (segment, bytes) in segments[3..].iter().zip(&kept) {
        assert_eq!(&fs::read(segment).unwrap(), bytes, "{}", segment.display());
    }
    let sound = out.sound;
    assert!(
        sound.contains("records 121  first_seq 187  last_seq 307"),
        "{sound}"
    );
    assert!(
        sound.contains("checkpoint_seq 301  checkpoint_covers_seq 300"),
        "{sound}"
    );
}

/// A segment file cut short (its header no longer matches its length) that a later
/// checkpoint covers: `check` says a repair deletes it and the files before it whole,
/// and `--repair` does so, losing nothing.
#[test]
fn check_reports_a_file_cut_short_a_later_checkpoint_covers_and_repair_drops_it() {
    let dir = scratch_dir();
    let segments = build_then(dir.path(), 300, |journal| {
        assert_eq!(journal.checkpoint(b"state").unwrap(), 301);
    });
    let (damaged, defect) = second_cut_short(&segments, 5);
    let (covered, repaired) = let_go_whole(&format!("{damaged} at offset 0: {defect}"), 125, 62);
    let sound = check_then_repair(dir.path(), &covered, &repaired).sound;
    assert!(!segments[0].exists() && !segments[1].exists());
    assert!(
        sound.contains("records 178  first_seq 125  last_seq 302"),
        "{sound}"
    );
}

/// The last segment file's header damaged: `--repair` deletes it and counts its bytes up
/// to its last non-zero byte, not its preallocated length; its records are counted by
/// the durable mark, and without one it says that how many is not known (no later file
/// tells) instead of "0 records".
#[test]
fn repair_of_the_last_file_s_header_counts_what_it_can_and_says_what_it_cannot() {
    for with_mark in [true, false] {
        let dir = scratch_dir();
        let segments = build(dir.path(), 150);
        let last = segments.last().unwrap();
        let file_bytes = fs::metadata(last).unwrap().len();
        let mut bytes = fs::read(last).unwrap();
        bytes[20] ^= 0x01;
        fs::write(last, &bytes).unwrap();
        if !with_mark {
            fs::remove_file(dir.path().join(herald_journal::format::DURABLE_MARK_FILE)).unwrap();
        }
        let damaged = last.display().to_string();
        let lost = if with_mark {
            "; kept records up to seq 124; lost 26 records (seq 125..=150), ".to_owned()
        } else {
            format!(
                "; kept records up to seq 124; lost the records {damaged} held (how many is not \
                 known: its header did not decode), "
            )
        };
        let out = check_then_repair(
            dir.path(),
            &format!("corrupt: segment {damaged} offset 0: "),
            &lost,
        );
        assert!(!last.exists());
        let bytes_lost: u64 = out
            .repaired
            .lines()
            .find(|l| l.starts_with("repaired: "))
            .and_then(|l| l.strip_suffix(" bytes"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}", out.repaired));
        assert!(
            0 < bytes_lost && bytes_lost < file_bytes / 2,
            "{bytes_lost} of a {file_bytes}-byte file"
        );
    }
}

/// A segment file cut short that no later checkpoint covers: `check` names it at offset
/// 0 and `--repair` truncates there, deleting it and every later file, counting what
/// they held. A segment of a format this build does not read is named too, and
/// `--repair` refuses it, changing nothing.
#[test]
fn repair_truncates_at_a_file_cut_short_and_refuses_a_newer_format() {
    let dir = scratch_dir();
    let segments = build(dir.path(), 150);
    let (damaged, defect) = second_cut_short(&segments, 3);
    let named = format!(
        "corrupt: segment {damaged} offset 0: {defect}; 0 intact records follow it in that \
         segment, and 1 later segments (rerun with --repair to truncate there, losing what \
         follows)\n"
    );
    let repaired = format!(
        "repaired: deleted {damaged} ({defect}) and the 1 segment files after it; kept \
         records up to seq 62; lost 88 records (seq 63..=150), "
    );
    let out = check_then_repair(dir.path(), &named, &repaired);
    assert!(!segments[1].exists() && !segments[2].exists());
    assert!(out.sound.contains("records 62  first_seq 1  last_seq 62"));

    // Version 99 in the first segment's header, with its CRC made to match.
    let mut bytes = fs::read(&segments[0]).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segments[0], &bytes).unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let out = herald(&["journal", "check", "--data-dir", dir_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "unsupported format version 99; 0 intact records follow it in that segment, and 0 \
             later segments (no repair proceeds: {} is of a format this build does not read; \
             run the build that wrote it)",
            segments[0].display()
        )),
        "{stderr}"
    );
    let out = herald(&["journal", "check", "--data-dir", dir_arg, "--repair"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "not repaired, nothing changed: segment {} is of a format this build does not \
             read, and a repair would delete it; run the build that wrote it",
            segments[0].display()
        )),
        "{stderr}"
    );
    assert_eq!(fs::read(&segments[0]).unwrap(), bytes);
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
