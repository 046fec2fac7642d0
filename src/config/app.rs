//! `[[app]]` entries: what a host keeps at each destination, how it checks and reloads it, and
//! where the content comes from (published versions, or a rendered service), by type.

use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

use super::hook::HookCommand;
use super::service::services_path;
use super::verify::{self, VerifyConfig, VerifyKey};
use crate::model::drift::OnDrift;
use crate::model::member_guard::{MaxShrink, MemberGuard, DEFAULT_MAX_SHRINK};

/// An `[app.render]` table: the app's file is rendered from a service's live members instead
/// of being taken from published versions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderConfig {
    /// The service whose members are rendered (members at `/services/<name>` unless `path`).
    pub service: String,
    /// The members' znode, for a registry elsewhere (e.g. `/rpc`).
    #[serde(default)]
    pub path: Option<String>,
    /// The template file on this host (minijinja, i.e. Jinja2 syntax).
    pub template: PathBuf,
    /// Write an empty member list too; off by default, so a registry outage (or every member
    /// failing at once) does not take every upstream out of the rendered file. `true` is
    /// `min_members = 0` (and then `max_shrink` defaults to off); see [`RenderConfig::guard`].
    #[serde(default)]
    pub allow_empty: bool,
    /// Fewer live members than this are held back (the file keeps its content); absent: 1, or 0
    /// with `allow_empty = true`.
    #[serde(default)]
    pub min_members: Option<usize>,
    /// How far below the last applied member count one render may go (`"50%"`, a count like
    /// `10`, `"off"`); absent: [`DEFAULT_MAX_SHRINK`], or off when `min_members` is 0.
    #[serde(default, deserialize_with = "deserialize_max_shrink")]
    pub max_shrink: Option<MaxShrink>,
    /// Renders wait until the members have been quiet this long, so a burst makes one reload.
    #[serde(default = "default_render_quiet", with = "humantime_serde")]
    pub quiet: Duration,
    /// ... but never longer than this after the first change.
    #[serde(default = "default_render_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
}

impl RenderConfig {
    /// The znode whose children are the rendered members.
    pub fn members_path(&self) -> String {
        self.path.clone().unwrap_or_else(|| services_path(&self.service))
    }

    /// The member guard these keys make. `allow_empty = true` is `min_members = 0`; an app that
    /// accepts an empty list asked to follow the registry all the way down, so its `max_shrink`
    /// is off unless set (an explicit `max_shrink` applies to a drop to zero as well). Every
    /// other app refuses a drop of more than [`DEFAULT_MAX_SHRINK`]: the outage this guards
    /// against is silent, a held render is not.
    pub fn guard(&self) -> MemberGuard {
        let min_members = self.min_members.unwrap_or(usize::from(!self.allow_empty));
        let max_shrink = self.max_shrink.unwrap_or(if min_members == 0 { MaxShrink::Off } else { DEFAULT_MAX_SHRINK });
        MemberGuard { min_members, max_shrink }
    }
}

/// What an `[[app]]` keeps at its `dest`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// One file, written in place atomically.
    #[default]
    File,
    /// A directory tree: `dest` is a symlink to a versioned directory ([`crate::host::bundle`]).
    Bundle,
}

/// One `[[app]]` table as written: every key any app may have. [`AppConfig`] is made from it,
/// published or rendered by type, refusing keys that do not belong to the kind it is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppEntry {
    /// The application's name; versions live at `<applications>/<name>` unless `path` says.
    name: String,
    /// The znode holding this application's `conf-` versions.
    #[serde(default)]
    path: Option<String>,
    /// The file this host keeps at the newest version.
    dest: PathBuf,
    /// File mode of `dest`, as an octal string like "0644"; absent keeps an existing file's.
    #[serde(default, deserialize_with = "deserialize_mode")]
    mode: Option<u32>,
    /// Owner of `dest` (user name or uid); unchanged when absent.
    #[serde(default)]
    owner: Option<String>,
    /// Group of `dest` (group name or gid); unchanged when absent.
    #[serde(default)]
    group: Option<String>,
    /// Validates the new file before it is installed; `{src}` is the new file's path.
    #[serde(default)]
    check: Option<HookCommand>,
    /// Tells the service to pick up the new file.
    #[serde(default)]
    reload: Option<HookCommand>,
    /// How long a check or reload may run before its whole process group is killed.
    #[serde(default = "default_hook_timeout", with = "humantime_serde")]
    hook_timeout: Duration,
    /// Run check and reload as this user (name or uid) instead of the daemon's.
    #[serde(default)]
    run_as: Option<String>,
    /// Write through a symlink at `dest` (off: a symlink there is refused, not followed).
    #[serde(default)]
    follow_symlinks: bool,
    /// After the reload: `"nginx"` for the built-in nginx check, or a command (argv or shell
    /// string) that exits 0 once the service runs the new content ([`crate::config::VerifyCheck`]).
    #[serde(default)]
    verify: Option<VerifyKey>,
    /// How long one verify command may run before its process group is killed.
    #[serde(default = "verify::default_verify_timeout", with = "humantime_serde")]
    verify_timeout: Duration,
    /// How long after the reload the service may take to show that it runs the new content.
    #[serde(default = "verify::default_verify_settle", with = "humantime_serde")]
    verify_settle: Duration,
    /// With `verify = "nginx"`: nginx's pid file, naming the master whose workers are watched.
    #[serde(default)]
    nginx_pid: Option<PathBuf>,
    /// With `verify = "nginx"`: nginx's error log, whose lines since the reload are read.
    #[serde(default)]
    nginx_error_log: Option<PathBuf>,
    /// Render `dest` from a service's live members instead of applying published versions.
    #[serde(default)]
    render: Option<RenderConfig>,
    /// The `[reload_group.<name>]` this app is checked, installed, reloaded and rolled back with.
    #[serde(default)]
    reload_group: Option<String>,
    /// At most this many hosts install (check, rename, reload) at once, through a ZooKeeper
    /// semaphore ([`crate::app::pacing`]); absent means no limit.
    #[serde(default)]
    max_parallel_reloads: Option<u32>,
    /// Wait a random delay below this before applying a new version ([`crate::app::pacing`]).
    #[serde(default, with = "humantime_serde")]
    splay: Option<Duration>,
    /// Public keys (PEM or base64 files) of publishers whose signed versions this host installs;
    /// when set, unsigned versions and versions signed by other keys are refused.
    #[serde(default)]
    trusted_keys: Vec<PathBuf>,
    /// "file" (one file) or "bundle" (a directory tree behind a symlink at `dest`).
    #[serde(default)]
    kind: AppKind,
    /// Bundles: how many version directories stay on disk, the current one included.
    #[serde(default = "default_keep_local")]
    keep_local: usize,
    /// What to do when `dest` was changed by someone else: reapply, report or hold.
    #[serde(default, deserialize_with = "deserialize_on_drift")]
    on_drift: OnDrift,
    /// This app's periodic pass, when it differs from the top-level `resync_interval`.
    #[serde(default)]
    resync_interval: Option<Resync>,
}

/// One `[[app]]` entry: what this host keeps at `dest`, how it checks and reloads it, and
/// where its content comes from ([`AppSource`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "AppEntry")]
pub struct AppConfig {
    /// The application's name; published versions live at `<applications>/<name>` unless the
    /// source names a path.
    pub name: String,
    /// The file (or, for a bundle, the symlink) this host keeps at the newest content.
    pub dest: PathBuf,
    /// File mode of `dest`, as an octal string like "0644". None keeps the mode an existing
    /// file has (a file made 0600 by hand stays 0600) and makes new files 0644.
    pub mode: Option<u32>,
    /// Owner of `dest` (user name or uid); unchanged when absent.
    pub owner: Option<String>,
    /// Group of `dest` (group name or gid); unchanged when absent.
    pub group: Option<String>,
    /// Validates the new file before it is installed; `{src}` is the new file's path.
    pub check: Option<HookCommand>,
    /// Tells the service to pick up the new file.
    pub reload: Option<HookCommand>,
    /// How long a check or reload may run before its whole process group is killed.
    pub hook_timeout: Duration,
    /// Run check and reload as this user (name or uid) instead of the daemon's.
    pub run_as: Option<String>,
    /// Write through a symlink at `dest` (off: a symlink there is refused, not followed).
    pub follow_symlinks: bool,
    /// What proves, after the reload, that the service runs the new content; None trusts the
    /// reload command's exit status.
    pub verify: Option<VerifyConfig>,
    /// Published versions, or a rendering of a service's live members.
    pub source: AppSource,
    /// What to do when `dest` holds something else than what this host applied (a hand edit):
    /// put it back, report it, or report it and apply nothing new ([`OnDrift`]).
    pub on_drift: OnDrift,
    /// How often the follower looks again by itself, whatever the watches said; as written in
    /// the entry, else the top-level `resync_interval` (filled in by [`crate::config::Config`]).
    pub resync_interval: Option<Resync>,
    /// The reload group this app goes with (its whole table, filled in by
    /// [`crate::config::Config`]): its own `check` still runs on its staged file, the group's
    /// check, reload and verify run once for every member changed together.
    pub reload_group: Option<super::group::ReloadGroupConfig>,
}

/// The interval of a follower's periodic pass (`resync_interval`): a duration of at least
/// [`MIN_RESYNC`], or none (`"off"` or `0`). Watches can be missed (a bug, a server that lost
/// them, a file edited by hand, which no watch reports); the pass finds what they missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resync(pub Option<Duration>);

/// The default pass: every 5 minutes (QConf rescans every 30-60 minutes, Apollo pulls every 5).
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// The shortest pass accepted: each costs a handful of ZooKeeper requests per app and host.
pub const MIN_RESYNC: Duration = Duration::from_secs(1);

impl Default for Resync {
    fn default() -> Resync {
        Resync(Some(DEFAULT_RESYNC))
    }
}

impl<'de> Deserialize<'de> for Resync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Resync, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(i64),
            Text(String),
        }
        let expected = "expected a duration like \"5m\" (at least 1s), or \"off\" (or 0) for no periodic pass";
        let d = match Written::deserialize(d)? {
            Written::Number(0) => return Ok(Resync(None)),
            Written::Number(n) => return Err(serde::de::Error::custom(format!("{expected}, got {n}"))),
            Written::Text(s) if s.trim() == "off" || s.trim() == "0" => return Ok(Resync(None)),
            Written::Text(s) => humantime::parse_duration(s.trim()).map_err(|_| serde::de::Error::custom(format!("{expected}, got {s:?}")))?,
        };
        if d < MIN_RESYNC {
            return Err(serde::de::Error::custom(format!("{expected}, got {}", humantime::format_duration(d))));
        }
        Ok(Resync(Some(d)))
    }
}

/// Where an app's content comes from: the two kinds of app, told apart by type, so that a key
/// of one kind cannot be set (and silently ignored) on the other.
#[derive(Debug, Clone, PartialEq)]
pub enum AppSource {
    /// Versions published to ZooKeeper (`zkcoordctl publish`, the trigger, a plain client).
    Published(PublishedApp),
    /// `[app.render]`: rendered from a service's live members through a template.
    Rendered(RenderConfig),
}

/// The keys only an app that follows published versions has.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedApp {
    /// The znode holding this application's `conf-` versions.
    pub path: Option<String>,
    /// At most this many hosts install (check, rename, reload) at once, through a ZooKeeper
    /// semaphore ([`crate::app::pacing`]); absent means no limit.
    pub max_parallel_reloads: Option<u32>,
    /// Wait a random delay below this before applying a new version ([`crate::app::pacing`]).
    pub splay: Option<Duration>,
    /// Public keys (PEM or base64 files) of publishers whose signed versions this host installs;
    /// when set, unsigned versions and versions signed by other keys are refused.
    pub trusted_keys: Vec<PathBuf>,
    /// "file" (one file) or "bundle" (a directory tree behind a symlink at `dest`).
    pub kind: AppKind,
    /// Bundles: how many version directories stay on disk, the current one included.
    pub keep_local: usize,
}

pub(super) use super::bad_key::{BadAppKey, SUBKEY};

impl TryFrom<AppEntry> for AppConfig {
    type Error = BadAppKey;

    fn try_from(e: AppEntry) -> Result<AppConfig, BadAppKey> {
        let verify = verify::from_keys(e.verify, e.verify_timeout, e.verify_settle, e.nginx_pid, e.nginx_error_log)
            .map_err(|(key, why)| BadAppKey { key, why })?;
        let source = match e.render {
            Some(render) => {
                // A rendered file comes from live members, not from published versions: these
                // keys would be silently ignored, which an operator must not mistake for safety.
                let versions_only = [
                    ("trusted_keys", !e.trusted_keys.is_empty()),
                    ("kind", e.kind != AppKind::File),
                    ("max_parallel_reloads", e.max_parallel_reloads.is_some()),
                    ("splay", e.splay.is_some()),
                ];
                if let Some((key, _)) = versions_only.iter().find(|(_, set)| *set) {
                    return Err(BadAppKey { key, why: "applies to published versions; a rendered app ([app.render]) cannot use it".into() });
                }
                if e.path.is_some() {
                    return Err(BadAppKey {
                        key: "path",
                        why: "is where published versions live; a rendered app names its members with render.service or render.path".into(),
                    });
                }
                AppSource::Rendered(render)
            }
            None => AppSource::Published(PublishedApp {
                path: e.path,
                max_parallel_reloads: e.max_parallel_reloads,
                splay: e.splay,
                trusted_keys: e.trusted_keys,
                kind: e.kind,
                keep_local: e.keep_local,
            }),
        };
        Ok(AppConfig {
            name: e.name,
            dest: e.dest,
            mode: e.mode,
            owner: e.owner,
            group: e.group,
            check: e.check,
            reload: e.reload,
            hook_timeout: e.hook_timeout,
            run_as: e.run_as,
            follow_symlinks: e.follow_symlinks,
            verify,
            source,
            reload_group: e.reload_group.map(super::group::ReloadGroupConfig::named),
            on_drift: e.on_drift,
            resync_interval: e.resync_interval,
        })
    }
}

impl AppConfig {
    /// The published-versions keys, when this app follows published versions.
    pub fn published(&self) -> Option<&PublishedApp> {
        match &self.source {
            AppSource::Published(p) => Some(p),
            AppSource::Rendered(_) => None,
        }
    }

    /// The `[app.render]` table, when this app is rendered from live members.
    pub fn rendered(&self) -> Option<&RenderConfig> {
        match &self.source {
            AppSource::Rendered(r) => Some(r),
            AppSource::Published(_) => None,
        }
    }

    /// The published-versions keys of a test's entry, to change them (panics for a rendered app).
    #[cfg(test)]
    pub(crate) fn published_mut(&mut self) -> &mut PublishedApp {
        match &mut self.source {
            AppSource::Published(p) => p,
            AppSource::Rendered(_) => panic!("a rendered app has no published-versions keys"),
        }
    }

    /// The interval of this app's periodic pass; None: no pass.
    pub fn resync(&self) -> Option<Duration> {
        self.resync_interval.unwrap_or_default().0
    }

    /// The mode a new copy of `dest` gets: the configured one, else that of the file there now
    /// (so an operator's chmod 0600 stays), else 0644.
    pub fn mode_for(&self, existing: Option<u32>) -> u32 {
        self.mode.or(existing).unwrap_or(DEFAULT_MODE)
    }

    /// What this app keeps at `dest`: a rendered app always keeps one file.
    pub fn kind(&self) -> AppKind {
        self.published().map_or(AppKind::File, |p| p.kind)
    }

    /// An entry with every default, for unit tests: built through serde so that a new key
    /// never has to be added to each test's struct literal.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, dest: &std::path::Path) -> AppConfig {
        toml::from_str(&format!("name = {name:?}\ndest = {:?}\n", dest.display().to_string())).expect("minimal app entry")
    }
}

fn default_keep_local() -> usize {
    3
}

fn default_render_quiet() -> Duration {
    Duration::from_millis(200)
}

fn default_render_max_wait() -> Duration {
    Duration::from_secs(2)
}

/// The mode of a file zkcoord creates when the entry names none.
pub const DEFAULT_MODE: u32 = 0o644;

fn default_hook_timeout() -> Duration {
    Duration::from_secs(30)
}

fn deserialize_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = String::deserialize(d)?;
    parse_mode(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!("expected a file mode as an octal string like \"0644\", got {s:?}"))
    })
}

fn deserialize_max_shrink<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MaxShrink>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(i64),
        Text(String),
    }
    let text = match Written::deserialize(d)? {
        Written::Number(n) => n.to_string(),
        Written::Text(s) => s,
    };
    MaxShrink::parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn deserialize_on_drift<'de, D: Deserializer<'de>>(d: D) -> Result<OnDrift, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "reapply" => Ok(OnDrift::Reapply),
        "report" => Ok(OnDrift::Report),
        "hold" => Ok(OnDrift::Hold),
        _ => Err(serde::de::Error::custom(format!("expected \"reapply\", \"report\" or \"hold\", got {s:?}"))),
    }
}

/// Parses "0644" or "644" into a mode, refusing anything beyond 0o7777.
pub fn parse_mode(s: &str) -> Option<u32> {
    let m = u32::from_str_radix(s.trim(), 8).ok()?;
    (m <= 0o7777 && !s.trim().is_empty()).then_some(m)
}

/// Largest splay accepted: beyond it a fleet would look stuck.
pub const MAX_SPLAY: Duration = Duration::from_secs(3600);

/// Checks an app's pacing keys; Err is (key, what was expected).
pub fn validate_pacing(app: &PublishedApp) -> Result<(), (&'static str, String)> {
    if app.max_parallel_reloads == Some(0) {
        return Err(("max_parallel_reloads", "expected at least 1 (leave it out for no limit)".into()));
    }
    if let Some(s) = app.splay {
        if s > MAX_SPLAY {
            return Err(("splay", format!("expected at most {}, got {}", humantime::format_duration(MAX_SPLAY), humantime::format_duration(s))));
        }
    }
    Ok(())
}
