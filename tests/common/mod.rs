#![allow(dead_code)]
//! Integration-test harness for zkcoord.
//!
//! Every test that needs ZooKeeper starts a real one here (Debian's `zookeeper` package,
//! installed by `scripts/install-deps.sh`); nothing is mocked. Each test gets its own ports,
//! data directories and daemon directories, so tests run in parallel.
//!
//! Use from `tests/<name>.rs` with `mod common;` and `use common::*;`.
//!
//! Async tests should use `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`: the
//! process helpers here (`ZkEnsemble::*`, `Daemon::*`, `ctl`) block the calling thread, and a
//! current-thread runtime would stall the test's own ZooKeeper client meanwhile.
//!
//! Everything this harness spawns (ZooKeeper servers, daemons) is SIGKILLed when its owner is
//! dropped, and also by the kernel if the test process dies (PR_SET_PDEATHSIG), so nothing
//! outlives a killed test run.
//!
//! Set `ZKCOORD_TEST_KEEP=1` to keep the temporary directories (logs, data) of a run; their
//! paths are printed when they are kept.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// How long a ZooKeeper server (or ensemble) may take to start serving.
pub const ZK_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Debian's `zookeeper` package puts the server.
pub const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
pub const ZK_CONF_DIR: &str = "/etc/zookeeper/conf";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn keep_dirs() -> bool {
    matches!(std::env::var("ZKCOORD_TEST_KEEP").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

fn make_tempdir(prefix: &str) -> tempfile::TempDir {
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
fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = send_signal(child.id(), Signal::SIGKILL);
    }
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Spawning children that die with the test process
// ---------------------------------------------------------------------------------------------

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// All children are forked from one long-lived thread, because PR_SET_PDEATHSIG fires when the
/// *thread* that forked the child exits (test threads and tokio's blocking threads come and go).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the harness spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that the kernel SIGKILLs it if this test process dies.
pub fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if nix::libc::getppid() as u32 != parent {
                // The test process is already gone.
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    lock(spawner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

fn ephemeral_port_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A free TCP port on 127.0.0.1 that no other caller in this process has been given.
///
/// Picked at random *outside* the kernel's ephemeral range (so that no outgoing connection can
/// take it between now and the moment the server binds it) and checked by binding it. Another
/// process can still take it in between; `ZkEnsemble` retries with new ports when it sees a
/// bind failure.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    let (lo, hi) = ephemeral_port_range();
    let mut ranges: Vec<(u16, u16)> = Vec::new(); // [a, b)
    if lo > 10_240 {
        ranges.push((10_240, lo));
    }
    if hi < 65_000 {
        ranges.push((hi + 1, 65_535));
    }
    let total: u32 = ranges.iter().map(|(a, b)| (b - a) as u32).sum();
    let mut rng = rand::thread_rng();
    if total > 1000 {
        for _ in 0..10_000 {
            let mut k = rng.gen_range(0..total);
            let mut port = 0;
            for (a, b) in &ranges {
                let len = (b - a) as u32;
                if k < len {
                    port = a + k as u16;
                    break;
                }
                k -= len;
            }
            let mut set = lock(given);
            if port == 0 || set.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                set.insert(port);
                return port;
            }
        }
    }
    // Fallback: let the kernel choose.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if lock(given).insert(port) {
            return port;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ZooKeeper four-letter words
// ---------------------------------------------------------------------------------------------

/// Sends a four-letter word (`srvr`, `cons`, `mntr`, `ruok`, ...) to 127.0.0.1:`port` and
/// returns the answer, or `None` if the server does not answer within ~2 s.
pub fn four_letter(port: u16, cmd: &str) -> Option<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    if out.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The `Mode:` line of `srvr` (`standalone`, `leader`, `follower`), or `None` when the server
/// is down or not serving.
pub fn zk_mode(port: u16) -> Option<String> {
    let out = four_letter(port, "srvr")?;
    out.lines()
        .find_map(|l| l.strip_prefix("Mode:"))
        .map(|m| m.trim().to_string())
}

fn is_serving_mode(mode: &str) -> bool {
    matches!(mode, "standalone" | "leader" | "follower")
}

// ---------------------------------------------------------------------------------------------
// ZooKeeper servers
// ---------------------------------------------------------------------------------------------

/// One ZooKeeper server process (a member of a `ZkEnsemble`).
pub struct ZkServer {
    /// 0-based index in the ensemble; `myid` is `index + 1`.
    index: usize,
    dir: tempfile::TempDir,
    cfg_path: PathBuf,
    log_path: PathBuf,
    client_port: u16,
    peer_port: u16,
    election_port: u16,
    child: Option<Child>,
    starts: usize,
    /// Extra JVM arguments (e.g. a JAAS file for SASL).
    jvm_args: Vec<String>,
}

/// Extra server settings for tests of TLS and SASL: zoo.cfg lines (`{dir}` is the server's own
/// directory) and JVM arguments.
#[derive(Clone, Debug, Default)]
pub struct ZkExtra {
    pub cfg: String,
    pub jvm_args: Vec<String>,
}

impl ZkServer {
    pub fn index(&self) -> usize {
        self.index
    }
    pub fn client_port(&self) -> u16 {
        self.client_port
    }
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }
    pub fn election_port(&self) -> u16 {
        self.election_port
    }
    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> &Path {
        &self.cfg_path
    }
    /// The server's stdout+stderr (log4j console output), appended across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path, lines)
    }
    /// Pid of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }
    /// The `Mode:` of `srvr`, `None` if down or not serving.
    pub fn mode(&self) -> Option<String> {
        zk_mode(self.client_port)
    }
    pub fn is_serving(&self) -> bool {
        self.mode().is_some_and(|m| is_serving_mode(&m))
    }

    fn java_command(&self) -> Command {
        let java = std::env::var("ZKCOORD_TEST_JAVA").unwrap_or_else(|_| "java".into());
        let mut cp = format!("{ZK_CONF_DIR}:{ZK_JAR}");
        // Debian's zookeeper.jar has no slf4j binding on its class path, so the server would log
        // nothing at all; these two (dependencies of the package) make its log useful.
        for extra in [
            "/usr/share/java/slf4j-log4j12.jar",
            "/usr/share/java/log4j-1.2.jar",
            // The secure client port (Netty) needs netty-codec, which the jar's manifest omits.
            "/usr/share/java/netty-codec.jar",
        ] {
            if Path::new(extra).exists() {
                cp.push(':');
                cp.push_str(extra);
            }
        }
        let mut cmd = Command::new(java);
        cmd.arg("-Xmx256m").args(&self.jvm_args)
            .arg("-cp")
            .arg(cp)
            .arg("-Dzookeeper.root.logger=INFO,CONSOLE")
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.path().display()))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&self.cfg_path);
        cmd
    }

    /// Starts the process (same config and data directory as before). Does not wait.
    fn spawn(&mut self) {
        assert!(
            !self.is_running(),
            "ZooKeeper server {} is already running",
            self.index
        );
        if !Path::new(ZK_JAR).exists() {
            panic!(
                "{ZK_JAR} is missing: install ZooKeeper first (scripts/install-deps.sh, which \
                 `make test` runs)"
            );
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open ZooKeeper log file");
        let _ = writeln!(
            log,
            "=== harness: starting ZooKeeper server {} (myid {}), start #{} ===",
            self.index,
            self.index + 1,
            self.starts
        );
        let mut cmd = self.java_command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log fd")))
            .stderr(Stdio::from(log));
        let child =
            spawn_tied(cmd).unwrap_or_else(|e| panic!("cannot run java for ZooKeeper: {e}"));
        self.child = Some(child);
    }

    /// SIGKILL and reap. No-op if not running.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    fn saw_bind_error(&self) -> bool {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        log.contains("BindException") || log.contains("Address already in use")
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- ZooKeeper server {} (client port {}, log {}) last lines:\n{}\n---",
            self.index,
            self.client_port,
            self.log_path.display(),
            self.log_tail(40)
        )
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A ZooKeeper ensemble of 1 (standalone) or 3 servers on loopback, with tickTime=200 (sessions
/// from 0.4 s to 20 s allowed).
pub struct ZkEnsemble {
    servers: Vec<ZkServer>,
}

impl ZkEnsemble {
    /// One standalone server, serving when this returns.
    pub fn single() -> ZkEnsemble {
        Self::with_size(1)
    }

    /// Three servers in a quorum, all serving when this returns.
    pub fn three() -> ZkEnsemble {
        Self::with_size(3)
    }

    /// `n` servers (1 = standalone). Retries with fresh ports if a port was taken meanwhile.
    pub fn with_size(n: usize) -> ZkEnsemble {
        Self::with_extra(n, &ZkExtra::default())
    }

    /// One standalone server with extra settings.
    pub fn single_with(extra: &ZkExtra) -> ZkEnsemble {
        Self::with_extra(1, extra)
    }

    /// `n` servers with extra settings.
    pub fn with_extra(n: usize, extra: &ZkExtra) -> ZkEnsemble {
        assert!(n >= 1);
        let started = Instant::now();
        let mut failures = Vec::new();
        for attempt in 1..=4 {
            let mut ens = Self::configure(n, extra);
            for s in ens.servers.iter_mut() {
                s.spawn();
            }
            let all: Vec<usize> = (0..n).collect();
            match ens.wait_serving(&all, ZK_START_TIMEOUT) {
                Ok(()) => {
                    eprintln!(
                        "[harness] ZooKeeper x{n} serving at {} after {:.1?}",
                        ens.connect_string(),
                        started.elapsed()
                    );
                    return ens;
                }
                Err(e) => {
                    let bind = ens.servers.iter().any(|s| s.saw_bind_error());
                    failures.push(format!("attempt {attempt}: {e}"));
                    drop(ens);
                    if !bind {
                        break;
                    }
                    eprintln!("[harness] ZooKeeper port clash, retrying with new ports");
                }
            }
        }
        panic!("ZooKeeper x{n} did not start:\n{}", failures.join("\n"));
    }

    fn configure(n: usize, extra: &ZkExtra) -> ZkEnsemble {
        let mut servers = Vec::with_capacity(n);
        for index in 0..n {
            let dir = make_tempdir(&format!("zk{}", index + 1));
            servers.push(ZkServer {
                index,
                cfg_path: dir.path().join("zoo.cfg"),
                log_path: dir.path().join("zookeeper.log"),
                dir,
                client_port: free_port(),
                peer_port: free_port(),
                election_port: free_port(),
                child: None,
                starts: 0,
                jvm_args: extra.jvm_args.clone(),
            });
        }
        let quorum: String = if n > 1 {
            servers
                .iter()
                .map(|s| {
                    format!(
                        "server.{}=127.0.0.1:{}:{}\n",
                        s.index + 1,
                        s.peer_port,
                        s.election_port
                    )
                })
                .collect()
        } else {
            String::new()
        };
        for s in &servers {
            let data = s.dir.path().join("data");
            fs::create_dir_all(&data).expect("create ZooKeeper dataDir");
            if n > 1 {
                fs::write(data.join("myid"), format!("{}\n", s.index + 1)).expect("write myid");
            }
            let cfg = format!(
                "tickTime=200\n\
                 initLimit=20\n\
                 syncLimit=10\n\
                 dataDir={}\n\
                 clientPort={}\n\
                 clientPortAddress=127.0.0.1\n\
                 4lw.commands.whitelist=*\n\
                 admin.enableServer=false\n\
                 minSessionTimeout=400\n\
                 maxSessionTimeout=20000\n\
                 maxClientCnxns=0\n\
                 preAllocSize=4096\n\
                 {quorum}{}",
                data.display(),
                s.client_port,
                extra.cfg.replace("{dir}", &s.dir.path().display().to_string())
            );
            fs::write(&s.cfg_path, cfg).expect("write zoo.cfg");
        }
        ZkEnsemble { servers }
    }

    /// Waits until every server in `which` answers `srvr` with a serving mode.
    pub fn wait_serving(&mut self, which: &[usize], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<usize> = which.to_vec();
        loop {
            let mut still = Vec::new();
            for &i in &pending {
                let s = &mut self.servers[i];
                if let Some(c) = s.child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        return Err(format!(
                            "ZooKeeper server {i} exited ({status}) while starting\n{}",
                            s.diagnostics()
                        ));
                    }
                } else {
                    return Err(format!("ZooKeeper server {i} is not running"));
                }
                if !s.is_serving() {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let diag: Vec<String> = pending
                    .iter()
                    .map(|&i| self.servers[i].diagnostics())
                    .collect();
                return Err(format!(
                    "ZooKeeper server(s) {pending:?} not serving after {timeout:?}\n{}",
                    diag.join("\n")
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to `ZK_START_TIMEOUT`) until every running server is serving; panics otherwise.
    pub fn wait_all_serving(&mut self) {
        let running: Vec<usize> = (0..self.len())
            .filter(|&i| self.servers[i].is_running())
            .collect();
        if let Err(e) = self.wait_serving(&running, ZK_START_TIMEOUT) {
            panic!("{e}");
        }
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn server(&self, i: usize) -> &ZkServer {
        &self.servers[i]
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...` for all servers (running or not).
    pub fn connect_string(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.address())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connect string naming only the given servers.
    pub fn connect_string_of(&self, which: &[usize]) -> String {
        which
            .iter()
            .map(|&i| self.servers[i].address())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client port of server `i`.
    pub fn server_port(&self, i: usize) -> u16 {
        self.servers[i].client_port
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].pid()
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.servers[i].is_running()
    }

    /// SIGKILL server `i` (by pid) and reap it. No-op if it is not running.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Restarts server `i` with its old config and data directory. If enough servers are then
    /// running to form a quorum, waits until `i` is serving (panics after `ZK_START_TIMEOUT`);
    /// otherwise returns at once (it cannot serve until another member comes back).
    pub fn start(&mut self, i: usize) {
        self.start_no_wait(i);
        let running = (0..self.len())
            .filter(|&j| self.servers[j].is_running())
            .count();
        if running > self.len() / 2 {
            if let Err(e) = self.wait_serving(&[i], ZK_START_TIMEOUT) {
                panic!("{e}");
            }
        }
    }

    /// Restarts server `i` without waiting for it.
    pub fn start_no_wait(&mut self, i: usize) {
        self.servers[i].spawn();
    }

    /// SIGSTOP server `i` (it keeps its sockets but answers nothing).
    pub fn pause(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            send_signal(pid, Signal::SIGSTOP).expect("SIGSTOP ZooKeeper");
        }
    }

    /// SIGCONT server `i`.
    pub fn resume(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            send_signal(pid, Signal::SIGCONT).expect("SIGCONT ZooKeeper");
        }
    }

    /// `Mode:` of server `i` according to `srvr`.
    pub fn mode(&self, i: usize) -> Option<String> {
        self.servers[i].mode()
    }

    /// The index of the quorum leader (or of the standalone server), by asking `srvr`.
    pub fn leader_index(&self) -> Option<usize> {
        (0..self.len())
            .find(|&i| matches!(self.mode(i).as_deref(), Some("leader") | Some("standalone")))
    }

    /// Any four-letter word to server `i`.
    pub fn four_letter(&self, i: usize, cmd: &str) -> Option<String> {
        four_letter(self.servers[i].client_port, cmd)
    }

    pub fn log_path(&self, i: usize) -> &Path {
        self.servers[i].log_path()
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        self.servers[i].log_tail(lines)
    }

    /// Prints the tail of every server's log to stderr.
    pub fn print_logs(&self) {
        for s in &self.servers {
            eprintln!("{}", s.diagnostics());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ZooKeeper client helpers
// ---------------------------------------------------------------------------------------------

pub fn open_acl_persistent() -> zookeeper_client::CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

/// A client with a 4 s session. Retries for up to 20 s (e.g. while an ensemble elects).
pub async fn zk_client(connect: &str) -> Client {
    zk_client_with_timeout(connect, Duration::from_secs(4)).await
}

/// A client with the given session timeout (the servers accept 0.4 s to 20 s).
pub async fn zk_client_with_timeout(connect: &str, session_timeout: Duration) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connector()
            .with_session_timeout(session_timeout)
            .connect(connect)
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("[harness] connect to {connect}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect to ZooKeeper at {connect}: {e}"),
        }
    }
}

fn transient(e: &ZkError) -> bool {
    matches!(e, ZkError::ConnectionLoss | ZkError::Timeout)
}

/// Retries an idempotent operation on connection loss for up to 15 s.
async fn retry_idempotent<T, F, Fut>(what: &str, mut op: F) -> Result<T, ZkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ZkError>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match op().await {
            Err(e) if transient(&e) && Instant::now() < deadline => {
                eprintln!("[harness] {what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

/// `mkdir -p` with persistent, open-ACL nodes. Existing nodes are fine.
pub async fn create_all(client: &Client, path: &str) {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return;
    }
    let opts = open_acl_persistent();
    retry_idempotent(&format!("mkdir {path}"), || client.mkdir(path, &opts))
        .await
        .unwrap_or_else(|e| panic!("create_all({path}): {e}"));
}

/// Creates a PERSISTENT_SEQUENTIAL node `<path_prefix><10 digits>` (parents must exist) and
/// returns its full path, e.g. `create_seq(c, "/applications/app/conf-", b"..")`.
pub async fn create_seq(client: &Client, path_prefix: &str, data: &[u8]) -> String {
    let opts = CreateMode::PersistentSequential.with_acls(Acls::anyone_all());
    let (_, seq) = client
        .create(path_prefix, data, &opts)
        .await
        .unwrap_or_else(|e| panic!("create_seq({path_prefix}): {e}"));
    format!("{path_prefix}{seq}")
}

/// Creates a persistent node with `data`; `false` if it already existed (data untouched).
pub async fn create(client: &Client, path: &str, data: &[u8]) -> bool {
    match client.create(path, data, &open_acl_persistent()).await {
        Ok(_) => true,
        Err(ZkError::NodeExists) => false,
        Err(e) => panic!("create({path}): {e}"),
    }
}

/// Sets the data of an existing node (any version).
pub async fn set(client: &Client, path: &str, data: &[u8]) {
    client
        .set_data(path, data, None)
        .await
        .unwrap_or_else(|e| panic!("set({path}): {e}"));
}

/// The numeric suffix of a sequential node name (`conf-0000000012` -> 12).
pub fn seq_of(name: &str) -> Option<u64> {
    let name = name.rsplit('/').next().unwrap_or(name);
    let digits = name.len()
        - name
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
    name[digits..].parse().ok()
}

/// Children of `path` (names, not paths), sorted by numeric suffix, then by name.
/// Empty if `path` does not exist.
pub async fn children_sorted(client: &Client, path: &str) -> Vec<String> {
    let mut kids =
        match retry_idempotent(&format!("list {path}"), || client.list_children(path)).await {
            Ok(k) => k,
            Err(ZkError::NoNode) => Vec::new(),
            Err(e) => panic!("children_sorted({path}): {e}"),
        };
    kids.sort_by(|a, b| (seq_of(a), a).cmp(&(seq_of(b), b)));
    kids
}

/// The data of `path`, `None` if it does not exist.
pub async fn get(client: &Client, path: &str) -> Option<Vec<u8>> {
    match retry_idempotent(&format!("get {path}"), || client.get_data(path)).await {
        Ok((data, _)) => Some(data),
        Err(ZkError::NoNode) => None,
        Err(e) => panic!("get({path}): {e}"),
    }
}

/// Deletes `path` (any version); `false` if it did not exist.
pub async fn delete(client: &Client, path: &str) -> bool {
    let mut lost = false;
    loop {
        match client.delete(path, None).await {
            Ok(()) => return true,
            // After a connection loss the delete may have gone through.
            Err(ZkError::NoNode) => return lost,
            Err(e) if transient(&e) => {
                lost = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("delete({path}): {e}"),
        }
    }
}

/// Deletes `path` and everything below it. Missing is fine.
pub async fn delete_all(client: &Client, path: &str) {
    let mut stack = vec![path.to_string()];
    let mut order = Vec::new();
    while let Some(p) = stack.pop() {
        for k in children_sorted(client, &p).await {
            stack.push(if p == "/" {
                format!("/{k}")
            } else {
                format!("{p}/{k}")
            });
        }
        order.push(p);
    }
    for p in order.iter().rev() {
        delete(client, p).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls the async predicate `f` every 50 ms until it returns true; panics naming `what` after
/// `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Blocking version of `wait_until`.
pub fn wait_until_sync<F>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> bool,
{
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------------------------

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
const SYSTEMD_ENV: &[&str] = &[
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
            .env("RUST_LOG", "zkcoord=debug,info")
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
fn unmount_below(dir: &Path) {
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
fn unescape_mountinfo(s: &str) -> String {
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

// ---------------------------------------------------------------------------------------------
// zkcoordctl
// ---------------------------------------------------------------------------------------------

/// How long a `zkcoordctl` run may take before the harness kills it and panics.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A `Command` for `zkcoordctl` with a clean environment for logging; add args and use
/// `run_with_timeout` for anything `ctl`/`ctl_stdin` do not cover (e.g. extra env).
pub fn ctl_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(ctl_bin());
    cmd.args(args).env("NO_COLOR", "1");
    for k in SYSTEMD_ENV {
        cmd.env_remove(k);
    }
    cmd
}

/// Runs `zkcoordctl args...` with empty stdin and returns its output.
pub fn ctl(args: &[&str]) -> Output {
    run_with_timeout(ctl_command(args), b"", CTL_TIMEOUT)
}

/// Runs `zkcoordctl args...` with `input` on stdin.
pub fn ctl_stdin(args: &[&str], input: &[u8]) -> Output {
    run_with_timeout(ctl_command(args), input, CTL_TIMEOUT)
}

/// `ctl` off the async runtime's worker thread.
pub async fn ctl_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        ctl(&refs)
    })
    .await
    .expect("ctl task")
}

/// Runs `cmd` with `input` on stdin, capturing stdout/stderr; SIGKILLs it and panics (showing
/// what it printed) after `timeout`.
pub fn run_with_timeout(mut cmd: Command, input: &[u8], timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_tied(cmd).unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // stdin is closed when dropped here.
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(r) => r.unwrap_or_else(|e| panic!("waiting for {desc}: {e}")),
        Err(_) => {
            let _ = send_signal(pid, Signal::SIGKILL);
            let out = rx.recv().ok().and_then(|r| r.ok());
            let (o, e) = out
                .map(|o| {
                    (
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .unwrap_or_default();
            panic!("{desc} did not finish within {timeout:?}\nstdout:\n{o}\nstderr:\n{e}");
        }
    };
    let _ = writer.join();
    out
}

/// Lossy stdout + stderr of an `Output`, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        describe_status(&o.status),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy for fault injection
// ---------------------------------------------------------------------------------------------

struct ProxyShared {
    target: SocketAddr,
    forwarding: AtomicBool,
    shutdown: AtomicBool,
    /// Open connections: (id, client side, upstream side once connected).
    conns: Mutex<Vec<(usize, TcpStream, Option<TcpStream>)>>,
    next_id: AtomicUsize,
    accepted: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Armed by `drop_after_upload_over`: close the connection right after forwarding a
    /// client-to-server chunk larger than this many bytes (0 = disarmed).
    drop_after_upload_over: AtomicUsize,
    /// How many connections that trap has closed.
    trapped: AtomicUsize,
}

impl ProxyShared {
    fn stopped(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
    fn is_open(&self, id: usize) -> bool {
        lock(&self.conns).iter().any(|(i, _, _)| *i == id)
    }
    fn close(&self, id: usize) {
        let mut conns = lock(&self.conns);
        if let Some(pos) = conns.iter().position(|(i, _, _)| *i == id) {
            let (_, c, u) = conns.remove(pos);
            let _ = c.shutdown(Shutdown::Both);
            if let Some(u) = u {
                let _ = u.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A TCP proxy on 127.0.0.1:<random port> that forwards to `target`.
///
/// - `set_forwarding(false)`: a partition without closed sockets. No byte moves in either
///   direction (what was in flight is held back and delivered when forwarding resumes), and new
///   connections are accepted but not connected onwards until then.
/// - `drop_all()`: closes every current connection (both sides); new ones are still accepted.
///
/// Dropping the proxy closes everything and joins its threads.
pub struct Proxy {
    port: u16,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `target` (anything `ToSocketAddrs`, e.g. "127.0.0.1:2181").
    pub fn new(target: impl ToSocketAddrs) -> Proxy {
        let target = target
            .to_socket_addrs()
            .expect("proxy target address")
            .next()
            .expect("proxy target resolves to no address");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy listener");
        listener
            .set_nonblocking(true)
            .expect("nonblocking proxy listener");
        let port = listener.local_addr().expect("proxy local addr").port();
        let shared = Arc::new(ProxyShared {
            target,
            forwarding: AtomicBool::new(true),
            shutdown: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            drop_after_upload_over: AtomicUsize::new(0),
            trapped: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("proxy-{port}-accept"))
            .spawn(move || Self::accept_loop(listener, sh))
            .expect("spawn proxy thread");
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// A proxy to 127.0.0.1:`port`.
    pub fn to_port(port: u16) -> Proxy {
        Proxy::new(("127.0.0.1", port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, to put in a connect string.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    pub fn set_forwarding(&self, on: bool) {
        self.shared.forwarding.store(on, Ordering::SeqCst);
    }

    pub fn is_forwarding(&self) -> bool {
        self.shared.forwarding.load(Ordering::SeqCst)
    }

    /// Closes all current connections, both sides.
    pub fn drop_all(&self) {
        let mut conns = lock(&self.shared.conns);
        for (_, c, u) in conns.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
            if let Some(u) = u {
                let _ = u.shutdown(Shutdown::Both);
            }
        }
    }

    /// Arms a one-shot trap: the next client-to-server chunk larger than `bytes` (a request,
    /// not a ping) is forwarded, and then its connection is closed before any reply gets back.
    /// This is "the connection dropped right after the request passed".
    pub fn drop_after_upload_over(&self, bytes: usize) {
        self.shared.drop_after_upload_over.store(bytes.max(1), Ordering::SeqCst);
    }

    /// How many connections the trap has closed.
    pub fn trapped(&self) -> usize {
        self.shared.trapped.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Connections accepted since the proxy started.
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    fn spawn_worker(sh: &Arc<ProxyShared>, name: String, f: impl FnOnce() + Send + 'static) {
        let h = thread::Builder::new()
            .name(name)
            .spawn(f)
            .expect("spawn proxy thread");
        let mut threads = lock(&sh.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(h);
    }

    fn accept_loop(listener: TcpListener, sh: Arc<ProxyShared>) {
        while !sh.stopped() {
            match listener.accept() {
                Ok((client, _)) => {
                    sh.accepted.fetch_add(1, Ordering::SeqCst);
                    let id = sh.next_id.fetch_add(1, Ordering::SeqCst);
                    let Ok(c2) = client.try_clone() else { continue };
                    lock(&sh.conns).push((id, c2, None));
                    let sh2 = sh.clone();
                    Self::spawn_worker(&sh, format!("proxy-conn-{id}"), move || {
                        Self::connection(id, client, sh2)
                    });
                }
                Err(ref e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn connection(id: usize, client: TcpStream, sh: Arc<ProxyShared>) {
        let _ = client.set_nonblocking(false);
        // A partition: hold the new connection until forwarding resumes (or it is dropped).
        while !sh.forwarding.load(Ordering::SeqCst) {
            if sh.stopped() || !sh.is_open(id) {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let upstream = match TcpStream::connect_timeout(&sh.target, Duration::from_secs(2)) {
            Ok(u) => u,
            Err(_) => {
                sh.close(id);
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let _ = client.set_nodelay(true);
        {
            let mut conns = lock(&sh.conns);
            match conns.iter_mut().find(|(i, _, _)| *i == id) {
                Some(entry) => entry.2 = upstream.try_clone().ok(),
                None => {
                    // Dropped while we were connecting.
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = upstream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
            sh.close(id);
            return;
        };
        let sh_up = sh.clone();
        let up = thread::Builder::new()
            .name(format!("proxy-conn-{id}-up"))
            .spawn(move || Self::pump(id, client, upstream, sh_up, true))
            .expect("spawn proxy pump");
        Self::pump(id, u2, c2, sh.clone(), false);
        let _ = up.join();
        sh.close(id);
    }

    /// Copies `from` -> `to` while the connection is open, holding bytes while not forwarding.
    fn pump(id: usize, mut from: TcpStream, mut to: TcpStream, sh: Arc<ProxyShared>, upward: bool) {
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if sh.stopped() {
                break;
            }
            // While partitioned, read nothing (the sender's kernel buffers fill up).
            if !sh.forwarding.load(Ordering::SeqCst) {
                if !sh.is_open(id) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            let n = match from.read(&mut buf) {
                Ok(0) => {
                    // Half-close onwards; the other direction may still be talking.
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => n,
                Err(ref e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(ref e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            // Bytes read just as forwarding stopped are held until it resumes.
            while !sh.forwarding.load(Ordering::SeqCst) {
                if sh.stopped() || !sh.is_open(id) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            if sh.stopped() || !sh.is_open(id) || to.write_all(&buf[..n]).is_err() {
                break;
            }
            if upward {
                let limit = sh.drop_after_upload_over.load(Ordering::SeqCst);
                if limit > 0
                    && n > limit
                    && sh.drop_after_upload_over.compare_exchange(limit, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
                {
                    sh.trapped.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
        sh.close(id);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.drop_all();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // Threads exit within ~50 ms of seeing the shutdown flag / closed sockets.
        let threads: Vec<JoinHandle<()>> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        self.drop_all();
    }
}
