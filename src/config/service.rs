//! `[[service]]` entries: what this host registers in the service registry, and how it checks
//! its own health.

use serde::Deserialize;
use std::time::Duration;
use super::hook::HookCommand;


/// One `[[service]]` entry: a local service announced in ZooKeeper for as long as it is
/// healthy, so that other hosts (and plain clients) can discover it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The service's name; its members live at `/services/<name>` unless `path` says.
    pub name: String,
    /// The znode whose children are the service's members, e.g. an existing `/rpc`.
    #[serde(default)]
    pub path: Option<String>,
    /// Our member node's name (default: node_id), or its prefix when `sequential`.
    #[serde(default)]
    pub node_name: Option<String>,
    /// EPHEMERAL_SEQUENTIAL members (`server0000000003`), as many existing registries use.
    #[serde(default)]
    pub sequential: bool,
    /// The address clients should connect to (default: this machine's host name).
    #[serde(default = "default_service_host")]
    pub host: String,
    /// The port clients should connect to.
    pub port: u16,
    /// Extra JSON fields merged into the member's data, e.g. `{ weight = 2, zone = "a" }`.
    #[serde(default)]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The health check; without one the service counts as healthy while the daemon runs.
    #[serde(default)]
    pub check: Option<HookCommand>,
    /// How often the health check runs.
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long one health check may run before its process group is killed (and it fails).
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy (or starting) service healthy.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that make a healthy service unhealthy.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

impl ServiceConfig {
    /// The znode whose children are this service's members.
    pub fn members_path(&self) -> String {
        self.path.clone().unwrap_or_else(|| services_path(&self.name))
    }

    /// The member's JSON data: the extra fields with `host` and `port` set over them.
    pub fn member_data(&self) -> Vec<u8> {
        let mut m = self.data.clone();
        m.insert("host".into(), self.host.clone().into());
        m.insert("port".into(), self.port.into());
        serde_json::to_vec(&serde_json::Value::Object(m)).expect("member data serializes")
    }
}

/// Where a service's members live when no `path` is configured.
pub fn services_path(name: &str) -> String {
    format!("{DEFAULT_SERVICES_ROOT}/{name}")
}

/// Parent of every service's members by default (beside `/applications`, outside our own
/// root, so that existing clients and scripts find them where the pattern puts them).
pub const DEFAULT_SERVICES_ROOT: &str = "/services";

fn default_service_host() -> String {
    this_host()
}

fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

/// This host's name: the default `node_id`, and a service's default `host`.
pub(super) fn this_host() -> String {
    hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into())
}
