//! What the binaries say about themselves: `zkcoordctl --help` names every exit code it can
//! return, so a script knows what each means without reading the source.

mod common;

use common::*;

#[test]
fn zkcoordctl_help_lists_every_exit_code_it_uses() {
    let out = std::process::Command::new(ctl_bin()).arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    let codes = help.split("Exit codes:").nth(1).unwrap_or_else(|| panic!("no exit codes in:\n{help}"));
    // Every code zkcoordctl returns (src/exit.rs, as src/ctl uses them).
    for code in ["0 ok", "1 ", "64 ", "65 ", "69 ", "70 ", "75 ", "77 ", "78 "] {
        assert!(codes.contains(code), "exit code {code:?} missing from --help:\n{codes}");
    }
}
