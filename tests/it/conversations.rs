//! Message metrics from Conversations webhooks and from the Conversations REST API.

use crate::harness::*;
use crate::twilio_stub::TwilioStub;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use std::time::{Duration, Instant};
use taskrouter_summarizer::ingest::signature;

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const CONV: &str = "CH00000000000000000000000000000001";
/// The Conversation Service the conversation lives in: not the account's default one.
const CHAT_SERVICE: &str = "IS0000000000000000000000000000c0de";

/// Two chat tasks on one conversation: an earlier one the customer abandoned (created at
/// t0 - 200 s, canceled at t0 - 60 s), then one answered by alice: created at t0 by the
/// customer's message at t0 - 30 s, accepted at +8 s, completed at +60 s.
fn task_events(t0: i64) -> Vec<Params> {
    let attrs = format!(
        r#"{{"channelType":"web","conversationSid":"{CONV}","conversations":{{"ivr_time":12}}}}"#
    );
    let task = |n: u32, sid: &str, created: i64, kind: &str, at: i64, status: &str| {
        let cb = if kind.starts_with("reservation.") {
            Cb::reservation(kind, sid, "WRchat", "WKalice")
        } else {
            Cb::task(kind, sid)
        };
        cb.ev(n)
            .status(status)
            .channel("chat")
            .queue("Support")
            .attributes(&attrs)
            .age((at - created) / 1000)
            .created(created)
            .at(at)
            .build()
    };
    let (prev, chat) = (t0 - 200_000, t0);
    vec![
        Cb::worker("worker.created", "WKalice")
            .ev(100)
            .set("WorkerName", "alice")
            .set("WorkerAttributes", r#"{"contact_uri":"client:alice"}"#)
            .at(t0 - 300_000)
            .build(),
        task(10, "WTprev", prev, "task.created", prev, "pending"),
        task(11, "WTprev", prev, "task.canceled", t0 - 60_000, "canceled"),
        task(1, "WTchat", chat, "task.created", t0, "pending"),
        task(
            2,
            "WTchat",
            chat,
            "reservation.created",
            t0 + 2_000,
            "reserved",
        ),
        task(
            3,
            "WTchat",
            chat,
            "reservation.accepted",
            t0 + 8_000,
            "assigned",
        ),
        task(
            4,
            "WTchat",
            chat,
            "task.completed",
            t0 + 60_000,
            "completed",
        ),
    ]
}

/// Posts [`task_events`], each acknowledged.
async fn post_task_events(svc: &Service, t0: i64) {
    let statuses = post_all(svc, &task_events(t0), 1).await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
}

/// (seconds after t0, author). The customer writes at -90 s, in the earlier task; at
/// -30 s, after it was canceled, which creates the next task (at 0); then 1, 3; alice
/// answers at 10; customer 20; alice 25, 26; customer 40; and at 90 s, after the task
/// ended, which no task of the two holds.
const SCRIPT: [(i64, &str); 10] = [
    (-90, "+15550001"),
    (-30, "+15550001"),
    (1, "+15550001"),
    (3, "+15550001"),
    (10, "alice"),
    (20, "+15550001"),
    (25, "alice"),
    (26, "alice"),
    (40, "+15550001"),
    (90, "+15550001"),
];

fn iso(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn webhook(t0: i64, i: usize) -> Params {
    let (s, who) = SCRIPT[i];
    Cb::message_added(CONV)
        .account(AC)
        .message_sid(format!("IM{i:032x}"))
        .index(i)
        .author(who)
        .body("hello")
        .source("SDK")
        .chat_service(CHAT_SERVICE)
        .date_created(iso(t0 + s * 1000))
        .build()
}

async fn post_conv(svc: &Service, params: &[(String, String)]) -> u16 {
    let sig = signature::compute(AUTH_TOKEN, &format!("{PUBLIC_URL}/conversations"), params);
    svc.http
        .post(svc.url("/conversations"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(encode(params))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The metrics the script defines (see the README's definitions).
async fn assert_metrics(db: &TestDb) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = db
            .client()
            .await
            .query_one(
                "SELECT agent_message_count, client_message_count, agent_first_response_time, \
                 agent_total_response_time, client_total_response_time, agent_reply_count, \
                 client_reply_count, uc_processing_time FROM tasks WHERE sid = 'WTchat'",
                &[],
            )
            .await
            .ok();
        let got = r.as_ref().map(|r| {
            (
                r.get::<_, i32>(0),
                r.get::<_, i32>(1),
                r.get::<_, Option<f64>>(2),
                r.get::<_, Option<f64>>(3),
                r.get::<_, Option<f64>>(4),
                r.get::<_, i32>(5),
                r.get::<_, i32>(6),
                r.get::<_, Option<f64>>(7),
            )
        });
        // agent: 3 messages, first at +10 s; replies 10-(-30) = 40 and 25-20 = 5.
        // customer: 5 messages in the task (the opening one at -30 s included);
        // replies 20-10 = 10 and 40-25 = 15.
        let want = (3, 5, Some(10.0), Some(45.0), Some(25.0), 2, 2, Some(12.0));
        let prev = db
            .client()
            .await
            .query_one(
                "SELECT agent_message_count, client_message_count FROM tasks WHERE sid = 'WTprev'",
                &[],
            )
            .await
            .ok()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i32>(1)));
        if got == Some(want) && prev == Some((0, 1)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics {got:?}, want {want:?}; earlier task (agent, customer) {prev:?}, want (0, 1)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_out_of_order_duplicated_and_before_their_task() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url).conversations_fetch(false)).await;
    // A whole second: TaskDateCreated has second precision.
    let t0 = (chrono::Utc::now().timestamp_millis() / 1000 - 300) * 1000;
    // Messages first (their task is unknown yet), shuffled, some twice.
    let mut msgs: Vec<_> = (0..SCRIPT.len()).map(|i| webhook(t0, i)).collect();
    msgs.push(webhook(t0, 3));
    msgs.push(webhook(t0, 7));
    msgs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(9));
    for m in &msgs {
        assert_eq!(post_conv(&svc, m).await, 204);
    }
    svc.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM messages").await,
        SCRIPT.len() as i64
    );
    post_task_events(&svc, t0).await;
    assert_metrics(&db).await;

    // Bad signatures are refused and write nothing.
    let m = webhook(t0, 99 % SCRIPT.len());
    let r = svc
        .http
        .post(svc.url("/conversations"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", "bm9wZQ==")
        .body(encode(&m))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let mut missing = webhook(t0, 1);
    missing.retain(|(k, _)| k != "MessageSid");
    assert_eq!(post_conv(&svc, &missing).await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_fallback_gives_the_same_numbers() {
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    let db = TestDb::new().await;
    // A whole second: TaskDateCreated has second precision.
    let t0 = (chrono::Utc::now().timestamp_millis() / 1000 - 300) * 1000;
    stub.set_service_conversation_messages(
        CHAT_SERVICE,
        CONV,
        (0..SCRIPT.len())
            .map(|i| {
                let (s, who) = SCRIPT[i];
                json!({"sid": format!("IM{i:032x}"), "index": i, "author": who, "body": "hello",
                       "participant_sid": null, "date_created": iso(t0 + s * 1000)})
            })
            .collect(),
    );
    // The conversation is in its own service (the webhooks name it): the unscoped path
    // would answer 404. The first read of it answers 404 too (not visible yet): that is
    // retried, never taken for "no messages".
    stub.fail_next(
        &format!("/v1/Services/{CHAT_SERVICE}/Conversations"),
        404,
        1,
    );
    let svc = Service::start(Options::new(&db.url).account(AC).conversations(&stub)).await;
    // Only two of the messages came by webhook (the rest were missed).
    for i in [3, 7] {
        assert_eq!(post_conv(&svc, &webhook(t0, i)).await, 204);
    }
    post_task_events(&svc, t0).await;
    assert_metrics(&db).await;
    // Both tasks' reads, the retried one included, end as read.
    let deadline = Instant::now() + Duration::from_secs(30);
    while db
        .count("SELECT count(*) FROM tasks WHERE messages_fetched_at IS NOT NULL")
        .await
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "a task's messages were never read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        db.count("SELECT count(*) FROM messages").await,
        SCRIPT.len() as i64
    );
    assert_eq!(
        db.count("SELECT count(*) FROM messages WHERE source = 'webhook'")
            .await,
        2
    );
    assert_eq!(
        db.count("SELECT count(*) FROM tasks WHERE messages_fetched_at IS NOT NULL")
            .await,
        2
    );
    assert_eq!(
        db.count("SELECT sum(messages_fetch_attempts)::int8 FROM tasks")
            .await,
        1,
        "one read answered 404 and was retried"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM tasks WHERE messages_fetch_error IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM messages WHERE chat_service_sid = '{CHAT_SERVICE}'"
        ))
        .await,
        SCRIPT.len() as i64
    );
    assert!(stub
        .requests()
        .iter()
        .all(|r| !r.path.starts_with("/v1/Conversations")));
}

/// A task row held by another transaction (a worker's upsert) does not make the
/// message-metric refresh wait: it is skipped and retried, and lands once released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_skips_a_locked_task_row_and_catches_up() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url).conversations_fetch(false)).await;
    let t0 = (chrono::Utc::now().timestamp_millis() / 1000 - 300) * 1000;
    post_task_events(&svc, t0).await;
    svc.wait_drained(Duration::from_secs(30)).await;

    let mut holder = db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM tasks WHERE sid = 'WTchat' FOR UPDATE", &[])
        .await
        .unwrap();
    for i in 0..SCRIPT.len() {
        assert_eq!(post_conv(&svc, &webhook(t0, i)).await, 204);
    }
    svc.wait_drained(Duration::from_secs(30)).await;
    // Several refresh rounds (every 0.5 s): none may queue behind the held row.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = db
        .count(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
    assert_eq!(waiting, 0, "a session waits for the held task row");
    assert_eq!(
        db.count("SELECT agent_message_count::int8 FROM tasks WHERE sid = 'WTchat'")
            .await,
        0
    );
    assert!(db.count("SELECT count(*) FROM dirty_conversations").await > 0);
    tx.rollback().await.unwrap();
    assert_metrics(&db).await;
}
