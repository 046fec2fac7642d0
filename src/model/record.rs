//! The record of a rollout: once a version settles (its staged rollout, if any, is decided,
//! and every live host applied it or failed it; or a newer version took its place, its rollout
//! was aborted, or [`SETTLE_LIMIT`] passed since then),
//! the leader writes what happened into the version's metadata, so `zkcoordctl history` can say
//! for every version who got it, who refused it and how long the fleet took, long after the
//! hosts' status nodes have moved on.
//!
//! The times are the servers' own: from the version's creation (its metadata node's `ctime`,
//! made in the same transaction) to each host's status write (the status node's `mtime`), so
//! no host's clock enters them.

use crate::model::layout::VersionId;
use crate::model::rollout::Rollout;
use crate::model::status::{ApplyResult, StatusReport};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long the leader waits for a version to settle before it writes what it has, naming the
/// hosts that never reported it (a host holding a hand edit, or wedged): counted from the
/// publish, or from the end of its staged rollout (which may last as long as it takes).
pub const SETTLE_LIMIT: Duration = Duration::from_secs(600);

/// How many hosts each list of a record names (counts are always complete): a metadata node
/// stays small on a fleet of thousands.
pub const NAMED_HOSTS: usize = 50;

/// How a version's rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Settled {
    /// Every live host applied it or refused it.
    Complete,
    /// Its canary rollout was aborted: the other hosts stayed on the previous version.
    Aborted,
    /// A newer version came before every host had it.
    Superseded,
    /// [`SETTLE_LIMIT`] passed with hosts still not reporting it.
    TimedOut,
}

impl Settled {
    /// The record's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Complete => "complete",
            Settled::Aborted => "aborted",
            Settled::Superseded => "superseded",
            Settled::TimedOut => "timed-out",
        }
    }
}

/// A host that refused the version, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFailure {
    /// Its node id.
    pub host: String,
    /// How it failed (`check-failed`, `reload-failed`, `rejected`).
    pub result: String,
    /// The line of its error that says why.
    pub reason: String,
}

/// What the leader writes under `record` in a version's metadata when it settles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// How it ended.
    pub settled: Settled,
    /// When the leader wrote this (ms since the epoch).
    pub settled_ms: u64,
    /// Live hosts of the app at that moment.
    pub hosts: usize,
    /// Hosts that run it.
    pub applied: usize,
    /// Hosts that refused it (count; [`RolloutRecord::failures`] names up to [`NAMED_HOSTS`]).
    pub failed: usize,
    /// Hosts a rollout or a freeze kept on an older version.
    #[serde(default)]
    pub held: usize,
    /// Hosts already past it (they run or tried a newer version).
    #[serde(default)]
    pub passed: usize,
    /// Hosts that said nothing of it: their node ids, up to [`NAMED_HOSTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// Hosts that refused it, up to [`NAMED_HOSTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<HostFailure>,
    /// Milliseconds from the version's creation to the first host that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<u64>,
    /// ... to the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<u64>,
    /// Median time to apply, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<u64>,
    /// 99th percentile time to apply, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<u64>,
    /// The canaries of its staged rollout, if it had one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<String>,
    /// Its waves (`--waves`), and how far it got: the wave it ended in (1-based).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<String>,
    /// The wave it ended in, 1-based (with [`RolloutRecord::waves`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    /// Who promoted or aborted its staged rollout, and why (the rollout record's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<String>,
    /// The version that took its place ([`Settled::Superseded`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

impl RolloutRecord {
    /// The record of a version a newer one replaced before it settled: what its hosts did is
    /// no longer told apart from what they did with the newer one.
    pub fn superseded(by: &str, now_ms: u64) -> RolloutRecord {
        RolloutRecord {
            settled: Settled::Superseded,
            settled_ms: now_ms,
            hosts: 0,
            applied: 0,
            failed: 0,
            held: 0,
            passed: 0,
            pending: Vec::new(),
            failures: Vec::new(),
            first_ms: None,
            last_ms: None,
            p50_ms: None,
            p99_ms: None,
            canaries: Vec::new(),
            waves: Vec::new(),
            wave: None,
            decided: None,
            superseded_by: Some(by.to_string()),
        }
    }

    /// A few words for `history`: `complete 48/50 ok, 2 failed, p99 84ms`.
    pub fn summary(&self) -> String {
        if self.settled == Settled::Superseded {
            return format!("superseded by {}", self.superseded_by.as_deref().unwrap_or("a newer version"));
        }
        let mut s = format!("{} {}/{} ok", self.settled.as_str(), self.applied, self.hosts);
        if self.failed > 0 {
            s.push_str(&format!(", {} failed", self.failed));
        }
        if !self.pending.is_empty() {
            s.push_str(&format!(", {} silent", self.hosts.saturating_sub(self.applied + self.failed + self.held + self.passed)));
        }
        if self.held > 0 {
            s.push_str(&format!(", {} held", self.held));
        }
        if let Some(p) = self.p99_ms {
            s.push_str(&format!(", p99 {p}ms"));
        }
        s
    }
}

/// One live host's status node, as the leader read it ([`crate::zk::reports::live_reports`]:
/// hosts that left are not among them).
#[derive(Debug, Clone)]
pub struct HostReport {
    /// Its node id.
    pub host: String,
    /// Its report (None when unreadable or not trusted).
    pub report: Option<StatusReport>,
    /// When the server last wrote the node (ms since the epoch).
    pub mtime_ms: i64,
}

/// Where a version stands on the fleet: not settled yet, or settled with this record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// Hosts are still on their way (or its canary rollout is still open).
    Open,
    /// It settled.
    Settled(Box<RolloutRecord>),
}

/// Tallies `version` (created at `created_ms` on the servers' clock, in stream `stream`) over
/// the live hosts' `reports`, with the app's rollout record `rollout` (if it is this
/// version's). `expired` settles it with whatever is still pending, but never while its
/// rollout is open: that is decided by its soak, gates and operators, not by a clock here.
pub fn tally(version: &VersionId, stream: i64, created_ms: i64, reports: &[HostReport], rollout: Option<&Rollout>, expired: bool, now_ms: u64) -> Tally {
    let rollout = rollout.filter(|r| r.version.as_deref() == Some(version.name.as_str()));
    if rollout.is_some_and(|r| r.state.is_open()) {
        return Tally::Open;
    }
    let aborted = rollout.is_some_and(|r| !r.state.is_open() && r.state.holds_back());
    let seq = |n: Option<&str>| n.and_then(VersionId::parse).map(|v| v.seq);
    let (mut applied, mut held, mut passed) = (0, 0, 0);
    let mut times = Vec::new();
    let mut failures = Vec::new();
    let mut pending = Vec::new();
    let mut hosts = 0;
    for h in reports {
        let Some(r) = &h.report else {
            hosts += 1;
            pending.push(h.host.clone());
            continue;
        };
        hosts += 1;
        // A report of another stream (the app's node made again) says nothing of this version.
        let same_stream = r.stream.is_none_or(|s| s == stream);
        let runs = seq(r.version.as_deref()).filter(|_| same_stream);
        let tried = seq(r.attempted.as_deref()).filter(|_| same_stream);
        if runs == Some(version.seq) {
            applied += 1;
            times.push((h.mtime_ms - created_ms).max(0) as u64);
        } else if tried == Some(version.seq) && matches!(r.result, ApplyResult::CheckFailed | ApplyResult::ReloadFailed | ApplyResult::Rejected) {
            failures.push(HostFailure {
                host: h.host.clone(),
                result: r.result.as_str().to_string(),
                reason: crate::model::status::reason(r.error.as_deref().unwrap_or_default()).to_string(),
            });
        } else if let Some(pc) = r.precheck.as_ref().filter(|pc| same_stream && pc.result != ApplyResult::Ok && seq(Some(&pc.version)) == Some(version.seq)) {
            // Its precheck refused it (the rollout then installed it nowhere).
            failures.push(HostFailure {
                host: h.host.clone(),
                result: format!("precheck {}", pc.result.as_str()),
                reason: crate::model::status::reason(pc.error.as_deref().unwrap_or_default()).to_string(),
            });
        } else if runs.max(tried).is_some_and(|s| s > version.seq) {
            passed += 1;
        } else if rollout.is_some_and(|r| r.holds_back(&h.host)) || r.frozen.is_some() {
            held += 1;
        } else {
            pending.push(h.host.clone());
        }
    }
    if !pending.is_empty() && !expired && !aborted {
        return Tally::Open;
    }
    times.sort_unstable();
    let failed = failures.len();
    failures.truncate(NAMED_HOSTS);
    pending.truncate(NAMED_HOSTS);
    let settled = if aborted {
        Settled::Aborted
    } else if pending.is_empty() {
        Settled::Complete
    } else {
        Settled::TimedOut
    };
    Tally::Settled(Box::new(RolloutRecord {
        settled,
        settled_ms: now_ms,
        hosts,
        applied,
        failed,
        held,
        passed,
        pending,
        failures,
        first_ms: times.first().copied(),
        last_ms: times.last().copied(),
        p50_ms: percentile(&times, 50),
        p99_ms: percentile(&times, 99),
        canaries: rollout.filter(|r| r.waves.is_empty()).map(|r| r.canaries.clone()).unwrap_or_default(),
        waves: rollout.map(|r| r.waves.clone()).unwrap_or_default(),
        wave: rollout.filter(|r| !r.waves.is_empty()).map(|r| if r.state.holds_back() { r.wave + 1 } else { r.waves.len() }),
        decided: rollout.and_then(|r| r.reason.clone()),
        superseded_by: None,
    }))
}

/// The nearest-rank `p`th percentile of sorted `times`.
fn percentile(times: &[u64], p: usize) -> Option<u64> {
    if times.is_empty() {
        return None;
    }
    let rank = (times.len() * p).div_ceil(100).max(1);
    Some(times[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rollout::State;

    fn v(seq: u64) -> VersionId {
        VersionId::parse(&format!("conf-{seq:010}")).unwrap()
    }

    fn report(host: &str, version: Option<u64>, result: ApplyResult, attempted: Option<u64>, mtime_ms: i64) -> HostReport {
        HostReport {
            host: host.into(),
            report: Some(StatusReport {
                host: host.into(),
                pid: 1,
                app: "web".into(),
                version: version.map(|s| v(s).name),
                sha256: None,
                result,
                attempted: attempted.map(|s| v(s).name),
                error: Some("nginx: [emerg] unknown directive \"bogus\"\nnginx: configuration file test failed".into()),
                time: 0,
                stream: Some(7),
                drift: None,
                publish_id: None,
                frozen: None,
            precheck: None,
            labels: Default::default(),
            }),
            mtime_ms,
        }
    }

    fn rollout(state: State) -> Rollout {
        Rollout {
            version: Some(v(5).name),
            previous: Some(v(4).name),
            canaries: vec!["a".into()],
            soak_ms: 1000,
            started_ms: 0,
            state,
            soak_started_ms: None,
            reason: Some("aborted by alice: 5xx".into()),
            gate: None, waves: Vec::new(), wave: 0, advance: None,
        }
    }

    #[test]
    fn every_host_ok_or_failed_settles_with_times_from_creation() {
        let reports = vec![
            report("a", Some(5), ApplyResult::Ok, None, 1_040),
            report("b", Some(5), ApplyResult::Ok, None, 1_010),
            report("c", Some(4), ApplyResult::CheckFailed, Some(5), 1_020),
        ];
        let Tally::Settled(r) = tally(&v(5), 7, 1_000, &reports, None, false, 9) else { panic!("settles") };
        assert_eq!((r.settled, r.hosts, r.applied, r.failed), (Settled::Complete, 3, 2, 1));
        assert_eq!((r.first_ms, r.last_ms, r.p50_ms, r.p99_ms), (Some(10), Some(40), Some(10), Some(40)));
        assert_eq!(r.failures[0].reason, "nginx: [emerg] unknown directive \"bogus\"");
        assert_eq!(r.summary(), "complete 2/3 ok, 1 failed, p99 40ms");
    }

    #[test]
    fn a_host_still_on_the_old_version_keeps_it_open_until_the_limit() {
        let reports = vec![report("a", Some(5), ApplyResult::Ok, None, 1_040), report("b", Some(4), ApplyResult::Ok, None, 900)];
        assert_eq!(tally(&v(5), 7, 1_000, &reports, None, false, 9), Tally::Open);
        let Tally::Settled(r) = tally(&v(5), 7, 1_000, &reports, None, true, 9) else { panic!("the limit settles it") };
        assert_eq!((r.settled, r.pending.clone()), (Settled::TimedOut, vec!["b".to_string()]));
        assert_eq!(r.summary(), "timed-out 1/2 ok, 1 silent, p99 40ms");
    }

    #[test]
    fn an_open_rollout_waits_and_an_aborted_one_settles_with_the_others_held() {
        let reports = vec![report("a", Some(4), ApplyResult::ReloadFailed, Some(5), 1_040), report("b", Some(4), ApplyResult::Ok, None, 900)];
        assert_eq!(tally(&v(5), 7, 1_000, &reports, Some(&rollout(State::Canary)), false, 9), Tally::Open);
        assert_eq!(tally(&v(5), 7, 1_000, &reports, Some(&rollout(State::Soaking)), true, 9), Tally::Open, "an open rollout outlasts the limit");
        let Tally::Settled(r) = tally(&v(5), 7, 1_000, &reports, Some(&rollout(State::Aborted)), false, 9) else { panic!("settles") };
        assert_eq!((r.settled, r.failed, r.held, r.canaries.clone()), (Settled::Aborted, 1, 1, vec!["a".to_string()]));
        assert_eq!(r.decided.as_deref(), Some("aborted by alice: 5xx"));
    }

    #[test]
    fn hosts_past_it_or_of_another_stream_are_told_apart() {
        let mut other = report("c", Some(5), ApplyResult::Ok, None, 1_010);
        other.report.as_mut().unwrap().stream = Some(8);
        let reports = vec![report("a", Some(6), ApplyResult::Ok, None, 1_040), other];
        assert_eq!(tally(&v(5), 7, 1_000, &reports, None, false, 9), Tally::Open, "c runs a conf-5 of another stream");
        let Tally::Settled(r) = tally(&v(5), 7, 1_000, &reports, None, true, 9) else { panic!() };
        assert_eq!((r.passed, r.applied, r.pending.clone()), (1, 0, vec!["c".to_string()]));
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let t: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&t, 50), percentile(&t, 99)), (Some(50), Some(99)));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }
}
