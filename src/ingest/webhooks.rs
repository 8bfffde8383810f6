//! The three webhooks: TaskRouter callbacks (`POST /ingress`), Conversations
//! (`POST /conversations`) and Event Streams (`POST /ingress/event-streams`).
//!
//! Each answers its success status only once what it carries is durably queued. The
//! body is read here by hand rather than by an axum extractor: the checks come in a
//! fixed order (declared length → 413 unread, missing signature → 403 unread, then the
//! body within the read timeout → 408, 413 or 400), each counted and answered with a
//! JSON reason, which `Bytes`/`Form` rejections do not give.

use super::{error, signature, Shared};
use crate::event::sources;
use crate::event::{self, QueuedCallback};
use crate::metrics::Metrics;
use crate::queue::QueueError;
use axum::extract::{Request, State};
use axum::http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;

/// What a webhook request came to, as counted in `trs_ingress_requests_total`.
#[derive(Clone, Copy)]
enum Outcome {
    Accepted(u64),
    BadSignature,
    BadRequest,
    TooLarge,
    Unavailable,
}

/// The one place that touches the ingress counters.
fn count(m: &Metrics, outcome: Outcome) {
    let (counter, n) = match outcome {
        Outcome::Accepted(n) => (&m.ingress_accepted, n),
        Outcome::BadSignature => (&m.ingress_bad_signature, 1),
        Outcome::BadRequest => (&m.ingress_bad_request, 1),
        Outcome::TooLarge => (&m.ingress_too_large, 1),
        Outcome::Unavailable => (&m.ingress_unavailable, 1),
    };
    counter.fetch_add(n, Relaxed);
}

/// Counts `outcome` and answers `status` with `{"error": msg}`.
fn refuse(st: &Shared, outcome: Outcome, status: StatusCode, msg: impl Into<String>) -> Response {
    count(&st.metrics, outcome);
    error(status, msg)
}

/// Which form webhook a request carries.
#[derive(Clone, Copy)]
enum Kind {
    TaskRouter,
    Conversations,
}

/// `POST /ingress`: a TaskRouter Event Callback.
pub(super) async fn taskrouter(State(st): State<Shared>, req: Request) -> Response {
    let _counted = st.queue.pressure().enter();
    form_webhook(&st, req, Kind::TaskRouter).await
}

/// `POST /conversations`: a Conversations post-event webhook.
pub(super) async fn conversations(State(st): State<Shared>, req: Request) -> Response {
    let _counted = st.queue.pressure().enter();
    form_webhook(&st, req, Kind::Conversations).await
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
async fn receive(st: &Shared, req: Request) -> Result<Received, Response> {
    let cfg = &st.settings;
    let too_large = || {
        refuse(
            st,
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {} bytes", cfg.max_body_bytes),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Answered without reading the body: hyper then closes the connection.
    if declared.is_some_and(|n| n > cfg.max_body_bytes as u64) {
        return Err(too_large());
    }
    let signature = req
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if cfg.verify_signatures && signature.is_none() {
        return Err(refuse(
            st,
            Outcome::BadSignature,
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
    let body = Limited::new(req.into_body(), cfg.max_body_bytes);
    let body = match tokio::time::timeout(cfg.read_timeout, body.collect()).await {
        Err(_) => {
            return Err(refuse(
                st,
                Outcome::BadRequest,
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
            return Err(refuse(
                st,
                Outcome::BadRequest,
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
fn unavailable(st: &Shared, e: QueueError) -> Response {
    let mut r = refuse(
        st,
        Outcome::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        e.to_string(),
    );
    if matches!(e, QueueError::Full(_)) {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
    }
    r
}

/// Both form webhooks: same checks, same durability; they differ in what must be
/// present and in how the queue entry is tagged.
async fn form_webhook(st: &Shared, req: Request, kind: Kind) -> Response {
    let cfg = &st.settings;
    let bad = |msg: String| refuse(st, Outcome::BadRequest, StatusCode::BAD_REQUEST, msg);
    let Received {
        signature,
        content_type,
        path_and_query,
        body: bytes,
    } = match receive(st, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if content_type != "application/x-www-form-urlencoded" {
        return bad("Content-Type must be application/x-www-form-urlencoded".into());
    }
    // The strict hand-written parser (hot path; refuses bad encodings instead of
    // replacing them).
    let params = match event::parse_form(&bytes) {
        Ok(p) => p,
        Err(e) => return bad(e.to_string()),
    };
    if cfg.verify_signatures {
        let url = format!("{}{}", cfg.public_url, path_and_query);
        let sig = signature.unwrap_or_default();
        if !signature::verify(cfg.auth_token.expose(), &url, &params, &sig) {
            // Say which URL was used: the usual cause is a public_url that differs
            // from the URL configured in TaskRouter.
            tracing::warn!(url = %url, "rejected callback: signature mismatch");
            return refuse(
                st,
                Outcome::BadSignature,
                StatusCode::FORBIDDEN,
                format!("X-Twilio-Signature does not match the request signed for {url}"),
            );
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
            count(&st.metrics, Outcome::Accepted(1));
            // A 204 has no content, so no Content-Type either: one would describe a body
            // that is not there. Twilio reads only the status.
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => unavailable(st, e),
    }
}

/// `POST /ingress/event-streams`: a Twilio Event Streams webhook sink. The body is a
/// JSON array of CloudEvents; its TaskRouter events are queued like callbacks (one
/// flush for the delivery) and acknowledged with 200 once durable. Other products'
/// events are acknowledged and dropped. Any malformed TaskRouter event refuses the
/// whole delivery (400), so nothing is half-queued.
pub(super) async fn event_streams(State(st): State<Shared>, req: Request) -> Response {
    let _counted = st.queue.pressure().enter();
    let cfg = &st.settings;
    let Received {
        signature,
        content_type,
        path_and_query,
        body,
    } = match receive(&st, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if cfg.verify_signatures {
        let url = format!("{}{}", cfg.public_url, path_and_query);
        let sig = signature.unwrap_or_default();
        if let Err(e) = signature::verify_json(cfg.auth_token.expose(), &url, &body, &sig) {
            tracing::warn!(url = %url, error = %e, "rejected Event Streams delivery");
            return refuse(
                &st,
                Outcome::BadSignature,
                StatusCode::FORBIDDEN,
                format!("{e} (checked against {url})"),
            );
        }
    }
    if !content_type.is_empty() && content_type != "application/json" {
        return refuse(
            &st,
            Outcome::BadRequest,
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let batch = match sources::parse_event_streams(&body) {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                &st,
                Outcome::BadRequest,
                StatusCode::BAD_REQUEST,
                e.to_string(),
            )
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
            return unavailable(&st, e);
        }
    }
    count(&st.metrics, Outcome::Accepted(accepted as u64));
    (
        StatusCode::OK,
        Json(json!({"accepted": accepted, "ignored": batch.ignored})),
    )
        .into_response()
}
