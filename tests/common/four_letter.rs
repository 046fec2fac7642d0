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

/// The `Mode:` line of `srvr` (`standalone`, `leader`, `follower`, `observer`), or `None` when the server
/// is down or not serving.
pub fn zk_mode(port: u16) -> Option<String> {
    let out = four_letter(port, "srvr")?;
    out.lines()
        .find_map(|l| l.strip_prefix("Mode:"))
        .map(|m| m.trim().to_string())
}

pub(crate) fn is_serving_mode(mode: &str) -> bool {
    matches!(mode, "standalone" | "leader" | "follower" | "observer")
}

/// `mntr` as key -> value (tab-separated lines such as `zk_packets_received\t1234`), or `None`
/// when the server does not answer. Benchmarks count requests and watches from it.
pub fn mntr(port: u16) -> Option<BTreeMap<String, String>> {
    let out = four_letter(port, "mntr")?;
    let map: BTreeMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (!map.is_empty()).then_some(map)
}

/// The last committed zxid a server reports in `srvr` (`Zxid: 0x...`). Its low 32 bits count
/// transactions within an epoch, so the difference over a window is the quorum writes made in it.
pub fn zk_zxid(port: u16) -> Option<u64> {
    let out = four_letter(port, "srvr")?;
    let hex = out.lines().find_map(|l| l.strip_prefix("Zxid:"))?.trim().trim_start_matches("0x");
    u64::from_str_radix(hex, 16).ok()
}

/// The `sid=0x...` of every connection in a `cons` answer (the four-letter word's own
/// connection has none).
pub fn cons_session_ids(cons: &str) -> Vec<String> {
    cons.lines()
        .filter_map(|l| l.split("sid=").nth(1))
        .map(|rest| rest.split(|c: char| c == ',' || c == ')').next().unwrap_or("").to_string())
        .collect()
}

/// Remote ports of the established TCP connections of process `pid` (from `ss -Htnp`).
pub fn pid_peer_ports(pid: u32) -> Vec<u16> {
    let Ok(out) = Command::new("ss").args(["-Htnp", "state", "established"]).output() else {
        return Vec::new();
    };
    let me = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&me))
        .filter_map(|l| l.split_whitespace().nth(3)?.rsplit(':').next()?.parse().ok())
        .collect()
}

/// One line's value of `mntr` (e.g. `zk_packets_received`), or `None` when the server does
/// not answer or has no such line.
pub fn mntr_value(port: u16, key: &str) -> Option<u64> {
    let out = four_letter(port, "mntr")?;
    out.lines().find_map(|l| {
        let (k, v) = l.split_once('\t')?;
        (k.trim() == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The server's last zxid (`srvr`'s `Zxid:` line): its low 32 bits count the transactions
/// (quorum writes) of the current epoch, so a delta counts writes.
pub fn last_zxid(port: u16) -> Option<i64> {
    let out = four_letter(port, "srvr")?;
    out.lines()
        .find_map(|l| l.strip_prefix("Zxid:"))
        .and_then(|z| i64::from_str_radix(z.trim().trim_start_matches("0x"), 16).ok())
}

/// What a set of servers has received and written so far: `zk_packets_received` summed over
/// them, and the largest last zxid (the ensemble's newest transaction).
#[derive(Debug, Clone, Copy)]
pub struct ServerCounts {
    /// Client packets (requests and pings) received, over all the servers.
    pub packets: u64,
    /// The newest zxid any of them has seen.
    pub zxid: i64,
    /// When it was read.
    pub at: std::time::Instant,
}

/// Reads [`ServerCounts`] from the servers on `ports`.
pub fn server_counts(ports: &[u16]) -> ServerCounts {
    let packets = ports.iter().filter_map(|p| mntr_value(*p, "zk_packets_received")).sum();
    let zxid = ports.iter().filter_map(|p| last_zxid(*p)).max().unwrap_or(0);
    ServerCounts { packets, zxid, at: std::time::Instant::now() }
}

/// Requests and transactions between two [`ServerCounts`], less what `idle` (a quiet window
/// read the same way) says the same span costs with nothing happening (pings, mostly).
pub fn counted_since(before: ServerCounts, after: ServerCounts, idle: (ServerCounts, ServerCounts)) -> (f64, f64) {
    let span = after.at.duration_since(before.at).as_secs_f64();
    let idle_span = idle.1.at.duration_since(idle.0.at).as_secs_f64().max(1e-9);
    let idle_packets = (idle.1.packets - idle.0.packets) as f64 / idle_span;
    let idle_txns = (idle.1.zxid - idle.0.zxid) as f64 / idle_span;
    (
        (after.packets - before.packets) as f64 - idle_packets * span,
        (after.zxid - before.zxid) as f64 - idle_txns * span,
    )
}
