use crate::harness::*;
use std::time::{Duration, Instant};

fn callback(n: u32, task: &str) -> Params {
    Cb::task("task.created", task)
        .ev(n)
        .status("pending")
        .at(1_767_254_400_000i64 + n as i64)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_retried_then_dead_lettered_without_blocking_others() {
    let db = TestDb::new().await;
    // One worker: the poison shares it with everything else.
    let opts = Options::new(&db.url).max_attempts(3).workers(1);
    let mut svc = Service::start(opts).await;
    // A database that rejects one task's events every time.
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.task_sid = 'WTpoison' THEN RAISE EXCEPTION 'poisoned event'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison();",
        )
        .await
        .unwrap();
    let mut cbs: Vec<_> = (0..100).map(|n| callback(n, &format!("WT{n}"))).collect();
    cbs.insert(10, callback(1000, "WTpoison"));
    let st = post_all(&svc, &cbs, 8).await;
    assert!(st.iter().all(|s| *s == 204));

    // The others are applied at once, while the poison waits for its retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.count("SELECT count(*) FROM events").await < 100 {
        assert!(Instant::now() < deadline, "others blocked: {}", svc.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.wait_drained(Duration::from_secs(60)).await;
    let r = svc.readyz().await;
    assert_eq!(r["queue"]["dead_letters"], 1, "{r}");
    assert!(svc.log().contains("poisoned event"));

    // Operators list it with its error, fix the cause, and requeue it.
    assert!(svc.terminate().success());
    let out = svc.command(&["queue", "dead-letters"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("poisoned event") && listing.contains("WTpoison"),
        "{listing}"
    );
    assert!(listing.contains("\"attempts\":3"), "{listing}");
    db.client()
        .await
        .batch_execute("DROP TRIGGER poison ON events")
        .await
        .unwrap();
    let out = svc.command(&["queue", "requeue"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued 1"));
    svc.spawn().await;
    svc.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(db.count("SELECT count(*) FROM events").await, 101);
    assert_eq!(
        db.count("SELECT count(*) FROM tasks WHERE sid = 'WTpoison'")
            .await,
        1
    );
    assert_eq!(svc.readyz().await["queue"]["dead_letters"], 0);
}
