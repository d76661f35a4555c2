//! The segment sinks and where their bytes go: one hlssink3 (MPEG-TS, HLS) and one hlscmafsink
//! (CMAF, DASH) per rung, and one hlscmafsink for the audio. Each sink is registered with the
//! kind of output it is (`SinkKind`) when it is made, so the bus loop routes a finished segment
//! by a lookup, not by reading element names. HLS segments are written through Cascade's
//! `SegmentWriter` (AES-128-CBC when the video has a key); every playlist a sink would write is
//! discarded, since Cascade writes the manifests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gio::prelude::*;
use gst::prelude::*;
use gstreamer as gst;
use tracing::warn;

use super::elements::{make, running_time_ns, startup_boundaries_ns};
use super::llcmaf::{ll_cmaf_sink, LlCmafSpec};
use crate::ladder::Rendition;
use crate::packaging::crypto::{KeyMaterial, SegmentWriter};
use crate::packaging::AUDIO_REP;
use crate::transcode::{TranscodeError, TranscodeRequest};

/// hlscmafsink's `init-location` pattern: it numbers init segments from 0, so the one it writes
/// is `crate::packaging::DASH_INIT`, the name the MPD and the readiness check expect.
const CMAF_INIT_PATTERN: &str = "init%05d.mp4";

/// What a segment sink produces; the bus loop routes its `hls-segment-added` messages by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SinkKind {
    /// MPEG-TS segments of one rung (`hls/{rung}/`), written through a `SegmentWriter`.
    Hls(String),
    /// CMAF segments of one DASH representation (`dash/{rep}/`): a rung, or `AUDIO_REP`.
    Cmaf(String),
}

/// The segment sinks of one pipeline, and the HLS segments they are writing.
#[derive(Default)]
pub(super) struct Sinks {
    kinds: HashMap<gst::Object, SinkKind>,
    writers: Writers,
}

impl Sinks {
    /// The HLS sink of rung `r`, registered as `SinkKind::Hls`.
    pub(super) fn hls(&mut self, req: &TranscodeRequest, r: &Rendition) -> Result<gst::Element, TranscodeError> {
        let sink = hls_sink(req, r, &self.writers)?;
        self.kinds.insert(sink.clone().upcast::<gst::Object>(), SinkKind::Hls(r.name.clone()));
        Ok(sink)
    }

    /// The CMAF sink of representation `rep` (a rung or `AUDIO_REP`), registered as `SinkKind::Cmaf`.
    pub(super) fn cmaf(&mut self, req: &TranscodeRequest, rep: &str) -> Result<gst::Element, TranscodeError> {
        let sink = match req.low_latency() {
            Some(stream) => {
                let spec = LlCmafSpec {
                    rep: rep.to_string(),
                    out_dir: req.out_dir.clone(),
                    segment: gst::ClockTime::from_nseconds(req.ll_segment_ns()),
                    chunk: gst::ClockTime::from_nseconds(req.part_ns()),
                    key: req.key.clone(),
                    stream: stream.clone(),
                };
                let (segment, chunk) = (spec.segment, spec.chunk);
                let (sink, mux) = ll_cmaf_sink(spec)?;
                if rep == AUDIO_REP {
                    split_audio_on_grid(req, &sink, &mux, segment, chunk)?;
                } else {
                    split_at_startup(req, rep, &sink, mux);
                }
                sink
            }
            None => cmaf_sink(req, rep)?,
        };
        self.kinds.insert(sink.clone().upcast::<gst::Object>(), SinkKind::Cmaf(rep.to_string()));
        Ok(sink)
    }

    /// What the sink that posted a message is; `None` for any other element.
    pub(super) fn kind(&self, src: &gst::Object) -> Option<&SinkKind> {
        self.kinds.get(src)
    }

    /// Closes (and, when encrypting, pads) the HLS segment at `location`, which its sink reported
    /// finished.
    pub(super) fn close_hls_segment(&self, location: &str) -> Result<(), TranscodeError> {
        let writer = self.writers.lock().ok().and_then(|mut m| m.remove(Path::new(location)));
        match writer {
            Some(mut w) => w.finish().map_err(|e| TranscodeError::Packaging(format!("{location}: {e}"))),
            None => Err(TranscodeError::Runtime(format!("no writer for segment {location}"))),
        }
    }
}

/// RFC 6381 codecs string of the stream a CMAF sink receives (`avc1.64001f`).
pub(super) fn codecs(sink: &gst::Element) -> Option<String> {
    let caps = sink.static_pad("sink")?.current_caps()?;
    gstreamer_pbutils::functions::codec_utils_caps_get_mime_codec(&caps).ok().map(|s| s.to_string())
}

/// Waits briefly for a file the sink reported: hlscmafsink closes (renames) it right after
/// posting its message.
pub(super) fn wait_for_file(path: &Path) -> bool {
    for _ in 0..100 {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    path.exists()
}

/// Open segment writers of one job, by path, until the sink reports the segment finished.
type Writers = Arc<Mutex<HashMap<PathBuf, SegmentWriter>>>;

/// Forwards gio writes to the writer registered for one path.
struct WriterHandle {
    writers: Writers,
    path: PathBuf,
}

impl std::io::Write for WriterHandle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut map = self.writers.lock().map_err(|_| std::io::Error::other("writer lock poisoned"))?;
        match map.get_mut(&self.path) {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("segment writer already closed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut map = self.writers.lock().map_err(|_| std::io::Error::other("writer lock poisoned"))?;
        match map.get_mut(&self.path) {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// A segment stream that refuses every write with the reason it could not be opened.
struct FailingWriter(String);

impl std::io::Write for FailingWriter {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(self.0.clone()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Connects the signals that make a sink write through Cascade and discard its own playlist.
fn own_sink_output(sink: &gst::Element, writers: Option<(Writers, Option<KeyMaterial>)>) {
    sink.connect("get-playlist-stream", false, |_| {
        // Cascade writes playlists itself (with the key line, EVENT→VOD at EOS).
        Some(gio::MemoryOutputStream::new_resizable().upcast::<gio::OutputStream>().to_value())
    });
    if let Some((writers, key)) = writers {
        sink.connect("get-fragment-stream", false, move |args| {
            // The signal must return a stream: hlssink3 declares a non-nullable GOutputStream, and
            // a None here panics inside a GLib callback, which aborts the whole server. A segment
            // that cannot be opened (its media dir deleted while the pipeline runs) gets a stream
            // whose first write fails instead, so the sink posts an error and the job ends like
            // any other failed job.
            let stream = |w: Box<dyn std::io::Write + Send>| Some(gio::WriteOutputStream::new(w).upcast::<gio::OutputStream>().to_value());
            let Some(location) = args.get(1).and_then(|v| v.get::<String>().ok()) else {
                return stream(Box::new(FailingWriter("no segment location in get-fragment-stream".into())));
            };
            let path = PathBuf::from(&location);
            let writer = match SegmentWriter::create(&path, key.as_ref()) {
                Ok(w) => w,
                Err(e) => {
                    warn!(%location, error = %e, "cannot open segment for writing");
                    return stream(Box::new(FailingWriter(format!("cannot open segment {location}: {e}"))));
                }
            };
            match writers.lock() {
                Ok(mut map) => {
                    map.insert(path.clone(), writer);
                }
                Err(_) => return stream(Box::new(FailingWriter("segment writers lock poisoned".into()))),
            }
            stream(Box::new(WriterHandle { writers: writers.clone(), path }))
        });
    }
}

fn hls_sink(req: &TranscodeRequest, r: &Rendition, writers: &Writers) -> Result<gst::Element, TranscodeError> {
    let dir = req.out_dir.join("hls").join(&r.name);
    let sink = make("hlssink3", Some(&format!("hls_{}", r.name)))?;
    sink.set_property("location", dir.join("seg%05d.ts").to_string_lossy().to_string());
    sink.set_property("playlist-location", dir.join("hlssink3.m3u8").to_string_lossy().to_string());
    sink.set_property("target-duration", req.ladder.segment_seconds);
    sink.set_property("playlist-length", 0u32);
    sink.set_property("max-files", 0u32);
    sink.set_property_from_str("playlist-type", "vod");
    sink.set_property("send-keyframe-requests", false);
    if let Some(limit) = segment_limit_ns(req) {
        // target-duration only takes whole seconds, so the inner splitmuxsink is set directly.
        let split = sink.downcast_ref::<gst::Bin>().and_then(|b| b.by_name("split_mux_sink"));
        match split {
            Some(split) => split.set_property("max-size-time", gst::ClockTime::from_nseconds(limit)),
            None => return Err(TranscodeError::Build("hlssink3 has no split_mux_sink child".into())),
        }
    }
    own_sink_output(&sink, Some((writers.clone(), req.key.clone())));
    live_handles_own_preroll(req, &sink);
    Ok(sink)
}

/// splitmuxsink's `max-size-time` (ns) when target-duration is not the right limit. It starts a
/// new file when the GOP just completed would push the current one past that limit.
/// - Startup segments: at the startup length every GOP becomes its own segment, so keyframe
///   placement (forced at the startup boundaries, then every GOP) alone decides segments. cmafmux
///   splits at the same keyframes as long as nothing else asks the encoders for a keyframe: its
///   own requests are off (cmaf_sink), and so are hlssink3's.
/// - Segments of k GOPs (live): half a GOP past k GOPs, so k GOPs fit and the next one does not,
///   whatever the frame rate rounds a GOP to (at 29.97 fps, 30 frames).
fn segment_limit_ns(req: &TranscodeRequest) -> Option<u64> {
    if let Some(&first) = startup_boundaries_ns(req).first() {
        return Some(first);
    }
    let k = u64::from(req.ladder.gops_per_segment());
    (k > 1).then(|| {
        let (n, d) = req.fps();
        let gop_ns = u64::from(req.ladder.gop_frames(n, d)) * 1_000_000_000 * u64::from(d.max(1)) / u64::from(n.max(1));
        gop_ns * k + gop_ns / 2
    })
}

/// Live: the sink bin prerolls on its own instead of holding the pipeline's way to PLAYING.
/// Otherwise every sink waits, holding its first buffer, until all of them have had one, and a
/// rung that has not finished its first GOP when it is dropped (see `bus::Overload`) never gets
/// one: every other rung stopped after its first buffers (measured under CPU load: the 720p rung
/// dropped at 1.4 s of media stopped 480p and 360p at 0.07 s, for good).
fn live_handles_own_preroll(req: &TranscodeRequest, sink: &gst::Element) {
    if req.live.is_some() {
        sink.set_property("async-handling", true);
    }
}

fn cmaf_sink(req: &TranscodeRequest, rep: &str) -> Result<gst::Element, TranscodeError> {
    let dir = req.out_dir.join("dash").join(rep);
    let sink = make("hlscmafsink", Some(&format!("cmaf_{rep}")))?;
    sink.set_property("location", dir.join("seg%05d.m4s").to_string_lossy().to_string());
    sink.set_property("init-location", dir.join(CMAF_INIT_PATTERN).to_string_lossy().to_string());
    sink.set_property("playlist-location", dir.join("hlscmafsink.m3u8").to_string_lossy().to_string());
    sink.set_property("target-duration", req.ladder.segment_seconds);
    sink.set_property("playlist-length", 0u32);
    sink.set_property("max-files", 0u32);
    sink.set_property_from_str("playlist-type", "vod");
    sink.set_property("sync", false);
    let mux = sink
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("muxer"))
        .ok_or_else(|| TranscodeError::Build("hlscmafsink has no muxer child".into()))?;
    // Keyframes are placed by Cascade (fixed GOP, forced startup keyframes), identically in every
    // rung. cmafmux would otherwise ask the shared encoder for keyframes at its own fragment
    // boundaries, and a request that arrives late becomes an immediate keyframe in one rung only.
    mux.set_property("send-force-keyunit", false);
    split_at_startup(req, rep, &sink, mux);
    own_sink_output(&sink, None);
    live_handles_own_preroll(req, &sink);
    Ok(sink)
}

/// Makes the CMAF muxer `mux` of `sink` end fragments at the startup boundaries, if any.
fn split_at_startup(req: &TranscodeRequest, rep: &str, sink: &gst::Element, mux: gst::Element) {
    let boundaries = startup_boundaries_ns(req);
    if let (false, Some(pad)) = (boundaries.is_empty(), sink.static_pad("sink")) {
        if rep != AUDIO_REP {
            split_video_at(&pad, mux, boundaries);
        } else {
            split_audio_at(&pad, mux, boundaries, u64::from(req.ladder.audio.sample_rate.max(1)));
        }
    }
}

/// The low-latency audio: Cascade cuts its fragments and chunks itself (cmafmux's
/// `manual-split`), at the AAC frame edge nearest each boundary: fragments at the startup
/// boundaries and then every `segment` of running time after the last of them, where the video's
/// keyframes are; chunks every `chunk` within a fragment. Left to itself, cmafmux in chunk mode
/// counts each fragment's `fragment-duration` from the previous fragment's real end, the last
/// whole frame before it: every audio segment came out 93 AAC frames (1.984 s of 2 s), and after
/// 150 s audio segment N held media 1.2 s earlier than the number-addressed low-latency MPD says,
/// which is where dash.js's low-latency mode began to stall once per segment. Split requests at
/// the boundaries (`split-at-running-time`) did not hold in chunk mode either (measured: a
/// one-frame fragment, then a fragment of `fragment-duration` that ignored the next request).
/// A chunk is then 15 or 16 frames (0.320 or 0.341 s of a 1/3 s part), never over PART-TARGET.
fn split_audio_on_grid(
    req: &TranscodeRequest,
    sink: &gst::Element,
    mux: &gst::Element,
    segment: gst::ClockTime,
    chunk: gst::ClockTime,
) -> Result<(), TranscodeError> {
    let (Some(pad), Some(target)) = (sink.static_pad("sink"), mux.static_pad("sink")) else {
        return Err(TranscodeError::Build("the low-latency audio sink has no sink pad".into()));
    };
    mux.set_property("manual-split", true);
    let (step, chunk) = (segment.nseconds().max(1), chunk.nseconds().max(1));
    let startup = startup_boundaries_ns(req);
    let after = startup.last().copied().unwrap_or(0);
    let fragments = startup.into_iter().chain((1..).map(move |k: u64| after + k * step)).peekable();
    let frame_ns = 1024 * 1_000_000_000 / u64::from(req.ladder.audio.sample_rate.max(1));
    // The fragment boundaries to come; the start of the fragment being cut into chunks and its
    // next chunk boundary (none before the first buffer).
    let state = Mutex::new((fragments, None::<(u64, u64)>));
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else { return gst::PadProbeReturn::Ok };
        let Some(start) = running_time_ns(pad, pts) else { return gst::PadProbeReturn::Ok };
        let Ok(mut state) = state.lock() else { return gst::PadProbeReturn::Remove };
        let (fragments, at) = &mut *state;
        // A boundary is cut before the first frame that starts at or after it, less half a frame:
        // at the frame edge nearest to it.
        let reached = |b: u64| start + frame_ns / 2 >= b;
        let mut new_fragment = None;
        while let Some(b) = fragments.next_if(|b| reached(*b)) {
            new_fragment = Some(b);
        }
        let first = at.is_none();
        let fragment = new_fragment.or(at.map(|a| a.0)).unwrap_or(0);
        let mut next = match (new_fragment, *at) {
            (None, Some((_, next))) => next,
            _ => fragment + chunk,
        };
        let chunk_reached = reached(next);
        while reached(next) {
            next += chunk;
        }
        *at = Some((fragment, next));
        // The first buffer starts the first fragment.
        let split = match (first, new_fragment) {
            (true, _) => None,
            (false, Some(_)) => Some(false),
            (false, None) => chunk_reached.then_some(true),
        };
        if let Some(chunk) = split {
            let split_now = gst::Structure::builder("FMP4MuxSplitNow").field("chunk", chunk).build();
            if !target.send_event(gst::event::CustomDownstream::new(split_now)) {
                warn!("cmafmux refused a split");
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Asks `cmafmux` to end a fragment at running time `t` (ns).
fn split_at(mux: &gst::Element, t: u64) {
    mux.emit_by_name::<()>("split-at-running-time", &[&gst::ClockTime::from_nseconds(t)]);
}

/// Video: the fragment ends at the first GOP starting at or after each boundary, i.e. at the
/// forced keyframe. Requested on the first buffer, once the muxer has started (stopping the
/// muxer clears pending requests).
fn split_video_at(pad: &gst::Pad, mux: gst::Element, boundaries: Vec<u64>) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        boundaries.iter().for_each(|b| split_at(&mux, *b));
        gst::PadProbeReturn::Remove
    });
}

/// Audio: cmafmux cuts before a frame that straddles the requested time and then makes that one
/// frame a fragment of its own (measured: 0.491 s + 0.021 s). So the split is requested at the
/// end of the AAC frame that reaches each boundary, as it arrives.
fn split_audio_at(pad: &gst::Pad, mux: gst::Element, boundaries: Vec<u64>, sample_rate: u64) {
    let pending = Mutex::new(boundaries);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buf) = info.buffer() else { return gst::PadProbeReturn::Ok };
        let Some(pts) = buf.pts() else { return gst::PadProbeReturn::Ok };
        // aacparse sets durations; should one be missing, an AAC-LC frame is 1024 samples.
        let dur = buf.duration().unwrap_or(gst::ClockTime::from_nseconds(1024 * 1_000_000_000 / sample_rate));
        let Some(start) = running_time_ns(pad, pts) else { return gst::PadProbeReturn::Ok };
        let end = start + dur.nseconds();
        let Ok(mut pending) = pending.lock() else { return gst::PadProbeReturn::Remove };
        if pending.first().is_some_and(|b| *b <= end) {
            if pending.first().is_some_and(|b| *b > start) {
                split_at(&mux, end);
            }
            pending.retain(|b| *b > end);
        }
        if pending.is_empty() {
            gst::PadProbeReturn::Remove
        } else {
            gst::PadProbeReturn::Ok
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment that cannot be opened must fail the pipeline with an error on the bus, not
    /// return no stream from `get-fragment-stream`: that panics inside GLib and aborts the
    /// process (the whole server), and this test binary would die instead of failing.
    #[test]
    fn unopenable_segment_is_a_pipeline_error_not_an_abort() {
        crate::probe::init_gstreamer().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("deleted-while-running");
        let p = gst::parse::launch(
            "videotestsrc num-buffers=90 ! video/x-raw,width=160,height=90,framerate=30/1 ! x264enc key-int-max=15 speed-preset=ultrafast ! h264parse ! hlssink3 name=hls target-duration=1",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = p.by_name("hls").unwrap();
        sink.set_property("location", gone.join("seg%05d.ts").to_string_lossy().to_string());
        sink.set_property("playlist-location", gone.join("x.m3u8").to_string_lossy().to_string());
        let writers: Writers = Arc::new(Mutex::new(HashMap::new()));
        own_sink_output(&sink, Some((writers.clone(), None)));
        p.set_state(gst::State::Playing).unwrap();
        let msg = p.bus().unwrap().timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Error, gst::MessageType::Eos]);
        p.set_state(gst::State::Null).unwrap();
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(e)) => {
                let text = format!("{} {:?}", e.error(), e.debug());
                assert!(text.contains("cannot open segment") || text.contains("write"), "unexpected error: {text}");
            }
            other => panic!("expected an error for an unopenable segment, got {other:?}"),
        }
        assert!(!gone.exists(), "nothing may be created in place of the deleted dir");
        assert!(writers.lock().unwrap().is_empty());
    }

    /// The init segment hlscmafsink writes is the one packaging names.
    #[test]
    fn cmaf_init_segment_is_dash_init() {
        assert_eq!(CMAF_INIT_PATTERN.replace("%05d", &format!("{:05}", 0)), crate::packaging::DASH_INIT);
    }

    /// Segments are routed by the sink that posted them: a sink made for a rung or the audio is
    /// found as what it is, any other element is not a segment sink.
    #[test]
    fn sinks_are_routed_by_kind() {
        crate::probe::init_gstreamer().unwrap();
        let req = crate::transcode::test_support::request(true);
        let mut sinks = Sinks::default();
        let hls = sinks.hls(&req, &req.renditions[0]).unwrap();
        let cmaf = sinks.cmaf(&req, AUDIO_REP).unwrap();
        let rung = req.renditions[0].name.clone();
        assert_eq!(sinks.kind(hls.upcast_ref()), Some(&SinkKind::Hls(rung)));
        assert_eq!(sinks.kind(cmaf.upcast_ref()), Some(&SinkKind::Cmaf(AUDIO_REP.to_string())));
        // A sink of the same factory and name that was not made through `Sinks` is no segment sink.
        let other = make("hlssink3", Some(hls.name().as_str())).unwrap();
        assert_eq!(sinks.kind(other.upcast_ref()), None);
    }
}
