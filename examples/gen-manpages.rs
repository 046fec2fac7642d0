//! Writes gzip-compressed man pages for zkcoordd(8) and zkcoordctl(1) into the directory given
//! as the first argument, and zkcoordctl's bash, zsh and fish completions into its
//! `completions/` subdirectory, all from the same clap definitions the binaries parse, and
//! zkcoord.toml(5) from the key table in `zkcoord::config::keys` (the README's table is
//! rendered from it too). Used by `make packages`. With `--update-readme` instead, rewrites
//! README.md's key table from that module.

use clap::CommandFactory;
use std::io::Write;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("--update-readme") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path)?;
        let updated = zkcoord::config::keys::update_readme(&readme)
            .ok_or_else(|| std::io::Error::other("README.md has no config-keys markers"))?;
        std::fs::write(path, updated)?;
        println!("updated the key table in {path}");
        return Ok(());
    }
    let out = PathBuf::from(arg.unwrap_or_else(|| "target/man".into()));
    std::fs::create_dir_all(&out)?;
    let pages = [
        (zkcoord::cli::DaemonArgs::command(), "zkcoordd.8.gz", "8"),
        (zkcoord::cli::CtlArgs::command(), "zkcoordctl.1.gz", "1"),
    ];
    for (cmd, file, section) in pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(cmd).section(section).render(&mut roff)?;
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(out.join(file))?, flate2::Compression::best());
        gz.write_all(&roff)?;
        gz.finish()?;
        println!("wrote {}", out.join(file).display());
    }
    let page = zkcoord::config::keys::man_page(env!("CARGO_PKG_VERSION"));
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(out.join("zkcoord.toml.5.gz"))?, flate2::Compression::best());
    gz.write_all(page.as_bytes())?;
    gz.finish()?;
    println!("wrote {}", out.join("zkcoord.toml.5.gz").display());
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "zkcoordctl"),
        (clap_complete::Shell::Zsh, "_zkcoordctl"),
        (clap_complete::Shell::Fish, "zkcoordctl.fish"),
    ] {
        let mut cmd = zkcoord::cli::CtlArgs::command();
        let mut f = std::fs::File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut cmd, "zkcoordctl", &mut f);
        println!("wrote {}", completions.join(file).display());
    }
    Ok(())
}
