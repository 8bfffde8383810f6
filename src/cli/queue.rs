//! `queue status | dead-letters | requeue`: the local queue, opened directly (only while
//! `serve` is stopped: sled locks its directory).

use super::QueueCommand;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::Queue;
use std::sync::Arc;

pub fn run(cfg: &Config, command: QueueCommand) -> anyhow::Result<()> {
    let q = Queue::open(
        &cfg.queue.path,
        cfg.queue.cache_mb,
        u64::MAX,
        Arc::new(Metrics::default()),
    )?;
    match command {
        QueueCommand::Status => {
            println!("{}", serde_json::to_string_pretty(&q.status())?);
        }
        QueueCommand::DeadLetters => {
            for dl in q.dead_letters()? {
                let payload = String::from_utf8_lossy(&dl.payload);
                println!(
                    "{}",
                    serde_json::json!({"id": dl.id, "attempts": dl.attempts, "error": dl.error,
                                "failed_ms": dl.failed_ms, "entry": serde_json::from_str::<serde_json::Value>(&payload).unwrap_or(payload.into())})
                );
            }
        }
        QueueCommand::Requeue => {
            let n = q.requeue_dead()?;
            println!("requeued {n} dead letter(s)");
        }
    }
    Ok(())
}
