//! HLS playlists written by Cascade (m3u8-rs): media playlists with the key line from the first
//! write, and the master playlist.

use m3u8_rs::{Key, KeyMethod, MasterPlaylist, MediaPlaylist, MediaPlaylistType, MediaSegment, Resolution, VariantStream};

/// One finished segment of a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsSegment {
    pub uri: String,
    pub duration: f64,
    pub bytes: u64,
}

/// The `#EXT-X-KEY` to put before the first segment.
#[derive(Debug, Clone)]
pub struct KeyLine {
    pub uri: String,
    pub iv_hex: String,
}

/// Renders a media playlist: `EVENT` without ENDLIST while encoding, `VOD` with ENDLIST at the end.
pub fn media_playlist(segments: &[HlsSegment], target_seconds: u32, key: Option<&KeyLine>, finished: bool) -> Vec<u8> {
    let longest = segments.iter().map(|s| s.duration).fold(0.0, f64::max);
    let mut segs: Vec<MediaSegment> =
        segments.iter().map(|s| MediaSegment { uri: s.uri.clone(), duration: s.duration as f32, ..Default::default() }).collect();
    if let (Some(k), Some(first)) = (key, segs.first_mut()) {
        first.key = Some(Key {
            method: KeyMethod::AES128,
            uri: Some(k.uri.clone()),
            iv: Some(k.iv_hex.clone()),
            keyformat: None,
            keyformatversions: None,
        });
    }
    let pl = MediaPlaylist {
        version: Some(3),
        target_duration: (longest.ceil() as u64).max(target_seconds as u64),
        media_sequence: 0,
        segments: segs,
        end_list: finished,
        playlist_type: Some(if finished { MediaPlaylistType::Vod } else { MediaPlaylistType::Event }),
        independent_segments: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    pl.write_to(&mut out).expect("writing to a Vec cannot fail");
    out
}

/// One variant of the master playlist.
#[derive(Debug, Clone)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub codecs: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
}

/// The variant streams of a master playlist, highest bandwidth first; `audio`: the group of the
/// audio rendition they play with (fMP4, where the audio is a track of its own).
pub fn variant_streams(variants: &[Variant], audio: Option<&str>) -> Vec<VariantStream> {
    let mut v: Vec<VariantStream> = variants
        .iter()
        .map(|v| VariantStream {
            uri: v.uri.clone(),
            bandwidth: v.bandwidth,
            average_bandwidth: Some(v.average_bandwidth),
            codecs: Some(v.codecs.clone()),
            resolution: Some(Resolution { width: v.width as u64, height: v.height as u64 }),
            frame_rate: Some((v.frame_rate * 1000.0).round() / 1000.0),
            audio: audio.map(str::to_string),
            ..Default::default()
        })
        .collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.bandwidth));
    v
}

/// Renders the master playlist, highest bandwidth first.
pub fn master_playlist(variants: &[Variant]) -> Vec<u8> {
    let pl =
        MasterPlaylist { version: Some(3), variants: variant_streams(variants, None), independent_segments: true, ..Default::default() };
    let mut out = Vec::new();
    pl.write_to(&mut out).expect("writing to a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(n: usize) -> Vec<HlsSegment> {
        (0..n).map(|i| HlsSegment { uri: format!("seg{i:05}.ts"), duration: 4.0, bytes: 1000 }).collect()
    }

    #[test]
    fn event_then_vod_with_key_before_first_segment() {
        let key = KeyLine { uri: "../key".into(), iv_hex: "0x000102030405060708090a0b0c0d0e0f".into() };
        let text = String::from_utf8(media_playlist(&segs(2), 4, Some(&key), false)).unwrap();
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT"));
        assert!(!text.contains("#EXT-X-ENDLIST"));
        let key_pos = text.find("#EXT-X-KEY:METHOD=AES-128,URI=\"../key\",IV=0x0001").expect(&text);
        assert!(key_pos < text.find("seg00000.ts").unwrap());
        match m3u8_rs::parse_playlist_res(text.as_bytes()).unwrap() {
            m3u8_rs::Playlist::MediaPlaylist(p) => {
                assert_eq!(p.segments.len(), 2);
                assert_eq!(p.segments[0].key.as_ref().unwrap().method, KeyMethod::AES128);
            }
            _ => panic!("expected media playlist"),
        }
        let text = String::from_utf8(media_playlist(&segs(3), 4, Some(&key), true)).unwrap();
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.trim_end().ends_with("#EXT-X-ENDLIST"));
    }

    #[test]
    fn master_lists_every_variant_with_attributes() {
        let v = |n: &str, b: u64, w: u32, h: u32| Variant {
            uri: format!("{n}/index.m3u8"),
            bandwidth: b,
            average_bandwidth: b * 9 / 10,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            width: w,
            height: h,
            frame_rate: 30.0,
        };
        let text = master_playlist(&[v("360p", 900_000, 640, 360), v("720p", 3_000_000, 1280, 720)]);
        match m3u8_rs::parse_playlist_res(&text).unwrap() {
            m3u8_rs::Playlist::MasterPlaylist(m) => {
                assert_eq!(m.variants.len(), 2);
                assert_eq!(m.variants[0].uri, "720p/index.m3u8");
                assert_eq!(m.variants[0].resolution, Some(Resolution { width: 1280, height: 720 }));
                assert_eq!(m.variants[0].codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
                assert_eq!(m.variants[0].average_bandwidth, Some(2_700_000));
            }
            _ => panic!("expected master playlist"),
        }
    }
}
