//! The operator's path under a real systemd: a Debian root booted with `systemd-nspawn -b`,
//! the .deb installed with dpkg, /etc/zkcoord.toml pointed at a ZooKeeper on the host's
//! loopback, `systemctl enable --now`, a publish, `systemctl status`, `systemctl reload` with a
//! changed config, `systemctl stop` (ephemeral nodes gone at once, watched from the host), and
//! `dpkg --purge` (no unit left behind).
//!
//! Needs root, systemd-nspawn, debootstrap and the built .deb (`make test` provides all of it);
//! without them it says why it is skipped. The Debian root is built once with debootstrap and
//! cached in $ZKCOORD_NSPAWN_CACHE (default /var/cache/zkcoord-test/bookworm).

mod common;

use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (systemd-nspawn)".into());
    }
    for tool in ["systemd-nspawn", "debootstrap"] {
        let ok = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).status().is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("{tool} is not installed (apt-get install systemd-container debootstrap)"));
        }
    }
    if deb().is_none() {
        return Some("no target/zkcoord_<version>_*.deb (run `make packages`)".into());
    }
    None
}

fn deb() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let prefix = format!("zkcoord_{}", env!("CARGO_PKG_VERSION"));
    std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        n.starts_with(&prefix) && n.ends_with(".deb")
    })
}

/// The cached Debian root with systemd, built by debootstrap on first use.
fn cached_root() -> PathBuf {
    let cache = PathBuf::from(std::env::var("ZKCOORD_NSPAWN_CACHE").unwrap_or_else(|_| "/var/cache/zkcoord-test/bookworm".into()));
    if cache.join("usr/lib/systemd/systemd").exists() {
        return cache;
    }
    let tmp = cache.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    eprintln!("[e2e] debootstrap bookworm into {} (once; about a minute)", cache.display());
    let t = Instant::now();
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd,systemd-sysv,dbus", "bookworm"])
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(out.status.success(), "debootstrap failed: {}", String::from_utf8_lossy(&out.stdout));
    std::fs::rename(&tmp, &cache).unwrap();
    eprintln!("[e2e] debootstrap took {:?}", t.elapsed());
    cache
}

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

const INSIDE: &str = r#"#!/bin/bash
# Runs inside the container as a oneshot unit; writes key=value results to /e2e/results.
exec >/e2e/inside.log 2>&1
set -x
R=/e2e/results
put() { echo "$1=$2" >> "$R"; }
wait_file() { for _ in $(seq 100); do cmp -s "$1" "$2" && return 0; sleep 0.1; done; return 1; }

dpkg -i /e2e/zkcoord.deb > /e2e/dpkg-install.log 2>&1; put install $?
put enabled_after_install "$(systemctl is-enabled zkcoordd)"
put active_after_install "$(systemctl is-active zkcoordd)"
put man "$(test -f /usr/share/man/man8/zkcoordd.8.gz && echo yes)"
put state_dir "$(stat -c %a /var/lib/zkcoord)"

mkdir -p /srv/www
cat > /etc/zkcoord.toml <<EOF
role = "both"
node_id = "e2e"
[zookeeper]
hosts = "127.0.0.1:@PORT@"
session_timeout = "10s"
[[app]]
name = "nginxconf"
dest = "/srv/www/nginx.conf"
check = ["grep", "-q", "worker_processes", "{src}"]
reload = ["sh", "-c", "echo reload \${NOTIFY_SOCKET:-no-notify-socket} >> /srv/reloads.log"]
[reload_group.web]
check = ["sh", "-c", "grep -c ' /srv/www/g.conf ' /proc/self/mountinfo > /srv/group-check.out; true"]
reload = ["true"]
[[app]]
name = "gconf"
dest = "/srv/www/g.conf"
reload_group = "web"
EOF
echo old > /srv/www/g.conf
systemctl enable --now zkcoordd; put start $?
put active "$(systemctl is-active zkcoordd)"

echo "worker_processes 1;" > /tmp/a.conf
zkcoordctl publish nginxconf /tmp/a.conf --message e2e > /e2e/publish1.out 2>&1; put publish1 $?
wait_file /tmp/a.conf /srv/www/nginx.conf && put applied1 yes
sleep 0.3
put reload_line "$(head -1 /srv/reloads.log)"
systemctl status zkcoordd --no-pager > /e2e/status.txt 2>&1
put status_line "$(grep -m1 'Status:' /e2e/status.txt | sed 's/^ *//')"

echo "g 1" > /tmp/g.conf
zkcoordctl publish gconf /tmp/g.conf > /e2e/publish-g.out 2>&1; put publish_g $?
wait_file /tmp/g.conf /srv/www/g.conf && put applied_g yes
put group_check_mounts "$(cat /srv/group-check.out)"

sed -i 's/echo reload /echo reload-after-sighup /' /etc/zkcoord.toml
systemctl reload zkcoordd; put reload $?
put active_after_reload "$(systemctl is-active zkcoordd)"
echo "worker_processes 2;" > /tmp/b.conf
zkcoordctl publish nginxconf /tmp/b.conf > /e2e/publish2.out 2>&1; put publish2 $?
wait_file /tmp/b.conf /srv/www/nginx.conf && put applied2 yes
sleep 0.3
put reloads_after_sighup "$(grep -c reload-after-sighup /srv/reloads.log)"
journalctl -u zkcoordd --no-pager -o verbose > /e2e/journal.txt 2>&1
put journal_reload "$(grep -c 'reload applied' /e2e/journal.txt)"
put journal_field "$(grep -c 'ZKCOORD_APP=nginxconf' /e2e/journal.txt)"
put journal_publish_id "$(grep -cE '^ *ZKCOORD_PUBLISH_ID=[0-9a-f]{16}$' /e2e/journal.txt)"

put stop_ms "$(date +%s%3N)"
systemctl stop zkcoordd; put stop $?
put stopped_ms "$(date +%s%3N)"
journalctl -u zkcoordd --no-pager > /e2e/journal-all.txt 2>&1

dpkg --purge zkcoord > /e2e/dpkg-purge.log 2>&1; put purge $?
put units_left "$(find /etc/systemd /lib/systemd /usr/lib/systemd -name 'zkcoordd*' 2>/dev/null | wc -l)"
put conf_left "$(test -e /etc/zkcoord.toml && echo yes || echo no)"
put done yes
systemctl poweroff
"#;

const UNIT: &str = "[Unit]\nDescription=zkcoord end-to-end checks\nAfter=multi-user.target\n\n[Service]\nType=oneshot\nExecStart=/e2e/inside.sh\n\n[Install]\nWantedBy=multi-user.target\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_real_systemd_the_deb_installs_runs_reloads_stops_and_purges_cleanly() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let zk = ZkEnsemble::single();
    let port = zk.server_port(0);
    let client = zk_client(&zk.connect_string()).await;

    // A fresh copy of the cached root, with our oneshot unit enabled.
    let cache = cached_root();
    let work = tempfile::Builder::new().prefix("zkcoord-e2e-").tempdir().unwrap();
    let root = work.path().join("root");
    let share = work.path().join("e2e");
    std::fs::create_dir_all(&share).unwrap();
    let t = Instant::now();
    assert!(Command::new("cp").arg("-a").arg(&cache).arg(&root).status().unwrap().success());
    eprintln!("[e2e] root copied in {:?}", t.elapsed());
    std::fs::write(share.join("inside.sh"), INSIDE.replace("@PORT@", &port.to_string())).unwrap();
    Command::new("chmod").arg("755").arg(share.join("inside.sh")).status().unwrap();
    std::fs::copy(deb().unwrap(), share.join("zkcoord.deb")).unwrap();
    std::fs::write(root.join("etc/systemd/system/zkcoord-e2e.service"), UNIT).unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/zkcoord-e2e.service",
        root.join("etc/systemd/system/multi-user.target.wants/zkcoord-e2e.service"),
    )
    .unwrap();
    std::fs::create_dir_all("/run/systemd/nspawn").unwrap();

    let booted = Instant::now();
    let mut container = Command::new("systemd-nspawn")
        .args(["-b", "--register=no", "--keep-unit", "-q"])
        .arg("-D")
        .arg(&root)
        .arg(format!("--bind={}:/e2e", share.display()))
        .stdout(std::fs::File::create(work.path().join("console.log")).unwrap())
        .stderr(std::fs::File::create(work.path().join("console.err")).unwrap())
        .spawn()
        .unwrap();

    // While it runs, watch the daemon's ephemeral nodes from the host.
    let mut registered_ms = None;
    let mut vanished_ms = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let w = client.list_children("/roles/workers").await.unwrap_or_default();
        let status = client.check_stat("/zkcoord/status/nginxconf/e2e").await.ok().flatten();
        match (registered_ms, vanished_ms) {
            (None, _) if !w.is_empty() && status.is_some() => registered_ms = Some(epoch_ms()),
            (Some(_), None) if w.is_empty() && status.is_none() => vanished_ms = Some(epoch_ms()),
            _ => {}
        }
        if container.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = container.kill();
            panic!(
                "the container did not finish in 180s; inside.log:\n{}",
                std::fs::read_to_string(share.join("inside.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("[e2e] container ran for {:?}", booted.elapsed());

    let text = std::fs::read_to_string(share.join("results")).unwrap_or_default();
    let r: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let show = || {
        format!(
            "results:\n{text}\ninside.log:\n{}\nstatus.txt:\n{}\njournal:\n{}",
            std::fs::read_to_string(share.join("inside.log")).unwrap_or_default(),
            std::fs::read_to_string(share.join("status.txt")).unwrap_or_default(),
            std::fs::read_to_string(share.join("journal-all.txt")).unwrap_or_default()
        )
    };
    let get = |k: &str| r.get(k).copied().unwrap_or("<missing>");
    assert_eq!(get("done"), "yes", "{}", show());
    assert_eq!(get("install"), "0", "{}", show());
    assert_eq!(get("enabled_after_install"), "enabled", "the package enables the unit\n{}", show());
    assert_eq!(get("active_after_install"), "inactive", "but does not start it before it is configured\n{}", show());
    assert_eq!(get("man"), "yes");
    assert_eq!(get("state_dir"), "750");
    assert_eq!(get("start"), "0", "{}", show());
    assert_eq!(get("active"), "active");
    assert_eq!(get("publish1"), "0", "{}", show());
    assert_eq!(get("applied1"), "yes", "{}", show());
    assert_eq!(get("reload_line"), "reload no-notify-socket", "hooks must not inherit NOTIFY_SOCKET\n{}", show());
    let status_line = get("status_line");
    assert!(status_line.starts_with("Status: \"both connected; leader; "), "{}", show());
    assert!(status_line.contains("nginxconf=conf-"), "the status names the applied version\n{}", show());
    assert_eq!(get("applied_g"), "yes", "{}", show());
    assert_eq!(get("group_check_mounts"), "1", "under the packaged unit the group check sees the staged file at its destination (a private mount namespace)\n{}", show());
    assert_eq!(get("reload"), "0", "{}", show());
    assert_eq!(get("active_after_reload"), "active");
    assert_eq!(get("applied2"), "yes", "{}", show());
    assert_eq!(get("reloads_after_sighup"), "1", "the reloaded config's hook ran\n{}", show());
    assert_ne!(get("journal_reload"), "0", "the journal has the reload\n{}", show());
    assert_ne!(get("journal_field"), "0", "structured fields reach the journal\n{}", show());
    assert_ne!(get("journal_publish_id"), "0", "each apply's lines carry its publish id as a journal field\n{}", show());
    assert_eq!(get("stop"), "0");
    assert_eq!(get("purge"), "0", "{}", show());
    assert_eq!(get("units_left"), "0", "dpkg --purge leaves no unit behind\n{}", show());
    assert_eq!(get("conf_left"), "no");

    // The ephemeral nodes vanished at once on stop, not after the 10s session timeout.
    assert!(registered_ms.is_some(), "the host never saw the daemon's nodes\n{}", show());
    let stop_ms: u64 = get("stop_ms").parse().unwrap();
    let vanished = vanished_ms.expect("the nodes never vanished");
    let after_stop = vanished.saturating_sub(stop_ms);
    eprintln!("figures: e2e under systemd: nodes gone {after_stop} ms after `systemctl stop` (session 10s)");
    assert!(after_stop < 3000, "nodes vanished {after_stop} ms after stop\n{}", show());
}
