//! Issue 16, part 3 and its "Also": the periodic pass finds what no watch reports (a hand edit,
//! a status node deleted or overwritten), `on_drift` decides what happens to the edit, an
//! absent `mode` keeps an existing file's mode, and `--once` never applies beside a running
//! daemon. Real ZooKeeper, the real binary.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// An app daemon with a 1 s pass and `on_drift` as given (None: the default), the app's `mode`
/// left out when `mode` is false; `seed` is a file (bytes, mode) put at `dest` before the start.
fn start(node: &str, hosts: &str, on_drift: Option<&str>, mode: bool) -> Daemon {
    start_seeded(node, hosts, on_drift, mode, None)
}

fn start_seeded(node: &str, hosts: &str, on_drift: Option<&str>, mode: bool, seed: Option<(&[u8], u32)>) -> Daemon {
    let mut toml = format!("resync_interval = \"1s\"\n{}", Spec::app(node, hosts).toml());
    if let Some(p) = on_drift {
        toml.push_str(&format!("on_drift = \"{p}\"\n"));
    }
    if !mode {
        toml = toml.replace("mode = \"0644\"\n", "");
    }
    let mut d = Daemon::prepare(node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    if let Some((bytes, m)) = seed {
        std::fs::write(dest(&d), bytes).unwrap();
        std::fs::set_permissions(dest(&d), std::fs::Permissions::from_mode(m)).unwrap();
    }
    d.set_config(&toml);
    d.spawn();
    d
}

async fn publish_plain(client: &zookeeper_client::Client, bytes: &[u8]) -> String {
    create_all(client, &format!("/applications/{APP}")).await;
    let v = create_seq(client, &format!("/applications/{APP}/conf-"), bytes).await;
    v.rsplit('/').next().unwrap().to_string()
}

async fn wait_drift(client: &zookeeper_client::Client, node: &str, action: &str) -> serde_json::Value {
    let mut last = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        last = status(client, node).await;
        if last.as_ref().is_some_and(|s| s["drift"]["action"] == action) {
            return last.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{node} never reported drift {action}; last: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_is_reapplied_reported_or_held_as_on_drift_says() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let v1 = publish_plain(&client, b"worker_processes 1;\n").await;
    let reapply = start("reapply", &hosts, None, true);
    let report = start("report", &hosts, Some("report"), true);
    let hold = start("hold", &hosts, Some("hold"), true);
    for d in [&reapply, &report, &hold] {
        wait_on_disk(d, b"worker_processes 1;\n", Duration::from_secs(20)).await;
        wait_status(&client, d.name(), "ok", Some(&v1)).await;
    }
    let edit = b"worker_processes 1;\n# hot-patch\nworker_connections 4096;\n";
    for d in [&reapply, &report, &hold] {
        std::fs::write(dest(d), edit).unwrap();
    }

    // reapply: no watch sees a file; the pass puts the applied version back.
    let took = wait_on_disk(&reapply, b"worker_processes 1;\n", Duration::from_secs(20)).await;
    eprintln!("figures: hand edit re-applied by the 1s pass after {took:?}");
    assert!(reapply.log().contains("destination was edited by hand"), "{}", reapply.log_tail(20));

    // report and hold: left, described in the status node.
    let s = wait_drift(&client, "report", "report").await;
    assert_eq!(s["result"], "ok");
    assert_eq!(s["drift"]["summary"], "+2 -0 lines", "{s}");
    assert_eq!(s["drift"]["sha256"], zkcoord::digest::sha256_hex(edit));
    let s = wait_drift(&client, "hold", "hold").await;
    assert_eq!(s["drift"]["summary"], "+2 -0 lines", "{s}");
    tokio::time::sleep(Duration::from_millis(2500)).await; // two more passes
    assert_eq!(on_disk(&report).unwrap(), edit, "report leaves the edit");
    assert_eq!(on_disk(&hold).unwrap(), edit, "hold leaves the edit");
    assert_eq!(report.log().matches("destination was edited by hand").count(), 1, "one warning per distinct edit");

    // A new version: report applies it, hold does not.
    let v2 = publish_plain(&client, b"worker_processes 2;\n").await;
    wait_on_disk(&report, b"worker_processes 2;\n", Duration::from_secs(20)).await;
    let s = wait_status(&client, "report", "ok", Some(&v2)).await;
    assert!(s.get("drift").is_none(), "{s}");
    let s = wait_status(&client, "hold", "ok", Some(&v2)).await;
    assert_eq!(s["version"], v1.as_str(), "held at the applied version: {s}");
    assert!(s["error"].as_str().unwrap().starts_with("held: "), "{s}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(on_disk(&hold).unwrap(), edit, "hold applies nothing new");
    // The operator sees it in `status`, the hold said once and not as a failed version.
    let out = ctl_async(&["--zk", &hosts, "status", APP]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.trim_start().starts_with("hold ")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("BEHIND") && line.contains("DRIFT held: ") && line.contains("edited by hand (+2 -0 lines"), "{line}");
    assert_eq!(line.matches("held: ").count(), 1, "{line}");
    let out = ctl_async(&["--zk", &hosts, "status", APP, "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let held = json["apps"][0]["hosts"].as_array().unwrap().iter().find(|h| h["host"] == "hold").unwrap().clone();
    assert_eq!(held["drift"]["action"], "hold", "{json}");

    // Restoring the file ends the hold; the newest version follows through the pipeline.
    std::fs::write(dest(&hold), b"worker_processes 1;\n").unwrap();
    wait_on_disk(&hold, b"worker_processes 2;\n", Duration::from_secs(20)).await;
    // The file changes before the status node does: wait for the report of v2 itself, not
    // for the held report that already names v2 as attempted.
    let start = std::time::Instant::now();
    let s = loop {
        let s = wait_status(&client, "hold", "ok", Some(&v2)).await;
        if s["version"] == v2.as_str() || start.elapsed() > Duration::from_secs(20) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(s["version"], v2.as_str(), "{s}");
    assert!(s.get("drift").is_none() && s.get("error").is_none(), "{s}");
    for mut d in [reapply, report, hold] {
        assert!(d.term().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pass_restores_our_status_node_keeps_a_files_mode_and_once_waits_for_the_lock() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let v1 = publish_plain(&client, b"worker_processes 1;\n").await;
    // No `mode` in the entry, and a file made 0600 by hand before the first apply.
    let mut d = start_seeded("web-1", &hosts, None, false, Some((b"old\n", 0o600)));
    wait_on_disk(&d, b"worker_processes 1;\n", Duration::from_secs(20)).await;
    assert_eq!(std::fs::metadata(dest(&d)).unwrap().permissions().mode() & 0o7777, 0o600, "an absent mode keeps the file's");
    wait_status(&client, "web-1", "ok", Some(&v1)).await;

    // Deleted: back (the keeper's watch or its pass); overwritten: only the pass restores it.
    let node = format!("/zkcoord/status/{APP}/web-1");
    client.delete(&node, None).await.unwrap();
    wait_status(&client, "web-1", "ok", Some(&v1)).await;
    client.set_data(&node, b"{\"forged\":true}", None).await.unwrap();
    let started = Instant::now();
    wait_status(&client, "web-1", "ok", Some(&v1)).await;
    eprintln!("figures: overwritten status node restored by the pass after {:?}", started.elapsed());

    // --once beside the daemon: refused with the lock's file and holder, nothing touched.
    std::fs::write(dest(&d), b"hand\n").unwrap();
    let (out, _) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(75), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zkcoord.lock") && err.contains(&format!("pid {}", d.pid())), "{err}");
    // The daemon (reapply) then puts the file back; --once changed nothing meanwhile.
    wait_on_disk(&d, b"worker_processes 1;\n", Duration::from_secs(20)).await;
    assert!(d.term().success());
    let (out, _) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "once the daemon is gone: {}", output_text(&out));
}
