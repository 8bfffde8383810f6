//! The Sync publisher: on the `publish.schedule` cron, computes the summaries and writes
//! the objects that changed to Twilio Sync.
//!
//! Write discipline (Sync allows 20 writes/s per object, a map counting as one object):
//! - only changed objects are written, each at most once a second, and at most
//!   [`WRITES_PER_CONTAINER_PER_TICK`] writes per document or map per tick (the rest
//!   wait for the next tick);
//! - a missing document, map or item is created on any 404; a create that meets an
//!   existing one becomes an update (see [`crate::publish::sync_writer`]);
//! - with `publish.ttl_seconds`, every write renews the TTL (item writes renew their
//!   map's too, with `CollectionTtl`), and unchanged objects are rewritten when half the
//!   TTL has passed, so nothing published expires while we run;
//! - names from callbacks are bounded where they become keys, and an object over 16 KiB
//!   is published without the entries that push it over (see [`crate::publish::sync_size`]).
//!
//! The optional per-worker map `workerStats` runs beside this on the same ticks, with
//! the same rules (see [`crate::publish::worker_stats`]).
//!
//! Several instances may share one database: exactly one publishes, the holder of a
//! Postgres session advisory lock; when it dies its session ends and another instance
//! takes the lock within [`LEADER_RETRY`].

pub mod agents;
pub mod jobs;
pub mod live;
pub mod report;
pub mod summary;
pub mod sync_size;
pub mod sync_writer;
pub mod worker_stats;

use crate::config::{Config, Secret, Sla};
use crate::metrics::Metrics;
use crate::publish::sync_size::{fit, OversizeLog};
pub use crate::publish::sync_writer::{ListState, SyncWriter};
use crate::twilio::TwilioClient;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use summary::SyncObject;
use tokio_util::sync::CancellationToken;

pub use crate::publish::sync_size::MAX_DATA_BYTES;
/// Writes per document or map per tick; ticks are at least a second apart.
pub const WRITES_PER_CONTAINER_PER_TICK: usize = 10;
/// How often a follower tries to become the publisher.
pub const LEADER_RETRY: Duration = Duration::from_secs(2);
/// The advisory lock key that elects the publisher ("trs-publ").
const LEADER_LOCK: i64 = 0x7472_732d_7075_626c;

/// Remembers what was written when, to write only changes and respect Sync's rates.
#[derive(Default)]
pub struct Tracker {
    last: HashMap<String, Written>,
    per_container: HashMap<String, usize>,
}

pub struct Written {
    pub data: Value,
    pub at: Instant,
}

impl Tracker {
    /// Starts a tick: resets the per-container write budget.
    pub fn tick(&mut self) {
        self.per_container.clear();
    }

    /// Whether `data` for object `id` in `container` should be written now: it changed
    /// (or its TTL is half spent), its last write is at least a second old, and the
    /// container's budget for this tick is not used up. Counts the write if so.
    pub fn should_write(&mut self, id: &str, container: &str, data: &Value, ttl: u64) -> bool {
        let prev = self.last.get(id);
        let changed = prev.is_none_or(|p| &p.data != data);
        let ttl_due = crate::publish::sync_writer::renew_after(ttl)
            .is_some_and(|half| prev.is_some_and(|p| p.at.elapsed() >= half));
        if !changed && !ttl_due {
            return false;
        }
        if prev.is_some_and(|p| p.at.elapsed() < Duration::from_millis(990)) {
            return false;
        }
        let n = self.per_container.entry(container.to_owned()).or_default();
        if *n >= WRITES_PER_CONTAINER_PER_TICK {
            return false;
        }
        *n += 1;
        true
    }

    pub fn written(&mut self, id: String, data: Value) {
        self.last.insert(
            id,
            Written {
                data,
                at: Instant::now(),
            },
        );
    }

    pub fn forget(&mut self, id: &str) {
        self.last.remove(id);
    }

    pub fn clear(&mut self) {
        self.last.clear();
    }
}

/// What the publisher needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub writer: sync_writer::Settings,
    pub sla: Sla,
    /// Where the publisher lock is taken (a session of its own).
    pub db_url: Secret,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            writer: sync_writer::Settings::from_config(cfg),
            sla: cfg.sla.clone(),
            db_url: cfg.postgres.url.clone(),
        }
    }
}

pub struct Publisher {
    writer: SyncWriter,
    sla: Sla,
    db_url: Secret,
    metrics: Arc<Metrics>,
    tracker: Tracker,
    oversize: OversizeLog,
}

impl Publisher {
    pub fn new(settings: Settings, client: TwilioClient, metrics: Arc<Metrics>) -> Publisher {
        Publisher {
            writer: SyncWriter::new(settings.writer, client),
            sla: settings.sla,
            db_url: settings.db_url,
            metrics,
            tracker: Tracker::default(),
            oversize: OversizeLog::default(),
        }
    }

    /// Writes the objects that changed (within the per-object limits). Returns how many
    /// were written.
    pub async fn publish(&mut self, objects: Vec<SyncObject>) -> usize {
        self.tracker.tick();
        let mut written = 0;
        for obj in objects {
            let id = obj.id();
            let (data, dropped) = fit(obj.data(), MAX_DATA_BYTES);
            self.oversize.note(&id, &dropped);
            if !self
                .tracker
                .should_write(&id, obj.container(), &data, self.writer.ttl())
            {
                continue;
            }
            let started = Instant::now();
            let r = match &obj {
                SyncObject::Document { name, .. } => self.writer.write_document(name, &data).await,
                SyncObject::MapItem { map, key, .. } => {
                    self.writer.write_item(map, key, &data).await
                }
            };
            self.metrics.sync_write_seconds.observe(started.elapsed());
            match r {
                Ok(()) => {
                    written += 1;
                    self.metrics.sync_writes.inc();
                    self.tracker.written(id, data.into_owned());
                }
                Err(e) => {
                    self.metrics.sync_errors.inc();
                    tracing::warn!(object = %id, error = %e, "Sync write failed; will retry on the next tick");
                }
            }
        }
        written
    }

    /// Runs until `stop`: on every new summary, elects itself publisher when it can, and
    /// publishes what changed while it holds the lock.
    pub async fn run(
        mut self,
        mut summaries: tokio::sync::watch::Receiver<Option<Arc<summary::Summary>>>,
        stop: CancellationToken,
    ) {
        let mut leader: Option<tokio_postgres::Client> = None;
        let mut next_try = Instant::now();
        loop {
            tokio::select! {
                r = summaries.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
            if let Some(c) = &leader {
                if c.is_closed() || c.simple_query("SELECT 1").await.is_err() {
                    tracing::warn!("lost the publisher lock (Postgres session ended)");
                    leader = None;
                    self.metrics.publisher_leader.set(0);
                    // Another instance may have published meanwhile: rewrite everything.
                    self.tracker.clear();
                }
            }
            if leader.is_none() && Instant::now() >= next_try {
                next_try = Instant::now() + LEADER_RETRY;
                leader = self.try_lead().await;
                if leader.is_some() {
                    tracing::info!("this instance publishes to Sync");
                    self.metrics.publisher_leader.set(1);
                }
            }
            if leader.is_none() {
                continue;
            }
            let latest = summaries.borrow_and_update().clone();
            if let Some(s) = latest {
                let objects = summary::sync_objects(&s, &self.sla);
                self.publish(objects).await;
                if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&s.generated_at) {
                    let lag = chrono::Utc::now()
                        .signed_duration_since(t)
                        .num_milliseconds();
                    self.metrics
                        .set_publish_lag(Duration::from_millis(lag.max(0) as u64));
                }
            }
        }
    }

    async fn try_lead(&self) -> Option<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(self.db_url.expose(), tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await
            .ok()?;
        row.get::<_, bool>(0).then_some(client)
    }
}
