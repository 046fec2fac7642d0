//! Waiting.

#![allow(unused_imports)]

use super::*;

/// Polls the async predicate `f` every 50 ms until it returns true; panics naming `what` after
/// `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Blocking version of `wait_until`.
pub fn wait_until_sync<F>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> bool,
{
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}
