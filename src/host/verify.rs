//! Post-reload verification: a reload command that exits 0 has only asked the service to
//! reload (`nginx -s reload` signals the master and returns; the master may then fail to bind a
//! port and keep the old configuration). Before an install is reported applied, this proves
//! that the service runs it: a verify command that comes good within the settle window, or the
//! built-in nginx check (a new worker generation under the master, and no error logged since
//! the reload). Called only from [`crate::host::install::reload_or_roll_back`], so files,
//! bundles and rendered apps all get it.

use crate::config::{AppConfig, HookCommand, VerifyCheck, VerifyConfig};
use crate::host::hooks::{self, HookContext};
use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the nginx check looks at /proc and the error log, and how soon a failing verify
/// command runs again.
const POLL: Duration = Duration::from_millis(20);

/// Clock ticks per second in `/proc/<pid>/stat` start times (USER_HZ, 100 on every Linux).
const USER_HZ: u64 = 100;

/// Most error-log bytes read after one reload: a log flooding faster than this is read from
/// its newest part.
const LOG_READ_LIMIT: u64 = 1 << 20;

/// Why the service does not run what was installed. Its text is what the status report shows,
/// with the log lines that say why on lines of their own.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The pid file could not be read or holds no pid.
    #[error("verify nginx: cannot read the master's pid from {pid_file}: {why} (is nginx running, and is nginx_pid its `pid` file?)")]
    PidFile {
        /// `nginx_pid`.
        pid_file: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The master named by the pid file is not running.
    #[error("verify nginx: master {pid} (from {pid_file}) is not running{log}")]
    MasterGone {
        /// Its pid.
        pid: i32,
        /// `nginx_pid`.
        pid_file: PathBuf,
        /// The error-log lines since the reload, each on its own line.
        log: String,
    },
    /// No worker started after the reload within the settle window: nginx kept the old config.
    #[error("verify nginx: master {pid} started no new worker generation within {settle} of the reload, so it still runs the previous configuration{log}")]
    NoNewWorkers {
        /// The master's pid.
        pid: i32,
        /// The settle window.
        settle: String,
        /// The error-log lines since the reload, each on its own line.
        log: String,
    },
    /// nginx logged errors since the reload.
    #[error("verify nginx: {log_file} has errors since the reload:{log}")]
    Logged {
        /// `nginx_error_log`.
        log_file: PathBuf,
        /// The lines, each on its own line.
        log: String,
    },
    /// The verify command never exited 0 within the settle window.
    #[error("{0} (tried for {1})")]
    Command(String, String),
}

/// Which reload a verification follows: the one of the new content, or the one after a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The new content's reload: any error logged since fails it.
    New,
    /// The reload of the restored content. The service may still be busy with the refused
    /// reload (nginx retries a failed bind() five times, 500 ms apart, logging `[emerg]` each
    /// time and `still could not bind()` last, before it handles the next signal), so the log's
    /// lines are reported but only a new worker generation decides, within twice the window.
    RolledBack,
}

/// What the service looked like just before the reload, to tell the new generation from the old.
pub(crate) struct Baseline {
    /// When the reload was about to start.
    at: Instant,
    /// Which reload this follows.
    attempt: Attempt,
    /// The nginx check's view; None for a verify command.
    nginx: Option<NginxBaseline>,
}

/// The master's children and the error log's length before the reload.
struct NginxBaseline {
    /// The children of the master (if it could be read) before the reload.
    children: BTreeSet<i32>,
    /// Boot-relative clock ticks before the reload: newer workers started after it.
    ticks: u64,
    /// Where the error log ended.
    log_len: u64,
}

/// Looks at the service before its reload; None when the app has no verification.
pub(crate) fn before_reload(app: &AppConfig, attempt: Attempt) -> Option<Baseline> {
    let verify = app.verify.as_ref()?;
    let nginx = match &verify.check {
        VerifyCheck::Command(_) => None,
        VerifyCheck::Nginx { pid_file, error_log } => Some(NginxBaseline {
            children: read_pid(pid_file).map(children_of).unwrap_or_default(),
            ticks: now_ticks().unwrap_or(0),
            log_len: error_log.as_deref().and_then(|l| fs::metadata(l).ok()).map_or(0, |m| m.len()),
        }),
    };
    Some(Baseline { at: Instant::now(), attempt, nginx })
}

/// Waits, at most the settle window, until the service shows it runs what was installed.
/// Ok says how it showed it, for the log.
pub(crate) async fn after_reload(app: &AppConfig, ctx: &HookContext, baseline: &Baseline) -> Result<String, VerifyError> {
    let Some(verify) = &app.verify else { return Ok(String::new()) };
    match (&verify.check, &baseline.nginx) {
        (VerifyCheck::Command(cmd), _) => command(app, ctx, verify, cmd, baseline).await,
        (VerifyCheck::Nginx { pid_file, error_log }, Some(b)) => nginx(verify, pid_file, error_log.as_deref(), b, baseline).await,
        (VerifyCheck::Nginx { pid_file, .. }, None) => {
            Err(VerifyError::PidFile { pid_file: pid_file.clone(), why: "no baseline was taken before the reload".into() })
        }
    }
}

async fn command(app: &AppConfig, ctx: &HookContext, verify: &VerifyConfig, cmd: &HookCommand, baseline: &Baseline) -> Result<String, VerifyError> {
    let deadline = baseline.at + verify.settle;
    let mut tries = 0;
    loop {
        tries += 1;
        let run = hooks::run_as(cmd, Some(ctx), Some(&app.dest), verify.timeout, app.run_as.as_deref()).await;
        if run.ok() {
            return Ok(format!("verify `{cmd}` passed {} ms after the reload ({tries} tries)", baseline.at.elapsed().as_millis()));
        }
        if Instant::now() + POLL >= deadline {
            return Err(VerifyError::Command(run.describe("verify", cmd), humantime::format_duration(verify.settle).to_string()));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn nginx(verify: &VerifyConfig, pid_file: &Path, error_log: Option<&Path>, b: &NginxBaseline, baseline: &Baseline) -> Result<String, VerifyError> {
    let at = baseline.at;
    let strict = baseline.attempt == Attempt::New;
    let window = if strict { verify.settle } else { verify.settle * 2 };
    let deadline = at + window;
    let settle = humantime::format_duration(window).to_string();
    let log_of = || error_log.map(|l| read_since(l, b.log_len)).unwrap_or_default();
    let failing = |lines: &[String]| if strict { failing_lines(lines) } else { Vec::new() };
    loop {
        let lines = log_of();
        let bad = failing(&lines);
        if let (Some(l), false) = (error_log, bad.is_empty()) {
            return Err(VerifyError::Logged { log_file: l.to_path_buf(), log: indent(&bad) });
        }
        let pid = read_pid(pid_file).map_err(|why| VerifyError::PidFile { pid_file: pid_file.to_path_buf(), why })?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(VerifyError::MasterGone { pid, pid_file: pid_file.to_path_buf(), log: indent(&lines) });
        }
        let now = children_of(pid);
        let new: Vec<i32> = now.iter().copied().filter(|c| !b.children.contains(c) && start_ticks(*c).is_some_and(|t| t >= b.ticks)).collect();
        let old_left = now.iter().filter(|c| b.children.contains(c)).count();
        let past = Instant::now() >= deadline;
        if !new.is_empty() && (old_left == 0 || past) {
            // A last look at the log: an error written as the workers started still fails it.
            let bad = failing(&log_of());
            if let (Some(l), false) = (error_log, bad.is_empty()) {
                return Err(VerifyError::Logged { log_file: l.to_path_buf(), log: indent(&bad) });
            }
            let waited = at.elapsed().as_millis();
            let old = if old_left == 0 { String::new() } else { format!("; {old_left} old workers still finishing their connections") };
            return Ok(format!("verify nginx: master {pid} runs new workers {new:?} {waited} ms after the reload{old}"));
        }
        if past {
            return Err(VerifyError::NoNewWorkers { pid, settle, log: indent(&lines) });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lines as the error's tail: each on its own line, so that the status's reason finds them.
fn indent(lines: &[String]) -> String {
    lines.iter().map(|l| format!("\n{l}")).collect()
}

/// The lines that fail a reload: `[emerg]`, `[alert]`, `[crit]`, `[error]`, except lines about
/// one client request (nginx marks them `*<connection>`: a 404's `open() failed` on a live host
/// says nothing about the configuration).
fn failing_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| ["[emerg]", "[alert]", "[crit]", "[error]"].iter().any(|s| l.contains(s)))
        .filter(|l| !about_a_request(l))
        .cloned()
        .collect()
}

/// nginx's request lines read `... [error] 123#123: *45 open() ...`.
fn about_a_request(line: &str) -> bool {
    line.split_once("#").and_then(|(_, rest)| rest.split_once(": ")).is_some_and(|(_, msg)| {
        msg.strip_prefix('*').is_some_and(|m| m.chars().next().is_some_and(|c| c.is_ascii_digit()))
    })
}

/// The non-empty lines written to `log` after its first `from` bytes (all of it when it was
/// rotated or truncated meanwhile).
fn read_since(log: &Path, from: u64) -> Vec<String> {
    let Ok(mut f) = fs::File::open(log) else { return Vec::new() };
    let len = f.metadata().map_or(0, |m| m.len());
    let start = if len < from { 0 } else { from.max(len.saturating_sub(LOG_READ_LIMIT)) };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.take(LOG_READ_LIMIT).read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    String::from_utf8_lossy(&buf).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

fn read_pid(pid_file: &Path) -> Result<i32, String> {
    let text = fs::read_to_string(pid_file).map_err(|e| e.to_string())?;
    text.trim().parse::<i32>().map_err(|_| format!("expected a pid, found {:?}", text.trim()))
}

/// Fields of `/proc/<pid>/stat` after the command name (which may hold spaces and parentheses).
fn stat_fields(pid: i32) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is a letter; the rest are numbers. Index 0 here is field 4 (ppid).
    Some(rest.split_whitespace().skip(1).map(|f| f.parse::<i64>().map_or(0, |n| n.max(0) as u64)).collect())
}

/// The pids whose parent is `pid`, read from /proc.
fn children_of(pid: i32) -> BTreeSet<i32> {
    let Ok(rd) = fs::read_dir("/proc") else { return BTreeSet::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|c| stat_fields(*c).and_then(|f| f.first().copied()) == Some(pid as u64))
        .collect()
}

/// When `pid` started, in clock ticks since boot (field 22 of its stat).
fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(22 - 4).copied()
}

/// Now, in clock ticks since boot, one tick early so that a worker started in the same tick
/// as this reading still counts as new.
fn now_ticks() -> Option<u64> {
    let up = fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = up.split_whitespace().next()?.parse().ok()?;
    Some(((secs * USER_HZ as f64) as u64).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_do_not_fail_a_reload_but_config_errors_do() {
        let lines: Vec<String> = [
            "2024/05/01 10:00:00 [notice] 10#10: signal process started",
            "2024/05/01 10:00:00 [error] 11#11: *3 open() \"/x/favicon.ico\" failed (2: No such file or directory), client: 127.0.0.1",
            "2024/05/01 10:00:00 [emerg] 10#10: bind() to 127.0.0.1:8080 failed (98: Address already in use)",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(failing_lines(&lines), vec![lines[2].clone()]);
    }

    #[test]
    fn our_own_children_are_found_with_their_start_times() {
        let before = now_ticks().unwrap();
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id() as i32;
        let kids = children_of(std::process::id() as i32);
        assert!(kids.contains(&pid), "{kids:?}");
        assert!(start_ticks(pid).unwrap() >= before);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_log_is_read_from_where_it_ended() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("error.log");
        fs::write(&log, "old [emerg] line\n").unwrap();
        let from = fs::metadata(&log).unwrap().len();
        fs::write(&log, "old [emerg] line\nnew line\n").unwrap();
        assert_eq!(read_since(&log, from), vec!["new line".to_string()]);
        fs::write(&log, "rotated\n").unwrap();
        assert_eq!(read_since(&log, from), vec!["rotated".to_string()]);
    }
}
