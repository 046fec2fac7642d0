//! Publish requests: what `zkcoordctl` and the legacy trigger hand to the leading agent, and
//! what the agent answers. A request node holds one JSON header line, a newline, then the
//! config's raw bytes (no base64, so the whole size budget is the config's).

use crate::digest::sha256_hex;
use crate::model::signing::VersionSignature;
use serde::{Deserialize, Serialize};

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
    pub content: crate::model::content::ContentInfo,
    /// Stage the rollout on these canaries first (`--canary`, `--soak`); absent: every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::model::rollout::CanarySpec>,
    /// The id this publish is known by everywhere: the publisher's answer, the version's
    /// metadata, each host's journal (`ZKCOORD_PUBLISH_ID`), hook environment and status, so
    /// one query per host finds a rollout's timeline (absent from older publishers; the leader
    /// then makes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_id: Option<String>,
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
    pub content: crate::model::content::ContentInfo,
    /// The version stream it belongs to: the creation zxid of the versions parent the version
    /// was made under. An app's node deleted and created again restarts its sequence numbers,
    /// so metadata left by the old stream must never be taken for the new version of the same
    /// name (absent in metadata written before streams were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<i64>,
    /// The publish's id (see [`RequestHeader::publish_id`]); absent in metadata written before
    /// publishes had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_id: Option<String>,
    /// What its rollout did, written by the leader once it settled (see
    /// [`crate::model::record`]); absent until then, and for versions older than records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::model::record::RolloutRecord>,
}

/// The request node's bytes.
pub fn encode(header: &RequestHeader, data: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).expect("header serializes");
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

impl VersionMeta {
    /// The metadata a leader writes beside the version it makes of request `h` in version
    /// stream `stream` (the versions parent's czxid), stamped now.
    pub fn of(h: &RequestHeader, stream: i64) -> VersionMeta {
        VersionMeta {
            author: h.author.clone(),
            message: h.message.clone(),
            sha256: h.sha256.clone(),
            size: h.size,
            time: crate::clock::now_secs(),
            origin: h.origin.clone(),
            signature: h.signature.clone(),
            content: h.content.clone(),
            stream: Some(stream),
            publish_id: Some(h.publish_id.clone().unwrap_or_else(new_publish_id)),
            record: None,
        }
    }

    /// Whether this metadata, read from a node created at zxid `meta_czxid`, describes a
    /// version of stream `stream`. Metadata that names its stream must name this one; older
    /// metadata without the field belongs only if it was created after the stream began (a
    /// version's metadata is always written after the version, so after its parent).
    pub fn belongs_to(&self, stream: i64, meta_czxid: i64) -> bool {
        match self.stream {
            Some(s) => s == stream,
            None => meta_czxid > stream,
        }
    }
}

/// Why a request is refused; the leader answers `rejected: <this>`, the publisher shows it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No newline: not a request node.
    #[error("request has no header line")]
    NoHeaderLine,
    /// The header line is not the JSON a header is.
    #[error("request header is not valid: {0}")]
    BadHeader(String),
    /// The app name would make unsafe znode or file names.
    #[error(transparent)]
    AppName(#[from] crate::model::layout::BadAppName),
    /// The content is over a size limit.
    #[error(transparent)]
    TooLarge(#[from] crate::model::content::TooLarge),
    /// The message is over [`MAX_MESSAGE_BYTES`].
    #[error("message is {0} bytes; the limit is {MAX_MESSAGE_BYTES}")]
    MessageTooLong(usize),
    /// The header's publish id would be unsafe in a journal field or an environment.
    #[error("publish_id must be 1 to {MAX_PUBLISH_ID_BYTES} letters, digits, '.', '_' or '-', got {0:?}")]
    BadPublishId(String),
    /// The header's sha256 is not one.
    #[error("sha256 must be 64 lowercase hex digits, got {0:?}")]
    BadSha256(String),
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] crate::model::signing::SignatureError),
    /// The bytes are not as long as the header says.
    #[error("size mismatch: header says {header} bytes, got {got}")]
    SizeMismatch {
        /// What the header says.
        header: usize,
        /// What arrived.
        got: usize,
    },
    /// The bytes do not hash to the header's sha256.
    #[error("sha256 mismatch: header says {header}, bytes hash to {got}")]
    Sha256Mismatch {
        /// What the header says.
        header: String,
        /// What the bytes hash to.
        got: String,
    },
}

impl From<RequestError> for String {
    fn from(e: RequestError) -> String {
        e.to_string()
    }
}

/// Splits a request node's bytes into header and data. A header from a publisher older than
/// publish ids gets one here, so every later step logs and stores the same.
pub fn decode(bytes: &[u8]) -> Result<(RequestHeader, &[u8]), RequestError> {
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or(RequestError::NoHeaderLine)?;
    let mut header: RequestHeader = serde_json::from_slice(&bytes[..nl]).map_err(|e| RequestError::BadHeader(e.to_string()))?;
    header.publish_id.get_or_insert_with(new_publish_id);
    Ok((header, &bytes[nl + 1..]))
}

/// Builds a header for `data`, checking size and message length.
pub fn header_for(app: &str, author: &str, message: Option<String>, origin: &str, data: &[u8]) -> Result<RequestHeader, RequestError> {
    crate::model::layout::validate_app_name(app)?;
    crate::model::content::check_size(data.len())?;
    if let Some(m) = &message {
        if m.len() > MAX_MESSAGE_BYTES {
            return Err(RequestError::MessageTooLong(m.len()));
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
        publish_id: Some(new_publish_id()),
    })
}

/// The longest publish id a header may carry.
pub const MAX_PUBLISH_ID_BYTES: usize = 64;

/// A fresh publish id: 16 random hex digits, short enough to type into `journalctl
/// ZKCOORD_PUBLISH_ID=…`, long enough never to repeat within a fleet's history.
pub fn new_publish_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// Whether `id` may be a publish id: it reaches journal fields, hook environments and status
/// nodes, so letters, digits, `.`, `_` and `-` only.
pub fn valid_publish_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_PUBLISH_ID_BYTES && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What every request must get right before anything is read on its behalf: a safe app name,
/// a well-formed sha256, and a signature (if any) that matches what it claims.
pub fn validate_header(h: &RequestHeader) -> Result<(), RequestError> {
    crate::model::layout::validate_app_name(&h.app)?;
    if h.sha256.len() != 64 || !h.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(RequestError::BadSha256(h.sha256.clone()));
    }
    if let Some(id) = h.publish_id.as_deref().filter(|id| !valid_publish_id(id)) {
        return Err(RequestError::BadPublishId(id.chars().take(80).collect()));
    }
    if let Some(sig) = &h.signature {
        crate::model::signing::check(sig, &h.app, &h.sha256, h.size)?;
    }
    Ok(())
}

/// Checks a request that carries its bytes inline against its header.
pub fn validate_inline(h: &RequestHeader, data: &[u8]) -> Result<(), RequestError> {
    crate::model::content::check_size(data.len())?;
    if data.len() != h.size {
        return Err(RequestError::SizeMismatch { header: h.size, got: data.len() });
    }
    let sum = crate::digest::sha256_hex(data);
    if sum != h.sha256 {
        return Err(RequestError::Sha256Mismatch { header: h.sha256.clone(), got: sum });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::content::MAX_NODE_BYTES;

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
        let big = vec![b'x'; MAX_NODE_BYTES + 1];
        let e = header_for("a", "me", None, "zkcoordctl", &big).unwrap_err().to_string();
        assert!(e.contains("1000000"), "{e}");
    }

    #[test]
    fn outcomes_read_as_the_design_says() {
        assert_eq!(Outcome::Published { version: "conf-0000000012".into() }.to_string(), "published conf-0000000012");
        assert_eq!(Outcome::Unchanged { version: "conf-1".into() }.to_string(), "unchanged, same as conf-1");
        let json = serde_json::to_string(&Outcome::Rejected { reason: "x".into() }).unwrap();
        assert_eq!(json, r#"{"result":"rejected","reason":"x"}"#);
    }

    #[test]
    fn each_publish_gets_its_own_id_and_an_unsafe_one_is_refused() {
        let a = header_for("a", "me", None, "zkcoordctl", b"x").unwrap();
        let b = header_for("a", "me", None, "zkcoordctl", b"x").unwrap();
        let (ia, ib) = (a.publish_id.clone().unwrap(), b.publish_id.clone().unwrap());
        assert_ne!(ia, ib);
        assert_eq!(ia.len(), 16);
        validate_header(&a).unwrap();
        assert_eq!(VersionMeta::of(&a, 7).publish_id.as_deref(), Some(ia.as_str()));
        // An older publisher's header has none; decoding gives it one, as does the metadata.
        let old = RequestHeader { publish_id: None, ..a.clone() };
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("publish_id"), "{json}");
        assert_eq!(VersionMeta::of(&old, 7).publish_id.map(|i| i.len()), Some(16));
        assert_eq!(decode(&encode(&old, b"x")).unwrap().0.publish_id.map(|i| i.len()), Some(16));
        for bad in ["", "a b", "x\nZKCOORD_APP=evil", &"x".repeat(65)] {
            let h = RequestHeader { publish_id: Some(bad.to_string()), ..a.clone() };
            let e = validate_header(&h).unwrap_err().to_string();
            assert!(e.contains("publish_id must be"), "{bad:?}: {e}");
        }
    }
}
