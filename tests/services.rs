//! Service registry and discovery: hosts register their services while healthy, a renderer
//! turns the live members into a file through the apply pipeline. Real ZooKeeper, real
//! daemons, real `zkcoordctl`, and a plain ZooKeeper client playing an existing script.

mod common;
mod fleet;

use fleet::secret;

use common::*;
use std::time::{Duration, Instant};
use zookeeper_client::{Acls, Client, CreateMode};

/// Generous: tests must never fail because the machine is slow.
const PATIENCE: Duration = Duration::from_secs(30);

const TEMPLATE: &str = "upstream web {\n{% for m in members %}    server {{ m.host }}:{{ m.port }};\n{% endfor %}}\n";

/// An app-role host that only registers `[[service]]` entries (`service` is the TOML body).
fn registering(node: &str, hosts: &str, service: &str) -> Daemon {
    let toml = format!(
        "role = \"app\"\nnode_id = \"{node}\"\nstate_dir = \"{{dir}}/state\"\n\n[zookeeper]\nhosts = \"{hosts}\"\nsession_timeout = \"1s\"\nstart_timeout = \"5s\"\n\n[[service]]\n{service}"
    );
    Daemon::start(node, &toml)
}

/// A host that renders `{dir}/www/upstream.conf` from a service's members, counting reloads.
fn renderer(node: &str, hosts: &str, render_extra: &str) -> Daemon {
    renderer_with(node, hosts, "", render_extra)
}

/// Like [`renderer`], with extra `[[app]]` keys (a check, say).
fn renderer_with(node: &str, hosts: &str, app_extra: &str, render_extra: &str) -> Daemon {
    let mut d = Daemon::prepare(node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    std::fs::write(d.dir().join("upstream.j2"), TEMPLATE).unwrap();
    d.set_config(&format!(
        "role = \"app\"\nnode_id = \"{node}\"\nstate_dir = \"{{dir}}/state\"\n\n[zookeeper]\nhosts = \"{hosts}\"\nsession_timeout = \"1s\"\nstart_timeout = \"5s\"\n\n\
         [[app]]\nname = \"upstreams\"\ndest = \"{{dir}}/www/upstream.conf\"\nreload = [\"sh\", \"-c\", \"echo reload >> {{dir}}/reloads.log\"]\n{app_extra}\
         [app.render]\nservice = \"web\"\ntemplate = \"{{dir}}/upstream.j2\"\n{render_extra}"
    ));
    d.spawn();
    d
}

fn rendered(d: &Daemon) -> Option<String> {
    std::fs::read_to_string(d.dir().join("www/upstream.conf")).ok()
}

fn reloads(d: &Daemon) -> usize {
    std::fs::read_to_string(d.dir().join("reloads.log")).map(|s| s.lines().count()).unwrap_or(0)
}

fn upstream(servers: &[&str]) -> String {
    let mut s = "upstream web {\n".to_string();
    for a in servers {
        s.push_str(&format!("    server {a};\n"));
    }
    s.push_str("}\n");
    s
}

/// Whether the daemon's last finished render (its reload included) had `count` members.
fn last_render_had(d: &Daemon, count: usize) -> bool {
    d.log().lines().rev().find(|l| l.contains(" rendered app=")).is_some_and(|l| l.ends_with(&format!(" count={count}")))
}

/// Waits until the file holds `expected` and the render that wrote it has finished (reload
/// included), so reload counts read afterwards are settled.
async fn wait_rendered(d: &Daemon, expected: &str) -> Duration {
    let start = Instant::now();
    let count = expected.lines().filter(|l| l.contains("server ")).count();
    while start.elapsed() < PATIENCE {
        if rendered(d).as_deref() == Some(expected) && last_render_had(d, count) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.print_log();
    panic!("{}: never rendered {expected:?}; the file holds {:?}", d.name(), rendered(d));
}

async fn member(client: &Client, path: &str) -> Option<serde_json::Value> {
    get(client, path).await.and_then(|b| serde_json::from_slice(&b).ok())
}

async fn ctl_ok(args: &[&str]) -> String {
    let out = ctl_async(args).await;
    assert!(out.status.success(), "zkcoordctl {args:?} failed:\n{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a script does: an EPHEMERAL_SEQUENTIAL `<prefix>` node with JSON host/port.
async fn script_registers(client: &Client, prefix: &str, json: &str) -> String {
    let (_, seq) = client
        .create(prefix, json.as_bytes(), &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()))
        .await
        .unwrap();
    format!("{prefix}{seq}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_service_comes_and_goes_with_its_health_check() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut d = registering(
        "web-1",
        &hosts,
        "name = \"web\"\nhost = \"10.0.0.1\"\nport = 8001\ndata = { weight = 2 }\ncheck = [\"test\", \"-f\", \"{dir}/healthy\"]\ninterval = \"100ms\"\nrise = 1\nfall = 1\n",
    );
    let path = "/services/web/web-1";
    d.wait_for_log("health check failed", PATIENCE);
    assert!(get(&client, path).await.is_none(), "an unhealthy service is not registered");

    std::fs::write(d.dir().join("healthy"), "").unwrap();
    wait_until("the member is registered", PATIENCE, || async { get(&client, path).await.is_some() }).await;
    assert_eq!(member(&client, path).await.unwrap(), serde_json::json!({"host": "10.0.0.1", "port": 8001, "weight": 2}));
    let stat = client.check_stat(path).await.unwrap().unwrap();
    assert_ne!(stat.ephemeral_owner, 0, "members are ephemeral");

    std::fs::remove_file(d.dir().join("healthy")).unwrap();
    wait_until("the unhealthy member is removed", PATIENCE, || async { get(&client, path).await.is_none() }).await;
    assert!(d.is_running());

    std::fs::write(d.dir().join("healthy"), "").unwrap();
    wait_until("the healthy member is back", PATIENCE, || async { get(&client, path).await.is_some() }).await;

    // Someone deletes it: it comes back with the same data.
    let before = client.check_stat(path).await.unwrap().unwrap().czxid;
    let deleted = Instant::now();
    assert!(delete(&client, path).await);
    wait_until("the deleted member is re-created", PATIENCE, || async {
        client.check_stat(path).await.ok().flatten().is_some_and(|s| s.czxid != before)
    })
    .await;
    eprintln!("figures: deleted member re-created after {:?}", deleted.elapsed());
    assert_eq!(member(&client, path).await.unwrap()["host"], "10.0.0.1");

    let listed: serde_json::Value = serde_json::from_str(&ctl_ok(&["--zk", &hosts, "services", "web", "--json"]).await).unwrap();
    assert_eq!(listed[0]["members"][0]["node"], "web-1", "{listed}");
    assert_eq!(listed[0]["members"][0]["address"], "10.0.0.1:8001", "{listed}");
    let text = ctl_ok(&["--zk", &hosts, "services"]).await;
    assert!(text.contains("SERVICE web (/services/web): 1 live member") && text.contains("10.0.0.1:8001"), "{text}");

    // A clean stop removes the member at once (no session timeout to wait out).
    let stopping = Instant::now();
    assert!(d.term().success());
    wait_until("the stopped daemon's member is gone", PATIENCE, || async { get(&client, path).await.is_none() }).await;
    eprintln!("figures: SIGTERM to member gone: {:?}", stopping.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_registered_host_drops_it_and_the_renderer_reloads_with_the_smaller_set() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let _a = registering("app-a", &hosts, "name = \"web\"\nhost = \"10.0.0.1\"\nport = 80\n");
    let mut b = registering("app-b", &hosts, "name = \"web\"\nhost = \"10.0.0.2\"\nport = 80\n");
    let lb = renderer("lb-1", &hosts, "");

    wait_rendered(&lb, &upstream(&["10.0.0.1:80", "10.0.0.2:80"])).await;
    let before = reloads(&lb);
    assert!(before >= 1, "the first render reloaded");

    let killed = Instant::now();
    b.kill9();
    let took = wait_rendered(&lb, &upstream(&["10.0.0.1:80"])).await;
    eprintln!("figures: kill -9 of a member (session timeout 1s) to re-rendered file: {took:?} (measured {:?})", killed.elapsed());
    wait_until("the reload after the smaller set", PATIENCE, || async { reloads(&lb) == before + 1 }).await;
    let status: serde_json::Value = serde_json::from_slice(&get(&client, "/zkcoord/status/upstreams/lb-1").await.unwrap()).unwrap();
    assert_eq!(status["result"], "ok", "{status}");
    // Give a stray second render a chance to show itself: it would be a needless reload.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reloads(&lb), before + 1, "one change, one reload");
    wait_until("the status says one member", PATIENCE, || async {
        get(&client, "/zkcoord/status/upstreams/lb-1").await.is_some_and(|b| String::from_utf8_lossy(&b).contains("members:1"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_written_by_a_plain_client_renders_in_a_stable_order_and_bursts_coalesce() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    create_all(&client, "/rpc").await;
    let first = script_registers(&client, "/rpc/server", r#"{"host": "10.0.0.5", "port": 8001}"#).await;
    script_registers(&client, "/rpc/server", r#"{"host": "10.0.0.4", "port": "8002"}"#).await;
    create(&client, "/rpc/lock", b"").await; // not a member: its data is not JSON
    // Our own daemon joins the same registry the way the scripts do.
    let _ours = registering("rpc-6", &hosts, "name = \"rpc\"\npath = \"/rpc\"\nnode_name = \"server\"\nsequential = true\nhost = \"10.0.0.6\"\nport = 8003\n");
    let lb = renderer("lb-1", &hosts, "path = \"/rpc\"\n");

    wait_rendered(&lb, &upstream(&["10.0.0.4:8002", "10.0.0.5:8001", "10.0.0.6:8003"])).await;
    let text = ctl_ok(&["--zk", &hosts, "services", "rpc", "--path", "/rpc"]).await;
    assert!(text.contains("3 live member") && text.contains("server0000000000") && text.contains("lock"), "{text}");

    // The script's member goes away, then comes back with a new sequence number: same file,
    // so no rewrite and no reload.
    assert!(delete(&client, &first).await);
    wait_rendered(&lb, &upstream(&["10.0.0.4:8002", "10.0.0.6:8003"])).await;
    let after_delete = reloads(&lb);
    let again = script_registers(&client, "/rpc/server", r#"{"host": "10.0.0.5", "port": 8001}"#).await;
    assert_ne!(again, first);
    wait_rendered(&lb, &upstream(&["10.0.0.4:8002", "10.0.0.5:8001", "10.0.0.6:8003"])).await;
    assert_eq!(reloads(&lb), after_delete + 1);

    // A burst of 30 registrations at once makes far fewer renders than changes.
    let before = reloads(&lb);
    let burst: Vec<_> = (0..30)
        .map(|i| {
            let client = client.clone();
            async move { script_registers(&client, "/rpc/server", &format!(r#"{{"host": "10.1.0.{i:02}", "port": 80}}"#)).await }
        })
        .collect();
    futures::future::join_all(burst).await;
    wait_until("all 33 members are rendered", PATIENCE, || async { rendered(&lb).is_some_and(|t| t.lines().count() == 35) }).await;
    let text = rendered(&lb).unwrap();
    assert!(text.find("10.0.0.4:8002").unwrap() < text.find("10.1.0.00:80").unwrap(), "sorted by address:\n{text}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = reloads(&lb) - before;
    eprintln!("figures: 30 registrations in a burst -> {n} render(s) and reload(s)");
    assert!(n < 30, "renders must coalesce: {n} reloads for 30 changes");

    // An edited template is read again on SIGHUP, without any member changing.
    std::fs::write(lb.dir().join("upstream.j2"), format!("# {{{{ count }}}} members of {{{{ service }}}}\n{TEMPLATE}")).unwrap();
    lb.hup();
    wait_until("the edited template is rendered", PATIENCE, || async {
        rendered(&lb).is_some_and(|t| t.starts_with("# 33 members of web\n"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_member_list_is_held_back_unless_allowed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    create_all(&client, "/services/web").await;
    let only = script_registers(&client, "/services/web/m-", r#"{"host": "10.0.0.9", "port": 80}"#).await;
    let held = renderer("lb-held", &hosts, "");
    let empty = renderer("lb-empty", &hosts, "allow_empty = true\n");
    let one = upstream(&["10.0.0.9:80"]);
    wait_rendered(&held, &one).await;
    wait_rendered(&empty, &one).await;
    let held_reloads = reloads(&held);

    assert!(delete(&client, &only).await);
    wait_rendered(&empty, &upstream(&[])).await;
    held.wait_for_log("holding back the empty list", PATIENCE);
    wait_until("the held status says so", PATIENCE, || async {
        get(&client, "/zkcoord/status/upstreams/lb-held").await.is_some_and(|b| String::from_utf8_lossy(&b).contains("held: no live members"))
    })
    .await;
    assert_eq!(rendered(&held).unwrap(), one, "the file keeps its last content");
    assert_eq!(reloads(&held), held_reloads, "nothing was written or reloaded");

    // The member returns with the content the file already has: nothing to write.
    script_registers(&client, "/services/web/m-", r#"{"host": "10.0.0.9", "port": 80}"#).await;
    wait_rendered(&empty, &one).await;
    held.wait_for_log("members are back", PATIENCE);
    assert_eq!(reloads(&held), held_reloads, "same output, no reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_undrain_take_a_host_out_of_rotation_and_back() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let port = free_port();
    let http = format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n");
    let mut d = registering("web-1", &hosts, &format!("name = \"web\"\nhost = \"10.0.0.1\"\nport = 80\n{http}"));
    let lb = renderer("lb-1", &hosts, "allow_empty = true\n");
    let path = "/services/web/web-1";
    wait_rendered(&lb, &upstream(&["10.0.0.1:80"])).await;
    let registered = |want: &'static str| {
        move || fleet::http_get(port, "/metrics").is_some_and(|r| r.body.contains(&format!("zkcoord_service_registered{{service=\"web\"}} {want}")))
    };
    wait_until_sync("the metric says registered", PATIENCE, registered("1"));

    let said = ctl_ok(&["--zk", &hosts, "drain", "web", "--node", "web-1"]).await;
    assert!(said.contains("drained web on web-1"), "{said}");
    wait_until("the drained member is gone", PATIENCE, || async { get(&client, path).await.is_none() }).await;
    wait_rendered(&lb, &upstream(&[])).await;
    assert!(d.is_running(), "draining does not stop the daemon");
    wait_until_sync("the metric says not registered", PATIENCE, registered("0"));
    let text = ctl_ok(&["--zk", &hosts, "services", "web"]).await;
    assert!(text.contains("0 live member") && text.contains("drained: web-1"), "{text}");
    assert!(ctl_ok(&["--zk", &hosts, "drain", "web", "--node", "web-1"]).await.contains("already drained"));

    // Still drained across a restart of the daemon: the flag lives in ZooKeeper.
    d.restart();
    wait_until_sync("the restarted daemon sees the flag", PATIENCE, || d.log().matches("drain flag set").count() >= 2);
    assert!(get(&client, path).await.is_none());

    let said = ctl_ok(&["--zk", &hosts, "undrain", "web", "--node", "web-1"]).await;
    assert!(said.contains("undrained web on web-1"), "{said}");
    wait_until("the undrained member is back", PATIENCE, || async { get(&client, path).await.is_some() }).await;
    wait_rendered(&lb, &upstream(&["10.0.0.1:80"])).await;
    assert!(ctl_ok(&["--zk", &hosts, "undrain", "web", "--node", "web-1"]).await.contains("was not drained"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_lost_with_its_session_is_re_created_and_a_reload_changes_its_data() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let d = registering("web-1", &hosts, "name = \"web\"\nhost = \"10.0.0.1\"\nport = 80\n");
    let path = "/services/web/web-1";
    wait_until("the member is registered", PATIENCE, || async { get(&client, path).await.is_some() }).await;
    let owner = client.check_stat(path).await.unwrap().unwrap().ephemeral_owner;

    // Paused past its session timeout: the server expires the session and drops the member.
    d.stop_signal();
    wait_until("the paused host's member expires", PATIENCE, || async { get(&client, path).await.is_none() }).await;
    let resumed = Instant::now();
    d.cont();
    wait_until("the member is re-created on a new session", PATIENCE, || async {
        client.check_stat(path).await.ok().flatten().is_some_and(|s| s.ephemeral_owner != owner)
    })
    .await;
    eprintln!("figures: SIGCONT after session expiry to member re-created: {:?}", resumed.elapsed());

    // SIGHUP with new data: the member is re-registered with it.
    d.set_config(&std::fs::read_to_string(d.config_path()).unwrap().replace("port = 80", "port = 81"));
    d.hup();
    wait_until("the member carries the new port", PATIENCE, || async {
        member(&client, path).await.is_some_and(|m| m["port"] == 81)
    })
    .await;
    d.wait_for_log("service web restarted", PATIENCE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendered_file_that_fails_its_check_is_not_installed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    create_all(&client, "/services/web").await;
    script_registers(&client, "/services/web/m-", r#"{"host": "10.0.0.1", "port": 80}"#).await;
    let port = free_port();
    let lb = renderer_with("lb-1", &hosts, "check = [\"sh\", \"-c\", \"! grep -q 10.0.0.66 {src}\"]\n", &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    let good = upstream(&["10.0.0.1:80"]);
    wait_rendered(&lb, &good).await;
    let before = reloads(&lb);

    let bad = script_registers(&client, "/services/web/m-", r#"{"host": "10.0.0.66", "port": 80}"#).await;
    let status = "/zkcoord/status/upstreams/lb-1";
    wait_until("the status says check-failed", PATIENCE, || async {
        get(&client, status).await.is_some_and(|b| String::from_utf8_lossy(&b).contains("check-failed"))
    })
    .await;
    let s: serde_json::Value = serde_json::from_slice(&get(&client, status).await.unwrap()).unwrap();
    assert_eq!((s["version"].as_str(), s["attempted"].as_str()), (Some("members:1"), Some("members:2")), "{s}");
    assert_eq!(rendered(&lb).unwrap(), good, "the old file stays");
    assert_eq!(reloads(&lb), before, "no reload for output that failed its check");
    let health = fleet::http_get(port, "/healthz").unwrap();
    assert_eq!(health.status, 503, "{health:?}");
    assert!(health.body.contains("app upstreams: check-failed members:2"), "{health:?}");

    // The bad member leaves: the output equals the file again, and the status is ok.
    assert!(delete(&client, &bad).await);
    wait_until("the status is ok again", PATIENCE, || async {
        get(&client, status).await.is_some_and(|b| String::from_utf8_lossy(&b).contains("\"result\":\"ok\""))
    })
    .await;
    assert_eq!(rendered(&lb).unwrap(), good);
    assert_eq!(reloads(&lb), before);

    // It comes back: checked again (not silently skipped), and refused again.
    script_registers(&client, "/services/web/m-", r#"{"host": "10.0.0.66", "port": 80}"#).await;
    wait_until("the status says check-failed again", PATIENCE, || async {
        get(&client, status).await.is_some_and(|b| String::from_utf8_lossy(&b).contains("check-failed"))
    })
    .await;
    assert_eq!(rendered(&lb).unwrap(), good);
}

fn acl_section() -> String {
    fleet::acl_section(&[], &["web1:w1pw", "web2:w2pw"], &["ops:opw"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_any_app_host_registers_members_are_world_readable_and_operators_drain() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let secured = |node: &str, user_password: &str, service: &str| {
        let mut d = Daemon::prepare(node);
        let auth = secret(d.dir(), "zk-auth", &format!("{user_password}\n"));
        d.set_config(&format!(
            "role = \"app\"\nnode_id = \"{node}\"\nstate_dir = \"{{dir}}/state\"\n\n[zookeeper]\nhosts = \"{hosts}\"\nsession_timeout = \"1s\"\nauth_file = \"{auth}\"\n\n[[service]]\n{service}{}",
            acl_section()
        ));
        d.spawn();
        d
    };
    let web1 = secured("web-1", "web1:w1pw", "name = \"web\"\nhost = \"10.0.0.1\"\nport = 80\n");
    let _web2 = secured("web-2", "web2:w2pw", "name = \"api\"\nhost = \"10.0.0.2\"\nport = 81\n");
    let anyone = zk_client(&hosts).await;
    wait_until("both hosts registered their services", PATIENCE, || async {
        get(&anyone, "/services/web/web-1").await.is_some() && get(&anyone, "/services/api/web-2").await.is_some()
    })
    .await;
    assert_eq!(member(&anyone, "/services/api/web-2").await.unwrap()["port"], 81, "members are world-readable");
    let refused = anyone.set_data("/services/web/web-1", b"{}", None).await;
    assert!(matches!(refused, Err(zookeeper_client::Error::NoAuth)), "{refused:?}");

    // The operator drains with a publisher identity.
    let dir = tempfile::tempdir().unwrap();
    let auth = secret(dir.path(), "ops-auth", "ops:opw\n");
    let cfg = dir.path().join("ops.toml");
    std::fs::write(&cfg, format!("role = \"agent\"\n[zookeeper]\nhosts = \"{hosts}\"\nauth_file = \"{auth}\"\n{}", acl_section())).unwrap();
    let cfg = cfg.to_str().unwrap();
    ctl_ok(&["--config", cfg, "drain", "web", "--node", "web-1"]).await;
    wait_until("the drained member is gone", PATIENCE, || async { get(&anyone, "/services/web/web-1").await.is_none() }).await;
    let refused = anyone.delete("/zkcoord/drain/web-1/web", None).await;
    assert!(matches!(refused, Err(zookeeper_client::Error::NoAuth)), "only operators clear flags: {refused:?}");
    ctl_ok(&["--config", cfg, "undrain", "web", "--node", "web-1"]).await;
    wait_until("the member is back", PATIENCE, || async { get(&anyone, "/services/web/web-1").await.is_some() }).await;
    assert!(!web1.log().contains("NoAuth"), "{}", web1.log());
}
