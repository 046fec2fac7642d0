//! Bundles: an application configured by a whole directory (nginx's `conf.d`, a set of
//! certificates). The publisher packs the tree as tar (gzip-compressed when that is smaller);
//! the app host unpacks each version into its own directory beside the destination and switches
//! by renaming a symlink over `dest`, so a reader that opens `dest/...` sees one version's tree
//! entirely, never a mix.
//!
//! On the app host, for `dest = /etc/nginx/conf.d`:
//!
//! ```text
//! /etc/nginx/conf.d -> .conf.d.versions/conf-0000000012     (the symlink zkcoord flips)
//! /etc/nginx/.conf.d.versions/conf-0000000012/...           (one directory per version)
//! /etc/nginx/.conf.d.versions/conf-0000000012.sha256        (which content it holds)
//! ```
//!
//! A bundle holds regular files and directories with their permission bits (no setuid, setgid
//! or sticky bits), nothing else: no symlinks, hard links, devices, fifos or sockets, and no
//! path that is absolute or climbs with `..`. The publisher refuses such trees; the app host
//! checks every entry again and never trusts the archive. The archive is deterministic (sorted
//! entries, mtime 0, uid/gid 0), so publishing an unchanged tree makes no new version.

use crate::model::content::ContentInfo;
use crate::config::{AppConfig, AppKind};
use crate::host::hooks::HookContext;
use crate::host::install::{self, InstallError, InstallResult, Ownership};
use crate::metrics::{Hook, Metrics};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// `kind` of bundle versions in their metadata.
pub const KIND_BUNDLE: &str = "bundle";
/// `compression` of a gzip-compressed bundle.
pub const GZIP: &str = "gzip";
/// `compression` of an uncompressed bundle.
pub const NONE: &str = "none";

/// A packed tree, ready to publish.
#[derive(Debug)]
pub struct Packed {
    /// The archive: tar, or tar.gz when that is smaller.
    pub bytes: Vec<u8>,
    /// How the archive is marked in the request and the version's metadata.
    pub content: ContentInfo,
    /// Regular files in it.
    pub files: usize,
    /// Size of the uncompressed tar.
    pub tar_bytes: u64,
}
/// Why a tree cannot be packed or an archive unpacked; each says which path and why.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// What the tree or archive holds is not allowed (a path leaving the tree, a symlink, a
    /// device, a truncated entry).
    #[error("{0}")]
    Refused(String),
    /// Over `max_config_size`.
    #[error("{0}")]
    TooLarge(String),
    /// Not an archive, or a damaged one.
    #[error("{0}")]
    Damaged(String),
    /// A file operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done, to which path.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
}

impl BundleError {
    /// A failed file operation: `what` ("read /etc/nginx/conf.d/a.conf") and why.
    fn io(what: String, source: io::Error) -> BundleError {
        BundleError::Io { what, source }
    }
}

impl From<BundleError> for String {
    fn from(e: BundleError) -> String {
        e.to_string()
    }
}


/// Checks one archive entry's path: relative, and every component a plain name (no `..`, no
/// root, no drive prefix). Returns the path without `.` components.
pub fn validate_entry_path(p: &Path) -> Result<PathBuf, BundleError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(BundleError::Refused(format!("{}: a path climbing with `..` would leave the tree", p.display()))),
            Component::RootDir | Component::Prefix(_) => {
                return Err(BundleError::Refused(format!("{}: an absolute path would leave the tree", p.display())))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(BundleError::Refused(format!("{:?}: an empty path", p.display().to_string())));
    }
    Ok(out)
}

fn kind_name(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "a symlink"
    } else if ft.is_fifo() {
        "a fifo"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "not a regular file or directory"
    }
}

/// Packs the tree under `dir` deterministically; refuses anything but regular files and
/// directories, and trees whose tar is over `max` bytes.
pub fn pack(dir: &Path, max: u64) -> Result<Packed, BundleError> {
    let meta = fs::metadata(dir).map_err(|e| BundleError::io(format!("read {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(BundleError::Refused(format!("{} is not a directory", dir.display())));
    }
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries)?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut files = 0;
    for (rel, md) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(md.mode() & 0o777);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let full = dir.join(&rel);
        let append = if md.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, &rel, io::empty())
        } else {
            files += 1;
            let data = fs::read(&full).map_err(|e| BundleError::io(format!("read {}", full.display()), e))?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, &rel, &data[..])
        };
        append.map_err(|e| BundleError::io(format!("pack {}", full.display()), e))?;
        if tar.get_ref().len() as u64 > max {
            return Err(too_big(tar.get_ref().len() as u64, max));
        }
    }
    let raw = tar.into_inner().map_err(|e| BundleError::io(format!("pack {}", dir.display()), e))?;
    let tar_bytes = raw.len() as u64;
    crate::model::content::check_max(tar_bytes, max).map_err(|_| too_big(tar_bytes, max))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).and_then(|_| gz.try_finish()).map_err(|e| BundleError::io("compress".to_string(), e))?;
    let gz = gz.finish().map_err(|e| BundleError::io("compress".to_string(), e))?;
    let (bytes, compression) = if gz.len() < raw.len() { (gz, GZIP) } else { (raw, NONE) };
    let content = ContentInfo { kind: Some(KIND_BUNDLE.into()), compression: Some(compression.into()), ..Default::default() };
    Ok(Packed { bytes, content, files, tar_bytes })
}

fn too_big(len: u64, max: u64) -> BundleError {
    BundleError::TooLarge(format!("the bundle is {len} bytes or more as tar; the limit is {max} bytes (max_config_size = {})", crate::model::content::human(max)))
}

/// Collects the entries under `root/rel`, sorted by name, refusing what a bundle cannot hold.
fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) -> Result<(), BundleError> {
    let here = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&here)
        .map_err(|e| BundleError::io(format!("read {}", here.display()), e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| BundleError::io(format!("read {}", here.display()), e))?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let full = root.join(&rel);
        let md = fs::symlink_metadata(&full).map_err(|e| BundleError::io(format!("read {}", full.display()), e))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&full).map(|t| t.display().to_string()).unwrap_or_default();
            return Err(BundleError::Refused(format!(
                "{} is a symlink (to {target}); bundles hold only regular files and directories (copy the file in instead)",
                full.display()
            )));
        }
        if !ft.is_file() && !ft.is_dir() {
            return Err(BundleError::Refused(format!("{} is {}; bundles hold only regular files and directories", full.display(), kind_name(&ft))));
        }
        let is_dir = ft.is_dir();
        out.push((rel.clone(), md));
        if is_dir {
            walk(root, &rel, out)?;
        }
    }
    Ok(())
}

/// Unpacks `archive` (tar or tar.gz) into the empty directory `into`, checking every entry:
/// only regular files and directories, paths inside the tree, at most `max` bytes of content.
/// Files and directories get the archive's permission bits (no setuid/setgid/sticky) and
/// `owner`; everything is fsynced. Returns the number of files.
pub fn unpack(archive: &[u8], into: &Path, max: u64, owner: Ownership) -> Result<usize, BundleError> {
    let reader: Box<dyn Read> =
        if archive.starts_with(&[0x1f, 0x8b]) { Box::new(flate2::read::GzDecoder::new(archive)) } else { Box::new(archive) };
    let mut ar = tar::Archive::new(reader);
    let mut total: u64 = 0;
    let mut files = 0;
    let mut dirs: Vec<(PathBuf, u32)> = vec![];
    let chown = |f: &File, path: &Path| -> Result<(), BundleError> {
        if owner.uid.is_some() || owner.gid.is_some() {
            std::os::unix::fs::fchown(f, owner.uid.map(|u| u.as_raw()), owner.gid.map(|g| g.as_raw()))
                .map_err(|e| BundleError::io(format!("set the owner of {}", path.display()), e))?;
        }
        Ok(())
    };
    for entry in ar.entries().map_err(|e| BundleError::Damaged(format!("not a bundle archive: {e}")))? {
        let mut entry = entry.map_err(|e| BundleError::Damaged(format!("bundle archive is damaged: {e}")))?;
        let raw_path = entry.path().map_err(|e| BundleError::Damaged(format!("bundle entry with an unreadable path: {e}")))?.into_owned();
        let rel = validate_entry_path(&raw_path)?;
        let target = into.join(&rel);
        let mode = entry.header().mode().map_err(|e| BundleError::Damaged(format!("{}: bad mode: {e}", rel.display())))? & 0o777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(|e| BundleError::io(format!("create {}", target.display()), e))?;
                dirs.push((rel, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(|e| BundleError::Damaged(format!("{}: bad size: {e}", rel.display())))?;
                total = total.saturating_add(size);
                crate::model::content::check_max(total, max).map_err(|e| BundleError::TooLarge(format!("bundle content too large: {e}")))?;
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(|e| BundleError::io(format!("create {}", parent.display()), e))?;
                }
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(|e| BundleError::io(format!("create {} (a duplicate entry?)", target.display()), e))?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut f).map_err(|e| BundleError::io(format!("write {}", target.display()), e))?;
                if copied != size {
                    return Err(BundleError::Refused(format!("bundle archive is truncated at {}", rel.display())));
                }
                f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| BundleError::io(format!("set the mode of {}", target.display()), e))?;
                chown(&f, &target)?;
                f.sync_all().map_err(|e| BundleError::io(format!("fsync {}", target.display()), e))?;
                files += 1;
            }
            other => {
                let what = match other {
                    tar::EntryType::Symlink => "a symlink",
                    tar::EntryType::Link => "a hard link",
                    tar::EntryType::Char => "a character device",
                    tar::EntryType::Block => "a block device",
                    tar::EntryType::Fifo => "a fifo",
                    _ => "an unsupported entry type",
                };
                return Err(BundleError::Refused(format!("{} is {what}; bundles hold only regular files and directories", rel.display())));
            }
        }
    }
    // Directory modes last (a read-only directory would refuse its own files), deepest first.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    let mut all_dirs: Vec<PathBuf> = dirs.iter().map(|(p, _)| into.join(p)).collect();
    all_dirs.push(into.to_path_buf());
    for d in &all_dirs {
        let f = File::open(d).map_err(|e| BundleError::io(format!("open {}", d.display()), e))?;
        f.sync_all().map_err(|e| BundleError::io(format!("fsync {}", d.display()), e))?;
    }
    for (rel, mode) in dirs {
        let d = into.join(&rel);
        let f = File::open(&d).map_err(|e| BundleError::io(format!("open {}", d.display()), e))?;
        chown(&f, &d)?;
        f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| BundleError::io(format!("set the mode of {}", d.display()), e))?;
    }
    Ok(files)
}

/// Where a bundle app keeps its version directories: `.<name>.versions` beside `dest`.
pub fn versions_dir(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent_dir(dest).join(format!(".{name}.versions"))
}

fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn marker_of(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_os_string();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The version directory `dest` points at now, if it is a symlink to one.
pub fn current(dest: &Path) -> Option<PathBuf> {
    let link = fs::read_link(dest).ok()?;
    Some(parent_dir(dest).join(link))
}

/// Whether `app`'s destination already holds content `sha256` (file or bundle).
pub fn holds(app: &AppConfig, sha256: &str) -> bool {
    match app.kind() {
        AppKind::File => install::holds(&app.dest, sha256),
        AppKind::Bundle => match current(&app.dest) {
            Some(dir) => dir.is_dir() && fs::read_to_string(marker_of(&dir)).is_ok_and(|s| s.trim() == sha256),
            None => false,
        },
    }
}

/// Whether `bytes` look like what `pack` makes (gzip, or a tar header), so that a file app waits
/// for the metadata that says whether they are a bundle before it writes them as a config.
pub fn looks_like_archive(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b]) || bytes.get(257..262) == Some(b"ustar")
}

/// Why a version must not be installed by `app` because it is the wrong kind: a bundle (by its
/// metadata) for a single-file app. The other way round, unpacking refuses what is no archive.
pub fn kind_mismatch(app: &AppConfig, content: Option<&ContentInfo>) -> Option<String> {
    let is_bundle = content.and_then(|c| c.kind.as_deref()) == Some(KIND_BUNDLE);
    (app.kind() == AppKind::File && is_bundle).then(|| {
        format!(
            "this version is a bundle (published from a directory), but app {} is kind = \"file\"; not installing (set kind = \"bundle\" to manage {} as a directory)",
            app.name,
            app.dest.display()
        )
    })
}

/// Installs `bytes` for `app`: in place for a file app, as a new version directory behind the
/// symlink for a bundle app, with the other members for a reload group's member (the one
/// entry point of every install: published, rendered, once). `ctx.version` names the
/// directory; `ctx` is what the hooks are told.
pub async fn install_any(app: &AppConfig, ctx: &HookContext, bytes: Vec<u8>, max: u64, metrics: &Metrics) -> Result<InstallResult, InstallError> {
    match app.kind() {
        AppKind::File => match &app.reload_group {
            Some(group) => crate::host::group::install(group, app, ctx, bytes, metrics).await,
            None => install::install(app, ctx, bytes, metrics).await,
        },
        AppKind::Bundle => install(app, ctx, bytes, max, metrics).await,
    }
}

/// Runs `app`'s check on `bytes` staged as an install would stage them (a temp file beside a
/// file app's destination, an unpacked directory for a bundle), then removes them: a
/// `--precheck` asks every host whether it would take a version without installing it. Err
/// inside is the refusal, in the check's words. A reload group's member runs its own check.
pub async fn precheck_any(app: &AppConfig, ctx: &HookContext, bytes: Vec<u8>, max: u64, metrics: &Metrics) -> Result<Result<(), String>, InstallError> {
    match app.kind() {
        AppKind::File => Ok(match install::stage_checked(app, ctx, bytes, metrics).await? {
            // Dropped unrenamed: the staged file goes, the destination was never touched.
            Ok(_checked) => Ok(()),
            Err(InstallResult::CheckFailed(why)) => Err(why),
            Err(other) => Err(format!("{other:?}")),
        }),
        AppKind::Bundle => {
            let dir = match stage_unpacked(app, ctx, bytes, max).await? {
                Ok(d) => d,
                Err(why) => return Ok(Err(format!("bundle refused: {why}"))),
            };
            let refused = check_unpacked(app, ctx, metrics, &dir).await;
            // Never the live directory: `stage_unpacked` picks another name for a drifted one.
            tokio::task::spawn_blocking(move || remove_version(&dir)).await.expect("removal task panicked");
            Ok(match refused {
                Some(InstallResult::CheckFailed(why)) => Err(why),
                Some(other) => Err(format!("{other:?}")),
                None => Ok(()),
            })
        }
    }
}

fn io_error(step: &'static str, path: &Path, source: io::Error) -> InstallError {
    InstallError::Io { step, path: path.to_path_buf(), source, hint: String::new() }
}

/// Removes a version directory and its marker (best effort, for leftovers).
fn remove_version(dir: &Path) {
    let _ = make_writable(dir);
    let _ = fs::remove_dir_all(dir);
    let _ = fs::remove_file(marker_of(dir));
}

/// Directories unpacked read-only (mode 0555) cannot be emptied; give them back write bits.
fn make_writable(dir: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(dir)?;
    if md.is_dir() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        for e in fs::read_dir(dir)? {
            make_writable(&e?.path())?;
        }
    }
    Ok(())
}

/// Points `dest` at `target` (relative to `dest`'s directory) atomically: a new symlink beside
/// it, renamed over it, then the directory fsynced. None removes the link.
fn flip(dest: &Path, target: Option<&Path>) -> Result<(), InstallError> {
    let dir = parent_dir(dest);
    match target {
        Some(t) => {
            let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = dir.join(format!(".{name}.zkcoord-link-{}", std::process::id()));
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(t, &tmp).map_err(|e| io_error("create a symlink for", dest, e))?;
            fs::rename(&tmp, dest).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io_error("rename a symlink over", dest, e)
            })?;
        }
        None => match fs::remove_file(dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", dest, e)),
        },
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync directory", dir, e))
}

/// The bundle pipeline: unpack into a new version directory, check it, flip the symlink,
/// reload; on a failed reload flip back and reload again. Old version directories beyond
/// `keep_local` are removed after a successful switch.
pub async fn install(app: &AppConfig, ctx: &HookContext, bytes: Vec<u8>, max: u64, metrics: &Metrics) -> Result<InstallResult, InstallError> {
    let dest = app.dest.clone();
    let versions = versions_dir(&dest);
    let new_dir = match stage_unpacked(app, ctx, bytes, max).await? {
        Ok(d) => d,
        // A bundle the host must not unpack is refused like a failed check: not retried.
        Err(why) => return Ok(InstallResult::CheckFailed(format!("bundle refused: {why}"))),
    };
    if let Some(refused) = check_unpacked(app, ctx, metrics, &new_dir).await {
        remove_version(&new_dir);
        return Ok(refused);
    }
    flip_and_reload(app, ctx, metrics, dest, versions, new_dir).await
}

/// Unpacks `bytes` for `app` into its versions directory, under the version's name (another
/// name when that is the live, drifted directory). The inner Err: the archive must not be
/// unpacked (unsafe paths, too big), in its words.
async fn stage_unpacked(app: &AppConfig, ctx: &HookContext, bytes: Vec<u8>, max: u64) -> Result<Result<PathBuf, String>, InstallError> {
    let owner = Ownership::of(app)?;
    let dest = app.dest.clone();
    let dir = parent_dir(&dest).to_path_buf();
    if !dir.is_dir() {
        return Err(InstallError::MissingDir { dest: dest.clone(), dir });
    }
    if let Ok(m) = fs::symlink_metadata(&dest) {
        if !m.file_type().is_symlink() {
            let why = io::Error::other(format!(
                "it exists and is not a symlink; a bundle app keeps {} as a symlink to a versioned directory, so move it away first",
                dest.display()
            ));
            return Err(io_error("replace", &dest, why));
        }
    }
    let versions = versions_dir(&dest);
    let version = ctx.version.clone();
    // Unpack into a temp directory, then rename it to its version name: a version directory
    // that exists is always complete.
    tokio::task::spawn_blocking({
        let versions = versions.clone();
        let current = current(&dest);
        move || -> Result<Result<PathBuf, String>, InstallError> {
            fs::create_dir_all(&versions).map_err(|e| io_error("create", &versions, e))?;
            let tmp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(&versions).map_err(|e| io_error("create a temp directory in", &versions, e))?;
            if let Err(why) = unpack(&bytes, tmp.path(), max, owner) {
                remove_version(&tmp.keep());
                return Ok(Err(why.to_string()));
            }
            let mut name = versions.join(&version);
            if current.as_deref() == Some(name.as_path()) {
                // The live directory drifted and is being replaced: never touch it in place.
                name = (1..).map(|i| versions.join(format!("{version}.{i}"))).find(|p| !p.exists()).expect("a free name");
            } else if fs::symlink_metadata(&name).is_ok() {
                remove_version(&name);
            }
            let tmp = tmp.keep();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(|e| io_error("set the mode of", &tmp, e))?;
            fs::rename(&tmp, &name).map_err(|e| {
                remove_version(&tmp);
                io_error("rename into", &name, e)
            })?;
            let sha = crate::digest::sha256_hex(&bytes);
            install::write_atomic(&marker_of(&name), sha.as_bytes(), 0o644, Ownership::default())?;
            File::open(&versions).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync directory", &versions, e))?;
            Ok(Ok(name))
        }
    })
    .await
    .expect("unpacking task panicked")
}

/// Runs `app`'s check on the unpacked directory `dir`: None when it passed (or there is none).
async fn check_unpacked(app: &AppConfig, ctx: &HookContext, metrics: &Metrics, dir: &Path) -> Option<InstallResult> {
    let check = app.check.as_ref()?;
    let run = install::run_hook(app, ctx, metrics, Hook::Check, check, Some(dir)).await;
    (!run.ok()).then(|| InstallResult::CheckFailed(crate::model::status::bounded_error(run.describe("check", check))))
}

/// The rest of [`install`], once the new version is unpacked and checked: flip the link,
/// reload (or flip back), keep a few old directories.
async fn flip_and_reload(app: &AppConfig, ctx: &HookContext, metrics: &Metrics, dest: PathBuf, versions: PathBuf, new_dir: PathBuf) -> Result<InstallResult, InstallError> {
    let previous = fs::read_link(&dest).ok();
    let rel = PathBuf::from(versions.file_name().expect("versions dir has a name")).join(new_dir.file_name().expect("version dir has a name"));
    flip(&dest, Some(&rel))?;

    let (back_to, flip_dest, unwanted) = (previous.clone(), dest.clone(), new_dir.clone());
    let result = install::reload_or_roll_back(app, ctx, metrics, move || {
        flip(&flip_dest, back_to.as_deref())?;
        // The link no longer names the new version: its directory goes.
        remove_version(&unwanted);
        Ok(if back_to.is_some() { "flipped back to the previous version" } else { "symlink removed (there was no previous version)" })
    })
    .await;
    if matches!(result, InstallResult::ReloadFailed(_)) {
        return Ok(result);
    }
    let keep = app.published().map_or(2, |p| p.keep_local).max(2);
    let live = new_dir.clone();
    let _ = tokio::task::spawn_blocking(move || retain(&versions, &live, keep)).await;
    Ok(result)
}

/// Keeps the `keep` newest version directories (by version number; `live` always), removes
/// older ones, their markers, and temp directories left by an interrupted unpack.
pub fn retain(versions: &Path, live: &Path, keep: usize) -> usize {
    let Ok(rd) = fs::read_dir(versions) else { return 0 };
    let mut dirs: Vec<(u64, String, PathBuf)> = Vec::new();
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with(".tmp-") {
            remove_version(&path);
            continue;
        }
        if name.ends_with(".sha256") || !path.is_dir() {
            continue;
        }
        let base = name.split('.').next().unwrap_or_default();
        let seq = crate::model::layout::VersionId::parse(base).map(|v| v.seq).unwrap_or(0);
        dirs.push((seq, name, path));
    }
    dirs.sort();
    let mut kept = 0;
    for (_, _, path) in dirs.iter().rev() {
        if path == live || kept + 1 < keep {
            kept += usize::from(path != live);
            continue;
        }
        remove_version(path);
        removed += 1;
    }
    // Markers whose directory is gone.
    if let Ok(rd) = fs::read_dir(versions) {
        for e in rd.flatten() {
            let p = e.path();
            if let Some(dir) = p.to_str().and_then(|s| s.strip_suffix(".sha256")) {
                if !Path::new(dir).exists() {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    /// What the hooks are told, for a test install of `version`.
    fn ctx(version: &str) -> super::HookContext {
        super::HookContext { version: version.into(), ..Default::default() }
    }
    use super::*;
    use std::time::Duration;

    const MAX: u64 = 64 << 20;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("conf.d/sites")).unwrap();
        fs::write(root.join("nginx.conf"), b"include conf.d/*.conf;\n").unwrap();
        fs::write(root.join("conf.d/a.conf"), b"server { listen 80; }\n".repeat(200)).unwrap();
        fs::write(root.join("conf.d/sites/b.conf"), b"# b\n").unwrap();
        fs::write(root.join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::set_permissions(root.join("conf.d/sites"), fs::Permissions::from_mode(0o700)).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn entry_paths_must_stay_inside_the_tree() {
        assert_eq!(validate_entry_path(Path::new("a/./b.conf")).unwrap(), PathBuf::from("a/b.conf"));
        for bad in ["../etc/passwd", "a/../../x", "/etc/passwd", ".", ""] {
            assert!(validate_entry_path(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(validate_entry_path(Path::new("a/../b")).unwrap_err().to_string().contains("`..`"));
        assert!(validate_entry_path(Path::new("/x")).unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn pack_and_unpack_round_trip_with_modes_and_are_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        tree(&src);
        let p = pack(&src, MAX).unwrap();
        assert_eq!(p.files, 4);
        assert_eq!(p.content.kind.as_deref(), Some(KIND_BUNDLE));
        assert_eq!(p.content.compression.as_deref(), Some(GZIP), "repetitive text compresses");
        assert_eq!(pack(&src, MAX).unwrap().bytes, p.bytes, "same tree, same bytes");
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        assert_eq!(unpack(&p.bytes, &out, MAX, Ownership::default()).unwrap(), 4);
        for f in ["nginx.conf", "conf.d/a.conf", "conf.d/sites/b.conf", "run.sh"] {
            assert_eq!(fs::read(out.join(f)).unwrap(), fs::read(src.join(f)).unwrap(), "{f}");
        }
        assert_eq!(mode(&out.join("run.sh")), 0o750);
        assert_eq!(mode(&out.join("conf.d/sites")), 0o700);
    }

    #[test]
    fn pack_refuses_fifos_and_symlinks_with_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("ok.conf"), b"x").unwrap();
        nix::unistd::mkfifo(&d.path().join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = pack(d.path(), MAX).unwrap_err().to_string();
        assert!(e.contains("pipe is a fifo") && e.contains("only regular files and directories"), "{e}");
        fs::remove_file(d.path().join("pipe")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", d.path().join("escape")).unwrap();
        let e = pack(d.path(), MAX).unwrap_err().to_string();
        assert!(e.contains("escape is a symlink (to ../../etc/passwd)"), "{e}");
    }

    #[test]
    fn pack_refuses_a_tree_over_the_limit() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("big"), vec![1u8; 200_000]).unwrap();
        let e = pack(d.path(), 100_000).unwrap_err().to_string();
        assert!(e.contains("limit is 100000 bytes"), "{e}");
    }

    /// A hostile archive, written with raw headers the way an attacker would.
    fn hostile(path: &str, kind: tar::EntryType) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        {
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(if kind == tar::EntryType::Regular { 3 } else { 0 });
        if kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"bad"[..(h.size().unwrap() as usize)]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn unpack_never_trusts_the_archive() {
        let d = tempfile::tempdir().unwrap();
        for (path, kind, why) in [
            ("../evil", tar::EntryType::Regular, "`..`"),
            ("/tmp/evil", tar::EntryType::Regular, "absolute"),
            ("link", tar::EntryType::Symlink, "a symlink"),
            ("dev", tar::EntryType::Char, "a character device"),
            ("fifo", tar::EntryType::Fifo, "a fifo"),
        ] {
            let out = d.path().join(format!("out-{}", path.replace('/', "_")));
            fs::create_dir(&out).unwrap();
            let e = unpack(&hostile(path, kind), &out, MAX, Ownership::default()).unwrap_err().to_string();
            assert!(e.contains(why), "{path}: {e}");
        }
        assert!(!d.path().join("evil").exists());
    }

    fn bundle_app(dir: &Path, check: Option<&str>, reload: Option<&str>) -> AppConfig {
        use crate::config::HookCommand;
        let mut a = AppConfig {
            check: check.map(|s| HookCommand::Shell(s.into())),
            reload: reload.map(|s| HookCommand::Shell(s.into())),
            hook_timeout: Duration::from_secs(5),
            ..AppConfig::for_tests("b", &dir.join("conf.d"))
        };
        let p = a.published_mut();
        (p.kind, p.keep_local) = (AppKind::Bundle, 2);
        a
    }

    fn packed(d: &Path, name: &str, content: &str) -> Vec<u8> {
        let src = d.join(format!("src-{name}"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/x.conf"), content).unwrap();
        pack(&src, MAX).unwrap().bytes
    }

    #[tokio::test]
    async fn bundles_switch_by_symlink_keep_a_few_and_roll_back() {
        let d = tempfile::tempdir().unwrap();
        // The "service" reloads while the file `ok` exists.
        let reload = format!("test -e {}", d.path().join("ok").display());
        let a = bundle_app(d.path(), Some("grep -q good {src}/sub/x.conf"), Some(&reload));
        let m = Metrics::new();
        fs::write(d.path().join("ok"), b"").unwrap();
        for (i, v) in ["conf-0000000001", "conf-0000000002", "conf-0000000003"].iter().enumerate() {
            let bytes = packed(d.path(), v, &format!("good {i}\n"));
            let r = install(&a, &ctx(v), bytes.clone(), MAX, &m).await.unwrap();
            assert!(matches!(r, InstallResult::Applied { .. }), "{r:?}");
            assert_eq!(fs::read_to_string(a.dest.join("sub/x.conf")).unwrap(), format!("good {i}\n"));
            assert!(holds(&a, &crate::digest::sha256_hex(&bytes)));
        }
        let mut left: Vec<String> = fs::read_dir(versions_dir(&a.dest)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["conf-0000000002", "conf-0000000002.sha256", "conf-0000000003", "conf-0000000003.sha256"]);
        // A failed check keeps the old tree.
        let r = install(&a, &ctx("conf-0000000004"), packed(d.path(), "4", "bad\n"), MAX, &m).await.unwrap();
        assert!(matches!(r, InstallResult::CheckFailed(_)), "{r:?}");
        assert_eq!(fs::read_to_string(a.dest.join("sub/x.conf")).unwrap(), "good 2\n");
        assert!(!versions_dir(&a.dest).join("conf-0000000004").exists());
        // A failed reload flips back.
        fs::remove_file(d.path().join("ok")).unwrap();
        let r = install(&a, &ctx("conf-0000000005"), packed(d.path(), "5", "good 5\n"), MAX, &m).await.unwrap();
        match r {
            InstallResult::ReloadFailed(msg) => assert!(msg.contains("flipped back to the previous version"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read_to_string(a.dest.join("sub/x.conf")).unwrap(), "good 2\n");
    }

    #[test]
    fn a_file_app_refuses_a_bundle_version() {
        let d = tempfile::tempdir().unwrap();
        let bundle = ContentInfo { kind: Some(KIND_BUNDLE.into()), compression: Some(GZIP.into()), ..Default::default() };
        let mut file_app = bundle_app(d.path(), None, None);
        file_app.published_mut().kind = AppKind::File;
        assert!(kind_mismatch(&file_app, Some(&bundle)).unwrap().contains("kind = \"file\""));
        assert_eq!(kind_mismatch(&file_app, Some(&ContentInfo::default())), None);
        assert_eq!(kind_mismatch(&file_app, None), None);
        assert_eq!(kind_mismatch(&bundle_app(d.path(), None, None), Some(&bundle)), None);
    }

    #[tokio::test]
    async fn a_plain_file_version_is_refused_by_a_bundle_app() {
        let d = tempfile::tempdir().unwrap();
        let a = bundle_app(d.path(), None, None);
        let r = install(&a, &ctx("conf-0000000001"), b"worker_processes 4;\n".to_vec(), MAX, &Metrics::new()).await.unwrap();
        match r {
            InstallResult::CheckFailed(why) => assert!(why.starts_with("bundle refused"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(fs::symlink_metadata(&a.dest).is_err(), "nothing at dest");
        assert_eq!(fs::read_dir(versions_dir(&a.dest)).unwrap().count(), 0, "no leftovers");
    }

    #[tokio::test]
    async fn a_real_directory_at_dest_is_refused_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let a = bundle_app(d.path(), None, None);
        fs::create_dir(&a.dest).unwrap();
        fs::write(a.dest.join("keep"), b"x").unwrap();
        let e = install(&a, &ctx("conf-0000000001"), packed(d.path(), "1", "x"), MAX, &Metrics::new()).await.unwrap_err().to_string();
        assert!(e.contains("not a symlink") && e.contains("move it away"), "{e}");
        assert!(a.dest.join("keep").exists());
    }
}
