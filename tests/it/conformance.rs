//! Conformance: everything the client sends to Twilio is defined by Twilio's published
//! API definitions (paths, methods, parameters and their array-ness; see
//! [`crate::oai`]). The stand-in checks every request of every test; this test makes
//! the service use every kind of call it has at once, so that the check is not vacuous.

use crate::harness::*;
use crate::twilio_stub::TwilioStub;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use taskrouter_summarizer::ingest::signature;
use taskrouter_summarizer::sim::{realistic_day, Callback, DayConfig};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const WS: &str = "WS0123456789abcdef0123456789abcdef";
const IS: &str = "IS0123456789abcdef0123456789abcdef";
const CHAT_IS: &str = "IS00000000000000000000000000000c4a";

fn get<'a>(cb: &'a Callback, k: &str) -> Option<&'a str> {
    cb.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

const JOBS: &str = r#"
[[jobs]]
name = "doc"
schedule = "* * * * * *"
sql = "SELECT count(*)::int AS tasks FROM tasks"
target = { type = "document", name = "confDoc" }

[[jobs]]
name = "map"
schedule = "* * * * * *"
sql = "SELECT task_queue_name AS queue, count(*)::int AS tasks FROM tasks GROUP BY 1"
target = { type = "map", name = "confMap", key = "queue" }

[[jobs]]
name = "list"
schedule = "* * * * * *"
sql = "SELECT sid FROM tasks WHERE answered_in IS NOT NULL ORDER BY sid LIMIT 3"
target = { type = "list", name = "confList" }
ttl_seconds = 600
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_service_makes_is_defined_by_twilio() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    let day = realistic_day(&DayConfig {
        seed: 77,
        tasks: 40,
        workers: 6,
        start_ms: chrono::Utc::now().timestamp_millis() - 3 * 3_600_000,
        account_sid: AC.into(),
        workspace_sid: WS.into(),
    });
    // REST fixtures: activities, workers with channels, and the open tasks but one (its
    // lookup answers 404 and sends the service to the Events list).
    stub.set_activities(
        WS,
        vec![json!({"sid": "WA0", "friendly_name": "Available", "available": true})],
    );
    let mut workers = Vec::new();
    for w in &day.workers {
        workers.push(
            json!({"sid": w.sid, "friendly_name": w.name, "account_sid": AC,
            "workspace_sid": WS, "activity_name": w.final_activity_name,
            "activity_sid": w.final_activity_sid, "available": w.final_available,
            "attributes": "{}"}),
        );
        stub.set_worker_channels(WS, &w.sid, vec![]);
    }
    stub.set_workers(WS, workers);
    let open: Vec<Value> = day
        .tasks
        .iter()
        .filter(|t| !matches!(t.final_status.as_str(), "completed" | "canceled"))
        .skip(1)
        .map(|t| json!({"sid": t.sid, "assignment_status": t.final_status, "age": 100}))
        .collect();
    stub.set_tasks(WS, open);
    // Every messaging task's conversation: half in the default service, half in another.
    let mut convs = BTreeSet::new();
    for cb in &day.callbacks {
        let attrs: Option<Value> =
            get(cb, "TaskAttributes").and_then(|a| serde_json::from_str(a).ok());
        if let Some(c) = attrs.as_ref().and_then(|a| a["conversationSid"].as_str()) {
            convs.insert(c.to_owned());
        }
    }
    assert!(convs.len() >= 2, "the day has messaging tasks");
    for (i, c) in convs.iter().enumerate() {
        let msg = json!({"sid": format!("IM{i:032x}"), "index": 0, "author": "+15550001",
                         "body": "hi", "date_created": "2026-01-01T00:00:00Z"});
        if i % 2 == 0 {
            stub.set_conversation_messages(c, vec![msg]);
        } else {
            stub.set_service_conversation_messages(CHAT_IS, c, vec![msg]);
        }
    }

    let opts = Options::new(&db.url)
        .account(AC)
        .taskrouter(&stub, WS)
        .sync(&stub, IS)
        .conversations(&stub)
        .taskrouter_sync_interval(2)
        .reconcile_schedule("* * * * * *")
        .publish_ttl(600)
        .backfill_catch_up(false)
        .jobs(JOBS);
    let svc = Service::start(opts).await;
    // A task whose only callback is its creation, five minutes ago: open here, unknown
    // to TaskRouter (ended and deleted there), so reconciliation looks it up.
    let created = chrono::Utc::now().timestamp_millis() - 300_000;
    let orphan = Cb::task("task.created", "WT000000000000000000000000000orphan")
        .sid("EV000000000000000000000000000orphan")
        .account(AC)
        .workspace(WS)
        .status("pending")
        .queue("Support")
        .channel("voice")
        .age(0)
        .created(created)
        .at(created)
        .build();
    assert!(post_all(&svc, &[orphan], 1).await.iter().all(|s| *s == 204));
    assert!(post_all(&svc, &day.callbacks, 16)
        .await
        .iter()
        .all(|s| *s == 204));
    // One message by webhook for the conversations of the other service: its
    // ChatServiceSid tells the service where to read the rest.
    for (i, c) in convs.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let params = Cb::message_added(c)
            .account(AC)
            .chat_service(CHAT_IS)
            .message_sid(format!("IM{:032x}", 1000 + i))
            .index(1)
            .author("+15550001")
            .source("SDK")
            .date_created("2026-01-01T00:00:01Z")
            .build();
        let sig = signature::compute(AUTH_TOKEN, &format!("{PUBLIC_URL}/conversations"), &params);
        let r = svc
            .http
            .post(svc.url("/conversations"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(encode(&params))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 204);
    }
    svc.wait_drained(Duration::from_secs(60)).await;

    let want: BTreeSet<&str> = [
        "ListActivity",
        "ListWorker",
        "ListWorkerChannel",
        "ListTask",
        "FetchTask",
        "CreateDocument",
        "UpdateDocument",
        "CreateSyncMapItem",
        "UpdateSyncMapItem",
        "CreateSyncMap",
        "CreateSyncList",
        "CreateSyncListItem",
        // The orphan task's 404 sends reconciliation to its events.
        "ListEvent",
        "FetchConfiguration",
        "ListServiceConversationMessage",
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let used = stub.operations();
        let missing: Vec<&&str> = want
            .iter()
            .filter(|w| !used.iter().any(|u| u == **w))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service never called {missing:?}; it called {used:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The REST Events backfill, from the command line, reads the same list by window.
    stub.clear_requests();
    let out = svc
        .command(&["backfill", "--since", "4h"])
        .output()
        .expect("run backfill");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stub
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/Events") && r.query.contains("StartDate=")));
    let violations = stub.violations();
    assert!(
        violations.is_empty(),
        "requests Twilio's definitions do not define:\n{}",
        violations.join("\n")
    );
}
