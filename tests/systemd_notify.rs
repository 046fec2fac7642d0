//! The sd_notify protocol as systemd sees it: the test owns the NOTIFY_SOCKET datagram socket
//! and checks READY, STATUS, WATCHDOG, RELOADING/MONOTONIC_USEC and STOPPING, and SIGHUP reloads
//! that add, remove and change apps, refuse bad files and change the log level.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The systemd side of NOTIFY_SOCKET: every datagram with its arrival time.
struct NotifySocket {
    path: std::path::PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let got: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => g.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned())),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        if Arc::strong_count(&g) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        NotifySocket { path, got, _dir: dir }
    }
    fn messages(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }
    fn first(&self, key: &str) -> Option<(Instant, String)> {
        self.messages().into_iter().find(|(_, m)| m.lines().any(|l| l.starts_with(key)))
    }
    fn count(&self, key: &str) -> usize {
        self.messages().iter().filter(|(_, m)| m.lines().any(|l| l.starts_with(key))).count()
    }
    fn wait_for(&self, what: &str, pred: impl Fn(&[(Instant, String)]) -> bool) {
        let start = Instant::now();
        while !pred(&self.messages()) {
            assert!(start.elapsed() < Duration::from_secs(20), "no {what}; got {:#?}", self.messages());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn start_notified(spec: &Spec, sock: &NotifySocket, extra_env: &[(&str, &str)]) -> Daemon {
    let mut d = Daemon::prepare(&spec.node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    d.set_env("NOTIFY_SOCKET", &sock.path.display().to_string());
    for (k, v) in extra_env {
        d.set_env(k, v);
    }
    d.set_config(&spec.toml());
    d.spawn();
    d
}

#[test]
fn no_ready_while_zookeeper_is_down_until_the_start_timeout_then_status_follows_the_session() {
    let mut zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    zk.kill(0);
    let sock = NotifySocket::bind();
    let spec = Spec::both("web-1", &hosts); // start_timeout = "5s" in fleet configs
    let started = Instant::now();
    let _d = start_notified(&spec, &sock, &[]);

    sock.wait_for("a STATUS while waiting", |m| m.iter().any(|(_, s)| s.contains("waiting for ZooKeeper at")));
    std::thread::sleep(Duration::from_secs(3));
    assert!(sock.first("READY=1").is_none(), "READY before the start timeout with ZooKeeper down");
    sock.wait_for("READY after the start timeout", |m| m.iter().any(|(_, s)| s.contains("READY=1")));
    let (at, msg) = sock.first("READY=1").unwrap();
    let after = at - started;
    eprintln!("figures: READY with ZooKeeper down after {after:?} (start_timeout 5s)");
    assert!(after >= Duration::from_secs(5), "{after:?}");
    assert!(msg.contains("start timeout 5s passed"), "{msg}");

    zk.start(0);
    sock.wait_for("STATUS connected", |m| {
        m.iter().rev().find_map(|(_, s)| s.lines().find_map(|l| l.strip_prefix("STATUS="))).is_some_and(|s| s.starts_with("both connected"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_reloading_and_stopping_arrive_at_the_right_moments() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let sock = NotifySocket::bind();
    let spec = Spec::both("web-1", &hosts);
    let started = Instant::now();
    let mut d = start_notified(&spec, &sock, &[("WATCHDOG_USEC", "600000")]);

    sock.wait_for("READY", |m| m.iter().any(|(_, s)| s.contains("READY=1")));
    let (at, ready) = sock.first("READY=1").unwrap();
    eprintln!("figures: READY after the first sync {:?} after start", at - started);
    assert!(ready.contains("STATUS=both connected; leader; nginxconf=waiting"), "{ready}");

    publish_ok(&hosts, b"v1\n").await;
    wait_on_disk(&d, b"v1\n", Duration::from_secs(20)).await;
    sock.wait_for("STATUS with the applied version", |m| {
        m.iter().any(|(_, s)| s.contains("STATUS=both connected; leader; nginxconf=conf-0000000000"))
    });

    // WATCHDOG=1 every half interval (300 ms of 600 ms).
    let before = sock.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_millis(1600));
    let pings = sock.count("WATCHDOG=1") - before;
    eprintln!("figures: {pings} watchdog pings in 1.6s with WatchdogSec=0.6s");
    assert!((4..=7).contains(&pings), "{pings} pings");

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    let readies = sock.count("READY=1");
    d.hup();
    sock.wait_for("RELOADING", |m| m.iter().any(|(_, s)| s.contains("RELOADING=1")));
    let (_, reloading) = sock.first("RELOADING=1").unwrap();
    let usec: u64 = reloading.lines().find_map(|l| l.strip_prefix("MONOTONIC_USEC=")).expect("MONOTONIC_USEC").parse().unwrap();
    let now = monotonic_us();
    assert!(usec <= now && now - usec < 5_000_000, "MONOTONIC_USEC {usec} vs now {now}");
    sock.wait_for("READY after reload", |_| sock.count("READY=1") > readies);

    // SIGTERM: STOPPING=1, exit 0.
    assert!(d.term().success());
    assert!(sock.first("STOPPING=1").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_removes_and_changes_apps_and_refuses_a_bad_file() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let sock = NotifySocket::bind();
    let spec = Spec::both("web-1", &hosts);
    let d = start_notified(&spec, &sock, &[]);
    publish_ok(&hosts, b"v1\n").await;
    wait_on_disk(&d, b"v1\n", Duration::from_secs(20)).await;
    let leader_node = workers(&client).await;

    // Add a second app, change the first one's reload hook, raise the log level.
    let base = spec.toml();
    let changed = base.replace("echo reload >>", "echo reload-v2 >>").replace("state_dir =", "log_level = \"zkcoord=debug,info\"\nstate_dir =")
        + "\n[[app]]\nname = \"extra\"\ndest = \"{dir}/www/extra.conf\"\nreload = [\"true\"]\n";
    d.set_config(&changed);
    d.hup();
    d.wait_for_log("reload applied", Duration::from_secs(10));
    let log = d.log();
    assert!(log.contains("app extra added") && log.contains("app nginxconf restarted") && log.contains("log_level"), "{}", d.log_tail(20));
    create_all(&client, "/applications/extra").await;
    create_seq(&client, "/applications/extra/conf-", b"extra v1\n").await;
    wait_until("the added app applies", Duration::from_secs(20), || async {
        std::fs::read(d.dir().join("www/extra.conf")).ok().as_deref() == Some(&b"extra v1\n"[..])
    })
    .await;
    publish_ok(&hosts, b"v2\n").await;
    wait_until("the changed hook runs", Duration::from_secs(20), || async {
        std::fs::read_to_string(d.dir().join("reloads.log")).unwrap_or_default().contains("reload-v2")
    })
    .await;
    assert_eq!(workers(&client).await, leader_node, "a reload does not touch the election");
    assert!(get(&client, "/zkcoord/status/extra/web-1").await.is_some());

    // A bad file is refused; the daemon keeps running on what it has.
    d.set_config("role = \"both\"\nthis is not toml");
    d.hup();
    d.wait_for_log("reload refused", Duration::from_secs(10));
    // ... and systemd is told: the STATUS after it says why, until a reload is taken.
    let latest_status = |m: &[(Instant, String)]| m.iter().rev().find_map(|(_, s)| s.lines().find_map(|l| l.strip_prefix("STATUS=")).map(str::to_string));
    sock.wait_for("STATUS naming the refused reload", |m| latest_status(m).is_some_and(|s| s.contains("; reload refused: ") && s.contains("line")));
    publish_ok(&hosts, b"v3\n").await;
    wait_on_disk(&d, b"v3\n", Duration::from_secs(20)).await;

    // A change that needs a restart is refused by name.
    d.set_config(&changed.replace("session_timeout = \"1s\"", "session_timeout = \"2s\""));
    d.hup();
    wait_until_sync("refused [zookeeper]", Duration::from_secs(10), || d.log().contains("changing [zookeeper] needs a restart"));

    // Removing the app removes its status node at once; the reload is taken, and STATUS no
    // longer says one was refused.
    d.set_config(&base);
    d.hup();
    sock.wait_for("STATUS without the refusal", |m| latest_status(m).is_some_and(|s| !s.contains("reload refused")));
    wait_until("the removed app's status node is gone", Duration::from_secs(10), || async {
        get(&client, "/zkcoord/status/extra/web-1").await.is_none()
    })
    .await;
    assert!(d.log().contains("app extra removed"));
}
