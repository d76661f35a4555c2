//! Low-Latency HLS (RFC 8216bis §4.4.3.7–4.4.5.2, §6.2.5–6.2.6) for live broadcasts: the fMP4
//! tracks of a broadcast, segment by segment and part by part, and the media playlists rendered
//! from them on request.
//!
//! The parts are the chunks `cmafmux` emits (`transcode::gst::llcmaf` writes them); each part is
//! also a resource of its own, AES-128 encrypted with the video's key and IV exactly as the whole
//! segment is, which is what hls.js decrypts part by part in low-latency mode. The same playlists
//! list whole segments, so players without low-latency support play them as ordinary fMP4 HLS.
//!
//! Blocking playlist reload (`_HLS_msn`/`_HLS_part`) waits on one `watch` channel per playlist:
//! every change of a track bumps its version, which wakes every request waiting on that playlist
//! at once, and a waiting request is a parked future (no thread, no polling). The playlist they
//! are then answered with is rendered once per version, not once per request.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, SecondsFormat, Utc};
use m3u8_rs::{AlternativeMedia, AlternativeMediaType, MasterPlaylist};
use tokio::sync::watch;

use super::hls::{variant_streams, KeyLine, Variant};
use super::{AUDIO_REP, DASH_INIT};

/// Directory of the low-latency tree under a video's media dir: `ll/{rep}.m3u8` (rendered on
/// request), `ll/{rep}/segNNNNN.m4s` (whole segments) and `ll/{rep}/segNNNNN.P.m4s` (parts).
pub const LL_DIR: &str = "ll";
/// The low-latency master playlist, under the media dir.
pub const LL_MASTER: &str = "ll/master.m3u8";
/// The key, relative to a low-latency media playlist (`ll/{rep}.m3u8` → `hls/key`).
const KEY_URI: &str = "../hls/key";
/// Audio group of the master playlist.
const AUDIO_GROUP: &str = "audio";
/// Segments whose parts are still listed: the spec asks for the parts of the last three target
/// durations at least; parts of older segments are left out (the whole segments stay).
const PART_SEGMENTS: usize = 4;

/// The name of a part's file (`seg00012.3.m4s`).
pub fn part_file(segment: u64, part: usize) -> String {
    format!("seg{segment:05}.{part}.m4s")
}

/// The name of a whole segment's file (`seg00012.m4s`).
pub fn segment_file(segment: u64) -> String {
    format!("seg{segment:05}.m4s")
}

/// One finished part.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub duration: f64,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
    /// Its length in the clear DASH segment (the encrypted part file is padded).
    pub bytes: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    number: u64,
    start_s: f64,
    parts: Vec<Part>,
    /// Set once the segment is complete.
    duration: Option<f64>,
}

impl Segment {
    fn end_s(&self) -> f64 {
        self.start_s + self.duration.unwrap_or_else(|| self.parts.iter().map(|p| p.duration).sum())
    }
}

/// What the playlists need to know of the broadcast, set when its ladder starts.
#[derive(Debug, Clone)]
pub struct LlSpec {
    pub segment_seconds: u32,
    /// `PART-TARGET`: no part is longer.
    pub part_target: f64,
    /// The length of a part (a cmafmux chunk), seconds.
    pub part_s: f64,
    pub key: Option<KeyLine>,
    /// Wall-clock time of media time 0 (`EXT-X-PROGRAM-DATE-TIME`).
    pub start: DateTime<Utc>,
    /// The representations, video rungs first, then `audio` if any.
    pub tracks: Vec<String>,
    /// A live broadcast (it has a low-latency MPD too), not an upload being processed.
    pub live: bool,
}

#[derive(Debug, Default)]
struct State {
    spec: Option<LlSpec>,
    tracks: BTreeMap<String, Vec<Segment>>,
    /// Tracks dropped from the broadcast: what still comes for them is ignored.
    dropped: Vec<String>,
    finished: bool,
}

/// How far the clear DASH copy of a segment is written (low-latency DASH serves it as it grows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Complete: `bytes` long, under its final name.
    Complete(u64),
    /// Being written: its first `bytes` are complete chunks.
    Writing(u64),
    /// Not started, but one of the next two.
    Next,
    /// Not of this broadcast (any more), or not the next.
    Unknown,
}

/// Where a blocking request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The playlist holds what was asked for (or never will: the broadcast ended).
    Ready,
    /// Not yet: wait for a change.
    Pending,
    /// `_HLS_msn` is more than two segments past the playlist's last (RFC 8216bis §6.2.5.2).
    TooFar,
    /// No such playlist.
    Unknown,
}

/// The low-latency state of one broadcast.
#[derive(Debug, Default)]
pub struct LlStream {
    state: RwLock<State>,
    /// A version per playlist (by rep), bumped on every change of it.
    versions: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The last rendering of each playlist (rep, delta update): its version and text.
    rendered: Mutex<HashMap<(String, bool), (u64, bytes::Bytes)>>,
}

impl LlStream {
    /// Applies a change to the playlist of `rep` (`None`: to all) and wakes its waiters.
    fn change(&self, rep: Option<&str>, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.write() {
            f(&mut s);
        }
        if let Ok(mut v) = self.versions.lock() {
            match rep {
                Some(rep) => v.entry(rep.to_string()).or_insert_with(|| watch::channel(0).0).send_modify(|n| *n += 1),
                None => v.values().for_each(|tx| tx.send_modify(|n| *n += 1)),
            }
        }
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Option<T> {
        self.state.read().ok().map(|s| f(&s))
    }

    /// Sets what the playlists need; the playlists exist from then on.
    /// What an earlier run (a back end that failed) listed is gone, as its files are.
    pub fn configure(&self, spec: LlSpec) {
        self.change(None, |s| {
            *s = State::default();
            for t in &spec.tracks {
                s.tracks.entry(t.clone()).or_default();
            }
            s.spec = Some(spec);
        });
    }

    /// Back to no playlists (a run by a back end that writes no parts).
    pub fn reset(&self) {
        self.change(None, |s| *s = State::default());
    }

    /// Whether the playlists exist, and whether this is a live broadcast's.
    pub fn configured(&self) -> Option<bool> {
        self.read(|s| s.spec.as_ref().map(|sp| sp.live)).flatten()
    }

    /// Part `part` of segment `segment` of `rep` is on disk. Parts come in order; a part that
    /// does not follow the last one (a number skipped) is refused.
    pub fn add_part(&self, rep: &str, segment: u64, part: usize, p: Part) -> Result<(), String> {
        let mut result = Ok(());
        self.change(Some(rep), |s| {
            let Some(segs) = s.tracks.get_mut(rep) else {
                if !s.dropped.iter().any(|d| d == rep) {
                    result = Err(format!("no low-latency track {rep}"));
                }
                return;
            };
            match segs.last_mut() {
                Some(last) if last.number == segment && last.duration.is_none() && last.parts.len() == part => last.parts.push(p),
                Some(last) if part == 0 && last.number + 1 == segment && last.duration.is_some() => {
                    let start_s = last.end_s();
                    segs.push(Segment { number: segment, start_s, parts: vec![p], duration: None });
                }
                None if part == 0 && segment == 0 => segs.push(Segment { number: segment, start_s: 0.0, parts: vec![p], duration: None }),
                _ => result = Err(format!("part {segment}.{part} of {rep} is out of order")),
            }
        });
        result
    }

    /// Segment `segment` of `rep` is complete (`duration` seconds).
    pub fn complete_segment(&self, rep: &str, segment: u64, duration: f64) {
        self.change(Some(rep), |s| {
            if let Some(seg) = s.tracks.get_mut(rep).and_then(|t| t.iter_mut().rev().find(|x| x.number == segment)) {
                seg.duration = Some(duration);
            }
        });
    }

    /// Stops listing `rep` (a rung dropped from the broadcast): its playlist is gone.
    pub fn drop_track(&self, rep: &str) {
        self.change(None, |s| {
            s.tracks.remove(rep);
            s.dropped.push(rep.to_string());
            if let Some(spec) = s.spec.as_mut() {
                spec.tracks.retain(|t| t != rep);
            }
        });
    }

    /// The broadcast ended: every playlist becomes a VOD playlist, and every waiter is answered.
    pub fn finish(&self) {
        self.change(None, |s| s.finished = true);
    }

    /// A receiver that sees every change of the playlist of `rep` (and the broadcast's end).
    pub fn subscribe(&self, rep: &str) -> watch::Receiver<u64> {
        match self.versions.lock() {
            Ok(mut v) => v.entry(rep.to_string()).or_insert_with(|| watch::channel(0).0).subscribe(),
            // Poisoned: a receiver whose sender is gone, so a waiter stops at once.
            Err(_) => watch::channel(0).1,
        }
    }

    /// The length of a part (seconds), once configured.
    pub fn part_seconds(&self) -> Option<f64> {
        self.read(|s| s.spec.as_ref().map(|sp| sp.part_s)).flatten()
    }

    /// How long a blocking request may wait: three target durations (RFC 8216bis §6.2.5.2).
    pub fn block_timeout(&self) -> std::time::Duration {
        let target = self.read(|s| s.spec.as_ref().map_or(2, |sp| sp.segment_seconds)).unwrap_or(2);
        std::time::Duration::from_secs(3 * u64::from(target.max(1)))
    }

    /// Whether the playlist of `rep` holds segment `msn` (complete) or, with `part`, that part
    /// of it.
    pub fn wait_state(&self, rep: &str, msn: u64, part: Option<usize>) -> Wait {
        self.read(|s| {
            let Some(segs) = s.tracks.get(rep) else { return Wait::Unknown };
            if s.finished {
                return Wait::Ready;
            }
            let last = segs.last().map_or(0, |l| l.number);
            if msn > last + 2 {
                return Wait::TooFar;
            }
            let holds = segs
                .iter()
                .rev()
                .any(|x| x.number > msn || (x.number == msn && (x.duration.is_some() || part.is_some_and(|p| x.parts.len() > p))));
            if holds {
                Wait::Ready
            } else {
                Wait::Pending
            }
        })
        .unwrap_or(Wait::Unknown)
    }

    /// Whether part `part` of segment `segment` of `rep` is listed (its file complete), and
    /// whether it may still come (the broadcast is on and it is at most the next one).
    pub fn part_state(&self, rep: &str, segment: u64, part: usize) -> Wait {
        self.read(|s| {
            let Some(segs) = s.tracks.get(rep) else { return Wait::Unknown };
            if segs.iter().rev().any(|x| x.number == segment && x.parts.len() > part) {
                return Wait::Ready;
            }
            // The preload hint names the next part: segment N part k+1, or segment N+1 part 0.
            let next = match segs.last() {
                Some(l) if l.duration.is_none() => (l.number, l.parts.len()),
                Some(l) => (l.number + 1, 0),
                None => (0, 0),
            };
            if !s.finished && (segment, part) == next {
                Wait::Pending
            } else {
                Wait::Unknown
            }
        })
        .unwrap_or(Wait::Unknown)
    }

    /// How far segment `segment` of `rep` is written.
    pub fn progress(&self, rep: &str, segment: u64) -> Progress {
        self.read(|s| {
            let Some(segs) = s.tracks.get(rep) else { return Progress::Unknown };
            if let Some(x) = segs.iter().rev().find(|x| x.number == segment) {
                let bytes = x.parts.iter().map(|p| p.bytes).sum();
                return if x.duration.is_some() { Progress::Complete(bytes) } else { Progress::Writing(bytes) };
            }
            // A player whose clock runs a little ahead of the encoder may ask for a segment or
            // two before it starts (as LL-HLS allows `_HLS_msn` two ahead): held, not refused.
            let next = segs.last().map_or(0, |l| l.number + 1);
            if !s.finished && (next..=next + 1).contains(&segment) {
                Progress::Next
            } else {
                Progress::Unknown
            }
        })
        .unwrap_or(Progress::Unknown)
    }

    /// The media playlist of `rep`; with `skip`, a delta update (`EXT-X-SKIP`) if it is long
    /// enough to have one. `None` before the broadcast is configured or for an unknown `rep`.
    pub fn render(&self, rep: &str, skip: bool) -> Option<String> {
        self.read(|s| render(s, rep, skip)).flatten()
    }

    /// `render`, rendered once per version of the playlist: the thousand requests a new part
    /// wakes share one rendering.
    pub fn render_shared(&self, rep: &str, skip: bool) -> Option<bytes::Bytes> {
        let version = *self.subscribe(rep).borrow();
        let key = (rep.to_string(), skip);
        if let Some((v, text)) = self.rendered.lock().ok()?.get(&key) {
            if *v == version {
                return Some(text.clone());
            }
        }
        let text = bytes::Bytes::from(self.render(rep, skip)?);
        if let Ok(mut r) = self.rendered.lock() {
            r.insert(key, (version, text.clone()));
        }
        Some(text)
    }
}

/// `#EXT-X-TARGETDURATION`: the nominal length, or more if a segment is longer (rounded as the
/// spec rounds EXTINF).
fn target_duration(spec: &LlSpec, segs: &[Segment]) -> u64 {
    let longest = segs.iter().filter_map(|x| x.duration).fold(0.0, f64::max);
    u64::from(spec.segment_seconds.max(1)).max(longest.round() as u64)
}

fn render(s: &State, rep: &str, skip: bool) -> Option<String> {
    let spec = s.spec.as_ref()?;
    let segs = s.tracks.get(rep)?;
    let target = target_duration(spec, segs);
    let live = !s.finished;
    let mut out = String::with_capacity(256 + segs.len() * 80);
    let w = &mut out;
    let _ = writeln!(w, "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}");
    let skip_until = 6 * target;
    if live {
        let _ = writeln!(
            w,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={skip_until}.0,PART-HOLD-BACK={:.3}",
            3.0 * spec.part_target
        );
        let _ = writeln!(w, "#EXT-X-PART-INF:PART-TARGET={:.3}", spec.part_target);
    }
    let _ = writeln!(w, "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:{}", if live { "EVENT" } else { "VOD" });
    let _ = writeln!(w, "#EXT-X-INDEPENDENT-SEGMENTS");
    // The initialization section comes before the key line: it is the clear CMAF init of the
    // DASH tree, not encrypted.
    let _ = writeln!(w, "#EXT-X-MAP:URI=\"../dash/{rep}/{DASH_INIT}\"");
    if let Some(k) = &spec.key {
        let _ = writeln!(w, "#EXT-X-KEY:METHOD=AES-128,URI=\"{KEY_URI}\",IV={}", k.iv_hex);
    }
    // A finished broadcast lists whole segments only; an incomplete last one is not listed.
    let listed: Vec<&Segment> = segs.iter().filter(|x| live || x.duration.is_some()).collect();
    let end_s = listed.last().map_or(0.0, |l| l.end_s());
    // Delta update: complete segments that end more than CAN-SKIP-UNTIL before the end.
    let skipped =
        if live && skip { listed.iter().take_while(|x| x.duration.is_some() && x.end_s() < end_s - skip_until as f64).count() } else { 0 };
    if skipped > 0 {
        let _ = writeln!(w, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }
    let parts_from = listed.len().saturating_sub(PART_SEGMENTS);
    for (i, seg) in listed.iter().enumerate().skip(skipped) {
        let pdt = spec.start + chrono::Duration::microseconds((seg.start_s * 1e6).round() as i64);
        let _ = writeln!(w, "#EXT-X-PROGRAM-DATE-TIME:{}", pdt.to_rfc3339_opts(SecondsFormat::Millis, true));
        if live && i >= parts_from {
            for (k, p) in seg.parts.iter().enumerate() {
                let _ = write!(w, "#EXT-X-PART:DURATION={:.5},URI=\"{rep}/{}\"", p.duration, part_file(seg.number, k));
                let _ = writeln!(w, "{}", if p.independent { ",INDEPENDENT=YES" } else { "" });
            }
        }
        if let Some(d) = seg.duration {
            let _ = writeln!(w, "#EXTINF:{d:.5},\n{rep}/{}", segment_file(seg.number));
        }
    }
    if live {
        let (n, k) = match listed.last() {
            Some(l) if l.duration.is_none() => (l.number, l.parts.len()),
            Some(l) => (l.number + 1, 0),
            None => (0, 0),
        };
        let _ = writeln!(w, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{rep}/{}\"", part_file(n, k));
        for other in spec.tracks.iter().filter(|t| t.as_str() != rep) {
            let Some(last) = s.tracks.get(other).and_then(|t| t.last()) else { continue };
            // LAST-PART of a complete segment is its last part; LAST-MSN the segment.
            let _ = writeln!(
                w,
                "#EXT-X-RENDITION-REPORT:URI=\"{other}.m3u8\",LAST-MSN={},LAST-PART={}",
                last.number,
                last.parts.len().saturating_sub(1)
            );
        }
    } else {
        let _ = writeln!(w, "#EXT-X-ENDLIST");
    }
    Some(out)
}

/// The low-latency master playlist: the video rungs as variants of one audio group (the audio
/// is a track of its own in fMP4). Bandwidths and codecs are the variants' (with the audio's).
pub fn master_playlist(variants: &[Variant], with_audio: bool) -> Vec<u8> {
    let v = variant_streams(variants, with_audio.then_some(AUDIO_GROUP));
    let alternatives = match with_audio {
        true => vec![AlternativeMedia {
            media_type: AlternativeMediaType::Audio,
            uri: Some(format!("{AUDIO_REP}.m3u8")),
            group_id: AUDIO_GROUP.into(),
            name: "audio".into(),
            default: true,
            autoselect: true,
            channels: None,
            ..Default::default()
        }],
        false => Vec::new(),
    };
    let pl = MasterPlaylist { version: Some(9), variants: v, alternatives, independent_segments: true, ..Default::default() };
    let mut out = Vec::new();
    pl.write_to(&mut out).expect("writing to a Vec cannot fail");
    out
}

/// The low-latency broadcasts of this process, by video id.
#[derive(Debug, Default)]
pub struct Registry {
    streams: Mutex<HashMap<String, Arc<LlStream>>>,
}

impl Registry {
    /// A new low-latency broadcast for `video_id`.
    pub fn open(&self, video_id: &str) -> Arc<LlStream> {
        let s = Arc::new(LlStream::default());
        if let Ok(mut m) = self.streams.lock() {
            m.insert(video_id.to_string(), s.clone());
        }
        s
    }

    pub fn get(&self, video_id: &str) -> Option<Arc<LlStream>> {
        self.streams.lock().ok()?.get(video_id).cloned()
    }

    /// The broadcast is over and its final playlists are on disk.
    pub fn close(&self, video_id: &str) {
        if let Some(s) = self.streams.lock().ok().and_then(|mut m| m.remove(video_id)) {
            s.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(tracks: &[&str]) -> LlStream {
        let s = LlStream::default();
        s.configure(LlSpec {
            segment_seconds: 2,
            part_target: 0.5,
            part_s: 0.5,
            key: Some(KeyLine { uri: KEY_URI.into(), iv_hex: "0x000102030405060708090a0b0c0d0e0f".into() }),
            start: DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z").unwrap().with_timezone(&Utc),
            tracks: tracks.iter().map(|t| t.to_string()).collect(),
            live: true,
        });
        s
    }

    /// Adds `n` complete 2 s segments of four 0.5 s parts to `rep`, from segment `from`.
    fn segments(s: &LlStream, rep: &str, from: u64, n: u64) {
        for seg in from..from + n {
            for k in 0..4 {
                s.add_part(rep, seg, k, Part { duration: 0.5, independent: k % 2 == 0, bytes: 100 }).unwrap();
            }
            s.complete_segment(rep, seg, 2.0);
        }
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines().filter(|l| l.starts_with(prefix)).map(str::to_string).collect()
    }

    #[test]
    fn a_live_playlist_lists_recent_parts_a_hint_and_reports() {
        let s = stream(&["360p", "audio"]);
        segments(&s, "360p", 0, 6);
        s.add_part("360p", 6, 0, Part { duration: 0.5, independent: true, bytes: 100 }).unwrap();
        segments(&s, "audio", 0, 2);
        let text = s.render("360p", false).unwrap();
        assert!(text.starts_with("#EXTM3U\n"), "{text}");
        assert_eq!(
            lines(&text, "#EXT-X-SERVER-CONTROL"),
            ["#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.500"]
        );
        assert_eq!(lines(&text, "#EXT-X-PART-INF"), ["#EXT-X-PART-INF:PART-TARGET=0.500"]);
        assert_eq!(lines(&text, "#EXTINF").len(), 6);
        // Parts of the last four segments (three complete and the one in progress).
        let parts = lines(&text, "#EXT-X-PART:");
        assert_eq!(parts.len(), 3 * 4 + 1, "{text}");
        assert_eq!(parts[0], "#EXT-X-PART:DURATION=0.50000,URI=\"360p/seg00003.0.m4s\",INDEPENDENT=YES");
        assert_eq!(parts[1], "#EXT-X-PART:DURATION=0.50000,URI=\"360p/seg00003.1.m4s\"");
        assert_eq!(lines(&text, "#EXT-X-PRELOAD-HINT"), ["#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"360p/seg00006.1.m4s\""]);
        assert_eq!(lines(&text, "#EXT-X-RENDITION-REPORT"), ["#EXT-X-RENDITION-REPORT:URI=\"audio.m3u8\",LAST-MSN=1,LAST-PART=3"]);
        // The init section is clear (before the key line); every segment has its date.
        assert!(text.find("#EXT-X-MAP:URI=\"../dash/360p/init00000.mp4\"").unwrap() < text.find("#EXT-X-KEY").unwrap());
        let dates = lines(&text, "#EXT-X-PROGRAM-DATE-TIME");
        assert_eq!(dates.len(), 7);
        assert_eq!(dates[1], "#EXT-X-PROGRAM-DATE-TIME:2026-12-06T10:00:02.000Z");
        assert!(!text.contains("#EXT-X-ENDLIST"));
    }

    #[test]
    fn a_new_run_lists_nothing_of_the_one_before() {
        let s = stream(&["360p"]);
        segments(&s, "360p", 0, 3);
        assert_eq!(s.configured(), Some(true));
        // A back end that failed, then one that writes parts: it starts from segment 0 again.
        let spec = s.read(|st| st.spec.clone()).flatten().unwrap();
        s.configure(spec);
        assert!(s.render("360p", false).unwrap().lines().all(|l| !l.starts_with("360p/")), "the old segments are gone");
        s.add_part("360p", 0, 0, Part { duration: 0.5, independent: true, bytes: 100 }).unwrap();
        // A back end that writes no parts: no playlists at all.
        s.reset();
        assert_eq!(s.configured(), None);
        assert!(s.render("360p", false).is_none());
    }

    #[test]
    fn a_delta_update_skips_what_lies_before_the_skip_boundary() {
        let s = stream(&["360p"]);
        segments(&s, "360p", 0, 10);
        let full = s.render("360p", false).unwrap();
        let delta = s.render("360p", true).unwrap();
        // 20 s listed, CAN-SKIP-UNTIL 12 s: segments ending before 8 s (0–2) are skipped.
        assert_eq!(lines(&delta, "#EXT-X-SKIP"), ["#EXT-X-SKIP:SKIPPED-SEGMENTS=3"]);
        let uris = |t: &str| t.lines().filter(|l| l.starts_with("360p/")).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(uris(&delta), uris(&full)[3..]);
        // Too short to skip anything: no skip tag.
        let s = stream(&["360p"]);
        segments(&s, "360p", 0, 3);
        assert!(lines(&s.render("360p", true).unwrap(), "#EXT-X-SKIP").is_empty());
    }

    #[test]
    fn blocking_requests_are_ready_once_the_part_exists() {
        let s = stream(&["360p"]);
        assert_eq!(s.wait_state("360p", 0, Some(0)), Wait::Pending);
        assert_eq!(s.wait_state("360p", 3, None), Wait::TooFar);
        assert_eq!(s.wait_state("720p", 0, None), Wait::Unknown);
        s.add_part("360p", 0, 0, Part { duration: 0.5, independent: true, bytes: 100 }).unwrap();
        assert_eq!(s.wait_state("360p", 0, Some(0)), Wait::Ready);
        assert_eq!(s.wait_state("360p", 0, Some(1)), Wait::Pending);
        assert_eq!(s.wait_state("360p", 0, None), Wait::Pending);
        assert_eq!(s.part_state("360p", 0, 1), Wait::Pending);
        assert_eq!(s.part_state("360p", 0, 2), Wait::Unknown);
        assert_eq!(s.progress("360p", 0), Progress::Writing(100));
        assert_eq!(s.progress("360p", 1), Progress::Next);
        assert_eq!(s.progress("360p", 2), Progress::Next);
        assert_eq!(s.progress("360p", 3), Progress::Unknown);
        s.complete_segment("360p", 0, 0.5);
        assert_eq!(s.progress("360p", 0), Progress::Complete(100));
        assert_eq!(s.progress("360p", 3), Progress::Unknown);
        assert_eq!(s.wait_state("360p", 0, None), Wait::Ready);
        assert_eq!(s.part_state("360p", 1, 0), Wait::Pending);
        // Out of order is refused, and changes nothing.
        assert!(s.add_part("360p", 2, 0, Part { duration: 0.5, independent: true, bytes: 100 }).is_err());
        assert!(s.add_part("360p", 1, 1, Part { duration: 0.5, independent: true, bytes: 100 }).is_err());
        s.finish();
        assert_eq!(s.wait_state("360p", 9, Some(0)), Wait::Ready);
        assert_eq!(s.part_state("360p", 1, 0), Wait::Unknown);
    }

    #[test]
    fn a_finished_broadcast_is_a_vod_playlist_of_whole_segments() {
        let s = stream(&["360p"]);
        segments(&s, "360p", 0, 2);
        s.add_part("360p", 2, 0, Part { duration: 0.5, independent: true, bytes: 100 }).unwrap();
        s.finish();
        let text = s.render("360p", false).unwrap();
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.trim_end().ends_with("#EXT-X-ENDLIST"), "{text}");
        assert!(lines(&text, "#EXT-X-PART").is_empty() && lines(&text, "#EXT-X-PRELOAD-HINT").is_empty());
        assert_eq!(lines(&text, "#EXTINF").len(), 2);
        match m3u8_rs::parse_playlist_res(text.as_bytes()).unwrap() {
            m3u8_rs::Playlist::MediaPlaylist(p) => {
                assert_eq!(p.segments.len(), 2);
                assert!(p.end_list);
            }
            _ => panic!("expected a media playlist"),
        }
    }

    #[tokio::test]
    async fn one_change_wakes_every_waiter() {
        let s = Arc::new(stream(&["360p"]));
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let (s, mut rx) = (s.clone(), s.subscribe("360p"));
                tokio::spawn(async move {
                    while s.wait_state("360p", 0, Some(0)) != Wait::Ready {
                        rx.changed().await.unwrap();
                    }
                })
            })
            .collect();
        s.add_part("360p", 0, 0, Part { duration: 0.5, independent: true, bytes: 100 }).unwrap();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(10), w).await.unwrap().unwrap();
        }
    }
}
