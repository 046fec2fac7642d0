//! The leader's rollout supervisor: drives every open rollout record (see
//! [`crate::model::rollout`]) from the hosts' reports: a precheck to its canaries or its end, a
//! canary or wave through its soak and gate to the next wave or the promotion, any failure to
//! an abort. Every state is in ZooKeeper, so the next leader resumes where this one stopped.

use super::leader::Leader;
use super::rollout::live_hosts;
use crate::clock::now_ms;
use crate::config::{Config, HookCommand};
use crate::model::layout::{self, VersionId};
use crate::model::rollout::{canary_state, decide, decide_precheck, parse, precheck_state, wave_hosts, CanaryState, Decision, Rollout, State, Wave, FLEET_LOOK};
use crate::model::status::StatusReport;
use crate::zk::fence::{AgentError, Fence};
use crate::zk::identity::NodeKind;
use crate::zk::rollout::Wake;
use std::time::Duration;
use zookeeper_client as zk;

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
    let Leader { config, layout, client, fence, metrics, freezes, unsettled, .. } = leader;
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
            unsettled.poke(app, v);
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
/// hosts that are gone are left out, a report not to be believed counts as none.
async fn wave_states(leader: &Leader<'_>, app: &str, version: &VersionId, hosts: &[String]) -> Result<Vec<(String, CanaryState)>, zk::Error> {
    let reports = crate::zk::reports::live_reports(leader.client, &leader.layout.status(app), &leader.no_multi_read).await?;
    Ok(reports.into_iter().filter(|h| hosts.contains(&h.host)).map(|h| (h.host, canary_state(h.report.as_ref(), version))).collect())
}

/// Each live host's answer to the precheck of `version`; a report not to be believed counts
/// as no answer.
async fn precheck_states(leader: &Leader<'_>, app: &str, version: &VersionId) -> Result<Vec<(String, CanaryState)>, zk::Error> {
    let reports = crate::zk::reports::live_reports(leader.client, &leader.layout.status(app), &leader.no_multi_read).await?;
    Ok(reports.into_iter().map(|h| (h.host, precheck_state(h.report.as_ref(), version))).collect())
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
