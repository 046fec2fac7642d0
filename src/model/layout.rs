//! Where every znode lives, and the one rule for "newest version".
//!
//! | znode | kind | holds |
//! |---|---|---|
//! | `<election>/worker<seq>` | EPHEMERAL_SEQUENTIAL | an agent's registration (JSON) |
//! | `<applications>/<app>/conf-<seq>` | PERSISTENT_SEQUENTIAL | a version's raw bytes |
//! | `<root>/requests/req-<seq>` | PERSISTENT_SEQUENTIAL | a publish request |
//! | `<root>/claims/req-<seq>` | EPHEMERAL | the leader handling a request (with `leaders > 1`) |
//! | `<root>/outcomes/req-<seq>` | PERSISTENT | what the leader made of a request (JSON) |
//! | `<root>/rollouts/<app>` | PERSISTENT | a staged rollout (JSON; see [`crate::model::rollout`]) |
//! | `<root>/reloads/<app>/lease-<seq>` | EPHEMERAL_SEQUENTIAL | a reload slot (see [`crate::app::pacing`]) |
//! | `<root>/meta/<app>/conf-<seq>` | PERSISTENT | a version's metadata (JSON) |
//! | `<root>/status/<app>/<node_id>` | EPHEMERAL | what a host applied (JSON) |
//! | `<root>/drain/<node_id>/<service>` | PERSISTENT | flag: this host's member of the service is drained |
//! | `/services/<service>/<node_id>` (or a configured path and name) | EPHEMERAL(_SEQUENTIAL) | a live member: `{"host", "port", ...}` |

/// Name prefix of version nodes.
pub const VERSION_PREFIX: &str = "conf-";
/// Name prefix of agent election nodes.
pub const WORKER_PREFIX: &str = "worker";
/// Name prefix of publish request nodes.
pub const REQUEST_PREFIX: &str = "req-";

/// The configured roots, resolved into paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Our own root (requests, outcomes, metadata, status).
    root: String,
    /// Parent of every application's versions.
    applications: String,
    /// Parent of the agents' election nodes.
    election: String,
    /// Apps whose `[[app]] path` puts their versions elsewhere than `<applications>/<app>`.
    app_paths: std::collections::BTreeMap<String, String>,
}

impl Layout {
    /// A layout from the three configured roots.
    pub fn new(root: &str, applications: &str, election: &str) -> Layout {
        Layout { root: root.into(), applications: applications.into(), election: election.into(), app_paths: Default::default() }
    }

    /// The same layout, with `app`'s versions at `path` (its `[[app]] path`).
    pub fn with_app_path(mut self, app: &str, path: &str) -> Layout {
        self.app_paths.insert(app.to_string(), path.to_string());
        self
    }

    /// Parent of election nodes.
    pub fn election(&self) -> &str {
        &self.election
    }
    /// Our own root.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// Parent of every application's metadata directory.
    pub fn meta_root(&self) -> String {
        format!("{}/meta", self.root)
    }
    /// Parent of every application's version node.
    pub fn applications(&self) -> &str {
        &self.applications
    }
    /// Parent of every application's status directory.
    pub fn status_root(&self) -> String {
        format!("{}/status", self.root)
    }
    /// Parent of `app`'s versions: its `[[app]] path` when the config names one.
    pub fn versions(&self, app: &str) -> String {
        match self.app_paths.get(app) {
            Some(p) => p.clone(),
            None => format!("{}/{}", self.applications, app),
        }
    }
    /// Parent of publish requests.
    pub fn requests(&self) -> String {
        format!("{}/requests", self.root)
    }
    /// Parent of request outcomes.
    pub fn outcomes(&self) -> String {
        format!("{}/outcomes", self.root)
    }
    /// The outcome node of request `req_name`.
    pub fn outcome(&self, req_name: &str) -> String {
        format!("{}/outcomes/{}", self.root, req_name)
    }
    /// Parent of request claims.
    pub fn claims(&self) -> String {
        format!("{}/claims", self.root)
    }
    /// The claim node a leader holds while it handles request `req_name`.
    pub fn claim(&self, req_name: &str) -> String {
        format!("{}/claims/{}", self.root, req_name)
    }
    /// Parent of `app`'s version metadata.
    pub fn meta(&self, app: &str) -> String {
        format!("{}/{}", self.meta_root(), app)
    }
    /// Parent of the freeze flags (see [`crate::model::freeze`]).
    pub fn freezes(&self) -> String {
        format!("{}/freeze", self.root)
    }
    /// The flag that freezes `name` (an app, or [`crate::model::freeze::ALL`]) while it exists.
    pub fn freeze(&self, name: &str) -> String {
        format!("{}/freeze/{name}", self.root)
    }
    /// The flag that takes `node`'s member of `service` out of rotation while it exists.
    pub fn drain(&self, node: &str, service: &str) -> String {
        format!("{}/drain/{node}/{service}", self.root)
    }
    /// Parent of `app`'s per-host status nodes.
    pub fn status(&self, app: &str) -> String {
        format!("{}/{}", self.status_root(), app)
    }
    /// Parent of every app's blobs (chunks of large configs).
    pub fn blobs(&self) -> String {
        format!("{}/blobs", self.root)
    }
    /// Parent of `app`'s blobs.
    pub fn app_blobs(&self, app: &str) -> String {
        format!("{}/{app}", self.blobs())
    }
    /// The blob holding the chunks of content `sha256` of `app`.
    pub fn blob(&self, app: &str, sha256: &str) -> String {
        format!("{}/{sha256}", self.app_blobs(app))
    }
    /// Parent of every application's rollout record.
    pub fn rollouts(&self) -> String {
        format!("{}/rollouts", self.root)
    }
    /// The rollout record of `app`.
    pub fn rollout(&self, app: &str) -> String {
        format!("{}/{app}", self.rollouts())
    }
    /// Parent of every app's reload leases.
    pub fn reloads(&self) -> String {
        format!("{}/reloads", self.root)
    }
    /// Where `app`'s reload leases live.
    pub fn app_reloads(&self, app: &str) -> String {
        format!("{}/{app}", self.reloads())
    }
}

/// Name prefix of the chunk nodes of a blob.
pub const CHUNK_PREFIX: &str = "chunk-";

/// Chunk `i` of `blob`.
pub fn chunk(blob: &str, i: u32) -> String {
    format!("{blob}/{CHUNK_PREFIX}{i:04}")
}

/// A version node: its name and the sequence number that orders it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionId {
    /// Ordering key: the numeric suffix.
    pub seq: u64,
    /// The node name, e.g. `conf-0000000012`.
    pub name: String,
}

impl VersionId {
    /// Parses a version name, or None if it is not one.
    pub fn parse(name: &str) -> Option<VersionId> {
        sequence_of(name, VERSION_PREFIX).map(|seq| VersionId { seq, name: name.to_string() })
    }
    /// The canonical name for sequence number `seq`.
    pub fn from_seq(seq: u64) -> VersionId {
        VersionId { seq, name: format!("{VERSION_PREFIX}{seq:010}") }
    }
}

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The numeric suffix of `name` after `prefix`, if `name` is `prefix` + digits.
/// Sorting by this, never by the whole name, is what makes sequence order right.
pub fn sequence_of(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Children named `prefix<digits>`, sorted by their number; other names are ignored.
pub fn sorted_by_sequence<'a>(children: &'a [String], prefix: &str) -> Vec<(u64, &'a str)> {
    let mut v: Vec<(u64, &str)> =
        children.iter().filter_map(|c| sequence_of(c, prefix).map(|s| (s, c.as_str()))).collect();
    v.sort_unstable();
    v
}

/// All versions among `children`, oldest first.
pub fn versions(children: &[String]) -> Vec<VersionId> {
    sorted_by_sequence(children, VERSION_PREFIX).into_iter().map(|(seq, n)| VersionId { seq, name: n.into() }).collect()
}

/// The newest version among `children`: the largest numeric suffix. Gaps are normal.
pub fn newest_version(children: &[String]) -> Option<VersionId> {
    children.iter().filter_map(|c| VersionId::parse(c)).max()
}

/// The sequence number ZooKeeper gives the next sequential child of a node whose stat says
/// `cversion` and `num_children`: a PERSISTENT_SEQUENTIAL create of `conf-` under it now would
/// be named `conf-<this, 10 digits>`.
///
/// The server names a sequential node after the parent's internal child version, which counts
/// child *creations* only. The `cversion` a client reads counts creations and deletions
/// (ZooKeeper's `DataNode.copyStat` reports `2 * creations - children`), so after deletions
/// (pruning) it runs ahead of the next name; `(cversion + children) / 2` is the creations
/// count again. Seen on ZooKeeper 3.8: three creates and two deletes read as cversion 5 with one
/// child, and the next sequential create was named `...0000000003`.
///
/// Why the leader wants it: a plain create of exactly this name, together with the version's
/// metadata in one multi-op, is indistinguishable from the sequential create it replaces (the
/// counter moves on by one either way), and fails atomically (NodeExists) when a plain client's
/// sequential create took the number first.
pub fn next_sequence(cversion: i32, num_children: i32) -> u64 {
    ((i64::from(cversion) + i64::from(num_children)).max(0) / 2) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn newest_is_the_largest_suffix_despite_gaps_and_strangers() {
        let c = names(&["conf-0000000009", "conf-0000000012", "lock", "conf-x", "conf-0000000010"]);
        assert_eq!(newest_version(&c).unwrap().name, "conf-0000000012");
        assert_eq!(newest_version(&names(&["other"])), None);
    }

    #[test]
    fn sequence_order_is_numeric_not_lexical() {
        let c = names(&["worker10000000000", "worker9999999999", "worker0000000001"]);
        let sorted: Vec<&str> = sorted_by_sequence(&c, WORKER_PREFIX).into_iter().map(|(_, n)| n).collect();
        assert_eq!(sorted, vec!["worker0000000001", "worker9999999999", "worker10000000000"]);
    }

    #[test]
    fn app_names_are_refused_with_the_reason() {
        assert!(validate_app_name("nginx.conf-2_b").is_ok());
        assert!(validate_app_name(&"a".repeat(MAX_APP_NAME)).is_ok());
        let long = validate_app_name(&"a".repeat(MAX_APP_NAME + 1)).unwrap_err().to_string();
        assert!(long.contains("129 characters long; the limit is 128"), "{long}");
        assert!(validate_app_name("..").unwrap_err().to_string().contains("path segment"));
        assert!(validate_app_name("a/b").unwrap_err().to_string().contains("a character other than"));
        assert!(validate_app_name("").unwrap_err().to_string().contains("is empty"));
    }

    #[test]
    fn the_next_sequence_number_counts_creations_not_deletions() {
        // As ZooKeeper 3.8 answered: 3 creates, 2 deletes -> cversion 5, 1 child; next ...03.
        assert_eq!(next_sequence(5, 1), 3);
        // Then one sequential and one plain create: cversion 7, 3 children; next ...05.
        assert_eq!(next_sequence(7, 3), 5);
        assert_eq!(next_sequence(0, 0), 0);
        assert_eq!(next_sequence(2, 2), 2);
    }

    #[test]
    fn version_names_round_trip() {
        assert_eq!(VersionId::from_seq(12).name, "conf-0000000012");
        assert_eq!(VersionId::parse("conf-0000000012").unwrap().seq, 12);
        assert!(VersionId::parse("conf-").is_none());
    }
}


/// The longest app name: it becomes znode and file names, which have limits of their own.
pub const MAX_APP_NAME: usize = 128;

/// App names become znode and file names, so they are kept to a safe alphabet and length.
pub fn validate_app_name(name: &str) -> Result<(), BadAppName> {
    let why = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > MAX_APP_NAME {
        Some(format!("is {} characters long; the limit is {MAX_APP_NAME}", name.len()))
    } else if name == "." || name == ".." {
        Some("is a path segment (`.` or `..`), not a name".to_string())
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Some("holds a character other than letters, digits, '-', '_' or '.'".to_string())
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(BadAppName { name: name.to_string(), why }),
    }
}

/// An app name that cannot be one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a name of letters, digits, '-', '_' or '.' (at most {MAX_APP_NAME}); {name:?} {why}")]
pub struct BadAppName {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub why: String,
}

impl From<BadAppName> for String {
    fn from(e: BadAppName) -> String {
        e.to_string()
    }
}
