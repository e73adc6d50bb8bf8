//! What the process cost: CPU time (whole process and by thread name), peak resident
//! memory and bytes the kernel was asked to write, read from `/proc` (Linux). Every
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

/// CPU time of the live threads whose name starts with `prefix`, µs.
pub fn threads_cpu_us(prefix: &str) -> Option<u64> {
    let mut total = 0;
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
        }
    }
    Some(total)
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

/// A reading of the counters above, to subtract.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// Process CPU, µs.
    pub cpu_us: Option<u64>,
    /// Sink threads' CPU, µs.
    pub sink_cpu_us: Option<u64>,
    /// Bytes written.
    pub write_bytes: Option<u64>,
}

impl Snapshot {
    /// Reads now; `sink_prefix` names the sink's threads.
    pub fn take(sink_prefix: &str) -> Snapshot {
        Snapshot {
            cpu_us: process_cpu_us(),
            sink_cpu_us: threads_cpu_us(sink_prefix),
            write_bytes: disk_write_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu_us(line), Some(3_000_000));
        assert_eq!(stat_cpu_us("garbage"), None);
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
        assert!(threads_cpu_us("no-such-thread").is_some());
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
