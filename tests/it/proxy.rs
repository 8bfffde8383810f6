//! Behind the usual TLS proxy: a real nginx (Debian's package, started here) in front of
//! the service, proxying every path the way a careless install does. Business data,
//! `/metrics` and `/readyz` must never be public; the webhooks must keep working.

use crate::harness::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx in the foreground with a config of its own (in a temp dir); killed on drop.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

/// An nginx `server` block: `listen` on `port`, everything proxied to `upstream`, with
/// the forwarding headers a proxy sets when `forward_headers`.
fn server_block(port: u16, upstream: u16, forward_headers: bool) -> String {
    let headers = if forward_headers {
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         proxy_set_header X-Real-IP $remote_addr;\n\
         proxy_set_header X-Forwarded-Proto $scheme;"
    } else {
        ""
    };
    format!(
        "server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{upstream}; \
         proxy_http_version 1.1; proxy_set_header Host $host; {headers} }} }}\n"
    )
}

impl Nginx {
    fn start(servers: &str, ports: &[u16]) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is needed for the proxy test: apt-get install nginx-light (scripts/test.sh does)");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             {servers} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ports
            .iter()
            .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "nginx did not start: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ADMIN_PATHS: [&str; 8] = [
    "/dashboard",
    "/dashboard/events",
    "/api/summary",
    "/api/wallboard",
    "/api/agents",
    "/api/reports/intervals",
    "/metrics",
    "/readyz",
];

fn task_created(n: u32) -> Params {
    Cb::task("task.created", wt(n))
        .ev(n)
        .status("pending")
        .queue("Support")
        .channel("voice")
        .age(0)
        .at(chrono::Utc::now().timestamp_millis())
        .build()
}

/// Posts a signed callback through `base` (a proxy); returns the status.
async fn post_via(svc: &Service, base: &str, n: u32) -> u16 {
    let params = task_created(n);
    let sig = taskrouter_summarizer::ingest::signature::compute(
        AUTH_TOKEN,
        &format!("{PUBLIC_URL}/ingress"),
        &params,
    );
    svc.http
        .post(format!("{base}/ingress"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(encode(&params))
        .send()
        .await
        .expect("post through the proxy")
        .status()
        .as_u16()
}

async fn status(svc: &Service, url: &str, auth: Auth<'_>) -> u16 {
    let mut r = svc.http.get(url);
    match auth {
        Auth::None => {}
        Auth::Bearer(t) => r = r.bearer_auth(t),
        Auth::Basic(t) => r = r.basic_auth("anyone", Some(t)),
        Auth::Header(k, v) => r = r.header(k, v),
    }
    let resp = r.send().await.expect("request");
    resp.status().as_u16()
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str),
    Header(&'a str, &'a str),
}

/// The default config behind a proxy that forwards every path: nothing but the webhooks
/// and `/healthz` is reachable through it; the admin side answers local clients on its
/// own listener, and refuses anything a proxy forwarded there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_config_behind_a_proxy_exposes_only_the_webhooks() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url)).await;
    let admin_port = svc.admin_port.expect("an admin listener by default");
    let (public, careless, bare) = (free_port(), free_port(), free_port());
    let _nginx = Nginx::start(
        &[
            server_block(public, svc.port, true),
            // An operator who also proxied the admin port, with the usual headers...
            server_block(careless, admin_port, true),
            // ...and one whose proxy sets none (nginx's own default).
            server_block(bare, admin_port, false),
        ]
        .concat(),
        &[public, careless, bare],
    );
    let via = format!("http://127.0.0.1:{public}");
    assert_eq!(post_via(&svc, &via, 1).await, 204, "{}", svc.log());
    assert_eq!(
        status(&svc, &format!("{via}/healthz"), Auth::None).await,
        200
    );
    for path in ADMIN_PATHS {
        for base in [via.clone(), svc.url("")] {
            let got = status(&svc, &format!("{base}{path}"), Auth::None).await;
            assert_eq!(
                got, 404,
                "{base}{path} must not be served on the public listener"
            );
        }
        // Forwarded by a proxy to the admin listener: not local, so refused.
        let got = status(
            &svc,
            &format!("http://127.0.0.1:{careless}{path}"),
            Auth::None,
        )
        .await;
        assert_eq!(got, 403, "{path} through a proxy to the admin listener");
        // Any of the three headers makes a loopback request non-local.
        for (k, v) in [
            ("forwarded", "for=203.0.113.7"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-real-ip", "203.0.113.7"),
        ] {
            let got = status(&svc, &svc.admin_url(path), Auth::Header(k, v)).await;
            assert_eq!(got, 403, "{path} with {k}");
        }
    }
    // Over SSH (a local client, nothing forwarded), the admin side works.
    for path in ["/dashboard", "/api/summary", "/metrics", "/readyz"] {
        assert_eq!(
            status(&svc, &svc.admin_url(path), Auth::None).await,
            200,
            "{path}"
        );
    }
    // A proxy that sets no forwarding header cannot be told from a local client: this is
    // what check-config warns about (below), and why proxying the admin port needs the
    // token.
    let blind = format!("http://127.0.0.1:{bare}/api/summary");
    assert_eq!(status(&svc, &blind, Auth::None).await, 200);
    let out = svc
        .command(&["check-config"])
        .output()
        .expect("check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:") && err.contains("admin_token is not set"),
        "check-config must warn that the admin side answers without a token: {err}"
    );
    svc.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(db.count("SELECT count(*) FROM events").await, 1);
}

/// The admin side served on the public listener behind a token (a deployment that set
/// `admin_listen = ""` and `admin_token`): through the proxy, 401 without the token, 200
/// with it (Bearer, or Basic with the token as the password, as a browser sends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_admin_side_works_through_the_proxy() {
    let db = TestDb::new().await;
    let token = "proxy-admin-token-42";
    let opts = Options::new(&db.url).no_admin_listener().admin_token(token);
    let svc = Service::start(opts).await;
    let public = free_port();
    let _nginx = Nginx::start(&server_block(public, svc.port, true), &[public]);
    let via = format!("http://127.0.0.1:{public}");
    assert_eq!(post_via(&svc, &via, 2).await, 204, "{}", svc.log());
    for path in ["/dashboard", "/api/summary", "/metrics", "/readyz"] {
        let url = format!("{via}{path}");
        assert_eq!(status(&svc, &url, Auth::None).await, 401, "{path}");
        assert_eq!(
            status(&svc, &url, Auth::Bearer("wrong")).await,
            401,
            "{path}"
        );
        assert_eq!(status(&svc, &url, Auth::Bearer(token)).await, 200, "{path}");
        assert_eq!(status(&svc, &url, Auth::Basic(token)).await, 200, "{path}");
    }
    let out = svc
        .command(&["check-config"])
        .output()
        .expect("check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("warning:"), "{err}");
    svc.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(db.count("SELECT count(*) FROM events").await, 1);
}

/// `admin_listen = ""` without a token: the admin side is served nowhere (and
/// check-config says so), rather than to every proxied client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_listener_and_no_token_serves_no_admin_side() {
    let db = TestDb::new().await;
    let svc = Service::start(Options::new(&db.url).no_admin_listener()).await;
    for path in ADMIN_PATHS {
        assert_eq!(
            status(&svc, &svc.url(path), Auth::None).await,
            404,
            "{path}"
        );
    }
    assert_eq!(status(&svc, &svc.url("/healthz"), Auth::None).await, 200);
    let out = svc
        .command(&["check-config"])
        .output()
        .expect("check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("served nowhere"), "{err}");
}
