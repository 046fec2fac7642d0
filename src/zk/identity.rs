//! Who may do what in ZooKeeper. Whoever can write a version runs commands as root on every
//! host, so with `[acl] enabled` every node we create carries an ACL: its creator (our
//! authenticated digest identity) may do everything, everyone may read, and only the roles
//! named in the config may create the nodes that are theirs:
//!
//! | node | create children | everything else |
//! |---|---|---|
//! | version parents, `meta`, `claims` | agents | creator |
//! | `requests` | agents and publishers | creator |
//! | `blobs`, `blobs/<app>`, `blobs/<app>/<sha256>` | agents and publishers (chunks of large configs) | creator; agents may delete (pruning) |
//! | `outcomes` | agents (publishers may delete the answer they read) | creator |
//! | `status/<app>` | agents and app hosts (create only: no host may delete another's node) | agents |
//! | a service's members parent (`/services/<name>`) | agents and app hosts | creator |
//! | `drain`, `drain/<node>` | agents and publishers (`zkcoordctl drain`) | creator |
//! | election parent | agents | creator |
//! | versions, metadata, requests, status nodes, service members | — | creator (an app host writes only its own status) |
//! | `rollouts/<app>` | — | agents; publishers may write (promote, abort) |
//! | `reloads/<app>` (reload leases) | agents and app hosts | agents |
//!
//! Everyone keeps READ: versions are what every host applies, and status is for everyone to see.
//!
//! Parents carry exactly the policy's list (no `auth` entry for their creator): a parent an app
//! host or a publisher had to create itself (a status directory of an app no agent knows, a
//! blob directory) must not give its creator more than its role. Leaves keep `auth`, which
//! ZooKeeper stores as the creator's real identities: that is how a status node names its host.
//!
//! A node that exists is trusted only if its ACL is the policy's: [`AclPolicy::verdict`] is the
//! one comparison (leaders and `zkcoordctl acl init` repair by it, app hosts refuse by it), and
//! [`AclPolicy::status_owner`] the one rule by which readers trust a status node.

use crate::config::{acl_identity as identity, AclConfig, AuthScheme, Config, ConfigError};
use std::path::Path;
use zookeeper_client as zk;

/// Digest credentials read from the `auth_file`: `user:password` on one line.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `user:password`, as ZooKeeper's digest scheme wants it.
    pub user_password: String,
    /// How the session proves it: `addauth digest`, or SASL DIGEST-MD5 with the same secret.
    pub scheme: AuthScheme,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.user_password.split(':').next().unwrap_or_default();
        write!(f, "Credentials({}:{user}:***)", self.scheme.as_str())
    }
}

impl Credentials {
    /// Reads `path`, refusing a file that group or others can read (the secret is root's).
    pub fn load(path: &Path, scheme: AuthScheme) -> Result<Credentials, crate::secret::SecretError> {
        Ok(Credentials { user_password: crate::secret::load_user_password(path)?, scheme })
    }
}

/// ZooKeeper's digest identity for `user:password`, as `zkcoordctl acl digest` prints it and as
/// the `[acl]` lists name roles.
pub fn digest_id(user_password: &str) -> String {
    use base64::Engine;
    use sha1::Digest;
    let user = user_password.split(':').next().unwrap_or_default();
    let hash = sha1::Sha1::digest(user_password.as_bytes());
    format!("{user}:{}", base64::engine::general_purpose::STANDARD.encode(hash))
}

/// What kind of node is being created, which decides its ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Structural parents only agents create children in (version parents, meta, claims,
    /// outcomes, the election parent).
    AgentParent,
    /// The requests parent: publishers create requests in it.
    RequestsParent,
    /// The outcomes parent: publishers delete the outcome they have read.
    OutcomesParent,
    /// Blob parents (`blobs`, `blobs/<app>`, `blobs/<app>/<sha256>`): publishers create the
    /// chunks of large configs in them, agents prune them.
    Blobs,
    /// A status directory: app hosts create their status nodes in it.
    StatusParent,
    /// A service's members directory: hosts (agents and app hosts) register members in it.
    /// Members stay world-readable, so any client or script can discover them.
    ServiceParent,
    /// The drain flags' parents (`<root>/drain`, `<root>/drain/<node>`): publishers (operators)
    /// set and clear flags; daemons only read them.
    DrainParent,
    /// The freeze flags' parent (`<root>/freeze`): publishers (operators) set and clear
    /// flags; daemons only read them.
    FreezeParent,
    /// A leaf we own: version, metadata, request, outcome, claim, status, election node.
    Owned,
    /// A rollout record: the leader writes it, publishers may promote or abort it.
    Rollout,
    /// A reload-lease directory (`reloads`, `reloads/<app>`): app hosts create and delete
    /// their own leases in it (a lease is gone the moment its install is over).
    LeaseParent,
}

/// The ACL policy from the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclPolicy {
    /// Off: every node is world-writable, as plain ZooKeeper clients create them.
    pub enabled: bool,
    /// Digest identities (`user:hash`) of agents.
    pub agents: Vec<String>,
    /// Digest identities of app hosts.
    pub apps: Vec<String>,
    /// Digest identities of publishers.
    pub publishers: Vec<String>,
}

impl AclPolicy {
    /// The policy the `[acl]` section asks for.
    pub fn of(section: &AclConfig) -> AclPolicy {
        AclPolicy { enabled: section.enabled, agents: section.agents.clone(), apps: section.apps.clone(), publishers: section.publishers.clone() }
    }

    /// The ACL for a node of `kind`.
    pub fn acl_for(&self, kind: NodeKind) -> Vec<zk::Acl> {
        use zk::Permission as P;
        if !self.enabled {
            return zk::Acls::anyone_all().to_vec();
        }
        let leaf = matches!(kind, NodeKind::Owned | NodeKind::Rollout);
        let mut acl = Vec::new();
        // Leaves belong to their creator; parents to the agents alone (see the module doc).
        // Without any agent listed, a parent would be writable by no one: keep its creator.
        if leaf || self.agents.is_empty() {
            acl.push(zk::Acl::new(P::ALL, zk::AuthId::new("auth", "")));
        }
        acl.push(zk::Acl::new(P::READ, zk::AuthId::anyone()));
        let grant = |acl: &mut Vec<zk::Acl>, ids: &[String], perm: zk::Permission| {
            for id in ids {
                let (scheme, id) = identity(id);
                acl.push(zk::Acl::new(perm, zk::AuthId::new(scheme, id)));
            }
        };
        match kind {
            NodeKind::AgentParent => grant(&mut acl, &self.agents, P::ALL),
            NodeKind::RequestsParent => {
                grant(&mut acl, &self.agents, P::ALL);
                grant(&mut acl, &self.publishers, P::CREATE | P::READ);
            }
            NodeKind::Blobs => {
                grant(&mut acl, &self.agents, P::ALL);
                grant(&mut acl, &self.publishers, P::CREATE | P::READ);
            }
            NodeKind::OutcomesParent => {
                grant(&mut acl, &self.agents, P::ALL);
                grant(&mut acl, &self.publishers, P::DELETE | P::READ);
            }
            // CREATE without DELETE: DELETE on the parent is what would let one host delete
            // another's live status node and put a forged one in its place.
            NodeKind::StatusParent => {
                grant(&mut acl, &self.agents, P::ALL);
                grant(&mut acl, &self.apps, P::CREATE | P::READ);
            }
            NodeKind::ServiceParent | NodeKind::LeaseParent => {
                grant(&mut acl, &self.agents, P::ALL);
                grant(&mut acl, &self.apps, P::CREATE | P::DELETE | P::READ);
            }
            NodeKind::DrainParent | NodeKind::FreezeParent => {
                grant(&mut acl, &self.agents, P::ALL);
                grant(&mut acl, &self.publishers, P::CREATE | P::DELETE | P::READ);
            }
            NodeKind::Owned => {}
            NodeKind::Rollout => {
                grant(&mut acl, &self.agents, P::ALL);
                grant(&mut acl, &self.publishers, P::WRITE | P::READ);
            }
        }
        acl
    }
}

/// How an existing node's ACL compares with the one the policy gives its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclVerdict {
    /// Exactly what the policy grants (READ for everyone, the listed roles' rights).
    Ok,
    /// Someone holds a right beyond READ that the policy does not give them on this kind of
    /// node (`world:anyone` ALL, a host with DELETE on a status directory): nothing created
    /// under it while it was so can be trusted. The text names the offending entries.
    Unsafe(String),
    /// Nobody holds more than the policy says, but a listed identity lacks a right it should
    /// have (a role added to the config later): a repair is due, trust is not at stake.
    Incomplete(String),
}

/// `cdrwa`-style letters, as zkCli prints permissions.
pub fn perm_letters(p: zk::Permission) -> String {
    use zk::Permission as P;
    [(P::CREATE, 'c'), (P::DELETE, 'd'), (P::READ, 'r'), (P::WRITE, 'w'), (P::ADMIN, 'a')]
        .into_iter()
        .filter(|(bit, _)| p.has(*bit))
        .map(|(_, c)| c)
        .collect()
}

/// An ACL as operators read it: `world:anyone:cdrwa, digest:agent:x:cdrwa`.
pub fn describe(acl: &[zk::Acl]) -> String {
    if acl.is_empty() {
        return "(empty)".into();
    }
    acl.iter().map(|a| format!("{}:{}:{}", a.scheme(), a.id(), perm_letters(a.permission()))).collect::<Vec<_>>().join(", ")
}

/// Whether an ACL entry's identity (`scheme`, `id`, as getACL returned it) is the policy entry
/// `entry`. ZooKeeper masks digest hashes (`user:x`) for readers without ADMIN on the node, so a
/// masked digest id matches by user name alone.
pub fn same_identity(scheme: &str, id: &str, entry: &str) -> bool {
    let (want_scheme, want_id) = identity(entry);
    if scheme != want_scheme {
        return false;
    }
    if scheme != "digest" {
        return id == want_id;
    }
    match (id.split_once(':'), want_id.split_once(':')) {
        (Some((user, "x")), Some((want_user, _))) => user == want_user,
        _ => id == want_id,
    }
}

/// The name an identity goes by, to compare with a status node's name: the digest or SASL
/// user, or the certificate's CN.
fn identity_name(scheme: &str, id: &str) -> String {
    match scheme {
        "digest" => id.split(':').next().unwrap_or_default().to_string(),
        "x509" => id
            .split(',')
            .find_map(|part| part.trim().strip_prefix("CN="))
            .unwrap_or(id)
            .to_string(),
        _ => id.to_string(),
    }
}

fn bits(p: zk::Permission) -> i32 {
    use zk::Permission as P;
    [(P::READ, 1), (P::WRITE, 2), (P::CREATE, 4), (P::DELETE, 8), (P::ADMIN, 16)].into_iter().filter(|(perm, _)| p.has(*perm)).map(|(_, b)| b).sum()
}

fn perm_of(bits: i32) -> zk::Permission {
    use zk::Permission as P;
    [(1, P::READ), (2, P::WRITE), (4, P::CREATE), (8, P::DELETE), (16, P::ADMIN)]
        .into_iter()
        .filter(|(b, _)| bits & b != 0)
        .fold(P::NONE, |acc, (_, p)| acc | p)
}

impl AclPolicy {
    /// The identities (as `[acl]` list entries, plus `world:anyone`) and rights the policy gives
    /// on a parent of `kind`, without the creator's `auth` entry.
    fn grants(&self, kind: NodeKind) -> Vec<(String, zk::Permission)> {
        self.acl_for(kind)
            .into_iter()
            .filter(|a| a.scheme() != "auth")
            .map(|a| {
                let entry = if a.scheme() == "digest" { a.id().to_string() } else { format!("{}:{}", a.scheme(), a.id()) };
                (entry, a.permission())
            })
            .collect()
    }

    /// The rights the policy gives identity (`scheme`, `id`) on a parent of `kind`.
    fn allowed(&self, kind: NodeKind, scheme: &str, id: &str) -> i32 {
        self.grants(kind)
            .iter()
            .filter(|(entry, _)| if entry == "world:anyone" { scheme == "world" && id == "anyone" } else { same_identity(scheme, id, entry) })
            .map(|(_, p)| bits(*p))
            .fold(0, |a, b| a | b)
    }

    /// Compares the ACL `found` on an existing parent of `kind` with the policy's: the one
    /// comparison behind repairs (leaders, `zkcoordctl acl init`) and refusals (app hosts).
    /// Only for parents: leaves belong to whoever created them.
    pub fn verdict(&self, kind: NodeKind, found: &[zk::Acl]) -> AclVerdict {
        if !self.enabled {
            return AclVerdict::Ok;
        }
        let read = bits(zk::Permission::READ);
        let excess: Vec<String> = found
            .iter()
            .filter_map(|a| {
                let extra = bits(a.permission()) & !self.allowed(kind, a.scheme(), a.id()) & !read;
                (extra != 0).then(|| format!("{}:{}:{}", a.scheme(), a.id(), perm_letters(a.permission())))
            })
            .collect();
        if !excess.is_empty() {
            return AclVerdict::Unsafe(format!("allows {}", excess.join(", ")));
        }
        let missing: Vec<String> = self
            .grants(kind)
            .into_iter()
            .filter_map(|(entry, want)| {
                let (scheme, _) = identity(&entry);
                let held = found
                    .iter()
                    .filter(|a| if entry == "world:anyone" { a.scheme() == "world" && a.id() == "anyone" } else { a.scheme() == scheme && same_identity(a.scheme(), a.id(), &entry) })
                    .map(|a| bits(a.permission()))
                    .fold(0, |x, y| x | y);
                let lacking = bits(want) & !held;
                (lacking != 0).then(|| format!("{entry}:{}", perm_letters(perm_of(lacking))))
            })
            .collect();
        if missing.is_empty() {
            AclVerdict::Ok
        } else {
            AclVerdict::Incomplete(format!("lacks {}", missing.join(", ")))
        }
    }

    /// The ACL a parent of `kind` should carry when it is repaired: the policy's list, with the
    /// creator's `auth` entry only when no agent is listed.
    pub fn repair_acl(&self, kind: NodeKind) -> Vec<zk::Acl> {
        self.acl_for(kind)
    }

    /// Whether the status node `node` (a host's node id) with ACL `acl` may be believed: every
    /// identity holding more than READ must be an app host (or agent, for `role = "both"`) of
    /// the policy, at least one must, and when some policy identity goes by the node's name
    /// (digest or SASL user, certificate CN), it must be that one. Err says why not, naming
    /// the identity: `untrusted: ACL names digest:web-2`. The one rule `zkcoordctl status`,
    /// `publish --wait` and the rollout supervisor use.
    pub fn status_owner(&self, node: &str, acl: &[zk::Acl]) -> Result<(), Untrusted> {
        if !self.enabled {
            return Ok(());
        }
        let hosts: Vec<&String> = self.apps.iter().chain(self.agents.iter()).collect();
        let named: Vec<&&String> = hosts
            .iter()
            .filter(|e| {
                let (scheme, id) = identity(e);
                identity_name(scheme, id) == node
            })
            .collect();
        let writers: Vec<&zk::Acl> = acl.iter().filter(|a| bits(a.permission()) & !bits(zk::Permission::READ) != 0).collect();
        if writers.is_empty() {
            return Err(Untrusted::NoWriter);
        }
        for w in writers {
            let ok = if named.is_empty() {
                hosts.iter().any(|e| same_identity(w.scheme(), w.id(), e))
            } else {
                named.iter().any(|e| same_identity(w.scheme(), w.id(), e))
            };
            if !ok {
                let id = match (w.scheme(), w.id().split_once(':')) {
                    ("digest", Some((user, _))) => format!("digest:{user}"),
                    _ => format!("{}:{}", w.scheme(), w.id()),
                };
                return Err(Untrusted::Writer(id));
            }
        }
        Ok(())
    }
}

/// Why a status node is not believed: it does not say it was written by the host it is named
/// after.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    /// Nobody may write it: not a node any host made.
    #[error("untrusted: ACL names no writer")]
    NoWriter,
    /// Another identity (`digest:web-2`) may write it.
    #[error("untrusted: ACL names {0}")]
    Writer(String),
}

impl From<Untrusted> for String {
    fn from(e: Untrusted) -> String {
        e.to_string()
    }
}

impl NodeKind {
    /// What a missing ancestor of a node of this kind is created as. A service's ancestors
    /// (`/services`) are service parents, so that any host may register another service;
    /// everything else's are the agents'.
    pub fn ancestors(self) -> NodeKind {
        match self {
            NodeKind::ServiceParent => NodeKind::ServiceParent,
            _ => NodeKind::AgentParent,
        }
    }
}

/// This process's ZooKeeper identity and policy, set once at start-up from the config.
static IDENTITY: std::sync::OnceLock<(AclPolicy, Option<Credentials>)> = std::sync::OnceLock::new();

/// Sets this process's credentials and ACL policy (the first call wins; later calls are ignored,
/// so a reload cannot change who we are mid-session).
pub fn install(policy: AclPolicy, credentials: Option<Credentials>) {
    let _ = IDENTITY.set((policy, credentials));
}

/// The ACL policy this process runs with, when one was installed.
pub fn policy() -> Option<&'static AclPolicy> {
    IDENTITY.get().map(|(p, _)| p).filter(|p| p.enabled)
}

/// The credentials every session authenticates with, if any.
pub fn credentials() -> Option<&'static Credentials> {
    IDENTITY.get().and_then(|(_, c)| c.as_ref())
}

/// The ACL for a node of `kind` under this process's policy (open when none was installed).
pub fn for_node(kind: NodeKind) -> Vec<zk::Acl> {
    match IDENTITY.get() {
        Some((p, _)) => p.acl_for(kind),
        None => zk::Acls::anyone_all().to_vec(),
    }
}

/// Installs the identity and policy a config names (used by both binaries), with the TLS
/// options that go with them.
pub fn install_from(config: &Config) {
    let credentials = config.zookeeper.auth_file.as_deref().and_then(|f| Credentials::load(f, config.zookeeper.auth_scheme).ok());
    install(AclPolicy::of(&config.acl), credentials);
    crate::zk::tls::install(config.zookeeper.tls.as_ref().and_then(|t| crate::zk::tls::build(t).ok()));
}

/// Loads and validates the config at `path`, then checks what only this layer can build: the
/// TLS options from the `[zookeeper.tls]` files (their errors name the key, as the file's own
/// do). `zkcoordd` (at start, `--check-config` and SIGHUP) and `zkcoordctl` load through here.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    if let Some(tls) = &config.zookeeper.tls {
        crate::zk::tls::build(tls).map_err(|e| ConfigError::invalid(path, "zookeeper.tls", &e.to_string()))?;
    }
    Ok(config)
}

/// Turns NoAuth into a message that names the node, the action and who we are.
pub fn explain(e: &zk::Error, path: &str, action: &str) -> Option<String> {
    matches!(e, zk::Error::NoAuth).then(|| explain_noauth(path, action, credentials()))
}

/// Says which node and which permission when ZooKeeper answers NoAuth.
pub fn explain_noauth(path: &str, action: &str, who: Option<&Credentials>) -> String {
    let as_whom = match who {
        Some(c) => format!("authenticated as {}:{}", c.scheme.as_str(), c.user_password.split(':').next().unwrap_or_default()),
        None => "not authenticated (set [zookeeper] auth_file)".to_string(),
    };
    format!("not authorized to {action} {path} ({as_whom}); see `zkcoordctl acl` and SECURITY.md")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn digest_ids_match_zookeepers_digest_authentication_provider() {
        // What ZooKeeper 3.8's DigestAuthenticationProvider prints for super:secret.
        assert_eq!(digest_id("super:secret"), "super:lK75jTNcA+U9vtVEw5vB51mj/w4=");
    }

    #[test]
    fn a_secret_file_readable_by_others_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth");
        std::fs::write(&p, "agent:s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Credentials::load(&p, AuthScheme::Digest).unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::load(&p, AuthScheme::Digest).unwrap();
        assert_eq!(c.user_password, "agent:s3cret");
        assert_eq!(format!("{c:?}"), "Credentials(digest:agent:***)");
        std::fs::write(&p, "nocolon\n").unwrap();
        assert!(Credentials::load(&p, AuthScheme::Sasl).unwrap_err().to_string().contains("user:password"));
    }

    #[test]
    fn open_policy_is_world_all_and_secure_policy_grants_by_role() {
        assert_eq!(AclPolicy::default().acl_for(NodeKind::Owned), zk::Acls::anyone_all().to_vec());
        let p = AclPolicy { enabled: true, agents: vec!["agent:x".into()], apps: vec!["app:y".into()], publishers: vec!["ops:z".into()] };
        let owned = p.acl_for(NodeKind::Owned);
        assert_eq!(owned.len(), 2);
        let req = p.acl_for(NodeKind::RequestsParent);
        assert!(req.iter().any(|a| a.id() == "ops:z" && a.permission().has(zk::Permission::CREATE) && !a.permission().has(zk::Permission::WRITE)));
        let blobs = p.acl_for(NodeKind::Blobs);
        assert!(blobs.iter().any(|a| a.id() == "ops:z" && a.permission().has(zk::Permission::CREATE) && !a.permission().has(zk::Permission::DELETE)));
        assert!(blobs.iter().any(|a| a.id() == "agent:x" && a.permission().has(zk::Permission::DELETE)));
        assert!(!blobs.iter().any(|a| a.id() == "app:y"));
        let status = p.acl_for(NodeKind::StatusParent);
        assert!(status.iter().any(|a| a.id() == "app:y" && a.permission().has(zk::Permission::CREATE)));
        assert!(!status.iter().any(|a| a.id() == "ops:z"));
        let services = p.acl_for(NodeKind::ServiceParent);
        assert!(services.iter().any(|a| a.id() == "app:y" && a.permission().has(zk::Permission::CREATE)));
        let drain = p.acl_for(NodeKind::DrainParent);
        assert!(drain.iter().any(|a| a.id() == "ops:z" && a.permission().has(zk::Permission::DELETE) && !a.permission().has(zk::Permission::WRITE)));
        assert!(!drain.iter().any(|a| a.id() == "app:y"), "a host cannot undrain itself");
        assert_eq!(p.acl_for(NodeKind::FreezeParent), drain, "publishers freeze and unfreeze; a host cannot unfreeze itself");
        assert_eq!(NodeKind::ServiceParent.ancestors(), NodeKind::ServiceParent);
        assert_eq!(NodeKind::StatusParent.ancestors(), NodeKind::AgentParent);
        let p = AclPolicy { enabled: true, agents: vec!["sasl:agent".into(), "x509:CN=a,O=ops".into()], ..Default::default() };
        let ids: Vec<_> = p.acl_for(NodeKind::AgentParent).iter().map(|a| (a.scheme().to_string(), a.id().to_string())).collect();
        assert!(ids.contains(&("sasl".into(), "agent".into())) && ids.contains(&("x509".into(), "CN=a,O=ops".into())), "{ids:?}");
    }

    fn policy() -> AclPolicy {
        AclPolicy {
            enabled: true,
            agents: vec!["agent:AAAA".into()],
            apps: vec!["web-1:W1W1".into(), "web-2:W2W2".into(), "x509:CN=web-3,O=ops".into()],
            publishers: vec!["ops:OPOP".into()],
        }
    }

    fn entry(scheme: &str, id: &str, p: zk::Permission) -> zk::Acl {
        zk::Acl::new(p, zk::AuthId::new(scheme, id))
    }

    #[test]
    fn parents_carry_no_creator_entry_and_status_parents_give_hosts_no_delete() {
        let p = policy();
        for kind in [NodeKind::AgentParent, NodeKind::StatusParent, NodeKind::Blobs, NodeKind::LeaseParent] {
            assert!(!p.acl_for(kind).iter().any(|a| a.scheme() == "auth"), "{kind:?}");
        }
        let status = p.acl_for(NodeKind::StatusParent);
        let web1 = status.iter().find(|a| a.id() == "web-1:W1W1").unwrap();
        assert_eq!(perm_letters(web1.permission()), "cr");
        let leases = p.acl_for(NodeKind::LeaseParent);
        assert!(leases.iter().any(|a| a.id() == "web-1:W1W1" && a.permission().has(zk::Permission::DELETE)));
        assert!(AclPolicy { enabled: true, ..Default::default() }.acl_for(NodeKind::AgentParent).iter().any(|a| a.scheme() == "auth"));
    }

    #[test]
    fn verdict_tells_the_policys_acl_from_an_open_or_a_short_one() {
        use zk::Permission as P;
        let p = policy();
        assert_eq!(p.verdict(NodeKind::AgentParent, &p.acl_for(NodeKind::AgentParent)), AclVerdict::Ok);
        // As an app host reads it: digest hashes masked.
        let masked = [entry("digest", "agent:x", P::ALL), entry("world", "anyone", P::READ)];
        assert_eq!(p.verdict(NodeKind::AgentParent, &masked), AclVerdict::Ok);
        // What a plain client's makepath leaves.
        let open = [entry("world", "anyone", P::ALL)];
        assert_eq!(p.verdict(NodeKind::AgentParent, &open), AclVerdict::Unsafe("allows world:anyone:cdrwa".into()));
        // A publisher with CREATE where only agents create; a real hash that is not the agent's.
        let publisher = [entry("digest", "agent:AAAA", P::ALL), entry("digest", "ops:OPOP", P::CREATE | P::READ), entry("world", "anyone", P::READ)];
        assert!(matches!(p.verdict(NodeKind::AgentParent, &publisher), AclVerdict::Unsafe(w) if w.contains("digest:ops:OPOP:cr")));
        let forged = [entry("digest", "agent:EVIL", P::ALL), entry("world", "anyone", P::READ)];
        assert!(matches!(p.verdict(NodeKind::AgentParent, &forged), AclVerdict::Unsafe(_)));
        // A status directory from before the fix: hosts may delete each other's nodes.
        let mut old_status: Vec<zk::Acl> = vec![entry("digest", "agent:AAAA", P::ALL), entry("world", "anyone", P::READ)];
        old_status.push(entry("digest", "web-1:W1W1", P::CREATE | P::DELETE | P::READ));
        assert!(matches!(p.verdict(NodeKind::StatusParent, &old_status), AclVerdict::Unsafe(w) if w.contains("web-1:W1W1:cdr")));
        // Missing a listed identity: incomplete, not unsafe.
        let short = [entry("digest", "agent:AAAA", P::ALL), entry("world", "anyone", P::READ), entry("digest", "web-1:W1W1", P::CREATE | P::READ)];
        match p.verdict(NodeKind::StatusParent, &short) {
            AclVerdict::Incomplete(w) => assert!(w.contains("web-2:W2W2:cr") && w.contains("x509:CN=web-3,O=ops:cr"), "{w}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(p.verdict(NodeKind::AgentParent, &[]), AclVerdict::Incomplete(_)));
        assert_eq!(AclPolicy::default().verdict(NodeKind::AgentParent, &open), AclVerdict::Ok, "ACLs off: nothing to judge");
        assert_eq!(describe(&masked), "digest:agent:x:cdrwa, world:anyone:r");
    }

    #[test]
    fn a_status_node_is_believed_only_when_its_writer_is_the_host_it_names() {
        use zk::Permission as P;
        let p = policy();
        let r = entry("world", "anyone", P::READ);
        let own = [entry("digest", "web-1:x", P::ALL), r.clone()];
        assert_eq!(p.status_owner("web-1", &own), Ok(()));
        let forged = [entry("digest", "web-2:x", P::ALL), r.clone()];
        assert_eq!(p.status_owner("web-1", &forged), Err(Untrusted::Writer("digest:web-2".into())));
        // A name no identity goes by: any host identity will do (one shared app identity).
        assert_eq!(p.status_owner("db-9", &forged), Ok(()));
        assert_eq!(p.status_owner("web-1", &[entry("world", "anyone", P::ALL)]), Err(Untrusted::Writer("world:anyone".into())));
        assert_eq!(p.status_owner("web-1", &[entry("digest", "ops:x", P::ALL), r.clone()]), Err(Untrusted::Writer("digest:ops".into())));
        assert_eq!(p.status_owner("web-3", &[entry("x509", "CN=web-3,O=ops", P::ALL), r.clone()]), Ok(()));
        assert!(p.status_owner("web-3", &[entry("x509", "CN=web-1,O=ops", P::ALL), r.clone()]).is_err());
        assert!(p.status_owner("web-1", std::slice::from_ref(&r)).is_err(), "nobody wrote it");
        assert_eq!(AclPolicy::default().status_owner("web-1", &forged), Ok(()));
    }
}
