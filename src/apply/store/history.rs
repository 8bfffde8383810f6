//! What interval reports and the agents view read (design §5b), kept apart from the raw
//! events so that both survive event retention:
//! - `worker_activities`: one closed activity interval per `worker.activity.update`,
//!   inserted with the event (its sid dedupes replays);
//! - `task_rollups`: per 15-minute bucket of task creation, per queue and channel,
//!   counters and sums recomputed from `tasks`. Applying a batch only appends the buckets
//!   its tasks were and are in to `rollup_dirty`; [`Store::refresh_rollups`] recomputes
//!   them in short transactions of its own, so the drain never waits on a rollup row.
use super::*;

/// Rollup buckets are 15 minutes long, aligned on the Unix epoch (UTC).
pub const BUCKET_MS: i64 = 15 * 60 * 1000;

/// The start of the bucket holding the instant `ms`.
pub fn bucket_of(ms: i64) -> i64 {
    ms.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// The interval a `worker.activity.update` closes: the previous activity, from the update
/// time less the time spent in it, to the update time. None for other events, or when
/// the update does not say how long the previous activity lasted.
pub fn closed_activity(e: &Event) -> Option<ClosedActivity<'_>> {
    if e.event_type != "worker.activity.update" {
        return None;
    }
    let ms = e
        .int("WorkerTimeInPreviousActivityMs")
        .or_else(|| e.int("WorkerTimeInPreviousActivity").map(|s| s * 1000))?;
    let ended = chrono::DateTime::from_timestamp_millis(e.occurred_ms)?;
    let started = chrono::DateTime::from_timestamp_millis(e.occurred_ms - ms.max(0))?;
    Some(ClosedActivity {
        event_sid: &e.sid,
        worker_sid: e.worker_sid()?,
        activity_sid: e.get("WorkerPreviousActivitySid"),
        activity_name: e.get("WorkerPreviousActivityName"),
        started_at: started,
        ended_at: ended,
    })
}

/// A `worker_activities` row.
#[derive(Debug, Serialize, PartialEq)]
pub struct ClosedActivity<'a> {
    event_sid: &'a str,
    worker_sid: &'a str,
    activity_sid: Option<&'a str>,
    activity_name: Option<&'a str>,
    started_at: chrono::DateTime<chrono::Utc>,
    ended_at: chrono::DateTime<chrono::Utc>,
}

/// Recomputes the rollups of the buckets in `$1` from `tasks`. Definitions as in
/// [`crate::publish::summary`], except that every count is by the task's creation.
const RECOMPUTE: &str = "\
INSERT INTO task_rollups (bucket, task_queue_sid, channel, task_queue_name, tasks_created, \
    tasks_accepted, tasks_accepted_within_sla, tasks_abandoned, tasks_short_abandoned, \
    tasks_completed, answered_in_sum, handle_time_sum, wrapup_time_sum, wrapup_count, max_wait) \
SELECT b.b, coalesce(t.task_queue_sid, ''), coalesce(t.task_channel_unique_name, ''), \
    max(t.task_queue_name), count(*), \
    count(*) FILTER (WHERE t.first_accepted_at IS NOT NULL), \
    count(*) FILTER (WHERE t.first_accepted_at IS NOT NULL AND t.within_sla), \
    count(*) FILTER (WHERE t.canceled_at IS NOT NULL AND t.first_accepted_at IS NULL \
                     AND coalesce(t.total_time, 0) >= $2), \
    count(*) FILTER (WHERE t.canceled_at IS NOT NULL AND t.first_accepted_at IS NULL \
                     AND coalesce(t.total_time, 0) < $2), \
    count(*) FILTER (WHERE t.task_assignment_status = 'completed'), \
    coalesce(sum(t.answered_in) FILTER (WHERE t.first_accepted_at IS NOT NULL), 0), \
    coalesce(sum(t.total_time - t.answered_in) FILTER (WHERE t.task_assignment_status = 'completed'), 0), \
    coalesce(sum(t.total_time - t.acw_start) FILTER (WHERE t.task_assignment_status = 'completed'), 0), \
    count(t.total_time - t.acw_start) FILTER (WHERE t.task_assignment_status = 'completed'), \
    max(CASE WHEN t.first_accepted_at IS NOT NULL THEN t.answered_in \
             WHEN t.canceled_at IS NOT NULL THEN t.total_time END) \
FROM unnest($1::timestamptz[]) AS b(b) \
JOIN tasks t ON t.task_created >= b.b AND t.task_created < b.b + interval '15 minutes' \
GROUP BY 1, 2, 3";

impl Store {
    /// Inserts the activity intervals that fresh `worker.activity.update` events close.
    pub(super) async fn record_activities<C: GenericClient>(
        &self,
        tx: &C,
        events: &[&Event],
    ) -> Result<(), StoreError> {
        let rows: Vec<ClosedActivity> = events.iter().filter_map(|e| closed_activity(e)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO worker_activities (event_sid, worker_sid, activity_sid, activity_name, \
                 started_at, ended_at) \
                 SELECT event_sid, worker_sid, activity_sid, activity_name, started_at, ended_at \
                 FROM jsonb_populate_recordset(NULL::worker_activities, $1) \
                 ON CONFLICT (event_sid) DO NOTHING",
            )
            .await?;
        tx.execute(&stmt, &[&Json(&rows)]).await?;
        self.mark_workers(tx, rows.iter().map(|r| r.worker_sid).collect())
            .await
    }

    /// Appends the rollup buckets (as bucket starts in ms) whose tasks changed.
    pub(super) async fn mark_buckets<C: GenericClient>(
        &self,
        tx: &C,
        buckets: &BTreeSet<i64>,
    ) -> Result<(), StoreError> {
        let at: Vec<chrono::DateTime<chrono::Utc>> = buckets
            .iter()
            .filter_map(|ms| chrono::DateTime::from_timestamp_millis(*ms))
            .collect();
        if at.is_empty() {
            return Ok(());
        }
        let stmt = tx
            .prepare_cached("INSERT INTO rollup_dirty (bucket) SELECT unnest($1::timestamptz[])")
            .await?;
        tx.execute(&stmt, &[&at]).await?;
        Ok(())
    }

    /// The buckets `tasks` are in now, as stored (a rebuild merges into fresh states, so
    /// the bucket a task leaves is read from its row).
    pub(super) async fn stored_buckets<C: GenericClient>(
        &self,
        tx: &C,
        tasks: Vec<String>,
    ) -> Result<BTreeSet<i64>, StoreError> {
        let stmt = tx
            .prepare_cached(
                "SELECT DISTINCT (extract(epoch from task_created) * 1000)::int8 FROM tasks \
                 WHERE sid = ANY($1) AND task_created IS NOT NULL",
            )
            .await?;
        Ok(tx
            .query(&stmt, &[&tasks])
            .await?
            .iter()
            .map(|r| bucket_of(r.get(0)))
            .collect())
    }

    /// Takes up to `limit` marks and recomputes their buckets in one transaction; returns
    /// how many marks it took. A mark committed after this read the log is taken by a
    /// later round; buckets are locked (advisory, in order) so two instances never
    /// interleave the delete and insert of one bucket.
    pub async fn refresh_rollups(&self, limit: i64) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (took, buckets): (usize, Vec<chrono::DateTime<chrono::Utc>>) =
            take_marks(&tx, "rollup_dirty", "bucket", limit).await?;
        if !buckets.is_empty() {
            let mut locks = Locks::default();
            for b in &buckets {
                locks.exclusive("rollup", &b.timestamp_millis().to_string());
            }
            locks.take(&tx).await?;
            self.recompute_buckets(&tx, &buckets).await?;
        }
        tx.commit().await?;
        Ok(took)
    }

    async fn recompute_buckets<C: GenericClient>(
        &self,
        tx: &C,
        buckets: &[chrono::DateTime<chrono::Utc>],
    ) -> Result<(), StoreError> {
        let del = tx
            .prepare_cached("DELETE FROM task_rollups WHERE bucket = ANY($1)")
            .await?;
        tx.execute(&del, &[&buckets]).await?;
        let ins = tx.prepare_cached(RECOMPUTE).await?;
        let short = self.sla.short_abandon_seconds as i32;
        tx.execute(&ins, &[&buckets, &short]).await?;
        Ok(())
    }

    /// Marks every bucket that has tasks, so the refresher recomputes all rollups (after
    /// a rebuild, or when the SLA settings change).
    pub async fn mark_all_rollups(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "INSERT INTO rollup_dirty (bucket) \
                 SELECT DISTINCT date_bin('15 minutes', task_created, timestamptz '2000-01-01 00:00:00+00') \
                 FROM tasks WHERE task_created IS NOT NULL",
                &[],
            )
            .await?)
    }

    /// Recomputes rollups until no mark is left (the CLI, tests and benchmarks).
    pub async fn refresh_all_rollups(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let took = self.refresh_rollups(500).await?;
            n += took;
            if took == 0 {
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(ms: &str) -> Event {
        let mut p = vec![
            ("EventType", "worker.activity.update"),
            ("Sid", "EV1"),
            ("WorkerSid", "WK1"),
            ("TimestampMs", "1700000100000"),
            ("WorkerPreviousActivitySid", "WA1"),
            ("WorkerPreviousActivityName", "Break"),
        ];
        if !ms.is_empty() {
            p.push(("WorkerTimeInPreviousActivityMs", ms));
        }
        let p: Vec<(String, String)> = p
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Event::from_params(&p, 0)
    }

    #[test]
    fn an_activity_update_closes_the_previous_activity() {
        let e = update("61500");
        let c = closed_activity(&e).expect("closed");
        assert_eq!(c.worker_sid, "WK1");
        assert_eq!(c.activity_name, Some("Break"));
        assert_eq!(c.ended_at.timestamp_millis(), 1_700_000_100_000);
        assert_eq!(c.started_at.timestamp_millis(), 1_700_000_100_000 - 61_500);
    }

    #[test]
    fn an_update_without_its_duration_closes_nothing() {
        assert_eq!(closed_activity(&update("")), None);
        assert_eq!(closed_activity(&update("not a number")), None);
    }

    #[test]
    fn buckets_are_quarter_hours_of_utc() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(BUCKET_MS - 1), 0);
        assert_eq!(bucket_of(BUCKET_MS), BUCKET_MS);
        assert_eq!(bucket_of(-1), -BUCKET_MS);
    }
}
