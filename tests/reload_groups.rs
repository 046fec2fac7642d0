//! Issue 16, part 6: reload groups with a real nginx (Debian's nginx-light, a plain process in a
//! temp prefix), a real ZooKeeper and the real daemon. nginx.conf and conf.d/site.conf are two
//! apps of one `[reload_group.nginx]`: a burst touching both is reloaded once; a change that
//! each file's own check passes but nginx refuses as a whole puts both files back, nginx keeps
//! serving the old set, and both hosts' reports say why.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use zookeeper_client::Client;


/// The main file: everything inside `www`, the server blocks from conf.d.
fn main_conf(www: &str, comment: &str) -> String {
    format!(
        "# {comment}\ndaemon on;\nworker_processes 1;\npid {www}/nginx.pid;\nerror_log {www}/error.log notice;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {www}/tmp_body;\n  proxy_temp_path {www}/tmp_proxy;\n\
           fastcgi_temp_path {www}/tmp_fastcgi;\n  uwsgi_temp_path {www}/tmp_uwsgi;\n  scgi_temp_path {www}/tmp_scgi;\n\
           include {www}/conf.d/*.conf;\n}}\n"
    )
}

fn site_conf(port: u16, body: &str, extra: &str) -> String {
    format!("server {{\n  listen 127.0.0.1:{port};\n  {extra}\n  location / {{ return 200 \"{body}\\n\"; }}\n}}\n")
}



async fn publish(client: &Client, app: &str, bytes: &[u8]) -> String {
    create_all(client, &format!("/applications/{app}")).await;
    let v = create_seq(client, &format!("/applications/{app}/conf-"), bytes).await;
    v.rsplit('/').next().unwrap().to_string()
}

/// Waits until `app`'s report on web-1 is `result` for `version` (as applied or attempted).
async fn wait_report(client: &Client, app: &str, result: &str, version: &str) -> serde_json::Value {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok((b, _)) = client.get_data(&format!("/zkcoord/status/{app}/web-1")).await {
            let s: serde_json::Value = serde_json::from_slice(&b).unwrap();
            let about = if result == "ok" { &s["version"] } else { &s["attempted"] };
            if s["result"] == result && about == version {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("{app} never reported {result} for {version}; last: {last:?}");
}

fn reloads(www: &Path) -> usize {
    std::fs::read_to_string(www.join("reloads.log")).map(|s| s.lines().count()).unwrap_or(0)
}

/// nginx serving a first set that is also published, and web-1 following it as the group
/// `nginx`; `stall` is a file whose presence makes the group check hang (a daemon killed mid-batch).
struct Site {
    _zk: ZkEnsemble,
    client: Client,
    d: Daemon,
    www_path: std::path::PathBuf,
    www: String,
    port: u16,
    _nginx: NginxGuard,
}

async fn site() -> Site {
    let nginx = nginx_bin();
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let port = free_port();
    let mut d = Daemon::prepare("web-1");
    let www_path = d.dir().join("www");
    std::fs::create_dir_all(www_path.join("conf.d")).unwrap();
    let www = www_path.display().to_string();

    // nginx runs the first set before zkcoord knows of it; the same set is published.
    let (main1, site1) = (main_conf(&www, "v1"), site_conf(port, "v1", ""));
    std::fs::write(www_path.join("nginx.conf"), &main1).unwrap();
    std::fs::write(www_path.join("conf.d/site.conf"), &site1).unwrap();
    let st = std::process::Command::new(nginx).args(["-c", &format!("{www}/nginx.conf"), "-p", &format!("{www}/")]).status().unwrap();
    assert!(st.success(), "nginx did not start");
    let guard = NginxGuard(www_path.join("nginx.pid"));
    let start = Instant::now();
    while get_body(port).as_deref() != Some("v1") {
        assert!(start.elapsed() < Duration::from_secs(10), "nginx never served v1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = zk_client(&hosts).await;
    let m1 = publish(&client, "main", main1.as_bytes()).await;
    let s1 = publish(&client, "site", site1.as_bytes()).await;

    d.set_config(&format!(
        "role = \"app\"\nnode_id = \"web-1\"\nstate_dir = \"{{dir}}/state\"\nresync_interval = \"off\"\n\n\
         [zookeeper]\nhosts = \"{hosts}\"\nsession_timeout = \"4s\"\nstart_timeout = \"5s\"\n\n\
         [reload_group.nginx]\n\
         check = [\"sh\", \"-c\", \"if [ -e {www}/stall ]; then touch {www}/in-check; sleep 60; fi; exec {nginx} -t -q -c {www}/nginx.conf -p {www}/\"]\n\
         reload = [\"sh\", \"-c\", \"echo \\\"$ZKCOORD_VERSION\\\" >> {www}/reloads.log; exec {nginx} -c {www}/nginx.conf -p {www}/ -s reload\"]\n\
         verify = \"nginx\"\nnginx_pid = \"{www}/nginx.pid\"\nnginx_error_log = \"{www}/error.log\"\nverify_settle = \"3s\"\nquiet = \"300ms\"\n\n\
         [[app]]\nname = \"main\"\ndest = \"{www}/nginx.conf\"\nreload_group = \"nginx\"\n\n\
         [[app]]\nname = \"site\"\ndest = \"{www}/conf.d/site.conf\"\nreload_group = \"nginx\"\ncheck = [\"grep\", \"-q\", \"server\", \"{{src}}\"]\n"
    ));
    d.spawn();
    wait_report(&client, "main", "ok", &m1).await;
    wait_report(&client, "site", "ok", &s1).await;
    assert_eq!(reloads(&www_path), 0, "the files already held the published set");
    Site { _zk: zk, client, d, www_path, www, port, _nginx: guard }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_reloaded_once_and_rolled_back_together() {
    let Site { _zk, _nginx, client, mut d, www_path, www, port } = site().await;

    // A burst touching both files: one check, one reload, and nginx serves the new set.
    let (main2, site2) = (main_conf(&www, "v2"), site_conf(port, "v2", ""));
    let published = Instant::now();
    let m2 = publish(&client, "main", main2.as_bytes()).await;
    let s2 = publish(&client, "site", site2.as_bytes()).await;
    wait_report(&client, "main", "ok", &m2).await;
    wait_report(&client, "site", "ok", &s2).await;
    println!("figures: a two-file change applied as one group in {:?} (quiet 300ms)", published.elapsed());
    assert_eq!(get_body(port).as_deref(), Some("v2"), "both reported ok: nginx serves the new set");
    let log = std::fs::read_to_string(www_path.join("reloads.log")).unwrap();
    assert_eq!(reloads(&www_path), 1, "one reload for both files: {log}");
    assert!(log.contains(&format!("main={m2}")) && log.contains(&format!("site={s2}")), "the group's reload is told every member: {log}");

    // Each file passes its own check, but nginx refuses the set: a directive that the main file
    // does not define. The set was checked staged, shown at its real paths in a private mount
    // namespace: nothing was installed, nothing reloaded, nginx serves v2.
    let (main3, site3) = (main_conf(&www, "v3"), site_conf(port, "v3", "no_such_directive on;"));
    let m3 = publish(&client, "main", main3.as_bytes()).await;
    let s3 = publish(&client, "site", site3.as_bytes()).await;
    let rm = wait_report(&client, "main", "check-failed", &m3).await;
    let rs = wait_report(&client, "site", "check-failed", &s3).await;
    for r in [&rm, &rs] {
        let e = r["error"].as_str().unwrap();
        assert!(e.contains("reload group \"nginx\" check") && e.contains("nothing installed, nothing reloaded"), "{r}");
        assert!(e.contains("[emerg]") && e.contains("no_such_directive"), "nginx's own line is kept: {r}");
    }
    assert_eq!(rm["version"], m2.as_str());
    assert_eq!(rs["version"], s2.as_str());
    assert_eq!(std::fs::read_to_string(www_path.join("nginx.conf")).unwrap(), main2);
    assert_eq!(std::fs::read_to_string(www_path.join("conf.d/site.conf")).unwrap(), site2);
    assert_eq!(reloads(&www_path), 1, "nothing reloaded for a refused set");
    assert_eq!(get_body(port).as_deref(), Some("v2"));

    // A member's own check refuses only that member; the other still goes out.
    let s4 = publish(&client, "site", b"# no block at all\n").await;
    let m4 = publish(&client, "main", main_conf(&www, "v4").as_bytes()).await;
    wait_report(&client, "site", "check-failed", &s4).await;
    wait_report(&client, "main", "ok", &m4).await;
    assert_eq!(reloads(&www_path), 2);
    assert_eq!(get_body(port).as_deref(), Some("v2"));
    assert!(d.is_running());
    assert!(d.term().success());
}

/// kill -9 while the group check runs: the check reads the staged set in a private mount
/// namespace, so the files on disk never held an unchecked set; the next start applies the
/// set properly, with one reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_check_leaves_the_disk_untouched_and_applies_the_set_at_its_next_start() {
    let Site { _zk, _nginx, client, mut d, www_path, www, port } = site().await;
    std::fs::write(www_path.join("stall"), b"").unwrap();
    let (main2, site2) = (main_conf(&www, "v2"), site_conf(port, "v2", ""));
    let m2 = publish(&client, "main", main2.as_bytes()).await;
    let s2 = publish(&client, "site", site2.as_bytes()).await;
    let start = Instant::now();
    while !www_path.join("in-check").exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "the group check never ran: {}", d.log_tail(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mid-check: the disk still holds v1 (the check sees v2 at the same paths), nginx runs v1.
    assert_eq!(std::fs::read_to_string(www_path.join("nginx.conf")).unwrap(), main_conf(&www, "v1"));
    assert!(!www_path.join(".nginx.conf.zkcoord-group-previous").exists());
    d.kill9();
    std::fs::remove_file(www_path.join("stall")).unwrap();
    assert_eq!(get_body(port).as_deref(), Some("v1"));

    d.spawn();
    wait_report(&client, "main", "ok", &m2).await;
    wait_report(&client, "site", "ok", &s2).await;
    assert_eq!(d.log().matches("a reload group's batch did not finish").count(), 0, "nothing to put back: {}", d.log_tail(40));
    assert_eq!(get_body(port).as_deref(), Some("v2"));
    assert_eq!(std::fs::read_to_string(www_path.join("conf.d/site.conf")).unwrap(), site2);
    assert!(!www_path.join(".nginx.conf.zkcoord-group-previous").exists() && !www_path.join("conf.d/.site.conf.zkcoord-group-previous").exists());
    assert_eq!(reloads(&www_path), 1, "one reload for the set after the restart");
    // The files staged when it was killed are gone too.
    let leftovers = |dir: std::path::PathBuf| std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".tmp")).collect::<Vec<_>>();
    assert!(leftovers(www_path.clone()).is_empty() && leftovers(www_path.join("conf.d")).is_empty(), "{:?} {:?}", leftovers(www_path.clone()), leftovers(www_path.join("conf.d")));
    assert_eq!(d.log().matches("removed a staged file an earlier run left").count(), 2, "{}", d.log_tail(40));
    assert!(d.term().success());
}

#[test]
fn a_member_with_its_own_reload_or_an_unknown_group_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zkcoord.toml");
    let base = "role = \"app\"\n[zookeeper]\nhosts = \"127.0.0.1:1\"\n[reload_group.nginx]\nreload = \"true\"\n";
    for (app, key, expected) in [
        ("reload_group = \"nginx\"\nreload = \"true\"\n", "app[0].reload", "set reload in [reload_group.nginx], not here"),
        ("reload_group = \"ngnix\"\n", "app[0].reload_group", "there is no [reload_group.ngnix] (tables: nginx)"),
    ] {
        std::fs::write(&path, format!("{base}[[app]]\nname = \"a\"\ndest = \"/tmp/zkcoord-group-test/a.conf\"\n{app}")).unwrap();
        let out = std::process::Command::new(daemon_bin()).arg("--config").arg(&path).arg("--check-config").output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(78), "{text}");
        assert!(text.contains(&path.display().to_string()) && text.contains(key) && text.contains(expected), "{app}: {text}");
    }
}
