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
    /// How much of the day before now to write first, fast.
    pub history: Duration,
    /// Requests per second while writing the history.
    pub rate: u32,
    /// Seconds of real time to simulate after the history (None: until Ctrl-C).
    pub duration: Option<u64>,
    pub seed: u64,
}

/// The Unix socket directory of Debian's Postgres.
const SOCKET_DIR: &str = "/var/run/postgresql";

/// One way to log in to the local Postgres.
struct Login {
    url: String,
    /// What it is, in words: role, where, how.
    what: String,
}

/// Why a login failed, in Postgres' words (or the connection's).
async fn try_login(url: &str) -> Result<(), String> {
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                msg
            }
        }),
        Err(_) => Err("no answer within 3 s".to_owned()),
    }
}

/// The OS user this runs as (the role peer authentication lets in over the socket).
fn os_user() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|u| !u.is_empty())
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (!name.is_empty()).then_some(name)
        })
}

/// The local logins to try, in order: `DATABASE_URL` alone when it is set; else the
/// Unix socket as `postgres` and as the OS user (Debian's default, peer
/// authentication: no password), then TCP on 127.0.0.1 as `postgres` without a
/// password (a server that trusts local TCP).
fn logins() -> Vec<Login> {
    logins_for(std::env::var("DATABASE_URL").ok(), os_user())
}

fn logins_for(database_url: Option<String>, os_user: Option<String>) -> Vec<Login> {
    if let Some(u) = database_url {
        return vec![Login {
            what: format!("DATABASE_URL ({})", crate::config::redact_url(&u)),
            url: u,
        }];
    }
    let socket = |role: &str| Login {
        url: format!("postgres://{role}@localhost/postgres?host={SOCKET_DIR}"),
        what: format!("role {role} over the Unix socket {SOCKET_DIR}"),
    };
    let mut v = vec![socket("postgres")];
    if let Some(me) = os_user.filter(|u| u != "postgres") {
        v.push(socket(&me));
    }
    v.push(Login {
        url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        what: "role postgres at 127.0.0.1:5432 (TCP, no password)".into(),
    });
    v
}

/// The first login that works, or every failure.
async fn first_login(logins: &[Login]) -> Result<String, Vec<(String, String)>> {
    let mut failed = Vec::new();
    for l in logins {
        match try_login(&l.url).await {
            Ok(()) => return Ok(l.url.clone()),
            Err(e) => failed.push((l.what.clone(), e)),
        }
    }
    Err(failed)
}

/// Whether a failure means that no server listens there (rather than a refused login).
fn no_server(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("connection refused") || e.contains("no such file") || e.contains("no answer")
}

/// A Postgres admin URL that answers: `DATABASE_URL`, else the local server over its
/// Unix socket or TCP (the newest cluster started with `pg_ctlcluster`, after saying
/// so, when it is installed but stopped). When none lets us in, the error names each
/// login tried, why it failed, and how to fix it.
async fn find_postgres() -> anyhow::Result<String> {
    let logins = logins();
    let mut failed = match first_login(&logins).await {
        Ok(url) => return Ok(url),
        Err(f) => f,
    };
    let from_env = std::env::var("DATABASE_URL").is_ok();
    let is_installed = || {
        std::path::Path::new("/usr/lib/postgresql").exists()
            || which("pg_ctlcluster")
            || which("postgres")
    };
    let mut installed = is_installed();
    if !from_env && !installed {
        // A fresh machine: the quick start must still work end to end.
        eprintln!(
            "demo: no Postgres is installed here; installing Debian's postgresql package \
             (apt-get install postgresql{})",
            if is_root() { "" } else { ", with sudo" }
        );
        install_postgres()?;
        installed = is_installed();
        match first_login(&logins).await {
            Ok(url) => return Ok(url),
            Err(f) => failed = f,
        }
    }
    // Installed but stopped? Start the newest cluster (Debian's layout).
    if !from_env && installed && failed.iter().all(|(_, e)| no_server(e)) {
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        versions.sort_by_key(|v| (v.len(), v.clone()));
        let Some(v) = versions.last() else {
            bail!(
                "Postgres is installed but has no cluster (nothing in /etc/postgresql). Create \
                 and start one: `sudo pg_createcluster --start $(ls /usr/lib/postgresql | sort -V | tail -n 1) main`, then run demo again"
            );
        };
        eprintln!("demo: no Postgres answers; starting the local cluster {v}/main (pg_ctlcluster {v} main start)");
        let started = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", v, "main", "start"])
            .status();
        if !started.is_ok_and(|s| s.success()) {
            bail!(
                "could not start the Postgres cluster {v}/main; start it with `sudo pg_ctlcluster {v} main start` \
                 (or `sudo systemctl start postgresql`), then run demo again"
            );
        }
        for _ in 0..20 {
            match first_login(&logins).await {
                Ok(url) => return Ok(url),
                Err(f) => failed = f,
            }
            if !failed.iter().all(|(_, e)| no_server(e)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // It answers but lets nobody in: as root, act as the postgres OS user (peer login)
    // to give root a role of its own, after saying so.
    if !from_env && installed && is_root() && !failed.iter().all(|(_, e)| no_server(e)) {
        eprintln!(
            "demo: Postgres lets none of the logins in; creating a superuser role `root` for \
             peer login over the socket (runuser -u postgres -- createuser -s root)"
        );
        let made = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", "createuser", "-s", "root"])
            .current_dir("/")
            .status();
        if made.is_ok_and(|s| s.success()) {
            match first_login(&logins).await {
                Ok(url) => return Ok(url),
                Err(f) => failed = f,
            }
        }
    }
    bail!(advice(&failed, from_env, installed, os_user().as_deref()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `apt-get install postgresql` (through sudo unless root), updating the package lists
/// when the first try fails; Debian's package creates and starts a cluster.
fn install_postgres() -> anyhow::Result<()> {
    let apt = |args: &[&str]| {
        let mut c = if is_root() {
            std::process::Command::new("apt-get")
        } else {
            let mut c = std::process::Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if apt(&["install", "-y", "-qq", "postgresql"])
        || (apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "postgresql"]))
    {
        return Ok(());
    }
    bail!(
        "could not install Postgres (apt-get install postgresql failed); install it yourself, \
         or set DATABASE_URL to a server where you may create a database"
    )
}

/// Why `demo` found no Postgres to use, and what to do: each login tried with its error,
/// then the fix that fits (never to install Postgres where it is installed).
fn advice(
    failed: &[(String, String)],
    from_env: bool,
    installed: bool,
    user: Option<&str>,
) -> String {
    let mut msg = String::from("cannot log in to Postgres. Tried:\n");
    for (what, e) in failed {
        msg.push_str(&format!("  - {what}: {e}\n"));
    }
    if from_env {
        msg.push_str(
            "Fix DATABASE_URL (postgres://USER:PASSWORD@HOST:PORT/postgres, a role that may create databases), or unset it to use the local server",
        );
    } else if !installed {
        msg.push_str(
            "No Postgres is installed here. Install one with `sudo apt-get install postgresql` \
             (scripts/quickstart.sh and scripts/test.sh do), or set DATABASE_URL to a server where you may create a database",
        );
    } else if failed.iter().all(|(_, e)| no_server(e)) {
        msg.push_str(
            "Postgres is installed but does not answer: start it (`sudo pg_ctlcluster <version> main start` \
             or `sudo systemctl start postgresql`), or set DATABASE_URL",
        );
    } else {
        let me = user.unwrap_or("$USER");
        msg.push_str(&format!(
            "Postgres answers but lets none of these in. Either:\n  \
             - give your user a role that peer authentication lets in over the socket: `sudo -u postgres createuser -s {me}`, or\n  \
             - set DATABASE_URL=postgres://postgres:PASSWORD@127.0.0.1:5432/postgres with the postgres role's password \
             (`sudo -u postgres psql -c \"ALTER ROLE postgres PASSWORD '...'\"` sets one)",
        ));
    }
    msg
}

/// Whether `cmd` is on the PATH.
fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(cmd).is_file()))
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
    println!(
        "demo: using Postgres at {}; dropping and recreating its database {db}",
        crate::config::redact_url(&admin)
    );
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
    println!("Ctrl-C stops the demo.");

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
    let history = opts.history;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = simulate::run_live(&sim, history, std::future::pending()).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_the_socket_then_tcp_or_database_url_alone() {
        let what: Vec<String> = logins_for(None, Some("alice".into()))
            .into_iter()
            .map(|l| l.what)
            .collect();
        assert_eq!(
            what,
            [
                "role postgres over the Unix socket /var/run/postgresql",
                "role alice over the Unix socket /var/run/postgresql",
                "role postgres at 127.0.0.1:5432 (TCP, no password)",
            ]
        );
        assert_eq!(logins_for(None, Some("postgres".into())).len(), 2);
        let only = logins_for(Some("postgres://u:secret@db/postgres".into()), None);
        assert_eq!(only.len(), 1);
        assert!(!only[0].what.contains("secret"), "{}", only[0].what);
        assert!(only[0].url.contains("secret"));
    }

    #[test]
    fn the_advice_fits_the_failure() {
        let refused = |what: &str| {
            (
                what.to_owned(),
                "password authentication failed for user \"postgres\"".to_owned(),
            )
        };
        let failed = vec![
            refused("role postgres at 127.0.0.1:5432 (TCP, no password)"),
            (
                "role root over the Unix socket /var/run/postgresql".into(),
                "role \"root\" does not exist".into(),
            ),
        ];
        let a = advice(&failed, false, true, Some("root"));
        assert!(a.contains("role postgres at 127.0.0.1:5432 (TCP, no password): password authentication failed"), "{a}");
        assert!(a.contains("role \"root\" does not exist"), "{a}");
        assert!(a.contains("sudo -u postgres createuser -s root"), "{a}");
        assert!(
            a.contains("DATABASE_URL=postgres://postgres:PASSWORD@127.0.0.1:5432/postgres"),
            "{a}"
        );
        assert!(!a.contains("apt-get install"), "installed: {a}");
        let down = vec![(
            "x".to_owned(),
            "Connection refused (os error 111)".to_owned(),
        )];
        let a = advice(&down, false, true, None);
        assert!(
            a.contains("pg_ctlcluster") && !a.contains("apt-get install"),
            "{a}"
        );
        let a = advice(&down, false, false, None);
        assert!(a.contains("sudo apt-get install postgresql"), "{a}");
        let a = advice(&failed, true, true, None);
        assert!(
            a.contains("Fix DATABASE_URL") && !a.contains("apt-get"),
            "{a}"
        );
    }
}
