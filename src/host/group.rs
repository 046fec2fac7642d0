//! Reload groups on this host: members of one `[reload_group.<name>]` (nginx.conf and the
//! conf.d files beside it, each published or rendered as its own app) are gathered for the
//! group's quiet window, installed together, checked once as a whole, reloaded once, verified
//! once, and all put back together when any of that fails. Each member's own follower calls
//! [`install`] as it would install alone; the first to arrive gathers the others and runs
//! the batch, and every member gets the batch's outcome for its own status report.

use crate::config::{AppConfig, ReloadGroupConfig, QUIET_CAP};
use crate::host::hooks::{self, HookContext};
use crate::host::install::{self, InstallError, InstallResult, Replaced};
use crate::metrics::{Hook, Metrics};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A member's change waiting for its batch.
struct Waiting {
    checked: install::Checked,
    ctx: HookContext,
    reply: oneshot::Sender<Result<InstallResult, InstallError>>,
}

/// One group's state in this process.
#[derive(Default)]
struct Group {
    /// The batch being gathered, and when its last member arrived.
    gathering: Option<(Vec<Waiting>, Instant)>,
    /// Held while a batch installs and reloads: two batches never reload at once.
    running: Arc<tokio::sync::Mutex<()>>,
}

/// Every group of this process by name. Process-wide because the members are independent
/// followers that know their group only by its table; one service, one group, one reload.
static GROUPS: LazyLock<Mutex<HashMap<String, Arc<Mutex<Group>>>>> = LazyLock::new(Default::default);

/// Installs `bytes` for `app`, a member of `group`: its own `check` on the staged file first
/// (a refusal concerns this member only), then with whatever the other members bring within
/// the quiet window. Returns this member's outcome of the batch.
pub async fn install(group: &ReloadGroupConfig, app: &AppConfig, ctx: &HookContext, bytes: Vec<u8>, metrics: &Metrics) -> Result<InstallResult, InstallError> {
    let checked = match install::stage_checked(app, ctx, bytes, metrics).await? {
        Ok(c) => c,
        Err(refused) => return Ok(refused),
    };
    let slot = GROUPS.lock().expect("groups lock").entry(group.name.clone()).or_default().clone();
    let (reply, answer) = oneshot::channel();
    let gather = {
        let mut g = slot.lock().expect("group lock");
        let me = Waiting { checked, ctx: ctx.clone(), reply };
        match g.gathering.as_mut() {
            Some((batch, last)) => {
                batch.push(me);
                *last = Instant::now();
                false
            }
            None => {
                g.gathering = Some((vec![me], Instant::now()));
                true
            }
        }
    };
    if gather {
        let started = Instant::now();
        let cap = group.quiet * QUIET_CAP;
        let batch = loop {
            let last = slot.lock().expect("group lock").gathering.as_ref().map(|(_, l)| *l).unwrap_or(started);
            let due = (last + group.quiet).min(started + cap);
            if Instant::now() >= due {
                break slot.lock().expect("group lock").gathering.take().map(|(b, _)| b).unwrap_or_default();
            }
            tokio::time::sleep_until(due).await;
        };
        let running = slot.lock().expect("group lock").running.clone();
        let _one_at_a_time = running.lock().await;
        run(group, batch, metrics).await;
    }
    answer.await.unwrap_or_else(|_| Ok(InstallResult::ReloadFailed(format!("reload group {:?}: the batch ended without an answer", group.name))))
}

/// Installs every member of `batch`, runs the group's check, reload and verify once, and on
/// any failure puts every member's previous file back; every member gets the outcome.
async fn run(group: &ReloadGroupConfig, batch: Vec<Waiting>, metrics: &Metrics) {
    let members: Vec<String> = batch.iter().map(|w| format!("{}={}", w.ctx.app, w.ctx.version)).collect();
    tracing::info!(group = %group.name, members = %members.join(" "), "installing a reload group's changes together");
    // The group's hooks run as an app whose name is the group's.
    let Some(first) = batch.first() else { return };
    let as_app = AppConfig {
        name: group.name.clone(),
        check: None,
        reload: group.reload.clone(),
        verify: group.verify.clone(),
        hook_timeout: group.hook_timeout,
        run_as: group.run_as.clone(),
        reload_group: None,
        ..first.checked.app.clone()
    };
    let ctx = HookContext {
        app: group.name.clone(),
        dest: std::path::PathBuf::from(batch.iter().map(|w| w.ctx.dest.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")),
        version: members.join(" "),
        previous_version: Some(batch.iter().map(|w| format!("{}={}", w.ctx.app, w.ctx.previous_version.as_deref().unwrap_or(""))).collect::<Vec<_>>().join(" ")),
        sha256: batch.iter().map(|w| format!("{}={}", w.ctx.app, w.ctx.sha256)).collect::<Vec<_>>().join(" "),
        publish_id: Some(batch.iter().map(|w| format!("{}={}", w.ctx.app, w.ctx.publish_id.as_deref().unwrap_or(""))).collect::<Vec<_>>().join(" ")),
        rollback: false,
    };
    // The group's check over the staged set, before anything is installed: each staged file
    // is shown at its destination's path in a private mount namespace, so `nginx -t` reads
    // the new set, includes and all, while the files on disk and the running nginx know
    // nothing of it. A refusal then leaves every destination untouched.
    let checked_staged = match &group.check {
        Some(check) if hooks::private_mounts() && batch.iter().all(|w| w.checked.app.dest.is_file()) => {
            let overlay: Vec<hooks::Overlay> = batch.iter().map(|w| (w.checked.staged_path().to_path_buf(), w.checked.app.dest.clone())).collect();
            let run = install::run_hook_overlaid(&as_app, &ctx, metrics, Hook::Check, check, &overlay).await;
            if run.output.starts_with(hooks::OVERLAY_FAILED) {
                tracing::warn!(group = %group.name, why = %run.output.trim(), "cannot check the staged set in place; checking it installed");
                false
            } else if !run.ok() {
                let text = run.describe(&format!("reload group {:?} check", group.name), check);
                let (head, rest) = text.split_once('\n').unwrap_or((&text, ""));
                let text = if rest.is_empty() { format!("{head}; nothing installed, nothing reloaded") } else { format!("{head}; nothing installed, nothing reloaded\n{rest}") };
                let outcome = InstallResult::CheckFailed(crate::model::status::bounded_error(text));
                // The staged files go with the batch.
                for w in batch {
                    let _ = w.reply.send(Ok(outcome.clone()));
                }
                return;
            } else {
                true
            }
        }
        _ => false,
    };
    // Install all; a member that cannot be written fails alone, the others go on. Each
    // member's previous file is kept beside it first, so a daemon stopped mid-batch (kill -9,
    // power) finds on its next start a set that was never checked as a whole and puts it
    // back ([`recover`]) before it looks at anything.
    let mut replaced: Vec<Replaced> = Vec::new();
    let mut replies = Vec::new();
    let mut kept = Vec::new();
    for w in batch {
        let dest = w.checked.app.dest.clone();
        if let Err(e) = keep_previous(&dest) {
            let _ = w.reply.send(Err(e));
            continue;
        }
        kept.push(dest);
        match w.checked.commit(true).await {
            Ok(r) => {
                replaced.push(r);
                replies.push(w.reply);
            }
            Err(e) => {
                let _ = w.reply.send(Err(e));
            }
        }
    }
    if replies.is_empty() {
        return;
    }
    let restore_all = move || {
        let mut said = Vec::new();
        for r in replaced {
            said.push(r.restore()?);
        }
        Ok(if said.iter().all(|s| *s == "previous file restored") { "every member's previous file restored" } else { "every member's previous content restored" })
    };
    // Else the group's check runs over the installed set (nginx -t reads nginx.conf and its
    // includes): a new member file (no destination to show it at yet), or no private mounts
    // (not root). The kept previous files cover a crash until it is done.
    let refused = match &group.check {
        Some(check) if !checked_staged => {
            let run = install::run_hook(&as_app, &ctx, metrics, Hook::Check, check, None).await;
            (!run.ok()).then(|| run.describe(&format!("reload group {:?} check", group.name), check))
        }
        _ => None,
    };
    let outcome = match refused {
        None => install::reload_or_roll_back(&as_app, &ctx, metrics, restore_all).await,
        Some(text) => {
            let put_back = match install::blocking(restore_all).await {
                Ok(what) => format!("; {what}, nothing reloaded"),
                Err(e) => format!("; restoring failed: {e}"),
            };
            let (head, rest) = text.split_once('\n').unwrap_or((&text, ""));
            let text = if rest.is_empty() { format!("{head}{put_back}") } else { format!("{head}{put_back}\n{rest}") };
            InstallResult::CheckFailed(crate::model::status::bounded_error(text))
        }
    };
    // Done either way: the set is checked and running, or every previous file is back.
    for dest in &kept {
        let _ = std::fs::remove_file(kept_path(dest));
    }
    for reply in replies {
        let _ = reply.send(Ok(outcome.clone()));
    }
}

/// Where a batch keeps a member's previous file while it runs: a dotfile beside it, which
/// include globs like `conf.d/*.conf` never match.
fn kept_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.zkcoord-group-previous"))
}

/// Links the file at `dest` (if any) to [`kept_path`], durably: the old inode stays when the
/// new file is renamed over `dest`.
fn keep_previous(dest: &Path) -> Result<(), InstallError> {
    let kept = kept_path(dest);
    let _ = std::fs::remove_file(&kept);
    match std::fs::hard_link(dest, &kept) {
        Ok(()) => install::sync_dir(dest),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InstallError::Io { step: "keep the previous file of", path: dest.to_path_buf(), source: e, hint: String::new() }),
    }
}

/// At a member's start: a previous file kept by a batch that never finished (the daemon
/// stopped between installing the set and its check, reload or rollback) is put back, so the
/// destination holds what this host applied and reported, never a set nobody checked.
pub fn recover(app: &AppConfig) {
    if app.reload_group.is_none() {
        return;
    }
    let dest = install::resolve_dest(app).unwrap_or_else(|_| app.dest.clone());
    let kept = kept_path(&dest);
    if !kept.exists() {
        return;
    }
    match std::fs::rename(&kept, &dest).map_err(|e| e.to_string()).and_then(|_| install::sync_dir(&dest).map_err(|e| e.to_string())) {
        Ok(()) => tracing::warn!(app = %app.name, dest = %dest.display(), "a reload group's batch did not finish (the daemon stopped in it): the previous file is back"),
        Err(e) => tracing::error!(app = %app.name, dest = %dest.display(), "a reload group's batch did not finish, and its previous file could not be put back: {e}"),
    }
}
