//! A real nginx for the tests that name it (Debian's nginx-light, installed by
//! `scripts/install-deps.sh`), run as a plain process in a temp prefix: where it is, what it
//! answers, and a guard that stops it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The nginx binary.
pub fn nginx_bin() -> &'static str {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("nginx is not installed: run scripts/install-deps.sh (it installs nginx-light)");
}

/// What nginx answers on `port` to `GET /`: the body, or None.
pub fn get_body(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string())
}

/// Stops the nginx whose pid file it holds, when dropped.
pub struct NginxGuard(pub PathBuf);

impl Drop for NginxGuard {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
    }
}
