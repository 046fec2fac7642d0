//! Secret files (ZooKeeper credentials, signing keys, the trigger token, TLS keys): each must be
//! readable by its owner alone, and is refused by name otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a secret file cannot be used; each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file is missing or unreadable.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read it: the secret is no longer the owner's alone.
    #[error("{} is readable by others (mode {mode:04o}); run `chmod 600 {}`", path.display(), path.display())]
    Shared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It does not hold what it should.
    #[error("{} must hold {expected}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
}

impl From<SecretError> for String {
    fn from(e: SecretError) -> String {
        e.to_string()
    }
}

/// Refuses a secret file (credentials, keys, tokens) that group or others can read.
pub fn refuse_if_shared(path: &Path) -> Result<(), SecretError> {
    let meta = std::fs::metadata(path).map_err(|source| SecretError::Unreadable { path: path.into(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Shared { path: path.into(), mode });
    }
    Ok(())
}

/// Reads `path` after the mode check.
fn read(path: &Path) -> Result<String, SecretError> {
    refuse_if_shared(path)?;
    std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable { path: path.into(), source })
}

/// Reads a one-line secret (such as the trigger token) with the same mode check.
pub fn load_line(path: &Path) -> Result<String, SecretError> {
    let secret = read(path)?.trim().to_string();
    if secret.is_empty() || secret.contains('|') || secret.contains('\n') {
        return Err(SecretError::Malformed { path: path.into(), expected: "one line without '|'" });
    }
    Ok(secret)
}

/// Reads a `user:password` file (ZooKeeper digest or SASL credentials): the first line that is
/// not empty or a `#` comment.
pub fn load_user_password(path: &Path) -> Result<String, SecretError> {
    let text = read(path)?;
    let line = text.lines().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).unwrap_or("").trim();
    match line.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(line.to_string()),
        _ => Err(SecretError::Malformed { path: path.into(), expected: "one line `user:password`" }),
    }
}
