//! The live floor: a contact center that keeps running, for `demo` and `simulate --live`.
//!
//! A planned day ([`realistic_day`]) places a fixed number of tasks over eight hours and
//! then ends, with its last tasks left open. The live floor instead draws each arrival
//! when the previous one happens, at a rate that swings slowly with the clock, and its
//! agents work shifts with breaks and come back after them. So it can be run up to any
//! time: fast for the history before now, then in real time, until stopped. Its load
//! is calibrated to the number of agents ([`calibrated_tasks_per_hour`]) so that the
//! queue stays stable: waits of seconds, now and then a minute or two, some abandons.

use super::engine::*;
use super::requests::{channel_seeds_for, message_params};
use super::*;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};

/// Share of the agents available on average: about 7 % are between two shifts and
/// 15 % on a break (see [`Sim::shift_start`] and [`Sim::live_break`]).
const AVAILABLE_SHARE: f64 = 0.78;
/// Voice occupancy aimed at, at the mean rate; the rate swings ±[`SWING`] around it.
/// Voice binds first: one call at a time per agent, where chats take 2 or 3.
const OCCUPANCY: f64 = 0.7;
/// Agent minutes of voice per task: half the tasks are calls of 4¼ minutes on average
/// (1½ to 7), plus 35 s of wrap-up and ~10 s of ringing and declined offers.
const VOICE_MINUTES_PER_TASK: f64 = 0.5 * 5.0;
/// Relative swing of the arrival rate (busier and quieter stretches of the day).
const SWING: f64 = 0.15;
/// Period of that swing, anchored on the epoch so that history and live run join up.
const SWING_PERIOD_MS: f64 = 5.0 * MS_H as f64;

/// Mean task arrivals per hour that keep `agents` busy but the queue stable.
pub fn calibrated_tasks_per_hour(agents: usize) -> f64 {
    60.0 * OCCUPANCY * AVAILABLE_SHARE * agents as f64 / VOICE_MINUTES_PER_TASK
}

/// Parameters of a live floor.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveConfig {
    /// RNG seed; the same config gives the same floor.
    pub seed: u64,
    /// Agents (workers), all created before the start.
    pub agents: usize,
    /// Epoch milliseconds when the floor opens (the start of the history).
    pub start_ms: i64,
    /// Mean task arrivals per hour.
    pub tasks_per_hour: f64,
    /// Account SID ("AC" + 32 hex) put on every callback.
    pub account_sid: String,
    /// Workspace SID ("WS" + 32 hex) put on every callback.
    pub workspace_sid: String,
}

impl LiveConfig {
    /// A floor of `agents` opening at `start_ms`, loaded as [`calibrated_tasks_per_hour`].
    pub fn new(seed: u64, agents: usize, start_ms: i64) -> LiveConfig {
        let day = DayConfig::default();
        LiveConfig {
            seed,
            agents,
            start_ms,
            tasks_per_hour: calibrated_tasks_per_hour(agents),
            account_sid: day.account_sid,
            workspace_sid: day.workspace_sid,
        }
    }
}

/// A live floor, run forward in steps.
pub struct Floor {
    sim: Sim,
}

impl Floor {
    pub fn new(cfg: &LiveConfig) -> Floor {
        let mut sim = Sim::new(&DayConfig {
            seed: cfg.seed,
            tasks: 0,
            workers: cfg.agents,
            start_ms: cfg.start_ms,
            account_sid: cfg.account_sid.clone(),
            workspace_sid: cfg.workspace_sid.clone(),
        });
        sim.per_min = (cfg.tasks_per_hour / 60.0).max(0.0);
        sim.plan_live();
        Floor { sim }
    }

    /// Runs the floor up to `until_ms` and returns the callbacks of what happened, in
    /// time order. One action emits consecutive milliseconds, so the last few may be a
    /// little after `until_ms`; the next call's all come after them.
    pub fn advance(&mut self, until_ms: i64) -> Vec<Callback> {
        self.sim.run_until(until_ms);
        let mut out = std::mem::take(&mut self.sim.out);
        out.sort_by_key(|(ts, _)| *ts);
        out.into_iter().map(|(_, cb)| cb).collect()
    }

    /// Every worker as they are now.
    pub fn workers(&self) -> Vec<WorkerTruth> {
        self.sim
            .workers
            .iter()
            .map(|k| self.sim.worker_truth(k))
            .collect()
    }

    /// Every task so far, with its status now (in `final_status`).
    pub fn tasks(&self) -> Vec<TaskTruth> {
        self.sim
            .tasks
            .iter()
            .map(|t| TaskTruth {
                final_status: t.status.to_string(),
                ..t.truth.clone()
            })
            .collect()
    }
}

impl Sim {
    pub(super) fn plan_live(&mut self) {
        self.announce_activities();
        let s = self.start;
        for w in 0..self.workers.len() {
            self.at_rand(s, 10 * MS_S, 10 * MS_M, Action::ShiftStart(w));
        }
        if self.per_min > 0.0 {
            self.at_rand(s, 2 * MS_M, 4 * MS_M, Action::Arrival);
        }
    }

    /// Mean arrivals per millisecond at `ms`.
    fn rate_at(&self, ms: i64) -> f64 {
        let phase = (ms as f64 / SWING_PERIOD_MS) * std::f64::consts::TAU;
        self.per_min * (1.0 + SWING * phase.sin()) / MS_M as f64
    }

    /// A task arrives; the next one follows after an exponential gap (a Poisson process
    /// at the current rate).
    pub(super) fn live_arrival(&mut self) {
        let mut task = self.plan_task();
        // Calls of 1½ to 7 minutes and conversations of 4 to 16: a busier floor than the
        // planned day's, so that tasks arrive every few seconds with a few dozen agents.
        task.handle_ms = if task.channel == VOICE {
            self.r(90 * MS_S, 7 * MS_M)
        } else {
            self.r(4 * MS_M, 16 * MS_M)
        };
        task.wrap_ms = self.r(10 * MS_S, 60 * MS_S);
        // Half as many customers give up as on the planned day (about 6 %: a staffed
        // floor), and those who do within two and a half minutes: the waiting figures
        // show the floor's queue, not a day-long outlier.
        task.abandon = match task.abandon {
            Some(_) if self.rng.gen_bool(0.5) => None,
            Some((after, max)) if after >= 30 * MS_S => Some((self.r(20 * MS_S, 150 * MS_S), max)),
            other => other,
        };
        self.tasks.push(task);
        self.task_arrive(self.tasks.len() - 1);
        let rate = self.rate_at(self.clock);
        if rate > 0.0 {
            let u: f64 = self.rng.gen();
            let gap = (-(1.0 - u).ln() / rate).clamp(1.0, MS_H as f64) as i64;
            self.at(self.clock + gap, Action::Arrival);
        }
    }

    /// Signs the worker on for a shift (the first one already under way when the floor
    /// opens, so that shift changes are spread over the day rather than all at once).
    pub(super) fn shift_start(&mut self, w: usize) {
        let k = &self.workers[w];
        if k.activity != OFFLINE {
            // Still finishing the previous shift's last task.
            let t = self.clock + MS_M;
            self.at(t, Action::ShiftStart(w));
            return;
        }
        self.workers[w].shift += 1;
        let n = self.workers[w].shift;
        let ts = self.set_activity(w, AVAILABLE);
        let (length, first_break) = if n == 1 {
            (self.r(30 * MS_M, 9 * MS_H), self.r(10 * MS_M, 120 * MS_M))
        } else {
            (self.r(7 * MS_H, 9 * MS_H), self.r(60 * MS_M, 120 * MS_M))
        };
        self.at(ts + length, Action::ShiftEnd(w, n));
        self.at(ts + first_break, Action::LiveBreak(w, n));
    }

    /// Signs the worker off (after their tasks) and brings them back 20 to 50 minutes later.
    pub(super) fn shift_end(&mut self, w: usize, n: u32) {
        if self.workers[w].shift != n {
            return;
        }
        self.sign_off(w);
        let t = self.clock;
        self.at_rand(t, 20 * MS_M, 50 * MS_M, Action::ShiftStart(w));
    }

    /// A break of 8 to 16 minutes, or a lunch of half an hour, once the worker's tasks
    /// are done (no new offers meanwhile).
    pub(super) fn live_break(&mut self, w: usize, n: u32) {
        let k = &self.workers[w];
        if k.shift != n || k.activity != AVAILABLE {
            return;
        }
        if k.busy() {
            self.workers[w].draining = true;
            let t = self.clock + 5 * MS_S;
            self.at(t, Action::LiveBreak(w, n));
            return;
        }
        let ts = self.set_activity(w, BREAK);
        let length = if self.rng.gen_bool(0.25) {
            self.r(25 * MS_M, 35 * MS_M)
        } else {
            self.r(8 * MS_M, 16 * MS_M)
        };
        self.at(ts + length, Action::LiveBack(w, n));
    }

    /// Back from a break; the next one comes 1 to 2 hours later.
    pub(super) fn live_back(&mut self, w: usize, n: u32) {
        let k = &self.workers[w];
        if k.shift != n || k.activity != BREAK {
            return;
        }
        let ts = self.set_activity(w, AVAILABLE);
        self.at_rand(ts, 60 * MS_M, 120 * MS_M, Action::LiveBreak(w, n));
    }
}

/// A messaging task's conversation, while its messages are being sent.
struct Conversation {
    sid: String,
    customer: String,
    /// The next message's `Index` (given in sending order).
    next_index: u64,
    /// Wrap-up or cancel time: no message after it.
    end: Option<i64>,
}

/// One request to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The event's time (epoch ms): post it then.
    pub at_ms: i64,
    /// A Conversations webhook (to `…/conversations`) rather than a TaskRouter callback.
    pub message: bool,
    pub params: Callback,
}

/// Messages are dated up to 2.5 s before the task they open, so an item is released
/// only when the floor has run this far past it (nothing earlier can come up then).
const LEAD_MS: i64 = 3_000;
/// How far the floor runs ahead at each step.
const STEP_MS: i64 = MS_M;

/// Everything the live floor posts, in time order, without end: callbacks, each
/// worker channel's initial state, and Conversations messages for chats and SMS (the
/// customer's first message just before the task, then a conversation with the agent
/// after acceptance, as in [`crate::sim::simulate::messages`]).
pub struct LiveStream {
    floor: Floor,
    horizon: i64,
    seq: u64,
    queue: BTreeMap<(i64, u64), (Option<String>, Item)>,
    conversations: HashMap<String, Conversation>,
    rng: rand::rngs::StdRng,
}

fn get<'a>(cb: &'a Callback, k: &str) -> Option<&'a str> {
    cb.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

impl LiveStream {
    pub fn new(cfg: &LiveConfig) -> LiveStream {
        use rand::SeedableRng;
        let floor = Floor::new(cfg);
        let mut s = LiveStream {
            horizon: cfg.start_ms,
            seq: 0,
            queue: BTreeMap::new(),
            conversations: HashMap::new(),
            rng: rand::rngs::StdRng::seed_from_u64(cfg.seed ^ 0x6c69_7665),
            floor,
        };
        for (at_ms, params) in channel_seeds_for(&s.floor.workers(), cfg.start_ms) {
            s.push(None, at_ms, false, params);
        }
        s
    }

    /// The floor behind the stream (its ground truth so far).
    pub fn floor(&self) -> &Floor {
        &self.floor
    }

    fn push(&mut self, task: Option<String>, at_ms: i64, message: bool, params: Callback) {
        self.seq += 1;
        let item = Item {
            at_ms,
            message,
            params,
        };
        self.queue.insert((at_ms, self.seq), (task, item));
    }

    /// Queues a callback, and the messages it implies.
    fn add(&mut self, cb: Callback) {
        let at: i64 = get(&cb, "TimestampMs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.horizon);
        let task = get(&cb, "TaskSid").map(str::to_owned);
        if let Some(task) = &task {
            let kind = get(&cb, "EventType").unwrap_or_default();
            match kind {
                "task.created" => {
                    let attrs = get(&cb, "TaskAttributes")
                        .and_then(|a| serde_json::from_str::<Value>(a).ok())
                        .unwrap_or_default();
                    let field = |k: &str| attrs.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                    if let (Some(sid), Some(customer)) = (field("conversationSid"), field("from")) {
                        let first = at - self.rng.gen_range(300..2_500);
                        self.conversations.insert(
                            task.clone(),
                            Conversation {
                                sid,
                                customer: customer.clone(),
                                next_index: 0,
                                end: None,
                            },
                        );
                        self.push(
                            Some(task.clone()),
                            first,
                            true,
                            vec![("Author".into(), customer)],
                        );
                    }
                }
                "reservation.accepted" if self.conversations.contains_key(task) => {
                    let agent = get(&cb, "WorkerName").unwrap_or("agent").to_owned();
                    let customer = self.conversations[task].customer.clone();
                    let mut t = at;
                    for turn in 0..8i64 {
                        t += 4_000 + (turn * 7_919 % 40_000);
                        let who = if turn % 2 == 0 { &agent } else { &customer };
                        self.push(
                            Some(task.clone()),
                            t,
                            true,
                            vec![("Author".into(), who.clone())],
                        );
                    }
                }
                "task.wrapup" | "task.canceled" => {
                    if let Some(c) = self.conversations.get_mut(task) {
                        c.end.get_or_insert(at);
                    }
                }
                _ => {}
            }
        }
        self.push(task, at, false, cb);
    }

    /// The next request, in time order. Never ends: the floor runs on.
    pub fn next_item(&mut self) -> Item {
        loop {
            let ready = self
                .queue
                .first_key_value()
                .is_some_and(|(&(at, _), _)| at <= self.horizon - LEAD_MS);
            if !ready {
                self.horizon += STEP_MS;
                for cb in self.floor.advance(self.horizon) {
                    self.add(cb);
                }
                continue;
            }
            let Some((_, (task, mut item))) = self.queue.pop_first() else {
                continue;
            };
            if !item.message {
                if get(&item.params, "EventType")
                    .is_some_and(|k| k == "task.completed" || k == "task.canceled")
                {
                    if let Some(task) = &task {
                        // Its messages are all out (none come after the wrap-up).
                        if !self
                            .queue
                            .values()
                            .any(|(t, i)| i.message && t.as_ref() == Some(task))
                        {
                            self.conversations.remove(task);
                        }
                    }
                }
                return item;
            }
            // A message: only while its conversation is open, numbered as sent.
            let Some(c) = task.as_ref().and_then(|t| self.conversations.get_mut(t)) else {
                continue;
            };
            if c.end.is_some_and(|end| end <= item.at_ms) {
                continue;
            }
            let author = get(&item.params, "Author").unwrap_or_default().to_owned();
            let sid = format!("IM{:032x}", self.rng.gen::<u128>());
            item.params = message_params(&c.sid, &sid, c.next_index, &author, item.at_ms);
            c.next_index += 1;
            return item;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const START: i64 = 1_767_254_400_000;

    fn kind(cb: &Callback) -> &str {
        get(cb, "EventType").unwrap_or_default()
    }

    fn ms(cb: &Callback) -> i64 {
        get(cb, "TimestampMs")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no TimestampMs in {cb:?}"))
    }

    #[test]
    fn the_load_follows_the_agents() {
        assert_eq!(calibrated_tasks_per_hour(0), 0.0);
        let per_min = calibrated_tasks_per_hour(40) / 60.0;
        // Tasks every few seconds with the demo's 40 agents.
        assert!((7.0..11.0).contains(&per_min), "{per_min}");
        assert!(calibrated_tasks_per_hour(80) > 1.9 * calibrated_tasks_per_hour(40));
    }

    /// Ten hours of a 40-agent floor: busy, stable (short waits, few abandons, no
    /// backlog), with breaks and shift changes throughout, in time order.
    #[test]
    fn a_calibrated_floor_keeps_the_queue_stable() {
        let mut floor = Floor::new(&LiveConfig::new(3, 40, START));
        let mut callbacks = Vec::new();
        // In steps, as the stream runs it: the result is one ordered sequence.
        for hour in 1..=10 {
            callbacks.extend(floor.advance(START + hour * MS_H));
        }
        let times: Vec<i64> = callbacks.iter().map(ms).collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "not strictly increasing"
        );
        let tasks = floor.tasks();
        let per_min = tasks.len() as f64 / 600.0;
        assert!((6.0..12.0).contains(&per_min), "{per_min} tasks a minute");
        // Every hour has arrivals and breaks.
        let mut sign_offs = 0;
        for hour in 0..10 {
            let (lo, hi) = (START + hour * MS_H, START + (hour + 1) * MS_H);
            let within = |cb: &&Callback| (lo..hi).contains(&ms(cb));
            let of = |name: &str, k: &str| {
                callbacks
                    .iter()
                    .filter(within)
                    .filter(|cb| kind(cb) == k)
                    .filter(|cb| name.is_empty() || get(cb, "WorkerActivityName") == Some(name))
                    .count()
            };
            let (created, breaks, offline) = (
                of("", "task.created"),
                of("Break", "worker.activity.update"),
                of("Offline", "worker.activity.update"),
            );
            let waited: Vec<i64> = floor
                .tasks()
                .iter()
                .filter(|t| (lo..hi).contains(&t.created_ms))
                .filter_map(|t| t.answered_in)
                .collect();
            let slow = waited.iter().filter(|&&w| w > 60).count();
            eprintln!("hour {hour}: {created} tasks, {breaks} breaks, {offline} sign-offs, {slow} answered after 60 s");
            assert!(created > 300, "hour {hour}");
            assert!(breaks > 5, "hour {hour}");
            sign_offs += offline;
        }
        // Shifts end all along (not all at once at eight hours).
        assert!(sign_offs > 25, "{sign_offs} sign-offs");
        let answered: Vec<i64> = tasks.iter().filter_map(|t| t.answered_in).collect();
        let mut sorted = answered.clone();
        sorted.sort_unstable();
        let p90 = sorted[sorted.len() * 9 / 10];
        let max = sorted[sorted.len() - 1];
        let share = |f: &dyn Fn(&TaskTruth) -> bool| {
            tasks.iter().filter(|t| f(t)).count() as f64 / tasks.len() as f64
        };
        eprintln!(
            "{} tasks: 90 % answered within {p90} s, the longest in {max} s; {:.1} % abandoned; {:.1} % answered within 15 s",
            tasks.len(),
            share(&|t| t.canceled_wait_s.is_some()) * 100.0,
            share(&|t| t.answered_in.is_some_and(|a| a <= 15)) * 100.0,
        );
        assert!(p90 <= 60, "90 % answered within {p90} s");
        assert!(max <= 600, "longest answer {max} s");
        let abandoned = tasks.iter().filter(|t| t.canceled_wait_s.is_some()).count();
        let share = abandoned as f64 / tasks.len() as f64;
        assert!((0.02..0.1).contains(&share), "abandoned {share}");
        let waits: Vec<i64> = tasks.iter().filter_map(|t| t.canceled_wait_s).collect();
        assert!(waits.iter().all(|&w| w <= 160), "{waits:?}");
        // No backlog at the end: what waits then arrived in the last few minutes.
        let end = START + 10 * MS_H;
        for t in tasks
            .iter()
            .filter(|t| ["pending", "reserved"].contains(&t.final_status.as_str()))
        {
            assert!(end - t.created_ms < 10 * MS_M, "{t:?}");
        }
        let sids: HashSet<&str> = tasks.iter().map(|t| t.sid.as_str()).collect();
        assert_eq!(sids.len(), tasks.len());
        let events: HashSet<&str> = callbacks.iter().filter_map(|cb| get(cb, "Sid")).collect();
        assert_eq!(events.len(), callbacks.len());
    }

    #[test]
    fn the_stream_is_ordered_and_goes_on_with_messages() {
        let cfg = LiveConfig::new(5, 20, START);
        let mut stream = LiveStream::new(&cfg);
        let mut items = Vec::new();
        loop {
            let item = stream.next_item();
            if item.at_ms > START + 3 * MS_H {
                break;
            }
            items.push(item);
        }
        assert!(items.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        // Every channel's initial state first.
        let seeds = items
            .iter()
            .take_while(|i| kind(&i.params) == "worker.capacity.update");
        assert_eq!(seeds.count(), 20 * 3);
        let messages: Vec<&Item> = items.iter().filter(|i| i.message).collect();
        assert!(messages.len() > 500, "{}", messages.len());
        // Numbered in order within each conversation, from 0.
        let mut next: HashMap<&str, u64> = HashMap::new();
        for m in &messages {
            let conv = get(&m.params, "ConversationSid").expect("conversation");
            let index: u64 = get(&m.params, "Index")
                .and_then(|i| i.parse().ok())
                .expect("index");
            let n = next.entry(conv).or_default();
            assert_eq!(index, *n);
            *n += 1;
        }
        assert!(
            next.values().any(|&n| n >= 5),
            "conversations with an exchange"
        );
        // The same seed gives the same stream.
        let mut again = LiveStream::new(&cfg);
        for item in items.iter().take(2_000) {
            assert_eq!(&again.next_item(), item);
        }
    }
}
