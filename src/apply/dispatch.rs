//! The dispatcher and its workers: queue → Postgres.
//!
//! One dispatcher reads the queue in order and hands each event to one of N workers,
//! chosen by a hash of the event's entity (its task, or its worker…), so that every
//! entity's events reach Postgres in queue order. Each worker applies what is waiting
//! for it in one transaction, then acknowledges those queue entries.
//!
//! Failures:
//! - transient (Postgres down, deadlock, not migrated): the batch is retried with
//!   backoff, forever, without counting against the events; ingress keeps accepting;
//! - anything else: the batch is split and each event retried alone; an event that
//!   still fails is moved to the retry tree with exponential backoff, and after
//!   `max_attempts` to the dead-letter store. It never blocks the events behind it.
//!
//! Bursts: while callbacks arrive as a burst ([`crate::queue::Pressure`]), acks come
//! first. Workers then apply one small batch at a time, each followed by a pause of
//! [`YIELD_FACTOR`] times its duration (the drain keeps a fifth of one worker, so it
//! still progresses under an endless burst), and the refreshers wait. Order and
//! exactness are unchanged: the same events are applied, only later.

use crate::apply::store::{Store, StoreError};
use crate::backoff::Backoff;
use crate::event::{Event, QueuedCallback};
use crate::metrics::Metrics;
use crate::queue::{Item, Loc, Queue};
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    pub batch_size: usize,
    /// Entry bytes read from the queue and not yet applied, at most (see
    /// [`InFlightBudget`]).
    pub in_flight_bytes: usize,
    pub max_attempts: u32,
}

type Work = (Item, Event);

/// Bounds what the drain holds in memory by the bytes of the queue entries, not by their
/// count, so a backlog of large callbacks (long task attributes, message bodies) cannot
/// take the process past its budget: the dispatcher takes an entry's share before
/// decoding it, the worker gives it back once the entry's batch is applied.
struct InFlightBudget(Arc<tokio::sync::Semaphore>, u32);

/// The unit of [`InFlightBudget`]'s budget, in bytes.
const IN_FLIGHT_UNIT: usize = 256;

impl InFlightBudget {
    fn new(bytes: usize) -> Self {
        let units = (bytes / IN_FLIGHT_UNIT).clamp(1, u32::MAX as usize) as u32;
        InFlightBudget(Arc::new(tokio::sync::Semaphore::new(units as usize)), units)
    }

    /// Waits for room for an entry of `bytes` (an entry larger than the whole budget
    /// waits for all of it).
    async fn take(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let units = bytes.div_ceil(IN_FLIGHT_UNIT).clamp(1, self.1 as usize) as u32;
        self.0.clone().acquire_many_owned(units).await.ok()
    }
}

/// The longest a batch may take to apply before the attempt is abandoned and retried.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// During a burst: the largest batch (a short transaction leaves the cores to ingest
/// sooner) and the pause after each batch, as a multiple of the time it took.
pub const YIELDING_BATCH: usize = 250;
pub const YIELD_FACTOR: u32 = 4;

/// The longest a refresher waits for a burst to end before running a round anyway.
const REFRESH_PATIENCE: Duration = Duration::from_secs(2);

/// Waits while callbacks arrive as a burst, up to `patience`. (The worker times its
/// whole wait, the turn's lock included, for the yield metric.)
async fn await_calm(queue: &Queue, patience: Duration, stop: &CancellationToken) {
    let started = std::time::Instant::now();
    while queue.pressure().busy() && started.elapsed() < patience && !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Recomputes marked conversations' message metrics until `stop` (see
/// [`Store::refresh_dirty`]): every half second, or every quarter second while there is
/// more. Rounds are spaced even in a drain so that a conversation marked by many events
/// in a row is recomputed once per round, not once per batch.
pub async fn run_message_metrics(store: Store, queue: Arc<Queue>, stop: CancellationToken) {
    const MARKS: usize = 5_000;
    loop {
        await_calm(&queue, REFRESH_PATIENCE, &stop).await;
        let wait = pace(
            store.refresh_dirty(MARKS as i64).await,
            MARKS,
            "message metrics",
        )
        .max(Duration::from_millis(250));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Recomputes the interval rollups of buckets whose tasks changed and the days of
/// workers whose activities, reservations or tasks changed (see
/// [`crate::apply::store::history`]), until `stop`: reports and `/api/agents` are at most
/// about a second behind the events.
pub async fn run_rollups(store: Store, queue: Arc<Queue>, stop: CancellationToken) {
    loop {
        await_calm(&queue, REFRESH_PATIENCE, &stop).await;
        // Many marks name the same bucket or worker: large rounds cost little more than
        // small ones, and a drain in full flow leaves the refresh a round every 200 ms.
        const MARKS: usize = 20_000;
        let rollups = pace(
            store.refresh_rollups(MARKS as i64).await,
            MARKS,
            "interval rollups",
        );
        let days = pace(
            store.refresh_worker_days(MARKS as i64).await,
            MARKS,
            "workers' days",
        );
        let wait = rollups.min(days).max(Duration::from_millis(200));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The pause before a refresher's next round: none while marks are left, half a second
/// once caught up, 2 s after an error (logged unless Postgres is just unreachable).
fn pace(took: Result<usize, StoreError>, limit: usize, what: &str) -> Duration {
    match took {
        Ok(n) if n >= limit => Duration::from_millis(10),
        Ok(_) => Duration::from_millis(500),
        Err(e) => {
            if !e.is_transient() {
                tracing::warn!(error = %e, "cannot refresh {what}; will retry");
            }
            Duration::from_secs(2)
        }
    }
}

/// Which worker handles an entity. Stable for a given key and worker count.
pub fn partition(key: &str, workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % workers.max(1) as u64) as usize
}

/// Backoff before the next attempt of a failing event: 1 s, 2 s, 4 s … capped at 5 min,
/// with ±20% jitter so failures do not retry in lockstep.
pub fn retry_delay_ms(attempts: u32) -> i64 {
    const BACKOFF: Backoff =
        Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).jitter(0.8, 1.2);
    BACKOFF.delay(attempts).as_millis() as i64
}

struct Shared {
    queue: Arc<Queue>,
    store: Store,
    metrics: Arc<Metrics>,
    settings: Settings,
    /// Retry entries currently with a worker, so the dispatcher does not hand them out twice.
    retry_in_flight: Mutex<HashSet<u64>>,
    in_flight: InFlightBudget,
    /// During a burst, one worker applies at a time, not before this instant.
    turn: tokio::sync::Mutex<std::time::Instant>,
    stop: CancellationToken,
}

/// Runs the dispatcher and its workers until `stop` is cancelled. On stop, workers
/// finish the transaction in hand; everything not yet acknowledged stays queued.
pub async fn run(
    queue: Arc<Queue>,
    store: Store,
    metrics: Arc<Metrics>,
    settings: Settings,
    stop: CancellationToken,
) {
    let shared = Arc::new(Shared {
        queue,
        store,
        metrics,
        settings: settings.clone(),
        retry_in_flight: Mutex::new(HashSet::new()),
        in_flight: InFlightBudget::new(settings.in_flight_bytes),
        turn: tokio::sync::Mutex::new(std::time::Instant::now()),
        stop,
    });
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for i in 0..settings.workers {
        // One batch waiting per worker bounds memory; the queue holds the rest.
        let (tx, rx) = mpsc::channel::<Held>(settings.batch_size);
        senders.push(tx);
        // Every log line of the worker, and of the store calls it makes, carries its id.
        handles.push(tokio::spawn(
            worker(i, shared.clone(), rx).instrument(tracing::info_span!("worker", id = i)),
        ));
    }
    dispatcher(&shared, &senders).await;
    drop(senders);
    for h in handles {
        let _ = h.await;
    }
}

/// Work and its share of the in-flight budget.
type Held = (Work, tokio::sync::OwnedSemaphorePermit);

async fn dispatcher(sh: &Shared, senders: &[mpsc::Sender<Held>]) {
    let mut cursor: Option<u64> = None;
    let mut generation = sh.queue.generation();
    let mut next_retry_scan = 0i64;
    // One batch per read: what is read waits in memory for a worker, so reading more
    // than a batch ahead only adds memory during a backlog.
    let read_max = sh.settings.batch_size;
    loop {
        sh.metrics.beat_dispatcher();
        if sh.stop.is_cancelled() {
            return;
        }
        if sh.queue.generation() != generation {
            // The store was reopened: entries may have reappeared behind the cursor.
            generation = sh.queue.generation();
            cursor = None;
        }
        let mut items = match sh.queue.read_batch(cursor, read_max) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the queue");
                Vec::new()
            }
        };
        if let Some(last) = items.last() {
            if let Loc::Main(id) = last.loc {
                cursor = Some(id);
            }
        }
        if crate::util::now_ms() >= next_retry_scan {
            match sh.queue.due_retries(read_max) {
                Ok((due, next)) => {
                    let mut inflight = sh.retry_in_flight.lock().unwrap_or_else(|p| p.into_inner());
                    for it in due {
                        if let Loc::Retry(id) = it.loc {
                            if inflight.insert(id) {
                                items.push(it);
                            }
                        }
                    }
                    next_retry_scan = next
                        .unwrap_or(crate::util::now_ms() + 1000)
                        .min(crate::util::now_ms() + 1000);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the retry queue");
                    next_retry_scan = crate::util::now_ms() + 1000;
                }
            }
        }
        if items.is_empty() {
            tokio::select! {
                _ = sh.queue.new_data.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = sh.stop.cancelled() => return,
            }
            continue;
        }
        for item in items {
            // Waiting for room is backpressure too (workers hold their batches while
            // Postgres is down): the heartbeat goes on, or the watchdog would restart us.
            let share = loop {
                tokio::select! {
                    s = sh.in_flight.take(item.payload.len()) => break s,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        sh.metrics.beat_dispatcher();
                    }
                    _ = sh.stop.cancelled() => return,
                }
            };
            let Some(share) = share else { return };
            let event = match QueuedCallback::decode_event(&item.payload) {
                Ok(event) => event,
                Err(e) => {
                    // Written by an incompatible version or damaged on disk: retrying
                    // cannot help, so it goes straight to the dead letters.
                    let msg = format!("undecodable queue entry: {e}");
                    tracing::error!(loc = ?item.loc, error = %msg, "dead-lettering");
                    if let Err(e) = sh.queue.dead_letter(&item, &msg) {
                        tracing::error!(error = %e, "cannot dead-letter an entry");
                    }
                    continue;
                }
            };
            let p = partition(event.partition_key(), senders.len());
            let mut work = Some(((item, event), share));
            // Keep the heartbeat alive while workers are busy (e.g. Postgres is down):
            // a full channel is backpressure, not a hang.
            while let Some(w) = work.take() {
                let permit = tokio::select! {
                    p = senders[p].reserve() => p,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        sh.metrics.beat_dispatcher();
                        work = Some(w);
                        if sh.stop.is_cancelled() { return; }
                        continue;
                    }
                };
                match permit {
                    Ok(permit) => permit.send(w),
                    Err(_) => return, // worker gone: shutting down
                }
            }
        }
    }
}

async fn worker(id: usize, sh: Arc<Shared>, mut rx: mpsc::Receiver<Held>) {
    let mut batch_no = 0u64;
    while let Some(first) = rx.recv().await {
        let burst = sh.queue.pressure().busy();
        let max = if burst {
            YIELDING_BATCH.min(sh.settings.batch_size)
        } else {
            sh.settings.batch_size
        };
        // Sized up front: growing a Vec of 2,000 events copied it eleven times.
        let mut batch = Vec::with_capacity((rx.len() + 1).min(max));
        // Given back when the batch is done.
        let mut shares = Vec::with_capacity(batch.capacity());
        for (w, share) in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            batch.push(w);
            shares.push(share);
            if batch.len() >= max {
                break;
            }
        }
        batch_no += 1;
        let span = tracing::debug_span!("batch", n = batch_no, events = batch.len());
        if burst {
            let waited = std::time::Instant::now();
            let mut next = sh.turn.lock().await;
            let now = std::time::Instant::now();
            let patience = next.saturating_duration_since(now);
            await_calm(&sh.queue, patience, &sh.stop).await;
            sh.metrics.observe_drain_yield(waited.elapsed());
            let started = std::time::Instant::now();
            process(&sh, batch).instrument(span).await;
            *next = std::time::Instant::now() + started.elapsed() * YIELD_FACTOR;
        } else {
            process(&sh, batch).instrument(span).await;
        }
        drop(shares);
        if sh.stop.is_cancelled() {
            // Leave whatever is still in the channel in the queue for the next start.
            break;
        }
    }
    tracing::debug!(worker = id, "worker stopped");
}

/// Applies a batch; on a non-transient failure, isolates the failing events.
async fn process(sh: &Shared, batch: Vec<Work>) {
    let (items, events): (Vec<Item>, Vec<Event>) = batch.into_iter().unzip();
    let mut transient_attempt = 0u32;
    loop {
        // A hung Postgres call must not hang the worker (or hide from the watchdog):
        // past the limit the attempt counts as a transient failure and is retried.
        let started = std::time::Instant::now();
        let attempt = tokio::time::timeout(APPLY_TIMEOUT, sh.store.apply(&events)).await;
        sh.metrics.apply_seconds.observe(started.elapsed());
        let result = attempt.unwrap_or_else(|_| Err(StoreError::Timeout(APPLY_TIMEOUT.as_secs())));
        match result {
            Ok(applied) => {
                sh.metrics.postgres_up.store(1, Relaxed);
                sh.metrics.apply_batches.fetch_add(1, Relaxed);
                sh.metrics
                    .events_applied
                    .fetch_add(applied.new as u64, Relaxed);
                sh.metrics
                    .events_duplicate
                    .fetch_add(applied.duplicate as u64, Relaxed);
                if applied.new > 0 {
                    let mut by_type = sh
                        .metrics
                        .applied_by_type
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    for (t, n) in applied.new_by_type {
                        // Bounded label set: event types come from outside.
                        if by_type.len() < 200 || by_type.contains_key(&t) {
                            *by_type.entry(t).or_default() += n;
                        }
                    }
                }
                let locs: Vec<Loc> = items.iter().map(|i| i.loc).collect();
                if let Err(e) = sh.queue.ack(&locs) {
                    // The events are committed; a failed delete only means a harmless replay.
                    tracing::error!(error = %e, "cannot delete applied entries from the queue");
                }
                release_retries(sh, &items);
                return;
            }
            Err(e) if e.is_transient() => {
                sh.metrics.postgres_up.store(0, Relaxed);
                sh.metrics.apply_errors.fetch_add(1, Relaxed);
                let wait = Backoff::POSTGRES_UNAVAILABLE.delay(transient_attempt);
                tracing::warn!(error = %e, events = events.len(), retry_in_ms = wait.as_millis() as u64,
                    "Postgres unavailable; will retry (events stay queued)");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = sh.stop.cancelled() => { release_retries(sh, &items); return; }
                }
                transient_attempt = transient_attempt.saturating_add(1);
            }
            Err(e) => {
                sh.metrics.apply_errors.fetch_add(1, Relaxed);
                if events.len() > 1 {
                    tracing::warn!(error = %e, events = events.len(), "batch failed; applying its events one by one");
                    for w in items.into_iter().zip(events) {
                        Box::pin(process(sh, vec![w])).await;
                    }
                } else if let (Some(item), Some(event)) = (items.first(), events.first()) {
                    fail(sh, item, event, &e);
                    release_retries(sh, &items);
                }
                return;
            }
        }
    }
}

fn fail(sh: &Shared, item: &Item, event: &Event, e: &StoreError) {
    let msg = e.to_string();
    let attempts = item.attempts + 1;
    let result = if attempts >= sh.settings.max_attempts {
        tracing::error!(event_sid = %event.sid, event_type = %event.event_type, attempts,
            error = %msg, "event failed too often; moved to the dead letters");
        sh.queue.dead_letter(item, &msg)
    } else {
        let delay = retry_delay_ms(item.attempts);
        sh.metrics.apply_retries.fetch_add(1, Relaxed);
        tracing::warn!(event_sid = %event.sid, event_type = %event.event_type, attempts,
            retry_in_ms = delay, error = %msg, "event failed; will retry");
        sh.queue.defer(item, &msg, delay)
    };
    if let Err(e) = result {
        // The entry stays where it was and comes back on the next start.
        tracing::error!(error = %e, "cannot record a failed attempt");
    }
}

fn release_retries(sh: &Shared, items: &[Item]) {
    let mut inflight = sh.retry_in_flight.lock().unwrap_or_else(|p| p.into_inner());
    for item in items {
        if let Loc::Retry(id) = item.loc {
            inflight.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        for k in ["WT1", "WK2", "x"] {
            let p = partition(k, 4);
            assert!(p < 4);
            assert_eq!(p, partition(k, 4));
        }
        assert_eq!(partition("anything", 1), 0);
    }

    #[test]
    fn retry_delay_grows_and_caps() {
        let d0 = retry_delay_ms(0);
        assert!((800..=1200).contains(&d0), "{d0}");
        let d3 = retry_delay_ms(3);
        assert!((6400..=9600).contains(&d3), "{d3}");
        assert!(retry_delay_ms(40) <= 360_000);
    }
}
