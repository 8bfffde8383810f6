//! Process metrics, rendered in the Prometheus text format at `GET /metrics`.
//! Plain atomics: cheap on the hot path, no registry to lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A Prometheus histogram with fixed buckets (seconds).
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Relaxed)
            );
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// Queue depth and age, for `/readyz`, `/metrics` and `queue status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStatus {
    pub depth: u64,
    pub retrying: u64,
    pub dead_letters: u64,
    pub oldest_age_seconds: Option<f64>,
    pub disk_bytes: u64,
}

/// What `/metrics` and `/readyz` say about a job.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobStatus {
    pub last_run_at: Option<String>,
    pub last_duration_ms: Option<u64>,
    pub last_error: Option<String>,
    /// The last run published, but without entries over Sync's 16 KiB limit (named).
    pub last_warning: Option<String>,
    pub last_success_at: Option<String>,
    pub runs: u64,
    pub failures: u64,
}

#[derive(Default)]
pub struct Metrics {
    pub ingress_accepted: AtomicU64,
    pub ingress_bad_signature: AtomicU64,
    pub ingress_bad_request: AtomicU64,
    pub ingress_too_large: AtomicU64,
    pub ingress_unavailable: AtomicU64,
    pub queue_flushes: AtomicU64,
    pub queue_flushed_entries: AtomicU64,
    pub queue_flush_micros: AtomicU64,
    pub events_applied: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub apply_batches: AtomicU64,
    pub apply_errors: AtomicU64,
    pub apply_retries: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Unix ms of the last dispatcher loop turn: the liveness of the pipeline.
    pub dispatcher_heartbeat_ms: AtomicI64,
    /// 1 while the last Postgres apply succeeded, 0 while it is failing.
    pub postgres_up: AtomicU64,
    pub sync_writes: AtomicU64,
    pub sync_errors: AtomicU64,
    /// 1 while this instance holds the publisher lock.
    pub publisher_leader: AtomicU64,
    /// Duration of each Postgres transaction applying a batch.
    pub apply_seconds: Histogram,
    /// Duration of each Sync write (retries included).
    pub sync_write_seconds: Histogram,
    /// From a summary's computation to the end of its publication, last round (ms).
    pub publish_lag_ms: AtomicU64,
    /// New events applied, by event type.
    pub applied_by_type: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// User-defined jobs, by name.
    pub jobs: std::sync::Mutex<std::collections::BTreeMap<String, JobStatus>>,
}

impl Metrics {
    pub fn observe_flush(&self, entries: u64, took: Duration) {
        self.queue_flushes.fetch_add(1, Relaxed);
        self.queue_flushed_entries.fetch_add(entries, Relaxed);
        self.queue_flush_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Renders all metrics plus the queue gauges given.
    pub fn render(&self, q: &QueueStatus) -> String {
        let mut s = String::new();
        let c = |a: &AtomicU64| a.load(Relaxed).to_string();
        if let Some(kib) = resident_kib() {
            metric(
                &mut s,
                "gauge",
                "process_resident_memory_bytes",
                "Resident memory of this process.",
                &[("", (kib * 1024).to_string())],
            );
        }
        metric(
            &mut s,
            "counter",
            "trs_ingress_requests_total",
            "Callbacks answered, by outcome.",
            &[
                ("{outcome=\"accepted\"}", c(&self.ingress_accepted)),
                (
                    "{outcome=\"bad_signature\"}",
                    c(&self.ingress_bad_signature),
                ),
                ("{outcome=\"bad_request\"}", c(&self.ingress_bad_request)),
                ("{outcome=\"too_large\"}", c(&self.ingress_too_large)),
                ("{outcome=\"unavailable\"}", c(&self.ingress_unavailable)),
            ],
        );
        for (name, help, v) in [
            (
                "trs_queue_flushes_total",
                "Group-commit fsyncs of the queue.",
                c(&self.queue_flushes),
            ),
            (
                "trs_queue_flushed_entries_total",
                "Appends made durable by those fsyncs.",
                c(&self.queue_flushed_entries),
            ),
            (
                "trs_queue_flush_seconds_total",
                "Time spent in queue fsyncs.",
                format!("{}", self.queue_flush_micros.load(Relaxed) as f64 / 1e6),
            ),
            (
                "trs_events_applied_total",
                "New events committed to Postgres.",
                c(&self.events_applied),
            ),
            (
                "trs_events_duplicate_total",
                "Events skipped because they were already stored.",
                c(&self.events_duplicate),
            ),
            (
                "trs_apply_batches_total",
                "Postgres transactions that applied events.",
                c(&self.apply_batches),
            ),
            (
                "trs_apply_errors_total",
                "Failed attempts to apply a batch or an event.",
                c(&self.apply_errors),
            ),
            (
                "trs_sync_writes_total",
                "Objects written to Twilio Sync.",
                c(&self.sync_writes),
            ),
            (
                "trs_sync_errors_total",
                "Failed or refused Sync writes.",
                c(&self.sync_errors),
            ),
        ] {
            metric(&mut s, "counter", name, help, &[("", v)]);
        }
        for (name, help, v) in [
            (
                "trs_queue_depth",
                "Entries waiting to be applied, retries included.",
                q.depth.to_string(),
            ),
            (
                "trs_queue_retrying",
                "Entries waiting for a retry after a failure.",
                q.retrying.to_string(),
            ),
            (
                "trs_queue_dead_letters",
                "Entries set aside after too many failures.",
                q.dead_letters.to_string(),
            ),
            (
                "trs_queue_oldest_age_seconds",
                "Age of the oldest waiting entry.",
                format!("{}", q.oldest_age_seconds.unwrap_or(0.0)),
            ),
            (
                "trs_queue_disk_bytes",
                "Disk used by the queue.",
                q.disk_bytes.to_string(),
            ),
            (
                "trs_postgres_up",
                "1 while applying to Postgres succeeds.",
                c(&self.postgres_up),
            ),
            (
                "trs_publisher_leader",
                "1 while this instance publishes to Sync.",
                c(&self.publisher_leader),
            ),
        ] {
            metric(&mut s, "gauge", name, help, &[("", v)]);
        }
        self.apply_seconds.render(
            &mut s,
            "trs_apply_seconds",
            "Postgres transactions applying a batch.",
        );
        self.sync_write_seconds.render(
            &mut s,
            "trs_sync_write_seconds",
            "Writes to Twilio Sync, retries included.",
        );
        metric(
            &mut s,
            "gauge",
            "trs_publish_lag_seconds",
            "From a summary's computation to the end of its publication (last round).",
            &[(
                "",
                format!("{}", self.publish_lag_ms.load(Relaxed) as f64 / 1000.0),
            )],
        );
        {
            let by_type = self
                .applied_by_type
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let samples: Vec<(String, String)> = by_type
                .iter()
                .map(|(t, n)| {
                    (
                        format!("{{type=\"{}\"}}", t.replace(['"', '\\', '\n'], "_")),
                        n.to_string(),
                    )
                })
                .collect();
            let refs: Vec<(&str, String)> = samples
                .iter()
                .map(|(l, v)| (l.as_str(), v.clone()))
                .collect();
            metric(
                &mut s,
                "counter",
                "trs_events_applied_by_type_total",
                "New events applied, by event type.",
                &refs,
            );
        }
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if !jobs.is_empty() {
            let per_job = |f: &dyn Fn(&JobStatus) -> String| -> Vec<(String, String)> {
                jobs.iter()
                    .map(|(n, st)| (format!("{{job=\"{}\"}}", n.replace('"', "'")), f(st)))
                    .collect()
            };
            for (name, kind, help, samples) in [
                (
                    "trs_job_runs_total",
                    "counter",
                    "Runs of each user-defined job.",
                    per_job(&|st| st.runs.to_string()),
                ),
                (
                    "trs_job_failures_total",
                    "counter",
                    "Failed runs of each job.",
                    per_job(&|st| st.failures.to_string()),
                ),
                (
                    "trs_job_last_duration_seconds",
                    "gauge",
                    "Duration of each job's last run.",
                    per_job(&|st| format!("{}", st.last_duration_ms.unwrap_or(0) as f64 / 1000.0)),
                ),
                (
                    "trs_job_last_run_ok",
                    "gauge",
                    "1 when the job's last run succeeded.",
                    per_job(&|st| {
                        if st.last_error.is_none() {
                            "1".into()
                        } else {
                            "0".into()
                        }
                    }),
                ),
            ] {
                let refs: Vec<(&str, String)> = samples
                    .iter()
                    .map(|(l, v)| (l.as_str(), v.clone()))
                    .collect();
                metric(&mut s, kind, name, help, &refs);
            }
        }
        s
    }
}

fn metric(out: &mut String, kind: &str, name: &str, help: &str, samples: &[(&str, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// VmRSS from /proc/self/status (Linux), in KiB.
fn resident_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
