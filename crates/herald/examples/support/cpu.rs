//! The process's CPU time, for the examples that measure it.

/// User + system CPU time of this process so far, in µs (`CLOCK_PROCESS_CPUTIME_ID`:
/// every thread's, to the nanosecond rather than `/proc`'s hundredths of a second).
pub fn cpu_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000
}
