//! The optional HTTP listener (`[http] listen`): `/healthz` for load balancers and monitoring
//! checks, `/metrics` for Prometheus. Read-only and unauthenticated, so loopback is the
//! expected address; anything else is logged as a warning. A port that cannot be bound is
//! logged and retried: monitoring is never a reason for the daemon to stop applying configs.

use crate::app::skeleton::AppView;
use crate::backoff::Backoff;
use crate::metrics::{self, Metrics};
use crate::zk::session::{Phase, SessionHandle};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The current followers' views; replaced when a reload adds or removes apps.
pub type AppViews = watch::Receiver<Vec<watch::Receiver<AppView>>>;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Encoded for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Its phase decides the first half of `/healthz`.
    pub session: SessionHandle,
    /// Each app's view decides the second half of `/healthz`.
    pub apps: AppViews,
}

/// Serves `/healthz` and `/metrics` on `listen` until `shutdown`. When the address cannot be
/// bound (port taken, address not on this host) it logs an error and tries again with backoff.
pub async fn run(listen: SocketAddr, state: HttpState, shutdown: CancellationToken) {
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "[http] listen is not a loopback address: /healthz and /metrics have no authentication and are reachable from the network");
    }
    let app = router(state);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let bound = tokio::select! {
            _ = shutdown.cancelled() => return,
            b = tokio::net::TcpListener::bind(listen) => b,
        };
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(%listen, "cannot listen for /healthz and /metrics on {listen}: {e}; retrying in {delay:?} (is another process using the port? change [http] listen and reload)");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        tracing::info!(%listen, "HTTP listening: /healthz, /metrics");
        let stop = shutdown.clone();
        match axum::serve(listener, app.clone()).with_graceful_shutdown(async move { stop.cancelled().await }).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(%listen, "HTTP listener failed: {e}; listening again in 1s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// The routes, for [`run`] and for tests.
pub fn router(state: HttpState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics_handler)).with_state(state)
}

/// `/healthz`: 200 `ok` when the daemon is doing its job, else 503 with one line saying why.
///
/// Healthy means both:
/// - the ZooKeeper session is connected (else `zookeeper: disconnected`, or `connecting`,
///   `expired`: without a session the host cannot learn of new versions);
/// - every app is at the newest version or on its way there. Precisely, per app, after its
///   follower's first look at ZooKeeper (before it: `app X: not yet synced with ZooKeeper`):
///   no published version is newer than the applied one (no versions at all counts), or an
///   apply is running, or the last apply failed writing the file and is being retried with
///   backoff. A version whose check or reload failed is not retried until a newer one is
///   published, so while it stays the newest the app is unhealthy:
///   `app nginxconf: check-failed conf-0000000012` (also `reload-failed`, and `error` for a
///   version refused for its size or hash).
///
/// Problems of several apps are joined with `; ` on the one line.
async fn healthz(State(state): State<HttpState>) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match health(&state) {
        Ok(()) => {
            // Healthy, but said: a freeze holds these apps.
            let apps = state.apps.borrow().clone();
            let frozen: Vec<String> = apps.iter().filter_map(|v| v.borrow().frozen().map(|f| format!("app {}: {f}", v.borrow().name))).collect();
            let body = if frozen.is_empty() { "ok\n".to_string() } else { format!("ok; {}\n", frozen.join("; ")) };
            (StatusCode::OK, text, body)
        }
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, text, format!("{why}\n")),
    }
}

/// The decision behind [`healthz`].
pub fn health(state: &HttpState) -> Result<(), String> {
    let phase = state.session.phase();
    if phase != Phase::Connected {
        return Err(match state.session.problem() {
            Some(why) => format!("zookeeper: {phase}: {why}"),
            None => format!("zookeeper: {phase}"),
        });
    }
    let apps = state.apps.borrow().clone();
    let problems: Vec<String> = apps.iter().filter_map(|v| v.borrow().health().err()).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `/metrics`: every metric in the OpenMetrics text format.
async fn metrics_handler(State(state): State<HttpState>) -> ([(header::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.encode())
}
