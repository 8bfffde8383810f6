//! Process metrics, registered in a [`prometheus_client`] registry and encoded in the
//! Prometheus text format (0.0.4) at `GET /metrics`.
//!
//! The hot path only touches atomics (counters, gauges) or one short lock (histograms);
//! what is known only at scrape time (queue gauges, resident memory, per-type and
//! per-job figures) is read then.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{self, ConstCounter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{self, ConstGauge};
use prometheus_client::metrics::histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A monotonic counter, registered. `fetch_add` keeps the spelling of the `AtomicU64`
/// it replaced so call sites did not change; the ordering is ignored (metrics are
/// statistics, never used to synchronise).
#[derive(Clone, Debug, Default)]
pub struct Counter(counter::Counter);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn inc_by(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
    /// Adds `n`; returns the previous value.
    pub fn fetch_add(&self, n: u64, _: Ordering) -> u64 {
        self.0.inc_by(n)
    }
}

/// An integer gauge, registered. `store`/`load` keep the spelling of the atomic it
/// replaced (the ordering is ignored, see [`Counter`]).
#[derive(Clone, Debug, Default)]
pub struct Gauge(gauge::Gauge);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.set(v);
    }
    pub fn get(&self) -> i64 {
        self.0.get()
    }
    pub fn store(&self, v: i64, _: Ordering) {
        self.0.set(v);
    }
    pub fn load(&self, _: Ordering) -> i64 {
        self.0.get()
    }
}

/// A histogram of durations, in seconds, with the service's fixed buckets.
#[derive(Clone, Debug)]
pub struct Histogram(histogram::Histogram);

/// Bucket bounds (seconds) of every duration histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram(histogram::Histogram::new(BUCKETS))
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

type FloatGauge = gauge::Gauge<f64, AtomicU64>;
type Labels = [(&'static str, &'static str); 1];

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

/// Every metric of the process. [`Metrics::render`] encodes them all.
pub struct Metrics {
    registry: Registry,
    pub ingress_accepted: Counter,
    pub ingress_bad_signature: Counter,
    pub ingress_bad_request: Counter,
    pub ingress_too_large: Counter,
    pub ingress_unavailable: Counter,
    pub queue_flushes: Counter,
    pub queue_flushed_entries: Counter,
    queue_flush_seconds: counter::Counter<f64, AtomicU64>,
    drain_yield_seconds: counter::Counter<f64, AtomicU64>,
    pub events_applied: Counter,
    pub events_duplicate: Counter,
    pub apply_batches: Counter,
    pub apply_errors: Counter,
    /// Events that failed to apply and were set aside for a later attempt (the retry
    /// tree), each time; transient whole-batch retries count in `apply_errors` only.
    pub apply_retries: Counter,
    /// Dead letters as the queue last counted them. Not exported: `/metrics` takes the
    /// figure from the [`QueueStatus`] given to [`Metrics::render`].
    pub dead_letters: AtomicU64,
    /// Unix ms of the last dispatcher loop turn: the liveness of the pipeline (read by
    /// the watchdog, not exported).
    pub dispatcher_heartbeat_ms: AtomicI64,
    /// 1 while the last Postgres apply succeeded, 0 while it is failing.
    pub postgres_up: Gauge,
    pub sync_writes: Counter,
    pub sync_errors: Counter,
    /// 1 while this instance holds the publisher lock.
    pub publisher_leader: Gauge,
    /// Duration of each Postgres transaction applying a batch.
    pub apply_seconds: Histogram,
    /// Duration of each Sync write (retries included).
    pub sync_write_seconds: Histogram,
    publish_lag_seconds: FloatGauge,
    queue_depth: Gauge,
    queue_retrying: Gauge,
    queue_dead_letters: Gauge,
    queue_oldest_age_seconds: FloatGauge,
    queue_disk_bytes: Gauge,
    /// New events applied, by event type (exported at scrape time).
    pub applied_by_type: Arc<Mutex<BTreeMap<String, u64>>>,
    /// User-defined jobs, by name (exported at scrape time).
    pub jobs: Arc<Mutex<BTreeMap<String, JobStatus>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        r.register_collector(Box::new(ProcessCollector));
        let ingress = Family::<Labels, counter::Counter>::default();
        register(
            &mut r,
            "trs_ingress_requests",
            "Callbacks answered, by outcome.",
            ingress.clone(),
        );
        // Every outcome is exported from the start, at 0.
        let outcome = |o: &'static str| Counter(ingress.get_or_create_owned(&[("outcome", o)]));
        let (ingress_accepted, ingress_bad_signature, ingress_bad_request) = (
            outcome("accepted"),
            outcome("bad_signature"),
            outcome("bad_request"),
        );
        let (ingress_too_large, ingress_unavailable) =
            (outcome("too_large"), outcome("unavailable"));
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            register(r, name, help, c.0.clone());
            c
        };
        let queue_flushes = counter(
            &mut r,
            "trs_queue_flushes",
            "Group-commit fsyncs of the queue.",
        );
        let queue_flushed_entries = counter(
            &mut r,
            "trs_queue_flushed_entries",
            "Appends made durable by those fsyncs.",
        );
        let queue_flush_seconds = counter::Counter::<f64, AtomicU64>::default();
        register(
            &mut r,
            "trs_queue_flush_seconds",
            "Time spent in queue fsyncs.",
            queue_flush_seconds.clone(),
        );
        let drain_yield_seconds = counter::Counter::<f64, AtomicU64>::default();
        register(
            &mut r,
            "trs_drain_yield_seconds",
            "Time the drain waited for a burst of callbacks to ease off (acks first).",
            drain_yield_seconds.clone(),
        );
        let events_applied = counter(
            &mut r,
            "trs_events_applied",
            "New events committed to Postgres.",
        );
        let events_duplicate = counter(
            &mut r,
            "trs_events_duplicate",
            "Events skipped because they were already stored.",
        );
        let apply_batches = counter(
            &mut r,
            "trs_apply_batches",
            "Postgres transactions that applied events.",
        );
        let apply_errors = counter(
            &mut r,
            "trs_apply_errors",
            "Failed attempts to apply a batch or an event.",
        );
        let apply_retries = counter(
            &mut r,
            "trs_apply_retries",
            "Events that failed to apply and wait for a later attempt.",
        );
        let sync_writes = counter(&mut r, "trs_sync_writes", "Objects written to Twilio Sync.");
        let sync_errors = counter(&mut r, "trs_sync_errors", "Failed or refused Sync writes.");
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            register(r, name, help, g.0.clone());
            g
        };
        let queue_depth = gauge(
            &mut r,
            "trs_queue_depth",
            "Entries waiting to be applied, retries included.",
        );
        let queue_retrying = gauge(
            &mut r,
            "trs_queue_retrying",
            "Entries waiting for a retry after a failure.",
        );
        let queue_dead_letters = gauge(
            &mut r,
            "trs_queue_dead_letters",
            "Entries set aside after too many failures.",
        );
        let queue_oldest_age_seconds = FloatGauge::default();
        register(
            &mut r,
            "trs_queue_oldest_age_seconds",
            "Age of the oldest waiting entry.",
            queue_oldest_age_seconds.clone(),
        );
        let queue_disk_bytes = gauge(&mut r, "trs_queue_disk_bytes", "Disk used by the queue.");
        let postgres_up = gauge(
            &mut r,
            "trs_postgres_up",
            "1 while applying to Postgres succeeds.",
        );
        let publisher_leader = gauge(
            &mut r,
            "trs_publisher_leader",
            "1 while this instance publishes to Sync.",
        );
        let apply_seconds = Histogram::default();
        register(
            &mut r,
            "trs_apply_seconds",
            "Postgres transactions applying a batch.",
            apply_seconds.0.clone(),
        );
        let sync_write_seconds = Histogram::default();
        register(
            &mut r,
            "trs_sync_write_seconds",
            "Writes to Twilio Sync, retries included.",
            sync_write_seconds.0.clone(),
        );
        let publish_lag_seconds = FloatGauge::default();
        register(
            &mut r,
            "trs_publish_lag_seconds",
            "From a summary's computation to the end of its publication (last round).",
            publish_lag_seconds.clone(),
        );
        let applied_by_type = Arc::new(Mutex::new(BTreeMap::new()));
        r.register_collector(Box::new(ByTypeCollector(applied_by_type.clone())));
        let jobs = Arc::new(Mutex::new(BTreeMap::new()));
        r.register_collector(Box::new(JobsCollector(jobs.clone())));
        Metrics {
            registry: r,
            ingress_accepted,
            ingress_bad_signature,
            ingress_bad_request,
            ingress_too_large,
            ingress_unavailable,
            queue_flushes,
            queue_flushed_entries,
            queue_flush_seconds,
            drain_yield_seconds,
            events_applied,
            events_duplicate,
            apply_batches,
            apply_errors,
            apply_retries,
            dead_letters: AtomicU64::new(0),
            dispatcher_heartbeat_ms: AtomicI64::new(0),
            postgres_up,
            sync_writes,
            sync_errors,
            publisher_leader,
            apply_seconds,
            sync_write_seconds,
            publish_lag_seconds,
            queue_depth,
            queue_retrying,
            queue_dead_letters,
            queue_oldest_age_seconds,
            queue_disk_bytes,
            applied_by_type,
            jobs,
        }
    }
}

impl Metrics {
    /// Marks the dispatcher alive now (the watchdog restarts the process when this
    /// stops moving).
    pub fn beat_dispatcher(&self) {
        self.dispatcher_heartbeat_ms
            .store(crate::util::now_ms(), Ordering::Relaxed);
    }

    pub fn observe_flush(&self, entries: u64, took: Duration) {
        self.queue_flushes.inc();
        self.queue_flushed_entries.inc_by(entries);
        self.queue_flush_seconds.inc_by(took.as_secs_f64());
    }

    /// Records time the drain spent waiting for a burst to ease off.
    pub fn observe_drain_yield(&self, waited: Duration) {
        self.drain_yield_seconds.inc_by(waited.as_secs_f64());
    }

    /// Records the lag of the last publication round.
    pub fn set_publish_lag(&self, lag: Duration) {
        self.publish_lag_seconds.set(lag.as_secs_f64());
    }

    /// Encodes all metrics plus the queue gauges given, in the Prometheus text format
    /// ([`CONTENT_TYPE`]). Label values are escaped by the encoder.
    pub fn render(&self, q: &QueueStatus) -> String {
        let gauge = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        gauge(&self.queue_depth, q.depth);
        gauge(&self.queue_retrying, q.retrying);
        gauge(&self.queue_dead_letters, q.dead_letters);
        gauge(&self.queue_disk_bytes, q.disk_bytes);
        self.queue_oldest_age_seconds
            .set(q.oldest_age_seconds.unwrap_or(0.0));
        let mut s = String::new();
        // Writing to a String cannot fail; an encoder error would leave it partial,
        // which a scraper reports.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry)
        {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        s
    }
}

/// Registers `metric`; `help` is written as it is shown (the registry adds the final
/// period itself).
fn register(r: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    r.register(name, help.strip_suffix('.').unwrap_or(help), metric);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resident memory, read at each scrape (nothing exported where it cannot be read).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(kib) = resident_kib() else {
            return Ok(());
        };
        let g = ConstGauge::new(i64::try_from(kib.saturating_mul(1024)).unwrap_or(i64::MAX));
        let m = enc.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of this process.",
            None,
            g.metric_type(),
        )?;
        g.encode(m)
    }
}

/// `trs_events_applied_by_type_total{type}`, from the dispatcher's bounded map.
#[derive(Debug)]
struct ByTypeCollector(Arc<Mutex<BTreeMap<String, u64>>>);

impl Collector for ByTypeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let by_type = lock(&self.0);
        let mut m = enc.encode_descriptor(
            "trs_events_applied_by_type",
            "New events applied, by event type.",
            None,
            MetricType::Counter,
        )?;
        for (t, n) in by_type.iter() {
            ConstCounter::new(*n).encode(m.encode_family(&[("type", t.as_str())])?)?;
        }
        Ok(())
    }
}

/// The four per-job families, from the job runners' statuses; nothing without jobs.
#[derive(Debug)]
struct JobsCollector(Arc<Mutex<BTreeMap<String, JobStatus>>>);

impl Collector for JobsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let jobs = lock(&self.0);
        if jobs.is_empty() {
            return Ok(());
        }
        fn label(name: &str) -> [(&'static str, &str); 1] {
            [("job", name)]
        }
        let mut m = enc.encode_descriptor(
            "trs_job_runs",
            "Runs of each user-defined job.",
            None,
            MetricType::Counter,
        )?;
        for (name, st) in jobs.iter() {
            ConstCounter::new(st.runs).encode(m.encode_family(&label(name))?)?;
        }
        let mut m = enc.encode_descriptor(
            "trs_job_failures",
            "Failed runs of each job.",
            None,
            MetricType::Counter,
        )?;
        for (name, st) in jobs.iter() {
            ConstCounter::new(st.failures).encode(m.encode_family(&label(name))?)?;
        }
        let mut m = enc.encode_descriptor(
            "trs_job_last_duration_seconds",
            "Duration of each job's last run.",
            None,
            MetricType::Gauge,
        )?;
        for (name, st) in jobs.iter() {
            let secs = st.last_duration_ms.unwrap_or(0) as f64 / 1000.0;
            ConstGauge::new(secs).encode(m.encode_family(&label(name))?)?;
        }
        let mut m = enc.encode_descriptor(
            "trs_job_last_run_ok",
            "1 when the job's last run succeeded.",
            None,
            MetricType::Gauge,
        )?;
        for (name, st) in jobs.iter() {
            let ok = i64::from(st.last_error.is_none());
            ConstGauge::new(ok).encode(m.encode_family(&label(name))?)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn status() -> QueueStatus {
        QueueStatus {
            depth: 3,
            retrying: 1,
            dead_letters: 0,
            oldest_age_seconds: Some(1.5),
            disk_bytes: 4096,
        }
    }

    /// The names, types and labels dashboards and tests read, exactly as before the
    /// registry (Prometheus text 0.0.4: counters typed under their `_total` name, no
    /// `# EOF`).
    #[test]
    fn exposition_keeps_every_name_type_and_label() {
        let m = Metrics::default();
        m.ingress_accepted.fetch_add(2, Relaxed);
        m.publisher_leader.store(1, Relaxed);
        m.apply_seconds.observe(Duration::from_millis(3));
        m.apply_retries.inc();
        m.observe_flush(5, Duration::from_millis(250));
        lock(&m.applied_by_type).insert("task.created".into(), 7);
        {
            let mut jobs = lock(&m.jobs);
            jobs.insert(
                "slow".into(),
                JobStatus {
                    runs: 2,
                    failures: 1,
                    last_error: Some("boom".into()),
                    ..JobStatus::default()
                },
            );
            jobs.insert(
                "fast".into(),
                JobStatus {
                    runs: 1,
                    last_duration_ms: Some(1500),
                    ..JobStatus::default()
                },
            );
        }
        let text = m.render(&status());
        for line in [
            "# TYPE trs_ingress_requests_total counter",
            "trs_ingress_requests_total{outcome=\"accepted\"} 2",
            "trs_ingress_requests_total{outcome=\"bad_signature\"} 0",
            "trs_ingress_requests_total{outcome=\"bad_request\"} 0",
            "trs_ingress_requests_total{outcome=\"too_large\"} 0",
            "trs_ingress_requests_total{outcome=\"unavailable\"} 0",
            "# HELP trs_queue_flushes_total Group-commit fsyncs of the queue.",
            "trs_queue_flushes_total 1",
            "trs_queue_flushed_entries_total 5",
            "trs_queue_flush_seconds_total 0.25",
            "trs_events_applied_total 0",
            "trs_events_duplicate_total 0",
            "trs_apply_batches_total 0",
            "trs_apply_errors_total 0",
            "trs_apply_retries_total 1",
            "trs_sync_writes_total 0",
            "trs_sync_errors_total 0",
            "# TYPE trs_queue_depth gauge",
            "trs_queue_depth 3",
            "trs_queue_retrying 1",
            "trs_queue_dead_letters 0",
            "trs_queue_oldest_age_seconds 1.5",
            "trs_queue_disk_bytes 4096",
            "trs_postgres_up 0",
            "trs_publisher_leader 1",
            "# TYPE trs_apply_seconds histogram",
            "trs_apply_seconds_bucket{le=\"0.001\"} 0",
            "trs_apply_seconds_bucket{le=\"0.005\"} 1",
            "trs_apply_seconds_bucket{le=\"1\"} 1",
            "trs_apply_seconds_bucket{le=\"+Inf\"} 1",
            "trs_apply_seconds_count 1",
            "trs_sync_write_seconds_count 0",
            "# TYPE trs_publish_lag_seconds gauge",
            "# TYPE trs_events_applied_by_type_total counter",
            "trs_events_applied_by_type_total{type=\"task.created\"} 7",
            "trs_job_runs_total{job=\"slow\"} 2",
            "trs_job_failures_total{job=\"slow\"} 1",
            "trs_job_last_duration_seconds{job=\"fast\"} 1.5",
            "trs_job_last_run_ok{job=\"slow\"} 0",
            "trs_job_last_run_ok{job=\"fast\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        if resident_kib().is_some() {
            assert!(text
                .lines()
                .any(|l| l.starts_with("process_resident_memory_bytes ")));
        }
        assert!(!text.contains("# EOF"), "{text}");
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn label_values_are_escaped_not_mangled() {
        let m = Metrics::default();
        lock(&m.jobs).insert("a\"b\\c\nd".into(), JobStatus::default());
        let text = m.render(&status());
        assert!(
            text.contains("trs_job_runs_total{job=\"a\\\"b\\\\c\\nd\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn without_jobs_no_job_families() {
        let text = Metrics::default().render(&status());
        assert!(!text.contains("trs_job_"), "{text}");
    }
}
