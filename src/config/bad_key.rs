//! The error a table's conversion gives about one of its keys (`[[app]]`, `[reload_group.*]`),
//! in the form [`crate::config::Config::from_toml`] turns into the key's full name.

/// What a conversion error of one table says when it is about one of its keys: `@key: why`,
/// which [`crate::config::Config::from_toml`] turns into `key `app[0].key`: why`.
pub(super) const SUBKEY: char = '@';

/// A key of an `[[app]]` table that cannot be as written (one its kind of app cannot have, a
/// verify setting that needs another). Its text is `@key: why`,
/// which [`crate::config::Config::from_toml`] turns into `key `app[0].key`: why`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{SUBKEY}{key}: {why}")]
pub struct BadAppKey {
    /// The key, as written in the table.
    pub key: &'static str,
    /// Why it cannot be so.
    pub why: String,
}
