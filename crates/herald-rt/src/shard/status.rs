//! What a shard and the engine's handles share about a shard's life: whether it runs,
//! why it stopped, and why start-up failed. Its own module so that the engine (which
//! starts shards) and the shard loop (which reports) both depend on it rather than on
//! each other.

use std::error::Error;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// A storage failure: what failed, in a message as informative as the journal's own
/// (paths, record numbers), and the error that caused it as its
/// [`source`](std::error::Error::source) (a `herald_journal::JournalError`, or a
/// `herald_core::session::RecoveryError` whose chain reaches the journal's or the
/// decoder's error), so that a caller can walk the chain instead of parsing text.
///
/// Cheap to clone: every caller waiting on a failed shard gets the same one. Two are
/// equal when their messages are.
#[derive(Debug, Clone)]
pub struct StorageError {
    message: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl StorageError {
    /// `error`, with `context` (what was being done) before its text.
    pub(crate) fn caused(context: &str, error: impl Error + Send + Sync + 'static) -> StorageError {
        StorageError {
            message: format!("{context}: {error}"),
            source: Some(Arc::new(error)),
        }
    }

    /// `error` with its own text as the message.
    pub(crate) fn of(error: impl Error + Send + Sync + 'static) -> StorageError {
        StorageError {
            message: error.to_string(),
            source: Some(Arc::new(error)),
        }
    }

    /// The same cause with `text` appended to the message (what follows for the caller).
    pub(crate) fn then(&self, text: &str) -> StorageError {
        StorageError {
            message: format!("{}{text}", self.message),
            source: self.source.clone(),
        }
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The cause, shared (for wrapping errors that keep it as their own source).
    pub fn cause(&self) -> Option<Arc<dyn Error + Send + Sync + 'static>> {
        self.source.clone()
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for StorageError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

impl PartialEq for StorageError {
    fn eq(&self, other: &StorageError) -> bool {
        self.message == other.message
    }
}

impl Eq for StorageError {}

/// The engine could not start. Nothing keeps running after this is returned.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is unusable (the caller's fault).
    Config(String),
    /// A shard's journal could not be opened or replayed (storage).
    Storage {
        /// The shard.
        shard: usize,
        /// What failed, with the path; its source is the journal's (or the file
        /// system's, or recovery's) error.
        error: StorageError,
    },
    /// A shard thread or executor could not be created (the machine: threads, memlock,
    /// io_uring).
    Runtime {
        /// The shard.
        shard: usize,
        /// What failed.
        message: String,
        /// The OS's (or the journal's) error, when there is one, for
        /// [`std::error::Error::source`].
        source: Option<Arc<dyn Error + Send + Sync + 'static>>,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(message) => write!(f, "invalid engine configuration: {message}"),
            StartError::Storage { shard, error } => {
                write!(f, "shard {shard}: storage failed at start-up: {error}")
            }
            StartError::Runtime { shard, message, .. } => {
                write!(f, "shard {shard}: could not start its executor: {message}")
            }
        }
    }
}

impl Error for StartError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StartError::Storage { error, .. } => Some(error),
            StartError::Runtime {
                source: Some(source),
                ..
            } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Why a shard stopped serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardExit {
    /// Asked to stop; everything accepted was journaled.
    Clean,
    /// The journal failed; work accepted but not yet acknowledged was refused.
    Storage(StorageError),
    /// The host refused the shard something it needs to run (its wake-up socket could
    /// not be registered with the executor): nothing on disk is wrong, and retrying does
    /// not help until the host changes.
    Runtime(String),
    /// The shard panicked (a defect); the message is the panic's.
    Bug(String),
}

const RUNNING: u8 = 0;
const CLOSING: u8 = 1;
const STOPPED: u8 = 2;

/// Shared between a shard and the handles that feed it.
#[derive(Debug)]
pub(crate) struct ShardStatus {
    state: AtomicU8,
    /// Why the shard stopped on its own (journal failure, panic), for callers that find
    /// it gone.
    failure: Mutex<Option<ShardExit>>,
}

impl ShardStatus {
    pub(crate) fn new() -> ShardStatus {
        ShardStatus {
            state: AtomicU8::new(RUNNING),
            failure: Mutex::new(None),
        }
    }

    pub(crate) fn set_failed(&self, exit: ShardExit) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(exit);
        self.set_stopped();
    }

    pub(crate) fn failure(&self) -> Option<ShardExit> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.state.load(Ordering::Acquire) != RUNNING
    }

    /// Asks a running shard to stop; a shard that already stopped stays stopped.
    pub(crate) fn set_closing(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, CLOSING, Ordering::AcqRel, Ordering::Acquire);
    }

    pub(crate) fn set_stopped(&self) {
        self.state.store(STOPPED, Ordering::Release);
    }
}
