//! `zkcoordd`: parse arguments, load the config, run the daemon. All logic is in the library.

use clap::Parser;
use zkcoord::cli::DaemonArgs as Args;
use zkcoord::daemon::Mode;
use zkcoord::exit;

fn main() {
    let early_stop = zkcoord::daemon::signals::catch_early();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let config = match zkcoord::daemon::load_config(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zkcoordd: {e}");
            std::process::exit(exit::CONFIG);
        }
    };
    if args.check_config {
        let http = match &config.http.listen {
            Some(listen) => format!(", HTTP on {listen}"),
            None => String::new(),
        };
        let services = match config.services.len() {
            0 => String::new(),
            n => format!(", {n} service(s)"),
        };
        println!(
            "{}: ok (role {}, node {}, {} app(s){services}, ZooKeeper {}{http})",
            args.config.display(),
            config.role,
            config.node_id,
            config.apps.len(),
            config.zookeeper.hosts
        );
        // Every file read, so an operator sees which drop-ins took part.
        for file in &config.files {
            println!("  read {}", file.display());
        }
        for w in config.warnings() {
            println!("warning: {w}");
        }
        return;
    }
    let mode = match (args.once, args.dry_run) {
        (true, _) => Mode::Once,
        (_, true) => Mode::DryRun,
        _ => Mode::Daemon,
    };
    std::process::exit(zkcoord::daemon::start(config, args.config, mode, early_stop));
}
