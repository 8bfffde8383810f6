//! Test harness: a fresh Postgres database per test, the real binary started as a child
//! process with its own config and queue directory, and a signing HTTP client.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use taskrouter_summarizer::ingest::signature;

pub use crate::callbacks::{wt, Cb, Params};
use crate::twilio_stub::TwilioStub;

pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";
pub const PUBLIC_URL: &str = "https://summarizer.test";

/// The maintenance connection string: `TEST_DATABASE_URL` or the local server.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("admin url");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A database created for one test and dropped afterwards.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::on(&admin_url()).await
    }

    pub async fn on(admin: &str) -> TestDb {
        let name = format!("trs_test_{}_{}", std::process::id(), rand::random::<u32>());
        let c = connect(admin).await;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            url: with_db(admin, &name),
            name,
            admin: admin.to_owned(),
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// The first column of every row, as text.
    pub async fn rows(&self, sql: &str) -> Vec<String> {
        self.client()
            .await
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort, synchronous: tests may end without a runtime.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok((c, conn)) =
                        tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = c
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_taskrouter-summarizer")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `taskrouter-summarizer serve`.
pub struct Service {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    /// The admin listener's port (`/readyz`, `/metrics`, `/api/*`, `/dashboard`), when
    /// it has one.
    pub admin_port: Option<u16>,
    /// The admin token, when the config sets one.
    pub admin_token: Option<String>,
    pub child: Option<Child>,
    pub http: reqwest::Client,
    /// The binary `command` and `spawn` run: the build's own unless the test set
    /// another (an upgrade swaps it).
    pub exe: PathBuf,
}

/// How a test's service is configured: a typed builder over the config file's sections.
///
/// ```ignore
/// Options::new(&db.url)
///     .account(AC)
///     .taskrouter(&stub, WS)
///     .sync(&stub, IS)
///     .taskrouter_sync_interval(2)
///     .timezone(&tz)
///     .publish_ttl(4)
///     .jobs(JOBS)
/// ```
pub struct Options {
    db_url: String,
    workers: usize,
    max_attempts: u32,
    in_flight_mb: u64,
    /// An admin listener on a port of its own (the default); false: `admin_listen = ""`.
    admin_listener: bool,
    admin_token: Option<String>,
    /// `(section, [(key, TOML value)])` in the order first set; `twilio` comes first.
    sections: Vec<(&'static str, Vec<(&'static str, String)>)>,
    /// `[[jobs]]` blocks, verbatim, after every other section.
    jobs: String,
    /// Another binary than the build's own.
    exe: Option<PathBuf>,
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Options {
    pub fn new(db_url: &str) -> Options {
        Options {
            db_url: db_url.to_owned(),
            workers: 4,
            max_attempts: 8,
            in_flight_mb: 16,
            admin_listener: true,
            admin_token: None,
            sections: vec![("twilio", Vec::new())],
            jobs: String::new(),
            exe: None,
        }
    }

    /// Sets `key` in `[section]` to a TOML value (already rendered).
    fn set(mut self, section: &'static str, key: &'static str, value: String) -> Options {
        let i = match self.sections.iter().position(|(s, _)| *s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section, Vec::new()));
                self.sections.len() - 1
            }
        };
        let keys = &mut self.sections[i].1;
        keys.retain(|(k, _)| *k != key);
        keys.push((key, value));
        self
    }

    /// Run this binary (`migrate`, `serve`, every `command`) instead of the build's own.
    pub fn exe(mut self, path: &std::path::Path) -> Options {
        self.exe = Some(path.to_owned());
        self
    }

    /// `[queue] in_flight_mb` (default 16).
    pub fn in_flight_mb(mut self, mb: u64) -> Options {
        self.in_flight_mb = mb;
        self
    }

    /// `[queue] workers` (default 4).
    pub fn workers(mut self, n: usize) -> Options {
        self.workers = n;
        self
    }

    /// `[queue] max_attempts` (default 8).
    pub fn max_attempts(mut self, n: u32) -> Options {
        self.max_attempts = n;
        self
    }

    /// `admin_listen = ""`: no admin listener of its own (the admin side, if any, is on
    /// the public one).
    pub fn no_admin_listener(mut self) -> Options {
        self.admin_listener = false;
        self
    }

    /// `[server] admin_token`.
    pub fn admin_token(mut self, token: &str) -> Options {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// `[twilio] account_sid`.
    pub fn account(self, account_sid: &str) -> Options {
        self.set("twilio", "account_sid", toml_str(account_sid))
    }

    /// `[twilio] workspace_sid`, and `taskrouter_url` pointing at the stub.
    pub fn taskrouter(self, stub: &TwilioStub, workspace_sid: &str) -> Options {
        self.set("twilio", "workspace_sid", toml_str(workspace_sid))
            .set("twilio", "taskrouter_url", toml_str(&stub.base_url()))
    }

    /// `[twilio] sync_service_sid`, and `sync_url` pointing at the stub.
    pub fn sync(self, stub: &TwilioStub, sync_service_sid: &str) -> Options {
        self.set("twilio", "sync_service_sid", toml_str(sync_service_sid))
            .set("twilio", "sync_url", toml_str(&stub.base_url()))
    }

    /// `[twilio] conversations_url` pointing at the stub.
    pub fn conversations(self, stub: &TwilioStub) -> Options {
        self.set("twilio", "conversations_url", toml_str(&stub.base_url()))
    }

    /// `[taskrouter] sync_interval_secs`.
    pub fn taskrouter_sync_interval(self, secs: u64) -> Options {
        self.set("taskrouter", "sync_interval_secs", secs.to_string())
    }

    /// `[taskrouter] reconcile_schedule` (a cron expression; "" turns it off).
    pub fn reconcile_schedule(self, cron: &str) -> Options {
        self.set("taskrouter", "reconcile_schedule", toml_str(cron))
    }

    /// `[taskrouter] available_activities`: activity names that count as available.
    pub fn available_activities(self, names: &[&str]) -> Options {
        let list: Vec<String> = names.iter().map(|n| toml_str(n)).collect();
        self.set(
            "taskrouter",
            "available_activities",
            format!("[{}]", list.join(", ")),
        )
    }

    /// `[wallboard] break_alert_minutes` and `task_alert_minutes`.
    pub fn wallboard_alerts(self, break_minutes: i64, task_minutes: i64) -> Options {
        self.set(
            "wallboard",
            "break_alert_minutes",
            break_minutes.to_string(),
        )
        .set("wallboard", "task_alert_minutes", task_minutes.to_string())
    }

    /// `[wallboard] offline_activities`.
    pub fn offline_activities(self, names: &[&str]) -> Options {
        let list: Vec<String> = names.iter().map(|n| toml_str(n)).collect();
        self.set(
            "wallboard",
            "offline_activities",
            format!("[{}]", list.join(", ")),
        )
    }

    /// `[conversations] fetch_on_complete`.
    pub fn conversations_fetch(self, on: bool) -> Options {
        self.set("conversations", "fetch_on_complete", on.to_string())
    }

    /// `[sla] timezone`.
    pub fn timezone(self, tz: &str) -> Options {
        self.set("sla", "timezone", toml_str(tz))
    }

    /// `[publish] ttl_seconds`.
    pub fn publish_ttl(self, secs: u64) -> Options {
        self.set("publish", "ttl_seconds", secs.to_string())
    }

    /// `[publish] worker_stats`: the `workerStats` map.
    pub fn worker_stats(self, on: bool) -> Options {
        self.set("publish", "worker_stats", on.to_string())
    }

    /// `[backfill] catch_up`.
    pub fn backfill_catch_up(self, on: bool) -> Options {
        self.set("backfill", "catch_up", on.to_string())
    }

    /// `[backfill] catch_up_min_gap_secs`.
    pub fn backfill_catch_up_min_gap(self, secs: u64) -> Options {
        self.set("backfill", "catch_up_min_gap_secs", secs.to_string())
    }

    /// `[backfill] slice_minutes`.
    pub fn backfill_slice_minutes(self, minutes: u64) -> Options {
        self.set("backfill", "slice_minutes", minutes.to_string())
    }

    /// `[[jobs]]` blocks, as TOML (appended after every other section).
    pub fn jobs(mut self, toml: &str) -> Options {
        self.jobs.push_str(toml);
        self
    }

    /// The `[twilio]` keys and every section after it, as TOML.
    fn tail(&self) -> String {
        let mut out = String::new();
        for (section, keys) in &self.sections {
            if *section != "twilio" {
                out.push_str(&format!("[{section}]\n"));
            }
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out.push_str(&self.jobs);
        out
    }
}

impl Service {
    /// Writes a config, runs `migrate`, and starts `serve`.
    pub async fn start(opts: Options) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let admin_port = opts.admin_listener.then(free_port);
        let admin_listen = admin_port
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_default();
        let admin_token = opts.admin_token.clone().unwrap_or_default();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "{PUBLIC_URL}"
shutdown_grace_secs = 5
admin_listen = "{admin_listen}"
admin_token = "{admin_token}"
[queue]
path = "{queue}"
workers = {workers}
max_attempts = {max_attempts}
in_flight_mb = {in_flight_mb}
[postgres]
url = "{db}"
pool_size = 6
connect_timeout_secs = 2
[twilio]
auth_token = "{AUTH_TOKEN}"
{tail}
"#,
                queue = dir.path().join("queue").display(),
                workers = opts.workers,
                max_attempts = opts.max_attempts,
                in_flight_mb = opts.in_flight_mb,
                db = opts.db_url,
                tail = opts.tail(),
            ),
        )
        .expect("write config");
        let mut s = Service {
            dir,
            config,
            port,
            admin_port,
            admin_token: opts.admin_token,
            child: None,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            exe: opts.exe.clone().unwrap_or_else(|| bin().into()),
        };
        let out = s.command(&["migrate"]).output().expect("run migrate");
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.spawn().await;
        s
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--config").arg(&self.config).args(args);
        c.env_remove("DATABASE_URL").env_remove("TWILIO_AUTH_TOKEN");
        c
    }

    /// Starts `serve` and waits until it answers `/healthz`.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .expect("log file");
        let child = self
            .command(&["serve"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("serve exited early ({st}): {}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "serve did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// A URL on the public listener (webhooks, `/healthz`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL of the admin side: the admin listener's, else the public one's.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}{path}",
            self.admin_port.unwrap_or(self.port)
        )
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics")
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// GET on the admin side, with the admin token when there is one.
    pub fn admin_get(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(self.admin_url(path));
        match &self.admin_token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("serve did not exit after SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Posts a callback signed for `PUBLIC_URL + /ingress`; returns the status.
    pub async fn post(&self, params: &[(String, String)]) -> Result<u16, reqwest::Error> {
        let sig = signature::compute(AUTH_TOKEN, &format!("{PUBLIC_URL}/ingress"), params);
        self.post_raw(encode(params), Some(&sig)).await
    }

    pub async fn post_raw(&self, body: String, sig: Option<&str>) -> Result<u16, reqwest::Error> {
        let mut req = self
            .http
            .post(self.url("/ingress"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(s) = sig {
            req = req.header("x-twilio-signature", s);
        }
        Ok(req.send().await?.status().as_u16())
    }

    /// `/api/summary` as JSON (Null when it does not answer with JSON).
    pub async fn summary(&self) -> Value {
        match self.admin_get("/api/summary").send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// `/api/summary` computed at or after `t`: the service answers from a summary up to
    /// 3 s old, which may predate rows applied since.
    pub async fn summary_since(&self, t: chrono::DateTime<chrono::Utc>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.summary().await;
            let at = s["generated_at"]
                .as_str()
                .and_then(|g| chrono::DateTime::parse_from_rfc3339(g).ok());
            if at.is_some_and(|at| at >= t) {
                return s;
            }
            assert!(Instant::now() < deadline, "no summary since {t}: {s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `/readyz` as JSON, or Null when the service does not answer. A pooled connection
    /// the server closed (after a 413 it does not read the body) is retried.
    pub async fn readyz(&self) -> Value {
        for _ in 0..3 {
            if let Ok(r) = self.admin_get("/readyz").send().await {
                return r.json().await.unwrap_or(Value::Null);
            }
        }
        Value::Null
    }

    /// Waits until the queue is empty (everything applied or dead-lettered).
    pub async fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.readyz().await;
            if r["queue"]["depth"].as_u64() == Some(0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue not drained: {r}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn encode(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

pub fn sid_of(params: &[(String, String)]) -> String {
    params
        .iter()
        .find(|(k, _)| k == "Sid")
        .map(|(_, v)| v.clone())
        .expect("Sid")
}

/// Posts all callbacks with `concurrency` clients; returns the statuses in input order.
pub async fn post_all(
    svc: &Service,
    cbs: &[Vec<(String, String)>],
    concurrency: usize,
) -> Vec<u16> {
    use futures_util::StreamExt;
    futures_util::stream::iter(cbs.iter().map(|cb| async move {
        let mut tries = 0;
        loop {
            match svc.post(cb).await {
                Ok(s) => return s,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 5, "post failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
    .buffered(concurrency)
    .collect()
    .await
}

/// Asserts that `table` holds exactly `rows` in the columns the rows name (compared by
/// Postgres itself, after both sides went through the same column types).
pub async fn assert_table_matches(db: &TestDb, table: &str, key: &str, rows: Vec<Value>) {
    let Some(Value::Object(first)) = rows.first() else {
        assert_eq!(db.count(&format!("SELECT count(*) FROM {table}")).await, 0);
        return;
    };
    let cols: Vec<String> = first.keys().cloned().collect();
    let list = cols.join(", ");
    let c = db.client().await;
    let rows = Value::Array(rows);
    for (a, b, what) in [
        (
            format!("SELECT {list} FROM {table}"),
            format!("SELECT {list} FROM jsonb_populate_recordset(NULL::{table}, $1)"),
            "in the database but not expected",
        ),
        (
            format!("SELECT {list} FROM jsonb_populate_recordset(NULL::{table}, $1)"),
            format!("SELECT {list} FROM {table}"),
            "expected but not in the database",
        ),
    ] {
        let sql = format!("SELECT to_jsonb(d) FROM ({a} EXCEPT {b}) d ORDER BY 1 LIMIT 5");
        let diff = c.query(&sql, &[&rows]).await.expect("compare");
        if !diff.is_empty() {
            let sample: Vec<Value> = diff.iter().map(|r| r.get(0)).collect();
            // Show the database's version of the same keys, to see which column differs.
            let keys: Vec<String> = sample
                .iter()
                .filter_map(|v| v[key].as_str().map(str::to_owned))
                .collect();
            let other = c
                .query(
                    &format!("SELECT to_jsonb(d) FROM (SELECT {list} FROM {table} WHERE {key} = ANY($1)) d"),
                    &[&keys],
                )
                .await
                .expect("other");
            let other: Vec<Value> = other.iter().map(|r| r.get(0)).collect();
            let expected = c
                .query(
                    &format!("SELECT to_jsonb(d) FROM (SELECT {list} FROM jsonb_populate_recordset(NULL::{table}, $2)) d WHERE d.{key} = ANY($1)"),
                    &[&keys, &rows],
                )
                .await
                .expect("expected");
            let expected: Vec<Value> = expected.iter().map(|r| r.get(0)).collect();
            panic!(
                "{table}: rows {what}:\n{}\nthe database has:\n{}\nexpected:\n{}",
                serde_json::to_string_pretty(&sample).unwrap_or_default(),
                serde_json::to_string_pretty(&other).unwrap_or_default(),
                serde_json::to_string_pretty(&expected).unwrap_or_default()
            );
        }
    }
}
