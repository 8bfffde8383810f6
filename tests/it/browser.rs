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
