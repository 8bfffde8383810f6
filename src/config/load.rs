//! Reading the config file so that one run names every problem, each with where it is
//! (`config.toml:12:1: unknown key ...`), as a compiler would.
//!
//! serde stops at the first error: an unknown key, a value of the wrong type. So the
//! file is parsed once into a document that keeps every item's byte span, and
//! deserialized from it again after each error: the error's span says which item it is
//! about, that item is recorded as a problem and removed, and the next try goes on past
//! it. Unknown keys are still found by serde's `deny_unknown_fields`, so the structs in
//! `mod.rs` stay the one list of known keys; the "did you mean" comes from the keys
//! serde says it expected.

use super::Config;
use serde::Deserialize;
use std::ops::Range;
use toml_edit::{Array, ArrayOfTables, Item, TableLike, Value};

/// Keys whose values are never shown, not even in a type error.
const SECRETS: [&str; 4] = [
    "postgres.url",
    "twilio.auth_token",
    "twilio.api_key_secret",
    "server.admin_token",
];

/// Each error removes an item, so the tries are bounded by the file's size; this bound
/// only guards against a deserializer that reports an error the removal does not cure.
const MAX_TRIES: usize = 500;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A problem found while reading the file, before the values are checked.
#[derive(Debug)]
pub(super) struct Found {
    /// The key path it concerns (`queue.workers`, `jobs[daily].target`); empty for a
    /// syntax error.
    pub key: String,
    /// Byte offset in the file, when the problem has a place there.
    pub at: Option<usize>,
    pub message: String,
}

/// The file's text and its document: for turning byte offsets into line and column, and
/// for finding where a key named by a later check is.
pub(super) struct Source {
    text: String,
    doc: Option<Item>,
    /// Items removed after an error (their paths as labels): later checks that complain
    /// about the default that replaced them would say the same thing twice.
    removed: Vec<String>,
    /// The keys suggested for unknown ones (as labels): when such a key is then
    /// missing, the suggestion already said so.
    suggested: Vec<String>,
    /// Array elements removed (the array's label, the element's index in the file): the
    /// config's `jobs[2]` may be the file's fourth `[[jobs]]`.
    dropped: Vec<(String, usize)>,
}

/// Parses and deserializes `text`: the config (None when the file is not TOML at all, or
/// an error could not be got past) and every problem found on the way.
pub(super) fn read(text: &str) -> (Option<Config>, Vec<Found>, Source) {
    let mut src = Source {
        text: text.to_owned(),
        doc: None,
        removed: Vec::new(),
        suggested: Vec::new(),
        dropped: Vec::new(),
    };
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(d) => d.into_item(),
        Err(e) => {
            let found = Found {
                key: String::new(),
                at: e.span().map(|s| s.start),
                message: one_line(e.message()),
            };
            return (None, vec![found], src);
        }
    };
    // The copy deserialized below keeps the spans (a `DocumentMut` made from its table
    // does not clear them), so errors point into `text`. Paths found in the copy are
    // turned into paths of the original before they are named: removing an element of
    // an array shifts the indices of those after it.
    let mut work = doc.clone();
    let orig = src.doc.insert(doc);
    let mut found = Vec::new();
    for _ in 0..MAX_TRIES {
        let table = work.as_table().cloned().unwrap_or_default();
        let de = toml_edit::de::Deserializer::from(toml_edit::DocumentMut::from(table));
        let e = match Config::deserialize(de) {
            Ok(cfg) => return (Some(cfg), found, src),
            Err(e) => e,
        };
        let message = e.message().to_owned();
        let mut wpath = match e.span() {
            Some(span) => deepest_at(&work, span.start),
            None => Vec::new(),
        };
        let unknown = UnknownField::parse(&message);
        if let Some(u) = &unknown {
            // At the key itself, except inside an internally tagged enum (a job's
            // `target`), where serde has buffered the table and the span is the table's.
            if wpath.last() != Some(&Seg::Key(u.name.clone())) {
                wpath.push(Seg::Key(u.name.clone()));
            }
        }
        let path = to_original(&work, orig, &wpath);
        let key = label(orig, &path);
        let mut report = true;
        let text = if let Some(u) = unknown {
            let parent = label(orig, &path[..path.len() - 1]);
            if let Some(k) = suggest(&u.name, &u.expected) {
                src.suggested.push(join(&parent, k));
            }
            u.describe(&parent)
        } else {
            if let Some(field) = missing_field(&message) {
                // A required key removed after an error of its own, or misspelled, is
                // already reported.
                let child = join(&key, field);
                report = !src.removed.contains(&child) && !src.suggested.contains(&child);
            }
            if SECRETS.contains(&key.as_str()) {
                format!("{key}: must be a string (the value is not shown: it is a secret)")
            } else if key.is_empty() {
                one_line(&message)
            } else {
                format!("{key}: {}", one_line(&message))
            }
        };
        if report {
            found.push(Found {
                key: key.clone(),
                at: locate_path(orig, &path).or_else(|| e.span().map(|s| s.start)),
                message: text,
            });
        }
        if wpath.is_empty() || !remove(&mut work, &wpath) {
            return (None, found, src);
        }
        if let Some((Seg::Index(i), parent)) = path.split_last() {
            src.dropped.push((label(orig, parent), *i));
        }
        src.removed.push(key);
    }
    (None, found, src)
}

/// The path in `orig` of the item at `path` in `work` (a copy of `orig` with items
/// removed): array elements are matched by where they start in the file.
fn to_original(work: &Item, orig: &Item, path: &[Seg]) -> Vec<Seg> {
    let mut out = Vec::with_capacity(path.len());
    let (mut w, mut o) = (node(work), node(orig));
    for seg in path {
        let mapped = match seg {
            Seg::Key(_) => seg.clone(),
            Seg::Index(i) => {
                let start = child(&w, seg).and_then(|c| c.1).map(|s| s.start);
                let found = children(&o).into_iter().find(|s| {
                    start.is_some() && child(&o, s).and_then(|c| c.1).map(|s| s.start) == start
                });
                found.unwrap_or(Seg::Index(*i))
            }
        };
        w = child(&w, seg).map_or(Node::Leaf, |c| c.0);
        o = child(&o, &mapped).map_or(Node::Leaf, |c| c.0);
        out.push(mapped);
    }
    out
}

impl Source {
    /// `line:column` (1-based, columns in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        )
    }

    /// A problem of [`Config::problems`] that names an array element by its index in
    /// the config (`jobs[1].name: missing`), renamed by its index in the file.
    pub fn renumber(&self, problem: String) -> String {
        let Some((array, rest)) = problem.split_once('[') else {
            return problem;
        };
        let Some((ix, rest)) = rest.split_once(']') else {
            return problem;
        };
        let Ok(ix) = ix.parse::<usize>() else {
            return problem;
        };
        let dropped: Vec<usize> = self
            .dropped
            .iter()
            .filter(|(a, _)| a == array)
            .map(|(_, i)| *i)
            .collect();
        if dropped.is_empty() {
            return problem;
        }
        match (0..).filter(|i| !dropped.contains(i)).nth(ix) {
            Some(i) => format!("{array}[{i}]{rest}"),
            None => problem,
        }
    }

    /// Where the key a problem names is in the file: the problems of
    /// [`Config::problems`] start with it (`server.listen: ...`, `jobs[daily].sql: ...`).
    pub fn locate_problem(&self, problem: &str) -> Option<usize> {
        let key = problem_key(problem)?;
        let doc = self.doc.as_ref()?;
        locate_path(doc, &parse_label(doc, key)?)
    }

    /// The problem is about a key already reported (and removed) while reading.
    pub fn already_reported(&self, problem: &str) -> bool {
        problem_key(problem).is_some_and(|k| {
            self.removed
                .iter()
                .any(|r| k == r || k.starts_with(&format!("{r}.")))
        })
    }
}

/// The key a problem of [`Config::problems`] starts with, if it starts with one.
pub(super) fn problem_key(problem: &str) -> Option<&str> {
    let (key, _) = problem.split_once(':')?;
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| !c.is_whitespace() && c != '`' && c != '"');
    ok.then_some(key)
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// toml's messages may span lines ("invalid table header\nexpected `.`, `]`").
fn one_line(s: &str) -> String {
    s.trim().lines().collect::<Vec<_>>().join(": ")
}

/// serde's `unknown field `x`, expected one of `a`, `b`` (or `expected `a``,
/// `expected `a` or `b``, `there are no fields`).
struct UnknownField {
    name: String,
    expected: Vec<String>,
}

impl UnknownField {
    fn parse(message: &str) -> Option<UnknownField> {
        let rest = message.strip_prefix("unknown field `")?;
        let (name, rest) = rest.split_once('`')?;
        let expected = match rest.split_once("expected") {
            Some((_, list)) => list
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        Some(UnknownField {
            name: name.to_owned(),
            expected,
        })
    }

    fn describe(&self, parent: &str) -> String {
        let mut s = format!("unknown key `{}`", self.name);
        if !parent.is_empty() {
            if parent.contains(['.', '[']) {
                s.push_str(&format!(" in `{parent}`"));
            } else {
                s.push_str(&format!(" in [{parent}]"));
            }
        }
        match suggest(&self.name, &self.expected) {
            Some(k) => s.push_str(&format!(" (did you mean `{k}`?)")),
            None if !self.expected.is_empty() => {
                s.push_str(&format!(" (known keys: {})", self.expected.join(", ")))
            }
            None => {}
        }
        s
    }
}

/// serde's `missing field `x``.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split_once('`')
        .map(|(f, _)| f)
}

/// The known key closest to a misspelled one, when it is close: a typo or two, a
/// swapped pair, a different case.
fn suggest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let lower = name.to_lowercase();
    known
        .iter()
        .map(|k| (distance(&lower, &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// A node of the document, seen the same way whether a table is written as a section
/// or inline, and an array of tables as `[[x]]` or inline.
enum Node<'a> {
    Table(&'a dyn TableLike),
    Tables(&'a ArrayOfTables),
    Array(&'a Array),
    Leaf,
}

fn node(item: &Item) -> Node<'_> {
    match item {
        Item::ArrayOfTables(a) => Node::Tables(a),
        Item::Value(Value::Array(a)) => Node::Array(a),
        other => other.as_table_like().map_or(Node::Leaf, Node::Table),
    }
}

fn value_node(v: &Value) -> Node<'_> {
    match v {
        Value::Array(a) => Node::Array(a),
        Value::InlineTable(t) => Node::Table(t),
        _ => Node::Leaf,
    }
}

/// The child at `seg`, with its own span and (for a key) the key's span.
fn child<'a>(n: &Node<'a>, seg: &Seg) -> Option<(Node<'a>, Span, Span)> {
    match (n, seg) {
        (Node::Table(t), Seg::Key(k)) => {
            let (key, item) = t.get_key_value(k)?;
            Some((node(item), item.span(), key.span()))
        }
        (Node::Tables(a), Seg::Index(i)) => {
            let t = a.get(*i)?;
            Some((Node::Table(t), t.span(), None))
        }
        (Node::Array(a), Seg::Index(i)) => {
            let v = a.get(*i)?;
            Some((value_node(v), v.span(), None))
        }
        _ => None,
    }
}

type Span = Option<Range<usize>>;

fn children(n: &Node<'_>) -> Vec<Seg> {
    match n {
        Node::Table(t) => t.iter().map(|(k, _)| Seg::Key(k.to_owned())).collect(),
        Node::Tables(a) => (0..a.len()).map(Seg::Index).collect(),
        Node::Array(a) => (0..a.len()).map(Seg::Index).collect(),
        Node::Leaf => Vec::new(),
    }
}

/// The longest path whose key or value covers byte `at`. Every child is searched: a
/// section's span is its header only, not its keys.
fn deepest_at(doc: &Item, at: usize) -> Vec<Seg> {
    fn walk(n: &Node<'_>, at: usize, path: &mut Vec<Seg>, best: &mut Vec<Seg>) {
        for seg in children(n) {
            let Some((c, span, key)) = child(n, &seg) else {
                continue;
            };
            path.push(seg);
            let covers = |s: &Range<usize>| s.contains(&at) || s.start == at;
            let covers = span.as_ref().is_some_and(covers) || key.as_ref().is_some_and(covers);
            if covers && path.len() > best.len() {
                *best = path.clone();
            }
            walk(&c, at, path, best);
            path.pop();
        }
    }
    let mut best = Vec::new();
    walk(&node(doc), at, &mut Vec::new(), &mut best);
    best
}

/// Where the item at `path` starts in the file: its key when it has one.
fn locate_path(doc: &Item, path: &[Seg]) -> Option<usize> {
    let mut n = node(doc);
    let mut at = None;
    for seg in path {
        let (c, span, key) = child(&n, seg)?;
        at = key.or(span).map(|s| s.start);
        n = c;
    }
    at
}

/// A path as the checks name keys: `queue.workers`, `jobs[daily].target` (a job by its
/// name, else its index).
fn label(doc: &Item, path: &[Seg]) -> String {
    let mut s = String::new();
    let mut n = node(doc);
    for seg in path {
        let next = child(&n, seg);
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => {
                let name = match next.as_ref().map(|c| &c.0) {
                    Some(Node::Table(t)) => t
                        .get("name")
                        .and_then(Item::as_str)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned),
                    _ => None,
                };
                s.push_str(&format!("[{}]", name.unwrap_or_else(|| i.to_string())));
            }
        }
        match next {
            Some((c, _, _)) => n = c,
            None => n = Node::Leaf,
        }
    }
    s
}

/// The inverse of [`label`], for keys named by later checks.
fn parse_label(doc: &Item, label: &str) -> Option<Vec<Seg>> {
    let mut path = Vec::new();
    let mut n = node(doc);
    for part in label.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, Some(rest.strip_suffix(']')?)),
            None => (part, None),
        };
        let seg = Seg::Key(key.to_owned());
        n = child(&n, &seg)?.0;
        path.push(seg);
        if let Some(ix) = index {
            let len = match &n {
                Node::Tables(a) => a.len(),
                Node::Array(a) => a.len(),
                _ => return None,
            };
            let by_name = (0..len).find(|i| {
                matches!(child(&n, &Seg::Index(*i)), Some((Node::Table(t), _, _))
                    if t.get("name").and_then(Item::as_str) == Some(ix))
            });
            let i = by_name.or_else(|| ix.parse().ok())?;
            let seg = Seg::Index(i);
            n = child(&n, &seg)?.0;
            path.push(seg);
        }
    }
    Some(path)
}

/// Removes the item at `path`; false when there is none.
fn remove(doc: &mut Item, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut item = doc;
    // Inline arrays hold values, not items: at most one level of them is walked (a job
    // given as `jobs = [{...}]`), which is all a config of this shape has.
    for (i, seg) in parents.iter().enumerate() {
        item = match (item, seg) {
            (it, Seg::Key(k)) => match it.as_table_like_mut().and_then(|t| t.get_mut(k)) {
                Some(next) => next,
                None => return false,
            },
            (Item::ArrayOfTables(a), Seg::Index(ix)) => {
                let Some(t) = a.get_mut(*ix) else {
                    return false;
                };
                return remove_in_table(t, &parents[i + 1..], last);
            }
            (Item::Value(Value::Array(a)), Seg::Index(ix)) => {
                let Some(Value::InlineTable(t)) = a.get_mut(*ix) else {
                    return false;
                };
                return remove_in_table(t, &parents[i + 1..], last);
            }
            _ => return false,
        };
    }
    match (item, last) {
        (it, Seg::Key(k)) => it
            .as_table_like_mut()
            .is_some_and(|t| t.remove(k).is_some()),
        (Item::ArrayOfTables(a), Seg::Index(i)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        (Item::Value(Value::Array(a)), Seg::Index(i)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

fn remove_in_table(t: &mut dyn TableLike, rest: &[Seg], last: &Seg) -> bool {
    match rest.split_first() {
        None => matches!(last, Seg::Key(k) if t.remove(k).is_some()),
        Some((Seg::Key(k), more)) => match t.get_mut(k) {
            Some(item) => {
                let mut path: Vec<Seg> = more.to_vec();
                path.push(last.clone());
                remove(item, &path)
            }
            None => false,
        },
        Some((Seg::Index(_), _)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let (_, found, src) = read(text);
        found
            .into_iter()
            .map(|f| match f.at {
                Some(at) => {
                    let (l, c) = src.line_col(at);
                    format!("{l}:{c}: {}", f.message)
                }
                None => f.message,
            })
            .collect()
    }

    #[test]
    fn unknown_keys_and_bad_types_are_all_named_with_their_place() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n\n[queue]\npath = \"/q\"\nwrokers = 3\nbatch_size = \"big\"\n\n[sevrer]\nx = 1\n\n[postgres]\nurl = 5\n";
        let (cfg, _, _) = read(text);
        assert!(cfg.is_some(), "the config is made of what is left");
        assert_eq!(
            problems(text),
            vec![
                "6:1: unknown key `wrokers` in [queue] (did you mean `workers`?)",
                "7:1: queue.batch_size: invalid type: string \"big\", expected usize",
                "9:2: unknown key `sevrer` (did you mean `server`?)",
                "13:1: postgres.url: must be a string (the value is not shown: it is a secret)",
            ]
        );
    }

    #[test]
    fn a_syntax_error_has_its_place() {
        let p = problems("[server]\nlisten = \"x\"\n[queue\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("3:7: "), "{p:?}");
        assert!(!p[0].contains('\n'), "{p:?}");
        assert!(read("[queue\n").0.is_none());
    }

    #[test]
    fn jobs_are_named_by_their_name() {
        let text = r#"
[[jobs]]
name = "daily"
schedule = "0 * * * * *"
sql = "SELECT 1"
shedule = "x"
target = { type = "list", nmae = "x" }
"#;
        let p = problems(text);
        assert_eq!(
            p,
            vec![
                "6:1: unknown key `shedule` in `jobs[daily]` (did you mean `schedule`?)",
                "7:27: unknown key `nmae` in `jobs[daily].target` (did you mean `name`?)",
            ]
        );
        // The target is then without its name, and the job without a target: both
        // follow from the misspelling already reported, and the job is left out.
        let (cfg, found, _) = read(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(cfg.is_some_and(|c| c.jobs.is_empty()));
    }

    #[test]
    fn jobs_after_a_removed_one_keep_their_place() {
        let job = |name: &str, sql: &str| {
            format!("[[jobs]]\n{name}schedule = \"0 * * * * *\"\n{sql}target = {{ type = \"list\", name = \"x\" }}\n")
        };
        // The first job lacks its query, the second its name, the third is whole.
        let text = format!(
            "{}{}{}",
            job("name = \"a\"\n", ""),
            job("", "sql = \"SELECT 1\"\n"),
            job("name = \"c\"\n", "sql = \"SELECT 2\"\n")
        );
        let p = problems(&text);
        assert_eq!(
            p,
            vec![
                "1:1: jobs[a]: missing field `sql`",
                "5:1: jobs[1]: missing field `name`"
            ]
        );
        let (cfg, _, src) = read(&text);
        assert_eq!(cfg.unwrap().jobs[0].sql, "SELECT 2");
        assert_eq!(
            src.renumber("jobs[0].name: missing".into()),
            "jobs[2].name: missing"
        );
        assert_eq!(src.renumber("server.listen: x".into()), "server.listen: x");
    }

    #[test]
    fn later_problems_are_located_by_key() {
        let text = "[server]\nlisten = \"nope\"\n[[jobs]]\nname = \"d\"\nschedule = \"x\"\nsql = \"SELECT 1\"\ntarget = { type = \"list\", name = \"l\" }\n";
        let (_, found, src) = read(text);
        assert!(found.is_empty(), "{found:?}");
        let at = src.locate_problem("server.listen: `nope` is not").unwrap();
        assert_eq!(src.line_col(at), (2, 1));
        let at = src.locate_problem("jobs[d].schedule: `x` must be").unwrap();
        assert_eq!(src.line_col(at), (5, 1));
        assert_eq!(src.locate_problem("postgres.url: missing"), None);
        assert_eq!(src.locate_problem("sla: threshold for `x`"), None);
    }

    #[test]
    fn suggestions_are_only_for_near_misses() {
        let known: Vec<String> = ["workers", "path", "batch_size"].map(String::from).to_vec();
        assert_eq!(suggest("wrokers", &known), Some("workers"));
        assert_eq!(suggest("PATH", &known), Some("path"));
        assert_eq!(suggest("batchsize", &known), Some("batch_size"));
        assert_eq!(suggest("colour", &known), None);
        assert_eq!(distance("ab", "ba"), 1);
    }
}
