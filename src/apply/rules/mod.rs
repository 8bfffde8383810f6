//! The event rules: how events become rows. Pure functions, no IO.
//!
//! Every entity (task, reservation, worker, worker channel, activity) has a *state* made
//! of registers. Each register holds a value and the [`Clock`] of the event that gave it:
//! "latest" registers keep the value with the greatest clock, "first" registers the one
//! with the smallest. An event becomes a one-event state ([`task_delta`] and friends), and
//! states combine with `merge`, which is commutative, associative and idempotent. Hence:
//!
//! - **order-independent**: any delivery order of the same events gives the same state;
//! - **idempotent**: applying an event twice changes nothing;
//! - **tolerant of gaps**: every event contributes what it carries, so a missing
//!   `task.created` only leaves the fields that only it carries empty.
//!
//! Rows are then *derived* from the state ([`derive_task`] …), including the metrics.
//! The state is stored next to the row (`state` jsonb) so the next event merges into it.

use crate::config::Sla;
use crate::event::Event;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The order of facts: event time (ms), then lifecycle rank, then a tie-break drawn
/// from the event sid, so that ties between events of the same millisecond still resolve
/// the same way everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Clock(pub i64, pub u8, pub Tie);

/// The tie-break of a [`Clock`]: 63 bits of the SHA-256 of the event sid, stored as a
/// number. Every register holds one, so a number (19 digits at most) instead of the
/// 34-character sid makes a stored task state about a sixth smaller. A fact read from the
/// REST API ([`rest_clock`]) wins ties, as the sid `rest` did against `EV…` sids. States
/// stored before (a sid in its place) still read: the sid is hashed on reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Tie(pub u64);

impl Tie {
    /// Facts read from the REST API.
    pub const REST: Tie = Tie(u64::MAX);

    /// The tie-break of an event sid (stable across versions and machines).
    pub fn of(sid: &str) -> Tie {
        use sha2::{Digest, Sha256};
        if sid == "rest" {
            return Tie::REST;
        }
        let d = Sha256::digest(sid.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        Tie(u64::from_be_bytes(b) >> 1)
    }
}

impl From<&str> for Tie {
    fn from(sid: &str) -> Tie {
        Tie::of(sid)
    }
}

impl<'de> Deserialize<'de> for Tie {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tie, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Tie;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a tie-break number or an event sid")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Tie, E> {
                Ok(Tie(n))
            }
            fn visit_str<E: serde::de::Error>(self, sid: &str) -> Result<Tie, E> {
                Ok(Tie::of(sid))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value and the clock of the event it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reg<T>(pub Clock, pub T);

impl<T> Reg<T> {
    pub fn ms(&self) -> i64 {
        self.0 .0
    }
}

/// Keeps the register with the greater clock (ties keep the current value).
fn latest<T>(cur: &mut Option<Reg<T>>, new: Option<Reg<T>>) {
    if let Some(n) = new {
        match cur {
            Some(c) if c.0 >= n.0 => {}
            _ => *cur = Some(n),
        }
    }
}

/// Keeps the register with the smaller clock.
fn first<T>(cur: &mut Option<Reg<T>>, new: Option<Reg<T>>) {
    if let Some(n) = new {
        match cur {
            Some(c) if c.0 <= n.0 => {}
            _ => *cur = Some(n),
        }
    }
}

/// Rank of a task assignment status in the task lifecycle.
pub fn task_status_rank(status: &str) -> u8 {
    match status {
        "pending" => 0,
        "reserved" => 1,
        "assigned" => 2,
        "wrapping" => 3,
        "completed" | "canceled" | DELETED_STATUS => 4,
        _ => 0,
    }
}

/// Status of a task that TaskRouter no longer knows (404) and whose Events list holds
/// nothing that ends it: it ended, but not as completed nor as canceled, so summaries
/// count it as neither.
pub const DELETED_STATUS: &str = "deleted";
/// The reason recorded with [`DELETED_STATUS`].
pub const NOT_FOUND_REASON: &str = "not found in TaskRouter";

fn clock(e: &Event, rank: u8) -> Clock {
    // An event gives up to fifteen registers: its sid is hashed once.
    thread_local!(static LAST: std::cell::RefCell<(String, Tie)> = const {
        std::cell::RefCell::new((String::new(), Tie(0)))
    });
    let tie = LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != e.sid || last.0.is_empty() {
            *last = (e.sid.clone(), Tie::of(&e.sid));
        }
        last.1
    });
    Clock(e.occurred_ms, rank, tie)
}

fn reg<T>(e: &Event, rank: u8, v: Option<T>) -> Option<Reg<T>> {
    v.map(|v| Reg(clock(e, rank), v))
}

fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn secs_between(later_ms: i64, earlier_ms: i64) -> f64 {
    (later_ms - earlier_ms) as f64 / 1000.0
}

/// Event types after which a task no longer exists in TaskRouter.
pub fn is_task_end(event_type: &str) -> bool {
    matches!(
        event_type,
        "task.completed" | "task.canceled" | "task.deleted" | "task.system-deleted"
    )
}

mod fold;
mod reservation;
mod task;
mod worker;

pub use fold::*;
pub use reservation::*;
pub use task::*;
pub use worker::*;

#[cfg(test)]
mod tests;
