//! Engine start-up and shutdown: one OS thread per shard, each running a glommio
//! `LocalExecutor` (pinned to a CPU when [`Pinning`] says so), and the foreign-thread
//! handles that feed them.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use futures_lite::FutureExt;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use super::intake::{intake, IntakeSender, SendError};
use super::run::{run_shard, ShardSetup};
use super::status::{ShardExit, ShardStatus, StartError, StorageError};
use super::stream::ShardStream;
use super::wake::wake_pair;
use super::{Request, ShardConfig};

/// Smallest `io_memory` glommio accepts; it rounds anything lower up to this.
const IO_MEMORY_BYTES_MIN: usize = 64 << 10;
/// Largest `io_memory` allowed: with an 8 MiB `RLIMIT_MEMLOCK` several shards (and
/// several engines in one test process) must fit.
pub const IO_MEMORY_BYTES_MAX: usize = 2 << 20;
/// Most shards one engine runs (a sanity bound on threads and journal directories).
pub const SHARDS_MAX: usize = 256;
/// Largest per-shard intake queue.
pub const INTAKE_CAPACITY_MAX: usize = 1 << 20;

/// Whether shard threads are pinned to CPUs.
///
/// Pinning keeps a shard's state in one core's caches, but a pinned shard cannot move
/// away from whatever else wakes up on its core: the journal's sync threads, an API's
/// threads, a receiver or publisher on the same machine. When the shards take every
/// CPU, such a thread shares one shard's core while the other shards wait on work it
/// holds up, and those cores idle. Measured on a 2-core machine with the receiver on
/// the same box (`herald bench run --events 200000 --tenants 16 --payload-bytes 1024
/// --compare-raw`, alternated pairs; `benches/README.md`, "Shard threads pinned only
/// when a CPU is left over"): two floating shards left 7.5 % of the cores idle instead
/// of 9.4 % and delivered a median 3 % more per second than two pinned ones in plain
/// text (ahead in 13 of 20 pairs), 6 % more over TLS (8 of 10), while one shard of two
/// CPUs did as well or slightly better pinned. So [`Pinning::Auto`] pins only when at
/// least one CPU is left over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pinning {
    /// Pin shard `i` to the `i`-th online CPU when there are more CPUs than shards;
    /// otherwise threads float (the default).
    #[default]
    Auto,
    /// Pin shard `i` to the `i`-th online CPU whenever there are at least as many CPUs
    /// as shards.
    Always,
    /// Never pin: the kernel places shard threads.
    Never,
}

impl Pinning {
    /// Its name in configuration: `auto`, `always` or `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pinning::Auto => "auto",
            Pinning::Always => "always",
            Pinning::Never => "never",
        }
    }

    /// Parses [`Pinning::as_str`]'s names.
    pub fn parse(text: &str) -> Option<Pinning> {
        match text {
            "auto" => Some(Pinning::Auto),
            "always" => Some(Pinning::Always),
            "never" => Some(Pinning::Never),
            _ => None,
        }
    }

    /// Whether `shards` shard threads are pinned on a machine with `cpus` online CPUs.
    pub fn pins(self, shards: usize, cpus: usize) -> bool {
        match self {
            Pinning::Auto => shards < cpus,
            Pinning::Always => shards <= cpus,
            Pinning::Never => false,
        }
    }
}

/// How the whole engine is set up. Every shard gets the same [`ShardConfig`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Root of the data: shard `i` keeps its journal in `data_dir/shard-<i>`.
    pub data_dir: PathBuf,
    /// Number of shards (1..=[`SHARDS_MAX`]). Must stay the same for a data directory:
    /// tenants are routed by [`super::shard_of`].
    pub shards: usize,
    /// Bounded intake queue per shard (1..=[`INTAKE_CAPACITY_MAX`]).
    pub intake_capacity: usize,
    /// Whether shard threads are pinned to CPUs.
    pub pinning: Pinning,
    /// Run shard threads under Linux's `SCHED_BATCH` policy: the same share of the CPU,
    /// but a shard woken by a completion does not preempt the thread running on its
    /// core, so it takes completions in batches (see `sched.rs` for the figures). When
    /// the policy cannot be set, the shard says so in a warning and runs as it is.
    pub batch_scheduling: bool,
    /// glommio `io_memory` per shard (clamped to 64 KiB..=[`IO_MEMORY_BYTES_MAX`]). The
    /// journal is memory-mapped and sockets use ordinary buffers, so little is needed.
    pub io_memory_bytes: usize,
    /// Everything each shard needs to run.
    pub shard: ShardConfig,
}

struct ShardHandle {
    intake: IntakeSender<Request>,
    status: Arc<ShardStatus>,
    stream: Arc<ShardStream>,
}

/// A running engine: the shard threads and the queues into them. Share it behind an
/// `Arc`; [`Engine::shutdown`] (or dropping it) stops and joins every shard.
pub struct Engine {
    shards: Vec<ShardHandle>,
    threads: Mutex<Vec<ExecutorJoinHandle<ShardExit>>>,
    shut_down: AtomicBool,
    pinned: bool,
}

/// Name of the file that records how a data directory is sharded.
pub const LAYOUT_FILE: &str = "herald-layout";

/// Tenants are routed by `shard_of(tenant, shards)`, so a data directory only makes
/// sense with the shard count it was written with: a different count would look for
/// tenants in the wrong journals and silently "lose" them. The first successful start
/// records the layout; later starts must match it. Returns whether it must be recorded.
fn check_layout(data_dir: &std::path::Path, shards: usize) -> Result<bool, StartError> {
    let path = data_dir.join(LAYOUT_FILE);
    let expected = layout(shards);
    let storage = |context: String, error: std::io::Error| StartError::Storage {
        shard: 0,
        error: StorageError::caused(&context, error),
    };
    match std::fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(false),
        Ok(found) => Err(StartError::Config(format!(
            "{} was written with layout {:?}; this engine is configured for {:?} \
             (start with the recorded shard count)",
            data_dir.display(),
            found.trim().replace('\n', " "),
            expected.trim().replace('\n', " ")
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A directory from before layouts were recorded: its shard directories tell.
            let existing = existing_shard_dirs(data_dir)
                .map_err(|error| storage(format!("listing {}", data_dir.display()), error))?;
            if existing != 0 && existing != shards {
                return Err(StartError::Config(format!(
                    "{} holds {existing} shard directories; this engine is configured for \
                     {shards} shards (start with {existing})",
                    data_dir.display()
                )));
            }
            Ok(true)
        }
        Err(error) => Err(storage(format!("reading {}", path.display()), error)),
    }
}

fn layout(shards: usize) -> String {
    format!("routing=fnv1a64\nshards={shards}\n")
}

fn write_layout(data_dir: &std::path::Path, shards: usize) -> Result<(), StartError> {
    let path = data_dir.join(LAYOUT_FILE);
    // Write to a temporary name and rename, so a crash never leaves half a file.
    let temporary = data_dir.join(format!("{LAYOUT_FILE}.tmp"));
    std::fs::write(&temporary, layout(shards).as_bytes())
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, &path))
        .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|error| StartError::Storage {
            shard: 0,
            error: StorageError::caused(&format!("writing {}", path.display()), error),
        })
}

/// How many shards an existing directory was written with (highest `shard-<i>` + 1).
fn existing_shard_dirs(data_dir: &std::path::Path) -> std::io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(data_dir)? {
        let name = entry?.file_name();
        let index = name
            .to_str()
            .and_then(|name| name.strip_prefix("shard-"))
            .and_then(|index| index.parse::<usize>().ok());
        if let Some(index) = index {
            count = count.max(index + 1);
        }
    }
    Ok(count)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    format!("shard panicked: {}", panic_text(panic))
}

/// A panic's message, when it has one of the usual kinds.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

fn online_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = glommio::CpuSet::online()
        .map(|set| set.iter().map(|location| location.cpu).collect())
        .unwrap_or_default();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

impl Engine {
    /// Opens every shard's journal, replays it, and starts serving. Returns once every
    /// shard is ready, or the first error (after stopping the shards that did start).
    pub fn start(config: EngineConfig) -> Result<Engine, StartError> {
        if config.shards == 0 || config.shards > SHARDS_MAX {
            return Err(StartError::Config(format!(
                "shards must be 1..={SHARDS_MAX}, got {}",
                config.shards
            )));
        }
        if config.intake_capacity == 0 || config.intake_capacity > INTAKE_CAPACITY_MAX {
            return Err(StartError::Config(format!(
                "intake_capacity must be 1..={INTAKE_CAPACITY_MAX}, got {}",
                config.intake_capacity
            )));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|error| StartError::Storage {
            shard: 0,
            error: StorageError::caused(&format!("creating {}", config.data_dir.display()), error),
        })?;
        let record_layout = check_layout(&config.data_dir, config.shards)?;
        // Before the shards' threads exist, so that the table grows once, here, and
        // not while they connect (see `fds`).
        super::fds::prepare(
            config.shards,
            config.shard.client.pool.connections_total_max,
            &config.data_dir,
        );
        let io_memory = config
            .io_memory_bytes
            .clamp(IO_MEMORY_BYTES_MIN, IO_MEMORY_BYTES_MAX);
        let cpus = online_cpus();
        let pin = config.pinning.pins(config.shards, cpus.len());

        let mut engine = Engine {
            shards: Vec::with_capacity(config.shards),
            threads: Mutex::new(Vec::with_capacity(config.shards)),
            shut_down: AtomicBool::new(false),
            pinned: pin,
        };
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), StartError>)>();
        for (index, cpu) in (0..config.shards).zip(cpus.iter().copied().chain(std::iter::repeat(0)))
        {
            let runtime_error = |message: String| StartError::Runtime {
                shard: index,
                message,
                source: None,
            };
            let (wake, wake_receiver) = wake_pair().map_err(|error| StartError::Runtime {
                shard: index,
                message: format!("wake eventfd: {error}"),
                source: Some(Arc::new(error)),
            })?;
            let (intake_tx, intake_rx) = intake::<Request>(config.intake_capacity, wake);
            let status = Arc::new(ShardStatus::new());
            let stream = Arc::new(ShardStream::new(config.shard.stream.clone()));
            let setup = ShardSetup {
                stream: stream.clone(),
                index,
                dir: config.data_dir.join(format!("shard-{index}")),
                config: config.shard.clone(),
                intake: intake_rx,
                wake: wake_receiver,
                status: status.clone(),
                ready: ready_tx.clone(),
            };
            let placement = if pin {
                Placement::Fixed(cpu)
            } else {
                Placement::Unbound
            };
            let spawned = LocalExecutorBuilder::new(placement)
                .name(&format!("herald-shard-{index}"))
                .io_memory(io_memory)
                .blocking_thread_pool_placement(crate::dns::blocking_pool(
                    &config.shard.client.dns,
                    pin.then_some(cpu),
                ))
                .spawn({
                    let status = status.clone();
                    let batch_scheduling = config.batch_scheduling;
                    move || async move {
                        if batch_scheduling {
                            if let Err(error) = super::sched::use_batch_policy() {
                                tracing::warn!(
                                    shard = index,
                                    %error,
                                    "cannot switch the shard thread to SCHED_BATCH; it runs \
                                     under the default policy (set batch_scheduling off to \
                                     silence this)"
                                );
                            }
                        }
                        // A panic must not leave callers guessing: record it as the
                        // shard's failure so they get a "bug" error, then stop.
                        let exit = match AssertUnwindSafe(run_shard(setup)).catch_unwind().await {
                            Ok(exit) => exit,
                            Err(panic) => {
                                let exit = ShardExit::Bug(panic_message(panic.as_ref()));
                                status.set_failed(exit.clone());
                                exit
                            }
                        };
                        // The shard's whole state is freed.
                        super::memory::release_freed_memory();
                        exit
                    }
                });
            match spawned {
                Ok(thread) => {
                    engine.shards.push(ShardHandle {
                        intake: intake_tx,
                        status,
                        stream,
                    });
                    engine
                        .threads
                        .get_mut()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(thread);
                }
                Err(error) => {
                    engine.shutdown();
                    return Err(runtime_error(error.to_string()));
                }
            }
        }
        drop(ready_tx);
        let mut ready = 0;
        while ready < config.shards {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => ready += 1,
                Ok((_, Err(error))) => {
                    engine.shutdown();
                    return Err(error);
                }
                Err(_) => {
                    // Every sender is gone without reporting: a shard thread died during
                    // start-up (a panic, or glommio failed to build its reactor).
                    let failures = engine.join_all();
                    return Err(StartError::Runtime {
                        shard: failures.first().map(|(shard, _)| *shard).unwrap_or(0),
                        message: failures
                            .into_iter()
                            .map(|(shard, message)| format!("shard {shard}: {message}"))
                            .collect::<Vec<_>>()
                            .join("; "),
                        source: None,
                    });
                }
            }
        }
        if record_layout {
            if let Err(error) = write_layout(&config.data_dir, config.shards) {
                engine.shutdown();
                return Err(error);
            }
        }
        Ok(engine)
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Whether the shard threads are pinned to CPUs (see [`Pinning`]).
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// Hands `request` to shard `shard` if its queue has room now.
    ///
    /// # Panics
    /// If `shard >= self.shards()` (route with [`super::shard_of`]).
    // The request is given back by value; boxing it would cost an allocation per publish.
    #[allow(clippy::result_large_err)]
    pub fn try_submit(&self, shard: usize, request: Request) -> Result<(), SendError<Request>> {
        let handle = &self.shards[shard];
        if handle.status.is_closing() {
            return Err(SendError::Closed(request));
        }
        handle.intake.try_send(request)
    }

    /// Hands `request` to shard `shard`, blocking the calling thread while its queue is
    /// full. Never returns [`SendError::Full`].
    ///
    /// # Panics
    /// If `shard >= self.shards()`.
    // The request is given back by value; boxing it would cost an allocation per publish.
    #[allow(clippy::result_large_err)]
    pub fn submit_blocking(
        &self,
        shard: usize,
        request: Request,
    ) -> Result<(), SendError<Request>> {
        let handle = &self.shards[shard];
        if handle.status.is_closing() {
            return Err(SendError::Closed(request));
        }
        handle.intake.send_blocking(request)
    }

    /// Hands `request` to shard `shard`, waiting asynchronously while its queue is full.
    /// Never returns [`SendError::Full`].
    ///
    /// # Panics
    /// If `shard >= self.shards()`.
    pub async fn submit_async(
        &self,
        shard: usize,
        request: Request,
    ) -> Result<(), SendError<Request>> {
        let handle = &self.shards[shard];
        if handle.status.is_closing() {
            return Err(SendError::Closed(request));
        }
        handle.intake.send_async(request).await
    }

    /// Why shard `shard` stopped on its own ([`ShardExit::Storage`],
    /// [`ShardExit::Runtime`] or [`ShardExit::Bug`]), if it did.
    ///
    /// # Panics
    /// If `shard >= self.shards()`.
    pub fn shard_failure(&self, shard: usize) -> Option<ShardExit> {
        self.shards[shard].status.failure()
    }

    /// Shard `shard`'s event stream ([`super::stream`]).
    ///
    /// # Panics
    /// If `shard >= self.shards()`.
    pub fn stream(&self, shard: usize) -> &Arc<ShardStream> {
        &self.shards[shard].stream
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Stops intake on every shard, lets each journal what it accepted and finish (or
    /// journal as pending) its in-flight sends within the shard's grace period, then
    /// joins the threads. Idempotent; returns how each shard ended (empty when an
    /// earlier call already joined them).
    pub fn shutdown(&self) -> Vec<(usize, Result<ShardExit, String>)> {
        self.shut_down.store(true, Ordering::Release);
        for handle in &self.shards {
            handle.status.set_closing();
            handle.intake.wake();
        }
        // Subscribers learn at once: nothing more comes once intake stops.
        for handle in &self.shards {
            handle.stream.close();
        }
        let mut results = Vec::new();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for (index, thread) in threads.into_iter().enumerate() {
            results.push((index, thread.join().map_err(|error| error.to_string())));
        }
        results
    }

    /// Joins after a start-up failure; returns the shards that failed and why.
    fn join_all(&self) -> Vec<(usize, String)> {
        self.shutdown()
            .into_iter()
            .filter_map(|(shard, result)| match result {
                Ok(ShardExit::Clean) => None,
                Ok(ShardExit::Storage(error)) => Some((shard, error.to_string())),
                Ok(ShardExit::Runtime(message) | ShardExit::Bug(message)) | Err(message) => {
                    Some((shard, message))
                }
            })
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.shards.len())
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}
