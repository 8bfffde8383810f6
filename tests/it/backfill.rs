//! Missed events: backfill from TaskRouter's REST Events (the Twilio stand-in serves a
//! paged Events list), catch-up after downtime, Event Streams deliveries, rebuild and
//! retention. The rows must always be exactly those of full delivery.

use crate::harness::*;
use crate::ingest::assert_state_matches;
use crate::twilio_stub::TwilioStub;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use taskrouter_summarizer::event::Event;
use taskrouter_summarizer::ingest::signature;
use taskrouter_summarizer::sim::{realistic_day, DayConfig, SimDay};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const WS: &str = "WSfedcba9876543210fedcba9876543210";
const EVENTS: &str = "/v1/Workspaces/WSfedcba9876543210fedcba9876543210/Events";

type Callback = Vec<(String, String)>;

/// A simulated day that started `hours_ago` hours ago (so TaskRouter still keeps it).
fn recent_day(hours_ago: i64, tasks: usize, seed: u64) -> SimDay {
    realistic_day(&DayConfig {
        seed,
        tasks,
        workers: 8,
        start_ms: chrono::Utc::now().timestamp_millis() - hours_ago * 3_600_000,
        account_sid: AC.into(),
        workspace_sid: WS.into(),
    })
}

fn get<'a>(cb: &'a Callback, k: &str) -> Option<&'a str> {
    cb.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// `TaskQueueSid` → `task_queue_sid`.
fn snake(k: &str) -> String {
    let mut out = String::new();
    for (i, c) in k.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A param as Event Streams types it: integers and booleans as JSON, the rest as text.
fn typed(v: &str) -> Value {
    match v {
        "true" => json!(true),
        "false" => json!(false),
        _ => match v.parse::<i64>() {
            Ok(n) if n.to_string() == v => json!(n),
            _ => json!(v),
        },
    }
}

fn ms_of(cb: &Callback) -> i64 {
    get(cb, "TimestampMs")
        .and_then(|v| v.parse().ok())
        .expect("TimestampMs")
}

/// The callback as an item of TaskRouter's REST Events list.
fn rest_event(cb: &Callback) -> Value {
    let top = [
        "EventType",
        "Sid",
        "AccountSid",
        "WorkspaceSid",
        "ResourceType",
        "ResourceSid",
        "EventDescription",
        "Timestamp",
        "TimestampMs",
    ];
    let data: serde_json::Map<String, Value> = cb
        .iter()
        .filter(|(k, _)| !top.contains(&k.as_str()))
        .map(|(k, v)| (snake(k), json!(v)))
        .collect();
    json!({
        "sid": get(cb, "Sid"), "event_type": get(cb, "EventType"),
        "account_sid": get(cb, "AccountSid"), "workspace_sid": get(cb, "WorkspaceSid"),
        "resource_type": get(cb, "ResourceType"), "resource_sid": get(cb, "ResourceSid"),
        "description": get(cb, "EventDescription"), "event_date_ms": ms_of(cb),
        "actor_type": "workspace", "source": "twilio", "event_data": data,
    })
}

/// The callback as an Event Streams CloudEvent (snake_case payload, ISO timestamp).
fn cloud_event(cb: &Callback) -> Value {
    let iso = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms_of(cb))
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut payload: serde_json::Map<String, Value> = cb
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "Timestamp" | "TimestampMs" | "EventType"))
        .map(|(k, v)| (snake(k), typed(v)))
        .collect();
    payload.insert("eventtype".into(), json!(get(cb, "EventType")));
    payload.insert("timestamp".into(), json!(iso));
    json!({
        "specversion": "1.0",
        "type": format!("com.twilio.taskrouter.{}", get(cb, "EventType").unwrap_or_default()),
        "source": "/v1/Workspaces/WS/Events",
        "id": format!("EZ{}", get(cb, "Sid").unwrap_or_default()),
        "time": iso,
        "datacontenttype": "application/json",
        "data": {"sid": get(cb, "Sid"), "name": "ignored", "timestamp": iso, "payload": payload},
    })
}

/// The service against the stub's TaskRouter only: no periodic sync, no reconciliation,
/// no Conversations reads.
fn options(db: &TestDb, stub: &TwilioStub) -> Options {
    Options::new(&db.url)
        .account(AC)
        .taskrouter(stub, WS)
        .taskrouter_sync_interval(0)
        .reconcile_schedule("")
        .conversations_fetch(false)
}

/// A fresh database, a Twilio stand-in serving the day's events from the REST Events
/// list, and a service configured against both (`more`: further settings).
async fn with_rest_events(
    day: &SimDay,
    more: impl FnOnce(Options) -> Options,
) -> (TestDb, TwilioStub, Service) {
    let db = TestDb::new().await;
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    stub.set_events(WS, day.callbacks.iter().map(rest_event).collect());
    let svc = Service::start(more(options(&db, &stub))).await;
    (db, stub, svc)
}

fn events_of(cbs: &[Callback]) -> Vec<Event> {
    cbs.iter().map(|cb| Event::from_params(cb, 0)).collect()
}

/// Every state table, without `updated_at`, keyed and sorted, for exact comparisons.
async fn snapshot(db: &TestDb) -> BTreeMap<&'static str, Vec<Value>> {
    let c = db.client().await;
    let mut out = BTreeMap::new();
    for (t, key) in [
        ("tasks", "sid"),
        ("reservations", "sid"),
        ("workers", "worker_sid"),
        ("worker_channels", "worker_sid, task_channel_unique_name"),
        ("activities", "sid"),
    ] {
        let rows = c
            .query(
                &format!("SELECT to_jsonb(x) - 'updated_at' FROM {t} x ORDER BY {key}"),
                &[],
            )
            .await
            .expect("snapshot");
        out.insert(t, rows.iter().map(|r| r.get(0)).collect());
    }
    out
}

fn assert_same(a: &BTreeMap<&str, Vec<Value>>, b: &BTreeMap<&str, Vec<Value>>) {
    for (t, rows) in a {
        let other = &b[t];
        assert_eq!(rows.len(), other.len(), "{t}: row counts differ");
        for (x, y) in rows.iter().zip(other) {
            assert_eq!(x, y, "{t}: rows differ");
        }
    }
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn run_cli(svc: &Service, args: &[&str]) -> (bool, String, String) {
    let out = svc.command(args).output().expect("run the binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_completes_a_day_whose_callbacks_partly_went_missing() {
    let day = recent_day(10, 150, 11);
    let (db, _stub, svc) = with_rest_events(&day, |o| o.backfill_catch_up(false)).await;

    // A third of the callbacks never arrive.
    let delivered: Vec<Callback> = day
        .callbacks
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, cb)| cb.clone())
        .collect();
    let missing = day.callbacks.len() - delivered.len();
    assert!(post_all(&svc, &delivered, 32)
        .await
        .iter()
        .all(|s| *s == 204));
    svc.wait_drained(Duration::from_secs(60)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM events").await as usize,
        delivered.len()
    );

    let since = (chrono::Utc::now() - chrono::Duration::hours(11)).to_rfc3339();
    let (ok, out, err) = run_cli(&svc, &["backfill", "--since", &since, "--slice", "2h"]);
    assert!(ok, "backfill failed: {out}\n{err}");
    assert!(out.contains(&format!(" {missing} were missing")), "{out}");
    assert_eq!(
        db.count("SELECT count(*) FROM events").await as usize,
        day.callbacks.len()
    );
    assert_state_matches(&db, &events_of(&day.callbacks)).await;

    // Idempotent: a second pass finds nothing missing and changes nothing.
    let before = snapshot(&db).await;
    let (ok, out, err) = run_cli(&svc, &["backfill", "--since", "11h", "--slice", "3h"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(", 0 were missing"), "{out}");
    assert_same(&before, &snapshot(&db).await);

    // Bad windows are refused before anything is read.
    let (ok, _, err) = run_cli(&svc, &["backfill", "--since", "tomorrow"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");
    let (ok, _, err) = run_cli(&svc, &["backfill", "--since", "1h", "--until", "2h"]);
    assert!(!ok && err.contains("nothing to read"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backfill_resumes_where_it_stopped() {
    let day = recent_day(10, 120, 12);
    let (db, stub, svc) = with_rest_events(&day, |o| o.backfill_catch_up(false)).await;

    // Three slices read, then TaskRouter fails for longer than the client retries.
    stub.fail_after(EVENTS, 3, 503, 20);
    let (ok, out, err) = run_cli(&svc, &["backfill", "--since", "11h", "--slice", "1h"]);
    assert!(!ok, "the first run should stop: {out}");
    assert!(err.contains("--resume"), "{err}");
    let done: i32 = db
        .client()
        .await
        .query_one("SELECT slices_done FROM backfill_runs", &[])
        .await
        .expect("run")
        .get(0);
    assert_eq!(done, 3);
    stub.clear_failures();
    stub.clear_requests();
    let (ok, out, err) = run_cli(&svc, &["backfill", "--resume"]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("resuming run"), "{err}");
    assert_state_matches(&db, &events_of(&day.callbacks)).await;
    // The slices read before the failure were not read again.
    let first_slice = db
        .client()
        .await
        .query_one("SELECT since FROM backfill_runs", &[])
        .await
        .expect("run")
        .get::<_, chrono::DateTime<chrono::Utc>>(0)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let reread = stub
        .requests()
        .iter()
        .filter(|r| {
            r.path == EVENTS
                && form_urlencoded::parse(r.query.as_bytes())
                    .any(|(k, v)| k == "StartDate" && v == first_slice)
        })
        .count();
    assert_eq!(reread, 0);
    let (ok, _, err) = run_cli(&svc, &["backfill", "--resume"]);
    assert!(!ok && err.contains("no interrupted backfill run"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_catches_up_on_the_time_it_was_down() {
    let day = recent_day(9, 100, 13);
    let more = |o: Options| o.backfill_catch_up_min_gap(1).backfill_slice_minutes(120);
    let (db, _stub, mut svc) = with_rest_events(&day, more).await;
    wait_for("the first heartbeat", Duration::from_secs(20), async || {
        db.count("SELECT count(*) FROM instance_heartbeats").await == 1
    })
    .await;
    assert_eq!(svc.terminate().code(), Some(0));
    // The service was down for the whole simulated day: no callback arrived.
    db.client()
        .await
        .execute(
            "UPDATE instance_heartbeats SET seen_at = now() - interval '10 hours'",
            &[],
        )
        .await
        .expect("rewind");
    svc.spawn().await;
    let n = day.callbacks.len() as i64;
    wait_for("the catch-up", Duration::from_secs(90), async || {
        db.count("SELECT count(*) FROM events").await == n
    })
    .await;
    svc.wait_drained(Duration::from_secs(30)).await;
    assert_state_matches(&db, &events_of(&day.callbacks)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM backfill_runs WHERE source = 'catch-up' AND finished_at IS NOT NULL")
            .await,
        1
    );
}

/// Posts CloudEvents to /ingress/event-streams, signed the way Twilio signs JSON bodies.
async fn post_stream(svc: &Service, body: &str, sign_for: Option<&str>) -> (u16, String) {
    let hash = {
        use sha2::{Digest, Sha256};
        format!("{:x}", Sha256::digest(body.as_bytes()))
    };
    let path = format!("/ingress/event-streams?bodySHA256={hash}");
    let sig = signature::compute(
        AUTH_TOKEN,
        &format!("{PUBLIC_URL}{}", sign_for.unwrap_or(&path)),
        &[],
    );
    let r = svc
        .http
        .post(svc.url(&path))
        .header("content-type", "application/json")
        .header("x-twilio-signature", sig)
        .body(body.to_owned())
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_deliveries_give_the_rows_of_form_callbacks_and_count_once() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let day = recent_day(10, 120, 14);

    // Malformed or forged deliveries are refused and change nothing.
    let one = json!([cloud_event(&day.callbacks[0])]).to_string();
    assert_eq!(
        post_stream(&svc, &one, Some("/ingress/event-streams"))
            .await
            .0,
        403
    );
    let (status, text) = post_stream(&svc, "[{\"type\": 5}]", None).await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = post_stream(&svc, "{not json", None).await;
    assert!(status == 400 && text.contains("not JSON"), "{text}");

    // Batches of up to 7 CloudEvents, each delivered twice (at least once delivery),
    // with other products' events mixed in; a fifth of the events also come as form
    // callbacks.
    let mut accepted = 0;
    for chunk in day.callbacks.chunks(7) {
        let mut items: Vec<Value> = chunk.iter().map(cloud_event).collect();
        items
            .push(json!({"type": "com.twilio.voice.insights.call-summary.complete", "data": "{}"}));
        let body = Value::Array(items).to_string();
        for _ in 0..2 {
            let (status, text) = post_stream(&svc, &body, None).await;
            assert_eq!(status, 200, "{text}");
            let r: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(r["ignored"], 1);
            accepted += r["accepted"].as_u64().unwrap_or(0);
        }
    }
    assert_eq!(accepted as usize, 2 * day.callbacks.len());
    let forms: Vec<Callback> = day.callbacks.iter().step_by(5).cloned().collect();
    assert!(post_all(&svc, &forms, 16).await.iter().all(|s| *s == 204));
    svc.wait_drained(Duration::from_secs(60)).await;

    let distinct: HashSet<&str> = day.callbacks.iter().filter_map(|c| get(c, "Sid")).collect();
    assert_eq!(
        db.count("SELECT count(*) FROM events").await as usize,
        distinct.len()
    );
    assert_state_matches(&db, &events_of(&day.callbacks)).await;
}

/// The sink's test event (from `POST /v1/Sinks/{Sid}/Test`) is acknowledged, stored
/// nowhere, and its `test_id` is logged at INFO with the request that validates the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_test_event_is_logged_with_the_validate_step() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let test_id = "TE00000000000000000000000000000042";
    let body = json!([{"specversion": "1.0", "type": "com.twilio.eventstreams.test-event",
                       "id": "CE00000000000000000000000000000001",
                       "data": {"test_id": test_id, "sink_sid": "DG00000000000000000000000000000007"}}])
    .to_string();
    let (status, text) = post_stream(&svc, &body, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json")["ignored"],
        1
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = "/v1/Sinks/DG00000000000000000000000000000007/Validate";
    loop {
        let log = svc.log();
        let line = log.lines().find(|l| l.contains(test_id));
        if let Some(line) = line {
            assert!(line.contains("INFO") && line.contains(want), "{line}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no test_id in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(db.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_reproduces_the_live_tables_exactly_even_while_serving() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let day = recent_day(10, 200, 15);
    let (first, rest) = day.callbacks.split_at(day.callbacks.len() / 2);
    assert!(post_all(&svc, first, 32).await.iter().all(|s| *s == 204));
    svc.wait_drained(Duration::from_secs(60)).await;
    let live = snapshot(&db).await;

    // Damage the state tables the way a rule bug would.
    let c = db.client().await;
    c.batch_execute(
        "UPDATE tasks SET answered_in = 999, state = '{}' WHERE sid IN (SELECT sid FROM tasks LIMIT 50); \
         UPDATE reservations SET status = 'bogus'; \
         UPDATE workers SET current_activity = 'Nowhere', state = '{}'; \
         DELETE FROM worker_channels WHERE worker_sid IN (SELECT worker_sid FROM workers LIMIT 2);",
    )
    .await
    .expect("damage");
    let (ok, out, err) = run_cli(&svc, &["rebuild", "--batch", "37"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("rebuilt"), "{out}");
    assert_same(&live, &snapshot(&db).await);

    // Rebuilding while the other half of the day is being applied ends in the rows of
    // the whole day.
    let posting = post_all(&svc, rest, 8);
    let mut cmd = svc.command(&["rebuild", "--batch", "5"]);
    let rebuilding = tokio::task::spawn_blocking(move || cmd.output());
    assert!(posting.await.iter().all(|s| *s == 204));
    let out = rebuilding.await.expect("join").expect("rebuild");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    svc.wait_drained(Duration::from_secs(60)).await;
    assert_state_matches(&db, &events_of(&day.callbacks)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_raw_events_and_leaves_the_state_tables_alone() {
    let db = TestDb::new().await;
    let mut svc = Service::start(Options::new(&db.url)).await;
    let old = realistic_day(&DayConfig {
        seed: 16,
        tasks: 80,
        workers: 6,
        start_ms: chrono::Utc::now().timestamp_millis() - 12 * 86_400_000,
        ..DayConfig::default()
    });
    let recent = recent_day(10, 60, 17);
    assert!(post_all(&svc, &old.callbacks, 32)
        .await
        .iter()
        .all(|s| *s == 204));
    assert!(post_all(&svc, &recent.callbacks, 32)
        .await
        .iter()
        .all(|s| *s == 204));
    svc.wait_drained(Duration::from_secs(60)).await;
    let before = snapshot(&db).await;
    assert_eq!(svc.terminate().code(), Some(0));

    let mut cfg = std::fs::read_to_string(&svc.config).expect("config");
    cfg.push_str("\n[retention]\nevents_days = 7\nbatch_size = 100\n");
    std::fs::write(&svc.config, cfg).expect("config");
    svc.spawn().await;
    let n_recent = recent.callbacks.len() as i64;
    wait_for("retention", Duration::from_secs(60), async || {
        db.count("SELECT count(*) FROM events").await == n_recent
    })
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE occurred_at < now() - interval '7 days'")
            .await,
        0
    );
    assert_same(&before, &snapshot(&db).await);

    // A rebuild now leaves the entities whose events are gone as they were.
    let (ok, out, err) = run_cli(&svc, &["rebuild"]);
    assert!(ok, "{out}\n{err}");
    assert_same(&before, &snapshot(&db).await);
}

/// `n` task.created events (distinct tasks) spread over `spread_ms` from `start_ms`, as
/// items of TaskRouter's REST Events list.
fn dense_events(n: usize, start_ms: i64, spread_ms: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let ms = start_ms + (i as i64 * spread_ms) / n as i64;
            json!({
                "sid": format!("EV{i:032x}"), "event_type": "task.created",
                "account_sid": AC, "workspace_sid": WS, "event_date_ms": ms,
                "resource_type": "task", "resource_sid": format!("WT{i:032x}"),
                "event_data": {"task_sid": format!("WT{i:032x}"),
                               "task_assignment_status": "pending", "task_age": "0"},
            })
        })
        .collect()
}

async fn service_for(stub: &TwilioStub) -> (TestDb, Service) {
    let db = TestDb::new().await;
    let svc = Service::start(options(&db, stub).backfill_catch_up(false)).await;
    (db, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_splits_full_pages_instead_of_relying_on_paging() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    // 2,600 events within three minutes two hours ago, and a few around them; the
    // Events list does not page (as its docs warn).
    let two_hours_ago = chrono::Utc::now().timestamp_millis() - 2 * 3_600_000;
    let mut events = dense_events(2_600, two_hours_ago, 180_000);
    for (i, e) in dense_events(50, two_hours_ago - 3_000_000, 6_000_000)
        .into_iter()
        .enumerate()
    {
        let mut e = e;
        e["sid"] = json!(format!("EVf{i:031x}"));
        events.push(e);
    }
    let total = events.len() as i64;
    stub.set_events(WS, events);
    stub.set_events_unpaged(true);
    let (db, svc) = service_for(&stub).await;
    let (ok, out, err) = run_cli(&svc, &["backfill", "--since", "3h", "--slice", "1h"]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        total,
        "{out}"
    );
    // Boundary seconds are read by both windows; each event is applied once.
    assert!(out.contains(&format!(" {total} were missing")), "{out}");
    // No page was followed: every window fitted in one page.
    let reqs = stub.requests();
    assert!(
        reqs.iter()
            .filter(|r| r.path == EVENTS)
            .all(|r| !r.query.contains("Page=") && !r.query.contains("PageToken")),
        "a next page was followed"
    );
    let run = db
        .client()
        .await
        .query_one(
            "SELECT slices_done, finished_at IS NOT NULL, next_page_url FROM backfill_runs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            run.get::<_, i32>(0),
            run.get::<_, bool>(1),
            run.get::<_, Option<String>>(2)
        ),
        (3, true, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_too_full_for_one_page_is_paged_and_a_repeated_page_stops_the_run() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    // 1,500 events in one second: no split fits them in a page of 1,000.
    let second = (chrono::Utc::now().timestamp() - 3_600) * 1000;
    stub.set_events(WS, dense_events(1_500, second + 100, 800));
    stub.set_events_unpaged(true);
    let (db, svc) = service_for(&stub).await;

    // The list repeats its page instead of paging: the run stops, loudly, resumable.
    let (ok, out, err) = run_cli(&svc, &["backfill", "--since", "2h", "--slice", "1h"]);
    assert!(!ok, "a repeated page was skipped silently: {out}\n{err}");
    assert!(err.contains("repeated a page"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    let c = db.client().await;
    let run = c
        .query_one(
            "SELECT finished_at IS NULL, error, next_page_url IS NOT NULL FROM backfill_runs",
            &[],
        )
        .await
        .unwrap();
    assert!(run.get::<_, bool>(0));
    assert!(run
        .get::<_, Option<String>>(1)
        .unwrap_or_default()
        .contains("repeated a page"));
    assert!(run.get::<_, bool>(2), "the fallback position is kept");
    assert!(db.count("SELECT count(*) FROM events").await < 1_500);

    // Where the list does page, the resumed run follows next_page_url for that second.
    stub.set_events_unpaged(false);
    let (ok, out, err) = run_cli(&svc, &["backfill", "--resume"]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(db.count("SELECT count(*) FROM events").await, 1_500);
    assert_eq!(
        db.count("SELECT count(*) FROM backfill_runs WHERE finished_at IS NOT NULL")
            .await,
        1
    );
}
