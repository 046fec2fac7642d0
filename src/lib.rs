//! zkcoord: publish a configuration once; every host applies it atomically.
//!
//! # Layout
//! - [`acl`]: credentials, digest identities and the ACL each kind of node gets.
//! - [`config`]: the TOML file, environment overrides, and errors that name file and key.
//! - [`layout`]: where every znode lives, and the one "newest version" rule.
//! - [`tls`]: TLS to ZooKeeper (CA, client certificate and key).
//! - [`session`]: the one owner of the ZooKeeper session (connect, reconnect, expiry).
//! - [`registration`]: keeps an ephemeral node alive for as long as the daemon runs.
//! - [`election`]: agents elect `leaders` leaders from their registration nodes.
//! - [`agent`]: the leader's intake of publish requests, fenced writes, pruning.
//! - [`intake`]: the single leader handles requests that arrive together in batches.
//! - [`request`]: the publish request format shared by `zkcoordctl`, the trigger and the agent.
//! - [`trigger`]: the legacy `add|<data>` TCP listener.
//! - [`app`]: watches an application's versions and applies the newest.
//! - [`render`]: an app rendered from a service's live members through a template.
//! - [`service`]: registers this host's services while healthy and not drained.
//! - [`members`]: reads a service's live members (for rendering and `zkcoordctl services`).
//! - [`oneshot`]: `zkcoordd --once` and `--dry-run`: one pass over the apps, then exit.
//! - [`signing`]: ed25519-signed versions, and the keys an app trusts.
//! - [`rollout`]: staged rollouts: canaries, soak, promote, abort (record, app filter, leader supervisor).
//! - [`pacing`]: reload pacing: the `max_parallel_reloads` semaphore and the splay.
//! - [`install`]: atomic write, check, reload, rollback.
//! - [`bundle`]: directory trees: pack, unpack, install by an atomic symlink flip.
//! - [`chunks`]: content beyond one node's limit, stored as chunk nodes.
//! - [`hooks`]: runs check and reload commands with a timeout.
//! - [`state`]: what this host applied, remembered across restarts.
//! - [`status`]: the per-host status report.
//! - [`metrics`]: counters, gauges and histograms for `/metrics`, recorded where events happen.
//! - [`http`]: the optional `/healthz` and `/metrics` listener.
//! - [`systemd`]: sd_notify messages.
//! - [`signals`]: Unix signals turned into messages.
//! - [`daemon`]: wires the above into `zkcoordd`.
//! - [`ctl`]: the `zkcoordctl` commands.
//! - [`cli`]: both binaries' command lines (also the source of the man pages).
//! - [`logging`]: log output (journal or text) and its reloadable level.
//! - [`backoff`]: retry delays with jitter.
//! - [`exit`]: sysexits codes.
#![forbid(unsafe_code)]

pub mod acl;
pub mod agent;
pub mod app;
pub mod backoff;
pub mod bundle;
pub mod chunks;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod election;
pub mod exit;
pub mod guard;
pub mod hooks;
pub mod http;
pub mod install;
pub mod intake;
pub mod layout;
pub mod logging;
pub mod members;
pub mod metrics;
pub mod oneshot;
pub mod pacing;
pub mod registration;
pub mod render;
pub mod request;
pub mod rollout;
pub mod service;
pub mod session;
pub mod signing;
pub mod signals;
pub mod state;
pub mod status;
pub mod systemd;
pub mod tls;
pub mod trigger;
