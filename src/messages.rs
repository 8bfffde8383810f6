//! Message metrics of a messaging task, from its conversation's messages. Pure.
//!
//! A task's messages are those of its conversation created from `task_created` until
//! the task ended (or now, while open). The agent is any author who is the identity of
//! a worker of the task; everyone else is the customer.
//! - `agent_message_count`, `client_message_count`: distinct messages (by sid).
//! - `agent_first_response_time`: first agent message − `task_created` (s).
//! - `agent_total_response_time`: over every agent message that follows one or more
//!   unanswered customer messages, the sum of (that agent message − the first of those
//!   customer messages), in seconds; `agent_reply_count` counts those replies.
//!   `client_total_response_time` / `client_reply_count`: the same with roles swapped.
//!
//! Messages are ordered by creation time, then index, then sid, so the result does not
//! depend on the order they arrived in or on duplicates.

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sid: String,
    pub index: Option<i64>,
    pub author: Option<String>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub agent_message_count: i64,
    pub client_message_count: i64,
    pub agent_first_response_time: Option<f64>,
    pub agent_total_response_time: Option<f64>,
    pub client_total_response_time: Option<f64>,
    pub agent_reply_count: i64,
    pub client_reply_count: i64,
}

/// The identity of a worker in Conversations, from its attributes: the attribute named
/// `attr` (default `contact_uri`), without a `client:` prefix.
pub fn identity(attributes: &serde_json::Value, attr: &str) -> Option<String> {
    let v = attributes.get(attr)?.as_str()?.trim();
    let v = v.strip_prefix("client:").unwrap_or(v);
    (!v.is_empty()).then(|| v.to_owned())
}

pub fn compute(
    messages: &[Message],
    task_created_ms: i64,
    ended_ms: Option<i64>,
    agents: &HashSet<String>,
) -> Metrics {
    // Distinct by sid, in a total order.
    let mut by_sid: BTreeMap<&str, &Message> = BTreeMap::new();
    for m in messages {
        by_sid.entry(m.sid.as_str()).or_insert(m);
    }
    let mut ms: Vec<&Message> = by_sid
        .into_values()
        .filter(|m| m.created_ms >= task_created_ms && ended_ms.is_none_or(|e| m.created_ms <= e))
        .collect();
    ms.sort_by(|a, b| (a.created_ms, a.index, &a.sid).cmp(&(b.created_ms, b.index, &b.sid)));
    let mut out = Metrics::default();
    let (mut agent_total, mut client_total) = (0i64, 0i64);
    // The first message of the other side still waiting for an answer.
    let mut waiting_customer: Option<i64> = None;
    let mut waiting_agent: Option<i64> = None;
    for m in ms {
        let is_agent = m.author.as_deref().is_some_and(|a| agents.contains(a));
        if is_agent {
            out.agent_message_count += 1;
            if out.agent_first_response_time.is_none() {
                out.agent_first_response_time =
                    Some((m.created_ms - task_created_ms) as f64 / 1000.0);
            }
            if let Some(c) = waiting_customer.take() {
                agent_total += m.created_ms - c;
                out.agent_reply_count += 1;
            }
            waiting_agent.get_or_insert(m.created_ms);
        } else {
            out.client_message_count += 1;
            if let Some(a) = waiting_agent.take() {
                client_total += m.created_ms - a;
                out.client_reply_count += 1;
            }
            waiting_customer.get_or_insert(m.created_ms);
        }
    }
    if out.agent_reply_count > 0 {
        out.agent_total_response_time = Some(agent_total as f64 / 1000.0);
    }
    if out.client_reply_count > 0 {
        out.client_total_response_time = Some(client_total as f64 / 1000.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(sid: &str, s: i64, who: &str) -> Message {
        Message {
            sid: sid.into(),
            index: Some(s),
            author: Some(who.into()),
            created_ms: 1_000_000 + s * 1000,
        }
    }

    fn agents() -> HashSet<String> {
        ["alice".to_string()].into_iter().collect()
    }

    #[test]
    fn counts_and_response_times() {
        // customer 0, customer 10, agent 25, customer 40, agent 70, agent 75, customer 100
        let msgs = vec![
            m("1", 0, "+1555"),
            m("2", 10, "+1555"),
            m("3", 25, "alice"),
            m("4", 40, "+1555"),
            m("5", 70, "alice"),
            m("6", 75, "alice"),
            m("7", 100, "+1555"),
        ];
        let r = compute(&msgs, 1_000_000 - 5_000, None, &agents());
        assert_eq!((r.agent_message_count, r.client_message_count), (3, 4));
        assert_eq!(r.agent_first_response_time, Some(30.0));
        // agent replies: 25 - 0 = 25, 70 - 40 = 30
        assert_eq!(
            (r.agent_total_response_time, r.agent_reply_count),
            (Some(55.0), 2)
        );
        // customer replies: 40 - 25 = 15, 100 - 70 = 30
        assert_eq!(
            (r.client_total_response_time, r.client_reply_count),
            (Some(45.0), 2)
        );
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let msgs = vec![
            m("1", 0, "+1"),
            m("2", 5, "alice"),
            m("3", 9, "+1"),
            m("4", 12, "alice"),
        ];
        let a = compute(&msgs, 1_000_000, None, &agents());
        let mut shuffled = vec![
            msgs[3].clone(),
            msgs[1].clone(),
            msgs[0].clone(),
            msgs[2].clone(),
            msgs[1].clone(),
        ];
        shuffled.reverse();
        assert_eq!(compute(&shuffled, 1_000_000, None, &agents()), a);
        assert_eq!(a.agent_total_response_time, Some(8.0));
    }

    #[test]
    fn only_messages_within_the_task_count() {
        let msgs = vec![
            m("0", -50, "+1"),
            m("1", 0, "+1"),
            m("2", 5, "alice"),
            m("3", 500, "+1"),
        ];
        let r = compute(&msgs, 1_000_000, Some(1_000_000 + 100_000), &agents());
        assert_eq!((r.client_message_count, r.agent_message_count), (1, 1));
        assert_eq!(r.client_total_response_time, None);
    }

    #[test]
    fn identities_from_attributes() {
        let a = serde_json::json!({"contact_uri": "client:alice_40acme_2Ecom", "email": "a@x"});
        assert_eq!(
            identity(&a, "contact_uri").as_deref(),
            Some("alice_40acme_2Ecom")
        );
        assert_eq!(identity(&a, "email").as_deref(), Some("a@x"));
        assert_eq!(identity(&a, "nope"), None);
    }
}
