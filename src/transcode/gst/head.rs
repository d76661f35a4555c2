//! The head of the pipeline: where the bytes come from (the uploaded file, or the upload still
//! being written), decodebin, the raw-video chain every rung shares (convert, rotate by the
//! orientation tag, constant frame rate, `vtee`), and the late linking of the decoder's pads to
//! the video chain and the audio branch. Everything before the first `tee` lives here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;
use tracing::debug;

use super::elements::{caps_filter, link_err, make};
use crate::probe::init_gstreamer;
use crate::transcode::{TranscodeError, TranscodeRequest};

/// Sources up to this many pixels (1080p) are decoded on one thread. libav's frame threading
/// costs CPU the encoders could use: decoding the bench's 60 s 1080p30 H.264 took 5.6 s of CPU
/// with avdec_h264's default (auto, 2 threads here) and 4.75 s on one thread (ffmpeg's own
/// decoder: 4.9 s); one thread still decodes ~380 frames/s, far ahead of the ladder's ~55.
/// Larger sources keep the default.
const SINGLE_THREAD_DECODE_PIXELS: u64 = 1920 * 1088;

/// Adds the source and decodebin to `p`, linked; returns decodebin, whose pads appear later
/// (see `connect_decoder`).
pub(super) fn source_and_decoder(p: &gst::Pipeline, req: &TranscodeRequest) -> Result<gst::Element, TranscodeError> {
    let src = match (&req.live, &req.growing) {
        (Some(live), _) => live_source(live)?,
        (None, None) => {
            let src = make("filesrc", None)?;
            src.set_property("location", req.input.to_string_lossy().to_string());
            src
        }
        (None, Some(growing)) => growing_source(&req.input, growing.clone())?,
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
    Ok(decode)
}

/// An `appsrc` that reads a file while the upload is still writing it: bounded (4 MiB queued at
/// most; the reader waits when the pipeline is slower), EOS when the upload completes, an error
/// when it breaks off. The reader stops when the pipeline shuts down (pushes are refused).
fn growing_source(path: &Path, growing: Arc<crate::upload::Growing>) -> Result<gst::Element, TranscodeError> {
    use gstreamer_app as gst_app;
    init_gstreamer().map_err(TranscodeError::Build)?;
    let src = gst_app::AppSrc::builder()
        .name("ingest")
        .stream_type(gst_app::AppStreamType::Stream)
        .format(gst::Format::Bytes)
        .max_bytes(4 * 1024 * 1024)
        .block(true)
        .build();
    let file = std::fs::File::open(path).map_err(|e| TranscodeError::Runtime(format!("cannot read the upload: {e}")))?;
    let weak = src.downgrade();
    std::thread::Builder::new()
        .name("ingest-reader".into())
        .spawn(move || read_growing(weak, file, &growing))
        .map_err(|e| TranscodeError::Build(e.to_string()))?;
    Ok(src.upcast())
}

/// The reader thread of `growing_source`: pushes what the upload has written so far, waits for
/// more, and ends the stream as the upload ends.
fn read_growing(weak: gst::glib::WeakRef<gstreamer_app::AppSrc>, mut file: std::fs::File, growing: &crate::upload::Growing) {
    use crate::upload::UploadState;
    use std::io::Read;
    use std::time::Instant;
    let mut pos = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut running = false;
    // Where the reader was when the current idle window began.
    let mut window = (Instant::now(), 0u64);
    loop {
        let Some(src) = weak.upgrade() else { return };
        // appsrc refuses buffers until it is started; once the pipeline stops, so do we.
        if src.current_state() < gst::State::Paused {
            if running {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
            window = (Instant::now(), pos);
            continue;
        }
        running = true;
        let (have, state) = growing.wait_beyond(pos, Duration::from_millis(200));
        if pos - window.1 >= crate::upload::STARVED_BYTES {
            window = (Instant::now(), pos);
        } else if state == UploadState::Writing && have - window.1 < crate::upload::STARVED_BYTES && window.0.elapsed() > growing.idle() {
            // A trickling upload must not hold a transcode slot: the job gives it back and runs
            // from the file once the upload is complete.
            gst::element_error!(
                src,
                gst::ResourceError::Read,
                (
                    "the upload is starving the transcode: fewer than {} KiB arrived in {} s",
                    crate::upload::STARVED_BYTES / 1024,
                    growing.idle().as_secs()
                )
            );
            return;
        }
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
}

/// An `appsrc` fed by a live broadcast's channel (bounded: 4 MiB queued at most, then the feeder
/// waits, and the publisher's connection sees the encoder falling behind). The channel closing
/// (the publisher left) ends the stream with EOS, so the broadcast is packaged as a whole video.
fn live_source(live: &crate::transcode::LiveInput) -> Result<gst::Element, TranscodeError> {
    use gstreamer_app as gst_app;
    init_gstreamer().map_err(TranscodeError::Build)?;
    let rx =
        live.rx.lock().ok().and_then(|mut r| r.take()).ok_or_else(|| TranscodeError::Build("the live feed was already taken".into()))?;
    let src = gst_app::AppSrc::builder()
        .name("ingest")
        .caps(&live.caps.parse::<gst::Caps>().map_err(|e| TranscodeError::Build(format!("caps {}: {e}", live.caps)))?)
        .stream_type(gst_app::AppStreamType::Stream)
        .format(gst::Format::Bytes)
        .max_bytes(4 * 1024 * 1024)
        .block(true)
        .build();
    let weak = src.downgrade();
    std::thread::Builder::new()
        .name("live-feeder".into())
        .spawn(move || feed_live(weak, rx))
        .map_err(|e| TranscodeError::Build(e.to_string()))?;
    Ok(src.upcast())
}

/// The feeder thread of `live_source`: waits for the pipeline to start, then pushes what the
/// publisher sends until the channel closes (EOS) or the pipeline stops (pushes refused).
fn feed_live(weak: gst::glib::WeakRef<gstreamer_app::AppSrc>, mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) {
    loop {
        let Some(src) = weak.upgrade() else { return };
        if src.current_state() >= gst::State::Paused {
            break;
        }
        drop(src);
        std::thread::sleep(Duration::from_millis(10));
    }
    while let Some(bytes) = rx.blocking_recv() {
        let Some(src) = weak.upgrade() else { return };
        if src.push_buffer(gst::Buffer::from_slice(bytes)).is_err() {
            return;
        }
    }
    if let Some(src) = weak.upgrade() {
        let _ = src.end_of_stream();
    }
}

/// The chain shared by all rungs: convert, rotate by the orientation tag, constant frame rate.
/// Returns (head to link decodebin's video pad to, tee).
pub(super) fn video_head(p: &gst::Pipeline, req: &TranscodeRequest) -> Result<(gst::Element, gst::Element), TranscodeError> {
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

/// Links the first decoded video and audio pads; anything else goes to a fakesink so it cannot
/// block the demuxer. Missing expected streams are reported as errors on the bus.
pub(super) fn connect_decoder(decode: &gst::Element, p: &gst::Pipeline, video_in: gst::Element, audio_in: Option<gst::Element>) {
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
        drain(&p, pad);
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

/// Drains a decoded stream nothing consumes (second audio track, subtitles, data) into a fakesink.
fn drain(p: &gst::Pipeline, pad: &gst::Pad) {
    if let Ok(fake) = gst::ElementFactory::make("fakesink").property("sync", false).property("async", false).build() {
        if p.add(&fake).is_ok() {
            let _ = fake.sync_state_with_parent();
            if let Some(sp) = fake.static_pad("sink") {
                let _ = pad.link(&sp);
            }
        }
    }
}
