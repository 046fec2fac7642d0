//! The legacy trigger: scripts that already exist open a TCP connection, send `add|<data>` and
//! close their side. Any agent accepts it and queues it for the leader, who publishes it as a
//! version of the configured default app. The outcome is written back before we close.

use crate::model::layout::Layout;
use crate::model::content::MAX_NODE_BYTES;
use crate::model::request;
use crate::zk::session::SessionHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The command word the protocol starts with.
const ADD: &[u8] = b"add|";
/// How long a sender may take to send its data.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long we wait for the leader's answer before closing.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(15);

/// The listener's settings.
#[derive(Debug, Clone)]
pub struct TriggerSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The app trigger data becomes a version of.
    pub app: String,
    /// How many connections at once.
    pub max_connections: usize,
    /// When set, messages must be `add:<token>|<data>`.
    pub token: Option<String>,
}

/// Accepts trigger connections until `shutdown`; binding is retried if the port is busy.
pub async fn run(settings: TriggerSettings, layout: Layout, session: SessionHandle, shutdown: CancellationToken) {
    let listener = loop {
        match TcpListener::bind(settings.listen).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::error!(listen = %settings.listen, "cannot listen for legacy triggers: {e}; retrying in 5s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    tracing::info!(listen = %settings.listen, app = %settings.app, "legacy trigger listening");
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => { tracing::warn!("trigger accept failed: {e}"); continue; }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "trigger connection refused: {} connections already open", settings.max_connections);
            continue;
        };
        let (app, layout, session, token) = (settings.app.clone(), layout.clone(), session.clone(), settings.token.clone());
        tokio::spawn(async move {
            let _permit = permit;
            handle(stream, peer, &app, token.as_deref(), &layout, session).await;
        });
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, app: &str, token: Option<&str>, layout: &Layout, session: SessionHandle) {
    let reply = match receive(&mut stream, token).await {
        Err(reason) => {
            tracing::warn!(%peer, "trigger refused: {reason}");
            format!("rejected: {reason}\n")
        }
        Ok(data) => match queue(&data, peer, app, layout, session).await {
            Ok(outcome) => {
                tracing::info!(%peer, %outcome, "trigger handled");
                format!("{outcome}\n")
            }
            Err(reason) => {
                tracing::warn!(%peer, "trigger not published: {reason}");
                format!("error: {reason}\n")
            }
        },
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads `add|<data>` until the sender closes, refusing anything malformed or too large.
async fn receive(stream: &mut TcpStream, token: Option<&str>) -> Result<Vec<u8>, String> {
    let limit = (ADD.len() + token.map_or(0, |t| t.len() + 1) + MAX_NODE_BYTES + 1) as u64;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(READ_TIMEOUT, (&mut *stream).take(limit).read_to_end(&mut buf)).await;
    match read {
        Err(_) => return Err(format!("sender did not finish within {READ_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("read failed: {e}")),
        Ok(Ok(_)) => {}
    }
    parse_message(&buf, token).map(<[u8]>::to_vec)
}

/// The data of a complete trigger message, or why it is refused: `add|<data>`, or with a
/// token configured `add:<token>|<data>`. Pure, so the protocol can be fuzzed without sockets.
pub fn parse_message<'a>(buf: &'a [u8], token: Option<&str>) -> Result<&'a [u8], String> {
    let data = match token {
        None => buf.strip_prefix(ADD).ok_or("expected `add|<data>`")?,
        Some(expected) => {
            let rest = buf.strip_prefix(b"add:").ok_or("expected `add:<token>|<data>` (this listener requires a token)")?;
            let bar = rest.iter().position(|&b| b == b'|').ok_or("expected `add:<token>|<data>`")?;
            if !constant_time_eq(&rest[..bar], expected.as_bytes()) {
                return Err("wrong token".into());
            }
            &rest[bar + 1..]
        }
    };
    crate::model::content::check_size(data.len())?;
    Ok(data)
}

/// Compares without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_add_then_raw_bytes_within_the_limit() {
        assert_eq!(parse_message(b"add|x|y\n", None).unwrap(), b"x|y\n");
        assert_eq!(parse_message(b"add|", None).unwrap(), b"");
        assert!(parse_message(b"del|x", None).unwrap_err().contains("expected `add|<data>`"));
        let mut big = b"add|".to_vec();
        big.extend(std::iter::repeat(b'x').take(MAX_NODE_BYTES + 1));
        assert!(parse_message(&big, None).unwrap_err().contains("limit"));
    }

    #[test]
    fn with_a_token_only_messages_carrying_it_are_accepted() {
        assert_eq!(parse_message(b"add:s3cret|data", Some("s3cret")).unwrap(), b"data");
        assert_eq!(parse_message(b"add:wrong|data", Some("s3cret")).unwrap_err(), "wrong token");
        assert!(parse_message(b"add|data", Some("s3cret")).unwrap_err().contains("requires a token"));
        assert!(parse_message(b"add:s3cret", Some("s3cret")).is_err());
    }
}

async fn queue(data: &[u8], peer: SocketAddr, app: &str, layout: &Layout, mut session: SessionHandle) -> Result<request::Outcome, String> {
    let header = request::header_for(app, &format!("trigger@{peer}"), Some(format!("legacy trigger from {peer}")), "trigger", data)?;
    let client = match tokio::time::timeout(OUTCOME_TIMEOUT, session.connected()).await {
        Ok(Some((_, c))) => c,
        _ => return Err("ZooKeeper is not reachable".into()),
    };
    let req = crate::zk::request::submit(&client, layout, &header, data).await.map_err(|e| format!("cannot queue request: {e}"))?;
    crate::zk::request::await_outcome(&client, layout, &req, OUTCOME_TIMEOUT).await.map_err(|e| e.to_string())
}
