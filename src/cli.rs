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
/// cleanly. Exit codes follow sysexits: 64 usage, 78 configuration.
#[derive(Debug, Parser)]
#[command(name = "zkcoordd", version, about, long_about)]
pub struct DaemonArgs {
    /// Configuration file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Validate the configuration and exit (0 if valid, 78 if not).
    #[arg(long)]
    pub check_config: bool,
}
