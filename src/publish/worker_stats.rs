//! The `workerStats` Sync map (design §5b, off unless `publish.worker_stats`): one item
//! per worker not deleted, keyed by its sid, for agents panels in Flex plugins.
//!
//! An item is the worker's object of `/api/agents` ([`crate::publish::agents`]) without
//! what changes every second by itself, so that an item is written only when something
//! happened to its worker:
//! - no `seconds_in_activity`: a client counts from `activity_since`;
//! - each task has `created` (ISO 8601) instead of `age_seconds`;
//! - `today.seconds_by_activity` holds the closed activity intervals only (today's time
//!   before the current activity): a client adds now − max(`activity_since`, today's
//!   start) to the current activity;
//! - `today.occupancy` moves with time while a worker works, yet a change of it alone
//!   does not count as a change: it is brought up to date by every write of the item,
//!   and on its own at most every [`OCCUPANCY_REFRESH`].
//!
//! Write discipline, inside Sync's limits (16 KiB an item; 20 writes/s per map, all its
//! items together):
//! - an item is written when its data differs from what was last written (kept in
//!   memory), at most once a second: a change within a second of the item's last write
//!   waits for the first tick after that second, and the latest data is what is written;
//! - at most [`WRITES_PER_SECOND`] writes to the map in any second, [`CONCURRENCY`] at a
//!   time; the rest wait, longest waiting first, so a burst (2,000 workers at midnight)
//!   drains at that rate and nobody starves;
//! - 429s are retried by the client with backoff; one that still fails pauses the map
//!   for [`RATE_LIMITED_PAUSE`]; any other failure retries that item later, each time
//!   after a longer delay (at most [`MAX_RETRY_DELAY`]);
//! - a worker who is deleted (no longer in `agents()`) has its item removed;
//! - with `publish.ttl_seconds`, item writes carry `ItemTtl` and `CollectionTtl` (see
//!   [`SyncWriter`]) and an unchanged item is rewritten when half the TTL has passed,
//!   before any other write (a late change leaves stale data, a late renewal none);
//! - on becoming the publisher it reads the map once: an item that already holds its
//!   data is not rewritten (a restart makes no burst), and items of workers deleted
//!   meanwhile are removed;
//! - only the instance holding the publisher lock writes; one that loses it forgets
//!   what it knew of the map.

use crate::apply::store::StoreError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::publish::agents::{self, Agent};
use crate::publish::summary::Summary;
use crate::publish::sync_size::{self, fit, OversizeLog, MAX_DATA_BYTES, MAX_KEY_CHARS};
use crate::publish::sync_writer::{self, renew_after, SyncWriter};
use crate::twilio::types::SyncMapItem;
use crate::twilio::{TwilioClient, TwilioError};
use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::Pool;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The map's unique name.
pub const MAP: &str = "workerStats";
/// Writes to the map in any one second: half of what Sync allows a map, leaving room for
/// retries and for a second writer during a publisher takeover.
pub const WRITES_PER_SECOND: usize = 10;
/// Writes in flight at once: enough to reach [`WRITES_PER_SECOND`] at Twilio's round
/// trip, few enough not to arrive at Sync as one burst.
pub const CONCURRENCY: usize = 4;
/// An item is written at most once per this (a second, less the jitter of ticks).
const MIN_INTERVAL: Duration = Duration::from_millis(990);
/// An item whose occupancy alone moved is rewritten after this long. 2,000 working
/// agents cost about 2 writes/s, and only out of what changes leave.
pub const OCCUPANCY_REFRESH: Duration = Duration::from_secs(15 * 60);
/// After a 429 that the client's retries did not overcome: Sync's burst window.
pub const RATE_LIMITED_PAUSE: Duration = Duration::from_secs(10);
/// The longest wait before an item whose writes fail is tried again.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// What the `workerStats` stage needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub writer: sync_writer::Settings,
    /// What "today" means (`sla.timezone`).
    pub timezone: chrono_tz::Tz,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            writer: sync_writer::Settings::from_config(cfg),
            // Validated by check-config; an unknown zone is taken as UTC, as summaries do.
            timezone: cfg.sla.timezone.parse().unwrap_or(chrono_tz::UTC),
        }
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A worker's item: its `/api/agents` object without what grows by itself (see the
/// module doc). `closed` is its closed activity seconds today
/// ([`Agent::closed_seconds_by_activity`]). Names from callbacks are bounded like every
/// other published name; the size is left to [`fit`].
pub fn item_data(a: &Agent, closed: Option<&BTreeMap<String, f64>>) -> Value {
    let name = |s: &Option<String>| s.as_deref().map(sync_size::name);
    let tasks: Vec<Value> = a
        .tasks
        .iter()
        .map(|t| {
            json!({
                "sid": sync_size::name(&t.sid),
                "channel": name(&t.channel),
                "queue": name(&t.queue),
                "status": name(&t.status),
                "created": t.created.map(iso),
            })
        })
        .collect();
    let by_activity: serde_json::Map<String, Value> = closed
        .into_iter()
        .flatten()
        .map(|(k, v)| (sync_size::name(k), json!(v)))
        .collect();
    let t = &a.today;
    json!({
        "sid": sync_size::name(&a.sid),
        "name": name(&a.name),
        "activity": name(&a.activity),
        "available": a.available,
        "activity_since": a.activity_since,
        "tasks": tasks,
        "today": {
            "tasks_accepted": t.tasks_accepted,
            "tasks_completed": t.tasks_completed,
            "avg_handle_time": t.avg_handle_time,
            "avg_wrapup_time": t.avg_wrapup_time,
            "reservations_rejected": t.reservations_rejected,
            "reservations_timed_out": t.reservations_timed_out,
            "seconds_by_activity": by_activity,
            "occupancy": t.occupancy,
        },
    })
}

/// How an item's new data differs from what Sync holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    None,
    /// Only `today.occupancy`, which moves with time.
    OccupancyOnly,
    Data,
}

fn without_occupancy(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(today) = v.get_mut("today").and_then(Value::as_object_mut) {
        today.remove("occupancy");
    }
    v
}

fn change(old: &Value, new: &Value) -> Change {
    if old == new {
        Change::None
    } else if without_occupancy(old) == without_occupancy(new) {
        Change::OccupancyOnly
    } else {
        Change::Data
    }
}

/// One write to the map.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Write { key: String, data: Value },
    Delete { key: String },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Write { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// What is known of one item.
#[derive(Debug, Default)]
struct Item {
    /// What Sync holds as far as we know (last written, or read back), and when it was
    /// written (None: unknown, taken as long ago).
    synced: Option<(Value, Option<Instant>)>,
    /// Since when the item waits for a write (longest waiting first).
    waiting_since: Option<Instant>,
    /// After a failure: no attempt before this.
    retry_at: Option<Instant>,
    failures: u32,
}

/// Which writes to make when: the map's state as far as we know it, the writes of the
/// last second and a pause after rate limiting. No I/O, so that the discipline is tested
/// without Sync.
#[derive(Debug)]
pub struct Planner {
    items: HashMap<String, Item>,
    /// When the writes of the last second were started.
    recent: VecDeque<Instant>,
    paused_until: Option<Instant>,
    ttl: u64,
}

impl Planner {
    pub fn new(ttl: u64) -> Planner {
        Planner {
            items: HashMap::new(),
            recent: VecDeque::new(),
            paused_until: None,
            ttl,
        }
    }

    /// Takes what the map holds (`found`, read back) for the items we have not written
    /// since. An item's age (for the TTL) is taken from its `date_updated`; without one
    /// it is taken as due for renewal.
    pub fn adopt(&mut self, found: Vec<SyncMapItem>, now_utc: DateTime<Utc>, now: Instant) {
        for f in found {
            let Some(key) = f.key else { continue };
            let it = self.items.entry(key).or_default();
            if it.synced.is_some() {
                continue; // written by us meanwhile: newer than what was read
            }
            let at = f
                .date_updated
                .and_then(|d| DateTime::parse_from_rfc3339(&d).ok())
                .map(|d| {
                    (now_utc - d.with_timezone(&Utc))
                        .to_std()
                        .unwrap_or_default()
                })
                .and_then(|age| now.checked_sub(age));
            it.synced = Some((f.data, at));
        }
    }

    /// The writes to start now for `current` (item key → data, every worker), at most
    /// what the last second leaves of [`WRITES_PER_SECOND`]: TTL renewals first, then
    /// changes and removals, then occupancy refreshes; within each, longest waiting
    /// first. Counts them as started.
    pub fn plan(&mut self, current: &BTreeMap<String, Value>, now: Instant) -> Vec<Op> {
        for key in current.keys() {
            if !self.items.contains_key(key) {
                self.items.insert(key.clone(), Item::default());
            }
        }
        // Items that neither exist nor are in Sync need nothing.
        self.items
            .retain(|k, it| current.contains_key(k) || it.synced.is_some());
        if self.paused_until.is_some_and(|t| now < t) {
            return Vec::new();
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        let budget = WRITES_PER_SECOND.saturating_sub(self.recent.len());
        let renew = renew_after(self.ttl);
        // (class, waiting since, key, whether it is a removal)
        let mut due: Vec<(u8, Instant, &String, bool)> = Vec::new();
        for (key, it) in &mut self.items {
            let written_at = it.synced.as_ref().and_then(|s| s.1);
            let age = |at: Option<Instant>| at.map(|t| now.saturating_duration_since(t));
            let ready = it.retry_at.is_none_or(|t| now >= t)
                && age(written_at).is_none_or(|a| a >= MIN_INTERVAL);
            let (class, delete) = match current.get(key) {
                // A deleted worker whose item is in Sync.
                None => (1, true),
                Some(data) => {
                    let ch = it
                        .synced
                        .as_ref()
                        .map_or(Change::Data, |(old, _)| change(old, data));
                    let ttl_due = it.synced.is_some()
                        && renew.is_some_and(|half| age(written_at).is_none_or(|a| a >= half));
                    let occupancy_due = ch == Change::OccupancyOnly
                        && age(written_at).is_none_or(|a| a >= OCCUPANCY_REFRESH);
                    let class = if ttl_due {
                        0
                    } else if ch == Change::Data {
                        1
                    } else if occupancy_due {
                        2
                    } else {
                        it.waiting_since = None;
                        continue;
                    };
                    (class, false)
                }
            };
            let since = *it.waiting_since.get_or_insert(now);
            if ready {
                due.push((class, since, key, delete));
            }
        }
        due.sort_unstable();
        let ops: Vec<Op> = due
            .into_iter()
            .take(budget)
            .map(|(_, _, key, delete)| match current.get(key) {
                Some(data) if !delete => Op::Write {
                    key: key.clone(),
                    data: data.clone(),
                },
                _ => Op::Delete { key: key.clone() },
            })
            .collect();
        self.recent.extend(ops.iter().map(|_| now));
        ops
    }

    /// Records the outcome of `op`, finished at `now`.
    pub fn done(&mut self, op: Op, r: &Result<(), TwilioError>, now: Instant) {
        match (op, r) {
            (Op::Write { key, data }, Ok(())) => {
                let it = self.items.entry(key).or_default();
                *it = Item {
                    synced: Some((data, Some(now))),
                    ..Item::default()
                };
            }
            (Op::Delete { key }, Ok(())) => {
                self.items.remove(&key);
            }
            (op, Err(e)) => {
                if e.status() == Some(429) {
                    // The map is over its rate although the client backed off: give it
                    // Sync's burst window; the item waits in its place.
                    self.paused_until = Some(now + RATE_LIMITED_PAUSE);
                    return;
                }
                if let Some(it) = self.items.get_mut(op.key()) {
                    it.failures = it.failures.saturating_add(1);
                    let delay = Duration::from_secs(1u64 << it.failures.min(6));
                    it.retry_at = Some(now + delay.min(MAX_RETRY_DELAY));
                }
            }
        }
    }

    /// Items known to be in Sync or waiting to be.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The `workerStats` stage.
pub struct WorkerStats {
    settings: Settings,
    pool: Pool,
    writer: SyncWriter,
    metrics: Arc<Metrics>,
    planner: Planner,
    /// Whether the map was read since this instance became the publisher.
    adopted: bool,
    oversize: OversizeLog,
    /// Whether the TTL was said to be too short for the number of workers.
    warned_renewals: bool,
}

impl WorkerStats {
    pub fn new(
        settings: Settings,
        pool: Pool,
        client: TwilioClient,
        metrics: Arc<Metrics>,
    ) -> WorkerStats {
        let writer = SyncWriter::new(settings.writer.clone(), client);
        WorkerStats {
            planner: Planner::new(writer.ttl()),
            settings,
            pool,
            writer,
            metrics,
            adopted: false,
            oversize: OversizeLog::default(),
            warned_renewals: false,
        }
    }

    /// Runs until `stop`, one tick per new summary (the publisher's ticks), while this
    /// instance holds the publisher lock.
    pub async fn run(
        mut self,
        mut ticks: watch::Receiver<Option<Arc<Summary>>>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                r = ticks.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
            if self.metrics.publisher_leader.get() != 1 {
                if self.adopted || !self.planner.is_empty() {
                    // Another instance publishes: what we knew of the map goes stale.
                    self.planner = Planner::new(self.writer.ttl());
                    self.adopted = false;
                }
                continue;
            }
            tokio::select! {
                _ = self.tick() => {}
                // Writes cut short are harmless: each is an idempotent upsert or delete.
                _ = stop.cancelled() => return,
            }
        }
    }

    /// The workers' items: key → data, cut to Sync's item size.
    async fn current(&mut self) -> Result<BTreeMap<String, Value>, StoreError> {
        let now = Utc::now();
        let day = crate::util::start_of_day(&self.settings.timezone, now);
        let workers = agents::agents(&self.pool, day, now).await?;
        let mut out = BTreeMap::new();
        for a in &workers {
            let key = sync_size::bound(&a.sid, MAX_KEY_CHARS).into_owned();
            let data = item_data(a, Some(&a.closed_seconds_by_activity));
            let (fitted, dropped) = fit(&data, MAX_DATA_BYTES);
            self.oversize
                .note(&format!("map {MAP} item {key}"), &dropped);
            let data = if dropped.is_empty() {
                data
            } else {
                fitted.into_owned()
            };
            out.insert(key, data);
        }
        Ok(out)
    }

    async fn tick(&mut self) {
        if !self.adopted {
            match self.writer.read_map(MAP).await {
                Ok(found) => {
                    let found = found.unwrap_or_default();
                    tracing::info!(items = found.len(), "read the {MAP} map back");
                    self.planner.adopt(found, Utc::now(), Instant::now());
                    self.adopted = true;
                }
                // Writing goes on meanwhile (upserts); reading is tried again next tick.
                Err(e) => tracing::warn!(error = %e, "cannot read the {MAP} map back"),
            }
        }
        let current = match self.current().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "cannot compute {MAP}");
                return;
            }
        };
        self.warn_if_ttl_too_short(current.len());
        let ops = self.planner.plan(&current, Instant::now());
        if ops.is_empty() {
            return;
        }
        let writer = &self.writer;
        let metrics = &self.metrics;
        let results: Vec<(Op, Result<(), TwilioError>)> = stream::iter(ops)
            .map(|op| async move {
                let started = Instant::now();
                let r = match &op {
                    Op::Write { key, data } => writer.write_item(MAP, key, data).await,
                    Op::Delete { key } => writer.delete_item(MAP, key).await,
                };
                metrics.sync_write_seconds.observe(started.elapsed());
                (op, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut failed = 0;
        let mut first_error = None;
        for (op, r) in results {
            match &r {
                Ok(()) => self.metrics.sync_writes.inc(),
                Err(e) => {
                    self.metrics.sync_errors.inc();
                    failed += 1;
                    if first_error.is_none() {
                        first_error = Some(format!("{}: {e}", op.key()));
                    }
                }
            }
            self.planner.done(op, &r, Instant::now());
        }
        if let Some(e) = first_error {
            // One line per tick, not one per item: a Sync outage fails them all.
            tracing::warn!(failed, first = %e, "{MAP} writes failed; they are retried later");
        }
    }

    /// Renewals alone need items / (TTL / 2) writes a second; more than half of the
    /// map's budget leaves changes waiting, more than all of it lets items expire.
    fn warn_if_ttl_too_short(&mut self, items: usize) {
        let Some(half) = renew_after(self.writer.ttl()) else {
            return;
        };
        let need = items as f64 / half.as_secs_f64().max(0.001);
        if need > WRITES_PER_SECOND as f64 / 2.0 && !self.warned_renewals {
            self.warned_renewals = true;
            let enough = (items as u64 * 4).div_ceil(WRITES_PER_SECOND as u64);
            tracing::warn!(
                workers = items,
                ttl_seconds = self.writer.ttl(),
                "publish.ttl_seconds is short for this many {MAP} items: renewing them takes \
                 {need:.1} of the map's {WRITES_PER_SECOND} writes/s; set it to at least {enough}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::agents::{AgentTask, Today};

    fn agent(sid: &str, activity: &str) -> Agent {
        Agent {
            sid: sid.into(),
            name: Some("alice".into()),
            activity: Some(activity.into()),
            available: Some(true),
            activity_since: Some("2026-03-08T10:00:00.000Z".into()),
            seconds_in_activity: Some(42),
            tasks: vec![AgentTask {
                sid: "WT1".into(),
                channel: Some("chat".into()),
                queue: Some("Support".into()),
                status: Some("assigned".into()),
                age_seconds: Some(17),
                created: DateTime::parse_from_rfc3339("2026-03-08T10:01:00Z")
                    .ok()
                    .map(|d| d.with_timezone(&Utc)),
            }],
            today: Today {
                occupancy: Some(0.5),
                ..Today::default()
            },
            closed_seconds_by_activity: BTreeMap::new(),
        }
    }

    #[test]
    fn items_leave_out_what_grows_by_itself() {
        let closed = BTreeMap::from([("Offline".to_string(), 3600.0)]);
        let v = item_data(&agent("WK1", "Available"), Some(&closed));
        assert!(v.get("seconds_in_activity").is_none());
        assert!(v["tasks"][0].get("age_seconds").is_none());
        assert_eq!(v["tasks"][0]["created"], "2026-03-08T10:01:00.000Z");
        assert_eq!(v["activity_since"], "2026-03-08T10:00:00.000Z");
        assert_eq!(
            v["today"]["seconds_by_activity"],
            json!({"Offline": 3600.0})
        );
        // The same worker a few seconds later is the same item.
        let mut later = agent("WK1", "Available");
        later.seconds_in_activity = Some(45);
        later.tasks[0].age_seconds = Some(20);
        assert_eq!(item_data(&later, Some(&closed)), v);
    }

    fn items(n: usize, activity: &str) -> BTreeMap<String, Value> {
        (0..n)
            .map(|i| {
                let sid = format!("WK{i:04}");
                (sid.clone(), item_data(&agent(&sid, activity), None))
            })
            .collect()
    }

    fn write_all(p: &mut Planner, ops: Vec<Op>, at: Instant) {
        for op in ops {
            p.done(op, &Ok(()), at);
        }
    }

    fn keys(ops: &[Op]) -> Vec<&str> {
        ops.iter().map(Op::key).collect()
    }

    #[test]
    fn only_changes_at_most_once_a_second_and_the_latest_wins() {
        let t0 = Instant::now();
        let s = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let mut p = Planner::new(0);
        let mut cur = items(2, "Available");
        let ops = p.plan(&cur, t0);
        assert_eq!(keys(&ops), ["WK0000", "WK0001"]);
        write_all(&mut p, ops, t0);
        assert!(p.plan(&cur, s(1.0)).is_empty(), "unchanged: nothing");
        assert!(
            p.plan(&cur, s(30.0)).is_empty(),
            "still nothing without a TTL"
        );
        // Two changes within a second of a write: neither now, the later one after it.
        cur.insert("WK0000".into(), item_data(&agent("WK0000", "Break"), None));
        let ops = p.plan(&cur, s(30.2));
        assert_eq!(keys(&ops), ["WK0000"]);
        write_all(&mut p, ops, s(30.2));
        cur.insert("WK0000".into(), item_data(&agent("WK0000", "Lunch"), None));
        assert!(p.plan(&cur, s(30.5)).is_empty(), "within the second");
        cur.insert(
            "WK0000".into(),
            item_data(&agent("WK0000", "Offline"), None),
        );
        assert!(p.plan(&cur, s(31.0)).is_empty(), "within the second");
        let ops = p.plan(&cur, s(31.3));
        assert_eq!(
            ops,
            vec![Op::Write {
                key: "WK0000".into(),
                data: cur["WK0000"].clone()
            }]
        );
        assert!(matches!(&ops[0], Op::Write { data, .. } if data["activity"] == "Offline"));
    }

    #[test]
    fn deleted_workers_lose_their_item() {
        let t0 = Instant::now();
        let mut p = Planner::new(0);
        let mut cur = items(3, "Available");
        let ops = p.plan(&cur, t0);
        write_all(&mut p, ops, t0);
        cur.remove("WK0001");
        let ops = p.plan(&cur, t0 + Duration::from_secs(2));
        assert_eq!(
            ops,
            vec![Op::Delete {
                key: "WK0001".into()
            }]
        );
        write_all(&mut p, ops, t0 + Duration::from_secs(2));
        assert_eq!(p.len(), 2);
        assert!(p.plan(&cur, t0 + Duration::from_secs(4)).is_empty());
    }

    /// 2,000 workers changing at once: at most WRITES_PER_SECOND writes in any second,
    /// in order of waiting, and a worker who changes meanwhile is not overtaken by those
    /// who changed after it.
    #[test]
    fn a_burst_of_two_thousand_drains_within_the_rate() {
        let t0 = Instant::now();
        let mut p = Planner::new(0);
        // Small items: the planner does not look inside them (and the test stays quick).
        let small = |activity: &str| json!({"activity": activity, "today": {}});
        let mut cur: BTreeMap<String, Value> = (0..2000)
            .map(|i| (format!("WK{i:04}"), small("Available")))
            .collect();
        let mut starts: Vec<Instant> = Vec::new();
        let mut written = std::collections::HashSet::new();
        let mut order = Vec::new();
        let mut tick = 0;
        // Ticks every half second (a fast schedule), each writing what is allowed.
        while written.len() < 2001 {
            let at = t0 + Duration::from_millis(500 * tick);
            tick += 1;
            if tick == 3 {
                // Meanwhile the last worker changes again (still one write for it) and a
                // new one appears (written after everyone who waited longer).
                cur.insert("WK1999".into(), small("Break"));
                cur.insert("WK2000".into(), small("Break"));
            }
            let ops = p.plan(&cur, at);
            assert!(ops.len() <= WRITES_PER_SECOND);
            for op in &ops {
                assert!(written.insert(op.key().to_string()), "{} twice", op.key());
                order.push(op.key().to_string());
                starts.push(at);
            }
            write_all(&mut p, ops, at);
            assert!(tick < 1000, "stuck");
        }
        for (i, a) in starts.iter().enumerate() {
            let in_second = starts[i..]
                .iter()
                .take_while(|b| b.duration_since(*a) < Duration::from_secs(1))
                .count();
            assert!(
                in_second <= WRITES_PER_SECOND,
                "{in_second} writes in a second"
            );
        }
        let took = starts.last().unwrap().duration_since(t0);
        assert!(took <= Duration::from_secs(201), "{took:?}");
        assert_eq!(order.last().map(String::as_str), Some("WK2000"));
        // Nothing left, and the last worker's latest data is what was written.
        let end = t0 + Duration::from_secs(300);
        assert!(p.plan(&cur, end).is_empty());
    }

    #[test]
    fn renewals_come_first_and_occupancy_alone_waits() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut p = Planner::new(100); // renewed after 50 s
        let mut cur = items(12, "Available");
        let ops = p.plan(&cur, t0);
        assert_eq!(ops.len(), WRITES_PER_SECOND);
        write_all(&mut p, ops, t0);
        let ops = p.plan(&cur, s(2));
        assert_eq!(keys(&ops), ["WK0010", "WK0011"]);
        write_all(&mut p, ops, s(2));
        // Occupancy alone: not a change.
        for v in cur.values_mut() {
            v["today"]["occupancy"] = json!(0.75);
        }
        assert!(p.plan(&cur, s(10)).is_empty());
        // At 51 s the first ten are due for renewal, and WK0010 changed: renewals first.
        cur.insert("WK0010".into(), item_data(&agent("WK0010", "Break"), None));
        let ops = p.plan(&cur, s(51));
        assert_eq!(ops.len(), WRITES_PER_SECOND);
        assert!(!keys(&ops).contains(&"WK0010"), "{:?}", keys(&ops));
        // Every renewal carries the current data, occupancy included.
        assert!(ops
            .iter()
            .all(|o| matches!(o, Op::Write { data, .. } if data["today"]["occupancy"] == 0.75)));
        write_all(&mut p, ops, s(51));
        assert_eq!(keys(&p.plan(&cur, s(52))), ["WK0010", "WK0011"]);
    }

    #[test]
    fn occupancy_is_refreshed_after_a_while() {
        let t0 = Instant::now();
        let mut p = Planner::new(0);
        let mut cur = items(1, "Available");
        let ops = p.plan(&cur, t0);
        write_all(&mut p, ops, t0);
        cur.get_mut("WK0000").unwrap()["today"]["occupancy"] = json!(0.9);
        assert!(p.plan(&cur, t0 + Duration::from_secs(60)).is_empty());
        let ops = p.plan(&cur, t0 + OCCUPANCY_REFRESH);
        assert_eq!(keys(&ops), ["WK0000"]);
    }

    fn api_error(status: u16) -> TwilioError {
        TwilioError::Api {
            status,
            code: None,
            message: "x".into(),
        }
    }

    #[test]
    fn rate_limits_pause_the_map_and_failures_back_off() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut p = Planner::new(0);
        let cur = items(3, "Available");
        let ops = p.plan(&cur, t0);
        let mut ops = ops.into_iter();
        p.done(ops.next().unwrap(), &Err(api_error(429)), t0);
        p.done(ops.next().unwrap(), &Err(api_error(500)), t0);
        p.done(ops.next().unwrap(), &Ok(()), t0);
        assert!(p.plan(&cur, s(5)).is_empty(), "paused after a 429");
        let ops = p.plan(&cur, s(11));
        assert_eq!(keys(&ops), ["WK0000", "WK0001"], "both wait in their place");
        p.done(ops[1].clone(), &Err(api_error(500)), s(11));
        write_all(&mut p, vec![ops[0].clone()], s(11));
        // The second failure waits 4 s.
        assert!(p.plan(&cur, s(13)).is_empty());
        assert_eq!(keys(&p.plan(&cur, s(15))), ["WK0001"]);
    }

    #[test]
    fn what_the_map_holds_is_not_rewritten_and_strays_are_removed() {
        let t0 = Instant::now();
        let now_utc = Utc::now();
        let cur = items(2, "Available");
        let mut p = Planner::new(0);
        let found = vec![
            SyncMapItem {
                key: Some("WK0000".into()),
                data: cur["WK0000"].clone(),
                date_updated: Some(now_utc.to_rfc3339()),
            },
            SyncMapItem {
                key: Some("WKgone".into()),
                data: json!({}),
                date_updated: None,
            },
        ];
        p.adopt(found, now_utc, t0);
        let ops = p.plan(&cur, t0 + Duration::from_secs(1));
        assert_eq!(keys(&ops), ["WK0001", "WKgone"]);
        assert!(matches!(ops[1], Op::Delete { .. }));
        // With a TTL, an item read back without a date is renewed at once.
        let mut p = Planner::new(3600);
        p.adopt(
            vec![SyncMapItem {
                key: Some("WK0000".into()),
                data: cur["WK0000"].clone(),
                date_updated: None,
            }],
            now_utc,
            t0,
        );
        assert_eq!(
            keys(&p.plan(&cur, t0 + Duration::from_secs(1))),
            ["WK0000", "WK0001"]
        );
    }
}
