//! The bench's parts: the binary under test and its config, the load generator, the
//! ceilings' stand-ins (a bare 204 server, a Sync stand-in) and readers of `/proc`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "bench-token";
pub const PUBLIC: &str = "https://bench.test";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The admin side shares the public port in the bench, behind this token.
pub const ADMIN_TOKEN: &str = "bench-admin-token";

pub fn config(dir: &std::path::Path, port: u16, db: &str, extra: &str) -> std::path::PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(
        &p,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{PUBLIC}\"\n\
             admin_listen = \"\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
             [queue]\npath = \"{}\"\nworkers = 4\n{}\n\
             [postgres]\nurl = \"{db}\"\npool_size = 8\nconnect_timeout_secs = 1\n\
             [twilio]\nauth_token = \"{TOKEN}\"\n{extra}\n[log]\nlevel = \"warn\"\n",
            dir.join("queue").display(),
            // BENCH_QUEUE="in_flight_mb = 8" tries a queue setting.
            std::env::var("BENCH_QUEUE").unwrap_or_default()
        ),
    )
    .expect("config");
    p
}

/// The binary under test: `BENCH_BIN`, or this checkout's release build.
pub fn binary() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| "target/release/taskrouter-summarizer".into())
}

pub fn serve(cfg: &std::path::Path) -> Child {
    Command::new(binary())
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run target/release/taskrouter-summarizer (cargo build --release first)")
}

pub fn stop(mut child: Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

pub async fn wait_up(http: &reqwest::Client, base: &str) {
    for _ in 0..400 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not start");
}

/// The backlog `/readyz` reports.
pub async fn queue_depth(http: &reqwest::Client, base: &str) -> Option<u64> {
    let r: serde_json::Value = http
        .get(format!("{base}/readyz"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    r["queue"]["depth"].as_u64()
}

pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub struct Load {
    pub acks: usize,
    pub errors: usize,
    pub secs: f64,
    pub lat: Vec<Duration>,
}

impl Load {
    pub fn line(&self, what: &str) -> String {
        format!(
            "{what}: {} acks in {:.1} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
            self.acks,
            self.secs,
            self.acks as f64 / self.secs,
            pct(&self.lat, 0.5),
            pct(&self.lat, 0.99),
            self.errors
        )
    }
}

/// A signed request: its path, form body and signature.
pub type Body = (&'static str, String, String);

/// Posts signed bodies from `bodies` (each at most once) to `base` with `clients`
/// concurrent clients for `secs`, as fast as possible or paced at `rate` per second
/// overall.
pub async fn load(
    url: &str,
    bodies: &Arc<Vec<Body>>,
    next: &Arc<AtomicUsize>,
    clients: usize,
    rate: Option<u32>,
    secs: u64,
) -> Load {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut lanes = Vec::new();
    for lane in 0..clients {
        let (http, bodies, next, url) =
            (http.clone(), bodies.clone(), next.clone(), url.to_owned());
        lanes.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            // Paced: each lane sends at rate/clients, offset so lanes interleave.
            let period = rate.map(|r| Duration::from_secs_f64(clients as f64 / r as f64));
            let mut due = Instant::now()
                + period
                    .map(|p| p.mul_f64(lane as f64 / clients as f64))
                    .unwrap_or_default();
            while Instant::now() < deadline {
                if let Some(p) = period {
                    tokio::time::sleep_until(due.into()).await;
                    due += p;
                }
                let i = next.fetch_add(1, Relaxed);
                let Some((path, body, sig)) = bodies.get(i) else {
                    break;
                };
                let t = Instant::now();
                let r = http
                    .post(format!("{url}{path}"))
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
    lat.sort();
    Load {
        acks: lat.len(),
        errors,
        secs: started.elapsed().as_secs_f64(),
        lat,
    }
}

/// A bare hyper server answering 204 to everything: the ingest ceiling.
pub async fn bare_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut r = hyper::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = hyper::StatusCode::NO_CONTENT;
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

/// A Sync stand-in that accepts every write and records when each document's data
/// arrived: for freshness.
pub async fn sync_stub(seen: Arc<Mutex<Vec<(Instant, String, String)>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let data = form_urlencoded::parse(&body)
                                .find(|(k, _)| k == "Data")
                                .map(|(_, v)| v.into_owned())
                                .unwrap_or_default();
                            seen.lock().unwrap_or_else(|p| p.into_inner()).push((
                                Instant::now(),
                                path,
                                data,
                            ));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"{}"),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

pub async fn admin_db(admin: &str, name: &str) -> String {
    let (c, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        c.batch_execute(&sql).await.expect("create db");
    }
    let mut u = url::Url::parse(admin).expect("url");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

pub fn migrate(cfg: &std::path::Path) {
    let st = Command::new(binary())
        .arg("--config")
        .arg(cfg)
        .arg("migrate")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("migrate");
    assert!(st.success());
}

/// Samples a process's RSS every 200 ms until aborted: the peak so far, in KiB.
pub fn watch_rss(pid: u32) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let p = peak.clone();
    let task = tokio::spawn(async move {
        loop {
            p.fetch_max(rss_kib(pid), Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (peak, task)
}

pub fn mib(kib: &AtomicU64) -> f64 {
    kib.load(Relaxed) as f64 / 1024.0
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_secs(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): utime is the 12th.
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(f.iter().sum::<u64>())
        })
        .unwrap_or(0);
    ticks as f64 / clock_ticks()
}

/// CPU seconds the whole machine has been busy (all but idle and iowait), all cores.
pub fn machine_busy_secs() -> f64 {
    let line = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = line
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle) as f64 / clock_ticks()
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}
