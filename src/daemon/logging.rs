//! Logs: structured fields to the journal when stderr is the journal (`journalctl
//! ZKCOORD_APP=nginxconf`), readable text otherwise, unless `log_format` says "text", "json"
//! (one object per line, [`super::json_log`]) or "journal".
//! The level can be changed while running (SIGHUP with a new `log_level`).

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    /// The reload handle of the global filter.
    handle: reload::Handle<EnvFilter, Registry>,
    /// Set when ZKCOORD_LOG or RUST_LOG fixed the filter; the config's level is then ignored.
    pinned_by_env: bool,
}

impl LogControl {
    /// Applies `level` (a filter string) unless the environment pinned the filter.
    pub fn set_level(&self, level: &str) {
        if self.pinned_by_env {
            tracing::info!("log_level {level:?} ignored: ZKCOORD_LOG or RUST_LOG is set");
            return;
        }
        match EnvFilter::try_new(level) {
            Ok(f) => {
                let _ = self.handle.reload(f);
                tracing::info!("log level is now {level:?}");
            }
            Err(e) => tracing::error!("log_level {level:?} is not a valid filter: {e}"),
        }
    }
}

/// True when stderr is the journal: systemd sets JOURNAL_STREAM to stderr's `device:inode`.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else { return false };
    match nix::sys::stat::fstat(2) {
        Ok(st) => dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino),
        Err(_) => false,
    }
}

/// Installs the global subscriber with `level`, unless `ZKCOORD_LOG` or `RUST_LOG` say
/// otherwise, writing in `format` (absent: the journal when stderr is the journal, else text).
pub fn init(level: &str, format: Option<LogFormat>) -> LogControl {
    let from_env = std::env::var("ZKCOORD_LOG").ok().or_else(|| std::env::var("RUST_LOG").ok());
    let filter = from_env
        .as_deref()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let control = LogControl { handle, pinned_by_env: from_env.is_some() };
    let format = format.unwrap_or(if stderr_is_journal() { LogFormat::Journal } else { LogFormat::Text });
    if format == LogFormat::Json {
        tracing_subscriber::registry().with(filter).with(super::json_log::JsonLines::new("zkcoordd")).init();
        return control;
    }
    let mut no_journal = None;
    if format == LogFormat::Journal {
        match tracing_journald::layer() {
            Ok(journald) => {
            tracing_subscriber::registry()
                .with(filter)
                .with(journald.with_syslog_identifier("zkcoordd".into()).with_field_prefix(Some("ZKCOORD".into())))
                .init();
                return control;
            }
            Err(e) => no_journal = Some(e),
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .init();
    if let Some(e) = no_journal {
        tracing::warn!("log_format \"journal\": cannot reach the journal ({e}); writing text to stderr");
    }
    control
}
