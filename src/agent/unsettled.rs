//! The versions a leadership follows until they settle, one per app, and when to look at each
//! next (see [`crate::agent::settle`], which looks): first a second after the publish (or
//! after its staged rollout is decided), then twice as long each time, up to every 30 s.
//! Held by the [`crate::agent::leader::Leader`], told of each version it creates.

use crate::model::record::SETTLE_LIMIT;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The first look after a publish: most fleets have applied by then.
const FIRST_LOOK: Duration = Duration::from_secs(1);

/// The longest wait between two looks at an unsettled version.
const MAX_STEP: Duration = Duration::from_secs(30);

/// Versions replaced before they settled, kept per app to be marked superseded: a longer
/// burst has pruned the older ones anyway.
const MAX_SUPERSEDED: usize = 100;

/// The versions a leadership follows until they settle, one per app.
#[derive(Default)]
pub(crate) struct Unsettled {
    following: Mutex<BTreeMap<String, Following>>,
    wake: tokio::sync::Notify,
}

/// One app's version on its way to the fleet.
#[derive(Debug, Clone)]
pub(crate) struct Following {
    /// Its name.
    pub(crate) version: String,
    /// Its stream (the versions parent's czxid).
    pub(crate) stream: i64,
    /// When to look next.
    pub(crate) due: Instant,
    /// The wait after the next look, doubled each time up to [`MAX_STEP`].
    pub(crate) step: Duration,
    /// When it settles with whatever it has.
    pub(crate) deadline: Instant,
    /// Older versions this one replaced before they settled.
    pub(crate) superseded: Vec<String>,
    /// Its rollout was decided and [`Unsettled::poke`] asked for a look (once).
    pub(crate) poked: bool,
}

impl Unsettled {
    fn following(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Following>> {
        self.following.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `app`'s new version `name` (of `stream`); the one followed before is superseded.
    pub(crate) fn track(&self, app: &str, stream: i64, name: &str) {
        let now = Instant::now();
        self.follow(app, stream, name, now + FIRST_LOOK, now + SETTLE_LIMIT);
    }

    /// Follows `name`, first looked at when `due`, settled with what it has at `deadline`.
    pub(crate) fn follow(&self, app: &str, stream: i64, name: &str, due: Instant, deadline: Instant) {
        let mut following = self.following();
        let mut superseded = Vec::new();
        if let Some(old) = following.remove(app) {
            superseded = old.superseded;
            if old.version != name {
                superseded.push(old.version);
            }
            let excess = superseded.len().saturating_sub(MAX_SUPERSEDED);
            superseded.drain(..excess);
        }
        following.insert(app.to_string(), Following { version: name.to_string(), stream, due, step: FIRST_LOOK, deadline, superseded, poked: false });
        drop(following);
        self.wake.notify_one();
    }

    /// Says `app`'s rollout of `version` was decided (promoted, aborted): look at it now, once
    /// (the supervisor says so at each of its looks while the record stays), and give the
    /// hosts [`SETTLE_LIMIT`] from now.
    pub(crate) fn poke(&self, app: &str, version: &str) {
        let now = Instant::now();
        if let Some(f) = self.following().get_mut(app).filter(|f| f.version == version && !f.poked) {
            f.poked = true;
            f.due = now;
            f.step = FIRST_LOOK;
            f.deadline = now + SETTLE_LIMIT;
            self.wake.notify_one();
        }
    }

    /// Whether a version of `app` is followed.
    pub(crate) fn follows(&self, app: &str) -> bool {
        self.following().contains_key(app)
    }

    /// The versions due for a look now, by app.
    pub(crate) fn due(&self) -> Vec<(String, Following)> {
        let now = Instant::now();
        self.following().iter().filter(|(_, f)| f.due <= now).map(|(a, f)| (a.clone(), f.clone())).collect()
    }

    /// What a look at `f` (`app`'s version) came to: forgotten when done, else due again a
    /// step later (never at once, a deadline passed or not), with the superseded versions it
    /// dealt with dropped. A publish meanwhile replaced it: the new one is followed already.
    pub(crate) fn looked(&self, app: &str, f: &Following, outcome: Outcome) {
        let mut following = self.following();
        if following.get(app).is_none_or(|g| g.version != f.version) {
            return;
        }
        match outcome {
            Outcome::Done => {
                following.remove(app);
            }
            Outcome::Again { done, open } => {
                let g = following.get_mut(app).expect("checked above");
                g.superseded.retain(|s| !done.contains(s));
                let now = Instant::now();
                if open {
                    // Its rollout is still deciding: the hosts' time starts when it ends.
                    g.deadline = g.deadline.max(now + SETTLE_LIMIT);
                }
                g.due = if g.deadline > now { (now + g.step).min(g.deadline) } else { now + g.step };
                g.step = (g.step * 2).min(MAX_STEP);
            }
        }
    }

    /// Waits until the next version is due, or a new one is followed or poked.
    pub(crate) async fn wait(&self) {
        let next = self.following().values().map(|f| f.due).min();
        let notified = self.wake.notified();
        match next {
            Some(due) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            None => notified.await,
        }
    }
}

/// What a look leaves to do.
pub(crate) enum Outcome {
    /// The version settled (or is gone): nothing more.
    Done,
    /// Still on its way: look again later. `done`: superseded versions now recorded (or gone);
    /// `open`: its staged rollout is still deciding.
    Again { done: Vec<String>, open: bool },
}
