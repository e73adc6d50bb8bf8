//! Group commit: a background thread makes appended records durable in
//! batches while the appender keeps writing.
//!
//! The appender publishes `written_seq` after its staged frames are written to
//! the segment file (`pwrite`; see `Journal::commit`). The sync thread reads it
//! under the state lock, takes the files that may hold unsynced frames up to
//! it, releases the lock, `fdatasync`s them and then publishes `durable_seq`.
//! Writing with `pwrite` rather than storing through a writable mapping keeps
//! writeback to the pages that changed (a dirtied mapping was written back in
//! whole large folios, many times the bytes appended) and spares the TLB
//! flushes of write-protecting mapped pages after every sync.
//!
//! Records committed lazily (nobody waits for them) wait a longer delay, unless an
//! urgent commit follows: the sync thread then syncs everything written.
//!
//! The appender takes the state lock only to wake an idle sync thread, every
//! `group_records_max` records, on roll, on explicit `sync` and when an urgent commit
//! finds the thread waiting out the lazy delay; it never waits for a sync in progress
//! unless it asked to.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::JournalError;
use crate::mark::DurableMark;

/// Callback told the new durable sequence number.
pub(crate) type Notify = Arc<dyn Fn(u64) + Send + Sync>;

/// Samples kept for [`SyncStats`]: bounded so a long run does not grow memory.
pub(crate) const SYNC_SAMPLES_MAX: usize = 1 << 16;

pub(crate) struct SyncState {
    /// Sealed segment files with frames not yet synced, oldest first.
    sealed: Vec<Arc<File>>,
    /// The segment being appended to.
    active: Arc<File>,
    /// The journal directory.
    dir: Arc<File>,
    /// New segments still under their temporary names, oldest first, as
    /// (temporary, final) paths. A segment gets its final name only after
    /// every segment before it is synced, so after a power loss no named
    /// segment follows a torn one: a torn frame is always in the last segment.
    renames: Vec<(PathBuf, PathBuf)>,
    /// An explicit sync was asked for.
    requested: bool,
    /// The journal is being dropped: sync what is written, then exit.
    shutdown: bool,
    /// Set once a sync failed: the message, reported to every later caller.
    failed: Option<String>,
    /// Duration of recent syncs in microseconds (a ring of `SYNC_SAMPLES_MAX`).
    samples_us: Vec<u64>,
    samples_next: usize,
    syncs: u64,
}

pub(crate) struct Shared {
    pub(crate) written_seq: AtomicU64,
    pub(crate) durable_seq: AtomicU64,
    /// The last record written by an urgent commit (`Journal::commit`): records after it
    /// were committed lazily (`Journal::commit_lazy`) and may wait the lazy delay.
    /// Written by the appender only.
    urgent_seq: AtomicU64,
    /// The sync thread is (about to be) waiting for work with nothing pending.
    idle: AtomicBool,
    /// The sync thread is (about to be) waiting out the lazy delay: an urgent commit
    /// wakes it.
    lazy_wait: AtomicBool,
    failed: AtomicBool,
    state: Mutex<SyncState>,
    wake: Condvar,
    durable_lock: Mutex<()>,
    durable_changed: Condvar,
    notify: Mutex<Option<Notify>>,
    group_records_max: u64,
    group_delay: Duration,
    lazy_delay: Duration,
}

/// Leaves [`crate::format::SYNC_FAILED_FILE`] in the journal's directory `dir`, saying
/// why. Best effort: on a disk that fails every write this may fail too, and there is
/// nothing better to do (the journal has failed already).
fn leave_failure_mark(dir: &File, message: &str) {
    use rustix::fs::{Mode, OFlags};
    let opened = rustix::fs::openat(
        dir,
        crate::format::SYNC_FAILED_FILE,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    );
    if let Ok(fd) = opened {
        let _ = File::from(fd).write_all(message.as_bytes());
    }
}

/// Locks, ignoring poison: every critical section here leaves the state
/// consistent (plain field stores), so a panic elsewhere does not invalidate it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        active: Arc<File>,
        dir: Arc<File>,
        last_seq: u64,
        group_records_max: u64,
        group_delay: Duration,
        lazy_delay: Duration,
    ) -> Self {
        Self {
            written_seq: AtomicU64::new(last_seq),
            durable_seq: AtomicU64::new(last_seq),
            urgent_seq: AtomicU64::new(last_seq),
            idle: AtomicBool::new(false),
            lazy_wait: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            state: Mutex::new(SyncState {
                sealed: Vec::new(),
                active,
                dir,
                renames: Vec::new(),
                requested: false,
                shutdown: false,
                failed: None,
                samples_us: Vec::new(),
                samples_next: 0,
                syncs: 0,
            }),
            wake: Condvar::new(),
            durable_lock: Mutex::new(()),
            durable_changed: Condvar::new(),
            notify: Mutex::new(None),
            group_records_max,
            group_delay,
            lazy_delay,
        }
    }

    /// Called by the appender once `records` more frames, up to `seq`, are
    /// written to the segment file; `urgent` when a caller waits for them. `since_kick`
    /// counts records since the last wake-up sent.
    pub(crate) fn published(&self, seq: u64, records: u64, urgent: bool, since_kick: &mut u64) {
        // SeqCst pairs with the sync thread's `idle` store then `written_seq`
        // load: one of the two sides sees the other, so no wake-up is lost. Likewise
        // `urgent_seq` with `lazy_wait`.
        self.written_seq.store(seq, Ordering::SeqCst);
        if urgent {
            self.urgent_seq.store(seq, Ordering::SeqCst);
        }
        *since_kick += records;
        if *since_kick >= self.group_records_max
            || self.idle.load(Ordering::SeqCst)
            || (urgent && self.lazy_wait.load(Ordering::SeqCst))
        {
            *since_kick = 0;
            let _guard = lock(&self.state);
            self.wake.notify_one();
        }
    }

    /// A caller now waits for every record written so far: records committed lazily
    /// are synced within the group delay, not the lazy one. Called by the appender.
    pub(crate) fn urge(&self) {
        let written = self.written_seq.load(Ordering::Acquire);
        if self.urgent_seq.load(Ordering::Relaxed) >= written {
            return;
        }
        self.urgent_seq.store(written, Ordering::SeqCst);
        if self.lazy_wait.load(Ordering::SeqCst) {
            let _guard = lock(&self.state);
            self.wake.notify_one();
        }
    }

    /// The appender moved to a new segment, still under the temporary name
    /// `rename.0`: the next sync syncs the old one, then renames the new one
    /// to `rename.1` and syncs the directory before publishing.
    pub(crate) fn rolled(&self, new_active: Arc<File>, rename: (PathBuf, PathBuf)) {
        let mut st = lock(&self.state);
        let old = std::mem::replace(&mut st.active, new_active);
        st.sealed.push(old);
        st.renames.push(rename);
    }

    /// The appender could not write committed frames: fail the journal as a
    /// failed sync does, and wake anyone waiting for durability.
    pub(crate) fn fail(&self, message: String) {
        let mut st = lock(&self.state);
        let first = st.failed.is_none();
        if first {
            leave_failure_mark(&st.dir, &message);
        }
        st.failed.get_or_insert(message);
        self.failed.store(true, Ordering::Release);
        drop(st);
        {
            let _g = lock(&self.durable_lock);
            self.durable_changed.notify_all();
        }
        // The notify's owner may be parked until the next durable advance, which will
        // not come: it learns of the failure now (e.g. a shard answers its waiting
        // publishers with the error instead of at its next idle wake-up).
        if first {
            let notify = lock(&self.notify).clone();
            if let Some(f) = notify {
                f(self.durable_seq.load(Ordering::Acquire));
            }
        }
    }

    pub(crate) fn check_failed(&self) -> Result<(), JournalError> {
        if self.failed.load(Ordering::Acquire) {
            let st = lock(&self.state);
            return Err(JournalError::SyncFailed {
                durable_seq: self.durable_seq.load(Ordering::Acquire),
                message: st.failed.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Asks for an immediate sync.
    pub(crate) fn request_sync(&self) {
        let mut st = lock(&self.state);
        st.requested = true;
        self.wake.notify_one();
    }

    pub(crate) fn set_notify(&self, f: Option<Notify>) {
        *lock(&self.notify) = f;
    }

    /// Blocks until `seq` is durable, the journal failed, or `timeout` passed
    /// (`None` waits without limit).
    pub(crate) fn wait_durable(
        &self,
        seq: u64,
        timeout: Option<Duration>,
    ) -> Result<u64, JournalError> {
        let written = self.written_seq.load(Ordering::Acquire);
        if seq > written {
            return Err(JournalError::NotAppended {
                seq,
                last_seq: written,
            });
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = lock(&self.durable_lock);
        loop {
            let durable = self.durable_seq.load(Ordering::Acquire);
            if durable >= seq {
                return Ok(durable);
            }
            self.check_failed()?;
            match deadline {
                None => {
                    guard = self
                        .durable_changed
                        .wait(guard)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(JournalError::DurableTimeout {
                            seq,
                            durable_seq: durable,
                            timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
                        });
                    }
                    guard = self
                        .durable_changed
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    pub(crate) fn shutdown(&self) {
        let mut st = lock(&self.state);
        st.shutdown = true;
        self.wake.notify_one();
    }

    pub(crate) fn stats(&self) -> SyncStats {
        let st = lock(&self.state);
        let mut sorted = st.samples_us.clone();
        sorted.sort_unstable();
        let pick = |q: f64| -> u64 {
            if sorted.is_empty() {
                0
            } else {
                sorted[((sorted.len() - 1) as f64 * q).round() as usize]
            }
        };
        SyncStats {
            syncs: st.syncs,
            p50_us: pick(0.5),
            p99_us: pick(0.99),
            max_us: sorted.last().copied().unwrap_or(0),
        }
    }

    /// Takes the recorded sync durations (microseconds), oldest order not kept.
    pub(crate) fn take_samples(&self) -> Vec<u64> {
        let mut st = lock(&self.state);
        st.samples_next = 0;
        std::mem::take(&mut st.samples_us)
    }

    /// The sync thread's loop. `mark`: the durable mark (`format::DURABLE_MARK_FILE`),
    /// stored after each sync, before what it made durable is published.
    pub(crate) fn run(&self, mut mark: DurableMark) {
        let mut batch_start = Instant::now();
        loop {
            let mut st = lock(&self.state);
            // Wait until there is something to sync and a reason to sync it now.
            loop {
                let durable = self.durable_seq.load(Ordering::Acquire);
                let written = self.written_seq.load(Ordering::SeqCst);
                let pending = written - durable;
                if pending == 0 {
                    if st.shutdown {
                        drop(st);
                        // The last mark reaches the disk after the last frames.
                        mark.sync_if_due(true);
                        return;
                    }
                    if st.requested {
                        // Nothing to do: the requester sees durable >= its seq.
                        st.requested = false;
                    }
                    self.idle.store(true, Ordering::SeqCst);
                    if self.written_seq.load(Ordering::SeqCst) == durable {
                        st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                    }
                    self.idle.store(false, Ordering::SeqCst);
                    // The window stays the last sync's (or the journal's open): records
                    // that arrive after a pause of a group delay or more are synced at
                    // once, not a group delay later, and syncs still start at most one
                    // group delay apart. A closed loop of callers (each waiting for its
                    // last record before appending the next) then pays the longer of a
                    // sync and a group delay per round, not their sum.
                    continue;
                }
                if st.requested || st.shutdown || pending >= self.group_records_max {
                    break;
                }
                // Records a caller waits for are synced a group delay after the last
                // sync began; records committed lazily wait the lazy delay, so that a
                // shard whose records are all outcomes pays a sync's fixed cost (the
                // flush, the mark, two wake-ups) every 10 ms rather than every 1 ms.
                let urgent = self.urgent_seq.load(Ordering::SeqCst) > durable;
                let deadline = batch_start
                    + if urgent {
                        self.group_delay
                    } else {
                        self.lazy_delay
                    };
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                if !urgent {
                    // Dekker with `published`/`urge`: either they see the flag and wake
                    // this thread (under the lock it holds until it waits), or this load
                    // sees their urgent commit.
                    self.lazy_wait.store(true, Ordering::SeqCst);
                    if self.urgent_seq.load(Ordering::SeqCst) > durable {
                        self.lazy_wait.store(false, Ordering::SeqCst);
                        continue;
                    }
                }
                st = self
                    .wake
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                self.lazy_wait.store(false, Ordering::SeqCst);
            }
            // Under the lock: every frame up to `target` is in `sealed` or `active`.
            let target = self.written_seq.load(Ordering::SeqCst);
            let mut files = std::mem::take(&mut st.sealed);
            files.push(Arc::clone(&st.active));
            let renames = std::mem::take(&mut st.renames);
            let dir = Arc::clone(&st.dir);
            st.requested = false;
            drop(st);

            let started = Instant::now();
            batch_start = started;
            let mut result = Ok(());
            for file in &files {
                if let Err(e) = file.sync_data() {
                    result = Err(format!("fdatasync: {e}"));
                    break;
                }
            }
            if result.is_ok() && !renames.is_empty() {
                // Every file above is synced: the new names may now appear.
                for (from, to) in &renames {
                    if let Err(e) = std::fs::rename(from, to) {
                        result = Err(format!("rename {}: {e}", from.display()));
                        break;
                    }
                }
                if result.is_ok() {
                    if let Err(e) = dir.sync_all() {
                        result = Err(format!("fsync of the journal directory: {e}"));
                    }
                }
            }
            if result.is_ok() {
                // Before anything up to `target` is acknowledged, so that recovery never
                // takes damage to an acknowledged frame for a sync cut short. Not synced
                // here: the page cache keeps it across a crash of the process, and only a
                // power loss can leave it behind (see `format::torn_tail_end`).
                result = mark.store(target);
            }
            let elapsed_us = started.elapsed().as_micros() as u64;
            drop(files);

            if let Err(e) = result {
                self.fail(e);
                return;
            }
            {
                let mut st = lock(&self.state);
                st.syncs += 1;
                if st.samples_us.len() < SYNC_SAMPLES_MAX {
                    st.samples_us.push(elapsed_us);
                } else {
                    let i = st.samples_next;
                    st.samples_us[i] = elapsed_us;
                }
                st.samples_next = (st.samples_next + 1) % SYNC_SAMPLES_MAX;
            }
            let previous = self.durable_seq.swap(target, Ordering::AcqRel);
            // Durability invariant: the durable sequence never goes backwards.
            assert!(
                previous <= target,
                "durable_seq went backwards: {previous} -> {target}"
            );
            {
                let _g = lock(&self.durable_lock);
                self.durable_changed.notify_all();
            }
            // Cloned out so the callback runs with no journal lock held.
            let notify = lock(&self.notify).clone();
            if let Some(f) = notify {
                if previous < target {
                    f(target);
                }
            }
            // After the acknowledgement: bounds how far behind a power loss can leave it.
            mark.sync_if_due(false);
        }
    }
}

/// Sync latency summary (fdatasync of one batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Syncs completed.
    pub syncs: u64,
    /// Median sync duration over the recent samples, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// Slowest recent sync, microseconds.
    pub max_us: u64,
}

/// A cloneable, thread-safe view of durability for other threads (for example
/// a foreign thread blocking until its record is durable).
#[derive(Clone)]
pub struct DurableHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for DurableHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableHandle")
            .field("durable_seq", &self.durable_seq())
            .finish()
    }
}

impl DurableHandle {
    /// Highest sequence number known durable (0 when none).
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// Blocks until `seq` is durable or `timeout` passes; returns the durable
    /// sequence number. Fails if `seq` was not appended yet, or a sync failed.
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> Result<u64, JournalError> {
        self.shared.wait_durable(seq, Some(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits far longer than any sync takes, yet finitely: a test whose wake-up was lost
    /// fails here instead of hanging.
    const PATIENCE: Duration = Duration::from_secs(60);

    /// A sync thread over a scratch file, with no group delay and a lazy delay of an
    /// hour: a lazily committed record is synced only when something else asks.
    struct Thread {
        shared: Arc<Shared>,
        handle: Option<std::thread::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl Thread {
        fn start(group_records_max: u64) -> Thread {
            let dir = tempfile::tempdir().unwrap();
            let dir_file = File::open(dir.path()).unwrap();
            let active = File::create(dir.path().join("segment")).unwrap();
            let mark = DurableMark::create(dir.path(), &dir_file, 0).unwrap();
            let shared = Arc::new(Shared::new(
                Arc::new(active),
                Arc::new(dir_file),
                0,
                group_records_max,
                Duration::ZERO,
                Duration::from_secs(3600),
            ));
            let running = Arc::clone(&shared);
            let handle = std::thread::spawn(move || running.run(mark));
            Thread {
                shared,
                handle: Some(handle),
                _dir: dir,
            }
        }

        fn durable_within_patience(&self, seq: u64) -> u64 {
            self.shared
                .wait_durable(seq, Some(PATIENCE))
                .unwrap_or_else(|e| panic!("record {seq} not made durable: {e}"))
        }
    }

    impl Drop for Thread {
        fn drop(&mut self) {
            self.shared.shutdown();
            if let Some(handle) = self.handle.take() {
                handle.join().unwrap();
            }
        }
    }

    /// A lazily committed record waits (here an hour); an urgent commit after it, or an
    /// urge with nothing new, wakes the waiting thread and both are synced together.
    #[test]
    fn an_urgent_commit_syncs_the_lazy_records_before_it() {
        let thread = Thread::start(256);
        let mut since_kick = 0;
        thread.shared.published(1, 1, false, &mut since_kick);
        // The thread has had ample time to sync it, were the record not lazy.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(thread.shared.durable_seq.load(Ordering::Acquire), 0);
        thread.shared.published(2, 1, true, &mut since_kick);
        assert!(thread.durable_within_patience(2) >= 2);

        // Lazy again; then a caller waits for it without appending anything.
        thread.shared.published(3, 1, false, &mut since_kick);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(thread.shared.durable_seq.load(Ordering::Acquire), 2);
        thread.shared.urge();
        assert_eq!(thread.durable_within_patience(3), 3);
        assert_eq!(thread.shared.stats().syncs, 2, "one sync per urgent commit");
        // Nothing left to urge: no sync for nothing.
        thread.shared.urge();
        assert_eq!(thread.shared.urgent_seq.load(Ordering::Acquire), 3);
    }

    /// Lazy records still count towards `group_records_max`: enough of them are synced
    /// without any urgent commit.
    #[test]
    fn lazy_records_are_synced_once_a_group_is_full() {
        let thread = Thread::start(4);
        let mut since_kick = 0;
        for seq in 1..=4 {
            thread.shared.published(seq, 1, false, &mut since_kick);
        }
        assert_eq!(thread.durable_within_patience(4), 4);
    }

    /// An explicit sync (what `Journal::sync` asks) takes lazy records with it.
    #[test]
    fn a_requested_sync_takes_the_lazy_records() {
        let thread = Thread::start(256);
        let mut since_kick = 0;
        thread.shared.published(1, 1, false, &mut since_kick);
        thread.shared.request_sync();
        assert_eq!(thread.durable_within_patience(1), 1);
    }
}
