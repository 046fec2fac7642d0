//! Version arguments as operators type them: `conf-0000000012`, `12`, or `-1` (the one before
//! the newest), resolved against the versions that exist.

use crate::exit;
use crate::model::layout::VersionId;

/// Why a version argument names no version; each kind has its exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not a version at all: a usage mistake (exit 64).
    #[error("not a version: {0:?} (expected 12, conf-0000000012 or -1)")]
    Malformed(String),
    /// A version the app does not have (exit 65): never made, pruned, or further back than
    /// there are versions.
    #[error("{0}")]
    NotThere(String),
}

impl VersionError {
    /// The sysexits code `zkcoordctl` ends with.
    pub fn exit_code(&self) -> i32 {
        match self {
            VersionError::Malformed(_) => exit::USAGE,
            VersionError::NotThere(_) => exit::DATAERR,
        }
    }
}

/// A version as given on the command line, before it is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionArg {
    /// An exact version, by name or number.
    Exact(VersionId),
    /// `-N`: N versions before the newest (`-0` would be the newest itself).
    BeforeNewest(usize),
}

impl VersionArg {
    /// Parses `conf-0000000012`, `12` or `-1`.
    pub fn parse(s: &str) -> Result<VersionArg, VersionError> {
        if let Some(back) = s.strip_prefix('-') {
            return back.parse::<usize>().map(VersionArg::BeforeNewest).map_err(|_| VersionError::Malformed(s.to_string()));
        }
        VersionId::parse(s)
            .or_else(|| s.parse::<u64>().ok().map(VersionId::from_seq))
            .map(VersionArg::Exact)
            .ok_or_else(|| VersionError::Malformed(s.to_string()))
    }

    /// The version this names among `versions` (oldest first).
    pub fn resolve(&self, versions: &[VersionId], app: &str) -> Result<VersionId, VersionError> {
        self.find(versions, app).map_err(VersionError::NotThere)
    }

    /// [`VersionArg::resolve`], the refusal said in words.
    fn find(&self, versions: &[VersionId], app: &str) -> Result<VersionId, String> {
        match self {
            VersionArg::Exact(v) => versions.iter().find(|x| x.seq == v.seq).cloned().ok_or_else(|| match versions.first() {
                // Older than everything kept: pruning took it (sequence numbers only grow).
                Some(oldest) if v.seq < oldest.seq => {
                    format!("{app} has no version {}: it was pruned (or the app re-created since); the oldest kept is {} (keep_versions sets how many stay)", v.name, oldest.name)
                }
                _ => format!("{app} has no version {}", v.name),
            }),
            VersionArg::BeforeNewest(n) => versions
                .len()
                .checked_sub(1 + n)
                .map(|i| versions[i].clone())
                .ok_or_else(|| format!("{app} has {} version(s); -{n} goes back too far", versions.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(seqs: &[u64]) -> Vec<VersionId> {
        seqs.iter().map(|s| VersionId::from_seq(*s)).collect()
    }

    #[test]
    fn names_numbers_and_relative_forms_resolve_despite_gaps() {
        let all = v(&[3, 7, 12]);
        assert_eq!(VersionArg::parse("conf-0000000007").unwrap().resolve(&all, "a").unwrap().seq, 7);
        assert_eq!(VersionArg::parse("12").unwrap().resolve(&all, "a").unwrap().seq, 12);
        assert_eq!(VersionArg::parse("-1").unwrap().resolve(&all, "a").unwrap().seq, 7);
        assert_eq!(VersionArg::parse("-0").unwrap().resolve(&all, "a").unwrap().seq, 12);
        assert!(VersionArg::parse("-3").unwrap().resolve(&all, "a").unwrap_err().to_string().contains("too far"));
        assert!(VersionArg::parse("5").unwrap().resolve(&all, "a").unwrap_err().to_string().contains("no version conf-0000000005"));
        let pruned = VersionArg::parse("1").unwrap().resolve(&all, "a").unwrap_err().to_string();
        assert!(pruned.contains("was pruned (or the app re-created since); the oldest kept is conf-0000000003"), "{pruned}");
        assert!(VersionArg::parse("latest").is_err());
    }
}
