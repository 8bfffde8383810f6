//! Ingest: the HTTP server. Webhooks (TaskRouter form callbacks, Event Streams,
//! Conversations) are verified and answered only once durably in the queue; the admin
//! side (wallboard, SSE, `/api`, `/metrics`, `/readyz`) is never public by default.
//!
//! Routing is axum, from one route table ([`routes`]); connections are served by
//! hyper-util's accept loop here ([`serve`]), which axum's own `serve` cannot replace:
//! it has no connection limit, header read timeout or shutdown grace period.
//!
//! `POST /ingress` (TaskRouter Event Callbacks) and `POST /conversations`
//! (Conversations post-event webhooks) answer 204 only after the callback is durably in
//! the queue. Any other answer (403, 400, 413, 408, 503) means nothing was written.
//! Every response body that is not 204 (or a 200 of the admin side) is JSON
//! `{"error": "..."}` saying why.

mod admin;
mod reports;
pub mod signature;
mod webhooks;

use crate::apply::store::Store;
use crate::config::{Config, Secret, Sla};
use crate::metrics::Metrics;
use crate::queue::Queue;
use axum::extract::ConnectInfo;
use axum::http::header::ALLOW;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

/// What ingest takes from the configuration, and nothing more.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `server.public_url` without a trailing slash: signatures are checked against it
    /// plus the request's path and query.
    pub public_url: String,
    /// When false, any request is accepted unsigned (local experiments only).
    pub verify_signatures: bool,
    /// The key of `X-Twilio-Signature`.
    pub auth_token: Secret,
    /// Larger bodies are refused with 413, before anything is queued.
    pub max_body_bytes: usize,
    /// A client has this long to send its headers, and again its body (else 408).
    pub read_timeout: Duration,
    /// When set, the admin side requires it (Bearer, Basic password or `?token=`);
    /// when not, the admin side answers local clients only.
    pub admin_token: Option<Secret>,
    /// For `/api/summary` when the live summary is stale.
    pub sla: Sla,
    /// For `/api/agents` and `/api/reports/intervals`.
    pub report: crate::publish::report::Settings,
    /// For `/api/wallboard`: the wallboard's alert thresholds.
    pub wallboard: crate::config::Wallboard,
}

impl From<&Config> for Settings {
    fn from(cfg: &Config) -> Self {
        Settings {
            public_url: cfg.server.public_url.trim_end_matches('/').to_owned(),
            verify_signatures: cfg.server.verify_signatures,
            auth_token: cfg.twilio.auth_token.clone(),
            max_body_bytes: cfg.server.max_body_bytes,
            read_timeout: Duration::from_secs(cfg.server.read_timeout_secs),
            admin_token: (!cfg.server.admin_token.is_empty())
                .then(|| cfg.server.admin_token.clone()),
            sla: cfg.sla.clone(),
            report: crate::publish::report::Settings::from_config(cfg),
            wallboard: cfg.wallboard.clone(),
        }
    }
}

/// What the handlers share.
pub struct AppState {
    pub queue: Arc<Queue>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub hub: Arc<crate::publish::live::Hub>,
    /// Cancelled when the server stops accepting: ends long-lived (SSE) responses.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    pub fn new(
        settings: Settings,
        queue: Arc<Queue>,
        store: Store,
        metrics: Arc<Metrics>,
        hub: Arc<crate::publish::live::Hub>,
    ) -> Self {
        AppState {
            queue,
            store,
            metrics,
            settings,
            hub,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }
}

type Shared = Arc<AppState>;

/// What a listener serves: webhooks, operations endpoints, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Webhooks and `/healthz` only (the admin endpoints have their own listener).
    Public,
    /// `/readyz`, `/metrics`, `/api/*`, `/dashboard*` and `/healthz`.
    Admin,
    /// Everything on one listener: only when `admin_token` guards the admin side and
    /// there is no admin listener.
    Both,
}

/// Which side of the service a route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Webhook,
    /// Behind the admin access rules ([`admin::guard`]).
    Admin,
    /// On every listener, unguarded.
    Open,
}

impl Role {
    fn serves(self, side: Side) -> bool {
        matches!(
            (self, side),
            (_, Side::Open)
                | (Role::Both, _)
                | (Role::Public, Side::Webhook)
                | (Role::Admin, Side::Admin)
        )
    }
}

/// Every route, listed once: path, side, and the one method it answers.
fn routes() -> [(&'static str, Side, MethodRouter<Shared>); 12] {
    [
        ("/ingress", Side::Webhook, post(webhooks::taskrouter)),
        (
            "/conversations",
            Side::Webhook,
            post(webhooks::conversations),
        ),
        (
            "/ingress/event-streams",
            Side::Webhook,
            post(webhooks::event_streams),
        ),
        ("/healthz", Side::Open, get(healthz)),
        ("/readyz", Side::Admin, get(admin::readyz)),
        ("/metrics", Side::Admin, get(admin::metrics)),
        ("/api/summary", Side::Admin, get(admin::summary)),
        ("/api/agents", Side::Admin, get(reports::agents)),
        (
            "/api/reports/intervals",
            Side::Admin,
            get(reports::intervals),
        ),
        ("/api/wallboard", Side::Admin, get(reports::wallboard)),
        ("/dashboard", Side::Admin, get(admin::dashboard)),
        ("/dashboard/events", Side::Admin, get(admin::events)),
    ]
}

/// The router for one listener: the routes its role serves; 405 for another method on
/// a known path, 404 for any other path. Admin routes, and unknown paths under the
/// admin prefixes, are checked by the access rules first (so a stranger gets 403/401,
/// never a hint from 405/404).
pub fn router(role: Role, state: Shared) -> Router {
    let mut router = Router::new();
    for (path, side, method) in routes() {
        if !role.serves(side) {
            continue;
        }
        // axum answers HEAD with the GET handler; this service never did, so HEAD is a
        // 405 like any other method not listed.
        let method = method.head(method_not_allowed).fallback(method_not_allowed);
        let method = if side == Side::Admin {
            method.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                admin::guard,
            ))
        } else {
            method
        };
        router = router.route(path, method);
    }
    let router = if role.serves(Side::Admin) {
        router.fallback(admin::not_found)
    } else {
        router.fallback(not_found)
    };
    router.with_state(state)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Serves HTTP on `listener` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests up to `grace` to finish; open SSE streams end at once. At most
/// `max_connections` are open at once (further clients wait in the kernel's accept
/// queue); clients slower than the read timeout are cut off.
pub async fn serve(
    listener: TcpListener,
    role: Role,
    state: Arc<AppState>,
    max_connections: usize,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let app = router(role, state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => { backoff = Duration::from_millis(10); s }
                Err(e) => {
                    // Usually EMFILE: wait for connections to close rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            // The admin access rules need the peer (loopback or not).
            req.extensions_mut().insert(ConnectInfo(peer));
            // A Router is always ready (its poll_ready is a constant Ready).
            let answer = app.clone().call(req);
            async move {
                let mut r = answer.await?;
                // axum adds `Allow` to any answer from a method fallback (405, and the
                // access rules' 403/401 in front of it); this service never sent it.
                r.headers_mut().remove(ALLOW);
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    state.shutdown.cancel();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
    }
}
