//! `zkcoordctl`: the operator's commands. Publishing goes through the leading agent (so it is
//! validated, deduplicated and fenced); reading goes straight to ZooKeeper.

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::exit;
use crate::layout::{self, Layout, VersionId};
use crate::request::{self, AwaitError, Outcome, VersionMeta};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;
use zookeeper_client as zk;

/// Command line of `zkcoordctl`.
#[derive(Debug, Parser)]
#[command(
    name = "zkcoordctl",
    version,
    about = "Publish and inspect configurations distributed by zkcoordd",
    after_help = "Examples:\n  zkcoordctl publish nginxconf ./nginx.conf --message \"more workers\"\n  zkcoordctl --zk zk1:2181,zk2:2181 get nginxconf --version 12\n  zkcoordctl history nginxconf\n\nExit codes: 0 ok, 64 usage, 65 rejected or bad input, 69 ZooKeeper unreachable,\n75 no leader answered (try again), 78 bad config."
)]
pub struct Cli {
    /// Config file to read the ZooKeeper connect string and roots from.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// ZooKeeper connect string (host:port,...[/chroot]); overrides the config file's.
    #[arg(long, global = true, value_name = "HOSTS", env = "ZKCOORD_ZK_HOSTS")]
    pub zk: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a file (or - for stdin) as the newest version of an app.
    Publish {
        /// The application.
        app: String,
        /// The file, or - for standard input.
        file: String,
        /// Why; stored beside the version.
        #[arg(long, short)]
        message: Option<String>,
        /// How long to wait for the leading agent's answer.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print a version's bytes (the newest unless --version).
    Get {
        /// The application.
        app: String,
        /// Version: 12 or conf-0000000012.
        #[arg(long)]
        version: Option<String>,
    },
    /// List an app's versions, oldest first.
    History {
        /// The application.
        app: String,
    },
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct CtlError {
    /// sysexits code.
    pub code: i32,
    /// One line for stderr.
    pub message: String,
}

fn fail(code: i32, message: impl Into<String>) -> CtlError {
    CtlError { code, message: message.into() }
}

fn zk_fail(e: zk::Error) -> CtlError {
    fail(exit::UNAVAILABLE, format!("ZooKeeper: {e}"))
}

/// Connection settings resolved from flags and the config file.
struct Target {
    /// Connect string.
    hosts: String,
    /// Session timeout.
    session_timeout: Duration,
    /// Layout.
    layout: Layout,
    /// The config, when one was read (for per-app version paths).
    config: Option<Config>,
}

fn resolve(cli: &Cli) -> Result<Target, CtlError> {
    let path = cli.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        (cli.zk.is_none() && default.exists()).then_some(default)
    });
    let config = match &path {
        Some(p) => Some(Config::load(p).map_err(|e| fail(exit::CONFIG, e.to_string()))?),
        None => None,
    };
    let hosts = cli
        .zk
        .clone()
        .or_else(|| config.as_ref().map(|c| c.zookeeper.hosts.clone()))
        .ok_or_else(|| fail(exit::USAGE, format!("no ZooKeeper to talk to: pass --zk HOSTS or --config PATH ({DEFAULT_CONFIG_PATH} does not exist)")))?;
    let layout = config.as_ref().map(|c| c.layout()).unwrap_or_else(|| Layout::new("/zkcoord", "/applications", "/roles/workers"));
    let session_timeout = config.as_ref().map(|c| c.zookeeper.session_timeout).unwrap_or(Duration::from_secs(10));
    Ok(Target { hosts, session_timeout, layout, config })
}

impl Target {
    fn versions(&self, app: &str) -> String {
        match &self.config {
            Some(c) => crate::agent::versions_path(c, app),
            None => self.layout.versions(app),
        }
    }

    /// Connects, retrying for a while: an ensemble electing a new quorum leader refuses
    /// clients for a moment, and a publish should ride that out rather than fail.
    async fn connect(&self) -> Result<zk::Client, CtlError> {
        let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let attempt = tokio::time::timeout_at(deadline, crate::session::connect_once(&self.hosts, self.session_timeout)).await;
            let why = match attempt {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            let delay = backoff.next_delay();
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(fail(
                    exit::UNAVAILABLE,
                    format!("cannot reach ZooKeeper at {} within {CONNECT_PATIENCE:?}: {why}", self.hosts),
                ));
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// How long `zkcoordctl` keeps trying to reach ZooKeeper.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// Runs a parsed command line, writing results to stdout.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    let target = resolve(&cli)?;
    match cli.command {
        Command::Publish { app, file, message, timeout } => publish(&target, &app, &file, message, timeout).await,
        Command::Get { app, version } => get(&target, &app, version.as_deref()).await,
        Command::History { app } => history(&target, &app).await,
    }
}

fn read_input(file: &str) -> Result<Vec<u8>, CtlError> {
    // Read at most one byte past the limit, so a huge file is refused without reading it all.
    let limit = request::MAX_CONFIG_BYTES as u64 + 1;
    let mut data = Vec::new();
    let res = if file == "-" {
        std::io::stdin().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut data))
    };
    res.map_err(|e| fail(exit::DATAERR, format!("cannot read {file}: {e}")))?;
    Ok(data)
}

async fn publish(t: &Target, app: &str, file: &str, message: Option<String>, timeout: Duration) -> Result<(), CtlError> {
    let data = read_input(file)?;
    let author = format!(
        "{}@{}",
        std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| {
            let uid = nix::unistd::Uid::current();
            nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
        }),
        hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    );
    // Everything checkable is checked before anything reaches ZooKeeper.
    let header = request::header_for(app, &author, message, "zkcoordctl", &data)
        .map_err(|e| fail(exit::DATAERR, format!("not published: {e}")))?;
    let client = t.connect().await?;
    let req = request::submit(&client, &t.layout, &header, &data).await.map_err(zk_fail)?;
    match request::await_outcome(&client, &t.layout, &req, timeout).await {
        Ok(outcome) => {
            println!("{outcome}");
            match outcome {
                Outcome::Rejected { .. } => Err(fail(exit::DATAERR, String::new())),
                _ => Ok(()),
            }
        }
        Err(e @ AwaitError::NoLeader(_)) => Err(fail(exit::TEMPFAIL, e.to_string())),
        Err(AwaitError::Zk(e)) => Err(zk_fail(e)),
        Err(e) => Err(fail(exit::SOFTWARE, e.to_string())),
    }
}

/// Accepts `12` or `conf-0000000012`.
pub fn parse_version(s: &str) -> Option<VersionId> {
    VersionId::parse(s).or_else(|| s.parse::<u64>().ok().map(VersionId::from_seq))
}

async fn get(t: &Target, app: &str, version: Option<&str>) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let parent = t.versions(app);
    let v = match version {
        Some(s) => parse_version(s).ok_or_else(|| fail(exit::USAGE, format!("not a version: {s:?} (expected 12 or conf-0000000012)")))?,
        None => {
            let children = list_versions(&client, &parent, app).await?;
            layout::newest_version(&children).ok_or_else(|| fail(exit::DATAERR, format!("{app} has no versions yet")))?
        }
    };
    let (bytes, _) = match client.get_data(&format!("{parent}/{}", v.name)).await {
        Ok(r) => r,
        Err(zk::Error::NoNode) => return Err(fail(exit::DATAERR, format!("{app} has no version {}", v.name))),
        Err(e) => return Err(zk_fail(e)),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes).and_then(|_| out.flush()).map_err(|e| fail(exit::IOERR, e.to_string()))
}

async fn list_versions(client: &zk::Client, parent: &str, app: &str) -> Result<Vec<String>, CtlError> {
    match client.list_children(parent).await {
        Ok(c) => Ok(c),
        Err(zk::Error::NoNode) => Err(fail(exit::DATAERR, format!("no application {app:?} (no node {parent})"))),
        Err(e) => Err(zk_fail(e)),
    }
}

async fn history(t: &Target, app: &str) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let parent = t.versions(app);
    let versions = layout::versions(&list_versions(&client, &parent, app).await?);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<16} {:<20} {:>9} {:<12} {:<24} MESSAGE", "VERSION", "TIME (UTC)", "SIZE", "SHA256", "AUTHOR");
    for v in versions {
        let (size, ctime) = match client.check_stat(&format!("{parent}/{}", v.name)).await.map_err(zk_fail)? {
            Some(stat) => (stat.data_length as usize, stat.ctime / 1000),
            None => continue,
        };
        let meta: Option<VersionMeta> = match client.get_data(&format!("{}/{}", t.layout.meta(app), v.name)).await {
            Ok((b, _)) => serde_json::from_slice(&b).ok(),
            Err(_) => None,
        };
        let (sha, author, message) = match &meta {
            Some(m) => (m.sha256[..12.min(m.sha256.len())].to_string(), m.author.clone(), m.message.clone().unwrap_or_default()),
            None => ("-".into(), "-".into(), String::new()),
        };
        let time = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(ctime.max(0) as u64)).to_string();
        let _ = writeln!(out, "{:<16} {:<20} {:>9} {:<12} {:<24} {}", v.name, time.trim_end_matches('Z'), size, sha, author, message);
    }
    Ok(())
}
