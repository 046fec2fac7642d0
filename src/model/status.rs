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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_names_are_the_json_names() {
        for r in [ApplyResult::Pending, ApplyResult::Ok, ApplyResult::CheckFailed, ApplyResult::ReloadFailed, ApplyResult::Error] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
