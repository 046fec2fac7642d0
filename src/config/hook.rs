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
        let src = src.map(|p| p.to_string_lossy().into_owned());
        let vars: Vec<(&str, &str)> = src.as_deref().map(|s| ("src", s)).into_iter().collect();
        self.argv_with(&vars)
    }

    /// The argv to execute, each `{name}` of `vars` replaced by its value in every word (the
    /// argv form never goes through a shell, so a value is always one word). A placeholder
    /// without a value is left as written, so a typo shows in the command's own error.
    pub fn argv_with(&self, vars: &[(&str, &str)]) -> Vec<String> {
        // One pass, so a value that itself holds `{dest}` is never expanded again.
        let subst = |s: &str| {
            let mut out = String::with_capacity(s.len());
            let mut rest = s;
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let tail = &rest[open..];
                let value = tail.find('}').and_then(|close| vars.iter().find(|(n, _)| *n == &tail[1..close]).map(|(_, v)| (close, v)));
                match value {
                    Some((close, v)) => {
                        out.push_str(v);
                        rest = &tail[close + 1..];
                    }
                    None => {
                        out.push('{');
                        rest = &tail[1..];
                    }
                }
            }
            out.push_str(rest);
            out
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

#[cfg(test)]
mod tests {
    use super::HookCommand;

    #[test]
    fn placeholders_are_expanded_once_and_unknown_ones_kept() {
        let cmd = HookCommand::Argv(vec!["x".into(), "{src}:{dest}".into(), "{version}{nope}{".into()]);
        let argv = cmd.argv_with(&[("src", "/a/{dest}"), ("dest", "/b"), ("version", "conf-1")]);
        assert_eq!(argv, ["x", "/a/{dest}:/b", "conf-1{nope}{"]);
    }
}
