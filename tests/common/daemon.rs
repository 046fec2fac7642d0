//! The daemon under test.

#![allow(unused_imports)]

use super::*;

/// Path of the `zkcoordd` binary cargo built for this test, or `ZKCOORD_DAEMON_BIN` when set:
/// that lets a measurement run another build (a release binary, or an older commit's) under
/// the same scenario.
pub fn daemon_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| std::env::var("ZKCOORD_DAEMON_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_zkcoordd").to_string()))
}

/// Path of the `zkcoordctl` binary cargo built for this test.
pub fn ctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_zkcoordctl")
}

/// Environment variables that would make a child think it runs under systemd.
pub(crate) const SYSTEMD_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "INVOCATION_ID",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// A `zkcoordd` process with its own temporary directory holding `zkcoord.toml`,
/// `daemon.log`, and whatever the config puts there (destinations, state dir).
///
/// In the TOML text given to `start`/`set_config`, `{dir}` is replaced by that directory, e.g.
/// `state_dir = "{dir}/state"`, `dest = "{dir}/www/nginx.conf"`.
pub struct Daemon {
    name: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: usize,
}

impl Daemon {
    /// Writes the config and starts the daemon.
    pub fn start(name: &str, toml: &str) -> Daemon {
        let mut d = Daemon::prepare(name);
        d.set_config(toml);
        d.spawn();
        d
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with_env(name: &str, toml: &str, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::prepare(name);
        for (k, v) in env {
            d.set_env(k, v);
        }
        d.set_config(toml);
        d.spawn();
        d
    }

    /// A daemon directory without a running daemon: call `set_config` and `spawn` (or
    /// `restart`) later. Useful when the config must name files prepared in `dir()` first.
    pub fn prepare(name: &str) -> Daemon {
        Daemon {
            name: name.to_string(),
            dir: make_tempdir(name),
            env: Vec::new(),
            child: None,
            starts: 0,
        }
    }

    /// Adds an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// (Re)writes `zkcoord.toml`, with `{dir}` replaced by `dir()`. A running daemon sees it on
    /// SIGHUP (`hup()`) or on restart.
    pub fn set_config(&self, toml: &str) {
        let text = toml.replace("{dir}", &self.dir.path().display().to_string());
        fs::write(self.config_path(), text).expect("write zkcoord.toml");
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("zkcoord.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// Starts the daemon; its stdout and stderr are appended to `daemon.log`.
    pub fn spawn(&mut self) {
        assert!(
            !self.is_running(),
            "daemon {} is already running",
            self.name
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon.log");
        let _ = writeln!(
            log,
            "=== harness: starting zkcoordd '{}', start #{} ===",
            self.name, self.starts
        );
        let mut cmd = Command::new(daemon_bin());
        cmd.arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            // Tests log at debug; the benchmark asks for what an installed daemon logs.
            .env("RUST_LOG", std::env::var("ZKCOORD_TEST_RUST_LOG").unwrap_or_else(|_| "zkcoord=debug,info".into()))
            .env("NO_COLOR", "1");
        for k in SYSTEMD_ENV {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log fd")))
            .stderr(Stdio::from(log));
        let child = spawn_tied(cmd).unwrap_or_else(|e| panic!("cannot run {}: {e}", daemon_bin()));
        self.child = Some(child);
    }

    /// Starts the daemon again with the same config, appending to the same log. A daemon that
    /// is still running is SIGKILLed first (call `term()` first for a clean stop).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Pid of the current (or last) process.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("daemon was never started")
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// The exit status if the daemon has exited (not waiting).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the daemon to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("daemon was never started");
        wait_child(child, timeout)
    }

    /// Sends any signal to the daemon.
    pub fn signal(&self, sig: Signal) {
        send_signal(self.pid(), sig)
            .unwrap_or_else(|e| panic!("{sig} to daemon {}: {e}", self.name));
    }

    /// SIGKILL and reap. Harmless if it already exited.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            kill_and_reap(c);
        }
    }

    /// SIGTERM, then wait up to 10 s for the exit status. Panics (after printing the log and
    /// SIGKILLing it) if the daemon does not exit in time.
    pub fn term(&mut self) -> ExitStatus {
        match self.term_within(Duration::from_secs(10)) {
            Some(s) => s,
            None => {
                self.print_log();
                self.kill9();
                panic!("daemon {} did not exit within 10 s of SIGTERM", self.name);
            }
        }
    }

    /// SIGTERM, then wait up to `timeout`; `None` if it is still running (it is left running).
    pub fn term_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.try_exit_status() {
            return Some(s);
        }
        let _ = send_signal(self.pid(), Signal::SIGTERM);
        self.wait_exit(timeout)
    }

    /// SIGSTOP: the process freezes with its sockets open (its ZooKeeper session will expire
    /// after the session timeout).
    pub fn stop_signal(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn cont(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGHUP (re-read the config).
    pub fn hup(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// Everything in `daemon.log` so far (all starts).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path(), lines)
    }

    /// Waits until `daemon.log` contains `needle`; panics with the log tail otherwise.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            if start.elapsed() >= timeout {
                self.print_log();
                panic!(
                    "daemon {}: no {needle:?} in its log after {timeout:?}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prints the whole `daemon.log` to stderr (shown by cargo test for failing tests).
    pub fn print_log(&self) {
        eprintln!(
            "----- daemon '{}' log ({}) -----\n{}\n----- end of daemon '{}' log -----",
            self.name,
            self.log_path().display(),
            self.log(),
            self.name
        );
    }
}

/// Lazily unmounts every mount point below `dir` (deepest first), so that a test that mounted
/// something there (a tiny tmpfs, a read-only bind) does not leave its temporary directory behind.
pub(crate) fn unmount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.clone()) {
            // SAFETY: a valid NUL-terminated path.
            let rc = unsafe { nix::libc::umount2(c.as_ptr(), nix::libc::MNT_DETACH) };
            if rc == 0 {
                eprintln!("[harness] unmounted {p} left mounted in a daemon directory");
            }
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // A stopped process still dies of SIGKILL.
            kill_and_reap(c);
        }
        unmount_below(self.dir.path());
        if thread::panicking() {
            eprintln!(
                "----- daemon '{}' log tail ({}) -----\n{}\n-----",
                self.name,
                self.log_path().display(),
                self.log_tail(200)
            );
        }
    }
}

/// Describes how a process ended, e.g. "exit 0" or "signal 9".
pub fn describe_status(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{s}"),
    }
}
