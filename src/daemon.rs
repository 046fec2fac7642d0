//! `zkcoordd`: starts the session supervisor and the components the role asks for, tells
//! systemd how things stand, and stops cleanly: intake first, applies finished, session closed
//! last so our ephemeral nodes vanish at once.

use crate::agent;
use crate::app::AppFollower;
use crate::config::Config;
use crate::election::{self, Leadership};
use crate::registration::{self, NodeSpec, Registered};
use crate::session::{self, SessionHandle};
use crate::signals::{self, Request};
use crate::state::{now_secs, StateStore};
use crate::systemd::{Notifier, ReadyGate};
use crate::trigger::{self, TriggerSettings};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
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

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub async fn run(config: Config, config_path: PathBuf, early: signals::EarlyStop) -> i32 {
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

    let (supervisor, session) = session::channel();
    let session_stop = CancellationToken::new();
    let supervisor_task = tokio::spawn(supervisor.supervise(config.zookeeper.clone(), session_stop.clone()));

    let work_stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let gate = ReadyGate::new();
    let mut summaries: Vec<watch::Receiver<String>> = Vec::new();
    let (lead_tx, lead_rx) = watch::channel(Leadership::Standby);

    if config.role.runs_agent() {
        start_agent(&config, &session, &work_stop, &mut tasks, &gate, lead_tx, lead_rx.clone());
    }
    if config.role.runs_app() {
        let state = StateStore::new(&config.state_dir);
        for app in &config.apps {
            let (summary, rx) = watch::channel(format!("{}=starting", app.name));
            summaries.push(rx);
            let follower = AppFollower {
                versions: agent::versions_path(&config, &app.name),
                app: app.clone(),
                layout: config.layout(),
                node_id: config.node_id.clone(),
                state: state.clone(),
                ready: gate.part(),
                summary,
            };
            tasks.spawn(follower.run(session.clone(), work_stop.clone()));
        }
    }

    // READY once every component has looked at ZooKeeper, or after the start timeout.
    let start_timeout = config.zookeeper.start_timeout;
    let status_task = tokio::spawn(report_status(
        config.clone(),
        notifier,
        session.clone(),
        lead_rx.clone(),
        summaries,
        gate,
        start_timeout,
    ));

    while let Some(req) = signals.recv().await {
        match req {
            Request::Shutdown => break,
            Request::Reload => reload(&config_path, &config, notifier),
        }
    }

    tracing::info!("shutting down: stopping intake, finishing the apply in progress");
    notifier.stopping();
    status_task.abort();
    work_stop.cancel();
    let longest_hook = config.apps.iter().map(|a| a.hook_timeout).max().unwrap_or_default();
    let drain = async {
        while tasks.join_next().await.is_some() {}
    };
    if tokio::time::timeout(longest_hook * 2 + Duration::from_secs(5), drain).await.is_err() {
        tracing::warn!("components did not stop in time; closing the session anyway");
        tasks.abort_all();
    }
    session_stop.cancel();
    let _ = supervisor_task.await;
    tracing::info!("zkcoordd stopped");
    0
}

fn start_agent(
    config: &Arc<Config>,
    session: &SessionHandle,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
    gate: &ReadyGate,
    lead_tx: watch::Sender<Leadership>,
    lead_rx: watch::Receiver<Leadership>,
) {
    let info = AgentInfo {
        node_id: &config.node_id,
        host: hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        started: now_secs(),
    };
    let (_data_tx, data_rx) = watch::channel(serde_json::to_vec(&info).expect("agent info"));
    let (reg_tx, reg_rx) = watch::channel::<Option<Registered>>(None);
    let spec = NodeSpec {
        parent: config.agent.election_path.clone(),
        name: crate::layout::WORKER_PREFIX.into(),
        sequential: true,
    };
    // Keep the data sender alive for as long as the keeper runs.
    let keeper = registration::keep(spec, session.clone(), data_rx, reg_tx, stop.clone());
    tasks.spawn(async move {
        let _data_tx = _data_tx;
        keeper.await
    });
    let ready = gate.part();
    let mut reg_watch = reg_rx.clone();
    tasks.spawn(async move {
        let _ = reg_watch.wait_for(|r| r.is_some()).await;
        ready.mark();
    });
    tasks.spawn(election::run(
        config.agent.election_path.clone(),
        config.agent.leaders as usize,
        session.clone(),
        reg_rx,
        lead_tx,
        stop.clone(),
    ));
    tasks.spawn(agent::run(config.clone(), session.clone(), lead_rx, stop.clone()));
    if let (Some(listen), Some(app)) = (&config.agent.trigger_listen, &config.agent.trigger_app) {
        let settings = TriggerSettings {
            listen: listen.parse().expect("validated at load"),
            app: app.clone(),
            max_connections: config.agent.trigger_max_connections,
        };
        tasks.spawn(trigger::run(settings, config.layout(), session.clone(), stop.clone()));
    }
}

/// SIGHUP: re-read and validate the file. A bad file is refused and the running config kept.
fn reload(path: &Path, running: &Config, notifier: Notifier) {
    notifier.reloading();
    match Config::load(path) {
        Ok(new) => {
            if new == *running {
                tracing::info!(config = %path.display(), "SIGHUP: configuration unchanged");
            } else {
                tracing::warn!(config = %path.display(), "SIGHUP: the new configuration is valid; restart zkcoordd to apply it (live reload is not implemented yet)");
            }
        }
        Err(e) => tracing::error!("SIGHUP: {e}; keeping the running configuration"),
    }
    notifier.ready("running");
}

/// Sends READY (once), keeps STATUS current and pings the watchdog.
async fn report_status(
    config: Arc<Config>,
    notifier: Notifier,
    mut session: SessionHandle,
    mut leadership: watch::Receiver<Leadership>,
    mut summaries: Vec<watch::Receiver<String>>,
    gate: ReadyGate,
    start_timeout: Duration,
) {
    let ready_at = tokio::time::Instant::now() + start_timeout;
    let mut ready_sent = false;
    let mut ping = notifier.watchdog_interval().map(tokio::time::interval);
    loop {
        let view = session.current();
        let mut line = format!("{} {}", config.role, view.phase);
        if view.phase != session::Phase::Connected {
            line = format!("{line}: waiting for ZooKeeper at {}", config.zookeeper.hosts);
        }
        if config.role.runs_agent() {
            line.push_str(if leadership.borrow_and_update().is_leader() { "; leader" } else { "; standby" });
        }
        for s in summaries.iter_mut() {
            line.push_str("; ");
            line.push_str(&s.borrow_and_update());
        }
        if !ready_sent {
            let gate_open = tokio::time::timeout(Duration::ZERO, gate.wait()).await.is_ok();
            if gate_open {
                notifier.ready(&line);
                ready_sent = true;
                tracing::info!("ready: {line}");
            } else if tokio::time::Instant::now() >= ready_at {
                let why = format!("{line} (ready without a first sync: start timeout {start_timeout:?} passed)");
                notifier.ready(&why);
                ready_sent = true;
                tracing::warn!("{why}");
            } else {
                notifier.status(&line);
            }
        } else {
            notifier.status(&line);
        }
        tokio::select! {
            _ = session.changed() => {}
            _ = leadership.changed() => {}
            _ = any_changed(&mut summaries) => {}
            _ = gate.wait(), if !ready_sent => {}
            _ = tokio::time::sleep_until(ready_at), if !ready_sent => {}
            _ = async { match ping.as_mut() { Some(p) => { p.tick().await; } None => std::future::pending().await } } => notifier.watchdog(),
        }
    }
}

async fn any_changed(summaries: &mut [watch::Receiver<String>]) {
    if summaries.is_empty() {
        return std::future::pending().await;
    }
    let _ = futures::future::select_all(summaries.iter_mut().map(|s| Box::pin(s.changed()))).await;
}
