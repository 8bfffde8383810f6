//! The event model: a TaskRouter Event Callback as received, and typed accessors.
//!
//! A callback is kept as the ordered list of form parameters Twilio sent, because the
//! signature covers all of them and Twilio adds fields without notice. Everything the
//! state rules need is read through accessors that never fail: a missing or malformed
//! field reads as `None`, never as an error, so no input can stop an event from being
//! stored.

pub mod sources;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Form parameters in the order received. Values are decoded UTF-8 strings.
pub type Params = Vec<(String, String)>;

/// Why a request body is not a usable callback. Shown to the caller in a 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    #[error("body is not valid application/x-www-form-urlencoded: {0}")]
    Encoding(String),
    #[error("parameter `{0}` is not valid UTF-8 after percent-decoding")]
    NotUtf8(String),
    #[error("parameter `{0}` contains a NUL character, which cannot be stored")]
    Nul(String),
    #[error("missing parameter `EventType`")]
    NoEventType,
    #[error("parameter `EventType` is empty")]
    EmptyEventType,
    #[error("missing parameter `{0}`")]
    Missing(&'static str),
}

/// Parses an `application/x-www-form-urlencoded` body strictly: every name and value must
/// decode to UTF-8 without NUL (Postgres text cannot hold NUL). Unlike lossy decoders,
/// nothing is silently replaced, so the values we store are the values Twilio signed.
pub fn parse_form(body: &[u8]) -> Result<Params, FormError> {
    let mut out = Vec::new();
    for pair in body.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = decode_component(name, None)?;
        if name.is_empty() {
            return Err(FormError::Encoding("a parameter has an empty name".into()));
        }
        let value = decode_component(value, Some(&name))?;
        out.push((name, value));
    }
    Ok(out)
}

fn decode_component(raw: &[u8], name: Option<&str>) -> Result<String, FormError> {
    let label = || name.map(str::to_owned).unwrap_or_else(|| lossy(raw));
    // '+' means space in form encoding; percent-decoding happens after.
    let plus: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    let s = String::from_utf8(bytes).map_err(|_| FormError::NotUtf8(label()))?;
    if s.contains('\0') {
        return Err(FormError::Nul(label()));
    }
    Ok(s)
}

fn lossy(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    s.chars().take(64).collect()
}

/// A callback as it sits in the durable queue. Versioned so that a newer binary can
/// still drain entries written by an older one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "v")]
pub enum QueuedCallback {
    /// A TaskRouter Event Callback, as received.
    #[serde(rename = "1")]
    TaskRouterV1 { received_ms: i64, params: Params },
    /// A Conversations post-event webhook (e.g. onMessageAdded), as received.
    #[serde(rename = "conversations-1")]
    ConversationsV1 { received_ms: i64, params: Params },
}

impl QueuedCallback {
    pub fn received_ms(&self) -> i64 {
        match self {
            QueuedCallback::TaskRouterV1 { received_ms, .. }
            | QueuedCallback::ConversationsV1 { received_ms, .. } => *received_ms,
        }
    }

    /// The event this callback carries.
    pub fn into_event(self) -> Event {
        match self {
            QueuedCallback::TaskRouterV1 {
                received_ms,
                params,
            } => Event::from_params(&params, received_ms),
            QueuedCallback::ConversationsV1 {
                received_ms,
                params,
            } => Event::from_conversation(&params, received_ms),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an entry written by [`QueuedCallback::encode`] (of this or an older version).
    /// Decoded through a flat struct rather than the derived tagged enum, which buffers
    /// every field before looking at the tag (a tenth of the drain's CPU).
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            #[serde(borrow)]
            v: std::borrow::Cow<'a, str>,
            received_ms: i64,
            params: Params,
        }
        let w: Wire = serde_json::from_slice(bytes)?;
        match &*w.v {
            "1" => Ok(QueuedCallback::TaskRouterV1 {
                received_ms: w.received_ms,
                params: w.params,
            }),
            "conversations-1" => Ok(QueuedCallback::ConversationsV1 {
                received_ms: w.received_ms,
                params: w.params,
            }),
            other => Err(unknown_version(other)),
        }
    }

    /// [`QueuedCallback::decode`] then [`QueuedCallback::into_event`] in one step, with
    /// the params read straight into the event (the drain decodes every entry).
    pub fn decode_event(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            #[serde(borrow)]
            v: std::borrow::Cow<'a, str>,
            received_ms: i64,
            params: WireParams,
        }
        let w: Wire = serde_json::from_slice(bytes)?;
        let event = Event::from_map(w.params.0, w.received_ms);
        match &*w.v {
            "1" => Ok(event),
            "conversations-1" => Ok(Event::into_conversation(event)),
            other => Err(unknown_version(other)),
        }
    }
}

fn unknown_version(v: &str) -> serde_json::Error {
    serde::de::Error::custom(format!("unknown queue entry version {v:?}"))
}

/// Which webhook an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    TaskRouter,
    Conversations,
}

/// One event (TaskRouter, or a Conversations message) with the fields every stage
/// needs already extracted.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub source: Source,
    /// `Sid` of the callback (EV…), or `digest:<sha256>` of the sorted params when absent.
    /// The idempotency key: an event with a known sid changes nothing.
    pub sid: String,
    pub event_type: String,
    /// Event time in epoch ms: `TimestampMs`, else `Timestamp`, else receipt.
    pub occurred_ms: i64,
    pub received_ms: i64,
    params: ParamMap,
}

/// An event's params in one buffer (each name followed by its value) with an index
/// sorted by name; a repeated name keeps its first value. Two allocations per event
/// instead of two per param (forty-odd), and well under half the memory: a backlog keeps
/// thousands of decoded events in flight.
#[derive(Clone, Default)]
pub struct ParamMap {
    buf: String,
    /// `[name start, value start, value end]` in `buf`.
    idx: Vec<[u32; 3]>,
}

impl ParamMap {
    fn with_capacity(bytes: usize, params: usize) -> ParamMap {
        ParamMap {
            buf: String::with_capacity(bytes),
            idx: Vec::with_capacity(params),
        }
    }

    /// Appends a pair; [`ParamMap::finish`] sorts them. `u32` offsets suffice: bodies
    /// are at most `server.max_body_bytes` (64 MiB at most), REST events a few KB.
    fn push(&mut self, name: &str, value: &str) {
        let start = self.buf.len() as u32;
        self.buf.push_str(name);
        let mid = self.buf.len() as u32;
        self.buf.push_str(value);
        self.idx.push([start, mid, self.buf.len() as u32]);
    }

    fn name(&self, i: &[u32; 3]) -> &str {
        &self.buf[i[0] as usize..i[1] as usize]
    }

    fn value(&self, i: &[u32; 3]) -> &str {
        &self.buf[i[1] as usize..i[2] as usize]
    }

    /// Sorts by name, keeping the first value of a repeated name (a stable sort).
    fn finish(mut self) -> ParamMap {
        let mut idx = std::mem::take(&mut self.idx);
        idx.sort_by(|a, b| self.name(a).cmp(self.name(b)));
        idx.dedup_by(|later, first| self.name(later) == self.name(first));
        self.idx = idx;
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.idx
            .binary_search_by(|i| self.name(i).cmp(name))
            .ok()
            .map(|at| self.value(&self.idx[at]))
    }

    /// The params in name order (in the order pushed, before [`ParamMap::finish`]).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.idx.iter().map(|i| (self.name(i), self.value(i)))
    }

    pub fn len(&self) -> usize {
        self.idx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }
}

impl PartialEq for ParamMap {
    fn eq(&self, other: &ParamMap) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for ParamMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A JSON object of the params (the `events.data` column).
impl Serialize for ParamMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// A queue entry's `params` (`[["name","value"],…]`) read straight into a [`ParamMap`]
/// in received order. Strings are borrowed from the entry; only those with escapes
/// (attributes, which are JSON) are copied on the way.
struct WireParams(ParamMap);

impl<'de> Deserialize<'de> for WireParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = ParamMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of [name, value] pairs")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ParamMap, A::Error> {
                #[derive(Deserialize)]
                struct Pair<'a>(
                    #[serde(borrow)] std::borrow::Cow<'a, str>,
                    #[serde(borrow)] std::borrow::Cow<'a, str>,
                );
                let mut map = ParamMap::with_capacity(1536, seq.size_hint().unwrap_or(40));
                while let Some(Pair(name, value)) = seq.next_element()? {
                    map.push(&name, &value);
                }
                Ok(map)
            }
        }
        d.deserialize_seq(Pairs).map(WireParams)
    }
}

impl Event {
    /// Builds the event from received params. Never fails: the caller has already
    /// checked that `EventType` is present (see [`validate`]).
    pub fn from_params(params: &Params, received_ms: i64) -> Event {
        let bytes = params.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut map = ParamMap::with_capacity(bytes, params.len());
        for (k, v) in params {
            map.push(k, v);
        }
        Event::from_map(map, received_ms)
    }

    /// Builds the event from params pushed in received order (not yet finished).
    fn from_map(map: ParamMap, received_ms: i64) -> Event {
        // Twilio never repeats a TaskRouter parameter; if one is repeated, the first wins.
        // `map` is still in received order here.
        let sid = match map
            .iter()
            .find(|(k, _)| *k == "Sid")
            .map(|(_, v)| v.trim())
            .filter(|s| !s.is_empty())
        {
            Some(s) => s.to_owned(),
            None => digest_pairs(map.iter()),
        };
        let map = map.finish();
        let event_type = map.get("EventType").unwrap_or_default().to_owned();
        let occurred_ms = map
            .get("TimestampMs")
            .and_then(parse_instant_ms)
            .or_else(|| map.get("Timestamp").and_then(parse_instant_ms))
            .unwrap_or(received_ms);
        Event {
            source: Source::TaskRouter,
            sid,
            event_type,
            occurred_ms,
            received_ms,
            params: map,
        }
    }

    /// A Conversations webhook: its id is the message sid (`msg:IM…`), its time the
    /// message's `DateCreated`.
    pub fn from_conversation(params: &Params, received_ms: i64) -> Event {
        Event::into_conversation(Event::from_params(params, received_ms))
    }

    fn into_conversation(mut e: Event) -> Event {
        e.source = Source::Conversations;
        if let Some(m) = e.get("MessageSid") {
            e.sid = format!("msg:{m}");
        }
        e.occurred_ms = e.instant_ms("DateCreated").unwrap_or(e.received_ms);
        e
    }

    /// All params as received (the `events.data` column).
    pub fn params(&self) -> &ParamMap {
        &self.params
    }

    /// A non-empty, trimmed parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    pub fn get_owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// An integer parameter; decimals are truncated; garbage, and anything outside the
    /// 32-bit range of the integer columns, reads as `None`.
    pub fn int(&self, name: &str) -> Option<i64> {
        let v = self.get(name)?;
        v.parse::<i64>()
            .ok()
            .or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && f.abs() < 9.0e15)
                    .map(|f| f.trunc() as i64)
            })
            .filter(|n| i32::try_from(*n).is_ok())
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name)?.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    }

    /// An instant parameter in epoch ms (accepts epoch s, epoch ms or ISO-8601).
    pub fn instant_ms(&self, name: &str) -> Option<i64> {
        parse_instant_ms(self.get(name)?)
    }

    /// A JSON parameter (attributes). Text that is not JSON is kept as a JSON string so
    /// nothing is lost.
    pub fn json(&self, name: &str) -> Option<serde_json::Value> {
        let raw = self.get(name)?;
        Some(
            serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned())),
        )
    }

    pub fn task_sid(&self) -> Option<&str> {
        self.get("TaskSid")
    }
    pub fn worker_sid(&self) -> Option<&str> {
        self.get("WorkerSid")
    }
    pub fn reservation_sid(&self) -> Option<&str> {
        self.get("ReservationSid")
    }

    /// The entity whose state this event changes, used to partition work so that each
    /// entity's events apply in queue order. Reservation events belong to their task.
    pub fn partition_key(&self) -> &str {
        if self.source == Source::Conversations {
            return self.get("ConversationSid").unwrap_or(&self.sid);
        }
        self.task_sid()
            .or_else(|| {
                if self.event_type.starts_with("worker.") {
                    self.worker_sid()
                } else {
                    None
                }
            })
            .or_else(|| self.get("ActivitySid"))
            .or_else(|| self.get("ResourceSid"))
            .unwrap_or(&self.sid)
    }
}

/// Checks the parts of a callback without which it cannot be routed.
pub fn validate(params: &Params) -> Result<(), FormError> {
    match params.iter().find(|(k, _)| k == "EventType") {
        None => Err(FormError::NoEventType),
        Some((_, v)) if v.trim().is_empty() => Err(FormError::EmptyEventType),
        Some(_) => Ok(()),
    }
}

/// Checks a Conversations webhook: `EventType`, and for message events the
/// conversation and message sids.
pub fn validate_conversation(params: &Params) -> Result<(), FormError> {
    validate(params)?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    if get("EventType") == Some("onMessageAdded") {
        for k in ["ConversationSid", "MessageSid"] {
            if get(k).is_none() {
                return Err(FormError::Missing(k));
            }
        }
    }
    Ok(())
}

/// A stable id for a callback without `Sid`: the same params always give the same id,
/// whatever their order, so redeliveries dedupe.
pub fn digest_sid(params: &Params) -> String {
    digest_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn digest_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = pairs.collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update([0u8]);
        h.update(v.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("digest:{hex}")
}

/// Latest instant accepted: the end of year 9999, within both chrono's and Postgres' range.
const MAX_MS: i64 = 253_402_300_799_999;

/// Epoch seconds, epoch milliseconds or ISO-8601 → epoch ms, between 1970 and 9999.
/// Numbers below 10^11 are taken as seconds (10^11 s is the year 5138; 10^11 ms is 1973).
pub fn parse_instant_ms(v: &str) -> Option<i64> {
    parse_instant_ms_unbounded(v).filter(|ms| (1..=MAX_MS).contains(ms))
}

fn parse_instant_ms_unbounded(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i64>() {
        if n <= 0 {
            return None;
        }
        return Some(if n < 100_000_000_000 {
            n.checked_mul(1000)?
        } else {
            n
        });
    }
    if let Ok(f) = v.parse::<f64>() {
        if !f.is_finite() || f <= 0.0 || f > 1.0e16 {
            return None;
        }
        return Some(if f < 1.0e11 {
            (f * 1000.0) as i64
        } else {
            f as i64
        });
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_form_with_plus_and_percent() {
        let got =
            parse_form(b"EventType=task.created&TaskAttributes=%7B%22a%22%3A+1%7D&Empty=&Flag")
                .unwrap();
        assert_eq!(
            got,
            p(&[
                ("EventType", "task.created"),
                ("TaskAttributes", "{\"a\": 1}"),
                ("Empty", ""),
                ("Flag", "")
            ])
        );
    }

    #[test]
    fn rejects_bad_utf8_and_nul() {
        assert_eq!(
            parse_form(b"A=%ff%fe").unwrap_err(),
            FormError::NotUtf8("A".into())
        );
        assert_eq!(
            parse_form(b"A=x%00y").unwrap_err(),
            FormError::Nul("A".into())
        );
        assert!(matches!(parse_form(b"=x"), Err(FormError::Encoding(_))));
    }

    #[test]
    fn validate_requires_event_type() {
        assert_eq!(validate(&p(&[("A", "b")])), Err(FormError::NoEventType));
        assert_eq!(
            validate(&p(&[("EventType", " ")])),
            Err(FormError::EmptyEventType)
        );
        assert_eq!(validate(&p(&[("EventType", "x.y")])), Ok(()));
    }

    #[test]
    fn event_time_prefers_timestamp_ms() {
        let e = Event::from_params(
            &p(&[
                ("EventType", "task.created"),
                ("Timestamp", "1700000000"),
                ("TimestampMs", "1700000000123"),
            ]),
            5,
        );
        assert_eq!(e.occurred_ms, 1_700_000_000_123);
        let e = Event::from_params(
            &p(&[("EventType", "task.created"), ("Timestamp", "1700000000")]),
            5,
        );
        assert_eq!(e.occurred_ms, 1_700_000_000_000);
        let e = Event::from_params(&p(&[("EventType", "task.created")]), 5);
        assert_eq!(e.occurred_ms, 5);
    }

    #[test]
    fn repeated_params_first_wins_and_a_blank_sid_means_a_digest() {
        let e = Event::from_params(
            &p(&[
                ("Sid", " EV1 "),
                ("EventType", "a"),
                ("Sid", "EV2"),
                ("EventType", "b"),
            ]),
            0,
        );
        assert_eq!((e.sid.as_str(), e.event_type.as_str()), ("EV1", "a"));
        assert_eq!(e.get("Sid"), Some("EV1"));
        let blank = p(&[("Sid", "  "), ("EventType", "a"), ("Sid", "EV2")]);
        assert_eq!(Event::from_params(&blank, 0).sid, digest_sid(&blank));
        let q = QueuedCallback::TaskRouterV1 {
            received_ms: 5,
            params: blank.clone(),
        };
        assert_eq!(q.into_event(), Event::from_params(&blank, 5));
    }

    #[test]
    fn digest_sid_is_order_independent() {
        let a = p(&[("EventType", "x"), ("B", "1")]);
        let b = p(&[("B", "1"), ("EventType", "x")]);
        assert_eq!(digest_sid(&a), digest_sid(&b));
        assert_ne!(
            digest_sid(&a),
            digest_sid(&p(&[("EventType", "x"), ("B", "2")]))
        );
        assert_eq!(Event::from_params(&a, 0).sid, digest_sid(&a));
    }

    #[test]
    fn instants_accept_seconds_ms_and_iso() {
        assert_eq!(parse_instant_ms("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_instant_ms("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(
            parse_instant_ms("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500)
        );
        assert_eq!(parse_instant_ms("soon"), None);
        assert_eq!(parse_instant_ms("-5"), None);
        assert_eq!(parse_instant_ms("1e400"), None);
        assert_eq!(parse_instant_ms("9999999999999999"), None);
        assert_eq!(parse_instant_ms("0001-01-01T00:00:00Z"), None);
    }

    #[test]
    fn partition_key_groups_reservations_with_their_task() {
        let r = Event::from_params(
            &p(&[
                ("EventType", "reservation.created"),
                ("TaskSid", "WT1"),
                ("WorkerSid", "WK1"),
            ]),
            0,
        );
        assert_eq!(r.partition_key(), "WT1");
        let w = Event::from_params(
            &p(&[
                ("EventType", "worker.activity.update"),
                ("WorkerSid", "WK1"),
            ]),
            0,
        );
        assert_eq!(w.partition_key(), "WK1");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            // Cases: PROPTEST_CASES (256 by default; the documented long run uses 1,000,000).
            #[test]
            fn fuzz_parse_form_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_form(&body);
            }

            #[test]
            fn fuzz_form_round_trips(params in proptest::collection::vec(
                ("[A-Za-z][A-Za-z0-9_]{0,12}", "\\PC{0,40}"), 0..12)) {
                let params: Params = params.into_iter().filter(|(_, v)| !v.contains('\0')).collect();
                let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
                prop_assert_eq!(parse_form(body.as_bytes()).unwrap(), params);
            }

            #[test]
            fn fuzz_event_accessors_never_panic(
                params in proptest::collection::vec((
                    prop::sample::select(vec!["EventType", "Sid", "TaskSid", "TaskAge", "TimestampMs",
                        "Timestamp", "TaskDateCreated", "TaskAttributes", "WorkerSid", "TaskPriority",
                        "WorkerChannelAvailable", "DateCreated", "ConversationSid", "MessageSid"]),
                    prop_oneof![
                        "-?[0-9]{1,25}(\\.[0-9]{0,5})?(e[+-]?[0-9]{1,4})?",
                        "\\PC{0,30}",
                        Just("NaN".to_string()), Just("inf".to_string()),
                        Just("9999-12-31T23:59:59Z".to_string()), Just("{\"a\":[1,{}]}".to_string()),
                    ]), 0..14),
                received in any::<i64>(),
            ) {
                let params: Params = params.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                let e = Event::from_params(&params, received);
                let _ = (e.int("TaskAge"), e.instant_ms("TaskDateCreated"), e.json("TaskAttributes"),
                         e.bool("WorkerChannelAvailable"), e.partition_key(), serde_json::to_value(e.params()));
                let c = Event::from_conversation(&params, received);
                let _ = c.partition_key();
                let _ = validate(&params);
                let _ = validate_conversation(&params);
            }

            // The drain's direct decode gives the event the two-step path gives, for
            // any params (repeated names, escapes, any text) of either version.
            #[test]
            fn fuzz_decode_event_matches_decode_then_into_event(
                params in proptest::collection::vec((
                    prop_oneof![
                        prop::sample::select(vec!["EventType", "Sid", "TaskSid", "MessageSid",
                            "DateCreated", "TimestampMs", "A"]).prop_map(str::to_string),
                        "\\PC{0,8}",
                    ],
                    "\\PC{0,30}"), 0..14),
                received in any::<i64>(),
                conversation in any::<bool>(),
            ) {
                let params: Params = params;
                let q = if conversation {
                    QueuedCallback::ConversationsV1 { received_ms: received, params }
                } else {
                    QueuedCallback::TaskRouterV1 { received_ms: received, params }
                };
                let direct = QueuedCallback::decode_event(&q.encode()).unwrap();
                prop_assert_eq!(direct, q.into_event());
            }
        }
    }

    #[test]
    fn param_map_looks_up_sorts_and_serializes_like_a_map() {
        let e = Event::from_params(
            &p(&[
                ("b", "2"),
                ("a", "1"),
                ("é", "x\"y"),
                ("a", "dup"),
                ("", "empty name"),
            ]),
            0,
        );
        let m = e.params();
        assert_eq!(m.len(), 4);
        assert_eq!(
            (m.get("a"), m.get("b"), m.get("é"), m.get("")),
            (Some("1"), Some("2"), Some("x\"y"), Some("empty name"))
        );
        assert_eq!(m.get("c"), None);
        let names: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["", "a", "b", "é"]);
        assert_eq!(
            serde_json::to_string(m).unwrap(),
            r#"{"":"empty name","a":"1","b":"2","é":"x\"y"}"#
        );
    }

    #[test]
    fn decode_event_refuses_malformed_entries() {
        for bad in [
            &br#"{"v":"1","received_ms":1,"params":[["EventType"]]}"#[..],
            br#"{"v":"1","received_ms":1,"params":[["EventType","a","b"]]}"#,
            br#"{"v":"1","received_ms":1,"params":[["EventType",5]]}"#,
            br#"{"v":"1","received_ms":1,"params":{"EventType":"a"}}"#,
            br#"{"v":"9","received_ms":1,"params":[]}"#,
            br#"{"v":"1","params":[]}"#,
        ] {
            assert!(
                QueuedCallback::decode_event(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn queued_callback_round_trips() {
        let q = QueuedCallback::TaskRouterV1 {
            received_ms: 42,
            params: p(&[("EventType", "task.created")]),
        };
        assert_eq!(QueuedCallback::decode(&q.encode()).unwrap(), q);
        let c = QueuedCallback::ConversationsV1 {
            received_ms: 7,
            params: p(&[("EventType", "onMessageAdded"), ("Body", "é \"x\"")]),
        };
        assert_eq!(QueuedCallback::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn queued_callback_decodes_the_derived_format_and_refuses_unknown_versions() {
        // Entries written by the derived (tag-first) encoding, fields in any order.
        let old = br#"{"params":[["EventType","task.created"]],"received_ms":5,"v":"1"}"#;
        assert_eq!(
            QueuedCallback::decode(old).unwrap(),
            QueuedCallback::TaskRouterV1 {
                received_ms: 5,
                params: p(&[("EventType", "task.created")]),
            }
        );
        let err = QueuedCallback::decode(br#"{"v":"9","received_ms":1,"params":[]}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown queue entry version"),
            "{err}"
        );
        assert!(QueuedCallback::decode(br#"{"v":"1","params":[]}"#).is_err());
    }
}
