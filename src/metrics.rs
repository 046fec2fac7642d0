//! What the daemon counts and measures, for `/metrics` in the Prometheus (OpenMetrics) text
//! format. One [`Metrics`] is made in `daemon::run` and shared through an `Arc`; each event is
//! recorded at the one place where it happens: the session supervisor (state, reconnects,
//! expiries), the election (leadership), the agent (publishes), the app's applier (applies,
//! latency, versions behind) and the install pipeline (check and reload durations).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `zkcoord_session_state` | gauge, 1 for the current state | `state` |
//! | `zkcoord_sessions_established_total` | counter | |
//! | `zkcoord_session_reconnects_total` | counter | |
//! | `zkcoord_session_expiries_total` | counter | |
//! | `zkcoord_leader` | gauge 0/1 | |
//! | `zkcoord_publishes_total` | counter | `outcome` |
//! | `zkcoord_applies_total` | counter | `app`, `result` |
//! | `zkcoord_hook_duration_seconds` | histogram | `app`, `hook` |
//! | `zkcoord_publish_to_apply_seconds` | histogram | `app` |
//! | `zkcoord_versions_behind` | gauge | `app` |
//! | `zkcoord_drift_detected_total` | counter: distinct hand edits of the destination found | `app` |
//! | `zkcoord_drifted` | gauge 0/1: the destination is left edited (`on_drift` report or hold) | `app` |
//! | `zkcoord_drift_held` | gauge 0/1: new versions are withheld (`on_drift = "hold"`) | `app` |
//! | `zkcoord_frozen` | gauge 0/1: a freeze holds the app (`zkcoordctl freeze`); nothing new is applied | `app` |
//! | `zkcoord_render_held` | gauge 0/1: a rendered app's members are held back (`min_members`, `max_shrink`) | `app` |
//! | `zkcoord_build_info` | info (1) | `version`, `arch`, `os` |
//! | `zkcoord_applied_version` | gauge: sequence number of the applied version | `app` |
//! | `zkcoord_last_apply_success_timestamp_seconds` | gauge | `app` |
//! | `process_*` | the standard process metrics ([`process`]) | |

pub mod process;

use crate::model::request::Outcome;
use crate::model::status::ApplyResult;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use std::sync::atomic::AtomicU64;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every session phase, so the state gauge shows all of them (0 or 1).
/// The session phases `zkcoord_session_state` has a series for (the session's own names).
pub const PHASES: [&str; 5] = ["connecting", "connected", "disconnected", "expired", "closed"];

/// Every apply result but `pending`, which is not the end of an apply.
const RESULTS: [ApplyResult; 5] =
    [ApplyResult::Ok, ApplyResult::CheckFailed, ApplyResult::ReloadFailed, ApplyResult::Error, ApplyResult::Rejected];

/// Every publish outcome's label.
const OUTCOMES: [&str; 3] = ["published", "unchanged", "rejected"];

/// `state="connected"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    /// The session phase's name.
    state: String,
}

/// `outcome="published"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// published, unchanged or rejected.
    outcome: String,
}

/// `app="nginxconf"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    /// The application's name.
    app: String,
}

/// `app="nginxconf",state="aborted"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    /// The application's name.
    app: String,
    /// The state the leader wrote.
    state: String,
}

/// `service="web"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    /// The service's name.
    service: String,
}

/// `app="nginxconf",result="check-failed"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApplyLabels {
    /// The application's name.
    app: String,
    /// How the apply ended, as the status node spells it.
    result: String,
}

/// `app="nginxconf",hook="check"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    /// The application's name.
    app: String,
    /// check or reload.
    hook: String,
}

/// Which hook ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// The check command, on the staged file.
    Check,
    /// The reload command (also the one after a rollback).
    Reload,
    /// Post-reload verification (a verify command's runs, or the nginx check's wait).
    Verify,
}

impl Hook {
    fn label(self) -> &'static str {
        match self {
            Hook::Check => "check",
            Hook::Reload => "reload",
            Hook::Verify => "verify",
        }
    }
}

/// Hook runs from 5 ms to ~41 s: an `nginx -t` takes tens of ms, a slow reload seconds.
fn hook_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Publish to apply from 1 ms to ~33 s: milliseconds when healthy, seconds behind a slow hook.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The daemon's metrics and the registry that encodes them.
pub struct Metrics {
    /// Encodes everything below.
    registry: Registry,
    /// 1 for the session's current phase, 0 for the others.
    session_state: Family<StateLabels, Gauge>,
    /// New sessions (the first, and one after every expiry).
    sessions: Counter,
    /// Rollout decisions the leader wrote (soaking, promoted, aborted), by app.
    rollout_decisions: Family<RolloutLabels, Counter>,
    /// 1 while this host waits for one of an app's `max_parallel_reloads` slots.
    reload_slot_waiting: Family<AppLabels, Gauge>,
    /// 1 when the last SIGHUP's configuration was taken, 0 when it was refused.
    config_reload_ok: Gauge,
    /// SIGHUPs whose configuration was refused.
    config_reload_failures: Counter,
    /// Connections re-established on the same session after a disconnect.
    reconnects: Counter,
    /// Sessions that ended under us (expired, or otherwise lost), not closed on purpose.
    expiries: Counter,
    /// 1 while this agent leads.
    leader: Gauge,
    /// Publish requests the leader handled, by outcome.
    publishes: Family<OutcomeLabels, Counter>,
    /// Finished applies by app and result.
    applies: Family<ApplyLabels, Counter>,
    /// How long check and reload commands ran.
    hook_seconds: Family<HookLabels, Histogram, fn() -> Histogram>,
    /// From a version node's creation to its successful apply here.
    publish_to_apply: Family<AppLabels, Histogram, fn() -> Histogram>,
    /// Versions newer than the one applied here.
    versions_behind: Family<AppLabels, Gauge>,
    /// 1 while this host's member of a service is wanted (healthy and not drained).
    service_registered: Family<ServiceLabels, Gauge>,
    /// Live members a rendered app saw at its last look.
    render_members: Family<AppLabels, Gauge>,
    /// 1 while a rendered app holds its members back (too few, or shrunk past `max_shrink`):
    /// the file is behind the registry on purpose, and someone should look.
    render_held: Family<AppLabels, Gauge>,
    /// Distinct hand edits found at an app's destination (each on-disk hash counts once).
    drift_detected: Family<AppLabels, Counter>,
    /// 1 while an app's destination is left edited by hand (`on_drift` report or hold).
    drifted: Family<AppLabels, Gauge>,
    /// 1 while an app applies nothing new because of a hand edit (`on_drift = "hold"`).
    drift_held: Family<AppLabels, Gauge>,
    frozen: Family<AppLabels, Gauge>,
    /// The sequence number of the version applied here, so a dashboard can show hosts per
    /// version and an alert can compare a host with the newest.
    applied_version: Family<AppLabels, Gauge>,
    /// When an apply last succeeded (or, after a restart, when the remembered version was
    /// applied): "nothing applied for N hours" is an alert without reading logs.
    last_success: Family<AppLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Every metric registered, the session at `connecting`.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            session_state: Family::default(),
            sessions: Counter::default(),
            rollout_decisions: Family::default(),
            reload_slot_waiting: Family::default(),
            config_reload_ok: Gauge::default(),
            config_reload_failures: Counter::default(),
            reconnects: Counter::default(),
            expiries: Counter::default(),
            leader: Gauge::default(),
            publishes: Family::default(),
            applies: Family::default(),
            hook_seconds: Family::new_with_constructor(hook_histogram),
            publish_to_apply: Family::new_with_constructor(latency_histogram),
            versions_behind: Family::default(),
            service_registered: Family::default(),
            render_members: Family::default(),
            render_held: Family::default(),
            drift_detected: Family::default(),
            drifted: Family::default(),
            drift_held: Family::default(),
            frozen: Family::default(),
            applied_version: Family::default(),
            last_success: Family::default(),
        };
        let registry = &mut m.registry;
        registry.register("zkcoord_session_state", "ZooKeeper session state: 1 for the current one", m.session_state.clone());
        registry.register("zkcoord_sessions_established", "ZooKeeper sessions established (the first, and one after each expiry)", m.sessions.clone());
        registry.register("zkcoord_session_reconnects", "Connections re-established on the same ZooKeeper session", m.reconnects.clone());
        registry.register("zkcoord_session_expiries", "ZooKeeper sessions that ended under us (expired or lost)", m.expiries.clone());
        registry.register("zkcoord_leader", "1 while this agent is a leader", m.leader.clone());
        registry.register(
            "zkcoord_config_last_reload_successful",
            "1 unless the last SIGHUP's configuration was refused (the daemon then runs the one before)",
            m.config_reload_ok.clone(),
        );
        registry.register("zkcoord_config_reload_failures", "SIGHUPs whose configuration was refused", m.config_reload_failures.clone());
        registry.register(
            "zkcoord_rollout_decisions",
            "Staged-rollout decisions this agent wrote as leader (soaking, promoted, aborted), by app",
            m.rollout_decisions.clone(),
        );
        registry.register(
            "zkcoord_reload_slot_waiting",
            "1 while this host waits for one of the app's max_parallel_reloads slots",
            m.reload_slot_waiting.clone(),
        );
        m.config_reload_ok.set(1);
        registry.register("zkcoord_publishes", "Publish requests handled by this agent as leader, by outcome", m.publishes.clone());
        registry.register("zkcoord_applies", "Finished applies by app and result", m.applies.clone());
        registry.register("zkcoord_hook_duration_seconds", "Run time of check and reload commands", m.hook_seconds.clone());
        registry.register(
            "zkcoord_publish_to_apply_seconds",
            "From a version's creation in ZooKeeper to its successful apply on this host",
            m.publish_to_apply.clone(),
        );
        registry.register("zkcoord_versions_behind", "Published versions newer than the one applied here", m.versions_behind.clone());
        registry.register(
            "zkcoord_service_registered",
            "1 while this host's member of the service is wanted (healthy and not drained)",
            m.service_registered.clone(),
        );
        registry.register("zkcoord_render_members", "Live members a rendered app saw at its last look", m.render_members.clone());
        registry.register("zkcoord_render_held", "1 while a rendered app holds back its members (min_members, max_shrink) and the file keeps its content", m.render_held.clone());
        registry.register("zkcoord_drift_detected", "Distinct hand edits found at the app's destination", m.drift_detected.clone());
        registry.register("zkcoord_drifted", "1 while the app's destination is left edited by hand (on_drift report or hold)", m.drifted.clone());
        registry.register("zkcoord_drift_held", "1 while the app applies no new version because of a hand edit (on_drift = hold)", m.drift_held.clone());
        registry.register("zkcoord_frozen", "1 while a freeze (zkcoordctl freeze) holds the app: nothing new is applied", m.frozen.clone());
        registry.register(
            "zkcoord_applied_version",
            "Sequence number of the version applied on this host (conf-0000000012 is 12)",
            m.applied_version.clone(),
        );
        registry.register(
            "zkcoord_last_apply_success_timestamp_seconds",
            "When a version of the app was last applied successfully on this host, in seconds since the epoch",
            m.last_success.clone(),
        );
        registry.register(
            "zkcoord_build",
            "The running build: always 1, the labels say which",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("arch", std::env::consts::ARCH),
                ("os", std::env::consts::OS),
            ]),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        for outcome in OUTCOMES {
            let _ = m.publishes.get_or_create(&OutcomeLabels { outcome: outcome.into() });
        }
        m.session_phase("connecting");
        m
    }

    /// The session is now in `phase`.
    pub fn session_phase(&self, phase: &str) {
        for p in PHASES {
            self.session_state.get_or_create(&StateLabels { state: p.to_string() }).set(i64::from(p == phase));
        }
    }

    /// The leader moved `app`'s rollout to `state`.
    pub fn rollout_decided(&self, app: &str, state: &str) {
        self.rollout_decisions.get_or_create(&RolloutLabels { app: app.into(), state: state.into() }).inc();
    }

    /// This host starts (`true`) or stops waiting for a reload slot of `app`.
    pub fn reload_slot_waiting(&self, app: &str, waiting: bool) {
        self.reload_slot_waiting.get_or_create(&AppLabels { app: app.into() }).set(i64::from(waiting));
    }

    /// A SIGHUP's configuration was taken (`true`) or refused.
    pub fn config_reloaded(&self, ok: bool) {
        self.config_reload_ok.set(i64::from(ok));
        if !ok {
            self.config_reload_failures.inc();
        }
    }

    /// A new session was established.
    pub fn session_established(&self) {
        self.sessions.inc();
    }

    /// The connection came back on the same session.
    pub fn session_reconnected(&self) {
        self.reconnects.inc();
    }

    /// The session ended under us.
    pub fn session_expired(&self) {
        self.expiries.inc();
    }

    /// This agent now leads (or not).
    pub fn leadership(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The leader handled a publish request.
    pub fn publish_handled(&self, outcome: &Outcome) {
        let outcome = match outcome {
            Outcome::Published { .. } => "published",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Rejected { .. } => "rejected",
        };
        self.publishes.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    /// A follower for `app` started: its series appear at zero rather than at the first event.
    pub fn app_started(&self, app: &str) {
        for r in RESULTS {
            let _ = self.applies.get_or_create(&ApplyLabels { app: app.into(), result: r.as_str().into() });
        }
        let _ = self.versions_behind.get_or_create(&AppLabels { app: app.into() });
        let _ = self.drift_detected.get_or_create(&AppLabels { app: app.into() });
        self.drift_state(app, false, false);
    }

    /// A follower for `app` stopped (removed by a reload): its gauge goes; counters stay.
    pub fn app_stopped(&self, app: &str) {
        self.versions_behind.remove(&AppLabels { app: app.into() });
        self.applied_version.remove(&AppLabels { app: app.into() });
        self.last_success.remove(&AppLabels { app: app.into() });
        self.render_members.remove(&AppLabels { app: app.into() });
        self.render_held.remove(&AppLabels { app: app.into() });
        self.drifted.remove(&AppLabels { app: app.into() });
        self.drift_held.remove(&AppLabels { app: app.into() });
        self.frozen.remove(&AppLabels { app: app.into() });
    }

    /// Whether a freeze holds `app`.
    pub fn frozen(&self, app: &str, frozen: bool) {
        self.frozen.get_or_create(&AppLabels { app: app.into() }).set(i64::from(frozen));
    }

    /// A hand edit of `app`'s destination not seen before was found.
    pub fn drift_detected(&self, app: &str) {
        self.drift_detected.get_or_create(&AppLabels { app: app.into() }).inc();
    }

    /// Whether `app`'s destination is left edited by hand, and whether that holds new versions back.
    pub fn drift_state(&self, app: &str, drifted: bool, held: bool) {
        self.drifted.get_or_create(&AppLabels { app: app.into() }).set(i64::from(drifted));
        self.drift_held.get_or_create(&AppLabels { app: app.into() }).set(i64::from(held));
    }

    /// An apply of `app` ended with `result`.
    pub fn apply_finished(&self, app: &str, result: ApplyResult) {
        self.applies.get_or_create(&ApplyLabels { app: app.into(), result: result.as_str().into() }).inc();
    }

    /// Version `seq` of `app` is the one applied here, since `applied_at` (seconds since the
    /// epoch): called after a successful apply and when a restart finds it remembered.
    pub fn applied(&self, app: &str, seq: Option<u64>, applied_at: u64) {
        let labels = AppLabels { app: app.into() };
        if let Some(seq) = seq {
            self.applied_version.get_or_create(&labels).set(seq.min(i64::MAX as u64) as i64);
        }
        self.last_success.get_or_create(&labels).set(applied_at as f64);
    }

    /// A version of `app` was applied `since_publish` after its node was created.
    pub fn applied_after(&self, app: &str, since_publish: Duration) {
        self.publish_to_apply.get_or_create(&AppLabels { app: app.into() }).observe(since_publish.as_secs_f64());
    }

    /// A check or reload command of `app` ran for `elapsed`.
    pub fn hook_ran(&self, app: &str, hook: Hook, elapsed: Duration) {
        self.hook_seconds.get_or_create(&HookLabels { app: app.into(), hook: hook.label().into() }).observe(elapsed.as_secs_f64());
    }

    /// `app` is `behind` versions behind the newest.
    pub fn versions_behind(&self, app: &str, behind: u64) {
        self.versions_behind.get_or_create(&AppLabels { app: app.into() }).set(behind.min(i64::MAX as u64) as i64);
    }

    /// This host's member of `service` is now wanted (or not); None when its registration
    /// stopped (removed by a reload), which removes the series.
    pub fn service_registered(&self, service: &str, wanted: Option<bool>) {
        let labels = ServiceLabels { service: service.into() };
        match wanted {
            Some(w) => {
                self.service_registered.get_or_create(&labels).set(i64::from(w));
            }
            None => {
                self.service_registered.remove(&labels);
            }
        }
    }

    /// Rendered app `app` saw `count` live members.
    pub fn render_members(&self, app: &str, count: usize) {
        self.render_members.get_or_create(&AppLabels { app: app.into() }).set(count as i64);
    }

    /// Whether rendered app `app` holds its members back ([`crate::model::member_guard`]).
    pub fn render_held(&self, app: &str, held: bool) {
        self.render_held.get_or_create(&AppLabels { app: app.into() }).set(i64::from(held));
    }

    /// Everything, in the OpenMetrics text format (which Prometheus scrapes as such).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_appear_at_zero_and_count_events() {
        let m = Metrics::new();
        m.app_started("web");
        m.apply_finished("web", ApplyResult::CheckFailed);
        m.session_phase("connected");
        m.hook_ran("web", Hook::Check, Duration::from_millis(12));
        let text = m.encode();
        for line in [
            "zkcoord_applies_total{app=\"web\",result=\"ok\"} 0",
            "zkcoord_applies_total{app=\"web\",result=\"check-failed\"} 1",
            "zkcoord_session_state{state=\"connected\"} 1",
            "zkcoord_session_state{state=\"connecting\"} 0",
            "zkcoord_publishes_total{outcome=\"rejected\"} 0",
            "zkcoord_versions_behind{app=\"web\"} 0",
            "zkcoord_hook_duration_seconds_count{app=\"web\",hook=\"check\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn rollout_decisions_reload_slot_waits_and_refused_reloads_are_exported() {
        let m = Metrics::new();
        m.rollout_decided("web", "aborted");
        m.reload_slot_waiting("web", true);
        m.config_reloaded(false);
        let text = m.encode();
        for line in [
            "zkcoord_rollout_decisions_total{app=\"web\",state=\"aborted\"} 1",
            "zkcoord_reload_slot_waiting{app=\"web\"} 1",
            "zkcoord_config_last_reload_successful 0",
            "zkcoord_config_reload_failures_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        m.reload_slot_waiting("web", false);
        assert!(m.encode().lines().any(|l| l == "zkcoord_reload_slot_waiting{app=\"web\"} 0"));
    }

    #[test]
    fn build_info_applied_version_last_success_and_process_metrics_are_exported() {
        let m = Metrics::new();
        m.app_started("web");
        m.applied("web", Some(12), 1_700_000_000);
        let text = m.encode();
        let build = format!("zkcoord_build_info{{version=\"{}\",arch=\"{}\",os=\"{}\"}} 1", env!("CARGO_PKG_VERSION"), std::env::consts::ARCH, std::env::consts::OS);
        for line in [
            build.as_str(),
            "zkcoord_applied_version{app=\"web\"} 12",
            "zkcoord_last_apply_success_timestamp_seconds{app=\"web\"} 1700000000.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        for name in ["process_resident_memory_bytes ", "process_cpu_seconds_total ", "process_open_fds ", "process_start_time_seconds "] {
            assert!(text.lines().any(|l| l.starts_with(name)), "no {name:?} in\n{text}");
        }
        m.app_stopped("web");
        assert!(!m.encode().contains("zkcoord_applied_version{"), "a removed app's gauges go");
    }
}
