//! Chaos soak: 3 ZooKeeper servers, 3 agents and 5 app hosts while a seeded random schedule kills
//! and restarts servers and daemons, pauses processes, cuts and drops proxy links, and publishes.
//! Invariants are checked throughout; the seed is printed so a failure can be replayed.
//!
//! `ZKCOORD_CHAOS_SECS` sets the duration (default 20), `ZKCOORD_CHAOS_SEED` the seed.
//!
//! Agents are paused only for less than half their session timeout, and never while a server is
//! down (a server kill plus a pause can outlast the session): a process frozen past its session
//! cannot log its own step-down, so its logged interval would overlap its successor's even though
//! it writes nothing. That case (a zombie leader must not write) has its own test in
//! tests/sessions.rs.

mod common;
mod fleet;

use common::*;
use fleet::*;
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AGENTS: usize = 3;
const APPS: usize = 5;

/// Prints the seed if the test panics.
struct SeedOnPanic(u64);
impl Drop for SeedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("chaos: FAILED with ZKCOORD_CHAOS_SEED={}", self.0);
        }
    }
}

/// Watches destinations and state files from a thread, recording any broken invariant.
struct Observer {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    reads: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    fn start(apps: Vec<(String, PathBuf, PathBuf)>, submitted: Arc<Mutex<HashSet<Vec<u8>>>>) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(Mutex::new(0u64));
        let (s, v, r) = (stop.clone(), violations.clone(), reads.clone());
        let thread = std::thread::spawn(move || {
            let mut last_seq = vec![0u64; apps.len()];
            while !s.load(Ordering::SeqCst) {
                for (i, (name, dest, state)) in apps.iter().enumerate() {
                    if let Ok(bytes) = std::fs::read(dest) {
                        *r.lock().unwrap() += 1;
                        if !submitted.lock().unwrap().contains(&bytes) {
                            v.lock().unwrap().push(format!(
                                "{name}: destination holds bytes that were never published: {:?}",
                                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                            ));
                        }
                    }
                    let seq = std::fs::read(state)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        .and_then(|j| j["seq"].as_u64());
                    if let Some(seq) = seq {
                        if seq < last_seq[i] {
                            v.lock().unwrap().push(format!("{name}: applied version went back from {} to {seq}", last_seq[i]));
                        }
                        last_seq[i] = seq;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Observer { stop, violations, reads, thread: Some(thread) }
    }

    fn finish(mut self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let v = self.violations.lock().unwrap().clone();
        let r = *self.reads.lock().unwrap();
        (v, r)
    }
}

/// A daemon with its own proxies (one per server) so its links can be cut.
struct Node {
    daemon: Daemon,
    proxies: Vec<Proxy>,
    /// When it was SIGSTOPped and should be continued.
    paused_until: Option<Instant>,
    /// When its proxies should forward again.
    cut_until: Option<Instant>,
    /// When it was killed and should be started again.
    dead_until: Option<Instant>,
    /// When the current process was started: faults wait until it has had time to start.
    started: Instant,
}

impl Node {
    fn start(spec: Spec, zk: &ZkEnsemble) -> Node {
        let proxies: Vec<Proxy> = (0..zk.len()).map(|i| Proxy::to_port(zk.server_port(i))).collect();
        let mut spec = spec;
        spec.zk = proxies.iter().map(|p| p.address()).collect::<Vec<_>>().join(",");
        Node { daemon: spec.start(), proxies, paused_until: None, cut_until: None, dead_until: None, started: Instant::now() }
    }
    fn busy(&self) -> bool {
        self.paused_until.is_some()
            || self.cut_until.is_some()
            || self.dead_until.is_some()
            || self.started.elapsed() < Duration::from_millis(500)
    }
    /// Undoes whatever fault is due (all of them with `all`).
    fn heal(&mut self, now: Instant, all: bool) {
        if self.paused_until.is_some_and(|t| all || now >= t) {
            self.daemon.signal(Signal::SIGCONT);
            self.paused_until = None;
        }
        if self.cut_until.is_some_and(|t| all || now >= t) {
            self.proxies.iter().for_each(|p| p.set_forwarding(true));
            self.cut_until = None;
        }
        if self.dead_until.is_some_and(|t| all || now >= t) {
            self.daemon.spawn();
            self.dead_until = None;
            self.started = Instant::now();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_keeps_every_invariant() {
    let seed: u64 = std::env::var("ZKCOORD_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let secs: u64 = std::env::var("ZKCOORD_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let _seed_guard = SeedOnPanic(seed);
    eprintln!("chaos: seed {seed}, {secs}s (replay with ZKCOORD_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut zk = ZkEnsemble::three();
    let hosts = zk.connect_string();
    let mut agents: Vec<Node> = (0..AGENTS)
        .map(|i| {
            let mut s = Spec::agent(&format!("agent-{i}"), "");
            s.session = "2s";
            s.agent_extra = "keep_versions = 100000".into();
            Node::start(s, &zk)
        })
        .collect();
    let mut apps: Vec<Node> = (0..APPS)
        .map(|i| {
            let mut s = Spec::app(&format!("web-{i}"), "");
            s.session = "2s";
            s.reload = Some(r#"["true"]"#.into());
            Node::start(s, &zk)
        })
        .collect();
    let submitted: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let observer = Observer::start(
        apps.iter()
            .map(|n| (n.daemon.name().to_string(), dest(&n.daemon), n.daemon.dir().join(format!("state/{APP}.json"))))
            .collect(),
        submitted.clone(),
    );

    let mut deaths: Vec<Vec<u64>> = vec![Vec::new(); AGENTS];
    let mut acknowledged = Vec::new();
    let mut in_flight: Option<tokio::task::JoinHandle<Option<String>>> = None;
    let mut server_down: Option<(usize, Instant)> = None;
    let mut counts = std::collections::BTreeMap::<&str, u32>::new();
    let mut timeline: Vec<String> = Vec::new();
    let mut n = 0u64;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let now = Instant::now();
        agents.iter_mut().chain(apps.iter_mut()).for_each(|node| node.heal(now, false));
        if let Some((i, until)) = server_down {
            if now >= until {
                zk.start_no_wait(i);
                server_down = None;
            }
        }
        let action = rng.gen_range(0..10);
        let mut target = String::new();
        let what = match action {
            0 | 1 | 2 => {
                // Publishes run in the background, one at a time, so a publish waiting for a
                // leader never delays undoing a fault (a pause must end on time).
                if in_flight.as_ref().is_some_and(|h: &tokio::task::JoinHandle<Option<String>>| !h.is_finished()) {
                    "skip"
                } else {
                    if let Some(done) = in_flight.take() {
                        acknowledged.extend(done.await.unwrap());
                    }
                    n += 1;
                    let bytes = format!("chaos version {n} seed {seed}\n").into_bytes();
                    submitted.lock().unwrap().insert(bytes.clone());
                    let hosts = hosts.clone();
                    in_flight = Some(tokio::task::spawn_blocking(move || {
                        let out = ctl_stdin(&["--zk", &hosts, "publish", APP, "-", "--timeout", "5s"], &bytes);
                        String::from_utf8_lossy(&out.stdout).trim().strip_prefix("published ").map(String::from)
                    }));
                    "publish"
                }
            }
            3 if server_down.is_none() && agents.iter().all(|a| a.paused_until.is_none()) => {
                let i = rng.gen_range(0..3);
                target = format!("zk-{i}");
                zk.kill(i);
                server_down = Some((i, now + Duration::from_millis(rng.gen_range(500..3000))));
                "kill a ZooKeeper server"
            }
            4 => {
                let i = rng.gen_range(0..AGENTS);
                let node = &mut agents[i];
                target = node.daemon.name().to_string();
                if node.busy() {
                    "skip"
                } else if rng.gen_bool(0.5) {
                    node.daemon.kill9();
                    deaths[i].push(monotonic_us());
                    node.dead_until = Some(now + Duration::from_millis(rng.gen_range(0..1500)));
                    "kill -9 an agent"
                } else {
                    let status = node.daemon.term();
                    assert!(status.success(), "agent exit on SIGTERM: {status:?}");
                    deaths[i].push(monotonic_us());
                    node.dead_until = Some(now + Duration::from_millis(rng.gen_range(0..1500)));
                    "SIGTERM an agent"
                }
            }
            5 => {
                let node = &mut agents[rng.gen_range(0..AGENTS)];
                target = node.daemon.name().to_string();
                if node.busy() || server_down.is_some() {
                    "skip"
                } else {
                    node.daemon.signal(Signal::SIGSTOP);
                    node.paused_until = Some(now + Duration::from_millis(rng.gen_range(100..900)));
                    "pause an agent briefly"
                }
            }
            6 => {
                let node = &mut apps[rng.gen_range(0..APPS)];
                if node.busy() {
                    "skip"
                } else {
                    node.daemon.signal(Signal::SIGSTOP);
                    node.paused_until = Some(now + Duration::from_millis(rng.gen_range(100..4000)));
                    "pause an app"
                }
            }
            7 => {
                let all = &mut agents;
                let node = if rng.gen_bool(0.7) { &mut apps[rng.gen_range(0..APPS)] } else { &mut all[rng.gen_range(0..AGENTS)] };
                target = node.daemon.name().to_string();
                if node.busy() {
                    "skip"
                } else {
                    node.proxies.iter().for_each(|p| p.set_forwarding(false));
                    node.cut_until = Some(now + Duration::from_millis(rng.gen_range(200..3000)));
                    "cut a daemon's links"
                }
            }
            8 => {
                let node = &mut apps[rng.gen_range(0..APPS)];
                node.proxies.iter().for_each(|p| p.drop_all());
                "drop an app's connections"
            }
            9 => {
                let node = &mut apps[rng.gen_range(0..APPS)];
                if node.busy() {
                    "skip"
                } else {
                    node.daemon.kill9();
                    node.dead_until = Some(now + Duration::from_millis(rng.gen_range(0..1500)));
                    "kill -9 an app"
                }
            }
            _ => "skip",
        };
        *counts.entry(what).or_default() += 1;
        if what != "skip" {
            timeline.push(format!("{} {what} {target}", monotonic_us()));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
    }

    // Faults stop: heal everything, then publish once more and time convergence.
    let now = Instant::now();
    if let Some(done) = in_flight.take() {
        agents.iter_mut().chain(apps.iter_mut()).for_each(|node| node.heal(now, true));
        acknowledged.extend(done.await.unwrap());
    }
    agents.iter_mut().chain(apps.iter_mut()).for_each(|node| node.heal(now, true));
    if let Some((i, _)) = server_down {
        zk.start(i);
    }
    zk.wait_all_serving();
    let final_bytes = format!("final version seed {seed}\n").into_bytes();
    submitted.lock().unwrap().insert(final_bytes.clone());
    let healed = Instant::now();
    let final_version = publish_ok(&hosts, &final_bytes).await;
    acknowledged.push(final_version.clone());
    for node in &apps {
        wait_on_disk(&node.daemon, &final_bytes, Duration::from_secs(60)).await;
    }
    let converged = healed.elapsed();
    let (violations, reads) = observer.finish();

    eprintln!("chaos: actions {counts:?}");
    eprintln!(
        "figures: chaos {secs}s seed {seed}: {} publishes acknowledged, {reads} file reads checked; all {APPS} apps converged {converged:?} after healing",
        acknowledged.len()
    );
    assert!(violations.is_empty(), "invariants broken (seed {seed}):\n{}", violations.join("\n"));

    let client = zk_client(&hosts).await;
    let present = versions(&client).await;
    for v in &acknowledged {
        assert!(present.contains(v), "acknowledged {v} is missing (seed {seed})");
    }
    let intervals: Vec<(String, Vec<(u64, u64)>)> = agents
        .iter()
        .zip(&deaths)
        .map(|(a, d)| (a.daemon.name().to_string(), leadership_intervals(&a.daemon.log(), d)))
        .collect();
    let named: Vec<(&str, Vec<(u64, u64)>)> = intervals.iter().map(|(n, iv)| (n.as_str(), iv.clone())).collect();
    if std::panic::catch_unwind(|| assert_one_leader_at_a_time(&named)).is_err() {
        eprintln!("chaos: timeline (mono_us action):\n{}", timeline.join("\n"));
        panic!("two leaders at once (seed {seed}); see the timeline above and the agents' logs");
    }
    // The file is renamed into place before the status node is written: wait for the report.
    for node in &apps {
        let s = wait_status(&client, node.daemon.name(), "ok", Some(&final_version)).await;
        assert_eq!(s["version"], final_version.as_str(), "{s}");
    }
}
