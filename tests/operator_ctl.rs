//! The operator's questions, answered by zkcoordctl against a real ZooKeeper and real daemons:
//! did my change reach every host (publish --wait), which host runs what (status), what changed
//! (diff), how do I go back (rollback), what is happening (watch).

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn ctl_run(args: Vec<String>, input: Vec<u8>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl_stdin(&refs, &input)
    })
    .await
    .unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A fleet of three app hosts, the third of which refuses configs mentioning "servr". Sessions
/// of 4s: a host paused for a second is still live (a host whose session expires is no longer
/// waited for, by design).
fn fleet(hosts: &str) -> Vec<Daemon> {
    let with_session = |mut s: Spec| {
        s.session = "4s";
        s
    };
    let mut out = vec![with_session(Spec::both("web-01", hosts)).start(), with_session(Spec::app("web-02", hosts)).start()];
    let mut picky = with_session(Spec::app("web-07", hosts));
    picky.check = Some(r#"["sh", "-c", "if grep -q servr {src}; then echo 'nginx: [emerg] unknown directive \"servr\"' >&2; exit 1; fi"]"#.into());
    out.push(picky.start());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_wait_follows_the_rollout_and_names_the_host_that_failed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let fleet = fleet(&hosts);
    wait_until("three hosts report", Duration::from_secs(20), || async {
        children_sorted(&client, &format!("/zkcoord/status/{APP}")).await.len() == 3
    })
    .await;

    // A good version: every host applies it, exit 0.
    let t = Instant::now();
    let ok = ctl_run(args(&["--zk", &hosts, "publish", APP, "-", "--wait=30s"]), b"server { listen 80; }\n".to_vec()).await;
    let took = t.elapsed();
    assert!(ok.status.success(), "{}", output_text(&ok));
    let out = text(&ok);
    assert!(out.starts_with("published conf-0000000000\n"), "{out}");
    assert!(out.trim_end().ends_with("3/3 applied"), "{out}");
    eprintln!("figures: publish --wait to 3/3 applied: {took:?}");
    for d in &fleet {
        wait_on_disk(d, b"server { listen 80; }\n", Duration::from_secs(5)).await;
    }

    // A version one host's check refuses: the rollout names it and its error, and exits 1.
    let bad = ctl_run(args(&["--zk", &hosts, "publish", APP, "-", "--wait=30s"]), b"servr { listen 81; }\n".to_vec()).await;
    assert_eq!(bad.status.code(), Some(1), "{}", output_text(&bad));
    let out = text(&bad);
    assert!(
        out.lines().last().unwrap() == "2/3 applied, 1 check-failed on web-07: nginx: [emerg] unknown directive \"servr\"",
        "{out}"
    );

    // status: agents, and web-07 marked as behind the newest with its error.
    let st = ctl(&["--zk", &hosts, "status", APP]);
    assert!(st.status.success(), "{}", output_text(&st));
    let s = text(&st);
    assert!(s.contains("AGENTS\n  leader"), "{s}");
    assert!(s.contains(&format!("APP {APP} (newest conf-0000000001)")), "{s}");
    let web07 = s.lines().find(|l| l.trim_start().starts_with("web-07")).unwrap();
    assert!(web07.contains("conf-0000000000") && web07.contains("check-failed") && web07.contains("BEHIND"), "{web07}");
    assert!(web07.contains("unknown directive"), "{web07}");
    assert!(!s.lines().find(|l| l.trim_start().starts_with("web-02")).unwrap().contains("BEHIND"), "{s}");
    let js: serde_json::Value = serde_json::from_slice(&ctl(&["--zk", &hosts, "status", "--json"]).stdout).unwrap();
    let app = js["apps"].as_array().unwrap().iter().find(|a| a["app"] == APP).unwrap();
    let behind: Vec<&str> = app["hosts"].as_array().unwrap().iter().filter(|h| h["behind"] == true).map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(behind, vec!["web-07"]);
    assert_eq!(js["agents"][0]["role"], "leader");
    assert_eq!(js["agents"][0]["node_id"], "web-01");

    // Timing out while a host is paused: exit 75, naming the host still pending.
    fleet[1].signal(nix::sys::signal::Signal::SIGSTOP);
    let slow = ctl_run(args(&["--zk", &hosts, "publish", APP, "-", "--wait=1s"]), b"server { listen 82; }\n".to_vec()).await;
    fleet[1].signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(slow.status.code(), Some(75), "{}", output_text(&slow));
    assert!(String::from_utf8_lossy(&slow.stderr).contains("still waiting for web-02"), "{}", output_text(&slow));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_diff_get_and_rollback_answer_what_changed_and_go_back() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let web = Spec::both("web-01", &hosts).start();
    let v1 = b"user www;\nworker_processes 2;\nevents { }\n";
    let v2 = b"user www;\nworker_processes 4;\nevents { }\nhttp { }\n";
    let n1 = publish_ok(&hosts, v1).await;
    let n2 = publish_ok(&hosts, v2).await;
    wait_on_disk(&web, v2, Duration::from_secs(20)).await;

    // diff, default: the one before the newest against the newest. Byte for byte.
    let d = ctl(&["--zk", &hosts, "diff", APP]);
    assert_eq!(d.status.code(), Some(1), "differences exit 1, as diff(1): {}", output_text(&d));
    let expected = format!(
        "--- {APP} {n1}\n+++ {APP} {n2}\n@@ -1,3 +1,4 @@\n user www;\n-worker_processes 2;\n+worker_processes 4;\n events {{ }}\n+http {{ }}\n"
    );
    assert_eq!(text(&d), expected);
    // Explicit and relative version arguments agree.
    assert_eq!(text(&ctl(&["--zk", &hosts, "diff", APP, "0", "1"])), expected);
    assert_eq!(text(&ctl(&["--zk", &hosts, "diff", APP, "-1", &n2])), expected);
    // Against a local file; identical means exit 0 and no output.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local.conf"), v2).unwrap();
    let same = ctl(&["--zk", &hosts, "diff", APP, "--file", dir.path().join("local.conf").to_str().unwrap()]);
    assert_eq!((same.status.code(), text(&same)), (Some(0), String::new()), "{}", output_text(&same));
    assert_eq!(ctl(&["--zk", &hosts, "get", APP, "--version", "-1"]).stdout, v1);

    // rollback --to -1 publishes v1's bytes as a new version and the host goes back.
    let rb = ctl(&["--zk", &hosts, "rollback", APP, "--to", "-1", "--wait=20s"]);
    assert!(rb.status.success(), "{}", output_text(&rb));
    assert!(text(&rb).starts_with("published conf-0000000002"), "{}", text(&rb));
    wait_on_disk(&web, v1, Duration::from_secs(20)).await;

    // history --json: three versions, the last one saying it is a rollback.
    let h: serde_json::Value = serde_json::from_slice(&ctl(&["--zk", &hosts, "history", APP, "--json"]).stdout).unwrap();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[2]["message"], format!("rollback to {n1}"));
    assert_eq!(h[2]["sha256"], h[0]["sha256"]);
    assert_eq!(h[1]["size"], v2.len());
    // And bad version arguments say what was expected.
    let bad = ctl(&["--zk", &hosts, "get", APP, "--version", "-9"]);
    assert_eq!(bad.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("goes back too far"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_publishes_and_host_reports_as_they_happen() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _web = Spec::both("web-01", &hosts).start();
    let client = zk_client(&hosts).await;
    wait_status(&client, "web-01", "pending", None).await;

    let mut child = Command::new(ctl_bin())
        .args(["--zk", &hosts, "watch", APP])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("watch starts");
    assert!(first.contains("watching"), "{first}");
    let v = publish_ok(&hosts, b"watched\n").await;
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains(&format!("web-01 ok {v}"))) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.iter().any(|l| l.contains(&format!("{APP} published {v} (8 bytes) by")) && l.ends_with(": test")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains(&format!("{APP} web-01 ok {v}"))), "{lines:#?}");
}

/// A ZooKeeper restart under a running `watch`: it says it reconnected, and then still prints
/// the next publish (zookeeper-client does not re-send persistent watches; `watch` sets them
/// again itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_printing_after_zookeeper_restarts() {
    let mut zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _agent = Spec::agent("agent-1", &hosts).start();
    let client = zk_client(&hosts).await;
    wait_until("an agent registered", Duration::from_secs(20), || async { !workers(&client).await.is_empty() }).await;
    drop(client);
    let mut child = Command::new(ctl_bin()).args(["--zk", &hosts, "watch", APP]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = vec![rx.recv_timeout(Duration::from_secs(10)).expect("watch starts")];
    zk.kill(0);
    zk.start(0);
    let wait_for = |lines: &mut Vec<String>, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !lines.iter().any(|l| l.contains(what)) {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                lines.push(l);
            }
        }
        lines.iter().any(|l| l.contains(what))
    };
    assert!(wait_for(&mut lines, "reconnected"), "{lines:#?}");
    let v = publish_ok(&hosts, b"after the restart\n").await;
    let seen = wait_for(&mut lines, &format!("{APP} published {v}"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen, "the publish after the restart was printed: {lines:#?}");
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, needle) in [("bash", "_zkcoordctl()"), ("zsh", "#compdef zkcoordctl"), ("fish", "complete -c zkcoordctl")] {
        let out = ctl(&["completions", shell]);
        assert!(out.status.success(), "{}", output_text(&out));
        let script = text(&out);
        assert!(script.contains(needle) && script.contains("rollback"), "{shell}: {script:.200}");
    }
    let help = ctl(&["publish", "--help"]);
    assert!(text(&help).contains("Examples:") && text(&help).contains("--wait"));
}

/// An agent from before staged rollouts and signed versions: it publishes what it is asked to,
/// ignoring the header fields it does not know (plain ZooKeeper calls, as an old agent makes).
async fn old_agent(client: zookeeper_client::Client, stop: tokio_util::sync::CancellationToken) {
    use zookeeper_client as zk;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for p in ["/zkcoord/requests", "/zkcoord/outcomes", "/zkcoord/meta/nginxconf", "/applications/nginxconf"] {
        create_all(&client, p).await;
    }
    loop {
        let (children, watcher) = client.list_and_watch_children("/zkcoord/requests").await.unwrap();
        for req in children {
            let path = format!("/zkcoord/requests/{req}");
            let Ok((bytes, _)) = client.get_data(&path).await else { continue };
            let (header, body) = zkcoord::model::request::decode(&bytes).unwrap();
            let seq_mode = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
            let (_, seq) = client.create("/applications/nginxconf/conf-", body, &seq_mode).await.unwrap();
            let version = format!("conf-{seq}");
            // What the old agent knew of metadata: no signature, no canary.
            let meta = serde_json::json!({"author": header.author, "sha256": header.sha256, "size": header.size, "time": 0, "origin": header.origin});
            client.create(&format!("/zkcoord/meta/nginxconf/{version}"), &serde_json::to_vec(&meta).unwrap(), &open).await.unwrap();
            let outcome = serde_json::json!({"result": "published", "version": version});
            client.create(&format!("/zkcoord/outcomes/{req}"), &serde_json::to_vec(&outcome).unwrap(), &open).await.unwrap();
            client.delete(&path, None).await.unwrap();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = watcher.changed() => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_drops_canary_or_signature_makes_the_publish_fail_loudly() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let agent = tokio::spawn(old_agent(zk_client(&hosts).await, stop.clone()));
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("k.key").display().to_string();
    assert!(ctl(&["key", "generate", &key]).status.success());

    let staged = ctl_run(args(&["--zk", &hosts, "publish", APP, "-", "--canary", "web-1"]), b"v1\n".to_vec()).await;
    assert_eq!(staged.status.code(), Some(70), "{}", output_text(&staged));
    assert!(output_text(&staged).contains("went to every host, not staged"), "{}", output_text(&staged));

    let signed = ctl_run(args(&["--zk", &hosts, "publish", APP, "-", "--sign-key", &key]), b"v2\n".to_vec()).await;
    assert_eq!(signed.status.code(), Some(70), "{}", output_text(&signed));
    assert!(output_text(&signed).contains("without its signature"), "{}", output_text(&signed));
    stop.cancel();
    agent.await.unwrap();
}
