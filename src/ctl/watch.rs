//! `zkcoordctl watch`: follows publishes and host reports live, one line per event, until
//! interrupted (`--json`: one object per line, for scripts). Built on ZooKeeper's persistent
//! recursive watches, so nothing is polled.

use super::target::{fail, zk_fail, CtlError, Target};
use crate::exit;
use crate::model::layout::VersionId;
use crate::model::request::VersionMeta;
use crate::model::status::StatusReport;
use std::io::Write;
use zookeeper_client as zk;

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// How events are printed: a timestamped line, or (`--json`) one object per line with
/// `time`, `event` and the event's fields.
#[derive(Debug, Clone, Copy)]
struct Out {
    /// One JSON object per line instead of text.
    json: bool,
}

impl Out {
    /// Prints one event: `line` as text, or `event` and `fields` as JSON.
    fn say(self, line: String, event: &str, fields: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = if self.json {
            let mut o = serde_json::Map::new();
            o.insert("time".into(), now().into());
            o.insert("event".into(), event.into());
            if let serde_json::Value::Object(f) = fields {
                o.extend(f.into_iter().filter(|(_, v)| !v.is_null()));
            }
            writeln!(out, "{}", serde_json::Value::Object(o))
        } else {
            writeln!(out, "{} {line}", now())
        };
        let _ = out.flush();
    }
}

/// Prints a line for every publish, prune and host report until Ctrl-C.
pub async fn watch(t: &Target, app: Option<&str>, json: bool) -> Result<(), CtlError> {
    let out = Out { json };
    let client = t.connect().await?;
    let (versions_root, status_root) = match app {
        Some(a) => (t.versions_path(a), t.layout.status(a)),
        None => (t.layout.applications().to_string(), t.layout.status_root()),
    };
    let set = || async { futures::try_join!(client.watch(&versions_root, zk::AddWatchMode::PersistentRecursive), client.watch(&status_root, zk::AddWatchMode::PersistentRecursive)) };
    let (mut versions, mut reports) = set().await.map_err(zk_fail)?;
    out.say(
        format!("watching {} and {} (Ctrl-C to stop)", versions_root, status_root),
        "watching",
        serde_json::json!({"versions": versions_root, "reports": status_root}),
    );
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = versions.changed() => ev,
            ev = reports.changed() => ev,
        };
        if ev.event_type == zk::EventType::Session {
            if session_event(out, &ev)? {
                // zookeeper-client 0.11.2 re-sends only one-shot watches to a new connection, so
                // both persistent watches are set again (the new ones before the old ones go, so
                // the client never asks the server to remove a watch on these paths). The other
                // watcher's copy of this event goes with it.
                let fresh = loop {
                    match set().await {
                        Ok(w) => break w,
                        Err(e) if crate::zk::session::classify(&e) != crate::zk::session::ErrorKind::Other => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await
                        }
                        Err(e) => return Err(zk_fail(e)),
                    }
                };
                (versions, reports) = fresh;
            }
            continue;
        }
        if ev.path == status_root || ev.path.starts_with(&format!("{status_root}/")) {
            on_report(out, &client, &status_root, app, &ev).await;
        } else {
            on_version(out, &client, t, &ev).await;
        }
    }
}

/// A session event: go on after a reconnect (true: the watches are to be set again), stop
/// when the session is gone (the watcher must not be polled after a terminal state).
fn session_event(out: Out, ev: &zk::WatchedEvent) -> Result<bool, CtlError> {
    match ev.session_state {
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
            out.say("reconnected to ZooKeeper; events during the outage may be missing".into(), "reconnected", serde_json::json!({}));
            Ok(true)
        }
        zk::SessionState::Disconnected => {
            out.say("lost the connection to ZooKeeper; reconnecting".into(), "disconnected", serde_json::json!({}));
            Ok(false)
        }
        other => Err(fail(exit::UNAVAILABLE, format!("ZooKeeper session ended ({other}); stopped watching"))),
    }
}

async fn on_version(out: Out, client: &zk::Client, t: &Target, ev: &zk::WatchedEvent) {
    let mut parts = ev.path.rsplitn(3, '/');
    let (Some(name), Some(app)) = (parts.next(), parts.next()) else { return };
    let Some(v) = VersionId::parse(name) else { return };
    match ev.event_type {
        zk::EventType::NodeCreated => {
            let size = client.check_stat(&ev.path).await.ok().flatten().map(|s| s.data_length).unwrap_or(0);
            // The leader writes metadata right after the version; give it a moment.
            let mut meta = None;
            for _ in 0..10 {
                if let Ok((b, _)) = client.get_data(&format!("{}/{}", t.layout.meta(app), v.name)).await {
                    meta = serde_json::from_slice::<VersionMeta>(&b).ok();
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let (author, message) = meta.map(|m| (Some(m.author), m.message)).unwrap_or_default();
            let by = match &author {
                Some(a) => format!(" by {a}{}", message.as_ref().map(|msg| format!(": {msg}")).unwrap_or_default()),
                None => String::new(),
            };
            out.say(
                format!("{app} published {} ({size} bytes){by}", v.name),
                "published",
                serde_json::json!({"app": app, "version": v.name, "size": size, "author": author, "message": message}),
            );
        }
        zk::EventType::NodeDeleted => {
            out.say(format!("{app} removed {}", v.name), "removed", serde_json::json!({"app": app, "version": v.name}))
        }
        _ => {}
    }
}

async fn on_report(out: Out, client: &zk::Client, status_root: &str, only: Option<&str>, ev: &zk::WatchedEvent) {
    let rel = ev.path.trim_start_matches(status_root).trim_start_matches('/');
    let (app, host) = match only {
        Some(a) => (a, rel),
        None => match rel.split_once('/') {
            Some(pair) => pair,
            None => return,
        },
    };
    if host.is_empty() || host.contains('/') {
        return;
    }
    match ev.event_type {
        zk::EventType::NodeCreated | zk::EventType::NodeDataChanged => {
            let Ok((b, _)) = client.get_data(&ev.path).await else { return };
            let Ok(r) = serde_json::from_slice::<StatusReport>(&b) else { return };
            let result = serde_json::to_value(r.result).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            let mut line = format!("{app} {host} {result} {}", r.version.as_deref().unwrap_or("none"));
            let error = r.error.as_deref().map(|e| crate::model::status::reason(e).to_string());
            let held = r.drift.as_ref().is_some_and(|d| d.held());
            if let (Some(a), Some(e), false) = (&r.attempted, &error, held) {
                line.push_str(&format!(" ({a}: {e})"));
            }
            if let Some(d) = &r.drift {
                line.push_str(&format!(" DRIFT {}", d.describe()));
            }
            let fields = serde_json::json!({"app": app, "host": host, "result": result, "version": r.version, "attempted": r.attempted, "error": error, "drift": r.drift});
            out.say(line, "report", fields);
        }
        zk::EventType::NodeDeleted => out.say(format!("{app} {host} gone"), "gone", serde_json::json!({"app": app, "host": host})),
        _ => {}
    }
}
