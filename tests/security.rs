//! Secure by default, proven on a real ZooKeeper with digest authentication and ACLs: who is
//! refused, what they see, and that nothing changed.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use zookeeper_client as zk;

fn digest(user_password: &str) -> String {
    zkcoord::zk::identity::digest_id(user_password)
}

fn acl_section() -> String {
    fleet::acl_section(&["agent:apw"], &["web1:w1pw", "web2:w2pw"], &["ops:opw"])
}

/// A daemon whose config has an auth file and the [acl] section.
fn secured(spec: Spec, user_password: &str, extra: &str) -> Daemon {
    let mut d = Daemon::prepare(&spec.node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let auth = secret(d.dir(), "zk-auth", &format!("{user_password}\n"));
    let toml = spec.toml().replace("start_timeout = \"5s\"\n", &format!("start_timeout = \"5s\"\nauth_file = \"{auth}\"\n"))
        + &acl_section()
        + extra;
    d.set_config(&toml);
    d.spawn();
    d
}

async fn client_as(hosts: &str, user_password: Option<&str>) -> zk::Client {
    let mut c = zk::Client::connector().with_session_timeout(Duration::from_secs(4));
    if let Some(up) = user_password {
        c = c.with_auth("digest", up.as_bytes());
    }
    c.connect(hosts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_only_each_role_does_its_job_and_everyone_else_is_refused() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _agent = secured(Spec::agent("agent-1", &hosts), "agent:apw", "");
    let web1 = secured(Spec::app("web-1", &hosts), "web1:w1pw", "");
    let _web2 = secured(Spec::app("web-2", &hosts), "web2:w2pw", "");
    let client = zk_client(&hosts).await;
    wait_until("both hosts report", Duration::from_secs(20), || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() == 2
    })
    .await;

    // The publisher publishes through its config (credentials and the [acl] section).
    let dir = tempfile::tempdir().unwrap();
    let auth = secret(dir.path(), "ops-auth", "ops:opw\n");
    let cfg = dir.path().join("ops.toml");
    std::fs::write(
        &cfg,
        format!("role = \"agent\"\n[zookeeper]\nhosts = \"{hosts}\"\nauth_file = \"{auth}\"\n{}", acl_section()),
    )
    .unwrap();
    let out = ctl_stdin(&["--config", cfg.to_str().unwrap(), "publish", APP, "-"], b"secured v1\n");
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(&web1, b"secured v1\n", Duration::from_secs(20)).await;
    let versions_before = versions(&client).await;
    let v = versions_before.last().unwrap().clone();
    let version_path = format!("/applications/{APP}/{v}");

    // What was created carries the documented ACLs. (ZooKeeper masks digest hashes in getACL
    // answers to clients without ADMIN on the node, so read them as the owners.)
    let as_agent = client_as(&hosts, Some("agent:apw")).await;
    let (acl, _) = as_agent.get_acl(&version_path).await.unwrap();
    let ids: Vec<(String, String, bool, bool)> = acl
        .iter()
        .map(|a| (a.scheme().to_string(), a.id().to_string(), a.permission().has(zk::Permission::WRITE), a.permission().has(zk::Permission::READ)))
        .collect();
    assert!(ids.contains(&("digest".into(), digest("agent:apw"), true, true)), "{ids:?}");
    assert!(ids.contains(&("world".into(), "anyone".into(), false, true)), "{ids:?}");
    let as_web1 = client_as(&hosts, Some("web1:w1pw")).await;
    let (acl, _) = as_web1.get_acl(&format!("/zkcoord/status/{APP}/web-1")).await.unwrap();
    assert!(acl.iter().any(|a| a.id() == digest("web1:w1pw") && a.permission().has(zk::Permission::WRITE)), "{acl:?}");

    // Refused: an anonymous client writing a version, the publisher writing one directly,
    // one app host writing another's status, anyone deleting a version.
    let anon = client_as(&hosts, None).await;
    let publisher = client_as(&hosts, Some("ops:opw")).await;
    let web2 = client_as(&hosts, Some("web2:w2pw")).await;
    let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    assert_eq!(anon.create(&format!("/applications/{APP}/conf-"), b"evil", &seq).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(publisher.create(&format!("/applications/{APP}/conf-"), b"evil", &seq).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(anon.set_data(&version_path, b"evil", None).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(publisher.delete(&version_path, None).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(web2.set_data(&format!("/zkcoord/status/{APP}/web-1"), b"{}", None).await.unwrap_err(), zk::Error::NoAuth);
    // Everyone may read.
    assert_eq!(anon.get_data(&version_path).await.unwrap().0, b"secured v1\n");

    // zkcoordctl without credentials: refused before anything changes, with the node named.
    let out = ctl_stdin(&["--zk", &hosts, "publish", APP, "-"], b"anonymous\n");
    assert_eq!(out.status.code(), Some(77), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not authorized to create a publish request in /zkcoord/requests") && err.contains("not authenticated"), "{err}");

    // Nothing changed.
    assert_eq!(versions(&client).await, versions_before);
    assert_eq!(on_disk(&web1).unwrap(), b"secured v1\n");
    assert_eq!(children_sorted(&client, "/zkcoord/requests").await, Vec::<String>::new());
}

#[test]
fn a_secret_file_readable_by_others_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("zk-auth");
    std::fs::write(&auth, "agent:apw\n").unwrap();
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.path().join("zkcoord.toml");
    std::fs::write(&cfg, format!("role = \"agent\"\n[zookeeper]\nhosts = \"h:1\"\nauth_file = \"{}\"\n", auth.display())).unwrap();
    let out = std::process::Command::new(daemon_bin()).args(["--config", cfg.to_str().unwrap(), "--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zookeeper.auth_file") && err.contains("readable by others") && err.contains("chmod 600"), "{err}");
    // ACLs without credentials is an impossible combination.
    std::fs::write(&cfg, "role = \"agent\"\n[zookeeper]\nhosts = \"h:1\"\n[acl]\nenabled = true\n").unwrap();
    let out = std::process::Command::new(daemon_bin()).args(["--config", cfg.to_str().unwrap(), "--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("acl.enabled"));
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_with_a_token_refuses_messages_without_it_and_hooks_run_clean_as_their_user() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let tport = free_port();
    let mut spec = Spec::both("web-1", &hosts);
    // The check runs as nobody, in a clean environment, and says so before refusing "reject".
    spec.check = Some(r#"["sh", "-c", "echo uid=$(id -u) secret=${ZKCOORD_TEST_SECRET:-none}; ! grep -q reject {src}"]"#.into());
    let mut d = Daemon::prepare("web-1");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let token = secret(d.dir(), "trigger-token", "t0ken\n");
    let toml = spec.toml().replace(
        "[agent]\n",
        &format!("[agent]\ntrigger_listen = \"127.0.0.1:{tport}\"\ntrigger_app = \"{APP}\"\ntrigger_token_file = \"{token}\"\n"),
    ) + "run_as = \"nobody\"\n";
    d.set_config(&toml);
    d.set_env("ZKCOORD_TEST_SECRET", "leaked");
    d.spawn();
    d.wait_for_log("legacy trigger listening", Duration::from_secs(20));

    assert!(trigger(tport, b"add|no token\n").starts_with("rejected: expected `add:<token>|<data>`"));
    assert!(trigger(tport, b"add:guess|wrong token\n").starts_with("rejected: wrong token"));
    assert_eq!(versions(&client).await, Vec::<String>::new(), "nothing was published");
    let reply = trigger(tport, b"add:t0ken|reject this\n");
    assert!(reply.starts_with("published conf-"), "{reply}");
    let s = wait_status(&client, "web-1", "check-failed", None).await;
    let err = s["error"].as_str().unwrap();
    // The error is zkcoord's line (what ran and how it ended), then the hook's own output.
    assert!(err.lines().any(|l| l.starts_with("uid=65534 secret=none")), "hooks run as nobody without the daemon's environment: {err}");
}
