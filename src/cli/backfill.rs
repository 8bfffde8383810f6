//! `migrate`, `backfill` and `rebuild`: the database side of the commands.

use super::{init_logging, progress_bar, runtime, shutdown_signal, DEFAULT_CONFIG};
use crate::apply::store;
use crate::config::{self, Config, ConfigError, Secret};
use anyhow::{bail, Context};
use std::path::Path;

/// `migrate`: needs only a database. The URL comes from `--database-url` or
/// `DATABASE_URL`; the config (`--config`, or the default one when there is no URL) is
/// read for its `[postgres]` section alone, so a config without Twilio settings, or
/// with problems elsewhere, does not stop a migration.
pub fn migrate_command(config: Option<&Path>, url: Option<String>) -> anyhow::Result<()> {
    let url = url.filter(|u| !u.is_empty());
    let config = match (config, &url) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) if Path::new(DEFAULT_CONFIG).exists() => Some(Path::new(DEFAULT_CONFIG)),
        (None, None) => bail!(
            "migrate needs a database URL: set DATABASE_URL, pass --database-url, or \
             name a config with [postgres] url (--config; there is none at {DEFAULT_CONFIG})"
        ),
    };
    let postgres = match config {
        None => {
            init_logging(None);
            config::Postgres {
                url: Secret::new(url.unwrap_or_default()),
                ..config::Postgres::default()
            }
        }
        Some(path) => {
            let loaded = Config::load_all(path)?;
            let problems: Vec<String> = loaded
                .problems
                .into_iter()
                .filter(|p| p.key == "postgres" || p.key.starts_with("postgres."))
                // A URL given on the command line stands for the file's.
                .filter(|p| url.is_none() || p.key != "postgres.url")
                .map(|p| p.text)
                .collect();
            if !problems.is_empty() {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    problems,
                }
                .into());
            }
            init_logging(Some(&loaded.config));
            let mut postgres = loaded.config.postgres;
            if let Some(u) = url {
                postgres.url = Secret::new(u);
            }
            postgres
        }
    };
    runtime()?.block_on(migrate(&postgres))
}

/// Applies the embedded migrations (idempotent).
async fn migrate(postgres: &config::Postgres) -> anyhow::Result<()> {
    let pool = store::pool(postgres)?;
    let applied = store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {}", config::redact_url(postgres.url.expose())))?;
    if applied.is_empty() {
        println!("database is up to date");
    } else {
        for m in applied {
            println!("applied {m}");
        }
    }
    Ok(())
}

pub async fn backfill(
    cfg: Config,
    since: Option<String>,
    until: String,
    slice: String,
    resume: bool,
) -> anyhow::Result<()> {
    use crate::twilio::backfill::{self, Backfill, Sink};
    if !cfg.rest_configured() {
        bail!(
            "backfill needs twilio.workspace_sid, twilio.account_sid and an auth token or API key"
        );
    }
    let pool = store::pool(&cfg.postgres)?;
    store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {}", cfg.postgres_url_redacted()))?;
    let store = store::Store::new(pool, store::Settings::from_config(&cfg));
    let client =
        crate::twilio::TwilioClient::new(crate::twilio::ClientSettings::from_config(&cfg))?;
    let b = Backfill::new(
        backfill::Settings::from_config(&cfg),
        client,
        store.clone(),
        Sink::Store(store),
    );
    let run = if resume {
        let Some(r) = b.unfinished("cli").await?.pop() else {
            bail!("no interrupted backfill run to resume");
        };
        eprintln!(
            "resuming run {} ({} to {}) at {}, {} events read so far",
            r.id,
            r.since.to_rfc3339(),
            r.until.to_rfc3339(),
            r.cursor_at.to_rfc3339(),
            r.events_fetched
        );
        r
    } else {
        let now = chrono::Utc::now();
        let since = backfill::parse_instant(since.as_deref().unwrap_or_default(), now)
            .map_err(anyhow::Error::msg)?;
        let until = backfill::parse_instant(&until, now).map_err(anyhow::Error::msg)?;
        let slice = humantime::parse_duration(&slice)
            .ok()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .filter(|d| d.num_seconds() >= 60)
            .with_context(|| format!("--slice {slice:?}: a duration of at least 1m"))?;
        let w = backfill::window(since, until, now).map_err(anyhow::Error::msg)?;
        if let Some(n) = &w.note {
            eprintln!("{n}");
        }
        let open = b.unfinished("cli").await?;
        if let Some(r) = open.last() {
            eprintln!(
                "note: run {} ({} to {}) was interrupted; `backfill --resume` continues it",
                r.id,
                r.since.to_rfc3339(),
                r.until.to_rfc3339()
            );
        }
        b.create("cli", w.since, w.until, slice).await?
    };
    let bar = progress_bar(
        run.slices_total() as u64,
        "{elapsed_precise} [{bar:30}] {pos}/{len} slices  {msg}  ETA {eta}",
    );
    bar.set_position(run.slices_done as u64);
    let started = std::time::Instant::now();
    let fetched0 = run.events_fetched;
    let stop = tokio_util::sync::CancellationToken::new();
    let ctrl_c = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        ctrl_c.cancel();
    });
    let id = run.id;
    let result = b
        .run(run.clone(), &stop, |r| {
            let rate =
                (r.events_fetched - fetched0) as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_position(r.slices_done as u64);
            bar.set_message(format!(
                "{} events read, {} new, {rate:.0}/s",
                r.events_fetched,
                r.events_new.unwrap_or(0)
            ));
        })
        .await;
    bar.finish();
    match result {
        Ok(r) => {
            println!(
                "backfill run {id} done: {} to {}, {} events read, {} were missing and are now applied",
                r.since.to_rfc3339(),
                r.until.to_rfc3339(),
                r.events_fetched,
                r.events_new.unwrap_or(0)
            );
            Ok(())
        }
        Err(backfill::BackfillError::Stopped) => {
            eprintln!("interrupted; `backfill --resume` continues run {id}");
            std::process::exit(130);
        }
        Err(e) => {
            b.record_error(&run, &e.to_string()).await;
            Err(anyhow::Error::new(e).context(format!(
                "backfill run {id} stopped; `backfill --resume` continues it"
            )))
        }
    }
}

pub async fn rebuild(cfg: Config, batch: i64) -> anyhow::Result<()> {
    use crate::maintenance::rebuild;
    let pool = store::pool(&cfg.postgres)?;
    store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {}", cfg.postgres_url_redacted()))?;
    let store = store::Store::new(pool, store::Settings::from_config(&cfg));
    let bar = progress_bar(
        0,
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}  ETA {eta}",
    );
    let report = rebuild::run(&store, batch, |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(format!("{} ({} events read)", p.phase, p.events));
    })
    .await?;
    bar.finish();
    // Message metrics of the rebuilt tasks (serve does this in the background too).
    while store.refresh_dirty(500).await? > 0 {}
    // Interval rollups of every bucket a rebuilt task is or was in.
    store.refresh_all_rollups().await?;
    println!(
        "rebuilt {} activities, {} workers, {} tasks from {} events{}",
        report.activities,
        report.workers,
        report.tasks,
        report.events,
        if report.skipped_tasks > 0 {
            format!(
                "; {} tasks older than the retention cutoff kept as they were",
                report.skipped_tasks
            )
        } else {
            String::new()
        }
    );
    if cfg.rest_configured() {
        let client =
            crate::twilio::TwilioClient::new(crate::twilio::ClientSettings::from_config(&cfg))?;
        let settings = crate::twilio::rest_sync::Settings::from_config(&cfg);
        crate::twilio::rest_sync::RestSync::new(settings, client, store)
            .sync_once()
            .await
            .context("the REST sync after the rebuild (activities, workers, channels)")?;
        println!("activities, workers and channels re-read from TaskRouter's REST API");
    }
    Ok(())
}
