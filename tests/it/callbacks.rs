//! One builder for the form params the tests post: TaskRouter event callbacks and
//! Conversations `onMessageAdded` webhooks.
//!
//! ```ignore
//! Cb::task("task.created", wt(1)).ev(1).status("pending").queue("Support")
//!     .channel("voice").age(0).at(now_ms).build()
//! Cb::worker("worker.created", "WKalice").ev(100).set("WorkerName", "alice").build()
//! Cb::message_added(CONV).account(AC).message_sid(sid).index(1).author("+1555").build()
//! ```
//!
//! Params keep the order they were set in (the service does not care; a test that
//! tampers with one param names it with [`Cb::set`]). Setting a param again replaces it.

use std::fmt::{Display, LowerHex};

/// A callback's form params, as [`crate::harness::Service::post`] takes them.
pub type Params = Vec<(String, String)>;

/// `WT` and `n` in 32 hex digits: a task sid.
pub fn wt(n: impl LowerHex) -> String {
    format!("WT{n:032x}")
}

/// Form params under construction.
#[derive(Clone, Debug, Default)]
pub struct Cb(Params);

impl Cb {
    /// Any event: `EventType` only.
    pub fn event(kind: &str) -> Cb {
        Cb::default().set("EventType", kind)
    }

    /// A task's event (`task.*`, or `reservation.*` seen from its task): `EventType`,
    /// `TaskSid`.
    pub fn task(kind: &str, task_sid: impl Display) -> Cb {
        Cb::event(kind).set("TaskSid", task_sid)
    }

    /// A worker's event: `EventType`, `WorkerSid`.
    pub fn worker(kind: &str, worker_sid: impl Display) -> Cb {
        Cb::event(kind).set("WorkerSid", worker_sid)
    }

    /// A reservation's event: `EventType`, `TaskSid`, `ReservationSid`, `WorkerSid`.
    pub fn reservation(
        kind: &str,
        task_sid: impl Display,
        reservation_sid: impl Display,
        worker_sid: impl Display,
    ) -> Cb {
        Cb::task(kind, task_sid)
            .reservation_sid(reservation_sid)
            .worker_sid(worker_sid)
    }

    /// A Conversations `onMessageAdded` webhook: `EventType`, `ConversationSid`.
    pub fn message_added(conversation_sid: impl Display) -> Cb {
        Cb::event("onMessageAdded").set("ConversationSid", conversation_sid)
    }

    /// Starts from existing params (to change one of them).
    pub fn from_params(params: &[(String, String)]) -> Cb {
        Cb(params.to_vec())
    }

    /// Sets any param (replacing it if set).
    pub fn set(mut self, key: &str, value: impl Display) -> Cb {
        let value = value.to_string();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
        self
    }

    /// Removes a param.
    pub fn without(mut self, key: &str) -> Cb {
        self.0.retain(|(k, _)| k != key);
        self
    }

    /// `Sid`: the event's sid.
    pub fn sid(self, sid: impl Display) -> Cb {
        self.set("Sid", sid)
    }

    /// `Sid` = `EV` and `n` in 32 hex digits.
    pub fn ev(self, n: impl LowerHex) -> Cb {
        self.sid(format!("EV{n:032x}"))
    }

    /// `AccountSid`.
    pub fn account(self, sid: impl Display) -> Cb {
        self.set("AccountSid", sid)
    }

    /// `WorkspaceSid`.
    pub fn workspace(self, sid: impl Display) -> Cb {
        self.set("WorkspaceSid", sid)
    }

    /// `TimestampMs`: when the event happened (ms since the epoch).
    pub fn at(self, ms: i64) -> Cb {
        self.set("TimestampMs", ms)
    }

    /// `TaskAssignmentStatus`.
    pub fn status(self, status: &str) -> Cb {
        self.set("TaskAssignmentStatus", status)
    }

    /// `TaskQueueName`.
    pub fn queue(self, name: impl Display) -> Cb {
        self.set("TaskQueueName", name)
    }

    /// `TaskQueueSid`.
    pub fn queue_sid(self, sid: impl Display) -> Cb {
        self.set("TaskQueueSid", sid)
    }

    /// `TaskChannelUniqueName`.
    pub fn channel(self, name: impl Display) -> Cb {
        self.set("TaskChannelUniqueName", name)
    }

    /// `TaskAge` in seconds.
    pub fn age(self, secs: i64) -> Cb {
        self.set("TaskAge", secs)
    }

    /// `TaskDateCreated`: `ms` in whole seconds since the epoch, as TaskRouter sends it.
    pub fn created(self, ms: i64) -> Cb {
        self.set("TaskDateCreated", ms / 1000)
    }

    /// `TaskAttributes` (JSON text).
    pub fn attributes(self, json: impl Display) -> Cb {
        self.set("TaskAttributes", json)
    }

    /// `WorkerSid`.
    pub fn worker_sid(self, sid: impl Display) -> Cb {
        self.set("WorkerSid", sid)
    }

    /// `ReservationSid`.
    pub fn reservation_sid(self, sid: impl Display) -> Cb {
        self.set("ReservationSid", sid)
    }

    /// `MessageSid` (Conversations).
    pub fn message_sid(self, sid: impl Display) -> Cb {
        self.set("MessageSid", sid)
    }

    /// `Index`: the message's index in its conversation.
    pub fn index(self, i: impl Display) -> Cb {
        self.set("Index", i)
    }

    /// `Author` of the message.
    pub fn author(self, who: impl Display) -> Cb {
        self.set("Author", who)
    }

    /// `Body` of the message.
    pub fn body(self, text: impl Display) -> Cb {
        self.set("Body", text)
    }

    /// `Source` of the message (`SDK`, `SMS`, ...).
    pub fn source(self, source: impl Display) -> Cb {
        self.set("Source", source)
    }

    /// `ChatServiceSid`: the Conversation Service the conversation lives in.
    pub fn chat_service(self, sid: impl Display) -> Cb {
        self.set("ChatServiceSid", sid)
    }

    /// `DateCreated` (ISO 8601) of the message.
    pub fn date_created(self, iso: impl Display) -> Cb {
        self.set("DateCreated", iso)
    }

    pub fn build(self) -> Params {
        self.0
    }
}

impl From<Cb> for Params {
    fn from(cb: Cb) -> Params {
        cb.0
    }
}
