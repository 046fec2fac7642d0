//! The app role for an application rendered from a service's live members (`[app.render]`):
//! watch the members, render the host's template with them, and put the result in place
//! through the same [`install`] pipeline as a published version (check, atomic write, reload,
//! rollback), reporting in the same status node.
//!
//! Three rules keep a registry's churn from hurting the service that reads the file:
//! - renders coalesce: after a change, wait until the members were quiet for `quiet`, but no
//!   longer than `max_wait` after the first change;
//! - only a changed output is written (and reloaded);
//! - a member list that is too small (`min_members`; an empty one unless `allow_empty`) or that
//!   shrank too far below the last applied one (`max_shrink`) is held back: the file keeps its
//!   content, and status, `/healthz` and `zkcoord_render_held` say why, because a registry
//!   outage must not take the upstreams out of nginx ([`crate::model::member_guard`]). The
//!   applied count is kept in the state file, so a restart during the outage still holds.

use crate::app::skeleton::{self, AppView, Flow, StatusNode, Turn};
use crate::config::{AppConfig, Config, RenderConfig};
use crate::host::install::{self, InstallResult};
use crate::host::state::{Applied, StateStore};
use crate::model::member_guard::{self, Hold};
use crate::model::layout::Layout;
use crate::zk::members::{self, Member, Snapshot};
use crate::metrics::Metrics;
use crate::zk::session::SessionHandle;
use crate::clock::now_secs;
use crate::model::status::{ApplyResult, StatusReport};
use crate::ready::ReadyPart;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// Renders `template` (minijinja, Jinja2 syntax) with the members. The template sees
/// `members` (sorted; each with `node`, `host`, `port`, `data` and `ctime_ms`), `count`,
/// `service` and `node` (this host's node id). Undefined names are errors, so a typo fails the
/// render instead of writing an upstream block without servers.
pub fn render(template: &str, service: &str, node_id: &str, members: &[Member]) -> Result<String, RenderError> {
    let mut env = minijinja::Environment::new();
    env.set_syntax(minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build().expect("default delimiters"));
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let tmpl = env.template_from_str(template).map_err(RenderError::of)?;
    let ctx = minijinja::context! {
        members => minijinja::Value::from(minijinja::value::Serde(members)),
        count => members.len(),
        service => service,
        node => node_id,
    };
    tmpl.render(ctx).map_err(RenderError::of)
}

/// Why a rendered app's file could not be made; the old file stays.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template file cannot be read.
    #[error("cannot read template {}: {source}", path.display())]
    Template {
        /// The template file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The template does not render (a syntax mistake, an undefined name), with its line.
    #[error("{0}")]
    Invalid(String),
}

impl RenderError {
    /// A minijinja error with its line, as minijinja reports it.
    fn of(e: minijinja::Error) -> RenderError {
        RenderError::Invalid(match e.line() {
            Some(line) => format!("{e} (line {line})"),
            None => e.to_string(),
        })
    }
}

/// What the renderer remembers between renders.
struct Rendered {
    /// The status report the node shows.
    report: StatusReport,
    /// sha256 of an output whose check or reload failed: not tried again until it changes.
    failed: Option<String>,
    /// Why the last render was held back by the member guard (logged when it changes).
    held: Option<String>,
    /// How many members the file was last rendered from, as the state file remembers it; None
    /// before the first render this host applied.
    applied: Option<usize>,
    /// Members at the last look, for the view.
    count: Option<usize>,
    /// The session generation we last synced on.
    synced: u64,
    /// Children left out at the last look (not JSON objects), so the warning is not repeated.
    skipped: Vec<String>,
    /// Which hand edits of the destination were logged and counted already.
    drift: crate::app::drift::DriftWatch,
}

/// One rendered application's follower.
pub struct RenderFollower {
    /// The `[[app]]` entry (dest, mode, check, reload, hook timeout).
    pub app: AppConfig,
    /// Its `[app.render]` table.
    pub render: RenderConfig,
    /// This host's node id, for the status report and the template.
    pub node_id: String,
    /// Where the status node lives.
    pub layout: Layout,
    /// Records renders like applies (result counts, hook durations).
    pub metrics: Arc<Metrics>,
    /// Told once the first look at the members is done.
    pub ready: ReadyPart,
    /// Where this app's view is published, for STATUS and `/healthz`.
    pub view: watch::Sender<AppView>,
    /// Where the applied member count is remembered across restarts.
    pub state: StateStore,
}

impl RenderFollower {
    /// The follower of `app`, which must have a render table.
    pub fn new(config: &Config, app: &AppConfig, metrics: Arc<Metrics>, ready: ReadyPart, view: watch::Sender<AppView>) -> RenderFollower {
        RenderFollower {
            app: app.clone(),
            render: app.rendered().cloned().expect("a rendered app"),
            node_id: config.node_id.clone(),
            layout: config.layout(),
            metrics,
            ready,
            view,
            state: StateStore::new(&config.state_dir),
        }
    }

    /// Follows the members until `shutdown`; a render in progress is finished first.
    pub async fn run(self, mut session: SessionHandle, shutdown: CancellationToken) {
        let name = self.app.name.clone();
        crate::host::group::recover(&self.app);
        crate::host::install::remove_staged_leftovers(&self.app);
        let on_disk = std::fs::read(&self.app.dest).ok().map(|b| crate::digest::sha256_hex(&b));
        // The state file's render, when the file still holds it: reported as applied from the
        // start, so a restart during a hold says what the file is (`members:40`), not `pending`.
        let remembered = self.state.load(&name).filter(|a| a.members.is_some());
        let restored = remembered.as_ref().filter(|a| on_disk.as_deref() == Some(a.sha256.as_str()));
        if let Some(a) = restored {
            self.metrics.applied(&name, None, a.applied_at);
        }
        let st = Rendered {
            report: StatusReport {
                host: self.node_id.clone(),
                pid: std::process::id(),
                app: name.clone(),
                version: restored.map(|a| a.version.clone()),
                sha256: on_disk,
                result: if restored.is_some() { ApplyResult::Ok } else { ApplyResult::Pending },
                attempted: None,
                error: None,
                time: now_secs(),
                stream: None,
                drift: None,
                publish_id: None,
                frozen: None,
                precheck: None,
                labels: Default::default(),
            },
            failed: None,
            held: None,
            applied: remembered.as_ref().and_then(|a| a.members),
            count: None,
            synced: 0,
            skipped: Vec::new(),
            drift: Default::default(),
        };
        let status = StatusNode::keep(&self.layout, &name, &self.node_id, &st.report, self.app.resync(), &session, &shutdown);
        self.publish(&st, false);
        self.metrics.render_held(&name, false);
        let what = format!("reading members of {} for app {name}", self.render.members_path());
        let mut renders = Renders { follower: &self, st, status, shutdown: shutdown.clone() };
        skeleton::follow(&name, &self.metrics, &mut session, &shutdown, &what, &mut renders).await;
        renders.status.stopped().await;
    }

    /// Reads, renders, and waits for changes on one session. Ok(true) at shutdown, Ok(false)
    /// when the session changed (the caller looks again), Err on a ZooKeeper error.
    async fn follow(
        &self,
        client: &zk::Client,
        generation: u64,
        st: &mut Rendered,
        status: &watch::Sender<Vec<u8>>,
        session: &mut SessionHandle,
        shutdown: &CancellationToken,
    ) -> Result<bool, zk::Error> {
        let path = self.render.members_path();
        if st.synced != generation {
            match client.sync(&path).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
            st.synced = generation;
        }
        let (mut snap, mut wake) = members::read_and_watch(client, &path).await?;
        self.ready.mark();
        loop {
            self.render_and_install(&snap, st).await;
            status.send_replace(st.report.to_bytes());
            self.publish(st, false);
            // The periodic pass: sync, re-read the members (re-arming the watches) and compare
            // the destination with what was rendered, whatever the watches said.
            let pass = self.app.resync().map(crate::backoff::jittered);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(true),
                _ = session.changed() => return Ok(false),
                _ = &mut wake => {}
                _ = async { match pass { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {
                    tracing::debug!(app = %self.app.name, "periodic pass");
                    match client.sync(&path).await {
                        Ok(()) | Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(e),
                    }
                    (snap, wake) = members::read_and_watch(client, &path).await?;
                    continue;
                }
            }
            // Coalesce: re-read (re-arming the watches) until quiet, or until max_wait.
            let deadline = tokio::time::Instant::now() + self.render.max_wait;
            loop {
                (snap, wake) = members::read_and_watch(client, &path).await?;
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(true),
                    _ = tokio::time::sleep(self.render.quiet) => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = &mut wake => {}
                }
            }
        }
    }

    /// Renders the snapshot and installs the output when it differs from the file.
    async fn render_and_install(&self, snap: &Snapshot, st: &mut Rendered) {
        let name = &self.app.name;
        let count = snap.members.len();
        st.count = Some(count);
        self.metrics.render_members(name, count);
        if !snap.skipped.is_empty() && st.skipped != snap.skipped {
            tracing::warn!(app = %name, path = %self.render.members_path(), skipped = ?snap.skipped, "members without a JSON object as data are left out");
        }
        st.skipped = snap.skipped.clone();
        let label = format!("members:{count}");
        if let Err(hold) = member_guard::judge(self.render.guard(), count, st.applied) {
            let why = hold.to_string();
            if st.held.as_deref() != Some(why.as_str()) {
                let (service, dest) = (&self.render.service, self.app.dest.display());
                match hold {
                    Hold::TooFew { live: 0, min_members: 1 } => tracing::warn!(app = %name, %service, %dest, "no live members; holding back the empty list and keeping the file as it is (set allow_empty = true to write it)"),
                    _ => tracing::warn!(app = %name, %service, %dest, count, applied = ?st.applied, "holding back the member list: {why}"),
                }
            }
            self.metrics.render_held(name, true);
            st.held = Some(why.clone());
            st.report.attempted = Some(label);
            st.report.error = Some(why);
            st.report.time = now_secs();
            return;
        }
        if st.held.take().is_some() {
            tracing::info!(app = %name, count, applied = ?st.applied, "members are back; rendering again");
            self.metrics.render_held(name, false);
        }
        let output = std::fs::read_to_string(&self.render.template)
            .map_err(|source| RenderError::Template { path: self.render.template.clone(), source })
            .and_then(|t| render(&t, &self.render.service, &self.node_id, &snap.members));
        let bytes = match output {
            Ok(s) => s.into_bytes(),
            Err(why) => {
                tracing::error!(app = %name, template = %self.render.template.display(), "render failed, file kept: {why}");
                self.record(st, &label, None, ApplyResult::Error, Some(why.to_string()));
                self.metrics.apply_finished(name, ApplyResult::Error);
                return;
            }
        };
        let sha = crate::digest::sha256_hex(&bytes);
        // The file against what was last rendered into it: a hand edit is decided on as for a
        // published app (one rule, [`crate::model::drift::decide`]); new members count as newer.
        let rendered = st.report.sha256.clone().filter(|_| st.report.result == ApplyResult::Ok);
        let on_disk = crate::app::drift::look(&self.app, rendered.as_deref());
        let newer = rendered.as_deref() != Some(sha.as_str());
        match crate::model::drift::decide(self.app.on_drift, on_disk.disk, newer) {
            crate::model::drift::Verdict::Leave(action) => {
                let disk_sha = on_disk.sha256.unwrap_or_default();
                if !crate::app::drift::DriftWatch::known(&st.report, &disk_sha) {
                    let summary = crate::model::drift::summary((!newer).then_some(&bytes[..]), &on_disk.bytes);
                    st.drift.leave(&self.app, &self.metrics, &mut st.report, &disk_sha, summary, action);
                }
                return;
            }
            crate::model::drift::Verdict::Apply if on_disk.disk == crate::model::drift::Disk::Differs => {
                st.drift.replacing(&self.app, &self.metrics, on_disk.sha256.as_deref().unwrap_or_default(), "rendering over it");
            }
            _ => {}
        }
        if st.report.drift.is_some() {
            st.drift.clear(&self.app, &self.metrics, &mut st.report);
        }
        if install::holds(&self.app.dest, &sha) {
            tracing::debug!(app = %name, count, "rendered output unchanged; nothing to write");
            // The file is right again: an output that failed before is tried afresh if it returns.
            st.failed = None;
            self.remember(st, count, &sha);
            self.record(st, &label, Some(sha), ApplyResult::Ok, None);
            return;
        }
        if st.failed.as_deref() == Some(sha.as_str()) {
            tracing::debug!(app = %name, "this output already failed its check or reload; waiting for a change");
            return;
        }
        let addresses: Vec<String> = snap.members.iter().map(Member::address).collect();
        tracing::info!(app = %name, count, members = ?addresses, "rendering");
        self.publish(st, true);
        // A rendered file has no version node: hooks are told its label (`members:N`).
        let ctx = crate::host::hooks::HookContext::new(&self.app, label.clone(), st.report.version.clone(), sha.clone());
        let result = match crate::host::bundle::install_any(&self.app, &ctx, bytes, u64::MAX, &self.metrics).await {
            Ok(InstallResult::Applied { .. }) => {
                tracing::info!(app = %name, dest = %self.app.dest.display(), count, "rendered");
                st.failed = None;
                self.remember(st, count, &sha);
                self.record(st, &label, Some(sha), ApplyResult::Ok, None);
                // A rendered file has no version number: only the time is exported.
                self.metrics.applied(name, None, now_secs());
                ApplyResult::Ok
            }
            Ok(InstallResult::CheckFailed(why)) => {
                tracing::error!(app = %name, "check failed, old file kept: {why}");
                st.failed = Some(sha);
                self.record(st, &label, None, ApplyResult::CheckFailed, Some(why));
                ApplyResult::CheckFailed
            }
            Ok(InstallResult::ReloadFailed(why)) => {
                tracing::error!(app = %name, "reload failed: {why}");
                st.failed = Some(sha);
                self.record(st, &label, None, ApplyResult::ReloadFailed, Some(why));
                ApplyResult::ReloadFailed
            }
            Err(e) => {
                tracing::error!(app = %name, "cannot install the rendered file: {e}; old file kept; trying again at the next change");
                self.record(st, &label, None, ApplyResult::Error, Some(e.to_string()));
                ApplyResult::Error
            }
        };
        self.metrics.apply_finished(name, result);
    }

    /// Remembers that the file now holds a render of `count` members, in memory and in the
    /// state file (written only when the count changed), for the member guard's next look.
    fn remember(&self, st: &mut Rendered, count: usize, sha: &str) {
        if st.applied == Some(count) {
            return;
        }
        st.applied = Some(count);
        let applied = Applied { version: format!("members:{count}"), seq: 0, sha256: sha.to_string(), applied_at: now_secs(), stream: 0, members: Some(count), signed_ms: None };
        if let Err(e) = self.state.store(&self.app.name, &applied) {
            tracing::warn!(app = %self.app.name, "cannot remember the applied member count ({count}); a restart guards against an older one: {e}");
        }
    }

    /// Updates the report (metrics count real attempts only, and are recorded by the caller):
    /// on success `version` becomes `members:<n>` with the file's sha256;
    /// on failure the file (and its version) stay and `attempted` says what was tried.
    fn record(&self, st: &mut Rendered, label: &str, sha: Option<String>, result: ApplyResult, error: Option<String>) {
        let r = &mut st.report;
        if let Some(sha) = sha {
            r.version = Some(label.to_string());
            r.sha256 = Some(sha);
            r.attempted = None;
        } else {
            r.attempted = Some(label.to_string());
        }
        r.result = result;
        r.error = error;
        r.time = now_secs();
    }

    /// Publishes this app's view (when it changed).
    fn publish(&self, st: &Rendered, applying: bool) {
        let view = AppView {
            name: self.app.name.clone(),
            report: Some(st.report.clone()),
            looked: st.count.is_some(),
            applying,
            newest: st.count.map(|n| format!("members:{n}")),
            // A failed render (template, check, reload, write) leaves the file behind the
            // members, which `/healthz` reports; a held-back list is deliberate, not that, and
            // `/healthz` reports it through `held`.
            behind: u64::from(st.report.result != ApplyResult::Ok && st.report.result != ApplyResult::Pending),
            retrying: false,
            conflict: None,
            held: st.held.clone(),
        };
        skeleton::show(&self.view, view);
    }
}

/// A rendered app's follower while it runs.
struct Renders<'a> {
    /// The follower.
    follower: &'a RenderFollower,
    /// What was rendered and reported.
    st: Rendered,
    /// Our status node for the app.
    status: StatusNode,
    /// The daemon's stop.
    shutdown: CancellationToken,
}

impl Turn for Renders<'_> {
    fn turn<'a>(&'a mut self, client: &'a zk::Client, generation: u64, session: &'a mut SessionHandle) -> impl std::future::Future<Output = Result<Flow, zk::Error>> + Send + 'a {
        async move {
            let stop = self.follower.follow(client, generation, &mut self.st, &self.status.report, session, &self.shutdown).await?;
            Ok(if stop { Flow::Stop } else { Flow::Again })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(node: &str, json: &str) -> Member {
        Member::parse(node, json.as_bytes(), 0, 0).unwrap()
    }

    #[test]
    fn an_upstream_block_renders_with_extra_data_and_defaults() {
        let t = "upstream {{ service }} {\n{% for m in members %}    server {{ m.host }}:{{ m.port }} weight={{ m.data.weight | default(1) }};\n{% endfor %}}\n";
        let members = [m("a", r#"{"host": "10.0.0.1", "port": 80, "weight": 3}"#), m("b", r#"{"host": "10.0.0.2", "port": 80}"#)];
        let out = render(t, "web", "lb-1", &members).unwrap();
        assert_eq!(out, "upstream web {\n    server 10.0.0.1:80 weight=3;\n    server 10.0.0.2:80 weight=1;\n}\n");
    }

    #[test]
    fn template_mistakes_are_errors_with_a_line() {
        let err = render("ok\n{{ memebrs | length }}\n", "web", "n", &[]).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(render("{% for %}", "web", "n", &[]).is_err());
    }
}
