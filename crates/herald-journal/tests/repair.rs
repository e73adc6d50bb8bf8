//! Repair against random damage: a journal built by a random mix of appends,
//! checkpoints, syncs and compactions, closed cleanly, then damaged in one or two places
//! (a flipped byte in a frame, a segment file deleted, a segment file cut short), is
//! checked and repaired, and what the repair keeps is held to a model of everything that
//! was appended.

mod common;
use common::{replayed, segment_files};

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use herald_journal::{
    check, format, frame_bytes, CheckReport, Journal, JournalConfig, JournalError, Recovery,
    CHECKPOINT_PART_HEADER_BYTES, KIND_CHECKPOINT, SEGMENT_BYTES_MIN,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// Small segments, so that a case holds several segment files.
fn config(dir: &Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir);
    c.segment_bytes = SEGMENT_BYTES_MIN;
    c.group_delay_us = 200;
    c
}

fn repairing(cfg: &JournalConfig) -> JournalConfig {
    let mut c = cfg.clone();
    c.repair = true;
    c
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize * 31 + i * 7) as u8)
        .collect()
}

/// What replay returns, as (sequence number, kind, payload).
fn collect(journal: &Journal) -> Vec<(u64, u16, Vec<u8>)> {
    journal
        .replay()
        .map(|f| {
            let f = f.unwrap();
            (f.seq, f.kind, f.payload.to_vec())
        })
        .collect()
}

/// The base sequence number of a segment file, from its name.
fn segment_base(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Every segment file of `dir` and its durable mark, with their bytes (temporary files
/// of an interrupted roll are not part of the journal: open removes them).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = segment_files(dir);
    let mark = dir.join(format::DURABLE_MARK_FILE);
    if mark.exists() {
        files.push(mark);
    }
    files
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// The files of `before` ([`snapshot`]) that `dir` no longer holds as they were, and
/// those it holds that were not there.
fn changed(before: &[(PathBuf, Vec<u8>)], dir: &Path) -> Vec<PathBuf> {
    let after = snapshot(dir);
    let mut changed: Vec<PathBuf> = before
        .iter()
        .filter(|file| !after.contains(file))
        .chain(after.iter().filter(|file| !before.contains(file)))
        .map(|(path, _)| path.clone())
        .collect();
    changed.dedup();
    changed
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        len: usize,
    },
    /// Records enough to roll a segment or more.
    Burst {
        records: usize,
    },
    /// A checkpoint written with the journal held (`begin_checkpoint`).
    Checkpoint {
        len: usize,
        parts: usize,
    },
    /// A checkpoint whose writer stops before its end marker.
    Abandoned {
        parts: usize,
    },
    /// Opens a checkpoint written across appends (abandoning one still open).
    Open,
    /// The next part of the open checkpoint (nothing with none open).
    Part {
        len: usize,
    },
    /// Ends the open checkpoint.
    Finish,
    /// A checkpoint opened, then a record of `len` bytes, then its one part too large
    /// for the room left in that record's segment: the part rolls into a new segment,
    /// so the checkpoint lies after a segment whose last record it does not cover.
    Straddle {
        len: usize,
    },
    Sync,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..4000).prop_map(|len| Op::Append { len }),
        2 => (10usize..40).prop_map(|records| Op::Burst { records }),
        2 => (0usize..64, 1usize..4).prop_map(|(len, parts)| Op::Checkpoint { len, parts }),
        1 => (0usize..3).prop_map(|parts| Op::Abandoned { parts }),
        1 => Just(Op::Open),
        2 => (0usize..5000).prop_map(|len| Op::Part { len }),
        1 => Just(Op::Finish),
        1 => (0usize..3000).prop_map(|len| Op::Straddle { len }),
        1 => Just(Op::Sync),
        1 => Just(Op::Compact),
    ]
}

/// Which segment file a deletion takes.
#[derive(Debug, Clone)]
enum Which {
    Oldest,
    Middle(Index),
    Last,
}

#[derive(Debug, Clone)]
enum Injury {
    /// XORs `bits` into a byte (header, payload or padding) of a frame of a segment.
    Flip {
        segment: Index,
        frame: Index,
        byte: Index,
        bits: u8,
    },
    Delete(Which),
    /// Cuts a segment file short at an offset from the end of its header to the end of
    /// its frames:
    /// `shorten` sets the file's length there (its header no longer matches it),
    /// otherwise the bytes from there on are zeroed (the file keeps its length, as a
    /// preallocated file whose last writes were lost).
    Truncate {
        segment: Index,
        at: Index,
        shorten: bool,
    },
}

fn injury() -> impl Strategy<Value = Injury> {
    let which = prop_oneof![
        Just(Which::Oldest),
        any::<Index>().prop_map(Which::Middle),
        Just(Which::Last),
    ];
    prop_oneof![
        4 => (any::<Index>(), any::<Index>(), any::<Index>(), 1u8..=255).prop_map(
            |(segment, frame, byte, bits)| Injury::Flip { segment, frame, byte, bits }
        ),
        2 => which.prop_map(Injury::Delete),
        2 => (any::<Index>(), any::<Index>(), proptest::bool::weighted(0.25)).prop_map(
            |(segment, at, shorten)| Injury::Truncate { segment, at, shorten }
        ),
    ]
}

/// A complete checkpoint of the model.
#[derive(Debug, Clone)]
struct ModelCheckpoint {
    first_seq: u64,
    covers_seq: u64,
    /// Its parts, as replay returns them: (sequence number, part).
    parts: Vec<(u64, Vec<u8>)>,
    /// Sequence number of its end marker.
    end_seq: u64,
}

/// Everything appended: each frame's payload length, the ordinary records and the
/// complete checkpoints.
#[derive(Debug, Default)]
struct Model {
    /// Payload bytes of frame `seq`, at index `seq - 1`.
    frame_payload_bytes: Vec<u64>,
    records: Vec<(u64, Vec<u8>)>,
    checkpoints: Vec<ModelCheckpoint>,
}

impl Model {
    fn last_seq(&self) -> u64 {
        self.frame_payload_bytes.len() as u64
    }

    fn frame(&mut self, payload_bytes: usize) -> u64 {
        self.frame_payload_bytes.push(payload_bytes as u64);
        self.last_seq()
    }

    fn part(&mut self, part_bytes: usize) -> u64 {
        self.frame(CHECKPOINT_PART_HEADER_BYTES as usize + part_bytes)
    }

    /// What replay returns from the complete checkpoint starting at `checkpoint_seq`
    /// (from the journal's first record without one), up to seq `last_seq`.
    fn replay(&self, checkpoint_seq: Option<u64>, last_seq: u64) -> Option<Replayed> {
        let (parts, covers_seq) = match checkpoint_seq {
            None => (Vec::new(), 0),
            Some(seq) => {
                let c = self.checkpoints.iter().find(|c| c.first_seq == seq)?;
                (c.parts.clone(), c.covers_seq)
            }
        };
        let parts = parts.into_iter().map(|(s, p)| (s, KIND_CHECKPOINT, p));
        let records = self
            .records
            .iter()
            .filter(|(s, _)| *s > covers_seq && *s <= last_seq)
            .map(|(s, p)| (*s, 1, p.clone()));
        Some(parts.chain(records).collect())
    }
}

type Replayed = Vec<(u64, u16, Vec<u8>)>;

/// Builds the journal of `ops` in `dir` and closes it; returns the model.
fn build(dir: &Path, ops: &[Op]) -> Model {
    let (mut journal, _) = Journal::open(config(dir)).unwrap();
    let mut model = Model::default();
    // The checkpoint open across appends: its handle, covers_seq and parts so far.
    type Parts = Vec<(u64, Vec<u8>)>;
    let mut open: Option<(herald_journal::CheckpointHandle, u64, Parts)> = None;
    let append = |journal: &mut Journal, model: &mut Model, len: usize| {
        let seq = model.frame(len);
        let p = payload(seq, len);
        assert_eq!(journal.append(1, 1, &p).unwrap(), seq);
        model.records.push((seq, p));
    };
    for op in ops {
        match *op {
            Op::Append { len } => append(&mut journal, &mut model, len),
            Op::Burst { records } => {
                for _ in 0..records {
                    append(&mut journal, &mut model, 2500);
                }
            }
            Op::Checkpoint { len, parts } => {
                open = None;
                let covers_seq = model.last_seq();
                let mut writer = journal.begin_checkpoint();
                let mut written = Vec::new();
                for _ in 0..parts {
                    let seq = model.part(len);
                    let p = payload(seq, len);
                    writer.part(&p).unwrap();
                    written.push((seq, p));
                }
                let first_seq = writer.finish().unwrap();
                let end_seq = model.part(0);
                assert_eq!(first_seq, written[0].0);
                model.checkpoints.push(ModelCheckpoint {
                    first_seq,
                    covers_seq,
                    parts: written,
                    end_seq,
                });
            }
            Op::Abandoned { parts } => {
                open = None;
                let mut writer = journal.begin_checkpoint();
                for _ in 0..parts {
                    let seq = model.part(8);
                    writer.part(&payload(seq, 8)).unwrap();
                }
                drop(writer);
            }
            Op::Open => {
                let handle = journal.open_checkpoint();
                assert_eq!(handle.covers_seq(), model.last_seq());
                open = Some((handle, model.last_seq(), Vec::new()));
            }
            Op::Part { len } => {
                if let Some((handle, _, parts)) = open.as_mut() {
                    let seq = model.part(len);
                    let p = payload(seq, len);
                    journal.checkpoint_part(handle, &p).unwrap();
                    parts.push((seq, p));
                }
            }
            Op::Finish => {
                if let Some((handle, covers_seq, mut parts)) = open.take() {
                    if parts.is_empty() {
                        // A checkpoint with no part gets one empty part.
                        parts.push((model.part(0), Vec::new()));
                    }
                    let first_seq = journal.finish_checkpoint(handle).unwrap();
                    assert_eq!(first_seq, parts[0].0);
                    let end_seq = model.part(0);
                    model.checkpoints.push(ModelCheckpoint {
                        first_seq,
                        covers_seq,
                        parts,
                        end_seq,
                    });
                }
            }
            Op::Straddle { len } => {
                open = None;
                let covers_seq = model.last_seq();
                let mut handle = journal.open_checkpoint();
                let seq = model.frame(len);
                let (appended, at) = journal.append_placed(1, 1, &payload(seq, len)).unwrap();
                assert_eq!(appended, seq);
                model.records.push((seq, payload(seq, len)));
                let end = at.offset + frame_bytes(len as u64) - format::FRAME_HEADER_BYTES;
                // (Not past the largest part, in the rare case that the record is the
                // first in its segment: the part then stays there.)
                let room = (SEGMENT_BYTES_MIN - end).min(journal.checkpoint_part_bytes_max());
                let seq = model.part(room as usize);
                let p = payload(seq, room as usize);
                journal.checkpoint_part(&mut handle, &p).unwrap();
                let first_seq = journal.finish_checkpoint(handle).unwrap();
                assert_eq!(first_seq, seq);
                let end_seq = model.part(0);
                model.checkpoints.push(ModelCheckpoint {
                    first_seq,
                    covers_seq,
                    parts: vec![(seq, p)],
                    end_seq,
                });
            }
            Op::Sync => {
                assert_eq!(journal.sync().unwrap(), model.last_seq());
            }
            Op::Compact => {
                journal.sync().unwrap();
                journal.compact().unwrap();
            }
        }
    }
    drop(open);
    drop(journal);
    model
}

/// A segment file as the model knows it: its path and the frames it holds.
#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
    last_seq: u64,
}

impl Segment {
    fn holds(&self, seq: u64) -> bool {
        (self.first_seq..=self.last_seq).contains(&seq)
    }
}

/// The segment files of the closed journal of `model` in `dir`, each with the frames it
/// holds; checks that every frame starts where the model says.
fn segments_of(dir: &Path, model: &Model) -> Vec<Segment> {
    let files = segment_files(dir);
    let bases: Vec<u64> = files.iter().map(|f| segment_base(f)).collect();
    let mut segments = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let last_seq = bases.get(i + 1).map_or(model.last_seq(), |next| next - 1);
        let bytes = fs::read(path).unwrap();
        let mut offset = format::SEGMENT_HEADER_BYTES;
        for seq in bases[i]..=last_seq {
            let head = &bytes[offset as usize..offset as usize + 16];
            assert_eq!(&head[0..4], &0x4A52_4C48u32.to_le_bytes(), "frame magic");
            assert_eq!(u64::from_le_bytes(head[8..16].try_into().unwrap()), seq);
            offset += frame_bytes(frame_payload(model, seq));
        }
        segments.push(Segment {
            path: path.clone(),
            first_seq: bases[i],
            last_seq,
        });
    }
    segments
}

fn frame_payload(model: &Model, seq: u64) -> u64 {
    model.frame_payload_bytes[seq as usize - 1]
}

/// Where frame `seq` starts in `segment`.
fn frame_offset(model: &Model, segment: &Segment, seq: u64) -> u64 {
    format::SEGMENT_HEADER_BYTES
        + (segment.first_seq..seq)
            .map(|s| frame_bytes(frame_payload(model, s)))
            .sum::<u64>()
}

/// What the injuries did to each segment file the journal was closed with (at the same
/// index).
#[derive(Debug, Clone)]
struct Damage {
    deleted: Vec<bool>,
    /// Cut short: its length no longer matches its header.
    shortened: Vec<bool>,
    /// The first frame whose bytes changed.
    damaged_from: Vec<Option<u64>>,
}

impl Damage {
    fn new(segments: usize) -> Self {
        Self {
            deleted: vec![false; segments],
            shortened: vec![false; segments],
            damaged_from: vec![None; segments],
        }
    }

    fn harmed(&self, i: usize) -> bool {
        self.deleted[i] || self.shortened[i] || self.damaged_from[i].is_some()
    }

    fn damage(&mut self, i: usize, seq: u64) {
        self.damaged_from[i] = Some(self.damaged_from[i].map_or(seq, |d| d.min(seq)));
    }

    /// Indexes of the segment files left.
    fn present(&self) -> Vec<usize> {
        (0..self.deleted.len())
            .filter(|&i| !self.deleted[i])
            .collect()
    }

    /// A segment file left whose header no longer matches it: no repair opens that.
    fn unreadable(&self) -> bool {
        self.present().into_iter().any(|i| self.shortened[i])
    }
}

/// The frame of `segment` holding byte `offset`, if any.
fn frame_at(model: &Model, segment: &Segment, offset: u64) -> Option<u64> {
    (segment.first_seq..=segment.last_seq).find(|&seq| {
        let start = frame_offset(model, segment, seq);
        (start..start + frame_bytes(frame_payload(model, seq))).contains(&offset)
    })
}

/// Applies `injury` to the segment files left of those the journal was closed with
/// (`segments`), noting what it did in `damage`.
fn injure(model: &Model, segments: &[Segment], damage: &mut Damage, injury: &Injury) {
    let present = damage.present();
    if present.is_empty() {
        return;
    }
    let open = |path: &Path| {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    };
    match injury {
        Injury::Flip {
            segment,
            frame,
            byte,
            bits,
        } => {
            let i = present[segment.index(present.len())];
            let segment = &segments[i];
            let count = segment.last_seq + 1 - segment.first_seq;
            if count == 0 {
                return; // An empty journal's segment: no frame to damage.
            }
            let seq = segment.first_seq + frame.index(count as usize) as u64;
            let offset = frame_offset(model, segment, seq)
                + byte.index(frame_bytes(frame_payload(model, seq)) as usize) as u64;
            let file = open(&segment.path);
            let mut b = [0u8];
            if file.read_at(&mut b, offset).unwrap() == 0 {
                return; // Past the end of a file cut short before.
            }
            file.write_all_at(&[b[0] ^ bits], offset).unwrap();
            damage.damage(i, seq);
        }
        Injury::Delete(which) => {
            let index = match which {
                Which::Oldest => 0,
                Which::Middle(i) if present.len() > 2 => 1 + i.index(present.len() - 2),
                Which::Middle(i) => i.index(present.len()),
                Which::Last => present.len() - 1,
            };
            let i = present[index];
            fs::remove_file(&segments[i].path).unwrap();
            damage.deleted[i] = true;
        }
        Injury::Truncate {
            segment,
            at,
            shorten,
        } => {
            let i = present[segment.index(present.len())];
            let segment = &segments[i];
            let end = frame_offset(model, segment, segment.last_seq + 1);
            // After the segment header, which no repair mends.
            let header = format::SEGMENT_HEADER_BYTES;
            let at = header + at.index((end - header) as usize + 1) as u64;
            let file = open(&segment.path);
            let len = file.metadata().unwrap().len();
            if *shorten {
                if at < len {
                    file.set_len(at).unwrap();
                    damage.shortened[i] = true;
                }
                return;
            }
            let mut tail = vec![0; len.saturating_sub(at) as usize];
            file.read_exact_at(&mut tail, at).unwrap();
            let Some(first_nonzero) = tail.iter().position(|&b| b != 0) else {
                return; // Zero already: nothing changed.
            };
            file.write_all_at(&vec![0; tail.len()], at).unwrap();
            // Bytes after the last frame (an earlier use's, in a reused file) are no
            // frame's.
            if let Some(seq) = frame_at(model, segment, at + first_nonzero as u64) {
                damage.damage(i, seq);
            }
        }
    }
}

/// Whether the injuries harmed some segment file, and each one they harmed is covered by
/// a later complete checkpoint of the model: one that covers every frame in it and whose
/// frames all lie in later segment files, none harmed up to its end.
fn all_covered(model: &Model, segments: &[Segment], damage: &Damage) -> bool {
    let harmed: Vec<usize> = (0..segments.len()).filter(|&i| damage.harmed(i)).collect();
    !harmed.is_empty()
        && harmed.iter().all(|&i| {
            model.checkpoints.iter().any(|c| {
                let Some(end) = segments.iter().position(|s| s.holds(c.end_seq)) else {
                    return false;
                };
                c.first_seq > segments[i].last_seq
                    && c.covers_seq >= segments[i].last_seq
                    && !harmed.iter().any(|&j| i < j && j <= end)
            })
        })
}

/// The latest complete checkpoint of the model whose frames all lie in `first..=last`.
fn latest_checkpoint(model: &Model, first: u64, last: u64) -> Option<&ModelCheckpoint> {
    model
        .checkpoints
        .iter()
        .filter(|c| c.first_seq >= first && c.end_seq <= last)
        .max_by_key(|c| c.end_seq)
}

/// What a repair that only truncates would keep: the segment files left up to the first
/// frame it cannot read in order (damaged, or missing in a gap between files), so the log
/// up to the returned cut, starting from the first file's base; and whether that misses
/// no record replay needs (from the latest complete checkpoint kept). `None` when it
/// reads a file whose header no longer matches it first (which no repair opens).
fn truncation(model: &Model, segments: &[Segment], damage: &Damage) -> Option<(u64, bool)> {
    let present = damage.present();
    let Some(&first) = present.first() else {
        return Some((0, true));
    };
    let first_base = segments[first].first_seq;
    let mut expected = first_base;
    let mut cut = None;
    for i in present {
        if damage.shortened[i] {
            return None;
        }
        if segments[i].first_seq != expected {
            cut = Some(expected - 1);
            break;
        }
        if let Some(seq) = damage.damaged_from[i] {
            cut = Some(seq - 1);
            break;
        }
        expected = segments[i].last_seq + 1;
    }
    let cut = cut.unwrap_or(expected - 1);
    let needed_from = format::history_needed_from(
        latest_checkpoint(model, first_base, cut).map(|c| c.covers_seq),
    );
    Some((cut, first_base <= needed_from))
}

/// `check` and a repair agree, field by field, on what the repair keeps.
fn agree(report: &CheckReport, recovery: &Recovery) -> Result<(), TestCaseError> {
    prop_assert_eq!(&report.covered, &recovery.covered, "covered");
    prop_assert_eq!(
        report.corruption.is_some(),
        recovery.repair.is_some(),
        "check's corruption {:?} against the repair's loss {:?}",
        report.corruption,
        recovery.repair
    );
    prop_assert_eq!(&report.torn_tail, &recovery.torn_tail, "torn tail");
    prop_assert_eq!(
        (report.first_seq, report.last_seq, report.records),
        (recovery.first_seq, recovery.last_seq, recovery.records),
        "first seq, last seq, records"
    );
    prop_assert_eq!(
        (report.checkpoint_seq, report.checkpoint_covers_seq),
        (recovery.checkpoint_seq, recovery.checkpoint_covers_seq),
        "checkpoint"
    );
    Ok(())
}

fn journal_dir() -> tempfile::TempDir {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::tempdir_in(base).unwrap()
}

/// One case: build, injure, check, repair, reopen.
fn repair_case(ops: &[Op], injuries: &[Injury]) -> Result<(), TestCaseError> {
    let dir = journal_dir();
    let cfg = config(dir.path());
    let model = build(dir.path(), ops);
    // Closed cleanly: every frame made durable, and the mark says so, so any damage
    // found on open is to an acknowledged frame (no torn tail is legitimate).
    let mark = fs::read(dir.path().join(format::DURABLE_MARK_FILE)).unwrap();
    prop_assert_eq!(
        format::decode_durable_mark_file(&mark),
        Some(model.last_seq())
    );
    let segments = segments_of(dir.path(), &model);
    prop_assert!(check(dir.path()).unwrap().is_sound());

    let mut damage = Damage::new(segments.len());
    for injury in injuries {
        injure(&model, &segments, &mut damage, injury);
    }
    let shortened = damage.unreadable();
    let covered_whole = all_covered(&model, &segments, &damage) && !shortened;
    let truncated = truncation(&model, &segments, &damage);

    let before = snapshot(dir.path());
    let report = check(dir.path()).unwrap();
    prop_assert_eq!(
        changed(&before, dir.path()),
        Vec::<PathBuf>::new(),
        "check changed files"
    );

    let (journal, recovery) = match Journal::open(repairing(&cfg)) {
        Ok(opened) => opened,
        Err(err) => {
            // Refused: nothing changed, and `check` said why beforehand.
            prop_assert_eq!(
                changed(&before, dir.path()),
                Vec::<PathBuf>::new(),
                "a refused repair changed files: {}",
                err
            );
            prop_assert!(!report.is_sound(), "{err}; {report:?}");
            match &err {
                JournalError::HistoryMissing { missing, .. } => {
                    prop_assert_eq!(report.history_missing.as_ref(), Some(missing));
                    prop_assert!(!covered_whole, "covered damage refused: {err}");
                    // Only when a truncation at the first damage would lack records
                    // replay needs too (not judged with a file cut short before that
                    // damage, which no repair gets past).
                    prop_assert!(
                        truncated.is_none_or(|(_, history_kept)| !history_kept),
                        "refused, but truncating at the first damage keeps what replay \
                         needs ({truncated:?}): {err}"
                    );
                }
                // A segment file cut short no longer matches its header: no repair
                // mends that (an operator removes or restores the file).
                JournalError::CorruptSegmentHeader { .. } if shortened => {}
                _ => prop_assert!(false, "repair refused: {err}; {report:?}"),
            }
            return Ok(());
        }
    };
    prop_assert_eq!(&report.history_missing, &None, "check said missing history");
    agree(&report, &recovery)?;
    prop_assert_eq!(&recovery.torn_tail, &None, "every frame was acknowledged");

    // What is kept is the model up to where the repair cut, from the latest complete
    // checkpoint of the model in what it kept. Without segment files let go as covered,
    // it cut at the first damage (or gap), as a truncation does, and only where that
    // keeps every record replay needs; letting them go, it cut there or later.
    let last_seq = journal.last_seq();
    let replay = collect(&journal);
    let every_frame = replayed(&journal);
    let truncated = truncated.expect("no repair opens a file cut short");
    match &recovery.covered {
        None => prop_assert_eq!(
            (last_seq, true),
            truncated,
            "cut at {} (history kept), where truncating at the first damage cuts at {:?}",
            last_seq,
            truncated
        ),
        Some(_) => prop_assert!(last_seq >= truncated.0, "cut at {last_seq}, {truncated:?}"),
    }
    let kept_from = match (&recovery.covered, recovery.first_seq) {
        (Some(covered), _) => covered.first_seq_kept,
        (None, first) => first.unwrap_or(format::FIRST_SEQ),
    };
    let latest = latest_checkpoint(&model, kept_from, last_seq).map(|c| c.first_seq);
    prop_assert_eq!(
        recovery.checkpoint_seq,
        latest,
        "the latest complete checkpoint kept"
    );
    let expected = model.replay(recovery.checkpoint_seq, last_seq);
    prop_assert!(
        expected.is_some(),
        "checkpoint {:?} is none of the model's",
        recovery.checkpoint_seq
    );
    prop_assert_eq!(&replay, expected.as_ref().unwrap());
    match &recovery.repair {
        None => prop_assert_eq!(last_seq, model.last_seq(), "lost without a word"),
        Some(repair) => {
            prop_assert_eq!(
                repair.records_lost,
                model.last_seq() - last_seq,
                "records lost: seq {}..={}",
                last_seq + 1,
                model.last_seq()
            );
        }
    }
    if covered_whole {
        prop_assert_eq!(&recovery.repair, &None, "covered damage lost records");
    }
    if let Some(covered) = &recovery.covered {
        // The covering checkpoint is one of the model's, lies in what is kept and covers
        // every record before it.
        let checkpoint = model
            .checkpoints
            .iter()
            .find(|c| c.first_seq == covered.checkpoint_seq);
        prop_assert!(checkpoint.is_some(), "{covered:?}");
        let checkpoint = checkpoint.unwrap();
        prop_assert_eq!(checkpoint.covers_seq, covered.checkpoint_covers_seq);
        prop_assert!(
            checkpoint.first_seq >= covered.first_seq_kept,
            "{covered:?}"
        );
        prop_assert!(
            covered.checkpoint_covers_seq + 1 >= covered.first_seq_kept,
            "{covered:?}"
        );
        let before_kept: Vec<&(PathBuf, Vec<u8>)> = before
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
            .filter(|(p, _)| segment_base(p) < covered.first_seq_kept)
            .collect();
        prop_assert_eq!(before_kept.len(), covered.segments_deleted, "{:?}", covered);
        prop_assert!(
            segment_files(dir.path())
                .iter()
                .all(|p| segment_base(p) >= covered.first_seq_kept),
            "{covered:?}"
        );
    }
    drop(journal);

    // The repair left a sound journal, which opens without repair to the same replay.
    let report = check(dir.path()).unwrap();
    prop_assert!(report.is_sound(), "{report:?}");
    prop_assert_eq!(&report.torn_tail, &None);
    let (journal, again) = Journal::open(cfg).unwrap();
    prop_assert_eq!(
        (&again.repair, &again.covered, &again.torn_tail),
        (&None, &None, &None)
    );
    prop_assert_eq!(collect(&journal), replay);
    prop_assert_eq!(replayed(&journal), every_frame);
    Ok(())
}

proptest::proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..Default::default() })]

    /// Whatever the journal and whatever one or two injuries: `check` and the repair
    /// agree; a refused repair changes nothing; a repair keeps every acknowledged
    /// record up to where it says it cut (all of them when it reports no loss, as when
    /// the damage is in segment files a later checkpoint covers), replaying from a
    /// complete checkpoint; and it leaves a sound journal.
    #[test]
    fn repair_of_random_damage_loses_only_what_it_reports(
        ops in proptest::collection::vec(op(), 1..80),
        injuries in proptest::collection::vec(injury(), 1..=2),
    ) {
        repair_case(&ops, &injuries)?;
    }
}
