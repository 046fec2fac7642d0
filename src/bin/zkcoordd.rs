//! `zkcoordd`: parse arguments, load the config, run the daemon. All logic is in the library.

use clap::Parser;
use zkcoord::cli::DaemonArgs as Args;
use zkcoord::config::Config;
use zkcoord::exit;

fn main() {
    let early_stop = zkcoord::signals::catch_early();
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
        println!(
            "{}: ok (role {}, node {}, {} app(s), ZooKeeper {})",
            args.config.display(),
            config.role,
            config.node_id,
            config.apps.len(),
            config.zookeeper.hosts
        );
        return;
    }
    let log = zkcoord::logging::init(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zkcoordd: cannot start the runtime: {e}");
            std::process::exit(exit::SOFTWARE);
        }
    };
    let code = runtime.block_on(zkcoord::daemon::run(config, args.config, early_stop, log));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
