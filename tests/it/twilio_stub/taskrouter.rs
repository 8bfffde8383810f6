//! TaskRouter: a workspace's Activities, Workers (and their Channels), Tasks and Events,
//! read-only.

use chrono::{DateTime, SecondsFormat, Utc};

use super::*;

const TASK_STATUSES: [&str; 6] = [
    "pending",
    "reserved",
    "assigned",
    "wrapping",
    "completed",
    "canceled",
];

#[derive(Default)]
pub(super) struct Workspace {
    activities: Vec<Value>,
    workers: Vec<Value>,
    channels: HashMap<String, Vec<Value>>,
    tasks: Vec<Value>,
    /// TaskRouter Event resources (`sid`, `event_type`, `event_date_ms`, `event_data`…).
    events: Vec<Value>,
}

impl TwilioStub {
    pub fn set_activities(&self, workspace_sid: &str, activities: Vec<Value>) {
        self.workspace(workspace_sid, |w| w.activities = activities);
    }

    pub fn set_workers(&self, workspace_sid: &str, workers: Vec<Value>) {
        self.workspace(workspace_sid, |w| w.workers = workers);
    }

    pub fn set_worker_channels(&self, workspace_sid: &str, worker_sid: &str, channels: Vec<Value>) {
        self.workspace(workspace_sid, |w| {
            w.channels.insert(worker_sid.to_string(), channels);
        });
    }

    /// Replaces the workspace's Events (the REST Events resource). `event_date` and
    /// `url` are filled in from `event_date_ms` and `sid` where missing.
    pub fn set_events(&self, workspace_sid: &str, events: Vec<Value>) {
        let base = format!("{}/v1/Workspaces/{workspace_sid}/Events", self.base_url());
        let events = events
            .into_iter()
            .map(|mut e| {
                if let Some(o) = e.as_object_mut() {
                    let ms = o.get("event_date_ms").and_then(Value::as_i64).unwrap_or(0);
                    let date = DateTime::<Utc>::from_timestamp_millis(ms)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    o.entry("event_date").or_insert(json!(date));
                    let sid = o.get("sid").and_then(Value::as_str).unwrap_or_default();
                    let url = format!("{base}/{sid}");
                    o.entry("url").or_insert(json!(url));
                }
                e
            })
            .collect();
        self.workspace(workspace_sid, |w| w.events = events);
    }

    /// Replaces the workspace's Tasks. As in TaskRouter, which deletes tasks once they
    /// end, `completed` and `canceled` ones are neither listed nor fetched (404).
    pub fn set_tasks(&self, workspace_sid: &str, tasks: Vec<Value>) {
        self.workspace(workspace_sid, |w| w.tasks = tasks);
    }

    /// While on, the Events list ignores `Page` and `PageToken`: every request gets the
    /// first page, and a next page is still announced (so following it repeats the page).
    pub fn set_events_unpaged(&self, on: bool) {
        self.lock().events_unpaged = on;
    }

    fn workspace(&self, sid: &str, f: impl FnOnce(&mut Workspace)) {
        f(self.lock().workspaces.entry(sid.to_string()).or_default());
    }
}

impl State {
    pub(super) fn taskrouter(&self, c: &Ctx, ws: &str, rest: &[&str]) -> Reply {
        let Some(w) = self.workspaces.get(ws) else {
            return not_found(c);
        };
        if c.method != "GET" {
            return Reply::err(405, 20004, "Method not allowed");
        }
        let (key, items) = match rest {
            ["Activities"] => ("activities", w.activities.clone()),
            ["Workers"] => {
                let f = [
                    ("ActivitySid", "activity_sid"),
                    ("ActivityName", "activity_name"),
                    ("Available", "available"),
                ];
                ("workers", filtered(&w.workers, c, &f))
            }
            ["Workers", wk, "Channels"] => match w.channels.get(*wk) {
                Some(ch) => ("channels", ch.clone()),
                None if find(&w.workers, "sid", wk).is_some() => ("channels", Vec::new()),
                None => return not_found(c),
            },
            ["Tasks"] => {
                // `AssignmentStatus` is an array parameter: one status per (repeated)
                // pair. A comma-joined value is one status that does not exist: 400.
                let mut wanted = Vec::new();
                for v in c.all("AssignmentStatus") {
                    if !TASK_STATUSES.contains(&v) {
                        return Reply::err(400, 20001, &format!("Invalid AssignmentStatus {v:?}"));
                    }
                    wanted.push(v);
                }
                let f = [
                    ("TaskQueueSid", "task_queue_sid"),
                    ("TaskChannel", "task_channel_unique_name"),
                ];
                let mut tasks = filtered(&existing_tasks(&w.tasks), c, &f);
                if !wanted.is_empty() {
                    tasks.retain(|t| wanted.iter().any(|s| field_is(t, "assignment_status", s)));
                }
                ("tasks", tasks)
            }
            ["Events"] => match events_in_window(&w.events, c) {
                Ok(list) if self.events_unpaged => {
                    let first = Ctx {
                        method: c.method.clone(),
                        path: c.path.clone(),
                        query: c
                            .query
                            .iter()
                            .filter(|(k, _)| k != "Page" && k != "PageToken")
                            .cloned()
                            .collect(),
                        form: Vec::new(),
                    };
                    return page(&self.base_url, &self.empty_lists, &first, "events", list);
                }
                Ok(list) => ("events", list),
                Err(r) => return r,
            },
            ["Events", sid] => return fetch(&w.events, "sid", sid, c),
            ["Activities", sid] => return fetch(&w.activities, "sid", sid, c),
            ["Workers", sid] => return fetch(&w.workers, "sid", sid, c),
            ["Tasks", sid] => return fetch(&existing_tasks(&w.tasks), "sid", sid, c),
            ["Workers", wk, "Channels", ch] => {
                let list = w.channels.get(*wk).map(Vec::as_slice).unwrap_or_default();
                return match find(list, "sid", ch) {
                    Some(v) => Reply::json(200, v.clone()),
                    None => fetch(list, "task_channel_unique_name", ch, c),
                };
            }
            _ => return not_found(c),
        };
        page(&self.base_url, &self.empty_lists, c, key, items)
    }
}

/// The tasks TaskRouter still has: it deletes tasks once they are completed or canceled.
fn existing_tasks(tasks: &[Value]) -> Vec<Value> {
    tasks
        .iter()
        .filter(|t| {
            !field_is(t, "assignment_status", "completed")
                && !field_is(t, "assignment_status", "canceled")
        })
        .cloned()
        .collect()
}

/// Keeps the objects matching every (query param → field) filter present in the request.
fn filtered(list: &[Value], c: &Ctx, filters: &[(&str, &str)]) -> Vec<Value> {
    let active: Vec<(&str, &str)> = filters
        .iter()
        .filter_map(|(p, f)| c.param(p).map(|v| (*f, v)))
        .collect();
    list.iter()
        .filter(|v| active.iter().all(|(f, want)| field_is(v, f, want)))
        .cloned()
        .collect()
}

/// The Events list's filters: `StartDate`/`EndDate` (ISO 8601, both inclusive) or else
/// `Minutes` back from now (default 15), `EventType`, `TaskSid`, `WorkerSid`,
/// `ReservationSid`. Newest first (Twilio does not promise an order).
fn events_in_window(events: &[Value], c: &Ctx) -> Result<Vec<Value>, Reply> {
    let date = |name: &str| -> Result<Option<i64>, Reply> {
        match c.param(name) {
            None => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(v.trim())
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|_| Reply::err(400, 20001, &format!("Invalid {name}"))),
        }
    };
    let now = Utc::now().timestamp_millis();
    let (start, end) = match (date("StartDate")?, date("EndDate")?) {
        (None, end) => {
            let minutes = c
                .param("Minutes")
                .map(|m| m.trim().parse::<i64>())
                .transpose()
                .map_err(|_| Reply::err(400, 20001, "Invalid Minutes"))?
                .unwrap_or(15);
            (end.unwrap_or(now) - minutes * 60_000, end.unwrap_or(now))
        }
        (Some(s), e) => (s, e.unwrap_or(now)),
    };
    let data_is =
        |e: &Value, field: &str, want: &str| e["event_data"][field].as_str() == Some(want);
    let mut out: Vec<Value> = events
        .iter()
        .filter(|e| {
            let ms = e["event_date_ms"].as_i64().unwrap_or(0);
            (start..=end).contains(&ms)
        })
        .filter(|e| {
            c.param("EventType")
                .is_none_or(|t| e["event_type"].as_str() == Some(t))
        })
        .filter(|e| c.param("TaskSid").is_none_or(|t| data_is(e, "task_sid", t)))
        .filter(|e| {
            c.param("WorkerSid")
                .is_none_or(|t| data_is(e, "worker_sid", t))
        })
        .filter(|e| {
            c.param("ReservationSid")
                .is_none_or(|t| data_is(e, "reservation_sid", t))
        })
        .cloned()
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e["event_date_ms"].as_i64()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio_stub::tests::*;

    #[tokio::test]
    async fn workers_are_paged_by_following_next_page_url() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let worker = |i: usize| {
            json!({"sid": format!("WK{i:032}"), "friendly_name": format!("w{i}"),
                "activity_sid": "WA1", "activity_name": "Idle", "available": true,
                "attributes": "{}", "date_created": "2024-01-01T00:00:00Z"})
        };
        stub.set_workers(WS, (0..120).map(worker).collect());
        let mut url = Some(format!("{}{WORKERS}?PageSize=50", stub.base_url()));
        let (mut sids, mut sizes) = (std::collections::BTreeSet::new(), Vec::new());
        while let Some(u) = url {
            let g = send("GET", &u, &[], Some((AC, TOKEN))).await;
            assert_eq!(g.status, 200);
            sizes.push(g.sids("workers").len());
            for sid in g.sids("workers") {
                assert!(sids.insert(sid), "duplicate sid");
            }
            assert_eq!(
                (g.str("/meta/key"), &g.body["meta"]["page_size"]),
                ("workers".into(), &json!(50))
            );
            url = g.body["meta"]["next_page_url"].as_str().map(str::to_string);
            if let Some(n) = &url {
                assert!(
                    n.starts_with(&stub.base_url()) && n.contains("PageToken=PT"),
                    "{n}"
                );
            }
        }
        assert_eq!((sizes, sids.len()), (vec![50, 50, 20], 120));
        let idle = stub
            .get(&format!("{WORKERS}?ActivityName=Idle&PageSize=1000"))
            .await;
        assert_eq!(idle.sids("workers").len(), 120);
        let ch = json!({"sid": "WC1", "task_channel_unique_name": "voice"});
        stub.set_worker_channels(WS, "WK1", vec![ch]);
        assert_eq!(
            stub.get(&format!("{WORKERS}/WK1/Channels"))
                .await
                .sids("channels"),
            ["WC1"]
        );
        assert_eq!(
            stub.get(&format!("{WORKERS}/WKx/Channels")).await.err(),
            (404, 20404)
        );
    }

    #[tokio::test]
    async fn tasks_filter_by_assignment_status_and_empty_list_switch() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        stub.set_tasks(
            WS,
            TASK_STATUSES
                .iter()
                .enumerate()
                .map(|(i, s)| task(i, s))
                .collect(),
        );
        // Ended tasks are deleted: neither listed nor fetched.
        assert_eq!(
            stub.get(TASKS).await.sids("tasks"),
            ["WT0", "WT1", "WT2", "WT3"]
        );
        assert_eq!(stub.get(&format!("{TASKS}/WT3")).await.status, 200);
        for ended in ["WT4", "WT5"] {
            let g = stub.get(&format!("{TASKS}/{ended}")).await;
            assert_eq!(g.err(), (404, 20404));
            assert_eq!(
                g.str("/message"),
                format!("The requested resource {TASKS}/{ended} was not found")
            );
        }
        // `AssignmentStatus` is an array: repeated pairs, one status each.
        let g = stub
            .get(&format!(
                "{TASKS}?AssignmentStatus=assigned&AssignmentStatus=wrapping"
            ))
            .await;
        assert_eq!(g.sids("tasks"), ["WT2", "WT3"]);
        let g = stub
            .get(&format!("{TASKS}?AssignmentStatus=completed&PageSize=1"))
            .await;
        assert_eq!(g.sids("tasks"), Vec::<String>::new());
        assert!(g.body["meta"]["next_page_url"].is_null());
        let g = stub
            .get(&format!(
                "{TASKS}?AssignmentStatus=pending&AssignmentStatus=reserved&PageSize=1"
            ))
            .await;
        assert_eq!(g.sids("tasks"), ["WT0"]);
        let next = g.str("/meta/next_page_url");
        assert!(
            next.contains("AssignmentStatus=pending&AssignmentStatus=reserved&PageSize=1&Page=1"),
            "{next}"
        );
        // A comma-joined value is one status that does not exist, not several.
        for bad in ["pending,reserved", "pending%2Creserved", "bogus"] {
            assert_eq!(
                stub.get(&format!("{TASKS}?AssignmentStatus={bad}"))
                    .await
                    .err(),
                (400, 20001),
                "{bad}"
            );
        }

        stub.set_empty_list(TASKS, true);
        let g = stub.get(&format!("{TASKS}?AssignmentStatus=pending")).await;
        assert_eq!((g.status, g.sids("tasks").len()), (200, 0));
        assert!(g.body["meta"]["next_page_url"].is_null());
        assert_eq!(stub.get(&format!("{TASKS}/WT0")).await.status, 200);
        stub.set_empty_list(TASKS, false);
        assert_eq!(stub.get(TASKS).await.sids("tasks").len(), 4);
    }

    fn event(i: usize, ms: i64, ty: &str, task: &str, worker: &str) -> Value {
        json!({"sid": format!("EV{i:032}"), "event_type": ty, "event_date_ms": ms,
               "event_data": {"task_sid": task, "worker_sid": worker}})
    }

    #[tokio::test]
    async fn events_filter_by_window_task_worker_and_type_newest_first() {
        const EVENTS: &str = "/v1/Workspaces/WSstub/Events";
        let stub = TwilioStub::start(AC, TOKEN).await;
        let now = Utc::now().timestamp_millis();
        let min = 60_000;
        stub.set_events(
            WS,
            vec![
                event(1, now - 40 * min, "task.created", "WT1", ""),
                event(2, now - 10 * min, "task.created", "WT2", ""),
                event(3, now - 5 * min, "reservation.created", "WT2", "WK1"),
                event(4, now - 2 * min, "task.canceled", "WT1", ""),
            ],
        );
        let sids = |g: &Got| -> Vec<String> {
            g.sids("events")
                .iter()
                .map(|s| s.trim_start_matches(['E', 'V', '0']).to_string())
                .collect()
        };
        // No dates: the last 15 minutes (`Minutes` changes that), newest first.
        assert_eq!(sids(&stub.get(EVENTS).await), ["4", "3", "2"]);
        assert_eq!(
            sids(&stub.get(&format!("{EVENTS}?Minutes=60")).await),
            ["4", "3", "2", "1"]
        );
        let iso = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        };
        let q = |pairs: &[(&str, String)]| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                ser.append_pair(k, v);
            }
            format!("{EVENTS}?{}", ser.finish())
        };
        let (start, end) = (iso(now - 50 * min), iso(now - 3 * min));
        let g = stub
            .get(&q(&[
                ("StartDate", start.clone()),
                ("EndDate", end.clone()),
            ]))
            .await;
        assert_eq!(sids(&g), ["3", "2", "1"]);
        let g = stub
            .get(&q(&[
                ("StartDate", start.clone()),
                ("TaskSid", "WT1".into()),
            ]))
            .await;
        assert_eq!(sids(&g), ["4", "1"]);
        let g = stub
            .get(&q(&[
                ("StartDate", start.clone()),
                ("WorkerSid", "WK1".into()),
            ]))
            .await;
        assert_eq!(sids(&g), ["3"]);
        let g = stub
            .get(&q(&[
                ("StartDate", start),
                ("EventType", "task.created".into()),
            ]))
            .await;
        assert_eq!(sids(&g), ["2", "1"]);
        assert_eq!(
            stub.get(&format!("{EVENTS}?StartDate=yesterday"))
                .await
                .err(),
            (400, 20001)
        );
        assert_eq!(
            stub.get(&format!("{EVENTS}/EV{:032}", 9)).await.err(),
            (404, 20404)
        );
    }

    #[tokio::test]
    async fn events_pages_hold_at_most_1000_and_unpaged_lists_repeat() {
        const EVENTS: &str = "/v1/Workspaces/WSstub/Events";
        let stub = TwilioStub::start(AC, TOKEN).await;
        let now = Utc::now().timestamp_millis();
        stub.set_events(
            WS,
            (0..1500)
                .map(|i| event(i, now - 1_000 - i as i64, "task.updated", "WT1", ""))
                .collect(),
        );
        let g = stub.get(&format!("{EVENTS}?PageSize=5000")).await;
        assert_eq!(g.sids("events").len(), 1000);
        assert_eq!(g.body["meta"]["page_size"], 1000);
        let next = g.str("/meta/next_page_url");
        let g2 = send("GET", &next, &[], Some((AC, TOKEN))).await;
        assert_eq!(g2.sids("events").len(), 500);
        assert!(g2.body["meta"]["next_page_url"].is_null());

        stub.set_events_unpaged(true);
        let g = stub.get(&format!("{EVENTS}?PageSize=1000")).await;
        let next = g.str("/meta/next_page_url");
        let again = send("GET", &next, &[], Some((AC, TOKEN))).await;
        assert_eq!(again.sids("events"), g.sids("events"));
        assert_eq!(again.str("/meta/next_page_url"), next);
    }
}
