//! FLV, the container RTMP's media messages come from: an RTMP audio or video message body is an
//! FLV tag body, so the publisher's stream becomes an FLV byte stream by putting each body back
//! in its tag. GStreamer's `flvdemux` (through decodebin) reads that stream; it handles the AVC
//! and AAC configuration records and the composition-time offsets.

/// FLV tag type of audio.
pub const AUDIO: u8 = 8;
/// FLV tag type of video.
pub const VIDEO: u8 = 9;

/// The FLV file header (version 1, flags for the streams present) and the first
/// `PreviousTagSize` (0).
pub fn header(has_audio: bool) -> [u8; 13] {
    let flags = if has_audio { 0x05 } else { 0x01 };
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// One tag: type, 24-bit size, timestamp (24 bits + 8 extended), stream id 0, the body, and the
/// `PreviousTagSize` after it. `None` for a body larger than a tag can hold (16 MiB).
pub fn tag(kind: u8, timestamp_ms: u32, body: &[u8]) -> Option<Vec<u8>> {
    let size = u32::try_from(body.len()).ok().filter(|s| *s < 1 << 24)?;
    let mut out = Vec::with_capacity(11 + body.len() + 4);
    out.push(kind);
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&timestamp_ms.to_be_bytes()[1..]);
    out.push((timestamp_ms >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(11 + size).to_be_bytes());
    Some(out)
}

/// What a video tag body carries, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (FLV codec id 7).
    Avc,
    /// Anything else, with its FLV codec id, or the Enhanced RTMP FourCC form (HEVC, AV1, VP9).
    Other(u8),
}

/// The codec of a video tag body; `None` for an empty body.
pub fn video_codec(body: &[u8]) -> Option<VideoCodec> {
    let b = *body.first()?;
    if b & 0x80 != 0 {
        // Enhanced RTMP: the low nibble is a packet type and a FourCC follows.
        return Some(VideoCodec::Other(0x80));
    }
    Some(if b & 0x0f == 7 { VideoCodec::Avc } else { VideoCodec::Other(b & 0x0f) })
}

/// Timestamps relative to the first media message of the broadcast, so a publisher whose clock
/// starts anywhere (or wraps its 32-bit milliseconds) gives an FLV stream starting at 0.
/// A publisher that comes back within the reconnect window continues the same stream: its
/// timestamps start where the last publisher's ended.
#[derive(Debug, Default)]
pub struct Timeline {
    first: Option<u32>,
    offset: u32,
    last: u32,
}

/// The step from the last tag of a publisher to the first of the next one: more than a frame
/// of video (30 fps) or audio (AAC at 48 kHz), so nothing overlaps.
const JOIN_MS: u32 = 40;

impl Timeline {
    /// The timeline of a publisher that continues a stream at `next`.
    pub fn resume(next: u32) -> Timeline {
        Timeline { first: None, offset: next, last: next.saturating_sub(JOIN_MS) }
    }

    /// The tag timestamp for a publisher timestamp.
    pub fn rebase(&mut self, ts: u32) -> u32 {
        let first = *self.first.get_or_insert(ts);
        let t = self.offset.wrapping_add(ts.wrapping_sub(first));
        self.last = self.last.max(t);
        t
    }

    /// Where the next publisher's first tag goes.
    pub fn next(&self) -> u32 {
        self.last + JOIN_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_parses_back() {
        let body = [0x17, 1, 0, 0, 0x21, 0xaa, 0xbb];
        let t = tag(VIDEO, 0x0123_4567, &body).unwrap();
        assert_eq!(t.len(), 11 + body.len() + 4);
        assert_eq!(t[0], VIDEO);
        assert_eq!(u32::from_be_bytes([0, t[1], t[2], t[3]]) as usize, body.len());
        // 24 low bits, then the extension byte with the high 8.
        assert_eq!(u32::from_be_bytes([t[7], t[4], t[5], t[6]]), 0x0123_4567);
        assert_eq!(&t[8..11], &[0, 0, 0]);
        assert_eq!(&t[11..11 + body.len()], &body);
        assert_eq!(u32::from_be_bytes(t[t.len() - 4..].try_into().unwrap()) as usize, 11 + body.len());
        assert!(tag(AUDIO, 0, &vec![0; 1 << 24]).is_none());
        assert_eq!(&header(true)[..5], b"FLV\x01\x05");
        assert_eq!(header(false)[4], 1);
    }

    #[test]
    fn codecs_are_told_apart() {
        assert_eq!(video_codec(&[0x17, 0]), Some(VideoCodec::Avc));
        assert_eq!(video_codec(&[0x27]), Some(VideoCodec::Avc));
        assert_eq!(video_codec(&[0x12]), Some(VideoCodec::Other(2)));
        assert_eq!(video_codec(&[0x90, b'h', b'v', b'c', b'1']), Some(VideoCodec::Other(0x80)));
        assert_eq!(video_codec(&[]), None);
    }

    #[test]
    fn timestamps_start_at_zero_and_survive_a_wrap() {
        let mut t = Timeline::default();
        assert_eq!(t.rebase(u32::MAX - 10), 0);
        assert_eq!(t.rebase(u32::MAX), 10);
        assert_eq!(t.rebase(5), 16);
        let mut t = Timeline::default();
        assert_eq!(t.rebase(90_000), 0);
        assert_eq!(t.rebase(90_033), 33);
        // A publisher that comes back goes on after the last tag, whatever its own clock says.
        let mut t = Timeline::resume(t.next());
        assert_eq!(t.rebase(5), 73);
        assert_eq!(t.rebase(105), 173);
        assert_eq!(t.next(), 213);
    }
}
