//! Helpers every branch of the graph uses: creating elements (a missing plugin is a `Build`
//! error, so the job can fall back to the other back end), queues, caps filters, link errors,
//! the guard that sets a pipeline to Null, and the running-time arithmetic of the ladder's
//! startup segment boundaries (shared by the encoders, which force keyframes there, and the CMAF
//! muxers, which split there).

use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;

use crate::transcode::{TranscodeError, TranscodeRequest};

/// Sets the pipeline to Null however the job ends.
pub(super) struct NullOnDrop(pub(super) gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// An element of `factory`, named `name` or automatically.
pub(super) fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, TranscodeError> {
    let mut b = gst::ElementFactory::make(factory);
    if let Some(n) = name {
        b = b.name(n);
    }
    b.build().map_err(|_| TranscodeError::Build(format!("GStreamer element {factory:?} is not available")))
}

/// A queue bounded by time only (`Duration::ZERO`: unbounded until a caller sets a buffer limit).
pub(super) fn queue(max_time: Duration) -> Result<gst::Element, TranscodeError> {
    let q = make("queue", None)?;
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 0u32);
    q.set_property("max-size-time", max_time.as_nanos() as u64);
    Ok(q)
}

/// Maps a failed add or link to a `Build` error that says what was being linked.
pub(super) fn link_err(what: &str) -> impl Fn(gst::glib::BoolError) -> TranscodeError + '_ {
    move |e| TranscodeError::Build(format!("cannot link {what}: {e}"))
}

/// A capsfilter holding `caps`.
pub(super) fn caps_filter(caps: gst::Caps) -> Result<gst::Element, TranscodeError> {
    let f = make("capsfilter", None)?;
    f.set_property("caps", &caps);
    Ok(f)
}

/// The ladder's startup segment boundaries in nanoseconds of running time.
pub(super) fn startup_boundaries_ns(req: &TranscodeRequest) -> Vec<u64> {
    req.ladder.startup_boundaries().iter().map(|b| (b * 1e9).round() as u64).collect()
}

/// Running time (ns) of `pts` in the segment a pad last saw.
pub(super) fn running_time_ns(pad: &gst::Pad, pts: gst::ClockTime) -> Option<u64> {
    let ev = pad.sticky_event::<gst::event::Segment>(0)?;
    ev.segment().downcast_ref::<gst::ClockTime>()?.to_running_time(pts).map(|t| t.nseconds())
}

/// Cuts the branch behind the src pad `pad` off when `off` is set: from then on every buffer is
/// dropped there, so whatever is upstream (a tee) goes on without it, and the branch (an encoder,
/// a muxer input) sits idle until the stream's EOS reaches it. No EOS is sent into the branch at
/// the cut: sent from this probe into the branch's full queue it blocked the tee's thread, and
/// with it every smaller rung (measured: the 480p and 360p rungs stopped with the 720p one).
pub(super) fn cut_when(pad: &gst::Pad, off: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, _| {
        if off.load(Ordering::Relaxed) {
            gst::PadProbeReturn::Drop
        } else {
            gst::PadProbeReturn::Ok
        }
    });
}
