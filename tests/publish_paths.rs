//! Publishing, three ways, onto two app hosts, against a real ZooKeeper.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::Duration;


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_published_three_ways_lands_on_both_app_hosts_byte_for_byte() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let tport = free_port();
    let mut agent = Spec::agent("agent-1", &hosts);
    agent.agent_extra = format!("trigger_listen = \"127.0.0.1:{tport}\"\ntrigger_app = \"{APP}\"");
    let _agent = agent.start();
    let web1 = Spec::app("web-1", &hosts).start();
    let web2 = Spec::app("web-2", &hosts).start();
    let client = zk_client(&hosts).await;
    wait_until("an agent registered", Duration::from_secs(20), || async { !workers(&client).await.is_empty() }).await;

    // 1. zkcoordctl, with bytes that a text-mangling path would break.
    let v1: &[u8] = b"worker_processes 4;\r\n\tbinary:\x00\xff\nno trailing newline";
    let name1 = publish_ok(&hosts, v1).await;
    let t1 = wait_on_disk(&web1, v1, Duration::from_secs(20)).await;
    wait_on_disk(&web2, v1, Duration::from_secs(20)).await;
    // The version node holds the raw bytes, nothing wrapped around them.
    assert_eq!(get(&client, &format!("/applications/{APP}/{name1}")).await.unwrap(), v1);

    // 2. The legacy trigger: a plain TCP client sending add|<data>.
    let v2 = b"events { worker_connections 1024; }\n";
    let mut payload = b"add|".to_vec();
    payload.extend_from_slice(v2);
    let reply = trigger(tport, &payload);
    assert!(reply.starts_with("published conf-"), "trigger reply: {reply:?}");
    let t2 = wait_on_disk(&web1, v2, Duration::from_secs(20)).await;
    wait_on_disk(&web2, v2, Duration::from_secs(20)).await;
    assert!(trigger(tport, b"del|x").starts_with("rejected: expected `add|<data>`"));

    // 3. A plain ZooKeeper client creating a conf- node, as existing scripts do.
    let v3 = b"http { server { listen 80; } }\n";
    let path = create_seq(&client, &format!("/applications/{APP}/conf-"), v3).await;
    let t3 = wait_on_disk(&web1, v3, Duration::from_secs(20)).await;
    wait_on_disk(&web2, v3, Duration::from_secs(20)).await;
    let name3 = path.rsplit('/').next().unwrap().to_string();
    eprintln!("figures: publish-to-disk (polled every 10 ms): ctl {t1:?}, trigger {t2:?}, plain client {t3:?}");

    // Every host reports what it runs.
    for node in ["web-1", "web-2"] {
        let s = wait_status(&client, node, "ok", Some(&name3)).await;
        assert_eq!(s["host"], node);
        assert_eq!(s["sha256"].as_str().unwrap().len(), 64);
    }
    // The operator's reads agree.
    let got = ctl(&["--zk", &hosts, "get", APP]);
    assert!(got.status.success(), "{}", output_text(&got));
    assert_eq!(got.stdout, v3);
    let got1 = ctl(&["--zk", &hosts, "get", APP, "--version", name1.trim_start_matches("conf-")]);
    assert_eq!(got1.stdout, v1);
    let hist = ctl(&["--zk", &hosts, "history", APP]);
    let text = String::from_utf8_lossy(&hist.stdout);
    assert!(hist.status.success(), "{}", output_text(&hist));
    assert_eq!(text.lines().filter(|l| l.starts_with("conf-")).count(), 3, "{text}");
    assert!(text.contains("trigger@127.0.0.1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_content_makes_no_new_version_and_old_versions_are_pruned() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut agent = Spec::agent("agent-1", &hosts);
    agent.agent_extra = "keep_versions = 3".into();
    let _agent = agent.start();
    let client = zk_client(&hosts).await;

    let first = publish_ok(&hosts, b"same\n").await;
    let again = publish(&hosts, b"same\n").await;
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), format!("unchanged, same as {first}"));
    assert_eq!(versions(&client).await.len(), 1);

    let mut last = String::new();
    for i in 0..5 {
        last = publish_ok(&hosts, format!("v{i}\n").as_bytes()).await;
    }
    wait_until("pruned to 3 versions", Duration::from_secs(10), || async { versions(&client).await.len() == 3 }).await;
    let kept = versions(&client).await;
    assert_eq!(kept.last().unwrap(), &last);
    // Metadata goes with the versions it describes.
    let meta = children_sorted(&client, &format!("/zkcoord/meta/{APP}")).await;
    assert_eq!(meta, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_follows_several_apps_and_zkcoordctl_reads_its_config_file() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let d = Daemon::prepare("multi");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let toml = format!(
        r#"role = "both"
node_id = "multi"
state_dir = "{{dir}}/state"
[zookeeper]
hosts = "{hosts}"
session_timeout = "1s"
[[app]]
name = "nginxconf"
dest = "{{dir}}/www/nginx.conf"
reload = ["sh", "-c", "echo nginx >> {{dir}}/reloads.log"]
[[app]]
name = "upstreams"
path = "/custom/upstreams"
dest = "{{dir}}/www/upstreams.conf"
mode = "0600"
reload = "echo upstreams >> {{dir}}/reloads.log"
"#
    );
    let mut d = d;
    d.set_config(&toml);
    d.spawn();
    let config = d.config_path().display().to_string();
    let publish_with_config = |app: &str, bytes: &[u8]| ctl_stdin(&["--config", &config, "publish", app, "-"], bytes);

    let a = publish_with_config("nginxconf", b"main config\n");
    assert!(a.status.success(), "{}", output_text(&a));
    let b = publish_with_config("upstreams", b"upstream app { server 10.0.0.5:8001; }\n");
    assert!(b.status.success(), "{}", output_text(&b));
    wait_until("both apps applied", Duration::from_secs(20), || async {
        std::fs::read(d.dir().join("www/nginx.conf")).ok().as_deref() == Some(&b"main config\n"[..])
            && std::fs::read(d.dir().join("www/upstreams.conf")).ok().as_deref()
                == Some(&b"upstream app { server 10.0.0.5:8001; }\n"[..])
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.dir().join("www/upstreams.conf")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The app's own `path` was honoured by the agent and the follower alike.
    let client = zk_client(&hosts).await;
    assert_eq!(children_sorted(&client, "/custom/upstreams").await.len(), 1);
    let got = ctl(&["--config", &config, "get", "upstreams"]);
    assert_eq!(got.stdout, b"upstream app { server 10.0.0.5:8001; }\n");
    wait_until("each app reloaded once", Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(d.dir().join("reloads.log")).unwrap_or_default();
        log.lines().filter(|l| *l == "nginx").count() == 1 && log.lines().filter(|l| *l == "upstreams").count() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_together_are_decided_in_order_as_if_one_by_one() {
    use zkcoord::model::request::{self, Outcome};
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let layout = zkcoord::model::layout::Layout::new("/zkcoord", "/applications", "/roles/workers");
    // A version made by a plain client (no metadata), then requests queued before any agent
    // runs, so that the leader finds them all pending at once and handles them as one batch.
    create_all(&client, &format!("/applications/{APP}")).await;
    let c0 = create_seq(&client, &format!("/applications/{APP}/conf-"), b"C\n").await;
    let c0 = c0.rsplit('/').next().unwrap().to_string();
    let mut reqs = Vec::new();
    for data in [&b"C\n"[..], b"A\n", b"A\n", b"B\n", b"A\n", b"B\n", b"B\n"] {
        let header = request::header_for(APP, "me@test", Some("batch".into()), "zkcoordctl", data).unwrap();
        reqs.push(zkcoord::zk::request::submit(&client, &layout, &header, data).await.unwrap().0);
    }
    let mut bad = request::header_for(APP, "me@test", None, "zkcoordctl", b"D\n").unwrap();
    bad.sha256 = zkcoord::digest::sha256_hex(b"not D");
    reqs.push(zkcoord::zk::request::submit(&client, &layout, &bad, b"D\n").await.unwrap().0);

    let _agent = Spec::agent("agent-1", &hosts).start();
    let mut outcomes = Vec::new();
    for r in &reqs {
        outcomes.push(zkcoord::zk::request::await_outcome(&client, &layout, r, Duration::from_secs(30)).await.unwrap());
    }
    let names = versions(&client).await;
    assert_eq!(names.len(), 5, "{names:?} {outcomes:?}");
    let published = |i: usize| Outcome::Published { version: names[i].clone() };
    let unchanged = |i: usize| Outcome::Unchanged { version: names[i].clone() };
    assert_eq!(names[0], c0);
    assert_eq!(
        outcomes[..7],
        [unchanged(0), published(1), unchanged(1), published(2), published(3), published(4), unchanged(4)],
        "{outcomes:?}"
    );
    assert!(matches!(&outcomes[7], Outcome::Rejected { reason } if reason.contains("sha256 mismatch")), "{outcomes:?}");
    let mut contents = Vec::new();
    for n in &names {
        contents.push(get(&client, &format!("/applications/{APP}/{n}")).await.unwrap());
    }
    assert_eq!(contents, [&b"C\n"[..], b"A\n", b"B\n", b"A\n", b"B\n"]);
    // Every version has its metadata, the plain client's filled in by the request equal to it.
    assert_eq!(children_sorted(&client, &format!("/zkcoord/meta/{APP}")).await, names);
    let meta: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/zkcoord/meta/{APP}/{c0}")).await.unwrap()).unwrap();
    assert_eq!(meta["author"], "me@test");
    assert!(children_sorted(&client, "/zkcoord/requests").await.is_empty());
}

/// Publishers read their answer and leave it (no second write per publish): the leader removes
/// answers older than `outcome_ttl`, and one a publisher deleted itself (as releases before
/// this one do) does not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_publishers_leave_are_swept_after_outcome_ttl() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut agent = Spec::agent("agent-1", &hosts);
    agent.agent_extra = "outcome_ttl = \"1s\"".into();
    let agent = agent.start();
    let client = zk_client(&hosts).await;
    for i in 0..4 {
        publish_ok(&hosts, format!("v{i}\n").as_bytes()).await;
    }
    let left = children_sorted(&client, "/zkcoord/outcomes").await;
    assert!(!left.is_empty(), "publishers leave their answers for the leader to remove");
    // An older publisher's own delete, racing the sweep.
    client.delete(&format!("/zkcoord/outcomes/{}", left[0]), None).await.unwrap();
    wait_until("answers swept", Duration::from_secs(10), || async { children_sorted(&client, "/zkcoord/outcomes").await.is_empty() }).await;
    // The leader is still leading, and still answers.
    publish_ok(&hosts, b"after the sweep\n").await;
    assert!(!agent.log_tail(200).contains("leader work failed"), "{}", agent.log_tail(40));
}

/// A burst through both doors (triggers on the leader and `zkcoordctl` at once): every version
/// a watcher sees appear has its metadata already, because both go in one multi-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watcher_ever_sees_a_version_without_its_metadata() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let port = free_port();
    let mut agent = Spec::agent("agent-1", &hosts);
    agent.agent_extra = format!("trigger_listen = \"127.0.0.1:{port}\"\ntrigger_app = \"{APP}\"\nkeep_versions = 1000");
    let agent = agent.start();
    agent.wait_for_log("legacy trigger listening", Duration::from_secs(20));
    publish_ok(&hosts, b"first\n").await;
    let watcher = zk_client(&hosts).await;
    let mut events = watcher.watch(&format!("/applications/{APP}"), zookeeper_client::AddWatchMode::PersistentRecursive).await.unwrap();
    let seen = tokio::spawn(async move {
        let (mut checked, mut missing) = (0, Vec::new());
        loop {
            let ev = match tokio::time::timeout(Duration::from_secs(5), events.changed()).await {
                Ok(ev) => ev,
                Err(_) => return (checked, missing),
            };
            if ev.event_type != zookeeper_client::EventType::NodeCreated {
                continue;
            }
            let name = ev.path.rsplit('/').next().unwrap().to_string();
            checked += 1;
            if get(&watcher, &format!("/zkcoord/meta/{APP}/{name}")).await.is_none() {
                missing.push(name);
            }
        }
    });
    let triggers = tokio::task::spawn_blocking(move || (0..15).map(|i| trigger(port, format!("add|burst trigger {i}\n").as_bytes())).collect::<Vec<_>>());
    let ctl = futures::future::join_all((0..15).map(|i| {
        let hosts = hosts.clone();
        async move { publish(&hosts, format!("burst ctl {i}\n").as_bytes()).await }
    }))
    .await;
    for out in ctl {
        assert!(out.status.success(), "{}", output_text(&out));
    }
    for reply in triggers.await.unwrap() {
        assert!(reply.starts_with("published conf-"), "{reply}");
    }
    let (checked, missing) = seen.await.unwrap();
    assert_eq!(checked, 30, "every version of the burst was seen appear");
    assert!(missing.is_empty(), "versions seen without metadata: {missing:?}");
}
