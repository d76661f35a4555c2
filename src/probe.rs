//! Probing an upload with GStreamer's Discoverer: what it is, how long, how big, which way up.

use std::path::Path;

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gst::prelude::*;
use pbutils::prelude::*;
use serde::{Deserialize, Serialize};

/// Largest frame side Cascade accepts (8K); beyond this the header is lying or the job is absurd.
pub const MAX_SIDE: u32 = 8192;
/// Longest source accepted, in seconds (12 h).
pub const MAX_DURATION_S: f64 = 12.0 * 3600.0;

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

/// Initializes GStreamer and registers the in-process plugins. Idempotent.
pub fn init_gstreamer() -> Result<(), String> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().map_err(|e| format!("GStreamer init failed: {e}"))?;
        gsthlssink3::plugin_register_static().map_err(|e| format!("hlssink3 registration: {e}"))?;
        gstfmp4::plugin_register_static().map_err(|e| format!("fmp4 registration: {e}"))?;
        Ok(())
    })
    .clone()
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
    init_gstreamer().map_err(ProbeError::Internal)?;
    let abs = std::fs::canonicalize(path).map_err(|e| ProbeError::Internal(e.to_string()))?;
    let uri = gst::glib::filename_to_uri(&abs, None)
        .map_err(|e| ProbeError::Internal(e.to_string()))?;
    let disc = pbutils::Discoverer::new(gst::ClockTime::from_seconds(timeout_s))
        .map_err(|e| ProbeError::Internal(e.to_string()))?;
    let info = disc.discover_uri(&uri).map_err(|e| ProbeError::Unsupported(e.to_string()))?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => {
            return Err(ProbeError::Unsupported("probe timed out".into()))
        }
        pbutils::DiscovererResult::MissingPlugins => {
            return Err(ProbeError::Unsupported("no decoder installed for this format".into()))
        }
        other => return Err(ProbeError::Unsupported(format!("{other:?}"))),
    }
    media_info_from(&info)
}

fn media_info_from(info: &pbutils::DiscovererInfo) -> Result<MediaInfo, ProbeError> {
    let container = info.stream_info().and_then(|s| {
        s.downcast_ref::<pbutils::DiscovererContainerInfo>().map(|_| describe_caps(s.caps()))
    });
    let video = info
        .video_streams()
        .into_iter()
        .find(|v| !v.is_image())
        .map(|v| {
            let rotation = rotation_from_tags(v.tags()).max(rotation_from_tags(info.tags()));
            let fr = v.framerate();
            let (w, h) = (v.width(), v.height());
            // Non-square pixels: display width follows the pixel aspect ratio.
            let par = v.par();
            let disp_w = if par.numer() > 0 && par.denom() > 0 && par.numer() != par.denom() {
                ((w as u64 * par.numer() as u64) / par.denom() as u64) as u32
            } else {
                w
            };
            let (dw, dh) = if rotation == 90 || rotation == 270 { (h, disp_w) } else { (disp_w, h) };
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
    fn empty_file_is_rejected_before_gstreamer() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(probe_file(f.path(), 5).unwrap_err(), ProbeError::Empty);
    }
}
