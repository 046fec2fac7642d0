//! One id per publish: whatever door a publish comes in by (zkcoordctl, the legacy trigger, an
//! older publisher's request without an id), the same id is in the version's metadata, in
//! `history` and `status`, in every host's hook environment (`ZKCOORD_PUBLISH_ID`) and on the
//! lines every daemon logs about it, so one query per host reconstructs a rollout's timeline.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::Duration;

/// A host whose reload appends `$ZKCOORD_PUBLISH_ID` to `{dir}/ids.log` and that logs JSON lines.
fn start_host(spec: &Spec) -> Daemon {
    let d = Daemon::prepare(&spec.node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let mut d = d;
    d.set_config(&spec.toml().replacen("[zookeeper]", "log_format = \"json\"\n\n[zookeeper]", 1));
    d.spawn();
    d
}

/// The ids each reload saw, in order.
fn hook_ids(d: &Daemon) -> Vec<String> {
    std::fs::read_to_string(d.dir().join("ids.log")).unwrap_or_default().lines().map(String::from).collect()
}

/// The daemon's JSON log lines that name `id`.
fn lines_naming(d: &Daemon, id: &str) -> Vec<serde_json::Value> {
    d.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|o| o["publish_id"] == id)
        .collect()
}

fn is_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn wait_hook_ids(hosts: &[&Daemon], n: usize) {
    wait_until("every host reloaded", Duration::from_secs(20), || async { hosts.iter().all(|d| hook_ids(d).len() >= n) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_follows_each_publish_to_every_hosts_journal_hooks_and_status() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let port = free_port();
    let mut agent = Spec::agent("agent-1", &hosts);
    agent.agent_extra = format!("trigger_listen = \"127.0.0.1:{port}\"\ntrigger_app = \"{APP}\"");
    let agent = start_host(&agent);
    let web: Vec<Daemon> = ["web-1", "web-2"]
        .iter()
        .map(|n| {
            let mut s = Spec::app(n, &hosts);
            s.reload = Some(r#"["sh", "-c", "echo \"$ZKCOORD_PUBLISH_ID\" >> {dir}/ids.log"]"#.into());
            start_host(&s)
        })
        .collect();
    let web: Vec<&Daemon> = web.iter().collect();

    // 1. zkcoordctl: the id it prints is the one every host's reload and status carry.
    let out = ctl_stdin_async(&["--zk", &hosts, "publish", APP, "-", "--json", "--wait=20s"], b"worker_processes 1;\n").await;
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)));
    let ctl_id = v["publish_id"].as_str().unwrap_or_default().to_string();
    assert!(is_id(&ctl_id), "{v}");
    assert_eq!(v["wait"]["result"], "applied", "{v}");
    wait_hook_ids(&web, 1).await;
    for d in &web {
        assert_eq!(hook_ids(d), std::slice::from_ref(&ctl_id), "the reload's ZKCOORD_PUBLISH_ID");
    }
    let status = ctl_async(&["--zk", &hosts, "status", APP, "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let reported: Vec<&str> = status["apps"][0]["hosts"].as_array().unwrap().iter().map(|h| h["publish_id"].as_str().unwrap_or("-")).collect();
    assert_eq!(reported, [ctl_id.as_str(), ctl_id.as_str()], "{status}");
    // Text mode says the id beside the one line scripts read.
    let out = ctl_stdin_async(&["--zk", &hosts, "publish", APP, "-"], b"worker_processes 2;\n").await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).trim().starts_with("published conf-"), "{}", output_text(&out));
    let text_id = String::from_utf8_lossy(&out.stderr).split_whitespace().nth(2).unwrap_or_default().to_string();
    assert!(is_id(&text_id) && text_id != ctl_id, "{}", output_text(&out));
    wait_hook_ids(&web, 2).await;

    // 2. The legacy trigger: the leader's in-process publish gets its own id.
    assert!(trigger(port, b"add|worker_processes 3;\n").starts_with("published conf-"));
    wait_hook_ids(&web, 3).await;
    let trigger_id = hook_ids(web[0])[2].clone();
    assert!(is_id(&trigger_id) && trigger_id != text_id, "{:?}", hook_ids(web[0]));
    assert_eq!(hook_ids(web[1])[2], trigger_id);

    // 3. An older publisher's request, without an id: the leader gives it one, and logs it.
    let data = b"worker_processes 4;\n";
    let header = serde_json::json!({
        "app": APP, "author": "old@host", "message": null,
        "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data)), "size": data.len(), "origin": "zkcoordctl"
    });
    let mut req = serde_json::to_vec(&header).unwrap();
    req.push(b'\n');
    req.extend_from_slice(data);
    create_seq(&client, "/zkcoord/requests/req-", &req).await;
    wait_hook_ids(&web, 4).await;
    let old_id = hook_ids(web[0])[3].clone();
    assert!(is_id(&old_id), "{:?}", hook_ids(web[0]));
    assert_eq!(hook_ids(web[1])[3], old_id);
    wait_until("the leader logged the old request's id", Duration::from_secs(10), || async { !lines_naming(&agent, &old_id).is_empty() }).await;

    // 4. A plain client's version has no metadata, so no id: the hook gets it empty.
    create_seq(&client, &format!("/applications/{APP}/conf-"), b"worker_processes 5;\n").await;
    wait_hook_ids(&web, 5).await;
    for d in &web {
        assert_eq!(hook_ids(d)[4], "", "a version without metadata has no publish id");
    }

    // history --json carries each version's id, in order; the plain one has none.
    let history = ctl_async(&["--zk", &hosts, "history", APP, "--json"]).await;
    assert!(history.status.success(), "{}", output_text(&history));
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let ids: Vec<Option<&str>> = history.as_array().unwrap().iter().map(|e| e["publish_id"].as_str()).collect();
    assert_eq!(ids, [Some(ctl_id.as_str()), Some(text_id.as_str()), Some(trigger_id.as_str()), Some(old_id.as_str()), None], "{history}");
    // The last report is of the plain version: no id.
    let status = ctl_async(&["--zk", &hosts, "status", APP, "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status["apps"][0]["hosts"].as_array().unwrap().iter().all(|h| h.get("publish_id").is_none()), "{status}");

    // One query per host: each publish's lines, "applying" and "applied", carry its id.
    for d in &web {
        for id in [&ctl_id, &text_id, &trigger_id, &old_id] {
            let messages: Vec<String> = lines_naming(d, id).iter().map(|o| o["message"].as_str().unwrap_or("").to_string()).collect();
            assert!(messages.iter().any(|m| m == "applying") && messages.iter().any(|m| m == "applied"), "{id}: {messages:?}");
        }
    }
    for id in [&ctl_id, &text_id, &old_id] {
        let leader: Vec<String> = lines_naming(&agent, id).iter().map(|o| o["message"].as_str().unwrap_or("").to_string()).collect();
        assert!(leader.iter().any(|m| m == "publish request handled"), "leader lines for {id}: {leader:?}");
    }
    assert!(lines_naming(&agent, &trigger_id).iter().any(|o| o["message"] == "in-process publish handled"));
}
