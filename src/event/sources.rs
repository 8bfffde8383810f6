//! The other two ways TaskRouter events arrive, mapped onto the callback's form params
//! so that they go through the same queue, event model and rules:
//! - Twilio Event Streams webhooks: a JSON array of CloudEvents whose `data.payload` is
//!   the callback in snake_case;
//! - TaskRouter's REST Events resource (backfill): `event_data` in snake_case next to
//!   top-level `sid`, `event_type`, `event_date_ms`.
//!
//! The event's `EV…` sid is kept as `Sid`, so an event seen through several paths is
//! stored and counted once.

use crate::event::Params;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON array of CloudEvents")]
    NotArray,
    #[error("CloudEvent #{0} has no `type`")]
    NoType(usize),
    #[error("CloudEvent #{0} ({1}) has no `data.payload` object")]
    NoPayload(usize, String),
    #[error("CloudEvent #{0}: field `{1}` holds a NUL character")]
    Nul(usize, String),
}

/// TaskRouter's callback param name for a snake_case payload key: `task_age` → `TaskAge`.
/// `eventtype` (one word in the payload) is the callback's `EventType`.
pub fn pascal(key: &str) -> String {
    match key {
        "eventtype" | "event_type" => return "EventType".to_owned(),
        _ => {}
    }
    let mut out = String::with_capacity(key.len());
    for part in key.split('_').filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// A JSON value as the callback would carry it: strings as they are, numbers and
/// booleans as text, objects and arrays (e.g. attributes sent unencoded) as JSON text;
/// null is absent.
fn form_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Params from a snake_case payload object, sorted by name (deterministic digests).
pub fn params_from_snake(payload: &Map<String, Value>) -> Params {
    let mut out: Params = payload
        .iter()
        .filter_map(|(k, v)| Some((pascal(k), form_value(v)?)))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn set(params: &mut Params, name: &str, value: String) {
    match params.iter_mut().find(|(k, _)| k == name) {
        Some(p) => p.1 = value,
        None => params.push((name.to_owned(), value)),
    }
}

fn has(params: &Params, name: &str) -> bool {
    params
        .iter()
        .any(|(k, v)| k == name && !v.trim().is_empty())
}

/// JSON that may arrive encoded as a string (Twilio does this for some products).
fn object(v: Option<&Value>) -> Option<Map<String, Value>> {
    match v? {
        Value::Object(m) => Some(m.clone()),
        Value::String(s) => match serde_json::from_str(s) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        },
        _ => None,
    }
}

/// What an Event Streams delivery holds.
#[derive(Debug, Default, PartialEq)]
pub struct StreamBatch {
    /// TaskRouter events, as callback params.
    pub events: Vec<Params>,
    /// CloudEvents of other products (a subscription may include them): acknowledged
    /// and not stored.
    pub ignored: usize,
    /// Sink test events (`POST /v1/Sinks/{Sid}/Test` sends one): acknowledged, not
    /// stored, and reported so the operator can validate the sink.
    pub sink_tests: Vec<SinkTest>,
}

/// A sink test event: its `data.test_id` is what `POST /v1/Sinks/{Sid}/Validate` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTest {
    pub test_id: String,
    /// The sink's `DG…` sid when the event names it.
    pub sink_sid: Option<String>,
}

impl SinkTest {
    /// The exact request that validates the sink, for the log line.
    pub fn next_step(&self) -> String {
        format!(
            "curl -X POST https://events.twilio.com/v1/Sinks/{}/Validate --data-urlencode \"TestId={}\" -u \"$TWILIO_ACCOUNT_SID:$TWILIO_AUTH_TOKEN\"",
            self.sink_sid.as_deref().unwrap_or("DG…(your sink's sid)"),
            self.test_id
        )
    }
}

/// A sink test event's `data.test_id` (and the sink sid when the event carries one).
fn sink_test(ce: &Value) -> Option<SinkTest> {
    let data = object(ce.get("data"))?;
    let str_of = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
    let test_id = str_of("test_id").filter(|t| !t.is_empty())?;
    let sink_sid = str_of("sink_sid")
        .or_else(|| str_of("sinkSid"))
        .filter(|s| s.starts_with("DG"));
    Some(SinkTest { test_id, sink_sid })
}

/// Parses an Event Streams webhook body. Any malformed TaskRouter event fails the whole
/// delivery (400, nothing queued), so Twilio's retry or an operator sees it.
pub fn parse_event_streams(body: &[u8]) -> Result<StreamBatch, SourceError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| SourceError::NotJson(e.to_string()))?;
    let items = match v {
        Value::Array(a) => a,
        // A single CloudEvent, not wrapped: accept it too.
        Value::Object(_) => vec![v],
        _ => return Err(SourceError::NotArray),
    };
    let mut out = StreamBatch::default();
    for (i, ce) in items.iter().enumerate() {
        let ty = ce
            .get("type")
            .and_then(Value::as_str)
            .ok_or(SourceError::NoType(i))?;
        let Some(kind) = ty.strip_prefix("com.twilio.taskrouter.") else {
            if let Some(t) = sink_test(ce) {
                out.sink_tests.push(t);
            }
            out.ignored += 1;
            continue;
        };
        let data = object(ce.get("data"));
        let payload = data
            .as_ref()
            .and_then(|d| object(d.get("payload")))
            .ok_or_else(|| SourceError::NoPayload(i, ty.to_owned()))?;
        let mut params = params_from_snake(&payload);
        if !has(&params, "EventType") {
            set(&mut params, "EventType", kind.to_owned());
        }
        if !has(&params, "Sid") {
            // The EV sid, else the CloudEvent id: a redelivery repeats both.
            let sid = data
                .as_ref()
                .and_then(|d| d.get("sid"))
                .and_then(Value::as_str)
                .or_else(|| ce.get("id").and_then(Value::as_str));
            if let Some(sid) = sid {
                set(&mut params, "Sid", sid.to_owned());
            }
        }
        precise_time(&mut params, ce.get("time").and_then(Value::as_str));
        if let Some((k, _)) = params.iter().find(|(_, v)| v.contains('\0')) {
            return Err(SourceError::Nul(i, k.clone()));
        }
        params.sort();
        out.events.push(params);
    }
    Ok(out)
}

/// Callbacks carry `TimestampMs`; the snake_case forms carry an ISO `timestamp` (with
/// ms). Derive `TimestampMs` from it so that every path gives the event the same time.
fn precise_time(params: &mut Params, fallback: Option<&str>) {
    if has(params, "TimestampMs") {
        return;
    }
    let iso = params
        .iter()
        .find(|(k, _)| k == "Timestamp")
        .map(|(_, v)| v.clone())
        .or_else(|| fallback.map(str::to_owned));
    if let Some(ms) = iso.as_deref().and_then(crate::event::parse_instant_ms) {
        set(params, "TimestampMs", ms.to_string());
    }
}

/// One item of TaskRouter's REST Events list as callback params; `None` when it has no
/// event type.
pub fn params_from_rest(ev: &Value) -> Option<Params> {
    let mut params = object(ev.get("event_data"))
        .map(|m| params_from_snake(&m))
        .unwrap_or_default();
    let top = |k: &str| ev.get(k).and_then(form_value).filter(|v| !v.is_empty());
    set(&mut params, "EventType", top("event_type")?);
    for (from, to) in [
        ("sid", "Sid"),
        ("account_sid", "AccountSid"),
        ("workspace_sid", "WorkspaceSid"),
        ("resource_type", "ResourceType"),
        ("resource_sid", "ResourceSid"),
        ("description", "EventDescription"),
    ] {
        if let Some(v) = top(from) {
            if !has(&params, to) || to == "Sid" {
                set(&mut params, to, v);
            }
        }
    }
    if let Some(ms) = top("event_date_ms") {
        set(&mut params, "TimestampMs", ms);
    } else {
        precise_time(&mut params, ev.get("event_date").and_then(Value::as_str));
    }
    params.retain(|(_, v)| !v.contains('\0'));
    params.sort();
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get<'a>(p: &'a Params, k: &str) -> Option<&'a str> {
        p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn snake_keys_become_callback_names() {
        assert_eq!(pascal("task_age"), "TaskAge");
        assert_eq!(pascal("eventtype"), "EventType");
        assert_eq!(pascal("sid"), "Sid");
        assert_eq!(
            pascal("worker_time_in_previous_activity_ms"),
            "WorkerTimeInPreviousActivityMs"
        );
        assert_eq!(pascal("task_channel_unique_name"), "TaskChannelUniqueName");
        assert_eq!(pascal("__"), "");
    }

    #[test]
    fn an_event_streams_delivery_maps_onto_callback_params() {
        let body = json!([{
            "specversion": "1.0",
            "type": "com.twilio.taskrouter.reservation.accepted",
            "id": "EZ1",
            "time": "2026-05-04T10:15:30.123Z",
            "data": {
                "sid": "EV1",
                "name": "ReservationCreated",
                "payload": {
                    "sid": "EV1", "eventtype": "reservation.accepted",
                    "timestamp": "2026-05-04T10:15:30.120Z",
                    "task_sid": "WT1", "task_age": 42, "task_attributes": "{\"a\":1}",
                    "worker_channel_available": true, "task_queue_entered_date": null
                }
            }
        }, {
            "type": "com.twilio.voice.insights.call-summary.complete",
            "data": "{}"
        }]);
        let b = parse_event_streams(body.to_string().as_bytes()).unwrap();
        assert_eq!(b.ignored, 1);
        let p = &b.events[0];
        assert_eq!(get(p, "EventType"), Some("reservation.accepted"));
        assert_eq!(get(p, "Sid"), Some("EV1"));
        assert_eq!(get(p, "TaskAge"), Some("42"));
        assert_eq!(get(p, "TaskAttributes"), Some("{\"a\":1}"));
        assert_eq!(get(p, "WorkerChannelAvailable"), Some("true"));
        assert_eq!(get(p, "TaskQueueEnteredDate"), None);
        assert_eq!(get(p, "TimestampMs"), Some("1777889730120"));
        let e = crate::event::Event::from_params(p, 0);
        assert_eq!(e.sid, "EV1");
        assert_eq!(e.occurred_ms, 1777889730120);
    }

    #[test]
    fn data_encoded_as_a_string_and_a_missing_eventtype_are_handled() {
        let payload = json!({"sid": "EV2", "task_sid": "WT2"}).to_string();
        let body = json!([{
            "type": "com.twilio.taskrouter.task.created",
            "time": "2026-05-04T10:00:00.000Z",
            "data": json!({"payload": payload}).to_string()
        }]);
        let b = parse_event_streams(body.to_string().as_bytes()).unwrap();
        let p = &b.events[0];
        assert_eq!(get(p, "EventType"), Some("task.created"));
        assert_eq!(get(p, "TimestampMs"), Some("1777888800000"));
    }

    #[test]
    fn a_sink_test_event_gives_its_test_id() {
        let body = json!([{
            "specversion": "1.0",
            "type": "com.twilio.eventstreams.test-event",
            "id": "CE000000000000000000000000000000",
            "data": {"test_id": "TE0123456789abcdef0123456789abcdef", "sink_sid": "DG0123456789abcdef0123456789abcdef"}
        }, {"type": "com.twilio.eventstreams.test-event", "data": "{\"test_id\":\"TEstring\"}"}]);
        let b = parse_event_streams(body.to_string().as_bytes()).unwrap();
        assert!(b.events.is_empty());
        assert_eq!(b.ignored, 2);
        assert_eq!(b.sink_tests.len(), 2);
        assert_eq!(
            b.sink_tests[0].test_id,
            "TE0123456789abcdef0123456789abcdef"
        );
        let step = b.sink_tests[0].next_step();
        assert!(
            step.contains("/v1/Sinks/DG0123456789abcdef0123456789abcdef/Validate")
                && step.contains("TestId=TE0123456789abcdef0123456789abcdef"),
            "{step}"
        );
        assert_eq!(b.sink_tests[1].sink_sid, None);
        assert!(b.sink_tests[1].next_step().contains("TestId=TEstring"));
    }

    #[test]
    fn malformed_deliveries_are_refused_with_a_reason() {
        assert!(matches!(
            parse_event_streams(b"not json"),
            Err(SourceError::NotJson(_))
        ));
        assert_eq!(parse_event_streams(b"42"), Err(SourceError::NotArray));
        assert_eq!(parse_event_streams(b"[{}]"), Err(SourceError::NoType(0)));
        assert!(matches!(
            parse_event_streams(br#"[{"type":"com.twilio.taskrouter.task.created","data":{}}]"#),
            Err(SourceError::NoPayload(0, _))
        ));
        let nul = json!([{"type":"com.twilio.taskrouter.task.created","data":{"payload":{"sid":"EV\u{0}"}}}]);
        assert!(matches!(
            parse_event_streams(nul.to_string().as_bytes()),
            Err(SourceError::Nul(0, _))
        ));
    }

    #[test]
    fn a_rest_event_maps_onto_callback_params() {
        let ev = json!({
            "sid": "EV3", "event_type": "worker.activity.update",
            "event_date": "2026-05-04T10:00:00Z", "event_date_ms": 1777888800123i64,
            "account_sid": "AC1", "workspace_sid": "WS1",
            "resource_type": "worker", "resource_sid": "WK1",
            "description": "Worker alice updated to Available Activity",
            "event_data": {"worker_sid": "WK1", "worker_activity_name": "Available",
                           "worker_time_in_previous_activity": "26"}
        });
        let p = params_from_rest(&ev).unwrap();
        assert_eq!(get(&p, "EventType"), Some("worker.activity.update"));
        assert_eq!(get(&p, "Sid"), Some("EV3"));
        assert_eq!(get(&p, "TimestampMs"), Some("1777888800123"));
        assert_eq!(get(&p, "WorkerTimeInPreviousActivity"), Some("26"));
        assert_eq!(get(&p, "ResourceSid"), Some("WK1"));
        assert_eq!(params_from_rest(&json!({"sid": "EV4"})), None);
    }
}
