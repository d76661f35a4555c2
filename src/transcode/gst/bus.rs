//! The bus loop: drives the playing pipeline to EOS or error under the job's watchdog, and turns
//! what the pipeline tells (finished segments, written images, the encoders' positions) into
//! `TranscodeEvent`s. The one place that reports to the job while the pipeline runs; segments are
//! routed by the `SinkKind` of the sink that posted them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst::MessageView;
use gstreamer as gst;
use tracing::{debug, info, warn};

use super::images::IMAGE_MESSAGE;
use super::sinks::{self, SinkKind};
use super::Graph;
use crate::packaging::{Track, AUDIO_REP};
use crate::transcode::{EventSink, TranscodeError, TranscodeEvent, TranscodeRequest, Watchdog};

/// The message hlssink3 and hlscmafsink post for every finished segment.
const SEGMENT_ADDED: &str = "hls-segment-added";

/// Runs the bus loop of `graph`'s pipeline (already playing) until EOS, an error, or the
/// watchdog stops the job.
pub(super) fn run(
    graph: &Graph,
    bus: &gst::Bus,
    req: &TranscodeRequest,
    events: &mut EventSink<'_>,
    cancel: &AtomicBool,
) -> Result<(), TranscodeError> {
    let mut watchdog = Watchdog::new(req, cancel);
    let mut position = Position::new();
    let mut codecs_sent = HashSet::new();
    loop {
        watchdog.check()?;
        if let Some(s) = position.advanced(&graph.positions) {
            watchdog.progressed();
            emit(events, TranscodeEvent::Position(s))?;
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else { continue };
        match msg.view() {
            MessageView::Eos(_) => {
                // Segments still open at EOS were all reported; anything left was never listed.
                info!(elapsed_s = watchdog.elapsed_s(), "pipeline reached EOS");
                for name in graph.images.finish() {
                    emit(events, TranscodeEvent::Image(name))?;
                }
                return Ok(());
            }
            MessageView::Application(a) => {
                if let Some(name) = a.structure().filter(|s| s.name() == IMAGE_MESSAGE).and_then(|s| s.get::<String>("name").ok()) {
                    emit(events, TranscodeEvent::Image(name))?;
                }
            }
            MessageView::Error(err) => return Err(pipeline_error(err)),
            MessageView::Element(el) => {
                let Some(s) = el.structure().filter(|s| s.name() == SEGMENT_ADDED) else { continue };
                if let Some((track, path, duration)) = segment_added(graph, msg.src(), s, &mut codecs_sent, events)? {
                    watchdog.progressed();
                    debug!(?track, location = %path.display(), duration, "segment finished");
                    emit(events, TranscodeEvent::Segment { track, path, duration })?;
                }
            }
            _ => {}
        }
    }
}

/// Hands one event to the job; its refusal (packaging failed) stops the transcode.
fn emit(events: &mut EventSink<'_>, event: TranscodeEvent) -> Result<(), TranscodeError> {
    events(event).map_err(TranscodeError::Packaging)
}

/// The job's position: the slowest rung's encoded stream time, looked at every 500 ms.
struct Position {
    reported: f64,
    looked: Instant,
}

impl Position {
    fn new() -> Position {
        Position { reported: -1.0, looked: Instant::now() }
    }

    /// The position in seconds, when it is time to look again and it moved since last reported.
    fn advanced(&mut self, positions: &[Arc<AtomicU64>]) -> Option<f64> {
        if self.looked.elapsed() < Duration::from_millis(500) {
            return None;
        }
        self.looked = Instant::now();
        let slowest = positions.iter().map(|p| p.load(Ordering::Relaxed)).min().unwrap_or(0);
        let s = slowest as f64 / 1e9;
        if s > self.reported + 0.001 {
            self.reported = s;
            return Some(s);
        }
        None
    }
}

/// The job's error for an error the pipeline posted.
fn pipeline_error(err: &gst::message::Error) -> TranscodeError {
    let src = err.src().map(|s| s.path_string().to_string()).unwrap_or_default();
    let details = err.debug().map(|d| d.to_string()).unwrap_or_default();
    warn!(%src, error = %err.error(), %details, "pipeline error");
    TranscodeError::Runtime(format!("{} ({src})", err.error()))
}

/// A segment sink's `hls-segment-added`: completes the segment (closes its writer, or waits for
/// the CMAF file) and returns the segment to report (track, path, seconds), after reporting the
/// rung's codecs with its first CMAF segment. `None` for a message from any other element.
fn segment_added(
    graph: &Graph,
    src: Option<&gst::Object>,
    s: &gst::StructureRef,
    codecs_sent: &mut HashSet<String>,
    events: &mut EventSink<'_>,
) -> Result<Option<(Track, PathBuf, f64)>, TranscodeError> {
    let location: String = s.get("location").map_err(|e| TranscodeError::Runtime(e.to_string()))?;
    let duration =
        s.get::<gst::ClockTime>("duration").map(|d| d.nseconds() as f64 / 1e9).map_err(|e| TranscodeError::Runtime(e.to_string()))?;
    let Some(src) = src else { return Ok(None) };
    let Some(kind) = graph.sinks.kind(src) else { return Ok(None) };
    let path = PathBuf::from(&location);
    let track = match kind {
        SinkKind::Hls(rung) => {
            graph.sinks.close_hls_segment(&location)?;
            Track::Hls(rung.clone())
        }
        SinkKind::Cmaf(rep) => {
            if !sinks::wait_for_file(&path) {
                return Err(TranscodeError::Runtime(format!("segment {location} was reported but not written")));
            }
            if rep != AUDIO_REP && codecs_sent.insert(rep.clone()) {
                if let Some(codecs) = src.downcast_ref::<gst::Element>().and_then(sinks::codecs) {
                    emit(events, TranscodeEvent::VideoCodec { rung: rep.clone(), codecs })?;
                }
            }
            Track::Dash(rep.clone())
        }
    };
    Ok(Some((track, path, duration)))
}
