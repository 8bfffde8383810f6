//! Interval reports (design §5b): per queue, channel or the whole workspace, from the
//! rollups of tasks by creation time; per worker, from reservations, tasks and activity
//! intervals. Intervals are aligned in the configured time zone; every task counts in
//! the interval in which it was created (arrival-based, as staffing models need).
//!
//! The interval boundaries are computed here, once, with the time-zone database
//! ([`starts`]); SQL only sums 15-minute buckets into them, so a DST day has 23 or 25
//! hourly rows and a +05:45 zone's hours start at :15 UTC, as its planners expect.

use crate::apply::store::StoreError;
use crate::publish::agents::{self, WorkerWindow};
use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The longest range one report may cover.
pub const MAX_RANGE_DAYS: i64 = 400;

/// The interval length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Minutes(i64),
    Day,
}

impl std::str::FromStr for Step {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Step, ReportError> {
        match s {
            "15m" => Ok(Step::Minutes(15)),
            "30m" => Ok(Step::Minutes(30)),
            "60m" | "1h" => Ok(Step::Minutes(60)),
            "1d" => Ok(Step::Day),
            _ => Err(ReportError::Param {
                name: "interval",
                why: format!("{s:?} is not one of 15m, 30m, 60m, 1d"),
            }),
        }
    }
}

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Workspace,
    Queue,
    Channel,
    Worker,
}

impl std::str::FromStr for By {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<By, ReportError> {
        match s {
            "workspace" => Ok(By::Workspace),
            "queue" => Ok(By::Queue),
            "channel" => Ok(By::Channel),
            "worker" => Ok(By::Worker),
            _ => Err(ReportError::Param {
                name: "by",
                why: format!("{s:?} is not one of workspace, queue, channel, worker"),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A request parameter is missing or wrong (an HTTP 400).
    #[error("{name}: {why}")]
    Param { name: &'static str, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for ReportError {
    fn from(e: tokio_postgres::Error) -> Self {
        ReportError::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for ReportError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ReportError::Store(e.into())
    }
}

/// A validated report request.
#[derive(Debug, Clone)]
pub struct Request {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step: Step,
    pub by: By,
}

/// Parses an instant: RFC 3339 (`2026-12-01T08:00:00Z`, with any offset), or a local
/// date or date-time in `tz` (`2026-12-01`, `2026-12-01T08:00`).
pub fn parse_instant(s: &str, tz: &Tz) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .ok()?;
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

impl Request {
    /// Validates raw parameters; each error names its parameter.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        interval: Option<&str>,
        by: Option<&str>,
        tz: &Tz,
    ) -> Result<Request, ReportError> {
        let instant = |name: &'static str, v: Option<&str>| {
            let v = v.ok_or(ReportError::Param {
                name,
                why: "missing (an ISO 8601 instant, e.g. 2026-12-01T00:00:00Z)".into(),
            })?;
            parse_instant(v, tz).ok_or_else(|| ReportError::Param {
                name,
                why: format!("{v:?} is not an ISO 8601 date or instant"),
            })
        };
        let from = instant("from", from)?;
        let to = instant("to", to)?;
        if to <= from {
            return Err(ReportError::Param {
                name: "to",
                why: "must be after from".into(),
            });
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(ReportError::Param {
                name: "to",
                why: format!("the range is limited to {MAX_RANGE_DAYS} days"),
            });
        }
        Ok(Request {
            from,
            to,
            step: interval.unwrap_or("30m").parse()?,
            by: by.unwrap_or("queue").parse()?,
        })
    }
}

/// The start of the interval holding `t`, aligned in `tz`.
pub fn align(t: DateTime<Utc>, step: Step, tz: &Tz) -> DateTime<Utc> {
    match step {
        Step::Day => crate::util::start_of_day(tz, t),
        Step::Minutes(m) => {
            use chrono::Offset;
            let offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
            let off_ms = i64::from(offset.local_minus_utc()) * 1000;
            let local_ms = t.timestamp_millis() + off_ms;
            let start = local_ms - local_ms.rem_euclid(m * 60_000) - off_ms;
            DateTime::from_timestamp_millis(start).unwrap_or(t)
        }
    }
}

/// The starts of the intervals that meet `[from, to)`, then the end of the last one.
pub fn starts(from: DateTime<Utc>, to: DateTime<Utc>, step: Step, tz: &Tz) -> Vec<DateTime<Utc>> {
    let mut out = vec![align(from, step, tz)];
    loop {
        let last = out[out.len() - 1];
        let next = match step {
            // A local day is 23 to 25 hours: 30 hours on is always in the next one.
            Step::Day => align(last + Duration::hours(30), step, tz),
            Step::Minutes(m) => align(last + Duration::minutes(m), step, tz),
        };
        // Never loop on a zone rule that maps back (defensive: a step always advances).
        let next = if next <= last {
            last + Duration::minutes(15)
        } else {
            next
        };
        out.push(next);
        if next >= to {
            return out;
        }
    }
}

/// One row of a queue, channel or workspace report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TaskRow {
    pub interval_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub tasks_created: i64,
    pub tasks_accepted: i64,
    pub tasks_accepted_within_sla: i64,
    pub tasks_abandoned: i64,
    pub tasks_short_abandoned: i64,
    pub tasks_completed: i64,
    pub service_level: Option<f64>,
    pub avg_speed_of_answer: Option<f64>,
    pub avg_handle_time: Option<f64>,
    pub avg_wrapup_time: Option<f64>,
    pub max_wait: Option<i64>,
}

/// One row of a worker report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WorkerRow {
    pub interval_start: String,
    pub worker: String,
    pub tasks_accepted: i64,
    pub tasks_completed: i64,
    /// Seconds, over the tasks completed in the interval.
    pub handle_time: i64,
    pub wrapup_time: i64,
    pub seconds_by_activity: BTreeMap<String, f64>,
    pub occupancy: Option<f64>,
}

/// A report: rows of one kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    Tasks(Vec<TaskRow>),
    Workers(Vec<WorkerRow>),
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Tasks(r) => r.len(),
            Rows::Workers(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as a JSON array.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Rows::Tasks(r) => serde_json::to_string(r),
            Rows::Workers(r) => serde_json::to_string(r),
        }
    }

    /// The rows as CSV with a header row of the JSON field names; `seconds_by_activity`
    /// is one cell holding a JSON object.
    pub fn to_csv(&self, by: By, header: bool) -> Result<Vec<u8>, csv::Error> {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        match self {
            Rows::Tasks(rows) => {
                if header {
                    let key = match by {
                        By::Queue => Some("queue"),
                        By::Channel => Some("channel"),
                        _ => None,
                    };
                    let mut h = vec!["interval_start"];
                    h.extend(key);
                    h.extend(TASK_FIELDS);
                    w.write_record(&h)?;
                }
                for r in rows {
                    let mut rec = vec![r.interval_start.clone()];
                    rec.extend(r.queue.clone().or_else(|| r.channel.clone()));
                    let n = |v: i64| v.to_string();
                    let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
                    rec.extend([
                        n(r.tasks_created),
                        n(r.tasks_accepted),
                        n(r.tasks_accepted_within_sla),
                        n(r.tasks_abandoned),
                        n(r.tasks_short_abandoned),
                        n(r.tasks_completed),
                        f(r.service_level),
                        f(r.avg_speed_of_answer),
                        f(r.avg_handle_time),
                        f(r.avg_wrapup_time),
                        r.max_wait.map(n).unwrap_or_default(),
                    ]);
                    w.write_record(&rec)?;
                }
            }
            Rows::Workers(rows) => {
                if header {
                    w.write_record(WORKER_FIELDS)?;
                }
                for r in rows {
                    w.write_record([
                        r.interval_start.clone(),
                        r.worker.clone(),
                        r.tasks_accepted.to_string(),
                        r.tasks_completed.to_string(),
                        r.handle_time.to_string(),
                        r.wrapup_time.to_string(),
                        serde_json::to_string(&r.seconds_by_activity).unwrap_or_default(),
                        r.occupancy.map(|x| x.to_string()).unwrap_or_default(),
                    ])?;
                }
            }
        }
        w.into_inner().map_err(|e| e.into_error().into())
    }
}

const TASK_FIELDS: [&str; 11] = [
    "tasks_created",
    "tasks_accepted",
    "tasks_accepted_within_sla",
    "tasks_abandoned",
    "tasks_short_abandoned",
    "tasks_completed",
    "service_level",
    "avg_speed_of_answer",
    "avg_handle_time",
    "avg_wrapup_time",
    "max_wait",
];

const WORKER_FIELDS: [&str; 8] = [
    "interval_start",
    "worker",
    "tasks_accepted",
    "tasks_completed",
    "handle_time",
    "wrapup_time",
    "seconds_by_activity",
    "occupancy",
];

/// What a report needs besides the request.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tz: Tz,
    /// Activity names that count as available (empty: TaskRouter's own flag).
    pub available_override: Vec<String>,
}

impl Settings {
    pub fn from_config(cfg: &crate::config::Config) -> Settings {
        Settings {
            // Validated at load time; UTC only for a config built by hand.
            tz: cfg.sla.timezone.parse().unwrap_or(chrono_tz::UTC),
            available_override: cfg.taskrouter.available_activities.clone(),
        }
    }
}

fn iso(t: DateTime<Utc>, tz: &Tz) -> String {
    t.with_timezone(tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ratio(num: i64, den: i64) -> Option<f64> {
    (den > 0).then(|| ((num as f64 / den as f64) * 100.0).round() / 100.0)
}

/// Runs a report in one pass. Intervals after `now` are not listed; the current one
/// counts up to `now`.
pub async fn run(
    pool: &Pool,
    s: &Settings,
    req: &Request,
    now: DateTime<Utc>,
) -> Result<Rows, ReportError> {
    run_chunked(pool, s, req, now, usize::MAX, &mut |_, _| {}).await
}

/// Runs a report `chunk` intervals per query, calling `progress(done, total)` (in
/// intervals) after each: the same rows as [`run`], for long ranges on a terminal.
pub async fn run_chunked(
    pool: &Pool,
    s: &Settings,
    req: &Request,
    now: DateTime<Utc>,
    chunk: usize,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Rows, ReportError> {
    let mut bounds = starts(req.from, req.to.min(now.max(req.from)), req.step, &s.tz);
    // The last bound ends the last interval; keep intervals that started before now.
    while bounds.len() > 2 && bounds[bounds.len() - 2] >= now {
        bounds.pop();
    }
    let total = bounds.len() - 1;
    let chunk = chunk.max(1);
    match req.by {
        By::Worker => {
            let mut stats = HashMap::new();
            let mut done = 0;
            while done < total {
                let end = (done + chunk).min(total);
                let part = worker_windows(pool, s, &bounds[done..=end], now).await?;
                stats.extend(part.into_iter().map(|((w, i), v)| ((w, i + done), v)));
                done = end;
                progress(done, total);
            }
            worker_rows(pool, s, &bounds, stats)
                .await
                .map(Rows::Workers)
        }
        by => {
            let mut sums = Sparse::default();
            let mut done = 0;
            while done < total {
                let end = (done + chunk).min(total);
                task_sums(pool, by, &bounds[done..=end], done, &mut sums).await?;
                done = end;
                progress(done, total);
            }
            Ok(Rows::Tasks(task_rows(s, by, &bounds, sums)))
        }
    }
}

#[derive(Default, Clone)]
struct Sums {
    created: i64,
    accepted: i64,
    within: i64,
    abandoned: i64,
    short: i64,
    completed: i64,
    answered_in: i64,
    handle: i64,
    wrapup: i64,
    wrapup_n: i64,
    max_wait: Option<i64>,
}

/// Sums per (interval index, key), and the queue names seen.
#[derive(Default)]
struct Sparse {
    names: BTreeMap<String, String>,
    sums: BTreeMap<(usize, String), Sums>,
}

/// Adds the rollups of the intervals `bounds` delimits (the first being interval
/// number `offset`) to `out`.
async fn task_sums(
    pool: &Pool,
    by: By,
    bounds: &[DateTime<Utc>],
    offset: usize,
    out: &mut Sparse,
) -> Result<(), ReportError> {
    let key = match by {
        By::Queue => "task_queue_sid",
        By::Channel => "channel",
        _ => "''",
    };
    let sql = format!(
        "SELECT width_bucket(bucket, $1::timestamptz[]) - 1, {key}, max(task_queue_name), \
         sum(tasks_created)::int8, sum(tasks_accepted)::int8, sum(tasks_accepted_within_sla)::int8, \
         sum(tasks_abandoned)::int8, sum(tasks_short_abandoned)::int8, sum(tasks_completed)::int8, \
         sum(answered_in_sum)::int8, sum(handle_time_sum)::int8, sum(wrapup_time_sum)::int8, \
         sum(wrapup_count)::int8, max(max_wait)::int8 \
         FROM task_rollups WHERE bucket >= $2 AND bucket < $3 GROUP BY 1, 2"
    );
    let client = pool.get().await?;
    let stmt = client.prepare_cached(&sql).await?;
    let (first, last) = (bounds[0], bounds[bounds.len() - 1]);
    let rows = client.query(&stmt, &[&bounds, &first, &last]).await?;
    for r in rows {
        let i: i32 = r.get(0);
        let k: String = r.get(1);
        if let Some(n) = r.get::<_, Option<String>>(2) {
            out.names.insert(k.clone(), n);
        }
        let v = |c: usize| r.get::<_, Option<i64>>(c).unwrap_or(0);
        out.sums.insert(
            (i.max(0) as usize + offset, k),
            Sums {
                created: v(3),
                accepted: v(4),
                within: v(5),
                abandoned: v(6),
                short: v(7),
                completed: v(8),
                answered_in: v(9),
                handle: v(10),
                wrapup: v(11),
                wrapup_n: v(12),
                max_wait: r.get(13),
            },
        );
    }
    Ok(())
}

fn task_rows(s: &Settings, by: By, bounds: &[DateTime<Utc>], sparse: Sparse) -> Vec<TaskRow> {
    let Sparse { names, sums } = sparse;
    // Every interval is listed for every key seen in the range: an interval without
    // tasks is a zero a planner needs, not a gap.
    let keys: BTreeSet<String> = match by {
        By::Workspace => [String::new()].into(),
        _ => sums.keys().map(|(_, k)| k.clone()).collect(),
    };
    let mut out = Vec::with_capacity(keys.len() * (bounds.len() - 1));
    for (i, start) in bounds[..bounds.len() - 1].iter().enumerate() {
        for k in &keys {
            let m = sums.get(&(i, k.clone())).cloned().unwrap_or_default();
            let label = || {
                if k.is_empty() {
                    "(unknown)".to_owned()
                } else {
                    names.get(k).cloned().unwrap_or_else(|| k.clone())
                }
            };
            out.push(TaskRow {
                interval_start: iso(*start, &s.tz),
                queue: (by == By::Queue).then(label),
                channel: (by == By::Channel).then(label),
                tasks_created: m.created,
                tasks_accepted: m.accepted,
                tasks_accepted_within_sla: m.within,
                tasks_abandoned: m.abandoned,
                tasks_short_abandoned: m.short,
                tasks_completed: m.completed,
                service_level: ratio(m.within * 100, m.accepted + m.abandoned),
                avg_speed_of_answer: ratio(m.answered_in, m.accepted),
                avg_handle_time: ratio(m.handle, m.completed),
                avg_wrapup_time: ratio(m.wrapup, m.wrapup_n),
                max_wait: m.max_wait,
            });
        }
    }
    out
}

/// Every worker's numbers in the intervals `bounds` delimits (cut at `now`).
async fn worker_windows(
    pool: &Pool,
    s: &Settings,
    bounds: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<HashMap<(String, usize), WorkerWindow>, ReportError> {
    let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = bounds
        .windows(2)
        .map(|w| (w[0], w[1].min(now).max(w[0])))
        .collect();
    Ok(agents::windows(pool, &windows, now, &s.available_override).await?)
}

async fn worker_rows(
    pool: &Pool,
    s: &Settings,
    bounds: &[DateTime<Utc>],
    stats: HashMap<(String, usize), WorkerWindow>,
) -> Result<Vec<WorkerRow>, ReportError> {
    let names = agents::names(pool).await?;
    let mut workers: BTreeSet<(String, String)> = BTreeSet::new();
    for (sid, _) in stats.keys() {
        let name = names.get(sid).cloned().unwrap_or_else(|| sid.clone());
        workers.insert((name, sid.clone()));
    }
    let mut out = Vec::new();
    for (i, start) in bounds[..bounds.len() - 1].iter().enumerate() {
        for (name, sid) in &workers {
            let w: WorkerWindow = stats.get(&(sid.clone(), i)).cloned().unwrap_or_default();
            out.push(WorkerRow {
                interval_start: iso(*start, &s.tz),
                worker: name.clone(),
                tasks_accepted: w.tasks_accepted,
                tasks_completed: w.tasks_completed,
                handle_time: w.handle_time,
                wrapup_time: w.wrapup_time,
                occupancy: w.occupancy(),
                seconds_by_activity: w.seconds_by_activity,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn half_hours_align_in_a_quarter_hour_zone() {
        let tz: Tz = "Asia/Kathmandu".parse().expect("zone"); // +05:45
        let t = utc("2026-12-01T03:20:00Z"); // 09:05 local
        assert_eq!(
            align(t, Step::Minutes(30), &tz),
            utc("2026-12-01T03:15:00Z")
        );
        assert_eq!(
            align(t, Step::Minutes(60), &tz),
            utc("2026-12-01T03:15:00Z")
        );
        assert_eq!(align(t, Step::Day, &tz), utc("2026-11-30T18:15:00Z"));
    }

    #[test]
    fn a_fall_back_day_has_25_hours_and_distinct_repeated_hours() {
        let tz: Tz = "America/New_York".parse().expect("zone");
        let day = utc("2026-11-01T04:00:00Z"); // local midnight, EDT
        let b = starts(day, day + Duration::hours(25), Step::Minutes(60), &tz);
        assert_eq!(b.len(), 26, "25 hourly intervals and the end");
        // 01:00 EDT and 01:00 EST are two intervals, an hour apart.
        assert_eq!(b[1], utc("2026-11-01T05:00:00Z"));
        assert_eq!(b[2], utc("2026-11-01T06:00:00Z"));
        let days = starts(day, day + Duration::hours(25), Step::Day, &tz);
        assert_eq!(days, vec![day, utc("2026-11-02T05:00:00Z")]);
    }

    #[test]
    fn a_spring_forward_day_has_23_hours() {
        let tz: Tz = "Europe/Paris".parse().expect("zone");
        let day = utc("2026-03-28T23:00:00Z"); // 2026-03-29 00:00 CET
        let b = starts(day, day + Duration::hours(23), Step::Minutes(60), &tz);
        assert_eq!(b.len(), 24);
        let next = starts(day, day + Duration::hours(1), Step::Day, &tz);
        assert_eq!(
            next[1],
            utc("2026-03-29T22:00:00Z"),
            "next local midnight, CEST"
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let tz = Tz::UTC;
        let err = |f, t, i, b| match Request::parse(f, t, i, b, &tz) {
            Err(ReportError::Param { name, .. }) => name,
            other => panic!("expected a parameter error, got {other:?}"),
        };
        let (f, t) = (Some("2026-12-01"), Some("2026-12-02"));
        assert_eq!(err(None, t, None, None), "from");
        assert_eq!(err(Some("yesterday"), t, None, None), "from");
        assert_eq!(err(f, Some("2026-13-01"), None, None), "to");
        assert_eq!(err(t, f, None, None), "to");
        assert_eq!(
            err(Some("2025-01-01"), Some("2026-12-01"), None, None),
            "to"
        );
        assert_eq!(err(f, t, Some("5m"), None), "interval");
        assert_eq!(err(f, t, None, Some("team")), "by");
        let ok = Request::parse(
            f,
            Some("2026-12-01T12:30:00+01:00"),
            Some("1d"),
            Some("worker"),
            &tz,
        )
        .expect("valid");
        assert_eq!(ok.to, utc("2026-12-01T11:30:00Z"));
        assert_eq!((ok.step, ok.by), (Step::Day, By::Worker));
    }

    #[test]
    fn csv_has_the_json_field_names() {
        let rows = Rows::Tasks(vec![TaskRow {
            interval_start: "2026-12-01T00:00:00Z".into(),
            queue: Some("Sales, EMEA".into()),
            tasks_created: 3,
            service_level: Some(66.67),
            ..TaskRow::default()
        }]);
        let csv = String::from_utf8(rows.to_csv(By::Queue, true).expect("csv")).expect("utf8");
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("interval_start,queue,tasks_created,tasks_accepted,tasks_accepted_within_sla,tasks_abandoned,tasks_short_abandoned,tasks_completed,service_level,avg_speed_of_answer,avg_handle_time,avg_wrapup_time,max_wait")
        );
        assert_eq!(
            lines.next(),
            Some("2026-12-01T00:00:00Z,\"Sales, EMEA\",3,0,0,0,0,0,66.67,,,,")
        );
        let json: serde_json::Value =
            serde_json::from_str(&rows.to_json().expect("json")).expect("parse");
        let keys: Vec<&String> = json[0].as_object().expect("object").keys().collect();
        assert_eq!(keys.len(), 13);
    }
}
