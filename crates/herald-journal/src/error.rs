//! Journal errors: each says whose fault it is ([`Fault`]) and carries what the
//! caller needs to act (path, offset, limit, sequence number).

use std::io;
use std::path::PathBuf;

use crate::format::{FrameDefect, HeaderDefect};
use crate::journal::MissingHistory;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller asked for something invalid (config, record, kind).
    Caller,
    /// The disk or filesystem failed, or stored bytes are corrupt.
    Storage,
    /// The host refused something the journal needs to run (a thread for group commit
    /// or segment preallocation). Nothing on disk is wrong and the call was valid;
    /// retrying does not help until the host's limits (threads, memory) allow it.
    Environment,
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A configuration value is out of bounds.
    #[error("invalid journal config: {field}: {reason}")]
    InvalidConfig {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload is larger than a record may be.
    #[error("record of {payload_bytes} bytes exceeds payload_bytes_max {payload_bytes_max}")]
    RecordTooLarge {
        /// Size asked for.
        payload_bytes: u64,
        /// The limit (see [`crate::JournalConfig::payload_bytes_max`]).
        payload_bytes_max: u64,
    },
    /// Kinds at or above [`crate::KIND_RESERVED_MIN`] belong to the journal.
    #[error("record kind {kind:#06x} is reserved for the journal")]
    ReservedKind {
        /// The kind asked for.
        kind: u16,
    },
    /// Replay met a record kind/version the caller did not declare.
    #[error("record {seq} has unknown kind {kind} version {version}")]
    UnknownKind {
        /// Sequence number of the record.
        seq: u64,
        /// Its kind.
        kind: u16,
        /// Its version.
        version: u16,
    },
    /// `segments_max` segments exist and none can be deleted: the caller must
    /// write a checkpoint (and let it become durable) before appending more.
    #[error(
        "journal holds segments_max {segments_max} segments; write a checkpoint to free older ones"
    )]
    SegmentsExhausted {
        /// The limit.
        segments_max: usize,
    },
    /// Another journal handle (maybe in another process) holds the directory: held
    /// throughout a quarter of a second (a lock let go a moment before can still be held
    /// by a child process being started then).
    #[error("journal directory {dir} is locked by another handle")]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A background thread of the journal could not be started (the host's thread or
    /// memory limits): not a storage fault, nothing was written.
    #[error("journal could not start its {thread} thread: {source}; the host refused a thread (check its thread and memory limits)")]
    Spawn {
        /// The thread's name.
        thread: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A write of appended records found no space (ENOSPC or EDQUOT: on a filesystem
    /// that copies on write, or on thin storage, a preallocated segment holds no
    /// blocks), and the records from `from_seq` on were withdrawn: they are not in the
    /// journal, and their sequence numbers go to the next records. The records before
    /// them stay and become durable with the next sync. Appends are refused until the
    /// owner has dropped what it made of the withdrawn records (replies waiting for
    /// them, state built from them) and called `Journal::resume_after_withdrawal`;
    /// `Journal::ensure_room` then tells when there is space again.
    #[error("journal records from {from_seq} on were withdrawn: a write of them failed: {source}")]
    Withdrawn {
        /// The first withdrawn sequence number.
        from_seq: u64,
        /// The write's OS error (ENOSPC, or EDQUOT: a quota, not the device, is full).
        source: io::Error,
    },
    /// A file operation failed. `is_storage_full` tells ENOSPC/EDQUOT apart.
    #[error("journal storage: {op} {path}: {source}")]
    Io {
        /// The operation (e.g. "fallocate").
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A segment header is corrupt or not a segment. Reopen with `repair` to mend it as
    /// damage at the file's start ([`JournalError::CorruptFrame`] says how), unless the
    /// header names a format this build does not read (then run a build that does).
    #[error("corrupt segment header in {segment}: {defect}")]
    CorruptSegmentHeader {
        /// The segment file.
        segment: PathBuf,
        /// What is wrong.
        defect: HeaderDefect,
    },
    /// A frame before the tail of the journal is corrupt. Reopen with `repair` to mend
    /// it: the segment files up to it go whole when a later complete checkpoint covers
    /// every record in them (nothing lost); otherwise the log is truncated there (losing
    /// everything after it), unless that would cut off the checkpoint replay needs
    /// ([`JournalError::HistoryMissing`]). `herald journal check` says which beforehand.
    #[error("corrupt frame in {segment} at offset {offset}: {defect}")]
    CorruptFrame {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the frame within the segment.
        offset: u64,
        /// What is wrong.
        defect: FrameDefect,
    },
    /// Segment files do not follow on from each other: a segment file is missing, or a
    /// reused one's last frames are damaged. `repair` mends a gap as it mends a corrupt
    /// frame ([`JournalError::CorruptFrame`]); a segment file whose name disagrees with
    /// its header (`expected` is then the name's) is beyond any repair.
    #[error("segment {segment} starts at seq {found} but seq {expected} must come next")]
    SegmentGap {
        /// The segment file.
        segment: PathBuf,
        /// The sequence number that must come next.
        expected: u64,
        /// The base sequence number of the segment.
        found: u64,
    },
    /// The log ends before records the journal had made durable: its durable mark
    /// names a later sequence number than the last intact frame. The end of the log was
    /// damaged or lost (in a reused segment, damage to the last frames ends the log as
    /// stale bytes would), or the last segment files were removed. Reopen with `repair` to accept
    /// the loss (it says how many records go).
    #[error(
        "journal in {dir} ends at seq {last_seq}, but records up to seq {durable_mark} were made durable: the end of the log is damaged or missing (`herald journal check` inspects it; repair accepts the loss of seq {}..={durable_mark})",
        last_seq + 1
    )]
    DurableMissing {
        /// The journal directory.
        dir: PathBuf,
        /// The last intact record's sequence number (0 when none).
        last_seq: u64,
        /// The sequence number the durable mark records.
        durable_mark: u64,
    },
    /// The journal lacks its oldest records replay needs: its first segment starts
    /// after the frame following what its latest complete checkpoint covers (after its
    /// first frame, with no complete checkpoint), which compaction never leaves. The
    /// segment files before it were removed (by hand, a backup restored in part), or a
    /// repair asked for would cut off, at damage, the checkpoint that covered them (with
    /// no later complete checkpoint covering them either).
    /// Opening without them would silently lose every event and webhook they held, and
    /// no repair can bring them back: restore the missing (or damaged) segment files from a backup.
    /// Repair refuses it too, before changing anything.
    #[error(
        "journal in {dir} lacks the oldest records replay needs (segment files removed from its start, or the checkpoint that covered them damaged): {missing}"
    )]
    HistoryMissing {
        /// The journal directory.
        dir: PathBuf,
        /// Which records are missing, and the first segment present.
        missing: MissingHistory,
    },
    /// A previous sync failed. After a failed fsync the kernel may have dropped
    /// the dirty pages, so nothing written since the last durable sequence can
    /// be trusted: the journal refuses further work until reopened.
    #[error("journal unusable after a failed sync (durable up to seq {durable_seq}): {message}")]
    SyncFailed {
        /// Last sequence number known durable.
        durable_seq: u64,
        /// The OS error of the failed sync.
        message: String,
    },
    /// `wait_durable` gave up.
    #[error("seq {seq} not durable within {timeout_ms} ms (durable up to {durable_seq})")]
    DurableTimeout {
        /// The sequence number waited for.
        seq: u64,
        /// The durable sequence number at the time of giving up.
        durable_seq: u64,
        /// The timeout.
        timeout_ms: u64,
    },
    /// Waited for a sequence number that was never appended.
    #[error("seq {seq} was never appended (last appended {last_seq})")]
    NotAppended {
        /// The sequence number waited for.
        seq: u64,
        /// The last appended sequence number.
        last_seq: u64,
    },
    /// A checkpoint part or end marker was given a handle that is no longer the
    /// journal's open checkpoint: another checkpoint was opened since (which abandoned
    /// this one), or it belongs to another journal. Nothing was written; open a new
    /// checkpoint and write it from its first part.
    #[error(
        "checkpoint covering seq {covers_seq} was abandoned (another checkpoint was opened since); nothing written, open a new checkpoint"
    )]
    CheckpointAbandoned {
        /// The last sequence number the abandoned checkpoint would have covered.
        covers_seq: u64,
    },
    /// A payload failed rkyv validation or encoding.
    #[error("record payload: {message}")]
    Payload {
        /// The rkyv error.
        message: String,
    },
}

impl JournalError {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::InvalidConfig { .. }
            | Self::RecordTooLarge { .. }
            | Self::ReservedKind { .. }
            | Self::UnknownKind { .. }
            | Self::SegmentsExhausted { .. }
            | Self::Locked { .. }
            | Self::NotAppended { .. }
            | Self::CheckpointAbandoned { .. }
            | Self::Payload { .. } => Fault::Caller,
            Self::Io { .. }
            | Self::Withdrawn { .. }
            | Self::CorruptSegmentHeader { .. }
            | Self::CorruptFrame { .. }
            | Self::SegmentGap { .. }
            | Self::DurableMissing { .. }
            | Self::HistoryMissing { .. }
            | Self::SyncFailed { .. }
            | Self::DurableTimeout { .. } => Fault::Storage,
            Self::Spawn { .. } => Fault::Environment,
        }
    }

    /// Whether the error is the filesystem running out of space (ENOSPC or
    /// EDQUOT): appends may work again once space is freed.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Self::Withdrawn { .. } => true,
            Self::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
                    || code == rustix::io::Errno::DQUOT.raw_os_error()
            ),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_thread_is_the_host_not_the_disk() {
        let spawn = JournalError::Spawn {
            thread: "herald-journal-sync",
            source: io::Error::from(io::ErrorKind::OutOfMemory),
        };
        assert_eq!(spawn.fault(), Fault::Environment);
        assert!(!spawn.is_storage_full());
        assert!(std::error::Error::source(&spawn).is_some());
        assert!(spawn.to_string().contains("herald-journal-sync"), "{spawn}");
        let io = JournalError::io(
            "fallocate",
            "/data/shard-0",
            io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
        );
        assert_eq!(io.fault(), Fault::Storage);
        assert!(io.is_storage_full());
    }
}
