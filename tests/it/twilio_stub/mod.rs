//! Test-only local stand-in for Twilio's TaskRouter, Sync and Conversations (messages,
//! read-only) REST APIs.
//!
//! One in-process HTTP/1 server on 127.0.0.1 serves all three API families
//! (`/v1/Workspaces/…`, `/v1/Services/…` and `/v1/Conversations/…`), with Basic auth,
//! Twilio-shaped paging and error bodies, Sync validation and per-object rate limits,
//! failure injection, and a request log.
//!
//! This module: the server, its state, Basic auth, failure injection, the check of every
//! request against Twilio's published definitions ([`crate::oai`]), the request log and
//! the paging and error shapes all three share. One module per API family:
//! [`taskrouter`], [`sync`], [`conversations`], each with its own tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::watch;

mod conversations;
mod sync;
mod taskrouter;

use sync::{Limiter, Service};
use taskrouter::Workspace;

/// Largest `PageSize` of the ordinary lists; Conversations lists stop at 100.
const MAX_PAGE_SIZE: usize = 1000;

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

fn new_sid(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let a = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = (n ^ 0xA5A5_5A5A_DEAD_BEEF).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    format!("{prefix}{a:016x}{b:016x}")
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const AC: &str = "ACstub";
    pub(super) const TOKEN: &str = "stub-token";
    pub(super) const WS: &str = "WSstub";
    pub(super) const IS: &str = "ISstub";
    pub(super) const ACTIVITIES: &str = "/v1/Workspaces/WSstub/Activities";
    pub(super) const WORKERS: &str = "/v1/Workspaces/WSstub/Workers";
    pub(super) const TASKS: &str = "/v1/Workspaces/WSstub/Tasks";
    pub(super) const DOCS: &str = "/v1/Services/ISstub/Documents";
    pub(super) const MAPS: &str = "/v1/Services/ISstub/Maps";
    pub(super) const ITEMS: &str = "/v1/Services/ISstub/Maps/agents/Items";
    pub(super) const LISTS: &str = "/v1/Services/ISstub/Lists";
    pub(super) const LIST_ITEMS: &str = "/v1/Services/ISstub/Lists/queue/Items";

    pub(super) struct Got {
        pub(super) status: u16,
        pub(super) body: Value,
        pub(super) retry_after: Option<String>,
    }

    impl Got {
        /// Checks the Twilio error shape and returns (status, code).
        pub(super) fn err(&self) -> (u16, u64) {
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

        pub(super) fn str(&self, pointer: &str) -> String {
            let v = self.body.pointer(pointer);
            v.and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{pointer} in {}", self.body))
                .into()
        }

        pub(super) fn sids(&self, key: &str) -> Vec<String> {
            let list = self.body[key].as_array().unwrap();
            list.iter()
                .map(|t| t["sid"].as_str().unwrap().to_string())
                .collect()
        }
    }

    pub(super) async fn send(
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
    pub(super) trait Call {
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

    pub(super) fn task(i: usize, status: &str) -> Value {
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
