//! What callbacks alone cannot tell, read from TaskRouter's REST API.
//!
//! - Every `sync_interval_secs` (and at start): Activities (which count as available),
//!   Workers (seeding the workers table like the original's startup sync), and the
//!   channels of workers whose channels were never read.
//! - On `reconcile_schedule`: tasks open locally are checked against TaskRouter. A task
//!   is closed locally only when TaskRouter itself says so for that task (its status, or
//!   a 404 for it): an empty or failed list never closes anything.
//!
//! REST facts merge through the same registers as events, stamped with the time of the
//! read ([`rules::rest_clock`]): events that happened later still win.

use crate::apply::rules::{
    self, ActivityRef, ActivityState, ChannelState, Deltas, Reg, TaskState, WorkerState,
};
use crate::apply::store::Store;
use crate::config::Config;
use crate::event::sources;
use crate::event::Event;
use crate::twilio::types::{self, Activity, RestEvent, Task, Worker, WorkerChannel};
use crate::twilio::{TwilioClient, TwilioError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Twilio(#[from] TwilioError),
    #[error(transparent)]
    Store(#[from] crate::apply::store::StoreError),
}

impl From<tokio_postgres::Error> for SyncError {
    fn from(e: tokio_postgres::Error) -> Self {
        SyncError::Store(e.into())
    }
}

/// Tasks younger than this are left alone: their events may still be on the way.
const RECONCILE_MIN_AGE_SECS: i64 = 60;
/// Single-task lookups per reconcile round, at most (API budget).
const MAX_LOOKUPS: usize = 100;
/// Channel lists fetched per sync round, at most.
const MAX_CHANNEL_FETCHES: usize = 200;

/// What the REST sync and the reconciliation need from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workspace_sid: String,
    /// Seconds between REST syncs (0: never).
    pub sync_interval_secs: u64,
    /// Cron (with seconds) of the reconciliation; "" or invalid: never.
    pub reconcile_schedule: String,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            workspace_sid: cfg.twilio.workspace_sid.clone(),
            sync_interval_secs: cfg.taskrouter.sync_interval_secs,
            reconcile_schedule: cfg.taskrouter.reconcile_schedule.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RestSync {
    client: TwilioClient,
    store: Store,
    settings: Settings,
}

/// Activity state from a REST activity.
pub fn activity_from_rest(a: &Activity, now: i64) -> Option<(String, ActivityState)> {
    let clock = rules::rest_clock(now, 0);
    Some((
        a.sid.clone()?,
        ActivityState {
            name: a.friendly_name.clone().map(|n| Reg(clock, n)),
            available: a.available.map(|v| Reg(clock, v)),
            deleted: None,
        },
    ))
}

/// Worker state from a REST worker. `attributes` arrives as a JSON string.
pub fn worker_from_rest(w: &Worker, now: i64) -> Option<(String, WorkerState)> {
    let clock = rules::rest_clock(now, 0);
    let r = |v: &Option<String>| v.clone().map(|v| Reg(clock, v));
    let attributes = w.attributes.as_ref().map(|a| match a {
        Value::String(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
        }
        other => other.clone(),
    });
    Some((
        w.sid.clone()?,
        WorkerState {
            account_sid: r(&w.account_sid),
            workspace_sid: r(&w.workspace_sid),
            name: r(&w.friendly_name),
            attributes: attributes.map(|a| Reg(clock, a)),
            activity: w.activity_sid.clone().map(|sid| {
                Reg(
                    clock,
                    ActivityRef {
                        sid,
                        name: w.activity_name.clone(),
                    },
                )
            }),
            // When the current activity began, for workers no activity update was heard
            // from (time in activity, `/api/agents`). As old as the change itself, so an
            // update event (ms precision, at or after it) always wins.
            activity_change: w
                .date_status_changed
                .as_deref()
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
                .map(|d| {
                    Reg(
                        rules::rest_clock(d.timestamp_millis(), 0),
                        rules::ActivityChange::default(),
                    )
                }),
            ..WorkerState::default()
        },
    ))
}

/// Channel state from a REST worker channel.
pub fn channel_from_rest(c: &WorkerChannel, now: i64) -> Option<(String, ChannelState)> {
    let clock = rules::rest_clock(now, 0);
    let name = c
        .task_channel_unique_name
        .clone()
        .or_else(|| c.task_channel_sid.clone())?;
    Some((
        name,
        ChannelState {
            task_channel_sid: c.task_channel_sid.clone().map(|v| Reg(clock, v)),
            capacity: c.configured_capacity.map(|v| Reg(clock, v)),
            available: c.available.map(|v| Reg(clock, v)),
            available_capacity: None,
            task_count: c.assigned_tasks.map(|v| Reg(clock, v)),
            last_event: None,
        },
    ))
}

/// The state change that TaskRouter's own answer about one existing task implies: its
/// status, and its ending when that status is final. (A 404 says less: see
/// [`RestSync::reconcile_once`].)
pub fn task_from_rest(t: &Task, now: i64) -> TaskState {
    let status = t.assignment_status.clone().unwrap_or_default();
    let clock = rules::rest_clock(now, rules::task_status_rank(&status));
    let ended = matches!(status.as_str(), "completed" | "canceled");
    TaskState {
        age: t.age.map(|a| Reg(clock, a)),
        ended: ended.then(|| Reg(clock, (t.age, format!("rest:{status}")))),
        status: (!status.is_empty()).then_some(Reg(clock, status)),
        ..TaskState::default()
    }
}

/// Statuses of a task TaskRouter still routes or works on.
const OPEN_STATUSES: [&str; 4] = ["pending", "reserved", "assigned", "wrapping"];

/// The query of the open-tasks list: one `AssignmentStatus` pair per open status.
pub fn open_tasks_query() -> Vec<(&'static str, &'static str)> {
    let mut q: Vec<_> = OPEN_STATUSES
        .iter()
        .map(|st| ("AssignmentStatus", *st))
        .collect();
    q.push(("PageSize", "1000"));
    q
}

/// Margin before a task's known creation when reading its events: creation may be an
/// estimate (event time minus `TaskAge`) and clocks differ a little.
const TASK_EVENTS_MARGIN_SECS: i64 = 3_600;

/// The `StartDate`/`EndDate` window that covers a task's whole life: from `created`
/// minus a margin (never before what TaskRouter keeps) to `now`, in the whole seconds the
/// API takes (start rounded down, end up).
pub fn task_events_window(
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let oldest = now - chrono::Duration::days(crate::twilio::backfill::RETENTION_DAYS);
    let start = (created - chrono::Duration::seconds(TASK_EVENTS_MARGIN_SECS))
        .max(oldest)
        .min(now);
    (
        crate::twilio::backfill::floor_secs(start),
        crate::twilio::backfill::ceil_secs(now),
    )
}

impl RestSync {
    pub fn new(settings: Settings, client: TwilioClient, store: Store) -> RestSync {
        RestSync {
            client,
            store,
            settings,
        }
    }

    async fn db(&self) -> Result<deadpool_postgres::Object, SyncError> {
        Ok(self
            .store
            .pool()
            .get()
            .await
            .map_err(crate::apply::store::StoreError::from)?)
    }

    fn ws_url(&self, path: &[&str], query: &[(&str, &str)]) -> Result<String, SyncError> {
        Ok(crate::twilio::workspace_url(
            &self.client.taskrouter_url,
            &self.settings.workspace_sid,
            path,
            query,
        )?)
    }

    /// Activities, workers, and the channels of workers without known channels.
    pub async fn sync_once(&self) -> Result<(), SyncError> {
        let now = crate::util::now_ms();
        let mut d = Deltas::default();
        for a in self
            .client
            .list::<Activity>(&self.ws_url(&["Activities"], &[("PageSize", "200")])?)
            .await?
        {
            if let Some((k, st)) = activity_from_rest(&a, now) {
                d.activities.insert(k, st);
            }
        }
        let workers = self
            .client
            .list::<Worker>(&self.ws_url(&["Workers"], &[("PageSize", "200")])?)
            .await?;
        for w in &workers {
            if let Some((k, st)) = worker_from_rest(w, now) {
                d.workers.insert(k, st);
            }
        }
        let (na, nw) = (d.activities.len(), d.workers.len());
        self.store.merge_rest(d).await?;

        let unknown: Vec<String> = {
            let c = self.db().await?;
            c.query(
                "SELECT worker_sid FROM workers WHERE NOT deleted AND channels_synced_at IS NULL \
                 ORDER BY 1 LIMIT $1",
                &[&(MAX_CHANNEL_FETCHES as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        let mut d = Deltas::default();
        let now = crate::util::now_ms();
        for w in &unknown {
            let url = self.ws_url(&["Workers", w, "Channels"], &[("PageSize", "100")])?;
            match self.client.list::<WorkerChannel>(&url).await {
                Ok(chs) => {
                    for c in chs {
                        if let Some((name, st)) = channel_from_rest(&c, now) {
                            d.channels.insert((w.clone(), name), st);
                        }
                    }
                }
                Err(e) if e.status() == Some(404) => {} // deleted meanwhile
                Err(e) => return Err(e.into()),
            }
        }
        let nc = d.channels.len();
        self.store.merge_rest(d).await?;
        if !unknown.is_empty() {
            let c = self.db().await?;
            c.execute(
                "UPDATE workers SET channels_synced_at = now() WHERE worker_sid = ANY($1)",
                &[&unknown],
            )
            .await?;
        }
        tracing::info!(
            activities = na,
            workers = nw,
            channels = nc,
            "TaskRouter REST sync done"
        );
        Ok(())
    }

    /// Checks tasks open locally against TaskRouter; returns how many changed.
    ///
    /// Guarantees: a task changes only on TaskRouter's own word about that very task:
    /// its status in the open list or its fetch; or, when the fetch answers 404 (TaskRouter
    /// deletes ended tasks, so a 404 says it ended but not how), the task's own events
    /// from the Events list, applied like any event (their `EV` sids dedupe against those
    /// stored). Only when that list holds nothing that ends the task does it get the
    /// [`rules::DELETED_STATUS`] verdict. Any failed read leaves that task unchanged. At
    /// most [`MAX_LOOKUPS`] single-task requests per round.
    pub async fn reconcile_once(&self) -> Result<usize, SyncError> {
        let local: Vec<(String, String, Option<DateTime<Utc>>)> = {
            let c = self.db().await?;
            // A task that has an ending already has all a lookup could tell.
            c.query(
                "SELECT sid, task_assignment_status, coalesce(task_created, last_event_at, created_at) \
                 FROM tasks \
                 WHERE task_assignment_status IN ('pending','reserved','assigned','wrapping') \
                 AND ended_at IS NULL \
                 AND coalesce(task_created, last_event_at, created_at) < now() - make_interval(secs => $1)",
                &[&(RECONCILE_MIN_AGE_SECS as f64)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
        };
        if local.is_empty() {
            return Ok(0);
        }
        // Only a complete list counts; any error aborts the round with nothing changed.
        let open: HashMap<String, Task> = self
            .client
            .list::<Task>(&self.ws_url(&["Tasks"], &open_tasks_query())?)
            .await?
            .into_iter()
            .filter_map(|t| Some((t.sid.clone()?, t)))
            .collect();
        let now_t = Utc::now();
        let now = now_t.timestamp_millis();
        let mut d = Deltas::default();
        let mut ended_by_events = 0;
        let mut lookups = 0;
        for (sid, status, created) in local {
            if let Some(t) = open.get(&sid) {
                if t.assignment_status.as_deref() != Some(status.as_str()) {
                    d.tasks.insert(sid, task_from_rest(t, now));
                }
                continue;
            }
            // Absent from the open list: ask about this very task before believing it
            // ended. (Tasks in the open list are still updated once lookups stop.)
            if lookups >= MAX_LOOKUPS {
                continue;
            }
            lookups += 1;
            let t = self
                .client
                .get(&self.ws_url(&["Tasks", &sid], &[])?)
                .await?;
            if let Some(t) = t.map(types::or_default::<Task>) {
                if t.assignment_status.as_deref() != Some(status.as_str()) {
                    d.tasks.insert(sid, task_from_rest(&t, now));
                }
                continue;
            }
            if lookups >= MAX_LOOKUPS {
                continue;
            }
            lookups += 1;
            let created = created.unwrap_or(now_t);
            match self.task_events(&sid, created, now_t).await {
                Ok(events) => {
                    let ends = events.iter().any(|e| rules::is_task_end(&e.event_type));
                    if !events.is_empty() {
                        self.store.apply(&events).await?;
                    }
                    if ends {
                        ended_by_events += 1;
                    } else {
                        tracing::info!(task = %sid, events = events.len(),
                            "task not found in TaskRouter and no ending in its events: marked deleted");
                        d.tasks.insert(sid, rules::task_gone(now));
                    }
                }
                Err(e) => {
                    tracing::warn!(task = %sid, error = %e,
                        "cannot read the events of a task TaskRouter no longer has; left as it is");
                    // TaskRouter unavailable or throttling: the next round tries again.
                    if e.status().is_none_or(|st| st == 429 || st >= 500) {
                        lookups = MAX_LOOKUPS;
                    }
                }
            }
        }
        let n = d.tasks.len() + ended_by_events;
        if n > 0 {
            tracing::info!(tasks = n, "reconciled tasks with TaskRouter");
        }
        self.store.merge_rest(d).await?;
        Ok(n)
    }

    /// The events TaskRouter still keeps for one task, from its creation (minus a
    /// margin) to `now`, as events; `Err` when any page cannot be read.
    async fn task_events(
        &self,
        sid: &str,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, TwilioError> {
        let (start, end) = task_events_window(created, now);
        let (start, end) = (
            start.to_rfc3339_opts(SecondsFormat::Secs, true),
            end.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        let url = self
            .ws_url(
                &["Events"],
                &[
                    ("TaskSid", sid),
                    ("StartDate", &start),
                    ("EndDate", &end),
                    ("PageSize", "1000"),
                ],
            )
            .map_err(|e| TwilioError::Config(e.to_string()))?;
        let items: Vec<RestEvent> =
            crate::twilio::backfill::read_all_pages(&self.client, &url).await?;
        let received = now.timestamp_millis();
        Ok(items
            .iter()
            .filter_map(|e| sources::params_from_rest(&e.0))
            .map(|p| Event::from_params(&p, received))
            // A filter the server ignored must not end another task's story here.
            .filter(|e| e.task_sid() == Some(sid))
            .collect())
    }
}

/// Runs the periodic REST sync and the reconcile schedule until `stop`.
pub async fn run(sync: RestSync, stop: CancellationToken) {
    let interval = sync.settings.sync_interval_secs;
    let reconcile: Option<cron::Schedule> = sync.settings.reconcile_schedule.parse().ok();
    let mut next_sync = tokio::time::Instant::now();
    loop {
        let next_reconcile = reconcile
            .as_ref()
            .map(|s| tokio::time::Instant::now() + crate::schedule::until_next_tick(s));
        let sync_due = (interval > 0).then_some(next_sync);
        let wake = [sync_due, next_reconcile].into_iter().flatten().min();
        let Some(wake) = wake else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stop.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        if sync_due.is_some_and(|t| t <= now) {
            if let Err(e) = sync.sync_once().await {
                tracing::warn!(error = %e, "TaskRouter REST sync failed; will retry");
                next_sync = now + Duration::from_secs(30.min(interval));
            } else {
                next_sync = now + Duration::from_secs(interval);
            }
        }
        if next_reconcile.is_some_and(|t| t <= now) {
            if let Err(e) = sync.reconcile_once().await {
                tracing::warn!(error = %e, "task reconciliation failed; nothing changed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rest_worker_parses_attribute_string() {
        let (sid, w) = worker_from_rest(
            &types::or_default(json!({"sid": "WK1", "friendly_name": "alice", "activity_sid": "WA1",
                    "activity_name": "Available", "attributes": "{\"contact_uri\":\"client:alice\"}"})),
            1000,
        )
        .unwrap();
        assert_eq!(sid, "WK1");
        assert_eq!(
            w.attributes.unwrap().1["contact_uri"],
            json!("client:alice")
        );
        assert_eq!(w.activity.unwrap().1.name.as_deref(), Some("Available"));
        assert!(
            w.activity_change.is_none(),
            "no date_status_changed, no change"
        );
    }

    #[test]
    fn a_rest_worker_says_since_when_it_is_in_its_activity() {
        let (_, w) = worker_from_rest(
            &types::or_default(json!({"sid": "WK1", "activity_sid": "WA2",
                    "date_status_changed": "2026-12-01T08:00:05Z"})),
            1_900_000_000_000,
        )
        .expect("worker");
        let row = rules::derive_worker("WK1", &w, None);
        assert_eq!(
            row.activity_changed_at.map(|t| t.to_rfc3339()),
            Some("2026-12-01T08:00:05+00:00".to_owned())
        );
    }

    #[test]
    fn an_open_task_keeps_its_status_a_final_one_ends() {
        let open = task_from_rest(
            &types::or_default(json!({"assignment_status": "wrapping", "age": 90})),
            5,
        );
        assert_eq!(open.status.unwrap().1, "wrapping");
        assert!(open.ended.is_none());
        let done = task_from_rest(
            &types::or_default(json!({"assignment_status": "canceled", "age": 9})),
            5,
        );
        assert_eq!(done.status.unwrap().1, "canceled");
        assert_eq!(done.ended.unwrap().1, (Some(9), "rest:canceled".to_owned()));
    }

    #[test]
    fn array_filters_are_repeated_pairs() {
        let url = crate::twilio::workspace_url(
            "http://127.0.0.1:9/base",
            "WS1",
            &["Tasks"],
            &open_tasks_query(),
        )
        .unwrap();
        let u = url::Url::parse(&url).unwrap();
        assert_eq!(u.path(), "/base/v1/Workspaces/WS1/Tasks");
        let statuses: Vec<String> = u
            .query_pairs()
            .filter(|(k, _)| k == "AssignmentStatus")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(statuses, ["pending", "reserved", "assigned", "wrapping"]);
        assert!(!url.contains("%2C") && !url.contains(','), "{url}");
        // Path segments and values are encoded, never spliced in raw.
        let url = crate::twilio::workspace_url(
            "http://h",
            "WS/1",
            &["Events"],
            &[("StartDate", "2026-01-01T00:00:00Z"), ("TaskSid", "WT a&b")],
        )
        .unwrap();
        assert_eq!(
            url,
            "http://h/v1/Workspaces/WS%2F1/Events?StartDate=2026-01-01T00%3A00%3A00Z&TaskSid=WT+a%26b"
        );
        assert!(crate::twilio::workspace_url("not a url", "WS1", &[], &[]).is_err());
    }

    #[test]
    fn the_task_events_window_covers_its_life_within_what_taskrouter_keeps() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let now = t("2026-11-30T12:00:00.400Z");
        assert_eq!(
            task_events_window(t("2026-11-30T10:20:30.900Z"), now),
            (t("2026-11-30T09:20:30Z"), t("2026-11-30T12:00:01Z"))
        );
        // Older than TaskRouter keeps: from the oldest it keeps.
        assert_eq!(
            task_events_window(t("2026-09-01T00:00:00Z"), now).0,
            t("2026-10-31T12:00:00Z")
        );
        // A creation time in the future (clock skew) still gives a valid window.
        let (s, e) = task_events_window(t("2026-12-01T00:00:00Z"), now);
        assert!(s <= e);
    }

    #[test]
    fn later_events_beat_the_rest_snapshot() {
        let mut st = TaskState::default();
        st.merge(task_from_rest(
            &types::or_default(json!({"assignment_status": "assigned"})),
            1_000,
        ));
        // An event after the read (e.g. the task was still wrapping) wins.
        st.merge(TaskState {
            status: Some(Reg(rules::Clock(2_000, 3, "EV".into()), "wrapping".into())),
            ..TaskState::default()
        });
        assert_eq!(st.status.unwrap().1, "wrapping");
    }
}
