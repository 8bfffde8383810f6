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
pub mod simulate;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

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
    /// Whether a worker.deleted callback was emitted for this worker.
    pub deleted: bool,
    /// Final per-channel state (voice, chat, sms). Every channel starts the day available.
    pub channels: Vec<ChannelTruth>,
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

const MS_S: i64 = 1_000;
const MS_M: i64 = 60_000;
const MS_H: i64 = 3_600_000;
/// The simulation stops at start + this (tasks arrive until start + 8 h).
const DAY_MS: i64 = 8 * MS_H + 5 * MS_M;
const WORKSPACE_NAME: &str = "Flex Task Assignment";
const WORKFLOW_NAME: &str = "Assign to Anyone";
const CHANNELS: [&str; 3] = ["voice", "chat", "sms"];
const VOICE: usize = 0;
const CHAT: usize = 1;
const SMS: usize = 2;
/// (queue name, skill matched by its target expression).
const QUEUES: [(&str, &str); 3] = [
    ("Sales", "sales"),
    ("Support", "support"),
    ("Billing", "billing"),
];
/// (activity name, available).
const ACTIVITIES: [(&str, bool); 4] = [
    ("Offline", false),
    ("Available", true),
    ("Break", false),
    ("Busy", false),
];
const OFFLINE: usize = 0;
const AVAILABLE: usize = 1;
const BREAK: usize = 2;
const FIRST_NAMES: [&str; 16] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil",
];
const LAST_NAMES: [&str; 8] = [
    "Smith", "Jones", "Diaz", "Miller", "Chen", "Lopez", "Kim", "Novak",
];
/// Task cancel reason per channel (voice callers hang up, conversations time out).
const CANCEL_REASONS: [&str; 3] = ["hangup", "Task TTL Exceeded", "Task TTL Exceeded"];
const CONTACT_NUMBER: &str = "+18005550100";

/// Generates a realistic, fully deterministic contact-center day for `cfg`.
pub fn realistic_day(cfg: &DayConfig) -> SimDay {
    let mut sim = Sim::new(cfg);
    sim.plan(cfg);
    sim.run();
    sim.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Accept,
    Reject,
    Timeout,
}

impl Outcome {
    fn verb(self) -> &'static str {
        ["accepted", "rejected", "timeout"][self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Dispatch,
    TaskArrive(usize),
    TaskUpdate(usize),
    TaskAbandon(usize),
    ResAnswer(usize, usize),
    Wrapup(usize),
    Complete(usize),
    WorkerCreate(usize),
    SignOn(usize),
    BreakStart(usize, i64),
    BreakEnd(usize),
    SignOff(usize),
    Delete(usize),
    ChatCapacity(usize),
    SmsAvailable(usize, bool),
    Attributes(usize),
}

struct Res {
    sid: String,
    worker: usize,
    created_ms: i64,
    version: i64,
    outcome: Outcome,
}

struct Task {
    truth: TaskTruth,
    channel: usize,
    queue: usize,
    attrs: Value,
    priority: i64,
    version: i64,
    status: &'static str,
    handle_ms: i64,
    wrap_ms: i64,
    /// (abandon delay after creation in ms, max reservations offered before that).
    abandon: Option<(i64, usize)>,
    update_after: Option<i64>,
    res: Vec<Res>,
    current: Option<usize>,
    tried: Vec<usize>,
    routable_at: i64,
    failures: usize,
}

struct Chan {
    capacity: i64,
    available: bool,
    count: i64,
}

struct Worker {
    sid: String,
    name: String,
    full_name: String,
    skills: Vec<String>,
    languages: Vec<String>,
    activity: usize,
    since: i64,
    version: i64,
    exists: bool,
    deleted: bool,
    draining: bool,
    chans: [Chan; 3],
    last_free: i64,
}

impl Worker {
    fn busy(&self) -> bool {
        self.chans.iter().any(|c| c.count > 0)
    }
}

struct Sim {
    rng: StdRng,
    account: String,
    workspace: String,
    start: i64,
    activity_sids: Vec<String>,
    queue_sids: Vec<String>,
    channel_sids: Vec<String>,
    workflow_sid: String,
    tasks: Vec<Task>,
    workers: Vec<Worker>,
    heap: BinaryHeap<Reverse<(i64, u64, Action)>>,
    seq: u64,
    clock: i64,
    out: Vec<(i64, Callback)>,
    pending: Vec<usize>,
    doomed: Option<usize>,
}

fn new_sid(rng: &mut StdRng, prefix: &str) -> String {
    format!("{prefix}{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>())
}

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// Index of the first cumulative threshold above `u` (or the last index).
fn weighted<const N: usize>(u: f64, cumulative: [f64; N]) -> usize {
    cumulative.iter().position(|&c| u < c).unwrap_or(N)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Sim {
    fn new(cfg: &DayConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let activity_sids = (0..ACTIVITIES.len())
            .map(|_| new_sid(&mut rng, "WA"))
            .collect();
        let queue_sids = (0..QUEUES.len()).map(|_| new_sid(&mut rng, "WQ")).collect();
        let channel_sids = (0..CHANNELS.len())
            .map(|_| new_sid(&mut rng, "TC"))
            .collect();
        let workflow_sid = new_sid(&mut rng, "WW");
        let start = cfg.start_ms;
        let mut workers = Vec::with_capacity(cfg.workers);
        for i in 0..cfg.workers {
            let (first, last) = (FIRST_NAMES[i % 16], LAST_NAMES[i % 8]);
            let name = match i / 16 {
                0 => first.to_string(),
                k => format!("{first}{}", k + 1),
            };
            let mut skills = Vec::new();
            for (k, (_, skill)) in QUEUES.iter().enumerate() {
                if k == i % 3 || rng.gen_bool([0.45, 0.75, 0.35][k]) {
                    skills.push(skill.to_string());
                }
            }
            let chat_cap = if rng.gen_bool(0.5) { 2 } else { 3 };
            let chan = |capacity| Chan {
                capacity,
                available: true,
                count: 0,
            };
            workers.push(Worker {
                sid: new_sid(&mut rng, "WK"),
                full_name: format!("{} {last}", capitalize(first)),
                name,
                skills,
                languages: Vec::new(),
                activity: OFFLINE,
                since: start - 14 * MS_H,
                version: 0,
                exists: true,
                deleted: false,
                draining: false,
                chans: [chan(1), chan(chat_cap), chan(2)],
                last_free: start,
            });
        }
        Sim {
            rng,
            account: cfg.account_sid.clone(),
            workspace: cfg.workspace_sid.clone(),
            start,
            activity_sids,
            queue_sids,
            channel_sids,
            workflow_sid,
            tasks: Vec::with_capacity(cfg.tasks),
            workers,
            heap: BinaryHeap::new(),
            seq: 0,
            clock: start - 1,
            out: Vec::new(),
            pending: Vec::new(),
            doomed: None,
        }
    }

    fn r(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.gen_range(lo..hi)
    }

    fn at(&mut self, time: i64, a: Action) {
        self.seq += 1;
        self.heap.push(Reverse((time, self.seq, a)));
    }

    /// Schedules `a` at `base + [lo, hi)` ms.
    fn at_rand(&mut self, base: i64, lo: i64, hi: i64, a: Action) {
        let t = base + self.r(lo, hi);
        self.at(t, a);
    }

    /// Next event time: strictly after the previous event.
    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    fn plan(&mut self, cfg: &DayConfig) {
        for (a, &(name, avail)) in ACTIVITIES.iter().enumerate() {
            let ts = self.tick();
            let sid = self.activity_sids[a].clone();
            let extra = vec![
                kv("ActivitySid", &sid),
                kv("ActivityName", name),
                kv("ActivityAvailable", avail),
            ];
            let desc = format!("Activity {name} created");
            self.emit(ts, "activity.created", desc, ("activity", sid), extra);
        }
        let s = self.start;
        let n = cfg.workers;
        let special = n >= 3;
        for i in 0..n {
            if special && i == n - 1 {
                self.workers[i].exists = false;
                self.at_rand(s, 105 * MS_M, 135 * MS_M, Action::WorkerCreate(i));
                continue;
            }
            self.at_rand(s, 10 * MS_S, 15 * MS_M, Action::SignOn(i));
            if special && i == 0 {
                self.doomed = Some(i);
                let d = self.r(10 * MS_M, 20 * MS_M);
                self.at_rand(s, MS_H, 2 * MS_H, Action::BreakStart(i, d));
                self.at_rand(s, 210 * MS_M, 240 * MS_M, Action::SignOff(i));
                continue;
            }
            let d = self.r(10 * MS_M, 20 * MS_M);
            self.at_rand(s, 75 * MS_M, 195 * MS_M, Action::BreakStart(i, d));
            if self.rng.gen_bool(0.6) {
                let d = self.r(10 * MS_M, 30 * MS_M);
                self.at_rand(s, 270 * MS_M, 405 * MS_M, Action::BreakStart(i, d));
            }
            if i % 5 != 3 {
                self.at_rand(s, 470 * MS_M, 484 * MS_M, Action::SignOff(i));
            }
        }
        let regular: Vec<usize> = (0..n)
            .filter(|&i| !special || (i != 0 && i != n - 1))
            .collect();
        if !regular.is_empty() {
            let pick = |k: usize| regular[k % regular.len()];
            let plan = [
                (90, Action::Attributes(pick(3))),
                (270, Action::Attributes(pick(6))),
                (160, Action::ChatCapacity(pick(1))),
                (200, Action::ChatCapacity(pick(4))),
                (310, Action::ChatCapacity(pick(1))),
                (150, Action::SmsAvailable(pick(2), false)),
                (180, Action::SmsAvailable(pick(5), false)),
                (300, Action::SmsAvailable(pick(2), true)),
            ];
            for (minute, a) in plan {
                self.at_rand(s, minute * MS_M, (minute + 20) * MS_M, a);
            }
        }
        let mut times: Vec<i64> = (0..cfg.tasks).map(|_| self.arrival()).collect();
        times.sort_unstable();
        for (k, off) in times.into_iter().enumerate() {
            let task = self.plan_task();
            self.tasks.push(task);
            self.at(s + off, Action::TaskArrive(k));
        }
    }

    /// Arrival offset: half uniform over the day, half in a mid-morning and an afternoon peak.
    fn arrival(&mut self) -> i64 {
        let (lo, hi) = (5 * MS_M, 8 * MS_H);
        let u: f64 = self.rng.gen();
        let t = if u < 0.5 {
            self.r(lo, hi)
        } else {
            let center = if u < 0.78 { 150 * MS_M } else { 360 * MS_M };
            center + self.r(-45 * MS_M, 45 * MS_M) + self.r(-45 * MS_M, 45 * MS_M)
        };
        t.clamp(lo, hi)
    }

    fn plan_task(&mut self) -> Task {
        let sid = new_sid(&mut self.rng, "WT");
        // voice 50%, chat 30%, sms 20%; Support 50%, Sales 30%, Billing 20%.
        let channel = weighted(self.rng.gen(), [0.5, 0.8]);
        let queue = [1, 0, 2][weighted(self.rng.gen(), [0.5, 0.8])];
        let outbound = channel == VOICE && self.rng.gen_bool(0.08);
        let direction = if outbound { "outbound" } else { "inbound" };
        let customer = format!("+1555{:07}", self.rng.gen_range(0..10_000_000));
        let attrs = if channel == VOICE {
            let call_sid = new_sid(&mut self.rng, "CA");
            let (from, to) = if outbound {
                (CONTACT_NUMBER, customer.as_str())
            } else {
                (customer.as_str(), CONTACT_NUMBER)
            };
            json!({"direction": direction, "call_sid": call_sid, "from": from, "to": to, "name": customer})
        } else {
            let channel_type = if channel == CHAT { "web" } else { "sms" };
            let conversation = new_sid(&mut self.rng, "CH");
            json!({"channelType": channel_type, "direction": direction, "from": customer,
                   "conversationSid": conversation, "name": customer})
        };
        let priority = if self.rng.gen_bool(0.08) { 10 } else { 0 };
        let abandon = if !outbound && self.rng.gen_bool(0.12) {
            if self.rng.gen_bool(0.4) {
                Some((self.r(1_000, 4_900), 1))
            } else {
                let max = self.rng.gen_range(0..=2);
                Some((self.r(30 * MS_S, 300 * MS_S), max))
            }
        } else {
            None
        };
        let handle_ms = if channel == VOICE {
            self.r(2 * MS_M, 10 * MS_M)
        } else {
            self.r(5 * MS_M, 20 * MS_M)
        };
        let wrap_ms = self.r(10 * MS_S, 90 * MS_S);
        let update_after = if self.rng.gen_bool(0.125) {
            Some(self.r(2 * MS_S, 90 * MS_S))
        } else {
            None
        };
        Task {
            truth: TaskTruth {
                sid,
                channel: CHANNELS[channel].to_string(),
                queue_name: QUEUES[queue].0.to_string(),
                queue_sid: self.queue_sids[queue].clone(),
                direction: direction.to_string(),
                ..TaskTruth::default()
            },
            channel,
            queue,
            attrs,
            priority,
            version: 0,
            status: "pending",
            handle_ms,
            wrap_ms,
            abandon,
            update_after,
            res: Vec::new(),
            current: None,
            tried: Vec::new(),
            routable_at: i64::MAX,
            failures: 0,
        }
    }

    fn run(&mut self) {
        let end = self.start + DAY_MS;
        while let Some(Reverse((time, _, action))) = self.heap.pop() {
            if time > end {
                break;
            }
            self.clock = self.clock.max(time - 1);
            self.handle(action);
            self.dispatch();
        }
    }

    fn handle(&mut self, a: Action) {
        match a {
            Action::Dispatch => {}
            Action::TaskArrive(t) => self.task_arrive(t),
            Action::TaskUpdate(t) => self.task_update(t),
            Action::TaskAbandon(t) => self.task_abandon(t),
            Action::ResAnswer(t, r) => self.res_answer(t, r),
            Action::Wrapup(t) => self.wrapup(t),
            Action::Complete(t) => self.complete(t),
            Action::WorkerCreate(w) => self.worker_create(w),
            Action::SignOn(w) => {
                let k = &self.workers[w];
                if k.exists && !k.deleted && k.activity == OFFLINE {
                    self.set_activity(w, AVAILABLE);
                }
            }
            Action::BreakStart(w, dur) => {
                if self.workers[w].activity != AVAILABLE {
                    return;
                }
                if self.workers[w].busy() {
                    // Finish current work first; no new reservations meanwhile.
                    self.workers[w].draining = true;
                    let t = self.clock + 5 * MS_S;
                    self.at(t, Action::BreakStart(w, dur));
                    return;
                }
                let ts = self.set_activity(w, BREAK);
                self.at(ts + dur, Action::BreakEnd(w));
            }
            Action::BreakEnd(w) => {
                if self.workers[w].activity == BREAK {
                    self.set_activity(w, AVAILABLE);
                }
            }
            Action::SignOff(w) => self.sign_off(w),
            Action::Delete(w) => self.delete(w),
            Action::ChatCapacity(w) => self.chat_capacity(w),
            Action::SmsAvailable(w, on) => self.sms_available(w, on),
            Action::Attributes(w) => self.attributes(w),
        }
    }

    // ----- emission -------------------------------------------------------

    fn emit(&mut self, ts: i64, etype: &str, desc: String, res: (&str, String), extra: Callback) {
        let ev = new_sid(&mut self.rng, "EV");
        let mut cb = vec![
            kv("EventType", etype),
            kv("AccountSid", &self.account),
            kv("WorkspaceSid", &self.workspace),
            kv("WorkspaceName", WORKSPACE_NAME),
            kv("EventDescription", desc),
            kv("ResourceType", res.0),
            kv("ResourceSid", res.1),
            kv("Timestamp", ts.div_euclid(1000)),
            kv("TimestampMs", ts),
            kv("Sid", ev),
        ];
        cb.extend(extra);
        self.out.push((ts, cb));
    }

    fn age(&self, t: usize, ts: i64) -> i64 {
        (ts - self.tasks[t].truth.created_ms).div_euclid(1000)
    }

    fn task_params(&self, t: usize, ts: i64) -> Callback {
        let task = &self.tasks[t];
        vec![
            kv("TaskSid", &task.truth.sid),
            kv("TaskAttributes", task.attrs.to_string()),
            kv("TaskAge", self.age(t, ts)),
            kv("TaskPriority", task.priority),
            kv("TaskAssignmentStatus", task.status),
            kv("TaskDateCreated", task.truth.created_ms.div_euclid(1000)),
            kv("TaskChannelSid", &self.channel_sids[task.channel]),
            kv("TaskChannelUniqueName", CHANNELS[task.channel]),
            kv("TaskQueueSid", &task.truth.queue_sid),
            kv("TaskQueueName", &task.truth.queue_name),
            kv(
                "TaskQueueTargetExpression",
                format!("skills HAS '{}'", QUEUES[task.queue].1),
            ),
            kv("WorkflowSid", &self.workflow_sid),
            kv("WorkflowName", WORKFLOW_NAME),
            kv("TaskVersion", task.version),
        ]
    }

    /// Emits a task-group event whose resource (task, queue or workflow) follows from `etype`.
    fn emit_task(&mut self, t: usize, ts: i64, etype: &str, desc: String, more: Callback) {
        let mut extra = self.task_params(t, ts);
        extra.extend(more);
        let res = match etype.split('.').next() {
            Some("task-queue") => ("taskqueue", self.tasks[t].truth.queue_sid.clone()),
            Some("workflow") => ("workflow", self.workflow_sid.clone()),
            _ => ("task", self.tasks[t].truth.sid.clone()),
        };
        self.emit(ts, etype, desc, res, extra);
    }

    fn worker_attrs(&self, w: usize) -> String {
        let k = &self.workers[w];
        let mut v = json!({
            "contact_uri": format!("client:{}", k.name),
            "full_name": k.full_name,
            "routing": {"skills": k.skills},
        });
        if !k.languages.is_empty() {
            if let Value::Object(m) = &mut v {
                m.insert("languages".to_string(), json!(k.languages));
            }
        }
        v.to_string()
    }

    fn worker_params(&self, w: usize) -> Callback {
        let k = &self.workers[w];
        vec![
            kv("WorkerSid", &k.sid),
            kv("WorkerName", &k.name),
            kv("WorkerAttributes", self.worker_attrs(w)),
            kv("WorkerActivitySid", &self.activity_sids[k.activity]),
            kv("WorkerActivityName", ACTIVITIES[k.activity].0),
            kv("WorkerVersion", k.version),
        ]
    }

    fn emit_worker(&mut self, w: usize, ts: i64, etype: &str, desc: String, more: Callback) {
        let mut extra = self.worker_params(w);
        extra.extend(more);
        let sid = self.workers[w].sid.clone();
        self.emit(ts, etype, desc, ("worker", sid), extra);
    }

    fn emit_res(&mut self, t: usize, r: usize, ts: i64, verb: &str) {
        let w = self.tasks[t].res[r].worker;
        let mut extra = self.task_params(t, ts);
        extra.extend(self.worker_params(w));
        let res = &self.tasks[t].res[r];
        let rsid = res.sid.clone();
        extra.push(kv("ReservationSid", &rsid));
        extra.push(kv("ReservationVersion", res.version));
        let desc = format!("Reservation {rsid} {verb} ({})", self.workers[w].name);
        let etype = format!("reservation.{verb}");
        self.emit(ts, &etype, desc, ("reservation", rsid), extra);
    }

    fn channel_params(&self, w: usize, ch: usize, prev_capacity: i64) -> Callback {
        let c = &self.workers[w].chans[ch];
        vec![
            kv("TaskChannelSid", &self.channel_sids[ch]),
            kv("TaskChannelUniqueName", CHANNELS[ch]),
            kv("WorkerChannelAvailable", c.available),
            kv("WorkerChannelCapacity", c.capacity),
            kv("WorkerChannelPreviousCapacity", prev_capacity),
            kv("WorkerChannelAvailableCapacity", c.capacity - c.count),
            kv("WorkerChannelTaskCount", c.count),
        ]
    }

    // ----- tasks ----------------------------------------------------------

    fn task_arrive(&mut self, t: usize) {
        // The first tick below (task.created) happens at exactly `created`.
        let created = self.clock + 1;
        self.tasks[t].truth.created_ms = created;
        let (sid, qname) = (&self.tasks[t].truth.sid, &self.tasks[t].truth.queue_name);
        let descs = [
            format!("Task {sid} created"),
            format!("Task {sid} entered TaskQueue {qname}"),
            format!("Task {sid} matched a target of Workflow {WORKFLOW_NAME}"),
        ];
        let types = [
            "task.created",
            "task-queue.entered",
            "workflow.target-matched",
        ];
        for (etype, desc) in types.into_iter().zip(descs) {
            let ts = self.tick();
            self.emit_task(t, ts, etype, desc, vec![]);
        }
        let routable = self.clock + self.r(300, 1_500);
        self.tasks[t].routable_at = routable;
        self.at(routable, Action::Dispatch);
        if let Some((after, _)) = self.tasks[t].abandon {
            self.at(created + after, Action::TaskAbandon(t));
        }
        if let Some(after) = self.tasks[t].update_after {
            self.at(created + after, Action::TaskUpdate(t));
        }
        self.pending.push(t);
    }

    fn task_update(&mut self, t: usize) {
        let case = self.rng.gen_range(10_000..100_000);
        let task = &mut self.tasks[t];
        let what = match task.status {
            "pending" | "reserved" if task.priority == 0 => {
                task.priority = 10;
                "priority"
            }
            "pending" | "reserved" | "assigned" => {
                if let Value::Object(m) = &mut task.attrs {
                    m.insert("crm_case".to_string(), json!(format!("CS-{case}")));
                }
                "attributes"
            }
            _ => return,
        };
        task.version += 1;
        task.truth.updates += 1;
        let desc = format!("Task {} {what} updated", task.truth.sid);
        let ts = self.tick();
        self.emit_task(t, ts, "task.updated", desc, vec![]);
    }

    fn task_abandon(&mut self, t: usize) {
        let was = self.tasks[t].status;
        if was != "pending" && was != "reserved" {
            return;
        }
        self.tasks[t].status = "canceled";
        self.tasks[t].version += 1;
        if let Some(r) = self.tasks[t].current.take() {
            let ts = self.tick();
            self.tasks[t].res[r].version += 1;
            let (w, ch) = (self.tasks[t].res[r].worker, self.tasks[t].channel);
            self.workers[w].chans[ch].count -= 1;
            self.emit_res(t, r, ts, "canceled");
        }
        let ts = self.tick();
        let age = self.age(t, ts);
        let task = &mut self.tasks[t];
        task.truth.total_time = Some(age);
        task.truth.canceled_wait_s = Some(age);
        let more = vec![kv("TaskCanceledReason", CANCEL_REASONS[task.channel])];
        let desc = format!("Task {} canceled", task.truth.sid);
        self.emit_task(t, ts, "task.canceled", desc, more);
        self.pending.retain(|&x| x != t);
    }

    fn dispatch(&mut self) {
        let now = self.clock;
        let mut cands: Vec<usize> = self
            .pending
            .iter()
            .copied()
            .filter(|&t| {
                let k = &self.tasks[t];
                let offered_enough = k.abandon.is_some_and(|(_, max)| k.res.len() >= max);
                k.status == "pending" && k.routable_at <= now && !offered_enough
            })
            .collect();
        // Priority first, then age (task indices follow creation order).
        cands.sort_by_key(|&t| (Reverse(self.tasks[t].priority), t));
        // A reservation only takes capacity, so a (channel, queue) with no eligible worker
        // stays without one for the rest of this round: its other tasks are skipped
        // rather than each scanning every worker (quadratic on an overloaded day).
        let mut full: Vec<(usize, usize)> = Vec::new();
        for t in cands {
            let key = (self.tasks[t].channel, self.tasks[t].queue);
            if full.contains(&key) {
                continue;
            }
            match self.pick_worker(t) {
                Some(w) => self.reserve(t, w),
                None if self.tasks[t].tried.is_empty() => full.push(key),
                None => {}
            }
        }
    }

    /// Longest-idle eligible worker, preferring ones not yet offered this task.
    fn pick_worker(&self, t: usize) -> Option<usize> {
        let task = &self.tasks[t];
        let skill = QUEUES[task.queue].1;
        let best = |excluded: &[usize]| {
            (0..self.workers.len())
                .filter(|&w| {
                    let k = &self.workers[w];
                    let c = &k.chans[task.channel];
                    k.exists
                        && !k.deleted
                        && !k.draining
                        && k.activity == AVAILABLE
                        && c.available
                        && c.count < c.capacity
                        && k.skills.iter().any(|s| s == skill)
                        && !excluded.contains(&w)
                })
                .min_by_key(|&w| (self.workers[w].last_free, w))
        };
        let last: Vec<usize> = task.tried.last().copied().into_iter().collect();
        best(&task.tried).or_else(|| best(&last))
    }

    fn reserve(&mut self, t: usize, w: usize) {
        let ts = self.tick();
        let rsid = new_sid(&mut self.rng, "WR");
        let ch = self.tasks[t].channel;
        self.workers[w].chans[ch].count += 1;
        let all = [Outcome::Accept, Outcome::Reject, Outcome::Timeout];
        let outcome = if self.tasks[t].abandon.is_some() {
            // The customer will hang up: this offer is declined or goes unanswered.
            all[weighted(self.rng.gen(), [0.0, 0.3])]
        } else if self.tasks[t].failures >= 3 {
            Outcome::Accept
        } else {
            all[weighted(self.rng.gen(), [0.78, 0.89])]
        };
        let delay = match outcome {
            Outcome::Accept if ch == VOICE => self.r(2 * MS_S, 12 * MS_S),
            Outcome::Accept => self.r(2 * MS_S, 14 * MS_S),
            Outcome::Reject => self.r(2 * MS_S, 8 * MS_S),
            Outcome::Timeout => 15 * MS_S + self.r(0, 300),
        };
        let task = &mut self.tasks[t];
        task.res.push(Res {
            sid: rsid,
            worker: w,
            created_ms: ts,
            version: 0,
            outcome,
        });
        let r = task.res.len() - 1;
        task.current = Some(r);
        task.tried.push(w);
        task.status = "reserved";
        task.version += 1;
        task.truth.reservations_created += 1;
        task.truth.first_reservation_ms.get_or_insert(ts);
        self.emit_res(t, r, ts, "created");
        self.at(ts + delay, Action::ResAnswer(t, r));
    }

    fn res_answer(&mut self, t: usize, r: usize) {
        if self.tasks[t].current != Some(r) || self.tasks[t].status != "reserved" {
            return;
        }
        let ts = self.tick();
        let (w, outcome, created) = {
            let res = &self.tasks[t].res[r];
            (res.worker, res.outcome, res.created_ms)
        };
        let age = self.age(t, ts);
        let wsid = self.workers[w].sid.clone();
        let task = &mut self.tasks[t];
        task.res[r].version += 1;
        task.version += 1;
        if outcome == Outcome::Accept {
            task.status = "assigned";
            if task.truth.answered_in.is_none() {
                task.truth.answered_in = Some(age);
                task.truth.first_accept_ms = Some(ts);
                task.truth.accepted_worker_sid = Some(wsid);
                task.truth.accepted_reservation_created_ms = Some(created);
            }
            let handle = task.handle_ms;
            self.pending.retain(|&x| x != t);
            self.emit_res(t, r, ts, outcome.verb());
            self.at(ts + handle, Action::Wrapup(t));
        } else {
            task.status = "pending";
            task.current = None;
            task.failures += 1;
            let ch = task.channel;
            self.workers[w].chans[ch].count -= 1;
            self.emit_res(t, r, ts, outcome.verb());
            let routable = ts + self.r(200, 1_000);
            self.tasks[t].routable_at = routable;
            self.at(routable, Action::Dispatch);
        }
    }

    fn wrapup(&mut self, t: usize) {
        let (Some(r), "assigned") = (self.tasks[t].current, self.tasks[t].status) else {
            return;
        };
        let ts = self.tick();
        let age = self.age(t, ts);
        let task = &mut self.tasks[t];
        task.status = "wrapping";
        task.version += 1;
        task.truth.acw_start = Some(age);
        let desc = format!("Task {} wrapping up", task.truth.sid);
        let wrap = task.wrap_ms;
        self.emit_task(t, ts, "task.wrapup", desc, vec![]);
        let ts = self.tick();
        self.tasks[t].res[r].version += 1;
        self.emit_res(t, r, ts, "wrapup");
        self.at(ts + wrap, Action::Complete(t));
    }

    fn complete(&mut self, t: usize) {
        let (Some(r), "wrapping") = (self.tasks[t].current, self.tasks[t].status) else {
            return;
        };
        let ts = self.tick();
        let age = self.age(t, ts);
        let task = &mut self.tasks[t];
        task.status = "completed";
        task.version += 1;
        task.truth.total_time = Some(age);
        let desc = format!("Task {} completed", task.truth.sid);
        let more = vec![kv("TaskCompletedReason", "Task completed by worker")];
        self.emit_task(t, ts, "task.completed", desc, more);
        let ts = self.tick();
        let (w, ch) = (self.tasks[t].res[r].worker, self.tasks[t].channel);
        self.tasks[t].res[r].version += 1;
        self.tasks[t].current = None;
        self.workers[w].chans[ch].count -= 1;
        self.workers[w].last_free = ts;
        self.emit_res(t, r, ts, "completed");
    }

    // ----- workers --------------------------------------------------------

    /// Changes a worker's activity and emits worker.activity.update; returns its time.
    fn set_activity(&mut self, w: usize, new: usize) -> i64 {
        let ts = self.tick();
        let k = &mut self.workers[w];
        let (prev, dt) = (k.activity, ts - k.since);
        k.activity = new;
        k.since = ts;
        k.version += 1;
        k.draining = false;
        if new == AVAILABLE {
            k.last_free = ts;
        }
        let more = vec![
            kv("WorkerPreviousActivitySid", &self.activity_sids[prev]),
            kv("WorkerPreviousActivityName", ACTIVITIES[prev].0),
            kv("WorkerTimeInPreviousActivity", dt.div_euclid(1000)),
            kv("WorkerTimeInPreviousActivityMs", dt),
        ];
        let desc = format!("Worker {} updated to {}", k.name, ACTIVITIES[new].0);
        self.emit_worker(w, ts, "worker.activity.update", desc, more);
        ts
    }

    fn worker_create(&mut self, w: usize) {
        let ts = self.tick();
        let k = &mut self.workers[w];
        k.exists = true;
        k.since = ts;
        let desc = format!("Worker {} created", k.name);
        self.emit_worker(w, ts, "worker.created", desc, vec![]);
        let s = self.start;
        self.at_rand(ts, 5 * MS_M, 10 * MS_M, Action::SignOn(w));
        let d = self.r(10 * MS_M, 20 * MS_M);
        self.at_rand(s, 5 * MS_H, 6 * MS_H, Action::BreakStart(w, d));
        self.at_rand(s, 470 * MS_M, 484 * MS_M, Action::SignOff(w));
    }

    fn sign_off(&mut self, w: usize) {
        let k = &self.workers[w];
        if !k.exists || k.deleted || k.activity == OFFLINE {
            return;
        }
        if k.activity == AVAILABLE && k.busy() {
            self.workers[w].draining = true;
            let t = self.clock + 5 * MS_S;
            self.at(t, Action::SignOff(w));
            return;
        }
        let ts = self.set_activity(w, OFFLINE);
        if self.doomed == Some(w) {
            self.at_rand(ts, 5 * MS_M, 15 * MS_M, Action::Delete(w));
        }
    }

    fn delete(&mut self, w: usize) {
        if self.workers[w].activity != OFFLINE || self.workers[w].busy() {
            let t = self.clock + MS_M;
            self.at(t, Action::Delete(w));
            return;
        }
        let ts = self.tick();
        self.workers[w].deleted = true;
        let desc = format!("Worker {} deleted", self.workers[w].name);
        self.emit_worker(w, ts, "worker.deleted", desc, vec![]);
    }

    /// Cycles chat capacity 2 -> 3 -> 1 -> 2, waiting until the new capacity fits current work.
    fn chat_capacity(&mut self, w: usize) {
        let k = &self.workers[w];
        if !k.exists || k.deleted {
            return;
        }
        let prev = k.chans[CHAT].capacity;
        let new = match prev {
            2 => 3,
            3 => 1,
            _ => 2,
        };
        if k.chans[CHAT].count > new {
            let t = self.clock + 20 * MS_S;
            self.at(t, Action::ChatCapacity(w));
            return;
        }
        let ts = self.tick();
        self.workers[w].chans[CHAT].capacity = new;
        self.workers[w].version += 1;
        let more = self.channel_params(w, CHAT, prev);
        let desc = format!("Worker {} chat capacity now {new}", self.workers[w].name);
        self.emit_worker(w, ts, "worker.capacity.update", desc, more);
    }

    fn sms_available(&mut self, w: usize, on: bool) {
        let k = &self.workers[w];
        if !k.exists || k.deleted || k.chans[SMS].available == on {
            return;
        }
        let ts = self.tick();
        self.workers[w].chans[SMS].available = on;
        self.workers[w].version += 1;
        let cap = self.workers[w].chans[SMS].capacity;
        let more = self.channel_params(w, SMS, cap);
        let desc = format!("Worker {} sms available: {on}", self.workers[w].name);
        self.emit_worker(w, ts, "worker.channel.availability.update", desc, more);
    }

    /// Adds a missing skill, or a languages attribute when the worker has every skill.
    fn attributes(&mut self, w: usize) {
        let k = &mut self.workers[w];
        if !k.exists || k.deleted {
            return;
        }
        let missing = QUEUES
            .iter()
            .find(|(_, s)| !k.skills.iter().any(|x| x == s));
        match missing {
            Some((_, s)) => k.skills.push(s.to_string()),
            None => k.languages = vec!["en".to_string(), "es".to_string()],
        }
        k.version += 1;
        let desc = format!("Worker {} attributes updated", k.name);
        let ts = self.tick();
        self.emit_worker(w, ts, "worker.attributes.update", desc, vec![]);
    }

    fn finish(mut self) -> SimDay {
        self.out.sort_by_key(|(ts, _)| *ts);
        let callbacks = self.out.into_iter().map(|(_, cb)| cb).collect();
        let tasks = self
            .tasks
            .into_iter()
            .map(|mut t| {
                t.truth.final_status = t.status.to_string();
                t.truth
            })
            .collect();
        let (activity_sids, channel_sids) = (&self.activity_sids, &self.channel_sids);
        let workers = self
            .workers
            .into_iter()
            .map(|k| WorkerTruth {
                final_activity_name: ACTIVITIES[k.activity].0.to_string(),
                final_activity_sid: activity_sids[k.activity].clone(),
                final_available: ACTIVITIES[k.activity].1,
                deleted: k.deleted,
                channels: k
                    .chans
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ChannelTruth {
                        unique_name: CHANNELS[i].to_string(),
                        task_channel_sid: channel_sids[i].clone(),
                        capacity: c.capacity,
                        available: c.available,
                    })
                    .collect(),
                sid: k.sid,
                name: k.name,
            })
            .collect();
        SimDay {
            callbacks,
            tasks,
            workers,
        }
    }
}

#[cfg(test)]
mod tests {
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
