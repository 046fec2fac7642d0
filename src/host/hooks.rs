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
/// `ZKCOORD_PREVIOUS_VERSION`, `ZKCOORD_SHA256`, `ZKCOORD_DEST`, `ZKCOORD_PUBLISH_ID` in its environment, so one
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
    /// The publish that made the version (see [`crate::model::request::RequestHeader::publish_id`]);
    /// none for a plain client's version or a rendered app.
    pub publish_id: Option<String>,
    /// Set on the reload (and verify) that runs after a rollback: the files hold the previous
    /// version again; `ZKCOORD_ROLLBACK=1` tells a script so.
    pub rollback: bool,
}

impl HookContext {
    /// The context of applying `version` (with `sha256`) of `app` over `previous_version`.
    pub fn new(app: &crate::config::AppConfig, version: String, previous_version: Option<String>, sha256: String) -> HookContext {
        HookContext { app: app.name.clone(), dest: app.dest.clone(), version, previous_version, sha256, publish_id: None, rollback: false }
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
            ("ZKCOORD_PUBLISH_ID", self.publish_id.clone().unwrap_or_default()),
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
    run_with(cmd, ctx, src, timeout, user, &[]).await
}

/// A staged file shown at its destination's path: `(staged, dest)`.
pub type Overlay = (PathBuf, PathBuf);

/// Like [`run_as`] with no `{src}`, in a private mount namespace where each staged file of
/// `overlay` is bind-mounted over its destination: the command (`nginx -t`, say) reads a set
/// of files at their real paths, includes and all, while nothing on disk has changed and the
/// running service has seen none of it. Needs [`private_mounts`] (root, CAP_SYS_ADMIN), and
/// every destination to exist (a bind mount needs a file to cover).
pub async fn run_overlaid(cmd: &HookCommand, ctx: Option<&HookContext>, timeout: Duration, user: Option<&str>, overlay: &[Overlay]) -> HookRun {
    run_with(cmd, ctx, None, timeout, user, overlay).await
}

/// Whether this process may give a hook a private mount namespace (see [`run_overlaid`]):
/// tried once, by starting `true` in one.
pub fn private_mounts() -> bool {
    static ABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ABLE.get_or_init(|| {
        let probe = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .env_clear()
            .env("PATH", HOOK_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        matches!(probe, Ok(s) if s.success())
    })
}

/// What an overlaid hook's output starts with when the overlay itself could not be set up
/// (not the command's verdict): the caller then checks another way.
pub const OVERLAY_FAILED: &str = "zkcoord-overlay:";

/// Run by `sh` inside `unshare --mount --propagation private` (util-linux): bind-mounts its
/// argument pairs (staged, destination) up to `--`, then execs the rest. Paths travel as
/// arguments, never inside the script, so no quoting is involved.
const OVERLAY_SCRIPT: &str = r#"while [ "$1" != -- ]; do why=$(mount --bind -- "$1" "$2" 2>&1) || { echo "zkcoord-overlay: cannot show $1 at $2: $why" >&2; exit 125; }; shift 2; done; shift; exec "$@""#;

/// `argv` wrapped to run over `overlay` (see [`OVERLAY_SCRIPT`]), as `ids` when given: the
/// identity is dropped by `setpriv` after the mounts, which need root.
fn overlaid_argv(argv: Vec<String>, overlay: &[Overlay], ids: Option<(u32, u32)>) -> Vec<String> {
    let mut out: Vec<String> = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", OVERLAY_SCRIPT, "zkcoord-overlay"].map(String::from).to_vec();
    for (staged, dest) in overlay {
        out.push(staged.to_string_lossy().into_owned());
        out.push(dest.to_string_lossy().into_owned());
    }
    out.push("--".into());
    if let Some((uid, gid)) = ids {
        out.extend(["setpriv".into(), format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "--".into()]);
    }
    out.extend(argv);
    out
}

async fn run_with(cmd: &HookCommand, ctx: Option<&HookContext>, src: Option<&Path>, timeout: Duration, user: Option<&str>, overlay: &[Overlay]) -> HookRun {
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
    let argv = match overlay {
        [] => argv,
        _ => overlaid_argv(argv, overlay, account.as_ref().filter(|_| user.is_some()).map(|a| (a.uid.as_raw(), a.gid.as_raw()))),
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
        if user.is_some() && overlay.is_empty() {
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
    expand(cmd, ctx, src).iter().map(|w| crate::config::shell_quote(w)).collect::<Vec<_>>().join(" ")
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

    #[tokio::test]
    async fn an_overlaid_hook_reads_staged_files_at_their_destinations_and_the_disk_keeps_the_old() {
        if !nix::unistd::Uid::effective().is_root() {
            assert!(!private_mounts(), "private mounts need root");
            return;
        }
        assert!(private_mounts(), "root gets a private mount namespace");
        let dir = tempfile::tempdir().unwrap();
        let (dest, staged) = (dir.path().join("site.conf"), dir.path().join(".site.conf.staged"));
        std::fs::write(&dest, "old\n").unwrap();
        std::fs::write(&staged, "new\n").unwrap();
        let overlay = [(staged.clone(), dest.clone())];
        let cat = HookCommand::Argv(vec!["cat".into(), dest.display().to_string()]);
        let r = run_overlaid(&cat, None, Duration::from_secs(5), None, &overlay).await;
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.output, "new\n");
        // As another user: the identity is dropped after the mounts.
        let id = HookCommand::Argv(vec!["sh".into(), "-c".into(), format!("id -u; cat {}", dest.display())]);
        let r = run_overlaid(&id, None, Duration::from_secs(5), Some("nobody"), &overlay).await;
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.output, "65534\nnew\n");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old\n", "the disk never changed");
        // Nothing to cover: said as the overlay's failure, not the command's verdict.
        let missing = [(staged.clone(), dir.path().join("absent.conf"))];
        let r = run_overlaid(&cat, None, Duration::from_secs(5), None, &missing).await;
        assert!(r.output.starts_with(OVERLAY_FAILED), "{r:?}");
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
