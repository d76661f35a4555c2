//! The audio branch: one AAC encode of the first audio stream, tee'd into every rung's HLS sink
//! (muxed into its MPEG-TS segments) and the one CMAF audio representation. Built only for
//! sources that have audio, so no sink ever waits on an audio pad that will not come.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;

use super::elements::{caps_filter, cut_when, link_err, make, queue};
use super::sinks::Sinks;
use crate::packaging::AUDIO_REP;
use crate::transcode::{TranscodeError, TranscodeRequest};

/// Adds the CMAF audio sink and the audio chain feeding it and `hls_sinks` (each with its rung's
/// `off` switch, which cuts that sink's audio off); returns the head of the chain, for decodebin's
/// audio pad.
pub(super) fn audio_branch<'a>(
    p: &gst::Pipeline,
    req: &TranscodeRequest,
    hls_sinks: impl IntoIterator<Item = (&'a gst::Element, &'a Arc<AtomicBool>)>,
    sinks: &mut Sinks,
) -> Result<gst::Element, TranscodeError> {
    let cmaf_audio = sinks.cmaf(req, AUDIO_REP)?;
    p.add(&cmaf_audio).map_err(link_err("audio sink"))?;
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
    for (sink, off) in hls_sinks {
        let q = queue(Duration::from_secs(30))?;
        p.add(&q).map_err(link_err("audio queue"))?;
        atee.link(&q).map_err(link_err("audio tee"))?;
        if let Some(tee_pad) = q.static_pad("sink").and_then(|p| p.peer()) {
            cut_when(&tee_pad, off.clone());
        }
        q.link_pads(None, sink, Some("audio")).map_err(link_err("hlssink3 audio"))?;
    }
    let q = queue(Duration::from_secs(30))?;
    p.add(&q).map_err(link_err("audio queue"))?;
    gst::Element::link_many([&atee, &q, &cmaf_audio]).map_err(link_err("CMAF audio"))?;
    Ok(convert)
}
