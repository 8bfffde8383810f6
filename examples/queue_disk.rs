//! Does the queue's disk use stay flat under a steady append/ack churn?
//!   cargo run --release --example queue_disk -- [rounds] [entries-per-round]
use std::sync::Arc;
use taskrouter_summarizer::event::QueuedCallback;
use taskrouter_summarizer::metrics::Metrics;
use taskrouter_summarizer::queue::Queue;

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(10);
    let per: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), 64, u64::MAX, Arc::new(Metrics::default())).expect("open");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(q.clone().run_flusher(stop.clone()));
    let payload = "x".repeat(1500);
    for round in 0..rounds {
        let mut handles = Vec::new();
        for lane in 0..64 {
            let q = q.clone();
            let payload = payload.clone();
            handles.push(tokio::spawn(async move {
                for i in (lane..per).step_by(64) {
                    let cb = QueuedCallback::TaskRouterV1 {
                        received_ms: i as i64,
                        params: vec![("EventType".into(), payload.clone())],
                    };
                    q.append_durable(&cb).await.expect("append");
                }
            }));
        }
        for h in handles {
            h.await.expect("lane");
        }
        let mut after = None;
        loop {
            let b = q.read_batch(after, 1000).expect("read");
            if b.is_empty() {
                break;
            }
            if let taskrouter_summarizer::queue::Loc::Main(id) = b[b.len() - 1].loc {
                after = Some(id);
            }
            q.ack(&b.iter().map(|i| i.loc).collect::<Vec<_>>())
                .expect("ack");
        }
        q.flush().expect("flush");
        println!(
            "round {round}: depth {}, sled size_on_disk {} MB, directory {} MB",
            q.depth(),
            q.status().disk_bytes >> 20,
            dir_size(dir.path()) >> 20
        );
    }
}
