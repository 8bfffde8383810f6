//! The live summary: computed once per `publish.schedule` tick, whatever the number of
//! consumers. The Sync publisher, the wallboard's Server-Sent Events and `/api/summary`
//! all read the same value (one computation, many viewers, no polling storm).
//!
//! The wallboard's sparklines (the last 8 hours, minute by minute) are read from
//! `tasks` by event time, at start and once a minute: events that arrive late, or a
//! history written in one go (`demo`), still show at the minutes they happened, not
//! as one spike at the minute they were applied.

use crate::apply::store::StoreError;
use crate::config::Sla;
use crate::publish::summary::{self, Summary};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Minutes of history kept for the wallboard's sparklines.
pub const HISTORY_POINTS: usize = 480;

const MINUTE_MS: i64 = 60_000;

/// One minute of history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// The end of the minute.
    pub t: String,
    /// Service level of the day (in `[sla] timezone`) up to the end of the minute, percent.
    pub service_level: Option<f64>,
    /// Tasks created during the minute.
    pub created: i64,
    /// Tasks abandoned during the minute.
    pub abandoned: i64,
    /// Tasks waiting (pending or reserved) at the end of the minute.
    pub waiting: i64,
}

pub struct Hub {
    pub latest: watch::Sender<Option<Arc<Summary>>>,
    history: Mutex<Arc<Vec<Point>>>,
    /// Each new history, whole: past minutes change too when late events arrive.
    pub histories: broadcast::Sender<Arc<Vec<Point>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            latest: watch::channel(None).0,
            history: Mutex::new(Arc::new(Vec::new())),
            histories: broadcast::channel(4).0,
        }
    }
}

impl Hub {
    pub fn history(&self) -> Arc<Vec<Point>> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the history (its last [`HISTORY_POINTS`] points) and tells the viewers.
    fn set_history(&self, mut points: Vec<Point>) {
        if points.len() > HISTORY_POINTS {
            points.drain(..points.len() - HISTORY_POINTS);
        }
        let points = Arc::new(points);
        *self.history.lock().unwrap_or_else(|p| p.into_inner()) = points.clone();
        let _ = self.histories.send(points);
    }
}

/// Per-minute event counts by kind: `c` created, `a` accepted (and within the SLA
/// threshold in the fourth column), `x` abandoned, `l` stopped waiting (accepted or
/// ended); `b`, at `$1`, the tasks waiting then. For tasks touched since `$1` or
/// waiting now; `$2` is the short-abandon threshold. Definitions as in
/// [`crate::publish::summary`].
const HISTORY_SQL: &str = "
WITH t AS (
    SELECT task_created, first_accepted_at, within_sla, canceled_at, total_time,
           task_assignment_status IN ('pending', 'reserved') AS waiting,
           greatest(task_created, least(first_accepted_at, canceled_at, ended_at)) AS left_at
    FROM tasks
    WHERE task_created IS NOT NULL
      AND (task_created >= $1 OR first_accepted_at >= $1 OR ended_at >= $1
           OR task_assignment_status IN ('pending', 'reserved'))
)
SELECT k, (extract(epoch FROM date_trunc('minute', at)) * 1000)::int8, count(*),
       count(*) FILTER (WHERE sla)
FROM (
    SELECT 'c' AS k, task_created AS at, false AS sla FROM t WHERE task_created >= $1
    UNION ALL
    SELECT 'a', first_accepted_at, coalesce(within_sla, false) FROM t WHERE first_accepted_at >= $1
    UNION ALL
    SELECT 'x', canceled_at, false FROM t
    WHERE canceled_at >= $1 AND first_accepted_at IS NULL AND coalesce(total_time, 0) >= $2
    UNION ALL
    SELECT 'l', left_at, false FROM t WHERE NOT waiting AND left_at >= $1
    UNION ALL
    SELECT 'b', $1, false FROM t WHERE task_created < $1 AND (waiting OR left_at >= $1)
) e
GROUP BY 1, 2";

/// Per-minute counts (keyed by the minute's start, epoch ms) since some instant.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Minutes {
    pub created: BTreeMap<i64, i64>,
    pub accepted: BTreeMap<i64, i64>,
    pub within: BTreeMap<i64, i64>,
    pub abandoned: BTreeMap<i64, i64>,
    /// Tasks that stopped waiting (accepted, or ended without acceptance).
    pub left: BTreeMap<i64, i64>,
    /// Tasks waiting at the start.
    pub waiting_before: i64,
}

/// The history's points: one per minute from `from` (the end of the first minute) to
/// `to` (the end of the last), both minute-aligned and after `since`, the start of
/// `minutes`. The service level is of each point's day in `tz`.
pub fn points(
    minutes: &Minutes,
    since: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: &chrono_tz::Tz,
) -> Vec<Point> {
    let at = |m: &BTreeMap<i64, i64>, k: i64| m.get(&k).copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut waiting = minutes.waiting_before;
    let (mut day, mut acc, mut within, mut abandoned) = (None, 0, 0, 0);
    let mut m = since.timestamp_millis().div_euclid(MINUTE_MS) * MINUTE_MS;
    while m + MINUTE_MS <= to.timestamp_millis() {
        let end = m + MINUTE_MS;
        let Some(end_t) = DateTime::from_timestamp_millis(end) else {
            break;
        };
        // The day the minute's end falls in: counters start again at midnight.
        let d = crate::util::start_of_day(tz, end_t - chrono::Duration::milliseconds(1));
        if day != Some(d) {
            (day, acc, within, abandoned) = (Some(d), 0, 0, 0);
        }
        acc += at(&minutes.accepted, m);
        within += at(&minutes.within, m);
        abandoned += at(&minutes.abandoned, m);
        waiting += at(&minutes.created, m) - at(&minutes.left, m);
        if end >= from.timestamp_millis() {
            let den = acc + abandoned;
            out.push(Point {
                t: end_t.to_rfc3339(),
                service_level: (den > 0)
                    .then(|| ((within as f64 / den as f64) * 10_000.0).round() / 100.0),
                created: at(&minutes.created, m),
                abandoned: at(&minutes.abandoned, m),
                waiting: waiting.max(0),
            });
        }
        m = end;
    }
    out
}

/// The last [`HISTORY_POINTS`] whole minutes before `now`, from the database.
pub async fn history(pool: &Pool, sla: &Sla, now: DateTime<Utc>) -> Result<Vec<Point>, StoreError> {
    let tz: chrono_tz::Tz = sla.timezone.parse().unwrap_or(chrono_tz::UTC);
    let to_ms = now.timestamp_millis().div_euclid(MINUTE_MS) * MINUTE_MS;
    let to = DateTime::from_timestamp_millis(to_ms).unwrap_or(now);
    let from = to - chrono::Duration::minutes(HISTORY_POINTS as i64 - 1);
    // From the start of the first point's day, for its service level of the day.
    let since = crate::util::start_of_day(&tz, from - chrono::Duration::minutes(1));
    let short = sla.short_abandon_seconds as i32;
    let client = pool.get().await?;
    let rows = client.query(HISTORY_SQL, &[&since, &short]).await?;
    let mut m = Minutes::default();
    for r in &rows {
        let (kind, minute, n, sla): (&str, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let map = match kind {
            "c" => &mut m.created,
            "a" => {
                *m.within.entry(minute).or_default() += sla;
                &mut m.accepted
            }
            "x" => &mut m.abandoned,
            "l" => &mut m.left,
            _ => {
                m.waiting_before += n;
                continue;
            }
        };
        *map.entry(minute).or_default() += n;
    }
    Ok(points(&m, since, from, to, &tz))
}

/// Computes the summary on every tick of `schedule` until `stop`, and the history at
/// the first tick and at each new minute.
pub async fn run(
    hub: Arc<Hub>,
    pool: Pool,
    sla: Sla,
    schedule: cron::Schedule,
    stop: CancellationToken,
) {
    let mut last_minute: Option<i64> = None;
    loop {
        let wait = crate::schedule::until_next_tick(&schedule);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        let now = Utc::now();
        let s = match summary::compute(&pool, &sla, now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot compute summaries");
                continue;
            }
        };
        let minute = now.timestamp() / 60;
        if last_minute != Some(minute) {
            match history(&pool, &sla, now).await {
                Ok(points) => {
                    last_minute = Some(minute);
                    hub.set_history(points);
                }
                Err(e) => tracing::debug!(error = %e, "cannot compute the history"),
            }
        }
        hub.latest.send_replace(Some(Arc::new(s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: usize) -> Point {
        Point {
            t: t.to_string(),
            service_level: None,
            created: 0,
            abandoned: 0,
            waiting: 0,
        }
    }

    #[test]
    fn history_is_bounded() {
        let hub = Hub::default();
        hub.set_history((0..(HISTORY_POINTS + 20)).map(point).collect());
        let h = hub.history();
        assert_eq!(h.len(), HISTORY_POINTS);
        assert_eq!(h[0].t, "20");
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ms(s: &str) -> i64 {
        at(s).timestamp_millis()
    }

    /// Counts land at the minute of their event; waiting carries over from minute to
    /// minute; the service level is of the day, and starts again at midnight.
    #[test]
    fn points_follow_event_time() {
        let mut m = Minutes {
            waiting_before: 2,
            ..Minutes::default()
        };
        m.created.insert(ms("2026-01-01T23:58:00Z"), 3);
        m.left.insert(ms("2026-01-01T23:58:00Z"), 1);
        m.accepted.insert(ms("2026-01-01T23:58:00Z"), 2);
        m.within.insert(ms("2026-01-01T23:58:00Z"), 1);
        m.left.insert(ms("2026-01-01T23:59:00Z"), 2);
        m.abandoned.insert(ms("2026-01-01T23:59:00Z"), 1);
        m.accepted.insert(ms("2026-01-02T00:01:00Z"), 1);
        m.within.insert(ms("2026-01-02T00:01:00Z"), 1);
        let p = points(
            &m,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T23:58:00Z"),
            at("2026-01-02T00:02:00Z"),
            &chrono_tz::UTC,
        );
        let got: Vec<(&str, Option<f64>, i64, i64, i64)> = p
            .iter()
            .map(|p| {
                (
                    &p.t[11..16],
                    p.service_level,
                    p.created,
                    p.abandoned,
                    p.waiting,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("23:58", None, 0, 0, 2),
                ("23:59", Some(50.0), 3, 0, 4),
                ("00:00", Some(33.33), 0, 1, 2),
                ("00:01", None, 0, 0, 2),
                ("00:02", Some(100.0), 0, 0, 2),
            ]
        );
    }
}
