//! The wallboard in a real headless browser (Debian's chromium).

use crate::harness::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use taskrouter_summarizer::publish::report::{align, Step};

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium is needed for the wallboard test: apt-get install chromium (scripts/test.sh does)")
}

/// A page open in headless Chromium, driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands into fd 3, answers out of fd 4, each message
/// ended by a NUL). The test reads the live DOM whenever it wants: `--dump-dom` takes one
/// snapshot at the load event, which comes before the page's first fetches and SSE
/// events, so whether it showed any data was a race.
struct Page {
    child: Child,
    commands: std::fs::File,
    answers: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

/// A pipe's (read, write) ends, closed on exec (the child gets its own copies as fds 3/4).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, owned from here on.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Page {
    /// Opens `url` in a fresh headless Chromium.
    fn open(url: &str) -> Page {
        let profile = tempfile::tempdir().unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (ans_read, ans_write) = pipe();
        let (child_in, child_out) = (cmd_read.as_raw_fd(), ans_write.as_raw_fd());
        let mut command = Command::new(chromium());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec. The ends are first
        // moved above 10 so that placing one on fd 3 cannot close the other.
        unsafe {
            command.pre_exec(move || {
                let a = libc::fcntl(child_in, libc::F_DUPFD, 10);
                let b = libc::fcntl(child_out, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("run chromium");
        // The child holds its copies; ours would keep the pipes open after it exits.
        drop((cmd_read, ans_write));
        let (tx, answers) = mpsc::channel();
        let mut from = std::fs::File::from(ans_read);
        // A reader thread, so that a hung browser is a timeout, not a hung test.
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let n = match from.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut page = Page {
            child,
            commands: std::fs::File::from(cmd_write),
            answers,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = page.call("Target.createTarget", json!({ "url": url }));
        let target = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = page.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        page.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        page
    }

    /// Sends a command (to the page once attached) and waits for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .answers
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{method}: no answer from chromium ({e})"));
            // Events (no id) and other answers are not ours.
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The page's DOM now, without its script.
    fn dom(&mut self) -> String {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": "document.documentElement.outerHTML", "returnByValue": true }),
        );
        let dom = r["result"]["value"].as_str().unwrap_or_default();
        dom.split("<script").next().unwrap_or_default().to_owned()
    }

    /// The DOM once `ready` holds for it, or the last one after `timeout`.
    fn dom_when(&mut self, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let dom = self.dom();
            if ready(&dom) || Instant::now() > deadline {
                return dom;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The page's text once `ready` holds for it (or the last one after `timeout`).
    fn text_when(&mut self, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        text_of(&self.dom_when(timeout, |d| ready(&text_of(d))))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Browser.close lets Chromium end its helper processes; kill it if it does not.
        let msg = json!({ "id": 0, "method": "Browser.close" });
        let mut bytes = serde_json::to_vec(&msg).unwrap_or_default();
        bytes.push(0);
        let _ = self.commands.write_all(&bytes);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of some HTML, cells separated by `|`.
fn text_of(body: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                if !text.ends_with('|') {
                    text.push('|');
                }
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

fn created(n: u32, queue: &str) -> Params {
    Cb::task("task.created", wt(n))
        .ev(n)
        .status("pending")
        .channel("chat")
        .queue(queue)
        .queue_sid(format!("WQ{queue}"))
        .age(0)
        .at(chrono::Utc::now().timestamp_millis())
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboard_shows_the_summary_and_updates_live() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let mut cbs: Vec<_> = (0..9).map(|n| created(n, "Support")).collect();
    cbs.extend((9..13).map(|n| created(n, "Sales")));
    assert!(post_all(&svc, &cbs, 4).await.iter().all(|s| *s == 204));
    // Wait until the summary shows all 13 tasks.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let api: serde_json::Value = svc.summary().await;
        if api["workspace"]["today"]["tasks_created"] == 13 {
            break;
        }
        assert!(Instant::now() < deadline, "{api}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = svc.admin_url("/dashboard");
    let wanted = ["|Support|", "|Sales|", "|9|", "|4|", "|13|", "|chat|"];
    let mut page = Page::open(&url);
    let text = tokio::task::block_in_place(|| {
        page.text_when(Duration::from_secs(30), |t| {
            wanted.iter().all(|w| t.contains(w))
        })
    });
    for want in wanted {
        assert!(text.contains(want), "{want} missing from the page:\n{text}");
    }
    assert!(!text.contains("|Billing|"));

    // New callbacks show up within seconds, on the open page.
    assert_eq!(svc.post(&created(20, "Billing")).await.unwrap(), 204);
    let text = tokio::task::block_in_place(|| {
        page.text_when(Duration::from_secs(20), |t| {
            t.contains("|Billing|") && t.contains("|14|")
        })
    });
    assert!(
        text.contains("|Billing|") && text.contains("|14|"),
        "the page never showed the new task:\n{text}"
    );
}

/// The part of `dom` from the element with `id` to the next element with `until`.
fn section<'a>(dom: &'a str, id: &str, until: &str) -> &'a str {
    let from = dom.find(&format!("id=\"{id}\"")).unwrap_or(dom.len());
    let rest = &dom[from..];
    &rest[..rest.find(until).unwrap_or(rest.len())]
}

/// The agents panel's row (`<tr ...>...`) whose first cell is `name`.
fn agent_row<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    section(dom, "ag-body", "id=\"iv\"")
        .split("<tr")
        .find(|r| r.contains(&format!("title=\"{name}\">{name}</td>")))
}

/// The classes of a row's `<tr>` tag.
fn row_classes(row: &str) -> String {
    let tag = &row[..row.find('>').unwrap_or(row.len())];
    tag.split("class=\"")
        .nth(1)
        .and_then(|c| c.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

/// The today-by-interval block of `queue`.
fn queue_block<'a>(dom: &'a str, queue: &str) -> Option<&'a str> {
    section(dom, "iv-body", "</main>")
        .split("class=\"ivq\"")
        .find(|b| b.contains(&format!(">{queue}</span>")))
}

/// A worker that went into `activity` at `since_ms`.
fn worker_in(n: u32, sid: &str, name: &str, activity: &str, since_ms: i64) -> Params {
    Cb::worker("worker.activity.update", sid)
        .ev(n)
        .set("WorkerName", name)
        .set("WorkerActivitySid", format!("WA{activity}"))
        .set("WorkerActivityName", activity)
        .at(since_ms)
        .build()
}

/// A task's event in `queue` (a reservation's goes to Bob).
fn task_event(n: u32, kind: &str, task: u32, queue: &str, created_ms: i64, at_ms: i64) -> Params {
    let cb = if kind.starts_with("reservation.") {
        Cb::reservation(kind, wt(task), format!("WR{task:032x}"), "WKbob")
            .set("WorkerName", "Bob")
            .status(if kind == "reservation.accepted" {
                "assigned"
            } else {
                "reserved"
            })
    } else {
        Cb::task(kind, wt(task)).status("pending")
    };
    cb.ev(n)
        .queue(queue)
        .queue_sid(format!("WQ{queue}"))
        .channel("voice")
        .age((at_ms - created_ms) / 1000)
        .created(created_ms)
        .at(at_ms)
        .build()
}

/// Asks the admin API until `ok` holds for its answer.
async fn api_until(svc: &Service, path: &str, query: &[(&str, &str)], ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = match svc.admin_get(path).query(query).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        if ok(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {v}\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboard_shows_agents_with_alerts_and_today_by_interval() {
    // A zone in which it is afternoon: everything below happened "today".
    let zone = taskrouter_summarizer::sim::demo::zone_where_today_is_long();
    let db = TestDb::new().await;
    let svc = Service::start(
        Options::new(&db.url)
            // With a token, opened as `?token=`: every request of the page must pass it.
            .admin_token("wall-token")
            .timezone(&zone)
            .available_activities(&["Available"])
            .wallboard_alerts(1, 2),
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let min = 60_000;
    let mut cbs = vec![
        // Alice: on a break for 5 minutes (over the 1-minute threshold).
        worker_in(1, "WKalice", "Alice", "Break", now - 5 * min),
        // Carol: on a break for 20 seconds (under it).
        worker_in(2, "WKcarol", "Carol", "Break", now - 20_000),
        // Dave: logged out for hours (not a break).
        worker_in(3, "WKdave", "Dave", "Offline", now - 120 * min),
        // Bob: available, holding a task created 3 minutes ago (over the 2-minute one).
        worker_in(4, "WKbob", "Bob", "Available", now - 10 * min),
    ];
    // Support: one task created 3 minutes ago and answered by Bob in 5 s (within the
    // 15-second SLA), two waiting; Sales: one waiting.
    let t1 = now - 3 * min;
    let tasks = [
        (1, "Support", t1),
        (2, "Support", now - min),
        (3, "Support", now - 30_000),
        (4, "Sales", now - 40_000),
    ];
    for (n, (task, queue, created)) in (10..).zip(tasks) {
        cbs.push(task_event(n, "task.created", task, queue, created, created));
    }
    cbs.push(task_event(
        20,
        "reservation.created",
        1,
        "Support",
        t1,
        t1 + 2_000,
    ));
    cbs.push(task_event(
        21,
        "reservation.accepted",
        1,
        "Support",
        t1,
        t1 + 5_000,
    ));
    // In order: the reservation follows its task.
    for cb in &cbs {
        assert_eq!(svc.post(cb).await.unwrap(), 204);
    }
    svc.wait_drained(Duration::from_secs(30)).await;
    api_until(&svc, "/api/agents", &[], |v| {
        let a = v.as_array().cloned().unwrap_or_default();
        a.len() == 4
            && a.iter()
                .any(|w| w["name"] == "Bob" && w["tasks"].as_array().is_some_and(|t| t.len() == 1))
            && a.iter()
                .any(|w| w["name"] == "Alice" && w["available"] == false)
    })
    .await;
    let settings: serde_json::Value = svc
        .admin_get("/api/wallboard")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (from, to) = (
        settings["today_start"].as_str().unwrap().to_owned(),
        settings["today_end"].as_str().unwrap().to_owned(),
    );
    let q = [
        ("from", from.as_str()),
        ("to", to.as_str()),
        ("by", "queue"),
    ];
    // The rollups are refreshed in the background: wait until they hold every task.
    api_until(&svc, "/api/reports/intervals", &q, |v| {
        let rows = v.as_array().cloned().unwrap_or_default();
        let sum = |q: &str, k: &str| -> i64 {
            rows.iter()
                .filter(|r| r["queue"] == q)
                .map(|r| r[k].as_i64().unwrap_or(0))
                .sum()
        };
        sum("Support", "tasks_created") == 3
            && sum("Support", "tasks_accepted") == 1
            && sum("Sales", "tasks_created") == 1
    })
    .await;

    let url = svc.admin_url("/dashboard?token=wall-token");
    let mut page = Page::open(&url);
    let dom = tokio::task::block_in_place(|| {
        page.dom_when(Duration::from_secs(30), |dom| {
            agent_row(dom, "Bob").is_some_and(|r| r.contains("class=\"chip"))
                && agent_row(dom, "Alice").is_some_and(|r| row_classes(r).contains("long-break"))
                && queue_block(dom, "Support").is_some()
                && text_of(dom).contains("|Waiting|")
        })
    });
    let text = text_of(&dom);
    // The summary over SSE still works with the token.
    let queues = text_of(section(&dom, "q-body", "id=\"wk\""));
    assert!(
        queues.contains("|Support|") && queues.contains("|Sales|"),
        "{queues}"
    );

    // Agents: names, activities, the time in them, tasks, alerts.
    let row = |name: &str| {
        agent_row(&dom, name).unwrap_or_else(|| panic!("no row for {name} in:\n{text}"))
    };
    let alice = row("Alice");
    let t = text_of(alice);
    assert!(t.contains("|Break|"), "{t}");
    // 5 minutes and a few seconds: the timer runs from the server's count.
    assert!(t.contains("|05:") || t.contains("|06:"), "{t}");
    assert!(row_classes(alice).contains("long-break"), "{alice}");
    assert!(!row_classes(alice).contains("long-task"), "{alice}");

    let carol = row("Carol");
    assert!(text_of(carol).contains("|Break|"));
    assert!(
        !row_classes(carol).contains("long-break"),
        "under the threshold: {carol}"
    );

    let dave = row("Dave");
    assert!(text_of(dave).contains("|Offline|"));
    assert!(row_classes(dave).contains("offline"), "{dave}");
    assert!(
        !row_classes(dave).contains("long-break"),
        "logged out is no break: {dave}"
    );

    let bob = row("Bob");
    let t = text_of(bob);
    assert!(t.contains("|Available|"), "{t}");
    // The task: its queue and its age (3 minutes and some).
    assert!(
        t.contains("|Support |03:") || t.contains("|Support |04:"),
        "{t}"
    );
    assert!(bob.contains("class=\"chip late\""), "{bob}");
    assert!(row_classes(bob).contains("long-task"), "{bob}");
    assert!(!row_classes(bob).contains("long-break"), "{bob}");

    // Today by interval: per queue, today's created / answered / abandoned / SL; the task
    // answered in 5 s is within the 15-second SLA.
    let support =
        queue_block(&dom, "Support").unwrap_or_else(|| panic!("no Support block:\n{text}"));
    let t = text_of(support);
    assert!(t.contains("|Interval|Created|Answered|"), "{t}");
    assert!(t.contains("|Today|3|1|0|100%|"), "{t}");
    // Each task in the half hour of its creation, in the configured zone (the three may
    // straddle a boundary).
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let label = |ms: i64| {
        let at = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        align(at, Step::Minutes(30), &tz)
            .with_timezone(&tz)
            .format("%H:%M")
            .to_string()
    };
    let mut want: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for (task, _, created) in tasks.iter().filter(|t| t.1 == "Support") {
        let e = want.entry(label(*created)).or_default();
        e.0 += 1;
        e.1 += i64::from(*task == 1);
    }
    for (at, (created, answered)) in want {
        let sl = if answered > 0 { "100%" } else { "—" };
        let row = format!("|{at}|{created}|{answered}|0|{sl}|");
        assert!(t.contains(&row), "{row} missing from:\n{t}");
    }
    let sales = queue_block(&dom, "Sales").unwrap_or_else(|| panic!("no Sales block:\n{text}"));
    let t = text_of(sales);
    assert!(t.contains("|Today|1|0|0|—|"), "{t}");
    let row = format!("|{}|1|0|0|—|", label(now - 40_000));
    assert!(t.contains(&row), "{row} missing from:\n{t}");
    // Neither panel says it failed to update.
    assert!(!text.contains("not updated"), "{text}");
}
