//! Playable while encoding: EVENT playlists with their key line and a dynamic MPD while the job
//! runs, VOD/static at the end; SSE reports the way there.

mod common;

use std::time::{Duration, Instant};

use common::ll::*;
use common::*;
use futures_util::StreamExt;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playable_while_processing_then_vod() {
    // With the LL-HLS parts of uploads on (off by default).
    let server = Server::start(&[("CASCADE_UPLOAD_LOW_LATENCY", "true")]).await;
    let src = clip_720p("long720.mp4", 60.0).await;
    let id = server.upload_ok(&src, "Long clip").await;

    // Follow the SSE stream in the background.
    let events_url = server.url(&format!("/api/videos/{id}/events"));
    let sse = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let r = client.get(&events_url).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut body = r.bytes_stream();
        let mut text = String::new();
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(400);
        while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline.into(), body.next()).await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = text.find("\n\n") {
                let ev: String = text[..end].to_string();
                text = text[end + 2..].to_string();
                if let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data:")) {
                    records.push(serde_json::from_str::<Value>(data.trim()).unwrap());
                }
            }
        }
        records
    });

    let v = server
        .wait_for(&id, Duration::from_secs(300), |v| v["playable"] == true || v["status"] == "ready" || v["status"] == "failed")
        .await;
    assert_eq!(v["status"], "processing", "the video must be playable before it is ready: {v}");
    let progress_at_playable = v["progress"].as_f64().unwrap();
    assert!(progress_at_playable < 0.9, "playable only at {progress_at_playable}");
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let dash = v["playback"]["dash"].as_str().unwrap().to_string();
    let m = master(&server, &hls).await;
    assert_eq!(m.variants.len(), 3);
    let mpd_now = mpd(&server, &dash).await;
    assert_eq!(mpd_now.mpdtype.as_deref(), Some("dynamic"));
    assert!(!mpd_now.UTCTiming.is_empty(), "dynamic MPD needs a UTCTiming pointing at Cascade");
    let timing = mpd_now.UTCTiming[0].value.clone().unwrap();
    let (status, body) = server.get_text(&server.url(&timing)).await;
    assert_eq!(status, 200);
    assert!(chrono::DateTime::parse_from_rfc3339(body.trim()).is_ok(), "{body}");
    // The MPD's segments exist.
    let rep = &mpd_now.periods[0].adaptations[0].representations[0];
    let init = rep.SegmentTemplate.as_ref().unwrap().initialization.clone().unwrap();
    assert_eq!(server.client.get(sibling(&dash, &init)).send().await.unwrap().status().as_u16(), 200);
    // Segments of a video still processing are not kept in memory (a retried job rewrites them):
    // with the file moved away, the GET that just worked finds nothing.
    let seg0 = sibling(&hls, "360p/seg00000.ts");
    let seg0_file = server.data_dir.join("media").join(&id).join("hls/360p/seg00000.ts");
    assert_eq!(server.client.get(&seg0).send().await.unwrap().status().as_u16(), 200);
    std::fs::rename(&seg0_file, seg0_file.with_extension("moved")).unwrap();
    assert_eq!(server.client.get(&seg0).send().await.unwrap().status().as_u16(), 404);
    std::fs::rename(seg0_file.with_extension("moved"), &seg0_file).unwrap();

    // Low-Latency HLS of the same encode while it runs (no low-latency DASH: that is for live).
    assert!(v["playback"].get("dash_low_latency").is_none(), "{v}");
    let ll = v["playback"]["hls_low_latency"].as_str().unwrap_or_else(|| panic!("no LL-HLS while processing: {v}")).to_string();
    let ll_variant = low_latency_while_processing(&server, &ll).await;

    // While processing: every published media playlist is EVENT, has no ENDLIST, and carries the
    // key line before its first segment.
    let mut checks = 0;
    let mut saw_growth = false;
    let mut first_len = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rec = server.get_video(&id).await;
        if rec["status"] != "processing" {
            break;
        }
        assert!(Instant::now() < deadline, "still processing after 300 s: {rec}\n{}", server.log());
        for var in &m.variants {
            let (pl, text) = media_playlist(&server, &sibling(&hls, &var.uri)).await;
            if server.get_video(&id).await["status"] != "processing" {
                break;
            }
            if pl.end_list {
                // The final rewrite can land just before the record says ready.
                continue;
            }
            assert_eq!(pl.playlist_type, Some(m3u8_rs::MediaPlaylistType::Event), "{text}");
            assert!(!pl.segments.is_empty());
            let key = pl.segments[0].key.as_ref().unwrap_or_else(|| panic!("no key line: {text}"));
            assert_eq!(key.method, m3u8_rs::KeyMethod::AES128);
            assert!(key.iv.as_ref().unwrap().starts_with("0x"));
            checks += 1;
            if var.uri.starts_with("360p") {
                let n = pl.segments.len();
                if first_len.is_some_and(|f| n > f) {
                    saw_growth = true;
                }
                first_len.get_or_insert(n);
            }
        }
        // The sampling interval of this watch, which ends when the status changes.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(checks >= 3, "too few checks while processing ({checks})");
    assert!(saw_growth, "the playlists never grew while processing");

    let v = server.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}");
    for var in &m.variants {
        let (pl, text) = media_playlist(&server, &sibling(&hls, &var.uri)).await;
        assert!(pl.end_list, "{text}");
        assert_eq!(pl.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
    }
    let mpd_end = mpd(&server, &dash).await;
    assert_eq!(mpd_end.mpdtype.as_deref(), Some("static"));
    let d = mpd_end.mediaPresentationDuration.unwrap().as_secs_f64();
    assert!((d - 60.0).abs() <= 0.5, "{d}");
    let d = ffprobe_duration(&hls).await;
    assert!((d - 60.0).abs() <= 0.5, "{d}");
    // The low-latency playlists are VOD playlists of whole segments now, and the parts are gone.
    assert!(v["playback"].get("hls_low_latency").is_none(), "no LL URL once ready: {v}");
    let (status, text) = server.get_text(&ll_variant).await;
    assert_eq!(status, 200, "{text}");
    ll_parse_ended(&text, 60.0);
    let gone = server.data_dir.join("media").join(&id).join("ll/360p/seg00000.0.m4s");
    assert!(!gone.exists(), "parts are removed at the end");
    ffmpeg_decode(&ll).await.expect("the low-latency playlists decode as ordinary HLS");

    // SSE saw the whole story, in order, and ended by itself after `ready`.
    let records = tokio::time::timeout(Duration::from_secs(30), sse).await.expect("SSE stream did not end").unwrap();
    let statuses: Vec<&str> = records.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.last(), Some(&"ready"), "{statuses:?}");
    assert!(statuses.contains(&"processing"));
    let first_playable = records.iter().position(|r| r["playable"] == true).expect("an event with playable");
    assert_eq!(records[first_playable]["status"], "processing");
    let progresses: Vec<f64> = records.iter().map(|r| r["progress"].as_f64().unwrap()).collect();
    assert!(progresses.windows(2).filter(|w| w[1] < w[0]).count() <= 1, "progress went backwards: {progresses:?}");
    assert!(progresses.iter().filter(|p| **p > 0.0 && **p < 1.0).count() >= 3, "{progresses:?}");
}

/// Checks the LL-HLS of an upload being processed (`ll`: its master): parts of the startup
/// segments and of the 4 s ones, a blocking reload answered once the part it asks for exists,
/// parts that decrypt to CMAF chunks. Returns the URL of the 360p media playlist.
async fn low_latency_while_processing(server: &Server, ll: &str) -> String {
    let m = master(server, ll).await;
    assert_eq!(m.variants.len(), 3, "{m:?}");
    assert_eq!(m.alternatives.len(), 1, "the audio is a rendition of its own: {m:?}");
    let variant = sibling(ll, &m.variants.iter().find(|v| v.uri.starts_with("360p")).expect("a 360p variant").uri);
    let (status, text) = server.get_text(&variant).await;
    assert_eq!(status, 200, "{text}");
    let p = ll_parse(&text);
    assert!(!p.ended, "{text}");
    assert!((0.45..0.6).contains(&p.part_target), "parts of about half a second:\n{text}");
    // The audio's parts too (cut by Cascade at AAC frame edges): within PART-TARGET.
    let (status, audio) = server.get_text(&sibling(ll, m.alternatives[0].uri.as_deref().unwrap())).await;
    assert_eq!(status, 200, "{audio}");
    assert!(!ll_parse(&audio).segments.is_empty(), "{audio}");
    // The startup segments come first (0.5 s: one part).
    if let Some(s) = p.segments.first().filter(|s| s.uri.is_some()) {
        assert!((s.duration - 0.5).abs() < 0.05, "a startup segment of 0.5 s:\n{text}");
    }
    // Blocking reload: the hinted part, asked for, is listed once it exists (or the encode
    // finished first: then the playlist lists the segment whole).
    let (msn, part) = ll_part_number(p.hint.as_deref().expect("a preload hint while processing"));
    let (status, text) = server.get_text(&format!("{variant}?_HLS_msn={msn}&_HLS_part={part}")).await;
    assert_eq!(status, 200, "{text}");
    let q = ll_parse(&text);
    let listed = q.segments.iter().skip(msn as usize - q.skipped).take(1).any(|s| s.parts.len() > part || s.uri.is_some());
    assert!(listed, "part {msn}.{part} is listed:\n{text}");
    // A listed part is a CMAF chunk encrypted with the video's key.
    let part = q.segments.iter().flat_map(|s| &s.parts).next().unwrap_or_else(|| panic!("a part:\n{text}"));
    let r = server.client.get(sibling(&variant, &part.uri)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", part.uri);
    let data = r.bytes().await.unwrap();
    let key = server.client.get(sibling(ll, "../hls/key")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(key.len(), 16);
    let clear = aes_decrypt(&data, &key, q.iv.as_deref().expect("an IV"));
    assert_eq!(chunk_boxes(&clear), ["moof", "mdat"], "a part is a CMAF chunk");
    variant
}
