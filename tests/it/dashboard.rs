//! The wallboard: the page and its Server-Sent Events.

use crate::harness::*;
use std::time::{Duration, Instant};

/// Reads SSE frames from a streaming response until `want` events were seen.
async fn read_events(mut r: reqwest::Response, want: usize) -> Vec<(String, serde_json::Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while out.len() < want {
        let chunk = tokio::time::timeout_at(deadline.into(), r.chunk())
            .await
            .expect("events in time")
            .expect("stream")
            .expect("open stream");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).expect("JSON data"));
                }
            }
            if let (Some(e), Some(d)) = (event, data) {
                out.push((e, d));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboard_streams_live_summaries() {
    let db = TestDb::new().await;
    let mut svc = Service::start(Options::new(&db.url)).await;
    let page = svc.admin_get("/dashboard").send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<html"));

    let r = svc.admin_get("/dashboard/events").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let now = chrono::Utc::now().timestamp_millis();
    let cb = Cb::task("task.created", "WT1")
        .ev(1)
        .status("pending")
        .channel("chat")
        .queue("Support")
        .queue_sid("WQ1")
        .age(0)
        .at(now)
        .build();
    assert_eq!(svc.post(&cb).await.unwrap(), 204);
    // History first, then summaries; one of them shows the new waiting task.
    let events = read_events(r, 4).await;
    assert_eq!(events[0].0, "history");
    assert!(events[0].1.is_array());
    let summaries: Vec<_> = events.iter().filter(|(e, _)| e == "summary").collect();
    assert!(!summaries.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = svc.admin_get("/dashboard/events").send().await.unwrap();
        let ev = read_events(r, 2).await;
        let s = &ev[1].1;
        if s["queues"]["Support"]["realtime"]["tasks_by_status"]["pending"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "task never shown: {s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // An open SSE stream does not hold up shutdown.
    let _open = svc.admin_get("/dashboard/events").send().await.unwrap();
    let started = Instant::now();
    assert!(svc.terminate().success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// `/api/wallboard`: the configured thresholds, and today's bounds in `[sla] timezone`;
/// guarded like the rest of the admin side. `check-config` names bad thresholds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboard_settings_carry_the_configured_thresholds_and_today() {
    use chrono::{DateTime, Utc};
    use taskrouter_summarizer::publish::report::{align, Step};
    let db = TestDb::new().await;
    let zone = "Asia/Kathmandu"; // +05:45: midnight is not on a UTC hour
    let svc = Service::start(
        Options::new(&db.url)
            .admin_token("wall-token")
            .timezone(zone)
            .wallboard_alerts(3, 0)
            .offline_activities(&["Logged out", "Offline"]),
    )
    .await;
    let before = Utc::now();
    let r = svc.admin_get("/api/wallboard").send().await.unwrap();
    let after = Utc::now();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let s: serde_json::Value = r.json().await.unwrap();
    assert_eq!(s["break_alert_minutes"], 3);
    assert_eq!(s["task_alert_minutes"], 0, "0 turns the alert off");
    assert_eq!(
        s["offline_activities"],
        serde_json::json!(["Logged out", "Offline"])
    );
    assert_eq!(s["timezone"], zone);
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let instant = |k: &str| -> DateTime<Utc> {
        let v = s[k].as_str().unwrap_or_else(|| panic!("{k} in {s}"));
        assert!(v.ends_with("+05:45"), "{k} in the configured zone: {v}");
        DateTime::parse_from_rfc3339(v).unwrap().into()
    };
    let (start, end) = (instant("today_start"), instant("today_end"));
    // Unless midnight passed between the two clock reads, start is today's midnight.
    assert!(start == align(before, Step::Day, &tz) || start == align(after, Step::Day, &tz));
    assert_eq!(end - start, chrono::Duration::days(1), "no DST in Nepal");
    assert_eq!(
        s["today"].as_str(),
        Some(start.with_timezone(&tz).date_naive().to_string().as_str())
    );
    // The page passes the bounds to the intervals report as they are: it accepts them.
    let r = svc
        .admin_get("/api/reports/intervals")
        .query(&[
            ("from", s["today_start"].as_str().unwrap()),
            ("to", s["today_end"].as_str().unwrap()),
            ("interval", "30m"),
            ("by", "queue"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Guarded: no token, 401; the token as `?token=` (as the page passes it), 200.
    let url = svc.admin_url("/api/wallboard");
    assert_eq!(svc.http.get(&url).send().await.unwrap().status(), 401);
    let r = svc
        .http
        .get(format!("{url}?token=wall-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Thresholds outside 0..=1440 are named by check-config.
    let bad = svc.dir.path().join("bad.toml");
    let cfg = std::fs::read_to_string(&svc.config)
        .unwrap()
        .replace("break_alert_minutes = 3", "break_alert_minutes = 2000");
    std::fs::write(&bad, cfg).unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", bad.to_str().unwrap(), "check-config"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wallboard.break_alert_minutes: must be between 0 (off) and 1440"),
        "{err}"
    );
}
