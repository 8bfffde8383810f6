//! Configuration: a TOML file, with `DATABASE_URL` and `TWILIO_AUTH_TOKEN` taking
//! precedence over the file. Validation collects every problem, naming the key, so
//! `check-config` can say exactly what is wrong in one pass. Secrets are wrapped in
//! [`Secret`] and never printed.

pub mod job_sql;
mod load;
mod process;
mod queue_path;
mod validate;

pub use process::{Postgres, Queue, Server};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A value that must never reach a log line or an error message.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The admin side's address when the config names none: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub queue: Queue,
    #[serde(default)]
    pub postgres: Postgres,
    #[serde(default)]
    pub twilio: Twilio,
    #[serde(default)]
    pub taskrouter: TaskRouter,
    #[serde(default)]
    pub sla: Sla,
    #[serde(default)]
    pub publish: Publish,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub conversations: Conversations,
    #[serde(default)]
    pub backfill: Backfill,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub wallboard: Wallboard,
    /// User-defined jobs: SQL over the summary tables, published to Sync on a schedule.
    #[serde(default)]
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Conversations {
    /// The worker attribute holding the agent's Conversations identity (a `client:`
    /// prefix is ignored).
    pub agent_identity_attribute: String,
    /// After a messaging task ends, read its conversation's messages over REST, so
    /// missed webhooks do not leave its metrics short.
    pub fetch_on_complete: bool,
}

impl Default for Conversations {
    fn default() -> Self {
        Conversations {
            agent_identity_attribute: "contact_uri".into(),
            fetch_on_complete: true,
        }
    }
}

/// Catching up on missed events from TaskRouter's REST Events (needs
/// `twilio.workspace_sid` and credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backfill {
    /// At start, read the events of the time this instance was down.
    pub catch_up: bool,
    /// Shorter downtimes (a restart) are not worth a catch-up.
    pub catch_up_min_gap_secs: u64,
    /// Read this much before the last heartbeat too (events in flight at the stop).
    pub overlap_secs: u64,
    /// Every this many minutes, re-read the last `reconcile_window_minutes` (0: never).
    pub reconcile_every_minutes: u64,
    pub reconcile_window_minutes: u64,
    /// Each list query covers this much time: the unit of progress and resumption.
    pub slice_minutes: u64,
}

impl Default for Backfill {
    fn default() -> Self {
        Backfill {
            catch_up: true,
            catch_up_min_gap_secs: 60,
            overlap_secs: 120,
            reconcile_every_minutes: 0,
            reconcile_window_minutes: 60,
            slice_minutes: 60,
        }
    }
}

/// Removal of old raw events (the state tables are kept).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Raw events older than this many days are removed (state tables and Conversations
    /// messages are kept); 0 keeps them forever.
    pub events_days: u64,
    /// How often to look for old events.
    pub interval_minutes: u64,
    /// Rows removed per transaction.
    pub batch_size: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            events_days: 0,
            interval_minutes: 60,
            batch_size: 5000,
        }
    }
}

/// A user-defined job (`[[jobs]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: String,
    /// Cron with seconds.
    pub schedule: String,
    /// A read-only query; named parameters like `:today_start` (see the README).
    pub sql: String,
    pub target: JobTarget,
    /// Sync TTL of what the job writes, renewed on every write; 0 = never expire.
    #[serde(default)]
    pub ttl_seconds: u64,
    /// Statement timeout; a run that takes longer is cancelled.
    #[serde(default = "default_job_timeout_ms")]
    pub timeout_ms: u64,
    /// More rows than this is an error (nothing is published).
    #[serde(default = "default_job_max_rows")]
    pub max_rows: usize,
}

fn default_job_timeout_ms() -> u64 {
    5_000
}

fn default_job_max_rows() -> usize {
    1_000
}

/// Where a job's result goes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum JobTarget {
    /// A document: the single row as one object (`shape = "object"`), or
    /// `{"rows": [...]}` (`shape = "rows"`).
    Document {
        name: String,
        #[serde(default)]
        shape: DocShape,
    },
    /// A map with one item per row, keyed by the value of column `key`.
    Map { name: String, key: String },
    /// A list with one item per row, in query order.
    List { name: String },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DocShape {
    #[default]
    Object,
    Rows,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Twilio {
    pub account_sid: String,
    pub auth_token: Secret,
    /// An API key (SK…) and secret for REST calls; preferred over the auth token.
    pub api_key_sid: String,
    pub api_key_secret: Secret,
    pub workspace_sid: String,
    pub sync_service_sid: String,
    pub taskrouter_url: Option<String>,
    pub sync_url: Option<String>,
    pub conversations_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskRouter {
    /// Activity names that count as available; when empty, TaskRouter's own flag is used.
    pub available_activities: Vec<String>,
    /// Read activities, workers and unknown worker channels from the REST API this often
    /// (and at start). 0 disables the REST sync.
    pub sync_interval_secs: u64,
    /// Reconcile locally open tasks against TaskRouter's list (cron with seconds; "" disables).
    pub reconcile_schedule: String,
}

impl Default for TaskRouter {
    fn default() -> Self {
        TaskRouter {
            available_activities: Vec::new(),
            sync_interval_secs: 300,
            reconcile_schedule: "0 * * * * *".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sla {
    pub threshold_seconds: i64,
    pub short_abandon_seconds: i64,
    pub timezone: String,
    /// Threshold per queue name; wins over the channel and the default.
    pub queues: BTreeMap<String, i64>,
    /// Threshold per task channel unique name; wins over the default.
    pub channels: BTreeMap<String, i64>,
}

impl Default for Sla {
    fn default() -> Self {
        Sla {
            threshold_seconds: 15,
            short_abandon_seconds: 5,
            timezone: "UTC".into(),
            queues: BTreeMap::new(),
            channels: BTreeMap::new(),
        }
    }
}

impl Sla {
    /// The service-level threshold for a task: per queue, else per channel, else default.
    pub fn threshold_for(&self, queue_name: Option<&str>, channel: Option<&str>) -> i64 {
        queue_name
            .and_then(|q| self.queues.get(q))
            .or_else(|| channel.and_then(|c| self.channels.get(c)))
            .copied()
            .unwrap_or(self.threshold_seconds)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Publish {
    /// Cron with seconds: when summaries are computed and changed objects written.
    pub schedule: String,
    /// TTL of the Sync objects in seconds, renewed on every write; 0 = never expire.
    pub ttl_seconds: u64,
    /// Also publish the `workerStats` map (one item per worker, for agents panels). Off
    /// by default: it costs a query of every worker's day per tick and up to 10 Sync
    /// writes a second.
    pub worker_stats: bool,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            schedule: "* * * * * *".into(),
            ttl_seconds: 0,
            worker_stats: false,
        }
    }
}

/// The wallboard's (`/dashboard`) alert thresholds, served to the page by
/// `GET /api/wallboard`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Wallboard {
    /// An agent in an activity that is not available (a break) for longer than this is
    /// highlighted; 0 = never.
    pub break_alert_minutes: i64,
    /// An agent holding a task older than this is highlighted; 0 = never.
    pub task_alert_minutes: i64,
    /// Activities that are not available but are not breaks either (logged out): never
    /// highlighted, listed last. Otherwise every agent who went home would glow all night.
    pub offline_activities: Vec<String>,
}

impl Default for Wallboard {
    fn default() -> Self {
        Wallboard {
            break_alert_minutes: 15,
            task_alert_minutes: 10,
            offline_activities: vec!["Offline".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// "text" or "json".
    pub format: String,
    /// A tracing filter, e.g. "info" or "info,taskrouter_summarizer=debug"; RUST_LOG wins.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Why the configuration cannot be used. Each problem names its key, and its line and
/// column when it is in the file.
///
/// The Display of each variant says its cause, and no variant has a `source()`: printed
/// as a chain (`{:#}`, [`crate::util::error_chain`]) a cause would be said twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "config {path} has {n} problem(s):\n  - {list}",
        n = .problems.len(),
        list = .problems.join("\n  - ")
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// A problem of the config, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key it concerns (`queue.workers`, `jobs[daily].sql`); empty when it concerns
    /// no key (a syntax error).
    pub key: String,
    /// `path:line:column: ...` when the key is in the file, else the message alone.
    pub text: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A config file read as far as it could be.
pub struct Loaded {
    /// What could be made of the file (the items in error left out), with the
    /// environment applied.
    pub config: Config,
    /// Every problem, in the order of the file, then those with no place in it: of the
    /// file (unknown keys, values of the wrong type) and of the values
    /// (`Config::problems`).
    pub problems: Vec<Problem>,
    path: PathBuf,
    src: load::Source,
    /// Keys whose value came from the environment, not from the file.
    from_env: Vec<&'static str>,
}

impl Loaded {
    /// A problem found by a later check (`key: message`), placed in the file like the
    /// others when its key is there.
    pub fn place(&self, problem: String) -> Problem {
        self.place_at(problem).1
    }

    fn place_at(&self, problem: String) -> (Option<usize>, Problem) {
        let key = load::problem_key(&problem).unwrap_or_default().to_owned();
        // A value from the environment is not the one in the file: no line for it.
        let at = if self.from_env.contains(&key.as_str()) {
            None
        } else {
            self.src.locate_problem(&problem)
        };
        (at, self.problem(key, at, problem))
    }

    fn problem(&self, key: String, at: Option<usize>, message: String) -> Problem {
        let text = match at {
            Some(at) => {
                let (line, col) = self.src.line_col(at);
                format!("{}:{line}:{col}: {message}", self.path.display())
            }
            None => message,
        };
        Problem { key, text }
    }
}

impl Config {
    /// Reads the file, applies environment overrides, and validates (without touching
    /// the filesystem beyond reading the file; see [`Config::check_queue_path`]). Every
    /// problem is in the error, each with its line and column when it is in the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let loaded = Config::load_all(path)?;
        if loaded.problems.is_empty() {
            Ok(loaded.config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: loaded.problems.into_iter().map(|p| p.text).collect(),
            })
        }
    }

    /// Reads the file as far as it can and returns what it made of it with every
    /// problem, for callers that check more (`check-config`) or less (`migrate` needs
    /// only `[postgres]`). An error when the file cannot be read, or nothing can be made
    /// of it (a TOML syntax error).
    pub fn load_all(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let (cfg, found, src) = load::read(&text);
        let made = cfg.is_some();
        let mut loaded = Loaded {
            // Unused when nothing could be made of the file: the error below says why.
            config: cfg.unwrap_or_else(|| Config::from_toml("").expect("the defaults")),
            problems: Vec::new(),
            path: path.to_owned(),
            src,
            from_env: Vec::new(),
        };
        let mut placed: Vec<(Option<usize>, Problem)> = found
            .into_iter()
            .map(|f| (f.at, loaded.problem(f.key, f.at, f.message)))
            .collect();
        if !made {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: placed.into_iter().map(|(_, p)| p.text).collect(),
            });
        }
        loaded.from_env = loaded.config.apply_env(|k| std::env::var(k).ok());
        for p in loaded.config.problems() {
            let p = loaded.src.renumber(p);
            if !loaded.src.already_reported(&p) {
                placed.push(loaded.place_at(p));
            }
        }
        // Top to bottom, as the file reads; those with no place in it last.
        placed.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));
        loaded.problems = placed.into_iter().map(|(_, p)| p).collect();
        Ok(loaded)
    }

    /// Parses a config from TOML text (no environment, no validation of the values):
    /// an error naming every problem of the text, each with its line and column.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let (cfg, found, src) = load::read(text);
        match cfg {
            Some(cfg) if found.is_empty() => Ok(cfg),
            _ => Err(found
                .into_iter()
                .map(|f| match f.at {
                    Some(at) => {
                        let (line, col) = src.line_col(at);
                        format!("{line}:{col}: {}", f.message)
                    }
                    None => f.message,
                })
                .collect::<Vec<_>>()
                .join("\n")),
        }
    }

    /// `DATABASE_URL`, `TWILIO_AUTH_TOKEN` and `TRS_ADMIN_TOKEN` override the file when
    /// set and non-empty. Returns the keys they set.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Vec<&'static str> {
        let mut set = Vec::new();
        if let Some(v) = get("DATABASE_URL").filter(|v| !v.is_empty()) {
            self.postgres.url = Secret::new(v);
            set.push("postgres.url");
        }
        if let Some(v) = get("TWILIO_AUTH_TOKEN").filter(|v| !v.is_empty()) {
            self.twilio.auth_token = Secret::new(v);
            set.push("twilio.auth_token");
        }
        if let Some(v) = get("TRS_ADMIN_TOKEN").filter(|v| !v.is_empty()) {
            self.server.admin_token = Secret::new(v);
            set.push("server.admin_token");
        }
        set
    }

    /// Twilio's REST APIs can be called: an account and an auth token or API key.
    pub fn has_credentials(&self) -> bool {
        let t = &self.twilio;
        !t.account_sid.is_empty() && (!t.auth_token.is_empty() || !t.api_key_sid.is_empty())
    }

    /// TaskRouter's REST API can be read: a workspace and credentials.
    pub fn rest_configured(&self) -> bool {
        !self.twilio.workspace_sid.is_empty() && self.has_credentials()
    }

    /// The Postgres URL with any password removed, for messages.
    pub fn postgres_url_redacted(&self) -> String {
        redact_url(self.postgres.url.expose())
    }
}

/// Removes the password from a URL or key=value connection string.
pub fn redact_url(u: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(u) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("REDACTED"));
        }
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "REDACTED".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if !pairs.is_empty() {
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.to_string();
    }
    u.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=REDACTED"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:3000"
public_url = "https://summarizer.example.com"
[queue]
path = "/tmp/q"
[postgres]
url = "postgres://summarizer:hunter2@localhost/summarizer"
[twilio]
auth_token = "tok"
account_sid = "AC0123456789abcdef0123456789abcdef"
[sla]
threshold_seconds = 20
queues = { Sales = 10 }
channels = { chat = 60 }
"#;

    #[test]
    fn good_config_has_no_problems() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.problems(), Vec::<String>::new());
        assert_eq!(c.queue.workers, 4);
        assert_eq!(c.sla.threshold_for(Some("Sales"), Some("chat")), 10);
        assert_eq!(c.sla.threshold_for(Some("Other"), Some("chat")), 60);
        assert_eq!(c.sla.threshold_for(None, Some("voice")), 20);
    }

    #[test]
    fn env_overrides_file() {
        let mut c = Config::from_toml(GOOD).unwrap();
        c.apply_env(|k| match k {
            "DATABASE_URL" => Some("postgres://other@db/x".into()),
            "TWILIO_AUTH_TOKEN" => Some("envtok".into()),
            _ => None,
        });
        assert_eq!(c.postgres.url.expose(), "postgres://other@db/x");
        assert_eq!(c.twilio.auth_token.expose(), "envtok");
    }

    #[test]
    fn names_each_problem_by_key() {
        let c = Config::from_toml(
            r#"
[server]
listen = "nope"
public_url = "ftp://x"
max_body_bytes = 100000000
[twilio]
account_sid = "XX1"
[sla]
timezone = "Mars/Olympus"
"#,
        )
        .unwrap();
        let p = c.problems().join("\n");
        for key in [
            "server.listen",
            "server.public_url: scheme",
            "twilio.auth_token: missing",
            "postgres.url: missing",
            "twilio.account_sid",
            "sla.timezone",
            "server.max_body_bytes: must be at most",
        ] {
            assert!(p.contains(key), "{key} not reported in:\n{p}");
        }
    }

    #[test]
    fn wallboard_thresholds_default_and_are_checked() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.wallboard, Wallboard::default());
        assert_eq!(
            (
                c.wallboard.break_alert_minutes,
                c.wallboard.task_alert_minutes
            ),
            (15, 10)
        );
        let c = Config::from_toml(&format!(
            "{GOOD}[wallboard]\nbreak_alert_minutes = 0\ntask_alert_minutes = 1440\n"
        ))
        .unwrap();
        assert_eq!(
            c.problems(),
            Vec::<String>::new(),
            "0 (off) and a day are fine"
        );
        let c = Config::from_toml(&format!(
            "{GOOD}[wallboard]\nbreak_alert_minutes = -1\ntask_alert_minutes = 1441\n"
        ))
        .unwrap();
        let p = c.problems().join("\n");
        for key in [
            "wallboard.break_alert_minutes: must be between 0",
            "wallboard.task_alert_minutes: must be between 0",
        ] {
            assert!(p.contains(key), "{key} not reported in:\n{p}");
        }
        let e = Config::from_toml("[wallboard]\nbreak_alert_mins = 5\n").unwrap_err();
        assert!(e.contains("break_alert_mins"), "{e}");
    }

    #[test]
    fn the_admin_side_is_never_public_by_default() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.admin_listen, "127.0.0.1:9090");
        let w = c.exposure_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("admin_token is not set"), "{w:?}");
        let c = Config::from_toml("[server]\nadmin_listen = \"0.0.0.0:9090\"").unwrap();
        assert_eq!(c.exposure_warnings().len(), 2);
        let c = Config::from_toml("[server]\nadmin_listen = \"\"").unwrap();
        assert!(c.exposure_warnings()[0].contains("served nowhere"));
        let c = Config::from_toml("[server]\nadmin_listen = \"\"\nadmin_token = \"t\"").unwrap();
        assert!(c.exposure_warnings().is_empty());
    }

    #[test]
    fn worker_stats_is_off_by_default_and_needs_a_sync_service() {
        let c = Config::from_toml(GOOD).unwrap();
        assert!(!c.publish.worker_stats);
        let on = format!("{GOOD}[publish]\nworker_stats = true\n");
        let p = Config::from_toml(&on).unwrap().problems();
        assert_eq!(
            p,
            ["twilio.sync_service_sid: missing (required by publish.worker_stats)"]
        );
        let with_sync = on.replace(
            "[twilio]\n",
            "[twilio]\nsync_service_sid = \"IS0123456789abcdef0123456789abcdef\"\n",
        );
        assert!(Config::from_toml(&with_sync).unwrap().problems().is_empty());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("[server]\nlisen = \"x\"\n").unwrap_err();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::from_toml(GOOD).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("\"tok\""),
            "{dbg}"
        );
        assert!(!c.postgres_url_redacted().contains("hunter2"));
        assert!(c.postgres_url_redacted().contains("REDACTED"));
        assert_eq!(
            redact_url("host=x password=pw user=u"),
            "host=x password=REDACTED user=u"
        );
    }

    #[test]
    fn queue_path_check_reports_unusable_paths_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::from_toml(GOOD).unwrap();
        // Missing, under a writable directory: usable, and still missing afterwards.
        c.queue.path = dir.path().join("a/b/queue");
        assert_eq!(c.check_queue_path(), Ok(()));
        assert!(!dir.path().join("a").exists());
        // Existing directory.
        c.queue.path = dir.path().to_owned();
        assert_eq!(c.check_queue_path(), Ok(()));
        // Under a file (unusable even for root).
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        c.queue.path = file.join("queue");
        let e = c.check_queue_path().unwrap_err();
        assert!(
            e.starts_with("queue.path:") && e.contains("is not a directory"),
            "{e}"
        );
        c.queue.path = file.clone();
        let e = c.check_queue_path().unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        // A relative path is checked from the working directory.
        c.queue.path = PathBuf::from("no-such-queue-dir-here");
        assert_eq!(c.check_queue_path(), Ok(()));
        assert!(!c.queue.path.exists());
    }

    #[cfg(unix)]
    #[test]
    fn queue_path_check_reports_a_read_only_parent() {
        use std::os::unix::fs::PermissionsExt;
        // root passes any permission check: nothing to see there.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut c = Config::from_toml(GOOD).unwrap();
        c.queue.path = ro.join("queue");
        let e = c.check_queue_path().unwrap_err();
        assert!(e.contains("cannot be created"), "{e}");
        c.queue.path = ro.clone();
        assert!(c.check_queue_path().unwrap_err().contains("not writable"));
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
