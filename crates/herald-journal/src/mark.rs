//! The durable mark (`durable.mark`, see [`crate::format`]): how far the log is known
//! durable, moved on by the sync thread after each sync and before what it covers is
//! acknowledged.
//!
//! It is moved on hundreds of times a second, in the path of every acknowledgement, so
//! where the file system allows it the mark is stored through a shared writable mapping:
//! a store is a copy into the page cache, with no system call and no change of the
//! file's times except on the first store after each writeback (a `pwrite` updated them
//! once per clock tick, and on ext4 that now and then waited behind a journal commit for
//! milliseconds). Stores alternate between the file's two slots, so that one cut short
//! (by a crash, or caught half-done by writeback) leaves the other, earlier one intact.
//!
//! While syncs go on, at most every [`MARK_SYNC_INTERVAL`] its page is handed to the
//! device (`sync_file_range`, which neither waits nor flushes the device's cache), and a
//! later sync of the segments, whose flush follows that write's completion, makes it
//! durable: after a power loss it is behind the log by little more than that interval's
//! acknowledgements, without a device flush of its own. When the journal goes quiet the
//! last mark waits for the next sync, the kernel's writeback or the stop, which syncs it.
//!
//! Only ext4, XFS and tmpfs are mapped: where the file system may allocate when a mapped
//! page is first written again (copy-on-write ones: btrfs, ZFS, bcachefs, …; also XFS
//! for a file that shares its blocks after a reflink copy), a full disk or an I/O error
//! there ends the process with `SIGBUS` instead of returning an error. Elsewhere the mark
//! is written with `pwrite`.
//!
//! A mark that cannot be written is removed, not left behind: the rules without a mark
//! only refuse more, while a mark behind the log would let damage to records it does not
//! cover pass for a torn tail. The journal goes on without one until it is reopened;
//! only a mark that can neither be written nor removed fails the journal.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::error::JournalError;
use crate::format::{self, DURABLE_MARK_BYTES, DURABLE_MARK_FILE};

/// Longest a moved mark waits, while syncs go on, before its page is handed to the
/// device: after a power loss the mark may be behind the log by what was acknowledged in
/// about this long (plus a sync or two), which only matters if frames synced in that
/// while are also damaged.
pub(crate) const MARK_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes of the mark's file: two slots.
const MARK_FILE_BYTES: usize = 2 * DURABLE_MARK_BYTES;

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
        Ok(bytes) => Ok(format::decode_durable_mark_file(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JournalError::io("read", &path, e)),
    }
}

/// How the mark is stored.
enum Store {
    /// Through a shared writable mapping of the file.
    Mapped(MmapMut),
    /// With `pwrite`.
    Written,
    /// Not at all: it could not be written and was removed.
    Removed,
}

/// The mark, open for the sync thread to move on.
pub(crate) struct DurableMark {
    path: PathBuf,
    file: File,
    store: Store,
    /// The slot the next store goes to (0 or 1).
    next_slot: usize,
    /// Whether it was stored since its page was last handed to the device.
    unsynced: bool,
    synced_at: Instant,
}

impl DurableMark {
    /// Writes and syncs the mark of `dir_path` (created when missing, its directory entry
    /// synced then), recording `seq` in both slots, and opens it to be moved on. When it
    /// cannot be written it is removed, and the journal opens without one.
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
        let written = (|| {
            let mark = format::encode_durable_mark(seq);
            file.write_all_at(&[mark, mark].concat(), 0)?;
            // A longer file (not one this build wrote) would not decode: cut to the mark.
            file.set_len(MARK_FILE_BYTES as u64)?;
            file.sync_data()?;
            if !existed {
                dir.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = written {
            remove(&path, dir).map_err(|_| JournalError::io("write", &path, e))?;
            return Ok(Self::open_as(path, file, false).removed());
        }
        // The field's width differs between targets.
        #[allow(clippy::unnecessary_cast)]
        let mapped = rustix::fs::fstatfs(&file)
            .map(|fs| MAPPED_FILE_SYSTEMS.contains(&(fs.f_type as i64)))
            .unwrap_or(false);
        Ok(Self::open_as(path, file, mapped))
    }

    /// The mark in `file`, stored through a mapping when `mapped` (and the mapping can
    /// be made).
    fn open_as(path: PathBuf, file: File, mapped: bool) -> Self {
        // SAFETY: the mark is a file of a journal directory this process holds the
        // exclusive flock on; no cooperating handle truncates or writes it while it is
        // mapped (its length was set before, and it is only written through this
        // mapping from here on).
        #[allow(unsafe_code)]
        let map = mapped.then(|| unsafe { MmapMut::map_mut(&file) });
        let store = match map {
            Some(Ok(map)) if map.len() >= MARK_FILE_BYTES => Store::Mapped(map),
            _ => Store::Written,
        };
        Self {
            path,
            file,
            store,
            next_slot: 0,
            unsynced: false,
            synced_at: Instant::now(),
        }
    }

    fn removed(mut self) -> Self {
        self.store = Store::Removed;
        self
    }

    /// Records that every frame up to `seq` is durable. The page cache keeps it across a
    /// crash of the process; a power loss may leave it behind (see [`Self::sync_if_due`]).
    /// Fails only when the mark could neither be written nor removed.
    pub(crate) fn store(&mut self, seq: u64) -> Result<(), String> {
        let mark = format::encode_durable_mark(seq);
        let at = self.next_slot * DURABLE_MARK_BYTES;
        match &mut self.store {
            Store::Mapped(map) => map[at..at + DURABLE_MARK_BYTES].copy_from_slice(&mark),
            Store::Written => {
                if let Err(e) = self.file.write_all_at(&mark, at as u64) {
                    // Behind the log it would cover less than was acknowledged: gone, the
                    // rules without it hold.
                    let dir = self.path.parent().map(File::open);
                    match dir {
                        Some(Ok(dir)) if remove(&self.path, &dir).is_ok() => {
                            self.store = Store::Removed;
                            return Ok(());
                        }
                        _ => {
                            return Err(format!(
                                "write of {}: {e}; it could not be removed either",
                                self.path.display()
                            ))
                        }
                    }
                }
            }
            Store::Removed => return Ok(()),
        }
        self.next_slot ^= 1;
        self.unsynced = true;
        Ok(())
    }

    /// Hands the mark's page to the device when it moved and that was last done
    /// [`MARK_SYNC_INTERVAL`] ago: it is durable once a sync of the segments after that
    /// write completes has flushed the device's cache. With `stopping`, syncs it (the
    /// journal stops). A failure only leaves the mark further behind after a power loss,
    /// and is not reported.
    pub(crate) fn sync_if_due(&mut self, stopping: bool) {
        let due = stopping || self.synced_at.elapsed() >= MARK_SYNC_INTERVAL;
        if !self.unsynced || !due || matches!(self.store, Store::Removed) {
            return;
        }
        let _ = if stopping {
            self.file.sync_data()
        } else {
            start_writeback(&self.file)
        };
        self.unsynced = false;
        self.synced_at = Instant::now();
    }
}

/// Removes the mark at `path` and syncs `dir`, so that no mark behind the log is found
/// after a crash.
fn remove(path: &Path, dir: &File) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => dir.sync_all(),
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
    /// is one), the higher of its two slots; a store cut short leaves the other slot.
    #[test]
    fn a_stored_mark_reads_back_mapped_or_written() {
        for mapped in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let dir_file = File::open(dir.path()).unwrap();
            let created = DurableMark::create(dir.path(), &dir_file, 3).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(3));
            let DurableMark { path, file, .. } = created;
            let mut mark = DurableMark::open_as(path.clone(), file, mapped);
            assert_eq!(matches!(mark.store, Store::Mapped(_)), mapped);
            mark.store(41).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(41), "mapped {mapped}");
            mark.store(42).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(42), "mapped {mapped}");
            // The slot of 42 torn: 41 is still there.
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[DURABLE_MARK_BYTES + 20] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(41), "mapped {mapped}");
            mark.store(43).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(43), "mapped {mapped}");
            assert!(mark.unsynced);
            mark.sync_if_due(false);
            assert!(mark.unsynced, "not due within {MARK_SYNC_INTERVAL:?}");
            mark.synced_at -= MARK_SYNC_INTERVAL;
            mark.sync_if_due(false);
            assert!(!mark.unsynced, "due");
            mark.store(44).unwrap();
            mark.sync_if_due(true);
            assert!(!mark.unsynced, "stopping");
            drop(mark);
            assert_eq!(read(dir.path()).unwrap(), Some(44), "mapped {mapped}");
        }
    }

    /// A mark that cannot be written is removed rather than left behind the log.
    #[test]
    fn a_mark_that_cannot_be_written_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        let DurableMark { path, .. } = DurableMark::create(dir.path(), &dir_file, 7).unwrap();
        // A handle that cannot write, as a failing disk answers.
        let read_only = File::open(&path).unwrap();
        let mut mark = DurableMark::open_as(path.clone(), read_only, false);
        assert_eq!(read(dir.path()).unwrap(), Some(7));
        mark.store(8).unwrap();
        assert!(matches!(mark.store, Store::Removed));
        assert!(!path.exists());
        assert_eq!(read(dir.path()).unwrap(), None);
        mark.store(9).unwrap();
        mark.sync_if_due(true);
        assert!(!path.exists());
    }
}
