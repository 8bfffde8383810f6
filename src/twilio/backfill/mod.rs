//! Catching up on events TaskRouter's callbacks never delivered: reading TaskRouter's
//! REST Events (kept 30 days) for a window and feeding them through the same event
//! model and rules.
//!
//! - The window is read in time slices, one list query each (`PageSize=1000`), which
//!   gives progress and an ETA although the API gives no total count. The Event
//!   resource does not promise paging, so a query whose page comes back full is not
//!   paged: its window is halved until it fits in one page ([`plan`]). Only a window of
//!   [`MIN_WINDOW_SECS`] that is still full follows `meta.next_page_url`, and a next page
//!   that repeats stops the run with an error rather than skipping events.
//! - After each page is handed on, the run's position (cursor, fallback page URL) is
//!   stored in `backfill_runs`, so an interrupted run resumes where it stopped.
//! - Idempotent: events keep their `EV…` sid, so those the callbacks already delivered
//!   change nothing.
//!
//! Two destinations: inside `serve` (catch-up after downtime, periodic reconciliation)
//! pages are appended to the durable queue like callbacks; the `backfill` command,
//! which may run beside `serve` (whose queue it cannot open), applies them with the
//! same batched transactions the queue's workers use.
//!
//! Files: this one holds the run engine (runs, slicing, paging, delivery); `window.rs`
//! the pure time arithmetic; `service.rs` the heartbeat, catch-up and reconciliation
//! inside `serve`.

use crate::apply::store::{Store, StoreError};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::event::sources;
use crate::event::{Event, QueuedCallback};
use crate::queue::{Queue, QueueError};
use crate::twilio::types::{Page, RestEvent};
use crate::twilio::{TwilioClient, TwilioError};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod service;
mod window;

pub use service::{instance_name, run_in_service};
pub use window::{ceil_secs, floor_secs, parse_instant, plan, window, Plan, Window};

/// TaskRouter keeps events this long.
pub const RETENTION_DAYS: i64 = 30;
/// The largest page the Events list serves; a page this full may have left events out.
pub const PAGE_SIZE: usize = 1000;
/// The narrowest window a full page is split into (the API takes whole seconds); a
/// window this narrow that is still full falls back to `next_page_url`.
pub const MIN_WINDOW_SECS: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Twilio(#[from] TwilioError),
    #[error(transparent)]
    Store(#[from] StoreError),
    // tokio-postgres says only "db error": the server's message, and no `source()` that
    // would repeat it (see `StoreError`).
    #[error("Postgres: {}", crate::apply::store::describe(.0))]
    Db(tokio_postgres::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "TaskRouter's Events list repeated a page at {at} (next page {url}): more than \
         {PAGE_SIZE} events in {MIN_WINDOW_SECS} s and the list does not page; stopping \
         instead of skipping events"
    )]
    RepeatedPage { at: DateTime<Utc>, url: String },
    #[error("stopped")]
    Stopped,
}

impl From<tokio_postgres::Error> for BackfillError {
    fn from(e: tokio_postgres::Error) -> Self {
        BackfillError::Db(e)
    }
}

/// Where fetched events go.
#[derive(Clone)]
pub enum Sink {
    /// The durable queue (inside `serve`): the workers apply them like callbacks.
    Queue(Arc<Queue>),
    /// Applied at once in batched transactions (the `backfill` command).
    Store(Store),
}

/// A backfill run as stored in `backfill_runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: i64,
    pub source: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub slice: chrono::Duration,
    pub cursor_at: DateTime<Utc>,
    pub next_page_url: Option<String>,
    pub slices_done: i32,
    pub events_fetched: i64,
    pub events_new: Option<i64>,
    pub finished: bool,
}

impl Run {
    pub fn slices_total(&self) -> i32 {
        let span = (self.until - self.since).num_seconds().max(1);
        let s = self.slice.num_seconds().max(1);
        ((span + s - 1) / s) as i32
    }

    /// Slices of the run's `slice` wholly behind the cursor (all of them once done).
    pub fn slices_at_cursor(&self) -> i32 {
        if self.cursor_at >= self.until {
            return self.slices_total();
        }
        let done = (self.cursor_at - self.since).num_seconds().max(0);
        (done / self.slice.num_seconds().max(1)) as i32
    }

    fn from_row(r: &tokio_postgres::Row) -> Run {
        Run {
            id: r.get("id"),
            source: r.get("source"),
            since: r.get("since"),
            until: r.get("until"),
            slice: chrono::Duration::seconds(r.get::<_, i32>("slice_seconds") as i64),
            cursor_at: r.get("cursor_at"),
            next_page_url: r.get("next_page_url"),
            slices_done: r.get("slices_done"),
            events_fetched: r.get("events_fetched"),
            events_new: r.get("events_new"),
            finished: r.get::<_, Option<DateTime<Utc>>>("finished_at").is_some(),
        }
    }
}

const RUN_COLUMNS: &str = "id, source, since, until, slice_seconds, cursor_at, next_page_url, \
                           slices_done, events_fetched, events_new, finished_at";

/// What a backfill needs from the config: the workspace read and, inside `serve`, the
/// catch-up and reconciliation options and this instance's heartbeat name.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workspace_sid: String,
    pub options: crate::config::Backfill,
    /// This instance's name in `instance_heartbeats` (see [`instance_name`]).
    pub instance: String,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            workspace_sid: cfg.twilio.workspace_sid.clone(),
            options: cfg.backfill.clone(),
            instance: instance_name(cfg),
        }
    }
}

/// Reads TaskRouter's REST Events into a [`Sink`].
pub struct Backfill {
    client: TwilioClient,
    store: Store,
    settings: Settings,
    sink: Sink,
}

impl Backfill {
    pub fn new(settings: Settings, client: TwilioClient, store: Store, sink: Sink) -> Backfill {
        Backfill {
            client,
            store,
            settings,
            sink,
        }
    }

    /// Records a new run.
    pub async fn create(
        &self,
        source: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        slice: chrono::Duration,
    ) -> Result<Run, BackfillError> {
        let c = self.store.pool().get().await.map_err(StoreError::from)?;
        // Finished runs are history; keep a week of it.
        c.execute(
            "DELETE FROM backfill_runs WHERE finished_at < now() - interval '7 days'",
            &[],
        )
        .await?;
        let slice_secs = slice.num_seconds().clamp(60, 86_400) as i32;
        let r = c
            .query_one(
                &format!(
                    "INSERT INTO backfill_runs (source, since, until, slice_seconds, cursor_at) \
                     VALUES ($1, $2, $3, $4, $2) RETURNING {RUN_COLUMNS}"
                ),
                &[&source, &since, &until, &slice_secs],
            )
            .await?;
        Ok(Run::from_row(&r))
    }

    /// Unfinished runs of `source`, oldest first.
    pub async fn unfinished(&self, source: &str) -> Result<Vec<Run>, BackfillError> {
        let c = self.store.pool().get().await.map_err(StoreError::from)?;
        let rows = c
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM backfill_runs \
                     WHERE source = $1 AND finished_at IS NULL ORDER BY id"
                ),
                &[&source],
            )
            .await?;
        Ok(rows.iter().map(Run::from_row).collect())
    }

    /// The list query of one window: `StartDate` rounded down and `EndDate` (inclusive)
    /// rounded up to the whole seconds the API takes, so consecutive windows overlap at
    /// their boundary second rather than miss it (events read twice change nothing).
    fn page_url(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<String, BackfillError> {
        let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let page_size = PAGE_SIZE.to_string();
        crate::twilio::workspace_url(
            &self.client.taskrouter_url,
            &self.settings.workspace_sid,
            &["Events"],
            &[
                ("StartDate", &secs(floor_secs(from))),
                ("EndDate", &secs(ceil_secs(to))),
                ("PageSize", &page_size),
            ],
        )
        .map_err(|e| BackfillError::Invalid(e.to_string()))
    }

    /// Reads the rest of `run`'s window, storing its position after each page handed on;
    /// `progress` is called after each. Returns the finished run, or
    /// [`BackfillError::Stopped`] when `stop` fires (the run resumes later).
    ///
    /// Guarantees: every event of the window is read or the run fails; a page that may
    /// have left events out (full) is never taken as the whole of its window; a next
    /// page that repeats is an error ([`BackfillError::RepeatedPage`]), never a skip.
    pub async fn run(
        &self,
        mut run: Run,
        stop: &CancellationToken,
        mut progress: impl FnMut(&Run),
    ) -> Result<Run, BackfillError> {
        let min = chrono::Duration::seconds(MIN_WINDOW_SECS);
        // Width of the next window: halved while pages come back full, doubled back
        // towards the run's slice after each one that fits.
        let mut width = run.slice.max(min);
        // Event sids of the window being paged (fallback), to notice a repeated page.
        let mut seen: HashSet<String> = HashSet::new();
        while run.cursor_at < run.until {
            if stop.is_cancelled() {
                return Err(BackfillError::Stopped);
            }
            let paging = run.next_page_url.clone();
            let window_end = match paging {
                // Paging happens only in minimum windows (also after a resume).
                Some(_) => (run.cursor_at + min).min(run.until),
                None => (run.cursor_at + width).min(run.until),
            };
            let url = match &paging {
                Some(u) => u.clone(),
                None => self.page_url(run.cursor_at, window_end)?,
            };
            let page = tokio::select! {
                p = self.client.get_page(&url) => p?,
                _ = stop.cancelled() => return Err(BackfillError::Stopped),
            };
            let Page {
                items,
                next_page_url,
            } = Page::<RestEvent>::decode(&url, page)
                .map_err(|_| BackfillError::Invalid(format!("no `events` array in {url}")))?;
            let next = next_page_url.map(|n| absolute(&self.client, &n));
            let full = items.len() >= PAGE_SIZE || next.is_some();
            let step = if paging.is_some() {
                Plan::Page
            } else {
                plan(full, window_end - run.cursor_at)
            };
            if let Plan::Split(w) = step {
                // Nothing handed on: the halves are read instead.
                tracing::debug!(from = %run.cursor_at, secs = w.num_seconds(), "full page: splitting the window");
                width = w;
                continue;
            }
            let sids: Vec<&str> = items.iter().filter_map(RestEvent::sid).collect();
            if paging.is_some() && !sids.is_empty() && sids.iter().all(|s| seen.contains(*s)) {
                let e = BackfillError::RepeatedPage {
                    at: run.cursor_at,
                    url: url.clone(),
                };
                tracing::error!(run = run.id, "{e}");
                return Err(e);
            }
            seen.extend(sids.iter().map(|s| (*s).to_owned()));
            let batch: Vec<crate::event::Params> = items
                .iter()
                .filter_map(|e| sources::params_from_rest(&e.0))
                .collect();
            let fetched = batch.len() as i64;
            let new = self.deliver(batch, stop).await?;
            run.events_fetched += fetched;
            if let Some(n) = new {
                run.events_new = Some(run.events_new.unwrap_or(0) + n);
            }
            match (step, next) {
                (Plan::Page, Some(n)) if n == url => {
                    let e = BackfillError::RepeatedPage {
                        at: run.cursor_at,
                        url: n,
                    };
                    tracing::error!(run = run.id, "{e}");
                    return Err(e);
                }
                (Plan::Page, Some(n)) => run.next_page_url = Some(n),
                (step, _) => {
                    if step == Plan::Page && items.len() >= PAGE_SIZE {
                        tracing::warn!(run = run.id, at = %run.cursor_at,
                            "TaskRouter gave a full page for one second and no next page: \
                             events beyond {PAGE_SIZE} in that second may be missing");
                    }
                    run.next_page_url = None;
                    run.cursor_at = window_end;
                    seen.clear();
                    if step == Plan::Fits {
                        width = (width * 2).min(run.slice.max(min));
                    }
                }
            }
            run.slices_done = run.slices_at_cursor();
            run.finished = run.cursor_at >= run.until;
            self.save(&run).await?;
            progress(&run);
        }
        Ok(run)
    }

    /// Hands one page on; returns how many events were new when that is known.
    async fn deliver(
        &self,
        batch: Vec<crate::event::Params>,
        stop: &CancellationToken,
    ) -> Result<Option<i64>, BackfillError> {
        if batch.is_empty() {
            return Ok(match self.sink {
                Sink::Store(_) => Some(0),
                Sink::Queue(_) => None,
            });
        }
        let received_ms = Utc::now().timestamp_millis();
        match &self.sink {
            Sink::Queue(q) => {
                let cbs: Vec<QueuedCallback> = batch
                    .into_iter()
                    .map(|params| QueuedCallback::TaskRouterV1 {
                        received_ms,
                        params,
                    })
                    .collect();
                loop {
                    match q.append_all_durable(&cbs).await {
                        Ok(_) => return Ok(None),
                        // A full backlog is backpressure: callbacks come first.
                        Err(QueueError::Full(_)) => {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                                _ = stop.cancelled() => return Err(BackfillError::Stopped),
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Sink::Store(store) => {
                let events: Vec<Event> = batch
                    .iter()
                    .map(|p| Event::from_params(p, received_ms))
                    .collect();
                let mut attempt = 0u32;
                loop {
                    match store.apply(&events).await {
                        Ok(a) => return Ok(Some(a.new as i64)),
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, "Postgres unavailable; retrying the page");
                            if !Backoff::POSTGRES_UNAVAILABLE.sleep(attempt, stop).await {
                                return Err(BackfillError::Stopped);
                            }
                            attempt = attempt.saturating_add(1);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    async fn save(&self, run: &Run) -> Result<(), BackfillError> {
        let c = self.store.pool().get().await.map_err(StoreError::from)?;
        c.execute(
            "UPDATE backfill_runs SET cursor_at = $2, next_page_url = $3, slices_done = $4, \
             events_fetched = $5, events_new = $6, updated_at = now(), \
             finished_at = CASE WHEN $7 THEN now() END WHERE id = $1",
            &[
                &run.id,
                &run.cursor_at,
                &run.next_page_url,
                &run.slices_done,
                &run.events_fetched,
                &run.events_new,
                &run.finished,
            ],
        )
        .await?;
        Ok(())
    }

    /// Records why a run stopped (it stays unfinished and resumable).
    pub async fn record_error(&self, run: &Run, error: &str) {
        if let Ok(c) = self.store.pool().get().await {
            let _ = c
                .execute(
                    "UPDATE backfill_runs SET error = $2, updated_at = now() WHERE id = $1",
                    &[&run.id, &error],
                )
                .await;
        }
    }
}

/// Every item of a list that is expected to fit in one page, following
/// `meta.next_page_url` as a fallback; a next page that repeats (the same URL, or only
/// items already read) is an error, never a silent end.
pub async fn read_all_pages(
    client: &TwilioClient,
    first_url: &str,
) -> Result<Vec<RestEvent>, TwilioError> {
    let mut out = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut url = first_url.to_owned();
    loop {
        let page = Page::<RestEvent>::decode(&url, client.get_page(&url).await?)?;
        let read = page.items.len();
        let mut fresh = 0;
        for it in page.items {
            if it.sid().is_none_or(|s| seen.insert(s.to_owned())) {
                fresh += 1;
                out.push(it);
            }
        }
        match page.next_page_url.map(|n| absolute(client, &n)) {
            None => return Ok(out),
            Some(n) if n == url || (fresh == 0 && read > 0) => {
                return Err(TwilioError::Decode {
                    url: n,
                    reason: "the next page repeats the previous one".into(),
                })
            }
            Some(n) => url = n,
        }
    }
}

/// Twilio's `next_page_url` is absolute on the real API; a relative one (some proxies)
/// is taken against the configured base.
fn absolute(client: &TwilioClient, next: &str) -> String {
    if next.starts_with("http://") || next.starts_with("https://") {
        next.to_owned()
    } else {
        format!("{}{}", client.taskrouter_url, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn slices_cover_the_window() {
        let r = Run {
            id: 1,
            source: "cli".into(),
            since: t("2026-11-30T00:00:00Z"),
            until: t("2026-11-30T10:30:00Z"),
            slice: chrono::Duration::hours(1),
            cursor_at: t("2026-11-30T00:00:00Z"),
            next_page_url: None,
            slices_done: 0,
            events_fetched: 0,
            events_new: None,
            finished: false,
        };
        assert_eq!(r.slices_total(), 11);
    }

    #[test]
    fn progress_counts_slices_behind_the_cursor() {
        let mut r = Run {
            id: 1,
            source: "cli".into(),
            since: t("2026-11-30T00:00:00Z"),
            until: t("2026-11-30T10:30:00Z"),
            slice: chrono::Duration::hours(1),
            cursor_at: t("2026-11-30T02:59:59Z"),
            next_page_url: None,
            slices_done: 0,
            events_fetched: 0,
            events_new: None,
            finished: false,
        };
        assert_eq!(r.slices_at_cursor(), 2);
        r.cursor_at = t("2026-11-30T03:00:00Z");
        assert_eq!(r.slices_at_cursor(), 3);
        r.cursor_at = r.until;
        assert_eq!(r.slices_at_cursor(), 11);
    }
}
