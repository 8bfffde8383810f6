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
    /// Today's time in the activities the worker has left (the current one excluded):
    /// what does not grow by itself, for `workerStats`. Not in `/api/agents`.
    #[serde(skip)]
    pub closed_seconds_by_activity: BTreeMap<String, f64>,
}

fn avg(sum: i64, n: i64) -> Option<f64> {
    (n > 0).then(|| ((sum as f64 / n as f64) * 100.0).round() / 100.0)
}

/// A `worker_today` row: the day as of its last recompute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayRow {
    pub day_start: Option<DateTime<Utc>>,
    pub counts: WorkerWindow,
    pub busy_open_since: Option<DateTime<Utc>>,
    pub busy_closed_seconds: f64,
    pub union_closed_seconds: f64,
}

/// The worker's current activity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Current {
    pub name: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub available: bool,
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds().max(0)) as f64 / 1000.0
}

/// A worker's day from `day_start` to `now`: the stored day (when it is today's) plus
/// what is still open, run on to `now`. A row of an earlier day counts nothing closed:
/// everything it holds ended before today began.
pub fn today(row: &DayRow, cur: &Current, day_start: DateTime<Utc>, now: DateTime<Utc>) -> Today {
    let w = match row.day_start {
        Some(d) if d == day_start => row.clone(),
        _ => DayRow {
            busy_open_since: row.busy_open_since,
            ..DayRow::default()
        },
    };
    let mut by_activity = w.counts.seconds_by_activity.clone();
    if let Some(since) = cur.since {
        let open = secs(since.max(day_start), now);
        let name = cur.name.clone().unwrap_or_else(|| "(unknown)".into());
        if open > 0.0 || by_activity.contains_key(&name) {
            let v = by_activity.entry(name).or_default();
            *v = ((*v + open) * 1000.0).round() / 1000.0;
        }
    }
    let open_busy = w.busy_open_since.map(|b| secs(b.max(day_start), now));
    let busy = w.busy_closed_seconds + open_busy.unwrap_or(0.0);
    let open_avail = cur.since.filter(|_| cur.available);
    let m = match (w.busy_open_since, open_avail) {
        (Some(b), Some(a)) => Some(b.min(a)),
        (b, a) => b.or(a),
    };
    let union = w.union_closed_seconds + m.map(|m| secs(m.max(day_start), now)).unwrap_or(0.0);
    let c = &w.counts;
    Today {
        tasks_accepted: c.tasks_accepted,
        tasks_completed: c.tasks_completed,
        avg_handle_time: avg(c.handle_time, c.tasks_completed),
        avg_wrapup_time: avg(c.wrapup_time, c.wrapups),
        reservations_rejected: c.reservations_rejected,
        reservations_timed_out: c.reservations_timed_out,
        seconds_by_activity: by_activity,
        occupancy: WorkerWindow {
            busy_seconds: busy,
            busy_or_available_seconds: union,
            ..WorkerWindow::default()
        }
        .occupancy(),
    }
}

/// Every worker not deleted, by name: what it is doing now and its day so far (from
/// `day_start`, the configured zone's midnight, to `now`). Reads one precomputed row per
/// worker (about a second behind the events; see `apply::store::worker_days`).
pub async fn agents(
    pool: &Pool,
    day_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Agent>, StoreError> {
    let client = pool.get().await?;
    let (qw, qt) = tokio::try_join!(
        client.prepare_cached(
            "SELECT w.worker_sid, w.worker_name, w.current_activity, w.current_activity_available, \
               w.activity_changed_at, d.day_start, d.tasks_accepted, d.tasks_completed, d.handle_time, \
               d.wrapup_time, d.wrapups, d.reservations_rejected, d.reservations_timed_out, \
               d.seconds_by_activity, d.busy_open_since, d.busy_closed_seconds, d.union_closed_seconds \
             FROM workers w LEFT JOIN worker_today d ON d.worker_sid = w.worker_sid \
             WHERE NOT w.deleted ORDER BY w.worker_name, w.worker_sid"
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
    let (workers, open) = tokio::try_join!(client.query(&qw, &[]), client.query(&qt, &[]))?;
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
            let int = |i: usize| r.get::<_, Option<i32>>(i).map(i64::from).unwrap_or(0);
            let long = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0);
            let by_activity: BTreeMap<String, f64> = r
                .get::<_, Option<serde_json::Value>>(13)
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let row = DayRow {
                day_start: r.get(5),
                counts: WorkerWindow {
                    tasks_accepted: int(6),
                    tasks_completed: int(7),
                    handle_time: long(8),
                    wrapup_time: long(9),
                    wrapups: int(10),
                    reservations_rejected: int(11),
                    reservations_timed_out: int(12),
                    seconds_by_activity: by_activity,
                    ..WorkerWindow::default()
                },
                busy_open_since: r.get(14),
                busy_closed_seconds: r.get::<_, Option<f64>>(15).unwrap_or(0.0),
                union_closed_seconds: r.get::<_, Option<f64>>(16).unwrap_or(0.0),
            };
            let cur = Current {
                name: r.get(2),
                since,
                available: r.get::<_, Option<bool>>(3).unwrap_or(false),
            };
            Agent {
                tasks: tasks.remove(&sid).unwrap_or_default(),
                name: r.get(1),
                activity: r.get(2),
                available: r.get(3),
                activity_since: since
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                seconds_in_activity: since.map(|t| (now - t).num_seconds().max(0)),
                closed_seconds_by_activity: match row.day_start {
                    Some(d) if d == day_start => row.counts.seconds_by_activity.clone(),
                    _ => BTreeMap::new(),
                },
                today: today(&row, &cur, day_start, now),
                sid,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_open_stretch_runs_on_to_now_and_is_counted_once() {
        let day = t("2026-12-01T00:00:00Z");
        let now = t("2026-12-01T10:00:00Z");
        let row = DayRow {
            day_start: Some(day),
            counts: WorkerWindow {
                seconds_by_activity: [("Available".to_owned(), 3600.0)].into(),
                ..WorkerWindow::default()
            },
            // A task accepted at 09:30 is still open; 20 min of finished tasks before it.
            busy_open_since: Some(t("2026-12-01T09:30:00Z")),
            busy_closed_seconds: 1200.0,
            // Finished busy-or-available time before 09:00 (the current activity began).
            union_closed_seconds: 3600.0,
        };
        let cur = Current {
            name: Some("Available".into()),
            since: Some(t("2026-12-01T09:00:00Z")),
            available: true,
        };
        let d = today(&row, &cur, day, now);
        assert_eq!(d.seconds_by_activity["Available"], 7200.0);
        // busy 1200 + 1800 open; union 3600 + 3600 since 09:00.
        assert_eq!(d.occupancy, Some(0.42));
    }

    #[test]
    fn a_row_of_yesterday_counts_only_what_is_still_open() {
        let day = t("2026-12-01T00:00:00Z");
        let now = t("2026-12-01T00:30:00Z");
        let row = DayRow {
            day_start: Some(t("2026-11-30T00:00:00Z")),
            counts: WorkerWindow {
                tasks_completed: 30,
                seconds_by_activity: [("Break".to_owned(), 900.0)].into(),
                ..WorkerWindow::default()
            },
            busy_open_since: Some(t("2026-11-30T23:50:00Z")),
            busy_closed_seconds: 20000.0,
            union_closed_seconds: 30000.0,
        };
        let cur = Current {
            name: Some("Available".into()),
            since: Some(t("2026-11-30T22:00:00Z")),
            available: true,
        };
        let d = today(&row, &cur, day, now);
        assert_eq!(d.tasks_completed, 0);
        assert_eq!(d.seconds_by_activity.len(), 1);
        assert_eq!(
            d.seconds_by_activity["Available"], 1800.0,
            "cut at midnight"
        );
        assert_eq!(d.occupancy, Some(1.0));
    }

    #[test]
    fn no_time_known_means_no_occupancy() {
        let day = t("2026-12-01T00:00:00Z");
        let d = today(&DayRow::default(), &Current::default(), day, day);
        assert_eq!(d.occupancy, None);
        assert!(d.seconds_by_activity.is_empty());
    }
}
