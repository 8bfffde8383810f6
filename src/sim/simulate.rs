//! `simulate`: posts a simulated contact center (see [`crate::sim`]) as signed
//! TaskRouter callbacks, plus Conversations messages for messaging tasks, to a running
//! service. Deterministic for a seed.
//!
//! - [`run`]: a planned day, shifted to end now, at a steady rate. The day is sized to
//!   fit `--rate` × `--duration`; at the end it says whether all of it was sent (or
//!   where it stopped) and prints what the summaries should show for what was sent.
//! - [`run_live`]: the live floor ([`crate::sim::live`]): the history of the last hours
//!   as fast as `--rate` allows, then every event when its time comes, until stopped.

use crate::ingest::signature;
use crate::sim::expectations::Expectations;
use crate::sim::live::{LiveConfig, LiveStream};
pub use crate::sim::requests::{channel_seeds, channel_seeds_for, message_params};
use crate::sim::requests::{get, iso, ms_of};
use crate::sim::{realistic_day, Callback, DayConfig, SimDay};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    /// Where to POST TaskRouter callbacks (…/ingress); messages go to …/conversations.
    pub url: String,
    /// The URL the service checks signatures against, when it differs from `url`.
    pub public_url: Option<String>,
    pub auth_token: String,
    pub agents: usize,
    /// Requests per second (for the live floor: while writing the history).
    pub rate: u32,
    /// Seconds to run at most (for the live floor: of real time after the history;
    /// None: until stopped).
    pub duration: Option<u64>,
    pub seed: u64,
    pub concurrency: usize,
}

/// Seconds a planned day runs at most when `duration` is not given.
pub const DEFAULT_DURATION: u64 = 60;

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

/// h:mm of a duration in ms.
fn hm(ms: i64) -> String {
    let m = ms.max(0) / 60_000;
    format!("{}:{:02}", m / 60, m % 60)
}

/// Per task: conversation, customer, created, accepted, agent, end.
type TaskTimes = (
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// Conversations `onMessageAdded` webhooks for the messaging tasks of a day: the
/// customer's first message creates the task (so it is a little older than
/// `task.created`, as with Studio's "Send to Flex"), the agent answers after acceptance,
/// a few exchanges follow before wrap-up. Returned with their times, for merging with
/// the callbacks.
pub fn messages(day: &SimDay, seed: u64) -> Vec<(i64, Callback)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6d65_7373);
    let mut tasks: BTreeMap<String, TaskTimes> = BTreeMap::new();
    for cb in &day.callbacks {
        let (Some(task), Some(kind)) = (get(cb, "TaskSid"), get(cb, "EventType")) else {
            continue;
        };
        let ms: i64 = get(cb, "TimestampMs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let e = tasks
            .entry(task.to_owned())
            .or_insert((None, None, ms, None, None, None));
        if let Some(attrs) = get(cb, "TaskAttributes")
            .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
        {
            e.0 = attrs
                .get("conversationSid")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            e.1 = attrs
                .get("from")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
        }
        match kind {
            "reservation.accepted" => {
                e.3 = Some(ms);
                e.4 = get(cb, "WorkerName").map(str::to_owned);
            }
            "task.wrapup" | "task.canceled" => e.5 = e.5.or(Some(ms)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (_, (conv, customer, created, accepted, agent, end)) in tasks {
        let (Some(conv), Some(customer)) = (conv, customer) else {
            continue;
        };
        let end = end.unwrap_or(created + 600_000);
        let mut t = created - rng.gen_range(300..2_500);
        let mut index = 0;
        let mut push = |t: i64, author: &str, out: &mut Vec<(i64, Callback)>| {
            let sid = format!("IM{:032x}", rng.gen::<u128>());
            out.push((t, message_params(&conv, &sid, index, author, t)));
            index += 1;
        };
        if t < end {
            push(t, &customer, &mut out);
        }
        if let (Some(acc), Some(agent)) = (accepted, agent) {
            t = acc;
            for turn in 0..8 {
                t += 4_000 + (turn * 7_919 % 40_000);
                if t >= end {
                    break;
                }
                let who = if turn % 2 == 0 {
                    agent.as_str()
                } else {
                    customer.as_str()
                };
                push(t, who, &mut out);
            }
        }
    }
    out
}

/// Signs and posts requests, `concurrency` at a time, and counts the answers.
struct Poster {
    http: reqwest::Client,
    base: String,
    signed_base: String,
    auth_token: String,
    sem: Arc<tokio::sync::Semaphore>,
    concurrency: usize,
    /// Sent, acknowledged (204), refused (another status), errors (no answer).
    counts: Arc<[AtomicU64; 4]>,
    started: Instant,
}

impl Poster {
    fn new(opts: &Options) -> Poster {
        let base = opts
            .url
            .trim_end_matches("/ingress")
            .trim_end_matches('/')
            .to_owned();
        let signed_base = opts
            .public_url
            .clone()
            .unwrap_or_else(|| base.clone())
            .trim_end_matches('/')
            .to_owned();
        let concurrency = opts.concurrency.max(1);
        Poster {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(concurrency)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap_or_default(),
            base,
            signed_base,
            auth_token: opts.auth_token.clone(),
            sem: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            concurrency,
            counts: Arc::new(Default::default()),
            started: Instant::now(),
        }
    }

    /// Posts one request once a slot is free; false when posting is over.
    async fn post(&self, message: bool, cb: &Callback) -> bool {
        let Ok(permit) = self.sem.clone().acquire_owned().await else {
            return false;
        };
        let path = if message {
            "/conversations"
        } else {
            "/ingress"
        };
        let sig = signature::compute(&self.auth_token, &format!("{}{path}", self.signed_base), cb);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(cb)
            .finish();
        self.counts[0].fetch_add(1, Relaxed);
        let (http, url, counts) = (
            self.http.clone(),
            format!("{}{path}", self.base),
            self.counts.clone(),
        );
        tokio::spawn(async move {
            let r = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", sig)
                .body(body)
                .send()
                .await;
            let slot = match r.map(|r| r.status().as_u16()) {
                Ok(204) => 1,
                Ok(_) => 2,
                Err(_) => 3,
            };
            counts[slot].fetch_add(1, Relaxed);
            drop(permit);
        });
        true
    }

    fn progress(&self) -> String {
        format!(
            "{} sent, {} acknowledged, {} refused, {} errors",
            self.counts[0].load(Relaxed),
            self.counts[1].load(Relaxed),
            self.counts[2].load(Relaxed),
            self.counts[3].load(Relaxed)
        )
    }

    /// Waits for the requests in flight.
    async fn finish(self) -> Report {
        let _ = self.sem.acquire_many(self.concurrency as u32).await;
        Report {
            sent: self.counts[0].load(Relaxed),
            accepted: self.counts[1].load(Relaxed),
            refused: self.counts[2].load(Relaxed),
            errors: self.counts[3].load(Relaxed),
            elapsed: self.started.elapsed(),
        }
    }
}

/// A simulated day of `tasks` and `agents` as `simulate` sends it: TaskRouter callbacks,
/// Conversations messages (flagged `true`, for `/conversations`) and worker-channel
/// seeds, with their times (epoch ms, the day starting at `start_ms`), in time order.
pub fn plan(
    seed: u64,
    agents: usize,
    tasks: usize,
    start_ms: i64,
) -> (SimDay, Vec<(i64, bool, Callback)>) {
    let day = realistic_day(&DayConfig {
        seed,
        tasks,
        workers: agents.max(1),
        start_ms,
        ..DayConfig::default()
    });
    let mut all: Vec<(i64, bool, Callback)> = day
        .callbacks
        .iter()
        .map(|cb| (ms_of(cb), false, cb.clone()))
        .collect();
    all.extend(
        messages(&day, seed)
            .into_iter()
            .map(|(t, cb)| (t, true, cb)),
    );
    all.extend(
        channel_seeds(&day)
            .into_iter()
            .map(|(t, cb)| (t, false, cb)),
    );
    all.sort_by_key(|(t, _, _)| *t);
    (day, all)
}

/// Posts a planned day. Returns what happened; prints progress every 5 s, and at the
/// end whether the whole day was sent and what the summaries should show.
pub async fn run(opts: &Options) -> Report {
    let duration = opts.duration.unwrap_or(DEFAULT_DURATION);
    // Size the day to what the rate and duration allow: a first guess, then the tasks
    // scaled by how many requests a task turned out to make (callbacks, messages).
    let budget = (opts.rate.max(1) as u64 * duration) as usize;
    let guess = (budget / 16).clamp(10, 200_000);
    let (mut day, mut all) = plan(opts.seed, opts.agents, guess, 0);
    if all.len() > budget {
        let fit = (guess as f64 * budget as f64 / all.len() as f64 * 0.97) as usize;
        (day, all) = plan(opts.seed, opts.agents, fit.max(10), 0);
    }
    let (first, last) = (
        all.first().map(|i| i.0).unwrap_or(0),
        all.last().map(|i| i.0).unwrap_or(0),
    );
    // Shift the day so that it ends now: realtime state (open tasks) is current.
    let shift = chrono::Utc::now().timestamp_millis() - last;
    shift_day(&mut day, shift);
    for (t, message, cb) in &mut all {
        *t += shift;
        if *message {
            // Messages carry their time as DateCreated.
            for (k, v) in cb.iter_mut() {
                if k == "DateCreated" {
                    *v = iso(*t);
                }
            }
        } else {
            shift_callback(cb, shift);
        }
    }
    println!(
        "simulate: a day of {} tasks and {} agents ({} of simulated time): {} requests at {} a second, {} s at most",
        day.tasks.len(),
        opts.agents.max(1),
        hm(last - first),
        all.len(),
        opts.rate,
        duration
    );

    let poster = Poster::new(opts);
    let deadline = poster.started + Duration::from_secs(duration);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate.max(1) as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last_print = Instant::now();
    let mut sent = 0;
    for (_, message, cb) in &all {
        if Instant::now() >= deadline {
            break;
        }
        ticker.tick().await;
        if !poster.post(*message, cb).await {
            break;
        }
        sent += 1;
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!("simulate: {}", poster.progress());
        }
    }
    let r = poster.finish().await;
    let expect = Expectations::from_callbacks(all[..sent].iter().filter(|i| !i.1).map(|i| &i.2));
    if sent == all.len() {
        println!("the whole simulated day was sent ({sent} requests).");
        expect.print(
            "expected once everything is applied (the whole simulated day, 15 s threshold):",
        );
    } else {
        let at = all[sent.saturating_sub(1)].0;
        println!(
            "stopped after {duration} s (--duration) at {} into the {} simulated day: {sent} of {} requests sent ({:.1} %); the last {} of the day was not sent.",
            hm(at - (first + shift)),
            hm(last - first),
            all.len(),
            sent as f64 * 100.0 / all.len().max(1) as f64,
            hm(last + shift - at),
        );
        expect.print("expected once what was sent is applied (the day up to where it stopped, 15 s threshold):");
    }
    r
}

/// Moves a callback's times by `shift` ms.
fn shift_callback(cb: &mut Callback, shift: i64) {
    for (k, v) in cb.iter_mut() {
        let Ok(n) = v.parse::<i64>() else { continue };
        *v = match k.as_str() {
            "TimestampMs" => (n + shift).to_string(),
            "Timestamp" | "TaskDateCreated" | "TaskQueueEnteredDate" => {
                ((n * 1000 + shift) / 1000).to_string()
            }
            _ => continue,
        };
    }
}

/// What the posted stream says about the floor now (for the live run's status line).
#[derive(Default)]
struct Tally {
    created: u64,
    abandoned: u64,
    messages: u64,
    activity: HashMap<String, String>,
    open: HashMap<String, String>,
}

impl Tally {
    fn add(&mut self, message: bool, cb: &Callback) {
        if message {
            self.messages += 1;
            return;
        }
        let kind = get(cb, "EventType").unwrap_or_default();
        match kind {
            "task.created" => self.created += 1,
            "task.canceled" => self.abandoned += 1,
            _ => {}
        }
        if let (Some(w), Some(a)) = (get(cb, "WorkerSid"), get(cb, "WorkerActivityName")) {
            self.activity.insert(w.to_owned(), a.to_owned());
        }
        if let (Some(t), Some(s)) = (get(cb, "TaskSid"), get(cb, "TaskAssignmentStatus")) {
            if matches!(s, "completed" | "canceled") {
                self.open.remove(t);
            } else {
                self.open.insert(t.to_owned(), s.to_owned());
            }
        }
    }

    /// The status line, and the counters restarted.
    fn line(&mut self, per: &str) -> String {
        let on = self.activity.values().filter(|a| *a != "Offline").count();
        let breaks = self.activity.values().filter(|a| *a == "Break").count();
        let waiting = self
            .open
            .values()
            .filter(|s| matches!(s.as_str(), "pending" | "reserved"))
            .count();
        let line = format!(
            "{} tasks, {} abandoned, {} messages {per}; now {} agents signed on ({} on a break), {} tasks open, {} waiting",
            self.created,
            self.abandoned,
            self.messages,
            on,
            breaks,
            self.open.len(),
            waiting
        );
        (self.created, self.abandoned, self.messages) = (0, 0, 0);
        line
    }
}

/// Runs the live floor: the last `history` written as fast as `--rate` allows, then
/// each event when its time comes, until `stop` resolves or, after the history,
/// `--duration` seconds have passed.
pub async fn run_live(opts: &Options, history: Duration, stop: impl Future<Output = ()>) -> Report {
    tokio::pin!(stop);
    let now = chrono::Utc::now().timestamp_millis();
    let start = now - history.as_millis() as i64;
    let cfg = LiveConfig::new(opts.seed, opts.agents.max(1), start);
    println!(
        "simulate: a live contact center of {} agents, about {:.0} tasks an hour (one every {:.0} s): first the last {} of history at up to {} requests a second, then in real time{}",
        cfg.agents,
        cfg.tasks_per_hour,
        3600.0 / cfg.tasks_per_hour.max(1.0),
        hm(now - start),
        opts.rate,
        match opts.duration {
            Some(d) => format!(" for {d} s"),
            None => ", until Ctrl-C".to_owned(),
        }
    );
    let mut stream = LiveStream::new(&cfg);
    let poster = Poster::new(opts);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate.max(1) as f64));
    // After a wait for real time, no burst: the rate applies to the history only.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tally = Tally::default();
    let mut live_since: Option<(Instant, u64)> = None;
    let mut last_print = Instant::now();
    loop {
        let item = stream.next_item();
        let now = chrono::Utc::now().timestamp_millis();
        if item.at_ms > now {
            let (since, _) = *live_since.get_or_insert_with(|| {
                println!(
                    "simulate: history written ({}, {} requests in {:.0} s); now live: {}",
                    hm(now - start),
                    poster.counts[0].load(Relaxed),
                    poster.started.elapsed().as_secs_f64(),
                    tally.line("in the history")
                );
                last_print = Instant::now();
                (Instant::now(), poster.counts[0].load(Relaxed))
            });
            let left = opts.duration.map(|d| {
                (since + Duration::from_secs(d)).saturating_duration_since(Instant::now())
            });
            let wait = Duration::from_millis((item.at_ms - now) as u64);
            if left.is_some_and(|l| l <= wait) {
                if let Some(l) = left {
                    tokio::time::sleep(l).await;
                }
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => break,
            }
        } else {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut stop => break,
            }
        }
        if !poster.post(item.message, &item.params).await {
            break;
        }
        tally.add(item.message, &item.params);
        let every = if live_since.is_some() { 60 } else { 5 };
        if last_print.elapsed() >= Duration::from_secs(every) {
            last_print = Instant::now();
            if live_since.is_some() {
                println!(
                    "live {}: {}",
                    chrono::Local::now().format("%H:%M:%S"),
                    tally.line("in the last minute")
                );
            } else {
                eprintln!(
                    "simulate: history up to {} of {} written ({})",
                    hm(item.at_ms - start),
                    hm(now - start),
                    poster.progress()
                );
            }
        }
    }
    let r = poster.finish().await;
    println!("simulate: stopped; {}", tally.line("since the last line"));
    r
}

fn shift_day(day: &mut SimDay, shift: i64) {
    for cb in &mut day.callbacks {
        shift_callback(cb, shift);
    }
    for t in &mut day.tasks {
        t.created_ms += shift;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expectations read from the callbacks alone equal the ground truth for a whole
    /// day, and for a prefix they count only what it holds.
    #[test]
    fn expectations_from_callbacks_match_the_truth() {
        for (seed, workers, tasks) in [(1, 20, 400), (2, 3, 60), (3, 12, 300)] {
            let day = realistic_day(&DayConfig {
                seed,
                workers,
                tasks,
                ..DayConfig::default()
            });
            let mut all: Vec<(i64, Callback)> = channel_seeds(&day);
            all.extend(day.callbacks.iter().map(|cb| (ms_of(cb), cb.clone())));
            all.sort_by_key(|(t, _)| *t);
            let from = Expectations::from_callbacks(all.iter().map(|(_, cb)| cb));
            assert_eq!(from, Expectations::from_truth(&day), "seed {seed}");
            let half = Expectations::from_callbacks(all[..all.len() / 2].iter().map(|(_, cb)| cb));
            let created = all[..all.len() / 2]
                .iter()
                .filter(|(_, cb)| get(cb, "EventType") == Some("task.created"))
                .count();
            assert_eq!(half.by_status.values().sum::<usize>(), created);
            assert!(created < tasks);
        }
    }

    #[test]
    fn messages_follow_their_tasks() {
        let day = realistic_day(&DayConfig::default());
        let m = messages(&day, 1);
        assert!(!m.is_empty());
        for (t, cb) in &m {
            assert_eq!(get(cb, "DateCreated").map(str::to_owned), Some(iso(*t)));
        }
    }
}
