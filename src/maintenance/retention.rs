//! Retention: raw events older than `retention.events_days` are removed in small
//! batches (short transactions, so applying events never waits long on them). State
//! tables and Conversations messages are not touched: the summaries and message metrics
//! need them, and they are small next to the raw events.
//!
//! The cutoff is recorded in `maintenance` before anything is removed, so `rebuild`
//! knows which tasks lost events.

use crate::apply::store::{Store, StoreError};
use crate::config::Retention;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Removes events that occurred before `cutoff`, `batch` per transaction, until none
/// is left or `stop` fires. Returns how many were removed.
pub async fn prune(
    store: &Store,
    cutoff: DateTime<Utc>,
    batch: i64,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let c = store.pool().get().await?;
    c.execute(
        "INSERT INTO maintenance (key, value) VALUES ('events_pruned_before', $1) \
         ON CONFLICT (key) DO UPDATE SET value = greatest(maintenance.value, EXCLUDED.value)",
        &[&cutoff],
    )
    .await?;
    let stmt = c
        .prepare(
            "DELETE FROM events WHERE sid IN \
             (SELECT sid FROM events WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2)",
        )
        .await?;
    let mut total = 0u64;
    loop {
        let n = c.execute(&stmt, &[&cutoff, &batch]).await?;
        total += n;
        if n < batch as u64 || stop.is_cancelled() {
            return Ok(total);
        }
        // Let the workers' transactions through between batches.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Inside `serve`: prunes shortly after start and then every `interval_minutes`.
pub async fn run(opts: Retention, store: Store, stop: CancellationToken) {
    if opts.events_days == 0 {
        return;
    }
    let mut wait = Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = Duration::from_secs(opts.interval_minutes.max(1) * 60);
        let cutoff = Utc::now() - chrono::Duration::days(opts.events_days as i64);
        match prune(&store, cutoff, opts.batch_size, &stop).await {
            Ok(0) => tracing::debug!("retention: no events to remove"),
            Ok(n) => tracing::info!(removed = n, before = %cutoff.to_rfc3339(),
                "retention: removed old raw events"),
            Err(e) => {
                tracing::warn!(error = %e, "retention: cannot remove old events; will retry");
                wait = Duration::from_secs(60);
            }
        }
    }
}
