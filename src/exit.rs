//! Exit codes from sysexits.h, so scripts can tell a typo from an outage.

/// Success.
pub const OK: i32 = 0;
/// A one-shot apply failed (check-failed, reload-failed, a write error): not a sysexits code,
/// because the failure is the managed service's config, not ours.
pub const FAILURE: i32 = 1;
/// Command line usage error.
pub const USAGE: i32 = 64;
/// Input data was bad (a rejected publish, an unreadable file).
pub const DATAERR: i32 = 65;
/// A service we need (ZooKeeper, a leader) is unavailable.
pub const UNAVAILABLE: i32 = 69;
/// Internal software error.
pub const SOFTWARE: i32 = 70;
/// I/O error on a local file.
pub const IOERR: i32 = 74;
/// A file that must be created could not be (EX_CANTCREAT).
pub const CANTCREAT: i32 = 73;
/// Permission denied (ZooKeeper answered NoAuth).
pub const NOPERM: i32 = 77;
/// Temporary failure; trying again later may work.
pub const TEMPFAIL: i32 = 75;
/// The configuration is wrong.
pub const CONFIG: i32 = 78;
