//! One job from source file to packaged output, the same for `cascade transcode` and the server's
//! workers: a [`JobSpec`] in, [`probe`] the source, [`transcode_with_fallback`] through the back
//! ends in order (each run packaged by [`execute`]), an [`Outcome`] out. Nothing here touches the
//! store: the worker records the outcome, the CLI prints it. Blocking: run it off the executor.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::BackendChoice;
use crate::ladder::Ladder;
use crate::model::{KeyMaterial, RenditionSummary};
use crate::packaging::hls::KeyLine;
use crate::packaging::llhls::LlSpec;
use crate::packaging::{PackageSpec, Packager, AUDIO_REP, KEY_URI};
use crate::probe::{self, MediaInfo, ProbeError};
use crate::transcode::ffmpeg::FfmpegTranscoder;
use crate::transcode::gst::GstTranscoder;
use crate::transcode::{TranscodeError, TranscodeEvent, TranscodeRequest, Transcoder};
use crate::upload::Growing;

/// Seconds the probe may take.
const PROBE_TIMEOUT_S: u64 = 30;

/// Limits for one run, from `Config` (the same for the CLI and the server).
#[derive(Debug, Clone)]
pub struct Limits {
    pub stall_timeout: Duration,
    /// Wall-clock limit = max(min_wall, source duration × wall_factor).
    pub wall_factor: f64,
    pub min_wall: Duration,
}

impl Limits {
    /// The limits the settings ask for.
    pub fn from_config(c: &crate::config::Config) -> Limits {
        Limits { stall_timeout: c.stall_timeout, wall_factor: c.job_timeout_factor, min_wall: Duration::from_secs(300) }
    }

    fn max_wall(&self, duration_s: f64) -> Duration {
        self.min_wall.max(Duration::from_secs_f64(duration_s.max(0.0) * self.wall_factor))
    }
}

/// Everything one job needs, independent of the server.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub input: PathBuf,
    /// Set while `input` is still being uploaded (streamed transcode, GStreamer only).
    pub growing: Option<Arc<Growing>>,
    /// Set for a live broadcast: the source is this feed (GStreamer only, no probe).
    pub live: Option<Arc<crate::transcode::LiveInput>>,
    /// Set when the CMAF tracks are also written in low-latency parts, listed here: a broadcast
    /// with low latency on, or an upload while it is processing. GStreamer back end only.
    pub ll: Option<Arc<crate::packaging::llhls::LlStream>>,
    /// Where the `hls/` and `dash/` trees go (emptied before each back end's run).
    pub out_dir: PathBuf,
    /// Private scratch space outside the media tree.
    pub scratch_dir: PathBuf,
    pub ladder: Ladder,
    /// Encrypt HLS segments with this key; `None` writes clear segments (CLI `--clear`).
    pub key: Option<KeyMaterial>,
    pub backend: BackendChoice,
    pub limits: Limits,
    /// Keep the FFmpeg back end's work files (debugging).
    pub keep_work: bool,
    /// URL of Cascade's clock for dynamic MPDs.
    pub utc_timing_url: String,
    /// Object storage: the output is put in the bucket as it is finished.
    pub publish: Option<crate::storage::Publisher>,
}

/// What a job reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum JobProgress {
    /// Fraction of the source done, 0–1.
    Fraction(f64),
    /// Master playlist and MPD are published: the video can be played.
    Playable { renditions: Vec<RenditionSummary> },
    /// An image (`poster.jpg`, `thumbnail.jpg`, `storyboard.jpg`) is available.
    Image(String),
    /// Seconds of a live broadcast encoded so far (live only, about once a second of media).
    Position(f64),
    /// Live: the ladder could not keep up, `rung` was dropped for the rest of the broadcast;
    /// `renditions` are those still listed.
    RungDropped { rung: String, renditions: Vec<RenditionSummary> },
}

/// The result of a finished run.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub renditions: Vec<RenditionSummary>,
    pub duration_s: f64,
}

/// How the back ends went: the one that ran last, its result, and why the ones before it failed.
#[derive(Debug)]
pub struct Outcome {
    pub backend: &'static str,
    pub result: Result<JobOutput, TranscodeError>,
    /// `backend: error` of each back end that failed before the last one ran.
    pub earlier_failures: Vec<String>,
}

/// The back ends to try, in order, for a setting. A streamed transcode is GStreamer-only (the
/// FFmpeg back end reads files).
pub fn backends(choice: BackendChoice, streaming: bool) -> Vec<Box<dyn Transcoder>> {
    match choice {
        _ if streaming => vec![Box::new(GstTranscoder)],
        BackendChoice::Gstreamer => vec![Box::new(GstTranscoder)],
        BackendChoice::Ffmpeg => vec![Box::new(FfmpegTranscoder)],
        BackendChoice::Auto => vec![Box::new(GstTranscoder), Box::new(FfmpegTranscoder)],
    }
}

/// What the source is. A file still arriving is probed as it is (GStreamer's discoverer); a
/// complete one with the fallback prober too.
pub fn probe(spec: &JobSpec) -> Result<MediaInfo, ProbeError> {
    if spec.growing.is_some() {
        probe::probe_file(&spec.input, PROBE_TIMEOUT_S)
    } else {
        probe::probe_any(&spec.input, PROBE_TIMEOUT_S)
    }
}

/// Runs the back ends in order until one succeeds. Each starts from an empty output directory.
/// Cancellation stops at once; any other failure moves on to the next back end.
pub fn transcode_with_fallback(spec: &JobSpec, media: &MediaInfo, progress: &mut dyn FnMut(JobProgress), cancel: &AtomicBool) -> Outcome {
    let mut earlier_failures = Vec::new();
    let list = backends(spec.backend, spec.growing.is_some());
    let last = list.len() - 1;
    for (i, backend) in list.iter().enumerate() {
        if let Err(e) = reset_dir(&spec.out_dir) {
            return Outcome { backend: backend.name(), result: Err(TranscodeError::Packaging(e.to_string())), earlier_failures };
        }
        // What the back end before this one published goes too.
        if let Some(p) = spec.publish.as_ref().filter(|_| i > 0) {
            p.reset();
        }
        let result = execute(spec, media, backend.as_ref(), progress, cancel);
        match result {
            Err(e) if i < last && !matches!(e, TranscodeError::Cancelled) => {
                warn!(backend = backend.name(), error = %e, "back end failed; trying the next one");
                earlier_failures.push(format!("{}: {e}", backend.name()));
            }
            result => return Outcome { backend: backend.name(), result, earlier_failures },
        }
    }
    unreachable!("the last back end always returns")
}

/// Empties (or creates) a directory.
fn reset_dir(dir: &Path) -> std::io::Result<()> {
    crate::app::remove_dir(dir)?;
    std::fs::create_dir_all(dir)
}

/// Runs one back end into `spec.out_dir`, writing the manifests as segments land.
pub fn execute(
    spec: &JobSpec,
    media: &MediaInfo,
    backend: &dyn Transcoder,
    progress: &mut dyn FnMut(JobProgress),
    cancel: &AtomicBool,
) -> Result<JobOutput, TranscodeError> {
    let renditions = spec.ladder.renditions_for_media(media);
    let req = TranscodeRequest {
        input: spec.input.clone(),
        out_dir: spec.out_dir.clone(),
        scratch_dir: spec.scratch_dir.clone(),
        media: media.clone(),
        ladder: spec.ladder.clone(),
        renditions: renditions.clone(),
        key: spec.key.clone(),
        stall_timeout: spec.limits.stall_timeout,
        max_wall: spec.limits.max_wall(media.duration_s),
        growing: spec.growing.clone(),
        live: spec.live.clone(),
        // The FFmpeg back end writes no parts: for its run the stream is reset (below) and no LL
        // playlists are written.
        ll: spec.ll.clone().filter(|_| backend.name() == "gstreamer"),
        keep_work: spec.keep_work,
    };
    let package = PackageSpec {
        out_dir: spec.out_dir.clone(),
        renditions,
        has_audio: media.audio.is_some(),
        segment_seconds: spec.ladder.segment_seconds,
        fps: req.fps(),
        audio_bitrate_kbps: spec.ladder.audio.bitrate_kbps,
        audio_sample_rate: spec.ladder.audio.sample_rate,
        key: spec.key.as_ref().map(|k| KeyLine { uri: KEY_URI.into(), iv_hex: k.iv_hex() }),
        source_duration: media.duration_s,
        utc_timing_url: spec.utc_timing_url.clone(),
        live_start: spec.live.as_ref().map(|l| l.first_media),
        ll: req.low_latency().cloned(),
        publish: spec.publish.clone(),
    };
    // A back end that writes no parts lists none (nor what an earlier one listed).
    if let (None, Some(ll)) = (req.low_latency(), spec.ll.as_ref()) {
        ll.reset();
    }
    if let Some(ll) = req.low_latency() {
        // PART-TARGET: the part length (header durations never exceed it) with 5 % of headroom
        // for a last part of a segment that ends on a keyframe a frame late; parts then stay
        // above the spec's 85 % of it.
        let part_s = req.part_ns() as f64 / 1e9;
        ll.configure(LlSpec {
            segment_seconds: spec.ladder.segment_seconds,
            part_target: (part_s * 1.05 * 1000.0).ceil() / 1000.0,
            part_s,
            key: package.key.clone(),
            // An upload's media time 0 is when its transcode started.
            start: req.live.as_ref().map_or_else(chrono::Utc::now, |l| l.first_media),
            live: req.live.is_some(),
            tracks: package.renditions.iter().map(|r| r.name.clone()).chain(package.has_audio.then(|| AUDIO_REP.to_string())).collect(),
        });
    }
    let mut packager = Packager::new(package).map_err(|e| TranscodeError::Packaging(e.to_string()))?;
    let mut fraction = FractionReport::new(media.duration_s);
    let mut last_position = f64::NEG_INFINITY;
    let mut on_event = |ev: TranscodeEvent| -> Result<(), String> {
        match ev {
            TranscodeEvent::Segment { track, path, duration } => {
                if packager.add_segment(&track, &path, duration).map_err(|e| e.to_string())? {
                    progress(JobProgress::Playable { renditions: packager.summaries() });
                }
            }
            TranscodeEvent::VideoCodec { rung, codecs } => packager.set_video_codec(&rung, &codecs),
            TranscodeEvent::Image(name) => {
                if let Some(p) = &spec.publish {
                    p.file(&Path::new(crate::packaging::images::DIR).join(&name));
                }
                progress(JobProgress::Image(name))
            }
            TranscodeEvent::RungDropped { rung } => {
                packager.drop_rendition(&rung).map_err(|e| e.to_string())?;
                progress(JobProgress::RungDropped { rung, renditions: packager.summaries() });
            }
            TranscodeEvent::Position(s) => {
                if let Some(f) = fraction.next(s) {
                    progress(JobProgress::Fraction(f));
                }
                if spec.live.is_some() && s >= last_position + 1.0 {
                    last_position = s;
                    progress(JobProgress::Position(s));
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

/// Turns positions into progress fractions worth reporting (every half per cent).
struct FractionReport {
    total_s: f64,
    last: f64,
}

impl FractionReport {
    fn new(total_s: f64) -> Self {
        FractionReport { total_s, last: -1.0 }
    }

    fn next(&mut self, position_s: f64) -> Option<f64> {
        if self.total_s <= 0.0 {
            return None;
        }
        // 0.99 at most until the manifests are final.
        let f = (position_s / self.total_s).clamp(0.0, 0.99);
        (f - self.last >= 0.005).then(|| {
            self.last = f;
            f
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_reported_in_steps_and_capped() {
        let mut f = FractionReport::new(100.0);
        assert_eq!(f.next(0.0), Some(0.0));
        assert_eq!(f.next(0.2), None);
        assert_eq!(f.next(1.0), Some(0.01));
        assert_eq!(f.next(120.0), Some(0.99));
        assert_eq!(FractionReport::new(0.0).next(5.0), None);
    }

    #[test]
    fn streaming_runs_gstreamer_only() {
        let names = |c, s| backends(c, s).iter().map(|b| b.name()).collect::<Vec<_>>();
        assert_eq!(names(BackendChoice::Auto, false), ["gstreamer", "ffmpeg"]);
        assert_eq!(names(BackendChoice::Auto, true), ["gstreamer"]);
        assert_eq!(names(BackendChoice::Ffmpeg, true), ["gstreamer"]);
        assert_eq!(names(BackendChoice::Ffmpeg, false), ["ffmpeg"]);
    }
}
