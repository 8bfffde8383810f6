//! HTTP ingress and operations endpoints (hyper).
//!
//! `POST /ingress` (TaskRouter Event Callbacks) and `POST /conversations`
//! (Conversations post-event webhooks) answer 204 only after the callback is durably in
//! the queue. Any
//! other answer (403, 400, 413, 408, 503) means nothing was written. Every response
//! body that is not 204 is JSON `{"error": "..."}` saying why.

use crate::apply::store::Store;
use crate::config::{Config, Secret};
use crate::event::sources;
use crate::event::{self, QueuedCallback};
use crate::ingest::signature;
use crate::metrics::Metrics;
use crate::queue::{Queue, QueueError};
use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the handlers share.
pub struct AppState {
    pub queue: Arc<Queue>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub verify_signatures: bool,
    pub auth_token: Secret,
    /// `server.public_url` without a trailing slash.
    pub public_url: String,
    pub max_body_bytes: usize,
    pub read_timeout: Duration,
    pub sla: crate::config::Sla,
    /// When set, the admin endpoints require `Authorization: Bearer <token>`.
    pub admin_token: Option<Secret>,
    pub hub: Arc<crate::publish::live::Hub>,
    /// Cancelled when the server stops accepting: ends long-lived (SSE) responses.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    pub fn new(
        cfg: &Config,
        queue: Arc<Queue>,
        store: Store,
        metrics: Arc<Metrics>,
        hub: Arc<crate::publish::live::Hub>,
    ) -> Self {
        AppState {
            queue,
            store,
            metrics,
            verify_signatures: cfg.server.verify_signatures,
            auth_token: cfg.twilio.auth_token.clone(),
            public_url: cfg.server.public_url.trim_end_matches('/').to_owned(),
            max_body_bytes: cfg.server.max_body_bytes,
            read_timeout: Duration::from_secs(cfg.server.read_timeout_secs),
            sla: cfg.sla.clone(),
            admin_token: (!cfg.server.admin_token.is_empty())
                .then(|| cfg.server.admin_token.clone()),
            hub,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }
}

type Body = BoxBody<Bytes, std::convert::Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    respond(status, json!({ "error": msg.into() }))
}

/// Serves HTTP on `listener` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests up to `grace` to finish. At most `max_connections` are open at
/// once; clients slower than the read timeout are cut off.
pub async fn serve(
    listener: TcpListener,
    role: Role,
    state: Arc<AppState>,
    max_connections: usize,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.read_timeout)
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
        let st = state.clone();
        let svc = hyper::service::service_fn(move |req| {
            let st = st.clone();
            async move {
                Ok::<_, std::convert::Infallible>(
                    route(&st, role, peer.ip().is_loopback(), req).await,
                )
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

/// What a listener serves: webhooks, operations endpoints, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Webhooks and `/healthz` only (the admin endpoints have their own listener).
    Public,
    /// `/readyz`, `/metrics`, `/api/*` and `/healthz`.
    Admin,
    Both,
}

fn is_admin_path(path: &str) -> bool {
    path == "/readyz"
        || path == "/metrics"
        || path.starts_with("/api/")
        || path.starts_with("/dashboard")
}

/// The wallboard page, embedded in the binary.
const DASHBOARD: &str = include_str!("dashboard.html");

fn sse_frame(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Server-Sent Events for the wallboard: the history on connect, then every new summary
/// and every new history point, until the client leaves or the server shuts down.
fn sse(st: &AppState) -> Response<Body> {
    use futures_util::StreamExt;
    let history = serde_json::to_string(&st.hub.history()).unwrap_or_else(|_| "[]".into());
    let mut summaries = st.hub.latest.subscribe();
    let points = st.hub.points.subscribe();
    let stop = st.shutdown.clone();
    // The current summary right away, then changes.
    summaries.mark_changed();
    let first = futures_util::stream::once(async move { sse_frame("history", &history) });
    let updates = futures_util::stream::unfold(
        (summaries, points, stop),
        |(mut summaries, mut points, stop)| async move {
            let frame = tokio::select! {
                r = summaries.changed() => {
                    r.ok()?;
                    let latest = summaries.borrow_and_update().clone();
                    match latest.and_then(|s| serde_json::to_string(&*s).ok()) {
                        Some(json) => sse_frame("summary", &json),
                        // Nothing computed yet (e.g. just started): keep the stream open.
                        None => Bytes::from_static(b": waiting for the first summary\n\n"),
                    }
                }
                p = points.recv() => match p {
                    Ok(p) => sse_frame("point", &serde_json::to_string(&p).ok()?),
                    // A slow viewer missed points: the next summary carries on.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Bytes::from_static(b": lagged\n\n"),
                    Err(_) => return None,
                },
                _ = tokio::time::sleep(Duration::from_secs(15)) => Bytes::from_static(b": keep-alive\n\n"),
                _ = stop.cancelled() => return None,
            };
            Some((frame, (summaries, points, stop)))
        },
    );
    let body = StreamBody::new(
        first
            .chain(updates)
            .map(|b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b))),
    );
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

/// Whether a proxy says it forwarded the request (RFC 7239 `Forwarded`, or the common
/// `X-Forwarded-For` / `X-Real-IP`).
fn forwarded(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    h.contains_key("forwarded") || h.contains_key("x-forwarded-for") || h.contains_key("x-real-ip")
}

/// Constant-time check of `Authorization: Bearer <token>`.
fn bearer_ok(req: &Request<Incoming>, token: &Secret) -> bool {
    // Browsers' EventSource cannot send headers: the wallboard passes `?token=`.
    let from_query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Bearer <token>, or Basic auth with the token as the password (any user name).
    let bearer = header
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let basic = header
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|up| up.split_once(':').map(|(_, p)| p.to_owned()));
    let Some(given) = bearer.or(basic).or(from_query) else {
        return false;
    };
    // Unequal lengths answer at once: the length is not the secret.
    subtle::ConstantTimeEq::ct_eq(given.trim().as_bytes(), token.expose().as_bytes()).into()
}

async fn route(
    st: &AppState,
    role: Role,
    loopback: bool,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path();
    let admin = is_admin_path(path);
    let webhook =
        path == "/ingress" || path == "/conversations" || path == "/ingress/event-streams";
    if (admin && role == Role::Public) || (webhook && role == Role::Admin) {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    // The admin side (business data, queue depth, error text, job names) is for this
    // machine only unless a token protects it. A proxy's request comes from loopback
    // too, so one that says it was forwarded is never local.
    let local = loopback && !forwarded(&req);
    if admin && st.admin_token.is_none() && !local {
        return error(
            StatusCode::FORBIDDEN,
            "served to local clients only; set server.admin_token to allow others",
        );
    }
    if admin {
        if let Some(token) = &st.admin_token {
            if !bearer_ok(&req, token) {
                let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
                // Basic lets a person open the wallboard in a browser (any user, token as password).
                r.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static(
                        "Basic realm=\"taskrouter-summarizer\", charset=\"UTF-8\"",
                    ),
                );
                return r;
            }
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/ingress") => ingress(st, req, Kind::TaskRouter).await,
        (&Method::POST, "/conversations") => ingress(st, req, Kind::Conversations).await,
        (&Method::POST, "/ingress/event-streams") => event_streams(st, req).await,
        (&Method::GET, "/healthz") => respond(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/readyz") => readyz(st).await,
        (&Method::GET, "/api/summary") => {
            // The live summary when it is fresh; computed on demand otherwise.
            let latest = st.hub.latest.borrow().clone();
            let fresh = latest.filter(|s| {
                chrono::DateTime::parse_from_rfc3339(&s.generated_at)
                    .is_ok_and(|t| chrono::Utc::now().signed_duration_since(t).num_seconds() < 3)
            });
            match fresh {
                Some(s) => respond(
                    StatusCode::OK,
                    serde_json::to_value(&*s).unwrap_or_default(),
                ),
                None => match crate::publish::summary::compute(
                    st.store.pool(),
                    &st.sla,
                    chrono::Utc::now(),
                )
                .await
                {
                    Ok(s) => respond(StatusCode::OK, serde_json::to_value(&s).unwrap_or_default()),
                    Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                },
            }
        }
        (&Method::GET, "/dashboard") => {
            let mut r = Response::new(full(DASHBOARD));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r.headers_mut().insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
                ),
            );
            r
        }
        (&Method::GET, "/dashboard/events") => sse(st),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(full(st.metrics.render(&st.queue.status())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, "/ingress")
        | (_, "/conversations")
        | (_, "/ingress/event-streams")
        | (_, "/healthz")
        | (_, "/readyz")
        | (_, "/metrics")
        | (_, "/api/summary")
        | (_, "/dashboard")
        | (_, "/dashboard/events") => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn readyz(st: &AppState) -> Response<Body> {
    let pg = match tokio::time::timeout(Duration::from_secs(2), st.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 2 s".to_owned()),
    };
    let q = st.queue.status();
    let ready = pg.is_ok();
    let jobs = serde_json::to_value(&*st.metrics.jobs.lock().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default();
    respond(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        json!({
            "ready": ready,
            "postgres": match &pg { Ok(()) => "ok".to_owned(), Err(e) => e.clone() },
            "queue": {"open": true, "depth": q.depth, "retrying": q.retrying,
                      "dead_letters": q.dead_letters, "oldest_age_seconds": q.oldest_age_seconds,
                      "disk_bytes": q.disk_bytes},
            "jobs": jobs,
        }),
    )
}

/// Which webhook a request carries.
#[derive(Clone, Copy)]
enum Kind {
    TaskRouter,
    Conversations,
}

/// A webhook request read whole: what every webhook route checks.
struct Received {
    signature: Option<String>,
    content_type: String,
    path_and_query: String,
    body: Bytes,
}

/// Reads a webhook's body within `max_body_bytes` and `read_timeout`; on failure, the
/// response to send (413, 408, 400, or 403 for a missing signature).
async fn receive(st: &AppState, req: Request<Incoming>) -> Result<Received, Response<Body>> {
    let m = &st.metrics;
    let too_large = || {
        m.ingress_too_large.fetch_add(1, Relaxed);
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {} bytes", st.max_body_bytes),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.max_body_bytes as u64) {
        return Err(too_large());
    }
    let signature = req
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if st.verify_signatures && signature.is_none() {
        m.ingress_bad_signature.fetch_add(1, Relaxed);
        return Err(error(
            StatusCode::FORBIDDEN,
            "missing X-Twilio-Signature header",
        ));
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let body = Limited::new(req.into_body(), st.max_body_bytes);
    let body = match tokio::time::timeout(st.read_timeout, body.collect()).await {
        Err(_) => {
            m.ingress_bad_request.fetch_add(1, Relaxed);
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time",
            ));
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            m.ingress_bad_request.fetch_add(1, Relaxed);
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read body: {e}"),
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    Ok(Received {
        signature,
        content_type,
        path_and_query,
        body,
    })
}

/// 503 when the queue cannot take what was received.
fn unavailable(st: &AppState, e: QueueError) -> Response<Body> {
    st.metrics.ingress_unavailable.fetch_add(1, Relaxed);
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    if matches!(e, QueueError::Full(_)) {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
    }
    r
}

/// Both form webhooks: same checks, same durability; they differ in what must be
/// present and in how the queue entry is tagged.
async fn ingress(st: &AppState, req: Request<Incoming>, kind: Kind) -> Response<Body> {
    let m = &st.metrics;
    let bad = |msg: String| {
        m.ingress_bad_request.fetch_add(1, Relaxed);
        error(StatusCode::BAD_REQUEST, msg)
    };
    let forbidden = |msg: &str| {
        m.ingress_bad_signature.fetch_add(1, Relaxed);
        error(StatusCode::FORBIDDEN, msg)
    };
    let Received {
        signature,
        content_type,
        path_and_query,
        body: bytes,
    } = match receive(st, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let form = content_type == "application/x-www-form-urlencoded";
    if !form {
        return bad("Content-Type must be application/x-www-form-urlencoded".into());
    }
    let params = match event::parse_form(&bytes) {
        Ok(p) => p,
        Err(e) => return bad(e.to_string()),
    };
    if st.verify_signatures {
        let url = format!("{}{}", st.public_url, path_and_query);
        let sig = signature.unwrap_or_default();
        if !signature::verify(st.auth_token.expose(), &url, &params, &sig) {
            // Say which URL was used: the usual cause is a public_url that differs
            // from the URL configured in TaskRouter.
            tracing::warn!(url = %url, "rejected callback: signature mismatch");
            return forbidden(&format!(
                "X-Twilio-Signature does not match the request signed for {url}"
            ));
        }
    }
    let received_ms = chrono::Utc::now().timestamp_millis();
    let (valid, cb) = match kind {
        Kind::TaskRouter => (
            event::validate(&params),
            QueuedCallback::TaskRouterV1 {
                received_ms,
                params,
            },
        ),
        Kind::Conversations => (
            event::validate_conversation(&params),
            QueuedCallback::ConversationsV1 {
                received_ms,
                params,
            },
        ),
    };
    if let Err(e) = valid {
        return bad(e.to_string());
    }
    match st.queue.append_durable(&cb).await {
        Ok(_) => {
            m.ingress_accepted.fetch_add(1, Relaxed);
            // Twilio asks for 204 with a JSON content type.
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => unavailable(st, e),
    }
}

/// `POST /ingress/event-streams`: a Twilio Event Streams webhook sink. The body is a
/// JSON array of CloudEvents; its TaskRouter events are queued like callbacks (one
/// flush for the delivery) and acknowledged with 200 once durable. Other products'
/// events are acknowledged and dropped. Any malformed TaskRouter event refuses the
/// whole delivery (400), so nothing is half-queued.
async fn event_streams(st: &AppState, req: Request<Incoming>) -> Response<Body> {
    let m = &st.metrics;
    let Received {
        signature,
        content_type,
        path_and_query,
        body,
    } = match receive(st, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if st.verify_signatures {
        let url = format!("{}{}", st.public_url, path_and_query);
        let sig = signature.unwrap_or_default();
        if let Err(e) = signature::verify_json(st.auth_token.expose(), &url, &body, &sig) {
            tracing::warn!(url = %url, error = %e, "rejected Event Streams delivery");
            m.ingress_bad_signature.fetch_add(1, Relaxed);
            return error(
                StatusCode::FORBIDDEN,
                format!("{e} (checked against {url})"),
            );
        }
    }
    if !content_type.is_empty() && content_type != "application/json" {
        m.ingress_bad_request.fetch_add(1, Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let batch = match sources::parse_event_streams(&body) {
        Ok(b) => b,
        Err(e) => {
            m.ingress_bad_request.fetch_add(1, Relaxed);
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    for t in &batch.sink_tests {
        tracing::info!(
            test_id = %t.test_id,
            sink_sid = t.sink_sid.as_deref().unwrap_or("unknown"),
            next_step = %t.next_step(),
            "Event Streams sink test event received: this sink reaches the service; validate it with the request in next_step"
        );
    }
    let received_ms = chrono::Utc::now().timestamp_millis();
    let accepted = batch.events.len();
    let cbs: Vec<QueuedCallback> = batch
        .events
        .into_iter()
        .map(|params| QueuedCallback::TaskRouterV1 {
            received_ms,
            params,
        })
        .collect();
    if !cbs.is_empty() {
        if let Err(e) = st.queue.append_all_durable(&cbs).await {
            return unavailable(st, e);
        }
    }
    m.ingress_accepted.fetch_add(accepted as u64, Relaxed);
    respond(
        StatusCode::OK,
        json!({"accepted": accepted, "ignored": batch.ignored}),
    )
}
