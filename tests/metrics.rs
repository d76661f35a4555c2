//! `/metrics` (#22): who may read it, the separate credential-free address, and that what the
//! service did shows in it (requests by route and status, upload bytes, transcodes, encode speed,
//! segment cache, viewers, disk).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(300);

/// The samples of a text exposition: `name{labels}` → value (comments skipped).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_for_admins_and_on_the_private_address() {
    let open_port = free_port();
    let open_addr = format!("127.0.0.1:{open_port}");
    let server = Server::start(&[("CASCADE_METRICS_BIND", &open_addr)]).await;
    let anon = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let uploader = user_with_token(&server.data_dir, "uploader", "uploader password 1", false, "upload,manage");
    let uploader = client_with_token(&uploader);

    // Who may read it on the main address.
    assert_eq!(anon.get(server.url("/metrics")).send().await.unwrap().status(), 401);
    assert_eq!(uploader.get(server.url("/metrics")).send().await.unwrap().status(), 403);

    // Some work to count: an upload, its transcode, a segment read twice (miss, then hit).
    let src = clip("metrics360.mp4", "testsrc2=size=640x360:rate=30", Some("sine=frequency=440:sample_rate=48000"), 4.0, &[]).await;
    let size = std::fs::metadata(&src).unwrap().len() as f64;
    let id = server.upload_ok(&src, "counted").await;
    let v = server.wait_final(&id, T).await;
    assert_eq!(v["status"], "ready", "{v}");
    let master = master(&server, v["playback"]["hls"].as_str().unwrap()).await;
    let media_url = sibling(v["playback"]["hls"].as_str().unwrap(), &master.variants[0].uri);
    let (playlist, _) = media_playlist(&server, &media_url).await;
    let seg = sibling(&media_url, &playlist.segments[0].uri);
    for _ in 0..2 {
        assert_eq!(anon.get(&seg).send().await.unwrap().status(), 200);
    }
    assert_eq!(anon.get(server.url("/api/videos/nosuchvideo")).send().await.unwrap().status(), 404);

    let r = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = samples(&text);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no sample {k} in\n{text}"));
    assert_eq!(get("cascade_upload_bytes_total"), size);
    assert_eq!(get(r#"cascade_transcodes_total{backend="gstreamer",outcome="ready"}"#), 1.0);
    assert_eq!(get("cascade_encode_speed_ratio_count"), 1.0);
    assert!(get("cascade_encode_speed_ratio_sum") > 0.0);
    assert_eq!(get(r#"cascade_videos{status="ready"}"#), 1.0);
    assert_eq!(get("cascade_queue_depth"), 0.0);
    assert_eq!(get("cascade_jobs_running"), 0.0);
    assert!(get("cascade_segment_cache_hits_total") >= 1.0);
    assert!(get("cascade_segment_cache_misses_total") >= 1.0);
    assert_eq!(get("cascade_active_viewers"), 1.0);
    assert!(get("cascade_disk_free_bytes") > 0.0);
    assert_eq!(get(r#"cascade_http_request_duration_seconds_count{route="/api/videos",method="POST",status="201"}"#), 1.0);
    assert_eq!(get(r#"cascade_http_request_duration_seconds_count{route="/play/{token}/segment",method="GET",status="200"}"#), 2.0);
    assert_eq!(get(r#"cascade_http_request_duration_seconds_count{route="/api/videos/{id}",method="GET",status="404"}"#), 1.0);
    assert_eq!(get(r#"cascade_http_request_duration_seconds_count{route="/metrics",method="GET",status="401"}"#), 1.0);
    // No id or token becomes a label value.
    assert!(!text.contains(&id), "a video id in the metrics");
    assert!(!text.contains(v["playback"]["token"].as_str().unwrap()), "a token in the metrics");

    // The private address serves the same without a credential, and nothing else.
    let r = anon.get(format!("http://{open_addr}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("cascade_upload_bytes_total"));
    assert_eq!(anon.get(format!("http://{open_addr}/api/videos")).send().await.unwrap().status(), 404);
    assert_eq!(anon.get(format!("http://{open_addr}/healthz")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_wait_and_are_counted() {
    // Not streamed: the upload is complete before its job is claimed from the queue.
    let server = Server::start(&[("CASCADE_STREAM_INGEST", "false")]).await;
    let src = clip("queued360.mp4", "testsrc2=size=640x360:rate=30", Some("sine=frequency=440:sample_rate=48000"), 4.0, &[]).await;
    let id = server.upload_ok(&src, "queued").await;
    assert_eq!(server.wait_final(&id, T).await["status"], "ready");
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let s = samples(&text);
    assert_eq!(s.get("cascade_queue_wait_seconds_count"), Some(&1.0), "{text}");
}
