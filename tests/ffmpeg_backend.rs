//! The FFmpeg back end: forced, and chosen automatically when GStreamer cannot build its pipeline.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_ffmpeg_is_progressive_encrypted_and_plays() {
    let server = Server::start(&[("CASCADE_BACKEND", "ffmpeg")]).await;
    let src = clip_720p("ff720.mp4", 30.0).await;
    let id = server.upload_ok(&src, "ffmpeg").await;

    // Playable while still processing, with the same manifest shapes as GStreamer's.
    let v = server
        .wait_for(&id, Duration::from_secs(300), |v| v["playable"] == true || v["status"] != "queued" && v["status"] != "processing")
        .await;
    assert_eq!(v["status"], "processing", "{v}");
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let dash = v["playback"]["dash"].as_str().unwrap().to_string();
    let (pl, text) = media_playlist(&server, &sibling(&hls, "360p/index.m3u8")).await;
    if !pl.end_list {
        assert_eq!(pl.playlist_type, Some(m3u8_rs::MediaPlaylistType::Event), "{text}");
        assert!(pl.segments[0].key.is_some(), "{text}");
        let m = mpd(&server, &dash).await;
        assert!(m.mpdtype.as_deref() == Some("dynamic") || server.get_video(&id).await["status"] == "ready");
    }

    let v = server.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert_eq!(v["backend"], "ffmpeg");
    let names: Vec<&str> = v["renditions"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["720p", "480p", "360p"]);
    let m = master(&server, &hls).await;
    assert!(m.variants.iter().all(|x| x.codecs.as_deref().unwrap().starts_with("avc1.64")), "{:?}", m.variants);
    let mpd = mpd(&server, &dash).await;
    assert_eq!(mpd.mpdtype.as_deref(), Some("static"));
    assert_eq!(mpd.periods[0].adaptations.len(), 2);

    // Encrypted as stored (on disk, or in the bucket) like the GStreamer output, and nothing of
    // ffmpeg's own files is left.
    let stored = server.media_files(&id).await;
    let segs: Vec<&(String, Vec<u8>)> = stored.iter().filter(|(n, _)| n.starts_with("hls/") && n.ends_with(".ts")).collect();
    assert!(!segs.is_empty());
    for (name, data) in &segs {
        assert!(data.len() >= 3 * TS_PACKET, "{name} has only {} bytes", data.len());
        assert!(!is_clear_ts(data), "{name} is clear TS");
    }
    assert!(
        stored.iter().all(|(n, _)| !n.starts_with(".ffmpeg") && !n.ends_with(".tmp")),
        "{:?}",
        stored.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(!server.data_dir.join("uploads").join(&id).join("scratch").join("hls.key").exists());

    ffmpeg_decode(&hls).await.unwrap_or_else(|e| panic!("HLS: {e}"));
    ffmpeg_decode(&dash).await.unwrap_or_else(|e| panic!("DASH: {e}"));
    for url in [&hls, &dash] {
        let d = ffprobe_duration(url).await;
        assert!((d - 30.0).abs() <= 0.5, "{url}: {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_ffmpeg_when_gstreamer_is_broken() {
    let empty = tempfile::tempdir().unwrap();
    let registry = empty.path().join("registry.bin");
    let plugins = empty.path().join("no-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let server = Server::start(&[
        ("CASCADE_BACKEND", "auto"),
        ("GST_PLUGIN_SYSTEM_PATH_1_0", plugins.to_str().unwrap()),
        ("GST_PLUGIN_PATH_1_0", plugins.to_str().unwrap()),
        ("GST_PLUGIN_PATH", plugins.to_str().unwrap()),
        ("GST_REGISTRY_1_0", registry.to_str().unwrap()),
        ("GST_REGISTRY", registry.to_str().unwrap()),
    ])
    .await;
    let src = clip("auto.mp4", "testsrc2=size=640x360:rate=30", Some("sine=frequency=600"), 8.0, &[]).await;
    let id = server.upload_ok(&src, "auto").await;
    let v = server.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert_eq!(v["backend"], "ffmpeg");
    let reason = v["fallback_reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "the record says why GStreamer was not used: {v}");
    ffmpeg_decode(v["playback"]["hls"].as_str().unwrap()).await.unwrap();
    ffmpeg_decode(v["playback"]["dash"].as_str().unwrap()).await.unwrap();
    let d = ffprobe_duration(v["playback"]["hls"].as_str().unwrap()).await;
    assert!((d - 8.0).abs() <= 0.5, "{d}");
}
