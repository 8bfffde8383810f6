//! Conversations over REST: after a messaging task ends, its conversation's messages
//! are read from the Conversations API (paged) and stored like webhook messages (the
//! message sid dedupes them), so missed webhooks (not configured, an outage) do not
//! leave the task's message metrics short. Each ended task is read once.

use crate::store::{Store, StoreError};
use crate::twilio::{segment, TwilioClient, TwilioError};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long after a task ends before its messages are read (late webhooks settle).
const SETTLE_SECS: f64 = 10.0;
/// Tasks read per round.
const BATCH: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Twilio(#[from] TwilioError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for FetchError {
    fn from(e: tokio_postgres::Error) -> Self {
        FetchError::Store(e.into())
    }
}

/// A REST message as a `messages` row.
pub fn message_row(m: &Value, conversation_sid: &str) -> Option<Value> {
    let created = m
        .get("date_created")
        .and_then(Value::as_str)
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())?;
    Some(json!({
        "sid": m.get("sid")?.as_str()?,
        "conversation_sid": conversation_sid,
        "index": m.get("index").and_then(Value::as_i64),
        "author": m.get("author").and_then(Value::as_str),
        "participant_sid": m.get("participant_sid").and_then(Value::as_str),
        "created_at": created.with_timezone(&chrono::Utc).to_rfc3339(),
        "source": "rest",
    }))
}

/// Reads the messages of ended messaging tasks not read yet; returns how many tasks.
pub async fn fetch_once(client: &TwilioClient, store: &Store) -> Result<usize, FetchError> {
    let due: Vec<(String, String)> = {
        let c = store.pool().get().await.map_err(StoreError::from)?;
        c.query(
            "SELECT sid, conversation_sid FROM tasks \
             WHERE conversation_sid IS NOT NULL AND messages_fetched_at IS NULL \
             AND coalesce(task_channel_unique_name, '') <> 'voice' \
             AND task_assignment_status IN ('completed', 'canceled') \
             AND ended_at < now() - make_interval(secs => $1) \
             ORDER BY ended_at LIMIT $2",
            &[&SETTLE_SECS, &BATCH],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    for (task, conv) in &due {
        let url = format!(
            "{}/v1/Conversations/{}/Messages?PageSize=100",
            client.conversations_url,
            segment(conv)
        );
        match client.list(&url, "messages").await {
            Ok(msgs) => {
                let rows: Vec<Value> = msgs.iter().filter_map(|m| message_row(m, conv)).collect();
                store.insert_rest_messages(conv, rows).await?;
            }
            // The conversation is gone: nothing more to learn.
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        let c = store.pool().get().await.map_err(StoreError::from)?;
        c.execute(
            "UPDATE tasks SET messages_fetched_at = now() WHERE sid = $1",
            &[task],
        )
        .await?;
    }
    Ok(due.len())
}

/// Runs [`fetch_once`] every few seconds until `stop`.
pub async fn run(client: TwilioClient, store: Store, stop: CancellationToken) {
    loop {
        let wait = match fetch_once(&client, &store).await {
            Ok(n) if n as i64 == BATCH => Duration::from_millis(100),
            Ok(_) => Duration::from_secs(5),
            Err(e) => {
                tracing::warn!(error = %e, "reading conversation messages failed; will retry");
                Duration::from_secs(30)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_messages_become_rows() {
        let m = json!({"sid": "IM1", "index": 3, "author": "alice", "participant_sid": "MB1",
                       "date_created": "2026-01-01T08:00:05Z", "body": "hi"});
        let r = message_row(&m, "CH1").unwrap();
        assert_eq!(r["sid"], "IM1");
        assert_eq!(r["index"], 3);
        assert_eq!(r["source"], "rest");
        assert!(r.get("body").is_none(), "bodies are not stored");
        assert!(message_row(&json!({"sid": "IM2"}), "CH1").is_none());
    }
}
