//! The first commands an operator runs: `check-config` changes nothing and names every
//! problem with its place.

use crate::harness::bin;
use std::path::Path;
use std::process::{Command, Output};

/// The binary with none of the environment a developer's shell may carry.
fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("TWILIO_AUTH_TOKEN")
        .env_remove("TRS_ADMIN_TOKEN")
        .env_remove("TASKROUTER_SUMMARIZER_CONFIG");
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The problem lines (`  - ...`) of a config error.
fn problem_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("  - ")).collect()
}

#[test]
fn check_config_creates_nothing_and_names_every_problem_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("state").join("queue");
    let cfg = dir.path().join("config.toml");
    let good = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\npublic_url = \"https://x.test\"\n[queue]\npath = \"{}\"\n[postgres]\nurl = \"postgres://u@127.0.0.1:1/db\"\n[twilio]\nauth_token = \"t\"\n",
        queue.display()
    );
    std::fs::write(&cfg, &good).unwrap();
    let out = cmd(dir.path())
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("is valid"), "{}", stdout(&out));
    // The queue directory could be created, and was not.
    assert!(!queue.exists(), "check-config created {}", queue.display());
    assert!(!dir.path().join("state").exists());

    // A misspelled key, a value of the wrong type and invalid values: all in one run,
    // top to bottom, each at its line and column.
    let bad = good
        .replace("listen = \"127.0.0.1:1\"", "listen = \"nowhere\"")
        .replace("[queue]\n", "[queue]\nwrokers = 3\nbatch_size = \"many\"\n");
    std::fs::write(&cfg, &bad).unwrap();
    let path = cfg.display().to_string();
    let expected = [
        format!("  - {path}:2:1: server.listen: `nowhere` is not an address like 0.0.0.0:3000"),
        format!("  - {path}:5:1: unknown key `wrokers` in [queue] (did you mean `workers`?)"),
        format!("  - {path}:6:1: queue.batch_size: invalid type: string \"many\", expected usize"),
    ];
    let out = cmd(dir.path())
        .args(["--config", &path, "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(problem_lines(&err), expected, "{err}");
    assert!(
        err.starts_with(&format!("error: config {path} has 3 problem(s):")),
        "{err}"
    );
    assert!(!queue.exists());
    // `serve` refuses the same file with the same words.
    let out = cmd(dir.path())
        .args(["--config", &path, "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(problem_lines(&stderr(&out)), expected, "{}", stderr(&out));
    assert!(!queue.exists());

    // A TOML syntax error: its line and column.
    std::fs::write(&cfg, good.replace("[queue]", "[queue")).unwrap();
    let out = cmd(dir.path())
        .args(["--config", &path, "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines = problem_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(&format!("  - {path}:4:7: invalid table header")),
        "{err}"
    );
}
