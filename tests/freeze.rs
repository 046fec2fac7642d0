//! The freeze switch on a real ZooKeeper with an agent and two app hosts: `zkcoordctl freeze`
//! refuses publishes through zkcoordctl and the legacy trigger with the freeze's reason; a
//! version created by hand behind the leader's back is applied by no host, not by one restarted
//! into the freeze, not by `zkcoordd --once`; `status`, `/healthz` (still 200) and `/metrics`
//! say so; `--all` holds every app and outlasts an app's own unfreeze; `unfreeze` lets the
//! hosts catch up at once.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::Duration;

async fn status_json(hosts: &str) -> serde_json::Value {
    let out = ctl_async(&["--zk", hosts, "status", APP, "--json"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether every live host's report says it is frozen (or, with `false`, that none is).
async fn hosts_frozen(hosts: &str, frozen: bool, n: usize) -> bool {
    let s = status_json(hosts).await;
    let list = s["apps"][0]["hosts"].as_array().cloned().unwrap_or_default();
    list.len() == n && list.iter().all(|h| h.get("frozen").is_some() == frozen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_refuses_publishes_holds_every_host_still_and_unfreeze_lets_them_catch_up() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let trigger_port = free_port();
    let mut agent = Spec::agent("agent-1", &hosts);
    agent.agent_extra = format!("trigger_listen = \"127.0.0.1:{trigger_port}\"\ntrigger_app = \"{APP}\"");
    let _agent = agent.start();
    let http = free_port();
    let web1 = {
        let d = Daemon::prepare("web-1");
        std::fs::create_dir_all(d.dir().join("www")).unwrap();
        let mut d = d;
        d.set_config(&format!("{}\n[http]\nlisten = \"127.0.0.1:{http}\"\n", Spec::app("web-1", &hosts).toml()));
        d.spawn();
        d
    };
    let mut web2 = Spec::app("web-2", &hosts).start();

    let v1 = b"worker_processes 1;\n";
    publish_ok(&hosts, v1).await;
    wait_on_disk(&web1, v1, Duration::from_secs(20)).await;
    wait_on_disk(&web2, v1, Duration::from_secs(20)).await;

    // Freezing needs a reason.
    let out = ctl_async(&["--zk", &hosts, "freeze", APP]).await;
    assert_eq!(out.status.code(), Some(64), "{}", output_text(&out));
    assert!(output_text(&out).contains("say why with -m"), "{}", output_text(&out));
    let out = ctl_async(&["--zk", &hosts, "freeze", APP, "-m", "incident 4711"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("froze nginxconf"), "{}", output_text(&out));
    wait_until("both hosts report the freeze", Duration::from_secs(20), || hosts_frozen(&hosts, true, 2)).await;

    // Publishes are refused with the reason, through either door.
    let out = ctl_stdin_async(&["--zk", &hosts, "publish", APP, "-"], b"worker_processes 2;\n").await;
    assert_eq!(out.status.code(), Some(65), "{}", output_text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.starts_with("rejected: frozen by ") && said.contains("incident 4711") && said.contains("zkcoordctl unfreeze nginxconf"), "{said}");
    let reply = tokio::task::spawn_blocking(move || trigger(trigger_port, b"add|worker_processes 3;\n")).await.unwrap();
    assert!(reply.starts_with("rejected: frozen by ") && reply.contains("incident 4711"), "{reply}");
    assert_eq!(versions(&client).await.len(), 1, "nothing was published");

    // A version made by hand behind the leader's back: no host applies it while frozen.
    let by_hand = b"worker_processes 4; # by hand\n";
    create_seq(&client, &format!("/applications/{APP}/conf-"), by_hand).await;
    // ...not a host restarted into the freeze either.
    web2.restart();
    wait_until("web-2 back and reporting the freeze", Duration::from_secs(20), || hosts_frozen(&hosts, true, 2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(on_disk(&web1).as_deref(), Some(&v1[..]), "web-1 applied during the freeze");
    assert_eq!(on_disk(&web2).as_deref(), Some(&v1[..]), "web-2 applied during the freeze");
    let s = status_json(&hosts).await;
    assert!(s["apps"][0]["frozen"].as_str().is_some_and(|f| f.contains("incident 4711")), "{s}");
    assert!(s["apps"][0]["hosts"].as_array().unwrap().iter().all(|h| h["behind"] == true), "{s}");
    let text = ctl_async(&["--zk", &hosts, "status", APP]).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("FROZEN: frozen by "), "{}", output_text(&text));
    // Behind on purpose is healthy (a fleet-wide freeze must not empty a load balancer), and says why.
    let health = http_get(http, "/healthz").expect("healthz answers");
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(health.body.starts_with("ok; app nginxconf: frozen by ") && health.body.contains("incident 4711"), "{}", health.body);
    let metrics = http_get(http, "/metrics").unwrap().body;
    assert!(metrics.contains("zkcoord_frozen{app=\"nginxconf\"} 1"), "{metrics}");

    // `zkcoordd --once` is held too (web-2 stopped: the daemon's lock is free).
    assert!(web2.term().success());
    let (out, _) = zkcoordd_oneshot(&web2, &["--once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nginxconf: frozen by ") && output_text(&out).contains("nothing applied"), "{}", output_text(&out));
    assert_eq!(on_disk(&web2).as_deref(), Some(&v1[..]));
    web2.spawn();

    // --all holds every app, and outlasts the app's own unfreeze.
    let out = ctl_async(&["--zk", &hosts, "freeze", "--all", "-m", "peak hours"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let out = ctl_async(&["--zk", &hosts, "freeze", APP, "-m", "again"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("was already frozen by ") && output_text(&out).contains("incident 4711"), "{}", output_text(&out));
    let out = ctl_async(&["--zk", &hosts, "unfreeze", APP]).await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("unfroze nginxconf"), "{}", output_text(&out));
    let out = ctl_stdin_async(&["--zk", &hosts, "publish", APP, "-"], b"worker_processes 5;\n").await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("(all apps)") && output_text(&out).contains("unfreeze --all"), "{}", output_text(&out));
    wait_until("web-2 back and reporting the fleet-wide freeze", Duration::from_secs(20), || async {
        let s = status_json(&hosts).await;
        let list = s["apps"][0]["hosts"].as_array().cloned().unwrap_or_default();
        list.len() == 2 && list.iter().all(|h| h["frozen"].as_str().is_some_and(|f| f.contains("(all apps)")))
    })
    .await;
    assert_eq!(on_disk(&web1).as_deref(), Some(&v1[..]));
    assert_eq!(on_disk(&web2).as_deref(), Some(&v1[..]));

    // Lifted: both hosts catch up with the version made by hand at once, and publishes go through.
    let out = ctl_async(&["--zk", &hosts, "unfreeze", "--all"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("unfroze every app"), "{}", output_text(&out));
    wait_on_disk(&web1, by_hand, Duration::from_secs(20)).await;
    wait_on_disk(&web2, by_hand, Duration::from_secs(20)).await;
    wait_until("no host reports a freeze", Duration::from_secs(20), || hosts_frozen(&hosts, false, 2)).await;
    let v6 = b"worker_processes 6;\n";
    publish_ok(&hosts, v6).await;
    wait_on_disk(&web1, v6, Duration::from_secs(20)).await;
    assert_eq!(http_get(http, "/healthz").unwrap().body, "ok\n");
    assert!(http_get(http, "/metrics").unwrap().body.contains("zkcoord_frozen{app=\"nginxconf\"} 0"));
    let out = ctl_async(&["--zk", &hosts, "unfreeze", "--all"]).await;
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("every app was not frozen"), "{}", output_text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_rollout_is_not_promoted_while_its_app_is_frozen() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let _agent = Spec::agent("agent-1", &hosts).start();
    let web1 = Spec::app("web-1", &hosts).start();
    let web2 = Spec::app("web-2", &hosts).start();
    let v1 = b"v1\n";
    publish_ok(&hosts, v1).await;
    wait_on_disk(&web2, v1, Duration::from_secs(20)).await;

    let out = ctl_stdin_async(&["--zk", &hosts, "publish", APP, "-", "--canary", "web-1", "--soak", "1s"], b"v2\n").await;
    assert!(out.status.success(), "{}", output_text(&out));
    let v2 = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim_start_matches("published ").to_string();
    wait_status(&client, "web-1", "ok", Some(&v2)).await;
    let out = ctl_async(&["--zk", &hosts, "freeze", APP, "-m", "hold the canary"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    // Well past the 1 s soak: still not promoted, web-2 still on v1.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let record: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/zkcoord/rollouts/{APP}")).await.unwrap()).unwrap();
    assert_ne!(record["state"], "promoted", "{record}");
    assert_eq!(on_disk(&web2).as_deref(), Some(&v1[..]));
    assert_eq!(on_disk(&web1).as_deref(), Some(&b"v2\n"[..]));
    // Lifted: the promotion that fell due is made, and web-2 follows.
    let out = ctl_async(&["--zk", &hosts, "unfreeze", APP]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(&web2, b"v2\n", Duration::from_secs(20)).await;
}
