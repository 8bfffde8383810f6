//! The `[server]`, `[queue]` and `[postgres]` sections: the process's own settings.

use super::{Secret, DEFAULT_ADMIN_LISTEN};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: String,
    /// The base URL Twilio calls; signatures are checked against public_url + path (+ query).
    pub public_url: String,
    pub verify_signatures: bool,
    pub max_body_bytes: usize,
    /// Open connections at most; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A client has this long to send its headers, and again its body.
    pub read_timeout_secs: u64,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub shutdown_grace_secs: u64,
    /// The admin side (`/readyz`, `/metrics`, `/api/*`, `/dashboard`) is served on this
    /// address (default 127.0.0.1:9090), never on `listen`, which serves only the
    /// webhooks and `/healthz`. Empty: no admin listener; the admin side is then served
    /// on `listen` when `admin_token` is set, and nowhere otherwise.
    pub admin_listen: String,
    /// When set, the admin side requires the token (`Authorization: Bearer`, Basic auth
    /// with the token as the password, or `?token=`). Without it, the admin side answers
    /// only local clients: a loopback peer whose request carries no `Forwarded`,
    /// `X-Forwarded-For` or `X-Real-IP` (a proxy's request is never local).
    /// Env TRS_ADMIN_TOKEN overrides.
    pub admin_token: Secret,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "0.0.0.0:3000".into(),
            public_url: String::new(),
            verify_signatures: true,
            max_body_bytes: 262_144,
            max_connections: 1024,
            read_timeout_secs: 10,
            shutdown_grace_secs: 20,
            admin_listen: DEFAULT_ADMIN_LISTEN.into(),
            admin_token: Secret::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    pub path: PathBuf,
    /// Workers applying events to Postgres; events are partitioned among them by entity.
    pub workers: usize,
    /// Events per Postgres transaction, at most. Only a backlog fills a batch; larger
    /// batches write each task's state row once for more of its events.
    pub batch_size: usize,
    /// sled page cache, in MiB (sled's own default is 1 GiB).
    pub cache_mb: u64,
    /// Queue entries read and not yet applied (decoded, waiting for a worker or in its
    /// batch), in MiB of entry bytes: bounds the drain's memory whatever the callbacks'
    /// size. Lower saves memory at some cost in drain speed.
    pub in_flight_mb: u64,
    /// Past this many undelivered entries, ingress answers 503 instead of filling the disk.
    pub max_backlog: u64,
    /// Tries before an event that keeps failing is set aside as a dead letter.
    pub max_attempts: u32,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            path: PathBuf::from("/var/lib/taskrouter-summarizer/queue"),
            workers: 4,
            batch_size: 2000,
            cache_mb: 32,
            in_flight_mb: 16,
            max_backlog: 5_000_000,
            max_attempts: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Postgres {
    pub url: Secret,
    pub pool_size: usize,
    pub connect_timeout_secs: u64,
}

impl Default for Postgres {
    fn default() -> Self {
        Postgres {
            url: Secret::default(),
            pool_size: 8,
            connect_timeout_secs: 5,
        }
    }
}
