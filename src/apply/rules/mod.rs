//! The event rules: how events become rows. Pure functions, no IO.
//!
//! Every entity (task, reservation, worker, worker channel, activity) has a *state* made
//! of registers. Each register holds a value and the [`Clock`] of the event that gave it:
//! "latest" registers keep the value with the greatest clock, "first" registers the one
//! with the smallest. An event becomes a one-event state ([`task_delta`] and friends), and
//! states combine with `merge`, which is commutative, associative and idempotent. Hence:
//!
//! - **order-independent**: any delivery order of the same events gives the same state;
//! - **idempotent**: applying an event twice changes nothing;
//! - **tolerant of gaps**: every event contributes what it carries, so a missing
//!   `task.created` only leaves the fields that only it carries empty.
//!
//! Rows are then *derived* from the state ([`derive_task`] …), including the metrics.
//! The state is stored next to the row (`state` jsonb) so the next event merges into it.

use crate::config::Sla;
use crate::event::Event;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The order of facts: event time (ms), then lifecycle rank, then event sid, so that
/// ties between events of the same millisecond still resolve the same way everywhere.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Clock(pub i64, pub u8, pub String);

/// A value and the clock of the event it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reg<T>(pub Clock, pub T);

impl<T> Reg<T> {
    pub fn ms(&self) -> i64 {
        self.0 .0
    }
}

/// Keeps the register with the greater clock (ties keep the current value).
fn latest<T>(cur: &mut Option<Reg<T>>, new: Option<Reg<T>>) {
    if let Some(n) = new {
        match cur {
            Some(c) if c.0 >= n.0 => {}
            _ => *cur = Some(n),
        }
    }
}

/// Keeps the register with the smaller clock.
fn first<T>(cur: &mut Option<Reg<T>>, new: Option<Reg<T>>) {
    if let Some(n) = new {
        match cur {
            Some(c) if c.0 <= n.0 => {}
            _ => *cur = Some(n),
        }
    }
}

/// Rank of a task assignment status in the task lifecycle.
pub fn task_status_rank(status: &str) -> u8 {
    match status {
        "pending" => 0,
        "reserved" => 1,
        "assigned" => 2,
        "wrapping" => 3,
        "completed" | "canceled" | DELETED_STATUS => 4,
        _ => 0,
    }
}

/// Status of a task that TaskRouter no longer knows (404) and whose Events list holds
/// nothing that ends it: it ended, but not as completed nor as canceled, so summaries
/// count it as neither.
pub const DELETED_STATUS: &str = "deleted";
/// The reason recorded with [`DELETED_STATUS`].
pub const NOT_FOUND_REASON: &str = "not found in TaskRouter";

fn clock(e: &Event, rank: u8) -> Clock {
    Clock(e.occurred_ms, rank, e.sid.clone())
}

fn reg<T>(e: &Event, rank: u8, v: Option<T>) -> Option<Reg<T>> {
    v.map(|v| Reg(clock(e, rank), v))
}

fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn secs_between(later_ms: i64, earlier_ms: i64) -> f64 {
    (later_ms - earlier_ms) as f64 / 1000.0
}

/// Event types after which a task no longer exists in TaskRouter.
pub fn is_task_end(event_type: &str) -> bool {
    matches!(
        event_type,
        "task.completed" | "task.canceled" | "task.deleted" | "task.system-deleted"
    )
}

// ---------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueRef {
    pub sid: String,
    pub name: Option<String>,
    pub target_expression: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelRef {
    pub unique_name: Option<String>,
    pub sid: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub age: Option<i64>,
    pub worker_sid: Option<String>,
    pub worker_name: Option<String>,
}

/// What a task knows about one of its reservations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResvFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Reg<()>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Reg<Accepted>>,
}

/// Registers of a task. Field names are short because the state is stored per row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskState {
    pub account_sid: Option<Reg<String>>,
    pub workspace_sid: Option<Reg<String>>,
    pub status: Option<Reg<String>>,
    pub queue: Option<Reg<QueueRef>>,
    pub channel: Option<Reg<ChannelRef>>,
    pub priority: Option<Reg<i64>>,
    pub attributes: Option<Reg<Value>>,
    pub age: Option<Reg<i64>>,
    /// `TaskDateCreated` (ms), first seen.
    pub date_created: Option<Reg<i64>>,
    /// Event time minus `TaskAge`, from the earliest event: used when no event carried
    /// `TaskDateCreated`.
    pub created_estimate: Option<Reg<i64>>,
    pub canceled_reason: Option<Reg<String>>,
    pub completed_reason: Option<Reg<String>>,
    /// `TaskAge` at the first `task.wrapup`.
    pub wrapup: Option<Reg<Option<i64>>>,
    /// `TaskAge` and event type at the first end event.
    pub ended: Option<Reg<(Option<i64>, String)>>,
    /// `TaskAge` at the first `task.canceled`.
    pub canceled: Option<Reg<Option<i64>>>,
    /// The newest event seen for the task.
    pub last_event: Option<Reg<()>>,
    pub reservations: BTreeMap<String, ResvFacts>,
    /// The verdict "gone from TaskRouter, no ending in its Events list" (the reason), at
    /// the REST clock of the read. Kept apart from `status` so that a real ending wins
    /// whatever the clocks say (see [`derive_task`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone: Option<Reg<String>>,
}

/// The state a "not found, and nothing in its Events list ends it" verdict read at
/// `now_ms` contributes to a task (see [`DELETED_STATUS`]). Merging it never undoes a
/// real ending, whichever arrives first; events newer than the read still win.
pub fn task_gone(now_ms: i64) -> TaskState {
    TaskState {
        gone: Some(Reg(
            rest_clock(now_ms, task_status_rank(DELETED_STATUS)),
            NOT_FOUND_REASON.to_owned(),
        )),
        ..TaskState::default()
    }
}

/// The state one event contributes to its task, or `None` when it names no task.
pub fn task_delta(e: &Event) -> Option<(String, TaskState)> {
    let sid = e.task_sid()?.to_owned();
    let status = e.get_owned("TaskAssignmentStatus");
    let rank = status.as_deref().map(task_status_rank).unwrap_or(0);
    let age = e.int("TaskAge");
    let mut s = TaskState {
        account_sid: reg(e, 0, e.get_owned("AccountSid")),
        workspace_sid: reg(e, 0, e.get_owned("WorkspaceSid")),
        status: reg(e, rank, status),
        queue: reg(
            e,
            rank,
            e.get_owned("TaskQueueSid").map(|sid| QueueRef {
                sid,
                name: e.get_owned("TaskQueueName"),
                target_expression: e.get_owned("TaskQueueTargetExpression"),
            }),
        ),
        channel: reg(
            e,
            rank,
            match (
                e.get_owned("TaskChannelUniqueName"),
                e.get_owned("TaskChannelSid"),
            ) {
                (None, None) => None,
                (unique_name, sid) => Some(ChannelRef { unique_name, sid }),
            },
        ),
        priority: reg(e, rank, e.int("TaskPriority")),
        attributes: reg(e, rank, e.json("TaskAttributes")),
        age: reg(e, rank, age),
        date_created: reg(e, rank, e.instant_ms("TaskDateCreated")),
        created_estimate: reg(e, rank, age.map(|a| e.occurred_ms - a * 1000)),
        last_event: reg(e, rank, Some(())),
        ..TaskState::default()
    };
    match e.event_type.as_str() {
        "task.wrapup" => s.wrapup = reg(e, rank, Some(age)),
        "task.canceled" => {
            s.canceled = reg(e, rank, Some(age));
            s.canceled_reason = reg(e, rank, e.get_owned("TaskCanceledReason"));
        }
        "task.completed" => {
            s.completed_reason = reg(e, rank, e.get_owned("TaskCompletedReason"));
        }
        _ => {}
    }
    if is_task_end(&e.event_type) {
        s.ended = reg(e, rank, Some((age, e.event_type.clone())));
    }
    if e.event_type.starts_with("reservation.") {
        if let Some(rsid) = e.reservation_sid() {
            let mut f = ResvFacts::default();
            match e.event_type.as_str() {
                "reservation.created" => f.created = reg(e, rank, Some(())),
                "reservation.accepted" => {
                    f.accepted = reg(
                        e,
                        rank,
                        Some(Accepted {
                            age,
                            worker_sid: e.get_owned("WorkerSid"),
                            worker_name: e.get_owned("WorkerName"),
                        }),
                    )
                }
                _ => {}
            }
            s.reservations.insert(rsid.to_owned(), f);
        }
    }
    Some((sid, s))
}

impl TaskState {
    /// Joins another state into this one (commutative, associative, idempotent).
    pub fn merge(&mut self, o: TaskState) {
        latest(&mut self.account_sid, o.account_sid);
        latest(&mut self.workspace_sid, o.workspace_sid);
        latest(&mut self.status, o.status);
        latest(&mut self.queue, o.queue);
        latest(&mut self.channel, o.channel);
        latest(&mut self.priority, o.priority);
        latest(&mut self.attributes, o.attributes);
        latest(&mut self.age, o.age);
        first(&mut self.date_created, o.date_created);
        first(&mut self.created_estimate, o.created_estimate);
        latest(&mut self.canceled_reason, o.canceled_reason);
        latest(&mut self.completed_reason, o.completed_reason);
        first(&mut self.wrapup, o.wrapup);
        first(&mut self.ended, o.ended);
        first(&mut self.canceled, o.canceled);
        latest(&mut self.last_event, o.last_event);
        // Latest: a newer verdict (after a newer event reopened the task) wins again.
        latest(&mut self.gone, o.gone);
        for (k, f) in o.reservations {
            let cur = self.reservations.entry(k).or_default();
            first(&mut cur.created, f.created);
            first(&mut cur.accepted, f.accepted);
        }
    }
}

/// A `tasks` row. Serialized field names are the column names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskRow {
    pub sid: String,
    pub account_sid: Option<String>,
    pub workspace_sid: Option<String>,
    pub worker_sid: Option<String>,
    pub worker_name: Option<String>,
    pub task_queue_sid: Option<String>,
    pub task_queue_name: Option<String>,
    pub task_queue_target_expression: Option<String>,
    pub task_channel_unique_name: Option<String>,
    pub task_channel_sid: Option<String>,
    pub task_assignment_status: Option<String>,
    pub age: Option<i64>,
    pub task_created: Option<DateTime<Utc>>,
    pub task_priority: Option<i64>,
    pub task_attributes: Option<Value>,
    pub answered_in: Option<i64>,
    pub acw_start: Option<i64>,
    pub total_time: Option<i64>,
    pub within_sla: Option<bool>,
    pub sla_threshold: i64,
    pub direction: String,
    pub channel_type: Option<String>,
    /// Attribute `conversationSid`, else `channelSid` (older Flex chat tasks).
    pub conversation_sid: Option<String>,
    /// Self-service / IVR time before the task: attribute `conversations.ivr_time` (s).
    pub uc_processing_time: Option<f64>,
    pub reservation_count: i64,
    pub twilio_routing_time: Option<f64>,
    pub agent_acceptance_time: Option<f64>,
    pub total_acceptance_time: Option<f64>,
    pub last_reservation_created: Option<DateTime<Utc>>,
    pub last_reservation_accepted: Option<DateTime<Utc>>,
    pub first_accepted_at: Option<DateTime<Utc>>,
    pub wrapup_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub canceled_reason: Option<String>,
    pub completed_reason: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
}

/// Derives the row and its metrics from a task's state.
pub fn derive_task(sid: &str, s: &TaskState, sla: &Sla) -> TaskRow {
    let v = |r: &Option<Reg<String>>| r.as_ref().map(|r| r.1.clone());
    let created_ms = s
        .date_created
        .as_ref()
        .map(|r| r.1)
        .or_else(|| s.created_estimate.as_ref().map(|r| r.1));
    let accepted: Vec<&Reg<Accepted>> = s
        .reservations
        .values()
        .filter_map(|f| f.accepted.as_ref())
        .collect();
    let first_acc = accepted.iter().min_by(|a, b| a.0.cmp(&b.0)).copied();
    // The reservation whose acceptance decides the task's worker: the latest accepted.
    let last_acc = s
        .reservations
        .values()
        .filter(|f| f.accepted.is_some())
        .max_by(|a, b| {
            let ka = a.accepted.as_ref().map(|r| &r.0);
            let kb = b.accepted.as_ref().map(|r| &r.0);
            ka.cmp(&kb)
        });
    let created_times: Vec<i64> = s
        .reservations
        .values()
        .filter_map(|f| f.created.as_ref().map(Reg::ms))
        .collect();
    let queue = s.queue.as_ref().map(|r| &r.1);
    let channel = s.channel.as_ref().map(|r| &r.1);
    // The "gone" verdict gives the status only while nothing really ended the task and
    // no event is newer than the read that found it gone.
    let gone = s
        .gone
        .as_ref()
        .filter(|g| s.ended.is_none() && s.status.as_ref().is_none_or(|st| st.0 < g.0));
    let status = match gone {
        Some(_) => Some(DELETED_STATUS.to_owned()),
        None => v(&s.status),
    };
    let attrs = s.attributes.as_ref().map(|r| &r.1);
    let attr_str = |k: &str| {
        attrs
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let queue_name = queue.and_then(|q| q.name.clone());
    let channel_name = channel.and_then(|c| c.unique_name.clone());
    let threshold = sla.threshold_for(queue_name.as_deref(), channel_name.as_deref());
    let answered_in = first_acc.and_then(|r| r.1.age);
    let within_sla = if first_acc.is_some() {
        answered_in.map(|a| a <= threshold)
    } else {
        match (&status, &s.canceled) {
            (Some(st), Some(c)) if st == "canceled" => match c.1 {
                Some(age) if age >= sla.short_abandon_seconds => Some(false),
                _ => None,
            },
            _ => None,
        }
    };
    TaskRow {
        sid: sid.to_owned(),
        account_sid: v(&s.account_sid),
        workspace_sid: v(&s.workspace_sid),
        worker_sid: last_acc.and_then(|f| f.accepted.as_ref()?.1.worker_sid.clone()),
        worker_name: last_acc.and_then(|f| f.accepted.as_ref()?.1.worker_name.clone()),
        task_queue_sid: queue.map(|q| q.sid.clone()),
        task_queue_name: queue_name,
        task_queue_target_expression: queue.and_then(|q| q.target_expression.clone()),
        task_channel_unique_name: channel_name,
        task_channel_sid: channel.and_then(|c| c.sid.clone()),
        task_assignment_status: status,
        age: s.age.as_ref().map(|r| r.1),
        task_created: created_ms.and_then(ms_to_time),
        task_priority: s.priority.as_ref().map(|r| r.1),
        task_attributes: attrs.cloned(),
        answered_in,
        acw_start: s.wrapup.as_ref().and_then(|r| r.1),
        total_time: s.ended.as_ref().and_then(|r| r.1 .0),
        within_sla,
        sla_threshold: threshold,
        direction: attr_str("direction").unwrap_or_else(|| "inbound".to_owned()),
        channel_type: attr_str("channelType"),
        conversation_sid: attr_str("conversationSid").or_else(|| attr_str("channelSid")),
        uc_processing_time: attrs
            .and_then(|a| a.get("conversations"))
            .and_then(|c| c.get("ivr_time"))
            .and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
            })
            .filter(|f| f.is_finite()),
        reservation_count: s.reservations.len() as i64,
        twilio_routing_time: match (created_times.iter().min(), created_ms) {
            (Some(r), Some(c)) => Some(secs_between(*r, c)),
            _ => None,
        },
        agent_acceptance_time: last_acc.and_then(|f| {
            Some(secs_between(
                f.accepted.as_ref()?.ms(),
                f.created.as_ref()?.ms(),
            ))
        }),
        total_acceptance_time: match (first_acc, created_ms) {
            (Some(a), Some(c)) => Some(secs_between(a.ms(), c)),
            _ => None,
        },
        last_reservation_created: created_times.iter().max().and_then(|m| ms_to_time(*m)),
        last_reservation_accepted: accepted.iter().map(|r| r.ms()).max().and_then(ms_to_time),
        first_accepted_at: first_acc.and_then(|r| ms_to_time(r.ms())),
        wrapup_at: s.wrapup.as_ref().and_then(|r| ms_to_time(r.ms())),
        ended_at: s.ended.as_ref().and_then(|r| ms_to_time(r.ms())),
        canceled_at: s.canceled.as_ref().and_then(|r| ms_to_time(r.ms())),
        canceled_reason: v(&s.canceled_reason),
        // TaskRouter's Task has one `reason` for any ending; the verdict's goes here.
        completed_reason: match gone {
            Some(g) => Some(g.1.clone()),
            None => v(&s.completed_reason),
        },
        last_event_at: s.last_event.as_ref().and_then(|r| ms_to_time(r.ms())),
    }
}

// ---------------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------------

/// Reservation status after an event, and its rank for tie-breaking.
fn reservation_status(event_type: &str) -> Option<(&'static str, u8)> {
    Some(match event_type {
        "reservation.created" => ("pending", 0),
        "reservation.accepted" => ("accepted", 1),
        "reservation.wrapup" => ("wrapping", 2),
        "reservation.completed" => ("completed", 3),
        "reservation.rejected" => ("rejected", 3),
        "reservation.timeout" => ("timeout", 3),
        "reservation.canceled" => ("canceled", 3),
        "reservation.rescinded" => ("rescinded", 3),
        "reservation.failed" => ("failed", 3),
        _ => return None,
    })
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservationState {
    pub task_sid: Option<Reg<String>>,
    pub worker_sid: Option<Reg<String>>,
    pub worker_name: Option<Reg<String>>,
    pub queue_sid: Option<Reg<String>>,
    pub status: Option<Reg<String>>,
    /// First instant of each status (ms in the clock).
    pub at: BTreeMap<String, Reg<()>>,
}

pub fn reservation_delta(e: &Event) -> Option<(String, ReservationState)> {
    if !e.event_type.starts_with("reservation.") {
        return None;
    }
    let sid = e.reservation_sid()?.to_owned();
    let st = reservation_status(&e.event_type);
    let rank = st.map(|s| s.1).unwrap_or(0);
    let mut s = ReservationState {
        task_sid: reg(e, rank, e.get_owned("TaskSid")),
        worker_sid: reg(e, rank, e.get_owned("WorkerSid")),
        worker_name: reg(e, rank, e.get_owned("WorkerName")),
        queue_sid: reg(e, rank, e.get_owned("TaskQueueSid")),
        status: reg(e, rank, st.map(|s| s.0.to_owned())),
        at: BTreeMap::new(),
    };
    if let Some((name, _)) = st {
        s.at.insert(name.to_owned(), Reg(clock(e, rank), ()));
    }
    Some((sid, s))
}

impl ReservationState {
    pub fn merge(&mut self, o: ReservationState) {
        latest(&mut self.task_sid, o.task_sid);
        latest(&mut self.worker_sid, o.worker_sid);
        latest(&mut self.worker_name, o.worker_name);
        latest(&mut self.queue_sid, o.queue_sid);
        latest(&mut self.status, o.status);
        for (k, r) in o.at {
            let mut cur = self.at.remove(&k);
            first(&mut cur, Some(r));
            if let Some(c) = cur {
                self.at.insert(k, c);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReservationRow {
    pub sid: String,
    pub task_sid: Option<String>,
    pub worker_sid: Option<String>,
    pub worker_name: Option<String>,
    pub task_queue_sid: Option<String>,
    pub status: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub timed_out_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub rescinded_at: Option<DateTime<Utc>>,
    pub wrapup_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

pub fn derive_reservation(sid: &str, s: &ReservationState) -> ReservationRow {
    let v = |r: &Option<Reg<String>>| r.as_ref().map(|r| r.1.clone());
    let at = |k: &str| s.at.get(k).and_then(|r| ms_to_time(r.ms()));
    ReservationRow {
        sid: sid.to_owned(),
        task_sid: v(&s.task_sid),
        worker_sid: v(&s.worker_sid),
        worker_name: v(&s.worker_name),
        task_queue_sid: v(&s.queue_sid),
        status: v(&s.status),
        created_at: at("pending"),
        accepted_at: at("accepted"),
        rejected_at: at("rejected"),
        timed_out_at: at("timeout"),
        canceled_at: at("canceled"),
        rescinded_at: at("rescinded"),
        wrapup_at: at("wrapping"),
        completed_at: at("completed"),
        failed_at: at("failed"),
    }
}

// ---------------------------------------------------------------------------------
// Workers, worker channels, activities
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityRef {
    pub sid: String,
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityChange {
    pub previous_sid: Option<String>,
    pub previous_name: Option<String>,
    pub time_in_previous_ms: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerState {
    pub account_sid: Option<Reg<String>>,
    pub workspace_sid: Option<Reg<String>>,
    pub name: Option<Reg<String>>,
    pub attributes: Option<Reg<Value>>,
    pub activity: Option<Reg<ActivityRef>>,
    /// The latest `worker.activity.update`: when and from what the activity changed.
    pub activity_change: Option<Reg<ActivityChange>>,
    pub deleted: Option<Reg<()>>,
    pub last_event: Option<Reg<()>>,
}

/// The state a `worker.*` event contributes to its worker.
pub fn worker_delta(e: &Event) -> Option<(String, WorkerState)> {
    if !e.event_type.starts_with("worker.") {
        return None;
    }
    let sid = e.worker_sid()?.to_owned();
    let mut s = WorkerState {
        account_sid: reg(e, 0, e.get_owned("AccountSid")),
        workspace_sid: reg(e, 0, e.get_owned("WorkspaceSid")),
        name: reg(e, 0, e.get_owned("WorkerName")),
        attributes: reg(e, 0, e.json("WorkerAttributes")),
        activity: reg(
            e,
            0,
            e.get_owned("WorkerActivitySid").map(|sid| ActivityRef {
                sid,
                name: e.get_owned("WorkerActivityName"),
            }),
        ),
        last_event: reg(e, 0, Some(())),
        ..WorkerState::default()
    };
    match e.event_type.as_str() {
        "worker.activity.update" => {
            s.activity_change = reg(
                e,
                0,
                Some(ActivityChange {
                    previous_sid: e.get_owned("WorkerPreviousActivitySid"),
                    previous_name: e.get_owned("WorkerPreviousActivityName"),
                    time_in_previous_ms: e
                        .int("WorkerTimeInPreviousActivityMs")
                        .or_else(|| e.int("WorkerTimeInPreviousActivity").map(|s| s * 1000)),
                }),
            )
        }
        "worker.deleted" => s.deleted = reg(e, 1, Some(())),
        _ => {}
    }
    Some((sid, s))
}

impl WorkerState {
    pub fn merge(&mut self, o: WorkerState) {
        latest(&mut self.account_sid, o.account_sid);
        latest(&mut self.workspace_sid, o.workspace_sid);
        latest(&mut self.name, o.name);
        latest(&mut self.attributes, o.attributes);
        latest(&mut self.activity, o.activity);
        latest(&mut self.activity_change, o.activity_change);
        first(&mut self.deleted, o.deleted);
        latest(&mut self.last_event, o.last_event);
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerRow {
    pub worker_sid: String,
    pub account_sid: Option<String>,
    pub workspace_sid: Option<String>,
    pub worker_name: Option<String>,
    pub current_activity: Option<String>,
    pub current_activity_sid: Option<String>,
    pub current_activity_available: Option<bool>,
    pub previous_activity: Option<String>,
    pub previous_activity_sid: Option<String>,
    pub time_in_previous_activity: Option<i64>,
    pub worker_attributes: Option<Value>,
    pub activity_changed_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
}

/// Derives a worker row. `available` is whether the current activity counts as
/// available (from the activities table or the configured override), when known.
pub fn derive_worker(sid: &str, s: &WorkerState, available: Option<bool>) -> WorkerRow {
    let v = |r: &Option<Reg<String>>| r.as_ref().map(|r| r.1.clone());
    let activity = s.activity.as_ref().map(|r| &r.1);
    let change = s.activity_change.as_ref().map(|r| &r.1);
    WorkerRow {
        worker_sid: sid.to_owned(),
        account_sid: v(&s.account_sid),
        workspace_sid: v(&s.workspace_sid),
        worker_name: v(&s.name),
        current_activity: activity.and_then(|a| a.name.clone()),
        current_activity_sid: activity.map(|a| a.sid.clone()),
        current_activity_available: available,
        previous_activity: change.and_then(|c| c.previous_name.clone()),
        previous_activity_sid: change.and_then(|c| c.previous_sid.clone()),
        time_in_previous_activity: change.and_then(|c| c.time_in_previous_ms.map(|m| m / 1000)),
        worker_attributes: s.attributes.as_ref().map(|r| r.1.clone()),
        activity_changed_at: s.activity_change.as_ref().and_then(|r| ms_to_time(r.ms())),
        deleted: s.deleted.is_some(),
        deleted_at: s.deleted.as_ref().and_then(|r| ms_to_time(r.ms())),
        last_event_at: s.last_event.as_ref().and_then(|r| ms_to_time(r.ms())),
    }
}

/// Whether an activity counts as available: the configured list of names wins when it
/// is not empty; otherwise TaskRouter's own flag, when known.
pub fn activity_available(
    override_names: &[String],
    name: Option<&str>,
    flag: Option<bool>,
) -> Option<bool> {
    if override_names.is_empty() {
        flag
    } else {
        Some(name.is_some_and(|n| override_names.iter().any(|o| o == n)))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelState {
    pub task_channel_sid: Option<Reg<String>>,
    pub capacity: Option<Reg<i64>>,
    pub available: Option<Reg<bool>>,
    pub available_capacity: Option<Reg<i64>>,
    pub task_count: Option<Reg<i64>>,
    pub last_event: Option<Reg<()>>,
}

/// Key of a worker channel: (worker sid, task channel unique name or, failing that, sid).
pub type ChannelKey = (String, String);

/// The state a worker channel event contributes, when the event carries channel fields.
pub fn channel_delta(e: &Event) -> Option<(ChannelKey, ChannelState)> {
    if !e.event_type.starts_with("worker.") {
        return None;
    }
    let has_channel_fields = [
        "WorkerChannelAvailable",
        "WorkerChannelCapacity",
        "WorkerChannelAvailableCapacity",
        "WorkerChannelTaskCount",
    ]
    .iter()
    .any(|k| e.get(k).is_some());
    if !has_channel_fields {
        return None;
    }
    let worker = e.worker_sid()?.to_owned();
    let channel = e
        .get_owned("TaskChannelUniqueName")
        .or_else(|| e.get_owned("TaskChannelSid"))?;
    let s = ChannelState {
        task_channel_sid: reg(e, 0, e.get_owned("TaskChannelSid")),
        capacity: reg(e, 0, e.int("WorkerChannelCapacity")),
        available: reg(e, 0, e.bool("WorkerChannelAvailable")),
        available_capacity: reg(e, 0, e.int("WorkerChannelAvailableCapacity")),
        task_count: reg(e, 0, e.int("WorkerChannelTaskCount")),
        last_event: reg(e, 0, Some(())),
    };
    Some(((worker, channel), s))
}

impl ChannelState {
    pub fn merge(&mut self, o: ChannelState) {
        latest(&mut self.task_channel_sid, o.task_channel_sid);
        latest(&mut self.capacity, o.capacity);
        latest(&mut self.available, o.available);
        latest(&mut self.available_capacity, o.available_capacity);
        latest(&mut self.task_count, o.task_count);
        latest(&mut self.last_event, o.last_event);
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelRow {
    pub worker_sid: String,
    pub task_channel_unique_name: String,
    pub task_channel_sid: Option<String>,
    pub configured_capacity: Option<i64>,
    pub available: Option<bool>,
    pub available_capacity: Option<i64>,
    pub task_count: Option<i64>,
    pub last_event_at: Option<DateTime<Utc>>,
}

pub fn derive_channel(key: &ChannelKey, s: &ChannelState) -> ChannelRow {
    ChannelRow {
        worker_sid: key.0.clone(),
        task_channel_unique_name: key.1.clone(),
        task_channel_sid: s.task_channel_sid.as_ref().map(|r| r.1.clone()),
        configured_capacity: s.capacity.as_ref().map(|r| r.1),
        available: s.available.as_ref().map(|r| r.1),
        available_capacity: s.available_capacity.as_ref().map(|r| r.1),
        task_count: s.task_count.as_ref().map(|r| r.1),
        last_event_at: s.last_event.as_ref().and_then(|r| ms_to_time(r.ms())),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActivityState {
    pub name: Option<Reg<String>>,
    pub available: Option<Reg<bool>>,
    pub deleted: Option<Reg<()>>,
}

pub fn activity_delta(e: &Event) -> Option<(String, ActivityState)> {
    if !e.event_type.starts_with("activity.") {
        return None;
    }
    let sid = e.get_owned("ActivitySid")?;
    let s = ActivityState {
        name: reg(e, 0, e.get_owned("ActivityName")),
        available: reg(e, 0, e.bool("ActivityAvailable")),
        deleted: if e.event_type == "activity.deleted" {
            reg(e, 1, Some(()))
        } else {
            None
        },
    };
    Some((sid, s))
}

impl ActivityState {
    pub fn merge(&mut self, o: ActivityState) {
        latest(&mut self.name, o.name);
        latest(&mut self.available, o.available);
        first(&mut self.deleted, o.deleted);
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActivityRow {
    pub sid: String,
    pub name: Option<String>,
    pub available: Option<bool>,
    pub deleted: bool,
}

pub fn derive_activity(sid: &str, s: &ActivityState) -> ActivityRow {
    ActivityRow {
        sid: sid.to_owned(),
        name: s.name.as_ref().map(|r| r.1.clone()),
        available: s.available.as_ref().map(|r| r.1),
        deleted: s.deleted.is_some(),
    }
}

// ---------------------------------------------------------------------------------
// Folding a set of events (used by tests, and as the reference for the store)
// ---------------------------------------------------------------------------------

/// States contributed by a set of events (or by a REST read), per entity, not yet merged
/// with what is stored.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Deltas {
    pub tasks: BTreeMap<String, TaskState>,
    pub reservations: BTreeMap<String, ReservationState>,
    pub workers: BTreeMap<String, WorkerState>,
    pub channels: BTreeMap<ChannelKey, ChannelState>,
    pub activities: BTreeMap<String, ActivityState>,
}

impl Deltas {
    /// Adds what one event contributes to each entity it names.
    pub fn add(&mut self, e: &Event) {
        if let Some((k, d)) = task_delta(e) {
            self.tasks.entry(k).or_default().merge(d);
        }
        if let Some((k, d)) = reservation_delta(e) {
            self.reservations.entry(k).or_default().merge(d);
        }
        if let Some((k, d)) = worker_delta(e) {
            self.workers.entry(k).or_default().merge(d);
        }
        if let Some((k, d)) = channel_delta(e) {
            self.channels.entry(k).or_default().merge(d);
        }
        if let Some((k, d)) = activity_delta(e) {
            self.activities.entry(k).or_default().merge(d);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.reservations.is_empty()
            && self.workers.is_empty()
            && self.channels.is_empty()
            && self.activities.is_empty()
    }
}

/// Every row the rules define for a set of events, keyed by entity. The store reaches
/// the same rows incrementally; this folds everything at once.
#[derive(Debug, Default, PartialEq)]
pub struct Rows {
    pub tasks: BTreeMap<String, TaskRow>,
    pub reservations: BTreeMap<String, ReservationRow>,
    pub workers: BTreeMap<String, WorkerRow>,
    pub channels: BTreeMap<ChannelKey, ChannelRow>,
    pub activities: BTreeMap<String, ActivityRow>,
}

/// Folds events (in any order, duplicates allowed) into rows.
pub fn fold<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    sla: &Sla,
    available_override: &[String],
) -> Rows {
    let mut d = Deltas::default();
    for e in events {
        d.add(e);
    }
    let activity_rows: BTreeMap<String, ActivityRow> = d
        .activities
        .iter()
        .map(|(k, s)| (k.clone(), derive_activity(k, s)))
        .collect();
    Rows {
        tasks: d
            .tasks
            .iter()
            .map(|(k, s)| (k.clone(), derive_task(k, s, sla)))
            .collect(),
        reservations: d
            .reservations
            .iter()
            .map(|(k, s)| (k.clone(), derive_reservation(k, s)))
            .collect(),
        workers: d
            .workers
            .iter()
            .map(|(k, s)| {
                let act = s.activity.as_ref().map(|r| &r.1);
                let row = act.and_then(|a| activity_rows.get(&a.sid));
                let available = activity_available(
                    available_override,
                    act.and_then(|a| a.name.as_deref()),
                    row.and_then(|r| r.available),
                );
                (k.clone(), derive_worker(k, s, available))
            })
            .collect(),
        channels: d
            .channels
            .iter()
            .map(|(k, s)| (k.clone(), derive_channel(k, s)))
            .collect(),
        activities: activity_rows,
    }
}

/// The clock of a fact read from TaskRouter's REST API at `now_ms`: it is as new as the
/// read, so events that happened after the read win, and events before it lose.
pub fn rest_clock(now_ms: i64, rank: u8) -> Clock {
    Clock(now_ms, rank, "rest".to_owned())
}

#[cfg(test)]
mod tests;
