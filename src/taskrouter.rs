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

use crate::config::Config;
use crate::rules::{
    self, ActivityRef, ActivityState, ChannelState, Deltas, Reg, TaskState, WorkerState,
};
use crate::store::Store;
use crate::twilio::{segment, TwilioClient, TwilioError};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Twilio(#[from] TwilioError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
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

#[derive(Clone)]
pub struct RestSync {
    client: TwilioClient,
    store: Store,
    workspace_sid: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn i(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(|x| {
        x.as_i64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
    })
}

fn b(v: &Value, k: &str) -> Option<bool> {
    v.get(k).and_then(Value::as_bool)
}

/// Activity state from a REST activity.
pub fn activity_from_rest(a: &Value, now: i64) -> Option<(String, ActivityState)> {
    let clock = rules::rest_clock(now, 0);
    Some((
        s(a, "sid")?,
        ActivityState {
            name: s(a, "friendly_name").map(|n| Reg(clock.clone(), n)),
            available: b(a, "available").map(|v| Reg(clock.clone(), v)),
            deleted: None,
        },
    ))
}

/// Worker state from a REST worker. `attributes` arrives as a JSON string.
pub fn worker_from_rest(w: &Value, now: i64) -> Option<(String, WorkerState)> {
    let clock = rules::rest_clock(now, 0);
    let r = |v: Option<String>| v.map(|v| Reg(clock.clone(), v));
    let attributes = w.get("attributes").map(|a| match a {
        Value::String(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
        }
        other => other.clone(),
    });
    Some((
        s(w, "sid")?,
        WorkerState {
            account_sid: r(s(w, "account_sid")),
            workspace_sid: r(s(w, "workspace_sid")),
            name: r(s(w, "friendly_name")),
            attributes: attributes.map(|a| Reg(clock.clone(), a)),
            activity: s(w, "activity_sid").map(|sid| {
                Reg(
                    clock.clone(),
                    ActivityRef {
                        sid,
                        name: s(w, "activity_name"),
                    },
                )
            }),
            ..WorkerState::default()
        },
    ))
}

/// Channel state from a REST worker channel.
pub fn channel_from_rest(c: &Value, now: i64) -> Option<(String, ChannelState)> {
    let clock = rules::rest_clock(now, 0);
    let name = s(c, "task_channel_unique_name").or_else(|| s(c, "task_channel_sid"))?;
    Some((
        name,
        ChannelState {
            task_channel_sid: s(c, "task_channel_sid").map(|v| Reg(clock.clone(), v)),
            capacity: i(c, "configured_capacity").map(|v| Reg(clock.clone(), v)),
            available: b(c, "available").map(|v| Reg(clock.clone(), v)),
            available_capacity: None,
            task_count: i(c, "assigned_tasks").map(|v| Reg(clock.clone(), v)),
            last_event: None,
        },
    ))
}

/// The state change that TaskRouter's own answer about one task implies: its status
/// (`Some(task)`), or that it no longer exists (`None`, a 404).
pub fn task_from_rest(task: Option<&Value>, now: i64) -> TaskState {
    match task {
        Some(t) => {
            let status = s(t, "assignment_status").unwrap_or_default();
            let clock = rules::rest_clock(now, rules::task_status_rank(&status));
            let ended = matches!(status.as_str(), "completed" | "canceled");
            TaskState {
                age: i(t, "age").map(|a| Reg(clock.clone(), a)),
                ended: ended.then(|| Reg(clock.clone(), (i(t, "age"), format!("rest:{status}")))),
                status: (!status.is_empty()).then(|| Reg(clock.clone(), status)),
                ..TaskState::default()
            }
        }
        None => {
            let clock = rules::rest_clock(now, rules::task_status_rank("completed"));
            TaskState {
                status: Some(Reg(clock.clone(), "completed".to_owned())),
                completed_reason: Some(Reg(
                    clock.clone(),
                    "not found in TaskRouter (reconciled)".to_owned(),
                )),
                ended: Some(Reg(clock, (None, "rest:not-found".to_owned()))),
                ..TaskState::default()
            }
        }
    }
}

impl RestSync {
    pub fn new(cfg: &Config, client: TwilioClient, store: Store) -> RestSync {
        RestSync {
            client,
            store,
            workspace_sid: cfg.twilio.workspace_sid.clone(),
        }
    }

    async fn db(&self) -> Result<deadpool_postgres::Object, SyncError> {
        Ok(self
            .store
            .pool()
            .get()
            .await
            .map_err(crate::store::StoreError::from)?)
    }

    fn ws_url(&self, rest: &str) -> String {
        format!(
            "{}/v1/Workspaces/{}/{rest}",
            self.client.taskrouter_url,
            segment(&self.workspace_sid)
        )
    }

    /// Activities, workers, and the channels of workers without known channels.
    pub async fn sync_once(&self) -> Result<(), SyncError> {
        let now = now_ms();
        let mut d = Deltas::default();
        for a in self
            .client
            .list(&self.ws_url("Activities?PageSize=200"), "activities")
            .await?
        {
            if let Some((k, st)) = activity_from_rest(&a, now) {
                d.activities.insert(k, st);
            }
        }
        let workers = self
            .client
            .list(&self.ws_url("Workers?PageSize=200"), "workers")
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
        let now = now_ms();
        for w in &unknown {
            let url = self.ws_url(&format!("Workers/{}/Channels?PageSize=100", segment(w)));
            match self.client.list(&url, "channels").await {
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
    pub async fn reconcile_once(&self) -> Result<usize, SyncError> {
        let local: Vec<(String, String)> = {
            let c = self.db().await?;
            c.query(
                "SELECT sid, task_assignment_status FROM tasks \
                 WHERE task_assignment_status IN ('pending','reserved','assigned','wrapping') \
                 AND coalesce(task_created, last_event_at, created_at) < now() - make_interval(secs => $1)",
                &[&(RECONCILE_MIN_AGE_SECS as f64)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        };
        if local.is_empty() {
            return Ok(0);
        }
        // Only a complete list counts; any error aborts the round with nothing changed.
        let open: HashMap<String, Value> = self
            .client
            .list(
                &self.ws_url(
                    "Tasks?AssignmentStatus=pending,reserved,assigned,wrapping&PageSize=1000",
                ),
                "tasks",
            )
            .await?
            .into_iter()
            .filter_map(|t| Some((s(&t, "sid")?, t)))
            .collect();
        let now = now_ms();
        let mut d = Deltas::default();
        let mut lookups = 0;
        for (sid, status) in local {
            match open.get(&sid) {
                Some(t) => {
                    if s(t, "assignment_status").as_deref() != Some(status.as_str()) {
                        d.tasks.insert(sid, task_from_rest(Some(t), now));
                    }
                }
                None => {
                    // Absent from the open list: ask about this very task before
                    // believing it ended.
                    if lookups >= MAX_LOOKUPS {
                        continue;
                    }
                    lookups += 1;
                    let t = self
                        .client
                        .get(&self.ws_url(&format!("Tasks/{}", segment(&sid))))
                        .await?;
                    let st = t.as_ref().and_then(|t| s(t, "assignment_status"));
                    if st.as_deref() != Some(status.as_str()) {
                        d.tasks.insert(sid, task_from_rest(t.as_ref(), now));
                    }
                }
            }
        }
        let n = d.tasks.len();
        if n > 0 {
            tracing::info!(tasks = n, "reconciled tasks with TaskRouter");
        }
        self.store.merge_rest(d).await?;
        Ok(n)
    }
}

/// Runs the periodic REST sync and the reconcile schedule until `stop`.
pub async fn run(sync: RestSync, cfg: Config, stop: CancellationToken) {
    let interval = cfg.taskrouter.sync_interval_secs;
    let reconcile: Option<cron::Schedule> = cfg.taskrouter.reconcile_schedule.parse().ok();
    let mut next_sync = tokio::time::Instant::now();
    loop {
        let next_reconcile = reconcile
            .as_ref()
            .map(|s| tokio::time::Instant::now() + crate::live::until_next_tick(s));
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
            &json!({"sid": "WK1", "friendly_name": "alice", "activity_sid": "WA1",
                    "activity_name": "Available", "attributes": "{\"contact_uri\":\"client:alice\"}"}),
            1000,
        )
        .unwrap();
        assert_eq!(sid, "WK1");
        assert_eq!(
            w.attributes.unwrap().1["contact_uri"],
            json!("client:alice")
        );
        assert_eq!(w.activity.unwrap().1.name.as_deref(), Some("Available"));
    }

    #[test]
    fn a_missing_task_is_completed_an_open_one_keeps_its_status() {
        let gone = task_from_rest(None, 5);
        assert_eq!(gone.status.unwrap().1, "completed");
        assert!(gone.ended.is_some());
        let open = task_from_rest(
            Some(&json!({"assignment_status": "wrapping", "age": 90})),
            5,
        );
        assert_eq!(open.status.unwrap().1, "wrapping");
        assert!(open.ended.is_none());
    }

    #[test]
    fn later_events_beat_the_rest_snapshot() {
        let mut st = TaskState::default();
        st.merge(task_from_rest(None, 1_000));
        // An event after the read (e.g. the task was still wrapping) wins.
        st.merge(TaskState {
            status: Some(Reg(rules::Clock(2_000, 3, "EV".into()), "wrapping".into())),
            ..TaskState::default()
        });
        assert_eq!(st.status.unwrap().1, "wrapping");
    }
}
