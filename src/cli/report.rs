//! `report`: the interval reports of `/api/reports/intervals` on the command line.

use super::progress_bar;
use crate::apply::store;
use crate::config::Config;
use crate::publish::report::{self, ReportError};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

/// What `report` was asked for.
pub struct Args {
    pub from: String,
    pub to: Option<String>,
    pub interval: String,
    pub by: String,
    pub json: bool,
    pub out: Option<PathBuf>,
}

/// Intervals per query: a day of 15-minute intervals, so the bar moves on long ranges
/// while each query stays small.
const CHUNK: usize = 96;

pub async fn run(cfg: &Config, args: Args) -> anyhow::Result<()> {
    let settings = report::Settings::from_config(cfg);
    let now = chrono::Utc::now();
    let to = args
        .to
        .unwrap_or_else(|| now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let req = report::Request::parse(
        Some(&args.from),
        Some(&to),
        Some(&args.interval),
        Some(&args.by),
        &settings.tz,
    )
    .map_err(|e| match e {
        // Name the flag as the user typed it.
        ReportError::Param { name, why } => anyhow::anyhow!("--{name}: {why}"),
        other => other.into(),
    })?;
    let pool = store::pool(&cfg.postgres)?;
    store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {}", cfg.postgres_url_redacted()))?;
    let bar = progress_bar(
        0,
        "{elapsed_precise} [{bar:30}] {pos}/{len} intervals  ETA {eta}",
    );
    let rows = report::run_chunked(&pool, &settings, &req, now, CHUNK, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .await
    .context("reading the report")?;
    bar.finish_and_clear();
    let body = if args.json {
        let mut b = rows.to_json()?.into_bytes();
        b.push(b'\n');
        b
    } else {
        rows.to_csv(req.by, true)?
    };
    match &args.out {
        Some(path) => {
            // Written next to the target, then renamed: a reader never sees half a file.
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, &body).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{} rows written to {}", rows.len(), path.display());
        }
        None => std::io::stdout()
            .write_all(&body)
            .context("writing the report")?,
    }
    Ok(())
}
