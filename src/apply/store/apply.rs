//! Applying a batch of events in one transaction: locks, the `events` insert, then the
//! state merge of the new events only.
use super::*;

/// An `events` row, borrowed from its event and serialized straight into the statement's
/// parameter (no intermediate JSON values: the drain spends its CPU here).
#[derive(Debug, Serialize)]
pub(super) struct EventRow<'a> {
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

impl Store {
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

    /// Step 3: merge new events into the state tables.
    pub(super) async fn apply_state<C: GenericClient>(
        &self,
        tx: &C,
        events: &[&Event],
    ) -> Result<(), StoreError> {
        let mut d = rules::Deltas::default();
        for e in events {
            d.add(e);
        }
        self.record_activities(tx, events).await?;
        self.merge(tx, d, false).await
    }
}
