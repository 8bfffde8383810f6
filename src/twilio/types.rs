//! Twilio's REST answers, as far as this service reads them, typed after Twilio's
//! published API definitions (`twilio-oai`): every field is optional (the definitions
//! require none) and unknown fields are ignored.
//!
//! Reading is lenient the way the untyped look-ups it replaced were: a field of another
//! type than defined reads as absent (integers also as numeric strings), list items
//! that are not objects are skipped, and only a page without its list is an error.

use crate::twilio::TwilioError;
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// `Some` when the field has the expected type, else `None` (never an error).
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(T::deserialize(Value::deserialize(d)?).ok())
}

/// A non-empty string; anything else reads as absent.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(lenient::<D, String>(d)?.filter(|s| !s.is_empty()))
}

/// Any value, `null` included (`Some(Value::Null)`); absent only when missing.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// An integer, or a string holding one.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

/// A resource read through [`crate::twilio::TwilioClient::list`]: the key of its array in
/// a list page.
pub trait Listed: DeserializeOwned {
    const KEY: &'static str;
}

/// `meta` of a list page.
#[derive(Debug, Default, Deserialize)]
pub struct Meta {
    #[serde(default, deserialize_with = "text")]
    pub next_page_url: Option<String>,
}

/// One page of a list: its items and the next page announced.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_url: Option<String>,
}

impl<T: Listed> Page<T> {
    /// Reads a page. Guarantees: fails (with [`TwilioError::Decode`] naming `url`) only
    /// when the answer holds no `T::KEY` array; items that do not read as `T` are left
    /// out.
    pub fn decode(url: &str, page: Value) -> Result<Page<T>, TwilioError> {
        let missing = || TwilioError::Decode {
            url: url.to_owned(),
            reason: format!("no `{}` array in the page", T::KEY),
        };
        // The key depends on the resource, so the envelope is taken apart by hand.
        let Value::Object(mut page) = page else {
            return Err(missing());
        };
        let Some(Value::Array(items)) = page.remove(T::KEY) else {
            return Err(missing());
        };
        let meta = page
            .remove("meta")
            .and_then(|m| Meta::deserialize(m).ok())
            .unwrap_or_default();
        Ok(Page {
            items: items
                .into_iter()
                .filter_map(|v| T::deserialize(v).ok())
                .collect(),
            next_page_url: meta.next_page_url,
        })
    }
}

/// A TaskRouter Activity (`taskrouter.v1.workspace.activity`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Activity {
    #[serde(default, deserialize_with = "text")]
    pub sid: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub friendly_name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub available: Option<bool>,
}

impl Listed for Activity {
    const KEY: &'static str = "activities";
}

/// A TaskRouter Worker (`taskrouter.v1.workspace.worker`). `attributes` is defined as a
/// JSON string; an object is taken as it is.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Worker {
    #[serde(default, deserialize_with = "text")]
    pub sid: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub account_sid: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub workspace_sid: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub friendly_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub attributes: Option<Value>,
    #[serde(default, deserialize_with = "text")]
    pub activity_sid: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub activity_name: Option<String>,
    /// When the worker's activity last changed (ISO 8601, whole seconds).
    #[serde(default, deserialize_with = "text")]
    pub date_status_changed: Option<String>,
}

impl Listed for Worker {
    const KEY: &'static str = "workers";
}

/// A Worker's channel (`taskrouter.v1.workspace.worker.worker_channel`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkerChannel {
    #[serde(default, deserialize_with = "text")]
    pub task_channel_sid: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub task_channel_unique_name: Option<String>,
    #[serde(default, deserialize_with = "int")]
    pub configured_capacity: Option<i64>,
    #[serde(default, deserialize_with = "int")]
    pub assigned_tasks: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub available: Option<bool>,
}

impl Listed for WorkerChannel {
    const KEY: &'static str = "channels";
}

/// A TaskRouter Task (`taskrouter.v1.workspace.task`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Task {
    #[serde(default, deserialize_with = "text")]
    pub sid: Option<String>,
    /// `task_enum_status`: pending, reserved, assigned, canceled, completed, wrapping.
    #[serde(default, deserialize_with = "text")]
    pub assignment_status: Option<String>,
    #[serde(default, deserialize_with = "int")]
    pub age: Option<i64>,
}

impl Listed for Task {
    const KEY: &'static str = "tasks";
}

/// A TaskRouter Event (`taskrouter.v1.workspace.event`), kept whole: the event model
/// ([`crate::event::sources::params_from_rest`]) reads it. [`RestEvent::sid`] is what
/// paging needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct RestEvent(pub Value);

impl RestEvent {
    pub fn sid(&self) -> Option<&str> {
        #[derive(Deserialize)]
        struct Sid<'a> {
            #[serde(borrow, default)]
            sid: Option<&'a str>,
        }
        Sid::deserialize(&self.0).ok().and_then(|s| s.sid)
    }
}

impl Listed for RestEvent {
    const KEY: &'static str = "events";
}

/// A Conversations message
/// (`conversations.v1.service.service_conversation.service_conversation_message`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Message {
    #[serde(default, deserialize_with = "lenient")]
    pub sid: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub chat_service_sid: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub index: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub author: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub participant_sid: Option<String>,
    /// RFC 3339.
    #[serde(default, deserialize_with = "lenient")]
    pub date_created: Option<String>,
}

impl Listed for Message {
    const KEY: &'static str = "messages";
}

/// The account's Conversations configuration (`conversations.v1.configuration`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConversationsConfiguration {
    #[serde(default, deserialize_with = "text")]
    pub default_chat_service_sid: Option<String>,
}

/// A Sync list item (`sync.v1.service.sync_list.sync_list_item`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SyncListItem {
    #[serde(default, deserialize_with = "lenient")]
    pub index: Option<i64>,
    #[serde(default)]
    pub data: Value,
}

impl Listed for SyncListItem {
    const KEY: &'static str = "items";
}

/// A Sync map item (`sync.v1.service.sync_map.sync_map_item`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SyncMapItem {
    #[serde(default, deserialize_with = "text")]
    pub key: Option<String>,
    #[serde(default)]
    pub data: Value,
    /// ISO 8601.
    #[serde(default, deserialize_with = "text")]
    pub date_updated: Option<String>,
}

impl Listed for SyncMapItem {
    const KEY: &'static str = "items";
}

/// The body of an error answer: Twilio's code and message.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default, deserialize_with = "lenient")]
    pub code: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<String>,
}

/// Reads `v` as `T`, or `T::default()` when it is not an object of that shape (the
/// fields being lenient, only when it is not an object at all).
pub fn or_default<T: DeserializeOwned + Default>(v: Value) -> T {
    T::deserialize(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_of_another_type_read_as_absent_and_unknown_ones_are_ignored() {
        let c: WorkerChannel = or_default(json!({"configured_capacity": "3",
            "assigned_tasks": 1, "available": "yes", "task_channel_sid": "", "extra": [1]}));
        assert_eq!(c.configured_capacity, Some(3));
        assert_eq!(c.assigned_tasks, Some(1));
        assert_eq!(c.available, None);
        assert_eq!(c.task_channel_sid, None, "empty reads as absent");
        let m: Message = or_default(json!({"sid": 5, "index": 2}));
        assert_eq!((m.sid, m.index), (None, Some(2)));
        let e: ErrorBody = or_default(json!("not an object"));
        assert_eq!((e.code, e.message), (None, None));
    }

    #[test]
    fn a_page_needs_its_array_and_skips_what_is_not_an_item() {
        let p = Page::<Task>::decode(
            "u",
            json!({"tasks": [{"sid": "WT1"}, "junk", 3],
                   "meta": {"next_page_url": "https://x/next"}}),
        )
        .unwrap();
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.next_page_url.as_deref(), Some("https://x/next"));
        let p =
            Page::<Task>::decode("u", json!({"tasks": [], "meta": {"next_page_url": ""}})).unwrap();
        assert_eq!(p.next_page_url, None);
        for bad in [
            json!({"tasks": {}}),
            json!({"workers": []}),
            json!([]),
            Value::Null,
        ] {
            let e = Page::<Task>::decode("http://h/p", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("no `tasks` array in the page") && e.contains("http://h/p"),
                "{e}"
            );
        }
    }

    #[test]
    fn events_stay_whole_and_give_their_sid() {
        let e = RestEvent(json!({"sid": "EV1", "event_type": "task.created"}));
        assert_eq!(e.sid(), Some("EV1"));
        assert_eq!(RestEvent(json!({"sid": 1})).sid(), None);
        assert_eq!(RestEvent(json!("x")).sid(), None);
    }
}
