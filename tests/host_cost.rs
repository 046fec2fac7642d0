//! Issue 15, the app-host side: what one publish costs ZooKeeper per app host, counted on the
//! server the hosts talk to (`mntr` `zk_packets_received`), with the idle rate (pings) measured
//! in the same run and subtracted. The target: at most 2 requests per host per publish, the new
//! version's read and the status write; prunes (the agent keeps 5 versions here, so most
//! publishes also delete one) cost the hosts nothing.
//!
//! Three voters: the agent, the publisher and this test's own reads use server 0; the app
//! hosts use server 2 only, so what server 2 receives is the hosts' doing.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::Duration;

/// Publishes counted.
const PUBLISHES: u64 = 20;
/// App hosts on the counted server.
const HOSTS: usize = 5;

fn payload(n: u64) -> Vec<u8> {
    format!("# host cost\nversion {n}\n").into_bytes()
}

/// Waits until every host has `payload(n)` on disk and reports `version` ok.
async fn all_applied(client: &zookeeper_client::Client, apps: &[Daemon], n: u64, version: &str) {
    for d in apps {
        wait_on_disk(d, &payload(n), Duration::from_secs(30)).await;
        wait_status(client, d.name(), "ok", Some(version)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publish_costs_an_app_host_at_most_two_requests() {
    let zk = ZkEnsemble::three();
    let writer_hosts = zk.connect_string_of(&[0]);
    let host_server = 2;
    let app_hosts = zk.connect_string_of(&[host_server]);
    let mut agent = Spec::agent("agent-1", &writer_hosts);
    agent.session = "4s";
    agent.agent_extra = "keep_versions = 5".into();
    let _agent = agent.start();
    let apps: Vec<Daemon> = (1..=HOSTS)
        .map(|i| {
            let mut s = Spec::app(&format!("web-{i}"), &app_hosts);
            s.session = "4s";
            s.start()
        })
        .collect();
    let client = zk_client(&writer_hosts).await;

    // Everyone on the first version, then past the prune limit so every publish prunes.
    let mut n = 0;
    let mut newest = String::new();
    for _ in 0..6 {
        n += 1;
        newest = publish_ok(&writer_hosts, &payload(n)).await;
    }
    all_applied(&client, &apps, n, &newest).await;
    for d in &apps {
        assert_eq!(zk.server_of_pid(d.pid()), Some(host_server), "{} is on the counted server", d.name());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Idle: what the hosts send with nothing happening (pings).
    let port = [zk.server_port(host_server)];
    let idle = (server_counts(&port), {
        tokio::time::sleep(Duration::from_secs(6)).await;
        server_counts(&port)
    });

    // Publishes, each applied everywhere before the next.
    let before = server_counts(&port);
    for _ in 0..PUBLISHES {
        n += 1;
        newest = publish_ok(&writer_hosts, &payload(n)).await;
        all_applied(&client, &apps, n, &newest).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = server_counts(&port);
    let (requests, _) = counted_since(before, after, idle);
    let per_host = requests / (PUBLISHES as f64 * HOSTS as f64);
    let idle_rate = (idle.1.packets - idle.0.packets) as f64 / idle.1.at.duration_since(idle.0.at).as_secs_f64();
    eprintln!(
        "figures: {HOSTS} hosts, {PUBLISHES} publishes: {requests:.0} requests on the hosts' server (idle {idle_rate:.2}/s subtracted), {per_host:.2} per host per publish"
    );
    let kept = versions(&client).await;
    assert!(kept.len() <= 6, "the agent pruned while we counted: {kept:?}");
    assert!(requests > 0.0, "the hosts' server counted their reads and status writes");
    assert!(per_host <= 2.0, "at most 2 requests per host per publish, counted {per_host:.2}");
    for d in &apps {
        assert_eq!(on_disk(d), Some(payload(n)), "{} holds the last version", d.name());
    }
}

/// What the hosts rely on when an operator deletes an app's node and creates it again (a new
/// version stream): a persistent recursive watch stays set across the deletion of the node it
/// is on, tells the deletion and the re-creation of the node itself, then the versions created
/// under the new node, in order. The follower re-lists on the node's own events (the new
/// stream's czxid), and takes the versions after it from their events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_recursive_watch_outlives_the_deletion_and_re_creation_of_its_node() {
    use zookeeper_client::{AddWatchMode, EventType};
    let zk = ZkEnsemble::single();
    let client = zk_client(&zk.connect_string()).await;
    let app = "/applications/recreated";
    create_all(&client, app).await;
    let first = create_seq(&client, &format!("{app}/conf-"), b"one").await;
    let mut w = client.watch(app, AddWatchMode::PersistentRecursive).await.unwrap();
    delete_all(&client, app).await;
    create_all(&client, app).await;
    let second = create_seq(&client, &format!("{app}/conf-"), b"two").await;
    let mut events = Vec::new();
    while events.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.changed()).await.expect("an event within 10 s");
        events.push((ev.event_type, ev.path));
    }
    let name = |p: &str| p.rsplit('/').next().unwrap().to_string();
    assert_eq!(
        events,
        vec![
            (EventType::NodeDeleted, format!("{app}/{}", name(&first))),
            (EventType::NodeDeleted, app.to_string()),
            (EventType::NodeCreated, app.to_string()),
            (EventType::NodeCreated, format!("{app}/{}", name(&second))),
        ],
        "the old version's and the node's deletion, the node's creation, the new stream's version"
    );
}
