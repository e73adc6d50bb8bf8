//! `herald journal check` and `herald bench journal`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_journal::{check, CheckReport, Journal, JournalConfig, SEGMENT_BYTES_DEFAULT};

/// Journal subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
    /// Validate every frame of a journal directory, like fsck.
    ///
    /// Exit status: 0 when sound (a torn tail in the last segment is reported
    /// but sound), 1 when a frame before the tail is corrupt, the log ends before
    /// its durable mark, or records replay needs are missing before the first
    /// segment (its oldest segment files removed), 2 when the directory cannot be
    /// read or holds no journal, or `--repair` is asked of a journal in use or of a
    /// server's data directory. Given a server's data directory, each shard's journal
    /// is checked in turn and the status is the worst of theirs.
    ///
    /// A journal a running process holds (`herald serve`) can be checked: it changes while
    /// it is read, so a problem found is checked again (three checks, 200 ms apart) before
    /// it is reported, with a note that the journal was in use. It is never repaired
    /// while in use.
    Check {
        /// A shard's journal directory (`DATA_DIR/engine/shard-N`, holding the *.seg
        /// files), or a server's data directory (or its `engine` directory): then every
        /// shard's journal.
        #[arg(long)]
        data_dir: PathBuf,
        /// Mend damage (or a gap between segment files) before the tail: when a later
        /// complete checkpoint covers every record up to it, delete the segment files up
        /// to it whole, losing nothing; otherwise truncate at the first corrupt frame,
        /// deleting everything after it (the segment files that changes are copied to
        /// `repair-saved-<unix ms>` in the directory first). Refused, changing nothing, when records replay
        /// needs are missing before the first segment kept: only restoring the missing
        /// segment files from a backup mends that.
        #[arg(long)]
        repair: bool,
    },
}

/// Largest `--seconds`: a capacity measurement, not a soak test.
pub const BENCH_SECONDS_MAX: u64 = 120;
/// Largest `--record-bytes`.
pub const BENCH_RECORD_BYTES_MAX: u64 = 1024 * 1024;
/// Largest `--group`.
pub const BENCH_GROUP_MAX: usize = 65_536;

/// Arguments of `herald bench journal`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Directory on the disk to measure (created when missing); the run uses (and then
    /// removes, unless --keep) a fresh subdirectory in it.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Keep the journal the run wrote and print its path, for `herald journal check`.
    #[arg(long)]
    pub keep: bool,
    /// Payload bytes per record (1..=1048576).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: u64,
    /// Records per group commit (1..=65536).
    #[arg(long, default_value_t = 256)]
    pub group: usize,
    /// Seconds per phase (buffered, then durable), 1..=120.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Runs a journal subcommand.
pub fn run(command: JournalCommand) -> ExitCode {
    match command {
        JournalCommand::Check { data_dir, repair } => {
            let shards = shard_journals(&data_dir);
            if shards.is_empty() {
                return ExitCode::from(run_check(&data_dir, repair));
            }
            if repair {
                eprintln!(
                    "herald journal check: {} holds {} shards' journals; repair one at a time \
                     (--data-dir {}), after checking them all without --repair",
                    data_dir.display(),
                    shards.len(),
                    shards[0].display()
                );
                return ExitCode::from(2);
            }
            // Each shard's journal in turn; the status is the worst of theirs.
            let mut worst = 0;
            for shard in &shards {
                crate::say(format_args!("journal {}", shard.display()));
                worst = worst.max(run_check(shard, false));
            }
            ExitCode::from(worst)
        }
    }
}

fn print_report(report: &CheckReport) {
    for s in &report.segments {
        println!(
            "segment {}  base_seq {}  records {}  bytes {}  file_bytes {}{}",
            s.path.display(),
            s.base_seq,
            s.records,
            s.bytes,
            s.file_bytes,
            if s.reused { "  reused" } else { "" }
        );
    }
    let seq = |s: Option<u64>| s.map_or_else(|| "-".to_string(), |s| s.to_string());
    println!(
        "segments {}  records {}  first_seq {}  last_seq {}  bytes {}  checkpoint_seq {}  checkpoint_covers_seq {}",
        report.segments.len(),
        report.records,
        seq(report.first_seq),
        seq(report.last_seq),
        report.bytes,
        seq(report.checkpoint_seq),
        seq(report.checkpoint_covers_seq)
    );
    match report.durable_mark {
        Some(mark) => println!("durable mark: seq {mark}"),
        None => println!(
            "durable mark: none (the end of the log cannot be checked against what was \
             acknowledged)"
        ),
    }
    if let Some(said) = &report.after_failure {
        println!(
            "after a failure: {said:?} ({}; the next open reads them from the disk and \
             clears this)",
            if report.in_use {
                "a process holds the journal: the segments were read through the page cache"
            } else {
                "the segments were read from the disk, not the page cache"
            }
        );
    }
    match &report.torn_tail {
        Some(t) => println!(
            "torn tail: {} at offset {}: {} ({} bytes to discard on open{})",
            t.segment.display(),
            t.offset,
            t.defect,
            t.bytes_discarded,
            match t.intact_frames_discarded {
                0 => String::new(),
                n => format!(
                    ", with {n} intact records after the damage that were never made durable"
                ),
            }
        ),
        None => println!("torn tail: none"),
    }
}

/// Copies `damaged` and every segment after it (what a truncation there changes) into
/// a new directory `repair-saved-<unix ms>` beside them (the journal reads only segment
/// files, so it is left alone there); returns that directory.
fn save_before_repair(
    dir: &Path,
    report: &CheckReport,
    damaged: &Path,
) -> std::io::Result<PathBuf> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let saved = dir.join(format!("repair-saved-{now_ms}"));
    std::fs::create_dir(&saved)?;
    for segment in report.segments.iter().skip_while(|s| s.path != damaged) {
        let name = segment.path.file_name().unwrap_or_default();
        std::fs::copy(&segment.path, saved.join(name))?;
    }
    Ok(saved)
}

/// The shards' journals under a server's data directory (`DIR/engine/shard-N`) or its
/// engine directory (`DIR/shard-N`), in shard order; empty when `dir` is neither.
fn shard_journals(dir: &Path) -> Vec<PathBuf> {
    for base in [dir.join("engine"), dir.to_path_buf()] {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        let mut shards: Vec<(usize, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| {
                let name = entry.file_name();
                let n = name.to_str()?.strip_prefix("shard-")?.parse().ok()?;
                Some((n, entry.path()))
            })
            .collect();
        if !shards.is_empty() {
            shards.sort();
            return shards.into_iter().map(|(_, path)| path).collect();
        }
    }
    Vec::new()
}

/// Checks of a journal in use made before its problems are reported: a roll, a
/// compaction or a segment reused in place can show one reading a gap, a missing
/// segment or damage that the next reading no longer finds.
const LIVE_CHECK_ATTEMPTS: u32 = 3;
/// The pause between those checks: longer than a roll or a compaction's deletions take.
const LIVE_CHECK_PAUSE: Duration = Duration::from_millis(200);

/// [`check`] of `dir`, made again (up to [`LIVE_CHECK_ATTEMPTS`] in all) while the journal
/// is in use and the check fails or finds a problem; the last result, and how many checks
/// were made.
fn check_settled(dir: &Path) -> (Result<CheckReport, herald_journal::JournalError>, u32) {
    let mut attempts = 1;
    loop {
        let result = check(dir);
        let settled = match &result {
            Ok(report) => report.is_sound() || !report.in_use,
            // Read errors on a journal in use may be a file deleted or renamed under way.
            Err(_) => !matches!(herald_journal::in_use(dir), Ok(true)),
        };
        if settled || attempts >= LIVE_CHECK_ATTEMPTS {
            return (result, attempts);
        }
        attempts += 1;
        std::thread::sleep(LIVE_CHECK_PAUSE);
    }
}

fn run_check(dir: &Path, repair: bool) -> u8 {
    if !dir.is_dir() {
        eprintln!("herald journal check: {} is not a directory", dir.display());
        return 2;
    }
    match herald_journal::in_use(dir) {
        Ok(true) if repair => {
            eprintln!(
                "herald journal check: {} is in use by a running process (it holds its \
                 journal.lock): stop it before repairing; a journal in use is never repaired",
                dir.display()
            );
            return 2;
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("herald journal check: {e}");
            return 2;
        }
    }
    let (result, attempts) = check_settled(dir);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("herald journal check: {e}");
            return 2;
        }
    };
    if report.segments.is_empty() && report.durable_mark.is_none() {
        eprintln!(
            "herald journal check: no journal in {} (no segment files); a server keeps its \
             shards' journals in DATA_DIR/engine/shard-N",
            dir.display()
        );
        return 2;
    }
    print_report(&report);
    if report.in_use {
        eprintln!(
            "in use: a running process holds this journal, so it was read while it changed{}",
            if report.is_sound() {
                String::new()
            } else {
                format!(
                    "; the same problem was found in {attempts} checks {LIVE_CHECK_PAUSE:?} \
                     apart, so it is no roll or compaction under way, but stop the process \
                     before repairing"
                )
            }
        );
    }
    if report.is_sound() {
        println!("sound");
        return 0;
    }
    if let Some(missing) = &report.history_missing {
        eprintln!("history missing: {missing}");
    }
    if let Some(covered) = report.covered.as_ref().filter(|_| !repair) {
        eprintln!(
            "corrupt: segment {} offset {}: {}; the checkpoint at seq {} covers every record \
             up to seq {}, so a repair deletes the {} segment files up to it whole (every \
             record before seq {}), losing nothing (rerun with --repair to do so)",
            covered.segment.display(),
            covered.offset,
            covered.defect,
            covered.checkpoint_seq,
            covered.checkpoint_covers_seq,
            covered.segments_deleted,
            covered.first_seq_kept
        );
    }
    if let Some(corruption) = report.corruption.as_ref().filter(|_| !repair) {
        let later_segments = report
            .segments
            .iter()
            .skip_while(|s| s.path != corruption.segment)
            .skip(1)
            .count();
        eprintln!(
            "corrupt: segment {} offset {}: {}; {} intact records follow it in that segment, and {} later segments{}",
            corruption.segment.display(),
            corruption.offset,
            corruption.defect,
            corruption.records_after,
            later_segments,
            match (&report.history_missing, &corruption.newer_format) {
                (None, None) => {
                    " (rerun with --repair to truncate there, losing what follows)".to_owned()
                }
                (None, Some(newer)) => format!(
                    " (no repair proceeds: {} is of a format this build does not read; run \
                     the build that wrote it)",
                    newer.display()
                ),
                (Some(_), _) => String::new(),
            }
        );
    }
    if !repair {
        return 1;
    }
    if report.history_missing.is_some() {
        // Records no segment holds cannot be brought back, and a journal opened without
        // them replays as if their webhooks, events and idempotency keys never were
        // (and may hand out again ids receivers already saw): nothing to accept safely.
        eprintln!(
            "not repaired, nothing changed: no repair can bring back records no segment \
             holds; restore the missing or damaged segment files from a backup, then check again"
        );
        return 1;
    }
    if let Some(newer) = report
        .corruption
        .as_ref()
        .and_then(|c| c.newer_format.as_ref())
    {
        eprintln!(
            "not repaired, nothing changed: segment {} is of a format this build does not \
             read, and a repair would delete it; run the build that wrote it",
            newer.display()
        );
        return 1;
    }
    // A truncation loses what follows the damage: the files it changes are copied aside
    // first, so that nothing is gone for good (a record someone can still read out, a
    // repair done by mistake).
    if let Some(corruption) = &report.corruption {
        match save_before_repair(dir, &report, &corruption.segment) {
            Ok(saved) => println!(
                "saved the segment files a repair changes to {} (remove it once no longer needed)",
                saved.display()
            ),
            Err(e) => {
                eprintln!(
                    "not repaired, nothing changed: could not copy the segment files a \
                     repair changes aside first ({e}); free some space or copy them yourself"
                );
                return 1;
            }
        }
    }
    let mut config = JournalConfig::new(dir);
    config.repair = true;
    match Journal::open(config) {
        Ok((journal, recovery)) => {
            drop(journal);
            if let Some(c) = &recovery.covered {
                println!(
                    "repaired: deleted {} segment files whole, every record before seq {} \
                     ({} valid records; {} at offset {}: {}); the checkpoint at seq {} covers \
                     them (up to seq {}); lost 0 records",
                    c.segments_deleted,
                    c.first_seq_kept,
                    c.records,
                    c.segment.display(),
                    c.offset,
                    c.defect,
                    c.checkpoint_seq,
                    c.checkpoint_covers_seq
                );
            }
            match recovery.repair {
                Some(r) => {
                    let kept = recovery.last_seq.unwrap_or(0);
                    let lost = if r.records_lost > 0 {
                        format!(" (seq {}..={})", kept + 1, kept + r.records_lost)
                    } else {
                        String::new()
                    };
                    // Offset 0 with files deleted: the segment's header did not decode,
                    // and the file went whole with every one after it.
                    let cut = if r.offset == 0 && r.segments_deleted > 0 {
                        format!(
                            "deleted {} ({}) and the {} segment files after it",
                            r.segment.display(),
                            r.defect,
                            r.segments_deleted - 1
                        )
                    } else {
                        format!(
                            "truncated {} at offset {} ({}), {} later segment files deleted",
                            r.segment.display(),
                            r.offset,
                            r.defect,
                            r.segments_deleted
                        )
                    };
                    // A deleted file whose header did not decode counts its records only
                    // through the files after it: with none after it, their number is not
                    // known, and "0 records" would say nothing was lost.
                    let records = if r.offset == 0
                        && r.segments_deleted == 1
                        && r.records_lost == 0
                        && r.bytes_lost > 0
                    {
                        format!(
                            "lost the records {} held (how many is not known: its header did \
                             not decode)",
                            r.segment.display()
                        )
                    } else {
                        format!("lost {} records{lost}", r.records_lost)
                    };
                    println!(
                        "repaired: {cut}; kept records up to seq {kept}; {records}, {} bytes",
                        r.bytes_lost
                    )
                }
                None if recovery.covered.is_none() => println!("repaired: nothing to truncate"),
                None => {}
            }
            match check(dir) {
                Ok(after) if after.is_sound() => {
                    println!("sound");
                    0
                }
                Ok(after) => {
                    print_report(&after);
                    eprintln!("still corrupt after repair: {:?}", after.corruption);
                    1
                }
                Err(e) => {
                    eprintln!("herald journal check: {e}");
                    2
                }
            }
        }
        Err(e) => {
            eprintln!("repair failed: {e}");
            1
        }
    }
}

/// Runs `herald bench journal`.
pub fn bench(args: BenchArgs) -> ExitCode {
    match run_bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("herald bench journal: {message}");
            ExitCode::from(2)
        }
    }
}

fn validate(args: &BenchArgs) -> Result<(), String> {
    if !(1..=BENCH_SECONDS_MAX).contains(&args.seconds) {
        return Err(format!(
            "--seconds {} must be in 1..={BENCH_SECONDS_MAX}",
            args.seconds
        ));
    }
    if !(1..=BENCH_RECORD_BYTES_MAX).contains(&args.record_bytes) {
        return Err(format!(
            "--record-bytes {} must be in 1..={BENCH_RECORD_BYTES_MAX}",
            args.record_bytes
        ));
    }
    if !(1..=BENCH_GROUP_MAX).contains(&args.group) {
        return Err(format!(
            "--group {} must be in 1..={BENCH_GROUP_MAX}",
            args.group
        ));
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        format!(
            "--data-dir {} cannot be created: {e}",
            args.data_dir.display()
        )
    })?;
    if !args.data_dir.is_dir() {
        return Err(format!(
            "--data-dir {} is not a directory",
            args.data_dir.display()
        ));
    }
    Ok(())
}

/// Removes the scratch journal however the run ends, unless it is to be kept.
struct Scratch {
    dir: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept the journal in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Records appended per `commit` in the durable phase: a busy shard turn's worth.
const COMMIT_EVERY: u64 = 64;
/// How often the loops look at the clock: every this many appends.
const CLOCK_EVERY: u64 = 256;

fn run_bench(args: &BenchArgs) -> Result<(), String> {
    validate(args)?;
    let dir = args
        .data_dir
        .join(format!("herald-bench-journal-{}", std::process::id()));
    let _scratch = Scratch {
        dir: dir.clone(),
        keep: args.keep,
    };
    let mut config = JournalConfig::new(&dir);
    config.segment_bytes = SEGMENT_BYTES_DEFAULT;
    config.group_records_max = args.group;
    let (mut journal, _) = Journal::open(config).map_err(|e| e.to_string())?;
    let payload = vec![0x5Au8; args.record_bytes as usize];
    let phase = Duration::from_secs(args.seconds);
    // A checkpoint every segment's worth of records lets retention delete old
    // segments, so the run's disk use stays at a few segments.
    let checkpoint_every =
        (SEGMENT_BYTES_DEFAULT / herald_journal::frame_bytes(args.record_bytes)).max(1);

    eprintln!(
        "phase 1/2: buffered appends of {} bytes for {} s in {}",
        args.record_bytes,
        args.seconds,
        dir.display()
    );
    let started = Instant::now();
    let mut next_report = Duration::from_secs(1);
    let mut appended = 0u64;
    // Time per batch of CLOCK_EVERY appends: a stall (a roll, a sync in the
    // way) shows up as a slow batch without timing every append.
    let mut batches =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut batch_started = Instant::now();
    loop {
        journal.append(1, 1, &payload).map_err(|e| e.to_string())?;
        appended += 1;
        if appended.is_multiple_of(checkpoint_every) {
            journal.checkpoint(b"bench").map_err(|e| e.to_string())?;
        }
        if appended.is_multiple_of(CLOCK_EVERY) {
            let now = Instant::now();
            batches.saturating_record((now - batch_started).as_micros().max(1) as u64);
            batch_started = now;
            let elapsed = now - started;
            if elapsed >= next_report {
                eprintln!(
                    "  {:>3} s  appended {appended}  durable {}",
                    next_report.as_secs(),
                    journal.durable_seq()
                );
                next_report += Duration::from_secs(1);
            }
            if elapsed >= phase {
                break;
            }
        }
    }
    let buffered_secs = started.elapsed().as_secs_f64();
    let appends_per_s = appended as f64 / buffered_secs;
    journal.sync().map_err(|e| e.to_string())?;
    journal.take_sync_samples_us();

    eprintln!(
        "phase 2/2: durable records with group commit (window {} records) for {} s",
        2 * args.group,
        args.seconds
    );
    let window = 2 * args.group as u64;
    let handle = journal.durable_handle();
    let first = journal.last_seq();
    let started = Instant::now();
    let mut next_report = Duration::from_secs(1);
    let mut written = 0u64;
    loop {
        let seq = journal.append(1, 1, &payload).map_err(|e| e.to_string())?;
        written += 1;
        if written.is_multiple_of(checkpoint_every) {
            journal.checkpoint(b"bench").map_err(|e| e.to_string())?;
        }
        // Records reach the file a turn's worth at a time, as in a shard.
        if written.is_multiple_of(COMMIT_EVERY) {
            journal.commit().map_err(|e| e.to_string())?;
        }
        // Publishers wait for their acknowledgement: at most `window`
        // records are in flight, as with that many concurrent publishers.
        if seq >= first + window {
            journal.commit().map_err(|e| e.to_string())?;
            handle
                .wait_durable(seq - window, Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
        }
        if written.is_multiple_of(CLOCK_EVERY) {
            let elapsed = started.elapsed();
            if elapsed >= next_report {
                eprintln!(
                    "  {:>3} s  durable {}",
                    next_report.as_secs(),
                    journal.durable_seq() - first
                );
                next_report += Duration::from_secs(1);
            }
            if elapsed >= phase {
                break;
            }
        }
    }
    let durable_end = journal.sync().map_err(|e| e.to_string())?;
    let durable_secs = started.elapsed().as_secs_f64();
    let durable = durable_end - first;
    let durable_per_s = durable as f64 / durable_secs;
    let samples = journal.take_sync_samples_us();
    drop(journal);

    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    for us in &samples {
        histogram.saturating_record((*us).max(1));
    }
    let p50 = histogram.value_at_quantile(0.5);
    let p99 = histogram.value_at_quantile(0.99);
    let batch_p99 = batches.value_at_quantile(0.99);
    eprintln!(
        "batches of {CLOCK_EVERY} buffered appends: p99 {batch_p99} us, max {} us",
        batches.max()
    );
    eprintln!(
        "buffered {appends_per_s:.0} appends/s; durable {durable_per_s:.0} records/s; \
         {} syncs, p50 {p50} us, p99 {p99} us, max {} us",
        samples.len(),
        histogram.max()
    );
    let json = serde_json::json!({
        "record_bytes": args.record_bytes,
        "group": args.group,
        "seconds": args.seconds,
        "appends_per_s": appends_per_s.round(),
        "append_batch": CLOCK_EVERY,
        "append_batch_p99_us": batch_p99,
        "append_batch_max_us": batches.max(),
        "durable_records_per_s": durable_per_s.round(),
        "syncs": samples.len(),
        "sync_p50_us": p50,
        "sync_p99_us": p99,
        "sync_max_us": histogram.max(),
    });
    println!("{json}");
    Ok(())
}
