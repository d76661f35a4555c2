//! Packaging: the manifests (HLS master + media playlists, DASH MPD) that Cascade writes itself
//! from the segments a back end reports, so both back ends publish the same shape; plus segment
//! encryption and the images.

pub mod crypto;
pub mod dash;
pub mod hls;
pub mod images;
pub mod llhls;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ladder::Rendition;
pub use crate::model::RenditionSummary;
use dash::{DashRep, DashSegment, Presentation};
use hls::{HlsSegment, KeyLine};

/// Name of the audio representation in the DASH tree.
pub const AUDIO_REP: &str = "audio";
/// HLS master playlist path under the video's media dir.
pub const HLS_MASTER: &str = "hls/master.m3u8";
/// DASH manifest path under the video's media dir.
pub const DASH_MPD: &str = "dash/manifest.mpd";
/// Initialization segment name inside each DASH representation dir.
pub const DASH_INIT: &str = "init00000.mp4";
/// Low-latency DASH MPD of a broadcast on air (the same segments, announced from their first
/// chunk); the VOD MPD once it has ended.
pub const LL_MPD: &str = "dash/ll.mpd";
/// The latency dash.js aims at on `LL_MPD` (its ServiceDescription).
const LL_DASH_TARGET_S: f64 = 1.5;
/// HLS media playlist name inside each rung dir.
pub const HLS_MEDIA: &str = "index.m3u8";
/// URI of the key relative to a media playlist (`hls/{rung}/index.m3u8` → `hls/key`).
pub const KEY_URI: &str = "../key";

/// Where a segment belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Track {
    /// MPEG-TS segment of the HLS rung with this name.
    Hls(String),
    /// CMAF segment of this DASH representation (a rung name, or `audio`).
    Dash(String),
}

/// What the packager needs to know about the job.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    pub out_dir: PathBuf,
    pub renditions: Vec<Rendition>,
    pub has_audio: bool,
    pub segment_seconds: u32,
    pub fps: (u32, u32),
    pub audio_bitrate_kbps: u32,
    pub audio_sample_rate: u32,
    pub key: Option<KeyLine>,
    pub source_duration: f64,
    /// URL of Cascade's clock for dynamic MPDs (players here have no internet time server).
    pub utc_timing_url: String,
    /// A live broadcast, and when its first media arrived: the dynamic MPD's availability start
    /// is fixed there, and its window keeps everything since (full DVR).
    pub live_start: Option<DateTime<Utc>>,
    /// A low-latency broadcast: the tracks' parts are listed there by the back end; the packager
    /// writes its master playlist and, at the end, its final playlists.
    pub ll: Option<std::sync::Arc<llhls::LlStream>>,
    /// Object storage: each finished file and each manifest written is queued for the bucket.
    pub publish: Option<crate::storage::Publisher>,
}

#[derive(Debug, Default)]
struct DashTrack {
    segments: Vec<DashSegment>,
    total_s: f64,
}

/// Keeps the segment lists of one job and rewrites the manifests as segments land.
#[derive(Debug)]
pub struct Packager {
    spec: PackageSpec,
    started: DateTime<Utc>,
    hls: BTreeMap<String, Vec<HlsSegment>>,
    dash: BTreeMap<String, DashTrack>,
    video_codecs: BTreeMap<String, String>,
    playable: bool,
    /// Rungs dropped from a live broadcast: no longer listed, their files removed at the end.
    dropped: Vec<String>,
}

/// Writes a file atomically (temporary name, then rename), so readers never see half of it.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// How far (in `dash::TIMESCALE` units) a listed segment may end past the common end: audio
/// segment boundaries (AAC frames) fall a few milliseconds off the video ones.
const DASH_EDGE_TOLERANCE: u64 = dash::TIMESCALE / 10;

/// The segments of a track that end by `end` (with `DASH_EDGE_TOLERANCE`).
fn listed_until(segments: Vec<DashSegment>, end: u64) -> Vec<DashSegment> {
    segments.into_iter().take_while(|s| s.t + s.d <= end + DASH_EDGE_TOLERANCE).collect()
}

/// The number in a segment file name (`seg00012.ts` → 12).
pub fn segment_number(file_name: &str) -> Option<u64> {
    let stem = file_name.split('.').next()?;
    let digits: String = stem.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// The time-shift window of a live MPD: longer than any broadcast (`CASCADE_LIVE_MAX_S`).
const LIVE_WINDOW_S: u64 = 48 * 3600;

const AUDIO_CODECS: &str = "mp4a.40.2";
const DEFAULT_VIDEO_CODECS: &str = "avc1.640028";

impl Packager {
    /// Creates the output directories.
    pub fn new(spec: PackageSpec) -> io::Result<Packager> {
        for r in &spec.renditions {
            std::fs::create_dir_all(spec.out_dir.join("hls").join(&r.name))?;
            std::fs::create_dir_all(spec.out_dir.join("dash").join(&r.name))?;
        }
        if spec.has_audio {
            std::fs::create_dir_all(spec.out_dir.join("dash").join(AUDIO_REP))?;
        }
        if spec.ll.is_some() {
            std::fs::create_dir_all(spec.out_dir.join(llhls::LL_DIR))?;
        }
        Ok(Packager {
            spec,
            started: Utc::now(),
            hls: BTreeMap::new(),
            dash: BTreeMap::new(),
            video_codecs: BTreeMap::new(),
            playable: false,
            dropped: Vec::new(),
        })
    }

    /// Stops listing the rendition `rung` (live, when the ladder could not keep up): the master
    /// playlist and the MPD are rewritten without it, and its media playlist is removed, so a
    /// player on it fails over to another rung (hls.js switches on the 404; dash.js takes the
    /// representations of the updated MPD). Its segments reported later are ignored; its files
    /// are removed by `finish`. The last rendition is never dropped.
    pub fn drop_rendition(&mut self, rung: &str) -> io::Result<()> {
        if self.spec.renditions.len() < 2 || !self.spec.renditions.iter().any(|r| r.name == rung) {
            return Ok(());
        }
        self.spec.renditions.retain(|r| r.name != rung);
        self.dropped.push(rung.to_string());
        self.hls.remove(rung);
        self.dash.remove(rung);
        if let Some(ll) = &self.spec.ll {
            ll.drop_track(rung);
        }
        if self.playable {
            self.write_master()?;
            self.write_mpd(false)?;
            self.write_ll_mpd()?;
        }
        match std::fs::remove_file(self.spec.out_dir.join("hls").join(rung).join(HLS_MEDIA)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Records the RFC 6381 codecs string of a rung's video (from the encoder's caps).
    pub fn set_video_codec(&mut self, rung: &str, codecs: &str) {
        self.video_codecs.insert(rung.to_string(), codecs.to_string());
    }

    /// Adds a finished segment; rewrites the track's manifest. Returns true when this segment made
    /// the video playable (first segment of every track on disk, master + MPD just published).
    pub fn add_segment(&mut self, track: &Track, path: &Path, duration_s: f64) -> io::Result<bool> {
        let file_name =
            path.file_name().and_then(|n| n.to_str()).ok_or_else(|| io::Error::other("segment path has no file name"))?.to_string();
        let (Track::Hls(name) | Track::Dash(name)) = track;
        if self.dropped.contains(name) {
            return Ok(false);
        }
        let bytes = std::fs::metadata(path)?.len();
        let first = !self.playable
            && match track {
                Track::Hls(rung) => self.hls.get(rung).is_none_or(|s| s.is_empty()),
                Track::Dash(rep) => self.dash.get(rep).is_none_or(|t| t.segments.is_empty()),
            };
        self.publish_file(path);
        if first {
            // The time-to-first-playable trace (#18): when each track's first segment arrives.
            tracing::info!(?track, duration_s, bytes, "first segment");
        }
        match track {
            Track::Hls(rung) => {
                let segs = self.hls.entry(rung.clone()).or_default();
                segs.push(HlsSegment { uri: file_name, duration: duration_s, bytes });
                self.write_media_playlist(rung, false)?;
            }
            Track::Dash(rep) => {
                let number = segment_number(&file_name).ok_or_else(|| io::Error::other("segment name has no number"))?;
                let t = self.dash.entry(rep.clone()).or_default();
                let start = (t.total_s * dash::TIMESCALE as f64).round() as u64;
                t.total_s += duration_s;
                let end = (t.total_s * dash::TIMESCALE as f64).round() as u64;
                t.segments.push(DashSegment { number, t: start, d: end.saturating_sub(start).max(1), bytes });
                if self.playable {
                    self.write_mpd(false)?;
                }
            }
        }
        if !self.playable && self.all_tracks_started() {
            // The init segments before the manifests that name them.
            let reps = self.spec.renditions.iter().map(|r| r.name.as_str()).chain(self.spec.has_audio.then_some(AUDIO_REP));
            for rep in reps {
                self.publish_file(&self.spec.out_dir.join("dash").join(rep).join(DASH_INIT));
            }
            self.write_master()?;
            self.write_mpd(false)?;
            self.write_ll_mpd()?;
            self.playable = true;
            tracing::info!("playable: every track has its first segment; master playlist and MPD published");
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes a manifest (`rel`: its path in the media tree) atomically, and queues it for the
    /// bucket after every file reported before it.
    fn write_manifest(&self, rel: &Path, data: &[u8]) -> io::Result<()> {
        write_atomic(&self.spec.out_dir.join(rel), data)?;
        if let Some(p) = &self.spec.publish {
            p.manifest(rel, data);
        }
        Ok(())
    }

    /// Queues a finished file under the media dir for the bucket.
    fn publish_file(&self, path: &Path) {
        if let (Some(p), Ok(rel)) = (&self.spec.publish, path.strip_prefix(&self.spec.out_dir)) {
            p.file(rel);
        }
    }

    fn all_tracks_started(&self) -> bool {
        let rungs_ok = self.spec.renditions.iter().all(|r| {
            self.hls.get(&r.name).is_some_and(|s| !s.is_empty())
                && self.dash.get(&r.name).is_some_and(|s| !s.segments.is_empty())
                && self.spec.out_dir.join("dash").join(&r.name).join(DASH_INIT).exists()
        });
        let audio_ok = !self.spec.has_audio
            || (self.dash.get(AUDIO_REP).is_some_and(|s| !s.segments.is_empty())
                && self.spec.out_dir.join("dash").join(AUDIO_REP).join(DASH_INIT).exists());
        rungs_ok && audio_ok
    }

    fn write_media_playlist(&self, rung: &str, finished: bool) -> io::Result<()> {
        let segs = self.hls.get(rung).map(Vec::as_slice).unwrap_or(&[]);
        let body = hls::media_playlist(segs, self.spec.segment_seconds, self.spec.key.as_ref(), finished);
        self.write_manifest(&Path::new("hls").join(rung).join(HLS_MEDIA), &body)
    }

    fn fps(&self) -> f64 {
        self.spec.fps.0 as f64 / self.spec.fps.1.max(1) as f64
    }

    /// (peak, average) bits per second of a list of (bytes, seconds); `None` without data.
    fn measured(parts: impl Iterator<Item = (u64, f64)>) -> Option<(u64, u64)> {
        let parts: Vec<(u64, f64)> = parts.filter(|(_, d)| *d > 0.0).collect();
        if parts.is_empty() {
            return None;
        }
        let total_bytes: u64 = parts.iter().map(|p| p.0).sum();
        let total_s: f64 = parts.iter().map(|p| p.1).sum();
        // A short last segment says little about the peak: only segments of ≥ 1 s count there.
        let peak =
            parts.iter().filter(|(_, d)| *d >= 1.0 || parts.len() == 1).map(|(b, d)| (*b as f64 * 8.0 / d) as u64).max().unwrap_or(0);
        let avg = (total_bytes as f64 * 8.0 / total_s) as u64;
        Some((peak.max(avg), avg))
    }

    /// Per-rung summaries with bandwidths measured from the HLS segments so far (nominal before).
    pub fn summaries(&self) -> Vec<RenditionSummary> {
        let audio_bps = if self.spec.has_audio { self.spec.audio_bitrate_kbps as u64 * 1000 } else { 0 };
        self.spec
            .renditions
            .iter()
            .map(|r| {
                let nominal = r.bitrate_kbps as u64 * 1000 + audio_bps;
                let (peak, avg) = self
                    .hls
                    .get(&r.name)
                    .and_then(|s| Self::measured(s.iter().map(|x| (x.bytes, x.duration))))
                    .unwrap_or((nominal * 11 / 10, nominal));
                let video = self.video_codecs.get(&r.name).map(String::as_str).unwrap_or(DEFAULT_VIDEO_CODECS);
                let codecs = if self.spec.has_audio { format!("{video},{AUDIO_CODECS}") } else { video.to_string() };
                RenditionSummary { name: r.name.clone(), width: r.width, height: r.height, bandwidth: peak, average_bandwidth: avg, codecs }
            })
            .collect()
    }

    fn write_master(&self) -> io::Result<()> {
        let variants: Vec<hls::Variant> = self
            .summaries()
            .into_iter()
            .map(|s| hls::Variant {
                uri: format!("{}/{}", s.name, HLS_MEDIA),
                // While encoding, advertise at least the nominal rate with headroom: the first
                // segments of a video can be far below its later peaks.
                bandwidth: s.bandwidth,
                average_bandwidth: s.average_bandwidth,
                codecs: s.codecs,
                width: s.width,
                height: s.height,
                frame_rate: self.fps(),
            })
            .collect();
        if self.spec.ll.is_some() {
            let ll: Vec<hls::Variant> = variants
                .iter()
                .map(|v| hls::Variant { uri: format!("{}.m3u8", v.uri.split('/').next().unwrap_or_default()), ..v.clone() })
                .collect();
            self.write_manifest(Path::new(llhls::LL_MASTER), &llhls::master_playlist(&ll, self.spec.has_audio))?;
        }
        self.write_manifest(Path::new(HLS_MASTER), &hls::master_playlist(&variants))
    }

    /// The end of a low-latency broadcast: its playlists become VOD playlists of whole segments,
    /// written to disk (where they are served from once the broadcast's state is gone), and the
    /// part files, listed nowhere now, are removed.
    fn finish_low_latency(&self) -> io::Result<()> {
        let Some(ll) = &self.spec.ll else { return Ok(()) };
        ll.finish();
        let dir = self.spec.out_dir.join(llhls::LL_DIR);
        let reps = self.spec.renditions.iter().map(|r| r.name.as_str()).chain(self.spec.has_audio.then_some(AUDIO_REP));
        for rep in reps {
            for entry in std::fs::read_dir(dir.join(rep))? {
                let entry = entry?;
                let name = entry.file_name();
                if name.to_str().is_some_and(|n| n.matches('.').count() > 1) {
                    std::fs::remove_file(entry.path())?;
                } else {
                    // The whole segments the playlist below lists.
                    self.publish_file(&entry.path());
                }
            }
            if let Some(text) = ll.render(rep, false) {
                self.write_manifest(&Path::new(llhls::LL_DIR).join(format!("{rep}.m3u8")), text.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The end (in `dash::TIMESCALE` units) up to which every DASH track has segments on disk.
    fn dash_common_end(&self) -> u64 {
        let ids = self.spec.renditions.iter().map(|r| r.name.as_str()).chain(self.spec.has_audio.then_some(AUDIO_REP));
        ids.map(|id| self.dash.get(id).and_then(|t| t.segments.last()).map(|s| s.t + s.d).unwrap_or(0)).min().unwrap_or(0)
    }

    fn dash_rep(&self, id: &str, nominal_bps: u64, codecs: String, size: Option<(u32, u32)>, audio: bool, until: Option<u64>) -> DashRep {
        let track = self.dash.get(id);
        let mut segments = track.map(|t| t.segments.clone()).unwrap_or_default();
        if let Some(end) = until {
            segments = listed_until(segments, end);
        }
        let measured = Self::measured(segments.iter().map(|s| (s.bytes, s.d as f64 / dash::TIMESCALE as f64)));
        DashRep {
            id: id.to_string(),
            bandwidth: measured.map(|m| m.0).unwrap_or(nominal_bps),
            codecs,
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
            frame_rate: if audio { None } else { Some(format!("{}/{}", self.spec.fps.0, self.spec.fps.1.max(1))) },
            audio_sample_rate: if audio { Some(self.spec.audio_sample_rate) } else { None },
            segments,
        }
    }

    /// An MPD of the tracks, listed up to `until` (`dash::TIMESCALE` units) when set.
    fn mpd_body(&self, presentation: &Presentation, until: Option<u64>) -> String {
        let video: Vec<DashRep> = self
            .spec
            .renditions
            .iter()
            .map(|r| {
                let codecs = self.video_codecs.get(&r.name).cloned().unwrap_or_else(|| DEFAULT_VIDEO_CODECS.into());
                self.dash_rep(&r.name, r.bitrate_kbps as u64 * 1000, codecs, Some((r.width, r.height)), false, until)
            })
            .collect();
        let audio = self
            .spec
            .has_audio
            .then(|| self.dash_rep(AUDIO_REP, self.spec.audio_bitrate_kbps as u64 * 1000, AUDIO_CODECS.into(), None, true, until));
        dash::mpd(&video, audio.as_ref(), presentation, self.spec.segment_seconds.min(4))
    }

    fn write_mpd(&self, finished: bool) -> io::Result<()> {
        // While encoding, no track is listed beyond the others: the audio encoder runs many seconds
        // ahead of the video rungs, and a player given that much more audio plays on with the
        // picture frozen at the video's edge (Chromium keeps the clock running on audio), then
        // waits with its position seconds past the video it has.
        let until = (!finished).then(|| self.dash_common_end());
        let presentation = if finished {
            let dur = self.dash.values().map(|t| t.total_s).fold(0.0, f64::max);
            Presentation::Static { duration: Duration::from_secs_f64(dur.max(0.001)) }
        } else if let Some(first_media) = self.spec.live_start {
            // Media time t cannot be encoded before the publisher sent it, at first_media + t;
            // one segment earlier still, every listed segment counts as available (a publisher
            // that sends a little ahead, clocks a little apart). The window keeps the whole
            // broadcast (viewers may seek back to its start).
            Presentation::Dynamic {
                availability_start: first_media - chrono::Duration::seconds(self.spec.segment_seconds.into()),
                window: Duration::from_secs(LIVE_WINDOW_S),
                // Players re-read the MPD every second: a new segment is seen within a second
                // of its publication, not a whole segment later.
                update_seconds: 1,
                utc_timing_url: self.spec.utc_timing_url.clone(),
            }
        } else {
            // Every listed segment must count as available now: the availability start is placed
            // a whole source duration before the job started, and the window spans it all.
            let back = chrono::Duration::milliseconds(((self.spec.source_duration + 30.0) * 1000.0) as i64);
            Presentation::Dynamic {
                availability_start: self.started - back,
                window: Duration::from_secs_f64(self.spec.source_duration * 2.0 + 60.0),
                update_seconds: self.spec.segment_seconds.clamp(1, 4),
                utc_timing_url: self.spec.utc_timing_url.clone(),
            }
        };
        let body = self.mpd_body(&presentation, until);
        self.write_manifest(Path::new(DASH_MPD), body.as_bytes())?;
        if finished && self.spec.ll.is_some() {
            // The low-latency MPD of an ended broadcast is its VOD MPD.
            self.write_manifest(Path::new(LL_MPD), body.as_bytes())?;
        }
        Ok(())
    }

    /// The low-latency MPD of a broadcast on air: number-addressed segments, so it changes only
    /// when its representations do (playable, a rung dropped).
    fn write_ll_mpd(&self) -> io::Result<()> {
        let (Some(ll), Some(start)) = (&self.spec.ll, self.spec.live_start) else { return Ok(()) };
        let Some(chunk_s) = ll.part_seconds() else { return Ok(()) };
        let presentation = Presentation::LowLatency {
            availability_start: start,
            window: Duration::from_secs(LIVE_WINDOW_S),
            segment_s: self.spec.segment_seconds as f64,
            chunk_s,
            target_latency_s: LL_DASH_TARGET_S,
            utc_timing_url: self.spec.utc_timing_url.clone(),
        };
        self.write_manifest(Path::new(LL_MPD), self.mpd_body(&presentation, None).as_bytes())
    }

    /// Publishes the final VOD playlists, static MPD and master with measured bandwidths.
    pub fn finish(&mut self) -> io::Result<Vec<RenditionSummary>> {
        if !self.all_tracks_started() {
            return Err(io::Error::other("the back end finished without a segment on every track"));
        }
        for r in &self.spec.renditions {
            self.write_media_playlist(&r.name, true)?;
        }
        for rung in &self.dropped {
            crate::app::remove_dir(&self.spec.out_dir.join("hls").join(rung))?;
            crate::app::remove_dir(&self.spec.out_dir.join("dash").join(rung))?;
            crate::app::remove_dir(&self.spec.out_dir.join(llhls::LL_DIR).join(rung))?;
        }
        self.finish_low_latency()?;
        self.write_mpd(true)?;
        self.write_master()?;
        self.playable = true;
        Ok(self.summaries())
    }

    /// Duration of the longest track, seconds.
    pub fn duration(&self) -> f64 {
        let hls = self.hls.values().map(|s| s.iter().map(|x| x.duration).sum::<f64>());
        hls.fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_tracks_are_listed_up_to_the_common_end() {
        let seg = |number, t, d| DashSegment { number, t, d, bytes: 1 };
        // Audio ends a few milliseconds off the video's 1.0 s boundary, then runs 8 s ahead.
        let audio = vec![seg(0, 0, 512), seg(1, 512, 491), seg(2, 1003, 3989), seg(3, 4992, 3989)];
        let listed = listed_until(audio, 1000);
        assert_eq!(listed.iter().map(|s| s.number).collect::<Vec<_>>(), vec![0, 1]);
        assert!(listed_until(vec![seg(0, 0, 500)], 0).is_empty());
    }

    #[test]
    fn segment_numbers_come_from_the_stem() {
        assert_eq!(segment_number("seg00012.m4s"), Some(12));
        assert_eq!(segment_number("seg00000.ts"), Some(0));
        assert_eq!(segment_number("init.mp4"), None);
    }
}
