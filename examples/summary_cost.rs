//! Cost of computing the summaries, reports and agents with many past tasks in the
//! database.
//!   cargo run --release --example summary_cost -- 10000 1000000
//! For each size: a fresh database, N past tasks spread over the previous 30 days, plus
//! a busy day today (3,000 tasks, 40 open), then the median of 20 summary computations;
//! then the rollups of all of them, and the median of 20 30-day, 30-minute reports per
//! queue; then a 2,000-agent day (reservations, tasks, activity intervals) and the
//! median of 20 `/api/agents` computations.
use std::time::Instant;
use taskrouter_summarizer::config::Config;
use taskrouter_summarizer::publish::{agents, report};
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
            "INSERT INTO tasks (sid, task_queue_sid, task_queue_name, task_channel_unique_name, task_assignment_status,
                task_created, first_accepted_at, ended_at, answered_in, acw_start, total_time, within_sla)
             SELECT 'WT' || g, 'WQ' || g % 3, (ARRAY['Sales','Support','Billing'])[1 + g % 3],
                (ARRAY['voice','chat','sms'])[1 + g % 3], 'completed',
                ts, ts + interval '20 s', ts + interval '400 s', 20, 300, 400, g % 2 = 0
             FROM (SELECT g, date_trunc('day', now()) - (g % 2592000) * interval '1 s' - interval '1 hour' AS ts
                   FROM generate_series(1, {n}) g) s;
             INSERT INTO tasks (sid, task_queue_sid, task_queue_name, task_channel_unique_name, task_assignment_status,
                task_created, first_accepted_at, ended_at, answered_in, acw_start, total_time, within_sla)
             SELECT 'WTtoday' || g, 'WQ' || g % 3, (ARRAY['Sales','Support','Billing'])[1 + g % 3],
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

        // Interval rollups of every task, then 30-day reports per queue.
        let st = store::Store::new(pool.clone(), store::Settings::from_config(&cfg));
        let t = Instant::now();
        st.mark_all_rollups().await.expect("mark");
        st.refresh_all_rollups().await.expect("rollups");
        let build = t.elapsed();
        let rs = report::Settings::from_config(&cfg);
        let now = chrono::Utc::now();
        let req = report::Request::parse(
            Some(&(now - chrono::Duration::days(30)).to_rfc3339()),
            Some(&now.to_rfc3339()),
            Some("30m"),
            Some("queue"),
            &rs.tz,
        )
        .expect("request");
        let in_range: i64 = db
            .query_one(
                "SELECT count(*) FROM tasks WHERE task_created >= now() - interval '30 days'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        let (times, rows) = median_of_20(|| async {
            report::run(&pool, &rs, &req, chrono::Utc::now())
                .await
                .expect("report")
                .len()
        })
        .await;
        // What the rollups save: the same numbers straight from `tasks` (3 runs).
        let direct = median_of(3, || async {
            db.query(
                "SELECT date_bin('30 minutes', task_created, timestamptz '2000-01-01'), task_queue_sid,
                    count(*), count(*) FILTER (WHERE first_accepted_at IS NOT NULL),
                    count(*) FILTER (WHERE within_sla), avg(answered_in), avg(total_time - answered_in)
                 FROM tasks WHERE task_created >= now() - interval '30 days' GROUP BY 1, 2",
                &[],
            )
            .await
            .expect("direct")
            .len()
        })
        .await
        .0;
        println!(
            "{n} past tasks: 30-day 30-minute report per queue ({in_range} tasks, {rows} rows): \
             median {:.1} ms, max {:.1} ms (rollups built in {:.1} s; the same GROUP BY over tasks: \
             median of 3 {:.0} ms)",
            ms(times[10]),
            ms(times[19]),
            build.as_secs_f64(),
            ms(direct[1])
        );

        // A 2,000-agent day: 25 reservations each (accepted, then completed), their tasks,
        // and an activity change every 20 minutes since midnight.
        let t = Instant::now();
        db.batch_execute(
            "INSERT INTO activities (sid, name, available) VALUES
               ('WAavail', 'Available', true), ('WAbreak', 'Break', false), ('WAoff', 'Offline', false);
             INSERT INTO workers (worker_sid, worker_name, current_activity, current_activity_sid,
                current_activity_available, activity_changed_at)
             SELECT 'WK' || w, 'agent ' || w, 'Available', 'WAavail', true, now() - (w % 600) * interval '1 s'
             FROM generate_series(1, 2000) w;
             INSERT INTO worker_activities (event_sid, worker_sid, activity_sid, activity_name, started_at, ended_at)
             SELECT 'EVa' || w || '_' || k, 'WK' || w, (ARRAY['WAavail','WAbreak','WAoff'])[1 + k % 3],
                (ARRAY['Available','Break','Offline'])[1 + k % 3],
                date_trunc('day', now()) + k * interval '20 min', date_trunc('day', now()) + (k + 1) * interval '20 min'
             FROM generate_series(1, 2000) w, generate_series(0, 71) k
             WHERE date_trunc('day', now()) + (k + 1) * interval '20 min' < now() - interval '10 min';
             INSERT INTO tasks (sid, worker_sid, task_queue_name, task_channel_unique_name, task_assignment_status,
                task_created, first_accepted_at, ended_at, answered_in, acw_start, total_time, within_sla)
             SELECT 'WTa' || w || '_' || k, 'WK' || w, 'Support', 'voice', 'completed',
                ts, ts + interval '10 s', ts + interval '200 s', 10, 180, 200, true
             FROM (SELECT w, k, date_trunc('day', now()) + k * interval '10 min' + w * interval '100 ms' AS ts
                   FROM generate_series(1, 2000) w, generate_series(1, 25) k) s
             WHERE ts + interval '200 s' < now();
             INSERT INTO reservations (sid, task_sid, worker_sid, status, created_at, accepted_at, completed_at)
             SELECT 'WR' || substr(sid, 3), sid, worker_sid, 'completed', task_created + interval '2 s',
                first_accepted_at, ended_at
             FROM tasks WHERE sid LIKE 'WTa%';
             ANALYZE;",
        )
        .await
        .expect("agents day");
        let load_agents = t.elapsed();
        let t = Instant::now();
        st.mark_all_worker_days().await.expect("mark");
        while st.refresh_worker_days(500).await.expect("days") > 0 {}
        let days = t.elapsed();
        let ds = taskrouter_summarizer::util::start_of_day(&rs.tz, now);
        let (times, n_agents) = median_of_20(|| async {
            agents::agents(&pool, ds, chrono::Utc::now())
                .await
                .expect("agents")
                .len()
        })
        .await;
        // What the precomputed days save: the same day computed from reservations, tasks
        // and activity intervals at each request (the worker report's path; 3 runs).
        let win = [(ds, chrono::Utc::now())];
        let direct = median_of(3, || async {
            agents::windows(&pool, &win, chrono::Utc::now(), &[])
                .await
                .expect("windows")
                .len()
        })
        .await
        .0;
        println!(
            "{n} past tasks: the same day computed per request: median of 3 {:.0} ms",
            ms(direct[1])
        );
        println!(
            "{n} past tasks: /api/agents for {n_agents} agents (a day of reservations and activities): \
             median {:.1} ms, max {:.1} ms (load {:.0} s; every agent's day recomputed in {:.0} ms)",
            ms(times[10]),
            ms(times[19]),
            load_agents.as_secs_f64(),
            ms(days)
        );
        drop(db);
        drop(pool);
        if std::env::var_os("KEEP_DB").is_some() {
            println!("kept database {name}");
            continue;
        }
        let _ = c
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `f` 20 times (after one warm-up): the sorted times and the last result.
async fn median_of_20<F, Fut, T>(f: F) -> (Vec<std::time::Duration>, T)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    median_of(20, f).await
}

/// Runs `f` `n` times (after one warm-up): the sorted times and the last result.
async fn median_of<F, Fut, T>(n: usize, f: F) -> (Vec<std::time::Duration>, T)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut last = f().await;
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        last = f().await;
        times.push(t.elapsed());
    }
    times.sort();
    (times, last)
}
