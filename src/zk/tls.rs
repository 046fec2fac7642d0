//! TLS to ZooKeeper. Without it, versions, digest credentials and every status report cross the
//! network in clear; with it, the server is verified against the configured CA and, with a
//! client certificate, the server can verify us (and name us `x509:<subject>` in ACLs).
//!
//! The files are read once at start-up, like the credentials: a session that reconnects uses
//! the same identity it started with.
//!
//! With TLS configured every server in the connect string is reached over TLS, unless it is
//! written `tcp://host:port`.

use crate::config::TlsConfig;
use std::path::Path;
use zookeeper_client as zk;

/// Why the `[zookeeper.tls]` files cannot make a TLS identity; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no certificate the client can use.
    #[error("{} holds no usable CA certificate: {why}", path.display())]
    BadCa {
        /// The file.
        path: std::path::PathBuf,
        /// What the TLS library said.
        why: String,
    },
    /// The certificate and key do not make an identity.
    #[error("{} and {} are not a usable certificate and key: {why}", cert.display(), key.display())]
    BadIdentity {
        /// The certificate file.
        cert: std::path::PathBuf,
        /// The key file.
        key: std::path::PathBuf,
        /// What the TLS library said.
        why: String,
    },
    /// Only one of `cert_file` and `key_file` is set.
    #[error("expected both cert_file and key_file, or neither")]
    HalfIdentity,
    /// The key file is readable by others.
    #[error(transparent)]
    SharedKey(#[from] crate::secret::SecretError),
}

/// Reads the files and builds the client's TLS options; the error names the file at fault.
pub fn build(config: &TlsConfig) -> Result<zk::TlsOptions, TlsError> {
    let ca = read(&config.ca_file)?;
    let mut options = zk::TlsOptions::new()
        .with_pem_ca(&ca)
        .map_err(|e| TlsError::BadCa { path: config.ca_file.clone(), why: e.to_string() })?;
    match (&config.cert_file, &config.key_file) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            crate::secret::refuse_if_shared(key)?;
            let (cert_pem, key_pem) = (read(cert)?, read(key)?);
            options = options
                .with_pem_identity(&cert_pem, &key_pem)
                .map_err(|e| TlsError::BadIdentity { cert: cert.clone(), key: key.clone(), why: e.to_string() })?;
        }
        _ => return Err(TlsError::HalfIdentity),
    }
    // Hostname verification stays on: a server's certificate must name the host or IP in
    // the connect string, or anyone holding a certificate from the CA could pose as ZooKeeper.
    Ok(options)
}

/// A file's text, or which file could not be read.
fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Unreadable { path: path.to_path_buf(), source })
}

/// This process's TLS options, set once at start-up from the config.
static TLS: std::sync::OnceLock<Option<zk::TlsOptions>> = std::sync::OnceLock::new();

/// Sets the TLS options every session uses (the first call wins, as with credentials).
pub fn install(options: Option<zk::TlsOptions>) {
    let _ = TLS.set(options);
}

/// The TLS options sessions connect with; None means plain TCP.
pub fn options() -> Option<&'static zk::TlsOptions> {
    TLS.get().and_then(|o| o.as_ref())
}
