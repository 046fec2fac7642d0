//! The one lock in `state_dir` (`zkcoord.lock`): whoever applies on this host holds it, the
//! daemon for its whole life and `zkcoordd --once` for its run, so two of them never install
//! (and record) at once. `--dry-run` changes nothing and takes no lock.
//!
//! An flock(2), so the kernel drops it when the holder dies however it dies: no stale lock to
//! clean up after a `kill -9`. The holder writes its pid into the file for the error message.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside `state_dir`.
pub const LOCK_FILE: &str = "zkcoord.lock";

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct StateLock {
    /// The locked file, kept open for as long as the lock is held.
    _file: Flock<File>,
    /// Where it is, for logs.
    pub path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{} is held by {}: another zkcoordd (the daemon, or a --once run) applies on this host; stop it first, or let it finish", path.display(), holder.map_or("another process".to_string(), |p| format!("pid {p}")))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it (None when unreadable).
        holder: Option<u32>,
    },
    /// The state directory or the lock file cannot be made or opened.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Takes the lock in `state_dir` (created if missing) without waiting, and writes our pid.
pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
    let path = state_dir.join(LOCK_FILE);
    let io = |source| LockError::Io { path: path.clone(), source };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held { path, holder: text.trim().parse().ok() });
        }
        Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
    };
    file.set_len(0).and_then(|_| file.rewind()).and_then(|_| writeln!(*file, "{}", std::process::id())).map_err(io)?;
    Ok(StateLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_file_and_the_pid_and_may_take_it_once_released() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let first = acquire(&dir).unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let err = acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("zkcoord.lock") && err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        assert!(acquire(&dir).is_ok());
    }
}
