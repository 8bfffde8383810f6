//! `simulate`: posts a simulated contact-center day (see [`crate::sim`]) as signed
//! TaskRouter callbacks, plus Conversations messages for messaging tasks, to a running
//! service, at a steady rate. Deterministic for a seed. At the end it prints what the
//! summaries should show.

use crate::ingest::signature;
use crate::sim::{realistic_day, Callback, DayConfig, SimDay};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
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
    /// Requests per second.
    pub rate: u32,
    /// Seconds to run at most.
    pub duration: u64,
    pub seed: u64,
    pub concurrency: usize,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

fn get<'a>(cb: &'a Callback, k: &str) -> Option<&'a str> {
    cb.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn iso(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
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
            let params = [
                ("EventType", "onMessageAdded".to_owned()),
                ("ConversationSid", conv.clone()),
                ("MessageSid", sid),
                ("Index", index.to_string()),
                ("Author", author.to_owned()),
                ("Body", "…".to_owned()),
                ("Source", "SDK".to_owned()),
                ("DateCreated", iso(t)),
            ];
            index += 1;
            out.push((
                t,
                params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ));
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

/// Posts the day. Returns what happened; prints progress every 5 s.
pub async fn run(opts: &Options) -> Report {
    let now = chrono::Utc::now().timestamp_millis();
    let tasks = ((opts.rate as u64 * opts.duration) / 11).clamp(10, 200_000) as usize;
    let mut day = realistic_day(&DayConfig {
        seed: opts.seed,
        tasks,
        workers: opts.agents.max(1),
        start_ms: 0,
        ..DayConfig::default()
    });
    // Shift the day so that it ends now: realtime state (open tasks) is current.
    let last = day
        .callbacks
        .last()
        .and_then(|cb| get(cb, "TimestampMs"))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let shift = now - last;
    shift_day(&mut day, shift);
    let mut all: Vec<(i64, bool, Callback)> = day
        .callbacks
        .iter()
        .map(|cb| {
            let t = get(cb, "TimestampMs")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (t, false, cb.clone())
        })
        .collect();
    all.extend(
        messages(&day, opts.seed)
            .into_iter()
            .map(|(t, cb)| (t, true, cb)),
    );
    all.extend(
        channel_seeds(&day)
            .into_iter()
            .map(|(t, cb)| (t, false, cb)),
    );
    all.sort_by_key(|(t, _, _)| *t);

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
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_default();
    let report = Arc::new([
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.duration);
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate.max(1) as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last_print = Instant::now();
    for (_, is_msg, cb) in all {
        if Instant::now() >= deadline {
            break;
        }
        ticker.tick().await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let path = if is_msg { "/conversations" } else { "/ingress" };
        let sig = signature::compute(&opts.auth_token, &format!("{signed_base}{path}"), &cb);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&cb)
            .finish();
        report[0].fetch_add(1, Relaxed);
        let (http, url, counts) = (http.clone(), format!("{base}{path}"), report.clone());
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
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "simulate: {} sent, {} acknowledged, {} refused, {} errors",
                report[0].load(Relaxed),
                report[1].load(Relaxed),
                report[2].load(Relaxed),
                report[3].load(Relaxed)
            );
        }
    }
    // Wait for the requests in flight.
    let _ = sem.acquire_many(opts.concurrency.max(1) as u32).await;
    let r = Report {
        sent: report[0].load(Relaxed),
        accepted: report[1].load(Relaxed),
        refused: report[2].load(Relaxed),
        errors: report[3].load(Relaxed),
        elapsed: started.elapsed(),
    };
    print_expectations(&day);
    r
}

/// Every worker channel's capacity and availability at the start of the day, as
/// `worker.capacity.update` callbacks: without TaskRouter's REST API (which `simulate`
/// cannot offer), channels that never change would stay unknown. Later changes in the
/// day override them; the final state is the simulator's ground truth.
pub fn channel_seeds(day: &SimDay) -> Vec<(i64, Callback)> {
    let first = day
        .callbacks
        .first()
        .and_then(|cb| get(cb, "TimestampMs"))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    for (i, w) in day.workers.iter().enumerate() {
        for (j, c) in w.channels.iter().enumerate() {
            let t = first - 1_000 + (i * 10 + j) as i64;
            let params = [
                ("EventType", "worker.capacity.update".to_owned()),
                (
                    "Sid",
                    format!("EV{:030x}{:02x}", i as u128 * 1000 + j as u128, 0xcc),
                ),
                ("ResourceType", "worker".to_owned()),
                ("ResourceSid", w.sid.clone()),
                ("WorkerSid", w.sid.clone()),
                ("WorkerName", w.name.clone()),
                ("TaskChannelUniqueName", c.unique_name.clone()),
                ("TaskChannelSid", c.task_channel_sid.clone()),
                ("WorkerChannelCapacity", c.capacity.to_string()),
                ("WorkerChannelAvailable", c.available.to_string()),
                ("TimestampMs", t.to_string()),
                ("Timestamp", (t / 1000).to_string()),
            ];
            out.push((
                t,
                params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ));
        }
    }
    out
}

fn shift_day(day: &mut SimDay, shift: i64) {
    for cb in &mut day.callbacks {
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
    for t in &mut day.tasks {
        t.created_ms += shift;
    }
}

/// What the summaries should show once everything sent was applied (the whole day).
fn print_expectations(day: &SimDay) {
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    let mut queues: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for t in &day.tasks {
        *by_status.entry(&t.final_status).or_default() += 1;
        let q = queues.entry(&t.queue_name).or_default();
        if let Some(a) = t.answered_in {
            q.1 += 1;
            if a <= 15 {
                q.0 += 1;
            }
        } else if t.canceled_wait_s.is_some_and(|w| w >= 5) {
            q.2 += 1;
        }
    }
    let mut capacity: BTreeMap<&str, i64> = BTreeMap::new();
    for w in day
        .workers
        .iter()
        .filter(|w| !w.deleted && w.final_available)
    {
        for c in w.channels.iter().filter(|c| c.available) {
            *capacity.entry(&c.unique_name).or_default() += c.capacity;
        }
    }
    println!("expected once everything is applied (the whole simulated day, 15 s threshold):");
    println!("  tasks by status: {by_status:?}");
    for (q, (within, accepted, abandoned)) in queues {
        let den = accepted + abandoned;
        let sl = if den > 0 {
            format!("{:.2} %", within as f64 * 100.0 / den as f64)
        } else {
            "n/a".into()
        };
        println!("  queue {q}: service level {sl} ({within} within / {accepted} accepted + {abandoned} abandoned)");
    }
    println!("  capacity per channel (available workers, available channels): {capacity:?}");
    println!(
        "  (channels that never changed during the day are known only to TaskRouter's REST API)"
    );
}
