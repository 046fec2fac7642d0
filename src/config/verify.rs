//! Post-reload verification (`verify`, `verify_timeout`, `verify_settle`, `nginx_pid`,
//! `nginx_error_log` of an `[[app]]`): a reload command that exits 0 has only asked the service
//! to reload (`nginx -s reload` signals the master and returns); verification is how a host
//! learns that the service really runs the new content before it reports it applied.

use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

use super::hook::HookCommand;

/// The `verify` key as written: the word `"nginx"` for the built-in check, or a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyKey {
    /// `verify = "nginx"`.
    Nginx,
    /// Any other string (run by `/bin/sh -c`) or an argv list.
    Command(HookCommand),
}

impl<'de> Deserialize<'de> for VerifyKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<VerifyKey, D::Error> {
        Ok(match HookCommand::deserialize(d)? {
            HookCommand::Shell(s) if s.trim() == "nginx" => VerifyKey::Nginx,
            other => VerifyKey::Command(other),
        })
    }
}

/// What proves that the service runs what was just installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyCheck {
    /// A command run after the reload, again and again until it exits 0 or the settle window
    /// has passed (at least once); each run is killed at `verify_timeout`. `{src}` is `dest`.
    Command(HookCommand),
    /// The built-in nginx check: a new worker generation appears under the master named by the
    /// pid file, and the error log (when given) holds no `[emerg]`, `[alert]`, `[crit]` or
    /// `[error]` line about the configuration written since the reload.
    Nginx {
        /// nginx's `pid` file.
        pid_file: PathBuf,
        /// nginx's `error_log` file, read from where it ended before the reload.
        error_log: Option<PathBuf>,
    },
}

/// An app's post-reload verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// What is checked.
    pub check: VerifyCheck,
    /// How long one verify command may run before its process group is killed.
    pub timeout: Duration,
    /// How long after the reload the service may take to show that it runs the new content.
    pub settle: Duration,
}

/// Default `verify_timeout`.
pub fn default_verify_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Default `verify_settle`: nginx starts a new worker generation within milliseconds when idle,
/// longer under load.
pub fn default_verify_settle() -> Duration {
    Duration::from_secs(3)
}

/// Builds the app's verification from its keys; Err is `(key, what was expected)`.
pub fn from_keys(
    verify: Option<VerifyKey>,
    timeout: Duration,
    settle: Duration,
    nginx_pid: Option<PathBuf>,
    nginx_error_log: Option<PathBuf>,
) -> Result<Option<VerifyConfig>, (&'static str, String)> {
    if settle.is_zero() {
        return Err(("verify_settle", "expected a duration above zero, e.g. \"3s\"".into()));
    }
    if timeout.is_zero() {
        return Err(("verify_timeout", "expected a duration above zero, e.g. \"10s\"".into()));
    }
    let check = match verify {
        None => {
            if nginx_pid.is_some() || nginx_error_log.is_some() {
                let key = if nginx_pid.is_some() { "nginx_pid" } else { "nginx_error_log" };
                return Err((key, "only applies with verify = \"nginx\"; add it or remove this key".into()));
            }
            return Ok(None);
        }
        Some(VerifyKey::Command(cmd)) => {
            if nginx_pid.is_some() || nginx_error_log.is_some() {
                let key = if nginx_pid.is_some() { "nginx_pid" } else { "nginx_error_log" };
                return Err((key, "only applies with verify = \"nginx\", not with a verify command".into()));
            }
            VerifyCheck::Command(cmd)
        }
        Some(VerifyKey::Nginx) => {
            let Some(pid_file) = nginx_pid else {
                return Err(("nginx_pid", "required with verify = \"nginx\": the path of nginx's pid file, e.g. \"/run/nginx.pid\"".into()));
            };
            for (key, path) in [("nginx_pid", Some(&pid_file)), ("nginx_error_log", nginx_error_log.as_ref())] {
                if let Some(p) = path.filter(|p| !p.is_absolute()) {
                    return Err((key, format!("expected an absolute path, got {:?}", p.display().to_string())));
                }
            }
            VerifyCheck::Nginx { pid_file, error_log: nginx_error_log }
        }
    };
    Ok(Some(VerifyConfig { check, timeout, settle }))
}
