//! Start-up, through the real binary: which settings and web dirs `cascade serve` starts with,
//! and `--help` of every command. Then short startup segments and the scaling cascade, through
//! the real server and GStreamer: the first two segments of every track are
//! `startup_segment_seconds` long, every rung has the same segment boundaries with a keyframe at
//! each, and a rung scaled from a larger rung (360p from 720p) instead of from the source still
//! matches the source closely.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Runs `cascade ARGS` with a fresh data dir, a free port, no inherited `CASCADE_*` variable but
/// `env`, and waits up to `wait` for it to exit: its exit code, stdout and stderr, or `None`
/// (killed) when it was still running.
async fn run_cascade(args: &[&str], env: &[(&str, &str)], wait: Duration) -> Option<(i32, String, String)> {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cascade"));
    cmd.args(args).current_dir(repo()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CASCADE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CASCADE_BIND", "127.0.0.1:0")
        .env("CASCADE_RTMP_BIND", "127.0.0.1:0")
        .env("CASCADE_SRT_BIND", "off")
        .env("CASCADE_DATA_DIR", data.path())
        .env("CASCADE_MIN_FREE_BYTES", "0");
    cmd.envs(env.iter().copied());
    let child = cmd.spawn().expect("start cascade");
    let out = tokio::time::timeout(wait, child.wait_with_output()).await.ok()?.unwrap();
    Some((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into()))
}

#[tokio::test]
async fn keep_work_is_a_setting_serve_starts_with() {
    let server = Server::start(&[("CASCADE_KEEP_WORK", "1")]).await;
    let (status, body) = server.get_text(&server.url("/healthz")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_unknown_setting_stops_serve() {
    let (code, _, err) = run_cascade(&["serve"], &[("CASCADE_WROKERS", "2")], Duration::from_secs(30))
        .await
        .expect("serve started with a typo in its settings");
    assert_ne!(code, 0);
    assert!(err.contains("CASCADE_WROKERS"), "{err}");
}

#[tokio::test]
async fn serve_refuses_a_player_page_without_its_players() {
    // The web dir as a checkout has it before ./scripts/setup.sh: pages, no node_modules.
    let web = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo().join("web")).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), web.path().join(e.file_name())).unwrap();
        }
    }
    assert!(web.path().join("watch.html").exists());
    let dir = web.path().to_str().unwrap();
    let (code, _, err) = run_cascade(&["serve"], &[("CASCADE_WEB_DIR", dir)], Duration::from_secs(30))
        .await
        .expect("serve started without the player libraries");
    assert_ne!(code, 0);
    assert!(err.contains("./scripts/setup.sh") && err.contains("dash.all.min.js"), "{err}");
    // The same check through the flag.
    let (code, _, err) = run_cascade(&["serve", "--web-dir", dir], &[], Duration::from_secs(30)).await.expect("serve started");
    assert!(code != 0 && err.contains("./scripts/setup.sh"), "{err}");
}

#[tokio::test]
async fn every_command_answers_help() {
    for args in [&["--help"][..], &["serve", "--help"], &["transcode", "--help"], &["probe", "--help"], &["help", "serve"]] {
        let (code, out, err) = run_cascade(args, &[], Duration::from_secs(30)).await.expect("help hangs");
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("Usage: cascade"), "{args:?}: {out}");
    }
    let (code, _, err) = run_cascade(&["serve", "--wrokers", "2"], &[], Duration::from_secs(30)).await.expect("serve started");
    assert_eq!(code, 2, "a usage error: {err}");
    assert!(err.contains("--wrokers"), "{err}");
}

const T: Duration = Duration::from_secs(300);
/// The shipped ladder's startup segment and segment lengths.
fn lengths() -> (f64, f64) {
    let ladder: toml::Table = include_str!("../pipelines/ladder.toml").parse().expect("the shipped ladder parses");
    let startup = ladder["startup_segment_seconds"].as_float().expect("startup_segment_seconds");
    let segment = ladder["segment_seconds"].as_integer().expect("segment_seconds") as f64;
    assert!(startup > 0.0, "the shipped ladder has startup segments");
    (startup, segment)
}

/// PSNR (dB) of a rendition against the source scaled to its size with ffmpeg's bicubic, frames
/// paired by index (MPEG-TS timestamps jitter by a tick after x264enc's offset).
async fn psnr(url: &str, src: &str, w: u64, h: u64) -> f64 {
    let graph = format!("[0:v]settb=1/30,setpts=N[d];[1:v]settb=1/30,setpts=N,scale={w}:{h}:flags=bicubic[ref];[d][ref]psnr");
    let (ok, out) =
        run("ffmpeg", &["-nostdin", "-v", "info", "-i", url, "-i", src, "-lavfi", &graph, "-f", "null", "-"], Duration::from_secs(180))
            .await;
    assert!(ok, "psnr of {url}: {out}");
    let avg = out.rsplit("average:").next().and_then(|s| s.split_whitespace().next()).unwrap_or("");
    avg.parse().unwrap_or_else(|_| panic!("no PSNR in ffmpeg's output: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_segments_are_short_aligned_and_start_with_keyframes() {
    let server = Server::start(&[("CASCADE_BACKEND", "gstreamer")]).await;
    // 29.97 fps: the startup boundaries fall between frames, as they do for most phone videos.
    let src =
        clip("startup2997.mp4", "testsrc2=size=1280x720:rate=30000/1001", Some("sine=frequency=440:sample_rate=48000"), 11.0, &[]).await;
    let id = server.upload_ok(&src, "Startup").await;
    let v = server.wait_final(&id, T).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let dash = v["playback"]["dash"].as_str().unwrap().to_string();
    let frame = 1001.0 / 30000.0;
    let (startup, segment) = lengths();

    // HLS: the same segment durations in every rung: two startup segments, then full ones.
    let m = master(&server, &hls).await;
    assert_eq!(m.variants.len(), 3);
    let mut lists = Vec::new();
    for var in &m.variants {
        let url = sibling(&hls, &var.uri);
        let (pl, text) = media_playlist(&server, &url).await;
        let d: Vec<f64> = pl.segments.iter().map(|s| s.duration as f64).collect();
        assert!(d.len() >= 4, "{text}");
        for (i, want) in [startup, startup, segment].iter().enumerate() {
            assert!((d[i] - want).abs() <= frame + 0.002, "{}: segment {i} lasts {} s, expected {want}\n{text}", var.uri, d[i]);
        }
        assert!(d.iter().all(|x| *x <= pl.target_duration as f64 + 0.5), "{text}");
        // Every segment starts with a keyframe: the keyframes are exactly the segment starts.
        let mut starts = vec![0.0];
        for x in &d[..d.len() - 1] {
            starts.push(starts.last().unwrap() + x);
        }
        let keys = keyframe_times(&url).await;
        assert_eq!(keys.len(), starts.len(), "{}: keyframes {keys:?} vs segment starts {starts:?}", var.uri);
        for (k, s) in keys.iter().zip(&starts) {
            assert!((k - s).abs() <= frame, "{}: keyframe at {k} but segment starts at {s}", var.uri);
        }
        lists.push(d);
    }
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "rungs are not aligned: {lists:?}");

    // DASH: every representation, audio included, starts with two startup segments.
    let mpd = mpd(&server, &dash).await;
    for set in &mpd.periods[0].adaptations {
        for rep in &set.representations {
            let st = rep.SegmentTemplate.as_ref().unwrap();
            let scale = st.timescale.unwrap() as f64;
            let mut d = Vec::new();
            for s in &st.SegmentTimeline.as_ref().unwrap().segments {
                for _ in 0..=s.r.unwrap_or(0) {
                    d.push(s.d as f64 / scale);
                }
            }
            let id = rep.id.clone().unwrap();
            assert!(d.len() >= 4, "{id}: {d:?}");
            assert!((d[0] - startup).abs() <= frame + 0.03 && (d[1] - startup).abs() <= frame + 0.03, "{id}: {d:?}");
            assert!((d[2] - segment).abs() <= frame + 0.03, "{id}: {d:?}");
        }
    }
    ffmpeg_decode(&dash).await.unwrap_or_else(|e| panic!("DASH does not decode: {e}"));

    // 360p and 480p are scaled from the 720p frames (`scale_from`; 480p with Lanczos); each must
    // still be close to the source (the bitrates here are generous for testsrc2, so this measures
    // the scaling: a wrong plane, offset or stride would be far below).
    for var in &m.variants {
        let r = var.resolution.unwrap();
        let db = psnr(&sibling(&hls, &var.uri), src.to_str().unwrap(), r.width, r.height).await;
        assert!(db >= 35.0, "{}: PSNR {db:.1} dB against the source", var.uri);
    }
}
