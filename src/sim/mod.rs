//! Deterministic simulator of a realistic contact-center day, expressed as the
//! Twilio TaskRouter Event Callbacks (form parameters) a workspace would POST.
//!
//! The simulation is a small discrete-event engine: actions (task arrivals,
//! reservation answers, breaks, capacity changes, ...) wait in a time-ordered
//! queue, and every emitted callback gets a globally strictly increasing
//! `TimestampMs` (at least 1 ms after the previous one), so callback order is
//! also causal order. Ground truth is recorded from the very values written
//! into the callbacks, so the two can never disagree.

pub mod demo;
pub mod expectations;
pub mod live;
mod requests;
pub mod simulate;

use serde_json::Value;

/// One TaskRouter Event Callback as the form params Twilio POSTs (name, value), all values strings.
pub type Callback = Vec<(String, String)>;

/// Parameters of a simulated day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayConfig {
    /// RNG seed; the same config always yields byte-identical output.
    pub seed: u64,
    /// Number of tasks (customer contacts) arriving over ~8 hours.
    pub tasks: usize,
    /// Total number of workers. With 3 or more, worker 0 signs off mid-day and
    /// is deleted, and the last one is a new hire created mid-day.
    pub workers: usize,
    /// Epoch milliseconds of the first event.
    pub start_ms: i64,
    /// Account SID ("AC" + 32 hex) put on every callback.
    pub account_sid: String,
    /// Workspace SID ("WS" + 32 hex) put on every callback.
    pub workspace_sid: String,
}

impl Default for DayConfig {
    fn default() -> Self {
        DayConfig {
            seed: 7,
            tasks: 300,
            workers: 12,
            start_ms: 1_767_254_400_000,
            account_sid: "AC0123456789abcdef0123456789abcdef".to_string(),
            workspace_sid: "WSfedcba9876543210fedcba9876543210".to_string(),
        }
    }
}

/// The generated day: callbacks plus the ground truth they encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDay {
    /// All callbacks, sorted by `TimestampMs` ascending (ties: generation order).
    pub callbacks: Vec<Callback>,
    /// Ground truth per task, in creation order.
    pub tasks: Vec<TaskTruth>,
    /// Ground truth per worker (final state at the end of the day).
    pub workers: Vec<WorkerTruth>,
}

/// Ground truth for one task, exactly as encoded in its callbacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskTruth {
    /// Task SID (WT...).
    pub sid: String,
    /// Task channel unique name: voice, chat or sms.
    pub channel: String,
    /// Name of the task queue the task entered.
    pub queue_name: String,
    /// SID of the task queue the task entered.
    pub queue_sid: String,
    /// `TimestampMs` of the task.created callback (also the task's creation time).
    pub created_ms: i64,
    /// "completed" | "canceled", or the open status at the end of the day.
    pub final_status: String,
    /// Number of reservation.created callbacks for this task.
    pub reservations_created: usize,
    /// `TaskAge` (s) on the first reservation.accepted.
    pub answered_in: Option<i64>,
    /// `TaskAge` (s) on task.wrapup.
    pub acw_start: Option<i64>,
    /// `TaskAge` (s) on task.completed / task.canceled.
    pub total_time: Option<i64>,
    /// Worker of the (only) accepted reservation.
    pub accepted_worker_sid: Option<String>,
    /// `TimestampMs` of the first reservation.created.
    pub first_reservation_ms: Option<i64>,
    /// `TimestampMs` of the first reservation.accepted.
    pub first_accept_ms: Option<i64>,
    /// `TimestampMs` of the reservation.created of the accepted reservation.
    pub accepted_reservation_created_ms: Option<i64>,
    /// `TaskAge` (s) at task.canceled for abandoned tasks.
    pub canceled_wait_s: Option<i64>,
    /// "inbound" or "outbound" (from the task attributes).
    pub direction: String,
    /// Number of task.updated callbacks for this task.
    pub updates: usize,
}

/// Final ground truth for one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTruth {
    /// Worker SID (WK...).
    pub sid: String,
    /// Friendly name, e.g. "alice".
    pub name: String,
    /// Activity name at the end of the day.
    pub final_activity_name: String,
    /// Activity SID at the end of the day.
    pub final_activity_sid: String,
    /// Whether the final activity is an available one.
    pub final_available: bool,
    /// When the final activity began (ms).
    pub final_activity_since_ms: i64,
    /// Every activity the worker left during the day, in order.
    pub activity_spans: Vec<ActivitySpan>,
    /// Whether a worker.deleted callback was emitted for this worker.
    pub deleted: bool,
    /// Final per-channel state (voice, chat, sms). Every channel starts the day available.
    pub channels: Vec<ChannelTruth>,
}

/// A stretch of time a worker spent in one activity, ended by an activity update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivitySpan {
    pub activity: String,
    pub available: bool,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Final state of one worker channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTruth {
    /// Task channel unique name: voice, chat or sms.
    pub unique_name: String,
    /// Task channel SID (TC...).
    pub task_channel_sid: String,
    /// Configured capacity.
    pub capacity: i64,
    /// Whether the channel is available.
    pub available: bool,
}

mod engine;
mod lifecycle;

use engine::Sim;

/// Generates a realistic, fully deterministic contact-center day for `cfg`.
pub fn realistic_day(cfg: &DayConfig) -> SimDay {
    let mut sim = Sim::new(cfg);
    sim.plan(cfg);
    sim.run();
    sim.finish()
}

#[cfg(test)]
mod tests {
    use super::engine::CHANNELS;
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn get<'a>(cb: &'a Callback, k: &str) -> Option<&'a str> {
        cb.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn req<'a>(cb: &'a Callback, k: &str) -> &'a str {
        get(cb, k).unwrap_or_else(|| panic!("{k} missing in {cb:?}"))
    }

    fn num(cb: &Callback, k: &str) -> i64 {
        req(cb, k).parse().unwrap_or_else(|e| panic!("{k}: {e}"))
    }

    fn of_type<'a>(day: &'a SimDay, ty: &'a str) -> impl Iterator<Item = &'a Callback> + 'a {
        day.callbacks
            .iter()
            .filter(move |cb| req(cb, "EventType") == ty)
    }

    fn require_all(cb: &Callback, keys: &str) {
        for k in keys.split_whitespace() {
            req(cb, k);
        }
    }

    fn is_sid(s: &str, prefix: &str) -> bool {
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        s.len() == 34 && s.starts_with(prefix) && s.chars().skip(2).all(hex)
    }

    const ALWAYS: &str = "EventType AccountSid WorkspaceSid WorkspaceName EventDescription \
        ResourceType ResourceSid Timestamp TimestampMs Sid";
    const TASK_GROUP: &str = "TaskSid TaskAttributes TaskAge TaskPriority TaskAssignmentStatus \
        TaskDateCreated TaskChannelSid TaskChannelUniqueName TaskQueueSid TaskQueueName \
        TaskQueueTargetExpression WorkflowSid WorkflowName TaskVersion";
    const WORKER_GROUP: &str =
        "WorkerSid WorkerName WorkerAttributes WorkerActivitySid WorkerActivityName WorkerVersion";

    #[test]
    fn deterministic_for_a_seed() {
        let cfg = DayConfig::default();
        assert_eq!(realistic_day(&cfg), realistic_day(&cfg));
        let other = realistic_day(&DayConfig {
            seed: 8,
            ..cfg.clone()
        });
        assert_ne!(realistic_day(&cfg).callbacks, other.callbacks);
    }

    #[test]
    fn callbacks_have_common_params_and_unique_sids() {
        let cfg = DayConfig::default();
        let day = realistic_day(&cfg);
        assert_eq!(num(&day.callbacks[0], "TimestampMs"), cfg.start_ms);
        let (mut sids, mut last) = (HashSet::new(), i64::MIN);
        for cb in &day.callbacks {
            require_all(cb, ALWAYS);
            let (ty, ms) = (req(cb, "EventType"), num(cb, "TimestampMs"));
            assert_eq!(num(cb, "Timestamp"), ms / 1000);
            assert!(ms >= last, "callbacks not sorted");
            last = ms;
            assert!(is_sid(req(cb, "Sid"), "EV") && sids.insert(req(cb, "Sid")));
            assert_eq!(req(cb, "AccountSid"), cfg.account_sid);
            let (rtype, key, prefix) = match ty.split('.').next() {
                Some("task") => ("task", "TaskSid", "WT"),
                Some("task-queue") => ("taskqueue", "TaskQueueSid", "WQ"),
                Some("workflow") => ("workflow", "WorkflowSid", "WW"),
                Some("reservation") => ("reservation", "ReservationSid", "WR"),
                Some("worker") => ("worker", "WorkerSid", "WK"),
                Some("activity") => ("activity", "ActivitySid", "WA"),
                _ => panic!("unexpected {ty}"),
            };
            assert_eq!(
                (req(cb, "ResourceType"), req(cb, "ResourceSid")),
                (rtype, req(cb, key))
            );
            assert!(is_sid(req(cb, key), prefix), "{key} of {ty}");
            if matches!(
                rtype_of(ty),
                "task" | "task-queue" | "workflow" | "reservation"
            ) {
                require_all(cb, TASK_GROUP);
                assert!(serde_json::from_str::<Value>(req(cb, "TaskAttributes")).is_ok());
                assert!(is_sid(req(cb, "TaskChannelSid"), "TC"));
            }
            if ty.starts_with("worker") || ty.starts_with("reservation") {
                require_all(cb, WORKER_GROUP);
                let attrs: Value = serde_json::from_str(req(cb, "WorkerAttributes")).expect("json");
                assert!(attrs["routing"]["skills"].is_array());
            }
        }
    }

    fn rtype_of(ty: &str) -> &str {
        ty.split('.').next().unwrap_or_default()
    }

    #[test]
    fn per_task_order_and_task_age() {
        let day = realistic_day(&DayConfig::default());
        let truth: HashMap<&str, &TaskTruth> = day.tasks.iter().map(|t| (&*t.sid, t)).collect();
        let mut last: HashMap<&str, (i64, i64)> = HashMap::new();
        for cb in day
            .callbacks
            .iter()
            .filter(|cb| get(cb, "TaskSid").is_some())
        {
            let (sid, ms, version) = (
                req(cb, "TaskSid"),
                num(cb, "TimestampMs"),
                num(cb, "TaskVersion"),
            );
            if let Some(&(prev_ms, prev_version)) = last.get(sid) {
                assert!(ms > prev_ms && version >= prev_version);
            }
            last.insert(sid, (ms, version));
            let created = truth[sid].created_ms;
            if req(cb, "EventType") == "task.created" {
                assert_eq!(ms, created);
            }
            assert_eq!(num(cb, "TaskDateCreated"), created / 1000);
            assert_eq!(num(cb, "TaskAge"), (ms - created) / 1000);
            let lag = num(cb, "Timestamp") - num(cb, "TaskDateCreated") - num(cb, "TaskAge");
            assert!((0..=1).contains(&lag));
        }
        assert_eq!(last.len(), day.tasks.len());
    }

    #[test]
    fn truth_matches_callbacks_and_day_is_varied() {
        let day = realistic_day(&DayConfig::default());
        let truth: HashMap<&str, &TaskTruth> = day.tasks.iter().map(|t| (&*t.sid, t)).collect();
        let (mut created, mut accepted) = (HashMap::new(), HashMap::new());
        let (mut status, mut res_ms) = (HashMap::new(), HashMap::new());
        for cb in &day.callbacks {
            let Some(sid) = get(cb, "TaskSid") else {
                continue;
            };
            let (t, ms, age) = (truth[sid], num(cb, "TimestampMs"), num(cb, "TaskAge"));
            status.insert(sid, req(cb, "TaskAssignmentStatus"));
            let since_res = get(cb, "ReservationSid")
                .and_then(|r| res_ms.get(r))
                .map(|c| ms - c);
            match req(cb, "EventType") {
                "reservation.created" => {
                    *created.entry(sid).or_insert(0) += 1;
                    if created[sid] == 1 {
                        assert_eq!(t.first_reservation_ms, Some(ms));
                    }
                    res_ms.insert(req(cb, "ReservationSid"), ms);
                }
                "reservation.accepted" => {
                    *accepted.entry(sid).or_insert(0) += 1;
                    assert_eq!((t.answered_in, t.first_accept_ms), (Some(age), Some(ms)));
                    assert_eq!(t.accepted_worker_sid.as_deref(), Some(req(cb, "WorkerSid")));
                    assert_eq!(t.accepted_reservation_created_ms, since_res.map(|d| ms - d));
                }
                "reservation.rejected" => assert!((2_000..8_100).contains(&since_res.unwrap_or(0))),
                "reservation.timeout" => {
                    assert!((15_000..15_500).contains(&since_res.unwrap_or(0)))
                }
                "task.wrapup" => assert_eq!(t.acw_start, Some(age)),
                "task.completed" => assert_eq!(t.total_time, Some(age)),
                "task.canceled" => {
                    assert_eq!((t.total_time, t.canceled_wait_s), (Some(age), Some(age)));
                    assert!(get(cb, "TaskCanceledReason").is_some());
                }
                _ => {}
            }
        }
        for t in &day.tasks {
            let sid = t.sid.as_str();
            assert_eq!(
                created.get(sid).copied().unwrap_or(0),
                t.reservations_created
            );
            assert_eq!(
                accepted.get(sid).copied().unwrap_or(0),
                usize::from(t.answered_in.is_some())
            );
            assert_eq!(status[sid], t.final_status);
            if t.final_status == "completed" {
                let (a, w, c) = (t.answered_in, t.acw_start, t.total_time);
                assert!(a.is_some() && a <= w && w <= c, "{t:?}");
            }
        }
        let count = |ty: &str| of_type(&day, ty).count();
        let tasks = |f: &dyn Fn(&TaskTruth) -> bool| day.tasks.iter().filter(|t| f(t)).count();
        for ty in [
            "reservation.rejected",
            "reservation.timeout",
            "reservation.canceled",
            "task.updated",
        ] {
            assert!(count(ty) > 0, "no {ty}");
        }
        assert!(
            count("worker.capacity.update") > 0 && count("worker.channel.availability.update") > 0
        );
        assert_eq!((count("worker.created"), count("worker.deleted")), (1, 1));
        assert!(tasks(&|t| t.canceled_wait_s.is_some_and(|s| s < 5)) > 0);
        assert!(tasks(&|t| t.canceled_wait_s.is_some_and(|s| s >= 30)) > 0);
        assert!(tasks(&|t| t.answered_in.is_some_and(|s| s <= 15)) > 20);
        assert!(tasks(&|t| t.answered_in.is_some_and(|s| s > 15)) > 20);
        assert!(tasks(&|t| !["completed", "canceled"].contains(&t.final_status.as_str())) > 0);
        assert!(tasks(&|t| t.direction == "outbound") > 0);
        for ch in CHANNELS {
            assert!(tasks(&|t| t.channel == ch) > 30, "{ch}");
        }
    }

    /// Replays worker state from the callbacks alone and checks every reservation against it.
    fn check_worker_limits(day: &SimDay) {
        let mut cap: HashMap<(&str, &str), i64> = HashMap::new();
        for w in &day.workers {
            for c in &w.channels {
                cap.insert((&w.sid, &c.unique_name), c.capacity);
            }
        }
        for cb in of_type(day, "worker.capacity.update")
            .collect::<Vec<_>>()
            .iter()
            .rev()
        {
            let key = (req(cb, "WorkerSid"), req(cb, "TaskChannelUniqueName"));
            cap.insert(key, num(cb, "WorkerChannelPreviousCapacity"));
        }
        let (mut activity, mut avail, mut count) = (HashMap::new(), HashMap::new(), HashMap::new());
        let mut deleted = HashSet::new();
        for cb in &day.callbacks {
            let (ty, Some(w)) = (req(cb, "EventType"), get(cb, "WorkerSid")) else {
                continue;
            };
            assert!(!deleted.contains(w), "event for deleted worker");
            let key = (w, get(cb, "TaskChannelUniqueName").unwrap_or_default());
            let current = *activity.get(w).unwrap_or(&"Offline");
            let n = count.entry(key).or_insert(0);
            match ty {
                "worker.activity.update" => {
                    assert_eq!(req(cb, "WorkerPreviousActivityName"), current);
                    activity.insert(w, req(cb, "WorkerActivityName"));
                }
                "worker.capacity.update" => {
                    let new = num(cb, "WorkerChannelCapacity");
                    assert_eq!(cap[&key], num(cb, "WorkerChannelPreviousCapacity"));
                    assert!(*n <= new && num(cb, "WorkerChannelTaskCount") == *n);
                    assert_eq!(num(cb, "WorkerChannelAvailableCapacity"), new - *n);
                    cap.insert(key, new);
                }
                "worker.channel.availability.update" => {
                    avail.insert(key, req(cb, "WorkerChannelAvailable") == "true");
                }
                "reservation.created" => {
                    assert_eq!(current, "Available");
                    assert!(*avail.get(&key).unwrap_or(&true), "channel unavailable");
                    *n += 1;
                    assert!(*n <= cap[&key], "capacity exceeded");
                }
                "reservation.rejected"
                | "reservation.timeout"
                | "reservation.canceled"
                | "reservation.completed" => {
                    *n -= 1;
                    assert!(*n >= 0);
                }
                "worker.deleted" => {
                    deleted.insert(w);
                }
                _ => {}
            }
            if ty != "worker.activity.update" {
                assert_eq!(req(cb, "WorkerActivityName"), current);
            }
        }
        for w in &day.workers {
            let name = *activity.get(w.sid.as_str()).unwrap_or(&"Offline");
            assert_eq!(
                (name, w.deleted),
                (w.final_activity_name.as_str(), deleted.contains(&*w.sid))
            );
            for c in &w.channels {
                let key = (w.sid.as_str(), c.unique_name.as_str());
                assert_eq!(
                    (cap[&key], *avail.get(&key).unwrap_or(&true)),
                    (c.capacity, c.available)
                );
            }
        }
    }

    #[test]
    fn workers_stay_within_capacity_and_availability() {
        check_worker_limits(&realistic_day(&DayConfig::default()));
        let final_available = realistic_day(&DayConfig::default()).workers;
        assert!(final_available.iter().any(|w| w.final_available));
        assert!(
            final_available
                .iter()
                .filter(|w| w.final_activity_name == "Offline")
                .count()
                > 6
        );
    }

    #[test]
    fn small_and_odd_configs_work() {
        for (seed, workers, tasks) in [
            (1, 0, 10),
            (2, 1, 5),
            (3, 2, 20),
            (4, 3, 30),
            (5, 5, 0),
            (6, 20, 60),
        ] {
            let day = realistic_day(&DayConfig {
                seed,
                workers,
                tasks,
                ..DayConfig::default()
            });
            assert_eq!((day.tasks.len(), day.workers.len()), (tasks, workers));
            assert_eq!(of_type(&day, "task.created").count(), tasks);
            let names: HashSet<&str> = day.workers.iter().map(|w| w.name.as_str()).collect();
            assert_eq!(names.len(), workers);
            check_worker_limits(&day);
        }
    }
}
