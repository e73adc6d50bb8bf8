//! What the process cost: CPU time (whole process and by thread name), peak resident
//! memory and bytes the kernel was asked to write, and how the machine's CPUs spent
//! their time (busy, idle, stolen by the hypervisor), read from `/proc` (Linux). Every
//! reading is `None` where `/proc` does not have it, and the report says so.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`: 100 on every Linux ABI the
/// kernel builds for; `sysconf(_SC_CLK_TCK)` would need `unsafe` or a libc binding).
const USER_HZ: u64 = 100;

/// user + system CPU time from a `stat` line, in microseconds.
fn stat_cpu_us(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / USER_HZ)
}

/// CPU time of this process so far, µs (all threads, ended ones included).
pub fn process_cpu_us() -> Option<u64> {
    stat_cpu_us(&fs::read_to_string("/proc/self/stat").ok()?)
}

/// CPU time of the calling thread so far, µs.
pub fn thread_cpu_us() -> Option<u64> {
    stat_cpu_us(&fs::read_to_string("/proc/thread-self/stat").ok()?)
}

/// CPU time of the live threads whose name starts with `prefix`, µs (0 when none has
/// it yet: a thread names itself once it runs, so one just started may not).
pub fn threads_cpu_us(prefix: &str) -> Option<u64> {
    named_threads_cpu_us(prefix).map(|(us, _)| us)
}

/// CPU time of the threads whose name starts with `prefix`, µs, when some live thread
/// has it (a name that changed is then not read as no CPU): for threads that run long
/// before the reading.
pub fn threads_cpu_us_found(prefix: &str) -> Option<u64> {
    named_threads_cpu_us(prefix).and_then(|(us, found)| found.then_some(us))
}

/// CPU time of the live threads whose name starts with `prefix`, µs, and whether any
/// did.
fn named_threads_cpu_us(prefix: &str) -> Option<(u64, bool)> {
    let mut total = 0;
    let mut found = false;
    for entry in fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = entry.path();
        let Ok(name) = fs::read_to_string(path.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        if let Some(us) = fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| stat_cpu_us(&s))
        {
            total += us;
            found = true;
        }
    }
    Some((total, found))
}

/// A `Key:   value kB` line of `/proc/self/status`, in bytes.
fn status_kib(key: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resident set size now, bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS")
}

/// Anonymous resident memory now, bytes (`RssAnon`: the heap and stacks, not mapped
/// files such as the journal's segments).
pub fn rss_anon_bytes() -> Option<u64> {
    status_kib("RssAnon")
}

/// Peak resident set size since start or the last [`reset_peak_rss`], bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM")
}

/// Starts a new peak-RSS window (writing 5 to `/proc/self/clear_refs`); best effort:
/// returns whether the kernel took it.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes this process caused to be sent to the storage layer so far (`write_bytes` of
/// `/proc/self/io`: page-cache writeback and direct IO it is charged for).
pub fn disk_write_bytes() -> Option<u64> {
    let io = fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// The block device holding `path` as `/proc/diskstats` names it (`vda`, `nvme0n1p2`),
/// found by the device number of the file system; `None` for file systems without one
/// (tmpfs, overlay) or off Linux.
pub fn block_device_of(path: &Path) -> Option<String> {
    let dev = fs::metadata(path).ok()?.dev();
    // Linux's dev_t encoding (glibc's gnu_dev_major/minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    if major == 0 {
        return None; // an anonymous device: no disk behind it
    }
    let stats = fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (ma, mi, name) = (fields.next()?, fields.next()?, fields.next()?);
        (ma.parse() == Ok(major) && mi.parse() == Ok(minor)).then(|| name.to_owned())
    })
}

/// Bytes written to block device `name` since boot, by every process: sectors written
/// (field 10 of `/proc/diskstats`, always in 512-byte units) × 512.
pub fn device_write_bytes(name: &str) -> Option<u64> {
    let stats = fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) != Some(&name) {
            return None;
        }
        fields
            .get(9)?
            .parse::<u64>()
            .ok()
            .map(|sectors| sectors * 512)
    })
}

/// Online CPUs.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Time all of the machine's CPUs spent, from the `cpu` line of `/proc/stat`, in clock
/// ticks: every process's, the kernel's and the host's (on a VM, `steal` is time a CPU
/// wanted to run and the hypervisor ran something else).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCpu {
    /// user, nice, system, irq and softirq (guest time is already in user and nice).
    pub busy: u64,
    /// idle and iowait (a CPU with nothing to run while some task waits for I/O; on
    /// Linux this includes threads waiting on io_uring completions).
    pub idle: u64,
    /// steal.
    pub steal: u64,
    /// Time some task waited for I/O, when the kernel reports it.
    pub io: Option<IoStall>,
}

/// The `some` line of `/proc/pressure/io` (time in which at least one task was stalled
/// waiting for I/O, every process's, µs since boot) and when it was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStall {
    /// `total=` of the `some` line, µs.
    pub some_us: u64,
    /// When it was read, µs of a monotonic clock.
    pub at_us: u64,
}

/// `total=` of the `some` line of a `/proc/pressure/io` text.
fn parse_io_pressure(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

/// µs since this process first asked.
fn monotonic_us() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_micros(),
    )
    .unwrap_or(u64::MAX)
}

/// I/O stall time so far; `None` without pressure stall information (kernels before
/// 4.20, or built without it).
pub fn io_stall() -> Option<IoStall> {
    let at_us = monotonic_us();
    Some(IoStall {
        some_us: parse_io_pressure(&fs::read_to_string("/proc/pressure/io").ok()?)?,
        at_us,
    })
}

/// Shares of all CPUs' time between two [`HostCpu`] readings; they sum to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostShares {
    /// Running anything.
    pub busy: f64,
    /// Idle, waiting for I/O included.
    pub idle: f64,
    /// Taken by the hypervisor.
    pub steal: f64,
    /// Share of the wall time in which some task waited for I/O, when both readings
    /// have it.
    pub io_stalled: Option<f64>,
}

fn parse_host_cpu(stat: &str) -> Option<HostCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle, then (since 2.6) iowait irq softirq, (2.6.11) steal.
    if ticks.len() < 4 {
        return None;
    }
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    Some(HostCpu {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        idle: at(3) + at(4),
        steal: at(7),
        io: None,
    })
}

/// All CPUs' time so far, and the I/O stall time.
pub fn host_cpu() -> Option<HostCpu> {
    let mut host = parse_host_cpu(&fs::read_to_string("/proc/stat").ok()?)?;
    host.io = io_stall();
    Some(host)
}

impl HostCpu {
    /// How the CPUs' time since `before` was shared; `None` when no tick passed (or the
    /// counters went backwards).
    pub fn shares_since(&self, before: &HostCpu) -> Option<HostShares> {
        let busy = self.busy.checked_sub(before.busy)?;
        let idle = self.idle.checked_sub(before.idle)?;
        let steal = self.steal.checked_sub(before.steal)?;
        let total = (busy + idle + steal) as f64;
        let io_stalled = self.io.zip(before.io).and_then(|(after, before)| {
            let stalled = after.some_us.checked_sub(before.some_us)?;
            let wall = after.at_us.checked_sub(before.at_us)?;
            (wall > 0).then(|| (stalled as f64 / wall as f64).min(1.0))
        });
        (total > 0.0).then(|| HostShares {
            busy: busy as f64 / total,
            idle: idle as f64 / total,
            steal: steal as f64 / total,
            io_stalled,
        })
    }
}

/// A reading of the counters above, to subtract.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// Process CPU, µs.
    pub cpu_us: Option<u64>,
    /// Sink threads' CPU, µs.
    pub sink_cpu_us: Option<u64>,
    /// The embedded engine's journal threads' CPU (its syncs), µs; `None` without them.
    pub journal_cpu_us: Option<u64>,
    /// Bytes written.
    pub write_bytes: Option<u64>,
    /// The machine's CPU time.
    pub host: Option<HostCpu>,
}

impl Snapshot {
    /// Reads now; `sink_prefix` names the sink's threads.
    pub fn take(sink_prefix: &str) -> Snapshot {
        Snapshot {
            cpu_us: process_cpu_us(),
            sink_cpu_us: threads_cpu_us(sink_prefix),
            journal_cpu_us: threads_cpu_us_found(herald_journal::THREAD_NAME_PREFIX),
            write_bytes: disk_write_bytes(),
            host: host_cpu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_found_by_their_names_only() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hb-threads-probe".into())
            .spawn(move || {
                started_tx.send(()).unwrap();
                let _ = done_rx.recv();
            })
            .unwrap();
        started_rx.recv().unwrap();
        assert!(threads_cpu_us_found("hb-threads-pro").is_some());
        assert_eq!(threads_cpu_us_found("hb-no-such-thread"), None);
        assert_eq!(threads_cpu_us("hb-no-such-thread"), Some(0));
        done_tx.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu_us(line), Some(3_000_000));
        assert_eq!(stat_cpu_us("garbage"), None);
    }

    #[test]
    fn host_cpu_shares_come_from_the_cpu_line() {
        let before = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        let after = "cpu  160 10 70 860 70 5 15 10 0 0\ncpu0 1 1 1 1 1 1 1 1 1 1\n";
        let before = parse_host_cpu(before).unwrap();
        let after = parse_host_cpu(after).unwrap();
        assert_eq!(
            after,
            HostCpu {
                busy: 160 + 10 + 70 + 5 + 15,
                idle: 930,
                steal: 10,
                io: None,
            }
        );
        // 110 busy, 80 idle (iowait included), 10 stolen of 200 ticks.
        let shares = after.shares_since(&before).unwrap();
        assert!((shares.busy - 0.55).abs() < 1e-9, "{shares:?}");
        assert!((shares.idle - 0.40).abs() < 1e-9, "{shares:?}");
        assert!((shares.steal - 0.05).abs() < 1e-9, "{shares:?}");
        assert_eq!(after.shares_since(&after), None, "no tick passed");
        assert_eq!(before.shares_since(&after), None, "counters went backwards");
        // Kernels before steal was counted: four fields are enough.
        assert_eq!(
            parse_host_cpu("cpu 1 2 3 4\n"),
            Some(HostCpu {
                busy: 6,
                idle: 4,
                steal: 0,
                io: None,
            })
        );
        assert_eq!(parse_host_cpu("cpu 1 2 3\n"), None);
        assert_eq!(
            parse_host_cpu("cpu0 1 2 3 4 5\n"),
            None,
            "only the total line"
        );
        assert_eq!(parse_host_cpu("cpu 1 x 3 4\n"), None);
    }

    #[test]
    fn io_stalls_are_a_share_of_the_wall_time_between_readings() {
        let text = "some avg10=0.00 avg60=1.37 avg300=4.44 total=729841737\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=406780330\n";
        assert_eq!(parse_io_pressure(text), Some(729_841_737));
        assert_eq!(parse_io_pressure("full avg10=0.00 total=5\n"), None);
        assert_eq!(parse_io_pressure("some avg10=0.00 total=x\n"), None);
        let at = |some_us, at_us| HostCpu {
            busy: at_us,
            idle: 0,
            steal: 0,
            io: Some(IoStall { some_us, at_us }),
        };
        // 250 ms of stalls in a second.
        let shares = at(1_250_000, 2_000_000)
            .shares_since(&at(1_000_000, 1_000_000))
            .unwrap();
        assert!(
            (shares.io_stalled.unwrap() - 0.25).abs() < 1e-9,
            "{shares:?}"
        );
        // Without a reading on either side there is no share.
        let mut without = at(1_250_000, 2_000_000);
        without.io = None;
        let shares = without.shares_since(&at(1_000_000, 1_000_000)).unwrap();
        assert_eq!(shares.io_stalled, None);
    }

    #[test]
    fn readings_exist_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        assert!(process_cpu_us().is_some());
        assert!(thread_cpu_us().is_some());
        assert!(peak_rss_bytes().unwrap() > 0);
        assert!(rss_bytes().unwrap() > 0);
        assert!(host_cpu().is_some());
        if let Some(device) = block_device_of(Path::new(env!("CARGO_MANIFEST_DIR"))) {
            assert!(device_write_bytes(&device).is_some(), "{device}");
        }
        assert_eq!(
            block_device_of(Path::new("/proc")),
            None,
            "procfs has no disk"
        );
        assert_eq!(device_write_bytes("no-such-device"), None);
    }
}
