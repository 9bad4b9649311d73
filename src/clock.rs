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

/// With `ODU_REPORT_PEAK_RSS` set, prints the peak RSS on stderr: benchmarks read it.
pub fn report_peak_rss(who: &str) {
    if std::env::var_os("ODU_REPORT_PEAK_RSS").is_some()
        && let Some(kib) = peak_rss_kib()
    {
        eprintln!("{who}: peak rss {kib} KiB, cpu {} ms", own_cpu_ms());
    }
}

/// CPU time this process used itself (user + system), children excluded.
pub fn own_cpu_ms() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we pass and has no other effect.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}
