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
