//! Cost of computing the summaries with many past tasks in the database.
//!   cargo run --release --example summary_cost -- 10000 1000000
//! For each size: a fresh database, N past tasks spread over the previous 90 days, plus
//! a busy day today (3,000 tasks, 40 open), then the median of 20 summary computations.
use std::time::Instant;
use taskrouter_summarizer::config::Config;
use taskrouter_summarizer::{apply::store, publish::summary};

#[tokio::main]
async fn main() {
    let sizes: Vec<i64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    for n in if sizes.is_empty() {
        vec![10_000, 1_000_000]
    } else {
        sizes
    } {
        let name = format!("trs_cost_{n}");
        let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("admin");
        tokio::spawn(conn);
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create");
        let mut u = url::Url::parse(&admin).expect("url");
        u.set_path(&format!("/{name}"));
        let mut cfg = Config::from_toml("").expect("cfg");
        cfg.postgres.url = taskrouter_summarizer::config::Secret::new(u.as_str());
        let pool = store::pool(&cfg.postgres).expect("pool");
        store::migrate(&pool).await.expect("migrate");
        let db = pool.get().await.expect("conn");
        let t = Instant::now();
        // Past tasks: ended, spread over 90 days before today.
        db.batch_execute(&format!(
            "INSERT INTO tasks (sid, task_queue_name, task_channel_unique_name, task_assignment_status,
                task_created, first_accepted_at, ended_at, answered_in, acw_start, total_time, within_sla)
             SELECT 'WT' || g, (ARRAY['Sales','Support','Billing'])[1 + g % 3],
                (ARRAY['voice','chat','sms'])[1 + g % 3], 'completed',
                ts, ts + interval '20 s', ts + interval '400 s', 20, 300, 400, g % 2 = 0
             FROM (SELECT g, date_trunc('day', now()) - (g % 7776000) * interval '1 s' - interval '1 hour' AS ts
                   FROM generate_series(1, {n}) g) s;
             INSERT INTO tasks (sid, task_queue_name, task_channel_unique_name, task_assignment_status,
                task_created, first_accepted_at, ended_at, answered_in, acw_start, total_time, within_sla)
             SELECT 'WTtoday' || g, (ARRAY['Sales','Support','Billing'])[1 + g % 3],
                (ARRAY['voice','chat','sms'])[1 + g % 3],
                CASE WHEN g <= 40 THEN 'pending' ELSE 'completed' END,
                ts, CASE WHEN g > 40 THEN ts + interval '12 s' END, CASE WHEN g > 40 THEN ts + interval '300 s' END,
                CASE WHEN g > 40 THEN 12 END, CASE WHEN g > 40 THEN 250 END, CASE WHEN g > 40 THEN 300 END,
                CASE WHEN g > 40 THEN true END
             FROM (SELECT g, greatest(date_trunc('day', now()), now() - interval '8 hours') + g * interval '5 s' AS ts
                   FROM generate_series(1, 3000) g) s
             WHERE ts < now();
             ANALYZE tasks;"
        ))
        .await
        .expect("populate");
        let load = t.elapsed();
        let sla = cfg.sla.clone();
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            summary::compute(&pool, &sla, chrono::Utc::now())
                .await
                .expect("summary");
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{n} past tasks (+ today's): summary median {:.1} ms, max {:.1} ms (load {:.0} s)",
            times[10].as_secs_f64() * 1000.0,
            times[19].as_secs_f64() * 1000.0,
            load.as_secs_f64()
        );
        drop(db);
        drop(pool);
        let _ = c
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}
