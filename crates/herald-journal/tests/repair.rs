//! Repair against random damage: a journal built by a random mix of appends,
//! checkpoints, syncs and compactions, closed cleanly, then damaged in one or two places
//! (a flipped byte in a frame, a segment file deleted, a segment file cut short), is
//! checked and repaired, and what the repair keeps is held to a model of everything that
//! was appended. A second property injures the durable mark as well (removed, rewound,
//! advanced past the log, corrupt, or as a crash leaves it), and holds open without
//! repair, open with repair and the loss a repair reports to what the mark says.

mod common;
use common::{replayed, segment_files, snapshot};

use std::collections::BTreeSet;
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
    /// XORs `bits` into a byte of a segment's header (every byte is under its CRC, so the
    /// header no longer decodes).
    Header {
        segment: Index,
        byte: Index,
        bits: u8,
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
        1 => (any::<Index>(), any::<Index>(), 1u8..=255).prop_map(
            |(segment, byte, bits)| Injury::Header { segment, byte, bits }
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
    /// The last frame an explicit sync (or compaction) made durable: what the durable
    /// mark may hold after a crash that cut off the syncs after it.
    synced_seq: u64,
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
                model.synced_seq = model.last_seq();
            }
            Op::Compact => {
                journal.sync().unwrap();
                model.synced_seq = model.last_seq();
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
    /// Cut short (its length no longer matches its header) or its header overwritten:
    /// its header no longer decodes.
    shortened: Vec<bool>,
    /// The first frame whose bytes changed.
    damaged_from: Vec<Option<u64>>,
    /// Every frame whose bytes changed.
    damaged: Vec<BTreeSet<u64>>,
}

impl Damage {
    fn new(segments: usize) -> Self {
        Self {
            deleted: vec![false; segments],
            shortened: vec![false; segments],
            damaged_from: vec![None; segments],
            damaged: vec![BTreeSet::new(); segments],
        }
    }

    fn harmed(&self, i: usize) -> bool {
        self.deleted[i] || self.shortened[i] || self.damaged_from[i].is_some()
    }

    fn damage(&mut self, i: usize, seq: u64) {
        self.damaged_from[i] = Some(self.damaged_from[i].map_or(seq, |d| d.min(seq)));
        self.damaged[i].insert(seq);
    }

    /// The last frame of `segment` (at index `i`) still intact after its first damaged
    /// one, if any: what a scan past the damage finds.
    fn intact_after_damage(&self, i: usize, segment: &Segment) -> Option<u64> {
        let from = self.damaged_from[i]?;
        (from + 1..=segment.last_seq)
            .rev()
            .find(|seq| !self.damaged[i].contains(seq))
    }

    /// Indexes of the segment files left.
    fn present(&self) -> Vec<usize> {
        (0..self.deleted.len())
            .filter(|&i| !self.deleted[i])
            .collect()
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
                // That frame and every one after it.
                for seq in seq..=segment.last_seq {
                    damage.damage(i, seq);
                }
            }
        }
        Injury::Header {
            segment,
            byte,
            bits,
        } => {
            let i = present[segment.index(present.len())];
            let file = open(&segments[i].path);
            let offset = byte.index(format::SEGMENT_HEADER_BYTES as usize) as u64;
            let mut b = [0u8];
            if file.read_at(&mut b, offset).unwrap() == 0 {
                return;
            }
            file.write_all_at(&[b[0] ^ bits], offset).unwrap();
            damage.shortened[i] = true;
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
/// frame it cannot read in order (damaged, missing in a gap between files, or in a file
/// whose header no longer matches it), so the log up to the returned cut, starting from
/// the first file's base; and whether that misses no record replay needs (from the latest
/// complete checkpoint kept).
fn truncation(model: &Model, segments: &[Segment], damage: &Damage) -> (u64, bool) {
    let present = damage.present();
    let Some(&first) = present.first() else {
        return (0, true);
    };
    let first_base = segments[first].first_seq;
    let mut expected = first_base;
    let mut cut = None;
    for i in present {
        if damage.shortened[i] || segments[i].first_seq != expected {
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
    (cut, first_base <= needed_from)
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

/// What the durable mark of `dir` records, as open reads it: `None` when the file is
/// missing or no slot of it decodes.
fn read_mark(dir: &Path) -> Option<u64> {
    match fs::read(dir.join(format::DURABLE_MARK_FILE)) {
        Ok(bytes) => format::decode_durable_mark_file(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("read of the durable mark: {e}"),
    }
}

/// How a valid mark is written over the durable mark's file.
#[derive(Debug, Clone)]
enum Slots {
    /// In both slots, as open writes it.
    Both,
    /// A file of one slot.
    One,
    /// Beside an earlier mark in the other slot (`first`: this one in the first slot), as
    /// the sync thread's alternate stores leave them.
    BesideEarlier { first: bool, earlier: Index },
    /// Beside a store of a later mark cut short (one byte of it wrong).
    BesideTorn { first: bool, byte: Index },
}

/// What is done to the durable mark, beside the injuries to segment files.
#[derive(Debug, Clone)]
enum MarkInjury {
    /// Nothing: it says every frame was made durable, as the clean close left it.
    Kept,
    /// Back at the last frame an explicit sync made durable, as a crash (a power loss
    /// before its page reached the device) leaves it with the frames after it written but
    /// never known durable. Every close syncs, so this stands in for a close without one.
    Unclean,
    Removed,
    /// A valid mark for a random earlier sequence number.
    Rewound {
        to: Index,
        slots: Slots,
    },
    /// A valid mark `by` past the log's last frame, as after records made durable and
    /// then lost.
    Advanced {
        by: u64,
        slots: Slots,
    },
    /// A valid mark `by` from the first frame the injuries took from the end of the log
    /// (in the last segment file left: its first damaged frame, or the one after its
    /// last): the boundary between a torn tail and damage to a durable frame.
    AtLogEnd {
        by: i64,
        slots: Slots,
    },
    /// A byte of the first slot (`which` 0), the second (1) or both (2) changed.
    Corrupt {
        which: u8,
        byte: Index,
        bits: u8,
    },
    /// The file cut short to a random length below its two slots (32 leaves the first
    /// slot alone, which still decodes).
    CutShort {
        len: Index,
    },
}

fn slots() -> impl Strategy<Value = Slots> {
    prop_oneof![
        Just(Slots::Both),
        Just(Slots::One),
        (any::<bool>(), any::<Index>())
            .prop_map(|(first, earlier)| Slots::BesideEarlier { first, earlier }),
        (any::<bool>(), any::<Index>()).prop_map(|(first, byte)| Slots::BesideTorn { first, byte }),
    ]
}

fn mark_injury() -> impl Strategy<Value = MarkInjury> {
    prop_oneof![
        1 => Just(MarkInjury::Kept),
        2 => Just(MarkInjury::Unclean),
        2 => Just(MarkInjury::Removed),
        3 => (any::<Index>(), slots()).prop_map(|(to, slots)| MarkInjury::Rewound { to, slots }),
        2 => (1u64..=64, slots()).prop_map(|(by, slots)| MarkInjury::Advanced { by, slots }),
        3 => (-2i64..=1, slots()).prop_map(|(by, slots)| MarkInjury::AtLogEnd { by, slots }),
        2 => (0u8..3, any::<Index>(), 1u8..=255)
            .prop_map(|(which, byte, bits)| MarkInjury::Corrupt { which, byte, bits }),
        1 => any::<Index>().prop_map(|len| MarkInjury::CutShort { len }),
    ]
}

/// The bytes of a mark file recording `seq`, written as `slots` says.
fn mark_bytes(seq: u64, slots: &Slots) -> Vec<u8> {
    let mark = format::encode_durable_mark(seq);
    let beside = |other: [u8; format::DURABLE_MARK_BYTES], first: bool| {
        if first {
            [mark, other].concat()
        } else {
            [other, mark].concat()
        }
    };
    match slots {
        Slots::Both => [mark, mark].concat(),
        Slots::One => mark.to_vec(),
        Slots::BesideEarlier { first, earlier } => {
            let earlier = match seq {
                0 => 0,
                _ => earlier.index(seq as usize) as u64,
            };
            beside(format::encode_durable_mark(earlier), *first)
        }
        Slots::BesideTorn { first, byte } => {
            let mut torn = format::encode_durable_mark(seq + 1 + byte.index(100) as u64);
            torn[byte.index(format::DURABLE_MARK_BYTES)] ^= 0xA5;
            beside(torn, *first)
        }
    }
}

/// Applies `injury` to the durable mark of the journal of `model` in `dir`, whose segment
/// files (`segments`) took `damage`; returns what the mark then records, as open reads it.
fn injure_mark(
    dir: &Path,
    model: &Model,
    segments: &[Segment],
    damage: &Damage,
    injury: &MarkInjury,
) -> Option<u64> {
    let path = dir.join(format::DURABLE_MARK_FILE);
    let last_seq = model.last_seq();
    match injury {
        MarkInjury::Kept => {}
        MarkInjury::Unclean => {
            fs::write(&path, mark_bytes(model.synced_seq, &Slots::Both)).unwrap();
        }
        MarkInjury::Removed => fs::remove_file(&path).unwrap(),
        MarkInjury::Rewound { to, slots } => {
            if last_seq > 0 {
                let to = to.index(last_seq as usize) as u64;
                fs::write(&path, mark_bytes(to, slots)).unwrap();
            }
        }
        MarkInjury::Advanced { by, slots } => {
            fs::write(&path, mark_bytes(last_seq + by, slots)).unwrap();
        }
        MarkInjury::AtLogEnd { by, slots } => {
            let lost_from = damage.present().last().map_or(format::FIRST_SEQ, |&i| {
                damage.damaged_from[i].unwrap_or(segments[i].last_seq + 1)
            });
            let to = lost_from.saturating_add_signed(*by);
            fs::write(&path, mark_bytes(to, slots)).unwrap();
        }
        MarkInjury::Corrupt { which, byte, bits } => {
            let mut bytes = fs::read(&path).unwrap();
            let slot_bytes = format::DURABLE_MARK_BYTES;
            let slots: &[usize] = match which {
                0 => &[0],
                1 => &[1],
                _ => &[0, 1],
            };
            for slot in slots {
                bytes[slot * slot_bytes + byte.index(slot_bytes)] ^= bits;
            }
            fs::write(&path, bytes).unwrap();
        }
        MarkInjury::CutShort { len } => {
            let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(len.index(2 * format::DURABLE_MARK_BYTES) as u64)
                .unwrap();
        }
    }
    read_mark(dir)
}

/// A journal as the injuries left it, as the test knows it.
#[derive(Clone, Copy)]
struct Injured<'a> {
    model: &'a Model,
    /// The segment files the journal was closed with.
    segments: &'a [Segment],
    damage: &'a Damage,
    /// What the durable mark records after the injuries (`None`: missing or unreadable).
    mark: Option<u64>,
}

impl Injured<'_> {
    /// The highest sequence number a repair that keeps the log up to `kept` finds beyond
    /// it in what it discards: in each segment file after the cut, every frame before its
    /// first damage (at least its base - 1, which its header names); in the file it cuts,
    /// the frames still intact after the damage. A file cut short is not read.
    fn seen_past(&self, kept: u64) -> u64 {
        let mut seen = kept;
        for i in self.damage.present() {
            let segment = &self.segments[i];
            if segment.last_seq <= kept || self.damage.shortened[i] {
                continue;
            }
            let damaged_from = self.damage.damaged_from[i];
            seen = seen.max(damaged_from.map_or(segment.last_seq, |d| d - 1));
            if damaged_from == Some(kept + 1) {
                if let Some(intact) = self.damage.intact_after_damage(i, segment) {
                    seen = seen.max(intact);
                }
            }
        }
        seen
    }

    /// Whether open without repair accepts the journal (`Ok` with the last frame its log
    /// keeps) or refuses it; `None` when the oldest segment file is gone (whether replay's
    /// history went with it is left to `check`).
    fn opens_unrepaired(&self) -> Option<Result<u64, ()>> {
        let (model, segments, damage) = (self.model, self.segments, self.damage);
        if damage.deleted[0] {
            return None;
        }
        let present = damage.present();
        let (&last, earlier) = present.split_last()?;
        // Damage anywhere but in the last file, a gap between files, or a file cut short:
        // corruption.
        let gap = present
            .windows(2)
            .any(|w| segments[w[1]].first_seq != segments[w[0]].last_seq + 1);
        if gap || earlier.iter().any(|&i| damage.harmed(i)) || damage.shortened[last] {
            return Some(Err(()));
        }
        // The log ends before the last file's first damage, if any. That is accepted
        // (a torn tail, or a reused file's log ending there) only when it keeps every
        // frame up to the mark; with no mark, only when nothing intact follows the damage.
        let end = damage.damaged_from[last].map_or(segments[last].last_seq, |d| d - 1);
        let accepted = match self.mark {
            Some(mark) => mark <= end,
            None => damage.intact_after_damage(last, &segments[last]).is_none(),
        };
        // And only with the history replay needs from the latest complete checkpoint kept.
        let first = segments[0].first_seq;
        let covers_seq = latest_checkpoint(model, first, end).map(|c| c.covers_seq);
        let history_kept = first <= format::history_needed_from(covers_seq);
        Some(if accepted && history_kept {
            Ok(end)
        } else {
            Err(())
        })
    }
}

/// A torn tail drops only frames past the mark, never one it says was made durable; with
/// no mark, only damage with nothing intact after it.
fn torn_only_past_the_mark(
    recovery: &Recovery,
    mark: Option<u64>,
    last_seq: u64,
) -> Result<(), TestCaseError> {
    if let Some(torn) = &recovery.torn_tail {
        match mark {
            Some(mark) => prop_assert!(
                last_seq >= mark,
                "a torn tail dropped frames at or below the mark {}: {:?}",
                mark,
                torn
            ),
            None => prop_assert_eq!(
                torn.intact_frames_discarded,
                0,
                "intact frames dropped as a torn tail with no mark: {:?}",
                torn
            ),
        }
    }
    Ok(())
}

/// Replay of the journal opened (its log from seq `kept_from` to `last_seq`) starts from
/// the latest complete checkpoint of the model kept and holds every record after it.
fn replays_the_model(
    model: &Model,
    recovery: &Recovery,
    kept_from: u64,
    last_seq: u64,
    replay: &Replayed,
) -> Result<(), TestCaseError> {
    let latest = latest_checkpoint(model, kept_from, last_seq).map(|c| c.first_seq);
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
    prop_assert_eq!(replay, expected.as_ref().unwrap());
    Ok(())
}

/// The journal opened, recovered or repaired, left a sound one: `check` finds nothing
/// wrong, its mark records where its log ends (`last_seq`: no more than it holds), and it
/// opens without repair to the same replay.
fn reopens_sound(
    dir: &Path,
    cfg: &JournalConfig,
    last_seq: u64,
    replay: &Replayed,
    every_frame: &[(u64, Vec<u8>)],
) -> Result<(), TestCaseError> {
    let report = check(dir).unwrap();
    prop_assert!(report.is_sound(), "{report:?}");
    prop_assert_eq!(&report.torn_tail, &None);
    prop_assert!(
        report.last_seq.is_none_or(|l| l == last_seq),
        "check's last seq {:?}, open's {}",
        report.last_seq,
        last_seq
    );
    prop_assert_eq!(read_mark(dir), Some(last_seq), "the mark left by open");
    let (journal, again) = Journal::open(cfg.clone()).unwrap();
    prop_assert_eq!(
        (&again.repair, &again.covered, &again.torn_tail),
        (&None, &None, &None)
    );
    prop_assert_eq!(journal.last_seq(), last_seq);
    prop_assert_eq!(&collect(&journal), replay);
    prop_assert_eq!(&replayed(&journal), every_frame);
    Ok(())
}

/// The injured journal as opening meets it: its directory and configuration, its files
/// before anything opened it, and what `check` made of them.
struct Scene<'a> {
    dir: &'a Path,
    cfg: &'a JournalConfig,
    before: Vec<(PathBuf, Vec<u8>)>,
    report: CheckReport,
}

impl<'a> Scene<'a> {
    /// Snapshots the files and checks the journal, which must change nothing.
    fn checked(dir: &'a Path, cfg: &'a JournalConfig) -> Result<Self, TestCaseError> {
        let before = snapshot(dir);
        let report = check(dir).unwrap();
        prop_assert_eq!(
            changed(&before, dir),
            Vec::<PathBuf>::new(),
            "check changed files"
        );
        Ok(Scene {
            dir,
            cfg,
            before,
            report,
        })
    }
}

/// A repair that was refused changed nothing, `check` said why beforehand, and it was
/// refused only for missing history or a file cut short.
fn refused_repair(
    injured: Injured<'_>,
    scene: &Scene<'_>,
    err: &JournalError,
) -> Result<(), TestCaseError> {
    let (dir, before, report) = (scene.dir, &scene.before[..], &scene.report);
    let Injured {
        model,
        segments,
        damage,
        ..
    } = injured;
    let covered_whole = all_covered(model, segments, damage);
    let truncated = truncation(model, segments, damage);
    prop_assert_eq!(
        changed(before, dir),
        Vec::<PathBuf>::new(),
        "a refused repair changed files: {}",
        err
    );
    prop_assert!(!report.is_sound(), "{err}; {report:?}");
    match err {
        JournalError::HistoryMissing { missing, .. } => {
            prop_assert_eq!(report.history_missing.as_ref(), Some(missing));
            prop_assert!(!covered_whole, "covered damage refused: {err}");
            // Only when a truncation at the first damage would lack records replay needs
            // too.
            prop_assert!(
                !truncated.1,
                "refused, but truncating at the first damage keeps what replay needs \
                 ({truncated:?}): {err}"
            );
        }
        _ => prop_assert!(false, "repair refused: {err}; {report:?}"),
    }
    Ok(())
}

/// A repair that opened: `check` agreed with it beforehand, it kept the model up to
/// where it cut (at the first damage or gap, or later when it let covered files go),
/// counted every record it lost (all it saw evidence of past the cut, and at least every
/// one up to the mark), and left a sound journal.
fn repaired(
    injured: Injured<'_>,
    scene: &Scene<'_>,
    journal: Journal,
    recovery: Recovery,
) -> Result<(), TestCaseError> {
    let (dir, cfg, before, report) = (scene.dir, scene.cfg, &scene.before[..], &scene.report);
    let Injured {
        model,
        segments,
        damage,
        mark,
    } = injured;
    let covered_whole = all_covered(model, segments, damage);
    let truncated = truncation(model, segments, damage);
    prop_assert_eq!(&report.history_missing, &None, "check said missing history");
    agree(report, &recovery)?;
    let last_seq = journal.last_seq();
    torn_only_past_the_mark(&recovery, mark, last_seq)?;

    // What is kept is the model up to where the repair cut, from the latest complete
    // checkpoint of the model in what it kept. Without segment files let go as covered,
    // it cut at the first damage (or gap), as a truncation does, and only where that
    // keeps every record replay needs; letting them go, it cut there or later.
    let replay = collect(&journal);
    let every_frame = replayed(&journal);
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
    replays_the_model(model, &recovery, kept_from, last_seq, &replay)?;

    // Nothing up to the mark goes without being counted; what is counted is every record
    // the repair found evidence of past its cut: the mark, later segment files, intact
    // frames after the damage.
    let reported = recovery.repair.as_ref().map_or(0, |r| r.records_lost);
    prop_assert!(
        reported >= mark.unwrap_or(0).saturating_sub(last_seq),
        "kept up to seq {}, the mark says {:?}, {} reported lost",
        last_seq,
        mark,
        reported
    );
    match &recovery.repair {
        None => {
            if mark.is_some_and(|mark| mark >= model.last_seq()) {
                prop_assert_eq!(last_seq, model.last_seq(), "lost without a word");
            }
        }
        Some(repair) => {
            let seen = mark.unwrap_or(0).max(injured.seen_past(last_seq));
            prop_assert_eq!(
                repair.records_lost,
                seen - last_seq,
                "records lost: seq {}..={} (mark {:?})",
                last_seq + 1,
                seen,
                mark
            );
        }
    }
    // (Unless the mark names records past the log's end: those are gone either way.)
    if covered_whole && mark.is_none_or(|mark| mark <= model.last_seq()) {
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
            segment_files(dir)
                .iter()
                .all(|p| segment_base(p) >= covered.first_seq_kept),
            "{covered:?}"
        );
    }
    drop(journal);
    reopens_sound(dir, cfg, last_seq, &replay, &every_frame)
}

/// One case: build, injure, check, repair, reopen.
fn repair_case(ops: &[Op], injuries: &[Injury]) -> Result<(), TestCaseError> {
    let dir = journal_dir();
    let cfg = config(dir.path());
    let model = build(dir.path(), ops);
    // Closed cleanly: every frame made durable, and the mark says so, so any damage
    // found on open is to an acknowledged frame (no torn tail is legitimate).
    prop_assert_eq!(read_mark(dir.path()), Some(model.last_seq()));
    let segments = segments_of(dir.path(), &model);
    prop_assert!(check(dir.path()).unwrap().is_sound());

    let mut damage = Damage::new(segments.len());
    for injury in injuries {
        injure(&model, &segments, &mut damage, injury);
    }
    let injured = Injured {
        model: &model,
        segments: &segments,
        damage: &damage,
        mark: Some(model.last_seq()),
    };

    let scene = Scene::checked(dir.path(), &cfg)?;
    open_repairing(injured, &scene, true)
}

/// Opens the injured journal with repair and judges what it did ([`repaired`]) or why
/// it refused ([`refused_repair`]); `every_frame_acknowledged`: the mark covers the
/// whole log as written, so no torn tail may be dropped.
fn open_repairing(
    injured: Injured<'_>,
    scene: &Scene<'_>,
    every_frame_acknowledged: bool,
) -> Result<(), TestCaseError> {
    match Journal::open(repairing(scene.cfg)) {
        Ok((journal, recovery)) => {
            if every_frame_acknowledged {
                prop_assert_eq!(&recovery.torn_tail, &None, "every frame was acknowledged");
            }
            repaired(injured, scene, journal, recovery)
        }
        Err(err) => refused_repair(injured, scene, &err),
    }
}

/// The error of an open refused without repair names the problem `check` reported.
fn names_the_problem(
    err: &JournalError,
    report: &CheckReport,
    mark: Option<u64>,
) -> Result<(), TestCaseError> {
    let corruption = report.corruption.as_ref();
    // With segment files a repair would let go as covered, `check` reports what lies
    // past them; open without repair stops at the first damage.
    let first_problem = report.covered.is_none();
    match err {
        JournalError::DurableMissing {
            last_seq,
            durable_mark,
            ..
        } => {
            prop_assert_eq!(Some(*durable_mark), mark, "{}", err);
            prop_assert!(durable_mark > last_seq, "{err}");
            prop_assert!(
                corruption.is_some_and(|c| c.defect.contains(&format!(
                    "the log ends at seq {last_seq}, but records up to seq {durable_mark}"
                ))),
                "{err}; {report:?}"
            );
        }
        JournalError::HistoryMissing { missing, .. } => {
            prop_assert_eq!(report.history_missing.as_ref(), Some(missing));
        }
        JournalError::CorruptFrame {
            segment, offset, ..
        } => {
            if first_problem {
                prop_assert!(
                    corruption.is_some_and(|c| (&c.segment, c.offset) == (segment, *offset)),
                    "{err}; {report:?}"
                );
            }
        }
        JournalError::SegmentGap { segment, .. }
        | JournalError::CorruptSegmentHeader { segment, .. } => {
            if first_problem {
                prop_assert!(
                    corruption.is_some_and(|c| (&c.segment, c.offset) == (segment, 0)),
                    "{err}; {report:?}"
                );
            }
        }
        _ => prop_assert!(false, "refused: {err}; {report:?}"),
    }
    Ok(())
}

/// One case with the durable mark injured too: build, injure, check, open without
/// repair, and when that is refused, repair; then reopen.
fn mark_case(
    ops: &[Op],
    mark_injury: &MarkInjury,
    injuries: &[Injury],
) -> Result<(), TestCaseError> {
    let dir = journal_dir();
    let cfg = config(dir.path());
    let model = build(dir.path(), ops);
    prop_assert_eq!(read_mark(dir.path()), Some(model.last_seq()));
    let segments = segments_of(dir.path(), &model);

    let mut damage = Damage::new(segments.len());
    for injury in injuries {
        injure(&model, &segments, &mut damage, injury);
    }
    let mark = injure_mark(dir.path(), &model, &segments, &damage, mark_injury);
    let injured = Injured {
        model: &model,
        segments: &segments,
        damage: &damage,
        mark,
    };

    let scene = Scene::checked(dir.path(), &cfg)?;
    let (before, report) = (&scene.before, &scene.report);
    let expected = injured.opens_unrepaired();
    let (journal, recovery) = match Journal::open(cfg.clone()) {
        Ok(opened) => opened,
        Err(err) => {
            // Refused: exactly when `check` calls the journal unsound, naming the same
            // problem, and with nothing changed. Then repaired.
            prop_assert_eq!(
                changed(before, dir.path()),
                Vec::<PathBuf>::new(),
                "a refused open changed files: {}",
                err
            );
            prop_assert!(!report.is_sound(), "{err}; {report:?}");
            prop_assert!(
                expected.is_none_or(|expected| expected.is_err()),
                "refused, where the log up to seq {expected:?} opens: {err}"
            );
            names_the_problem(&err, report, mark)?;
            return open_repairing(injured, &scene, false);
        }
    };
    // Opened without repair: `check` called it sound, agreeing on what is kept (a torn
    // tail only past the mark), and nothing up to the mark is gone.
    prop_assert!(report.is_sound(), "opened, but {report:?}");
    let last_seq = journal.last_seq();
    prop_assert!(
        expected.is_none_or(|expected| expected == Ok(last_seq)),
        "opened to seq {last_seq}, where {expected:?} was expected: {recovery:?}"
    );
    prop_assert_eq!((&recovery.repair, &recovery.covered), (&None, &None));
    agree(report, &recovery)?;
    torn_only_past_the_mark(&recovery, mark, last_seq)?;
    prop_assert!(
        last_seq >= mark.unwrap_or(0),
        "opened to seq {}, the mark says {:?}",
        last_seq,
        mark
    );
    let replay = collect(&journal);
    let every_frame = replayed(&journal);
    let kept_from = recovery.first_seq.unwrap_or(format::FIRST_SEQ);
    replays_the_model(&model, &recovery, kept_from, last_seq, &replay)?;
    drop(journal);
    reopens_sound(dir.path(), &cfg, last_seq, &replay, &every_frame)
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

    /// The same journals with the durable mark injured too (kept, as after a crash that
    /// cut off the last syncs, removed, rewound, advanced past the log, corrupt, cut
    /// short), alone or beside up to two injuries to segment files: open without repair
    /// refuses exactly what `check` calls unsound, changing nothing, and accepts a torn
    /// tail only past the mark (with no mark, only one with nothing intact after it);
    /// a repair keeps the model up to the first damage or gap, counts exactly the
    /// records it found evidence of past its cut (every one up to the mark among them),
    /// and leaves a sound journal whose mark claims no more than its log holds.
    #[test]
    fn repair_against_the_durable_mark_loses_only_what_it_reports(
        ops in proptest::collection::vec(op(), 1..80),
        mark in mark_injury(),
        injuries in proptest::collection::vec(injury(), 0..=2),
    ) {
        mark_case(&ops, &mark, &injuries)?;
    }
}
