//! Webhooks (#22) from the outside: a real HTTP endpoint receives signed events of a real
//! pipeline; failures are retried, a kill -9 loses no delivery, a dead endpoint does not hold the
//! pipeline, and private addresses are refused unless allowed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(300);
const ALLOW: (&str, &str) = ("CASCADE_WEBHOOK_ALLOW_PRIVATE", "true");

/// One request the endpoint received: its headers (lower-case names) and body.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// How the endpoint answers.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

/// A minimal HTTP/1.1 endpoint on a port of its own.
struct Endpoint {
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start(listener: tokio::net::TcpListener, answer: Answer) -> Endpoint {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let g = g.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (head_end, len) = loop {
                        let Ok(n) = s.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_string();
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            break (i + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        let Ok(n) = s.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                    g.lock().unwrap().push(Received { headers, body });
                    match answer {
                        Answer::Status(code) => {
                            let r = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            let _ = s.write_all(r.as_bytes()).await;
                        }
                        Answer::Hang => std::future::pending::<()>().await,
                    }
                });
            }
        });
        Endpoint { got, task }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        assert!(wait_until(timeout, async || self.got().len() >= n).await, "the endpoint got {:?}", self.got());
        self.got()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/hooks/cascade", l.local_addr().unwrap().port());
    (l, url)
}

async fn register(server: &Server, url: &str, events: &[&str]) -> Value {
    let r = server.client.post(server.url("/api/webhooks")).json(&json!({ "url": url, "events": events })).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn deliveries(server: &Server, hook: &str) -> Vec<Value> {
    let r = server.client.get(server.url(&format!("/api/webhooks/{hook}/deliveries"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap().as_array().unwrap().clone()
}

/// Checks a request's signature as a receiver would (the README's recipe).
fn verify(secret: &str, r: &Received) {
    let sig = r.header("cascade-signature");
    let (t, v1) = sig.split_once(",v1=").expect(sig);
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap()).expect("the signature does not match");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "signed {age} s ago");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_endpoint_signed_and_logged() {
    let server = Server::start(&[ALLOW]).await;
    let (l, url) = listener().await;
    let endpoint = Endpoint::start(l, Answer::Status(204)).await;
    let hook = register(&server, &url, &["video.created", "video.playable", "video.ready", "video.deleted"]).await;
    let (hook_id, secret) = (hook["id"].as_str().unwrap().to_string(), hook["secret"].as_str().unwrap().to_string());
    assert!(secret.starts_with("whsec_") && secret.len() > 30, "{hook}");
    // The secret is shown once.
    let list: Value = server.client.get(server.url("/api/webhooks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("secret").is_none() && list[0]["url"] == url.as_str(), "{list}");

    let src = clip("hook360.mp4", "testsrc2=size=640x360:rate=30", Some("sine=frequency=440:sample_rate=48000"), 4.0, &[]).await;
    let id = server.upload_ok(&src, "hooked").await;
    assert_eq!(server.wait_final(&id, T).await["status"], "ready");
    let got = endpoint.wait_for(3, Duration::from_secs(60)).await;
    let types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["video.created", "video.playable", "video.ready"]);
    for r in &got {
        verify(&secret, r);
        let body = r.json();
        assert_eq!(r.header("cascade-event"), body["type"].as_str().unwrap());
        assert_eq!(r.header("content-type"), "application/json");
        assert!(r.header("cascade-delivery").starts_with(&format!("{hook_id}/")));
        assert_eq!(body["video"]["id"], id.as_str());
        assert!(chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).is_ok(), "{body}");
    }
    assert_eq!(got[2].json()["video"]["status"], "ready");
    // A tampered body fails the check.
    let mut forged = got[0].clone();
    forged.body = forged.body.replace("video.created", "video.deleted");
    assert!(std::panic::catch_unwind(|| verify(&secret, &forged)).is_err());

    assert_eq!(server.client.delete(server.url(&format!("/api/videos/{id}"))).send().await.unwrap().status(), 204);
    let got = endpoint.wait_for(4, Duration::from_secs(60)).await;
    assert_eq!(got[3].json()["type"], "video.deleted");
    verify(&secret, &got[3]);

    // The delivery log, newest first. The endpoint has its request before the sender records
    // the answer: wait for the record.
    let recorded =
        wait_until(Duration::from_secs(30), async || deliveries(&server, &hook_id).await.iter().all(|d| d["state"] != "pending")).await;
    assert!(recorded, "{:?}", deliveries(&server, &hook_id).await);
    let log = deliveries(&server, &hook_id).await;
    let events: Vec<&str> = log.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["video.deleted", "video.ready", "video.playable", "video.created"]);
    for d in &log {
        assert_eq!(
            (d["state"].as_str(), d["attempts"].as_u64(), d["last_status"].as_u64()),
            (Some("delivered"), Some(1), Some(204)),
            "{d}"
        );
    }

    // Nobody else sees or removes it.
    let other = client_with_token(&user_with_token(&server.data_dir, "other", "other password 1", false, "upload,manage"));
    assert_eq!(other.get(server.url(&format!("/api/webhooks/{hook_id}"))).send().await.unwrap().status(), 404);
    assert_eq!(other.delete(server.url(&format!("/api/webhooks/{hook_id}"))).send().await.unwrap().status(), 404);
    assert_eq!(other.get(server.url(&format!("/api/webhooks/{hook_id}/deliveries"))).send().await.unwrap().status(), 404);
    let theirs: Value = other.get(server.url("/api/webhooks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs, json!([]));
    let anon = reqwest::Client::new();
    assert_eq!(anon.get(server.url("/api/webhooks")).send().await.unwrap().status(), 401);
    // The owner removes it: no more deliveries, no log.
    assert_eq!(server.client.delete(server.url(&format!("/api/webhooks/{hook_id}"))).send().await.unwrap().status(), 204);
    assert_eq!(server.client.get(server.url(&format!("/api/webhooks/{hook_id}"))).send().await.unwrap().status(), 404);
}

/// A disabled user's endpoints get no new events (their sessions and tokens stop too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_users_endpoints_receive_nothing() {
    let server = Server::start(&[ALLOW]).await;
    let (l, url) = listener().await;
    let endpoint = Endpoint::start(l, Answer::Status(204)).await;
    let token = user_with_token(&server.data_dir, "leaver", "leaver password 1", false, "upload,manage");
    let leaver = client_with_token(&token);
    let r = leaver
        .post(server.url("/api/webhooks"))
        .json(&json!({ "url": url, "events": ["video.created", "video.deleted"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let hook_id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let r = leaver.post(server.url("/api/uploads")).header("Tus-Resumable", "1.0.0").header("Upload-Length", "1000").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let video = r.headers()["cascade-video-id"].to_str().unwrap().to_string();
    assert_eq!(endpoint.wait_for(1, Duration::from_secs(60)).await[0].json()["type"], "video.created");

    let users: Value = server.client.get(server.url("/api/admin/users")).send().await.unwrap().json().await.unwrap();
    let user_id =
        users["users"].as_array().unwrap().iter().find(|u| u["username"] == "leaver").unwrap()["id"].as_str().unwrap().to_string();
    let r =
        server.client.patch(server.url(&format!("/api/admin/users/{user_id}"))).json(&json!({ "disabled": true })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // An admin deletes the video: the event is decided before the answer, and none is queued.
    assert_eq!(server.client.delete(server.url(&format!("/api/videos/{video}"))).send().await.unwrap().status(), 204);
    let log = deliveries(&server, &hook_id).await;
    let events: Vec<&str> = log.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["video.created"]);
    assert_eq!(endpoint.got().len(), 1);
}

/// A resumable upload's creation: a `video.created` event without a transcode.
async fn create_tus(server: &Server) -> String {
    let r = server
        .client
        .post(server.url("/api/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.headers()["cascade-video-id"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_and_a_kill_9_loses_no_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[ALLOW]).await;
    // A port nobody listens on yet: the first attempt is refused.
    let (l, url) = listener().await;
    let addr = l.local_addr().unwrap();
    drop(l);
    let hook = register(&server, &url, &["video.created"]).await;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    let video = create_tus(&server).await;
    let mut failed = Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), async || {
            failed = deliveries(&server, &hook_id).await.first().cloned().unwrap_or_default();
            failed["attempts"] == 1
        })
        .await,
        "{failed}"
    );
    assert_eq!(failed["state"], "pending");
    assert!(failed["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    let created = chrono::DateTime::parse_from_rfc3339(failed["created_at"].as_str().unwrap()).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(failed["next_at"].as_str().unwrap()).unwrap();
    assert!(next > created && next - created <= chrono::Duration::seconds(30), "first retry at {next}, event at {created}");

    // The process dies with the delivery pending; the endpoint comes up; a new process sends it.
    server.kill9().await;
    let endpoint = Endpoint::start(tokio::net::TcpListener::bind(addr).await.unwrap(), Answer::Status(200)).await;
    let server = Server::start_in(dir.path(), &[ALLOW]).await;
    let got = endpoint.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(got[0].json()["type"], "video.created");
    assert_eq!(got[0].json()["video"]["id"], video.as_str());
    assert_eq!(got[0].json()["video"]["status"], "uploading");
    verify(hook["secret"].as_str().unwrap(), &got[0]);
    let mut d = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), async || {
            d = deliveries(&server, &hook_id).await[0].clone();
            d["state"] == "delivered"
        })
        .await,
        "{d}"
    );
    assert_eq!((d["attempts"].as_u64(), d["last_status"].as_u64()), (Some(2), Some(200)), "{d}");
    assert_eq!(endpoint.got().len(), 1, "delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers_does_not_hold_the_pipeline() {
    let server = Server::start(&[ALLOW]).await;
    let (l, url) = listener().await;
    let endpoint = Endpoint::start(l, Answer::Hang).await;
    let hook = register(&server, &url, &["video.created", "video.ready"]).await;
    let src = clip("hang360.mp4", "testsrc2=size=640x360:rate=30", Some("sine=frequency=440:sample_rate=48000"), 4.0, &[]).await;
    let id = server.upload_ok(&src, "not held").await;
    assert_eq!(server.wait_final(&id, T).await["status"], "ready");
    // Ready although no delivery was ever answered.
    endpoint.wait_for(1, Duration::from_secs(30)).await;
    let log = deliveries(&server, hook["id"].as_str().unwrap()).await;
    assert!(log.iter().all(|d| d["state"] == "pending"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_malformed_endpoints_are_refused() {
    let server = Server::start(&[]).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://10.0.0.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
        "not a url",
    ] {
        let r = server.client.post(server.url("/api/webhooks")).json(&json!({ "url": url })).send().await.unwrap();
        assert_eq!(r.status(), 400, "{url}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "bad_request", "{url}");
    }
    let server = Server::start(&[ALLOW]).await;
    let r = server
        .client
        .post(server.url("/api/webhooks"))
        .json(&json!({ "url": "http://127.0.0.1:9/", "events": ["video.exploded"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = server
        .client
        .post(server.url("/api/webhooks"))
        .json(&json!({ "url": "http://127.0.0.1:9/", "secret": "mine" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown fields are refused");
    // Every event when none is named.
    let r = server.client.post(server.url("/api/webhooks")).json(&json!({ "url": "http://127.0.0.1:9/" })).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["events"].as_array().unwrap().len(), 7);
    // A token without the `manage` scope may not register one.
    let uploader = client_with_token(&user_with_token(&server.data_dir, "up", "uploader password 1", false, "upload"));
    let r = uploader.post(server.url("/api/webhooks")).json(&json!({ "url": "http://127.0.0.1:9/" })).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

/// A broadcast's start and end reach the owner's endpoint (`live.started`, `live.ended`), with the
/// stream's record but never its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_broadcasts_send_started_and_ended() {
    let server = Server::start(&[ALLOW, ("CASCADE_LIVE_RECONNECT_S", "1")]).await;
    let (l, url) = listener().await;
    let endpoint = Endpoint::start(l, Answer::Status(204)).await;
    let hook = register(&server, &url, &["live.started", "live.ended"]).await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let r = server.client.post(server.url("/api/live")).json(&json!({ "title": "Hooked live" })).send().await.unwrap();
    let stream: Value = r.json().await.unwrap();
    let key = stream["key"].as_str().unwrap().to_string();
    let publish = format!("{}/{key}", stream["rtmp_url"].as_str().unwrap());
    // ffmpeg publishing a 320x240 picture in real time for `seconds`.
    let publisher = |seconds: &str| -> Vec<String> {
        ["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", seconds]
            .into_iter()
            .chain(["-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p", "-f", "flv", &publish])
            .map(String::from)
            .collect()
    };
    let args = publisher("6");
    let (ok, err) = run("ffmpeg", &args.iter().map(String::as_str).collect::<Vec<_>>(), T).await;
    assert!(ok, "publish: {err}");
    let got = endpoint.wait_for(2, T).await;
    let types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["live.started", "live.ended"]);
    for r in &got {
        verify(&secret, r);
        let body = r.json();
        assert_eq!(body["stream"]["id"], stream["id"]);
        assert!(body["stream"].get("key").is_none() && !r.body.contains(&key), "the key never leaves in a webhook: {body}");
        assert!(body["stream"]["video_id"].is_string(), "{body}");
    }
    assert_eq!((got[0].json()["stream"]["status"].as_str(), got[1].json()["stream"]["status"].as_str()), (Some("live"), Some("idle")));

    // Deleting a stream on air ends its broadcast: the owner still gets `live.ended`.
    let mut again = tokio::process::Command::new("ffmpeg")
        .args(publisher("60"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    endpoint.wait_for(3, T).await;
    let r = server.client.delete(server.url(&format!("/api/live/{}", stream["id"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let got = endpoint.wait_for(4, T).await;
    assert_eq!(got[3].json()["type"], "live.ended");
    assert_eq!(got[3].json()["stream"]["id"], stream["id"]);
    let _ = tokio::time::timeout(T, again.wait()).await.expect("the publisher of a deleted stream is disconnected");
}
