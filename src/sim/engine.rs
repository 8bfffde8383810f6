//! The engine: constants of the simulated center, its entities, and the time-ordered
//! action queue that plans the day and runs it.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub(super) const MS_S: i64 = 1_000;
pub(super) const MS_M: i64 = 60_000;
pub(super) const MS_H: i64 = 3_600_000;
/// The simulation stops at start + this (tasks arrive until start + 8 h).
pub(super) const DAY_MS: i64 = 8 * MS_H + 5 * MS_M;
pub(super) const WORKSPACE_NAME: &str = "Flex Task Assignment";
pub(super) const WORKFLOW_NAME: &str = "Assign to Anyone";
pub(super) const CHANNELS: [&str; 3] = ["voice", "chat", "sms"];
pub(super) const VOICE: usize = 0;
pub(super) const CHAT: usize = 1;
pub(super) const SMS: usize = 2;
/// (queue name, skill matched by its target expression).
pub(super) const QUEUES: [(&str, &str); 3] = [
    ("Sales", "sales"),
    ("Support", "support"),
    ("Billing", "billing"),
];
/// (activity name, available).
pub(super) const ACTIVITIES: [(&str, bool); 4] = [
    ("Offline", false),
    ("Available", true),
    ("Break", false),
    ("Busy", false),
];
pub(super) const OFFLINE: usize = 0;
pub(super) const AVAILABLE: usize = 1;
pub(super) const BREAK: usize = 2;
pub(super) const FIRST_NAMES: [&str; 16] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil",
];
pub(super) const LAST_NAMES: [&str; 8] = [
    "Smith", "Jones", "Diaz", "Miller", "Chen", "Lopez", "Kim", "Novak",
];
/// Task cancel reason per channel (voice callers hang up, conversations time out).
pub(super) const CANCEL_REASONS: [&str; 3] = ["hangup", "Task TTL Exceeded", "Task TTL Exceeded"];
pub(super) const CONTACT_NUMBER: &str = "+18005550100";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Outcome {
    Accept,
    Reject,
    Timeout,
}

impl Outcome {
    pub(super) fn verb(self) -> &'static str {
        ["accepted", "rejected", "timeout"][self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Action {
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
    // The live floor (see `live.rs`): arrivals and shifts generated as time goes on.
    /// A task arrives now; the next arrival is drawn.
    Arrival,
    /// A worker's shift begins (signs on), if they are offline by then.
    ShiftStart(usize),
    /// The worker's shift (by number) ends: they sign off.
    ShiftEnd(usize, u32),
    /// The worker of the shift takes a break (after finishing their tasks).
    LiveBreak(usize, u32),
    /// Back from the break; the next one is planned.
    LiveBack(usize, u32),
}

pub(super) struct Res {
    pub(super) sid: String,
    pub(super) worker: usize,
    pub(super) created_ms: i64,
    pub(super) version: i64,
    pub(super) outcome: Outcome,
}

pub(super) struct Task {
    pub(super) truth: TaskTruth,
    pub(super) channel: usize,
    pub(super) queue: usize,
    pub(super) attrs: Value,
    pub(super) priority: i64,
    pub(super) version: i64,
    pub(super) status: &'static str,
    pub(super) handle_ms: i64,
    pub(super) wrap_ms: i64,
    /// (abandon delay after creation in ms, max reservations offered before that).
    pub(super) abandon: Option<(i64, usize)>,
    pub(super) update_after: Option<i64>,
    pub(super) res: Vec<Res>,
    pub(super) current: Option<usize>,
    pub(super) tried: Vec<usize>,
    pub(super) routable_at: i64,
    pub(super) failures: usize,
}

pub(super) struct Chan {
    pub(super) capacity: i64,
    pub(super) available: bool,
    pub(super) count: i64,
}

pub(super) struct Worker {
    pub(super) sid: String,
    pub(super) name: String,
    pub(super) full_name: String,
    pub(super) skills: Vec<String>,
    pub(super) languages: Vec<String>,
    pub(super) activity: usize,
    pub(super) since: i64,
    pub(super) version: i64,
    pub(super) exists: bool,
    pub(super) deleted: bool,
    pub(super) draining: bool,
    pub(super) chans: [Chan; 3],
    pub(super) last_free: i64,
    /// Shifts begun so far on the live floor: actions of an earlier shift are stale.
    pub(super) shift: u32,
    /// Closed activity intervals: (activity, start ms, end ms).
    pub(super) log: Vec<(usize, i64, i64)>,
}

impl Worker {
    pub(super) fn busy(&self) -> bool {
        self.chans.iter().any(|c| c.count > 0)
    }
}

pub(super) struct Sim {
    pub(super) rng: StdRng,
    pub(super) account: String,
    pub(super) workspace: String,
    pub(super) start: i64,
    pub(super) activity_sids: Vec<String>,
    pub(super) queue_sids: Vec<String>,
    pub(super) channel_sids: Vec<String>,
    pub(super) workflow_sid: String,
    pub(super) tasks: Vec<Task>,
    pub(super) workers: Vec<Worker>,
    pub(super) heap: BinaryHeap<Reverse<(i64, u64, Action)>>,
    pub(super) seq: u64,
    pub(super) clock: i64,
    pub(super) out: Vec<(i64, Callback)>,
    pub(super) pending: Vec<usize>,
    pub(super) doomed: Option<usize>,
    /// Mean arrivals per minute on the live floor (0 for a planned day).
    pub(super) per_min: f64,
}

pub(super) fn new_sid(rng: &mut StdRng, prefix: &str) -> String {
    format!("{prefix}{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>())
}

pub(super) fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// Index of the first cumulative threshold above `u` (or the last index).
pub(super) fn weighted<const N: usize>(u: f64, cumulative: [f64; N]) -> usize {
    cumulative.iter().position(|&c| u < c).unwrap_or(N)
}

pub(super) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Sim {
    pub(super) fn new(cfg: &DayConfig) -> Sim {
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
                shift: 0,
                log: Vec::new(),
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
            per_min: 0.0,
        }
    }

    pub(super) fn r(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.gen_range(lo..hi)
    }

    pub(super) fn at(&mut self, time: i64, a: Action) {
        self.seq += 1;
        self.heap.push(Reverse((time, self.seq, a)));
    }

    /// Schedules `a` at `base + [lo, hi)` ms.
    pub(super) fn at_rand(&mut self, base: i64, lo: i64, hi: i64, a: Action) {
        let t = base + self.r(lo, hi);
        self.at(t, a);
    }

    /// Next event time: strictly after the previous event.
    pub(super) fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    pub(super) fn plan(&mut self, cfg: &DayConfig) {
        self.announce_activities();
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

    /// The workspace's activities, as `activity.created` callbacks at the start.
    pub(super) fn announce_activities(&mut self) {
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
    }

    /// Arrival offset: half uniform over the day, half in a mid-morning and an afternoon peak.
    pub(super) fn arrival(&mut self) -> i64 {
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

    pub(super) fn plan_task(&mut self) -> Task {
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

    pub(super) fn run(&mut self) {
        self.run_until(self.start + DAY_MS);
    }

    /// Runs every action due at or before `end` (later ones stay queued).
    pub(super) fn run_until(&mut self, end: i64) {
        while let Some(&Reverse((time, _, _))) = self.heap.peek() {
            if time > end {
                break;
            }
            let Some(Reverse((_, _, action))) = self.heap.pop() else {
                break;
            };
            self.clock = self.clock.max(time - 1);
            self.handle(action);
            self.dispatch();
        }
    }

    pub(super) fn handle(&mut self, a: Action) {
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
            Action::Arrival => self.live_arrival(),
            Action::ShiftStart(w) => self.shift_start(w),
            Action::ShiftEnd(w, n) => self.shift_end(w, n),
            Action::LiveBreak(w, n) => self.live_break(w, n),
            Action::LiveBack(w, n) => self.live_back(w, n),
        }
    }

    // ----- emission -------------------------------------------------------
}
