//! User-defined jobs, against the Twilio stand-in.

use crate::harness::*;
use crate::twilio_stub::TwilioStub;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const IS: &str = "IS0123456789abcdef0123456789abcdef";

const JOBS: &str = r#"
[[jobs]]
name = "service_level"
schedule = "* * * * * *"
sql = """
SELECT count(*)::int AS tasks,
       count(*) FILTER (WHERE within_sla)::int AS within,
       count(*) FILTER (WHERE within_sla = false)::int AS missed,
       max(task_created) >= :today_start AS created_today,
       min(task_created) AS first_created,
       NULL::text AS nothing,
       2.50::numeric AS fixed
FROM tasks
"""
target = { type = "document", name = "jobServiceLevel" }

[[jobs]]
name = "per_queue"
schedule = "* * * * * *"
sql = "SELECT task_queue_name AS queue, count(*)::int AS tasks FROM tasks GROUP BY 1"
target = { type = "map", name = "jobQueues", key = "queue" }

[[jobs]]
name = "task_list"
schedule = "* * * * * *"
sql = "SELECT sid FROM tasks ORDER BY sid"
target = { type = "document", name = "jobTasks", shape = "rows" }

[[jobs]]
name = "answered"
schedule = "* * * * * *"
sql = "SELECT sid, answered_in FROM tasks WHERE answered_in IS NOT NULL ORDER BY sid"
target = { type = "list", name = "jobAnswered" }
"#;

/// The service against the stub's Sync, running `jobs` (`[[jobs]]` blocks).
fn options(db: &TestDb, stub: &TwilioStub, jobs: &str) -> Options {
    Options::new(&db.url).account(AC).sync(stub, IS).jobs(jobs)
}

fn event(n: u32, kind: &str, task: &str, queue: &str, age: i64) -> Params {
    let now = chrono::Utc::now().timestamp_millis();
    let cb = if kind == "reservation.accepted" {
        Cb::reservation(kind, task, format!("WR{n}"), "WK1").status("assigned")
    } else {
        Cb::task(kind, task).status("pending")
    };
    cb.ev(n)
        .queue(queue)
        .queue_sid(format!("WQ{queue}"))
        .channel("chat")
        .age(age)
        .created(now - age * 1000)
        .at(now)
        .build()
}

async fn eventually(what: &str, timeout: Duration, f: impl Fn() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_publish_exactly_their_query_results_and_only_changes() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let svc = Service::start(options(&db, &stub, JOBS)).await;
    let cbs = vec![
        event(1, "task.created", "WT1", "Sales", 0),
        event(2, "task.created", "WT2", "Sales", 0),
        event(3, "task.created", "WT3", "Support", 0),
        event(4, "task.created", "WT4", "Support", 0),
        event(5, "reservation.accepted", "WT1", "Sales", 5),
        event(6, "reservation.accepted", "WT3", "Support", 30),
    ];
    assert!(post_all(&svc, &cbs, 4).await.iter().all(|s| *s == 204));
    svc.wait_drained(Duration::from_secs(30)).await;

    eventually("document (object)", Duration::from_secs(15), || {
        let d = stub.document(IS, "jobServiceLevel").ok_or("missing")?;
        let want = json!({"tasks": 4, "within": 1, "missed": 1, "created_today": true,
                          "nothing": null, "fixed": 2.50});
        for (k, v) in want.as_object().into_iter().flatten() {
            if &d[k] != v {
                return Err(format!("{k}: {} != {v} in {d}", d[k]));
            }
        }
        // Timestamps are ISO-8601 strings.
        let first = d["first_created"].as_str().ok_or(format!("{d}"))?;
        chrono::DateTime::parse_from_rfc3339(first).map_err(|e| format!("{first}: {e}"))?;
        Ok(())
    })
    .await;
    eventually("map", Duration::from_secs(15), || {
        let m = stub.map_items(IS, "jobQueues");
        let want = [
            ("Sales".to_string(), json!({"queue": "Sales", "tasks": 2})),
            (
                "Support".to_string(),
                json!({"queue": "Support", "tasks": 2}),
            ),
        ];
        (m.len() == 2 && want.iter().all(|(k, v)| m.get(k) == Some(v)))
            .then_some(())
            .ok_or(format!("{m:?}"))
    })
    .await;
    eventually("document (rows)", Duration::from_secs(15), || {
        let d = stub.document(IS, "jobTasks").ok_or("missing")?;
        (d == json!({"rows": [{"sid": "WT1"}, {"sid": "WT2"}, {"sid": "WT3"}, {"sid": "WT4"}]}))
            .then_some(())
            .ok_or(format!("{d}"))
    })
    .await;
    let list_want = |rows: Vec<Value>| {
        let stub = &stub;
        move || {
            let items: Vec<Value> = stub
                .list_items(IS, "jobAnswered")
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            (items == rows).then_some(()).ok_or(format!("{items:?}"))
        }
    };
    eventually(
        "list",
        Duration::from_secs(15),
        list_want(vec![
            json!({"sid": "WT1", "answered_in": 5}),
            json!({"sid": "WT3", "answered_in": 30}),
        ]),
    )
    .await;

    // A change that leaves the per-queue counts alone: the map is not rewritten.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stub.clear_requests();
    assert_eq!(
        svc.post(&event(7, "reservation.accepted", "WT2", "Sales", 12))
            .await
            .unwrap(),
        204
    );
    eventually(
        "list grows",
        Duration::from_secs(15),
        list_want(vec![
            json!({"sid": "WT1", "answered_in": 5}),
            json!({"sid": "WT2", "answered_in": 12}),
            json!({"sid": "WT3", "answered_in": 30}),
        ]),
    )
    .await;
    eventually("document follows", Duration::from_secs(15), || {
        let d = stub.document(IS, "jobServiceLevel").ok_or("missing")?;
        (d["within"] == 2).then_some(()).ok_or(format!("{d}"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let writes = |needle: &str| {
        stub.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains(needle))
            .count()
    };
    assert_eq!(writes("jobQueues"), 0, "unchanged map items were rewritten");
    assert_eq!(writes("jobTasks"), 0, "an unchanged document was rewritten");
    assert_eq!(
        writes("jobServiceLevel"),
        1,
        "a changed document is written once"
    );
    let r = svc.readyz().await;
    assert_eq!(r["jobs"]["service_level"]["last_error"], Value::Null, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_slow_jobs_are_reported_and_hurt_nothing_else() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let jobs = r#"
[[jobs]]
name = "broken"
schedule = "* * * * * *"
sql = "SELECT no_such_column FROM tasks"
target = { type = "document", name = "jobBroken" }

[[jobs]]
name = "slow"
schedule = "* * * * * *"
sql = "SELECT pg_sleep(5) IS NULL AS slept"
timeout_ms = 300
target = { type = "document", name = "jobSlow" }

[[jobs]]
name = "huge"
schedule = "* * * * * *"
sql = "SELECT repeat('x', 20000) AS big, 1 AS small"
target = { type = "document", name = "jobHuge" }

[[jobs]]
name = "fast"
schedule = "* * * * * *"
sql = "SELECT count(*)::int AS n FROM tasks"
target = { type = "document", name = "jobFast" }
"#;
    let svc = Service::start(options(&db, &stub, jobs)).await;

    // check-config prepares every job's SQL and names the broken one.
    let out = svc.command(&["check-config"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jobs[broken].sql") && err.contains("no_such_column"),
        "{err}"
    );
    assert!(
        !err.contains("jobs[fast]") && !err.contains("jobs[slow]") && !err.contains("jobs[huge]"),
        "{err}"
    );

    // `jobs run` prints what a job would publish.
    let out = svc.command(&["jobs", "run", "fast"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, json!({"n": 0}));

    // serve runs on: the fast job keeps its schedule while the slow one times out.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = svc.readyz().await;
    let jobs = &r["jobs"];
    assert!(jobs["fast"]["runs"].as_u64().unwrap_or(0) >= 3, "{r}");
    assert_eq!(jobs["fast"]["last_error"], Value::Null, "{r}");
    assert!(
        jobs["slow"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timeout")),
        "{r}"
    );
    assert!(
        jobs["slow"]["last_duration_ms"]
            .as_u64()
            .unwrap_or(u64::MAX)
            < 2_000,
        "{r}"
    );
    assert!(
        jobs["broken"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no_such_column")),
        "{r}"
    );
    // Over 16 KiB: published without the field that does not fit, and said so.
    assert_eq!(jobs["huge"]["last_error"], Value::Null, "{r}");
    assert!(
        jobs["huge"]["last_warning"]
            .as_str()
            .is_some_and(|e| e.contains("16 KiB") && e.contains("big")),
        "{r}"
    );
    assert_eq!(stub.document(IS, "jobHuge"), Some(json!({"small": 1})));
    assert_eq!(stub.document(IS, "jobFast"), Some(json!({"n": 0})));
    assert_eq!(stub.document(IS, "jobBroken"), None);
    // Ingest is unaffected.
    assert_eq!(
        svc.post(&event(1, "task.created", "WT1", "Sales", 0))
            .await
            .unwrap(),
        204
    );
    eventually("fast job follows", Duration::from_secs(10), || {
        (stub.document(IS, "jobFast") == Some(json!({"n": 1})))
            .then_some(())
            .ok_or("not yet".into())
    })
    .await;
    let m = svc.metrics().await;
    assert!(m.contains("trs_job_last_run_ok{job=\"slow\"} 0"), "{m}");
    assert!(m.contains("trs_job_last_run_ok{job=\"fast\"} 1"), "{m}");
}

fn sync_post_count(stub: &TwilioStub, path: &str) -> usize {
    stub.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .count()
}

/// Issue 14.5: an append whose answer is lost (a 5xx or a dropped connection after Sync
/// appended the item) is never repeated blindly: the list ends up with each row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_list_appends_are_not_duplicated_by_retries() {
    use crate::twilio_stub::Afterwards;
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let jobs = r#"
[[jobs]]
name = "sids"
schedule = "* * * * * *"
sql = "SELECT sid FROM tasks ORDER BY sid"
target = { type = "list", name = "jobSids" }
"#;
    let items = format!("/v1/Services/{IS}/Lists/jobSids/Items");
    stub.fail_after_applying("POST", &items, Afterwards::Status(500), 1);
    stub.fail_after_applying("POST", &items, Afterwards::Drop, 1);
    stub.fail_after_applying("POST", &items, Afterwards::Status(503), 1);
    let svc = Service::start(options(&db, &stub, jobs)).await;
    let cbs: Vec<_> = (1..=4)
        .map(|n| event(n, "task.created", &format!("WT{n}"), "Sales", 0))
        .collect();
    assert!(post_all(&svc, &cbs, 4).await.iter().all(|s| *s == 204));
    let want: Vec<Value> = (1..=4).map(|n| json!({"sid": format!("WT{n}")})).collect();
    let rows = || -> Vec<Value> {
        stub.list_items(IS, "jobSids")
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    };
    eventually("each row once", Duration::from_secs(20), || {
        (rows() == want)
            .then_some(())
            .ok_or(format!("{:?}", rows()))
    })
    .await;
    assert!(
        stub.requests().iter().any(|r| r.status == 0) && sync_post_count(&stub, &items) >= 4,
        "the failures were served"
    );
    // And it stays so (a late duplicate would show up here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rows(), want);
    let r = svc.readyz().await;
    assert_eq!(r["jobs"]["sids"]["last_error"], Value::Null, "{r}");
}

/// Issue 14.3: job documents, maps and lists with a TTL never expire while the service
/// runs, unchanged or not (the list keeps its sid: it was never deleted and recreated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_objects_with_a_ttl_do_not_expire_while_the_service_runs() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let jobs = r#"
[[jobs]]
name = "doc"
schedule = "* * * * * *"
sql = "SELECT count(*)::int AS n FROM tasks"
target = { type = "document", name = "jobCount" }
ttl_seconds = 4

[[jobs]]
name = "per_queue"
schedule = "* * * * * *"
sql = "SELECT task_queue_name AS queue, count(*)::int AS tasks FROM tasks GROUP BY 1"
target = { type = "map", name = "jobQueues", key = "queue" }
ttl_seconds = 4

[[jobs]]
name = "sids"
schedule = "* * * * * *"
sql = "SELECT sid FROM tasks ORDER BY sid"
target = { type = "list", name = "jobSids" }
ttl_seconds = 4
"#;
    let svc = Service::start(options(&db, &stub, jobs)).await;
    let cbs: Vec<_> = (1..=2)
        .map(|n| event(n, "task.created", &format!("WT{n}"), "Sales", 0))
        .collect();
    assert!(post_all(&svc, &cbs, 2).await.iter().all(|s| *s == 204));
    eventually("published", Duration::from_secs(20), || {
        let ok = stub.document(IS, "jobCount") == Some(json!({"n": 2}))
            && stub.map_items(IS, "jobQueues").len() == 1
            && stub.list_items(IS, "jobSids").len() == 2;
        ok.then_some(()).ok_or("not yet".into())
    })
    .await;
    let sid = |kind: &str, name: &str| stub.container(IS, kind, name).map(|c| c["sid"].clone());
    let (map_sid, list_sid) = (sid("Maps", "jobQueues"), sid("Lists", "jobSids"));
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(sid("Maps", "jobQueues"), map_sid, "the map expired");
        assert_eq!(sid("Lists", "jobSids"), list_sid, "the list expired");
        assert_eq!(
            stub.map_items(IS, "jobQueues").len(),
            1,
            "a map item expired"
        );
        assert_eq!(
            stub.list_items(IS, "jobSids").len(),
            2,
            "a list item expired"
        );
        assert!(
            stub.document(IS, "jobCount").is_some(),
            "the document expired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
