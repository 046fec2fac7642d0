//! Bad input gets a clear error and loses nothing: broken configs, oversized publishes, and a
//! ZooKeeper that is not there.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::process::Command;
use std::time::Duration;

fn check_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zkcoord.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(daemon_bin()).arg("--config").arg(&path).arg("--check-config").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text.replace(&path.display().to_string(), "<FILE>"))
}

const GOOD: &str = "role = \"app\"\n[zookeeper]\nhosts = \"127.0.0.1:2181\"\n[[app]]\nname = \"a\"\ndest = \"/tmp/a.conf\"\n";

#[test]
fn broken_configs_are_refused_naming_the_file_the_key_and_what_was_expected() {
    assert_eq!(check_config(GOOD).0, 0);
    let cases = [
        ("role = \"app\n", "TOML parse error at line 1"),
        (&GOOD.replace("[zookeeper]", "colour = 1\n[zookeeper]"), "unknown field `colour`"),
        (&GOOD.replace("hosts =", "sesion_timeout = \"1s\"\nhosts ="), "key `zookeeper.sesion_timeout`"),
        (&GOOD.replace("role = \"app\"", "role = \"master\""), "key `role`"),
        (&GOOD.replace("dest =", "mode = \"rwx\"\ndest ="), "octal string like \"0644\""),
        (&GOOD.replace("dest = \"/tmp/a.conf\"", "dest = \"relative.conf\""), "key `app[0].dest`: expected an absolute path"),
        (&GOOD.replace("hosts =", "session_timeout = \"soon\"\nhosts ="), "key `zookeeper.session_timeout`"),
        ("role = \"app\"\n[zookeeper]\nhosts = \"h:1\"\n", "needs at least one [[app]] entry"),
    ];
    for (text, expected) in cases {
        let (code, out) = check_config(text);
        assert_eq!(code, 78, "config exit code for {text:?}: {out}");
        assert!(out.contains("<FILE>"), "names the file: {out}");
        assert!(out.contains(expected), "expected {expected:?} in: {out}");
    }
    // The daemon itself refuses to start on a bad file, with the same message.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zkcoord.toml");
    std::fs::write(&path, "role = \"app\"\n").unwrap();
    let out = Command::new(daemon_bin()).arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zookeeper"), "{}", String::from_utf8_lossy(&out.stderr));
    // A missing file says so.
    let out = Command::new(daemon_bin()).args(["--config", "/nonexistent/zkcoord.toml", "--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/zkcoord.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_publish_is_refused_before_it_reaches_zookeeper_and_the_largest_allowed_one_lands() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let web = Spec::both("web-1", &hosts).start();
    let client = zk_client(&hosts).await;
    publish_ok(&hosts, b"small\n").await;

    // Over max_config_size (default 64 MiB): refused, naming the limit, before ZooKeeper.
    let big = vec![b'x'; (64 << 20) + 1];
    let out = publish(&hosts, &big).await;
    assert_eq!(out.status.code(), Some(65), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limit is 67108864 bytes (max_config_size = 64 MiB)"), "{err}");
    // Read from stdin only up to one byte past the limit, so its size is not claimed.
    assert!(err.contains("config is over 67108864 bytes"), "{err}");
    // A file's real size is known and said.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("huge.conf");
    std::fs::write(&file, vec![b'x'; 65 << 20]).unwrap();
    let out = ctl(&["--zk", &hosts, "publish", APP, file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config is 68157440 bytes; the limit is 67108864 bytes"), "{err}");
    assert!(children_sorted(&client, "/zkcoord/requests").await.is_empty(), "nothing was queued");
    assert!(children_sorted(&client, "/zkcoord/blobs").await.is_empty(), "no chunk was written");
    assert_eq!(versions(&client).await.len(), 1, "nothing was published");

    // Exactly at one node's limit: stored inline, accepted end to end, byte for byte.
    let mut limit = vec![b'y'; 1_000_000];
    limit[999_999] = b'\n';
    publish_ok(&hosts, &limit).await;
    wait_on_disk(&web, &limit, Duration::from_secs(30)).await;
    // Beyond it (1,100 KiB made the server drop the connection as one node): stored as chunks.
    let over = vec![b'z'; 1_100 * 1024];
    publish_ok(&hosts, &over).await;
    wait_on_disk(&web, &over, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_zookeeper_down_at_start_the_daemon_keeps_trying_and_catches_up() {
    let mut zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    zk.kill(0);
    let mut web = Spec::both("web-1", &hosts).start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(web.is_running(), "the daemon must not exit while ZooKeeper is down");
    assert!(web.log().contains("cannot reach ZooKeeper"), "{}", web.log());
    // ZooKeeper comes up on that port; the daemon connects and serves.
    zk.start(0);
    publish_ok(&hosts, b"late\n").await;
    wait_on_disk(&web, b"late\n", Duration::from_secs(30)).await;

    // Publishing with nobody to answer fails clearly and withdraws the request.
    let out = publish(&format!("127.0.0.1:{}", free_port()), b"x").await;
    assert_eq!(out.status.code(), Some(69), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach ZooKeeper"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_with_no_agent_running_times_out_and_is_withdrawn() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let out = tokio::task::spawn_blocking({
        let hosts = hosts.clone();
        move || ctl_stdin(&["--zk", &hosts, "publish", APP, "-", "--timeout", "1s"], b"nobody home\n")
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no leading agent answered"));
    assert!(children_sorted(&client, "/zkcoord/requests").await.is_empty(), "the request was withdrawn");
    // ... and the parents the publish made for it went with it: the tree is as it was.
    for parent in ["/zkcoord/requests", "/zkcoord/outcomes"] {
        assert!(client.check_stat(parent).await.unwrap().is_none(), "{parent} was left behind");
    }
}
