//! Beyond one file: configs larger than a ZooKeeper node (stored as chunks) and whole-directory
//! bundles (switched by an atomic symlink flip). Real ZooKeeper, real zkcoordd and zkcoordctl
//! processes, real hook commands.

mod common;
mod fleet;

use common::*;
use fleet::*;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Polls `f` every 20 ms until it holds; prints the daemon's log and panics after `timeout`.
async fn wait_for(d: &Daemon, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.print_log();
    panic!("timed out after {timeout:?} waiting until {what}");
}

async fn stat_czxid(client: &zookeeper_client::Client, path: &str) -> i64 {
    client.check_stat(path).await.unwrap().unwrap_or_else(|| panic!("{path} does not exist")).czxid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_config_round_trips_through_chunks_and_pruning_removes_them() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    spec.agent_extra = "keep_versions = 2".into();
    let d = spec.start();
    let client = zk_client(&hosts).await;

    let big = noise(5 << 20, 7);
    let sha = sha256_hex(&big);
    let started = Instant::now();
    let v = publish_ok(&hosts, &big).await;
    let published = started.elapsed();
    let landed = wait_on_disk(&d, &big, Duration::from_secs(120)).await + published;
    eprintln!("figures: 5 MiB publish (zkcoordctl, chunked) {published:?}; publish to on-disk {landed:?}");
    assert_eq!(sha256_hex(&on_disk(&d).unwrap()), sha);
    wait_status(&client, "web-1", "ok", Some(&v)).await;

    // The version node holds a small marker; the metadata says chunked; six chunks hold the bytes
    // and every one of them was created before the version.
    let node = get(&client, &format!("/applications/{APP}/{v}")).await.unwrap();
    assert!(node.starts_with(b"zkcoord-chunked-v1 sha256=") && node.len() < 200, "{}", String::from_utf8_lossy(&node));
    let meta: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/zkcoord/meta/{APP}/{v}")).await.unwrap()).unwrap();
    assert_eq!(meta["storage"], "chunked", "{meta}");
    assert_eq!(meta["chunks"], 6, "{meta}");
    assert_eq!(meta["sha256"], sha.as_str(), "{meta}");
    assert_eq!(meta["size"], 5 << 20, "{meta}");
    let blob = format!("/zkcoord/blobs/{APP}/{sha}");
    let chunks = children_sorted(&client, &blob).await;
    assert_eq!(chunks, (0..6).map(|i| format!("chunk-{i:04}")).collect::<Vec<_>>());
    let version_zxid = stat_czxid(&client, &format!("/applications/{APP}/{v}")).await;
    for c in &chunks {
        assert!(stat_czxid(&client, &format!("{blob}/{c}")).await < version_zxid, "{c} was created after the version");
    }

    // `zkcoordctl get` reads it back whole.
    let out = ctl_async(&["--zk", &hosts, "get", APP]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(sha256_hex(&out.stdout), sha, "zkcoordctl get returns the whole content");

    // Publishing the same bytes again makes no new version (dedupe sees through the marker).
    let out = publish(&hosts, &big).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("unchanged, same as {v}"), "{}", output_text(&out));

    // Two more versions with keep_versions = 2 prune the big one, and its chunks with it.
    publish_ok(&hosts, b"small 1\n").await;
    publish_ok(&hosts, b"small 2\n").await;
    wait_on_disk(&d, b"small 2\n", Duration::from_secs(30)).await;
    wait_until("the pruned version's chunks are deleted", Duration::from_secs(30), || async {
        children_sorted(&client, &format!("/zkcoord/blobs/{APP}")).await.is_empty()
    })
    .await;
    assert!(!versions(&client).await.contains(&v), "the big version was pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_over_max_config_size_is_refused_before_zookeeper_naming_the_limit() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ctl.toml");
    std::fs::write(&conf, format!("role = \"agent\"\nmax_config_size = \"2MiB\"\n\n[zookeeper]\nhosts = \"{hosts}\"\n")).unwrap();
    let file = dir.path().join("big.conf");
    std::fs::write(&file, vec![b'x'; (2 << 20) + 1]).unwrap();
    let out = ctl_async(&["--config", conf.to_str().unwrap(), "publish", APP, file.to_str().unwrap()]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(text.contains("the limit is 2097152 bytes (max_config_size = 2 MiB)"), "{text}");

    // Without a config the default, 64 MiB, applies.
    let file = dir.path().join("huge.conf");
    std::fs::write(&file, vec![b'x'; (64 << 20) + 1]).unwrap();
    let out = ctl_async(&["--zk", &hosts, "publish", APP, file.to_str().unwrap()]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(text.contains("max_config_size = 64 MiB"), "{text}");

    // Nothing reached ZooKeeper: no request, no chunk.
    assert!(client.check_stat("/zkcoord/blobs").await.unwrap().is_none());
    assert!(children_sorted(&client, "/zkcoord/requests").await.is_empty());
}

/// Writes a tree whose two files both name `version`, with nested directories and modes.
fn write_tree(root: &Path, version: usize, extra: Option<&[u8]>) {
    if root.exists() {
        std::fs::remove_dir_all(root).unwrap();
    }
    std::fs::create_dir_all(root.join("deep/nested/er")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    let tag = format!("version {version}\n");
    std::fs::write(root.join("one.txt"), format!("{tag}{}", "a".repeat(64 << 10))).unwrap();
    std::fs::write(root.join("deep/nested/er/two.txt"), format!("{tag}{}", "b".repeat(64 << 10))).unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join("private/key.pem"), b"secret\n").unwrap();
    std::fs::set_permissions(root.join("private/key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some(bytes) = extra {
        std::fs::write(root.join("deep/blob.bin"), bytes).unwrap();
    }
}

fn bundle_spec(node: &str, hosts: &str) -> Spec {
    let mut spec = Spec::both(node, hosts);
    spec.dest = Some("{dir}/www/conf.d".into());
    spec
}

fn start_bundle(spec: &Spec) -> Daemon {
    let d = Daemon::prepare(&spec.node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let mut d = d;
    d.set_config(&format!("{}kind = \"bundle\"\nkeep_local = 3\n", spec.toml()));
    d.spawn();
    d
}

fn bundle_dest(d: &Daemon) -> PathBuf {
    d.dir().join("www/conf.d")
}

/// The version tag of a file, or None when it cannot be read whole.
fn tag_of(p: &Path) -> Result<String, std::io::Error> {
    let b = std::fs::read(p)?;
    let text = String::from_utf8_lossy(&b);
    let first = text.lines().next().unwrap_or_default().to_string();
    assert_eq!(b.len(), first.len() + 1 + (64 << 10), "{} was read partially written", p.display());
    Ok(first)
}

async fn publish_dir(hosts: &str, dir: &Path) -> String {
    let out = ctl_async(&["--zk", hosts, "publish", APP, dir.to_str().unwrap(), "--message", "bundle"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.starts_with("published conf-"), "publish failed:\n{}", output_text(&out));
    text.trim().trim_start_matches("published ").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_arrives_intact_and_a_reader_never_sees_two_versions_mixed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let d = start_bundle(&bundle_spec("web-1", &hosts));
    let client = zk_client(&hosts).await;
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("conf.d");
    let dest = bundle_dest(&d);

    write_tree(&tree, 1, None);
    let v1 = publish_dir(&hosts, &tree).await;
    wait_for(&d, "version 1 is on disk", Duration::from_secs(30), || tag_of(&dest.join("one.txt")).is_ok_and(|t| t == "version 1")).await;
    wait_status(&client, "web-1", "ok", Some(&v1)).await;
    assert!(std::fs::symlink_metadata(&dest).unwrap().file_type().is_symlink(), "dest is a symlink");
    assert_eq!(std::fs::read(dest.join("private/key.pem")).unwrap(), b"secret\n");
    assert_eq!(mode(&dest.join("run.sh")), 0o750);
    assert_eq!(mode(&dest.join("private/key.pem")), 0o600);
    assert_eq!(mode(&dest.join("private")), 0o700);
    assert_eq!(tag_of(&dest.join("deep/nested/er/two.txt")).unwrap(), "version 1");
    let meta: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/zkcoord/meta/{APP}/{v1}")).await.unwrap()).unwrap();
    assert_eq!(meta["kind"], "bundle", "{meta}");
    assert_eq!(meta["compression"], "gzip", "{meta}");
    // An unchanged tree is not a new version: the archive is deterministic.
    let out = ctl_async(&["--zk", &hosts, "publish", APP, tree.to_str().unwrap()]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("unchanged, same as {v1}"), "{}", output_text(&out));

    // A reader hammers the tree while versions change under it.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (stop, dest) = (stop.clone(), dest.clone());
        move || {
            let (mut samples, mut pinned, mut mixed, mut missing) = (0u64, 0u64, Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                // Every open through the symlink finds a whole file of some version.
                match (tag_of(&dest.join("one.txt")), tag_of(&dest.join("deep/nested/er/two.txt"))) {
                    (Ok(_), Ok(_)) => samples += 1,
                    _ => missing += 1,
                }
                // A reader that resolves the link once sees one version's tree entirely.
                if let Ok(dir) = std::fs::canonicalize(&dest) {
                    if let (Ok(a), Ok(b)) = (tag_of(&dir.join("one.txt")), tag_of(&dir.join("deep/nested/er/two.txt"))) {
                        pinned += 1;
                        if a != b {
                            mixed.push((a, b));
                        }
                    }
                }
            }
            (samples, pinned, mixed, missing)
        }
    });
    let mut times = Vec::new();
    for n in 2..=7 {
        // The last one carries 3 MB of noise: a large bundle goes through the chunk path.
        let extra = (n == 7).then(|| noise(3_000_000, n as u64));
        write_tree(&tree, n, extra.as_deref());
        let started = Instant::now();
        let v = publish_dir(&hosts, &tree).await;
        let want = format!("version {n}");
        wait_for(&d, &format!("{want} is on disk"), Duration::from_secs(60), || tag_of(&dest.join("one.txt")).is_ok_and(|t| t == want)).await;
        times.push(started.elapsed());
        wait_status(&client, "web-1", "ok", Some(&v)).await;
        if let Some(bytes) = &extra {
            assert_eq!(std::fs::read(dest.join("deep/blob.bin")).unwrap(), *bytes);
            let meta: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/zkcoord/meta/{APP}/{v}")).await.unwrap()).unwrap();
            assert_eq!((meta["kind"].as_str(), meta["storage"].as_str()), (Some("bundle"), Some("chunked")), "{meta}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, pinned, mixed, missing) = reader.join().unwrap();
    eprintln!("figures: bundle publish to on-disk {times:?}; reader: {samples} reads through the link, {pinned} pinned pairs, {missing} failed opens");
    assert!(mixed.is_empty(), "a reader saw two versions mixed: {mixed:?}");
    assert_eq!(missing, 0, "a file vanished from under a reader");
    assert!(samples > 0 && pinned > 0, "the reader ran");

    // The last three version directories stay; older ones are gone.
    let kept: Vec<String> = std::fs::read_dir(d.dir().join("www/.conf.d.versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".sha256"))
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert_eq!(reloads(&d), 7, "one reload per version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_failing_its_check_keeps_the_old_tree_and_a_failed_reload_flips_back() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = bundle_spec("web-1", &hosts);
    spec.check = Some(r#"["sh", "-c", "test -f {src}/one.txt && test ! -e {src}/BROKEN_CHECK"]"#.into());
    spec.reload = Some(r#"["sh", "-c", "echo reload >> {dir}/reloads.log; test ! -e {dir}/www/conf.d/BROKEN_RELOAD"]"#.into());
    let d = start_bundle(&spec);
    let client = zk_client(&hosts).await;
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("conf.d");
    let dest = bundle_dest(&d);
    let on = |n: usize| {
        let dest = dest.clone();
        move || tag_of(&dest.join("one.txt")).is_ok_and(|t| t == format!("version {n}"))
    };

    write_tree(&tree, 1, None);
    let v1 = publish_dir(&hosts, &tree).await;
    wait_for(&d, "version 1 is on disk", Duration::from_secs(30), on(1)).await;
    let link = std::fs::read_link(&dest).unwrap();

    write_tree(&tree, 2, None);
    std::fs::write(tree.join("BROKEN_CHECK"), b"").unwrap();
    let v2 = publish_dir(&hosts, &tree).await;
    let s = wait_status(&client, "web-1", "check-failed", Some(&v2)).await;
    assert_eq!(s["version"], v1.as_str(), "{s}");
    assert!(on(1)(), "the old tree stays");
    assert_eq!(std::fs::read_link(&dest).unwrap(), link, "the link did not move");
    assert!(!d.dir().join(format!("www/.conf.d.versions/{v2}")).exists(), "the refused version's directory is removed");
    assert_eq!(reloads(&d), 1, "no reload after a failed check");

    write_tree(&tree, 3, None);
    std::fs::write(tree.join("BROKEN_RELOAD"), b"").unwrap();
    let v3 = publish_dir(&hosts, &tree).await;
    let s = wait_status(&client, "web-1", "reload-failed", Some(&v3)).await;
    assert_eq!(s["version"], v1.as_str(), "{s}");
    assert!(s["error"].as_str().unwrap().contains("flipped back to the previous version and reloaded"), "{s}");
    assert!(on(1)(), "the old tree is back");
    assert_eq!(std::fs::read_link(&dest).unwrap(), link);
    assert_eq!(reloads(&d), 3, "first apply, failed reload, reload after flipping back");

    // A good version goes through; rollback to version 1 publishes it again, still a bundle.
    write_tree(&tree, 4, None);
    let v4 = publish_dir(&hosts, &tree).await;
    wait_for(&d, "version 4 is on disk", Duration::from_secs(30), on(4)).await;
    wait_status(&client, "web-1", "ok", Some(&v4)).await;
    let out = ctl_async(&["--zk", &hosts, "rollback", APP, "--to", &v1]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    wait_for(&d, "version 1 is back on disk", Duration::from_secs(30), on(1)).await;
    let v5 = versions(&client).await.pop().unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/zkcoord/meta/{APP}/{v5}")).await.unwrap()).unwrap();
    assert_eq!(meta["kind"], "bundle", "{meta}");
    wait_status(&client, "web-1", "ok", Some(&v5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packing_refuses_fifos_and_symlinks_before_zookeeper() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("conf.d");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("ok.conf"), b"x").unwrap();
    // Nothing listens on port 1: a command that tried ZooKeeper would fail differently (69).
    let publish = |dir: PathBuf| async move { ctl_async(&["--zk", "127.0.0.1:1", "publish", APP, dir.to_str().unwrap()]).await };

    nix::unistd::mkfifo(&tree.join("sub/pipe"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let out = publish(tree.clone()).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(text.contains("sub/pipe is a fifo; bundles hold only regular files and directories"), "{text}");
    std::fs::remove_file(tree.join("sub/pipe")).unwrap();

    std::os::unix::fs::symlink("../../../etc/passwd", tree.join("sub/escape")).unwrap();
    let out = publish(tree.clone()).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(text.contains("sub/escape is a symlink (to ../../../etc/passwd)"), "{text}");
}

fn acl_section() -> String {
    fleet::acl_section(&["agent:apw"], &["web1:w1pw"], &["ops:opw"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_a_publisher_uploads_chunks_the_agent_prunes_them_and_others_are_refused() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut daemons = Vec::new();
    for (mut spec, up) in [(Spec::agent("agent-1", &hosts), "agent:apw"), (Spec::app("web-1", &hosts), "web1:w1pw")] {
        spec.agent_extra = "keep_versions = 1".into();
        let mut d = Daemon::prepare(&spec.node);
        std::fs::create_dir_all(d.dir().join("www")).unwrap();
        let auth = secret(d.dir(), "zk-auth", &format!("{up}\n"));
        let toml = spec.toml().replace("start_timeout = \"5s\"\n", &format!("start_timeout = \"5s\"\nauth_file = \"{auth}\"\n")) + &acl_section();
        d.set_config(&toml);
        d.spawn();
        daemons.push(d);
    }
    let web1 = &daemons[1];
    let client = zk_client(&hosts).await;
    wait_until("the agent created the blobs parent", Duration::from_secs(20), || async {
        client.check_stat("/zkcoord/blobs").await.unwrap().is_some()
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let auth = secret(dir.path(), "ops-auth", "ops:opw\n");
    let cfg = dir.path().join("ops.toml");
    std::fs::write(&cfg, format!("role = \"agent\"\n[zookeeper]\nhosts = \"{hosts}\"\nauth_file = \"{auth}\"\n{}", acl_section())).unwrap();
    let big = noise(2_500_000, 3);
    let file = dir.path().join("big.conf");
    std::fs::write(&file, &big).unwrap();
    let out = ctl_async(&["--config", cfg.to_str().unwrap(), "publish", APP, file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(web1, &big, Duration::from_secs(60)).await;
    let blob = format!("/zkcoord/blobs/{APP}/{}", sha256_hex(&big));
    assert_eq!(children_sorted(&client, &blob).await.len(), 3);

    // An app host's identity, or nobody, cannot plant chunks.
    for who in [Some("web1:w1pw"), None] {
        let mut c = zookeeper_client::Client::connector().with_session_timeout(Duration::from_secs(4));
        if let Some(up) = who {
            c = c.with_auth("digest", up.as_bytes());
        }
        let c = c.connect(&hosts).await.unwrap();
        let e = c.create(&format!("{blob}/chunk-0009"), b"evil", &open_acl_persistent()).await.unwrap_err();
        assert_eq!(e, zookeeper_client::Error::NoAuth, "{who:?}");
    }

    // The next version prunes the big one; the agent may delete the publisher's chunks.
    let file = dir.path().join("small.conf");
    std::fs::write(&file, b"small\n").unwrap();
    let out = ctl_async(&["--config", cfg.to_str().unwrap(), "publish", APP, file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(web1, b"small\n", Duration::from_secs(30)).await;
    wait_until("the pruned version's chunks are deleted", Duration::from_secs(30), || async {
        client.check_stat(&blob).await.unwrap().is_none()
    })
    .await;
}
