//! The shipped monitoring, proved with the real thing: `promtool` checks and unit-tests the
//! alert rules (monitoring/zkcoord-alerts.yml), then Debian's `prometheus`, run as a plain
//! process, scrapes live daemons; the key alerts fire in their scenarios (apply failed, host
//! behind, no leader, session lost) and every query of the Grafana dashboard
//! (monitoring/zkcoord-dashboard.json) returns data.
//!
//! The live run loads a copy of the rules with every `for:` set to 0s: the expressions are
//! the shipped ones, only the waiting is left out (the waiting is what `promtool test rules`
//! checks). Needs `prometheus` and `promtool` (scripts/install-deps.sh installs them): a
//! missing tool fails the test.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring")
}

fn tool(name: &str) -> &str {
    // `command -v` prints the path; only its status matters here.
    let ok = Command::new("sh").arg("-c").arg(format!("command -v {name} >/dev/null")).status().is_ok_and(|s| s.success());
    assert!(ok, "{name} is not installed: scripts/install-deps.sh installs it (apt-get install prometheus)");
    name
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let check = Command::new(tool("promtool")).arg("check").arg("rules").arg(monitoring().join("zkcoord-alerts.yml")).output().unwrap();
    assert!(check.status.success(), "{}", output_text(&check));
    let test = Command::new("promtool").args(["test", "rules", "zkcoord-alerts.test.yml"]).current_dir(monitoring()).output().unwrap();
    assert!(test.status.success(), "{}", output_text(&test));
}

/// A Prometheus server as a plain process, killed (by its pid) on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    fn start(targets: &[u16]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        // The shipped rules with the waiting left out.
        let rules = std::fs::read_to_string(monitoring().join("zkcoord-alerts.yml")).unwrap();
        let rules: String = rules
            .lines()
            .map(|l| if l.trim_start().starts_with("for:") { format!("{}for: 0s", &l[..l.len() - l.trim_start().len()]) } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: zkcoord\n    static_configs:\n      - targets: [{}]\n",
            dir.path().join("rules.yml").display(),
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus { child, port, _dir: dir };
        wait_until_sync("prometheus is ready", Duration::from_secs(30), || http_get(port, "/-/ready").is_some_and(|r| r.status == 200));
        p
    }

    fn api(&self, path: &str) -> serde_json::Value {
        let r = http_get(self.port, path).unwrap_or_else(|| panic!("no answer from prometheus to {path}"));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body));
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// The result vector of an instant query.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        self.api(&format!("/api/v1/query?query={}", urlencode(q)))["result"].as_array().cloned().unwrap_or_default()
    }

    /// The firing alerts, as `name` plus their labels.
    fn firing(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/alerts")["alerts"].as_array().cloned().unwrap_or_default().into_iter().filter(|a| a["state"] == "firing").collect()
    }

    fn wait_firing(&self, alert: &str, labels: &[(&str, &str)]) {
        wait_until_sync(&format!("{alert} fires"), Duration::from_secs(40), || {
            self.firing().iter().any(|a| a["labels"]["alertname"] == alert && labels.iter().all(|(k, v)| a["labels"][*k] == *v))
        });
    }

    fn is_firing(&self, alert: &str) -> bool {
        self.firing().iter().any(|a| a["labels"]["alertname"] == alert)
    }
}

fn with_http(toml: String, port: u16) -> String {
    format!("{toml}\n[http]\nlisten = \"127.0.0.1:{port}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_key_alerts_in_their_scenarios_and_the_dashboard_has_data() {
    let mut zk = ZkEnsemble::single();
    let hosts = zk.connect_string();
    let (agent_port, app_port) = (free_port(), free_port());
    let mut agent = Daemon::start("agent-1", &with_http(Spec::agent("agent-1", &hosts).toml(), agent_port));
    let app_spec = Spec { check: Some(r#"["sh", "-c", "! grep -q bad {src}"]"#.into()), ..Spec::app("web-1", &hosts) };
    let mut web = Daemon::prepare("web-1");
    std::fs::create_dir_all(web.dir().join("www")).unwrap();
    web.set_config(&with_http(app_spec.toml(), app_port));
    web.spawn();
    wait_until_sync("the app host's /metrics answers", Duration::from_secs(20), || http_get(app_port, "/metrics").is_some());
    let prom = Prometheus::start(&[agent_port, app_port]);
    let web_instance = format!("127.0.0.1:{app_port}");

    // Healthy: a version applied, a leader, both sessions up, nothing firing.
    publish_ok(&hosts, b"worker_processes 1;\n").await;
    wait_on_disk(&web, b"worker_processes 1;\n", Duration::from_secs(20)).await;
    wait_until_sync("prometheus sees the applied version", Duration::from_secs(30), || {
        !prom.query(&format!("zkcoord_applied_version{{instance=\"{web_instance}\"}}")).is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(prom.firing().is_empty(), "healthy fleet, yet firing: {:?}", prom.firing());

    // Apply failed (and so the host is behind): the check refuses the new version.
    let out = publish(&hosts, b"worker_processes bad;\n").await;
    assert!(out.status.success(), "{}", output_text(&out));
    prom.wait_firing("ZkcoordApplyFailed", &[("app", APP), ("result", "check-failed"), ("instance", &web_instance)]);
    prom.wait_firing("ZkcoordHostBehind", &[("app", APP), ("instance", &web_instance)]);
    assert!(!prom.is_firing("ZkcoordNoLeader") && !prom.is_firing("ZkcoordSessionLost"), "{:?}", prom.firing());

    // Every dashboard query returns data, with the variables as Grafana fills them for "All".
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(monitoring().join("zkcoord-dashboard.json")).unwrap()).unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$instance", ".*").replace("$__rate_interval", "1m");
            let result = prom.query(&expr);
            assert!(!result.is_empty(), "dashboard panel {:?} returns nothing: {expr}", panel["title"]);
            queries += 1;
        }
    }
    eprintln!("figures: {queries} dashboard queries returned data");

    // No leader: the only agent stops; the app host still reports, leading nobody.
    assert!(agent.term().success());
    prom.wait_firing("ZkcoordNoLeader", &[]);

    // Session lost: ZooKeeper goes away under the app host.
    zk.kill(0);
    prom.wait_firing("ZkcoordSessionLost", &[("instance", &web_instance)]);
}
