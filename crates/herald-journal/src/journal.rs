//! The journal: segment files, append, roll, recovery, checkpoints, retention.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use memmap2::Mmap;
use rkyv::util::AlignedVec;

use crate::error::JournalError;
use crate::format::{
    self, decode_frame, encode_segment_header, frame_bytes, push_frame, scan_segment, Decoded,
    RawFrame, ScanStop, CHECKPOINT_VERSION, FRAME_HEADER_BYTES, KIND_CHECKPOINT, KIND_RESERVED_MIN,
    PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use crate::format::{
    decode_frame_head, decode_part_header, encode_part_header, scan_segment_after, CheckpointSpan,
    DecodedHead, CHECKPOINT_PART_HEADER_BYTES,
};
use crate::spare::{Doomed, Spare};
use crate::sync::{DurableHandle, Shared, SyncStats};

/// Smallest segment: a few frames plus header; smaller would roll constantly.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest segment: keeps one mapping and one recovery scan bounded.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Upper bound for `group_records_max`.
pub const GROUP_RECORDS_MAX_LIMIT: usize = 1 << 20;
/// Upper bound for `group_delay_us`: a durability delay above a second would
/// hold every publisher hostage to the timer.
pub const GROUP_DELAY_US_MAX: u64 = 1_000_000;
/// Default `lazy_delay_us`: a closed loop whose records were all outcomes synced every
/// 1 ms spent ~3 % more of the engine's CPU (per unit of its receiver's) than with syncs
/// 10 ms apart (`benches/README.md`, "Outcomes synced lazily"), and a sync's fixed cost
/// (a flush, the durable mark, two thread wake-ups) is paid per sync, not per record.
/// Bounded by what a power loss may send again: ~10 ms of outcomes.
pub const LAZY_DELAY_US_DEFAULT: u64 = 10_000;
/// Upper bound for `segments_max`.
pub const SEGMENTS_MAX_LIMIT: usize = 1 << 16;
/// Appended frames wait in memory until [`Journal::commit`] or until this many
/// bytes are staged, then go to the segment file (one `pwrite` per
/// [`WRITE_PIECE_BYTES`] piece). Bounded so a
/// caller that appends a large batch before committing keeps a bounded buffer,
/// and large enough that a busy turn costs a few system calls (one per piece), not
/// one per record.
pub const STAGED_BYTES_MAX: usize = 256 * 1024;
/// Largest piece of the segment file one `pwrite` of staged frames covers: a larger
/// batch is written in pieces that end on multiples of this offset. The page cache
/// sizes the pages it takes for a write by the write's length (large folios), and
/// large blocks of free memory are the ones a virtual machine's free-page reporting
/// has handed back to its host: on such a machine a 256 KiB write into new pages
/// cost 0.7–6.4 µs per 4 KiB from one round to the next (every page faulted in by the
/// host), the same bytes in aligned 64 KiB pieces 0.8–1.2 µs bar one round, in 16 KiB
/// pieces 1.2–1.9 µs (system calls dominate below; `examples/write_pieces.rs` measures
/// it). Pieces aligned to their size get pages of that size.
pub const WRITE_PIECE_BYTES: u64 = 64 * 1024;
/// Segments a checkpoint being written may add beyond `segments_max`, as a multiple
/// of `segments_max`: at most `segments_max` more. Only checkpoint frames (parts and
/// end markers) may roll into this allowance. Records appended between a checkpoint's
/// parts go into whatever segment is active, one the parts rolled to included, but a
/// record that needs a new segment is held to `segments_max`: so records alone can
/// never use the allowance up, and the total stays at most twice the limit whatever
/// is interleaved (at the limit, the caller finishes the checkpoint to free space
/// before appending more records). A checkpoint is written when the
/// journal already holds the previous checkpoint and the records since, so it may
/// need segments exactly when the limit is reached; refusing it then would keep
/// every old segment for good, since only a complete checkpoint lets them go. Once
/// it is complete and durable, compaction deletes every segment before it, which
/// brings the count back under the limit. One more `segments_max` is enough for any
/// state the journal held at its limit (a checkpoint is no larger than the records
/// it summarises, which fit in `segments_max` segments), and keeps disk use bounded
/// at twice the configured limit while a checkpoint is written.
pub const CHECKPOINT_SEGMENTS_EXTRA_FACTOR: usize = 1;

/// Ids of checkpoint handles, unique in the process: a handle of another journal, or
/// of a journal reopened since, can never match the open one.
static CHECKPOINT_IDS: AtomicU64 = AtomicU64::new(1);

const SEGMENT_SUFFIX: &str = ".seg";
const TEMP_SUFFIX: &str = ".seg.tmp";
const LOCK_FILE: &str = "journal.lock";

/// Journal settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Directory holding the segment files (created if missing).
    pub dir: PathBuf,
    /// Size of each preallocated segment file,
    /// `SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX`, a multiple of 4096.
    pub segment_bytes: u64,
    /// Sync once this many records are waiting (`1..=GROUP_RECORDS_MAX_LIMIT`).
    pub group_records_max: usize,
    /// Syncs start at least this far apart (`0..=GROUP_DELAY_US_MAX`) unless
    /// `group_records_max` records wait or a sync is asked for ([`Journal::sync`]), so
    /// that records appended meanwhile share one; a record appended after a longer pause
    /// is synced at once.
    pub group_delay_us: u64,
    /// Records committed with [`Journal::commit_lazy`] (nobody waits for them: a shard's
    /// attempt outcomes) wait this long after the last sync began (`0..=GROUP_DELAY_US_MAX`,
    /// never less than `group_delay_us`) unless an urgent commit, `group_records_max`
    /// records or an explicit sync come first. Until synced, a power loss may lose them,
    /// and so may a crash of the process while they lie in a segment not yet renamed
    /// into place (a roll's new segment gets its name at the next sync); elsewhere a
    /// crash of the process keeps them (the page cache). Whoever commits lazily must
    /// afford to lose this much more than the group delay's worth (a shard: outcomes,
    /// whose deliveries are sent again).
    pub lazy_delay_us: u64,
    /// Most segment files the journal may hold (`2..=SEGMENTS_MAX_LIMIT`);
    /// appends fail with [`JournalError::SegmentsExhausted`] beyond it until a
    /// durable checkpoint lets older segments go. Bounds disk use. A checkpoint
    /// being written may go past it by up to another `segments_max` segments (see
    /// [`CHECKPOINT_SEGMENTS_EXTRA_FACTOR`]), so that the limit cannot stop the very
    /// checkpoint that would free space; records appended between its parts may fill
    /// those segments but never start one past `segments_max`.
    pub segments_max: usize,
    /// On open, mend corruption found before the tail (damage, or a gap between segment
    /// files) instead of failing: when a later complete checkpoint covers every record up
    /// to it, by deleting the segment files up to it whole, losing nothing
    /// ([`Recovery::covered`]); otherwise by truncating there (everything after it is
    /// lost; [`Recovery::repair`] says how much). Also accept a log that ends before the
    /// durable mark. A journal missing records replay needs before its first segment,
    /// or that a truncation would leave so, is refused all the same, unchanged
    /// ([`JournalError::HistoryMissing`]).
    pub repair: bool,
}

impl JournalConfig {
    /// Defaults: 64 MiB segments, groups of 256 records or 1000 µs (10 ms for lazy
    /// commits), 1024 segments, no repair.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            group_records_max: 256,
            group_delay_us: 1000,
            lazy_delay_us: LAZY_DELAY_US_DEFAULT,
            segments_max: 1024,
            repair: false,
        }
    }

    /// Largest payload one record may carry with this segment size.
    pub fn payload_bytes_max(&self) -> u64 {
        PAYLOAD_BYTES_MAX.min(self.segment_bytes - SEGMENT_HEADER_BYTES - FRAME_HEADER_BYTES)
    }

    fn validate(&self) -> Result<(), JournalError> {
        let bad = |field, reason: String| Err(JournalError::InvalidConfig { field, reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes)
            || !self.segment_bytes.is_multiple_of(4096)
        {
            return bad(
                "segment_bytes",
                format!(
                    "{} is not a multiple of 4096 in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            );
        }
        if !(1..=GROUP_RECORDS_MAX_LIMIT).contains(&self.group_records_max) {
            return bad(
                "group_records_max",
                format!(
                    "{} not in 1..={GROUP_RECORDS_MAX_LIMIT}",
                    self.group_records_max
                ),
            );
        }
        if self.group_delay_us > GROUP_DELAY_US_MAX {
            return bad(
                "group_delay_us",
                format!("{} above {GROUP_DELAY_US_MAX}", self.group_delay_us),
            );
        }
        if self.lazy_delay_us > GROUP_DELAY_US_MAX {
            return bad(
                "lazy_delay_us",
                format!("{} above {GROUP_DELAY_US_MAX}", self.lazy_delay_us),
            );
        }
        if !(2..=SEGMENTS_MAX_LIMIT).contains(&self.segments_max) {
            return bad(
                "segments_max",
                format!("{} not in 2..={SEGMENTS_MAX_LIMIT}", self.segments_max),
            );
        }
        Ok(())
    }
}

/// A torn or invalid tail found (and zeroed) in the last segment on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Offset of the first invalid frame.
    pub offset: u64,
    /// Non-zero bytes discarded from there on.
    pub bytes_discarded: u64,
    /// What made the frame invalid.
    pub defect: format::FrameDefect,
    /// Intact frames after the damage discarded with it: written, but past everything
    /// the journal had made durable (a sync cut short by a power loss; see
    /// [`format::torn_tail_end`]), so never acknowledged. 0 for a tail torn at its end.
    pub intact_frames_discarded: u64,
}

/// What an opt-in repair threw away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The segment file where corruption was found.
    pub segment: PathBuf,
    /// Offset of the corrupt frame (0: the segment's header did not decode).
    pub offset: u64,
    /// What was wrong.
    pub defect: String,
    /// Bytes discarded (the rest of that segment's data plus later segments). A file
    /// whose header did not decode counts up to its last byte that is not zero (its
    /// preallocated tail held nothing), which bounds what it held from above.
    pub bytes_lost: u64,
    /// Records discarded whose sequence numbers are known from later
    /// segments (records in the corrupt stretch itself cannot be counted).
    pub records_lost: u64,
    /// Segment files deleted: every one after the corruption, and the corrupt one too
    /// when its header did not decode.
    pub segments_deleted: usize,
}

/// Segment files a repair deletes whole instead of truncating at damage (or a gap) among
/// them: a later complete checkpoint, in the segments it keeps, covers every record they
/// held and every record missing between them, so replay, which starts from that
/// checkpoint, needs none of them and nothing is lost (see [`Journal::open`]). Only whole
/// files go, and only when every record in them is covered: damage in a segment that
/// also holds a record the checkpoint does not cover is repaired as before (truncated
/// there, counting the loss, or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoveredSegments {
    /// The segment file where the damage was found; for a gap, the segment before it.
    pub segment: PathBuf,
    /// Offset of the damaged frame; for a gap, the end of that segment's frames.
    pub offset: u64,
    /// What was wrong.
    pub defect: String,
    /// Segment files deleted: every one from the journal's first up to the damage (the
    /// damaged one included) or the gap.
    pub segments_deleted: usize,
    /// Valid records they held, none of them needed any more (records in a damaged
    /// stretch cannot be counted).
    pub records: u64,
    /// Base sequence number of the first segment kept: every record before it is
    /// covered.
    pub first_seq_kept: u64,
    /// Sequence number of the covering checkpoint's first frame.
    pub checkpoint_seq: u64,
    /// What that checkpoint covers: at least `first_seq_kept - 1`.
    pub checkpoint_covers_seq: u64,
}

impl CoveredSegments {
    /// This drop following `earlier`, made by the same repair further on (damage in
    /// the segments the earlier one kept, covered by a still later checkpoint): one
    /// report of both, naming the later damage.
    pub(crate) fn after(mut self, earlier: Option<CoveredSegments>) -> Self {
        if let Some(earlier) = earlier {
            self.segments_deleted += earlier.segments_deleted;
            self.records += earlier.records;
        }
        self
    }
}

/// What a repair (or `check`) says of a gap before a segment starting at `found` when
/// `expected` must come next.
pub(crate) fn gap_defect(expected: u64, found: u64) -> String {
    format!(
        "the segment's last frames are missing or damaged: it ends at seq {}, the next \
         segment starts at seq {found}",
        expected - 1
    )
}

/// A repair's way out of damage (or a gap) just before the segment file `listed[from]`
/// that loses nothing: when the segment files from there on, read as a journal of their
/// own, hold a complete checkpoint covering every record before `listed[from]`, every
/// segment file before it can go whole ([`CoveredSegments`], with the damage, how many
/// segment files that is and the valid records they held). `None` when there is no such
/// checkpoint: the repair truncates at the damage as before.
///
/// Only segments that follow on from `listed[from]` without a gap count, up to the first
/// damage (a checkpoint completed before it counts; the damage is then the repair's next
/// concern), and a checkpoint begun before `listed[from]` does not (its first parts go
/// with the files). A file that cannot be read ends the search. Each segment is read
/// whole, one at a time, as `check` reads it: a repair reads what it keeps twice, once
/// here and once as it opens it, which it can afford since it is run by hand.
pub(crate) fn covered_before(
    listed: &[(u64, PathBuf)],
    from: usize,
    (segment, offset, defect): (PathBuf, u64, String),
    segments_deleted: usize,
    records: u64,
) -> Option<CoveredSegments> {
    let &(first_seq_kept, _) = listed.get(from)?;
    let mut open = None;
    let mut expected = first_seq_kept;
    for (name_base, path) in &listed[from..] {
        let bytes = fs::read(path).ok()?;
        let scan = scan_segment_after(&bytes, open).ok()?;
        if scan.header.base_seq != *name_base || *name_base != expected {
            return None;
        }
        let covering = scan
            .last_checkpoint
            .filter(|span| format::history_needed_from(Some(span.covers_seq)) >= first_seq_kept);
        if let Some(span) = covering {
            return Some(CoveredSegments {
                segment,
                offset,
                defect,
                segments_deleted,
                records,
                first_seq_kept,
                checkpoint_seq: span.first_seq,
                checkpoint_covers_seq: span.covers_seq,
            });
        }
        if scan.stop != ScanStop::Clean {
            return None;
        }
        open = scan.open_checkpoint;
        expected = scan.last_seq + 1;
    }
    None
}

/// Damage in `listed[i]` (or at its start) that a later checkpoint covers with every
/// record before it ([`covered_before`] from the next file): the files up to it are let go
/// whole, noted in `covered` after those an earlier damage let go. Whether they were.
fn let_go_covered(
    listed: &[(u64, PathBuf)],
    i: usize,
    damage: (PathBuf, u64, String),
    segments_deleted: usize,
    records: u64,
    covered: &mut Option<CoveredSegments>,
) -> bool {
    match covered_before(listed, i + 1, damage, segments_deleted, records) {
        Some(drop) => {
            *covered = Some(drop.after(covered.take()));
            true
        }
        None => false,
    }
}

/// The first segment a repair that truncates keeps, as [`ensure_history`] takes it: the
/// first of `segments` read so far, or else the damaged file (`damaged`, its base), where
/// the journal would start again.
fn first_kept<'a>(segments: &'a [Segment], damaged: (u64, &'a PathBuf)) -> (u64, &'a PathBuf) {
    segments.first().map_or(damaged, |s| (s.base_seq, &s.path))
}

/// Records recovery needs that no segment holds: the journal's first segment starts
/// after the frame following what its latest complete checkpoint covers (after the
/// journal's first frame, with no complete checkpoint). Compaction never leaves a journal
/// so (see [`format::history_needed_from`]): the segment files before it were removed,
/// or a backup restored in part. [`Journal::open`] refuses it
/// ([`JournalError::HistoryMissing`]), repair included, and [`crate::check`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingHistory {
    /// The first segment file present.
    pub first_segment: PathBuf,
    /// Its base sequence number: records before it are missing.
    pub first_seq: u64,
    /// The oldest record replay needs, the first one missing.
    pub needed_from: u64,
    /// What the latest complete checkpoint present covers; `None` when there is none,
    /// and replay needs every record from the journal's first.
    pub checkpoint_covers_seq: Option<u64>,
}

impl std::fmt::Display for MissingHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seq {}..={} missing: the first segment present, {}, starts at seq {}, but ",
            self.needed_from,
            self.first_seq - 1,
            self.first_segment.display(),
            self.first_seq
        )?;
        match self.checkpoint_covers_seq {
            Some(covers_seq) => write!(
                f,
                "the latest complete checkpoint present covers only up to seq {covers_seq}"
            )?,
            None => f.write_str("no complete checkpoint is present to start from")?,
        }
        write!(
            f,
            ", so replay needs every record from seq {}; restore the journal's missing or \
             damaged segment files from a backup (no repair can bring their records back)",
            self.needed_from
        )
    }
}

/// The records missing before the first segment present (its base sequence number and
/// path), given what the latest complete checkpoint present covers; `None` when replay
/// has every record it needs. Open and `check` both judge by it.
pub(crate) fn missing_history(
    first_seq: u64,
    first_segment: &Path,
    checkpoint_covers_seq: Option<u64>,
) -> Option<MissingHistory> {
    let needed_from = format::history_needed_from(checkpoint_covers_seq);
    (first_seq > needed_from).then(|| MissingHistory {
        first_segment: first_segment.to_path_buf(),
        first_seq,
        needed_from,
        checkpoint_covers_seq,
    })
}

/// What [`crate::SYNC_FAILED_FILE`] in `dir` says, if it is there.
pub(crate) fn failure_mark(dir: &Path) -> Result<Option<String>, JournalError> {
    let path = dir.join(format::SYNC_FAILED_FILE);
    match fs::read(&path) {
        Ok(text) => Ok(Some(String::from_utf8_lossy(&text).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JournalError::io("read", &path, e)),
    }
}

/// Drops the page cache's clean pages of the file at `path` (dirty ones are written
/// first), so that the next reads come from the disk.
pub(crate) fn drop_cached_pages(path: &Path) -> Result<(), JournalError> {
    let file = File::open(path).map_err(|e| JournalError::io("open", path, e))?;
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
        .map_err(|e| JournalError::io("posix_fadvise", path, e.into()))
}

/// What opening (or checking) a journal found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Segment files.
    pub segments: usize,
    /// Valid records in all segments.
    pub records: u64,
    /// First sequence number present.
    pub first_seq: Option<u64>,
    /// Last sequence number present.
    pub last_seq: Option<u64>,
    /// Bytes of valid frames (headers, payloads, padding).
    pub bytes: u64,
    /// Sequence number of the latest checkpoint's first frame, where replay of its
    /// parts starts.
    pub checkpoint_seq: Option<u64>,
    /// The latest checkpoint holds the state after every frame up to this sequence
    /// number: replay goes on with the ordinary frames after it.
    pub checkpoint_covers_seq: Option<u64>,
    /// Torn tail of the last segment (truncated on open; sound).
    pub torn_tail: Option<TornTail>,
    /// What `repair` discarded, when it had to.
    pub repair: Option<Repair>,
    /// Segment files `repair` deleted whole, losing nothing, because a later complete
    /// checkpoint covers every record they held (damage or a gap among them).
    pub covered: Option<CoveredSegments>,
    /// What the durable mark said when the journal was opened: the last sequence number
    /// a sync had made durable. `None` when there was none that decodes (a new journal,
    /// one written by a build from before the mark, or one whose mark could not be
    /// written and was removed): the end of the log could not then be checked against
    /// what was acknowledged, and damage followed by intact frames was taken for
    /// corruption, never for a torn tail.
    pub durable_mark: Option<u64>,
    /// A sync, rename or write of this journal had failed ([`crate::SYNC_FAILED_FILE`]
    /// was there): the segments were read from the disk, not the page cache, and
    /// frames the disk did not take were a torn tail.
    pub after_failure: Option<String>,
}

/// A record read back from the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Sequence number (starts at 1, no gaps).
    pub seq: u64,
    /// Record kind ([`KIND_CHECKPOINT`] for checkpoints).
    pub kind: u16,
    /// Record version.
    pub version: u16,
    /// Payload, 16-byte aligned in memory.
    pub payload: &'a [u8],
    /// Where the payload lies in the journal ([`Journal::bytes_at`] reads it back,
    /// or any part of it, while its segment is kept).
    pub position: Position,
}

/// Where bytes lie in the journal: a segment (named by its first sequence number) and
/// a byte offset in it. Positions stay valid while the segment is kept, that is until
/// a later checkpoint is durable and the segment is compacted away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The segment's first sequence number.
    pub segment: u64,
    /// Offset from the start of the segment file.
    pub offset: u64,
}

impl Position {
    /// The position `bytes` further on in the same segment.
    pub fn after(self, bytes: u64) -> Position {
        Position {
            segment: self.segment,
            offset: self.offset + bytes,
        }
    }
}

impl<'a> Frame<'a> {
    /// Whether this is a checkpoint record written by [`Journal::checkpoint`].
    pub fn is_checkpoint(&self) -> bool {
        self.kind == KIND_CHECKPOINT
    }

    /// Accesses the payload as an archived rkyv value, checked with bytecheck
    /// (the CRC was checked when the frame was read).
    pub fn access<T>(&self) -> Result<&'a T, JournalError>
    where
        T: rkyv::Portable
            + for<'b> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'b, rkyv::rancor::Error>,
            >,
    {
        crate::codec::access::<T>(self.payload)
    }

    /// The frame `raw`, whose header starts at `frame` in the journal.
    fn from_raw(raw: RawFrame<'a>, frame: Position) -> Self {
        Self {
            seq: raw.seq,
            kind: raw.kind,
            version: raw.version,
            payload: raw.payload,
            position: frame.after(FRAME_HEADER_BYTES),
        }
    }
}

/// Record kinds (and the newest version of each) a caller can read. Replay
/// through [`Journal::replay_known`] fails on anything else, naming it,
/// rather than skipping records it does not understand. Checkpoints are
/// always known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownKinds {
    kinds: Vec<(u16, u16)>,
}

impl KnownKinds {
    /// No kinds known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `kind` readable in versions `1..=version_max` (and 0).
    pub fn with(mut self, kind: u16, version_max: u16) -> Self {
        self.kinds.retain(|&(k, _)| k != kind);
        self.kinds.push((kind, version_max));
        self
    }

    /// Checks a frame's kind and version.
    pub fn check(&self, frame: &Frame<'_>) -> Result<(), JournalError> {
        if frame.kind == KIND_CHECKPOINT && frame.version <= CHECKPOINT_VERSION {
            return Ok(());
        }
        match self.kinds.iter().find(|&&(k, _)| k == frame.kind) {
            Some(&(_, version_max)) if frame.version <= version_max => Ok(()),
            _ => Err(JournalError::UnknownKind {
                seq: frame.seq,
                kind: frame.kind,
                version: frame.version,
            }),
        }
    }
}

/// What [`Journal::compact`] freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compaction {
    /// Segment files deleted.
    pub segments_deleted: usize,
    /// Their total size.
    pub bytes_freed: u64,
}

struct Segment {
    base_seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Read-only shared mapping: it sees the page cache, so frames written
    /// with `pwrite` are readable through it at once (replay, zero-copy access).
    /// Shared with [`Reader`]s, which keep it mapped after the segment is deleted.
    map: Arc<Mmap>,
    /// Where the next frame goes; everything from here on is zero (in the file,
    /// or in the journal's staging buffer until it is written), or in a reused file
    /// the stale frames of its earlier use, which the next appends write over.
    end: u64,
    /// Last sequence number in the segment (`base_seq - 1` when empty).
    last_seq: u64,
    /// XORed into its frames' header CRCs: non-zero in a segment written over a reused
    /// file (format version 2), 0 otherwise.
    salt: u32,
}

/// How a compaction deletes the segments it lets go.
#[derive(Clone, Copy)]
enum Removal {
    /// Before it returns.
    Now,
    /// On the spare thread (a roll's compaction).
    Background,
}

/// An open journal. Owned by one thread (a shard); a background thread does
/// the syncing. Dropping it syncs what was appended and stops that thread.
pub struct Journal {
    config: JournalConfig,
    dir: Arc<File>,
    spare: Spare,
    _lock: File,
    segments: Vec<Segment>,
    next_seq: u64,
    /// Frames appended to the active segment but not yet written to its file:
    /// they occupy the segment's last `staged.len()` bytes before `end`.
    /// 16-byte aligned like the file, so replay can hand out rkyv payloads
    /// from it in place.
    staged: AlignedVec<16>,
    /// Records in `staged`.
    staged_records: u64,
    /// Latest complete checkpoint.
    checkpoint: Option<CheckpointSpan>,
    /// Id of the checkpoint being written across appends ([`CheckpointHandle`]), if
    /// any: a part of any other handle is refused.
    checkpoint_open: Option<u64>,
    shared: Arc<Shared>,
    since_kick: u64,
    sync_thread: Option<JoinHandle<()>>,
    payload_bytes_max: u64,
    /// Size of the frame appended last (it ends at the active segment's `end`).
    last_frame_bytes: u64,
    /// The latest complete checkpoint when the first frame now staged was appended:
    /// what a withdrawal of staged frames restores.
    checkpoint_before_staged: Option<CheckpointSpan>,
    /// Records from this sequence number on were withdrawn (a write of them found no
    /// space, with this OS error): appends are refused until the owner resumes the
    /// journal ([`Journal::resume_after_withdrawal`]).
    withdrawn_from: Option<(u64, i32)>,
    /// Bytes of frames withdrawn since the journal was opened: appended, then given
    /// back to the next appends.
    withdrawn_bytes: u64,
    /// A write found no space: [`Journal::ensure_room`] writes before it says there is
    /// room again (a preallocated segment's room is not space on a filesystem that
    /// copies on write, or on thin storage).
    write_probe_pending: bool,
}

/// Read access to the journal's written frames, detached from the journal: see
/// [`Journal::reader`]. Holds the segments' mappings (a segment compacted away stays
/// readable through it until it is dropped).
pub struct Reader {
    /// (first sequence number, mapping, written end) of each segment, oldest first.
    segments: Vec<(u64, Arc<Mmap>, u64)>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl Reader {
    /// `len` bytes at `at`, if they were written when the reader was made.
    pub fn bytes_at(&self, at: Position, len: usize) -> Option<&[u8]> {
        let index = self
            .segments
            .binary_search_by_key(&at.segment, |s| s.0)
            .ok()?;
        let (_, map, written) = &self.segments[index];
        written_bytes(map, *written, at.offset, len)
    }
}

/// Bytes of a journal segment held through its mapping ([`Journal::mapped`]): readable
/// from any thread for as long as they are held, also after the segment was compacted
/// away (its mapping, and the deleted file's disk space, then last until the final
/// holder drops it, so hold them only as long as the journal keeps the segment).
///
/// A segment the journal let go is unmapped off the thread that drops its last hold:
/// unmapping a 64 MiB segment whose pages were read, and freeing the deleted file with
/// it, takes tens of milliseconds, which the journal keeps off a shard's thread. The
/// spare thread keeps a segment it deleted while held and gives it back a step at a
/// time once the holds are gone (see `spare`); the last hold of one compacted on the
/// appender's thread is unmapped on a thread of its own.
#[derive(Clone)]
pub struct Mapped {
    /// `None` only while it is dropped.
    map: Option<Arc<Mmap>>,
    offset: u32,
    len: u32,
}

impl Mapped {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.map {
            // In bounds: checked against the mapping when made (`Journal::mapped`).
            Some(map) => &map[self.offset as usize..self.offset as usize + self.len as usize],
            None => &[],
        }
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            if Arc::strong_count(&map) == 1 {
                unmap_elsewhere(map);
            }
        }
    }
}

/// Mappings a reader held last that were unmapped off the reader's thread so far (for
/// tests): on the unmapping thread, or on the spare thread once the reader let go.
pub(crate) static UNMAPPED_ELSEWHERE: AtomicU64 = AtomicU64::new(0);

/// Drops `map`, the last hold of a segment's mapping, on a thread kept for it (started
/// on first use); on this thread only if that thread cannot be started.
fn unmap_elsewhere(map: Arc<Mmap>) {
    use std::sync::{mpsc, Mutex, OnceLock};
    static UNMAPPER: OnceLock<Option<Mutex<mpsc::Sender<Arc<Mmap>>>>> = OnceLock::new();
    let unmapper = UNMAPPER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Arc<Mmap>>();
        std::thread::Builder::new()
            .name("herald-unmap".into())
            .spawn(move || {
                for map in receiver {
                    crate::spare::unmap_in_steps(map, true);
                    UNMAPPED_ELSEWHERE.fetch_add(1, Ordering::Relaxed);
                }
            })
            .ok()
            .map(|_| Mutex::new(sender))
    });
    if let Some(sender) = unmapper {
        let sender = sender.lock().unwrap_or_else(|p| p.into_inner());
        // A send fails only if the thread is gone; the map then drops here.
        let _ = sender.send(map);
    }
}

/// Mappings a reader held last that were unmapped off its thread so far ([`Mapped`]).
#[doc(hidden)]
pub fn unmapped_elsewhere() -> u64 {
    UNMAPPED_ELSEWHERE.load(Ordering::Relaxed)
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapped")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

/// `len` bytes at `offset` of a segment's mapping, if they lie past its header and
/// before `written` (what reached the file).
fn written_bytes(map: &Mmap, written: u64, offset: u64, len: usize) -> Option<&[u8]> {
    let stop = offset.checked_add(len as u64)?;
    if offset < SEGMENT_HEADER_BYTES || stop > written {
        return None;
    }
    map.get(offset as usize..stop as usize)
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.config.dir)
            .field("segments", &self.segments.len())
            .field("next_seq", &self.next_seq)
            .field("durable_seq", &self.durable_seq())
            .finish()
    }
}

fn segment_name(base_seq: u64) -> String {
    format!("{base_seq:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Sequence numbers start at 1: a file named for 0 is none of the journal's segments.
    digits
        .parse()
        .ok()
        .filter(|&base| base >= format::FIRST_SEQ)
}

/// Whether another handle (a running `herald serve`, or any process with the journal
/// open) holds the journal in `dir`: its lock file is locked. Probed without taking the
/// lock and without creating the file, so that a check never keeps a server from
/// starting. A journal in use changes while it is read: a roll, a compaction or a
/// segment reused in place can show a reader a gap, a missing segment or damage that is
/// not there ([`crate::check`] says so in [`crate::CheckReport::in_use`]).
pub fn in_use(dir: &Path) -> Result<bool, JournalError> {
    let path = dir.join(LOCK_FILE);
    let lock = match File::open(&path) {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(JournalError::io("open", &path, e)),
    };
    match flock_settled(&lock, rustix::fs::FlockOperation::NonBlockingLockShared) {
        // Released at once (and with the file): only a probe.
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(JournalError::io("flock", &path, e.into())),
    }
}

/// The first of `files` whose header names a format this build does not read, with its
/// defect: what a repair must not delete. A file that cannot be read is left to the caller.
pub(crate) fn newer_format(files: &[PathBuf]) -> Option<(PathBuf, format::HeaderDefect)> {
    files.iter().find_map(|path| {
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let file = File::open(path).ok()?;
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0).ok()?;
        let file_bytes = file.metadata().ok()?.len();
        match format::decode_segment_header_of(&header, file_bytes) {
            Err(defect) if !defect.is_damage() => Some((path.clone(), defect)),
            _ => None,
        }
    })
}

/// How long a lock found held is tried again before it counts as held. A process that
/// closed its journal has let go of the lock, but a child process another of its threads
/// was starting at that moment holds a copy of the lock's file description (every
/// descriptor is copied when the child is created, and closed only as it runs its
/// program), so the lock stays held for that moment: long enough for a journal reopened
/// at once, or a check run then, to find it taken. A real holder holds it throughout.
const LOCK_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// `flock(lock, operation)` (non-blocking), tried again every few milliseconds for up to
/// [`LOCK_SETTLE`] while it finds the lock held.
fn flock_settled(
    lock: &File,
    operation: rustix::fs::FlockOperation,
) -> Result<(), rustix::io::Errno> {
    let deadline = std::time::Instant::now() + LOCK_SETTLE;
    loop {
        match rustix::fs::flock(lock, operation) {
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

/// Segment files of `dir` as (base_seq, path), oldest first. Removes leftover
/// temporary files of an interrupted roll when `clean` is set.
pub(crate) fn list_segments(dir: &Path, clean: bool) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| JournalError::io("read_dir", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("read_dir", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_name(name) {
            out.push((base, entry.path()));
        } else if clean && name.ends_with(TEMP_SUFFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| JournalError::io("remove", &path, e))?;
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn map_segment(file: &File, path: &Path) -> Result<Arc<Mmap>, JournalError> {
    // SAFETY: the file is a segment of a journal directory this process holds
    // the exclusive flock on, so no other cooperating handle truncates or
    // writes it while mapped; the journal never shrinks a mapped file. The
    // mapping is read-only; the journal writes with `pwrite`, only past every
    // byte it has handed out a borrow of (frames before `end` never change).
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(file) };
    map.map(Arc::new)
        .map_err(|e| JournalError::io("mmap", path, e))
}

/// What a segment file whose frames cannot be read (its header did not decode) may have
/// held past its header: up to its last byte that is not zero. A segment file is
/// preallocated and its unwritten tail reads as zeros, so counting the file's whole
/// length would report a nearly empty file's preallocation as records lost. An upper
/// bound still: a reused file's tail holds an earlier use's frames.
fn bytes_before_zeros(bytes: &[u8]) -> u64 {
    let end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    (end as u64).saturating_sub(SEGMENT_HEADER_BYTES)
}

/// Deletes the segment files `later` (a repair drops everything after the damage), then
/// syncs the directory. Returns the bytes of records they held (a file that does not
/// scan counts up to its last byte that is not zero: [`bytes_before_zeros`]), the highest
/// sequence number among them and `max_seq`, and how many were deleted.
fn delete_later_segments(
    config: &JournalConfig,
    dir: &File,
    later: impl Iterator<Item = PathBuf>,
    mut max_seq: u64,
) -> Result<(u64, u64, usize), JournalError> {
    let mut bytes_lost = 0;
    let mut deleted = 0;
    let later: Vec<PathBuf> = later.collect();
    // Never a segment of a format this build does not read (a newer build's, written
    // after the damage): refused before anything is deleted.
    if let Some((segment, defect)) = newer_format(&later) {
        return Err(JournalError::CorruptSegmentHeader { segment, defect });
    }
    // Newest first: what a crash part way through leaves still follows on.
    for later in later.into_iter().rev() {
        if let Ok(bytes) = fs::read(&later) {
            if let Ok(later_scan) = scan_segment(&bytes) {
                max_seq = max_seq.max(later_scan.last_seq);
                bytes_lost += later_scan.end_offset - SEGMENT_HEADER_BYTES;
            } else {
                bytes_lost += bytes_before_zeros(&bytes);
            }
        }
        fs::remove_file(&later).map_err(|e| JournalError::io("remove", &later, e))?;
        deleted += 1;
    }
    dir.sync_all()
        .map_err(|e| JournalError::io("fsync", &config.dir, e))?;
    Ok((bytes_lost, max_seq, deleted))
}

/// Deletes `covered`, the segment files before those kept that a repair lets go whole
/// ([`CoveredSegments`]), then syncs the directory. Called once the segments kept
/// (`kept`, the latest complete checkpoint among them `checkpoint`) were read whole, the
/// history replay needs in them checked, and all of them synced: the checkpoint that
/// covers the files is durable before they go. Oldest first, as compaction deletes: every
/// state a crash part way through leaves still holds the damage (or gap) that made the
/// repair let them go, which opening refuses as before and the next repair finishes, with
/// nothing lost.
fn delete_covered_segments(
    config: &JournalConfig,
    dir: &File,
    covered: &[(u64, PathBuf)],
    kept: &[Segment],
    checkpoint: Option<CheckpointSpan>,
) -> Result<(), JournalError> {
    if covered.is_empty() {
        return Ok(());
    }
    // Durability invariant: replay from the latest complete checkpoint kept needs no
    // record before the first segment kept, so the files going hold nothing it needs.
    assert!(
        checkpoint.is_some_and(|c| {
            kept.first().is_some_and(|first| {
                first.base_seq <= format::history_needed_from(Some(c.covers_seq))
            })
        }),
        "a repair let go of segments replay needs"
    );
    for (_, path) in covered {
        fs::remove_file(path).map_err(|e| JournalError::io("remove", path, e))?;
    }
    dir.sync_all()
        .map_err(|e| JournalError::io("fsync", &config.dir, e))
}

fn open_rw(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| JournalError::io("open", path, e))
}

impl Journal {
    /// Opens (or creates) the journal in `config.dir`, recovering it: every
    /// frame is checked; a torn tail in the last segment is zeroed; corruption
    /// earlier (damage, or a gap between segment files) is an error, and so is a log
    /// that ends before the durable mark ([`JournalError::DurableMissing`]; `repair`
    /// accepts the loss). A journal whose oldest records replay needs are missing (its
    /// first segment starts after the record following what its latest complete
    /// checkpoint covers, or after the first record with no complete checkpoint:
    /// [`JournalError::HistoryMissing`]) is refused with or without `repair`, as is a
    /// repair that would leave one. A refused journal's segment files are left as they
    /// were (a torn tail is zeroed only once the journal opens).
    ///
    /// With `repair`, corruption is mended in the way that loses least:
    ///
    /// * When the segment files after it, read on their own, hold a complete checkpoint
    ///   that covers every record before them (those of the damaged segment and every
    ///   earlier one, and any missing in a gap), replay from that checkpoint needs none
    ///   of the earlier files: they are deleted whole and nothing is lost
    ///   ([`Recovery::covered`]). Only whole files go, and only when every record in them
    ///   is covered; segments after the damage that the checkpoint covers too stay for
    ///   compaction to let go. The files are deleted only once the segments kept have
    ///   been read whole, their history checked and all of them synced, oldest first: a
    ///   crash part way through leaves the damage (or gap) in place, which opening
    ///   refuses as before and the next repair finishes. Damage further on, in what is
    ///   kept, is then mended the same way.
    /// * Otherwise the log is truncated there: every later segment file is deleted
    ///   (newest first), then the rest of the damaged segment is zeroed, and
    ///   [`Recovery::repair`] counts what was lost.
    ///
    /// A segment file whose header does not decode (cut short, or overwritten) is damage
    /// at its start: let go whole when covered, as above; otherwise the truncation
    /// deletes it with every later file (newest first, so that it goes last). Only a
    /// header of a format this build does not read is refused, repair or not
    /// ([`JournalError::CorruptSegmentHeader`]).
    pub fn open(config: JournalConfig) -> Result<(Journal, Recovery), JournalError> {
        config.validate()?;
        fs::create_dir_all(&config.dir)
            .map_err(|e| JournalError::io("create_dir", &config.dir, e))?;
        let dir = File::open(&config.dir).map_err(|e| JournalError::io("open", &config.dir, e))?;
        let lock_path = config.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| JournalError::io("open", &lock_path, e))?;
        flock_settled(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                if e == rustix::io::Errno::WOULDBLOCK {
                    JournalError::Locked {
                        dir: config.dir.clone(),
                    }
                } else {
                    JournalError::io("flock", &lock_path, e.into())
                }
            },
        )?;

        let listed = list_segments(&config.dir, true)?;
        // After a failure in this boot the page cache may hold frames the disk does not:
        // read the disk (see `SYNC_FAILED_FILE`).
        let failure_path = config.dir.join(format::SYNC_FAILED_FILE);
        let after_failure = failure_mark(&config.dir)?;
        if after_failure.is_some() {
            for (_, path) in &listed {
                drop_cached_pages(path)?;
            }
        }
        let durable_mark = crate::mark::read(&config.dir)?;
        let mut recovery = Recovery::default();
        let mut segments: Vec<Segment> = Vec::new();
        let mut checkpoint: Option<CheckpointSpan> = None;
        let mut open_checkpoint = None;
        let mut expected_base: Option<u64> = None;
        // Segment files before `listed[kept_from]` go whole, as a repair found them covered
        // by a later checkpoint (`covered`); deleted only once the rest has opened.
        let mut kept_from = 0;
        let mut covered: Option<CoveredSegments> = None;
        let count = listed.len();
        let mut i = 0;
        while i < count {
            if i == kept_from {
                // The first segment kept: read on its own, after a repair let those before
                // it go as covered (nothing read yet for the first segment of all).
                (
                    segments,
                    recovery,
                    checkpoint,
                    open_checkpoint,
                    expected_base,
                ) = Default::default();
            }
            let (name_base, path) = (listed[i].0, listed[i].1.clone());
            let is_last = i + 1 == count;
            let file = open_rw(&path)?;
            let map = map_segment(&file, &path)?;
            let scan = match scan_segment_after(&map, open_checkpoint) {
                Ok(scan) => scan,
                // A damaged header (a file cut short, or overwritten) hides every frame
                // in the file. A repair takes it as damage at the file's start: the file
                // and those before it go whole when a later checkpoint covers them;
                // otherwise the log is truncated there, this file and every later one
                // deleted. Never a header of a format this build does not read.
                Err(defect) if config.repair && defect.is_damage() => {
                    let damage = (path.clone(), 0, defect.to_string());
                    let (deleted, records) = (i + 1 - kept_from, recovery.records);
                    if let_go_covered(&listed, i, damage, deleted, records, &mut covered) {
                        (kept_from, i) = (i + 1, i + 1);
                        continue;
                    }
                    // Not if what it keeps lacks records replay needs: refused before
                    // anything is deleted. Keeping nothing, the journal starts again at
                    // this file's base, which only the journal's first file may do.
                    let first = first_kept(&segments, (name_base, &path));
                    ensure_history(&config.dir, first, checkpoint)?;
                    // This file and every later one go, newest first, so that a repair
                    // cut short by a crash leaves this file for the next one to find.
                    let from_here = listed[i..].iter().map(|(_, later)| later.clone());
                    let kept_seq =
                        expected_base.map_or(name_base.saturating_sub(1), |next| next - 1);
                    let (bytes_lost, max_seq, deleted) =
                        delete_later_segments(&config, &dir, from_here, kept_seq)?;
                    expected_base.get_or_insert(name_base);
                    recovery.repair = Some(Repair {
                        segment: path,
                        offset: 0,
                        defect: defect.to_string(),
                        bytes_lost,
                        records_lost: max_seq - kept_seq,
                        segments_deleted: deleted,
                    });
                    break;
                }
                Err(defect) => {
                    return Err(JournalError::CorruptSegmentHeader {
                        segment: path,
                        defect,
                    })
                }
            };
            if scan.header.base_seq != name_base {
                return Err(JournalError::SegmentGap {
                    segment: path,
                    expected: name_base,
                    found: scan.header.base_seq,
                });
            }
            if let Some(expected) = expected_base {
                if scan.header.base_seq != expected {
                    // A reused segment (version 2) ends at its first frame that does not
                    // decode, so damage to its last frames shows only here, as a gap
                    // before the next segment; so does a segment file removed from the
                    // middle, or a repair cut short by a crash once it had zeroed the
                    // damage (before it deleted later segments first). Repair deletes the
                    // segments before the gap when a later checkpoint covers them and
                    // every record missing in the gap; otherwise it truncates there: this
                    // segment and every later one go, as for damage found inside a segment.
                    let previous = segments.last();
                    if let (true, Some(previous)) = (config.repair, previous) {
                        let gap = (
                            previous.path.clone(),
                            previous.end,
                            gap_defect(expected, scan.header.base_seq),
                        );
                        let records = recovery.records;
                        let drop = covered_before(&listed, i, gap.clone(), i - kept_from, records);
                        if let Some(drop) = drop {
                            // This segment is read again, as the first one kept.
                            covered = Some(drop.after(covered.take()));
                            kept_from = i;
                            continue;
                        }
                        // Not if what it keeps lacks records replay needs: refused
                        // before anything is deleted.
                        let first = &segments[0];
                        ensure_history(&config.dir, (first.base_seq, &first.path), checkpoint)?;
                        let later = listed[i..].iter().map(|(_, later)| later.clone());
                        let (bytes_lost, max_seq, deleted) =
                            delete_later_segments(&config, &dir, later, scan.last_seq)?;
                        recovery.repair = Some(Repair {
                            segment: gap.0,
                            offset: gap.1,
                            defect: gap.2,
                            bytes_lost,
                            records_lost: max_seq.saturating_sub(expected - 1),
                            segments_deleted: deleted,
                        });
                        break;
                    }
                    return Err(JournalError::SegmentGap {
                        segment: path,
                        expected,
                        found: scan.header.base_seq,
                    });
                }
            }
            let mut end = scan.end_offset;
            if let ScanStop::Invalid {
                offset,
                defect,
                dirty_end,
            } = scan.stop.clone()
            {
                let judged = judge_damage(
                    &map,
                    &scan,
                    &path,
                    is_last,
                    durable_mark,
                    (offset, &defect, dirty_end),
                );
                match judged {
                    // Zeroed below, once the journal is known to open.
                    Ok(torn) => recovery.torn_tail = Some(torn),
                    Err(intact) if config.repair => {
                        // Every record of this segment and those before it covered by a
                        // later checkpoint: they go whole, nothing is lost.
                        let damage = (path.clone(), offset, defect.to_string());
                        let (deleted, records) =
                            (i + 1 - kept_from, recovery.records + scan.records);
                        if let_go_covered(&listed, i, damage, deleted, records, &mut covered) {
                            (kept_from, i) = (i + 1, i + 1);
                            continue;
                        }
                        // Not if what it keeps lacks records replay needs (the damage
                        // cuts off the checkpoint that let them go): refused before
                        // anything is deleted or zeroed.
                        let first = first_kept(&segments, (name_base, &path));
                        ensure_history(&config.dir, first, scan.last_checkpoint.or(checkpoint))?;
                        // Everything after the corruption goes: every later segment,
                        // then this segment's rest, so that a repair cut short by a
                        // crash leaves damage the next repair finds again, not a gap.
                        let later = listed[i + 1..].iter().map(|(_, later)| later.clone());
                        let max_seq = intact.map_or(scan.last_seq, |i| i.last_seq);
                        let (later_bytes, max_seq, deleted) =
                            delete_later_segments(&config, &dir, later, max_seq)?;
                        zero_and_sync(&file, offset, dirty_end, &path)?;
                        let bytes_lost = dirty_end - offset + later_bytes;
                        recovery.repair = Some(Repair {
                            segment: path.clone(),
                            offset,
                            defect: defect.to_string(),
                            bytes_lost,
                            records_lost: max_seq - scan.last_seq,
                            segments_deleted: deleted,
                        });
                    }
                    Err(_) => {
                        return Err(JournalError::CorruptFrame {
                            segment: path,
                            offset,
                            defect,
                        })
                    }
                }
            }
            end = end.max(SEGMENT_HEADER_BYTES);
            recovery.records += scan.records;
            recovery.bytes += scan.end_offset - SEGMENT_HEADER_BYTES;
            if scan.records > 0 {
                recovery.first_seq.get_or_insert(scan.header.base_seq);
                recovery.last_seq = Some(scan.last_seq);
            }
            if let Some(span) = scan.last_checkpoint {
                checkpoint = Some(span);
            }
            open_checkpoint = scan.open_checkpoint;
            expected_base = Some(scan.last_seq + 1);
            segments.push(Segment {
                base_seq: scan.header.base_seq,
                path,
                file: Arc::new(file),
                map,
                end,
                last_seq: scan.last_seq,
                salt: scan.header.salt,
            });
            if recovery.repair.is_some() {
                // Truncated here: every later segment was deleted.
                break;
            }
            i += 1;
        }
        recovery.segments = segments.len();
        recovery.checkpoint_seq = checkpoint.map(|c| c.first_seq);
        recovery.checkpoint_covers_seq = checkpoint.map(|c| c.covers_seq);

        // Replay needs every record after what the latest complete checkpoint covers
        // (every record, without one), and compaction never deletes one of them: a first
        // segment that starts later lost its predecessors. Refused whatever `repair`
        // says, before the mark below or anything else is written.
        if let Some(first) = segments.first() {
            ensure_history(&config.dir, (first.base_seq, &first.path), checkpoint)?;
        }

        recovery.durable_mark = durable_mark;
        let payload_bytes_max = config.payload_bytes_max();
        let next_seq = expected_base.unwrap_or(format::FIRST_SEQ);
        // Records the mark says were made durable must all be here: a log that ends
        // before it lost acknowledged records (damage to a reused segment's last frames
        // ends its log as stale bytes would; or the last segment files were removed).
        let last_seq = next_seq - 1;
        if let Some(mark) = durable_mark.filter(|&mark| mark > last_seq) {
            if !config.repair {
                return Err(JournalError::DurableMissing {
                    dir: config.dir.clone(),
                    last_seq,
                    durable_mark: mark,
                });
            }
            let repair = recovery.repair.get_or_insert_with(|| Repair {
                segment: segments
                    .last()
                    .map_or_else(|| config.dir.clone(), |s| s.path.clone()),
                offset: segments.last().map_or(0, |s| s.end),
                defect: format!(
                    "the log ends at seq {last_seq}, but records up to seq {mark} were made \
                     durable"
                ),
                bytes_lost: 0,
                records_lost: 0,
                segments_deleted: 0,
            });
            repair.records_lost = repair.records_lost.max(mark - last_seq);
        }
        if let Some(torn) = &recovery.torn_tail {
            // Zeroed whole: an intact frame left there could be read as the next one once
            // appends reach it. Only a journal that opens gets here, so a refused one
            // keeps its segment files as they were. A torn tail is in the last segment.
            let last = segments.last().expect("a torn tail is in a segment");
            let end = torn.offset + torn.bytes_discarded;
            zero_and_sync(&last.file, torn.offset, end, &last.path)?;
        }
        // A journal always has an active segment: the last one recovered, or a first
        // one made now for an empty directory. Taken from the segment in hand, so that
        // "no segment" cannot arise here.
        let active = match segments.last() {
            Some(last) => {
                // Frames a stopped process wrote but had not synced may be in the page
                // cache only, yet count as durable from here on (`durable_seq` starts at
                // the last one recovered): synced first. Earlier segments were synced
                // before the roll that sealed them.
                last.file
                    .sync_data()
                    .map_err(|e| JournalError::io("fdatasync", &last.path, e))?;
                Arc::clone(&last.file)
            }
            None => {
                let segment = create_segment(&config, &dir, next_seq)?;
                let active = Arc::clone(&segment.file);
                segments.push(segment);
                recovery.segments = 1;
                active
            }
        };
        // Everything recovered is durable now, the last segment's name too (a crashed
        // process may have renamed it without syncing the directory yet): the mark
        // says so before the sync thread moves it on. It is written whatever it held,
        // so after a repair it does not name sequence numbers the log no longer has.
        dir.sync_all()
            .map_err(|e| JournalError::io("fsync", &config.dir, e))?;
        // Only now, with the segments kept read whole, replay's history in them checked
        // and all of them durable, do the files a repair found covered go.
        delete_covered_segments(&config, &dir, &listed[..kept_from], &segments, checkpoint)?;
        recovery.covered = covered;
        let mark = crate::mark::DurableMark::create(&config.dir, &dir, next_seq - 1)?;
        if after_failure.is_some() {
            // What was read is the disk's, and durable: the failure is behind.
            fs::remove_file(&failure_path)
                .map_err(|e| JournalError::io("remove", &failure_path, e))?;
        }
        recovery.after_failure = after_failure;
        let dir = Arc::new(dir);
        let spare = Spare::start(config.dir.clone(), Arc::clone(&dir), config.segment_bytes)
            .map_err(|source| JournalError::Spawn {
                thread: "herald-journal-spare",
                source,
            })?;
        let shared = Arc::new(Shared::new(
            active,
            Arc::clone(&dir),
            next_seq - 1,
            config.group_records_max as u64,
            Duration::from_micros(config.group_delay_us),
            Duration::from_micros(config.lazy_delay_us.max(config.group_delay_us)),
        ));
        let thread_shared = Arc::clone(&shared);
        let sync_thread = std::thread::Builder::new()
            .name(format!("{}-sync", crate::THREAD_NAME_PREFIX))
            .spawn(move || thread_shared.run(mark))
            .map_err(|source| JournalError::Spawn {
                thread: "herald-journal-sync",
                source,
            })?;
        let journal = Journal {
            config,
            dir,
            spare,
            _lock: lock,
            segments,
            next_seq,
            staged: AlignedVec::with_capacity(STAGED_BYTES_MAX),
            staged_records: 0,
            checkpoint,
            checkpoint_open: None,
            shared,
            since_kick: 0,
            sync_thread: Some(sync_thread),
            payload_bytes_max,
            last_frame_bytes: 0,
            checkpoint_before_staged: checkpoint,
            withdrawn_from: None,
            withdrawn_bytes: 0,
            write_probe_pending: false,
        };
        Ok((journal, recovery))
    }

    /// The configuration the journal was opened with.
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// Appends a record and returns its sequence number at once; it becomes
    /// durable with a later group sync (see [`Journal::durable_seq`]).
    /// `kind` must be below [`KIND_RESERVED_MIN`].
    pub fn append(&mut self, kind: u16, version: u16, payload: &[u8]) -> Result<u64, JournalError> {
        self.append_placed(kind, version, payload)
            .map(|(seq, _)| seq)
    }

    /// [`Journal::append`], also returning where the payload lies: its bytes can be
    /// read back through the mapping with [`Journal::bytes_at`] (or a [`Reader`])
    /// until its segment is compacted away, so a caller may keep the position instead
    /// of a copy.
    pub fn append_placed(
        &mut self,
        kind: u16,
        version: u16,
        payload: &[u8],
    ) -> Result<(u64, Position), JournalError> {
        if kind >= KIND_RESERVED_MIN {
            return Err(JournalError::ReservedKind { kind });
        }
        let seq = self.append_frame(kind, version, payload)?;
        Ok((seq, self.last_frame_at().after(FRAME_HEADER_BYTES)))
    }

    /// Where the frame appended last starts.
    fn last_frame_at(&self) -> Position {
        let segment = self.segments.last().expect("journal has an active segment");
        Position {
            segment: segment.base_seq,
            offset: segment.end - self.last_frame_bytes,
        }
    }

    /// `len` bytes at `at`, read through the segment's mapping (or, for frames
    /// appended but not yet written, from the staging buffer). `None` when they are
    /// not in the journal: the segment was compacted away, or the range passes the
    /// end of what was appended.
    pub fn bytes_at(&self, at: Position, len: usize) -> Option<&[u8]> {
        let index = self
            .segments
            .binary_search_by_key(&at.segment, |s| s.base_seq)
            .ok()?;
        let written = self.written_end(index);
        if at.offset >= written {
            // Appended, not yet written: the staging buffer holds the segment's tail.
            let from = usize::try_from(at.offset - written).ok()?;
            return self.staged.get(from..from.checked_add(len)?);
        }
        // A range reaching past `written` straddles written and staged bytes, which a
        // frame never does.
        written_bytes(&self.segments[index].map, written, at.offset, len)
    }

    /// `len` bytes at `at` held through the segment's mapping (see [`Mapped`]); `None`
    /// unless they were written to the segment's file (staged frames are not: commit
    /// first; durable ones are).
    pub fn mapped(&self, at: Position, len: usize) -> Option<Mapped> {
        let segment = &self.segments[self.written_in(at, len)?];
        Some(Mapped {
            map: Some(Arc::clone(&segment.map)),
            // Segments are at most SEGMENT_BYTES_MAX (1 GiB), so both fit.
            offset: u32::try_from(at.offset).ok()?,
            len: u32::try_from(len).ok()?,
        })
    }

    /// The whole mapping of the segment that holds `len` bytes at `at`, when those bytes
    /// were written to its file (as for [`Journal::mapped`]): a reader that hands out
    /// many ranges of one segment takes its mapping once and slices it. The hold keeps
    /// the whole segment mapped, also after the journal lets it go: drop it once the
    /// segment is older than [`Journal::first_seq`].
    pub fn mapped_segment(&self, at: Position, len: usize) -> Option<Mapped> {
        let segment = &self.segments[self.written_in(at, len)?];
        Some(Mapped {
            map: Some(Arc::clone(&segment.map)),
            offset: 0,
            // Segments are at most SEGMENT_BYTES_MAX (1 GiB).
            len: u32::try_from(segment.map.len()).ok()?,
        })
    }

    /// Whether the `len` bytes at `at` were written to their segment's file (so
    /// [`Journal::mapped`] and [`Journal::mapped_segment`] give them).
    pub fn is_written(&self, at: Position, len: usize) -> bool {
        self.written_in(at, len).is_some()
    }

    /// The index of the segment holding `len` bytes at `at`, when they were written to
    /// its file.
    fn written_in(&self, at: Position, len: usize) -> Option<usize> {
        let index = self
            .segments
            .binary_search_by_key(&at.segment, |s| s.base_seq)
            .ok()?;
        written_bytes(
            &self.segments[index].map,
            self.written_end(index),
            at.offset,
            len,
        )?;
        Some(index)
    }

    /// Sequence number of the oldest frame the journal still holds (the first
    /// segment's first; the next one to be appended when it holds none).
    pub fn first_seq(&self) -> u64 {
        self.segments
            .first()
            .map_or(self.next_seq, |segment| segment.base_seq)
    }

    /// A reader of what was written so far, independent of later borrows of the
    /// journal (a checkpoint being written, say). It sees the segments as they are
    /// now, up to what was written to their files: commit first for staged frames.
    pub fn reader(&self) -> Reader {
        Reader {
            segments: (0..self.segments.len())
                .map(|index| {
                    let segment = &self.segments[index];
                    (
                        segment.base_seq,
                        Arc::clone(&segment.map),
                        self.written_end(index),
                    )
                })
                .collect(),
        }
    }

    /// Appends a checkpoint of one part describing live state (see
    /// [`Journal::begin_checkpoint`] for checkpoints larger than one frame, and
    /// [`Journal::open_checkpoint`] for one written across other appends). Once it
    /// is durable, segments wholly before the one holding it may be deleted (on the
    /// next roll, or by [`Journal::compact`]), and replay starts at it. Returns the
    /// sequence number of its first frame.
    pub fn checkpoint(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        let mut writer = self.begin_checkpoint();
        writer.part(payload)?;
        writer.finish()
    }

    /// Starts a checkpoint of any size, written as parts of at most
    /// [`Journal::checkpoint_part_bytes_max`] bytes each
    /// ([`CheckpointWriter::part`]) and ended with [`CheckpointWriter::finish`]. The
    /// writer holds the journal, so its parts are consecutive frames and it covers
    /// every frame before it. It counts only once finished: a checkpoint whose writer
    /// is dropped, or that a crash cuts short, is ignored on recovery and replay, and
    /// the previous one stays where replay starts. Replay returns the parts in order,
    /// one frame each. Opening it abandons a checkpoint opened with
    /// [`Journal::open_checkpoint`] and not finished.
    pub fn begin_checkpoint(&mut self) -> CheckpointWriter<'_> {
        let handle = self.open_checkpoint();
        CheckpointWriter {
            journal: self,
            handle,
        }
    }

    /// Starts a checkpoint written across other appends: the caller writes its parts
    /// with [`Journal::checkpoint_part`], a few at a time, appending records between
    /// them as usual, and ends it with [`Journal::finish_checkpoint`].
    ///
    /// The checkpoint describes the state as of now: it covers every frame appended
    /// so far (up to [`Journal::last_seq`], [`CheckpointHandle::covers_seq`]), and
    /// none appended after this call, records between its parts included. Recovery
    /// loads its parts, then replays every ordinary frame after `covers_seq`
    /// ([`Journal::replay`]).
    ///
    /// One checkpoint is open at a time: opening another (this call,
    /// [`Journal::begin_checkpoint`] or [`Journal::checkpoint`]) abandons this one, whose
    /// handle is then refused ([`JournalError::CheckpointAbandoned`]). Dropping the
    /// handle abandons it too. An abandoned or unfinished checkpoint is ignored on
    /// recovery: the previous one stays where replay starts.
    pub fn open_checkpoint(&mut self) -> CheckpointHandle {
        let id = CHECKPOINT_IDS.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_open = Some(id);
        CheckpointHandle {
            id,
            covers_seq: self.next_seq - 1,
            start: None,
            parts: 0,
            last_seq: 0,
        }
    }

    /// Appends the next part of the checkpoint `handle` (at most
    /// [`Journal::checkpoint_part_bytes_max`] bytes; [`JournalError::RecordTooLarge`]
    /// beyond it, and nothing is written). Returns where the part's bytes lie (see
    /// [`Journal::bytes_at`]). A handle that is no longer the open checkpoint is
    /// refused with [`JournalError::CheckpointAbandoned`], and nothing is written.
    pub fn checkpoint_part(
        &mut self,
        handle: &mut CheckpointHandle,
        part: &[u8],
    ) -> Result<Position, JournalError> {
        self.append_checkpoint_part(handle, part).map(|(_, at)| at)
    }

    /// Appends the end marker of the checkpoint `handle`: it is complete, and becomes
    /// the latest checkpoint (it counts for recovery and compaction once durable).
    /// Returns the sequence number of its first frame. A checkpoint with no part gets
    /// one empty part. A handle that is no longer the open checkpoint is refused with
    /// [`JournalError::CheckpointAbandoned`]; on any error the checkpoint is abandoned.
    pub fn finish_checkpoint(&mut self, mut handle: CheckpointHandle) -> Result<u64, JournalError> {
        if handle.start.is_none() {
            self.append_checkpoint_part(&mut handle, &[])?;
        }
        self.ensure_open(&handle)?;
        let (first_seq, first_base, first_offset) = handle.start.expect("a part was written above");
        let last_seq = self.append_part(first_seq, handle.parts, true, handle.covers_seq, &[])?;
        // Durability invariant: the end marker comes after the last part, so reading it
        // in sequence order means every part was read.
        assert!(
            last_seq > handle.last_seq && handle.last_seq >= first_seq,
            "the end marker must follow the last part"
        );
        self.checkpoint_open = None;
        self.checkpoint = Some(CheckpointSpan {
            first_seq,
            first_base,
            first_offset,
            last_seq,
            covers_seq: handle.covers_seq,
        });
        Ok(first_seq)
    }

    /// Refuses a handle that is not the open checkpoint.
    fn ensure_open(&self, handle: &CheckpointHandle) -> Result<(), JournalError> {
        if self.checkpoint_open == Some(handle.id) {
            Ok(())
        } else {
            Err(JournalError::CheckpointAbandoned {
                covers_seq: handle.covers_seq,
            })
        }
    }

    /// [`Journal::checkpoint_part`], also returning the part's sequence number.
    fn append_checkpoint_part(
        &mut self,
        handle: &mut CheckpointHandle,
        part: &[u8],
    ) -> Result<(u64, Position), JournalError> {
        self.ensure_open(handle)?;
        let first_seq = handle.start.map_or(self.next_seq, |s| s.0);
        let seq = self.append_part(first_seq, handle.parts, false, handle.covers_seq, part)?;
        let frame = self.last_frame_at();
        if handle.start.is_none() {
            // Durability invariant: part 0 is the checkpoint's first frame, after every
            // frame it covers. A roll before it moves it into a new segment: `frame`
            // says where it went.
            assert_eq!(seq, first_seq, "part 0 is the checkpoint's first frame");
            handle.start = Some((seq, frame.segment, frame.offset));
        }
        // Durability invariant: parts carry consecutive indexes in sequence order.
        assert!(
            seq > handle.last_seq && seq > handle.covers_seq,
            "checkpoint parts in sequence order, after what they cover"
        );
        handle.parts += 1;
        handle.last_seq = seq;
        Ok((
            seq,
            frame.after(FRAME_HEADER_BYTES + CHECKPOINT_PART_HEADER_BYTES),
        ))
    }

    /// Largest part of a checkpoint: the largest payload less the part header.
    pub fn checkpoint_part_bytes_max(&self) -> u64 {
        self.payload_bytes_max - CHECKPOINT_PART_HEADER_BYTES
    }

    /// Appends one checkpoint frame: the part header, then `part`. Checkpoint frames
    /// may roll into the allowance beyond `segments_max`
    /// ([`CHECKPOINT_SEGMENTS_EXTRA_FACTOR`]); records never do.
    fn append_part(
        &mut self,
        first_seq: u64,
        index: u32,
        end: bool,
        covers_seq: u64,
        part: &[u8],
    ) -> Result<u64, JournalError> {
        let part_bytes_max = self.checkpoint_part_bytes_max();
        if part.len() as u64 > part_bytes_max {
            return Err(JournalError::RecordTooLarge {
                payload_bytes: part.len() as u64 + CHECKPOINT_PART_HEADER_BYTES,
                payload_bytes_max: self.payload_bytes_max,
            });
        }
        // The part header and the part go into the frame as they are: a part is up to
        // several MiB, and gathering them into one buffer first would copy it once more.
        let header = encode_part_header(first_seq, index, end, covers_seq);
        let segments_allowed = self.config.segments_max * (1 + CHECKPOINT_SEGMENTS_EXTRA_FACTOR);
        self.append_frame_within(
            KIND_CHECKPOINT,
            CHECKPOINT_VERSION,
            &[&header, part],
            segments_allowed,
        )
    }

    fn append_frame(
        &mut self,
        kind: u16,
        version: u16,
        payload: &[u8],
    ) -> Result<u64, JournalError> {
        self.append_frame_within(kind, version, &[payload], self.config.segments_max)
    }

    /// Appends a frame whose payload is `pieces` joined, rolling when needed as long as
    /// the journal then holds at most `segments_allowed` segments (`segments_max`, or
    /// more for a checkpoint).
    fn append_frame_within(
        &mut self,
        kind: u16,
        version: u16,
        pieces: &[&[u8]],
        segments_allowed: usize,
    ) -> Result<u64, JournalError> {
        self.shared.check_failed()?;
        self.check_withdrawn()?;
        let payload_bytes: u64 = pieces.iter().map(|piece| piece.len() as u64).sum();
        if payload_bytes > self.payload_bytes_max {
            return Err(JournalError::RecordTooLarge {
                payload_bytes,
                payload_bytes_max: self.payload_bytes_max,
            });
        }
        let total = frame_bytes(payload_bytes);
        let needs_roll = match self.segments.last() {
            Some(s) => s.end + total > s.map.len() as u64,
            None => true,
        };
        if needs_roll {
            self.roll(segments_allowed)?;
        }
        let seq = self.next_seq;
        if self.staged.len() + total as usize > STAGED_BYTES_MAX {
            self.write_staged()?;
        }
        let staged_from = self.staged.len();
        if staged_from == 0 {
            self.checkpoint_before_staged = self.checkpoint;
        }
        let segment = self
            .segments
            .last_mut()
            .expect("journal has an active segment");
        let start = segment.end as usize;
        let stop = start + total as usize;
        // Durability invariants: frames are appended in place, in order, aligned,
        // and the staging buffer holds exactly the segment's unwritten tail.
        assert!(stop <= segment.map.len(), "frame past segment end");
        assert_eq!(segment.last_seq + 1, seq, "sequence gap on append");
        assert_eq!(start % 16, 0, "frame start not aligned");
        push_frame(&mut self.staged, segment.salt, seq, kind, version, pieces);
        assert_eq!(
            self.staged.len() - staged_from,
            stop - start,
            "staged frame length"
        );
        segment.end = stop as u64;
        segment.last_seq = seq;
        self.last_frame_bytes = total;
        self.next_seq += 1;
        self.staged_records += 1;
        Ok(seq)
    }

    /// Writes the staged frames to the active segment file (one `pwrite` per
    /// [`WRITE_PIECE_BYTES`] they span) and
    /// hands them to the sync thread. Until a frame is committed it cannot
    /// become durable: call this once per batch of appends (a shard turn).
    /// [`Journal::sync`], a roll and dropping the journal commit by themselves.
    ///
    /// A write that finds no space (ENOSPC, EDQUOT: possible on a filesystem that
    /// copies on write, or on thin storage, where a preallocated segment holds no
    /// blocks) withdraws the frames it did not write whole and returns the error; see
    /// [`JournalError::Withdrawn`]. Any other failed write fails the journal like a
    /// failed sync: only a restart (reading the disk) can tell what reached the file.
    ///
    /// Every record written so far, lazily committed ones included, is then synced
    /// within the group delay.
    pub fn commit(&mut self) -> Result<(), JournalError> {
        self.commit_as(true)
    }

    /// [`Journal::commit`] for records nobody waits to see durable: they are written
    /// now but synced only within the lazy delay ([`JournalConfig::lazy_delay_us`]),
    /// sharing a sync with later records, unless an urgent commit comes first.
    pub fn commit_lazy(&mut self) -> Result<(), JournalError> {
        self.commit_as(false)
    }

    fn commit_as(&mut self, urgent: bool) -> Result<(), JournalError> {
        self.shared.check_failed()?;
        if self.staged_records == 0 {
            if urgent {
                // Records committed lazily before may have a waiter now.
                self.shared.urge();
            }
            return Ok(());
        }
        self.write_staged()?;
        let records = std::mem::take(&mut self.staged_records);
        self.shared
            .published(self.next_seq - 1, records, urgent, &mut self.since_kick);
        Ok(())
    }

    /// Records appended but not yet committed (see [`Journal::commit`]).
    pub fn staged_records(&self) -> u64 {
        self.staged_records
    }

    /// Writes `staged` at the segment's unwritten tail; the records stay
    /// unpublished (see `commit`).
    fn write_staged(&mut self) -> Result<(), JournalError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let segment = self.segments.last().expect("journal has an active segment");
        let at = segment.end - self.staged.len() as u64;
        // Durability invariant: the staged bytes are the segment's tail, frame-aligned.
        assert!(
            at >= SEGMENT_HEADER_BYTES && at.is_multiple_of(16),
            "staged tail offset"
        );
        let mut written = 0usize;
        let mut failure = None;
        while written < self.staged.len() {
            let offset = at + written as u64;
            let piece = (self.staged.len() - written)
                .min((WRITE_PIECE_BYTES - offset % WRITE_PIECE_BYTES) as usize);
            let bytes = &self.staged[written..written + piece];
            // Counted, not `write_all_at`: a withdrawal must know which bytes reached
            // the file.
            match segment.file.write_at(bytes, offset) {
                Ok(0) => {
                    failure = Some(JournalError::io(
                        "pwrite",
                        &segment.path,
                        io::ErrorKind::WriteZero.into(),
                    ));
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(JournalError::io("pwrite", &segment.path, e));
                    break;
                }
            }
        }
        if let Some(error) = failure {
            if let (true, JournalError::Io { source, .. }) = (error.is_storage_full(), &error) {
                let os_error = source
                    .raw_os_error()
                    .expect("storage full is told by its OS error");
                self.withdraw_unwritten(written, os_error);
            } else {
                self.shared.fail(error.to_string());
            }
            return Err(error);
        }
        self.staged.clear();
        Ok(())
    }

    /// A write of the staged frames found no space after `written` of their bytes.
    /// The frames written whole stay: they are in the file, and the next commit hands
    /// them to the sync thread. The others are withdrawn: their sequence numbers and
    /// their room go to the next appends, which write over what of them reached the
    /// file (a torn frame past the end, as a crash leaves). The journal refuses appends
    /// until its owner resumes it ([`JournalError::Withdrawn`]).
    fn withdraw_unwritten(&mut self, written: usize, os_error: i32) {
        let mut frames = 0u64;
        let mut kept = 0u64;
        let mut kept_bytes = 0usize;
        let mut at = 0usize;
        while at < self.staged.len() {
            let payload_bytes = u32::from_le_bytes(
                self.staged[at + 4..at + 8]
                    .try_into()
                    .expect("a frame header holds its payload's length"),
            );
            let total = frame_bytes(u64::from(payload_bytes)) as usize;
            frames += 1;
            at += total;
            if at <= written {
                kept += 1;
                kept_bytes = at;
                self.last_frame_bytes = total as u64;
            }
        }
        // Durability invariant: the staging buffer holds whole frames, and the write
        // stopped within them.
        assert_eq!(at, self.staged.len(), "staged frames' lengths");
        assert!(kept < frames, "a withdrawal withdraws a frame");
        let withdrawn = frames - kept;
        let segment = self
            .segments
            .last_mut()
            .expect("journal has an active segment");
        let withdrawn_bytes = (self.staged.len() - kept_bytes) as u64;
        segment.end -= withdrawn_bytes;
        self.withdrawn_bytes += withdrawn_bytes;
        segment.last_seq -= withdrawn;
        self.next_seq -= withdrawn;
        self.staged_records -= withdrawn;
        // Durability invariants: the segment ends where its last kept frame does, and
        // the next append follows it.
        assert_eq!(
            segment.last_seq + 1,
            self.next_seq,
            "sequence after withdrawal"
        );
        assert!(
            segment.end >= SEGMENT_HEADER_BYTES && segment.end.is_multiple_of(16),
            "segment end after withdrawal"
        );
        self.staged.clear();
        if self.checkpoint.is_some_and(|c| c.last_seq >= self.next_seq) {
            // Its end marker was withdrawn: the one before it is the latest again.
            self.checkpoint = self.checkpoint_before_staged;
        }
        // Its parts may be among the withdrawn frames.
        self.checkpoint_open = None;
        self.withdrawn_from = Some((self.next_seq, os_error));
        self.write_probe_pending = true;
    }

    /// Refuses appends after a withdrawal, until the owner resumes the journal.
    fn check_withdrawn(&self) -> Result<(), JournalError> {
        match self.withdrawal() {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// The first sequence number of the records a write that found no space withdrew,
    /// while the journal waits for its owner to resume it ([`JournalError::Withdrawn`]).
    pub fn withdrawn_from(&self) -> Option<u64> {
        self.withdrawn_from.map(|(from_seq, _)| from_seq)
    }

    /// Bytes of frames withdrawn since the journal was opened (see
    /// [`JournalError::Withdrawn`]): what its owner counted as appended and the file
    /// does not hold.
    pub fn withdrawn_bytes(&self) -> u64 {
        self.withdrawn_bytes
    }

    /// The refusal appends get while the journal waits for its owner to resume it
    /// after a withdrawal: which records went, and the OS error of the write.
    pub fn withdrawal(&self) -> Option<JournalError> {
        self.withdrawn_from
            .map(|(from_seq, os_error)| JournalError::Withdrawn {
                from_seq,
                source: std::io::Error::from_raw_os_error(os_error),
            })
    }

    /// Takes appends again after a withdrawal ([`JournalError::Withdrawn`]), once the
    /// owner no longer holds anything it made of the withdrawn records (replies waiting
    /// for them to be durable, state rebuilt from them): their sequence numbers go to
    /// the next records. [`Journal::ensure_room`] then tells when there is space again.
    pub fn resume_after_withdrawal(&mut self) {
        self.withdrawn_from = None;
    }

    /// Makes room for one record of `payload_bytes` (clamped to the largest
    /// record): when the active segment cannot hold it, rolls to a new segment
    /// now; otherwise does nothing. Appends nothing and takes no sequence
    /// number, so a caller whose append failed on a full disk can probe, with
    /// backoff, whether it can write again before it takes on new work.
    ///
    /// After a write found no space it also writes (zeros, where the next record goes)
    /// before it says there is room: on a filesystem that copies on write, or on thin
    /// storage, the segment's preallocated room is not space.
    pub fn ensure_room(&mut self, payload_bytes: u64) -> Result<(), JournalError> {
        self.shared.check_failed()?;
        self.check_withdrawn()?;
        let total = frame_bytes(payload_bytes.min(self.payload_bytes_max));
        let fits = self
            .segments
            .last()
            .is_some_and(|s| s.end + total <= s.map.len() as u64);
        if !fits {
            self.roll(self.config.segments_max)?;
        }
        if self.write_probe_pending {
            self.commit()?;
            let segment = self.segments.last().expect("journal has an active segment");
            // As much as one write of staged frames covers, so that a probe that fits
            // in a block the torn write left allocated does not pass for space.
            let room = segment.map.len() as u64 - segment.end;
            let zeros = vec![0u8; WRITE_PIECE_BYTES.max(total).min(room) as usize];
            if let Err(e) = segment.file.write_all_at(&zeros, segment.end) {
                let error = JournalError::io("pwrite", &segment.path, e);
                if !error.is_storage_full() {
                    self.shared.fail(error.to_string());
                }
                return Err(error);
            }
            self.write_probe_pending = false;
        }
        Ok(())
    }

    /// Starts a new segment for the checkpoint opened next, unless the active segment
    /// holds no frame yet; returns whether it rolled. Like a checkpoint's own parts it may
    /// roll into the allowance beyond `segments_max` ([`CHECKPOINT_SEGMENTS_EXTRA_FACTOR`]).
    ///
    /// Compaction keeps the segment that holds a checkpoint's first part, frames before
    /// it included. A checkpoint opened part way into a segment thus keeps that segment
    /// too, which at the segment limit can be the room the next record needs: a caller
    /// checkpointing there to make room starts it on a segment of its own.
    pub fn roll_for_checkpoint(&mut self) -> Result<bool, JournalError> {
        self.shared.check_failed()?;
        let empty = self.staged.is_empty()
            && self
                .segments
                .last()
                .is_some_and(|s| s.end == SEGMENT_HEADER_BYTES);
        if empty {
            return Ok(false);
        }
        self.roll(self.config.segments_max * (1 + CHECKPOINT_SEGMENTS_EXTRA_FACTOR))?;
        Ok(true)
    }

    /// Starts a new segment, provided the journal then holds at most
    /// `segments_allowed` segments (after compacting, at the limit).
    fn roll(&mut self, segments_allowed: usize) -> Result<(), JournalError> {
        self.check_withdrawn()?;
        // The old segment's tail goes to its file before the sync thread is
        // told about the new one, so a sync after the roll covers it.
        self.commit()?;
        if self.segments.len() >= self.config.segments_max {
            if self
                .checkpoint
                .is_some_and(|c| c.last_seq > self.durable_seq())
            {
                // At the limit a checkpoint that is merely not durable yet
                // would free space: wait for it rather than fail.
                self.sync()?;
            }
            self.compact()?;
            if self.segments.len() >= segments_allowed {
                return Err(JournalError::SegmentsExhausted {
                    segments_max: self.config.segments_max,
                });
            }
        }
        // Retention happens here so steady load needs no explicit call; the files go
        // in the background (see `spare`), not on the appender's thread. Queued before
        // the spare is taken, so that the thread frees their space before it
        // preallocates the next spare (on a nearly full disk that order matters).
        self.compact_with(Removal::Background)?;
        let base_seq = self.next_seq;
        let prepared = self.spare.take().and_then(|spare| {
            match install_spare(
                &self.config,
                spare.file,
                &spare.path,
                base_seq,
                spare.reused,
            ) {
                Ok(segment) => Some((segment, spare.path)),
                Err(_) => {
                    // Fall back to creating one here, which reports its error.
                    let _ = fs::remove_file(&spare.path);
                    None
                }
            }
        });
        let (segment, temp) = match prepared {
            Some(prepared) => prepared,
            None => create_unnamed_segment(&self.config, base_seq)?,
        };
        self.shared
            .rolled(Arc::clone(&segment.file), (temp, segment.path.clone()));
        self.segments.push(segment);
        Ok(())
    }

    /// Deletes the segments recovery no longer needs once the latest complete
    /// checkpoint is durable: those whose every frame it covers (sequence numbers up
    /// to its `covers_seq`) and that lie before its first frame. The segment holding
    /// `covers_seq + 1` is kept, since replay goes on from there. Called on every roll;
    /// callers may call it too.
    ///
    /// It deletes the files before it returns (and first waits for the deletions a roll
    /// queued in the background, trying again any that failed); a roll's own
    /// compaction leaves them to the journal's background thread, and a deletion that
    /// failed there is reported by the next call of this.
    pub fn compact(&mut self) -> Result<Compaction, JournalError> {
        self.compact_with(Removal::Now)
    }

    fn compact_with(&mut self, removal: Removal) -> Result<Compaction, JournalError> {
        // A roll does not wait for the background, nor fail for it: a deletion that
        // failed there stays queued and is reported by the next explicit compaction.
        if let Removal::Now = removal {
            if let Err((path, error)) = self.spare.deleted() {
                return Err(JournalError::io("remove", &path, error));
            }
        }
        let mut done = Compaction::default();
        let Some(CheckpointSpan {
            first_base,
            last_seq,
            covers_seq,
            ..
        }) = self.checkpoint
        else {
            return Ok(done);
        };
        if last_seq > self.durable_seq() {
            return Ok(done);
        }
        // Oldest first, so a crash part way leaves a contiguous suffix.
        let mut doomed = Vec::new();
        while self.segments.len() > 1
            && self.segments[0].base_seq < first_base
            && self.segments[0].last_seq <= covers_seq
        {
            if let Removal::Now = removal {
                // Listed until its file is gone: one that cannot be deleted stays the
                // oldest segment, and is tried again by the next compaction.
                let path = &self.segments[0].path;
                fs::remove_file(path).map_err(|e| JournalError::io("remove", path, e))?;
            }
            let segment = self.segments.remove(0);
            done.segments_deleted += 1;
            done.bytes_freed += segment.map.len() as u64;
            if let Removal::Background = removal {
                doomed.push(Doomed {
                    path: segment.path,
                    file: segment.file,
                    map: segment.map,
                    set_aside: false,
                });
            }
        }
        // Durability invariant: the first segment kept starts at or before the record
        // after what the checkpoint covers, where its replay goes on; recovery refuses a
        // journal whose first segment starts later (`HistoryMissing`).
        assert!(
            self.segments[0].base_seq <= format::history_needed_from(Some(covers_seq)),
            "compaction let go of a segment replay needs"
        );
        match removal {
            Removal::Now if done.segments_deleted > 0 => self
                .dir
                .sync_all()
                .map_err(|e| JournalError::io("fsync", &self.config.dir, e))?,
            Removal::Now => {}
            Removal::Background => self.spare.delete(doomed),
        }
        Ok(done)
    }

    /// Highest sequence number known durable (0 when none). One atomic load.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// Last sequence number appended (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// A handle other threads can use to read or wait for durability.
    pub fn durable_handle(&self) -> DurableHandle {
        DurableHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Registers `f`, called from the sync thread with the new durable
    /// sequence number each time it advances, and once when the journal fails
    /// (a sync, a rename or a write; with the durable sequence then, unchanged:
    /// [`Journal::commit`] and [`DurableHandle::wait_durable`] then report the
    /// failure). It runs with no journal lock held, but it delays the next sync
    /// while it runs: keep it short (wake a task, do not do the work in it).
    pub fn set_durable_notify(&mut self, f: Box<dyn Fn(u64) + Send + Sync>) {
        self.shared.set_notify(Some(Arc::from(f)));
    }

    /// Removes the durable notify callback.
    pub fn clear_durable_notify(&mut self) {
        self.shared.set_notify(None);
    }

    /// Syncs everything appended so far now and waits for it; returns the
    /// durable sequence number.
    pub fn sync(&mut self) -> Result<u64, JournalError> {
        self.commit()?;
        let target = self.last_seq();
        if self.durable_seq() >= target {
            return Ok(self.durable_seq());
        }
        self.since_kick = 0;
        self.shared.request_sync();
        self.shared.wait_durable(target, None)
    }

    /// Blocks until `seq` is durable or `timeout` passes.
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> Result<u64, JournalError> {
        self.shared.wait_durable(seq, Some(timeout))
    }

    /// Sync latency of the recent batches.
    pub fn sync_stats(&self) -> SyncStats {
        self.shared.stats()
    }

    /// Takes the recorded durations of recent syncs in microseconds (at most
    /// the last 65,536), leaving none recorded.
    pub fn take_sync_samples_us(&self) -> Vec<u64> {
        self.shared.take_samples()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes occupied by segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.map.len() as u64).sum()
    }

    /// Sequence number of the latest complete checkpoint (its first frame).
    pub fn checkpoint_seq(&self) -> Option<u64> {
        self.checkpoint.map(|c| c.first_seq)
    }

    /// Sequence number of the latest complete checkpoint's last frame: once it is
    /// durable the checkpoint is where recovery starts.
    pub fn checkpoint_last_seq(&self) -> Option<u64> {
        self.checkpoint.map(|c| c.last_seq)
    }

    /// The latest complete checkpoint holds the state after every frame up to this
    /// sequence number (the last frame appended when it was opened): replay goes on
    /// with the ordinary frames after it.
    pub fn checkpoint_covers_seq(&self) -> Option<u64> {
        self.checkpoint.map(|c| c.covers_seq)
    }

    /// Replays the journal for recovery. With a complete checkpoint: first its parts,
    /// in index order, each as a frame of kind [`KIND_CHECKPOINT`] whose payload is the
    /// part (its header and the end marker are not returned); then every ordinary
    /// (non-checkpoint) frame with a sequence number above the checkpoint's
    /// `covers_seq` ([`Journal::checkpoint_covers_seq`]), in sequence order, wherever
    /// it lies: before the checkpoint's first part, between its parts (a checkpoint
    /// written across appends, [`Journal::open_checkpoint`]) or after it. Checkpoint
    /// frames are not returned in that second phase. Without a checkpoint: every
    /// frame from the start, frames of unfinished checkpoints left out. Every frame
    /// keeps its [`Frame::position`].
    ///
    /// Frames of every kind are returned: see [`Journal::replay_known`]. Frames
    /// appended but not yet committed ([`Journal::commit`]) are included, read
    /// from memory.
    pub fn replay(&self) -> Replay<'_> {
        match self.checkpoint {
            Some(span) => {
                let mut replay = Replay {
                    journal: self,
                    index: 0,
                    offset: SEGMENT_HEADER_BYTES,
                    next_seq: 0,
                    phase: Phase::Parts(span),
                    failed: None,
                };
                match self
                    .segments
                    .binary_search_by_key(&span.first_base, |s| s.base_seq)
                {
                    Ok(index) => {
                        replay.index = index;
                        replay.offset = span.first_offset;
                        replay.next_seq = span.first_seq;
                    }
                    // Compaction keeps the segment of the checkpoint's first frame;
                    // reported rather than skipped should that ever break.
                    Err(_) => replay.fail_missing(span.first_seq),
                }
                replay
            }
            None => self.replay_all(),
        }
    }

    /// End of what is in segment `index`'s file: the active segment's staged
    /// tail is not written yet.
    fn written_end(&self, index: usize) -> u64 {
        let segment = &self.segments[index];
        if index + 1 == self.segments.len() {
            segment.end - self.staged.len() as u64
        } else {
            segment.end
        }
    }

    /// Every frame still on disk, oldest first, in sequence order; checkpoint frames
    /// as [`Journal::replay`] returns them (the latest complete checkpoint's parts,
    /// here in place among the other frames).
    pub fn replay_all(&self) -> Replay<'_> {
        let next_seq = self
            .segments
            .first()
            .map_or(format::FIRST_SEQ, |s| s.base_seq);
        Replay {
            journal: self,
            index: 0,
            offset: SEGMENT_HEADER_BYTES,
            next_seq,
            phase: Phase::Records {
                after_seq: 0,
                parts_in_place: true,
            },
            failed: None,
        }
    }

    /// Like [`Journal::replay`], but a frame of a kind or version not in
    /// `known` is an error naming it (and ends the replay).
    pub fn replay_known<'a>(
        &'a self,
        known: &'a KnownKinds,
    ) -> impl Iterator<Item = Result<Frame<'a>, JournalError>> + 'a {
        let mut failed = false;
        self.replay().map_while(move |item| {
            if failed {
                return None;
            }
            let item = item.and_then(|frame| known.check(&frame).map(|()| frame));
            failed = item.is_err();
            Some(item)
        })
    }
}

/// What a [`Replay`] reads next.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The parts of this checkpoint, from its first frame to its end marker; other
    /// frames are stepped over.
    Parts(CheckpointSpan),
    /// Ordinary frames with sequence numbers above `after_seq`; of checkpoint frames,
    /// only the latest complete checkpoint's parts, and only if `parts_in_place`.
    Records {
        /// Frames up to this one are stepped over.
        after_seq: u64,
        /// Whether the latest complete checkpoint's parts are returned where they lie.
        parts_in_place: bool,
    },
    /// Nothing more.
    Done,
}

/// Iterator over frames; see [`Journal::replay`].
pub struct Replay<'a> {
    journal: &'a Journal,
    index: usize,
    offset: u64,
    next_seq: u64,
    phase: Phase,
    /// An error to return next, after which the replay ends.
    failed: Option<JournalError>,
}

impl std::fmt::Debug for Replay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("segment", &self.index)
            .field("offset", &self.offset)
            .field("phase", &self.phase)
            .finish()
    }
}

impl<'a> Replay<'a> {
    /// A checkpoint frame as replay returns it: a part of the latest complete
    /// checkpoint, without its header; `None` for its end marker and for frames of
    /// any other checkpoint (unfinished ones).
    fn checkpoint_part(&self, raw: RawFrame<'a>, frame: Position) -> Option<Frame<'a>> {
        let span = self.journal.checkpoint?;
        if !(span.first_seq..=span.last_seq).contains(&raw.seq) {
            return None;
        }
        if raw.version == 1 {
            return Some(Frame::from_raw(raw, frame));
        }
        let part = decode_part_header(raw.version, raw.payload)?;
        if part.end || part.first_seq != span.first_seq || part.covers_seq != span.covers_seq {
            return None;
        }
        Some(Frame {
            seq: raw.seq,
            kind: raw.kind,
            version: raw.version,
            payload: &raw.payload[part.header_bytes..],
            position: frame.after(FRAME_HEADER_BYTES + part.header_bytes as u64),
        })
    }

    /// Whether the frame `seq` of `kind` is returned in the current phase (others are
    /// stepped over by their header alone).
    fn wants(&self, seq: u64, kind: u16) -> bool {
        let in_checkpoint = |span: &CheckpointSpan| {
            kind == KIND_CHECKPOINT && (span.first_seq..=span.last_seq).contains(&seq)
        };
        match self.phase {
            Phase::Parts(span) => in_checkpoint(&span),
            Phase::Records {
                after_seq,
                parts_in_place,
            } => {
                seq > after_seq
                    && (kind != KIND_CHECKPOINT
                        || (parts_in_place
                            && self.journal.checkpoint.is_some_and(|s| in_checkpoint(&s))))
            }
            Phase::Done => false,
        }
    }

    /// Steps past the frame `seq`, whose successor starts at `next`; after the end
    /// marker of the checkpoint being read, goes on with the records it does not cover.
    fn step(&mut self, seq: u64, next: u64) {
        self.offset = next;
        self.next_seq = seq + 1;
        let Phase::Parts(span) = self.phase else {
            return;
        };
        if seq < span.last_seq {
            return;
        }
        self.phase = Phase::Records {
            after_seq: span.covers_seq,
            parts_in_place: false,
        };
        // The segment holding the first frame after what the checkpoint covers.
        let after = span.covers_seq + 1;
        let index = self
            .journal
            .segments
            .partition_point(|s| s.base_seq <= after)
            .saturating_sub(1);
        match self.journal.segments.get(index) {
            Some(segment) if segment.base_seq <= after => {
                self.index = index;
                self.offset = SEGMENT_HEADER_BYTES;
                self.next_seq = segment.base_seq;
            }
            // Compaction keeps that segment, and open refuses a journal without it
            // (`HistoryMissing`); reported rather than skipped should that ever break.
            _ => self.fail_missing(after),
        }
    }

    /// The frame `seq`, which replay needs, is in no segment the journal holds.
    fn fail_missing(&mut self, seq: u64) {
        let (path, found) = self
            .journal
            .segments
            .first()
            .map_or((self.journal.config.dir.clone(), 0), |s| {
                (s.path.clone(), s.base_seq)
            });
        self.failed = Some(JournalError::CorruptFrame {
            segment: path,
            offset: SEGMENT_HEADER_BYTES,
            defect: format::FrameDefect::SequenceGap {
                expected: seq,
                found,
            },
        });
    }

    /// Ends the replay with `defect` at the current frame.
    fn fail(&mut self, defect: format::FrameDefect) -> JournalError {
        self.phase = Phase::Done;
        JournalError::CorruptFrame {
            segment: self.journal.segments[self.index].path.clone(),
            offset: self.offset,
            defect,
        }
    }
}

impl<'a> Iterator for Replay<'a> {
    type Item = Result<Frame<'a>, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(error) = self.failed.take() {
                self.phase = Phase::Done;
                return Some(Err(error));
            }
            if matches!(self.phase, Phase::Done) {
                return None;
            }
            let Some(segment) = self.journal.segments.get(self.index) else {
                self.phase = Phase::Done;
                return None;
            };
            if self.offset >= segment.end {
                self.index += 1;
                self.offset = SEGMENT_HEADER_BYTES;
                continue;
            }
            // Frames were checked on open or written by us; checking again
            // catches memory or disk changed behind the journal's back. The
            // active segment's staged tail is read from memory. Frames not returned
            // are stepped over by their (checked) header alone.
            let written = self.journal.written_end(self.index);
            let (bytes, base) = if self.offset >= written {
                (&self.journal.staged[..], written)
            } else {
                (&segment.map[..written as usize], 0)
            };
            let at = Position {
                segment: segment.base_seq,
                offset: self.offset,
            };
            let head =
                match decode_frame_head(bytes, self.offset - base, self.next_seq, segment.salt) {
                    DecodedHead::Head(head) => head,
                    DecodedHead::End => {
                        return Some(Err(self.fail(format::FrameDefect::TruncatedHeader)))
                    }
                    DecodedHead::Invalid(defect) => return Some(Err(self.fail(defect))),
                };
            if !self.wants(head.seq, head.kind) {
                self.step(head.seq, head.next + base);
                continue;
            }
            let raw = match decode_frame(bytes, self.offset - base, self.next_seq, segment.salt) {
                Decoded::Frame(raw, _) => raw,
                Decoded::End => return Some(Err(self.fail(format::FrameDefect::TruncatedHeader))),
                Decoded::Invalid(defect) => return Some(Err(self.fail(defect))),
            };
            self.step(head.seq, head.next + base);
            if raw.kind == KIND_CHECKPOINT {
                match self.checkpoint_part(raw, at) {
                    Some(frame) => return Some(Ok(frame)),
                    None => continue,
                }
            }
            return Some(Ok(Frame::from_raw(raw, at)));
        }
    }
}

/// A checkpoint being written across other appends; see [`Journal::open_checkpoint`].
/// It does not borrow the journal: records may be appended between its parts.
/// Dropping it abandons the checkpoint.
#[must_use = "a checkpoint counts only once finished"]
#[derive(Debug)]
pub struct CheckpointHandle {
    /// Unique in the process; the journal's open checkpoint carries the same.
    id: u64,
    /// The checkpoint covers every frame up to this one.
    covers_seq: u64,
    /// Sequence number, segment base and offset of the first frame, once written.
    start: Option<(u64, u64, u64)>,
    /// Parts appended so far.
    parts: u32,
    /// Sequence number of the latest part (0 before the first).
    last_seq: u64,
}

impl CheckpointHandle {
    /// The checkpoint holds the state after every frame up to this sequence number:
    /// the last one appended when it was opened (0 for an empty journal).
    pub fn covers_seq(&self) -> u64 {
        self.covers_seq
    }

    /// Parts appended so far.
    pub fn parts(&self) -> u32 {
        self.parts
    }

    /// Sequence number of its first frame, once a part is written.
    pub fn first_seq(&self) -> Option<u64> {
        self.start.map(|s| s.0)
    }
}

/// A checkpoint being written with the journal held; see [`Journal::begin_checkpoint`].
#[must_use = "a checkpoint counts only once finished"]
pub struct CheckpointWriter<'a> {
    journal: &'a mut Journal,
    handle: CheckpointHandle,
}

impl std::fmt::Debug for CheckpointWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("first_seq", &self.handle.first_seq())
            .field("parts", &self.handle.parts)
            .finish()
    }
}

impl CheckpointWriter<'_> {
    /// Appends the next part (at most [`Journal::checkpoint_part_bytes_max`] bytes;
    /// [`JournalError::RecordTooLarge`] beyond it, and nothing is written).
    /// Returns where the part's bytes lie (see [`Journal::bytes_at`]).
    pub fn part(&mut self, part: &[u8]) -> Result<Position, JournalError> {
        let (seq, at) = self
            .journal
            .append_checkpoint_part(&mut self.handle, part)?;
        // Durability invariant: the writer holds the journal, so its parts are
        // consecutive frames right after what it covers, part i at first + i.
        assert_eq!(
            seq,
            self.handle.covers_seq + u64::from(self.handle.parts),
            "checkpoint parts must be consecutive frames"
        );
        Ok(at)
    }

    /// Parts appended so far.
    pub fn parts(&self) -> u32 {
        self.handle.parts
    }

    /// Appends the end marker: the checkpoint is complete (and counts once durable).
    /// Returns the sequence number of its first frame. A checkpoint with no part gets
    /// one empty part.
    pub fn finish(self) -> Result<u64, JournalError> {
        self.journal.finish_checkpoint(self.handle)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // What was appended is synced on the way out; a failure here has no
        // caller left to tell, and recovery reads what reached the disk.
        let _ = self.commit();
        self.shared.shutdown();
        if let Some(thread) = self.sync_thread.take() {
            // A panic in the sync thread already reported itself; nothing to add.
            let _ = thread.join();
        }
    }
}

/// Refuses ([`JournalError::HistoryMissing`]) a journal in `dir` whose first segment
/// (its base sequence number and path) starts after the oldest record replay needs from
/// the latest complete checkpoint, `checkpoint` ([`missing_history`]).
fn ensure_history(
    dir: &Path,
    (first_seq, first_segment): (u64, &PathBuf),
    checkpoint: Option<CheckpointSpan>,
) -> Result<(), JournalError> {
    match missing_history(first_seq, first_segment, checkpoint.map(|c| c.covers_seq)) {
        Some(missing) => Err(JournalError::HistoryMissing {
            dir: dir.to_path_buf(),
            missing,
        }),
        None => Ok(()),
    }
}

/// How recovery and `check` take the damage where the scan of a segment stopped (its
/// offset, defect and the end of its non-zero bytes): a torn tail to discard (`Ok`),
/// or corruption (`Err`, with the intact frames found
/// after it). A crash tears only the end of what was written, so intact frames after the
/// damage mean it is in the middle of the log, even in the last segment, and are never
/// dropped silently, unless the damage is past everything the journal made durable (a
/// sync cut short by a power loss; [`format::torn_tail_end`] explains).
pub(crate) fn judge_damage(
    bytes: &[u8],
    scan: &format::SegmentScan,
    path: &Path,
    is_last: bool,
    durable_mark: Option<u64>,
    (offset, defect, dirty_end): (u64, &format::FrameDefect, u64),
) -> Result<TornTail, Option<format::IntactAfter>> {
    let intact =
        format::intact_frames_after(bytes, offset, dirty_end, scan.last_seq, scan.header.salt);
    let torn_to =
        format::torn_tail_end(&scan.header, scan.last_seq, dirty_end, intact, durable_mark);
    match (is_last, torn_to) {
        (true, Some(torn_to)) => Ok(TornTail {
            segment: path.to_path_buf(),
            offset,
            bytes_discarded: torn_to - offset,
            defect: defect.clone(),
            intact_frames_discarded: intact.map_or(0, |i| i.frames),
        }),
        _ => Err(intact),
    }
}

/// Zeroes `from..to` of a segment file with `pwrite` and syncs it, so a torn
/// tail cannot come back after the next crash.
fn zero_and_sync(file: &File, from: u64, to: u64, path: &Path) -> Result<(), JournalError> {
    if to <= from {
        return Ok(());
    }
    let zeros = vec![0u8; (to - from).min(STAGED_BYTES_MAX as u64) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(|e| JournalError::io("pwrite", path, e))?;
        at += n as u64;
    }
    file.sync_data()
        .map_err(|e| JournalError::io("fdatasync", path, e))
}

/// Writes the header of a preallocated spare and maps it; it keeps its
/// temporary name until the sync thread renames it (see [`Shared::rolled`]), which
/// syncs it first. `reused`: the file held an earlier segment, whose frames stay after
/// the new one's end (a segment of format version 2, see [`format`]).
fn install_spare(
    config: &JournalConfig,
    file: File,
    temp: &Path,
    base_seq: u64,
    reused: bool,
) -> Result<Segment, JournalError> {
    let salt = reused.then(|| format::new_salt(base_seq));
    file.write_all_at(
        &encode_segment_header(base_seq, config.segment_bytes, salt),
        0,
    )
    .map_err(|e| JournalError::io("write", temp, e))?;
    let map = map_segment(&file, temp)?;
    Ok(Segment {
        base_seq,
        path: config.dir.join(segment_name(base_seq)),
        file: Arc::new(file),
        map,
        end: SEGMENT_HEADER_BYTES,
        last_seq: base_seq - 1,
        salt: salt.unwrap_or(0),
    })
}

/// Creates (or truncates) `temp` and preallocates a whole segment's blocks.
/// Preallocated blocks mean a full disk surfaces here, at a roll, where the
/// caller can wait for space, rather than in the middle of a batch of appends.
fn create_preallocated(config: &JournalConfig, temp: &Path) -> Result<File, JournalError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(temp)
        .map_err(|e| JournalError::io("create", temp, e))?;
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::empty(),
        0,
        config.segment_bytes,
    )
    .map_err(|e| JournalError::io("fallocate", temp, io::Error::from(e)))?;
    Ok(file)
}

/// Creates a segment under a temporary name (preallocated, header written and
/// synced) for a roll when no spare is ready; the sync thread renames it.
/// Returns the segment (with its final path) and the temporary path.
fn create_unnamed_segment(
    config: &JournalConfig,
    base_seq: u64,
) -> Result<(Segment, PathBuf), JournalError> {
    let temp = config.dir.join(format!("{base_seq:020}{TEMP_SUFFIX}"));
    let result = (|| {
        let file = create_preallocated(config, &temp)?;
        file.sync_all()
            .map_err(|e| JournalError::io("fsync", &temp, e))?;
        install_spare(config, file, &temp, base_seq, false)
    })();
    match result {
        Ok(segment) => Ok((segment, temp)),
        Err(e) => {
            // The journal stays on its old segment; the next append retries.
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Creates the first segment of an empty journal: preallocate a temporary
/// file, write and sync its header, then rename it into place and sync the
/// directory, so a segment file under its final name always has a valid header
/// and all its blocks.
fn create_segment(
    config: &JournalConfig,
    dir: &File,
    base_seq: u64,
) -> Result<Segment, JournalError> {
    let path = config.dir.join(segment_name(base_seq));
    let temp = config.dir.join(format!("{base_seq:020}{TEMP_SUFFIX}"));
    let result = (|| {
        let file = create_preallocated(config, &temp)?;
        file.write_all_at(
            &encode_segment_header(base_seq, config.segment_bytes, None),
            0,
        )
        .map_err(|e| JournalError::io("write", &temp, e))?;
        file.sync_all()
            .map_err(|e| JournalError::io("fsync", &temp, e))?;
        fs::rename(&temp, &path).map_err(|e| JournalError::io("rename", &temp, e))?;
        dir.sync_all()
            .map_err(|e| JournalError::io("fsync", &config.dir, e))?;
        Ok(file)
    })();
    let file = match result {
        Ok(file) => file,
        Err(e) => {
            // The journal stays on its old segment; the next append retries.
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
    };
    let map = map_segment(&file, &path)?;
    Ok(Segment {
        base_seq,
        path,
        file: Arc::new(file),
        map,
        end: SEGMENT_HEADER_BYTES,
        last_seq: base_seq - 1,
        salt: 0,
    })
}

#[cfg(test)]
mod tests {
    //! Journals written by older builds: their checkpoint frames are made here byte
    //! for byte, as those builds wrote them.

    use super::*;
    use crate::format::{encode_frame, encode_part_header_v2};

    /// Makes a journal in `dir` whose first segment holds `frames` (kind, version,
    /// payload), numbered from 1.
    fn journal_of(dir: &Path, frames: &[(u16, u16, Vec<u8>)]) -> JournalConfig {
        let mut config = JournalConfig::new(dir);
        config.segment_bytes = SEGMENT_BYTES_MIN;
        drop(Journal::open(config.clone()).unwrap());
        let path = dir.join(segment_name(1));
        let mut bytes = fs::read(&path).unwrap();
        let mut offset = SEGMENT_HEADER_BYTES as usize;
        for (i, (kind, version, payload)) in frames.iter().enumerate() {
            let n = frame_bytes(payload.len() as u64) as usize;
            encode_frame(
                &mut bytes[offset..offset + n],
                0,
                1 + i as u64,
                *kind,
                *version,
                payload,
            );
            offset += n;
        }
        fs::write(&path, &bytes).unwrap();
        config
    }

    fn record(text: &str) -> (u16, u16, Vec<u8>) {
        (1, 1, text.as_bytes().to_vec())
    }

    fn v2_part(first_seq: u64, index: u32, end: bool, part: &[u8]) -> (u16, u16, Vec<u8>) {
        let mut payload = encode_part_header_v2(first_seq, index, end).to_vec();
        payload.extend_from_slice(part);
        (KIND_CHECKPOINT, 2, payload)
    }

    /// Replay as (seq, version, payload), checking that each position reads back.
    fn replayed(journal: &Journal) -> Vec<(u64, u16, Vec<u8>)> {
        journal
            .replay()
            .map(|f| {
                let f = f.unwrap();
                assert_eq!(
                    journal.bytes_at(f.position, f.payload.len()),
                    Some(f.payload)
                );
                (f.seq, f.version, f.payload.to_vec())
            })
            .collect()
    }

    #[test]
    fn a_failed_sync_calls_the_durable_notify() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JournalConfig::new(dir.path());
        config.segment_bytes = SEGMENT_BYTES_MIN;
        let (mut journal, _) = Journal::open(config).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        journal.set_durable_notify(Box::new(move |seq| {
            let _ = tx.lock().unwrap().send(seq);
        }));
        let first = journal.append(1, 1, b"one").unwrap();
        assert_eq!(journal.sync().unwrap(), first);
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(first));
        fail_next_sync(&mut journal, dir.path(), b"two");
        // Told with the durable sequence unchanged, and the journal says why.
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(first));
        assert!(matches!(
            journal.durable_handle().wait_durable(first + 1, Duration::from_secs(20)),
            Err(JournalError::SyncFailed { durable_seq, .. }) if durable_seq == first
        ));
        // Once: a second failure report does not call it again.
        journal.shared.fail("again".into());
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }

    /// Appends `payload` and has the sync that follows fail: a rename it cannot do
    /// fails the journal as a failed fdatasync does.
    fn fail_next_sync(journal: &mut Journal, dir: &Path, payload: &[u8]) {
        let active = Arc::clone(&journal.segments.last().unwrap().file);
        journal
            .shared
            .rolled(active, (dir.join("missing"), dir.join("never")));
        journal.append(1, 1, payload).unwrap();
        journal.commit().unwrap();
        journal.shared.request_sync();
    }

    /// A failure leaves its mark; the next open reads the segments from the disk (what
    /// it can check here: that it opens and recovers what the disk holds), says so,
    /// and clears the mark once that is durable.
    #[test]
    fn a_journal_opened_after_a_failure_reads_the_disk_and_clears_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JournalConfig::new(dir.path());
        config.segment_bytes = SEGMENT_BYTES_MIN;
        let mark = dir.path().join(format::SYNC_FAILED_FILE);
        let (mut journal, recovery) = Journal::open(config.clone()).unwrap();
        assert_eq!(recovery.after_failure, None);
        let first = journal.append(1, 1, b"one").unwrap();
        journal.sync().unwrap();
        assert!(!mark.exists());
        fail_next_sync(&mut journal, dir.path(), b"two");
        assert!(matches!(
            journal
                .durable_handle()
                .wait_durable(first + 1, Duration::from_secs(20)),
            Err(JournalError::SyncFailed { .. })
        ));
        let said = fs::read_to_string(&mark).unwrap();
        assert!(said.contains("rename"), "{said}");
        drop(journal);
        // A check says so, and leaves the mark for the open.
        let report = crate::check(dir.path()).unwrap();
        assert_eq!(report.after_failure.as_deref(), Some(said.as_str()));
        assert!(mark.exists());

        let (journal, recovery) = Journal::open(config.clone()).unwrap();
        assert_eq!(recovery.after_failure.as_deref(), Some(said.as_str()));
        assert!(
            !mark.exists(),
            "the mark is cleared once the journal opened"
        );
        assert_eq!(
            replayed(&journal)
                .into_iter()
                .map(|(_, _, payload)| payload)
                .collect::<Vec<_>>(),
            [b"one".to_vec(), b"two".to_vec()]
        );
        drop(journal);
        let (_journal, recovery) = Journal::open(config).unwrap();
        assert_eq!(recovery.after_failure, None);
    }

    #[test]
    fn a_version_2_checkpoint_still_recovers_and_a_version_3_one_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        let config = journal_of(
            dir.path(),
            &[
                record("one"),
                record("two"),
                // Version 2 parts interrupted by a record: abandoned.
                v2_part(3, 0, false, b"abandoned"),
                record("three"),
                v2_part(5, 0, false, b"part zero"),
                v2_part(5, 1, false, b"part one"),
                v2_part(5, 2, true, b""),
                record("four"),
                record("five"),
            ],
        );
        let (mut journal, recovery) = Journal::open(config.clone()).unwrap();
        assert_eq!(recovery.checkpoint_seq, Some(5));
        assert_eq!(recovery.checkpoint_covers_seq, Some(4));
        assert_eq!(journal.checkpoint_last_seq(), Some(7));
        let expected = vec![
            (5, 2, b"part zero".to_vec()),
            (6, 2, b"part one".to_vec()),
            (8, 1, b"four".to_vec()),
            (9, 1, b"five".to_vec()),
        ];
        assert_eq!(replayed(&journal), expected);
        // Parts and records of every version on one pass.
        let all: Vec<u64> = journal.replay_all().map(|f| f.unwrap().seq).collect();
        assert_eq!(all, vec![1, 2, 4, 5, 6, 8, 9]);

        // A version 3 checkpoint written across appends on top of it.
        let mut handle = journal.open_checkpoint();
        assert_eq!(handle.covers_seq(), 9);
        journal.append(1, 1, b"six").unwrap();
        journal.checkpoint_part(&mut handle, b"new state").unwrap();
        journal.append(1, 1, b"seven").unwrap();
        assert_eq!(journal.finish_checkpoint(handle).unwrap(), 11);
        let expected = vec![
            (11, CHECKPOINT_VERSION, b"new state".to_vec()),
            (10, 1, b"six".to_vec()),
            (12, 1, b"seven".to_vec()),
        ];
        assert_eq!(replayed(&journal), expected);
        journal.sync().unwrap();
        drop(journal);
        let (journal, recovery) = Journal::open(config).unwrap();
        assert_eq!(recovery.checkpoint_seq, Some(11));
        assert_eq!(recovery.checkpoint_covers_seq, Some(9));
        assert_eq!(replayed(&journal), expected);
    }

    #[test]
    fn a_version_1_checkpoint_still_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let config = journal_of(
            dir.path(),
            &[
                record("one"),
                (KIND_CHECKPOINT, 1, b"whole state".to_vec()),
                record("two"),
            ],
        );
        let (journal, recovery) = Journal::open(config).unwrap();
        assert_eq!(recovery.checkpoint_seq, Some(2));
        assert_eq!(recovery.checkpoint_covers_seq, Some(1));
        assert_eq!(
            replayed(&journal),
            vec![(2, 1, b"whole state".to_vec()), (3, 1, b"two".to_vec())]
        );
    }
}
