//! `herald bench pending`: the memory a backlog of pending retries costs, and how long
//! an engine holding it takes to checkpoint and to restart.
//!
//! An embedded engine gets one webhook whose receiver refuses connections (a loopback
//! port nothing listens on), so every delivery fails its first attempt and waits for a
//! retry. The harness publishes `deliveries` events into it with a bounded window of
//! receipts, waits until they are all pending, and reads `RssAnon` of this process
//! (anonymous memory: the heap, not the journal's mapped pages) before and after, so
//! `bytes_per_pending` is what one pending delivery costs. It then stops the engine
//! (a clean stop writes a checkpoint of that state: `stop_ms`), starts a new one on the
//! same data directory and times the start until it serves again with every delivery
//! still pending (restart-to-ready), with what it replayed (the checkpoint's parts and
//! any records after them). Checkpoints taken while publishing (by count, with the
//! engine's defaults) are reported from the shard's own figures.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use herald::{
    DispatcherConfig, Error as HeraldError, Event, EventFilter, EventType, Herald, PublishReceipt,
    ShardStats, TenantId, Url, WebhookSpec,
};
use serde::Serialize;

use crate::progress::Progress;
use crate::run::event_data;
use crate::{sysstat, BenchError};

/// Longest the harness waits for the deliveries to become pending: a stalled engine
/// ends the run with an error instead of a hang.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Most deliveries one run may ask for (one tenant's backlog, on one shard, whose room is
/// raised to hold it): at ~230 bytes each, about 14 GiB of memory.
pub const DELIVERIES_MAX: u64 = 64_000_000;
/// Receipts waited for at once while publishing (the measurement used 2,048).
pub const WINDOW_DEFAULT: usize = 2048;
/// How often the harness polls the engine's figures while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What to measure.
#[derive(Clone, Debug)]
pub struct PendingPlan {
    /// Events to publish: one delivery each.
    pub deliveries: u64,
    /// Bytes of each event's data.
    pub payload_bytes: usize,
    /// Shards of the engine.
    pub shards: usize,
    /// Receipts waited for at once.
    pub window: usize,
    /// Keep the journal here (default: a temporary directory, removed after).
    pub data_dir: Option<PathBuf>,
}

/// The figures of one run (the `--json` file).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PendingReport {
    /// Deliveries asked for.
    pub deliveries: u64,
    /// Bytes of each event's data.
    pub payload_bytes: usize,
    /// Shards.
    pub shards: usize,
    /// Seconds spent publishing (until every receipt resolved).
    pub publish_s: f64,
    /// Pending deliveries once publishing settled (all shards).
    pub pending: u64,
    /// `RssAnon` of this process with the engine started and its webhook created.
    pub rss_anon_before_bytes: u64,
    /// `RssAnon` with every delivery pending.
    pub rss_anon_after_bytes: u64,
    /// (after − before) / pending.
    pub bytes_per_pending: f64,
    /// `VmRSS` with every delivery pending (mapped journal pages included).
    pub rss_after_bytes: u64,
    /// Journal frames appended while publishing (all shards; checkpoints included).
    pub journal_bytes_appended: u64,
    /// Checkpoints the shards wrote while publishing (by count: the engine's defaults).
    pub checkpoints_written: u64,
    /// Bytes of the latest checkpoint written while publishing (sum over shards; 0
    /// when none was due).
    pub checkpoint_bytes: u64,
    /// Time that checkpoint took (the slowest shard), milliseconds.
    pub checkpoint_ms: f64,
    /// Time the engine took to stop, milliseconds: mostly writing the checkpoint of the
    /// whole backlog that a clean stop leaves for the restart.
    pub stop_ms: f64,
    /// Bytes of journal segment files on disk when the engine stopped.
    pub journal_disk_bytes: u64,
    /// Journal segment files on disk when the engine stopped.
    pub journal_segments: u64,
    /// Time from starting a new engine on the same directory until it serves,
    /// milliseconds.
    pub restart_ready_ms: f64,
    /// CPU time this process spent in that restart, milliseconds: on a busy machine the
    /// wall time above stretches with the load, this much less.
    pub restart_cpu_ms: f64,
    /// Journal frames the restarted shards replayed (a checkpoint's parts and the
    /// records after it).
    pub replayed_frames: u64,
    /// Journal payload bytes the restarted shards replayed (after a clean stop: the
    /// size of the checkpoint of the backlog).
    pub replayed_bytes: u64,
    /// Pending deliveries after the restart.
    pub pending_after_restart: u64,
    /// `RssAnon` after the restart.
    pub rss_anon_after_restart_bytes: u64,
    /// Time deleting the webhook (after the restart) took to return, milliseconds.
    pub delete_ms: f64,
    /// Time from that deletion until no delivery was pending, milliseconds: its
    /// pending deliveries end as failed (`webhook_deleted`).
    pub ended_ms: f64,
    /// The longest a call for the engine's figures waited while that went on,
    /// milliseconds (they are polled every millisecond): how long the shard holding the
    /// backlog left other callers waiting.
    pub stall_max_ms: f64,
    /// Journal bytes appended from the deletion until no delivery was pending.
    pub end_journal_bytes: u64,
}

impl PendingReport {
    /// The end-of-run table.
    pub fn table(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        format!(
            "pending retries: {} deliveries, {} B event data, {} shard(s)\n\
             publish                 {:>12.1} s\n\
             pending                 {:>12}\n\
             RssAnon before / after  {:>8.1} / {:.1} MiB\n\
             bytes per pending       {:>12.0}\n\
             VmRSS after             {:>12.1} MiB\n\
             journal appended        {:>12.1} MiB\n\
             checkpoint (publishing) {:>12.1} MiB in {:.0} ms ({} written)\n\
             stop (final checkpoint) {:>12.0} ms\n\
             journal on disk         {:>12.1} MiB in {} segment(s)\n\
             restart to ready        {:>12.0} ms, {:.0} ms CPU ({} frames, {:.1} MiB replayed)\n\
             pending after restart   {:>12}\n\
             RssAnon after restart   {:>12.1} MiB\n\
             webhook deleted         {:>12.0} ms to return, {:.0} ms until none pending\n\
             longest stall (figures) {:>12.1} ms\n\
             journal for the ending  {:>12.1} MiB\n",
            self.deliveries,
            self.payload_bytes,
            self.shards,
            self.publish_s,
            self.pending,
            mib(self.rss_anon_before_bytes),
            mib(self.rss_anon_after_bytes),
            self.bytes_per_pending,
            mib(self.rss_after_bytes),
            mib(self.journal_bytes_appended),
            mib(self.checkpoint_bytes),
            self.checkpoint_ms,
            self.checkpoints_written,
            self.stop_ms,
            mib(self.journal_disk_bytes),
            self.journal_segments,
            self.restart_ready_ms,
            self.restart_cpu_ms,
            self.replayed_frames,
            mib(self.replayed_bytes),
            self.pending_after_restart,
            mib(self.rss_anon_after_restart_bytes),
            self.delete_ms,
            self.ended_ms,
            self.stall_max_ms,
            mib(self.end_journal_bytes),
        )
    }
}

fn engine_error(what: &str) -> impl Fn(HeraldError) -> BenchError + '_ {
    move |e| BenchError::Engine(format!("{what}: {e}"))
}

fn start(plan: &PendingPlan, data_dir: &std::path::Path) -> Result<Herald, BenchError> {
    Herald::builder()
        .data_dir(data_dir)
        .shards(plan.shards)
        .allow_cidr("127.0.0.0/8")
        // The backlog is one tenant's, on one shard: the shard's room, all of it the
        // tenant's, is made to hold it (past the default million, `--deliveries` would
        // otherwise fail only once a million were published).
        .dispatcher_config({
            let room = usize::try_from(plan.deliveries)
                .unwrap_or(usize::MAX)
                .max(herald::PENDING_DELIVERIES_MAX_DEFAULT);
            DispatcherConfig {
                pending_deliveries_max: room,
                pending_deliveries_per_tenant_max: room,
                ..DispatcherConfig::default()
            }
        })
        .start()
        .map_err(|e| BenchError::Engine(format!("starting the engine: {e}")))
}

fn stats(herald: &Herald) -> Result<Vec<ShardStats>, BenchError> {
    herald.stats().map_err(engine_error("engine stats"))
}

fn pending_of(stats: &[ShardStats]) -> u64 {
    stats
        .iter()
        .map(|s| s.dispatcher.pending_deliveries as u64)
        .sum()
}

/// A loopback port nothing listens on: bound, then released.
fn refused_port() -> Result<u16, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::Io(format!("finding a free loopback port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| BenchError::Io(format!("finding a free loopback port: {e}")))?
        .port();
    drop(listener);
    Ok(port)
}

/// Segment files under `dir` (recursively): (count, bytes).
fn journal_files(dir: &std::path::Path) -> (u64, u64) {
    let mut found = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (count, bytes) = journal_files(&path);
            found = (found.0 + count, found.1 + bytes);
        } else if path.extension().is_some_and(|e| e == "seg") {
            found.0 += 1;
            found.1 += entry.metadata().map_or(0, |m| m.len());
        }
    }
    found
}

/// Waits, polling, until `done` holds of the engine's figures or [`SETTLE_TIMEOUT`].
fn wait_for(
    herald: &Herald,
    what: &str,
    mut done: impl FnMut(&[ShardStats]) -> bool,
) -> Result<Vec<ShardStats>, BenchError> {
    let started = Instant::now();
    loop {
        let now = stats(herald)?;
        if done(&now) {
            return Ok(now);
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            return Err(BenchError::Engine(format!(
                "{what} did not happen within {SETTLE_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `herald bench pending`: see the module documentation.
pub fn run_pending(
    plan: &PendingPlan,
    progress: &mut Progress,
) -> Result<PendingReport, BenchError> {
    if !(1..=DELIVERIES_MAX).contains(&plan.deliveries) {
        return Err(BenchError::Config(format!(
            "deliveries must be 1..={DELIVERIES_MAX}"
        )));
    }
    if plan.window == 0 || plan.shards == 0 {
        return Err(BenchError::Config(
            "window and shards must be at least 1".into(),
        ));
    }
    if plan.payload_bytes > crate::scenario::PAYLOAD_BYTES_MAX {
        return Err(BenchError::Config(format!(
            "payload_bytes is at most {}",
            crate::scenario::PAYLOAD_BYTES_MAX
        )));
    }
    let (data_dir, _temp) =
        crate::run::data_dir_or_temporary(plan.data_dir.as_deref(), "herald-bench-pending-")?;
    let herald = start(plan, &data_dir)?;
    let tenant = TenantId::parse("bench-pending")
        .map_err(|e| BenchError::Engine(format!("tenant id: {e}")))?;
    let url = Url::parse(&format!("http://127.0.0.1:{}/refused", refused_port()?))
        .map_err(|e| BenchError::Engine(format!("url: {e}")))?;
    let filters =
        vec![EventFilter::parse("*").map_err(|e| BenchError::Engine(format!("filter: {e}")))?];
    let scheme = herald::Scheme::Standard;
    let secret = herald_sign::generate_secret(&scheme, &[7; 32]);
    herald
        .create_webhook(&tenant, WebhookSpec::new(url, filters, scheme, secret))
        .map_err(engine_error("creating the webhook"))?;
    let event_type = EventType::parse("bench.pending")
        .map_err(|e| BenchError::Engine(format!("event type: {e}")))?;
    let base = stats(&herald)?;
    let rss_anon_before = sysstat::rss_anon_bytes().unwrap_or(0);
    progress.note(&format!(
        "engine: {} shard(s), data in {}; publishing {} events to a receiver that refuses connections",
        herald.shards(),
        data_dir.display(),
        plan.deliveries
    ));

    let started = Instant::now();
    let mut window: std::collections::VecDeque<PublishReceipt> =
        std::collections::VecDeque::with_capacity(plan.window);
    let settle = |receipt: PublishReceipt| -> Result<(), BenchError> {
        receipt.wait().map(drop).map_err(engine_error("publish"))
    };
    for seq in 0..plan.deliveries {
        if window.len() >= plan.window {
            if let Some(receipt) = window.pop_front() {
                settle(receipt)?;
            }
        }
        let mut event =
            Event::from_json_bytes(event_type.clone(), event_data(0, seq, plan.payload_bytes));
        loop {
            match herald.try_publish(&tenant, event) {
                Ok(receipt) => {
                    window.push_back(receipt);
                    break;
                }
                Err(error @ HeraldError::Backpressure { .. }) => {
                    event = error.into_event().map(|(_, event)| event).ok_or_else(|| {
                        BenchError::Engine("back-pressure without the event".into())
                    })?;
                    match window.pop_front() {
                        Some(receipt) => settle(receipt)?,
                        None => std::thread::sleep(Duration::from_micros(100)),
                    }
                }
                Err(error) => return Err(BenchError::Engine(format!("publish failed: {error}"))),
            }
        }
        if seq % 100_000 == 99_999 {
            progress.note(&format!("{} published", seq + 1));
        }
    }
    for receipt in window.drain(..) {
        settle(receipt)?;
    }
    let publish_s = started.elapsed().as_secs_f64();
    // And no checkpoint underway: one keeps copies of the deliveries that changed since
    // it began until it is done, memory beyond the backlog's own.
    let settled = wait_for(&herald, "every delivery pending", |s| {
        pending_of(s) >= plan.deliveries && s.iter().all(|s| !s.checkpoint_underway)
    })?;
    let rss_anon_after = sysstat::rss_anon_bytes().unwrap_or(0);
    let rss_after = sysstat::rss_bytes().unwrap_or(0);
    let pending = pending_of(&settled);
    progress.note(&format!(
        "{pending} pending; stopping (a clean stop checkpoints the backlog)"
    ));
    let checkpointed = settled;
    let journal_bytes_appended = checkpointed
        .iter()
        .zip(&base)
        .map(|(s, b)| s.journal_bytes_appended - b.journal_bytes_appended)
        .sum();
    let stopping = Instant::now();
    herald.shutdown().map_err(engine_error("shutting down"))?;
    drop(herald);
    let stop_ms = stopping.elapsed().as_secs_f64() * 1e3;
    let (journal_segments, journal_disk_bytes) = journal_files(&data_dir);

    progress.note("restarting on the same data directory");
    let restarted_at = Instant::now();
    let cpu_before_us = sysstat::process_cpu_us().unwrap_or(0);
    let herald = start(plan, &data_dir)?;
    let restart_ready_ms = restarted_at.elapsed().as_secs_f64() * 1e3;
    let restart_cpu_ms = sysstat::process_cpu_us()
        .unwrap_or(0)
        .saturating_sub(cpu_before_us) as f64
        / 1e3;
    let after = stats(&herald)?;
    let rss_anon_after_restart = sysstat::rss_anon_bytes().unwrap_or(0);

    progress.note("deleting the webhook: its pending deliveries end");
    let ending = end_backlog(&herald, &tenant)?;
    herald.shutdown().map_err(engine_error("shutting down"))?;

    Ok(PendingReport {
        deliveries: plan.deliveries,
        payload_bytes: plan.payload_bytes,
        shards: plan.shards,
        publish_s,
        pending,
        rss_anon_before_bytes: rss_anon_before,
        rss_anon_after_bytes: rss_anon_after,
        bytes_per_pending: rss_anon_after.saturating_sub(rss_anon_before) as f64
            / pending.max(1) as f64,
        rss_after_bytes: rss_after,
        journal_bytes_appended,
        checkpoints_written: checkpointed.iter().map(|s| s.checkpoints_written).sum(),
        checkpoint_bytes: checkpointed.iter().map(|s| s.checkpoint_bytes_last).sum(),
        checkpoint_ms: checkpointed
            .iter()
            .map(|s| s.checkpoint_us_last as f64 / 1e3)
            .fold(0.0, f64::max),
        stop_ms,
        journal_disk_bytes,
        journal_segments,
        restart_ready_ms,
        restart_cpu_ms,
        replayed_frames: after.iter().map(|s| s.replayed_frames).sum(),
        replayed_bytes: after.iter().map(|s| s.replayed_bytes).sum(),
        pending_after_restart: pending_of(&after),
        rss_anon_after_restart_bytes: rss_anon_after_restart,
        delete_ms: ending.delete_ms,
        ended_ms: ending.ended_ms,
        stall_max_ms: ending.stall_max_ms,
        end_journal_bytes: ending.journal_bytes,
    })
}

/// What ending the backlog cost ([`end_backlog`]).
struct Ending {
    delete_ms: f64,
    ended_ms: f64,
    stall_max_ms: f64,
    journal_bytes: u64,
}

/// Deletes the tenant's only webhook and waits until none of its deliveries is
/// pending, while another thread asks for the engine's figures every millisecond and
/// times each answer.
fn end_backlog(herald: &Herald, tenant: &TenantId) -> Result<Ending, BenchError> {
    let webhooks = herald
        .list_webhooks(tenant)
        .map_err(engine_error("listing the webhooks"))?;
    let Some(webhook) = webhooks.first() else {
        return Err(BenchError::Engine("the bench's webhook is gone".into()));
    };
    let before = stats(herald)?;
    let ending = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut longest = Duration::ZERO;
            while ending.load(std::sync::atomic::Ordering::Acquire) {
                let asked = Instant::now();
                if herald.stats().is_err() {
                    break;
                }
                longest = longest.max(asked.elapsed());
                std::thread::sleep(Duration::from_millis(1));
            }
            longest
        });
        let started = Instant::now();
        let deleted = herald.delete_webhook(tenant, &webhook.id);
        let delete_ms = started.elapsed().as_secs_f64() * 1e3;
        let settled = deleted
            .map_err(engine_error("deleting the webhook"))
            .and_then(|()| wait_for(herald, "no delivery pending", |s| pending_of(s) == 0));
        let ended_ms = started.elapsed().as_secs_f64() * 1e3;
        ending.store(false, std::sync::atomic::Ordering::Release);
        let longest = prober.join().unwrap_or_default();
        let settled = settled?;
        Ok(Ending {
            delete_ms,
            ended_ms,
            stall_max_ms: longest.as_secs_f64() * 1e3,
            journal_bytes: settled
                .iter()
                .zip(&before)
                .map(|(s, b)| s.journal_bytes_appended - b.journal_bytes_appended)
                .sum(),
        })
    })
}
