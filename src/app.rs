//! Composition: opens the queue, builds the Postgres pool, and runs every stage until
//! the shutdown future resolves: the HTTP listeners (public, and admin when configured),
//! the group-commit flusher, the dispatcher and its workers, the message-metric
//! refresher, the live summaries, and, as configured, the Sync publisher (and its
//! `workerStats` map), user jobs, the TaskRouter REST sync and reconciliation, the
//! Conversations fetch, retention, the heartbeat and the catch-up backfill.
//!
//! Shutdown order keeps every promise: stop accepting; let in-flight requests finish
//! (their appends are flushed by the still-running flusher, so each 204 sent is
//! durable); final flush; workers finish the transaction in hand; exit. Whatever is
//! not yet in Postgres stays queued for the next start.

use crate::apply::dispatch;
use crate::apply::store::{self, Store};
use crate::config::Config;
use crate::ingest::{self, AppState, Settings};
use crate::maintenance::retention;
use crate::metrics::Metrics;
use crate::publish::jobs;
use crate::publish::live;
use crate::publish::worker_stats::{self, WorkerStats};
use crate::publish::{self, sync_writer, Publisher, SyncWriter};
use crate::queue::Queue;
use crate::twilio::backfill::{self, Backfill, Sink};
use crate::twilio::conversations;
use crate::twilio::rest_sync::{self, RestSync};
use crate::twilio::{self, TwilioClient};
use anyhow::Context;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the service on `listener` until `shutdown` resolves. The listener and the
/// shutdown future are injected so tests can run the real server.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    cfg.prepare_queue_dir().map_err(anyhow::Error::msg)?;
    let queue = Queue::open(
        &cfg.queue.path,
        cfg.queue.cache_mb,
        cfg.queue.max_backlog,
        metrics.clone(),
    )?;
    let pool = store::pool(&cfg.postgres)?;
    let store = Store::new(pool, store::Settings::from_config(&cfg));
    if let Err(e) = store.ping().await {
        // Not fatal: callbacks are queued and applied once Postgres answers.
        tracing::warn!(error = %e, postgres = %cfg.postgres_url_redacted(),
            "Postgres is not reachable yet; ingesting into the queue meanwhile");
    } else if let Ok(false) = store.autovacuum_on().await {
        tracing::warn!(
            "Postgres runs with autovacuum = off: the state tables and the mark tables bloat \
             and the drain slows down as they grow; turn it on, or VACUUM the database often"
        );
    }
    if !cfg.server.verify_signatures {
        tracing::warn!("server.verify_signatures = false: ANYONE can post events. Use only for local experiments.");
    }
    let status = queue.status();
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        queue = %cfg.queue.path.display(),
        backlog = status.depth,
        dead_letters = status.dead_letters,
        workers = cfg.queue.workers,
        "taskrouter-summarizer serving"
    );

    let pipeline_stop = CancellationToken::new();
    let flusher = tokio::spawn(queue.clone().run_flusher(pipeline_stop.clone()));
    let pipeline = tokio::spawn(dispatch::run(
        queue.clone(),
        store.clone(),
        metrics.clone(),
        dispatch::Settings {
            workers: cfg.queue.workers,
            batch_size: cfg.queue.batch_size,
            in_flight_bytes: (cfg.queue.in_flight_mb << 20) as usize,
            max_attempts: cfg.queue.max_attempts,
        },
        pipeline_stop.clone(),
    ));
    let watchdog = tokio::spawn(watchdog(metrics.clone()));
    let mut background = vec![
        tokio::spawn(dispatch::run_message_metrics(
            store.clone(),
            queue.clone(),
            pipeline_stop.clone(),
        )),
        tokio::spawn(dispatch::run_rollups(
            store.clone(),
            queue.clone(),
            pipeline_stop.clone(),
        )),
    ];
    let twilio = TwilioClient::new(twilio::ClientSettings::from_config(&cfg))?;
    let hub = Arc::new(live::Hub::default());
    background.push(tokio::spawn(live::run(
        hub.clone(),
        store.pool().clone(),
        cfg.sla.clone(),
        cfg.publish.schedule.parse()?,
        pipeline_stop.clone(),
    )));
    if !cfg.twilio.sync_service_sid.is_empty() {
        let p = Publisher::new(
            publish::Settings::from_config(&cfg),
            twilio.clone(),
            metrics.clone(),
        );
        background.push(stage(
            "publisher",
            p.run(hub.latest.subscribe(), pipeline_stop.clone()),
        ));
        if cfg.publish.worker_stats {
            // Its own task on the publisher's ticks, writing only while this instance
            // holds the publisher lock: a slow or rate-limited map never delays the
            // summaries.
            let w = WorkerStats::new(
                worker_stats::Settings::from_config(&cfg),
                store.pool().clone(),
                twilio.clone(),
                metrics.clone(),
            );
            background.push(stage(
                "worker-stats",
                w.run(hub.latest.subscribe(), pipeline_stop.clone()),
            ));
        }
        background.extend(jobs::spawn_all(
            &jobs::Settings::from_config(&cfg),
            store.pool().clone(),
            SyncWriter::new(sync_writer::Settings::from_config(&cfg), twilio.clone()),
            metrics.clone(),
            pipeline_stop.clone(),
        ));
    } else {
        tracing::info!("twilio.sync_service_sid is empty: not publishing to Sync");
    }
    if cfg.conversations.fetch_on_complete && cfg.has_credentials() {
        background.push(stage(
            "conversations",
            conversations::run(twilio.clone(), store.clone(), pipeline_stop.clone()),
        ));
    }
    background.push(stage(
        "retention",
        retention::run(cfg.retention.clone(), store.clone(), pipeline_stop.clone()),
    ));
    if cfg.rest_configured() {
        let b = Backfill::new(
            backfill::Settings::from_config(&cfg),
            twilio.clone(),
            store.clone(),
            Sink::Queue(queue.clone()),
        );
        background.push(stage(
            "catch-up",
            backfill::run_in_service(b, pipeline_stop.clone()),
        ));
    } else {
        tracing::info!(
            "no TaskRouter credentials and workspace: no catch-up of events missed while down"
        );
    }
    if !cfg.twilio.workspace_sid.is_empty() {
        let sync = RestSync::new(
            rest_sync::Settings::from_config(&cfg),
            twilio,
            store.clone(),
        );
        background.push(stage(
            "rest-sync",
            rest_sync::run(sync, pipeline_stop.clone()),
        ));
    } else {
        tracing::info!("twilio.workspace_sid is empty: no TaskRouter REST sync");
    }
    let state = Arc::new(AppState::new(
        Settings::from(&cfg),
        queue.clone(),
        store,
        metrics,
        hub.clone(),
    ));
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    let http_stop = CancellationToken::new();
    let admin = if cfg.server.admin_listen.is_empty() {
        None
    } else {
        let l = TcpListener::bind(&cfg.server.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.server.admin_listen))?;
        tracing::info!(admin_listen = %cfg.server.admin_listen, "admin endpoints on their own listener");
        let stop = http_stop.clone();
        Some(tokio::spawn(ingest::serve(
            l,
            ingest::Role::Admin,
            state.clone(),
            64,
            grace,
            async move { stop.cancelled().await },
        )))
    };
    // The public listener serves the admin side only when a token guards it and there
    // is no admin listener (deployments configured that way before admin_listen had a
    // default); otherwise only the webhooks and /healthz.
    let role = if admin.is_none() && !cfg.server.admin_token.is_empty() {
        ingest::Role::Both
    } else {
        ingest::Role::Public
    };
    for w in cfg.exposure_warnings() {
        tracing::warn!("{w}");
    }
    ingest::serve(
        listener,
        role,
        state,
        cfg.server.max_connections,
        grace,
        shutdown,
    )
    .await;
    http_stop.cancel();
    if let Some(a) = admin {
        let _ = a.await;
    }

    tracing::info!("shutting down: no longer accepting; draining");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    pipeline_stop.cancel();
    flusher.await.context("flusher task")?;
    if tokio::time::timeout(Duration::from_secs(30), pipeline)
        .await
        .is_err()
    {
        tracing::warn!("workers did not stop within 30 s; unapplied events stay queued");
    }
    watchdog.abort();
    for b in background {
        let _ = b.await;
    }
    queue.flush().context("final queue flush")?;
    let status = queue.status();
    tracing::info!(backlog = status.depth, "stopped");
    Ok(())
}

/// Feeds systemd's watchdog while the dispatcher loop is alive (it beats at least
/// once a second, also while Postgres is down); a hung pipeline gets restarted.
async fn watchdog(metrics: Arc<Metrics>) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    loop {
        tokio::time::sleep(period).await;
        let beat = metrics.dispatcher_heartbeat_ms.load(Relaxed);
        let age = chrono::Utc::now().timestamp_millis() - beat;
        if age < (usec / 1000) as i64 {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!(
                stalled_ms = age,
                "dispatcher stalled; not feeding the watchdog"
            );
        }
    }
}

/// Spawns a background stage inside a span naming it, so that its log lines (and those
/// of the calls it makes) say which stage they come from.
fn stage<F>(name: &'static str, f: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(f.instrument(tracing::info_span!("stage", name)))
}
