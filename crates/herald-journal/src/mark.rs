//! The durable mark (`durable.mark`, see [`crate::format`]): how far the log is known
//! durable, moved on by the sync thread after each sync and before what it covers is
//! acknowledged.
//!
//! It is moved on hundreds of times a second, in the path of every acknowledgement, so
//! where the file system allows it the mark is stored through a shared writable mapping:
//! a store is a copy into the page cache, with no system call and no change of the file's
//! times (a `pwrite` updated them, and on ext4 that now and then waited behind a
//! journal commit for milliseconds). At most every [`MARK_SYNC_INTERVAL`] its page is
//! handed to the device (`sync_file_range`, which neither waits nor flushes the device's
//! cache), and the next sync of the log's segments, which flushes that cache, makes it
//! durable: after a power loss it is behind the log by little more than that interval,
//! without a device flush of its own. On file systems that may allocate when a mapped
//! page is first written again (copy-on-write ones: btrfs, ZFS, bcachefs, …), a full disk
//! would end the process with `SIGBUS` there, so the mark is written with `pwrite`
//! instead: only ext4, XFS and tmpfs are mapped.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::error::JournalError;
use crate::format::{self, DURABLE_MARK_BYTES, DURABLE_MARK_FILE};

/// Longest a moved mark waits before its page is handed to the device: after a power
/// loss the mark may be behind the log by what was acknowledged in about this long (plus
/// one sync), which only matters if frames synced in that while are also damaged.
pub(crate) const MARK_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// `statfs` magic numbers of the file systems whose mapped pages, once allocated and
/// written, are written again in place (no allocation when first stored to after
/// writeback): ext4 (and ext2/3), XFS, tmpfs.
const MAPPED_FILE_SYSTEMS: [i64; 3] = [0xEF53, 0x5846_5342, 0x0102_1994];

/// What the durable mark in `dir` records: `None` when the file is missing or does not
/// decode, which makes recovery take any damage followed by intact frames for
/// corruption, and skip the check that the log reaches the mark.
pub(crate) fn read(dir: &Path) -> Result<Option<u64>, JournalError> {
    let path = dir.join(DURABLE_MARK_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(format::decode_durable_mark(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JournalError::io("read", &path, e)),
    }
}

/// The mark, open for the sync thread to move on.
pub(crate) struct DurableMark {
    path: PathBuf,
    file: File,
    /// The mark's page, mapped shared and writable; `None`: written with `pwrite`.
    map: Option<MmapMut>,
    /// The sequence number last stored.
    stored: u64,
    /// Whether it was stored since the mark was last synced.
    unsynced: bool,
    synced_at: Instant,
}

impl DurableMark {
    /// Writes and syncs the mark of `dir_path` (created when missing, its directory entry
    /// synced then), recording `seq`, and opens it to be moved on.
    pub(crate) fn create(dir_path: &Path, dir: &File, seq: u64) -> Result<Self, JournalError> {
        let path = dir_path.join(DURABLE_MARK_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| JournalError::io("open", &path, e))?;
        file.write_all_at(&format::encode_durable_mark(seq), 0)
            .map_err(|e| JournalError::io("pwrite", &path, e))?;
        // A longer file (not one this build wrote) would not decode: cut to the mark.
        file.set_len(DURABLE_MARK_BYTES as u64)
            .map_err(|e| JournalError::io("truncate", &path, e))?;
        file.sync_data()
            .map_err(|e| JournalError::io("fdatasync", &path, e))?;
        if !existed {
            dir.sync_all()
                .map_err(|e| JournalError::io("fsync", dir_path, e))?;
        }
        // The field's width differs between targets.
        #[allow(clippy::unnecessary_cast)]
        let mapped = rustix::fs::fstatfs(&file)
            .map(|fs| MAPPED_FILE_SYSTEMS.contains(&(fs.f_type as i64)))
            .unwrap_or(false);
        Self::open_as(path, file, seq, mapped)
    }

    /// The mark in `file` (recording `seq`), stored through a mapping when `mapped`.
    fn open_as(path: PathBuf, file: File, seq: u64, mapped: bool) -> Result<Self, JournalError> {
        let map = if mapped {
            // SAFETY: the mark is a file of a journal directory this process holds the
            // exclusive flock on; no cooperating handle truncates or writes it while it is
            // mapped (its length was set just above, and it is only written through this
            // mapping from here on).
            #[allow(unsafe_code)]
            let map = unsafe { MmapMut::map_mut(&file) };
            Some(map.map_err(|e| JournalError::io("mmap", &path, e))?)
        } else {
            None
        };
        Ok(Self {
            path,
            file,
            map,
            stored: seq,
            unsynced: false,
            synced_at: Instant::now(),
        })
    }

    /// Records that every frame up to `seq` is durable. The page cache keeps it across a
    /// crash of the process; a power loss may leave it behind (see [`Self::sync_if_due`]).
    pub(crate) fn store(&mut self, seq: u64) -> Result<(), String> {
        let mark = format::encode_durable_mark(seq);
        match &mut self.map {
            Some(map) => map[..DURABLE_MARK_BYTES].copy_from_slice(&mark),
            None => self
                .file
                .write_all_at(&mark, 0)
                .map_err(|e| format!("write of {}: {e}", self.path.display()))?,
        }
        self.stored = seq;
        self.unsynced = true;
        Ok(())
    }

    /// Hands the mark's page to the device when it moved and that was last done
    /// [`MARK_SYNC_INTERVAL`] ago: it is durable once a sync of the segments after the
    /// write completes has flushed the device's cache. With `stopping`, syncs it (the journal stops).
    pub(crate) fn sync_if_due(&mut self, stopping: bool) -> Result<(), String> {
        if !self.unsynced || !(stopping || self.synced_at.elapsed() >= MARK_SYNC_INTERVAL) {
            return Ok(());
        }
        if stopping {
            self.file
                .sync_data()
                .map_err(|e| format!("fdatasync of {}: {e}", self.path.display()))?;
        } else {
            start_writeback(&self.file)
                .map_err(|e| format!("sync_file_range of {}: {e}", self.path.display()))?;
        }
        self.unsynced = false;
        self.synced_at = Instant::now();
        // Writeback left the mapped page read-only: the next store faults and updates
        // the file's times. Taken here, after the acknowledgement, not in the path of
        // the next one.
        if let Some(map) = &mut self.map {
            let mark = format::encode_durable_mark(self.stored);
            map[..DURABLE_MARK_BYTES].copy_from_slice(&mark);
        }
        Ok(())
    }
}

/// Starts writeback of `file`'s dirty pages without waiting for it and without flushing
/// the device's cache (`sync_file_range(SYNC_FILE_RANGE_WRITE)`).
fn start_writeback(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor this `File` owns for the whole call; it
    // reads no memory of this process.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored through a mapping or written, the mark reads back at once (the page cache
    /// is one), and syncs when due or asked to.
    #[test]
    fn a_stored_mark_reads_back_mapped_or_written() {
        for mapped in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let dir_file = File::open(dir.path()).unwrap();
            let created = DurableMark::create(dir.path(), &dir_file, 3).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(3));
            let DurableMark { path, file, .. } = created;
            let mut mark = DurableMark::open_as(path, file, 3, mapped).unwrap();
            assert_eq!(mark.map.is_some(), mapped);
            mark.store(41).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(41), "mapped {mapped}");
            assert!(mark.unsynced);
            mark.sync_if_due(false).unwrap();
            assert!(mark.unsynced, "not due within {MARK_SYNC_INTERVAL:?}");
            mark.synced_at -= MARK_SYNC_INTERVAL;
            mark.sync_if_due(false).unwrap();
            assert!(!mark.unsynced, "due");
            mark.store(5).unwrap();
            mark.sync_if_due(true).unwrap();
            assert!(!mark.unsynced, "stopping");
            mark.store(42).unwrap();
            drop(mark);
            assert_eq!(read(dir.path()).unwrap(), Some(42), "mapped {mapped}");
        }
    }
}
