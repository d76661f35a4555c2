//! A strict reader of Low-Latency HLS media playlists (RFC 8216bis), for the live and
//! progressive tests.

/// One part of a low-latency playlist.
#[derive(Debug, Clone)]
pub struct LlPart {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
}

/// One segment of a low-latency playlist (the last may have parts only: in progress).
#[derive(Debug, Clone)]
pub struct LlSegment {
    pub uri: Option<String>,
    pub duration: f64,
    pub parts: Vec<LlPart>,
    pub date: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// A low-latency media playlist, as a strict reader of RFC 8216bis sees it.
#[derive(Debug, Default)]
pub struct LlPlaylist {
    pub target: f64,
    pub part_target: f64,
    pub part_hold_back: f64,
    pub can_skip_until: f64,
    pub skipped: usize,
    pub segments: Vec<LlSegment>,
    pub hint: Option<String>,
    pub reports: Vec<(String, u64, u64)>,
    pub iv: Option<String>,
    pub ended: bool,
}

/// The attributes of a tag (`A=1,B="x,y",C=YES`).
pub fn ll_attrs(s: &str) -> std::collections::HashMap<String, String> {
    let (mut out, mut rest) = (std::collections::HashMap::new(), s);
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=').unwrap_or_else(|| panic!("attribute without a value in {s}"));
        let (v, next) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"').unwrap_or_else(|| panic!("unterminated string in {s}"));
                (q[..end].to_string(), q[end + 1..].strip_prefix(',').unwrap_or(&q[end + 1..]))
            }
            None => match after.split_once(',') {
                Some((v, n)) => (v.to_string(), n),
                None => (after.to_string(), ""),
            },
        };
        assert!(out.insert(k.to_string(), v).is_none(), "attribute {k} twice in {s}");
        rest = next;
    }
    out
}

/// Reads a low-latency media playlist strictly: every line is a known tag with the attributes
/// the spec gives it, or a segment URI after its EXTINF; then checks the rules between them.
pub fn ll_parse(text: &str) -> LlPlaylist {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"), "{text}");
    let mut p = LlPlaylist::default();
    let mut cur = LlSegment { uri: None, duration: 0.0, parts: Vec::new(), date: None };
    let mut extinf: Option<f64> = None;
    for line in lines {
        let (tag, value) = line.split_once(':').unwrap_or((line, ""));
        let f = |v: &str| v.parse::<f64>().unwrap_or_else(|_| panic!("not a number in {line}"));
        if !line.starts_with('#') {
            let d = extinf.take().unwrap_or_else(|| panic!("URI {line} without EXTINF\n{text}"));
            cur.uri = Some(line.to_string());
            cur.duration = d;
            p.segments.push(std::mem::replace(&mut cur, LlSegment { uri: None, duration: 0.0, parts: Vec::new(), date: None }));
            continue;
        }
        match tag {
            "#EXT-X-VERSION" => assert!(f(value) >= 9.0, "{line}"),
            "#EXT-X-TARGETDURATION" => p.target = f(value),
            "#EXT-X-MEDIA-SEQUENCE" => assert_eq!(value, "0"),
            "#EXT-X-PLAYLIST-TYPE" => assert!(value == "EVENT" || value == "VOD", "{line}"),
            "#EXT-X-INDEPENDENT-SEGMENTS" | "#EXT-X-ENDLIST" => p.ended |= tag == "#EXT-X-ENDLIST",
            "#EXT-X-MAP" => assert!(ll_attrs(value)["URI"].ends_with("/init00000.mp4"), "{line}"),
            "#EXT-X-KEY" => {
                let a = ll_attrs(value);
                assert_eq!(a["METHOD"], "AES-128", "{line}");
                p.iv = Some(a["IV"].clone());
            }
            "#EXT-X-SERVER-CONTROL" => {
                let a = ll_attrs(value);
                assert_eq!(a["CAN-BLOCK-RELOAD"], "YES");
                p.part_hold_back = f(&a["PART-HOLD-BACK"]);
                p.can_skip_until = f(&a["CAN-SKIP-UNTIL"]);
                assert_eq!(a.len(), 3, "{line}");
            }
            "#EXT-X-PART-INF" => p.part_target = f(&ll_attrs(value)["PART-TARGET"]),
            "#EXT-X-SKIP" => {
                assert!(p.segments.is_empty() && cur.parts.is_empty(), "EXT-X-SKIP comes before the segments");
                p.skipped = ll_attrs(value)["SKIPPED-SEGMENTS"].parse().unwrap();
            }
            "#EXT-X-PROGRAM-DATE-TIME" => {
                cur.date = Some(chrono::DateTime::parse_from_rfc3339(value).unwrap_or_else(|e| panic!("{line}: {e}")))
            }
            "#EXT-X-PART" => {
                assert!(p.part_target > 0.0, "EXT-X-PART before EXT-X-PART-INF");
                let a = ll_attrs(value);
                assert!(a.keys().all(|k| ["DURATION", "URI", "INDEPENDENT"].contains(&k.as_str())), "{line}");
                let independent = a.get("INDEPENDENT").map(|v| v == "YES").unwrap_or(false);
                cur.parts.push(LlPart { uri: a["URI"].clone(), duration: f(&a["DURATION"]), independent });
            }
            "#EXTINF" => extinf = Some(f(value.trim_end_matches(','))),
            "#EXT-X-PRELOAD-HINT" => {
                let a = ll_attrs(value);
                assert_eq!(a["TYPE"], "PART");
                p.hint = Some(a["URI"].clone());
            }
            "#EXT-X-RENDITION-REPORT" => {
                let a = ll_attrs(value);
                p.reports.push((a["URI"].clone(), a["LAST-MSN"].parse().unwrap(), a["LAST-PART"].parse().unwrap()));
            }
            _ => panic!("unknown tag {line}"),
        }
    }
    if !cur.parts.is_empty() {
        p.segments.push(cur);
    }
    // The rules between the lines.
    assert!(p.ended || p.part_hold_back >= 3.0 * p.part_target - 1e-9, "PART-HOLD-BACK is at least three part targets:\n{text}");
    assert!(p.ended || p.can_skip_until >= 6.0 * p.target, "CAN-SKIP-UNTIL is at least six target durations:\n{text}");
    for (i, s) in p.segments.iter().enumerate() {
        let n = p.skipped + i;
        assert!(s.date.is_some(), "segment {n} has a date:\n{text}");
        if let Some(uri) = &s.uri {
            assert!(uri.ends_with(&format!("/seg{n:05}.m4s")), "segment {n} is {uri}");
            assert!((s.duration.round()) <= p.target, "EXTINF {} over the target {}", s.duration, p.target);
        }
        for (k, part) in s.parts.iter().enumerate() {
            assert!(part.uri.ends_with(&format!("/seg{n:05}.{k}.m4s")), "part {n}.{k} is {}", part.uri);
            assert!(
                part.duration <= p.part_target + 1e-6,
                "part {} of {} s is over PART-TARGET {}",
                part.uri,
                part.duration,
                p.part_target
            );
        }
        if let (Some(_), false) = (&s.uri, s.parts.is_empty()) {
            let sum: f64 = s.parts.iter().map(|x| x.duration).sum();
            assert!((sum - s.duration).abs() < 0.01, "segment {n}: parts of {sum} s, EXTINF {}", s.duration);
        }
        if let Some(first) = s.parts.first() {
            assert!(first.independent, "segment {n} starts with an independent part:\n{text}");
        }
    }
    for w in p.segments.windows(2) {
        let (a, b) = (w[0].date.unwrap(), w[1].date.unwrap());
        let gap = (b - a).num_milliseconds() as f64 / 1000.0;
        assert!((gap - w[0].duration).abs() < 0.01, "dates {a} → {b} for a segment of {} s", w[0].duration);
    }
    p
}

/// `seg00012.3.m4s` at the end of a URI → (12, 3).
pub fn ll_part_number(uri: &str) -> (u64, usize) {
    let name = uri.rsplit('/').next().unwrap();
    let (s, p) = name.strip_prefix("seg").unwrap().strip_suffix(".m4s").unwrap().split_once('.').unwrap();
    (s.parse().unwrap(), p.parse().unwrap())
}

pub fn aes_decrypt(data: &[u8], key: &[u8], iv_hex: &str) -> Vec<u8> {
    use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    let iv = hex::decode(iv_hex.trim_start_matches("0x")).unwrap();
    let dec = cbc::Decryptor::<aes::Aes128>::new_from_slices(key, &iv).unwrap();
    dec.decrypt_padded_vec_mut::<Pkcs7>(data).expect("decrypts with the video's key")
}

/// The top-level ISO BMFF boxes of `data` (a leading `styp` left out); panics unless they fill it.
pub fn chunk_boxes(data: &[u8]) -> Vec<String> {
    let (mut at, mut out) = (0, Vec::new());
    while at < data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        assert!(size >= 8 && at + size <= data.len(), "a box of {size} bytes at {at} of {}", data.len());
        out.push(String::from_utf8_lossy(&data[at + 4..at + 8]).to_string());
        at += size;
    }
    if out.first().is_some_and(|b| b == "styp") {
        out.remove(0);
    }
    out
}

/// An ended LL playlist, read strictly: VOD, no preload hint, whole segments only, `seconds` long
/// (± 0.5 s) in all.
pub fn ll_parse_ended(text: &str, seconds: f64) -> LlPlaylist {
    let p = ll_parse(text);
    assert!(p.ended && p.hint.is_none() && p.segments.iter().all(|s| s.parts.is_empty() && s.uri.is_some()), "{text}");
    let total: f64 = p.segments.iter().map(|s| s.duration).sum();
    assert!((total - seconds).abs() <= 0.5, "{seconds} s published, {total} s listed:\n{text}");
    p
}
