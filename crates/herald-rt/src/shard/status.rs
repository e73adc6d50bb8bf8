//! What a shard and the engine's handles share about a shard's life: whether it runs,
//! why it stopped, and why start-up failed. Its own module so that the engine (which
//! starts shards) and the shard loop (which reports) both depend on it rather than on
//! each other.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// The engine could not start. Nothing keeps running after this is returned.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is unusable (the caller's fault).
    Config(String),
    /// A shard's journal could not be opened or replayed (storage).
    Storage {
        /// The shard.
        shard: usize,
        /// What failed, with the path.
        message: String,
    },
    /// A shard thread or executor could not be created (the machine: threads, memlock,
    /// io_uring).
    Runtime {
        /// The shard.
        shard: usize,
        /// What failed.
        message: String,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(message) => write!(f, "invalid engine configuration: {message}"),
            StartError::Storage { shard, message } => {
                write!(f, "shard {shard}: storage failed at start-up: {message}")
            }
            StartError::Runtime { shard, message } => {
                write!(f, "shard {shard}: could not start its executor: {message}")
            }
        }
    }
}

impl std::error::Error for StartError {}

/// Why a shard stopped serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardExit {
    /// Asked to stop; everything accepted was journaled.
    Clean,
    /// The journal failed; work accepted but not yet acknowledged was refused.
    Storage(String),
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
