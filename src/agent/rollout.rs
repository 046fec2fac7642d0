//! The leader's part of staged rollouts at publish time: the record written with the version
//! (`plan_publish`: canaries, first wave or precheck resolved against the live hosts now), or
//! its deletion by a publish that supersedes it. [`crate::agent::supervisor`] drives it after.

use crate::clock::now_ms;
use crate::config::HookCommand;
use crate::model::layout::{self, Layout};
use crate::model::rollout::{pick_canaries, wave_hosts, CanarySpec, Rollout, State, Wave};
use crate::zk::identity::NodeKind;
use std::collections::BTreeMap;
use zookeeper_client as zk;

/// What a publish does to the rollout record, decided before the fenced multi-op that creates
/// the version and carried out inside it.
#[derive(Debug, Default)]
pub struct PublishPlan {
    /// The operation, if any.
    op: Option<PlanOp>,
}

#[derive(Debug)]
enum PlanOp {
    Create(String, Vec<u8>),
    Replace(String, Vec<u8>, i32),
    Delete(String, i32),
}

impl PublishPlan {
    /// Whether [`PublishPlan::add_to`] adds an operation (its result then sits in the multi-op's).
    pub fn has_op(&self) -> bool {
        self.op.is_some()
    }

    /// Adds the record's create, replace or delete to the publish's fenced multi-op; a record
    /// changed meanwhile makes the whole multi-op fail, and the leader handles the request again.
    pub fn add_to(&self, w: &mut zk::CheckWriter<'_>) -> Result<(), zk::Error> {
        let acl = crate::zk::identity::for_node(NodeKind::Rollout);
        match &self.op {
            None => Ok(()),
            Some(PlanOp::Create(p, data)) => w.add_create(p, data, &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acl))),
            Some(PlanOp::Replace(p, data, v)) => w.add_set_data(p, data, Some(*v)),
            Some(PlanOp::Delete(p, v)) => w.add_delete(p, Some(*v)),
        }
    }
}

/// The record (None when unreadable) and its stat, when a node exists: what the leader knows of
/// an app's rollout record (see [`crate::agent::known`]).
pub type Existing = Option<(Option<Rollout>, zk::Stat)>;

/// Plans the rollout side of publishing to `app` (whose versions are `children` before the new
/// one, and whose record is `existing`): with a canary spec, a new record (the canaries resolved
/// against the live hosts now); without one, the deletion of any record, since the new version
/// supersedes it. Every operation is version-checked, so a record changed since it was read
/// fails the publish's multi-op. Err is a reason to reject the request.
#[allow(clippy::too_many_arguments)]
pub async fn plan_publish(
    client: &zk::Client,
    layout: &Layout,
    gates: &BTreeMap<String, HookCommand>,
    app: &str,
    spec: Option<&CanarySpec>,
    children: &[String],
    existing: Existing,
) -> Result<Result<PublishPlan, String>, zk::Error> {
    let Some(spec) = spec else {
        return Ok(Ok(PublishPlan {
            op: existing.map(|(r, stat)| {
                if let Some(r) = r.filter(|r| r.state.is_open()) {
                    tracing::info!(app, "rollout {} superseded by a publish without --canary", r.describe());
                }
                PlanOp::Delete(layout.rollout(app), stat.version)
            }),
        }));
    };
    // The gate asked for, else the app's own; one the leader does not have refuses the
    // publish (a rollout that could never be promoted would hold every other host back).
    let gate = match &spec.gate {
        Some(g) if !gates.contains_key(g) => {
            let have = if gates.is_empty() { "none".to_string() } else { gates.keys().cloned().collect::<Vec<_>>().join(", ") };
            return Ok(Err(format!("no gate {g:?} in the leading agent's [agent] gates (it has: {have}); nothing published")));
        }
        Some(g) => Some(g.clone()),
        None => gates.contains_key(app).then(|| app.to_string()),
    };
    let canaries = if spec.waves.is_empty() {
        let live = match client.list_children(&layout.status(app)).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(e),
        };
        match pick_canaries(app, spec, &live) {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason.into())),
        }
    } else {
        // Waves name hosts by their labels: every live host's report, read at once.
        let waves = match spec.waves.iter().map(|w| Wave::parse(w)).collect::<Result<Vec<_>, _>>() {
            Ok(w) if w.len() >= 2 && w.last() == Some(&Wave::All) => w,
            Ok(_) => return Ok(Err("--waves: expected waves ending in * (every host)".into())),
            Err(e) => return Ok(Err(e.into())),
        };
        let live = live_hosts(client, layout, app).await?;
        match wave_hosts(app, &waves[0], &live, &[]) {
            Some(hosts) if !hosts.is_empty() => hosts,
            _ => {
                let names: Vec<&str> = live.iter().map(|(h, _)| h.as_str()).collect();
                return Ok(Err(format!(
                    "wave 1 ({}) takes no live host of {app} (live: {}); nothing published",
                    waves[0],
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                )));
            }
        }
    };
    // Hosts that are not canaries keep what they run: the previous rollout's `previous` when
    // that one never reached them, else the newest version so far.
    let previous = match existing.as_ref().and_then(|(r, _)| r.as_ref()) {
        Some(r) if r.state.holds_back() => r.previous.clone(),
        _ => layout::newest_version(children).map(|v| v.name),
    };
    let record = Rollout {
        version: None,
        previous,
        canaries,
        soak_ms: spec.soak_ms,
        started_ms: now_ms(),
        state: if spec.precheck { State::Precheck } else { State::Canary },
        soak_started_ms: None,
        reason: None,
        gate,
        waves: spec.waves.clone(),
        wave: 0,
        advance: None,
    };
    let p = layout.rollout(app);
    let op = match existing {
        Some((_, stat)) => PlanOp::Replace(p, record.to_bytes(), stat.version),
        None => {
            crate::zk::session::ensure_path(client, &layout.rollouts(), NodeKind::AgentParent).await?;
            PlanOp::Create(p, record.to_bytes())
        }
    };
    tracing::info!(app, "starting rollout: {}", record.describe());
    Ok(Ok(PublishPlan { op: Some(op) }))
}

/// Every live host of `app` with its labels (from its status report; a host whose report is
/// not to be believed has none and is skipped).
pub(crate) async fn live_hosts(client: &zk::Client, layout: &Layout, app: &str) -> Result<Vec<(String, BTreeMap<String, String>)>, zk::Error> {
    let reports = crate::zk::reports::live_reports(client, &layout.status(app), &Default::default()).await?;
    Ok(reports.into_iter().filter_map(|h| Some((h.host, h.report?.labels))).collect())
}

/// What a publish without `--canary` needs to know of `app`'s rollout, read once for a whole
/// batch of publishes: whether the record holds the newest version back (then content equal to
/// the newest is a new version, not "unchanged"), and the plan that supersedes it.
#[derive(Debug)]
pub struct PlainPublish {
    /// The record holds the newest version back (aborted, or still on canaries).
    pub holds_back: bool,
    /// The app the record is of.
    app: String,
    /// The record (None when unreadable) and its stat, until the first new version takes it.
    existing: Option<(Option<Rollout>, zk::Stat)>,
}

impl PlainPublish {
    /// What publishing to `app` without a spec does to its record `existing`.
    pub fn of(app: &str, existing: Existing) -> PlainPublish {
        let holds_back = matches!(&existing, Some((Some(r), _)) if r.state.holds_back());
        PlainPublish { holds_back, app: app.to_string(), existing }
    }

    /// The plan for the first new version: the same as [`plan_publish`] without a spec. Later
    /// versions of the same batch need none (the record is gone once the first lands).
    pub fn take(&mut self, layout: &Layout) -> PublishPlan {
        self.holds_back = false;
        PublishPlan {
            op: self.existing.take().map(|(r, stat)| {
                if let Some(r) = r.filter(|r| r.state.is_open()) {
                    tracing::info!(app = %self.app, "rollout {} superseded by a publish without --canary", r.describe());
                }
                PlanOp::Delete(layout.rollout(&self.app), stat.version)
            }),
        }
    }
}
