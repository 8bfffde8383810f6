//! Summaries: plain SQL over the state tables, shaped for Twilio Sync and `/api/summary`.
//!
//! Every query reads either the open tasks (a partial index) or the tasks created,
//! accepted or ended since a window start (three indexes), so the cost follows today's
//! volume, not the millions of past tasks.
//!
//! Definitions (units: counts; durations in seconds; service level in percent):
//! - service level = accepted within threshold / (accepted + abandoned) × 100, short
//!   abandons excluded (Flex's real-time queues view); null without any of either;
//! - abandoned = canceled before any acceptance after at least `short_abandon_seconds`;
//! - speed of answer = `answered_in`; handle time = `total_time − answered_in`
//!   (acceptance to completion, wrap-up included); wrap-up = `total_time − acw_start`;
//! - capacity = configured capacity of available channels of workers in an available
//!   activity, not deleted; busy = tasks reserved, assigned or wrapping on the channel;
//!   utilization = busy / capacity × 100.

use crate::config::Sla;
use crate::publish::sync_size;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use crate::apply::store::StoreError;

/// Counters and averages of one window (today, or the last 30 minutes).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Window {
    pub tasks_created: i64,
    pub tasks_accepted: i64,
    pub tasks_accepted_within_sla: i64,
    pub tasks_abandoned: i64,
    pub tasks_short_abandoned: i64,
    pub tasks_completed: i64,
    pub service_level: Option<f64>,
    pub avg_speed_of_answer: Option<f64>,
    pub avg_handle_time: Option<f64>,
    pub avg_wrapup_time: Option<f64>,
    pub avg_abandon_time: Option<f64>,
    /// Messaging tasks: first agent message − task created; voice: acceptance.
    pub avg_first_response_time: Option<f64>,
    /// Agent replies to customer messages: total response time / replies.
    pub avg_agent_response_time: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Realtime {
    pub tasks_by_status: BTreeMap<String, i64>,
    pub total_tasks: i64,
    pub longest_task_waiting_age: i64,
    pub longest_task_waiting_sid: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChannelLive {
    pub active_tasks: i64,
    pub busy_tasks: i64,
    pub capacity: i64,
    pub available_capacity: i64,
    pub utilization: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Group {
    pub realtime: Realtime,
    pub today: Window,
    pub last_30_minutes: Window,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub generated_at: String,
    pub timezone: String,
    pub today_start: String,
    pub workspace: Group,
    pub channels: BTreeMap<String, ChannelLive>,
    pub by_channel: BTreeMap<String, Group>,
    pub queues: BTreeMap<String, Group>,
    pub workers_by_activity: BTreeMap<String, i64>,
    pub total_workers: i64,
    pub available_workers: i64,
}

fn pct(num: i64, den: i64) -> Option<f64> {
    (den > 0).then(|| ((num as f64 / den as f64) * 10_000.0).round() / 100.0)
}

fn round2(v: Option<f64>) -> Option<f64> {
    v.map(|x| (x * 100.0).round() / 100.0)
}

const OPEN: &str = "('pending','reserved','assigned','wrapping')";

/// The window counters grouped by `group_expr` (a column expression), for tasks touched
/// since `$1`; `$2` is the short-abandon threshold.
fn window_sql(group_expr: &str) -> String {
    format!(
        "SELECT {group_expr} AS g,
            count(*) FILTER (WHERE task_created >= $1),
            count(*) FILTER (WHERE first_accepted_at >= $1),
            count(*) FILTER (WHERE first_accepted_at >= $1 AND within_sla),
            count(*) FILTER (WHERE canceled_at >= $1 AND first_accepted_at IS NULL AND coalesce(total_time, 0) >= $2),
            count(*) FILTER (WHERE canceled_at >= $1 AND first_accepted_at IS NULL AND coalesce(total_time, 0) < $2),
            count(*) FILTER (WHERE ended_at >= $1 AND task_assignment_status = 'completed'),
            (avg(answered_in) FILTER (WHERE first_accepted_at >= $1))::float8,
            (avg(total_time - answered_in) FILTER (WHERE ended_at >= $1 AND task_assignment_status = 'completed'))::float8,
            (avg(total_time - acw_start) FILTER (WHERE ended_at >= $1 AND task_assignment_status = 'completed'))::float8,
            (avg(total_time) FILTER (WHERE canceled_at >= $1 AND first_accepted_at IS NULL AND coalesce(total_time, 0) >= $2))::float8,
            (avg(agent_first_response_time) FILTER (WHERE ended_at >= $1 AND task_assignment_status = 'completed'))::float8,
            ((sum(agent_total_response_time) FILTER (WHERE ended_at >= $1 AND task_assignment_status = 'completed'))
              / nullif(sum(agent_reply_count) FILTER (WHERE ended_at >= $1 AND task_assignment_status = 'completed'), 0))::float8
         FROM tasks
         WHERE task_created >= $1 OR first_accepted_at >= $1 OR ended_at >= $1
         GROUP BY 1"
    )
}

fn window_from_row(r: &tokio_postgres::Row) -> Window {
    let accepted: i64 = r.get(2);
    let within: i64 = r.get(3);
    let abandoned: i64 = r.get(4);
    Window {
        tasks_created: r.get(1),
        tasks_accepted: accepted,
        tasks_accepted_within_sla: within,
        tasks_abandoned: abandoned,
        tasks_short_abandoned: r.get(5),
        tasks_completed: r.get(6),
        service_level: pct(within, accepted + abandoned),
        avg_speed_of_answer: round2(r.get(7)),
        avg_handle_time: round2(r.get(8)),
        avg_wrapup_time: round2(r.get(9)),
        avg_abandon_time: round2(r.get(10)),
        avg_first_response_time: round2(r.get(11)),
        avg_agent_response_time: round2(r.get(12)),
    }
}

/// Computes the whole summary in one read-only transaction.
pub async fn compute(pool: &Pool, sla: &Sla, now: DateTime<Utc>) -> Result<Summary, StoreError> {
    let tz: chrono_tz::Tz = sla.timezone.parse().unwrap_or(chrono_tz::UTC);
    let today = crate::util::start_of_day(&tz, now);
    let recent = now - chrono::Duration::minutes(30);
    let short = sla.short_abandon_seconds as i32;
    let mut client = pool.get().await?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let mut s = Summary {
        generated_at: now.to_rfc3339(),
        timezone: tz.name().to_owned(),
        today_start: today.to_rfc3339(),
        ..Summary::default()
    };

    // Real time: open tasks by queue, channel and status.
    let rows = tx
        .query(
            &format!(
                "SELECT coalesce(task_queue_name, '(none)'), coalesce(task_channel_unique_name, '(none)'),
                        task_assignment_status, count(*),
                        (max(extract(epoch from (now() - task_created)))
                            FILTER (WHERE task_assignment_status IN ('pending', 'reserved')))::float8,
                        (array_agg(sid ORDER BY task_created) FILTER (WHERE task_assignment_status IN ('pending', 'reserved')))[1]
                 FROM tasks WHERE task_assignment_status IN {OPEN}
                 GROUP BY 1, 2, 3"
            ),
            &[],
        )
        .await?;
    for r in &rows {
        let (queue, channel, status): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let n: i64 = r.get(3);
        let wait: Option<f64> = r.get(4);
        let wait_sid: Option<String> = r.get(5);
        for rt in [
            &mut s.queues.entry(queue.clone()).or_default().realtime,
            &mut s.by_channel.entry(channel.clone()).or_default().realtime,
            &mut s.workspace.realtime,
        ] {
            *rt.tasks_by_status.entry(status.clone()).or_default() += n;
            rt.total_tasks += n;
            if let Some(w) = wait {
                let w = w.max(0.0) as i64;
                if w >= rt.longest_task_waiting_age {
                    rt.longest_task_waiting_age = w;
                    rt.longest_task_waiting_sid = wait_sid.clone();
                }
            }
        }
        let live = s.channels.entry(channel).or_default();
        live.active_tasks += n;
        if status != "pending" {
            live.busy_tasks += n;
        }
    }
    for g in s
        .queues
        .values_mut()
        .chain(s.by_channel.values_mut())
        .chain(std::iter::once(&mut s.workspace))
    {
        for st in ["pending", "reserved", "assigned", "wrapping"] {
            g.realtime.tasks_by_status.entry(st.to_owned()).or_default();
        }
    }

    // Windows: today and the last 30 minutes, per queue and per channel.
    for (start, pick) in [(today, 0), (recent, 1)] {
        for (expr, by_queue) in [
            ("coalesce(task_queue_name, '(none)')", true),
            ("coalesce(task_channel_unique_name, '(none)')", false),
        ] {
            let rows = tx.query(&window_sql(expr), &[&start, &short]).await?;
            for r in &rows {
                let key: String = r.get(0);
                let w = window_from_row(r);
                let map = if by_queue {
                    &mut s.queues
                } else {
                    &mut s.by_channel
                };
                let g = map.entry(key).or_default();
                if pick == 0 {
                    g.today = w;
                } else {
                    g.last_30_minutes = w;
                }
            }
            if by_queue {
                // The workspace as one group (averages over all tasks, not of averages).
                let rows = tx.query(&window_sql("''"), &[&start, &short]).await?;
                let w = rows.first().map(window_from_row).unwrap_or_default();
                if pick == 0 {
                    s.workspace.today = w;
                } else {
                    s.workspace.last_30_minutes = w;
                }
            }
        }
    }

    // Capacity per channel.
    let rows = tx
        .query(
            "SELECT wc.task_channel_unique_name,
                    coalesce(sum(wc.configured_capacity) FILTER (
                        WHERE wc.available AND w.current_activity_available AND NOT w.deleted), 0)::int8
             FROM worker_channels wc JOIN workers w ON w.worker_sid = wc.worker_sid
             GROUP BY 1",
            &[],
        )
        .await?;
    for r in &rows {
        let live = s.channels.entry(r.get(0)).or_default();
        live.capacity = r.get(1);
    }
    for live in s.channels.values_mut() {
        live.available_capacity = (live.capacity - live.busy_tasks).max(0);
        live.utilization = pct(live.busy_tasks, live.capacity);
    }

    // Workers by activity.
    let rows = tx
        .query(
            "SELECT coalesce(current_activity, '(unknown)'), count(*),
                    count(*) FILTER (WHERE current_activity_available)
             FROM workers WHERE NOT deleted GROUP BY 1",
            &[],
        )
        .await?;
    for r in &rows {
        let n: i64 = r.get(1);
        let avail: i64 = r.get(2);
        s.workers_by_activity.insert(r.get(0), n);
        s.total_workers += n;
        s.available_workers += avail;
    }
    tx.commit().await?;
    Ok(s)
}

/// Channel keys the original app always wrote, so existing Flex plugins find them.
const LEGACY_CHANNELS: [&str; 10] = [
    "default", "voice", "chat", "sms", "video", "custom1", "custom2", "custom3", "custom4",
    "custom5",
];

/// The objects published to Sync: `(kind, name, key, data)`; kind is "document" or
/// "map" (then `key` is the item key).
#[derive(Debug, Clone, PartialEq)]
pub enum SyncObject {
    Document {
        name: String,
        data: Value,
    },
    MapItem {
        map: String,
        key: String,
        data: Value,
    },
}

impl SyncObject {
    /// The object that Sync rate-limits (a map counts as one object for all its items).
    pub fn container(&self) -> &str {
        match self {
            SyncObject::Document { name, .. } => name,
            SyncObject::MapItem { map, .. } => map,
        }
    }
    pub fn id(&self) -> String {
        match self {
            SyncObject::Document { name, .. } => format!("document {name}"),
            SyncObject::MapItem { map, key, .. } => format!("map {map} item {key}"),
        }
    }
    pub fn data(&self) -> &Value {
        match self {
            SyncObject::Document { data, .. } | SyncObject::MapItem { data, .. } => data,
        }
    }
}

fn per_channel(s: &Summary, f: impl Fn(&ChannelLive) -> i64) -> Value {
    let mut m = serde_json::Map::new();
    for c in LEGACY_CHANNELS {
        m.insert(c.to_owned(), json!(0));
    }
    for (c, live) in &s.channels {
        m.insert(sync_size::name(c), json!(f(live)));
    }
    Value::Object(m)
}

/// A map keyed by names from callbacks, with the names bounded for Sync.
fn named<T: Serialize>(m: &BTreeMap<String, T>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (sync_size::name(k), json!(v)))
            .collect(),
    )
}

fn realtime(r: &Realtime) -> Value {
    json!({
        "tasks_by_status": named(&r.tasks_by_status),
        "total_tasks": r.total_tasks,
        "longest_task_waiting_age": r.longest_task_waiting_age,
        "longest_task_waiting_sid": r.longest_task_waiting_sid.as_deref().map(sync_size::name),
    })
}

/// Builds the Sync objects from a summary. `generated_at` is left out so that an
/// unchanged state gives unchanged objects (and no write). Names from callbacks are
/// bounded where they become keys or values (map keys to 320 characters, the rest to
/// 256; see [`sync_size`]); the objects' size is left to the publisher.
pub fn sync_objects(s: &Summary, sla: &Sla) -> Vec<SyncObject> {
    let mut out = vec![
        SyncObject::Document {
            name: "workspaceActiveTaskCount".into(),
            data: per_channel(s, |c| c.active_tasks),
        },
        SyncObject::Document {
            name: "workspaceCapacity".into(),
            data: per_channel(s, |c| c.capacity),
        },
        SyncObject::Document {
            name: "workspaceSummary".into(),
            data: json!({
                "timezone": s.timezone,
                "today_start": s.today_start,
                "realtime": realtime(&s.workspace.realtime),
                "today": s.workspace.today,
                "last_30_minutes": s.workspace.last_30_minutes,
                "channels": named(&s.channels),
                "by_channel": s.by_channel.iter().map(|(k, g)| (sync_size::name(k), json!({"today": g.today, "last_30_minutes": g.last_30_minutes}))).collect::<serde_json::Map<_, _>>(),
                "workers_by_activity": named(&s.workers_by_activity),
                "total_workers": s.total_workers,
                "available_workers": s.available_workers,
            }),
        },
    ];
    for (q, g) in &s.queues {
        out.push(SyncObject::MapItem {
            map: "taskQueueStats".into(),
            key: sync_size::bound(q, sync_size::MAX_KEY_CHARS).into_owned(),
            data: json!({
                // TaskRouter statistics names, as the original's Flex plugin reads them.
                "realtime": realtime(&g.realtime),
                "cumulative": {
                    "tasks_entered": g.today.tasks_created,
                    "tasks_canceled": g.today.tasks_abandoned + g.today.tasks_short_abandoned,
                    "tasks_completed": g.today.tasks_completed,
                    "reservations_accepted": g.today.tasks_accepted,
                    "wait_duration_until_accepted": {"avg": g.today.avg_speed_of_answer},
                    "wait_duration_until_canceled": {"avg": g.today.avg_abandon_time},
                    "service_level": g.today.service_level,
                    "tasks_abandoned": g.today.tasks_abandoned,
                    "tasks_short_abandoned": g.today.tasks_short_abandoned,
                    "avg_handle_time": g.today.avg_handle_time,
                    "avg_wrapup_time": g.today.avg_wrapup_time,
                    "avg_first_response_time": g.today.avg_first_response_time,
                    "avg_agent_response_time": g.today.avg_agent_response_time,
                },
                "today": g.today,
                "last_30_minutes": g.last_30_minutes,
                "sla_threshold_seconds": sla.threshold_for(Some(q), None),
            }),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn today_starts_at_local_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 3, 8, 15, 0, 0).unwrap();
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            crate::util::start_of_day(&ny, now),
            Utc.with_ymd_and_hms(2026, 3, 8, 5, 0, 0).unwrap()
        );
        let utc = chrono_tz::UTC;
        let late = Utc.with_ymd_and_hms(2026, 3, 8, 23, 59, 59).unwrap();
        assert_eq!(
            crate::util::start_of_day(&utc, late),
            Utc.with_ymd_and_hms(2026, 3, 8, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn service_level_percent() {
        assert_eq!(pct(3, 4), Some(75.0));
        assert_eq!(pct(1, 3), Some(33.33));
        assert_eq!(pct(0, 0), None);
    }

    #[test]
    fn legacy_documents_keep_every_channel_key() {
        let mut s = Summary::default();
        s.channels.insert(
            "whatsapp".into(),
            ChannelLive {
                active_tasks: 2,
                capacity: 5,
                ..ChannelLive::default()
            },
        );
        let objs = sync_objects(&s, &Sla::default());
        let active = objs[0].data();
        for k in LEGACY_CHANNELS {
            assert_eq!(active[k], 0);
        }
        assert_eq!(active["whatsapp"], 2);
        assert_eq!(objs[1].data()["whatsapp"], 5);
        for o in &objs {
            assert!(serde_json::to_vec(o.data()).unwrap().len() < 16 * 1024);
        }
    }
}
