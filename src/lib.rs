//! taskrouter-summarizer: durable ingest of Twilio TaskRouter Event Callbacks,
//! summarized into Postgres.
//!
//! Data flows one way, one module per stage:
//!
//! - [`config`]: the TOML contract, validated with every problem named.
//! - [`http`]: `POST /ingress` verifies the signature ([`signature`]), parses the form
//!   ([`event`]) and answers 204 only once the callback is durably in the [`queue`].
//! - [`queue`]: the embedded sled queue with group commit, retries and dead letters.
//! - [`dispatch`]: reads the queue in order and hands events to workers partitioned by
//!   entity, which apply them in batched transactions through the [`store`].
//! - [`rules`]: the pure state rules that turn events into rows.
//! - [`store`]: Postgres (pool, embedded migrations, batched idempotent apply).
//! - [`sources`]: Event Streams deliveries and REST Events mapped onto callback params;
//!   [`backfill`] reads missed events from TaskRouter's REST Events.
//! - [`rebuild`] recomputes the state tables from the raw events; [`retention`] removes
//!   old raw events.
//! - [`server`]: composes the stages and runs them until the shutdown future resolves.

pub mod backfill;
pub mod config;
pub mod conversations;
pub mod demo;
pub mod dispatch;
pub mod event;
pub mod http;
pub mod jobs;
pub mod live;
pub mod messages;
pub mod metrics;
pub mod publish;
pub mod queue;
pub mod rebuild;
pub mod retention;
pub mod rules;
pub mod server;
pub mod signature;
pub mod sim;
pub mod simulate;
pub mod sources;
pub mod store;
pub mod summary;
pub mod sync_size;
pub mod sync_writer;
pub mod taskrouter;
pub mod twilio;
