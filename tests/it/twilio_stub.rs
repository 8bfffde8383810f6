//! Test-only local stand-in for Twilio's TaskRouter, Sync and Conversations (messages,
//! read-only) REST APIs.
//!
//! One in-process HTTP/1 server on 127.0.0.1 serves all three API families
//! (`/v1/Workspaces/…`, `/v1/Services/…` and `/v1/Conversations/…`), with Basic auth,
//! Twilio-shaped paging and error bodies, Sync validation and per-object rate limits,
//! failure injection, and a request log.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::watch;

const MAX_DATA_BYTES: usize = 16 * 1024;
const MAX_TTL: i64 = 31_536_000;
const WRITES_PER_SECOND: usize = 20;
/// Largest `PageSize` of the ordinary lists; Conversations lists stop at 100.
const MAX_PAGE_SIZE: usize = 1000;
const MAX_CONVERSATIONS_PAGE_SIZE: usize = 100;
const MAX_SYNC_PAGE_SIZE: usize = 100;
const TASK_STATUSES: [&str; 6] = [
    "pending",
    "reserved",
    "assigned",
    "wrapping",
    "completed",
    "canceled",
];

/// One request as the stub saw it (rejected ones included).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub form: Vec<(String, String)>,
    pub status: u16,
    pub at: Instant,
}

/// The running stub. Dropping it stops the listener and every open connection.
pub struct TwilioStub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: watch::Sender<bool>,
}

#[derive(Default)]
struct Workspace {
    activities: Vec<Value>,
    workers: Vec<Value>,
    channels: HashMap<String, Vec<Value>>,
    tasks: Vec<Value>,
    /// TaskRouter Event resources (`sid`, `event_type`, `event_date_ms`, `event_data`…).
    events: Vec<Value>,
}

/// A Sync document, map, map item, list or list item (`name` is the unique name, or the
/// map item key; list items have none, their index is the key of `SyncList::items`).
struct Entry {
    sid: String,
    name: Option<String>,
    data: Value,
    revision: u64,
    expires: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

struct SyncMap {
    meta: Entry,
    items: BTreeMap<String, Entry>,
}

/// `next_index` only grows: indexes of deleted or expired items are never reused.
struct SyncList {
    meta: Entry,
    items: BTreeMap<i64, Entry>,
    next_index: i64,
}

#[derive(Default)]
struct Service {
    docs: Vec<Entry>,
    maps: Vec<SyncMap>,
    lists: Vec<SyncList>,
}

#[derive(Default)]
struct Limiter(HashMap<String, VecDeque<Instant>>);

struct State {
    base_url: String,
    account_sid: String,
    auth_token: String,
    api_keys: HashMap<String, String>,
    workspaces: HashMap<String, Workspace>,
    services: HashMap<String, Service>,
    /// Conversation sid -> (its Conversation Service, its messages in ascending `index`
    /// order).
    conversations: HashMap<String, (String, Vec<Value>)>,
    /// The account's default Conversation Service: the only one the unscoped
    /// `/v1/Conversations/…` paths reach.
    default_chat_service: String,
    /// (path prefix, status, requests to fail, matching requests to let through first).
    failures: Vec<(String, u16, usize, usize)>,
    empty_lists: Vec<String>,
    /// When set, the Events list ignores `Page`/`PageToken` (always its first page, while
    /// still announcing a next page): the Event resource's docs say it does not page.
    events_unpaged: bool,
    limiter: Limiter,
    requests: Vec<Recorded>,
    /// Requests that Twilio's published definitions do not define (see [`crate::oai`]).
    violations: Vec<String>,
    /// The definitions' operation ids that requests used.
    operations: std::collections::BTreeSet<String>,
    /// Whether dropping the stub fails the test when `violations` is not empty.
    strict: bool,
    /// Added to the wall clock for Sync expiry (`advance`).
    clock_offset: chrono::Duration,
    /// Failures served after the request was processed (`fail_after_applying`).
    after: Vec<AfterRule>,
}

/// What the client gets instead of the real answer to a request that was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Afterwards {
    /// A Twilio error body with this status.
    Status(u16),
    /// The connection is closed without an answer (a reset or timeout as the client sees it).
    Drop,
}

struct AfterRule {
    method: String,
    path_prefix: String,
    outcome: Afterwards,
    left: usize,
}

struct Ctx {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
}

struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, &'static str)>,
}

/// Facts a Sync handler needs besides the service's own objects.
struct Env {
    url: String,
    account_sid: String,
    service_sid: String,
    now: DateTime<Utc>,
}

type Res = Result<Reply, Reply>;

impl TwilioStub {
    /// Starts on 127.0.0.1:0 in a background tokio task. Accepts Basic auth with
    /// account_sid:auth_token, and with any (key, secret) added by add_api_key.
    pub async fn start(account_sid: &str, auth_token: &str) -> TwilioStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("twilio stub: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("twilio stub: local addr");
        let state = Arc::new(Mutex::new(State {
            base_url: format!("http://{addr}"),
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            api_keys: HashMap::new(),
            workspaces: HashMap::new(),
            services: HashMap::new(),
            conversations: HashMap::new(),
            default_chat_service: new_sid("IS"),
            failures: Vec::new(),
            empty_lists: Vec::new(),
            events_unpaged: false,
            limiter: Limiter::default(),
            requests: Vec::new(),
            violations: Vec::new(),
            operations: Default::default(),
            strict: true,
            clock_offset: chrono::Duration::zero(),
            after: Vec::new(),
        }));
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(serve(listener, state.clone(), rx));
        TwilioStub {
            addr,
            state,
            shutdown,
        }
    }

    /// "http://127.0.0.1:PORT"; serves both TaskRouter and Sync paths.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_api_key(&self, key_sid: &str, secret: &str) {
        self.lock()
            .api_keys
            .insert(key_sid.to_string(), secret.to_string());
    }

    pub fn set_activities(&self, workspace_sid: &str, activities: Vec<Value>) {
        self.workspace(workspace_sid, |w| w.activities = activities);
    }

    pub fn set_workers(&self, workspace_sid: &str, workers: Vec<Value>) {
        self.workspace(workspace_sid, |w| w.workers = workers);
    }

    pub fn set_worker_channels(&self, workspace_sid: &str, worker_sid: &str, channels: Vec<Value>) {
        self.workspace(workspace_sid, |w| {
            w.channels.insert(worker_sid.to_string(), channels);
        });
    }

    /// Replaces the workspace's Events (the REST Events resource). `event_date` and
    /// `url` are filled in from `event_date_ms` and `sid` where missing.
    pub fn set_events(&self, workspace_sid: &str, events: Vec<Value>) {
        let base = format!("{}/v1/Workspaces/{workspace_sid}/Events", self.base_url());
        let events = events
            .into_iter()
            .map(|mut e| {
                if let Some(o) = e.as_object_mut() {
                    let ms = o.get("event_date_ms").and_then(Value::as_i64).unwrap_or(0);
                    let date = DateTime::<Utc>::from_timestamp_millis(ms)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    o.entry("event_date").or_insert(json!(date));
                    let sid = o.get("sid").and_then(Value::as_str).unwrap_or_default();
                    let url = format!("{base}/{sid}");
                    o.entry("url").or_insert(json!(url));
                }
                e
            })
            .collect();
        self.workspace(workspace_sid, |w| w.events = events);
    }

    /// Replaces the workspace's Tasks. As in TaskRouter, which deletes tasks once they
    /// end, `completed` and `canceled` ones are neither listed nor fetched (404).
    pub fn set_tasks(&self, workspace_sid: &str, tasks: Vec<Value>) {
        self.workspace(workspace_sid, |w| w.tasks = tasks);
    }

    /// While on, the Events list ignores `Page` and `PageToken`: every request gets the
    /// first page, and a next page is still announced (so following it repeats the page).
    pub fn set_events_unpaged(&self, on: bool) {
        self.lock().events_unpaged = on;
    }

    /// The account's default Conversation Service (`GET /v1/Configuration` names it).
    pub fn default_chat_service(&self) -> String {
        self.lock().default_chat_service.clone()
    }

    /// [`TwilioStub::set_service_conversation_messages`] in the default service.
    pub fn set_conversation_messages(&self, conversation_sid: &str, messages: Vec<Value>) {
        let service = self.default_chat_service();
        self.set_service_conversation_messages(&service, conversation_sid, messages);
    }

    /// Makes the conversation known in Conversation Service `service_sid` (an empty
    /// `messages` gives an empty list, not a 404) and replaces all its messages. It is
    /// reachable at `/v1/Services/{service_sid}/Conversations/{sid}/…`, and at the
    /// unscoped `/v1/Conversations/{sid}/…` only when the service is the default one,
    /// as in Twilio. Each message is a Conversations Message object (`sid` "IM…",
    /// `index`, `author`, `body`, `participant_sid`, `date_created`, …); `account_sid`,
    /// `chat_service_sid`, `conversation_sid` and `url` are filled in where missing or
    /// null. Lists serve them in ascending `index` order whatever the order given here.
    pub fn set_service_conversation_messages(
        &self,
        service_sid: &str,
        conversation_sid: &str,
        messages: Vec<Value>,
    ) {
        let mut st = self.lock();
        // Messages of the default service carry the unscoped URL, as Twilio shows them.
        let url = if service_sid == st.default_chat_service {
            format!(
                "{}/v1/Conversations/{conversation_sid}/Messages",
                st.base_url
            )
        } else {
            format!(
                "{}/v1/Services/{service_sid}/Conversations/{conversation_sid}/Messages",
                st.base_url
            )
        };
        let mut messages: Vec<Value> = messages
            .into_iter()
            .map(|mut m| {
                if let Some(o) = m.as_object_mut() {
                    let sid = o.get("sid").and_then(Value::as_str).unwrap_or_default();
                    let url = format!("{url}/{sid}");
                    for (k, v) in [
                        ("account_sid", st.account_sid.clone()),
                        ("chat_service_sid", service_sid.to_string()),
                        ("conversation_sid", conversation_sid.to_string()),
                        ("url", url),
                    ] {
                        if o.get(k).is_none_or(Value::is_null) {
                            o.insert(k.to_string(), Value::String(v));
                        }
                    }
                }
                m
            })
            .collect();
        messages.sort_by_key(|m| m["index"].as_i64());
        st.conversations.insert(
            conversation_sid.to_string(),
            (service_sid.to_string(), messages),
        );
    }

    /// The next `n` requests whose path starts with `path_prefix` (any method) get `status`
    /// with a Twilio error body instead of being processed (429 also gets `Retry-After: 1`).
    /// Checked after authentication, so unauthenticated requests do not use up the budget.
    pub fn fail_next(&self, path_prefix: &str, status: u16, n: usize) {
        assert!((400..=599).contains(&status), "fail_next: status {status}");
        self.fail_after(path_prefix, 0, status, n);
    }

    /// Forgets every injected failure not yet served.
    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Like `fail_next`, after letting `ok` matching requests through.
    pub fn fail_after(&self, path_prefix: &str, ok: usize, status: u16, n: usize) {
        assert!((400..=599).contains(&status), "fail_after: status {status}");
        if n > 0 {
            self.lock()
                .failures
                .push((path_prefix.to_string(), status, n, ok));
        }
    }

    /// While on, every *list* endpoint whose path starts with `path_prefix` answers with an
    /// empty first page (`next_page_url: null`). Fetches of single objects are unaffected.
    pub fn set_empty_list(&self, path_prefix: &str, on: bool) {
        let mut st = self.lock();
        st.empty_lists.retain(|p| p != path_prefix);
        if on {
            st.empty_lists.push(path_prefix.to_string());
        }
    }

    /// Makes Sync's clock jump forward by `d`: whatever expires within `d` is gone (404)
    /// from now on, as if that much time had passed.
    pub fn advance(&self, d: Duration) {
        let d = chrono::Duration::from_std(d).expect("twilio stub: advance");
        self.lock().clock_offset += d;
    }

    /// The next `n` requests with this method whose path starts with `path_prefix` are
    /// processed as usual (a list item is appended, a document written…), and then the
    /// client gets `outcome` instead of the real answer. Only requests that succeeded
    /// count; they are recorded with the status sent (0 for `Afterwards::Drop`).
    pub fn fail_after_applying(
        &self,
        method: &str,
        path_prefix: &str,
        outcome: Afterwards,
        n: usize,
    ) {
        if n > 0 {
            self.lock().after.push(AfterRule {
                method: method.to_string(),
                path_prefix: path_prefix.to_string(),
                outcome,
                left: n,
            });
        }
    }

    /// A map (`kind` "Maps") or list ("Lists") resource as the API shows it (`sid`,
    /// `date_expires`…), looked up by unique name or sid; None when missing or expired.
    pub fn container(&self, service_sid: &str, kind: &str, name: &str) -> Option<Value> {
        let mut st = self.lock();
        let env = st.env(service_sid);
        let svc = st.services.get_mut(service_sid)?;
        svc.purge(env.now);
        match kind {
            "Maps" => svc.map(name).map(|i| map_json(&env, &svc.maps[i].meta)),
            "Lists" => svc.list(name).map(|i| list_json(&env, &svc.lists[i].meta)),
            _ => None,
        }
    }

    /// The `data` of a document, looked up by unique name (or sid).
    pub fn document(&self, service_sid: &str, unique_name: &str) -> Option<Value> {
        self.with_service(service_sid, |s| {
            s.doc(unique_name).map(|i| s.docs[i].data.clone())
        })
    }

    /// The document's `date_expires` (None when missing or without TTL).
    pub fn document_ttl_expires(&self, service_sid: &str, unique_name: &str) -> Option<String> {
        self.with_service(service_sid, |s| {
            s.doc(unique_name).and_then(|i| s.docs[i].expires.map(ts))
        })
    }

    /// key -> data for every live item of the map (looked up by unique name or sid).
    pub fn map_items(&self, service_sid: &str, map_name: &str) -> BTreeMap<String, Value> {
        self.with_service(service_sid, |s| {
            s.map(map_name).map(|i| {
                let items = &s.maps[i].items;
                items
                    .iter()
                    .map(|(k, e)| (k.clone(), e.data.clone()))
                    .collect()
            })
        })
        .unwrap_or_default()
    }

    /// (index, data) for every live item of the list (looked up by unique name or sid), in
    /// index order; empty when the list is missing.
    pub fn list_items(&self, service_sid: &str, list_name: &str) -> Vec<(i64, Value)> {
        self.with_service(service_sid, |s| {
            s.list(list_name).map(|i| {
                let items = &s.lists[i].items;
                items.iter().map(|(k, e)| (*k, e.data.clone())).collect()
            })
        })
        .unwrap_or_default()
    }

    /// Requests so far that Twilio's published definitions do not define: an unknown
    /// path, method or parameter, a repeated scalar, a comma-joined array, a value of
    /// the wrong type. Dropping a stub with any fails the test, unless
    /// [`TwilioStub::allow_nonconforming`] was called.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// For the stub's own tests, which send malformed requests on purpose.
    pub fn allow_nonconforming(&self) {
        self.lock().strict = false;
    }

    /// The operation ids (as in the definitions) that requests so far used.
    pub fn operations(&self) -> Vec<String> {
        self.lock().operations.iter().cloned().collect()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn workspace(&self, sid: &str, f: impl FnOnce(&mut Workspace)) {
        f(self.lock().workspaces.entry(sid.to_string()).or_default());
    }

    fn with_service<T>(&self, sid: &str, f: impl FnOnce(&Service) -> Option<T>) -> Option<T> {
        let mut st = self.lock();
        let now = st.now();
        let svc = st.services.get_mut(sid)?;
        svc.purge(now);
        f(svc)
    }
}

impl Drop for TwilioStub {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        // Every test that talks to the stub also checks that the client sent only what
        // Twilio's definitions define.
        let st = self.lock();
        if st.strict && !st.violations.is_empty() && !std::thread::panicking() {
            panic!(
                "requests that Twilio's published API definitions do not define:\n{}",
                st.violations.join("\n")
            );
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut rx: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = rx.changed() => return,
        };
        let state = state.clone();
        let mut rx = rx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = rx.changed() => {}
            }
        });
    }
}

/// `Err` makes hyper close the connection without an answer (`Afterwards::Drop`).
async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let at = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let ctx = Ctx {
        method,
        path,
        query: form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        form: form_urlencoded::parse(&body).into_owned().collect(),
    };
    let (reply, dropped) = {
        let mut st = lock(&state);
        match crate::oai::check(&ctx.method, &ctx.path, &ctx.query, &ctx.form) {
            Ok(op) => {
                st.operations.insert(op);
            }
            Err(v) => st
                .violations
                .push(format!("{} {}: {v}", ctx.method, ctx.path)),
        }
        let mut reply = st.process(&ctx, auth.as_deref());
        let mut dropped = false;
        match st.after_applying(&ctx, reply.status) {
            Some(Afterwards::Status(s)) => reply = injected(s),
            Some(Afterwards::Drop) => dropped = true,
            None => {}
        }
        let rec = Recorded {
            method: ctx.method,
            path: ctx.path,
            query: raw_query,
            form: ctx.form,
            status: if dropped { 0 } else { reply.status },
            at,
        };
        let pos = st.requests.partition_point(|r| r.at <= at);
        st.requests.insert(pos, rec);
        (reply, dropped)
    };
    if dropped {
        return Err(std::io::Error::other(
            "twilio stub: connection dropped after applying",
        ));
    }
    Ok(reply.into_response())
}

impl State {
    /// Sync's clock: the wall clock plus `advance`d time.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    fn env(&self, is: &str) -> Env {
        Env {
            url: format!("{}/v1/Services/{is}", self.base_url),
            account_sid: self.account_sid.clone(),
            service_sid: is.to_string(),
            now: self.now(),
        }
    }

    /// The `fail_after_applying` outcome for a request that got `status`, if one is due.
    fn after_applying(&mut self, c: &Ctx, status: u16) -> Option<Afterwards> {
        if !(200..300).contains(&status) {
            return None;
        }
        let i = self
            .after
            .iter()
            .position(|r| r.method == c.method && c.path.starts_with(&r.path_prefix))?;
        let outcome = self.after[i].outcome;
        self.after[i].left -= 1;
        if self.after[i].left == 0 {
            self.after.remove(i);
        }
        Some(outcome)
    }

    fn process(&mut self, c: &Ctx, auth: Option<&str>) -> Reply {
        if !self.authorized(auth) {
            let mut r = Reply::err(401, 20003, "Authenticate");
            r.headers
                .push(("WWW-Authenticate", "Basic realm=\"Twilio API\""));
            return r;
        }
        if let Some(i) = self.failures.iter().position(|f| c.path.starts_with(&f.0)) {
            if self.failures[i].3 > 0 {
                self.failures[i].3 -= 1;
            } else {
                let status = self.failures[i].1;
                self.failures[i].2 -= 1;
                if self.failures[i].2 == 0 {
                    self.failures.remove(i);
                }
                return injected(status);
            }
        }
        let segs: Vec<String> = c
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(pct_decode)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match segs.as_slice() {
            ["v1", "Workspaces", ws, rest @ ..] => self.taskrouter(c, ws, rest),
            ["v1", "Services", is, "Conversations", ch, rest @ ..] => {
                self.conversations(c, Some(is), ch, rest)
            }
            ["v1", "Services", is, rest @ ..] => self.sync(c, is, rest).unwrap_or_else(|e| e),
            ["v1", "Conversations", ch, rest @ ..] => self.conversations(c, None, ch, rest),
            ["v1", "Configuration"] if c.method == "GET" => Reply::json(
                200,
                json!({"account_sid": self.account_sid,
                       "default_chat_service_sid": self.default_chat_service,
                       "default_messaging_service_sid": null,
                       "default_inactive_timer": null, "default_closed_timer": null,
                       "url": format!("{}/v1/Configuration", self.base_url),
                       "links": {}}),
            ),
            _ => not_found(c),
        }
    }

    fn authorized(&self, header: Option<&str>) -> bool {
        let Some(enc) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(enc.trim()) else {
            return false;
        };
        let Ok(pair) = String::from_utf8(raw) else {
            return false;
        };
        let Some((user, pass)) = pair.split_once(':') else {
            return false;
        };
        (user == self.account_sid && pass == self.auth_token)
            || self.api_keys.get(user).is_some_and(|s| s == pass)
    }

    fn taskrouter(&self, c: &Ctx, ws: &str, rest: &[&str]) -> Reply {
        let Some(w) = self.workspaces.get(ws) else {
            return not_found(c);
        };
        if c.method != "GET" {
            return Reply::err(405, 20004, "Method not allowed");
        }
        let (key, items) = match rest {
            ["Activities"] => ("activities", w.activities.clone()),
            ["Workers"] => {
                let f = [
                    ("ActivitySid", "activity_sid"),
                    ("ActivityName", "activity_name"),
                    ("Available", "available"),
                ];
                ("workers", filtered(&w.workers, c, &f))
            }
            ["Workers", wk, "Channels"] => match w.channels.get(*wk) {
                Some(ch) => ("channels", ch.clone()),
                None if find(&w.workers, "sid", wk).is_some() => ("channels", Vec::new()),
                None => return not_found(c),
            },
            ["Tasks"] => {
                // `AssignmentStatus` is an array parameter: one status per (repeated)
                // pair. A comma-joined value is one status that does not exist: 400.
                let mut wanted = Vec::new();
                for v in c.all("AssignmentStatus") {
                    if !TASK_STATUSES.contains(&v) {
                        return Reply::err(400, 20001, &format!("Invalid AssignmentStatus {v:?}"));
                    }
                    wanted.push(v);
                }
                let f = [
                    ("TaskQueueSid", "task_queue_sid"),
                    ("TaskChannel", "task_channel_unique_name"),
                ];
                let mut tasks = filtered(&existing_tasks(&w.tasks), c, &f);
                if !wanted.is_empty() {
                    tasks.retain(|t| wanted.iter().any(|s| field_is(t, "assignment_status", s)));
                }
                ("tasks", tasks)
            }
            ["Events"] => match events_in_window(&w.events, c) {
                Ok(list) if self.events_unpaged => {
                    let first = Ctx {
                        method: c.method.clone(),
                        path: c.path.clone(),
                        query: c
                            .query
                            .iter()
                            .filter(|(k, _)| k != "Page" && k != "PageToken")
                            .cloned()
                            .collect(),
                        form: Vec::new(),
                    };
                    return page(&self.base_url, &self.empty_lists, &first, "events", list);
                }
                Ok(list) => ("events", list),
                Err(r) => return r,
            },
            ["Events", sid] => return fetch(&w.events, "sid", sid, c),
            ["Activities", sid] => return fetch(&w.activities, "sid", sid, c),
            ["Workers", sid] => return fetch(&w.workers, "sid", sid, c),
            ["Tasks", sid] => return fetch(&existing_tasks(&w.tasks), "sid", sid, c),
            ["Workers", wk, "Channels", ch] => {
                let list = w.channels.get(*wk).map(Vec::as_slice).unwrap_or_default();
                return match find(list, "sid", ch) {
                    Some(v) => Reply::json(200, v.clone()),
                    None => fetch(list, "task_channel_unique_name", ch, c),
                };
            }
            _ => return not_found(c),
        };
        page(&self.base_url, &self.empty_lists, c, key, items)
    }

    /// Read-only Conversations messages, in Conversation Service `service` (`None`: the
    /// unscoped path, which reaches only the default service). Errors name the resource
    /// without `/v1`, as Twilio's Conversations API does.
    fn conversations(&self, c: &Ctx, service: Option<&str>, ch: &str, rest: &[&str]) -> Reply {
        let missing = || {
            let resource = c.path.strip_prefix("/v1").unwrap_or(&c.path);
            let msg = format!("The requested resource {resource} was not found");
            Reply::err(404, 20404, &msg)
        };
        let service = service.unwrap_or(&self.default_chat_service);
        let Some(messages) = self
            .conversations
            .get(ch)
            .filter(|(is, _)| is == service)
            .map(|(_, m)| m)
        else {
            return missing();
        };
        if c.method != "GET" {
            return Reply::err(405, 20004, "Method not allowed");
        }
        match rest {
            ["Messages"] => {
                let mut items = messages.clone();
                if c.param("Order") == Some("desc") {
                    items.reverse();
                }
                let (base, empty) = (&self.base_url, &self.empty_lists);
                paged(
                    base,
                    empty,
                    c,
                    "messages",
                    items,
                    MAX_CONVERSATIONS_PAGE_SIZE,
                )
            }
            ["Messages", id] => {
                let by_index = |m: &&Value| {
                    let n = id.trim().parse::<i64>().ok();
                    n.is_some() && m["index"].as_i64() == n
                };
                match find(messages, "sid", id).or_else(|| messages.iter().find(by_index)) {
                    Some(m) => Reply::json(200, m.clone()),
                    None => missing(),
                }
            }
            _ => missing(),
        }
    }

    /// Sync. TTL parameters follow twilio_sync_v1.json: a document's `Ttl`; a map's or
    /// list's `CollectionTtl` (alias `Ttl`, ignored when both are given) at its creation or
    /// update, or `CollectionTtl` on an item create/update (an update only together with
    /// `Data` or an item TTL); an item's `ItemTtl` (alias `Ttl`). Unknown objects are
    /// generic 404s (20404), as the API answers for a missing map, list or item.
    fn sync(&mut self, c: &Ctx, is: &str, rest: &[&str]) -> Res {
        let env = self.env(is);
        let svc = self.services.entry(is.to_string()).or_default();
        svc.purge(env.now);
        let lim = &mut self.limiter;
        let rate_key = |sid: &str| format!("{is}/{sid}");
        let gone = || not_found(c);
        match (c.method.as_str(), rest) {
            ("POST", ["Documents"]) => {
                let data = parse_data(c)?.unwrap_or_else(|| json!({}));
                let ttl = parse_ttl(c, &["Ttl"])?;
                let name = c.param("UniqueName").map(str::to_string);
                if name.as_deref().is_some_and(|n| svc.doc(n).is_some()) {
                    return Err(Reply::err(409, 54301, "Unique name already exists"));
                }
                let e = Entry::new("ET", name, data, ttl, env.now);
                lim.record(rate_key(&e.sid));
                let body = doc_json(&env, &e);
                svc.docs.push(e);
                Ok(Reply::json(201, body))
            }
            ("GET", ["Documents"]) => {
                let items = svc.docs.iter().map(|d| doc_json(&env, d)).collect();
                Ok(sync_page(
                    &self.base_url,
                    &self.empty_lists,
                    c,
                    "documents",
                    items,
                ))
            }
            (m, ["Documents", id]) => {
                let i = svc.doc(id).ok_or_else(gone)?;
                let key = rate_key(&svc.docs[i].sid);
                match m {
                    "GET" => Ok(Reply::json(200, doc_json(&env, &svc.docs[i]))),
                    "POST" => {
                        lim.check(&key)?;
                        let data = parse_data(c)?;
                        let ttl = parse_ttl(c, &["Ttl"])?;
                        svc.docs[i].update(data, ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(200, doc_json(&env, &svc.docs[i])))
                    }
                    "DELETE" => {
                        lim.check(&key)?;
                        svc.docs.remove(i);
                        lim.record(key);
                        Ok(Reply::empty(204))
                    }
                    _ => Err(Reply::err(405, 20004, "Method not allowed")),
                }
            }
            ("POST", ["Maps"]) => {
                let ttl = parse_ttl(c, &["CollectionTtl", "Ttl"])?;
                let name = c.param("UniqueName").map(str::to_string);
                if name.as_deref().is_some_and(|n| svc.map(n).is_some()) {
                    return Err(Reply::err(409, 54301, "Unique name already exists"));
                }
                let meta = Entry::new("MP", name, Value::Null, ttl, env.now);
                lim.record(rate_key(&meta.sid));
                let body = map_json(&env, &meta);
                svc.maps.push(SyncMap {
                    meta,
                    items: BTreeMap::new(),
                });
                Ok(Reply::json(201, body))
            }
            ("GET", ["Maps"]) => {
                let items = svc.maps.iter().map(|m| map_json(&env, &m.meta)).collect();
                Ok(sync_page(
                    &self.base_url,
                    &self.empty_lists,
                    c,
                    "maps",
                    items,
                ))
            }
            (m, ["Maps", id, rest @ ..]) => {
                let i = svc.map(id).ok_or_else(gone)?;
                let key = rate_key(&svc.maps[i].meta.sid);
                let map = &mut svc.maps[i];
                match (m, rest) {
                    ("GET", []) => Ok(Reply::json(200, map_json(&env, &map.meta))),
                    ("POST", []) => {
                        lim.check(&key)?;
                        let ttl = parse_ttl(c, &["CollectionTtl", "Ttl"])?;
                        map.meta.update(None, ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(200, map_json(&env, &map.meta)))
                    }
                    ("DELETE", []) => {
                        lim.check(&key)?;
                        svc.maps.remove(i);
                        lim.record(key);
                        Ok(Reply::empty(204))
                    }
                    ("GET", ["Items"]) => {
                        let from = c.param("From").map(str::to_string);
                        let mut items: Vec<Value> = map
                            .items
                            .iter()
                            .filter(|(k, _)| from.as_ref().is_none_or(|f| in_bounds(c, *k, f)))
                            .map(|(_, e)| item_json(&env, map, e))
                            .collect();
                        if c.param("Order") == Some("desc") {
                            items.reverse();
                        }
                        Ok(sync_page(
                            &self.base_url,
                            &self.empty_lists,
                            c,
                            "items",
                            items,
                        ))
                    }
                    ("POST", ["Items"]) => {
                        let k = c.param("Key").ok_or_else(|| {
                            Reply::err(400, 20001, "Missing required parameter Key")
                        })?;
                        lim.check(&key)?;
                        let data = parse_data(c)?.ok_or_else(|| {
                            Reply::err(400, 20001, "Missing required parameter Data")
                        })?;
                        let ttl = parse_ttl(c, &["ItemTtl", "Ttl"])?;
                        let collection_ttl = parse_ttl(c, &["CollectionTtl"])?;
                        if map.items.contains_key(k) {
                            return Err(Reply::err(409, 54208, "Item already exists"));
                        }
                        let e = Entry::new("", Some(k.to_string()), data, ttl, env.now);
                        let body = item_json(&env, map, &e);
                        map.items.insert(k.to_string(), e);
                        map.meta.renew(collection_ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(201, body))
                    }
                    (m, ["Items", k]) => {
                        if !map.items.contains_key(*k) {
                            return Err(gone());
                        }
                        match m {
                            "GET" => Ok(Reply::json(200, item_json(&env, map, &map.items[*k]))),
                            "POST" => {
                                lim.check(&key)?;
                                let (data, ttl, collection_ttl) = item_update(c)?;
                                if let Some(e) = map.items.get_mut(*k) {
                                    e.update(data, ttl, env.now);
                                }
                                map.meta.renew(collection_ttl, env.now);
                                lim.record(key);
                                Ok(Reply::json(200, item_json(&env, map, &map.items[*k])))
                            }
                            "DELETE" => {
                                lim.check(&key)?;
                                map.items.remove(*k);
                                lim.record(key);
                                Ok(Reply::empty(204))
                            }
                            _ => Err(Reply::err(405, 20004, "Method not allowed")),
                        }
                    }
                    _ => Err(gone()),
                }
            }
            ("POST", ["Lists"]) => {
                let ttl = parse_ttl(c, &["CollectionTtl", "Ttl"])?;
                let name = c.param("UniqueName").map(str::to_string);
                if name.as_deref().is_some_and(|n| svc.list(n).is_some()) {
                    return Err(Reply::err(409, 54301, "Unique name already exists"));
                }
                let meta = Entry::new("ES", name, Value::Null, ttl, env.now);
                lim.record(rate_key(&meta.sid));
                let body = list_json(&env, &meta);
                svc.lists.push(SyncList {
                    meta,
                    items: BTreeMap::new(),
                    next_index: 0,
                });
                Ok(Reply::json(201, body))
            }
            ("GET", ["Lists"]) => {
                let items = svc.lists.iter().map(|l| list_json(&env, &l.meta)).collect();
                Ok(sync_page(
                    &self.base_url,
                    &self.empty_lists,
                    c,
                    "lists",
                    items,
                ))
            }
            (m, ["Lists", id, rest @ ..]) => {
                let i = svc.list(id).ok_or_else(gone)?;
                let key = rate_key(&svc.lists[i].meta.sid);
                let list = &mut svc.lists[i];
                match (m, rest) {
                    ("GET", []) => Ok(Reply::json(200, list_json(&env, &list.meta))),
                    ("POST", []) => {
                        lim.check(&key)?;
                        let ttl = parse_ttl(c, &["CollectionTtl", "Ttl"])?;
                        list.meta.update(None, ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(200, list_json(&env, &list.meta)))
                    }
                    ("DELETE", []) => {
                        lim.check(&key)?;
                        svc.lists.remove(i);
                        lim.record(key);
                        Ok(Reply::empty(204))
                    }
                    ("GET", ["Items"]) => {
                        let from = match c.param("From") {
                            None => None,
                            Some(f) => Some(
                                f.trim()
                                    .parse::<i64>()
                                    .map_err(|_| Reply::err(400, 20001, "Invalid From"))?,
                            ),
                        };
                        let mut items: Vec<Value> = list
                            .items
                            .iter()
                            .filter(|(n, _)| from.is_none_or(|f| in_bounds(c, *n, &f)))
                            .map(|(n, e)| list_item_json(&env, list, *n, e))
                            .collect();
                        if c.param("Order") == Some("desc") {
                            items.reverse();
                        }
                        Ok(sync_page(
                            &self.base_url,
                            &self.empty_lists,
                            c,
                            "items",
                            items,
                        ))
                    }
                    ("POST", ["Items"]) => {
                        lim.check(&key)?;
                        let data = parse_data(c)?.ok_or_else(|| {
                            Reply::err(400, 20001, "Missing required parameter Data")
                        })?;
                        let ttl = parse_ttl(c, &["ItemTtl", "Ttl"])?;
                        let collection_ttl = parse_ttl(c, &["CollectionTtl"])?;
                        let n = list.next_index;
                        list.next_index += 1;
                        let e = Entry::new("", None, data, ttl, env.now);
                        let body = list_item_json(&env, list, n, &e);
                        list.items.insert(n, e);
                        list.meta.renew(collection_ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(201, body))
                    }
                    (m, ["Items", idx]) => {
                        let n = idx
                            .trim()
                            .parse::<i64>()
                            .ok()
                            .filter(|n| list.items.contains_key(n))
                            .ok_or_else(gone)?;
                        match m {
                            "GET" => Ok(Reply::json(
                                200,
                                list_item_json(&env, list, n, &list.items[&n]),
                            )),
                            "POST" => {
                                lim.check(&key)?;
                                let (data, ttl, collection_ttl) = item_update(c)?;
                                if let Some(e) = list.items.get_mut(&n) {
                                    e.update(data, ttl, env.now);
                                }
                                list.meta.renew(collection_ttl, env.now);
                                lim.record(key);
                                Ok(Reply::json(
                                    200,
                                    list_item_json(&env, list, n, &list.items[&n]),
                                ))
                            }
                            "DELETE" => {
                                lim.check(&key)?;
                                list.items.remove(&n);
                                lim.record(key);
                                Ok(Reply::empty(204))
                            }
                            _ => Err(Reply::err(405, 20004, "Method not allowed")),
                        }
                    }
                    _ => Err(gone()),
                }
            }
            _ => Err(gone()),
        }
    }
}

impl Service {
    fn purge(&mut self, now: DateTime<Utc>) {
        self.docs.retain(|d| d.live(now));
        self.maps.retain(|m| m.meta.live(now));
        for m in &mut self.maps {
            m.items.retain(|_, e| e.live(now));
        }
        self.lists.retain(|l| l.meta.live(now));
        for l in &mut self.lists {
            l.items.retain(|_, e| e.live(now));
        }
    }

    fn doc(&self, id: &str) -> Option<usize> {
        self.docs.iter().position(|d| d.is(id))
    }

    fn map(&self, id: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.meta.is(id))
    }

    fn list(&self, id: &str) -> Option<usize> {
        self.lists.iter().position(|l| l.meta.is(id))
    }
}

impl Entry {
    fn new(
        prefix: &str,
        name: Option<String>,
        data: Value,
        ttl: Option<i64>,
        now: DateTime<Utc>,
    ) -> Entry {
        Entry {
            sid: if prefix.is_empty() {
                String::new()
            } else {
                new_sid(prefix)
            },
            name,
            data,
            revision: 0,
            expires: expiry(ttl, now),
            created: now,
            updated: now,
        }
    }

    fn is(&self, id: &str) -> bool {
        self.sid == id || self.name.as_deref() == Some(id)
    }

    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    /// A container's expiry set by an item write's `CollectionTtl` (0: never expires).
    fn renew(&mut self, collection_ttl: Option<i64>, now: DateTime<Utc>) {
        if collection_ttl.is_some() {
            self.expires = expiry(collection_ttl, now);
        }
    }

    fn update(&mut self, data: Option<Value>, ttl: Option<i64>, now: DateTime<Utc>) {
        if let Some(d) = data {
            self.data = d;
        }
        if ttl.is_some() {
            self.expires = expiry(ttl, now);
        }
        self.revision += 1;
        self.updated = now;
    }
}

impl Limiter {
    /// 429/54009 when the object already had WRITES_PER_SECOND writes in the last second.
    fn check(&mut self, key: &str) -> Result<(), Reply> {
        let now = Instant::now();
        let q = self.0.entry(key.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            q.pop_front();
        }
        if q.len() >= WRITES_PER_SECOND {
            let mut r = Reply::err(429, 54009, "Rate limit exceeded");
            r.headers.push(("Retry-After", "1"));
            return Err(r);
        }
        Ok(())
    }

    /// Counts an accepted write.
    fn record(&mut self, key: String) {
        self.0.entry(key).or_default().push_back(Instant::now());
    }
}

impl Ctx {
    fn all(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .chain(&self.query)
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    fn err(status: u16, code: u32, message: &str) -> Reply {
        Reply::json(
            status,
            json!({
                "code": code,
                "message": message,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": status,
            }),
        )
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut b = Response::builder().status(self.status);
        for (k, v) in self.headers {
            b = b.header(k, v);
        }
        let body = match self.body {
            Some(v) => {
                b = b.header("Content-Type", "application/json");
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        b.body(Full::new(body)).expect("twilio stub: response")
    }
}

fn injected(status: u16) -> Reply {
    let message = match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Injected failure",
    };
    let mut r = Reply::err(status, 20000 + u32::from(status), message);
    if status == 429 {
        r.headers.push(("Retry-After", "1"));
    }
    r
}

fn not_found(c: &Ctx) -> Reply {
    let msg = format!("The requested resource {} was not found", c.path);
    Reply::err(404, 20404, &msg)
}

fn find<'a>(list: &'a [Value], field: &str, want: &str) -> Option<&'a Value> {
    list.iter().find(|v| field_is(v, field, want))
}

fn fetch(list: &[Value], field: &str, want: &str, c: &Ctx) -> Reply {
    match find(list, field, want) {
        Some(v) => Reply::json(200, v.clone()),
        None => not_found(c),
    }
}

/// String fields compare as-is; booleans and numbers by their JSON text ("true", "3").
fn field_is(v: &Value, field: &str, want: &str) -> bool {
    match v.get(field) {
        Some(Value::String(s)) => s == want,
        Some(Value::Null) | None => false,
        Some(other) => other.to_string().eq_ignore_ascii_case(want),
    }
}

/// The tasks TaskRouter still has: it deletes tasks once they are completed or canceled.
fn existing_tasks(tasks: &[Value]) -> Vec<Value> {
    tasks
        .iter()
        .filter(|t| {
            !field_is(t, "assignment_status", "completed")
                && !field_is(t, "assignment_status", "canceled")
        })
        .cloned()
        .collect()
}

/// Keeps the objects matching every (query param → field) filter present in the request.
fn filtered(list: &[Value], c: &Ctx, filters: &[(&str, &str)]) -> Vec<Value> {
    let active: Vec<(&str, &str)> = filters
        .iter()
        .filter_map(|(p, f)| c.param(p).map(|v| (*f, v)))
        .collect();
    list.iter()
        .filter(|v| active.iter().all(|(f, want)| field_is(v, f, want)))
        .cloned()
        .collect()
}

/// The Events list's filters: `StartDate`/`EndDate` (ISO 8601, both inclusive) or else
/// `Minutes` back from now (default 15), `EventType`, `TaskSid`, `WorkerSid`,
/// `ReservationSid`. Newest first (Twilio does not promise an order).
fn events_in_window(events: &[Value], c: &Ctx) -> Result<Vec<Value>, Reply> {
    let date = |name: &str| -> Result<Option<i64>, Reply> {
        match c.param(name) {
            None => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(v.trim())
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|_| Reply::err(400, 20001, &format!("Invalid {name}"))),
        }
    };
    let now = Utc::now().timestamp_millis();
    let (start, end) = match (date("StartDate")?, date("EndDate")?) {
        (None, end) => {
            let minutes = c
                .param("Minutes")
                .map(|m| m.trim().parse::<i64>())
                .transpose()
                .map_err(|_| Reply::err(400, 20001, "Invalid Minutes"))?
                .unwrap_or(15);
            (end.unwrap_or(now) - minutes * 60_000, end.unwrap_or(now))
        }
        (Some(s), e) => (s, e.unwrap_or(now)),
    };
    let data_is =
        |e: &Value, field: &str, want: &str| e["event_data"][field].as_str() == Some(want);
    let mut out: Vec<Value> = events
        .iter()
        .filter(|e| {
            let ms = e["event_date_ms"].as_i64().unwrap_or(0);
            (start..=end).contains(&ms)
        })
        .filter(|e| {
            c.param("EventType")
                .is_none_or(|t| e["event_type"].as_str() == Some(t))
        })
        .filter(|e| c.param("TaskSid").is_none_or(|t| data_is(e, "task_sid", t)))
        .filter(|e| {
            c.param("WorkerSid")
                .is_none_or(|t| data_is(e, "worker_sid", t))
        })
        .filter(|e| {
            c.param("ReservationSid")
                .is_none_or(|t| data_is(e, "reservation_sid", t))
        })
        .cloned()
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e["event_date_ms"].as_i64()));
    Ok(out)
}

/// One page of a Twilio list: `{key: [...], meta: {...}}`. Position comes from `Page`;
/// `PageToken` is accepted and ignored. Other query params are kept in the page URLs.
fn page(base: &str, empty: &[String], c: &Ctx, key: &str, items: Vec<Value>) -> Reply {
    paged(base, empty, c, key, items, MAX_PAGE_SIZE)
}

/// `page` with `PageSize` (default 50) clamped to `1..=max_size`.
fn paged(
    base: &str,
    empty: &[String],
    c: &Ctx,
    key: &str,
    items: Vec<Value>,
    max_size: usize,
) -> Reply {
    let num = |name: &str| c.param(name).and_then(|v| v.trim().parse::<usize>().ok());
    let size = num("PageSize").unwrap_or(50).clamp(1, max_size);
    let page_no = num("Page").unwrap_or(0);
    let items = if empty.iter().any(|p| c.path.starts_with(p.as_str())) {
        Vec::new()
    } else {
        items
    };
    let start = page_no.saturating_mul(size);
    let chunk: Vec<Value> = items.iter().skip(start).take(size).cloned().collect();
    let has_next = start.saturating_add(size) < items.len();
    let url = |n: usize, token: Option<String>| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &c.query {
            if !matches!(k.as_str(), "Page" | "PageSize" | "PageToken") {
                ser.append_pair(k, v);
            }
        }
        ser.append_pair("PageSize", &size.to_string());
        ser.append_pair("Page", &n.to_string());
        if let Some(t) = token {
            ser.append_pair("PageToken", &t);
        }
        format!("{base}{}?{}", c.path, ser.finish())
    };
    let token = |kind: &str, n: usize| {
        format!(
            "P{kind}{:032x}",
            (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        )
    };
    let meta = json!({
        "page": page_no,
        "page_size": size,
        "first_page_url": url(0, None),
        "previous_page_url": (page_no > 0).then(|| url(page_no - 1, Some(token("B", page_no)))),
        "url": url(page_no, c.param("PageToken").map(str::to_string)),
        "next_page_url": has_next.then(|| url(page_no + 1, Some(token("T", page_no + 1)))),
        "key": key,
    });
    let mut body = serde_json::Map::new();
    body.insert(key.to_string(), Value::Array(chunk));
    body.insert("meta".to_string(), meta);
    Reply::json(200, Value::Object(body))
}

/// Parses `Data`: None when absent; 400/54006 over 16 KiB, 400/54001 when not JSON.
fn parse_data(c: &Ctx) -> Result<Option<Value>, Reply> {
    let Some(raw) = c.param("Data") else {
        return Ok(None);
    };
    if raw.len() > MAX_DATA_BYTES {
        return Err(Reply::err(400, 54006, "Document/item data too large"));
    }
    serde_json::from_str(raw)
        .map(Some)
        .map_err(|_| Reply::err(400, 54001, "Invalid data"))
}

/// The first of `names` present, as a TTL in seconds (0..=31536000, else 400/54011).
fn parse_ttl(c: &Ctx, names: &[&str]) -> Result<Option<i64>, Reply> {
    let Some(raw) = names.iter().find_map(|n| c.param(n)) else {
        return Ok(None);
    };
    match raw.trim().parse::<i64>() {
        Ok(t) if (0..=MAX_TTL).contains(&t) => Ok(Some(t)),
        _ => Err(Reply::err(400, 54011, "Invalid TTL")),
    }
}

/// An item update's `Data`, item TTL and `CollectionTtl`; the last only together with one
/// of the others (400 otherwise, as the definitions say).
type ItemUpdate = (Option<Value>, Option<i64>, Option<i64>);
fn item_update(c: &Ctx) -> Result<ItemUpdate, Reply> {
    let data = parse_data(c)?;
    let ttl = parse_ttl(c, &["ItemTtl", "Ttl"])?;
    let collection_ttl = parse_ttl(c, &["CollectionTtl"])?;
    if collection_ttl.is_some() && data.is_none() && ttl.is_none() {
        return Err(Reply::err(
            400,
            20001,
            "CollectionTtl can only be used together with Data or ItemTtl",
        ));
    }
    Ok((data, ttl, collection_ttl))
}

/// Whether `at` is on the requested side of `From` (`Bounds`: `inclusive`, the default,
/// or `exclusive`), in the page's `Order`.
fn in_bounds<T: Ord>(c: &Ctx, at: &T, from: &T) -> bool {
    let exclusive = c.param("Bounds") == Some("exclusive");
    match (c.param("Order") == Some("desc"), exclusive) {
        (false, false) => at >= from,
        (false, true) => at > from,
        (true, false) => at <= from,
        (true, true) => at < from,
    }
}

/// Sync's lists: `PageSize` at most 100.
fn sync_page(base: &str, empty: &[String], c: &Ctx, key: &str, items: Vec<Value>) -> Reply {
    paged(base, empty, c, key, items, MAX_SYNC_PAGE_SIZE)
}

/// TTL 0 (or none) means "never expires".
fn expiry(ttl: Option<i64>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    ttl.filter(|t| *t > 0)
        .map(|t| now + chrono::Duration::seconds(t))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn new_sid(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let a = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = (n ^ 0xA5A5_5A5A_DEAD_BEEF).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    format!("{prefix}{a:016x}{b:016x}")
}

fn common(env: &Env, e: &Entry) -> Value {
    json!({
        "account_sid": env.account_sid,
        "service_sid": env.service_sid,
        "revision": e.revision.to_string(),
        "data": e.data,
        "date_expires": e.expires.map(ts),
        "date_created": ts(e.created),
        "date_updated": ts(e.updated),
        "created_by": "system",
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(x)) = (base.as_object_mut(), extra) {
        b.extend(x);
    }
    base
}

fn doc_json(env: &Env, e: &Entry) -> Value {
    let url = format!("{}/Documents/{}", env.url, e.sid);
    with(
        common(env, e),
        json!({"sid": e.sid, "unique_name": e.name, "url": url}),
    )
}

fn map_json(env: &Env, e: &Entry) -> Value {
    container_json(env, "Maps", e)
}

fn list_json(env: &Env, e: &Entry) -> Value {
    container_json(env, "Lists", e)
}

/// A map or list resource: like a document without `data`, plus `links.items`.
fn container_json(env: &Env, kind: &str, e: &Entry) -> Value {
    let url = format!("{}/{kind}/{}", env.url, e.sid);
    let mut v = with(
        common(env, e),
        json!({"sid": e.sid, "unique_name": e.name, "links": {"items": format!("{url}/Items")}, "url": url}),
    );
    if let Some(o) = v.as_object_mut() {
        o.remove("data");
    }
    v
}

fn item_json(env: &Env, map: &SyncMap, e: &Entry) -> Value {
    let key = e.name.clone().unwrap_or_default();
    let url = format!(
        "{}/Maps/{}/Items/{}",
        env.url,
        map.meta.sid,
        pct_encode(&key)
    );
    with(
        common(env, e),
        json!({"key": key, "map_sid": map.meta.sid, "url": url}),
    )
}

fn list_item_json(env: &Env, list: &SyncList, index: i64, e: &Entry) -> Value {
    let url = format!("{}/Lists/{}/Items/{index}", env.url, list.meta.sid);
    with(
        common(env, e),
        json!({"index": index, "list_sid": list.meta.sid, "url": url}),
    )
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex
            .filter(|_| b[i] == b'%')
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pct_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "ACstub";
    const TOKEN: &str = "stub-token";
    const WS: &str = "WSstub";
    const IS: &str = "ISstub";
    const ACTIVITIES: &str = "/v1/Workspaces/WSstub/Activities";
    const WORKERS: &str = "/v1/Workspaces/WSstub/Workers";
    const TASKS: &str = "/v1/Workspaces/WSstub/Tasks";
    const DOCS: &str = "/v1/Services/ISstub/Documents";
    const MAPS: &str = "/v1/Services/ISstub/Maps";
    const ITEMS: &str = "/v1/Services/ISstub/Maps/agents/Items";
    const LISTS: &str = "/v1/Services/ISstub/Lists";
    const LIST_ITEMS: &str = "/v1/Services/ISstub/Lists/queue/Items";

    struct Got {
        status: u16,
        body: Value,
        retry_after: Option<String>,
    }

    impl Got {
        /// Checks the Twilio error shape and returns (status, code).
        fn err(&self) -> (u16, u64) {
            let b = &self.body;
            assert_eq!(b.as_object().map(|o| o.len()), Some(4), "error body: {b}");
            let code = b["code"].as_u64().unwrap();
            assert_eq!(b["status"], self.status);
            assert_eq!(
                b["more_info"],
                format!("https://www.twilio.com/docs/errors/{code}")
            );
            (self.status, code)
        }

        fn str(&self, pointer: &str) -> String {
            let v = self.body.pointer(pointer);
            v.and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{pointer} in {}", self.body))
                .into()
        }

        fn sids(&self, key: &str) -> Vec<String> {
            let list = self.body[key].as_array().unwrap();
            list.iter()
                .map(|t| t["sid"].as_str().unwrap().to_string())
                .collect()
        }
    }

    async fn send(
        method: &str,
        url: &str,
        form: &[(&str, &str)],
        auth: Option<(&str, &str)>,
    ) -> Got {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = reqwest::Client::new().request(method.clone(), url);
        if let Some((u, p)) = auth {
            rb = rb.basic_auth(u, Some(p));
        }
        if method == reqwest::Method::POST {
            rb = rb.form(form);
        }
        let resp = rb.send().await.expect("request to stub");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().into());
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Got {
            status,
            body,
            retry_after,
        }
    }

    /// Authenticated calls with the account credentials.
    trait Call {
        async fn call(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Got;
        async fn get(&self, path: &str) -> Got {
            self.call("GET", path, &[]).await
        }
        async fn post(&self, path: &str, form: &[(&str, &str)]) -> Got {
            self.call("POST", path, form).await
        }
        async fn delete(&self, path: &str) -> Got {
            self.call("DELETE", path, &[]).await
        }
    }

    impl Call for TwilioStub {
        async fn call(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Got {
            send(
                method,
                &format!("{}{path}", self.base_url()),
                form,
                Some((AC, TOKEN)),
            )
            .await
        }
    }

    fn task(i: usize, status: &str) -> Value {
        json!({"sid": format!("WT{i}"), "assignment_status": status,
               "task_channel_unique_name": "voice", "task_queue_sid": "WQ1", "age": 5})
    }

    #[tokio::test]
    async fn auth_is_required_and_accepts_token_and_api_keys() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        let idle = json!({"sid": "WA1", "friendly_name": "Idle", "available": true});
        stub.set_activities(WS, vec![idle]);
        let url = format!("{}{ACTIVITIES}", stub.base_url());
        let g = send("GET", &url, &[], None).await;
        let want = json!({"code": 20003, "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401});
        assert_eq!((g.status, g.body), (401, want));
        assert_eq!(
            send("GET", &url, &[], Some((AC, "wrong"))).await.status,
            401
        );
        let g = send("GET", &url, &[], Some((AC, TOKEN))).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.str("/activities/0/friendly_name"), "Idle");
        let key = Some(("SKkey1", "secret1"));
        assert_eq!(send("GET", &url, &[], key).await.status, 401);
        stub.add_api_key("SKkey1", "secret1");
        assert_eq!(send("GET", &url, &[], key).await.status, 200);
        assert_eq!(
            send("GET", &url, &[], Some(("SKkey1", "no"))).await.status,
            401
        );
        assert_eq!(stub.get("/v1/Nowhere").await.err(), (404, 20404));
        assert_eq!(
            stub.get("/v1/Workspaces/WSother/Workers").await.err(),
            (404, 20404)
        );
        let recs = stub.requests();
        assert_eq!(recs.len(), 8);
        assert_eq!(
            (recs[0].method.as_str(), recs[0].path.as_str()),
            ("GET", ACTIVITIES)
        );
        assert_eq!(recs[0].status, 401);
        assert!(recs.windows(2).all(|w| w[0].at <= w[1].at));
        stub.clear_requests();
        assert!(stub.requests().is_empty());
    }

    #[tokio::test]
    async fn workers_are_paged_by_following_next_page_url() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let worker = |i: usize| {
            json!({"sid": format!("WK{i:032}"), "friendly_name": format!("w{i}"),
                "activity_sid": "WA1", "activity_name": "Idle", "available": true,
                "attributes": "{}", "date_created": "2024-01-01T00:00:00Z"})
        };
        stub.set_workers(WS, (0..120).map(worker).collect());
        let mut url = Some(format!("{}{WORKERS}?PageSize=50", stub.base_url()));
        let (mut sids, mut sizes) = (std::collections::BTreeSet::new(), Vec::new());
        while let Some(u) = url {
            let g = send("GET", &u, &[], Some((AC, TOKEN))).await;
            assert_eq!(g.status, 200);
            sizes.push(g.sids("workers").len());
            for sid in g.sids("workers") {
                assert!(sids.insert(sid), "duplicate sid");
            }
            assert_eq!(
                (g.str("/meta/key"), &g.body["meta"]["page_size"]),
                ("workers".into(), &json!(50))
            );
            url = g.body["meta"]["next_page_url"].as_str().map(str::to_string);
            if let Some(n) = &url {
                assert!(
                    n.starts_with(&stub.base_url()) && n.contains("PageToken=PT"),
                    "{n}"
                );
            }
        }
        assert_eq!((sizes, sids.len()), (vec![50, 50, 20], 120));
        let idle = stub
            .get(&format!("{WORKERS}?ActivityName=Idle&PageSize=1000"))
            .await;
        assert_eq!(idle.sids("workers").len(), 120);
        let ch = json!({"sid": "WC1", "task_channel_unique_name": "voice"});
        stub.set_worker_channels(WS, "WK1", vec![ch]);
        assert_eq!(
            stub.get(&format!("{WORKERS}/WK1/Channels"))
                .await
                .sids("channels"),
            ["WC1"]
        );
        assert_eq!(
            stub.get(&format!("{WORKERS}/WKx/Channels")).await.err(),
            (404, 20404)
        );
    }

    #[tokio::test]
    async fn tasks_filter_by_assignment_status_and_empty_list_switch() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        stub.set_tasks(
            WS,
            TASK_STATUSES
                .iter()
                .enumerate()
                .map(|(i, s)| task(i, s))
                .collect(),
        );
        // Ended tasks are deleted: neither listed nor fetched.
        assert_eq!(
            stub.get(TASKS).await.sids("tasks"),
            ["WT0", "WT1", "WT2", "WT3"]
        );
        assert_eq!(stub.get(&format!("{TASKS}/WT3")).await.status, 200);
        for ended in ["WT4", "WT5"] {
            let g = stub.get(&format!("{TASKS}/{ended}")).await;
            assert_eq!(g.err(), (404, 20404));
            assert_eq!(
                g.str("/message"),
                format!("The requested resource {TASKS}/{ended} was not found")
            );
        }
        // `AssignmentStatus` is an array: repeated pairs, one status each.
        let g = stub
            .get(&format!(
                "{TASKS}?AssignmentStatus=assigned&AssignmentStatus=wrapping"
            ))
            .await;
        assert_eq!(g.sids("tasks"), ["WT2", "WT3"]);
        let g = stub
            .get(&format!("{TASKS}?AssignmentStatus=completed&PageSize=1"))
            .await;
        assert_eq!(g.sids("tasks"), Vec::<String>::new());
        assert!(g.body["meta"]["next_page_url"].is_null());
        let g = stub
            .get(&format!(
                "{TASKS}?AssignmentStatus=pending&AssignmentStatus=reserved&PageSize=1"
            ))
            .await;
        assert_eq!(g.sids("tasks"), ["WT0"]);
        let next = g.str("/meta/next_page_url");
        assert!(
            next.contains("AssignmentStatus=pending&AssignmentStatus=reserved&PageSize=1&Page=1"),
            "{next}"
        );
        // A comma-joined value is one status that does not exist, not several.
        for bad in ["pending,reserved", "pending%2Creserved", "bogus"] {
            assert_eq!(
                stub.get(&format!("{TASKS}?AssignmentStatus={bad}"))
                    .await
                    .err(),
                (400, 20001),
                "{bad}"
            );
        }

        stub.set_empty_list(TASKS, true);
        let g = stub.get(&format!("{TASKS}?AssignmentStatus=pending")).await;
        assert_eq!((g.status, g.sids("tasks").len()), (200, 0));
        assert!(g.body["meta"]["next_page_url"].is_null());
        assert_eq!(stub.get(&format!("{TASKS}/WT0")).await.status, 200);
        stub.set_empty_list(TASKS, false);
        assert_eq!(stub.get(TASKS).await.sids("tasks").len(), 4);
    }

    fn event(i: usize, ms: i64, ty: &str, task: &str, worker: &str) -> Value {
        json!({"sid": format!("EV{i:032}"), "event_type": ty, "event_date_ms": ms,
               "event_data": {"task_sid": task, "worker_sid": worker}})
    }

    #[tokio::test]
    async fn events_filter_by_window_task_worker_and_type_newest_first() {
        const EVENTS: &str = "/v1/Workspaces/WSstub/Events";
        let stub = TwilioStub::start(AC, TOKEN).await;
        let now = Utc::now().timestamp_millis();
        let min = 60_000;
        stub.set_events(
            WS,
            vec![
                event(1, now - 40 * min, "task.created", "WT1", ""),
                event(2, now - 10 * min, "task.created", "WT2", ""),
                event(3, now - 5 * min, "reservation.created", "WT2", "WK1"),
                event(4, now - 2 * min, "task.canceled", "WT1", ""),
            ],
        );
        let sids = |g: &Got| -> Vec<String> {
            g.sids("events")
                .iter()
                .map(|s| s.trim_start_matches(['E', 'V', '0']).to_string())
                .collect()
        };
        // No dates: the last 15 minutes (`Minutes` changes that), newest first.
        assert_eq!(sids(&stub.get(EVENTS).await), ["4", "3", "2"]);
        assert_eq!(
            sids(&stub.get(&format!("{EVENTS}?Minutes=60")).await),
            ["4", "3", "2", "1"]
        );
        let iso = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        };
        let q = |pairs: &[(&str, String)]| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                ser.append_pair(k, v);
            }
            format!("{EVENTS}?{}", ser.finish())
        };
        let (start, end) = (iso(now - 50 * min), iso(now - 3 * min));
        let g = stub
            .get(&q(&[
                ("StartDate", start.clone()),
                ("EndDate", end.clone()),
            ]))
            .await;
        assert_eq!(sids(&g), ["3", "2", "1"]);
        let g = stub
            .get(&q(&[
                ("StartDate", start.clone()),
                ("TaskSid", "WT1".into()),
            ]))
            .await;
        assert_eq!(sids(&g), ["4", "1"]);
        let g = stub
            .get(&q(&[
                ("StartDate", start.clone()),
                ("WorkerSid", "WK1".into()),
            ]))
            .await;
        assert_eq!(sids(&g), ["3"]);
        let g = stub
            .get(&q(&[
                ("StartDate", start),
                ("EventType", "task.created".into()),
            ]))
            .await;
        assert_eq!(sids(&g), ["2", "1"]);
        assert_eq!(
            stub.get(&format!("{EVENTS}?StartDate=yesterday"))
                .await
                .err(),
            (400, 20001)
        );
        assert_eq!(
            stub.get(&format!("{EVENTS}/EV{:032}", 9)).await.err(),
            (404, 20404)
        );
    }

    #[tokio::test]
    async fn events_pages_hold_at_most_1000_and_unpaged_lists_repeat() {
        const EVENTS: &str = "/v1/Workspaces/WSstub/Events";
        let stub = TwilioStub::start(AC, TOKEN).await;
        let now = Utc::now().timestamp_millis();
        stub.set_events(
            WS,
            (0..1500)
                .map(|i| event(i, now - 1_000 - i as i64, "task.updated", "WT1", ""))
                .collect(),
        );
        let g = stub.get(&format!("{EVENTS}?PageSize=5000")).await;
        assert_eq!(g.sids("events").len(), 1000);
        assert_eq!(g.body["meta"]["page_size"], 1000);
        let next = g.str("/meta/next_page_url");
        let g2 = send("GET", &next, &[], Some((AC, TOKEN))).await;
        assert_eq!(g2.sids("events").len(), 500);
        assert!(g2.body["meta"]["next_page_url"].is_null());

        stub.set_events_unpaged(true);
        let g = stub.get(&format!("{EVENTS}?PageSize=1000")).await;
        let next = g.str("/meta/next_page_url");
        let again = send("GET", &next, &[], Some((AC, TOKEN))).await;
        assert_eq!(again.sids("events"), g.sids("events"));
        assert_eq!(again.str("/meta/next_page_url"), next);
    }

    #[tokio::test]
    async fn documents_lifecycle_ttl_and_validation() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        let g = stub
            .post(DOCS, &[("UniqueName", "summary"), ("Data", r#"{"a":1}"#)])
            .await;
        assert_eq!(g.status, 201);
        let sid = g.str("/sid");
        assert!(sid.starts_with("ET") && sid.len() == 34, "{sid}");
        assert_eq!(
            (g.str("/unique_name"), g.str("/revision")),
            ("summary".into(), "0".into())
        );
        assert_eq!(g.body["data"], json!({"a": 1}));
        assert!(g.body["date_expires"].is_null());
        assert_eq!(g.str("/created_by"), "system");
        let dup = stub
            .post(DOCS, &[("UniqueName", "summary"), ("Data", "{}")])
            .await;
        assert_eq!(dup.err(), (409, 54301));

        let g = stub
            .post(&format!("{DOCS}/summary"), &[("Data", r#"{"b":2}"#)])
            .await;
        assert_eq!((g.status, g.str("/revision")), (200, "1".into()));
        assert_eq!(g.body["data"], json!({"b": 2}));
        assert_eq!(
            stub.get(&format!("{DOCS}/{sid}")).await.body["data"],
            json!({"b": 2})
        );
        assert_eq!(stub.document(IS, "summary"), Some(json!({"b": 2})));
        assert_eq!(
            stub.get(&format!("{DOCS}/missing")).await.err(),
            (404, 20404)
        );
        let g = stub
            .post(&format!("{DOCS}/missing"), &[("Data", "{}")])
            .await;
        assert_eq!(g.err(), (404, 20404));

        let g = stub
            .post(DOCS, &[("UniqueName", "ttl"), ("Ttl", "3600")])
            .await;
        assert_eq!(g.status, 201);
        let first = g.str("/date_expires");
        let exp = DateTime::parse_from_rfc3339(&first)
            .unwrap()
            .with_timezone(&Utc);
        assert!((exp - Utc::now()).num_seconds().abs_diff(3600) <= 5);
        assert_eq!(stub.document_ttl_expires(IS, "ttl"), Some(first.clone()));
        let renewed = stub
            .post(&format!("{DOCS}/ttl"), &[("Ttl", "7200")])
            .await
            .str("/date_expires");
        assert!(renewed > first, "{renewed} vs {first}");
        assert_eq!(stub.document_ttl_expires(IS, "ttl"), Some(renewed));

        let g = stub
            .post(DOCS, &[("UniqueName", "x"), ("Data", "{nope")])
            .await;
        assert_eq!(g.err(), (400, 54001));
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(17 * 1024));
        let g = stub
            .post(DOCS, &[("UniqueName", "x"), ("Data", &big)])
            .await;
        assert_eq!(g.err(), (400, 54006));
        let g = stub
            .post(&format!("{DOCS}/summary"), &[("Data", &big)])
            .await;
        assert_eq!(g.err(), (400, 54006));
        for bad in ["-1", "31536001", "soon"] {
            let g = stub.post(DOCS, &[("UniqueName", "x"), ("Ttl", bad)]).await;
            assert_eq!(g.err(), (400, 54011));
        }
        assert!(stub.document(IS, "x").is_none());
        assert_eq!(stub.delete(&format!("{DOCS}/summary")).await.status, 204);
        assert!(stub.document(IS, "summary").is_none());
    }

    #[tokio::test]
    async fn maps_and_items() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let g = stub.post(MAPS, &[("UniqueName", "agents")]).await;
        assert_eq!(g.status, 201);
        let map_sid = g.str("/sid");
        assert!(map_sid.starts_with("MP"));
        assert_eq!(
            stub.post(MAPS, &[("UniqueName", "agents")]).await.err(),
            (409, 54301)
        );
        assert_eq!(
            stub.get(&format!("{MAPS}/{map_sid}"))
                .await
                .str("/unique_name"),
            "agents"
        );
        assert_eq!(stub.get(&format!("{MAPS}/nomap")).await.err(), (404, 20404));

        let g = stub
            .post(
                ITEMS,
                &[
                    ("Key", "WK1"),
                    ("Data", r#"{"s":"idle"}"#),
                    ("ItemTtl", "60"),
                ],
            )
            .await;
        assert_eq!(
            (g.status, g.str("/key"), g.str("/map_sid")),
            (201, "WK1".into(), map_sid.clone())
        );
        assert!(g.body["date_expires"].is_string());
        assert_eq!(
            stub.post(ITEMS, &[("Key", "WK1"), ("Data", "{}")])
                .await
                .err(),
            (409, 54208)
        );
        let g = stub
            .post(&format!("{ITEMS}/WK1"), &[("Data", r#"{"s":"busy"}"#)])
            .await;
        assert_eq!((g.status, g.str("/revision")), (200, "1".into()));
        let g = stub.post(ITEMS, &[("Key", "a b/c"), ("Data", "[1]")]).await;
        assert_eq!(g.status, 201);
        assert!(g.str("/url").ends_with("/Items/a%20b%2Fc"));
        assert_eq!(
            stub.get(&format!("{ITEMS}/a%20b%2Fc")).await.body["data"],
            json!([1])
        );
        assert_eq!(stub.get(&format!("{ITEMS}/WK9")).await.err(), (404, 20404));
        let g = stub.post(&format!("{ITEMS}/WK9"), &[("Data", "{}")]).await;
        assert_eq!(g.err(), (404, 20404));
        assert_eq!(
            stub.get(&format!("{MAPS}/nomap/Items/WK1")).await.err(),
            (404, 20404)
        );
        let g = stub
            .post(
                &format!("{MAPS}/nomap/Items"),
                &[("Key", "k"), ("Data", "{}")],
            )
            .await;
        assert_eq!(g.err(), (404, 20404));
        assert_eq!(
            stub.post(ITEMS, &[("Key", "k"), ("Data", "{")]).await.err(),
            (400, 54001)
        );

        let list = stub.get(&format!("{ITEMS}?PageSize=1")).await;
        assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
        assert_eq!(list.str("/meta/key"), "items");
        assert!(list.body["meta"]["next_page_url"].is_string());
        let seen = stub.map_items(IS, "agents");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen["WK1"], json!({"s": "busy"}));
        assert_eq!(stub.map_items(IS, &map_sid).len(), 2);
        assert_eq!(stub.delete(&format!("{ITEMS}/WK1")).await.status, 204);
        assert!(!stub.map_items(IS, "agents").contains_key("WK1"));
        assert!(stub.map_items(IS, "nomap").is_empty());
    }

    fn indexes(g: &Got) -> Vec<i64> {
        let items = g.body["items"].as_array().unwrap();
        items.iter().map(|i| i["index"].as_i64().unwrap()).collect()
    }

    #[tokio::test]
    async fn lists_create_fetch_duplicate_missing_and_delete() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        let g = stub
            .post(LISTS, &[("UniqueName", "queue"), ("Ttl", "3600")])
            .await;
        assert_eq!(g.status, 201);
        let sid = g.str("/sid");
        assert!(sid.starts_with("ES") && sid.len() == 34, "{sid}");
        assert!(sid[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{sid}");
        assert_eq!(
            (
                g.str("/unique_name"),
                g.str("/revision"),
                g.str("/created_by")
            ),
            ("queue".into(), "0".into(), "system".into())
        );
        assert_eq!(
            (g.str("/account_sid"), g.str("/service_sid")),
            (AC.into(), IS.into())
        );
        assert_eq!(g.str("/url"), format!("{}{LISTS}/{sid}", stub.base_url()));
        assert!(g.body.get("data").is_none());
        for f in ["date_expires", "date_created", "date_updated"] {
            assert!(g.body[f].is_string(), "{f}");
        }
        assert_eq!(
            stub.post(LISTS, &[("UniqueName", "queue")]).await.err(),
            (409, 54301)
        );
        let g = stub
            .post(LISTS, &[("UniqueName", "other"), ("CollectionTtl", "0")])
            .await;
        assert_eq!(g.status, 201);
        assert!(g.body["date_expires"].is_null());
        for bad in ["-1", "31536001", "soon"] {
            let g = stub.post(LISTS, &[("UniqueName", "x"), ("Ttl", bad)]).await;
            assert_eq!(g.err(), (400, 54011));
        }
        assert_eq!(
            stub.get(&format!("{LISTS}/{sid}"))
                .await
                .str("/unique_name"),
            "queue"
        );
        assert_eq!(stub.get(&format!("{LISTS}/queue")).await.str("/sid"), sid);
        assert_eq!(stub.get(LISTS).await.sids("lists").len(), 2);
        assert_eq!(
            stub.get(&format!("{LISTS}/nolist")).await.err(),
            (404, 20404)
        );
        assert_eq!(
            stub.delete(&format!("{LISTS}/nolist")).await.err(),
            (404, 20404)
        );
        assert_eq!(stub.delete(&format!("{LISTS}/{sid}")).await.status, 204);
        assert_eq!(
            stub.get(&format!("{LISTS}/queue")).await.err(),
            (404, 20404)
        );
        assert_eq!(
            stub.post(LISTS, &[("UniqueName", "queue")]).await.status,
            201
        );
        let recs = stub.requests();
        let last = recs.last().unwrap();
        assert_eq!(
            (last.method.as_str(), last.path.as_str(), last.status),
            ("POST", LISTS, 201)
        );
        assert_eq!(
            last.form,
            vec![("UniqueName".to_string(), "queue".to_string())]
        );
    }

    #[tokio::test]
    async fn list_items_lifecycle() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let list_sid = stub
            .post(LISTS, &[("UniqueName", "queue")])
            .await
            .str("/sid");
        let mut created = Vec::new();
        for i in 0..3 {
            let g = stub
                .post(LIST_ITEMS, &[("Data", &format!(r#"{{"n":{i}}}"#))])
                .await;
            assert_eq!(g.status, 201);
            assert_eq!(
                (g.str("/list_sid"), g.str("/revision"), g.str("/created_by")),
                (list_sid.clone(), "0".into(), "system".into())
            );
            assert_eq!(g.body["data"], json!({"n": i}));
            assert!(g.body["date_expires"].is_null());
            created.push(g.body["index"].as_i64().unwrap());
        }
        assert_eq!(created, [0, 1, 2]);
        let g = stub.get(&format!("{LIST_ITEMS}/1")).await;
        assert_eq!((g.status, &g.body["data"]), (200, &json!({"n": 1})));
        assert_eq!(
            g.str("/url"),
            format!("{}{LISTS}/{list_sid}/Items/1", stub.base_url())
        );
        assert_eq!(
            (g.str("/account_sid"), g.str("/service_sid")),
            (AC.into(), IS.into())
        );

        // Update: data replaced, revision bumped, Ttl renews expiry.
        let g = stub
            .post(&format!("{LIST_ITEMS}/1"), &[("Data", r#"{"n":"one"}"#)])
            .await;
        assert_eq!((g.status, g.str("/revision")), (200, "1".into()));
        assert_eq!(g.body["data"], json!({"n": "one"}));
        let g = stub
            .post(LIST_ITEMS, &[("Data", "[3]"), ("ItemTtl", "60")])
            .await;
        assert_eq!((g.status, g.body["index"].as_i64()), (201, Some(3)));
        let first = g.str("/date_expires");
        let exp = DateTime::parse_from_rfc3339(&first).unwrap();
        assert!(
            (exp.with_timezone(&Utc) - Utc::now())
                .num_seconds()
                .abs_diff(60)
                <= 5
        );
        let g = stub
            .post(&format!("{LIST_ITEMS}/3"), &[("Ttl", "7200")])
            .await;
        let renewed = g.str("/date_expires");
        assert!(renewed > first, "{renewed} vs {first}");
        assert_eq!(g.body["data"], json!([3]));

        // Validation.
        assert_eq!(stub.post(LIST_ITEMS, &[]).await.err(), (400, 20001));
        assert_eq!(
            stub.post(LIST_ITEMS, &[("Data", "{")]).await.err(),
            (400, 54001)
        );
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(17 * 1024));
        assert_eq!(
            stub.post(LIST_ITEMS, &[("Data", &big)]).await.err(),
            (400, 54006)
        );
        assert_eq!(
            stub.post(&format!("{LIST_ITEMS}/0"), &[("Data", &big)])
                .await
                .err(),
            (400, 54006)
        );
        assert_eq!(
            stub.post(LIST_ITEMS, &[("Data", "{}"), ("ItemTtl", "-5")])
                .await
                .err(),
            (400, 54011)
        );

        // Paging and order.
        let g = stub.get(&format!("{LIST_ITEMS}?PageSize=2")).await;
        assert_eq!((g.status, indexes(&g)), (200, vec![0, 1]));
        assert_eq!(g.str("/meta/key"), "items");
        let next = g.str("/meta/next_page_url");
        let g = send("GET", &next, &[], Some((AC, TOKEN))).await;
        assert_eq!(indexes(&g), [2, 3]);
        assert!(g.body["meta"]["next_page_url"].is_null());
        let g = stub.get(&format!("{LIST_ITEMS}?Order=desc")).await;
        assert_eq!(indexes(&g), [3, 2, 1, 0]);
        let g = stub
            .get(&format!("{LISTS}/{list_sid}/Items?Order=asc"))
            .await;
        assert_eq!(indexes(&g), [0, 1, 2, 3]);

        // Delete; indexes are never reused, even the last one.
        assert_eq!(stub.delete(&format!("{LIST_ITEMS}/3")).await.status, 204);
        assert_eq!(stub.delete(&format!("{LIST_ITEMS}/0")).await.status, 204);
        let g = stub.post(LIST_ITEMS, &[("Data", r#""new""#)]).await;
        assert_eq!((g.status, g.body["index"].as_i64()), (201, Some(4)));
        assert_eq!(
            stub.list_items(IS, "queue"),
            vec![
                (1, json!({"n": "one"})),
                (2, json!({"n": 2})),
                (4, json!("new")),
            ]
        );
        assert_eq!(stub.list_items(IS, &list_sid).len(), 3);
        assert!(stub.list_items(IS, "nolist").is_empty());
        assert!(stub.list_items("ISnone", "queue").is_empty());

        // Missing items and lists.
        for path in ["0", "3", "99", "-1", "abc"] {
            let p = format!("{LIST_ITEMS}/{path}");
            assert_eq!(stub.get(&p).await.err(), (404, 20404), "{p}");
        }
        let p = format!("{LIST_ITEMS}/0");
        assert_eq!(stub.post(&p, &[("Data", "{}")]).await.err(), (404, 20404));
        assert_eq!(stub.delete(&p).await.err(), (404, 20404));
        let missing = format!("{LISTS}/nolist/Items");
        assert_eq!(
            stub.post(&missing, &[("Data", "{}")]).await.err(),
            (404, 20404)
        );
        assert_eq!(stub.get(&missing).await.err(), (404, 20404));
        for m in ["GET", "POST", "DELETE"] {
            let g = stub
                .call(m, &format!("{missing}/1"), &[("Data", "{}")])
                .await;
            assert_eq!(g.err(), (404, 20404), "{m}");
        }
    }

    #[tokio::test]
    async fn list_item_writes_are_rate_limited_on_the_list() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let queue = format!("{LISTS}/queue");
        assert_eq!(
            stub.post(LISTS, &[("UniqueName", "queue")]).await.status,
            201
        );
        assert_eq!(
            stub.post(LISTS, &[("UniqueName", "cold")]).await.status,
            201
        );
        let check_429 = |g: &Got| {
            assert_eq!(
                (g.err(), g.retry_after.as_deref()),
                ((429, 54009), Some("1"))
            );
        };
        // Item creates alone exhaust the list's budget, and then the list itself is
        // limited too: one counter per list.
        let mut statuses = Vec::new();
        for _ in 0..24 {
            let g = stub.post(LIST_ITEMS, &[("Data", "{}")]).await;
            statuses.push(g.status);
            if g.status == 429 {
                check_429(&g);
                check_429(&stub.post(&queue, &[("Ttl", "0")]).await);
                break;
            }
            assert_eq!(g.status, 201);
        }
        assert_eq!(statuses.last(), Some(&429), "creates: {statuses:?}");
        // Rejected creates use up no index; reads are not limited; other lists are not.
        let created = statuses.len() as i64 - 1;
        let idx: Vec<i64> = stub.list_items(IS, "queue").iter().map(|p| p.0).collect();
        assert_eq!(idx, (0..created).collect::<Vec<_>>());
        assert_eq!(stub.get(&format!("{LIST_ITEMS}/0")).await.status, 200);
        assert_eq!(stub.get(LIST_ITEMS).await.status, 200);
        let cold = format!("{LISTS}/cold/Items");
        assert_eq!(stub.post(&cold, &[("Data", "{}")]).await.status, 201);

        // After the window slides, item updates alone exhaust it again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let item0 = format!("{LIST_ITEMS}/0");
        let mut statuses = Vec::new();
        for i in 0..24 {
            let g = stub.post(&item0, &[("Data", &format!("{i}"))]).await;
            statuses.push(g.status);
            if g.status == 429 {
                check_429(&g);
                check_429(&stub.post(LIST_ITEMS, &[("Data", "{}")]).await);
                break;
            }
            assert_eq!(g.status, 200);
        }
        assert_eq!(statuses.last(), Some(&429), "updates: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(stub.delete(&item0).await.status, 204);
        assert_eq!(stub.post(LIST_ITEMS, &[("Data", "{}")]).await.status, 201);
        assert!(stub
            .requests()
            .iter()
            .any(|r| r.status == 429 && r.path.starts_with(LIST_ITEMS)));
    }

    #[tokio::test]
    async fn sync_writes_are_rate_limited_per_object() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        assert_eq!(stub.post(DOCS, &[("UniqueName", "hot")]).await.status, 201);
        assert_eq!(stub.post(DOCS, &[("UniqueName", "cold")]).await.status, 201);
        let hot = format!("{DOCS}/hot");
        let mut limited = 0;
        for i in 0..25 {
            let g = stub
                .post(&hot, &[("Data", &format!(r#"{{"i":{i}}}"#))])
                .await;
            if g.status == 429 {
                assert_eq!(
                    (g.err(), g.retry_after.as_deref()),
                    ((429, 54009), Some("1"))
                );
                limited += 1;
            } else {
                assert_eq!(g.status, 200);
            }
        }
        assert!(limited > 0, "expected some 429s");
        assert_eq!(
            stub.post(&format!("{DOCS}/cold"), &[("Data", "{}")])
                .await
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(stub.post(&hot, &[("Data", "{}")]).await.status, 200);

        assert_eq!(
            stub.post(MAPS, &[("UniqueName", "agents")]).await.status,
            201
        );
        let mut statuses = Vec::new();
        for i in 0..22 {
            let k = format!("k{i}");
            statuses.push(
                stub.post(ITEMS, &[("Key", &k), ("Data", "{}")])
                    .await
                    .status,
            );
        }
        assert!(
            statuses.contains(&429),
            "items count against their map: {statuses:?}"
        );
        assert!(stub.requests().iter().any(|r| r.status == 429));
    }

    fn expires_in(g: &Got, now: DateTime<Utc>) -> i64 {
        let t = DateTime::parse_from_rfc3339(&g.str("/date_expires")).unwrap();
        (t.with_timezone(&Utc) - now).num_seconds()
    }

    #[tokio::test]
    async fn missing_sync_objects_are_generic_404s() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let want = |path: &str| {
            json!({"code": 20404, "message": format!("The requested resource {path} was not found"),
                   "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404})
        };
        for (m, path, form) in [
            ("POST", format!("{DOCS}/nodoc"), &[("Data", "{}")][..]),
            ("POST", format!("{MAPS}/nomap/Items/k"), &[("Data", "{}")]),
            (
                "POST",
                format!("{MAPS}/nomap/Items"),
                &[("Key", "k"), ("Data", "{}")],
            ),
            ("GET", format!("{LISTS}/nolist/Items"), &[]),
            ("POST", format!("{LISTS}/nolist/Items"), &[("Data", "{}")]),
        ] {
            let g = stub.call(m, &path, form).await;
            assert_eq!((g.status, &g.body), (404, &want(&path)), "{m} {path}");
        }
    }

    #[tokio::test]
    async fn container_ttl_follows_collection_ttl_and_item_ttl_rules() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let now = Utc::now();
        // CollectionTtl wins over its alias Ttl.
        let g = stub
            .post(
                MAPS,
                &[
                    ("UniqueName", "agents"),
                    ("Ttl", "50"),
                    ("CollectionTtl", "100"),
                ],
            )
            .await;
        assert!(expires_in(&g, now).abs_diff(100) <= 5, "{}", g.body);
        // An item's ItemTtl (or Ttl) is the item's own, not the map's.
        let g = stub
            .post(
                ITEMS,
                &[
                    ("Key", "a"),
                    ("Data", "{}"),
                    ("ItemTtl", "1000"),
                    ("Ttl", "7"),
                ],
            )
            .await;
        assert!(expires_in(&g, now).abs_diff(1000) <= 5, "{}", g.body);
        let map = stub.container(IS, "Maps", "agents").unwrap();
        let exp = DateTime::parse_from_rfc3339(map["date_expires"].as_str().unwrap()).unwrap();
        assert!((exp.with_timezone(&Utc) - now).num_seconds().abs_diff(100) <= 5);
        // CollectionTtl on an item write pushes the map out.
        let g = stub
            .post(
                &format!("{ITEMS}/a"),
                &[("Data", "{}"), ("CollectionTtl", "3000")],
            )
            .await;
        assert_eq!(g.status, 200);
        let map = stub.container(IS, "Maps", "agents").unwrap();
        let exp = DateTime::parse_from_rfc3339(map["date_expires"].as_str().unwrap()).unwrap();
        assert!((exp.with_timezone(&Utc) - now).num_seconds().abs_diff(3000) <= 5);
        // ... but only together with Data or an item TTL.
        let g = stub
            .post(&format!("{ITEMS}/a"), &[("CollectionTtl", "9")])
            .await;
        assert_eq!(g.err(), (400, 20001));
        // Time passes: the item (1000 s) goes, the map (3000 s) stays; then the map goes.
        stub.advance(Duration::from_secs(1500));
        assert_eq!(stub.get(&format!("{ITEMS}/a")).await.err(), (404, 20404));
        assert!(stub.container(IS, "Maps", "agents").is_some());
        stub.advance(Duration::from_secs(2000));
        assert_eq!(
            stub.get(&format!("{MAPS}/agents")).await.err(),
            (404, 20404)
        );
        assert!(stub.container(IS, "Maps", "agents").is_none());

        // Lists: the same, CollectionTtl on an append renews the list.
        let g = stub
            .post(LISTS, &[("UniqueName", "queue"), ("CollectionTtl", "10")])
            .await;
        let list_sid = g.str("/sid");
        stub.advance(Duration::from_secs(8));
        let g = stub
            .post(
                LIST_ITEMS,
                &[("Data", "{}"), ("ItemTtl", "30"), ("CollectionTtl", "30")],
            )
            .await;
        assert_eq!(g.status, 201);
        stub.advance(Duration::from_secs(8));
        // Without the renewal the list would be gone by now.
        let l = stub.container(IS, "Lists", "queue").expect("list renewed");
        assert_eq!(l["sid"], list_sid);
        // An update with only ItemTtl keeps the list's expiry as it was.
        let g = stub
            .post(&format!("{LIST_ITEMS}/0"), &[("ItemTtl", "100")])
            .await;
        assert_eq!(g.status, 200);
        stub.advance(Duration::from_secs(25));
        assert!(stub.container(IS, "Lists", "queue").is_none());
        assert_eq!(stub.get(LIST_ITEMS).await.err(), (404, 20404));
        // Documents: Ttl, renewed by an update's Ttl; expired ones are 404s.
        stub.post(DOCS, &[("UniqueName", "d"), ("Ttl", "10")]).await;
        stub.advance(Duration::from_secs(8));
        assert_eq!(
            stub.post(&format!("{DOCS}/d"), &[("Ttl", "10")])
                .await
                .status,
            200
        );
        stub.advance(Duration::from_secs(8));
        assert!(stub.document(IS, "d").is_some());
        stub.advance(Duration::from_secs(3));
        assert_eq!(stub.get(&format!("{DOCS}/d")).await.err(), (404, 20404));
    }

    #[tokio::test]
    async fn list_items_read_from_an_index_and_pages_stop_at_100() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.post(LISTS, &[("UniqueName", "queue")]).await;
        for i in 0..5 {
            stub.post(LIST_ITEMS, &[("Data", &format!("[{i}]"))]).await;
        }
        let g = stub.get(&format!("{LIST_ITEMS}?From=2")).await;
        assert_eq!(indexes(&g), [2, 3, 4]);
        let g = stub
            .get(&format!("{LIST_ITEMS}?From=2&Bounds=exclusive"))
            .await;
        assert_eq!(indexes(&g), [3, 4]);
        let g = stub.get(&format!("{LIST_ITEMS}?From=2&Order=desc")).await;
        assert_eq!(indexes(&g), [2, 1, 0]);
        let g = stub.get(&format!("{LIST_ITEMS}?PageSize=1000")).await;
        assert_eq!(g.body["meta"]["page_size"], 100);
    }

    #[tokio::test]
    async fn failures_after_applying_keep_the_write() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.post(LISTS, &[("UniqueName", "queue")]).await;
        stub.fail_after_applying("POST", LIST_ITEMS, Afterwards::Status(503), 1);
        stub.fail_after_applying("GET", LIST_ITEMS, Afterwards::Status(500), 1);
        let g = stub.post(LIST_ITEMS, &[("Data", "[0]")]).await;
        assert_eq!(g.err(), (503, 20503));
        assert_eq!(stub.list_items(IS, "queue"), [(0, json!([0]))]);
        // A failed request does not use up the rule; the GET rule is separate.
        assert_eq!(
            stub.post(LIST_ITEMS, &[("Data", "{")]).await.err(),
            (400, 54001)
        );
        assert_eq!(stub.get(LIST_ITEMS).await.err(), (500, 20500));
        assert_eq!(stub.get(LIST_ITEMS).await.status, 200);
        stub.fail_after_applying("POST", LIST_ITEMS, Afterwards::Drop, 1);
        let url = format!("{}{LIST_ITEMS}", stub.base_url());
        let r = reqwest::Client::new()
            .post(&url)
            .basic_auth(AC, Some(TOKEN))
            .form(&[("Data", "[1]")])
            .send()
            .await;
        assert!(r.is_err(), "connection dropped: {r:?}");
        assert_eq!(stub.list_items(IS, "queue").len(), 2);
        let statuses: Vec<u16> = stub.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [201, 503, 400, 500, 200, 0]);
    }

    #[tokio::test]
    async fn fail_next_injects_errors() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.set_tasks(WS, vec![task(1, "pending")]);
        stub.fail_next(TASKS, 500, 2);
        assert_eq!(stub.get(TASKS).await.err(), (500, 20500));
        assert_eq!(stub.get(TASKS).await.err(), (500, 20500));
        assert_eq!(stub.get(TASKS).await.status, 200);
        stub.fail_next("/v1/Workspaces", 429, 1);
        let g = stub.get(TASKS).await;
        assert_eq!(
            (g.err(), g.retry_after.as_deref()),
            ((429, 20429), Some("1"))
        );
        stub.fail_next("/v1/Services", 503, 1);
        assert_eq!(
            stub.post(DOCS, &[("UniqueName", "d")]).await.err(),
            (503, 20503)
        );
        assert_eq!(stub.post(DOCS, &[("UniqueName", "d")]).await.status, 201);
        let statuses: Vec<u16> = stub.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![500, 500, 200, 429, 503, 201]);
        let last = stub.requests().pop().unwrap();
        assert_eq!((last.method.as_str(), last.path.as_str()), ("POST", DOCS));
        assert_eq!(last.form, vec![("UniqueName".to_string(), "d".to_string())]);
    }

    const CH: &str = "CH00000000000000000000000000000001";
    const MESSAGES: &str = "/v1/Conversations/CH00000000000000000000000000000001/Messages";

    fn message(i: i64) -> Value {
        json!({"sid": format!("IM{i:032}"), "index": i, "author": format!("user{}", i % 3),
            "body": format!("message {i}"), "participant_sid": "MB00000000000000000000000000000001",
            "attributes": "{}", "media": null, "delivery": null,
            "date_created": format!("2024-05-01T10:{:02}:{:02}Z", i / 60, i % 60),
            "date_updated": "2024-05-01T12:00:00Z"})
    }

    fn message_indexes(g: &Got) -> Vec<i64> {
        let list = g.body["messages"].as_array().unwrap();
        list.iter().map(|m| m["index"].as_i64().unwrap()).collect()
    }

    /// Follows next_page_url from `first` (a path under the stub) to the last page,
    /// returning every page.
    async fn all_pages(stub: &TwilioStub, first: &str) -> Vec<Got> {
        let mut pages = Vec::new();
        let mut url = Some(format!("{}{first}", stub.base_url()));
        while let Some(u) = url {
            let g = send("GET", &u, &[], Some((AC, TOKEN))).await;
            assert_eq!(g.status, 200, "{u}: {}", g.body);
            assert_eq!(g.str("/meta/key"), "messages");
            url = g.body["meta"]["next_page_url"].as_str().map(str::to_string);
            pages.push(g);
            assert!(pages.len() <= 10, "paging does not end");
        }
        pages
    }

    #[tokio::test]
    async fn conversation_messages_are_paged_in_ascending_index_order() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // Given out of order: odd indexes descending, then even ones ascending.
        let order = (0..130)
            .rev()
            .filter(|i| i % 2 == 1)
            .chain((0..130).step_by(2));
        stub.set_conversation_messages(CH, order.map(message).collect());

        let pages = all_pages(&stub, &format!("{MESSAGES}?PageSize=50")).await;
        let sizes: Vec<usize> = pages.iter().map(|g| g.sids("messages").len()).collect();
        assert_eq!(sizes, [50, 50, 30]);
        let mut seen = std::collections::BTreeSet::new();
        let mut all = Vec::new();
        for (n, g) in pages.iter().enumerate() {
            assert_eq!(
                (&g.body["meta"]["page"], &g.body["meta"]["page_size"]),
                (&json!(n), &json!(50))
            );
            assert_eq!(g.body["meta"]["previous_page_url"].is_null(), n == 0);
            for sid in g.sids("messages") {
                assert!(seen.insert(sid.clone()), "duplicate {sid}");
            }
            all.extend(message_indexes(g));
        }
        assert!(pages[..2].iter().all(|g| {
            let next = g.str("/meta/next_page_url");
            next.starts_with(&format!("{}{MESSAGES}?", stub.base_url()))
                && next.contains("PageSize=50&Page=")
                && next.contains("PageToken=PT")
        }));
        assert!(pages[2].body["meta"]["next_page_url"].is_null());
        assert_eq!(all, (0..130).collect::<Vec<_>>());
        assert_eq!(seen.len(), 130);

        // Filled-in fields; given ones kept as they were.
        let m = &pages[0].body["messages"][7];
        let url = format!("{}{MESSAGES}/IM{:032}", stub.base_url(), 7);
        assert_eq!(
            (&m["account_sid"], &m["conversation_sid"], &m["url"]),
            (&json!(AC), &json!(CH), &json!(url))
        );
        assert_eq!(
            (&m["body"], &m["author"], &m["date_created"]),
            (
                &json!("message 7"),
                &json!("user1"),
                &json!("2024-05-01T10:00:07Z")
            )
        );

        // Default page size 50, at most 100.
        let g = stub.get(MESSAGES).await;
        assert_eq!(
            (g.sids("messages").len(), &g.body["meta"]["page_size"]),
            (50, &json!(50))
        );
        let g = stub.get(&format!("{MESSAGES}?PageSize=1000")).await;
        assert_eq!(
            (g.sids("messages").len(), &g.body["meta"]["page_size"]),
            (100, &json!(100))
        );
        assert!(g.str("/meta/next_page_url").contains("PageSize=100&Page=1"));

        // Fetch one message by sid or by index.
        let sid = format!("IM{:032}", 42);
        let g = stub.get(&format!("{MESSAGES}/{sid}")).await;
        assert_eq!((g.status, g.str("/body")), (200, "message 42".into()));
        let g = stub.get(&format!("{MESSAGES}/42")).await;
        assert_eq!((g.status, g.str("/sid")), (200, sid));
        for id in ["130", "-1", "IMnope", "x"] {
            let g = stub.get(&format!("{MESSAGES}/{id}")).await;
            assert_eq!(g.err(), (404, 20404), "{id}");
            let want =
                format!("The requested resource /Conversations/{CH}/Messages/{id} was not found");
            assert_eq!(g.str("/message"), want);
        }

        // Setting again replaces the conversation's messages, explicit fields kept.
        let own = json!({"sid": "IMown", "index": 5, "account_sid": "ACother",
            "conversation_sid": CH, "url": "https://example.invalid/m", "body": "hi"});
        stub.set_conversation_messages(CH, vec![message(9), own]);
        let g = stub.get(MESSAGES).await;
        assert_eq!(g.sids("messages"), ["IMown", &format!("IM{:032}", 9)]);
        assert_eq!(g.str("/messages/0/account_sid"), "ACother");
        assert_eq!(g.str("/messages/0/url"), "https://example.invalid/m");
        assert!(g.body["meta"]["next_page_url"].is_null());
        assert_eq!(stub.get(&format!("{MESSAGES}/0")).await.err(), (404, 20404));
        stub.set_conversation_messages(CH, Vec::new());
        let g = stub.get(MESSAGES).await;
        assert_eq!((g.status, g.sids("messages").len()), (200, 0));

        // Read-only.
        let g = stub.post(MESSAGES, &[("Body", "hello")]).await;
        assert_eq!(g.err(), (405, 20004));
    }

    #[tokio::test]
    async fn conversation_messages_order_desc_reverses() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.set_conversation_messages(CH, (0..130).map(message).collect());
        let pages = all_pages(&stub, &format!("{MESSAGES}?Order=desc&PageSize=50")).await;
        let all: Vec<i64> = pages.iter().flat_map(message_indexes).collect();
        assert_eq!(all, (0..130).rev().collect::<Vec<_>>());
        let next = pages[0].str("/meta/next_page_url");
        assert!(next.contains("Order=desc&PageSize=50&Page=1"), "{next}");
        let g = stub.get(&format!("{MESSAGES}?Order=asc&PageSize=3")).await;
        assert_eq!(message_indexes(&g), [0, 1, 2]);
    }

    #[tokio::test]
    async fn unknown_conversation_is_404() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        stub.set_conversation_messages(CH, vec![message(0)]);
        let other = "CH000000000000000000000000000000ff";
        let g = stub
            .get(&format!("/v1/Conversations/{other}/Messages"))
            .await;
        let msg = format!("The requested resource /Conversations/{other}/Messages was not found");
        let want = json!({"code": 20404, "message": msg,
            "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404});
        assert_eq!((g.status, g.body), (404, want));
        let g = stub
            .get(&format!("/v1/Conversations/{other}/Messages/0?PageSize=5"))
            .await;
        assert_eq!(g.err(), (404, 20404));
        let want =
            format!("The requested resource /Conversations/{other}/Messages/0 was not found");
        assert_eq!(g.str("/message"), want);
        let g = stub
            .get(&format!("/v1/Conversations/{CH}/Participants"))
            .await;
        assert_eq!(g.err(), (404, 20404));
        assert_eq!(stub.get("/v1/Conversations").await.err(), (404, 20404));
        assert_eq!(stub.get(MESSAGES).await.status, 200);
    }

    /// A conversation in another Conversation Service is reachable only through its
    /// service's path; the unscoped path reaches the default service alone.
    #[tokio::test]
    async fn conversations_live_in_their_service() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let other_is = "IS000000000000000000000000000000aa";
        stub.set_service_conversation_messages(other_is, CH, vec![message(0), message(1)]);
        let scoped = format!("/v1/Services/{other_is}/Conversations/{CH}/Messages");
        let g = stub.get(&scoped).await;
        assert_eq!(g.status, 200);
        assert_eq!(message_indexes(&g), vec![0, 1]);
        assert_eq!(g.str("/messages/0/chat_service_sid"), other_is);
        assert_eq!(stub.get(MESSAGES).await.err(), (404, 20404));
        let default_is = stub.default_chat_service();
        let g = stub
            .get(&format!(
                "/v1/Services/{default_is}/Conversations/{CH}/Messages"
            ))
            .await;
        assert_eq!(g.err(), (404, 20404));
        let g = stub.get("/v1/Configuration").await;
        assert_eq!(g.str("/default_chat_service_sid"), default_is);
        // In the default service, both paths reach it.
        stub.set_conversation_messages(CH, vec![message(3)]);
        assert_eq!(message_indexes(&stub.get(MESSAGES).await), vec![3]);
        let g = stub
            .get(&format!(
                "/v1/Services/{default_is}/Conversations/{CH}/Messages"
            ))
            .await;
        assert_eq!(message_indexes(&g), vec![3]);
    }

    #[tokio::test]
    async fn conversation_messages_require_auth_and_are_recorded() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.set_conversation_messages(CH, vec![message(0)]);
        let url = format!("{}{MESSAGES}?PageSize=5", stub.base_url());
        let g = send("GET", &url, &[], None).await;
        assert_eq!(
            (g.err(), g.body["message"].as_str()),
            ((401, 20003), Some("Authenticate"))
        );
        let g = send("GET", &url, &[], Some((AC, "wrong"))).await;
        assert_eq!(g.err(), (401, 20003));
        let one = format!("{}{MESSAGES}/0", stub.base_url());
        assert_eq!(send("GET", &one, &[], None).await.err(), (401, 20003));
        assert_eq!(send("GET", &url, &[], Some((AC, TOKEN))).await.status, 200);
        stub.add_api_key("SKkey1", "secret1");
        let g = send("GET", &one, &[], Some(("SKkey1", "secret1"))).await;
        assert_eq!((g.status, g.str("/sid")), (200, format!("IM{:032}", 0)));
        let recs: Vec<(String, String, String, u16)> = stub
            .requests()
            .into_iter()
            .map(|r| (r.method, r.path, r.query, r.status))
            .collect();
        let (get, q) = ("GET".to_string(), "PageSize=5".to_string());
        let m0 = format!("{MESSAGES}/0");
        assert_eq!(
            recs,
            [
                (get.clone(), MESSAGES.into(), q.clone(), 401),
                (get.clone(), MESSAGES.into(), q.clone(), 401),
                (get.clone(), m0.clone(), String::new(), 401),
                (get.clone(), MESSAGES.into(), q, 200),
                (get, m0, String::new(), 200),
            ]
        );
    }

    #[tokio::test]
    async fn fail_next_applies_to_conversation_messages() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.set_conversation_messages(CH, (0..3).map(message).collect());
        stub.fail_next(MESSAGES, 500, 2);
        // Unauthenticated requests do not use up the budget.
        let url = format!("{}{MESSAGES}", stub.base_url());
        assert_eq!(send("GET", &url, &[], None).await.status, 401);
        assert_eq!(stub.get(MESSAGES).await.err(), (500, 20500));
        assert_eq!(stub.get(&format!("{MESSAGES}/1")).await.err(), (500, 20500));
        assert_eq!(stub.get(MESSAGES).await.sids("messages").len(), 3);
        stub.fail_next("/v1/Conversations", 429, 1);
        let g = stub.get(&format!("{MESSAGES}?PageSize=1")).await;
        assert_eq!(
            (g.err(), g.retry_after.as_deref()),
            ((429, 20429), Some("1"))
        );
        let g = stub.get(&format!("{MESSAGES}?PageSize=1")).await;
        assert_eq!(message_indexes(&g), [0]);
        // Failures meant for other paths leave messages alone.
        stub.fail_next(TASKS, 503, 1);
        assert_eq!(stub.get(MESSAGES).await.status, 200);
        let statuses: Vec<u16> = stub.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401, 500, 500, 200, 429, 200, 200]);
    }

    #[tokio::test]
    async fn dropping_the_stub_stops_the_server() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let base = stub.base_url();
        drop(stub);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = reqwest::Client::new()
            .get(format!("{base}/v1/x"))
            .send()
            .await;
        assert!(r.is_err(), "server still answering after drop");
    }
}
