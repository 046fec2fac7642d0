//! The standard process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`, `process_max_fds`, `process_virtual_memory_bytes`,
//! `process_start_time_seconds`), read from `/proc/self` at each scrape.
//!
//! Why our own: prometheus-client has no process collector, and these names are the ones every
//! Prometheus client library exports, so the usual dashboards and alerts (memory growth, fd
//! exhaustion, restarts) work unchanged. Where `/proc` is missing nothing is exported.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat` times: Linux reports them in USER_HZ, which
/// is 100 on every architecture (it is part of the user-space ABI).
const USER_HZ: f64 = 100.0;

/// Encodes the process metrics on each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    /// Resident set size in bytes.
    pub resident_bytes: Option<f64>,
    /// Virtual memory size in bytes.
    pub virtual_bytes: Option<f64>,
    /// User plus system CPU time in seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, in seconds since the epoch.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<f64>,
}

/// Fields of `/proc/self/stat` after the command name, which may itself hold spaces and
/// parentheses: split after the last `)`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default()
}

impl ProcessStats {
    /// Reads `/proc/self`; each value is absent when its file cannot be read.
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields = stat_fields(&stat);
        // After the command: state is field 3 of stat(5), so field N is index N - 3.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok())));
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok()).map(|k| k * 1024.0)
        };
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok());
        ProcessStats {
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            cpu_seconds: field(14).zip(field(15)).map(|(u, s)| (u + s) / USER_HZ),
            start_time_seconds: boot_time.zip(field(22)).map(|(b, t)| b + t / USER_HZ),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64),
            max_fds,
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessStats::read();
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", s.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", s.virtual_bytes),
            ("process_start_time_seconds", "Start time of the process since the epoch in seconds", s.start_time_seconds),
            ("process_open_fds", "Number of open file descriptors", s.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", s.max_fds),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor("process_cpu_seconds", "Total user and system CPU time spent in seconds", None, c.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 1000 200";
        let f = stat_fields(stat);
        assert_eq!(f[0], "S");
        assert_eq!(f[14 - 3], "250");
        assert_eq!(f[22 - 3], "12345");
    }

    #[test]
    fn this_process_reads_as_alive_with_memory_cpu_and_fds() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 1e5), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3.0), "{s:?}");
        assert!(s.cpu_seconds.is_some(), "{s:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(s.start_time_seconds.is_some_and(|t| t <= now + 1.0 && t > now - 86400.0 * 365.0), "{s:?}");
    }
}
