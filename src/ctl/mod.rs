//! `zkcoordctl`: the operator's commands. Publishing goes through the leading agent (so it is
//! validated, deduplicated and fenced); reading goes straight to ZooKeeper.
//!
//! - [`publish`]: publish, rollback, and waiting for a rollout.
//! - [`inspect`]: get, history, status, diff.
//! - [`watch`]: follow publishes and host reports live.
//! - [`services`]: live service members, and draining a host out of a service.
//! - [`versions`]: version arguments (`12`, `conf-0000000012`, `-1`).
//! - [`rollout`]: staged rollouts: show, promote, abort.
//! - [`freeze`]: the incident switch: freeze and unfreeze an app or every app.

pub(crate) mod freeze;
pub(crate) mod inspect;
pub(crate) mod publish;
pub(crate) mod rollout;
pub(crate) mod services;
pub(crate) mod target;
pub(crate) mod versions;
pub(crate) mod watch;

use crate::config::DEFAULT_CONFIG_PATH;
use crate::exit;
use crate::model::layout::Layout;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use target::{fail, CtlError, Target};

/// Command line of `zkcoordctl`.
#[derive(Debug, Parser)]
#[command(
    name = "zkcoordctl",
    version,
    about = "Publish and inspect configurations distributed by zkcoordd",
    after_help = "Examples:\n  zkcoordctl publish nginxconf ./nginx.conf --message \"more workers\" --wait\n  zkcoordctl status nginxconf\n  zkcoordctl diff nginxconf -1\n  zkcoordctl rollback nginxconf --to 11\n  zkcoordctl --zk zk1:2181,zk2:2181 get nginxconf --version 12\n\nVersions: 12, conf-0000000012, or -1 for the one before the newest.\nExit codes: 0 ok, 1 a host failed to apply, 64 usage (a malformed --zk too), 65 rejected or\nbad input, 69 ZooKeeper unreachable, 70 internal error or an agent too old for the request,\n75 no leader answered or --wait timed out, 77 permission denied (ZooKeeper ACLs, keys),\n78 bad config (a chroot in the connect string that does not exist too)."
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
    /// Publish a file (or - for stdin), or a directory as a bundle, as the newest version of an app.
    #[command(after_help = "Examples:\n  zkcoordctl publish nginxconf nginx.conf -m \"more workers\"\n  zkcoordctl publish nginxconf nginx.conf --wait=2m   # until every live host applied it\n  render-config | zkcoordctl publish nginxconf -")]
    Publish {
        /// The application.
        app: String,
        /// The file, or - for standard input.
        file: String,
        /// Publish even when the content is empty (refused by default: an empty file on every
        /// host is what a failed generator in `render | zkcoordctl publish app -` produces).
        #[arg(long)]
        allow_empty: bool,
        /// Message, answer timeout, rollout wait.
        #[command(flatten)]
        opts: PublishOptions,
    },
    /// Publish an earlier version's bytes as a new version (versions only go forward).
    #[command(allow_negative_numbers = true, after_help = "Examples:\n  zkcoordctl rollback nginxconf --to 11\n  zkcoordctl rollback nginxconf --to -1 --wait")]
    Rollback {
        /// The application.
        app: String,
        /// The version to go back to: 11, conf-0000000011 or -1.
        #[arg(long, allow_hyphen_values = true)]
        to: String,
        /// Message (added to "rollback to …"), answer timeout, rollout wait.
        #[command(flatten)]
        opts: PublishOptions,
    },
    /// Print a version's bytes (the newest unless --version).
    #[command(allow_negative_numbers = true)]
    Get {
        /// The application.
        app: String,
        /// Version: 12, conf-0000000012 or -1.
        #[arg(long, allow_hyphen_values = true)]
        version: Option<String>,
    },
    /// List an app's versions, oldest first, each with how its rollout ended.
    History {
        /// The application.
        app: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Agents (who leads), and per app every live host with its version, result and age.
    Status {
        /// Only this application.
        app: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A unified diff between two versions (default: the one before the newest, and the newest),
    /// or between a version and a local file.
    #[command(allow_negative_numbers = true, after_help = "Examples:\n  zkcoordctl diff nginxconf              # -1 against the newest\n  zkcoordctl diff nginxconf 11 12\n  zkcoordctl diff nginxconf --file ./nginx.conf   # newest against a local file\n\nExit status as diff(1): 0 same, 1 different.")]
    Diff {
        /// The application.
        app: String,
        /// The old side (default -1, or the newest with --file).
        #[arg(allow_hyphen_values = true)]
        a: Option<String>,
        /// The new side (default the newest).
        #[arg(allow_hyphen_values = true)]
        b: Option<String>,
        /// Compare version A against this local file instead.
        #[arg(long, value_name = "PATH", conflicts_with = "b")]
        file: Option<PathBuf>,
    },
    /// Show an app's staged rollout (from publish --canary) and how each canary stands.
    Rollout {
        /// The application.
        app: String,
        /// Machine-readable output (the rollout record).
        #[arg(long)]
        json: bool,
    },
    /// Promote an app's staged rollout now: every host takes the version.
    Promote {
        /// The application.
        app: String,
        /// Why; kept in the rollout record.
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Abort an app's staged rollout: hosts that are not canaries stay on the previous version.
    Abort {
        /// The application.
        app: String,
        /// Why; kept in the rollout record.
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Follow publishes and host reports live until interrupted.
    Watch {
        /// Only this application.
        app: Option<String>,
        /// One JSON object per event, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Live members of a service (or of every service): address, age and data, and who is drained.
    #[command(after_help = "Examples:\n  zkcoordctl services\n  zkcoordctl services web --json\n  zkcoordctl services rpc --path /rpc")]
    Services {
        /// Only this service.
        name: Option<String>,
        /// The members' znode, for a registry outside /services (e.g. /rpc).
        #[arg(long, requires = "name")]
        path: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Take a host's member out of a service without stopping its daemon (until `undrain`).
    #[command(after_help = "Examples:\n  zkcoordctl drain web                # this host (the config's node_id)\n  zkcoordctl drain web --node web-02")]
    Drain {
        /// The service.
        service: String,
        /// The host's node id (default: the config's node_id, else this host's name).
        #[arg(long)]
        node: Option<String>,
    },
    /// Put a drained host's member back into a service.
    Undrain {
        /// The service.
        service: String,
        /// The host's node id (default: the config's node_id, else this host's name).
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop every change to an app (or to every app) until `unfreeze`: publishes are refused
    /// with the reason, hosts keep reporting but apply nothing new.
    #[command(after_help = "Examples:\n  zkcoordctl freeze nginxconf -m \"incident 4711\"\n  zkcoordctl freeze --all -m \"peak hours\"")]
    Freeze {
        /// The app.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        app: Option<String>,
        /// Every app, apps first published during the freeze included.
        #[arg(long)]
        all: bool,
        /// Why: refused publishers, `status` and every host's log show it.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Lift a freeze: publishes are accepted and hosts follow versions again.
    Unfreeze {
        /// The app.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        app: Option<String>,
        /// The freeze of every app (`freeze --all`).
        #[arg(long)]
        all: bool,
    },
    /// ZooKeeper ACLs: print a digest identity, or apply the configured ACLs to an existing tree.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Signing keys for `publish --sign-key` and the apps' `trusted_keys`.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a shell completion script (bash, zsh or fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// What publish and rollback share: the message, how long to wait for the leader, and
/// whether to follow the rollout.
#[derive(Debug, clap::Args)]
pub struct PublishOptions {
    /// Why; stored beside the version.
    #[arg(long, short)]
    pub message: Option<String>,
    /// How long to wait for the leading agent's answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Then wait until every live host of the app reports the version (default 5m); with
    /// --canary, --waves or --precheck, first until the rollout is promoted (exit 1 if it is
    /// aborted).
    #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "5m", require_equals = true, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Sign the version with this ed25519 private key (PKCS#8 PEM, mode 0600); apps with
    /// `trusted_keys` install only versions signed by a key they trust.
    #[arg(long, value_name = "PATH", env = "ZKCOORD_SIGN_KEY")]
    pub sign_key: Option<PathBuf>,
    /// With --sign-key: hosts refuse the signature after this long (e.g. 7d; default: never).
    /// A host that first sees the version later stays on what it runs.
    #[arg(long, value_name = "DURATION", requires = "sign_key", value_parser = humantime::parse_duration)]
    pub sign_valid: Option<Duration>,
    /// Stage the rollout: first only these hosts (web-1,web-2) or N% of the live hosts (10%);
    /// the leading agent promotes it to all once every canary applied it and --soak passed, and
    /// stops it if a canary fails.
    #[arg(long, value_name = "HOSTS|N%")]
    pub canary: Option<String>,
    /// With --canary or --waves: how long the canaries (each wave) must run the version before
    /// the next hosts take it (default 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
    /// With --canary or --waves: after each soak, the leading agent runs this gate (a name in
    /// its [agent] gates, e.g. a query of the canaries' 5xx ratio) and goes on only if it exits
    /// 0; otherwise the rollout is aborted with the gate's output as the reason.
    #[arg(long, value_name = "NAME")]
    pub gate: Option<String>,
    /// Roll out in waves, each soaked (--soak) and promoted when healthy, stopped when a host
    /// fails: host counts and shares of the whole so far (1,10%,50%,100%) or host labels from
    /// the hosts' configs (dc=fra,dc=ams,*). `promote` and `abort` act on the current wave.
    #[arg(long, value_name = "WAVES", conflicts_with = "canary")]
    pub waves: Option<String>,
    /// First every live host runs its check on the version, staged and never installed; only
    /// when all passed does any host take it (then --canary, if given). With --wait, a failure
    /// names each failing host and why (exit 1).
    #[arg(long)]
    pub precheck: bool,
    /// Machine-readable output: one JSON object at the end (outcome and version; with --wait
    /// also the rollout's result and every host's).
    #[arg(long)]
    pub json: bool,
}

/// `zkcoordctl acl ...`.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Print the digest identity (`user:base64sha1`) for `user:password`, for the [acl] lists.
    Digest {
        /// `user:password`.
        user_password: String,
    },
    /// Set the ACLs of the [acl] section on the nodes that exist (run as an identity with ADMIN
    /// on them, e.g. the one that created them).
    Init,
}

/// `zkcoordctl key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make an ed25519 key pair: the private key into PATH (mode 0600, never overwritten), the
    /// public key into PATH.pub and on stdout, for the apps' `trusted_keys`.
    #[command(after_help = "Example:\n  zkcoordctl key generate /etc/zkcoord/publisher.key\n  # copy /etc/zkcoord/publisher.key.pub to every app host, then in each [[app]]:\n  #   trusted_keys = [\"/etc/zkcoord/publisher.key.pub\"]\n  zkcoordctl publish nginxconf nginx.conf --sign-key /etc/zkcoord/publisher.key")]
    Generate {
        /// Where to write the private key.
        path: PathBuf,
    },
}

fn resolve(cli: &Cli) -> Result<Target, CtlError> {
    let path = cli.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        (cli.zk.is_none() && default.exists()).then_some(default)
    });
    let config = match &path {
        Some(p) => Some(crate::zk::identity::load_config(p).map_err(|e| fail(exit::CONFIG, e.to_string()))?),
        None => None,
    };
    let hosts = cli.zk.clone().or_else(|| config.as_ref().map(|c| c.zookeeper.hosts.clone())).ok_or_else(|| {
        fail(exit::USAGE, format!("no ZooKeeper to talk to: pass --zk HOSTS or --config PATH ({DEFAULT_CONFIG_PATH} does not exist)"))
    })?;
    if let Some(c) = &config {
        crate::zk::identity::install_from(c);
    }
    // A typo in --zk is a usage error now, not "unreachable" after the connect patience.
    if let Some(zk) = &cli.zk {
        crate::config::ConnectString::parse(zk).map_err(|e| fail(exit::USAGE, format!("--zk {zk:?}: {e}")))?;
    }
    let layout = config.as_ref().map(|c| c.layout()).unwrap_or_else(|| Layout::new("/zkcoord", "/applications", "/roles/workers"));
    let session_timeout = config.as_ref().map(|c| c.zookeeper.session_timeout).unwrap_or(Duration::from_secs(10));
    Ok(Target { hosts, session_timeout, layout, config })
}

/// Runs a parsed command line, writing results to stdout.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "zkcoordctl", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Acl(AclCommand::Digest { user_password }) = &cli.command {
        if !user_password.contains(':') {
            return Err(fail(exit::USAGE, "expected user:password"));
        }
        println!("{}", crate::zk::identity::digest_id(user_password));
        return Ok(());
    }
    if let Command::Key(KeyCommand::Generate { path }) = &cli.command {
        return publish::generate_key(path);
    }
    let target = resolve(&cli)?;
    match cli.command {
        Command::Acl(AclCommand::Init) => inspect::acl_init(&target).await,
        Command::Acl(AclCommand::Digest { .. }) | Command::Key(_) => unreachable!("handled above"),
        Command::Publish { app, file, allow_empty, opts } => {
            let (data, content) = publish::read_input(&file, target.max_config_size())?;
            if data.is_empty() && !allow_empty {
                return Err(fail(exit::DATAERR, publish::empty_refusal(&file)));
            }
            publish::publish(&target, &app, data, content, opts, None).await
        }
        Command::Rollback { app, to, opts } => publish::rollback(&target, &app, &to, opts).await,
        Command::Get { app, version } => inspect::get(&target, &app, version.as_deref()).await,
        Command::History { app, json } => inspect::history(&target, &app, json).await,
        Command::Status { app, json } => inspect::status(&target, app.as_deref(), json).await,
        Command::Diff { app, a, b, file } => inspect::diff(&target, &app, a.as_deref(), b.as_deref(), file.as_deref()).await,
        Command::Watch { app, json } => watch::watch(&target, app.as_deref(), json).await,
        Command::Rollout { app, json } => rollout::show(&target, &app, json).await,
        Command::Promote { app, message } => rollout::decide(&target, &app, rollout::Verdict::Promote, message.as_deref()).await,
        Command::Abort { app, message } => rollout::decide(&target, &app, rollout::Verdict::Abort, message.as_deref()).await,
        Command::Services { name, path, json } => services::services(&target, name.as_deref(), path.as_deref(), json).await,
        Command::Drain { service, node } => services::drain(&target, &service, node.as_deref(), true).await,
        Command::Undrain { service, node } => services::drain(&target, &service, node.as_deref(), false).await,
        Command::Freeze { app, all, message } => freeze::freeze(&target, app.as_deref(), all, true, message.as_deref()).await,
        Command::Unfreeze { app, all } => freeze::freeze(&target, app.as_deref(), all, false, None).await,
        Command::Completions { .. } => unreachable!("handled above"),
    }
}
