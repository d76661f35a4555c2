//! The one table of file types Cascade serves: MIME type and what kind of file each is. Media
//! serving answers only manifests and media; pages serve the rest of the web dir.

/// What a served file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A playlist or MPD: may change while its video is processing.
    Manifest,
    /// A segment, init segment, image or caption file of a video: never changes once written.
    Media,
    /// A page or asset of the web dir.
    Web,
}

const TABLE: &[(&str, &str, Kind)] = &[
    ("m3u8", "application/vnd.apple.mpegurl", Kind::Manifest),
    ("mpd", "application/dash+xml", Kind::Manifest),
    ("ts", "video/mp2t", Kind::Media),
    ("m4s", "video/iso.segment", Kind::Media),
    ("mp4", "video/mp4", Kind::Media),
    ("jpg", "image/jpeg", Kind::Media),
    ("vtt", "text/vtt; charset=utf-8", Kind::Media),
    ("html", "text/html; charset=utf-8", Kind::Web),
    ("css", "text/css; charset=utf-8", Kind::Web),
    ("js", "text/javascript; charset=utf-8", Kind::Web),
    ("mjs", "text/javascript; charset=utf-8", Kind::Web),
    ("svg", "image/svg+xml", Kind::Web),
    ("png", "image/png", Kind::Web),
    ("ico", "image/x-icon", Kind::Web),
    ("json", "application/json", Kind::Web),
];

/// Every MIME type of a kind (the API description lists them).
pub fn types(kind: Kind) -> impl Iterator<Item = &'static str> {
    TABLE.iter().filter(move |(_, _, k)| *k == kind).map(|(_, m, _)| *m)
}

/// MIME type and kind of a file name's extension, if Cascade serves that type.
pub fn lookup(name: &str) -> Option<(&'static str, Kind)> {
    let ext = name.rsplit_once('.')?.1;
    TABLE.iter().find(|(e, _, _)| *e == ext).map(|(_, m, k)| (*m, *k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(lookup("hls/720p/index.m3u8"), Some(("application/vnd.apple.mpegurl", Kind::Manifest)));
        assert_eq!(lookup("dash/audio/seg00001.m4s").map(|x| x.1), Some(Kind::Media));
        assert_eq!(lookup("app.css").map(|x| x.1), Some(Kind::Web));
        assert_eq!(lookup("key"), None);
        assert_eq!(lookup("x.exe"), None);
    }
}
