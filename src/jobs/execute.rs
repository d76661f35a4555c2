//! One job from source file to packaged output, independent of the server: probe result in,
//! renditions chosen, back end run, manifests written as segments land.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tracing::info;

use crate::ladder::Ladder;
use crate::packaging::crypto::KeyMaterial;
use crate::packaging::hls::KeyLine;
use crate::packaging::{PackageSpec, Packager, RenditionSummary, KEY_URI};
use crate::probe::MediaInfo;
use crate::transcode::{TranscodeError, TranscodeEvent, TranscodeRequest, Transcoder};

/// What the job reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum JobProgress {
    /// Fraction of the source done, 0–1.
    Fraction(f64),
    /// Master playlist and MPD are published: the video can be played.
    Playable { renditions: Vec<RenditionSummary> },
    /// An image (`poster.jpg`, `thumbnail.jpg`, `storyboard.jpg`) is available.
    Image(String),
}

/// Limits for one run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub stall_timeout: Duration,
    /// Wall-clock limit = max(min_wall, source duration × wall_factor).
    pub wall_factor: f64,
    pub min_wall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { stall_timeout: Duration::from_secs(60), wall_factor: 10.0, min_wall: Duration::from_secs(300) }
    }
}

/// The result of a finished job.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub renditions: Vec<RenditionSummary>,
    pub duration_s: f64,
}

/// Runs one transcode into `out_dir` (which must be empty or absent). Blocking.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    input: &Path,
    growing: Option<std::sync::Arc<crate::ingest::Growing>>,
    out_dir: &Path,
    scratch_dir: &Path,
    media: &MediaInfo,
    ladder: &Ladder,
    key: Option<&KeyMaterial>,
    backend: &dyn Transcoder,
    limits: &Limits,
    utc_timing_url: &str,
    progress: &mut dyn FnMut(JobProgress),
    cancel: &AtomicBool,
) -> Result<JobOutput, TranscodeError> {
    let renditions = ladder.renditions_for_media(media);
    let req = TranscodeRequest {
        input: input.to_path_buf(),
        out_dir: out_dir.to_path_buf(),
        scratch_dir: scratch_dir.to_path_buf(),
        media: media.clone(),
        ladder: ladder.clone(),
        renditions: renditions.clone(),
        key: key.cloned(),
        stall_timeout: limits.stall_timeout,
        max_wall: limits.min_wall.max(Duration::from_secs_f64(media.duration_s.max(0.0) * limits.wall_factor)),
        growing,
    };
    let spec = PackageSpec {
        out_dir: out_dir.to_path_buf(),
        renditions,
        has_audio: media.audio.is_some(),
        segment_seconds: ladder.segment_seconds,
        fps: req.fps(),
        audio_bitrate_kbps: ladder.audio.bitrate_kbps,
        audio_sample_rate: ladder.audio.sample_rate,
        key: key.map(|k| KeyLine { uri: KEY_URI.into(), iv_hex: k.iv_hex() }),
        source_duration: media.duration_s,
        utc_timing_url: utc_timing_url.to_string(),
    };
    let mut packager = Packager::new(spec).map_err(|e| TranscodeError::Packaging(e.to_string()))?;
    let total = media.duration_s;
    let mut last_fraction = -1.0;
    let mut on_event = |ev: TranscodeEvent| -> Result<(), String> {
        match ev {
            TranscodeEvent::Segment { track, path, duration } => {
                if packager.add_segment(&track, &path, duration).map_err(|e| e.to_string())? {
                    progress(JobProgress::Playable { renditions: packager.summaries() });
                }
            }
            TranscodeEvent::VideoCodec { rung, codecs } => packager.set_video_codec(&rung, &codecs),
            TranscodeEvent::Image(name) => progress(JobProgress::Image(name)),
            TranscodeEvent::Position(s) => {
                if total > 0.0 {
                    // 0.99 at most until the manifests are final.
                    let f = (s / total).clamp(0.0, 0.99);
                    if f - last_fraction >= 0.005 {
                        last_fraction = f;
                        progress(JobProgress::Fraction(f));
                    }
                }
            }
        }
        Ok(())
    };
    backend.run(&req, &mut on_event, cancel)?;
    let renditions = packager.finish().map_err(|e| TranscodeError::Packaging(e.to_string()))?;
    info!(duration_s = packager.duration(), backend = backend.name(), "job packaged");
    Ok(JobOutput { renditions, duration_s: packager.duration() })
}
