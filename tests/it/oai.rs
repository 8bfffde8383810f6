//! Twilio's published API definitions (a subset vendored in `tests/twilio-oai/`, made by
//! `scripts/vendor-twilio-oai.py` from twilio-oai, MIT licence beside it) and a check of
//! one request against them, so the stand-in can refuse to agree with a client that
//! sends what the real API does not define.
//!
//! A request conforms when:
//! - its path matches a path template of the definitions (the most literal match wins:
//!   Sync and Conversations both live under `/v1/Services/…`) and the method exists;
//! - every query parameter (and, for POST, every form field) is declared for that
//!   operation;
//! - a parameter that is not an array appears once; an array is sent as repeated
//!   parameters, as the official libraries send it, never comma-joined;
//! - integers and booleans parse, and enum values are among the declared ones.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

const DEFINITIONS: [(&str, &str); 4] = [
    (
        "taskrouter",
        include_str!("../twilio-oai/twilio_taskrouter_v1.json"),
    ),
    ("sync", include_str!("../twilio-oai/twilio_sync_v1.json")),
    (
        "conversations",
        include_str!("../twilio-oai/twilio_conversations_v1.json"),
    ),
    (
        "events",
        include_str!("../twilio-oai/twilio_events_v1.json"),
    ),
];

#[derive(Debug)]
struct Param {
    ty: String,
    enumeration: Option<Vec<String>>,
    items: Option<Box<Param>>,
}

#[derive(Debug)]
struct Op {
    id: String,
    query: HashMap<String, Param>,
    form: HashMap<String, Param>,
}

#[derive(Debug)]
struct PathDef {
    /// `None` for a `{Variable}` segment.
    segments: Vec<Option<String>>,
    ops: HashMap<String, Op>,
}

fn param(v: &Value) -> Param {
    Param {
        ty: v["type"].as_str().unwrap_or("string").to_string(),
        enumeration: v["enum"].as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        }),
        items: v.get("items").map(|i| Box::new(param(i))),
    }
}

fn definitions() -> &'static Vec<PathDef> {
    static DEFS: OnceLock<Vec<PathDef>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut out = Vec::new();
        for (api, text) in DEFINITIONS {
            let doc: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("tests/twilio-oai {api}: {e}"));
            let Some(paths) = doc["paths"].as_object() else {
                panic!("tests/twilio-oai {api}: no paths");
            };
            for (path, methods) in paths {
                let segments = path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                    .collect();
                let mut ops = HashMap::new();
                for (method, op) in methods.as_object().into_iter().flatten() {
                    let pick = |key: &str, want_query: bool| -> HashMap<String, Param> {
                        op[key]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(_, p)| !want_query || p["in"] == "query")
                            .map(|(n, p)| (n.clone(), param(p)))
                            .collect()
                    };
                    ops.insert(
                        method.clone(),
                        Op {
                            id: op["operationId"].as_str().unwrap_or("?").to_string(),
                            query: pick("params", true),
                            form: pick("form", false),
                        },
                    );
                }
                out.push(PathDef { segments, ops });
            }
        }
        out
    })
}

fn check_values(kind: &str, name: &str, p: &Param, values: &[&str]) -> Result<(), String> {
    let scalar = |p: &Param, v: &str| -> Result<(), String> {
        let ok = match p.ty.as_str() {
            "integer" => v.trim().parse::<i64>().is_ok(),
            "number" => v.trim().parse::<f64>().is_ok(),
            "boolean" => matches!(v, "true" | "false" | "True" | "False"),
            _ => true,
        };
        if !ok {
            return Err(format!("{kind} {name}={v:?} is not a valid {}", p.ty));
        }
        if let Some(e) = &p.enumeration {
            if !e.iter().any(|x| x == v) {
                return Err(format!("{kind} {name}={v:?} is not one of {e:?}"));
            }
        }
        Ok(())
    };
    if p.ty == "array" {
        for v in values {
            if v.contains(',') {
                return Err(format!(
                    "{kind} {name}={v:?} looks comma-joined: {name} is an array, sent as repeated parameters"
                ));
            }
            if let Some(items) = &p.items {
                scalar(items, v)?;
            }
        }
        return Ok(());
    }
    if values.len() > 1 {
        return Err(format!(
            "{kind} {name} appears {} times but is not an array",
            values.len()
        ));
    }
    values.iter().try_for_each(|v| scalar(p, v))
}

fn check_set(
    kind: &str,
    declared: &HashMap<String, Param>,
    sent: &[(String, String)],
) -> Result<(), String> {
    let mut by_name: Vec<(&str, Vec<&str>)> = Vec::new();
    for (k, v) in sent {
        match by_name.iter_mut().find(|(n, _)| n == k) {
            Some((_, vs)) => vs.push(v),
            None => by_name.push((k, vec![v])),
        }
    }
    for (name, values) in by_name {
        let Some(p) = declared.get(name) else {
            let mut known: Vec<&String> = declared.keys().collect();
            known.sort();
            return Err(format!(
                "{kind} parameter {name} is not defined here (defined: {known:?})"
            ));
        };
        check_values(kind, name, p, &values)?;
    }
    Ok(())
}

/// Checks one request (path percent-decoded or not: variables match any segment).
/// Returns the operation id, or what does not conform.
pub fn check(
    method: &str,
    path: &str,
    query: &[(String, String)],
    form: &[(String, String)],
) -> Result<String, String> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let best = definitions()
        .iter()
        .filter(|d| d.segments.len() == segs.len())
        .filter(|d| {
            d.segments
                .iter()
                .zip(&segs)
                .all(|(t, s)| t.as_deref().is_none_or(|lit| lit == *s))
        })
        .max_by_key(|d| d.segments.iter().filter(|s| s.is_some()).count())
        .ok_or_else(|| format!("no path of Twilio's definitions matches {path}"))?;
    let op = best
        .ops
        .get(&method.to_ascii_lowercase())
        .or_else(|| best.ops.get(&method.to_ascii_uppercase()))
        .ok_or_else(|| format!("{method} is not defined for {path}"))?;
    check_set("query", &op.query, query)?;
    if method.eq_ignore_ascii_case("POST") {
        check_set("form", &op.form, form)?;
    } else if !form.is_empty() {
        return Err(format!("{method} {path} carries a form body"));
    }
    Ok(op.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const WS: &str = "/v1/Workspaces/WS00000000000000000000000000000001";

    #[test]
    fn the_definitions_load_and_resolve_operations() {
        assert!(definitions().len() > 100);
        let tasks = format!("{WS}/Tasks");
        assert_eq!(
            check("GET", &tasks, &p(&[("PageSize", "1000")]), &[]).as_deref(),
            Ok("ListTask")
        );
        let item = "/v1/Services/IS1/Maps/taskQueueStats/Items/Sales%20EMEA";
        let form = p(&[("Data", "{}"), ("ItemTtl", "60"), ("CollectionTtl", "60")]);
        assert_eq!(
            check("POST", item, &[], &form).as_deref(),
            Ok("UpdateSyncMapItem")
        );
        let msgs = "/v1/Services/IS1/Conversations/CH1/Messages";
        assert_eq!(
            check("GET", msgs, &p(&[("PageSize", "100")]), &[]).as_deref(),
            Ok("ListServiceConversationMessage")
        );
    }

    #[test]
    fn arrays_are_repeated_not_joined() {
        let tasks = format!("{WS}/Tasks");
        let repeated = p(&[
            ("AssignmentStatus", "pending"),
            ("AssignmentStatus", "reserved"),
        ]);
        assert!(check("GET", &tasks, &repeated, &[]).is_ok());
        let joined = p(&[("AssignmentStatus", "pending,reserved")]);
        let e = check("GET", &tasks, &joined, &[]).unwrap_err();
        assert!(e.contains("comma-joined"), "{e}");
        let twice = p(&[("PageSize", "10"), ("PageSize", "20")]);
        assert!(check("GET", &tasks, &twice, &[]).is_err());
    }

    #[test]
    fn undefined_things_are_named() {
        let e = check("GET", "/v1/Nowhere", &[], &[]).unwrap_err();
        assert!(e.contains("no path"), "{e}");
        let e = check("DELETE", &format!("{WS}/Events"), &[], &[]).unwrap_err();
        assert!(e.contains("DELETE is not defined"), "{e}");
        let e = check(
            "POST",
            "/v1/Services/IS1/Documents/d",
            &[],
            &p(&[("Data", "{}"), ("ItemTtl", "5")]),
        )
        .unwrap_err();
        assert!(e.contains("ItemTtl"), "{e}");
        let e = check(
            "POST",
            "/v1/Services/IS1/Documents/d",
            &[],
            &p(&[("Ttl", "soon")]),
        )
        .unwrap_err();
        assert!(e.contains("integer"), "{e}");
    }
}
