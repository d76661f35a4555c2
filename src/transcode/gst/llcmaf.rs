//! The CMAF sink of a low-latency broadcast, in place of hlscmafsink: `cmafmux` cutting each
//! segment into chunks (`chunk-duration`), into an appsink whose callback writes
//! - what hlscmafsink writes: the DASH init segment and each whole segment, clear, under
//!   `dash/{rep}/` (published under its final name when complete, then reported on the bus with
//!   the same `hls-segment-added` message, so the bus loop and the packager see no difference);
//! - the low-latency tree `ll/{rep}/`: each chunk as a part file (`segNNNNN.P.m4s`) and each
//!   segment whole (`segNNNNN.m4s`), both AES-128 encrypted with the video's key and IV, as its
//!   HLS segments are.
//!
//! hlscmafsink cannot do this: without its I-frame playlist it takes every chunk for a segment of
//! its own, and with it, it holds the chunks until the segment is complete. Each part is listed
//! in the broadcast's `LlStream` the moment its file is complete; cmafmux emits a chunk only once
//! the chunk is whole, so a part is written in one go.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use tracing::warn;

use super::elements::make;
use crate::packaging::crypto::{KeyMaterial, SegmentWriter};
use crate::packaging::llhls::{part_file, segment_file, LlStream, Part, LL_DIR};
use crate::packaging::DASH_INIT;
use crate::transcode::TranscodeError;

/// hlscmafsink's cmafmux latency (its default), kept so both sinks time out alike.
const MUX_LATENCY: gst::ClockTime = gst::ClockTime::from_mseconds(7500);

/// Where one representation's files go, and the part length.
pub(super) struct LlCmafSpec {
    pub rep: String,
    pub out_dir: PathBuf,
    pub segment: gst::ClockTime,
    pub chunk: gst::ClockTime,
    pub key: Option<KeyMaterial>,
    pub stream: Arc<LlStream>,
}

/// The segment being written.
struct Open {
    number: u64,
    /// `dash/{rep}/segNNNNN.m4s`, clear.
    clear: SegmentWriter,
    clear_path: PathBuf,
    /// `ll/{rep}/segNNNNN.m4s`, encrypted.
    whole: SegmentWriter,
    parts: usize,
    duration: gst::ClockTime,
    running_time: Option<gst::ClockTime>,
}

struct Writer {
    spec: LlCmafSpec,
    dash_dir: PathBuf,
    ll_dir: PathBuf,
    open: Option<Open>,
    next: u64,
    bin: gst::glib::WeakRef<gst::Bin>,
}

/// The sink bin (`cmaf_{rep}`, one `sink` pad) and its cmafmux (`muxer`).
pub(super) fn ll_cmaf_sink(spec: LlCmafSpec) -> Result<(gst::Element, gst::Element), TranscodeError> {
    let bin = gst::Bin::with_name(&format!("cmaf_{}", spec.rep));
    let mux = make("cmafmux", Some("muxer"))?;
    mux.set_property("fragment-duration", spec.segment);
    mux.set_property("chunk-duration", spec.chunk);
    mux.set_property("latency", MUX_LATENCY);
    // Keyframes are Cascade's (see sinks::cmaf_sink).
    mux.set_property("send-force-keyunit", false);
    // async=false: the sink does not preroll, so it never holds the pipeline's way to PLAYING
    // (see sinks::live_handles_own_preroll).
    let appsink = gst_app::AppSink::builder().name("sink").buffer_list(true).sync(false).build();
    appsink.set_property("async", false);
    bin.add_many([&mux, appsink.upcast_ref()]).map_err(|e| TranscodeError::Build(e.to_string()))?;
    mux.link(&appsink).map_err(|e| TranscodeError::Build(e.to_string()))?;
    let pad = mux.static_pad("sink").ok_or_else(|| TranscodeError::Build("cmafmux has no sink pad".into()))?;
    let ghost = gst::GhostPad::with_target(&pad).map_err(|e| TranscodeError::Build(e.to_string()))?;
    bin.add_pad(&ghost).map_err(|e| TranscodeError::Build(e.to_string()))?;

    let dash_dir = spec.out_dir.join("dash").join(&spec.rep);
    let ll_dir = spec.out_dir.join(LL_DIR).join(&spec.rep);
    std::fs::create_dir_all(&dash_dir)
        .and_then(|_| std::fs::create_dir_all(&ll_dir))
        .map_err(|e| TranscodeError::Packaging(e.to_string()))?;
    let writer = Arc::new(Mutex::new(Writer { spec, dash_dir, ll_dir, open: None, next: 0, bin: bin.downgrade() }));
    let (w1, w2) = (writer.clone(), writer);
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let mut w = w1.lock().map_err(|_| gst::FlowError::Error)?;
                w.sample(&sample).map_err(|e| {
                    warn!(rep = %w.spec.rep, error = %e, "cannot write a low-latency CMAF chunk");
                    gst::element_error!(sink, gst::ResourceError::Write, ["{}", e]);
                    gst::FlowError::Error
                })
            })
            .eos(move |sink| {
                if let Ok(mut w) = w2.lock() {
                    if let Err(e) = w.close_segment() {
                        warn!(rep = %w.spec.rep, error = %e, "cannot finish the last low-latency segment");
                        gst::element_error!(sink, gst::ResourceError::Write, ["{}", e]);
                    }
                }
            })
            .build(),
    );
    Ok((bin.upcast(), mux))
}

fn write_all<'a>(w: &mut SegmentWriter, buffers: impl Iterator<Item = &'a gst::BufferRef>) -> std::io::Result<()> {
    for b in buffers {
        let map = b.map_readable().map_err(|_| std::io::Error::other("unreadable buffer"))?;
        w.write_all(&map)?;
    }
    Ok(())
}

impl Writer {
    fn sample(&mut self, sample: &gst::Sample) -> Result<gst::FlowSuccess, String> {
        let list = sample.buffer_list().ok_or("a sample without a buffer list")?;
        let mut skip = 0;
        let first = list.get(0).ok_or("an empty buffer list")?;
        if first.flags().contains(gst::BufferFlags::DISCONT | gst::BufferFlags::HEADER) {
            let map = first.map_readable().map_err(|_| "unreadable init segment")?;
            crate::packaging::write_atomic(&self.dash_dir.join(DASH_INIT), &map).map_err(|e| format!("init segment: {e}"))?;
            skip = 1;
        }
        let Some(header) = list.get(skip) else { return Ok(gst::FlowSuccess::Ok) };
        // A fragment's header is HEADER; a further chunk's header is HEADER | DELTA_UNIT.
        let fragment_start = !header.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if fragment_start || self.open.is_none() {
            self.close_segment()?;
            self.open_segment(sample, header)?;
        }
        let duration = header.duration().unwrap_or(gst::ClockTime::ZERO);
        // cmafmux marks every media buffer a delta unit: whether the part starts with a sync
        // sample is read from its moof.
        let independent = header.map_readable().ok().and_then(|m| first_sample_is_sync(&m)).unwrap_or(fragment_start);
        let key = self.spec.key.clone();
        let open = self.open.as_mut().ok_or("no open segment")?;
        let part_path = self.ll_dir.join(part_file(open.number, open.parts));
        let mut part = SegmentWriter::create(&part_path, key.as_ref()).map_err(|e| format!("{}: {e}", part_path.display()))?;
        for w in [&mut open.clear, &mut open.whole, &mut part] {
            write_all(w, list.iter().skip(skip)).map_err(|e| format!("segment {}: {e}", open.number))?;
        }
        // The clear copy is served while it grows (low-latency DASH): its chunk goes to disk now.
        open.clear.flush().map_err(|e| format!("segment {}: {e}", open.number))?;
        part.finish().map_err(|e| format!("{}: {e}", part_path.display()))?;
        let bytes = list.iter().skip(skip).map(|b| b.size() as u64).sum();
        let (number, index) = (open.number, open.parts);
        open.parts += 1;
        open.duration += duration;
        self.spec.stream.add_part(
            &self.spec.rep,
            number,
            index,
            Part { duration: duration.nseconds() as f64 / 1e9, independent, bytes },
        )?;
        Ok(gst::FlowSuccess::Ok)
    }

    fn open_segment(&mut self, sample: &gst::Sample, header: &gst::BufferRef) -> Result<(), String> {
        let number = self.next;
        self.next += 1;
        let clear_path = self.dash_dir.join(format!("seg{number:05}.m4s"));
        let clear = SegmentWriter::create(&clear_path, None).map_err(|e| format!("{}: {e}", clear_path.display()))?;
        let whole_path = self.ll_dir.join(segment_file(number));
        let whole = SegmentWriter::create(&whole_path, self.spec.key.as_ref()).map_err(|e| format!("{}: {e}", whole_path.display()))?;
        let running_time =
            sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>().and_then(|s| header.pts().and_then(|p| s.to_running_time(p))));
        self.open = Some(Open { number, clear, clear_path, whole, parts: 0, duration: gst::ClockTime::ZERO, running_time });
        Ok(())
    }

    /// Publishes the open segment (both copies), lists it whole, and reports it on the bus.
    fn close_segment(&mut self) -> Result<(), String> {
        let Some(mut open) = self.open.take() else { return Ok(()) };
        open.whole.finish().map_err(|e| format!("segment {}: {e}", open.number))?;
        open.clear.finish().map_err(|e| format!("segment {}: {e}", open.number))?;
        self.spec.stream.complete_segment(&self.spec.rep, open.number, open.duration.nseconds() as f64 / 1e9);
        let s = gst::Structure::builder("hls-segment-added")
            .field("location", path_str(&open.clear_path))
            .field("running-time", open.running_time)
            .field("duration", open.duration)
            .build();
        if let Some(bin) = self.bin.upgrade() {
            let _ = bin.post_message(gst::message::Element::builder(s).src(&bin).build());
        }
        Ok(())
    }
}

/// The ISO BMFF boxes in `data`: (type, payload).
fn boxes(mut data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
        let (kind, payload) = (data.get(4..8)?, data.get(8..size)?);
        data = &data[size..];
        Some((kind, payload))
    })
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Whether the first sample of the first track run of the `moof` at the start of `data` is a sync
/// sample (ISO/IEC 14496-12 §8.8.7–8.8.8: the trun's first-sample flags, else its first sample's
/// flags, else the tfhd's default flags; `sample_is_non_sync_sample` is bit 16). `None`: no flags
/// to tell.
fn first_sample_is_sync(data: &[u8]) -> Option<bool> {
    let (_, moof) = boxes(data).find(|(k, _)| *k == b"moof")?;
    let (_, traf) = boxes(moof).find(|(k, _)| *k == b"traf")?;
    let mut default_flags = None;
    let mut flags = None;
    for (kind, b) in boxes(traf) {
        let box_flags = u32_at(b, 0)? & 0x00ff_ffff;
        if kind == b"tfhd" && box_flags & 0x20 != 0 {
            // track_ID, then each optional field before default_sample_flags.
            let at =
                8 + [(0x01, 8), (0x02, 4), (0x08, 4), (0x10, 4)].iter().filter(|(f, _)| box_flags & f != 0).map(|(_, n)| n).sum::<usize>();
            default_flags = u32_at(b, at);
        } else if kind == b"trun" {
            let mut at = 8 + if box_flags & 0x01 != 0 { 4 } else { 0 };
            if box_flags & 0x04 != 0 {
                flags = u32_at(b, at);
            } else if box_flags & 0x400 != 0 {
                at += [(0x100, 4), (0x200, 4)].iter().filter(|(f, _)| box_flags & f != 0).map(|(_, n)| n).sum::<usize>();
                flags = u32_at(b, at);
            }
            break;
        }
    }
    flags.or(default_flags).map(|f| f & 0x0001_0000 == 0)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    /// A moof whose tfhd has default flags `default` and whose trun has the first-sample flags
    /// `first` (if any), then an mdat header.
    fn moof(default: u32, first: Option<u32>) -> Vec<u8> {
        let tfhd = [&0x0002_0020u32.to_be_bytes()[..], &1u32.to_be_bytes(), &default.to_be_bytes()].concat();
        let trun_flags: u32 = 0x01 | 0x100 | if first.is_some() { 0x04 } else { 0 };
        let mut trun = [&trun_flags.to_be_bytes()[..], &3u32.to_be_bytes(), &100u32.to_be_bytes()].concat();
        if let Some(f) = first {
            trun.extend_from_slice(&f.to_be_bytes());
        }
        trun.extend_from_slice(&[0; 12]);
        let traf = [bx(b"tfhd", &tfhd), bx(b"tfdt", &[0; 12]), bx(b"trun", &trun)].concat();
        [bx(b"moof", &[bx(b"mfhd", &[0; 8]), bx(b"traf", &traf)].concat()), 16u32.to_be_bytes().to_vec(), b"mdat".to_vec()].concat()
    }

    #[test]
    fn sync_samples_are_read_from_the_moof() {
        const NON_SYNC: u32 = 0x0101_0000;
        const SYNC: u32 = 0x0200_0000;
        assert_eq!(first_sample_is_sync(&moof(NON_SYNC, Some(SYNC))), Some(true));
        assert_eq!(first_sample_is_sync(&moof(NON_SYNC, None)), Some(false));
        assert_eq!(first_sample_is_sync(&moof(SYNC, None)), Some(true));
        assert_eq!(first_sample_is_sync(&moof(SYNC, Some(NON_SYNC))), Some(false));
        assert_eq!(first_sample_is_sync(b"junk"), None);
        assert_eq!(first_sample_is_sync(&moof(SYNC, None)[..20]), None);
    }
}
