//! Live (#19) from the outside: ffmpeg publishes generated clips over RTMP to a real server; the
//! broadcast is playable while it runs (live HLS and DASH), becomes a normal video when the
//! publisher leaves, and every bad publisher is refused or disconnected without harm.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::live::*;
use common::ll::*;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// A one-second reconnect window: a broadcast ends a second after its publisher leaves.
const QUICK_END: (&str, &str) = ("CASCADE_LIVE_RECONNECT_S", "1");

fn extinf_sum(p: &m3u8_rs::MediaPlaylist) -> f64 {
    p.segments.iter().map(|s| s.duration as f64).sum()
}

#[tokio::test]
async fn a_broadcast_plays_live_and_ends_as_a_video() {
    let server = Server::start(&[QUICK_END]).await;
    let stream = new_stream(&server, "Morning show").await;
    let key = stream["key"].as_str().unwrap();
    assert_eq!(key.len(), 32, "128-bit key as hex: {stream}");
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(stream["rtmp_url"].as_str().unwrap().starts_with("rtmp://127.0.0.1:"), "{stream}");
    assert_eq!(stream["status"], "idle");
    let id = stream["id"].as_str().unwrap();

    let seconds = 20;
    let ffmpeg = publish(&publish_url(&stream), seconds, H264, true);
    let vid = wait_on_air(&server, id).await;

    // While the publisher runs: a live playlist (EVENT, no ENDLIST, encrypted) and a dynamic MPD.
    let v = server.get_video(&vid).await;
    assert_eq!(v["live"], true, "{v}");
    assert_eq!(v["status"], "processing");
    assert_eq!(v["title"], "Morning show");
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let m = master(&server, &hls).await;
    assert_eq!(m.variants.len(), 1, "one rung for a 360p source: {m:?}");
    let rung = sibling(&hls, &m.variants[0].uri);
    let (p, text) = media_playlist(&server, &rung).await;
    assert!(!p.end_list, "no ENDLIST while live:\n{text}");
    assert_eq!(p.playlist_type, Some(m3u8_rs::MediaPlaylistType::Event), "{text}");
    assert!(text.contains("#EXT-X-KEY:METHOD=AES-128"), "{text}");
    assert!(p.target_duration <= 3, "2 s live segments: {text}");
    let seg = sibling(&rung, &p.segments[0].uri);
    let r = server.client.get(&seg).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!is_clear_ts(&r.bytes().await.unwrap()), "live segments are encrypted");
    let dash = v["playback"]["dash"].as_str().unwrap().to_string();
    let live_mpd = mpd(&server, &dash).await;
    assert_eq!(live_mpd.mpdtype.as_deref(), Some("dynamic"));
    assert!(live_mpd.UTCTiming.iter().any(|u| u.value.as_deref().is_some_and(|v| v.ends_with("/api/time"))), "{live_mpd:?}");
    assert_eq!(get_stream(&server, id).await["video_id"].as_str(), Some(vid.as_str()));
    // Metrics count the broadcast on air and the bytes it sends.
    // The stream shows the encoder's speed (× real time) while on air.
    assert!(
        wait_until(T, async || get_stream(&server, id).await["encoder_speed"].as_f64().is_some_and(|s| s > 0.0)).await,
        "no encoder speed: {}",
        get_stream(&server, id).await
    );
    let counted = metrics(&server).await;
    assert!(counted.lines().any(|l| l == "cascade_live_streams 1"), "{counted}");
    assert!(metric(&counted, "cascade_live_ingest_bytes_total") > 10_000.0, "{counted}");
    let (ok, err) = exited(ffmpeg, T).await;
    assert!(ok, "the publisher ran to its end: {err}");

    // The publisher left: the same record finishes as a video, with no second transcode.
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    let (p, text) = media_playlist(&server, &sibling(v["playback"]["hls"].as_str().unwrap(), &m.variants[0].uri)).await;
    assert!(p.end_list, "{text}");
    assert_eq!(p.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
    let total = extinf_sum(&p);
    assert!((total - seconds as f64).abs() <= 0.5, "published {seconds} s, recorded {total} s:\n{text}");
    // 2 s segments of two 1 s GOPs (`[live] keyframe_seconds`): a segment is listed one GOP,
    // not one segment, after it ends.
    let last = p.segments.len() - 1;
    assert!(p.segments[..last].iter().all(|s| (s.duration - 2.0).abs() < 0.05), "2 s segments:\n{text}");
    let keys = keyframe_times(v["playback"]["hls"].as_str().unwrap()).await;
    assert!(keys.len() >= seconds as usize - 1, "a keyframe a second: {keys:?}");
    assert!(keys.windows(2).all(|w| (w[1] - w[0] - 1.0).abs() < 0.05), "a keyframe every second: {keys:?}");
    let vod_mpd = mpd(&server, v["playback"]["dash"].as_str().unwrap()).await;
    assert_eq!(vod_mpd.mpdtype.as_deref(), Some("static"));
    assert!((v["source"]["duration_s"].as_f64().unwrap() - seconds as f64).abs() <= 0.5, "{v}");
    assert!(v["image_files"].as_array().unwrap().iter().any(|i| i == "poster.jpg"), "{v}");
    ffmpeg_decode(v["playback"]["hls"].as_str().unwrap()).await.expect("the recording decodes");
    // The stream goes idle once the video is recorded.
    assert!(wait_until(T, async || get_stream(&server, id).await["status"] == "idle").await);
    let s = get_stream(&server, id).await;
    assert_eq!(s["video_id"].as_str(), Some(vid.as_str()), "{s}");
    assert!(s.get("encoder_speed").is_none(), "no speed off air: {s}");
    assert!(metrics(&server).await.lines().any(|l| l == "cascade_live_streams 0"));
}

async fn metrics(server: &Server) -> String {
    server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of a metric line without labels.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn wrong_keys_second_publishers_and_deleted_streams() {
    let server = Server::start(&[QUICK_END]).await;
    let stream = new_stream(&server, "Show").await;
    let id = stream["id"].as_str().unwrap();
    let url = publish_url(&stream);

    // A wrong key is refused at publish: ffmpeg fails, nothing is recorded.
    let wrong = format!("{}/{}", stream["rtmp_url"].as_str().unwrap(), "0".repeat(32));
    let (ok, err) = exited(publish(&wrong, 5, H264, true), T).await;
    assert!(!ok, "a wrong key must be refused: {err}");
    let videos: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert_eq!(videos["videos"].as_array().map(Vec::len), Some(0), "{videos}");
    assert_eq!(get_stream(&server, id).await["status"], "idle");

    // A rotated key: the old one stops working at once.
    let r = server.client.post(server.url(&format!("/api/live/{id}/key"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let rotated: Value = r.json().await.unwrap();
    assert_ne!(rotated["key"], stream["key"]);
    let (ok, _) = exited(publish(&url, 5, H264, true), T).await;
    assert!(!ok, "the old key must be refused after a rotation");
    let url = publish_url(&rotated);

    // A second publisher on a stream that is live is refused; the first goes on.
    let first = publish(&url, 120, H264, true);
    let vid = wait_on_air(&server, id).await;
    let (ok, err) = exited(publish(&url, 5, H264, true), T).await;
    assert!(!ok, "a second publisher must be refused: {err}");
    let s = get_stream(&server, id).await;
    assert_eq!((s["status"].as_str(), s["video_id"].as_str()), (Some("live"), Some(vid.as_str())), "{s}");

    // Deleting the stream ends the broadcast: the publisher is disconnected, the video is kept.
    let r = server.client.delete(server.url(&format!("/api/live/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (ok, _) = exited(first, T).await;
    assert!(!ok, "the publisher of a deleted stream is disconnected");
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert_eq!(server.client.get(server.url(&format!("/api/live/{id}"))).send().await.unwrap().status().as_u16(), 404);
}

#[tokio::test]
async fn bad_media_fails_the_broadcast_with_a_code() {
    let server = Server::start(&[QUICK_END]).await;
    // Sorenson H.263 (FLV codec 2): not a codec the live ladder takes.
    let stream = new_stream(&server, "Old encoder").await;
    let (ok, _) = exited(publish(&publish_url(&stream), 10, &["-c:v", "flv1"], true), T).await;
    assert!(!ok, "the publisher is disconnected");
    let vid = get_stream(&server, stream["id"].as_str().unwrap()).await["video_id"].as_str().expect("a video was recorded").to_string();
    let v = server.wait_final(&vid, T).await;
    assert_eq!((v["status"].as_str(), v["error"]["code"].as_str()), (Some("failed"), Some("unsupported_codec")), "{v}");
    let sid = stream["id"].as_str().unwrap();
    assert!(
        wait_until(T, async || get_stream(&server, sid).await["last_error"]["code"] == "unsupported_codec").await,
        "the stream says why: {}",
        get_stream(&server, sid).await
    );

    // Sound without a picture.
    let stream = new_stream(&server, "Radio").await;
    let url = publish_url(&stream);
    let args = [
        "-nostdin",
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "15",
        "-c:a",
        "aac",
        "-f",
        "flv",
        &url,
    ];
    let child = Command::new("ffmpeg").args(args).stdin(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let (ok, _) = exited(child, T).await;
    assert!(!ok, "the publisher is disconnected");
    let vid = get_stream(&server, stream["id"].as_str().unwrap()).await["video_id"].as_str().expect("a video was recorded").to_string();
    let v = server.wait_final(&vid, T).await;
    assert_eq!((v["status"].as_str(), v["error"]["code"].as_str()), (Some("failed"), Some("no_video")), "{v}");
    assert_eq!(server.raw_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn garbage_and_floods_are_cut_off() {
    let server = Server::start(&[QUICK_END, ("CASCADE_LIVE_MAX_KBPS", "300")]).await;
    let stream = new_stream(&server, "Flood").await;
    let rtmp = stream["rtmp_url"].as_str().unwrap().trim_start_matches("rtmp://").trim_end_matches("/live").to_string();

    // Garbage after a valid handshake: the connection is closed as a protocol error.
    let mut s = tokio::net::TcpStream::connect(&rtmp).await.unwrap();
    let mut c1 = vec![0u8; 1537];
    c1[0] = 3;
    s.write_all(&c1).await.unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut s0s1s2)).await.expect("handshake answered").unwrap();
    s.write_all(&s0s1s2[1..1537]).await.unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 0xc0).collect();
    let _ = s.write_all(&garbage).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server closes a connection that sends garbage");
    assert!(
        wait_until(Duration::from_secs(10), async || server.log().contains("RTMP protocol error")).await,
        "the log says why: {}",
        server.log()
    );

    // A publisher over CASCADE_LIVE_MAX_KBPS (300) is disconnected; the server serves on.
    let (ok, _) = exited(
        publish(&publish_url(&stream), 30, &["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "3M", "-pix_fmt", "yuv420p"], true),
        T,
    )
    .await;
    assert!(!ok, "a flooding publisher is disconnected");
    assert!(server.log().contains("bit rate over CASCADE_LIVE_MAX_KBPS"), "{}", server.log());
    assert!(wait_until(T, async || get_stream(&server, stream["id"].as_str().unwrap()).await["status"] == "idle").await);
    assert_eq!(server.raw_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn streams_have_the_access_rules_of_videos() {
    let server = Server::start(&[QUICK_END]).await;
    let other = client_with_token(&user_with_token(&server.data_dir, "other", "other password 1", false, "upload,manage"));
    let anon = reqwest::Client::new();
    let public = new_stream(&server, "Public").await;
    let pid = public["id"].as_str().unwrap();
    let r = server.client.post(server.url("/api/live")).json(&json!({ "title": "Secret", "visibility": "private" })).send().await.unwrap();
    let private: Value = r.json().await.unwrap();
    let qid = private["id"].as_str().unwrap();

    // Others see a public stream without its key, and no private one.
    let seen: Value = anon.get(server.url(&format!("/api/live/{pid}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["title"], "Public");
    assert!(seen.get("key").is_none(), "the key is the owner's: {seen}");
    assert_eq!(anon.get(server.url(&format!("/api/live/{qid}"))).send().await.unwrap().status().as_u16(), 404);
    assert_eq!(other.get(server.url(&format!("/api/live/{qid}"))).send().await.unwrap().status().as_u16(), 404);
    assert_eq!(anon.get(server.url("/api/live")).send().await.unwrap().status().as_u16(), 401);
    let theirs: Value = other.get(server.url("/api/live")).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs.as_array().map(Vec::len), Some(0), "{theirs}");

    // Only the owner (or an admin) changes, rotates or deletes.
    let r = other.patch(server.url(&format!("/api/live/{pid}"))).json(&json!({ "title": "Mine" })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(other.post(server.url(&format!("/api/live/{pid}/key"))).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(other.delete(server.url(&format!("/api/live/{pid}"))).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(anon.post(server.url("/api/live")).json(&json!({})).send().await.unwrap().status().as_u16(), 401);
    let r = server.client.patch(server.url(&format!("/api/live/{pid}"))).json(&json!({ "title": "  " })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = server.client.post(server.url("/api/live")).json(&json!({ "title": "x", "key": "mine" })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "unknown fields are refused");
    // The key is its owner's alone: an admin sees the stream, not its key.
    let theirs: Value = other.post(server.url("/api/live")).json(&json!({ "title": "Theirs" })).send().await.unwrap().json().await.unwrap();
    assert!(theirs["key"].is_string(), "{theirs}");
    let seen: Value =
        server.client.get(server.url(&format!("/api/live/{}", theirs["id"].as_str().unwrap()))).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["title"], "Theirs");
    assert!(seen.get("key").is_none(), "an admin does not see another user's key: {seen}");
    let r = server.client.patch(server.url(&format!("/api/live/{pid}"))).json(&json!({ "title": "Renamed" })).send().await.unwrap();
    let renamed: Value = r.json().await.unwrap();
    assert_eq!((renamed["title"].as_str(), renamed["key"].as_str()), (Some("Renamed"), public["key"].as_str()));
}

#[tokio::test]
async fn a_publisher_that_comes_back_continues_the_same_video() {
    let server = Server::start(&[("CASCADE_LIVE_RECONNECT_S", "60")]).await;
    let stream = new_stream(&server, "Flaky uplink").await;
    let id = stream["id"].as_str().unwrap();
    let url = publish_url(&stream);
    let (ok, err) = exited(publish(&url, 8, H264, true), T).await;
    assert!(ok, "{err}");
    // The publisher left: the broadcast waits for it, its video still live.
    assert!(wait_until(T, async || get_stream(&server, id).await["status"] == "reconnecting").await, "{}", server.log());
    let vid = get_stream(&server, id).await["video_id"].as_str().unwrap().to_string();
    assert_eq!(server.get_video(&vid).await["status"], "processing");

    // It comes back with the same key: the same video goes on.
    let second = publish(&url, 8, H264, true);
    assert!(wait_until(T, async || get_stream(&server, id).await["status"] == "live").await);
    assert_eq!(get_stream(&server, id).await["video_id"].as_str(), Some(vid.as_str()), "one video for the broadcast");
    let (ok, err) = exited(second, T).await;
    assert!(ok, "{err}");
    assert!(wait_until(T, async || get_stream(&server, id).await["status"] == "reconnecting").await);

    // Deleting the stream ends the broadcast waiting in its window.
    assert_eq!(server.client.delete(server.url(&format!("/api/live/{id}"))).send().await.unwrap().status().as_u16(), 204);
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    let videos: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert_eq!(videos["videos"].as_array().map(Vec::len), Some(1), "{videos}");
    let hls = v["playback"]["hls"].as_str().unwrap();
    let m = master(&server, hls).await;
    let (p, text) = media_playlist(&server, &sibling(hls, &m.variants[0].uri)).await;
    let total = extinf_sum(&p);
    assert!((total - 16.0).abs() <= 0.5, "two publishers of 8 s each, recorded {total} s:\n{text}");
    ffmpeg_decode(hls).await.expect("the recording plays across the gap");
}

/// A UDP port nobody uses now (the SRT listener's).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// ffmpeg publishing a generated clip as MPEG-TS over SRT in real time (H.264 and AAC).
fn publish_srt(url: &str, seconds: u32) -> Child {
    publish_srt_with(url, seconds, &["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"], &["-c:a", "aac", "-b:a", "96k"])
}

/// `publish_srt` with the given video and audio encoder arguments.
fn publish_srt_with(url: &str, seconds: u32, video: &[&str], audio: &[&str]) -> Child {
    let secs = seconds.to_string();
    let args = [
        "-nostdin",
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &secs,
    ];
    let tail = ["-g", "60", "-pix_fmt", "yuv420p", "-f", "mpegts", url];
    Command::new("ffmpeg")
        .args(args)
        .args(video)
        .args(audio)
        .args(tail)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A server with an SRT listener on a free UDP port (and `extra` settings), and a new stream on it.
async fn srt_server(title: &str, extra: &[(&str, &str)]) -> (Server, Value, u16) {
    let port = free_udp_port();
    let bind = format!("127.0.0.1:{port}");
    let mut env = vec![QUICK_END, ("CASCADE_SRT_BIND", bind.as_str())];
    env.extend_from_slice(extra);
    let server = Server::start(&env).await;
    let stream = new_stream(&server, title).await;
    (server, stream, port)
}

#[tokio::test]
async fn srt_callers_are_checked_in_the_handshake_and_broadcast() {
    let (server, stream, port) = srt_server("Field camera", &[]).await;
    let id = stream["id"].as_str().unwrap();
    let url = stream["srt_url"].as_str().expect("srt_url for the owner").to_string();
    assert_eq!(url, format!("srt://127.0.0.1:{port}?streamid={}", stream["key"].as_str().unwrap()));

    // A wrong streamid is rejected in the handshake: nothing is recorded.
    let (ok, _) = exited(publish_srt(&format!("srt://127.0.0.1:{port}?streamid={}", "0".repeat(32)), 5), T).await;
    assert!(!ok, "a wrong key must be rejected");
    assert!(server.log().contains("SRT caller rejected"), "{}", server.log());
    let videos: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert_eq!(videos["videos"].as_array().map(Vec::len), Some(0), "{videos}");

    // The right one is live, then a video.
    let seconds = 12;
    let ffmpeg = publish_srt(&url, seconds);
    let vid = wait_on_air(&server, id).await;
    let v = server.get_video(&vid).await;
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let m = master(&server, &hls).await;
    let (p, text) = media_playlist(&server, &sibling(&hls, &m.variants[0].uri)).await;
    assert!(!p.end_list && text.contains("#EXT-X-KEY:METHOD=AES-128"), "{text}");
    // A second caller while one is on air is rejected; the first goes on.
    let (ok, _) = exited(publish_srt(&url, 3), T).await;
    assert!(!ok, "a second SRT caller must be rejected");
    assert!(server.log().contains("one SRT publisher at a time"), "{}", server.log());
    let (ok, err) = exited(ffmpeg, T).await;
    assert!(ok, "the first publisher ran to its end: {err}");
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    let (p, text) = media_playlist(&server, &sibling(v["playback"]["hls"].as_str().unwrap(), &m.variants[0].uri)).await;
    assert!(p.end_list, "{text}");
    let total = extinf_sum(&p);
    assert!((total - seconds as f64).abs() <= 0.5, "published {seconds} s, recorded {total} s:\n{text}");
    ffmpeg_decode(v["playback"]["hls"].as_str().unwrap()).await.expect("the recording decodes");
    assert!(wait_until(T, async || get_stream(&server, id).await["status"] == "idle").await);
}

#[tokio::test]
async fn srt_takes_hevc_with_opus() {
    let (server, stream, _) = srt_server("HEVC camera", &[]).await;
    let url = stream["srt_url"].as_str().unwrap().to_string();
    let seconds = 8;
    let hevc = ["-c:v", "libx265", "-preset", "ultrafast", "-tune", "zerolatency", "-x265-params", "log-level=error"];
    let ffmpeg = publish_srt_with(&url, seconds, &hevc, &["-c:a", "libopus", "-b:a", "96k"]);
    let vid = wait_on_air(&server, stream["id"].as_str().unwrap()).await;
    let v = server.get_video(&vid).await;
    assert_eq!(
        (v["source"]["video_codec"].as_str(), v["source"]["audio_codec"].as_str()),
        (Some("video/x-h265"), Some("audio/x-opus")),
        "{v}"
    );
    let (ok, err) = exited(ffmpeg, T).await;
    assert!(ok, "the publisher ran to its end: {err}");
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    let hls = v["playback"]["hls"].as_str().unwrap();
    let m = master(&server, hls).await;
    let (p, text) = media_playlist(&server, &sibling(hls, &m.variants[0].uri)).await;
    let total = extinf_sum(&p);
    assert!((total - seconds as f64).abs() <= 0.5, "published {seconds} s, recorded {total} s:\n{text}");
    let audio =
        run("ffprobe", &["-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_name", "-of", "csv=p=0", hls], T).await;
    let codecs: Vec<&str> = audio.1.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert!(audio.0 && !codecs.is_empty() && codecs.iter().all(|c| *c == "aac"), "Opus in, AAC out: {audio:?}");
    ffmpeg_decode(hls).await.expect("the recording decodes");
}

#[tokio::test]
async fn srt_floods_and_silent_callers_are_cut_off() {
    let (server, stream, _) = srt_server("SRT field camera", &[("CASCADE_LIVE_MAX_KBPS", "6000")]).await;
    let id = stream["id"].as_str().unwrap();
    let url = stream["srt_url"].as_str().unwrap().to_string();

    // A caller over CASCADE_LIVE_MAX_KBPS (6000; this one sends 25 Mb/s) is disconnected and its
    // broadcast ends; the server serves on.
    let mut flood = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "30"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "25M", "-minrate", "25M", "-maxrate", "25M", "-bufsize", "2M"])
        .args(["-x264-params", "nal-hrd=cbr:filler=1", "-pix_fmt", "yuv420p", "-f", "mpegts", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let cut = wait_until(T, async || server.log().contains("bit rate over CASCADE_LIVE_MAX_KBPS")).await;
    assert!(cut, "a flooding SRT caller is disconnected:\n{}", server.log());
    let _ = flood.kill().await;
    let vid = get_stream(&server, id).await["video_id"].as_str().expect("the flood went on air").to_string();
    let v = server.wait_final(&vid, T).await;
    assert_ne!(v["status"], "processing", "{v}");
    assert!(wait_until(T, async || get_stream(&server, id).await["status"] == "idle").await);
    assert_eq!(server.raw_get("/healthz").await.0, 200);

    // A caller that stops sending (its process frozen) is disconnected, and its broadcast ends as a
    // video; the listener takes the next caller.
    let frozen = publish_srt(&url, 60);
    let vid = wait_on_air(&server, id).await;
    let pid = frozen.id().expect("ffmpeg runs").to_string();
    let stopped = std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(stopped.success());
    let v = server.wait_final(&vid, T).await;
    let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    let log = server.log();
    assert!(log.contains("SRT caller left") || log.contains("silent for 10 s"), "the log says why:\n{log}");
    assert!(wait_until(T, async || get_stream(&server, id).await["status"] == "idle").await);
    let next = publish_srt(&url, 4);
    let again = wait_on_air(&server, id).await;
    assert_ne!(again, vid, "a new broadcast");
    let (ok, err) = exited(next, T).await;
    assert!(ok, "the next caller is served: {err}");
}

#[tokio::test]
async fn a_broadcast_ends_as_a_video_at_the_longest_allowed() {
    let server = Server::start(&[QUICK_END, ("CASCADE_LIVE_MAX_S", "10")]).await;
    let stream = new_stream(&server, "Endless").await;
    let id = stream["id"].as_str().unwrap();
    let (ok, _) = exited(publish(&publish_url(&stream), 60, H264, true), T).await;
    assert!(!ok, "the publisher is disconnected at CASCADE_LIVE_MAX_S");
    let vid = get_stream(&server, id).await["video_id"].as_str().unwrap().to_string();
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "the broadcast is kept as a video: {v}\n{}", server.log());
    let d = v["source"]["duration_s"].as_f64().unwrap();
    assert!((9.0..=12.0).contains(&d), "about 10 s recorded, not the 60 s the publisher meant to send: {d}");
}

/// A ladder whose tallest rung cannot keep up: the 720p rung of the shipped ladder with x264
/// options that make it encode a few frames a second (exhaustive motion search over 16
/// references), where a live 720p30 broadcast needs 30. The other rungs are the shipped ones.
fn ladder_with_a_slow_top_rung(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(repo().join("pipelines/ladder.toml")).unwrap();
    let anchor = "name = \"720p\"\nheight = 720\nbitrate_kbps = 2800\nx264_threads = 1\n";
    assert!(shipped.contains(anchor), "the 720p rung of pipelines/ladder.toml changed; update this test");
    let slow = shipped.replacen(anchor, &format!("{anchor}x264_options = \"me=tesa:merange=64:ref=16:subme=11:trellis=2\"\n"), 1);
    let path = dir.join("slow-top-rung.toml");
    std::fs::write(&path, slow).unwrap();
    path
}

/// The video representations of an MPD, by id.
fn video_reps(m: &dash_mpd::MPD) -> Vec<String> {
    m.periods
        .iter()
        .flat_map(|p| &p.adaptations)
        .filter(|a| a.representations.iter().any(|r| r.width.is_some()))
        .flat_map(|a| a.representations.iter().filter_map(|r| r.id.clone()))
        .collect()
}

#[tokio::test]
async fn a_ladder_that_cannot_keep_up_drops_its_top_rung() {
    let dir = tempfile::tempdir().unwrap();
    let ladder = ladder_with_a_slow_top_rung(dir.path());
    let server = Server::start(&[QUICK_END, ("CASCADE_LADDER", ladder.to_str().unwrap())]).await;
    let stream = new_stream(&server, "Too much for this machine").await;
    let id = stream["id"].as_str().unwrap();
    let seconds = 45;
    let ffmpeg = publish_sized(&publish_url(&stream), "1280x720", seconds, H264, true);
    let t0 = std::time::Instant::now();

    // The 720p rung holds the ladder back: after 10 s behind, it is dropped, and the stream
    // says so while the broadcast goes on.
    let dropped =
        wait_until(T, async || get_stream(&server, id).await["dropped_renditions"].as_array().is_some_and(|d| !d.is_empty())).await;
    let s = get_stream(&server, id).await;
    assert!(dropped, "no rung dropped: {s}\n{}", server.log());
    println!("a rung dropped {:.1} s after the publisher started: {}", t0.elapsed().as_secs_f64(), s["dropped_renditions"]);
    let dropped: Vec<String> = serde_json::from_value(s["dropped_renditions"].clone()).unwrap();
    assert_eq!(dropped[0], "720p", "the tallest rung goes first: {s}");
    assert_eq!(s["status"], "live", "the publisher stays on air: {s}");
    let kept: Vec<String> = ["720p", "480p", "360p"].into_iter().map(String::from).filter(|r| !dropped.contains(r)).collect();
    assert!(!kept.is_empty(), "the last rung is never dropped: {s}");
    let vid = s["video_id"].as_str().unwrap().to_string();
    let names = |v: &Value| v["renditions"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();

    // While live, the manifests list the other rungs only, and the dropped rung's playlist is gone
    // (a player on it switches to another rung).
    // The manifests are rewritten before the drop is reported; the video's record is updated by
    // another task than the stream's, so it is waited for.
    let current = async || {
        let v = server.get_video(&vid).await;
        (v["playable"] == true && names(&v) == kept).then_some(v)
    };
    assert!(wait_until(T, async || current().await.is_some()).await, "{}\n{}", server.get_video(&vid).await, server.log());
    let v = server.get_video(&vid).await;
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let m = master(&server, &hls).await;
    let listed: Vec<String> = m.variants.iter().map(|x| x.uri.split('/').next().unwrap().to_string()).collect();
    assert_eq!(listed, kept, "{m:?}");
    let gone = server.client.get(sibling(&hls, "720p/index.m3u8")).send().await.unwrap();
    assert_eq!(gone.status().as_u16(), 404, "the dropped rung's playlist is still served");
    let live_mpd = mpd(&server, v["playback"]["dash"].as_str().unwrap()).await;
    assert_eq!(live_mpd.mpdtype.as_deref(), Some("dynamic"));
    assert_eq!(video_reps(&live_mpd), kept, "{live_mpd:?}");

    let (ok, err) = exited(ffmpeg, T).await;
    assert!(ok, "the publisher ran to its end: {err}\n{}", server.log());
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert_eq!(names(&v), kept, "{v}");
    let m = master(&server, &hls).await;
    assert_eq!(m.variants.len(), kept.len(), "{m:?}");
    for variant in &m.variants {
        let (p, text) = media_playlist(&server, &sibling(&hls, &variant.uri)).await;
        assert!(p.end_list, "{text}");
        let total = extinf_sum(&p);
        assert!(
            (total - seconds as f64).abs() <= 0.5,
            "{}: published {seconds} s, recorded {total} s:\n{text}\n{}",
            variant.uri,
            server.log()
        );
    }
    let vod_mpd = mpd(&server, v["playback"]["dash"].as_str().unwrap()).await;
    assert_eq!(vod_mpd.mpdtype.as_deref(), Some("static"));
    assert_eq!(video_reps(&vod_mpd), kept);
    assert_eq!(
        server.client.get(sibling(&hls, "720p/seg00000.ts")).send().await.unwrap().status().as_u16(),
        404,
        "the dropped rung's files are removed"
    );
    ffmpeg_decode(&hls).await.expect("the recording plays");
    assert_eq!(get_stream(&server, id).await["dropped_renditions"], json!(dropped), "the record keeps what was dropped");
}

#[tokio::test]
async fn stream_settings_are_checked_and_shape_the_next_broadcast() {
    // The server's window is an hour: a broadcast that ends within the test's time used the
    // stream's own window.
    let server = Server::start(&[("CASCADE_LIVE_RECONNECT_S", "3600")]).await;
    let create = async |body: Value| server.client.post(server.url("/api/live")).json(&body).send().await.unwrap();
    let count =
        async || server.client.get(server.url("/api/live")).send().await.unwrap().json::<Value>().await.unwrap().as_array().unwrap().len();
    for bad in [
        json!({ "reconnect_window_s": 3601 }),
        json!({ "max_height": 100 }),
        json!({ "max_height": 4321 }),
        json!({ "reconnect_window_s": -1 }),
    ] {
        let r = create(bad.clone()).await;
        assert_eq!(r.status().as_u16(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "bad_request", "{bad}: {body}");
    }
    assert_eq!(count().await, 0, "nothing created by a refused request");

    let plain = new_stream(&server, "Defaults").await;
    assert_eq!(plain["reconnect_window_s"], 3600, "the server's window: {plain}");
    assert!(plain["max_height"].is_null(), "{plain}");
    let r = create(json!({ "title": "Small", "reconnect_window_s": 1, "max_height": 480 })).await;
    assert_eq!(r.status().as_u16(), 201);
    let stream: Value = r.json().await.unwrap();
    assert_eq!((stream["reconnect_window_s"].as_u64(), stream["max_height"].as_u64()), (Some(1), Some(480)), "{stream}");
    let id = stream["id"].as_str().unwrap();
    let patch = async |body: Value| server.client.patch(server.url(&format!("/api/live/{id}"))).json(&body).send().await.unwrap();
    assert_eq!(patch(json!({ "reconnect_window_s": 7200 })).await.status().as_u16(), 400);
    assert_eq!(patch(json!({ "max_height": 0 })).await.json::<Value>().await.unwrap()["max_height"], Value::Null, "0 removes the cap");
    let s: Value = patch(json!({ "max_height": 480 })).await.json().await.unwrap();
    assert_eq!((s["reconnect_window_s"].as_u64(), s["max_height"].as_u64()), (Some(1), Some(480)), "a refused PATCH changes nothing: {s}");

    // A 720p publisher on a stream capped at 480p gets 480p and 360p; it ends one second after
    // its publisher leaves.
    let seconds = 8;
    let ffmpeg = publish_sized(&publish_url(&stream), "1280x720", seconds, H264, true);
    let vid = wait_on_air(&server, id).await;
    let names = |v: &Value| v["renditions"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let v = server.get_video(&vid).await;
    assert_eq!(names(&v), ["480p", "360p"], "{v}");
    let m = master(&server, v["playback"]["hls"].as_str().unwrap()).await;
    assert_eq!(m.variants.len(), 2, "{m:?}");
    let (ok, err) = exited(ffmpeg, T).await;
    assert!(ok, "the publisher ran to its end: {err}");
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert_eq!(names(&v), ["480p", "360p"], "{v}");
    assert!(server.log().contains("window_s=1"), "the stream's window was used:\n{}", server.log());
}

/// The payload of the first box of `path` (types, outermost first) inside `data`.
fn mp4_box<'a>(data: &'a [u8], path: &[&str]) -> &'a [u8] {
    let mut at = 0;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        assert!(size >= 8 && at + size <= data.len(), "a box of {size} bytes at {at}");
        if &data[at + 4..at + 8] == path[0].as_bytes() {
            let inner = &data[at + 8..at + size];
            return if path.len() == 1 { inner } else { mp4_box(inner, &path[1..]) };
        }
        at += size;
    }
    panic!("no {} box", path[0]);
}

/// The media timescale of the first track of an init segment.
fn mdhd_timescale(init: &[u8]) -> u32 {
    let b = mp4_box(init, &["moov", "trak", "mdia", "mdhd"]);
    let at = if b[0] == 1 { 20 } else { 12 };
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The base media decode time of a segment's first fragment.
fn tfdt(seg: &[u8]) -> u64 {
    let b = mp4_box(seg, &["moof", "traf", "tfdt"]);
    if b[0] == 1 {
        u64::from_be_bytes(b[4..12].try_into().unwrap())
    } else {
        u64::from(u32::from_be_bytes(b[4..8].try_into().unwrap()))
    }
}

async fn get_bytes(server: &Server, url: &str) -> (u16, bytes::Bytes) {
    let r = server.client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap())
}

#[tokio::test]
async fn low_latency_hls_parts_blocking_reload_and_delta_updates() {
    let server = Server::start(&[]).await;
    let r = server.client.post(server.url("/api/live")).json(&json!({ "title": "LL", "reconnect_window_s": 60 })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let stream: Value = r.json().await.unwrap();
    assert_eq!(stream["low_latency"], true, "low latency is on by default: {stream}");
    let id = stream["id"].as_str().unwrap();
    let ffmpeg = publish(&publish_url(&stream), 24, H264, true);
    let vid = wait_on_air(&server, id).await;
    let v = server.get_video(&vid).await;
    let ll = v["playback"]["hls_low_latency"].as_str().unwrap_or_else(|| panic!("no low-latency URL on air: {v}")).to_string();
    let m = master(&server, &ll).await;
    assert_eq!(m.variants.len(), 1, "{m:?}");
    assert_eq!(m.alternatives.len(), 1, "the audio is a rendition of its own: {m:?}");
    assert_eq!(m.variants[0].audio.as_deref(), Some(m.alternatives[0].group_id.as_str()));
    let video = sibling(&ll, &m.variants[0].uri);
    let audio = sibling(&ll, m.alternatives[0].uri.as_deref().unwrap());

    // The playlists, read strictly: parts with a hint at the next, dates, reports of the other.
    let (status, text) = server.get_text(&video).await;
    assert_eq!(status, 200, "{text}");
    let p = ll_parse(&text);
    assert!(!p.ended && p.part_target > 0.3 && p.part_target < 0.4, "parts of a third of a second:\n{text}");
    // Parts of a third of a GOP: every third one starts with a keyframe (1 s GOPs).
    for s in &p.segments {
        let flags: Vec<bool> = s.parts.iter().map(|x| x.independent).collect();
        assert!(flags.iter().enumerate().all(|(k, i)| *i == (k % 3 == 0)), "INDEPENDENT on parts 0 and 3 of each segment:\n{text}");
    }
    assert_eq!(p.reports.len(), 1, "{text}");
    assert!(p.reports[0].0.ends_with("audio.m3u8"), "{text}");
    let (status, text) = server.get_text(&audio).await;
    assert_eq!(status, 200, "{text}");
    ll_parse(&text);

    // Blocking reload: asked for the part its hint names, the playlist comes once it lists it.
    let (msn, part) = ll_part_number(p.hint.as_deref().unwrap());
    let (status, text) = server.get_text(&format!("{video}?_HLS_msn={msn}&_HLS_part={part}")).await;
    assert_eq!(status, 200, "{text}");
    let q = ll_parse(&text);
    let listed = |q: &LlPlaylist, msn: u64, part: usize| {
        q.segments.iter().flat_map(|s| &s.parts).any(|x| ll_part_number(&x.uri) == (msn, part))
            || q.segments.iter().any(|s| s.uri.as_deref().is_some_and(|u| u.ends_with(&format!("seg{:05}.m4s", msn + 1))))
    };
    assert!(listed(&q, msn, part), "part {msn}.{part} is listed:\n{text}");
    // The part its new hint names is held until written, then served whole.
    let hinted = sibling(&video, q.hint.as_deref().unwrap());
    let (status, data) = get_bytes(&server, &hinted).await;
    assert_eq!(status, 200, "{hinted}");
    let (_, key) = get_bytes(&server, &sibling(&ll, "../hls/key")).await;
    assert_eq!(key.len(), 16);
    let iv = q.iv.clone().expect("an IV");
    let clear = aes_decrypt(&data, &key, &iv);
    assert_eq!(chunk_boxes(&clear), ["moof", "mdat"], "a part is a CMAF chunk (moof + mdat, styp first in a segment's first)");

    // Each part and each whole segment decrypts; the parts of a segment are the segment, which is
    // the clear DASH segment.
    let done =
        q.segments.iter().enumerate().rev().find(|(_, s)| s.uri.is_some() && !s.parts.is_empty()).map(|(i, s)| (q.skipped + i, s.clone()));
    let (n, seg) = done.unwrap_or_else(|| panic!("a complete segment with parts:\n{text}"));
    let mut joined = Vec::new();
    for part in &seg.parts {
        let (status, data) = get_bytes(&server, &sibling(&video, &part.uri)).await;
        assert_eq!(status, 200);
        joined.extend(aes_decrypt(&data, &key, &iv));
    }
    let (_, whole) = get_bytes(&server, &sibling(&video, seg.uri.as_deref().unwrap())).await;
    assert_eq!(aes_decrypt(&whole, &key, &iv), joined, "segment {n} is its parts");
    let rung = m.variants[0].uri.trim_end_matches(".m3u8");
    let (status, dash_seg) = get_bytes(&server, &sibling(&ll, &format!("../dash/{rung}/seg{n:05}.m4s"))).await;
    assert_eq!(status, 200);
    assert_eq!(dash_seg.as_ref(), joined.as_slice(), "the DASH segment {n} is the same CMAF, clear");

    // Low-latency DASH: the same segments by number, each announced from its first chunk on.
    let lldash = v["playback"]["dash_low_latency"].as_str().unwrap_or_else(|| panic!("no low-latency DASH URL on air: {v}")).to_string();
    let ld = mpd(&server, &lldash).await;
    assert_eq!(ld.mpdtype.as_deref(), Some("dynamic"));
    let latency = ld.ServiceDescription.first().and_then(|s| s.Latency.as_ref()).and_then(|l| l.target);
    assert_eq!(latency, Some(1500.0), "a target latency: {ld:?}");
    assert!(ld.UTCTiming.iter().any(|u| u.value.as_deref().is_some_and(|v| v.ends_with("/api/time"))), "{ld:?}");
    for set in &ld.periods[0].adaptations {
        for rep in &set.representations {
            let st = rep.SegmentTemplate.as_ref().unwrap();
            assert_eq!((st.duration, st.timescale, st.startNumber), (Some(2000.0), Some(1000), Some(0)), "{st:?}");
            let ato = st.availabilityTimeOffset.unwrap_or_default();
            assert!((ato - (2.0 - 1.0 / 3.0)).abs() < 0.01, "availabilityTimeOffset = segment − chunk: {ato}");
            assert_eq!(st.availabilityTimeComplete, Some(false));
        }
    }
    // The segment after the one being written is sent while it is written (chunked, no length),
    // and what arrives is the segment.
    let (_, text) = server.get_text(&video).await;
    let next = ll_parse(&text).segments.len() as u64 + ll_parse(&text).skipped as u64;
    let rung_dir = sibling(&lldash, &format!("{}/seg{next:05}.m4s", m.variants[0].uri.trim_end_matches(".m3u8")));
    let r = server.client.get(&rung_dir).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.content_length().is_none() && r.headers()["transfer-encoding"] == "chunked", "sent as written: {:?}", r.headers());
    let streamed = r.bytes().await.unwrap();
    let (status, stored) = get_bytes(&server, &rung_dir).await;
    assert_eq!(status, 200);
    assert_eq!(streamed, stored, "the streamed segment is the segment");
    assert_eq!(chunk_boxes(&streamed)[..2], ["moof", "mdat"], "CMAF chunks");

    // Bad directives are refused with JSON.
    let last = q.segments.len() as u64 + q.skipped as u64 - 1;
    for (query, why) in [("_HLS_part=1", "a part without msn"), ("_HLS_msn=x", "not a number")] {
        let r = server.client.get(format!("{video}?{query}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{why}");
        assert_eq!(r.headers()["content-type"], "application/json", "{why}");
    }
    let r = server.client.get(format!("{video}?_HLS_msn={}", last + 5)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "more than two segments ahead");

    // Delta updates: once the playlist is longer than CAN-SKIP-UNTIL, the old segments are
    // skipped and the rest is the same as in the full playlist.
    let mut full = String::new();
    assert!(
        wait_until(T, async || {
            full = server.get_text(&video).await.1;
            ll_parse(&full).segments.iter().filter(|s| s.uri.is_some()).count() >= 9
        })
        .await,
        "9 segments listed:\n{full}"
    );
    let f = ll_parse(&full);
    let next = f.segments.len() as u64 - 1;
    let (status, text) = server.get_text(&format!("{video}?_HLS_msn={next}&_HLS_skip=YES")).await;
    assert_eq!(status, 200, "{text}");
    let d = ll_parse(&text);
    assert!(d.skipped > 0, "a delta update skips segments:\n{text}");
    let uris = |p: &LlPlaylist, from: usize| p.segments.iter().skip(from).filter_map(|s| s.uri.clone()).take(3).collect::<Vec<_>>();
    assert_eq!(uris(&d, 0), uris(&f, d.skipped), "the delta continues where the skip ends");

    // The publisher leaves; the broadcast waits for it (reconnect window): nothing new comes, so
    // a blocking request for the next part is answered 503 after three target durations.
    let (ok, err) = exited(ffmpeg, T).await;
    assert!(ok, "{err}");
    assert!(wait_until(T, async || get_stream(&server, id).await["status"] == "reconnecting").await);
    // (The muxers may still flush what they held when the feed stopped: ask again until the
    // playlist stops growing.)
    let mut answers = Vec::new();
    for _ in 0..10 {
        let (_, text) = server.get_text(&video).await;
        let (msn, part) = ll_part_number(ll_parse(&text).hint.as_deref().unwrap());
        let r = server.client.get(format!("{video}?_HLS_msn={msn}&_HLS_part={part}")).send().await.unwrap();
        answers.push(r.status().as_u16());
        if r.status().as_u16() == 503 {
            assert_eq!(r.headers()["content-type"], "application/json");
            break;
        }
    }
    assert_eq!(answers.last(), Some(&503), "nothing came for three target durations: {answers:?}");

    // The broadcast ends: the same playlists are VOD playlists of whole segments, and the parts
    // are gone.
    assert_eq!(server.client.delete(server.url(&format!("/api/live/{id}"))).send().await.unwrap().status().as_u16(), 204);
    let v = server.wait_final(&vid, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert!(v["playback"].get("hls_low_latency").is_none(), "no low-latency URL off air: {v}");
    let (status, text) = server.get_text(&video).await;
    assert_eq!(status, 200, "{text}");
    let end = ll_parse_ended(&text, 24.0);
    let total: f64 = end.segments.iter().map(|s| s.duration).sum();
    let (status, _) = get_bytes(&server, &hinted).await;
    assert_eq!(status, 404, "parts are removed at the end");
    // Number-addressed segments stay where their numbers say: segment N starts at 2N s, the
    // audio's within one AAC frame (21.3 ms). (Left to cmafmux in chunk mode, every audio segment
    // came out 16 ms short, 0.18 s off by segment 11, and dash.js's low-latency mode stalled
    // once per segment after about two minutes.)
    for (rep, seconds) in [(rung, 2.0), ("audio", 2.0)] {
        let (_, init) = get_bytes(&server, &sibling(&lldash, &format!("{rep}/init00000.mp4"))).await;
        let timescale = mdhd_timescale(&init);
        let last = (total / seconds) as u64 - 1;
        for n in [1, last / 2, last] {
            let (status, seg) = get_bytes(&server, &sibling(&lldash, &format!("{rep}/seg{n:05}.m4s"))).await;
            assert_eq!(status, 200, "{rep} segment {n}");
            let start = tfdt(&seg) as f64 / timescale as f64;
            assert!((start - n as f64 * seconds).abs() < 0.03, "{rep} segment {n} starts at {start} s, not {} s", n as f64 * seconds);
        }
    }
    // A player without low-latency support (ffmpeg's HLS demuxer) plays the same master: fMP4
    // segments, AES-128, the audio as its own rendition.
    ffmpeg_decode(&ll).await.expect("the low-latency playlists decode as ordinary HLS");
}

/// A WHIP offer as Chromium makes one (fingerprint and ICE credentials made up), with `video`
/// and `audio` sections as asked.
fn whip_offer(video: bool, audio: bool) -> String {
    let ice = "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=sendonly\r\na=rtcp-mux\r\n";
    let mut sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string();
    if audio {
        sdp += &format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{ice}a=mid:0\r\na=rtpmap:111 opus/48000/2\r\n");
    }
    if video {
        sdp += &format!("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n{ice}a=mid:1\r\na=rtpmap:96 VP8/90000\r\n");
    }
    sdp
}

#[tokio::test]
async fn whip_offers_are_checked_before_anything_is_created() {
    let server = Server::start(&[]).await;
    let stream = new_stream(&server, "WHIP").await;
    let (id, key) = (stream["id"].as_str().unwrap(), stream["key"].as_str().unwrap());
    let url = server.url(&format!("/api/live/{id}/whip"));
    let plain = reqwest::Client::new();
    let post = |auth: Option<String>, content_type: &'static str, body: String| {
        let mut r = plain.post(&url).header("content-type", content_type).body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let bearer = |k: &str| Some(format!("Bearer {k}"));
    for (auth, content_type, body, want, why) in [
        (None, "application/sdp", whip_offer(true, true), 401, "no key"),
        (bearer("0123456789abcdef0123456789abcdef"), "application/sdp", whip_offer(true, true), 403, "a wrong key"),
        (Some(format!("Basic {key}")), "application/sdp", whip_offer(true, true), 401, "not a bearer"),
        (bearer(key), "text/plain", whip_offer(true, true), 415, "not SDP"),
        (bearer(key), "application/sdp", "v=0\r\nthis is not SDP\r\n".to_string(), 400, "malformed SDP"),
        (bearer(key), "application/sdp", "hello".to_string(), 400, "not SDP at all"),
        (bearer(key), "application/sdp", whip_offer(false, true), 422, "no video"),
        (bearer(key), "application/sdp", whip_offer(true, true).replace("VP8", "VP9"), 422, "no video Cascade takes"),
        (bearer(key), "application/sdp", "v=0\r\n".to_string() + &"a=x\r\n".repeat(20_000), 413, "an offer over 64 KiB"),
    ] {
        let r = post(auth, content_type, body).await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{why}");
        assert_eq!(r.headers()["content-type"], "application/json", "{why}");
        let e: Value = r.json().await.unwrap();
        assert!(e["code"].is_string() && e["message"].is_string(), "{why}: {e}");
    }
    // The key of another stream is not this stream's.
    let other = new_stream(&server, "other").await;
    let r = post(bearer(other["key"].as_str().unwrap()), "application/sdp", whip_offer(true, true)).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Nothing was created: both streams idle, no video.
    for s in [id, other["id"].as_str().unwrap()] {
        assert_eq!(get_stream(&server, s).await["status"], "idle");
    }
    let videos: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert_eq!(videos["videos"].as_array().map(Vec::len), Some(0), "{videos}");
    // A session that does not exist: 404 with the key, 403 without the right one.
    let end = server.url(&format!("/api/live/{id}/whip/00000000-0000-0000-0000-000000000000"));
    assert_eq!(plain.delete(&end).header("authorization", format!("Bearer {key}")).send().await.unwrap().status().as_u16(), 404);
    assert_eq!(plain.delete(&end).header("authorization", "Bearer nope").send().await.unwrap().status().as_u16(), 403);
    assert_eq!(plain.delete(&end).send().await.unwrap().status().as_u16(), 401);
}
