//! Everything that talks to ZooKeeper: the one session (`session`), our identity and the ACL
//! each node gets (`identity`, `tls`), ephemeral nodes kept alive (`registration`), the agents'
//! election (`election`) and the fence every leader write carries (`fence`), publish requests
//! in flight (`request`) and the leader's feed of them (`request_feed`), every host's status node
//! read at once (`reports`), chunked content (`blobs`), rollout records (`rollout`), the freeze flags (`freeze`) and a service's
//! live members (`members`), an app host's versions kept from events (`version_events`), and the
//! connect string's chroot (`chroot`).
//!
//! May use: `config`, `metrics`, `model`, the leaves. Never `host` (this machine's files) nor
//! the roles above.

pub(crate) mod blobs;
pub mod chroot;
pub(crate) mod election;
pub(crate) mod fence;
pub mod freeze;
pub(crate) mod guard;
pub mod identity;
pub(crate) mod members;
pub(crate) mod registration;
pub mod request;
pub(crate) mod reports;
pub(crate) mod request_feed;
pub(crate) mod rollout;
pub mod session;
pub(crate) mod tls;
pub(crate) mod version_events;
