//! Reading a service's live members: the children of its znode, each holding JSON such as
//! `{"host": "10.0.0.5", "port": 8001}`, whoever wrote them (our daemons or an existing
//! script). Shared by the renderer and `zkcoordctl services`, so both see the same set in the
//! same order.

use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use zookeeper_client as zk;

/// One live member as read from ZooKeeper.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// The member's node name (`web-01`, `server0000000003`): the last resort of the sort key.
    pub node: String,
    /// `host` from the data, if it has one (templates mostly need host and port).
    pub host: Option<String>,
    /// `port` from the data, if it has one (a number, or a string of digits).
    pub port: Option<u16>,
    /// The whole JSON data (an object), for extra fields such as a weight.
    pub data: serde_json::Value,
    /// When the node was created (ms since the epoch): how long this member has been up.
    pub ctime_ms: i64,
    /// The session that owns it (0 for a persistent node someone left there).
    #[serde(skip)]
    pub owner: i64,
}

impl Member {
    /// Parses a member's data; None when it is not a JSON object (such nodes are skipped, so
    /// a stray lock or counter node under the path cannot break a rendered file).
    pub fn parse(node: &str, bytes: &[u8], ctime_ms: i64, owner: i64) -> Option<Member> {
        let data: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let obj = data.as_object()?;
        let host = obj.get("host").and_then(|h| h.as_str()).map(str::to_string);
        let port = match obj.get("port") {
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Some(Member { node: node.to_string(), host, port, data, ctime_ms, owner })
    }

    /// `host:port` (or the node name when the data has no address), for logs and listings.
    pub fn address(&self) -> String {
        match (&self.host, self.port) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.clone(),
            _ => self.node.clone(),
        }
    }
}

/// Sorts members by host, port and then node name. Address first, not node name: a member that
/// re-registers gets a new sequential name, and that alone must not change (and reload) a
/// rendered file.
pub fn sort(members: &mut [Member]) {
    members.sort_by(|a, b| {
        (a.host.as_deref().unwrap_or(""), a.port.unwrap_or(0), &a.node).cmp(&(
            b.host.as_deref().unwrap_or(""),
            b.port.unwrap_or(0),
            &b.node,
        ))
    });
}

/// What one read of the members found.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Live members with JSON data, sorted (see [`sort`]).
    pub members: Vec<Member>,
    /// Children whose data is not a JSON object, by name (skipped; logged by the caller).
    pub skipped: Vec<String>,
    /// False when the service's znode does not exist (no member ever registered).
    pub exists: bool,
}

/// A future that completes when something about the members changed.
pub type Wake = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Reads every member once, without watches (for `zkcoordctl services`).
pub async fn read(client: &zk::Client, path: &str) -> Result<Snapshot, zk::Error> {
    let children = match client.list_children(path).await {
        Ok(c) => c,
        Err(zk::Error::NoNode) => return Ok(Snapshot { members: Vec::new(), skipped: Vec::new(), exists: false }),
        Err(e) => return Err(e),
    };
    let mut snap = Snapshot { members: Vec::new(), skipped: Vec::new(), exists: true };
    for child in children {
        match client.get_data(&format!("{path}/{child}")).await {
            Ok((bytes, stat)) => match Member::parse(&child, &bytes, stat.ctime, stat.ephemeral_owner) {
                Some(m) => snap.members.push(m),
                None => snap.skipped.push(child),
            },
            Err(zk::Error::NoNode) => {} // gone between the listing and the read
            Err(e) => return Err(e),
        }
    }
    sort(&mut snap.members);
    Ok(snap)
}

/// Reads every member and leaves watches on the children and on each member's data; the
/// returned future completes when any of them fires (a member came, went, or changed its
/// data), or at once when the path appeared or vanished meanwhile.
pub async fn read_and_watch(client: &zk::Client, path: &str) -> Result<(Snapshot, Wake), zk::Error> {
    let (children, watcher) = match client.get_and_watch_children(path).await {
        Ok((children, _, w)) => (children, w),
        Err(zk::Error::NoNode) => {
            let (stat, w) = client.check_and_watch_stat(path).await?;
            let wake: Wake = if stat.is_some() {
                Box::pin(async {})
            } else {
                Box::pin(async move {
                    w.changed().await;
                })
            };
            return Ok((Snapshot { members: Vec::new(), skipped: Vec::new(), exists: false }, wake));
        }
        Err(e) => return Err(e),
    };
    let mut wakes: Vec<Wake> = vec![Box::pin(async move {
        watcher.changed().await;
    })];
    let mut snap = Snapshot { members: Vec::new(), skipped: Vec::new(), exists: true };
    for child in children {
        match client.get_and_watch_data(&format!("{path}/{child}")).await {
            Ok((bytes, stat, w)) => {
                wakes.push(Box::pin(async move {
                    w.changed().await;
                }));
                match Member::parse(&child, &bytes, stat.ctime, stat.ephemeral_owner) {
                    Some(m) => snap.members.push(m),
                    None => snap.skipped.push(child),
                }
            }
            Err(zk::Error::NoNode) => {} // the children watch fires for it
            Err(e) => return Err(e),
        }
    }
    sort(&mut snap.members);
    let wake: Wake = Box::pin(async move {
        futures::future::select_all(wakes).await;
    });
    Ok((snap, wake))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, json: &str) -> Option<Member> {
        Member::parse(node, json.as_bytes(), 0, 0)
    }

    #[test]
    fn members_parse_host_and_port_and_keep_the_rest_of_the_data() {
        let m = member("server0000000003", r#"{"host": "10.0.0.5", "port": 8001, "weight": 2}"#).unwrap();
        assert_eq!((m.host.as_deref(), m.port, m.address()), (Some("10.0.0.5"), Some(8001), "10.0.0.5:8001".into()));
        assert_eq!(m.data["weight"], 2);
        assert_eq!(member("a", r#"{"host": "h", "port": "81"}"#).unwrap().port, Some(81));
        assert!(member("lock", "").is_none());
        assert!(member("x", "[1, 2]").is_none());
    }

    #[test]
    fn members_sort_by_address_not_by_their_sequence_number() {
        let mut v = vec![
            member("server0000000009", r#"{"host": "10.0.0.1", "port": 80}"#).unwrap(),
            member("server0000000001", r#"{"host": "10.0.0.2", "port": 80}"#).unwrap(),
            member("server0000000005", r#"{"host": "10.0.0.1", "port": 79}"#).unwrap(),
        ];
        sort(&mut v);
        let order: Vec<String> = v.iter().map(Member::address).collect();
        assert_eq!(order, vec!["10.0.0.1:79", "10.0.0.1:80", "10.0.0.2:80"]);
    }
}
