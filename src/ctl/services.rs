//! `zkcoordctl services`, `drain` and `undrain`: who is in rotation, and taking a host out of
//! it (and back) without stopping its daemon.

use super::target::{fail, zk_fail, CtlError, Target};
use crate::config::services_path;
use crate::exit;
use crate::zk::members::{self, Member};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use zookeeper_client as zk;

/// One member as `services` shows it.
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// Its node name.
    pub node: String,
    /// `host:port` (or what the data has of it).
    pub address: String,
    /// Seconds since the member's node was created (how long it has been in rotation).
    pub age_secs: u64,
    /// Its whole JSON data.
    pub data: serde_json::Value,
}

/// One service as `services` shows it.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// The service's name.
    pub service: String,
    /// The znode holding its members.
    pub path: String,
    /// Live members, in the order a render sees them.
    pub members: Vec<MemberView>,
    /// Node ids with a drain flag for this service.
    pub drained: Vec<String>,
    /// Children whose data is not a JSON object (not members).
    pub skipped: Vec<String>,
}

/// The services to show: the one named (at `path`, or where the config puts it), or every
/// service the config names plus every one under `/services`.
async fn which(t: &Target, client: &zk::Client, name: Option<&str>, path: Option<&str>) -> Result<BTreeMap<String, String>, CtlError> {
    let mut known = BTreeMap::new();
    if let Some(c) = &t.config {
        for s in &c.services {
            known.insert(s.name.clone(), s.members_path());
        }
        for r in c.apps.iter().filter_map(|a| a.rendered()) {
            known.insert(r.service.clone(), r.members_path());
        }
    }
    if let Some(name) = name {
        let path = path.map(str::to_string).or_else(|| known.get(name).cloned()).unwrap_or_else(|| services_path(name));
        return Ok(BTreeMap::from([(name.to_string(), path)]));
    }
    match client.list_children(crate::config::DEFAULT_SERVICES_ROOT).await {
        Ok(children) => {
            for c in children {
                known.entry(c.clone()).or_insert_with(|| services_path(&c));
            }
        }
        Err(zk::Error::NoNode) => {}
        Err(e) => return Err(zk_fail(e)),
    }
    Ok(known)
}

/// Node ids that hold a drain flag for `service`.
async fn drained(t: &Target, client: &zk::Client, service: &str) -> Result<Vec<String>, CtlError> {
    let root = format!("{}/drain", t.layout.root());
    let nodes = match client.list_children(&root).await {
        Ok(n) => n,
        Err(zk::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(zk_fail(e)),
    };
    let mut out = Vec::new();
    for n in nodes {
        if client.check_stat(&t.layout.drain(&n, service)).await.map_err(zk_fail)?.is_some() {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

fn view(m: &Member, now_ms: i64) -> MemberView {
    MemberView {
        node: m.node.clone(),
        address: m.address(),
        age_secs: ((now_ms - m.ctime_ms).max(0) / 1000) as u64,
        data: m.data.clone(),
    }
}

/// Lists live members with their data and age, and who is drained.
pub async fn services(t: &Target, name: Option<&str>, path: Option<&str>, json: bool) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let now_ms = crate::clock::now_secs() as i64 * 1000;
    let mut views = Vec::new();
    for (service, path) in which(t, &client, name, path).await? {
        let snap = members::read(&client, &path).await.map_err(zk_fail)?;
        if !snap.exists && name.is_some() {
            return Err(fail(exit::DATAERR, format!("no service {service:?} (no node {path}); pass --path for a registry elsewhere")));
        }
        views.push(ServiceView {
            members: snap.members.iter().map(|m| view(m, now_ms)).collect(),
            drained: drained(t, &client, &service).await?,
            skipped: snap.skipped,
            service,
            path,
        });
    }
    if json {
        let mut text = serde_json::to_string_pretty(&views).expect("serializes");
        text.push('\n');
        return write_out(text.as_bytes());
    }
    let mut out = String::new();
    if views.is_empty() {
        out.push_str("no services (nothing under /services, none in the config)\n");
    }
    for v in &views {
        out.push_str(&format!("SERVICE {} ({}): {} live member(s)\n", v.service, v.path, v.members.len()));
        for m in &v.members {
            out.push_str(&format!("  {:<24} {:<22} up {:>6}s  {}\n", m.node, m.address, m.age_secs, m.data));
        }
        if !v.drained.is_empty() {
            out.push_str(&format!("  drained: {}\n", v.drained.join(", ")));
        }
        if !v.skipped.is_empty() {
            out.push_str(&format!("  not members (data is not a JSON object): {}\n", v.skipped.join(", ")));
        }
    }
    write_out(out.as_bytes())
}

/// The node a drain command is about: `--node`, else the config's node_id, else the host name.
fn node_of(t: &Target, node: Option<&str>) -> String {
    node.map(str::to_string)
        .or_else(|| t.config.as_ref().map(|c| c.node_id.clone()))
        .unwrap_or_else(|| hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into()))
}

/// A failed write of a drain flag or its parents, with who may do it when that is the reason.
fn drain_refused(e: zk::Error, path: &str) -> CtlError {
    match crate::zk::identity::explain(&e, path, "set a drain flag in") {
        Some(why) => fail(exit::NOPERM, why),
        None => zk_fail(e),
    }
}

/// Sets (drain) or clears (undrain) the flag that keeps `node`'s member of `service` out of
/// rotation. The daemon watches the flag, so this works from any machine.
pub async fn drain(t: &Target, service: &str, node: Option<&str>, on: bool) -> Result<(), CtlError> {
    crate::model::layout::validate_app_name(service).map_err(|m| fail(exit::USAGE, format!("service: {m}")))?;
    let node = node_of(t, node);
    if node.is_empty() || node.contains('/') {
        return Err(fail(exit::USAGE, format!("--node: expected a node id without '/', got {node:?}")));
    }
    let flag = t.layout.drain(&node, service);
    let client = t.connect().await?;
    let said = if on {
        let node_dir = flag.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
        let drain_root = node_dir.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
        let who = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into());
        let data = serde_json::json!({ "by": who, "time": crate::clock::now_secs() }).to_string();
        // Each leader makes the drain root; the node's directory is made here.
        let dirs = [drain_root, node_dir];
        match crate::zk::session::create_flag(&client, &flag, data.as_bytes(), &dirs, crate::zk::identity::NodeKind::DrainParent).await {
            Ok(_) => format!("drained {service} on {node}: its member leaves the service within a second ({flag})"),
            Err(zk::Error::NodeExists) => format!("{service} on {node} was already drained ({flag})"),
            Err(e) => return Err(drain_refused(e, &flag)),
        }
    } else {
        match client.delete(&flag, None).await {
            Ok(()) => format!("undrained {service} on {node}: its member returns once its health check passes"),
            Err(zk::Error::NoNode) => format!("{service} on {node} was not drained"),
            Err(e) => return Err(zk_fail(e)),
        }
    };
    crate::zk::session::close(client).await;
    write_out(format!("{said}\n").as_bytes())
}

fn write_out(bytes: &[u8]) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|_| out.flush()).map_err(|e| fail(exit::IOERR, e.to_string()))
}
