//! Workers, worker channels and activities.

use super::*;

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
