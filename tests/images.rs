//! Poster, thumbnail and storyboard from the transcode itself, for both back ends.

mod common;

use std::time::Duration;

use common::*;

async fn image_size(server: &Server, url: &str) -> (u64, u64) {
    let r = server.client.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{url}");
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "not a JPEG: {url}");
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &bytes).unwrap();
    let (ok, out) = run(
        "ffprobe",
        &["-v", "error", "-show_entries", "stream=width,height,codec_name", "-of", "csv=p=0", f.path().to_str().unwrap()],
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "{out}");
    let parts: Vec<&str> = out.trim().split(',').collect();
    assert_eq!(parts[0], "mjpeg", "{out}");
    (parts[1].parse().unwrap(), parts[2].parse().unwrap())
}

fn parse_time(t: &str) -> f64 {
    let p: Vec<f64> = t.trim().split(':').map(|x| x.parse().unwrap()).collect();
    p[0] * 3600.0 + p[1] * 60.0 + p[2]
}

async fn check(backend: &str) {
    let server = Server::start(&[("CASCADE_BACKEND", backend)]).await;
    let src = clip_720p(&format!("img_{backend}.mp4"), 14.0).await;
    let id = server.upload_ok(&src, "pictures").await;
    let v = server.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(v["backend"], backend);
    let images = &v["images"];
    let poster = images["poster"].as_str().unwrap_or_else(|| panic!("no poster: {v}"));
    let thumb = images["thumbnail"].as_str().unwrap();
    let vtt_url = images["storyboard"].as_str().unwrap();
    assert_eq!(image_size(&server, poster).await, (1280, 720));
    assert_eq!(image_size(&server, thumb).await, (320, 180));

    // The VTT parses, covers [0, duration] without gaps, and every tile lies inside the sprite.
    let (status, vtt) = server.get_text(vtt_url).await;
    assert_eq!(status, 200);
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    let sprite_url = sibling(vtt_url, "storyboard.jpg");
    let (sw, sh) = image_size(&server, &sprite_url).await;
    let mut expected_start = 0.0;
    let mut cues = 0;
    for block in vtt.split("\n\n").skip(1).filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        let times = lines.next().unwrap();
        let (a, b) = times.split_once("-->").unwrap();
        let (a, b) = (parse_time(a), parse_time(b));
        assert!((a - expected_start).abs() < 1e-6, "gap before {times}");
        assert!(b > a);
        expected_start = b;
        let target = lines.next().unwrap();
        let (file, xywh) = target.split_once("#xywh=").unwrap();
        assert_eq!(file, "storyboard.jpg");
        let n: Vec<u64> = xywh.split(',').map(|x| x.parse().unwrap()).collect();
        assert!(n[0] + n[2] <= sw && n[1] + n[3] <= sh, "{target} outside {sw}x{sh}");
        assert_eq!((n[2], n[3]), (160, 90));
        cues += 1;
    }
    assert!(cues >= 10, "{vtt}");
    let duration = v["source"]["duration_s"].as_f64().unwrap();
    assert!((expected_start - duration).abs() < 0.05, "VTT ends at {expected_start}, video at {duration}");

    // Behind the token like the media.
    let token = v["playback"]["token"].as_str().unwrap();
    let forged = poster.replace(token, &format!("{token}x"));
    assert_eq!(server.get_text(&forged).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_images() {
    check("gstreamer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_images() {
    check("ffmpeg").await;
}
