//! `zkcoordctl rollout`, `promote` and `abort`: show a staged rollout and decide it by hand.
//! A decision is a setData on the rollout record with a version check, so it never overwrites
//! a change it did not see (the leader's own promotion, another operator).

use super::target::{fail, zk_fail, CtlError, Target};
use crate::exit;
use crate::model::layout::VersionId;
use crate::model::rollout::{self, CanaryState, Rollout, State};
use crate::model::status::StatusReport;
use std::time::Duration;
use zookeeper_client as zk;

/// What the operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every host takes the version now.
    Promote,
    /// Hosts that are not canaries stay on the previous version.
    Abort,
}

/// The record after `verdict`, or the line to print when nothing changes (Ok) or the verdict
/// makes no sense (Err).
pub fn apply_verdict(r: &Rollout, verdict: Verdict, who: &str, why: Option<&str>) -> Result<Decided, CannotDecide> {
    let why = why.map(|w| format!(": {w}")).unwrap_or_default();
    match (verdict, r.state) {
        (Verdict::Promote, State::Promoted) => Ok(Decided::Already(format!("already promoted: {}", r.describe()))),
        (Verdict::Abort, State::Aborted) => Ok(Decided::Already(format!("already aborted: {}", r.describe()))),
        (Verdict::Abort, State::Promoted) => Err(CannotDecide(format!(
            "cannot abort: already promoted, every host takes it ({}); publish a rollback instead (zkcoordctl rollback APP --to -1)",
            r.describe()
        ))),
        // In waves, `promote` ends the current wave: the leader starts the next one.
        (Verdict::Promote, State::Canary | State::Soaking) if r.has_next_wave() => {
            Ok(Decided::Write(Rollout { advance: Some(format!("promoted by {who}{why}")), ..r.clone() }))
        }
        // A precheck ended by hand goes on to its canaries (or first wave), if it has any.
        (Verdict::Promote, State::Precheck) if !r.canaries.is_empty() => {
            Ok(Decided::Write(Rollout { state: State::Canary, reason: Some(format!("precheck skipped by {who}{why}")), ..r.clone() }))
        }
        (Verdict::Promote, _) => Ok(Decided::Write(Rollout { state: State::Promoted, reason: Some(format!("promoted by {who}{why}")), advance: None, ..r.clone() })),
        (Verdict::Abort, _) => Ok(Decided::Write(r.aborted(format!("aborted by {who}{why}")))),
    }
}

/// What a decision by hand comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// The record to write.
    Write(Rollout),
    /// Nothing to do: it already stands so (the line says how).
    Already(String),
}

/// A decision the rollout's state does not allow (exit 65), with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CannotDecide(pub String);

/// Promotes or aborts `app`'s rollout, printing what happened.
pub async fn decide(t: &Target, app: &str, verdict: Verdict, why: Option<&str>) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let who = super::target::author();
    let path = t.layout.rollout(app);
    for _ in 0..5 {
        let Some((r, stat)) = crate::zk::rollout::read(&client, &t.layout, app).await.map_err(zk_fail)? else {
            return Err(fail(exit::DATAERR, format!("{app} has no rollout (no node {path})")));
        };
        let next = match apply_verdict(&r, verdict, &who, why) {
            Ok(Decided::Write(next)) => next,
            Ok(Decided::Already(line)) => {
                println!("{line}");
                return Ok(());
            }
            Err(why) => return Err(fail(exit::DATAERR, why.to_string())),
        };
        match client.set_data(&path, &next.to_bytes(), Some(stat.version)).await {
            Ok(_) => {
                println!("{} (was {})", next.describe(), r.state.as_str());
                return Ok(());
            }
            // Changed meanwhile (the leader moved it on): look again.
            Err(zk::Error::BadVersion) => continue,
            Err(e) => {
                return Err(match crate::zk::identity::explain(&e, &path, "change") {
                    Some(why) => fail(exit::NOPERM, why),
                    None => zk_fail(e),
                })
            }
        }
    }
    Err(fail(exit::TEMPFAIL, format!("{path} kept changing; try again")))
}

/// Prints `app`'s rollout and how each canary stands.
pub async fn show(t: &Target, app: &str, json: bool) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let Some((r, _)) = crate::zk::rollout::read(&client, &t.layout, app).await.map_err(zk_fail)? else {
        return Err(fail(exit::DATAERR, format!("{app} has no rollout")));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("rollout serializes"));
        return Ok(());
    }
    println!("{app} {}", r.describe());
    if !r.waves.is_empty() {
        let shown: Vec<String> = r.waves.iter().enumerate().map(|(i, w)| if i == r.wave && r.state.is_open() { format!("[{w}]") } else { w.clone() }).collect();
        println!("  waves: {}", shown.join(" → "));
    }
    let version = r.version.as_deref().and_then(VersionId::parse);
    if let (Some(v), State::Precheck) = (&version, r.state) {
        let reports = crate::zk::reports::live_reports(&client, &t.layout.status(app), &Default::default()).await.map_err(zk_fail)?;
        for h in reports {
            let host = h.host;
            let state = match rollout::precheck_state(h.report.as_ref(), v) {
                CanaryState::Ok => "passed".to_string(),
                CanaryState::Pending => "checking".to_string(),
                CanaryState::Failed(result, error) => format!("{result}: {error}"),
            };
            println!("  host {host}: {state}");
        }
    }
    for host in &r.canaries {
        let report: Option<StatusReport> = match client.get_data(&format!("{}/{host}", t.layout.status(app))).await {
            Ok((b, _)) => serde_json::from_slice(&b).ok(),
            Err(zk::Error::NoNode) => None,
            Err(e) => return Err(zk_fail(e)),
        };
        let state = match (&version, &report) {
            (_, None) => "not alive".to_string(),
            (None, Some(_)) => "pending".to_string(),
            (Some(v), Some(rep)) => match rollout::canary_state(Some(rep), v) {
                CanaryState::Ok => "ok".to_string(),
                CanaryState::Pending => format!("pending (runs {})", rep.version.as_deref().unwrap_or("nothing")),
                CanaryState::Failed(result, error) => format!("{result}: {error}"),
            },
        };
        println!("  canary {host}: {state}");
    }
    Ok(())
}

/// `publish --canary --wait`: follows the rollout of `version` until the leader (or an operator)
/// promotes it, printing each state; returns the time left of `limit`. An aborted rollout is a
/// failed one (exit 1), and waiting longer than `limit` exits 75.
pub async fn wait_decided(client: &zk::Client, t: &Target, app: &str, version: &str, limit: Duration) -> Result<Duration, CtlError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = String::new();
    loop {
        let (r, changed) = crate::zk::rollout::read_and_watch(client, &t.layout, app).await.map_err(zk_fail)?;
        let Some(r) = r else {
            println!("the rollout record is gone (superseded by a newer publish)");
            return Ok(deadline.saturating_duration_since(tokio::time::Instant::now()));
        };
        if r.version.as_deref().is_some_and(|v| v != version) {
            println!("superseded by a rollout of {}", r.version.as_deref().unwrap_or_default());
            return Err(fail(1, String::new()));
        }
        let line = format!("rollout {}", r.describe());
        if line != last {
            println!("{line}");
            last = line;
        }
        match r.state {
            State::Promoted => return Ok(deadline.saturating_duration_since(tokio::time::Instant::now())),
            State::Aborted => return Err(fail(1, String::new())),
            State::Precheck | State::Canary | State::Soaking => {}
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Err(fail(exit::TEMPFAIL, format!("timed out after {}: {last}", humantime::format_duration(limit))));
        }
    }
}

/// After a publish with `--canary` or `--precheck`: one line saying how the rollout starts.
/// Returns false when there is no record (or, for `precheck`, one not in its precheck): the
/// leader did not stage the version (an agent from before staged rollouts drops `--canary`, one
/// from before prechecks drops `--precheck`), or a newer publish already superseded it.
pub async fn announce(client: &zk::Client, t: &Target, app: &str, precheck: bool, waves: bool) -> bool {
    match crate::zk::rollout::read(client, &t.layout, app).await {
        // An agent from before waves drops them (and would promote after one soak).
        Ok(Some((r, _))) if waves && r.waves.is_empty() => false,
        Ok(Some((r, _))) if precheck => {
            // Still in it, or already past it (every host answered, or none is alive).
            let past = r.state != State::Precheck && r.reason.as_deref().is_some_and(|why| why.contains("precheck"));
            if r.state != State::Precheck && !past {
                return false;
            }
            if past {
                println!("prechecked: {}", r.describe());
                return true;
            }
            println!("prechecking on every live host, installed nowhere until all passed; {}", r.describe().split_once("; ").map_or("", |(_, rest)| rest));
            true
        }
        Ok(Some((r, _))) if !r.waves.is_empty() => {
            println!(
                "staged in waves {}: wave 1 on {} (soak {} each); others stay on {} until their wave (zkcoordctl rollout|promote|abort {app})",
                r.waves.join(","),
                r.canaries.join(","),
                humantime::format_duration(Duration::from_millis(r.soak_ms)),
                r.previous.as_deref().unwrap_or("nothing")
            );
            true
        }
        Ok(Some((r, _))) => {
            println!(
                "staged on canaries {} (soak {}); others stay on {} until promoted (zkcoordctl rollout|promote|abort {app})",
                r.canaries.join(","),
                humantime::format_duration(Duration::from_millis(r.soak_ms)),
                r.previous.as_deref().unwrap_or("nothing")
            );
            true
        }
        Ok(None) => false,
        // Cannot tell; the rollout commands will say.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: State) -> Rollout {
        Rollout {
            version: Some("conf-0000000012".into()),
            previous: Some("conf-0000000011".into()),
            canaries: vec!["web-1".into()],
            soak_ms: 1000,
            started_ms: 0,
            state,
            soak_started_ms: None,
            reason: None,
            gate: None, waves: Vec::new(), wave: 0, advance: None,
        }
    }

    #[test]
    fn verdicts_move_open_rollouts_and_refuse_to_abort_a_promoted_one() {
        let p = apply_verdict(&record(State::Soaking), Verdict::Promote, "ops@h", Some("looks good")).unwrap();
        let Decided::Write(p) = p else { panic!("{p:?}") };
        assert_eq!((p.state, p.reason.as_deref()), (State::Promoted, Some("promoted by ops@h: looks good")));
        let Decided::Write(a) = apply_verdict(&record(State::Canary), Verdict::Abort, "ops@h", None).unwrap() else { panic!() };
        assert_eq!(a.state, State::Aborted);
        assert!(matches!(apply_verdict(&record(State::Aborted), Verdict::Promote, "ops@h", None).unwrap(), Decided::Write(_)), "an aborted rollout may still be promoted by hand");
        assert!(matches!(apply_verdict(&record(State::Promoted), Verdict::Promote, "ops@h", None).unwrap(), Decided::Already(l) if l.starts_with("already promoted")));
        assert!(apply_verdict(&record(State::Promoted), Verdict::Abort, "ops@h", None).unwrap_err().0.contains("rollback"));
    }
}
