//! Conversations: a conversation's messages (read-only), in the default Conversation
//! Service or in another one.

use super::*;

const MAX_CONVERSATIONS_PAGE_SIZE: usize = 100;

impl TwilioStub {
    /// The account's default Conversation Service (`GET /v1/Configuration` names it).
    pub fn default_chat_service(&self) -> String {
        self.lock().default_chat_service.clone()
    }

    /// [`TwilioStub::set_service_conversation_messages`] in the default service.
    pub fn set_conversation_messages(&self, conversation_sid: &str, messages: Vec<Value>) {
        let service = self.default_chat_service();
        self.set_service_conversation_messages(&service, conversation_sid, messages);
    }

    /// Makes the conversation known in Conversation Service `service_sid` (an empty
    /// `messages` gives an empty list, not a 404) and replaces all its messages. It is
    /// reachable at `/v1/Services/{service_sid}/Conversations/{sid}/…`, and at the
    /// unscoped `/v1/Conversations/{sid}/…` only when the service is the default one,
    /// as in Twilio. Each message is a Conversations Message object (`sid` "IM…",
    /// `index`, `author`, `body`, `participant_sid`, `date_created`, …); `account_sid`,
    /// `chat_service_sid`, `conversation_sid` and `url` are filled in where missing or
    /// null. Lists serve them in ascending `index` order whatever the order given here.
    pub fn set_service_conversation_messages(
        &self,
        service_sid: &str,
        conversation_sid: &str,
        messages: Vec<Value>,
    ) {
        let mut st = self.lock();
        // Messages of the default service carry the unscoped URL, as Twilio shows them.
        let url = if service_sid == st.default_chat_service {
            format!(
                "{}/v1/Conversations/{conversation_sid}/Messages",
                st.base_url
            )
        } else {
            format!(
                "{}/v1/Services/{service_sid}/Conversations/{conversation_sid}/Messages",
                st.base_url
            )
        };
        let mut messages: Vec<Value> = messages
            .into_iter()
            .map(|mut m| {
                if let Some(o) = m.as_object_mut() {
                    let sid = o.get("sid").and_then(Value::as_str).unwrap_or_default();
                    let url = format!("{url}/{sid}");
                    for (k, v) in [
                        ("account_sid", st.account_sid.clone()),
                        ("chat_service_sid", service_sid.to_string()),
                        ("conversation_sid", conversation_sid.to_string()),
                        ("url", url),
                    ] {
                        if o.get(k).is_none_or(Value::is_null) {
                            o.insert(k.to_string(), Value::String(v));
                        }
                    }
                }
                m
            })
            .collect();
        messages.sort_by_key(|m| m["index"].as_i64());
        st.conversations.insert(
            conversation_sid.to_string(),
            (service_sid.to_string(), messages),
        );
    }
}

impl State {
    /// Read-only Conversations messages, in Conversation Service `service` (`None`: the
    /// unscoped path, which reaches only the default service). Errors name the resource
    /// without `/v1`, as Twilio's Conversations API does.
    pub(super) fn conversations(
        &self,
        c: &Ctx,
        service: Option<&str>,
        ch: &str,
        rest: &[&str],
    ) -> Reply {
        let missing = || {
            let resource = c.path.strip_prefix("/v1").unwrap_or(&c.path);
            let msg = format!("The requested resource {resource} was not found");
            Reply::err(404, 20404, &msg)
        };
        let service = service.unwrap_or(&self.default_chat_service);
        let Some(messages) = self
            .conversations
            .get(ch)
            .filter(|(is, _)| is == service)
            .map(|(_, m)| m)
        else {
            return missing();
        };
        if c.method != "GET" {
            return Reply::err(405, 20004, "Method not allowed");
        }
        match rest {
            ["Messages"] => {
                let mut items = messages.clone();
                if c.param("Order") == Some("desc") {
                    items.reverse();
                }
                let (base, empty) = (&self.base_url, &self.empty_lists);
                paged(
                    base,
                    empty,
                    c,
                    "messages",
                    items,
                    MAX_CONVERSATIONS_PAGE_SIZE,
                )
            }
            ["Messages", id] => {
                let by_index = |m: &&Value| {
                    let n = id.trim().parse::<i64>().ok();
                    n.is_some() && m["index"].as_i64() == n
                };
                match find(messages, "sid", id).or_else(|| messages.iter().find(by_index)) {
                    Some(m) => Reply::json(200, m.clone()),
                    None => missing(),
                }
            }
            _ => missing(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio_stub::tests::*;

    const CH: &str = "CH00000000000000000000000000000001";
    const MESSAGES: &str = "/v1/Conversations/CH00000000000000000000000000000001/Messages";

    fn message(i: i64) -> Value {
        json!({"sid": format!("IM{i:032}"), "index": i, "author": format!("user{}", i % 3),
            "body": format!("message {i}"), "participant_sid": "MB00000000000000000000000000000001",
            "attributes": "{}", "media": null, "delivery": null,
            "date_created": format!("2024-05-01T10:{:02}:{:02}Z", i / 60, i % 60),
            "date_updated": "2024-05-01T12:00:00Z"})
    }

    fn message_indexes(g: &Got) -> Vec<i64> {
        let list = g.body["messages"].as_array().unwrap();
        list.iter().map(|m| m["index"].as_i64().unwrap()).collect()
    }

    /// Follows next_page_url from `first` (a path under the stub) to the last page,
    /// returning every page.
    async fn all_pages(stub: &TwilioStub, first: &str) -> Vec<Got> {
        let mut pages = Vec::new();
        let mut url = Some(format!("{}{first}", stub.base_url()));
        while let Some(u) = url {
            let g = send("GET", &u, &[], Some((AC, TOKEN))).await;
            assert_eq!(g.status, 200, "{u}: {}", g.body);
            assert_eq!(g.str("/meta/key"), "messages");
            url = g.body["meta"]["next_page_url"].as_str().map(str::to_string);
            pages.push(g);
            assert!(pages.len() <= 10, "paging does not end");
        }
        pages
    }

    #[tokio::test]
    async fn conversation_messages_are_paged_in_ascending_index_order() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // Given out of order: odd indexes descending, then even ones ascending.
        let order = (0..130)
            .rev()
            .filter(|i| i % 2 == 1)
            .chain((0..130).step_by(2));
        stub.set_conversation_messages(CH, order.map(message).collect());

        let pages = all_pages(&stub, &format!("{MESSAGES}?PageSize=50")).await;
        let sizes: Vec<usize> = pages.iter().map(|g| g.sids("messages").len()).collect();
        assert_eq!(sizes, [50, 50, 30]);
        let mut seen = std::collections::BTreeSet::new();
        let mut all = Vec::new();
        for (n, g) in pages.iter().enumerate() {
            assert_eq!(
                (&g.body["meta"]["page"], &g.body["meta"]["page_size"]),
                (&json!(n), &json!(50))
            );
            assert_eq!(g.body["meta"]["previous_page_url"].is_null(), n == 0);
            for sid in g.sids("messages") {
                assert!(seen.insert(sid.clone()), "duplicate {sid}");
            }
            all.extend(message_indexes(g));
        }
        assert!(pages[..2].iter().all(|g| {
            let next = g.str("/meta/next_page_url");
            next.starts_with(&format!("{}{MESSAGES}?", stub.base_url()))
                && next.contains("PageSize=50&Page=")
                && next.contains("PageToken=PT")
        }));
        assert!(pages[2].body["meta"]["next_page_url"].is_null());
        assert_eq!(all, (0..130).collect::<Vec<_>>());
        assert_eq!(seen.len(), 130);

        // Filled-in fields; given ones kept as they were.
        let m = &pages[0].body["messages"][7];
        let url = format!("{}{MESSAGES}/IM{:032}", stub.base_url(), 7);
        assert_eq!(
            (&m["account_sid"], &m["conversation_sid"], &m["url"]),
            (&json!(AC), &json!(CH), &json!(url))
        );
        assert_eq!(
            (&m["body"], &m["author"], &m["date_created"]),
            (
                &json!("message 7"),
                &json!("user1"),
                &json!("2024-05-01T10:00:07Z")
            )
        );

        // Default page size 50, at most 100.
        let g = stub.get(MESSAGES).await;
        assert_eq!(
            (g.sids("messages").len(), &g.body["meta"]["page_size"]),
            (50, &json!(50))
        );
        let g = stub.get(&format!("{MESSAGES}?PageSize=1000")).await;
        assert_eq!(
            (g.sids("messages").len(), &g.body["meta"]["page_size"]),
            (100, &json!(100))
        );
        assert!(g.str("/meta/next_page_url").contains("PageSize=100&Page=1"));

        // Fetch one message by sid or by index.
        let sid = format!("IM{:032}", 42);
        let g = stub.get(&format!("{MESSAGES}/{sid}")).await;
        assert_eq!((g.status, g.str("/body")), (200, "message 42".into()));
        let g = stub.get(&format!("{MESSAGES}/42")).await;
        assert_eq!((g.status, g.str("/sid")), (200, sid));
        for id in ["130", "-1", "IMnope", "x"] {
            let g = stub.get(&format!("{MESSAGES}/{id}")).await;
            assert_eq!(g.err(), (404, 20404), "{id}");
            let want =
                format!("The requested resource /Conversations/{CH}/Messages/{id} was not found");
            assert_eq!(g.str("/message"), want);
        }

        // Setting again replaces the conversation's messages, explicit fields kept.
        let own = json!({"sid": "IMown", "index": 5, "account_sid": "ACother",
            "conversation_sid": CH, "url": "https://example.invalid/m", "body": "hi"});
        stub.set_conversation_messages(CH, vec![message(9), own]);
        let g = stub.get(MESSAGES).await;
        assert_eq!(g.sids("messages"), ["IMown", &format!("IM{:032}", 9)]);
        assert_eq!(g.str("/messages/0/account_sid"), "ACother");
        assert_eq!(g.str("/messages/0/url"), "https://example.invalid/m");
        assert!(g.body["meta"]["next_page_url"].is_null());
        assert_eq!(stub.get(&format!("{MESSAGES}/0")).await.err(), (404, 20404));
        stub.set_conversation_messages(CH, Vec::new());
        let g = stub.get(MESSAGES).await;
        assert_eq!((g.status, g.sids("messages").len()), (200, 0));

        // Read-only.
        let g = stub.post(MESSAGES, &[("Body", "hello")]).await;
        assert_eq!(g.err(), (405, 20004));
    }

    #[tokio::test]
    async fn conversation_messages_order_desc_reverses() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.set_conversation_messages(CH, (0..130).map(message).collect());
        let pages = all_pages(&stub, &format!("{MESSAGES}?Order=desc&PageSize=50")).await;
        let all: Vec<i64> = pages.iter().flat_map(message_indexes).collect();
        assert_eq!(all, (0..130).rev().collect::<Vec<_>>());
        let next = pages[0].str("/meta/next_page_url");
        assert!(next.contains("Order=desc&PageSize=50&Page=1"), "{next}");
        let g = stub.get(&format!("{MESSAGES}?Order=asc&PageSize=3")).await;
        assert_eq!(message_indexes(&g), [0, 1, 2]);
    }

    #[tokio::test]
    async fn unknown_conversation_is_404() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        stub.set_conversation_messages(CH, vec![message(0)]);
        let other = "CH000000000000000000000000000000ff";
        let g = stub
            .get(&format!("/v1/Conversations/{other}/Messages"))
            .await;
        let msg = format!("The requested resource /Conversations/{other}/Messages was not found");
        let want = json!({"code": 20404, "message": msg,
            "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404});
        assert_eq!((g.status, g.body), (404, want));
        let g = stub
            .get(&format!("/v1/Conversations/{other}/Messages/0?PageSize=5"))
            .await;
        assert_eq!(g.err(), (404, 20404));
        let want =
            format!("The requested resource /Conversations/{other}/Messages/0 was not found");
        assert_eq!(g.str("/message"), want);
        let g = stub
            .get(&format!("/v1/Conversations/{CH}/Participants"))
            .await;
        assert_eq!(g.err(), (404, 20404));
        assert_eq!(stub.get("/v1/Conversations").await.err(), (404, 20404));
        assert_eq!(stub.get(MESSAGES).await.status, 200);
    }

    /// A conversation in another Conversation Service is reachable only through its
    /// service's path; the unscoped path reaches the default service alone.
    #[tokio::test]
    async fn conversations_live_in_their_service() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let other_is = "IS000000000000000000000000000000aa";
        stub.set_service_conversation_messages(other_is, CH, vec![message(0), message(1)]);
        let scoped = format!("/v1/Services/{other_is}/Conversations/{CH}/Messages");
        let g = stub.get(&scoped).await;
        assert_eq!(g.status, 200);
        assert_eq!(message_indexes(&g), vec![0, 1]);
        assert_eq!(g.str("/messages/0/chat_service_sid"), other_is);
        assert_eq!(stub.get(MESSAGES).await.err(), (404, 20404));
        let default_is = stub.default_chat_service();
        let g = stub
            .get(&format!(
                "/v1/Services/{default_is}/Conversations/{CH}/Messages"
            ))
            .await;
        assert_eq!(g.err(), (404, 20404));
        let g = stub.get("/v1/Configuration").await;
        assert_eq!(g.str("/default_chat_service_sid"), default_is);
        // In the default service, both paths reach it.
        stub.set_conversation_messages(CH, vec![message(3)]);
        assert_eq!(message_indexes(&stub.get(MESSAGES).await), vec![3]);
        let g = stub
            .get(&format!(
                "/v1/Services/{default_is}/Conversations/{CH}/Messages"
            ))
            .await;
        assert_eq!(message_indexes(&g), vec![3]);
    }

    #[tokio::test]
    async fn conversation_messages_require_auth_and_are_recorded() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.set_conversation_messages(CH, vec![message(0)]);
        let url = format!("{}{MESSAGES}?PageSize=5", stub.base_url());
        let g = send("GET", &url, &[], None).await;
        assert_eq!(
            (g.err(), g.body["message"].as_str()),
            ((401, 20003), Some("Authenticate"))
        );
        let g = send("GET", &url, &[], Some((AC, "wrong"))).await;
        assert_eq!(g.err(), (401, 20003));
        let one = format!("{}{MESSAGES}/0", stub.base_url());
        assert_eq!(send("GET", &one, &[], None).await.err(), (401, 20003));
        assert_eq!(send("GET", &url, &[], Some((AC, TOKEN))).await.status, 200);
        stub.add_api_key("SKkey1", "secret1");
        let g = send("GET", &one, &[], Some(("SKkey1", "secret1"))).await;
        assert_eq!((g.status, g.str("/sid")), (200, format!("IM{:032}", 0)));
        let recs: Vec<(String, String, String, u16)> = stub
            .requests()
            .into_iter()
            .map(|r| (r.method, r.path, r.query, r.status))
            .collect();
        let (get, q) = ("GET".to_string(), "PageSize=5".to_string());
        let m0 = format!("{MESSAGES}/0");
        assert_eq!(
            recs,
            [
                (get.clone(), MESSAGES.into(), q.clone(), 401),
                (get.clone(), MESSAGES.into(), q.clone(), 401),
                (get.clone(), m0.clone(), String::new(), 401),
                (get.clone(), MESSAGES.into(), q, 200),
                (get, m0, String::new(), 200),
            ]
        );
    }

    #[tokio::test]
    async fn fail_next_applies_to_conversation_messages() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.set_conversation_messages(CH, (0..3).map(message).collect());
        stub.fail_next(MESSAGES, 500, 2);
        // Unauthenticated requests do not use up the budget.
        let url = format!("{}{MESSAGES}", stub.base_url());
        assert_eq!(send("GET", &url, &[], None).await.status, 401);
        assert_eq!(stub.get(MESSAGES).await.err(), (500, 20500));
        assert_eq!(stub.get(&format!("{MESSAGES}/1")).await.err(), (500, 20500));
        assert_eq!(stub.get(MESSAGES).await.sids("messages").len(), 3);
        stub.fail_next("/v1/Conversations", 429, 1);
        let g = stub.get(&format!("{MESSAGES}?PageSize=1")).await;
        assert_eq!(
            (g.err(), g.retry_after.as_deref()),
            ((429, 20429), Some("1"))
        );
        let g = stub.get(&format!("{MESSAGES}?PageSize=1")).await;
        assert_eq!(message_indexes(&g), [0]);
        // Failures meant for other paths leave messages alone.
        stub.fail_next(TASKS, 503, 1);
        assert_eq!(stub.get(MESSAGES).await.status, 200);
        let statuses: Vec<u16> = stub.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401, 500, 500, 200, 429, 200, 200]);
    }
}
