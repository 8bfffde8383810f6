//! Small helpers every stage uses: the wall clock in milliseconds, and an error with its
//! causes on one line.

/// Milliseconds since the Unix epoch, the unit of every event time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `e` followed by each of its causes (`a: b: c`): libraries such as reqwest and
/// tokio-postgres put the useful part ("connection refused") in a cause, not in the
/// top-level message. A cause whose text repeats the previous one is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if text != last && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        src = inner.source();
    }
    out
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
        assert!(now_ms() > 1_700_000_000_000);
    }
}
