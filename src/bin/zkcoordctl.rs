//! `zkcoordctl`: parse arguments and run the command. All logic is in the library.

use clap::Parser;
use zkcoord::ctl::{self, Cli};
use zkcoord::exit;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zkcoordctl: cannot start the runtime: {e}");
            std::process::exit(exit::SOFTWARE);
        }
    };
    let result = runtime.block_on(ctl::run(cli));
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    if let Err(e) = result {
        if !e.message.is_empty() {
            eprintln!("zkcoordctl: {}", e.message);
        }
        std::process::exit(e.code);
    }
}
