//! Small helpers every stage uses: the wall clock in milliseconds, and an error with its
//! causes on one line.

/// Milliseconds since the Unix epoch, the unit of every event time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `e` followed by each of its causes (`a: b: c`): libraries such as reqwest and
/// tokio-postgres put the useful part ("connection refused") in a cause, not in the
/// top-level message. A cause whose text is already said is left out: many errors
/// (tokio-postgres', io's, ours) repeat their source in their own message, and each
/// cause must be said once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = inner.source();
    }
    out
}

/// Midnight of the day `now` is in, in `tz`, as a UTC instant.
pub fn start_of_day(
    tz: &chrono_tz::Tz,
    now: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    let local = now.with_timezone(tz).date_naive();
    let midnight = local.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|d| d.with_timezone(&chrono::Utc))
        // A zone whose midnight does not exist that day (rare DST rules): use the hour after.
        .or_else(|| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
                .map(|d| d.with_timezone(&chrono::Utc))
        })
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_joined_once() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "outer: connection refused");
        let plain = std::io::Error::other("x");
        assert_eq!(error_chain(&plain), "x");
        // A cause its parent already says is not said again.
        let e = Outer(std::io::Error::other("outer"));
        assert_eq!(error_chain(&e), "outer");
        assert!(now_ms() > 1_700_000_000_000);
    }
}
