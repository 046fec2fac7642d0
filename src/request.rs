//! Publish requests: what `zkcoordctl` and the legacy trigger hand to the leading agent, and
//! what the agent answers. A request node holds one JSON header line, a newline, then the
//! config's raw bytes (no base64, so the whole size budget is the config's).

use crate::layout::{Layout, REQUEST_PREFIX};
use crate::signing::VersionSignature;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use zookeeper_client as zk;

/// Largest config accepted. ZooKeeper's default jute.maxbuffer is 1 MiB for a whole packet, and a
/// larger write makes the server drop the connection, so the limit leaves room for the header.
pub const MAX_CONFIG_BYTES: usize = 1_000_000;
/// Largest publish message.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Who asked for what, travelling in front of the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// The application to publish to.
    pub app: String,
    /// Who published (user@host, or the trigger's peer).
    pub author: String,
    /// Why, in the publisher's words.
    #[serde(default)]
    pub message: Option<String>,
    /// sha256 of the bytes, checked by the agent end to end.
    pub sha256: String,
    /// Length of the bytes.
    pub size: usize,
    /// How it came in: "zkcoordctl" or "trigger".
    pub origin: String,
    /// The publisher's signature over app, sha256 and size, when it signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<VersionSignature>,
    /// Bundle or file, compression, chunked storage (all absent for a plain file).
    #[serde(flatten, default)]
    pub content: crate::chunks::ContentInfo,
    /// Stage the rollout on these canaries first (`--canary`, `--soak`); absent: every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::rollout::CanarySpec>,
}

/// The leader's answer to a request, at `<root>/outcomes/<request>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Outcome {
    /// A new version was created.
    Published {
        /// Its name.
        version: String,
    },
    /// The bytes equal the newest version; nothing was created.
    Unchanged {
        /// The version they equal.
        version: String,
    },
    /// Refused; nothing was created.
    Rejected {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Published { version } => write!(f, "published {version}"),
            Outcome::Unchanged { version } => write!(f, "unchanged, same as {version}"),
            Outcome::Rejected { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

/// Metadata kept beside a version, at `<root>/meta/<app>/<version>`, never inside its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// Who published it.
    pub author: String,
    /// Their message.
    #[serde(default)]
    pub message: Option<String>,
    /// sha256 of the version's bytes; apps refuse bytes that do not match.
    pub sha256: String,
    /// Size in bytes.
    pub size: usize,
    /// Seconds since the epoch when the leader created it.
    pub time: u64,
    /// "zkcoordctl" or "trigger".
    pub origin: String,
    /// The publisher's signature, which apps with `trusted_keys` require.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<VersionSignature>,
    /// Bundle or file, compression, chunked storage (all absent for a plain file).
    #[serde(flatten, default)]
    pub content: crate::chunks::ContentInfo,
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Refuses a config over the limit, before anything reaches ZooKeeper.
pub fn check_size(len: usize) -> Result<(), String> {
    if len > MAX_CONFIG_BYTES {
        Err(format!(
            "config is {len} bytes; the limit is {MAX_CONFIG_BYTES} bytes (ZooKeeper's default jute.maxbuffer is 1 MiB per node)"
        ))
    } else {
        Ok(())
    }
}

/// The request node's bytes.
pub fn encode(header: &RequestHeader, data: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).expect("header serializes");
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

/// Splits a request node's bytes into header and data.
pub fn decode(bytes: &[u8]) -> Result<(RequestHeader, &[u8]), String> {
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or("request has no header line")?;
    let header: RequestHeader =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("request header is not valid: {e}"))?;
    Ok((header, &bytes[nl + 1..]))
}

/// Builds a header for `data`, checking size and message length.
pub fn header_for(app: &str, author: &str, message: Option<String>, origin: &str, data: &[u8]) -> Result<RequestHeader, String> {
    crate::config::validate_app_name(app)?;
    check_size(data.len())?;
    if let Some(m) = &message {
        if m.len() > MAX_MESSAGE_BYTES {
            return Err(format!("message is {} bytes; the limit is {MAX_MESSAGE_BYTES}", m.len()));
        }
    }
    Ok(RequestHeader {
        app: app.to_string(),
        author: author.to_string(),
        message,
        sha256: sha256_hex(data),
        size: data.len(),
        origin: origin.to_string(),
        signature: None,
        content: Default::default(),
        canary: None,
    })
}

/// Queues a request for the leader; returns the request node's name.
pub async fn submit(client: &zk::Client, layout: &Layout, header: &RequestHeader, data: &[u8]) -> Result<String, zk::Error> {
    ensure_parents(client, layout).await?;
    create(client, layout, header, data).await
}

/// Makes sure the requests and outcomes parents exist (two round trips). A long-lived
/// submitter (the legacy trigger) does this once per session, not once per request.
pub async fn ensure_parents(client: &zk::Client, layout: &Layout) -> Result<(), zk::Error> {
    crate::session::ensure_path(client, &layout.requests(), crate::acl::NodeKind::RequestsParent).await?;
    crate::session::ensure_path(client, &layout.outcomes(), crate::acl::NodeKind::OutcomesParent).await
}

/// Queues a request for the leader, its parents known to exist ([`ensure_parents`]); returns
/// the request node's name.
pub async fn create(client: &zk::Client, layout: &Layout, header: &RequestHeader, data: &[u8]) -> Result<String, zk::Error> {
    let prefix = format!("{}/{}", layout.requests(), REQUEST_PREFIX);
    let acl = crate::acl::for_node(crate::acl::NodeKind::Owned);
    let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::new(&acl));
    let (_, seq) = client.create(&prefix, &encode(header, data), &opts).await?;
    Ok(format!("{REQUEST_PREFIX}{seq}"))
}

/// Why no outcome arrived.
#[derive(Debug, thiserror::Error)]
pub enum AwaitError {
    /// No leader answered in time; the request was withdrawn, nothing was published.
    #[error("no leading agent answered within {0:?}; the request was withdrawn and nothing was published")]
    NoLeader(Duration),
    /// ZooKeeper failed underneath.
    #[error("ZooKeeper: {0}")]
    Zk(#[from] zk::Error),
    /// The outcome node held something unreadable.
    #[error("unreadable outcome: {0}")]
    Garbled(String),
}

/// Waits for the leader's outcome of `req`, withdrawing the request if none comes in `timeout`.
pub async fn await_outcome(client: &zk::Client, layout: &Layout, req: &str, timeout: Duration) -> Result<Outcome, AwaitError> {
    let path = layout.outcome(req);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (stat, watcher) = client.check_and_watch_stat(&path).await?;
        if stat.is_some() {
            return read_outcome(client, &path).await;
        }
        if tokio::time::timeout_at(deadline, watcher.changed()).await.is_err() {
            // Withdraw; if the request is already gone, the leader took it: read its outcome.
            match client.delete(&format!("{}/{}", layout.requests(), req), None).await {
                Ok(()) => return Err(AwaitError::NoLeader(timeout)),
                Err(zk::Error::NoNode) => {
                    let (_, w) = client.check_and_watch_stat(&path).await?;
                    if client.check_stat(&path).await?.is_none() {
                        let _ = tokio::time::timeout(Duration::from_secs(5), w.changed()).await;
                    }
                    return read_outcome(client, &path).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

async fn read_outcome(client: &zk::Client, path: &str) -> Result<Outcome, AwaitError> {
    let (bytes, _) = client.get_data(path).await?;
    let outcome = serde_json::from_slice(&bytes).map_err(|e| AwaitError::Garbled(e.to_string()))?;
    let _ = client.delete(path, None).await;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_bytes_round_trip_with_newlines_in_the_data() {
        let data = b"line1\nline2\n\0binary";
        let h = header_for("nginxconf", "me@host", Some("why".into()), "zkcoordctl", data).unwrap();
        let enc = encode(&h, data);
        let (h2, d2) = decode(&enc).unwrap();
        assert_eq!(h2, h);
        assert_eq!(d2, data);
    }

    #[test]
    fn oversized_config_is_refused_naming_the_limit() {
        let big = vec![b'x'; MAX_CONFIG_BYTES + 1];
        let e = header_for("a", "me", None, "zkcoordctl", &big).unwrap_err();
        assert!(e.contains("1000000"), "{e}");
    }

    #[test]
    fn outcomes_read_as_the_design_says() {
        assert_eq!(Outcome::Published { version: "conf-0000000012".into() }.to_string(), "published conf-0000000012");
        assert_eq!(Outcome::Unchanged { version: "conf-1".into() }.to_string(), "unchanged, same as conf-1");
        let json = serde_json::to_string(&Outcome::Rejected { reason: "x".into() }).unwrap();
        assert_eq!(json, r#"{"result":"rejected","reason":"x"}"#);
    }
}
