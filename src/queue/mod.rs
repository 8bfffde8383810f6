//! The durable queue between ingress and the workers, on sled.
//!
//! Guarantees:
//! - [`Queue::append_durable`] returns only after an fsync that covers the append (group
//!   commit: one flush serves every request that appended before it started), so a 204
//!   sent after it survives `kill -9`.
//! - Entries keep arrival order (keys are sled's monotonic ids, big-endian).
//! - An entry leaves the queue only through [`Queue::ack`] (after its Postgres
//!   transaction committed) or by being moved to the retry or dead-letter trees; so a
//!   crash at any point replays, never loses. Replays are harmless because applying an
//!   event is idempotent.
//!
//! Removals are not flushed explicitly: losing one in a crash only causes a replay.

mod pressure;

pub use pressure::Pressure;

use crate::event::QueuedCallback;
use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Notify};

/// The Display of each variant says its cause, and no variant has a `source()`: printed
/// as a chain (`{:#}`, [`crate::util::error_chain`]) the cause would be said twice.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot open the queue at {path}: {error} (is another instance using it?)")]
    Open { path: PathBuf, error: sled::Error },
    #[error("queue write failed: {0}")]
    Write(sled::Error),
    #[error("queue flush to disk failed: {0}")]
    Flush(String),
    #[error("queue backlog is at its limit ({0} entries); try again later")]
    Full(u64),
    #[error("queue is shutting down")]
    Closed,
    #[error("queue store is being reopened after an IO error; try again shortly")]
    Reopening,
    #[error("queue entry {0} is corrupt: {1}")]
    Corrupt(u64, String),
}

impl From<sled::Error> for QueueError {
    fn from(e: sled::Error) -> Self {
        QueueError::Write(e)
    }
}

/// Where an entry currently lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loc {
    Main(u64),
    Retry(u64),
}

/// An entry handed to the dispatcher.
#[derive(Debug, Clone)]
pub struct Item {
    pub loc: Loc,
    /// Failed attempts so far.
    pub attempts: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RetryEntry {
    attempts: u32,
    due_ms: i64,
    error: String,
    payload: Vec<u8>,
}

/// An event set aside after failing `max_attempts` times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    pub id: u64,
    pub attempts: u32,
    pub error: String,
    pub failed_ms: i64,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Flushed {
    through: u64,
    result: Result<(), String>,
}

/// Queue depth and age, for `/readyz`, `/metrics` and `queue status` (defined with the
/// other gauges in [`crate::metrics`], which renders them).
pub use crate::metrics::QueueStatus as Status;

/// The open sled database and its trees. Replaced as a whole when the store must be
/// reopened (see [`Queue::recover`]).
struct Trees {
    db: sled::Db,
    main: sled::Tree,
    retry: sled::Tree,
    dead: sled::Tree,
}

impl Trees {
    fn open(path: &Path, cache_mb: u64) -> Result<Trees, QueueError> {
        let open_err = |error| QueueError::Open {
            path: path.to_owned(),
            error,
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb << 20)
            .mode(sled::Mode::LowSpace)
            // Our own group commit flushes before every ack; this is only a backstop.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(open_err)?;
        Ok(Trees {
            main: db.open_tree("main").map_err(open_err)?,
            retry: db.open_tree("retry").map_err(open_err)?,
            dead: db.open_tree("dead").map_err(open_err)?,
            db,
        })
    }
}

pub struct Queue {
    path: PathBuf,
    cache_mb: u64,
    trees: std::sync::RwLock<Option<Arc<Trees>>>,
    /// Set when sled reported an IO error: sled keeps failing after one (e.g. after
    /// the disk was full), so the flusher reopens the store.
    broken: AtomicBool,
    /// Incremented on every reopen: readers holding a cursor must start over.
    generation: AtomicU64,
    depth: AtomicU64,
    tail: std::sync::Mutex<()>,
    max_backlog: u64,
    appended: AtomicU64,
    flushed_tx: watch::Sender<Flushed>,
    flush_wake: Notify,
    /// Wakes the dispatcher when something was appended or deferred.
    pub new_data: Notify,
    metrics: Arc<Metrics>,
    pressure: Pressure,
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn id_of(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[..n].copy_from_slice(&k[..n]);
    u64::from_be_bytes(b)
}

impl Queue {
    /// Opens (or creates) the queue directory. sled's cache is bounded by `cache_mb`.
    pub fn open(
        path: &Path,
        cache_mb: u64,
        max_backlog: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Queue>, QueueError> {
        let t = Trees::open(path, cache_mb)?;
        let depth = (t.main.len() + t.retry.len()) as u64;
        let (flushed_tx, _) = watch::channel(Flushed {
            through: 0,
            result: Ok(()),
        });
        metrics
            .dead_letters
            .store(t.dead.len() as u64, Ordering::Relaxed);
        Ok(Arc::new(Queue {
            path: path.to_owned(),
            cache_mb,
            trees: std::sync::RwLock::new(Some(Arc::new(t))),
            broken: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            depth: AtomicU64::new(depth),
            tail: std::sync::Mutex::new(()),
            max_backlog,
            appended: AtomicU64::new(0),
            flushed_tx,
            flush_wake: Notify::new(),
            new_data: Notify::new(),
            metrics,
            pressure: Pressure::default(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How hard callbacks are arriving (see [`Pressure`]): ingest counts them, the drain
    /// steps aside while it is busy.
    pub fn pressure(&self) -> &Pressure {
        &self.pressure
    }

    fn t(&self) -> Result<Arc<Trees>, QueueError> {
        self.trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(QueueError::Reopening)
    }

    /// Notes an error; IO errors leave sled failing until it is reopened.
    fn check<T>(&self, r: Result<T, sled::Error>) -> Result<T, QueueError> {
        r.map_err(|e| {
            if matches!(e, sled::Error::Io(_)) && !self.broken.swap(true, Ordering::SeqCst) {
                tracing::error!(error = %e, "queue store IO error; it will be reopened");
                self.flush_wake.notify_one();
            }
            QueueError::Write(e)
        })
    }

    /// Increments on every reopen of the store; a reader keeping a cursor restarts
    /// from the head when it changes (replays are harmless).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Reopens the store after an IO error, once every user of the old one let go.
    /// Entries acknowledged before the error were flushed and are still there; writes
    /// that failed were never acknowledged.
    fn recover(&self) -> bool {
        let old = self.trees.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(old) = old {
            // Wait briefly for in-flight operations on the old store to finish.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            let mut old = Some(old);
            while let Some(o) = old.take() {
                match Arc::try_unwrap(o) {
                    Ok(t) => drop(t),
                    Err(o) if Instant::now() < deadline => {
                        old = Some(o);
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(o) => {
                        *self.trees.write().unwrap_or_else(|p| p.into_inner()) = Some(o);
                        return false;
                    }
                }
            }
        }
        match Trees::open(&self.path, self.cache_mb) {
            Ok(t) => {
                self.depth
                    .store((t.main.len() + t.retry.len()) as u64, Ordering::Relaxed);
                *self.trees.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(t));
                self.generation.fetch_add(1, Ordering::SeqCst);
                self.broken.store(false, Ordering::SeqCst);
                tracing::warn!(path = %self.path.display(), "queue store reopened");
                self.new_data.notify_one();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the queue store yet");
                false
            }
        }
    }

    /// Entries waiting (main + retry).
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Appends a callback and waits until a flush covering it has completed. Requires
    /// [`Queue::run_flusher`] to be running. On error nothing may be acknowledged.
    pub async fn append_durable(&self, cb: &QueuedCallback) -> Result<u64, QueueError> {
        let ids = self.append_all_durable(std::slice::from_ref(cb)).await?;
        Ok(ids.first().copied().unwrap_or_default())
    }

    /// Appends several callbacks (an Event Streams delivery, a backfill page) in order
    /// and waits for one flush covering all of them. On error nothing may be
    /// acknowledged; entries already appended are applied anyway (replays are harmless).
    pub async fn append_all_durable(&self, cbs: &[QueuedCallback]) -> Result<Vec<u64>, QueueError> {
        let depth = self.depth();
        if depth.saturating_add(cbs.len() as u64) > self.max_backlog.max(cbs.len() as u64) {
            return Err(QueueError::Full(depth));
        }
        let mut ids = Vec::with_capacity(cbs.len());
        for cb in cbs {
            ids.push(self.insert_tail(cb.encode())?);
        }
        // The sequence number is taken after the insert completed, so a flush that
        // starts after observing it covers the insert.
        let seq = self.appended.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.flushed_tx.subscribe();
        self.flush_wake.notify_one();
        loop {
            {
                let f = rx.borrow_and_update();
                if f.through >= seq {
                    self.new_data.notify_one();
                    return match &f.result {
                        Ok(()) => Ok(ids),
                        Err(e) => Err(QueueError::Flush(e.clone())),
                    };
                }
            }
            if rx.changed().await.is_err() {
                return Err(QueueError::Closed);
            }
        }
    }

    /// The group-commit loop: each round fsyncs everything appended before it began and
    /// then releases all the requests that were waiting for it. Runs until `shutdown`
    /// resolves and, after that, performs one final flush.
    pub async fn run_flusher(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut done = 0u64;
        loop {
            let stopping = tokio::select! {
                _ = self.flush_wake.notified() => false,
                _ = shutdown.cancelled() => true,
                // While broken, retry the reopen periodically.
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)),
                    if self.broken.load(Ordering::SeqCst) => false,
            };
            if self.broken.load(Ordering::SeqCst) && !stopping {
                let q = self.clone();
                let _ = tokio::task::spawn_blocking(move || q.recover()).await;
            }
            let target = self.appended.load(Ordering::SeqCst);
            if target > done || stopping {
                let started = Instant::now();
                let result = match self.t() {
                    Err(e) => Err(e.to_string()),
                    Ok(t) => match tokio::task::spawn_blocking(move || t.db.flush()).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => {
                            let _ = self.check::<()>(Err(e.clone()));
                            Err(e.to_string())
                        }
                        Err(e) => Err(format!("flush task failed: {e}")),
                    },
                };
                if let Err(e) = &result {
                    tracing::error!(error = %e, "queue flush failed; requests get 503 until it succeeds");
                }
                self.metrics.observe_flush(target - done, started.elapsed());
                done = target;
                self.flushed_tx.send_replace(Flushed {
                    through: target,
                    result,
                });
            }
            if stopping {
                return;
            }
        }
    }

    /// Inserts at the tail. Taking the id and inserting happen under one lock, so entries
    /// appear in id order: a reader that has seen id N will never later find an entry
    /// below N (which its cursor would skip).
    fn insert_tail(&self, payload: Vec<u8>) -> Result<u64, QueueError> {
        let _order = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let t = self.t()?;
        let id = self.check(t.db.generate_id())?;
        self.check(t.main.insert(key(id), payload))?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Up to `max` entries of the main tree after `after`, in arrival order.
    pub fn read_batch(&self, after: Option<u64>, max: usize) -> Result<Vec<Item>, QueueError> {
        let t = self.t()?;
        let iter = match after {
            Some(a) => t.main.range(key(a.saturating_add(1))..),
            None => t.main.iter(),
        };
        let mut out = Vec::new();
        for kv in iter.take(max) {
            let (k, v) = kv?;
            out.push(Item {
                loc: Loc::Main(id_of(&k)),
                attempts: 0,
                payload: v.to_vec(),
            });
        }
        Ok(out)
    }

    /// Retry entries whose backoff has elapsed, and the time the next one is due.
    pub fn due_retries(&self, max: usize) -> Result<(Vec<Item>, Option<i64>), QueueError> {
        let t = self.t()?;
        let now = crate::util::now_ms();
        let mut out = Vec::new();
        let mut next_due: Option<i64> = None;
        for kv in t.retry.iter() {
            let (k, v) = kv?;
            let id = id_of(&k);
            let r: RetryEntry =
                serde_json::from_slice(&v).map_err(|e| QueueError::Corrupt(id, e.to_string()))?;
            if r.due_ms <= now && out.len() < max {
                out.push(Item {
                    loc: Loc::Retry(id),
                    attempts: r.attempts,
                    payload: r.payload,
                });
            } else if r.due_ms > now {
                next_due = Some(next_due.map_or(r.due_ms, |d: i64| d.min(r.due_ms)));
            }
        }
        Ok((out, next_due))
    }

    /// Removes entries whose events are committed in Postgres.
    pub fn ack(&self, locs: &[Loc]) -> Result<(), QueueError> {
        let t = self.t()?;
        let mut removed = 0;
        for loc in locs {
            let old = match loc {
                Loc::Main(id) => self.check(t.main.remove(key(*id)))?,
                Loc::Retry(id) => self.check(t.retry.remove(key(*id)))?,
            };
            if old.is_some() {
                removed += 1;
            }
        }
        self.depth.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }

    /// Records a failed attempt: the entry moves to the retry tree, due after `delay_ms`.
    pub fn defer(&self, item: &Item, error: &str, delay_ms: i64) -> Result<(), QueueError> {
        let t = self.t()?;
        let id = match item.loc {
            Loc::Main(id) | Loc::Retry(id) => id,
        };
        let entry = RetryEntry {
            attempts: item.attempts + 1,
            due_ms: crate::util::now_ms() + delay_ms,
            error: error.to_owned(),
            payload: item.payload.clone(),
        };
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        let from_main = matches!(item.loc, Loc::Main(_));
        use sled::Transactional;
        (&t.main, &t.retry)
            .transaction(|(main, retry)| {
                if from_main {
                    main.remove(&key(id))?;
                }
                retry.insert(&key(id), bytes.clone())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(s) => QueueError::Write(s),
                sled::transaction::TransactionError::Abort(()) => {
                    QueueError::Flush("transaction aborted".into())
                }
            })?;
        self.new_data.notify_one();
        Ok(())
    }

    /// Sets an entry aside after its last attempt failed.
    pub fn dead_letter(&self, item: &Item, error: &str) -> Result<(), QueueError> {
        let t = self.t()?;
        let id = match item.loc {
            Loc::Main(id) | Loc::Retry(id) => id,
        };
        let dl = DeadLetter {
            id,
            attempts: item.attempts + 1,
            error: error.to_owned(),
            failed_ms: crate::util::now_ms(),
            payload: item.payload.clone(),
        };
        let bytes = serde_json::to_vec(&dl).unwrap_or_default();
        let (from_main, from_retry) = match item.loc {
            Loc::Main(_) => (true, false),
            Loc::Retry(_) => (false, true),
        };
        use sled::Transactional;
        let removed = (&t.main, &t.retry, &t.dead)
            .transaction(|(main, retry, dead)| {
                let mut removed = false;
                if from_main {
                    removed |= main.remove(&key(id))?.is_some();
                }
                if from_retry {
                    removed |= retry.remove(&key(id))?.is_some();
                }
                dead.insert(&key(id), bytes.clone())?;
                Ok::<bool, sled::transaction::ConflictableTransactionError<()>>(removed)
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(s) => QueueError::Write(s),
                sled::transaction::TransactionError::Abort(()) => {
                    QueueError::Flush("transaction aborted".into())
                }
            })?;
        if removed {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        self.metrics
            .dead_letters
            .store(t.dead.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let t = self.t()?;
        let mut out = Vec::new();
        for kv in t.dead.iter() {
            let (k, v) = kv?;
            let id = id_of(&k);
            out.push(
                serde_json::from_slice(&v).map_err(|e| QueueError::Corrupt(id, e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Moves every dead letter back to the tail of the queue for another round of
    /// attempts. Returns how many moved. Flushes before returning.
    pub fn requeue_dead(&self) -> Result<usize, QueueError> {
        let t = self.t()?;
        let mut n = 0;
        for dl in self.dead_letters()? {
            self.insert_tail(dl.payload)?;
            t.dead.remove(key(dl.id))?;
            n += 1;
        }
        t.db.flush()?;
        self.metrics
            .dead_letters
            .store(t.dead.len() as u64, Ordering::Relaxed);
        self.new_data.notify_one();
        Ok(n)
    }

    pub fn status(&self) -> Status {
        let Ok(t) = self.t() else {
            return Status {
                depth: self.depth(),
                retrying: 0,
                dead_letters: 0,
                oldest_age_seconds: None,
                disk_bytes: 0,
            };
        };
        let oldest_ms = t
            .main
            .first()
            .ok()
            .flatten()
            .and_then(|(_, v)| QueuedCallback::decode(&v).ok())
            .map(|q| q.received_ms());
        Status {
            depth: self.depth(),
            retrying: t.retry.len() as u64,
            dead_letters: t.dead.len() as u64,
            oldest_age_seconds: oldest_ms
                .map(|m| ((crate::util::now_ms() - m).max(0)) as f64 / 1000.0),
            disk_bytes: t.db.size_on_disk().unwrap_or(0),
        }
    }

    /// Flushes synchronously (used at shutdown and by CLI commands).
    pub fn flush(&self) -> Result<(), QueueError> {
        let t = self.t()?;
        t.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cb(n: i64) -> QueuedCallback {
        QueuedCallback::TaskRouterV1 {
            received_ms: n,
            params: vec![("EventType".into(), format!("e{n}"))],
        }
    }

    struct Running {
        stop: tokio_util::sync::CancellationToken,
        flusher: tokio::task::JoinHandle<()>,
    }

    impl Running {
        /// Stops the flusher and waits until it released the database.
        async fn stop(self) {
            self.stop.cancel();
            self.flusher.await.unwrap();
        }
    }

    async fn open(dir: &Path) -> (Arc<Queue>, Running) {
        let q = Queue::open(dir, 8, 1_000, Arc::new(Metrics::default())).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let flusher = tokio::spawn(q.clone().run_flusher(stop.clone()));
        (q, Running { stop, flusher })
    }

    #[tokio::test]
    async fn append_read_ack_in_order_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, stop) = open(dir.path()).await;
            let mut handles = vec![];
            for i in 0..50 {
                let q = q.clone();
                handles.push(tokio::spawn(async move { q.append_durable(&cb(i)).await }));
            }
            for h in handles {
                h.await.unwrap().unwrap();
            }
            assert_eq!(q.depth(), 50);
            let first = q.read_batch(None, 10).unwrap();
            assert_eq!(first.len(), 10);
            let ids: Vec<u64> = first
                .iter()
                .map(|i| match i.loc {
                    Loc::Main(id) => id,
                    Loc::Retry(_) => unreachable!(),
                })
                .collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
            let next = q.read_batch(Some(ids[9]), 100).unwrap();
            assert_eq!(next.len(), 40);
            q.ack(&first.iter().map(|i| i.loc).collect::<Vec<_>>())
                .unwrap();
            assert_eq!(q.depth(), 40);
            drop(q);
            stop.stop().await;
        }
        // Reopen: the 40 unacknowledged entries are still there. (sled's background
        // thread may hold the directory lock for a moment after the last handle drops.)
        let mut tries = 0;
        let q = loop {
            match Queue::open(dir.path(), 8, 1_000, Arc::new(Metrics::default())) {
                Ok(q) => break q,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(q.depth(), 40);
        assert_eq!(q.read_batch(None, 100).unwrap().len(), 40);
    }

    #[tokio::test]
    async fn backlog_limit_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 8, 2, Arc::new(Metrics::default())).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(q.clone().run_flusher(stop.clone()));
        q.append_durable(&cb(1)).await.unwrap();
        q.append_durable(&cb(2)).await.unwrap();
        assert!(matches!(
            q.append_durable(&cb(3)).await,
            Err(QueueError::Full(2))
        ));
    }

    #[tokio::test]
    async fn defer_then_dead_letter_then_requeue() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _stop) = open(dir.path()).await;
        q.append_durable(&cb(1)).await.unwrap();
        let item = q.read_batch(None, 1).unwrap().remove(0);
        q.defer(&item, "boom", 0).unwrap();
        assert!(q.read_batch(None, 10).unwrap().is_empty());
        assert_eq!(q.depth(), 1);
        let (due, _) = q.due_retries(10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].attempts, 1);
        q.dead_letter(&due[0], "boom again").unwrap();
        assert_eq!(q.depth(), 0);
        let dl = q.dead_letters().unwrap();
        assert_eq!(dl.len(), 1);
        assert_eq!((dl[0].attempts, dl[0].error.as_str()), (2, "boom again"));
        assert_eq!(q.status().dead_letters, 1);
        assert_eq!(q.requeue_dead().unwrap(), 1);
        assert_eq!(q.depth(), 1);
        assert_eq!(q.read_batch(None, 10).unwrap()[0].payload, cb(1).encode());
    }

    #[tokio::test]
    async fn retries_wait_for_their_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _stop) = open(dir.path()).await;
        q.append_durable(&cb(1)).await.unwrap();
        let item = q.read_batch(None, 1).unwrap().remove(0);
        q.defer(&item, "later", 60_000).unwrap();
        let (due, next) = q.due_retries(10).unwrap();
        assert!(due.is_empty());
        assert!(next.is_some());
    }
}
