//! Each worker's day so far (`worker_today`), for `/api/agents`: recomputed from the
//! worker's reservations, tasks and activity intervals whenever one of them changes.
//! Applying a batch only appends the workers it touched to `worker_dirty`;
//! [`Store::refresh_worker_days`] recomputes them in short transactions of its own.
//!
//! What is still open at that moment (the current activity, accepted tasks not yet
//! finished) is not stored as time: `busy_open_since` and the worker's current activity
//! let a reader add it up to its own "now" (see `publish::agents`). The split is exact:
//! `busy_closed_seconds` is finished busy time before the earliest open busy time, and
//! `union_closed_seconds` finished busy-or-available time before the earliest open busy or
//! available time, so adding the open stretch never counts a second twice.
use super::*;

/// `$1`: workers, `$2`: the day's start, `$3`: names counting as available (empty:
/// TaskRouter's flag).
const RECOMPUTE: &str = "\
WITH ws AS (SELECT DISTINCT unnest($1::text[]) AS worker_sid), \
r AS (SELECT r.worker_sid, r.accepted_at, r.rejected_at, r.timed_out_at, \
        coalesce(r.completed_at, r.canceled_at, r.rescinded_at, r.failed_at, t.ended_at) AS ended \
      FROM reservations r LEFT JOIN tasks t ON t.sid = r.task_sid \
      WHERE r.worker_sid = ANY($1) AND r.created_at >= $2::timestamptz - interval '1 day'), \
rc AS (SELECT worker_sid, \
         count(*) FILTER (WHERE accepted_at >= $2) AS acc, \
         count(*) FILTER (WHERE rejected_at >= $2) AS rej, \
         count(*) FILTER (WHERE timed_out_at >= $2) AS tmo, \
         min(accepted_at) FILTER (WHERE ended IS NULL) AS b0, \
         range_agg(tstzrange(greatest(accepted_at, $2), ended)) \
           FILTER (WHERE accepted_at IS NOT NULL AND ended > greatest(accepted_at, $2)) AS bc \
       FROM r GROUP BY 1), \
done AS (SELECT worker_sid, count(*) AS n, coalesce(sum(total_time - answered_in), 0) AS h, \
           coalesce(sum(total_time - acw_start), 0) AS wu, count(total_time - acw_start) AS wn \
         FROM tasks WHERE worker_sid = ANY($1) AND ended_at >= $2 \
           AND task_assignment_status = 'completed' GROUP BY 1), \
act AS (SELECT a.worker_sid, coalesce(a.activity_name, a.activity_sid, '(unknown)') AS name, \
          greatest(a.started_at, $2) AS s, a.ended_at AS e, \
          CASE WHEN cardinality($3::text[]) > 0 THEN coalesce(a.activity_name = ANY($3), false) \
               ELSE coalesce(x.available, false) END AS available \
        FROM worker_activities a LEFT JOIN activities x ON x.sid = a.activity_sid \
        WHERE a.worker_sid = ANY($1) AND a.ended_at > $2 AND a.ended_at > a.started_at), \
secs AS (SELECT worker_sid, jsonb_object_agg(name, secs) AS m FROM \
           (SELECT worker_sid, name, round(sum(extract(epoch from e - s))::numeric, 3)::float8 AS secs \
            FROM act WHERE e > s GROUP BY 1, 2) x GROUP BY 1), \
av AS (SELECT worker_sid, range_agg(tstzrange(s, e)) AS m FROM act WHERE available AND e > s GROUP BY 1), \
cur AS (SELECT worker_sid, CASE WHEN current_activity_available THEN activity_changed_at END AS a0 \
        FROM workers WHERE worker_sid = ANY($1)) \
INSERT INTO worker_today (worker_sid, day_start, tasks_accepted, tasks_completed, handle_time, \
  wrapup_time, wrapups, reservations_rejected, reservations_timed_out, seconds_by_activity, \
  busy_open_since, busy_closed_seconds, union_closed_seconds, computed_at) \
SELECT ws.worker_sid, $2, coalesce(rc.acc, 0), coalesce(done.n, 0), coalesce(done.h, 0), \
  coalesce(done.wu, 0), coalesce(done.wn, 0), coalesce(rc.rej, 0), coalesce(rc.tmo, 0), \
  coalesce(secs.m, '{}'), rc.b0, \
  (SELECT coalesce(sum(extract(epoch from upper(x) - lower(x))), 0) \
     FROM unnest(coalesce(rc.bc, '{}') * tstzmultirange(tstzrange($2, coalesce(rc.b0, 'infinity')))) x)::float8, \
  (SELECT coalesce(sum(extract(epoch from upper(x) - lower(x))), 0) \
     FROM unnest((coalesce(rc.bc, '{}') + coalesce(av.m, '{}')) \
       * tstzmultirange(tstzrange($2, greatest($2, coalesce(least(rc.b0, cur.a0), 'infinity'))))) x)::float8, \
  now() \
FROM ws LEFT JOIN rc USING (worker_sid) LEFT JOIN done USING (worker_sid) \
  LEFT JOIN secs USING (worker_sid) LEFT JOIN av USING (worker_sid) LEFT JOIN cur USING (worker_sid) \
ON CONFLICT (worker_sid) DO UPDATE SET day_start = EXCLUDED.day_start, \
  tasks_accepted = EXCLUDED.tasks_accepted, tasks_completed = EXCLUDED.tasks_completed, \
  handle_time = EXCLUDED.handle_time, wrapup_time = EXCLUDED.wrapup_time, wrapups = EXCLUDED.wrapups, \
  reservations_rejected = EXCLUDED.reservations_rejected, \
  reservations_timed_out = EXCLUDED.reservations_timed_out, \
  seconds_by_activity = EXCLUDED.seconds_by_activity, busy_open_since = EXCLUDED.busy_open_since, \
  busy_closed_seconds = EXCLUDED.busy_closed_seconds, \
  union_closed_seconds = EXCLUDED.union_closed_seconds, computed_at = EXCLUDED.computed_at";

impl Store {
    /// Appends the workers whose day must be recomputed.
    pub(super) async fn mark_workers<C: GenericClient>(
        &self,
        tx: &C,
        workers: BTreeSet<&str>,
    ) -> Result<(), StoreError> {
        if workers.is_empty() {
            return Ok(());
        }
        let stmt = tx
            .prepare_cached("INSERT INTO worker_dirty (worker_sid) SELECT unnest($1::text[])")
            .await?;
        let v: Vec<&str> = workers.into_iter().collect();
        tx.execute(&stmt, &[&v]).await?;
        Ok(())
    }

    /// Takes up to `limit` marks and recomputes those workers' days in one transaction
    /// (under per-worker advisory locks, so two instances never write an older result
    /// over a newer one); returns how many marks it took.
    pub async fn refresh_worker_days(&self, limit: i64) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (took, workers): (usize, Vec<String>) =
            take_marks(&tx, "worker_dirty", "worker_sid", limit).await?;
        if !workers.is_empty() {
            let mut locks = Locks::default();
            for w in &workers {
                locks.exclusive("worker_today", w);
            }
            locks.take(&tx).await?;
            self.recompute_worker_days(&tx, &workers).await?;
        }
        tx.commit().await?;
        Ok(took)
    }

    async fn recompute_worker_days<C: GenericClient>(
        &self,
        tx: &C,
        workers: &[String],
    ) -> Result<(), StoreError> {
        let tz: chrono_tz::Tz = self.sla.timezone.parse().unwrap_or(chrono_tz::UTC);
        let day = crate::util::start_of_day(&tz, chrono::Utc::now());
        let stmt = tx.prepare_cached(RECOMPUTE).await?;
        tx.execute(&stmt, &[&workers, &day, &self.available_override])
            .await?;
        Ok(())
    }

    /// Marks every worker not deleted (when a new day starts, or after a rebuild).
    pub async fn mark_all_worker_days(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "INSERT INTO worker_dirty (worker_sid) SELECT worker_sid FROM workers WHERE NOT deleted",
                &[],
            )
            .await?)
    }
}
