//! A three-node ensemble: losing the server a daemon talks to, and the quorum leader, does not
//! stop publishing or applying.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::{Duration, Instant};

/// Which ensemble member (index) the process `pid` is connected to, from `ss`.
fn connected_server(zk: &ZkEnsemble, pid: u32) -> Option<usize> {
    let out = std::process::Command::new("ss").args(["-Htnp", "state", "established"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let me = format!("pid={pid},");
    for line in text.lines().filter(|l| l.contains(&me)) {
        let peer = line.split_whitespace().nth(3)?;
        let port: u16 = peer.rsplit(':').next()?.parse().ok()?;
        if let Some(i) = (0..zk.len()).find(|&i| zk.server_port(i) == port) {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_applying_go_on_when_the_connected_server_and_the_quorum_leader_die() {
    let mut zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let mut agent = Spec::agent("agent-1", &hosts);
    agent.session = "4s";
    let agent = agent.start();
    let mut app = Spec::app("web-1", &hosts);
    app.session = "4s";
    let web = app.start();
    publish_ok(&hosts, b"v1\n").await;
    wait_on_disk(&web, b"v1\n", Duration::from_secs(30)).await;

    // 1. Kill the server the app host is connected to.
    let server = connected_server(&zk, web.pid()).expect("the app host is connected to some server");
    zk.kill(server);
    let t = Instant::now();
    publish_ok(&hosts, b"v2\n").await;
    wait_on_disk(&web, b"v2\n", Duration::from_secs(30)).await;
    eprintln!("figures: kill of the app's server ({server}) to v2 on disk: {:?}", t.elapsed());
    zk.start(server);
    zk.wait_all_serving();

    // 2. Kill the quorum leader.
    let leader = zk.leader_index().expect("a quorum leader");
    zk.kill(leader);
    let t = Instant::now();
    publish_ok(&hosts, b"v3\n").await;
    wait_on_disk(&web, b"v3\n", Duration::from_secs(30)).await;
    eprintln!("figures: kill of the quorum leader ({leader}) to v3 on disk: {:?}", t.elapsed());

    // Both daemons kept their sessions (no expiry with a 4s session) and their registrations.
    let client = zk_client(&zk.connect_string_of(&(0..3).filter(|&i| i != leader).collect::<Vec<_>>())).await;
    assert_eq!(workers(&client).await.len(), 1);
    wait_status(&client, "web-1", "ok", None).await;
    assert!(!agent.log().contains("session ended"), "the agent's session survived");
    assert!(!web.log().contains("session ended"), "the app's session survived");
}
