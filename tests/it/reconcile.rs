//! Reconciliation with TaskRouter's REST API: open tasks checked against the open list
//! (an array filter, sent as repeated pairs), and tasks TaskRouter no longer has (404)
//! ended the way their own events say, or marked `deleted` when those say nothing.

use crate::harness::*;
use crate::twilio_stub::TwilioStub;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const WS: &str = "WSaaaabbbbccccdddd0123456789abcdef";
const EVENTS: &str = "/v1/Workspaces/WSaaaabbbbccccdddd0123456789abcdef/Events";
const TASKS: &str = "/v1/Workspaces/WSaaaabbbbccccdddd0123456789abcdef/Tasks";

fn task_sid(n: u32) -> String {
    format!("WT{n:032x}")
}

/// A task callback `age_s` seconds into the life of task `n`, created at `created_ms`.
fn cb(ev: u32, ty: &str, n: u32, created_ms: i64, age_s: i64, status: &str) -> Params {
    Cb::task(ty, task_sid(n))
        .ev(ev)
        .account(AC)
        .workspace(WS)
        .status(status)
        .age(age_s)
        .queue("Support")
        .channel("voice")
        .at(created_ms + age_s * 1000)
        .build()
}

/// The callback as an item of TaskRouter's REST Events list.
fn rest_event(cb: &[(String, String)], more: Value) -> Value {
    let get = |k: &str| cb.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut data = json!({
        "task_sid": get("TaskSid"), "task_assignment_status": get("TaskAssignmentStatus"),
        "task_age": get("TaskAge"), "task_queue_name": get("TaskQueueName"),
        "task_channel_unique_name": get("TaskChannelUniqueName"),
    });
    if let (Some(d), Value::Object(m)) = (data.as_object_mut(), more) {
        d.extend(m);
    }
    json!({
        "sid": get("Sid"), "event_type": get("EventType"), "account_sid": AC,
        "workspace_sid": WS, "resource_type": "task", "resource_sid": get("TaskSid"),
        "event_date_ms": get("TimestampMs").and_then(|v| v.parse::<i64>().ok()),
        "event_data": data,
    })
}

async fn row(db: &TestDb, n: u32) -> Value {
    db.client()
        .await
        .query_one(
            "SELECT jsonb_build_object('status', task_assignment_status, \
             'completed_reason', completed_reason, 'canceled_reason', canceled_reason, \
             'canceled', canceled_at IS NOT NULL, 'total_time', total_time) \
             FROM tasks WHERE sid = $1",
            &[&task_sid(n)],
        )
        .await
        .expect("task row")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_taskrouter_no_longer_has_end_as_their_events_say_or_as_deleted() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    // Four tasks created two minutes ago; only their task.created callbacks arrived.
    let created = chrono::Utc::now().timestamp_millis() - 120_000;
    let created_cb = |n: u32| cb(n, "task.created", n, created, 0, "pending");
    // 1: canceled after 40 s (callback lost); TaskRouter deleted it, its events remain.
    // 2: gone, and its events hold nothing that ends it.
    // 3: still assigned in TaskRouter.
    // 4: still pending in TaskRouter.
    let canceled = cb(101, "task.canceled", 1, created, 40, "canceled");
    stub.set_events(
        WS,
        vec![
            rest_event(&created_cb(1), json!({})),
            rest_event(&canceled, json!({"task_canceled_reason": "hangup"})),
            rest_event(&created_cb(2), json!({})),
            rest_event(
                &cb(102, "task.updated", 2, created, 10, "pending"),
                json!({}),
            ),
        ],
    );
    stub.set_tasks(
        WS,
        vec![
            json!({"sid": task_sid(1), "assignment_status": "canceled", "age": 40}),
            json!({"sid": task_sid(3), "assignment_status": "assigned", "age": 120}),
            json!({"sid": task_sid(4), "assignment_status": "pending", "age": 120}),
        ],
    );
    // First, the Events list fails: nothing may be decided for the tasks that 404.
    stub.fail_next(EVENTS, 400, 1_000_000);
    let opts = Options::new(&db.url)
        .account(AC)
        .taskrouter(&stub, WS)
        .taskrouter_sync_interval(0)
        .reconcile_schedule("*/2 * * * * *")
        .conversations_fetch(false);
    let svc = Service::start(opts).await;
    for n in 1..=4 {
        assert_eq!(svc.post(&created_cb(n)).await.unwrap(), 204);
    }
    svc.wait_drained(Duration::from_secs(30)).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    while row(&db, 3).await["status"] != "assigned" {
        assert!(
            Instant::now() < deadline,
            "task 3 never reconciled: {}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let a few more rounds run with the Events list failing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in [1, 2, 4] {
        assert_eq!(row(&db, n).await["status"], "pending", "task {n}");
    }
    assert!(
        stub.requests()
            .iter()
            .any(|r| r.path == EVENTS && r.status == 400),
        "the Events list was never asked"
    );

    // The open list asks with one AssignmentStatus pair per open status.
    let tasks_query = stub
        .requests()
        .into_iter()
        .find(|r| r.path == TASKS)
        .expect("the open list was read")
        .query;
    let statuses: Vec<String> = form_urlencoded::parse(tasks_query.as_bytes())
        .filter(|(k, _)| k == "AssignmentStatus")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(
        statuses,
        ["pending", "reserved", "assigned", "wrapping"],
        "{tasks_query}"
    );

    // The Events list answers again: task 1 ends as it really did, task 2 as deleted.
    stub.clear_failures();
    let deadline = Instant::now() + Duration::from_secs(20);
    while row(&db, 2).await["status"] != "deleted" || row(&db, 1).await["status"] != "canceled" {
        assert!(
            Instant::now() < deadline,
            "not reconciled: {} {}\n{}",
            row(&db, 1).await,
            row(&db, 2).await,
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        row(&db, 1).await,
        json!({"status": "canceled", "completed_reason": null, "canceled_reason": "hangup",
               "canceled": true, "total_time": 40})
    );
    assert_eq!(
        row(&db, 2).await,
        json!({"status": "deleted", "completed_reason": "not found in TaskRouter",
               "canceled_reason": null, "canceled": false, "total_time": null})
    );
    assert_eq!(row(&db, 3).await["status"], "assigned");
    assert_eq!(row(&db, 4).await["status"], "pending");
    // The events read were applied like callbacks: the created ones already stored count
    // once, the missing ones are now in `events`.
    let c = db.client().await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM events WHERE task_sid = ANY($1)",
            &[&vec![task_sid(1), task_sid(2)]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    // Each Events read covered the task's life, filtered by its sid.
    for r in stub.requests().iter().filter(|r| r.path == EVENTS) {
        let q: Vec<(String, String)> = form_urlencoded::parse(r.query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert!(
            get("TaskSid").is_some_and(|t| t == task_sid(1) || t == task_sid(2)),
            "{q:?}"
        );
        let start = chrono::DateTime::parse_from_rfc3339(&get("StartDate").unwrap()).unwrap();
        assert!(start.timestamp_millis() <= created - 60_000, "{q:?}");
        assert_eq!(get("PageSize").as_deref(), Some("1000"));
    }
    // Summaries (recomputed on their schedule): one abandon, no completion; the
    // deleted task is neither, and no longer open.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s: Value = svc.summary().await;
        let w = &s["workspace"]["last_30_minutes"];
        let got = (
            w["tasks_abandoned"].clone(),
            w["tasks_completed"].clone(),
            s["workspace"]["realtime"]["total_tasks"].clone(),
        );
        if got == (json!(1), json!(0), json!(2)) {
            break;
        }
        assert!(Instant::now() < deadline, "summary: {s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
