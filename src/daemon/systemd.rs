//! Talking to systemd: READY once the first sync is done (or the start timeout passed), a
//! STATUS line kept current, WATCHDOG pings while the main loop is healthy, RELOADING and
//! STOPPING around reloads and shutdown. Outside systemd every call is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;

/// Sends sd_notify messages when NOTIFY_SOCKET is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

impl Notifier {
    fn send(&self, states: &[NotifyState]) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::debug!("sd_notify failed: {e}");
        }
    }
    /// READY=1 with a STATUS line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }
    /// STATUS=...
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }
    /// RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload expects.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }
    /// STOPPING=1.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
    /// WATCHDOG=1.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
    /// The interval at which to ping the watchdog (half of WatchdogSec), if it is on.
    /// As in libsystemd's sd_watchdog_enabled, WATCHDOG_PID must name us when it is set, and
    /// an unset WATCHDOG_PID means the watchdog is ours.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|u| *u > 0)?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        Some(Duration::from_micros(usec / 2))
    }
}
