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
    /// Whether there is nothing to run (`[]`, `[""]` or a blank string): refused in the config.
    pub fn is_empty(&self) -> bool {
        match self {
            HookCommand::Argv(v) => v.first().is_none_or(|a| a.is_empty()),
            HookCommand::Shell(s) => s.trim().is_empty(),
        }
    }

    /// The argv to execute, with `{src}` replaced by `src` where given.
    pub fn argv(&self, src: Option<&Path>) -> Vec<String> {
        let src = src.map(|p| p.to_string_lossy().into_owned());
        let vars: Vec<(&str, &str)> = src.as_deref().map(|s| ("src", s)).into_iter().collect();
        self.argv_with(&vars)
    }

    /// The argv to execute, each `{name}` of `vars` replaced by its value in every word. The
    /// argv form never goes through a shell, so a value is always one word; in the shell form a
    /// value is quoted as one shell word, so a path with a space, a quote or a `;` in it is
    /// data, never shell syntax (write `{src}`, not `'{src}'`). A placeholder without a value
    /// is left as written, so a typo shows in the command's own error.
    pub fn argv_with(&self, vars: &[(&str, &str)]) -> Vec<String> {
        // One pass, so a value that itself holds `{dest}` is never expanded again.
        let subst = |s: &str, quote: bool| {
            let mut out = String::with_capacity(s.len());
            let mut rest = s;
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let tail = &rest[open..];
                let value = tail.find('}').and_then(|close| vars.iter().find(|(n, _)| *n == &tail[1..close]).map(|(_, v)| (close, v)));
                match value {
                    Some((close, v)) if quote => {
                        out.push_str(&shell_quote(v));
                        rest = &tail[close + 1..];
                    }
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
            HookCommand::Argv(v) => v.iter().map(|s| subst(s, false)).collect(),
            HookCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), subst(s, true)],
        }
    }
}

/// A word as a POSIX shell would need it: bare when it is plainly safe, single-quoted otherwise.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,{}".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
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

    #[test]
    fn a_shell_hook_gets_each_value_as_one_quoted_word() {
        let cmd = HookCommand::Shell("nginx -t -c {src} && echo {version}".into());
        let argv = cmd.argv_with(&[("src", "/etc/my site/x.conf; rm -rf /"), ("version", "main=conf-1 site=conf-2")]);
        assert_eq!(argv[2], r"nginx -t -c '/etc/my site/x.conf; rm -rf /' && echo 'main=conf-1 site=conf-2'");
        let argv = cmd.argv_with(&[("src", "it's"), ("version", "conf-1")]);
        assert_eq!(argv[2], r"nginx -t -c 'it'\''s' && echo conf-1");
    }
}
