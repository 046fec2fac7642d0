//! Scaling past one ensemble's voters (issue 15): app hosts served by ZooKeeper observers.
//!
//! The layout a large fleet uses, on loopback: 3 voters that the agents talk to, 2 observers
//! that the app hosts talk to (their `hosts` lists the observers only; see README, "Large
//! fleets: observers"). Every version reaches every host through an observer, no host ever
//! goes backwards, and when an observer dies its hosts move to the other one and go on.
//!
//! `capacity` (ignored; run it by name) measures what each host costs the servers, for the
//! capacity table in BENCHMARKS.md.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bytes of version `n` of the test's config; `number_of` reads `n` back from a file.
fn payload(n: u64) -> Vec<u8> {
    format!("# observer test\nversion {n}\n").into_bytes()
}

/// The `n` of a `payload(n)`, if the bytes are one.
fn number_of(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.lines().nth(1)?.strip_prefix("version ")?.parse().ok()
}

/// What a sampler saw while the test published: every host's file and status, read over and
/// over from a client of the voters, checked never to go backwards.
#[derive(Debug, Default)]
struct Samples {
    /// Rounds of reading every host.
    rounds: usize,
    /// Each time a host's file or status went back, as a sentence.
    backwards: Vec<String>,
}

/// Reads every host's destination (`payload` number) and status (`conf-` sequence) until
/// `stop`, and records any step back. A rename is atomic, so every read file is one version.
fn sample(client: zookeeper_client::Client, hosts: Vec<(String, std::path::PathBuf)>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Samples> {
    tokio::spawn(async move {
        let mut out = Samples::default();
        let mut last_file: BTreeMap<String, u64> = BTreeMap::new();
        let mut last_status: BTreeMap<String, u64> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            for (node, dest) in &hosts {
                if let Some(n) = std::fs::read(dest).ok().as_deref().and_then(number_of) {
                    let prev = last_file.insert(node.clone(), n).unwrap_or(0);
                    if n < prev {
                        out.backwards.push(format!("{node}: file went from version {prev} to {n}"));
                    }
                }
                if let Some(s) = status(&client, node).await {
                    if let Some(seq) = s["version"].as_str().and_then(seq_of) {
                        let prev = last_status.insert(node.clone(), seq).unwrap_or(0);
                        if seq < prev {
                            out.backwards.push(format!("{node}: status went from seq {prev} to {seq}"));
                        }
                    }
                }
            }
            out.rounds += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out
    })
}

/// Waits until every host's file holds `payload(n)` and its status says `ok` for `version`.
async fn wait_all_applied(client: &zookeeper_client::Client, apps: &[Daemon], n: u64, version: &str) {
    for d in apps {
        wait_on_disk(d, &payload(n), Duration::from_secs(60)).await;
        wait_status(client, d.name(), "ok", Some(version)).await;
    }
}

/// Which server each app daemon's session is on right now (waits for each to be connected).
async fn placement(zk: &ZkEnsemble, apps: &[Daemon]) -> Vec<usize> {
    let mut out = Vec::new();
    for d in apps {
        let mut at = None;
        wait_until(&format!("{} has a connection to some server", d.name()), Duration::from_secs(30), || {
            at = zk.server_of_pid(d.pid());
            std::future::ready(at.is_some())
        })
        .await;
        out.push(at.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_on_observers_apply_every_version_and_fail_over_when_their_observer_dies() {
    let started = Instant::now();
    let mut zk = ZkEnsemble::with_observers(3, 2);
    let (voters, observers) = (zk.voters(), zk.observers());
    for &o in &observers {
        assert_eq!(zk.mode(o).as_deref(), Some("observer"), "server {o} serves as an observer");
    }
    let voter_hosts = zk.connect_string_of(&voters);
    let observer_hosts = zk.connect_string_of(&observers);

    // The agent (the only writer of versions) talks to the voters; the app hosts only to the
    // observers, as README's "Large fleets" section says a fleet should.
    let mut agent = Spec::agent("agent-1", &voter_hosts);
    agent.session = "4s";
    let _agent = agent.start();
    let apps: Vec<Daemon> = (1..=3)
        .map(|i| {
            let mut s = Spec::app(&format!("web-{i}"), &observer_hosts);
            s.session = "4s";
            s.start()
        })
        .collect();
    let client = zk_client(&voter_hosts).await;

    // 1. A first version reaches every host, and every host's session is on an observer.
    let v1 = publish_ok(&voter_hosts, &payload(1)).await;
    wait_all_applied(&client, &apps, 1, &v1).await;
    let at = placement(&zk, &apps).await;
    assert!(at.iter().all(|i| observers.contains(i)), "every app session is on an observer: {at:?}");
    let on_observers: usize = observers.iter().map(|&o| zk.session_ids(o).len()).sum();
    assert_eq!(on_observers, apps.len(), "the observers serve exactly the app hosts' sessions (cons)");
    eprintln!("figures: sessions by server after v1: {at:?} (observers {observers:?})");

    // 2. Versions published back to back: every host ends on the newest, never going back.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(zk_client(&voter_hosts).await, apps.iter().map(|d| (d.name().to_string(), dest(d))).collect(), stop.clone());
    let mut newest = (1, v1);
    for n in 2..=8 {
        newest = (n, publish_ok(&voter_hosts, &payload(n)).await);
    }
    wait_all_applied(&client, &apps, newest.0, &newest.1).await;

    // 3. Kill the observer serving the most hosts while versions are being published: its hosts
    // move to the other observer (same session, so nothing to re-read) and take the rest.
    let at = placement(&zk, &apps).await;
    let victim = *observers.iter().max_by_key(|&&o| at.iter().filter(|&&s| s == o).count()).unwrap();
    let survivor = *observers.iter().find(|&&o| o != victim).unwrap();
    let moved: Vec<&str> = apps.iter().zip(&at).filter(|(_, &s)| s == victim).map(|(d, _)| d.name()).collect();
    let burst = {
        let hosts = voter_hosts.clone();
        tokio::spawn(async move {
            let mut last = None;
            for n in 9..=14 {
                last = Some((n, publish_ok(&hosts, &payload(n)).await));
            }
            last.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let killed_at = Instant::now();
    zk.kill(victim);
    let mid_burst = !burst.is_finished();
    newest = burst.await.unwrap();
    wait_all_applied(&client, &apps, newest.0, &newest.1).await;
    eprintln!(
        "figures: observer {victim} (serving {moved:?}) killed {} the burst; all hosts on v{} {:?} later",
        if mid_burst { "during" } else { "after" },
        newest.0,
        killed_at.elapsed()
    );

    // 4. After the failover: every host is on the surviving observer, reports the newest
    // version ok (its ephemeral status node is there), and a further publish lands too.
    let at = placement(&zk, &apps).await;
    assert!(at.iter().all(|&s| s == survivor), "every app session moved to observer {survivor}: {at:?}");
    assert_eq!(zk.session_ids(survivor).len(), apps.len(), "the surviving observer serves every host (cons)");
    let last = publish_ok(&voter_hosts, &payload(15)).await;
    wait_all_applied(&client, &apps, 15, &last).await;
    let statuses = children_sorted(&client, &format!("/zkcoord/status/{APP}")).await;
    assert_eq!(statuses, vec!["web-1", "web-2", "web-3"], "every host's status node is back");
    for d in &apps {
        let owner_ok = status(&client, d.name()).await.map(|s| s["result"] == "ok").unwrap_or(false);
        assert!(owner_ok, "{} reports ok", d.name());
        let expired = d.log().matches("session ended").count();
        eprintln!("figures: {}: sessions ended during the test: {expired}", d.name());
    }

    stop.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    assert!(samples.rounds > 0, "the sampler read the hosts");
    assert!(samples.backwards.is_empty(), "a host went backwards: {:?}", samples.backwards);
    eprintln!("figures: {} sample rounds, none backwards; whole test {:?}", samples.rounds, started.elapsed());
}

/// The path a fleet should not take, and what it costs: hosts that list a single observer lose
/// ZooKeeper when it dies. They keep serving the last good file and keep trying; their sessions
/// expire (the status nodes vanish); when the observer is back they build new sessions, `sync`
/// through the observer before reading, and apply what was published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_on_a_single_observer_hold_their_file_through_its_outage_and_catch_up_on_a_new_session() {
    let mut zk = ZkEnsemble::with_observers(3, 1);
    let observer = zk.observers()[0];
    let voter_hosts = zk.connect_string_of(&zk.voters());
    let mut agent = Spec::agent("agent-1", &voter_hosts);
    agent.session = "4s";
    let _agent = agent.start();
    let mut apps: Vec<Daemon> = (1..=2)
        .map(|i| {
            let mut s = Spec::app(&format!("web-{i}"), &zk.connect_string_of(&[observer]));
            s.session = "1s";
            s.start()
        })
        .collect();
    let client = zk_client(&voter_hosts).await;
    let v1 = publish_ok(&voter_hosts, &payload(1)).await;
    wait_all_applied(&client, &apps, 1, &v1).await;

    // The observer dies; the quorum does not notice (it never voted) and publishing goes on.
    zk.kill(observer);
    let v2 = publish_ok(&voter_hosts, &payload(2)).await;
    // The leader expires the hosts' sessions: their ephemeral status nodes go.
    wait_until("the hosts' sessions expired (status nodes gone)", Duration::from_secs(60), || {
        let client = client.clone();
        async move { children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.is_empty() }
    })
    .await;
    let v3 = publish_ok(&voter_hosts, &payload(3)).await;
    for d in apps.iter_mut() {
        assert!(d.is_running(), "{} keeps running without ZooKeeper", d.name());
        assert_eq!(on_disk(d), Some(payload(1)), "{} keeps the last good file", d.name());
    }

    // Back: new sessions, sync, read; the newest (v3) is applied, v2 is skipped or passed.
    zk.start(observer);
    wait_all_applied(&client, &apps, 3, &v3).await;
    for d in &apps {
        assert!(d.log().contains("session ended"), "{}'s session expired and was rebuilt", d.name());
        assert_eq!(zk.server_of_pid(d.pid()), Some(observer));
    }
    eprintln!("figures: {v1} -> {v2} (published during the outage) -> {v3} applied after the observer's return");
}

// ---------------------------------------------------------------------------------------------
// Capacity: what one app host costs the servers. Prints the rows of BENCHMARKS.md's
// "Capacity: observers" table. Re-run with
//     cargo build --release --bin zkcoordd
//     ZKCOORD_DAEMON_BIN=$PWD/target/release/zkcoordd \
//       cargo test --test observers capacity -- --ignored --nocapture
// (without ZKCOORD_DAEMON_BIN the debug daemon runs: the same requests, a larger RSS)
// (ZKCOORD_CAPACITY_HOSTS="1,10,20", ZKCOORD_CAPACITY_PUBLISHES=20, ZKCOORD_CAPACITY_IDLE_SECS=10,
// ZKCOORD_CAPACITY_SESSIONS=1000 plain sessions for the memory probe, 0 to skip it).

/// An environment variable parsed, or its default.
fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The servers' counters at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    /// When it was taken.
    at: Instant,
    /// `zk_packets_received` of every server, by index.
    packets: Vec<u64>,
    /// `zk_watch_count` of every server.
    watches: Vec<u64>,
    /// `zk_approximate_data_size` of the quorum leader.
    data_size: u64,
    /// The leader's last zxid (its low 32 bits count transactions).
    zxid: u64,
}

fn snapshot(zk: &ZkEnsemble) -> Snapshot {
    let at = Instant::now();
    let m: Vec<BTreeMap<String, String>> = (0..zk.len()).map(|i| zk.mntr(i).unwrap_or_default()).collect();
    let num = |i: usize, k: &str| m[i].get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let leader = zk.leader_index().expect("a quorum leader");
    Snapshot {
        at,
        packets: (0..zk.len()).map(|i| num(i, "zk_packets_received")).collect(),
        watches: (0..zk.len()).map(|i| num(i, "zk_watch_count")).collect(),
        data_size: num(leader, "zk_approximate_data_size"),
        zxid: zk_zxid(zk.server_port(leader)).expect("the leader's zxid"),
    }
}

/// Packets the servers in `which` received between two snapshots.
fn packets(a: &Snapshot, b: &Snapshot, which: &[usize]) -> f64 {
    which.iter().map(|&i| b.packets[i].saturating_sub(a.packets[i]) as f64).sum()
}

/// The JVM's heap in use right after a full GC, in KiB (`jcmd GC.run`, then `GC.heap_info`),
/// and its RSS: what the server's sessions, watches and data take once garbage is gone.
fn jvm_memory_kib(pid: u32) -> (u64, u64) {
    let jcmd = |arg: &str| {
        let out = std::process::Command::new("jcmd").arg(pid.to_string()).arg(arg).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    };
    jcmd("GC.run");
    let info = jcmd("GC.heap_info");
    let used = info
        .lines()
        .find_map(|l| l.split("used ").nth(1))
        .and_then(|v| v.split('K').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (used, proc_status_kib(pid, "VmRSS:"))
}

/// The commit the figures are of (with `-dirty` when the worktree differs from it).
fn commit() -> String {
    let git = |args: &[&str]| std::process::Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok();
    let head = git(&["rev-parse", "--short", "HEAD"]).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty());
    format!("{head}{}", if dirty { "-dirty" } else { "" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md; run by name with --ignored --nocapture"]
async fn capacity() {
    let steps: Vec<usize> = std::env::var("ZKCOORD_CAPACITY_HOSTS")
        .unwrap_or_else(|_| "1,10,20".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let publishes: u64 = env_or("ZKCOORD_CAPACITY_PUBLISHES", 20);
    let idle = Duration::from_secs(env_or("ZKCOORD_CAPACITY_IDLE_SECS", 10));
    let probe_sessions: usize = env_or("ZKCOORD_CAPACITY_SESSIONS", 1000);

    let zk = ZkEnsemble::with_observers(3, 1);
    let (voters, observer) = (zk.voters(), zk.observers()[0]);
    let voter_hosts = zk.connect_string_of(&voters);
    let observer_hosts = zk.connect_string_of(&[observer]);
    let observer_pid = zk.pid(observer).unwrap();
    let mut agent = Spec::agent("agent-1", &voter_hosts);
    agent.session = "10s";
    let _agent = agent.start();
    let client = zk_client(&voter_hosts).await;
    let mut n = 1;
    let mut newest = publish_ok(&voter_hosts, &payload(n)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (heap0, rss0) = jvm_memory_kib(observer_pid);
    let base = snapshot(&zk);

    let mut rows = Vec::new();
    let mut apps: Vec<Daemon> = Vec::new();
    for &hosts in &steps {
        while apps.len() < hosts {
            let mut s = Spec::app(&format!("web-{}", apps.len() + 1), &observer_hosts);
            s.session = "10s"; // the default session_timeout: it sets the ping rate
            apps.push(s.start());
        }
        wait_all_applied(&client, &apps, n, &newest).await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Idle: pings only.
        let a = snapshot(&zk);
        tokio::time::sleep(idle).await;
        let b = snapshot(&zk);
        let idle_secs = b.at.duration_since(a.at).as_secs_f64();
        let idle_obs = packets(&a, &b, &[observer]) / idle_secs;
        let idle_vot = packets(&a, &b, &voters) / idle_secs;

        // Publishes, one at a time, each applied everywhere before the next.
        let c = snapshot(&zk);
        for _ in 0..publishes {
            n += 1;
            newest = publish_ok(&voter_hosts, &payload(n)).await;
            wait_all_applied(&client, &apps, n, &newest).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d = snapshot(&zk);
        let secs = d.at.duration_since(c.at).as_secs_f64();
        let p = publishes as f64;
        let obs_per_publish = (packets(&c, &d, &[observer]) - idle_obs * secs) / p;
        let vot_per_publish = (packets(&c, &d, &voters) - idle_vot * secs) / p;
        let writes_per_publish = (d.zxid - c.zxid) as f64 / p;
        let (heap, rss) = jvm_memory_kib(observer_pid);
        let host_rss: Vec<u64> = apps.iter().map(|d| proc_status_kib(d.pid(), "VmRSS:")).collect();
        let sessions = zk.session_ids(observer).len();
        assert_eq!(sessions, hosts, "every host's session is on the observer");
        if hosts == steps[0] {
            // What one host watches, by path (`wchp`), so the memory probe can hold the same.
            eprintln!("capacity: the observer's watches by path:\n{}", zk.four_letter(observer, "wchp").unwrap_or_default());
        }
        let row = format!(
            "| {hosts} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {:.1} | {} | {:.1} | {} | {} |",
            idle_obs / hosts as f64,
            obs_per_publish,
            obs_per_publish / hosts as f64,
            vot_per_publish,
            writes_per_publish,
            d.watches[observer] as f64 / hosts as f64,
            (heap as f64 - heap0 as f64) / hosts as f64,
            heap,
            (rss as f64 - rss0 as f64) / hosts as f64,
            d.data_size,
            host_rss.iter().sum::<u64>() as f64 / hosts as f64,
            host_rss.iter().max().unwrap(),
            commit(),
        );
        eprintln!("capacity row: {row}");
        rows.push(row);
    }
    let voter_watches: Vec<u64> = voters.iter().map(|&i| snapshot(&zk).watches[i]).collect();

    // Memory probe: plain sessions on the observer holding what a host holds (a child watch on
    // the versions, a watch on the rollout record, an ephemeral status node of a host's size),
    // so that the per-session memory is read over many sessions, not 20.
    let mut probe_row = None;
    if probe_sessions > 0 {
        for d in apps.iter_mut() {
            d.kill9();
        }
        wait_until("the app hosts' sessions are gone", Duration::from_secs(60), || {
            let client = client.clone();
            async move { children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.is_empty() }
        })
        .await;
        let status_bytes = 260usize; // a host's status JSON is ~230-260 bytes
        let (heap_a, rss_a) = jvm_memory_kib(observer_pid);
        let w0 = snapshot(&zk).watches[observer];
        let started = Instant::now();
        let mut sessions = Vec::with_capacity(probe_sessions);
        for chunk in (0..probe_sessions).collect::<Vec<_>>().chunks(50) {
            let made = futures::future::join_all(chunk.iter().map(|&i| {
                let hosts = observer_hosts.clone();
                async move {
                    let c = zk_client_with_timeout(&hosts, Duration::from_secs(10)).await;
                    let (_, _, w1) = c.get_and_watch_children(&format!("/applications/{APP}")).await.unwrap();
                    let (_, w2) = c.check_and_watch_stat(&format!("/zkcoord/rollouts/{APP}")).await.unwrap();
                    let path = format!("/zkcoord/status/{APP}/probe-{i:05}");
                    c.create(&path, &vec![b'x'; status_bytes], &zookeeper_client::CreateMode::Ephemeral.with_acls(zookeeper_client::Acls::anyone_all()))
                        .await
                        .unwrap();
                    (c, w1, w2)
                }
            }))
            .await;
            sessions.extend(made);
        }
        let connect_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (heap_b, rss_b) = jvm_memory_kib(observer_pid);
        let w1 = snapshot(&zk).watches[observer];
        let per = |a: u64, b: u64| (b as f64 - a as f64) / probe_sessions as f64;
        probe_row = Some(format!(
            "| {probe_sessions} plain sessions on the observer (2 watches + a {status_bytes} B ephemeral each) | {:.2} KiB heap | {:.2} KiB RSS | {:.2} watches | connected in {connect_secs:.1} s | {} |",
            per(heap_a, heap_b),
            per(rss_a, rss_b),
            (w1 as f64 - w0 as f64) / probe_sessions as f64,
            commit()
        ));
        eprintln!("capacity probe: {}", probe_row.as_ref().unwrap());
        drop(sessions);
    }

    println!("\nzkcoord capacity, commit {}, {publishes} publishes per step, idle window {idle:?}", commit());
    println!("| app hosts on the observer | idle requests/s per host | observer requests per publish | of which per host | voters' requests per publish (publisher + agent) | quorum writes per publish (zxid) | watches per host (observer) | observer heap per host after GC (KiB) | observer heap after GC (KiB) | observer RSS per host (KiB) | data size (B) | zkcoordd RSS per host, mean (KiB) | max (KiB) | commit |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!("baseline (no hosts): observer heap after GC {heap0} KiB, RSS {rss0} KiB; voters' watches at the end {voter_watches:?}; leader data size at start {} B", base.data_size);
    if let Some(p) = probe_row {
        println!("{p}");
    }
}
