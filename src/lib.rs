//! taskrouter-summarizer: durable ingest of Twilio TaskRouter Event Callbacks,
//! summarized into Postgres and published to Twilio Sync.
//!
//! Data flows one way; one module per stage, each depending only on those above it:
//!
//! - [`config`]: the TOML contract; [`config::validate`] names every problem.
//! - [`event`]: the event model every stage shares (params, times, sids, queue entries).
//! - [`schedule`]: cron helpers for the stages that run on a schedule.
//! - [`backoff`]: the delay computation shared by every retry loop.
//! - [`metrics`]: counters and gauges, rendered as Prometheus text.
//! - [`queue`]: the embedded durable queue (sled): append with group commit, read a
//!   batch in order, ack, retries and dead letters.
//! - [`ingest`]: HTTP: the webhooks (TaskRouter form callbacks, Event Streams,
//!   Conversations) verified ([`ingest::signature`]) and acknowledged only once durably
//!   queued; the admin side (wallboard, SSE, `/api`, `/metrics`, `/readyz`).
//! - [`apply`]: the dispatcher hands queued events to workers partitioned by entity,
//!   which merge them through the pure [`apply::rules`] into Postgres ([`apply::store`])
//!   in batched, idempotent transactions; [`apply::messages`] holds the message rules.
//! - [`publish`]: summaries ([`publish::summary`]) to the live hub and to Twilio Sync
//!   (one publisher elected by an advisory lock), and user-defined jobs.
//! - [`twilio`]: the REST client, and what callbacks cannot tell: REST sync and
//!   reconciliation, the Events backfill and catch-up, Conversations messages.
//! - [`maintenance`]: rebuild the state tables from the raw events; retention.
//! - [`sim`]: the simulated contact center, `simulate` and `demo`.
//! - [`app`]: composes the stages and runs them until the shutdown future resolves.
//! - [`cli`]: the body of each command of the binary.
//! - [`util`]: the clock in milliseconds and error chains, for every stage.

pub mod app;
pub mod apply;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod event;
pub mod ingest;
pub mod maintenance;
pub mod metrics;
pub mod publish;
pub mod queue;
pub mod schedule;
pub mod sim;
pub mod twilio;
pub mod util;
