//! The time arithmetic of a backfill, pure and unit-tested: the window to read
//! (checked, clamped to what TaskRouter keeps), how a full page splits it, and the
//! whole seconds the API takes.

use super::{MIN_WINDOW_SECS, RETENTION_DAYS};
use chrono::{DateTime, Utc};

/// Parses `--since`/`--until`: an RFC 3339 instant, or a duration before `now`
/// ("90m", "6h", "2d 12h").
pub fn parse_instant(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        format!(
            "{s:?} is neither an RFC 3339 time (2026-11-30T08:00:00Z) nor a duration (90m, 6h, 2d)"
        )
    })?;
    let d = chrono::Duration::from_std(d).map_err(|_| format!("{s:?} is too long"))?;
    Ok(now - d)
}

/// A checked window of event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Set when the window was clamped to what TaskRouter keeps.
    pub note: Option<String>,
}

/// The window to read, checked: `since` before `until`, and clamped to what TaskRouter
/// still keeps (the note says so).
pub fn window(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Window, String> {
    let until = until.min(now);
    let oldest = now - chrono::Duration::days(RETENTION_DAYS);
    let mut note = None;
    let since = if since < oldest {
        note = Some(format!(
            "TaskRouter keeps events {RETENTION_DAYS} days: starting at {} instead of {}",
            oldest.to_rfc3339(),
            since.to_rfc3339()
        ));
        oldest
    } else {
        since
    };
    if since >= until {
        return Err(format!(
            "nothing to read: since ({}) is not before until ({})",
            since.to_rfc3339(),
            until.to_rfc3339()
        ));
    }
    Ok(Window { since, until, note })
}

/// What to do with the page of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The page holds the whole window: hand it on and move past the window.
    Fits,
    /// The page may have left events out: read the window's first part of this width
    /// instead (and hand nothing on).
    Split(chrono::Duration),
    /// A minimum window is still full: hand the page on and follow `next_page_url`.
    Page,
}

/// Decides for a window of `width` whose page was `full` (as many events as a page
/// holds, or a next page announced). Pure, so the splitting is unit-tested.
pub fn plan(full: bool, width: chrono::Duration) -> Plan {
    let secs = width.num_seconds();
    if !full {
        Plan::Fits
    } else if secs <= MIN_WINDOW_SECS {
        Plan::Page
    } else {
        // Whole seconds, rounded up, never below the minimum.
        Plan::Split(chrono::Duration::seconds(
            ((secs + 1) / 2).max(MIN_WINDOW_SECS),
        ))
    }
}

/// `t` rounded down to a whole second.
pub fn floor_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// `t` rounded up to a whole second.
pub fn ceil_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    let f = floor_secs(t);
    if f == t {
        t
    } else {
        f + chrono::Duration::seconds(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn instants_are_times_or_durations_before_now() {
        let now = t("2026-11-30T12:00:00Z");
        assert_eq!(parse_instant("6h", now).unwrap(), t("2026-11-30T06:00:00Z"));
        assert_eq!(
            parse_instant("2d 12h", now).unwrap(),
            t("2026-11-28T00:00:00Z")
        );
        assert_eq!(parse_instant("now", now).unwrap(), now);
        assert_eq!(
            parse_instant("2026-11-29T08:30:00+01:00", now).unwrap(),
            t("2026-11-29T07:30:00Z")
        );
        let e = parse_instant("yesterday", now).unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn windows_are_checked_and_clamped_to_what_taskrouter_keeps() {
        let now = t("2026-11-30T12:00:00Z");
        let w = window(t("2026-10-01T00:00:00Z"), now, now).unwrap();
        assert_eq!(w.since, t("2026-10-31T12:00:00Z"));
        assert_eq!(w.until, now);
        assert!(w.note.unwrap().contains("30 days"));
        // `until` in the future is now.
        let w = window(t("2026-11-30T11:00:00Z"), t("2026-12-30T00:00:00Z"), now).unwrap();
        assert_eq!(w.until, now);
        assert_eq!(w.note, None);
        assert!(window(now, t("2026-11-30T11:00:00Z"), now).is_err());
    }

    #[test]
    fn full_pages_split_down_to_one_second_then_page() {
        let secs = chrono::Duration::seconds;
        assert_eq!(plan(false, secs(3600)), Plan::Fits);
        assert_eq!(plan(true, secs(3600)), Plan::Split(secs(1800)));
        assert_eq!(plan(true, secs(3)), Plan::Split(secs(2)));
        assert_eq!(plan(true, secs(2)), Plan::Split(secs(1)));
        assert_eq!(plan(true, secs(1)), Plan::Page);
        // The last window of a run may be shorter than a second.
        assert_eq!(plan(true, chrono::Duration::milliseconds(300)), Plan::Page);
        assert_eq!(plan(false, chrono::Duration::milliseconds(300)), Plan::Fits);
        // Repeated halving of any width ends at the minimum in a few steps.
        let mut w = secs(86_400);
        let mut steps = 0;
        while let Plan::Split(n) = plan(true, w) {
            assert!(n < w && n >= secs(MIN_WINDOW_SECS));
            w = n;
            steps += 1;
        }
        assert_eq!((w, steps), (secs(1), 17));
    }

    #[test]
    fn windows_round_to_whole_seconds_outwards() {
        let a = t("2026-11-30T10:00:05Z") + chrono::Duration::milliseconds(250);
        assert_eq!(floor_secs(a), t("2026-11-30T10:00:05Z"));
        assert_eq!(ceil_secs(a), t("2026-11-30T10:00:06Z"));
        assert_eq!(
            ceil_secs(t("2026-11-30T10:00:05Z")),
            t("2026-11-30T10:00:05Z")
        );
    }
}
