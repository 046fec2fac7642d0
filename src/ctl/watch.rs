//! `zkcoordctl watch`: follows publishes and host reports live, one line per event, until
//! interrupted. Built on ZooKeeper's persistent recursive watches, so nothing is polled.

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

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{} {line}", now());
    let _ = out.flush();
}

/// Prints a line for every publish, prune and host report until Ctrl-C.
pub async fn watch(t: &Target, app: Option<&str>) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let (versions_root, status_root) = match app {
        Some(a) => (t.versions_path(a), t.layout.status(a)),
        None => (t.layout.applications().to_string(), t.layout.status_root()),
    };
    let mut versions = client.watch(&versions_root, zk::AddWatchMode::PersistentRecursive).await.map_err(zk_fail)?;
    let mut reports = client.watch(&status_root, zk::AddWatchMode::PersistentRecursive).await.map_err(zk_fail)?;
    say(format!("watching {} and {} (Ctrl-C to stop)", versions_root, status_root));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = versions.changed() => {
                if ev.event_type == zk::EventType::Session {
                    session_event(&ev)?;
                    continue;
                }
                on_version(&client, t, &ev).await;
            }
            ev = reports.changed() => {
                if ev.event_type == zk::EventType::Session {
                    session_event(&ev)?;
                    continue;
                }
                on_report(&client, &status_root, app, &ev).await;
            }
        }
    }
}

/// A session event: go on after a reconnect, stop when the session is gone (the watcher must
/// not be polled after a terminal state).
fn session_event(ev: &zk::WatchedEvent) -> Result<(), CtlError> {
    match ev.session_state {
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
            say("reconnected to ZooKeeper; events during the outage may be missing".into());
            Ok(())
        }
        zk::SessionState::Disconnected => {
            say("lost the connection to ZooKeeper; reconnecting".into());
            Ok(())
        }
        other => Err(fail(exit::UNAVAILABLE, format!("ZooKeeper session ended ({other}); stopped watching"))),
    }
}

async fn on_version(client: &zk::Client, t: &Target, ev: &zk::WatchedEvent) {
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
            let by = match meta {
                Some(m) => format!(" by {}{}", m.author, m.message.map(|msg| format!(": {msg}")).unwrap_or_default()),
                None => String::new(),
            };
            say(format!("{app} published {} ({size} bytes){by}", v.name));
        }
        zk::EventType::NodeDeleted => say(format!("{app} removed {}", v.name)),
        _ => {}
    }
}

async fn on_report(client: &zk::Client, status_root: &str, only: Option<&str>, ev: &zk::WatchedEvent) {
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
            if let (Some(a), Some(e)) = (&r.attempted, &r.error) {
                line.push_str(&format!(" ({a}: {})", e.lines().next().unwrap_or_default()));
            }
            say(line);
        }
        zk::EventType::NodeDeleted => say(format!("{app} {host} gone")),
        _ => {}
    }
}
