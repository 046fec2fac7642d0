//! Large configs: content beyond one node's limit (ZooKeeper's jute.maxbuffer, 1 MiB) lives in
//! chunk nodes that the publisher writes *before* asking for a version, so no reader ever sees a
//! half-written version.
//!
//! | znode | kind | holds |
//! |---|---|---|
//! | `<root>/blobs/<app>/<sha256>` | PERSISTENT | nothing; parent of one content's chunks |
//! | `<root>/blobs/<app>/<sha256>/chunk-<4 digits>` | PERSISTENT | up to [`CHUNK_BYTES`] bytes each, in order |
//!
//! The version node of chunked content holds a one-line marker
//! (`zkcoord-chunked-v1 sha256=<hex> size=<n> chunks=<c>`) and its metadata says
//! `"storage": "chunked"`; an app host reads the chunks in order and installs nothing unless
//! the whole hashes to the sha256. A single-file version under the node limit keeps its raw
//! bytes exactly as before. The leader verifies a blob before it creates the version, and
//! prunes blobs that no kept version references (those of pruned versions at once, those of
//! publishes that never became versions after [`ORPHAN_AGE`]).

use crate::model::content::CHUNK_BYTES;
use crate::model::content::ContentInfo;
use crate::model::content::Marker;
use crate::model::content::STORAGE_CHUNKED;
use crate::model::content::check_max;
use crate::model::layout::chunk;
use crate::zk::identity::NodeKind;
use crate::model::layout::{Layout, VersionId};
use crate::model::request::{self, RequestHeader};
use std::collections::BTreeSet;
use std::time::Duration;
use zookeeper_client as zk;

/// A blob no version references is removed once it is this old (a publish that was rejected,
/// withdrawn, or whose publisher died mid-upload).
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);
/// Builds the request header for `data`: plain when it fits one node, chunked (the request then
/// carries no bytes; [`upload`] writes them) when it does not. Everything is checked here,
/// before anything reaches ZooKeeper. Returns the header and the bytes the request carries.
pub fn prepare<'a>(
    app: &str,
    author: &str,
    message: Option<String>,
    data: &'a [u8],
    mut content: ContentInfo,
    max: u64,
) -> Result<(RequestHeader, &'a [u8]), String> {
    check_max(data.len() as u64, max)?;
    content.storage = None;
    content.chunks = None;
    if data.len() <= crate::model::content::MAX_NODE_BYTES {
        let mut h = request::header_for(app, author, message, "zkcoordctl", data)?;
        h.content = content;
        return Ok((h, data));
    }
    let mut h = request::header_for(app, author, message, "zkcoordctl", &[])?;
    h.sha256 = crate::digest::sha256_hex(data);
    h.size = data.len();
    content.storage = Some(STORAGE_CHUNKED.into());
    content.chunks = Some(data.len().div_ceil(CHUNK_BYTES) as u32);
    h.content = content;
    Ok((h, &[]))
}

/// Writes `data` as the chunks of its blob (publisher side), before the request is submitted.
/// A chunk that already exists (the same content published before) is left as it is: the
/// leader verifies the whole blob anyway.
pub async fn upload(client: &zk::Client, layout: &Layout, app: &str, sha256: &str, data: &[u8]) -> Result<u32, zk::Error> {
    crate::zk::session::ensure_path(client, &layout.blobs(), NodeKind::Blobs).await?;
    // One level at a time: under ACLs a publisher may create only inside `blobs` (ZooKeeper
    // checks CREATE on the parent before it says NodeExists, so ensure_path's walk from the root
    // would be refused).
    let blob = layout.blob(app, sha256);
    let blob_acl = crate::zk::identity::for_node(NodeKind::Blobs);
    for dir in [layout.app_blobs(app), blob.clone()] {
        match client.create(&dir, b"", &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&blob_acl))).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    let acl = crate::zk::identity::for_node(NodeKind::Owned);
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acl));
    let mut n = 0;
    for (i, part) in data.chunks(CHUNK_BYTES).enumerate() {
        match client.create(&chunk(&blob, i as u32), part, &opts).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
        n += 1;
    }
    Ok(n)
}

/// Reads a blob's chunks in order and verifies size and sha256. The outer error is ZooKeeper's;
/// the inner one says why the content must not be used.
pub async fn read_blob(client: &zk::Client, layout: &Layout, app: &str, m: &Marker, max: u64) -> Result<Result<Vec<u8>, String>, zk::Error> {
    if let Err(e) = check_max(m.size, max) {
        return Ok(Err(e.to_string()));
    }
    let blob = layout.blob(app, &m.sha256);
    let mut data = Vec::with_capacity(m.size as usize);
    for i in 0..m.chunks {
        match client.get_data(&chunk(&blob, i)).await {
            Ok((part, _)) => data.extend_from_slice(&part),
            Err(zk::Error::NoNode) => return Ok(Err(format!("chunk {i} of {} is missing ({blob})", m.chunks))),
            Err(e) => return Err(e),
        }
        if data.len() as u64 > m.size {
            break;
        }
    }
    if data.len() as u64 != m.size {
        return Ok(Err(format!("chunked content is {} bytes; its marker says {}", data.len(), m.size)));
    }
    let sum = crate::digest::sha256_hex(&data);
    if sum != m.sha256 {
        return Ok(Err(format!("sha256 mismatch: chunks hash to {sum}, expected {}; not using them", m.sha256)));
    }
    Ok(Ok(data))
}

/// Leader side: verifies the blob a chunked request names and returns the marker its version
/// node will hold. The inner error is the rejection reason.
pub async fn verify_request(client: &zk::Client, layout: &Layout, h: &RequestHeader, body: &[u8], max: u64) -> Result<Result<Vec<u8>, String>, zk::Error> {
    let Some(chunks) = h.content.chunks else {
        return Ok(Err("not a chunked request".into()));
    };
    if !body.is_empty() {
        return Ok(Err("a chunked request must carry no bytes of its own".into()));
    }
    if h.size <= crate::model::content::MAX_NODE_BYTES || chunks as usize != h.size.div_ceil(CHUNK_BYTES) {
        return Ok(Err(format!("chunk count {chunks} does not fit size {}", h.size)));
    }
    let m = Marker { sha256: h.sha256.to_ascii_lowercase(), size: h.size as u64, chunks };
    if Marker::parse(&m.to_bytes()).is_none() {
        return Ok(Err(format!("not a sha256: {:?}", h.sha256)));
    }
    Ok(read_blob(client, layout, &h.app, &m, max).await?.map(|_| m.to_bytes()))
}

/// Resolves a version node's data into its content (app side, and `zkcoordctl get`/rollback):
/// chunked versions are read from their chunks and verified; other data is returned as is.
/// Chunked is decided by the agent-written metadata alone: a version without metadata (a plain
/// client's) is raw bytes by contract, even when they look like a marker, so a marker someone
/// wrote by hand never makes a host install what chunks it points to.
pub async fn resolve(
    client: &zk::Client,
    layout: &Layout,
    app: &str,
    data: Vec<u8>,
    meta: Option<&ContentInfo>,
    max: u64,
) -> Result<Result<Vec<u8>, String>, zk::Error> {
    let says_chunked = meta.map(|c| c.is_chunked() || c.storage.as_deref() == Some(STORAGE_CHUNKED));
    match (says_chunked, Marker::parse(&data)) {
        (Some(true), None) => Ok(Err("metadata says chunked, but the version node holds no chunk marker".into())),
        (Some(true), Some(m)) => read_blob(client, layout, app, &m, max).await,
        _ => Ok(Ok(data)),
    }
}

/// A blob to delete: its path and its chunk nodes.
pub type DoomedBlob = (String, Vec<String>);

/// Blobs of `app` that no kept version references and that either a pruned version
/// (`all[..pruned]`) referenced or are older than [`ORPHAN_AGE`]. Reads only; the leader
/// deletes them in fenced multi-ops. Costs one listing for an app that never chunked, and
/// answers None for it (no chunks at all), so the leader can skip the next look.
pub async fn doomed_blobs(
    client: &zk::Client,
    layout: &Layout,
    app: &str,
    versions_parent: &str,
    all: &[VersionId],
    pruned: usize,
) -> Result<Option<Vec<DoomedBlob>>, zk::Error> {
    let dir = layout.app_blobs(app);
    let blobs = match client.list_children(&dir).await {
        Ok(b) if !b.is_empty() => b,
        Ok(_) | Err(zk::Error::NoNode) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (mut kept, mut gone) = (BTreeSet::new(), BTreeSet::new());
    for (i, v) in all.iter().enumerate() {
        let path = format!("{versions_parent}/{}", v.name);
        // Only small nodes can be markers: read those alone.
        match client.check_stat(&path).await? {
            Some(s) if s.data_length <= 256 => {}
            _ => continue,
        }
        let data = match client.get_data(&path).await {
            Ok((d, _)) => d,
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        };
        if let Some(m) = Marker::parse(&data) {
            if i < pruned { gone.insert(m.sha256) } else { kept.insert(m.sha256) };
        }
    }
    let now_ms = crate::clock::now_secs() as i64 * 1000;
    let mut doomed = Vec::new();
    for sha in blobs.into_iter().filter(|b| !kept.contains(b)) {
        let path = format!("{dir}/{sha}");
        let old = match client.check_stat(&path).await? {
            Some(s) => now_ms - s.ctime > ORPHAN_AGE.as_millis() as i64,
            None => continue,
        };
        if !(old || gone.contains(&sha)) {
            continue;
        }
        let chunks = match client.list_children(&path).await {
            Ok(c) => c.into_iter().map(|c| format!("{path}/{c}")).collect(),
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        };
        doomed.push((path, chunks));
    }
    Ok(Some(doomed))
}

#[cfg(test)]
mod tests {
use crate::config::DEFAULT_MAX_CONFIG_SIZE;
use crate::model::content::ContentInfo;
use crate::model::content::Marker;
use crate::model::content::content_sha256;
    use super::*;

    #[test]
    fn markers_round_trip_and_raw_configs_are_not_markers() {
        let m = Marker { sha256: "ab".repeat(32), size: 5 << 20, chunks: 6 };
        assert_eq!(Marker::parse(&m.to_bytes()), Some(m.clone()));
        assert_eq!(content_sha256(&m.to_bytes()), m.sha256);
        assert_eq!(Marker::parse(b"worker_processes 4;\n"), None);
        assert_eq!(Marker::parse(b"zkcoord-chunked-v1 sha256=zz size=1 chunks=1\n"), None);
        assert_eq!(content_sha256(b"x"), crate::digest::sha256_hex(b"x"));
    }

    #[test]
    fn small_content_stays_inline_and_large_content_is_chunked() {
        let small = vec![b'x'; 10];
        let (h, body) = prepare("a", "me", None, &small, ContentInfo::default(), DEFAULT_MAX_CONFIG_SIZE).unwrap();
        assert_eq!((h.content.clone(), body.len()), (ContentInfo::default(), 10));
        let big = vec![b'x'; 2_500_000];
        let (h, body) = prepare("a", "me", None, &big, ContentInfo::default(), DEFAULT_MAX_CONFIG_SIZE).unwrap();
        assert!(body.is_empty());
        assert_eq!(h.content.chunks, Some(3));
        assert_eq!(h.size, 2_500_000);
        assert_eq!(h.sha256, crate::digest::sha256_hex(&big));
    }

    #[test]
    fn content_over_the_maximum_is_refused_naming_the_limit() {
        let e = prepare("a", "me", None, &vec![0; (2 << 20) + 1], ContentInfo::default(), 2 << 20).unwrap_err();
        assert!(e.contains("max_config_size = 2 MiB") && e.contains("2097152"), "{e}");
    }

    #[test]
    fn max_config_size_reads_bytes_or_units_and_bundle_keys_are_checked() {
        use crate::config::{parse_size, AppKind, Config};
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("500 KiB"), Some(500 << 10));
        assert_eq!(parse_size("1000000"), Some(1_000_000));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("lots"), None);
        let base = "role = \"app\"\n{top}\n[zookeeper]\nhosts = \"h:1\"\n[[app]]\nname = \"a\"\ndest = \"/tmp/x\"\n{app}\n";
        let load = |top: &str, app: &str| {
            Config::from_toml(std::path::Path::new("z.toml"), &base.replace("{top}", top).replace("{app}", app), |_| None)
        };
        let c = load("", "").unwrap();
        assert_eq!((c.max_config_size, c.apps[0].kind(), c.apps[0].published().unwrap().keep_local), (DEFAULT_MAX_CONFIG_SIZE, AppKind::File, 3));
        let c = load("max_config_size = \"8MiB\"", "kind = \"bundle\"\nkeep_local = 5").unwrap();
        assert_eq!((c.max_config_size, c.apps[0].kind(), c.apps[0].published().unwrap().keep_local), (8 << 20, AppKind::Bundle, 5));
        assert_eq!(load("max_config_size = 2000000", "").unwrap().max_config_size, 2_000_000);
        let e = load("max_config_size = \"huge\"", "").unwrap_err().to_string();
        assert!(e.contains("z.toml") && e.contains("max_config_size") && e.contains("64MiB"), "{e}");
        let e = load("", "kind = \"bundle\"\nkeep_local = 1").unwrap_err().to_string();
        assert!(e.contains("app[0].keep_local") && e.contains("at least 2"), "{e}");
        let e = load("", "kind = \"tree\"").unwrap_err().to_string();
        assert!(e.contains("kind"), "{e}");
    }

    #[test]
    fn plain_metadata_json_is_unchanged() {
        assert_eq!(serde_json::to_string(&ContentInfo::default()).unwrap(), "{}");
    }
}
