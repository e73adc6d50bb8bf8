//! Memory-mapped, append-only, CRC-checked journal with group commit and recovery.
//!
//! A journal is a directory of preallocated segment files (see [`format`](mod@format) for
//! the byte layout). [`Journal::append`] stages a frame in memory and returns
//! its sequence number at once; [`Journal::commit`] writes the staged frames to
//! the active segment (one `pwrite` per [`WRITE_PIECE_BYTES`] piece of the file it
//! spans), and a background thread makes batches
//! durable with `fdatasync` ([`Journal::durable_seq`],
//! [`Journal::set_durable_notify`], [`Journal::sync`]). Segments are mapped
//! read-only, so replay and [`Frame::access`] read records in place. [`Journal::open`]
//! recovers: it checks every frame, zeroes a torn tail in the last segment (damage
//! with no intact frame after it, or past what the journal's durable mark says was
//! ever made durable) and refuses other damage unless asked to repair. A repair deletes
//! the segment files up to the damage whole when a later complete checkpoint covers every
//! record in them (losing nothing), and otherwise truncates there. It refuses, even
//! when asked to repair, a journal whose oldest segment files are gone with records
//! replay needs (before the record after what its latest complete checkpoint covers):
//! only restoring them from a backup brings those records back.
//! [`Journal::ensure_room`] lets a caller whose append failed on a full disk probe
//! whether it can write again. Checkpoints
//! ([`Journal::checkpoint`], [`Journal::begin_checkpoint`] for one of any size,
//! written as several frames and counted only once complete,
//! [`Journal::open_checkpoint`] for one written a few parts at a time across other
//! appends) bound replay and disk use. A checkpoint covers every frame up to the one
//! appended last when it was begun; [`Journal::replay`] returns the latest complete
//! checkpoint's parts, then every record after what it covers.
//!
//! Durability order: a record is acknowledged (counted in `durable_seq`) only
//! after `fdatasync` of every segment holding records up to it. A rolled
//! segment keeps a temporary name until the segments before it are synced, so
//! after a crash or power loss a torn frame can only be in the last segment.
//! The next segment is preallocated in the background, so rolls do not wait
//! for `fallocate`; or it is the file of a segment a checkpoint let go, written over
//! in place so that its pages stay in the page cache (format version 2: after its last
//! frame come its earlier frames, whose lower sequence numbers end the log; see
//! [`format`](mod@format)). Disk use is at most `segments_max + 5` segment files (the spare and up
//! to four let-go segments kept for reuse), or `2 * segments_max + 5` while a checkpoint
//! written at the limit is completed (the checkpoint frees the older segments; see
//! `CHECKPOINT_SEGMENTS_EXTRA_FACTOR`).
//!
//! The journal stores `(kind, version, payload)` and knows nothing of the
//! records: payloads are rkyv bytes made with [`encode`] and read with
//! [`Frame::access`]. Kinds are the caller's; [`Journal::replay`] returns every
//! kind and [`Journal::replay_known`] fails on kinds the caller did not
//! declare in [`KnownKinds`], naming them.
#![warn(missing_docs)]
#![deny(unsafe_code)] // memmap2 mapping needs it; each block has a SAFETY comment.

mod check;
mod codec;
mod error;
pub mod format;
mod journal;
mod mark;
mod spare;
mod sync;

pub use check::{check, CheckReport, Corruption, SegmentSummary};
pub use codec::{access, encode};
pub use error::{Fault, JournalError};
pub use format::{
    frame_bytes, CHECKPOINT_PART_HEADER_BYTES, CHECKPOINT_VERSION, KIND_CHECKPOINT,
    KIND_RESERVED_MIN, PAYLOAD_BYTES_MAX, SYNC_FAILED_FILE,
};
pub use journal::{
    in_use, unmapped_elsewhere, CheckpointHandle, CheckpointWriter, Compaction, CoveredSegments,
    Frame, Journal, JournalConfig, KnownKinds, Mapped, MissingHistory, Position, Reader, Recovery,
    Repair, Replay, TornTail, CHECKPOINT_SEGMENTS_EXTRA_FACTOR, GROUP_DELAY_US_MAX,
    GROUP_RECORDS_MAX_LIMIT, LAZY_DELAY_US_DEFAULT, SEGMENTS_MAX_LIMIT, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, STAGED_BYTES_MAX, WRITE_PIECE_BYTES,
};
pub use sync::{DurableHandle, SyncStats};

/// What the names of the threads a journal starts begin with (its group commit's sync
/// thread, `herald-journal-sync`, and the thread that makes its next segment ready,
/// `herald-journal-spare`): a harness that splits a process's CPU by thread finds them
/// by it. Short enough to survive Linux's 15-byte thread names.
pub const THREAD_NAME_PREFIX: &str = "herald-journal";
const _: () = assert!(THREAD_NAME_PREFIX.len() <= 15);
