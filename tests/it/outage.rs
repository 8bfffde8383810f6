use crate::harness::*;
use crate::ingest::{assert_state_matches, stored_events};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use taskrouter_summarizer::sim::{realistic_day, DayConfig};

/// A private Postgres cluster that the test may stop and start.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("pg_ctl").exists() {
            return p;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres server binaries under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().expect("pg_ctl")
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

impl PrivatePg {
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            // Postgres refuses to run as root.
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().expect(tool);
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_new() -> PrivatePg {
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(st.success());
        }
        let pg = PrivatePg {
            dir,
            port: free_port(),
            bin: pg_bin(),
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.start();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "stop"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_mid_burst_loses_nothing_and_drains_when_back() {
    let pg = PrivatePg::start_new();
    let db = TestDb::on(&pg.admin_url()).await;
    let mut svc = Service::start(Options::new(&db.url)).await;
    let day = realistic_day(&DayConfig {
        seed: 3,
        tasks: 120,
        ..DayConfig::default()
    });
    let half = day.callbacks.len() / 2;

    // A burst during which Postgres stops, then more callbacks while it is down.
    let burst = post_all(&svc, &day.callbacks[..half], 32);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::block_in_place(|| pg.stop());
    };
    let (st2, _) = tokio::join!(burst, stop);
    let st3 = post_all(&svc, &day.callbacks[half..], 32).await;
    assert!(
        st2.iter().chain(&st3).all(|s| *s == 204),
        "ingress keeps acknowledging while Postgres is down"
    );
    let r = svc.readyz().await;
    assert_eq!(r["ready"], false, "{r}");
    assert!(r["queue"]["depth"].as_u64().unwrap_or(0) > 0, "{r}");
    assert_eq!(
        r["queue"]["dead_letters"], 0,
        "an outage dead-letters nothing: {r}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start();
    svc.wait_drained(Duration::from_secs(120)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        day.callbacks.len() as i64
    );
    assert_eq!(svc.readyz().await["queue"]["dead_letters"], 0);
    assert_state_matches(&db, &stored_events(&db).await).await;

    // `serve` also starts while Postgres is down, and ingests meanwhile.
    assert!(svc.terminate().success());
    pg.stop();
    svc.spawn().await;
    let more = realistic_day(&DayConfig {
        seed: 4,
        tasks: 20,
        ..DayConfig::default()
    });
    let st = post_all(&svc, &more.callbacks, 16).await;
    assert!(st.iter().all(|s| *s == 204));
    pg.start();
    svc.wait_drained(Duration::from_secs(120)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        (day.callbacks.len() + more.callbacks.len()) as i64
    );
}

/// While the drain cannot move (a table it writes is locked) and the bytes it may hold
/// (`in_flight_mb = 1`) are all taken, the dispatcher waits for room but still beats:
/// systemd's watchdog keeps being fed (a stalled beat would get a healthy service
/// restarted in a loop during every Postgres stall). Once the lock goes, everything
/// is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_in_flight_budget_keeps_feeding_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    use std::process::Stdio;
    let db = TestDb::new().await;
    let mut svc = Service::start(Options::new(&db.url).in_flight_mb(1)).await;
    let _ = svc.terminate();
    // systemd's side: a notify socket, and the watchdog armed for the service's pid
    // (`exec` keeps the shell's, which the shell can name).
    let notify = svc.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(svc.dir.path().join("serve.log"))
        .unwrap();
    svc.child = Some(
        Command::new("sh")
            .arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
            .arg(&svc.exe)
            .arg("--config")
            .arg(&svc.config)
            .arg("serve")
            .env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", "2000000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let day = realistic_day(&DayConfig {
        seed: 5,
        tasks: 300,
        ..DayConfig::default()
    });
    let bytes: usize = day
        .callbacks
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(bytes > 2 << 20, "{bytes} bytes: more than the budget");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = post_all(&svc, &day.callbacks, 16).await;
    assert!(st.iter().all(|s| *s == 204));

    // Six seconds (three watchdog periods) with the budget full.
    let mut beats = 0;
    let mut buf = [0u8; 256];
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            beats += usize::from(String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1"));
        }
    }
    let log_now = svc.log();
    assert!(!log_now.contains("dispatcher stalled"), "{log_now}");
    assert!(beats >= 4, "{beats} watchdog beats in 6 s: {log_now}");
    assert!(svc.readyz().await["queue"]["depth"].as_u64().unwrap_or(0) > 0);

    blocker.batch_execute("ROLLBACK").await.unwrap();
    svc.wait_drained(Duration::from_secs(120)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        day.callbacks.len() as i64
    );
}
