//! Reading rollout records (`<root>/rollouts/<app>`): hosts read them beside the versions to
//! know which they may see; the leader and `zkcoordctl` read them to act.

use crate::model::layout::Layout;
use crate::model::rollout::{parse, Rollout};
use std::future::Future;
use std::pin::Pin;
use zookeeper_client as zk;

/// A future that resolves when a watched node changes.
pub type Wake = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Reads `app`'s rollout record and its stat, if there is one.
pub async fn read(client: &zk::Client, layout: &Layout, app: &str) -> Result<Option<(Rollout, zk::Stat)>, zk::Error> {
    match client.get_data(&layout.rollout(app)).await {
        Ok((bytes, stat)) => Ok(parse(app, &bytes).map(|r| (r, stat))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads `app`'s rollout record and watches it (its creation when there is none).
pub async fn read_and_watch(client: &zk::Client, layout: &Layout, app: &str) -> Result<(Option<Rollout>, Wake), zk::Error> {
    let p = layout.rollout(app);
    loop {
        match client.get_and_watch_data(&p).await {
            Ok((bytes, _, w)) => {
                let wake: Wake = Box::pin(async move {
                    w.changed().await;
                });
                return Ok((parse(app, &bytes), wake));
            }
            Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        let (stat, w) = client.check_and_watch_stat(&p).await?;
        if stat.is_none() {
            let wake: Wake = Box::pin(async move {
                w.changed().await;
            });
            return Ok((None, wake));
        }
        // Created between the two reads: read it again.
    }
}

/// The record (None when unreadable) and its stat, when a node exists.
pub(crate) async fn read_any(client: &zk::Client, layout: &Layout, app: &str) -> Result<Option<(Option<Rollout>, zk::Stat)>, zk::Error> {
    match client.get_data(&layout.rollout(app)).await {
        Ok((bytes, stat)) => Ok(Some((parse(app, &bytes), stat))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An app's versions (names and the parent's stat) and its rollout record, as the leader reads
/// them before deciding a publish.
pub(crate) struct Listed {
    /// The versions parent's children.
    pub children: Vec<String>,
    /// The versions parent's stat: the stream (czxid) and the next sequence number.
    pub stat: zk::Stat,
    /// The rollout record (None when unreadable) and its stat, when a node exists.
    pub record: Option<(Option<Rollout>, zk::Stat)>,
}

/// Lists `app`'s versions under `parent` and reads its rollout record in one round trip (a
/// multi read, ZooKeeper 3.6+: one request where a publish used to make two); None when the
/// versions parent does not exist. A server that refuses multi reads sets `no_multi_read`, and
/// this process reads the two apart from then on.
pub(crate) async fn list_with_record(
    client: &zk::Client,
    layout: &Layout,
    app: &str,
    parent: &str,
    no_multi_read: &std::sync::atomic::AtomicBool,
) -> Result<Option<Listed>, zk::Error> {
    use std::sync::atomic::Ordering;
    if !no_multi_read.load(Ordering::Relaxed) {
        let mut r = client.new_multi_reader();
        r.add_get_data(parent)?;
        r.add_get_children(parent)?;
        r.add_get_data(&layout.rollout(app))?;
        match r.commit().await {
            Ok(results) if results.len() == 3 => {
                let mut it = results.into_iter();
                let (stat, children, record) = (it.next().expect("3"), it.next().expect("3"), it.next().expect("3"));
                // A create between the reads of the stat and the children is harmless: the
                // next sequence number is never taken at or below a listed version, and the
                // version's plain create fails its multi-op when the number was taken.
                let stat = match crate::zk::session::multi_data(stat) {
                    Ok((_, stat)) => stat,
                    Err(zk::Error::NoNode) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let children = match children {
                    zk::MultiReadResult::Children { children } => children,
                    zk::MultiReadResult::Error { err: zk::Error::NoNode } => return Ok(None),
                    zk::MultiReadResult::Error { err } => return Err(err),
                    _ => return Err(zk::Error::UnexpectedError("a multi read answered something else than children for a listing".into())),
                };
                let record = match crate::zk::session::multi_data(record) {
                    Ok((data, stat)) => Some((parse(app, &data), stat)),
                    Err(zk::Error::NoNode) => None,
                    Err(e) => return Err(e),
                };
                return Ok(Some(Listed { children, stat, record }));
            }
            Ok(results) => return Err(zk::Error::UnexpectedError(format!("a multi read of 3 answered {}", results.len()))),
            Err(e) if crate::zk::session::is_unsupported(&e) => {
                tracing::info!("the server refuses multi reads ({e}; ZooKeeper older than 3.6?): listing versions and rollout records apart");
                no_multi_read.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    let (children, record) = futures::join!(client.get_children(parent), read_any(client, layout, app));
    match children {
        Ok((children, stat)) => Ok(Some(Listed { children, stat, record: record? })),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}
