//! Parents nobody may have made for us. With `[acl] enabled`, a node under our roots or the
//! versions root is trusted only when its ACL is the policy's ([`AclPolicy::verdict`]): a
//! versions parent that a plain client made with `makepath` lets anyone publish. So leaders, as
//! they start leading, and `zkcoordctl acl init` create every parent they know of before anything
//! is installed, and repair the ACL of any that exists with another one.
//!
//! Repairing an *unsafe* versions or metadata parent also writes its data (empty), so that its
//! `mzxid` marks the moment it became safe: app hosts install only versions created after that
//! (`czxid > mzxid`), since anything created while it was open may be anyone's. A parent never
//! repaired has `mzxid == czxid`, so all its children pass.

use crate::zk::identity::{AclPolicy, AclVerdict, NodeKind, Untrusted};
use crate::config::Config;
use zookeeper_client as zk;

/// One parent to create or check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    /// Its path.
    pub path: String,
    /// What it is, which decides its ACL.
    pub kind: NodeKind,
    /// A versions or metadata parent: repairing it from unsafe marks its children untrusted.
    pub marks_trust: bool,
}

fn g(path: impl Into<String>, kind: NodeKind) -> Guarded {
    Guarded { path: path.into(), kind, marks_trust: false }
}

/// The roots, and for every app this process knows of (its `[[app]]` entries and the trigger
/// app) its versions, metadata, status and blob parents: what a leader creates before it takes
/// any request, and what `zkcoordctl acl init` creates when missing.
pub fn known(config: &Config) -> Vec<Guarded> {
    let l = config.layout();
    let mut out = vec![
        g(l.applications(), NodeKind::AgentParent),
        g(l.root(), NodeKind::AgentParent),
        g(l.election(), NodeKind::AgentParent),
        g(l.requests(), NodeKind::RequestsParent),
        g(l.outcomes(), NodeKind::OutcomesParent),
        g(l.claims(), NodeKind::AgentParent),
        g(l.meta_root(), NodeKind::AgentParent),
        g(l.status_root(), NodeKind::StatusParent),
        g(l.blobs(), NodeKind::Blobs),
        g(l.rollouts(), NodeKind::AgentParent),
        g(l.reloads(), NodeKind::LeaseParent),
        // Operators set freeze flags here; with ACLs they cannot create it under the root.
        g(l.freezes(), NodeKind::FreezeParent),
        // And drain flags here (`<root>/drain/<node>` directories they make themselves).
        g(format!("{}/drain", l.root()), NodeKind::DrainParent),
    ];
    let mut apps: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    apps.extend(config.agent.trigger_app.clone());
    apps.sort();
    apps.dedup();
    for app in apps {
        out.push(Guarded { path: config.layout().versions(&app), kind: NodeKind::AgentParent, marks_trust: true });
        out.push(Guarded { path: l.meta(&app), kind: NodeKind::AgentParent, marks_trust: true });
        out.push(g(l.status(&app), NodeKind::StatusParent));
        out.push(g(l.app_blobs(&app), NodeKind::Blobs));
    }
    out
}

/// What securing one parent found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secured {
    /// It did not exist (and creating was not asked for).
    Missing,
    /// It did not exist and was created with the policy's ACL.
    Created,
    /// It exists with the policy's ACL.
    Ok,
    /// Its ACL was wrong and was replaced.
    Repaired {
        /// What it was: `Unsafe` or `Incomplete`, with the ACL found.
        verdict: AclVerdict,
        /// The ACL found.
        found: String,
        /// For an unsafe versions or metadata parent: how many existing children are no longer
        /// trusted (created while it was open).
        untrusted: Option<usize>,
    },
    /// Its ACL is wrong and we may not change it.
    Refused {
        /// What is wrong with it.
        verdict: AclVerdict,
        /// The ACL found.
        found: String,
        /// The ACL expected.
        expected: String,
    },
}

/// Makes `item` carry the policy's ACL: creates it (when `create`) if missing, repairs it if
/// its ACL is unsafe or incomplete and we may, and says what it found.
pub async fn secure(client: &zk::Client, policy: &AclPolicy, item: &Guarded, create: bool) -> Result<Secured, zk::Error> {
    let mut created = false;
    let (acl, stat) = loop {
        match client.get_acl(&item.path).await {
            Ok(r) => break r,
            Err(zk::Error::NoNode) if create && !created => {
                crate::zk::session::ensure_path(client, &item.path, item.kind).await?;
                // Looked at again: someone may have made it between our look and our create.
                created = true;
            }
            Err(zk::Error::NoNode) => return Ok(Secured::Missing),
            Err(e) => return Err(e),
        }
    };
    let verdict = policy.verdict(item.kind, &acl);
    if verdict == AclVerdict::Ok {
        return Ok(if created { Secured::Created } else { Secured::Ok });
    }
    let found = crate::zk::identity::describe(&acl);
    let expected = policy.repair_acl(item.kind);
    match client.set_acl(&item.path, &expected, Some(stat.aversion)).await {
        Ok(_) => {}
        Err(zk::Error::NoAuth) => {
            return Ok(Secured::Refused { verdict, found, expected: crate::zk::identity::describe(&expected) });
        }
        // Another leader (leaders > 1) repaired it meanwhile: it says so itself.
        Err(zk::Error::BadVersion) => return Ok(Secured::Ok),
        Err(e) => return Err(e),
    }
    let mut untrusted = None;
    if item.marks_trust && matches!(verdict, AclVerdict::Unsafe(_)) {
        let marked = client.set_data(&item.path, b"", None).await?;
        let children = client.list_children(&item.path).await?;
        let paths: Vec<String> = children.iter().map(|c| format!("{}/{c}", item.path)).collect();
        let stats = futures::future::join_all(paths.iter().map(|p| client.check_stat(p))).await;
        let mut n = 0;
        for s in stats {
            if s?.is_some_and(|s| s.czxid <= marked.mzxid) {
                n += 1;
            }
        }
        untrusted = Some(n);
    }
    Ok(Secured::Repaired { verdict, found, untrusted })
}

/// One line for an operator about what [`secure`] did to `path`; None when nothing happened.
pub fn describe(path: &str, s: &Secured) -> Option<String> {
    match s {
        Secured::Missing | Secured::Ok => None,
        Secured::Created => Some(format!("{path}: created with the policy's ACL")),
        Secured::Repaired { verdict, found, untrusted } => {
            let why = match verdict {
                AclVerdict::Unsafe(w) => format!("unsafe ACL ({w})"),
                AclVerdict::Incomplete(w) => format!("incomplete ACL ({w})"),
                AclVerdict::Ok => String::new(),
            };
            let mut line = format!("{path}: repaired {why}; it was [{found}]");
            if let Some(n) = untrusted {
                line.push_str(&format!(
                    "; {n} existing child node(s) were created while it was open and will never be installed by any host: publish again"
                ));
            }
            Some(line)
        }
        Secured::Refused { verdict, found, expected } => Some(format!(
            "{path}: {} ACL [{found}], expected [{expected}], and we are not authorized to change it ({}); \
             fix it as ZooKeeper's superuser or run `zkcoordctl acl init` with agent credentials",
            match verdict {
                AclVerdict::Unsafe(_) => "UNSAFE",
                _ => "incomplete",
            },
            match verdict {
                AclVerdict::Unsafe(w) | AclVerdict::Incomplete(w) => w.as_str(),
                AclVerdict::Ok => "",
            }
        )),
    }
}

/// The leader's first act: create and check every parent [`known`] names, logging each repair
/// (warn), each refusal (error) and each creation (info). A no-op with ACLs off.
pub async fn secure_known(config: &Config, client: &zk::Client) -> Result<(), zk::Error> {
    let Some(policy) = crate::zk::identity::policy() else { return Ok(()) };
    for item in known(config) {
        let s = secure(client, policy, &item, true).await?;
        let Some(line) = describe(&item.path, &s) else { continue };
        match s {
            Secured::Refused { .. } => tracing::error!("{line}"),
            Secured::Repaired { untrusted: Some(n), .. } if n > 0 => tracing::error!("{line}"),
            Secured::Repaired { .. } => tracing::warn!("{line}"),
            _ => tracing::info!("{line}"),
        }
    }
    Ok(())
}

/// Readers' verdicts on status nodes, by path, with the czxid they were reached at: an
/// ephemeral node's ACL cannot change without ADMIN, which only its creator has, so a verdict
/// holds for as long as the node (its czxid) does.
static TRUST: std::sync::Mutex<Option<std::collections::HashMap<String, (i64, Result<(), Untrusted>)>>> = std::sync::Mutex::new(None);

/// Whether the status node at `path` (named after host `node`, with `czxid` as the read that
/// found it said) may be believed under this process's ACL policy: the one check every reader
/// (`zkcoordctl status`, `publish --wait`, the rollout supervisor) makes, by
/// [`crate::zk::identity::AclPolicy::status_owner`]. Ok(Ok) with ACLs off; one getACL per new node.
pub async fn status_trusted(client: &zookeeper_client::Client, path: &str, node: &str, czxid: i64) -> Result<Result<(), Untrusted>, zookeeper_client::Error> {
    let Some(policy) = crate::zk::identity::policy() else { return Ok(Ok(())) };
    if let Some((z, v)) = TRUST.lock().ok().and_then(|t| t.as_ref().and_then(|m| m.get(path).cloned())) {
        if z == czxid {
            return Ok(v);
        }
    }
    let (acl, stat) = client.get_acl(path).await?;
    let verdict = policy.status_owner(node, &acl);
    if let Ok(mut t) = TRUST.lock() {
        t.get_or_insert_with(Default::default).insert(path.to_string(), (stat.czxid, verdict.clone()));
    }
    Ok(verdict)
}
