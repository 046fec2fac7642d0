//! Signed versions, on a real ZooKeeper with real daemons: an app that lists trusted keys
//! installs only versions signed by one of them, whoever else can write to ZooKeeper.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use zookeeper_client as zk;

/// `zkcoordctl key generate` into `dir/name`; returns the private key's path.
fn generate(dir: &Path, name: &str) -> String {
    let path = dir.join(name).display().to_string();
    let out = ctl(&["key", "generate", &path]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN PUBLIC KEY-----"), "{}", output_text(&out));
    path
}

async fn publish_signed(hosts: &str, bytes: &[u8], key: &str) -> std::process::Output {
    let (hosts, bytes, key) = (hosts.to_string(), bytes.to_vec(), key.to_string());
    tokio::task::spawn_blocking(move || ctl_stdin(&["--zk", &hosts, "publish", APP, "-", "--sign-key", &key], &bytes))
        .await
        .unwrap()
}

fn published(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.starts_with("published conf-"), "{}", output_text(out));
    text.trim().trim_start_matches("published ").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_trusted_keys_installs_only_versions_signed_by_them() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let keys = tempfile::tempdir().unwrap();
    let alice = generate(keys.path(), "alice.key");
    let mallory = generate(keys.path(), "mallory.key");

    let spec = Spec::both("web-1", &hosts);
    let mut d = Daemon::prepare("web-1");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    d.set_config(&(spec.toml() + &format!("trusted_keys = [\"{alice}.pub\"]\n")));
    d.spawn();
    let client = zk_client(&hosts).await;

    // Signed by a trusted key: installed.
    let good = b"worker_processes 2;\n";
    let v1 = published(&publish_signed(&hosts, good, &alice).await);
    wait_on_disk(&d, good, Duration::from_secs(20)).await;
    wait_status(&client, "web-1", "ok", Some(&v1)).await;

    // Unsigned: refused, and the old file stays.
    let v2 = publish_ok(&hosts, b"unsigned;\n").await;
    let s = wait_status(&client, "web-1", "rejected", Some(&v2)).await;
    assert!(s["error"].as_str().unwrap().contains("not signed"), "{s}");
    assert_eq!(s["version"], v1.as_str());

    // Signed by a key the app does not trust: refused, naming the key.
    let v3 = published(&publish_signed(&hosts, b"mallory;\n", &mallory).await);
    let s = wait_status(&client, "web-1", "rejected", Some(&v3)).await;
    assert!(s["error"].as_str().unwrap().contains("not in trusted_keys"), "{s}");

    // Someone with write access to ZooKeeper copies a good signature onto other bytes.
    let meta1 = get(&client, &format!("/zkcoord/meta/{APP}/{v1}")).await.unwrap();
    let mut forged: serde_json::Value = serde_json::from_slice(&meta1).unwrap();
    let evil = b"evil;\n";
    forged["sha256"] = zkcoord::digest::sha256_hex(evil).into();
    forged["size"] = evil.len().into();
    let v4 = create_seq(&client, &format!("/applications/{APP}/conf-"), evil).await;
    let v4 = v4.rsplit('/').next().unwrap().to_string();
    client
        .create(&format!("/zkcoord/meta/{APP}/{v4}"), &serde_json::to_vec(&forged).unwrap(), &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()))
        .await
        .unwrap();
    let s = wait_status(&client, "web-1", "rejected", Some(&v4)).await;
    assert!(s["error"].as_str().unwrap().contains("does not match the content"), "{s}");

    // A version written by a plain client, with no metadata at all: refused too.
    let v5 = create_seq(&client, &format!("/applications/{APP}/conf-"), b"plain;\n").await;
    let v5 = v5.rsplit('/').next().unwrap().to_string();
    let s = wait_status(&client, "web-1", "error", Some(&v5)).await;
    assert!(s["error"].as_str().unwrap().contains("no signature"), "{s}");
    assert_eq!(on_disk(&d).unwrap(), good, "nothing but the signed version was ever installed");
    assert_eq!(reloads(&d), 1);

    // Alice signs the bytes that arrived without metadata: the version exists, so the answer is
    // "unchanged", and the agent fills in the missing metadata with her signature. The host,
    // still looking (metadata may come late), then installs that very version.
    let out = publish_signed(&hosts, b"plain;\n", &alice).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("unchanged, same as {v5}"));
    wait_on_disk(&d, b"plain;\n", Duration::from_secs(20)).await;
    wait_status(&client, "web-1", "ok", Some(&v5)).await;

    // Bytes that exist unsigned with metadata (v2) become a new version when signed.
    let v6 = published(&publish_signed(&hosts, b"unsigned;\n", &alice).await);
    assert_ne!(v6, v2);
    wait_on_disk(&d, b"unsigned;\n", Duration::from_secs(20)).await;
    wait_status(&client, "web-1", "ok", Some(&v6)).await;

    // Replays. A rollback without a key would carry v1's old signature, which hosts refuse: it
    // is refused before anything is sent, saying what to do.
    let rollback = |extra: Vec<String>| {
        let (hosts, v1) = (hosts.clone(), v1.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["--zk", hosts.as_str(), "rollback", APP, "--to", v1.as_str()];
            args.extend(extra.iter().map(String::as_str));
            ctl(&args)
        })
    };
    let out = rollback(Vec::new()).await.unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", output_text(&out));
    assert!(output_text(&out).contains("would refuse it as a replay") && output_text(&out).contains("--sign-key"), "{}", output_text(&out));
    // Someone who can write ZooKeeper replays v1, bytes and metadata with its valid signature,
    // as a new version: the host refuses it, for its signature is older than the one it runs.
    let v7 = create_seq(&client, &format!("/applications/{APP}/conf-"), good).await;
    let v7 = v7.rsplit('/').next().unwrap().to_string();
    client
        .create(&format!("/zkcoord/meta/{APP}/{v7}"), &meta1, &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()))
        .await
        .unwrap();
    let s = wait_status(&client, "web-1", "rejected", Some(&v7)).await;
    assert!(s["error"].as_str().unwrap().contains("replayed signature"), "{s}");
    assert_eq!(on_disk(&d).unwrap(), b"unsigned;\n", "the replay was not installed");
    // Signed afresh, the rollback installs.
    let out = rollback(vec!["--sign-key".into(), alice.clone()]).await.unwrap();
    let v8 = published(&out);
    wait_on_disk(&d, good, Duration::from_secs(20)).await;
    wait_status(&client, "web-1", "ok", Some(&v8)).await;
    // A signature valid for a millisecond has expired by the time the agent sees it.
    let out = tokio::task::spawn_blocking({
        let (hosts, alice) = (hosts.clone(), alice.clone());
        move || ctl_stdin(&["--zk", &hosts, "publish", APP, "-", "--sign-key", &alice, "--sign-valid", "1ms"], b"short-lived;\n")
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(65), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("expired at"), "{}", output_text(&out));
    d.term();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_readable_by_others_is_refused_before_anything_is_sent() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let keys = tempfile::tempdir().unwrap();
    let key = generate(keys.path(), "k.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    // generate never overwrites a key.
    let again = ctl(&["key", "generate", &key]);
    assert_eq!(again.status.code(), Some(73), "{}", output_text(&again));
    assert!(output_text(&again).contains("File exists"), "{}", output_text(&again));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = publish_signed(&hosts, b"x\n", &key).await;
    assert_eq!(out.status.code(), Some(77), "{}", output_text(&out));
    assert!(output_text(&out).contains("readable by others (mode 0644)"), "{}", output_text(&out));
    let client = zk_client(&hosts).await;
    assert_eq!(versions(&client).await, Vec::<String>::new(), "nothing was published");
    assert!(get(&client, "/zkcoord/requests").await.is_none(), "no request was even queued");
}

#[test]
fn a_bad_trusted_key_file_is_a_config_error_naming_the_key() {
    let d = Daemon::prepare("web-1");
    let bad = d.dir().join("bad.pub");
    std::fs::write(&bad, "not a key\n").unwrap();
    d.set_config(&(Spec::app("web-1", "127.0.0.1:1").toml() + &format!("trusted_keys = [\"{}\"]\n", bad.display())));
    let out = std::process::Command::new(daemon_bin()).args(["--config", &d.config_path().display().to_string(), "--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(text.contains("app[0].trusted_keys") && text.contains("bad.pub"), "{text}");
}
