//! Resumable uploads (tus 1.0.0) spoken by hand, one request at a time: every error the issue
//! names, the upload's record while it arrives, and the file that results. Third-party clients
//! (tuspy, tus-js-client) are run by `tests/tus/run.sh`.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest;

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const CHUNK: &str = "application/offset+octet-stream";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn sha1_header(data: &[u8]) -> String {
    format!("sha1 {}", base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(data)))
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

async fn call(client: &reqwest::Client, method: Method, url: &str, headers: &[(&str, String)], body: Option<Vec<u8>>) -> Answer {
    let mut req = client.request(method.clone(), url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let what = format!("{method} {url} {:?}", headers.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.json().await.unwrap_or(Value::Null);
    Answer { status, headers, body }
}

fn tus() -> (&'static str, String) {
    (TUS.0, TUS.1.to_string())
}

/// Creates an upload of `length` bytes; returns its URL and video id.
async fn create(server: &Server, client: &reqwest::Client, length: usize, metadata: &str) -> (String, String) {
    let a = call(
        client,
        Method::POST,
        &server.url("/api/uploads"),
        &[tus(), ("Upload-Length", length.to_string()), ("Upload-Metadata", metadata.into())],
        None,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.header("tus-resumable"), "1.0.0");
    let location = a.header("location").to_string();
    let id = a.header("cascade-video-id").to_string();
    assert!(location.ends_with(&format!("/api/uploads/{id}")), "{location}");
    (location, id)
}

async fn patch(client: &reqwest::Client, url: &str, offset: usize, data: &[u8], extra: &[(&str, String)]) -> Answer {
    let mut h = vec![tus(), ("Content-Type", CHUNK.to_string()), ("Upload-Offset", offset.to_string())];
    h.extend(extra.iter().cloned());
    call(client, Method::PATCH, url, &h, Some(data.to_vec())).await
}

async fn offset(client: &reqwest::Client, url: &str) -> (u16, Option<u64>) {
    let a = call(client, Method::HEAD, url, &[tus()], None).await;
    (a.status, a.headers.get("upload-offset").map(|v| v.to_str().unwrap().parse().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_upload_speaks_tus_and_every_error_is_the_one_the_spec_names() {
    let server = Server::start(&[("CASCADE_MAX_UPLOAD_BYTES", "50000000")]).await;
    let c = &server.client;
    let url = server.url("/api/uploads");

    let a = call(c, Method::OPTIONS, &url, &[], None).await;
    assert_eq!(a.status, 204);
    assert_eq!(a.header("tus-version"), "1.0.0");
    for ext in ["creation", "creation-with-upload", "termination", "expiration", "checksum"] {
        assert!(a.header("tus-extension").split(',').any(|e| e == ext), "{ext}: {}", a.header("tus-extension"));
    }
    assert!(a.header("tus-checksum-algorithm").contains("sha1"));
    assert_eq!(a.header("tus-max-size"), "50000000");

    let length = |n: usize| ("Upload-Length", n.to_string());
    assert_eq!(call(c, Method::POST, &url, &[length(10)], None).await.status, 412, "no Tus-Resumable");
    assert_eq!(call(c, Method::POST, &url, &[("Tus-Resumable", "0.2.2".into()), length(10)], None).await.status, 412);
    let anonymous = reqwest::Client::new();
    assert_eq!(call(&anonymous, Method::POST, &url, &[tus(), length(10)], None).await.status, 401);
    let a = call(c, Method::POST, &url, &[tus(), length(60_000_000)], None).await;
    assert_eq!((a.status, a.body["code"].as_str()), (413, Some("payload_too_large")), "{}", a.body);
    assert_eq!(call(c, Method::POST, &url, &[tus()], None).await.status, 400, "no Upload-Length");

    let clip = clip("tus.mp4", "testsrc2=size=320x240:rate=25", Some("sine"), 2.0, &["-movflags", "+faststart"]).await;
    let data = std::fs::read(&clip).unwrap();
    let metadata = format!("filename {},title {},visibility {}", b64("tus.mp4"), b64("Resumable été"), b64("unlisted"));
    let (up, id) = create(&server, c, data.len(), &metadata).await;
    let v = server.get_video(&id).await;
    assert_eq!((v["status"].as_str(), v["upload_bytes"].as_u64()), (Some("uploading"), Some(0)), "{v}");
    assert_eq!((v["title"].as_str(), v["visibility"].as_str()), (Some("Resumable été"), Some("unlisted")), "{v}");

    // Only its creator sees or touches it.
    let other = client_with_token(&user_with_token(&server.data_dir, "other", "other password", false, "upload,manage"));
    assert_eq!(offset(&other, &up).await.0, 404);
    assert_eq!(patch(&other, &up, 0, &data[..10], &[]).await.status, 404);
    assert_eq!(call(&other, Method::DELETE, &up, &[tus()], None).await.status, 404);

    let a = call(c, Method::HEAD, &up, &[tus()], None).await;
    assert_eq!((a.status, a.header("upload-offset"), a.header("upload-length")), (200, "0", data.len().to_string().as_str()));
    assert_eq!((a.header("upload-metadata"), a.header("cache-control")), (metadata.as_str(), "no-store"));
    assert!(a.header("upload-expires").ends_with(" GMT"), "{}", a.header("upload-expires"));

    let half = data.len() / 2;
    let a = call(
        c,
        Method::PATCH,
        &up,
        &[tus(), ("Content-Type", "application/octet-stream".into()), ("Upload-Offset", "0".into())],
        Some(data[..half].to_vec()),
    )
    .await;
    assert_eq!(a.status, 415, "wrong content type");
    assert_eq!(patch(c, &up, 5, &data[..half], &[]).await.status, 409, "wrong offset");
    let wrong = sha1_header(b"something else");
    let a = patch(c, &up, 0, &data[..half], &[("Upload-Checksum", wrong)]).await;
    assert_eq!((a.status, a.body["code"].as_str()), (460, Some("checksum_mismatch")), "{}", a.body);
    assert_eq!(offset(c, &up).await, (200, Some(0)), "a chunk that does not match is discarded");
    let a = patch(c, &up, 0, &data[..half], &[("Upload-Checksum", sha1_header(&data[..half]))]).await;
    assert_eq!((a.status, a.header("upload-offset")), (204, half.to_string().as_str()), "{}", a.body);
    assert_eq!(server.get_video(&id).await["upload_bytes"].as_u64(), Some(half as u64));
    // More than Upload-Length: refused, and nothing of it kept.
    let mut too_much = data[half..].to_vec();
    too_much.extend_from_slice(b"extra");
    assert_eq!(patch(c, &up, half, &too_much, &[]).await.status, 413);
    assert_eq!(offset(c, &up).await, (200, Some(half as u64)));

    // Two PATCHes at once: the second waits its turn (423), the bytes never interleave.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let slow = {
        let (c, up) = (c.clone(), up.clone());
        tokio::spawn(async move {
            c.patch(&up)
                .header(TUS.0, TUS.1)
                .header("Content-Type", CHUNK)
                .header("Upload-Offset", half.to_string())
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let quarter = half + (data.len() - half) / 2;
    tx.send(Ok(data[half..quarter].to_vec())).await.unwrap();
    // The first one is in (it counts as an upload arriving): the second is refused.
    let arriving = wait_until(Duration::from_secs(30), async || {
        let me: Value = c.get(server.url("/api/me")).send().await.unwrap().json().await.unwrap();
        me["storage"]["uploads_arriving"] == 1
    })
    .await;
    assert!(arriving, "the first PATCH never arrived");
    let a = patch(c, &up, half, &data[half..], &[]).await;
    assert_eq!((a.status, a.body["code"].as_str()), (423, Some("locked")), "a second PATCH while one is arriving: {}", a.body);
    drop(tx);
    assert_eq!(slow.await.unwrap(), 204, "the first PATCH ends with what it sent");
    assert_eq!(offset(c, &up).await, (200, Some(quarter as u64)));

    let a = patch(c, &up, quarter, &data[quarter..], &[]).await;
    assert_eq!((a.status, a.header("upload-offset")), (204, data.len().to_string().as_str()), "{}", a.body);
    assert_eq!(offset(c, &up).await.0, 404, "a finished upload is a video now");
    let v = server.wait_final(&id, Duration::from_secs(180)).await;
    assert_eq!(v["status"], "ready", "{v}");
    let source = std::fs::read(server.data_dir.join("uploads").join(&id).join("source")).unwrap();
    assert_eq!(sha2::Sha256::digest(&source), sha2::Sha256::digest(&data), "the file is the one sent");
}

/// A request body of the chunks sent on `rx`, ending when the sender is dropped.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_end_by_termination_expiry_or_refusal_and_leave_nothing() {
    // Uploads without a chunk for 1.8 s expire; the sweeper looks every second.
    let server = Server::start(&[("CASCADE_UPLOAD_EXPIRY_H", "0.0005")]).await;
    let c = &server.client;
    let clip = clip("tus-end.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let data = std::fs::read(&clip).unwrap();
    let uploads = server.data_dir.join("uploads");

    // Terminated by its owner: record, file and upload gone.
    let (up, id) = create(&server, c, data.len(), "").await;
    assert_eq!(patch(c, &up, 0, &data[..100], &[]).await.status, 204);
    assert_eq!(call(c, Method::DELETE, &up, &[tus()], None).await.status, 204);
    assert_eq!(offset(c, &up).await.0, 404);
    assert_eq!(server.raw_get(&format!("/api/videos/{id}")).await.0, 404);
    assert!(!uploads.join(&id).exists());

    // Not a media file: refused at its first bytes, and nothing left.
    let (up, id) = create(&server, c, 64, "").await;
    let a = patch(c, &up, 0, &[b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:1/s.ts\n".as_slice(), &[b' '; 21]].concat(), &[]).await;
    assert_eq!((a.status, a.body["code"].as_str()), (415, Some("unsupported_input")), "{}", a.body);
    assert_eq!(offset(c, &up).await.0, 404);
    assert!(!uploads.join(&id).exists());

    // creation-with-upload: the whole file in the creating request.
    let a = call(
        c,
        Method::POST,
        &server.url("/api/uploads"),
        &[tus(), ("Upload-Length", data.len().to_string()), ("Content-Type", CHUNK.into())],
        Some(data.clone()),
    )
    .await;
    assert_eq!((a.status, a.header("upload-offset")), (201, data.len().to_string().as_str()), "{}", a.body);
    let v = server.wait_final(a.header("cascade-video-id"), Duration::from_secs(120)).await;
    assert_eq!(v["status"], "ready", "{v}");

    // Expired while a chunk is still arriving (the sweeper leaves an upload alone while a chunk
    // arrives): HEAD and another PATCH answer 410.
    let (up, _) = create(&server, c, data.len(), "").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let arriving = {
        let (c, up) = (c.clone(), up.clone());
        tokio::spawn(async move {
            let r = c
                .patch(&up)
                .header(TUS.0, TUS.1)
                .header("Content-Type", CHUNK)
                .header("Upload-Offset", "0")
                .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
                .send()
                .await;
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        })
    };
    tx.send(Ok(data[..100].to_vec())).await.unwrap();
    let expired = wait_until(Duration::from_secs(60), async || offset(c, &up).await.0 == 410).await;
    assert!(
        expired,
        "an expired upload answers 410
{}",
        server.log()
    );
    let a = patch(c, &up, 0, &data[..10], &[]).await;
    assert_eq!((a.status, a.body["code"].as_str()), (410, Some("gone")), "{}", a.body);
    drop(tx);
    arriving.await.unwrap();

    // Left alone: it expires (410 while it waits for the sweeper), then it is removed with its file.
    let (up, id) = create(&server, c, data.len(), "").await;
    assert_eq!(patch(c, &up, 0, &data[..100], &[]).await.status, 204);
    let gone = wait_until(Duration::from_secs(60), async || offset(c, &up).await.0 == 404 && !uploads.join(&id).exists()).await;
    assert!(gone, "an expired upload is removed\n{}", server.log());
    assert_eq!(server.raw_get(&format!("/api/videos/{id}")).await.0, 404);
    assert!(server.log().contains("resumable upload expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_upload_counts_against_the_quota_from_its_creation() {
    let server = Server::start(&[]).await;
    let token = user_with_token(&server.data_dir, "q", "quota password", false, "upload,manage");
    let c = client_with_token(&token);
    let me: Value = c.get(server.url("/api/me")).send().await.unwrap().json().await.unwrap();
    let set = json!({"quota_bytes": 1000});
    let r = server.client.patch(server.url(&format!("/api/admin/users/{}", me["id"].as_str().unwrap()))).json(&set).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let a = call(&c, Method::POST, &server.url("/api/uploads"), &[tus(), ("Upload-Length", "2000".into())], None).await;
    assert_eq!((a.status, a.body["code"].as_str()), (413, Some("over_quota")), "{}", a.body);
    create(&server, &c, 600, "").await;
    let a = call(&c, Method::POST, &server.url("/api/uploads"), &[tus(), ("Upload-Length", "600".into())], None).await;
    assert_eq!((a.status, a.body["code"].as_str()), (413, Some("over_quota")), "the first reserves its length: {}", a.body);
    let me: Value = c.get(server.url("/api/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["storage"]["bytes"].as_u64(), Some(600), "{me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chunk_is_made_durable_as_it_arrives_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]).await;
    // 160 MiB: an MP4 header, then bytes of a simple generator (cheap, not compressible).
    let size = 160usize << 20;
    let mut data = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    data.extend_from_slice(&((size - 24) as u32).to_be_bytes());
    data.extend_from_slice(b"mdat");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    let (up, id) = create(&server, &server.client, size, "").await;
    let path = up.trim_start_matches(&server.url("")).to_string();
    // One PATCH of everything, sent in 1 MiB pieces; the server is killed once it has made some
    // of it durable (every 64 MiB), long before the chunk ends.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let sending = {
        let (c, url) = (server.client.clone(), up.clone());
        tokio::spawn(async move {
            let _ = c
                .patch(&url)
                .header(TUS.0, TUS.1)
                .header("Content-Type", CHUNK)
                .header("Upload-Offset", "0")
                .header("Content-Length", size.to_string())
                .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
                .send()
                .await;
        })
    };
    let feeder = {
        let data = data.clone();
        tokio::spawn(async move {
            for piece in data.chunks(1 << 20) {
                if tx.send(Ok(piece.to_vec())).await.is_err() {
                    break;
                }
                // Pacing, not synchronisation: the chunk must still be arriving at the kill.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let c = server.client.clone();
    let durable = wait_until(Duration::from_secs(120), async || offset(&c, &up).await.1.is_some_and(|o| o >= 64 << 20)).await;
    assert!(durable, "nothing of a long chunk became durable while it arrived\n{}", server.log());
    server.kill9().await;
    feeder.abort();
    sending.abort();
    let part = dir.path().join("uploads").join(&id).join("source.part");
    let on_disk = std::fs::metadata(&part).unwrap().len();
    drop(server);

    let server = Server::start_in(dir.path(), &[]).await;
    let url = server.url(&path);
    let (status, Some(kept)) = offset(&server.client, &url).await else { panic!("no offset after the restart") };
    assert_eq!(status, 200);
    assert!(kept >= 64 << 20 && kept <= on_disk, "HEAD says {kept}, the disk holds {on_disk}");
    let kept = kept as usize;
    let a = patch(&server.client, &url, kept, &data[kept..], &[]).await;
    assert_eq!((a.status, a.header("upload-offset")), (204, size.to_string().as_str()), "{}", a.body);
    let source = std::fs::read(dir.path().join("uploads").join(&id).join("source")).unwrap();
    assert!(source == data, "the file after a kill -9 and a resume is not the one sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_resumable_upload_gives_its_transcode_slot_back() {
    let server = Server::start(&[("CASCADE_WORKERS", "1"), ("CASCADE_BODY_IDLE_TIMEOUT", "3")]).await;
    let c = &server.client;
    let slow = clip("paused.mkv", "testsrc2=size=320x240:rate=25", Some("sine"), 4.0, &[]).await;
    let other = clip("meanwhile-tus.mp4", "testsrc2=size=320x240:rate=25", None, 2.0, &[]).await;
    let data = std::fs::read(&slow).unwrap();
    let (up, id) = create(&server, c, data.len(), "").await;
    // The first bytes of a streamable file: its transcode starts with the only slot...
    let first = data.len() / 3;
    assert_eq!(patch(c, &up, 0, &data[..first], &[]).await.status, 204);
    let streaming = wait_until(Duration::from_secs(60), async || server.get_video(&id).await["streamed"] == true).await;
    assert!(streaming, "the first chunk did not start a streamed transcode\n{}", server.log());
    // ...and the client pauses: another upload is transcoded meanwhile, with that slot.
    let meanwhile = server.upload_ok(&other, "meanwhile").await;
    let v = server.wait_final(&meanwhile, Duration::from_secs(180)).await;
    assert_eq!(v["status"], "ready", "{v}");
    let paused = server.get_video(&id).await;
    assert!(paused["status"] == "queued" || paused["status"] == "processing", "{paused}");
    // The rest arrives: the paused video is transcoded from its file.
    let a = patch(c, &up, first, &data[first..], &[]).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let v = server.wait_final(&id, Duration::from_secs(180)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert!(server.log().contains("streamed transcode stopped"), "the slot was given back by the streamed job");
}
