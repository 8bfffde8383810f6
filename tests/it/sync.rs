//! Summaries published to a local stand-in for Twilio's Sync and TaskRouter APIs.

use crate::harness::*;
use crate::twilio_stub::TwilioStub;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use taskrouter_summarizer::sim::{realistic_day, DayConfig, SimDay};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const WS: &str = "WS0123456789abcdef0123456789abcdef";
const IS: &str = "IS0123456789abcdef0123456789abcdef";

use taskrouter_summarizer::sim::demo::zone_where_today_is_long;

/// The service against the stub's TaskRouter and Sync, publishing SLA days in `tz`.
fn sync_options(db: &TestDb, stub: &TwilioStub, tz: &str) -> Options {
    Options::new(&db.url)
        .account(AC)
        .taskrouter(stub, WS)
        .sync(stub, IS)
        .timezone(tz)
        .taskrouter_sync_interval(2)
}

/// REST fixtures that agree with the simulated day's end state.
fn seed_stub(stub: &TwilioStub, day: &SimDay) {
    let mut workers = Vec::new();
    for w in day.workers.iter().filter(|w| !w.deleted) {
        workers.push(json!({
            "sid": w.sid, "friendly_name": w.name, "account_sid": AC, "workspace_sid": WS,
            "activity_sid": w.final_activity_sid, "activity_name": w.final_activity_name,
            "available": w.final_available, "attributes": "{\"contact_uri\":\"client:x\"}",
        }));
        let chans: Vec<Value> = w
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"sid": format!("WC{i:032x}"), "task_channel_sid": c.task_channel_sid,
                       "task_channel_unique_name": c.unique_name, "configured_capacity": c.capacity,
                       "available": c.available, "assigned_tasks": 0})
            })
            .collect();
        stub.set_worker_channels(WS, &w.sid, chans);
    }
    stub.set_workers(WS, workers);
    let open: Vec<Value> = day
        .tasks
        .iter()
        .filter(|t| !matches!(t.final_status.as_str(), "completed" | "canceled"))
        .map(|t| json!({"sid": t.sid, "assignment_status": t.final_status, "age": 100}))
        .collect();
    stub.set_tasks(WS, open);
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What the per-queue `today` objects must say, from the simulator's ground truth.
fn expected_today(day: &SimDay) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut queues: Vec<&str> = day.tasks.iter().map(|t| t.queue_name.as_str()).collect();
    queues.sort();
    queues.dedup();
    for q in queues {
        let ts: Vec<_> = day.tasks.iter().filter(|t| t.queue_name == q).collect();
        let accepted: Vec<i64> = ts.iter().filter_map(|t| t.answered_in).collect();
        let within = accepted.iter().filter(|a| **a <= 15).count() as i64;
        let abandoned = ts
            .iter()
            .filter(|t| t.answered_in.is_none() && t.canceled_wait_s.is_some_and(|w| w >= 5))
            .count() as i64;
        let short = ts
            .iter()
            .filter(|t| t.answered_in.is_none() && t.canceled_wait_s.is_some_and(|w| w < 5))
            .count() as i64;
        let completed: Vec<_> = ts
            .iter()
            .filter(|t| t.final_status == "completed")
            .collect();
        let handle: Vec<i64> = completed
            .iter()
            .filter_map(|t| Some(t.total_time? - t.answered_in?))
            .collect();
        let den = accepted.len() as i64 + abandoned;
        out.insert(
            q.to_owned(),
            json!({
                "tasks_created": ts.len(),
                "tasks_accepted": accepted.len(),
                "tasks_accepted_within_sla": within,
                "tasks_abandoned": abandoned,
                "tasks_short_abandoned": short,
                "tasks_completed": completed.len(),
                "service_level": if den > 0 { json!(r2(within as f64 * 100.0 / den as f64)) } else { Value::Null },
                "avg_speed_of_answer": r2(accepted.iter().sum::<i64>() as f64 / accepted.len() as f64),
                "avg_handle_time": r2(handle.iter().sum::<i64>() as f64 / handle.len() as f64),
            }),
        );
    }
    out
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn realistic_today() -> SimDay {
    let now = chrono::Utc::now().timestamp_millis();
    realistic_day(&DayConfig {
        seed: 21,
        tasks: 200,
        workers: 12,
        start_ms: now - 10 * 3_600_000,
        ..DayConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realistic_day_is_published_with_exact_numbers_and_retries() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let day = realistic_today();
    seed_stub(&stub, &day);
    // Sync misbehaves at first: server errors and rate limiting.
    stub.fail_next("/v1/Services", 500, 3);
    stub.fail_next("/v1/Services", 429, 2);
    let db = TestDb::new().await;
    let svc = Service::start(sync_options(&db, &stub, &zone_where_today_is_long())).await;
    let st = post_all(&svc, &day.callbacks, 32).await;
    assert!(st.iter().all(|s| *s == 204));
    svc.wait_drained(Duration::from_secs(60)).await;

    // Legacy documents, in the original's shape.
    let mut active: BTreeMap<String, i64> = BTreeMap::new();
    for t in &day.tasks {
        if !matches!(t.final_status.as_str(), "completed" | "canceled") {
            *active.entry(t.channel.clone()).or_default() += 1;
        }
    }
    let mut capacity: BTreeMap<String, i64> = BTreeMap::new();
    for w in day.workers.iter().filter(|w| !w.deleted) {
        for c in &w.channels {
            let add = if c.available && w.final_available {
                c.capacity
            } else {
                0
            };
            *capacity.entry(c.unique_name.clone()).or_default() += add;
        }
    }
    eventually(
        "workspaceActiveTaskCount",
        Duration::from_secs(30),
        || async {
            let d = stub
                .document(IS, "workspaceActiveTaskCount")
                .ok_or("missing")?;
            for ch in ["voice", "chat", "sms"] {
                let want = active.get(ch).copied().unwrap_or(0);
                if d[ch] != want {
                    return Err(format!("{ch}: {} != {want} in {d}", d[ch]));
                }
            }
            if d["video"] != 0 || d["custom5"] != 0 {
                return Err(format!("legacy keys missing: {d}"));
            }
            Ok(())
        },
    )
    .await;
    // Capacity needs every worker's channels, most of which only the REST sync knows.
    eventually("workspaceCapacity", Duration::from_secs(30), || async {
        let d = stub.document(IS, "workspaceCapacity").ok_or("missing")?;
        for (ch, want) in &capacity {
            if d[ch] != *want {
                return Err(format!("{ch}: {} != {want} in {d}", d[ch]));
            }
        }
        Ok(())
    })
    .await;
    let expected = expected_today(&day);
    eventually("taskQueueStats", Duration::from_secs(30), || async {
        let items = stub.map_items(IS, "taskQueueStats");
        for (q, want) in &expected {
            let item = items.get(q).ok_or(format!("no item for {q}"))?;
            for (k, v) in want.as_object().into_iter().flatten() {
                if &item["today"][k] != v {
                    return Err(format!("{q}.today.{k}: {} != {v}", item["today"][k]));
                }
            }
            if item["cumulative"]["tasks_entered"] != want["tasks_created"] {
                return Err(format!("{q}: cumulative.tasks_entered"));
            }
        }
        Ok(())
    })
    .await;
    let reqs = stub.requests();
    assert!(reqs.iter().any(|r| r.status == 500), "500s were injected");
    assert!(reqs.iter().any(|r| r.status == 429), "429s were injected");
    assert!(
        !reqs.iter().any(|r| r.status == 400 || r.status == 401),
        "no bad request: {:?}",
        reqs.iter()
            .filter(|r| r.status >= 400)
            .map(|r| (&r.path, r.status))
            .collect::<Vec<_>>()
    );

    // The same numbers at /api/summary.
    let api: Value = svc.summary().await;
    for (q, want) in &expected {
        assert_eq!(
            api["queues"][q]["today"]["tasks_created"],
            want["tasks_created"]
        );
        assert_eq!(
            api["queues"][q]["today"]["service_level"],
            want["service_level"]
        );
    }

    // Unchanged objects are not written again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stub.clear_requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rewrites: Vec<String> = stub
        .requests()
        .iter()
        .filter(|r| {
            r.method == "POST"
                && (r.path.contains("workspaceActiveTaskCount")
                    || r.path.contains("workspaceCapacity"))
        })
        .map(|r| r.path.clone())
        .collect();
    assert!(
        rewrites.is_empty(),
        "unchanged documents rewritten: {rewrites:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_publisher_and_takeover() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let tz = zone_where_today_is_long();
    let mut a = Service::start(sync_options(&db, &stub, &tz)).await;
    let b = Service::start(sync_options(&db, &stub, &tz)).await;
    async fn leader(s: &Service) -> bool {
        match s.admin_get("/metrics").send().await {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_default()
                .lines()
                .any(|l| l == "trs_publisher_leader 1"),
            Err(_) => false,
        }
    }
    eventually("one leader", Duration::from_secs(15), || async {
        match (leader(&a).await, leader(&b).await) {
            (true, false) | (false, true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let a_leads = leader(&a).await;
    let now = chrono::Utc::now().timestamp_millis();
    let task = |n: u32| {
        Cb::task("task.created", wt(n))
            .ev(n)
            .status("pending")
            .channel("chat")
            .queue("Support")
            .queue_sid("WQ1")
            .age(0)
            .at(now)
            .build()
    };
    assert_eq!(a.post(&task(1)).await.unwrap(), 204);
    eventually("first task published", Duration::from_secs(15), || async {
        let d = stub
            .document(IS, "workspaceActiveTaskCount")
            .ok_or("missing")?;
        (d["chat"] == 1).then_some(()).ok_or(format!("{d}"))
    })
    .await;

    // Stop the leader; the other takes over and publishes the next change.
    let (survivor, stopped) = if a_leads {
        assert!(a.terminate().success());
        (&b, "a")
    } else {
        drop(b);
        (&a, "b")
    };
    eventually("takeover", Duration::from_secs(15), || async {
        leader(survivor)
            .await
            .then_some(())
            .ok_or(format!("{stopped} stopped, no new leader"))
    })
    .await;
    assert_eq!(survivor.post(&task(2)).await.unwrap(), 204);
    eventually("second task published", Duration::from_secs(15), || async {
        let d = stub
            .document(IS, "workspaceActiveTaskCount")
            .ok_or("missing")?;
        (d["chat"] == 2).then_some(()).ok_or(format!("{d}"))
    })
    .await;
    if !a_leads {
        let _ = a.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_closes_only_tasks_taskrouter_says_are_gone() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    // Three tasks created two minutes ago, still open locally.
    let then = chrono::Utc::now().timestamp_millis() - 120_000;
    let cb = |n: u32| {
        Cb::task("task.created", wt(n))
            .ev(n)
            .status("pending")
            .age(0)
            .at(then)
            .build()
    };
    // TaskRouter: task 1 still pending, task 2 assigned, task 3 unknown (gone).
    stub.set_tasks(
        WS,
        vec![
            json!({"sid": format!("WT{:032x}", 1), "assignment_status": "pending", "age": 120}),
            json!({"sid": format!("WT{:032x}", 2), "assignment_status": "assigned", "age": 120}),
        ],
    );
    let opts = Options::new(&db.url)
        .account(AC)
        .taskrouter(&stub, WS)
        .taskrouter_sync_interval(0)
        .reconcile_schedule("*/2 * * * * *");
    // First: the open list answers empty (a flaky answer). Nothing may be closed.
    stub.set_empty_list("/v1/Workspaces", true);
    let svc = Service::start(opts).await;
    for n in 1..=3 {
        assert_eq!(svc.post(&cb(n)).await.unwrap(), 204);
    }
    svc.wait_drained(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = |n: u32| {
        let db = &db;
        async move {
            db.client()
                .await
                .query_one(
                    "SELECT task_assignment_status FROM tasks WHERE sid = $1",
                    &[&format!("WT{n:032x}")],
                )
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
                .unwrap_or_default()
        }
    };
    // With an empty list every task is looked up one by one: 1 and 2 still exist.
    assert_eq!(status(1).await, "pending");
    assert_eq!(
        status(2).await,
        "assigned",
        "TaskRouter's own status for task 2"
    );
    stub.set_empty_list("/v1/Workspaces", false);
    // Gone, and its Events list (empty here) holds no ending: deleted, not completed.
    eventually("task 3 closed", Duration::from_secs(15), || async {
        let s = status(3).await;
        (s == "deleted").then_some(()).ok_or(s)
    })
    .await;
    assert_eq!(status(1).await, "pending");
    assert_eq!(status(2).await, "assigned");
}

fn task_created(n: u32, queue: &str, channel: &str) -> Params {
    Cb::task("task.created", wt(n))
        .ev(n)
        .status("pending")
        .channel(channel)
        .queue(queue)
        .queue_sid(format!("WQ{n:032x}"))
        .age(0)
        .at(chrono::Utc::now().timestamp_millis())
        .build()
}

/// Issue 14.3: with a TTL, nothing published expires while the service runs, changed or
/// not: the map itself is renewed by item writes that carry `CollectionTtl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_published_expires_while_the_service_runs() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let opts = sync_options(&db, &stub, &zone_where_today_is_long()).publish_ttl(4);
    let svc = Service::start(opts).await;
    assert_eq!(
        svc.post(&task_created(1, "Support", "chat")).await.unwrap(),
        204
    );
    eventually("published", Duration::from_secs(20), || async {
        let items = stub.map_items(IS, "taskQueueStats");
        let d = stub.document(IS, "workspaceActiveTaskCount");
        (items.contains_key("Support") && d.is_some_and(|d| d["chat"] == 1))
            .then_some(())
            .ok_or(format!("{items:?}"))
    })
    .await;
    let map_sid = stub.container(IS, "Maps", "taskQueueStats").unwrap()["sid"].clone();
    // Nothing changes for three TTLs: the same map and every object stay.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let map = stub.container(IS, "Maps", "taskQueueStats");
        assert_eq!(
            map.map(|m| m["sid"].clone()),
            Some(map_sid.clone()),
            "the map expired"
        );
        assert!(stub.map_items(IS, "taskQueueStats").contains_key("Support"));
        for doc in [
            "workspaceActiveTaskCount",
            "workspaceCapacity",
            "workspaceSummary",
        ] {
            assert!(stub.document(IS, doc).is_some(), "{doc} expired");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let item_writes: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/Maps/taskQueueStats/Items"))
        .collect();
    assert!(!item_writes.is_empty());
    for r in &item_writes {
        let has = |k: &str| r.form.iter().any(|(n, v)| n == k && v == "4");
        assert!(has("ItemTtl") && has("CollectionTtl"), "{:?}", r.form);
    }
}

async fn delete(stub: &TwilioStub, path: &str) -> u16 {
    reqwest::Client::new()
        .delete(format!("{}/v1/Services/{IS}/{path}", stub.base_url()))
        .basic_auth(AC, Some(AUTH_TOKEN))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Issue 14.4: a document or map that is gone (any 404, here Sync's generic 20404) is
/// created again, then written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_documents_and_maps_are_created_again() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let svc = Service::start(sync_options(&db, &stub, &zone_where_today_is_long())).await;
    assert_eq!(
        svc.post(&task_created(1, "Support", "chat")).await.unwrap(),
        204
    );
    eventually("published", Duration::from_secs(20), || async {
        let items = stub.map_items(IS, "taskQueueStats");
        (items.contains_key("Support") && stub.document(IS, "workspaceActiveTaskCount").is_some())
            .then_some(())
            .ok_or(format!("{items:?}"))
    })
    .await;
    assert_eq!(delete(&stub, "Maps/taskQueueStats").await, 204);
    assert_eq!(
        delete(&stub, "Documents/workspaceActiveTaskCount").await,
        204
    );
    assert_eq!(
        svc.post(&task_created(2, "Support", "chat")).await.unwrap(),
        204
    );
    eventually("created again", Duration::from_secs(20), || async {
        let items = stub.map_items(IS, "taskQueueStats");
        let d = stub.document(IS, "workspaceActiveTaskCount");
        (items
            .get("Support")
            .is_some_and(|i| i["realtime"]["total_tasks"] == 2)
            && d.as_ref().is_some_and(|d| d["chat"] == 2))
        .then_some(())
        .ok_or(format!("{items:?} {d:?}"))
    })
    .await;
    let not_found: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.status == 404)
        .map(|r| r.path)
        .collect();
    assert!(!not_found.is_empty(), "the stand-in answered 404s");
}

/// Issue 14.9: one signed callback with a 100 KB channel name and one with a long queue
/// name: every summary is still published, keys bounded, nothing over 16 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_name_never_stops_publishing() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let svc = Service::start(sync_options(&db, &stub, &zone_where_today_is_long())).await;
    let huge_channel = "c".repeat(100 * 1024);
    let long_queue = "Q".repeat(1000);
    for (n, q, ch) in [
        (1, "Support", huge_channel.as_str()),
        (2, long_queue.as_str(), "chat"),
        (3, "Support", "chat"),
    ] {
        assert_eq!(svc.post(&task_created(n, q, ch)).await.unwrap(), 204);
    }
    eventually(
        "every summary published",
        Duration::from_secs(20),
        || async {
            let active = stub
                .document(IS, "workspaceActiveTaskCount")
                .ok_or("no active count")?;
            let summary = stub.document(IS, "workspaceSummary").ok_or("no summary")?;
            let items = stub.map_items(IS, "taskQueueStats");
            if active["chat"] != 2 || summary["realtime"]["total_tasks"] != 3 {
                return Err(format!("{active} {}", summary["realtime"]));
            }
            if items.len() != 2 || !items.contains_key("Support") {
                return Err(format!(
                    "{:?}",
                    items.keys().map(|k| k.len()).collect::<Vec<_>>()
                ));
            }
            Ok(())
        },
    )
    .await;
    let items = stub.map_items(IS, "taskQueueStats");
    let long_key = items.keys().find(|k| k.starts_with("QQQ")).unwrap();
    assert!(long_key.chars().count() <= 320, "{}", long_key.len());
    let active = stub.document(IS, "workspaceActiveTaskCount").unwrap();
    let channel_key = active
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.starts_with("ccc"))
        .expect("the long channel, under a bounded key");
    assert!(channel_key.chars().count() <= 256, "{}", channel_key.len());
    assert!(
        !stub.requests().iter().any(|r| r.status == 400),
        "nothing refused"
    );
}

fn wk(n: u32) -> String {
    format!("WK{n:032x}")
}

/// `worker.activity.update`: worker `n` (named `agent{n}`) went from `from`, where it spent
/// `previous_ms`, to `to` at `at_ms`.
fn activity_update(ev: u32, n: u32, from: &str, to: &str, previous_ms: i64, at_ms: i64) -> Params {
    Cb::worker("worker.activity.update", wk(n))
        .ev(ev)
        .set("WorkerName", format!("agent{n}"))
        .set("WorkerActivitySid", format!("WA{to}"))
        .set("WorkerActivityName", to)
        .set("WorkerPreviousActivitySid", format!("WA{from}"))
        .set("WorkerPreviousActivityName", from)
        .set("WorkerTimeInPreviousActivityMs", previous_ms)
        .at(at_ms)
        .build()
}

/// Only Sync: no workspace, so no TaskRouter REST sync changes the workers under test.
fn worker_stats_options(db: &TestDb, stub: &TwilioStub) -> Options {
    Options::new(&db.url)
        .account(AC)
        .sync(stub, IS)
        .timezone(&zone_where_today_is_long())
}

/// Issue 17: with `publish.worker_stats`, one `workerStats` item per worker, written when
/// its worker changes and only then; a deleted worker's item, and an item of a worker
/// unknown here (left from before), are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_stats_publishes_one_item_per_worker_written_only_on_change() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    // An item of a worker deleted while no instance ran.
    let stray = wk(99);
    let created = reqwest::Client::new()
        .post(format!("{}/v1/Services/{IS}/Maps", stub.base_url()))
        .basic_auth(AC, Some(AUTH_TOKEN))
        .form(&[("UniqueName", "workerStats")])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = reqwest::Client::new()
        .post(format!(
            "{}/v1/Services/{IS}/Maps/workerStats/Items",
            stub.base_url()
        ))
        .basic_auth(AC, Some(AUTH_TOKEN))
        .form(&[
            ("Key", stray.as_str()),
            ("Data", "{\"activity\":\"Available\"}"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let db = TestDb::new().await;
    let svc = Service::start(worker_stats_options(&db, &stub).worker_stats(true)).await;
    let now = chrono::Utc::now().timestamp_millis();
    // Three workers logged in 10 s ago, after a minute offline.
    for n in 1..=3 {
        let cb = activity_update(n, n, "Offline", "Available", 60_000, now - 10_000);
        assert_eq!(svc.post(&cb).await.unwrap(), 204);
    }
    let activities = |want: [(u32, &'static str); 3]| {
        let stub = &stub;
        let stray = stray.clone();
        async move {
            let items = stub.map_items(IS, "workerStats");
            if items.contains_key(&stray) {
                return Err("the stray item is still there".to_string());
            }
            if items.len() != want.len() {
                return Err(format!("{} items: {:?}", items.len(), items.keys()));
            }
            for (n, activity) in want {
                let item = items.get(&wk(n)).ok_or(format!("no item for worker {n}"))?;
                if item["activity"] != activity {
                    return Err(format!("worker {n}: {item}"));
                }
            }
            Ok(())
        }
    };
    eventually("one item per worker", Duration::from_secs(20), || {
        activities([(1, "Available"), (2, "Available"), (3, "Available")])
    })
    .await;
    let items = stub.map_items(IS, "workerStats");
    let one = &items[&wk(1)];
    assert_eq!(one["sid"], wk(1));
    assert_eq!(one["name"], "agent1");
    let since = chrono::DateTime::from_timestamp_millis(now - 10_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(one["activity_since"], since);
    // What grows by itself is left out; the closed minute offline is in.
    assert!(one.get("seconds_in_activity").is_none(), "{one}");
    assert_eq!(one["tasks"], json!([]));
    assert_eq!(
        one["today"]["seconds_by_activity"],
        json!({"Offline": 60.0})
    );

    // Worker 2 takes a break: its item changes, the others are not written.
    let writes = |n: u32| stub.item_writes(IS, "workerStats", &wk(n));
    let before: Vec<usize> = (1..=3).map(writes).collect();
    assert!(before.iter().all(|w| *w >= 1), "{before:?}");
    let t2 = chrono::Utc::now().timestamp_millis();
    let available_ms = t2 - (now - 10_000);
    let cb = activity_update(4, 2, "Available", "Break", available_ms, t2);
    assert_eq!(svc.post(&cb).await.unwrap(), 204);
    eventually("worker 2 on a break", Duration::from_secs(20), || {
        activities([(1, "Available"), (2, "Break"), (3, "Available")])
    })
    .await;
    let two = &stub.map_items(IS, "workerStats")[&wk(2)];
    assert_eq!(
        two["today"]["seconds_by_activity"],
        json!({"Offline": 60.0, "Available": available_ms as f64 / 1000.0})
    );
    // Several publish ticks (one a second) later, nothing else was written.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: Vec<usize> = (1..=3).map(writes).collect();
    assert_eq!((after[0], after[2]), (before[0], before[2]), "{after:?}");
    assert!(after[1] > before[1], "{before:?} {after:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!((1..=3).map(writes).collect::<Vec<_>>(), after);

    // Worker 3 is deleted: its item goes.
    let cb = Cb::worker("worker.deleted", wk(3))
        .ev(5)
        .at(chrono::Utc::now().timestamp_millis())
        .build();
    assert_eq!(svc.post(&cb).await.unwrap(), 204);
    eventually(
        "worker 3's item removed",
        Duration::from_secs(20),
        || async {
            let items = stub.map_items(IS, "workerStats");
            (items.len() == 2 && !items.contains_key(&wk(3)))
                .then_some(())
                .ok_or(format!("{:?}", items.keys()))
        },
    )
    .await;
    assert_eq!(writes(1), after[0]);
}

/// Issue 17: `publish.worker_stats` is off by default: no `workerStats` map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_stats_is_off_by_default() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let svc = Service::start(worker_stats_options(&db, &stub)).await;
    let now = chrono::Utc::now().timestamp_millis();
    for n in 1..=2 {
        let cb = activity_update(n, n, "Offline", "Available", 60_000, now - 10_000);
        assert_eq!(svc.post(&cb).await.unwrap(), 204);
    }
    // The summaries are published with both workers in them...
    eventually(
        "workers in the summary",
        Duration::from_secs(20),
        || async {
            let d = stub.document(IS, "workspaceSummary").ok_or("no summary")?;
            (d["total_workers"] == 2)
                .then_some(())
                .ok_or(format!("{}", d["total_workers"]))
        },
    )
    .await;
    // ...and a few ticks later still no map, nor any request for one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stub.container(IS, "Maps", "workerStats").is_none());
    let asked: Vec<String> = stub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("workerStats"))
        .map(|r| r.path)
        .collect();
    assert!(asked.is_empty(), "{asked:?}");
}

/// Issue 17 with `publish.ttl_seconds`: unchanged `workerStats` items are renewed, so
/// neither they nor the map expire while the service runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_stats_items_do_not_expire_while_the_service_runs() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let opts = worker_stats_options(&db, &stub)
        .worker_stats(true)
        .publish_ttl(4);
    let svc = Service::start(opts).await;
    let now = chrono::Utc::now().timestamp_millis();
    let cb = activity_update(1, 1, "Offline", "Available", 60_000, now - 10_000);
    assert_eq!(svc.post(&cb).await.unwrap(), 204);
    eventually("published", Duration::from_secs(20), || async {
        let items = stub.map_items(IS, "workerStats");
        items
            .get(&wk(1))
            .is_some_and(|i| i["activity"] == "Available")
            .then_some(())
            .ok_or(format!("{items:?}"))
    })
    .await;
    let map_sid = stub.container(IS, "Maps", "workerStats").unwrap()["sid"].clone();
    // Nothing changes for three TTLs: the same map and its item stay.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let map = stub.container(IS, "Maps", "workerStats");
        assert_eq!(map.map(|m| m["sid"].clone()), Some(map_sid.clone()));
        assert!(stub.map_items(IS, "workerStats").contains_key(&wk(1)));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let writes: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/Maps/workerStats/Items"))
        .collect();
    // Renewed every half TTL (2 to 3 s at one tick a second), not on every tick.
    let accepted = writes.iter().filter(|r| r.status < 300).count();
    assert!((4..=9).contains(&accepted), "{accepted} writes");
    for r in &writes {
        let has = |k: &str| r.form.iter().any(|(n, v)| n == k && v == "4");
        assert!(has("ItemTtl") && has("CollectionTtl"), "{:?}", r.form);
    }
}
