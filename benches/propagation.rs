//! How fast and how light: `cargo bench --bench propagation` starts a three-node ZooKeeper
//! ensemble on loopback and real `zkcoordd` processes, and prints a table:
//!
//! - the floor: a plain client's create -> child watch fires -> read, the least any
//!   publish-to-applied can take;
//! - publish-to-applied for 1 and 10 app daemons (no reload hook), p50/p90/p99/max, measured
//!   from the publish call's start and from its return;
//! - failover: SIGTERM and kill -9 of the leading agent until a publish is acknowledged;
//! - footprint: an idle app daemon's RSS and CPU over 10 s, and the binaries' sizes.
//!
//! `ZKCOORD_BENCH_PUBLISHES` sets the publishes per run (default 200).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fleet/mod.rs"]
mod fleet;

use common::*;
use fleet::*;
use std::time::{Duration, Instant};
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

/// Publishes through the leading agent and waits until every app's file holds the bytes.
async fn propagation(hosts: &str, apps: &[Daemon], n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let client = zk_client(hosts).await;
    let layout = zkcoord::layout::Layout::new("/zkcoord", "/applications", "/roles/workers");
    let (mut from_start, mut from_return) = (Vec::new(), Vec::new());
    for i in 0..n {
        let bytes = format!("worker_processes {i};\n").into_bytes();
        let header = zkcoord::request::header_for(APP, "bench", None, "zkcoordctl", &bytes).unwrap();
        let start = Instant::now();
        let req = zkcoord::request::submit(&client, &layout, &header, &bytes).await.unwrap();
        zkcoord::request::await_outcome(&client, &layout, &req, Duration::from_secs(30)).await.unwrap();
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("ZKCOORD_BENCH_PUBLISHES").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let mut report = vec![
        format!("machine: {} cores, {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), std::env::consts::ARCH),
        String::new(),
        "| measurement (ms) | n | p50 | p90 | p99 | max |".into(),
        "|---|---|---|---|---|---|".into(),
    ];
    report.push(row("plain client create -> watch -> read (the floor)", floor(&hosts, n).await));

    let mut agents: Vec<Daemon> = (0..2)
        .map(|i| {
            let mut s = Spec::agent(&format!("agent-{i}"), &hosts);
            s.session = "2s";
            s.agent_extra = "keep_versions = 100000".into();
            s.start()
        })
        .collect();
    for count in [1usize, 10] {
        let apps: Vec<Daemon> = (0..count)
            .map(|i| {
                let mut s = Spec::app(&format!("web-{i:02}"), &hosts);
                s.reload = None;
                s.start()
            })
            .collect();
        let client = zk_client(&hosts).await;
        let want = count;
        wait_until("apps report", Duration::from_secs(60), || async {
            children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() >= want
        })
        .await;
        let (start, ret) = propagation(&hosts, &apps, n).await;
        report.push(row(&format!("publish -> applied on {count} app(s), from publish start"), start));
        report.push(row(&format!("publish -> applied on {count} app(s), from publish return"), ret));
        if count == 1 {
            let pid = apps[0].pid();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (cpu0, ctx0, t0) = (cpu_ticks(pid), ctx_switches(pid), Instant::now());
            tokio::time::sleep(Duration::from_secs(10)).await;
            let secs = t0.elapsed().as_secs_f64();
            report.push(String::new());
            report.push(format!(
                "idle app daemon (session 1s): RSS {} KiB; CPU {:.3}% over {secs:.0}s; {:.1} context switches/s (threads alive at both samples; exited threads undercount)",
                rss_kib(pid),
                (cpu_ticks(pid) - cpu0) as f64 / 100.0 / secs * 100.0,
                ctx_switches(pid).saturating_sub(ctx0) as f64 / secs
            ));
        }
        drop(apps);
        let _ = client.delete(&format!("/zkcoord/status/{APP}"), None).await;
    }

    let mut graceful = Vec::new();
    let mut killed = Vec::new();
    for _ in 0..5 {
        graceful.push(failover(&hosts, &mut agents, true).await);
        killed.push(failover(&hosts, &mut agents, false).await);
    }
    report.push(String::new());
    report.push("| failover to an acknowledged publish (ms) | n | p50 | p90 | p99 | max |".into());
    report.push("|---|---|---|---|---|---|".into());
    report.push(row("SIGTERM of the leader", graceful));
    report.push(row("kill -9 of the leader (session 2s)", killed));
    let size = |b: &str| std::fs::metadata(b).map(|m| m.len() / 1024).unwrap_or(0);
    report.push(String::new());
    report.push(format!("binaries (this build): zkcoordd {} KiB, zkcoordctl {} KiB", size(daemon_bin()), size(ctl_bin())));
    println!("{}", report.join("\n"));
}
