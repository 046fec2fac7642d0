//! Exponential backoff with jitter, so a fleet of daemons does not reconnect in lockstep.

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

#[cfg(test)]
mod tests {
    use super::*;

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
