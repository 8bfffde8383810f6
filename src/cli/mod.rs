//! The commands of the `taskrouter-summarizer` binary: the command line (clap) and the
//! body of each command. `main.rs` only parses and reports.

mod backfill;
mod check_config;
mod jobs;
mod queue;
mod report;
mod sample;
mod simulate;

use crate::config::Config;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Where the config is when `--config` and `TASKROUTER_SUMMARIZER_CONFIG` name none.
pub const DEFAULT_CONFIG: &str = "/etc/taskrouter-summarizer/config.toml";

#[derive(Parser)]
#[command(
    version,
    about = "Durable ingest of Twilio TaskRouter event callbacks, summarized into Postgres"
)]
pub struct Cli {
    /// Config file (TOML) [default: /etc/taskrouter-summarizer/config.toml]
    // No clap default: `migrate` tells a path given from the default one, which it
    // does not need when it has a database URL.
    #[arg(long, global = true, env = "TASKROUTER_SUMMARIZER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Apply the embedded database migrations (idempotent). Needs only a database URL;
    /// with one, no config file is read unless --config names it.
    Migrate {
        /// The Postgres URL (wins over the config's postgres.url).
        // Never shown in --help: the URL may hold a password.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Run the service in the foreground until SIGTERM or SIGINT.
    Serve,
    /// Validate the config and say exactly what is wrong.
    CheckConfig,
    /// Inspect or repair the local queue (only while `serve` is stopped: the queue is
    /// locked by the running service).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Everything on this machine: a local Postgres, the service, and a simulated
    /// contact center posting to it: the last hours of history first, fast, then live
    /// in real time until Ctrl-C. No config needed.
    Demo {
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// Agents on the simulated floor; the load follows (about 13 tasks an hour each).
        #[arg(long, default_value_t = 40)]
        agents: usize,
        /// History written first, fast: the day up to now (e.g. 8h, 90m; 0s for none; at
        /// most 10h, so that it falls within "today").
        #[arg(long, default_value = "8h", value_parser = parse_history)]
        history: std::time::Duration,
        /// Requests per second while writing the history.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        /// Seconds of real time to simulate after the history [default: until Ctrl-C].
        #[arg(long)]
        duration: Option<u64>,
        /// The same seed gives the same contact center.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Post a simulated contact-center day (signed callbacks and messages) to a service;
    /// with --live, the history of the last hours and then a floor in real time.
    Simulate {
        /// The ingress URL, e.g. http://127.0.0.1:3000/ingress
        #[arg(long)]
        url: String,
        /// The auth token the service verifies signatures with.
        #[arg(long, env = "TWILIO_AUTH_TOKEN")]
        auth_token: String,
        /// Sign for this base URL instead of the posting URL (the service's public_url).
        #[arg(long)]
        public_url: Option<String>,
        /// A live floor instead of a planned day: --history first, fast, then real time
        /// until Ctrl-C (or --duration seconds).
        #[arg(long)]
        live: bool,
        /// With --live: the history written first (e.g. 8h, 90m, 0s).
        #[arg(long, default_value = "8h", value_parser = parse_history, requires = "live")]
        history: std::time::Duration,
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Read TaskRouter's REST Events for a window (events the callbacks missed) and apply
    /// them with the same rules; idempotent, resumable. Safe while `serve` runs.
    Backfill {
        /// Start: an RFC 3339 time or a duration before now (90m, 6h, 2d).
        #[arg(long, required_unless_present = "resume")]
        since: Option<String>,
        /// End: an RFC 3339 time or a duration before now.
        #[arg(long, default_value = "now")]
        until: String,
        /// Each list query covers this much time (the unit of progress and resumption).
        #[arg(long, default_value = "1h")]
        slice: String,
        /// Continue the last interrupted `backfill` run instead of starting one.
        #[arg(long, conflicts_with = "since")]
        resume: bool,
    },
    /// Recompute every state table from the raw events (after a rule change or a bug
    /// fix). Safe while `serve` runs.
    Rebuild {
        /// Entities per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// Interval report (as `/api/reports/intervals`): CSV to stdout, or to `--out`.
    Report {
        /// Start: an ISO 8601 instant, or a local date (`2026-12-01`) in `[sla] timezone`.
        #[arg(long)]
        from: String,
        /// End (exclusive); default now.
        #[arg(long)]
        to: Option<String>,
        /// 15m, 30m, 60m or 1d, aligned in `[sla] timezone`.
        #[arg(long, default_value = "30m")]
        interval: String,
        /// workspace, queue, channel or worker.
        #[arg(long, default_value = "queue")]
        by: String,
        /// JSON (an array of rows) instead of CSV.
        #[arg(long)]
        json: bool,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// User-defined jobs from the config.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Print a signed sample callback as a curl command, for trying the service out.
    SampleCallback {
        /// Where to send it (default: the configured listen address).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Name, schedule and target of every job.
    List,
    /// Run a job's query once and print the JSON it would publish (nothing is published).
    Run { name: String },
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Depth, oldest age, retries and dead letters.
    Status,
    /// List the dead letters with their errors.
    DeadLetters,
    /// Move every dead letter back into the queue.
    Requeue,
}

/// `--history`: a duration (8h, 90m, 0s) of at most 10 hours: the demo shows "today"
/// in a zone where it began 11 hours ago or more.
fn parse_history(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as 8h or 90m: {e}"))?;
    if d > std::time::Duration::from_secs(10 * 3600) {
        return Err(format!("{s:?} is more than 10h"));
    }
    Ok(d)
}

/// The simulated contact center of `simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Agents (workers) in the simulated center.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Requests per second (with --live: while writing the history).
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds, at most; the day is sized to fit [default: 60; with --live: real-time
    /// seconds after the history, until Ctrl-C when not given].
    #[arg(long)]
    pub duration: Option<u64>,
    /// The same seed gives the same day.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn init_logging(cfg: Option<&Config>) {
    let level = cfg
        .map(|c| c.log.level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.is_some_and(|c| c.log.format == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs one command to its end.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config_path = || {
        cli.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    };
    match cli.command {
        Command::CheckConfig => return check_config::run(&config_path()),
        Command::Migrate { database_url } => {
            return backfill::migrate_command(cli.config.as_deref(), database_url)
        }
        Command::Demo {
            port,
            agents,
            history,
            rate,
            duration,
            seed,
        } => {
            init_logging(None);
            return simulate::demo(crate::sim::demo::Options {
                port,
                agents,
                history,
                rate,
                duration,
                seed,
            });
        }
        Command::Simulate {
            url,
            auth_token,
            public_url,
            live,
            history,
            sim,
        } => {
            let live = live.then_some(history);
            return simulate::simulate(url, auth_token, public_url, live, sim);
        }
        _ => {}
    }
    let cfg = Config::load(&config_path())?;
    init_logging(Some(&cfg));
    match cli.command {
        Command::CheckConfig
        | Command::Migrate { .. }
        | Command::Demo { .. }
        | Command::Simulate { .. } => {
            unreachable!("handled above")
        }
        Command::Serve => runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
            crate::app::run(cfg, listener, shutdown_signal()).await
        }),
        Command::Queue { command } => queue::run(&cfg, command),
        Command::Backfill {
            since,
            until,
            slice,
            resume,
        } => runtime()?.block_on(backfill::backfill(cfg, since, until, slice, resume)),
        Command::Rebuild { batch } => runtime()?.block_on(backfill::rebuild(cfg, batch)),
        Command::Report {
            from,
            to,
            interval,
            by,
            json,
            out,
        } => {
            let args = report::Args {
                from,
                to,
                interval,
                by,
                json,
                out,
            };
            runtime()?.block_on(report::run(&cfg, args))
        }
        Command::Jobs { command } => jobs::run(&cfg, command),
        Command::SampleCallback { url } => sample::run(&cfg, url),
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled: a SIGTERM sent as soon as the service answers must
/// drain it, not kill it with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(int) => tracing::info!("SIGINT received"),
            _ = wait(term) => tracing::info!("SIGTERM received"),
        }
    }
}

pub(crate) fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
