//! Writes gzip-compressed man pages for zkcoordd(8) and zkcoordctl(1) into the directory given
//! as the first argument, and zkcoordctl's bash, zsh and fish completions into its
//! `completions/` subdirectory, all from the same clap definitions the binaries parse.
//! Used by `make packages`.

use clap::CommandFactory;
use std::io::Write;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/man".into()));
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
