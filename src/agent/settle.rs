//! The leader's record of each rollout (see [`crate::model::record`]): it follows the newest
//! version of each app this leadership created (and, when it starts, one its predecessor left
//! without a record) until the version settles, then writes the record into the version's
//! metadata with a fenced, version-checked setData.
//!
//! Looks are few and cheap, so a fleet pays nothing per host for them: the version's metadata
//! and the rollout record in one multi read, the status listing, and the status nodes in one
//! more per [`crate::zk::reports::PER_MULTI`] hosts (under ACLs, one getACL per host not seen
//! before); first a second after the publish (or after its staged rollout is decided), then
//! less and less often, up to [`crate::model::record::SETTLE_LIMIT`]. A burst of publishes is
//! followed by its last version only; the ones it replaced are marked superseded in the same
//! write (one that every host had applied within the second before the next is marked so too).

use super::leader::Leader;
use crate::clock::now_ms;
use crate::model::layout::VersionId;
use crate::model::record::{tally, RolloutRecord, Tally, SETTLE_LIMIT};
use crate::model::request::VersionMeta;
use crate::zk::fence::AgentError;
use super::unsettled::{Following, Outcome};
use std::time::Duration;
use tokio::time::Instant;
use zookeeper_client as zk;

/// Follows versions until they settle and writes their records, for as long as this
/// leadership lasts. Errors that are not the session's are logged and looked at again later.
pub(crate) async fn run(leader: &Leader<'_>) -> Result<std::convert::Infallible, AgentError> {
    if let Err(e) = recover(leader).await {
        if crate::zk::session::classify(&e) != crate::zk::session::ErrorKind::Other {
            return Err(e.into());
        }
        tracing::warn!("rollout records: cannot look for versions the last leader left unsettled: {e}");
    }
    let unsettled = &leader.unsettled;
    loop {
        for (app, f) in unsettled.due() {
            let next = match look(leader, &app, &f).await {
                Ok(next) => next,
                Err(AgentError::Zk(e)) if crate::zk::session::classify(&e) == crate::zk::session::ErrorKind::Other => {
                    tracing::warn!(app, version = %f.version, "rollout record: {e}; looking again later");
                    Outcome::Again { done: Vec::new(), open: false }
                }
                Err(e) => return Err(e),
            };
            unsettled.looked(&app, &f, next);
        }
        unsettled.wait().await;
    }
}

/// Looks at `app`'s version once; writes its record (and its superseded versions') when it
/// settled.
async fn look(leader: &Leader<'_>, app: &str, f: &Following) -> Result<Outcome, AgentError> {
    let Leader { layout, client, fence, .. } = leader;
    let meta_parent = layout.meta(app);
    let mut paths = vec![format!("{meta_parent}/{}", f.version), layout.rollout(app)];
    paths.extend(f.superseded.iter().map(|s| format!("{meta_parent}/{s}")));
    let mut reads = crate::zk::session::get_many(client, &paths, &leader.no_multi_read).await?.into_iter();
    let (meta, rollout) = (reads.next().expect("asked"), reads.next().expect("asked"));
    let Some((meta, meta_stat)) = unrecorded(meta)? else {
        // Pruned, deleted by hand, or recorded already: nothing to say of it.
        return Ok(Outcome::Done);
    };
    let rollout = match rollout {
        Ok((bytes, _)) => crate::model::rollout::parse(app, &bytes),
        Err(zk::Error::NoNode) => None,
        Err(e) => return Err(e.into()),
    };
    let mut writes: Vec<(String, VersionMeta, i32)> = Vec::new();
    // Superseded versions this look deals with: written now, or gone or recorded already.
    let mut done = Vec::new();
    for (name, read) in f.superseded.iter().zip(reads) {
        if let Some((m, stat)) = unrecorded(read)? {
            writes.push((format!("{meta_parent}/{name}"), VersionMeta { record: Some(RolloutRecord::superseded(&f.version, now_ms())), ..m }, stat.version));
        }
        done.push(name.clone());
    }
    let open = rollout.as_ref().is_some_and(|r| r.state.is_open() && r.version.as_deref() == Some(f.version.as_str()));
    let version = VersionId::parse(&f.version).expect("a version name");
    let expired = Instant::now() >= f.deadline;
    let reports = crate::zk::reports::live_reports(leader.client, &leader.layout.status(app), &leader.no_multi_read).await?;
    let settled = match tally(&version, f.stream, meta_stat.ctime, &reports, rollout.as_ref(), expired, now_ms()) {
        Tally::Open => None,
        Tally::Settled(record) => Some(*record),
    };
    if let Some(record) = &settled {
        writes.push((paths[0].clone(), VersionMeta { record: Some(record.clone()), ..meta.clone() }, meta_stat.version));
    }
    if writes.is_empty() {
        return Ok(Outcome::Again { done, open });
    }
    let mut w = fence.writer(client)?;
    for (path, m, v) in &writes {
        w.add_set_data(path, &serde_json::to_vec(m).expect("meta serializes"), Some(*v))?;
    }
    match fence.commit(w).await {
        Ok(_) => {}
        // Changed or pruned meanwhile: the next look reads again.
        Err(AgentError::Zk(zk::Error::BadVersion | zk::Error::NoNode)) => return Ok(Outcome::Again { done: Vec::new(), open }),
        Err(e) => return Err(e),
    }
    let Some(record) = settled else { return Ok(Outcome::Again { done, open }) };
    let publish_id = meta.publish_id.as_deref().unwrap_or("-");
    if record.failed > 0 || !record.pending.is_empty() {
        tracing::warn!(app, version = %f.version, publish_id, "rollout settled: {}", record.summary());
    } else {
        tracing::info!(app, version = %f.version, publish_id, "rollout settled: {}", record.summary());
    }
    Ok(Outcome::Done)
}

/// A version's metadata and stat from a read, unless it is gone, unreadable or already holds
/// a record.
fn unrecorded(read: Result<(Vec<u8>, zk::Stat), zk::Error>) -> Result<Option<(VersionMeta, zk::Stat)>, zk::Error> {
    match read {
        Ok((bytes, stat)) => Ok(serde_json::from_slice::<VersionMeta>(&bytes).ok().filter(|m| m.record.is_none()).map(|m| (m, stat))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// At the start of a leadership: the newest version of each app with metadata but no record,
/// made within [`SETTLE_LIMIT`] or with its staged rollout still open, is followed again (the
/// last leader died before it settled).
async fn recover(leader: &Leader<'_>) -> Result<(), zk::Error> {
    let Leader { layout, client, .. } = leader;
    let apps = match client.list_children(&layout.meta_root()).await {
        Ok(a) => a,
        Err(zk::Error::NoNode) => return Ok(()),
        Err(e) => return Err(e),
    };
    for app in apps {
        let meta_parent = layout.meta(&app);
        let names = match client.list_children(&meta_parent).await {
            Ok(n) => n,
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        };
        let Some(newest) = crate::model::layout::newest_version(&names) else { continue };
        let Some((meta, stat)) = unrecorded(client.get_data(&format!("{meta_parent}/{}", newest.name)).await)? else { continue };
        let age = Duration::from_millis(now_ms().saturating_sub(stat.ctime.max(0) as u64));
        if leader.unsettled.follows(&app) {
            continue;
        }
        // Older than the limit, it is still followed while its staged rollout is open (a
        // long soak, a wave waiting for `promote`): that is not decided by a clock.
        let open = age >= SETTLE_LIMIT
            && crate::zk::rollout::read(client, layout, &app).await?.is_some_and(|(r, _)| r.state.is_open() && r.version.as_deref() == Some(newest.name.as_str()));
        if age >= SETTLE_LIMIT && !open {
            continue;
        }
        let Some(stream) = meta.stream else { continue };
        tracing::info!(app, version = %newest.name, "following a version the last leader left unsettled");
        let now = Instant::now();
        leader.unsettled.follow(&app, stream, &newest.name, now, now + SETTLE_LIMIT.saturating_sub(age).max(if open { SETTLE_LIMIT } else { Duration::ZERO }));
    }
    Ok(())
}
