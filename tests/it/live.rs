//! `simulate --live` (what `demo` runs) against the real service: the history written
//! fast shows as a curve by event time, then tasks keep arriving in real time.

use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use taskrouter_summarizer::config::{Config, Secret};
use taskrouter_summarizer::publish::live;

/// Tasks created in the last `secs` seconds, by the database's clock.
async fn created_within(db: &TestDb, secs: i64) -> i64 {
    db.count(&format!(
        "SELECT count(*) FROM tasks WHERE task_created > now() - interval '{secs} seconds'"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_floor_writes_its_history_then_runs_in_real_time() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    // 100 agents: some 22 tasks a minute, so a few seconds of real time hold tasks.
    let mut child = svc
        .command(&[
            "simulate",
            "--live",
            "--history",
            "30m",
            "--duration",
            "50",
            "--agents",
            "100",
            "--rate",
            "2000",
            "--url",
            &svc.url("/ingress"),
            "--public-url",
            PUBLIC_URL,
            "--auth-token",
            AUTH_TOKEN,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run simulate --live");
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !printed
        .iter()
        .any(|l: &String| l.contains("history written"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => printed.push(l),
            Err(e) => panic!("no end of history ({e}): {printed:?}"),
        }
    }
    svc.wait_drained(Duration::from_secs(120)).await;
    let drained_at = chrono::Utc::now();

    // The history by event time: every minute of the half hour has tasks, no spike.
    let mut cfg = Config::from_toml("").expect("default config");
    cfg.postgres.url = Secret::new(db.url.clone());
    let pool = taskrouter_summarizer::apply::store::pool(&cfg.postgres).expect("pool");
    let points = live::history(&pool, &cfg.sla, chrono::Utc::now())
        .await
        .expect("history");
    assert_eq!(points.len(), live::HISTORY_POINTS);
    let recent = &points[points.len() - 28..];
    let created: Vec<i64> = recent.iter().map(|p| p.created).collect();
    let total: i64 = created.iter().sum();
    assert!(total > 300, "{created:?}");
    assert!(
        created.iter().filter(|&&n| n > 0).count() >= 26,
        "{created:?}"
    );
    assert!(
        created.iter().all(|&n| n < total / 5),
        "a spike: {created:?}"
    );
    assert!(
        recent.iter().all(|p| p.waiting < 40),
        "{:?}",
        recent.iter().map(|p| p.waiting).collect::<Vec<_>>()
    );
    assert!(recent.iter().any(|p| p.service_level.is_some()));
    let s1 = svc.summary_since(drained_at).await;
    let recent_tasks = s1["workspace"]["last_30_minutes"]["tasks_created"]
        .as_i64()
        .unwrap_or(0);
    assert!(recent_tasks > 300, "{s1}");
    let longest = s1["workspace"]["realtime"]["longest_task_waiting_age"]
        .as_i64()
        .unwrap_or(i64::MAX);
    if longest >= 300 {
        let sid = s1["workspace"]["realtime"]["longest_task_waiting_sid"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let events = db
            .rows(&format!(
                "SELECT event_type || ' ' || occurred_at::text || ' ' || sid FROM events \
                 WHERE task_sid = '{sid}' ORDER BY occurred_at, sid"
            ))
            .await;
        panic!("longest wait {longest} s: {sid} {events:#?}");
    }

    // Then real time: tasks keep arriving and the summary moves.
    // Some 5 tasks in 15 s: the wait is for the first new one, up to 35 s (the live
    // run lasts 50 s), as Poisson arrivals can leave 15 s empty.
    let before = db.count("SELECT count(*) FROM tasks").await;
    let deadline = Instant::now() + Duration::from_secs(35);
    tokio::time::sleep(Duration::from_secs(15)).await;
    while db.count("SELECT count(*) FROM tasks").await == before {
        assert!(
            Instant::now() < deadline,
            "no task in 35 s of real time ({before})"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(created_within(&db, 60).await > 0);
    let s2 = svc.summary().await;
    assert_ne!(s1["generated_at"], s2["generated_at"]);
    assert_ne!(
        s1["workspace"], s2["workspace"],
        "the summary did not change"
    );

    let status = child.wait().expect("simulate exits after --duration");
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        printed.push(l);
    }
    assert!(status.success(), "{printed:?}");
    assert!(printed.iter().any(|l| l.contains("stopped")), "{printed:?}");
}
