//! ZooKeeper servers.

#![allow(unused_imports)]

use super::*;

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
    /// A non-voting member (`peerType=observer`): it serves clients and forwards their writes to
    /// the leader, but never counts towards a quorum, so tests of large fleets can add client
    /// capacity without changing what a quorum is.
    observer: bool,
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
    /// True for an observer (non-voting member); its `srvr` mode is `observer`.
    pub fn is_observer(&self) -> bool {
        self.observer
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

/// A ZooKeeper ensemble on loopback: 1 (standalone) or more voting servers, optionally with
/// observers (`with_observers`), with tickTime=200 (sessions from 0.4 s to 20 s allowed).
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
        Self::build(n, 0, extra)
    }

    /// `voters` voting servers (indices `0..voters`) and `observers` observers (indices
    /// `voters..voters + observers`), all serving when this returns. An observer has
    /// `peerType=observer` in its own zoo.cfg, and every server lists it as
    /// `server.N=host:peer:election:observer`, as ZooKeeper's observers guide asks: this is how
    /// a large fleet adds client capacity without slowing down the quorum's votes.
    pub fn with_observers(voters: usize, observers: usize) -> ZkEnsemble {
        Self::with_observers_extra(voters, observers, &ZkExtra::default())
    }

    /// `with_observers` with extra settings on every server.
    pub fn with_observers_extra(voters: usize, observers: usize, extra: &ZkExtra) -> ZkEnsemble {
        assert!(observers == 0 || voters + observers > 1);
        Self::build(voters, observers, extra)
    }

    fn build(voters: usize, observers: usize, extra: &ZkExtra) -> ZkEnsemble {
        assert!(voters >= 1);
        let n = voters + observers;
        let started = Instant::now();
        let mut failures = Vec::new();
        for attempt in 1..=4 {
            let mut ens = Self::configure(voters, observers, extra);
            for s in ens.servers.iter_mut() {
                s.spawn();
            }
            let all: Vec<usize> = (0..n).collect();
            match ens.wait_serving(&all, ZK_START_TIMEOUT) {
                Ok(()) => {
                    eprintln!(
                        "[harness] ZooKeeper x{n} ({observers} observers) serving at {} after {:.1?}",
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

    fn configure(voters: usize, observers: usize, extra: &ZkExtra) -> ZkEnsemble {
        let n = voters + observers;
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
                observer: index >= voters,
            });
        }
        let quorum: String = if n > 1 {
            servers
                .iter()
                .map(|s| {
                    format!(
                        "server.{}=127.0.0.1:{}:{}{}\n",
                        s.index + 1,
                        s.peer_port,
                        s.election_port,
                        if s.observer { ":observer" } else { "" }
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
                 {}{quorum}{}",
                data.display(),
                s.client_port,
                if s.observer { "peerType=observer\n" } else { "" },
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

    /// Indices of the voting members (all of them unless built `with_observers`).
    pub fn voters(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| !self.servers[i].observer).collect()
    }

    /// Indices of the observers.
    pub fn observers(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.servers[i].observer).collect()
    }

    /// Whether server `i` is an observer.
    pub fn is_observer(&self, i: usize) -> bool {
        self.servers[i].observer
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
        let voters = self.voters();
        let running = voters.iter().filter(|&&j| self.servers[j].is_running()).count();
        if running > voters.len() / 2 {
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

    /// Server `i`'s `mntr` as key -> value (`zk_packets_received`, `zk_watch_count`, ...).
    pub fn mntr(&self, i: usize) -> Option<BTreeMap<String, String>> {
        mntr(self.servers[i].client_port)
    }

    /// Session ids (`sid=0x...` of `cons`) connected to server `i`: which clients this server
    /// really serves, without counting the four-letter word's own connection.
    pub fn session_ids(&self, i: usize) -> Vec<String> {
        self.four_letter(i, "cons").map(|c| cons_session_ids(&c)).unwrap_or_default()
    }

    /// Which server the process `pid` holds an established TCP connection to (by client port,
    /// from `ss -tnp`): where a daemon's session is served right now.
    pub fn server_of_pid(&self, pid: u32) -> Option<usize> {
        let ports = pid_peer_ports(pid);
        (0..self.len()).find(|&i| ports.contains(&self.servers[i].client_port))
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
