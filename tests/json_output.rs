//! Machine-readable output for scripts and log shippers: `--json` on publish, rollback,
//! `--wait` and watch, and `log_format = "json"` in the daemon, each read back as JSON.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

fn json_line(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout, nothing else:\n{}", output_text(out));
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_wait_rollback_and_watch_speak_json_and_the_daemon_logs_json_lines() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let spec = Spec::both("web-1", &hosts);
    let d = Daemon::prepare("web-1");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let mut d = d;
    d.set_config(&spec.toml().replacen("[zookeeper]", "log_format = \"json\"\n\n[zookeeper]", 1));
    d.spawn();

    // watch --json follows along, one object per line.
    let mut watch = std::process::Command::new(ctl_bin())
        .args(["--zk", &hosts, "watch", APP, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    let events = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(watch_out).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {line}"));
            let done = v["event"] == "report" && v["result"] == "ok";
            seen.push(v);
            if done && seen.iter().filter(|e| e["event"] == "published").count() >= 1 {
                break;
            }
        }
        seen
    });

    let publish = |bytes: &'static [u8], extra: &'static [&'static str]| {
        let hosts = hosts.clone();
        async move {
            let mut args = vec!["--zk", hosts.as_str(), "publish", APP, "-", "--json"];
            args.extend_from_slice(extra);
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            tokio::task::spawn_blocking(move || ctl_stdin(&args.iter().map(String::as_str).collect::<Vec<_>>(), bytes)).await.unwrap()
        }
    };
    let out = publish(b"worker_processes 1;\n", &["--wait=20s"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let v = json_line(&out);
    assert_eq!(v["app"], APP);
    assert_eq!(v["outcome"], "published");
    let first = v["version"].as_str().unwrap().to_string();
    assert_eq!(v["wait"]["result"], "applied", "{v}");
    assert_eq!(v["wait"]["applied"], 1, "{v}");
    assert_eq!(v["wait"]["hosts"]["web-1"]["state"], "applied", "{v}");

    let out = publish(b"worker_processes 1;\n", &[]).await;
    let v = json_line(&out);
    assert_eq!((v["outcome"].as_str(), v["version"].as_str()), (Some("unchanged"), Some(first.as_str())), "{v}");
    assert!(v.get("wait").is_none(), "{v}");

    let out = publish(b"worker_processes 2;\n", &[]).await;
    assert_eq!(json_line(&out)["outcome"], "published");
    wait_on_disk(&d, b"worker_processes 2;\n", Duration::from_secs(20)).await;
    let out = ctl_async(&["--zk", &hosts, "rollback", APP, "--to", &first, "--json", "--wait=20s"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let v = json_line(&out);
    assert_eq!(v["outcome"], "published", "{v}");
    assert_eq!(v["wait"]["hosts"]["web-1"]["state"], "applied", "{v}");

    let seen = tokio::task::spawn_blocking(move || events.join().unwrap()).await.unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(seen[0]["event"], "watching", "{seen:?}");
    let published = seen.iter().find(|e| e["event"] == "published").unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(published["app"], APP);
    assert!(published["version"].as_str().is_some_and(|v| v.starts_with("conf-")) && published["time"].is_string(), "{published}");
    let report = seen.iter().find(|e| e["event"] == "report" && e["result"] == "ok").unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!((report["host"].as_str(), report["result"].as_str()), (Some("web-1"), Some("ok")), "{report}");

    // The daemon's log (the harness's own marker lines aside): every line one JSON object, the apply among them with its fields.
    assert!(d.term().success());
    let log = d.log();
    let objects: Vec<serde_json::Value> =
        log.lines().filter(|l| !l.starts_with("=== harness")).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))).collect();
    let applied = objects.iter().find(|o| o["message"] == "applied").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(applied["app"], APP);
    assert_eq!(applied["level"], "INFO");
    assert_eq!(applied["syslog_identifier"], "zkcoordd");
    assert!(applied["version"].as_str().is_some_and(|v| v.starts_with("conf-")), "{applied}");
}
