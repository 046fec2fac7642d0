//! ZooKeeper four-letter words.

#![allow(unused_imports)]

use super::*;

/// Sends a four-letter word (`srvr`, `cons`, `mntr`, `ruok`, ...) to 127.0.0.1:`port` and
/// returns the answer, or `None` if the server does not answer within ~2 s.
pub fn four_letter(port: u16, cmd: &str) -> Option<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    if out.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The `Mode:` line of `srvr` (`standalone`, `leader`, `follower`), or `None` when the server
/// is down or not serving.
pub fn zk_mode(port: u16) -> Option<String> {
    let out = four_letter(port, "srvr")?;
    out.lines()
        .find_map(|l| l.strip_prefix("Mode:"))
        .map(|m| m.trim().to_string())
}

pub(crate) fn is_serving_mode(mode: &str) -> bool {
    matches!(mode, "standalone" | "leader" | "follower")
}
