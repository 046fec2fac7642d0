//! The TOML configuration: one file, a few environment overrides, and errors that say which
//! file, which key and what was expected.
//!
//! Its rooms, one per section: `zookeeper`, `agent`, `acl`, `app` (`[[app]]`, published or
//! rendered by type), `service` (`[[service]]`), `hook` (the commands both run), and `verify` (post-reload verification). This file holds the whole file's shape, the
//! overrides, and the checks across sections.
//!
//! May use: `model`, the leaves. Checks that need what only ZooKeeper's layer builds (the TLS
//! files) run in [`crate::zk::identity::load_config`].

mod acl;
mod agent;
mod app;
mod bad_key;
pub mod dropins;
mod group;
mod hook;
pub mod keys;
mod log;
mod service;
mod verify;
mod zookeeper;

pub use acl::{acl_identity, AclConfig};
pub use agent::AgentConfig;
pub use app::{validate_pacing, AppConfig, AppKind, AppSource, PublishedApp, RenderConfig, Resync, DEFAULT_MODE, DEFAULT_RESYNC, MAX_SPLAY, MIN_RESYNC};
pub use group::{ReloadGroupConfig, QUIET_CAP};
pub use hook::{shell_quote, HookCommand};
pub use log::LogFormat;
pub use verify::{VerifyCheck, VerifyConfig};
pub use service::{services_path, ServiceConfig, DEFAULT_SERVICES_ROOT};
pub use zookeeper::{AuthScheme, BadConnectString, ConnectString, TlsConfig, ZkConfig};

use crate::model::layout::validate_app_name;
use app::SUBKEY;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon and `zkcoordctl` look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/zkcoord.toml";

/// Environment variables that override one key each. Only these are read, so an unrelated
/// `ZKCOORD_*` variable (say, for a wrapper script) is never mistaken for configuration.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("ZKCOORD_ZK_HOSTS", "zookeeper.hosts"),
    ("ZKCOORD_SESSION_TIMEOUT", "zookeeper.session_timeout"),
    ("ZKCOORD_ROLE", "role"),
    ("ZKCOORD_NODE_ID", "node_id"),
    ("ZKCOORD_STATE_DIR", "state_dir"),
];

/// Which halves of the daemon run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Elects leaders, turns publish requests into versions.
    Agent,
    /// Applies versions to files on this host.
    App,
    /// Both in one process.
    Both,
}

impl Role {
    /// Whether the agent half runs.
    pub fn runs_agent(self) -> bool {
        matches!(self, Role::Agent | Role::Both)
    }
    /// Whether the app half runs.
    pub fn runs_app(self) -> bool {
        matches!(self, Role::App | Role::Both)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Agent => "agent",
            Role::App => "app",
            Role::Both => "both",
        })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which halves run here.
    pub role: Role,
    /// This host's name in registrations and status reports; defaults to the host name.
    #[serde(default = "service::this_host")]
    pub node_id: String,
    /// This host's labels (`labels = { dc = "fra", rack = "r12" }`), shown in its status
    /// reports, so a rollout's waves can name hosts by them (`--waves dc=fra,dc=ams,*`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where applied versions are remembered, so a restart with nothing new does nothing.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Log filter, e.g. "info" or "zkcoord=debug,info"; ZKCOORD_LOG or RUST_LOG override it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// "text", "json" or "journal"; absent: the journal under systemd, text otherwise.
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    /// How to reach ZooKeeper and where our znodes live.
    pub zookeeper: ZkConfig,
    /// Agent settings; defaults apply when the section is absent.
    #[serde(default)]
    pub agent: AgentConfig,
    /// The applications this host applies (role app or both).
    #[serde(default, rename = "app")]
    pub apps: Vec<AppConfig>,
    /// Who may do what in ZooKeeper (off by default).
    #[serde(default)]
    pub acl: AclConfig,
    /// The optional HTTP listener for `/healthz` and `/metrics`; off when absent.
    #[serde(default)]
    pub http: HttpConfig,
    /// Largest config (or packed bundle) accepted, in bytes or like "64MiB"; content beyond
    /// one node's 1 MB limit is stored in chunk nodes ([`crate::zk::blobs`]).
    #[serde(default = "default_max_config_size", deserialize_with = "deserialize_size")]
    pub max_config_size: u64,
    /// Local services this host registers as live members while they are healthy (any role).
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// Where drop-in files are read from (main file only); absent: `zkcoord.d` beside the
    /// main file. See [`dropins`].
    #[serde(default)]
    pub dropin_dir: Option<PathBuf>,
    /// How often every app's follower looks again by itself (re-reads the newest version,
    /// compares the destination's hash, checks our ephemeral nodes, re-arms its watches),
    /// unless its `[[app]]` entry says otherwise; `"off"` for never.
    #[serde(default)]
    pub resync_interval: Resync,
    /// Reload groups by name (`[reload_group.nginx]`): apps naming one share its check,
    /// reload and verify ([`ReloadGroupConfig`]).
    #[serde(default, rename = "reload_group")]
    pub reload_groups: std::collections::BTreeMap<String, ReloadGroupConfig>,
    /// Every file this configuration was read from, the main file first, then its drop-ins
    /// in the order merged: `--check-config` lists them. Empty when parsed from text.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

/// The `[http]` section: where monitoring reads the daemon's health and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address for `/healthz` and `/metrics`, e.g. "127.0.0.1:9877"; absent means no listener.
    /// Anything but loopback is logged as a warning: the endpoints have no authentication.
    #[serde(default)]
    pub listen: Option<String>,
}

fn default_max_config_size() -> u64 {
    crate::config::DEFAULT_MAX_CONFIG_SIZE
}

fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    let parsed = match Size::deserialize(d)? {
        Size::Bytes(n) => Some(n),
        Size::Text(s) => parse_size(&s),
    };
    parsed.ok_or_else(|| serde::de::Error::custom("expected a size in bytes or like \"64MiB\", \"500KiB\""))
}

/// Parses "67108864", "64MiB", "64M", "500KiB" (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/zkcoord")
}
fn default_log_level() -> String {
    "info".into()
}
/// Why a configuration could not be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key has the wrong type or is unknown.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What went wrong, with the key.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("config {path}: key `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What was expected.
        message: String,
    },
}

impl ConfigError {
    /// A value that parses but cannot be used, found by a check that runs after loading (the
    /// TLS files, in [`crate::zk::identity::load_config`]).
    pub fn invalid(path: &Path, key: &str, message: &str) -> ConfigError {
        ConfigError::Invalid { path: path.to_path_buf(), key: key.to_string(), message: message.to_string() }
    }
}

/// Refuses two apps that write the same place: the same `dest` (the file would hold only the
/// last one's bytes while both report ok), or a `dest` inside a bundle's tree. Names both.
fn overlapping_dests(apps: &[AppConfig]) -> Result<(), String> {
    for (i, a) in apps.iter().enumerate() {
        for (j, b) in apps.iter().enumerate().skip(i + 1) {
            let same = a.dest == b.dest;
            let inside = |outer: &AppConfig, inner: &AppConfig| outer.kind() == AppKind::Bundle && inner.dest.starts_with(&outer.dest);
            if same || inside(a, b) || inside(b, a) {
                let how = if same { "the same dest" } else { "overlapping trees (one dest is inside the other's bundle)" };
                return Err(format!(
                    "app[{i}] {:?} ({}) and app[{j}] {:?} ({}) have {how}; give each app its own dest",
                    a.name,
                    a.dest.display(),
                    b.name,
                    b.dest.display()
                ));
            }
        }
    }
    Ok(())
}

impl Config {
    /// Reads `path` and its drop-ins ([`dropins`]), overrides from the environment, parses
    /// and validates the merged result. An error in an `[[app]]` or `[[service]]` entry names
    /// the file that entry came from.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.to_path_buf(), source });
        let text = read(path)?;
        let main = dropins::parse(path, &text)?;
        let dir = dropins::dropin_dir(path, &main)?;
        let files = dropins::list(&dir)?;
        let env = |k: &str| std::env::var(k).ok();
        if files.is_empty() {
            let mut config = Self::from_toml(path, &text, env)?;
            config.files = vec![path.to_path_buf()];
            return Ok(config);
        }
        let mut parsed = Vec::with_capacity(files.len());
        for f in files {
            let t = dropins::parse(&f, &read(&f)?)?;
            parsed.push((f, t));
        }
        let merged = dropins::merge(path, main, parsed)?;
        let text = toml::to_string(&merged.table)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: format!("cannot merge drop-ins: {e}") })?;
        let mut config = Self::from_toml(path, &text, env).map_err(|e| blame_entry(e, &merged))?;
        config.files = merged.files;
        Ok(config)
    }

    /// Parses TOML text as if read from `path`, with `env` looked up for the overrides.
    pub fn from_toml(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse { path: path.to_path_buf(), message };
        // Parse with the toml crate first: its errors carry line and column.
        toml::from_str::<toml::Value>(text).map_err(|e| parse_err(e.to_string().trim_end().to_string()))?;
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml));
        for (var, key) in ENV_OVERRIDES {
            if let Some(value) = env(var) {
                builder = builder.set_override(*key, value).map_err(|e| parse_err(e.to_string()))?;
            }
        }
        let merged = builder.build().map_err(|e| parse_err(e.to_string()))?;
        let mut config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let mut key = e.path().to_string();
            let mut inner = e.into_inner().to_string();
            // The config crate names the key again at the end, garbled (`app[0]mode`): ours,
            // in front, is the one to read.
            if let Some(cut) = inner.rfind(" for key `").filter(|_| inner.ends_with('`')) {
                inner.truncate(cut);
            }
            // A table's conversion names one of its keys as `@key: why` (see SUBKEY).
            if let Some((sub, why)) = inner.strip_prefix(SUBKEY).and_then(|r| r.split_once(": ")) {
                key = format!("{key}.{sub}");
                inner = why.to_string();
            }
            if key == "." || key.is_empty() {
                parse_err(inner)
            } else {
                parse_err(format!("key `{key}`: {inner}"))
            }
        })?;
        config.validate(path)?;
        // Each app carries its own pass interval, so a SIGHUP that changes the top-level one
        // restarts exactly the followers it changes.
        let resync = config.resync_interval;
        for app in &mut config.apps {
            app.resync_interval.get_or_insert(resync);
            // validate() made sure the table exists.
            if let Some(g) = app.reload_group.as_mut() {
                if let Some(table) = config.reload_groups.get(&g.name) {
                    *g = ReloadGroupConfig { name: g.name.clone(), ..table.clone() };
                }
            }
        }
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if let Err(e) = ConnectString::parse(&self.zookeeper.hosts) {
            return Err(invalid("zookeeper.hosts", &e.to_string()));
        }
        if self.zookeeper.session_timeout < Duration::from_millis(100) {
            return Err(invalid("zookeeper.session_timeout", "expected at least 100ms"));
        }
        for (key, p) in [
            ("zookeeper.root", &self.zookeeper.root),
            ("zookeeper.applications", &self.zookeeper.applications),
            ("agent.election_path", &self.agent.election_path),
        ] {
            validate_znode_path(p).map_err(|e| invalid(key, &e.to_string()))?;
        }
        if self.node_id.is_empty() || self.node_id.contains('/') || self.node_id.chars().any(char::is_control) {
            return Err(invalid("node_id", "expected a non-empty name without '/' or control characters"));
        }
        for (k, v) in &self.labels {
            if !crate::model::rollout::is_label_word(k) || !crate::model::rollout::is_label_word(v) {
                return Err(invalid(&format!("labels.{k}"), "expected a word (no spaces, '=', ',', '/' or '*'), like dc = \"fra\""));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(invalid("log_level", "expected a level like \"info\" or a filter like \"zkcoord=debug,info\""));
        }
        if let Some(f) = &self.zookeeper.auth_file {
            crate::secret::load_user_password(f).map_err(|e| invalid("zookeeper.auth_file", &e.to_string()))?;
        }
        if self.zookeeper.auth_scheme == AuthScheme::Sasl && self.zookeeper.auth_file.is_none() {
            return Err(invalid("zookeeper.auth_scheme", "\"sasl\" needs [zookeeper] auth_file with the SASL user:password"));
        }
        let has_client_cert = self.zookeeper.tls.as_ref().is_some_and(|t| t.cert_file.is_some());
        if self.acl.enabled && self.zookeeper.auth_file.is_none() && !has_client_cert {
            return Err(invalid("acl.enabled", "needs [zookeeper] auth_file (or a TLS client certificate): nodes are owned by the identity that creates them"));
        }
        for (key, ids) in [("acl.agents", &self.acl.agents), ("acl.apps", &self.acl.apps), ("acl.publishers", &self.acl.publishers)] {
            let well_formed = |entry: &String| match acl_identity(entry) {
                ("digest", id) => matches!(id.split_once(':'), Some((u, h)) if !u.is_empty() && h.len() == 28 && h.ends_with('=')),
                (_, id) => !id.is_empty(),
            };
            if let Some(bad) = ids.iter().find(|id| !well_formed(id)) {
                return Err(invalid(key, &format!("expected digest identities like \"ops:lK75jTNcA+U9vtVEw5vB51mj/w4=\" (from `zkcoordctl acl digest ops:password`), \"sasl:<user>\" or \"x509:<certificate subject>\", got {bad:?}")));
            }
        }
        if let Some(f) = &self.agent.trigger_token_file {
            crate::secret::load_line(f).map_err(|e| invalid("agent.trigger_token_file", &e.to_string()))?;
        }
        if self.agent.leaders == 0 {
            return Err(invalid("agent.leaders", "expected at least 1"));
        }
        if self.max_config_size == 0 || self.max_config_size > 1 << 30 {
            return Err(invalid("max_config_size", "expected between 1 byte and 1GiB"));
        }
        if self.agent.keep_versions == 0 {
            return Err(invalid("agent.keep_versions", "expected at least 1"));
        }
        // A publisher must have time to read its answer, even over a slow link.
        if self.agent.outcome_ttl < std::time::Duration::from_secs(1) {
            return Err(invalid("agent.outcome_ttl", "expected at least 1s"));
        }
        for (name, gate) in &self.agent.gates {
            let key = format!("agent.gates.{name}");
            if !crate::model::rollout::is_gate_name(name) {
                return Err(invalid(&key, "expected a gate name without spaces or '/'"));
            }
            if gate.is_empty() {
                return Err(invalid(&key, "expected a non-empty command"));
            }
        }
        if self.agent.gate_timeout < std::time::Duration::from_secs(1) {
            return Err(invalid("agent.gate_timeout", "expected at least 1s"));
        }
        if let Some(addr) = &self.agent.trigger_listen {
            // With no slot the listener would never accept: every trigger would wait unanswered.
            if self.agent.trigger_max_connections == 0 {
                return Err(invalid("agent.trigger_max_connections", "expected at least 1"));
            }
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid("agent.trigger_listen", "expected an address like \"127.0.0.1:8877\""));
            }
            match &self.agent.trigger_app {
                None => return Err(invalid("agent.trigger_app", "expected an app name when trigger_listen is set")),
                Some(app) => validate_app_name(app).map_err(|e| invalid("agent.trigger_app", &e.to_string()))?,
            }
        }
        if let Some(addr) = &self.http.listen {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid("http.listen", &format!("expected an address like \"127.0.0.1:9877\", got {addr:?}")));
            }
        }
        if self.role.runs_app() && self.apps.is_empty() && self.services.is_empty() {
            return Err(invalid("app", &format!("role \"{}\" needs at least one [[app]] entry (or a [[service]] to register)", self.role)));
        }
        self.validate_services(&invalid)?;
        overlapping_dests(&self.apps).map_err(|m| invalid("app", &m))?;
        let mut seen = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let key = |k: &str| format!("app[{i}].{k}");
            if let Some(g) = &app.reload_group {
                let known: Vec<&str> = self.reload_groups.keys().map(String::as_str).collect();
                if !self.reload_groups.contains_key(&g.name) {
                    return Err(invalid(&key("reload_group"), &format!("expected the name of a [reload_group.<name>] table; there is no [reload_group.{}] (tables: {})", g.name, if known.is_empty() { "none".to_string() } else { known.join(", ") })));
                }
                for (k, set) in [("reload", app.reload.is_some()), ("verify", app.verify.is_some())] {
                    if set {
                        return Err(invalid(&key(k), &format!("a member of reload group {:?} is reloaded and verified by the group: set {k} in [reload_group.{}], not here", g.name, g.name)));
                    }
                }
                if app.kind() == AppKind::Bundle {
                    return Err(invalid(&key("reload_group"), "expected a file app: bundles cannot join a reload group yet"));
                }
            }
            validate_app_name(&app.name).map_err(|e| invalid(&key("name"), &e.to_string()))?;
            if !seen.insert(app.name.clone()) {
                return Err(invalid(&key("name"), &format!("expected unique names; {:?} appears twice", app.name)));
            }
            if let Some(p) = app.published().and_then(|p| p.path.as_ref()) {
                validate_znode_path(p).map_err(|e| invalid(&key("path"), &e.to_string()))?;
            }
            if !app.dest.is_absolute() || app.dest.file_name().is_none() || app.dest.as_os_str().as_encoded_bytes().ends_with(b"/") {
                return Err(invalid(&key("dest"), &format!("expected an absolute path to a file, got {:?}", app.dest.display().to_string())));
            }
            // A directory where the file should go fails every apply ("Is a directory"), forever.
            let is_real_dir = std::fs::symlink_metadata(&app.dest).is_ok_and(|m| m.is_dir());
            if is_real_dir && app.kind() == AppKind::File {
                return Err(invalid(&key("dest"), &format!("{} is an existing directory; expected the path of a file (e.g. {}/{})", app.dest.display(), app.dest.display(), app.name)));
            }
            if let Some(user) = &app.owner {
                if user.parse::<u32>().is_err() && nix::unistd::User::from_name(user).ok().flatten().is_none() {
                    return Err(invalid(&key("owner"), &format!("expected a user name or uid; there is no user {user:?}")));
                }
            }
            if let Some(group) = &app.group {
                if group.parse::<u32>().is_err() && nix::unistd::Group::from_name(group).ok().flatten().is_none() {
                    return Err(invalid(&key("group"), &format!("expected a group name or gid; there is no group {group:?}")));
                }
            }
            for (k, hook) in [("check", &app.check), ("reload", &app.reload)] {
                if hook.as_ref().is_some_and(HookCommand::is_empty) {
                    return Err(invalid(&key(k), "expected a non-empty command"));
                }
            }
            if let Some(user) = &app.run_as {
                if user.parse::<u32>().is_err() && nix::unistd::User::from_name(user).ok().flatten().is_none() {
                    return Err(invalid(&key("run_as"), &format!("expected a user name or uid; there is no user {user:?}")));
                }
            }
            if app.published().is_some_and(|p| p.kind == AppKind::Bundle && p.keep_local < 2) {
                return Err(invalid(&key("keep_local"), "expected at least 2 (the current version and the one to flip back to)"));
            }
            if app.hook_timeout.is_zero() {
                return Err(invalid(&key("hook_timeout"), "expected a positive duration like \"30s\""));
            }
            if let Some(p) = app.published() {
                validate_pacing(p).map_err(|(k, m)| invalid(&key(k), &m))?;
            }
            if let Some(r) = app.rendered() {
                validate_app_name(&r.service).map_err(|e| invalid(&key("render.service"), &e.to_string()))?;
                if let Some(p) = &r.path {
                    validate_znode_path(p).map_err(|e| invalid(&key("render.path"), &e.to_string()))?;
                }
                if !r.template.is_absolute() {
                    return Err(invalid(&key("render.template"), &format!("expected an absolute path to a template file on this host, got {:?}", r.template.display().to_string())));
                }
                if r.allow_empty && r.min_members.is_some_and(|n| n > 0) {
                    return Err(invalid(&key("render.min_members"), "contradicts allow_empty = true, which is min_members = 0; set one of them"));
                }
                if r.quiet.is_zero() || r.max_wait < r.quiet {
                    return Err(invalid(&key("render.max_wait"), "expected 0 < quiet <= max_wait (e.g. quiet = \"200ms\", max_wait = \"2s\")"));
                }
            }
            if let Some(p) = app.published() {
                crate::model::signing::TrustedKeys::load(&p.trusted_keys).map_err(|e| invalid(&key("trusted_keys"), &e.to_string()))?;
            }
        }
        Ok(())
    }

    fn validate_services(&self, invalid: &dyn Fn(&str, &str) -> ConfigError) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = |k: &str| format!("service[{i}].{k}");
            validate_app_name(&s.name).map_err(|e| invalid(&key("name"), &e.to_string()))?;
            if !seen.insert(s.name.clone()) {
                return Err(invalid(&key("name"), &format!("expected unique names; {:?} appears twice", s.name)));
            }
            if let Some(p) = &s.path {
                validate_znode_path(p).map_err(|e| invalid(&key("path"), &e.to_string()))?;
            }
            if let Some(n) = &s.node_name {
                if n.is_empty() || n.contains('/') || n.chars().any(char::is_control) {
                    return Err(invalid(&key("node_name"), &format!("expected a znode name without '/', got {n:?}")));
                }
            }
            if s.host.trim().is_empty() {
                return Err(invalid(&key("host"), "expected an address or host name clients can connect to"));
            }
            if s.port == 0 {
                return Err(invalid(&key("port"), "expected a port from 1 to 65535"));
            }
            if let Some(k) = ["host", "port"].into_iter().find(|k| s.data.contains_key(*k)) {
                return Err(invalid(&key(&format!("data.{k}")), &format!("`{k}` is set by the service's own `{k}` key; remove it from data")));
            }
            match &s.check {
                Some(HookCommand::Argv(v)) if v.is_empty() || v[0].is_empty() => {
                    return Err(invalid(&key("check"), "expected a non-empty command"))
                }
                Some(HookCommand::Shell(c)) if c.trim().is_empty() => return Err(invalid(&key("check"), "expected a non-empty command")),
                _ => {}
            }
            for (k, d) in [("interval", s.interval), ("timeout", s.timeout)] {
                if d.is_zero() {
                    return Err(invalid(&key(k), "expected a positive duration like \"5s\""));
                }
            }
            for (k, n) in [("rise", s.rise), ("fall", s.fall)] {
                if n == 0 {
                    return Err(invalid(&key(k), "expected a count of at least 1"));
                }
            }
        }
        Ok(())
    }

    /// The znode layout this configuration names.
    /// What is allowed but probably not meant (printed by `--check-config`, logged at start):
    /// `[[app]]` entries under `role = "agent"` are never applied.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.role.runs_app() && !self.apps.is_empty() {
            let names: Vec<&str> = self.apps.iter().map(|a| a.name.as_str()).collect();
            out.push(format!(
                "role = \"{}\" applies no [[app]]: {} ignored here (the leader still prepares their parents); set role = \"both\" to apply them",
                self.role,
                names.join(", ")
            ));
        }
        out
    }

    /// Where every znode lives, with each app's `[[app]] path`.
    pub fn layout(&self) -> crate::model::layout::Layout {
        let base = crate::model::layout::Layout::new(&self.zookeeper.root, &self.zookeeper.applications, &self.agent.election_path);
        self.apps.iter().filter_map(|a| a.published()?.path.as_deref().map(|p| (a.name.as_str(), p))).fold(base, |l, (app, p)| l.with_app_path(app, p))
    }
}

/// Moves an error about `app[i]` or `service[i]` of a merged configuration to the file that
/// entry came from, so the operator opens the right file.
fn blame_entry(e: ConfigError, merged: &dropins::Merged) -> ConfigError {
    let source = |text: &str| {
        [("app[", &merged.app_sources), ("service[", &merged.service_sources)].into_iter().find_map(|(prefix, sources)| {
            let rest = text.split(prefix).nth(1)?;
            let i: usize = rest.split(']').next()?.parse().ok()?;
            sources.get(i).cloned()
        })
    };
    match e {
        ConfigError::Invalid { path, key, message } => ConfigError::Invalid { path: source(&key).unwrap_or(path), key, message },
        ConfigError::Parse { path, message } => ConfigError::Parse { path: source(&message).unwrap_or(path), message },
        other => other,
    }
}

/// A path that is no absolute, clean znode path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an absolute znode path like \"/a/b\", got {0:?}")]
pub struct BadZnodePath(pub String);

/// An absolute znode path without empty, `.` or `..` segments.
pub fn validate_znode_path(p: &str) -> Result<(), BadZnodePath> {
    let bad = !p.starts_with('/')
        || p.len() < 2
        || p.ends_with('/')
        || p[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..")
        || p.chars().any(char::is_control);
    if bad {
        Err(BadZnodePath(p.to_string()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
role = "both"
node_id = "web-01"
[zookeeper]
hosts = "127.0.0.1:2181"
[[app]]
name = "nginxconf"
dest = "/etc/nginx/nginx.conf"
reload = ["nginx", "-s", "reload"]
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/zkcoord.toml"), text, |_| None)
    }

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.role, Role::Both);
        assert_eq!(c.zookeeper.session_timeout, Duration::from_secs(10));
        assert_eq!(c.agent.leaders, 1);
        assert_eq!(c.agent.keep_versions, 100);
        assert_eq!(c.apps[0].mode, None, "absent: an existing file keeps its mode");
        assert_eq!(c.apps[0].mode_for(None), 0o644);
        assert_eq!(c.apps[0].mode_for(Some(0o600)), 0o600);
        assert_eq!(c.apps[0].resync(), Some(Duration::from_secs(300)));
        assert_eq!(c.apps[0].on_drift, crate::model::drift::OnDrift::Reapply);
        assert_eq!(c.apps[0].hook_timeout, Duration::from_secs(30));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/zkcoord"));
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = load(&MINIMAL.replace("node_id = \"web-01\"", "node_id = \"web-01\"\nfrobnicate = 1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/zkcoord.toml"), "{err}");
        assert!(err.contains("frobnicate"), "{err}");
    }

    #[test]
    fn bad_mode_names_the_key_and_the_expected_form() {
        let err = load(&MINIMAL.replace("reload =", "mode = \"rw-r--r--\"\nreload =")).unwrap_err().to_string();
        assert!(err.contains("app[0].mode") || err.contains("app.0.mode"), "{err}");
        assert!(err.contains("octal"), "{err}");
    }

    #[test]
    fn apps_under_role_agent_are_warned_about_not_refused() {
        let c = load(&MINIMAL.replace("role = \"both\"", "role = \"agent\"")).unwrap();
        let w = c.warnings();
        assert!(w.len() == 1 && w[0].contains("applies no [[app]]") && w[0].contains("nginxconf"), "{w:?}");
        assert!(load(MINIMAL).unwrap().warnings().is_empty());
    }

    #[test]
    fn a_bad_value_names_its_key_once_and_readably() {
        let err = load(&format!("{MINIMAL}mode = \"9999\"\n")).unwrap_err().to_string();
        assert!(err.contains("key `app[0].mode`") && err.contains("got \"9999\""), "{err}");
        assert!(!err.contains("app[0]mode"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = load(&MINIMAL.replace("hosts = ", "session_timeout = \"soon\"\nhosts = ")).unwrap_err().to_string();
        assert!(err.contains("zookeeper.session_timeout"), "{err}");
    }

    #[test]
    fn gates_are_named_commands_and_a_bad_one_names_its_key() {
        let with = |gates: &str| MINIMAL.replace("[[app]]", &format!("[agent]\ngates = {{ {gates} }}\n[[app]]"));
        let c = load(&with(r#"errors = ["check-5xx", "{canaries}"]"#)).unwrap();
        assert_eq!(c.agent.gates["errors"], HookCommand::Argv(vec!["check-5xx".into(), "{canaries}".into()]));
        assert_eq!(c.agent.gate_timeout, Duration::from_secs(60));
        let err = load(&with(r#""a b" = ["x"]"#)).unwrap_err().to_string();
        assert!(err.contains("agent.gates.a b") && err.contains("without spaces"), "{err}");
        let err = load(&with(r#"errors = []"#)).unwrap_err().to_string();
        assert!(err.contains("agent.gates.errors") && err.contains("non-empty command"), "{err}");
    }

    #[test]
    fn malformed_toml_says_where() {
        let err = load("role = \"both\n").unwrap_err().to_string();
        assert!(err.contains("/etc/zkcoord.toml") && err.contains("line"), "{err}");
    }

    #[test]
    fn a_trigger_without_a_single_connection_slot_is_refused() {
        let text = MINIMAL.replace(
            "[zookeeper]",
            "[agent]\ntrigger_listen = \"127.0.0.1:8877\"\ntrigger_app = \"nginxconf\"\ntrigger_max_connections = 0\n[zookeeper]",
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("agent.trigger_max_connections") && err.contains("at least 1"), "{err}");
    }

    #[test]
    fn app_role_without_apps_is_refused() {
        let err = load("role = \"app\"\n[zookeeper]\nhosts = \"h:1\"\n").unwrap_err().to_string();
        assert!(err.contains("[[app]]"), "{err}");
    }

    #[test]
    fn environment_overrides_the_connect_string_and_ignores_unrelated_variables() {
        let c = Config::from_toml(Path::new("x.toml"), MINIMAL, |k| match k {
            "ZKCOORD_ZK_HOSTS" => Some("zk9:2181/chroot".into()),
            "ZKCOORD_UNRELATED" => Some("whatever".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.zookeeper.hosts, "zk9:2181/chroot");
    }

    #[test]
    fn shell_string_hooks_run_through_sh_and_substitute_src() {
        let c = load(&MINIMAL.replace("reload =", "check = \"nginx -t -c {src}\"\nreload =")).unwrap();
        let argv = c.apps[0].check.as_ref().unwrap().argv(Some(Path::new("/tmp/x")));
        assert_eq!(argv, vec!["/bin/sh", "-c", "nginx -t -c /tmp/x"]);
    }

    #[test]
    fn http_listen_is_off_by_default_and_validated_as_an_address() {
        assert_eq!(load(MINIMAL).unwrap().http.listen, None);
        let c = load(&format!("{MINIMAL}\n[http]\nlisten = \"127.0.0.1:9877\"\n")).unwrap();
        assert_eq!(c.http.listen.as_deref(), Some("127.0.0.1:9877"));
        let err = load(&format!("{MINIMAL}\n[http]\nlisten = \"localhost\"\n")).unwrap_err().to_string();
        assert!(err.contains("http.listen") && err.contains("127.0.0.1:9877"), "{err}");
        let err = load(&format!("{MINIMAL}\n[http]\nlisten = \"127.0.0.1:1\"\nport = 2\n")).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn pacing_keys_are_optional_and_errors_name_the_key() {
        let c = load(MINIMAL).unwrap();
        let p = c.apps[0].published().unwrap();
        assert_eq!((p.max_parallel_reloads, p.splay), (None, None));
        let c = load(&format!("{MINIMAL}max_parallel_reloads = 2\nsplay = \"10s\"\n")).unwrap();
        let p = c.apps[0].published().unwrap();
        assert_eq!((p.max_parallel_reloads, p.splay), (Some(2), Some(Duration::from_secs(10))));
        let err = load(&format!("{MINIMAL}max_parallel_reloads = 0\n")).unwrap_err().to_string();
        assert!(err.contains("app[0].max_parallel_reloads") && err.contains("at least 1"), "{err}");
        let err = load(&format!("{MINIMAL}splay = \"soon\"\n")).unwrap_err().to_string();
        assert!(err.contains("splay"), "{err}");
        let err = load(&format!("{MINIMAL}splay = \"2h\"\n")).unwrap_err().to_string();
        assert!(err.contains("app[0].splay") && err.contains("at most"), "{err}");
        let err = load(&format!("{MINIMAL}max_parallel_reloads = -1\n")).unwrap_err().to_string();
        assert!(err.contains("max_parallel_reloads"), "{err}");
    }

    #[test]
    fn app_names_and_paths_are_validated() {
        assert!(validate_app_name("nginx.conf-1_a").is_ok());
        assert!(validate_app_name("../etc").is_err());
        assert!(validate_znode_path("/applications").is_ok());
        assert!(validate_znode_path("/a//b").is_err());
        assert!(validate_znode_path("relative").is_err());
    }

    #[test]
    fn services_take_defaults_and_merge_host_and_port_into_their_data() {
        let c = load(&format!("{MINIMAL}\n[[service]]\nname = \"web\"\nhost = \"10.0.0.5\"\nport = 8001\ndata = {{ weight = 2, zone = \"a\" }}\n")).unwrap();
        let s = &c.services[0];
        assert_eq!(s.members_path(), "/services/web");
        assert_eq!((s.rise, s.fall, s.interval), (2, 3, Duration::from_secs(5)));
        let data: serde_json::Value = serde_json::from_slice(&s.member_data()).unwrap();
        assert_eq!(data, serde_json::json!({"host": "10.0.0.5", "port": 8001, "weight": 2, "zone": "a"}));
    }

    #[test]
    fn bad_service_entries_name_the_key() {
        let base = format!("{MINIMAL}\n[[service]]\nname = \"web\"\nport = 8001\n");
        for (extra, key, expected) in [
            ("path = \"rpc\"\n", "service[0].path", "absolute znode path"),
            ("node_name = \"a/b\"\n", "service[0].node_name", "without '/'"),
            ("rise = 0\n", "service[0].rise", "at least 1"),
            ("fall = 0\n", "service[0].fall", "at least 1"),
            ("interval = \"0s\"\n", "service[0].interval", "positive duration"),
            ("check = []\n", "service[0].check", "non-empty command"),
            ("data = { port = 1 }\n", "service[0].data.port", "own `port` key"),
        ] {
            let err = load(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains("/etc/zkcoord.toml") && err.contains(key) && err.contains(expected), "{extra}: {err}");
        }
        let err = load(&format!("{MINIMAL}\n[[service]]\nname = \"web\"\nport = 0\n")).unwrap_err().to_string();
        assert!(err.contains("service[0].port"), "{err}");
        let err = load(&format!("{MINIMAL}\n[[service]]\nname = \"web\"\nport = 70000\n")).unwrap_err().to_string();
        assert!(err.contains("service") && err.contains("port"), "{err}");
        let err = load(&format!("{MINIMAL}\n[[service]]\nname = \"web\"\n")).unwrap_err().to_string();
        assert!(err.contains("port"), "a missing port is named: {err}");
        let err = load(&format!("{base}interval = \"often\"\n")).unwrap_err().to_string();
        assert!(err.contains("service[0].interval") || err.contains("service.0.interval"), "{err}");
        let err = load(&format!("{base}helth = 1\n")).unwrap_err().to_string();
        assert!(err.contains("helth"), "{err}");
        let err = load(&format!("{base}\n[[service]]\nname = \"web\"\nport = 2\n")).unwrap_err().to_string();
        assert!(err.contains("service[1].name") && err.contains("twice"), "{err}");
    }

    #[test]
    fn a_rendered_app_is_validated() {
        let render = "[app.render]\nservice = \"web\"\ntemplate = \"/etc/zkcoord/upstream.j2\"\n";
        let c = load(&format!("{MINIMAL}{render}")).unwrap();
        let r = c.apps[0].rendered().unwrap();
        assert_eq!((r.members_path(), r.allow_empty), ("/services/web".to_string(), false));
        let err = load(&format!("{MINIMAL}{}", render.replace("/etc/zkcoord/upstream.j2", "upstream.j2"))).unwrap_err().to_string();
        assert!(err.contains("app[0].render.template") && err.contains("absolute"), "{err}");
        let err = load(&format!("{MINIMAL}{render}quiet = \"5s\"\nmax_wait = \"1s\"\n")).unwrap_err().to_string();
        assert!(err.contains("app[0].render.max_wait"), "{err}");
        let err = load(&format!("{MINIMAL}{render}path = \"rpc\"\n")).unwrap_err().to_string();
        assert!(err.contains("app[0].render.path"), "{err}");
        let err = load(&format!("{MINIMAL}path = \"/x\"\n{render}")).unwrap_err().to_string();
        assert!(err.contains("app[0].path"), "{err}");
        for (k, v) in [("trusted_keys", "[\"/k.pub\"]"), ("kind", "\"bundle\""), ("max_parallel_reloads", "1"), ("splay", "\"1s\"")] {
            let err = load(&format!("{MINIMAL}{k} = {v}\n{render}")).unwrap_err().to_string();
            assert!(err.contains(&format!("app[0].{k}")) && err.contains("rendered app"), "{k}: {err}");
        }
    }

    #[test]
    fn the_member_guard_keys_take_their_forms_and_allow_empty_is_min_members_0() {
        use crate::model::member_guard::{MaxShrink, MemberGuard};
        let render = "[app.render]\nservice = \"web\"\ntemplate = \"/etc/zkcoord/upstream.j2\"\n";
        let guard = |extra: &str| load(&format!("{MINIMAL}{render}{extra}")).map(|c| c.apps[0].rendered().unwrap().guard());
        assert_eq!(guard("").unwrap(), MemberGuard { min_members: 1, max_shrink: MaxShrink::Percent(50) });
        assert_eq!(guard("allow_empty = true\n").unwrap(), MemberGuard { min_members: 0, max_shrink: MaxShrink::Off });
        assert_eq!(guard("min_members = 0\n").unwrap(), MemberGuard { min_members: 0, max_shrink: MaxShrink::Off });
        assert_eq!(guard("allow_empty = true\nmax_shrink = \"25%\"\n").unwrap(), MemberGuard { min_members: 0, max_shrink: MaxShrink::Percent(25) });
        assert_eq!(guard("min_members = 3\nmax_shrink = 10\n").unwrap(), MemberGuard { min_members: 3, max_shrink: MaxShrink::Count(10) });
        assert_eq!(guard("max_shrink = 0\n").unwrap().max_shrink, MaxShrink::Count(0));
        assert_eq!(guard("max_shrink = \"off\"\n").unwrap().max_shrink, MaxShrink::Off);
        for bad in ["max_shrink = \"150%\"\n", "max_shrink = -1\n", "max_shrink = \"half\"\n"] {
            let err = guard(bad).unwrap_err().to_string();
            assert!(err.contains("/etc/zkcoord.toml") && err.contains("max_shrink") && err.contains("expected a percentage"), "{bad}: {err}");
        }
        let err = guard("min_members = -2\n").unwrap_err().to_string();
        assert!(err.contains("min_members"), "{err}");
        let err = guard("allow_empty = true\nmin_members = 2\n").unwrap_err().to_string();
        assert!(err.contains("app[0].render.min_members") && err.contains("allow_empty"), "{err}");
    }

    #[test]
    fn resync_and_on_drift_take_their_forms_and_name_the_key_otherwise() {
        let c = load(&format!("resync_interval = \"off\"\n{MINIMAL}on_drift = \"hold\"\nmode = \"0600\"\n")).unwrap();
        assert_eq!((c.apps[0].resync(), c.apps[0].on_drift, c.apps[0].mode), (None, crate::model::drift::OnDrift::Hold, Some(0o600)));
        assert_eq!(c.apps[0].mode_for(Some(0o640)), 0o600, "an explicit mode wins");
        let c = load(&format!("resync_interval = \"1m\"\n{MINIMAL}resync_interval = 0\n")).unwrap();
        assert_eq!((c.resync_interval.0, c.apps[0].resync()), (Some(Duration::from_secs(60)), None), "the app's own wins");
        let c = load(&format!("resync_interval = \"2s\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.apps[0].resync(), Some(Duration::from_secs(2)), "the top-level one is each app's default");
        let err = load(&format!("resync_interval = \"10ms\"\n{MINIMAL}")).unwrap_err().to_string();
        assert!(err.contains("/etc/zkcoord.toml") && err.contains("resync_interval") && err.contains("at least 1s"), "{err}");
        let err = load(&format!("{MINIMAL}resync_interval = \"often\"\n")).unwrap_err().to_string();
        assert!(err.contains("app[0].resync_interval") && err.contains("\"off\""), "{err}");
        let err = load(&format!("{MINIMAL}on_drift = \"ignore\"\n")).unwrap_err().to_string();
        assert!(err.contains("app[0].on_drift") && err.contains("reapply"), "{err}");
    }

    #[test]
    fn an_app_host_that_only_registers_services_is_valid() {
        let c = load("role = \"app\"\n[zookeeper]\nhosts = \"h:1\"\n[[service]]\nname = \"web\"\nport = 80\n").unwrap();
        assert_eq!(c.services.len(), 1);
    }
}

/// Default largest config (`max_config_size`): 64 MiB.
pub const DEFAULT_MAX_CONFIG_SIZE: u64 = 64 << 20;



