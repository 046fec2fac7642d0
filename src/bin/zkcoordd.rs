//! `zkcoordd`: parse arguments, load the config, run the daemon. All logic is in the library.

use clap::Parser;
use zkcoord::cli::DaemonArgs as Args;
use zkcoord::config::Config;
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
    let config = match Config::load(&args.config) {
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
        return;
    }
    // A one-shot run prints its own results, one line per app; its log is off unless
    // ZKCOORD_LOG or RUST_LOG ask for it.
    let one_shot = args.once || args.dry_run;
    zkcoord::zk::identity::install_from(&config);
    let log = zkcoord::daemon::logging::init(if one_shot { "off" } else { &config.log_level });
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zkcoordd: cannot start the runtime: {e}");
            std::process::exit(exit::SOFTWARE);
        }
    };
    let code = if args.once {
        runtime.block_on(zkcoord::app::oneshot::once(&config))
    } else if args.dry_run {
        runtime.block_on(zkcoord::app::oneshot::dry_run(&config))
    } else {
        runtime.block_on(zkcoord::daemon::run(config, args.config, early_stop, log))
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
