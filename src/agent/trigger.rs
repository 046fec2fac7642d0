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
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The command word the protocol starts with.
const ADD: &[u8] = b"add|";
/// How long a sender may take to send its data.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may stay silent before its first byte. Real senders write at once;
/// without this bound, `max_connections` idle connections would hold every slot for the whole
/// `READ_TIMEOUT` while real triggers wait in the backlog behind them.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long we wait for the leader's answer before closing.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// The kernel's queue of connections not yet accepted. Beyond `max_connections` we stop
/// accepting, and bursts of fire-and-forget senders (who write and close without reading)
/// wait here with their data instead of being accepted and dropped; the kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;
/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The listener's settings.
#[derive(Debug, Clone)]
pub struct TriggerSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The app trigger data becomes a version of.
    pub app: String,
    /// How many connections at once; more wait in the kernel's listen backlog.
    pub max_connections: usize,
    /// When set, messages must be `add:<token>|<data>`.
    pub token: Option<String>,
}

/// Binds like `TcpListener::bind` (SO_REUSEADDR, so a restart does not wait for TIME_WAIT),
/// with an explicit backlog that holds a burst of senders while every slot is busy.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts trigger connections until `shutdown`; binding is retried if the port is busy.
///
/// A connection is accepted only once a slot is free: an accepted connection may already hold
/// the sender's data, and a sender that does not read the answer could not tell if we dropped
/// it. While every slot is busy, new connections wait in the kernel's backlog.
pub async fn run(settings: TriggerSettings, layout: Layout, session: SessionHandle, local: crate::agent::LocalIntake, shutdown: CancellationToken) {
    let listener = loop {
        match listen(settings.listen) {
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
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // the semaphore is never closed
            },
        };
        if slots.available_permits() == 0 {
            tracing::debug!("all {} trigger slots busy; new connections wait in the backlog", settings.max_connections);
        }
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("trigger accept failed: {e}; retrying in {ACCEPT_ERROR_PAUSE:?}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let (app, layout, session, token, local) = (settings.app.clone(), layout.clone(), session.clone(), settings.token.clone(), local.clone());
        tokio::spawn(async move {
            let _permit = permit;
            handle(stream, peer, &app, token.as_deref(), &layout, session, &local).await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: &str,
    token: Option<&str>,
    layout: &Layout,
    session: SessionHandle,
    local: &crate::agent::LocalIntake,
) {
    let reply = match receive(&mut stream, token).await {
        Err(Refusal::Silent) => {
            tracing::warn!(%peer, "trigger connection closed: it sent nothing within {FIRST_BYTE_TIMEOUT:?}");
            return;
        }
        Err(Refusal::Bad(reason)) => {
            tracing::warn!(%peer, "trigger refused: {reason}");
            format!("rejected: {reason}\n")
        }
        Ok(data) => match queue(&data, peer, app, layout, session, local).await {
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

/// Why a connection's message was not taken.
enum Refusal {
    /// Nothing arrived within `FIRST_BYTE_TIMEOUT`: closed without an answer.
    Silent,
    /// Malformed, too large, too slow or unreadable: answered `rejected: <reason>`.
    Bad(String),
}

/// Reads `add|<data>` until the sender closes, refusing anything malformed, too large or too
/// slow, and closing connections that stay silent (see `FIRST_BYTE_TIMEOUT`).
async fn receive(stream: &mut TcpStream, token: Option<&str>) -> Result<Vec<u8>, Refusal> {
    let limit = (ADD.len() + token.map_or(0, |t| t.len() + 1) + MAX_NODE_BYTES + 1) as u64;
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    let mut first = [0u8; 1];
    let n = match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.read(&mut first)).await {
        Err(_) => return Err(Refusal::Silent),
        Ok(Err(e)) => return Err(Refusal::Bad(format!("read failed: {e}"))),
        Ok(Ok(n)) => n,
    };
    let mut buf = first[..n].to_vec();
    if n > 0 {
        let read = tokio::time::timeout_at(deadline, (&mut *stream).take(limit - 1).read_to_end(&mut buf)).await;
        match read {
            Err(_) => return Err(Refusal::Bad(format!("sender did not finish within {READ_TIMEOUT:?}"))),
            Ok(Err(e)) => return Err(Refusal::Bad(format!("read failed: {e}"))),
            Ok(Ok(_)) => {}
        }
    }
    parse_message(&buf, token).map(<[u8]>::to_vec).map_err(|e| Refusal::Bad(e.to_string()))
}

/// The data of a complete trigger message, or why it is refused: `add|<data>`, or with a
/// token configured `add:<token>|<data>`. Pure, so the protocol can be fuzzed without sockets.
pub fn parse_message<'a>(buf: &'a [u8], token: Option<&str>) -> Result<&'a [u8], BadMessage> {
    let data = match token {
        None => buf.strip_prefix(ADD).ok_or(BadMessage::NotAdd)?,
        Some(expected) => {
            let rest = buf.strip_prefix(b"add:").ok_or(BadMessage::NoToken)?;
            let bar = rest.iter().position(|&b| b == b'|').ok_or(BadMessage::NoBar)?;
            if !constant_time_eq(&rest[..bar], expected.as_bytes()) {
                return Err(BadMessage::WrongToken);
            }
            &rest[bar + 1..]
        }
    };
    crate::model::content::check_size(data.len())?;
    Ok(data)
}

/// Why a trigger message is refused; the sender is answered `rejected: <this>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadMessage {
    /// Not the `add|` command.
    #[error("expected `add|<data>`")]
    NotAdd,
    /// This listener requires a token, and the message has none.
    #[error("expected `add:<token>|<data>` (this listener requires a token)")]
    NoToken,
    /// A token without the `|` that ends it.
    #[error("expected `add:<token>|<data>`")]
    NoBar,
    /// Not this listener's token.
    #[error("wrong token")]
    WrongToken,
    /// The data is over one node's limit.
    #[error(transparent)]
    TooLarge(#[from] crate::model::content::TooLarge),
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
        assert!(parse_message(b"del|x", None).unwrap_err().to_string().contains("expected `add|<data>`"));
        let mut big = b"add|".to_vec();
        big.extend(std::iter::repeat(b'x').take(MAX_NODE_BYTES + 1));
        assert!(parse_message(&big, None).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn with_a_token_only_messages_carrying_it_are_accepted() {
        assert_eq!(parse_message(b"add:s3cret|data", Some("s3cret")).unwrap(), b"data");
        assert_eq!(parse_message(b"add:wrong|data", Some("s3cret")).unwrap_err(), BadMessage::WrongToken);
        assert!(parse_message(b"add|data", Some("s3cret")).unwrap_err().to_string().contains("requires a token"));
        assert!(parse_message(b"add:s3cret", Some("s3cret")).is_err());
    }
}

async fn queue(
    data: &[u8],
    peer: SocketAddr,
    app: &str,
    layout: &Layout,
    mut session: SessionHandle,
    local: &crate::agent::LocalIntake,
) -> Result<request::Outcome, String> {
    let header = request::header_for(app, &format!("trigger@{peer}"), Some(format!("legacy trigger from {peer}")), "trigger", data)?;
    // On the leading agent the payload goes to the leader in-process: no request node.
    if let Some(tx) = local.sender() {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if tx.send(crate::agent::LocalPublish { header: header.clone(), data: data.to_vec(), reply }).await.is_ok() {
            match tokio::time::timeout(OUTCOME_TIMEOUT, answer).await {
                Ok(Ok(outcome)) => return Ok(outcome),
                Err(_) => return Err(format!("no leading agent answered within {OUTCOME_TIMEOUT:?}")),
                // Leadership ended before the answer: queue a request node for whoever leads
                // next (content dedupe answers it if the version was made meanwhile).
                Ok(Err(_)) => {}
            }
        }
    }
    let (_, client) = match tokio::time::timeout(OUTCOME_TIMEOUT, session.connected()).await {
        Ok(Some(c)) => c,
        _ => return Err("ZooKeeper is not reachable".into()),
    };
    let (req, _) = crate::zk::request::submit(&client, layout, &header, data).await.map_err(|e| format!("cannot queue request: {e}"))?;
    crate::zk::request::await_outcome(&client, layout, &req, OUTCOME_TIMEOUT).await.map_err(|e| e.to_string())
}
