use crate::harness::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use taskrouter_summarizer::apply::rules;
use taskrouter_summarizer::config::Sla;
use taskrouter_summarizer::event::Event;
use taskrouter_summarizer::ingest::signature;
use taskrouter_summarizer::sim::{realistic_day, DayConfig};

fn json_rows<K, R: serde::Serialize>(m: &BTreeMap<K, R>) -> Vec<Value> {
    m.values()
        .map(|r| serde_json::to_value(r).expect("row"))
        .collect()
}

/// Asserts that `events` holds one row per callback of `callbacks` (all distinct) and
/// every state table what the rules define for them.
pub async fn assert_day_applied(db: &TestDb, callbacks: &[Vec<(String, String)>]) {
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        callbacks.len() as i64
    );
    let events: Vec<Event> = callbacks.iter().map(|p| Event::from_params(p, 0)).collect();
    assert_state_matches(db, &events).await;
}

/// Asserts that every state table equals what the rules define for `events`.
pub async fn assert_state_matches(db: &TestDb, events: &[Event]) {
    let rows = rules::fold(events, &Sla::default(), &[]);
    assert_table_matches(db, "tasks", "sid", json_rows(&rows.tasks)).await;
    assert_table_matches(db, "reservations", "sid", json_rows(&rows.reservations)).await;
    assert_table_matches(db, "workers", "worker_sid", json_rows(&rows.workers)).await;
    assert_table_matches(
        db,
        "worker_channels",
        "worker_sid",
        json_rows(&rows.channels),
    )
    .await;
    assert_table_matches(db, "activities", "sid", json_rows(&rows.activities)).await;
}

/// The events stored in the database, rebuilt from `events.data`.
pub async fn stored_events(db: &TestDb) -> Vec<Event> {
    let c = db.client().await;
    c.query("SELECT data FROM events", &[])
        .await
        .expect("events")
        .into_iter()
        .map(|r| {
            let v: Value = r.get(0);
            let params: Vec<(String, String)> = v
                .as_object()
                .expect("object")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            Event::from_params(&params, 0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_day_shuffled_with_duplicates_and_gaps_ends_in_the_rules_rows() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let day = realistic_day(&DayConfig::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);

    // Drop every 6th task.created; duplicate about 10% of the rest; shuffle.
    let mut dropped_created = HashSet::new();
    let mut delivered = Vec::new();
    let mut n_created = 0;
    for cb in &day.callbacks {
        let is_created = cb
            .iter()
            .any(|(k, v)| k == "EventType" && v == "task.created");
        if is_created {
            n_created += 1;
            if n_created % 6 == 0 {
                let task = cb
                    .iter()
                    .find(|(k, _)| k == "TaskSid")
                    .map(|(_, v)| v.clone());
                dropped_created.extend(task);
                continue;
            }
        }
        delivered.push(cb.clone());
    }
    let distinct = delivered.clone();
    let dups: Vec<_> = delivered
        .iter()
        .filter(|_| rng.gen_bool(0.1))
        .cloned()
        .collect();
    delivered.extend(dups);
    delivered.shuffle(&mut rng);
    assert!(
        distinct.len() > 2000,
        "a realistic day has thousands of callbacks"
    );

    let statuses = post_all(&svc, &delivered, 32).await;
    assert!(
        statuses.iter().all(|s| *s == 204),
        "all callbacks acknowledged"
    );
    svc.wait_drained(Duration::from_secs(120)).await;

    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        distinct.len() as i64,
        "one events row per distinct event"
    );
    let events: Vec<Event> = distinct.iter().map(|p| Event::from_params(p, 0)).collect();
    assert_state_matches(&db, &events).await;

    // Independently of the rules' code: the simulator's ground truth.
    let c = db.client().await;
    for t in &day.tasks {
        let r = c
            .query_one(
                "SELECT task_assignment_status, answered_in, acw_start, total_time, reservation_count, \
                 worker_sid, task_queue_name, task_channel_unique_name, direction, \
                 extract(epoch from task_created)::float8 * 1000 FROM tasks WHERE sid = $1",
                &[&t.sid],
            )
            .await
            .unwrap_or_else(|e| panic!("task {} missing: {e}", t.sid));
        let status: Option<String> = r.get(0);
        assert_eq!(
            status.as_deref(),
            Some(t.final_status.as_str()),
            "status of {}",
            t.sid
        );
        assert_eq!(
            r.get::<_, Option<i32>>(1).map(i64::from),
            t.answered_in,
            "answered_in of {}",
            t.sid
        );
        assert_eq!(
            r.get::<_, Option<i32>>(2).map(i64::from),
            t.acw_start,
            "acw_start of {}",
            t.sid
        );
        assert_eq!(
            r.get::<_, Option<i32>>(3).map(i64::from),
            t.total_time,
            "total_time of {}",
            t.sid
        );
        assert_eq!(
            r.get::<_, i32>(4) as usize,
            t.reservations_created,
            "reservations of {}",
            t.sid
        );
        assert_eq!(
            r.get::<_, Option<String>>(5),
            t.accepted_worker_sid,
            "worker of {}",
            t.sid
        );
        assert_eq!(
            r.get::<_, Option<String>>(7).as_deref(),
            Some(t.channel.as_str())
        );
        assert_eq!(r.get::<_, String>(8), t.direction);
        let created: Option<f64> = r.get(9);
        assert_eq!(
            created.map(|c| (c / 1000.0) as i64),
            Some(t.created_ms / 1000),
            "created of {}",
            t.sid
        );
        if !dropped_created.contains(&t.sid) {
            assert_eq!(
                r.get::<_, Option<String>>(6).as_deref(),
                Some(t.queue_name.as_str())
            );
        }
    }
    for w in &day.workers {
        let r = c
            .query_one(
                "SELECT current_activity, current_activity_available, deleted FROM workers WHERE worker_sid = $1",
                &[&w.sid],
            )
            .await
            .unwrap_or_else(|e| panic!("worker {} missing: {e}", w.sid));
        assert_eq!(
            r.get::<_, Option<String>>(0).as_deref(),
            Some(w.final_activity_name.as_str())
        );
        assert_eq!(
            r.get::<_, Option<bool>>(1),
            Some(w.final_available),
            "available of {}",
            w.sid
        );
        assert_eq!(r.get::<_, bool>(2), w.deleted);
        for ch in &w.channels {
            let rows = c
                .query(
                    "SELECT configured_capacity, available FROM worker_channels \
                     WHERE worker_sid = $1 AND task_channel_unique_name = $2",
                    &[&w.sid, &ch.unique_name],
                )
                .await
                .expect("channel");
            // Only channels that had an event exist (the rest come from the REST sync).
            if let Some(r) = rows.first() {
                assert_eq!(r.get::<_, Option<i32>>(0).map(i64::from), Some(ch.capacity));
                assert_eq!(r.get::<_, Option<bool>>(1), Some(ch.available));
            }
        }
    }
    // Abandons: short ones have no SLA verdict, long ones count against it.
    let short = db
        .count("SELECT count(*) FROM tasks WHERE task_assignment_status = 'canceled' AND total_time < 5 AND within_sla IS NULL")
        .await;
    let long = db
        .count("SELECT count(*) FROM tasks WHERE task_assignment_status = 'canceled' AND total_time >= 5 AND within_sla = false")
        .await;
    let truth_short = day
        .tasks
        .iter()
        .filter(|t| t.canceled_wait_s.is_some_and(|w| w < 5))
        .count() as i64;
    let truth_long = day
        .tasks
        .iter()
        .filter(|t| t.canceled_wait_s.is_some_and(|w| w >= 5))
        .count() as i64;
    assert_eq!((short, long), (truth_short, truth_long));
    assert!(short > 0 && long > 0);
}

fn sample(n: u32) -> Params {
    Cb::task("task.created", wt(n))
        .ev(n)
        .account("AC00000000000000000000000000000001")
        .status("pending")
        .age(0)
        .at(1_767_254_400_000)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_bodies_are_refused_and_write_nothing() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let p = sample(1);
    let url = format!("{PUBLIC_URL}/ingress");
    let good = signature::compute(AUTH_TOKEN, &url, &p);

    let forged = signature::compute("not-the-token", &url, &p);
    assert_eq!(svc.post_raw(encode(&p), Some(&forged)).await.unwrap(), 403);
    assert_eq!(svc.post_raw(encode(&p), None).await.unwrap(), 403);
    let wrong_url = signature::compute(AUTH_TOKEN, "https://elsewhere.test/ingress", &p);
    assert_eq!(
        svc.post_raw(encode(&p), Some(&wrong_url)).await.unwrap(),
        403
    );
    let tampered = Cb::from_params(&p)
        .set("TaskAssignmentStatus", "completed")
        .build();
    assert_eq!(
        svc.post_raw(encode(&tampered), Some(&good)).await.unwrap(),
        403
    );
    assert_eq!(
        svc.post_raw(encode(&p), Some("garbage")).await.unwrap(),
        403
    );

    // Malformed bodies: 400 with a reason, whether or not they are signed.
    for body in ["A=%ff%fe", "=novalue", "EventType=x%00y"] {
        let r = svc
            .http
            .post(svc.url("/ingress"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", &good)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let no_type = Cb::from_params(&p).without("EventType").build();
    let r = svc
        .http
        .post(svc.url("/ingress"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            signature::compute(AUTH_TOKEN, &url, &no_type),
        )
        .body(encode(&no_type))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("EventType"));
    let r = svc
        .http
        .post(svc.url("/ingress"))
        .header("content-type", "application/json")
        .header("x-twilio-signature", &good)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let big = format!("EventType=x&Big={}", "a".repeat(300_000));
    assert_eq!(svc.post_raw(big, Some(&good)).await.unwrap(), 413);

    // Nothing was queued or written.
    assert_eq!(svc.readyz().await["queue"]["depth"], 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(db.count("SELECT count(*) FROM events").await, 0);

    // The same callback, correctly signed, is accepted (a 204, which has no content and
    // so no content type); so is Twilio's :443 variant, and an event type nobody knows,
    // which is kept.
    let r = svc
        .http
        .post(svc.url("/ingress"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", &good)
        .body(encode(&p))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(
        r.headers().get("content-type").is_none(),
        "{:?}",
        r.headers()
    );
    assert!(r.bytes().await.unwrap().is_empty());
    let p2 = sample(2);
    let with_port = signature::compute(AUTH_TOKEN, "https://summarizer.test:443/ingress", &p2);
    assert_eq!(
        svc.post_raw(encode(&p2), Some(&with_port)).await.unwrap(),
        204
    );
    let unknown = Cb::from_params(&sample(3))
        .set("EventType", "something.new")
        .build();
    assert_eq!(svc.post(&unknown).await.unwrap(), 204);
    svc.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(db.count("SELECT count(*) FROM events").await, 3);
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE event_type = 'something.new'")
            .await,
        1
    );
    let status = svc
        .http
        .get(svc.url("/nope"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
}

/// A burst (64 clients at once, past the 48 in flight that make one) while the events
/// drain: the drain steps aside (its waits show in `/metrics`) and still ends in exactly
/// the rules' rows, every callback acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_acked_first_and_the_drain_still_applies_it_exactly() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let day = realistic_day(&DayConfig {
        seed: 11,
        tasks: 400,
        workers: 20,
        ..DayConfig::default()
    });
    let statuses = post_all(&svc, &day.callbacks, 64).await;
    assert!(statuses.iter().all(|s| *s == 204), "all acknowledged");
    svc.wait_drained(Duration::from_secs(120)).await;
    let yielded: f64 = svc
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("trs_drain_yield_seconds_total "))
        .and_then(|v| v.parse().ok())
        .expect("trs_drain_yield_seconds_total in /metrics");
    assert!(yielded > 0.0, "the drain never yielded to the burst");
    assert_day_applied(&db, &day.callbacks).await;
    // A voice task's first response is its acceptance, written with its row.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM tasks WHERE task_channel_unique_name = 'voice' \
             AND agent_first_response_time IS DISTINCT FROM total_acceptance_time"
        )
        .await,
        0
    );
    assert!(
        db.count(
            "SELECT count(*) FROM tasks WHERE task_channel_unique_name = 'voice' \
             AND agent_first_response_time IS NOT NULL"
        )
        .await
            > 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_and_migrate_is_idempotent() {
    let db = TestDb::new().await;
    let mut svc = Service::start(Options::new(&db.url)).await;
    let cbs: Vec<_> = (100..300).map(sample).collect();
    let st = post_all(&svc, &cbs, 16).await;
    assert!(st.iter().all(|s| *s == 204));
    let status = svc.terminate();
    assert!(status.success(), "exit status {status}: {}", svc.log());
    // Migrating again changes nothing and succeeds.
    let out = svc.command(&["migrate"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    svc.spawn().await;
    svc.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(db.count("SELECT count(*) FROM events").await, 200);
    assert_eq!(db.count("SELECT count(*) FROM tasks").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    // A queue path under a file: unusable whoever runs the test (root included).
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"nowhere\"\npublic_url = \"https://x.test\"\n[queue]\npath = \"{}\"\n[twilio]\nauth_token = \"s3cret-token\"\n", file.join("q").display()),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .env_remove("DATABASE_URL")
        .env_remove("TWILIO_AUTH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "{err}");
    assert!(err.contains("postgres.url: missing"), "{err}");
    assert!(err.contains("queue.path"), "{err}");
    assert!(!err.contains("s3cret-token"), "{err}");
    // DATABASE_URL fills the missing key.
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"127.0.0.1:1\"\npublic_url = \"https://x.test\"\n[queue]\npath = \"{}\"\n[twilio]\nauth_token = \"s3cret-token\"\n", dir.path().join("q").display()),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .env("DATABASE_URL", "postgres://u:hunter2@localhost/db")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2"), "{all}");
}
