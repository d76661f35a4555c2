//! The GStreamer back end: decode once, `tee` into one scaler + x264 encoder per rung, one AAC
//! encode shared by every output; each rung feeds hlssink3 (MPEG-TS, HLS) and hlscmafsink
//! (CMAF, DASH). Segments are written through Cascade's own writer (encrypting for HLS), and the
//! playlists the sinks would write are discarded: Cascade writes the manifests itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gio::prelude::*;
use gst::prelude::*;
use gstreamer as gst;
use tracing::{debug, info, warn};

use super::{EventSink, TranscodeError, TranscodeEvent, TranscodeRequest, Transcoder, Watchdog};
use crate::ladder::Rendition;
use crate::packaging::crypto::{KeyMaterial, SegmentWriter};
use crate::packaging::{images, write_atomic, Track, AUDIO_REP};
use crate::probe::init_gstreamer;

/// The GStreamer back end.
#[derive(Debug, Default, Clone, Copy)]
pub struct GstTranscoder;

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

/// Sets the pipeline to Null however the job ends.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, TranscodeError> {
    let mut b = gst::ElementFactory::make(factory);
    if let Some(n) = name {
        b = b.name(n);
    }
    b.build().map_err(|_| TranscodeError::Build(format!("GStreamer element {factory:?} is not available")))
}

fn queue(max_time: Duration) -> Result<gst::Element, TranscodeError> {
    let q = make("queue", None)?;
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 0u32);
    q.set_property("max-size-time", max_time.as_nanos() as u64);
    Ok(q)
}

fn link_err(what: &str) -> impl Fn(gst::glib::BoolError) -> TranscodeError + '_ {
    move |e| TranscodeError::Build(format!("cannot link {what}: {e}"))
}

fn caps_filter(caps: gst::Caps) -> Result<gst::Element, TranscodeError> {
    let f = make("capsfilter", None)?;
    f.set_property("caps", &caps);
    Ok(f)
}

/// Images taken from the 1 fps image branch: poster and thumbnail at 10 % of the duration (or
/// the last frame seen, for clips that end first), storyboard tiles every `interval` seconds.
struct ImageState {
    dir: PathBuf,
    poster_at: f64,
    interval: f64,
    count: u32,
    tile: (u32, u32),
    duration: f64,
    /// Latest JPEG per still (`poster.jpg`, `thumbnail.jpg`) and whether it was written.
    stills: Mutex<HashMap<&'static str, (Vec<u8>, bool)>>,
    tiles: Mutex<Vec<Vec<u8>>>,
}

impl ImageState {
    fn write(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        write_atomic(&self.dir.join(name), data)
    }

    /// A JPEG frame of one still at stream time `t`; returns true when it was just written.
    fn offer_still(&self, name: &'static str, t: f64, jpeg: Vec<u8>) -> bool {
        let Ok(mut map) = self.stills.lock() else { return false };
        let entry = map.entry(name).or_insert_with(|| (Vec::new(), false));
        if entry.1 {
            return false;
        }
        entry.0 = jpeg;
        if t + 1e-3 >= self.poster_at {
            entry.1 = self.write(name, &entry.0).is_ok();
            return entry.1;
        }
        false
    }

    fn offer_tile(&self, t: f64, rgb: Vec<u8>) {
        let Ok(mut tiles) = self.tiles.lock() else { return };
        // Tile k shows the first frame at or after k × interval; gaps repeat the frame.
        let k = ((t + 1e-3) / self.interval).floor() as usize;
        while tiles.len() <= k && (tiles.len() as u32) < self.count {
            tiles.push(rgb.clone());
        }
    }

    /// Writes what is still missing at the end; returns the names written.
    fn finish(&self) -> Vec<String> {
        let mut done = Vec::new();
        if let Ok(mut map) = self.stills.lock() {
            for (name, (jpeg, written)) in map.iter_mut() {
                if !*written && !jpeg.is_empty() && self.write(name, jpeg).is_ok() {
                    *written = true;
                    done.push(name.to_string());
                }
            }
        }
        let tiles = self.tiles.lock().map(|t| t.clone()).unwrap_or_default();
        if let Some(last) = tiles.last().cloned() {
            let mut tiles = tiles;
            while (tiles.len() as u32) < self.count {
                tiles.push(last.clone());
            }
            let (w, h, rgb) = images::compose_rgb(&tiles, self.tile.0, self.tile.1);
            match encode_jpeg_rgb(w, h, rgb) {
                Ok(jpeg) => {
                    let vtt = images::storyboard_vtt(self.count, self.interval, self.duration, self.tile.0, self.tile.1);
                    if self.write(images::SPRITE, &jpeg).is_ok() && self.write(images::VTT, vtt.as_bytes()).is_ok() {
                        done.push(images::SPRITE.to_string());
                    }
                }
                Err(e) => warn!(error = %e, "cannot encode the storyboard"),
            }
        }
        done
    }
}

/// Encodes one RGB image as JPEG with a small GStreamer pipeline.
fn encode_jpeg_rgb(w: u32, h: u32, rgb: Vec<u8>) -> Result<Vec<u8>, String> {
    use gstreamer_app as gst_app;
    let p = gst::Pipeline::new();
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", w as i32)
        .field("height", h as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .build();
    let src = gst_app::AppSrc::builder().caps(&caps).format(gst::Format::Time).build();
    let conv = gst::ElementFactory::make("videoconvert").build().map_err(|e| e.to_string())?;
    let enc = gst::ElementFactory::make("jpegenc").property("quality", 80i32).build().map_err(|e| e.to_string())?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    p.add_many([src.upcast_ref(), &conv, &enc, sink.upcast_ref()]).map_err(|e| e.to_string())?;
    gst::Element::link_many([src.upcast_ref(), &conv, &enc, sink.upcast_ref()]).map_err(|e| e.to_string())?;
    let _null = NullOnDrop(p.clone());
    p.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
    let mut buf = gst::Buffer::from_mut_slice(rgb);
    buf.get_mut().ok_or("buffer not writable")?.set_pts(gst::ClockTime::ZERO);
    src.push_buffer(buf).map_err(|e| e.to_string())?;
    let _ = src.end_of_stream();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(20)).ok_or("no JPEG produced")?;
    let buffer = sample.buffer().ok_or("empty sample")?;
    let map = buffer.map_readable().map_err(|e| e.to_string())?;
    Ok(map.as_slice().to_vec())
}

/// Stream time (seconds) of a sample's first buffer.
fn sample_time(sample: &gst::Sample) -> Option<f64> {
    let pts = sample.buffer()?.pts()?;
    let seg = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    Some(seg.to_stream_time(pts)?.nseconds() as f64 / 1e9)
}

/// The image branch: 1 frame per second off the decoded video (or a rung), scaled three ways.
fn image_branch(
    p: &gst::Pipeline,
    vtee: &gst::Element,
    state: Arc<ImageState>,
    poster: (u32, u32),
    thumb: (u32, u32),
) -> Result<(), TranscodeError> {
    use gstreamer_app as gst_app;
    // Raw full-rate frames wait here: a few at most, and old ones are dropped rather than
    // holding back the encoders (the stills and tiles need one frame a second).
    let q = queue(Duration::ZERO)?;
    q.set_property("max-size-buffers", 4u32);
    q.set_property_from_str("leaky", "downstream");
    let rate = make("videorate", None)?;
    rate.set_property("drop-only", true);
    rate.set_property("max-rate", 1i32);
    let itee = make("tee", None)?;
    p.add_many([&q, &rate, &itee]).map_err(link_err("image branch"))?;
    gst::Element::link_many([vtee, &q, &rate, &itee]).map_err(link_err("image branch"))?;
    let notify = |sink: &gst_app::AppSink, name: &str| {
        let s = gst::Structure::builder("cascade-image").field("name", name).build();
        let _ = sink.post_message(gst::message::Application::builder(s).src(sink).build());
    };
    for (name, (w, h)) in [(images::POSTER, poster), (images::THUMBNAIL, thumb)] {
        let q = queue(Duration::from_secs(2))?;
        let scale = make("videoscale", None)?;
        let caps = caps_filter(
            gst::Caps::builder("video/x-raw")
                .field("width", w as i32)
                .field("height", h as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        )?;
        let enc = make("jpegenc", None)?;
        enc.set_property("quality", 85i32);
        let st = state.clone();
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let (Some(t), Some(buf)) = (sample_time(&sample), sample.buffer()) {
                            if let Ok(map) = buf.map_readable() {
                                if st.offer_still(name, t, map.as_slice().to_vec()) {
                                    notify(sink, name);
                                }
                            }
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build();
        p.add_many([&q, &scale, &caps, &enc, sink.upcast_ref()]).map_err(link_err("still"))?;
        gst::Element::link_many([&itee, &q, &scale, &caps, &enc, sink.upcast_ref()]).map_err(link_err("still"))?;
    }
    let q = queue(Duration::from_secs(2))?;
    let scale = make("videoscale", None)?;
    let conv = make("videoconvert", None)?;
    let caps = caps_filter(
        gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", state.tile.0 as i32)
            .field("height", state.tile.1 as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    )?;
    let st = state.clone();
    let (tw, th) = state.tile;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let (Some(t), Some(buf)) = (sample_time(&sample), sample.buffer()) {
                        if let Ok(map) = buf.map_readable() {
                            // RGB rows may be padded to 4 bytes: copy them tight.
                            let stride = (tw as usize * 3).div_ceil(4) * 4;
                            let mut rgb = Vec::with_capacity((tw * th * 3) as usize);
                            for y in 0..th as usize {
                                if let Some(row) = map.as_slice().get(y * stride..y * stride + tw as usize * 3) {
                                    rgb.extend_from_slice(row);
                                }
                            }
                            if rgb.len() == (tw * th * 3) as usize {
                                st.offer_tile(t, rgb);
                            }
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build();
    p.add_many([&q, &scale, &conv, &caps, sink.upcast_ref()]).map_err(link_err("storyboard"))?;
    gst::Element::link_many([&itee, &q, &scale, &conv, &caps, sink.upcast_ref()]).map_err(link_err("storyboard"))?;
    Ok(())
}

/// An `appsrc` that reads a file while the upload is still writing it: bounded (4 MiB queued at
/// most; the reader waits when the pipeline is slower), EOS when the upload completes, an error
/// when it breaks off. The reader stops when the pipeline shuts down (pushes are refused).
fn growing_source(path: &Path, growing: Arc<crate::upload::Growing>) -> Result<gst::Element, TranscodeError> {
    use crate::upload::UploadState;
    use gstreamer_app as gst_app;
    use std::io::Read;
    init_gstreamer().map_err(TranscodeError::Build)?;
    let src = gst_app::AppSrc::builder()
        .name("ingest")
        .stream_type(gst_app::AppStreamType::Stream)
        .format(gst::Format::Bytes)
        .max_bytes(4 * 1024 * 1024)
        .block(true)
        .build();
    let mut file = std::fs::File::open(path).map_err(|e| TranscodeError::Runtime(format!("cannot read the upload: {e}")))?;
    let weak = src.downgrade();
    std::thread::Builder::new()
        .name("ingest-reader".into())
        .spawn(move || {
            let mut pos = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            let mut running = false;
            loop {
                let Some(src) = weak.upgrade() else { return };
                // appsrc refuses buffers until it is started; once the pipeline stops, so do we.
                if src.current_state() < gst::State::Paused {
                    if running {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                running = true;
                let (have, state) = growing.wait_beyond(pos, Duration::from_millis(200));
                if have > pos {
                    let want = ((have - pos) as usize).min(buf.len());
                    match file.read(&mut buf[..want]) {
                        Ok(0) => std::thread::sleep(Duration::from_millis(20)),
                        Ok(n) => {
                            pos += n as u64;
                            if src.push_buffer(gst::Buffer::from_slice(buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            gst::element_error!(src, gst::ResourceError::Read, ("cannot read the upload: {}", e));
                            return;
                        }
                    }
                } else if state == UploadState::Done {
                    let _ = src.end_of_stream();
                    return;
                } else if state == UploadState::Aborted {
                    gst::element_error!(src, gst::ResourceError::Read, ("the upload was aborted"));
                    return;
                }
            }
        })
        .map_err(|e| TranscodeError::Build(e.to_string()))?;
    Ok(src.upcast())
}

/// Everything the bus loop needs to know about the built graph.
struct Graph {
    images: Arc<ImageState>,
    pipeline: gst::Pipeline,
    writers: Writers,
    /// Latest encoded timestamp (ns) per rung; the slowest rung is the job's position.
    positions: Vec<Arc<AtomicU64>>,
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
            // a None here panics inside a GLib callback, which aborts the whole server (seen when
            // an aborted upload's media dir was deleted while the pipeline still ran). A segment
            // that cannot be opened gets a stream whose first write fails instead, so the sink
            // posts an error and the job ends like any other failed job.
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

/// The ladder's startup segment boundaries in nanoseconds of running time.
fn startup_boundaries_ns(req: &TranscodeRequest) -> Vec<u64> {
    req.ladder.startup_boundaries().iter().map(|b| (b * 1e9).round() as u64).collect()
}

/// Running time (ns) of `pts` in the segment a pad last saw.
fn running_time_ns(pad: &gst::Pad, pts: gst::ClockTime) -> Option<u64> {
    let ev = pad.sticky_event::<gst::event::Segment>(0)?;
    ev.segment().downcast_ref::<gst::ClockTime>()?.to_running_time(pts).map(|t| t.nseconds())
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
    if let Some(&first) = startup_boundaries_ns(req).first() {
        // splitmuxsink starts a new file when the GOP just completed would push the current one
        // past max-size-time. At the startup length, every GOP becomes its own segment: keyframe
        // placement (forced at the startup boundaries, then every GOP) alone decides segments.
        // cmafmux splits at the same keyframes as long as nothing else asks the encoders for a
        // keyframe: its own requests are off (cmaf_sink), and so are hlssink3's.
        // target-duration only takes whole seconds, so the inner splitmuxsink is set directly.
        let split = sink.downcast_ref::<gst::Bin>().and_then(|b| b.by_name("split_mux_sink"));
        match split {
            Some(split) => split.set_property("max-size-time", gst::ClockTime::from_nseconds(first)),
            None => return Err(TranscodeError::Build("hlssink3 has no split_mux_sink child".into())),
        }
    }
    own_sink_output(&sink, Some((writers.clone(), req.key.clone())));
    Ok(sink)
}

fn cmaf_sink(req: &TranscodeRequest, rep: &str) -> Result<gst::Element, TranscodeError> {
    let dir = req.out_dir.join("dash").join(rep);
    let sink = make("hlscmafsink", Some(&format!("cmaf_{rep}")))?;
    sink.set_property("location", dir.join("seg%05d.m4s").to_string_lossy().to_string());
    sink.set_property("init-location", dir.join("init%05d.mp4").to_string_lossy().to_string());
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
    let boundaries = startup_boundaries_ns(req);
    if let (false, Some(pad)) = (boundaries.is_empty(), sink.static_pad("sink")) {
        let split = move |t: u64| mux.emit_by_name::<()>("split-at-running-time", &[&gst::ClockTime::from_nseconds(t)]);
        if rep != AUDIO_REP {
            // Video: the fragment ends at the first GOP starting at or after the boundary, i.e.
            // at the forced keyframe. Requested on the first buffer, once the muxer has started
            // (stopping the muxer clears pending requests).
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                boundaries.iter().for_each(|b| split(*b));
                gst::PadProbeReturn::Remove
            });
        } else {
            // Audio: cmafmux cuts before a frame that straddles the requested time and then makes
            // that one frame a fragment of its own (measured: 0.491 s + 0.021 s). So the split is
            // requested at the end of the AAC frame that reaches the boundary, as it arrives.
            let pending = Mutex::new(boundaries);
            let sample_rate = u64::from(req.ladder.audio.sample_rate.max(1));
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
                        split(end);
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
    }
    own_sink_output(&sink, None);
    Ok(sink)
}

/// The chain shared by all rungs: convert, rotate by the orientation tag, constant frame rate.
/// Returns (head to link decodebin's video pad to, tee).
fn video_head(p: &gst::Pipeline, req: &TranscodeRequest) -> Result<(gst::Element, gst::Element), TranscodeError> {
    let (n, d) = req.fps();
    let convert = make("videoconvert", None)?;
    let flip = make("videoflip", None)?;
    flip.set_property_from_str("video-direction", "auto");
    let rate = make("videorate", None)?;
    let caps = caps_filter(
        gst::Caps::builder("video/x-raw").field("format", "I420").field("framerate", gst::Fraction::new(n as i32, d as i32)).build(),
    )?;
    let tee = make("tee", Some("vtee"))?;
    p.add_many([&convert, &flip, &rate, &caps, &tee]).map_err(link_err("video head"))?;
    gst::Element::link_many([&convert, &flip, &rate, &caps, &tee]).map_err(link_err("video head"))?;
    Ok((convert, tee))
}

/// One rung: scale, encode, then into its HLS and CMAF sinks. `input` is a tee of raw frames:
/// the source's, or a larger rung's (see `TranscodeRequest::scale_parent`). Returns the rung's
/// position counter and the tee of its scaled frames, for smaller rungs.
fn video_rung(
    p: &gst::Pipeline,
    req: &TranscodeRequest,
    r: &Rendition,
    input: &gst::Element,
    hls: &gst::Element,
    cmaf: &gst::Element,
) -> Result<(Arc<AtomicU64>, gst::Element), TranscodeError> {
    let (n, d) = req.fps();
    let gop = req.ladder.gop_frames(n, d);
    // A few raw frames per rung (a 1080p frame is 3 MB): enough to keep every encoder busy,
    // without holding seconds of raw video per branch.
    let q = queue(Duration::ZERO)?;
    q.set_property("max-size-buffers", 8u32);
    // Scaler per rung from the ladder: libswscale's bicubic (`swscale`, the default) or a
    // videoscale method. videoscale's default 2-tap bilinear aliases badly beyond 2× downscaling
    // (measured: 24 dB PSNR at 480p from 1080p vs 47 dB for ffmpeg's bicubic), and fixed 4-tap
    // aliases too (−5 dB).
    let (mut method, mut sharpness) = req.ladder.scaler(&r.name);
    let swscale = [crate::ladder::SWSCALE, crate::ladder::SWSCALE_LANCZOS].contains(&method);
    if swscale && !super::swscale::available() {
        // Closest videoscale setting measured (720p: 0.24 dB under ffmpeg's bicubic).
        (method, sharpness) = ("catrom", 1.3);
    }
    let mut size = gst::Caps::builder("video/x-raw")
        .field("width", r.width as i32)
        .field("height", r.height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    let scale = if swscale {
        // Changes the size only: the colour matrix stays the source's, as with ffmpeg's scale.
        let scale = make(super::swscale::FACTORY, None)?;
        if method == crate::ladder::SWSCALE_LANCZOS {
            scale.set_property("method", "lanczos");
        }
        scale
    } else {
        let scale = make("videoscale", None)?;
        scale.set_property_from_str("method", method);
        scale.set_property("sharpness", sharpness);
        // Even sizes rarely keep the aspect exactly (854x480 is not 16:9): stretch by the fraction
        // of a pixel rather than letting videoscale shift the picture behind a black border column.
        scale.set_property("add-borders", false);
        // Keep the source's colour matrix in every rung: on 1.22 videoscale is videoconvertscale
        // and would convert HD (BT.709) to BT.601 for SD sizes — extra work, and a different
        // picture from the FFmpeg back end (measured: 24 dB PSNR against the source at 480p).
        // GStreamer assumes BT.709 for untagged sources from 720 lines up, BT.601 below.
        let src_height = req.media.video.as_ref().map_or(r.height, |v| v.display_width.min(v.display_height));
        size = size.field("colorimetry", if src_height >= 720 { "bt709" } else { "bt601" });
        scale
    };
    let scaled = caps_filter(size.build())?;
    let rtee = make("tee", None)?;
    // The encoder gets its own thread and queue, so the next rung's scaler runs beside it.
    let q_enc = queue(Duration::ZERO)?;
    q_enc.set_property("max-size-buffers", 4u32);
    let enc = make("x264enc", Some(&format!("x264_{}", r.name)))?;
    enc.set_property("bitrate", r.bitrate_kbps);
    enc.set_property_from_str("speed-preset", &req.ladder.video.preset);
    enc.set_property("key-int-max", gop);
    enc.set_property("bframes", req.ladder.video.bframes);
    let threads = req.ladder.x264_threads(&r.name);
    if threads > 0 {
        enc.set_property("threads", threads);
    }
    // Identical GOPs in every rung: fixed keyframe interval, no scene-cut keyframes.
    enc.set_property("option-string", format!("scenecut=0:keyint-min={gop}:open-gop=0"));
    let enc_caps = caps_filter(
        gst::Caps::builder("video/x-h264")
            .field("profile", req.ladder.video.profile.as_str())
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
    )?;
    let etee = make("tee", None)?;
    let q_hls = queue(Duration::from_secs(30))?;
    let parse_hls = make("h264parse", None)?;
    let q_cmaf = queue(Duration::from_secs(30))?;
    let parse_cmaf = make("h264parse", None)?;
    let avc = caps_filter(gst::Caps::builder("video/x-h264").field("stream-format", "avc").field("alignment", "au").build())?;
    p.add_many([&q, &scale, &scaled, &rtee, &q_enc, &enc, &enc_caps, &etee, &q_hls, &parse_hls, &q_cmaf, &parse_cmaf, &avc])
        .map_err(link_err("rung"))?;
    gst::Element::link_many([input, &q, &scale, &scaled, &rtee, &q_enc, &enc, &enc_caps, &etee]).map_err(link_err("rung encoder"))?;
    force_startup_keyframes(&enc, startup_boundaries_ns(req));
    gst::Element::link_many([&etee, &q_hls, &parse_hls]).map_err(link_err("rung HLS branch"))?;
    parse_hls.link_pads(None, hls, Some("video")).map_err(link_err("hlssink3 video"))?;
    gst::Element::link_many([&etee, &q_cmaf, &parse_cmaf, &avc, cmaf]).map_err(link_err("rung CMAF branch"))?;
    let position = Arc::new(AtomicU64::new(0));
    if let Some(pad) = enc_caps.static_pad("src") {
        let pos = position.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            // x264enc offsets its timestamps (by 1000 h on 1.22, to keep DTS positive) and its
            // segment with them: the stream time is what tells how far into the source we are.
            let Some(pts) = info.buffer().and_then(|b| b.pts()) else { return gst::PadProbeReturn::Ok };
            let stream_time = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|ev| ev.segment().downcast_ref::<gst::ClockTime>().and_then(|seg| seg.to_stream_time(pts)));
            if let Some(t) = stream_time {
                pos.fetch_max(t.nseconds(), Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    }
    Ok((position, rtee))
}

/// Forces a keyframe in `enc` on the first frame at or after each boundary (nanoseconds of
/// running time). Every rung sees the same frames, so the keyframes (and segments) stay aligned; x264
/// counts its GOP from the last keyframe, so the regular GOPs follow from the last boundary.
fn force_startup_keyframes(enc: &gst::Element, pending: Vec<u64>) {
    if pending.is_empty() {
        return;
    }
    let pending = Mutex::new(pending);
    let Some(pad) = enc.static_pad("sink") else { return };
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else { return gst::PadProbeReturn::Ok };
        let Some(t) = running_time_ns(pad, pts) else { return gst::PadProbeReturn::Ok };
        let Ok(mut pending) = pending.lock() else { return gst::PadProbeReturn::Remove };
        if pending.first().is_some_and(|b| t >= *b) {
            pending.retain(|b| *b > t);
            // GstVideoEncoder's downstream force-key-unit event, serialized just before this
            // frame; running-time NONE means "the next frame". (gst_video_event_new_downstream_
            // force_key_unit, built by hand: gstreamer-video is not a dependency.)
            let none = u64::MAX;
            let s = gst::Structure::builder("GstForceKeyUnit")
                .field("timestamp", none)
                .field("stream-time", none)
                .field("running-time", none)
                .field("all-headers", true)
                .field("count", 0u32)
                .build();
            if !pad.send_event(gst::event::CustomDownstream::new(s)) {
                warn!("the encoder refused a forced keyframe");
            }
        }
        if pending.is_empty() {
            gst::PadProbeReturn::Remove
        } else {
            gst::PadProbeReturn::Ok
        }
    });
}

/// The audio chain: one AAC encode tee'd to every HLS sink and the CMAF audio sink.
fn audio_branch(
    p: &gst::Pipeline,
    req: &TranscodeRequest,
    hls_sinks: &[gst::Element],
    cmaf_audio: &gst::Element,
) -> Result<gst::Element, TranscodeError> {
    let a = &req.ladder.audio;
    let convert = make("audioconvert", None)?;
    let resample = make("audioresample", None)?;
    let raw =
        caps_filter(gst::Caps::builder("audio/x-raw").field("rate", a.sample_rate as i32).field("channels", a.channels as i32).build())?;
    let enc = make("avenc_aac", None)?;
    enc.set_property("bitrate", (a.bitrate_kbps * 1000) as i32);
    let parse = make("aacparse", None)?;
    let atee = make("tee", Some("atee"))?;
    p.add_many([&convert, &resample, &raw, &enc, &parse, &atee]).map_err(link_err("audio"))?;
    gst::Element::link_many([&convert, &resample, &raw, &enc, &parse, &atee]).map_err(link_err("audio"))?;
    for sink in hls_sinks {
        let q = queue(Duration::from_secs(30))?;
        p.add(&q).map_err(link_err("audio queue"))?;
        atee.link(&q).map_err(link_err("audio tee"))?;
        q.link_pads(None, sink, Some("audio")).map_err(link_err("hlssink3 audio"))?;
    }
    let q = queue(Duration::from_secs(30))?;
    p.add(&q).map_err(link_err("audio queue"))?;
    gst::Element::link_many([&atee, &q, cmaf_audio]).map_err(link_err("CMAF audio"))?;
    Ok(convert)
}

/// Sources up to this many pixels (1080p) are decoded on one thread. libav's frame threading
/// costs CPU the encoders could use: decoding the bench's 60 s 1080p30 H.264 took 5.6 s of CPU
/// with avdec_h264's default (auto, 2 threads here) and 4.75 s on one thread (ffmpeg's own
/// decoder: 4.9 s); one thread still decodes ~380 frames/s, far ahead of the ladder's ~55.
/// Larger sources keep the default.
const SINGLE_THREAD_DECODE_PIXELS: u64 = 1920 * 1088;

fn build(req: &TranscodeRequest) -> Result<Graph, TranscodeError> {
    init_gstreamer().map_err(TranscodeError::Build)?;
    if req.renditions.is_empty() {
        return Err(TranscodeError::Runtime("no renditions to produce".into()));
    }
    let p = gst::Pipeline::with_name("cascade-transcode");
    let writers: Writers = Arc::new(Mutex::new(HashMap::new()));
    let src = match &req.growing {
        None => {
            let src = make("filesrc", None)?;
            src.set_property("location", req.input.to_string_lossy().to_string());
            src
        }
        Some(growing) => growing_source(&req.input, growing.clone())?,
    };
    let decode = make("decodebin", Some("decode"))?;
    if req.media.video.as_ref().is_some_and(|v| u64::from(v.width) * u64::from(v.height) <= SINGLE_THREAD_DECODE_PIXELS) {
        decode.downcast_ref::<gst::Bin>().expect("decodebin is a bin").connect_deep_element_added(|_, _, element| {
            let is_libav = element.factory().is_some_and(|f| f.name().starts_with("avdec_"));
            if is_libav && element.find_property("max-threads").is_some() {
                element.set_property("max-threads", 1i32);
                debug!(decoder = %element.name(), "decoding on one thread");
            }
        });
    }
    p.add_many([&src, &decode]).map_err(link_err("source"))?;
    src.link(&decode).map_err(link_err("decodebin"))?;

    let (video_in, vtee) = video_head(&p, req)?;
    let top = &req.renditions[0];
    let (interval, count) = images::storyboard_plan(req.media.duration_s);
    let tile = images::fit_width(top.width, top.height, images::TILE_WIDTH);
    let image_state = Arc::new(ImageState {
        dir: req.out_dir.join(images::DIR),
        poster_at: req.media.duration_s * 0.1,
        interval,
        count,
        tile,
        duration: req.media.duration_s,
        stills: Mutex::new(HashMap::new()),
        tiles: Mutex::new(Vec::new()),
    });
    let mut hls_sinks = Vec::new();
    let mut positions = Vec::new();
    // Scaled frames of the rungs made so far, for the rungs scaled from them (`scale_from`).
    let mut scaled: Vec<(&Rendition, gst::Element)> = Vec::new();
    for (i, r) in req.renditions.iter().enumerate() {
        let hls = hls_sink(req, r, &writers)?;
        let cmaf = cmaf_sink(req, &r.name)?;
        p.add_many([&hls, &cmaf]).map_err(link_err("sinks"))?;
        let from = req.scale_parent(i).map_or(&vtee, |j| &scaled[j].1);
        let (position, tee) = video_rung(&p, req, r, from, &hls, &cmaf)?;
        positions.push(position);
        hls_sinks.push(hls);
        scaled.push((r, tee));
    }
    // The stills come from the smallest rung at least as large as the poster (the 720p rung for a
    // 1080p source: the poster is then its frame as it is, and the thumbnail and storyboard tiles
    // are scaled from 1280x720 instead of 1920x1080), or from the source.
    let poster = images::fit_width(top.width, top.height, images::POSTER_MAX_WIDTH);
    let image_input = scaled
        .iter()
        .filter(|(r, _)| r.width >= poster.0 && r.height >= poster.1)
        .min_by_key(|(r, _)| r.width * r.height)
        .map_or(&vtee, |(_, tee)| tee);
    image_branch(&p, image_input, image_state.clone(), poster, images::fit_width(top.width, top.height, images::THUMB_WIDTH))?;
    let audio_in = if req.media.audio.is_some() {
        let cmaf_audio = cmaf_sink(req, AUDIO_REP)?;
        p.add(&cmaf_audio).map_err(link_err("audio sink"))?;
        Some(audio_branch(&p, req, &hls_sinks, &cmaf_audio)?)
    } else {
        None
    };
    connect_decoder(&decode, &p, video_in, audio_in);
    Ok(Graph { images: image_state, pipeline: p, writers, positions })
}

/// Links the first decoded video and audio pads; anything else goes to a fakesink so it cannot
/// block the demuxer. Missing expected streams are reported as errors on the bus.
fn connect_decoder(decode: &gst::Element, p: &gst::Pipeline, video_in: gst::Element, audio_in: Option<gst::Element>) {
    let weak = p.downgrade();
    let video_in_c = video_in.clone();
    let audio_in_c = audio_in.clone();
    decode.connect_pad_added(move |_, pad| {
        let Some(p) = weak.upgrade() else { return };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let kind = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
        let target = if kind.starts_with("video/") {
            Some(&video_in_c)
        } else if kind.starts_with("audio/") {
            audio_in_c.as_ref()
        } else {
            None
        };
        if let Some(el) = target {
            if let Some(sinkpad) = el.static_pad("sink") {
                if !sinkpad.is_linked() && pad.link(&sinkpad).is_ok() {
                    debug!(%kind, "linked decoded stream");
                    return;
                }
            }
        }
        // Extra streams (second audio track, subtitles, data) are drained.
        if let Ok(fake) = gst::ElementFactory::make("fakesink").property("sync", false).property("async", false).build() {
            if p.add(&fake).is_ok() {
                let _ = fake.sync_state_with_parent();
                if let Some(sp) = fake.static_pad("sink") {
                    let _ = pad.link(&sp);
                }
            }
        }
    });
    let weak = p.downgrade();
    decode.connect_no_more_pads(move |dec| {
        let Some(_p) = weak.upgrade() else { return };
        let missing = |el: &gst::Element| el.static_pad("sink").is_some_and(|pad| !pad.is_linked());
        let what = if missing(&video_in) {
            Some("the video stream could not be decoded")
        } else if audio_in.as_ref().is_some_and(missing) {
            Some("the audio stream could not be decoded")
        } else {
            None
        };
        if let Some(what) = what {
            gst::element_error!(dec, gst::StreamError::Decode, ("{}", what));
        }
    });
}

fn rung_codecs(pipeline: &gst::Pipeline, rep: &str) -> Option<String> {
    let sink = pipeline.by_name(&format!("cmaf_{rep}"))?;
    let caps = sink.static_pad("sink")?.current_caps()?;
    gstreamer_pbutils::functions::codec_utils_caps_get_mime_codec(&caps).ok().map(|s| s.to_string())
}

/// Waits briefly for a file the sink reported: hlscmafsink closes (renames) it right after
/// posting its message.
fn wait_for_file(path: &Path) -> bool {
    for _ in 0..100 {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    path.exists()
}

impl Transcoder for GstTranscoder {
    fn name(&self) -> &'static str {
        "gstreamer"
    }

    fn run(&self, req: &TranscodeRequest, events: &mut EventSink<'_>, cancel: &AtomicBool) -> Result<(), TranscodeError> {
        let graph = build(req)?;
        let pipeline = graph.pipeline.clone();
        let _null = NullOnDrop(pipeline.clone());
        let bus = pipeline.bus().ok_or_else(|| TranscodeError::Build("pipeline has no bus".into()))?;
        pipeline.set_state(gst::State::Playing).map_err(|e| TranscodeError::Build(format!("pipeline refused to start: {e}")))?;
        info!(renditions = req.renditions.len(), audio = req.media.audio.is_some(), "GStreamer pipeline playing");

        let mut watchdog = Watchdog::new(req, cancel);
        let mut last_position = -1.0f64;
        let mut last_query = Instant::now();
        let mut codecs_sent: std::collections::HashSet<String> = Default::default();
        loop {
            watchdog.check()?;
            if last_query.elapsed() >= Duration::from_millis(500) {
                last_query = Instant::now();
                let slowest = graph.positions.iter().map(|p| p.load(Ordering::Relaxed)).min().unwrap_or(0);
                {
                    let s = slowest as f64 / 1e9;
                    if s > last_position + 0.001 {
                        last_position = s;
                        watchdog.progressed();
                        events(TranscodeEvent::Position(s)).map_err(TranscodeError::Packaging)?;
                    }
                }
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else { continue };
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(_) => {
                    // Segments still open at EOS were all reported; anything left was never listed.
                    info!(elapsed_s = watchdog.elapsed_s(), "pipeline reached EOS");
                    for name in graph.images.finish() {
                        events(TranscodeEvent::Image(name)).map_err(TranscodeError::Packaging)?;
                    }
                    return Ok(());
                }
                MessageView::Application(a) => {
                    if let Some(name) = a.structure().filter(|s| s.name() == "cascade-image").and_then(|s| s.get::<String>("name").ok()) {
                        events(TranscodeEvent::Image(name)).map_err(TranscodeError::Packaging)?;
                    }
                }
                MessageView::Error(err) => {
                    let src = err.src().map(|s| s.path_string().to_string()).unwrap_or_default();
                    let details = err.debug().map(|d| d.to_string()).unwrap_or_default();
                    warn!(%src, error = %err.error(), %details, "pipeline error");
                    return Err(TranscodeError::Runtime(format!("{} ({src})", err.error())));
                }
                MessageView::Element(el) => {
                    let Some(s) = el.structure() else { continue };
                    if s.name() != "hls-segment-added" {
                        continue;
                    }
                    let src_name = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                    let location: String = s.get("location").map_err(|e| TranscodeError::Runtime(e.to_string()))?;
                    let duration = s
                        .get::<gst::ClockTime>("duration")
                        .map(|d| d.nseconds() as f64 / 1e9)
                        .map_err(|e| TranscodeError::Runtime(e.to_string()))?;
                    let path = PathBuf::from(&location);
                    let track = if let Some(rung) = src_name.strip_prefix("hls_") {
                        let writer = graph.writers.lock().ok().and_then(|mut m| m.remove(&path));
                        match writer {
                            Some(mut w) => w.finish().map_err(|e| TranscodeError::Packaging(format!("{location}: {e}")))?,
                            None => return Err(TranscodeError::Runtime(format!("no writer for segment {location}"))),
                        }
                        Track::Hls(rung.to_string())
                    } else if let Some(rep) = src_name.strip_prefix("cmaf_") {
                        if !wait_for_file(&path) {
                            return Err(TranscodeError::Runtime(format!("segment {location} was reported but not written")));
                        }
                        if rep != AUDIO_REP && codecs_sent.insert(rep.to_string()) {
                            if let Some(codecs) = rung_codecs(&pipeline, rep) {
                                events(TranscodeEvent::VideoCodec { rung: rep.to_string(), codecs }).map_err(TranscodeError::Packaging)?;
                            }
                        }
                        Track::Dash(rep.to_string())
                    } else {
                        continue;
                    };
                    watchdog.progressed();
                    debug!(?track, %location, duration, "segment finished");
                    events(TranscodeEvent::Segment { track, path, duration }).map_err(TranscodeError::Packaging)?;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment that cannot be opened must fail the pipeline with an error on the bus. It used
    /// to return no stream from `get-fragment-stream`, which panics inside GLib and aborts the
    /// process (the whole server): this test binary would die instead of failing.
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
}
