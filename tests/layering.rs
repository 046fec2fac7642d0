//! The shape of `src/` cannot grow back silently: every `crate::`/`super::` path (and, in the
//! binaries, every `zkcoord::` path) outside comments and `#[cfg(test)]` code must run down the
//! layer table of the README's "How the code is laid out", and no two files may import each
//! other, directly or around a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first, and what each may use besides itself.
const LAYERS: &[(&str, &[&str])] = &[
    ("leaf", &[]),
    ("model", &["leaf"]),
    ("config", &["leaf", "model"]),
    ("metrics", &["leaf", "model"]),
    ("zk", &["leaf", "model", "config", "metrics"]),
    ("host", &["leaf", "model", "config", "metrics"]),
    ("agent", &["leaf", "model", "config", "metrics", "zk", "host"]),
    ("app", &["leaf", "model", "config", "metrics", "zk", "host"]),
    ("service", &["leaf", "model", "config", "metrics", "zk", "host"]),
    ("daemon", &["leaf", "model", "config", "metrics", "zk", "host", "agent", "app", "service"]),
    ("ctl", &["leaf", "model", "config", "metrics", "zk", "host", "agent", "app", "service"]),
    ("cli", &["leaf", "model", "config", "metrics", "ctl"]),
    ("bin", &["leaf", "config", "daemon", "ctl", "cli"]),
];

/// The layer a module path (`["zk", "session"]`) belongs to.
fn layer_of(module: &[String]) -> &'static str {
    match module.first().map(String::as_str) {
        Some("clock" | "digest" | "secret" | "backoff" | "exit" | "ready") => "leaf",
        Some("model") => "model",
        Some("config") => "config",
        Some("metrics") => "metrics",
        Some("zk") => "zk",
        Some("host") => "host",
        Some("agent") => "agent",
        Some("app") => "app",
        Some("service") => "service",
        Some("daemon") => "daemon",
        Some("ctl") => "ctl",
        Some("cli") => "cli",
        Some("bin") => "bin",
        other => panic!("module {other:?} is on no layer: add it to tests/layering.rs and the README's table"),
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/zk/session.rs` is `zk::session`, `src/zk/mod.rs` is `zk`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The file's code without comments, string contents and `#[cfg(test)]` items.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_test = false;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let trimmed = code.trim();
        if trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = code.matches('{').count() as i32;
        let closes = code.matches('}').count() as i32;
        if pending_test && skip_depth.is_none() && !trimmed.is_empty() {
            skip_depth = Some(depth);
            pending_test = false;
        }
        depth += opens - closes;
        if let Some(d) = skip_depth {
            if depth <= d && (opens > 0 || closes > 0 || trimmed.ends_with(';')) {
                skip_depth = None;
            }
            continue;
        }
        let mut cleaned = String::new();
        let mut in_str = false;
        let mut prev = ' ';
        for c in code.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                cleaned.push(c);
            }
            prev = c;
        }
        out.push_str(&cleaned);
        out.push('\n');
    }
    out
}

/// The module paths a file's code names: `crate::a::b`, `super::x` (resolved), `zkcoord::a`.
fn imports_of(module: &[String], is_mod_rs: bool, code: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    for (prefix, kind) in [("crate::", 0), ("super::", 1), ("zkcoord::", 2)] {
        let mut at = 0;
        while let Some(i) = code[at..].find(prefix) {
            let start = at + i;
            at = start + prefix.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b':') {
                continue;
            }
            let rest: String = code[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            let segs: Vec<String> = rest.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
            let base: Vec<String> = match kind {
                0 | 2 => Vec::new(),
                _ => {
                    // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` it is `a` as well (module `a::b`'s parent).
                    let mut m = module.to_vec();
                    let _ = is_mod_rs;
                    m.pop();
                    m
                }
            };
            let mut path = base;
            path.extend(segs);
            if !path.is_empty() {
                found.insert(path);
            }
        }
    }
    found
}

#[test]
fn imports_run_down_the_layers_and_no_files_import_each_other_in_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().filter(|f| !f.ends_with("lib.rs")).map(|f| (module_of(&src, f), f.clone())).collect();
    // Resolve a named path to the longest module prefix that is a file of ours.
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p))
    };
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read source");
        let from = layer_of(module);
        let is_mod_rs = file.ends_with("mod.rs");
        for named in imports_of(module, is_mod_rs, &code_of(&text)) {
            let Some(target) = resolve(&named) else { continue };
            if &target == module {
                continue;
            }
            let to = layer_of(&target);
            if to != from && !allowed[from].contains(&to) {
                wrong.push(format!("{} ({from}) uses {} ({to})", file.display(), target.join("::")));
            }
            graph.entry(module.clone()).or_default().insert(target);
        }
    }
    assert!(wrong.is_empty(), "imports that run up the layers:\n{}", wrong.join("\n"));

    // No loops: a depth-first search that reports the first circle it meets.
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut circle: Vec<String> = stack[at..].iter().map(|m| m.join("::")).collect();
                circle.push(node.join("::"));
                return Some(circle);
            }
            _ => {}
        }
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for module in modules.keys() {
        let mut stack = Vec::new();
        if let Some(circle) = visit(module, &graph, &mut state, &mut stack) {
            panic!("an import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_paths_and_skips_comments_and_tests() {
    let code = code_of("use crate::zk::session;\n// crate::daemon::x\nlet s = \"crate::ctl\";\n#[cfg(test)]\nmod tests {\n    use crate::daemon;\n}\nfn f() { super::g(); }\n");
    let found = imports_of(&["zk".to_string(), "fence".to_string()], false, &code);
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(names, vec!["zk::g".to_string(), "zk::session".to_string()]);
}
