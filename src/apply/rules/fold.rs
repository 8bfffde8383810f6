//! Folding a set of events: used by the tests, and the reference the store's batched
//! merge must agree with.

use super::*;

/// States contributed by a set of events (or by a REST read), per entity, not yet merged
/// with what is stored.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Deltas {
    pub tasks: BTreeMap<String, TaskState>,
    pub reservations: BTreeMap<String, ReservationState>,
    pub workers: BTreeMap<String, WorkerState>,
    pub channels: BTreeMap<ChannelKey, ChannelState>,
    pub activities: BTreeMap<String, ActivityState>,
}

impl Deltas {
    /// Adds what one event contributes to each entity it names.
    pub fn add(&mut self, e: &Event) {
        if let Some((k, d)) = task_delta(e) {
            self.tasks.entry(k).or_default().merge(d);
        }
        if let Some((k, d)) = reservation_delta(e) {
            self.reservations.entry(k).or_default().merge(d);
        }
        if let Some((k, d)) = worker_delta(e) {
            self.workers.entry(k).or_default().merge(d);
        }
        if let Some((k, d)) = channel_delta(e) {
            self.channels.entry(k).or_default().merge(d);
        }
        if let Some((k, d)) = activity_delta(e) {
            self.activities.entry(k).or_default().merge(d);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.reservations.is_empty()
            && self.workers.is_empty()
            && self.channels.is_empty()
            && self.activities.is_empty()
    }
}

/// Every row the rules define for a set of events, keyed by entity. The store reaches
/// the same rows incrementally; this folds everything at once.
#[derive(Debug, Default, PartialEq)]
pub struct Rows {
    pub tasks: BTreeMap<String, TaskRow>,
    pub reservations: BTreeMap<String, ReservationRow>,
    pub workers: BTreeMap<String, WorkerRow>,
    pub channels: BTreeMap<ChannelKey, ChannelRow>,
    pub activities: BTreeMap<String, ActivityRow>,
}

/// Folds events (in any order, duplicates allowed) into rows.
pub fn fold<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    sla: &Sla,
    available_override: &[String],
) -> Rows {
    let mut d = Deltas::default();
    for e in events {
        d.add(e);
    }
    let activity_rows: BTreeMap<String, ActivityRow> = d
        .activities
        .iter()
        .map(|(k, s)| (k.clone(), derive_activity(k, s)))
        .collect();
    Rows {
        tasks: d
            .tasks
            .iter()
            .map(|(k, s)| (k.clone(), derive_task(k, s, sla)))
            .collect(),
        reservations: d
            .reservations
            .iter()
            .map(|(k, s)| (k.clone(), derive_reservation(k, s)))
            .collect(),
        workers: d
            .workers
            .iter()
            .map(|(k, s)| {
                let act = s.activity.as_ref().map(|r| &r.1);
                let row = act.and_then(|a| activity_rows.get(&a.sid));
                let available = activity_available(
                    available_override,
                    act.and_then(|a| a.name.as_deref()),
                    row.and_then(|r| r.available),
                );
                (k.clone(), derive_worker(k, s, available))
            })
            .collect(),
        channels: d
            .channels
            .iter()
            .map(|(k, s)| (k.clone(), derive_channel(k, s)))
            .collect(),
        activities: activity_rows,
    }
}

/// The clock of a fact read from TaskRouter's REST API at `now_ms`: it is as new as the
/// read, so events that happened after the read win, and events before it lose.
pub fn rest_clock(now_ms: i64, rank: u8) -> Clock {
    Clock(now_ms, rank, Tie::REST)
}
