//! Who is doing what right now, and how each worker's day went (design §5b): the
//! `/api/agents` view, and the per-worker numbers of interval reports.
//!
//! Time in activities comes from `worker_activities` (closed intervals, from
//! `worker.activity.update` and `WorkerTimeInPreviousActivityMs`) plus each worker's
//! current activity since it began; an interval that spans a window's edge (midnight, for
//! `today`) is cut there. Occupancy = time with at least one accepted task / time in an
//! available activity or with a task, as unions of intervals (a task handled during a
//! break counts once).

use crate::apply::store::StoreError;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One worker's numbers in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerWindow {
    pub tasks_accepted: i64,
    pub tasks_completed: i64,
    /// Seconds, summed over the tasks completed in the window.
    pub handle_time: i64,
    pub wrapup_time: i64,
    pub wrapups: i64,
    pub reservations_rejected: i64,
    pub reservations_timed_out: i64,
    pub seconds_by_activity: BTreeMap<String, f64>,
    pub busy_seconds: f64,
    pub busy_or_available_seconds: f64,
}

impl WorkerWindow {
    /// Busy / (available or busy), two decimals; None without either.
    pub fn occupancy(&self) -> Option<f64> {
        (self.busy_or_available_seconds > 0.0).then(|| {
            ((self.busy_seconds / self.busy_or_available_seconds).min(1.0) * 100.0).round() / 100.0
        })
    }
}

/// `$1`/`$2`: window starts and ends; `$3`/`$4`: the first start and the last end.
const WINDOWS: &str = "w AS (SELECT s, e, (i - 1)::int AS i \
    FROM unnest($1::timestamptz[], $2::timestamptz[]) WITH ORDINALITY AS w(s, e, i))";

/// Reservations accepted, rejected and timed out per worker and window. A reservation
/// lives at most a day before it is answered (TaskRouter's longest timeout), which
/// bounds the scan by creation time.
fn reservations_sql() -> String {
    format!(
        "WITH {WINDOWS} \
         SELECT r.worker_sid, w.i, \
           count(*) FILTER (WHERE r.accepted_at >= w.s AND r.accepted_at < w.e), \
           count(*) FILTER (WHERE r.rejected_at >= w.s AND r.rejected_at < w.e), \
           count(*) FILTER (WHERE r.timed_out_at >= w.s AND r.timed_out_at < w.e) \
         FROM reservations r JOIN w ON r.created_at < w.e AND r.created_at >= w.s - interval '1 day' \
         WHERE r.created_at >= $3::timestamptz - interval '1 day' AND r.created_at < $4 \
           AND r.worker_sid IS NOT NULL \
         GROUP BY 1, 2"
    )
}

/// Tasks completed per worker and window, with their handle and wrap-up times.
fn completed_sql() -> String {
    format!(
        "WITH {WINDOWS} \
         SELECT t.worker_sid, w.i, count(*), \
           coalesce(sum(t.total_time - t.answered_in), 0)::int8, \
           coalesce(sum(t.total_time - t.acw_start), 0)::int8, count(t.total_time - t.acw_start) \
         FROM tasks t JOIN w ON t.ended_at >= w.s AND t.ended_at < w.e \
         WHERE t.ended_at >= $3 AND t.ended_at < $4 AND t.task_assignment_status = 'completed' \
           AND t.worker_sid IS NOT NULL \
         GROUP BY 1, 2"
    )
}

/// Activity intervals (closed ones, then each worker's current one up to `$5`), cut to
/// the windows. `$6`: names counting as available (empty: TaskRouter's flag).
fn activity_cte() -> String {
    format!(
        "{WINDOWS}, \
         a AS (SELECT worker_sid, activity_sid, activity_name, started_at AS s, ended_at AS e \
                 FROM worker_activities WHERE ended_at > $3 AND started_at < $4 \
               UNION ALL \
               SELECT worker_sid, current_activity_sid, current_activity, activity_changed_at, $5 \
                 FROM workers WHERE NOT deleted AND activity_changed_at < least($4, $5)), \
         aw AS (SELECT a.worker_sid, w.i, a.activity_sid, a.activity_name, \
                  greatest(a.s, w.s) AS s, least(a.e, w.e) AS e \
                FROM a JOIN w ON a.s < w.e AND a.e > w.s AND a.e > a.s)"
    )
}

fn activities_sql() -> String {
    format!(
        "WITH {} \
         SELECT worker_sid, i, coalesce(activity_name, activity_sid, '(unknown)'), \
           sum(extract(epoch from e - s))::float8 \
         FROM aw GROUP BY 1, 2, 3",
        activity_cte()
    )
}

/// Busy (an accepted reservation, until it completes or its task ends) and available
/// time, as unions of intervals per worker and window.
fn occupancy_sql() -> String {
    format!(
        "WITH {}, \
         av AS (SELECT aw.worker_sid, aw.i, range_agg(tstzrange(aw.s, aw.e)) AS m FROM aw \
                WHERE CASE WHEN cardinality($6::text[]) > 0 THEN aw.activity_name = ANY($6) \
                      ELSE coalesce((SELECT x.available FROM activities x WHERE x.sid = aw.activity_sid), false) END \
                GROUP BY 1, 2), \
         b AS (SELECT r.worker_sid, r.accepted_at AS s, \
                 coalesce(r.completed_at, r.canceled_at, r.rescinded_at, r.failed_at, t.ended_at, $5) AS e \
               FROM reservations r LEFT JOIN tasks t ON t.sid = r.task_sid \
               WHERE r.accepted_at IS NOT NULL AND r.worker_sid IS NOT NULL \
                 AND r.created_at >= $3::timestamptz - interval '1 day' AND r.created_at < $4), \
         bz AS (SELECT b.worker_sid, w.i, range_agg(tstzrange(greatest(b.s, w.s), least(b.e, w.e))) AS m \
                FROM b JOIN w ON b.s < w.e AND b.e > w.s AND b.e > b.s GROUP BY 1, 2) \
         SELECT coalesce(bz.worker_sid, av.worker_sid), coalesce(bz.i, av.i), \
           (SELECT coalesce(sum(extract(epoch from upper(x) - lower(x))), 0) FROM unnest(bz.m) x)::float8, \
           (SELECT coalesce(sum(extract(epoch from upper(x) - lower(x))), 0) \
              FROM unnest(coalesce(bz.m, '{{}}'::tstzmultirange) + coalesce(av.m, '{{}}'::tstzmultirange)) x)::float8 \
         FROM bz FULL JOIN av ON av.worker_sid = bz.worker_sid AND av.i = bz.i",
        activity_cte()
    )
}

/// Every worker's numbers in each window (`[start, end)`, ends no later than `now`),
/// keyed by (worker sid, window index). Four queries, pipelined on one connection.
pub async fn windows(
    pool: &Pool,
    windows: &[(DateTime<Utc>, DateTime<Utc>)],
    now: DateTime<Utc>,
    available_override: &[String],
) -> Result<HashMap<(String, usize), WorkerWindow>, StoreError> {
    let mut out: HashMap<(String, usize), WorkerWindow> = HashMap::new();
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        return Ok(out);
    };
    let starts: Vec<DateTime<Utc>> = windows.iter().map(|w| w.0).collect();
    let ends: Vec<DateTime<Utc>> = windows.iter().map(|w| w.1).collect();
    let (lo, hi) = (first.0, last.1);
    let client = pool.get().await?;
    let sql = [
        reservations_sql(),
        completed_sql(),
        activities_sql(),
        occupancy_sql(),
    ];
    let (q1, q2, q3, q4) = tokio::try_join!(
        client.prepare_cached(&sql[0]),
        client.prepare_cached(&sql[1]),
        client.prepare_cached(&sql[2]),
        client.prepare_cached(&sql[3]),
    )?;
    let base: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&starts, &ends, &lo, &hi];
    let with_now: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&starts, &ends, &lo, &hi, &now];
    let with_override: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&starts, &ends, &lo, &hi, &now, &available_override];
    let (resv, done, acts, occ) = tokio::try_join!(
        client.query(&q1, &base),
        client.query(&q2, &base),
        client.query(&q3, &with_now),
        client.query(&q4, &with_override),
    )?;
    let key = |r: &tokio_postgres::Row| (r.get::<_, String>(0), r.get::<_, i32>(1).max(0) as usize);
    for r in &resv {
        let w = out.entry(key(r)).or_default();
        w.tasks_accepted = r.get(2);
        w.reservations_rejected = r.get(3);
        w.reservations_timed_out = r.get(4);
    }
    for r in &done {
        let w = out.entry(key(r)).or_default();
        w.tasks_completed = r.get(2);
        w.handle_time = r.get(3);
        w.wrapup_time = r.get(4);
        w.wrapups = r.get(5);
    }
    for r in &acts {
        let w = out.entry(key(r)).or_default();
        let secs: f64 = r.get(3);
        w.seconds_by_activity
            .insert(r.get(2), (secs * 1000.0).round() / 1000.0);
    }
    for r in &occ {
        let w = out.entry(key(r)).or_default();
        w.busy_seconds = r.get(2);
        w.busy_or_available_seconds = r.get(3);
    }
    Ok(out)
}

/// Seconds per activity name in the closed activity intervals (those a
/// `worker.activity.update` ended) that overlap `[from, to)`, cut at `from`, per worker
/// sid; names as in [`windows`]. Unlike `seconds_by_activity` of [`agents`] it leaves out
/// each worker's current activity, so it does not grow while nothing happens: it is what
/// `workerStats` publishes, the current activity's time being `activity_since` to now.
/// (An interval is not cut at `to` either: one that ends a little after it, by a clock
/// ahead of ours, would otherwise make the sum grow every second until it ends.)
pub async fn closed_activity_seconds(
    pool: &Pool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<HashMap<String, BTreeMap<String, f64>>, StoreError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT worker_sid, coalesce(activity_name, activity_sid, '(unknown)'), \
               sum(extract(epoch from ended_at - greatest(started_at, $1)))::float8 \
             FROM worker_activities \
             WHERE ended_at > $1 AND started_at < $2 AND ended_at > started_at \
             GROUP BY 1, 2",
        )
        .await?;
    let mut out: HashMap<String, BTreeMap<String, f64>> = HashMap::new();
    for r in client.query(&stmt, &[&from, &to]).await? {
        let secs: f64 = r.get(2);
        out.entry(r.get(0))
            .or_default()
            .insert(r.get(1), (secs * 1000.0).round() / 1000.0);
    }
    Ok(out)
}

/// Worker names by sid (deleted workers too: reports name them).
pub async fn names(pool: &Pool) -> Result<HashMap<String, String>, StoreError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT worker_sid, coalesce(worker_name, worker_sid) FROM workers")
        .await?;
    Ok(client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// An open task a worker holds (a pending reservation, or one accepted and not yet
/// completed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentTask {
    pub sid: String,
    pub channel: Option<String>,
    pub queue: Option<String>,
    pub status: Option<String>,
    pub age_seconds: Option<i64>,
    /// When the task was created (`age_seconds` is `now` minus this). Not in
    /// `/api/agents`; the `workerStats` Sync map publishes it instead of the age, which
    /// would change every second.
    #[serde(skip)]
    pub created: Option<DateTime<Utc>>,
}

/// A worker's day so far, in the configured time zone.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Today {
    pub tasks_accepted: i64,
    pub tasks_completed: i64,
    pub avg_handle_time: Option<f64>,
    pub avg_wrapup_time: Option<f64>,
    pub reservations_rejected: i64,
    pub reservations_timed_out: i64,
    pub seconds_by_activity: BTreeMap<String, f64>,
    pub occupancy: Option<f64>,
}

/// One worker in `/api/agents`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    pub sid: String,
    pub name: Option<String>,
    pub activity: Option<String>,
    pub available: Option<bool>,
    pub activity_since: Option<String>,
    pub seconds_in_activity: Option<i64>,
    pub tasks: Vec<AgentTask>,
    pub today: Today,
}

fn avg(sum: i64, n: i64) -> Option<f64> {
    (n > 0).then(|| ((sum as f64 / n as f64) * 100.0).round() / 100.0)
}

/// Every worker not deleted, by name: what it is doing now and its day so far (from
/// `day_start`, the configured zone's midnight, to `now`).
pub async fn agents(
    pool: &Pool,
    day_start: DateTime<Utc>,
    now: DateTime<Utc>,
    available_override: &[String],
) -> Result<Vec<Agent>, StoreError> {
    let client = pool.get().await?;
    let (qw, qt) = tokio::try_join!(
        client.prepare_cached(
            "SELECT worker_sid, worker_name, current_activity, current_activity_available, \
               activity_changed_at FROM workers WHERE NOT deleted ORDER BY worker_name, worker_sid"
        ),
        client.prepare_cached(
            "SELECT r.worker_sid, t.sid, t.task_channel_unique_name, t.task_queue_name, \
               t.task_assignment_status, t.task_created \
             FROM tasks t JOIN reservations r ON r.task_sid = t.sid \
             WHERE t.task_assignment_status IN ('pending', 'reserved', 'assigned', 'wrapping') \
               AND r.status IN ('pending', 'accepted', 'wrapping') AND r.worker_sid IS NOT NULL \
             ORDER BY t.task_created, t.sid"
        ),
    )?;
    let win = [(day_start, now.max(day_start))];
    let (workers, open, mut stats) = tokio::try_join!(
        async { client.query(&qw, &[]).await.map_err(StoreError::from) },
        async { client.query(&qt, &[]).await.map_err(StoreError::from) },
        windows(pool, &win, now, available_override),
    )?;
    let mut tasks: HashMap<String, Vec<AgentTask>> = HashMap::new();
    for r in &open {
        let created: Option<DateTime<Utc>> = r.get(5);
        tasks.entry(r.get(0)).or_default().push(AgentTask {
            sid: r.get(1),
            channel: r.get(2),
            queue: r.get(3),
            status: r.get(4),
            age_seconds: created.map(|c| (now - c).num_seconds().max(0)),
            created,
        });
    }
    Ok(workers
        .iter()
        .map(|r| {
            let sid: String = r.get(0);
            let since: Option<DateTime<Utc>> = r.get(4);
            let w = stats.remove(&(sid.clone(), 0)).unwrap_or_default();
            Agent {
                tasks: tasks.remove(&sid).unwrap_or_default(),
                name: r.get(1),
                activity: r.get(2),
                available: r.get(3),
                activity_since: since
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                seconds_in_activity: since.map(|t| (now - t).num_seconds().max(0)),
                today: Today {
                    tasks_accepted: w.tasks_accepted,
                    tasks_completed: w.tasks_completed,
                    avg_handle_time: avg(w.handle_time, w.tasks_completed),
                    avg_wrapup_time: avg(w.wrapup_time, w.wrapups),
                    reservations_rejected: w.reservations_rejected,
                    reservations_timed_out: w.reservations_timed_out,
                    occupancy: w.occupancy(),
                    seconds_by_activity: w.seconds_by_activity,
                },
                sid,
            }
        })
        .collect())
}
