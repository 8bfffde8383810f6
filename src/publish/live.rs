//! The live summary: computed once per `publish.schedule` tick, whatever the number of
//! consumers. The Sync publisher, the wallboard's Server-Sent Events and `/api/summary`
//! all read the same value (one computation, many viewers, no polling storm).

use crate::config::Sla;
use crate::publish::summary::{self, Summary};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Minutes of history kept for the wallboard's sparklines.
pub const HISTORY_POINTS: usize = 480;

/// One minute of history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub t: String,
    /// Service level today, percent.
    pub service_level: Option<f64>,
    /// Tasks created during the minute.
    pub created: i64,
    /// Tasks abandoned during the minute.
    pub abandoned: i64,
    /// Tasks waiting (pending or reserved) at the end of the minute.
    pub waiting: i64,
}

pub struct Hub {
    pub latest: watch::Sender<Option<Arc<Summary>>>,
    history: Mutex<VecDeque<Point>>,
    pub points: broadcast::Sender<Point>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            latest: watch::channel(None).0,
            history: Mutex::new(VecDeque::new()),
            points: broadcast::channel(16).0,
        }
    }
}

impl Hub {
    pub fn history(&self) -> Vec<Point> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, p: Point) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.push_back(p.clone());
        while h.len() > HISTORY_POINTS {
            h.pop_front();
        }
        drop(h);
        let _ = self.points.send(p);
    }
}

fn waiting(s: &Summary) -> i64 {
    let by = &s.workspace.realtime.tasks_by_status;
    by.get("pending").copied().unwrap_or(0) + by.get("reserved").copied().unwrap_or(0)
}

/// Computes the summary on every tick of `schedule` until `stop`.
pub async fn run(
    hub: Arc<Hub>,
    pool: Pool,
    sla: Sla,
    schedule: cron::Schedule,
    stop: CancellationToken,
) {
    let mut last_minute: Option<i64> = None;
    let mut prev_totals: Option<(String, i64, i64)> = None;
    loop {
        let wait = crate::schedule::until_next_tick(&schedule);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        let now = chrono::Utc::now();
        let s = match summary::compute(&pool, &sla, now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot compute summaries");
                continue;
            }
        };
        let minute = now.timestamp() / 60;
        if last_minute != Some(minute) {
            last_minute = Some(minute);
            let (created, abandoned) = (
                s.workspace.today.tasks_created,
                s.workspace.today.tasks_abandoned,
            );
            // Per-minute volume from today's running totals (a new day starts from 0).
            let (dc, da) = match &prev_totals {
                Some((day, c, a)) if *day == s.today_start => {
                    ((created - c).max(0), (abandoned - a).max(0))
                }
                _ => (0, 0),
            };
            prev_totals = Some((s.today_start.clone(), created, abandoned));
            hub.push(Point {
                t: now.to_rfc3339(),
                service_level: s.workspace.today.service_level,
                created: dc,
                abandoned: da,
                waiting: waiting(&s),
            });
        }
        hub.latest.send_replace(Some(Arc::new(s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded() {
        let hub = Hub::default();
        for i in 0..(HISTORY_POINTS + 20) {
            hub.push(Point {
                t: i.to_string(),
                service_level: None,
                created: 0,
                abandoned: 0,
                waiting: 0,
            });
        }
        let h = hub.history();
        assert_eq!(h.len(), HISTORY_POINTS);
        assert_eq!(h[0].t, "20");
    }
}
