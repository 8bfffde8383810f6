//! `GET /api/agents` and `GET /api/reports/intervals` (design §5b), and the
//! wallboard's settings (`GET /api/wallboard`), on the admin side.

use super::{error, Shared};
use crate::publish::{agents, report};
use axum::extract::{Query, State};
use axum::http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

/// `GET /api/agents`: every worker not deleted, by name (a JSON array).
pub(super) async fn agents(State(st): State<Shared>) -> Response {
    let s = &st.settings.report;
    let now = chrono::Utc::now();
    let day = crate::util::start_of_day(&s.tz, now);
    match agents::agents(st.store.pool(), day, now).await {
        Ok(a) => json_body(serde_json::to_string(&a)),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /api/reports/intervals?from=&to=&interval=&by=[&format=csv]`: a bad parameter
/// is a 400 that names it; nothing is read then.
pub(super) async fn intervals(
    State(st): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = &st.settings.report;
    let p = |k: &str| q.get(k).map(String::as_str);
    let req = match report::Request::parse(p("from"), p("to"), p("interval"), p("by"), &s.tz) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let csv = match p("format") {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("format: {other:?} is not one of json, csv"),
            )
        }
    };
    let rows = match report::run(st.store.pool(), s, &req, chrono::Utc::now()).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if !csv {
        return json_body(rows.to_json());
    }
    match rows.to_csv(req.by, true) {
        Ok(body) => (
            [
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (
                    CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"intervals.csv\""),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/wallboard`: what the wallboard needs besides the data: its alert
/// thresholds, and today's bounds in `[sla] timezone` (for its today-by-interval
/// report). The server computes "today" so that a TV whose clock or zone is off still
/// shows the contact center's day.
pub(super) async fn wallboard(State(st): State<Shared>) -> Response {
    let s = &st.settings.report;
    let now = chrono::Utc::now();
    let start = crate::util::start_of_day(&s.tz, now);
    // The next local midnight (23 to 25 hours on, across a DST change).
    let end = report::starts(
        start,
        start + chrono::Duration::hours(1),
        report::Step::Day,
        &s.tz,
    )
    .get(1)
    .copied()
    .unwrap_or(start + chrono::Duration::days(1));
    let iso = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&s.tz)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let w = &st.settings.wallboard;
    json_body(serde_json::to_string(&serde_json::json!({
        "break_alert_minutes": w.break_alert_minutes,
        "task_alert_minutes": w.task_alert_minutes,
        "offline_activities": w.offline_activities,
        "timezone": s.tz.name(),
        "today": start.with_timezone(&s.tz).date_naive().to_string(),
        "today_start": iso(start),
        "today_end": iso(end),
    })))
}

fn json_body(body: Result<String, serde_json::Error>) -> Response {
    match body {
        Ok(b) => (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            b,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
