//! Moving an embedded installation to a scaled set-up with Cascade's own commands: `cascade
//! migrate sled-to-postgres` for the records, `cascade migrate media-to-s3` for the sources and
//! media; a node on a fresh data dir then serves what the old one had and transcodes what it had
//! queued. This binary's one test moves from the embedded configuration to the scaled one itself,
//! whatever `TEST_STORE`/`TEST_STORAGE` say.

mod common;

use std::time::Duration;

use common::*;

/// Runs `cascade migrate media-to-s3` on `data_dir` into `url`; (succeeded, stdout + stderr).
async fn media_to_s3(data_dir: &std::path::Path, url: &str) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["migrate", "media-to-s3", "--data-dir", data_dir.to_str().unwrap(), "--storage-url", url])
            .current_dir(repo())
            .envs(s3().env())
            .output(),
    )
    .await
    .expect("cascade migrate media-to-s3 within 300 s")
    .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The number on the line `what: N` of a command's output.
fn count(out: &str, what: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{what}: ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_installation_moves_to_postgres_and_s3() {
    std::env::remove_var("TEST_STORE");
    std::env::remove_var("TEST_STORAGE");
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();

    // The embedded installation: one video ready, one being encoded and one queued behind it
    // (one worker) when the server is killed.
    let src = clip("migrate_ready.mp4", "testsrc2=size=640x360:rate=25", Some("sine"), 6.0, &[]).await;
    let long_src = clip_720p("migrate_long.mp4", 30.0).await;
    let queued_src = clip("migrate_queued.mp4", "testsrc=size=320x240:rate=25", Some("sine"), 4.0, &[]).await;
    let mut s = Server::start_in(old.path(), &[("CASCADE_WORKERS", "1"), ("CASCADE_STREAM_INGEST", "false")]).await;
    let ready = s.upload_ok(&src, "ready before the move").await;
    let v = s.wait_final(&ready, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", s.log());
    let long = s.upload_ok(&long_src, "encoding at the move").await;
    let queued = s.upload_ok(&queued_src, "queued at the move").await;
    s.kill9().await;
    // What the copy takes: every file of the media trees but temporary (`*.tmp`) and hidden ones.
    let old_media: Vec<_> = files_under(&old.path().join("media"))
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.') && !n.ends_with(".tmp")))
        .collect();
    let media_dirs = std::fs::read_dir(old.path().join("media")).unwrap().count();
    assert!(!files_under(&old.path().join("media").join(&ready)).is_empty());

    // From now on the servers and commands of this test are in the scaled configuration, the
    // new node's data dir sharing the old one's database and bucket prefix.
    std::env::set_var("TEST_STORE", "postgres");
    std::env::set_var("TEST_STORAGE", "s3");
    share_site(new.path(), old.path());
    let database = database_url(old.path()).unwrap();
    let storage = storage_url(old.path()).unwrap();
    let o = cascade_cli(&["migrate", "sled-to-postgres", "--data-dir", old.path().to_str().unwrap(), "--database-url", &database], None);
    assert!(o.status.success(), "sled-to-postgres: {}", String::from_utf8_lossy(&o.stderr));
    let (ok, out) = media_to_s3(old.path(), &storage).await;
    assert!(ok, "{out}");
    assert_eq!(count(&out, "media files"), old_media.len() as u64, "{out}");
    assert_eq!(count(&out, "sources"), 3, "{out}");
    assert_eq!(count(&out, "videos compared"), media_dirs as u64, "{out}");
    // Run again (an interrupted copy is finished this way): nothing is put twice.
    let (ok, again) = media_to_s3(old.path(), &storage).await;
    assert!(ok, "{again}");
    assert_eq!((count(&again, "sources"), count(&again, "media files")), (0, 0), "{again}");
    assert_eq!(count(&again, "already in the bucket"), 3 + old_media.len() as u64, "{again}");

    // A node on a fresh data dir: the ready video plays from the bucket, the queued one is
    // transcoded from the source in the bucket.
    let n = Server::start_in(new.path(), &[]).await;
    let v = n.get_video(&ready).await;
    assert_eq!((v["status"].as_str(), v["title"].as_str()), (Some("ready"), Some("ready before the move")), "{v}");
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    ffmpeg_decode(&hls).await.unwrap_or_else(|e| panic!("HLS after the move: {e}\n{}", n.log()));
    ffmpeg_decode(v["playback"]["dash"].as_str().unwrap()).await.unwrap_or_else(|e| panic!("DASH after the move: {e}"));
    let d = ffprobe_duration(&hls).await;
    assert!((d - 6.0).abs() <= 0.5, "duration {d}");
    // The job the old server was running when it was killed, and the one queued behind it.
    for (id, seconds) in [(&long, 30.0), (&queued, 4.0)] {
        let v = n.wait_final(id, Duration::from_secs(400)).await;
        assert_eq!(v["status"], "ready", "{v}\n{}", n.log());
        let hls = v["playback"]["hls"].as_str().unwrap().to_string();
        ffmpeg_decode(&hls).await.unwrap_or_else(|e| panic!("{id} after the move: {e}"));
        let d = ffprobe_duration(&hls).await;
        assert!((d - seconds).abs() <= 0.5, "{id}: duration {d}");
    }
    // Everything the new node served came from the bucket: it keeps no media of its own.
    assert!(files_under(&new.path().join("media")).is_empty(), "the new node keeps media files");
}
