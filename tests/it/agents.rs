//! `/api/agents` and `/api/reports/intervals` against the simulator's truth and the rules'
//! reference fold, for a shuffled, duplicated, gappy day that ended minutes ago.
use crate::harness::*;
use chrono::{DateTime, Timelike, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use taskrouter_summarizer::apply::rules;
use taskrouter_summarizer::config::Sla;
use taskrouter_summarizer::event::Event;
use taskrouter_summarizer::publish::report::{align, Step};
use taskrouter_summarizer::sim::{realistic_day, DayConfig, SimDay};

/// A fixed-offset zone in which it is now between 11:00 and 21:00, so a simulated day
/// that began 10 hours ago lies in "today", while each worker's first activity (begun
/// the evening before) spans midnight.
pub(crate) fn afternoon_zone(now: DateTime<Utc>) -> (String, chrono_tz::Tz) {
    let h = now.hour() as i32;
    let n = (-12..=14)
        .find(|n| (11..21).contains(&(h + n).rem_euclid(24)))
        .expect("some offset");
    // Etc/GMT-N is UTC+N (POSIX sign).
    let name = if n == 0 {
        "Etc/GMT".to_owned()
    } else {
        format!("Etc/GMT{}{}", if n > 0 { "-" } else { "+" }, n.abs())
    };
    let tz = name.parse().expect("zone");
    (name, tz)
}

/// Every 6th task.created dropped, about 10% of the rest twice, all shuffled.
type Callbacks = Vec<Vec<(String, String)>>;

fn gappy(day: &SimDay, seed: u64) -> (Callbacks, Callbacks) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut n = 0;
    let distinct: Vec<_> = day
        .callbacks
        .iter()
        .filter(|cb| {
            let created = cb
                .iter()
                .any(|(k, v)| k == "EventType" && v == "task.created");
            n += usize::from(created);
            !(created && n % 6 == 0)
        })
        .cloned()
        .collect();
    let mut delivered = distinct.clone();
    let dups: Vec<_> = distinct
        .iter()
        .filter(|_| rng.gen_bool(0.1))
        .cloned()
        .collect();
    delivered.extend(dups);
    delivered.shuffle(&mut rng);
    (distinct, delivered)
}

async fn wait_rollups(db: &TestDb) {
    for _ in 0..100 {
        if db.count("SELECT count(*) FROM rollup_dirty").await == 0 {
            // The refresher may hold marks it took: one more round settles them.
            tokio::time::sleep(Duration::from_millis(700)).await;
            if db.count("SELECT count(*) FROM rollup_dirty").await == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("rollups never caught up");
}

type Counts = BTreeMap<(String, String), [i64; 4]>;

fn iso(t: DateTime<Utc>, tz: &chrono_tz::Tz) -> String {
    t.with_timezone(tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_interval_reports_equal_the_truth_of_a_gappy_day() {
    let now = Utc::now();
    let (zone, tz) = afternoon_zone(now);
    let start = now - chrono::Duration::hours(10);
    let day = realistic_day(&DayConfig {
        seed: 17,
        tasks: 400,
        workers: 14,
        start_ms: start.timestamp_millis(),
        ..DayConfig::default()
    });
    let last_ms = day
        .callbacks
        .iter()
        .filter_map(|cb| cb.iter().find(|(k, _)| k == "TimestampMs"))
        .filter_map(|(_, v)| v.parse::<i64>().ok())
        .max()
        .expect("events");
    assert!(last_ms < now.timestamp_millis(), "the day is over");

    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url).timezone(&zone)).await;
    let (distinct, delivered) = gappy(&day, 5);
    let statuses = post_all(&svc, &delivered, 32).await;
    assert!(statuses.iter().all(|s| *s == 204));
    svc.wait_drained(Duration::from_secs(120)).await;
    wait_rollups(&db).await;

    // Per queue and 30-minute interval (of creation): created, accepted, abandoned, short
    // abandons, from the simulator and from the rules' fold of the events delivered.
    let short = Sla::default().short_abandon_seconds;
    let mut truth: Counts = BTreeMap::new();
    for t in &day.tasks {
        let at = DateTime::from_timestamp_millis(t.created_ms).expect("instant");
        let c = truth
            .entry((
                iso(align(at, Step::Minutes(30), &tz), &tz),
                t.queue_name.clone(),
            ))
            .or_default();
        c[0] += 1;
        c[1] += i64::from(t.first_accept_ms.is_some());
        let abandoned = t.first_accept_ms.is_none() && t.final_status == "canceled";
        let wait = t.canceled_wait_s.unwrap_or(0);
        c[2] += i64::from(abandoned && wait >= short);
        c[3] += i64::from(abandoned && wait < short);
    }
    let events: Vec<Event> = distinct.iter().map(|p| Event::from_params(p, 0)).collect();
    let folded = rules::fold(&events, &Sla::default(), &[]);
    let mut fold: Counts = BTreeMap::new();
    for t in folded.tasks.values() {
        let Some(at) = t.task_created else { continue };
        let c = fold
            .entry((
                iso(align(at, Step::Minutes(30), &tz), &tz),
                t.task_queue_name.clone().unwrap_or_default(),
            ))
            .or_default();
        c[0] += 1;
        c[1] += i64::from(t.first_accepted_at.is_some());
        let abandoned = t.first_accepted_at.is_none() && t.canceled_at.is_some();
        let wait = t.total_time.unwrap_or(0);
        c[2] += i64::from(abandoned && wait >= short);
        c[3] += i64::from(abandoned && wait < short);
    }
    assert_eq!(fold, truth, "the rules' fold agrees with the simulator");
    assert!(truth.len() > 20, "many queue intervals: {}", truth.len());
    assert_eq!(
        truth.values().map(|c| c[0]).sum::<i64>(),
        day.tasks.len() as i64
    );
    assert!(truth.values().any(|c| c[2] > 0) && truth.values().any(|c| c[3] > 0));

    let from = iso(start - chrono::Duration::hours(1), &tz);
    let to = iso(now, &tz);
    let q = [
        ("from", from.as_str()),
        ("to", to.as_str()),
        ("interval", "30m"),
        ("by", "queue"),
    ];
    let resp = svc
        .admin_get("/api/reports/intervals")
        .query(&q)
        .send()
        .await
        .expect("report");
    assert_eq!(resp.status(), 200);
    let rows: Vec<Value> = resp.json().await.expect("json");
    let mut got: Counts = BTreeMap::new();
    for r in &rows {
        let n = |k: &str| r[k].as_i64().unwrap_or_else(|| panic!("{k} in {r}"));
        if n("tasks_created") == 0 {
            continue;
        }
        got.insert(
            (
                r["interval_start"].as_str().expect("start").to_owned(),
                r["queue"].as_str().expect("queue").to_owned(),
            ),
            [
                n("tasks_created"),
                n("tasks_accepted"),
                n("tasks_abandoned"),
                n("tasks_short_abandoned"),
            ],
        );
    }
    assert_eq!(got, truth, "per queue and interval");
    // Every interval is listed for every queue, also without tasks.
    let queues: HashSet<&str> = rows.iter().filter_map(|r| r["queue"].as_str()).collect();
    let starts: HashSet<&str> = rows
        .iter()
        .filter_map(|r| r["interval_start"].as_str())
        .collect();
    assert_eq!(rows.len(), queues.len() * starts.len());

    // The CSV carries the same numbers under the same names.
    let csv = svc
        .admin_get("/api/reports/intervals")
        .query(&q)
        .query(&[("format", "csv")])
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.expect("body");
    assert!(
        text.starts_with("interval_start,queue,tasks_created,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), rows.len() + 1);

    // Agents: final activity, tasks completed today, seconds in each activity today.
    let before = Utc::now();
    let agents: Vec<Value> = svc
        .admin_get("/api/agents")
        .send()
        .await
        .expect("agents")
        .json()
        .await
        .expect("json");
    let after = Utc::now();
    let day_start = align(now, Step::Day, &tz);
    assert!(day_start < start - chrono::Duration::hours(1));
    let live: Vec<_> = day.workers.iter().filter(|w| !w.deleted).collect();
    assert_eq!(agents.len(), live.len(), "every worker not deleted");
    for w in live {
        let a = agents
            .iter()
            .find(|a| a["sid"] == w.sid.as_str())
            .unwrap_or_else(|| panic!("{} listed", w.sid));
        assert_eq!(a["activity"], w.final_activity_name.as_str(), "{}", w.sid);
        assert_eq!(a["available"], w.final_available);
        let completed = day
            .tasks
            .iter()
            .filter(|t| {
                t.final_status == "completed" && t.accepted_worker_sid.as_deref() == Some(&w.sid)
            })
            .count();
        assert_eq!(a["today"]["tasks_completed"], completed as i64, "{}", w.sid);
        let since = DateTime::from_timestamp_millis(w.final_activity_since_ms).expect("since");
        assert_eq!(
            a["activity_since"]
                .as_str()
                .map(|s| DateTime::parse_from_rfc3339(s).expect("iso")),
            Some(since.into())
        );
        // Closed intervals, cut at midnight; then the current one, up to "now".
        let mut secs: BTreeMap<String, f64> = BTreeMap::new();
        let day_ms = day_start.timestamp_millis();
        for s in &w.activity_spans {
            let ms = s.to_ms - s.from_ms.max(day_ms);
            if ms > 0 {
                *secs.entry(s.activity.clone()).or_default() += ms as f64 / 1000.0;
            }
        }
        let open = |t: DateTime<Utc>| (t - since.max(day_start)).num_milliseconds() as f64 / 1000.0;
        let got = a["today"]["seconds_by_activity"].as_object().expect("map");
        assert!(secs.len() >= 2, "{} changed activity during the day", w.sid);
        assert!(secs["Offline"] > 0.0, "the night before is cut at midnight");
        for (name, want) in &secs {
            let v = got.get(name).and_then(Value::as_f64).unwrap_or(0.0);
            if *name == w.final_activity_name {
                assert!(
                    v >= want + open(before) - 0.01 && v <= want + open(after) + 0.01,
                    "{} {name}: {v} not within {want} + [{}, {}]",
                    w.sid,
                    open(before),
                    open(after)
                );
            } else {
                assert!((v - want).abs() < 0.01, "{} {name}: {v} vs {want}", w.sid);
            }
        }
        for name in got.keys() {
            assert!(
                secs.contains_key(name) || *name == w.final_activity_name,
                "{} has no time in {name}",
                w.sid
            );
        }
    }

    // Rollups and activity intervals survive event retention: with every raw event gone
    // and every bucket recomputed, the same report and the same days.
    let c = db.client().await;
    c.execute("DELETE FROM events", &[])
        .await
        .expect("retention");
    c.execute(
        "INSERT INTO rollup_dirty (bucket) SELECT DISTINCT bucket FROM task_rollups",
        &[],
    )
    .await
    .expect("mark");
    wait_rollups(&db).await;
    let again: Vec<Value> = svc
        .admin_get("/api/reports/intervals")
        .query(&q)
        .send()
        .await
        .expect("report")
        .json()
        .await
        .expect("json");
    assert_eq!(again, rows, "the report after retention");
    let agents_after: Vec<Value> = svc
        .admin_get("/api/agents")
        .send()
        .await
        .expect("agents")
        .json()
        .await
        .expect("json");
    for (a, b) in agents.iter().zip(&agents_after) {
        assert_eq!(a["today"]["tasks_completed"], b["today"]["tasks_completed"]);
        assert_eq!(
            a["today"]["seconds_by_activity"]
                .as_object()
                .map(|m| m.len()),
            b["today"]["seconds_by_activity"]
                .as_object()
                .map(|m| m.len())
        );
    }

    // Bad parameters: a 400 that names the parameter.
    for (bad, name) in [
        (vec![("from", "yesterday"), ("to", to.as_str())], "from"),
        (vec![("from", from.as_str())], "to"),
        (vec![("from", "2020-01-01"), ("to", "2026-01-01")], "to"),
        (
            vec![
                ("from", from.as_str()),
                ("to", to.as_str()),
                ("interval", "7m"),
            ],
            "interval",
        ),
        (
            vec![("from", from.as_str()), ("to", to.as_str()), ("by", "team")],
            "by",
        ),
        (
            vec![
                ("from", from.as_str()),
                ("to", to.as_str()),
                ("format", "xml"),
            ],
            "format",
        ),
    ] {
        let r = svc
            .admin_get("/api/reports/intervals")
            .query(&bad)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 400, "{bad:?}");
        let body: Value = r.json().await.expect("json");
        let msg = body["error"].as_str().expect("error");
        assert!(msg.starts_with(&format!("{name}:")), "{bad:?}: {msg}");
    }
}
