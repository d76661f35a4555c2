//! Reliability: odd-but-valid inputs become ready and play, bad inputs fail fast with a specific
//! code, limits answer with the right status, concurrency is bounded, deletes cancel, shutdown is
//! clean, cut-off uploads leave nothing, transient failures are retried.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(400);

/// (file name, lavfi video, lavfi audio, seconds, ffmpeg output args)
type Case = (&'static str, &'static str, Option<&'static str>, f64, &'static [&'static str]);

const GOOD: &[Case] = &[
    (
        "vp9_opus.webm",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=330"),
        3.0,
        &["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-c:a", "libopus"],
    ),
    (
        "hevc.mkv",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=350"),
        3.0,
        &["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-c:a", "aac"],
    ),
    (
        "h264_10bit.mp4",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=370"),
        3.0,
        &["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", "-c:a", "aac"],
    ),
    (
        "mpeg2.ts",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=390"),
        3.0,
        &["-c:v", "mpeg2video", "-q:v", "5", "-c:a", "mp2", "-f", "mpegts"],
    ),
    (
        "prores.mov",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=410"),
        3.0,
        &["-c:v", "prores_ks", "-profile:v", "0", "-c:a", "pcm_s16le"],
    ),
    (
        "rotated.mp4",
        "testsrc2=size=640x360:rate=30",
        Some("sine=frequency=430"),
        3.0,
        &["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    ),
    (
        "odd_853x479.mkv",
        "testsrc2=size=853x479:rate=30",
        Some("sine=frequency=450"),
        3.0,
        &["-vf", "scale=853:479", "-c:v", "ffv1", "-pix_fmt", "yuv444p", "-c:a", "aac"],
    ),
    (
        "vfr.mkv",
        "testsrc2=size=320x240:rate=30",
        Some("sine=frequency=470"),
        4.0,
        &[
            "-vf",
            "select='lt(mod(n\\,10)\\,4)+lt(t\\,1)'",
            "-vsync",
            "vfr",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    ),
    (
        "surround51.mp4",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=490"),
        3.0,
        &["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "6"],
    ),
    (
        "mono44k.mp4",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=510:sample_rate=44100"),
        3.0,
        &["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1", "-ar", "44100"],
    ),
    (
        "short.mp4",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=530"),
        1.5,
        &["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    ),
    (
        "long_gop.mp4",
        "testsrc2=size=320x240:rate=25",
        Some("sine=frequency=550"),
        9.0,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "250",
            "-keyint_min",
            "250",
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
        ],
    ),
];

fn lcg_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_of_odd_and_bad_inputs() {
    let server = Server::start(&[]).await;
    let mut good = Vec::new();
    for (name, v, a, secs, args) in GOOD {
        let mut path = clip(name, v, *a, *secs, args).await;
        if *name == "rotated.mp4" {
            // A phone's display matrix: FFmpeg 5.1 writes it only when remuxing.
            let rotated = path.with_file_name("rotated_dm.mp4");
            let (ok, out) = run(
                "ffmpeg",
                &[
                    "-nostdin",
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    path.to_str().unwrap(),
                    "-c",
                    "copy",
                    "-metadata:s:v:0",
                    "rotate=90",
                    rotated.to_str().unwrap(),
                ],
                Duration::from_secs(60),
            )
            .await;
            assert!(ok, "{out}");
            path = rotated;
        }
        good.push((name, *secs, server.upload_ok(&path, name).await));
    }
    // Bad input.
    let audio_only = clip("audio_only.m4a", "anullsrc", None, 1.0, &[]).await;
    let _ = std::fs::remove_file(&audio_only);
    let audio_only = {
        let p = audio_only.with_file_name("audio_only_real.m4a");
        let (ok, out) = run(
            "ffmpeg",
            &["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440", "-t", "3", "-c:a", "aac", p.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .await;
        assert!(ok, "{out}");
        p
    };
    let full = clip_720p("to_truncate.mp4", 6.0).await;
    let data = std::fs::read(&full).unwrap();
    let truncated = bytes_file("truncated.mp4", &data[..data.len() * 2 / 5]);
    let mut y4m = b"YUV4MPEG2 W30000 H30000 F25:1 Ip A1:1 C420jpeg\nFRAME\n".to_vec();
    y4m.extend(lcg_bytes(4096, 7));
    let absurd = bytes_file("absurd.y4m", &y4m);
    let image = {
        let p = full.with_file_name("image.png");
        let (ok, out) = run(
            "ffmpeg",
            &["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", p.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .await;
        assert!(ok, "{out}");
        p
    };
    let random = bytes_file("random.mkv", &lcg_bytes(200_000, 42));
    let bad: Vec<(&str, std::path::PathBuf, &[&str])> = vec![
        ("audio only", audio_only, &["no_video_stream"]),
        ("truncated mp4", truncated, &["unsupported_input"]),
        ("absurd header", absurd, &["invalid_dimensions", "unsupported_input"]),
    ];
    // Not a media container: refused at the upload, by content.
    for (what, path) in [("image", image), ("random bytes", random)] {
        let (status, body) = server.upload(&path, what).await;
        assert_eq!((status, body["code"].as_str()), (415, Some("unsupported_input")), "{what}: {body}");
    }
    let mut bad_ids = Vec::new();
    for (what, path, codes) in &bad {
        bad_ids.push((*what, *codes, server.upload_ok(path, what).await));
    }

    for (what, codes, id) in &bad_ids {
        let started = Instant::now();
        let v = server.wait_final(id, T).await;
        assert_eq!(v["status"], "failed", "{what}: {v}");
        let code = v["error"]["code"].as_str().unwrap();
        assert!(codes.contains(&code), "{what}: code {code}, expected one of {codes:?}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10, "{what}: {v}");
        let _ = started;
    }
    for (name, secs, id) in &good {
        let v = server.wait_final(id, T).await;
        assert_eq!(v["status"], "ready", "{name}: {v}\n{}", server.log());
        let hls = v["playback"]["hls"].as_str().unwrap();
        ffmpeg_decode(hls).await.unwrap_or_else(|e| panic!("{name} HLS: {e}"));
        ffmpeg_decode(v["playback"]["dash"].as_str().unwrap()).await.unwrap_or_else(|e| panic!("{name} DASH: {e}"));
        let d = ffprobe_duration(hls).await;
        assert!((d - secs).abs() <= 0.6, "{name}: duration {d} vs {secs}");
        let r = &v["renditions"][0];
        assert_eq!(r["width"].as_u64().unwrap() % 2, 0, "{name}");
        assert_eq!(r["height"].as_u64().unwrap() % 2, 0, "{name}");
        if **name == "rotated.mp4" {
            assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(360), Some(640)), "rotation is applied: {v}");
        }
        if **name == "odd_853x479.mkv" {
            assert_eq!((v["source"]["width"].as_u64(), v["source"]["height"].as_u64()), (Some(853), Some(479)), "{v}");
            // 479 < 480: the 360p rung, 853 × 360 / 479 = 641.1 → even 642.
            assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(642), Some(360)), "{v}");
        }
    }
    assert_eq!(server.get_text(&server.url("/healthz")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_simultaneous_uploads_with_bounded_workers() {
    // Ten at once from one user: above the default per-user cap of uploads at once (4), which
    // tests/accounts.rs tries; this test is about the workers.
    let server = Server::start(&[("CASCADE_WORKERS", "2"), ("CASCADE_MAX_UPLOADS_PER_USER", "10")]).await;
    let src = clip("concurrent.mp4", "testsrc2=size=320x240:rate=25", Some("sine"), 5.0, &[]).await;
    let uploads = (0..10).map(|i| {
        let (server, src) = (&server, src.clone());
        async move { server.upload_ok(&src, &format!("c{i}")).await }
    });
    let ids: Vec<String> = futures_util::future::join_all(uploads).await;
    assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), 10);
    let deadline = Instant::now() + T;
    let mut max_processing = 0;
    let mut saw_positions = false;
    loop {
        let list: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
        let videos = list["videos"].as_array().unwrap();
        let processing = videos.iter().filter(|v| v["status"] == "processing").count();
        max_processing = max_processing.max(processing);
        assert!(processing <= 2, "more transcodes than workers: {list}");
        for v in videos.iter().filter(|v| v["status"] == "queued") {
            assert!(v["queue_position"].as_u64().is_some_and(|p| p >= 1), "{v}");
            saw_positions = true;
        }
        if videos.iter().all(|v| v["status"] == "ready") && videos.len() == 10 {
            break;
        }
        assert!(videos.iter().all(|v| v["status"] != "failed"), "{list}");
        assert!(Instant::now() < deadline, "not all ready: {list}");
        // The sampling interval of this watch (bounded by `deadline`), not a wait for an event.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(max_processing >= 1);
    assert!(saw_positions, "queued videos show their position");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_while_processing_cancels_and_removes_everything() {
    let server = Server::start(&[]).await;
    let long = clip_720p("delete720.mp4", 40.0).await;
    let short = clip("after_delete.mp4", "testsrc2=size=320x240:rate=25", Some("sine"), 3.0, &[]).await;
    let id = server.upload_ok(&long, "doomed").await;
    let next = server.upload_ok(&short, "next").await;
    let v = server.wait_for(&id, T, |v| v["status"] == "processing" && v["playable"] == true).await;
    let (hls, dash) = (v["playback"]["hls"].as_str().unwrap(), v["playback"]["dash"].as_str().unwrap());
    let segments = [sibling(hls, "720p/seg00000.ts"), sibling(dash, "720p/seg00000.m4s")];
    for url in &segments {
        assert_eq!(server.client.get(url).send().await.unwrap().status().as_u16(), 200, "{url}");
    }
    let r = server.client.delete(server.url(&format!("/api/videos/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // From the moment the delete is answered, a still-valid token serves nothing of the video,
    // even while its files are being removed (the DASH copy is not encrypted), and the record is gone.
    for url in &segments {
        assert_eq!(server.client.get(url).send().await.unwrap().status().as_u16(), 404, "{url} after delete");
    }
    assert_eq!(server.client.get(server.url(&format!("/api/videos/{id}"))).send().await.unwrap().status().as_u16(), 404);

    // The job is cancelled: with one worker (the default), `next` is claimed only once the doomed
    // run has returned. Until then the still-running pipeline may write into the deleted tree (a
    // late poster, a segment opened as the directory went); the run ends by removing all of it.
    let v = server.wait_final(&next, Duration::from_secs(120)).await;
    assert_eq!(v["status"], "ready", "{v}");
    let (media, upload) = (server.data_dir.join("media").join(&id), server.data_dir.join("uploads").join(&id));
    // Bounded, in case the worker is not the last to touch them: the directories go, and nothing
    // of the deleted video is left on disk.
    let gone =
        wait_until(Duration::from_secs(30), async || !media.exists() && !upload.exists() && server.media_files(&id).await.is_empty()).await;
    assert!(gone, "left behind: media {:?}, upload {:?}", files_under(&media), files_under(&upload));
    // A deleted job never finishes: the doomed run reported neither packaging nor readiness.
    let log = server.log();
    let doomed: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
    assert!(doomed.iter().any(|l| l.contains("video deleted")), "the log has the video id in its lines: {log}");
    assert!(
        !doomed.iter().any(|l| l.contains("job packaged") || l.contains("job ready")),
        "the deleted job ran to its end:\n{}",
        doomed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_requeues_and_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let long = clip_720p("shutdown720.mp4", 60.0).await;
    let mut server = Server::start_in(&data, &[("CASCADE_SHUTDOWN_GRACE", "1")]).await;
    let id = server.upload_ok(&long, "interrupted by shutdown").await;
    server.wait_for(&id, T, |v| v["status"] == "processing" && v["playable"] == true).await;
    let pid = server.child.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(60), server.child.wait()).await.expect("server did not exit").unwrap();
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    assert!(server.log().contains("shut down cleanly"), "{}", server.log());
    drop(server);
    let server = Server::start_in(&data, &[]).await;
    let v = server.wait_final(&id, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    ffmpeg_decode(v["playback"]["hls"].as_str().unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_upload_queue_bound_and_disk_check() {
    let server = Server::start(&[("CASCADE_MAX_QUEUED", "1")]).await;
    // An upload that stops mid-body leaves no record and no file.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
        let head = format!("POST /api/videos HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.mp4\"\r\n\r\n", server.auth());
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&vec![1u8; 300_000]).await.unwrap();
        drop(s);
    }
    // The handler logs the refusal after it has removed the partial upload: wait for that.
    let refused = wait_until(Duration::from_secs(30), async || server.log().contains("upload refused")).await;
    assert!(refused, "the cut-off upload was not refused\n{}", server.log());
    let list: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["videos"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(std::fs::read_dir(server.data_dir.join("uploads")).unwrap().count(), 0, "stray upload files");

    // The queue bound: one job at most, the next upload gets 429 with a JSON error.
    let long = clip_720p("queue720.mp4", 30.0).await;
    let id = server.upload_ok(&long, "fills the queue").await;
    let small = clip("small.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let (status, body) = server.upload(&small, "one too many").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "queue_full");
    server.wait_final(&id, T).await;

    // Not enough disk: 507 with a clear message.
    let server = Server::start(&[("CASCADE_MIN_FREE_BYTES", "1000000000000000000")]).await;
    let (status, body) = server.upload(&small, "no room").await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["code"], "insufficient_storage");
    assert!(body["message"].as_str().unwrap().contains("disk"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_transcoder_is_retried() {
    let server = Server::start(&[("CASCADE_BACKEND", "ffmpeg")]).await;
    let src = clip_720p("retry720.mp4", 30.0).await;
    let id = server.upload_ok(&src, "retry").await;
    server.wait_for(&id, T, |v| v["status"] == "processing" && v["playable"] == true).await;
    // Kill the job's ffmpeg from outside, as the OOM killer would.
    let (ok, out) = run("pkill", &["-KILL", "-f", &format!("media/{id}/hls")], Duration::from_secs(10)).await;
    assert!(ok, "no ffmpeg process found for the job: {out}");
    let v = server.wait_final(&id, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    assert_eq!(v["attempts"], 2, "{v}");
    ffmpeg_decode(v["playback"]["hls"].as_str().unwrap()).await.unwrap();
}
