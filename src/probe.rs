//! Probing an upload with GStreamer's Discoverer: what it is, how long, how big, which way up;
//! and, before any demuxer runs, whether it is a container Cascade accepts at all (`container`).

pub mod container;

use std::path::Path;

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use pbutils::prelude::*;
use serde::{Deserialize, Serialize};

/// Largest frame side Cascade accepts (8K); beyond this the header is lying or the job is absurd.
pub const MAX_SIDE: u32 = 8192;
/// Longest source accepted, in seconds (12 h).
pub const MAX_DURATION_S: f64 = 12.0 * 3600.0;
/// Widest pixel aspect ratio accepted (and its inverse the narrowest): anamorphic sources use up
/// to 2:1; a header claiming more would blow a small frame up into a huge rendition.
pub const MAX_PIXEL_ASPECT: f64 = 4.0;

/// Why a file cannot be transcoded. The `code()` ends up in the video record.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProbeError {
    #[error("the file is empty")]
    Empty,
    #[error("not a video file GStreamer can read: {0}")]
    Unsupported(String),
    #[error("the file has no video stream (audio-only uploads are not supported)")]
    NoVideo,
    #[error("the file's header claims {0}, which is not a real video")]
    Absurd(String),
    #[error("probing failed: {0}")]
    Internal(String),
}

impl ProbeError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ProbeError::Empty => "empty_file",
            ProbeError::Unsupported(_) => "unsupported_input",
            ProbeError::NoVideo => "no_video_stream",
            ProbeError::Absurd(_) => "invalid_dimensions",
            ProbeError::Internal(_) => "probe_failed",
        }
    }
}

/// What the probe learned about the video stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VideoInfo {
    pub codec: String,
    /// Coded size.
    pub width: u32,
    pub height: u32,
    /// Size as displayed, after rotation.
    pub display_width: u32,
    pub display_height: u32,
    pub fps_num: u32,
    pub fps_den: u32,
    /// Clockwise rotation in degrees from the container's orientation tag.
    pub rotation: u32,
}

/// What the probe learned about the audio stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AudioInfo {
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
}

/// The probed source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MediaInfo {
    pub duration_s: f64,
    pub container: Option<String>,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
}

impl MediaInfo {
    /// The source as shown to users (display size, after rotation); `None` without video.
    pub fn source_info(&self) -> Option<crate::model::SourceInfo> {
        let v = self.video.as_ref()?;
        Some(crate::model::SourceInfo {
            duration_s: self.duration_s,
            width: v.display_width,
            height: v.display_height,
            fps: if v.fps_den > 0 { v.fps_num as f64 / v.fps_den as f64 } else { 0.0 },
            rotation: v.rotation,
            video_codec: v.codec.clone(),
            audio_codec: self.audio.as_ref().map(|a| a.codec.clone()),
            container: self.container.clone(),
        })
    }
}

/// Initializes GStreamer and registers the in-process plugins. Idempotent.
pub fn init_gstreamer() -> Result<(), String> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().map_err(|e| format!("GStreamer init failed: {e}"))?;
        gsthlssink3::plugin_register_static().map_err(|e| format!("hlssink3 registration: {e}"))?;
        gstfmp4::plugin_register_static().map_err(|e| format!("fmp4 registration: {e}"))?;
        demote_uri_demuxers();
        // Optional: without libswscale the rungs scale with videoscale instead.
        if let Err(e) = crate::transcode::swscale::register() {
            tracing::warn!("libswscale scaler unavailable, rungs use videoscale: {e}");
        }
        Ok(())
    })
    .clone()
}

/// Demuxers that open other resources named in their input (HLS/DASH/Smooth Streaming
/// playlists, SDP) get rank NONE, so decodebin and the discoverer never auto-plug them: an input
/// that slipped past the container check still cannot make the server fetch a URL or read a file.
fn demote_uri_demuxers() {
    let registry = gst::Registry::get();
    for feature in registry.features(gst::ElementFactory::static_type()) {
        let Ok(factory) = feature.downcast::<gst::ElementFactory>() else { continue };
        let klass = factory.metadata(gst::ELEMENT_METADATA_KLASS).unwrap_or_default();
        if opens_other_resources(factory.name().as_str(), klass) {
            factory.set_rank(gst::Rank::NONE);
            tracing::debug!(factory = %factory.name(), "demoted: it opens resources its input names");
        }
    }
}

/// Whether an element factory is a demuxer that follows references in its input.
fn opens_other_resources(name: &str, klass: &str) -> bool {
    let demuxer = klass.contains("Demux");
    demuxer
        && (klass.contains("Adaptive")
            || klass.contains("Network")
            || ["sdpdemux", "rtspsrc", "hlsdemux", "dashdemux", "mssdemux"].iter().any(|n| name.starts_with(n)))
}

fn describe_caps(caps: Option<gst::Caps>) -> String {
    caps.and_then(|c| c.structure(0).map(|s| s.name().to_string())).unwrap_or_else(|| "unknown".into())
}

fn rotation_from_tags(tags: Option<gst::TagList>) -> u32 {
    let Some(tags) = tags else { return 0 };
    match tags.get::<gst::tags::ImageOrientation>() {
        Some(v) => match v.get() {
            "rotate-90" | "flip-rotate-90" => 90,
            "rotate-180" | "flip-rotate-180" => 180,
            "rotate-270" | "flip-rotate-270" => 270,
            _ => 0,
        },
        None => 0,
    }
}

/// Probes a file. Blocking: call from a blocking thread.
pub fn probe_file(path: &Path, timeout_s: u64) -> Result<MediaInfo, ProbeError> {
    let meta = std::fs::metadata(path).map_err(|e| ProbeError::Internal(e.to_string()))?;
    if meta.len() == 0 {
        return Err(ProbeError::Empty);
    }
    accepted_container(path)?;
    init_gstreamer().map_err(ProbeError::Internal)?;
    let abs = std::fs::canonicalize(path).map_err(|e| ProbeError::Internal(e.to_string()))?;
    let uri = gst::glib::filename_to_uri(&abs, None).map_err(|e| ProbeError::Internal(e.to_string()))?;
    let disc = pbutils::Discoverer::new(gst::ClockTime::from_seconds(timeout_s)).map_err(|e| ProbeError::Internal(e.to_string()))?;
    let info = disc.discover_uri(&uri).map_err(|e| ProbeError::Unsupported(e.to_string()))?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => return Err(ProbeError::Unsupported("probe timed out".into())),
        pbutils::DiscovererResult::MissingPlugins => return Err(ProbeError::Unsupported("no decoder installed for this format".into())),
        other => return Err(ProbeError::Unsupported(format!("{other:?}"))),
    }
    media_info_from(&info)
}

fn media_info_from(info: &pbutils::DiscovererInfo) -> Result<MediaInfo, ProbeError> {
    let container = info.stream_info().and_then(|s| s.downcast_ref::<pbutils::DiscovererContainerInfo>().map(|_| describe_caps(s.caps())));
    let videos = info.video_streams();
    if !videos.is_empty() && videos.iter().all(|v| v.is_image()) && info.audio_streams().is_empty() {
        return Err(ProbeError::Unsupported("the file is a still image, not a video".into()));
    }
    let video = videos.into_iter().find(|v| !v.is_image()).map(|v| {
        // Container-level tags are deprecated in the API since 1.20 but some demuxers still
        // put the orientation only there.
        #[allow(deprecated)]
        let global = info.tags();
        let rotation = rotation_from_tags(v.tags()).max(rotation_from_tags(global));
        let fr = v.framerate();
        let (w, h) = (v.width(), v.height());
        let par = v.par();
        let (dw, dh) = display_size(w, h, (par.numer().max(0) as u32, par.denom().max(0) as u32), rotation);
        VideoInfo {
            codec: describe_caps(v.caps()),
            width: w,
            height: h,
            display_width: dw,
            display_height: dh,
            fps_num: fr.numer().max(0) as u32,
            fps_den: fr.denom().max(0) as u32,
            rotation,
        }
    });
    let audio = info.audio_streams().into_iter().next().map(|a| AudioInfo {
        codec: describe_caps(a.caps()),
        channels: a.channels(),
        sample_rate: a.sample_rate(),
    });
    let duration_s = info.duration().map(|d| d.nseconds() as f64 / 1e9).unwrap_or(0.0);
    let media = MediaInfo { duration_s, container, video, audio };
    validate(&media)?;
    Ok(media)
}

/// Runs a command with a time limit; kills it when the limit passes. Returns stdout on success.
fn run_with_timeout(cmd: &mut std::process::Command, timeout: std::time::Duration) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => {
                let v = reader.join().unwrap_or_default();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return if status.success() { Ok(v) } else { Err(err.trim().chars().take(500).collect()) };
            }
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timed out".into());
            }
            None => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

fn parse_ratio(s: &str) -> (u32, u32) {
    match s.split_once('/') {
        Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
        None => (s.parse().unwrap_or(0), 1),
    }
}

/// The container of a file, if it is on the allowlist (`unsupported_input` otherwise).
pub fn accepted_container(path: &Path) -> Result<container::Container, ProbeError> {
    container::identify_file(path).map_err(|e| ProbeError::Unsupported(e.to_string()))
}

/// Display size after the pixel aspect ratio `par` (numerator, denominator; 0 means unknown:
/// square) and the rotation. Saturates instead of overflowing; `validate` refuses absurd results.
pub fn display_size(w: u32, h: u32, par: (u32, u32), rotation: u32) -> (u32, u32) {
    let disp_w = match par {
        (n, d) if n > 0 && d > 0 && n != d => u32::try_from(u64::from(w) * u64::from(n) / u64::from(d)).unwrap_or(u32::MAX),
        _ => w,
    };
    if rotation == 90 || rotation == 270 {
        (h, disp_w)
    } else {
        (disp_w, h)
    }
}

/// Probes with `ffprobe` (the fallback when GStreamer cannot read a file or has no plugins),
/// told which demuxer to use and allowed to open the file only.
pub fn probe_ffprobe(path: &Path, timeout_s: u64) -> Result<MediaInfo, ProbeError> {
    let format = accepted_container(path)?.ffmpeg_format();
    let out = run_with_timeout(
        std::process::Command::new("ffprobe")
            .args(["-v", "error", "-protocol_whitelist", "file", "-f", format, "-print_format", "json", "-show_format", "-show_streams"])
            .arg(path),
        std::time::Duration::from_secs(timeout_s),
    )
    .map_err(ProbeError::Unsupported)?;
    let j: serde_json::Value = serde_json::from_slice(&out).map_err(|e| ProbeError::Unsupported(e.to_string()))?;
    let streams = j["streams"].as_array().cloned().unwrap_or_default();
    let format = j["format"]["format_name"].as_str().unwrap_or("");
    if format == "image2" || format.ends_with("_pipe") {
        return Err(ProbeError::Unsupported("the file is a still image, not a video".into()));
    }
    let video =
        streams.iter().find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"].as_i64().unwrap_or(0) == 0).map(|v| {
            let (w, h) = (v["width"].as_u64().unwrap_or(0) as u32, v["height"].as_u64().unwrap_or(0) as u32);
            let rot_side = v["side_data_list"]
                .as_array()
                .and_then(|l| l.iter().find_map(|d| d["rotation"].as_f64()))
                .or_else(|| v["tags"]["rotate"].as_str().and_then(|r| r.parse().ok()))
                .unwrap_or(0.0);
            let rotation = ((-(rot_side as i64)).rem_euclid(360)) as u32;
            let (fps_num, fps_den) =
                parse_ratio(v["avg_frame_rate"].as_str().filter(|r| *r != "0/0").or(v["r_frame_rate"].as_str()).unwrap_or("0/0"));
            let par = v["sample_aspect_ratio"].as_str().map(parse_ratio).unwrap_or((0, 0));
            let (dw, dh) = display_size(w, h, par, rotation);
            VideoInfo {
                codec: v["codec_name"].as_str().unwrap_or("unknown").to_string(),
                width: w,
                height: h,
                display_width: dw,
                display_height: dh,
                fps_num,
                fps_den,
                rotation,
            }
        });
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").map(|a| AudioInfo {
        codec: a["codec_name"].as_str().unwrap_or("unknown").to_string(),
        channels: a["channels"].as_u64().unwrap_or(0) as u32,
        sample_rate: a["sample_rate"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0),
    });
    let duration_s = j["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    let media = MediaInfo { duration_s, container: j["format"]["format_name"].as_str().map(String::from), video, audio };
    validate(&media)?;
    Ok(media)
}

/// GStreamer's probe, and `ffprobe` when GStreamer cannot read the file (missing plugins, broken
/// install) but FFmpeg might. Verdicts about the file itself (empty, no video, absurd) stand.
pub fn probe_any(path: &Path, timeout_s: u64) -> Result<MediaInfo, ProbeError> {
    match probe_file(path, timeout_s) {
        Ok(m) => Ok(m),
        Err(e @ (ProbeError::Empty | ProbeError::NoVideo | ProbeError::Absurd(_))) => Err(e),
        Err(gst_err) => match probe_ffprobe(path, timeout_s) {
            Ok(m) => {
                tracing::warn!(error = %gst_err, "GStreamer could not probe the file; using ffprobe's result");
                Ok(m)
            }
            Err(ProbeError::Unsupported(_)) => Err(gst_err),
            Err(e) => Err(e),
        },
    }
}

/// Rejects what no pipeline should be started for.
pub fn validate(m: &MediaInfo) -> Result<(), ProbeError> {
    let Some(v) = &m.video else {
        if m.audio.is_some() {
            return Err(ProbeError::NoVideo);
        }
        return Err(ProbeError::Unsupported("no audio or video stream found".into()));
    };
    if v.width < 2 || v.height < 2 || v.width > MAX_SIDE || v.height > MAX_SIDE {
        return Err(ProbeError::Absurd(format!("a frame size of {}x{}", v.width, v.height)));
    }
    // The display size is bounded like the coded size: a pixel aspect ratio in a header must not
    // turn a small frame into a huge rendition.
    let (dw, dh) = (v.display_width, v.display_height);
    let upright_w = if v.rotation == 90 || v.rotation == 270 { dh } else { dw };
    let par = f64::from(upright_w) / f64::from(v.width);
    if dw < 2 || dh < 2 || dw > MAX_SIDE || dh > MAX_SIDE || !(1.0 / MAX_PIXEL_ASPECT..=MAX_PIXEL_ASPECT).contains(&par) {
        return Err(ProbeError::Absurd(format!("a display size of {dw}x{dh} for {}x{} pixels", v.width, v.height)));
    }
    if !m.duration_s.is_finite() || m.duration_s > MAX_DURATION_S {
        return Err(ProbeError::Absurd(format!("a duration of {:.0} s", m.duration_s)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(w: u32, h: u32, dur: f64) -> MediaInfo {
        MediaInfo {
            duration_s: dur,
            container: None,
            video: Some(VideoInfo {
                codec: "video/x-h264".into(),
                width: w,
                height: h,
                display_width: w,
                display_height: h,
                fps_num: 30,
                fps_den: 1,
                rotation: 0,
            }),
            audio: None,
        }
    }

    #[test]
    fn validate_rejects_absurd_headers() {
        assert!(validate(&media(1280, 720, 10.0)).is_ok());
        assert_eq!(validate(&media(65535, 720, 10.0)).unwrap_err().code(), "invalid_dimensions");
        assert_eq!(validate(&media(0, 0, 10.0)).unwrap_err().code(), "invalid_dimensions");
        assert_eq!(validate(&media(640, 480, 1e9)).unwrap_err().code(), "invalid_dimensions");
        let mut audio_only = media(2, 2, 1.0);
        audio_only.video = None;
        audio_only.audio = Some(AudioInfo { codec: "audio/mpeg".into(), channels: 2, sample_rate: 48000 });
        assert_eq!(validate(&audio_only).unwrap_err().code(), "no_video_stream");
    }

    #[test]
    fn the_pixel_aspect_ratio_is_bounded_like_the_frame_size() {
        // 64x64 with a sample aspect of 60000:1: refused, not turned into a 6400x64 rendition.
        let (dw, dh) = display_size(64, 64, (60000, 1), 0);
        let mut bomb = media(64, 64, 10.0);
        let v = bomb.video.as_mut().unwrap();
        (v.display_width, v.display_height) = (dw, dh);
        assert_eq!(validate(&bomb).unwrap_err().code(), "invalid_dimensions");
        assert_eq!(display_size(u32::MAX, 2, (u32::MAX, 1), 0).0, u32::MAX, "saturates");
        // Real anamorphic sources pass: DV NTSC 720x480 at 10:11, HDV 1440x1080 at 4:3, rotated.
        assert_eq!(display_size(720, 480, (10, 11), 0), (654, 480));
        assert_eq!(display_size(1440, 1080, (4, 3), 90), (1080, 1920));
        for (w, h, par, rot) in [(720, 480, (10, 11), 0), (1440, 1080, (4, 3), 90), (64, 64, (1, 4), 0)] {
            let mut m = media(w, h, 10.0);
            let v = m.video.as_mut().unwrap();
            (v.display_width, v.display_height) = display_size(w, h, par, rot);
            v.rotation = rot;
            assert!(validate(&m).is_ok(), "{w}x{h} {par:?}");
        }
        let mut thin = media(64, 64, 10.0);
        thin.video.as_mut().unwrap().display_width = 8;
        assert_eq!(validate(&thin).unwrap_err().code(), "invalid_dimensions", "1:8 is beyond the bound");
    }

    #[test]
    fn demuxers_that_open_urls_are_never_auto_plugged() {
        init_gstreamer().unwrap();
        let mut seen = 0;
        for name in ["hlsdemux", "dashdemux", "mssdemux", "sdpdemux"] {
            if let Some(f) = gst::ElementFactory::find(name) {
                seen += 1;
                assert_eq!(f.rank(), gst::Rank::NONE, "{name}");
            }
        }
        assert!(seen >= 2, "gst-plugins-bad/good provide these demuxers on this system");
        assert!(gst::ElementFactory::find("qtdemux").is_some_and(|f| f.rank() > gst::Rank::NONE));
        assert!(opens_other_resources("hlsdemux2", "Codec/Demuxer/Adaptive"));
        assert!(!opens_other_resources("matroskademux", "Codec/Demuxer"));
    }

    #[test]
    fn a_playlist_is_refused_before_any_demuxer() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nhttp://127.0.0.1:9/s.ts\n#EXT-X-ENDLIST\n").unwrap();
        assert_eq!(probe_file(f.path(), 5).unwrap_err().code(), "unsupported_input");
        assert_eq!(probe_ffprobe(f.path(), 5).unwrap_err().code(), "unsupported_input");
    }

    #[test]
    fn empty_file_is_rejected_before_gstreamer() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(probe_file(f.path(), 5).unwrap_err(), ProbeError::Empty);
    }
}
