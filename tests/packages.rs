//! What the built packages hold and do, read with the real tools (dpkg-deb, rpm). `make test`
//! builds the packages first (`make packages`); run alone, build them yourself or the tests say
//! they are skipped and why.

use std::path::{Path, PathBuf};
use std::process::Command;

fn built(ext: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let version = env!("CARGO_PKG_VERSION");
    std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.ends_with(ext) && name.contains(version)
        })
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a script runs a command that starts the daemon (echoed advice does not count).
fn starts_the_daemon(script: &str) -> bool {
    script.lines().map(str::trim).any(|l| {
        (l.starts_with("systemctl start") || l.starts_with("deb-systemd-invoke start") || l.contains("enable --now"))
            && !l.starts_with("echo")
    })
}

/// Files every package must hold.
const FILES: &[&str] = &[
    "/usr/bin/zkcoordd",
    "/usr/bin/zkcoordctl",
    "/etc/zkcoord.toml",
    "/usr/share/man/man8/zkcoordd.8.gz",
    "/usr/share/man/man1/zkcoordctl.1.gz",
    "/usr/share/doc/zkcoord/README.md",
    "/usr/share/bash-completion/completions/zkcoordctl",
    "/usr/share/fish/vendor_completions.d/zkcoordctl.fish",
    "/usr/share/zkcoord/prometheus/zkcoord-alerts.yml",
    "/usr/share/zkcoord/grafana/zkcoord-dashboard.json",
    "/usr/share/man/man5/zkcoord.toml.5.gz",
];

#[test]
fn the_rpm_holds_the_files_flags_and_scriptlets_and_installs_where_the_unit_expects() {
    let (Some(rpm), true) = (built(".rpm"), have("rpm")) else {
        eprintln!("skipped: no target/*.rpm for this version, or no rpm tool (run `make packages`; apt-get install rpm)");
        return;
    };
    let listing = run(Command::new("rpm").arg("-qpil").arg(&rpm));
    for f in FILES.iter().chain(&["/usr/lib/systemd/system/zkcoordd.service"]) {
        assert!(listing.lines().any(|l| l == *f), "{f} missing from the rpm:\n{listing}");
    }
    assert!(listing.contains(&format!("Version     : {}", env!("CARGO_PKG_VERSION"))), "{listing}");
    // The config file is %config(noreplace): upgrades keep the operator's edits.
    let flags = run(Command::new("rpm").args(["-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\\n]"]).arg(&rpm));
    assert!(flags.lines().any(|l| l == "cn /etc/zkcoord.toml"), "{flags}");
    assert!(flags.lines().any(|l| l.starts_with('d') && l.ends_with("zkcoordd.8.gz")), "{flags}");
    // Scriptlets: enable without starting on install, stop and disable on final removal.
    let scripts = run(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    // Presets, as %systemd_post does: the system's policy decides whether a new unit is enabled.
    assert!(scripts.contains("postinstall scriptlet") && scripts.contains("systemctl --no-reload preset zkcoordd.service"), "{scripts}");
    let commands = || scripts.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with("echo"));
    assert!(!commands().any(|l| l.contains("systemctl enable")), "enable is the preset policy's decision:\n{scripts}");
    assert!(scripts.contains("postuninstall scriptlet") && scripts.contains("try-restart zkcoordd.service"), "{scripts}");
    assert!(!starts_the_daemon(&scripts), "the package must not start an unconfigured daemon:\n{scripts}");
    assert!(scripts.contains("preuninstall scriptlet") && scripts.contains("disable --now zkcoordd.service"), "{scripts}");
    assert!(scripts.contains("mkdir -p /var/lib/zkcoord"), "{scripts}");

    // Installing into an empty root puts every file where the unit and the docs say.
    let root = tempfile::tempdir().unwrap();
    run(Command::new("rpm").arg("--root").arg(root.path()).args(["--nodeps", "--noscripts", "-i"]).arg(&rpm));
    for f in FILES.iter().chain(&["/usr/lib/systemd/system/zkcoordd.service"]) {
        assert!(root.path().join(&f[1..]).exists(), "{f} not installed");
    }
    let unit = std::fs::read_to_string(root.path().join("usr/lib/systemd/system/zkcoordd.service")).unwrap();
    for line in unit.lines().filter(|l| l.starts_with("ExecStart")) {
        let bin = line.split('=').nth(1).unwrap().split_whitespace().next().unwrap();
        assert!(root.path().join(&bin[1..]).exists(), "the unit runs {bin}, which the rpm does not install");
    }
    let out = Command::new(root.path().join("usr/bin/zkcoordd"))
        .args(["--config"])
        .arg(root.path().join("etc/zkcoord.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "the packaged default config validates: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_deb_holds_the_files_marks_the_config_as_a_conffile_and_ships_maintainer_scripts() {
    let (Some(deb), true) = (built(".deb"), have("dpkg-deb")) else {
        eprintln!("skipped: no target/*.deb for this version (run `make packages`)");
        return;
    };
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in FILES.iter().chain(&["/lib/systemd/system/zkcoordd.service"]) {
        assert!(listing.contains(&format!(".{f}")), "{f} missing from the deb:\n{listing}");
    }
    let ctl = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctl.path()));
    assert_eq!(std::fs::read_to_string(ctl.path().join("conffiles")).unwrap().trim(), "/etc/zkcoord.toml");
    let control = std::fs::read_to_string(ctl.path().join("control")).unwrap();
    assert!(control.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))), "{control}");
    let postinst = std::fs::read_to_string(ctl.path().join("postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper enable zkcoordd.service") && !starts_the_daemon(&postinst), "{postinst}");
    assert!(postinst.contains("deb-systemd-invoke try-restart zkcoordd.service"), "{postinst}");
    assert!(std::fs::read_to_string(ctl.path().join("prerm")).unwrap().contains("deb-systemd-invoke stop zkcoordd.service"));
    assert!(std::fs::read_to_string(ctl.path().join("postrm")).unwrap().contains("deb-systemd-helper purge zkcoordd.service"));
    // Binaries are stripped.
    let data = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(data.path()));
    let file = run(Command::new("file").arg(data.path().join("usr/bin/zkcoordd")));
    assert!(file.contains("stripped") && !file.contains("not stripped"), "{file}");
}

/// Runs a linter that `make test` installs (scripts/install-deps.sh): a missing linter is a
/// broken test machine, not a reason to skip.
fn lint(tool: &str, package: &Path, args: &[&str]) -> (bool, String) {
    assert!(have(tool), "{tool} is not installed: scripts/install-deps.sh installs it (apt-get install {tool})");
    let out = Command::new(tool).args(args).arg(package).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn lintian_has_nothing_to_say_about_the_deb() {
    let Some(deb) = built(".deb") else {
        eprintln!("skipped: no target/*.deb for this version (run `make packages`)");
        return;
    };
    // Errors and warnings fail; so would an override without a reason (lintian reports those
    // as tags too). Informational tags and pedantic ones are not asked for.
    let (ok, text) = lint("lintian", &deb, &["--fail-on", "error,warning", "--display-level", ">=warning"]);
    let tags: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ") || l.starts_with("W: ")).collect();
    assert!(ok && tags.is_empty(), "lintian on {}:\n{text}", deb.display());
}

#[test]
fn rpmlint_finds_no_errors_in_the_rpm() {
    let Some(rpm) = built(".rpm") else {
        eprintln!("skipped: no target/*.rpm for this version (run `make packages`)");
        return;
    };
    // The filters in packaging/rpm/rpmlint.toml each say why (findings the build tool cannot change).
    let filters = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/rpm/rpmlint.toml");
    let (_, text) = lint("rpmlint", &rpm, &["-c", filters.to_str().unwrap()]);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(": E: ")).collect();
    assert!(errors.is_empty(), "rpmlint errors on {}:\n{text}", rpm.display());
    assert!(text.contains("0 errors"), "rpmlint summary says no errors:\n{text}");
}

#[test]
fn both_packages_carry_a_changelog_written_from_the_git_history() {
    let (Some(deb), Some(rpm)) = (built(".deb"), built(".rpm")) else {
        eprintln!("skipped: no target/*.deb or *.rpm for this version (run `make packages`)");
        return;
    };
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    assert!(listing.contains("./usr/share/doc/zkcoord/changelog.Debian.gz"), "{listing}");
    let rpm_files = run(Command::new("rpm").arg("-qpl").arg(&rpm));
    assert!(rpm_files.lines().any(|l| l == "/usr/share/doc/zkcoord/changelog"), "{rpm_files}");
    let changelog = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/changelog")).unwrap();
    let first = changelog.lines().next().unwrap_or_default();
    assert_eq!(first, format!("zkcoord ({}) unstable; urgency=medium", env!("CARGO_PKG_VERSION")));
    // The newest commit's subject is in it (the changelog was not written by hand once).
    let subject = run(Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "log", "-1", "--format=%s"]));
    let first_word = subject.split_whitespace().next().unwrap_or_default();
    assert!(changelog.contains(first_word), "{changelog}");
    assert!(!changelog.contains("@localhost"), "{changelog}");
}
