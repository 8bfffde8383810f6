//! The wallboard in a real headless browser (Debian's chromium).

use crate::harness::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium is needed for the wallboard test: apt-get install chromium (scripts/test.sh does)")
}

/// The page's text after it loaded and received its first events, cells separated by `|`.
fn page_text(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--timeout=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let body = dom.split("<script").next().unwrap_or_default().to_owned();
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                if !text.ends_with('|') {
                    text.push('|');
                }
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

fn created(n: u32, queue: &str) -> Params {
    Cb::task("task.created", wt(n))
        .ev(n)
        .status("pending")
        .channel("chat")
        .queue(queue)
        .queue_sid(format!("WQ{queue}"))
        .age(0)
        .at(chrono::Utc::now().timestamp_millis())
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboard_shows_the_summary_and_updates_live() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let mut cbs: Vec<_> = (0..9).map(|n| created(n, "Support")).collect();
    cbs.extend((9..13).map(|n| created(n, "Sales")));
    assert!(post_all(&svc, &cbs, 4).await.iter().all(|s| *s == 204));
    // Wait until the summary shows all 13 tasks.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let api: serde_json::Value = svc.summary().await;
        if api["workspace"]["today"]["tasks_created"] == 13 {
            break;
        }
        assert!(Instant::now() < deadline, "{api}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = svc.admin_url("/dashboard");
    // Chromium may dump the page before the first event arrived: try again briefly.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let u = url.clone();
        let text = tokio::task::spawn_blocking(move || page_text(&u))
            .await
            .unwrap();
        if text.contains("|Support|") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for want in ["|Support|", "|Sales|", "|9|", "|4|", "|13|", "|chat|"] {
        assert!(text.contains(want), "{want} missing from the page:\n{text}");
    }
    assert!(!text.contains("|Billing|"));

    // New callbacks show up within seconds.
    assert_eq!(svc.post(&created(20, "Billing")).await.unwrap(), 204);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = url.clone();
        let text = tokio::task::spawn_blocking(move || page_text(&url))
            .await
            .unwrap();
        if text.contains("|Billing|") && text.contains("|14|") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the new task:\n{text}"
        );
    }
}
