//! The main job end to end through the HTTP API, with real GStreamer pipelines on generated clips.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(300);

fn rendition_names(v: &Value) -> Vec<String> {
    v["renditions"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_transcode_and_play_720p_with_audio() {
    let server = Server::start(&[]).await;
    let src = clip_720p("main720.mp4", 12.0).await;
    let id = server.upload_ok(&src, "Main clip").await;
    let v = server.wait_final(&id, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert_eq!(v["progress"], 1.0);
    assert_eq!(v["playable"], true);
    assert_eq!(v["backend"], "gstreamer");
    assert_eq!(v["title"], "Main clip");
    assert_eq!(v["source"]["width"], 1280);
    assert_eq!(v["source"]["height"], 720);
    assert!(v["error"].is_null());
    assert_eq!(rendition_names(&v), vec!["720p", "480p", "360p"]);

    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let dash = v["playback"]["dash"].as_str().unwrap().to_string();

    // The master playlist parses and carries the attributes players choose by.
    let m = master(&server, &hls).await;
    let res: Vec<(u64, u64)> = m.variants.iter().map(|x| x.resolution.map(|r| (r.width, r.height)).unwrap()).collect();
    assert_eq!(res, vec![(1280, 720), (854, 480), (640, 360)]);
    for var in &m.variants {
        let codecs = var.codecs.as_deref().unwrap();
        assert!(codecs.starts_with("avc1.64") && codecs.ends_with(",mp4a.40.2"), "{codecs}");
        assert!(var.bandwidth > 0 && var.average_bandwidth.unwrap() > 0 && var.average_bandwidth.unwrap() <= var.bandwidth);
        assert!((var.frame_rate.unwrap() - 30.0).abs() < 0.01);
        let (pl, text) = media_playlist(&server, &sibling(&hls, &var.uri)).await;
        assert!(pl.end_list, "{text}");
        assert_eq!(pl.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
    }
    // Bandwidths are ordered like the ladder.
    assert!(m.variants[0].bandwidth > m.variants[1].bandwidth && m.variants[1].bandwidth > m.variants[2].bandwidth);

    // The MPD parses: static, one video set with three representations, one audio set.
    let mpd = mpd(&server, &dash).await;
    assert_eq!(mpd.mpdtype.as_deref(), Some("static"));
    let dur = mpd.mediaPresentationDuration.unwrap().as_secs_f64();
    assert!((dur - 12.0).abs() <= 0.5, "MPD duration {dur}");
    let sets = &mpd.periods[0].adaptations;
    assert_eq!(sets.len(), 2);
    let reps: Vec<_> =
        sets[0].representations.iter().map(|r| (r.id.clone().unwrap(), r.width.unwrap(), r.codecs.clone().unwrap())).collect();
    assert_eq!(reps.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), vec!["720p", "480p", "360p"]);
    assert!(reps.iter().all(|r| r.2.starts_with("avc1.64")));
    assert_eq!(sets[1].representations[0].codecs.as_deref(), Some("mp4a.40.2"));
    for rep in sets.iter().flat_map(|s| s.representations.iter()) {
        let bw = rep.bandwidth.unwrap();
        assert!(bw > 50_000, "bandwidth {bw} of {:?}", rep.id);
    }

    // Real decoders accept everything, from the URLs as the API gives them.
    ffmpeg_decode(&hls).await.unwrap_or_else(|e| panic!("HLS decode: {e}"));
    ffmpeg_decode(&dash).await.unwrap_or_else(|e| panic!("DASH decode: {e}"));
    let src_dur = ffprobe_duration(src.to_str().unwrap()).await;
    for url in [&hls, &dash] {
        let d = ffprobe_duration(url).await;
        assert!((d - src_dur).abs() <= 0.5, "{url}: {d} vs source {src_dur}");
    }

    // MIME types, Range and caching.
    let seg = sibling(&hls, "720p/seg00000.ts");
    let r = server.client.get(&seg).header("range", "bytes=0-99").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-type"], "video/mp2t");
    assert!(r.headers()["content-range"].to_str().unwrap().starts_with("bytes 0-99/"));
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    let r = server.client.get(&hls).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.mpegurl");
    let r = server.client.get(&dash).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/dash+xml");
    let r = server.client.get(sibling(&dash, "720p/seg00000.m4s")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "video/iso.segment");
    let r = server.client.get(sibling(&dash, "720p/init00000.mp4")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "video/mp4");
    let r = server.client.get(&seg).header("range", "bytes=999999999-").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 416);

    // Segments of a ready video are served from memory once read: the same bytes as the file,
    // whole or in ranges, even after the file is gone from the disk (or the bucket); a HEAD
    // gives the length.
    let seg_rel = "hls/720p/seg00001.ts";
    let on_disk = server.media_files(&id).await.into_iter().find(|(rel, _)| rel == seg_rel).expect("segment 1 is stored").1;
    let seg1 = sibling(&hls, "720p/seg00001.ts");
    for _ in 0..2 {
        assert_eq!(server.client.get(&seg1).send().await.unwrap().bytes().await.unwrap(), on_disk);
    }
    server.remove_media_file(&id, seg_rel).await;
    assert_eq!(server.client.get(&seg1).send().await.unwrap().bytes().await.unwrap(), on_disk);
    let r = server.client.get(&seg1).header("range", "bytes=10-").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().await.unwrap(), on_disk[10..]);
    let r = server.client.head(&seg1).send().await.unwrap();
    assert_eq!(r.headers()["content-length"].to_str().unwrap(), on_disk.len().to_string());
    let r = server.client.head(&seg1).header("range", "bytes=10-").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-length"].to_str().unwrap(), (on_disk.len() - 10).to_string());
    server.put_media_file(&id, seg_rel, &on_disk).await;

    // Listed, then deleted with every file.
    let list: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert!(list["videos"].as_array().unwrap().iter().any(|x| x["id"] == id.as_str()));
    let r = server.client.delete(server.url(&format!("/api/videos/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(!server.data_dir.join("media").join(&id).exists());
    assert!(!server.data_dir.join("uploads").join(&id).exists());
    assert!(server.media_files(&id).await.is_empty(), "media of a deleted video is still stored");
    assert!(!server.kept_files().await.iter().any(|(name, _)| name.contains(id.as_str())), "files of a deleted video are kept");
    let r = server.client.get(server.url(&format!("/api/videos/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    let r = server.client.delete(server.url(&format!("/api/videos/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(server.get_text(&hls).await.0, 404);
    // Also a segment that was in memory.
    assert_eq!(server.client.get(&seg1).send().await.unwrap().status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_shapes_become_ready() {
    let server = Server::start(&[]).await;
    let no_audio = clip("noaudio.mp4", "testsrc2=size=640x360:rate=25", None, 6.0, &[]).await;
    let portrait = clip("portrait.mp4", "testsrc2=size=360x640:rate=30", Some("sine=frequency=300"), 6.0, &[]).await;
    let tiny = clip("tiny.mp4", "testsrc2=size=160x120:rate=15", Some("sine=frequency=500"), 5.0, &[]).await;
    let ids = [
        server.upload_ok(&no_audio, "no audio").await,
        server.upload_ok(&portrait, "portrait").await,
        server.upload_ok(&tiny, "tiny").await,
    ];
    // Queued jobs show their position.
    let queued = server.get_video(&ids[2]).await;
    if queued["status"] == "queued" {
        assert!(queued["queue_position"].as_u64().unwrap() >= 1, "{queued}");
    }
    let mut results = Vec::new();
    for id in &ids {
        let v = server.wait_final(id, T).await;
        assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
        // Made by GStreamer itself: a stall that the FFmpeg fallback hides is a failure here.
        assert_eq!(v["backend"], "gstreamer", "{v}\n{}", server.log());
        let hls = v["playback"]["hls"].as_str().unwrap().to_string();
        ffmpeg_decode(&hls).await.unwrap_or_else(|e| panic!("{id}: {e}"));
        ffmpeg_decode(v["playback"]["dash"].as_str().unwrap()).await.unwrap_or_else(|e| panic!("{id}: {e}"));
        results.push(v);
    }
    // No audio: no audio codec anywhere, and no audio adaptation set.
    let v = &results[0];
    assert_eq!(rendition_names(v), vec!["360p"]);
    assert!(!v["renditions"][0]["codecs"].as_str().unwrap().contains("mp4a"));
    let m = mpd(&server, v["playback"]["dash"].as_str().unwrap()).await;
    assert_eq!(m.periods[0].adaptations.len(), 1);
    // Portrait keeps its orientation.
    let v = &results[1];
    assert_eq!(rendition_names(v), vec!["360p"]);
    assert_eq!((v["renditions"][0]["width"].as_u64(), v["renditions"][0]["height"].as_u64()), (Some(360), Some(640)));
    // Tiny: one rendition at its own size.
    let v = &results[2];
    assert_eq!(v["renditions"].as_array().unwrap().len(), 1);
    assert_eq!((v["renditions"][0]["width"].as_u64(), v["renditions"][0]["height"].as_u64()), (Some(160), Some(120)));
    let d = ffprobe_duration(v["playback"]["hls"].as_str().unwrap()).await;
    assert!((d - 5.0).abs() <= 0.5, "tiny duration {d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_with_a_code_and_limits_hold() {
    let server = Server::start(&[("CASCADE_MAX_UPLOAD_BYTES", "3000000")]).await;
    let mut random = vec![0u8; 300_000];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // What is not a media container is refused by its content, whatever its name, before any
    // demuxer runs: no record, no job, nothing left on disk.
    for (path, what) in [
        (bytes_file("empty.mp4", b""), "empty"),
        (bytes_file("random.mp4", &random), "random bytes"),
        (bytes_file("notes.mp4", b"This is a text file pretending to be a video.\n"), "text"),
    ] {
        let (status, body) = server.upload(&path, "bad").await;
        assert_eq!(status, 415, "{what}: {body}");
        assert_eq!(body["code"], "unsupported_input", "{what}: {body}");
        assert!(body["message"].as_str().unwrap().len() > 10, "{what}: {body}");
    }
    // A container that is on the list but broken fails as a job, with a code.
    let mut ids = Vec::new();
    let mut broken = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    broken.extend_from_slice(&random);
    ids.push(server.upload_ok(&bytes_file("broken.mp4", &broken), "bad").await);
    for id in &ids {
        let v = server.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(v["status"], "failed", "{v}");
        assert_eq!(v["error"]["code"], "unsupported_input", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
        assert_eq!(v["playable"], false);
        assert!(v["playback"].is_null());
    }
    let r = server.client.get(server.url("/api/videos")).send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(r["videos"].as_array().unwrap().len(), ids.len(), "refused uploads leave no record: {r}");
    // The server is still healthy.
    assert_eq!(server.get_text(&server.url("/healthz")).await.0, 200);

    // Over the limit: 413 with a JSON error, and nothing left behind — both when the request
    // says its length up front and when a chunked body only turns out too large while streaming.
    let (status, text) = raw_upload(&server.endpoint(), Some(3_500_000), 0).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    let (status, text) = raw_upload(&server.endpoint(), None, 3_000_001).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    let uploads: Vec<_> = std::fs::read_dir(server.data_dir.join("uploads")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(uploads.len(), ids.len(), "stray upload dirs: {uploads:?}");

    // A form without a file is a 400 with a JSON error; a non-multipart body too.
    let r =
        server.client.post(server.url("/api/videos")).multipart(reqwest::multipart::Form::new().text("title", "x")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "bad_request");
    let r = server.client.post(server.url("/api/videos")).body("hello").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unsupported_media_type");
    // Unknown ids are 404 JSON.
    let r = server.client.get(server.url("/api/videos/nope")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_form_without_javascript_redirects_to_watch_page() {
    let server = Server::start(&[]).await;
    let (status, page) = server.get_text(&server.url("/upload")).await;
    assert_eq!(status, 200);
    assert!(page.contains("multipart/form-data") && page.contains("name=\"file\""), "{page}");
    let src = clip("redirect.mkv", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(std::fs::read(&src).unwrap()).file_name("x.mkv"));
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", server.token).parse().unwrap());
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).default_headers(auth).build().unwrap();
    let r = client.post(server.url("/api/videos?redirect=1")).multipart(form).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("/watch/"));
}
