//! Never two leaders, never a missed version: the fault scenarios of issue 3, each against real
//! ZooKeeper servers and real daemons, with faults made by a TCP proxy, signals and kills.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::{Duration, Instant};

fn leads(d: &Daemon) -> bool {
    let log = d.log();
    let life = log.rsplit("=== harness: starting zkcoordd").next().unwrap_or("");
    life.matches("leadership: leader").count() > life.matches("leadership: stepping down").count()
}

fn mono_of(d: &Daemon, needle: &str) -> Option<u64> {
    let log = d.log();
    let line = log.lines().filter(|l| l.contains(needle)).last()?;
    let at = line.find("mono_us=")? + 8;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Scenarios 1 and 3: a partition without closed sockets. The cut-off leader steps down before
/// its session can expire; the standby leads only after; on healing, the old agent's node from
/// its expired session is never taken for its own, and it rejoins as a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_before_the_standby_leads_and_rejoins_as_standby() {
    let zk = ZkEnsemble::three();
    let proxies: Vec<Proxy> = (0..3).map(|i| Proxy::to_port(zk.server_port(i))).collect();
    let via: Vec<String> = proxies.iter().map(|p| p.address()).collect();
    let client = zk_client(&zk.connect_string()).await;
    let mut s1 = Spec::agent("agent-1", &via.join(","));
    s1.session = "2s";
    let a1 = s1.start();
    wait_until_sync("agent-1 leads", Duration::from_secs(20), || leads(&a1));
    let mut s2 = Spec::agent("agent-2", &zk.connect_string());
    s2.session = "2s";
    let a2 = s2.start();
    wait_until("two agents registered", Duration::from_secs(20), || async { workers(&client).await.len() == 2 }).await;

    let cut = monotonic_us();
    for p in &proxies {
        p.set_forwarding(false);
    }
    wait_until_sync("agent-2 leads", Duration::from_secs(20), || leads(&a2));
    let down = mono_of(&a1, "leadership: stepping down").expect("the cut-off leader stepped down");
    let up = mono_of(&a2, "leadership: leader").unwrap();
    eprintln!(
        "figures: partition -> old leader steps down after {} ms; standby leads after {} ms (session 2s)",
        (down - cut) / 1000,
        (up - cut) / 1000
    );
    assert!(down < up, "the old leader stepped down at {down}, after the standby led at {up}");
    assert!(down - cut < 2_000_000, "stepped down within the session timeout");
    // The standby serves while the old leader is cut off.
    publish_ok(&zk.connect_string(), b"during the partition\n").await;

    let healed = Instant::now();
    for p in &proxies {
        p.set_forwarding(true);
    }
    wait_until("the old leader re-registered on a new session", Duration::from_secs(20), || async {
        workers(&client).await.len() == 2 && a1.log().contains("session ended")
    })
    .await;
    eprintln!("figures: heal -> old leader re-registered after {:?}", healed.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!leads(&a1) && leads(&a2), "exactly one agent leads after healing");
    assert_one_leader_at_a_time(&[
        ("agent-1", leadership_intervals(&a1.log(), &[])),
        ("agent-2", leadership_intervals(&a2.log(), &[])),
    ]);
    publish_ok(&zk.connect_string(), b"after healing\n").await;
}

/// Scenario 4: the connection drops right after the create of our EPHEMERAL_SEQUENTIAL node
/// passed. Afterwards exactly one node is ours: no orphan, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_lost_with_the_connection_leaves_exactly_one_node() {
    let zk = ZkEnsemble::three();
    let proxy = Proxy::to_port(zk.server_port(0));
    let client = zk_client(&zk.connect_string()).await;
    let mut spec = Spec::agent("agent-1", &proxy.address());
    spec.session = "4s";
    let a1 = spec.start();
    wait_until_sync("agent-1 leads", Duration::from_secs(20), || leads(&a1));
    let before = workers(&client).await;
    let registered_before = a1.log().matches("ephemeral node registered").count();

    // Delete the node; the daemon's re-create (a >100-byte request; pings are tiny) passes and
    // the connection is cut before the reply comes back.
    proxy.drop_after_upload_over(100);
    assert!(delete(&client, &format!("/roles/workers/{}", before[0])).await);
    wait_until_sync("the trap fired", Duration::from_secs(10), || proxy.trapped() == 1);
    wait_until_sync("re-registered", Duration::from_secs(20), || {
        a1.log().matches("ephemeral node registered").count() > registered_before
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = workers(&client).await;
    assert_eq!(after.len(), 1, "exactly one election node, no orphan: {after:?}\n{}", a1.log_tail(30));
    assert_ne!(after, before);
    wait_until_sync("it leads through that node", Duration::from_secs(10), || leads(&a1));
}

/// Scenario 5: kill -9 and an immediate restart, well inside the old session's timeout. The new
/// process's registration is owned by its new session, survives the old session's expiry, and
/// carries current data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_restart_after_kill_9_ends_up_registered_by_the_new_session() {
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut spec = Spec::both("web-1", &hosts);
    spec.session = "3s";
    let mut d = spec.start();
    publish_ok(&hosts, b"v1\n").await;
    wait_on_disk(&d, b"v1\n", Duration::from_secs(20)).await;
    let status_path = format!("/zkcoord/status/{APP}/web-1");
    let old_pid = d.pid();

    d.restart(); // SIGKILL, then start at once
    let new_pid = d.pid();
    assert_ne!(old_pid, new_pid);
    // Past the old session's expiry (3s), both registrations are the new process's.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let s = status(&client, "web-1").await.expect("status node survives the old session's expiry");
    assert_eq!(s["pid"], new_pid, "{s}");
    assert_eq!(s["version"], "conf-0000000000");
    let w = workers(&client).await;
    assert_eq!(w.len(), 1, "{w:?}");
    let data: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/roles/workers/{}", w[0])).await.unwrap()).unwrap();
    assert_eq!(data["pid"], new_pid);
    let owner = client.check_stat(&status_path).await.unwrap().unwrap().ephemeral_owner;
    let worker_owner = client.check_stat(&format!("/roles/workers/{}", w[0])).await.unwrap().unwrap().ephemeral_owner;
    assert_eq!(owner, worker_owner, "both nodes belong to the new process's one session");
    wait_until_sync("it leads", Duration::from_secs(10), || leads(&d));
}

/// Scenario 6: quorum lost for longer than the session timeout, then restored. Every daemon
/// re-registers, rejoins the election and re-syncs by itself; a removed election parent is
/// re-created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_past_the_session_timeout_heals_without_an_operator() {
    let mut zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let mut a = Spec::agent("agent-1", &hosts);
    a.session = "1s";
    let mut agent = a.start();
    let mut w = Spec::app("web-1", &hosts);
    w.session = "1s";
    let web = w.start();
    publish_ok(&hosts, b"v1\n").await;
    wait_on_disk(&web, b"v1\n", Duration::from_secs(20)).await;

    zk.kill(0);
    zk.kill(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    zk.start(0);
    zk.start(1);
    zk.wait_all_serving();
    let healed = Instant::now();
    let client = zk_client(&hosts).await;
    let v2 = publish_ok(&hosts, b"v2 after quorum came back\n").await;
    wait_on_disk(&web, b"v2 after quorum came back\n", Duration::from_secs(30)).await;
    wait_status(&client, "web-1", "ok", Some(&v2)).await;
    wait_until("stale registrations gone, one per daemon", Duration::from_secs(20), || async {
        workers(&client).await.len() == 1
    })
    .await;
    eprintln!("figures: quorum back -> publish applied and registrations clean after {:?}", healed.elapsed());
    assert!(agent.log().contains("session ended") && web.log().contains("session ended"));

    // An operator removes the election parent while no agent runs: it comes back.
    assert!(agent.term().success());
    delete_all(&client, "/roles/workers").await;
    agent.spawn();
    wait_until_sync("the agent leads again", Duration::from_secs(20), || leads(&agent));
    assert_eq!(workers(&client).await.len(), 1);
}

/// Scenario 7: events missed while an app host is partitioned. Two versions are published and
/// the newer one deleted meanwhile; after healing the host applies the newest that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_published_and_deleted_during_a_partition_are_caught_up_by_relisting() {
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let proxy = Proxy::to_port(zk.server_port(0));
    let _agent = Spec::agent("agent-1", &hosts).start();
    let mut w = Spec::app("web-1", &proxy.address());
    w.session = "4s";
    let web = w.start();
    let client = zk_client(&hosts).await;
    publish_ok(&hosts, b"v1\n").await;
    wait_on_disk(&web, b"v1\n", Duration::from_secs(20)).await;

    proxy.set_forwarding(false);
    let v2 = publish_ok(&hosts, b"v2\n").await;
    let v3 = publish_ok(&hosts, b"v3, deleted before the host could see it\n").await;
    assert!(delete(&client, &format!("/applications/{APP}/{v3}")).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(on_disk(&web).unwrap(), b"v1\n");
    proxy.set_forwarding(true);
    let t = Instant::now();
    wait_on_disk(&web, b"v2\n", Duration::from_secs(20)).await;
    eprintln!("figures: heal -> missed version applied after {:?}", t.elapsed());
    wait_status(&client, "web-1", "ok", Some(&v2)).await;
}

/// Scenario 8 (as far as one machine allows): an app host pinned to one follower that was
/// paused while versions were published still ends at the newest, and its applied version
/// never goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_on_a_lagging_follower_still_ends_at_the_newest_and_never_goes_back() {
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let leader = zk.leader_index().unwrap();
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let _agent = Spec::agent("agent-1", &hosts).start();
    let mut w = Spec::app("web-1", &zk.connect_string_of(&[follower]));
    w.session = "4s";
    let web = w.start();
    publish_ok(&hosts, b"v0\n").await;
    wait_on_disk(&web, b"v0\n", Duration::from_secs(20)).await;

    let state = web.dir().join(format!("state/{APP}.json"));
    let seq_of_state = || -> u64 {
        std::fs::read(&state).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).and_then(|v| v["seq"].as_u64()).unwrap_or(0)
    };
    zk.pause(follower);
    let mut last = String::new();
    for i in 1..=5 {
        last = publish_ok(&hosts, format!("v{i}\n").as_bytes()).await;
    }
    zk.resume(follower);
    let mut seen = 0;
    let start = Instant::now();
    while on_disk(&web).as_deref() != Some(&b"v5\n"[..]) {
        let s = seq_of_state();
        assert!(s >= seen, "applied version went backwards: {seen} -> {s}");
        seen = s;
        assert!(start.elapsed() < Duration::from_secs(30), "never reached v5");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = zk_client(&hosts).await;
    wait_status(&client, "web-1", "ok", Some(&last)).await;
}

/// Scenario 9: watching a parent that does not exist yet, then create, delete, re-create it.
/// Scenario 10: gaps from deleted versions; newest is the largest suffix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_follows_its_parent_through_creation_deletion_and_re_creation_and_gaps() {
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let mut w = Spec::app("web-1", &hosts);
    w.path = Some("/fresh/app".into());
    let web = w.start();
    let client = zk_client(&hosts).await;
    wait_status(&client, "web-1", "pending", None).await;

    create_all(&client, "/fresh/app").await;
    create_seq(&client, "/fresh/app/conf-", b"first stream\n").await;
    wait_on_disk(&web, b"first stream\n", Duration::from_secs(20)).await;
    for i in 0..4 {
        create_seq(&client, "/fresh/app/conf-", format!("s1 v{i}\n").as_bytes()).await;
    }
    wait_on_disk(&web, b"s1 v3\n", Duration::from_secs(20)).await;

    // Gaps: delete two in the middle and publish again.
    assert!(delete(&client, "/fresh/app/conf-0000000002").await);
    assert!(delete(&client, "/fresh/app/conf-0000000003").await);
    create_seq(&client, "/fresh/app/conf-", b"after the gap\n").await;
    wait_on_disk(&web, b"after the gap\n", Duration::from_secs(20)).await;

    // Delete the whole parent; re-create it: sequence numbers start again at 0.
    delete_all(&client, "/fresh/app").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    create_all(&client, "/fresh/app").await;
    let p = create_seq(&client, "/fresh/app/conf-", b"second stream\n").await;
    assert!(p.ends_with("conf-0000000000"));
    wait_on_disk(&web, b"second stream\n", Duration::from_secs(20)).await;
    assert!(web.log().contains("re-created"), "{}", web.log_tail(20));
}

/// Scenario 11: with 30 agents, killing the leader makes only its successor re-list the
/// election children. With leaders = 2, killing two leaders in a row leaves exactly two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_of_30_wakes_only_its_successor() {
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut agents = Vec::new();
    for i in 0..30 {
        agents.push(Spec::agent(&format!("agent-{i:02}"), &hosts).start());
    }
    wait_until("30 registered", Duration::from_secs(60), || async { workers(&client).await.len() == 30 }).await;
    // Registration order is the election order; map the first two nodes to their processes.
    let pid_of = |name: String| {
        let client = &client;
        async move {
            let data = get(client, &format!("/roles/workers/{name}")).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&data).unwrap()["pid"].as_u64().unwrap() as u32
        }
    };
    let order = workers(&client).await;
    let (leader_pid, successor_pid) = (pid_of(order[0].clone()).await, pid_of(order[1].clone()).await);
    let leader = agents.iter().position(|a| a.pid() == leader_pid).unwrap();
    let successor = agents.iter().position(|a| a.pid() == successor_pid).unwrap();
    wait_until_sync("the first node's agent leads", Duration::from_secs(20), || leads(&agents[leader]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lists = |d: &Daemon| d.log().matches("election: listed children").count();
    let before: Vec<usize> = agents.iter().map(lists).collect();

    agents[leader].kill9();
    let t = Instant::now();
    wait_until_sync("the successor leads", Duration::from_secs(20), || leads(&agents[successor]));
    eprintln!("figures: kill -9 of the leader of 30 (session 1s) -> successor leads after {:?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let relisted: Vec<&str> = agents
        .iter()
        .zip(&before)
        .enumerate()
        .filter(|(i, (d, b))| *i != leader && lists(d) > **b)
        .map(|(_, (d, _))| d.name())
        .collect();
    eprintln!("figures: agents that re-listed the election after the kill: {relisted:?}");
    assert_eq!(relisted, vec![agents[successor].name()], "only the successor re-lists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leaders_2_killing_two_leaders_in_a_row_leaves_two_leaders() {
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut agents = Vec::new();
    for i in 0..4 {
        let mut s = Spec::agent(&format!("agent-{i}"), &hosts);
        s.agent_extra = "leaders = 2".into();
        agents.push(s.start());
        let want = agents.len();
        wait_until("registered", Duration::from_secs(20), || async { workers(&client).await.len() == want }).await;
    }
    let count = |agents: &[Daemon]| agents.iter().filter(|a| leads(a)).count();
    wait_until_sync("two leaders", Duration::from_secs(10), || count(&agents) == 2);
    agents[0].kill9();
    wait_until_sync("agent-2 leads", Duration::from_secs(10), || leads(&agents[2]));
    assert_eq!(count(&agents[1..]), 2);
    agents[1].kill9();
    wait_until_sync("agent-3 leads", Duration::from_secs(10), || leads(&agents[3]));
    assert_eq!(count(&agents[2..]), 2);
    publish_ok(&hosts, b"two leaders, one version\n").await;
    assert_eq!(versions(&client).await.len(), 1);
}

/// Scenario 12: 20 leader kills in a loop, alternating kill -9 and SIGTERM, with a publish after
/// each. Never two leaders; every acknowledged publish exists as a version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_leader_kills_never_make_two_leaders_or_lose_a_publish() {
    let zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut agents: Vec<Daemon> = Vec::new();
    for i in 0..3 {
        let mut s = Spec::agent(&format!("agent-{i}"), &hosts);
        s.agent_extra = "keep_versions = 1000".into();
        agents.push(s.start());
    }
    let mut deaths: Vec<Vec<u64>> = vec![Vec::new(); 3];
    let mut acknowledged = Vec::new();
    let mut failovers = Vec::new();
    for round in 0..20 {
        wait_until_sync("some agent leads", Duration::from_secs(20), || agents.iter().any(leads));
        let i = agents.iter().position(leads).unwrap();
        let t = Instant::now();
        if round % 2 == 0 {
            agents[i].kill9();
        } else {
            assert!(agents[i].term().success());
        }
        deaths[i].push(monotonic_us());
        let v = publish_ok(&hosts, format!("round {round}\n").as_bytes()).await;
        failovers.push((round % 2 == 0, t.elapsed()));
        acknowledged.push(v);
        agents[i].spawn();
    }
    let kill9: Vec<u128> = failovers.iter().filter(|f| f.0).map(|f| f.1.as_millis()).collect();
    let term: Vec<u128> = failovers.iter().filter(|f| !f.0).map(|f| f.1.as_millis()).collect();
    eprintln!("figures: kill to next acknowledged publish, ms (session 1s): kill -9 {kill9:?}; SIGTERM {term:?}");
    let present = versions(&client).await;
    for v in &acknowledged {
        assert!(present.contains(v), "acknowledged {v} is missing");
    }
    assert_eq!(present.len(), 20);
    let intervals: Vec<(String, Vec<(u64, u64)>)> =
        agents.iter().zip(&deaths).map(|(a, d)| (a.name().to_string(), leadership_intervals(&a.log(), d))).collect();
    let named: Vec<(&str, Vec<(u64, u64)>)> = intervals.iter().map(|(n, iv)| (n.as_str(), iv.clone())).collect();
    assert_one_leader_at_a_time(&named);
}
