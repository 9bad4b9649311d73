//! Time: the wall clock as the model takes it (milliseconds since the Unix epoch), the boot
//! clock every process of the machine shares, and deadlines a `select!` waits on.

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Resolves at `deadline`, or never without one: a timer arm of a `select!` that is armed
/// only while something is due.
pub async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Nanoseconds since boot, one clock for every process of the machine (`CLOCK_BOOTTIME` on
/// Linux, counting suspended time as the kernel's process start times do; `CLOCK_MONOTONIC`
/// elsewhere).
pub fn boot_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    #[cfg(target_os = "linux")]
    let clock = libc::CLOCK_BOOTTIME;
    #[cfg(not(target_os = "linux"))]
    let clock = libc::CLOCK_MONOTONIC;
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    unsafe { libc::clock_gettime(clock, &mut now) };
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
}

/// The process's peak resident set size in KiB (`VmHWM`), where the platform tells it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// With `ODU_REPORT_PEAK_RSS` set, prints the peak RSS and the CPU time on stderr: benchmarks
/// read it. The CPU is parted into user and system time: most of a runner's is the kernel's
/// work for each node process (its clone, exec, pipe and reaping).
pub fn report_peak_rss(who: &str) {
    if std::env::var_os("ODU_REPORT_PEAK_RSS").is_some()
        && let Some(kib) = peak_rss_kib()
    {
        let cpu = own_cpu();
        let ms = |us: u64| us / 1000;
        eprintln!(
            "{who}: peak rss {kib} KiB, cpu {} ms, user {} ms, system {} ms",
            ms(cpu.user_us + cpu.system_us),
            ms(cpu.user_us),
            ms(cpu.system_us)
        );
    }
}

/// CPU time a process used itself, children excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    pub user_us: u64,
    pub system_us: u64,
}

/// CPU time this process used itself (user and system), children excluded.
pub fn own_cpu() -> CpuTime {
    // SAFETY: getrusage fills the zeroed struct we pass and has no other effect.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    CpuTime { user_us: us(usage.ru_utime), system_us: us(usage.ru_stime) }
}
