#![allow(dead_code, unused_imports)]
//! Integration-test harness for zkcoord.
//!
//! Every test that needs ZooKeeper starts a real one here (Debian's `zookeeper` package,
//! installed by `scripts/install-deps.sh`); nothing is mocked. Each test gets its own ports,
//! data directories and daemon directories, so tests run in parallel.
//!
//! Use from `tests/<name>.rs` with `mod common;` and `use common::*;`.
//!
//! Async tests should use `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`: the
//! process helpers here (`ZkEnsemble::*`, `Daemon::*`, `ctl`) block the calling thread, and a
//! current-thread runtime would stall the test's own ZooKeeper client meanwhile.
//!
//! Everything this harness spawns (ZooKeeper servers, daemons) is SIGKILLed when its owner is
//! dropped, and also by the kernel if the test process dies (PR_SET_PDEATHSIG), so nothing
//! outlives a killed test run.
//!
//! Set `ZKCOORD_TEST_KEEP=1` to keep the temporary directories (logs, data) of a run; their
//! paths are printed when they are kept.
//!
//! Its rooms: `util` (temp dirs, random bytes), `process` (children that die with the test),
//! `ports`, `four_letter` (`srvr`, `mntr`), `zk_server` (single servers and ensembles, kill and
//! restart), `zk_client` (a plain client for checks and for playing an operator), `wait`,
//! `daemon` (the real `zkcoordd`, its config and log), `ctl` (the real `zkcoordctl`), `proxy`
//! (a TCP proxy for partitions and dropped connections), `nginx` (a real nginx, what it answers).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

mod util;
mod process;
mod ports;
mod four_letter;
mod zk_server;
mod zk_client;
mod wait;
mod daemon;
mod ctl;
mod proxy;
mod nginx;

pub use util::*;
pub use process::*;
pub use ports::*;
pub use four_letter::*;
pub use zk_server::*;
pub use zk_client::*;
pub use wait::*;
pub use daemon::*;
pub use ctl::*;
pub use proxy::*;
pub use nginx::*;
