//! The named parameters of a user job's SQL (`:today_start`, …): known to the config's
//! validation and to the jobs that run the SQL.

/// The named parameters a job's SQL may use, with their SQL types.
pub const PARAMS: [(&str, &str); 7] = [
    ("workspace_sid", "text"),
    ("account_sid", "text"),
    ("today_start", "timestamptz"),
    ("now", "timestamptz"),
    ("sla_threshold", "int4"),
    ("short_abandon", "int4"),
    ("timezone", "text"),
];

/// Rewrites `:name` parameters to `$n::type` and returns the rewritten SQL and the
/// names in `$n` order. Casts (`::`), strings, quoted identifiers and comments are left
/// alone. An unknown name is an error that lists the known ones.
pub fn bind_named(sql: &str) -> Result<(String, Vec<&'static str>), String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut names: Vec<&'static str> = Vec::new();
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                let name = &sql[start..end];
                let Some((known, ty)) = PARAMS.iter().find(|(n, _)| *n == name) else {
                    let list: Vec<String> = PARAMS.iter().map(|(n, _)| format!(":{n}")).collect();
                    return Err(format!(
                        "unknown parameter :{name} (known: {})",
                        list.join(", ")
                    ));
                };
                let n = match names.iter().position(|x| x == known) {
                    Some(p) => p + 1,
                    None => {
                        names.push(known);
                        names.len()
                    }
                };
                out.push_str(&sql[last..i]);
                out.push_str(&format!("${n}::{ty}"));
                i = end;
                last = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[last.min(sql.len())..]);
    Ok((out, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_become_typed_placeholders() {
        let (sql, names) =
            bind_named("SELECT x::text, ':now' FROM t WHERE a >= :today_start AND b = :now -- :nope\n AND c > :today_start")
                .unwrap();
        assert_eq!(
            sql,
            "SELECT x::text, ':now' FROM t WHERE a >= $1::timestamptz AND b = $2::timestamptz -- :nope\n AND c > $1::timestamptz"
        );
        assert_eq!(names, vec!["today_start", "now"]);
        let e = bind_named("SELECT :bogus").unwrap_err();
        assert!(e.contains(":bogus") && e.contains(":today_start"), "{e}");
    }
}
