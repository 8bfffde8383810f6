//! `check-config`: every problem of the config file, named by key, and where the admin
//! side would answer without a token.

use super::runtime;
use crate::apply::store;
use crate::config::{Config, ConfigError};
use crate::publish::jobs;
use anyhow::bail;

pub fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load_unchecked(path)?;
    let mut problems = cfg.problems();
    if let Err(p) = cfg.check_queue_path() {
        problems.push(p);
    }
    if problems.is_empty() && !cfg.jobs.is_empty() {
        // Jobs' SQL is checked against the database itself. An unreachable database is
        // only a warning: `serve` must start (and ingest) while Postgres is down.
        let checked = runtime()?.block_on(async {
            let pool = store::pool(&cfg.postgres)?;
            tokio::time::timeout(
                std::time::Duration::from_secs(cfg.postgres.connect_timeout_secs + 5),
                jobs::check_sql(&pool, &cfg.jobs),
            )
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))?
            .map_err(anyhow::Error::from)
        });
        match checked {
            Ok(p) => problems.extend(p),
            Err(e) => eprintln!("warning: jobs' SQL not checked, Postgres unreachable: {e:#}"),
        }
    }
    if !problems.is_empty() {
        bail!("{}", ConfigError::Invalid(problems));
    }
    for w in cfg.exposure_warnings() {
        eprintln!("warning: {w}");
    }
    println!(
        "config {} is valid (postgres {}, queue {}, signatures {})",
        path.display(),
        cfg.postgres_url_redacted(),
        cfg.queue.path.display(),
        if cfg.server.verify_signatures {
            "verified"
        } else {
            "NOT verified"
        }
    );
    Ok(())
}
