//! The `[zookeeper]` section: where the ensemble is, how we authenticate (`auth_file`,
//! `auth_scheme`), TLS, and our roots.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;


/// The `[zookeeper]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZkConfig {
    /// Connect string, `host:port,...` with an optional chroot suffix.
    pub hosts: String,
    /// Session timeout asked of the server (it may negotiate it within its bounds).
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How long the daemon waits for its first sync before telling systemd it is ready anyway.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// Root of our own state: publish requests, outcomes, metadata, status.
    #[serde(default = "default_root")]
    pub root: String,
    /// Parent of each application's `conf-` versions.
    #[serde(default = "default_applications")]
    pub applications: String,
    /// File holding this host's credentials (`user:password`, mode 0600).
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// How the credentials are presented: "digest" (addauth) or "sasl" (SASL DIGEST-MD5).
    #[serde(default)]
    pub auth_scheme: AuthScheme,
    /// TLS to ZooKeeper; absent means plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_root() -> String {
    "/zkcoord".into()
}

fn default_applications() -> String {
    "/applications".into()
}

/// How sessions authenticate with the `auth_file`'s `user:password`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// ZooKeeper's built-in digest scheme (identity `digest:user:hash`).
    #[default]
    Digest,
    /// SASL DIGEST-MD5 against the server's JAAS `Server` section (identity `sasl:user`), for
    /// ensembles that enforce SASL.
    Sasl,
}

impl AuthScheme {
    /// The ZooKeeper scheme name identities of this kind carry.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthScheme::Digest => "digest",
            AuthScheme::Sasl => "sasl",
        }
    }
}

/// The `[zookeeper.tls]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) the servers' certificates must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate, for servers that require one (`ssl.clientAuth=need`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (mode 0600: it is this host's identity).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(30)
}
