//! Ingest: the HTTP server. Webhooks (TaskRouter form callbacks, Event Streams,
//! Conversations) are verified and answered only once durably in the queue; the admin
//! side (wallboard, SSE, `/api`, `/metrics`, `/readyz`) is never public by default.

pub mod http;
pub mod signature;
