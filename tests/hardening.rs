//! The front door under attack: each test tries an attack that worked against an earlier build
//! (server-side request forgery through playlists, unbounded multipart buffering, slow headers,
//! a trickling upload holding the transcode slot, the Host header, a pixel-aspect bomb) and
//! checks that it fails now, plus the headers and HEAD answers every response must have.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP listener that counts the connections made to it (it answers none).
async fn tripwire() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_that_name_other_resources_are_refused_and_fetch_nothing() {
    let server = Server::start(&[]).await;
    let (port, hits) = tripwire().await;
    let local_media = clip("local_target.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let local = local_media.display().to_string();
    let url = format!("http://127.0.0.1:{port}/s.ts");
    let documents = [
        ("remote.m3u8", format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n{url}\n#EXT-X-ENDLIST\n")),
        ("local.m3u8", format!("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n{local}\n#EXT-X-ENDLIST\n")),
        (
            "remote.mpd",
            format!(
                "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\" mediaPresentationDuration=\"PT4S\">\
                 <Period><AdaptationSet mimeType=\"video/mp4\"><Representation id=\"1\" bandwidth=\"1\"><BaseURL>{url}</BaseURL>\
                 </Representation></AdaptationSet></Period></MPD>\n"
            ),
        ),
        ("list.ffconcat", format!("ffconcat version 1.0\nfile '{local}'\nfile '{url}'\n")),
        ("stream.sdp", format!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nm=video {port} RTP/AVP 96\r\n")),
        // Named like a video: the name decides nothing.
        ("disguised.mp4", format!("#EXTM3U\n#EXTINF:4.0,\n{url}\n")),
    ];
    for (name, text) in &documents {
        let path = bytes_file(name, text.as_bytes());
        let (status, body) = server.upload(&path, name).await;
        assert_eq!(status, 415, "{name}: {body}");
        assert_eq!(body["code"], "unsupported_input", "{name}: {body}");
    }
    // The command-line runner refuses them too, before any back end runs.
    let out = tempfile::tempdir().unwrap();
    for backend in ["gstreamer", "ffmpeg"] {
        let path = bytes_file("cli.m3u8", documents[0].1.as_bytes());
        let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["transcode", "--backend", backend, "--out"])
            .arg(out.path().join(backend))
            .arg(&path)
            .current_dir(repo())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{backend}: {err}");
        assert!(err.contains("unsupported_input") || err.contains("not a media container"), "{backend}: {err}");
    }
    let list: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["videos"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the server or the runner connected to the URL in a playlist");
}

/// An upload that says it has 100000 bytes and sends only the start of a Matroska file.
async fn start_upload(server: &Server) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let head = format!(
        "POST /api/videos HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n\
         --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mkv\"\r\n\r\n",
        server.auth()
    );
    s.write_all(&[head.as_bytes(), &[0x1A, 0x45, 0xDF, 0xA3]].concat()).await.unwrap();
    s
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

/// Sends `prefix` and then up to `total` bytes of `fill` as a chunked body, sampling the
/// server's RSS; returns (peak RSS growth in MiB, bytes sent, response text).
async fn flood(server: &Server, prefix: &[u8], total: usize) -> (u64, usize, String) {
    let pid = server.child.id().unwrap();
    let before = rss_kib(pid);
    let mut peak = before;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let head = format!(
        "POST /api/videos HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Content-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.auth()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let frame = |b: &[u8]| [format!("{:x}\r\n", b.len()).into_bytes(), b.to_vec(), b"\r\n".to_vec()].concat();
    let mut sent = 0;
    // An empty chunk would end the body: send the prefix only when there is one.
    if prefix.is_empty() || s.write_all(&frame(prefix)).await.is_ok() {
        let chunk = frame(&vec![b'a'; 1 << 20]);
        while sent < total {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
            sent += 1 << 20;
            if sent % (16 << 20) == 0 {
                peak = peak.max(rss_kib(pid));
            }
        }
    }
    peak = peak.max(rss_kib(pid));
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    ((peak.saturating_sub(before)) / 1024, sent, String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_frames_a_part_is_cut_off_with_flat_memory() {
    let server = Server::start(&[]).await;
    let cases: [(&str, &[u8]); 2] = [
        ("no boundary ever", b""),
        ("part headers that never end", b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mkv\"\r\nX-Pad: "),
    ];
    for (what, prefix) in cases {
        let (growth_mib, sent, response) = flood(&server, prefix, 256 << 20).await;
        assert!(growth_mib < 32, "{what}: server RSS grew by {growth_mib} MiB after {sent} bytes");
        let status: u16 = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        assert_eq!(status, 400, "{what}: {response}");
        assert!(response.contains("exceed"), "{what}: {response}");
    }
    assert_eq!(std::fs::read_dir(server.data_dir.join("uploads")).unwrap().count(), 0, "nothing stays behind");
    assert_eq!(server.get_text(&server.url("/healthz")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_a_silent_body_are_cut_off() {
    let server = Server::start(&[("CASCADE_HEADER_TIMEOUT", "2"), ("CASCADE_BODY_IDLE_TIMEOUT", "2")]).await;
    // Headers sent one line every 200 ms, for up to 60 s: the server must close the connection.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(60) {
        if s.write_all(b"X-Slow: a\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                // hyper may answer 408 before closing; then the connection ends.
                assert!(String::from_utf8_lossy(&b[..n]).contains("408"), "{}", String::from_utf8_lossy(&b[..n]));
            }
            Err(_) => {}
        }
    }
    assert!(closed, "a slowloris request was held open for {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30), "closed only after {:?}", started.elapsed());

    // An upload that starts and then goes silent gets a 408 and leaves nothing behind.
    let mut s = start_upload(&server).await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the silent upload was held open");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408") && text.contains("request_timeout"), "{text}");
    let uploads = server.data_dir.join("uploads");
    assert!(
        wait_until(Duration::from_secs(30), async || std::fs::read_dir(&uploads).unwrap().count() == 0).await,
        "the silent upload left files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_streamed_upload_gives_its_transcode_slot_back() {
    let server = Server::start(&[("CASCADE_WORKERS", "1"), ("CASCADE_BODY_IDLE_TIMEOUT", "3")]).await;
    let slow = clip("trickle.mkv", "testsrc2=size=320x240:rate=25", Some("sine"), 4.0, &[]).await;
    let other = clip("meanwhile.mp4", "testsrc2=size=320x240:rate=25", None, 2.0, &[]).await;
    let data = std::fs::read(&slow).unwrap();

    // The slow upload: the container's first 64 KiB, then one byte every 100 ms.
    let boundary = "trickleboundary";
    let part = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"trickle.mkv\"\r\n\r\n");
    let tail = format!("\r\n--{boundary}--\r\n");
    let len = part.len() + data.len() + tail.len();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let auth = server.auth();
    let head = format!("POST /api/videos?ref=trickle HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\n\r\n{part}");
    s.write_all(head.as_bytes()).await.unwrap();
    let first = 64 * 1024;
    s.write_all(&data[..first]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let data = data.clone();
        tokio::spawn(async move {
            let mut pos = first;
            while !stop.load(Ordering::SeqCst) && pos < data.len() - 1 {
                s.write_all(&data[pos..pos + 1]).await.unwrap();
                pos += 1;
                // Pacing, not synchronisation: the attack is a slow sender.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (s, pos)
        })
    };
    // It is streamed: its record exists (processing) while the body is still arriving.
    let list_url = server.url("/api/videos?ref=trickle");
    let mut slow_id = String::new();
    let streamed = wait_until(Duration::from_secs(60), async || {
        let v: Value = server.client.get(&list_url).send().await.unwrap().json().await.unwrap();
        match v["videos"][0]["id"].as_str() {
            Some(id) => {
                slow_id = id.to_string();
                true
            }
            None => false,
        }
    })
    .await;
    assert!(streamed, "the trickling upload was not streamed\n{}", server.log());

    // Another upload is transcoded meanwhile, with the only slot.
    let id = server.upload_ok(&other, "meanwhile").await;
    let v = server.wait_final(&id, Duration::from_secs(180)).await;
    assert_eq!(v["status"], "ready", "{v}");
    let slow_now = server.get_video(&slow_id).await;
    assert!(slow_now["status"] == "queued" || slow_now["status"] == "processing", "{slow_now}");

    // The rest arrives: the slow video is transcoded from its file.
    stop.store(true, Ordering::SeqCst);
    let (mut s, pos) = trickler.await.unwrap();
    s.write_all(&data[pos..]).await.unwrap();
    s.write_all(tail.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    let v = server.wait_final(&slow_id, Duration::from_secs(180)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert!(server.log().contains("streamed transcode stopped"), "the slot was given back by the streamed job");
}

/// `GET path` with this Host header, by hand; returns the body.
async fn get_with_host(server: &Server, path: &str, host: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{}X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n", server.auth()).as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_urls_never_come_from_the_host_header() {
    let src = clip("host.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    for public in ["", "https://video.example.com"] {
        let server = Server::start(&[("CASCADE_PUBLIC_URL", public)]).await;
        let id = server.upload_ok(&src, "host").await;
        server.wait_for(&id, Duration::from_secs(120), |v| v["playable"] == true).await;
        let body = get_with_host(&server, &format!("/api/videos/{id}"), "evil.example").await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let hls = v["playback"]["hls"].as_str().unwrap();
        assert!(!body.contains("evil.example"), "{body}");
        assert!(hls.starts_with(&format!("{public}/play/")), "public URL {public:?}: {hls}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pixel_aspect_bomb_is_refused() {
    let server = Server::start(&[]).await;
    // 64x64 pixels that claim to be 60000 times wider than tall.
    let bomb = clip(
        "aspect_bomb.mkv",
        "testsrc2=size=64x64:rate=10",
        None,
        1.0,
        &["-vf", "setsar=60000/1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    )
    .await;
    let id = server.upload_ok(&bomb, "bomb").await;
    let v = server.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "invalid_dimensions", "{v}");
    assert!(v["renditions"].as_array().is_none_or(|r| r.is_empty()), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_security_headers_and_head_works_where_get_does() {
    let server = Server::start(&[("CASCADE_FRAME_ANCESTORS", "'self' https://blog.example"), ("CASCADE_LOG", "info")]).await;
    let src = clip("headers.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let id = server.upload_ok(&src, "headers").await;
    let v = server.wait_final(&id, Duration::from_secs(120)).await;
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let token = v["playback"]["token"].as_str().unwrap().to_string();
    let paths = ["/", "/upload", &format!("/watch/{id}"), "/api/videos", &format!("/api/videos/{id}"), "/healthz", "/assets/app.css"];
    for path in paths {
        let get = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(get.status().as_u16(), 200, "GET {path}");
        let h = get.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'self' https://blog.example"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let head = server.client.head(server.url(path)).send().await.unwrap();
        assert_eq!(head.status().as_u16(), 200, "HEAD {path}");
        assert!(head.headers().contains_key("content-security-policy"), "HEAD {path}");
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path} has no body");
    }
    // Pages load no inline script (the policy would block it).
    for page in ["/", "/upload", &format!("/watch/{id}")] {
        let (_, html) = server.get_text(&server.url(page)).await;
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap();
            assert!(tag.contains("src="), "{page} has an inline script: <script{tag}>");
        }
        assert!(!html.contains(" style=\""), "{page} has an inline style attribute");
    }
    // A request with a token: the log shows the path without it.
    assert_eq!(server.get_text(&hls).await.0, 200);
    assert!(wait_until(Duration::from_secs(10), async || server.log().contains("/play/[token]/")).await, "{}", server.log());
    assert!(!server.log().contains(&token), "the playback token is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_arriving_at_once_are_capped() {
    let server = Server::start(&[("CASCADE_MAX_UPLOADS", "1")]).await;
    // One upload is arriving (its body is incomplete and the connection open)...
    let first = start_upload(&server).await;
    let src = clip("second.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let uploads = server.data_dir.join("uploads");
    assert!(wait_until(Duration::from_secs(30), async || std::fs::read_dir(&uploads).unwrap().count() == 1).await, "{}", server.log());
    // ...so the next one waits its turn (429); once the first is gone, it is accepted.
    let (status, body) = server.upload(&src, "second").await;
    assert_eq!((status, body["code"].as_str()), (429, Some("too_many_uploads")), "{body}");
    drop(first);
    assert!(wait_until(Duration::from_secs(30), async || server.upload(&src, "second").await.0 == 201).await, "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_in_all_and_per_address() {
    let server =
        Server::start(&[("CASCADE_MAX_SUBSCRIBERS", "3"), ("CASCADE_MAX_SUBSCRIBERS_PER_IP", "2"), ("CASCADE_BODY_IDLE_TIMEOUT", "600")])
            .await;
    // A video that stays `processing`: a streamed upload whose last byte never comes.
    let src = clip("held.mkv", "testsrc2=size=160x120:rate=10", None, 2.0, &[]).await;
    let data = std::fs::read(&src).unwrap();
    let boundary = "heldboundary";
    let part = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"held.mkv\"\r\n\r\n");
    let len = part.len() + data.len() + format!("\r\n--{boundary}--\r\n").len();
    let mut held = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let auth = server.auth();
    let head = format!("POST /api/videos?ref=held HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\n\r\n{part}");
    held.write_all(head.as_bytes()).await.unwrap();
    held.write_all(&data[..data.len() - 1]).await.unwrap();
    let mut id = String::new();
    let found = wait_until(Duration::from_secs(60), async || {
        let v: Value = server.client.get(server.url("/api/videos?ref=held")).send().await.unwrap().json().await.unwrap();
        id = v["videos"][0]["id"].as_str().unwrap_or("").to_string();
        !id.is_empty()
    })
    .await;
    assert!(found, "the held upload was not streamed\n{}", server.log());

    let from = |ip: &str| reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let (a, b) = (from("127.0.0.1"), from("127.0.0.2"));
    let url = server.url(&format!("/api/videos/{id}/events"));
    let open = |c: &reqwest::Client| c.get(&url).send();
    let status = |r: &reqwest::Response| r.status().as_u16();
    let a1 = open(&a).await.unwrap();
    let a2 = open(&a).await.unwrap();
    assert_eq!((status(&a1), status(&a2)), (200, 200));
    let r = open(&a).await.unwrap();
    assert_eq!(status(&r), 429, "a third from one address");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "too_many_subscribers", "{body}");
    let b1 = open(&b).await.unwrap();
    assert_eq!(status(&b1), 200, "another address has room");
    assert_eq!(status(&open(&b).await.unwrap()), 429, "three in all");
    // A viewer who leaves gives their place back.
    drop(a1);
    let freed = wait_until(Duration::from_secs(60), async || matches!(open(&b).await, Ok(r) if r.status() == 200)).await;
    assert!(freed, "a closed stream still counts\n{}", server.log());
    drop((a2, b1, held));
}
