//! An operator's first week (issue 20), replayed against a real ZooKeeper and the real
//! binaries: an app's node deleted by hand and published again, a chroot nobody created,
//! and the edges of the config file and of `zkcoordctl` that let a mistake through.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::Duration;

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Publishes `bytes` with `--wait=20s`; returns the output.
async fn publish_wait(zk: &str, bytes: &[u8]) -> std::process::Output {
    let (zk, bytes) = (zk.to_string(), bytes.to_vec());
    tokio::task::spawn_blocking(move || ctl_stdin(&["--zk", &zk, "publish", APP, "-", "--wait=20s"], &bytes)).await.unwrap()
}

/// The operator's `deleteall /applications/nginxconf` in zkCli, then publishes again: the new
/// version is published (not "unchanged"), the host installs the new bytes (not refusing them
/// over the old stream's metadata), and `--wait` waits for the new stream's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_deleted_by_hand_and_published_again_reaches_its_hosts_and_wait_tells_the_truth() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _agent = Spec::agent("agent-1", &hosts).start();
    let web = Spec::app("web-1", &hosts).start();
    let client = zk_client(&hosts).await;
    wait_until("an agent registered", Duration::from_secs(20), || async { !workers(&client).await.is_empty() }).await;

    // The old stream: seven versions, so its numbers run past the new stream's first.
    for i in 0..7 {
        publish_ok(&hosts, format!("old {i}\n").as_bytes()).await;
    }
    wait_on_disk(&web, b"old 6\n", Duration::from_secs(20)).await;
    let old = wait_status(&client, "web-1", "ok", Some("conf-0000000006")).await;
    let old_stream = old["stream"].as_i64().expect("the status names its stream");

    // 1. The operator removes the app and publishes again, waiting for the hosts.
    delete_all(&client, &format!("/applications/{APP}")).await;
    let out = publish_wait(&hosts, b"fresh\n").await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(text.starts_with("published conf-0000000000"), "a new stream's first version is published: {}", output_text(&out));
    assert!(text.contains("1/1 applied"), "{}", output_text(&out));
    // `--wait` said applied only once the host really ran it.
    assert_eq!(on_disk(&web).as_deref(), Some(&b"fresh\n"[..]));
    let s = wait_status(&client, "web-1", "ok", Some("conf-0000000000")).await;
    assert_ne!(s["stream"].as_i64(), Some(old_stream), "{s}");
    // The old stream's metadata went; what is left describes the new version.
    let meta = children_sorted(&client, &format!("/zkcoord/meta/{APP}")).await;
    assert_eq!(meta, vec!["conf-0000000000".to_string()]);
    let m: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/zkcoord/meta/{APP}/conf-0000000000")).await.unwrap()).unwrap();
    assert_eq!(m["sha256"], sha256_hex(b"fresh\n"), "{m}");

    // 2. Again, but the operator re-creates the node by hand before publishing (the agent never
    // sees it missing): the stale metadata is replaced at the collision, not kept.
    publish_ok(&hosts, b"second\n").await;
    wait_on_disk(&web, b"second\n", Duration::from_secs(20)).await;
    delete_all(&client, &format!("/applications/{APP}")).await;
    assert!(create(&client, &format!("/applications/{APP}"), b"").await);
    let out = publish_wait(&hosts, b"third\n").await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.starts_with("published conf-0000000000"), "{}", output_text(&out));
    assert!(text.contains("1/1 applied"), "{}", output_text(&out));
    assert_eq!(on_disk(&web).as_deref(), Some(&b"third\n"[..]));
    let m: serde_json::Value = serde_json::from_slice(&get(&client, &format!("/zkcoord/meta/{APP}/conf-0000000000")).await.unwrap()).unwrap();
    assert_eq!(m["sha256"], sha256_hex(b"third\n"), "the metadata is the new version's, not the old conf-0000000000's: {m}");

    // 3. The same with a 1.5 MB config, stored as chunks.
    delete_all(&client, &format!("/applications/{APP}")).await;
    let big = noise(1_500_000, 3);
    let out = publish_wait(&hosts, &big).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.starts_with("published conf-0000000000"), "{}", output_text(&out));
    assert!(text.contains("1/1 applied"), "{}", output_text(&out));
    wait_on_disk(&web, &big, Duration::from_secs(30)).await;
    assert!(!web.log().contains("sha256 mismatch"), "{}", web.log_tail(30));
}

/// `hosts = ".../zkc"` on a fresh ensemble: the agent creates the chroot and everything works
/// inside it; where nobody may create it, the daemon's `/healthz` and STATUS and `zkcoordctl`
/// name it (exit 78), and creating it by hand lets all of them recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chroot_nobody_created_is_created_by_the_agent_or_named_by_everyone() {
    let zk = ZkEnsemble::single();
    let plain = zk.connect_string();
    let hosts = format!("{plain}/zkc");
    let client = zk_client(&plain).await;

    // 1. The agent may create it: a publish inside the chroot lands on the host.
    let _agent = Spec::agent("agent-1", &hosts).start();
    let web = Spec::app("web-1", &hosts).start();
    wait_until("the chroot was created", Duration::from_secs(20), || async { get(&client, "/zkc").await.is_some() }).await;
    publish_ok(&hosts, b"inside\n").await;
    wait_on_disk(&web, b"inside\n", Duration::from_secs(20)).await;
    assert!(get(&client, &format!("/zkc/applications/{APP}")).await.is_some(), "versions live inside the chroot");

    // 2. Nobody may create /other (the root is read-only now): every component names it.
    let other = format!("{plain}/other");
    let read_admin = [zookeeper_client::Acl::new(zookeeper_client::Permission::READ | zookeeper_client::Permission::ADMIN, zookeeper_client::AuthId::anyone())];
    client.set_acl("/", &read_admin, None).await.unwrap();
    let port = free_port();
    let mut d = Daemon::prepare("web-2");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    d.set_config(&format!("{}\n[http]\nlisten = \"127.0.0.1:{port}\"\n", Spec::both("web-2", &other).toml()));
    d.spawn();
    let said = "the chroot /other does not exist; create it or change hosts";
    wait_until_sync("/healthz names the missing chroot", Duration::from_secs(20), || {
        http_get(port, "/healthz").is_some_and(|r| r.status == 503 && r.body.contains(said))
    });
    d.wait_for_log(said, Duration::from_secs(10));
    // STATUS says it too (logged with READY once the start timeout passed).
    d.wait_for_log(&format!("waiting for ZooKeeper at {other}: {said}"), Duration::from_secs(20));
    let out = ctl_async(&["--zk", &other, "history", APP]).await;
    assert_eq!(out.status.code(), Some(78), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(said), "{}", output_text(&out));
    let out = tokio::task::spawn_blocking({
        let other = other.clone();
        move || ctl_stdin(&["--zk", &other, "publish", APP, "-"], b"x\n")
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", output_text(&out));

    // 3. The operator creates it (and opens the root again): the daemon recovers by itself.
    client.set_acl("/", &zookeeper_client::Acls::anyone_all(), None).await.unwrap();
    assert!(create(&client, "/other", b"").await);
    wait_until_sync("/healthz recovers", Duration::from_secs(20), || {
        http_get(port, "/healthz").is_some_and(|r| !r.body.contains("chroot"))
    });
}

/// `--zk ''`, `--zk 127.0.0.1:99999`, `--zk foo`: usage errors (64) at once, not "unreachable"
/// after the connect patience; and an unreachable ensemble is given the full 10 s.
#[test]
fn a_malformed_zk_is_a_usage_error_at_once_and_an_unreachable_one_gets_its_full_patience() {
    for bad in ["", "127.0.0.1:99999", "foo", "127.0.0.1:2181/zkc/"] {
        let started = std::time::Instant::now();
        let out = ctl(&["--zk", bad, "history", APP]);
        assert_eq!(out.status.code(), Some(64), "--zk {bad:?}: {}", output_text(&out));
        assert!(started.elapsed() < Duration::from_secs(3), "--zk {bad:?} took {:?}", started.elapsed());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--zk"), "{}", output_text(&out));
    }
    let port = free_port();
    let started = std::time::Instant::now();
    let out = ctl(&["--zk", &format!("127.0.0.1:{port}"), "history", APP]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(69), "{}", output_text(&out));
    eprintln!("figures: an unreachable ensemble was given up on after {took:?}");
    assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(13), "gave up after {took:?}");
}

/// `zkcoordd --check-config` on `text`: exit code and what it printed.
fn check_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zkcoord.toml");
    std::fs::write(&path, text.replace("{dir}", &dir.path().display().to_string())).unwrap();
    std::fs::create_dir_all(dir.path().join("www/adir")).unwrap();
    let out = std::process::Command::new(daemon_bin()).arg("--config").arg(&path).arg("--check-config").output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const TWO: &str = "role = \"app\"\n[zookeeper]\nhosts = \"127.0.0.1:2181\"\n[[app]]\nname = \"alpha\"\ndest = \"{dir}/www/a.conf\"\n[[app]]\nname = \"beta\"\ndest = \"{dir}/www/b.conf\"\n";

/// What passed `--check-config` and then failed every apply, forever, is refused at load:
/// two apps on one file (or inside one bundle's tree), an owner or group that does not exist,
/// a `dest` that is a directory or ends in `/`.
#[test]
fn check_config_refuses_what_would_fail_every_apply() {
    assert_eq!(check_config(TWO).0, 0, "{}", check_config(TWO).1);
    let cases = [
        (TWO.replace("b.conf", "a.conf"), "app[0] \"alpha\""),
        (TWO.replace("b.conf", "a.conf"), "app[1] \"beta\""),
        (TWO.replace("b.conf", "a.conf"), "the same dest"),
        (TWO.replace("dest = \"{dir}/www/a.conf\"", "dest = \"{dir}/www/site\"\nkind = \"bundle\"").replace("b.conf", "site/b.conf"), "overlapping trees"),
        (TWO.replace("name = \"beta\"", "name = \"beta\"\nowner = \"nosuchuser\""), "app[1].owner"),
        (TWO.replace("name = \"beta\"", "name = \"beta\"\ngroup = \"nosuchgroup\""), "there is no group \"nosuchgroup\""),
        (TWO.replace("b.conf", "adir"), "is an existing directory"),
        (TWO.replace("b.conf", "new/"), "expected an absolute path to a file"),
    ];
    for (text, want) in cases {
        let (code, said) = check_config(&text);
        assert_eq!(code, 78, "{text}\n{said}");
        assert!(said.contains(want), "want {want:?} in:\n{said}");
    }
    // Existing names and ids pass.
    let ok = TWO.replace("name = \"beta\"", "name = \"beta\"\nowner = \"root\"\ngroup = \"0\"");
    assert_eq!(check_config(&ok).0, 0, "{}", check_config(&ok).1);
}

/// `false | zkcoordctl publish app -` used to empty every host's file: empty content is refused
/// (65, nothing reaches ZooKeeper) unless `--allow-empty`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_content_is_refused_unless_allowed() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let _agent = Spec::agent("agent-1", &hosts).start();
    let client = zk_client(&hosts).await;
    let out = tokio::task::spawn_blocking({
        let hosts = hosts.clone();
        move || ctl_stdin(&["--zk", &hosts, "publish", APP, "-"], b"")
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(65), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input was empty"), "{}", output_text(&out));
    assert!(versions(&client).await.is_empty());
    let empty = tempfile::NamedTempFile::new().unwrap();
    let path = empty.path().display().to_string();
    let out = ctl_async(&["--zk", &hosts, "publish", APP, &path]).await;
    assert_eq!(out.status.code(), Some(65), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty; pass --allow-empty"), "{}", output_text(&out));
    let out = ctl_async(&["--zk", &hosts, "publish", APP, &path, "--allow-empty"]).await;
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("published conf-"), "{}", output_text(&out));
}

/// A failure retried with backoff forever (the destination became a directory after start)
/// stops passing for "on its way" after three attempts: `/healthz` says 503 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_retried_forever_shows_in_healthz_after_three_attempts() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let port = free_port();
    let spec = Spec::both("web-1", &hosts);
    let mut d = Daemon::prepare("web-1");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    d.set_config(&format!("{}\n[http]\nlisten = \"127.0.0.1:{port}\"\n", spec.toml()));
    d.spawn();
    wait_until_sync("healthy", Duration::from_secs(20), || http_get(port, "/healthz").is_some_and(|r| r.status == 200));
    std::fs::create_dir_all(dest(&d)).unwrap();
    let v = publish_ok(&hosts, b"x\n").await;
    let started = std::time::Instant::now();
    wait_until_sync("/healthz names the stuck version", Duration::from_secs(30), || {
        http_get(port, "/healthz").is_some_and(|r| r.status == 503 && r.body.contains(&format!("app {APP}: error {v}")))
    });
    eprintln!("figures: a retried failure showed in /healthz after {:?}", started.elapsed());
}

/// `status` of an app nothing knows of is an error, as `history` is; with no agent registered
/// it warns that publishes will time out.
#[test]
fn status_of_an_unknown_app_is_an_error_and_no_agent_is_a_warning() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let out = ctl(&["--zk", &hosts, "status", "nosuchapp"]);
    assert_eq!(out.status.code(), Some(65), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no application \"nosuchapp\""), "{}", output_text(&out));
    let out = ctl(&["--zk", &hosts, "status"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("none registered: a publish now waits for an agent, then times out"), "{}", output_text(&out));
}

/// The `applied` line's `since_publish_ms` is measured when the apply is done (reload
/// included), as `zkcoord_publish_to_apply_seconds` is: with a reload that takes 400 ms it is
/// never less than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applied_line_counts_the_whole_apply_from_the_publish() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    spec.reload = Some(r#"["sh", "-c", "sleep 0.4"]"#.into());
    let d = spec.start();
    publish_ok(&hosts, b"slow reload\n").await;
    wait_on_disk(&d, b"slow reload\n", Duration::from_secs(20)).await;
    d.wait_for_log(" applied ", Duration::from_secs(20));
    let log = d.log();
    let line = log.lines().find(|l| l.contains(" applied ") && l.contains("since_publish_ms=")).expect("an applied line");
    let ms: u64 = line.split("since_publish_ms=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(ms >= 400, "since_publish_ms={ms} is less than the reload took: {line}");
}
