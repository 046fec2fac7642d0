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
    assert!(scripts.contains("postinstall scriptlet") && scripts.contains("systemctl enable zkcoordd.service"), "{scripts}");
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
    assert!(std::fs::read_to_string(ctl.path().join("prerm")).unwrap().contains("systemctl stop zkcoordd.service"));
    assert!(std::fs::read_to_string(ctl.path().join("postrm")).unwrap().contains("deb-systemd-helper purge zkcoordd.service"));
    // Binaries are stripped.
    let data = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(data.path()));
    let file = run(Command::new("file").arg(data.path().join("usr/bin/zkcoordd")));
    assert!(file.contains("stripped") && !file.contains("not stripped"), "{file}");
}
