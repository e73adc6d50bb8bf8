//! On-disk format: segment header, frame header, and the pure scanner that
//! recovery, replay, `check` and the fuzz target all share.
//!
//! Segment layout (all integers little-endian):
//!
//! ```text
//! offset 0   segment header (64 bytes)
//!            0..8   magic "HRLDJSEG"
//!            8..12  format version (1, or 2 for a reused file: see below)
//!            12..16 reserved, zero
//!            16..24 base sequence number (seq of the first frame in the segment)
//!            24..32 segment length in bytes (the preallocated file length)
//!            32..36 version 2: the salt of its frames' header CRCs (non-zero); else zero
//!            36..60 reserved, zero
//!            60..64 CRC32C of bytes 0..60
//! offset 64  frames, back to back, each 16-byte aligned
//! ```
//!
//! Frame layout:
//!
//! ```text
//! 0..4   magic 0x4A52_4C48
//! 4..8   payload length in bytes
//! 8..16  sequence number
//! 16..18 kind
//! 18..20 version
//! 20..24 CRC32C of the payload
//! 24..28 reserved, zero
//! 28..32 CRC32C of bytes 0..28 of this header, XOR the segment's salt (0 in version 1)
//! 32..   payload, then zero padding up to the next multiple of 16
//! ```
//!
//! The header is a multiple of 16 bytes and every frame starts 16-byte aligned,
//! so every payload starts 16-byte aligned, which rkyv's checked access needs.
//! The header CRC lets the scanner trust the length before touching the payload,
//! so a flipped length bit cannot make it read across unrelated bytes as a payload.
//! After the last frame the rest of a segment is zero; a zero header marks the end.
//!
//! A segment of version 2 is written over a file the journal used before (a segment it
//! deleted, reused with its page cache rather than a new file): after its last frame
//! come that earlier use's bytes, not zeros. Its header holds a random salt, XORed into
//! every frame's header CRC, so that no frame of an earlier use, nor frame-shaped bytes
//! inside an earlier use's payloads (a receiver's response body, say), pass for a frame
//! of this one: they fail the header CRC. So in a version 2 segment the log ends at the
//! first frame that does not decode, and what follows is not looked at, unless intact
//! frames of this use with higher sequence numbers lie beyond it: then, as in version 1,
//! the damage is in the middle of the log (unless it is past the durable mark, below). A
//! torn tail is not told apart from the stale bytes there and needs no zeroing: a frame
//! torn by a crash stays invalid, and the next append writes over it (intact frames
//! after one, past the mark, are zeroed).
//!
//! Beside the segments, the file `durable.mark` records how far the log is known
//! durable: the sync thread moves it on after each `fdatasync` and before any record it
//! made durable is acknowledged (not syncing it each time: the page cache keeps it across
//! a crash of the process, its page is handed to the device at most a second after it
//! moves while syncs go on and made durable by a later sync's flush, and it is synced
//! when the journal stops); open writes and syncs it once recovery is done. It holds two slots of 32
//! bytes, stored alternately, and records the higher of those that decode (a store cut
//! short leaves the other); each slot:
//!
//! ```text
//! 0..8   magic "HRLDJDUR"
//! 8..12  version (1)
//! 12..16 reserved, zero
//! 16..24 sequence number: every frame up to it was durable when this was written
//! 24..28 reserved, zero
//! 28..32 CRC32C of bytes 0..28
//! ```
//!
//! Recovery holds the log to it ([`torn_tail_end`], and open's check of the end):
//!
//! * Damage in the last segment with intact frames after it is a torn tail when the
//!   damaged frame is past the mark. A power loss during a sync may leave a later page of
//!   what the sync was writing on the device and an earlier one not: in a reused file no
//!   extent conversion (and so no file-system commit) orders those writes, so the frames
//!   after the lost one are intact although none of them was ever durable, nor
//!   acknowledged. They are dropped with the damage (and counted), and zeroed up to the
//!   last of them so that none is read back once appends reach it. Damage at or before
//!   the mark, or with no mark that decodes, is corruption.
//! * Damage with nothing intact after it is a torn tail only when it is past the mark:
//!   at or before it, an acknowledged frame is damaged, and that is corruption too.
//! * A log that ends before the mark (damage to a reused segment's last frames ends its
//!   log as that file's stale bytes would; the last segment files removed) is refused:
//!   acknowledged records are missing. Repair accepts the loss and says so.
//!
//! The mark is behind the log only after a power loss (by what was acknowledged in the
//! last second or so, or since the journal went quiet) or after a build that does not
//! keep it wrote to the journal. This
//! assumes, as most logs do, that a write cut short by a power loss damages no stored
//! byte it was not writing (a device that rewrites a whole physical sector to store part
//! of it, without power-loss protection, may damage the end of the last synced frame
//! that shares a sector with the next; with the mark behind, that frame would be dropped
//! as a torn tail). With no mark that decodes, recovery falls back to the rules above
//! without it: a torn tail only at the end, and no check of where the log ends.
//!
//! A checkpoint is a set of frames of kind [`KIND_CHECKPOINT`], version
//! [`CHECKPOINT_VERSION`] (3), so that a checkpoint of any size fits frames of at most
//! [`PAYLOAD_BYTES_MAX`]: its parts, then an end marker. Each payload starts with a
//! 32-byte part header ([`CHECKPOINT_PART_HEADER_BYTES`], so the part's own bytes stay
//! 16-byte aligned):
//!
//! ```text
//! 0..8   sequence number of the checkpoint's first frame (part 0)
//! 8..12  part index (0, 1, 2, … in sequence-number order)
//! 12     flags: bit 0 set on the end marker, the last frame (which carries no part)
//! 13..16 reserved, zero
//! 16..24 covers_seq: the checkpoint holds the state after every frame with
//!        seq <= covers_seq (covers_seq < the first frame's seq)
//! 24..32 reserved, zero
//! 32..   the part: caller's bytes
//! ```
//!
//! A checkpoint is written across other appends: it describes the state as of the
//! moment it was begun, when the last frame appended was covers_seq, and ordinary
//! frames may lie between its parts (they are after covers_seq, so they are not in
//! it). Recovery loads its parts, then replays every ordinary frame with
//! seq > covers_seq, wherever those lie: before the first part, between parts, after
//! the end marker.
//!
//! `CheckpointTracker` decides which checkpoints are complete, in sequence order:
//! part 0 (whose first_seq is its own seq) opens a checkpoint, replacing one still
//! open (which is thereby abandoned); a part continues it when it carries the same
//! first_seq and covers_seq and the next index; any other checkpoint frame abandons
//! it. A checkpoint counts only once its end marker is read with every part before it:
//! one cut short by a crash or abandoned by its writer is ignored, and replay starts
//! at the latest complete checkpoint. A checkpoint may span segments.
//!
//! Older versions are still read. Version 2 had a 16-byte part header (bytes 0..16
//! above, no covers_seq) and its parts were consecutive frames, part `i` at
//! `first + i`: any other frame between them abandons it, and it covers every frame
//! before its first (covers_seq = first_seq - 1). Version 1 was one frame, the whole
//! payload, no part header, covering every frame before it.
//!
//! Compaction deletes a segment only once a durable complete checkpoint covers every
//! frame in it, oldest first, and keeps the segment holding `covers_seq + 1`, where
//! replay goes on. So in a sound journal the first segment present starts at or before
//! [`history_needed_from`]: the frame after what the latest complete checkpoint
//! present covers, or [`FIRST_SEQ`] when no complete checkpoint is present (then no
//! segment was ever deleted). A first segment that starts later means the segment files
//! before it were removed (by hand, or a backup restored in part) with records replay
//! needs: recovery refuses it, with or without repair, since no repair can bring those
//! records back and replaying without them would silently lose every event and webhook
//! they held.

use rkyv::util::AlignedVec;
use std::fmt;

/// Sequence number of a new journal's first frame: its first segment's base.
pub const FIRST_SEQ: u64 = 1;
/// Bytes of the segment header at the start of every segment file.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes of the fixed frame header in front of every payload.
pub const FRAME_HEADER_BYTES: u64 = 32;
/// Every frame (and so every payload) starts at a multiple of this.
pub const FRAME_ALIGN_BYTES: u64 = 16;
/// Largest payload of one record. Records are events and webhook changes whose
/// bodies are bounded far below this; the cap keeps a corrupt length from
/// asking for a huge range and bounds what one append can occupy.
pub const PAYLOAD_BYTES_MAX: u64 = 16 * 1024 * 1024;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"HRLDJSEG";
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Format version of a segment written over a reused file: the bytes after its last
/// frame may be stale (see the module documentation).
pub(crate) const FORMAT_VERSION_REUSED: u32 = 2;
pub(crate) const FRAME_MAGIC: u32 = 0x4A52_4C48;

/// The file beside the segments that records how far the log is known durable (see the
/// module documentation).
pub const DURABLE_MARK_FILE: &str = "durable.mark";
/// Bytes of the durable mark.
pub const DURABLE_MARK_BYTES: usize = 32;
/// The file beside the segments that says a sync, a rename or a write of this journal
/// failed. After a failed writeback Linux keeps the pages it could not write in the
/// page cache, marked clean: a process that opens the journal in the same boot would
/// read frames that are not on the disk, take them as recovered, and append after
/// them; a later boot would find damage before acknowledged frames. With this file
/// present, opening drops the segments' cached pages first, so that it reads what the
/// disk holds (the frames never written are then a torn tail), and removes the file
/// once that is durable. Written without a sync: it matters only until the page cache
/// goes, i.e. in the same boot.
pub const SYNC_FAILED_FILE: &str = "sync-failed";
const DURABLE_MARK_MAGIC: [u8; 8] = *b"HRLDJDUR";
const DURABLE_MARK_VERSION: u32 = 1;

/// The durable mark's bytes for `seq`: every frame up to `seq` is durable.
pub fn encode_durable_mark(seq: u64) -> [u8; DURABLE_MARK_BYTES] {
    let mut m = [0u8; DURABLE_MARK_BYTES];
    m[0..8].copy_from_slice(&DURABLE_MARK_MAGIC);
    m[8..12].copy_from_slice(&DURABLE_MARK_VERSION.to_le_bytes());
    m[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&m[0..28]);
    m[28..32].copy_from_slice(&crc.to_le_bytes());
    m
}

/// The sequence number the durable mark's file records: the higher of its two slots
/// that decode (a store cut short leaves the other), or its one slot; `None` when no slot
/// decodes or the file is neither one slot nor two long. Never panics.
pub fn decode_durable_mark_file(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        DURABLE_MARK_BYTES => decode_durable_mark(bytes),
        n if n == 2 * DURABLE_MARK_BYTES => {
            let (a, b) = bytes.split_at(DURABLE_MARK_BYTES);
            decode_durable_mark(a).max(decode_durable_mark(b))
        }
        _ => None,
    }
}

/// The sequence number one slot of a durable mark records; `None` when `bytes` are not one whole
/// mark of this version with a matching CRC and zero reserved bytes. Never panics.
pub fn decode_durable_mark(bytes: &[u8]) -> Option<u64> {
    let m: &[u8; DURABLE_MARK_BYTES] = bytes.try_into().ok()?;
    let sound = m[0..8] == DURABLE_MARK_MAGIC
        && le_u32(&m[8..12]) == DURABLE_MARK_VERSION
        && le_u32(&m[12..16]) == 0
        && le_u32(&m[24..28]) == 0
        && crc32c::crc32c(&m[0..28]) == le_u32(&m[28..32]);
    sound.then(|| le_u64(&m[16..24]))
}

/// Kinds at or above this number are reserved for the journal itself.
pub const KIND_RESERVED_MIN: u16 = 0xFF00;
/// Kind of a checkpoint record (written by [`crate::Journal::checkpoint`]).
pub const KIND_CHECKPOINT: u16 = 0xFF00;
/// Version written in checkpoint frames: 3, parts with a part header carrying
/// covers_seq (see the module documentation). Versions 2 (a 16-byte part header,
/// consecutive parts) and 1 (one frame holding the whole checkpoint) are still read.
pub const CHECKPOINT_VERSION: u16 = 3;
/// Bytes of the part header in front of each checkpoint part written now (version
/// [`CHECKPOINT_VERSION`]): a checkpoint frame's payload is this plus the part.
pub const CHECKPOINT_PART_HEADER_BYTES: u64 = 32;
/// Bytes of a version 2 part header (read only).
const CHECKPOINT_PART_HEADER_BYTES_V2: u64 = 16;
/// Flag of the end marker in a part header.
const CHECKPOINT_FLAG_END: u8 = 1;

/// A decoded checkpoint part header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartHeader {
    /// Sequence number of the checkpoint's first frame.
    pub first_seq: u64,
    /// Index of this part.
    pub index: u32,
    /// The end marker.
    pub end: bool,
    /// The checkpoint holds the state after every frame up to this one
    /// (`first_seq - 1` in version 2).
    pub covers_seq: u64,
    /// Bytes of the header: the part follows it.
    pub header_bytes: usize,
}

/// Encodes a part header of version [`CHECKPOINT_VERSION`].
pub(crate) fn encode_part_header(
    first_seq: u64,
    index: u32,
    end: bool,
    covers_seq: u64,
) -> [u8; CHECKPOINT_PART_HEADER_BYTES as usize] {
    // Durability invariant: a checkpoint covers only frames written before it.
    assert!(
        covers_seq < first_seq,
        "checkpoint covers_seq below its first seq"
    );
    let mut h = [0u8; CHECKPOINT_PART_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&first_seq.to_le_bytes());
    h[8..12].copy_from_slice(&index.to_le_bytes());
    h[12] = if end { CHECKPOINT_FLAG_END } else { 0 };
    h[16..24].copy_from_slice(&covers_seq.to_le_bytes());
    h
}

/// Encodes a version 2 part header: what older builds wrote, for tests of reading it.
#[cfg(test)]
pub(crate) fn encode_part_header_v2(first_seq: u64, index: u32, end: bool) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..8].copy_from_slice(&first_seq.to_le_bytes());
    h[8..12].copy_from_slice(&index.to_le_bytes());
    h[12] = if end { CHECKPOINT_FLAG_END } else { 0 };
    h
}

/// The part header of a checkpoint frame's payload, if it is a well-formed one of
/// version 2 or 3 (an end marker carries nothing after it).
pub(crate) fn decode_part_header(version: u16, payload: &[u8]) -> Option<PartHeader> {
    let header_bytes = match version {
        2 => CHECKPOINT_PART_HEADER_BYTES_V2,
        3 => CHECKPOINT_PART_HEADER_BYTES,
        _ => return None,
    } as usize;
    if payload.len() < header_bytes {
        return None;
    }
    let flags = payload[12];
    if flags & !CHECKPOINT_FLAG_END != 0 || payload[13..16] != [0, 0, 0] {
        return None;
    }
    let end = flags & CHECKPOINT_FLAG_END != 0;
    if end && payload.len() != header_bytes {
        return None;
    }
    let first_seq = le_u64(&payload[0..8]);
    let covers_seq = if version == 2 {
        first_seq.checked_sub(1)?
    } else {
        if !is_zero(&payload[24..32]) {
            return None;
        }
        le_u64(&payload[16..24])
    };
    if covers_seq >= first_seq {
        return None;
    }
    Some(PartHeader {
        first_seq,
        index: le_u32(&payload[8..12]),
        end,
        covers_seq,
        header_bytes,
    })
}

/// Where a complete checkpoint is: replay reads its parts from its first frame, then
/// the ordinary frames after `covers_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSpan {
    /// Sequence number of its first frame.
    pub first_seq: u64,
    /// Base sequence number of the segment holding its first frame.
    pub first_base: u64,
    /// Offset of its first frame in that segment.
    pub first_offset: u64,
    /// Sequence number of its last frame (the end marker): the checkpoint counts once
    /// this is durable.
    pub last_seq: u64,
    /// It holds the state after every frame with a sequence number up to this one
    /// (below `first_seq`; `first_seq - 1` for versions 1 and 2): recovery replays
    /// the ordinary frames after it.
    pub covers_seq: u64,
}

/// The oldest sequence number recovery needs, given what the latest complete
/// checkpoint present covers (`None`: no complete checkpoint): the frame after it,
/// where replay goes on after the checkpoint's parts, or [`FIRST_SEQ`] without one,
/// since replay then starts from the journal's first frame. The first segment of a sound
/// journal starts at or before it (see the module documentation).
pub fn history_needed_from(checkpoint_covers_seq: Option<u64>) -> u64 {
    // covers_seq is below its checkpoint's first frame's sequence number: no overflow.
    checkpoint_covers_seq.map_or(FIRST_SEQ, |covers_seq| covers_seq + 1)
}

/// A checkpoint whose end marker was not read yet, carried from one segment's scan to
/// the next (a checkpoint may span segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenCheckpoint {
    /// Where it starts (`last_seq` is that of its latest part so far).
    pub span: CheckpointSpan,
    /// Index the next part must carry.
    pub next_index: u32,
    /// Checkpoint version of its frames: version 2 parts must be consecutive frames,
    /// version 3 parts may have ordinary frames between them.
    pub version: u16,
}

/// Follows checkpoint frames in sequence order: the one place that decides which
/// checkpoints are complete (recovery, `check` and the scanner share it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CheckpointTracker {
    /// The checkpoint being read.
    pub open: Option<OpenCheckpoint>,
}

impl CheckpointTracker {
    /// Takes the next frame (in sequence order) at `offset` of the segment based at
    /// `base`; returns the checkpoint it completes, if it does.
    pub fn frame(
        &mut self,
        base: u64,
        offset: u64,
        seq: u64,
        kind: u16,
        version: u16,
        payload: &[u8],
    ) -> Option<CheckpointSpan> {
        if kind != KIND_CHECKPOINT {
            // Version 2 parts are written back to back: anything between them means
            // the write stopped part way. Version 3 parts may have records between them.
            if self.open.is_some_and(|o| o.version < 3) {
                self.open = None;
            }
            return None;
        }
        if version == 1 {
            self.open = None;
            return Some(CheckpointSpan {
                first_seq: seq,
                first_base: base,
                first_offset: offset,
                last_seq: seq,
                covers_seq: seq.saturating_sub(1),
            });
        }
        let Some(part) = decode_part_header(version, payload) else {
            self.open = None;
            return None;
        };
        if part.index == 0 && part.first_seq == seq && !part.end {
            // A new checkpoint; one still open was abandoned by its writer.
            self.open = Some(OpenCheckpoint {
                span: CheckpointSpan {
                    first_seq: seq,
                    first_base: base,
                    first_offset: offset,
                    last_seq: seq,
                    covers_seq: part.covers_seq,
                },
                next_index: 1,
                version,
            });
            return None;
        }
        let continues = self.open.is_some_and(|o| {
            o.version == version
                && o.span.first_seq == part.first_seq
                && o.span.covers_seq == part.covers_seq
                && o.next_index == part.index
                && (version != 2 || o.span.first_seq + u64::from(part.index) == seq)
        });
        if !continues {
            self.open = None;
            return None;
        }
        let open = self.open.as_mut()?;
        open.span.last_seq = seq;
        open.next_index += 1;
        if part.end {
            let span = open.span;
            self.open = None;
            return Some(span);
        }
        None
    }
}

/// Total bytes a frame with `payload_bytes` of payload occupies.
pub const fn frame_bytes(payload_bytes: u64) -> u64 {
    FRAME_HEADER_BYTES + payload_bytes.div_ceil(FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES
}

/// Encodes a segment header; `salt`: written over a file used before, whose bytes
/// after the last frame may be stale, with this salt in its frames' header CRCs
/// (version [`FORMAT_VERSION_REUSED`]; [`new_salt`]).
pub(crate) fn encode_segment_header(
    base_seq: u64,
    segment_bytes: u64,
    salt: Option<u32>,
) -> [u8; 64] {
    let mut h = [0u8; 64];
    let version = match salt {
        Some(salt) => {
            // A salt of 0 would let an earlier use's version 1 frames pass.
            assert_ne!(salt, 0, "a reused segment's salt is not zero");
            h[32..36].copy_from_slice(&salt.to_le_bytes());
            FORMAT_VERSION_REUSED
        }
        None => FORMAT_VERSION,
    };
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[16..24].copy_from_slice(&base_seq.to_le_bytes());
    h[24..32].copy_from_slice(&segment_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A decoded, CRC-checked segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number the first frame of the segment must carry.
    pub base_seq: u64,
    /// Length of the segment file the header claims.
    pub segment_bytes: u64,
    /// Written over a file used before (version 2): the bytes after the last frame may
    /// be stale rather than zero.
    pub reused: bool,
    /// XORed into its frames' header CRCs: random and non-zero in version 2, 0 in 1.
    pub salt: u32,
}

/// A salt for a reused segment's frames: unpredictable (the process's random hash keys
/// over the base, the time and a counter), never zero.
pub(crate) fn new_salt(base_seq: u64) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(base_seq);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    let salt = hasher.finish() as u32;
    if salt == 0 {
        1
    } else {
        salt
    }
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderDefect {
    /// The file is shorter than a segment header.
    TooShort {
        /// Bytes present.
        bytes: u64,
    },
    /// The magic bytes are wrong: not a segment file, or overwritten.
    BadMagic,
    /// The header CRC does not match.
    BadCrc,
    /// A format version this build does not read.
    UnsupportedVersion {
        /// Version found.
        version: u32,
    },
    /// The recorded length differs from the file length.
    LengthMismatch {
        /// Length in the header.
        header_bytes: u64,
        /// Length of the file.
        file_bytes: u64,
    },
    /// Base sequence 0 is never written (sequence numbers start at 1).
    ZeroBaseSeq,
    /// A segment written over a reused file (version 2) with a salt of 0, which is never
    /// written.
    ZeroSalt,
}

impl fmt::Display for HeaderDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { bytes } => {
                write!(f, "file of {bytes} bytes is shorter than a segment header")
            }
            Self::BadMagic => f.write_str("bad segment magic"),
            Self::BadCrc => f.write_str("segment header CRC mismatch"),
            Self::UnsupportedVersion { version } => {
                write!(f, "unsupported format version {version}")
            }
            Self::LengthMismatch {
                header_bytes,
                file_bytes,
            } => {
                write!(
                    f,
                    "header says {header_bytes} bytes but the file has {file_bytes}"
                )
            }
            Self::ZeroBaseSeq => f.write_str("base sequence number 0"),
            Self::ZeroSalt => f.write_str("a reused segment's salt is 0"),
        }
    }
}

impl HeaderDefect {
    /// Whether the header was damaged (cut short, overwritten) rather than written by a
    /// build with a format this one does not read: a repair may let a damaged segment
    /// file go, never one it cannot read.
    pub fn is_damage(&self) -> bool {
        !matches!(self, Self::UnsupportedVersion { .. })
    }
}

/// Decodes and checks a segment header at the start of `bytes` (the whole file).
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderDefect> {
    let header = &bytes[..bytes.len().min(SEGMENT_HEADER_BYTES as usize)];
    decode_segment_header_of(header, bytes.len() as u64)
}

/// Decodes and checks the segment header `header` (the file's first bytes) of a file of
/// `file_bytes` bytes, without the rest of the file.
pub fn decode_segment_header_of(
    header: &[u8],
    file_bytes: u64,
) -> Result<SegmentHeader, HeaderDefect> {
    if file_bytes < SEGMENT_HEADER_BYTES || header.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(HeaderDefect::TooShort { bytes: file_bytes });
    }
    let h = &header[..64];
    if h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderDefect::BadMagic);
    }
    if crc32c::crc32c(&h[0..60]) != le_u32(&h[60..64]) {
        return Err(HeaderDefect::BadCrc);
    }
    let version = le_u32(&h[8..12]);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_REUSED {
        return Err(HeaderDefect::UnsupportedVersion { version });
    }
    let base_seq = le_u64(&h[16..24]);
    let segment_bytes = le_u64(&h[24..32]);
    if segment_bytes != file_bytes {
        return Err(HeaderDefect::LengthMismatch {
            header_bytes: segment_bytes,
            file_bytes,
        });
    }
    if base_seq == 0 {
        return Err(HeaderDefect::ZeroBaseSeq);
    }
    let reused = version == FORMAT_VERSION_REUSED;
    let salt = le_u32(&h[32..36]);
    if reused && salt == 0 {
        return Err(HeaderDefect::ZeroSalt);
    }
    Ok(SegmentHeader {
        base_seq,
        segment_bytes,
        reused,
        salt: if reused { salt } else { 0 },
    })
}

/// Writes one frame at the start of `dst`, which must be exactly
/// `frame_bytes(payload.len())` long and zero where padding goes (tests build segments
/// with it; the journal appends with [`push_frame`]).
#[cfg(test)]
pub(crate) fn encode_frame(
    dst: &mut [u8],
    salt: u32,
    seq: u64,
    kind: u16,
    version: u16,
    payload: &[u8],
) {
    let total = frame_bytes(payload.len() as u64) as usize;
    // Durability invariant: a frame never spills past the space reserved for it.
    assert_eq!(dst.len(), total, "frame slot length");
    let header_bytes = FRAME_HEADER_BYTES as usize;
    let payload_end = header_bytes + payload.len();
    dst[header_bytes..payload_end].copy_from_slice(payload);
    dst[payload_end..].fill(0);
    dst[..header_bytes].copy_from_slice(&frame_header(salt, seq, kind, version, &[payload]));
}

/// Appends one frame to `out` whose payload is `pieces` one after another, writing each
/// byte once (no slot zeroed first, no payload gathered into a buffer of its own first).
/// `out` grows by exactly `frame_bytes` of the pieces' total length; the frame is the
/// same as [`encode_frame`] makes of the joined payload.
pub(crate) fn push_frame(
    out: &mut AlignedVec<16>,
    salt: u32,
    seq: u64,
    kind: u16,
    version: u16,
    pieces: &[&[u8]],
) {
    let payload_bytes: usize = pieces.iter().map(|piece| piece.len()).sum();
    let total = frame_bytes(payload_bytes as u64) as usize;
    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&frame_header(salt, seq, kind, version, pieces));
    for piece in pieces {
        out.extend_from_slice(piece);
    }
    let padding = total - FRAME_HEADER_BYTES as usize - payload_bytes;
    out.extend_from_slice(&[0u8; 16][..padding]);
    // Durability invariant: a frame takes exactly the space its length promises.
    assert_eq!(out.len() - start, total, "frame length");
}

/// A frame's header for the payload made of `pieces` joined.
fn frame_header(
    salt: u32,
    seq: u64,
    kind: u16,
    version: u16,
    pieces: &[&[u8]],
) -> [u8; FRAME_HEADER_BYTES as usize] {
    let payload_bytes: usize = pieces.iter().map(|piece| piece.len()).sum();
    let payload_crc = pieces
        .iter()
        .fold(0, |crc, piece| crc32c::crc32c_append(crc, piece));
    let mut h = [0u8; FRAME_HEADER_BYTES as usize];
    h[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..18].copy_from_slice(&kind.to_le_bytes());
    h[18..20].copy_from_slice(&version.to_le_bytes());
    h[20..24].copy_from_slice(&payload_crc.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]) ^ salt;
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameDefect {
    /// Fewer bytes than a frame header remain, and they are not all zero.
    TruncatedHeader,
    /// The header does not start with the frame magic.
    BadMagic,
    /// The header CRC does not match.
    HeaderCrc,
    /// The reserved header field is not zero.
    ReservedBits,
    /// The length is above [`PAYLOAD_BYTES_MAX`] or runs past the segment end.
    LengthOutOfBounds {
        /// Payload length in the header.
        payload_bytes: u64,
    },
    /// The sequence number is not the one that must come next.
    SequenceGap {
        /// The sequence number that must come next.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// The payload CRC does not match.
    PayloadCrc,
    /// Padding after the payload is not zero.
    NonZeroPadding,
    /// A zero header marks the end of the log, but non-zero bytes follow it.
    GarbageAfterEnd {
        /// Offset of the first non-zero byte after the end.
        first_nonzero_offset: u64,
    },
}

impl fmt::Display for FrameDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TruncatedHeader => f.write_str("truncated frame header"),
            Self::BadMagic => f.write_str("bad frame magic"),
            Self::HeaderCrc => f.write_str("frame header CRC mismatch"),
            Self::ReservedBits => f.write_str("reserved frame header bits set"),
            Self::LengthOutOfBounds { payload_bytes } => {
                write!(f, "payload length {payload_bytes} out of bounds")
            }
            Self::SequenceGap { expected, found } => {
                write!(f, "sequence number {found} where {expected} must come next")
            }
            Self::PayloadCrc => f.write_str("payload CRC mismatch"),
            Self::NonZeroPadding => f.write_str("non-zero frame padding"),
            Self::GarbageAfterEnd {
                first_nonzero_offset,
            } => {
                write!(
                    f,
                    "non-zero bytes at offset {first_nonzero_offset} after the end of the log"
                )
            }
        }
    }
}

/// A frame as stored: the borrowed payload is 16-byte aligned relative to the
/// segment start (and so in memory when the segment is mapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Record kind.
    pub kind: u16,
    /// Record version.
    pub version: u16,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// Outcome of decoding at one offset.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    /// A valid frame, and the offset of the next one.
    Frame(RawFrame<'a>, u64),
    /// The log ends here: the header is zero (nothing else was checked).
    End,
    /// Invalid bytes.
    Invalid(FrameDefect),
}

/// A frame header checked on its own (magic, CRC, bounds, sequence number), its
/// payload not yet read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// Sequence number.
    pub seq: u64,
    /// Record kind.
    pub kind: u16,
    /// Record version.
    pub version: u16,
    /// Payload length.
    payload_bytes: u64,
    /// CRC32C the payload must have.
    payload_crc: u32,
    /// Offset of the next frame.
    pub next: u64,
}

/// Outcome of decoding a frame header at one offset.
#[derive(Debug)]
pub(crate) enum DecodedHead {
    /// A valid header.
    Head(FrameHead),
    /// The log ends here: the header is zero.
    End,
    /// Invalid bytes.
    Invalid(FrameDefect),
}

/// Decodes the header of the frame at `offset` of `segment`, which must carry
/// `expected_seq`, without reading its payload: enough to step over a frame whose
/// payload is not wanted (replay passing over frames it does not return).
pub(crate) fn decode_frame_head(
    segment: &[u8],
    offset: u64,
    expected_seq: u64,
    salt: u32,
) -> DecodedHead {
    let len = segment.len() as u64;
    // Callers only pass offsets they reached by stepping over valid frames.
    assert!(
        offset.is_multiple_of(FRAME_ALIGN_BYTES) && offset <= len,
        "frame offset invariant"
    );
    let start = offset as usize;
    if len - offset < FRAME_HEADER_BYTES {
        return if is_zero(&segment[start..]) {
            DecodedHead::End
        } else {
            DecodedHead::Invalid(FrameDefect::TruncatedHeader)
        };
    }
    let h = &segment[start..start + FRAME_HEADER_BYTES as usize];
    if is_zero(h) {
        return DecodedHead::End;
    }
    if le_u32(&h[0..4]) != FRAME_MAGIC {
        return DecodedHead::Invalid(FrameDefect::BadMagic);
    }
    if crc32c::crc32c(&h[0..28]) ^ salt != le_u32(&h[28..32]) {
        return DecodedHead::Invalid(FrameDefect::HeaderCrc);
    }
    if le_u32(&h[24..28]) != 0 {
        return DecodedHead::Invalid(FrameDefect::ReservedBits);
    }
    let payload_bytes = u64::from(le_u32(&h[4..8]));
    let total = frame_bytes(payload_bytes);
    if payload_bytes > PAYLOAD_BYTES_MAX || total > len - offset {
        return DecodedHead::Invalid(FrameDefect::LengthOutOfBounds { payload_bytes });
    }
    let seq = le_u64(&h[8..16]);
    if seq != expected_seq {
        return DecodedHead::Invalid(FrameDefect::SequenceGap {
            expected: expected_seq,
            found: seq,
        });
    }
    DecodedHead::Head(FrameHead {
        seq,
        kind: u16::from_le_bytes([h[16], h[17]]),
        version: u16::from_le_bytes([h[18], h[19]]),
        payload_bytes,
        payload_crc: le_u32(&h[20..24]),
        next: offset + total,
    })
}

/// Decodes the frame at `offset` of `segment`, which must carry `expected_seq`.
pub(crate) fn decode_frame(
    segment: &[u8],
    offset: u64,
    expected_seq: u64,
    salt: u32,
) -> Decoded<'_> {
    let head = match decode_frame_head(segment, offset, expected_seq, salt) {
        DecodedHead::Head(head) => head,
        DecodedHead::End => return Decoded::End,
        DecodedHead::Invalid(defect) => return Decoded::Invalid(defect),
    };
    let payload_start = offset as usize + FRAME_HEADER_BYTES as usize;
    let payload_end = payload_start + head.payload_bytes as usize;
    let payload = &segment[payload_start..payload_end];
    if crc32c::crc32c(payload) != head.payload_crc {
        return Decoded::Invalid(FrameDefect::PayloadCrc);
    }
    if !is_zero(&segment[payload_end..head.next as usize]) {
        return Decoded::Invalid(FrameDefect::NonZeroPadding);
    }
    Decoded::Frame(
        RawFrame {
            seq: head.seq,
            kind: head.kind,
            version: head.version,
            payload,
        },
        head.next,
    )
}

/// Where a scan of one segment stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// After the last frame the segment is zero to its end (in a reused segment: no
    /// intact frame of this log lies after it; its bytes there are stale).
    Clean,
    /// An invalid frame at `offset`; bytes up to `dirty_end` are not zero. In a reused
    /// segment, only when intact frames of this log lie after it (`dirty_end` is then
    /// the segment's end).
    Invalid {
        /// Offset of the first invalid byte range (a frame start).
        offset: u64,
        /// What was wrong.
        defect: FrameDefect,
        /// One past the last non-zero byte of the segment: zeroing
        /// `offset..dirty_end` leaves a clean segment.
        dirty_end: u64,
    },
}

/// Summary of one segment's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The decoded header.
    pub header: SegmentHeader,
    /// Number of valid frames.
    pub records: u64,
    /// Sequence number of the last valid frame (`base_seq - 1` when empty).
    pub last_seq: u64,
    /// Offset just past the last valid frame: where the next frame goes.
    pub end_offset: u64,
    /// Payload bytes of the valid frames.
    pub payload_bytes: u64,
    /// The latest checkpoint completed in this segment (it may have started in an
    /// earlier one: see [`scan_segment_after`]).
    pub last_checkpoint: Option<CheckpointSpan>,
    /// A checkpoint still waiting for parts at the segment's end: pass it to the scan of
    /// the next segment.
    pub open_checkpoint: Option<OpenCheckpoint>,
    /// How the scan ended.
    pub stop: ScanStop,
}

/// Scans a whole segment file: header, then frames until the first zero
/// header or invalid frame. Never panics on any input. A checkpoint begun in an earlier
/// segment is not seen complete here: see [`scan_segment_after`].
pub fn scan_segment(bytes: &[u8]) -> Result<SegmentScan, HeaderDefect> {
    scan_segment_after(bytes, None)
}

/// [`scan_segment`] of the segment after one whose scan left `open` (its
/// [`SegmentScan::open_checkpoint`]), so that a checkpoint spanning both completes.
pub fn scan_segment_after(
    bytes: &[u8],
    open: Option<OpenCheckpoint>,
) -> Result<SegmentScan, HeaderDefect> {
    let header = decode_segment_header(bytes)?;
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut next_seq = header.base_seq;
    let mut records = 0;
    let mut payload_bytes = 0;
    let mut last_checkpoint = None;
    // A version 2 checkpoint continues here only if it was open at the very end of
    // the previous segment (its parts are consecutive); a version 3 one if it is open
    // at all (records may follow its latest part).
    let mut tracker = CheckpointTracker {
        open: open.filter(|o| {
            o.span.last_seq < header.base_seq
                && (o.version >= 3 || o.span.last_seq + 1 == header.base_seq)
        }),
    };
    let stop = loop {
        match decode_frame(bytes, offset, next_seq, header.salt) {
            Decoded::Frame(frame, next) => {
                if let Some(span) = tracker.frame(
                    header.base_seq,
                    offset,
                    frame.seq,
                    frame.kind,
                    frame.version,
                    frame.payload,
                ) {
                    last_checkpoint = Some(span);
                }
                records += 1;
                payload_bytes += frame.payload.len() as u64;
                next_seq += 1;
                offset = next;
            }
            // A reused file's log ends at the first frame that does not decode; past
            // it only intact frames of this log would be damage (module documentation).
            Decoded::End | Decoded::Invalid(_) if header.reused => {
                let len = bytes.len() as u64;
                match intact_frames_after(bytes, offset, len, next_seq - 1, header.salt) {
                    None => break ScanStop::Clean,
                    Some(intact) => {
                        let defect = match decode_frame(bytes, offset, next_seq, header.salt) {
                            Decoded::Invalid(defect) => defect,
                            _ => FrameDefect::GarbageAfterEnd {
                                first_nonzero_offset: intact.first_offset,
                            },
                        };
                        break ScanStop::Invalid {
                            offset,
                            defect,
                            dirty_end: len,
                        };
                    }
                }
            }
            Decoded::End => match last_nonzero(&bytes[offset as usize..]) {
                None => break ScanStop::Clean,
                Some(i) => {
                    let first = offset + first_nonzero(&bytes[offset as usize..]).unwrap_or(0);
                    break ScanStop::Invalid {
                        offset,
                        defect: FrameDefect::GarbageAfterEnd {
                            first_nonzero_offset: first,
                        },
                        dirty_end: offset + i as u64 + 1,
                    };
                }
            },
            Decoded::Invalid(defect) => {
                let dirty_end = match last_nonzero(&bytes[offset as usize..]) {
                    Some(i) => offset + i as u64 + 1,
                    None => offset,
                };
                break ScanStop::Invalid {
                    offset,
                    defect,
                    dirty_end,
                };
            }
        }
    };
    Ok(SegmentScan {
        header,
        records,
        last_seq: next_seq - 1,
        end_offset: offset,
        payload_bytes,
        last_checkpoint,
        open_checkpoint: tracker.open,
        stop,
    })
}

/// Intact frames found after an invalid one: see [`intact_frames_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntactAfter {
    /// Offset of the first intact frame.
    pub first_offset: u64,
    /// Frames found intact.
    pub frames: u64,
    /// Highest sequence number among them.
    pub last_seq: u64,
    /// Where the last of them ends.
    pub end: u64,
}

/// Where the torn tail of the last segment ends, when its scan stopped at damage at
/// `offset` with non-zero bytes up to `dirty_end` and `intact` frames after it
/// ([`intact_frames_after`]), `last_seq` the last valid frame before it, and
/// `durable_mark` what the journal's durable mark records (`None`: missing or not
/// decodable). `None` means the damage is corruption. Open and `check` decide by it.
///
/// With nothing intact after it, the damage is the end of what was written, torn up to
/// `dirty_end`, unless the damaged frame (`last_seq + 1`) is at or before the mark: an
/// acknowledged frame damaged. With intact frames after it, it is torn only when the
/// damaged frame is past the mark: no frame from it on was ever made durable, so
/// none was acknowledged, and a power loss during the sync that was writing them may
/// have stored a later page and not an earlier one (module documentation). It then
/// ends after the last intact frame in a reused segment (whose bytes after that are an
/// earlier use's) and at `dirty_end` in a new one.
pub fn torn_tail_end(
    header: &SegmentHeader,
    last_seq: u64,
    dirty_end: u64,
    intact: Option<IntactAfter>,
    durable_mark: Option<u64>,
) -> Option<u64> {
    let Some(intact) = intact else {
        // The end of what was written, unless the mark says the damaged frame was made
        // durable: then it is damage to an acknowledged frame.
        let acknowledged = durable_mark.is_some_and(|mark| mark > last_seq);
        return (!acknowledged).then_some(dirty_end);
    };
    let never_durable = durable_mark.is_some_and(|mark| mark <= last_seq);
    never_durable.then_some(if header.reused { intact.end } else { dirty_end })
}

/// Looks past an invalid frame at `offset` (up to `dirty_end`) for intact frames: whole
/// frames (magic, both CRCs with the segment's `salt`, zero padding) with sequence
/// numbers above `last_seq`, the last valid one. A write torn by a crash leaves damage
/// only at the end of what was written, so intact frames after the damage mean it is in
/// the middle of the log: corruption, not a torn tail, unless none of it was ever durable
/// ([`torn_tail_end`]). Never panics on any input.
pub fn intact_frames_after(
    bytes: &[u8],
    offset: u64,
    dirty_end: u64,
    last_seq: u64,
    salt: u32,
) -> Option<IntactAfter> {
    let end = dirty_end.min(bytes.len() as u64);
    let mut found: Option<IntactAfter> = None;
    let mut at = offset + FRAME_ALIGN_BYTES;
    while at + FRAME_HEADER_BYTES <= end {
        let start = at as usize;
        if le_u32(&bytes[start..start + 4]) != FRAME_MAGIC {
            at += FRAME_ALIGN_BYTES;
            continue;
        }
        let seq = le_u64(&bytes[start + 8..start + 16]);
        if seq <= last_seq {
            at += FRAME_ALIGN_BYTES;
            continue;
        }
        match decode_frame(bytes, at, seq, salt) {
            Decoded::Frame(frame, next) => {
                let intact = found.get_or_insert(IntactAfter {
                    first_offset: at,
                    frames: 0,
                    last_seq: frame.seq,
                    end: next,
                });
                intact.frames += 1;
                intact.last_seq = intact.last_seq.max(frame.seq);
                intact.end = next;
                at = next;
            }
            Decoded::End | Decoded::Invalid(_) => at += FRAME_ALIGN_BYTES,
        }
    }
    found
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

const ZERO_CHUNK_BYTES: usize = 4096;

/// Whether every byte is zero; folds in chunks so the loop vectorizes.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(ZERO_CHUNK_BYTES)
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}

fn first_nonzero(bytes: &[u8]) -> Option<u64> {
    let chunk = bytes
        .chunks(ZERO_CHUNK_BYTES)
        .position(|c| c.iter().fold(0u8, |a, &b| a | b) != 0)?;
    let start = chunk * ZERO_CHUNK_BYTES;
    let within = bytes[start..].iter().position(|&b| b != 0)?;
    Some((start + within) as u64)
}

fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    let chunks = bytes.len().div_ceil(ZERO_CHUNK_BYTES);
    let chunk = (0..chunks).rev().find(|&i| {
        let end = ((i + 1) * ZERO_CHUNK_BYTES).min(bytes.len());
        bytes[i * ZERO_CHUNK_BYTES..end]
            .iter()
            .fold(0u8, |a, &b| a | b)
            != 0
    })?;
    let start = chunk * ZERO_CHUNK_BYTES;
    let end = (start + ZERO_CHUNK_BYTES).min(bytes.len());
    bytes[start..end]
        .iter()
        .rposition(|&b| b != 0)
        .map(|i| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(payloads: &[&[u8]], segment_bytes: usize) -> Vec<u8> {
        let mut seg = vec![0u8; segment_bytes];
        seg[..64].copy_from_slice(&encode_segment_header(7, segment_bytes as u64, None));
        let mut offset = 64usize;
        for (i, p) in payloads.iter().enumerate() {
            let n = frame_bytes(p.len() as u64) as usize;
            encode_frame(&mut seg[offset..offset + n], 0, 7 + i as u64, 3, 1, p);
            offset += n;
        }
        seg
    }

    #[test]
    fn a_frame_pushed_in_pieces_is_the_frame_of_the_joined_payload() {
        let payload: Vec<u8> = (0..200u8).collect();
        for len in [0usize, 1, 15, 16, 17, 31, 32, 100, 200] {
            let joined = &payload[..len];
            let mut want = vec![0u8; frame_bytes(len as u64) as usize];
            encode_frame(&mut want, 0, 9, 3, 2, joined);
            for cut in [0, len / 3, len] {
                let mut out = AlignedVec::<16>::new();
                out.extend_from_slice(&[0xEE; 16]); // frames follow others
                push_frame(&mut out, 0, 9, 3, 2, &[&joined[..cut], &joined[cut..]]);
                assert_eq!(&out[..16], &[0xEE; 16]);
                assert_eq!(&out[16..], &want[..], "len {len}, cut at {cut}");
                match decode_frame(&out, 16, 9, 0) {
                    Decoded::Frame(frame, next) => {
                        assert_eq!(frame.payload, joined);
                        assert_eq!(next as usize, out.len());
                    }
                    other => panic!("len {len}, cut at {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn frame_bytes_pads_to_sixteen() {
        let cases = [
            (0u64, 32u64),
            (1, 48),
            (15, 48),
            (16, 48),
            (17, 64),
            (1024, 1056),
        ];
        for (payload, total) in cases {
            assert_eq!(frame_bytes(payload), total, "payload {payload}");
        }
    }

    #[test]
    fn scan_reads_back_frames() {
        let seg = segment_with(&[b"a", b"", b"0123456789abcdef0"], 4096);
        let scan = scan_segment(&seg).unwrap();
        assert_eq!(scan.records, 3);
        assert_eq!(scan.last_seq, 9);
        assert_eq!(scan.stop, ScanStop::Clean);
        assert_eq!(scan.end_offset, 64 + 48 + 32 + 64);
        assert_eq!(scan.payload_bytes, 18);
    }

    #[test]
    fn header_defects_are_named() {
        let seg = segment_with(&[], 4096);
        type Mutate = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Mutate, HeaderDefect)> = vec![
            (
                Box::new(|s| s.truncate(10)),
                HeaderDefect::TooShort { bytes: 10 },
            ),
            (Box::new(|s| s[0] ^= 1), HeaderDefect::BadMagic),
            (Box::new(|s| s[17] ^= 1), HeaderDefect::BadCrc),
            (
                Box::new(|s| s.truncate(2048)),
                HeaderDefect::LengthMismatch {
                    header_bytes: 4096,
                    file_bytes: 2048,
                },
            ),
            // With the header's CRC made to match: a version this build does not read
            // (no damage), and a reused segment with a salt of 0 (damage).
            (
                Box::new(|s| {
                    s[8..12].copy_from_slice(&99u32.to_le_bytes());
                    let crc = crc32c::crc32c(&s[0..60]);
                    s[60..64].copy_from_slice(&crc.to_le_bytes());
                }),
                HeaderDefect::UnsupportedVersion { version: 99 },
            ),
            (
                Box::new(|s| {
                    s[8..12].copy_from_slice(&FORMAT_VERSION_REUSED.to_le_bytes());
                    s[32..36].copy_from_slice(&0u32.to_le_bytes());
                    let crc = crc32c::crc32c(&s[0..60]);
                    s[60..64].copy_from_slice(&crc.to_le_bytes());
                }),
                HeaderDefect::ZeroSalt,
            ),
        ];
        for (mutate, defect) in cases {
            let mut s = seg.clone();
            mutate(&mut s);
            assert_eq!(scan_segment(&s).unwrap_err(), defect);
        }
    }

    /// A frame fed to the tracker: an ordinary record, a v3 part (first_seq, index,
    /// end, covers_seq), or a v2 part (first_seq, index, end).
    #[derive(Clone, Copy)]
    enum Fed {
        Record,
        V3(u64, u32, bool, u64),
        V2(u64, u32, bool),
    }

    /// Feeds frames with sequence numbers 10, 11, … and returns the checkpoints
    /// completed (first_seq, last_seq, covers_seq) and the one left open (first_seq).
    fn track(frames: &[Fed]) -> (Vec<(u64, u64, u64)>, Option<u64>) {
        let mut tracker = CheckpointTracker::default();
        let mut done = Vec::new();
        for (i, fed) in frames.iter().enumerate() {
            let seq = 10 + i as u64;
            let (kind, version, payload) = match *fed {
                Fed::Record => (1, 1, Vec::new()),
                Fed::V3(first, index, end, covers) => {
                    let mut p = encode_part_header(first, index, end, covers).to_vec();
                    if !end {
                        p.extend_from_slice(b"part");
                    }
                    (KIND_CHECKPOINT, 3, p)
                }
                Fed::V2(first, index, end) => {
                    let mut p = encode_part_header_v2(first, index, end).to_vec();
                    if !end {
                        p.extend_from_slice(b"part");
                    }
                    (KIND_CHECKPOINT, 2, p)
                }
            };
            if let Some(span) = tracker.frame(7, 64, seq, kind, version, &payload) {
                done.push((span.first_seq, span.last_seq, span.covers_seq));
            }
        }
        (done, tracker.open.map(|o| o.span.first_seq))
    }

    #[test]
    fn the_tracker_follows_parts_across_records_in_v3_only() {
        use Fed::*;
        type Case = (&'static str, Vec<Fed>, Vec<(u64, u64, u64)>, Option<u64>);
        let cases: Vec<Case> = vec![
            (
                "v3 parts with records between them complete",
                vec![
                    Record,
                    V3(11, 0, false, 10),
                    Record,
                    V3(11, 1, false, 10),
                    Record,
                    V3(11, 2, true, 10),
                ],
                vec![(11, 15, 10)],
                None,
            ),
            (
                "v3 covering records before its first part",
                vec![Record, Record, V3(12, 0, false, 10), V3(12, 1, true, 10)],
                vec![(12, 13, 10)],
                None,
            ),
            (
                "v3 without its end marker stays open across records",
                vec![V3(10, 0, false, 9), Record, Record],
                vec![],
                Some(10),
            ),
            (
                "a new part 0 abandons the open v3 checkpoint",
                vec![
                    V3(10, 0, false, 9),
                    Record,
                    V3(12, 0, false, 11),
                    V3(10, 1, true, 9),
                ],
                vec![],
                None,
            ),
            (
                "the newer of two v3 checkpoints completes",
                vec![
                    V3(10, 0, false, 9),
                    V3(11, 0, false, 10),
                    Record,
                    V3(11, 1, true, 10),
                ],
                vec![(11, 13, 10)],
                None,
            ),
            (
                "a part with another covers_seq abandons",
                vec![V3(10, 0, false, 9), V3(10, 1, false, 8), V3(10, 2, true, 9)],
                vec![],
                None,
            ),
            (
                "a skipped index abandons",
                vec![V3(10, 0, false, 9), V3(10, 2, false, 9), V3(10, 3, true, 9)],
                vec![],
                None,
            ),
            (
                "v2 consecutive parts complete, covering what is before them",
                vec![V2(10, 0, false), V2(10, 1, false), V2(10, 2, true)],
                vec![(10, 12, 9)],
                None,
            ),
            (
                "a record between v2 parts abandons",
                vec![V2(10, 0, false), Record, V2(10, 1, true)],
                vec![],
                None,
            ),
            (
                "a v2 part does not continue a v3 checkpoint",
                vec![V3(10, 0, false, 9), V2(10, 1, true)],
                vec![],
                None,
            ),
        ];
        for (name, frames, done, open) in cases {
            assert_eq!(track(&frames), (done, open), "{name}");
        }
    }

    #[test]
    fn malformed_v3_part_headers_are_refused() {
        let good = encode_part_header(20, 1, false, 12);
        assert_eq!(
            decode_part_header(3, &good),
            Some(PartHeader {
                first_seq: 20,
                index: 1,
                end: false,
                covers_seq: 12,
                header_bytes: 32
            })
        );
        // A v3 header read as v2 is a v2 header with 16 bytes of part.
        assert_eq!(decode_part_header(2, &good).map(|h| h.covers_seq), Some(19));
        type Mutate = fn(&mut [u8; 32]);
        let cases: [(&str, Mutate); 5] = [
            ("unknown flag", |h| h[12] = 2),
            ("reserved 13..16", |h| h[14] = 1),
            ("reserved 24..32", |h| h[30] = 1),
            ("covers_seq not below first_seq", |h| {
                h[16..24].copy_from_slice(&20u64.to_le_bytes())
            }),
            ("end marker with bytes after it", |h| h[12] = 1),
        ];
        for (name, mutate) in cases {
            let mut h = good;
            mutate(&mut h);
            let mut payload = h.to_vec();
            payload.extend_from_slice(b"part");
            assert_eq!(decode_part_header(3, &payload), None, "{name}");
        }
        assert_eq!(decode_part_header(3, &good[..31]), None, "short");
        assert_eq!(decode_part_header(4, &good), None, "unknown version");
    }

    /// The salt of [`reused_with`]'s segments.
    const SALT: u32 = 0x5a17_5a17;

    /// `old` (a segment of base 7, see [`segment_with`]) reused from `base`: a version 2
    /// header and `payloads` written over its start, its later frames left as they were.
    fn reused_with(old: &[u8], base: u64, payloads: &[&[u8]]) -> (Vec<u8>, u64) {
        written_over(old, base, payloads, Some(SALT))
    }

    /// [`reused_with`], with this salt (`None`: a version 1 header, unsalted frames).
    fn written_over(
        old: &[u8],
        base: u64,
        payloads: &[&[u8]],
        salt: Option<u32>,
    ) -> (Vec<u8>, u64) {
        let mut seg = old.to_vec();
        seg[..64].copy_from_slice(&encode_segment_header(base, old.len() as u64, salt));
        let mut offset = 64usize;
        for (i, p) in payloads.iter().enumerate() {
            let n = frame_bytes(p.len() as u64) as usize;
            let salt = salt.unwrap_or(0);
            encode_frame(&mut seg[offset..offset + n], salt, base + i as u64, 3, 1, p);
            offset += n;
        }
        (seg, offset as u64)
    }

    #[test]
    fn a_reused_segment_ends_at_its_first_frame_that_does_not_decode() {
        let old = segment_with(&[b"a", b"b", b"c", b"d", b"e"], 4096);
        // Two frames over the first two: the old frames 9..=11 follow, then zeros.
        let (seg, end) = reused_with(&old, 20, &[b"x", b"y"]);
        let scan = scan_segment(&seg).unwrap();
        assert!(scan.header.reused);
        assert_eq!(scan.header.base_seq, 20);
        assert_eq!((scan.records, scan.last_seq, scan.end_offset), (2, 21, end));
        assert_eq!(scan.stop, ScanStop::Clean);
        // A frame torn by a crash (its payload not all written) is the end too.
        let (mut torn, end) = reused_with(&old, 20, &[b"x", b"y", b"zzzzzzzz"]);
        torn[end as usize - 16] ^= 0xff;
        let scan = scan_segment(&torn).unwrap();
        assert_eq!((scan.records, scan.last_seq), (2, 21));
        assert_eq!(scan.stop, ScanStop::Clean);
        // The same frames in a version 1 segment: the old frames after them are damage.
        let (strict, _) = written_over(&old, 20, &[b"x", b"y"], None);
        assert!(matches!(
            scan_segment(&strict).unwrap().stop,
            ScanStop::Invalid {
                defect: FrameDefect::SequenceGap {
                    expected: 22,
                    found: 9
                },
                ..
            }
        ));
    }

    /// An intact frame of an earlier use (or bytes shaped like one inside an earlier
    /// payload, such as a receiver's response body) with a sequence number far above
    /// the log's: it fails the reused segment's salted header CRC, so it is neither a
    /// record nor damage.
    #[test]
    fn frames_of_an_earlier_use_after_a_reused_segments_end_are_not_its_own() {
        let mut old = segment_with(&[b"a", b"b", b"c", b"d", b"e"], 4096);
        let forged_at = 64 + 5 * frame_bytes(1) as usize;
        let n = frame_bytes(8) as usize;
        encode_frame(
            &mut old[forged_at..forged_at + n],
            0,
            1 << 62,
            3,
            1,
            b"forged!!",
        );
        let (seg, end) = reused_with(&old, 20, &[b"x", b"y"]);
        let scan = scan_segment(&seg).unwrap();
        assert_eq!((scan.records, scan.last_seq, scan.end_offset), (2, 21, end));
        assert_eq!(scan.stop, ScanStop::Clean);
        assert_eq!(intact_frames_after(&seg, end, 4096, 21, SALT), None);
        // Unsalted, the same bytes would be an intact frame after the end.
        assert!(intact_frames_after(&seg, end, 4096, 21, 0).is_some());
    }

    #[test]
    fn a_reused_segment_with_frames_of_its_own_after_damage_is_invalid() {
        let old = segment_with(&[b"a", b"b", b"c", b"d", b"e"], 4096);
        // Frames 20..=22; the second's payload damaged, the third intact after it.
        let (mut seg, _) = reused_with(&old, 20, &[b"x", b"y", b"z"]);
        let second = 64 + frame_bytes(1) as usize;
        seg[second + FRAME_HEADER_BYTES as usize] ^= 0xff;
        let scan = scan_segment(&seg).unwrap();
        assert_eq!((scan.records, scan.last_seq), (1, 20));
        assert_eq!(
            scan.stop,
            ScanStop::Invalid {
                offset: second as u64,
                defect: FrameDefect::PayloadCrc,
                dirty_end: 4096
            }
        );
        let after = intact_frames_after(&seg, second as u64, 4096, 20, SALT).unwrap();
        assert_eq!((after.frames, after.last_seq), (1, 22));
    }

    /// A power loss during a sync on a reused file: the device stored a later page of
    /// what the sync was writing and not an earlier one, so frame 22 is still the file's
    /// earlier use while 23 after it is intact. Whether that is a torn tail depends on
    /// the durable mark: past it, nothing from 22 on was ever acknowledged.
    #[test]
    fn damage_past_the_durable_mark_is_a_torn_tail_and_at_or_before_it_corruption() {
        let old = segment_with(&[b"a", b"b", b"c", b"d", b"e"], 4096);
        let (seg, end) = reused_with(&old, 20, &[b"w", b"x", b"y", b"z"]);
        let frame = |i: usize| {
            let n = frame_bytes(1) as usize;
            64 + i * n..64 + (i + 1) * n
        };
        let mut lost = seg.clone();
        lost[frame(2)].copy_from_slice(&old[frame(2)]);
        let scan = scan_segment(&lost).unwrap();
        assert_eq!((scan.records, scan.last_seq), (2, 21));
        let &ScanStop::Invalid {
            offset, dirty_end, ..
        } = &scan.stop
        else {
            panic!("the scan does not stop at the damage: {:?}", scan.stop);
        };
        assert_eq!(offset, frame(2).start as u64);
        let intact = intact_frames_after(&lost, offset, dirty_end, scan.last_seq, SALT);
        assert_eq!(intact.map(|i| (i.frames, i.end)), Some((1, end)));
        let torn_end = |mark| torn_tail_end(&scan.header, scan.last_seq, dirty_end, intact, mark);
        // Durable up to 21 or less: 22 and 23 were never acknowledged.
        assert_eq!(
            torn_end(Some(21)),
            Some(end),
            "torn up to the end of frame 23"
        );
        assert_eq!(torn_end(Some(0)), Some(end));
        // 22 (or more) durable: the damage is to an acknowledged frame.
        assert_eq!(torn_end(Some(22)), None);
        assert_eq!(torn_end(Some(23)), None);
        assert_eq!(torn_end(Some(u64::MAX)), None);
        // Without a mark nothing tells, and damage before intact frames is corruption.
        assert_eq!(torn_end(None), None);
        // Nothing intact after the damage: torn up to the last non-zero byte, unless the
        // mark says the damaged frame was made durable.
        let alone = |mark| torn_tail_end(&scan.header, scan.last_seq, dirty_end, None, mark);
        assert_eq!(alone(None), Some(dirty_end));
        assert_eq!(alone(Some(21)), Some(dirty_end));
        assert_eq!(alone(Some(22)), None);
        // In a new file the bytes after the frames are zeros to be restored: the tail
        // ends at the last non-zero byte rather than after the last intact frame.
        let mut new = segment_with(&[b"w", b"x", b"y", b"z"], 4096);
        new[frame(2).start + FRAME_HEADER_BYTES as usize] ^= 0xff;
        new[frame(4).start + 40] = 1;
        let scan = scan_segment(&new).unwrap();
        let &ScanStop::Invalid {
            offset, dirty_end, ..
        } = &scan.stop
        else {
            panic!("the scan does not stop at the damage: {:?}", scan.stop);
        };
        assert_eq!(dirty_end, frame(4).start as u64 + 41);
        let intact = intact_frames_after(&new, offset, dirty_end, scan.last_seq, 0);
        assert!(intact.is_some());
        let torn_end = |mark| torn_tail_end(&scan.header, scan.last_seq, dirty_end, intact, mark);
        assert_eq!(torn_end(Some(8)), Some(dirty_end));
        assert_eq!(torn_end(Some(9)), None);
    }

    #[test]
    fn the_durable_mark_decodes_only_whole_and_unchanged() {
        for seq in [0, 1, 1 << 40, u64::MAX] {
            assert_eq!(decode_durable_mark(&encode_durable_mark(seq)), Some(seq));
        }
        let good = encode_durable_mark(77);
        assert_eq!(decode_durable_mark(&good[..31]), None, "short");
        assert_eq!(decode_durable_mark(&[good, good].concat()), None, "long");
        assert_eq!(decode_durable_mark(&[]), None, "empty");
        // The file: one slot, or the higher of two that decode.
        let older = encode_durable_mark(76);
        assert_eq!(decode_durable_mark_file(&good), Some(77));
        assert_eq!(decode_durable_mark_file(&[older, good].concat()), Some(77));
        assert_eq!(decode_durable_mark_file(&[good, older].concat()), Some(77));
        let mut torn = good;
        torn[17] ^= 1;
        assert_eq!(decode_durable_mark_file(&[older, torn].concat()), Some(76));
        assert_eq!(decode_durable_mark_file(&[torn, torn].concat()), None);
        assert_eq!(decode_durable_mark_file(&[good, good, good].concat()), None);
        assert_eq!(decode_durable_mark_file(&good[..20]), None);
        for byte in 0..DURABLE_MARK_BYTES {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert_eq!(decode_durable_mark(&bad), None, "bit {bit} of byte {byte}");
            }
        }
    }

    #[test]
    fn garbage_after_end_is_invalid() {
        let mut seg = segment_with(&[b"x"], 4096);
        seg[4000] = 9;
        let scan = scan_segment(&seg).unwrap();
        assert_eq!(scan.records, 1);
        assert_eq!(
            scan.stop,
            ScanStop::Invalid {
                offset: 112,
                defect: FrameDefect::GarbageAfterEnd {
                    first_nonzero_offset: 4000
                },
                dirty_end: 4001
            }
        );
    }
}
