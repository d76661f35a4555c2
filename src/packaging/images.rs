//! Poster, thumbnail and storyboard: sizes, the WebVTT map of the sprite sheet, and the files'
//! names. Both back ends produce the same files under `images/`.

use std::fmt::Write as _;

use crate::ladder::even;

/// Directory of the images under a video's media dir.
pub const DIR: &str = "images";
pub const POSTER: &str = "poster.jpg";
pub const THUMBNAIL: &str = "thumbnail.jpg";
pub const SPRITE: &str = "storyboard.jpg";
pub const VTT: &str = "storyboard.vtt";
/// Tiles per sprite row.
pub const COLUMNS: u32 = 10;
/// Most tiles in a storyboard.
pub const MAX_TILES: u32 = 100;
/// Width of one storyboard tile.
pub const TILE_WIDTH: u32 = 160;
/// Width of the library thumbnail.
pub const THUMB_WIDTH: u32 = 320;
/// Poster width cap.
pub const POSTER_MAX_WIDTH: u32 = 1280;

/// A size scaled to `width` (never up), keeping the aspect ratio, even.
pub fn fit_width(src_w: u32, src_h: u32, width: u32) -> (u32, u32) {
    let w = width.min(src_w.max(2));
    (even(w as f64), even(src_h as f64 * w as f64 / src_w.max(1) as f64))
}

/// The storyboard plan for a duration: seconds between tiles and the number of tiles.
pub fn storyboard_plan(duration_s: f64) -> (f64, u32) {
    let d = duration_s.max(0.1);
    let interval = (d / MAX_TILES as f64).ceil().max(1.0);
    let count = ((d / interval).ceil() as u32).clamp(1, MAX_TILES);
    (interval, count)
}

fn ts(t: f64) -> String {
    let ms = (t.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// The WebVTT file mapping time ranges to `storyboard.jpg#xywh=…`, covering `[0, duration]`
/// without gaps.
pub fn storyboard_vtt(count: u32, interval: f64, duration_s: f64, tile_w: u32, tile_h: u32) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for k in 0..count {
        let start = k as f64 * interval;
        let end = if k + 1 == count { duration_s.max(start + 0.001) } else { (k + 1) as f64 * interval };
        let (x, y) = ((k % COLUMNS) * tile_w, (k / COLUMNS) * tile_h);
        let _ = write!(out, "{} --> {}\n{SPRITE}#xywh={x},{y},{tile_w},{tile_h}\n\n", ts(start), ts(end));
    }
    out
}

/// Sprite sheet size for `count` tiles.
pub fn sprite_size(count: u32, tile_w: u32, tile_h: u32) -> (u32, u32) {
    let cols = count.clamp(1, COLUMNS);
    let rows = count.div_ceil(COLUMNS).max(1);
    (cols * tile_w, rows * tile_h)
}

/// Copies RGB tiles (each `tile_w`×`tile_h`×3 bytes) into one RGB sprite sheet.
pub fn compose_rgb(tiles: &[Vec<u8>], tile_w: u32, tile_h: u32) -> (u32, u32, Vec<u8>) {
    let (w, h) = sprite_size(tiles.len() as u32, tile_w, tile_h);
    let mut out = vec![0u8; (w * h * 3) as usize];
    let row_bytes = (tile_w * 3) as usize;
    for (k, tile) in tiles.iter().enumerate() {
        let (tx, ty) = ((k as u32 % COLUMNS) * tile_w, (k as u32 / COLUMNS) * tile_h);
        for y in 0..tile_h as usize {
            let src = &tile.get(y * row_bytes..(y + 1) * row_bytes);
            let Some(src) = src else { break };
            let dst = ((ty as usize + y) * w as usize + tx as usize) * 3;
            out[dst..dst + row_bytes].copy_from_slice(src);
        }
    }
    (w, h, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_and_vtt_cover_the_duration() {
        assert_eq!(storyboard_plan(12.0), (1.0, 12));
        assert_eq!(storyboard_plan(600.0), (6.0, 100));
        assert_eq!(storyboard_plan(0.5), (1.0, 1));
        let vtt = storyboard_vtt(12, 1.0, 11.5, 160, 90);
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nstoryboard.jpg#xywh=0,0,160,90\n"));
        assert!(vtt.contains("00:00:11.000 --> 00:00:11.500\nstoryboard.jpg#xywh=160,90,160,90"));
        assert_eq!(sprite_size(12, 160, 90), (1600, 180));
        assert_eq!(sprite_size(3, 160, 90), (480, 90));
    }

    #[test]
    fn sizes_are_even_and_never_upscaled() {
        assert_eq!(fit_width(1920, 1080, 1280), (1280, 720));
        assert_eq!(fit_width(160, 120, 320), (160, 120));
        assert_eq!(fit_width(1080, 1920, 320), (320, 568));
    }

    #[test]
    fn compose_places_tiles() {
        let red = [255u8, 0, 0].repeat(4);
        let blue = [0u8, 0, 255].repeat(4);
        let (w, h, px) = compose_rgb(&[red, blue], 2, 2);
        assert_eq!((w, h), (4, 2));
        assert_eq!(&px[0..3], &[255, 0, 0]);
        assert_eq!(&px[6..9], &[0, 0, 255]);
    }
}
