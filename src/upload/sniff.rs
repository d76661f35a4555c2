//! What an upload is, from its first bytes.

/// Whether a file with this beginning can be demuxed while it is still arriving: Matroska/WebM,
/// MPEG-TS, and MP4/MOV whose `moov` comes before `mdat` (faststart, or fragmented). `None` when
/// the bytes seen so far do not tell yet.
pub fn streamable(prefix: &[u8]) -> Option<bool> {
    if prefix.len() < 12 {
        return None;
    }
    if prefix.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(true);
    }
    if prefix[0] == 0x47 && prefix.len() >= 377 && prefix[188] == 0x47 && prefix[376] == 0x47 {
        return Some(true);
    }
    if &prefix[4..8] == b"ftyp" {
        // Walk the top-level boxes: moov first is streamable, mdat first is not.
        let mut pos = 0usize;
        while pos + 8 <= prefix.len() {
            let size32 = u32::from_be_bytes([prefix[pos], prefix[pos + 1], prefix[pos + 2], prefix[pos + 3]]) as u64;
            let kind = &prefix[pos + 4..pos + 8];
            match kind {
                b"moov" | b"moof" => return Some(true),
                b"mdat" => return Some(false),
                _ => {}
            }
            let size = match size32 {
                0 => return Some(false),
                1 => {
                    if pos + 16 > prefix.len() {
                        return None;
                    }
                    u64::from_be_bytes(prefix[pos + 8..pos + 16].try_into().ok()?)
                }
                n => n,
            };
            if size < 8 {
                return Some(false);
            }
            pos = pos.checked_add(size as usize)?;
        }
        return None;
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut v = ((body + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend(std::iter::repeat_n(0u8, body));
        v
    }

    #[test]
    fn detects_streamable_containers() {
        let mut mkv = vec![0x1A, 0x45, 0xDF, 0xA3];
        mkv.extend([0u8; 20]);
        assert_eq!(streamable(&mkv), Some(true));
        let mut ts = vec![0u8; 564];
        ts[0] = 0x47;
        ts[188] = 0x47;
        ts[376] = 0x47;
        assert_eq!(streamable(&ts), Some(true));
        let faststart = [bx(b"ftyp", 16), bx(b"moov", 100), bx(b"mdat", 50)].concat();
        assert_eq!(streamable(&faststart), Some(true));
        let fragmented = [bx(b"ftyp", 16), bx(b"moov", 10), bx(b"moof", 10)].concat();
        assert_eq!(streamable(&fragmented), Some(true));
        let moov_at_end = [bx(b"ftyp", 16), bx(b"free", 8), bx(b"mdat", 5000), bx(b"moov", 100)].concat();
        assert_eq!(streamable(&moov_at_end[..200]), Some(false));
        // Not enough bytes to see past a big box yet.
        let big_first = [bx(b"ftyp", 16), bx(b"uuid", 100_000)].concat();
        assert_eq!(streamable(&big_first[..1000]), None);
        assert_eq!(streamable(b"short"), None);
        assert_eq!(streamable(b"plain text that is no video at all"), Some(false));
    }
}
