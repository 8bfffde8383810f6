//! User-defined jobs: a team's own SQL over the summary tables, published to a Sync
//! document, map or list on a cron schedule, without recompiling.
//!
//! Safety: each run is a read-only transaction with a statement timeout and a row
//! limit; every job runs in its own task, so a slow job delays nothing else; a failing
//! run logs its error and leaves the last good result published. Results are JSON with
//! Postgres' own types (numbers stay numbers, timestamps ISO-8601, NULL is null).
//! Write discipline is the built-in publisher's: only changes, at most once a second per
//! object, a bounded number of writes per container per tick; with a TTL, unchanged
//! objects are renewed. Sizes: a map key over 320 characters is cut (with a hash, see
//! [`crate::publish::sync_size`]); a document, map item or list item over 16 KiB is published
//! without its largest fields (for a `rows` document: without its largest rows), which
//! the job's status reports as `last_warning`.
//! Like the built-in summaries, only the instance holding the publisher lock publishes.

use crate::apply::store::StoreError;
use crate::config::{Config, DocShape, Job, JobTarget};
use crate::metrics::Metrics;
use crate::publish::sync_size::{self, fit, OversizeLog};
use crate::publish::{ListState, SyncWriter, Tracker, MAX_DATA_BYTES};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;

/// Each variant's Display says its cause and none has a `source()` (see `StoreError`).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("query returned more than {0} rows (max_rows)")]
    TooManyRows(usize),
    #[error("query ran past its timeout of {0} ms and was cancelled")]
    Timeout(u64),
    #[error("{0}")]
    Shape(String),
    #[error("Sync: {0}")]
    Sync(crate::twilio::TwilioError),
}

impl From<crate::twilio::TwilioError> for JobError {
    fn from(e: crate::twilio::TwilioError) -> Self {
        JobError::Sync(e)
    }
}

impl From<tokio_postgres::Error> for JobError {
    fn from(e: tokio_postgres::Error) -> Self {
        JobError::Store(e.into())
    }
}

use crate::config::job_sql::bind_named;

/// The statement a job runs: its query as rows of JSON, one more than the limit so that
/// an overflow is detected rather than silently cut.
pub fn wrapped_sql(job: &Job) -> Result<(String, Vec<&'static str>), String> {
    let (inner, names) = bind_named(job.sql.trim().trim_end_matches(';'))?;
    Ok((
        format!(
            "SELECT to_jsonb(j) FROM ({inner}\n) j LIMIT {}",
            job.max_rows + 1
        ),
        names,
    ))
}

enum Param {
    Text(String),
    Time(chrono::DateTime<chrono::Utc>),
    Int(i32),
}

/// The values of the named parameters jobs may use (see [`crate::config::job_sql::PARAMS`]).
#[derive(Debug, Clone)]
pub struct Params {
    pub workspace_sid: String,
    pub account_sid: String,
    /// IANA name; an unknown one is taken as UTC for `:today_start`.
    pub timezone: String,
    pub sla_threshold_seconds: i64,
    pub short_abandon_seconds: i64,
}

impl Params {
    pub fn from_config(cfg: &Config) -> Params {
        Params {
            workspace_sid: cfg.twilio.workspace_sid.clone(),
            account_sid: cfg.twilio.account_sid.clone(),
            timezone: cfg.sla.timezone.clone(),
            sla_threshold_seconds: cfg.sla.threshold_seconds,
            short_abandon_seconds: cfg.sla.short_abandon_seconds,
        }
    }
}

/// What the job runners need from the config: the jobs and their parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jobs: Vec<Job>,
    pub params: Params,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            jobs: cfg.jobs.clone(),
            params: Params::from_config(cfg),
        }
    }
}

fn param_values(p: &Params, names: &[&str], now: chrono::DateTime<chrono::Utc>) -> Vec<Param> {
    let tz: chrono_tz::Tz = p.timezone.parse().unwrap_or(chrono_tz::UTC);
    names
        .iter()
        .map(|n| match *n {
            "workspace_sid" => Param::Text(p.workspace_sid.clone()),
            "account_sid" => Param::Text(p.account_sid.clone()),
            "today_start" => Param::Time(crate::util::start_of_day(&tz, now)),
            "now" => Param::Time(now),
            "sla_threshold" => Param::Int(p.sla_threshold_seconds as i32),
            "short_abandon" => Param::Int(p.short_abandon_seconds as i32),
            _ => Param::Text(p.timezone.clone()),
        })
        .collect()
}

/// Runs a job's query once and returns its rows (as JSON objects).
pub async fn query(pool: &Pool, params: &Params, job: &Job) -> Result<Vec<Value>, JobError> {
    let (sql, names) = wrapped_sql(job).map_err(JobError::Shape)?;
    let params = param_values(params, &names, chrono::Utc::now());
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| match p {
            Param::Text(s) => s as &(dyn ToSql + Sync),
            Param::Time(t) => t as &(dyn ToSql + Sync),
            Param::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect();
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.build_transaction().read_only(true).start().await?;
    tx.batch_execute(&format!("SET LOCAL statement_timeout = {}", job.timeout_ms))
        .await?;
    let run = tx.query(&sql, &refs);
    // The server cancels at the statement timeout; this is only a backstop.
    let rows = match tokio::time::timeout(Duration::from_millis(job.timeout_ms + 2_000), run).await
    {
        Err(_) => return Err(JobError::Timeout(job.timeout_ms)),
        Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
            return Err(JobError::Timeout(job.timeout_ms))
        }
        Ok(r) => r?,
    };
    drop(tx); // read-only: nothing to commit
    if rows.len() > job.max_rows {
        return Err(JobError::TooManyRows(job.max_rows));
    }
    Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
}

/// What a job publishes, shaped for its target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Output {
    Document(Value),
    Map(BTreeMap<String, Value>),
    List(Vec<Value>),
}

pub fn shape(job: &Job, rows: Vec<Value>) -> Result<Output, JobError> {
    match &job.target {
        JobTarget::Document { shape, .. } => match shape {
            DocShape::Rows => Ok(Output::Document(serde_json::json!({ "rows": rows }))),
            DocShape::Object => match rows.len() {
                0 => Ok(Output::Document(serde_json::json!({}))),
                1 => Ok(Output::Document(rows.into_iter().next().unwrap_or_default())),
                n => Err(JobError::Shape(format!(
                    "query returned {n} rows; a document with shape = \"object\" needs at most one (use shape = \"rows\")"
                ))),
            },
        },
        JobTarget::Map { key, .. } => {
            let mut m = BTreeMap::new();
            for row in rows {
                let k = match row.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Bool(b)) => b.to_string(),
                    _ => {
                        return Err(JobError::Shape(format!(
                            "a row has no usable key column `{key}` (it must be a non-null text or number)"
                        )))
                    }
                };
                if k.is_empty() {
                    return Err(JobError::Shape(format!("a row has an empty key column `{key}`")));
                }
                let k = sync_size::bound(&k, sync_size::MAX_KEY_CHARS).into_owned();
                if m.insert(k.clone(), row).is_some() {
                    return Err(JobError::Shape(format!("two rows have the key `{k}`")));
                }
            }
            Ok(Output::Map(m))
        }
        JobTarget::List { .. } => Ok(Output::List(rows)),
    }
}

/// One job's loop.
struct Runner {
    job: Job,
    params: Params,
    pool: Pool,
    writer: SyncWriter,
    metrics: Arc<Metrics>,
    tracker: Tracker,
    /// Keys of map items written, to delete those whose rows disappear.
    map_keys: BTreeMap<String, Value>,
    /// What the list holds.
    list: ListState,
    oversize: OversizeLog,
    /// Entries left out of this run's objects for their size.
    dropped: Vec<String>,
}

impl Runner {
    /// `data` cut to Sync's size limit; what was left out is logged (once) and noted.
    fn fit(&mut self, id: &str, data: Value) -> Value {
        let (fitted, dropped) = fit(&data, MAX_DATA_BYTES);
        self.oversize
            .note(&format!("job {} {id}", self.job.name), &dropped);
        if dropped.is_empty() {
            return data;
        }
        let fitted = fitted.into_owned();
        self.dropped
            .extend(dropped.into_iter().map(|d| format!("{id}: {d}")));
        fitted
    }

    async fn publish(&mut self, out: Output) -> Result<(), JobError> {
        self.tracker.tick();
        self.dropped.clear();
        let ttl = self.writer.ttl();
        let target = self.job.target.clone();
        match (&target, out) {
            (JobTarget::Document { name, .. }, Output::Document(data)) => {
                let data = self.fit("document", data);
                let id = format!("document {name}");
                if self.tracker.should_write(&id, name, &data, ttl) {
                    self.writer.write_document(name, &data).await?;
                    self.metrics.sync_writes.inc();
                    self.tracker.written(id, data);
                }
            }
            (JobTarget::Map { name, .. }, Output::Map(items)) => {
                let items: BTreeMap<String, Value> = items
                    .into_iter()
                    .map(|(k, v)| {
                        let v = self.fit(&format!("item {k}"), v);
                        (k, v)
                    })
                    .collect();
                for (k, v) in &items {
                    let id = format!("map {name} item {k}");
                    if self.tracker.should_write(&id, name, v, ttl) {
                        self.writer.write_item(name, k, v).await?;
                        self.metrics.sync_writes.inc();
                        self.tracker.written(id, v.clone());
                        self.map_keys.insert(k.clone(), v.clone());
                    }
                }
                let gone: Vec<String> = self
                    .map_keys
                    .keys()
                    .filter(|k| !items.contains_key(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.writer.delete_item(name, &k).await?;
                    self.metrics.sync_writes.inc();
                    self.map_keys.remove(&k);
                    self.tracker.forget(&format!("map {name} item {k}"));
                }
            }
            (JobTarget::List { name }, Output::List(rows)) => {
                let rows: Vec<Value> = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| self.fit(&format!("row {i}"), v))
                    .collect();
                // Called even when nothing changed: with a TTL, unchanged items are renewed.
                let writes = self.writer.write_list(name, &mut self.list, &rows).await?;
                self.metrics.sync_writes.inc_by(writes as u64);
            }
            _ => return Err(JobError::Shape("result does not fit the target".into())),
        }
        Ok(())
    }

    async fn run(mut self, stop: CancellationToken) {
        let schedule: cron::Schedule = match self.job.schedule.parse() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(job = %self.job.name, error = %e, "invalid schedule; job not run");
                return;
            }
        };
        // With a TTL, the last result is republished between runs too (only what is due
        // is written), so a schedule sparser than half the TTL expires nothing.
        let renew_every = self
            .writer
            .renew_after()
            .map(|d| (d / 2).max(Duration::from_secs(1)));
        let mut last: Option<Output> = None;
        let mut run_at = Instant::now() + crate::schedule::until_next_tick(&schedule);
        loop {
            let now = Instant::now();
            let mut wake = run_at;
            if let (Some(every), Some(_)) = (renew_every, &last) {
                wake = wake.min(now + every);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = stop.cancelled() => return,
            }
            if self.metrics.publisher_leader.get() != 1 {
                last = None; // another instance publishes; our state may be stale
                run_at = Instant::now() + crate::schedule::until_next_tick(&schedule);
                continue;
            }
            if Instant::now() < run_at {
                if let Some(out) = last.clone() {
                    if let Err(e) = self.publish(out).await {
                        tracing::warn!(job = %self.job.name, error = %e, "renewing the job's Sync objects failed");
                    }
                }
                continue;
            }
            run_at = Instant::now() + crate::schedule::until_next_tick(&schedule);
            let started = Instant::now();
            let result = match query(&self.pool, &self.params, &self.job).await {
                Ok(rows) => match shape(&self.job, rows) {
                    Ok(out) => {
                        last = Some(out.clone());
                        self.publish(out).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let took = started.elapsed();
            let now = chrono::Utc::now().to_rfc3339();
            let mut jobs = self.metrics.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let st = jobs.entry(self.job.name.clone()).or_default();
            st.runs += 1;
            st.last_run_at = Some(now.clone());
            st.last_duration_ms = Some(took.as_millis() as u64);
            match result {
                Ok(()) => {
                    st.last_error = None;
                    st.last_success_at = Some(now);
                    st.last_warning = (!self.dropped.is_empty()).then(|| {
                        format!(
                            "published without entries over Sync's 16 KiB limit: {}",
                            self.dropped.join(", ")
                        )
                    });
                }
                Err(e) => {
                    st.failures += 1;
                    st.last_error = Some(e.to_string());
                    tracing::warn!(job = %self.job.name, error = %e, "job failed; its last good result stays published");
                }
            }
        }
    }
}

/// Starts one task per job. They publish only while this instance holds the publisher
/// lock (see [`crate::publish`]).
pub fn spawn_all(
    settings: &Settings,
    pool: Pool,
    writer: SyncWriter,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    settings
        .jobs
        .iter()
        .map(|job| {
            let r = Runner {
                job: job.clone(),
                params: settings.params.clone(),
                pool: pool.clone(),
                writer: writer.clone().with_ttl(job.ttl_seconds),
                metrics: metrics.clone(),
                tracker: Tracker::default(),
                map_keys: BTreeMap::new(),
                list: ListState::default(),
                oversize: OversizeLog::default(),
                dropped: Vec::new(),
            };
            // Every log line of the job, and of the Sync writes it makes, names it.
            let span = tracing::info_span!("job", name = %job.name);
            tokio::spawn(tracing::Instrument::instrument(r.run(stop.clone()), span))
        })
        .collect()
}

/// Prepares every job's SQL against the database; returns one message per broken job.
pub async fn check_sql(pool: &Pool, jobs: &[Job]) -> Result<Vec<String>, StoreError> {
    let client = pool.get().await?;
    let mut problems = Vec::new();
    for job in jobs {
        let (sql, _) = match wrapped_sql(job) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("jobs[{}].sql: {e}", job.name));
                continue;
            }
        };
        if let Err(e) = client.prepare(&sql).await {
            problems.push(format!("jobs[{}].sql: {}", job.name, StoreError::from(e)));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(target: JobTarget) -> Job {
        Job {
            name: "j".into(),
            schedule: "* * * * * *".into(),
            sql: "SELECT 1".into(),
            target,
            ttl_seconds: 0,
            timeout_ms: 1000,
            max_rows: 10,
        }
    }

    #[test]
    fn shapes() {
        let rows = vec![
            serde_json::json!({"q": "Sales", "n": 1}),
            serde_json::json!({"q": "Support", "n": 2}),
        ];
        let doc = job(JobTarget::Document {
            name: "d".into(),
            shape: DocShape::Rows,
        });
        assert_eq!(
            shape(&doc, rows.clone()).unwrap(),
            Output::Document(serde_json::json!({"rows": rows}))
        );
        let one = job(JobTarget::Document {
            name: "d".into(),
            shape: DocShape::Object,
        });
        assert!(matches!(shape(&one, rows.clone()), Err(JobError::Shape(_))));
        assert_eq!(
            shape(&one, vec![]).unwrap(),
            Output::Document(serde_json::json!({}))
        );
        let map = job(JobTarget::Map {
            name: "m".into(),
            key: "q".into(),
        });
        match shape(&map, rows.clone()).unwrap() {
            Output::Map(m) => assert_eq!(m["Support"]["n"], 2),
            other => panic!("{other:?}"),
        }
        let bad = job(JobTarget::Map {
            name: "m".into(),
            key: "missing".into(),
        });
        assert!(matches!(shape(&bad, rows), Err(JobError::Shape(_))));
    }
}
