//! What both followers (published and rendered) do about a destination edited by hand: look at
//! what is on disk ([`look`]), then, by the one decision [`crate::model::drift::decide`], put the
//! applied content back, or leave the edit and say so in the status report, in the log (once
//! per distinct edit) and in `/metrics` ([`DriftWatch`]).

use crate::config::{AppConfig, AppKind};
use crate::metrics::Metrics;
use crate::model::drift::{Disk, Drift, OnDrift};
use crate::model::status::StatusReport;
use std::collections::HashSet;

/// What the destination holds, as [`look`] found it.
#[derive(Debug)]
pub struct OnDisk {
    /// Compared with the applied content.
    pub disk: Disk,
    /// sha256 of what is there (of the link's target for a bundle); None when missing.
    pub sha256: Option<String>,
    /// Its bytes (a bundle: the link's target), for the diff summary.
    pub bytes: Vec<u8>,
}

/// Compares `app`'s destination with the applied content `applied_sha` (None: nothing applied,
/// so nothing can have drifted). A bundle's destination is its symlink: it drifted when the link
/// points at another tree than the applied version's.
pub fn look(app: &AppConfig, applied_sha: Option<&str>) -> OnDisk {
    let Some(applied) = applied_sha else {
        return OnDisk { disk: Disk::Holds, sha256: None, bytes: Vec::new() };
    };
    let bytes = match app.kind() {
        AppKind::File => std::fs::read(&app.dest).ok(),
        AppKind::Bundle => std::fs::read_link(&app.dest).ok().map(|t| t.as_os_str().as_encoded_bytes().to_vec()),
    };
    let Some(bytes) = bytes else {
        return OnDisk { disk: Disk::Missing, sha256: None, bytes: Vec::new() };
    };
    let sha256 = crate::digest::sha256_hex(&bytes);
    // A file holds the applied version when the bytes just read hash to it (reading them again
    // would be a second read and hash on every look); a bundle's marker says.
    let holds = match app.kind() {
        AppKind::File => sha256 == applied,
        AppKind::Bundle => crate::host::bundle::holds(app, applied),
    };
    OnDisk { disk: if holds { Disk::Holds } else { Disk::Differs }, sha256: Some(sha256), bytes }
}

/// How many distinct edits are remembered as already logged; beyond it the memory starts over
/// (an edit seen again then logs once more, which is harmless).
const REMEMBERED_EDITS: usize = 64;

/// One app's memory of the hand edits it found: which were logged and counted already, so that
/// a warning (and `zkcoord_drift_detected_total`) comes once per distinct on-disk hash, not
/// once per look.
#[derive(Debug, Default)]
pub struct DriftWatch {
    /// The on-disk hashes already logged and counted.
    seen: HashSet<String>,
}

impl DriftWatch {
    /// Whether the report already describes the edit with hash `sha256` (so its summary need
    /// not be made again).
    pub fn known(report: &StatusReport, sha256: &str) -> bool {
        report.drift.as_ref().is_some_and(|d| d.sha256 == sha256)
    }

    /// Counts and logs an edit not seen before; true when it was new.
    fn first_sight(&mut self, app: &AppConfig, metrics: &Metrics, sha256: &str) -> bool {
        if self.seen.contains(sha256) {
            return false;
        }
        if self.seen.len() >= REMEMBERED_EDITS {
            self.seen.clear();
        }
        self.seen.insert(sha256.to_string());
        metrics.drift_detected(&app.name);
        true
    }

    /// The applied content is being put back over an edit (`on_drift = "reapply"`, or a new
    /// version under `"report"`).
    pub fn replacing(&mut self, app: &AppConfig, metrics: &Metrics, sha256: &str, why: &str) {
        self.first_sight(app, metrics, sha256);
        tracing::warn!(app = %app.name, dest = %app.dest.display(), on_disk = %sha256, "destination was edited by hand; {why}");
    }

    /// The edit (hash `sha256`, differing as `summary` says) is left in place, by `action`
    /// (report or hold): the report says so, and the log once per distinct edit.
    pub fn leave(&mut self, app: &AppConfig, metrics: &Metrics, report: &mut StatusReport, sha256: &str, summary: (String, Vec<String>), action: OnDrift) {
        let since = report.drift.as_ref().filter(|d| d.sha256 == sha256).map_or_else(crate::clock::now_secs, |d| d.since);
        let drift = Drift { dest: app.dest.display().to_string(), sha256: sha256.to_string(), summary: summary.0, lines: summary.1, action, since };
        if self.first_sight(app, metrics, sha256) {
            let then = match action {
                OnDrift::Hold => "on_drift = \"hold\": leaving it and applying no new version until the file matches the applied version again or is removed",
                _ => "on_drift = \"report\": leaving it; new versions are still applied",
            };
            tracing::warn!(app = %app.name, dest = %app.dest.display(), on_disk = %sha256, summary = %drift.summary, "destination was edited by hand; {then}");
        }
        metrics.drift_state(&app.name, true, drift.held());
        report.drift = Some(drift);
    }

    /// The destination holds the applied content again (restored, or replaced by an install).
    pub fn clear(&mut self, app: &AppConfig, metrics: &Metrics, report: &mut StatusReport) {
        if let Some(d) = report.drift.take() {
            tracing::info!(app = %app.name, dest = %app.dest.display(), "destination no longer differs from the applied content{}", if d.held() { "; hold released" } else { "" });
        }
        metrics.drift_state(&app.name, false, false);
    }
}
