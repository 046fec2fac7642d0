//! The clocks, in one place: wall time for what other hosts read (metadata, rollout records,
//! status ages), CLOCK_MONOTONIC for what only this host compares (leadership intervals,
//! lease order).

/// Seconds since the Unix epoch; what metadata and status reports carry.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Milliseconds since the Unix epoch; comparable with ZooKeeper's `ctime` and `mtime`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Microseconds on CLOCK_MONOTONIC: one clock for every process on the host, so leadership
/// intervals logged by different agents can be compared.
pub fn monotonic_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}
