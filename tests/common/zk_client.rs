//! ZooKeeper client helpers.

#![allow(unused_imports)]

use super::*;

pub fn open_acl_persistent() -> zookeeper_client::CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

/// A client with a 4 s session. Retries for up to 20 s (e.g. while an ensemble elects).
pub async fn zk_client(connect: &str) -> Client {
    zk_client_with_timeout(connect, Duration::from_secs(4)).await
}

/// A client with the given session timeout (the servers accept 0.4 s to 20 s).
pub async fn zk_client_with_timeout(connect: &str, session_timeout: Duration) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connector()
            .with_session_timeout(session_timeout)
            .connect(connect)
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("[harness] connect to {connect}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect to ZooKeeper at {connect}: {e}"),
        }
    }
}

pub(crate) fn transient(e: &ZkError) -> bool {
    matches!(e, ZkError::ConnectionLoss | ZkError::Timeout)
}

/// Retries an idempotent operation on connection loss for up to 15 s.
pub(crate) async fn retry_idempotent<T, F, Fut>(what: &str, mut op: F) -> Result<T, ZkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ZkError>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match op().await {
            Err(e) if transient(&e) && Instant::now() < deadline => {
                eprintln!("[harness] {what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

/// `mkdir -p` with persistent, open-ACL nodes. Existing nodes are fine.
pub async fn create_all(client: &Client, path: &str) {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return;
    }
    let opts = open_acl_persistent();
    retry_idempotent(&format!("mkdir {path}"), || client.mkdir(path, &opts))
        .await
        .unwrap_or_else(|e| panic!("create_all({path}): {e}"));
}

/// Creates a PERSISTENT_SEQUENTIAL node `<path_prefix><10 digits>` (parents must exist) and
/// returns its full path, e.g. `create_seq(c, "/applications/app/conf-", b"..")`.
pub async fn create_seq(client: &Client, path_prefix: &str, data: &[u8]) -> String {
    let opts = CreateMode::PersistentSequential.with_acls(Acls::anyone_all());
    let (_, seq) = client
        .create(path_prefix, data, &opts)
        .await
        .unwrap_or_else(|e| panic!("create_seq({path_prefix}): {e}"));
    format!("{path_prefix}{seq}")
}

/// Creates a persistent node with `data`; `false` if it already existed (data untouched).
pub async fn create(client: &Client, path: &str, data: &[u8]) -> bool {
    match client.create(path, data, &open_acl_persistent()).await {
        Ok(_) => true,
        Err(ZkError::NodeExists) => false,
        Err(e) => panic!("create({path}): {e}"),
    }
}

/// Sets the data of an existing node (any version).
pub async fn set(client: &Client, path: &str, data: &[u8]) {
    client
        .set_data(path, data, None)
        .await
        .unwrap_or_else(|e| panic!("set({path}): {e}"));
}

/// The numeric suffix of a sequential node name (`conf-0000000012` -> 12).
pub fn seq_of(name: &str) -> Option<u64> {
    let name = name.rsplit('/').next().unwrap_or(name);
    let digits = name.len()
        - name
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
    name[digits..].parse().ok()
}

/// Children of `path` (names, not paths), sorted by numeric suffix, then by name.
/// Empty if `path` does not exist.
pub async fn children_sorted(client: &Client, path: &str) -> Vec<String> {
    let mut kids =
        match retry_idempotent(&format!("list {path}"), || client.list_children(path)).await {
            Ok(k) => k,
            Err(ZkError::NoNode) => Vec::new(),
            Err(e) => panic!("children_sorted({path}): {e}"),
        };
    kids.sort_by(|a, b| (seq_of(a), a).cmp(&(seq_of(b), b)));
    kids
}

/// The data of `path`, `None` if it does not exist.
pub async fn get(client: &Client, path: &str) -> Option<Vec<u8>> {
    match retry_idempotent(&format!("get {path}"), || client.get_data(path)).await {
        Ok((data, _)) => Some(data),
        Err(ZkError::NoNode) => None,
        Err(e) => panic!("get({path}): {e}"),
    }
}

/// Deletes `path` (any version); `false` if it did not exist.
pub async fn delete(client: &Client, path: &str) -> bool {
    let mut lost = false;
    loop {
        match client.delete(path, None).await {
            Ok(()) => return true,
            // After a connection loss the delete may have gone through.
            Err(ZkError::NoNode) => return lost,
            Err(e) if transient(&e) => {
                lost = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("delete({path}): {e}"),
        }
    }
}

/// Deletes `path` and everything below it. Missing is fine.
pub async fn delete_all(client: &Client, path: &str) {
    let mut stack = vec![path.to_string()];
    let mut order = Vec::new();
    while let Some(p) = stack.pop() {
        for k in children_sorted(client, &p).await {
            stack.push(if p == "/" {
                format!("/{k}")
            } else {
                format!("{p}/{k}")
            });
        }
        order.push(p);
    }
    for p in order.iter().rev() {
        delete(client, p).await;
    }
}
