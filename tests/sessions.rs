//! Session supervision and leadership under faults: kills, clean stops, deleted nodes, paused
//! processes past their session timeout. Real ZooKeeper, real daemons.

mod common;
mod fleet;

use common::*;
use fleet::*;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// Waits until the election node of `pid` is the leader's (smallest) one.
async fn wait_leader(client: &zookeeper_client::Client, pid: u32) {
    wait_until(&format!("pid {pid} leads"), Duration::from_secs(20), || async { leader_pid(client).await == Some(pid) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_lets_a_standby_lead_and_publish() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut a1 = Spec::agent("agent-1", &hosts).start();
    wait_leader(&client, a1.pid()).await;
    let a2 = Spec::agent("agent-2", &hosts).start();
    let web = Spec::app("web-1", &hosts).start();
    wait_until("two agents registered", Duration::from_secs(20), || async { workers(&client).await.len() == 2 }).await;
    publish_ok(&hosts, b"one\n").await;
    wait_on_disk(&web, b"one\n", Duration::from_secs(20)).await;

    a1.kill9();
    let killed = Instant::now();
    // The standby leads once the dead leader's session (1s) expires; a publish made meanwhile
    // waits for it rather than failing.
    let v = publish_ok(&hosts, b"two\n").await;
    let failover = killed.elapsed();
    wait_leader(&client, a2.pid()).await;
    wait_on_disk(&web, b"two\n", Duration::from_secs(20)).await;
    eprintln!("figures: kill -9 of the leader (session 1s) to a publish acknowledged by the standby: {failover:?} ({v})");
    assert!(a2.log().contains("leadership: leader"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_the_leaders_election_node_at_once() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut spec = Spec::agent("agent-1", &hosts);
    spec.session = "4s";
    let mut a1 = spec.start();
    wait_leader(&client, a1.pid()).await;
    let mut spec2 = Spec::agent("agent-2", &hosts);
    spec2.session = "4s";
    let a2 = spec2.start();
    wait_until("two agents registered", Duration::from_secs(20), || async { workers(&client).await.len() == 2 }).await;

    let t = Instant::now();
    let status = a1.term();
    assert!(status.success(), "clean stop exits 0: {status:?}");
    let exited = t.elapsed();
    wait_until("the leader's election node is gone", Duration::from_secs(2), || async { workers(&client).await.len() == 1 }).await;
    wait_leader(&client, a2.pid()).await;
    let handover = t.elapsed();
    eprintln!("figures: SIGTERM to exit {exited:?}; to the standby's node leading {handover:?} (session timeout 4s)");
    assert!(handover < Duration::from_secs(3), "the node must vanish at once, not after the 4s session timeout");
    publish_ok(&hosts, b"after handover\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_status_and_election_nodes_are_recreated() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let d = Spec::both("web-1", &hosts).start();
    wait_until("registered", Duration::from_secs(20), || async { workers(&client).await.len() == 1 }).await;
    let status_path = format!("/zkcoord/status/{APP}/web-1");
    wait_until("status node exists", Duration::from_secs(20), || async { get(&client, &status_path).await.is_some() }).await;

    // An operator deletes our status node.
    assert!(delete(&client, &status_path).await);
    let t = Instant::now();
    wait_until("status node re-created", Duration::from_secs(5), || async { get(&client, &status_path).await.is_some() }).await;
    let status_back = t.elapsed();

    // And our election node.
    let old = workers(&client).await;
    assert!(delete(&client, &format!("/roles/workers/{}", old[0])).await);
    let t = Instant::now();
    wait_until("election node re-created", Duration::from_secs(5), || async {
        let w = workers(&client).await;
        w.len() == 1 && w != old
    })
    .await;
    let election_back = t.elapsed();
    eprintln!("figures: re-created after deletion: status node {status_back:?}, election node {election_back:?}");
    assert!(status_back < Duration::from_secs(1) && election_back < Duration::from_secs(1));
    // It leads again through the new node and still publishes.
    wait_leader(&client, d.pid()).await;
    publish_ok(&hosts, b"still leading\n").await;
    wait_on_disk(&d, b"still leading\n", Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_paused_past_its_session_timeout_re_registers_and_applies_what_was_missed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let _agent = Spec::agent("agent-1", &hosts).start();
    let web = Spec::app("web-1", &hosts).start();
    publish_ok(&hosts, b"before\n").await;
    wait_on_disk(&web, b"before\n", Duration::from_secs(20)).await;
    let status_path = format!("/zkcoord/status/{APP}/web-1");
    let owner_before = stat_owner(&client, &status_path).await;

    web.signal(Signal::SIGSTOP);
    // Session 1s: wait until the server has expired it and removed the status node.
    wait_until("the paused host's status node expired", Duration::from_secs(10), || async {
        get(&client, &status_path).await.is_none()
    })
    .await;
    publish_ok(&hosts, b"while paused\n").await;
    let t = Instant::now();
    web.signal(Signal::SIGCONT);
    wait_on_disk(&web, b"while paused\n", Duration::from_secs(20)).await;
    let caught_up = t.elapsed();
    wait_until("status node back", Duration::from_secs(10), || async { get(&client, &status_path).await.is_some() }).await;
    let owner_after = stat_owner(&client, &status_path).await;
    assert_ne!(owner_before, owner_after, "re-registered on a new session");
    eprintln!("figures: SIGCONT after expiry to the missed version on disk: {caught_up:?}");
    assert!(web.log().contains("session ended"), "the daemon noticed the expiry");
}

async fn stat_owner(client: &zookeeper_client::Client, path: &str) -> i64 {
    client.check_stat(path).await.unwrap().map(|s| s.ephemeral_owner).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_never_writes_after_it_resumes() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let a1 = Spec::agent("agent-1", &hosts).start();
    wait_leader(&client, a1.pid()).await;
    // The new leader's session (4s) outlives the short pause below; the old one's (1s) does not.
    let mut spec2 = Spec::agent("agent-2", &hosts);
    spec2.session = "4s";
    let a2 = spec2.start();
    wait_until("two agents registered", Duration::from_secs(20), || async { workers(&client).await.len() == 2 }).await;
    publish_ok(&hosts, b"v1\n").await;

    // Pause the leader past its 1s session; the standby takes over and publishes.
    a1.signal(Signal::SIGSTOP);
    wait_leader(&client, a2.pid()).await;
    publish_ok(&hosts, b"v2 by the new leader\n").await;

    // Tempt the zombie: pause the new leader too, queue a request, and wake the old leader
    // first. Whatever it still believes, it must not write.
    a2.signal(Signal::SIGSTOP);
    let header = serde_json::json!({
        "app": APP, "author": "test", "message": null,
        "sha256": sha256_hex(b"v3\n"), "size": 3, "origin": "zkcoordctl"
    });
    let mut req = serde_json::to_vec(&header).unwrap();
    req.push(b'\n');
    req.extend_from_slice(b"v3\n");
    let before = versions(&client).await;
    let req_path = create_seq(&client, "/zkcoord/requests/req-", &req).await;
    let resumed_at = a1.log().len();
    a1.signal(Signal::SIGCONT);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(versions(&client).await, before, "the resumed old leader wrote a version");
    assert!(get(&client, &req_path).await.is_some(), "the resumed old leader took the request");
    let after_resume = a1.log()[resumed_at..].to_string();
    assert!(!after_resume.contains("publish request handled"), "old leader acted: {after_resume}");
    assert!(after_resume.contains("session ended"), "the old leader noticed its expiry: {after_resume}");

    // The new leader, once awake, serves it; the old one rejoins as a standby.
    a2.signal(Signal::SIGCONT);
    wait_until("the request was served", Duration::from_secs(20), || async { get(&client, &req_path).await.is_none() }).await;
    assert_eq!(versions(&client).await.len(), before.len() + 1);
    wait_until("both registered again", Duration::from_secs(20), || async { workers(&client).await.len() == 2 }).await;
    assert_eq!(leader_pid(&client).await, Some(a2.pid()));
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_leaders_exactly_two_lead_and_each_publish_becomes_one_version() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let spec = |n: &str| {
        let mut s = Spec::agent(n, &hosts);
        s.agent_extra = "leaders = 2".into();
        s
    };
    let mut agents: Vec<Daemon> = Vec::new();
    for n in ["agent-1", "agent-2", "agent-3"] {
        agents.push(spec(n).start());
        let want = agents.len();
        wait_until("registered", Duration::from_secs(20), || async { workers(&client).await.len() == want }).await;
    }
    let leading = |agents: &[Daemon]| {
        agents.iter().filter(|a| a.log().matches("leadership: leader").count() > a.log().matches("stepping down").count()).count()
    };
    wait_until_sync("two leaders", Duration::from_secs(10), || leading(&agents) == 2);
    assert!(!agents[2].log().contains("leadership: leader"), "the third stands by");

    // Both leaders see every request; each publish still becomes exactly one version.
    for i in 0..10 {
        publish_ok(&hosts, format!("v{i}\n").as_bytes()).await;
    }
    assert_eq!(versions(&client).await.len(), 10);

    // Kill a leader: the standby takes its place, and there are two leaders again.
    agents[0].kill9();
    wait_until_sync("the standby leads", Duration::from_secs(10), || agents[2].log().contains("leadership: leader"));
    assert_eq!(leading(&agents[1..]), 2);
    publish_ok(&hosts, b"after\n").await;
    assert_eq!(versions(&client).await.len(), 11);
}
