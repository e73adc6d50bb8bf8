//! Recovery against damaged files: torn tails at every byte offset, single-bit
//! flips anywhere in the written bytes, damage in the middle of the last segment,
//! opt-in repair, and read-only check.

mod common;
use common::{replayed, segment_files};

use std::fs;
use std::path::{Path, PathBuf};

use herald_journal::{
    check, format, format::HeaderDefect, frame_bytes, Fault, Journal, JournalConfig, JournalError,
    SEGMENT_BYTES_MIN,
};
use proptest::prelude::*;

const HEADER_BYTES: u64 = 64;

/// These tests rewrite files thousands of times and check logic, not the
/// disk: use memory-backed storage when the machine has it.
fn scratch_dir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn config(dir: &Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir);
    c.segment_bytes = SEGMENT_BYTES_MIN;
    c
}

/// Payload bytes are never zero, so zeroing any of them changes the frame.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| 1 + ((seq as usize * 37 + i * 11) % 255) as u8)
        .collect()
}

/// Appends one record per entry of `lens` (a record that does not fit rolls
/// to a new segment), syncs, and returns the records written.
fn build(dir: &Path, lens: &[usize]) -> Vec<(u64, Vec<u8>)> {
    let (mut journal, _) = Journal::open(config(dir)).unwrap();
    let mut records = Vec::new();
    for &len in lens {
        let seq = journal.last_seq() + 1;
        let p = payload(seq, len);
        assert_eq!(journal.append(1, 1, &p).unwrap(), seq);
        records.push((seq, p));
    }
    journal.sync().unwrap();
    records
}

/// Sets the journal's durable mark to `seq` (`None`: removes it), as a crash or power
/// loss leaves it when the sync of the frames after `seq` never completed.
fn set_durable_mark(dir: &Path, seq: Option<u64>) {
    let path = dir.join(format::DURABLE_MARK_FILE);
    match seq {
        Some(seq) => fs::write(path, format::encode_durable_mark(seq)).unwrap(),
        None => match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
            _ => {}
        },
    }
}

/// Offsets (start, payload end) of the frames of a segment holding `lens`.
fn frame_spans(lens: &[usize]) -> Vec<(u64, u64)> {
    let mut offset = HEADER_BYTES;
    lens.iter()
        .map(|&len| {
            let span = (offset, offset + 32 + len as u64);
            offset += frame_bytes(len as u64);
            span
        })
        .collect()
}

#[test]
fn torn_tail_at_every_byte_offset_of_the_last_frames() {
    let dir = scratch_dir();
    // Two segments: the first filled by a near-maximal record, then small ones.
    let big = (SEGMENT_BYTES_MIN - HEADER_BYTES - 32 - 800) as usize;
    let last_lens = [5usize, 40, 17, 33];
    let mut lens = vec![big, 900];
    lens.extend_from_slice(&last_lens);
    let records = build(dir.path(), &lens);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2, "the 900-byte record forces a roll");
    let last = files.last().unwrap().clone();
    let original = fs::read(&last).unwrap();
    // Frames in the last segment: 900, then the small ones.
    let mut seg_lens = vec![900usize];
    seg_lens.extend_from_slice(&last_lens);
    assert_eq!(
        check(dir.path()).unwrap().segments[1].records,
        seg_lens.len() as u64
    );
    let spans = frame_spans(&seg_lens);
    let first_in_last = 2u64; // seqs 1 in segment 1; 2.. in segment 2
    let written_end = HEADER_BYTES + seg_lens.iter().map(|&l| frame_bytes(l as u64)).sum::<u64>();
    // Every offset from the start of the second-to-last frame to the end.
    let from = spans[spans.len() - 2].0 - 16;
    for cut in from..=written_end {
        let mut bytes = original.clone();
        bytes[cut as usize..written_end as usize].fill(0);
        fs::write(&last, &bytes).unwrap();
        let survivors = spans
            .iter()
            .take_while(|&&(_, payload_end)| payload_end <= cut)
            .count() as u64;
        let expected_last = first_in_last + survivors - 1;
        // Frames the cut reached had been made durable: acknowledged records damaged or
        // missing, refused without a change.
        if expected_last < records.len() as u64 {
            set_durable_mark(dir.path(), Some(expected_last + 1));
            let err = Journal::open(config(dir.path())).unwrap_err();
            assert!(
                matches!(
                    err,
                    JournalError::CorruptFrame { .. } | JournalError::DurableMissing { .. }
                ),
                "cut at {cut}: {err}"
            );
            assert_eq!(fs::read(&last).unwrap(), bytes, "cut at {cut}");
        }
        // A crash before the frames the cut reached were synced.
        set_durable_mark(dir.path(), Some(expected_last));
        let (mut journal, recovery) = Journal::open(config(dir.path())).unwrap();
        assert_eq!(recovery.last_seq, Some(expected_last), "cut at {cut}");
        // Torn only when the cut leaves part of a frame; a cut between
        // frames looks like records that were never written.
        let torn_expected = spans
            .get(survivors as usize)
            .is_some_and(|&(start, _)| cut > start);
        assert_eq!(recovery.torn_tail.is_some(), torn_expected, "cut at {cut}");
        if let Some(torn) = &recovery.torn_tail {
            assert_eq!(torn.segment, last);
            assert_eq!(torn.offset, spans[survivors as usize].0, "cut at {cut}");
        }
        let got = replayed(&journal);
        assert_eq!(
            got,
            records[..expected_last as usize].to_vec(),
            "cut at {cut}"
        );
        // The zeroed tail is not misread later: append, reopen, all clean.
        let seq = journal.append(1, 1, &payload(99, 3)).unwrap();
        assert_eq!(seq, expected_last + 1);
        journal.sync().unwrap();
        drop(journal);
        let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
        assert_eq!(recovery.torn_tail, None, "cut at {cut}");
        assert_eq!(recovery.last_seq, Some(seq));
        drop(journal);
    }
    fs::write(&last, &original).unwrap();
}

#[test]
fn single_bit_flips_are_detected_never_returned() {
    let dir = scratch_dir();
    let big = (SEGMENT_BYTES_MIN - HEADER_BYTES - 32 - 300) as usize;
    // Segment 1: three small frames then a big one; segment 2: three small.
    let lens = [3usize, 20, 16, big, 400, 7, 30];
    let records = build(dir.path(), &lens);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    let originals: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let seg1_lens = &lens[..4];
    let seg2_lens = &lens[4..];
    let seg1_end = HEADER_BYTES
        + seg1_lens
            .iter()
            .map(|&l| frame_bytes(l as u64))
            .sum::<u64>();
    let seg2_end = HEADER_BYTES
        + seg2_lens
            .iter()
            .map(|&l| frame_bytes(l as u64))
            .sum::<u64>();
    // Bytes to flip: headers and small frames of segment 1 (the big payload
    // is sampled), all of segment 2's frames, and some bytes past the end.
    let small_end = HEADER_BYTES
        + seg1_lens[..3]
            .iter()
            .map(|&l| frame_bytes(l as u64))
            .sum::<u64>();
    let mut targets: Vec<(usize, u64)> = (0..small_end + 32).map(|o| (0, o)).collect();
    targets.extend((small_end + 32..seg1_end).step_by(997).map(|o| (0, o)));
    targets.extend([seg1_end, seg1_end + 100, SEGMENT_BYTES_MIN - 1].map(|o| (0, o)));
    targets.extend((0..seg2_end).map(|o| (1, o)));
    targets.extend([seg2_end, seg2_end + 5000, SEGMENT_BYTES_MIN - 1].map(|o| (1, o)));
    // Only damage to the last frame of the last segment (or past it) can be a torn
    // tail: damage to an earlier frame leaves intact frames after it.
    let seg2_last_frame = HEADER_BYTES
        + seg2_lens[..seg2_lens.len() - 1]
            .iter()
            .map(|&l| frame_bytes(l as u64))
            .sum::<u64>();
    let mut detected = 0;
    // With the durable mark as the sync left it (every record acknowledged), and with
    // none (a journal that cannot tell which records were acknowledged).
    for marked in [true, false] {
        for &(file_index, offset) in &targets {
            for bit in 0..8 {
                let mut bytes = originals[file_index].clone();
                bytes[offset as usize] ^= 1 << bit;
                fs::write(&files[file_index], &bytes).unwrap();
                set_durable_mark(dir.path(), marked.then_some(records.len() as u64));
                match Journal::open(config(dir.path())) {
                    Err(e) => {
                        assert_eq!(
                            e.fault(),
                            Fault::Storage,
                            "flip {file_index}:{offset}:{bit}: {e}"
                        );
                        assert!(
                            file_index == 0 || offset < seg2_last_frame || marked,
                            "flip in the last frame of the last segment, unmarked, is a torn tail, not an error: {e}"
                        );
                    }
                    Ok((journal, recovery)) => {
                        // Only the last segment may lose its tail, and it says so.
                        assert_eq!(
                            file_index, 1,
                            "flip {offset}:{bit} in segment 1 went unnoticed"
                        );
                        assert!(
                            offset >= seg2_last_frame,
                            "flip {offset}:{bit} before the last frame of the last segment was taken for a torn tail"
                        );
                        assert!(
                            recovery.torn_tail.is_some(),
                            "flip {offset}:{bit} unreported"
                        );
                        let got = replayed(&journal);
                        // Marked, no acknowledged record is dropped: only bytes past
                        // the last frame may go.
                        assert!(
                            (got.len() < records.len() && !marked) || offset >= seg2_end,
                            "flip {offset}:{bit}, marked {marked}"
                        );
                        assert_eq!(got, records[..got.len()].to_vec(), "flip {offset}:{bit}");
                    }
                }
                detected += 1;
                // Restore both files: recovery may have zeroed a tail.
                for (f, original) in files.iter().zip(&originals) {
                    fs::write(f, original).unwrap();
                }
            }
        }
    }
    assert!(detected > 8000);
}

/// Records as written: (seq, payload).
type Records = Vec<(u64, Vec<u8>)>;

/// Three segments: 4 records; 1 big; 2 records. Their lengths, the records, the files.
fn three_segments(dir: &Path) -> ([usize; 7], Records, Vec<PathBuf>) {
    let big = (SEGMENT_BYTES_MIN - HEADER_BYTES - 32 - 300) as usize;
    let lens = [10usize, 10, 10, big - 200, big, 500, 8];
    let records = build(dir, &lens);
    let files = segment_files(dir);
    assert_eq!(files.len(), 3);
    (lens, records, files)
}

#[test]
fn corruption_before_the_tail_is_an_error_then_repair_truncates() {
    let dir = scratch_dir();
    let (lens, records, files) = three_segments(dir.path());
    // Corrupt the payload of the third record (seq 3) in segment 1.
    let spans = frame_spans(&lens[..4]);
    let offset = spans[2].0;
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[offset as usize + 40] ^= 0x10;
    fs::write(&files[0], &bytes).unwrap();

    let err = Journal::open(config(dir.path())).unwrap_err();
    match &err {
        JournalError::CorruptFrame {
            segment,
            offset: at,
            ..
        } => {
            assert_eq!(segment, &files[0]);
            assert_eq!(*at, offset);
        }
        other => panic!("expected CorruptFrame, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains(&files[0].display().to_string()) && text.contains(&offset.to_string()));

    // Read-only check reports the same without changing anything.
    let report = check(dir.path()).unwrap();
    assert!(!report.is_sound());
    let corruption = report.corruption.unwrap();
    assert_eq!(
        (corruption.segment, corruption.offset),
        (files[0].clone(), offset)
    );
    assert_eq!(fs::read(&files[0]).unwrap(), bytes);

    let mut cfg = config(dir.path());
    cfg.repair = true;
    let (mut journal, recovery) = Journal::open(cfg).unwrap();
    let repair = recovery.repair.clone().unwrap();
    assert_eq!(repair.segment, files[0]);
    assert_eq!(repair.offset, offset);
    assert_eq!(repair.segments_deleted, 2);
    assert_eq!(repair.records_lost, 5, "seqs 3..=7 are gone");
    assert!(repair.bytes_lost >= lens[3..].iter().map(|&l| l as u64).sum::<u64>());
    assert_eq!(recovery.last_seq, Some(2));
    assert_eq!(replayed(&journal), records[..2].to_vec());
    assert_eq!(journal.append(1, 1, b"after repair").unwrap(), 3);
    journal.sync().unwrap();
    drop(journal);
    assert!(check(dir.path()).unwrap().is_sound());
}

/// A segment file whose header does not decode (here its CRC, then its length) is
/// corruption at the file's start: open refuses it naming the file, `check` reports it
/// there, and repair truncates there, deleting it with every later file and counting the
/// records they held. With the journal's first file damaged so, repair keeps nothing and
/// says every record is lost. A header of a format this build does not read is refused,
/// repair or not, and nothing changes.
#[test]
fn a_damaged_segment_header_is_truncated_there_and_a_newer_format_refused() {
    let cut_short = HeaderDefect::LengthMismatch {
        header_bytes: SEGMENT_BYTES_MIN,
        file_bytes: SEGMENT_BYTES_MIN / 2,
    };
    for (damaged, last_seq, expected) in [(1, 4, HeaderDefect::BadCrc), (0, 0, cut_short)] {
        let dir = scratch_dir();
        let (_, records, files) = three_segments(dir.path());
        if expected == HeaderDefect::BadCrc {
            // The base sequence number: the header's CRC no longer matches.
            let mut bytes = fs::read(&files[damaged]).unwrap();
            bytes[20] ^= 0x01;
            fs::write(&files[damaged], &bytes).unwrap();
        } else {
            let file = fs::OpenOptions::new().write(true).open(&files[damaged]);
            file.unwrap().set_len(SEGMENT_BYTES_MIN / 2).unwrap();
        }

        match Journal::open(config(dir.path())).unwrap_err() {
            JournalError::CorruptSegmentHeader { segment, defect } => {
                assert_eq!(segment, files[damaged]);
                assert_eq!(defect, expected);
            }
            other => panic!("expected CorruptSegmentHeader, got {other}"),
        }
        let report = check(dir.path()).unwrap();
        let corruption = report.corruption.clone().unwrap();
        assert_eq!(
            (&corruption.segment, corruption.offset),
            (&files[damaged], 0)
        );
        assert_eq!(report.covered, None);
        assert_eq!(
            report.history_missing, None,
            "the damaged file starts at seq 1"
        );

        let mut cfg = config(dir.path());
        cfg.repair = true;
        let (mut journal, recovery) = Journal::open(cfg).unwrap();
        let repair = recovery.repair.clone().unwrap();
        assert_eq!((&repair.segment, repair.offset), (&files[damaged], 0));
        assert_eq!(repair.segments_deleted, 3 - damaged);
        assert_eq!(
            repair.records_lost,
            7 - last_seq,
            "seq {}..=7",
            last_seq + 1
        );
        assert_eq!(recovery.last_seq, (last_seq > 0).then_some(last_seq));
        assert_eq!(replayed(&journal), records[..last_seq as usize].to_vec());
        // Kept nothing: the journal starts again in a new first file of the same name.
        let gone = if damaged == 0 { 1 } else { damaged };
        assert!(files[gone..].iter().all(|f| !f.exists()));
        assert_eq!(journal.append(1, 1, b"after repair").unwrap(), last_seq + 1);
        journal.sync().unwrap();
        drop(journal);
        assert!(check(dir.path()).unwrap().is_sound());
    }

    // Version 99 in the second file: refused, nothing changed.
    let dir = scratch_dir();
    let (_, _, files) = three_segments(dir.path());
    set_newer_format(&files[1]);
    refused_for_newer_format(dir.path(), &files, &files[1]);

    // Damage in the first file, and the last one of a newer format: a truncation there
    // would delete that file, so the repair refuses before changing anything, and `check`
    // names the file.
    let dir = scratch_dir();
    let (lens, _, files) = three_segments(dir.path());
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[frame_spans(&lens[..4])[2].0 as usize + 40] ^= 0x10;
    fs::write(&files[0], &bytes).unwrap();
    set_newer_format(&files[2]);
    let corruption = check(dir.path()).unwrap().corruption.unwrap();
    assert_eq!(corruption.segment, files[0]);
    assert_eq!(corruption.newer_format.as_ref(), Some(&files[2]));
    refused_for_newer_format(dir.path(), &files, &files[2]);
}

/// A damaged header in a nearly empty segment file: the repair counts what the file may
/// have held (up to its last byte that is not zero), not its preallocated length.
#[test]
fn a_repair_at_a_damaged_header_counts_the_written_bytes_not_the_preallocation() {
    let dir = scratch_dir();
    let (lens, records, files) = three_segments(dir.path());
    // The last file holds seqs 6 and 7: two small frames at the start of a whole
    // preallocated segment.
    let file_bytes = fs::metadata(&files[2]).unwrap().len();
    let mut bytes = fs::read(&files[2]).unwrap();
    bytes[20] ^= 0x01;
    fs::write(&files[2], &bytes).unwrap();

    let mut cfg = config(dir.path());
    cfg.repair = true;
    let (journal, recovery) = Journal::open(cfg).unwrap();
    let repair = recovery.repair.clone().unwrap();
    assert_eq!((&repair.segment, repair.offset), (&files[2], 0));
    assert_eq!(repair.segments_deleted, 1);
    assert_eq!(recovery.last_seq, Some(5));
    assert_eq!(replayed(&journal), records[..5].to_vec());
    // The first frame whole (the second one's header follows it and is not zero), and
    // no more than both frames.
    let (first, both) = (
        frame_bytes(lens[5] as u64),
        frame_bytes(lens[5] as u64) + frame_bytes(lens[6] as u64),
    );
    assert!(
        (first..=both).contains(&repair.bytes_lost),
        "{} bytes lost, the frames {first}..={both}, the file {file_bytes}",
        repair.bytes_lost
    );
    assert!(
        file_bytes > 2 * both,
        "the file is preallocated: {file_bytes}"
    );
}

/// Gives the segment file at `path` format version 99, with a header CRC that matches.
fn set_newer_format(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, &bytes).unwrap();
}

/// A repair of the journal in `dir` is refused naming `newer`, a segment of version 99,
/// and changes none of `files`.
fn refused_for_newer_format(dir: &Path, files: &[PathBuf], newer: &Path) {
    let read = || -> Vec<Vec<u8>> { files.iter().map(|f| fs::read(f).unwrap()).collect() };
    let before = read();
    let mut cfg = config(dir);
    cfg.repair = true;
    match Journal::open(cfg).unwrap_err() {
        JournalError::CorruptSegmentHeader { segment, defect } => {
            assert_eq!(segment, newer);
            assert_eq!(defect, HeaderDefect::UnsupportedVersion { version: 99 });
        }
        other => panic!("expected CorruptSegmentHeader, got {other}"),
    }
    assert!(read() == before, "a refused repair changed a segment file");
}

/// A file named like a segment for seq 0 is none of the journal's (sequence numbers
/// start at 1): open and `check` leave it alone.
#[test]
fn a_file_named_for_seq_0_is_no_segment() {
    let dir = scratch_dir();
    let (_, records, _) = three_segments(dir.path());
    let stray = dir.path().join(format!("{:020}.seg", 0));
    fs::write(&stray, b"not a segment").unwrap();
    let report = check(dir.path()).unwrap();
    assert!(report.is_sound(), "{report:?}");
    assert_eq!(report.segments.len(), 3);
    let (journal, _) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(replayed(&journal), records);
    drop(journal);
    assert_eq!(fs::read(&stray).unwrap(), b"not a segment");
}

/// Damage in the middle of the last (here the only) segment, with intact frames after
/// it, is corruption naming the file and offset, never a torn tail dropped silently;
/// check counts the intact records after it, and repair says it lost them.
#[test]
fn damage_in_the_middle_of_the_last_segment_is_corruption() {
    let dir = scratch_dir();
    let lens = [100usize, 200, 300, 400, 50, 60, 70];
    let records = build(dir.path(), &lens);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let spans = frame_spans(&lens);
    let offset = spans[2].0;
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[offset as usize + 100] ^= 0x01;
    fs::write(&files[0], &bytes).unwrap();

    let err = Journal::open(config(dir.path())).unwrap_err();
    assert!(
        matches!(&err, JournalError::CorruptFrame { segment, offset: at, .. } if segment == &files[0] && *at == offset),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::Storage);
    assert_eq!(fs::read(&files[0]).unwrap(), bytes, "open changed nothing");

    let report = check(dir.path()).unwrap();
    let corruption = report.corruption.clone().expect("check reports the damage");
    assert_eq!(
        (&corruption.segment, corruption.offset),
        (&files[0], offset)
    );
    assert_eq!(
        corruption.records_after, 4,
        "seqs 4..=7 are intact after it"
    );
    assert_eq!(report.torn_tail, None);

    let mut cfg = config(dir.path());
    cfg.repair = true;
    let (journal, recovery) = Journal::open(cfg).unwrap();
    let repair = recovery.repair.clone().expect("the repair is reported");
    assert_eq!(
        (repair.segment.clone(), repair.offset),
        (files[0].clone(), offset)
    );
    assert_eq!(repair.records_lost, 5, "seqs 3..=7 are gone");
    assert_eq!(repair.segments_deleted, 0);
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(replayed(&journal), records[..2].to_vec());
    drop(journal);
    assert!(check(dir.path()).unwrap().is_sound());

    // Damage to the last frame only: corruption once it was made durable (the mark
    // says so), a torn tail when its sync never completed.
    let dir = scratch_dir();
    let records = build(dir.path(), &lens);
    let file = segment_files(dir.path()).remove(0);
    let last = frame_spans(&lens)[lens.len() - 1].0;
    let mut bytes = fs::read(&file).unwrap();
    bytes[last as usize + 40] ^= 0x01;
    fs::write(&file, &bytes).unwrap();
    assert!(!check(dir.path()).unwrap().is_sound());
    let err = Journal::open(config(dir.path())).unwrap_err();
    assert!(
        matches!(&err, JournalError::CorruptFrame { offset, .. } if *offset == last),
        "{err}"
    );
    set_durable_mark(dir.path(), Some(lens.len() as u64 - 1));
    assert!(check(dir.path()).unwrap().is_sound());
    let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.torn_tail.map(|t| t.offset), Some(last));
    assert_eq!(replayed(&journal), records[..lens.len() - 1].to_vec());
}

#[test]
fn a_segment_gap_is_an_error() {
    let dir = scratch_dir();
    let big = (SEGMENT_BYTES_MIN - HEADER_BYTES - 32 - 300) as usize;
    build(dir.path(), &[big, big, big]);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    fs::remove_file(&files[1]).unwrap();
    let err = Journal::open(config(dir.path())).unwrap_err();
    assert!(
        matches!(&err, JournalError::SegmentGap { segment, expected: 2, found: 3 } if segment == &files[2]),
        "{err}"
    );
    assert!(!check(dir.path()).unwrap().is_sound());
    // Repair truncates at the gap: the segment after it goes, and the journal opens.
    let mut cfg = config(dir.path());
    cfg.repair = true;
    let (journal, recovery) = Journal::open(cfg).unwrap();
    let repair = recovery.repair.expect("repaired");
    // Seq 2 (the removed file) and 3 (the segment after the gap).
    assert_eq!((repair.segments_deleted, repair.records_lost), (1, 2));
    assert_eq!(journal.last_seq(), 1);
    assert!(!files[2].exists());
    drop(journal);
    assert!(check(dir.path()).unwrap().is_sound());
}

/// A repair cut short by a crash after it had zeroed the damage but before it deleted
/// the later segments (the order of builds before this one) leaves a gap: the next
/// repair truncates there rather than refusing.
#[test]
fn a_repair_cut_short_after_zeroing_is_finished_by_the_next() {
    let dir = scratch_dir();
    let (lens, records, files) = three_segments(dir.path());
    // Record 3 damaged, then zeroed with everything after it in its segment.
    let offset = frame_spans(&lens[..4])[2].0 as usize;
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[offset..].fill(0);
    fs::write(&files[0], &bytes).unwrap();
    let err = Journal::open(config(dir.path())).unwrap_err();
    assert!(matches!(err, JournalError::SegmentGap { .. }), "{err}");
    let mut cfg = config(dir.path());
    cfg.repair = true;
    let (journal, recovery) = Journal::open(cfg).unwrap();
    let repair = recovery.repair.expect("repaired");
    assert_eq!(repair.segments_deleted, 2);
    assert_eq!(replayed(&journal), records[..2].to_vec());
    drop(journal);
    let (journal, recovery) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(recovery.last_seq, Some(2));
    drop(journal);
    assert!(check(dir.path()).unwrap().is_sound());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The scanner never panics on arbitrary bytes, and whatever it accepts
    /// re-checks: the same logic the fuzz target drives with coverage.
    #[test]
    fn scanning_arbitrary_segment_bytes_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        valid_header in any::<bool>(),
    ) {
        let mut bytes = vec![0u8; 4096];
        if valid_header {
            let dir = scratch_dir();
            drop(Journal::open(config(dir.path())).unwrap());
            let seg = segment_files(dir.path()).remove(0);
            bytes = fs::read(seg).unwrap();
        }
        let n = body.len().min(bytes.len() - 64);
        bytes[64..64 + n].copy_from_slice(&body[..n]);
        if let Ok(scan) = herald_journal::format::scan_segment(&bytes) {
            prop_assert!(scan.end_offset <= bytes.len() as u64);
            prop_assert!(scan.records == 0 || valid_header);
        }
    }
}
