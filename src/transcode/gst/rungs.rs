//! The video rungs: per rendition a scaler (libswscale or videoscale, from the source's frames or
//! a larger rung's), x264 with the ladder's settings and keyframes forced at the startup segment
//! boundaries, then a `tee` into the rung's HLS and CMAF sinks. Keyframe placement lives here
//! because it alone decides where every rung's segments begin.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_video as gst_video;
use tracing::warn;

use super::elements::{caps_filter, cut_when, link_err, make, queue, running_time_ns, startup_boundaries_ns};
use super::sinks::Sinks;
use crate::ladder::Rendition;
use crate::transcode::{TranscodeError, TranscodeRequest};

/// One rung of the built graph.
pub(super) struct Rung<'a> {
    pub(super) rendition: &'a Rendition,
    /// Tee of the rung's scaled raw frames, for smaller rungs and the image branch.
    pub(super) scaled: gst::Element,
    /// Latest encoded stream time (ns).
    pub(super) position: Arc<AtomicU64>,
    /// The rung's HLS sink (the audio branch feeds it too).
    pub(super) hls: gst::Element,
    /// Set to stop the rung's encoder for good (live, when the ladder cannot keep up): its
    /// encoder and its HLS sink's audio get no more buffers; its scaled frames still feed smaller
    /// rungs.
    pub(super) off: Arc<AtomicBool>,
}

/// Adds every rung, in ladder order, with its HLS and CMAF sinks; `vtee` carries the source's
/// raw frames.
pub(super) fn video_rungs<'a>(
    p: &gst::Pipeline,
    req: &'a TranscodeRequest,
    vtee: &gst::Element,
    sinks: &mut Sinks,
) -> Result<Vec<Rung<'a>>, TranscodeError> {
    let mut rungs: Vec<Rung> = Vec::new();
    for (i, r) in req.renditions.iter().enumerate() {
        let hls = sinks.hls(req, r)?;
        let cmaf = sinks.cmaf(req, &r.name)?;
        p.add_many([&hls, &cmaf]).map_err(link_err("sinks"))?;
        let from = req.scale_parent(i).map_or(vtee, |j| &rungs[j].scaled);
        let off = Arc::new(AtomicBool::new(false));
        let (position, scaled) = video_rung(p, req, r, from, &hls, &cmaf, &off)?;
        rungs.push(Rung { rendition: r, scaled, position, hls, off });
    }
    Ok(rungs)
}

/// One rung: scale, encode, then into its HLS and CMAF sinks. `input` is a tee of raw frames:
/// the source's, or a larger rung's (see `TranscodeRequest::scale_parent`). Returns the rung's
/// position counter and the tee of its scaled frames, for smaller rungs. Setting `off` cuts the
/// encoder off the scaled frames.
fn video_rung(
    p: &gst::Pipeline,
    req: &TranscodeRequest,
    r: &Rendition,
    input: &gst::Element,
    hls: &gst::Element,
    cmaf: &gst::Element,
    off: &Arc<AtomicBool>,
) -> Result<(Arc<AtomicU64>, gst::Element), TranscodeError> {
    // A few raw frames per rung (a 1080p frame is 3 MB): enough to keep every encoder busy,
    // without holding seconds of raw video per branch.
    let q = queue(Duration::ZERO)?;
    q.set_property("max-size-buffers", 8u32);
    let (scale, scaled) = scaler(req, r)?;
    let rtee = make("tee", None)?;
    let (q_enc, enc, enc_caps) = encoder(req, r)?;
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
    if let Some(tee_pad) = q_enc.static_pad("sink").and_then(|p| p.peer()) {
        cut_when(&tee_pad, off.clone());
    }
    gst::Element::link_many([&etee, &q_hls, &parse_hls]).map_err(link_err("rung HLS branch"))?;
    parse_hls.link_pads(None, hls, Some("video")).map_err(link_err("hlssink3 video"))?;
    gst::Element::link_many([&etee, &q_cmaf, &parse_cmaf, &avc, cmaf]).map_err(link_err("rung CMAF branch"))?;
    Ok((encoded_position(&enc_caps, &r.name), rtee))
}

/// The rung's scaler and the caps filter that sets its size: libswscale's bicubic (`swscale`,
/// the ladder's default) or Lanczos, or a videoscale method. videoscale's default 2-tap bilinear
/// aliases badly beyond 2× downscaling (measured: 24 dB PSNR at 480p from 1080p vs 47 dB for
/// ffmpeg's bicubic), and fixed 4-tap aliases too (−5 dB).
fn scaler(req: &TranscodeRequest, r: &Rendition) -> Result<(gst::Element, gst::Element), TranscodeError> {
    let (mut method, mut sharpness) = req.ladder.scaler(&r.name);
    let swscale = [crate::ladder::SWSCALE, crate::ladder::SWSCALE_LANCZOS].contains(&method);
    if swscale && !crate::transcode::swscale::available() {
        // Closest videoscale setting measured (720p: 0.24 dB under ffmpeg's bicubic).
        (method, sharpness) = ("catrom", 1.3);
    }
    let mut size = gst::Caps::builder("video/x-raw")
        .field("width", r.width as i32)
        .field("height", r.height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    let scale = if swscale {
        // Changes the size only: the colour matrix stays the source's, as with ffmpeg's scale.
        let scale = make(crate::transcode::swscale::FACTORY, None)?;
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
    Ok((scale, caps_filter(size.build())?))
}

/// The rung's encoder with its own queue (so the next rung's scaler runs beside it) and the caps
/// filter that fixes its output: (queue, x264enc, caps filter).
fn encoder(req: &TranscodeRequest, r: &Rendition) -> Result<(gst::Element, gst::Element, gst::Element), TranscodeError> {
    let (n, d) = req.fps();
    let gop = req.ladder.gop_frames(n, d);
    let q_enc = queue(Duration::ZERO)?;
    q_enc.set_property("max-size-buffers", 4u32);
    let enc = make("x264enc", Some(&format!("x264_{}", r.name)))?;
    enc.set_property("bitrate", r.bitrate_kbps);
    enc.set_property_from_str("speed-preset", &req.ladder.video.preset);
    enc.set_property("key-int-max", gop);
    enc.set_property("bframes", req.ladder.video.bframes);
    if let Some(tune) = &req.ladder.video.tune {
        enc.set_property_from_str("tune", tune);
    }
    let threads = req.ladder.x264_threads(&r.name);
    if threads > 0 {
        enc.set_property("threads", threads);
    }
    // Identical GOPs in every rung: fixed keyframe interval, no scene-cut keyframes. The rung's
    // own x264 options come after (the ladder refuses those that would change the GOP).
    let mut options = format!("scenecut=0:keyint-min={gop}:open-gop=0");
    if let Some(extra) = req.ladder.x264_options(&r.name) {
        options.push(':');
        options.push_str(extra);
    }
    enc.set_property("option-string", options);
    let enc_caps = caps_filter(
        gst::Caps::builder("video/x-h264")
            .field("profile", req.ladder.video.profile.as_str())
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
    )?;
    Ok((q_enc, enc, enc_caps))
}

/// A counter of the latest stream time (ns) leaving the encoder's caps filter `enc_caps`.
fn encoded_position(enc_caps: &gst::Element, rendition: &str) -> Arc<AtomicU64> {
    let position = Arc::new(AtomicU64::new(0));
    if let Some(pad) = enc_caps.static_pad("src") {
        let pos = position.clone();
        let (rendition, first) = (rendition.to_string(), std::sync::atomic::AtomicBool::new(true));
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if first.swap(false, Ordering::Relaxed) {
                // The time-to-first-playable trace (#18): x264's start-up shows here.
                tracing::info!(rendition, "first frame encoded");
            }
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
    position
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
            if !pad.send_event(keyframe_now()) {
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

/// GstVideoEncoder's downstream force-key-unit event, sent into the encoder just before a frame:
/// with no timestamps (running-time NONE means "the next frame"), SPS/PPS repeated with it.
fn keyframe_now() -> gst::Event {
    gst_video::DownstreamForceKeyUnitEvent::builder()
        .timestamp(gst::ClockTime::NONE)
        .stream_time(gst::ClockTime::NONE)
        .running_time(gst::ClockTime::NONE)
        .all_headers(true)
        .count(0)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forced keyframe is the event x264enc's base class acts on: a serialized custom
    /// downstream `GstForceKeyUnit` for the next frame, with headers.
    #[test]
    fn forced_keyframe_is_the_encoders_next_frame_event() {
        crate::probe::init_gstreamer().unwrap();
        let ev = keyframe_now();
        assert_eq!(ev.type_(), gst::EventType::CustomDownstream);
        let s = ev.structure().expect("a structure");
        assert_eq!(s.name(), "GstForceKeyUnit");
        for field in ["timestamp", "stream-time", "running-time"] {
            assert_eq!(s.get::<u64>(field).unwrap(), u64::MAX, "{field}");
        }
        assert!(s.get::<bool>("all-headers").unwrap());
        assert_eq!(s.get::<u32>("count").unwrap(), 0);
        let parsed = gst_video::DownstreamForceKeyUnitEvent::parse(&ev).unwrap();
        assert_eq!(parsed.running_time, None);
    }
}
