//! `jobs list | run NAME`: the user-defined jobs of the config.

use super::{runtime, JobsCommand};
use crate::apply::store;
use crate::config::Config;
use crate::publish::jobs;
use anyhow::bail;

pub fn run(cfg: &Config, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List => {
            for j in &cfg.jobs {
                println!(
                    "{}",
                    serde_json::json!({"name": j.name, "schedule": j.schedule,
                            "target": format!("{:?}", j.target), "timeout_ms": j.timeout_ms,
                            "max_rows": j.max_rows, "ttl_seconds": j.ttl_seconds})
                );
            }
            Ok(())
        }
        JobsCommand::Run { name } => {
            let Some(job) = cfg.jobs.iter().find(|j| j.name == name) else {
                let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
                bail!("no job named `{name}` (jobs: {})", names.join(", "));
            };
            runtime()?.block_on(async {
                let pool = store::pool(&cfg.postgres)?;
                let started = std::time::Instant::now();
                let rows = jobs::query(&pool, &jobs::Params::from_config(cfg), job).await?;
                let out = jobs::shape(job, rows)?;
                println!("{}", serde_json::to_string_pretty(&out)?);
                eprintln!("({} ms)", started.elapsed().as_millis());
                Ok(())
            })
        }
    }
}
