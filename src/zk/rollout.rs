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
