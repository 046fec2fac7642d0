//! The app host's apply pipeline: check, atomic write, reload, rollback, coalescing, restart,
//! and bad disks. Real ZooKeeper, real daemons, real hook processes.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_check_keeps_the_old_file_and_reports_check_failed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    spec.check = Some(r#"["sh", "-c", "grep -q worker_processes {src} || { echo 'nginx: [emerg] unknown directive' >&2; exit 1; }"]"#.into());
    let d = spec.start();
    let client = zk_client(&hosts).await;

    let good = b"worker_processes 2;\n";
    let v1 = publish_ok(&hosts, good).await;
    wait_on_disk(&d, good, Duration::from_secs(20)).await;
    let inode = std::fs::metadata(dest(&d)).unwrap().ino();
    let v2 = publish_ok(&hosts, b"servr bad;\n").await;
    let s = wait_status(&client, "web-1", "check-failed", Some(&v2)).await;
    assert_eq!(s["version"], v1.as_str(), "the host still runs the old version: {s}");
    assert!(s["error"].as_str().unwrap().contains("unknown directive"), "{s}");
    assert_eq!(on_disk(&d).unwrap(), good);
    assert_eq!(std::fs::metadata(dest(&d)).unwrap().ino(), inode, "the old file was not even replaced");
    assert_eq!(reloads(&d), 1, "no reload for a version that failed its check");
    // No temp file left behind in the destination directory.
    let stray: Vec<_> = std::fs::read_dir(d.dir().join("www")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(stray.len(), 1, "{stray:?}");

    // A fixed version goes through.
    let fixed = b"worker_processes 3;\n";
    publish_ok(&hosts, fixed).await;
    wait_on_disk(&d, fixed, Duration::from_secs(20)).await;
    wait_status(&client, "web-1", "ok", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_reload_puts_the_old_file_back_and_reports_reload_failed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    // The "service" refuses to reload a config that says `broken`.
    spec.reload = Some(r#"["sh", "-c", "echo reload >> {dir}/reloads.log; ! grep -q broken {dir}/www/nginx.conf"]"#.into());
    let mut d = spec.start();
    let client = zk_client(&hosts).await;

    let good = b"fine\n";
    let v1 = publish_ok(&hosts, good).await;
    wait_on_disk(&d, good, Duration::from_secs(20)).await;
    let v2 = publish_ok(&hosts, b"broken\n").await;
    let s = wait_status(&client, "web-1", "reload-failed", Some(&v2)).await;
    assert_eq!(s["version"], v1.as_str());
    assert!(s["error"].as_str().unwrap().contains("previous file restored and reloaded"), "{s}");
    assert_eq!(on_disk(&d).unwrap(), good);
    assert_eq!(reloads(&d), 3, "first apply, failed reload, reload after rollback");
    assert!(d.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hook_is_killed_at_its_timeout() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    spec.check = Some(r#"["sh", "-c", "if grep -q hang {src}; then sleep 60; fi"]"#.into());
    spec.hook_timeout = "700ms";
    let d = spec.start();
    let client = zk_client(&hosts).await;

    let good = b"ok\n";
    publish_ok(&hosts, good).await;
    wait_on_disk(&d, good, Duration::from_secs(20)).await;
    let started = Instant::now();
    let v2 = publish_ok(&hosts, b"hang\n").await;
    let s = wait_status(&client, "web-1", "check-failed", Some(&v2)).await;
    let took = started.elapsed();
    assert!(s["error"].as_str().unwrap().contains("timed out after 700ms"), "{s}");
    assert_eq!(on_disk(&d).unwrap(), good);
    eprintln!("figures: publish to check-failed with a 700ms hook timeout: {took:?}");
    // No `sleep 60` survives the process-group kill (a survivor would live for a minute).
    wait_until_sync("the hook's `sleep 60` is gone", Duration::from_secs(2), || {
        let out = std::process::Command::new("pgrep").args(["-x", "-f", "sleep 60"]).output().unwrap();
        out.stdout.is_empty()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50_publishes_ends_with_the_newest_and_far_fewer_reloads() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::app("web-1", &hosts);
    // A reload that takes a moment, like a real one.
    spec.reload = Some(r#"["sh", "-c", "echo reload >> {dir}/reloads.log; sleep 0.05"]"#.into());
    let d = spec.start();
    let client = zk_client(&hosts).await;
    create_all(&client, &format!("/applications/{APP}")).await;
    wait_status(&client, "web-1", "pending", None).await;

    let mut last = Vec::new();
    for i in 0..50 {
        last = format!("version {i}\n").into_bytes();
        create_seq(&client, &format!("/applications/{APP}/conf-"), &last).await;
    }
    wait_on_disk(&d, &last, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(on_disk(&d).unwrap(), last, "the newest stays");
    let n = reloads(&d);
    eprintln!("figures: 50 publishes in a burst -> {n} reloads");
    assert!(n < 25, "bursts must coalesce: {n} reloads for 50 publishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_nothing_new_neither_rewrites_nor_reloads() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut d = Spec::both("web-1", &hosts).start();
    let client = zk_client(&hosts).await;

    let v = b"stable\n";
    publish_ok(&hosts, v).await;
    wait_on_disk(&d, v, Duration::from_secs(20)).await;
    // The status says ok only after the reload ran (the file lands a moment before).
    wait_status(&client, "web-1", "ok", None).await;
    let before = std::fs::metadata(dest(&d)).unwrap();
    assert_eq!(reloads(&d), 1);

    assert!(d.term().success());
    d.spawn();
    d.wait_for_log("ready:", Duration::from_secs(20));
    wait_status(&client, "web-1", "ok", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = std::fs::metadata(dest(&d)).unwrap();
    assert_eq!((after.ino(), after.mtime_nsec()), (before.ino(), before.mtime_nsec()), "the file was rewritten");
    assert_eq!(reloads(&d), 1, "a restart with nothing new must not reload");

    // But a file that drifted on disk is put back, and a new version still applies.
    std::fs::write(dest(&d), b"edited by hand\n").unwrap();
    d.restart();
    wait_on_disk(&d, v, Duration::from_secs(20)).await;
    let v2 = b"newer\n";
    publish_ok(&hosts, v2).await;
    wait_on_disk(&d, v2, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_destination_directory_is_reported_and_retried_without_losing_anything() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    spec.dest = Some("{dir}/missing/nginx.conf".into());
    let mut d = spec.start();
    let client = zk_client(&hosts).await;

    let v = b"content\n";
    let name = publish_ok(&hosts, v).await;
    let s = wait_status(&client, "web-1", "error", Some(&name)).await;
    let err = s["error"].as_str().unwrap();
    assert!(err.contains("missing") && err.contains("does not exist"), "{err}");
    assert!(d.is_running(), "one bad destination must not kill the daemon");
    // Once the operator creates the directory, the retry lands the version.
    std::fs::create_dir_all(d.dir().join("missing")).unwrap();
    wait_until("the retry applies the version", Duration::from_secs(20), || async {
        std::fs::read(d.dir().join("missing/nginx.conf")).ok().as_deref() == Some(&v[..])
    })
    .await;
    wait_status(&client, "web-1", "ok", Some(&name)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_destination_directory_keeps_the_old_file_and_says_why() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: mounting a read-only tmpfs needs root");
        return;
    }
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    spec.dest = Some("{dir}/ro/nginx.conf".into());
    // Declared before the unmount guard, so it is dropped after it.
    let mut d = Daemon::prepare("web-1");
    let ro = d.dir().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&ro).status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(ro.clone());
    std::fs::write(ro.join("nginx.conf"), b"old\n").unwrap();
    let remount = |mode: &str| {
        let s = std::process::Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&ro).status().unwrap();
        assert!(s.success());
    };
    remount("ro");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    d.set_config(&spec.toml());
    d.spawn();
    let client = zk_client(&hosts).await;

    let name = publish_ok(&hosts, b"new\n").await;
    let s = wait_status(&client, "web-1", "error", Some(&name)).await;
    let err = s["error"].as_str().unwrap();
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(std::fs::read(ro.join("nginx.conf")).unwrap(), b"old\n");
    remount("rw");
    wait_until("the retry applies the version", Duration::from_secs(20), || async {
        std::fs::read(ro.join("nginx.conf")).ok().as_deref() == Some(&b"new\n"[..])
    })
    .await;
    d.kill9();
}

/// CPU time (user + system, in clock ticks) of a process so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_uses_almost_no_cpu_in_every_role() {
    // A regression guard: an app-only daemon once spun on a closed channel at 100% of a core.
    // CPU time does not grow with a slow machine, so the bound is safe: 2s idle must cost well
    // under 0.4s of CPU (a spin costs about 2s).
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let daemons = [Spec::app("idle-app", &hosts).start(), Spec::agent("idle-agent", &hosts).start(), Spec::both("idle-both", &hosts).start()];
    for d in &daemons {
        d.wait_for_log("ready:", Duration::from_secs(20));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = daemons.iter().map(|d| cpu_ticks(d.pid())).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (d, b) in daemons.iter().zip(before) {
        let used = cpu_ticks(d.pid()) - b;
        eprintln!("figures: idle {} used {used} clock ticks of CPU in 2s", d.name());
        assert!(used < 40, "{} used {used} ticks in 2s idle: it spins", d.name());
    }
}

/// Every hook is told what it applies: `{src}`, `{dest}` and `{version}` in its argv, and the
/// `ZKCOORD_*` variables in its environment (confd #502), the previous version included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_told_the_version_the_destination_and_what_came_before() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    let log = r#"echo \"$0 $1 $2 $3 app=$ZKCOORD_APP version=$ZKCOORD_VERSION previous=$ZKCOORD_PREVIOUS_VERSION sha=$ZKCOORD_SHA256 dest=$ZKCOORD_DEST rollback=${ZKCOORD_ROLLBACK:-0}\" >> {dir}/hooks.log"#;
    spec.check = Some(format!(r#"["sh", "-c", "{log}", "check", "{{src}}", "{{dest}}", "{{version}}"]"#));
    spec.reload = Some(format!(r#"["sh", "-c", "{log}; ! grep -q broken $ZKCOORD_DEST", "reload", "-", "{{dest}}", "{{version}}"]"#));
    let d = spec.start();
    let client = zk_client(&hosts).await;

    let v1 = publish_ok(&hosts, b"one\n").await;
    wait_status(&client, "web-1", "ok", Some(&v1)).await;
    let v2 = publish_ok(&hosts, b"broken\n").await;
    wait_status(&client, "web-1", "reload-failed", Some(&v2)).await;

    let dest = dest(&d);
    let dest = dest.to_string_lossy();
    let lines: Vec<String> = std::fs::read_to_string(d.dir().join("hooks.log")).unwrap().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5, "check and reload of v1; check, reload and the reload after the rollback of v2: {lines:#?}");
    let sha = |b: &[u8]| { use sha2::Digest; hex::encode(sha2::Sha256::digest(b)) };
    // The check sees the staged candidate beside the destination, never the destination itself.
    let check1: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(check1[0], "check");
    assert!(check1[1].starts_with(&*dest.rsplit_once('/').unwrap().0) && check1[1] != dest, "{}", lines[0]);
    assert_eq!(&check1[2..], [&*dest, v1.as_str(), &format!("app={APP}"), &format!("version={v1}"), "previous=", &format!("sha={}", sha(b"one\n")), &format!("dest={dest}"), "rollback=0"]);
    assert_eq!(lines[1], format!("reload - {dest} {v1} app={APP} version={v1} previous= sha={} dest={dest} rollback=0", sha(b"one\n")));
    assert!(lines[2].starts_with("check ") && lines[2].ends_with(&format!("{dest} {v2} app={APP} version={v2} previous={v1} sha={} dest={dest} rollback=0", sha(b"broken\n"))), "{}", lines[2]);
    assert_eq!(lines[3], format!("reload - {dest} {v2} app={APP} version={v2} previous={v1} sha={} dest={dest} rollback=0", sha(b"broken\n")));
    assert_eq!(lines[4], format!("reload - {dest} {v2} app={APP} version={v2} previous={v1} sha={} dest={dest} rollback=1", sha(b"broken\n")));
}
