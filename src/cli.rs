//! The command lines of both binaries, kept in the library so man pages are generated from the
//! same definitions the binaries parse (`cargo run --example gen-manpages`).

use crate::config::DEFAULT_CONFIG_PATH;
use clap::Parser;
use std::path::PathBuf;

pub use crate::ctl::Cli as CtlArgs;

/// ZooKeeper-based configuration distribution daemon.
///
/// Runs as an agent (elects a leader, turns publish requests into versions), an app host
/// (applies the newest version of each configured app to a file: check, atomic write, reload,
/// rollback), or both, as /etc/zkcoord.toml says. SIGHUP re-reads the config; SIGTERM stops
/// cleanly. With --once it applies the newest version of every app and exits; with --dry-run it
/// prints what that would do and changes nothing. Exit codes follow sysexits: 64 usage,
/// 69 ZooKeeper unreachable, 70 internal error, 78 configuration; --once exits 1 when an
/// apply failed.
#[derive(Debug, Parser)]
#[command(name = "zkcoordd", version, about, long_about)]
pub struct DaemonArgs {
    /// Configuration file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Validate the configuration and exit (0 if valid, 78 if not).
    #[arg(long)]
    pub check_config: bool,
    /// Apply the newest version of every app once, through the daemon's own pipeline and state
    /// file, then exit: 0 when all are up to date or applied, 1 when an apply failed (one line
    /// per app on stderr), 69 when ZooKeeper cannot be reached within 10 s. Its log is off
    /// unless ZKCOORD_LOG (e.g. ZKCOORD_LOG=info) asks for it. No election, no status node.
    #[arg(long, conflicts_with_all = ["check_config", "dry_run"])]
    pub once: bool,
    /// Print what --once would do for every app (version, unified diff of the file, commands)
    /// and exit 0 without writing any file, state or znode.
    #[arg(long, conflicts_with = "check_config")]
    pub dry_run: bool,
}
