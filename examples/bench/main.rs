//! Benchmarks against the targets, with the real release binary over HTTP, each next to
//! a ceiling measured on the same machine in the same run.
//!
//!   cargo build --release && cargo run --release --example bench
//!
//! (a) ingest: durable 204/s and p50/p99 at 64 and 256 clients (Postgres unreachable, so
//!     only ingest runs), p99 at a steady 2,000/s; ceiling: a bare hyper server answering
//!     204 to the same load generator.
//! (b) drain: events/s from the filled queue into an empty database; ceiling: pgbench
//!     running a hand-written batched upsert of the same number of rows.
//! (c) freshness: callback → summary document written to a Sync stand-in, p50/p99.
//! (d) RSS of `serve` at a steady 5,000 callbacks/s.
//! Summary cost is `examples/summary_cost.rs`. Admin connection: TEST_DATABASE_URL.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use taskrouter_summarizer::ingest::signature;
use taskrouter_summarizer::sim::simulate::plan;

#[tokio::main]
async fn main() {
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);

    // Signed requests of simulated days as `simulate` sends them (TaskRouter callbacks
    // and Conversations messages; distinct seeds give distinct sids), prepared before
    // any clock starts. BENCH_AGENTS sets the center's size (200; 20 for a small one).
    let agents: usize = std::env::var("BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let soak_mins: u64 = std::env::var("BENCH_SOAK_MINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let only = std::env::var("BENCH_ONLY").ok();
    let named = |part: &str| {
        only.as_deref()
            .is_some_and(|o| o.split(',').any(|p| p == part))
    };
    let want = |part: &str| only.is_none() || named(part);
    // The soak posts 2,000 distinct requests a second.
    let soak = named("soak");
    let needed = if soak {
        900_000.max(soak_mins as usize * 60 * 2_000 + 10_000)
    } else {
        900_000
    };
    let mut bodies = Vec::new();
    let mut seed = 1;
    while bodies.len() < needed {
        let (_, day) = plan(seed, agents, 5000, 1_767_254_400_000);
        for (_, message, cb) in day {
            let path = if message {
                "/conversations"
            } else {
                "/ingress"
            };
            let sig = signature::compute(TOKEN, &format!("{PUBLIC}{path}"), &cb);
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&cb)
                .finish();
            bodies.push((path, body, sig));
        }
        seed += 1;
    }
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let mut report = Vec::new();

    // BENCH_ONLY=ingest,drain,ingest-while-draining,freshness,rss,soak runs some parts
    // (drain needs ingest's queue; the soak, 30 minutes, runs only when named).

    // (a) ingest.
    let ceiling_port = bare_server().await;
    let ceiling_url = format!("http://127.0.0.1:{ceiling_port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = config(dir.path(), port, "postgres://nobody@127.0.0.1:1/none", "");
    let child = serve(&cfg);
    wait_up(&http, &base).await;
    let fill = want("ingest") || want("drain");
    for clients in [64, 256].into_iter().filter(|_| fill) {
        let c = load(
            &ceiling_url,
            &bodies,
            &Arc::new(AtomicUsize::new(0)),
            clients,
            None,
            secs,
        )
        .await;
        let s = load(&base, &bodies, &next, clients, None, secs).await;
        report.push(s.line(&format!("ingest, {clients} clients")));
        report.push(c.line(&format!("  ceiling (bare hyper 204), {clients} clients")));
        report.push(format!(
            "  ratio {:.2}",
            s.acks as f64 / s.secs / (c.acks as f64 / c.secs)
        ));
        println!("{}", report[report.len() - 3..].join("\n"));
    }
    if fill {
        let s = load(&base, &bodies, &next, 64, Some(2000), secs).await;
        report.push(s.line("ingest, steady 2,000/s"));
        println!("{}", report.last().expect("line"));
    }
    stop(child);
    let queued = next.load(Relaxed).min(bodies.len());

    if want("drain") {
        // (b) drain the filled queue into an empty database.
        let db = admin_db(&admin, "trs_bench_drain").await;
        let cfg = config(dir.path(), port, &db, "");
        migrate(&cfg);
        let started = Instant::now();
        let busy0 = machine_busy_secs();
        let child = serve(&cfg);
        let (peak, sampler) = watch_rss(child.id());
        wait_up(&http, &base).await;
        let depth0: u64 = loop {
            if let Some(d) = queue_depth(&http, &base).await {
                break d;
            }
        };
        loop {
            if queue_depth(&http, &base).await == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drain = started.elapsed().as_secs_f64();
        // Where the CPU went: this service, and the rest of the machine (Postgres, the
        // bench's polling): the floor of each side on these cores.
        let (own, busy) = (cpu_secs(child.id()), machine_busy_secs() - busy0);
        sampler.abort();
        stop(child);
        let per = |secs: f64| secs * 1e6 / depth0.max(1) as f64;
        report.push(format!(
            "drain ({agents} agents): {depth0} queued events (of {queued} acked) into Postgres in {drain:.1} s = {:.0} events/s (start-up included); peak RSS {:.1} MiB\n  CPU per event: serve {:.0} µs, the rest of the machine (Postgres) {:.0} µs, {} cores' wall {:.0} µs",
            depth0 as f64 / drain,
            mib(&peak),
            per(own),
            per(busy - own),
            cores(),
            per(drain * cores() as f64)
        ));
        // Ceiling: pgbench, 4 clients, each transaction a batched upsert of 1,000 events and
        // the matching state rows (the same shape of work, without the rules).
        let script = dir.path().join("upsert.sql");
        std::fs::write(
        &script,
        "\\set b random(1, 1000000000)\n\
         INSERT INTO events (sid, event_type, occurred_at, received_at, data, task_sid) \
         SELECT 'EVb' || :b || '-' || g, 'task.updated', now(), now(), \
         jsonb_build_object('TaskAttributes', repeat('x', 600), 'g', g), 'WTb' || (:b % 1000) || '-' || (g % 200) \
         FROM generate_series(1, 1000) g ON CONFLICT (sid) DO NOTHING;\n\
         INSERT INTO tasks (sid, task_assignment_status, age, state) \
         SELECT 'WTb' || (:b % 1000) || '-' || g, 'assigned', g, jsonb_build_object('age', g) \
         FROM generate_series(1, 200) g \
         ON CONFLICT (sid) DO UPDATE SET task_assignment_status = EXCLUDED.task_assignment_status, age = EXCLUDED.age, state = EXCLUDED.state;\n",
    )
    .expect("script");
        let busy0 = machine_busy_secs();
        let out = Command::new("pgbench")
            .args(["-n", "-c", "4", "-j", "2", "-T", &secs.to_string(), "-f"])
            .arg(&script)
            .arg(&db)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                let tps: f64 = text
                    .lines()
                    .find(|l| l.starts_with("tps"))
                    .and_then(|l| l.split_whitespace().nth(2))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0);
                let busy = machine_busy_secs() - busy0;
                report.push(format!(
                "  ceiling (pgbench, batched upsert of 1,000 events + 200 task rows per transaction): {:.0} events/s; ratio {:.2}; CPU per event (Postgres and pgbench) {:.0} µs",
                tps * 1000.0,
                (depth0 as f64 / drain) / (tps * 1000.0),
                busy * 1e6 / (tps * 1000.0 * secs as f64).max(1.0)
            ));
            }
            other => report.push(format!("  ceiling: pgbench did not run ({other:?})")),
        }
        println!("{}", report[report.len() - 2..].join("\n"));
    }

    if want("ingest-while-draining") {
        // (b2) a burst while a backlog drains (a Monday spike after a Postgres
        // maintenance window): fill the queue with Postgres unreachable, then start with
        // Postgres and post for `secs` at 64 clients while the backlog applies.
        let target: u64 = std::env::var("BENCH_BACKLOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let qdir = tempfile::tempdir().expect("tempdir");
        let down = config(qdir.path(), port, "postgres://nobody@127.0.0.1:1/none", "");
        let child = serve(&down);
        wait_up(&http, &base).await;
        let mut filled = 0;
        while filled < target {
            let before = next.load(Relaxed);
            load(&base, &bodies, &next, 64, None, 5).await;
            if next.load(Relaxed) == before {
                break; // out of bodies
            }
            filled = queue_depth(&http, &base).await.unwrap_or(0);
        }
        stop(child);
        let db = admin_db(&admin, "trs_bench_iwd").await;
        let up = config(qdir.path(), port, &db, "");
        migrate(&up);
        // The ceiling in the same run, just before the burst.
        let c = load(
            &ceiling_url,
            &bodies,
            &Arc::new(AtomicUsize::new(0)),
            64,
            None,
            secs,
        )
        .await;
        let child = serve(&up);
        let (peak, sampler) = watch_rss(child.id());
        wait_up(&http, &base).await;
        let depth0 = queue_depth(&http, &base).await.unwrap_or(0);
        let burst = load(&base, &bodies, &next, 64, None, secs).await;
        let after = queue_depth(&http, &base).await.unwrap_or(0);
        let t = Instant::now();
        while queue_depth(&http, &base).await != Some(0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let catch_up = t.elapsed().as_secs_f64();
        sampler.abort();
        stop(child);
        report.push(burst.line(&format!(
            "ingest while draining ({depth0} queued at the start), 64 clients"
        )));
        report.push(c.line("  ceiling (bare hyper 204), 64 clients, same run"));
        report.push(format!(
            "  ratio {:.2}; {after} left queued after the burst, drained in {catch_up:.1} s ({:.0} events/s); peak RSS {:.1} MiB",
            burst.acks as f64 / burst.secs / (c.acks as f64 / c.secs),
            after as f64 / catch_up.max(0.001),
            mib(&peak)
        ));
        println!("{}", report[report.len() - 3..].join("\n"));
    }

    if want("freshness") {
        // (c) freshness: callback → summary document written to Sync.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sync_port = sync_stub(seen.clone()).await;
        let db = admin_db(&admin, "trs_bench_fresh").await;
        let extra = format!(
        "account_sid = \"AC0123456789abcdef0123456789abcdef\"\nsync_service_sid = \"IS0123456789abcdef0123456789abcdef\"\nsync_url = \"http://127.0.0.1:{sync_port}\""
    );
        let cfg = config(dir.path(), port, &db, &extra);
        migrate(&cfg);
        let _ = std::fs::remove_dir_all(dir.path().join("queue"));
        let child = serve(&cfg);
        wait_up(&http, &base).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut fresh = Vec::new();
        for n in 1..=30u32 {
            let now = chrono::Utc::now().timestamp_millis();
            let cb: Vec<(String, String)> = [
                ("EventType", "task.created".to_owned()),
                ("Sid", format!("EVfresh{n}")),
                ("TaskSid", format!("WTfresh{n}")),
                ("TaskAssignmentStatus", "pending".to_owned()),
                ("TaskChannelUniqueName", "custom3".to_owned()),
                ("TaskAge", "0".to_owned()),
                ("TimestampMs", now.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let sig = signature::compute(TOKEN, &format!("{PUBLIC}/ingress"), &cb);
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&cb)
                .finish();
            let sent = Instant::now();
            let r = http
                .post(format!("{base}/ingress"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", sig)
                .body(body)
                .send()
                .await
                .expect("post");
            assert_eq!(r.status().as_u16(), 204);
            let want = format!("\"custom3\":{n}");
            loop {
                let hit = seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|(t, path, data)| {
                        *t >= sent
                            && path.ends_with("workspaceActiveTaskCount")
                            && data.contains(&want)
                    })
                    .map(|(t, _, _)| *t);
                if let Some(t) = hit {
                    fresh.push(t - sent);
                    break;
                }
                assert!(sent.elapsed() < Duration::from_secs(20), "never published");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Spread the samples over the publish schedule.
            tokio::time::sleep(Duration::from_millis(137 * (n as u64 % 7))).await;
        }
        fresh.sort();
        report.push(format!(
        "freshness (callback → Sync document written), 30 samples: p50 {:.0} ms, p99 {:.0} ms (publish.schedule every second)",
        pct(&fresh, 0.5),
        pct(&fresh, 0.99)
    ));
        println!("{}", report.last().expect("line"));
        stop(child);
    }

    if want("rss") {
        // (d) RSS at a steady 5,000 callbacks/s, with Postgres applying.
        let db = admin_db(&admin, "trs_bench_rss").await;
        let cfg = config(dir.path(), port, &db, "");
        migrate(&cfg);
        let _ = std::fs::remove_dir_all(dir.path().join("queue"));
        let child = serve(&cfg);
        wait_up(&http, &base).await;
        let (peak, sampler) = watch_rss(child.id());
        // Every 5 s: RSS and backlog, so the peak can be told apart from a backlog's.
        let points = Arc::new(Mutex::new(Vec::new()));
        let timeline = {
            let (http, base, pid, points) =
                (http.clone(), base.clone(), child.id(), points.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let depth = queue_depth(&http, &base).await.unwrap_or(0);
                    let point = format!("{:.0}/{depth}", rss_kib(pid) as f64 / 1024.0);
                    points.lock().expect("points").push(point);
                }
            })
        };
        let s = load(
            &base,
            &bodies,
            &next,
            64,
            Some(5000),
            std::env::var("BENCH_RSS_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60),
        )
        .await;
        sampler.abort();
        timeline.abort();
        report.push(s.line("steady 5,000/s with Postgres applying (the simulate mix)"));
        report.push(format!("  peak RSS of serve: {:.1} MiB", mib(&peak)));
        report.push(format!(
            "  RSS MiB/backlog every 5 s: {}",
            points.lock().expect("points").join(" ")
        ));
        println!("{}", report[report.len() - 3..].join("\n"));
        stop(child);
    }

    if soak {
        // (e) soak: 2,000/s for BENCH_SOAK_MINS minutes with Postgres applying; a line
        // per minute (acks, p50/p99, peak RSS, backlog) in BENCH_SOAK_CSV.
        let db = admin_db(&admin, "trs_bench_soak").await;
        let cfg = config(dir.path(), port, &db, "");
        migrate(&cfg);
        let _ = std::fs::remove_dir_all(dir.path().join("queue"));
        let child = serve(&cfg);
        wait_up(&http, &base).await;
        let csv_path = std::env::var("BENCH_SOAK_CSV").unwrap_or_else(|_| "target/soak.csv".into());
        let mut csv =
            String::from("minute,acks,errors,p50_ms,p99_ms,rss_peak_mib,backlog_max,backlog_end\n");
        let mut worst = (0.0f64, 0.0f64, 0u64);
        for minute in 1..=soak_mins {
            let (peak, sampler) = watch_rss(child.id());
            let backlog = Arc::new(AtomicU64::new(0));
            let depths = {
                let (backlog, http, base) = (backlog.clone(), http.clone(), base.clone());
                tokio::spawn(async move {
                    loop {
                        if let Some(d) = queue_depth(&http, &base).await {
                            backlog.fetch_max(d, Relaxed);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            };
            let s = load(&base, &bodies, &next, 32, Some(2000), 60).await;
            sampler.abort();
            depths.abort();
            let end = queue_depth(&http, &base).await.unwrap_or(0);
            let (p99, rss) = (pct(&s.lat, 0.99), mib(&peak));
            worst = (
                worst.0.max(p99),
                worst.1.max(rss),
                worst.2.max(backlog.load(Relaxed)),
            );
            let row = format!(
                "{minute},{},{},{:.2},{p99:.2},{rss:.1},{},{end}",
                s.acks,
                s.errors,
                pct(&s.lat, 0.5),
                backlog.load(Relaxed)
            );
            println!("soak {row}");
            csv.push_str(&row);
            csv.push('\n');
            std::fs::write(&csv_path, &csv).expect("soak csv");
        }
        stop(child);
        report.push(format!(
            "soak, 2,000/s for {soak_mins} min (the simulate mix): worst minute p99 {:.2} ms, peak RSS {:.1} MiB, largest backlog {}; per minute in {csv_path}",
            worst.0, worst.1, worst.2
        ));
        println!("{}", report.last().expect("line"));
    }

    println!("\n== results\n{}", report.join("\n"));
}
