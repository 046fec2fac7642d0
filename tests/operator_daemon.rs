//! What an operator runs besides the daemon itself: `zkcoordd --once` (apply the newest and
//! exit), `zkcoordd --dry-run` (say what would happen, change nothing), and the daemon's HTTP
//! listener (`/healthz`, `/metrics`). Real ZooKeeper, the real binaries, no mocks.

mod common;
mod fleet;

use common::*;
use fleet::*;
use prometheus_parse::{Scrape, Value};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

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
    assert!(line.starts_with(&format!("zkcoordd: {APP}: check-failed {bad}: ")), "{line}");
    assert!(line.contains("unknown directive") && line.contains("check `sh -c") && line.ends_with("the old file is kept"), "{line}");
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

/// `spec`'s config with an `[http]` listener on `port`.
fn with_http(spec: &Spec, port: u16) -> String {
    format!("{}\n[http]\nlisten = \"127.0.0.1:{port}\"\n", spec.toml())
}

/// Starts `spec` with an HTTP listener on a free port; returns the daemon and the port.
fn start_with_http(spec: &Spec) -> (Daemon, u16) {
    let port = free_port();
    let mut d = spec.prepare();
    d.set_config(&with_http(spec, port));
    d.spawn();
    wait_until_sync("the HTTP listener answers", Duration::from_secs(20), || http_get(port, "/healthz").is_some());
    (d, port)
}

/// `/metrics`, parsed by a Prometheus text-format parser.
fn scrape(port: u16) -> Scrape {
    let r = http_get(port, "/metrics").expect("/metrics answers");
    assert_eq!(r.status, 200, "{}", r.body);
    Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).expect("/metrics parses")
}

/// The sample `name{labels}`; panics naming what is there when it is missing.
fn sample<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a prometheus_parse::Sample {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| {
            let names: Vec<String> = s.samples.iter().map(|x| format!("{}{{{}}}", x.metric, x.labels)).collect();
            panic!("no {name} {labels:?} among {names:#?}")
        })
}

/// A counter's or gauge's value. (OpenMetrics names counter samples `<name>_total`, which this
/// parser reports as untyped; the value is the same.)
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match &sample(s, name, labels).value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a single value: {other:?}"),
    }
}

/// How many observations a histogram holds: its `+Inf` bucket, checked against `_count`.
fn observations(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let Value::Histogram(buckets) = &sample(s, name, labels).value else {
        panic!("{name} is not a histogram");
    };
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("a +Inf bucket").count;
    assert_eq!(value(s, &format!("{name}_count"), labels), inf, "{name}: +Inf bucket and _count disagree");
    inf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_applies_by_result_latency_leadership_and_versions_behind() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut spec = Spec::both("web-1", &hosts);
    spec.check = Some(CHECK_WORKER_PROCESSES.into());
    let (d, port) = start_with_http(&spec);
    d.wait_for_log("leadership: leader", Duration::from_secs(20));

    let good = b"worker_processes 2;\n";
    publish_ok(&hosts, good).await;
    wait_on_disk(&d, good, Duration::from_secs(20)).await;
    wait_status(&client, "web-1", "ok", None).await;
    let bad = publish_ok(&hosts, b"servr bad;\n").await;
    wait_status(&client, "web-1", "check-failed", Some(&bad)).await;

    // The leader counts a publish just after writing its outcome, which publish_ok may read first.
    wait_until_sync("both publishes are counted", Duration::from_secs(10), || {
        value(&scrape(port), "zkcoord_publishes_total", &[("outcome", "published")]) == 2.0
    });
    let m = scrape(port);
    let app = [("app", APP)];
    let result = |r| [("app", APP), ("result", r)];
    assert_eq!(value(&m, "zkcoord_applies_total", &result("ok")), 1.0);
    assert_eq!(value(&m, "zkcoord_applies_total", &result("check-failed")), 1.0);
    assert_eq!(value(&m, "zkcoord_applies_total", &result("reload-failed")), 0.0);
    assert_eq!(value(&m, "zkcoord_applies_total", &result("error")), 0.0);
    assert_eq!(observations(&m, "zkcoord_publish_to_apply_seconds", &app), 1.0, "only the good version was applied");
    assert_eq!(value(&m, "zkcoord_leader", &[]), 1.0);
    assert_eq!(value(&m, "zkcoord_versions_behind", &app), 1.0, "the failed version is newer than the applied one");
    assert_eq!(value(&m, "zkcoord_publishes_total", &[("outcome", "published")]), 2.0);
    assert_eq!(value(&m, "zkcoord_publishes_total", &[("outcome", "rejected")]), 0.0);
    assert_eq!(value(&m, "zkcoord_session_state", &[("state", "connected")]), 1.0);
    assert_eq!(value(&m, "zkcoord_session_state", &[("state", "disconnected")]), 0.0);
    assert_eq!(value(&m, "zkcoord_sessions_established_total", &[]), 1.0);
    assert_eq!(value(&m, "zkcoord_session_expiries_total", &[]), 0.0);
    assert_eq!(observations(&m, "zkcoord_hook_duration_seconds", &[("app", APP), ("hook", "check")]), 2.0);
    assert_eq!(observations(&m, "zkcoord_hook_duration_seconds", &[("app", APP), ("hook", "reload")]), 1.0);

    // A fixed version catches up.
    let fixed = b"worker_processes 3;\n";
    publish_ok(&hosts, fixed).await;
    wait_on_disk(&d, fixed, Duration::from_secs(20)).await;
    wait_status(&client, "web-1", "ok", None).await;
    let m = scrape(port);
    assert_eq!(value(&m, "zkcoord_versions_behind", &app), 0.0);
    assert_eq!(value(&m, "zkcoord_applies_total", &result("ok")), 2.0);
    assert_eq!(value(&m, "zkcoord_config_last_reload_successful", &[]), 1.0);
    assert_eq!(value(&m, "zkcoord_config_reload_failures_total", &[]), 0.0);
    let latency = observations(&m, "zkcoord_publish_to_apply_seconds", &app);
    assert_eq!(latency, 2.0);
    let sum = value(&m, "zkcoord_publish_to_apply_seconds_sum", &app);
    eprintln!("figures: mean publish-to-apply latency over {latency} applies: {:.1} ms", sum / latency * 1000.0);

    // What a scrape costs.
    let reply = http_get(port, "/metrics").unwrap();
    assert!(reply.content_type.as_deref().unwrap_or_default().starts_with("application/openmetrics-text"), "{reply:?}");
    let n = 50;
    let started = Instant::now();
    for _ in 0..n {
        assert_eq!(http_get(port, "/metrics").unwrap().status, 200);
    }
    eprintln!(
        "figures: /metrics scrape (new connection each): {:?} on average over {n}, {} bytes, {} samples",
        started.elapsed() / n,
        reply.body.len(),
        m.samples.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_newest_version_and_the_zookeeper_session() {
    let mut zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let mut spec = Spec::app("web-1", &hosts);
    spec.check = Some(CHECK_WORKER_PROCESSES.into());
    let (d, port) = start_with_http(&spec);
    let healthz = || http_get(port, "/healthz").map(|r| (r.status, r.body));
    let wait_health = |what: &str, want: u16, body: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        loop {
            let got = healthz();
            if got.as_ref().is_some_and(|(s, b)| *s == want && body(b)) {
                return start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(30) {
                d.print_log();
                panic!("/healthz never became {what}; last {got:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Nothing published yet counts as up to date.
    wait_health("ok with nothing published", 200, &|b| b == "ok\n");

    create_all(&client, &format!("/applications/{APP}")).await;
    create_seq(&client, &format!("/applications/{APP}/conf-"), b"worker_processes 1;\n").await;
    wait_on_disk(&d, b"worker_processes 1;\n", Duration::from_secs(20)).await;
    wait_health("ok", 200, &|b| b == "ok\n");

    // A newest version that fails its check: unhealthy, and says which.
    let bad = create_seq(&client, &format!("/applications/{APP}/conf-"), b"servr bad;\n").await;
    let bad = bad.rsplit('/').next().unwrap().to_string();
    wait_status(&client, "web-1", "check-failed", Some(&bad)).await;
    let expected = format!("app {APP}: check-failed {bad}\n");
    wait_health("503 check-failed", 503, &|b| b == expected);

    // A fixed version: healthy again.
    create_seq(&client, &format!("/applications/{APP}/conf-"), b"worker_processes 2;\n").await;
    wait_on_disk(&d, b"worker_processes 2;\n", Duration::from_secs(20)).await;
    wait_health("ok after the fix", 200, &|b| b == "ok\n");

    // ZooKeeper goes away: unhealthy within moments; back when it returns.
    drop(client);
    zk.kill(0);
    let took = wait_health("503 zookeeper", 503, &|b| b.starts_with("zookeeper: ") && b.lines().count() == 1);
    eprintln!("figures: /healthz 503 {took:?} after ZooKeeper was killed; body {:?}", healthz().unwrap().1);
    zk.start(0);
    let took = wait_health("ok after ZooKeeper returned", 200, &|b| b == "ok\n");
    eprintln!("figures: /healthz 200 again {took:?} after ZooKeeper was serving again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http_port_is_retried_without_stopping_the_daemon_and_sighup_moves_the_listener() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let spec = Spec::app("web-1", &hosts);
    let port = free_port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut d = spec.prepare();
    d.set_config(&with_http(&spec, port));
    d.spawn();
    d.wait_for_log(&format!("cannot listen for /healthz and /metrics on 127.0.0.1:{port}"), Duration::from_secs(20));

    // The daemon keeps applying meanwhile.
    create_all(&client, &format!("/applications/{APP}")).await;
    create_seq(&client, &format!("/applications/{APP}/conf-"), b"v1\n").await;
    wait_on_disk(&d, b"v1\n", Duration::from_secs(20)).await;
    assert!(d.is_running());

    // Once the port is free, the retry takes it.
    drop(squatter);
    let freed = Instant::now();
    wait_until_sync("the listener binds the freed port", Duration::from_secs(40), || {
        http_get(port, "/healthz").is_some_and(|r| r.status == 200 && r.body == "ok\n")
    });
    eprintln!("figures: listener up {:?} after its port was freed", freed.elapsed());

    // SIGHUP moves it to another port, and removing [http] stops it.
    let other = free_port();
    d.set_config(&with_http(&spec, other));
    d.hup();
    wait_until_sync("the listener moves", Duration::from_secs(20), || http_get(other, "/healthz").is_some());
    // The reload is logged once it is complete, a moment after the new listener answers.
    d.wait_for_log(&format!("reload applied: http listener on 127.0.0.1:{other}"), Duration::from_secs(10));
    wait_until_sync("the old port is released", Duration::from_secs(10), || http_get(port, "/healthz").is_none());
    // A refused SIGHUP shows in the metrics (the daemon keeps the listener it has).
    d.set_config("role = \"both\"\nthis is not toml");
    d.hup();
    d.wait_for_log("reload refused", Duration::from_secs(10));
    let m = scrape(other);
    assert_eq!(value(&m, "zkcoord_config_last_reload_successful", &[]), 0.0);
    assert_eq!(value(&m, "zkcoord_config_reload_failures_total", &[]), 1.0);
    d.set_config(&spec.toml());
    d.hup();
    wait_until_sync("the listener stops", Duration::from_secs(20), || http_get(other, "/healthz").is_none());
    d.wait_for_log("reload applied: http listener stopped", Duration::from_secs(10));
    assert!(d.term().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_and_once_refuse_a_symlink_at_the_destination() {
    let zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let client = zk_client(&hosts).await;
    let d = Spec::app("web-1", &hosts).prepare();
    let target = d.dir().join("elsewhere.conf");
    std::fs::write(&target, b"not ours\n").unwrap();
    std::os::unix::fs::symlink(&target, dest(&d)).unwrap();
    create_all(&client, &format!("/applications/{APP}")).await;
    let v = create_seq(&client, &format!("/applications/{APP}/conf-"), b"new\n").await;
    let v = v.rsplit('/').next().unwrap().to_string();
    let refusal = format!(
        "{} is a symlink (to {}); refusing to follow it (set follow_symlinks = true for this app if that is intended)",
        dest(&d).display(),
        target.display()
    );

    let (out, _) = zkcoordd_oneshot(&d, &["--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(text(&out.stdout), format!("{APP}: would fail to apply {v}: {refusal}\n"));

    let (out, _) = zkcoordd_oneshot(&d, &["--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert_eq!(text(&out.stderr), format!("zkcoordd: {APP}: error {v}: {refusal}; the old file is kept\n"));
    assert_eq!(std::fs::read(&target).unwrap(), b"not ours\n");
    assert!(std::fs::symlink_metadata(dest(&d)).unwrap().file_type().is_symlink());
    assert_eq!(reloads(&d), 0);
}
