//! The `[agent]` section: election, pruning, and the legacy trigger.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The `[agent]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Parent of the agents' EPHEMERAL_SEQUENTIAL election nodes.
    #[serde(default = "default_election_path")]
    pub election_path: String,
    /// How many agents lead at once (the smallest sequence numbers).
    #[serde(default = "default_leaders")]
    pub leaders: u32,
    /// Versions kept per application; older ones are pruned by the leader.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: u32,
    /// Address of the legacy `add|<data>` listener; absent means off.
    #[serde(default)]
    pub trigger_listen: Option<String>,
    /// Application that legacy trigger data becomes a version of.
    #[serde(default)]
    pub trigger_app: Option<String>,
    /// Legacy trigger connections handled at once; more wait, not yet accepted, in the listen
    /// backlog, so a sender that does not read the answer never has its data dropped.
    #[serde(default = "default_trigger_max_connections")]
    pub trigger_max_connections: usize,
    /// File holding a shared token (mode 0600); when set, triggers must send `add:<token>|<data>`.
    #[serde(default)]
    pub trigger_token_file: Option<PathBuf>,
    /// How long an answered publish's outcome stays for its publisher to read. Publishers
    /// read and leave it (deleting it would be a second write on every publish); the leader
    /// removes older ones in one sweep a minute.
    #[serde(default = "default_outcome_ttl", with = "humantime_serde")]
    pub outcome_ttl: Duration,
    /// Gates by name: a command the leader runs when a canary rollout's soak has passed, before
    /// it promotes; a non-zero exit aborts the rollout. A publish names one (`--gate NAME`); a
    /// gate named after an app runs for every canary rollout of that app. Publishers only name
    /// gates, never send commands: what runs on the agent's host is the agent config's.
    #[serde(default)]
    pub gates: std::collections::BTreeMap<String, crate::config::HookCommand>,
    /// How long a gate may run before it is killed and the rollout aborted.
    #[serde(default = "default_gate_timeout", with = "humantime_serde")]
    pub gate_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            election_path: default_election_path(),
            leaders: default_leaders(),
            keep_versions: default_keep_versions(),
            trigger_listen: None,
            trigger_app: None,
            trigger_max_connections: default_trigger_max_connections(),
            trigger_token_file: None,
            outcome_ttl: default_outcome_ttl(),
            gates: Default::default(),
            gate_timeout: default_gate_timeout(),
        }
    }
}

fn default_election_path() -> String {
    "/roles/workers".into()
}

fn default_leaders() -> u32 {
    1
}

fn default_keep_versions() -> u32 {
    100
}

fn default_trigger_max_connections() -> usize {
    64
}

fn default_gate_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_outcome_ttl() -> Duration {
    Duration::from_secs(300)
}
