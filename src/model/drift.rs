//! A destination that no longer holds what this host applied (a hand edit, an incident
//! hot-patch): how it is described in the status report ([`Drift`]), what an app does about it
//! ([`OnDrift`], decided in one place by [`decide`]), and the short diff summary an operator
//! reads instead of the file ([`summary`]).
//!
//! Pure rules: the followers read the file and ZooKeeper, then ask [`decide`].

use serde::{Deserialize, Serialize};

/// What an app does when its destination was changed by someone else (`[[app]] on_drift`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDrift {
    /// Put the applied version back through the pipeline (check, reload, verify): zkcoord owns
    /// the file. The default, and what every release before `on_drift` did.
    #[default]
    Reapply,
    /// Leave the edit in place and say so in the status, but apply new versions as they come
    /// (a new version replaces the edit).
    Report,
    /// Leave the edit in place and apply nothing new until the file matches the applied version
    /// again or is removed: an incident hot-patch is never overwritten by a routine publish.
    Hold,
}

impl OnDrift {
    /// The name the config and the status report use.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDrift::Reapply => "reapply",
            OnDrift::Report => "report",
            OnDrift::Hold => "hold",
        }
    }
}

/// What the destination holds, compared with what this host applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// Exactly the applied content (or nothing was applied yet, so nothing can have drifted).
    Holds,
    /// Nothing is there: no edit to protect, so it is installed again whatever `on_drift` says
    /// (which is also how an operator ends a hold: remove the file).
    Missing,
    /// Other content than the applied one.
    Differs,
}

/// What to do at one look, from [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: the file holds the applied content and nothing newer is due.
    UpToDate,
    /// Install (the newer content, or the applied one again over a drifted or missing file).
    Apply,
    /// Leave the drifted file as it is, and report it with this action (report or hold).
    Leave(OnDrift),
}

/// The one decision about a destination, for every path that looks at it (start, a watch that
/// fired, the periodic pass, a rendered app's change): `newer` says whether content other than
/// the applied one is due (a newer version, changed members).
pub fn decide(policy: OnDrift, disk: Disk, newer: bool) -> Verdict {
    match (disk, policy) {
        (Disk::Holds, _) => {
            if newer {
                Verdict::Apply
            } else {
                Verdict::UpToDate
            }
        }
        (Disk::Missing, _) | (Disk::Differs, OnDrift::Reapply) => Verdict::Apply,
        (Disk::Differs, OnDrift::Report) if newer => Verdict::Apply,
        (Disk::Differs, action) => Verdict::Leave(action),
    }
}

/// A drifted destination as the status report shows it (`drift` in the status JSON): enough to
/// tell which edit it is and how big, never the file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The file (or bundle link) that was edited.
    pub dest: String,
    /// sha256 of what is on disk now, to tell one edit from the next.
    pub sha256: String,
    /// How it differs from the applied content, e.g. `+3 -1 lines`.
    pub summary: String,
    /// A few of the changed lines (at most [`SAMPLE_LINES`], each cut to [`SAMPLE_WIDTH`]
    /// characters), `+` for lines on disk, `-` for applied lines missing there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    /// What this host does about it: `report` (left, new versions still applied) or `hold`
    /// (left, nothing new applied).
    pub action: OnDrift,
    /// When this edit was first seen, in seconds since the epoch.
    pub since: u64,
}

impl Drift {
    /// Whether new content is withheld because of it.
    pub fn held(&self) -> bool {
        self.action == OnDrift::Hold
    }

    /// One line for `status`, STATUS and `/healthz`:
    /// `held: /etc/x edited by hand (+3 -1 lines, sha256 0123456789ab)`.
    pub fn describe(&self) -> String {
        let verb = if self.held() { "held" } else { "drifted" };
        format!("{verb}: {} edited by hand ({}, sha256 {})", self.dest, self.summary, &self.sha256[..self.sha256.len().min(12)])
    }
}

/// How many changed lines a [`Drift`] quotes.
pub const SAMPLE_LINES: usize = 3;
/// How many characters of each quoted line it keeps.
pub const SAMPLE_WIDTH: usize = 60;

/// `+A -R lines` from `applied` to `on_disk`, with a few changed lines ([`SAMPLE_LINES`] of at
/// most [`SAMPLE_WIDTH`] characters); for content that is no text, the sizes. `applied` is None
/// when the applied content could not be read back (pruned from ZooKeeper): sizes then too.
pub fn summary(applied: Option<&[u8]>, on_disk: &[u8]) -> (String, Vec<String>) {
    let texts = applied.map(|a| (std::str::from_utf8(a), std::str::from_utf8(on_disk)));
    let Some((Ok(old), Ok(new))) = texts else {
        let was = applied.map_or("unknown".to_string(), |a| format!("{} bytes", a.len()));
        return (format!("{was} applied, {} bytes on disk", on_disk.len()), Vec::new());
    };
    let diff = similar::TextDiff::from_lines(old, new);
    let (mut added, mut removed, mut lines) = (0usize, 0usize, Vec::new());
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Insert => {
                added += 1;
                '+'
            }
            similar::ChangeTag::Delete => {
                removed += 1;
                '-'
            }
            similar::ChangeTag::Equal => continue,
        };
        if lines.len() < SAMPLE_LINES {
            let text: String = change.value().trim_end().chars().filter(|c| !c.is_control()).take(SAMPLE_WIDTH).collect();
            lines.push(format!("{sign}{text}"));
        }
    }
    (format!("+{added} -{removed} lines"), lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_lines_and_quotes_a_few_short_ones() {
        let (s, lines) = summary(Some(b"a\nb\nc\n"), b"a\nB\nc\nd\ne\n");
        assert_eq!(s, "+3 -1 lines");
        assert_eq!(lines, vec!["-b", "+B", "+d"]);
        let long = format!("{}\n", "x".repeat(500));
        let (s, lines) = summary(Some(b""), long.as_bytes());
        assert_eq!(s, "+1 -0 lines");
        assert_eq!(lines[0].chars().count(), SAMPLE_WIDTH + 1);
        assert_eq!(summary(Some(b"a\n"), b"a\n").0, "+0 -0 lines");
    }

    #[test]
    fn binary_or_unknown_content_is_summarised_by_size() {
        assert_eq!(summary(Some(&[0xff, 0xfe]), b"ab").0, "2 bytes applied, 2 bytes on disk");
        assert_eq!(summary(None, b"abc"), ("unknown applied, 3 bytes on disk".to_string(), Vec::new()));
    }

    #[test]
    fn one_decision_for_every_policy() {
        use {Disk::*, OnDrift::*, Verdict::*};
        for p in [Reapply, Report, Hold] {
            assert_eq!(decide(p, Holds, false), UpToDate);
            assert_eq!(decide(p, Holds, true), Apply);
            assert_eq!(decide(p, Missing, false), Apply, "a removed file is installed again ({p:?})");
            assert_eq!(decide(p, Missing, true), Apply);
        }
        assert_eq!(decide(Reapply, Differs, false), Apply);
        assert_eq!(decide(Reapply, Differs, true), Apply);
        assert_eq!(decide(Report, Differs, false), Leave(Report));
        assert_eq!(decide(Report, Differs, true), Apply, "report still applies new versions");
        assert_eq!(decide(Hold, Differs, false), Leave(Hold));
        assert_eq!(decide(Hold, Differs, true), Leave(Hold), "hold applies nothing new");
    }

    #[test]
    fn a_drift_describes_itself_in_one_line() {
        let d = Drift { dest: "/etc/x".into(), sha256: "0123456789abcdef".repeat(4), summary: "+1 -0 lines".into(), lines: vec![], action: OnDrift::Hold, since: 0 };
        assert_eq!(d.describe(), "held: /etc/x edited by hand (+1 -0 lines, sha256 0123456789ab)");
        assert!(serde_json::to_string(&d).unwrap().contains("\"action\":\"hold\""));
    }
}
