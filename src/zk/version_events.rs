//! An app host's knowledge of one application's versions, kept from events instead of
//! re-listing (issue 15): a persistent recursive watch on the versions parent names every
//! `conf-<n>` created or deleted, and a persistent watch on the rollout record says when it
//! changed. Both are set once per session (ZooKeeper 3.6+), the versions and the record are
//! read once then (and again on a resync), and a publish costs the host no listing at all.
//!
//! The knowledge is rebuilt by a full listing ([`VersionEvents::resync`]) whenever the events
//! alone cannot be trusted: at the start of a session, after a reconnect (ZooKeeper does not
//! replay persistent-watch events missed while disconnected, ZOOKEEPER-4698), when the versions
//! parent itself was deleted or created (a new version stream), and on the periodic pass.
//! A watch survives the deletion and re-creation of the node it is on, so a stream re-created
//! by hand is seen as those two events and then re-listed.
//!
//! After a reconnect the watches are set again ([`VersionEvents::needs_rewatch`]): the client
//! crate (zookeeper-client 0.11.2, `resend_watches`) re-sends only one-shot watches to the new
//! connection, so a persistent watch would otherwise go silent on its server.

use crate::model::layout::{Layout, VersionId};
use crate::model::rollout::Rollout;
use std::collections::BTreeMap;
use zookeeper_client as zk;

/// What is known of one app's versions between events.
pub struct VersionEvents {
    /// The app's name, for logs and the rollout record.
    app: String,
    /// The versions parent (`/applications/<app>` or the app's `path`).
    versions: String,
    /// The rollout record's path.
    rollout_path: String,
    /// Events under the versions parent (and of the parent itself).
    version_watch: zk::PersistentWatcher,
    /// Events of the rollout record (created, changed, deleted).
    rollout_watch: zk::PersistentWatcher,
    /// The versions known to exist, by sequence number.
    known: BTreeMap<u64, VersionId>,
    /// The versions parent's stat as the last listing saw it (None: it does not exist).
    parent: Option<zk::Stat>,
    /// The rollout record as last read.
    rollout: Option<Rollout>,
    /// The listing can no longer be trusted: re-list before the next decision.
    stale: bool,
    /// The rollout record changed since it was read: read it again.
    rollout_stale: bool,
    /// The connection was re-established: the server may have lost the watches.
    rewatch: bool,
}

/// Why a watch could not be set.
#[derive(Debug)]
pub enum Unwatched {
    /// The server does not know persistent watches (older than 3.6): use child watches.
    Unsupported(zk::Error),
    /// A ZooKeeper error to recover from as any other.
    Failed(zk::Error),
}

pub use crate::zk::session::is_unsupported;

/// What one event meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Knowledge was updated (or the event did not matter); decide again.
    Changed,
    /// The session ended: this watcher must not be polled again.
    SessionEnded,
}

impl VersionEvents {
    /// Sets both watches on `client`'s session and lists once. A server without persistent
    /// watches answers [`Unwatched::Unsupported`], and the caller follows with child watches.
    pub async fn start(client: &zk::Client, layout: &Layout, app: &str, versions: &str) -> Result<VersionEvents, Unwatched> {
        let rollout_path = layout.rollout(app);
        let classify = |e: zk::Error| if is_unsupported(&e) { Unwatched::Unsupported(e) } else { Unwatched::Failed(e) };
        // Watches first, then the listing: a change between the two is both listed and told.
        let version_watch = client.watch(versions, zk::AddWatchMode::PersistentRecursive).await.map_err(classify)?;
        let rollout_watch = client.watch(&rollout_path, zk::AddWatchMode::Persistent).await.map_err(classify)?;
        let mut me = VersionEvents {
            app: app.to_string(),
            versions: versions.to_string(),
            rollout_path,
            version_watch,
            rollout_watch,
            known: BTreeMap::new(),
            parent: None,
            rollout: None,
            stale: true,
            rollout_stale: true,
            rewatch: false,
        };
        me.refresh(client, layout).await.map_err(Unwatched::Failed)?;
        Ok(me)
    }

    /// Asks for a full listing before the next decision.
    fn mark_stale(&mut self) {
        self.stale = true;
        self.rollout_stale = true;
    }

    /// Says the connection was lost and re-established (or may have been): the watches are to
    /// be set again and everything listed, by a new [`VersionEvents::start`].
    pub fn mark_reconnected(&mut self) {
        self.rewatch = true;
        self.mark_stale();
    }

    /// Whether the watches must be set again before they can be trusted (see the module doc).
    pub fn needs_rewatch(&self) -> bool {
        self.rewatch
    }

    /// Brings the knowledge up to date with what the events said: a full listing (and the
    /// rollout record) when it is stale, the rollout record alone when only it changed,
    /// nothing otherwise, which is the case after a publish.
    pub async fn refresh(&mut self, client: &zk::Client, layout: &Layout) -> Result<(), zk::Error> {
        if self.stale {
            let (listed, rollout) = tokio::join!(client.get_children(&self.versions), crate::zk::rollout::read(client, layout, &self.app));
            match listed {
                Ok((children, stat)) => {
                    self.known = crate::model::layout::versions(&children).into_iter().map(|v| (v.seq, v)).collect();
                    self.parent = Some(stat);
                }
                Err(zk::Error::NoNode) => {
                    self.known.clear();
                    self.parent = None;
                }
                Err(e) => return Err(e),
            }
            self.rollout = rollout?.map(|(r, _)| r);
            self.stale = false;
            self.rollout_stale = false;
        } else if self.rollout_stale {
            self.rollout = crate::zk::rollout::read(client, layout, &self.app).await?.map(|(r, _)| r);
            self.rollout_stale = false;
        }
        Ok(())
    }

    /// The versions parent's stat from the last listing; None while it does not exist.
    pub fn parent(&self) -> Option<&zk::Stat> {
        self.parent.as_ref()
    }

    /// The known versions, oldest first: borrowed, since a follower looks at them (a hundred,
    /// with the default `keep_versions`) on every event of a thousand-host fan-out.
    pub fn versions(&self) -> impl Iterator<Item = &VersionId> {
        self.known.values()
    }

    /// Takes `rollout` as the record, read by someone else (with a version, in one multi read).
    pub fn set_rollout(&mut self, rollout: Option<Rollout>) {
        self.rollout = rollout;
    }

    /// The rollout record as last read.
    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }

    /// Waits for the next event of either watch and takes it in.
    pub async fn next(&mut self) -> Heard {
        let ev = tokio::select! {
            ev = self.version_watch.changed() => (ev, false),
            ev = self.rollout_watch.changed() => (ev, true),
        };
        self.take(ev.0, ev.1)
    }

    /// Takes in every event already delivered, without waiting.
    pub fn drain(&mut self) -> Heard {
        use futures::FutureExt;
        loop {
            let ev = match self.version_watch.changed().now_or_never() {
                Some(ev) => (ev, false),
                None => match self.rollout_watch.changed().now_or_never() {
                    Some(ev) => (ev, true),
                    None => return Heard::Changed,
                },
            };
            if self.take(ev.0, ev.1) == Heard::SessionEnded {
                return Heard::SessionEnded;
            }
        }
    }

    fn take(&mut self, ev: zk::WatchedEvent, rollout: bool) -> Heard {
        if ev.event_type == zk::EventType::Session {
            return match ev.session_state {
                s if s.is_terminated() => Heard::SessionEnded,
                // Events while disconnected are not replayed, and the watches may be gone from
                // the server: set them again and rebuild from a listing.
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    self.mark_reconnected();
                    Heard::Changed
                }
                _ => Heard::Changed,
            };
        }
        if rollout {
            if ev.path == self.rollout_path {
                self.rollout_stale = true;
            }
            return Heard::Changed;
        }
        if ev.path == self.versions {
            // The parent itself: created or deleted is a new (or no) version stream.
            if matches!(ev.event_type, zk::EventType::NodeCreated | zk::EventType::NodeDeleted) {
                tracing::debug!(app = %self.app, path = %self.versions, event = ?ev.event_type, "versions parent changed; re-listing");
                self.stale = true;
            }
            return Heard::Changed;
        }
        let Some(name) = ev.path.strip_prefix(self.versions.as_str()).and_then(|r| r.strip_prefix('/')).filter(|n| !n.contains('/')) else {
            return Heard::Changed;
        };
        let Some(v) = VersionId::parse(name) else { return Heard::Changed };
        match ev.event_type {
            zk::EventType::NodeCreated => {
                self.known.insert(v.seq, v);
            }
            zk::EventType::NodeDeleted => {
                self.known.remove(&v.seq);
            }
            _ => {}
        }
        Heard::Changed
    }
}
