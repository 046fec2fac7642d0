//! This machine's files and processes: hook commands with a timeout (`hooks`), the one atomic
//! install with check, reload and rollback (`install`), reload groups sharing it (`group`),
//! directory bundles (`bundle`), post-reload verification
//! (`verify`), and what
//! this host applied, remembered across restarts (`state`), and the lock that lets one process
//! at a time apply (`lock`).
//!
//! May use: `config`, `metrics`, `model`, the leaves. Never `zk`: what to install arrives as
//! bytes, so every step here can be tested on a plain directory.

pub mod bundle;
pub mod group;
pub(crate) mod hooks;
pub mod install;
pub mod lock;
pub(crate) mod state;
pub(crate) mod verify;
