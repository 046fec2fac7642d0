//! Bursts of legacy triggers from fire-and-forget senders (the classic `trigger.py`: connect,
//! send `add|<data>`, close without reading), against a real ZooKeeper and a real agent. Such a
//! sender cannot see a failure, so every payload it sent must become a version.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A ZooKeeper and an agent with the legacy trigger on a free port, keeping every version of a
/// burst, registered and listening; with a plain client to check what it made.
struct BurstRig {
    /// Kept alive for the test.
    _zk: ZkEnsemble,
    /// The agent.
    agent: Daemon,
    /// A plain client.
    client: zookeeper_client::Client,
    /// The trigger's port.
    port: u16,
}

async fn burst_rig() -> BurstRig {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let port = free_port();
    let mut spec = Spec::agent("agent-1", &hosts);
    spec.agent_extra = format!("trigger_listen = \"127.0.0.1:{port}\"\ntrigger_app = \"{APP}\"\nkeep_versions = 2000");
    let agent = spec.start();
    let client = zk_client(&hosts).await;
    wait_until("an agent registered", Duration::from_secs(20), || async { !workers(&client).await.is_empty() }).await;
    agent.wait_for_log("legacy trigger listening", Duration::from_secs(20));
    BurstRig { _zk: zk, agent, client, port }
}

/// The bytes of every version of APP, read with a plain ZooKeeper client.
async fn version_bytes(client: &zookeeper_client::Client, names: &[String]) -> BTreeSet<Vec<u8>> {
    let reads = names.iter().map(|n| async move { get(client, &format!("/applications/{APP}/{n}")).await.unwrap_or_default() });
    futures::future::join_all(reads).await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_fire_and_forget_triggers_loses_nothing_and_stays_within_budget() {
    const N: usize = 400;
    let BurstRig { _zk, agent, client, port } = burst_rig().await;

    // Four senders, each back to back: more connections at once than the listener's limit (64).
    let burst = trigger_burst(&client, port, N, 4, Duration::from_secs(300)).await;
    eprintln!(
        "figures: {} of {N} payloads became versions; senders done in {:?}, drained in {:?}",
        burst.versions.len(),
        burst.send_time,
        burst.drain_time
    );
    assert_eq!(burst.send_errors, 0, "the senders saw failures");
    let want: BTreeSet<Vec<u8>> = (0..N).map(burst_payload).collect();
    let got = version_bytes(&client, &burst.versions).await;
    let missing = want.difference(&got).count();
    assert_eq!(missing, 0, "{missing} payloads never became a version; log tail:\n{}", agent.log_tail(40));
    assert_eq!(burst.versions.len(), N, "every distinct payload is exactly one version");
    assert!(!agent.log().contains("connection refused"), "no accepted connection may be dropped");

    let (rss_kib, fds) = rss_kib_and_fds(agent.pid());
    let peak_kib = proc_status_kib(agent.pid(), "VmHWM:");
    eprintln!("figures: agent after the burst: RSS {rss_kib} KiB (peak {peak_kib} KiB), {fds} fds");
    assert!(rss_kib > 0 && rss_kib < 200 * 1024, "RSS {rss_kib} KiB");
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
    assert!(fds > 0 && fds < 300, "{fds} open fds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_cannot_starve_real_triggers() {
    let BurstRig { _zk, agent, client: _, port } = burst_rig().await;

    // More silent connections than the listener takes at once.
    let idle: Vec<std::net::TcpStream> = (0..80).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    // A real trigger behind them is answered once the silent ones are closed (2 s each, well
    // before the 30 s read timeout).
    let reply = tokio::task::spawn_blocking(move || trigger(port, b"add|behind the idle ones\n")).await.unwrap();
    assert!(reply.starts_with("published conf-"), "trigger reply: {reply:?}; log tail:\n{}", agent.log_tail(20));
    agent.wait_for_log("sent nothing within", Duration::from_secs(20));
    // Every idle connection was closed by the daemon: reading gives end of file.
    for mut s in idle {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        assert!(s.read_to_end(&mut buf).is_ok(), "an idle connection was left open");
    }
}

/// The figures of BENCHMARKS.md's burst section: `ZKCOORD_DAEMON_BIN=target/release/zkcoordd
/// cargo test --test trigger_burst -- --ignored --nocapture` (any build can be measured this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: prints figures"]
async fn measure_a_burst_of_500_fire_and_forget_triggers() {
    let n: usize = std::env::var("ZKCOORD_BURST").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let BurstRig { _zk, agent, client, port } = burst_rig().await;
    let burst = trigger_burst(&client, port, n, 1, Duration::from_secs(600)).await;
    let want: BTreeSet<Vec<u8>> = (0..n).map(burst_payload).collect();
    let got = version_bytes(&client, &burst.versions).await;
    let (rss_kib, fds) = rss_kib_and_fds(agent.pid());
    let refused = agent.log().matches("connection refused").count();
    println!(
        "burst: {n} fire-and-forget triggers (100 B-20 KiB), one sender back to back: {} versions, {} payloads missing, \
         {} send errors, {refused} log lines 'connection refused'; sent in {:.2} s, drained in {:.2} s ({:.0} versions/s); RSS {rss_kib} KiB, {fds} fds",
        burst.versions.len(),
        want.difference(&got).count(),
        burst.send_errors,
        burst.send_time.as_secs_f64(),
        burst.drain_time.as_secs_f64(),
        burst.versions.len() as f64 / burst.drain_time.as_secs_f64().max(1e-9),
    );
    // How the leader grouped them (its debug log line per batch).
    let log = agent.log();
    let batches: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("batch of publish requests handled"))
        .filter_map(|l| l.split("requests=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    println!(
        "leader: {} batches, {:.1} requests each on average, largest {}",
        batches.len(),
        batches.iter().sum::<usize>() as f64 / batches.len().max(1) as f64,
        batches.iter().max().unwrap_or(&0)
    );
    // One sender that waits for each answer.
    let t = Instant::now();
    let waited = tokio::task::spawn_blocking(move || {
        (0..100).filter(|i| trigger(port, format!("add|waiting sender {i}\n").as_bytes()).starts_with("published")).count()
    })
    .await
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!("sequential waiting sender: {waited} of 100 published in {secs:.2} s ({:.0} publishes/s)", waited as f64 / secs);
}
