//! Staged rollouts: a version goes to a few canary hosts first, and to everyone else only once
//! the leading agent promotes it; a failing canary stops it.
//!
//! One persistent record per application, `<root>/rollouts/<app>` (JSON, [`Rollout`]), says who
//! may run what:
//! - The leader creates (or replaces) it in the same fenced multi-op that creates the version,
//!   so no app host ever sees a canary version without its rollout. A publish without
//!   `--canary` deletes the record in that multi-op: the newer version supersedes the rollout
//!   and goes to every host.
//! - App hosts read it (with a data watch) in the one place that decides their target:
//!   [`visible`] hides versions newer than `previous` from a host that is not a canary while the
//!   rollout is `canary`, `soaking` or `aborted`, and from every host during a `precheck`;
//!   [`crate::model::layout::newest_version`] then picks the newest of what is left, as always.
//! - `--precheck` starts it in `precheck`: every live host checks the version without
//!   installing it ([`decide_precheck`]); `--waves` keeps the waves and the hosts of every wave
//!   so far as its canaries ([`wave_hosts`]), one soak per wave.
//! - [`crate::agent::supervisor::supervise`] runs on the leader only (it stops at step-down): all canaries report the
//!   version applied ok → `soaking` (the soak start is written to the record); soak passed →
//!   `promoted`; any canary reports check-failed or reload-failed for it → `aborted`. Every
//!   state lives in ZooKeeper, so the next leader resumes where the last one stopped.
//! - `zkcoordctl promote` / `abort` set the state by hand (a setData with a version check).

use crate::model::layout::VersionId;
use crate::model::status::{ApplyResult, StatusReport};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Soak time when `--canary` is given without `--soak`.
pub const DEFAULT_SOAK: Duration = Duration::from_secs(300);

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// `--precheck`: every live host runs its check on the version, staged and never
    /// installed; nobody takes it until all passed (then `canary`, or `promoted`).
    Precheck,
    /// Published to the canaries; waiting for each to report it applied.
    Canary,
    /// Every canary applied it; waiting for the soak time to pass.
    Soaking,
    /// Every host takes the version.
    Promoted,
    /// Stopped: hosts that are not canaries stay on `previous`.
    Aborted,
}

impl State {
    /// The record's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Precheck => "precheck",
            State::Canary => "canary",
            State::Soaking => "soaking",
            State::Promoted => "promoted",
            State::Aborted => "aborted",
        }
    }
    /// Whether hosts that are not canaries are held at `previous`.
    pub fn holds_back(self) -> bool {
        !matches!(self, State::Promoted)
    }
    /// Whether the leader still has work to do on it.
    pub fn is_open(self) -> bool {
        matches!(self, State::Precheck | State::Canary | State::Soaking)
    }
}

/// The JSON at `<root>/rollouts/<app>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The version being rolled out; None only between the publish and the leader's next look
    /// (the multi-op that creates the version cannot know its sequence number in advance).
    #[serde(default)]
    pub version: Option<String>,
    /// What every host that is not a canary keeps running until promotion (None: nothing yet).
    pub previous: Option<String>,
    /// Node ids of the hosts that take the version first.
    pub canaries: Vec<String>,
    /// How long every canary must run the version before promotion, in milliseconds.
    pub soak_ms: u64,
    /// When the leader created the record (ms since the epoch).
    pub started_ms: u64,
    /// Where the rollout stands.
    pub state: State,
    /// When every canary first reported the version applied (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_started_ms: Option<u64>,
    /// Why it was promoted or aborted, and by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The gate (a name in the leader's `[agent] gates`) that must pass after the soak before
    /// the leader promotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// `--waves`: each wave as given (`1`, `10%`, `dc=fra`), the last always `*` (every
    /// host); `canaries` then holds the hosts of every wave so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<String>,
    /// The wave under way (0: the first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wave: usize,
    /// An operator's `promote` of the current wave, for the leader to start the next one
    /// (who and why; the leader resolves the wave's hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Rollout {
    /// Whether waves remain after the current one (the last, `*`, is the promotion).
    pub fn has_next_wave(&self) -> bool {
        self.wave + 1 < self.waves.len()
    }

    /// Whether host `node` is held at `previous` by this rollout (during a precheck, every
    /// host is: canaries take the version only once all passed).
    pub fn holds_back(&self, node: &str) -> bool {
        self.state.holds_back() && (self.state == State::Precheck || !self.canaries.iter().any(|c| c == node))
    }

    /// This rollout stopped for `reason`. Stopped in its precheck, it names no canaries any
    /// more: none took the version, and none may now.
    pub fn aborted(&self, reason: String) -> Rollout {
        let canaries = if self.state == State::Precheck { Vec::new() } else { self.canaries.clone() };
        Rollout { state: State::Aborted, reason: Some(reason), canaries, ..self.clone() }
    }

    /// The version every live host checks now, when the rollout is in its precheck and the
    /// leader has filled the version in.
    pub fn prechecking(&self) -> Option<VersionId> {
        self.version.as_deref().filter(|_| self.state == State::Precheck).and_then(VersionId::parse)
    }

    /// JSON bytes for the znode. A precheck is written as a `canary` rollout with no
    /// canaries (those after it kept under `precheck_canaries`, with `precheck: true`), so an
    /// app host older than prechecks reads a record that holds it back too, rather than one it
    /// cannot read (which would hold nothing back). [`parse`] reads it back as [`State::Precheck`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).expect("rollout serializes");
        if self.state == State::Precheck {
            let o = v.as_object_mut().expect("an object");
            o.insert("state".into(), "canary".into());
            o.insert("precheck".into(), true.into());
            o.insert("precheck_canaries".into(), self.canaries.clone().into());
            o.insert("canaries".into(), serde_json::Value::Array(Vec::new()));
        }
        serde_json::to_vec(&v).expect("rollout serializes")
    }

    /// One line for logs and `zkcoordctl`.
    pub fn describe(&self) -> String {
        if self.state == State::Precheck {
            let then = if self.canaries.is_empty() {
                "then every host".to_string()
            } else {
                format!("then canaries {} (soak {})", self.canaries.join(","), humantime::format_duration(Duration::from_millis(self.soak_ms)))
            };
            return format!(
                "{} precheck: every live host checks it, installs nothing; {then}; others on {}",
                self.version.as_deref().unwrap_or("(new version)"),
                self.previous.as_deref().unwrap_or("nothing")
            );
        }
        let soak = humantime::format_duration(Duration::from_millis(self.soak_ms));
        let canaries = if !self.waves.is_empty() && self.state != State::Promoted {
            let shown: Vec<&str> = self.canaries.iter().take(5).map(String::as_str).collect();
            let more = if self.canaries.len() > 5 { format!(",… ({} hosts)", self.canaries.len()) } else { String::new() };
            format!("wave {} of {} ({}): {}{more} (soak {soak})", self.wave + 1, self.waves.len(), self.waves[self.wave.min(self.waves.len() - 1)], shown.join(","))
        } else if self.canaries.is_empty() {
            "no canaries".to_string()
        } else {
            format!("canaries {} (soak {soak})", self.canaries.join(","))
        };
        let mut s = format!(
            "{} {}: {canaries}, others on {}",
            self.version.as_deref().unwrap_or("(new version)"),
            self.state.as_str(),
            self.previous.as_deref().unwrap_or("nothing")
        );
        if let Some(g) = &self.gate {
            s.push_str(&format!(", gate {g}"));
        }
        if let Some(r) = &self.reason {
            s.push_str(&format!("; {r}"));
        }
        if let Some(a) = &self.advance {
            s.push_str(&format!("; next wave asked: {a}"));
        }
        s
    }
}

/// What `--canary` and `--soak` ask for, travelling in the publish request's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySpec {
    /// Named canary hosts (node ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Or a share of the live hosts, 1..=100, picked by the leader at publish time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Soak time in milliseconds.
    pub soak_ms: u64,
    /// `--gate NAME`: a gate of the leader's config to pass before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// `--precheck`: every live host checks the version before any takes it (without
    /// `--canary`: no canaries, and every host takes it once all passed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub precheck: bool,
    /// `--waves`: the waves, as [`parse_waves`] wrote them (ending in `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<String>,
}

/// One wave of `--waves`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wave {
    /// This many hosts in all, the waves before included.
    Count(usize),
    /// This share of the live hosts in all, 1..=99.
    Percent(u32),
    /// Every live host with this label (`labels` in its config).
    Label(String, String),
    /// Every host: the promotion.
    All,
}

impl Wave {
    /// Parses one wave: `3`, `10%`, `dc=fra` or `*` (`100%` is `*`).
    pub fn parse(w: &str) -> Result<Wave, RolloutError> {
        let w = w.trim();
        if w == "*" || w == "100%" {
            return Ok(Wave::All);
        }
        if let Some(p) = w.strip_suffix('%') {
            return match p.trim().parse::<u32>() {
                Ok(p) if (1..100).contains(&p) => Ok(Wave::Percent(p)),
                _ => Err(RolloutError(format!("--waves: {w:?} is not a share from 1% to 100%"))),
            };
        }
        if let Some((k, v)) = w.split_once('=') {
            return if is_label_word(k.trim()) && is_label_word(v.trim()) {
                Ok(Wave::Label(k.trim().into(), v.trim().into()))
            } else {
                Err(RolloutError(format!("--waves: {w:?} is not a label like dc=fra")))
            };
        }
        match w.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Wave::Count(n)),
            _ => Err(RolloutError(format!("--waves: {w:?} is not a wave (a host count like 1, a share like 10%, a label like dc=fra, or *)"))),
        }
    }
}

impl std::fmt::Display for Wave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wave::Count(n) => write!(f, "{n}"),
            Wave::Percent(p) => write!(f, "{p}%"),
            Wave::Label(k, v) => write!(f, "{k}={v}"),
            Wave::All => write!(f, "*"),
        }
    }
}

/// Parses `--waves 1,10%,50%,100%` or `--waves dc=fra,dc=ams,*`: the waves in order, always
/// ending in `*` (a list that does not is promoted to every host after its last wave's soak).
pub fn parse_waves(list: &str) -> Result<Vec<String>, RolloutError> {
    let waves: Vec<Wave> = list.split(',').filter(|w| !w.trim().is_empty()).map(Wave::parse).collect::<Result<_, _>>()?;
    if waves.is_empty() {
        return Err(RolloutError("--waves: expected waves like 1,10%,50%,100% or dc=fra,dc=ams,*".into()));
    }
    if let Some(i) = waves.iter().position(|w| *w == Wave::All).filter(|i| i + 1 < waves.len()) {
        return Err(RolloutError(format!("--waves: wave {} (*) takes every host; nothing can come after it", i + 1)));
    }
    let mut out: Vec<String> = waves.iter().map(Wave::to_string).collect();
    if waves.last() != Some(&Wave::All) {
        out.push("*".into());
    }
    if out.len() < 2 {
        return Err(RolloutError("--waves: the first wave takes every host; publish without --waves".into()));
    }
    Ok(out)
}

/// The hosts that run the version once `wave` starts: those of the waves before (`taken`)
/// and the wave's own, from the live hosts and their labels (`live`). A count or share is of
/// the whole so far, picked as `N%` canaries are (by sha256 of `app/host`). None: the wave takes
/// every host (the promotion).
pub fn wave_hosts(app: &str, wave: &Wave, live: &[(String, std::collections::BTreeMap<String, String>)], taken: &[String]) -> Option<Vec<String>> {
    let mut hosts: Vec<String> = taken.to_vec();
    let fresh = |h: &String, hosts: &[String]| !hosts.contains(h);
    match wave {
        Wave::All => return None,
        Wave::Label(k, v) => hosts.extend(live.iter().filter(|(h, l)| l.get(k) == Some(v) && fresh(h, taken)).map(|(h, _)| h.clone())),
        Wave::Count(_) | Wave::Percent(_) => {
            let target = match wave {
                Wave::Count(n) => *n,
                Wave::Percent(p) => (live.len() as u64 * *p as u64).div_ceil(100).max(1) as usize,
                _ => unreachable!(),
            };
            let names: Vec<String> = live.iter().map(|(h, _)| h.clone()).collect();
            for h in ranked(app, &names) {
                if hosts.len() >= target {
                    break;
                }
                if fresh(&h, &hosts) {
                    hosts.push(h);
                }
            }
        }
    }
    hosts.sort();
    hosts.dedup();
    Some(hosts)
}

/// The live hosts in the order `N%` canaries and waves take them: by sha256(app/host), the
/// same hosts for the same app and fleet, spread differently across apps.
fn ranked(app: &str, live: &[String]) -> Vec<String> {
    let mut ranked: Vec<(String, &String)> = live.iter().map(|h| (crate::digest::sha256_hex(format!("{app}/{h}").as_bytes()), h)).collect();
    ranked.sort();
    ranked.into_iter().map(|(_, h)| h.clone()).collect()
}
/// Why a rollout cannot be staged as asked: a `--canary`/`--soak` the operator mistyped, or
/// canaries that cannot be picked from the live hosts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RolloutError(pub String);

impl From<RolloutError> for String {
    fn from(e: RolloutError) -> String {
        e.0
    }
}


/// Whether `w` can be a label's key or value: a word that a `--waves` list can carry.
pub fn is_label_word(w: &str) -> bool {
    !w.is_empty() && !w.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | ',' | '/' | '*' | '%'))
}

/// `--gate`'s name, refused when it is empty or looks like a command.
fn gate_name(gate: Option<&str>) -> Result<Option<String>, RolloutError> {
    match gate.map(str::trim) {
        Some("") => Err(RolloutError("--gate: expected the name of a gate in the agents' [agent] gates".into())),
        Some(g) if !is_gate_name(g) => Err(RolloutError(format!("--gate {g:?}: a gate is named, not written out; the command is in the agents' [agent] gates"))),
        g => Ok(g.map(String::from)),
    }
}

/// Whether `name` can name a gate (`[agent] gates`, `--gate`): a word, so a command pasted
/// where a name belongs is refused rather than looked up.
pub fn is_gate_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Parses `--canary web-1,web-2`, `--canary 10%` or `--waves 1,10%,*` with `--soak`, `--gate`
/// and `--precheck`.
pub fn canary_spec(canary: Option<&str>, waves: Option<&str>, soak: Option<Duration>, gate: Option<&str>, precheck: bool) -> Result<Option<CanarySpec>, RolloutError> {
    if let Some(w) = waves {
        if canary.is_some() {
            return Err(RolloutError("--canary and --waves: give one (the first wave is the canaries)".into()));
        }
        let waves = parse_waves(w)?;
        let gate = gate_name(gate)?;
        let soak_ms = soak.unwrap_or(DEFAULT_SOAK).as_millis() as u64;
        return Ok(Some(CanarySpec { hosts: Vec::new(), percent: None, soak_ms, gate, precheck, waves }));
    }
    let Some(c) = canary else {
        return match (soak, gate) {
            (Some(_), _) => Err(RolloutError("--soak needs --canary or --waves".into())),
            (_, Some(_)) => Err(RolloutError("--gate needs --canary or --waves: a gate runs after a soak, before the next hosts take the version".into())),
            (None, None) if precheck => Ok(Some(CanarySpec { hosts: Vec::new(), percent: None, soak_ms: 0, gate: None, precheck, waves: Vec::new() })),
            (None, None) => Ok(None),
        };
    };
    let gate = gate_name(gate)?;
    let soak_ms = soak.unwrap_or(DEFAULT_SOAK).as_millis() as u64;
    let c = c.trim();
    if let Some(p) = c.strip_suffix('%') {
        let percent: u32 = p.trim().parse().map_err(|_| RolloutError(format!("--canary {c:?}: expected a percentage like 10%")))?;
        if !(1..=100).contains(&percent) {
            return Err(RolloutError(format!("--canary {c:?}: expected a percentage from 1% to 100%")));
        }
        return Ok(Some(CanarySpec { hosts: Vec::new(), percent: Some(percent), soak_ms, gate, precheck, waves: Vec::new() }));
    }
    let mut hosts: Vec<String> = c.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    hosts.dedup();
    if hosts.is_empty() {
        return Err(RolloutError("--canary: expected host names (web-1,web-2) or a percentage (10%)".into()));
    }
    if let Some(bad) = hosts.iter().find(|h| h.contains('/') || h.chars().any(char::is_control)) {
        return Err(RolloutError(format!("--canary: {bad:?} is not a node id")));
    }
    Ok(Some(CanarySpec { hosts, percent: None, soak_ms, gate, precheck, waves: Vec::new() }))
}

/// Which versions host `node` may apply: all of them, or, while `rollout` holds it back, only
/// those no newer than the rollout's `previous` (none at all when it has no previous). Worked
/// out once per look, so a follower filters the versions it knows by number, not by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible {
    /// The newest sequence number shown; None: none is.
    up_to: Option<u64>,
}

impl Visible {
    /// What `rollout` shows `node`.
    pub fn to(rollout: Option<&Rollout>, node: &str) -> Visible {
        match rollout.filter(|r| r.holds_back(node)) {
            None => Visible { up_to: Some(u64::MAX) },
            Some(r) => Visible { up_to: r.previous.as_deref().and_then(VersionId::parse).map(|v| v.seq) },
        }
    }

    /// Whether the version numbered `seq` is shown.
    pub fn shows(&self, seq: u64) -> bool {
        self.up_to.is_some_and(|l| seq <= l)
    }
}

/// Resolves a canary spec against the live hosts (`live`: node ids with a status node); a
/// precheck without `--canary` has none.
/// Named canaries must be live (a canary that never reports would hold the rollout forever).
/// N% picks ceil(N% of the live hosts), at least one, ordered by sha256(app/host): the same
/// hosts for the same app and fleet, spread differently across apps.
pub fn pick_canaries(app: &str, spec: &CanarySpec, live: &[String]) -> Result<Vec<String>, RolloutError> {
    if let Some(p) = spec.percent {
        if live.is_empty() {
            return Err(RolloutError(format!("no live host reports {app}: cannot pick {p}% of them as canaries")));
        }
        let k = ((live.len() as u64 * p as u64).div_ceil(100) as usize).clamp(1, live.len());
        let mut picked: Vec<String> = ranked(app, live).into_iter().take(k).collect();
        picked.sort();
        return Ok(picked);
    }
    if spec.hosts.is_empty() && spec.precheck {
        return Ok(Vec::new());
    }
    let missing: Vec<&str> = spec.hosts.iter().filter(|h| !live.contains(h)).map(|h| h.as_str()).collect();
    if !missing.is_empty() {
        let mut known = live.to_vec();
        known.sort();
        return Err(RolloutError(format!(
            "canary host(s) {} do not report {app} (no live status node); live hosts: {}",
            missing.join(", "),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )));
    }
    Ok(spec.hosts.clone())
}

/// How one canary stands with the rollout's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryState {
    /// Applied and reloaded ok.
    Ok,
    /// Its check or reload refused the version: result and first line of the error.
    Failed(String, String),
    /// No report yet, not there yet, or not alive.
    Pending,
}

/// Where a canary's status report puts it relative to `version`.
pub fn canary_state(report: Option<&StatusReport>, version: &VersionId) -> CanaryState {
    let Some(r) = report else { return CanaryState::Pending };
    let seq = |n: Option<&str>| n.and_then(VersionId::parse).map(|v| v.seq);
    if seq(r.version.as_deref()) == Some(version.seq) && r.result == ApplyResult::Ok {
        return CanaryState::Ok;
    }
    // A canary that refused the version (bad signature, hash mismatch) failed it too.
    if matches!(r.result, ApplyResult::CheckFailed | ApplyResult::ReloadFailed | ApplyResult::Rejected)
        && seq(r.attempted.as_deref()) == Some(version.seq)
    {
        let error = crate::model::status::reason(r.error.as_deref().unwrap_or_default()).to_string();
        return CanaryState::Failed(r.result.as_str().to_string(), error);
    }
    CanaryState::Pending
}

/// Where a host's report puts it in the precheck of `version`: passed (Ok), failed with the
/// result and the line that says why, or not yet.
pub fn precheck_state(report: Option<&StatusReport>, version: &VersionId) -> CanaryState {
    let Some(p) = report.and_then(|r| r.precheck.as_ref()).filter(|p| VersionId::parse(&p.version).is_some_and(|v| v.seq == version.seq)) else {
        return CanaryState::Pending;
    };
    match p.result {
        ApplyResult::Ok => CanaryState::Ok,
        result => CanaryState::Failed(result.as_str().to_string(), crate::model::status::reason(p.error.as_deref().unwrap_or_default()).to_string()),
    }
}

/// How long the leader waits for every live host's precheck before it aborts, naming the
/// silent ones (an older daemon never answers; a wedged one would hold the fleet forever).
pub const PRECHECK_LIMIT: Duration = Duration::from_secs(600);

/// How long after its start a precheck with a failure waits for the other hosts' answers.
pub const PRECHECK_FAILED_WAIT: Duration = Duration::from_secs(30);

/// How many failing or silent hosts an abort's reason names.
const NAMED: usize = 10;

/// The precheck's transitions: `hosts` holds each live host's [`precheck_state`]. Any failure
/// aborts, naming each failing host and why; all passed (hosts that joined meanwhile
/// included, hosts that left not waited for) moves on to the canaries, or promotes.
pub fn decide_precheck(r: &Rollout, hosts: &[(String, CanaryState)], now: u64) -> Decision {
    let failed: Vec<String> = hosts
        .iter()
        .filter_map(|(h, s)| match s {
            CanaryState::Failed(result, error) => Some(format!("{h}: {result}: {error}")),
            _ => None,
        })
        .collect();
    let pending: Vec<&str> = hosts.iter().filter(|(_, s)| *s == CanaryState::Pending).map(|(h, _)| h.as_str()).collect();
    let named = |all: &[&str]| {
        let more = all.len().saturating_sub(NAMED);
        let mut s = all[..all.len().min(NAMED)].join("; ");
        if more > 0 {
            s.push_str(&format!("; and {more} more"));
        }
        s
    };
    // A failure blocks the version, but every answer is waited for (up to
    // PRECHECK_FAILED_WAIT) so the reason names every failing host at once.
    let waited = now >= r.started_ms + PRECHECK_FAILED_WAIT.as_millis() as u64;
    if !failed.is_empty() && (pending.is_empty() || waited) {
        let refs: Vec<&str> = failed.iter().map(String::as_str).collect();
        let silent = if pending.is_empty() { String::new() } else { format!(" ({} still checking)", pending.len()) };
        return Decision::Write(r.aborted(format!("aborted by the leader: precheck failed on {} of {} hosts{silent}: {}", failed.len(), hosts.len(), named(&refs))));
    }
    if !pending.is_empty() {
        if now >= r.started_ms + PRECHECK_LIMIT.as_millis() as u64 {
            return Decision::Write(r.aborted(format!("aborted by the leader: precheck timed out after {}; no answer from {}", humantime::format_duration(PRECHECK_LIMIT), named(&pending))));
        }
        return Decision::Wait(Some(now + FLEET_LOOK.as_millis() as u64));
    }
    let passed = format!("precheck passed on {} host{}", hosts.len(), if hosts.len() == 1 { "" } else { "s" });
    if r.canaries.is_empty() {
        Decision::Write(Rollout { state: State::Promoted, reason: Some(format!("promoted by the leader: {passed}")), ..r.clone() })
    } else {
        Decision::Write(Rollout { state: State::Canary, reason: Some(passed), ..r.clone() })
    }
}

/// How often the leader reads every host's report while a precheck or a wave is under way
/// (two requests each time, whatever the fleet's size; hosts that join or leave are seen at
/// the next look).
pub const FLEET_LOOK: Duration = Duration::from_millis(500);

/// What the leader does with an open rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing now; look again by this time (ms since the epoch), if any.
    Wait(Option<u64>),
    /// Write this record.
    Write(Rollout),
}

/// The canary and wave state machine (a precheck has [`decide_precheck`]): `canaries` holds the
/// state of each canary (of each live host of the waves so far), `now` is ms since the epoch.
pub fn decide(r: &Rollout, canaries: &[(String, CanaryState)], now: u64) -> Decision {
    if !r.state.is_open() {
        return Decision::Wait(None);
    }
    if let Some((host, CanaryState::Failed(result, error))) = canaries.iter().find(|(_, s)| matches!(s, CanaryState::Failed(..))) {
        return Decision::Write(r.aborted(format!("aborted by the leader: {result} on canary {host}: {error}")));
    }
    let all_ok = canaries.iter().all(|(_, s)| *s == CanaryState::Ok);
    match (r.state, r.soak_started_ms) {
        (State::Canary, _) if all_ok => Decision::Write(Rollout { state: State::Soaking, soak_started_ms: Some(now), ..r.clone() }),
        (State::Canary, _) => Decision::Wait(None),
        (State::Soaking, since) => {
            let due = since.unwrap_or(now) + r.soak_ms;
            if !all_ok {
                // A canary went away (or is restarting): promote only once all report ok again.
                Decision::Wait(None)
            } else if now >= due {
                Decision::Write(Rollout {
                    state: State::Promoted,
                    reason: Some(format!(
                        "promoted by the leader: {} canar{} ok, soaked {}",
                        canaries.len(),
                        if canaries.len() == 1 { "y" } else { "ies" },
                        humantime::format_duration(Duration::from_millis(r.soak_ms))
                    )),
                    ..r.clone()
                })
            } else {
                Decision::Wait(Some(due))
            }
        }
        _ => Decision::Wait(None),
    }
}

/// The record in `bytes`, or None (logged) when it cannot be read: an unreadable record
/// holds nothing back.
pub fn parse(app: &str, bytes: &[u8]) -> Option<Rollout> {
    let wire = serde_json::from_slice::<serde_json::Value>(bytes).map(|mut v| {
        // A precheck as [`Rollout::to_bytes`] writes it.
        if let Some(o) = v.as_object_mut().filter(|o| o.get("precheck") == Some(&true.into()) && o.get("state") == Some(&"canary".into())) {
            let canaries = o.remove("precheck_canaries").unwrap_or_else(|| serde_json::Value::Array(Vec::new()));
            o.insert("canaries".into(), canaries);
            o.insert("state".into(), "precheck".into());
        }
        v
    });
    match wire.and_then(serde_json::from_value::<Rollout>) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(app, "unreadable rollout record ({e}); ignoring it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layout;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn record(state: State) -> Rollout {
        Rollout {
            version: Some("conf-0000000012".into()),
            previous: Some("conf-0000000011".into()),
            canaries: names(&["web-1"]),
            soak_ms: 1000,
            started_ms: 0,
            state,
            soak_started_ms: None,
            reason: None,
            gate: None, waves: Vec::new(), wave: 0, advance: None,
        }
    }

    fn report(version: &str, result: ApplyResult, attempted: Option<&str>) -> StatusReport {
        StatusReport {
            host: "web-1".into(),
            pid: 1,
            app: "a".into(),
            version: Some(version.into()),
            sha256: None,
            result,
            attempted: attempted.map(String::from),
            error: Some("check failed\nnginx: [emerg] bad\nnginx: configuration file test failed".into()),
            time: 0,
            stream: None,
            drift: None,
            publish_id: None,
            frozen: None,
        precheck: None,
        labels: Default::default(),
        }
    }

    #[test]
    fn hosts_that_are_not_canaries_see_nothing_newer_than_previous_until_promotion() {
        let c = names(&["conf-0000000010", "conf-0000000011", "conf-0000000012", "lock"]);
        let newest = |v: Visible| layout::versions(&c).into_iter().filter(|x| v.shows(x.seq)).last().map(|x| x.name);
        for state in [State::Canary, State::Soaking, State::Aborted] {
            let r = record(state);
            assert_eq!(newest(Visible::to(Some(&r), "web-2")).as_deref(), Some("conf-0000000011"), "{state:?}");
            assert_eq!(newest(Visible::to(Some(&r), "web-1")).as_deref(), Some("conf-0000000012"));
        }
        assert_eq!(newest(Visible::to(Some(&record(State::Promoted)), "web-2")).as_deref(), Some("conf-0000000012"));
        assert_eq!(newest(Visible::to(None, "web-2")).as_deref(), Some("conf-0000000012"));
        let first = Rollout { previous: None, ..record(State::Canary) };
        assert_eq!(newest(Visible::to(Some(&first), "web-2")), None, "no previous: nothing to apply yet");
        assert!(!Visible::to(Some(&first), "web-2").shows(0), "not even conf-0000000000");
    }

    #[test]
    fn canary_specs_parse_names_and_percentages() {
        let s = canary_spec(Some("web-1, web-2"), None, Some(Duration::from_secs(1)), None, false).unwrap().unwrap();
        assert_eq!((s.hosts, s.percent, s.soak_ms), (names(&["web-1", "web-2"]), None, 1000));
        let s = canary_spec(Some("10%"), None, None, None, false).unwrap().unwrap();
        assert_eq!((s.percent, s.soak_ms), (Some(10), 300_000));
        assert!(canary_spec(Some("0%"), None, None, None, false).is_err());
        assert!(canary_spec(Some("x%"), None, None, None, false).is_err());
        assert!(canary_spec(None, None, Some(Duration::from_secs(1)), None, false).is_err());
        assert_eq!(canary_spec(None, None, None, None, false).unwrap(), None);
        assert!(canary_spec(None, None, None, Some("errors"), false).is_err(), "a gate needs a canary");
        assert!(canary_spec(Some("web-1"), None, None, Some("curl -f x"), false).is_err(), "a gate is a name, not a command");
        assert_eq!(canary_spec(Some("web-1"), None, None, Some("errors"), false).unwrap().unwrap().gate.as_deref(), Some("errors"));
    }

    #[test]
    fn percent_picks_at_least_one_live_host_deterministically() {
        let live = names(&["web-1", "web-2", "web-3", "web-4"]);
        let spec = CanarySpec { hosts: vec![], percent: Some(10), soak_ms: 0, gate: None, precheck: false, waves: Vec::new() };
        let a = pick_canaries("app", &spec, &live).unwrap();
        assert_eq!(a.len(), 1);
        let mut shuffled = live.clone();
        shuffled.reverse();
        assert_eq!(pick_canaries("app", &spec, &shuffled).unwrap(), a, "order of the listing does not matter");
        let half = CanarySpec { percent: Some(50), ..spec.clone() };
        assert_eq!(pick_canaries("app", &half, &live).unwrap().len(), 2);
        assert!(pick_canaries("app", &spec, &[]).unwrap_err().0.contains("no live host"));
        let named = CanarySpec { hosts: names(&["web-9"]), percent: None, soak_ms: 0, gate: None, precheck: false, waves: Vec::new() };
        let e = pick_canaries("app", &named, &live).unwrap_err().0;
        assert!(e.contains("web-9") && e.contains("web-1, web-2"), "{e}");
    }

    #[test]
    fn canaries_ok_then_soak_then_promote() {
        let v = VersionId::from_seq(12);
        let ok = canary_state(Some(&report("conf-0000000012", ApplyResult::Ok, None)), &v);
        assert_eq!(ok, CanaryState::Ok);
        let r = record(State::Canary);
        assert_eq!(decide(&r, &[("web-1".into(), CanaryState::Pending)], 100), Decision::Wait(None));
        let Decision::Write(soaking) = decide(&r, &[("web-1".into(), ok.clone())], 100) else { panic!() };
        assert_eq!((soaking.state, soaking.soak_started_ms), (State::Soaking, Some(100)));
        assert_eq!(decide(&soaking, &[("web-1".into(), ok.clone())], 500), Decision::Wait(Some(1100)));
        assert_eq!(decide(&soaking, &[("web-1".into(), CanaryState::Pending)], 5000), Decision::Wait(None));
        let Decision::Write(done) = decide(&soaking, &[("web-1".into(), ok)], 1100) else { panic!() };
        assert_eq!(done.state, State::Promoted);
        assert_eq!(decide(&done, &[], 9999), Decision::Wait(None));
    }

    #[test]
    fn a_failing_canary_aborts_naming_host_and_error() {
        let v = VersionId::from_seq(12);
        let failed = canary_state(Some(&report("conf-0000000011", ApplyResult::CheckFailed, Some("conf-0000000012"))), &v);
        assert_eq!(failed, CanaryState::Failed("check-failed".into(), "nginx: [emerg] bad".into()));
        // A failure of an older version is not this rollout's.
        let old = canary_state(Some(&report("conf-0000000010", ApplyResult::ReloadFailed, Some("conf-0000000011"))), &v);
        assert_eq!(old, CanaryState::Pending);
        let Decision::Write(r) = decide(&record(State::Soaking), &[("web-1".into(), failed)], 0) else { panic!() };
        assert_eq!(r.state, State::Aborted);
        assert!(r.reason.unwrap().contains("check-failed on canary web-1: nginx: [emerg] bad"));
    }

    fn prechecked(version: u64, result: ApplyResult) -> StatusReport {
        let mut r = report(&format!("conf-{:010}", version - 1), ApplyResult::Ok, None);
        r.precheck = Some(crate::model::status::Precheck { version: format!("conf-{version:010}"), result, error: Some("nginx: [emerg] host not found in upstream \"api\"\nnginx: configuration file test failed".into()) });
        r
    }

    #[test]
    fn a_precheck_holds_every_host_and_moves_on_only_when_all_passed() {
        let v = VersionId::parse("conf-0000000005").unwrap();
        let mut r = Rollout { version: Some(v.name.clone()), previous: Some("conf-0000000004".into()), canaries: vec!["web-1".into()], soak_ms: 1000, started_ms: 0, state: State::Precheck, soak_started_ms: None, reason: None, gate: None, waves: Vec::new(), wave: 0, advance: None };
        assert!(r.holds_back("web-1") && r.holds_back("web-2"), "nobody takes it during the precheck, canaries neither");
        assert_eq!(r.prechecking(), Some(v.clone()));
        let ok = precheck_state(Some(&prechecked(5, ApplyResult::Ok)), &v);
        let bad = precheck_state(Some(&prechecked(5, ApplyResult::CheckFailed)), &v);
        assert_eq!(precheck_state(Some(&prechecked(4, ApplyResult::Ok)), &v), CanaryState::Pending, "an answer about another version");
        let hosts = |states: &[&CanaryState]| states.iter().enumerate().map(|(i, s)| (format!("web-{}", i + 1), (*s).clone())).collect::<Vec<_>>();
        assert_eq!(decide_precheck(&r, &hosts(&[&ok, &CanaryState::Pending]), 100), Decision::Wait(Some(100 + FLEET_LOOK.as_millis() as u64)));
        let Decision::Write(next) = decide_precheck(&r, &hosts(&[&ok, &ok]), 100) else { panic!() };
        assert_eq!((next.state, next.reason.as_deref(), next.canaries.clone()), (State::Canary, Some("precheck passed on 2 hosts"), vec!["web-1".to_string()]));
        assert!(matches!(decide_precheck(&r, &hosts(&[&ok, &bad, &CanaryState::Pending]), 100), Decision::Wait(_)), "every answer is waited for");
        let Decision::Write(next) = decide_precheck(&r, &hosts(&[&ok, &bad, &CanaryState::Pending]), PRECHECK_FAILED_WAIT.as_millis() as u64) else { panic!() };
        assert_eq!(next.state, State::Aborted);
        assert!(next.canaries.is_empty(), "aborted in its precheck: no canary takes it either");
        assert_eq!(next.reason.as_deref(), Some("aborted by the leader: precheck failed on 1 of 3 hosts (1 still checking): web-2: check-failed: nginx: [emerg] host not found in upstream \"api\""));
        assert!(matches!(decide_precheck(&r, &hosts(&[&ok, &bad]), 100), Decision::Write(ref n) if n.state == State::Aborted), "all answered: at once");
        assert!(next.holds_back("web-1") && next.holds_back("web-3"), "held everywhere, the canary too");
        let Decision::Write(late) = decide_precheck(&r, &hosts(&[&ok, &CanaryState::Pending]), PRECHECK_LIMIT.as_millis() as u64) else { panic!() };
        assert!(late.reason.unwrap().ends_with("no answer from web-2"));
        r.canaries.clear();
        let Decision::Write(next) = decide_precheck(&r, &[], 100) else { panic!() };
        assert_eq!((next.state, next.reason.as_deref()), (State::Promoted, Some("promoted by the leader: precheck passed on 0 hosts")));
        assert_eq!(canary_spec(None, None, None, None, true).unwrap().unwrap().hosts, Vec::<String>::new());
    }

    #[test]
    fn waves_parse_resolve_cumulatively_and_end_in_every_host() {
        assert_eq!(parse_waves("1, 10%,50%,100%").unwrap(), ["1", "10%", "50%", "*"]);
        assert_eq!(parse_waves("dc=fra,dc=ams").unwrap(), ["dc=fra", "dc=ams", "*"], "the rest after the last wave");
        for bad in ["", "0", "10%,*,dc=fra", "*", "dc=", "150%", "web-1"] {
            assert!(parse_waves(bad).is_err(), "{bad:?}");
        }
        assert!(canary_spec(Some("web-1"), Some("1,*"), None, None, false).is_err(), "--canary or --waves");
        let labels = |dc: &str| std::collections::BTreeMap::from([("dc".to_string(), dc.to_string())]);
        let live: Vec<(String, std::collections::BTreeMap<String, String>)> =
            (1..=10).map(|i| (format!("web-{i:02}"), labels(if i <= 3 { "fra" } else { "ams" }))).collect();
        let first = wave_hosts("web", &Wave::Count(1), &live, &[]).unwrap();
        assert_eq!(first.len(), 1);
        let second = wave_hosts("web", &Wave::Percent(50), &live, &first).unwrap();
        assert_eq!(second.len(), 5, "50% of 10 in all, the first wave's host among them");
        assert!(second.contains(&first[0]));
        assert_eq!(wave_hosts("web", &Wave::Percent(50), &live, &first), Some(second.clone()), "the same hosts every time");
        let fra = wave_hosts("web", &Wave::Label("dc".into(), "fra".into()), &live, &[]).unwrap();
        assert_eq!(fra, ["web-01", "web-02", "web-03"]);
        assert_eq!(wave_hosts("web", &Wave::Label("dc".into(), "ber".into()), &live, &fra).unwrap(), fra, "no new host");
        assert_eq!(wave_hosts("web", &Wave::All, &live, &fra), None);
        let r = Rollout { version: Some("conf-0000000009".into()), previous: Some("conf-0000000008".into()), canaries: fra, soak_ms: 60_000, started_ms: 0, state: State::Soaking, soak_started_ms: None, reason: None, gate: None, waves: vec!["dc=fra".into(), "dc=ams".into(), "*".into()], wave: 0, advance: None };
        assert!(r.has_next_wave());
        assert_eq!(r.describe(), "conf-0000000009 soaking: wave 1 of 3 (dc=fra): web-01,web-02,web-03 (soak 1m), others on conf-0000000008");
        assert!(!r.holds_back("web-02") && r.holds_back("web-04"));
    }

    #[test]
    fn a_precheck_is_written_so_that_older_hosts_hold_back_too() {
        let r = Rollout { version: Some("conf-0000000009".into()), previous: Some("conf-0000000008".into()), canaries: vec!["web-1".into()], soak_ms: 1, started_ms: 0, state: State::Precheck, soak_started_ms: None, reason: None, gate: None, waves: Vec::new(), wave: 0, advance: None };
        let wire: serde_json::Value = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!((wire["state"].as_str(), wire["canaries"].clone()), (Some("canary"), serde_json::json!([])), "{wire}");
        assert_eq!(parse("web", &r.to_bytes()), Some(r.clone()));
        // What a host from before prechecks makes of it: a canary rollout that names no host.
        let mut old = wire.clone();
        old.as_object_mut().unwrap().retain(|k, _| k != "precheck" && k != "precheck_canaries");
        let old: Rollout = serde_json::from_value(old).unwrap();
        assert!(old.holds_back("web-1") && old.holds_back("web-2"));
        let done = Rollout { state: State::Canary, ..r };
        assert_eq!(parse("web", &done.to_bytes()), Some(done));
    }
}
