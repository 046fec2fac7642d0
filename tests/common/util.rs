//! Small utilities.

#![allow(unused_imports)]

use super::*;

/// How long a ZooKeeper server (or ensemble) may take to start serving.
pub const ZK_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Debian's `zookeeper` package puts the server.
pub const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
pub const ZK_CONF_DIR: &str = "/etc/zookeeper/conf";

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn keep_dirs() -> bool {
    matches!(std::env::var("ZKCOORD_TEST_KEEP").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

pub(crate) fn make_tempdir(prefix: &str) -> tempfile::TempDir {
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("zkcoord-{prefix}-"))
        .tempdir()
        .expect("create a temporary directory");
    if keep_dirs() {
        dir.disable_cleanup(true);
        eprintln!("[harness] keeping {}", dir.path().display());
    }
    dir
}

/// Last `n` lines of a (log) file, lossily decoded; empty if it cannot be read.
pub fn file_tail(path: &Path, n: usize) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Sends `sig` to `pid`. Errors (e.g. no such process) are returned, not panicked.
pub fn send_signal(pid: u32, sig: Signal) -> nix::Result<()> {
    kill(Pid::from_raw(pid as i32), sig)
}

/// Waits for `child` to exit, up to `timeout`. `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL and reap. Harmless if the child already exited.
pub(crate) fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = send_signal(child.id(), Signal::SIGKILL);
    }
    let _ = child.wait();
}
