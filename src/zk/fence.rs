//! The leader's fence: every leader write is a multi-op that first checks our own election
//! node and its version, so an agent that lost its session can never write as leader.

use zookeeper_client as zk;

/// Why leader work stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Our election node failed the fence check: we are not the leader any more.
    #[error("fenced: our election node {0} is gone or changed; not writing as leader")]
    Fenced(String),
    /// ZooKeeper failed.
    #[error("ZooKeeper: {0}")]
    Zk(#[from] zk::Error),
}

impl From<zk::CheckWriteError> for AgentError {
    fn from(e: zk::CheckWriteError) -> Self {
        match e {
            zk::CheckWriteError::CheckFailed { .. } => AgentError::Fenced(String::new()),
            zk::CheckWriteError::RequestFailed { source } | zk::CheckWriteError::OperationFailed { source, .. } => {
                AgentError::Zk(source)
            }
        }
    }
}

/// The leader's fence: the election node every write checks.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    /// Our election node.
    node: String,
    /// Its data version when leadership was confirmed.
    version: i32,
}

impl Fence {
    /// The fence of a leader whose election node `node` had data version `version` when its
    /// leadership was confirmed.
    pub(crate) fn new(node: String, version: i32) -> Fence {
        Fence { node, version }
    }

    /// Our election node.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// A multi-op that carries the fence check first.
    pub(crate) fn writer<'a>(&self, client: &'a zk::Client) -> Result<zk::CheckWriter<'a>, AgentError> {
        Ok(client.new_check_writer(&self.node, Some(self.version))?)
    }

    /// Commits a fenced multi-op; a failed fence check says which node.
    pub(crate) async fn commit(&self, writer: zk::CheckWriter<'_>) -> Result<Vec<zk::MultiWriteResult>, AgentError> {
        writer.commit().await.map_err(|e| match AgentError::from(e) {
            AgentError::Fenced(_) => AgentError::Fenced(self.node.clone()),
            other => other,
        })
    }
}
