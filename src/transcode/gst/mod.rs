//! The GStreamer back end: decode once, `tee` into one scaler + x264 encoder per rung, one AAC
//! encode shared by every output; each rung feeds hlssink3 (MPEG-TS, HLS) and hlscmafsink
//! (CMAF, DASH). Segments are written through Cascade's own writer (encrypting for HLS), and the
//! playlists the sinks would write are discarded: Cascade writes the manifests itself.
//!
//! This file assembles the graph and runs it; each part of the graph has its own file, in the
//! order data flows: `head` (source, decodebin, the raw-video chain every rung shares), `rungs`
//! (scaler + x264 per rendition), `audio` (the AAC branch), `images` (poster, thumbnail,
//! storyboard), `sinks` (the segment sinks and where their bytes go), then `bus` (the loop that
//! reports to the job). `elements` holds the helpers they share.

mod audio;
mod bus;
mod elements;
mod head;
mod images;
mod llcmaf;
mod rungs;
mod sinks;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use gst::prelude::*;
use gstreamer as gst;
use tracing::info;

use super::{EventSink, TranscodeError, TranscodeRequest, Transcoder};
use crate::probe::init_gstreamer;
use elements::NullOnDrop;
use images::ImageState;
use sinks::Sinks;

/// The GStreamer back end.
#[derive(Debug, Default, Clone, Copy)]
pub struct GstTranscoder;

/// Everything the bus loop needs to know about the built graph.
struct Graph {
    pipeline: gst::Pipeline,
    images: Arc<ImageState>,
    /// What each segment sink is, and the HLS segments being written.
    sinks: Sinks,
    /// Latest encoded timestamp (ns) per rung; the slowest rung is the job's position.
    positions: Vec<Arc<AtomicU64>>,
    /// Each rung's name and switch, in ladder order (tallest first).
    switches: Vec<(String, Arc<AtomicBool>)>,
}

/// Builds the whole graph, branch by branch. decodebin's pads appear once it has found the
/// streams; they are linked to the video head and the audio branch then.
fn build(req: &TranscodeRequest) -> Result<Graph, TranscodeError> {
    init_gstreamer().map_err(TranscodeError::Build)?;
    if req.renditions.is_empty() {
        return Err(TranscodeError::Runtime("no renditions to produce".into()));
    }
    let p = gst::Pipeline::with_name("cascade-transcode");
    let mut sinks = Sinks::default();
    let decode = head::source_and_decoder(&p, req)?;
    let (video_in, vtee) = head::video_head(&p, req)?;
    let images = Arc::new(ImageState::new(req));
    let rungs = rungs::video_rungs(&p, req, &vtee, &mut sinks)?;
    images::image_branch(&p, req, &rungs, &vtee, images.clone())?;
    let audio_in = match req.media.audio {
        Some(_) => Some(audio::audio_branch(&p, req, rungs.iter().map(|r| (&r.hls, &r.off)), &mut sinks)?),
        None => None,
    };
    head::connect_decoder(&decode, &p, video_in, audio_in);
    let positions = rungs.iter().map(|r| r.position.clone()).collect();
    let switches = rungs.iter().map(|r| (r.rendition.name.clone(), r.off.clone())).collect();
    Ok(Graph { pipeline: p, images, sinks, positions, switches })
}

impl Transcoder for GstTranscoder {
    fn name(&self) -> &'static str {
        "gstreamer"
    }

    fn run(&self, req: &TranscodeRequest, events: &mut EventSink<'_>, cancel: &AtomicBool) -> Result<(), TranscodeError> {
        let graph = build(req)?;
        let _null = NullOnDrop(graph.pipeline.clone());
        let bus = graph.pipeline.bus().ok_or_else(|| TranscodeError::Build("pipeline has no bus".into()))?;
        graph.pipeline.set_state(gst::State::Playing).map_err(|e| TranscodeError::Build(format!("pipeline refused to start: {e}")))?;
        info!(renditions = req.renditions.len(), audio = req.media.audio.is_some(), "GStreamer pipeline playing");
        bus::run(&graph, &bus, req, events, cancel)
    }
}
