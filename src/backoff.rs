//! Exponential backoff with jitter, so a fleet of daemons does not reconnect in lockstep, and
//! the jittered wait of a periodic pass ([`jittered`]), for the same reason.

use rand::Rng;
use std::time::Duration;

/// Delays that double from `initial` up to `max`, each with up to 25% random jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay, and the one after a reset.
    initial: Duration,
    /// The ceiling: an outage of hours still retries this often.
    max: Duration,
    /// The next delay before jitter.
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, next: initial }
    }

    /// The delay to wait now; the following one is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::thread_rng().gen_range(0.0..0.25);
        base + base.mul_f64(jitter)
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// How far a periodic pass may stray from its interval, either way: a fleet started together
/// (a deploy, a power cut) spreads its passes out instead of reading ZooKeeper in lockstep.
pub const PASS_JITTER: f64 = 0.2;

/// The wait before the next periodic pass: `interval`, give or take [`PASS_JITTER`] at random.
pub fn jittered(interval: Duration) -> Duration {
    let f = rand::thread_rng().gen_range(1.0 - PASS_JITTER..=1.0 + PASS_JITTER);
    interval.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_waits_within_twenty_percent_of_its_interval_and_not_always_the_same() {
        let i = Duration::from_secs(300);
        let waits: Vec<Duration> = (0..1000).map(|_| jittered(i)).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(240) && *w <= Duration::from_secs(360)), "{waits:?}");
        let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*max - *min > Duration::from_secs(60), "spread out: {min:?}..{max:?}");
    }

    #[test]
    fn doubles_up_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(125));
        let d2 = b.next_delay();
        assert!(d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(250));
        let d3 = b.next_delay();
        assert!(d3 >= Duration::from_millis(350) && d3 <= Duration::from_millis(438));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
