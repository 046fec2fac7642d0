//! Every live host's status node of an app, read at once: the leader's record of a rollout
//! needs them all, and reading them one by one would cost a request per host per publish. The
//! listing and one multi read per [`PER_MULTI`] hosts (older servers without multi reads get
//! one read per host).

use zookeeper_client as zk;

/// Status nodes read per multi read: a report holds at most 8 KiB of error text (its `error`
/// and its precheck's, see [`crate::model::status::ERROR_LIMIT`]), so even a fleet that all
/// failed keeps an answer below the servers' 1 MB packet limit.
pub const PER_MULTI: usize = 100;

/// A status node as read: its host's node id and (when it still existed) its bytes and stat.
pub type NodeRead = (String, Option<(Vec<u8>, zk::Stat)>);

/// Reads every child of `dir` (an app's status directory); empty when it does not exist.
/// `no_multi_read` is set once a server refuses multi reads.
pub async fn read_all(client: &zk::Client, dir: &str, no_multi_read: &std::sync::atomic::AtomicBool) -> Result<Vec<NodeRead>, zk::Error> {
    let hosts = match client.list_children(dir).await {
        Ok(h) => h,
        Err(zk::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(hosts.len());
    for batch in hosts.chunks(PER_MULTI) {
        let paths: Vec<String> = batch.iter().map(|h| format!("{dir}/{h}")).collect();
        for (h, read) in batch.iter().zip(crate::zk::session::get_many(client, &paths, no_multi_read).await?) {
            // A node deleted since the listing (its host left) is no report, not an error.
            let read = match read {
                Ok(x) => Some(x),
                Err(zk::Error::NoNode) => None,
                Err(e) => return Err(e),
            };
            out.push((h.clone(), read));
        }
    }
    Ok(out)
}
