//! Durations in Go's `time.Duration` form (`4s`, `1m0s`, `1h2m3s`), truncated to seconds.

pub fn go_duration(ms: u64) -> String {
    let total = ms / 1000;
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn renders_go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(4000), "4s");
        assert_eq!(go_duration(58_900), "58s");
        assert_eq!(go_duration(60_000), "1m0s");
        assert_eq!(go_duration(206_000), "3m26s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
        assert_eq!(go_duration(3_723_000), "1h2m3s");
    }
}
