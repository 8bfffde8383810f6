//! `/api/agents` and `/api/reports/intervals` against the simulator's truth and the rules'
//! reference fold, for a shuffled, duplicated, gappy day that ended minutes ago.
use crate::harness::*;
use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use taskrouter_summarizer::apply::rules;
use taskrouter_summarizer::config::Sla;
use taskrouter_summarizer::event::Event;
use taskrouter_summarizer::publish::report::{align, Step};
use taskrouter_summarizer::sim::demo::zone_where_today_is_long;
use taskrouter_summarizer::sim::{realistic_day, DayConfig, SimDay};

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
    let marks = "SELECT (SELECT count(*) FROM rollup_dirty) + (SELECT count(*) FROM worker_dirty)";
    for _ in 0..100 {
        if db.count(marks).await == 0 {
            // The refresher may hold marks it took: one more round settles them.
            tokio::time::sleep(Duration::from_millis(700)).await;
            if db.count(marks).await == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("rollups never caught up");
}

/// GETs an admin path with a query and decodes its JSON answer.
async fn get_json<T: serde::de::DeserializeOwned, Q: serde::Serialize + ?Sized>(
    svc: &Service,
    path: &str,
    query: &Q,
) -> T {
    let r = svc
        .admin_get(path)
        .query(query)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("json")
}

type Counts = BTreeMap<(String, String), [i64; 4]>;

fn iso(t: DateTime<Utc>, tz: &chrono_tz::Tz) -> String {
    t.with_timezone(tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_interval_reports_equal_the_truth_of_a_gappy_day() {
    let now = Utc::now();
    // A zone where today began 11 to 22 hours ago: the simulated day (begun 10 hours
    // ago) lies in today, and each worker's first activity (begun the evening before)
    // spans midnight.
    let zone = zone_where_today_is_long();
    let tz: chrono_tz::Tz = zone.parse().expect("zone");
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

    // The `report` command prints the same CSV, in chunks of a day (a range of two days
    // here), and writes JSON to a file.
    let two_days_before = iso(start - chrono::Duration::hours(40), &tz);
    let cli = |args: &[&str]| {
        let out = svc.command(args).output().expect("report runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let long = [
        ("from", two_days_before.as_str()),
        ("to", to.as_str()),
        ("interval", "30m"),
    ];
    let api_csv = svc
        .admin_get("/api/reports/intervals")
        .query(&long)
        .query(&[("format", "csv")])
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("body");
    let printed = cli(&[
        "report",
        "--from",
        &two_days_before,
        "--to",
        &to,
        "--interval",
        "30m",
    ]);
    assert_eq!(printed, api_csv, "the command and the API agree");
    assert!(printed.lines().count() > 96, "more than one chunk");
    let file = tempfile::NamedTempFile::new().expect("tmp");
    let path = file.path().to_str().expect("path").to_owned();
    cli(&[
        "report",
        "--from",
        &from,
        "--to",
        &to,
        "--by",
        "worker",
        "--interval",
        "1d",
        "--json",
        "--out",
        &path,
    ]);
    let by_worker: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&path).expect("file")).expect("json");
    let completed: i64 = by_worker
        .iter()
        .map(|r| r["tasks_completed"].as_i64().unwrap_or(0))
        .sum();
    let truth_completed = day
        .tasks
        .iter()
        .filter(|t| t.final_status == "completed")
        .count();
    assert_eq!(
        completed, truth_completed as i64,
        "completed by worker, over the day"
    );
    let bad = svc
        .command(&["report", "--from", "soon"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--from"),
        "names the flag"
    );

    // Agents: final activity, tasks completed today, seconds in each activity today.
    let before = Utc::now();
    let agents: Vec<Value> = get_json(&svc, "/api/agents", &[("", ""); 0]).await;
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

    // Occupancy and completions today: the precomputed day (with its open stretch run on
    // to now) equals the direct computation of the worker report over today.
    let today_q = [
        ("from", iso(day_start, &tz)),
        ("to", iso(Utc::now(), &tz)),
        ("interval", "1d".to_owned()),
        ("by", "worker".to_owned()),
    ];
    let by_worker: Vec<Value> = get_json(&svc, "/api/reports/intervals", &today_q).await;
    let mut occupied = 0;
    for a in &agents {
        let name = a["name"].as_str().expect("name");
        let r = by_worker
            .iter()
            .find(|r| r["worker"] == name)
            .unwrap_or_else(|| panic!("{name} in the report"));
        assert_eq!(
            a["today"]["tasks_completed"], r["tasks_completed"],
            "{name}"
        );
        match (a["today"]["occupancy"].as_f64(), r["occupancy"].as_f64()) {
            (Some(x), Some(y)) => {
                assert!((x - y).abs() <= 0.011, "{name}: occupancy {x} vs {y}");
                occupied += usize::from(x > 0.0);
            }
            (x, y) => assert_eq!(x, y, "{name}: occupancy"),
        }
    }
    assert!(occupied > 5, "most agents were busy part of the day");

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
    let again: Vec<Value> = get_json(&svc, "/api/reports/intervals", &q).await;
    assert_eq!(again, rows, "the report after retention");
    let agents_after: Vec<Value> = get_json(&svc, "/api/agents", &[("", ""); 0]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_known_only_from_the_rest_api_has_its_time_in_activity() {
    use crate::twilio_stub::TwilioStub;
    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const WS: &str = "WS0123456789abcdef0123456789abcdef";
    let zone = zone_where_today_is_long();
    let stub = TwilioStub::start(AC, AUTH_TOKEN).await;
    stub.set_activities(
        WS,
        vec![serde_json::json!({"sid": "WA00000000000000000000000000000002", "friendly_name": "Break",
            "available": false})],
    );
    let changed = Utc::now() - chrono::Duration::minutes(20);
    stub.set_workers(
        WS,
        vec![
            serde_json::json!({"sid": "WK00000000000000000000000000000001", "friendly_name": "dana",
            "account_sid": AC, "workspace_sid": WS, "available": false,
            "activity_sid": "WA00000000000000000000000000000002", "activity_name": "Break",
            "attributes": "{}",
            "date_status_changed": changed.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
        ],
    );
    let db = TestDb::new().await;
    let svc = Service::start(
        Options::new(&db.url)
            .account(AC)
            .taskrouter(&stub, WS)
            .timezone(&zone),
    )
    .await;
    let mut last = Value::Null;
    for _ in 0..100 {
        last = get_json(&svc, "/api/agents", &[("", ""); 0]).await;
        if last[0]["activity_since"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = &last[0];
    assert_eq!(a["name"], "dana", "{last}");
    assert_eq!(a["activity"], "Break");
    let since =
        DateTime::parse_from_rfc3339(a["activity_since"].as_str().expect("since")).expect("iso");
    assert_eq!(since.timestamp(), changed.timestamp());
    let secs = a["seconds_in_activity"].as_i64().expect("seconds");
    assert!((1199..1300).contains(&secs), "{secs}");
    let on_break = a["today"]["seconds_by_activity"]["Break"]
        .as_f64()
        .expect("break today");
    assert!((1199.0..1300.0).contains(&on_break), "{on_break}");
}
