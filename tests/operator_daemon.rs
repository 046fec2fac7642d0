//! What an operator runs besides the daemon itself: `zkcoordd --once` (apply the newest and
//! exit), `zkcoordd --dry-run` (say what would happen, change nothing), and the daemon's HTTP
//! listener (`/healthz`, `/metrics`). Real ZooKeeper, the real binaries, no mocks.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

const CHECK_WORKER_PROCESSES: &str =
    r#"["sh", "-c", "grep -q worker_processes {src} || { echo 'nginx: [emerg] unknown directive' >&2; exit 1; }"]"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (inode, mtime in ns) of a file: a rewrite changes one or the other.
fn identity(path: &std::path::Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.mtime(), m.mtime_nsec())
}

/// The server's count of znodes (`mntr`), to prove a run created none.
fn znode_count(zk: &ZkEnsemble) -> u64 {
    let mntr = zk.four_letter(0, "mntr").expect("mntr answers");
    mntr.lines()
        .find_map(|l| l.strip_prefix("zk_znode_count"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no zk_znode_count in {mntr}"))
}

/// Session ids the server tracks (`dump`), to prove a run closed its session on exit rather
/// than leaving it to expire.
fn sessions(zk: &ZkEnsemble) -> usize {
    let dump = zk.four_letter(0, "dump").expect("dump answers");
    dump.lines().filter(|l| l.trim_start().starts_with("0x")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_applies_the_newest_then_does_nothing_and_a_daemon_start_does_not_reapply() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut spec = Spec::app("web-1", &hosts);
    spec.session = "4s"; // long enough that a session left open would still show in `dump`
    let mut d = spec.prepare();
    create_all(&client, &format!("/applications/{APP}")).await;
    create_seq(&client, &format!("/applications/{APP}/conf-"), b"worker_processes 1;\n").await;
    let newest = create_seq(&client, &format!("/applications/{APP}/conf-"), b"worker_processes 2;\n").await;
    let newest = newest.rsplit('/').next().unwrap().to_string();
    let sessions_before = sessions(&zk);
    assert!(sessions_before >= 1, "dump lists the test client's own session");

    let (out, took) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    eprintln!("figures: zkcoordd --once applying one version: {took:?}");
    assert_eq!(text(&out.stdout), format!("{APP}: applied {newest} to {}\n", dest(&d).display()));
    assert_eq!(on_disk(&d).unwrap(), b"worker_processes 2;\n");
    assert_eq!(reloads(&d), 1);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(state_file(&d)).unwrap()).unwrap();
    assert_eq!(state["version"], newest.as_str());
    // No status node, no election node, and the session was closed, not left to expire.
    assert!(get(&client, &format!("/zkcoord/status/{APP}/web-1")).await.is_none());
    assert!(workers(&client).await.is_empty());
    assert_eq!(sessions(&zk), sessions_before, "the --once session is still open on the server");

    // A second run finds it up to date: no rewrite, no reload.
    let before = identity(&dest(&d));
    let state_before = std::fs::read(state_file(&d)).unwrap();
    let (out, took) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    eprintln!("figures: zkcoordd --once with nothing to do: {took:?}");
    assert_eq!(text(&out.stdout), format!("{APP}: up to date at {newest}\n"));
    assert_eq!(identity(&dest(&d)), before, "the file was rewritten");
    assert_eq!(reloads(&d), 1, "a --once with nothing new must not reload");
    assert_eq!(std::fs::read(state_file(&d)).unwrap(), state_before);

    // The daemon reads the same state file: starting it applies nothing either.
    d.spawn();
    d.wait_for_log("ready:", Duration::from_secs(20));
    wait_status(&client, "web-1", "ok", Some(&newest)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(identity(&dest(&d)), before, "the daemon rewrote what --once applied");
    assert_eq!(reloads(&d), 1, "the daemon reloaded what --once applied");
    assert!(d.term().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_a_failing_check_exits_1_naming_the_app_and_keeps_the_old_file() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut spec = Spec::app("web-1", &hosts);
    spec.check = Some(CHECK_WORKER_PROCESSES.into());
    let d = spec.prepare();
    create_all(&client, &format!("/applications/{APP}")).await;
    let good = create_seq(&client, &format!("/applications/{APP}/conf-"), b"worker_processes 2;\n").await;
    let good = good.rsplit('/').next().unwrap().to_string();
    let (out, _) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let before = identity(&dest(&d));

    let bad = create_seq(&client, &format!("/applications/{APP}/conf-"), b"servr bad;\n").await;
    let bad = bad.rsplit('/').next().unwrap().to_string();
    let (out, _) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line per failing app: {stderr}");
    let line = stderr.trim_end();
    assert!(
        line.starts_with(&format!("zkcoordd: {APP}: check-failed {bad}: check `sh -c")) && line.contains("unknown directive"),
        "{line}"
    );
    assert!(text(&out.stdout).is_empty(), "{}", output_text(&out));
    assert_eq!(on_disk(&d).unwrap(), b"worker_processes 2;\n");
    assert_eq!(identity(&dest(&d)), before, "the old file was replaced");
    assert_eq!(reloads(&d), 1, "no reload for a version that failed its check");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(state_file(&d)).unwrap()).unwrap();
    assert_eq!(state["version"], good.as_str(), "the state still names the good version");
    let stray: Vec<_> = std::fs::read_dir(d.dir().join("www")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(stray.len(), 1, "a staged file was left behind: {stray:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_zookeeper_down_exits_69_within_15s() {
    let mut zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    zk.kill(0);
    let d = Spec::app("web-1", &hosts).prepare();
    let (out, took) = zkcoordd_oneshot(&d, &["--once"]).await;
    eprintln!("figures: zkcoordd --once giving up on a ZooKeeper that is down: {took:?}");
    assert_eq!(out.status.code(), Some(69), "{}", output_text(&out));
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(text(&out.stderr).contains(&format!("cannot reach ZooKeeper at {hosts} within 10s")), "{}", output_text(&out));
    assert!(on_disk(&d).is_none());
    assert!(!state_file(&d).exists());

    // Same for --dry-run.
    let (out, _) = zkcoordd_oneshot(&d, &["--dry-run"]).await;
    assert_eq!(out.status.code(), Some(69), "{}", output_text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_diff_and_the_commands_and_changes_nothing() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut spec = Spec::app("web-1", &hosts);
    spec.check = Some(r#"["sh", "-c", "grep -q worker {src}"]"#.into());
    let d = spec.prepare();
    let dest = dest(&d);
    create_all(&client, &format!("/applications/{APP}")).await;
    let v1 = create_seq(&client, &format!("/applications/{APP}/conf-"), b"worker_processes 1;\nevents {}\nhttp {}\n").await;
    let v1 = v1.rsplit('/').next().unwrap().to_string();
    let (out, _) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let new = b"worker_processes 4;\nevents {}\nhttp {}\ninclude conf.d/*.conf;\n";
    let v2 = create_seq(&client, &format!("/applications/{APP}/conf-"), new).await;
    let v2 = v2.rsplit('/').next().unwrap().to_string();

    let file_before = identity(&dest);
    let state_before = (std::fs::read(state_file(&d)).unwrap(), identity(&state_file(&d)));
    let znodes_before = znode_count(&zk);
    let reloads_before = reloads(&d);

    let (out, took) = zkcoordd_oneshot(&d, &["--dry-run"]).await;
    eprintln!("figures: zkcoordd --dry-run of one app: {took:?}");
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let expected = format!(
        "{APP}: would apply {v2} ({} bytes) to {dest} (applied here: {v1})\n\
         --- {dest}\n\
         +++ {APP} {v2}\n\
         @@ -1,3 +1,4 @@\n\
         -worker_processes 1;\n\
         +worker_processes 4;\n\
         \x20events {{}}\n\
         \x20http {{}}\n\
         +include conf.d/*.conf;\n\
         {APP}: would run check: sh -c 'grep -q worker <staged file>'\n\
         {APP}: would run reload: sh -c 'echo reload >> {dir}/reloads.log'\n",
        new.len(),
        dest = dest.display(),
        dir = d.dir().display(),
    );
    assert_eq!(text(&out.stdout), expected);

    // Nothing changed: file, state, znodes, reloads, no staged file left.
    assert_eq!(identity(&dest), file_before);
    assert_eq!((std::fs::read(state_file(&d)).unwrap(), identity(&state_file(&d))), state_before);
    assert_eq!(znode_count(&zk), znodes_before, "--dry-run created or deleted znodes");
    assert_eq!(reloads(&d), reloads_before);
    let stray: Vec<_> = std::fs::read_dir(d.dir().join("www")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(stray.len(), 1, "{stray:?}");

    // Once applied, the dry run says so.
    let (out, _) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let (out, _) = zkcoordd_oneshot(&d, &["--dry-run"]).await;
    assert_eq!(text(&out.stdout), format!("{APP}: up to date at {v2}; nothing would happen\n"));
}
