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
//! | `status/<app>` | agents and app hosts | creator |
//! | a service's members parent (`/services/<name>`) | agents and app hosts | creator |
//! | `drain`, `drain/<node>` | agents and publishers (`zkcoordctl drain`) | creator |
//! | election parent | agents | creator |
//! | versions, metadata, requests, status nodes, service members | — | creator (an app host writes only its own status) |
//! | `rollouts/<app>` | — | agents; publishers may write (promote, abort) |
//! | `reloads/<app>` (reload leases) | agents and app hosts | creator |
//!
//! Everyone keeps READ: versions are what every host applies, and status is for everyone to see.

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
    pub fn load(path: &Path, scheme: AuthScheme) -> Result<Credentials, String> {
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
    /// A leaf we own: version, metadata, request, outcome, claim, status, election node.
    Owned,
    /// A rollout record: the leader writes it, publishers may promote or abort it.
    Rollout,
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
        let mut acl = vec![
            zk::Acl::new(P::ALL, zk::AuthId::new("auth", "")),
            zk::Acl::new(P::READ, zk::AuthId::anyone()),
        ];
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
            NodeKind::StatusParent | NodeKind::ServiceParent => {
                grant(&mut acl, &self.agents, P::ALL);
                grant(&mut acl, &self.apps, P::CREATE | P::DELETE | P::READ);
            }
            NodeKind::DrainParent => {
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
        crate::zk::tls::build(tls).map_err(|m| ConfigError::invalid(path, "zookeeper.tls", &m))?;
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
        assert!(Credentials::load(&p, AuthScheme::Digest).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::load(&p, AuthScheme::Digest).unwrap();
        assert_eq!(c.user_password, "agent:s3cret");
        assert_eq!(format!("{c:?}"), "Credentials(digest:agent:***)");
        std::fs::write(&p, "nocolon\n").unwrap();
        assert!(Credentials::load(&p, AuthScheme::Sasl).unwrap_err().contains("user:password"));
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
        assert_eq!(NodeKind::ServiceParent.ancestors(), NodeKind::ServiceParent);
        assert_eq!(NodeKind::StatusParent.ancestors(), NodeKind::AgentParent);
        let p = AclPolicy { enabled: true, agents: vec!["sasl:agent".into(), "x509:CN=a,O=ops".into()], ..Default::default() };
        let ids: Vec<_> = p.acl_for(NodeKind::AgentParent).iter().map(|a| (a.scheme().to_string(), a.id().to_string())).collect();
        assert!(ids.contains(&("sasl".into(), "agent".into())) && ids.contains(&("x509".into(), "CN=a,O=ops".into())), "{ids:?}");
    }
}
