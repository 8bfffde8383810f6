//! Reservations: their lifecycle from events, and the row derived from it.

use super::*;

/// Reservation status after an event, and its rank for tie-breaking.
fn reservation_status(event_type: &str) -> Option<(&'static str, u8)> {
    Some(match event_type {
        "reservation.created" => ("pending", 0),
        "reservation.accepted" => ("accepted", 1),
        "reservation.wrapup" => ("wrapping", 2),
        "reservation.completed" => ("completed", 3),
        "reservation.rejected" => ("rejected", 3),
        "reservation.timeout" => ("timeout", 3),
        "reservation.canceled" => ("canceled", 3),
        "reservation.rescinded" => ("rescinded", 3),
        "reservation.failed" => ("failed", 3),
        _ => return None,
    })
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservationState {
    pub task_sid: Option<Reg<String>>,
    pub worker_sid: Option<Reg<String>>,
    pub worker_name: Option<Reg<String>>,
    pub queue_sid: Option<Reg<String>>,
    pub status: Option<Reg<String>>,
    /// First instant of each status (ms in the clock).
    pub at: BTreeMap<String, Reg<()>>,
}

pub fn reservation_delta(e: &Event) -> Option<(String, ReservationState)> {
    if !e.event_type.starts_with("reservation.") {
        return None;
    }
    let sid = e.reservation_sid()?.to_owned();
    let st = reservation_status(&e.event_type);
    let rank = st.map(|s| s.1).unwrap_or(0);
    let mut s = ReservationState {
        task_sid: reg(e, rank, e.get_owned("TaskSid")),
        worker_sid: reg(e, rank, e.get_owned("WorkerSid")),
        worker_name: reg(e, rank, e.get_owned("WorkerName")),
        queue_sid: reg(e, rank, e.get_owned("TaskQueueSid")),
        status: reg(e, rank, st.map(|s| s.0.to_owned())),
        at: BTreeMap::new(),
    };
    if let Some((name, _)) = st {
        s.at.insert(name.to_owned(), Reg(clock(e, rank), ()));
    }
    Some((sid, s))
}

impl ReservationState {
    pub fn merge(&mut self, o: ReservationState) {
        latest(&mut self.task_sid, o.task_sid);
        latest(&mut self.worker_sid, o.worker_sid);
        latest(&mut self.worker_name, o.worker_name);
        latest(&mut self.queue_sid, o.queue_sid);
        latest(&mut self.status, o.status);
        for (k, r) in o.at {
            let mut cur = self.at.remove(&k);
            first(&mut cur, Some(r));
            if let Some(c) = cur {
                self.at.insert(k, c);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReservationRow {
    pub sid: String,
    pub task_sid: Option<String>,
    pub worker_sid: Option<String>,
    pub worker_name: Option<String>,
    pub task_queue_sid: Option<String>,
    pub status: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub timed_out_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub rescinded_at: Option<DateTime<Utc>>,
    pub wrapup_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

pub fn derive_reservation(sid: &str, s: &ReservationState) -> ReservationRow {
    let v = |r: &Option<Reg<String>>| r.as_ref().map(|r| r.1.clone());
    let at = |k: &str| s.at.get(k).and_then(|r| ms_to_time(r.ms()));
    ReservationRow {
        sid: sid.to_owned(),
        task_sid: v(&s.task_sid),
        worker_sid: v(&s.worker_sid),
        worker_name: v(&s.worker_name),
        task_queue_sid: v(&s.queue_sid),
        status: v(&s.status),
        created_at: at("pending"),
        accepted_at: at("accepted"),
        rejected_at: at("rejected"),
        timed_out_at: at("timeout"),
        canceled_at: at("canceled"),
        rescinded_at: at("rescinded"),
        wrapup_at: at("wrapping"),
        completed_at: at("completed"),
        failed_at: at("failed"),
    }
}
