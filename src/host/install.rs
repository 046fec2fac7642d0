//! Puts new bytes at a destination without ever leaving a half-written file: temp file in the
//! same directory, check command, rename, directory fsync, reload command, and rollback when the
//! reload fails.

use crate::config::{AppConfig, HookCommand};
use crate::host::hooks::{self, HookContext, HookRun};
use crate::host::verify;
use crate::metrics::{Hook, Metrics};
use nix::unistd::{Gid, Group, Uid, User};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What an install did.
#[derive(Debug, Clone)]
pub enum InstallResult {
    /// The new file is in place and the reload (if any) succeeded.
    Applied {
        /// The reload run, for logs.
        reload: Option<HookRun>,
    },
    /// The check command refused the new bytes; the old file was not touched.
    CheckFailed(String),
    /// The reload failed; the previous file was put back and reloaded again.
    ReloadFailed(String),
}

/// A failure to write: nothing was changed, and trying again later may work.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The destination's directory is missing.
    #[error("cannot write {dest}: directory {dir} does not exist")]
    MissingDir {
        /// The destination.
        dest: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// An I/O step failed.
    #[error("cannot {step} {path}: {source}{hint}")]
    Io {
        /// What we were doing.
        step: &'static str,
        /// To which file.
        path: PathBuf,
        /// The error.
        source: io::Error,
        /// What to do about it.
        hint: String,
    },
    /// A symlink sits at the destination and the app does not allow following it.
    #[error("{dest} is a symlink (to {target}); refusing to follow it (set follow_symlinks = true for this app if that is intended)")]
    Symlink {
        /// The destination.
        dest: PathBuf,
        /// Where it points.
        target: String,
    },
    /// The configured owner or group does not exist.
    #[error("cannot set owner of {dest}: {message}")]
    Owner {
        /// The destination.
        dest: PathBuf,
        /// Which name is unknown.
        message: String,
    },
}

fn io_err(step: &'static str, path: &Path, source: io::Error) -> InstallError {
    let hint = if source.kind() == io::ErrorKind::PermissionDenied {
        format!(" (running as uid {}; the packaged unit runs as root)", Uid::current())
    } else {
        String::new()
    };
    InstallError::Io { step, path: path.to_path_buf(), source, hint }
}

/// Who should own a written file; None keeps what the process creates with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ownership {
    /// Owner.
    pub uid: Option<Uid>,
    /// Group.
    pub gid: Option<Gid>,
}

impl Ownership {
    /// Resolves the app's `owner` and `group` (names or numbers).
    pub fn of(app: &AppConfig) -> Result<Ownership, InstallError> {
        let err = |message: String| InstallError::Owner { dest: app.dest.clone(), message };
        let uid = match &app.owner {
            None => None,
            Some(o) => Some(match o.parse::<u32>() {
                Ok(n) => Uid::from_raw(n),
                Err(_) => User::from_name(o).ok().flatten().ok_or_else(|| err(format!("no user named {o:?}")))?.uid,
            }),
        };
        let gid = match &app.group {
            None => None,
            Some(g) => Some(match g.parse::<u32>() {
                Ok(n) => Gid::from_raw(n),
                Err(_) => Group::from_name(g).ok().flatten().ok_or_else(|| err(format!("no group named {g:?}")))?.gid,
            }),
        };
        Ok(Ownership { uid, gid })
    }
}

/// A written, synced temp file beside the destination, removed on drop unless committed.
pub struct Staged {
    /// The temp file; a dotfile so include-globs like `conf.d/*.conf` never match it.
    temp: tempfile::NamedTempFile,
    /// Where it will go.
    dest: PathBuf,
}

impl Staged {
    /// Path of the staged file, for the check command's `{src}`.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Renames the staged file over the destination and makes the rename durable.
    pub fn commit(self) -> Result<(), InstallError> {
        let dest = self.dest;
        self.temp.persist(&dest).map_err(|e| io_err("rename into", &dest, e.error))?;
        sync_dir(&dest)
    }

    /// Commits, first reading what the destination held when `keep_previous` (for a rollback:
    /// without one, its bytes would be read for nothing).
    fn replace(self, owner: Ownership, keep_previous: bool) -> Result<Replaced, InstallError> {
        let dest = self.dest.clone();
        let previous = if keep_previous { read_previous(&dest)? } else { None };
        self.commit()?;
        Ok(Replaced { dest, previous, owner })
    }
}

/// Writes `bytes` to a temp file in `dest`'s directory with mode and owner set, and fsyncs it.
pub fn stage(dest: &Path, bytes: &[u8], mode: u32, owner: Ownership) -> Result<Staged, InstallError> {
    let dir = parent_dir(dest);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The directory is looked at only when the temp file cannot be made: on the path every
    // apply takes, that is one stat less.
    let mut temp = tempfile::Builder::new().prefix(&format!(".{name}.zkcoord-")).suffix(".tmp").tempfile_in(dir).map_err(|e| {
        if dir.is_dir() {
            io_err("create a temp file for", dest, e)
        } else {
            InstallError::MissingDir { dest: dest.to_path_buf(), dir: dir.to_path_buf() }
        }
    })?;
    temp.write_all(bytes).map_err(|e| io_err("write a temp file for", dest, e))?;
    let file = temp.as_file();
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| io_err("set the mode of", temp.path(), e))?;
    if owner.uid.is_some() || owner.gid.is_some() {
        std::os::unix::fs::fchown(file, owner.uid.map(|u| u.as_raw()), owner.gid.map(|g| g.as_raw()))
            .map_err(|e| io_err("set the owner of", temp.path(), e))?;
    }
    file.sync_all().map_err(|e| io_err("fsync", temp.path(), e))?;
    Ok(Staged { temp, dest: dest.to_path_buf() })
}

/// Removes staged files an earlier run left beside `app`'s destination: a daemon killed
/// between staging and rename (mid-check, say) leaves its `.<name>.zkcoord-*.tmp`, which
/// nothing else would ever remove. Only this host's applier writes them, and the state_dir
/// lock makes it the only one running, so any found at start are leftovers.
pub fn remove_staged_leftovers(app: &AppConfig) {
    let dest = resolve_dest(app).unwrap_or_else(|_| app.dest.clone());
    let Some(name) = dest.file_name().map(|n| n.to_string_lossy().into_owned()) else { return };
    let prefix = format!(".{name}.zkcoord-");
    let Ok(entries) = fs::read_dir(parent_dir(&dest)) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(app = %app.name, path = %entry.path().display(), "removed a staged file an earlier run left (stopped before installing it)"),
                Err(e) => tracing::warn!(app = %app.name, path = %entry.path().display(), "cannot remove a staged file an earlier run left: {e}"),
            }
        }
    }
}

/// Replaces `dest` with `bytes` atomically: readers see the old or the new file, never a mix.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32, owner: Ownership) -> Result<(), InstallError> {
    stage(dest, bytes, mode, owner)?.commit()
}

fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub(crate) fn sync_dir(dest: &Path) -> Result<(), InstallError> {
    let dir = parent_dir(dest);
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", dir, e))
}

/// The file that was at the destination before an install, for rollback.
struct Previous {
    /// Its bytes.
    bytes: Vec<u8>,
    /// Its mode bits.
    mode: u32,
}

/// The permission bits of the file at `dest`, if there is one.
pub fn existing_mode(dest: &Path) -> Option<u32> {
    fs::metadata(dest).ok().filter(|m| m.is_file()).map(|m| m.permissions().mode() & 0o7777)
}

fn read_previous(dest: &Path) -> Result<Option<Previous>, InstallError> {
    match fs::read(dest) {
        Ok(bytes) => {
            let mode = fs::metadata(dest).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
            Ok(Some(Previous { bytes, mode }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", dest, e)),
    }
}

/// Where the bytes really go. A symlink at the destination is refused unless the app says
/// `follow_symlinks`, in which case its target is replaced (atomically, beside the target) and
/// the link stays: a link planted by someone else must not redirect a root-owned write.
pub fn resolve_dest(app: &AppConfig) -> Result<PathBuf, InstallError> {
    match fs::symlink_metadata(&app.dest) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(&app.dest).map(|t| t.display().to_string()).unwrap_or_default();
            if !app.follow_symlinks {
                return Err(InstallError::Symlink { dest: app.dest.clone(), target });
            }
            fs::canonicalize(&app.dest).map_err(|e| io_err("resolve the symlink", &app.dest, e))
        }
        _ => Ok(app.dest.clone()),
    }
}

/// Runs the whole pipeline for `app` with `bytes`: stage, check, rename, reload, roll back.
/// Every hook run is timed into `metrics`. Callers go through
/// [`crate::host::bundle::install_any`], which sends a reload group's member to
/// [`crate::host::group`] instead.
pub async fn install(app: &AppConfig, ctx: &HookContext, bytes: Vec<u8>, metrics: &Metrics) -> Result<InstallResult, InstallError> {
    let (app, replaced) = if app.check.is_none() {
        // Nothing runs between staging and the rename: both in one trip to the blocking pool
        // (a thousand-host fan-out in one process paid for two of them per host).
        let (app, owner, mode) = prepare(app)?;
        let (dest, keep_previous) = (app.dest.clone(), may_roll_back(&app));
        let replaced = blocking(move || stage(&dest, &bytes, mode, owner)?.replace(owner, keep_previous)).await?;
        (app, replaced)
    } else {
        let checked = match stage_checked(app, ctx, bytes, metrics).await? {
            Ok(c) => c,
            Err(refused) => return Ok(refused),
        };
        let app = checked.app.clone();
        let keep_previous = may_roll_back(&app);
        (app, checked.commit(keep_previous).await?)
    };
    Ok(reload_or_roll_back(&app, ctx, metrics, move || replaced.restore()).await)
}

/// New content staged beside its destination, past the app's own `check`.
pub(crate) struct Checked {
    /// The app, its `dest` resolved through a followed symlink.
    pub(crate) app: AppConfig,
    staged: Staged,
    owner: Ownership,
}

/// A destination whose content was replaced, and what it held before: enough to put it back.
pub(crate) struct Replaced {
    dest: PathBuf,
    previous: Option<Previous>,
    owner: Ownership,
}

/// Stages `bytes` for `app` and runs its `check` on the staged file. The inner Err is the
/// check's refusal (the staged file is gone, the destination untouched).
pub(crate) async fn stage_checked(app: &AppConfig, ctx: &HookContext, bytes: Vec<u8>, metrics: &Metrics) -> Result<Result<Checked, InstallResult>, InstallError> {
    let (app, owner, mode) = prepare(app)?;
    let dest = app.dest.clone();
    let staged = blocking(move || stage(&dest, &bytes, mode, owner)).await?;

    if let Some(check) = &app.check {
        let run = run_hook(&app, ctx, metrics, Hook::Check, check, Some(staged.path())).await;
        if !run.ok() {
            drop(staged);
            return Ok(Err(InstallResult::CheckFailed(crate::model::status::bounded_error(run.describe("check", check)))));
        }
    }
    Ok(Ok(Checked { app, staged, owner }))
}

/// What staging `app`'s file needs: the app with its `dest` resolved through a followed symlink,
/// the owner, and the mode (without a configured one the file keeps the one it has; new files
/// get 0644).
fn prepare(app: &AppConfig) -> Result<(AppConfig, Ownership, u32), InstallError> {
    let owner = Ownership::of(app)?;
    let app = AppConfig { dest: resolve_dest(app)?, ..app.clone() };
    let mode = app.mode_for(existing_mode(&app.dest));
    Ok((app, owner, mode))
}

/// Whether a failed reload or verification can put the previous file back: only then does
/// [`install`] read it before the rename (a reload group always does, see [`Checked::commit`]).
fn may_roll_back(app: &AppConfig) -> bool {
    app.reload.is_some() || app.verify.is_some()
}

impl Checked {
    /// The staged file, not yet at its destination.
    pub(crate) fn staged_path(&self) -> &Path {
        self.staged.path()
    }

    /// Renames the staged file over the destination, keeping what it held when
    /// `keep_previous` (a reload group always keeps it: it puts every member back when one of
    /// them fails).
    pub(crate) async fn commit(self, keep_previous: bool) -> Result<Replaced, InstallError> {
        let Checked { staged, owner, .. } = self;
        blocking(move || staged.replace(owner, keep_previous)).await
    }
}

impl Replaced {
    /// Puts the previous content back (or removes a file that did not exist), saying which.
    pub(crate) fn restore(self) -> Result<&'static str, InstallError> {
        let Replaced { dest, previous, owner } = self;
        match previous {
            Some(p) => write_atomic(&dest, &p.bytes, p.mode, owner).map(|_| "previous file restored"),
            None => fs::remove_file(&dest)
                .map_err(|e| io_err("remove", &dest, e))
                .and_then(|_| sync_dir(&dest))
                .map(|_| "new file removed (there was no previous file)"),
        }
    }
}

/// The last steps of every install (files, bundles, rendered apps), once the new content is in
/// place: run the reload and verify that the service runs the new content
/// ([`crate::host::verify`]); if either fails, `roll_back` (which says what it put back), reload
/// and verify again, and report `reload-failed` with both outcomes. One place decides what a
/// failed reload means, so "applied" always means the service runs it.
pub(crate) async fn reload_or_roll_back(
    app: &AppConfig,
    ctx: &HookContext,
    metrics: &Metrics,
    roll_back: impl FnOnce() -> Result<&'static str, InstallError> + Send + 'static,
) -> InstallResult {
    if !may_roll_back(app) {
        return InstallResult::Applied { reload: None };
    }
    let failure = match reload_and_verify(app, ctx, metrics, verify::Attempt::New).await {
        Ok(run) => return InstallResult::Applied { reload: run },
        Err((_, failure)) => failure,
    };
    let restored = blocking(roll_back).await;
    let after = match &restored {
        Err(e) => format!("; rollback failed: {e}"),
        Ok(what) => match reload_and_verify(app, &ctx.rolled_back(), metrics, verify::Attempt::RolledBack).await {
            Ok(_) => format!("; {what} and reloaded"),
            Err((_, again)) => format!("; {what}; reload after rollback failed too:\n{again}"),
        },
    };
    // The head line says what failed and what was put back; the hooks' and the log's lines
    // follow, so that `reason` finds the line that says why.
    let (head, rest) = failure.split_once('\n').unwrap_or((&failure, ""));
    let after_head = after.lines().next().unwrap_or_default();
    let after_rest = after.split_once('\n').map_or("", |(_, r)| r);
    let mut text = format!("{head}{after_head}");
    for part in [rest, after_rest] {
        if !part.trim().is_empty() {
            text.push('\n');
            text.push_str(part.trim_end());
        }
    }
    InstallResult::ReloadFailed(crate::model::status::bounded_error(text))
}

/// Runs the reload (if any) and the verification (if any). Err is the run (if the reload ran)
/// and the failure as text: a head line, then what the command or the log said.
async fn reload_and_verify(app: &AppConfig, ctx: &HookContext, metrics: &Metrics, attempt: verify::Attempt) -> Result<Option<HookRun>, (Option<HookRun>, String)> {
    let baseline = verify::before_reload(app, attempt);
    let run = match &app.reload {
        Some(reload) => {
            let run = run_hook(app, ctx, metrics, Hook::Reload, reload, None).await;
            if !run.ok() {
                let text = run.describe("reload", reload);
                return Err((Some(run), text));
            }
            Some(run)
        }
        None => None,
    };
    if let Some(baseline) = baseline {
        let started = std::time::Instant::now();
        let verified = verify::after_reload(app, ctx, &baseline).await;
        metrics.hook_ran(&app.name, Hook::Verify, started.elapsed());
        match verified {
            Ok(how) => tracing::info!(app = %app.name, "{how}"),
            Err(e) => {
                let head = match &app.reload {
                    Some(reload) => format!("reload `{reload}` exited 0 but the service does not run the new content"),
                    None => "the service does not run the new content".to_string(),
                };
                return Err((run, format!("{head}\n{e}")));
            }
        }
    }
    Ok(run)
}

/// Runs one of `app`'s hooks with its timeout, and records how long it ran.
pub(crate) async fn run_hook(app: &AppConfig, ctx: &HookContext, metrics: &Metrics, hook: Hook, cmd: &HookCommand, src: Option<&Path>) -> HookRun {
    let run = hooks::run_as(cmd, Some(ctx), src, app.hook_timeout, app.run_as.as_deref()).await;
    metrics.hook_ran(&app.name, hook, run.elapsed);
    run
}

/// Like [`run_hook`], over staged files shown at their destinations (see [`hooks::run_overlaid`]).
pub(crate) async fn run_hook_overlaid(app: &AppConfig, ctx: &HookContext, metrics: &Metrics, hook: Hook, cmd: &HookCommand, overlay: &[hooks::Overlay]) -> HookRun {
    let run = hooks::run_overlaid(cmd, Some(ctx), app.hook_timeout, app.run_as.as_deref(), overlay).await;
    metrics.hook_ran(&app.name, hook, run.elapsed);
    run
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InstallError> + Send + 'static,
) -> Result<T, InstallError> {
    tokio::task::spawn_blocking(f).await.expect("file-writing task panicked")
}

/// Whether `dest` already holds exactly `bytes` (used to avoid rewrites and to spot drift).
pub fn holds(dest: &Path, sha256_hex: &str) -> bool {
    match fs::read(dest) {
        Ok(b) => crate::digest::sha256_hex(&b) == sha256_hex,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn app(dir: &Path, check: Option<&str>, reload: Option<&str>) -> AppConfig {
        AppConfig {
            mode: Some(0o640),
            check: check.map(|s| HookCommand::Shell(s.into())),
            reload: reload.map(|s| HookCommand::Shell(s.into())),
            hook_timeout: Duration::from_secs(5),
            ..AppConfig::for_tests("t", &dir.join("app.conf"))
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("zkcoord-"))
            .collect()
    }

    #[tokio::test]
    async fn applies_with_mode_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let a = app(d.path(), Some("grep -q good {src}"), Some("true"));
        let r = install(&a, &HookContext::default(), b"good\n".to_vec(), &Metrics::new()).await.unwrap();
        assert!(matches!(r, InstallResult::Applied { .. }));
        assert_eq!(fs::read(&a.dest).unwrap(), b"good\n");
        assert_eq!(fs::metadata(&a.dest).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(leftovers(d.path()).is_empty());
    }

    #[tokio::test]
    async fn without_a_mode_an_existing_file_keeps_its_own_and_a_new_one_gets_0644() {
        let d = tempfile::tempdir().unwrap();
        let a = AppConfig { mode: None, ..app(d.path(), None, None) };
        install(&a, &HookContext::default(), b"one\n".to_vec(), &Metrics::new()).await.unwrap();
        assert_eq!(fs::metadata(&a.dest).unwrap().permissions().mode() & 0o7777, 0o644);
        fs::set_permissions(&a.dest, fs::Permissions::from_mode(0o600)).unwrap();
        install(&a, &HookContext::default(), b"two\n".to_vec(), &Metrics::new()).await.unwrap();
        assert_eq!(fs::metadata(&a.dest).unwrap().permissions().mode() & 0o7777, 0o600);
        assert_eq!(fs::read(&a.dest).unwrap(), b"two\n");
    }

    #[tokio::test]
    async fn failed_check_keeps_the_old_file_and_removes_the_temp() {
        let d = tempfile::tempdir().unwrap();
        let a = app(d.path(), Some("grep -q good {src}"), Some("true"));
        fs::write(&a.dest, b"old good\n").unwrap();
        let r = install(&a, &HookContext::default(), b"bad\n".to_vec(), &Metrics::new()).await.unwrap();
        assert!(matches!(r, InstallResult::CheckFailed(_)), "{r:?}");
        assert_eq!(fs::read(&a.dest).unwrap(), b"old good\n");
        assert!(leftovers(d.path()).is_empty());
    }

    #[tokio::test]
    async fn failed_reload_restores_the_previous_file_and_reloads_again() {
        let d = tempfile::tempdir().unwrap();
        let count = d.path().join("reloads");
        let reload = format!("echo x >> {}; grep -q old {}", count.display(), d.path().join("app.conf").display());
        let a = app(d.path(), None, Some(&reload));
        fs::write(&a.dest, b"old\n").unwrap();
        let r = install(&a, &HookContext::default(), b"new\n".to_vec(), &Metrics::new()).await.unwrap();
        match r {
            InstallResult::ReloadFailed(msg) => assert!(msg.contains("previous file restored and reloaded"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&a.dest).unwrap(), b"old\n");
        assert_eq!(fs::read_to_string(&count).unwrap().lines().count(), 2);
    }

    #[tokio::test]
    async fn a_symlink_at_the_destination_is_refused_unless_followed() {
        let d = tempfile::tempdir().unwrap();
        let mut a = app(d.path(), None, None);
        let real = d.path().join("real.conf");
        fs::write(&real, b"old\n").unwrap();
        std::os::unix::fs::symlink(&real, &a.dest).unwrap();
        let e = install(&a, &HookContext::default(), b"new\n".to_vec(), &Metrics::new()).await.unwrap_err().to_string();
        assert!(e.contains("is a symlink") && e.contains("follow_symlinks"), "{e}");
        assert_eq!(fs::read(&real).unwrap(), b"old\n");
        a.follow_symlinks = true;
        assert!(matches!(install(&a, &HookContext::default(), b"new\n".to_vec(), &Metrics::new()).await.unwrap(), InstallResult::Applied { .. }));
        assert_eq!(fs::read(&real).unwrap(), b"new\n");
        assert!(fs::symlink_metadata(&a.dest).unwrap().file_type().is_symlink(), "the link stays a link");
    }

    #[tokio::test]
    async fn missing_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let mut a = app(d.path(), None, None);
        a.dest = d.path().join("nope/app.conf");
        let e = install(&a, &HookContext::default(), b"x".to_vec(), &Metrics::new()).await.unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("nope"), "{e}");
    }
}
