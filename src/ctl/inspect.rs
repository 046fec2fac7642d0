//! Reading what is there: a version's bytes, an app's history, who leads and which host runs
//! what, and what changed between two versions.

use super::target::{fail, zk_fail, CtlError, Target};
use crate::exit;
use crate::model::layout::{self, VersionId};
use crate::model::request::VersionMeta;
use crate::model::status::StatusReport;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};
use zookeeper_client as zk;

fn write_out(bytes: &[u8]) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|_| out.flush()).map_err(|e| fail(exit::IOERR, e.to_string()))
}

fn print_json<T: Serialize>(v: &T) -> Result<(), CtlError> {
    let mut text = serde_json::to_string_pretty(v).expect("serializes");
    text.push('\n');
    write_out(text.as_bytes())
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Prints a version's bytes, exactly.
pub async fn get(t: &Target, app: &str, version: Option<&str>) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let v = t.resolve_version(&client, app, version).await?;
    write_out(&t.bytes_of(&client, app, &v).await?)
}

/// One line of `history`.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    /// Version name.
    pub version: String,
    /// Creation time (RFC 3339, UTC).
    pub time: String,
    /// Size in bytes.
    pub size: usize,
    /// sha256 from the metadata (absent for versions written by a plain client).
    pub sha256: Option<String>,
    /// Who published it.
    pub author: Option<String>,
    /// Their message.
    pub message: Option<String>,
    /// The publish that made it (`journalctl ZKCOORD_PUBLISH_ID=…` on any host finds its lines).
    pub publish_id: Option<String>,
    /// What its rollout did, once it settled (see [`crate::model::record`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::model::record::RolloutRecord>,
    /// The ROLLOUT column: the record's summary, `settling` while the leader still follows it.
    #[serde(skip)]
    pub rollout: String,
}

/// Lists versions with time, size, sha256 prefix, author and message.
pub async fn history(t: &Target, app: &str, json: bool) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let parent = t.versions_path(app);
    let mut entries = Vec::new();
    for v in t.versions(&client, app).await? {
        let Some(stat) = client.check_stat(&format!("{parent}/{}", v.name)).await.map_err(zk_fail)? else { continue };
        let meta: Option<VersionMeta> = match client.get_data(&format!("{}/{}", t.layout.meta(app), v.name)).await {
            Ok((b, _)) => serde_json::from_slice(&b).ok(),
            Err(_) => None,
        };
        // A version its leader made and may still follow says so; a plain client's has no record.
        let young = crate::clock::now_secs().saturating_sub(stat.ctime.max(0) as u64 / 1000) < crate::model::record::SETTLE_LIMIT.as_secs();
        let rollout = match meta.as_ref().map(|m| &m.record) {
            Some(Some(r)) => r.summary(),
            Some(None) if young => "settling".to_string(),
            _ => "-".to_string(),
        };
        entries.push(HistoryEntry {
            rollout,
            version: v.name,
            time: rfc3339(stat.ctime.max(0) as u64 / 1000),
            size: stat.data_length.max(0) as usize,
            sha256: meta.as_ref().map(|m| m.sha256.clone()),
            author: meta.as_ref().map(|m| m.author.clone()),
            publish_id: meta.as_ref().and_then(|m| m.publish_id.clone()),
            record: meta.as_ref().and_then(|m| m.record.clone()),
            message: meta.and_then(|m| m.message),
        });
    }
    if json {
        return print_json(&entries);
    }
    let mut out = format!("{:<16} {:<20} {:>9} {:<12} {:<24} {:<40} MESSAGE\n", "VERSION", "TIME (UTC)", "SIZE", "SHA256", "AUTHOR", "ROLLOUT");
    for e in &entries {
        out.push_str(&format!(
            "{:<16} {:<20} {:>9} {:<12} {:<24} {:<40} {}\n",
            e.version,
            e.time.trim_end_matches('Z'),
            e.size,
            e.sha256.as_deref().map(|s| &s[..12.min(s.len())]).unwrap_or("-"),
            e.author.as_deref().unwrap_or("-"),
            e.rollout,
            e.message.as_deref().unwrap_or("")
        ));
    }
    write_out(out.as_bytes())
}

/// An agent as `status` shows it.
#[derive(Debug, Serialize)]
pub struct AgentStatus {
    /// Its election node.
    pub node: String,
    /// Its node_id, host and pid (from the node's data).
    pub node_id: Option<String>,
    /// Host name.
    pub host: Option<String>,
    /// Process id.
    pub pid: Option<u64>,
    /// "leader" or "standby".
    pub role: &'static str,
}

/// A host's report as `status` shows it.
#[derive(Debug, Serialize)]
pub struct HostStatus {
    /// The host's node id.
    pub host: String,
    /// What it runs.
    pub version: Option<String>,
    /// How its last attempt ended; `untrusted` when its node was written by another identity
    /// (then `error` says which, and nothing else of it is shown).
    pub result: String,
    /// The version of a failed attempt.
    pub attempted: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds since the report was written.
    pub age_secs: u64,
    /// True when it does not run the newest version.
    pub behind: bool,
    /// A hand edit it leaves in place (`on_drift = "report"` or `"hold"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::model::drift::Drift>,
    /// The publish its last attempt was about (see [`StatusReport::publish_id`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_id: Option<String>,
    /// The freeze as this host last saw it: set once the host holds still.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<String>,
}

/// One app as `status` shows it.
#[derive(Debug, Serialize)]
pub struct AppStatus {
    /// The application.
    pub app: String,
    /// Its newest version.
    pub newest: Option<String>,
    /// The freeze that holds it (`zkcoordctl freeze`), as one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<String>,
    /// Every live host.
    pub hosts: Vec<HostStatus>,
}

/// The whole `status` answer.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Agents in election order.
    pub agents: Vec<AgentStatus>,
    /// Apps.
    pub apps: Vec<AppStatus>,
}

async fn children_or_empty(client: &zk::Client, path: &str) -> Result<Vec<String>, CtlError> {
    match client.list_children(path).await {
        Ok(c) => Ok(c),
        Err(zk::Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(zk_fail(e)),
    }
}

/// Gathers agents and, per app, every live host's report.
pub async fn gather_status(client: &zk::Client, t: &Target, only: Option<&str>) -> Result<Status, CtlError> {
    let election = t.layout.election();
    let workers = children_or_empty(client, election).await?;
    let mut agents = Vec::new();
    for (i, (_, name)) in layout::sorted_by_sequence(&workers, layout::WORKER_PREFIX).into_iter().enumerate() {
        let data: Option<serde_json::Value> = match client.get_data(&format!("{election}/{name}")).await {
            Ok((b, _)) => serde_json::from_slice(&b).ok(),
            Err(_) => None,
        };
        let field = |k: &str| data.as_ref().and_then(|d| d[k].as_str().map(String::from));
        agents.push(AgentStatus {
            node: name.to_string(),
            node_id: field("node_id"),
            host: field("host"),
            pid: data.as_ref().and_then(|d| d["pid"].as_u64()),
            role: if i < t.leaders() { "leader" } else { "standby" },
        });
    }
    let freezes = crate::zk::freeze::read(client, &t.layout).await.map_err(zk_fail)?;
    let app_names: Vec<String> = match only {
        Some(a) => vec![a.to_string()],
        None => {
            let mut names = children_or_empty(client, t.layout.applications()).await?;
            names.extend(children_or_empty(client, &t.layout.status_root()).await?);
            if let Some(c) = &t.config {
                names.extend(c.apps.iter().map(|a| a.name.clone()));
            }
            names.sort();
            names.dedup();
            names
        }
    };
    let now = crate::clock::now_secs();
    let mut apps = Vec::new();
    for app in app_names {
        let versions = layout::versions(&children_or_empty(client, &t.versions_path(&app)).await?);
        let newest = versions.last().cloned();
        let dir = t.layout.status(&app);
        let mut hosts = Vec::new();
        for host in children_or_empty(client, &dir).await? {
            let path = format!("{dir}/{host}");
            let (report, stat): (Option<StatusReport>, _) = match client.get_data(&path).await {
                Ok((b, stat)) => (serde_json::from_slice(&b).ok(), Some(stat)),
                Err(_) => (None, None),
            };
            let (Some(r), Some(stat)) = (report, stat) else { continue };
            if r.result == crate::model::status::ApplyResult::Removed {
                continue;
            }
            // With the policy known, a node some other identity wrote says nothing about the host.
            if let Err(why) = crate::zk::guard::status_trusted(client, &path, &host, stat.czxid).await.map_err(zk_fail)? {
                hosts.push(HostStatus { host, version: None, result: "untrusted".into(), attempted: None, error: Some(why.to_string()), age_secs: 0, behind: false, drift: None, publish_id: None, frozen: None });
                continue;
            }
            let runs = r.version.as_deref().and_then(VersionId::parse);
            hosts.push(HostStatus {
                behind: newest.as_ref().is_some_and(|n| runs.as_ref().is_none_or(|v| v.seq < n.seq)),
                host,
                version: r.version,
                result: serde_json::to_value(r.result).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                attempted: r.attempted,
                error: r.error,
                age_secs: now.saturating_sub(r.time),
                drift: r.drift,
                publish_id: r.publish_id,
                frozen: r.frozen,
            });
        }
        apps.push(AppStatus { frozen: freezes.line(&app), app, newest: newest.map(|v| v.name), hosts });
    }
    Ok(Status { agents, apps })
}

/// Prints agents and hosts; hosts behind the newest version are marked.
pub async fn status(t: &Target, only: Option<&str>, json: bool) -> Result<(), CtlError> {
    let client = t.connect().await?;
    if let Some(app) = only {
        // As `history` and `get` do: an app nothing knows of is a mistake, not an empty answer.
        let known = client.check_stat(&t.layout.versions(app)).await.map_err(zk_fail)?.is_some()
            || client.check_stat(&t.layout.status(app)).await.map_err(zk_fail)?.is_some()
            || t.config.as_ref().is_some_and(|c| c.apps.iter().any(|a| a.name == app));
        if !known {
            return Err(fail(exit::DATAERR, format!("no application {app:?} (no node {} and no host reports it)", t.layout.versions(app))));
        }
    }
    let s = gather_status(&client, t, only).await?;
    if json {
        return print_json(&s);
    }
    let mut out = String::from("AGENTS\n");
    if s.agents.is_empty() {
        out.push_str("  (none registered: a publish now waits for an agent, then times out)\n");
    }
    for a in &s.agents {
        out.push_str(&format!(
            "  {:<8} {:<20} {} pid {}\n",
            a.role,
            a.node,
            a.node_id.as_deref().unwrap_or("?"),
            a.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
        ));
    }
    for app in &s.apps {
        out.push_str(&format!("\nAPP {} (newest {})\n", app.app, app.newest.as_deref().unwrap_or("none")));
        if let Some(f) = &app.frozen {
            out.push_str(&format!("  FROZEN: {f}\n"));
        }
        if app.hosts.is_empty() {
            out.push_str("  (no live hosts)\n");
        }
        for h in &app.hosts {
            let mut line = format!(
                "  {:<16} {:<16} {:<14} {:>6}s",
                h.host,
                h.version.as_deref().unwrap_or("none"),
                h.result,
                h.age_secs
            );
            if h.behind {
                line.push_str("  BEHIND");
            }
            if h.result == "untrusted" {
                line = format!("  {:<16} {}", h.host, h.error.as_deref().unwrap_or("untrusted"));
            }
            let held = h.drift.as_ref().is_some_and(|d| d.held());
            // A held host's error is the drift itself: say it once.
            if let (Some(a), Some(e), false) = (&h.attempted, &h.error, held) {
                line.push_str(&format!("  ({a}: {})", crate::model::status::reason(e)));
            }
            if let Some(d) = &h.drift {
                line.push_str(&format!("  DRIFT {}", d.describe()));
            }
            if h.frozen.is_some() {
                line.push_str("  frozen");
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    write_out(out.as_bytes())
}

/// A unified diff between two versions, or between a version and a local file.
/// Exits 0 when they are the same and 1 when they differ, as diff(1) does.
pub async fn diff(t: &Target, app: &str, a: Option<&str>, b: Option<&str>, file: Option<&Path>) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let (old_label, old, new_label, new) = match file {
        Some(path) => {
            let v = t.resolve_version(&client, app, a).await?;
            let local = std::fs::read(path).map_err(|e| fail(exit::DATAERR, format!("cannot read {}: {e}", path.display())))?;
            (format!("{app} {}", v.name), t.bytes_of(&client, app, &v).await?, path.display().to_string(), local)
        }
        None => {
            let va = t.resolve_version(&client, app, Some(a.unwrap_or("-1"))).await?;
            let vb = t.resolve_version(&client, app, b).await?;
            let old = t.bytes_of(&client, app, &va).await?;
            let new = t.bytes_of(&client, app, &vb).await?;
            (format!("{app} {}", va.name), old, format!("{app} {}", vb.name), new)
        }
    };
    if old == new {
        return Ok(());
    }
    let text = unified_diff(&old, &new, &old_label, &new_label);
    write_out(text.as_bytes())?;
    Err(fail(1, String::new()))
}

/// The unified diff text (`---`/`+++` headers, 3 lines of context); binary content is named,
/// not printed.
pub fn unified_diff(old: &[u8], new: &[u8], old_label: &str, new_label: &str) -> String {
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(o), Ok(n)) => similar::TextDiff::from_lines(o, n).unified_diff().context_radius(3).header(old_label, new_label).to_string(),
        _ => format!("Binary contents {old_label} and {new_label} differ\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_has_headers_hunks_and_context() {
        let d = unified_diff(b"a\nb\nc\n", b"a\nB\nc\n", "app conf-0000000001", "app conf-0000000002");
        assert_eq!(d, "--- app conf-0000000001\n+++ app conf-0000000002\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
        assert!(unified_diff(b"\xff", b"\xfe", "x", "y").starts_with("Binary contents x and y differ"));
    }
}

/// Creates the parents the config knows of and gives every zkcoord node that exists the
/// configured ACL policy, repairing unsafe and incomplete ACLs (see [`crate::zk::guard`]).
pub async fn acl_init(t: &Target) -> Result<(), CtlError> {
    use crate::zk::identity::NodeKind;
    let Some(config) = &t.config else {
        return Err(fail(exit::USAGE, "acl init needs --config (the [acl] section says who may do what)"));
    };
    let policy = crate::zk::identity::AclPolicy::of(&config.acl);
    if !policy.enabled {
        return Err(fail(exit::CONFIG, "[acl] enabled is false in the config; nothing to apply"));
    }
    let client = t.connect_creating_chroot().await?;
    let l = &t.layout;
    let mut plan: Vec<(String, NodeKind)> = vec![
        (l.election().to_string(), NodeKind::AgentParent),
        (l.applications().to_string(), NodeKind::AgentParent),
        (l.root().to_string(), NodeKind::AgentParent),
        (l.requests(), NodeKind::RequestsParent),
        (l.outcomes(), NodeKind::OutcomesParent),
        (l.claims(), NodeKind::AgentParent),
        (l.status_root(), NodeKind::StatusParent),
        (l.meta_root(), NodeKind::AgentParent),
        (l.blobs(), NodeKind::Blobs),
        (l.rollouts(), NodeKind::AgentParent),
        (l.reloads(), NodeKind::LeaseParent),
    ];
    for app in children_or_empty(&client, &l.blobs()).await? {
        let dir = l.app_blobs(&app);
        for blob in children_or_empty(&client, &dir).await? {
            plan.push((format!("{dir}/{blob}"), NodeKind::Blobs));
        }
        plan.push((dir, NodeKind::Blobs));
    }
    for app in children_or_empty(&client, l.applications()).await? {
        plan.push((t.versions_path(&app), NodeKind::AgentParent));
        plan.push((l.meta(&app), NodeKind::AgentParent));
        plan.push((l.status(&app), NodeKind::StatusParent));
        plan.push((l.rollout(&app), NodeKind::Rollout));
        plan.push((l.app_reloads(&app), NodeKind::LeaseParent));
    }
    plan.push((crate::config::DEFAULT_SERVICES_ROOT.to_string(), NodeKind::ServiceParent));
    for service in children_or_empty(&client, crate::config::DEFAULT_SERVICES_ROOT).await? {
        plan.push((crate::config::services_path(&service), NodeKind::ServiceParent));
    }
    if let Some(c) = &t.config {
        plan.extend(c.services.iter().map(|s| (s.members_path(), NodeKind::ServiceParent)));
    }
    let drain_root = format!("{}/drain", l.root());
    for node in children_or_empty(&client, &drain_root).await? {
        plan.push((format!("{drain_root}/{node}"), NodeKind::DrainParent));
    }
    plan.push((drain_root, NodeKind::DrainParent));
    // The parents this config knows of are created when missing; everything else is checked
    // where it exists. Each is repaired by the one comparison leaders use (acl::verdict).
    let mut items = crate::zk::guard::known(config);
    for (path, kind) in plan {
        if !items.iter().any(|i| i.path == path) {
            items.push(crate::zk::guard::Guarded { path, kind, marks_trust: false });
        }
    }
    // Versions and metadata parents of apps found in ZooKeeper mark their children on repair too.
    for app in children_or_empty(&client, l.applications()).await? {
        for i in items.iter_mut().filter(|i| i.path == t.versions_path(&app) || i.path == l.meta(&app)) {
            i.marks_trust = true;
        }
    }
    let known: Vec<String> = crate::zk::guard::known(config).into_iter().map(|i| i.path).collect();
    let (mut changed, mut refused) = (0, 0);
    for item in &items {
        let s = crate::zk::guard::secure(&client, &policy, item, known.contains(&item.path)).await.map_err(zk_fail)?;
        if let Some(line) = crate::zk::guard::describe(&item.path, &s) {
            match s {
                crate::zk::guard::Secured::Refused { .. } => {
                    refused += 1;
                    eprintln!("{line}");
                }
                _ => {
                    changed += 1;
                    println!("{line}");
                }
            }
        }
    }
    println!("ACLs checked on {} node(s): {changed} created or repaired, {refused} refused", items.len());
    if refused > 0 {
        return Err(fail(exit::UNAVAILABLE, format!("{refused} node(s) keep a wrong ACL; see above")));
    }
    Ok(())
}
