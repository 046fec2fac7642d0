//! What lives in ZooKeeper, as plain data and rules: every znode path and name (`layout`, with
//! the one "newest version" rule), publish requests and their outcomes and metadata (`request`),
//! how content is stored (`content`), the rollout record and which versions a host may see
//! (`rollout`), what a settled version's rollout did (`record`), signatures (`signing`), the per-host status report (`status`), a destination
//! edited by hand (`drift`), the freeze switch (`freeze`) and how far a rendered app's member set may shrink (`member_guard`).
//!
//! May use: the leaves (`clock`, `digest`, `secret`) and itself. Nothing here talks to
//! ZooKeeper or touches this host's files, so every rule can be tested without either.

pub mod content;
pub mod drift;
pub mod freeze;
pub mod layout;
pub mod member_guard;
pub mod record;
pub mod request;
pub(crate) mod rollout;
pub(crate) mod signing;
pub mod status;
