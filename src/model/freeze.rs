//! The freeze switch: one auditable flag for incidents and peak hours. While `<root>/freeze/<app>`
//! (one app) or `<root>/freeze/@all` (every app, including apps first published during it)
//! exists, the leader refuses publishes to the app with the freeze's reason, and app hosts keep
//! reporting but apply nothing, not even a hand edit's reapply: a hot-patch made during an
//! incident stays. `zkcoordctl freeze` / `unfreeze` create and delete the flags; the daemons
//! keep them under one child watch ([`crate::zk::freeze`]).
//!
//! Refused rather than queued: a publish made during a freeze is rarely still wanted when it
//! ends, and a refusal tells the publisher at once, where a queue would surprise everyone later.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The flag's name that freezes every app (`@` is not allowed in app names).
pub const ALL: &str = "@all";

/// A flag's JSON: who froze, why, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// Who set it (user@host).
    pub by: String,
    /// Their reason (`-m`).
    pub reason: String,
    /// Seconds since the epoch when it was set.
    pub since: u64,
}

impl Freeze {
    /// A flag whose data cannot be read as a freeze still freezes: the safe side of a garbled
    /// or hand-made node.
    pub fn parse(bytes: &[u8]) -> Freeze {
        serde_json::from_slice(bytes).unwrap_or_else(|_| Freeze {
            by: "unknown".into(),
            reason: String::from_utf8_lossy(bytes).chars().take(200).collect(),
            since: 0,
        })
    }
}

/// Every freeze in force, by flag name (an app's name, or [`ALL`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freezes(pub BTreeMap<String, Freeze>);

impl Freezes {
    /// The freeze that holds `app` and whether it is the fleet-wide one (which wins).
    pub fn of(&self, app: &str) -> Option<(bool, &Freeze)> {
        self.0.get(ALL).map(|f| (true, f)).or_else(|| self.0.get(app).map(|f| (false, f)))
    }

    /// The line that says why `app` is frozen, for logs, status, `/healthz` and refusals:
    /// `frozen (all apps) by ops@bastion since 2026-12-03T10:00:00Z: incident 4711`.
    pub fn line(&self, app: &str) -> Option<String> {
        self.of(app).map(|(all, f)| {
            let since = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.since));
            let scope = if all { " (all apps)" } else { "" };
            format!("frozen{scope} by {} since {since}: {}", f.by, f.reason)
        })
    }
}

impl Freezes {
    /// The leader's answer to a publish to a frozen `app`, saying how the freeze ends.
    pub fn refusal(&self, app: &str) -> Option<String> {
        let line = self.line(app)?;
        let how = if self.0.contains_key(ALL) { "--all" } else { app };
        Some(format!("{line}; nothing published (`zkcoordctl unfreeze {how}` ends it)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(reason: &str) -> Freeze {
        Freeze { by: "ops@bastion".into(), reason: reason.into(), since: 1_796_000_000 }
    }

    #[test]
    fn the_fleet_wide_freeze_wins_and_names_itself() {
        let mut b = Freezes::default();
        assert_eq!(b.line("web"), None);
        b.0.insert("web".into(), f("incident 4711"));
        assert_eq!(b.line("web").unwrap(), "frozen by ops@bastion since 2026-11-30T00:53:20Z: incident 4711");
        assert_eq!(b.line("api"), None);
        b.0.insert(ALL.into(), f("peak hours"));
        assert_eq!(b.line("api").unwrap(), "frozen (all apps) by ops@bastion since 2026-11-30T00:53:20Z: peak hours");
        assert!(b.line("web").unwrap().ends_with("peak hours"));
        assert!(b.refusal("web").unwrap().ends_with("nothing published (`zkcoordctl unfreeze --all` ends it)"));
        b.0.remove(ALL);
        assert!(b.refusal("web").unwrap().ends_with("(`zkcoordctl unfreeze web` ends it)"));
        assert!(crate::model::layout::validate_app_name(ALL).is_err(), "no app can be named like the fleet-wide flag");
    }

    #[test]
    fn a_garbled_flag_still_freezes() {
        let g = Freeze::parse(b"hand-made by zkCli");
        assert_eq!((g.by.as_str(), g.reason.as_str()), ("unknown", "hand-made by zkCli"));
        assert_eq!(Freeze::parse(&serde_json::to_vec(&f("x")).unwrap()), f("x"));
    }
}
