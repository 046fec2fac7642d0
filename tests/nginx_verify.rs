//! Post-reload verification with a real nginx (Debian's nginx-light, run as a plain process in
//! a temp prefix) behind a real daemon and a real ZooKeeper: a config nginx refuses only after
//! `nginx -s reload` exited 0 (a `listen` on a busy port) is reported `reload-failed`, rolled
//! back, and nginx keeps serving the old version; a good config passes verification; the
//! operator sees the `[emerg]` line, not `signal process started`; and `--precheck` runs the
//! real `nginx -t` on every host, blocked by the one host that lacks an included file.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

/// An nginx serving `body` on `port`, everything inside `www`.
fn nginx_conf(www: &Path, port: u16, body: &str, extra_listen: Option<u16>) -> String {
    let w = www.display();
    let extra = extra_listen.map(|p| format!("listen 127.0.0.1:{p};")).unwrap_or_default();
    format!(
        "daemon on;\nworker_processes 1;\npid {w}/nginx.pid;\nerror_log {w}/error.log notice;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {w}/tmp_body;\n  proxy_temp_path {w}/tmp_proxy;\n\
           fastcgi_temp_path {w}/tmp_fastcgi;\n  uwsgi_temp_path {w}/tmp_uwsgi;\n  scgi_temp_path {w}/tmp_scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n    {extra}\n    location / {{ return 200 \"{body}\\n\"; }}\n  }}\n}}\n"
    )
}




/// The workers of the master in `pid_file` (children in /proc).
fn workers(pid_file: &Path) -> usize {
    let Some(master) = std::fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) else { return 0 };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|st| st.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok()) == Some(master))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_that_refuses_a_reload_is_rolled_back_and_keeps_serving_the_old_version() {
    let nginx = nginx_bin();
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let port = free_port();

    let mut spec = Spec::both("web-1", &hosts);
    let mut d = Daemon::prepare(&spec.node);
    let www = d.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let w = www.display().to_string();
    spec.check = Some(format!(r#"["{nginx}", "-t", "-q", "-c", "{{src}}", "-p", "{w}/"]"#));
    spec.reload = Some(format!(r#"["{nginx}", "-c", "{w}/nginx.conf", "-p", "{w}/", "-s", "reload"]"#));
    let mut toml = spec.toml();
    toml.push_str(&format!("verify = \"nginx\"\nnginx_pid = \"{w}/nginx.pid\"\nnginx_error_log = \"{w}/error.log\"\nverify_settle = \"3s\"\n"));

    // nginx runs v1 before the daemon starts.
    let v1 = nginx_conf(&www, port, "v1", None);
    std::fs::write(www.join("nginx.conf"), &v1).unwrap();
    let st = std::process::Command::new(nginx).args(["-c", &format!("{w}/nginx.conf"), "-p", &format!("{w}/")]).status().unwrap();
    assert!(st.success(), "nginx did not start");
    let _guard = NginxGuard(www.join("nginx.pid"));
    let start = Instant::now();
    while get_body(port).as_deref() != Some("v1") {
        assert!(start.elapsed() < Duration::from_secs(10), "nginx never served v1");
        std::thread::sleep(Duration::from_millis(20));
    }

    d.set_config(&toml);
    d.spawn();
    let client = zk_client(&hosts).await;
    publish_ok(&hosts, v1.as_bytes()).await;
    wait_status(&client, "web-1", "ok", None).await;

    // A good config passes verification, and once it is reported ok nginx serves it.
    let v2 = nginx_conf(&www, port, "v2", None);
    let published = Instant::now();
    let name2 = publish_ok(&hosts, v2.as_bytes()).await;
    wait_status(&client, "web-1", "ok", Some(&name2)).await;
    let reported = published.elapsed();
    assert_eq!(get_body(port).as_deref(), Some("v2"), "status said ok, nginx must serve v2");
    let log = d.log();
    let verified = log.lines().find(|l| l.contains("verify nginx: master")).unwrap_or_else(|| panic!("no verify line in\n{log}"));
    println!("publish -> ok with nginx verified: {reported:?}; {verified}");

    // A listen on a port another process holds passes `nginx -t`, the reload exits 0, and the
    // master keeps the old config: reload-failed, rolled back, v2 still served.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().port();
    let v3 = nginx_conf(&www, port, "v3", Some(busy));
    let out = {
        let (hosts, bytes) = (hosts.clone(), v3.clone().into_bytes());
        tokio::task::spawn_blocking(move || ctl_stdin(&["--zk", &hosts, "publish", APP, "-", "--wait=20s"], &bytes)).await.unwrap()
    };
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("reload-failed") && text.contains("[emerg]") && text.contains("Address already in use"), "publish --wait must show the [emerg] line:\n{text}");
    assert!(!text.contains("signal process started"), "{text}");
    let s = wait_status(&client, "web-1", "reload-failed", None).await;
    assert_eq!(s["version"], name2.as_str(), "{s}");
    let error = s["error"].as_str().unwrap();
    assert!(error.contains("previous file restored and reloaded") && error.contains("bind()"), "{error}");
    assert_eq!(std::fs::read_to_string(www.join("nginx.conf")).unwrap(), v2);
    // Once the rolled-back reload's workers took over, nginx answers v2 (never v3).
    let start = Instant::now();
    while workers(&www.join("nginx.pid")) > 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get_body(port).as_deref(), Some("v2"), "the host keeps serving the old version");
    let st = ctl(&["--zk", &hosts, "status", APP]);
    let st_text = output_text(&st);
    assert!(st_text.contains("[emerg]") && st_text.contains("Address already in use"), "status must show the [emerg] line:\n{st_text}");
    drop(holder);
    assert!(d.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_that_says_why_reaches_publish_wait_and_status() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let mut spec = Spec::both("web-1", &hosts);
    // Debian's nginx on a failed `nginx -s reload`: the notice first, the reason after. A
    // script file, so that the command line itself (shown in the error's head) says neither.
    spec.reload = Some(r#"["sh", "{dir}/reload.sh"]"#.into());
    let d = Daemon::prepare(&spec.node);
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let script = format!(
        "if grep -q busy {}/www/nginx.conf; then echo 'nginx: [notice] 77#77: signal process started'; echo 'nginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address already in use)' >&2; exit 1; fi\n",
        d.dir().display()
    );
    std::fs::write(d.dir().join("reload.sh"), script).unwrap();
    let mut d = d;
    d.set_config(&spec.toml());
    d.spawn();
    let client = zk_client(&hosts).await;
    publish_ok(&hosts, b"fine\n").await;
    wait_status(&client, "web-1", "ok", None).await;

    let out = tokio::task::spawn_blocking({
        let hosts = hosts.clone();
        move || ctl_stdin(&["--zk", &hosts, "publish", APP, "-", "--wait=20s"], b"busy\n")
    })
    .await
    .unwrap();
    let text = output_text(&out);
    assert!(text.contains("reload-failed") && text.contains("[emerg] bind() to 0.0.0.0:80 failed"), "{text}");
    assert!(!text.contains("signal process started"), "{text}");
    let st = output_text(&ctl(&["--zk", &hosts, "status", APP]));
    assert!(st.contains("[emerg] bind() to 0.0.0.0:80 failed") && !st.contains("signal process started"), "{st}");
    // The whole output stays in the status JSON.
    let s = wait_status(&client, "web-1", "reload-failed", None).await;
    let error = s["error"].as_str().unwrap();
    assert!(error.contains("signal process started") && error.contains("[emerg]"), "{error}");
    assert!(d.log().contains("[emerg] bind()"), "the journal keeps the whole output");
}

/// One config for every host: paths relative to each host's prefix; with `upstream`, the
/// upstream from a file each host keeps itself (as hosts keep their certificates).
fn shared_conf(port: u16, upstream: bool) -> String {
    let (include, location) = if upstream { ("include local/upstream.conf;", "proxy_pass http://api;") } else { ("", "return 200 \"v1\\n\";") };
    format!(
        "worker_processes 1;\npid nginx.pid;\nerror_log error.log notice;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path tmp_body;\n  proxy_temp_path tmp_proxy;\n  fastcgi_temp_path tmp_fastcgi;\n\
           uwsgi_temp_path tmp_uwsgi;\n  scgi_temp_path tmp_scgi;\n  {include}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{ {location} }}\n  }}\n}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_precheck_runs_the_real_nginx_t_everywhere_and_a_host_missing_a_file_blocks_it() {
    let nginx = nginx_bin();
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let _agent = Spec::agent("agent-1", &hosts).start();
    let mut apps = Vec::new();
    for node in ["web-1", "web-2"] {
        let mut spec = Spec::app(node, &hosts);
        let mut d = Daemon::prepare(node);
        let www = d.dir().join("www");
        std::fs::create_dir_all(www.join("local")).unwrap();
        let w = www.display().to_string();
        spec.check = Some(format!(r#"["{nginx}", "-t", "-q", "-c", "{{src}}", "-p", "{w}/"]"#));
        d.set_config(&spec.toml());
        d.spawn();
        apps.push(d);
    }
    // Only web-1 has the upstream file the new config includes.
    std::fs::write(apps[0].dir().join("www/local/upstream.conf"), "upstream api { server 127.0.0.1:1; }\n").unwrap();
    let port = free_port();
    let first = shared_conf(port, false);
    let v1 = publish_ok(&hosts, first.as_bytes()).await;
    for a in &apps {
        wait_status(&client, a.name(), "ok", Some(&v1)).await;
    }

    let conf = shared_conf(port, true);
    let out = tokio::task::spawn_blocking({
        let (hosts, conf) = (hosts.clone(), conf.clone());
        move || ctl_stdin(&["--zk", &hosts, "publish", APP, "-", "--precheck", "--wait=30s"], conf.as_bytes())
    })
    .await
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("precheck failed on 1 of 2 hosts: web-2: check-failed: ") && text.contains("[emerg]") && text.contains("open()") && text.contains("local/upstream.conf"), "nginx's own line, naming the host:\n{text}");
    for a in &apps {
        assert_eq!(on_disk(a).as_deref(), Some(first.as_bytes()), "{} installed nothing", a.name());
    }

    // The operator puts the file in place on web-2 and publishes again: both check, both take it.
    std::fs::write(apps[1].dir().join("www/local/upstream.conf"), "upstream api { server 127.0.0.1:1; }\n").unwrap();
    let conf2 = format!("{conf}# the same, again\n");
    let out = tokio::task::spawn_blocking({
        let (hosts, conf2) = (hosts.clone(), conf2.clone());
        move || ctl_stdin(&["--zk", &hosts, "publish", APP, "-", "--precheck", "--wait=30s"], conf2.as_bytes())
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    for a in &apps {
        wait_on_disk(a, conf2.as_bytes(), Duration::from_secs(20)).await;
        assert!(a.log().contains("precheck passed; nothing installed"), "{}", a.log_tail(20));
    }
}
