//! What the simulator posts besides the TaskRouter callbacks of its engine, shared by
//! the planned day (`simulate`) and the live floor (`live`): Conversations messages and
//! each worker channel's initial state.

use super::{Callback, SimDay, WorkerTruth};

pub(super) fn get<'a>(cb: &'a Callback, k: &str) -> Option<&'a str> {
    cb.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A callback's `TimestampMs` (0 without one).
pub(super) fn ms_of(cb: &Callback) -> i64 {
    get(cb, "TimestampMs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, as Conversations dates its messages.
pub(super) fn iso(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// One Conversations `onMessageAdded` webhook.
pub fn message_params(
    conversation: &str,
    sid: &str,
    index: u64,
    author: &str,
    ms: i64,
) -> Callback {
    [
        ("EventType", "onMessageAdded".to_owned()),
        ("ConversationSid", conversation.to_owned()),
        ("MessageSid", sid.to_owned()),
        ("Index", index.to_string()),
        ("Author", author.to_owned()),
        ("Body", "…".to_owned()),
        ("Source", "SDK".to_owned()),
        ("DateCreated", iso(ms)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Every worker channel's capacity and availability at the start of the day, as
/// `worker.capacity.update` callbacks: without TaskRouter's REST API (which `simulate`
/// cannot offer), channels that never change would stay unknown. Later changes in the
/// day override them; the final state is the simulator's ground truth.
pub fn channel_seeds(day: &SimDay) -> Vec<(i64, Callback)> {
    let first = day.callbacks.first().map(ms_of).unwrap_or(0);
    channel_seeds_for(&day.workers, first)
}

/// [`channel_seeds`] for `workers`, dated just before `first_ms`.
pub fn channel_seeds_for(workers: &[WorkerTruth], first_ms: i64) -> Vec<(i64, Callback)> {
    let first = first_ms;
    let mut out = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        for (j, c) in w.channels.iter().enumerate() {
            let t = first - 1_000 + (i * 10 + j) as i64;
            let params = [
                ("EventType", "worker.capacity.update".to_owned()),
                (
                    "Sid",
                    format!("EV{:030x}{:02x}", i as u128 * 1000 + j as u128, 0xcc),
                ),
                ("ResourceType", "worker".to_owned()),
                ("ResourceSid", w.sid.clone()),
                ("WorkerSid", w.sid.clone()),
                ("WorkerName", w.name.clone()),
                ("TaskChannelUniqueName", c.unique_name.clone()),
                ("TaskChannelSid", c.task_channel_sid.clone()),
                ("WorkerChannelCapacity", c.capacity.to_string()),
                ("WorkerChannelAvailable", c.available.to_string()),
                ("TimestampMs", t.to_string()),
                ("Timestamp", (t / 1000).to_string()),
            ];
            out.push((
                t,
                params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ));
        }
    }
    out
}
