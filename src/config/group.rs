//! Reload groups (`[reload_group.<name>]`, and `reload_group` on an `[[app]]`): several files
//! that one service reads (nginx.conf and conf.d/*.conf, published as separate apps) are
//! checked together, installed together, reloaded once and rolled back together
//! (consul-template #1006, #533), so no combination of them is ever half-applied.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use super::bad_key::BadAppKey;
use super::hook::HookCommand;
use super::verify::{self, VerifyConfig, VerifyKey};

/// A `[reload_group.<name>]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    #[serde(default)]
    check: Option<HookCommand>,
    #[serde(default)]
    reload: Option<HookCommand>,
    #[serde(default = "default_hook_timeout", with = "humantime_serde")]
    hook_timeout: Duration,
    #[serde(default)]
    run_as: Option<String>,
    #[serde(default)]
    verify: Option<VerifyKey>,
    #[serde(default = "verify::default_verify_timeout", with = "humantime_serde")]
    verify_timeout: Duration,
    #[serde(default = "verify::default_verify_settle", with = "humantime_serde")]
    verify_settle: Duration,
    #[serde(default)]
    nginx_pid: Option<PathBuf>,
    #[serde(default)]
    nginx_error_log: Option<PathBuf>,
    #[serde(default = "default_quiet", with = "humantime_serde")]
    quiet: Duration,
}

/// One reload group: the service's own check over the installed set, its one reload and its
/// verification, and how long members' changes are gathered before they go together.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "GroupEntry")]
pub struct ReloadGroupConfig {
    /// The group's name (the table's key), filled in when the file is loaded.
    #[serde(skip)]
    pub name: String,
    /// Checks the whole installed set once (`nginx -t`), before the reload; failing, every
    /// member's previous file is put back and nothing is reloaded.
    pub check: Option<HookCommand>,
    /// Reloads the service once for the whole set.
    pub reload: Option<HookCommand>,
    /// How long the check or reload may run.
    pub hook_timeout: Duration,
    /// Run the group's hooks as this user.
    pub run_as: Option<String>,
    /// What proves after the reload that the service runs the set.
    pub verify: Option<VerifyConfig>,
    /// A member's change waits this long for the others' (restarted by each new one, at most
    /// [`QUIET_CAP`] times it in all), so a burst that touches several files reloads once.
    pub quiet: Duration,
}

/// How many quiet windows a gathering may last in all: a steady trickle of changes still
/// goes out.
pub const QUIET_CAP: u32 = 10;

fn default_hook_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_quiet() -> Duration {
    Duration::from_millis(500)
}

impl ReloadGroupConfig {
    /// A member's reference to the group `name` before the tables are joined up
    /// ([`crate::config::Config::from_toml`] puts the whole table in its place).
    pub fn named(name: String) -> ReloadGroupConfig {
        ReloadGroupConfig { name, check: None, reload: None, hook_timeout: default_hook_timeout(), run_as: None, verify: None, quiet: default_quiet() }
    }
}

impl TryFrom<GroupEntry> for ReloadGroupConfig {
    type Error = BadAppKey;

    fn try_from(e: GroupEntry) -> Result<ReloadGroupConfig, BadAppKey> {
        let verify = verify::from_keys(e.verify, e.verify_timeout, e.verify_settle, e.nginx_pid, e.nginx_error_log)
            .map_err(|(key, why)| BadAppKey { key, why })?;
        if e.quiet > Duration::from_secs(60) {
            return Err(BadAppKey { key: "quiet", why: "expected at most 60s: every member's change waits for it".into() });
        }
        Ok(ReloadGroupConfig { name: String::new(), check: e.check, reload: e.reload, hook_timeout: e.hook_timeout, run_as: e.run_as, verify, quiet: e.quiet })
    }
}
