//! The image branch: poster, thumbnail and storyboard sprite from one frame a second of the
//! decoded video (or of a rung large enough). It ends in appsinks that hand frames to
//! `ImageState`, which writes each still once its moment has passed and the sprite (with its
//! WebVTT) at EOS; it is apart from the rungs because nothing in it is a segment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use tracing::warn;

use super::elements::{caps_filter, link_err, make, queue, NullOnDrop};
use super::rungs::Rung;
use crate::packaging::{images, write_atomic};
use crate::transcode::{TranscodeError, TranscodeRequest};

/// Name of the application message an image sink posts when it wrote a still (field `name`).
pub(super) const IMAGE_MESSAGE: &str = "cascade-image";

/// Images taken from the 1 fps image branch: poster and thumbnail at 10 % of the duration (or
/// the last frame seen, for clips that end first), storyboard tiles every `interval` seconds.
pub(super) struct ImageState {
    dir: PathBuf,
    poster_at: f64,
    tile: (u32, u32),
    /// A live broadcast: its length is known only at the end (see `Tiles`).
    live: bool,
    /// Latest JPEG per still (`poster.jpg`, `thumbnail.jpg`) and whether it was written.
    stills: Mutex<HashMap<&'static str, (Vec<u8>, bool)>>,
    tiles: Mutex<Tiles>,
}

/// The storyboard so far. An upload's plan (interval, count) is fixed from its duration. A live
/// broadcast starts at one tile a second and, whenever `count` tiles are full, keeps every other
/// one and doubles the interval: memory stays at `count` tiles however long it runs.
struct Tiles {
    list: Vec<Vec<u8>>,
    interval: f64,
    count: u32,
    /// The video's duration (uploads), or the latest frame seen (live).
    duration: f64,
}

/// Seconds into a broadcast at which its poster and thumbnail are taken (its first frames are
/// often black or a title card).
const LIVE_POSTER_AT_S: f64 = 2.0;

impl ImageState {
    /// The images of one job, sized from its top rendition.
    pub(super) fn new(req: &TranscodeRequest) -> ImageState {
        let top = &req.renditions[0];
        let live = req.live.is_some();
        let (interval, count) = if live { (1.0, images::MAX_TILES) } else { images::storyboard_plan(req.media.duration_s) };
        ImageState {
            dir: req.out_dir.join(images::DIR),
            poster_at: if live { LIVE_POSTER_AT_S } else { req.media.duration_s * 0.1 },
            tile: images::fit_width(top.width, top.height, images::TILE_WIDTH),
            live,
            stills: Mutex::new(HashMap::new()),
            tiles: Mutex::new(Tiles { list: Vec::new(), interval, count, duration: req.media.duration_s }),
        }
    }

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
        if self.live {
            tiles.duration = tiles.duration.max(t);
            while ((t + 1e-3) / tiles.interval).floor() as usize >= tiles.count as usize && tiles.list.len() >= 2 {
                let kept: Vec<Vec<u8>> = std::mem::take(&mut tiles.list).into_iter().step_by(2).collect();
                tiles.list = kept;
                tiles.interval *= 2.0;
            }
        }
        // Tile k shows the first frame at or after k × interval; gaps repeat the frame.
        let k = ((t + 1e-3) / tiles.interval).floor() as usize;
        while tiles.list.len() <= k && (tiles.list.len() as u32) < tiles.count {
            tiles.list.push(rgb.clone());
        }
    }

    /// Writes what is still missing at the end; returns the names written.
    pub(super) fn finish(&self) -> Vec<String> {
        let mut done = Vec::new();
        if let Ok(mut map) = self.stills.lock() {
            for (name, (jpeg, written)) in map.iter_mut() {
                if !*written && !jpeg.is_empty() && self.write(name, jpeg).is_ok() {
                    *written = true;
                    done.push(name.to_string());
                }
            }
        }
        let Ok(state) = self.tiles.lock() else { return done };
        // A broadcast's storyboard covers what was recorded: as many tiles as were filled.
        let count = if self.live { (state.list.len() as u32).max(1) } else { state.count };
        let (interval, duration) = (state.interval, state.duration);
        if let Some(last) = state.list.last().cloned() {
            let mut tiles = state.list.clone();
            drop(state);
            while (tiles.len() as u32) < count {
                tiles.push(last.clone());
            }
            let (w, h, rgb) = images::compose_rgb(&tiles, self.tile.0, self.tile.1);
            match encode_jpeg_rgb(w, h, rgb) {
                Ok(jpeg) => {
                    let vtt = images::storyboard_vtt(count, interval, duration, self.tile.0, self.tile.1);
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

/// The image branch: 1 frame per second off the decoded video or a rung (see `image_input`),
/// scaled three ways: poster, thumbnail, storyboard tile.
pub(super) fn image_branch(
    p: &gst::Pipeline,
    req: &TranscodeRequest,
    rungs: &[Rung],
    vtee: &gst::Element,
    state: Arc<ImageState>,
) -> Result<(), TranscodeError> {
    let top = &req.renditions[0];
    let poster = images::fit_width(top.width, top.height, images::POSTER_MAX_WIDTH);
    let thumb = images::fit_width(top.width, top.height, images::THUMB_WIDTH);
    let itee = one_frame_a_second(p, image_input(rungs, vtee, poster))?;
    for (name, size) in [(images::POSTER, poster), (images::THUMBNAIL, thumb)] {
        still(p, &itee, state.clone(), name, size)?;
    }
    storyboard(p, &itee, state)
}

/// The stills come from the smallest rung at least as large as the poster (the 720p rung for a
/// 1080p source: the poster is then its frame as it is, and the thumbnail and storyboard tiles
/// are scaled from 1280x720 instead of 1920x1080), or from the source.
fn image_input<'a>(rungs: &'a [Rung], vtee: &'a gst::Element, poster: (u32, u32)) -> &'a gst::Element {
    rungs
        .iter()
        .filter(|r| r.rendition.width >= poster.0 && r.rendition.height >= poster.1)
        .min_by_key(|r| r.rendition.width * r.rendition.height)
        .map_or(vtee, |r| &r.scaled)
}

/// A tee of one frame a second from `input`.
fn one_frame_a_second(p: &gst::Pipeline, input: &gst::Element) -> Result<gst::Element, TranscodeError> {
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
    gst::Element::link_many([input, &q, &rate, &itee]).map_err(link_err("image branch"))?;
    Ok(itee)
}

/// A still (poster or thumbnail): JPEG frames of `size`, offered to `state` as they come; the
/// bus hears of it (`IMAGE_MESSAGE`) when it was written.
fn still(
    p: &gst::Pipeline,
    itee: &gst::Element,
    state: Arc<ImageState>,
    name: &'static str,
    size: (u32, u32),
) -> Result<(), TranscodeError> {
    let q = queue(Duration::from_secs(2))?;
    let scale = make("videoscale", None)?;
    let caps = caps_filter(
        gst::Caps::builder("video/x-raw")
            .field("width", size.0 as i32)
            .field("height", size.1 as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    )?;
    let enc = make("jpegenc", None)?;
    enc.set_property("quality", 85i32);
    let sink = frame_sink(move |sink, t, jpeg| {
        if state.offer_still(name, t, jpeg.to_vec()) {
            let s = gst::Structure::builder(IMAGE_MESSAGE).field("name", name).build();
            let _ = sink.post_message(gst::message::Application::builder(s).src(sink).build());
        }
    });
    p.add_many([&q, &scale, &caps, &enc, sink.upcast_ref()]).map_err(link_err("still"))?;
    gst::Element::link_many([itee, &q, &scale, &caps, &enc, sink.upcast_ref()]).map_err(link_err("still"))?;
    Ok(())
}

/// Storyboard tiles: RGB frames of the tile size, offered to `state`, which composes the sprite
/// at EOS.
fn storyboard(p: &gst::Pipeline, itee: &gst::Element, state: Arc<ImageState>) -> Result<(), TranscodeError> {
    let (tw, th) = state.tile;
    let q = queue(Duration::from_secs(2))?;
    let scale = make("videoscale", None)?;
    let conv = make("videoconvert", None)?;
    let caps = caps_filter(
        gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", tw as i32)
            .field("height", th as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    )?;
    let sink = frame_sink(move |_, t, frame| {
        if let Some(rgb) = tight_rgb(frame, tw, th) {
            state.offer_tile(t, rgb);
        }
    });
    p.add_many([&q, &scale, &conv, &caps, sink.upcast_ref()]).map_err(link_err("storyboard"))?;
    gst::Element::link_many([itee, &q, &scale, &conv, &caps, sink.upcast_ref()]).map_err(link_err("storyboard"))?;
    Ok(())
}

/// An appsink that hands every frame's stream time and bytes to `on_frame`: the one callback
/// behind every image output.
fn frame_sink(on_frame: impl Fn(&gst_app::AppSink, f64, &[u8]) + Send + 'static) -> gst_app::AppSink {
    gst_app::AppSink::builder()
        .sync(false)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let (Some(t), Some(buf)) = (sample_time(&sample), sample.buffer()) {
                        if let Ok(map) = buf.map_readable() {
                            on_frame(sink, t, map.as_slice());
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build()
}

/// A `w`×`h` RGB frame with its rows copied tight (GStreamer pads RGB rows to 4 bytes); `None`
/// when the frame is short.
fn tight_rgb(frame: &[u8], w: u32, h: u32) -> Option<Vec<u8>> {
    let row_len = w as usize * 3;
    let stride = row_len.div_ceil(4) * 4;
    let mut rgb = Vec::with_capacity(row_len * h as usize);
    for y in 0..h as usize {
        if let Some(row) = frame.get(y * stride..y * stride + row_len) {
            rgb.extend_from_slice(row);
        }
    }
    (rgb.len() == row_len * h as usize).then_some(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_rows_are_copied_without_their_padding() {
        // 2x2 RGB: 6 bytes a row, padded to 8.
        let frame = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0];
        assert_eq!(tight_rgb(&frame, 2, 2), Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
        // Rows of a multiple of 4 bytes have no padding.
        let frame: Vec<u8> = (0..24).collect();
        assert_eq!(tight_rgb(&frame, 4, 2), Some(frame.clone()));
        // A frame cut short in its last row is no tile.
        let padded = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11];
        assert_eq!(tight_rgb(&padded, 2, 2), None);
    }
}
