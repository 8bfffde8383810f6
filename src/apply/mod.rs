//! Apply: queued events into Postgres. The dispatcher reads the queue in order and hands
//! events to workers partitioned by entity; the pure rules merge them into states; the
//! store writes them in batched, idempotent transactions.

pub mod dispatch;
pub mod messages;
pub mod rules;
pub mod store;
