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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot get a Postgres connection: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("invalid Postgres configuration: {0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    #[error("cannot encode a row: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("Postgres did not answer within {0} s")]
    Timeout(u64),
}

/// tokio-postgres' Display says only "db error"; operators need the server's message.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!(": {d}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
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
pub fn pool(cfg: &Config) -> Result<Pool, StoreError> {
    let mut pg: tokio_postgres::Config = cfg
        .postgres
        .url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
    pg.connect_timeout(Duration::from_secs(cfg.postgres.connect_timeout_secs));
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
        .max_size(cfg.postgres.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(
            cfg.postgres.connect_timeout_secs + 1,
        )))
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

/// A derived row and its merge state, serialized together as one JSON object for
/// `jsonb_populate_recordset`.
#[derive(Debug, Serialize)]
struct WithState<'a, R, S> {
    #[serde(flatten)]
    row: R,
    state: &'a S,
}

/// An `events` row, borrowed from its event and serialized straight into the statement's
/// parameter (no intermediate JSON values: the drain spends its CPU here).
#[derive(Debug, Serialize)]
struct EventRow<'a> {
    sid: &'a str,
    event_type: &'a str,
    account_sid: Option<&'a str>,
    workspace_sid: Option<&'a str>,
    task_sid: Option<&'a str>,
    worker_sid: Option<&'a str>,
    reservation_sid: Option<&'a str>,
    resource_type: Option<&'a str>,
    resource_sid: Option<&'a str>,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    received_at: Option<chrono::DateTime<chrono::Utc>>,
    data: &'a crate::event::ParamMap,
}

impl<'a> EventRow<'a> {
    fn new(e: &'a Event) -> Self {
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis;
        EventRow {
            sid: &e.sid,
            event_type: &e.event_type,
            account_sid: e.get("AccountSid"),
            workspace_sid: e.get("WorkspaceSid"),
            task_sid: e.task_sid(),
            worker_sid: e.worker_sid(),
            reservation_sid: e.reservation_sid(),
            resource_type: e.get("ResourceType"),
            resource_sid: e.get("ResourceSid"),
            occurred_at: at(e.occurred_ms),
            received_at: at(e.received_ms),
            data: e.params(),
        }
    }
}

/// `INSERT … SELECT … FROM jsonb_populate_recordset … ON CONFLICT DO UPDATE` over the
/// columns present in the rows. `created_at` is left to its default on insert and never
/// overwritten.
fn upsert_sql(table: &str, key: &[&str], cols: &[String]) -> String {
    let list = cols.join(", ");
    let sets: Vec<String> = cols
        .iter()
        .filter(|c| !key.contains(&c.as_str()))
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} ({list}, updated_at) SELECT {list}, now() \
         FROM jsonb_populate_recordset(NULL::{table}, $1) \
         ON CONFLICT ({}) DO UPDATE SET {}, updated_at = now()",
        key.join(", "),
        sets.join(", ")
    )
}

/// Upserts rows that all serialize to JSON objects with the same keys (the columns).
async fn upsert<C: GenericClient, T: Serialize + std::fmt::Debug + Sync>(
    tx: &C,
    table: &str,
    key: &[&str],
    rows: &[T],
) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let Value::Object(first) = serde_json::to_value(first)? else {
        return Ok(());
    };
    let cols: Vec<String> = first.keys().cloned().collect();
    let sql = upsert_sql(table, key, &cols);
    let stmt = tx.prepare_cached(&sql).await?;
    tx.execute(&stmt, &[&Json(rows)]).await?;
    Ok(())
}

/// Loads `sid → state` for a state table.
async fn load_states<
    C: GenericClient,
    S: serde::de::DeserializeOwned + std::fmt::Debug + Default,
>(
    tx: &C,
    table: &str,
    key_col: &str,
    keys: Vec<String>,
) -> Result<HashMap<String, S>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!("SELECT {key_col}, state FROM {table} WHERE {key_col} = ANY($1)");
    let stmt = tx.prepare_cached(&sql).await?;
    let rows = tx.query(&stmt, &[&keys]).await?;
    let mut out = HashMap::new();
    for r in rows {
        let k: String = r.get(0);
        // A state written by an older version that no longer parses starts afresh
        // rather than blocking the entity forever; the events table keeps the history.
        let s = r.try_get::<_, Json<S>>(1).map(|j| j.0).unwrap_or_default();
        out.insert(k, s);
    }
    Ok(out)
}

/// A merge state: one entity's registers; a delta is a state of the same type.
trait Merge: Default {
    fn merge_with(&mut self, delta: Self);
}

macro_rules! impl_merge {
    ($($s:ty),*) => {$(
        impl Merge for $s {
            fn merge_with(&mut self, delta: $s) {
                self.merge(delta)
            }
        }
    )*};
}
impl_merge!(
    rules::TaskState,
    rules::ReservationState,
    rules::WorkerState,
    rules::ChannelState,
    rules::ActivityState
);

/// The stored states of the entities in `deltas` (a new entity starts from the default)
/// with the deltas merged in, in key order.
fn merged<S: Merge, K: Ord + Hash + Eq>(
    mut stored: HashMap<K, S>,
    deltas: std::collections::BTreeMap<K, S>,
) -> std::collections::BTreeMap<K, S> {
    deltas
        .into_iter()
        .map(|(k, d)| {
            let mut s = stored.remove(&k).unwrap_or_default();
            s.merge_with(d);
            (k, s)
        })
        .collect()
}

impl Store {
    pub fn new(pool: Pool, cfg: &Config) -> Store {
        Store {
            pool,
            sla: cfg.sla.clone(),
            available_override: cfg.taskrouter.available_activities.clone(),
            identity_attr: cfg.conversations.agent_identity_attribute.clone(),
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

    /// Applies a batch of events in one transaction (see the module docs). Events
    /// already stored are skipped; the result counts new and duplicate events.
    pub async fn apply(&self, events: &[Event]) -> Result<Applied, StoreError> {
        if events.is_empty() {
            return Ok(Applied::default());
        }
        let t0 = std::time::Instant::now();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;

        // 1. Advisory locks on every entity, in key order (no lock-order deadlocks).
        let mut locks = Locks::default();
        for e in events {
            // Reservation events carry their task: the task's lock covers them. Events
            // themselves need none: `ON CONFLICT DO NOTHING` settles concurrent inserts.
            if let Some(t) = e.task_sid() {
                locks.exclusive("task", t);
            }
            // Only worker.* events change worker rows (reservation events name a worker
            // but change only their task and reservation).
            if e.event_type.starts_with("worker.") {
                if let Some(w) = e.worker_sid() {
                    locks.exclusive("worker", w);
                }
                locks.shared(ACTIVITIES, "");
            }
            if e.event_type.starts_with("activity.") {
                locks.exclusive(ACTIVITIES, "");
            }
            if let Some(c) = e.get("ConversationSid") {
                locks.exclusive("conversation", c);
            }
        }
        locks.take(&tx).await?;
        let t_locks = t0.elapsed();

        // 2. Insert events (TaskRouter) and messages (Conversations); only new ones go on.
        let (taskrouter, conversations): (Vec<&Event>, Vec<&Event>) =
            events.iter().partition(|e| e.source == Source::TaskRouter);
        let (new_messages, touched_conversations) =
            self.insert_messages(&tx, &conversations).await?;
        let mut seen = HashSet::new();
        let rows: Vec<EventRow> = taskrouter
            .iter()
            .filter(|e| seen.insert(e.sid.as_str()))
            .map(|e| EventRow::new(e))
            .collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO events (sid, event_type, account_sid, workspace_sid, task_sid, worker_sid, \
                 reservation_sid, resource_type, resource_sid, occurred_at, received_at, data) \
                 SELECT sid, event_type, account_sid, workspace_sid, task_sid, worker_sid, reservation_sid, \
                 resource_type, resource_sid, occurred_at, received_at, data \
                 FROM jsonb_populate_recordset(NULL::events, $1) \
                 ON CONFLICT (sid) DO NOTHING RETURNING sid",
            )
            .await?;
        let inserted: HashSet<String> = tx
            .query(&stmt, &[&Json(&rows)])
            .await?
            .into_iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let mut fresh: Vec<&Event> = Vec::with_capacity(inserted.len());
        let mut taken = HashSet::new();
        for e in taskrouter {
            if inserted.contains(&e.sid) && taken.insert(e.sid.as_str()) {
                fresh.push(e);
            }
        }
        let mut new_by_type = std::collections::BTreeMap::new();
        for e in &fresh {
            *new_by_type.entry(e.event_type.clone()).or_default() += 1;
        }
        if new_messages > 0 {
            *new_by_type.entry("onMessageAdded".to_owned()).or_default() += new_messages as u64;
        }
        let applied = Applied {
            new: fresh.len() + new_messages,
            duplicate: events.len() - fresh.len() - new_messages,
            new_by_type,
        };
        let t_insert = t0.elapsed();
        if !fresh.is_empty() {
            self.apply_state(&tx, &fresh).await?;
        }
        let t_state = t0.elapsed();
        let tasks: Vec<String> = fresh
            .iter()
            .filter_map(|e| e.task_sid().map(str::to_owned))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !tasks.is_empty() || !touched_conversations.is_empty() {
            self.mark_message_metrics(&tx, tasks, touched_conversations)
                .await?;
        }
        let t_refresh = t0.elapsed();
        tx.commit().await?;
        // Where a batch's time goes, for profiling the drain (RUST_LOG=…store=trace).
        tracing::trace!(
            events = events.len(),
            locks_ms = t_locks.as_millis() as u64,
            insert_ms = (t_insert - t_locks).as_millis() as u64,
            state_ms = (t_state - t_insert).as_millis() as u64,
            refresh_ms = (t_refresh - t_state).as_millis() as u64,
            commit_ms = (t0.elapsed() - t_refresh).as_millis() as u64,
            "batch applied"
        );
        Ok(applied)
    }

    /// Stores `onMessageAdded` messages; returns how many were new and the
    /// conversations that got new messages.
    async fn insert_messages<C: GenericClient>(
        &self,
        tx: &C,
        events: &[&Event],
    ) -> Result<(usize, Vec<String>), StoreError> {
        let rows: Vec<Value> = events
            .iter()
            .filter(|e| e.event_type == "onMessageAdded")
            .filter_map(|e| {
                Some(json!({
                    "sid": e.get("MessageSid")?,
                    "conversation_sid": e.get("ConversationSid")?,
                    "chat_service_sid": e.get("ChatServiceSid"),
                    "index": e.int("Index"),
                    "author": e.get("Author"),
                    "participant_sid": e.get("ParticipantSid"),
                    "created_at": to_time(e.occurred_ms),
                    "source": "webhook",
                }))
            })
            .collect();
        self.insert_message_rows(tx, rows).await
    }

    async fn insert_message_rows<C: GenericClient>(
        &self,
        tx: &C,
        rows: Vec<Value>,
    ) -> Result<(usize, Vec<String>), StoreError> {
        if rows.is_empty() {
            return Ok((0, Vec::new()));
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO messages (sid, conversation_sid, chat_service_sid, index, author, participant_sid, created_at, source) \
                 SELECT sid, conversation_sid, chat_service_sid, index, author, participant_sid, created_at, source \
                 FROM jsonb_populate_recordset(NULL::messages, $1) \
                 ON CONFLICT (sid) DO NOTHING RETURNING conversation_sid",
            )
            .await?;
        let got = tx.query(&stmt, &[&Value::Array(rows)]).await?;
        let convs: BTreeSet<String> = got.iter().map(|r| r.get(0)).collect();
        Ok((got.len(), convs.into_iter().collect()))
    }

    /// Stores messages read over REST for one conversation and refreshes its tasks'
    /// metrics. Messages already known (by sid, from webhooks or earlier reads) are
    /// skipped, so the result is the same whichever way they came.
    pub async fn insert_rest_messages(
        &self,
        conversation_sid: &str,
        rows: Vec<Value>,
    ) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.query_one(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key("conversation", conversation_sid)],
        )
        .await?;
        let (n, _) = self.insert_message_rows(&tx, rows).await?;
        self.mark_message_metrics(&tx, Vec::new(), vec![conversation_sid.to_owned()])
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Voice tasks get their first response (the acceptance) at once; conversations whose
    /// tasks' message metrics may have changed are marked for [`Store::refresh_dirty`].
    async fn mark_message_metrics<C: GenericClient>(
        &self,
        tx: &C,
        tasks: Vec<String>,
        conversations: Vec<String>,
    ) -> Result<(), StoreError> {
        let stmt = tx
            .prepare_cached(
                "UPDATE tasks SET agent_first_response_time = total_acceptance_time \
                 WHERE sid = ANY($1) AND task_channel_unique_name = 'voice' \
                 AND agent_first_response_time IS DISTINCT FROM total_acceptance_time",
            )
            .await?;
        tx.execute(&stmt, &[&tasks]).await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO dirty_conversations (conversation_sid) \
                 SELECT unnest($2::text[]) \
                 UNION SELECT t.conversation_sid FROM tasks t WHERE t.sid = ANY($1) \
                   AND t.conversation_sid IS NOT NULL \
                   AND coalesce(t.task_channel_unique_name, '') <> 'voice' \
                   AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_sid = t.conversation_sid)",
            )
            .await?;
        tx.execute(&stmt, &[&tasks, &conversations]).await?;
        Ok(())
    }

    /// Takes up to `limit` marks and recomputes their conversations' message metrics in
    /// one short transaction; returns how many marks it took. Marks are an append-only
    /// log, so markers never wait; a mark whose transaction commits after this one read
    /// the log is taken by a later round, so nothing is missed.
    pub async fn refresh_dirty(&self, limit: i64) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM dirty_conversations WHERE id IN \
                 (SELECT id FROM dirty_conversations ORDER BY id \
                  LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING conversation_sid",
            )
            .await?;
        let marks = tx.query(&stmt, &[&limit]).await?;
        let convs: Vec<String> = marks
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !convs.is_empty() {
            self.refresh_message_metrics(&tx, &convs).await?;
        }
        tx.commit().await?;
        Ok(marks.len())
    }

    /// Recomputes the message metrics of the messaging tasks of the given conversations
    /// (see [`messages`]). A task that ended as `deleted` (gone from TaskRouter, its end
    /// unknown) ends, for its messages, at its last event. Runs in its own short transaction (from [`Store::refresh_dirty`]):
    /// it writes only the message columns, which task upserts never touch. A task row
    /// locked by a concurrent upsert is left for a later round (its conversation is
    /// marked again), so the refresh never makes a worker wait longer than its own commit.
    async fn refresh_message_metrics<C: GenericClient>(
        &self,
        tx: &C,
        conversations: &[String],
    ) -> Result<(), StoreError> {
        let stmt = tx
            .prepare_cached(
                "SELECT t.sid, t.conversation_sid, \
                        (extract(epoch from t.task_created) * 1000)::int8, \
                        (extract(epoch from coalesce(t.ended_at, CASE WHEN t.task_assignment_status = 'deleted' \
                                                          THEN t.last_event_at END)) * 1000)::int8, \
                        coalesce((SELECT array_agg(w.worker_attributes) FROM workers w \
                                  WHERE w.worker_attributes IS NOT NULL AND w.worker_sid IN \
                                    (SELECT r.worker_sid FROM reservations r \
                                     WHERE r.task_sid = t.sid AND r.accepted_at IS NOT NULL \
                                     UNION SELECT t.worker_sid)), '{}') \
                 FROM tasks t \
                 WHERE t.conversation_sid = ANY($1) \
                   AND coalesce(t.task_channel_unique_name, '') <> 'voice'",
            )
            .await?;
        let rows = tx.query(&stmt, &[&conversations]).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let convs: Vec<String> = rows
            .iter()
            .map(|r| r.get::<_, String>(1))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let stmt = tx
            .prepare_cached(
                "SELECT conversation_sid, sid, index, author, (extract(epoch from created_at) * 1000)::int8 \
                 FROM messages WHERE conversation_sid = ANY($1)",
            )
            .await?;
        let mut by_conv: HashMap<String, Vec<messages::Message>> = HashMap::new();
        for r in tx.query(&stmt, &[&convs]).await? {
            by_conv
                .entry(r.get(0))
                .or_default()
                .push(messages::Message {
                    sid: r.get(1),
                    index: r.get::<_, Option<i32>>(2).map(i64::from),
                    author: r.get(3),
                    created_ms: r.get(4),
                });
        }
        // Each task's window depends on the other tasks of its conversation (design §4):
        // all of them were read above.
        let mut tasks_of: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            tasks_of.entry(r.get(1)).or_default().push(i);
        }
        let mut window = vec![messages::Window::default(); rows.len()];
        for idx in tasks_of.values() {
            let spans: Vec<messages::TaskSpan> = idx
                .iter()
                .map(|&i| messages::TaskSpan {
                    created_ms: rows[i].get(2),
                    ended_ms: rows[i].get(3),
                })
                .collect();
            for (&i, w) in idx.iter().zip(messages::windows(&spans)) {
                window[i] = w;
            }
        }
        let mut updates = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let conv: String = r.get(1);
            let created: Option<i64> = r.get(2);
            let attrs: Vec<Value> = r.get(4);
            let agents = attrs
                .iter()
                .filter_map(|a| messages::identity(a, &self.identity_attr))
                .collect();
            let msgs = by_conv.get(&conv).map(Vec::as_slice).unwrap_or(&[]);
            let m = messages::compute(msgs, window[i], created.unwrap_or(i64::MIN), &agents);
            updates.push(json!({
                "sid": r.get::<_, String>(0),
                "agent_message_count": m.agent_message_count,
                "client_message_count": m.client_message_count,
                "agent_first_response_time": m.agent_first_response_time,
                "agent_total_response_time": m.agent_total_response_time,
                "client_total_response_time": m.client_total_response_time,
                "agent_reply_count": m.agent_reply_count,
                "client_reply_count": m.client_reply_count,
            }));
        }
        // Most refreshes (a task event marks its conversation) change nothing: those rows
        // are not rewritten. Rows a worker's transaction holds are skipped, not waited
        // for (waiting made the workers' task upserts queue behind this transaction and
        // it behind them); their conversations are marked again for a later round.
        let stmt = tx
            .prepare_cached(
                "WITH x AS (SELECT * FROM jsonb_populate_recordset(NULL::tasks, $1)), \
                 changed AS (SELECT x.* FROM x JOIN tasks t ON t.sid = x.sid \
                   WHERE (t.agent_message_count, t.client_message_count, t.agent_first_response_time, \
                          t.agent_total_response_time, t.client_total_response_time, \
                          t.agent_reply_count, t.client_reply_count) IS DISTINCT FROM \
                         (x.agent_message_count, x.client_message_count, x.agent_first_response_time, \
                          x.agent_total_response_time, x.client_total_response_time, \
                          x.agent_reply_count, x.client_reply_count)), \
                 free AS (SELECT t.sid FROM tasks t WHERE t.sid IN (SELECT sid FROM changed) \
                   ORDER BY t.sid FOR UPDATE SKIP LOCKED), \
                 done AS (UPDATE tasks t SET agent_message_count = c.agent_message_count, \
                    client_message_count = c.client_message_count, \
                    agent_first_response_time = c.agent_first_response_time, \
                    agent_total_response_time = c.agent_total_response_time, \
                    client_total_response_time = c.client_total_response_time, \
                    agent_reply_count = c.agent_reply_count, \
                    client_reply_count = c.client_reply_count \
                  FROM changed c WHERE t.sid = c.sid AND t.sid IN (SELECT sid FROM free) RETURNING t.sid) \
                 INSERT INTO dirty_conversations (conversation_sid) \
                 SELECT DISTINCT t.conversation_sid FROM changed c JOIN tasks t ON t.sid = c.sid \
                 WHERE c.sid NOT IN (SELECT sid FROM done) AND t.conversation_sid IS NOT NULL",
            )
            .await?;
        tx.execute(&stmt, &[&Value::Array(updates)]).await?;
        Ok(())
    }

    /// Step 3: merge new events into the state tables.
    async fn apply_state<C: GenericClient>(
        &self,
        tx: &C,
        events: &[&Event],
    ) -> Result<(), StoreError> {
        let mut d = rules::Deltas::default();
        for e in events {
            d.add(e);
        }
        self.merge(tx, d, false).await
    }

    /// Merges states read from TaskRouter's REST API (see [`rules::rest_clock`]) in one
    /// transaction, under the same per-entity locks as events.
    pub async fn merge_rest(&self, d: rules::Deltas) -> Result<(), StoreError> {
        if d.is_empty() {
            return Ok(());
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut locks = Locks::default();
        for k in d.tasks.keys() {
            locks.exclusive("task", k);
        }
        for k in d.workers.keys().chain(d.channels.keys().map(|k| &k.0)) {
            locks.exclusive("worker", k);
        }
        if !d.activities.is_empty() {
            locks.exclusive(ACTIVITIES, "");
        }
        if !d.workers.is_empty() {
            locks.shared(ACTIVITIES, "");
        }
        locks.take(&tx).await?;
        self.merge(&tx, d, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Merges deltas into the stored states (or, when `fresh`, into empty ones: a
    /// rebuild) and upserts the derived rows.
    async fn merge<C: GenericClient>(
        &self,
        tx: &C,
        d: rules::Deltas,
        fresh: bool,
    ) -> Result<(), StoreError> {
        let rules::Deltas {
            tasks: task_d,
            reservations: resv_d,
            workers: worker_d,
            channels: chan_d,
            activities: act_d,
        } = d;

        // Activities first: workers derive their availability from them.
        let mut act_changed: Vec<rules::ActivityRow> = Vec::new();
        if !act_d.is_empty() {
            let states = merged::<rules::ActivityState, _>(
                self.stored(tx, fresh, "activities", "sid", act_d.keys())
                    .await?,
                act_d,
            );
            act_changed = states
                .iter()
                .map(|(k, s)| rules::derive_activity(k, s))
                .collect();
            let rows: Vec<_> = act_changed
                .iter()
                .zip(states.values())
                .map(|(row, state)| WithState { row, state })
                .collect();
            upsert(tx, "activities", &["sid"], &rows).await?;
        }

        if !task_d.is_empty() {
            let states = merged::<rules::TaskState, _>(
                self.stored(tx, fresh, "tasks", "sid", task_d.keys())
                    .await?,
                task_d,
            );
            let rows: Vec<_> = states
                .iter()
                .map(|(k, state)| WithState {
                    row: rules::derive_task(k, state, &self.sla),
                    state,
                })
                .collect();
            upsert(tx, "tasks", &["sid"], &rows).await?;
        }

        if !resv_d.is_empty() {
            let states = merged::<rules::ReservationState, _>(
                self.stored(tx, fresh, "reservations", "sid", resv_d.keys())
                    .await?,
                resv_d,
            );
            let rows: Vec<_> = states
                .iter()
                .map(|(k, state)| WithState {
                    row: rules::derive_reservation(k, state),
                    state,
                })
                .collect();
            upsert(tx, "reservations", &["sid"], &rows).await?;
        }

        if !worker_d.is_empty() {
            let states = merged::<rules::WorkerState, _>(
                self.stored(tx, fresh, "workers", "worker_sid", worker_d.keys())
                    .await?,
                worker_d,
            );
            let activity_sids: Vec<String> = states
                .values()
                .filter_map(|s| s.activity.as_ref().map(|a| a.1.sid.clone()))
                .collect();
            let flags = self.activity_flags(tx, activity_sids).await?;
            let rows: Vec<_> = states
                .iter()
                .map(|(k, state)| {
                    let act = state.activity.as_ref().map(|r| &r.1);
                    let available = rules::activity_available(
                        &self.available_override,
                        act.and_then(|a| a.name.as_deref()),
                        act.and_then(|a| flags.get(&a.sid).copied().flatten()),
                    );
                    WithState {
                        row: rules::derive_worker(k, state, available),
                        state,
                    }
                })
                .collect();
            upsert(tx, "workers", &["worker_sid"], &rows).await?;
        }

        if !chan_d.is_empty() {
            let (ws, cs): (Vec<String>, Vec<String>) = chan_d.keys().cloned().unzip();
            let stmt = tx
                .prepare_cached(
                    "SELECT worker_sid, task_channel_unique_name, state FROM worker_channels \
                     WHERE (worker_sid, task_channel_unique_name) IN \
                     (SELECT * FROM unnest($1::text[], $2::text[]))",
                )
                .await?;
            let mut stored: HashMap<ChannelKey, rules::ChannelState> = HashMap::new();
            let rows = if fresh {
                Vec::new()
            } else {
                tx.query(&stmt, &[&ws, &cs]).await?
            };
            for r in rows {
                let s = r
                    .try_get::<_, Json<rules::ChannelState>>(2)
                    .map(|j| j.0)
                    .unwrap_or_default();
                stored.insert((r.get(0), r.get(1)), s);
            }
            let states = merged::<rules::ChannelState, _>(stored, chan_d);
            let rows: Vec<_> = states
                .iter()
                .map(|(k, state)| WithState {
                    row: rules::derive_channel(k, state),
                    state,
                })
                .collect();
            upsert(
                tx,
                "worker_channels",
                &["worker_sid", "task_channel_unique_name"],
                &rows,
            )
            .await?;
        }

        // An activity's availability became known or changed: workers in it follow.
        if self.available_override.is_empty() {
            for a in act_changed {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE workers SET current_activity_available = $2, updated_at = now() \
                         WHERE current_activity_sid = $1 \
                         AND current_activity_available IS DISTINCT FROM $2",
                    )
                    .await?;
                tx.execute(&stmt, &[&a.sid, &a.available]).await?;
            }
        }
        Ok(())
    }

    /// The stored merge states of `keys`, or none when rebuilding (`fresh`).
    async fn stored<'k, C: GenericClient, S>(
        &self,
        tx: &C,
        fresh: bool,
        table: &str,
        key_col: &str,
        keys: impl Iterator<Item = &'k String>,
    ) -> Result<HashMap<String, S>, StoreError>
    where
        S: serde::de::DeserializeOwned + std::fmt::Debug + Default,
    {
        if fresh {
            return Ok(HashMap::new());
        }
        load_states(tx, table, key_col, keys.cloned().collect()).await
    }

    /// Recomputes the state rows of some entities from the `events` table alone,
    /// replacing their merge states (after a rule change or a bug fix). Runs under the
    /// same entity locks as [`Store::apply`], so it is safe while events are applied:
    /// an event committed before sees its effect rebuilt, one applied after merges into
    /// the rebuilt state. Returns how many events were read.
    pub async fn rebuild(&self, kind: Entity, keys: &[String]) -> Result<usize, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut locks = Locks::default();
        let sql = match kind {
            Entity::Task => {
                for k in keys {
                    locks.exclusive("task", k);
                }
                "SELECT data, (extract(epoch from received_at) * 1000)::int8 FROM events \
                 WHERE task_sid = ANY($1)"
            }
            Entity::Worker => {
                for k in keys {
                    locks.exclusive("worker", k);
                }
                locks.shared(ACTIVITIES, "");
                "SELECT data, (extract(epoch from received_at) * 1000)::int8 FROM events \
                 WHERE worker_sid = ANY($1) AND event_type LIKE 'worker.%'"
            }
            Entity::Activity => {
                locks.exclusive(ACTIVITIES, "");
                "SELECT data, (extract(epoch from received_at) * 1000)::int8 FROM events \
                 WHERE event_type IN ('activity.created', 'activity.updated', 'activity.deleted') \
                 AND data->>'ActivitySid' = ANY($1)"
            }
        };
        locks.take(&tx).await?;
        let stmt = tx.prepare_cached(sql).await?;
        let rows = tx.query(&stmt, &[&keys]).await?;
        let mut d = rules::Deltas::default();
        for r in &rows {
            let Ok(Json(data)) = r.try_get::<_, Json<std::collections::BTreeMap<String, Value>>>(0)
            else {
                continue;
            };
            let params: crate::event::Params = data
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    _ => None,
                })
                .collect();
            let received: i64 = r.get(1);
            d.add(&Event::from_params(&params, received));
        }
        // Each pass rebuilds its own tables only: a task's events also name workers.
        match kind {
            Entity::Task => {
                d.workers.clear();
                d.channels.clear();
                d.activities.clear();
            }
            Entity::Worker => {
                d.tasks.clear();
                d.reservations.clear();
                d.activities.clear();
            }
            Entity::Activity => {
                d.tasks.clear();
                d.reservations.clear();
                d.workers.clear();
                d.channels.clear();
            }
        }
        self.merge(&tx, d, true).await?;
        if kind == Entity::Task {
            self.mark_message_metrics(&tx, keys.to_vec(), Vec::new())
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// TaskRouter's `available` flag of each activity, where known.
    async fn activity_flags<C: GenericClient>(
        &self,
        tx: &C,
        sids: Vec<String>,
    ) -> Result<HashMap<String, Option<bool>>, StoreError> {
        if sids.is_empty() || !self.available_override.is_empty() {
            return Ok(HashMap::new());
        }
        let stmt = tx
            .prepare_cached("SELECT sid, available FROM activities WHERE sid = ANY($1)")
            .await?;
        Ok(tx
            .query(&stmt, &[&sids])
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_sql_updates_all_but_the_key() {
        let sql = upsert_sql("t", &["sid"], &["sid".into(), "a".into(), "b".into()]);
        assert!(sql.contains("INSERT INTO t (sid, a, b, updated_at)"));
        assert!(sql.contains("ON CONFLICT (sid) DO UPDATE SET a = EXCLUDED.a, b = EXCLUDED.b"));
        assert!(!sql.contains("sid = EXCLUDED.sid"));
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
