//! `check-config`: every problem of the config file, named by key (with its line and
//! column when it is in the file), and where the admin side would answer without a
//! token. It changes nothing on disk: systemd runs it before every start.

use super::runtime;
use crate::apply::store;
use crate::config::{Config, ConfigError};
use crate::publish::jobs;

pub fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = Config::load_all(path)?;
    let cfg = &loaded.config;
    let mut problems: Vec<String> = loaded.problems.iter().map(|p| p.text.clone()).collect();
    if let Err(p) = cfg.check_queue_path() {
        problems.push(loaded.place(p).text);
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
            Ok(p) => problems.extend(p.into_iter().map(|p| loaded.place(p).text)),
            Err(e) => eprintln!(
                "warning: jobs' SQL not checked, Postgres unreachable: {}",
                crate::util::error_chain(e.as_ref())
            ),
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }
        .into());
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
