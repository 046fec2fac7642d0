//! The chroot a connect string may end with (`zk1:2181/zkc`). ZooKeeper resolves every path
//! below it, but nobody creates it: a session on a missing chroot connects fine and then
//! fails every write with "node not exists", naming chroot-relative paths. So every session
//! looks for it once, creates it when this identity may (on a second session without the
//! chroot), and otherwise says, in one sentence, what is wrong and what to do. This room holds
//! the error and the look; [`crate::zk::session::ensure_chroot`] the creating, since it opens
//! a session.

use crate::config::ConnectString;
use zookeeper_client as zk;

/// Why a chroot is not there to work in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChrootError {
    /// It does not exist, and this identity could not create it.
    #[error("the chroot {chroot} does not exist; create it or change hosts ({why})")]
    Missing {
        /// The chroot.
        chroot: String,
        /// Why it could not be created here.
        why: String,
    },
    /// It does not exist, and this caller does not create chroots.
    #[error("the chroot {0} does not exist; create it or change hosts")]
    Absent(String),
    /// ZooKeeper failed while looking.
    #[error("cannot look for the chroot: {0}")]
    Zk(#[from] zk::Error),
}

/// Whether `client`'s chroot exists: its root is the chroot, so `/` is missing exactly when the
/// chroot is. Ok(true) without a chroot.
pub async fn exists(client: &zk::Client, hosts: &ConnectString) -> Result<bool, zk::Error> {
    if hosts.chroot.is_none() {
        return Ok(true);
    }
    Ok(client.check_stat("/").await?.is_some())
}
