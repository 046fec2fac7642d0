//! The per-host, per-application status report, kept in an ephemeral znode so anyone can see
//! which host runs which version, and which hosts are alive.

use serde::{Deserialize, Serialize};

/// How the last apply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyResult {
    /// Nothing applied yet (no version exists, or still starting).
    Pending,
    /// The version is on disk and the reload succeeded.
    Ok,
    /// The check command refused the version; the old file stays.
    CheckFailed,
    /// The reload failed; the previous file was put back.
    ReloadFailed,
    /// Fetching or writing failed; the daemon retries.
    Error,
    /// The version failed verification (its sha256, its size, or a required signature) and
    /// will not be installed; the old file stays.
    Rejected,
    /// The host no longer follows this app (removed from its config by SIGHUP) but may not
    /// delete its node (no DELETE on the status parent): the node stays until the session
    /// ends, and every reader skips it.
    Removed,
}

impl ApplyResult {
    /// The name the status node uses, for logs, `/healthz` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyResult::Pending => "pending",
            ApplyResult::Ok => "ok",
            ApplyResult::CheckFailed => "check-failed",
            ApplyResult::ReloadFailed => "reload-failed",
            ApplyResult::Error => "error",
            ApplyResult::Rejected => "rejected",
            ApplyResult::Removed => "removed",
        }
    }
}

/// The JSON in `<root>/status/<app>/<node_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The host's node id.
    pub host: String,
    /// The daemon's pid, to tell restarts apart.
    pub pid: u32,
    /// The application.
    pub app: String,
    /// The version on disk (the last one applied successfully), if any.
    pub version: Option<String>,
    /// sha256 of the bytes on disk.
    pub sha256: Option<String>,
    /// How the last attempt ended.
    pub result: ApplyResult,
    /// The version the last attempt was for, when it differs from `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted: Option<String>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When this report was written, in seconds since the epoch.
    pub time: u64,
    /// The version stream `version` belongs to (the versions parent's czxid): after an app's
    /// node is re-created, sequence numbers restart, so `zkcoordctl publish --wait` compares
    /// versions only within one stream. Absent from hosts older than streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<i64>,
    /// The destination holds something other than `version` (edited by hand) and this host
    /// leaves it so (`on_drift = "report"` or `"hold"`); absent while the file matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::model::drift::Drift>,
    /// The publish of the version this report is about: `attempted` when it is set, else
    /// `version` (absent for a plain client's version, a rendered app, or an older daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_id: Option<String>,
    /// Why this host applies nothing new now: the freeze in force for the app (see
    /// [`crate::model::freeze`]), so `status` shows that each host has seen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<String>,
    /// This host's check of a version under `--precheck`, staged and never installed (see
    /// [`crate::model::rollout::State::Precheck`]); the last one it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precheck: Option<Precheck>,
    /// The host's `labels` from its config, for rollouts in waves by label.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A host's answer to a precheck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precheck {
    /// The version checked.
    pub version: String,
    /// `ok` (passed), `check-failed`, `rejected` (failed verification) or `error` (could not stage it).
    pub result: ApplyResult,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StatusReport {
    /// The last words of a host that stops following its app: this report marked removed.
    pub fn tombstone(&self) -> StatusReport {
        StatusReport { result: ApplyResult::Removed, time: crate::clock::now_secs(), ..self.clone() }
    }

    /// [`StatusReport::tombstone`] of a status node's bytes, for the registration keeper.
    pub fn tombstone_bytes(data: &[u8]) -> Option<Vec<u8>> {
        serde_json::from_slice::<StatusReport>(data).ok().map(|r| r.tombstone().to_bytes())
    }

    /// JSON bytes for the znode.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("status serializes")
    }
}

/// How much of a failure's text a status report (and the journal line beside it) keeps: the
/// whole output of a hook is worth keeping, but a status node is read by every `status` and
/// `publish --wait`, and ZooKeeper nodes should stay small.
pub const ERROR_LIMIT: usize = 4096;

/// The severities a service (nginx, and programs that copied its log format) uses for lines
/// that say why something failed, worst first.
const SEVERITIES: [&str; 4] = ["[emerg]", "[alert]", "[crit]", "[error]"];

/// The line of a failure's text that says why it failed, for every place that shows an operator
/// one line (`publish --wait`, `status`, `watch`, a rollout's abort reason): the first line at
/// the worst severity present (`[emerg]`, `[alert]`, `[crit]`, `[error]`), else the last
/// non-empty line. Not the first line: Debian's nginx prints `[notice] ... signal process
/// started` before every error of `nginx -s reload`, so the first line never says why.
/// What zkcoord quotes in backticks (the command it ran) is not searched: a check written as
/// `sh -c '... echo [emerg] ...'` must not name its own command line as the reason.
pub fn reason(error: &str) -> &str {
    let lines = || error.lines().map(str::trim).filter(|l| !l.is_empty());
    for severity in SEVERITIES {
        if let Some(line) = lines().find(|l| outside_quotes(l).contains(severity)) {
            return line;
        }
    }
    lines().next_back().unwrap_or_default()
}

/// `line` without the spans zkcoord quotes in backticks.
fn outside_quotes(line: &str) -> String {
    line.split('`').step_by(2).collect()
}

/// `error` cut to [`ERROR_LIMIT`] bytes for a status report, so that the reason survives: the
/// head (which says what failed and what was put back), the [`reason`] line, and as much of the
/// tail as fits.
pub fn bounded_error(error: String) -> String {
    if error.len() <= ERROR_LIMIT {
        return error;
    }
    let why = reason(&error).to_string();
    let first = error.lines().next().unwrap_or_default();
    let head = cut_at_char(first, ERROR_LIMIT / 4);
    let why = cut_at_char(&why, ERROR_LIMIT / 4);
    let room = ERROR_LIMIT.saturating_sub(head.len() + why.len() + 16);
    let mut start = error.len().saturating_sub(room);
    while !error.is_char_boundary(start) {
        start += 1;
    }
    format!("{head}\n{why}\n...\n{}", &error[start..])
}

/// The longest prefix of `s` at most `max` bytes long that ends on a character boundary.
fn cut_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_worst_line_else_the_last_one() {
        let nginx = "reload `nginx -s reload` exited with status 1\nnginx: [notice] 12#12: signal process started\nnginx: [error] open() \"/x.pid\" failed\nnginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address already in use)\n";
        assert_eq!(reason(nginx), "nginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address already in use)");
        assert_eq!(reason("check `x` exited with status 1\nfirst\n  last words  \n\n"), "last words");
        assert_eq!(reason("one line"), "one line");
        assert_eq!(reason(""), "");
    }

    #[test]
    fn a_bounded_error_keeps_its_head_and_its_reason() {
        let long = format!("reload failed\n[emerg] the reason\n{}tail", "x\n".repeat(5000));
        let b = bounded_error(long);
        assert!(b.len() <= ERROR_LIMIT, "{}", b.len());
        assert!(b.starts_with("reload failed\n[emerg] the reason\n") && b.ends_with("tail"), "{b}");
        assert_eq!(bounded_error("short".into()), "short");
    }

    #[test]
    fn result_names_are_the_json_names() {
        for r in [ApplyResult::Pending, ApplyResult::Ok, ApplyResult::CheckFailed, ApplyResult::ReloadFailed, ApplyResult::Error] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn the_reason_is_never_the_quoted_command() {
        let error = "check `sh -c echo 'nginx: [emerg] x' >&2; exit 1` exited with status 1\nnginx: [emerg] unknown directive \"servr\"";
        assert_eq!(reason(error), "nginx: [emerg] unknown directive \"servr\"");
        assert_eq!(reason("check `echo [emerg]` exited with status 1"), "check `echo [emerg]` exited with status 1");
    }
}
