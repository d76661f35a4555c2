//! Crash recovery: `kill -9` during a transcode, restart on the same data dir, the job is re-run
//! from scratch and ends ready; nothing stays processing; accepted uploads are not lost.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_transcode_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let long = clip_720p("recover720.mp4", 40.0).await;
    let short = clip("recover_short.mp4", "testsrc2=size=320x240:rate=25", Some("sine"), 4.0, &[]).await;

    let mut server = Server::start_in(&data, &[("CASCADE_JOB_LEASE", "5")]).await;
    let running = server.upload_ok(&long, "interrupted").await;
    let waiting = server.upload_ok(&short, "waiting").await;
    // Kill it hard once the first job is well under way (segments on disk, manifests published).
    server.wait_for(&running, Duration::from_secs(300), |v| v["playable"] == true && v["status"] == "processing").await;
    assert!(!server.media_files(&running).await.is_empty());
    server.kill9().await;
    drop(server);

    // On a shared database the new process cannot tell a dead holder from a live one on
    // another node: it takes the job over once the holder's lease (short here) has run out.
    let shared = database_url(&data).is_some();
    let server = Server::start_in(&data, &[("CASCADE_JOB_LEASE", "5")]).await;
    if !shared {
        assert!(server.log().contains("re-queued"), "{}", server.log());
    }
    // Both accepted uploads are still there; the interrupted one runs again and completes.
    for id in [&running, &waiting] {
        let v = server.wait_final(id, Duration::from_secs(400)).await;
        assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    }
    let v = server.get_video(&running).await;
    assert_eq!(v["attempts"], 2, "{v}");
    if shared {
        assert!(server.log().contains("took over a job whose holder's lease expired"), "{}", server.log());
    }
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    ffmpeg_decode(&hls).await.unwrap();
    let d = ffprobe_duration(&hls).await;
    assert!((d - 40.0).abs() <= 0.5, "{d}");
    // Partial output of the first run is gone: every file stored (on disk, or in the bucket) is
    // listed by a playlist or MPD.
    let stored = server.media_files(&running).await;
    for (name, _) in &stored {
        let file = name.rsplit('/').next().unwrap();
        assert!(!file.ends_with(".part") && !file.ends_with(".tmp") && !file.starts_with(".goutputstream"), "leftover {name}");
    }
    for rung in ["720p", "480p", "360p"] {
        let (pl, _) = media_playlist(&server, &sibling(&hls, &format!("{rung}/index.m3u8"))).await;
        let listed: std::collections::BTreeSet<String> = pl.segments.iter().map(|s| s.uri.clone()).collect();
        let dir = format!("hls/{rung}/");
        let kept: std::collections::BTreeSet<String> =
            stored.iter().filter_map(|(n, _)| n.strip_prefix(&dir)).filter(|n| n.ends_with(".ts")).map(str::to_string).collect();
        assert_eq!(listed, kept, "{rung}");
    }
    // Nothing is left processing or queued.
    let list: serde_json::Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert!(list["videos"].as_array().unwrap().iter().all(|v| v["status"] == "ready"), "{list}");
}
