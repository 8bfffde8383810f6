//! The `taskrouter-summarizer` binary: parses the command line, sets up logging and
//! calls the library.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use taskrouter_summarizer::config::{Config, ConfigError};
use taskrouter_summarizer::{
    demo, jobs, metrics::Metrics, queue::Queue, server, signature, simulate, store,
};

#[derive(Parser)]
#[command(
    version,
    about = "Durable ingest of Twilio TaskRouter event callbacks, summarized into Postgres"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(
        long,
        global = true,
        env = "TASKROUTER_SUMMARIZER_CONFIG",
        default_value = "/etc/taskrouter-summarizer/config.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the embedded database migrations (idempotent).
    Migrate,
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
    /// contact center posting to it. No config needed.
    Demo {
        #[arg(long, default_value_t = 3000)]
        port: u16,
        #[arg(long, default_value_t = 20)]
        agents: usize,
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value_t = 60)]
        duration: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Post a simulated contact-center day (signed callbacks and messages) to a service.
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
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Requests per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Seconds, at most.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
enum JobsCommand {
    /// Name, schedule and target of every job.
    List,
    /// Run a job's query once and print the JSON it would publish (nothing is published).
    Run { name: String },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Depth, oldest age, retries and dead letters.
    Status,
    /// List the dead letters with their errors.
    DeadLetters,
    /// Move every dead letter back into the queue.
    Requeue,
}

fn init_logging(cfg: Option<&Config>) {
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

fn main() -> std::process::ExitCode {
    taskrouter_summarizer::server::tune_allocator();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig => return check_config(&cli.config),
        Command::Demo {
            port,
            agents,
            rate,
            duration,
            seed,
        } => {
            init_logging(None);
            return runtime()?.block_on(demo::run(demo::Options {
                port,
                agents,
                rate,
                duration,
                seed,
            }));
        }
        Command::Simulate {
            url,
            auth_token,
            public_url,
            agents,
            rate,
            duration,
            seed,
        } => {
            let opts = simulate::Options {
                url,
                public_url,
                auth_token,
                agents,
                rate,
                duration,
                seed,
                concurrency: 32,
            };
            let r = runtime()?.block_on(simulate::run(&opts));
            println!(
                "sent {}, acknowledged {}, refused {}, errors {} in {:.1} s",
                r.sent,
                r.accepted,
                r.refused,
                r.errors,
                r.elapsed.as_secs_f64()
            );
            if r.refused + r.errors > 0 {
                bail!("{} callbacks were not acknowledged", r.refused + r.errors);
            }
            return Ok(());
        }
        _ => {}
    }
    let cfg = Config::load(&cli.config)?;
    init_logging(Some(&cfg));
    match cli.command {
        Command::CheckConfig | Command::Demo { .. } | Command::Simulate { .. } => {
            unreachable!("handled above")
        }
        Command::Migrate => runtime()?.block_on(async {
            let pool = store::pool(&cfg)?;
            let applied = store::migrate(&pool)
                .await
                .with_context(|| format!("migrating {}", cfg.postgres_url_redacted()))?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                for m in applied {
                    println!("applied {m}");
                }
            }
            Ok(())
        }),
        Command::Serve => runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
            server::run(cfg, listener, shutdown_signal()).await
        }),
        Command::Queue { command } => {
            let q = Queue::open(
                &cfg.queue.path,
                cfg.queue.cache_mb,
                u64::MAX,
                Arc::new(Metrics::default()),
            )?;
            match command {
                QueueCommand::Status => {
                    println!("{}", serde_json::to_string_pretty(&q.status())?);
                }
                QueueCommand::DeadLetters => {
                    for dl in q.dead_letters()? {
                        let payload = String::from_utf8_lossy(&dl.payload);
                        println!(
                            "{}",
                            serde_json::json!({"id": dl.id, "attempts": dl.attempts, "error": dl.error,
                                "failed_ms": dl.failed_ms, "entry": serde_json::from_str::<serde_json::Value>(&payload).unwrap_or(payload.into())})
                        );
                    }
                }
                QueueCommand::Requeue => {
                    let n = q.requeue_dead()?;
                    println!("requeued {n} dead letter(s)");
                }
            }
            Ok(())
        }
        Command::Backfill {
            since,
            until,
            slice,
            resume,
        } => runtime()?.block_on(backfill(cfg, since, until, slice, resume)),
        Command::Rebuild { batch } => runtime()?.block_on(rebuild(cfg, batch)),
        Command::Jobs { command } => match command {
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
                    let pool = store::pool(&cfg)?;
                    let started = std::time::Instant::now();
                    let rows = jobs::query(&pool, &cfg, job).await?;
                    let out = jobs::shape(job, rows)?;
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    eprintln!("({} ms)", started.elapsed().as_millis());
                    Ok(())
                })
            }
        },
        Command::SampleCallback { url } => {
            let target = url.unwrap_or_else(|| {
                format!(
                    "http://{}/ingress",
                    cfg.server.listen.replace("0.0.0.0", "127.0.0.1")
                )
            });
            let now = chrono::Utc::now();
            let ms = now.timestamp_millis();
            let params: Vec<(String, String)> = [
                ("EventType", "task.created".to_owned()),
                ("Sid", format!("EV{:032x}", ms)),
                ("AccountSid", cfg.twilio.account_sid.clone()),
                ("WorkspaceSid", cfg.twilio.workspace_sid.clone()),
                ("ResourceType", "task".to_owned()),
                ("ResourceSid", format!("WT{:032x}", ms)),
                ("TaskSid", format!("WT{:032x}", ms)),
                ("TaskAssignmentStatus", "pending".to_owned()),
                ("TaskAge", "0".to_owned()),
                ("TaskChannelUniqueName", "voice".to_owned()),
                ("TaskQueueName", "Support".to_owned()),
                ("TaskQueueSid", format!("WQ{:032x}", 1)),
                ("TaskAttributes", r#"{"direction":"inbound"}"#.to_owned()),
                ("TaskDateCreated", (ms / 1000).to_string()),
                ("Timestamp", (ms / 1000).to_string()),
                ("TimestampMs", ms.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let path = target
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
                .unwrap_or_else(|| "/ingress".into());
            let signed_url = format!("{}{}", cfg.server.public_url.trim_end_matches('/'), path);
            let sig = signature::compute(cfg.twilio.auth_token.expose(), &signed_url, &params);
            let body: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&params)
                .finish();
            println!(
                "curl -i -X POST '{target}' -H 'X-Twilio-Signature: {sig}' \
                 -H 'Content-Type: application/x-www-form-urlencoded' --data '{body}'"
            );
            Ok(())
        }
    }
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load_unchecked(path)?;
    let mut problems = cfg.problems();
    if let Err(p) = cfg.check_queue_path() {
        problems.push(p);
    }
    if problems.is_empty() && !cfg.jobs.is_empty() {
        // Jobs' SQL is checked against the database itself. An unreachable database is
        // only a warning: `serve` must start (and ingest) while Postgres is down.
        let checked = runtime()?.block_on(async {
            let pool = store::pool(&cfg)?;
            tokio::time::timeout(
                std::time::Duration::from_secs(cfg.postgres.connect_timeout_secs + 5),
                jobs::check_sql(&pool, &cfg),
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

/// Resolves on SIGTERM or SIGINT.
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

fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn backfill(
    cfg: Config,
    since: Option<String>,
    until: String,
    slice: String,
    resume: bool,
) -> anyhow::Result<()> {
    use taskrouter_summarizer::backfill::{self, Backfill, Sink};
    if !cfg.rest_configured() {
        bail!(
            "backfill needs twilio.workspace_sid, twilio.account_sid and an auth token or API key"
        );
    }
    let pool = store::pool(&cfg)?;
    store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {}", cfg.postgres_url_redacted()))?;
    let store = store::Store::new(pool, &cfg);
    let client = taskrouter_summarizer::twilio::TwilioClient::new(&cfg)?;
    let b = Backfill::new(&cfg, client, store.clone(), Sink::Store(store));
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

async fn rebuild(cfg: Config, batch: i64) -> anyhow::Result<()> {
    use taskrouter_summarizer::rebuild;
    let pool = store::pool(&cfg)?;
    store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {}", cfg.postgres_url_redacted()))?;
    let store = store::Store::new(pool, &cfg);
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
        let client = taskrouter_summarizer::twilio::TwilioClient::new(&cfg)?;
        taskrouter_summarizer::taskrouter::RestSync::new(&cfg, client, store)
            .sync_once()
            .await
            .context("the REST sync after the rebuild (activities, workers, channels)")?;
        println!("activities, workers and channels re-read from TaskRouter's REST API");
    }
    Ok(())
}
