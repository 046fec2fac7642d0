//! Runs check and reload commands: no shell unless asked, a clean stdin, no NOTIFY_SOCKET, and a
//! timeout that kills the command's whole process group.

use crate::config::HookCommand;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How much of a hook's output is kept for logs and status reports.
const OUTPUT_LIMIT: usize = 4096;

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0.
    Succeeded,
    /// Non-zero exit or killed by a signal.
    Failed(String),
    /// Still running at the timeout; its process group was killed.
    TimedOut(Duration),
    /// Could not be started at all (missing binary, permissions).
    NotStarted(String),
}

/// A finished hook run: what happened, what it printed, how long it took.
#[derive(Debug, Clone)]
pub struct HookRun {
    /// How it ended.
    pub outcome: HookOutcome,
    /// Combined stdout and stderr, cut at a few KiB.
    pub output: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl HookRun {
    /// True when the command exited 0.
    pub fn ok(&self) -> bool {
        self.outcome == HookOutcome::Succeeded
    }

    /// One line for logs and status reports: which command failed and how.
    pub fn summary(&self, what: &str, cmd: &HookCommand) -> String {
        let why = match &self.outcome {
            HookOutcome::Succeeded => "succeeded".to_string(),
            HookOutcome::Failed(s) => s.clone(),
            HookOutcome::TimedOut(t) => format!("timed out after {}; process group killed", humantime::format_duration(*t)),
            HookOutcome::NotStarted(s) => format!("could not start: {s}"),
        };
        format!("{what} `{cmd}` {why}")
    }

    /// For logs and status reports: [`HookRun::summary`], then everything the command printed
    /// (bounded), so that [`crate::model::status::reason`] finds the line that says why (nginx's
    /// `[emerg]` line comes after its `[notice] signal process started`, never first).
    pub fn describe(&self, what: &str, cmd: &HookCommand) -> String {
        let head = self.summary(what, cmd);
        let out = self.output.trim();
        if out.is_empty() {
            head
        } else {
            format!("{head}\n{out}")
        }
    }
}

/// What an app's hook is told about the change it runs for (confd #502): the `{dest}` and
/// `{version}` placeholders beside `{src}`, and `ZKCOORD_APP`, `ZKCOORD_VERSION`,
/// `ZKCOORD_PREVIOUS_VERSION`, `ZKCOORD_SHA256`, `ZKCOORD_DEST` in its environment, so one
/// script can serve several apps and say in its own log what it reloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookContext {
    /// The app's name.
    pub app: String,
    /// The destination as configured (not a symlink's target).
    pub dest: PathBuf,
    /// The version being applied: the `conf-` node's name, or a rendered app's `members:N`.
    pub version: String,
    /// What this host applied before (empty in the environment when nothing was).
    pub previous_version: Option<String>,
    /// sha256 of the new content as published (a bundle's archive).
    pub sha256: String,
    /// Set on the reload (and verify) that runs after a rollback: the files hold the previous
    /// version again; `ZKCOORD_ROLLBACK=1` tells a script so.
    pub rollback: bool,
}

impl HookContext {
    /// The context of applying `version` (with `sha256`) of `app` over `previous_version`.
    pub fn new(app: &crate::config::AppConfig, version: String, previous_version: Option<String>, sha256: String) -> HookContext {
        HookContext { app: app.name.clone(), dest: app.dest.clone(), version, previous_version, sha256, rollback: false }
    }

    /// This context for the reload after a rollback.
    pub fn rolled_back(&self) -> HookContext {
        HookContext { rollback: true, ..self.clone() }
    }

    /// The placeholders, with `{src}` when the hook checks a staged candidate.
    fn vars<'a>(&'a self, src: Option<&'a str>, dest: &'a str) -> Vec<(&'static str, &'a str)> {
        let mut vars = vec![("dest", dest), ("version", self.version.as_str())];
        vars.extend(src.map(|s| ("src", s)));
        vars
    }

    /// The `ZKCOORD_*` environment.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("ZKCOORD_APP", self.app.clone()),
            ("ZKCOORD_VERSION", self.version.clone()),
            ("ZKCOORD_PREVIOUS_VERSION", self.previous_version.clone().unwrap_or_default()),
            ("ZKCOORD_SHA256", self.sha256.clone()),
            ("ZKCOORD_DEST", self.dest.to_string_lossy().into_owned()),
        ];
        if self.rollback {
            env.push(("ZKCOORD_ROLLBACK", "1".into()));
        }
        env
    }
}

/// The PATH hooks get: the daemon's own environment is not passed on.
const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `cmd` with `{src}` replaced by `src`, killing its process group after `timeout`.
pub async fn run(cmd: &HookCommand, src: Option<&Path>, timeout: Duration) -> HookRun {
    run_as(cmd, None, src, timeout, None).await
}

/// Like [`run`], as `user` (a name or uid) when given, told about the change in `ctx` when it
/// runs for an app. Hooks get a clean environment (PATH, HOME, USER, LOGNAME, LANG=C.UTF-8, and
/// `ctx`'s `ZKCOORD_*`): nothing of the daemon's, no NOTIFY_SOCKET, no secrets.
pub async fn run_as(cmd: &HookCommand, ctx: Option<&HookContext>, src: Option<&Path>, timeout: Duration, user: Option<&str>) -> HookRun {
    let argv = expand(cmd, ctx, src);
    let started = Instant::now();
    let account = match user {
        None => nix::unistd::User::from_uid(nix::unistd::Uid::current()).ok().flatten(),
        Some(u) => {
            let found = match u.parse::<u32>() {
                Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten(),
                Err(_) => nix::unistd::User::from_name(u).ok().flatten(),
            };
            if found.is_none() {
                let why = format!("no user {u:?} to run as");
                return HookRun { outcome: HookOutcome::NotStarted(why), output: String::new(), elapsed: started.elapsed() };
            }
            found
        }
    };
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", HOOK_PATH)
        .env("LANG", "C.UTF-8")
        .envs(ctx.map(HookContext::env).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(a) = &account {
        command.env("HOME", &a.dir).env("USER", &a.name).env("LOGNAME", &a.name);
        if user.is_some() {
            command.uid(a.uid.as_raw()).gid(a.gid.as_raw());
        }
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return HookRun { outcome: HookOutcome::NotStarted(e.to_string()), output: String::new(), elapsed: started.elapsed() }
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let collect = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (_, _, status) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err), child.wait());
        out.extend_from_slice(&err);
        (out, status)
    };
    let (outcome, output) = match tokio::time::timeout(timeout, collect).await {
        Ok((out, Ok(status))) if status.success() => (HookOutcome::Succeeded, out),
        Ok((out, Ok(status))) => (HookOutcome::Failed(describe_status(status)), out),
        Ok((out, Err(e))) => (HookOutcome::Failed(format!("wait failed: {e}")), out),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            (HookOutcome::TimedOut(timeout), Vec::new())
        }
    };
    HookRun { outcome, output: truncate(&output), elapsed: started.elapsed() }
}

/// `cmd`'s argv with its placeholders filled from `ctx` and `src`.
fn expand(cmd: &HookCommand, ctx: Option<&HookContext>, src: Option<&Path>) -> Vec<String> {
    let src = src.map(|p| p.to_string_lossy().into_owned());
    match ctx {
        None => cmd.argv(src.as_deref().map(Path::new)),
        Some(ctx) => {
            let dest = ctx.dest.to_string_lossy();
            cmd.argv_with(&ctx.vars(src.as_deref(), &dest))
        }
    }
}

/// The command line `cmd` would run, with its placeholders filled from `ctx` and `src` where
/// given, quoted so it can be pasted into a shell: what `zkcoordd --dry-run` shows an operator.
pub fn command_line(cmd: &HookCommand, ctx: Option<&HookContext>, src: Option<&Path>) -> String {
    expand(cmd, ctx, src).iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

/// A word as a POSIX shell would need it: bare when it is plainly safe, single-quoted otherwise.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,{}".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "failed".into(),
    }
}

fn truncate(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= OUTPUT_LIMIT {
        return text.into_owned();
    }
    let mut cut = text.len() - OUTPUT_LIMIT;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &text[cut..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str) -> HookCommand {
        HookCommand::Shell(s.into())
    }

    #[tokio::test]
    async fn success_failure_and_output_are_reported() {
        let r = run(&sh("echo hello; echo oops >&2"), None, Duration::from_secs(5)).await;
        assert!(r.ok());
        assert!(r.output.contains("hello") && r.output.contains("oops"));
        let r = run(&sh("exit 3"), None, Duration::from_secs(5)).await;
        assert_eq!(r.outcome, HookOutcome::Failed("exited with status 3".into()));
    }

    #[tokio::test]
    async fn a_hanging_hook_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-alive");
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let r = run(&sh(&script), None, Duration::from_millis(300)).await;
        assert!(matches!(r.outcome, HookOutcome::TimedOut(_)), "{:?}", r.outcome);
        assert!(r.elapsed < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "the grandchild survived the process-group kill");
    }

    #[tokio::test]
    async fn missing_binary_is_not_started_and_src_is_substituted() {
        let r = run(&HookCommand::Argv(vec!["/nonexistent/bin".into()]), None, Duration::from_secs(1)).await;
        assert!(matches!(r.outcome, HookOutcome::NotStarted(_)));
        let r = run(&HookCommand::Argv(vec!["echo".into(), "{src}".into()]), Some(Path::new("/x/y")), Duration::from_secs(2)).await;
        assert_eq!(r.output.trim(), "/x/y");
    }

    #[test]
    fn command_lines_are_quoted_for_a_shell() {
        let argv = HookCommand::Argv(vec!["sh".into(), "-c".into(), "grep -q 'ok' {src}".into()]);
        assert_eq!(command_line(&argv, None, Some(Path::new("<staged file>"))), r#"sh -c 'grep -q '\''ok'\'' <staged file>'"#);
        let plain = HookCommand::Argv(vec!["nginx".into(), "-s".into(), "reload".into()]);
        assert_eq!(command_line(&plain, None, None), "nginx -s reload");
        assert_eq!(command_line(&sh("nginx -t -c {src}"), None, Some(Path::new("/tmp/x"))), "/bin/sh -c 'nginx -t -c /tmp/x'");
    }

    #[tokio::test]
    async fn hooks_get_a_clean_environment_and_can_run_as_another_user() {
        std::env::set_var("ZKCOORD_SECRET_FOR_TEST", "leak");
        let r = run(&sh("echo ${ZKCOORD_SECRET_FOR_TEST:-clean} $PATH"), None, Duration::from_secs(2)).await;
        assert_eq!(r.output.trim(), format!("clean {HOOK_PATH}"));
        if nix::unistd::Uid::effective().is_root() {
            let r = run_as(&sh("id -u; echo $USER"), None, None, Duration::from_secs(2), Some("nobody")).await;
            assert!(r.ok(), "{r:?}");
            assert_eq!(r.output.split_whitespace().collect::<Vec<_>>(), vec!["65534", "nobody"]);
        }
        let r = run_as(&sh("true"), None, None, Duration::from_secs(2), Some("no-such-user-zk")).await;
        assert!(matches!(r.outcome, HookOutcome::NotStarted(ref w) if w.contains("no-such-user-zk")));
    }

    #[tokio::test]
    async fn hooks_do_not_inherit_the_notify_socket() {
        std::env::set_var("NOTIFY_SOCKET", "/run/should-not-leak");
        let r = run(&sh("echo ${NOTIFY_SOCKET:-unset}"), None, Duration::from_secs(2)).await;
        assert_eq!(r.output.trim(), "unset");
    }
}
