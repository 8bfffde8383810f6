//! The admin side: `/readyz`, `/metrics`, `/api/summary`, the wallboard
//! (`/dashboard`) and its Server-Sent Events (`/dashboard/events`), and the access
//! rules that guard them.
//!
//! Access: with `server.admin_token` set, every admin request must carry it (Bearer,
//! Basic password with any user name, or `?token=`), else 401 with
//! `WWW-Authenticate: Basic`. Without a token, only a loopback peer whose request
//! names no proxy (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) is served, else 403.

use super::{error, Shared};
use crate::config::Secret;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Paths under these prefixes are admin paths even when no route matches, so that
/// an unknown one is guarded like a known one.
const ADMIN_PREFIXES: [&str; 2] = ["/api/", "/dashboard"];

/// The access rules, as middleware in front of every admin route.
pub(super) async fn guard(State(st): State<Shared>, req: Request, next: Next) -> Response {
    match check(&st, &req) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

/// 404 for a path no route matched; one under an admin prefix is guarded first.
pub(super) async fn not_found(State(st): State<Shared>, req: Request) -> Response {
    let path = req.uri().path();
    if ADMIN_PREFIXES.iter().any(|p| path.starts_with(p)) {
        if let Err(refused) = check(&st, &req) {
            return refused.into_response();
        }
    }
    error(StatusCode::NOT_FOUND, "not found")
}

/// Why an admin request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// No token is configured and the client is not local: 403.
    NotLocal,
    /// A token is configured and the request does not carry it: 401.
    NoToken,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NotLocal => error(
                StatusCode::FORBIDDEN,
                "served to local clients only; set server.admin_token to allow others",
            ),
            Refused::NoToken => {
                let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
                // Basic lets a person open the wallboard in a browser (any user, token
                // as password).
                r.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static(
                        "Basic realm=\"taskrouter-summarizer\", charset=\"UTF-8\"",
                    ),
                );
                r
            }
        }
    }
}

/// Ok when the request may see the admin side.
fn check(st: &Shared, req: &Request) -> Result<(), Refused> {
    match &st.settings.admin_token {
        // Business data, queue depth, error text, job names: for this machine only
        // unless a token protects them. A proxy's request comes from loopback too, so
        // one that says it was forwarded is never local.
        None => {
            let loopback = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|c| c.0.ip().is_loopback());
            if loopback && !forwarded(req.headers()) {
                Ok(())
            } else {
                Err(Refused::NotLocal)
            }
        }
        Some(token) if token_ok(req, token) => Ok(()),
        Some(_) => Err(Refused::NoToken),
    }
}

/// Whether a proxy says it forwarded the request (RFC 7239 `Forwarded`, or the common
/// `X-Forwarded-For` / `X-Real-IP`).
fn forwarded(h: &HeaderMap) -> bool {
    h.contains_key("forwarded") || h.contains_key("x-forwarded-for") || h.contains_key("x-real-ip")
}

/// Whether the request carries `token`: `Authorization: Bearer <token>`, Basic auth
/// with the token as the password (any user name), or `?token=`. Compared in constant
/// time.
fn token_ok(req: &Request, token: &Secret) -> bool {
    // Browsers' EventSource cannot send headers: the wallboard passes `?token=`.
    let from_query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
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
    given
        .trim()
        .as_bytes()
        .ct_eq(token.expose().as_bytes())
        .into()
}

/// `GET /readyz`: 200 when Postgres answers within 2 s, else 503; with the queue's
/// state and the scheduled jobs' last runs either way.
pub(super) async fn readyz(State(st): State<Shared>) -> Response {
    let pg = match tokio::time::timeout(Duration::from_secs(2), st.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 2 s".to_owned()),
    };
    let q = st.queue.status();
    let ready = pg.is_ok();
    let jobs = serde_json::to_value(&*st.metrics.jobs.lock().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "postgres": match &pg { Ok(()) => "ok".to_owned(), Err(e) => e.clone() },
            "queue": {"open": true, "depth": q.depth, "retrying": q.retrying,
                      "dead_letters": q.dead_letters, "oldest_age_seconds": q.oldest_age_seconds,
                      "disk_bytes": q.disk_bytes},
            "jobs": jobs,
        })),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(State(st): State<Shared>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        st.metrics.render(&st.queue.status()),
    )
        .into_response()
}

/// `GET /api/summary`: the live summary when it is fresh; computed on demand otherwise.
pub(super) async fn summary(State(st): State<Shared>) -> Response {
    let latest = st.hub.latest.borrow().clone();
    let fresh = latest.filter(|s| {
        chrono::DateTime::parse_from_rfc3339(&s.generated_at)
            .is_ok_and(|t| chrono::Utc::now().signed_duration_since(t).num_seconds() < 3)
    });
    match fresh {
        Some(s) => Json(serde_json::to_value(&*s).unwrap_or_default()).into_response(),
        None => match crate::publish::summary::compute(
            st.store.pool(),
            &st.settings.sla,
            chrono::Utc::now(),
        )
        .await
        {
            Ok(s) => Json(serde_json::to_value(&s).unwrap_or_default()).into_response(),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
    }
}

/// The wallboard page, embedded in the binary.
const DASHBOARD: &str = include_str!("dashboard.html");

/// `GET /dashboard`: the page, with a CSP that allows only its own inline code and
/// same-origin requests.
pub(super) async fn dashboard() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
                ),
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

/// `GET /dashboard/events`: Server-Sent Events for the wallboard: the history on
/// connect and each time it is recomputed (once a minute), and every new summary, until
/// the client leaves or the server shuts down.
pub(super) async fn events(State(st): State<Shared>) -> Response {
    use futures_util::StreamExt;
    let history = serde_json::to_string(&*st.hub.history()).unwrap_or_else(|_| "[]".into());
    let mut summaries = st.hub.latest.subscribe();
    let histories = st.hub.histories.subscribe();
    let stop = st.shutdown.clone();
    // The current summary right away, then changes.
    summaries.mark_changed();
    let first =
        futures_util::stream::once(async move { Event::default().event("history").data(history) });
    let updates = futures_util::stream::unfold(
        (summaries, histories, stop),
        |(mut summaries, mut histories, stop)| async move {
            let event = tokio::select! {
                r = summaries.changed() => {
                    r.ok()?;
                    let latest = summaries.borrow_and_update().clone();
                    match latest.and_then(|s| serde_json::to_string(&*s).ok()) {
                        Some(json) => Event::default().event("summary").data(json),
                        // Nothing computed yet (e.g. just started): keep the stream open.
                        None => Event::default().comment("waiting for the first summary"),
                    }
                }
                h = histories.recv() => match h {
                    Ok(h) => Event::default().event("history").data(serde_json::to_string(&*h).ok()?),
                    // A slow viewer missed a history: the next one replaces it anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::default().comment("lagged"),
                    Err(_) => return None,
                },
                _ = tokio::time::sleep(Duration::from_secs(15)) => Event::default().comment("keep-alive"),
                _ = stop.cancelled() => return None,
            };
            Some((event, (summaries, histories, stop)))
        },
    );
    Sse::new(first.chain(updates).map(Ok::<_, Infallible>)).into_response()
}
