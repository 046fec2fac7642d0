//! An operator's first week (issue 20), replayed against a real ZooKeeper and the real
//! binaries: an app's node deleted by hand and published again, a chroot nobody created,
//! and the edges of the config file and of `zkcoordctl` that let a mistake through.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::time::Duration;

/// `n` bytes that do not compress, from `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

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
