//! zkcoord: publish a configuration once; every host applies it atomically.
//!
//! # Layout
//! The code stands in layers; each may use only the layers below it (`tests/layering.rs`
//! fails on an import that runs the other way).
//!
//! - Leaves, which use nothing of the crate:
//!   [`clock`] (wall and monotonic time), [`digest`] (sha256), [`secret`] (files others must not
//!   read), [`backoff`] (retry delays with jitter), [`exit`] (sysexits codes), [`ready`] (the
//!   first-sync gate systemd's READY=1 waits on).
//! - [`model`]: what lives in znodes, as data and rules: paths and the "newest version" rule,
//!   requests, outcomes and metadata, content storage, rollout records (prechecks, waves, what
//!   each settled version did), signatures, status.
//! - [`config`]: the TOML file, environment overrides, and errors that name file and key.
//! - [`metrics`]: counters, gauges and histograms for `/metrics`, recorded where events happen.
//! - [`zk`]: everything that talks to ZooKeeper: session, identity and ACLs, registration,
//!   election and fence, requests in flight, chunked content, rollout records, members.
//! - [`host`]: this machine's files and processes: hooks, atomic install with check, reload and
//!   rollback, bundles, the applied-state file.
//! - Roles, which never use each other: [`agent`] (the leader's intake, fenced publish, prune,
//!   rollout supervision and records, legacy trigger), [`app`] (follow, apply, pace, render, once/dry-run),
//!   [`service`] (register this host's services while healthy and not drained).
//! - [`daemon`] (wires the roles into `zkcoordd`: signals, systemd, logging, HTTP), [`ctl`] (the
//!   `zkcoordctl` commands) and [`cli`] (both binaries' command lines, also the man pages' source).
//! - `src/bin/`: argument parsing and a call.
#![forbid(unsafe_code)]

// Leaves.
pub(crate) mod backoff;
pub mod clock;
pub mod digest;
pub mod exit;
pub mod ready;
pub(crate) mod secret;

// Data and rules, configuration, measurements.
pub mod config;
pub mod metrics;
pub mod model;

// What talks to ZooKeeper; what touches this host.
pub mod host;
pub mod zk;

// Roles.
pub mod agent;
pub mod app;
pub(crate) mod service;

// Entry points.
pub mod cli;
pub mod ctl;
pub mod daemon;
