//! Self-tests of the integration-test harness (tests/common): real ZooKeeper servers, the
//! fault-injection proxy, and the process plumbing for zkcoordd/zkcoordctl.
//! None of this depends on what zkcoord itself does.

mod common;

use std::time::{Duration, Instant};

use common::*;
use zookeeper_client::{Acls, CreateMode, Error as ZkError, SessionState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_server_create_read_delete() {
    let t = Instant::now();
    let zk = ZkEnsemble::single();
    assert_eq!(zk.len(), 1);
    assert_eq!(zk.mode(0).as_deref(), Some("standalone"));
    assert_eq!(zk.leader_index(), Some(0));
    assert_eq!(
        zk.connect_string(),
        format!("127.0.0.1:{}", zk.server_port(0))
    );

    let client = zk_client(&zk.connect_string()).await;
    create_all(&client, "/applications/app").await;
    create_all(&client, "/applications/app/").await; // existing is fine

    let a = create_seq(&client, "/applications/app/conf-", b"first").await;
    let b = create_seq(&client, "/applications/app/conf-", b"second\n").await;
    let suffix = a
        .strip_prefix("/applications/app/conf-")
        .expect("prefix kept");
    assert_eq!(suffix.len(), 10, "{a}");
    assert!(suffix.bytes().all(|c| c.is_ascii_digit()), "{a}");
    assert!(seq_of(&b) > seq_of(&a));

    assert_eq!(get(&client, &a).await.as_deref(), Some(&b"first"[..]));
    assert_eq!(get(&client, &b).await.as_deref(), Some(&b"second\n"[..]));
    assert_eq!(get(&client, "/applications/app/missing").await, None);

    // Sorted by numeric suffix, not by name.
    create(&client, "/applications/app/x-9", b"").await;
    create(&client, "/applications/app/x-10", b"").await;
    let kids = children_sorted(&client, "/applications/app").await;
    let a_name = a.rsplit('/').next().unwrap().to_string();
    let b_name = b.rsplit('/').next().unwrap().to_string();
    assert_eq!(
        kids,
        vec![a_name, b_name, "x-9".to_string(), "x-10".to_string()]
    );
    assert!(children_sorted(&client, "/nope").await.is_empty());

    assert!(delete(&client, &a).await);
    assert!(!delete(&client, &a).await);
    assert_eq!(get(&client, &a).await, None);

    delete_all(&client, "/applications").await;
    assert_eq!(get(&client, "/applications").await, None);

    // Four-letter words work.
    assert!(zk
        .four_letter(0, "ruok")
        .unwrap_or_default()
        .contains("imok"));
    eprintln!("single_server_create_read_delete took {:.1?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_ensemble_survives_member_restart() {
    let t = Instant::now();
    let mut zk = ZkEnsemble::three();
    let started = t.elapsed();
    assert_eq!(zk.connect_string().split(',').count(), 3);
    let modes: Vec<String> = (0..3).map(|i| zk.mode(i).unwrap()).collect();
    assert_eq!(
        modes.iter().filter(|m| *m == "leader").count(),
        1,
        "{modes:?}"
    );
    assert_eq!(
        modes.iter().filter(|m| *m == "follower").count(),
        2,
        "{modes:?}"
    );

    let client = zk_client(&zk.connect_string()).await;
    create_all(&client, "/harness/three").await;
    let first = create_seq(&client, "/harness/three/conf-", b"one").await;

    // Kill the leader (SIGKILL): the quorum re-elects and the same client keeps working.
    let leader = zk.leader_index().expect("a leader");
    let pid = zk.pid(leader).unwrap();
    zk.kill(leader);
    assert!(!zk.is_running(leader));
    assert!(zk.pid(leader).is_none());
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err(),
        "pid reaped"
    );

    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    wait_until(
        "a write succeeds after the leader was killed",
        Duration::from_secs(30),
        || async {
            match client
                .create("/harness/three/after-kill", b"two", &opts)
                .await
            {
                Ok(_) | Err(ZkError::NodeExists) => true,
                Err(e) => {
                    eprintln!("create after kill: {e}");
                    false
                }
            }
        },
    )
    .await;
    let new_leader = zk.leader_index().expect("a new leader");
    assert_ne!(new_leader, leader);

    // Restart it: it rejoins as a follower with its old data directory.
    zk.start(leader);
    assert_eq!(zk.mode(leader).as_deref(), Some("follower"));
    let only_restarted = zk_client(&zk.connect_string_of(&[leader])).await;
    only_restarted.sync("/harness/three").await.expect("sync");
    assert_eq!(
        get(&only_restarted, "/harness/three/after-kill")
            .await
            .as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        get(&only_restarted, &first).await.as_deref(),
        Some(&b"one"[..])
    );

    // The original client still works, and a follower can die too.
    let follower = (0..3).find(|&i| i != leader && i != new_leader).unwrap();
    zk.kill(follower);
    wait_until(
        "a read succeeds after a follower was killed",
        Duration::from_secs(30),
        || async { client.get_data(&first).await.is_ok() },
    )
    .await;
    let kids = children_sorted(&client, "/harness/three").await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    zk.start(follower);
    zk.wait_all_serving();
    eprintln!(
        "three_node_ensemble_survives_member_restart took {:.1?} (ensemble up in {started:.1?})",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_partitions_and_drops_connections() {
    let t = Instant::now();
    let zk = ZkEnsemble::single();
    let direct = zk_client(&zk.connect_string()).await;

    let proxy = Proxy::to_port(zk.server_port(0));
    let client = zk_client_with_timeout(&proxy.address(), Duration::from_secs(6)).await;
    assert!(create(&client, "/p", b"1").await);
    assert_eq!(proxy.open_connections(), 1);
    let session = client.session_id();

    // Partition without closing sockets: nothing gets through, the socket stays open.
    proxy.set_forwarding(false);
    let r = tokio::time::timeout(Duration::from_millis(800), client.get_data("/p")).await;
    assert!(
        r.is_err(),
        "a read completed through a partitioned proxy: {r:?}"
    );
    assert_eq!(proxy.open_connections(), 1);
    proxy.set_forwarding(true);
    wait_until(
        "reads work after the partition heals",
        Duration::from_secs(10),
        || async { client.get_data("/p").await.is_ok() },
    )
    .await;
    assert_eq!(client.session_id(), session);

    // Dropped connections: the client reconnects through the proxy with the same session.
    proxy.drop_all();
    wait_until(
        "reads work after the connection was dropped",
        Duration::from_secs(10),
        || async { client.get_data("/p").await.is_ok() },
    )
    .await;
    assert!(proxy.accepted_connections() >= 2);
    assert_eq!(client.session_id(), session);
    assert_eq!(client.state(), SessionState::SyncConnected);

    // A partition longer than the session timeout expires the session on the server side.
    let proxy2 = Proxy::to_port(zk.server_port(0));
    let short = zk_client_with_timeout(&proxy2.address(), Duration::from_millis(1000)).await;
    short
        .create(
            "/eph",
            b"",
            &CreateMode::Ephemeral.with_acls(Acls::anyone_all()),
        )
        .await
        .expect("create ephemeral");
    assert!(get(&direct, "/eph").await.is_some());
    proxy2.set_forwarding(false);
    wait_until(
        "the server expires the partitioned session",
        Duration::from_secs(10),
        || async { get(&direct, "/eph").await.is_none() },
    )
    .await;
    proxy2.set_forwarding(true);
    wait_until(
        "the client learns its session expired",
        Duration::from_secs(15),
        || async { short.state() == SessionState::Expired },
    )
    .await;

    let d = Instant::now();
    drop(proxy);
    drop(proxy2);
    eprintln!("proxies dropped in {:.1?}", d.elapsed());
    assert!(get(&direct, "/p").await.is_some());
    eprintln!(
        "proxy_partitions_and_drops_connections took {:.1?}",
        t.elapsed()
    );
}

#[test]
fn daemon_and_ctl_plumbing() {
    // Exercises only the harness's process handling: whatever the binaries do with this config,
    // they are started, logged, signalled, restarted and reaped.
    let port = free_port();
    let mut d = Daemon::start(
        "plumbing",
        &format!(
            "role = \"app\"\nnode_id = \"plumbing\"\nstate_dir = \"{{dir}}/state\"\n\n\
             [zookeeper]\nhosts = \"127.0.0.1:{port}\"\nsession_timeout = \"2s\"\n\n\
             [[app]]\nname = \"a\"\ndest = \"{{dir}}/a.conf\"\n"
        ),
    );
    let cfg = std::fs::read_to_string(d.config_path()).unwrap();
    assert!(
        cfg.contains(&format!("state_dir = \"{}/state\"", d.dir().display())),
        "{cfg}"
    );
    assert!(d.pid() > 0);
    std::thread::sleep(Duration::from_millis(300));
    d.stop_signal();
    d.cont();
    d.kill9();
    assert!(!d.is_running());
    d.restart();
    std::thread::sleep(Duration::from_millis(200));
    // Not `term()`: how (and whether) the daemon stops is zkcoord's business, not the harness's.
    match d.term_within(Duration::from_secs(10)) {
        Some(status) => eprintln!("daemon ended with {}", describe_status(&status)),
        None => d.kill9(),
    }
    assert!(!d.is_running());
    let log = d.log();
    assert!(log.contains("start #1"), "{log}");
    assert!(log.contains("start #2"), "{log}");

    let out = ctl(&["--help"]);
    eprintln!("zkcoordctl --help: {}", output_text(&out));
    let out = ctl_stdin(&["--help"], b"ignored input");
    assert!(out.status.code().is_some());
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let unique: std::collections::HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(unique.len(), ports.len());
    for p in ports.iter().take(5) {
        std::net::TcpListener::bind(("127.0.0.1", *p)).expect("bindable");
    }
    assert_eq!(seq_of("conf-0000000012"), Some(12));
    assert_eq!(seq_of("/roles/workers/worker0000000003"), Some(3));
    assert_eq!(seq_of("nodigits"), None);
}

#[test]
fn wait_until_sync_times_out_with_a_message() {
    let r =
        std::panic::catch_unwind(|| wait_until_sync("never", Duration::from_millis(120), || false));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("never"), "{msg}");
    let mut n = 0;
    wait_until_sync("third try", Duration::from_secs(5), || {
        n += 1;
        n >= 3
    });
}

#[test]
fn dropping_a_daemon_removes_its_directory_even_with_a_mount_inside() {
    let d = Daemon::prepare("mounts");
    let dir = d.dir().to_path_buf();
    let m = dir.join("m");
    std::fs::create_dir_all(&m).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&m)
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    std::fs::write(m.join("f"), b"x").unwrap();
    drop(d);
    assert!(
        !dir.exists() || std::env::var_os("ZKCOORD_TEST_KEEP").is_some(),
        "{} left behind",
        dir.display()
    );
}
