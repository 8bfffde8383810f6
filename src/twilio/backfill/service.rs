//! Backfill inside `serve`: the heartbeat that measures downtime, the catch-up of the
//! gap at start, and the periodic reconciliation runs.

use super::{window, Backfill, BackfillError, Run, Window};
use crate::apply::store::{Store, StoreError};
use crate::config::Config;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// This instance's name in `instance_heartbeats`: host and queue directory.
pub fn instance_name(cfg: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let path = std::fs::canonicalize(&cfg.queue.path).unwrap_or_else(|_| cfg.queue.path.clone());
    format!("{host}:{}", path.display())
}

/// Inside `serve`: records this instance's heartbeat every 30 s and, once at start,
/// backfills the gap since the previous heartbeat (when it exceeds
/// `backfill.catch_up_min_gap_secs`), resumes catch-ups a previous run left unfinished,
/// and then, if configured, reconciles the last `reconcile_window_minutes` every
/// `reconcile_every_minutes`. Everything goes through the queue.
pub async fn run_in_service(backfill: Backfill, stop: CancellationToken) {
    let name = backfill.settings.instance.clone();
    let opts = backfill.settings.options.clone();
    // The previous heartbeat must be read before this start writes its own.
    let previous = loop {
        match read_heartbeat(&backfill.store, &name).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the heartbeat yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let started = Utc::now();
    let hb = tokio::spawn(heartbeat(backfill.store.clone(), name, stop.clone()));
    if opts.catch_up {
        let mut runs = backfill.unfinished("catch-up").await.unwrap_or_default();
        if let Some(last) = previous {
            let gap = started - last;
            if gap.num_seconds() >= opts.catch_up_min_gap_secs as i64 {
                let since = last - chrono::Duration::seconds(opts.overlap_secs as i64);
                match window(since, started, started) {
                    Ok(Window { since, until, note }) => {
                        if let Some(n) = note {
                            tracing::warn!("{n}");
                        }
                        tracing::info!(since = %since.to_rfc3339(), until = %until.to_rfc3339(),
                            gap_secs = gap.num_seconds(), "catching up on events missed while down");
                        match backfill
                            .create("catch-up", since, until, slice(&opts))
                            .await
                        {
                            Ok(r) => runs.push(r),
                            Err(e) => tracing::error!(error = %e, "cannot record a catch-up run"),
                        }
                    }
                    Err(e) => tracing::debug!("{e}"),
                }
            }
        }
        for r in runs {
            execute(&backfill, r, &stop).await;
        }
    }
    if opts.reconcile_every_minutes > 0 {
        let every = Duration::from_secs(opts.reconcile_every_minutes * 60);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => break,
            }
            let now = Utc::now();
            let since = now - chrono::Duration::minutes(opts.reconcile_window_minutes as i64);
            match backfill.create("reconcile", since, now, slice(&opts)).await {
                Ok(r) => execute(&backfill, r, &stop).await,
                Err(e) => tracing::warn!(error = %e, "cannot start a reconciliation run"),
            }
        }
    }
    let _ = hb.await;
}

fn slice(opts: &crate::config::Backfill) -> chrono::Duration {
    chrono::Duration::minutes(opts.slice_minutes.max(1) as i64)
}

async fn execute(backfill: &Backfill, run: Run, stop: &CancellationToken) {
    let id = run.id;
    let source = run.source.clone();
    match backfill.run(run.clone(), stop, |_| {}).await {
        Ok(r) => tracing::info!(run = id, %source, fetched = r.events_fetched,
            "backfill run finished (events queued; duplicates are dropped when applied)"),
        Err(BackfillError::Stopped) => {
            tracing::info!(run = id, %source, "backfill run interrupted; it resumes at the next start")
        }
        Err(e) => {
            tracing::error!(run = id, %source, error = %e, "backfill run failed; it resumes at the next start");
            backfill.record_error(&run, &e.to_string()).await;
        }
    }
}

async fn read_heartbeat(store: &Store, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let c = store.pool().get().await?;
    Ok(c.query_opt(
        "SELECT seen_at FROM instance_heartbeats WHERE instance = $1",
        &[&name],
    )
    .await?
    .map(|r| r.get(0)))
}

async fn heartbeat(store: Store, name: String, stop: CancellationToken) {
    loop {
        if let Ok(c) = store.pool().get().await {
            if let Err(e) = c
                .execute(
                    "INSERT INTO instance_heartbeats (instance, seen_at) VALUES ($1, now()) \
                     ON CONFLICT (instance) DO UPDATE SET seen_at = now()",
                    &[&name],
                )
                .await
            {
                tracing::debug!(error = %e, "cannot record the heartbeat");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
