//! The `[acl]` section: who may do what, by identity.

use serde::Deserialize;


/// The `[acl]` section: ACLs on every node we create, by role (see SECURITY.md).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// On: nodes are writable only by their creator and the roles below; readable by all.
    #[serde(default)]
    pub enabled: bool,
    /// Digest identities (`user:base64sha1`, from `zkcoordctl acl digest user:password`) of agents.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Digest identities of app hosts (they may create their status nodes).
    #[serde(default)]
    pub apps: Vec<String>,
    /// Digest identities of publishers (they may create publish requests, nothing else).
    #[serde(default)]
    pub publishers: Vec<String>,
}

/// Splits an `[acl]` list entry into ZooKeeper scheme and id: `sasl:web1` and
/// `x509:CN=web1,O=ops` name those schemes; anything else is a digest identity `user:hash`.
pub fn acl_identity(entry: &str) -> (&'static str, &str) {
    for scheme in ["sasl", "x509"] {
        if let Some(id) = entry.strip_prefix(scheme).and_then(|r| r.strip_prefix(':')) {
            return (scheme, id);
        }
    }
    ("digest", entry.strip_prefix("digest:").unwrap_or(entry))
}
