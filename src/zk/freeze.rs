//! The freeze flags (see [`crate::model::freeze`]) as the daemons know them: one child watch on
//! `<root>/freeze` (an exists watch while it is missing) per daemon, and the flags' data read
//! only when the set changes, so a freeze costs nothing per publish. Followers and the leader
//! read the board from a [`watch`] channel; `None` until the first read, so nothing is applied
//! or published before the daemon knows whether it is frozen.
//!
//! A flag whose data is rewritten in place (zkCli `set`) is read again at the next change of
//! the set or the next session; `zkcoordctl` only creates and deletes flags.

use crate::model::freeze::{Freeze, Freezes};
use crate::model::layout::Layout;
use crate::zk::session::{self, SessionHandle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// Every flag in force, read once (for `zkcoordctl status`).
pub async fn read(client: &zk::Client, layout: &Layout) -> Result<Freezes, zk::Error> {
    match client.get_children(&layout.freezes()).await {
        Ok((names, _)) => read_flags(client, layout, names).await,
        Err(zk::Error::NoNode) => Ok(Freezes::default()),
        Err(e) => Err(e),
    }
}

/// The flags named `names`; one deleted meanwhile is left out (the watch says so anyway).
async fn read_flags(client: &zk::Client, layout: &Layout, names: Vec<String>) -> Result<Freezes, zk::Error> {
    let paths: Vec<String> = names.iter().map(|n| layout.freeze(n)).collect();
    let data = futures::future::join_all(paths.iter().map(|p| client.get_data(p))).await;
    let mut board = Freezes::default();
    for (name, got) in names.into_iter().zip(data) {
        match got {
            Ok((bytes, _)) => {
                board.0.insert(name, Freeze::parse(&bytes));
            }
            Err(zk::Error::NoNode) => {}
            // A flag this daemon may not read still freezes (the safe side), and says why.
            Err(zk::Error::NoAuth) => {
                let reason = format!("the flag {} cannot be read with this daemon's identity (NoAuth); fix its ACL", layout.freeze(&name));
                board.0.insert(name, Freeze { by: "unknown".into(), reason, since: 0 });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(board)
}

/// The flags, with a watch that fires when one is set or cleared (or the parent appears).
async fn read_and_watch(client: &zk::Client, layout: &Layout) -> Result<(Freezes, zk::OneshotWatcher), zk::Error> {
    loop {
        match client.get_and_watch_children(&layout.freezes()).await {
            Ok((names, _, watcher)) => return Ok((read_flags(client, layout, names).await?, watcher)),
            Err(zk::Error::NoNode) => {
                let (stat, watcher) = client.check_and_watch_stat(&layout.freezes()).await?;
                if stat.is_none() {
                    return Ok((Freezes::default(), watcher));
                }
                // Created between the two reads: list it.
            }
            Err(e) => return Err(e),
        }
    }
}

/// Keeps `tx` holding the flags in force until `stop`. When a session's reading fails the board
/// goes back to None (unknown) until the next session has read it: a session that expired
/// during a partition may have missed a freeze set meanwhile. Each read follows a `sync`, so a
/// server that lags behind the leader of the ensemble cannot hide a flag.
pub async fn keep(layout: Layout, session: SessionHandle, tx: watch::Sender<Option<Freezes>>, stop: CancellationToken) {
    session::keep_watching(session, stop, "watching the freeze flags", |client| {
        let (layout, tx) = (layout.clone(), tx.clone());
        async move {
            client.sync(&layout.freezes()).await.or_else(|e| if e == zk::Error::NoNode { Ok(()) } else { Err(e) })?;
            let (board, watcher) = read_and_watch(&client, &layout).await?;
            let was = tx.borrow().clone().unwrap_or_default();
            for (name, f) in &board.0 {
                if was.0.get(name) != Some(f) {
                    tracing::warn!(flag = %name, by = %f.by, "freeze set on {name}: nothing new is published or applied there until `zkcoordctl unfreeze`: {}", f.reason);
                }
            }
            for name in was.0.keys().filter(|n| !board.0.contains_key(*n)) {
                tracing::info!(flag = %name, "freeze on {name} lifted");
            }
            tx.send_if_modified(|b| b.replace(board.clone()).as_ref() != Some(&board));
            Ok(watcher)
        }
    }, || {
        tx.send_replace(None);
    })
    .await
}
