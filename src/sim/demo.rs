//! `demo`: one command for a newcomer. Uses (or starts) a local Postgres, creates a
//! demo database, migrates, serves on localhost, runs the simulator against itself, and
//! prints where to look. Ctrl-C stops it.

use crate::config::{Config, Secret};
use crate::{apply::store, sim::simulate};
use anyhow::{bail, Context};
use std::time::Duration;

pub struct Options {
    pub port: u16,
    pub agents: usize,
    pub rate: u32,
    pub duration: u64,
    pub seed: u64,
}

async fn connects(url: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(3),
            tokio_postgres::connect(url, tokio_postgres::NoTls)
        )
        .await,
        Ok(Ok(_))
    )
}

/// A Postgres admin URL that answers: `DATABASE_URL`, else the local server (started
/// with `pg_ctlcluster` when it is installed but stopped).
async fn find_postgres() -> anyhow::Result<String> {
    let mut candidates = Vec::new();
    if let Ok(u) = std::env::var("DATABASE_URL") {
        candidates.push(u);
    }
    candidates.push("postgres://postgres@127.0.0.1:5432/postgres".into());
    candidates.push("postgres://postgres@localhost/postgres?host=/var/run/postgresql".into());
    for c in &candidates {
        if connects(c).await {
            return Ok(c.clone());
        }
    }
    // Installed but stopped? Start the newest cluster (Debian's layout).
    if let Ok(rd) = std::fs::read_dir("/etc/postgresql") {
        let mut versions: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort();
        if let Some(v) = versions.last() {
            eprintln!("demo: starting the local Postgres cluster {v}/main");
            let _ = std::process::Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", v, "main", "start"])
                .status();
            for _ in 0..20 {
                for c in &candidates {
                    if connects(c).await {
                        return Ok(c.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    bail!(
        "no Postgres answers (tried DATABASE_URL and the local server). Install one with \
         `sudo apt-get install postgresql` (or run scripts/quickstart.sh, which does), \
         or set DATABASE_URL to a server where you may create a database"
    )
}

/// A fixed-offset zone in which today started at least ten hours ago (so a simulated
/// day that ends now lies within today).
pub fn zone_where_today_is_long() -> String {
    use chrono::Timelike;
    let hour = chrono::Utc::now().hour() as i32;
    for off in (-12..=14).rev() {
        if (11..=22).contains(&(hour + off).rem_euclid(24)) {
            return match off {
                0 => "UTC".into(),
                o if o > 0 => format!("Etc/GMT-{o}"),
                o => format!("Etc/GMT+{}", -o),
            };
        }
    }
    "UTC".into()
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let admin = find_postgres().await?;
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let db = "taskrouter_summarizer_demo";
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .context("dropping the previous demo database")?;
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .context("creating the demo database")?;
    let mut url = url::Url::parse(&admin)?;
    url.set_path(&format!("/{db}"));

    let dir =
        std::env::temp_dir().join(format!("taskrouter-summarizer-demo-{}", std::process::id()));
    let token = format!("demo-{:x}", rand::random::<u64>());
    let base = format!("http://127.0.0.1:{}", opts.port);
    let mut cfg = Config::from_toml("").map_err(anyhow::Error::msg)?;
    cfg.server.listen = format!("127.0.0.1:{}", opts.port);
    cfg.server.public_url = base.clone();
    cfg.queue.path = dir.join("queue");
    cfg.postgres.url = Secret::new(url.as_str());
    cfg.twilio.auth_token = Secret::new(token.clone());
    // One port for everything: the admin side shares the (loopback) listener behind a
    // token of its own, given in the printed links (`?token=`).
    let admin_token = format!("{:x}", rand::random::<u128>());
    cfg.server.admin_listen = String::new();
    cfg.server.admin_token = Secret::new(admin_token.clone());
    // The simulated day spans the last eight hours or so: show "today" in a zone where
    // all of it falls on the same date.
    cfg.sla.timezone = zone_where_today_is_long();
    let problems = cfg.problems();
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    let pool = store::pool(&cfg.postgres)?;
    store::migrate(&pool)
        .await
        .context("migrating the demo database")?;
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (use --port)", cfg.server.listen))?;
    println!("taskrouter-summarizer demo");
    println!(
        "  database   {} (dropped and recreated at each demo)",
        crate::config::redact_url(url.as_str())
    );
    println!("  queue      {}", cfg.queue.path.display());
    println!(
        "  wallboard  {base}/dashboard?token={admin_token}   (\"today\" in {}, so that the simulated day fits in it)",
        cfg.sla.timezone
    );
    println!("  summary    {base}/api/summary?token={admin_token}");
    println!("  metrics    {base}/metrics?token={admin_token}");
    println!("  tables     psql {} -c 'SELECT task_queue_name, task_assignment_status, count(*) FROM tasks GROUP BY 1, 2'", crate::config::redact_url(url.as_str()));
    println!(
        "simulating {} agents at {} callbacks/s for {} s; Ctrl-C stops the demo",
        opts.agents, opts.rate, opts.duration
    );

    let sim = simulate::Options {
        url: format!("{base}/ingress"),
        public_url: None,
        auth_token: token,
        agents: opts.agents,
        rate: opts.rate,
        duration: opts.duration,
        seed: opts.seed,
        concurrency: 32,
    };
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = simulate::run(&sim).await;
        println!(
            "simulation done: {} sent, {} acknowledged in {:.1} s. The service keeps running: look at {base}/dashboard?token={admin_token}",
            r.sent,
            r.accepted,
            r.elapsed.as_secs_f64()
        );
    });
    let result = crate::app::run(cfg, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
