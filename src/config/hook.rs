//! Hook commands (`check`, `reload`, a service's health check): an argv run without a shell,
//! or a string the config asks to run through `sh -c`.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// A check or reload command: an argv run without a shell, or a string run by `/bin/sh -c`
/// when the operator asks for shell syntax.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HookCommand {
    /// `["nginx", "-s", "reload"]`: no shell, no quoting surprises.
    Argv(Vec<String>),
    /// `"nginx -t -c {src} && echo ok"`: run by `/bin/sh -c`.
    Shell(String),
}

impl HookCommand {
    /// The argv to execute, with `{src}` replaced by `src` where given.
    pub fn argv(&self, src: Option<&Path>) -> Vec<String> {
        let subst = |s: &str| match src {
            Some(p) => s.replace("{src}", &p.to_string_lossy()),
            None => s.to_string(),
        };
        match self {
            HookCommand::Argv(v) => v.iter().map(|s| subst(s)).collect(),
            HookCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), subst(s)],
        }
    }
}

impl fmt::Display for HookCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookCommand::Argv(v) => write!(f, "{}", v.join(" ")),
            HookCommand::Shell(s) => write!(f, "sh -c {s:?}"),
        }
    }
}
