//! Which container a file is, decided from its first bytes before any demuxer sees it, and the
//! allowlist of containers Cascade transcodes. Playlists (HLS, DASH), SDP, SMIL, URI lists and
//! every other text format name other resources that a demuxer would open (a URL the server can
//! reach, a local path): none of them is on the list, so no upload can make the server fetch
//! anything.

use std::io::Read;
use std::path::Path;

/// Bytes that decide every container on the list (MPEG-TS needs three sync bytes 188 apart).
pub const ID_BYTES: usize = 4096;

/// A container Cascade accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// ISO BMFF: MP4, MOV, 3GP, fragmented MP4.
    Mp4,
    /// Matroska and WebM.
    Matroska,
    /// MPEG transport stream (188-byte packets, or 192 with a timecode prefix as in M2TS).
    MpegTs,
    /// MPEG program stream (VOB, MPG).
    MpegPs,
    Avi,
    Flv,
    Ogg,
    Mxf,
    /// YUV4MPEG2 raw video.
    Y4m,
}

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Container),
    /// Too few bytes to tell yet.
    NeedMore,
    Refused,
}

impl Container {
    /// The FFmpeg demuxer for it (`-f`), so FFmpeg never guesses a format of its own.
    pub fn ffmpeg_format(self) -> &'static str {
        match self {
            Container::Mp4 => "mov",
            Container::Matroska => "matroska",
            Container::MpegTs => "mpegts",
            Container::MpegPs => "mpeg",
            Container::Avi => "avi",
            Container::Flv => "flv",
            Container::Ogg => "ogg",
            Container::Mxf => "mxf",
            Container::Y4m => "yuv4mpegpipe",
        }
    }
}

/// ISO BMFF top-level box types a file may start with.
const BMFF_FIRST_BOXES: [&[u8; 4]; 7] = [b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"];
/// The MXF header partition pack key (SMPTE 377M), up to the byte that varies by partition kind.
const MXF_KEY: [u8; 13] = [0x06, 0x0E, 0x2B, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0D, 0x01, 0x02, 0x01, 0x01];

/// Decides from a file's first bytes (`complete`: these are all of them).
pub fn identify(head: &[u8], complete: bool) -> Verdict {
    let verdict = classify(head);
    match verdict {
        Verdict::NeedMore if complete || head.len() >= ID_BYTES => Verdict::Refused,
        v => v,
    }
}

fn classify(b: &[u8]) -> Verdict {
    let starts = |magic: &[u8]| b.len() >= magic.len() && b.starts_with(magic);
    if b.len() < 12 {
        return Verdict::NeedMore;
    }
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Verdict::Accepted(Container::Matroska);
    }
    if BMFF_FIRST_BOXES.iter().any(|k| &b[4..8] == k.as_slice()) {
        return Verdict::Accepted(Container::Mp4);
    }
    if starts(b"RIFF") && &b[8..12] == b"AVI " {
        return Verdict::Accepted(Container::Avi);
    }
    if starts(b"FLV\x01") {
        return Verdict::Accepted(Container::Flv);
    }
    if starts(b"OggS\x00") {
        return Verdict::Accepted(Container::Ogg);
    }
    if starts(b"YUV4MPEG2 ") {
        return Verdict::Accepted(Container::Y4m);
    }
    if starts(&MXF_KEY) {
        return Verdict::Accepted(Container::Mxf);
    }
    if starts(&[0x00, 0x00, 0x01, 0xBA]) {
        return Verdict::Accepted(Container::MpegPs);
    }
    // Transport streams: three sync bytes one packet apart (plain or with a 4-byte prefix).
    for (offset, packet) in [(0usize, 188usize), (4, 192)] {
        if b.get(offset) == Some(&0x47) {
            if b.len() < offset + 2 * packet + 1 {
                return Verdict::NeedMore;
            }
            if b[offset + packet] == 0x47 && b[offset + 2 * packet] == 0x47 {
                return Verdict::Accepted(Container::MpegTs);
            }
        }
    }
    Verdict::Refused
}

/// Why a file is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "not a media container Cascade accepts (MP4/MOV, Matroska/WebM, MPEG-TS/PS, AVI, FLV, Ogg, MXF, Y4M); \
         playlists, manifests and other files that reference other resources are refused"
    )]
    Refused,
}

/// Reads a file's first bytes and decides. Blocking.
pub fn identify_file(path: &Path) -> Result<Container, ContainerError> {
    let mut head = Vec::with_capacity(ID_BYTES);
    std::fs::File::open(path)?.take(ID_BYTES as u64).read_to_end(&mut head)?;
    match identify(&head, true) {
        Verdict::Accepted(c) => Ok(c),
        _ => Err(ContainerError::Refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(prefix: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.resize(ID_BYTES, 0);
        v
    }

    #[test]
    fn media_containers_are_accepted() {
        let cases: [(&[u8], Container); 9] = [
            (b"\x00\x00\x00\x20ftypisom", Container::Mp4),
            (b"\x00\x00\x00\x08wide\x00\x00\x00\x00", Container::Mp4),
            (&[0x1A, 0x45, 0xDF, 0xA3, 0x01, 0, 0, 0, 0, 0, 0, 0x1F], Container::Matroska),
            (b"RIFF\x00\x00\x00\x00AVI LIST", Container::Avi),
            (b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00", Container::Flv),
            (b"OggS\x00\x02\x00\x00\x00\x00\x00\x00", Container::Ogg),
            (b"YUV4MPEG2 W64 H64 F25:1", Container::Y4m),
            (&[0x00, 0x00, 0x01, 0xBA, 0x44, 0, 4, 0, 4, 1, 1, 0x89], Container::MpegPs),
            (&[0x06, 0x0E, 0x2B, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0D, 0x01, 0x02, 0x01, 0x01, 0x02, 0x04, 0x00], Container::Mxf),
        ];
        for (head, want) in cases {
            assert_eq!(identify(&padded(head), false), Verdict::Accepted(want), "{head:?}");
        }
        let mut ts = vec![0u8; 188 * 3];
        for i in 0..3 {
            ts[i * 188] = 0x47;
        }
        assert_eq!(identify(&ts, false), Verdict::Accepted(Container::MpegTs));
        let mut m2ts = vec![0u8; 192 * 3];
        for i in 0..3 {
            m2ts[4 + i * 192] = 0x47;
        }
        assert_eq!(identify(&m2ts, false), Verdict::Accepted(Container::MpegTs));
    }

    #[test]
    fn documents_that_reference_other_resources_are_refused() {
        for text in [
            &b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nhttp://127.0.0.1:9999/s.ts\n#EXT-X-ENDLIST\n"[..],
            b"<?xml version=\"1.0\"?><MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\"></MPD>",
            b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nm=video 5000 RTP/AVP 96\r\n",
            b"<smil><body><video src=\"file:///etc/passwd\"/></body></smil>",
            b"ffconcat version 1.0\nfile /etc/passwd\n",
            b"file:///etc/shadow\nhttp://169.254.169.254/latest/meta-data/\n",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        ] {
            assert_eq!(identify(&padded(text), false), Verdict::Refused, "{}", String::from_utf8_lossy(text));
            assert_eq!(identify(text, true), Verdict::Refused);
        }
        // A lone sync byte is not a transport stream.
        assert_eq!(identify(&padded(b"G\x00\x00\x00 not a stream"), false), Verdict::Refused);
    }

    #[test]
    fn short_heads_wait_for_more_unless_complete() {
        assert_eq!(identify(b"\x00\x00", false), Verdict::NeedMore);
        assert_eq!(identify(b"\x00\x00", true), Verdict::Refused);
        let mut ts = vec![0u8; 200];
        ts[0] = 0x47;
        ts[188] = 0x47;
        assert_eq!(identify(&ts, false), Verdict::NeedMore);
        assert_eq!(identify(&ts, true), Verdict::Refused);
        assert_eq!(identify(b"", true), Verdict::Refused);
    }
}
