//! Staged rollouts and reload pacing against a real ZooKeeper with real `zkcoordd` and
//! `zkcoordctl` processes: canaries first, promotion after the soak, a failing canary stops
//! everything, promote and abort by hand, a leader killed mid-rollout, and at most one host
//! reloading at a time with `max_parallel_reloads = 1`.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::process::Output;
use std::time::{Duration, Instant};
use zookeeper_client::Client;

const LONG: Duration = Duration::from_secs(30);

/// Publishes `bytes` with extra arguments (`--canary web-1 --soak 1s`).
async fn publish_with(zk: &str, bytes: &[u8], extra: &[&str]) -> Output {
    let mut args: Vec<String> = ["--zk", zk, "publish", APP, "-", "--message", "test"].iter().map(|s| s.to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        ctl_stdin(&refs, &bytes)
    })
    .await
    .unwrap()
}

/// Publishes as a canary rollout and returns the version name.
async fn publish_canary(zk: &str, bytes: &[u8], canary: &str, soak: &str) -> String {
    publish_staged(zk, bytes, &["--canary", canary, "--soak", soak]).await
}

/// Publishes with `args` (a `--canary` among them) and returns the version name.
async fn publish_staged(zk: &str, bytes: &[u8], args: &[&str]) -> String {
    let out = publish_with(zk, bytes, args).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.starts_with("published conf-"), "canary publish failed:\n{}", output_text(&out));
    assert!(text.contains("staged on canaries") || text.contains("staged in waves"), "publish says how the rollout starts:\n{text}");
    text.lines().next().unwrap().trim_start_matches("published ").to_string()
}

/// The rollout record of APP.
async fn rollout(client: &Client) -> Option<serde_json::Value> {
    get(client, &format!("/zkcoord/rollouts/{APP}")).await.and_then(|b| serde_json::from_slice(&b).ok())
}

async fn wait_rollout_state(client: &Client, state: &str) -> serde_json::Value {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < LONG {
        if let Some(r) = rollout(client).await {
            if r["state"] == state {
                return r;
            }
            last = Some(r);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("rollout never became {state}; last: {last:?}");
}

/// Starts one agent and `n` app hosts web-1..web-n (with `check`, if given), all on v1.
/// Starts app hosts web-1..=web-n, each config made by `config` from its Spec, and waits until
/// every one reports.
async fn app_hosts(hosts: &str, n: usize, config: impl Fn(&mut Spec) -> String) -> Vec<Daemon> {
    let apps: Vec<Daemon> = (1..=n)
        .map(|i| {
            let mut s = Spec::app(&format!("web-{i}"), hosts);
            let toml = config(&mut s);
            let mut d = s.prepare();
            d.set_config(&toml);
            d.spawn();
            d
        })
        .collect();
    let client = zk_client(hosts).await;
    wait_until("every app host reports", LONG, || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() == n
    })
    .await;
    apps
}

async fn fleet(hosts: &str, n: usize, check: Option<&str>) -> (Daemon, Vec<Daemon>) {
    let agent = Spec::agent("agent-1", hosts).start();
    let apps = app_hosts(hosts, n, |s| {
        s.check = check.map(String::from);
        s.toml()
    })
    .await;
    let client = zk_client(hosts).await;
    let v1 = publish_ok(hosts, b"v1 good\n").await;
    // The status says ok once the reload ended (the file is in place before that).
    for a in &apps {
        wait_status(&client, a.name(), "ok", Some(&v1)).await;
    }
    (agent, apps)
}

/// The record the leader wrote into `version`'s metadata once it settled.
async fn record_of(client: &Client, version: &str) -> serde_json::Value {
    let path = format!("/zkcoord/meta/{APP}/{version}");
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < LONG {
        last = get(client, &path).await.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(r) = last.as_ref().map(|m| &m["record"]).filter(|r| !r.is_null()) {
            return r.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{version} never settled; its metadata: {last:?}");
}

fn ctl_ok(out: &Output) -> String {
    assert!(out.status.success(), "zkcoordctl failed:\n{}", output_text(out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_gets_the_version_first_and_everyone_else_after_the_soak() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let (_agent, apps) = fleet(&hosts, 3, None).await;

    let t = Instant::now();
    let v2 = publish_canary(&hosts, b"v2 good\n", "web-1", "2s").await;
    let staged = rollout(&client).await.expect("the record exists as soon as the version does");
    assert!(staged["state"] == "canary" || staged["state"] == "soaking", "{staged}");
    assert_eq!(staged["previous"].as_str(), versions(&client).await.first().map(|s| s.as_str()), "{staged}");
    wait_on_disk(&apps[0], b"v2 good\n", LONG).await;
    let canary_at = t.elapsed();
    // Until the record says promoted, no other host may hold v2: read the files first, then the
    // record, so a file that already changed is always explained by a promotion before it.
    let mut samples = 0;
    loop {
        let others: Vec<Option<Vec<u8>>> = apps[1..].iter().map(on_disk).collect();
        let r = rollout(&client).await.expect("the publish made a rollout record");
        if r["state"] == "promoted" {
            break;
        }
        for (i, f) in others.iter().enumerate() {
            assert_eq!(f.as_deref(), Some(&b"v1 good\n"[..]), "web-{} changed before promotion (record {r})", i + 2);
        }
        samples += 1;
        assert!(t.elapsed() < LONG, "never promoted: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted_at = t.elapsed();
    for a in &apps[1..] {
        wait_on_disk(a, b"v2 good\n", LONG).await;
    }
    let all_at = t.elapsed();
    let r = rollout(&client).await.unwrap();
    assert_eq!(r["version"], v2);
    assert_eq!(r["canaries"], serde_json::json!(["web-1"]));
    assert!(r["reason"].as_str().unwrap().contains("promoted by the leader"), "{r}");
    for a in &apps {
        wait_status(&client, a.name(), "ok", Some(&v2)).await;
        assert_eq!(reloads(a), 2, "{}: one reload for v1, one for v2", a.name());
    }
    eprintln!(
        "figures: canary on disk {canary_at:?}; promoted (soak 2s) {promoted_at:?}; all hosts {all_at:?}; {samples} samples saw the others on v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_stops_the_rollout_and_the_other_hosts_never_change() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let check = r#"["sh", "-c", "! grep -q bad {src}"]"#;
    let (_agent, apps) = fleet(&hosts, 3, Some(check)).await;
    let before: Vec<usize> = apps.iter().map(reloads).collect();

    let bad = publish_canary(&hosts, b"v2 bad\n", "web-1", "1s").await;
    wait_status(&client, "web-1", "check-failed", Some(&bad)).await;
    let r = wait_rollout_state(&client, "aborted").await;
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("check-failed on canary web-1"), "{reason}");
    // Long past the soak: nothing moves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rollout(&client).await.unwrap()["state"], "aborted");
    for (a, n) in apps.iter().zip(&before) {
        assert_eq!(on_disk(a).as_deref(), Some(&b"v1 good\n"[..]), "{} keeps v1", a.name());
        assert_eq!(reloads(a), *n, "{} never reloaded", a.name());
    }
    for node in ["web-2", "web-3"] {
        let s = status(&client, node).await.unwrap();
        assert_eq!((s["result"].as_str(), s.get("attempted")), (Some("ok"), None), "{node} never tried {bad}: {s}");
    }
    let shown = ctl_ok(&ctl_async(&["--zk", &hosts, "rollout", APP]).await);
    assert!(shown.contains("aborted") && shown.contains("canary web-1: check-failed"), "{shown}");
    // The record: the canary refused it, the others were held, and the abort says why.
    let rec = record_of(&client, &bad).await;
    assert_eq!((rec["settled"].as_str(), rec["failed"].as_u64(), rec["held"].as_u64(), rec["applied"].as_u64()), (Some("aborted"), Some(1), Some(2), Some(0)), "{rec}");
    assert_eq!(rec["canaries"], serde_json::json!(["web-1"]), "{rec}");
    assert_eq!((rec["failures"][0]["host"].as_str(), rec["failures"][0]["result"].as_str()), (Some("web-1"), Some("check-failed")), "{rec}");
    assert!(rec["decided"].as_str().unwrap().contains("check-failed on canary web-1"), "{rec}");

    // A fixed version published normally supersedes the aborted rollout and reaches everyone.
    publish_ok(&hosts, b"v3 good\n").await;
    for a in &apps {
        wait_on_disk(a, b"v3 good\n", LONG).await;
    }
    assert!(rollout(&client).await.is_none(), "a publish without --canary removes the record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_promote_and_abort_by_hand() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let (_agent, apps) = fleet(&hosts, 3, None).await;

    // A soak of an hour: only a person ends it.
    let v2 = publish_canary(&hosts, b"v2\n", "web-1", "1h").await;
    wait_on_disk(&apps[0], b"v2\n", LONG).await;
    wait_rollout_state(&client, "soaking").await;
    let out = ctl_ok(&ctl_async(&["--zk", &hosts, "promote", APP, "-m", "looks fine"]).await);
    assert!(out.contains("promoted") && out.contains("was soaking"), "{out}");
    for a in &apps {
        wait_on_disk(a, b"v2\n", LONG).await;
    }
    let r = rollout(&client).await.unwrap();
    assert!(r["reason"].as_str().unwrap().contains("looks fine"), "{r}");
    let refused = ctl_async(&["--zk", &hosts, "abort", APP]).await;
    assert_eq!(refused.status.code(), Some(65), "a promoted rollout cannot be aborted:\n{}", output_text(&refused));
    assert!(output_text(&refused).contains("rollback"), "{}", output_text(&refused));

    // Next one with two canaries, aborted by hand: the third host stays where it was.
    publish_canary(&hosts, b"v3\n", "web-2,web-3", "1h").await;
    wait_on_disk(&apps[1], b"v3\n", LONG).await;
    wait_on_disk(&apps[2], b"v3\n", LONG).await;
    wait_status(&client, "web-1", "ok", Some(&v2)).await;
    let reloads_web1 = reloads(&apps[0]);
    let out = ctl_ok(&ctl_async(&["--zk", &hosts, "abort", APP]).await);
    assert!(out.contains("aborted"), "{out}");
    let again = ctl_ok(&ctl_async(&["--zk", &hosts, "abort", APP]).await);
    assert!(again.starts_with("already aborted"), "{again}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rollout(&client).await.unwrap()["state"], "aborted", "the leader leaves an aborted rollout alone");
    assert_eq!(on_disk(&apps[0]).as_deref(), Some(&b"v2\n"[..]));
    assert_eq!(reloads(&apps[0]), reloads_web1);

    // The same bytes published again without --canary are not "unchanged": the aborted rollout
    // held them back from web-1, and a new version supersedes it for everyone.
    let v4 = publish_ok(&hosts, b"v3\n").await;
    wait_on_disk(&apps[0], b"v3\n", LONG).await;
    wait_status(&client, "web-1", "ok", Some(&v4)).await;
    assert!(rollout(&client).await.is_none(), "the new version removed the aborted record");

    let none = ctl_async(&["--zk", &hosts, "promote", "no-such-app"]).await;
    assert_eq!(none.status.code(), Some(65), "{}", output_text(&none));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percentage_of_the_live_hosts_becomes_the_canaries() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let (_agent, apps) = fleet(&hosts, 3, None).await;
    publish_canary(&hosts, b"v2\n", "34%", "1h").await;
    let r = wait_rollout_state(&client, "soaking").await;
    let canaries: Vec<String> = r["canaries"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(canaries.len(), 2, "ceil(34% of 3) = 2: {r}");
    for a in &apps {
        let want: &[u8] = if canaries.iter().any(|c| c == a.name()) { b"v2\n" } else { b"v1 good\n" };
        wait_on_disk(a, want, LONG).await;
    }
    // A named canary that is not a live host is refused, and nothing is published.
    let out = publish_with(&hosts, b"v3\n", &["--canary", "web-9"]).await;
    assert_eq!(out.status.code(), Some(65), "{}", output_text(&out));
    assert!(output_text(&out).contains("web-9"), "{}", output_text(&out));
    assert_eq!(versions(&client).await.len(), 2);
}

async fn leader_finishes_after(signal: &str) {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let (mut a1, apps) = fleet(&hosts, 2, None).await;
    let a2 = Spec::agent("agent-2", &hosts).start();
    wait_until("two agents registered", LONG, || async { workers(&client).await.len() == 2 }).await;
    assert_eq!(leader_pid(&client).await, Some(a1.pid()));

    let v2 = publish_canary(&hosts, b"v2\n", "web-1", "3s").await;
    wait_on_disk(&apps[0], b"v2\n", LONG).await;
    wait_rollout_state(&client, "soaking").await;
    let t = Instant::now();
    match signal {
        "kill" => a1.kill9(),
        _ => assert!(a1.term().success()),
    }
    wait_on_disk(&apps[1], b"v2\n", LONG).await;
    let finished = t.elapsed();
    let r = rollout(&client).await.unwrap();
    assert_eq!((r["state"].as_str(), r["version"].as_str()), (Some("promoted"), Some(v2.as_str())), "{r}");
    assert_eq!(leader_pid(&client).await, Some(a2.pid()));
    // The new leader promoted it. On a loaded machine its connection may drop while the
    // promotion is in flight: the write lands, the reply is lost, and the retry finds the
    // record promoted already, so the line it would log is a supervisor retry instead.
    let log2 = a2.log();
    assert!(
        log2.contains(&format!("rollout {v2} promoted")) || log2.contains("rollout supervisor: ZooKeeper"),
        "the new leader promoted it:\n{}",
        a2.log_tail(30)
    );
    assert!(!a1.log().contains(&format!("rollout {v2} promoted")), "the old leader did not");
    // Killed before the version settled: the new leader follows it and writes its record.
    let rec = record_of(&client, &v2).await;
    assert_eq!((rec["settled"].as_str(), rec["applied"].as_u64(), rec["hosts"].as_u64()), (Some("complete"), Some(2), Some(2)), "{rec}");
    assert!(rec["decided"].as_str().unwrap().starts_with("promoted by the leader"), "{rec}");
    // Its line comes just after the write the record is read from.
    a2.wait_for_log("rollout settled: complete 2/2 ok", LONG);
    eprintln!("figures: {signal} of the leader during a 3s soak to the other host holding v2: {finished:?} (session 1s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_rollout_leaves_it_to_the_next_leader() {
    leader_finishes_after("kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_mid_rollout_leaves_it_to_the_next_leader() {
    leader_finishes_after("term").await;
}

/// Reload intervals `(start_ns, end_ns, host)` as the hooks recorded them.
fn intervals(log: &str) -> Vec<(u128, u128, String)> {
    let mut open = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [what, at, host] = f[..] else { panic!("odd line {line:?}") };
        let at: u128 = at.parse().unwrap();
        match what {
            "start" => assert!(open.insert(host.to_string(), at).is_none(), "{host} started twice: {log}"),
            "end" => out.push((open.remove(host).expect("end without start"), at, host.to_string())),
            _ => panic!("odd line {line:?}"),
        }
    }
    assert!(open.is_empty(), "unfinished reloads: {open:?}");
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_parallel_reloads_1_reloads_of_different_hosts_never_overlap() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let shared = tempfile::tempdir().unwrap();
    let record = shared.path().join("reloads.log");
    let _agent = Spec::agent("agent-1", &hosts).start();
    let n = 4;
    let apps = app_hosts(&hosts, n, |s| {
        s.reload = Some(format!(
            r#"["sh", "-c", "echo start $(date +%s%N) {node} >> {r}; sleep 0.3; echo end $(date +%s%N) {node} >> {r}"]"#,
            node = s.node,
            r = record.display()
        ));
        format!("{}max_parallel_reloads = 1\n", s.toml())
    })
    .await;
    let t = Instant::now();
    for (round, body) in [&b"one\n"[..], b"two\n", b"three\n"].into_iter().enumerate() {
        publish_ok(&hosts, body).await;
        for a in &apps {
            wait_on_disk(a, body, LONG).await;
        }
        eprintln!("figures: round {} on all {n} hosts after {:?}", round + 1, t.elapsed());
    }
    // The file is in place before its reload ends: wait for the last reload to finish.
    let ends = || std::fs::read_to_string(&record).unwrap_or_default().lines().filter(|l| l.starts_with("end ")).count();
    wait_until("every reload finished", LONG, || async { ends() >= 3 * n }).await;
    let log = std::fs::read_to_string(&record).unwrap();
    let iv = intervals(&log);
    assert_eq!(iv.len(), 3 * n, "one reload per host per version:\n{log}");
    let mut gaps = Vec::new();
    for w in iv.windows(2) {
        assert!(w[0].1 <= w[1].0, "{} reloaded {}..{} while {} started at {}:\n{log}", w[0].2, w[0].0, w[0].1, w[1].2, w[1].0);
        gaps.push((w[1].0 - w[0].1) / 1_000_000);
    }
    let busy: u128 = iv.iter().map(|(s, e, _)| (e - s) / 1_000_000).sum();
    let span = (iv.last().unwrap().1 - iv[0].0) / 1_000_000;
    eprintln!("figures: {} reloads of 0.3s, none overlapping; reload time {busy} ms; gaps between consecutive reloads (ms) {gaps:?}; first start to last end {span} ms", iv.len());
    for a in &apps {
        assert!(a.log().contains("reload slot taken"), "{} used the semaphore", a.name());
    }
    assert!(apps.iter().any(|a| a.log().contains("waiting for a reload slot")), "someone had to wait");
    // Leases are gone once done: each is deleted after its reload's last line, so give the
    // last one time to go (a loaded machine took longer than the test's next read).
    wait_until("every reload lease released", LONG, || async { children_sorted(&client, &format!("/zkcoord/reloads/{APP}")).await.is_empty() }).await;
    assert!(children_sorted(&client, &format!("/zkcoord/reloads/{APP}")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splay_spreads_applies_but_a_fresh_host_does_not_wait() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _agent = Spec::agent("agent-1", &hosts).start();
    let n = 3;
    let apps = app_hosts(&hosts, n, |s| format!("{}splay = \"3s\"\n", s.toml())).await;
    let t = Instant::now();
    publish_ok(&hosts, b"one\n").await;
    for a in &apps {
        wait_on_disk(a, b"one\n", LONG).await;
    }
    let first = t.elapsed();
    assert!(apps.iter().all(|a| !a.log().contains("splay:")), "hosts with nothing applied do not wait");

    let t = Instant::now();
    publish_ok(&hosts, b"two\n").await;
    let mut at: Vec<Option<Duration>> = vec![None; n];
    while at.iter().any(Option::is_none) {
        for (i, a) in apps.iter().enumerate() {
            if at[i].is_none() && on_disk(a).as_deref() == Some(&b"two\n"[..]) {
                at[i] = Some(t.elapsed());
            }
        }
        assert!(t.elapsed() < LONG, "not all hosts applied: {at:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = t.elapsed();
    for a in &apps {
        assert!(a.log().contains("splay: applying in"), "{} waited a random delay:\n{}", a.name(), a.log_tail(20));
    }
    eprintln!("figures: fresh hosts, no splay: all applied in {first:?}; splay 3s: all applied in {all:?} (each host from the publish: {at:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_wait_follows_a_staged_rollout_to_its_end() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let check = r#"["sh", "-c", "! grep -q bad {src}"]"#;
    let (_agent, _apps) = fleet(&hosts, 2, Some(check)).await;

    let out = publish_with(&hosts, b"v2 good\n", &["--canary", "web-1", "--soak", "1s", "--wait=60s"]).await;
    let text = ctl_ok(&out);
    assert!(text.contains("soaking") && text.contains("promoted by the leader") && text.contains("2/2 applied"), "{text}");

    let out = publish_with(&hosts, b"v3 bad\n", &["--canary", "web-2", "--soak", "1s", "--wait=60s"]).await;
    assert_eq!(out.status.code(), Some(1), "an aborted rollout fails the wait:\n{}", output_text(&out));
    assert!(output_text(&out).contains("aborted by the leader: check-failed on canary web-2"), "{}", output_text(&out));
}

fn acl_section() -> String {
    fleet::acl_section(&["agent:apw"], &["web1:w1pw", "web2:w2pw"], &["ops:opw"])
}

/// The TOML of `spec` with an auth file, the [acl] section and `app_extra` for the [[app]].
fn secured_toml(d: &Daemon, spec: &Spec, user_password: &str, app_extra: &str) -> String {
    let auth = secret(d.dir(), "zk-auth", &format!("{user_password}\n"));
    let toml = spec.toml().replace("start_timeout = \"5s\"\n", &format!("start_timeout = \"5s\"\nauth_file = \"{auth}\"\n"));
    // [acl] must not land inside [[app]]: put the app's extra keys first, then the section.
    format!("{toml}{app_extra}{}", acl_section())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_rollouts_and_reload_slots_work_and_only_publishers_decide() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut agent = Daemon::prepare("agent-1");
    let agent_spec = Spec::agent("agent-1", &hosts);
    agent.set_config(&secured_toml(&agent, &agent_spec, "agent:apw", ""));
    agent.spawn();
    wait_until("the agent leads", LONG, || async { leader_pid(&client).await == Some(agent.pid()) }).await;
    let apps: Vec<Daemon> = [("web-1", "web1:w1pw"), ("web-2", "web2:w2pw")]
        .into_iter()
        .map(|(node, up)| {
            let spec = Spec::app(node, &hosts);
            let mut d = spec.prepare();
            d.set_config(&secured_toml(&d, &spec, up, "max_parallel_reloads = 1\n"));
            d.spawn();
            d
        })
        .collect();
    wait_until("both hosts report", LONG, || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() == 2
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let auth = secret(dir.path(), "ops-auth", "ops:opw\n");
    let cfg = dir.path().join("ops.toml");
    std::fs::write(&cfg, format!("role = \"agent\"\n[zookeeper]\nhosts = \"{hosts}\"\nauth_file = \"{auth}\"\n{}", acl_section())).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let ops = |args: &[&str], input: &[u8]| {
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        ctl_stdin(&all, input)
    };

    ctl_ok(&ops(&["publish", APP, "-"], b"v1\n"));
    for a in &apps {
        wait_on_disk(a, b"v1\n", LONG).await;
    }
    ctl_ok(&ops(&["publish", APP, "-", "--canary", "web-1", "--soak", "1h"], b"v2\n"));
    wait_on_disk(&apps[0], b"v2\n", LONG).await;
    // Anyone can read the record; no one but agents and publishers may decide it.
    let anonymous = ctl(&["--zk", &hosts, "abort", APP]);
    assert_eq!(anonymous.status.code(), Some(77), "{}", output_text(&anonymous));
    let out = ctl_ok(&ops(&["promote", APP], b""));
    assert!(out.contains("promoted"), "{out}");
    wait_on_disk(&apps[1], b"v2\n", LONG).await;
    for a in &apps {
        assert!(a.log().contains("reload slot taken"), "{}:\n{}", a.name(), a.log_tail(20));
    }
    // Under the policy the leader reads every host's status and writes each version's record.
    let newest = children_sorted(&client, &format!("/applications/{APP}")).await.pop().unwrap();
    let rec = record_of(&client, &newest).await;
    assert_eq!((rec["settled"].as_str(), rec["applied"].as_u64()), (Some("complete"), Some(2)), "{rec}");
    assert!(rec["decided"].as_str().unwrap().contains("promoted by"), "{rec}");
    assert!(!agent.log().contains("rollout record:"), "no look failed:\n{}", agent.log_tail(20));
}

/// Issue 18, gates: after the soak the leader runs the gate the publish named (from its own
/// `[agent] gates`); a failing gate aborts with the gate's words and no other host moves, a
/// passing one promotes, and a gate the leader does not have refuses the publish up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_after_the_soak_decides_between_promotion_and_abort() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut spec = Spec::agent("agent-1", &hosts);
    spec.agent_extra = concat!(
        "gates = { ",
        r#"errors = ["sh", "-c", "echo 'canaries {canaries}: 5xx ratio 0.21 over 0.05' >&2; exit 3"], "#,
        r#"fine = "echo {app} {version} {previous} {canaries} >> {dir}/gate.log""#,
        " }"
    )
    .to_string();
    let agent = spec.start();
    let apps = app_hosts(&hosts, 2, |s| s.toml()).await;
    let v1 = publish_ok(&hosts, b"v1\n").await;
    for a in &apps {
        wait_status(&client, a.name(), "ok", Some(&v1)).await;
    }

    // A gate the leader does not have: refused, nothing published, the hosts stay.
    let out = publish_with(&hosts, b"v2\n", &["--canary", "web-1", "--soak", "1s", "--gate", "nosuch"]).await;
    let text = output_text(&out);
    assert!(!out.status.success() && text.contains("no gate \"nosuch\"") && text.contains("errors, fine"), "{text}");
    assert!(rollout(&client).await.is_none(), "no rollout was started");
    // A command instead of a name is refused by zkcoordctl itself.
    let out = publish_with(&hosts, b"v2\n", &["--canary", "web-1", "--gate", "curl -f http://x"]).await;
    assert!(!out.status.success() && output_text(&out).contains("a gate is named"), "{}", output_text(&out));

    // A failing gate: the canary ran it, the soak passed, the gate said no.
    let out = publish_with(&hosts, b"v2\n", &["--canary", "web-1", "--soak", "1s", "--gate", "errors"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let r = wait_rollout_state(&client, "aborted").await;
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("gate errors") && reason.contains("canaries web-1: 5xx ratio 0.21 over 0.05"), "{reason}");
    assert_eq!(r["gate"], "errors", "{r}");
    assert_eq!(on_disk(&apps[1]).as_deref(), Some(&b"v1\n"[..]), "web-2 never left v1");
    agent.wait_for_log("running the gate before promotion", LONG);

    // A passing gate promotes, and every host gets the version.
    let v3 = publish_staged(&hosts, b"v3\n", &["--canary", "web-1", "--soak", "1s", "--gate", "fine", "--wait=60s"]).await;
    let r = rollout(&client).await.unwrap();
    assert_eq!(r["state"], "promoted", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("gate fine passed"), "{r}");
    for a in &apps {
        wait_on_disk(a, b"v3\n", LONG).await;
    }
    let log = std::fs::read_to_string(agent.dir().join("gate.log")).unwrap();
    assert_eq!(log.trim(), format!("{APP} {v3} {v1} web-1"), "the gate is told the app, the version, what the others run and the canaries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_settles_into_a_record_that_history_shows() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let _agent = Spec::agent("agent-1", &hosts).start();
    // web-3 alone refuses anything that says "strict".
    let apps = app_hosts(&hosts, 3, |s| {
        if s.node == "web-3" {
            s.check = Some(r#"["sh", "-c", "! grep -q strict {src}"]"#.into());
        }
        s.toml()
    })
    .await;

    let v1 = publish_ok(&hosts, b"v1\n").await;
    let rec = record_of(&client, &v1).await;
    assert_eq!((rec["settled"].as_str(), rec["hosts"].as_u64(), rec["applied"].as_u64(), rec["failed"].as_u64()), (Some("complete"), Some(3), Some(3), Some(0)), "{rec}");
    let (first, last, p50, p99) = (rec["first_ms"].as_u64().unwrap(), rec["last_ms"].as_u64().unwrap(), rec["p50_ms"].as_u64().unwrap(), rec["p99_ms"].as_u64().unwrap());
    assert!(first <= p50 && p50 <= p99 && p99 == last && last < 30_000, "{rec}");

    let v2 = publish_ok(&hosts, b"v2 strict\n").await;
    wait_status(&client, "web-3", "check-failed", Some(&v2)).await;
    let rec = record_of(&client, &v2).await;
    assert_eq!((rec["settled"].as_str(), rec["applied"].as_u64(), rec["failed"].as_u64()), (Some("complete"), Some(2), Some(1)), "{rec}");
    assert_eq!(rec["failures"][0]["host"], "web-3", "{rec}");
    assert!(rec["failures"][0]["reason"].as_str().unwrap().contains("check"), "the line that says why: {rec}");

    // Two publishes back to back: the first is replaced before it settles.
    let v3 = publish_ok(&hosts, b"v3\n").await;
    let v4 = publish_ok(&hosts, b"v4\n").await;
    for a in &apps {
        wait_on_disk(a, b"v4\n", LONG).await;
    }
    let rec4 = record_of(&client, &v4).await;
    assert_eq!((rec4["settled"].as_str(), rec4["applied"].as_u64()), (Some("complete"), Some(3)), "{rec4}");
    let rec3 = record_of(&client, &v3).await;
    // Unless this machine took over a second between the two publishes, v3 was superseded.
    assert!(rec3["settled"] == "superseded" && rec3["superseded_by"] == v4.as_str() || rec3["settled"] == "complete", "{rec3}");

    let json: serde_json::Value = serde_json::from_str(&ctl_ok(&ctl_async(&["--zk", &hosts, "history", APP, "--json"]).await)).unwrap();
    let of = |v: &str| json.as_array().unwrap().iter().find(|e| e["version"] == v).cloned().unwrap_or_else(|| panic!("{v} in {json}"));
    assert_eq!(of(&v2)["record"]["failures"][0]["host"], "web-3", "history --json carries the record");
    let text = ctl_ok(&ctl_async(&["--zk", &hosts, "history", APP]).await);
    let line = |v: &str| text.lines().find(|l| l.starts_with(v)).unwrap_or_else(|| panic!("{v} in:\n{text}")).to_string();
    assert!(text.lines().next().unwrap().contains("ROLLOUT"), "{text}");
    assert!(line(&v1).contains("complete 3/3 ok, p99 "), "{text}");
    assert!(line(&v2).contains("complete 2/3 ok, 1 failed"), "{text}");
    eprintln!("figures: v1 from creation to each host: first {first} ms, p50 {p50} ms, p99 {p99} ms; v3 {}", rec3["settled"]);
}

/// Names in the directory of `d`'s destination (a staged file left behind would show here).
fn beside_dest(d: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dest(d).parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_precheck_checks_everywhere_installs_nowhere_and_names_each_failing_host() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let _agent = Spec::agent("agent-1", &hosts).start();
    // web-2 and web-3 refuse anything that says "strict" (their nginx lacks a module, say).
    let apps = app_hosts(&hosts, 3, |s| {
        if s.node != "web-1" {
            s.check = Some(r#"["sh", "-c", "! grep -q strict {src}"]"#.into());
        }
        s.toml()
    })
    .await;
    let v1 = publish_ok(&hosts, b"v1\n").await;
    for a in &apps {
        wait_status(&client, a.name(), "ok", Some(&v1)).await;
    }
    let before: Vec<usize> = apps.iter().map(reloads).collect();
    let files: Vec<Vec<String>> = apps.iter().map(beside_dest).collect();

    let out = publish_with(&hosts, b"v2 strict\n", &["--precheck", "--wait=30s"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "a failed precheck fails the publish:\n{text}");
    assert!(text.contains("prechecking on every live host"), "{text}");
    assert!(text.contains("precheck failed on 2 of 3 hosts"), "{text}");
    for node in ["web-2", "web-3"] {
        assert!(text.contains(&format!("{node}: check-failed: ")), "--wait names {node} and why:\n{text}");
    }
    let v2 = versions(&client).await.pop().unwrap();
    for (i, a) in apps.iter().enumerate() {
        assert_eq!(on_disk(a).as_deref(), Some(&b"v1\n"[..]), "{} installed nothing", a.name());
        assert_eq!(reloads(a), before[i], "{} never reloaded", a.name());
        assert_eq!(beside_dest(a), files[i], "{} left nothing staged", a.name());
        let s = status(&client, a.name()).await.unwrap();
        assert_eq!((s["version"].as_str(), s["result"].as_str(), s["precheck"]["version"].as_str()), (Some(v1.as_str()), Some("ok"), Some(v2.as_str())), "{s}");
        let passed = if a.name() == "web-1" { "ok" } else { "check-failed" };
        assert_eq!(s["precheck"]["result"], passed, "{s}");
    }
    let rec = record_of(&client, &v2).await;
    assert_eq!((rec["settled"].as_str(), rec["failed"].as_u64(), rec["held"].as_u64()), (Some("aborted"), Some(2), Some(1)), "{rec}");
    assert_eq!(rec["failures"][0]["result"], "precheck check-failed", "{rec}");

    // A version every host accepts goes to all of them once all passed.
    let out = publish_with(&hosts, b"v3 fine\n", &["--precheck", "--wait=30s"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    for a in &apps {
        wait_on_disk(a, b"v3 fine\n", LONG).await;
    }
    let r = rollout(&client).await.unwrap();
    assert_eq!((r["state"].as_str(), r["reason"].as_str()), (Some("promoted"), Some("promoted by the leader: precheck passed on 3 hosts")), "{r}");

    // With canaries: the precheck first, then the canary, then the soak.
    let out = publish_with(&hosts, b"v4 fine\n", &["--precheck", "--canary", "web-1", "--soak", "1s", "--wait=30s"]).await;
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("precheck:") && text.contains("then canaries web-1 (soak 1s)"), "{text}");
    assert!(text.contains(" soaking: ") && text.contains(" promoted: "), "--wait shows each state:\n{text}");
    for a in &apps {
        wait_on_disk(a, b"v4 fine\n", LONG).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_precheck_leaves_it_to_the_next_and_hosts_that_join_or_die_are_counted() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut a1 = Spec::agent("agent-1", &hosts).start();
    wait_until("agent-1 leads", LONG, || async { leader_pid(&client).await == Some(a1.pid()) }).await;
    let a2 = Spec::agent("agent-2", &hosts).start();
    // Checking a "slow" version takes each host 3 seconds.
    let slow = |s: &mut Spec| {
        s.check = Some(r#"["sh", "-c", "if grep -q slow {src}; then sleep 3; fi"]"#.into());
        s.toml()
    };
    let mut apps = app_hosts(&hosts, 2, slow).await;
    let v1 = publish_ok(&hosts, b"v1\n").await;
    for a in &apps {
        wait_status(&client, a.name(), "ok", Some(&v1)).await;
    }
    wait_until("two agents registered", LONG, || async { workers(&client).await.len() == 2 }).await;

    let out = publish_with(&hosts, b"v2 slow\n", &["--precheck"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let v2 = versions(&client).await.pop().unwrap();
    // On the wire a canary rollout with no canaries, so that older hosts hold back too.
    let r = rollout(&client).await.unwrap();
    assert_eq!((r["state"].as_str(), r["precheck"].as_bool(), r["canaries"].clone()), (Some("canary"), Some(true), serde_json::json!([])), "{r}");
    // A host joins mid-precheck, one dies, and so does the leader.
    let mut s3 = Spec::app("web-3", &hosts);
    let toml = slow(&mut s3);
    let mut web3 = s3.prepare();
    web3.set_config(&toml);
    web3.spawn();
    wait_until("web-3 reports", LONG, || async { status(&client, "web-3").await.is_some() }).await;
    apps[1].kill9();
    a1.kill9();
    let r = wait_rollout_state(&client, "promoted").await;
    assert_eq!(r["reason"], "promoted by the leader: precheck passed on 2 hosts", "web-1 and the newcomer web-3; not the dead web-2: {r}");
    for a in [&apps[0], &web3] {
        wait_on_disk(a, b"v2 slow\n", LONG).await;
        let s = status(&client, a.name()).await.unwrap();
        assert_eq!((s["precheck"]["version"].as_str(), s["precheck"]["result"].as_str()), (Some(v2.as_str()), Some("ok")), "{s}");
    }
    a2.wait_for_log(&format!("rollout {v2} promoted"), LONG);
    assert!(web3.log().contains("precheck passed; nothing installed"), "{}", web3.log_tail(20));
}

/// How many of `apps` hold `bytes`.
fn holding(apps: &[Daemon], bytes: &[u8]) -> usize {
    apps.iter().filter(|a| on_disk(a).as_deref() == Some(bytes)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_go_to_one_host_then_half_then_all_and_survive_a_leader_killed_mid_wave() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut a1 = Spec::agent("agent-1", &hosts).start();
    wait_until("agent-1 leads", LONG, || async { leader_pid(&client).await == Some(a1.pid()) }).await;
    let a2 = Spec::agent("agent-2", &hosts).start();
    let apps = app_hosts(&hosts, 4, |s| s.toml()).await;
    let v1 = publish_ok(&hosts, b"v1\n").await;
    for a in &apps {
        wait_status(&client, a.name(), "ok", Some(&v1)).await;
    }
    wait_until("two agents registered", LONG, || async { workers(&client).await.len() == 2 }).await;

    let zk_hosts = hosts.clone();
    let publish = tokio::spawn(async move { publish_with(&zk_hosts, b"v2\n", &["--waves", "1,50%,*", "--soak", "2s", "--wait=60s"]).await });
    // Each wave's hosts at most (1, then 2 of 4), sampled: the files first, then the record
    // (which can only have moved on meanwhile).
    let allowed = [1, 2, 4];
    let (mut seen, mut killed, mut samples) = (Vec::new(), false, 0);
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < LONG, "the waves never finished; seen {seen:?}");
        let n = holding(&apps, b"v2\n");
        let Some(r) = rollout(&client).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let wave = r["wave"].as_u64().unwrap_or(0) as usize;
        let state = r["state"].as_str().unwrap().to_string();
        if state == "promoted" {
            break;
        }
        assert!(n <= allowed[wave], "{n} hosts hold v2 in wave {} ({r})", wave + 1);
        samples += 1;
        if seen.last() != Some(&(wave, state.clone())) {
            seen.push((wave, state.clone()));
        }
        if wave == 1 && state == "soaking" && !killed {
            a1.kill9();
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(killed, "the leader was killed in wave 2's soak: {seen:?}");
    for a in &apps {
        wait_on_disk(a, b"v2\n", LONG).await;
    }
    let out = publish.await.unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    for line in ["wave 1 of 3 (1): ", "wave 2 of 3 (50%): ", "wave 3 of 3 (*): every host"] {
        assert!(text.contains(line), "--wait shows {line:?}:\n{text}");
    }
    // The new leader finished wave 2 (its line comes just after the write).
    a2.wait_for_log("wave 2 of 3 (50%) done", LONG);
    eprintln!("figures: waves 1,50%,* with a 2s soak: states {seen:?} over {samples} samples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_by_label_stop_at_a_failing_host_and_promote_ends_the_current_wave() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let _agent = Spec::agent("agent-1", &hosts).start();
    // web-1 in fra, web-2 in ams (whose check refuses "bad"), web-3 in ber.
    let apps = app_hosts(&hosts, 3, |s| {
        let dc = match s.node.as_str() {
            "web-1" => "fra",
            "web-2" => "ams",
            _ => "ber",
        };
        if dc == "ams" {
            s.check = Some(r#"["sh", "-c", "! grep -q bad {src}"]"#.into());
        }
        format!("labels = {{ dc = \"{dc}\" }}\n{}", s.toml())
    })
    .await;
    let v1 = publish_ok(&hosts, b"v1\n").await;
    for a in &apps {
        wait_status(&client, a.name(), "ok", Some(&v1)).await;
    }
    assert_eq!(status(&client, "web-2").await.unwrap()["labels"]["dc"], "ams", "the labels are in the status");

    // An hour's soak: only promote moves it, one wave at a time.
    let out = publish_with(&hosts, b"v2\n", &["--waves", "dc=fra,dc=ams,*", "--soak", "1h"]).await;
    let text = ctl_ok(&out);
    assert!(text.contains("staged in waves dc=fra,dc=ams,*: wave 1 on web-1 (soak 1h each)"), "{text}");
    let v2 = text.lines().next().unwrap().trim_start_matches("published ").to_string();
    wait_on_disk(&apps[0], b"v2\n", LONG).await;
    // The file is in place before the status says so.
    wait_status(&client, "web-1", "ok", Some(&v2)).await;
    let shown = ctl_ok(&ctl_async(&["--zk", &hosts, "rollout", APP]).await);
    assert!(shown.contains("waves: [dc=fra] → dc=ams → *") && shown.contains("canary web-1: ok"), "{shown}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(holding(&apps, b"v2\n"), 1, "only fra");
    ctl_ok(&ctl_async(&["--zk", &hosts, "promote", APP, "-m", "fra looks fine"]).await);
    wait_on_disk(&apps[1], b"v2\n", LONG).await;
    let r = wait_rollout_state(&client, "canary").await;
    assert_eq!((r["wave"].as_u64(), r["canaries"].clone()), (Some(1), serde_json::json!(["web-1", "web-2"])), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("promoted by") && r["reason"].as_str().unwrap().contains("fra looks fine"), "{r}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(on_disk(&apps[2]).as_deref(), Some(&b"v1\n"[..]), "ber waits for the last wave");
    ctl_ok(&ctl_async(&["--zk", &hosts, "promote", APP]).await);
    wait_on_disk(&apps[2], b"v2\n", LONG).await;
    assert_eq!(wait_rollout_state(&client, "promoted").await["version"], v2.as_str());

    // A host of the second wave refuses the version: the rollout stops there.
    let out = publish_with(&hosts, b"v3 bad\n", &["--waves", "dc=fra,dc=ams,*", "--soak", "1s", "--wait=30s"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("check-failed on canary web-2"), "{text}");
    let r = rollout(&client).await.unwrap();
    assert_eq!((r["state"].as_str(), r["wave"].as_u64()), (Some("aborted"), Some(1)), "{r}");
    assert_eq!(on_disk(&apps[0]).as_deref(), Some(&b"v3 bad\n"[..]), "fra keeps it");
    assert_eq!(on_disk(&apps[1]).as_deref(), Some(&b"v2\n"[..]), "ams refused it");
    assert_eq!(on_disk(&apps[2]).as_deref(), Some(&b"v2\n"[..]), "ber never got it");
    let v3 = versions(&client).await.pop().unwrap();
    let rec = record_of(&client, &v3).await;
    assert_eq!((rec["settled"].as_str(), rec["wave"].as_u64(), rec["failed"].as_u64(), rec["held"].as_u64()), (Some("aborted"), Some(2), Some(1), Some(1)), "{rec}");
    assert_eq!(rec["waves"], serde_json::json!(["dc=fra", "dc=ams", "*"]), "{rec}");
}
