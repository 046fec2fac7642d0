//! `zkcoordd`: starts the session supervisor and the components the role asks for (and the
//! HTTP listener when configured), tells systemd how things stand, applies SIGHUP reloads, and
//! stops cleanly: intake first, applies finished, session closed last so our ephemeral nodes
//! vanish at once.

//!
//! May use: everything below it. Its own rooms: `http` (`/healthz`, `/metrics`), `systemd`
//! (sd_notify), `signals` (Unix signals as messages), `logging` (journal, text or JSON), `json_log` (the JSON lines).

pub(crate) mod http;
pub(crate) mod json_log;
pub(crate) mod logging;
pub mod signals;
pub(crate) mod systemd;

use crate::agent;
use crate::app::follower::{AppFollower, Applier};
use crate::app::skeleton::AppView;
use http::HttpState;
use crate::config::{AppConfig, Config, ServiceConfig};
use crate::app::render::RenderFollower;
use crate::service::ServiceRunner;
use crate::zk::election::{self, Leadership};
use crate::daemon::logging::LogControl;
use crate::metrics::Metrics;
use crate::zk::registration::{self, NodeSpec, Registered};
use crate::zk::session::{self, SessionHandle};
use signals::Request;
use crate::clock::now_secs;
use crate::daemon::systemd::Notifier;
use crate::ready::ReadyGate;
use crate::agent::trigger::{self, TriggerSettings};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// The agent's registration data: who we are, for `zkCli.sh get` and `zkcoordctl status`.
#[derive(Debug, serde::Serialize)]
struct AgentInfo<'a> {
    /// Node id from the config.
    node_id: &'a str,
    /// The machine's host name.
    host: String,
    /// Our pid.
    pid: u32,
    /// zkcoord's version.
    version: &'a str,
    /// Seconds since the epoch when this process started.
    started: u64,
}

/// One running app follower.
struct RunningApp {
    /// The config it runs with; a reload that changes it restarts the follower.
    config: AppConfig,
    /// Stops just this follower.
    stop: CancellationToken,
    /// Its task.
    task: JoinHandle<()>,
    /// How it stands, for STATUS and `/healthz`.
    view: watch::Receiver<AppView>,
}

/// One registered `[[service]]`.
struct RunningService {
    /// The config it runs with; a reload that changes it restarts the registration.
    config: ServiceConfig,
    /// Stops just this service's registration (its member is removed).
    stop: CancellationToken,
    /// Its task.
    task: JoinHandle<()>,
}

/// The HTTP listener, restartable by a reload that changes `[http]`.
struct RunningHttp {
    /// Stops it.
    stop: CancellationToken,
    /// Its task.
    task: JoinHandle<()>,
}

/// The agent's restartable part: intake and the legacy trigger (the election stays up).
struct RunningIntake {
    /// Stops intake and trigger.
    stop: CancellationToken,
    /// Their tasks.
    tasks: Vec<JoinHandle<()>>,
}

/// Everything the daemon runs, so a reload can change parts of it.
struct Components {
    /// The config currently applied.
    config: Arc<Config>,
    /// The session everyone shares.
    session: SessionHandle,
    /// Parent of every component's stop token.
    work_stop: CancellationToken,
    /// Tasks that live as long as the daemon (registration, election).
    fixed: JoinSet<()>,
    /// Leadership, published by the election.
    leadership: watch::Receiver<Leadership>,
    /// Agent intake and trigger, if the role runs an agent.
    intake: Option<RunningIntake>,
    /// App followers by name.
    apps: BTreeMap<String, RunningApp>,
    /// Service registrations by name (every role).
    services: BTreeMap<String, RunningService>,
    /// Counts components that still owe their first sync (for READY).
    gate: ReadyGate,
    /// Shared with every component, which records its own events.
    metrics: Arc<Metrics>,
    /// The HTTP listener, if `[http] listen` is set.
    http: Option<RunningHttp>,
    /// The followers' views as the HTTP listener reads them; replaced when apps change.
    views: watch::Sender<Vec<watch::Receiver<AppView>>>,
    /// The freeze flags in force, for the leader and every follower (None until first read).
    freezes: watch::Receiver<Option<crate::model::freeze::Freezes>>,
}

impl Components {
    fn start(config: Arc<Config>, session: SessionHandle, metrics: Arc<Metrics>) -> Components {
        let (lead_tx, lead_rx) = watch::channel(Leadership::Standby);
        let (freeze_tx, freezes) = watch::channel(None);
        let mut c = Components {
            config: config.clone(),
            session,
            work_stop: CancellationToken::new(),
            fixed: JoinSet::new(),
            leadership: lead_rx,
            intake: None,
            apps: BTreeMap::new(),
            services: BTreeMap::new(),
            gate: ReadyGate::new(),
            metrics,
            http: None,
            views: watch::Sender::new(Vec::new()),
            freezes,
        };
        c.fixed.spawn(crate::zk::freeze::keep(config.layout(), c.session.clone(), freeze_tx, c.work_stop.clone()));
        if config.role.runs_agent() {
            c.start_election(lead_tx);
            c.intake = Some(c.start_intake(&config));
        }
        if config.role.runs_app() {
            for app in &config.apps {
                let running = c.start_app(&config, app);
                c.apps.insert(app.name.clone(), running);
            }
        }
        for svc in &config.services {
            let running = c.start_service(&config, svc);
            c.services.insert(svc.name.clone(), running);
        }
        c.publish_views();
        c.http = c.start_http(&config);
        c
    }

    /// Starts the HTTP listener if the config asks for one.
    fn start_http(&self, config: &Config) -> Option<RunningHttp> {
        let listen = config.http.listen.as_ref()?.parse().expect("validated at load");
        let state = HttpState { metrics: self.metrics.clone(), session: self.session.clone(), apps: self.views.subscribe() };
        let stop = self.work_stop.child_token();
        let task = tokio::spawn(http::run(listen, state, stop.clone()));
        Some(RunningHttp { stop, task })
    }

    /// Tells the HTTP listener which followers run now.
    fn publish_views(&self) {
        self.views.send_replace(self.apps.values().map(|a| a.view.clone()).collect());
    }

    fn start_election(&mut self, lead_tx: watch::Sender<Leadership>) {
        let config = &self.config;
        let info = AgentInfo {
            node_id: &config.node_id,
            host: hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            started: now_secs(),
        };
        let (data_tx, data_rx) = watch::channel(serde_json::to_vec(&info).expect("agent info"));
        let (reg_tx, reg_rx) = watch::channel::<Option<Registered>>(None);
        let spec = NodeSpec {
            parent: config.agent.election_path.clone(),
            name: crate::model::layout::WORKER_PREFIX.into(),
            sequential: true,
            parent_kind: crate::zk::identity::NodeKind::AgentParent,
            tombstone: None,
            conflict: None,
            resync: config.resync_interval.0,
            write_delay: registration::WriteDelay::NONE,
        };
        let keeper = registration::keep(spec, self.session.clone(), data_rx, reg_tx, self.work_stop.clone());
        self.fixed.spawn(async move {
            // The data never changes; its sender lives as long as the keeper.
            let _data_tx = data_tx;
            keeper.await
        });
        let election = election::Election {
            parent: config.agent.election_path.clone(),
            leaders: config.agent.leaders as usize,
            session: self.session.clone(),
            registered: reg_rx,
            out: lead_tx,
            first_sync: self.gate.part(),
            metrics: self.metrics.clone(),
        };
        self.fixed.spawn(election.run(self.work_stop.clone()));
    }

    fn start_intake(&self, config: &Arc<Config>) -> RunningIntake {
        let stop = self.work_stop.child_token();
        let local = agent::LocalIntake::default();
        let mut tasks = vec![tokio::spawn(agent::run(config.clone(), self.session.clone(), self.leadership.clone(), self.metrics.clone(), local.clone(), self.freezes.clone(), stop.clone()))];
        if let (Some(listen), Some(app)) = (&config.agent.trigger_listen, &config.agent.trigger_app) {
            let settings = TriggerSettings {
                listen: listen.parse().expect("validated at load"),
                app: app.clone(),
                max_connections: config.agent.trigger_max_connections,
                token: config.agent.trigger_token_file.as_deref().and_then(|f| crate::secret::load_line(f).ok()),
            };
            tasks.push(tokio::spawn(trigger::run(settings, config.layout(), self.session.clone(), local, stop.clone())));
        }
        RunningIntake { stop, tasks }
    }

    fn start_app(&self, config: &Config, app: &AppConfig) -> RunningApp {
        let (view_tx, view) = watch::channel(AppView::starting(&app.name));
        let stop = self.work_stop.child_token();
        let task = if app.rendered().is_some() {
            let follower = RenderFollower::new(config, app, self.metrics.clone(), self.gate.part(), view_tx);
            tokio::spawn(follower.run(self.session.clone(), stop.clone()))
        } else {
            let follower = AppFollower {
                applier: Applier::new(config, app, self.metrics.clone()),
                ready: self.gate.part(),
                view: view_tx,
                conflict: Default::default(),
                freezes: self.freezes.clone(),
            };
            tokio::spawn(follower.run(self.session.clone(), stop.clone()))
        };
        RunningApp { config: app.clone(), stop, task, view }
    }

    fn start_service(&self, config: &Config, svc: &ServiceConfig) -> RunningService {
        let runner = ServiceRunner {
            service: svc.clone(),
            node_id: config.node_id.clone(),
            drain_flag: config.layout().drain(&config.node_id, &svc.name),
            metrics: self.metrics.clone(),
            resync: config.resync_interval.0,
        };
        let stop = self.work_stop.child_token();
        let task = tokio::spawn(runner.run(self.session.clone(), stop.clone()));
        RunningService { config: svc.clone(), stop, task }
    }

    /// Applies a new configuration: apps added, removed or changed, intake settings, log level,
    /// the HTTP listener. Keys that need a new session or a new election are refused with a
    /// message.
    async fn apply(&mut self, new: Config, log: &LogControl) -> Result<Vec<String>, NeedsRestart> {
        let old = self.config.clone();
        let fixed = [
            ("role", old.role != new.role),
            ("node_id", old.node_id != new.node_id),
            ("state_dir", old.state_dir != new.state_dir),
            ("[zookeeper]", old.zookeeper != new.zookeeper),
            ("agent.election_path", old.agent.election_path != new.agent.election_path),
            ("agent.leaders", old.agent.leaders != new.agent.leaders),
            ("max_config_size", old.max_config_size != new.max_config_size),
            ("log_format", old.log_format != new.log_format),
        ];
        let needs_restart: Vec<&str> = fixed.iter().filter(|(_, changed)| *changed).map(|(k, _)| *k).collect();
        if !needs_restart.is_empty() {
            return Err(NeedsRestart(needs_restart.join(", ")));
        }
        let new = Arc::new(new);
        let mut changes = Vec::new();
        if old.log_level != new.log_level {
            log.set_level(&new.log_level);
            changes.push(format!("log_level {:?}", new.log_level));
        }
        if new.role.runs_agent() && old.agent != new.agent {
            if let Some(intake) = self.intake.take() {
                intake.stop.cancel();
                for t in intake.tasks {
                    let _ = t.await;
                }
            }
            self.intake = Some(self.start_intake(&new));
            changes.push("agent intake and trigger restarted".into());
        }
        if new.role.runs_app() {
            let wanted: BTreeMap<&str, &AppConfig> = new.apps.iter().map(|a| (a.name.as_str(), a)).collect();
            let stale: Vec<String> = self
                .apps
                .iter()
                .filter(|(name, running)| wanted.get(name.as_str()).is_none_or(|w| **w != running.config))
                .map(|(name, _)| name.clone())
                .collect();
            for name in &stale {
                let running = self.apps.remove(name).expect("listed");
                running.stop.cancel();
                let _ = running.task.await;
            }
            for app in &new.apps {
                if !self.apps.contains_key(&app.name) {
                    let running = self.start_app(&new, app);
                    self.apps.insert(app.name.clone(), running);
                    let verb = if stale.contains(&app.name) { "restarted" } else { "added" };
                    changes.push(format!("app {} {verb}", app.name));
                }
            }
            for name in stale.iter().filter(|n| !wanted.contains_key(n.as_str())) {
                changes.push(format!("app {name} removed"));
            }
            self.publish_views();
        }
        let wanted: BTreeMap<&str, &ServiceConfig> = new.services.iter().map(|s| (s.name.as_str(), s)).collect();
        let stale: Vec<String> = self
            .services
            .iter()
            .filter(|(name, running)| wanted.get(name.as_str()).is_none_or(|w| **w != running.config))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &stale {
            let running = self.services.remove(name).expect("listed");
            running.stop.cancel();
            let _ = running.task.await;
        }
        for svc in &new.services {
            if !self.services.contains_key(&svc.name) {
                let running = self.start_service(&new, svc);
                self.services.insert(svc.name.clone(), running);
                let verb = if stale.contains(&svc.name) { "restarted" } else { "added" };
                changes.push(format!("service {} {verb}", svc.name));
            }
        }
        for name in stale.iter().filter(|n| !wanted.contains_key(n.as_str())) {
            changes.push(format!("service {name} removed"));
        }
        if old.http != new.http {
            if let Some(running) = self.http.take() {
                running.stop.cancel();
                if tokio::time::timeout(Duration::from_secs(5), running.task).await.is_err() {
                    tracing::warn!("the old HTTP listener did not stop within 5s");
                }
            }
            self.http = self.start_http(&new);
            changes.push(match &new.http.listen {
                Some(listen) => format!("http listener on {listen}"),
                None => "http listener stopped".into(),
            });
        }
        self.config = new;
        Ok(changes)
    }

    /// Restarts every rendered app's follower, so that edited templates are read again (a
    /// template is a file on the host, outside the config, and SIGHUP is how an operator says
    /// "look again"). An unchanged output is not rewritten. Returns a note for the log line.
    async fn reread_app_files(&mut self) -> String {
        // Rendered apps re-read their templates; apps with trusted_keys re-read the key files,
        // so replacing a compromised key takes effect on SIGHUP even at the same path.
        let names: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, a)| a.config.published().is_none_or(|p| !p.trusted_keys.is_empty()))
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            return String::new();
        }
        let config = self.config.clone();
        for name in &names {
            let running = self.apps.remove(name).expect("listed");
            running.stop.cancel();
            let _ = running.task.await;
            let app = config.apps.iter().find(|a| &a.name == name).expect("a running app is configured");
            let restarted = self.start_app(&config, app);
            self.apps.insert(name.clone(), restarted);
        }
        self.publish_views();
        format!("; templates and trusted keys re-read for {}", names.join(", "))
    }

    /// A component that ended on its own, if any: the daemon is then unhealthy.
    fn dead_component(&mut self) -> Option<String> {
        if let Some(res) = self.fixed.try_join_next() {
            return Some(format!("a registration or election task ended: {res:?}"));
        }
        if let Some(name) = self.apps.iter().find(|(_, a)| a.task.is_finished()).map(|(n, _)| n.clone()) {
            return Some(format!("the follower of app {name} ended"));
        }
        if let Some(name) = self.services.iter().find(|(_, s)| s.task.is_finished()).map(|(n, _)| n.clone()) {
            return Some(format!("the registration of service {name} ended"));
        }
        if self.intake.as_ref().is_some_and(|i| i.tasks.iter().any(|t| t.is_finished())) {
            return Some("agent intake ended".into());
        }
        if self.http.as_ref().is_some_and(|h| h.task.is_finished()) {
            return Some("the HTTP listener ended".into());
        }
        None
    }

    fn summaries(&self) -> Vec<watch::Receiver<AppView>> {
        self.apps.values().map(|a| a.view.clone()).collect()
    }

    /// Stops everything, waiting for applies in progress (bounded by the hook timeouts).
    async fn stop(mut self) {
        self.work_stop.cancel();
        let longest_hook = self.config.apps.iter().map(|a| a.hook_timeout).max().unwrap_or_default();
        let mut handles: Vec<JoinHandle<()>> = self.apps.into_values().map(|a| a.task).collect();
        handles.extend(self.services.into_values().map(|s| s.task));
        if let Some(intake) = self.intake.take() {
            handles.extend(intake.tasks);
        }
        if let Some(http) = self.http.take() {
            handles.push(http.task);
        }
        let drain = async {
            for h in handles {
                let _ = h.await;
            }
            while self.fixed.join_next().await.is_some() {}
        };
        if tokio::time::timeout(longest_hook * 2 + Duration::from_secs(5), drain).await.is_err() {
            tracing::warn!("components did not stop in time; closing the session anyway");
        }
    }
}

/// Loads the config at `path` with every check, the TLS files included (see
/// [`crate::zk::identity::load_config`]).
pub fn load_config(path: &std::path::Path) -> Result<Config, crate::config::ConfigError> {
    crate::zk::identity::load_config(path)
}

/// A reload that changes what only a restart can (the session, the election, the state
/// directory): refused, and the running configuration kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("changing {0} needs a restart (systemctl restart zkcoordd)")]
pub struct NeedsRestart(pub String);

/// How `zkcoordd` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The daemon, until SIGTERM.
    Daemon,
    /// `--once`: apply what is published, then exit.
    Once,
    /// `--dry-run`: say what `--once` would do, change nothing.
    DryRun,
}

/// Runs `zkcoordd` in `mode`, once the config at `config_path` is loaded: installs our
/// ZooKeeper identity, starts logging and the runtime, then a one-shot pass or the daemon.
/// Returns the process's exit code.
pub fn start(config: Config, config_path: PathBuf, mode: Mode, early_stop: signals::EarlyStop) -> i32 {
    // A one-shot run prints its own results, one line per app; its log is off unless
    // ZKCOORD_LOG or RUST_LOG ask for it.
    let one_shot = mode != Mode::Daemon;
    crate::zk::identity::install_from(&config);
    let log = logging::init(if one_shot { "off" } else { &config.log_level }, config.log_format);
    // The daemon and `--once` apply, so each holds the state directory's lock while it runs;
    // `--dry-run` changes nothing and may run beside either.
    let _lock = match mode {
        Mode::DryRun => None,
        Mode::Daemon | Mode::Once => match crate::host::lock::acquire(&config.state_dir) {
            Ok(lock) => Some(lock),
            Err(e) => {
                eprintln!("zkcoordd: {e}");
                tracing::error!("{e}");
                return match e {
                    crate::host::lock::LockError::Held { .. } => crate::exit::TEMPFAIL,
                    crate::host::lock::LockError::Io { .. } => crate::exit::CANTCREAT,
                };
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zkcoordd: cannot start the runtime: {e}");
            return crate::exit::SOFTWARE;
        }
    };
    let code = match mode {
        Mode::Once => runtime.block_on(crate::app::oneshot::once(&config)),
        Mode::DryRun => runtime.block_on(crate::app::oneshot::dry_run(&config)),
        Mode::Daemon => runtime.block_on(run(config, config_path, early_stop, log)),
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub async fn run(config: Config, config_path: PathBuf, early: signals::EarlyStop, log: LogControl) -> i32 {
    let notifier = Notifier;
    let mut signals = match signals::listen(&early) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return crate::exit::SOFTWARE;
        }
    };
    let config = Arc::new(config);
    tracing::info!(role = %config.role, node = %config.node_id, hosts = %config.zookeeper.hosts, config = %config_path.display(), "zkcoordd starting");
    for w in config.warnings() {
        tracing::warn!("{w}");
    }

    let metrics = Arc::new(Metrics::new());
    let (supervisor, session) = session::channel(metrics.clone());
    let session_stop = CancellationToken::new();
    let supervisor_task = tokio::spawn(supervisor.supervise(config.zookeeper.clone(), session_stop.clone()));
    let mut components = Components::start(config.clone(), session.clone(), metrics.clone());
    let mut reload_refused: Option<String>;
    let mut status_task = spawn_status(&components, notifier, session.clone(), true, None);

    // The watchdog is fed from this loop, and only while every component is alive: a wedged
    // runtime or a dead component stops the pings and systemd restarts us.
    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
    loop {
        tokio::select! {
            req = signals.recv() => match req {
                Some(Request::Reload) => {
                    notifier.reloading();
                    let refused = match crate::zk::identity::load_config(&config_path) {
                        Err(e) => Some(e.to_string()),
                        Ok(new) if new == *components.config => {
                            let rerendered = components.reread_app_files().await;
                            tracing::info!("reload: configuration unchanged{rerendered}");
                            None
                        }
                        Ok(new) => match components.apply(new, &log).await {
                            Ok(changes) => {
                                let rerendered = components.reread_app_files().await;
                                tracing::info!("reload applied: {}{rerendered}", changes.join("; "));
                                None
                            }
                            Err(e) => Some(e.to_string()),
                        },
                    };
                    if let Some(why) = &refused {
                        tracing::error!("reload refused: {why}; keeping the running configuration");
                    }
                    components.metrics.config_reloaded(refused.is_none());
                    // Kept in STATUS until a reload is taken: systemd shows it, `systemctl reload` alone cannot.
                    reload_refused = refused;
                    status_task.abort();
                    status_task = spawn_status(&components, notifier, session.clone(), false, reload_refused.clone());
                }
                Some(Request::Shutdown) | None => break,
            },
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                match components.dead_component() {
                    None => notifier.watchdog(),
                    Some(what) => {
                        tracing::error!("{what}; not feeding the watchdog");
                        watchdog = None;
                    }
                }
            }
        }
    }

    tracing::info!("shutting down: stopping intake, finishing the apply in progress");
    notifier.stopping();
    status_task.abort();
    components.stop().await;
    session_stop.cancel();
    let _ = supervisor_task.await;
    tracing::info!("zkcoordd stopped");
    0
}

fn spawn_status(c: &Components, notifier: Notifier, session: SessionHandle, starting: bool, reload_refused: Option<String>) -> JoinHandle<()> {
    tokio::spawn(report_status(
        c.config.clone(),
        notifier,
        session,
        c.leadership.clone(),
        c.summaries(),
        c.gate.clone(),
        Moment { starting, reload_refused },
    ))
}

/// When STATUS is being reported: at start (READY waits for the first sync), or after a
/// SIGHUP, which may have been refused.
struct Moment {
    /// At start, not after a reload.
    starting: bool,
    /// Why the last SIGHUP's configuration was refused, shown until one is taken.
    reload_refused: Option<String>,
}

/// Sends READY (at start: after the first sync or the start timeout; after a reload: at once)
/// and keeps STATUS current.
async fn report_status(
    config: Arc<Config>,
    notifier: Notifier,
    mut session: SessionHandle,
    mut leadership: watch::Receiver<Leadership>,
    mut summaries: Vec<watch::Receiver<AppView>>,
    gate: ReadyGate,
    moment: Moment,
) {
    let Moment { starting, reload_refused } = moment;
    let start_timeout = config.zookeeper.start_timeout;
    let ready_at = tokio::time::Instant::now() + start_timeout;
    let mut ready_sent = false;
    // An app's view changes more often than its summary (an apply starting, say): STATUS is
    // sent when the line changes.
    let mut last_line = String::new();
    loop {
        let mut line = status_line(&config, &mut session, &mut leadership, &mut summaries);
        if let Some(why) = &reload_refused {
            line.push_str(&format!("; reload refused: {why}"));
        }
        if !ready_sent {
            let gate_open = !starting || tokio::time::timeout(Duration::ZERO, gate.wait()).await.is_ok();
            if gate_open {
                notifier.ready(&line);
                ready_sent = true;
                tracing::info!("ready: {line}");
            } else if tokio::time::Instant::now() >= ready_at {
                let why = format!("{line} (ready without a first sync: start timeout {} passed)", humantime::format_duration(start_timeout));
                notifier.ready(&why);
                ready_sent = true;
                tracing::warn!("{why}");
            } else if line != last_line {
                notifier.status(&line);
            }
        } else if line != last_line {
            notifier.status(&line);
        }
        last_line = line;
        // A branch whose channel has closed (no agent in this role: the leadership sender is
        // gone) must not wake the loop again and again: `Ok` patterns disable it.
        tokio::select! {
            _ = session.changed() => {}
            Ok(()) = leadership.changed() => {}
            _ = any_changed(&mut summaries) => {}
            _ = gate.wait(), if !ready_sent => {}
            _ = tokio::time::sleep_until(ready_at), if !ready_sent => {}
        }
    }
}

/// `both connected; leader; nginxconf=conf-0000000012`.
fn status_line(
    config: &Config,
    session: &mut SessionHandle,
    leadership: &mut watch::Receiver<Leadership>,
    summaries: &mut [watch::Receiver<AppView>],
) -> String {
    let view = session.current();
    let mut line = format!("{} {}", config.role, view.phase);
    if view.phase != session::Phase::Connected {
        line = format!("{line}: waiting for ZooKeeper at {}", config.zookeeper.hosts);
        if let Some(why) = &view.problem {
            line = format!("{line}: {why}");
        }
    }
    if config.role.runs_agent() {
        line.push_str(if leadership.borrow_and_update().is_leader() { "; leader" } else { "; standby" });
    }
    for s in summaries.iter_mut() {
        line.push_str("; ");
        line.push_str(&s.borrow_and_update().summary());
    }
    line
}

async fn any_changed<T>(summaries: &mut [watch::Receiver<T>]) {
    // Closed channels (a follower that ended) would resolve at once, forever: leave them out.
    let open: Vec<_> = summaries.iter_mut().filter(|s| s.has_changed().is_ok()).collect();
    if open.is_empty() {
        return std::future::pending().await;
    }
    let _ = futures::future::select_all(open.into_iter().map(|s| Box::pin(s.changed()))).await;
}
