//! Postgres: the connection pool, the embedded migrations, and the batched apply.
//!
//! [`Store::apply`] applies a batch of events in one transaction:
//! 1. takes transaction-scoped advisory locks on every entity the batch touches (in a
//!    fixed order), so that several instances sharing the database merge into the same
//!    rows one at a time;
//! 2. inserts the events, skipping those already stored (`ON CONFLICT DO NOTHING`):
//!    a replayed or redelivered event changes nothing (idempotency);
//! 3. for the new events only, loads each entity's merge state, merges the events with
//!    the pure [`rules`](crate::apply::rules), and upserts the derived rows.
//!
//! The caller deletes queue entries only after this returns `Ok` (the commit).

use crate::apply::messages;
use crate::apply::rules::{self, ChannelKey};
use crate::config::{Config, Sla};
use crate::event::{Event, Source};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// The Display of each variant says its cause (for Postgres errors, the server's own
/// message, see [`describe`]), and no variant has a `source()`: printed as a chain
/// (`{:#}`, [`crate::util::error_chain`]), the cause would be said twice, and
/// tokio-postgres' and deadpool's own layers add only "db error" and "Error occurred
/// while creating a new object". Hence the hand-written `From`s below.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot get a Postgres connection: {}", describe_pool(.0))]
    Pool(deadpool_postgres::PoolError),
    #[error("Postgres: {}", describe(.0))]
    Db(tokio_postgres::Error),
    #[error("invalid Postgres configuration: {0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    #[error("cannot encode a row: {0}")]
    Encode(serde_json::Error),
    #[error("Postgres did not answer within {0} s")]
    Timeout(u64),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Encode(e)
    }
}

/// tokio-postgres' Display says only "db error"; operators need the server's message.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!(": {d}"));
            }
            s
        }
        None => crate::util::error_chain(e),
    }
}

fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(b) => describe(b),
        other => other.to_string(),
    }
}

impl StoreError {
    /// Transient errors say nothing about the events: Postgres is down, restarting,
    /// overloaded, deadlocked, or not migrated yet. They are retried without counting
    /// against the events; every other error counts as a failed attempt.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_)
            | StoreError::Config(_)
            | StoreError::Migrate(_)
            | StoreError::Timeout(_) => true,
            StoreError::Encode(_) => false,
            StoreError::Db(e) => match e.code() {
                None => true, // IO error, closed connection, timeout
                Some(c) => {
                    let s = c.code();
                    s.starts_with("08") // connection exception
                        || s.starts_with("53") // insufficient resources
                        || s.starts_with("57") // operator intervention (shutdown)
                        || s.starts_with("58") // system error
                        || *c == SqlState::T_R_DEADLOCK_DETECTED
                        || *c == SqlState::T_R_SERIALIZATION_FAILURE
                        || *c == SqlState::UNDEFINED_TABLE
                        || *c == SqlState::UNDEFINED_COLUMN
                        || *c == SqlState::UNDEFINED_DATABASE
                        || *c == SqlState::INVALID_PASSWORD
                        || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                        || *c == SqlState::READ_ONLY_SQL_TRANSACTION
                        || *c == SqlState::LOCK_NOT_AVAILABLE
                }
            },
        }
    }
}

/// The kinds of entity [`Store::rebuild`] recomputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Task,
    Worker,
    Activity,
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub new: usize,
    pub duplicate: usize,
    /// New events by type (messages count as their webhook's type).
    pub new_by_type: std::collections::BTreeMap<String, u64>,
}

/// The Postgres side of the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    sla: Sla,
    available_override: Vec<String>,
    identity_attr: String,
}

/// Builds a pool that connects lazily: creating it never fails because Postgres is
/// down, so `serve` starts and ingests while the database is unreachable.
pub fn pool(settings: &crate::config::Postgres) -> Result<Pool, StoreError> {
    let mut pg: tokio_postgres::Config = settings
        .url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
    pg.connect_timeout(Duration::from_secs(settings.connect_timeout_secs));
    if pg.get_application_name().is_none() {
        pg.application_name("taskrouter-summarizer");
    }
    // Postgres' JIT compiles every execution of a statement it estimates as costly, and
    // the batched upserts are: it took a fifth of the CPU of a drain, for statements
    // that run in milliseconds. Off for this pool's sessions.
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c jit=off"),
        _ => "-c jit=off".to_owned(),
    };
    pg.options(&options);
    let mgr = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(settings.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(settings.connect_timeout_secs + 1)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}

/// Applies the embedded migrations (idempotent). Returns the versions applied now.
pub async fn migrate(pool: &Pool) -> Result<Vec<String>, StoreError> {
    let mut obj = pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut obj;
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// The advisory-lock key of an entity: the first 8 bytes (big-endian) of
/// SHA-256(`kind` NUL `id`). A specified hash, not `DefaultHasher` (whose algorithm Rust
/// may change between releases): instances built by different toolchains, as in a
/// rolling upgrade, must take the same lock for the same entity. Pinned by a test vector.
fn lock_key(kind: &str, id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0u8]);
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

/// The lock between activity changes and worker rows. A worker row's availability is
/// read from its activity's row, and an activity change rewrites the workers in it;
/// without a common lock the two can miss each other (write skew). The worker's
/// activity may come from its stored state rather than the event, so the lock covers
/// all activities at once: shared for every transaction writing worker rows (they never
/// wait for each other), exclusive for the rare activity change.
const ACTIVITIES: &str = "activities";

/// Transaction-scoped advisory locks on entities, taken in one statement in key order
/// (so two transactions never wait on each other in a cycle). Each key is taken once,
/// in the strongest mode asked for: a shared then exclusive request for the same key in
/// one transaction would deadlock against a twin transaction.
#[derive(Default)]
struct Locks(std::collections::BTreeMap<i64, bool>);

impl Locks {
    fn exclusive(&mut self, kind: &str, id: &str) {
        self.0.insert(lock_key(kind, id), true);
    }

    /// Shared locks never wait for each other, only for an exclusive holder.
    fn shared(&mut self, kind: &str, id: &str) {
        self.0.entry(lock_key(kind, id)).or_insert(false);
    }

    async fn take<C: GenericClient>(self, tx: &C) -> Result<(), StoreError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let (keys, excl): (Vec<i64>, Vec<bool>) = self.0.into_iter().unzip();
        let stmt = tx
            .prepare_cached(
                "SELECT count(CASE WHEN x THEN pg_advisory_xact_lock(k) ELSE pg_advisory_xact_lock_shared(k) END) \
                 FROM (SELECT k, x FROM unnest($1::int8[], $2::bool[]) AS u(k, x) ORDER BY k) s",
            )
            .await?;
        tx.query_one(&stmt, &[&keys, &excl]).await?;
        Ok(())
    }
}

fn to_time(ms: i64) -> Value {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) {
        Some(t) => Value::String(t.to_rfc3339()),
        None => Value::Null,
    }
}

/// Takes up to `limit` marks from an append-only mark table (oldest first; rows another
/// refresher holds are skipped, not waited for) and returns how many it took and their
/// distinct values, in order. Deleted in the caller's transaction: a failed refresh
/// leaves them for the next round.
async fn take_marks<C, T>(
    tx: &C,
    table: &str,
    column: &str,
    limit: i64,
) -> Result<(usize, Vec<T>), StoreError>
where
    C: GenericClient,
    T: for<'a> tokio_postgres::types::FromSql<'a> + Ord,
{
    let stmt = tx
        .prepare_cached(&format!(
            "DELETE FROM {table} WHERE id IN \
             (SELECT id FROM {table} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING {column}"
        ))
        .await?;
    let marks = tx.query(&stmt, &[&limit]).await?;
    let values: BTreeSet<T> = marks.iter().map(|r| r.get::<_, T>(0)).collect();
    Ok((marks.len(), values.into_iter().collect()))
}

mod apply;
pub mod history;
mod merge;
mod message_metrics;
mod rebuild;
mod worker_days;

/// What the rules need from the config: the store's slice of it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sla: Sla,
    /// Activity names that count as available, overriding TaskRouter's own flag.
    pub available_override: Vec<String>,
    /// The worker attribute that holds a worker's Conversations identity.
    pub identity_attr: String,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            sla: cfg.sla.clone(),
            available_override: cfg.taskrouter.available_activities.clone(),
            identity_attr: cfg.conversations.agent_identity_attribute.clone(),
        }
    }
}

impl Store {
    pub fn new(pool: Pool, settings: Settings) -> Store {
        Store {
            pool,
            sla: settings.sla,
            available_override: settings.available_override,
            identity_attr: settings.identity_attr,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Checks that Postgres answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Whether the server runs autovacuum. Every state row is rewritten many times and
    /// the mark tables are queues: without vacuum they bloat and the drain slows down
    /// hour by hour (measured: docs/performance.md#soak).
    pub async fn autovacuum_on(&self) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one("SELECT current_setting('autovacuum')", &[])
            .await?;
        Ok(row.get::<_, String>(0) == "on")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_sql_updates_all_but_the_key() {
        let sql = merge::upsert_sql("t", &["sid"], &["sid".into(), "a".into(), "b".into()], &[]);
        assert!(sql.contains("INSERT INTO t (sid, a, b, updated_at)"));
        assert!(sql.contains(
            "ON CONFLICT (sid) DO UPDATE SET a = EXCLUDED.a, b = EXCLUDED.b, updated_at"
        ));
        assert!(!sql.contains("sid = EXCLUDED.sid"));
        let sql = merge::upsert_sql(
            "t",
            &["sid"],
            &["sid".into(), "a".into()],
            &[("c", "a + 1", "t.c")],
        );
        assert!(sql.contains("INSERT INTO t (sid, a, c, updated_at) SELECT sid, a, a + 1, now()"));
        assert!(sql.contains("DO UPDATE SET a = EXCLUDED.a, c = t.c, updated_at = now()"));
    }

    #[test]
    fn lock_keys_are_stable() {
        // Vectors computed outside Rust (Python's hashlib), so a change of algorithm,
        // toolchain or byte order fails here, not silently across instances.
        assert_eq!(lock_key("task", "WT1"), 4_765_954_567_120_733_010);
        assert_eq!(lock_key("worker", "WK1"), -4_793_779_017_186_301_433);
        assert_eq!(lock_key("conversation", "CH1"), 6_603_826_699_171_782_898);
        assert_eq!(lock_key(ACTIVITIES, ""), -2_731_852_618_127_045_858);
        assert_ne!(lock_key("task", "WT1"), lock_key("worker", "WT1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(lock_key("ab", "c"), lock_key("a", "bc"));
    }
}
