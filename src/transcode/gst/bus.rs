//! The bus loop: drives the playing pipeline to EOS or error under the job's watchdog, and turns
//! what the pipeline tells (finished segments, written images, the encoders' positions) into
//! `TranscodeEvent`s. The one place that reports to the job while the pipeline runs; segments are
//! routed by the `SinkKind` of the sink that posted them.

use std::collections::{HashSet, VecDeque};
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
    let mut overload = req.live.as_ref().map(|l| (Overload::new(Instant::now()), l.clock.clone()));
    loop {
        watchdog.check()?;
        if let Some(s) = position.advanced(&graph.positions) {
            watchdog.progressed();
            emit(events, TranscodeEvent::Position(s))?;
        }
        let encoded = || graph.positions.iter().map(|p| p.load(Ordering::Relaxed)).min().unwrap_or(0) as f64 / 1e9;
        if let Some(behind) = overload.as_mut().and_then(|(o, clock)| o.behind(Instant::now(), clock.sent().as_secs_f64(), encoded())) {
            if let Some(rung) = drop_top_rung(graph) {
                warn!(%rung, behind_s = behind, "the live ladder cannot keep up with the publisher: its top rung is dropped");
                emit(events, TranscodeEvent::RungDropped { rung })?;
            }
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

/// How much further behind the publisher than its least lag so far a live ladder may be before
/// it counts as behind (a viewer notices a few seconds; jitter stays well under this).
const OVERLOAD_LAG: f64 = 3.0;
/// How long a live ladder may stay behind, and still be falling behind, before its top rung is
/// dropped.
const OVERLOAD_FOR: Duration = Duration::from_secs(10);

/// Live: tells when the ladder cannot keep up with the publisher. Its lag is the media time the
/// publisher has sent (`ArrivalClock`) minus the media time the slowest rung has encoded; the
/// least lag seen is what the pipeline needs anyway. Behind = at every look over the last
/// `OVERLOAD_FOR` the lag was `OVERLOAD_LAG` over that least, and it grew over that time (a
/// ladder that catches up after a drop is left alone).
struct Overload {
    least: f64,
    /// (when, lag) of the looks since the lag was last under the limit, the oldest kept being the
    /// latest one at least `OVERLOAD_FOR` old.
    samples: VecDeque<(Instant, f64)>,
    looked: Instant,
}

impl Overload {
    fn new(now: Instant) -> Overload {
        Overload { least: f64::INFINITY, samples: VecDeque::new(), looked: now }
    }

    /// How far behind its least lag the ladder is (seconds), when it is behind (then the next
    /// period starts afresh); looks every 500 ms. `sent` is the media time the publisher has sent
    /// and `encoded` the slowest running rung's position (seconds).
    fn behind(&mut self, now: Instant, sent: f64, encoded: f64) -> Option<f64> {
        if now.duration_since(self.looked) < Duration::from_millis(500) {
            return None;
        }
        self.looked = now;
        let lag = sent - encoded;
        self.least = self.least.min(lag);
        if lag - self.least < OVERLOAD_LAG {
            self.samples.clear();
            return None;
        }
        self.samples.push_back((now, lag));
        while self.samples.len() > 1 && now.duration_since(self.samples[1].0) >= OVERLOAD_FOR {
            self.samples.pop_front();
        }
        let (since, first) = self.samples[0];
        if now.duration_since(since) >= OVERLOAD_FOR && lag > first + 0.1 {
            self.samples.clear();
            return Some(lag - self.least);
        }
        None
    }
}

/// Stops the tallest rung still encoding, unless it is the last one; returns its name. Its
/// position no longer holds the job's back.
fn drop_top_rung(graph: &Graph) -> Option<String> {
    let on: Vec<usize> = (0..graph.switches.len()).filter(|&i| !graph.switches[i].1.load(Ordering::Relaxed)).collect();
    let &i = on.first().filter(|_| on.len() > 1)?;
    graph.switches[i].1.store(true, Ordering::Relaxed);
    graph.positions[i].store(u64::MAX, Ordering::Relaxed);
    Some(graph.switches[i].0.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `Overload` over `seconds` of looks every 500 ms while the publisher sends in real time;
    /// the encoder runs at `speed(t)` × real time after `start` s of start-up. Returns the times
    /// (s) it said "behind".
    fn run(seconds: f64, start: f64, speed: impl Fn(f64) -> f64) -> Vec<f64> {
        let t0 = Instant::now();
        let mut o = Overload::new(t0);
        let (mut encoded, mut out, mut t) = (0.0, Vec::new(), 0.0);
        while t < seconds {
            t += 0.5;
            if t > start {
                encoded += 0.5 * speed(t);
            }
            if o.behind(t0 + Duration::from_secs_f64(t), t, encoded).is_some() {
                out.push(t);
            }
        }
        out
    }

    #[test]
    fn a_ladder_that_keeps_up_is_never_behind() {
        assert!(run(600.0, 1.5, |_| 1.0).is_empty());
        // Jitter: bursts of 0.6× and 1.4× around real time.
        assert!(run(600.0, 1.5, |t| if (t as u64 / 3).is_multiple_of(2) { 0.6 } else { 1.4 }).is_empty());
        // A stall of 2 s, then a catch-up.
        assert!(run(120.0, 1.5, |t| if (30.0..32.0).contains(&t) {
            0.0
        } else if (32.0..36.0).contains(&t) {
            1.5
        } else {
            1.0
        })
        .is_empty());
    }

    #[test]
    fn a_ladder_that_falls_behind_is_behind_after_ten_seconds_over_the_limit() {
        // 0.5×: 3 s over the least lag (0.25 s, the first look's) at 6.5 s, then 10 s more.
        let at = run(40.0, 0.0, |_| 0.5);
        assert_eq!(at.first().copied(), Some(16.5), "{at:?}");
        // Still falling behind after that: again once 10 s more have passed (the next rung).
        assert_eq!(at.get(1).copied(), Some(27.0), "{at:?}");
        // 0.9×: 3 s over the least lag (0.05 s) at 30.5 s, then 10 s more.
        assert_eq!(run(60.0, 0.0, |_| 0.9).first().copied(), Some(40.5));
    }

    #[test]
    fn a_ladder_that_catches_up_after_a_drop_is_left_alone() {
        // 0.5× until the drop at 16.5 s, then 1.5×: one drop only.
        assert_eq!(run(120.0, 0.0, |t| if t <= 16.5 { 0.5 } else { 1.5 }), vec![16.5]);
        // A lag that stays 8 s behind (it grew, then keeps up): no second drop.
        assert_eq!(run(120.0, 0.0, |t| if t <= 16.5 { 0.5 } else { 1.0 }), vec![16.5]);
    }
}
