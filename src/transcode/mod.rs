//! Transcoding back ends behind one trait. A back end turns a source file into segments under
//! `out_dir/hls/{rung}/` and `out_dir/dash/{rep}/` and reports each finished segment; Cascade's
//! packaging writes every manifest, so the rest of the system never cares which back end ran.

pub mod ffmpeg;
pub mod gst;
pub mod swscale;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::ladder::{Ladder, Rendition};
use crate::model::KeyMaterial;
use crate::packaging::Track;
use crate::probe::MediaInfo;

/// Everything a back end needs for one job.
#[derive(Debug, Clone)]
pub struct TranscodeRequest {
    pub input: PathBuf,
    pub out_dir: PathBuf,
    /// Private scratch space outside the media tree (key files for FFmpeg).
    pub scratch_dir: PathBuf,
    pub media: MediaInfo,
    pub ladder: Ladder,
    pub renditions: Vec<Rendition>,
    /// Encrypt HLS segments with this key (AES-128-CBC).
    pub key: Option<KeyMaterial>,
    /// Fail when the pipeline makes no progress for this long.
    pub stall_timeout: Duration,
    /// Fail when the whole job takes longer than this.
    pub max_wall: Duration,
    /// Set while `input` is still being uploaded (streaming ingest, GStreamer only).
    pub growing: Option<std::sync::Arc<crate::upload::Growing>>,
    /// Set for a live broadcast: the source is this feed, not `input` (GStreamer only).
    pub live: Option<std::sync::Arc<LiveInput>>,
    /// Set when the CMAF tracks are also written in low-latency parts, listed here: a live
    /// broadcast with low latency on, or an upload (GStreamer only).
    pub ll: Option<std::sync::Arc<crate::packaging::llhls::LlStream>>,
    /// Keep the back end's work files (FFmpeg's scratch dir) for debugging.
    pub keep_work: bool,
}

impl TranscodeRequest {
    /// Output frame rate (source rate, capped by the ladder).
    pub fn fps(&self) -> (u32, u32) {
        let v = self.media.video.as_ref();
        self.ladder.output_fps(v.map_or(30, |v| v.fps_num), v.map_or(1, |v| v.fps_den))
    }

    /// The index of the rendition that rendition `i` is scaled from: the rung its `scale_from`
    /// names, when that rung is made for this video (an earlier, taller rendition) and at least
    /// as large in both dimensions. `None`: from the source.
    pub fn scale_parent(&self, i: usize) -> Option<usize> {
        let r = &self.renditions[i];
        let from = self.ladder.scale_from(&r.name)?;
        self.renditions[..i].iter().position(|m| m.name == from && m.width >= r.width && m.height >= r.height)
    }

    /// The low-latency stream this job writes parts for, if any.
    pub fn low_latency(&self) -> Option<&std::sync::Arc<crate::packaging::llhls::LlStream>> {
        self.ll.as_ref()
    }

    fn gop_ns(&self) -> u64 {
        let (n, d) = self.fps();
        u64::from(self.ladder.gop_frames(n, d)) * 1_000_000_000 * u64::from(d.max(1)) / u64::from(n.max(1))
    }

    /// Parts per GOP: a GOP is a whole number of parts, so parts start at every keyframe. Live:
    /// three (1/3 s with the live ladder's 1 s GOPs; the spec advises parts of 1/3 s to 1 s, and
    /// the playlists' PART-HOLD-BACK is three of them). Uploads, whose GOPs are a segment long
    /// (4 s): parts of about `UPLOAD_PART_S`, which also divide the startup segments (0.5 s).
    fn parts_per_gop(&self) -> u64 {
        if self.live.is_some() {
            return LIVE_PARTS_PER_GOP;
        }
        (self.gop_ns() as f64 / (UPLOAD_PART_S * 1e9)).round().max(1.0) as u64
    }

    /// Length (ns) of a low-latency part (a cmafmux chunk).
    pub fn part_ns(&self) -> u64 {
        self.gop_ns() / self.parts_per_gop()
    }

    /// Length (ns) of a low-latency segment as its muxer is told: a whole number of parts. (A
    /// segment of 2 s would be 2 ns longer than six parts of 333 333 333 ns, and cmafmux would then
    /// end it only at the next GOP's end, one GOP later.)
    pub fn ll_segment_ns(&self) -> u64 {
        self.part_ns() * self.parts_per_gop() * u64::from(self.ladder.gops_per_segment())
    }
}

/// Low-latency parts per GOP of a live broadcast (see `TranscodeRequest::parts_per_gop`).
const LIVE_PARTS_PER_GOP: u64 = 3;

/// About how long a low-latency part of an upload is, seconds.
const UPLOAD_PART_S: f64 = 0.5;

/// How much media a live publisher has sent, by the wall clock: the time during which its data
/// kept arriving (a publisher sends in real time, so this is about the media time it has sent).
/// A pause between two arrivals counts `MAX_GAP` at most, so a reconnect window or a stalled
/// uplink adds nothing (the publisher's timeline continues after it). Compared with the media
/// time the ladder has encoded, it tells how far the ladder is behind the publisher, wherever the
/// backlog waits (the feed, the demuxer's queue, the encoders' queues).
#[derive(Debug)]
pub struct ArrivalClock {
    /// (last arrival, time sent so far).
    state: std::sync::Mutex<(std::time::Instant, Duration)>,
}

impl ArrivalClock {
    /// Gaps between arrivals longer than this count as this.
    pub const MAX_GAP: Duration = Duration::from_millis(250);

    /// A clock for a publisher that has been sending since `since` (the data held before the
    /// broadcast started counts as sent as it came).
    pub fn since(since: chrono::DateTime<chrono::Utc>) -> ArrivalClock {
        let sent = (chrono::Utc::now() - since).to_std().unwrap_or_default();
        ArrivalClock { state: std::sync::Mutex::new((std::time::Instant::now(), sent)) }
    }

    /// Data arrived now.
    pub fn arrived(&self) {
        if let Ok(mut s) = self.state.lock() {
            let now = std::time::Instant::now();
            let gap = now.duration_since(s.0).min(Self::MAX_GAP);
            s.1 += gap;
            s.0 = now;
        }
    }

    /// The media time sent so far.
    pub fn sent(&self) -> Duration {
        self.state.lock().map(|s| s.1).unwrap_or_default()
    }
}

/// The bytes of a live broadcast as they arrive (an FLV stream: header, then tags). The channel
/// closing ends the stream. Taken once, by the pipeline's source.
pub struct LiveInput {
    /// The caps of the bytes (`video/x-flv`, `video/mpegts,systemstream=true`).
    pub caps: &'static str,
    pub rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>>,
    /// When the publisher's first media arrived (media time 0 in wall-clock time).
    pub first_media: chrono::DateTime<chrono::Utc>,
    /// Kept by the publisher's connection; read to tell whether the ladder keeps up.
    pub clock: std::sync::Arc<ArrivalClock>,
}

impl std::fmt::Debug for LiveInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveInput").field("caps", &self.caps).finish_non_exhaustive()
    }
}

/// What a back end reports while it runs.
#[derive(Debug, Clone)]
pub enum TranscodeEvent {
    /// A segment is complete on disk under its final name.
    Segment { track: Track, path: PathBuf, duration: f64 },
    /// RFC 6381 codecs string of a rung's video, from the encoder's caps.
    VideoCodec { rung: String, codecs: String },
    /// Seconds of the source processed so far.
    Position(f64),
    /// An image under `images/` is complete (poster, thumbnail, storyboard sprite + VTT).
    Image(String),
    /// Live: the ladder could not keep up with the publisher, so this rung's encoder was stopped
    /// for the rest of the broadcast (its last segments may still be reported; they are not
    /// listed).
    RungDropped { rung: String },
}

/// Why a transcode failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TranscodeError {
    /// The back end could not even start (missing plugin or binary): another back end may work.
    #[error("cannot build the pipeline: {0}")]
    Build(String),
    /// The media failed to decode or encode.
    #[error("transcoding failed: {0}")]
    Runtime(String),
    #[error("transcoding stalled: no progress for {0} s")]
    Stalled(u64),
    #[error("transcoding took longer than the limit of {0} s")]
    TimedOut(u64),
    #[error("cancelled")]
    Cancelled,
    /// The transcoder process was killed from outside (OOM killer, an operator): worth a retry.
    #[error("the transcoder was killed: {0}")]
    Killed(String),
    /// The consumer of events refused one (packaging failed: disk full, …).
    #[error("packaging failed: {0}")]
    Packaging(String),
    /// The object store refused or did not answer (a scaled set-up).
    #[error("object storage: {0}")]
    Storage(String),
}

impl TranscodeError {
    /// Stable machine-readable code for the record.
    pub fn code(&self) -> &'static str {
        match self {
            TranscodeError::Build(_) => "backend_unavailable",
            TranscodeError::Runtime(_) => "transcode_failed",
            TranscodeError::Stalled(_) => "transcode_stalled",
            TranscodeError::TimedOut(_) => "transcode_timeout",
            TranscodeError::Cancelled => "cancelled",
            TranscodeError::Killed(_) => "transcoder_killed",
            TranscodeError::Packaging(_) => "packaging_failed",
            TranscodeError::Storage(_) => "storage_unavailable",
        }
    }
}

impl TranscodeError {
    /// Whether running the same job again may succeed (the input is not to blame).
    pub fn is_transient(&self) -> bool {
        matches!(self, TranscodeError::Killed(_) | TranscodeError::Stalled(_) | TranscodeError::Storage(_))
    }
}

/// The limits every back end's loop enforces: cancellation, the wall-clock limit and the stall
/// watchdog (no progress for `stall_timeout`).
pub struct Watchdog<'a> {
    cancel: &'a AtomicBool,
    started: std::time::Instant,
    last_progress: std::time::Instant,
    max_wall: Duration,
    stall_timeout: Duration,
}

impl<'a> Watchdog<'a> {
    /// Starts the clocks for a job.
    pub fn new(req: &TranscodeRequest, cancel: &'a AtomicBool) -> Watchdog<'a> {
        let now = std::time::Instant::now();
        Watchdog { cancel, started: now, last_progress: now, max_wall: req.max_wall, stall_timeout: req.stall_timeout }
    }

    /// Records progress (resets the stall timer).
    pub fn progressed(&mut self) {
        self.last_progress = std::time::Instant::now();
    }

    /// Seconds since the job started.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Err when the job must stop now.
    pub fn check(&self) -> Result<(), TranscodeError> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TranscodeError::Cancelled);
        }
        if self.started.elapsed() > self.max_wall {
            return Err(TranscodeError::TimedOut(self.max_wall.as_secs()));
        }
        if self.last_progress.elapsed() > self.stall_timeout {
            return Err(TranscodeError::Stalled(self.stall_timeout.as_secs()));
        }
        Ok(())
    }
}

/// Receives events; an `Err` stops the transcode.
pub type EventSink<'a> = dyn FnMut(TranscodeEvent) -> Result<(), String> + 'a;

/// A transcoding back end. `run` blocks until the job ends: call it from a blocking thread.
pub trait Transcoder: Send + Sync {
    /// `gstreamer` or `ffmpeg`, as stored in the record.
    fn name(&self) -> &'static str;
    /// Runs the job to the end, reporting segments as they land.
    fn run(&self, req: &TranscodeRequest, events: &mut EventSink<'_>, cancel: &AtomicBool) -> Result<(), TranscodeError>;
}

/// A request for unit tests of both back ends: a 10 s 1280x720 30 fps H.264 source (with or
/// without stereo audio) on the shipped ladder, no key, paths that are never written.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::TranscodeRequest;
    use crate::ladder::Ladder;
    use crate::probe::{AudioInfo, MediaInfo, VideoInfo};

    /// The request, with audio or without.
    pub(crate) fn request(audio: bool) -> TranscodeRequest {
        let ladder = Ladder::parse(include_str!("../../pipelines/ladder.toml")).unwrap();
        let renditions = ladder.renditions_for(1280, 720);
        TranscodeRequest {
            input: PathBuf::from("/in/source"),
            out_dir: PathBuf::from("/out"),
            scratch_dir: PathBuf::from("/scratch"),
            media: MediaInfo {
                duration_s: 10.0,
                container: None,
                video: Some(VideoInfo {
                    codec: "video/x-h264".into(),
                    width: 1280,
                    height: 720,
                    display_width: 1280,
                    display_height: 720,
                    fps_num: 30,
                    fps_den: 1,
                    rotation: 0,
                }),
                audio: audio.then(|| AudioInfo { codec: "audio/mpeg".into(), channels: 2, sample_rate: 44100 }),
            },
            ladder,
            renditions,
            key: None,
            stall_timeout: Duration::from_secs(60),
            max_wall: Duration::from_secs(600),
            growing: None,
            live: None,
            ll: None,
            keep_work: false,
        }
    }
}
