//! Conversations messages and the message metrics of messaging tasks, recomputed from a
//! log of dirty conversations in short transactions.
use super::*;

impl Store {
    /// Stores `onMessageAdded` messages; returns how many were new and the
    /// conversations that got new messages.
    pub(super) async fn insert_messages<C: GenericClient>(
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

    pub(super) async fn insert_message_rows<C: GenericClient>(
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

    /// Marks for [`Store::refresh_dirty`] the conversations whose tasks' message metrics
    /// may have changed (voice tasks get theirs with their row: see
    /// [`merge::VOICE_FIRST_RESPONSE`]).
    pub(super) async fn mark_message_metrics<C: GenericClient>(
        &self,
        tx: &C,
        tasks: Vec<String>,
        conversations: Vec<String>,
    ) -> Result<(), StoreError> {
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
        let (took, convs): (usize, Vec<String>) =
            take_marks(&tx, "dirty_conversations", "conversation_sid", limit).await?;
        if !convs.is_empty() {
            self.refresh_message_metrics(&tx, &convs).await?;
        }
        tx.commit().await?;
        Ok(took)
    }

    /// Recomputes the message metrics of the messaging tasks of the given conversations
    /// (see [`messages`]). A task that ended as `deleted` (gone from TaskRouter, its end
    /// unknown) ends, for its messages, at its last event. Runs in its own short transaction (from [`Store::refresh_dirty`]):
    /// it writes only the message columns, which task upserts never touch. A task row
    /// locked by a concurrent upsert is left for a later round (its conversation is
    /// marked again), so the refresh never makes a worker wait longer than its own commit.
    pub(super) async fn refresh_message_metrics<C: GenericClient>(
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
}
