//! What this host applied, per application, remembered under `state_dir` so that a restart with
//! nothing new neither rewrites nor reloads, and the applied version never goes backwards.

use crate::host::install::{self, InstallError, Ownership};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The last version this host installed for one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Version node name, e.g. `conf-0000000012`.
    pub version: String,
    /// Its sequence number; versions are compared by this.
    pub seq: u64,
    /// sha256 of the bytes, to spot a destination that drifted.
    pub sha256: String,
    /// When it was applied, in seconds since the epoch.
    pub applied_at: u64,
    /// Identity of the version stream: the creation zxid of the versions' parent znode. If an
    /// operator deletes and re-creates the parent, sequence numbers restart, and "newer" is
    /// judged afresh rather than ignoring the new stream forever.
    #[serde(default)]
    pub stream: i64,
    /// A rendered app: how many members the applied file was rendered from, so that a daemon
    /// restarted during a registry outage still guards against a drop from that count
    /// ([`crate::model::member_guard`]), not from the few members it sees first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    /// When the applied version's signature was made (apps with `trusted_keys`): no version
    /// whose signature is older is installed after it (a replay, see [`crate::model::signing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_ms: Option<u64>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    /// Where the per-app files live.
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: &Path) -> StateStore {
        StateStore { dir: dir.to_path_buf() }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, app: &str) -> PathBuf {
        self.dir.join(format!("{app}.json"))
    }

    /// The remembered state of `app`; a missing or unreadable file means "nothing applied yet".
    pub fn load(&self, app: &str) -> Option<Applied> {
        let path = self.file(app);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unreadable state file: {e}");
                None
            }
        }
    }

    /// Remembers `applied` for `app`, atomically. The directory is created when the first write
    /// finds it missing, not looked for before every write.
    pub fn store(&self, app: &str, applied: &Applied) -> Result<(), InstallError> {
        let bytes = serde_json::to_vec_pretty(applied).expect("state serializes");
        let write = || install::write_atomic(&self.file(app), &bytes, 0o644, Ownership::default());
        match write() {
            Err(InstallError::MissingDir { .. }) => {
                std::fs::create_dir_all(&self.dir).map_err(|source| InstallError::Io {
                    step: "create state directory",
                    path: self.dir.clone(),
                    source,
                    hint: String::new(),
                })?;
                write()
            }
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_garbage() {
        let d = tempfile::tempdir().unwrap();
        let s = StateStore::new(&d.path().join("state"));
        assert_eq!(s.load("a"), None);
        let a = Applied { version: "conf-0000000003".into(), seq: 3, sha256: "ab".into(), applied_at: 1, stream: 7, members: None, signed_ms: Some(5) };
        s.store("a", &a).unwrap();
        assert_eq!(s.load("a"), Some(a));
        let r = Applied { version: "members:40".into(), seq: 0, sha256: "cd".into(), applied_at: 2, stream: 0, members: Some(40), signed_ms: None };
        s.store("r", &r).unwrap();
        assert_eq!(s.load("r"), Some(r));
        std::fs::write(d.path().join("state/b.json"), b"{not json").unwrap();
        assert_eq!(s.load("b"), None);
    }
}
