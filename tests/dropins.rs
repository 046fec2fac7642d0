//! Drop-in files under `zkcoord.d/` beside the main config: `--check-config` lists what it
//! read, a conflict names both files, and SIGHUP picks up an app added in a new drop-in.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::process::Command;
use std::time::Duration;

fn check_config(d: &Daemon) -> (i32, String) {
    let out = Command::new(daemon_bin()).arg("--config").arg(d.config_path()).arg("--check-config").output().unwrap();
    (out.status.code().unwrap_or(-1), output_text(&out))
}

#[test]
fn check_config_lists_every_file_it_read_and_a_conflict_names_both() {
    let d = Spec::app("web-1", "127.0.0.1:2181").prepare();
    d.set_config(&Spec::app("web-1", "127.0.0.1:2181").toml());
    let dropins = d.dir().join("zkcoord.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::write(dropins.join("20-extra.toml"), format!("[[app]]\nname = \"extra\"\ndest = \"{}/extra.conf\"\n", d.dir().display())).unwrap();
    std::fs::write(dropins.join("10-svc.toml"), "[[service]]\nname = \"web\"\nport = 8080\n").unwrap();
    std::fs::write(dropins.join("README"), "not read").unwrap();
    let (code, text) = check_config(&d);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 app(s), 1 service(s)"), "{text}");
    let read: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("read ")).collect();
    let expected = [d.config_path(), dropins.join("10-svc.toml"), dropins.join("20-extra.toml")];
    assert_eq!(read, expected.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>(), "{text}");

    std::fs::write(dropins.join("30-clash.toml"), "[zookeeper]\nhosts = \"elsewhere:2181\"\n").unwrap();
    let (code, text) = check_config(&d);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("30-clash.toml") && text.contains(d.config_path().to_str().unwrap()) && text.contains("zookeeper.hosts"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_picks_up_an_app_from_a_new_dropin() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let d = Spec::both("web-1", &hosts).start();
    let v1 = publish_ok(&hosts, b"worker_processes 1;\n").await;
    wait_on_disk(&d, b"worker_processes 1;\n", Duration::from_secs(20)).await;

    let dropins = d.dir().join("zkcoord.d");
    std::fs::create_dir(&dropins).unwrap();
    let extra = d.dir().join("www/extra.conf");
    std::fs::write(dropins.join("50-extra.toml"), format!("[[app]]\nname = \"extra\"\ndest = \"{}\"\n", extra.display())).unwrap();
    d.hup();
    d.wait_for_log("reload applied", Duration::from_secs(20));
    let out = ctl_stdin(&["--zk", &hosts, "publish", "extra", "-"], b"extra 1\n");
    assert!(out.status.success(), "{}", output_text(&out));
    wait_until_sync("the drop-in's app is applied", Duration::from_secs(20), || std::fs::read(&extra).ok().as_deref() == Some(b"extra 1\n"));
    // The main file's app kept its version: nothing was re-applied.
    assert_eq!(on_disk(&d).as_deref(), Some(&b"worker_processes 1;\n"[..]), "{v1}");
    assert_eq!(reloads(&d), 1);
}
