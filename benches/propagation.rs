//! How fast and how light: `cargo bench --bench propagation` starts a three-node ZooKeeper
//! ensemble on loopback and real `zkcoordd` processes, and prints a table:
//!
//! - the floor: a plain client's create -> child watch fires -> read, the least any
//!   publish-to-applied can take;
//! - publish-to-applied for 1, 10 and 50 app daemons (no reload hook), and for 10 with
//!   `/bin/true` as the reload hook, p50/p90/p99/max, from the publish call's return (the
//!   issue's definition) and from its start;
//! - fan-out: 1,000 app followers in this process (the library's own app code, one ZooKeeper
//!   session and one scratch directory each), time until all of them applied a publish, beside
//!   1,000 plain sessions that only watch and read (the floor);
//! - recipe: the classic recipe (create -> child watch -> get -> write the file) with the same
//!   client crate, for 0, 10 and 50 watchers, beside zkcoord through the leader's legacy trigger
//!   and through the request path, with ZooKeeper requests and quorum writes per publish and
//!   per host counted on the servers (issue 15);
//! - throughput: versions per second through the library's publish calls and through the
//!   legacy trigger, one client and 16 concurrent clients;
//! - failover: SIGTERM and kill -9 of the leading agent until a publish is acknowledged;
//!   re-registration of an app host's status node and an agent's election node after expiry;
//! - burst: 500 fire-and-forget legacy triggers against one agent on a single ZooKeeper,
//!   versions created and time to drain (BENCHMARKS.md, issue 19);
//! - footprint: an idle app daemon's RSS, CPU and context switches over 60 s, the same under a
//!   publish every 100 ms, and the binaries' sizes.
//!
//! `ZKCOORD_BENCH_PUBLISHES` sets the publishes per propagation row (default 200),
//! `ZKCOORD_BENCH_IDLE_SECS` the idle window (default 60), and `ZKCOORD_BENCH_ONLY` a comma list
//! of sections (burst, floor, recipe, propagation, fanout, throughput, failover, footprint; default all).
//! `ZKCOORD_BENCH_RECIPE_PUBLISHES` sets the publishes per row of the recipe section (default 50),
//! `ZKCOORD_BENCH_FANOUT_WARMUP` the uncounted publishes before each fan-out row (default 30).
//! The daemons log at `info`, as installed; `ZKCOORD_TEST_RUST_LOG` sets another filter.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fleet/mod.rs"]
mod fleet;

use common::*;
use fleet::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zkcoord::model::layout::Layout;
use zookeeper_client as zk;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    format!(
        "| {name} | {} | {} | {} | {} | {} |",
        v.len(),
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.9)),
        ms(pct(&v, 0.99)),
        ms(*v.last().unwrap_or(&Duration::ZERO))
    )
}

/// A plain client's create -> watch -> read round trip: the floor for publish-to-applied.
async fn floor(hosts: &str, n: usize) -> Vec<Duration> {
    let writer = zk_client(hosts).await;
    let reader = zk_client(hosts).await;
    create_all(&writer, "/bench/floor").await;
    let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let mut out = Vec::new();
    for i in 0..n {
        let (_, w) = reader.list_and_watch_children("/bench/floor").await.unwrap();
        let t = Instant::now();
        let (_, seq) = writer.create("/bench/floor/conf-", format!("v{i}").as_bytes(), &opts).await.unwrap();
        w.changed().await;
        reader.get_data(&format!("/bench/floor/conf-{seq}")).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

fn layout() -> Layout {
    Layout::new("/zkcoord", "/applications", "/roles/workers")
}

/// One publish through the library, as `zkcoordctl publish` does it; returns the version.
async fn publish_lib(client: &zk::Client, bytes: &[u8]) -> String {
    let layout = layout();
    let header = zkcoord::model::request::header_for(APP, "bench", None, "zkcoordctl", bytes).unwrap();
    let (req, _) = zkcoord::zk::request::submit(client, &layout, &header, bytes).await.unwrap();
    match zkcoord::zk::request::await_outcome(client, &layout, &req, Duration::from_secs(30)).await.unwrap() {
        zkcoord::model::request::Outcome::Published { version } => version,
        other => panic!("publish answered {other}"),
    }
}

/// Publishes through the leading agent and waits until every app's file holds the bytes.
async fn propagation(hosts: &str, apps: &[Daemon], n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let client = zk_client(hosts).await;
    let layout = layout();
    let (mut from_start, mut from_return) = (Vec::new(), Vec::new());
    for i in 0..n {
        let bytes = format!("worker_processes {i};\n").into_bytes();
        let header = zkcoord::model::request::header_for(APP, "bench", None, "zkcoordctl", &bytes).unwrap();
        let start = Instant::now();
        let (req, _) = zkcoord::zk::request::submit(&client, &layout, &header, &bytes).await.unwrap();
        zkcoord::zk::request::await_outcome(&client, &layout, &req, Duration::from_secs(30)).await.unwrap();
        let returned = Instant::now();
        loop {
            if apps.iter().all(|d| on_disk(d).as_deref() == Some(&bytes[..])) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "publish {i} never landed everywhere");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let done = Instant::now();
        from_start.push(done - start);
        from_return.push(done.saturating_duration_since(returned));
    }
    (from_start, from_return)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// Context switches of every thread of `pid` (wakeups, roughly).
fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Kills the leader (SIGTERM or SIGKILL) and times a publish until it is acknowledged.
async fn failover(hosts: &str, agents: &mut [Daemon], graceful: bool) -> Duration {
    let client = zk_client(hosts).await;
    let leader = leader_pid(&client).await.expect("a leader");
    let i = agents.iter().position(|a| a.pid() == leader).expect("leader is ours");
    let t = Instant::now();
    if graceful {
        agents[i].term();
    } else {
        agents[i].kill9();
    }
    publish_ok(hosts, format!("failover {}\n", t.elapsed().as_nanos()).as_bytes()).await;
    let took = t.elapsed();
    agents[i].spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    took
}

fn wanted(section: &str) -> bool {
    match std::env::var("ZKCOORD_BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|s| s.trim() == section),
        _ => true,
    }
}

fn table(report: &mut Vec<String>, title: &str) {
    report.push(String::new());
    report.push(format!("| {title} | n | p50 | p90 | p99 | max |"));
    report.push("|---|---|---|---|---|---|".into());
}

/// Starts `count` app daemons (reload hook `reload`, or none) and waits until all report.
async fn start_apps(hosts: &str, count: usize, reload: Option<&str>) -> Vec<Daemon> {
    let apps: Vec<Daemon> = (0..count)
        .map(|i| {
            let mut s = Spec::app(&format!("web-{i:02}"), hosts);
            s.reload = reload.map(String::from);
            s.session = "4s";
            s.start()
        })
        .collect();
    let client = zk_client(hosts).await;
    wait_until("apps report", Duration::from_secs(120), || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() >= count
    })
    .await;
    apps
}

/// Waits until no status node is left under the app (the daemons were stopped).
async fn wait_no_status(hosts: &str) {
    let client = zk_client(hosts).await;
    wait_until("status nodes gone", Duration::from_secs(60), || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.is_empty()
    })
    .await;
}

/// Publish-to-applied for several fleet sizes and hooks.
async fn section_propagation(hosts: &str, n: usize, report: &mut Vec<String>) {
    table(report, "publish -> applied (ms)");
    for (count, reload, label, publishes) in [
        (1usize, None, "no hook", n),
        (10, None, "no hook", n),
        (10, Some(r#"["/bin/true"]"#), "reload /bin/true", n),
        (50, None, "no hook", n),
    ] {
        let mut apps = start_apps(hosts, count, reload).await;
        let (start, ret) = propagation(hosts, &apps, publishes).await;
        report.push(row(&format!("{count} app daemon(s), {label}, from publish return"), ret));
        report.push(row(&format!("{count} app daemon(s), {label}, from publish start"), start));
        for a in apps.iter_mut() {
            a.term();
        }
        drop(apps);
        wait_no_status(hosts).await;
    }
}

/// 1,000 app followers in this process, each with its own session and scratch directory.
async fn section_fanout(hosts: &str, watchers: usize, publishes: usize, report: &mut Vec<String>) {
    use zkcoord::app::follower::{AppFollower, Applier};
    use zkcoord::app::skeleton::AppView;
    // tmpfs when there is one: a thousand hosts each fsync their own disk; one machine's disk
    // fsyncing for all of them would measure the disk, not the fan-out.
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let scratch = tempfile::Builder::new().prefix("zkcoord-fanout-").tempdir_in(base).unwrap();
    let metrics = Arc::new(zkcoord::metrics::Metrics::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gate = zkcoord::ready::ReadyGate::new();
    // (watcher, version) -> when that watcher's view first showed the version applied.
    let applied: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let t0 = Instant::now();
    for i in 0..watchers {
        let dir = scratch.path().join(format!("w{i:04}"));
        std::fs::create_dir_all(dir.join("www")).unwrap();
        let toml = format!(
            "role = \"app\"\nnode_id = \"sim-{i:04}\"\nstate_dir = \"{d}/state\"\n[zookeeper]\nhosts = \"{hosts}\"\nsession_timeout = \"10s\"\n[[app]]\nname = \"{APP}\"\ndest = \"{d}/www/nginx.conf\"\n",
            d = dir.display()
        );
        let path = dir.join("zkcoord.toml");
        let config = zkcoord::config::Config::from_toml(&path, &toml, |_| None).unwrap();
        let (sup, handle) = zkcoord::zk::session::channel(metrics.clone());
        tokio::spawn(sup.supervise(config.zookeeper.clone(), shutdown.clone()));
        let (view_tx, mut view_rx) = tokio::sync::watch::channel(AppView::starting(APP));
        // Each simulated host keeps its own freeze board, as a daemon does.
        let (freeze_tx, freezes) = tokio::sync::watch::channel(None);
        tokio::spawn(zkcoord::zk::freeze::keep(config.layout(), handle.clone(), freeze_tx, shutdown.clone()));
        let follower =
            AppFollower { applier: Applier::new(&config, &config.apps[0], metrics.clone()), ready: gate.part(), view: view_tx, conflict: Default::default(), freezes };
        tokio::spawn(follower.run(handle, shutdown.clone()));
        let applied = applied.clone();
        tokio::spawn(async move {
            let mut last = None;
            while view_rx.changed().await.is_ok() {
                let version = view_rx.borrow_and_update().report.as_ref().and_then(|r| r.version.clone());
                if version.is_some() && version != last {
                    let now = Instant::now();
                    applied.lock().unwrap().entry(version.clone().unwrap()).or_default().push(now);
                    last = version;
                }
            }
        });
    }
    let client = zk_client(hosts).await;
    wait_until("1,000 followers report", Duration::from_secs(300), || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() >= watchers
    })
    .await;
    let start_up = t0.elapsed();
    let rss = rss_kib(std::process::id());
    let (mut all_from_return, mut all_from_start, mut each_from_return) = (Vec::new(), Vec::new(), Vec::new());
    let mut all_from_created = Vec::new();
    let (cpu0, wall0) = (cpu_ticks(std::process::id()), Instant::now());
    // The first few publishes warm the servers' JIT and are not counted; between publishes the
    // fleet's status writes (one quorum write per follower) drain, as they would between real
    // publishes, which are rarely 50 ms apart.
    let warmup = fanout_warmup();
    for i in 0..publishes + warmup {
        let bytes = format!("fanout {i}\n").into_bytes();
        let start = Instant::now();
        let version = publish_lib(&client, &bytes).await;
        let returned = Instant::now();
        let returned_wall_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0;
        let deadline = Instant::now() + Duration::from_secs(60);
        let times = loop {
            let done = applied.lock().unwrap().get(&version).map(|v| v.len()).unwrap_or(0);
            if done >= watchers {
                break applied.lock().unwrap().remove(&version).unwrap();
            }
            assert!(Instant::now() < deadline, "publish {i}: only {done} of {watchers} applied {version}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let last = *times.iter().max().unwrap();
        if i >= warmup {
            // The version node's ctime (server clock, this machine, ms) against the last apply.
            let ctime = client.check_stat(&format!("/applications/{APP}/{version}")).await.unwrap().map(|st| st.ctime as f64).unwrap_or(returned_wall_ms);
            let last_wall_ms = returned_wall_ms + (last.saturating_duration_since(returned).as_secs_f64() - returned.saturating_duration_since(last).as_secs_f64()) * 1000.0;
            all_from_created.push(Duration::from_secs_f64(((last_wall_ms - ctime).max(0.0)) / 1000.0));
            all_from_return.push(last.saturating_duration_since(returned));
            all_from_start.push(last - start);
            each_from_return.extend(times.iter().map(|t| t.saturating_duration_since(returned)));
        }
        tokio::time::sleep(FANOUT_GAP).await;
    }
    let cpu_ms = (cpu_ticks(std::process::id()) - cpu0) as f64 * 10.0;
    let busy = format!(
        "this process (1,000 followers, the publisher, the bench's own polling) used {:.1} s of CPU over {:.1} s: {:.2} ms per follower per publish",
        cpu_ms / 1000.0,
        wall0.elapsed().as_secs_f64(),
        cpu_ms / ((publishes + warmup) * watchers) as f64
    );
    // Spot check: the files hold the last publish.
    let last = format!("fanout {}\n", publishes + warmup - 1).into_bytes();
    let wrong = (0..watchers)
        .filter(|i| std::fs::read(scratch.path().join(format!("w{i:04}/www/nginx.conf"))).ok().as_deref() != Some(&last[..]))
        .count();
    table(report, &format!("fan-out to {watchers} in-process followers (ms)"));
    report.push(row(&format!("all {watchers} applied, from the version's creation (ctime, ms resolution)"), all_from_created));
    report.push(row(&format!("all {watchers} applied, from publish return"), all_from_return));
    report.push(row(&format!("all {watchers} applied, from publish start"), all_from_start));
    report.push(row("each follower, from publish return", each_from_return));
    report.push(format!(
        "\n{watchers} followers (scratch dirs on {base}): all sessions up and reporting in {:.1?}; this process's RSS {} MiB; files not holding the last publish: {wrong}",
        start_up,
        rss / 1024
    ));
    report.push(busy);
    shutdown.cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// A number from the environment, or `default` when it is unset or not a number: the one
/// reader of the benchmark's `ZKCOORD_BENCH_*` knobs.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Fan-out publishes not counted, `ZKCOORD_BENCH_FANOUT_WARMUP` (default 30): they warm up the
/// servers' JIT. With 5, the servers' C2 compiler threads took 24% of the machine's samples
/// through the first 25 counted publishes (perf, session 10): the figures measured the JVM's
/// warm-up, which a serving ensemble has long finished.
fn fanout_warmup() -> usize {
    env_or("ZKCOORD_BENCH_FANOUT_WARMUP", 30)
}
/// Pause between fan-out publishes.
const FANOUT_GAP: Duration = Duration::from_millis(500);

/// The floor for fan-out: `watchers` plain sessions in this process, each watching the children
/// of one node and reading the newest child when they change: what ZooKeeper itself allows on
/// this machine, with no apply, no status write, no files.
async fn section_fanout_floor(hosts: &str, watchers: usize, publishes: usize, report: &mut Vec<String>) {
    let parent = "/bench/fanout-floor";
    let writer = zk_client(hosts).await;
    create_all(&writer, parent).await;
    let seen: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..watchers {
        let (hosts, seen, stop, ready) = (hosts.to_string(), seen.clone(), shutdown.clone(), ready.clone());
        tokio::spawn(async move {
            let client = zk_client(&hosts).await;
            let mut first = true;
            loop {
                let (children, w) = client.list_and_watch_children(parent).await.unwrap();
                if first {
                    ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    first = false;
                }
                if let Some(newest) = zkcoord::model::layout::newest_version(&children) {
                    let (data, _) = client.get_data(&format!("{parent}/{}", newest.name)).await.unwrap();
                    seen.lock().unwrap().entry(String::from_utf8_lossy(&data).into_owned()).or_default().push(Instant::now());
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = w.changed() => {}
                }
            }
        });
    }
    wait_until("plain watchers ready", Duration::from_secs(120), || async { ready.load(std::sync::atomic::Ordering::SeqCst) >= watchers }).await;
    let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let mut all = Vec::new();
    let warmup = fanout_warmup();
    for i in 0..publishes + warmup {
        let data = format!("floor {i}");
        writer.create(&format!("{parent}/conf-"), data.as_bytes(), &opts).await.unwrap();
        let returned = Instant::now();
        let deadline = returned + Duration::from_secs(60);
        let times = loop {
            if seen.lock().unwrap().get(&data).map(|v| v.len()).unwrap_or(0) >= watchers {
                break seen.lock().unwrap().remove(&data).unwrap();
            }
            assert!(Instant::now() < deadline, "plain fan-out {i} incomplete");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if i >= warmup {
            all.push(times.iter().max().unwrap().saturating_duration_since(returned));
        }
        tokio::time::sleep(FANOUT_GAP).await;
    }
    table(report, &format!("fan-out floor: {watchers} plain sessions, watch + read (ms)"));
    report.push(row(&format!("all {watchers} read the new node, from create return"), all));
    shutdown.cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Publishes per row of the recipe section (`ZKCOORD_BENCH_RECIPE_PUBLISHES`, default 50).
fn recipe_publishes() -> usize {
    env_or("ZKCOORD_BENCH_RECIPE_PUBLISHES", 50)
}

/// Pause between the recipe section's publishes, so each one's status writes drain.
const RECIPE_GAP: Duration = Duration::from_millis(100);
/// How long the servers are watched idle before each row, for the idle rate subtracted.
const RECIPE_IDLE: Duration = Duration::from_secs(3);

/// The classic recipe, written with the same client crate: `watchers` sessions in this process,
/// each `get_children` with a watch on `parent`, and on the event `get` the newest and write
/// the file (temp file and rename; no fsync, as the scripts it stands for). Returns the files.
async fn recipe_watchers(hosts: &str, parent: &str, dir: &std::path::Path, watchers: usize, stop: &tokio_util::sync::CancellationToken) -> Vec<std::path::PathBuf> {
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut files = Vec::new();
    for i in 0..watchers {
        let file = dir.join(format!("recipe-{i:03}.conf"));
        files.push(file.clone());
        let (hosts, parent, stop, ready) = (hosts.to_string(), parent.to_string(), stop.clone(), ready.clone());
        tokio::spawn(async move {
            let client = zk_client(&hosts).await;
            let tmp = file.with_extension("tmp");
            let mut first = true;
            loop {
                let (children, w) = client.list_and_watch_children(&parent).await.unwrap();
                if first {
                    ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    first = false;
                }
                if let Some(newest) = zkcoord::model::layout::newest_version(&children) {
                    if let Ok((data, _)) = client.get_data(&format!("{parent}/{}", newest.name)).await {
                        std::fs::write(&tmp, &data).unwrap();
                        std::fs::rename(&tmp, &file).unwrap();
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = w.changed() => {}
                }
            }
        });
    }
    wait_until("recipe watchers ready", Duration::from_secs(60), || async { ready.load(std::sync::atomic::Ordering::SeqCst) >= watchers }).await;
    files
}

/// How one publish of a recipe-section row is made.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// The recipe's publisher: one PERSISTENT_SEQUENTIAL create.
    Recipe,
    /// The legacy trigger, sent to the leading agent's port.
    Trigger(u16),
    /// The request path, as `zkcoordctl publish` takes it (on one long-lived session).
    Request,
}

/// Runs `n` publishes `via` and waits after each until every file in `files` holds its bytes;
/// returns the latencies from publish start, and the requests and quorum writes per publish
/// counted on the servers (idle rate subtracted).
async fn recipe_row(hosts: &str, ports: &[u16], via: Via, parent: &str, files: &[std::path::PathBuf], n: usize) -> (Vec<Duration>, f64, f64) {
    let client = zk_client(hosts).await;
    let layout = layout();
    if via == Via::Request {
        zkcoord::zk::request::ensure_parents(&client, &layout).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle0 = server_counts(ports);
    tokio::time::sleep(RECIPE_IDLE).await;
    let idle1 = server_counts(ports);
    let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let tag = std::process::id();
    let before = server_counts(ports);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let bytes = format!("worker_processes {i}; # {tag} {parent} {:?}\n", files.len()).into_bytes();
        let start = Instant::now();
        match via {
            Via::Recipe => {
                client.create(&format!("{parent}/conf-"), &bytes, &opts).await.unwrap();
            }
            Via::Trigger(port) => {
                let mut msg = b"add|".to_vec();
                msg.extend_from_slice(&bytes);
                let reply = tokio::task::spawn_blocking(move || trigger(port, &msg)).await.unwrap();
                assert!(reply.starts_with("published"), "trigger answered {reply:?}");
            }
            Via::Request => {
                let header = zkcoord::model::request::header_for(APP, "bench", None, "zkcoordctl", &bytes).unwrap();
                let req = zkcoord::zk::request::create(&client, &layout, &header, &bytes).await.unwrap();
                let outcome = zkcoord::zk::request::await_outcome(&client, &layout, &req, Duration::from_secs(30)).await.unwrap();
                assert!(matches!(outcome, zkcoord::model::request::Outcome::Published { .. }), "{outcome}");
            }
        }
        loop {
            if files.iter().all(|f| std::fs::read(f).ok().as_deref() == Some(&bytes[..])) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "publish {i} never landed everywhere");
            tokio::time::sleep(Duration::from_micros(250)).await;
        }
        out.push(start.elapsed());
        tokio::time::sleep(RECIPE_GAP).await;
    }
    // The hosts' status writes of the last publish land before the count is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server_counts(ports);
    let (packets, txns) = counted_since(before, after, (idle0, idle1));
    (out, packets / n as f64, txns / n as f64)
}

/// The recipe baseline beside zkcoord in the same run (issue 15): latency from publish start
/// until every host's file holds the bytes, and ZooKeeper requests and quorum writes per
/// publish and per host, counted from the servers' `mntr` and zxid.
async fn section_recipe(hosts: &str, ports: &[u16], trigger_ports: &[(u32, u16)], report: &mut Vec<String>) {
    let n = recipe_publishes();
    report.push(String::new());
    report.push(format!("| publish start -> every host's file holds it (ms), {n} publishes {RECIPE_GAP:?} apart | hosts | p50 | p90 | p99 | max | ZooKeeper requests / publish | per host | quorum writes / publish |"));
    report.push("|---|---|---|---|---|---|---|---|---|".into());
    let mut push = |name: &str, hosts_n: usize, mut v: Vec<Duration>, req: f64, txn: f64, base: Option<(f64, f64)>| {
        v.sort();
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        let per_host = match base {
            Some((r0, _)) if hosts_n > 0 => format!("{:.1}", (req - r0) / hosts_n as f64),
            _ => "-".into(),
        };
        report.push(format!(
            "| {name} | {hosts_n} | {} | {} | {} | {} | {req:.1} | {per_host} | {txn:.1} |",
            ms(pct(&v, 0.5)),
            ms(pct(&v, 0.9)),
            ms(pct(&v, 0.99)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        ));
    };
    let scratch = tempfile::Builder::new().prefix("zkcoord-recipe-").tempdir().unwrap();
    // The recipe.
    let writer = zk_client(hosts).await;
    let mut base = None;
    for watchers in [0usize, 10, 50] {
        let parent = format!("/bench/recipe-{watchers}");
        create_all(&writer, &parent).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let files = recipe_watchers(hosts, &parent, scratch.path(), watchers, &stop).await;
        let (lat, req, txn) = recipe_row(hosts, ports, Via::Recipe, &parent, &files, n).await;
        if watchers == 0 {
            base = Some((req, txn));
        }
        push("recipe: create -> child watch -> get -> write", watchers, lat, req, txn, base);
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // zkcoord: the leader's trigger port, and the request path.
    let client = zk_client(hosts).await;
    let leader = leader_pid(&client).await.expect("a leader");
    let port = trigger_ports.iter().find(|(pid, _)| *pid == leader).map(|(_, p)| *p).expect("the leader's trigger port");
    let mut bases: HashMap<&str, (f64, f64)> = HashMap::new();
    for count in [0usize, 10, 50] {
        let mut apps = if count > 0 { start_apps(hosts, count, None).await } else { Vec::new() };
        let files: Vec<std::path::PathBuf> = apps.iter().map(dest).collect();
        for (label, via) in [("zkcoord: legacy trigger to the leader", Via::Trigger(port)), ("zkcoord: request path (as zkcoordctl)", Via::Request)] {
            let (lat, req, txn) = recipe_row(hosts, ports, via, "", &files, n).await;
            if count == 0 {
                bases.insert(label, (req, txn));
            }
            push(label, count, lat, req, txn, bases.get(label).copied());
        }
        for a in apps.iter_mut() {
            a.term();
        }
        drop(apps);
        wait_no_status(hosts).await;
    }
    report.push(format!("\nRequests are `zk_packets_received` summed over the 3 servers, quorum writes the zxid delta, both less the idle rate of a {RECIPE_IDLE:?} window before each row. Per host is (row - the 0-host row) / hosts. With 0 hosts, latency is publish start -> answered (trigger, request path) or created (recipe)."));
}

/// Versions per second: library calls and the legacy trigger, 1 and 16 clients.
async fn section_throughput(hosts: &str, trigger_port: u16, per_client: usize, report: &mut Vec<String>) {
    report.push(String::new());
    report.push("| publish throughput | clients | versions | seconds | versions/s |".into());
    report.push("|---|---|---|---|---|".into());
    for clients in [1usize, 16] {
        let mut tasks = Vec::new();
        let t = Instant::now();
        for c in 0..clients {
            let hosts = hosts.to_string();
            tasks.push(tokio::spawn(async move {
                let client = zk_client(&hosts).await;
                for i in 0..per_client {
                    publish_lib(&client, format!("lib {clients} {c} {i}\n").as_bytes()).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let total = clients * per_client;
        report.push(format!("| library (submit + await outcome) | {clients} | {total} | {secs:.2} | {:.0} |", total as f64 / secs));
    }
    for clients in [1usize, 16] {
        let t = Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                std::thread::spawn(move || {
                    for i in 0..per_client {
                        let reply = trigger(trigger_port, format!("add|trigger {clients} {c} {i}\n").as_bytes());
                        assert!(reply.starts_with("published"), "{reply}");
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let total = clients * per_client;
        report.push(format!("| legacy trigger (`add|<data>`) | {clients} | {total} | {secs:.2} | {:.0} |", total as f64 / secs));
    }
}

/// A burst of `n` fire-and-forget legacy triggers (100 B-20 KiB, distinct, one sender back to
/// back, as `trigger.py` in a loop) against one agent on its own single ZooKeeper: versions
/// created and time to drain; then one sender that waits for each answer.
async fn section_burst(n: usize, report: &mut Vec<String>) {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let port = free_port();
    let mut spec = Spec::agent("agent-burst", &hosts);
    spec.agent_extra = format!("trigger_listen = \"127.0.0.1:{port}\"\ntrigger_app = \"{APP}\"\nkeep_versions = {}", n * 2 + 200);
    let agent = spec.start();
    let client = zk_client(&hosts).await;
    agent.wait_for_log("legacy trigger listening", Duration::from_secs(30));
    wait_until("the burst agent leads", Duration::from_secs(30), || async { leader_pid(&client).await.is_some() }).await;
    let burst = trigger_burst(&client, port, n, 1, Duration::from_secs(600)).await;
    let secs = burst.drain_time.as_secs_f64();
    report.push(String::new());
    report.push("| legacy trigger burst (1 ZooKeeper) | sent | versions | drain (s) | versions/s |".into());
    report.push("|---|---|---|---|---|".into());
    report.push(format!(
        "| fire-and-forget, 100 B-20 KiB, back to back | {n} | {} | {secs:.2} | {:.0} |",
        burst.versions.len(),
        burst.versions.len() as f64 / secs.max(1e-9)
    ));
    let t = Instant::now();
    let waited = tokio::task::spawn_blocking(move || {
        (0..100).filter(|i| trigger(port, format!("add|waiting sender {i}\n").as_bytes()).starts_with("published")).count()
    })
    .await
    .unwrap_or(0);
    let secs = t.elapsed().as_secs_f64();
    report.push(format!("| one sender waiting for each answer | 100 | {waited} | {secs:.2} | {:.0} |", waited as f64 / secs));
}

/// Time until a node with `prefix` under `parent` is owned by a session other than `old`.
async fn wait_reowned(client: &zk::Client, parent: &str, name_prefix: &str, old: i64) -> Instant {
    loop {
        if let Ok(children) = client.list_children(parent).await {
            for c in children.iter().filter(|c| c.starts_with(name_prefix)) {
                if let Ok(Some(stat)) = client.check_stat(&format!("{parent}/{c}")).await {
                    if stat.ephemeral_owner != 0 && stat.ephemeral_owner != old {
                        return Instant::now();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn owner(client: &zk::Client, parent: &str, name_prefix: &str) -> i64 {
    let children = client.list_children(parent).await.unwrap();
    let c = children.iter().find(|c| c.starts_with(name_prefix)).expect("node");
    client.check_stat(&format!("{parent}/{c}")).await.unwrap().unwrap().ephemeral_owner
}

/// Failover of the leading agent, and re-registration after a session expiry.
async fn section_failover(hosts: &str, agents: &mut [Daemon], report: &mut Vec<String>) {
    let mut graceful = Vec::new();
    let mut killed = Vec::new();
    for _ in 0..5 {
        graceful.push(failover(hosts, agents, true).await);
        killed.push(failover(hosts, agents, false).await);
    }
    table(report, "failover and re-registration (ms)");
    report.push(row("SIGTERM of the leader -> publish acknowledged", graceful));
    report.push(row("kill -9 of the leader (session 2s) -> publish acknowledged", killed));

    // Expiry: SIGSTOP past the session timeout, SIGCONT, and time until the node is back
    // under a new session.
    let client = zk_client(hosts).await;
    let mut app = start_apps(hosts, 1, None).await.pop().unwrap();
    let status_parent = format!("/zkcoord/status/{APP}");
    let (mut app_times, mut agent_times) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let old = owner(&client, &status_parent, "web-00").await;
        app.stop_signal();
        tokio::time::sleep(Duration::from_secs(6)).await; // session 4s
        let t = Instant::now();
        app.cont();
        app_times.push(wait_reowned(&client, &status_parent, "web-00", old).await - t);

        let standby = agents.iter().position(|a| a.pid() != leader_pid_sync(hosts)).unwrap();
        let name = election_node_of(&client, agents[standby].pid()).await;
        let old = owner(&client, "/roles/workers", &name).await;
        agents[standby].stop_signal();
        tokio::time::sleep(Duration::from_secs(4)).await; // session 2s
        let t = Instant::now();
        agents[standby].cont();
        agent_times.push(wait_reowned(&client, "/roles/workers", "worker", old).await - t);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.push(row("app host status node back after expiry (from SIGCONT)", app_times));
    report.push(row("agent election node back after expiry (from SIGCONT)", agent_times));
    app.term();
    wait_no_status(hosts).await;
}

fn leader_pid_sync(hosts: &str) -> u32 {
    let hosts = hosts.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let client = zk_client(&hosts).await;
            leader_pid(&client).await.expect("a leader")
        })
    })
    .join()
    .unwrap()
}

/// The election node whose data names `pid`.
async fn election_node_of(client: &zk::Client, pid: u32) -> String {
    for c in client.list_children("/roles/workers").await.unwrap() {
        let (data, _) = client.get_data(&format!("/roles/workers/{c}")).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
        if v["pid"].as_u64() == Some(pid as u64) {
            return c;
        }
    }
    panic!("no election node for pid {pid}");
}

/// RSS, CPU and context switches of an app daemon, idle and under a publish every 100 ms.
async fn section_footprint(hosts: &str, idle_secs: u64, report: &mut Vec<String>) {
    let app = start_apps(hosts, 1, None).await.pop().unwrap();
    let pid = app.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sample = |secs: f64, cpu0: u64, ctx0: u64| {
        (
            rss_kib(pid),
            (cpu_ticks(pid) - cpu0) as f64 / 100.0 / secs * 100.0,
            ctx_switches(pid).saturating_sub(ctx0) as f64 / secs,
        )
    };
    let (cpu0, ctx0, t0) = (cpu_ticks(pid), ctx_switches(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let (rss, cpu, ctx) = sample(t0.elapsed().as_secs_f64(), cpu0, ctx0);
    report.push(String::new());
    report.push("| app daemon footprint | window | RSS (KiB) | CPU (% of a core) | context switches/s |".into());
    report.push("|---|---|---|---|---|".into());
    report.push(format!("| idle (session 4s, no watchdog) | {idle_secs} s | {rss} | {cpu:.3} | {ctx:.1} |"));
    let client = zk_client(hosts).await;
    let (cpu0, ctx0, t0) = (cpu_ticks(pid), ctx_switches(pid), Instant::now());
    let mut peak = 0;
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(10) {
        let tick = Instant::now();
        publish_lib(&client, format!("busy {i}\n").as_bytes()).await;
        peak = peak.max(rss_kib(pid));
        i += 1;
        if let Some(rest) = Duration::from_millis(100).checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let (rss, cpu, ctx) = sample(t0.elapsed().as_secs_f64(), cpu0, ctx0);
    report.push(format!("| a publish every 100 ms ({i} publishes) | 10 s | {rss} (peak {peak}) | {cpu:.3} | {ctx:.1} |"));
    report.push("\n(context switches are summed over the threads alive at both samples; threads that exited in between are not counted)".into());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The daemons log as an installed one does (`info`), not at the tests' `debug`: a debug
    // line per step is CPU that 50 daemons on 2 cores pay on every publish.
    if std::env::var_os("ZKCOORD_TEST_RUST_LOG").is_none() {
        std::env::set_var("ZKCOORD_TEST_RUST_LOG", "info");
    }
    let n: usize = env_or("ZKCOORD_BENCH_PUBLISHES", 200);
    let idle_secs: u64 = env_or("ZKCOORD_BENCH_IDLE_SECS", 60);
    let mut report = vec![format!(
        "machine: {} cores, {}; ZooKeeper x3 on loopback (tickTime 200)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::env::consts::ARCH
    )];
    if wanted("burst") {
        section_burst(500, &mut report).await;
    }
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    if wanted("floor") {
        table(&mut report, "the floor (ms)");
        report.push(row("plain client create -> watch -> read", floor(&hosts, n).await));
    }
    // Each agent listens for legacy triggers on a port of its own: the throughput section sends
    // to the first (leader or not, as a script would), the recipe section to the leader's.
    let agent_ports = [free_port(), free_port()];
    let trigger_port = agent_ports[0];
    let mut agents: Vec<Daemon> = (0..2)
        .map(|i| {
            let mut s = Spec::agent(&format!("agent-{i}"), &hosts);
            s.session = "2s";
            s.agent_extra = format!("trigger_listen = \"127.0.0.1:{}\"\ntrigger_app = \"{APP}\"", agent_ports[i]);
            s.start()
        })
        .collect();
    let client = zk_client(&hosts).await;
    wait_until("a leader", Duration::from_secs(30), || async { leader_pid(&client).await.is_some() }).await;
    if wanted("recipe") {
        for a in &agents {
            a.wait_for_log("legacy trigger listening", Duration::from_secs(30));
        }
        let ports: Vec<u16> = (0..zk.len()).map(|i| zk.server_port(i)).collect();
        let trigger_ports: Vec<(u32, u16)> = agents.iter().zip(agent_ports).map(|(a, p)| (a.pid(), p)).collect();
        section_recipe(&hosts, &ports, &trigger_ports, &mut report).await;
    }
    if wanted("propagation") {
        section_propagation(&hosts, n, &mut report).await;
    }
    if wanted("fanout") {
        section_fanout_floor(&hosts, 1000, 50, &mut report).await;
        section_fanout(&hosts, 1000, 50, &mut report).await;
        wait_no_status(&hosts).await;
    }
    if wanted("throughput") {
        section_throughput(&hosts, trigger_port, 100, &mut report).await;
    }
    if wanted("failover") {
        section_failover(&hosts, &mut agents, &mut report).await;
    }
    if wanted("footprint") {
        section_footprint(&hosts, idle_secs, &mut report).await;
    }
    // The bench profile keeps symbols for perf; what the packages ship is stripped.
    let size = |b: &str| {
        let out = std::env::temp_dir().join(format!("zkcoord-size-{}", std::process::id()));
        let stripped = std::process::Command::new("strip").arg("-o").arg(&out).arg(b).status().is_ok_and(|s| s.success());
        let kib = std::fs::metadata(if stripped { out.as_path() } else { std::path::Path::new(b) }).map(|m| m.len() / 1024).unwrap_or(0);
        let _ = std::fs::remove_file(&out);
        format!("{kib} KiB{}", if stripped { " stripped" } else { "" })
    };
    report.push(String::new());
    report.push(format!("binaries: zkcoordd {}, zkcoordctl {}", size(daemon_bin()), size(ctl_bin())));
    println!("{}", report.join("\n"));
}
