//! Reload pacing, so a fleet never reloads all at once:
//! - `max_parallel_reloads = N` (per `[[app]]`): a ZooKeeper semaphore in the manner of
//!   Curator's InterProcessSemaphoreV2. Each host that is about to install creates an
//!   EPHEMERAL_SEQUENTIAL lease `<root>/reloads/<app>/lease-<seq>`; it holds a slot once fewer
//!   than N leases with smaller sequence numbers exist, and otherwise waits on a children watch
//!   of the lease directory. It deletes its lease when the install is over; a host that dies or
//!   loses its session frees its slot with the session.
//!   The lease is held around the whole install (stage, check, rename, reload, and the rollback
//!   with its second reload): the service may pick the new file up from the rename on (a crash
//!   restart, a cron reload), so the rename belongs to the disruptive part, and a failed reload's
//!   rollback must be inside it too. Holding it over the check as well costs a little
//!   parallelism (checks are short) and keeps the install pipeline untouched.
//! - `splay = "10s"`: before applying a new version, wait a random delay in `[0, splay)`, then
//!   apply the newest version at that moment (bursts still coalesce). A host that has nothing
//!   applied yet (a fresh host, whose service is waiting for its first config) does not wait.

use crate::zk::identity::NodeKind;
use crate::config::AppConfig;
use crate::clock::monotonic_us;
use crate::model::layout::{self, Layout};
use rand::Rng;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// Name prefix of reload lease nodes.
pub const LEASE_PREFIX: &str = "lease-";

/// Runs `work` (an install) holding one of `app`'s `max_parallel_reloads` slots, if it has a
/// limit. A ZooKeeper failure while waiting for a slot is returned before `work` starts; `stop`
/// ends the wait (Ok(None), our lease deleted) but never an install that has begun, and so
/// does `proceed` saying no once the slot is granted (a freeze set during the wait).
#[allow(clippy::too_many_arguments)]
pub async fn paced<T>(
    client: &zk::Client,
    layout: &Layout,
    app: &AppConfig,
    node_id: &str,
    work: impl Future<Output = T>,
    stop: &tokio_util::sync::CancellationToken,
    proceed: &(dyn Fn() -> bool + Sync),
    metrics: &crate::metrics::Metrics,
) -> Result<Option<T>, zk::Error> {
    let Some(limit) = app.published().and_then(|p| p.max_parallel_reloads) else {
        return Ok(Some(work.await));
    };
    // `zkcoord_reload_slot_waiting` is 1 for as long as this host waits for a slot: a fleet
    // whose slots never free (a host stuck mid-install) shows here before it shows anywhere.
    metrics.reload_slot_waiting(&app.name, true);
    let acquired = Lease::acquire(client, &layout.app_reloads(&app.name), node_id, limit as usize, &app.name, stop).await;
    metrics.reload_slot_waiting(&app.name, false);
    let Some(lease) = acquired? else {
        return Ok(None);
    };
    if !proceed() {
        lease.release(client).await;
        return Ok(None);
    }
    let out = work.await;
    lease.release(client).await;
    Ok(Some(out))
}

/// A held slot: our lease node.
struct Lease {
    /// Its full path.
    path: String,
    /// The application, for logs.
    app: String,
    /// When it was granted.
    since: Instant,
}

impl Lease {
    async fn acquire(
        client: &zk::Client,
        dir: &str,
        node_id: &str,
        limit: usize,
        app: &str,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<Lease>, zk::Error> {
        crate::zk::session::ensure_path(client, dir, NodeKind::LeaseParent).await?;
        remove_own_leftovers(client, dir).await?;
        let acl = crate::zk::identity::for_node(NodeKind::Owned);
        let opts = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::new(&acl));
        let (_, seq) = client.create(&format!("{dir}/{LEASE_PREFIX}"), node_id.as_bytes(), &opts).await?;
        let name = format!("{LEASE_PREFIX}{seq}");
        let path = format!("{dir}/{name}");
        let mine = seq.into_i64() as u64;
        let asked = Instant::now();
        let mut said = false;
        loop {
            let (children, w) = match client.list_and_watch_children(dir).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = client.delete(&path, None).await;
                    return Err(e);
                }
            };
            if !children.contains(&name) {
                tracing::warn!(app, lease = %path, "our reload lease vanished while waiting; asking again later");
                return Err(zk::Error::NoNode);
            }
            let ahead = layout::sorted_by_sequence(&children, LEASE_PREFIX).iter().filter(|(s, _)| *s < mine).count();
            if ahead < limit {
                tracing::info!(app, lease = %name, waited_ms = asked.elapsed().as_millis() as u64, mono_us = monotonic_us(), "reload slot taken");
                return Ok(Some(Lease { path, app: app.to_string(), since: Instant::now() }));
            }
            if !said {
                tracing::info!(app, ahead, max_parallel_reloads = limit, "waiting for a reload slot");
                said = true;
            }
            // The watch wakes us when any lease goes; the timer is a safety net.
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = client.delete(&path, None).await;
                    tracing::info!(app, lease = %name, "stopped while waiting for a reload slot; lease withdrawn");
                    return Ok(None);
                }
                _ = tokio::time::timeout(Duration::from_secs(5), w.changed()) => {}
            }
        }
    }

    async fn release(self, client: &zk::Client) {
        let held_ms = self.since.elapsed().as_millis() as u64;
        match client.delete(&self.path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => {
                tracing::info!(app = %self.app, held_ms, mono_us = monotonic_us(), "reload slot released")
            }
            // Left behind; the next acquire on this session removes it, or the session's end does.
            Err(e) => tracing::warn!(app = %self.app, lease = %self.path, "cannot release the reload slot: {e}"),
        }
    }
}

/// Deletes leases our session holds from an earlier attempt (a create whose answer was lost
/// with the connection may have succeeded, and would otherwise hold a slot for good).
async fn remove_own_leftovers(client: &zk::Client, dir: &str) -> Result<(), zk::Error> {
    let me = client.session_id().0;
    for child in client.list_children(dir).await? {
        let p = format!("{dir}/{child}");
        if let Some(stat) = client.check_stat(&p).await? {
            if stat.ephemeral_owner == me {
                tracing::info!(lease = %p, "removing a reload lease left over from an earlier attempt");
                match client.delete(&p, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// The splay of one application: when the pending apply may start.
#[derive(Debug, Default)]
pub struct Splay {
    /// The configured splay; None or zero means none.
    max: Option<Duration>,
    /// When the apply waiting now may start.
    due: Mutex<Option<Instant>>,
}

impl Splay {
    /// The splay of `app`.
    pub fn of(app: &AppConfig) -> Splay {
        Splay { max: app.published().and_then(|p| p.splay).filter(|d| !d.is_zero()), due: Mutex::new(None) }
    }

    /// Called when an apply is due: how much longer to wait before applying, or None to apply
    /// now. The first call draws a random delay in `[0, splay)`; the call after it has passed
    /// says apply (and the next apply draws again). `has_applied`: false on a host that has
    /// nothing applied yet, which never waits.
    pub fn wait(&self, has_applied: bool) -> Option<Duration> {
        let max = self.max.filter(|_| has_applied)?;
        let mut due = self.due.lock().expect("splay lock");
        let now = Instant::now();
        let at = *due.get_or_insert_with(|| now + rand::thread_rng().gen_range(Duration::ZERO..max));
        if at > now {
            Some(at - now)
        } else {
            *due = None;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate_pacing as validate;
    use super::*;

    fn app(splay: Option<Duration>, max: Option<u32>) -> AppConfig {
        let toml = "role = \"app\"\n[zookeeper]\nhosts = \"h:1\"\n[[app]]\nname = \"a\"\ndest = \"/tmp/a\"\n";
        let c = crate::config::Config::from_toml(std::path::Path::new("x.toml"), toml, |_| None).unwrap();
        let mut a = c.apps[0].clone();
        let p = a.published_mut();
        (p.splay, p.max_parallel_reloads) = (splay, max);
        a
    }

    #[test]
    fn splay_waits_once_below_the_maximum_then_applies() {
        let s = Splay::of(&app(Some(Duration::from_millis(50)), None));
        assert_eq!(s.wait(false), None, "a host with nothing applied does not wait");
        let first = s.wait(true);
        if let Some(d) = first {
            assert!(d < Duration::from_millis(50));
            std::thread::sleep(d);
        }
        assert_eq!(s.wait(true), None, "once the delay passed, apply");
        assert_eq!(Splay::of(&app(None, None)).wait(true), None);
    }

    #[test]
    fn pacing_keys_are_validated() {
        assert!(validate(app(Some(Duration::from_secs(10)), Some(1)).published().unwrap()).is_ok());
        assert_eq!(validate(app(None, Some(0)).published().unwrap()).unwrap_err().0, "max_parallel_reloads");
        assert_eq!(validate(app(Some(Duration::from_secs(7200)), None).published().unwrap()).unwrap_err().0, "splay");
    }
}
