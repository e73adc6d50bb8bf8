//! Recovery over arbitrary bytes: the input becomes the frames of the last
//! segment of a journal (behind a valid segment header, so the fuzzer spends
//! its time on frames; in one mode a reused file's, version 2, whose bytes after the
//! last frame are not looked at; in another with a durable mark, which decides whether
//! damage followed by intact frames is a torn tail), and the journal is opened. Opening
//! must never panic, every record it returns must be one whose header and payload
//! really are in the input with matching CRCs, intact frames are dropped with a torn
//! tail only past the mark, and an opened log reaches the mark.
//!
//! Run with `cargo +nightly fuzz run recover` in this directory.
#![no_main]

use herald_journal::{format, Journal, JournalConfig, SEGMENT_BYTES_MIN};
use libfuzzer_sys::fuzz_target;

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The salt the reused-segment mode writes in the header (version 2).
const SALT: u32 = 0x9e37_79b9;

fn fix_crcs(frames: &mut [u8], salt: u32) {
    let mut offset = 0;
    while offset + 32 <= frames.len() {
        let len = le_u32(&frames[offset + 4..offset + 8]) as usize;
        let total = format::frame_bytes(len as u64) as usize;
        if total > frames.len() - offset {
            return;
        }
        let payload_crc = crc32c::crc32c(&frames[offset + 32..offset + 32 + len]);
        frames[offset + 20..offset + 24].copy_from_slice(&payload_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&frames[offset..offset + 28]) ^ salt;
        frames[offset + 28..offset + 32].copy_from_slice(&header_crc.to_le_bytes());
        offset += total;
    }
}

fuzz_target!(|data: &[u8]| {
    // The pure scanner on the raw input (header included) must not panic.
    let _ = format::scan_segment(data);

    // Memory-backed when possible: every run creates and syncs a segment.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let mut config = JournalConfig::new(dir.path());
    config.segment_bytes = SEGMENT_BYTES_MIN;
    // Create an empty journal to get a valid first segment, then overwrite
    // its frame area with the input.
    drop(Journal::open(config.clone()).unwrap());
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let header = format::SEGMENT_HEADER_BYTES as usize;
    let (mode, body) = data.split_first().unwrap_or((&0, &[]));
    let n = body.len().min(bytes.len() - header);
    bytes[header..header + n].copy_from_slice(&body[..n]);
    let salt = if mode & 2 == 2 { SALT } else { 0 };
    if mode & 1 == 1 {
        // CRCs are a wall the fuzzer rarely climbs: in this mode fix them up
        // frame by frame, so it explores the structural checks behind them.
        fix_crcs(&mut bytes[header..header + n], salt);
    }
    if mode & 2 == 2 {
        // A segment written over a reused file: format version 2 with a salt, its
        // header's CRC made again.
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        bytes[32..36].copy_from_slice(&SALT.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&segment, &bytes).unwrap();
    // Bit 2: a durable mark at a small sequence number (bits 3..8), so that frames from
    // the input lie on both sides of it.
    let mark = (mode & 4 == 4).then_some(u64::from(mode >> 3));
    let mark_path = dir.path().join(format::DURABLE_MARK_FILE);
    match mark {
        Some(seq) => std::fs::write(&mark_path, format::encode_durable_mark(seq)).unwrap(),
        None => std::fs::remove_file(&mark_path).unwrap(),
    }

    let Ok((journal, recovery)) = Journal::open(config) else {
        return;
    };
    let mut offset = header;
    let mut count = 0;
    for frame in journal.replay_all() {
        let frame = frame.expect("frames accepted on open re-check on replay");
        // Independent check against the input bytes at that position.
        let h = &bytes[offset..offset + 32];
        assert_eq!(le_u32(&h[4..8]) as usize, frame.payload.len());
        assert_eq!(crc32c::crc32c(&h[0..28]) ^ salt, le_u32(&h[28..32]));
        let payload = &bytes[offset + 32..offset + 32 + frame.payload.len()];
        assert_eq!(payload, frame.payload);
        assert_eq!(crc32c::crc32c(payload), le_u32(&h[20..24]));
        offset += format::frame_bytes(frame.payload.len() as u64) as usize;
        count += 1;
    }
    assert_eq!(count, recovery.records);
    // The log reaches every record the mark says was made durable.
    if let Some(mark) = mark {
        assert!(
            recovery.last_seq.unwrap_or(0) >= mark,
            "opened without records up to the mark {mark}: {recovery:?}"
        );
    }
    if let Some(torn) = &recovery.torn_tail {
        if torn.intact_frames_discarded > 0 {
            let mark = mark.expect("intact frames dropped only with a durable mark");
            assert!(
                recovery.last_seq.unwrap_or(0) >= mark,
                "intact frames dropped at or before the mark {mark}: {recovery:?}"
            );
        }
    }
});
