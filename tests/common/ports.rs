//! Ports.

#![allow(unused_imports)]

use super::*;

pub(crate) fn ephemeral_port_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A free TCP port on 127.0.0.1 that no other caller in this process has been given.
///
/// Picked at random *outside* the kernel's ephemeral range (so that no outgoing connection can
/// take it between now and the moment the server binds it) and checked by binding it. Another
/// process can still take it in between; `ZkEnsemble` retries with new ports when it sees a
/// bind failure.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    let (lo, hi) = ephemeral_port_range();
    let mut ranges: Vec<(u16, u16)> = Vec::new(); // [a, b)
    if lo > 10_240 {
        ranges.push((10_240, lo));
    }
    if hi < 65_000 {
        ranges.push((hi + 1, 65_535));
    }
    let total: u32 = ranges.iter().map(|(a, b)| (b - a) as u32).sum();
    let mut rng = rand::thread_rng();
    if total > 1000 {
        for _ in 0..10_000 {
            let mut k = rng.gen_range(0..total);
            let mut port = 0;
            for (a, b) in &ranges {
                let len = (b - a) as u32;
                if k < len {
                    port = a + k as u16;
                    break;
                }
                k -= len;
            }
            let mut set = lock(given);
            if port == 0 || set.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                set.insert(port);
                return port;
            }
        }
    }
    // Fallback: let the kernel choose.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if lock(given).insert(port) {
            return port;
        }
    }
}
