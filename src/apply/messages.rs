//! Message metrics of a messaging task, from its conversation's messages. Pure.
//!
//! A messaging task is created *by* the customer's first message (Studio's "Send to
//! Flex" or Conversations' autocreation), so that message is always a little older than
//! `task_created` and belongs to the task. A task's messages are therefore those of its
//! conversation created after the previous task on the same conversation ended (or
//! from the conversation's first message, when there was none) until this task ended
//! (or now, while open); see [`windows`]. The agent is any author who is the identity
//! of a worker of the task; everyone else is the customer.
//! - `agent_message_count`, `client_message_count`: distinct messages (by sid).
//! - `agent_first_response_time`: first agent message at or after `task_created` −
//!   `task_created` (s).
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

/// The part of a conversation that belongs to one task: messages created after
/// `after_ms` (exclusive; `None`: from the conversation's first message) and at or
/// before `until_ms` (`None`: the task is still open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub after_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Window {
    fn contains(&self, ms: i64) -> bool {
        self.after_ms.is_none_or(|a| ms > a) && self.until_ms.is_none_or(|u| ms <= u)
    }
}

/// One task of a conversation, as [`windows`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpan {
    /// `task_created`; a task without one sorts first.
    pub created_ms: Option<i64>,
    /// When the task ended (completed, canceled, deleted); `None` while open.
    pub ended_ms: Option<i64>,
}

/// The message window of each task of one conversation, in the order given.
///
/// A task's window opens when the tasks created before it on the same conversation
/// have ended (after the latest of their endings), or at the conversation's first
/// message when there are none: the customer's opening message, a little older than
/// the task it created, belongs to it. The window never opens later than the task's own
/// creation: when tasks overlap (a transfer creates the next task before the previous
/// one ends, or an earlier task's ending was never heard), messages from the new task's
/// creation on belong to it as well. It closes when the task ends. With tasks that do
/// not overlap, every message belongs to exactly one task (an ending instant belongs to
/// the task that ended). Tasks created in the same millisecond do not bound each other.
pub fn windows(tasks: &[TaskSpan]) -> Vec<Window> {
    let created = |t: &TaskSpan| t.created_ms.unwrap_or(i64::MIN);
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by_key(|&i| created(&tasks[i]));
    let mut out = vec![Window::default(); tasks.len()];
    // Over the tasks created strictly earlier: whether there were any, whether one is
    // still open, and the latest ending.
    let (mut any, mut open, mut latest_end) = (false, false, i64::MIN);
    let mut i = 0;
    while i < order.len() {
        let at = created(&tasks[order[i]]);
        let group_end = order[i..]
            .iter()
            .position(|&k| created(&tasks[k]) != at)
            .map_or(order.len(), |n| i + n);
        // `at - 1`: a message in the very millisecond the task was created is its own.
        // (An ending in that millisecond keeps it: an ending instant is the ended task's.)
        let after = any.then(|| {
            if open || latest_end > at {
                at.saturating_sub(1)
            } else {
                latest_end
            }
        });
        for &k in &order[i..group_end] {
            out[k] = Window {
                after_ms: after,
                until_ms: tasks[k].ended_ms,
            };
        }
        for &k in &order[i..group_end] {
            any = true;
            match tasks[k].ended_ms {
                Some(e) => latest_end = latest_end.max(e),
                None => open = true,
            }
        }
        i = group_end;
    }
    out
}

/// The metrics of one task from its conversation's messages (any order, duplicates
/// allowed), within `window` (see [`windows`]).
pub fn compute(
    messages: &[Message],
    window: Window,
    task_created_ms: i64,
    agents: &HashSet<String>,
) -> Metrics {
    // Distinct by sid, in a total order.
    let mut by_sid: BTreeMap<&str, &Message> = BTreeMap::new();
    for m in messages {
        by_sid.entry(m.sid.as_str()).or_insert(m);
    }
    let mut ms: Vec<&Message> = by_sid
        .into_values()
        .filter(|m| window.contains(m.created_ms))
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
            if out.agent_first_response_time.is_none() && m.created_ms >= task_created_ms {
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
        let r = compute(&msgs, Window::default(), 1_000_000 - 5_000, &agents());
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
        let a = compute(&msgs, Window::default(), 1_000_000, &agents());
        let mut shuffled = vec![
            msgs[3].clone(),
            msgs[1].clone(),
            msgs[0].clone(),
            msgs[2].clone(),
            msgs[1].clone(),
        ];
        shuffled.reverse();
        assert_eq!(
            compute(&shuffled, Window::default(), 1_000_000, &agents()),
            a
        );
        assert_eq!(a.agent_total_response_time, Some(8.0));
    }

    #[test]
    fn only_messages_within_the_window_count() {
        // The previous task on the conversation ended at -20 s; this one was created at
        // 0 by the customer's message at -10 s and ended at +100 s.
        let msgs = vec![
            m("0", -50, "+1"),
            m("1", -10, "+1"),
            m("2", 5, "alice"),
            m("3", 500, "+1"),
        ];
        let w = Window {
            after_ms: Some(1_000_000 - 20_000),
            until_ms: Some(1_000_000 + 100_000),
        };
        let r = compute(&msgs, w, 1_000_000, &agents());
        assert_eq!((r.client_message_count, r.agent_message_count), (1, 1));
        assert_eq!(r.agent_total_response_time, Some(15.0));
        assert_eq!(r.client_total_response_time, None);
    }

    /// The bug of issue 14: the customer's first message creates the task, so it is a
    /// little older than `task_created` and must count, with the first reply to it.
    #[test]
    fn the_opening_message_before_the_task_counts() {
        let created = 1_000_000 + 800;
        let msgs = vec![m("1", 0, "+1"), m("2", 20, "alice"), m("3", 30, "+1")];
        let w = windows(&[TaskSpan {
            created_ms: Some(created),
            ended_ms: Some(1_000_000 + 60_000),
        }]);
        let r = compute(&msgs, w[0], created, &agents());
        assert_eq!((r.client_message_count, r.agent_message_count), (2, 1));
        assert_eq!(r.agent_total_response_time, Some(20.0));
        assert_eq!(r.agent_reply_count, 1);
        assert_eq!(r.agent_first_response_time, Some(19.2));
    }

    fn span(created: i64, ended: Option<i64>) -> TaskSpan {
        TaskSpan {
            created_ms: Some(created),
            ended_ms: ended,
        }
    }

    #[test]
    fn windows_follow_the_previous_tasks_end() {
        // Given out of creation order: a (0..100), c (300..open), b (150..200).
        let w = windows(&[span(0, Some(100)), span(300, None), span(150, Some(200))]);
        assert_eq!(
            w[0],
            Window {
                after_ms: None,
                until_ms: Some(100)
            }
        );
        assert_eq!(
            w[2],
            Window {
                after_ms: Some(100),
                until_ms: Some(200)
            }
        );
        assert_eq!(
            w[1],
            Window {
                after_ms: Some(200),
                until_ms: None
            }
        );
    }

    #[test]
    fn overlapping_or_open_predecessors_never_push_the_window_past_creation() {
        // A transfer: b created at 50 while a runs until 80; c after a never-ended d.
        let w = windows(&[span(0, Some(80)), span(50, Some(120))]);
        assert_eq!(w[1].after_ms, Some(49));
        let w = windows(&[span(0, None), span(500, Some(600))]);
        assert_eq!(w[1].after_ms, Some(499));
        // The latest ending of all earlier tasks counts, not the last created one's.
        let w = windows(&[span(0, Some(400)), span(10, Some(20)), span(500, None)]);
        assert_eq!(w[2].after_ms, Some(400));
        // Same millisecond: neither bounds the other.
        let w = windows(&[span(7, Some(9)), span(7, Some(8))]);
        assert_eq!((w[0].after_ms, w[1].after_ms), (None, None));
        assert!(windows(&[]).is_empty());
    }

    proptest::proptest! {
        /// Tasks that follow one another on a conversation (each created after the
        /// previous ended) split its messages: each message up to the last ending
        /// belongs to exactly one task, whatever order the tasks are given in.
        #[test]
        fn sequential_tasks_partition_the_conversation(
            gaps in proptest::collection::vec((0i64..5_000, 1i64..50_000), 1..8),
            times in proptest::collection::vec(0i64..300_000, 0..60),
            rot in 0usize..8,
        ) {
            let mut spans = Vec::new();
            let mut t = 0;
            for (gap, len) in &gaps {
                let created = t + gap;
                spans.push(span(created, Some(created + len)));
                t = created + len;
            }
            let mut given = spans.clone();
            given.rotate_left(rot % spans.len());
            let ws = windows(&given);
            for (i, s) in given.iter().enumerate() {
                proptest::prop_assert_eq!(ws[i].until_ms, s.ended_ms);
            }
            for ms in times {
                let owners = ws.iter().filter(|w| w.contains(ms)).count();
                proptest::prop_assert_eq!(owners, usize::from(ms <= t));
            }
        }
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
