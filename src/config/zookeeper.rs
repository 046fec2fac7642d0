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

/// A connect string taken apart: the servers and the chroot, checked before anything connects
/// (a typo must be a usage or config error, never "cannot reach ZooKeeper" after a wait).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectString {
    /// `host:port,host:port`, as the client is given it without a chroot.
    pub servers: String,
    /// The chroot suffix (`/zkc`), if any.
    pub chroot: Option<String>,
}

/// Why a connect string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadConnectString {
    /// Nothing at all.
    #[error("expected host:port[,host:port...][/chroot], got an empty string")]
    Empty,
    /// A server without `:port`, with an empty host, or with a port that is not 1-65535.
    #[error("expected host:port[,host:port...][/chroot], got {0:?} (each server needs a host and a port of 1-65535)")]
    BadServer(String),
    /// A chroot that is not an absolute path of non-empty segments without a trailing `/`.
    #[error("the chroot {0:?} is not a ZooKeeper path (like /zkcoord: no empty segments, no trailing /)")]
    BadChroot(String),
}

impl ConnectString {
    /// Parses `host:port[,host:port...][/chroot]`.
    pub fn parse(hosts: &str) -> Result<ConnectString, BadConnectString> {
        let hosts = hosts.trim();
        if hosts.is_empty() {
            return Err(BadConnectString::Empty);
        }
        let (servers, chroot) = match hosts.find('/') {
            Some(i) => (&hosts[..i], Some(&hosts[i..])),
            None => (hosts, None),
        };
        for server in servers.split(',') {
            let ok = server.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(BadConnectString::BadServer(server.to_string()));
            }
        }
        let chroot = match chroot {
            // A bare "/" is no chroot at all.
            Some("/") | None => None,
            Some(c) if c.ends_with('/') || c.contains("//") => return Err(BadConnectString::BadChroot(c.to_string())),
            Some(c) => Some(c.to_string()),
        };
        Ok(ConnectString { servers: servers.to_string(), chroot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_strings_are_checked_before_anything_connects() {
        let c = ConnectString::parse("a:1,b:2/zkc").unwrap();
        assert_eq!((c.servers.as_str(), c.chroot.as_deref()), ("a:1,b:2", Some("/zkc")));
        assert_eq!(ConnectString::parse("127.0.0.1:2181").unwrap().chroot, None);
        assert_eq!(ConnectString::parse("h:1/").unwrap().chroot, None);
        assert_eq!(ConnectString::parse(""), Err(BadConnectString::Empty));
        for bad in ["foo", "127.0.0.1:99999", "h:0", ":2181", "h:1,", "h:x"] {
            assert!(matches!(ConnectString::parse(bad), Err(BadConnectString::BadServer(_))), "{bad}");
        }
        assert!(matches!(ConnectString::parse("h:1/zkc/"), Err(BadConnectString::BadChroot(_))));
    }
}
