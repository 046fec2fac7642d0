//! Every live host's status node of an app, read at once: the leader's record of a rollout
//! needs them all, and reading them one by one would cost a request per host per publish. The
//! listing and one multi read per [`PER_MULTI`] hosts (older servers without multi reads get
//! one read per host).

use crate::model::record::HostReport;
use crate::model::status::{ApplyResult, StatusReport};
use zookeeper_client as zk;

/// Status nodes read per multi read: a report holds at most 8 KiB of error text (its `error`
/// and its precheck's, see [`crate::model::status::ERROR_LIMIT`]), so even a fleet that all
/// failed keeps an answer below the servers' 1 MB packet limit.
pub const PER_MULTI: usize = 100;

/// A status node as read: its host's node id and (when it still existed) its bytes and stat.
type NodeRead = (String, Option<(Vec<u8>, zk::Stat)>);

/// Every live host's report of the app whose status directory is `dir`, as every reader of
/// status may believe it: one some other identity wrote (under the ACL policy, see
/// [`crate::zk::guard::status_trusted`]) or that cannot be parsed is None; a host that stopped
/// following the app (`removed`, its node kept until its session ends) is left out.
/// `no_multi_read` is set once a server refuses multi reads.
pub async fn live_reports(client: &zk::Client, dir: &str, no_multi_read: &std::sync::atomic::AtomicBool) -> Result<Vec<HostReport>, zk::Error> {
    let mut out = Vec::new();
    for (host, read) in read_all(client, dir, no_multi_read).await? {
        let Some((bytes, stat)) = read else { continue };
        let report = serde_json::from_slice::<StatusReport>(&bytes).ok();
        if report.as_ref().is_some_and(|r| r.result == ApplyResult::Removed) {
            continue;
        }
        let trusted = crate::zk::guard::status_trusted(client, &format!("{dir}/{host}"), &host, stat.czxid).await?.is_ok();
        out.push(HostReport { host, report: report.filter(|_| trusted), mtime_ms: stat.mtime });
    }
    Ok(out)
}

/// Reads every child of `dir` (an app's status directory); empty when it does not exist.
async fn read_all(client: &zk::Client, dir: &str, no_multi_read: &std::sync::atomic::AtomicBool) -> Result<Vec<NodeRead>, zk::Error> {
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
