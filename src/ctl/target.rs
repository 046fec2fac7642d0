//! What every `zkcoordctl` command shares: the ensemble and layout it talks to (`Target`), who
//! is asking (`author`), and the error that carries its exit code (`CtlError`).

use crate::config::Config;
use crate::exit;
use super::versions::VersionArg;
use crate::model::layout::{self, Layout, VersionId};
use std::time::Duration;
use zookeeper_client as zk;

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct CtlError {
    /// sysexits code (or 1 for a failed rollout, as diff(1) and friends do).
    pub code: i32,
    /// One line for stderr (empty when everything was already printed).
    pub message: String,
}

pub(crate) fn fail(code: i32, message: impl Into<String>) -> CtlError {
    CtlError { code, message: message.into() }
}

pub(crate) fn zk_fail(e: zk::Error) -> CtlError {
    if matches!(e, zk::Error::NoAuth) {
        return fail(exit::NOPERM, crate::zk::identity::explain_noauth("a zkcoord node", "change", crate::zk::identity::credentials()));
    }
    fail(exit::UNAVAILABLE, format!("ZooKeeper: {e}"))
}

/// Connection settings resolved from flags and the config file.
pub struct Target {
    /// Connect string.
    pub hosts: String,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Layout.
    pub layout: Layout,
    /// The config, when one was read (for per-app version paths and the leader count).
    pub config: Option<Config>,
}

/// How long `zkcoordctl` keeps trying to reach ZooKeeper.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

impl Target {
    /// Where `app`'s versions live.
    pub fn versions_path(&self, app: &str) -> String {
        match &self.config {
            Some(c) => c.layout().versions(app),
            None => self.layout.versions(app),
        }
    }

    /// How many agents lead (from the config; 1 without one).
    pub fn leaders(&self) -> usize {
        self.config.as_ref().map(|c| c.agent.leaders as usize).unwrap_or(1)
    }

    /// Connects, retrying for a while: an ensemble electing a new quorum leader refuses
    /// clients for a moment, and a command should ride that out rather than fail.
    ///
    /// The connect string is checked first (a typo is a usage error, 64, at once), and a
    /// chroot that does not exist is a configuration error (78) that names it.
    pub async fn connect(&self) -> Result<zk::Client, CtlError> {
        self.connect_inside(false).await
    }

    /// [`Target::connect`], creating the chroot when it is missing and we may
    /// (`zkcoordctl acl init`, which sets up the tree).
    pub async fn connect_creating_chroot(&self) -> Result<zk::Client, CtlError> {
        self.connect_inside(true).await
    }

    async fn connect_inside(&self, create_chroot: bool) -> Result<zk::Client, CtlError> {
        let hosts = crate::config::ConnectString::parse(&self.hosts).map_err(|e| fail(exit::USAGE, format!("bad ZooKeeper connect string: {e}")))?;
        let client = crate::zk::session::connect_within(&self.hosts, self.session_timeout, CONNECT_PATIENCE)
            .await
            .map_err(|why| match why {
                crate::zk::session::ConnectFailure::Refused(m) => fail(exit::NOPERM, m),
                crate::zk::session::ConnectFailure::Unreachable(m) => fail(exit::UNAVAILABLE, m),
            })?;
        match crate::zk::session::ensure_chroot(&client, &hosts, self.session_timeout, create_chroot).await {
            Ok(()) => Ok(client),
            Err(crate::zk::chroot::ChrootError::Zk(e)) => Err(zk_fail(e)),
            Err(e) => Err(fail(exit::CONFIG, e.to_string())),
        }
    }

    /// `app`'s versions, oldest first; an app without a node is an error that says so.
    pub async fn versions(&self, client: &zk::Client, app: &str) -> Result<Vec<VersionId>, CtlError> {
        let parent = self.versions_path(app);
        match client.list_children(&parent).await {
            Ok(c) => Ok(layout::versions(&c)),
            Err(zk::Error::NoNode) => Err(fail(exit::DATAERR, format!("no application {app:?} (no node {parent})"))),
            Err(e) => Err(zk_fail(e)),
        }
    }

    /// Resolves a version argument (None = the newest) to a version that exists.
    pub async fn resolve_version(&self, client: &zk::Client, app: &str, arg: Option<&str>) -> Result<VersionId, CtlError> {
        let all = self.versions(client, app).await?;
        let arg = match arg {
            Some(s) => VersionArg::parse(s).map_err(|e| fail(e.exit_code(), e.to_string()))?,
            None => VersionArg::BeforeNewest(0),
        };
        arg.resolve(&all, app).map_err(|e| fail(e.exit_code(), e.to_string()))
    }

    /// The largest config this publisher sends (`max_config_size`, default 64 MiB).
    pub fn max_config_size(&self) -> u64 {
        self.config.as_ref().map(|c| c.max_config_size).unwrap_or(crate::config::DEFAULT_MAX_CONFIG_SIZE)
    }

    /// A version's bytes (read from its chunks when its metadata says it is chunked).
    pub async fn bytes_of(&self, client: &zk::Client, app: &str, v: &VersionId) -> Result<Vec<u8>, CtlError> {
        let data = match client.get_data(&format!("{}/{}", self.versions_path(app), v.name)).await {
            Ok((b, _)) => b,
            Err(zk::Error::NoNode) => return Err(fail(exit::DATAERR, format!("{app} has no version {}", v.name))),
            Err(e) => return Err(zk_fail(e)),
        };
        // Chunked only when the agent's metadata says so: a plain client's marker-shaped bytes
        // are what they are.
        let meta: Option<crate::model::request::VersionMeta> = match client.get_data(&format!("{}/{}", self.layout.meta(app), v.name)).await {
            Ok((m, _)) => serde_json::from_slice(&m).ok(),
            Err(zk::Error::NoNode) => None,
            Err(e) => return Err(zk_fail(e)),
        };
        match crate::zk::blobs::resolve(client, &self.layout, app, data, meta.as_ref().map(|m| &m.content), self.max_config_size()).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(why)) => Err(fail(exit::DATAERR, format!("{app} {}: {why}", v.name))),
            Err(e) => Err(zk_fail(e)),
        }
    }
}

pub(crate) fn author() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| {
        let uid = nix::unistd::Uid::current();
        nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
    });
    let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{user}@{host}")
}
