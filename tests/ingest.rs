//! Streaming ingest: a streamable upload is transcoded while it arrives and becomes playable
//! before the upload finishes; a moov-at-end MP4 is not streamed; an aborted upload leaves nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mkv_upload_is_playable_before_it_finishes() {
    let server = Server::start(&[]).await;
    let mkv = clip(
        "stream60.mkv",
        "testsrc2=size=1280x720:rate=30",
        Some("sine=frequency=440"),
        60.0,
        &["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    )
    .await;
    let port = server.endpoint();
    let path = mkv.clone();
    // ~20 s upload: 100 pieces, 200 ms apart.
    let started = Instant::now();
    let mut upload = tokio::spawn(async move { throttled_upload(&port, &path, "streamed", 100, Duration::from_millis(200), None).await });
    let mut playable_at = None;
    let (status, text) = loop {
        // Found by the client's own reference, as the upload page does while it is still sending.
        let by_ref: serde_json::Value =
            server.client.get(server.url("/api/videos?ref=streamed")).send().await.unwrap().json().await.unwrap();
        if let Some(v) = by_ref["videos"].as_array().unwrap().first().cloned() {
            assert_eq!(v["streamed"], true, "{v}");
            if v["playable"] == true && playable_at.is_none() {
                playable_at = Some(started.elapsed());
                assert_eq!(v["status"], "processing");
                // It plays, from the start, while the upload is still going.
                let hls = v["playback"]["hls"].as_str().unwrap().to_string();
                let (pl, text) = media_playlist(&server, &sibling(&hls, "360p/index.m3u8")).await;
                assert!(!pl.end_list && pl.segments[0].key.is_some(), "{text}");
            }
        }
        // Look again in 200 ms, or stop the moment the upload ends.
        if let Ok(done) = tokio::time::timeout(Duration::from_millis(200), &mut upload).await {
            break done.unwrap();
        }
    };
    let upload_took = started.elapsed();
    assert_eq!(status, 201, "{text}");
    let playable_at = playable_at.unwrap_or_else(|| panic!("not playable before the upload finished ({upload_took:?})\n{}", server.log()));
    assert!(playable_at + Duration::from_secs(3) < upload_took, "playable at {playable_at:?}, upload took {upload_took:?}");
    let v = find_by_title(&server, "streamed").await.unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let v = server.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert_eq!(v["upload_bytes"].as_u64().unwrap(), std::fs::metadata(&mkv).unwrap().len());
    let hls = v["playback"]["hls"].as_str().unwrap();
    ffmpeg_decode(hls).await.unwrap();
    let d = ffprobe_duration(hls).await;
    assert!((d - 60.0).abs() <= 0.5, "{d}");
    eprintln!("playable after {playable_at:?} of a {upload_took:?} upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moov_at_end_mp4_is_not_streamed_and_still_ready() {
    let server = Server::start(&[]).await;
    // ffmpeg's plain MP4 output writes moov after mdat.
    let mp4 = clip("moovend.mp4", "testsrc2=size=640x360:rate=30", Some("sine"), 8.0, &[]).await;
    let (status, text) = throttled_upload(&server.endpoint(), &mp4, "moov at end", 10, Duration::from_millis(100), None).await;
    assert_eq!(status, 201, "{text}");
    let v = find_by_title(&server, "moov at end").await.unwrap();
    assert_eq!(v["streamed"], false, "{v}");
    let v = server.wait_final(v["id"].as_str().unwrap(), Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}");
    ffmpeg_decode(v["playback"]["hls"].as_str().unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_streamed_upload_leaves_nothing() {
    let server = Server::start(&[]).await;
    let mkv = clip(
        "abort60.mkv",
        "testsrc2=size=1280x720:rate=30",
        Some("sine=frequency=500"),
        60.0,
        &["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    )
    .await;
    let port = server.endpoint();
    let path = mkv.clone();
    let mut upload =
        tokio::spawn(async move { throttled_upload(&port, &path, "aborted", 100, Duration::from_millis(150), Some(60)).await });
    // It starts streaming (the record exists) before the connection drops.
    let mut saw = false;
    loop {
        saw |= find_by_title(&server, "aborted").await.is_some_and(|v| v["streamed"] == true);
        // Look again in 200 ms, or stop the moment the upload ends.
        if let Ok(done) = tokio::time::timeout(Duration::from_millis(200), &mut upload).await {
            done.unwrap();
            break;
        }
    }
    assert!(saw, "the upload never started streaming\n{}", server.log());
    // The handler logs the refusal once it has stopped the job and removed the files; then
    // nothing may be left: no record, no upload, no media.
    let refused = wait_until(Duration::from_secs(30), async || server.log().contains("upload refused")).await;
    assert!(refused, "the aborted upload was never refused\n{}", server.log());
    let gone = wait_until(Duration::from_secs(30), async || {
        find_by_title(&server, "aborted").await.is_none()
            && std::fs::read_dir(server.data_dir.join("uploads")).unwrap().count() == 0
            && std::fs::read_dir(server.data_dir.join("media")).unwrap().count() == 0
    })
    .await;
    assert!(gone, "leftovers after an aborted upload\n{}", server.log());
    // And the server carries on.
    let small = clip("after_abort.mp4", "testsrc2=size=320x240:rate=25", Some("sine"), 3.0, &[]).await;
    let id = server.upload_ok(&small, "after").await;
    assert_eq!(server.wait_final(&id, Duration::from_secs(120)).await["status"], "ready");
}
