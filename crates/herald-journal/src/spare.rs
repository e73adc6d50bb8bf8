//! Prepares the next segment file in the background, so a roll does not make
//! the appender wait for `fallocate` and `fsync` (tens of milliseconds on a
//! busy disk). The spare is a preallocated, synced file under a temporary name
//! without a header; at roll the appender writes its header and renames it into
//! place, and the sync thread fsyncs the directory before any record in it
//! counts as durable.
//!
//! When no spare is ready (or preparing it failed, e.g. ENOSPC) the roll
//! creates the segment itself, so errors surface on the append as before.
//!
//! A segment the journal let go is reused as a spare when it can be (up to
//! [`REUSED_MAX`] kept for that): renamed to a spare's name rather than deleted, so
//! the next segment is written over pages already in the page cache. One a reader
//! still maps (the stream's window, a delivery's body) is renamed aside likewise and
//! kept once the reader lets go, or deleted then if there is no room. A new file's pages
//! are new memory the kernel must find and the device must discard again when the file
//! is deleted; on a virtual machine that returns free memory to its host (free page
//! reporting) each new page is faulted in by the host on its first write. Reusing
//! segments' files cut the shards' file writes from 3.5 to 2.5 µs per delivery in a
//! closed loop of 1,000,000 events, and an open loop's engine CPU by ~6 % (`benches/
//! README.md`, "Segment files reused"). A reused file's segment is written as format version 2,
//! whose bytes after the last frame are the file's earlier frames, not zeros
//! ([`crate::format`]).
//!
//! The same thread deletes the segments a roll's compaction let go: unlinking a
//! segment file, dropping its mapping and syncing the directory cost tens of
//! milliseconds per segment on this kind of disk, which the appender (a shard,
//! with events waiting) should not pay. It deletes them oldest first, as the
//! appender would, so a crash part way still leaves a contiguous suffix; a
//! compaction the appender runs itself first waits for the queue to empty. A
//! segment it cannot delete stays first in the queue with every later one (none
//! is deleted before it, so the files on disk stay one contiguous run), and is
//! tried again when more are queued or the appender compacts; the appender's
//! own compaction reports the error.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use memmap2::{Mmap, UncheckedAdvice};

/// Spares are named `spare-<n>.seg.tmp` (removed on open like every
/// `*.seg.tmp`); a fresh name each time, so the preparer never reuses the path
/// of a spare the appender is renaming.
fn spare_path(dir: &std::path::Path, n: u64) -> PathBuf {
    dir.join(format!("spare-{n}.seg.tmp"))
}

/// Most segments kept for reuse besides the spare that is ready: the disk holds at
/// most this many files more than the journal's segments and its spare (and their
/// pages stay in the page cache, clean, which the kernel may reclaim). Four: a
/// checkpoint under steady load lets go of the segments written since the one before,
/// four at once in a 20 s open loop at 40,000 events/s with 64 MiB segments, and with
/// room for all of them the next cycle's segments are all written over reused files.
pub(crate) const REUSED_MAX: usize = 4;

/// A spare segment file: preallocated and synced (or a segment the journal let go,
/// renamed), under a temporary name, without a header of its own yet.
pub(crate) struct SpareFile {
    pub file: File,
    pub path: PathBuf,
    /// A segment's file used before: its bytes are its earlier frames, not zeros.
    pub reused: bool,
}

#[derive(Default)]
struct State {
    wanted: bool,
    ready: Option<io::Result<SpareFile>>,
    made: u64,
    /// Segments let go and renamed to spares' names (the directory synced since), to be
    /// the next spares; at most [`REUSED_MAX`].
    reusable: Vec<SpareFile>,
    shutdown: bool,
    /// Segments to delete, oldest first.
    doomed: Vec<Doomed>,
    /// Segments being deleted right now (taken from `doomed`).
    deleting: usize,
    /// A deletion failed and nothing asked since: the queue waits rather than retry
    /// the same failure without end.
    stalled: bool,
    /// Deletion rounds done (for the appender waiting on one).
    rounds: u64,
    /// The first deletion that failed since the appender last asked.
    failed: Option<(PathBuf, io::Error)>,
}

/// A segment the journal let go: its path, and its file and mapping, which are closed
/// and unmapped here rather than on the appender's thread.
pub(crate) struct Doomed {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub map: Arc<Mmap>,
    /// Set aside under a spare's name rather than unlinked while a reader held it (see
    /// [`Inner::set_aside`]): `path` is that name.
    pub set_aside: bool,
}

/// How much of a deleted segment's file [`Inner::release`] gives back at a time.
///
/// The last close of an unlinked segment frees its page cache and its blocks in one
/// piece: 6–12 ms for 64 MiB on an idle machine of this kind, 25–41 ms on one whose two
/// cores are busy, which a shard waiting for that core feels as a stall (p99 of its
/// deliveries ~40 ms over that half second at 31,000 events/s). Shrinking the file from
/// its end by this much at a time costs at most ~0.6 ms per step on an idle machine, and
/// the same in all.
const RELEASE_STEP_BYTES: u64 = 2 << 20;

/// Pause between two steps of a release, so that a shard waiting for the core runs
/// between them (unless the appender waits for the deletion itself).
const RELEASE_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// How much of a segment's mapping [`unmap_in_steps`] takes out of the page tables at a
/// time before it unmaps the rest.
///
/// Unmapping a 64 MiB segment whose pages a shard read (bodies sent from the mapping,
/// the stream's window) tears down its 16,384 page-table entries in one system call:
/// 2–20 ms each on this kind of machine, and a checkpoint that let go of four segments
/// per shard unmapped eight within ~25 ms, on threads that share the two cores with the
/// shards. 2 MiB (512 entries) takes ~0.1–0.2 ms; a 64 MiB segment is given back over
/// ~35 ms with the pauses between steps.
const UNMAP_STEP_BYTES: usize = 2 << 20;

/// How often the thread looks again at deleted segments a reader still held when they
/// were deleted, to give each back a step at a time once the reader lets go (rather than
/// leave the whole of it to the reader's last drop).
const LINGERING_CHECK: std::time::Duration = std::time::Duration::from_millis(20);

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    dir: PathBuf,
    /// The directory, synced after deletions.
    dir_file: Arc<File>,
    segment_bytes: u64,
    /// Someone waits for the deletions (the appender, or the journal's end): releases
    /// do not pause between steps.
    hurried: AtomicBool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Critical sections only move plain values: poison cannot leave them torn.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handle to the preparer thread.
pub(crate) struct Spare {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Spare {
    /// Starts the preparer, which makes a first spare at once.
    pub(crate) fn start(
        dir: PathBuf,
        dir_file: Arc<File>,
        segment_bytes: u64,
    ) -> io::Result<Spare> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                wanted: true,
                ..State::default()
            }),
            changed: Condvar::new(),
            dir,
            dir_file,
            segment_bytes,
            hurried: AtomicBool::new(false),
        });
        let thread_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name(format!("{}-spare", crate::THREAD_NAME_PREFIX))
            .spawn(move || thread_inner.run())?;
        Ok(Spare {
            inner,
            thread: Some(thread),
        })
    }

    /// Takes the ready spare, if any, and asks for the next one.
    pub(crate) fn take(&self) -> Option<SpareFile> {
        let mut st = lock(&self.inner.state);
        let taken = st.ready.take();
        st.wanted = true;
        self.inner.changed.notify_one();
        // A failed preparation is dropped: the roll creates the segment
        // itself and reports the error to the caller.
        taken.and_then(Result::ok)
    }

    /// Queues segments to delete in the background, oldest first.
    pub(crate) fn delete(&self, segments: Vec<Doomed>) {
        if segments.is_empty() {
            return;
        }
        let mut st = lock(&self.inner.state);
        st.doomed.extend(segments);
        st.stalled = false;
        self.inner.changed.notify_all();
    }

    /// Waits until every queued deletion is done (and the directory synced), trying
    /// again any that failed before; returns the first failure (those segments stay
    /// queued).
    pub(crate) fn deleted(&self) -> Result<(), (PathBuf, io::Error)> {
        self.inner.hurried.store(true, Ordering::Relaxed);
        let _calm = Calm(&self.inner.hurried);
        let mut st = lock(&self.inner.state);
        st.stalled = false;
        self.inner.changed.notify_all();
        let asked = st.rounds;
        // Done, or a round that began after this call failed (stalled again).
        while (!st.doomed.is_empty() || st.deleting > 0) && !(st.stalled && st.rounds > asked) {
            st = self
                .inner
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match st.failed.take() {
            Some(failed) => Err(failed),
            None => Ok(()),
        }
    }
}

impl Inner {
    fn run(&self) {
        // Deleted segments whose mapping a reader still held (see `release`).
        let mut lingering: Vec<Doomed> = Vec::new();
        loop {
            let mut st = lock(&self.state);
            let work_to_do = |st: &State| {
                st.shutdown
                    || (!st.doomed.is_empty() && !st.stalled)
                    || (st.wanted && st.ready.is_none())
            };
            while !work_to_do(&st) {
                if lingering.is_empty() {
                    st = self
                        .changed
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                st = self
                    .changed
                    .wait_timeout(st, LINGERING_CHECK)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                // A glance (the count may be stale); `unread` decides below.
                if lingering.iter().any(|l| Arc::strong_count(&l.map) == 1) {
                    drop(st);
                    for mut segment in std::mem::take(&mut lingering) {
                        if !unread(&mut segment.map) {
                            lingering.push(segment);
                            continue;
                        }
                        crate::journal::UNMAPPED_ELSEWHERE.fetch_add(1, Ordering::Relaxed);
                        let segment = match self.adopt(segment) {
                            Ok(()) => continue,
                            Err(segment) => segment,
                        };
                        self.release(segment, &mut lingering);
                    }
                    st = lock(&self.state);
                }
            }
            // Deletions first (they free space and mappings), also on the way out.
            if !st.doomed.is_empty() && !st.stalled {
                let doomed = std::mem::take(&mut st.doomed);
                st.deleting = doomed.len();
                drop(st);
                let (failed, kept) = self.remove(doomed, &mut lingering);
                let mut st = lock(&self.state);
                st.deleting = 0;
                st.rounds += 1;
                if let Some(failed) = failed {
                    // Oldest first: what is kept goes before anything queued since.
                    let later = std::mem::replace(&mut st.doomed, kept);
                    st.doomed.extend(later);
                    st.stalled = true;
                    st.failed.get_or_insert(failed);
                }
                self.changed.notify_all();
                continue;
            }
            if st.shutdown {
                // Segments set aside for readers are let go for good.
                for segment in lingering.iter().filter(|l| l.set_aside) {
                    let _ = std::fs::remove_file(&segment.path);
                }
                return;
            }
            st.wanted = false;
            if let Some(reused) = st.reusable.pop() {
                st.ready = Some(Ok(reused));
                continue;
            }
            st.made += 1;
            let path = spare_path(&self.dir, st.made);
            drop(st);
            let prepared = self.prepare(&path).map(|file| SpareFile {
                file,
                path,
                reused: false,
            });
            let mut st = lock(&self.state);
            st.ready = Some(prepared);
        }
    }

    /// Deletes `doomed` oldest first, then syncs the directory. At the first failure it
    /// stops, and returns the error with that segment and every later one, kept (so
    /// the files on disk stay one contiguous run). A segment nothing else holds is
    /// renamed to a spare's name instead, while fewer than [`REUSED_MAX`] wait (see
    /// [`Inner::reuse`]); it becomes reusable once the directory is synced.
    fn remove(
        &self,
        doomed: Vec<Doomed>,
        lingering: &mut Vec<Doomed>,
    ) -> (Option<(PathBuf, io::Error)>, Vec<Doomed>) {
        let mut removed = 0;
        let mut failed = None;
        let mut kept = Vec::new();
        let mut renamed: Vec<SpareFile> = Vec::new();
        let mut set_aside: Vec<Doomed> = Vec::new();
        for segment in doomed {
            if failed.is_some() {
                kept.push(segment);
                continue;
            }
            let segment = match self.reuse(segment, renamed.len()) {
                Ok(spare) => {
                    removed += 1;
                    renamed.push(spare);
                    continue;
                }
                Err(segment) => segment,
            };
            let segment = match self.set_aside(segment) {
                Ok(aside) => {
                    removed += 1;
                    set_aside.push(aside);
                    continue;
                }
                Err(segment) => segment,
            };
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {
                    removed += 1;
                    // The mapping and the file are closed here, not on the appender's
                    // thread.
                    self.release(segment, lingering);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => drop(segment),
                Err(error) => {
                    failed = Some((segment.path.clone(), error));
                    kept.push(segment);
                }
            }
        }
        if removed > 0 {
            if let Err(error) = self.dir_file.sync_all() {
                failed.get_or_insert((self.dir.clone(), error));
                // Not known to be renamed on disk: a crash could bring a segment back
                // under its old name, so its file is not written over. Deleted instead
                // (the segment is let go either way).
                for spare in renamed.drain(..) {
                    let _ = std::fs::remove_file(&spare.path);
                }
                for aside in &mut set_aside {
                    let _ = std::fs::remove_file(&aside.path);
                    aside.set_aside = false;
                }
            }
        }
        lock(&self.state).reusable.extend(renamed);
        lingering.extend(set_aside);
        (failed, kept)
    }

    /// A segment let go that a reader still maps: renamed to a spare's name rather than
    /// unlinked (an unlinked file cannot be named again), so that it can be reused once
    /// the reader lets go ([`Inner::adopt`]), as the stream's window and live deliveries
    /// hold segments for a few milliseconds after the journal lets them go. Only one of
    /// the current segment length whose name is still its own; otherwise given back to
    /// be deleted.
    fn set_aside(&self, mut segment: Doomed) -> Result<Doomed, Doomed> {
        if unread(&mut segment.map)
            || segment.map.len() as u64 != self.segment_bytes
            || !names_file(&segment.path, &segment.file)
        {
            return Err(segment);
        }
        let path = {
            let mut st = lock(&self.state);
            st.made += 1;
            spare_path(&self.dir, st.made)
        };
        if std::fs::rename(&segment.path, &path).is_err() {
            return Err(segment);
        }
        Ok(Doomed {
            path,
            set_aside: true,
            ..segment
        })
    }

    /// A segment set aside for a reader ([`Inner::set_aside`]) that no reader holds any
    /// more: kept to be reused when nothing else holds its file and fewer than
    /// [`REUSED_MAX`] wait; otherwise unlinked and given back to be released.
    fn adopt(&self, segment: Doomed) -> Result<(), Doomed> {
        if !segment.set_aside {
            return Err(segment);
        }
        let Doomed {
            path, file, map, ..
        } = segment;
        let room = lock(&self.state).reusable.len() < REUSED_MAX;
        let file = match Arc::try_unwrap(file) {
            Ok(file) if room => {
                unmap_in_steps(map, self.pause());
                lock(&self.state).reusable.push(SpareFile {
                    file,
                    path,
                    reused: true,
                });
                return Ok(());
            }
            Ok(file) => Arc::new(file),
            Err(file) => file,
        };
        // Not kept: unlinked, and released like any other segment let go.
        let _ = std::fs::remove_file(&path);
        Err(Doomed {
            path,
            file,
            map,
            set_aside: false,
        })
    }

    /// Renames a segment the journal let go to a spare's name, to be written over
    /// rather than deleted, when no reader maps it any more, no other thread holds its
    /// file, it has the length of a new segment, and fewer than [`REUSED_MAX`] wait
    /// (`pending` of them renamed in this round). Otherwise, or if the rename fails,
    /// gives the segment back to be deleted.
    fn reuse(&self, segment: Doomed, pending: usize) -> Result<SpareFile, Doomed> {
        let Doomed {
            path: old,
            file,
            mut map,
            set_aside,
        } = segment;
        if !unread(&mut map) || map.len() as u64 != self.segment_bytes {
            return Err(Doomed {
                path: old,
                file,
                map,
                set_aside,
            });
        }
        // Nothing can take a new hold of a segment let go: a file held nowhere else now
        // stays so.
        let file = match Arc::try_unwrap(file) {
            Ok(file) => file,
            Err(file) => {
                return Err(Doomed {
                    path: old,
                    file,
                    map,
                    set_aside,
                })
            }
        };
        let path = {
            let mut st = lock(&self.state);
            if st.reusable.len() + pending >= REUSED_MAX {
                None
            } else {
                st.made += 1;
                Some(spare_path(&self.dir, st.made))
            }
        };
        match path {
            Some(path) if names_file(&old, &file) && std::fs::rename(&old, &path).is_ok() => {
                unmap_in_steps(map, self.pause());
                Ok(SpareFile {
                    file,
                    path,
                    reused: true,
                })
            }
            _ => Err(Doomed {
                path: old,
                file: Arc::new(file),
                map,
                set_aside,
            }),
        }
    }

    /// Closes a deleted segment's mapping and file. When no reader holds the mapping any
    /// more, the file is first shrunk a step at a time ([`RELEASE_STEP_BYTES`]), so that
    /// its last close has nothing left to free. A step that fails leaves the rest to
    /// that close, as before. A segment a reader still holds goes to `lingering`, and is
    /// released once the reader lets go ([`LINGERING_CHECK`]); it is never shrunk under a
    /// reader, whose reads would then fault.
    fn release(&self, mut segment: Doomed, lingering: &mut Vec<Doomed>) {
        if !unread(&mut segment.map) {
            lingering.push(segment);
            return;
        }
        let Doomed { mut file, map, .. } = segment;
        let len = map.len() as u64;
        if Arc::get_mut(&mut file).is_none() {
            // Still open elsewhere (the sync thread, briefly): closed there last.
            return;
        }
        unmap_in_steps(map, self.pause());
        let mut end = len;
        while end > 0 {
            end = end.saturating_sub(RELEASE_STEP_BYTES);
            if file.set_len(end).is_err() {
                break;
            }
            if end > 0 && self.pause() {
                std::thread::sleep(RELEASE_PAUSE);
            }
        }
        drop(file);
    }

    /// Whether a release pauses between its steps: not while someone waits for it.
    fn pause(&self) -> bool {
        !self.hurried.load(Ordering::Relaxed)
    }

    fn prepare(&self, path: &std::path::Path) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        let result = rustix::fs::fallocate(
            &file,
            rustix::fs::FallocateFlags::empty(),
            0,
            self.segment_bytes,
        )
        .map_err(io::Error::from)
        .and_then(|()| file.sync_all());
        if let Err(e) = result {
            // Give the space back at once: the disk may be full.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(file)
    }
}

/// Unmaps a segment's mapping, taking its pages out of the page tables a step at a time
/// first ([`give_back_pages`]), so that the unmapping itself has nothing left to tear
/// down. A mapping someone else still holds is only let go here: its last holder unmaps
/// it.
pub(crate) fn unmap_in_steps(map: Arc<Mmap>, pause: bool) {
    if let Ok(map) = Arc::try_unwrap(map) {
        give_back_pages(&map, pause);
    }
}

/// Takes `map`'s pages out of this process's page tables [`UNMAP_STEP_BYTES`] at a time
/// (`pause`: [`RELEASE_PAUSE`] between steps). They stay in the page cache: a reused
/// segment's file is written over them next, and a read of the mapping faults them back
/// in. Stops at the first step that fails (the unmapping then does the rest at once).
#[allow(unsafe_code)]
fn give_back_pages(map: &Mmap, pause: bool) {
    let len = map.len();
    let mut at = 0;
    while at < len {
        let step = UNMAP_STEP_BYTES.min(len - at);
        // SAFETY: a shared, read-only mapping of a file: after `MADV_DONTNEED` a read
        // faults the file's page back in (zeros are a private mapping's behaviour), so
        // a reference into it, were there one, would still see the same bytes.
        if unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, at, step) }.is_err() {
            break;
        }
        at += step;
        if at < len && pause {
            std::thread::sleep(RELEASE_PAUSE);
        }
    }
}

/// Whether this thread holds the only reference to a segment's mapping: no reader maps
/// it any more. `Arc::get_mut` rather than `Arc::strong_count`, whose load is relaxed:
/// it reads the count with Acquire ordering, so that a reader's last use of the mapping
/// (before its drop, a Release) happens before whatever this thread does to the file
/// next: rename it to be written over, or shrink it.
fn unread(map: &mut Arc<Mmap>) -> bool {
    Arc::get_mut(map).is_some()
}

/// Whether `path` still names `file` (renaming whatever else took the name, a directory
/// say, would leave the segment under it).
fn names_file(path: &std::path::Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(named), Ok(ours)) => {
            named.is_file() && named.dev() == ours.dev() && named.ino() == ours.ino()
        }
        _ => false,
    }
}

/// Clears the hurry flag when the wait for deletions ends, however it ends.
struct Calm<'a>(&'a AtomicBool);

impl Drop for Calm<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.inner.hurried.store(true, Ordering::Relaxed);
        lock(&self.inner.state).shutdown = true;
        self.inner.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic in the preparer has already been reported; nothing to add.
            let _ = thread.join();
        }
        let mut st = lock(&self.inner.state);
        if let Some(Ok(spare)) = st.ready.take() {
            let _ = std::fs::remove_file(spare.path);
        }
        for spare in st.reusable.drain(..) {
            let _ = std::fs::remove_file(spare.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LEN: u64 = 3 * RELEASE_STEP_BYTES + 4096;

    /// A written segment-like file, its mapping, and a second handle on it that sees
    /// the file's length after it is unlinked.
    fn doomed(dir: &std::path::Path) -> (Doomed, File) {
        doomed_of(dir, "00000000000000000001.seg", LEN)
    }

    /// [`doomed`] named `name`, `len` bytes long.
    fn doomed_of(dir: &std::path::Path, name: &str, len: u64) -> (Doomed, File) {
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let block = vec![0xa5u8; 4096];
        for _ in 0..len / 4096 {
            file.write_all(&block).unwrap();
        }
        file.sync_all().unwrap();
        // SAFETY: a file of this test's own, not changed while mapped.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.unwrap();
        let watch = File::open(&path).unwrap();
        let doomed = Doomed {
            path,
            file: Arc::new(file),
            map: Arc::new(map),
            set_aside: false,
        };
        (doomed, watch)
    }

    /// Segment length of [`spare`]'s journal (not [`LEN`]: those segments are deleted).
    const SEGMENT_BYTES: u64 = 1 << 20;

    fn spare(dir: &std::path::Path) -> Spare {
        let dir_file = Arc::new(File::open(dir).unwrap());
        Spare::start(dir.to_path_buf(), dir_file, SEGMENT_BYTES).unwrap()
    }

    /// Takes the next spare (asking for the one after), waiting for the thread to make it.
    fn next_spare(spare: &Spare) -> SpareFile {
        let waited = std::time::Instant::now();
        loop {
            if let Some(ready) = spare.take() {
                return ready;
            }
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(10),
                "no spare made"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn inode(file: &File) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap())
    }

    /// Resident bytes of the mapping that starts at `addr`, from `/proc/self/smaps`.
    fn resident(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        while let Some(line) = lines.next() {
            let start = line.split('-').next().unwrap_or("");
            if usize::from_str_radix(start, 16).ok() != Some(addr) {
                continue;
            }
            for field in lines.by_ref() {
                if let Some(kb) = field.strip_prefix("Rss:") {
                    return kb
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap()
                        * 1024;
                }
            }
        }
        panic!("no mapping at {addr:#x}");
    }

    #[test]
    fn pages_given_back_leave_the_mapping_and_read_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let len = 3 * UNMAP_STEP_BYTES + 4096;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: the file is this test's own and nothing changes it while mapped.
        let map = unsafe { Mmap::map(&file) }.unwrap();
        let sum: u64 = map.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        assert!(sum > 0);
        let addr = map.as_ptr() as usize;
        assert_eq!(resident(addr), len as u64, "every page read is mapped");
        give_back_pages(&map, false);
        assert_eq!(resident(addr), 0, "no page is left in the page tables");
        assert!(
            map[..] == bytes[..],
            "the file's bytes read back, not zeros"
        );
    }

    #[test]
    fn segments_let_go_become_the_next_spares_up_to_a_bound_and_the_rest_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let spare = spare(dir.path());
        // The first spare, made at start, is a new file.
        assert!(!next_spare(&spare).reused);
        let names: Vec<String> = (1..=REUSED_MAX + 1).map(|i| format!("{i}.seg")).collect();
        let mut inodes = Vec::new();
        let mut doomed = Vec::new();
        for name in &names {
            let (segment, watch) = doomed_of(dir.path(), name, SEGMENT_BYTES);
            inodes.push(inode(&watch));
            doomed.push(segment);
        }
        spare.delete(doomed);
        spare.deleted().unwrap();
        for name in &names {
            assert!(
                !dir.path().join(name).exists(),
                "{name} is gone by its name"
            );
        }
        // The next spares are the first REUSED_MAX segments' files, under spares' names
        // (after at most one new file the thread had made since the first was taken);
        // the last was deleted.
        let mut reused = Vec::new();
        let mut new_files = 0;
        while reused.len() < REUSED_MAX {
            let next = next_spare(&spare);
            assert!(next.path.exists());
            if next.reused {
                reused.push(inode(&next.file));
            } else {
                new_files += 1;
                assert!(new_files <= 1 && reused.is_empty(), "{:?}", next.path);
            }
        }
        reused.sort();
        let mut expected = inodes[..REUSED_MAX].to_vec();
        expected.sort();
        assert_eq!(reused, expected);
        assert!(!next_spare(&spare).reused, "then new files again");
    }

    #[test]
    fn a_segment_let_go_while_read_is_reused_once_let_go_and_one_of_another_length_never() {
        let dir = tempfile::tempdir().unwrap();
        let spare = spare(dir.path());
        next_spare(&spare);
        // The spare made meanwhile (a new file) is taken too.
        next_spare(&spare);
        let (read, watch) = doomed_of(dir.path(), "1.seg", SEGMENT_BYTES);
        let held = Arc::clone(&read.map);
        let (other_length, _) = doomed_of(dir.path(), "2.seg", SEGMENT_BYTES + 4096);
        spare.delete(vec![read, other_length]);
        spare.deleted().unwrap();
        assert!(!dir.path().join("1.seg").exists());
        assert!(!dir.path().join("2.seg").exists());
        let st = lock(&spare.inner.state);
        assert!(
            st.reusable.is_empty(),
            "neither is kept for reuse while read"
        );
        assert!(st
            .ready
            .as_ref()
            .is_none_or(|r| !r.as_ref().unwrap().reused));
        drop(st);
        // Past a few looks of the thread at what readers hold: the reader's mapping is
        // left whole, the file set aside under a spare's name.
        std::thread::sleep(LINGERING_CHECK * 3);
        assert!(held.iter().all(|&b| b == 0xa5));
        assert!(lock(&spare.inner.state).reusable.is_empty());
        drop(held);
        // Once let go, it is kept for reuse: the next spare but one (one new file may
        // have been made first).
        let waited = std::time::Instant::now();
        while {
            let st = lock(&spare.inner.state);
            st.reusable.is_empty()
                && st
                    .ready
                    .as_ref()
                    .is_none_or(|r| !r.as_ref().unwrap().reused)
        } {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(10),
                "not kept for reuse once let go"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut spares = Vec::new();
        while spares.len() < 2 && !spares.iter().any(|s: &SpareFile| s.reused) {
            spares.push(next_spare(&spare));
        }
        let reused = spares
            .iter()
            .find(|s| s.reused)
            .expect("reused once let go");
        assert_eq!(inode(&reused.file), inode(&watch));
        assert_eq!(
            watch.metadata().unwrap().len(),
            SEGMENT_BYTES,
            "whole, not released"
        );
    }

    #[test]
    fn a_deleted_segment_nobody_reads_is_given_back_before_its_last_close() {
        let dir = tempfile::tempdir().unwrap();
        let (doomed, watch) = doomed(dir.path());
        let path = doomed.path.clone();
        let spare = spare(dir.path());
        spare.delete(vec![doomed]);
        spare.deleted().unwrap();
        assert!(!path.exists());
        assert_eq!(
            watch.metadata().unwrap().len(),
            0,
            "the file was shrunk before the last close, not freed by it"
        );
    }

    #[test]
    fn a_deleted_segment_a_reader_holds_is_left_whole_and_given_back_once_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let (doomed, watch) = doomed(dir.path());
        let held = Arc::clone(&doomed.map);
        let path = doomed.path.clone();
        let spare = spare(dir.path());
        spare.delete(vec![doomed]);
        spare.deleted().unwrap();
        assert!(!path.exists());
        // Past a few looks of the thread at what readers hold.
        std::thread::sleep(LINGERING_CHECK * 3);
        assert_eq!(watch.metadata().unwrap().len(), LEN);
        // Shrinking it under the hold would fault this read.
        assert!(held.iter().all(|&b| b == 0xa5));
        drop(held);
        let waited = std::time::Instant::now();
        while watch.metadata().unwrap().len() != 0 {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(10),
                "the segment was not given back once its reader let go"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
