//! Merging states into the state tables: load the stored states, merge the deltas with
//! the pure rules, upsert the derived rows.
use super::*;

/// A derived row and its merge state, serialized together as one JSON object for
/// `jsonb_populate_recordset`.
#[derive(Debug, Serialize)]
pub(super) struct WithState<'a, R, S> {
    #[serde(flatten)]
    row: R,
    state: &'a S,
}

/// A column Postgres derives from a row's others as it is written: its name, its value
/// on insert (over the row's columns) and on update (over `EXCLUDED` and the table).
pub(super) type Derived = (&'static str, &'static str, &'static str);

/// A voice task has no messages: its agent's first response is its acceptance, written
/// with the row (one write per task per batch, not an `UPDATE` after it). For other
/// channels the message-metric refresh sets it, so an update keeps what is there.
pub(super) const VOICE_FIRST_RESPONSE: Derived = (
    "agent_first_response_time",
    "CASE WHEN task_channel_unique_name = 'voice' THEN total_acceptance_time END",
    "CASE WHEN EXCLUDED.task_channel_unique_name = 'voice' \
     THEN EXCLUDED.agent_first_response_time ELSE tasks.agent_first_response_time END",
);

/// `INSERT … SELECT … FROM jsonb_populate_recordset … ON CONFLICT DO UPDATE` over the
/// columns present in the rows, plus the `derived` ones. `created_at` is left to its
/// default on insert and never overwritten.
pub(super) fn upsert_sql(
    table: &str,
    key: &[&str],
    cols: &[String],
    derived: &[Derived],
) -> String {
    let list = cols.join(", ");
    let mut sets: Vec<String> = cols
        .iter()
        .filter(|c| !key.contains(&c.as_str()))
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let (mut names, mut values) = (String::new(), String::new());
    for (name, on_insert, on_update) in derived {
        names.push_str(&format!(", {name}"));
        values.push_str(&format!(", {on_insert}"));
        sets.push(format!("{name} = {on_update}"));
    }
    format!(
        "INSERT INTO {table} ({list}{names}, updated_at) SELECT {list}{values}, now() \
         FROM jsonb_populate_recordset(NULL::{table}, $1) \
         ON CONFLICT ({}) DO UPDATE SET {}, updated_at = now()",
        key.join(", "),
        sets.join(", ")
    )
}

/// Upserts rows that all serialize to JSON objects with the same keys (the columns).
pub(super) async fn upsert<C: GenericClient, T: Serialize + std::fmt::Debug + Sync>(
    tx: &C,
    table: &str,
    key: &[&str],
    rows: &[T],
) -> Result<(), StoreError> {
    upsert_deriving(tx, table, key, rows, &[]).await
}

/// [`upsert`], with columns Postgres derives from the others.
pub(super) async fn upsert_deriving<C: GenericClient, T: Serialize + std::fmt::Debug + Sync>(
    tx: &C,
    table: &str,
    key: &[&str],
    rows: &[T],
    derived: &[Derived],
) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let Value::Object(first) = serde_json::to_value(first)? else {
        return Ok(());
    };
    let cols: Vec<String> = first.keys().cloned().collect();
    let sql = upsert_sql(table, key, &cols, derived);
    let stmt = tx.prepare_cached(&sql).await?;
    tx.execute(&stmt, &[&Json(rows)]).await?;
    Ok(())
}

/// Loads `sid → state` for a state table.
pub(super) async fn load_states<
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
pub(super) trait Merge: Default {
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
pub(super) fn merged<S: Merge, K: Ord + Hash + Eq>(
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
    pub(super) async fn merge<C: GenericClient>(
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
            let stored: HashMap<String, rules::TaskState> = self
                .stored(tx, fresh, "tasks", "sid", task_d.keys())
                .await?;
            // The rollup buckets these tasks leave (when their creation time moves) and
            // the ones they are in: both are recomputed.
            let mut buckets: BTreeSet<i64> = if fresh {
                self.stored_buckets(tx, task_d.keys().cloned().collect())
                    .await?
            } else {
                stored
                    .values()
                    .filter_map(rules::created_ms)
                    .map(history::bucket_of)
                    .collect()
            };
            let states = merged::<rules::TaskState, _>(stored, task_d);
            buckets.extend(
                states
                    .values()
                    .filter_map(rules::created_ms)
                    .map(history::bucket_of),
            );
            let rows: Vec<_> = states
                .iter()
                .map(|(k, state)| WithState {
                    row: rules::derive_task(k, state, &self.sla),
                    state,
                })
                .collect();
            upsert_deriving(tx, "tasks", &["sid"], &rows, &[VOICE_FIRST_RESPONSE]).await?;
            self.mark_buckets(tx, &buckets).await?;
            // Completions count in the day of the worker who handled the task.
            self.mark_workers(
                tx,
                rows.iter()
                    .filter_map(|r| r.row.worker_sid.as_deref())
                    .collect(),
            )
            .await?;
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
            self.mark_workers(
                tx,
                rows.iter()
                    .filter_map(|r| r.row.worker_sid.as_deref())
                    .collect(),
            )
            .await?;
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
            self.mark_workers(tx, states.keys().map(String::as_str).collect())
                .await?;
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
                         AND current_activity_available IS DISTINCT FROM $2 RETURNING worker_sid",
                    )
                    .await?;
                let moved = tx.query(&stmt, &[&a.sid, &a.available]).await?;
                let moved: Vec<String> = moved.iter().map(|r| r.get(0)).collect();
                self.mark_workers(tx, moved.iter().map(String::as_str).collect())
                    .await?;
            }
        }
        Ok(())
    }

    /// The stored merge states of `keys`, or none when rebuilding (`fresh`).
    pub(super) async fn stored<'k, C: GenericClient, S>(
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

    /// TaskRouter's `available` flag of each activity, where known.
    pub(super) async fn activity_flags<C: GenericClient>(
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
