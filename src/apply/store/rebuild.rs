//! Recomputing entities from the raw `events` (used by `rebuild`).
use super::*;

impl Store {
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
        let mut events = Vec::new();
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
            let e = Event::from_params(&params, received);
            d.add(&e);
            events.push(e);
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
        if kind == Entity::Worker {
            // Activity intervals are kept apart from events (retention keeps them);
            // replaying an update that is already there changes nothing.
            let refs: Vec<&Event> = events.iter().collect();
            self.record_activities(&tx, &refs).await?;
        }
        if kind == Entity::Task {
            self.mark_message_metrics(&tx, keys.to_vec(), Vec::new())
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}
