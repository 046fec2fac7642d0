//! How a version's content is stored: raw bytes in the version node, or, beyond one node's
//! limit, a marker line naming chunks kept under `<root>/blobs` (see [`crate::zk::blobs`]);
//! and what the metadata says about it (bundle or file, compression, storage).

use serde::{Deserialize, Serialize};

/// Bytes per chunk node: as much as one node safely takes.
pub const CHUNK_BYTES: usize = MAX_NODE_BYTES;

/// First word of a chunked version's marker.
const MARKER_MAGIC: &str = "zkcoord-chunked-v1";

/// `storage` value of chunked versions.
pub const STORAGE_CHUNKED: &str = "chunked";

/// How a version's content is stored and what it is; travels in the request header and is kept
/// in the version's metadata. Every field is absent for a plain single-file version, so their
/// JSON is exactly what it was before bundles and chunks existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentInfo {
    /// "bundle" for a packed directory tree ([`crate::host::bundle`]); absent for one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For bundles: "gzip" or "none".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// "chunked" when the bytes live in chunk nodes; absent when they are the version's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// How many chunk nodes hold the bytes (chunked only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
}

impl ContentInfo {
    /// Whether the bytes live in chunk nodes.
    pub fn is_chunked(&self) -> bool {
        self.chunks.is_some()
    }
}

/// What a chunked version's node says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// sha256 of the whole content.
    pub sha256: String,
    /// Its length.
    pub size: u64,
    /// How many chunks.
    pub chunks: u32,
}

impl Marker {
    /// The marker's bytes, as the version node holds them.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{MARKER_MAGIC} sha256={} size={} chunks={}\n", self.sha256, self.size, self.chunks).into_bytes()
    }

    /// Parses a version node's data as a marker; None for anything else (raw config bytes).
    pub fn parse(bytes: &[u8]) -> Option<Marker> {
        if bytes.len() > 256 || !bytes.starts_with(MARKER_MAGIC.as_bytes()) {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?.trim_end();
        let mut words = text.split(' ');
        (words.next()? == MARKER_MAGIC).then_some(())?;
        let sha256 = words.next()?.strip_prefix("sha256=")?;
        let size = words.next()?.strip_prefix("size=")?.parse().ok()?;
        let chunks = words.next()?.strip_prefix("chunks=")?.parse().ok()?;
        let hex_ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        (hex_ok && words.next().is_none()).then(|| Marker { sha256: sha256.to_string(), size, chunks })
    }
}

/// The sha256 of a version's content, from its node's data: the marker's for chunked content,
/// the data's own otherwise (what dedupe compares).
pub fn content_sha256(data: &[u8]) -> String {
    Marker::parse(data).map(|m| m.sha256).unwrap_or_else(|| crate::digest::sha256_hex(data))
}

/// Refuses content over `max` (the configured `max_config_size`).
pub fn check_max(len: u64, max: u64) -> Result<(), TooLarge> {
    if len > max {
        Err(TooLarge { len, limit: max, which: Limit::Config })
    } else {
        Ok(())
    }
}

/// Content over a limit, refused before it goes anywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config is {len} bytes; the limit is {limit} bytes ({})", match which {
    Limit::Config => format!("max_config_size = {}", human(*limit)),
    Limit::Node => "ZooKeeper's default jute.maxbuffer is 1 MiB per node".to_string(),
})]
pub struct TooLarge {
    /// The content's size.
    pub len: u64,
    /// The limit it is over.
    pub limit: u64,
    /// Which limit.
    pub which: Limit,
}

/// The two size limits content meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_config_size`: the largest config this fleet takes, chunked or not.
    Config,
    /// [`MAX_NODE_BYTES`]: what one znode (and the legacy trigger) holds.
    Node,
}

impl From<TooLarge> for String {
    fn from(e: TooLarge) -> String {
        e.to_string()
    }
}

/// `64 MiB`, `1000000 bytes`.
pub fn human(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Largest config accepted. ZooKeeper's default jute.maxbuffer is 1 MiB for a whole packet, and a
/// larger write makes the server drop the connection, so the limit leaves room for the header.
pub const MAX_NODE_BYTES: usize = 1_000_000;

/// Refuses a config over the limit, before anything reaches ZooKeeper.
pub fn check_size(len: usize) -> Result<(), TooLarge> {
    if len > MAX_NODE_BYTES {
        Err(TooLarge { len: len as u64, limit: MAX_NODE_BYTES as u64, which: Limit::Node })
    } else {
        Ok(())
    }
}
