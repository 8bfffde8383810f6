use crate::harness::*;
use crate::ingest::{assert_state_matches, stored_events};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::time::Duration;
use taskrouter_summarizer::ingest::signature;
use taskrouter_summarizer::sim::{realistic_day, DayConfig};

/// Kill cycles; the documented long run sets TRS_CRASH_CYCLES=20 or more.
fn cycles() -> usize {
    std::env::var("TRS_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_bursts_loses_and_duplicates_no_acknowledged_callback() {
    let db = TestDb::new().await;
    let mut svc = Service::start(Options::new(&db.url)).await;
    let n = cycles();
    let day = realistic_day(&DayConfig {
        seed: 11,
        tasks: 150 * n,
        workers: 20,
        ..DayConfig::default()
    });
    let chunk = day.callbacks.len() / n;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut acked: HashSet<String> = HashSet::new();
    let mut refused = 0usize;
    let url = format!("{PUBLIC_URL}/ingress");
    for cycle in 0..n {
        let part = &day.callbacks[cycle * chunk..((cycle + 1) * chunk).min(day.callbacks.len())];
        let mut tasks = Vec::new();
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // 48 concurrent clients, each posting its share in a loop.
        for lane in 0..48 {
            let mine: Vec<Vec<(String, String)>> =
                part.iter().skip(lane).step_by(48).cloned().collect();
            let http = svc.http.clone();
            let target = svc.url("/ingress");
            let url = url.clone();
            let progress = progress.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut failed = 0;
                for p in mine {
                    let sig = signature::compute(AUTH_TOKEN, &url, &p);
                    let r = http
                        .post(&target)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("x-twilio-signature", sig)
                        .body(encode(&p))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().as_u16() == 204 => {
                            ok.push(sid_of(&p));
                            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            }));
        }
        // Kill at a random point of the burst: after 20 to 80 % of it was acknowledged.
        let target = part.len() * rng.gen_range(20..80) / 100;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while progress.load(std::sync::atomic::Ordering::Relaxed) < target
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        svc.kill9();
        for t in tasks {
            let (ok, failed) = t.await.expect("lane");
            acked.extend(ok);
            refused += failed;
        }
        svc.spawn().await;
    }
    svc.wait_drained(Duration::from_secs(120)).await;
    let c = db.client().await;
    let acked_list: Vec<String> = acked.iter().cloned().collect();
    let found: i64 = c
        .query_one(
            "SELECT count(*) FROM events WHERE sid = ANY($1)",
            &[&acked_list],
        )
        .await
        .unwrap()
        .get(0);
    println!(
        "kill -9 cycles: {n}; acknowledged callbacks checked: {}; unacknowledged (cut off by the kill): {refused}",
        acked.len()
    );
    assert!(
        !acked.is_empty() && refused > 0,
        "the kills must land mid-burst"
    );
    assert_eq!(
        found as usize,
        acked.len(),
        "every acknowledged callback is stored"
    );
    // Nothing applied twice: the state tables are exactly the rules applied to the
    // stored events (each once).
    assert_state_matches(&db, &stored_events(&db).await).await;
}
