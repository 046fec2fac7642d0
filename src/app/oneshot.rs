//! `zkcoordd --once` and `zkcoordd --dry-run`: one pass over this host's apps without the
//! daemon's components (no election, no intake, no status node), for provisioning scripts,
//! image builds and an operator's "what would this do?".
//!
//! Both run the follower's own [`Applier`]: `--once` applies through the same decide and apply
//! functions (and so reads and writes the same state file, and a later daemon start does not
//! re-apply); `--dry-run` stops after the read-only half (list, decide, fetch and verify) and
//! prints what the other half would do.

use crate::app::follower::{Applier, Fetched, Progress};
use crate::config::{AppConfig, Config};
use crate::exit;
use crate::host::hooks;
use crate::host::install;
use crate::model::layout::VersionId;
use crate::zk::session;
use crate::model::status::ApplyResult;
use crate::metrics::Metrics;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zookeeper_client as zk;

/// How long a one-shot run keeps trying to reach ZooKeeper before it gives up with exit 69.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// What `--dry-run` shows in place of the staged file's path in the check command (the real
/// one is a random dotfile beside the destination).
pub const STAGED_PLACEHOLDER: &str = "<staged file>";

/// How one app came out of `--once`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Nothing to do: the host already runs `applied` (the newest, or newer than what is left).
    UpToDate(String),
    /// The versions node is missing or empty.
    NothingPublished,
    /// The version was applied (or found already on disk and recorded).
    Applied(String),
    /// The apply failed; one line saying which version and why.
    Failed(String),
    /// The destination was edited by hand and `on_drift` leaves it: what is there, what is kept.
    Left(String),
}

/// Runs `zkcoordd --once`: applies the newest version of every app, then exits.
/// Returns 0 when every app is up to date or was applied, 1 when an apply failed, 69 when
/// ZooKeeper could not be reached or failed midway, 64 when the role runs no apps.
pub async fn once(config: &Config) -> i32 {
    if !config.role.runs_app() {
        eprintln!("zkcoordd: --once applies [[app]] entries, and role \"{}\" runs none; use a config with role \"app\" or \"both\"", config.role);
        return exit::USAGE;
    }
    let client = match connect(config).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Recorded as the daemon records them, and dropped: a one-shot run serves no /metrics.
    let metrics = Arc::new(Metrics::new());
    let mut code = exit::OK;
    let Some(freezes) = read_freezes(&client, config).await else {
        session::close(client).await;
        return exit::UNAVAILABLE;
    };
    for app in &config.apps {
        if let Some(r) = app.rendered() {
            println!("{}: rendered from service {} by the running daemon; skipped", app.name, r.service);
            continue;
        }
        if let Some(why) = freezes.line(&app.name) {
            println!("{}: {why}; nothing applied", app.name);
            continue;
        }
        let applier = Applier::new(config, app, metrics.clone());
        match apply_once(&applier, &client).await {
            Ok(Outcome::UpToDate(v)) => println!("{}: up to date at {v}", app.name),
            Ok(Outcome::NothingPublished) => println!("{}: nothing published yet at {}", app.name, applier.versions),
            Ok(Outcome::Applied(v)) => println!("{}: applied {v} to {}", app.name, app.dest.display()),
            Ok(Outcome::Left(line)) => println!("{}: {line}", app.name),
            Ok(Outcome::Failed(line)) => {
                eprintln!("zkcoordd: {}: {line}", app.name);
                code = code.max(exit::FAILURE);
            }
            Err(e) => {
                eprintln!(
                    "zkcoordd: {}: ZooKeeper failed while reading {}: {e}; nothing changed for this app, run --once again",
                    app.name, applier.versions
                );
                code = exit::UNAVAILABLE;
            }
        }
    }
    session::close(client).await;
    code
}

/// The freeze flags: a freeze holds `--once` and `--dry-run` as it holds the daemon. None (the
/// line printed) when ZooKeeper cannot say.
async fn read_freezes(client: &zk::Client, config: &Config) -> Option<crate::model::freeze::Freezes> {
    match crate::zk::freeze::read(client, &config.layout()).await {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("zkcoordd: ZooKeeper failed while reading the freeze flags at {}: {e}; nothing changed, run again", config.layout().freezes());
            None
        }
    }
}

/// One app through the follower's decide-and-apply path, once.
async fn apply_once(applier: &Applier, client: &zk::Client) -> Result<Outcome, zk::Error> {
    let mut p = applier.progress();
    applier.sync(client).await?;
    let Some((newest, stream)) = newest(applier, client).await? else {
        return Ok(Outcome::NothingPublished);
    };
    if !applier.needs_apply(client, &newest, stream, &mut p).await? {
        return Ok(match (&p.report().drift, p.report().attempted.as_deref(), p.report().error.as_deref()) {
            // A hold keeps a newer version out: the run did not do what it is for.
            (Some(d), Some(_), Some(why)) if d.held() => Outcome::Failed(one_line(why)),
            (Some(d), _, _) => Outcome::Left(format!("{}; left as it is (on_drift = \"{}\")", d.describe(), d.action.as_str())),
            (None, _, _) => Outcome::UpToDate(applied_name(&p, &newest)),
        });
    }
    applier.apply(client, &newest, stream, &mut p).await?;
    let r = p.report();
    Ok(match r.result {
        ApplyResult::Ok if r.version.as_deref() == Some(newest.name.as_str()) => match p.state_error() {
            None => Outcome::Applied(newest.name.clone()),
            Some(e) => Outcome::Failed(format!(
                "applied {newest}, but the state file could not record it: {e}; fix {} and run --once again",
                applier.state.dir().display()
            )),
        },
        // `apply` found the version gone (pruned meanwhile) and changed nothing.
        ApplyResult::Ok | ApplyResult::Pending => {
            Outcome::Failed(format!("{newest} was deleted while being read; nothing applied, run --once again"))
        }
        result => Outcome::Failed(format!(
            "{} {}: {}; the old file is kept",
            result.as_str(),
            r.attempted.as_deref().unwrap_or(&newest.name),
            one_line(r.error.as_deref().unwrap_or("no reason given"))
        )),
    })
}

/// Runs `zkcoordd --dry-run`: prints, for every app, what `--once` would do, and changes
/// nothing (no file, no state, no znode). Returns 0, or 69 when ZooKeeper could not be read.
pub async fn dry_run(config: &Config) -> i32 {
    if !config.role.runs_app() {
        println!("role \"{}\" applies no apps: nothing would happen", config.role);
        return exit::OK;
    }
    let client = match connect(config).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let metrics = Arc::new(Metrics::new());
    let mut code = exit::OK;
    let Some(freezes) = read_freezes(&client, config).await else {
        session::close(client).await;
        return exit::UNAVAILABLE;
    };
    for app in &config.apps {
        if let Some(r) = app.rendered() {
            println!("{}: rendered from service {} by the running daemon; --dry-run does not render it", app.name, r.service);
            continue;
        }
        if let Some(why) = freezes.line(&app.name) {
            println!("{}: {why}; nothing would happen", app.name);
            continue;
        }
        let applier = Applier::new(config, app, metrics.clone());
        match describe(&applier, &client).await {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("zkcoordd: {}: ZooKeeper failed while reading {}: {e}", app.name, applier.versions);
                code = exit::UNAVAILABLE;
            }
        }
    }
    session::close(client).await;
    code
}

/// What `--once` would do for one app, as the lines `--dry-run` prints. Reads only.
async fn describe(applier: &Applier, client: &zk::Client) -> Result<String, zk::Error> {
    let app = &applier.app;
    let name = &app.name;
    let mut p = applier.progress();
    applier.sync(client).await?;
    let Some((newest, stream)) = newest(applier, client).await? else {
        return Ok(format!("{name}: nothing published yet at {}; nothing would happen\n", applier.versions));
    };
    if !applier.needs_apply(client, &newest, stream, &mut p).await? {
        if let Some(d) = &p.report().drift {
            return Ok(format!("{name}: {}; would leave it as it is (on_drift = \"{}\"){}\n", d.describe(), d.action.as_str(), if p.report().attempted.is_some() { format!(" and not apply {newest}") } else { String::new() }));
        }
        return Ok(format!("{name}: up to date at {}; nothing would happen\n", applied_name(&p, &newest)));
    }
    let (bytes, sha) = match applier.fetch(client, &newest, stream, p.applied().and_then(|a| a.signed_ms)).await? {
        Fetched::Gone => return Ok(format!("{name}: {newest} was deleted while being read; nothing would happen\n")),
        Fetched::Hidden(_) => return Ok(format!("{name}: a rollout holds {newest} back from this host; nothing would happen\n")),
        Fetched::Refused(reason) | Fetched::Pending(reason) => return Ok(format!("{name}: would refuse {newest}: {reason}\n")),
        Fetched::Verified { bytes, sha256, .. } => (bytes, sha256),
    };
    if app.kind() == crate::config::AppKind::Bundle {
        let what = if crate::host::bundle::holds(app, &sha) { "already holds" } else { "would switch to" };
        return Ok(format!("{name}: {} {what} bundle {newest} ({} bytes packed)\n", app.dest.display(), bytes.len()));
    }
    if let Err(e) = install::resolve_dest(app) {
        return Ok(format!("{name}: would fail to apply {newest}: {e}\n"));
    }
    if install::holds(&app.dest, &sha) {
        return Ok(format!(
            "{name}: {} already holds {newest}; would record it as applied, without a reload\n",
            app.dest.display()
        ));
    }
    let current = std::fs::read(&app.dest).ok();
    let applied = p.applied().map(|a| a.version.as_str()).unwrap_or("none");
    let mut out = format!(
        "{name}: would apply {newest} ({} bytes) to {} (applied here: {applied}{})\n",
        bytes.len(),
        app.dest.display(),
        if current.is_none() { "; the file does not exist yet" } else { "" }
    );
    out.push_str(&unified_diff(app, &newest, current.as_deref().unwrap_or_default(), &bytes));
    let ctx = crate::host::hooks::HookContext::new(app, newest.to_string(), p.applied().map(|a| a.version.clone()), sha.clone());
    out.push_str(&commands(app, Some(&ctx)));
    Ok(out)
}

/// The unified diff from the file on disk to the new bytes, headed `--- <dest>` and
/// `+++ <app> <version>`; binary content is summarised instead.
pub fn unified_diff(app: &AppConfig, version: &VersionId, old: &[u8], new: &[u8]) -> String {
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(old), Ok(new)) => similar::TextDiff::from_lines(old, new)
            .unified_diff()
            .context_radius(3)
            .header(&app.dest.display().to_string(), &format!("{} {version}", app.name))
            .to_string(),
        _ => format!(
            "Binary content of {} differs ({} bytes on disk, {} bytes in {} {version})\n",
            app.dest.display(),
            old.len(),
            new.len(),
            app.name
        ),
    }
}

/// The check and reload commands an apply would run, in order.
/// With `ctx`, the placeholders are filled as the apply would fill them.
fn commands(app: &AppConfig, ctx: Option<&hooks::HookContext>) -> String {
    let name = &app.name;
    let user = app.run_as.as_ref().map(|u| format!(" as {u}")).unwrap_or_default();
    let check = match &app.check {
        Some(c) => format!("{name}: would run check{user}: {}\n", hooks::command_line(c, ctx, Some(Path::new(STAGED_PLACEHOLDER)))),
        None => format!("{name}: no check command\n"),
    };
    let reload = match &app.reload {
        Some(c) => format!("{name}: would run reload{user}: {}\n", hooks::command_line(c, ctx, None)),
        None => format!("{name}: no reload command\n"),
    };
    check + &reload
}

/// Connects within [`CONNECT_PATIENCE`], or says why not and returns the exit code.
async fn connect(config: &Config) -> Result<zk::Client, i32> {
    session::connect_within(&config.zookeeper.hosts, config.zookeeper.session_timeout, CONNECT_PATIENCE)
        .await
        .map_err(|why| match why {
            session::ConnectFailure::Refused(m) => {
                eprintln!("zkcoordd: {m}; nothing was changed");
                exit::NOPERM
            }
            session::ConnectFailure::Unreachable(m) => {
                eprintln!("zkcoordd: {m}; nothing was changed (check that ZooKeeper is running and zookeeper.hosts in the config)");
                exit::UNAVAILABLE
            }
        })
}

/// The newest version and its stream, or None when nothing was published.
async fn newest(applier: &Applier, client: &zk::Client) -> Result<Option<(VersionId, i64)>, zk::Error> {
    Ok(applier.list(client).await?.and_then(|l| l.newest.map(|n| (n, l.stream))))
}

/// A multi-line reason (a hook's output, then which command failed) on one line.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// What this host runs, for "up to date at ...".
fn applied_name(p: &Progress, newest: &VersionId) -> String {
    p.applied().map(|a| a.version.clone()).unwrap_or_else(|| newest.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HookCommand;
    use std::path::PathBuf;

    fn app() -> AppConfig {
        AppConfig {
            check: Some(HookCommand::Argv(vec!["web".into(), "-t".into(), "{src}".into()])),
            hook_timeout: Duration::from_secs(1),
            ..AppConfig::for_tests("web", &PathBuf::from("/etc/web.conf"))
        }
    }

    #[test]
    fn text_diffs_are_unified_with_dest_and_version_headers() {
        let d = unified_diff(&app(), &VersionId::from_seq(7), b"a\nb\n", b"a\nc\n");
        assert_eq!(d, "--- /etc/web.conf\n+++ web conf-0000000007\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n");
    }

    #[test]
    fn binary_content_is_summarised_and_commands_name_the_placeholder() {
        let d = unified_diff(&app(), &VersionId::from_seq(7), b"a\n", &[0xff, 0xfe]);
        assert_eq!(d, "Binary content of /etc/web.conf differs (2 bytes on disk, 2 bytes in web conf-0000000007)\n");
        assert_eq!(commands(&app(), None), "web: would run check: web -t '<staged file>'\nweb: no reload command\n");
        let as_nobody = AppConfig { run_as: Some("nobody".into()), ..app() };
        assert_eq!(commands(&as_nobody, None), "web: would run check as nobody: web -t '<staged file>'\nweb: no reload command\n");
    }
}
