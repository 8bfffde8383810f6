//! Tasks: the state one event contributes to its task, merged by registers, and the
//! row derived from it.

use super::*;

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

/// When the task was created: TaskRouter's `TaskDateCreated`, else the estimate from an
/// event's time and `TaskAge`.
pub fn created_ms(s: &TaskState) -> Option<i64> {
    s.date_created
        .as_ref()
        .map(|r| r.1)
        .or_else(|| s.created_estimate.as_ref().map(|r| r.1))
}

/// Derives the row and its metrics from a task's state.
pub fn derive_task(sid: &str, s: &TaskState, sla: &Sla) -> TaskRow {
    let v = |r: &Option<Reg<String>>| r.as_ref().map(|r| r.1.clone());
    let created_ms = created_ms(s);
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
