//! Secret files (ZooKeeper credentials, signing keys, the trigger token, TLS keys): each must be
//! readable by its owner alone, and is refused by name otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Refuses a secret file (credentials, keys, tokens) that group or others can read.
pub fn refuse_if_shared(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("{} is readable by others (mode {mode:04o}); run `chmod 600 {}`", path.display(), path.display()));
    }
    Ok(())
}

/// Reads a one-line secret (such as the trigger token) with the same mode check.
pub fn load_line(path: &Path) -> Result<String, String> {
    refuse_if_shared(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() || secret.contains('|') || secret.contains('\n') {
        return Err(format!("{} must hold one line without '|'", path.display()));
    }
    Ok(secret)
}

/// Reads a `user:password` file (ZooKeeper digest or SASL credentials): the first line that is
/// not empty or a `#` comment.
pub fn load_user_password(path: &Path) -> Result<String, String> {
    refuse_if_shared(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text.lines().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).unwrap_or("").trim();
    match line.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(line.to_string()),
        _ => Err(format!("{} must hold one line `user:password`", path.display())),
    }
}
