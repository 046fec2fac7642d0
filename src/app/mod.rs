//! The app role: follow an application's versions and apply the newest (`follower`), or render
//! one from a service's live members (`render`); what both do about a destination edited by hand
//! (`drift`); pace reloads across the fleet (`pacing`); and
//! `zkcoordd --once` / `--dry-run` (`oneshot`).
//!
//! May use: everything below the roles (`zk`, `host`, `config`, `metrics`, `model`, leaves).
//! Never `agent`, `service`, `daemon` or `ctl`.

pub(crate) mod drift;
pub mod follower;
pub(crate) mod oneshot;
pub(crate) mod pacing;
pub(crate) mod render;
pub mod skeleton;
