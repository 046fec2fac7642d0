#![allow(dead_code)]
//! Scenario helpers on top of the harness: configs for agents and app hosts, and the
//! questions tests ask of them (what is on disk, how many reloads, who leads, what status).

use crate::common::*;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};
use zookeeper_client::Client;

/// The application every scenario publishes to.
pub const APP: &str = "nginxconf";

/// Settings of a daemon under test.
#[derive(Clone, Debug)]
pub struct Spec {
    /// "agent", "app" or "both".
    pub role: &'static str,
    /// node_id.
    pub node: String,
    /// ZooKeeper connect string.
    pub zk: String,
    /// Session timeout (servers accept 0.4 s to 4 s with tickTime 200).
    pub session: &'static str,
    /// TOML for `check`, e.g. `["sh", "-c", "grep -q ok {src}"]`, or None.
    pub check: Option<String>,
    /// TOML for `reload`; default appends a line to `{dir}/reloads.log`.
    pub reload: Option<String>,
    /// hook_timeout.
    pub hook_timeout: &'static str,
    /// Extra lines for the `[agent]` section.
    pub agent_extra: String,
    /// Overrides `dest` (default `{dir}/www/nginx.conf`).
    pub dest: Option<String>,
    /// The app's versions znode (default `/applications/nginxconf`).
    pub path: Option<String>,
}

impl Spec {
    /// An app host with a reload hook that counts reloads.
    pub fn app(node: &str, zk: &str) -> Spec {
        Spec {
            role: "app",
            node: node.into(),
            zk: zk.into(),
            session: "1s",
            check: None,
            reload: Some(r#"["sh", "-c", "echo reload >> {dir}/reloads.log"]"#.into()),
            hook_timeout: "10s",
            agent_extra: String::new(),
            dest: None,
            path: None,
        }
    }
    /// An agent.
    pub fn agent(node: &str, zk: &str) -> Spec {
        Spec { role: "agent", ..Spec::app(node, zk) }
    }
    /// Agent and app in one process.
    pub fn both(node: &str, zk: &str) -> Spec {
        Spec { role: "both", ..Spec::app(node, zk) }
    }

    /// The config file text (`{dir}` is filled in by the harness).
    pub fn toml(&self) -> String {
        let mut t = format!(
            "role = \"{}\"\nnode_id = \"{}\"\nstate_dir = \"{{dir}}/state\"\n\n[zookeeper]\nhosts = \"{}\"\nsession_timeout = \"{}\"\nstart_timeout = \"5s\"\n\n[agent]\n{}\n",
            self.role, self.node, self.zk, self.session, self.agent_extra
        );
        if self.role != "agent" {
            t.push_str(&format!(
                "\n[[app]]\nname = \"{APP}\"\ndest = \"{}\"\nmode = \"0644\"\nhook_timeout = \"{}\"\n",
                self.dest.clone().unwrap_or_else(|| "{dir}/www/nginx.conf".into()),
                self.hook_timeout
            ));
            if let Some(p) = &self.path {
                t.push_str(&format!("path = \"{p}\"\n"));
            }
            if let Some(c) = &self.check {
                t.push_str(&format!("check = {c}\n"));
            }
            if let Some(r) = &self.reload {
                t.push_str(&format!("reload = {r}\n"));
            }
        }
        t
    }

    /// Starts the daemon with `{dir}/www` created.
    pub fn start(&self) -> Daemon {
        let d = Daemon::prepare(&self.node);
        std::fs::create_dir_all(d.dir().join("www")).unwrap();
        let mut d = d;
        d.set_config(&self.toml());
        d.spawn();
        d
    }
}

/// The default destination of an app daemon.
pub fn dest(d: &Daemon) -> PathBuf {
    d.dir().join("www/nginx.conf")
}

/// What the destination holds now.
pub fn on_disk(d: &Daemon) -> Option<Vec<u8>> {
    std::fs::read(dest(d)).ok()
}

/// How many times the reload hook ran.
pub fn reloads(d: &Daemon) -> usize {
    std::fs::read_to_string(d.dir().join("reloads.log")).map(|s| s.lines().count()).unwrap_or(0)
}

/// Waits until the daemon's destination holds `bytes`; prints the log on timeout.
pub async fn wait_on_disk(d: &Daemon, bytes: &[u8], timeout: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if on_disk(d).as_deref() == Some(bytes) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.print_log();
    panic!(
        "{}: destination never held the expected {} bytes within {timeout:?}; it holds {:?}",
        d.name(),
        bytes.len(),
        on_disk(d).map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
    );
}

/// Publishes `bytes` through `zkcoordctl --zk ... publish APP -`.
pub async fn publish(zk: &str, bytes: &[u8]) -> Output {
    let (zk, bytes) = (zk.to_string(), bytes.to_vec());
    tokio::task::spawn_blocking(move || ctl_stdin(&["--zk", &zk, "publish", APP, "-", "--message", "test"], &bytes))
        .await
        .unwrap()
}

/// Publishes and asserts it was published; returns the version name.
pub async fn publish_ok(zk: &str, bytes: &[u8]) -> String {
    let out = publish(zk, bytes).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.starts_with("published conf-"), "publish failed:\n{}", output_text(&out));
    text.trim().trim_start_matches("published ").to_string()
}

/// The status report of `node` for APP, as JSON.
pub async fn status(client: &Client, node: &str) -> Option<serde_json::Value> {
    get(client, &format!("/zkcoord/status/{APP}/{node}")).await.and_then(|b| serde_json::from_slice(&b).ok())
}

/// Waits until `node`'s status has `result` (and, if given, `version`).
pub async fn wait_status(client: &Client, node: &str, result: &str, version: Option<&str>) -> serde_json::Value {
    let mut last = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(s) = status(client, node).await {
            if s["result"] == result && version.map_or(true, |v| s["version"] == v || s["attempted"] == v) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("status of {node} never became {result} {version:?}; last: {last:?}");
}

/// Election children, sorted by sequence.
pub async fn workers(client: &Client) -> Vec<String> {
    children_sorted(client, "/roles/workers").await
}

/// The pid recorded in the smallest election node (the leader's), if any.
pub async fn leader_pid(client: &Client) -> Option<u32> {
    let w = workers(client).await;
    let first = w.first()?;
    let data = get(client, &format!("/roles/workers/{first}")).await?;
    let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

/// Version names of APP, oldest first.
pub async fn versions(client: &Client) -> Vec<String> {
    children_sorted(client, &format!("/applications/{APP}")).await
}

/// Microseconds on CLOCK_MONOTONIC, the clock the daemons log leadership with.
pub fn monotonic_us() -> u64 {
    zkcoord::clock::monotonic_us()
}

/// One agent's leadership intervals `(start_us, end_us)` from its log. Each process life (the
/// harness writes a line at every start) that ended while leading is closed at `deaths[life]`,
/// the test's record of when it killed that life; a life still running and leading is open
/// (`u64::MAX`).
pub fn leadership_intervals(log: &str, deaths: &[u64]) -> Vec<(u64, u64)> {
    let mono = |line: &str| -> u64 {
        let at = line.find("mono_us=").expect("leadership lines carry mono_us") + "mono_us=".len();
        line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let mut out = Vec::new();
    for (life, text) in log.split("=== harness: starting zkcoordd").skip(1).enumerate() {
        let mut open: Option<u64> = None;
        for line in text.lines() {
            if line.contains("leadership: leader") {
                assert!(open.is_none(), "leader twice without stepping down: {line}");
                open = Some(mono(line));
            } else if line.contains("leadership: stepping down") {
                if let Some(start) = open.take() {
                    out.push((start, mono(line)));
                }
            }
        }
        if let Some(start) = open {
            out.push((start, deaths.get(life).copied().unwrap_or(u64::MAX)));
        }
    }
    out
}

/// Panics if any two agents' leadership intervals overlap (with one leader at a time).
pub fn assert_one_leader_at_a_time(agents: &[(&str, Vec<(u64, u64)>)]) {
    let mut all: Vec<(u64, u64, &str)> =
        agents.iter().flat_map(|(name, iv)| iv.iter().map(move |(s, e)| (*s, *e, *name))).collect();
    all.sort();
    for w in all.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "two leaders at once: {} led {}..{} and {} led from {}",
            w[0].2, w[0].0, w[0].1, w[1].2, w[1].0
        );
    }
}

/// A `zkcoordd --config <d's config> <args>` command for a one-shot mode (`--once`,
/// `--dry-run`), with the log at its default level and no systemd in its environment.
pub fn oneshot_command(d: &Daemon, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(daemon_bin());
    cmd.arg("--config").arg(d.config_path()).args(args).current_dir(d.dir()).env("NO_COLOR", "1");
    for k in ["RUST_LOG", "ZKCOORD_LOG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID"] {
        cmd.env_remove(k);
    }
    cmd
}

/// Runs a one-shot `zkcoordd` to completion (killed after 60 s) off the async runtime's worker
/// thread; returns its output and how long it took.
pub async fn zkcoordd_oneshot(d: &Daemon, args: &[&str]) -> (Output, Duration) {
    let cmd = oneshot_command(d, args);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = run_with_timeout(cmd, b"", Duration::from_secs(60));
        (out, started.elapsed())
    })
    .await
    .unwrap()
}

impl Spec {
    /// A daemon directory with `{dir}/www` and this config, not started: for one-shot runs, or
    /// to start later with `spawn()`.
    pub fn prepare(&self) -> Daemon {
        let d = Daemon::prepare(&self.node);
        std::fs::create_dir_all(d.dir().join("www")).unwrap();
        d.set_config(&self.toml());
        d
    }
}

/// Where an app daemon remembers what it applied to APP.
pub fn state_file(d: &Daemon) -> PathBuf {
    d.dir().join(format!("state/{APP}.json"))
}

/// An HTTP reply, as `http_get` read it.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The Content-Type header, if any.
    pub content_type: Option<String>,
    /// The body, lossily decoded.
    pub body: String,
}

/// `GET http://127.0.0.1:<port><path>` over HTTP/1.0 (the server closes after replying);
/// None when nothing listens or no reply comes within 5 s.
pub fn http_get(port: u16, path: &str) -> Option<HttpReply> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_string()));
    Some(HttpReply { status, content_type, body: body.to_string() })
}

/// Sends a legacy trigger message and returns the daemon's one-line answer.
pub fn trigger(port: u16, payload: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(payload).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

/// Writes a 0600 secret file (credentials, tokens, keys) in `dir`; returns its path.
pub fn secret(dir: &std::path::Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// An enabled `[acl]` section naming, by role, the digest identities of `user:password` pairs.
pub fn acl_section(agents: &[&str], apps: &[&str], publishers: &[&str]) -> String {
    let ids = |pairs: &[&str]| pairs.iter().map(|p| format!("\"{}\"", zkcoord::zk::identity::digest_id(p))).collect::<Vec<_>>().join(", ");
    format!("\n[acl]\nenabled = true\nagents = [{}]\napps = [{}]\npublishers = [{}]\n", ids(agents), ids(apps), ids(publishers))
}

/// The `i`th payload of a trigger burst: distinct (it starts with its number), 100 B to 20 KiB.
pub fn burst_payload(i: usize) -> Vec<u8> {
    let size = 100 + (i * 7919) % (20 * 1024 - 100);
    let mut data = format!("burst payload {i}\n").into_bytes();
    let filler = b"server 10.0.0.1:8080 weight=1;\n";
    while data.len() < size {
        data.push(filler[data.len() % filler.len()]);
    }
    data.truncate(size);
    data
}

/// Sends `add|<payload>` and closes at once without reading the answer, as the classic
/// `trigger.py` does. Err when the sender could tell that something failed.
pub fn fire_and_forget(port: u16, payload: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let mut msg = b"add|".to_vec();
    msg.extend_from_slice(payload);
    s.write_all(&msg)
    // Dropped here: closed without reading, and a close reports nothing to the sender.
}

/// What a burst of fire-and-forget triggers came to.
#[derive(Debug)]
pub struct BurstResult {
    /// Payloads sent.
    pub sent: usize,
    /// Sends that failed where the sender could see it (connect or write errors).
    pub send_errors: usize,
    /// How long the senders took.
    pub send_time: Duration,
    /// Versions of APP once the burst drained.
    pub versions: Vec<String>,
    /// From the first send to the last version created (or the last change seen).
    pub drain_time: Duration,
}

/// Sends `n` distinct payloads (`burst_payload`) from `senders` threads, each back to back
/// without waiting for answers, then waits until the versions stop changing and no request is
/// pending (or `limit` passed).
pub async fn trigger_burst(client: &Client, port: u16, n: usize, senders: usize, limit: Duration) -> BurstResult {
    let start = Instant::now();
    let threads: Vec<_> = (0..senders)
        .map(|t| {
            std::thread::spawn(move || {
                let mut errors = 0;
                for i in (t..n).step_by(senders) {
                    if let Err(e) = fire_and_forget(port, &burst_payload(i)) {
                        eprintln!("sender {t}: payload {i}: {e}");
                        errors += 1;
                    }
                }
                errors
            })
        })
        .collect();
    let mut send_errors = 0;
    let mut send_time = None;
    let mut last = (0usize, Instant::now());
    loop {
        if send_time.is_none() && threads.iter().all(|t| t.is_finished()) {
            send_time = Some(start.elapsed());
        }
        let count = versions(client).await.len();
        let pending = children_sorted(client, "/zkcoord/requests").await.len();
        if count != last.0 {
            last = (count, Instant::now());
        }
        let quiet = last.1.elapsed() > Duration::from_secs(10);
        if send_time.is_some() && pending == 0 && (count >= n || quiet) || start.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in threads {
        send_errors += t.join().unwrap_or(n);
    }
    BurstResult {
        sent: n,
        send_errors,
        send_time: send_time.unwrap_or(start.elapsed()),
        versions: versions(client).await,
        drain_time: last.1.duration_since(start),
    }
}

/// A process's resident memory (KiB) and open file descriptors, from /proc.
pub fn rss_kib_and_fds(pid: u32) -> (u64, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (proc_status_kib(pid, "VmRSS:"), fds)
}

/// A KiB figure of /proc/<pid>/status, e.g. "VmRSS:" or "VmHWM:" (the peak RSS); 0 if unreadable.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Incompressible bytes, the same for the same seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
