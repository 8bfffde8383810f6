//! First benchmark: ingest (durable 204s per second, latency) and drain (events per
//! second from a filled queue into Postgres), with the real release binary over HTTP.
//!
//!   cargo build --release && cargo run --release --example bench -- [clients] [seconds]
//!
//! Phase 1 starts `serve` with Postgres unreachable, so every callback stays in the
//! queue: it measures ingest alone (signature check, parse, append, group-commit fsync).
//! Phase 2 restarts `serve` against a fresh database and times the drain of that queue.
//! The admin connection comes from TEST_DATABASE_URL (default postgres@127.0.0.1).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskrouter_summarizer::signature;
use taskrouter_summarizer::sim::{realistic_day, DayConfig};

const TOKEN: &str = "bench-token";
const PUBLIC: &str = "https://bench.test";

fn config(dir: &std::path::Path, port: u16, db: &str) -> std::path::PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(
        &p,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{PUBLIC}\"\n\
             [queue]\npath = \"{}\"\nworkers = 4\nbatch_size = 1000\n\
             [postgres]\nurl = \"{db}\"\npool_size = 8\nconnect_timeout_secs = 1\n\
             [twilio]\nauth_token = \"{TOKEN}\"\n[log]\nlevel = \"warn\"\n",
            dir.join("queue").display()
        ),
    )
    .expect("config");
    p
}

fn serve(cfg: &std::path::Path) -> Child {
    Command::new("target/release/taskrouter-summarizer")
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .stdout(Stdio::null())
        .spawn()
        .expect("run target/release/taskrouter-summarizer (cargo build --release first)")
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("serve did not start");
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(10);
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());

    // Signed bodies of realistic days (distinct seeds give distinct sids), prepared
    // before the clock starts.
    let mut bodies = Vec::new();
    let mut seed = 1;
    while bodies.len() < 400_000 {
        let day = realistic_day(&DayConfig {
            seed,
            tasks: 3000,
            workers: 60,
            ..DayConfig::default()
        });
        for cb in day.callbacks {
            let sig = signature::compute(TOKEN, &format!("{PUBLIC}/ingress"), &cb);
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&cb)
                .finish();
            bodies.push((body, sig));
        }
        seed += 1;
    }
    let bodies = Arc::new(bodies);

    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");

    // Phase 1: ingest only (Postgres unreachable: port 1).
    let cfg = config(dir.path(), port, "postgres://nobody@127.0.0.1:1/none");
    let mut child = serve(&cfg);
    wait_up(&http, &base).await;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut lanes = Vec::new();
    for _ in 0..clients {
        let (http, bodies, next, url) = (
            http.clone(),
            bodies.clone(),
            next.clone(),
            format!("{base}/ingress"),
        );
        lanes.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((body, sig)) = bodies.get(i) else {
                    break;
                };
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-twilio-signature", sig)
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 204 => lat.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for l in lanes {
        let (l, e) = l.await.expect("lane");
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "ingest: {clients} clients, {elapsed:.1} s: {} acks ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, errors {errors}",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let queued = lat.len();

    // Phase 2: drain the filled queue into a fresh database.
    let name = format!("trs_bench_{}", std::process::id());
    let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        c.batch_execute(&sql).await.expect("create db");
    }
    let mut u = url::Url::parse(&admin).expect("url");
    u.set_path(&format!("/{name}"));
    let cfg = config(dir.path(), port, u.as_str());
    let st = Command::new("target/release/taskrouter-summarizer")
        .arg("--config")
        .arg(&cfg)
        .arg("migrate")
        .stdout(Stdio::null())
        .status()
        .expect("migrate");
    assert!(st.success());
    let started = Instant::now();
    let mut child = serve(&cfg);
    wait_up(&http, &base).await;
    loop {
        let r: serde_json::Value = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        if r["queue"]["depth"].as_u64() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let r: serde_json::Value = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    println!(
        "queue on disk after the drain: {} bytes",
        r["queue"]["disk_bytes"]
    );
    println!(
        "drain: {queued} events into Postgres in {elapsed:.1} s ({:.0} events/s, including start-up)",
        queued as f64 / elapsed
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let _ = c
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}
