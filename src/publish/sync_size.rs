//! Sync's size limits applied to what we publish, so that one oversized value from a
//! callback or a job row never keeps an object out of Sync.
//!
//! - Names that become keys are bounded: map item keys to [`MAX_KEY_CHARS`] (Sync's
//!   limit), names used as keys inside documents and strings from callbacks to
//!   [`MAX_NAME_CHARS`]. A longer name keeps its first characters (cut on a char
//!   boundary) plus `~` and 8 hex digits of a hash of the whole name, so that two long
//!   names that share a beginning stay two keys.
//! - An object still over [`MAX_DATA_BYTES`] is published without the entries that push
//!   it over, largest first ([`fit`]); [`OversizeLog`] logs that once per object and
//!   set of dropped entries.

use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// Sync's size limit for a document or item (serialized JSON).
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// Sync's limit for a map item key.
pub const MAX_KEY_CHARS: usize = 320;
/// Names used as keys inside documents (channels, activities, statuses) and sids: far
/// above any real name, small enough that a few dozen fit in 16 KiB.
pub const MAX_NAME_CHARS: usize = 256;
/// Dropped entries are named in logs with at most this many characters.
const LOG_NAME_CHARS: usize = 80;

/// `s` if it has at most `max` characters, else its beginning plus `~` and a hash of the
/// whole (`max` characters in all).
pub fn bound(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        return Cow::Borrowed(s);
    }
    let keep: String = s.chars().take(max.saturating_sub(9)).collect();
    Cow::Owned(format!("{keep}~{:08x}", fnv1a(s.as_bytes())))
}

/// [`bound`] to [`MAX_NAME_CHARS`], owned (for building JSON).
pub fn name(s: &str) -> String {
    bound(s, MAX_NAME_CHARS).into_owned()
}

/// A stable 32-bit hash (FNV-1a folded), unlike std's hasher, which may change between
/// Rust versions and would rename keys on an upgrade.
fn fnv1a(b: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// Serialized JSON length without building the string.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value to a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn show(path: &[&Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&bound(k, LOG_NAME_CHARS));
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// An entry of an object or array, with its serialized size (key included) and, when it
/// is itself an object or array of two or more entries, its own entries.
struct Entry {
    seg: Seg,
    size: usize,
    alive: bool,
    children: Vec<Entry>,
}

fn entries(v: &Value, depth: usize) -> Vec<Entry> {
    let make = |seg: Seg, key_len: usize, child: &Value| Entry {
        size: key_len + json_len(child),
        alive: true,
        children: if depth == 0 && child_count(child) >= 2 {
            entries(child, depth + 1)
        } else {
            Vec::new()
        },
        seg,
    };
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, c)| {
                make(
                    Seg::Key(k.clone()),
                    json_len(&Value::String(k.clone())) + 1,
                    c,
                )
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| make(Seg::Index(i), 0, c))
            .collect(),
        _ => Vec::new(),
    }
}

fn child_count(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

fn largest(es: &mut [Entry]) -> Option<&mut Entry> {
    es.iter_mut().filter(|e| e.alive).max_by_key(|e| e.size)
}

/// Removes the dead entries of `es` from `v` (arrays from the back, so indexes hold).
fn apply(v: &mut Value, es: &[Entry]) {
    for e in es.iter().rev() {
        match (&mut *v, &e.seg) {
            (Value::Object(m), Seg::Key(k)) if !e.alive => {
                m.remove(k);
            }
            (Value::Array(a), Seg::Index(i)) if !e.alive && *i < a.len() => {
                a.remove(*i);
            }
            (Value::Object(m), Seg::Key(k)) => {
                if let Some(c) = m.get_mut(k) {
                    apply(c, &e.children);
                }
            }
            (Value::Array(a), Seg::Index(i)) => {
                if let Some(c) = a.get_mut(*i) {
                    apply(c, &e.children);
                }
            }
            _ => {}
        }
    }
}

/// `data` if its JSON fits in `limit` bytes; else a copy without the entries that push it
/// over, largest first, and their names. Entries are those of the top level and, inside
/// a top-level object or array of several entries, its own (so one huge channel in
/// `by_channel` costs that channel, not the whole `by_channel`). Never fails: as a last
/// resort the result is an empty object.
pub fn fit(data: &Value, limit: usize) -> (Cow<'_, Value>, Vec<String>) {
    if json_len(data) <= limit {
        return (Cow::Borrowed(data), Vec::new());
    }
    let mut v = data.clone();
    let mut dropped = Vec::new();
    // Sizes are added up per entry (separators approximated): re-measure and repeat.
    for _ in 0..4 {
        let total = json_len(&v);
        if total <= limit {
            return (Cow::Owned(v), dropped);
        }
        let mut es = entries(&v, 0);
        let mut freed = 0;
        while freed < total - limit {
            let Some(top) = largest(&mut es) else { break };
            let n = if top.children.iter().filter(|c| c.alive).count() >= 2 {
                let outer = top.seg.clone();
                let Some(c) = largest(&mut top.children) else {
                    break;
                };
                c.alive = false;
                dropped.push(show(&[&outer, &c.seg]));
                let n = c.size + 1;
                top.size = top.size.saturating_sub(n);
                n
            } else {
                top.alive = false;
                dropped.push(show(&[&top.seg]));
                top.size + 1
            };
            freed += n;
        }
        apply(&mut v, &es);
    }
    if json_len(&v) > limit {
        dropped.push("(everything else)".into());
        v = Value::Object(serde_json::Map::new());
    }
    (Cow::Owned(v), dropped)
}

/// Logs what [`fit`] dropped, once per object and set of dropped entries (not every tick).
#[derive(Default)]
pub struct OversizeLog(HashMap<String, Vec<String>>);

impl OversizeLog {
    /// Notes the entries dropped from object `id` (empty: it fits). Returns true when
    /// this set is new for the object (and was logged).
    pub fn note(&mut self, id: &str, dropped: &[String]) -> bool {
        if dropped.is_empty() {
            if self.0.remove(id).is_some() {
                tracing::info!(object = %bound(id, LOG_NAME_CHARS), "fits in Sync's 16 KiB again");
            }
            return false;
        }
        if self.0.get(id).is_some_and(|d| d == dropped) {
            return false;
        }
        tracing::warn!(object = %bound(id, LOG_NAME_CHARS), dropped = ?dropped, "over Sync's 16 KiB limit: published without these entries");
        self.0.insert(id.to_owned(), dropped.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_names_are_cut_on_a_char_boundary_and_stay_distinct() {
        assert_eq!(bound("Sales", 320), "Sales");
        let a = "é".repeat(400);
        let b = format!("{}x", "é".repeat(399));
        let (ba, bb) = (bound(&a, 320), bound(&b, 320));
        assert_eq!(ba.chars().count(), 320);
        assert_ne!(ba, bb);
        assert_eq!(ba, bound(&a, 320), "stable");
        assert_eq!(name(&"x".repeat(1000)).chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn fit_drops_the_largest_entries_only() {
        let small = json!({"voice": 1, "chat": 2});
        assert!(matches!(fit(&small, 100), (Cow::Borrowed(_), ref d) if d.is_empty()));
        let big = "c".repeat(20_000);
        let doc = json!({"voice": 1, "chat": 2, (big.clone()): 3});
        let (v, d) = fit(&doc, MAX_DATA_BYTES);
        assert_eq!(*v, json!({"voice": 1, "chat": 2}));
        assert_eq!(d.len(), 1);
        assert!(d[0].len() <= LOG_NAME_CHARS);
        // Nested: only the oversized channel goes, the rest of `by_channel` stays.
        let doc = json!({"total": 5, "by_channel": {"voice": {"n": 1}, (big.clone()): {"n": 2}, "chat": {"n": 3}}});
        let (v, d) = fit(&doc, MAX_DATA_BYTES);
        assert_eq!(
            *v,
            json!({"total": 5, "by_channel": {"voice": {"n": 1}, "chat": {"n": 3}}})
        );
        assert!(d[0].starts_with("by_channel.ccc"), "{d:?}");
        // Many entries: as few as needed, largest first.
        let rows: Vec<Value> = (0..40)
            .map(|i| json!({"i": i, "pad": "x".repeat(400 + i)}))
            .collect();
        let doc = json!({ "rows": rows });
        let (v, d) = fit(&doc, MAX_DATA_BYTES);
        assert!(json_len(&v) <= MAX_DATA_BYTES);
        let kept = v["rows"].as_array().unwrap();
        assert_eq!(kept.len() + d.len(), 40);
        assert!(d.len() <= 5, "{d:?}");
        assert_eq!(d[0], "rows[39]");
        assert_eq!(kept[0]["i"], 0);
        // A lone huge field of a row.
        let row = json!({"big": big, "small": 1});
        let (v, d) = fit(&row, MAX_DATA_BYTES);
        assert_eq!((&*v, d), (&json!({"small": 1}), vec!["big".to_string()]));
    }

    #[test]
    fn oversize_is_logged_once_per_set() {
        let mut log = OversizeLog::default();
        let d = vec!["a".to_string()];
        assert!(log.note("doc", &d));
        assert!(!log.note("doc", &d));
        assert!(log.note("doc", &["b".to_string()]));
        assert!(!log.note("doc", &[]));
        assert!(log.note("doc", &["b".to_string()]));
    }
}
