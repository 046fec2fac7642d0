//! The member guard of rendered apps (issue 16, part 4): a member list that shrank past
//! `max_shrink` below the last applied one, or that is smaller than `min_members`, is held back;
//! the file keeps its content, the status, `/healthz` and `zkcoord_render_held` say why, the hold
//! survives a restart (the applied count is in the state file), and ends when members return or
//! when the operator raises `max_shrink` and reloads. Real ZooKeeper, real daemons; the members
//! are ephemeral nodes written by a plain client, as an existing registry script writes them.

mod common;
mod fleet;

use common::*;
use std::time::{Duration, Instant};
use zookeeper_client::{Acls, Client, CreateMode};

/// Generous: tests must never fail because the machine is slow.
const PATIENCE: Duration = Duration::from_secs(30);

const TEMPLATE: &str = "upstream web {\n{% for m in members %}    server {{ m.host }}:{{ m.port }};\n{% endfor %}}\n";

/// The config of a host rendering `{dir}/www/upstream.conf` from `/services/web`, counting its
/// reloads in `{dir}/reloads.log`, with `/healthz` on `port`.
fn renderer_config(node: &str, hosts: &str, port: u16, render_extra: &str) -> String {
    format!(
        "role = \"app\"\nnode_id = \"{node}\"\nstate_dir = \"{{dir}}/state\"\n\n[zookeeper]\nhosts = \"{hosts}\"\nsession_timeout = \"1s\"\nstart_timeout = \"5s\"\n\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[app]]\nname = \"upstreams\"\ndest = \"{{dir}}/www/upstream.conf\"\nreload = [\"sh\", \"-c\", \"echo reload >> {{dir}}/reloads.log\"]\n\
         [app.render]\nservice = \"web\"\ntemplate = \"{{dir}}/upstream.j2\"\nquiet = \"100ms\"\nmax_wait = \"500ms\"\n{render_extra}"
    )
}

/// A renderer host (see [`renderer_config`]) and its HTTP port.
fn renderer(node: &str, hosts: &str, render_extra: &str) -> (Daemon, u16) {
    let port = free_port();
    let mut d = Daemon::prepare(node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    std::fs::write(d.dir().join("upstream.j2"), TEMPLATE).unwrap();
    d.set_config(&renderer_config(node, hosts, port, render_extra));
    d.spawn();
    (d, port)
}

fn rendered(d: &Daemon) -> Option<String> {
    std::fs::read_to_string(d.dir().join("www/upstream.conf")).ok()
}

fn reloads(d: &Daemon) -> usize {
    std::fs::read_to_string(d.dir().join("reloads.log")).map(|s| s.lines().count()).unwrap_or(0)
}

/// The file rendered from members `ids`.
fn upstream(ids: impl IntoIterator<Item = usize>) -> String {
    // Sorted as the renderer sorts members: by host, then port.
    let mut hosts: Vec<String> = ids.into_iter().map(|i| format!("10.0.0.{i}")).collect();
    hosts.sort();
    let addrs = hosts.into_iter().map(|h| format!("{h}:80"));
    let mut s = "upstream web {\n".to_string();
    for a in addrs {
        s.push_str(&format!("    server {a};\n"));
    }
    s.push_str("}\n");
    s
}

/// What a registry script does: an EPHEMERAL_SEQUENTIAL member with JSON host/port.
async fn register(client: &Client, i: usize) -> String {
    let json = format!(r#"{{"host": "10.0.0.{i}", "port": 80}}"#);
    let (_, seq) = client
        .create("/services/web/m-", json.as_bytes(), &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()))
        .await
        .unwrap();
    format!("/services/web/m-{seq}")
}

async fn status(client: &Client, node: &str) -> serde_json::Value {
    get(client, &format!("/zkcoord/status/upstreams/{node}")).await.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Waits until `node`'s status satisfies `f`; returns it.
async fn wait_status(client: &Client, node: &str, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = status(client, node).await;
        if f(&s) {
            return s;
        }
        assert!(start.elapsed() < PATIENCE, "{node}: never {what}; status {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the file holds `expected` and the status reports it applied.
async fn wait_rendered(client: &Client, d: &Daemon, expected: &str) -> Duration {
    let start = Instant::now();
    let count = expected.lines().filter(|l| l.contains("server ")).count();
    let label = format!("members:{count}");
    while start.elapsed() < PATIENCE {
        let s = status(client, d.name()).await;
        if rendered(d).as_deref() == Some(expected) && s["result"] == "ok" && s["version"] == label.as_str() && s["error"].is_null() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.print_log();
    panic!("{}: never rendered {expected:?}; the file holds {:?}", d.name(), rendered(d));
}

fn error_of(s: &serde_json::Value) -> String {
    s["error"].as_str().unwrap_or_default().to_string()
}

fn held_gauge(port: u16) -> Option<String> {
    let m = fleet::http_get(port, "/metrics")?.body;
    m.lines().find(|l| l.starts_with("zkcoord_render_held{app=\"upstreams\"}")).map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_of_ten_members_gone_is_held_across_a_restart_and_ends_when_they_return() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    create_all(&client, "/services/web").await;
    let mut nodes = Vec::new();
    for i in 1..=10 {
        nodes.push(register(&client, i).await);
    }
    let (mut lb, port) = renderer("lb-1", &hosts, "");
    let ten = upstream(1..=10);
    wait_rendered(&client, &lb, &ten).await;
    let before = reloads(&lb);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(lb.dir().join("state/upstreams.json")).unwrap()).unwrap();
    assert_eq!(state["members"], 10, "the applied count is remembered: {state}");

    // Eight go at once (their ephemeral nodes removed): held, with the reason everywhere.
    let gone = Instant::now();
    for n in nodes.drain(2..) {
        assert!(delete(&client, &n).await);
    }
    let why = "held: 2 live member(s) of 10 applied; max_shrink 50% refuses a drop below 5";
    let s = wait_status(&client, "lb-1", "held", |s| error_of(s).starts_with(why)).await;
    eprintln!("figures: 8 of 10 members deleted to a held status: {:?}", gone.elapsed());
    assert_eq!((s["version"].as_str(), s["attempted"].as_str(), s["result"].as_str()), (Some("members:10"), Some("members:2"), Some("ok")), "{s}");
    assert_eq!(rendered(&lb).unwrap(), ten, "the file keeps its content");
    assert_eq!(reloads(&lb), before, "nothing was written or reloaded");
    let health = fleet::http_get(port, "/healthz").unwrap();
    assert_eq!(health.status, 503, "{health:?}");
    assert!(health.body.contains(&format!("app upstreams: {why}")), "{health:?}");
    assert_eq!(held_gauge(port).as_deref(), Some("1"));
    lb.wait_for_log("holding back the member list", PATIENCE);

    // Restarted while the registry is still short: the state file says 10, so it still holds.
    lb.restart();
    wait_until("the restarted daemon reports the hold", PATIENCE, || async {
        status(&client, "lb-1").await["pid"] == lb.pid() && error_of(&status(&client, "lb-1").await).starts_with(why)
    })
    .await;
    let s = status(&client, "lb-1").await;
    assert_eq!((s["version"].as_str(), s["result"].as_str()), (Some("members:10"), Some("ok")), "the file's render is known again: {s}");
    assert_eq!(rendered(&lb).unwrap(), ten, "a restart during the outage does not gut the file");
    assert_eq!(reloads(&lb), before);
    wait_until("/healthz of the restarted daemon says held", PATIENCE, || async {
        fleet::http_get(port, "/healthz").is_some_and(|h| h.status == 503 && h.body.contains(why))
    })
    .await;

    // Members flap during the hold (3, 2, 4, 2 live): still held, nothing written.
    for i in [3, 4] {
        let flapping = register(&client, i).await;
        wait_status(&client, "lb-1", "held at 3", |s| s["attempted"] == "members:3").await;
        if i == 4 {
            let other = register(&client, 5).await;
            wait_status(&client, "lb-1", "held at 4", |s| s["attempted"] == "members:4" && error_of(s).contains("of 10 applied")).await;
            assert!(delete(&client, &other).await);
        }
        assert!(delete(&client, &flapping).await);
        wait_status(&client, "lb-1", "held at 2", |s| s["attempted"] == "members:2").await;
    }
    assert_eq!(rendered(&lb).unwrap(), ten);
    assert_eq!(reloads(&lb), before, "flapping below the floor never reloads");

    // Seven of the eight come back: 9 >= 5, rendered and applied; the hold ends by itself.
    let back = Instant::now();
    for i in 3..=9 {
        nodes.push(register(&client, i).await);
    }
    let nine = upstream(1..=9);
    wait_rendered(&client, &lb, &nine).await;
    eprintln!("figures: 7 members back to the applied render of 9: {:?}", back.elapsed());
    assert_eq!(reloads(&lb), before + 1, "one reload for the return");
    wait_until("/healthz is ok again", PATIENCE, || async { fleet::http_get(port, "/healthz").is_some_and(|h| h.status == 200) }).await;
    assert_eq!(held_gauge(port).as_deref(), Some("0"));
    lb.wait_for_log("members are back", PATIENCE);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(lb.dir().join("state/upstreams.json")).unwrap()).unwrap();
    assert_eq!(state["members"], 9, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_members_refuses_a_first_render_that_is_too_small() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    create_all(&client, "/services/web").await;
    register(&client, 1).await;
    register(&client, 2).await;
    // No state file and no file yet: only min_members can judge.
    let (lb, port) = renderer("lb-1", &hosts, "min_members = 3\n");
    let s = wait_status(&client, "lb-1", "held", |s| !error_of(s).is_empty()).await;
    assert!(error_of(&s).starts_with("held: 2 live member(s), min_members 3"), "{s}");
    assert!(rendered(&lb).is_none(), "nothing was written");
    assert!(!lb.dir().join("state/upstreams.json").exists(), "nothing is remembered before a render");
    let health = fleet::http_get(port, "/healthz").unwrap();
    assert_eq!(health.status, 503, "{health:?}");
    assert!(health.body.contains("min_members 3"), "{health:?}");

    register(&client, 3).await;
    wait_rendered(&client, &lb, &upstream(1..=3)).await;
    assert_eq!(reloads(&lb), 1);
}

/// `max_shrink = 0` holds any drop; `allow_empty = true` follows the registry down to nothing
/// unless it sets `max_shrink`, which then wins, the drop to zero included; raising
/// `max_shrink` and reloading (SIGHUP) is how an operator accepts a held shrink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_shrink_zero_allow_empty_and_the_operator_accepting_a_shrink() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    create_all(&client, "/services/web").await;
    let a = register(&client, 1).await;
    let b = register(&client, 2).await;
    let (strict, strict_port) = renderer("lb-strict", &hosts, "max_shrink = 0\n");
    let (guarded, _) = renderer("lb-guarded", &hosts, "allow_empty = true\nmax_shrink = \"50%\"\n");
    let (empty, _) = renderer("lb-empty", &hosts, "allow_empty = true\n");
    let two = upstream(1..=2);
    for d in [&strict, &guarded, &empty] {
        wait_rendered(&client, d, &two).await;
    }

    // 2 -> 1: a 50% drop. max_shrink = 0 holds it; 50% and off render it.
    assert!(delete(&client, &b).await);
    let one = upstream([1]);
    wait_rendered(&client, &guarded, &one).await;
    wait_rendered(&client, &empty, &one).await;
    let s = wait_status(&client, "lb-strict", "held", |s| !error_of(s).is_empty()).await;
    assert!(error_of(&s).starts_with("held: 1 live member(s) of 2 applied; max_shrink 0 refuses a drop below 2"), "{s}");
    assert_eq!(rendered(&strict).unwrap(), two);

    // 1 -> 0: allow_empty alone writes the empty list; with max_shrink = "50%" it is held.
    assert!(delete(&client, &a).await);
    wait_rendered(&client, &empty, &upstream([])).await;
    let s = wait_status(&client, "lb-guarded", "held", |s| !error_of(s).is_empty()).await;
    assert!(error_of(&s).starts_with("held: 0 live member(s) of 1 applied; max_shrink 50% refuses a drop below 1"), "{s}");
    assert_eq!(rendered(&guarded).unwrap(), one);

    // The operator accepts lb-strict's shrink: max_shrink raised, SIGHUP. The empty list is
    // still refused there (min_members 1), so a member comes back first.
    register(&client, 1).await;
    wait_status(&client, "lb-strict", "held at 1", |s| s["attempted"] == "members:1").await;
    strict.set_config(&renderer_config("lb-strict", &hosts, strict_port, "max_shrink = \"off\"\n"));
    strict.hup();
    wait_rendered(&client, &strict, &one).await;
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(strict.dir().join("state/upstreams.json")).unwrap()).unwrap();
    assert_eq!(state["members"], 1, "the accepted count is the new baseline: {state}");
}

#[test]
fn bad_guard_keys_name_the_file_the_key_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zkcoord.toml");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("upstream.j2"), TEMPLATE).unwrap();
    for (extra, key, expected) in [
        ("max_shrink = \"150%\"\n", "app[0].render.max_shrink", "expected a percentage from \"0%\" to \"100%\""),
        ("allow_empty = true\nmin_members = 2\n", "app[0].render.min_members", "contradicts allow_empty = true"),
    ] {
        std::fs::write(&path, renderer_config("lb-1", "127.0.0.1:1", 1, extra).replace("{dir}", &dir.path().display().to_string())).unwrap();
        let out = std::process::Command::new(daemon_bin()).arg("--config").arg(&path).arg("--check-config").output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(78), "{text}");
        assert!(text.contains(&path.display().to_string()) && text.contains(key) && text.contains(expected), "{extra}: {text}");
    }
}
