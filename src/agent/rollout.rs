//! The leader's part of staged rollouts: write the record with the version (`plan_publish`),
//! then promote after a healthy soak or abort on a failing canary (`supervise`).

use crate::clock::now_ms;
use crate::config::Config;
use crate::model::layout::{self, Layout, VersionId};
use crate::model::rollout::{canary_state, decide, decide_precheck, parse, pick_canaries, precheck_state, wave_hosts, CanarySpec, CanaryState, Decision, Rollout, State, Wave, FLEET_LOOK};
use super::leader::Leader;
use crate::config::HookCommand;
use crate::model::status::StatusReport;
use std::collections::BTreeMap;
use crate::zk::fence::{AgentError, Fence};
use crate::zk::identity::NodeKind;
use crate::zk::rollout::Wake;
use std::time::Duration;
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
/// unreadable or says it left has none and is skipped).
async fn live_hosts(client: &zk::Client, layout: &Layout, app: &str) -> Result<Vec<(String, BTreeMap<String, String>)>, zk::Error> {
    let reads = crate::zk::reports::read_all(client, &layout.status(app), &Default::default()).await?;
    Ok(reads
        .into_iter()
        .filter_map(|(host, read)| {
            let report = serde_json::from_slice::<StatusReport>(&read?.0).ok()?;
            (report.result != crate::model::status::ApplyResult::Removed).then_some((host, report.labels))
        })
        .collect())
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


/// The leader's rollout supervisor: drives every open rollout. Runs only while leading (the
/// agent selects it against step-down and against its intake); writes are fenced and
/// version-checked. It returns only when leadership itself is in doubt (fenced, connection or
/// session lost), so a rollout problem (say, an ACL refusing the rollouts node) never stops the
/// intake of publish requests: it is logged and retried.
pub(crate) async fn supervise(leader: &Leader<'_>) -> Result<std::convert::Infallible, AgentError> {
    loop {
        let err = match run_supervisor(leader).await {
            Ok(never) => match never {},
            Err(e) => e,
        };
        match &err {
            AgentError::Zk(e) if crate::zk::session::classify(e) == crate::zk::session::ErrorKind::Other => {
                tracing::warn!("rollout supervisor: {err}; retrying in 2s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            _ => return Err(err),
        }
    }
}

async fn run_supervisor(leader: &Leader<'_>) -> Result<std::convert::Infallible, AgentError> {
    let Leader { layout, client, freezes, .. } = leader;
    let parent = layout.rollouts();
    crate::zk::session::ensure_path(client, &parent, NodeKind::AgentParent).await?;
    // Parents app hosts create their directories in (status, reload leases), made by the leader
    // so that with ACLs they carry the policy that lets app hosts do so: an app host that finds
    // the root made by an agent cannot make them itself.
    crate::zk::session::ensure_path(client, &layout.status_root(), NodeKind::StatusParent).await?;
    crate::zk::session::ensure_path(client, &layout.reloads(), NodeKind::LeaseParent).await?;
    loop {
        let (apps, children_w) = client.list_and_watch_children(&parent).await?;
        // Marked seen: a clone remembers what its source saw, and would wake at once.
        let mut thaw = freezes.clone();
        thaw.borrow_and_update();
        let mut wakes: Vec<Wake> = vec![
            Box::pin(async move {
                children_w.changed().await;
            }),
            // A freeze lifted: a promotion it held back is due now.
            Box::pin(async move {
                let _ = thaw.changed().await;
            }),
        ];
        let mut next: Option<u64> = None;
        for app in &apps {
            if let Some(due) = step(leader, app, &mut wakes).await? {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        // Watches wake it at once; the timer covers soak ends and anything a watch missed.
        let wait = match next {
            Some(due) => Duration::from_millis(due.saturating_sub(now_ms())).min(Duration::from_secs(5)),
            None => Duration::from_secs(5),
        };
        tokio::select! {
            _ = futures::future::select_all(wakes) => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One look at `app`'s rollout: returns when to look again for a soak end.
async fn step(leader: &Leader<'_>, app: &str, wakes: &mut Vec<Wake>) -> Result<Option<u64>, AgentError> {
    let Leader { config, layout, client, fence, metrics, freezes, settle, .. } = leader;
    let p = layout.rollout(app);
    let (bytes, stat, w) = match client.get_and_watch_data(&p).await {
        Ok(r) => r,
        Err(zk::Error::NoNode) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    wakes.push(Box::pin(async move {
        w.changed().await;
    }));
    let Some(mut r) = parse(app, &bytes) else { return Ok(None) };
    if !r.state.is_open() {
        // Decided (here or by hand): its version's record can be written now.
        if let Some(v) = &r.version {
            settle.poke(app, v);
        }
        return Ok(None);
    }
    let version = match r.version.as_deref().and_then(VersionId::parse) {
        Some(v) => v,
        None => {
            // Fill in the version the publish created: the newest (a later publish would have
            // replaced or deleted this record in its own multi-op).
            let versions = layout.versions(app);
            let newest = match client.list_children(&versions).await {
                Ok(c) => layout::newest_version(&c),
                Err(zk::Error::NoNode) => None,
                Err(e) => return Err(e.into()),
            };
            let Some(newest) = newest else { return Ok(None) };
            r.version = Some(newest.name.clone());
            write(client, fence, &p, &r, stat.version).await?;
            return Ok(Some(now_ms()));
        }
    };
    // An operator's `promote` of the current wave: the next one starts now, without its gate.
    let by_hand = r.advance.is_some() && matches!(r.state, State::Canary | State::Soaking);
    let decision = if by_hand {
        Decision::Write(Rollout { state: State::Promoted, reason: r.advance.clone(), advance: None, ..r.clone() })
    } else if r.state == State::Precheck {
        // Every live host, read at once (two requests, whatever the fleet's size), and again at
        // the next look: hosts that join are counted, hosts that leave are not waited for.
        let hosts = precheck_states(leader, app, &version).await?;
        decide_precheck(&r, &hosts, now_ms())
    } else if !r.waves.is_empty() {
        // A wave may be hundreds of hosts: read at once, looked at again shortly; a host of
        // the waves so far that died is not waited for, but a wave with none alive waits
        // (no host has shown the version is healthy).
        let look_again = Decision::Wait(Some(now_ms() + FLEET_LOOK.as_millis() as u64));
        let states = wave_states(leader, app, &version, &r.canaries).await?;
        match decide(&r, &states, now_ms()) {
            _ if states.is_empty() => look_again,
            Decision::Wait(due) => Decision::Wait(Some(due.unwrap_or(u64::MAX).min(now_ms() + FLEET_LOOK.as_millis() as u64))),
            d => d,
        }
    } else {
        decide(&r, &canary_states(leader, app, &version, &r.canaries, wakes).await?, now_ms())
    };
    match decision {
        Decision::Wait(due) => Ok(due),
        // A freeze holds a promotion back (an abort still goes through: it changes no host
        // to anything new); the soak clock keeps running, so it may be due at the unfreeze.
        Decision::Write(next) if next.state == State::Promoted && freezes.borrow().as_ref().is_none_or(|b| b.line(app).is_some()) => {
            tracing::debug!(app, "rollout {} due for promotion, held by the freeze", r.describe());
            Ok(None)
        }
        Decision::Write(next) => {
            let next = match (&next.state, &r.gate) {
                // After a soak (not a precheck, which has no canaries to judge, nor an operator's say).
                (State::Promoted, Some(gate)) if !by_hand && r.state != State::Precheck => pass_gate(config, app, &version, &r, next.clone(), gate).await,
                _ => next,
            };
            // Healthy, soaked (and past its gate): the next wave, unless that is every host.
            let next = if next.state == State::Promoted && r.has_next_wave() { next_wave(leader, app, &r, next.reason.as_deref().unwrap_or("")).await? } else { next };
            if write(client, fence, &p, &next, stat.version).await? {
                tracing::info!(app, mono_us = crate::clock::monotonic_us(), "rollout {}", next.describe());
                metrics.rollout_decided(app, next.state.as_str());
            }
            Ok(Some(now_ms()))
        }
    }
}

/// The rollout once wave `r.wave` is done (`why`: who decided and how): the next wave on its
/// hosts (those of the waves before and its own, resolved against the live hosts now), or
/// promoted when it is the last (`*`).
async fn next_wave(leader: &Leader<'_>, app: &str, r: &Rollout, why: &str) -> Result<Rollout, zk::Error> {
    let (k, n) = (r.wave + 1, r.waves.len());
    let done = format!("wave {k} of {n} ({}) done: {why}", r.waves[r.wave]);
    let next = r.wave + 1;
    let wave = Wave::parse(&r.waves[next]).unwrap_or(Wave::All);
    let live = if wave == Wave::All { Vec::new() } else { live_hosts(leader.client, &leader.layout, app).await? };
    Ok(match wave_hosts(app, &wave, &live, &r.canaries) {
        None => Rollout { state: State::Promoted, reason: Some(format!("{done}; wave {n} of {n} (*): every host")), advance: None, ..r.clone() },
        Some(hosts) => Rollout {
            state: State::Canary,
            reason: Some(format!("{done}; wave {} of {n} ({wave}) started on {} hosts", next + 1, hosts.len())),
            canaries: hosts,
            wave: next,
            soak_started_ms: None,
            advance: None,
            ..r.clone()
        },
    })
}

/// How each live host of the waves so far (`hosts`) stands with `version`, all read at once;
/// hosts that are gone are left out.
async fn wave_states(leader: &Leader<'_>, app: &str, version: &VersionId, hosts: &[String]) -> Result<Vec<(String, CanaryState)>, zk::Error> {
    let dir = leader.layout.status(app);
    let mut out = Vec::new();
    for (host, read) in crate::zk::reports::read_all(leader.client, &dir, &leader.no_multi_read).await? {
        let Some((bytes, stat)) = read.filter(|_| hosts.contains(&host)) else { continue };
        let report = serde_json::from_slice::<StatusReport>(&bytes).ok();
        // A host that stopped following the app (its node stays until its session ends).
        if report.as_ref().is_some_and(|r| r.result == crate::model::status::ApplyResult::Removed) {
            continue;
        }
        let trusted = crate::zk::guard::status_trusted(leader.client, &format!("{dir}/{host}"), &host, stat.czxid).await?.is_ok();
        let state = if trusted { canary_state(report.as_ref(), version) } else { CanaryState::Pending };
        out.push((host, state));
    }
    Ok(out)
}

/// Each live host's answer to the precheck of `version`; a report some other identity wrote
/// counts as no answer.
async fn precheck_states(leader: &Leader<'_>, app: &str, version: &VersionId) -> Result<Vec<(String, CanaryState)>, zk::Error> {
    let dir = leader.layout.status(app);
    let mut hosts = Vec::new();
    for (host, read) in crate::zk::reports::read_all(leader.client, &dir, &leader.no_multi_read).await? {
        let Some((bytes, stat)) = read else { continue };
        let report = serde_json::from_slice::<StatusReport>(&bytes).ok();
        if report.as_ref().is_some_and(|r| r.result == crate::model::status::ApplyResult::Removed) {
            continue;
        }
        let trusted = crate::zk::guard::status_trusted(leader.client, &format!("{dir}/{host}"), &host, stat.czxid).await?.is_ok();
        let state = if trusted { precheck_state(report.as_ref(), version) } else { CanaryState::Pending };
        hosts.push((host, state));
    }
    Ok(hosts)
}

/// How each canary stands with `version`, with a watch on each one's status node in `wakes`.
async fn canary_states(leader: &Leader<'_>, app: &str, version: &VersionId, hosts: &[String], wakes: &mut Vec<Wake>) -> Result<Vec<(String, CanaryState)>, zk::Error> {
    let Leader { layout, client, .. } = leader;
    let mut canaries = Vec::with_capacity(hosts.len());
    for host in hosts {
        let sp = format!("{}/{host}", layout.status(app));
        let state = match client.get_and_watch_data(&sp).await {
            Ok((data, stat, w)) => {
                wakes.push(Box::pin(async move {
                    w.changed().await;
                }));
                match crate::zk::guard::status_trusted(client, &sp, host, stat.czxid).await? {
                    Ok(()) => canary_state(serde_json::from_slice::<StatusReport>(&data).ok().as_ref(), version),
                    // Written by another identity: never an ok canary (nor a failed one).
                    Err(why) => {
                        tracing::warn!(app, host = %host, "canary status not trusted: {why}");
                        CanaryState::Pending
                    }
                }
            }
            Err(zk::Error::NoNode) => {
                let (_, w) = client.check_and_watch_stat(&sp).await?;
                wakes.push(Box::pin(async move {
                    w.changed().await;
                }));
                CanaryState::Pending
            }
            Err(e) => return Err(e),
        };
        canaries.push((host.clone(), state));
    }
    Ok(canaries)
}

/// Runs the rollout's gate now that the soak has passed: `promoted` (its reason says the gate
/// passed) when it exits 0, else `aborted` with the gate's own words. A gate the config no
/// longer has aborts too: nothing says the version is good. A leader that dies mid-gate leaves
/// the rollout soaking, and the next one runs the gate again.
async fn pass_gate(config: &Config, app: &str, version: &VersionId, r: &Rollout, promoted: Rollout, gate: &str) -> Rollout {
    let aborted = |why: String| r.aborted(format!("aborted by the leader: {why}"));
    let Some(cmd) = config.agent.gates.get(gate) else {
        return aborted(format!("gate {gate:?} is not in this leader's [agent] gates"));
    };
    let canaries = r.canaries.join(",");
    let vars = [("app", app), ("version", version.name.as_str()), ("previous", r.previous.as_deref().unwrap_or("")), ("canaries", canaries.as_str())];
    let argv = HookCommand::Argv(cmd.argv_with(&vars));
    tracing::info!(app, version = %version, gate, "soak passed; running the gate before promotion");
    let run = crate::host::hooks::run(&argv, None, config.agent.gate_timeout).await;
    if run.ok() {
        let said = crate::model::status::reason(&run.output);
        let said = if said.is_empty() { String::new() } else { format!(" ({said})") };
        Rollout { reason: promoted.reason.map(|why| format!("{why}; gate {gate} passed{said}")), ..promoted }
    } else {
        tracing::warn!(app, version = %version, gate, "{}", run.describe(&format!("gate {gate}"), cmd));
        let head = run.summary(&format!("gate {gate}"), cmd);
        match crate::model::status::reason(&run.output) {
            "" => aborted(head),
            said => aborted(format!("{head}: {said}")),
        }
    }
}

/// Fenced, version-checked write of a record; false when someone changed it meanwhile.
async fn write(client: &zk::Client, fence: &Fence, p: &str, r: &Rollout, version: i32) -> Result<bool, AgentError> {
    let mut w = fence.writer(client)?;
    w.add_set_data(p, &r.to_bytes(), Some(version))?;
    match fence.commit(w).await {
        Ok(_) => Ok(true),
        Err(AgentError::Zk(zk::Error::BadVersion | zk::Error::NoNode)) => Ok(false),
        Err(e) => Err(e),
    }
}
