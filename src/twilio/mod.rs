//! A small Twilio REST client (reqwest with rustls): Basic auth with the account SID and
//! auth token, or an API key and secret; base URLs from config so tests and proxies can
//! point elsewhere; timeouts; retries with exponential backoff and full jitter,
//! honouring `Retry-After` when present. Errors carry Twilio's code and message;
//! credentials never appear in logs or errors.
//!
//! Retries depend on the request's [`Idempotency`]: one that may be repeated is retried
//! on 429, 5xx and any connection error; one that must not be applied twice (appending a
//! Sync list item) only where Twilio certainly did not process it: 429 (Twilio documents
//! it as never processed) and connections that could not be made.

pub mod backfill;
pub mod conversations;
pub mod rest_sync;
pub mod types;

use crate::backoff::Backoff;
use crate::config::{Config, Secret};
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    #[error("Twilio answered {status} (code {code:?}): {message}")]
    Api {
        status: u16,
        code: Option<i64>,
        message: String,
    },
    /// `sent`: the request may have reached Twilio (a timeout or a connection lost after
    /// sending), so it may have been applied.
    #[error("cannot reach Twilio at {url}: {reason}")]
    Transport {
        url: String,
        reason: String,
        sent: bool,
    },
    #[error("unexpected answer from Twilio at {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("invalid Twilio client configuration: {0}")]
    Config(String),
}

impl TwilioError {
    pub fn status(&self) -> Option<u16> {
        match self {
            TwilioError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<i64> {
        match self {
            TwilioError::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether the request may have been applied although it failed: a 5xx, a timeout,
    /// a connection lost after sending, or a success answer that could not be read.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            TwilioError::Api { status, .. } => *status >= 500,
            TwilioError::Transport { sent, .. } => *sent,
            TwilioError::Decode { .. } => true,
            TwilioError::Config(_) => false,
        }
    }
}

/// Whether a request may be sent more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it changes nothing more (reads, deletes, updates, creates with a unique
    /// name or key): retried on 429, 5xx and connection errors.
    Idempotent,
    /// Repeating it could apply it twice (appending a list item): retried only on 429
    /// and on connections that could not be made. Other failures are returned, and
    /// [`TwilioError::outcome_unknown`] says whether it may have been applied.
    Once,
}

#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    user: String,
    password: Secret,
    pub taskrouter_url: String,
    pub sync_url: String,
    pub conversations_url: String,
    max_retries: u32,
}

impl std::fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioClient")
            .field("user", &self.user)
            .field("taskrouter_url", &self.taskrouter_url)
            .field("sync_url", &self.sync_url)
            .finish()
    }
}

/// Backoff before retry `attempt` (0-based): jitter over the upper three quarters of
/// 200 ms × 2^attempt, at most 10 s; a `Retry-After` is honoured up to a minute.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
    .jitter(0.25, 1.0)
    .max_hint(Duration::from_secs(60));

fn trim(u: &str) -> String {
    u.trim_end_matches('/').to_owned()
}

/// What the REST client needs: credentials and base URLs.
#[derive(Clone)]
pub struct ClientSettings {
    /// The account SID, or an API key SID (SK…).
    pub user: String,
    pub password: Secret,
    pub taskrouter_url: String,
    pub sync_url: String,
    pub conversations_url: String,
}

impl ClientSettings {
    /// From `[twilio]`: an API key and secret when set (preferred), else the account SID
    /// and auth token; Twilio's own hosts unless other base URLs are configured.
    pub fn from_config(cfg: &Config) -> ClientSettings {
        let t = &cfg.twilio;
        let (user, password) = if !t.api_key_sid.is_empty() {
            (t.api_key_sid.clone(), t.api_key_secret.clone())
        } else {
            (t.account_sid.clone(), t.auth_token.clone())
        };
        let base = |u: &Option<String>, default: &str| trim(u.as_deref().unwrap_or(default));
        ClientSettings {
            user,
            password,
            taskrouter_url: base(&t.taskrouter_url, "https://taskrouter.twilio.com"),
            sync_url: base(&t.sync_url, "https://sync.twilio.com"),
            conversations_url: base(&t.conversations_url, "https://conversations.twilio.com"),
        }
    }
}

impl TwilioClient {
    pub fn new(settings: ClientSettings) -> Result<TwilioClient, TwilioError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("taskrouter-summarizer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TwilioError::Config(e.to_string()))?;
        Ok(TwilioClient {
            http,
            user: settings.user,
            password: settings.password,
            taskrouter_url: settings.taskrouter_url,
            sync_url: settings.sync_url,
            conversations_url: settings.conversations_url,
            max_retries: 4,
        })
    }

    /// GET; `Ok(None)` on 404.
    pub async fn get(&self, url: &str) -> Result<Option<Value>, TwilioError> {
        match self
            .send(reqwest::Method::GET, url, &[], Idempotency::Idempotent)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET one page (or any resource); a 404 is an error.
    pub async fn get_page(&self, url: &str) -> Result<Value, TwilioError> {
        self.send(reqwest::Method::GET, url, &[], Idempotency::Idempotent)
            .await
    }

    /// POST form parameters of an idempotent request (an update, a create with a unique
    /// name or key): retried like a read.
    pub async fn post(&self, url: &str, form: &[(&str, String)]) -> Result<Value, TwilioError> {
        self.send(reqwest::Method::POST, url, form, Idempotency::Idempotent)
            .await
    }

    /// POST that must not be applied twice (appending a list item): see
    /// [`Idempotency::Once`].
    pub async fn post_once(
        &self,
        url: &str,
        form: &[(&str, String)],
    ) -> Result<Value, TwilioError> {
        self.send(reqwest::Method::POST, url, form, Idempotency::Once)
            .await
    }

    /// DELETE.
    pub async fn delete(&self, url: &str) -> Result<(), TwilioError> {
        self.send(reqwest::Method::DELETE, url, &[], Idempotency::Idempotent)
            .await
            .map(drop)
    }

    /// Every item of a paged list, following `meta.next_page_url`. Guarantees: a page
    /// without its `T::KEY` array is an error ([`TwilioError::Decode`]); items that do
    /// not read as `T` are left out (see [`types`]).
    pub async fn list<T: types::Listed>(&self, first_url: &str) -> Result<Vec<T>, TwilioError> {
        let mut out = Vec::new();
        let mut next = Some(first_url.to_owned());
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(TwilioError::Decode {
                    url,
                    reason: "more than 10000 pages; giving up".into(),
                });
            }
            let page = self
                .send(reqwest::Method::GET, &url, &[], Idempotency::Idempotent)
                .await?;
            let page = types::Page::<T>::decode(&url, page)?;
            out.extend(page.items);
            next = page.next_page_url;
        }
        Ok(out)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        form: &[(&str, String)],
        idempotency: Idempotency,
    ) -> Result<Value, TwilioError> {
        let once = idempotency == Idempotency::Once;
        let mut attempt = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .basic_auth(&self.user, Some(self.password.expose()))
                .header("accept", "application/json");
            if !form.is_empty() {
                req = req.form(form);
            }
            let (retry, err, wait) = match req.send().await {
                Err(e) => {
                    // reqwest's text says little ("error sending request"): add its causes.
                    let e = e.without_url();
                    let reason = crate::util::error_chain(&e);
                    // A connect error (refused, DNS, TLS handshake, connect timeout) sent
                    // nothing; anything later may have reached Twilio.
                    let sent = !e.is_connect();
                    let err = TwilioError::Transport {
                        url: url.to_owned(),
                        reason,
                        sent,
                    };
                    (!(once && sent), err, None)
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = match resp.text().await {
                        Ok(t) => t,
                        // The answer was cut off: for a success, what it said is unknown.
                        Err(e) if (200..300).contains(&status) => {
                            return Err(TwilioError::Decode {
                                url: url.to_owned(),
                                reason: e.without_url().to_string(),
                            })
                        }
                        Err(_) => String::new(),
                    };
                    if (200..300).contains(&status) {
                        if text.trim().is_empty() {
                            return Ok(Value::Null);
                        }
                        return serde_json::from_str(&text).map_err(|e| TwilioError::Decode {
                            url: url.to_owned(),
                            reason: e.to_string(),
                        });
                    }
                    let body: types::ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                    let err = TwilioError::Api {
                        status,
                        code: body.code,
                        message: body
                            .message
                            .unwrap_or_else(|| text.chars().take(200).collect()),
                    };
                    let retry = status == 429 || (status >= 500 && !once);
                    (retry, err, retry_after)
                }
            };
            if !retry || attempt >= self.max_retries {
                if retry {
                    tracing::warn!(%method, url, error = %err, attempts = attempt + 1, "Twilio request failed");
                }
                return Err(err);
            }
            let delay = BACKOFF.delay_or(attempt, wait);
            tracing::debug!(%method, url, error = %err, retry_in_ms = delay.as_millis() as u64, "retrying Twilio request");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// A TaskRouter URL: `base`/v1/Workspaces/`ws`/`path`…?`query`. Path segments are
/// percent-encoded; every query pair is appended as given, so an array filter is a
/// repeated pair (`AssignmentStatus=pending&AssignmentStatus=reserved`), as the API
/// definitions (type `array`) and Twilio's own libraries send it.
pub fn workspace_url(
    base: &str,
    ws: &str,
    path: &[&str],
    query: &[(&str, &str)],
) -> Result<String, TwilioError> {
    let mut url =
        url::Url::parse(base).map_err(|e| TwilioError::Config(format!("{base:?}: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| TwilioError::Config(format!("{base:?} cannot be a base URL")))?
        .pop_if_empty()
        .extend(["v1", "Workspaces", ws])
        .extend(path);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url.into())
}

/// Percent-encodes one URL path segment (unique names and map keys may hold anything).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        for a in 0..20 {
            let d = BACKOFF.delay(a);
            assert!(d <= Duration::from_secs(10));
            assert!(d >= Duration::from_millis(50));
        }
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(BACKOFF.delay_or(0, hour), Duration::from_secs(60));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let mut cfg = crate::config::Config::from_toml("").unwrap();
        cfg.twilio.account_sid = "AC1".into();
        cfg.twilio.auth_token = Secret::new("very-secret");
        let c = TwilioClient::new(ClientSettings::from_config(&cfg)).unwrap();
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("Sales / EMEA"), "Sales%20%2F%20EMEA");
    }
}
