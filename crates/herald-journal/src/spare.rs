//! Prepares the next segment file in the background, so a roll does not make
//! the appender wait for `fallocate` and `fsync` (tens of milliseconds on a
//! busy disk). The spare is a preallocated, synced file under a temporary name
//! without a header; at roll the appender writes its header and renames it into
//! place, and the sync thread fsyncs the directory before any record in it
//! counts as durable.
//!
//! When no spare is ready (or preparing it failed, e.g. ENOSPC) the roll
//! creates the segment itself, so errors surface on the append as before.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// Spares are named `spare-<n>.seg.tmp` (removed on open like every
/// `*.seg.tmp`); a fresh name each time, so the preparer never reuses the path
/// of a spare the appender is renaming.
fn spare_path(dir: &std::path::Path, n: u64) -> PathBuf {
    dir.join(format!("spare-{n}.seg.tmp"))
}

#[derive(Default)]
struct State {
    wanted: bool,
    ready: Option<io::Result<(File, PathBuf)>>,
    made: u64,
    shutdown: bool,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    dir: PathBuf,
    segment_bytes: u64,
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
    pub(crate) fn start(dir: PathBuf, segment_bytes: u64) -> io::Result<Spare> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                wanted: true,
                ..State::default()
            }),
            changed: Condvar::new(),
            dir,
            segment_bytes,
        });
        let thread_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("herald-journal-spare".into())
            .spawn(move || thread_inner.run())?;
        Ok(Spare {
            inner,
            thread: Some(thread),
        })
    }

    /// Takes the ready spare, if any (a preallocated, synced file and its
    /// temporary path), and asks for the next one.
    pub(crate) fn take(&self) -> Option<(File, PathBuf)> {
        let mut st = lock(&self.inner.state);
        let taken = st.ready.take();
        st.wanted = true;
        self.inner.changed.notify_one();
        // A failed preparation is dropped: the roll creates the segment
        // itself and reports the error to the caller.
        taken.and_then(Result::ok)
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let mut st = lock(&self.state);
            let work_to_do = |st: &State| st.shutdown || (st.wanted && st.ready.is_none());
            while !work_to_do(&st) {
                st = self
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if st.shutdown {
                return;
            }
            st.wanted = false;
            st.made += 1;
            let path = spare_path(&self.dir, st.made);
            drop(st);
            let prepared = self.prepare(&path).map(|file| (file, path));
            let mut st = lock(&self.state);
            st.ready = Some(prepared);
        }
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

impl Drop for Spare {
    fn drop(&mut self) {
        lock(&self.inner.state).shutdown = true;
        self.inner.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic in the preparer has already been reported; nothing to add.
            let _ = thread.join();
        }
        if let Some(Ok((_, path))) = lock(&self.inner.state).ready.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
