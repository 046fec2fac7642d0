//! The app role for one application: follow its versions and keep the destination at the
//! newest one. Learns of new versions from persistent watches' events (ZooKeeper 3.6+; see
//! [`crate::zk::version_events`]) and re-lists at each session start, reconnect and periodic
//! pass (events alone can be missed), or from a child watch and a listing on every wake-up on
//! an older server; syncs before reading on a new session, never goes backwards, and coalesces
//! bursts because it always takes the newest version it knows at the moment it looks.
//!
//! The decisions and the pipeline live in [`Applier`]: one function decides whether a version
//! needs applying, one applies it. [`AppFollower`] runs them on every wake-up;
//! `zkcoordd --once` and `--dry-run` ([`crate::app::oneshot`]) run the same functions once.

use crate::app::skeleton::{self, AppView, Flow, StatusNode, Turn};
use crate::backoff::Backoff;
use crate::config::{AppConfig, Config};
use crate::host::install::InstallResult;
use crate::model::layout::{self, Layout, VersionId};
use crate::metrics::Metrics;
use crate::model::request::VersionMeta;
use crate::model::rollout::Visible;
use crate::zk::session::SessionHandle;
use crate::zk::version_events::{Heard, Unwatched, VersionEvents};
use crate::clock::now_secs;
use crate::host::state::{Applied, StateStore};
use crate::model::status::{ApplyResult, StatusReport};
use crate::app::drift::DriftWatch;
use crate::model::drift::{Disk, Drift, OnDrift, Verdict};
use crate::ready::ReadyPart;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// How long after a version's creation its missing metadata is still awaited (Pending) before
/// an app that requires signatures refuses it for good.
const META_PATIENCE: Duration = Duration::from_secs(60);

/// One application's decide-and-apply logic, shared by the long-running follower and by
/// `zkcoordd --once`/`--dry-run`, so a one-shot run behaves exactly like the daemon (same
/// checks, same state file, same status report) without a second copy of the pipeline.
pub struct Applier {
    /// The `[[app]]` entry.
    pub app: AppConfig,
    /// Where its versions live.
    pub versions: String,
    /// The layout (metadata and status paths).
    pub layout: Layout,
    /// This host's node id, for the status report.
    pub node_id: String,
    /// This host's labels, for the status report.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where applied versions are remembered.
    pub state: StateStore,
    /// Publishers whose signatures this app requires (empty: none required).
    pub trusted: crate::model::signing::TrustedKeys,
    /// Where applies, hook durations, latency and versions behind are recorded.
    pub metrics: Arc<Metrics>,
    /// Largest content installed (`max_config_size`); chunked versions may reach it.
    pub max_config_size: u64,
    /// The random delay before applying a new version (`splay`).
    pub splay: crate::app::pacing::Splay,
    /// Cancelled when the follower stops: ends a wait for a reload slot (never an install).
    pub stop: CancellationToken,
    /// The freeze flags, as the daemon keeps them (None in `--once`, which reads them itself):
    /// looked at again when a reload slot is granted, since the wait for one can be long.
    pub freezes: Option<watch::Receiver<Option<crate::model::freeze::Freezes>>>,
    /// With ACLs on: the versions parent's stat as the last listing saw it, and the parents'
    /// verdict for it (see [`Applier::parents_trusted`]).
    trust: std::sync::Mutex<TrustCache>,
    /// The server refused a multi read (older than 3.6): version and metadata are read apart.
    no_multi_read: std::sync::atomic::AtomicBool,
}

/// What [`Applier::read_version`] read: the versions parent's stat and the rollout record (when
/// read with the version: Some(None) is "no record"), the version, and its metadata.
type VersionRead = (
    Option<zk::Stat>,
    Option<Option<crate::model::rollout::Rollout>>,
    Result<(Vec<u8>, zk::Stat), zk::Error>,
    Result<(Vec<u8>, zk::Stat), zk::Error>,
);

/// What is known about whether this app's versions and metadata parents may be trusted.
/// Keyed by the versions parent's (czxid, mzxid, aversion), which every listing returns, so the
/// ACLs are read again only when one of them changed, not once per publish. Only a trusted
/// verdict is kept: an untrusted parent is looked at again on every look.
#[derive(Debug, Default)]
struct TrustCache {
    /// The versions parent's stat from the last listing.
    listed: Option<zk::Stat>,
    /// The key it was checked at, and what was found.
    checked: Option<((i64, i64, i32), ParentTrust)>,
}

/// Trusted parents, and the zxids that mark when each last became safe: only children created
/// after them are trusted.
#[derive(Debug, Clone, Copy)]
struct ParentTrust {
    /// The versions parent's mzxid.
    versions_mzxid: i64,
    /// The metadata parent's mzxid (None when it does not exist yet).
    meta_mzxid: Option<i64>,
}

/// The cache key of a versions parent's stat.
fn trust_key(s: &zk::Stat) -> (i64, i64, i32) {
    (s.czxid, s.mzxid, s.aversion)
}

/// What is known about one application between looks: what was applied, what failed, and the
/// status report that says so.
pub struct Progress {
    /// The last version installed here.
    applied: Option<Applied>,
    /// The version whose check or reload failed: not retried until a newer one comes.
    failed: Option<u64>,
    /// When an I/O failure asks for a retry, and the backoff for it.
    retry: Option<Duration>,
    /// Backoff for I/O retries.
    backoff: Backoff,
    /// The session generation we last synced on.
    synced: u64,
    /// The current status report.
    report: StatusReport,
    /// Why the last applied version could not be written to the state file, if it could not.
    state_error: Option<String>,
    /// Retried failures of the current version in a row, and since when it fails: a failure
    /// retried past [`RETRY_HEALTH_BOUND`] stops counting as "on its way" in `/healthz`.
    retries: (u32, Option<std::time::Instant>),
    /// Which hand edits of the destination were logged and counted already.
    drift: DriftWatch,
    /// The newer version a hold keeps back (`on_drift = "hold"`), named in the report's
    /// `attempted` and `error` until the hold ends.
    held_back: Option<String>,
    /// A rollout record read with a version it hides from this host ([`Fetched::Hidden`]): the
    /// follower takes it as what it knows of the record, and looks again.
    hidden_by: Option<Option<crate::model::rollout::Rollout>>,
}

/// After this many retried attempts, or this long, a failure that is retried with backoff
/// (a destination that is a directory, an owner that vanished) shows in `/healthz` and STATUS
/// instead of passing for an apply on its way.
pub const RETRY_HEALTH_BOUND: (u32, Duration) = (3, Duration::from_secs(300));

impl Progress {
    /// Whether a retried failure went on past [`RETRY_HEALTH_BOUND`].
    pub fn retries_exhausted(&self) -> bool {
        let (n, since) = self.retries;
        n >= RETRY_HEALTH_BOUND.0 || since.is_some_and(|t| t.elapsed() >= RETRY_HEALTH_BOUND.1)
    }
}

impl Progress {
    /// Why the state file could not record the last applied version (the next start would
    /// then find the file in place and record it without a reload).
    pub fn state_error(&self) -> Option<&str> {
        self.state_error.as_deref()
    }

    /// The status report as it stands (what the status node would say).
    pub fn report(&self) -> &StatusReport {
        &self.report
    }

    /// The version this host applied, if any.
    pub fn applied(&self) -> Option<&Applied> {
        self.applied.as_ref()
    }
}

/// The versions of an application as one listing saw them.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The newest version, if any was published.
    pub newest: Option<VersionId>,
    /// Identity of the version stream: the creation zxid of the versions' parent node.
    pub stream: i64,
    /// Every version's sequence number, to count how far behind this host is.
    seqs: Vec<u64>,
}

impl Listing {
    /// The versions among `versions` (oldest first) that `visible` shows, under a parent whose
    /// stat is `parent`.
    fn of<'a>(versions: impl IntoIterator<Item = &'a VersionId>, visible: Visible, parent: &zk::Stat) -> Listing {
        let (mut newest, mut seqs) = (None, Vec::new());
        for v in versions.into_iter().filter(|v| visible.shows(v.seq)) {
            seqs.push(v.seq);
            newest = Some(v);
        }
        Listing { newest: newest.cloned(), stream: parent.czxid, seqs }
    }

    /// How many listed versions are newer than what `p` says was applied (all of them when
    /// nothing was, or when the applied version belongs to another stream). Counting versions,
    /// not subtracting sequence numbers, because sequence numbers have gaps.
    pub fn behind(&self, p: &Progress) -> u64 {
        match &p.applied {
            Some(a) if a.stream == self.stream || a.stream == 0 => self.seqs.iter().filter(|s| **s > a.seq).count() as u64,
            _ => self.seqs.len() as u64,
        }
    }
}

/// A version's bytes, fetched and verified, or why they cannot be installed.
#[derive(Debug)]
pub enum Fetched {
    /// The version node was deleted meanwhile (pruned, or removed by an operator).
    Gone,
    /// The rollout record read with the version (the two are written in one multi-op) holds it
    /// back from this host: events told of the version before the record. Carries the record.
    Hidden(Option<crate::model::rollout::Rollout>),
    /// The bytes must not be installed (over the size limit, not matching their metadata, or
    /// not signed by a trusted key).
    Refused(String),
    /// Not installable yet: the metadata that carries the signature has not appeared. Retried
    /// with backoff, since the leader writes it just after the version.
    Pending(String),
    /// Bytes that passed every check, ready to install.
    Verified {
        /// The version's bytes.
        bytes: Vec<u8>,
        /// Their sha256, as lowercase hex.
        sha256: String,
        /// When the version node was created (ms since the epoch), for publish-to-apply latency.
        ctime_ms: i64,
        /// The publish that made it, from its metadata (none for a plain client's version).
        publish_id: Option<String>,
        /// When its signature was made, for an app with `trusted_keys` (else None).
        signed_ms: Option<u64>,
    },
}

impl Applier {
    /// The applier of `app` as `config` describes it.
    pub fn new(config: &Config, app: &AppConfig, metrics: Arc<Metrics>) -> Applier {
        Applier {
            app: app.clone(),
            versions: config.layout().versions(&app.name),
            layout: config.layout(),
            node_id: config.node_id.clone(),
            labels: config.labels.clone(),
            state: StateStore::new(&config.state_dir),
            trusted: crate::model::signing::TrustedKeys::load_or_refuse(app.published().map_or(&[][..], |p| &p.trusted_keys)),
            metrics,
            max_config_size: config.max_config_size,
            splay: crate::app::pacing::Splay::of(app),
            stop: CancellationToken::new(),
            freezes: None,
            trust: std::sync::Mutex::new(TrustCache::default()),
            no_multi_read: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The starting point: what the state file says this host applied.
    pub fn progress(&self) -> Progress {
        crate::host::group::recover(&self.app);
        crate::host::install::remove_staged_leftovers(&self.app);
        let applied = self.state.load(&self.app.name);
        if let Some(a) = &applied {
            self.metrics.applied(&self.app.name, Some(a.seq), a.applied_at);
        }
        let report = StatusReport {
            host: self.node_id.clone(),
            pid: std::process::id(),
            app: self.app.name.clone(),
            version: applied.as_ref().map(|a| a.version.clone()),
            sha256: applied.as_ref().map(|a| a.sha256.clone()),
            result: if applied.is_some() { ApplyResult::Ok } else { ApplyResult::Pending },
            attempted: None,
            error: None,
            time: now_secs(),
            stream: applied.as_ref().map(|a| a.stream).filter(|s| *s != 0),
            drift: None,
            publish_id: None,
            frozen: None,
        precheck: None,
        labels: self.labels.clone(),
        };
        Progress {
            applied,
            failed: None,
            retry: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            synced: 0,
            report,
            state_error: None,
            retries: (0, None),
            drift: DriftWatch::default(),
            held_back: None,
            hidden_by: None,
        }
    }

    /// Catches a freshly connected session up with the leader before reading (a new session
    /// may be served by a lagging follower).
    pub async fn sync(&self, client: &zk::Client) -> Result<(), zk::Error> {
        match client.sync(&self.versions).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lists the versions once, without a watch; None when the versions node does not exist.
    pub async fn list(&self, client: &zk::Client) -> Result<Option<Listing>, zk::Error> {
        match client.get_children(&self.versions).await {
            Ok((children, parent)) => {
                self.note_parent(&parent);
                let rollout = crate::zk::rollout::read(client, &self.layout, &self.app.name).await?.map(|(r, _)| r);
                Ok(Some(Listing::of(&layout::versions(&children), Visible::to(rollout.as_ref(), &self.node_id), &parent)))
            }
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `newest` (of version stream `stream`) should be applied now: it is newer than
    /// what this host applied, the stream was re-created, or the destination drifted and
    /// `on_drift` says to put it back. A version whose check or reload failed is not retried
    /// until a newer one comes. Every path that looks (start, a watch that fired, the periodic
    /// pass, `--once`) asks here, and here alone [`crate::model::drift::decide`] is asked, so
    /// `on_drift` means the same on each. An edit left in place is described in the report
    /// (reading the applied version back once per distinct edit, for the diff summary).
    pub async fn needs_apply(&self, client: &zk::Client, newest: &VersionId, stream: i64, p: &mut Progress) -> Result<bool, zk::Error> {
        if p.failed == Some(newest.seq) && p.retry.is_none() {
            return Ok(false);
        }
        let newer = match &p.applied {
            None => return Ok(true),
            Some(a) if a.stream != stream && a.stream != 0 => {
                tracing::warn!(app = %self.app.name, path = %self.versions, "the versions' parent node was re-created; following the new version stream");
                true
            }
            Some(a) if newest.seq > a.seq => true,
            Some(a) if newest.seq == a.seq => false,
            Some(a) => {
                tracing::debug!(app = %self.app.name, newest = %newest, applied = %a.version, "newest is older than what is applied; not going backwards");
                return Ok(false);
            }
        };
        let a = p.applied.clone().expect("matched");
        if a.stream == 0 {
            // A state file from before streams were recorded adopts the current one.
            p.applied.as_mut().expect("matched").stream = stream;
        }
        let on_disk = crate::app::drift::look(&self.app, Some(&a.sha256));
        match crate::model::drift::decide(self.app.on_drift, on_disk.disk, newer) {
            Verdict::UpToDate => {
                self.release(p);
                Ok(false)
            }
            Verdict::Apply => {
                if let (Disk::Differs, Some(sha)) = (on_disk.disk, &on_disk.sha256) {
                    let why = if newer { format!("applying {newest} over it") } else { format!("re-applying {} (on_drift = \"reapply\")", a.version) };
                    p.drift.replacing(&self.app, &self.metrics, sha, &why);
                }
                Ok(true)
            }
            Verdict::Leave(action) => {
                let sha = on_disk.sha256.clone().unwrap_or_default();
                if !DriftWatch::known(&p.report, &sha) {
                    let applied = self.applied_bytes(client, &a).await?;
                    let summary = match self.app.kind() {
                        crate::config::AppKind::File => crate::model::drift::summary(applied.as_deref(), &on_disk.bytes),
                        crate::config::AppKind::Bundle => (format!("points at {}, not {}", String::from_utf8_lossy(&on_disk.bytes), a.version), Vec::new()),
                    };
                    p.drift.leave(&self.app, &self.metrics, &mut p.report, &sha, summary, action);
                } else if let Some(d) = p.report.drift.as_mut() {
                    d.action = action;
                }
                p.held_back = None;
                if action == OnDrift::Hold && newer {
                    let line = p.report.drift.as_ref().map(Drift::describe).unwrap_or_default();
                    p.report.attempted = Some(newest.name.clone());
                    p.report.error = Some(format!(
                        "{line}; {newest} is not applied until {} matches {} again or is removed",
                        self.app.dest.display(),
                        a.version
                    ));
                    p.held_back = Some(newest.name.clone());
                }
                Ok(false)
            }
        }
    }

    /// The destination holds the applied version again: no drift to report, no hold.
    fn release(&self, p: &mut Progress) {
        if p.report.drift.is_some() {
            p.drift.clear(&self.app, &self.metrics, &mut p.report);
        }
        if p.held_back.take().is_some() && p.report.result == ApplyResult::Ok {
            p.report.attempted = None;
            p.report.error = None;
        }
    }

    /// The applied version's bytes as ZooKeeper holds them, for a drift's diff summary; None
    /// when they cannot be had (pruned, refused) or for a bundle (its archive is no text).
    async fn applied_bytes(&self, client: &zk::Client, a: &Applied) -> Result<Option<Vec<u8>>, zk::Error> {
        if self.app.kind() == crate::config::AppKind::Bundle {
            return Ok(None);
        }
        let v = VersionId::parse(&a.version).unwrap_or_else(|| VersionId::from_seq(a.seq));
        Ok(match self.fetch(client, &v, a.stream, a.signed_ms).await? {
            Fetched::Verified { bytes, sha256, .. } if sha256 == a.sha256 => Some(bytes),
            _ => None,
        })
    }

    /// Reads version `v` of stream `stream` (the versions parent's czxid) and its metadata and
    /// verifies size and hash. Metadata of another stream (left by an app node that was deleted
    /// and created again) counts as absent. Reads only: one request on ZooKeeper 3.6+ (see
    /// [`Applier::read_version`]), and the parents' ACLs only when their verdict is not cached.
    /// `held_ms`: when the signature of the version this host runs was made (none signed: None);
    /// an app with `trusted_keys` refuses an older one.
    pub async fn fetch(&self, client: &zk::Client, v: &VersionId, stream: i64, held_ms: Option<u64>) -> Result<Fetched, zk::Error> {
        self.fetch_as(client, v, stream, held_ms, false).await
    }

    /// [`Applier::fetch`]; with `for_precheck`, a version the rollout hides from this host is
    /// fetched all the same (to be checked, never installed).
    async fn fetch_as(&self, client: &zk::Client, v: &VersionId, stream: i64, held_ms: Option<u64>, for_precheck: bool) -> Result<Fetched, zk::Error> {
        let version_path = format!("{}/{}", self.versions, v.name);
        let meta_path = format!("{}/{}", self.layout.meta(&self.app.name), v.name);
        let (parent, rollout, version, meta) = self.read_version(client, &version_path, &meta_path).await?;
        if let Some(rollout) = rollout.filter(|_| !for_precheck) {
            if !Visible::to(rollout.as_ref(), &self.node_id).shows(v.seq) {
                return Ok(Fetched::Hidden(rollout));
            }
        }
        if let Some(parent) = &parent {
            // A version of another stream than the one it was taken for: the app was re-created
            // meanwhile, and the caller re-lists (its watch says so).
            if stream != 0 && parent.czxid != stream {
                return Ok(Fetched::Gone);
            }
            self.note_parent(parent);
        }
        let (bytes, stat) = match version {
            Ok(r) => r,
            Err(zk::Error::NoNode) => return Ok(Fetched::Gone),
            Err(e) => return Err(e),
        };
        let meta = self.parse_meta(meta, &meta_path, stream)?;
        // With ACLs on, the parents' ACLs are checked against the parent's stat just read with
        // the version (from the cache, mostly: no round trip).
        let parents = match self.parents_trusted(client).await? {
            Ok(t) => t,
            Err(reason) => return Ok(Fetched::Refused(reason)),
        };
        if parents.is_some_and(|t| stat.czxid <= t.versions_mzxid) {
            return Ok(Fetched::Refused(format!(
                "untrusted: {version_path} was created while {} was open to others (before its ACL was repaired); not installing it, publish again",
                self.versions
            )));
        }
        let meta = match meta {
            Ok(Some((m, czxid))) => {
                if parents.and_then(|t| t.meta_mzxid).is_some_and(|mz| czxid <= mz) {
                    return Ok(Fetched::Refused(format!(
                        "untrusted: {meta_path} was created while {} was open to others (before its ACL was repaired); not installing",
                        self.layout.meta(&self.app.name)
                    )));
                }
                Some(m)
            }
            Ok(None) => None,
            Err(reason) => return Ok(Fetched::Refused(reason)),
        };
        // The leader writes metadata in the same transaction as the version, so what was read
        // with it is all there is: none means a plain client's version (installed as raw bytes).
        if meta.is_none() && self.trusted.required() {
            // Still none: a plain client's version, or a leader that died before answering
            // (its successor fills the metadata in). Keep looking for a while, then refuse.
            let age_ms = (crate::clock::now_ms() as i64 - stat.ctime).max(0);
            return Ok(if age_ms < META_PATIENCE.as_millis() as i64 {
                Fetched::Pending("version has no metadata, so no signature, yet; not installing".into())
            } else {
                Fetched::Refused(format!(
                    "version has no metadata, so no signature, {}s after it was created; not installing",
                    age_ms / 1000
                ))
            });
        }
        // Chunked content is read from its chunks and verified whole (see crate::zk::blobs).
        let content = meta.as_ref().map(|m| &m.content);
        if let Some(why) = crate::host::bundle::kind_mismatch(&self.app, content) {
            return Ok(Fetched::Refused(why));
        }
        if parents.is_some() && content.is_some_and(|c| c.is_chunked()) {
            if let Err(reason) = self.blobs_trusted(client).await? {
                return Ok(Fetched::Refused(reason));
            }
        }
        let bytes = match crate::zk::blobs::resolve(client, &self.layout, &self.app.name, bytes, content, self.max_config_size).await? {
            Ok(b) => b,
            Err(reason) => return Ok(Fetched::Refused(format!("{reason}; not installing"))),
        };
        let sha = crate::digest::sha256_hex(&bytes);
        if let Err(e) = crate::model::content::check_max(bytes.len() as u64, self.max_config_size) {
            return Ok(Fetched::Refused(e.to_string()));
        }
        if let Some(m) = meta.as_ref().filter(|m| m.sha256 != sha) {
            return Ok(Fetched::Refused(format!(
                "sha256 mismatch: metadata says {}, bytes hash to {sha}; not installing",
                m.sha256
            )));
        }
        if self.trusted.required() {
            let m = meta.as_ref().expect("metadata was required above");
            match self.trusted.verify(m.signature.as_ref(), &self.app.name, &sha, bytes.len(), held_ms) {
                Ok(signer) => tracing::debug!(app = %self.app.name, version = %v, "signed by {signer}"),
                Err(reason) => return Ok(Fetched::Refused(reason.into())),
            }
        }
        let signed_ms = meta.as_ref().filter(|_| self.trusted.required()).and_then(|m| m.signature.as_ref()).map(|s| s.issued());
        Ok(Fetched::Verified { bytes, sha256: sha, ctime_ms: stat.ctime, publish_id: meta.and_then(|m| m.publish_id).filter(|id| crate::model::request::valid_publish_id(id)), signed_ms })
    }

    /// Reads the versions parent, version, metadata and rollout record: in one multi read
    /// (ZooKeeper 3.6+), so the parent's stat (the stream, the ACL cache key) and the record
    /// (which versions this host may see) are of the same moment as the version; on an older
    /// server, which refuses multi reads, the version and metadata as two pipelined reads and no
    /// parent or record. Once refused, multi reads are not tried again by this process.
    async fn read_version(&self, client: &zk::Client, version_path: &str, meta_path: &str) -> Result<VersionRead, zk::Error> {
        if !self.no_multi_read.load(std::sync::atomic::Ordering::Relaxed) {
            let mut r = client.new_multi_reader();
            r.add_get_data(&self.versions)?;
            r.add_get_data(version_path)?;
            r.add_get_data(meta_path)?;
            r.add_get_data(&self.layout.rollout(&self.app.name))?;
            match r.commit().await {
                Ok(results) if results.len() == 4 => {
                    let mut it = results.into_iter().map(crate::zk::session::multi_data);
                    let (parent, version, meta, rollout) = (it.next().expect("4"), it.next().expect("4"), it.next().expect("4"), it.next().expect("4"));
                    let rollout = match rollout {
                        Ok((bytes, _)) => Some(crate::model::rollout::parse(&self.app.name, &bytes)),
                        Err(zk::Error::NoNode) => Some(None),
                        Err(_) => None,
                    };
                    return Ok((parent.ok().map(|(_, s)| s), rollout, version, meta));
                }
                Ok(results) => return Err(zk::Error::UnexpectedError(format!("a multi read of 4 answered {}", results.len()))),
                Err(e) if crate::zk::session::is_unsupported(&e) => {
                    tracing::info!(app = %self.app.name, "the server refuses multi reads ({e}; ZooKeeper older than 3.6?): reading version and metadata apart");
                    self.no_multi_read.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let (version, meta) = tokio::join!(client.get_data(version_path), client.get_data(meta_path));
        Ok((None, None, version, meta))
    }

    /// A version's metadata as read: None when there is none (or only one of another version
    /// stream, which describes an older version of the same name), an error message when it
    /// does not parse (metadata that lies or is garbled never counts as absent).
    /// With the metadata comes its node's czxid, to tell metadata made while its parent was open.
    fn parse_meta(&self, read: Result<(Vec<u8>, zk::Stat), zk::Error>, path: &str, stream: i64) -> Result<Result<Option<(VersionMeta, i64)>, String>, zk::Error> {
        match read {
            Ok((m, stat)) => Ok(serde_json::from_slice::<VersionMeta>(&m)
                .map(|m| {
                    if m.belongs_to(stream, stat.czxid) {
                        Some((m, stat.czxid))
                    } else {
                        tracing::debug!(app = %self.app.name, path, "metadata belongs to an earlier version stream (the app's node was re-created); ignoring it");
                        None
                    }
                })
                .map_err(|e| format!("metadata {path} does not parse ({e}); not installing"))),
            Err(zk::Error::NoNode) => Ok(Ok(None)),
            Err(e) => Err(e),
        }
    }

    /// Drops the parents' cached verdict, so the next fetch reads their ACLs again: at the start
    /// of each session and on each periodic pass (see [`Applier::parents_trusted`]).
    pub fn forget_trust(&self) {
        if let Ok(mut t) = self.trust.lock() {
            t.checked = None;
        }
    }

    /// Remembers the versions parent's stat from a listing: the key of the ACL cache.
    pub fn note_parent(&self, stat: &zk::Stat) {
        if let Ok(mut t) = self.trust.lock() {
            t.listed = Some(*stat);
        }
    }

    /// With ACLs on, whether the versions parent and the metadata parent carry the policy's
    /// ACL: Ok(None) with ACLs off, Ok(Some(zxids)) when trusted, Err(why) naming the node and
    /// the ACL found when not. Reads both ACLs (two pipelined requests) only when the versions
    /// parent's stat differs from the one last checked, or nothing trusted was cached.
    ///
    /// Why not on every publish: the attack is a parent whose ACL let others create children
    /// (an open `/applications/<app>` made before any agent ran), so that a forged `conf-<n>` or
    /// its metadata would be installed. What decides is whether the node was created while its
    /// parent was open, which the parent's mzxid at the repair tells for every child at once;
    /// that verdict changes only when the parent's ACL (aversion), data (mzxid) or identity
    /// (czxid) changes, and the stat that carries all three is read in the same multi read as
    /// the version itself, so a verdict is never used for a parent that changed. The metadata
    /// parent's ACL is not in that key: its verdict is dropped at every session start and
    /// periodic pass ([`Applier::forget_trust`]), which bounds how long a change there goes
    /// unseen by `resync_interval`.
    async fn parents_trusted(&self, client: &zk::Client) -> Result<Result<Option<ParentTrust>, String>, zk::Error> {
        let Some(policy) = crate::zk::identity::policy() else { return Ok(Ok(None)) };
        let listed = self.trust.lock().ok().and_then(|t| {
            let listed = t.listed?;
            match t.checked {
                Some((key, trust)) if key == trust_key(&listed) => Some(Ok(trust)),
                _ => Some(Err(())),
            }
        });
        if let Some(Ok(trust)) = listed {
            return Ok(Ok(Some(trust)));
        }
        let meta_parent = self.layout.meta(&self.app.name);
        let (versions, meta) = tokio::join!(client.get_acl(&self.versions), client.get_acl(&meta_parent));
        let (acl, vstat) = versions?;
        let meta = match meta {
            Ok(r) => Some(r),
            Err(zk::Error::NoNode) => None,
            Err(e) => return Err(e),
        };
        if matches!(policy.verdict(crate::zk::identity::NodeKind::AgentParent, &acl), crate::zk::identity::AclVerdict::Unsafe(_)) {
            return Ok(Err(format!(
                "untrusted: {} allows {}; only agents may create versions there; run zkcoordctl acl init",
                self.versions,
                excess_of(policy, crate::zk::identity::NodeKind::AgentParent, &acl)
            )));
        }
        if let Some((macl, _)) = &meta {
            if matches!(policy.verdict(crate::zk::identity::NodeKind::AgentParent, macl), crate::zk::identity::AclVerdict::Unsafe(_)) {
                return Ok(Err(format!(
                    "untrusted: {meta_parent} allows {}; only agents may write metadata there; run zkcoordctl acl init",
                    excess_of(policy, crate::zk::identity::NodeKind::AgentParent, macl)
                )));
            }
        }
        let trust = ParentTrust { versions_mzxid: vstat.mzxid, meta_mzxid: meta.map(|(_, s)| s.mzxid) };
        if let Ok(mut t) = self.trust.lock() {
            t.listed = Some(vstat);
            t.checked = Some((trust_key(&vstat), trust));
        }
        Ok(Ok(Some(trust)))
    }

    /// Whether `blobs/<app>`, which chunked content is read from, carries the policy's ACL.
    async fn blobs_trusted(&self, client: &zk::Client) -> Result<Result<(), String>, zk::Error> {
        let Some(policy) = crate::zk::identity::policy() else { return Ok(Ok(())) };
        let dir = self.layout.app_blobs(&self.app.name);
        match client.get_acl(&dir).await {
            Ok((acl, _)) => match policy.verdict(crate::zk::identity::NodeKind::Blobs, &acl) {
                crate::zk::identity::AclVerdict::Unsafe(_) => Ok(Err(format!(
                    "untrusted: {dir} allows {}; only agents and publishers may create chunks there; run zkcoordctl acl init",
                    excess_of(policy, crate::zk::identity::NodeKind::Blobs, &acl)
                ))),
                _ => Ok(Ok(())),
            },
            // Missing chunks are reported by the read itself.
            Err(zk::Error::NoNode) => Ok(Ok(())),
            Err(e) => Err(e),
        }
    }

    /// A rollout's precheck (see [`crate::model::rollout::State::Precheck`]): fetches and
    /// verifies `v` as an apply would, runs this host's check on it staged beside the
    /// destination, and removes it; nothing is installed or reloaded. The answer goes into the
    /// status report; true when the report changed. Each version is checked once.
    pub async fn precheck(&self, client: &zk::Client, v: &VersionId, stream: i64, p: &mut Progress) -> Result<bool, zk::Error> {
        let name = &self.app.name;
        if p.report.precheck.as_ref().is_some_and(|c| c.version == v.name) || p.applied().is_some_and(|a| a.stream == stream && a.seq >= v.seq) {
            return Ok(false);
        }
        let held_ms = p.applied().and_then(|a| a.signed_ms);
        let (result, error, publish_id) = match self.fetch_as(client, v, stream, held_ms, true).await? {
            // Gone, or not checkable yet (its metadata): the next look asks again.
            Fetched::Gone | Fetched::Hidden(_) | Fetched::Pending(_) => return Ok(false),
            Fetched::Refused(reason) => (ApplyResult::Rejected, Some(reason), None),
            Fetched::Verified { bytes, sha256, publish_id, .. } => {
                let mut ctx = crate::host::hooks::HookContext::new(&self.app, v.name.clone(), p.applied().map(|a| a.version.clone()), sha256);
                ctx.publish_id = publish_id.clone();
                match crate::host::bundle::precheck_any(&self.app, &ctx, bytes, self.max_config_size, &self.metrics).await {
                    Ok(Ok(())) => (ApplyResult::Ok, None, publish_id),
                    Ok(Err(why)) => (ApplyResult::CheckFailed, Some(why), publish_id),
                    Err(e) => (ApplyResult::Error, Some(format!("cannot stage it: {e}")), publish_id),
                }
            }
        };
        let publish_id = publish_id.as_deref().unwrap_or("-");
        match &error {
            None => tracing::info!(app = %name, version = %v, publish_id, "precheck passed; nothing installed"),
            Some(why) => tracing::error!(app = %name, version = %v, publish_id, "precheck failed ({}): {why}", result.as_str()),
        }
        p.report.precheck = Some(crate::model::status::Precheck { version: v.name.clone(), result, error });
        Ok(true)
    }

    /// Fetches, verifies and installs `v`, updating state and the status report.
    pub async fn apply(&self, client: &zk::Client, v: &VersionId, stream: i64, p: &mut Progress) -> Result<(), zk::Error> {
        let name = &self.app.name;
        let held_ms = p.applied().and_then(|a| a.signed_ms);
        let (bytes, sha, ctime_ms, publish_id, signed_ms) = match self.fetch(client, v, stream, held_ms).await? {
            Fetched::Gone => return Ok(()), // deleted meanwhile; the watch re-lists
            Fetched::Hidden(rollout) => {
                tracing::debug!(app = %name, version = %v, "the rollout record read with it holds this version back; not applying");
                p.hidden_by = Some(rollout);
                return Ok(());
            }
            Fetched::Refused(reason) => {
                tracing::error!(app = %name, version = %v, "{reason}");
                p.report.publish_id = None;
                self.record_failure(p, v, ApplyResult::Rejected, reason, false);
                return Ok(());
            }
            Fetched::Pending(reason) => {
                let delay = p.backoff.next_delay();
                tracing::warn!(app = %name, version = %v, "{reason}; looking again in {delay:?}");
                p.report.publish_id = None;
                self.record_failure(p, v, ApplyResult::Error, reason, true);
                p.retry = Some(delay);
                return Ok(());
            }
            Fetched::Verified { bytes, sha256, ctime_ms, publish_id, signed_ms } => (bytes, sha256, ctime_ms, publish_id, signed_ms),
        };
        // Every line about this apply names its publish (journal field ZKCOORD_PUBLISH_ID).
        p.report.publish_id = publish_id.clone();
        let publish_id = publish_id.as_deref().unwrap_or("-");
        if crate::host::bundle::holds(&self.app, &sha) {
            tracing::info!(app = %name, version = %v, publish_id, "destination already holds this version; recording it without a reload");
            self.record_success(p, v, stream, &sha, signed_ms);
            return Ok(());
        }
        tracing::info!(app = %name, version = %v, publish_id, bytes = bytes.len(), "applying");
        let mut ctx = crate::host::hooks::HookContext::new(&self.app, v.name.clone(), p.applied().map(|a| a.version.clone()), sha.clone());
        ctx.publish_id = p.report.publish_id.clone();
        let installed = crate::host::bundle::install_any(&self.app, &ctx, bytes, self.max_config_size, &self.metrics);
        let thawed = || self.freezes.as_ref().is_none_or(|f| f.borrow().as_ref().is_some_and(|b| b.line(name).is_none()));
        let Some(installed) = crate::app::pacing::paced(client, &self.layout, &self.app, &self.node_id, installed, &self.stop, &thawed, &self.metrics).await? else {
            tracing::info!(app = %name, version = %v, publish_id, "stopped or frozen while waiting for a reload slot; nothing was changed");
            return Ok(());
        };
        match installed {
            Ok(InstallResult::Applied { reload }) => {
                if let Some(r) = reload.filter(|r| !r.output.trim().is_empty()) {
                    tracing::info!(app = %name, version = %v, publish_id, "reload said: {}", r.output.trim());
                }
                // From the version's creation to now, the install (check, rename, reload) done.
                let age_ms = (crate::clock::now_ms() as i64 - ctime_ms).max(0);
                tracing::info!(app = %name, version = %v, publish_id, dest = %self.app.dest.display(), since_publish_ms = age_ms, "applied");
                self.metrics.applied_after(name, Duration::from_millis(age_ms as u64));
                self.record_success(p, v, stream, &sha, signed_ms);
            }
            Ok(InstallResult::CheckFailed(why)) => {
                tracing::error!(app = %name, version = %v, publish_id, "check failed, old file kept: {why}");
                self.record_failure(p, v, ApplyResult::CheckFailed, why, false);
            }
            Ok(InstallResult::ReloadFailed(why)) => {
                tracing::error!(app = %name, version = %v, publish_id, "reload failed: {why}");
                self.record_failure(p, v, ApplyResult::ReloadFailed, why, false);
            }
            Err(e) => {
                let delay = p.backoff.next_delay();
                tracing::error!(app = %name, version = %v, publish_id, "cannot install: {e}; old file kept; retrying in {delay:?}");
                self.record_failure(p, v, ApplyResult::Error, e.to_string(), true);
                p.retry = Some(delay);
            }
        }
        Ok(())
    }

    fn record_success(&self, p: &mut Progress, v: &VersionId, stream: i64, sha: &str, signed_ms: Option<u64>) {
        let applied = Applied { version: v.name.clone(), seq: v.seq, sha256: sha.to_string(), applied_at: now_secs(), stream, members: None, signed_ms };
        p.state_error = self.state.store(&self.app.name, &applied).err().map(|e| e.to_string());
        if let Some(e) = &p.state_error {
            tracing::error!(app = %self.app.name, "cannot remember the applied version: {e}");
        }
        p.applied = Some(applied);
        p.failed = None;
        p.retry = None;
        p.retries = (0, None);
        p.backoff.reset();
        p.report.version = Some(v.name.clone());
        p.report.stream = Some(stream);
        p.report.sha256 = Some(sha.to_string());
        p.report.result = ApplyResult::Ok;
        p.report.attempted = None;
        p.report.error = None;
        p.report.time = now_secs();
        p.held_back = None;
        if p.report.drift.is_some() {
            p.drift.clear(&self.app, &self.metrics, &mut p.report);
        }
        self.metrics.apply_finished(&self.app.name, ApplyResult::Ok);
        self.metrics.applied(&self.app.name, Some(v.seq), now_secs());
    }

    fn record_failure(&self, p: &mut Progress, v: &VersionId, result: ApplyResult, error: String, retry: bool) {
        p.failed = Some(v.seq);
        if retry {
            p.retries.0 += 1;
            p.retries.1.get_or_insert_with(std::time::Instant::now);
        } else {
            p.retry = None;
            p.retries = (0, None);
            p.backoff.reset();
        }
        p.report.result = result;
        p.report.attempted = Some(v.name.clone());
        p.report.error = Some(error);
        p.report.time = now_secs();
        self.metrics.apply_finished(&self.app.name, result);
    }
}

/// What the follower saw at its last look, for its view.
#[derive(Debug, Default)]
struct Seen {
    /// At least one look finished.
    looked: bool,
    /// The newest version, if any.
    newest: Option<String>,
    /// Versions newer than the applied one.
    behind: u64,
}

/// Everything one application's follower needs.
pub struct AppFollower {
    /// Decides and applies; shared with `zkcoordd --once`.
    pub applier: Applier,
    /// Told once the first look at ZooKeeper is done.
    pub ready: ReadyPart,
    /// Where this app's view is published, for STATUS and `/healthz`.
    pub view: watch::Sender<AppView>,
    /// Whether another session holds our status node's name, as the keeper last said.
    pub conflict: std::sync::Mutex<Option<String>>,
    /// The freeze flags in force (None until first read): while one holds the app, nothing is
    /// applied (see [`crate::model::freeze`]).
    pub freezes: watch::Receiver<Option<crate::model::freeze::Freezes>>,
}

impl AppFollower {
    /// Follows until `shutdown`; an apply in progress is finished first.
    pub async fn run(mut self, mut session: SessionHandle, shutdown: CancellationToken) {
        self.applier.stop = shutdown.clone();
        self.applier.freezes = Some(self.freezes.clone());
        let a = &self.applier;
        let p = a.progress();
        let status = StatusNode::keep(&a.layout, &a.app.name, &a.node_id, &p.report, a.app.resync(), &session, &shutdown);
        let next_pass = a.app.resync().map(next_pass_after);
        let mut looks = Looks { follower: &self, p, seen: Seen::default(), status, shutdown: shutdown.clone(), next_pass, pass: false, source: Source::None, freezes: self.freezes.clone() };
        self.publish(&looks.p, &looks.seen, false);
        let what = format!("reading versions of app {}", a.app.name);
        skeleton::follow(&a.app.name, &a.metrics, &mut session, &shutdown, &what, &mut looks).await;
        looks.status.stopped().await;
    }

    /// One look: learn what the versions are, apply the newest if needed. Returns what to wait
    /// on besides the events of `source`.
    ///
    /// What it learns from depends on the server, chosen once per session (see [`Source`]): on
    /// ZooKeeper 3.6+ from the events of persistent watches, re-listing only at the start of a
    /// session, after a reconnect, when the versions parent was created or deleted, and on a
    /// periodic pass; so a publish costs the host the new version's read (one multi read) and
    /// its status write. On an older server, from a listing with a child watch and the rollout
    /// record read with a watch on every look, as before. Either way the same decision and the
    /// same apply follow.
    ///
    /// A periodic pass (`pass`) is a look after a `sync`, with the watches set again, a fresh
    /// listing and the rollout record, comparing the destination whatever the watches said; the status node's keeper
    /// reads the node once more; the applied version is read back only for a new hand edit.
    #[allow(clippy::too_many_arguments)]
    async fn look(
        &self,
        client: &zk::Client,
        generation: u64,
        pass: bool,
        p: &mut Progress,
        seen: &mut Seen,
        status: &watch::Sender<Vec<u8>>,
        source: &mut Source,
    ) -> Result<Wake, zk::Error> {
        let a = &self.applier;
        if pass {
            tracing::debug!(app = %a.app.name, "periodic pass");
            // Parents' ACLs are read again at the next fetch (see `parents_trusted`).
            a.forget_trust();
        }
        if pass || p.synced != generation {
            a.sync(client).await?;
            p.synced = generation;
        }
        if let Source::Events { events, .. } = source {
            if pass {
                // Whatever the events said, and whether or not the server still holds the
                // watches: set them again and list (two more requests per pass).
                events.mark_reconnected();
            }
            if events.drain() == Heard::SessionEnded {
                *source = Source::None;
                return Err(zk::Error::SessionExpired);
            }
        }
        let rewatch = matches!(source, Source::Events { events, .. } if events.needs_rewatch());
        if source.generation() != Some(generation) || rewatch {
            a.forget_trust();
            // The watches of the old source are dropped only once the new ones are set, so the
            // client never asks the server to remove a watch on these paths.
            *source = match VersionEvents::start(client, &a.layout, &a.app.name, &a.versions).await {
                Ok(events) => Source::Events { generation, events: Box::new(events) },
                Err(Unwatched::Unsupported(e)) => {
                    tracing::info!(app = %a.app.name, "the server refuses persistent watches ({e}; ZooKeeper older than 3.6?): following with child watches on this session");
                    Source::Children { generation }
                }
                Err(Unwatched::Failed(e)) => {
                    *source = Source::None;
                    return Err(e);
                }
            };
        } else if let Source::Events { events, .. } = source {
            events.refresh(client, &a.layout).await?;
        }
        let (listing, wake, rollout): Listed = match source {
            Source::Events { events, .. } => {
                let Some(parent) = events.parent().copied() else {
                    // Nothing published yet: the events say when the parent appears.
                    tracing::debug!(app = %a.app.name, path = %a.versions, "no versions yet; waiting for the node");
                    *seen = Seen { looked: true, newest: None, behind: 0 };
                    self.publish(p, seen, false);
                    return Ok(Box::pin(std::future::pending()));
                };
                a.note_parent(&parent);
                // A staged rollout may hold this host at an older version.
                let listing = Listing::of(events.versions(), Visible::to(events.rollout(), &a.node_id), &parent);
                (listing, Box::pin(std::future::pending()), events.rollout().cloned())
            }
            Source::Children { .. } => match self.look_by_children(client, p, seen).await? {
                Ok(listed) => listed,
                Err(wake) => return Ok(wake),
            },
            Source::None => unreachable!("a source was chosen above"),
        };
        *seen = Seen { looked: true, newest: listing.newest.as_ref().map(|n| n.name.clone()), behind: listing.behind(p) };
        // A precheck asks every host to check a version it may not take yet (a freeze does not
        // stop it: nothing is installed).
        if let Some(v) = rollout.as_ref().and_then(|r| r.prechecking()) {
            if a.precheck(client, &v, listing.stream, p).await? {
                self.publish(p, seen, false);
                status.send_replace(p.report.to_bytes());
            }
        }
        // A freeze holds everything, a hand edit's reapply included; before the flags are
        // first read (a moment after the session starts) nothing is applied either.
        let board = self.freezes.borrow().clone();
        let frozen = board.as_ref().and_then(|b| b.line(&a.app.name));
        if frozen != p.report.frozen {
            match &frozen {
                Some(why) => tracing::warn!(app = %a.app.name, newest = ?seen.newest, "{why}; applying nothing new"),
                None => tracing::info!(app = %a.app.name, "freeze lifted; following versions again"),
            }
            p.report.frozen = frozen.clone();
            a.metrics.frozen(&a.app.name, frozen.is_some());
        }
        let newest = listing.newest.clone().filter(|_| board.is_some() && frozen.is_none());
        if let Some(newest) = newest {
            if a.needs_apply(client, &newest, listing.stream, p).await? {
                if let Some(delay) = a.splay.wait(p.applied().is_some()) {
                    tracing::info!(app = %a.app.name, version = %newest, "splay: applying in {delay:?}");
                    self.publish(p, seen, false);
                    return Ok(Box::pin(async move {
                        tokio::select! {
                            _ = wake => {}
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }));
                }
                self.publish(p, seen, true);
                a.apply(client, &newest, listing.stream, p).await?;
                if let Some(rollout) = p.hidden_by.take() {
                    // The record came with the version: know it, and decide again at once.
                    if let Source::Events { events, .. } = source {
                        events.set_rollout(rollout);
                    }
                    self.publish(p, seen, false);
                    return Ok(Box::pin(async {}));
                }
                seen.behind = listing.behind(p);
                // View and gauge first: whoever sees the new status node then sees them too.
                self.publish(p, seen, false);
                status.send_replace(p.report.to_bytes());
            }
        }
        self.publish(p, seen, false);
        // A drift found or cleared changes the report without an apply.
        let bytes = p.report.to_bytes();
        status.send_if_modified(|current| {
            let changed = *current != bytes;
            if changed {
                *current = bytes;
            }
            changed
        });
        Ok(wake)
    }

    /// The look of a server without persistent watches: the listing with a child watch and the
    /// rollout record with a watch, every time. The versions visible to this host, the parent's
    /// stat and the wake-up of either watch; or, with no versions parent yet, what to wait on.
    async fn look_by_children(&self, client: &zk::Client, p: &Progress, seen: &mut Seen) -> Result<Result<Listed, Wake>, zk::Error> {
        let a = &self.applier;
        // The listing and the rollout record are asked for together: on a busy ensemble every
        // round trip in a row is what a thousand hosts wait for.
        let (listed, rollout) = tokio::join!(
            client.get_and_watch_children(&a.versions),
            crate::zk::rollout::read_and_watch(client, &a.layout, &a.app.name)
        );
        let (children, parent, watcher) = match listed {
            Ok(r) => {
                a.note_parent(&r.1);
                r
            }
            Err(zk::Error::NoNode) => {
                // Nothing published yet: wait for the parent to appear.
                let (stat, w) = client.check_and_watch_stat(&a.versions).await?;
                if stat.is_some() {
                    return Ok(Err(Box::pin(async {})));
                }
                tracing::debug!(app = %a.app.name, path = %a.versions, "no versions yet; waiting for the node");
                *seen = Seen { looked: true, newest: None, behind: 0 };
                self.publish(p, seen, false);
                return Ok(Err(Box::pin(async move {
                    w.changed().await;
                })));
            }
            Err(e) => return Err(e),
        };
        // A staged rollout may hold this host at an older version: the rollout record decides
        // which versions it sees, and its changes (promote, abort) wake it like new versions.
        let (rollout, rollout_changed) = rollout?;
        let listing = Listing::of(&layout::versions(&children), Visible::to(rollout.as_ref(), &a.node_id), &parent);
        let wake: Wake = Box::pin(async move {
            tokio::select! {
                _ = watcher.changed() => {}
                _ = rollout_changed => {}
            }
        });
        Ok(Ok((listing, wake, rollout)))
    }

    /// Publishes this app's view (when it changed) and its versions-behind gauge.
    fn publish(&self, p: &Progress, seen: &Seen, applying: bool) {
        let a = &self.applier;
        a.metrics.versions_behind(&a.app.name, seen.behind);
        let view = AppView {
            name: a.app.name.clone(),
            report: Some(p.report.clone()),
            looked: seen.looked,
            applying,
            newest: seen.newest.clone(),
            behind: seen.behind,
            // Retried past the bound, it is a failure STATUS and /healthz show, not progress.
            retrying: p.retry.is_some() && !p.retries_exhausted(),
            conflict: self.conflict.lock().ok().and_then(|c| c.clone()),
            held: None,
        };
        skeleton::show(&self.view, view);
    }
}

/// A future that resolves when what a look waits on (beside its [`Source`]) happened.
type Wake = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a listing look found: the versions this host may see (with their stream), what wakes
/// the next look, and the rollout record read with them.
type Listed = (Listing, Wake, Option<crate::model::rollout::Rollout>);

/// Where a follower learns of new versions on the current session, chosen at its first look.
enum Source {
    /// Nothing chosen yet (or the session it was chosen on ended).
    None,
    /// ZooKeeper 3.6+: persistent watches, versions known from their events.
    Events {
        /// The session generation the watches were set on.
        generation: u64,
        /// The watches and what they told.
        events: Box<VersionEvents>,
    },
    /// An older server: a child watch and a rollout watch set again on every look.
    Children {
        /// The session generation the choice was made on.
        generation: u64,
    },
}

impl Source {
    /// The session generation the source belongs to.
    fn generation(&self) -> Option<u64> {
        match self {
            Source::None => None,
            Source::Events { generation, .. } | Source::Children { generation } => Some(*generation),
        }
    }

    /// Waits for the next event of the watches (forever without them); false when the session
    /// ended, after which the watches are dropped unpolled.
    async fn next(&mut self) -> bool {
        match self {
            Source::Events { events, .. } => {
                if events.next().await == Heard::SessionEnded {
                    *self = Source::None;
                    return false;
                }
                true
            }
            _ => std::future::pending().await,
        }
    }

    /// After a reconnect (or a session change of any kind): watches set again and a full
    /// listing at the next look.
    fn mark_reconnected(&mut self) {
        if let Source::Events { events, .. } = self {
            events.mark_reconnected();
        }
    }
}

/// A published app's follower while it runs: what it knows between looks.
struct Looks<'a> {
    /// The follower.
    follower: &'a AppFollower,
    /// What was applied and reported.
    p: Progress,
    /// What the last look saw.
    seen: Seen,
    /// Our status node for the app.
    status: StatusNode,
    /// The daemon's stop.
    shutdown: CancellationToken,
    /// When the next periodic pass is due (None: `resync_interval = "off"`).
    next_pass: Option<tokio::time::Instant>,
    /// Whether the next look is a periodic pass.
    pass: bool,
    /// Where new versions are learnt of on the current session.
    source: Source,
    /// Wakes a look when a freeze is set or lifted.
    freezes: watch::Receiver<Option<crate::model::freeze::Freezes>>,
}

/// When the pass after one that starts now is due: the interval, with jitter.
fn next_pass_after(interval: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + crate::backoff::jittered(interval)
}

impl Turn for Looks<'_> {
    fn turn<'a>(&'a mut self, client: &'a zk::Client, generation: u64, session: &'a mut SessionHandle) -> impl std::future::Future<Output = Result<Flow, zk::Error>> + Send + 'a {
        async move {
            let f = self.follower;
            let wake = f.look(client, generation, self.pass, &mut self.p, &mut self.seen, &self.status.report, &mut self.source).await?;
            if self.pass {
                self.pass = false;
                self.next_pass = f.applier.app.resync().map(next_pass_after);
            }
            f.ready.mark();
            let retry = self.p.retry.map(tokio::time::sleep);
            let next_pass = self.next_pass;
            let mut reconnected = false;
            tokio::select! {
                _ = async { match next_pass { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    self.pass = true;
                }
                _ = self.shutdown.cancelled() => return Ok(Flow::Stop),
                Ok(()) = self.status.conflict.changed() => {
                    if let Ok(mut c) = f.conflict.lock() {
                        *c = self.status.conflict.borrow_and_update().clone();
                    }
                }
                _ = wake => {}
                Ok(()) = self.freezes.changed() => {}
                alive = self.source.next() => {
                    if !alive {
                        return Err(zk::Error::SessionExpired);
                    }
                }
                // A reconnect: events missed meanwhile are not replayed, and the server may have lost
                // the persistent watches, so the next look sets them again and lists.
                _ = session.changed() => reconnected = true,
                _ = async { match retry { Some(r) => r.await, None => std::future::pending().await } } => {}
            }
            if reconnected {
                self.source.mark_reconnected();
            }
            Ok(Flow::Again)
        }
    }
}

/// The entries of `acl` that hold more than the policy gives on a parent of `kind`, as the
/// verdict names them (`world:anyone:cdrwa`).
fn excess_of(policy: &crate::zk::identity::AclPolicy, kind: crate::zk::identity::NodeKind, acl: &[zk::Acl]) -> String {
    match policy.verdict(kind, acl) {
        crate::zk::identity::AclVerdict::Unsafe(w) => w.trim_start_matches("allows ").to_string(),
        _ => crate::zk::identity::describe(acl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(result: ApplyResult, behind: u64, retrying: bool) -> AppView {
        AppView {
            name: "web".into(),
            report: Some(StatusReport {
                host: "h".into(),
                pid: 1,
                app: "web".into(),
                version: Some("conf-0000000001".into()),
                sha256: None,
                result,
                attempted: (result != ApplyResult::Ok).then(|| "conf-0000000002".into()),
                error: None,
                time: 0,
                stream: None,
                drift: None,
                publish_id: None,
                frozen: None,
                precheck: None,
                labels: Default::default(),
            }),
            looked: true,
            applying: false,
            newest: Some("conf-0000000002".into()),
            behind,
            retrying,
            conflict: None,
            held: None,
        }
    }

    #[test]
    fn health_is_the_newest_or_on_the_way_there() {
        assert_eq!(view(ApplyResult::Ok, 0, false).health(), Ok(()));
        assert_eq!(view(ApplyResult::Error, 1, true).health(), Ok(()), "a write error being retried");
        assert_eq!(view(ApplyResult::CheckFailed, 1, false).health(), Err("app web: check-failed conf-0000000002".into()));
        assert_eq!(view(ApplyResult::ReloadFailed, 1, false).health(), Err("app web: reload-failed conf-0000000002".into()));
        let mut applying = view(ApplyResult::CheckFailed, 2, false);
        applying.applying = true;
        assert_eq!(applying.health(), Ok(()), "a newer version is being applied");
        assert!(AppView::starting("web").health().unwrap_err().contains("not yet synced"));
        assert_eq!(AppView::starting("web").summary(), "web=starting");
        assert_eq!(view(ApplyResult::CheckFailed, 1, false).summary(), "web=conf-0000000001 (check-failed conf-0000000002)");
    }

    #[test]
    fn a_frozen_app_behind_on_purpose_is_healthy_but_a_failed_apply_still_is_not() {
        let frozen = |result, behind| {
            let mut v = view(result, behind, false);
            v.report.as_mut().unwrap().frozen = Some("frozen by ops@bastion since …: incident 4711".into());
            v
        };
        assert_eq!(frozen(ApplyResult::Ok, 3).health(), Ok(()));
        assert_eq!(frozen(ApplyResult::Ok, 3).summary(), "web=conf-0000000001 (frozen)");
        assert_eq!(frozen(ApplyResult::CheckFailed, 1).health(), Err("app web: check-failed conf-0000000002".into()));
        assert_eq!(view(ApplyResult::Ok, 3, false).health(), Err("app web: 3 version(s) behind, newest conf-0000000002".into()));
    }
}
