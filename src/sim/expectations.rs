//! What the summaries should show once a simulated day (or the part of it that was
//! sent) is applied: printed by `simulate` at its end.

use crate::sim::requests::get;
use crate::sim::{Callback, SimDay};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the summaries should show once a set of callbacks is applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    pub by_status: BTreeMap<String, usize>,
    /// Per queue: accepted within 15 s, accepted, abandoned (after 5 s or more).
    pub queues: BTreeMap<String, (i64, i64, i64)>,
    /// Capacity per channel of available workers' available channels.
    pub capacity: BTreeMap<String, i64>,
}

impl Expectations {
    /// From the simulator's ground truth for a whole day.
    pub fn from_truth(day: &SimDay) -> Expectations {
        let mut e = Expectations::default();
        for t in &day.tasks {
            *e.by_status.entry(t.final_status.clone()).or_default() += 1;
            let q = e.queues.entry(t.queue_name.clone()).or_default();
            if let Some(a) = t.answered_in {
                q.1 += 1;
                if a <= 15 {
                    q.0 += 1;
                }
            } else if t.canceled_wait_s.is_some_and(|w| w >= 5) {
                q.2 += 1;
            }
        }
        for w in day
            .workers
            .iter()
            .filter(|w| !w.deleted && w.final_available)
        {
            for c in w.channels.iter().filter(|c| c.available) {
                *e.capacity.entry(c.unique_name.clone()).or_default() += c.capacity;
            }
        }
        e
    }

    /// From the TaskRouter callbacks themselves (channel seeds included), in time
    /// order: right for any prefix of a day, not only the whole of it.
    pub fn from_callbacks<'a>(callbacks: impl Iterator<Item = &'a Callback>) -> Expectations {
        #[derive(Default)]
        struct T {
            queue: String,
            status: String,
            answered_in: Option<i64>,
            canceled_wait: Option<i64>,
        }
        let num = |cb: &Callback, k: &str| get(cb, k).and_then(|v| v.parse::<i64>().ok());
        let mut tasks: BTreeMap<String, T> = BTreeMap::new();
        let mut available: HashMap<String, bool> = HashMap::new();
        let mut activity: HashMap<String, String> = HashMap::new();
        let mut deleted: HashSet<String> = HashSet::new();
        let mut channels: BTreeMap<(String, String), (i64, bool)> = BTreeMap::new();
        for cb in callbacks {
            let kind = get(cb, "EventType").unwrap_or_default();
            if kind == "activity.created" {
                if let Some(name) = get(cb, "ActivityName") {
                    available.insert(
                        name.to_owned(),
                        get(cb, "ActivityAvailable") == Some("true"),
                    );
                }
            }
            if let Some(sid) = get(cb, "TaskSid") {
                let t = tasks.entry(sid.to_owned()).or_default();
                if let Some(q) = get(cb, "TaskQueueName") {
                    t.queue = q.to_owned();
                }
                if let Some(s) = get(cb, "TaskAssignmentStatus") {
                    t.status = s.to_owned();
                }
                match kind {
                    "reservation.accepted" if t.answered_in.is_none() => {
                        t.answered_in = num(cb, "TaskAge")
                    }
                    "task.canceled" => t.canceled_wait = num(cb, "TaskAge"),
                    _ => {}
                }
            }
            let Some(w) = get(cb, "WorkerSid") else {
                continue;
            };
            if let Some(a) = get(cb, "WorkerActivityName") {
                activity.insert(w.to_owned(), a.to_owned());
            }
            if kind == "worker.deleted" {
                deleted.insert(w.to_owned());
            }
            if matches!(
                kind,
                "worker.capacity.update" | "worker.channel.availability.update"
            ) {
                if let Some(ch) = get(cb, "TaskChannelUniqueName") {
                    let c = channels.entry((w.to_owned(), ch.to_owned())).or_default();
                    c.0 = num(cb, "WorkerChannelCapacity").unwrap_or(c.0);
                    c.1 = get(cb, "WorkerChannelAvailable").map_or(c.1, |v| v == "true");
                }
            }
        }
        let mut e = Expectations::default();
        for t in tasks.values() {
            *e.by_status.entry(t.status.clone()).or_default() += 1;
            let q = e.queues.entry(t.queue.clone()).or_default();
            if let Some(a) = t.answered_in {
                q.1 += 1;
                if a <= 15 {
                    q.0 += 1;
                }
            } else if t.canceled_wait.is_some_and(|w| w >= 5) {
                q.2 += 1;
            }
        }
        for ((w, ch), (capacity, on)) in channels {
            let works = activity
                .get(&w)
                .and_then(|a| available.get(a))
                .copied()
                .unwrap_or(false);
            if works && on && !deleted.contains(&w) {
                *e.capacity.entry(ch).or_default() += capacity;
            }
        }
        e
    }

    pub fn print(&self, header: &str) {
        println!("{header}");
        println!("  tasks by status: {:?}", self.by_status);
        for (q, (within, accepted, abandoned)) in &self.queues {
            let den = accepted + abandoned;
            let sl = if den > 0 {
                format!("{:.2} %", *within as f64 * 100.0 / den as f64)
            } else {
                "n/a".into()
            };
            println!("  queue {q}: service level {sl} ({within} within / {accepted} accepted + {abandoned} abandoned)");
        }
        println!(
            "  capacity per channel (available workers, available channels): {:?}",
            self.capacity
        );
    }
}
