//! Cron helpers for the stages that run on a schedule (publishing, jobs, reconciliation).

use std::time::Duration;

/// Time until the next tick of a cron schedule (1 s if it has none).
pub fn until_next_tick(schedule: &cron::Schedule) -> Duration {
    schedule
        .upcoming(chrono::Utc)
        .next()
        .and_then(|t| (t - chrono::Utc::now()).to_std().ok())
        .unwrap_or(Duration::from_secs(1))
}
