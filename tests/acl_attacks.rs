//! The attacks of issue 13, against a real ZooKeeper with digest authentication and ACLs: a
//! versions parent someone else made open before the first publish, one app host forging
//! another's status, and a hand-written chunk marker. Each says who is refused, what they see,
//! and that nothing changed on any host.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::Duration;
use zookeeper_client as zk;

/// Host identities named after their node ids, so a status node's writer can be told apart.
fn acl_section() -> String {
    fleet::acl_section(&["agent:apw"], &["web-1:w1pw", "web-2:w2pw"], &["ops:opw"])
}

/// A daemon whose config has an auth file and the [acl] section; `before` runs before it starts
/// (to put an old file in place).
fn secured(spec: Spec, user_password: &str, before: impl FnOnce(&Daemon)) -> Daemon {
    let mut d = Daemon::prepare(&spec.node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let auth = secret(d.dir(), "zk-auth", &format!("{user_password}\n"));
    let toml = spec.toml().replace("start_timeout = \"5s\"\n", &format!("start_timeout = \"5s\"\nauth_file = \"{auth}\"\n")) + &acl_section();
    d.set_config(&toml);
    before(&d);
    d.spawn();
    d
}

/// An agent that knows the app (as its trigger app), so it prepares the app's parents.
fn agent_spec(hosts: &str) -> Spec {
    let mut s = Spec::agent("agent-1", hosts);
    s.agent_extra = format!("trigger_app = \"{APP}\"");
    s
}

async fn client_as(hosts: &str, user_password: Option<&str>) -> zk::Client {
    let mut c = zk::Client::connector().with_session_timeout(Duration::from_secs(4));
    if let Some(up) = user_password {
        c = c.with_auth("digest", up.as_bytes());
    }
    c.connect(hosts).await.unwrap()
}

/// A zkcoordctl config with `user_password`'s credentials and the policy.
fn ctl_config(dir: &std::path::Path, hosts: &str, user_password: &str, extra: &str) -> String {
    let auth = secret(dir, &format!("{}-auth", user_password.split(':').next().unwrap()), &format!("{user_password}\n"));
    let cfg = dir.join(format!("{}.toml", user_password.split(':').next().unwrap()));
    std::fs::write(&cfg, format!("role = \"agent\"\n[zookeeper]\nhosts = \"{hosts}\"\nauth_file = \"{auth}\"\n[agent]\n{extra}\n{}", acl_section())).unwrap();
    cfg.to_str().unwrap().to_string()
}

fn open_acl() -> zk::CreateOptions<'static> {
    zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versions_parent_made_open_by_someone_else_is_refused_repaired_and_its_versions_never_installed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let anon = client_as(&hosts, None).await;
    // Before any daemon runs, an attacker makes the app's versions parent, open, with a version.
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    anon.create("/applications", b"", &open).await.unwrap();
    anon.create(&format!("/applications/{APP}"), b"", &open).await.unwrap();
    let (_, seq) = anon.create(&format!("/applications/{APP}/conf-"), b"evil\n", &open_acl()).await.unwrap();
    let evil = format!("conf-{seq}");

    // The host has an old file; with the parent open it refuses, names the node and the ACL,
    // and keeps the old file.
    let web1 = secured(Spec::app("web-1", &hosts), "web-1:w1pw", |d| std::fs::write(dest(d), b"old\n").unwrap());
    let refusal = format!("untrusted: /applications/{APP} allows world:anyone:cdrwa; only agents may create versions there; run zkcoordctl acl init");
    web1.wait_for_log(&refusal, Duration::from_secs(20));
    assert_eq!(on_disk(&web1).unwrap(), b"old\n");

    // The leader repairs the parent as it starts leading, says so, and counts the version made
    // while it was open. (Until an agent made the status parents, the host could not report.)
    let agent = secured(agent_spec(&hosts), "agent:apw", |_| {});
    agent.wait_for_log(&format!("/applications/{APP}: repaired unsafe ACL (allows world:anyone:cdrwa)"), Duration::from_secs(20));
    let client = zk_client(&hosts).await;
    let s = wait_status(&client, "web-1", "rejected", None).await;
    assert_eq!(s["error"].as_str(), Some(refusal.as_str()), "{s}");
    assert_eq!(on_disk(&web1).unwrap(), b"old\n");
    assert!(agent.log().contains("1 existing child node(s) were created while it was open"), "{}", agent.log_tail(20));

    // Now anonymous writes are refused, there and for a new app under the (repaired) root.
    assert_eq!(anon.create(&format!("/applications/{APP}/conf-"), b"evil2\n", &open_acl()).await.unwrap_err(), zk::Error::NoAuth);
    // What makepath does first: create the app's parent under the root.
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    assert_eq!(anon.create("/applications/fresh", b"", &open).await.unwrap_err(), zk::Error::NoAuth, "the root is the agents' now");
    assert!(anon.check_stat("/applications/fresh").await.unwrap().is_none());

    // A real publish is installed; the attacker's version never was.
    let dir = tempfile::tempdir().unwrap();
    let ops = ctl_config(dir.path(), &hosts, "ops:opw", "");
    let out = ctl_stdin(&["--config", &ops, "publish", APP, "-"], b"real v1\n");
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(&web1, b"real v1\n", Duration::from_secs(20)).await;
    assert!(!web1.log().lines().any(|l| l.contains(&evil) && l.contains("applied")), "{}", web1.log_tail(30));
    assert!(!web1.log().contains("evil"));

    // `acl init` (with agent credentials) creates the parents of an app it knows that are missing.
    let init = ctl_config(dir.path(), &hosts, "agent:apw", "trigger_app = \"second\"");
    let out = ctl(&["--config", &init, "acl", "init"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(text.contains("/applications/second: created with the policy's ACL"), "{text}");
    assert!(text.contains("/zkcoord/status/second: created"), "{text}");
    let as_agent = client_as(&hosts, Some("agent:apw")).await;
    let (acl, _) = as_agent.get_acl("/applications/second").await.unwrap();
    let policy = zkcoord::zk::identity::AclPolicy { enabled: true, agents: vec![zkcoord::zk::identity::digest_id("agent:apw")], ..Default::default() };
    assert_eq!(policy.verdict(zkcoord::zk::identity::NodeKind::AgentParent, &acl), zkcoord::zk::identity::AclVerdict::Ok, "{acl:?}");
    assert_eq!(anon.create("/applications/second/conf-", b"x", &open_acl()).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(on_disk(&web1).unwrap(), b"real v1\n", "nothing changed on the host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_replace_anothers_status_and_a_forged_one_is_not_believed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _agent = secured(agent_spec(&hosts), "agent:apw", |_| {});
    let mut web1 = secured(Spec::app("web-1", &hosts), "web-1:w1pw", |_| {});
    let web2 = secured(Spec::app("web-2", &hosts), "web-2:w2pw", |_| {});
    let client = zk_client(&hosts).await;
    wait_until("both hosts report", Duration::from_secs(20), || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() == 2
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ops = ctl_config(dir.path(), &hosts, "ops:opw", "");
    let out = ctl_stdin(&["--config", &ops, "publish", APP, "-"], b"v1\n");
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(&web1, b"v1\n", Duration::from_secs(20)).await;
    wait_on_disk(&web2, b"v1\n", Duration::from_secs(20)).await;
    let node = format!("/zkcoord/status/{APP}/web-1");
    wait_status(&client, "web-1", "ok", None).await;
    let (before, stat_before) = client.get_data(&node).await.unwrap();

    // web-2's credentials: delete web-1's node and create a forged one, in one multi-op.
    let as_web2 = client_as(&hosts, Some("web-2:w2pw")).await;
    let forged = br#"{"host":"web-1","pid":1,"app":"nginxconf","version":"conf-0000009999","sha256":null,"result":"ok","time":0}"#;
    let ours = [zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("auth", "")), zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone())];
    let eph = zk::CreateMode::Ephemeral.with_acls(zk::Acls::new(&ours));
    let mut w = as_web2.new_multi_writer();
    w.add_delete(&node, None).unwrap();
    w.add_create(&node, forged, &eph).unwrap();
    let refused = w.commit().await.unwrap_err();
    assert!(format!("{refused:?}").contains("NoAuth"), "{refused:?}");
    let (after, stat_after) = client.get_data(&node).await.unwrap();
    assert_eq!((after, stat_after.czxid), (before, stat_before.czxid), "web-1's node is untouched");

    // web-1 goes down; web-2 puts a forged "ok" under its name.
    web1.term();
    wait_until("web-1's node is gone", Duration::from_secs(20), || async { client.check_stat(&node).await.unwrap().is_none() }).await;
    as_web2.create(&node, forged, &eph).await.unwrap();

    // `status` shows it untrusted, naming who wrote it, and never as applied.
    let out = ctl(&["--config", &ops, "status", APP]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    let line = text.lines().find(|l| l.trim_start().starts_with("web-1")).unwrap_or_default();
    assert!(line.contains("untrusted: ACL names digest:web-2") && !line.contains("conf-0000009999"), "{text}");
    let out = ctl(&["--config", &ops, "status", APP, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = s["apps"][0]["hosts"].as_array().unwrap().iter().find(|h| h["host"] == "web-1").cloned().unwrap();
    assert_eq!((h["result"].as_str(), h["version"].is_null()), (Some("untrusted"), true), "{h}");

    // `publish --wait` counts web-2 only, and says web-1 is not counted.
    let out = ctl_stdin(&["--config", &ops, "publish", APP, "-", "--wait=20s"], b"v2\n");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1/1 applied") && text.contains("web-1 not counted (untrusted: ACL names digest:web-2)"), "{text}");
    wait_on_disk(&web2, b"v2\n", Duration::from_secs(20)).await;
    assert_eq!(on_disk(&web1).unwrap(), b"v1\n", "the stopped host's file is as it left it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_shaped_version_without_metadata_is_installed_as_its_bytes() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _agent = secured(agent_spec(&hosts), "agent:apw", |_| {});
    let web1 = secured(Spec::app("web-1", &hosts), "web-1:w1pw", |_| {});
    let client = zk_client(&hosts).await;
    wait_until("web-1 reports", Duration::from_secs(20), || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() == 1
    })
    .await;
    // A plain client with write rights (an operator with the agents' credentials, or an open
    // ensemble) writes a blob and a version whose bytes are a marker pointing at it.
    let op = client_as(&hosts, Some("agent:apw")).await;
    let hidden = b"pointed-to content\n";
    let sha = zkcoord::digest::sha256_hex(hidden);
    let blob = format!("/zkcoord/blobs/{APP}/{sha}");
    let read_all = [zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("auth", "")), zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone())];
    let mine = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&read_all));
    op.create(&blob, b"", &mine).await.unwrap();
    op.create(&format!("{blob}/chunk-0000"), hidden, &mine).await.unwrap();
    let marker = format!("zkcoord-chunked-v1 sha256={sha} size={} chunks=1\n", hidden.len());
    let seq_mode = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::new(&read_all));
    op.create(&format!("/applications/{APP}/conf-"), marker.as_bytes(), &seq_mode).await.unwrap();
    // The host installs the node's bytes, exactly; never what the marker points to.
    wait_on_disk(&web1, marker.as_bytes(), Duration::from_secs(20)).await;
    assert_ne!(on_disk(&web1).unwrap(), hidden);
    wait_status(&client, "web-1", "ok", None).await;
}

/// Found while testing the ACL fixes: with ACLs on, only agents may make the requests parent, so
/// a publisher that came before the first leader had made it was refused (exit 77). It now waits
/// for the leader's parents, and its publish lands once an agent is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_before_any_agent_made_the_parents_waits_for_them_and_lands() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let dir = tempfile::tempdir().unwrap();
    let ops = ctl_config(dir.path(), &hosts, "ops:opw", "");
    let publish = {
        let ops = ops.clone();
        tokio::task::spawn_blocking(move || ctl_stdin(&["--config", &ops, "publish", APP, "-"], b"early\n"))
    };
    // Nothing but ZooKeeper runs yet; the publisher is waiting for the parents.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!publish.is_finished(), "the publisher gave up before any agent ran");
    let _agent = secured(agent_spec(&hosts), "agent:apw", |_| {});
    let web1 = secured(Spec::app("web-1", &hosts), "web-1:w1pw", |_| {});
    let out = publish.await.unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("published conf-"), "{}", output_text(&out));
    wait_on_disk(&web1, b"early\n", Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_publishers_freeze_and_unfreeze_and_a_host_cannot_lift_a_freeze() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _agent = secured(agent_spec(&hosts), "agent:apw", |_| {});
    let web1 = secured(Spec::app("web-1", &hosts), "web-1:w1pw", |_| {});
    let dir = tempfile::tempdir().unwrap();
    let ops = ctl_config(dir.path(), &hosts, "ops:opw", "");
    let out = ctl_stdin(&["--config", &ops, "publish", APP, "-"], b"v1\n");
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(&web1, b"v1\n", Duration::from_secs(20)).await;

    let out = ctl(&["--config", &ops, "freeze", APP, "-m", "incident 4711"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let flag = format!("/zkcoord/freeze/{APP}");
    // A host's identity, or none at all, can neither lift the freeze nor set one.
    for who in [Some("web-1:w1pw"), None] {
        let c = client_as(&hosts, who).await;
        let e = c.delete(&flag, None).await.unwrap_err();
        assert!(format!("{e:?}").contains("NoAuth"), "{who:?} deleted the flag: {e:?}");
        let e = c.create("/zkcoord/freeze/@all", b"x", &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())).await.unwrap_err();
        assert!(format!("{e:?}").contains("NoAuth"), "{who:?} set a freeze: {e:?}");
    }
    // The web-1 identity through zkcoordctl gets the reason, not a stack of errors.
    let web = ctl_config(dir.path(), &hosts, "web-1:w1pw", "");
    let out = ctl(&["--config", &web, "unfreeze", APP]);
    assert_eq!(out.status.code(), Some(77), "{}", output_text(&out));
    let out = ctl_stdin(&["--config", &ops, "publish", APP, "-"], b"v2\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("incident 4711"), "{}", output_text(&out));
    let out = ctl(&["--config", &ops, "unfreeze", APP]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = ctl_stdin(&["--config", &ops, "publish", APP, "-"], b"v2\n");
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(&web1, b"v2\n", Duration::from_secs(20)).await;
    // Drain flags are the same kind of switch: an operator sets and clears one under ACLs.
    let out = ctl(&["--config", &ops, "drain", "web", "--node", "web-1"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = ctl(&["--config", &ops, "undrain", "web", "--node", "web-1"]);
    assert!(out.status.success(), "{}", output_text(&out));
}
