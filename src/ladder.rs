//! The encoding ladder: `pipelines/ladder.toml` parsed and validated, and the choice of
//! renditions for one source.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::probe::MediaInfo;

/// Errors in the ladder file; all of them stop start-up.
#[derive(Debug, thiserror::Error)]
pub enum LadderError {
    #[error("cannot read ladder file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid ladder file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Audio settings shared by every rendition.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AudioPreset {
    pub codec: String,
    pub bitrate_kbps: u32,
    pub channels: u32,
    pub sample_rate: u32,
}

/// x264 settings shared by every rung (and by both back ends).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoPreset {
    pub preset: String,
    pub profile: String,
    pub max_fps: u32,
    /// B-frames between reference frames (x264 `bframes`).
    pub bframes: u32,
    /// x264 `tune` (GStreamer back end), e.g. `zerolatency`; none for uploads.
    #[serde(default)]
    pub tune: Option<String>,
}

/// How live broadcasts differ from uploads: short segments of short GOPs and an encoder tuned for
/// latency. Everything else (rungs, audio, profile) is the upload ladder's.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LivePreset {
    pub segment_seconds: u32,
    /// Keyframe interval (GOP length) in seconds; `segment_seconds` must be a whole number of
    /// GOPs. A live HLS segment is listed once the GOP *after* it is complete (splitmuxsink
    /// decides where a segment ends when that GOP arrives), so with 1 s GOPs in 2 s segments a
    /// segment is listed 3 s after its first frame instead of 4 s. Default 1.
    #[serde(default = "one_second")]
    pub keyframe_seconds: f64,
    pub preset: String,
    pub tune: String,
}

fn one_second() -> f64 {
    1.0
}

impl Default for LivePreset {
    fn default() -> Self {
        LivePreset { segment_seconds: 2, keyframe_seconds: 1.0, preset: "veryfast".into(), tune: "zerolatency".into() }
    }
}

/// x264 tunes GStreamer's x264enc takes (its `tune` flags).
const X264_TUNES: &[&str] = &["stillimage", "fastdecode", "zerolatency"];

/// One rung of the ladder as written in the file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    pub name: String,
    /// Short side in pixels (height for landscape, width for portrait).
    pub height: u32,
    pub bitrate_kbps: u32,
    /// x264 threads for this rung in the GStreamer back end (0 or absent: x264's own choice,
    /// 1.5 × cores). Every rung encodes in its own thread already, so small rungs gain nothing
    /// from frame threads. The FFmpeg back end ignores it: a single-threaded libx264 would run in
    /// ffmpeg's main thread, one rung after the other.
    #[serde(default)]
    pub x264_threads: u32,
    /// Scaler for this rung in the GStreamer back end: `swscale` (libswscale's bicubic, the
    /// default), `swscale-lanczos` or a videoscale `method`. The FFmpeg back end uses libswscale's
    /// Lanczos for `swscale-lanczos` and `lanczos`, its bicubic for the others.
    #[serde(default)]
    pub scaler: Option<String>,
    /// videoscale `sharpness` (0.5–1.5, default 1): above 1 narrows the filter (fewer taps).
    /// Not used by `swscale`.
    #[serde(default)]
    pub scaler_sharpness: Option<f64>,
    /// Scale this rung from the frames of the named (taller) rung instead of from the source,
    /// when that rung is made for the video (both back ends). Absent: from the source.
    #[serde(default)]
    pub scale_from: Option<String>,
    /// More x264 options for this rung (`key=value` pairs joined by `:`, as x264's `--opts`;
    /// both back ends). Options that would change the GOP or the frame types every rung shares
    /// (keyint, keyint-min/min-keyint, scenecut, open-gop, bframes, b-adapt, b-pyramid, …) are
    /// refused: segments must stay aligned across rungs.
    #[serde(default)]
    pub x264_options: Option<String>,
}

/// x264 options a rung may not set: they belong to the whole ladder (aligned GOPs, frame types).
const LADDER_X264_OPTIONS: &[&str] = &[
    "keyint",
    "keyint-min",
    "min-keyint",
    "scenecut",
    "open-gop",
    "bframes",
    "b-adapt",
    "b-pyramid",
    "intra-refresh",
    "stitchable",
    "fps",
    "force-cfr",
];

/// Checks a rung's `x264_options`: `key=value` pairs joined by `:`, plain characters only, none
/// of `LADDER_X264_OPTIONS`.
fn check_x264_options(opts: &str) -> Result<(), String> {
    if opts.len() > 512 {
        return Err("x264_options is longer than 512 characters".into());
    }
    for pair in opts.split(':') {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("x264_options: {pair:?} is not key=value"))?;
        let plain = |t: &str, extra: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
        if !plain(key, "_-") || !plain(value, "_-.,+/") {
            return Err(format!("x264_options: {pair:?} is not a plain key=value"));
        }
        if LADDER_X264_OPTIONS.contains(&key.replace('_', "-").as_str()) {
            return Err(format!("x264_options: {key} is set by the ladder for every rung"));
        }
    }
    Ok(())
}

/// The `scaler` value for libswscale's bicubic (Cascade's `cascadeswscale` element).
pub const SWSCALE: &str = "swscale";
/// The `scaler` value for libswscale's Lanczos (the same element, `method=lanczos`).
pub const SWSCALE_LANCZOS: &str = "swscale-lanczos";

/// Scalers a rung may name: `swscale`, `swscale-lanczos`, or GStreamer 1.22's GstVideoScaleMethod
/// nicks for videoscale.
const SCALERS: &[&str] = &[
    SWSCALE,
    SWSCALE_LANCZOS,
    "nearest-neighbour",
    "bilinear",
    "4-tap",
    "lanczos",
    "bilinear2",
    "sinc",
    "hermite",
    "spline",
    "catrom",
    "mitchell",
];

/// The whole ladder file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ladder {
    pub segment_seconds: u32,
    /// Length of each of the first two segments, in seconds (0: every segment is
    /// `segment_seconds` long; GStreamer back end only — the FFmpeg back end keeps uniform
    /// segments). Short startup segments make a video playable sooner: an HLS
    /// segment is only closed once the GOP after it is complete, so the first segment of every
    /// rung exists after `2 × startup_segment_seconds` of video instead of `2 × segment_seconds`.
    #[serde(default)]
    pub startup_segment_seconds: f64,
    pub audio: AudioPreset,
    pub video: VideoPreset,
    #[serde(rename = "rung")]
    pub rungs: Vec<Rung>,
    #[serde(default)]
    pub live: LivePreset,
    /// Keyframe interval in seconds when it is shorter than a segment (live only, from
    /// `[live] keyframe_seconds`; 0: one GOP per segment).
    #[serde(skip)]
    pub keyframe_seconds: f64,
}

/// A rendition to produce for one particular source.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Rendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
}

const X264_PRESETS: &[&str] = &["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"];

impl Ladder {
    /// Reads and validates a ladder file.
    pub fn load(path: &Path) -> Result<Ladder, LadderError> {
        let text = std::fs::read_to_string(path).map_err(|source| LadderError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|message| LadderError::Invalid { path: path.display().to_string(), message })
    }

    /// Parses and validates ladder TOML text.
    pub fn parse(text: &str) -> Result<Ladder, String> {
        let ladder: Ladder = toml::from_str(text).map_err(|e| e.to_string())?;
        ladder.validate()?;
        Ok(ladder)
    }

    /// The ladder of a live broadcast: the live preset's segments and encoder settings, no
    /// startup segments (every segment is a whole GOP from the first).
    pub fn for_live(&self) -> Ladder {
        let mut l = self.clone();
        l.segment_seconds = self.live.segment_seconds;
        l.keyframe_seconds = self.live.keyframe_seconds;
        l.startup_segment_seconds = 0.0;
        l.video.preset = self.live.preset.clone();
        l.video.tune = Some(self.live.tune.clone());
        l.video.bframes = 0;
        l
    }

    /// The ladder without the rungs taller than `max_height` (short side in pixels), as a live
    /// stream's `max_height` asks; the smallest rung stays whatever the cap.
    pub fn capped(mut self, max_height: Option<u32>) -> Ladder {
        if let Some(cap) = max_height {
            let smallest = self.smallest_rung_height();
            self.rungs.retain(|r| r.height <= cap.max(smallest));
        }
        self
    }

    /// The short side of the smallest rung.
    pub fn smallest_rung_height(&self) -> u32 {
        self.rungs.iter().map(|r| r.height).min().unwrap_or(0)
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=10).contains(&self.live.segment_seconds) {
            return Err("live.segment_seconds must be between 1 and 10".into());
        }
        let k = self.live.keyframe_seconds;
        let gops = self.live.segment_seconds as f64 / k;
        if !(0.25..=self.live.segment_seconds as f64).contains(&k) || (gops - gops.round()).abs() > 1e-6 {
            return Err("live.keyframe_seconds must be at least 0.25 and divide live.segment_seconds into whole GOPs".into());
        }
        if !X264_PRESETS.contains(&self.live.preset.as_str()) {
            return Err(format!("unknown x264 preset {:?} in [live]", self.live.preset));
        }
        for t in self.live.tune.split('+').chain(self.video.tune.iter().flat_map(|t| t.split('+'))) {
            if !X264_TUNES.contains(&t) {
                return Err(format!("unknown x264 tune {t:?}; the tunes are {}", X264_TUNES.join(", ")));
            }
        }
        if !(1..=30).contains(&self.segment_seconds) {
            return Err("segment_seconds must be between 1 and 30".into());
        }
        let startup = self.startup_segment_seconds;
        if startup != 0.0 && !(0.2..=self.segment_seconds as f64 / 2.0).contains(&startup) {
            return Err("startup_segment_seconds must be 0 or between 0.2 and segment_seconds / 2".into());
        }
        if self.rungs.is_empty() {
            return Err("at least one [[rung]] is required".into());
        }
        if !X264_PRESETS.contains(&self.video.preset.as_str()) {
            return Err(format!("unknown x264 preset {:?}", self.video.preset));
        }
        if !["baseline", "main", "high"].contains(&self.video.profile.as_str()) {
            return Err(format!("unsupported H.264 profile {:?}", self.video.profile));
        }
        if self.video.bframes > 16 {
            return Err("video.bframes must be 0–16".into());
        }
        if !(1..=120).contains(&self.video.max_fps) {
            return Err("video.max_fps must be between 1 and 120".into());
        }
        if self.audio.codec != "aac" {
            return Err("only audio.codec = \"aac\" is supported".into());
        }
        if !(16..=512).contains(&self.audio.bitrate_kbps) || !(1..=2).contains(&self.audio.channels) {
            return Err("audio bitrate must be 16–512 kbps and channels 1 or 2".into());
        }
        if ![22050, 32000, 44100, 48000].contains(&self.audio.sample_rate) {
            return Err("audio.sample_rate must be 22050, 32000, 44100 or 48000".into());
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.rungs {
            if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || r.name == "audio" {
                return Err(format!("rung name {:?} must be [A-Za-z0-9_-]+ and not \"audio\"", r.name));
            }
            if !names.insert(r.name.clone()) {
                return Err(format!("duplicate rung name {:?}", r.name));
            }
            if r.height < 16 || r.height > 4320 || r.height % 2 != 0 {
                return Err(format!("rung {}: height must be even, 16–4320", r.name));
            }
            if r.scaler.as_deref().is_some_and(|m| !SCALERS.contains(&m)) {
                return Err(format!("rung {}: scaler must be one of {}", r.name, SCALERS.join(", ")));
            }
            if r.scaler_sharpness.is_some_and(|x| !(0.5..=1.5).contains(&x)) {
                return Err(format!("rung {}: scaler_sharpness must be 0.5–1.5", r.name));
            }
            if let Some(from) = &r.scale_from {
                if !self.rungs.iter().any(|o| &o.name == from && o.height > r.height) {
                    return Err(format!("rung {}: scale_from must name a taller rung of the ladder", r.name));
                }
            }
            if let Some(opts) = &r.x264_options {
                check_x264_options(opts).map_err(|e| format!("rung {}: {e}", r.name))?;
            }
            if r.x264_threads > 64 {
                return Err(format!("rung {}: x264_threads must be 0 (auto) to 64", r.name));
            }
            if r.bitrate_kbps < 50 || r.bitrate_kbps > 100_000 {
                return Err(format!("rung {}: bitrate_kbps must be 50–100000", r.name));
            }
        }
        Ok(())
    }

    /// The renditions for a source of display size `width`×`height` (after rotation), highest first.
    ///
    /// Never upscales; portrait stays portrait; every dimension is even; a source smaller than the
    /// lowest rung gets one rendition at its own (even) size.
    pub fn renditions_for(&self, width: u32, height: u32) -> Vec<Rendition> {
        let (w, h) = (width.max(2), height.max(2));
        let portrait = h > w;
        let short = w.min(h);
        let long = w.max(h);
        let mut rungs: Vec<&Rung> = self.rungs.iter().collect();
        rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
        let mut out: Vec<Rendition> = rungs
            .iter()
            .filter(|r| r.height <= short)
            .map(|r| {
                let s = r.height;
                let l = even((long as u64 * s as u64) as f64 / short as f64);
                let (rw, rh) = if portrait { (s, l) } else { (l, s) };
                Rendition { name: r.name.clone(), width: rw, height: rh, bitrate_kbps: r.bitrate_kbps }
            })
            .collect();
        if out.is_empty() {
            let lowest = rungs.last().expect("validated: at least one rung");
            let area_ratio = (w as f64 * h as f64) / ((lowest.height as f64 * 16.0 / 9.0) * lowest.height as f64);
            let kbps = ((lowest.bitrate_kbps as f64 * area_ratio).round() as u32).max(100);
            let (ew, eh) = (even(w as f64), even(h as f64));
            out.push(Rendition { name: format!("{}p", ew.min(eh)), width: ew, height: eh, bitrate_kbps: kbps.min(lowest.bitrate_kbps) });
        }
        out
    }

    /// The renditions for a probed source.
    pub fn renditions_for_media(&self, info: &MediaInfo) -> Vec<Rendition> {
        match &info.video {
            Some(v) => self.renditions_for(v.display_width, v.display_height),
            None => Vec::new(),
        }
    }

    /// Output frame rate for a source rate: the source's own, capped at `max_fps` by halving.
    pub fn output_fps(&self, fps_num: u32, fps_den: u32) -> (u32, u32) {
        let (mut n, mut d) = if fps_num == 0 || fps_den == 0 { (30, 1) } else { (fps_num, fps_den) };
        // Absurd rates from broken headers or VFR containers (e.g. 1000/1) are treated as 30.
        if n as f64 / d as f64 > 240.0 || (n as f64 / d as f64) < 1.0 {
            (n, d) = (30, 1);
        }
        while n as f64 / d as f64 > self.video.max_fps as f64 + 0.01 {
            d *= 2;
        }
        let g = gcd(n, d);
        (n / g, d / g)
    }

    /// Stream times (seconds) at which keyframes are forced at the start, ending the two short
    /// startup segments; empty when startup segments are off. After the last one, keyframes
    /// follow every `gop_frames`.
    pub fn startup_boundaries(&self) -> Vec<f64> {
        if self.startup_segment_seconds > 0.0 {
            vec![self.startup_segment_seconds, 2.0 * self.startup_segment_seconds]
        } else {
            Vec::new()
        }
    }

    /// x264 threads for the rendition named `name` (0: x264's own choice, also for a rendition
    /// that is not a rung of the file, like the single one of a tiny source).
    pub fn x264_threads(&self, name: &str) -> u32 {
        self.rungs.iter().find(|r| r.name == name).map_or(0, |r| r.x264_threads)
    }

    /// The rung's own x264 options (`x264_options`) for the rendition named `name`.
    pub fn x264_options(&self, name: &str) -> Option<&str> {
        self.rungs.iter().find(|r| r.name == name).and_then(|r| r.x264_options.as_deref())
    }

    /// Scaler and videoscale sharpness for the rendition named `name` (`swscale` at sharpness 1
    /// unless the rung sets them).
    pub fn scaler(&self, name: &str) -> (&str, f64) {
        let rung = self.rungs.iter().find(|r| r.name == name);
        (rung.and_then(|r| r.scaler.as_deref()).unwrap_or(SWSCALE), rung.and_then(|r| r.scaler_sharpness).unwrap_or(1.0))
    }

    /// The rung the rendition named `name` is scaled from (`scale_from`), if any.
    pub fn scale_from(&self, name: &str) -> Option<&str> {
        self.rungs.iter().find(|r| r.name == name).and_then(|r| r.scale_from.as_deref())
    }

    /// Frames between keyframes: one GOP per segment, or `keyframe_seconds` (live).
    pub fn gop_frames(&self, fps_num: u32, fps_den: u32) -> u32 {
        ((self.gop_seconds() * fps_num as f64 / fps_den as f64).round() as u32).max(1)
    }

    /// GOPs per segment (1 unless `keyframe_seconds` is set).
    pub fn gops_per_segment(&self) -> u32 {
        (self.segment_seconds as f64 / self.gop_seconds()).round().max(1.0) as u32
    }

    fn gop_seconds(&self) -> f64 {
        if self.keyframe_seconds > 0.0 && self.keyframe_seconds < self.segment_seconds as f64 {
            self.keyframe_seconds
        } else {
            self.segment_seconds as f64
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// Rounds to the nearest even integer, at least 2 (video sizes must be even for 4:2:0).
pub fn even(x: f64) -> u32 {
    let v = (x / 2.0).round() as u32 * 2;
    v.max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Ladder {
        Ladder::parse(include_str!("../pipelines/ladder.toml")).expect("shipped ladder is valid")
    }

    fn names(r: &[Rendition]) -> Vec<(String, u32, u32)> {
        r.iter().map(|r| (r.name.clone(), r.width, r.height)).collect()
    }

    #[test]
    fn live_segments_are_whole_gops_of_keyframe_seconds() {
        let vod = ladder();
        assert_eq!((vod.gop_frames(30, 1), vod.gops_per_segment()), (30 * vod.segment_seconds, 1), "uploads: one GOP per segment");
        let live = vod.for_live();
        assert_eq!((live.segment_seconds, live.gop_frames(30, 1), live.gops_per_segment()), (2, 30, 2));
        assert_eq!(live.gop_frames(30000, 1001), 30);
        let text = include_str!("../pipelines/ladder.toml");
        for bad in ["keyframe_seconds = 0.75", "keyframe_seconds = 3", "keyframe_seconds = 0", "keyframe_seconds = 0.1"] {
            let t = text.replace("keyframe_seconds = 1", bad);
            assert!(Ladder::parse(&t).unwrap_err().contains("keyframe_seconds"), "{bad} is refused");
        }
        let half = Ladder::parse(&text.replace("keyframe_seconds = 1", "keyframe_seconds = 0.5")).unwrap().for_live();
        assert_eq!((half.gop_frames(30, 1), half.gops_per_segment()), (15, 4));
        let whole = Ladder::parse(&text.replace("keyframe_seconds = 1", "keyframe_seconds = 2")).unwrap().for_live();
        assert_eq!((whole.gop_frames(30, 1), whole.gops_per_segment()), (60, 1));
    }

    #[test]
    fn a_cap_leaves_out_taller_rungs_but_never_the_smallest() {
        let l = ladder();
        let heights = |l: &Ladder| l.rungs.iter().map(|r| r.height).collect::<Vec<_>>();
        assert_eq!(heights(&l.clone().capped(None)), heights(&l));
        assert_eq!(heights(&l.clone().capped(Some(720))), vec![720, 480, 360]);
        assert_eq!(heights(&l.clone().capped(Some(500))), vec![480, 360]);
        assert_eq!(heights(&l.clone().capped(Some(100))), vec![l.smallest_rung_height()]);
        let r = l.capped(Some(480)).renditions_for(1920, 1080);
        assert_eq!(names(&r), vec![("480p".into(), 854, 480), ("360p".into(), 640, 360)]);
    }

    #[test]
    fn landscape_720p_skips_1080p() {
        let r = ladder().renditions_for(1280, 720);
        assert_eq!(names(&r), vec![("720p".into(), 1280, 720), ("480p".into(), 854, 480), ("360p".into(), 640, 360)]);
    }

    #[test]
    fn portrait_keeps_orientation() {
        let r = ladder().renditions_for(1080, 1920);
        assert_eq!(r[0], Rendition { name: "1080p".into(), width: 1080, height: 1920, bitrate_kbps: 5000 });
        assert!(r.iter().all(|x| x.height > x.width));
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn tiny_source_gets_one_rendition_at_own_even_size() {
        let r = ladder().renditions_for(161, 121);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].width, r[0].height), (162, 122));
        assert!(r[0].bitrate_kbps <= 800 && r[0].bitrate_kbps >= 100);
    }

    #[test]
    fn odd_sizes_become_even() {
        for (w, h) in [(853, 479), (1921, 1081), (479, 853), (641, 361)] {
            for r in ladder().renditions_for(w, h) {
                assert_eq!(r.width % 2, 0, "{w}x{h} -> {r:?}");
                assert_eq!(r.height % 2, 0, "{w}x{h} -> {r:?}");
                assert!(r.width <= w + 1 && r.height <= h + 1, "no upscale: {w}x{h} -> {r:?}");
            }
        }
    }

    #[test]
    fn rejects_bad_files() {
        let good = include_str!("../pipelines/ladder.toml");
        assert!(Ladder::parse(&good.replace("segment_seconds = 4", "segment_seconds = 0")).is_err());
        assert!(Ladder::parse(&good.replace("height = 720", "height = 721")).is_err());
        assert!(Ladder::parse(&good.replace("name = \"480p\"", "name = \"720p\"")).is_err());
        assert!(Ladder::parse(&good.replace("preset = \"veryfast\"", "preset = \"warp\"")).is_err());
        assert!(Ladder::parse(&format!("{good}\nbogus = 1\n")).is_err());
        assert!(Ladder::parse("segment_seconds = 4").is_err());
        for bad in ["0.1", "2.5", "-1.0"] {
            let text = good.replace("startup_segment_seconds = 0.5", &format!("startup_segment_seconds = {bad}"));
            assert!(Ladder::parse(&text).is_err(), "startup_segment_seconds = {bad} must be refused");
        }
    }

    #[test]
    fn x264_options_per_rung_are_checked() {
        let good = include_str!("../pipelines/ladder.toml");
        let with =
            |opts: &str| Ladder::parse(&good.replacen("x264_threads = 2\n", &format!("x264_threads = 2\nx264_options = {opts:?}\n"), 1));
        let l = with("subme=11:me=tesa:merange=64").unwrap();
        assert_eq!(l.x264_options("1080p"), Some("subme=11:me=tesa:merange=64"));
        assert_eq!(l.x264_options("720p"), None);
        for bad in ["keyint=30", "subme=2:scenecut=40", "min_keyint=1", "subme", "a=b c", "x=$(id)", "me=hex:", ""] {
            assert!(with(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn x264_threads_per_rung() {
        let l = ladder();
        assert_eq!((l.x264_threads("1080p"), l.x264_threads("360p")), (2, 1));
        assert_eq!(l.x264_threads("162p"), 0, "a rendition that is no rung of the file: x264 decides");
        let good = include_str!("../pipelines/ladder.toml");
        assert!(Ladder::parse(&good.replacen("x264_threads = 2", "x264_threads = 65", 1)).is_err());
        let auto = Ladder::parse(&good.replace("x264_threads = 1\n", "").replace("x264_threads = 2\n", "")).unwrap();
        assert_eq!(auto.x264_threads("720p"), 0);
    }

    #[test]
    fn scaler_per_rung() {
        let l = ladder();
        // The shipped ladder: libswscale's bicubic, Lanczos for 480p (scaled from 720p).
        assert_eq!(l.scaler("720p"), (SWSCALE, 1.0));
        assert_eq!(l.scaler("480p"), (SWSCALE_LANCZOS, 1.0));
        assert_eq!(l.scaler("162p"), (SWSCALE, 1.0), "a rendition that is no rung of the file");
        let good = include_str!("../pipelines/ladder.toml");
        let with = |extra: &str| good.replacen("bitrate_kbps = 2800\n", &format!("bitrate_kbps = 2800\n{extra}\n"), 1);
        let catrom = Ladder::parse(&with("scaler = \"catrom\"\nscaler_sharpness = 1.3")).unwrap();
        assert_eq!(catrom.scaler("720p"), ("catrom", 1.3));
        assert_eq!(catrom.scaler("360p"), (SWSCALE, 1.0));
        assert!(Ladder::parse(&with("scaler = \"swscale\"")).is_ok());
        assert!(Ladder::parse(&with("scaler = \"magic\"")).is_err());
        assert!(Ladder::parse(&with("scaler_sharpness = 2.0")).is_err());
        assert!(Ladder::parse(&with("scaler = \"swscale-lanczos\"")).is_ok());
    }

    #[test]
    fn scale_from_names_a_taller_rung() {
        let l = ladder();
        assert_eq!((l.scale_from("1080p"), l.scale_from("480p"), l.scale_from("360p")), (None, Some("720p"), Some("720p")));
        assert_eq!(l.scale_from("162p"), None, "a rendition that is no rung of the file");
        let good = include_str!("../pipelines/ladder.toml");
        let with = |from: &str| good.replacen("bitrate_kbps = 2800\n", &format!("bitrate_kbps = 2800\nscale_from = \"{from}\"\n"), 1);
        assert!(Ladder::parse(&with("1080p")).is_ok());
        for bad in ["720p", "360p", "4k"] {
            assert!(Ladder::parse(&with(bad)).is_err(), "720p scaled from {bad} must be refused");
        }
    }

    #[test]
    fn startup_boundaries_end_two_short_segments() {
        let good = include_str!("../pipelines/ladder.toml");
        assert_eq!(ladder().startup_boundaries(), vec![0.5, 1.0]);
        let off = Ladder::parse(&good.replace("startup_segment_seconds = 0.5", "startup_segment_seconds = 0")).unwrap();
        assert!(off.startup_boundaries().is_empty());
        let absent = Ladder::parse(&good.replace("startup_segment_seconds = 0.5", "")).unwrap();
        assert!(absent.startup_boundaries().is_empty(), "older ladder files keep uniform segments");
    }

    /// Property test over 20 000 pseudo-random sizes: always at least one rendition, even sizes,
    /// no upscaling, orientation and aspect ratio kept (within rounding).
    #[test]
    fn renditions_hold_their_properties_for_any_size() {
        let l = ladder();
        let mut x: u64 = 0x2545F4914F6CDD1D;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..20_000 {
            let (w, h) = (2 + next(8191) as u32, 2 + next(8191) as u32);
            let r = l.renditions_for(w, h);
            assert!(!r.is_empty(), "{w}x{h}");
            for x in &r {
                assert!(x.width % 2 == 0 && x.height % 2 == 0 && x.width >= 2 && x.height >= 2, "{w}x{h} -> {x:?}");
                assert!(x.width <= w + 1 && x.height <= h + 1, "upscaled {w}x{h} -> {x:?}");
                if w as f64 > h as f64 * 1.02 {
                    assert!(x.width > x.height, "orientation {w}x{h} -> {x:?}");
                } else if h as f64 > w as f64 * 1.02 {
                    assert!(x.height > x.width, "orientation {w}x{h} -> {x:?}");
                }
                let (a, b) = (w as f64 / h as f64, x.width as f64 / x.height as f64);
                let tolerance = 2.0 / x.width.min(x.height) as f64 * a.max(1.0 / a) + 1e-9;
                assert!((a / b - 1.0).abs() <= tolerance + 0.01, "aspect {w}x{h} -> {x:?}");
            }
            let mut names: Vec<&str> = r.iter().map(|x| x.name.as_str()).collect();
            names.dedup();
            assert_eq!(names.len(), r.len());
        }
    }

    #[test]
    fn fps_and_gop() {
        let l = ladder();
        assert_eq!(l.output_fps(30, 1), (30, 1));
        assert_eq!(l.output_fps(120, 1), (60, 1));
        assert_eq!(l.output_fps(0, 0), (30, 1));
        assert_eq!(l.output_fps(30000, 1001), (30000, 1001));
        assert_eq!(l.gop_frames(30, 1), 120);
        assert_eq!(l.gop_frames(30000, 1001), 120);
    }
}
