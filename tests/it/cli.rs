//! The first commands an operator runs: `check-config` changes nothing and names every
//! problem with its place, `migrate` needs only a database URL, and every error says
//! each of its causes once.

use crate::harness::{admin_url, bin, free_port, Options, Service, TestDb};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_needs_only_a_database_url() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // --database-url, no config anywhere, no Twilio settings.
    let out = cmd(dir.path())
        .args(["migrate", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("applied V1"), "{}", stdout(&out));
    assert_eq!(db.count("SELECT count(*) FROM events").await, 0);
    // DATABASE_URL alone.
    let out = cmd(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
    // --config still works, and needs only its [postgres] section.
    let cfg = dir.path().join("db-only.toml");
    std::fs::write(&cfg, format!("[postgres]\nurl = \"{}\"\n", db.url)).unwrap();
    let out = cmd(dir.path())
        .args(["--config", cfg.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
    // Without a URL and without a config, it says what it needs.
    if !Path::new("/etc/taskrouter-summarizer/config.toml").exists() {
        let out = cmd(dir.path()).arg("migrate").output().unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("DATABASE_URL") && err.contains("--database-url"),
            "{err}"
        );
    }
}

/// `needle` appears exactly once in `haystack`.
fn once(haystack: &str, needle: &str) {
    assert_eq!(
        haystack.matches(needle).count(),
        1,
        "`{needle}` is not said exactly once in:\n{haystack}"
    );
}

#[test]
fn errors_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // A config file that is not there.
    let missing = dir.path().join("missing.toml");
    for command in ["serve", "check-config"] {
        let out = cmd(dir.path())
            .args(["--config", missing.to_str().unwrap(), command])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        once(&err, "No such file or directory");
        once(&err, "cannot read config file");
    }

    // A database server that does not answer.
    let url = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let out = cmd(dir.path())
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    once(&err, "Connection refused");
    once(&err, "error connecting to server");

    // A database that does not exist on a server that does.
    let mut url = url::Url::parse(&admin_url()).unwrap();
    url.set_path("/trs_no_such_database");
    let out = cmd(dir.path())
        .args(["migrate", "--database-url", url.as_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    once(&err, "\"trs_no_such_database\" does not exist");
    assert!(!err.contains("db error"), "{err}");
    assert!(!err.contains("Error occurred while creating"), "{err}");
}

/// Where the package (Cargo.toml's `[package.metadata.deb] assets`) installs the
/// repository file `rel`, as an absolute path, if it does.
fn installed_path(assets: &[toml::Value], rel: &Path) -> Option<String> {
    assets.iter().find_map(|a| {
        let (source, dest) = (a.get(0)?.as_str()?, a.get(1)?.as_str()?);
        // A source is a path, or `dir/*.ext` (the only glob form used).
        let matches = match source.split_once("*.") {
            Some((dir, ext)) => {
                rel.parent() == Some(Path::new(dir.trim_end_matches('/')))
                    && rel.extension().and_then(|e| e.to_str()) == Some(ext)
            }
            None => Path::new(source) == rel,
        };
        let file = rel.file_name()?.to_str()?;
        matches.then(|| match dest.strip_suffix('/') {
            Some(dir) => format!("/{dir}/{file}"),
            None => format!("/{dest}"),
        })
    })
}

/// The systemd unit and the package agree: the unit runs the binary where the package
/// puts it, reads the config and the env file the package installs, and each
/// `Documentation=` is a repository file the package installs at that path.
#[test]
fn the_unit_runs_and_documents_what_the_package_installs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let installed = |rel: &str| installed_path(assets, Path::new(rel));
    let unit = std::fs::read_to_string(root.join("systemd/taskrouter-summarizer.service"))
        .expect("the unit");
    let values = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };

    // cargo-deb's `target/release/` stands for the build's own directory.
    let binary = installed("target/release/taskrouter-summarizer");
    assert_eq!(binary.as_deref(), Some("/usr/bin/taskrouter-summarizer"));
    for key in ["ExecStartPre", "ExecStart"] {
        for line in values(key) {
            let exe = line.split_whitespace().next().unwrap_or_default();
            assert_eq!(Some(exe), binary.as_deref(), "{key}={line}");
        }
    }
    let config = installed("config.example.toml");
    let [credential] = values("LoadCredential")[..] else {
        panic!("one LoadCredential= in the unit")
    };
    assert_eq!(
        credential.strip_prefix("config.toml:"),
        config.as_deref(),
        "the unit hands the service the config the package installs"
    );
    let env = installed("systemd/taskrouter-summarizer.env").expect("the env file");
    assert_eq!(
        values("EnvironmentFile")
            .iter()
            .map(|f| f.trim_start_matches('-'))
            .collect::<Vec<_>>(),
        vec![env.as_str()],
        "the unit reads the env file the package installs"
    );

    let urls: Vec<&str> = values("Documentation")
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect();
    assert!(urls.contains(&"file:///usr/share/doc/taskrouter-summarizer/README.md"));
    for url in urls {
        let rel = url
            .strip_prefix("file:///usr/share/doc/taskrouter-summarizer/")
            .unwrap_or_else(|| panic!("{url} is not under the package's doc directory"));
        assert!(
            root.join(rel).is_file(),
            "{url}: no {rel} in the repository"
        );
        assert_eq!(
            installed(rel).as_deref(),
            url.strip_prefix("file://"),
            "the package does not install {rel} where the unit says"
        );
    }
}

/// `serve` says at start when Postgres runs without autovacuum (the state and mark
/// tables would bloat and the drain slow down), and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_when_postgres_runs_without_autovacuum() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let on: String = c
        .query_one("SELECT current_setting('autovacuum')", &[])
        .await
        .unwrap()
        .get(0);
    let mut svc = Service::start(Options::new(&db.url)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _ = svc.terminate();
    let warned = svc.log().contains("autovacuum = off");
    assert_eq!(warned, on == "off", "autovacuum {on}; log: {}", svc.log());
}
