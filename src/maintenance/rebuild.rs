//! `rebuild`: recomputes every state table from the raw `events` table, in batches of
//! entities (activities, then workers, then tasks with their reservations), each batch
//! in one transaction under the entities' locks (see [`Store::rebuild`]). Safe while
//! `serve` runs.
//!
//! What the events alone cannot restore: state read from TaskRouter's REST API
//! (activities' availability, channels no event ever mentioned) comes back with the REST
//! sync that follows when Twilio is configured; tasks that started before the retention
//! cutoff (their events are partly removed) are left as they are.

use crate::apply::store::{Entity, Store, StoreError};
use chrono::{DateTime, Utc};

/// Where a rebuild is, for a progress display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
    pub events: u64,
    /// Tasks left alone because retention removed part of their events.
    pub skipped: u64,
}

/// Counts of what a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub activities: u64,
    pub workers: u64,
    pub tasks: u64,
    pub events: u64,
    pub skipped_tasks: u64,
}

struct Phase {
    name: &'static str,
    entity: Entity,
    /// `$1`: the last key done ('' at first), `$2`: the batch size.
    next_keys: &'static str,
    count: &'static str,
}

const PHASES: [Phase; 3] = [
    Phase {
        name: "activities",
        entity: Entity::Activity,
        next_keys: "SELECT DISTINCT data->>'ActivitySid' AS k FROM events \
                    WHERE event_type IN ('activity.created', 'activity.updated', 'activity.deleted') \
                    AND data->>'ActivitySid' > $1 ORDER BY 1 LIMIT $2",
        count: "SELECT count(DISTINCT data->>'ActivitySid') FROM events \
                WHERE event_type IN ('activity.created', 'activity.updated', 'activity.deleted')",
    },
    Phase {
        name: "workers",
        entity: Entity::Worker,
        next_keys: "SELECT DISTINCT worker_sid FROM events \
                    WHERE worker_sid > $1 AND event_type LIKE 'worker.%' ORDER BY 1 LIMIT $2",
        count: "SELECT count(DISTINCT worker_sid) FROM events WHERE event_type LIKE 'worker.%'",
    },
    Phase {
        name: "tasks",
        entity: Entity::Task,
        next_keys: "SELECT DISTINCT task_sid FROM events WHERE task_sid > $1 ORDER BY 1 LIMIT $2",
        count: "SELECT count(DISTINCT task_sid) FROM events",
    },
];

/// The retention cutoff, if events were ever removed.
pub async fn pruned_before(store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
    let c = store.pool().get().await?;
    Ok(c.query_opt(
        "SELECT value FROM maintenance WHERE key = 'events_pruned_before'",
        &[],
    )
    .await?
    .map(|r| r.get(0)))
}

/// Rebuilds everything, `batch` entities per transaction; `progress` is called after
/// each batch.
pub async fn run(
    store: &Store,
    batch: i64,
    mut progress: impl FnMut(&Progress),
) -> Result<Report, StoreError> {
    let cutoff = pruned_before(store).await?;
    let mut report = Report::default();
    for phase in &PHASES {
        let c = store.pool().get().await?;
        let total: i64 = c.query_one(phase.count, &[]).await?.get(0);
        let mut p = Progress {
            phase: phase.name,
            total: total as u64,
            ..Progress::default()
        };
        progress(&p);
        let mut last = String::new();
        loop {
            let keys: Vec<String> = c
                .query(phase.next_keys, &[&last, &batch.max(1)])
                .await?
                .iter()
                .filter_map(|r| r.get::<_, Option<String>>(0))
                .collect();
            let Some(k) = keys.last() else { break };
            last = k.clone();
            let mut todo = keys.clone();
            if let (Entity::Task, Some(cut)) = (phase.entity, cutoff) {
                // Tasks created before the cutoff lost events to retention: rebuilt from
                // what is left they would be wrong, so they keep their rows.
                let old: Vec<String> = c
                    .query(
                        "SELECT sid FROM tasks WHERE sid = ANY($1) AND task_created < $2",
                        &[&keys, &cut],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                todo.retain(|k| !old.contains(k));
                p.skipped += old.len() as u64;
            }
            p.events += store.rebuild(phase.entity, &todo).await? as u64;
            p.done += keys.len() as u64;
            progress(&p);
        }
        report.events += p.events;
        match phase.entity {
            Entity::Activity => report.activities = p.done,
            Entity::Worker => report.workers = p.done,
            Entity::Task => {
                report.tasks = p.done - p.skipped;
                report.skipped_tasks = p.skipped;
            }
        }
    }
    Ok(report)
}
