//! `log_format`: how the daemon writes its log lines.

use serde::Deserialize;

/// The form of log lines. Absent from the config: the journal when stderr is the journal
/// (under systemd), readable text otherwise; log shippers that read files or stdout want
/// `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, `LEVEL message key=value`.
    Text,
    /// One JSON object per line with the same fields the journal gets.
    Json,
    /// Structured fields to the journal (`journalctl ZKCOORD_APP=nginxconf`); text if there is
    /// no journal to write to.
    Journal,
}
