//! Conversations over REST: after a messaging task ends, its conversation's messages
//! are read from the Conversations API (paged) and stored like webhook messages (the
//! message sid dedupes them), so missed webhooks (not configured, an outage) do not
//! leave the task's message metrics short.
//!
//! - Each conversation is read from its own Conversation Service
//!   (`/v1/Services/{ChatServiceSid}/Conversations/{Sid}/Messages`): the `ChatServiceSid`
//!   its webhooks carried, else the account's default service (`GET /v1/Configuration`).
//!   The unscoped `/v1/Conversations/…` path reaches only the default service.
//! - A task is marked read only after a successful read. Any failure, a 404 included
//!   (a wrong service, a conversation not visible yet), is retried with a growing delay
//!   ([`retry_delay`]); after [`MAX_ATTEMPTS`] the task is given up with the reason in
//!   `tasks.messages_fetch_error` and a warning. A 404 never means "no messages".

use crate::apply::store::{Store, StoreError};
use crate::backoff::Backoff;
use crate::twilio::types::{self, ConversationsConfiguration, Message};
use crate::twilio::{segment, TwilioClient, TwilioError};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long after a task ends before its messages are read (late webhooks settle).
const SETTLE_SECS: f64 = 10.0;
/// Tasks read per round.
const BATCH: i64 = 50;
/// Reads of one task's conversation before giving up (about 17 hours of retries).
pub const MAX_ATTEMPTS: i32 = 15;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Twilio(#[from] TwilioError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the account's Conversations configuration names no default service")]
    NoDefaultService,
}

impl From<tokio_postgres::Error> for FetchError {
    fn from(e: tokio_postgres::Error) -> Self {
        FetchError::Store(e.into())
    }
}

/// The delay before the next read after `attempts` failed ones: 5 s doubling, at most
/// 6 h (a conversation not visible yet is usually there seconds later).
pub fn retry_delay(attempts: i32) -> Duration {
    const BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(6 * 3600));
    BACKOFF.delay(attempts.max(1).unsigned_abs() - 1)
}

/// A REST message as a `messages` row.
pub fn message_row(m: &Message, conversation_sid: &str) -> Option<Value> {
    let created = m
        .date_created
        .as_deref()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())?;
    Some(json!({
        "sid": m.sid.as_deref()?,
        "conversation_sid": conversation_sid,
        "chat_service_sid": m.chat_service_sid,
        "index": m.index,
        "author": m.author,
        "participant_sid": m.participant_sid,
        "created_at": created.with_timezone(&chrono::Utc).to_rfc3339(),
        "source": "rest",
    }))
}

/// Reads ended messaging tasks' conversations from their Conversation Services.
pub struct Fetcher {
    client: TwilioClient,
    store: Store,
    /// The account's default Conversation Service, read once when first needed.
    default_service: Option<String>,
}

impl Fetcher {
    pub fn new(client: TwilioClient, store: Store) -> Fetcher {
        Fetcher {
            client,
            store,
            default_service: None,
        }
    }

    async fn default_service(&mut self) -> Result<String, FetchError> {
        if let Some(s) = &self.default_service {
            return Ok(s.clone());
        }
        let url = format!("{}/v1/Configuration", self.client.conversations_url);
        let cfg: ConversationsConfiguration = types::or_default(self.client.get_page(&url).await?);
        let sid = cfg
            .default_chat_service_sid
            .ok_or(FetchError::NoDefaultService)?;
        self.default_service = Some(sid.clone());
        Ok(sid)
    }

    async fn read(&mut self, conv: &str, service: Option<String>) -> Result<usize, FetchError> {
        let service = match service {
            Some(s) => s,
            None => self.default_service().await?,
        };
        let url = format!(
            "{}/v1/Services/{}/Conversations/{}/Messages?PageSize=100",
            self.client.conversations_url,
            segment(&service),
            segment(conv)
        );
        let msgs = self.client.list::<Message>(&url).await?;
        let rows: Vec<Value> = msgs
            .iter()
            .filter_map(|m| message_row(m, conv))
            .map(|mut r| {
                // The service it was read from, when the message does not say.
                if r["chat_service_sid"].is_null() {
                    r["chat_service_sid"] = Value::String(service.clone());
                }
                r
            })
            .collect();
        Ok(self.store.insert_rest_messages(conv, rows).await?)
    }

    /// Reads the messages of ended messaging tasks that are due; returns how many tasks
    /// it tried. A task's failure is recorded on it (retried later); only a database
    /// error ends the round.
    pub async fn fetch_once(&mut self) -> Result<usize, FetchError> {
        let due: Vec<(String, String, Option<String>, i32)> = {
            let c = self.store.pool().get().await.map_err(StoreError::from)?;
            c.query(
                "SELECT t.sid, t.conversation_sid, \
                   (SELECT m.chat_service_sid FROM messages m \
                    WHERE m.conversation_sid = t.conversation_sid AND m.chat_service_sid IS NOT NULL \
                    LIMIT 1), \
                   t.messages_fetch_attempts \
                 FROM tasks t \
                 WHERE t.conversation_sid IS NOT NULL AND t.messages_fetched_at IS NULL \
                 AND coalesce(t.task_channel_unique_name, '') <> 'voice' \
                 AND t.task_assignment_status IN ('completed', 'canceled', 'deleted') \
                 AND coalesce(t.ended_at, t.last_event_at) < now() - make_interval(secs => $1) \
                 AND (t.messages_fetch_after IS NULL OR t.messages_fetch_after <= now()) \
                 ORDER BY coalesce(t.ended_at, t.last_event_at) LIMIT $2",
                &[&SETTLE_SECS, &BATCH],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
        };
        for (task, conv, service, attempts) in &due {
            let outcome = self.read(conv, service.clone()).await;
            let c = self.store.pool().get().await.map_err(StoreError::from)?;
            match outcome {
                Ok(_) => {
                    c.execute(
                        "UPDATE tasks SET messages_fetched_at = now(), messages_fetch_error = NULL \
                         WHERE sid = $1",
                        &[task],
                    )
                    .await?;
                }
                Err(FetchError::Store(e)) => return Err(FetchError::Store(e)),
                Err(e) => {
                    let attempts = attempts + 1;
                    let give_up = attempts >= MAX_ATTEMPTS;
                    if give_up {
                        tracing::warn!(task = %task, conversation = %conv, attempts, error = %e,
                            "gave up reading the conversation's messages; its message metrics hold what webhooks brought");
                    } else {
                        tracing::info!(task = %task, conversation = %conv, attempts, error = %e,
                            "reading the conversation's messages failed; will retry");
                    }
                    let delay = retry_delay(attempts).as_secs_f64();
                    c.execute(
                        "UPDATE tasks SET messages_fetch_attempts = $2, messages_fetch_error = $3, \
                           messages_fetch_after = now() + make_interval(secs => $4), \
                           messages_fetched_at = CASE WHEN $5 THEN now() END \
                         WHERE sid = $1",
                        &[task, &attempts, &e.to_string(), &delay, &give_up],
                    )
                    .await?;
                }
            }
        }
        Ok(due.len())
    }
}

/// Runs [`Fetcher::fetch_once`] every few seconds until `stop`.
pub async fn run(client: TwilioClient, store: Store, stop: CancellationToken) {
    let mut fetcher = Fetcher::new(client, store);
    loop {
        let wait = match fetcher.fetch_once().await {
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
        let r = message_row(&types::or_default(m), "CH1").unwrap();
        assert_eq!(r["sid"], "IM1");
        assert_eq!(r["index"], 3);
        assert_eq!(r["source"], "rest");
        assert!(r.get("body").is_none(), "bodies are not stored");
        assert!(r["chat_service_sid"].is_null());
        assert!(message_row(&types::or_default(json!({"sid": "IM2"})), "CH1").is_none());
    }

    #[test]
    fn retries_back_off_to_six_hours() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(13), Duration::from_secs(20_480));
        assert_eq!(retry_delay(14), Duration::from_secs(6 * 3600));
        assert_eq!(retry_delay(i32::MAX), Duration::from_secs(6 * 3600));
        let total: u64 = (1..MAX_ATTEMPTS).map(|a| retry_delay(a).as_secs()).sum();
        assert!(
            total > 12 * 3600,
            "gives a missing conversation hours: {total}"
        );
    }
}
