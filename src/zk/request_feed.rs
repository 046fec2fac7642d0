//! How the single leader learns of publish requests (issue 15): a persistent recursive watch
//! on the requests parent names each request as it is created, so a request costs the leader
//! one read of its node and no listing. A child watch would fire again on the leader's own
//! removal of the request and cost two listings per request.
//!
//! The requests are listed in full only when the events alone cannot be trusted: when the
//! watch is first set, and after a reconnect (persistent-watch events missed while
//! disconnected are not replayed, and the client crate does not set persistent watches again
//! on a new connection; see [`crate::zk::version_events`]). A server older than 3.6, and an
//! agent with `leaders > 1` (whose leaders must look again when a claim goes away), list and
//! set a child watch on every round, as before.

use crate::model::layout::{sequence_of, sorted_by_sequence, REQUEST_PREFIX};
use std::collections::BTreeMap;
use zookeeper_client as zk;

/// The leader's view of pending requests between rounds.
pub struct RequestFeed {
    /// The requests parent.
    parent: String,
    /// How it hears of new requests.
    watch: Watch,
    /// Requests heard of and not yet handed out, by sequence number.
    pending: BTreeMap<u64, String>,
    /// The events cannot be trusted: list before the next round.
    relist: bool,
    /// The connection was re-established: set the persistent watch again (the old one is
    /// dropped only after, so no removal of it reaches the server).
    rewatch: bool,
}

/// The watch a feed waits on.
enum Watch {
    /// ZooKeeper 3.6+: one persistent recursive watch (None until set on this connection).
    Persistent(Option<zk::PersistentWatcher>),
    /// A child watch set by each round's listing (None before the first).
    Children(Option<zk::OneshotWatcher>),
}

impl RequestFeed {
    /// A feed of the requests under `parent`; `events` picks the persistent watch, which is
    /// given up for child watches if the server does not know it.
    pub fn new(parent: &str, events: bool) -> RequestFeed {
        let watch = if events { Watch::Persistent(None) } else { Watch::Children(None) };
        RequestFeed { parent: parent.to_string(), watch, pending: BTreeMap::new(), relist: true, rewatch: false }
    }

    /// The requests to handle now, oldest first; each is handed out once (a request left in
    /// place, say one another leader claimed, is seen again at the next full listing).
    pub async fn take(&mut self, client: &zk::Client) -> Result<Vec<String>, zk::Error> {
        if let Watch::Persistent(w) = &mut self.watch {
            if w.is_none() || self.rewatch {
                self.rewatch = false;
                match client.watch(&self.parent, zk::AddWatchMode::PersistentRecursive).await {
                    Ok(set) => *w = Some(set),
                    Err(e) if crate::zk::session::is_unsupported(&e) => {
                        tracing::info!("the server refuses persistent watches ({e}; ZooKeeper older than 3.6?): listing publish requests on each change");
                        self.watch = Watch::Children(None);
                    }
                    Err(e) => return Err(e),
                }
                self.relist = true;
            }
        }
        let listed = match &mut self.watch {
            // Watch first, then list: a request created between the two is both listed and told.
            Watch::Persistent(_) if self.relist => Some(client.list_children(&self.parent).await?),
            Watch::Persistent(_) => None,
            Watch::Children(w) => {
                let (children, watcher) = client.list_and_watch_children(&self.parent).await?;
                *w = Some(watcher);
                Some(children)
            }
        };
        if let Some(children) = listed {
            self.pending = sorted_by_sequence(&children, REQUEST_PREFIX).into_iter().map(|(seq, n)| (seq, n.to_string())).collect();
            self.relist = false;
        }
        Ok(std::mem::take(&mut self.pending).into_values().collect())
    }

    /// Waits until there may be requests to take; an error when the session ended.
    pub async fn changed(&mut self) -> Result<(), zk::Error> {
        match &mut self.watch {
            Watch::Persistent(Some(w)) => {
                let ev = w.changed().await;
                self.hear(ev)?;
                // Take every event already delivered too: a burst is handed out as one round.
                use futures::FutureExt;
                while let Watch::Persistent(Some(w)) = &mut self.watch {
                    match w.changed().now_or_never() {
                        Some(ev) => self.hear(ev)?,
                        None => break,
                    }
                }
                Ok(())
            }
            Watch::Persistent(None) => Ok(()),
            Watch::Children(w) => match w.take() {
                Some(w) => {
                    let ev = w.changed().await;
                    match ev.event_type {
                        zk::EventType::Session => Err(crate::zk::session::state_error(ev.session_state)),
                        _ => Ok(()),
                    }
                }
                None => Ok(()),
            },
        }
    }

    /// Whether a round is due without waiting: requests heard of, or a listing owed.
    pub fn ready(&self) -> bool {
        !self.pending.is_empty() || self.relist || self.rewatch
    }

    /// Takes one event of the persistent watch in.
    fn hear(&mut self, ev: zk::WatchedEvent) -> Result<(), zk::Error> {
        match ev.event_type {
            zk::EventType::Session => match ev.session_state {
                s if s.is_terminated() => return Err(crate::zk::session::state_error(s)),
                // Events missed while disconnected are not replayed: watch and list again.
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    self.rewatch = true;
                    self.relist = true;
                }
                _ => {}
            },
            zk::EventType::NodeCreated => {
                let name = ev.path.strip_prefix(self.parent.as_str()).and_then(|r| r.strip_prefix('/')).filter(|n| !n.contains('/'));
                if let Some((seq, name)) = name.and_then(|n| sequence_of(n, REQUEST_PREFIX).map(|seq| (seq, n))) {
                    self.pending.insert(seq, name.to_string());
                }
            }
            // The requests parent deleted (by hand): list again once it is back.
            zk::EventType::NodeDeleted if ev.path == self.parent => self.relist = true,
            _ => {}
        }
        Ok(())
    }
}
