//! What one publish costs ZooKeeper, counted on the server: quorum writes (zxid delta) and
//! requests (`zk_packets_received` delta less the idle rate), through the leading agent's
//! legacy trigger and through `zkcoordctl publish`, and what the record of its rollout adds.
//! One agent, no app hosts: only the publish.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::Duration;

/// Publishes per path: enough to average out a stray ping.
const N: usize = 10;

/// Per-publish writes and requests over `n` publishes, idle-corrected.
fn per_publish(before: ServerCounts, after: ServerCounts, idle: (ServerCounts, ServerCounts), n: usize) -> (f64, f64) {
    let (requests, writes) = counted_since(before, after, idle);
    (writes / n as f64, requests / n as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_costs_few_requests_and_one_or_two_quorum_writes() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let zk_port = zk.server(0).client_port();
    let port = free_port();
    let mut spec = Spec::agent("agent-1", &hosts);
    // Keep every version: pruning is not part of the publish being counted.
    spec.agent_extra = format!("trigger_listen = \"127.0.0.1:{port}\"\ntrigger_app = \"{APP}\"\nkeep_versions = 1000");
    let agent = spec.start();
    let client = zk_client(&hosts).await;
    wait_until("an agent registered", Duration::from_secs(20), || async { !workers(&client).await.is_empty() }).await;
    agent.wait_for_log("legacy trigger listening", Duration::from_secs(20));
    // A first publish makes the parents and warms the trigger's session state.
    assert!(trigger(port, b"add|warm-up 1\n").starts_with("published conf-"));
    // Past the warm-up's rollout record (written a second after the publish).
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The idle rate over a window as long as the publishes take (pings, the agent's own work).
    let idle0 = server_counts(&[zk_port]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle1 = server_counts(&[zk_port]);

    let before = server_counts(&[zk_port]);
    for i in 0..N {
        let reply = trigger(port, format!("add|trigger payload {i}\n").as_bytes());
        assert!(reply.starts_with("published conf-"), "trigger {i}: {reply}; log:\n{}", agent.log_tail(30));
    }
    let after = server_counts(&[zk_port]);
    let (t_writes, t_requests) = per_publish(before, after, (idle0, idle1), N);
    // The record of each version's rollout (no hosts here): once the burst's own record is
    // written, one trigger publish alone, counted until its record is written (its first look
    // comes a second after the publish).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = server_counts(&[zk_port]);
    let reply = trigger(port, b"add|recorded alone\n");
    assert!(reply.starts_with("published conf-"), "{reply}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = server_counts(&[zk_port]);
    let (r_writes, r_requests) = per_publish(before, after, (idle0, idle1), 1);
    let client = zk_client(&hosts).await;
    let recorded = format!("/zkcoord/meta/{APP}/{}", reply.trim().trim_start_matches("published "));
    let meta: serde_json::Value = serde_json::from_slice(&get(&client, &recorded).await.expect("its metadata")).unwrap();
    assert_eq!(meta["record"]["settled"], "complete", "recorded within the window: {meta}");

    // zkcoordctl's first publish warms its path; its session's end comes within the burst.
    publish_ok(&hosts, b"warm-up 2\n").await;
    let before = server_counts(&[zk_port]);
    for i in 0..N {
        publish_ok(&hosts, format!("ctl payload {i}\n").as_bytes()).await;
    }
    let after = server_counts(&[zk_port]);
    let (c_writes, c_requests) = per_publish(before, after, (idle0, idle1), N);
    // zkcoordctl opens a session per call: one transaction that is not the publish's. It exits
    // without waiting for the close, so the session ends (expires) after this window.
    let c_writes = c_writes - 1.0;

    eprintln!("figures: trigger on the leader: {t_writes:.2} quorum writes, {t_requests:.1} requests per publish");
    eprintln!("figures: zkcoordctl publish: {c_writes:.2} quorum writes (session creation excluded), {c_requests:.1} requests per publish (session included)");
    assert_eq!(t_writes.round() as i64, 1, "a trigger on the leader: the version's multi-op is the only write");
    // The listing and the rollout record in one multi read, the version's multi-op, and no
    // listing for the prune (issue 15's target: at most 4).
    assert!(t_requests <= 4.0, "{t_requests:.1} requests per trigger publish");
    assert_eq!(c_writes.round() as i64, 2, "zkcoordctl publish: {c_writes:.2} quorum writes: the request, and the version's multi-op that answers it");
    // The publisher's session (open), request, outcome watch and read; the leader's read of
    // the request (no listing: a persistent watch names it), its listing with the record, and
    // the version's multi-op.
    assert!(c_requests <= 11.0, "{c_requests:.1} requests per zkcoordctl publish");

    eprintln!("figures: one trigger publish with its rollout record: {r_writes:.2} quorum writes, {r_requests:.1} requests");
    // The record: the metadata with the rollout record (one multi read), the status listing,
    // and one fenced setData.
    assert_eq!(r_writes.round() as i64, 2, "the version's multi-op and the record's");
    assert!(r_requests <= t_requests + 4.0, "{r_requests:.1} requests for a publish and its record");
    assert_eq!(versions(&client).await.len(), 3 + 2 * N, "every distinct payload is one version");
}
