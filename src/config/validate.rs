//! Validation of the config: every problem named by its key, in one pass, and where
//! the admin side would answer without a token.

use super::{job_sql, Config, JobTarget};

impl Config {
    /// Where the admin side can be reached from without a token, for `check-config` and
    /// the start-up log. Empty when every route beyond the webhooks needs the token.
    pub fn exposure_warnings(&self) -> Vec<String> {
        let s = &self.server;
        let mut w = Vec::new();
        if !s.admin_token.is_empty() {
            return w;
        }
        if s.admin_listen.is_empty() {
            w.push(
                "server.admin_listen is empty and server.admin_token is not set: /dashboard, \
                 /api/*, /metrics and /readyz are served nowhere. Set admin_listen \
                 (e.g. 127.0.0.1:9090) or admin_token."
                    .to_owned(),
            );
            return w;
        }
        let loopback = s
            .admin_listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        w.push(format!(
            "server.admin_token is not set: /dashboard, /api/*, /metrics and /readyz on {} \
             answer local clients without a token (reach them over SSH, e.g. \
             `ssh -L 9090:127.0.0.1:9090 host`). A proxy on this machine that forwards to \
             that address without an X-Forwarded-For, X-Real-IP or Forwarded header would \
             make them public: set admin_token before proxying it.",
            s.admin_listen
        ));
        if !loopback {
            w.push(format!(
                "server.admin_listen `{}` is not a loopback address: without admin_token only \
                 loopback clients are served there; set admin_token to serve others.",
                s.admin_listen
            ));
        }
        w
    }

    /// Every problem with the values, each naming its key. Empty when usable.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "server.listen: `{}` is not an address like 0.0.0.0:3000",
                self.server.listen
            ));
        }
        if !self.server.admin_listen.is_empty()
            && self
                .server
                .admin_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            p.push(format!(
                "server.admin_listen: `{}` is not an address like 127.0.0.1:9090",
                self.server.admin_listen
            ));
        }
        if self.server.verify_signatures {
            if self.server.public_url.is_empty() {
                p.push(
                    "server.public_url: missing (required while server.verify_signatures = true)"
                        .into(),
                );
            }
            if self.twilio.auth_token.is_empty() {
                p.push("twilio.auth_token: missing (set it in the file or in TWILIO_AUTH_TOKEN; required while server.verify_signatures = true)".into());
            }
        }
        if !self.server.public_url.is_empty() {
            match url::Url::parse(&self.server.public_url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                    if u.query().is_some() || u.fragment().is_some() {
                        p.push("server.public_url: must not have a query or fragment; use the base URL Twilio calls, e.g. https://summarizer.example.com".into());
                    }
                }
                Ok(u) => p.push(format!(
                    "server.public_url: scheme `{}` is not http or https",
                    u.scheme()
                )),
                Err(e) => p.push(format!(
                    "server.public_url: `{}` is not a URL ({e})",
                    self.server.public_url
                )),
            }
        }
        if self.server.max_body_bytes < 1024 {
            p.push("server.max_body_bytes: must be at least 1024".into());
        }
        // Callbacks are a few KB; the bound also keeps an event's params addressable
        // with 32-bit offsets (see event::ParamMap).
        if self.server.max_body_bytes > 64 << 20 {
            p.push("server.max_body_bytes: must be at most 67108864 (64 MiB)".into());
        }
        if self.server.max_connections == 0 {
            p.push("server.max_connections: must be at least 1".into());
        }
        if self.server.read_timeout_secs == 0 {
            p.push("server.read_timeout_secs: must be at least 1".into());
        }
        if self.queue.path.as_os_str().is_empty() {
            p.push("queue.path: missing".into());
        }
        if !(1..=256).contains(&self.queue.workers) {
            p.push("queue.workers: must be between 1 and 256".into());
        }
        if !(1..=10_000).contains(&self.queue.batch_size) {
            p.push("queue.batch_size: must be between 1 and 10000".into());
        }
        if !(1..=1440).contains(&self.backfill.slice_minutes) {
            p.push("backfill.slice_minutes: must be between 1 and 1440".into());
        }
        if self.backfill.reconcile_every_minutes > 0
            && !(1..=43_200).contains(&self.backfill.reconcile_window_minutes)
        {
            p.push(
                "backfill.reconcile_window_minutes: must be between 1 and 43200 (30 days)".into(),
            );
        }
        if self.retention.interval_minutes == 0 {
            p.push("retention.interval_minutes: must be at least 1".into());
        }
        if !(1..=100_000).contains(&self.retention.batch_size) {
            p.push("retention.batch_size: must be between 1 and 100000".into());
        }
        if self.queue.cache_mb < 4 {
            p.push("queue.cache_mb: must be at least 4".into());
        }
        if !(1..=4096).contains(&self.queue.in_flight_mb) {
            p.push("queue.in_flight_mb: must be between 1 and 4096".into());
        }
        if self.queue.max_attempts == 0 {
            p.push("queue.max_attempts: must be at least 1".into());
        }
        if self.queue.max_backlog == 0 {
            p.push("queue.max_backlog: must be at least 1".into());
        }
        if self.postgres.url.is_empty() {
            p.push("postgres.url: missing (set it in the file or in DATABASE_URL)".into());
        } else if let Err(e) = self.postgres.url.expose().parse::<tokio_postgres::Config>() {
            // The parse error names the bad part, not the password.
            p.push(format!("postgres.url: not a valid Postgres URL ({e})"));
        }
        if self.postgres.pool_size == 0 {
            p.push("postgres.pool_size: must be at least 1".into());
        }
        check_sid(&mut p, "twilio.account_sid", &self.twilio.account_sid, "AC");
        check_sid(
            &mut p,
            "twilio.workspace_sid",
            &self.twilio.workspace_sid,
            "WS",
        );
        check_sid(
            &mut p,
            "twilio.sync_service_sid",
            &self.twilio.sync_service_sid,
            "IS",
        );
        for (key, v) in [
            ("twilio.taskrouter_url", &self.twilio.taskrouter_url),
            ("twilio.sync_url", &self.twilio.sync_url),
            ("twilio.conversations_url", &self.twilio.conversations_url),
        ] {
            if let Some(v) = v {
                if url::Url::parse(v).is_err() {
                    p.push(format!("{key}: `{v}` is not a URL"));
                }
            }
        }
        if self.sla.threshold_seconds < 0 {
            p.push("sla.threshold_seconds: must not be negative".into());
        }
        if self.sla.short_abandon_seconds < 0 {
            p.push("sla.short_abandon_seconds: must not be negative".into());
        }
        for (k, v) in self.sla.queues.iter().chain(self.sla.channels.iter()) {
            if *v < 0 {
                p.push(format!("sla: threshold for `{k}` must not be negative"));
            }
        }
        if self.sla.timezone.parse::<chrono_tz::Tz>().is_err() {
            p.push(format!(
                "sla.timezone: `{}` is not an IANA time zone like UTC or America/New_York",
                self.sla.timezone
            ));
        }
        check_cron(&mut p, "publish.schedule", &self.publish.schedule);
        if !self.taskrouter.reconcile_schedule.is_empty() {
            check_cron(
                &mut p,
                "taskrouter.reconcile_schedule",
                &self.taskrouter.reconcile_schedule,
            );
        }
        if self.publish.ttl_seconds > 31_536_000 {
            p.push("publish.ttl_seconds: Sync allows at most 31536000 (one year)".into());
        }
        check_sid(&mut p, "twilio.api_key_sid", &self.twilio.api_key_sid, "SK");
        if !self.twilio.api_key_sid.is_empty() && self.twilio.api_key_secret.is_empty() {
            p.push("twilio.api_key_secret: missing (required with twilio.api_key_sid)".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, j) in self.jobs.iter().enumerate() {
            let label = if j.name.is_empty() {
                format!("jobs[{i}]")
            } else {
                format!("jobs[{}]", j.name)
            };
            if j.name.is_empty() {
                p.push(format!("{label}.name: missing"));
            } else if !names.insert(j.name.clone()) {
                p.push(format!("{label}.name: used by another job"));
            }
            check_cron(&mut p, &format!("{label}.schedule"), &j.schedule);
            if j.sql.trim().is_empty() {
                p.push(format!("{label}.sql: missing"));
            } else if let Err(e) = job_sql::bind_named(&j.sql) {
                p.push(format!("{label}.sql: {e}"));
            }
            if !(1..=600_000).contains(&j.timeout_ms) {
                p.push(format!("{label}.timeout_ms: must be between 1 and 600000"));
            }
            if !(1..=10_000).contains(&j.max_rows) {
                p.push(format!("{label}.max_rows: must be between 1 and 10000"));
            }
            if j.ttl_seconds > 31_536_000 {
                p.push(format!("{label}.ttl_seconds: Sync allows at most 31536000"));
            }
            let target_name = match &j.target {
                JobTarget::Document { name, .. } | JobTarget::List { name } => name,
                JobTarget::Map { name, key } => {
                    if key.is_empty() {
                        p.push(format!("{label}.target.key: missing"));
                    }
                    name
                }
            };
            if target_name.is_empty() || target_name.len() > 256 {
                p.push(format!("{label}.target.name: must be 1 to 256 characters"));
            }
        }
        if self.publish.worker_stats && self.twilio.sync_service_sid.is_empty() {
            p.push("twilio.sync_service_sid: missing (required by publish.worker_stats)".into());
        }
        if !self.jobs.is_empty() && self.twilio.sync_service_sid.is_empty() {
            p.push("twilio.sync_service_sid: missing (required by [[jobs]])".into());
        }
        // A day at most: a longer threshold would never fire on a day's wallboard, which
        // is surely a unit mistake (seconds for minutes).
        for (key, v) in [
            (
                "wallboard.break_alert_minutes",
                self.wallboard.break_alert_minutes,
            ),
            (
                "wallboard.task_alert_minutes",
                self.wallboard.task_alert_minutes,
            ),
        ] {
            if !(0..=1440).contains(&v) {
                p.push(format!("{key}: must be between 0 (off) and 1440 (a day)"));
            }
        }
        if self.log.format != "text" && self.log.format != "json" {
            p.push(format!(
                "log.format: `{}` must be \"text\" or \"json\"",
                self.log.format
            ));
        }
        p
    }
}

fn check_cron(p: &mut Vec<String>, key: &str, v: &str) {
    if v.split_whitespace().count() < 6 {
        p.push(format!(
            "{key}: `{v}` must be a cron expression with seconds (6 or 7 fields)"
        ));
    } else if let Err(e) = v.parse::<cron::Schedule>() {
        p.push(format!("{key}: `{v}` is not a valid cron expression ({e})"));
    }
}

fn check_sid(p: &mut Vec<String>, key: &str, v: &str, prefix: &str) {
    if v.is_empty() {
        return;
    }
    let ok =
        v.len() == 34 && v.starts_with(prefix) && v[2..].chars().all(|c| c.is_ascii_hexdigit());
    if !ok {
        p.push(format!(
            "{key}: `{v}` is not a SID ({prefix} followed by 32 hex digits)"
        ));
    }
}
