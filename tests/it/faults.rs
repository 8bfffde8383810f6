//! Fault and abuse tests: a full disk, slow clients, secrets in logs, protected admin
//! endpoints, and two instances sharing one database.

use crate::harness::*;
use crate::ingest::{assert_day_applied, assert_state_matches, stored_events};
use crate::outage::PrivatePg;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};
use taskrouter_summarizer::sim::{realistic_day, DayConfig};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn callback(n: u32) -> Params {
    Cb::task("task.created", wt(n))
        .ev(n)
        .status("pending")
        // Bulky attributes fill the disk faster, as real ones do.
        .attributes(format!(r#"{{"padding":"{}"}}"#, "x".repeat(1500)))
        .at(1_767_254_400_000i64 + n as i64)
        .build()
}

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs");
        Tmpfs(dir.to_owned())
    }
    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("remount");
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503_never_a_false_204_and_recovers_by_itself() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let pg = PrivatePg::start_new();
    let db = TestDb::on(&pg.admin_url()).await;
    let mnt = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(mnt.path(), "6m");
    let mut svc = Service::start(Options::new(&db.url)).await;
    // Move the queue onto the small filesystem: restart with queue.path there.
    assert!(svc.terminate().success());
    let cfg = std::fs::read_to_string(&svc.config).unwrap();
    let queue_line = cfg
        .lines()
        .find(|l| l.starts_with("path = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &svc.config,
        cfg.replace(
            &queue_line,
            &format!("path = \"{}\"", mnt.path().join("q").display()),
        ),
    )
    .unwrap();
    svc.spawn().await;
    // Nothing drains while Postgres is down, so the queue only grows.
    pg.stop();
    let mut acked = HashSet::new();
    let mut refused = 0;
    let mut n = 0;
    while refused < 20 && n < 20_000 {
        n += 1;
        match svc.post(&callback(n)).await {
            Ok(204) => {
                acked.insert(format!("EV{n:032x}"));
            }
            Ok(503) => refused += 1,
            other => panic!("unexpected answer {other:?}: {}", svc.log()),
        }
    }
    assert!(refused >= 20, "the disk never filled ({n} posts)");
    let full_at = acked.len();
    // Space returns: ingress recovers without a restart.
    fs.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        n += 1;
        match svc.post(&callback(n)).await {
            Ok(204) => {
                acked.insert(format!("EV{n:032x}"));
                break;
            }
            Ok(503) => {}
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "ingress did not recover after space returned: {}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..20 {
        n += 1;
        assert_eq!(svc.post(&callback(n)).await.unwrap(), 204);
        acked.insert(format!("EV{n:032x}"));
    }
    pg.start();
    svc.wait_drained(Duration::from_secs(60)).await;
    let acked: Vec<String> = acked.into_iter().collect();
    let found: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM events WHERE sid = ANY($1)", &[&acked])
        .await
        .unwrap()
        .get(0);
    println!(
        "disk full after {full_at} acks; {} acked in all, all stored",
        acked.len()
    );
    assert_eq!(
        found as usize,
        acked.len(),
        "an acknowledged callback was lost"
    );
    drop(svc);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_one_address_reach_the_same_rows() {
    let db = TestDb::new().await;
    let a = Service::start(Options::new(&db.url)).await;
    let b = Service::start(Options::new(&db.url)).await;
    let day = realistic_day(&DayConfig {
        seed: 33,
        tasks: 150,
        ..DayConfig::default()
    });
    // A load balancer alternating between the instances (each with its own queue); some
    // callbacks are delivered to both, as a retrying sender might.
    let (to_a, to_b): (Vec<_>, Vec<_>) = day
        .callbacks
        .iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let to_a: Vec<_> = to_a.into_iter().map(|(_, c)| c.clone()).collect();
    let mut to_b: Vec<_> = to_b.into_iter().map(|(_, c)| c.clone()).collect();
    to_b.extend(to_a.iter().step_by(10).cloned());
    let (sa, sb) = tokio::join!(post_all(&a, &to_a, 16), post_all(&b, &to_b, 16));
    assert!(sa.iter().chain(&sb).all(|s| *s == 204));
    a.wait_drained(Duration::from_secs(60)).await;
    b.wait_drained(Duration::from_secs(60)).await;
    assert_day_applied(&db, &day.callbacks).await;
    assert_state_matches(&db, &stored_events(&db).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_connections_are_bounded() {
    let db = TestDb::new().await;
    // Server keys go into the harness's [server] table through a config rewrite.
    let mut svc = Service::start(Options::new(&db.url)).await;
    assert!(svc.terminate().success());
    let cfg = std::fs::read_to_string(&svc.config).unwrap();
    std::fs::write(
        &svc.config,
        cfg.replace(
            "shutdown_grace_secs = 5",
            "shutdown_grace_secs = 5\nread_timeout_secs = 1\nmax_connections = 8",
        ),
    )
    .unwrap();
    svc.spawn().await;
    let addr = format!("127.0.0.1:{}", svc.port);

    // A client trickling its headers is disconnected after the read timeout.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /ingress HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "not cut off: {took:?}");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.contains("408"), "{text}");

    // A client trickling its body gets 408 after the read timeout.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"POST /ingress HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: x\r\nContent-Length: 100\r\n\r\nEventType=",
    )
    .unwrap();
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // Idle connections beyond max_connections wait; the service still answers once
    // they are gone.
    let idle: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        reqwest::Client::new().get(svc.url("/healthz")).send(),
    )
    .await;
    assert!(
        r.is_err() || r.unwrap().is_err(),
        "a 9th connection was served"
    );
    drop(idle);
    // The idle ones are closed by the header timeout anyway; then service resumes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = reqwest::Client::new();
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(2),
            fresh.get(svc.url("/healthz")).send(),
        )
        .await
        {
            assert!(r.status().is_success());
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_and_admin_endpoints_can_be_protected() {
    let db = TestDb::new().await;
    // Trust authentication ignores the password, so it can be a canary.
    let with_password = db.url.replacen("postgres@", "postgres:pw-canary-31337@", 1);
    assert!(with_password.contains("pw-canary-31337"));
    let opts = Options::new(&with_password).admin_token("admin-canary-777");
    let mut svc = Service::start(opts).await;
    let admin_port = svc.admin_port.expect("an admin listener");
    // Provoke the paths that log: a forged signature, a bad body, an unknown route.
    let p = callback(1);
    let _ = svc.post_raw(encode(&p), Some("Zm9yZ2Vk")).await;
    let _ = svc.post_raw("%zz=%ff".into(), Some("x")).await;
    assert_eq!(svc.post(&p).await.unwrap(), 204);
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.count("SELECT count(*) FROM events").await < 1 {
        assert!(Instant::now() < deadline, "not applied: {}", svc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Admin endpoints: not on the public listener; on the admin one only with the token.
    let public = svc.http.get(svc.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status().as_u16(), 404);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let r = svc
        .http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = svc
        .http
        .get(format!("{admin}/metrics"))
        .bearer_auth("admin-canary-777")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The process reports its own resident memory (a real, plausible number).
    let text = r.text().await.unwrap();
    let rss: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("process_resident_memory_bytes in /metrics");
    assert!((1 << 20..1 << 32).contains(&rss), "{rss}");
    let r = svc
        .http
        .post(format!("{admin}/ingress"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "webhooks are not on the admin listener"
    );
    assert_eq!(
        svc.http
            .get(svc.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    let _ = svc.terminate();
    let out = svc.command(&["check-config"]).output().unwrap();
    let all = format!(
        "{}{}{}",
        svc.log(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in ["pw-canary-31337", AUTH_TOKEN, "admin-canary-777"] {
        assert!(!all.contains(secret), "secret {secret} leaked:\n{all}");
    }
}
