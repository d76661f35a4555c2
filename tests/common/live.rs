//! Live streams for the tests: a stream made through the API, ffmpeg publishing generated clips
//! to it over RTMP, and waits for its broadcast.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::{wait_until, Server};

pub const T: Duration = Duration::from_secs(120);

/// Creates a live stream as the server's admin; returns its record (with the key).
pub async fn new_stream(server: &Server, title: &str) -> Value {
    let r = server.client.post(server.url("/api/live")).json(&json!({ "title": title })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json().await.unwrap()
}

pub async fn get_stream(server: &Server, id: &str) -> Value {
    server.client.get(server.url(&format!("/api/live/{id}"))).send().await.unwrap().json().await.unwrap()
}

/// The publish URL of a stream record.
pub fn publish_url(stream: &Value) -> String {
    format!("{}/{}", stream["rtmp_url"].as_str().expect("rtmp_url"), stream["key"].as_str().expect("key"))
}

/// ffmpeg publishing a generated 640x360 30 fps clip (with a 440 Hz tone) in real time.
/// `video` is the encoder arguments (H.264 normally).
pub fn publish(url: &str, seconds: u32, video: &[&str], audio: bool) -> Child {
    publish_sized(url, "640x360", seconds, video, audio)
}

/// `publish` with a picture of `size` (`WxH`).
pub fn publish_sized(url: &str, size: &str, seconds: u32, video: &[&str], audio: bool) -> Child {
    let mut args: Vec<String> =
        ["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate=30")].map(String::from).to_vec();
    if audio {
        args.extend(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"].map(String::from));
    }
    args.extend(["-t".to_string(), seconds.to_string()]);
    args.extend(video.iter().map(|s| s.to_string()));
    if audio {
        args.extend(["-c:a", "aac", "-b:a", "96k"].map(String::from));
    }
    args.extend(["-f", "flv", url].map(String::from));
    Command::new("ffmpeg").args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap()
}

pub const H264: &[&str] = &["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60", "-pix_fmt", "yuv420p"];

/// Waits for a publisher to exit; returns (success, stderr).
pub async fn exited(child: Child, within: Duration) -> (bool, String) {
    let out = tokio::time::timeout(within, child.wait_with_output()).await.expect("ffmpeg exits").unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Waits until the stream's broadcast has a playable video; returns the video id.
pub async fn wait_on_air(server: &Server, stream_id: &str) -> String {
    let mut vid = String::new();
    let on_air = wait_until(T, async || {
        let s = get_stream(server, stream_id).await;
        if s["status"] != "live" {
            return false;
        }
        vid = s["video_id"].as_str().unwrap_or_default().to_string();
        !vid.is_empty() && server.get_video(&vid).await["playable"] == true
    })
    .await;
    assert!(on_air, "the broadcast never became playable: {}\n{}", get_stream(server, stream_id).await, server.log());
    vid
}
