//! An upgrade as the Debian package and docs/operations.md#upgrade do it, with a backlog:
//! callbacks acknowledged but not yet applied sit in the queue while the binary file is
//! replaced under the running service (as dpkg does: a new file renamed over the old
//! path), the service is stopped by SIGTERM (as `systemctl restart` does), the new file
//! runs `migrate`, then `serve` on the same config and queue. Nothing acknowledged is
//! lost or applied twice.

use crate::harness::*;
use crate::ingest::{assert_state_matches, stored_events};
use crate::outage::PrivatePg;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use taskrouter_summarizer::sim::{realistic_day, DayConfig};

/// The file a process runs, as the kernel says (" (deleted)" once replaced).
fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Installs `from` at `to` as dpkg does: written beside it, then renamed over it, so a
/// process running the old file keeps it and the path names a new file (inode).
fn install_like_dpkg(from: &Path, to: &Path) {
    let tmp = to.with_extension("dpkg-new");
    std::fs::copy(from, &tmp).expect("copy the new binary");
    std::fs::rename(&tmp, to).expect("rename over the old binary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_a_running_service_with_a_backlog_loses_nothing() {
    let pg = PrivatePg::start_new();
    let db = TestDb::on(&pg.admin_url()).await;
    // The installed binary: /usr/bin/taskrouter-summarizer of a package, here a copy of
    // this build in a directory of the test's own.
    let usr_bin = tempfile::tempdir().expect("tempdir");
    let installed: PathBuf = usr_bin.path().join("taskrouter-summarizer");
    std::fs::copy(bin(), &installed).expect("install the old binary");
    let mut svc = Service::start(Options::new(&db.url).exe(&installed)).await;
    let old_pid = svc.child.as_ref().expect("running").id();
    let old_inode = std::fs::metadata(&installed).unwrap().ino();

    // A backlog: with Postgres down every callback is acknowledged into the queue and
    // none is applied.
    pg.stop();
    let day = realistic_day(&DayConfig {
        seed: 18,
        tasks: 80,
        ..DayConfig::default()
    });
    let n = day.callbacks.len();
    println!("upgrade: {n} callbacks queued across the binary swap");
    let statuses = post_all(&svc, &day.callbacks, 16).await;
    assert!(
        statuses.iter().all(|s| *s == 204),
        "every callback acknowledged"
    );
    let r = svc.readyz().await;
    assert_eq!(
        r["queue"]["depth"].as_u64(),
        Some(n as u64),
        "the whole backlog is queued: {r}"
    );

    // `apt install` of the new package: the binary is replaced; the old process runs on.
    install_like_dpkg(Path::new(bin()), &installed);
    assert_ne!(std::fs::metadata(&installed).unwrap().ino(), old_inode);
    assert!(
        exe_of(old_pid).ends_with(" (deleted)"),
        "the old process runs the replaced file: {}",
        exe_of(old_pid)
    );
    assert_eq!(
        svc.readyz().await["queue"]["depth"].as_u64(),
        Some(n as u64)
    );

    // `systemctl restart`, first half: SIGTERM, and a clean exit with the backlog kept.
    assert!(svc.terminate().success(), "{}", svc.log());
    let out = svc
        .command(&["queue", "status"])
        .output()
        .expect("queue status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        status["depth"].as_u64(),
        Some(n as u64),
        "the new binary finds the backlog on disk: {status}"
    );
    assert_eq!(status["dead_letters"], 0, "{status}");

    // `migrate` with the new binary, then `serve` with it on the same config and queue.
    pg.start();
    let out = svc.command(&["migrate"]).output().expect("migrate");
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("up to date"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    svc.spawn().await;
    let new_pid = svc.child.as_ref().expect("running").id();
    assert_eq!(
        exe_of(new_pid),
        installed.display().to_string(),
        "the new process runs the new file"
    );
    svc.wait_drained(Duration::from_secs(120)).await;

    // Every acknowledged callback is in Postgres, once; no dead letter; and the state
    // rows are the rules applied to those events once each.
    assert_eq!(db.count("SELECT count(*) FROM events").await, n as i64);
    let sids: Vec<String> = day.callbacks.iter().map(|cb| sid_of(cb)).collect();
    let c = db.client().await;
    let found: i64 = c
        .query_one(
            "SELECT count(DISTINCT sid) FROM events WHERE sid = ANY($1)",
            &[&sids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found as usize, n, "every acknowledged callback is stored");
    assert_eq!(svc.readyz().await["queue"]["dead_letters"], 0);
    assert_state_matches(&db, &stored_events(&db).await).await;
}
