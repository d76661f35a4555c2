//! Token-checked media: `/play/{token}/{path}` serves playlists, MPDs, segments and the key of the
//! video the token was minted for, with explicit MIME types, Cache-Control and Range support.

pub mod cache;
pub mod lowlatency;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use warp::http::{header, HeaderValue, StatusCode};

use super::mime::Kind;
use crate::app::{now_unix, App};
use crate::error::AppError;

/// MIME type and whether the file is a manifest (may still change) for a served media file.
fn media_type(path: &Path) -> Option<(&'static str, bool)> {
    match super::mime::lookup(path.to_str()?)? {
        (mime, Kind::Manifest) => Some((mime, true)),
        (mime, Kind::Media) => Some((mime, false)),
        (_, Kind::Web) => None,
    }
}

/// Turns the URL tail into a relative path inside the media dir, or refuses it. Rejects `..`,
/// `.`, empty and hidden components (also when percent-encoded), backslashes and NUL.
pub fn safe_relative(tail: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(tail).decode_utf8().ok()?;
    if decoded.is_empty() || decoded.contains('\\') || decoded.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in decoded.split('/') {
        if part.is_empty() || part.starts_with('.') {
            return None;
        }
        out.push(part);
    }
    if out.components().all(|c| matches!(c, Component::Normal(_))) {
        Some(out)
    } else {
        None
    }
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    /// No range, or one to ignore: the whole file with 200.
    Whole,
    /// One satisfiable range, first and last byte inclusive: 206.
    Part(u64, u64),
    /// 416, with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Reads a `Range` header as RFC 9110 §14 asks a server that knows only the `bytes` unit to:
/// another unit or an invalid range set is ignored, and several ranges are answered with the
/// whole file (allowed, and what players never need). Parsing and clamping to the file are
/// `http-range-header`'s.
fn range_ask(h: Option<&str>, len: u64) -> RangeAsk {
    let Some(h) = h else { return RangeAsk::Whole };
    let Ok(ranges) = http_range_header::parse_range_header(h) else { return RangeAsk::Whole };
    if ranges.len() != 1 {
        return RangeAsk::Whole;
    }
    match ranges.validate(len) {
        // Empty only for a suffix range of an empty file: the whole (empty) file.
        Ok(r) => r.first().map_or(RangeAsk::Whole, |r| RangeAsk::Part(*r.start(), *r.end())),
        Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => RangeAsk::Unsatisfiable,
        // Rejected as abusive: ignoring a Range is always allowed.
        Err(_) => RangeAsk::Whole,
    }
}

/// The range to answer with, or the 416 error.
fn range_to_serve(h: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, AppError> {
    match range_ask(h, len) {
        RangeAsk::Whole => Ok(None),
        RangeAsk::Part(s, e) => Ok(Some((s, e))),
        RangeAsk::Unsatisfiable => Err(AppError::RangeNotSatisfiable(len)),
    }
}

fn not_found() -> AppError {
    AppError::NotFound("no such media file".into())
}

/// Opens a regular file at `rel` (already checked by `safe_relative`) under `root`, refusing a
/// symlink anywhere below `root`: every directory on the way is checked with lstat, and the file
/// is opened with O_NOFOLLOW and must be a regular file (cheaper than canonicalizing the root and
/// the path on every request, as this did before). O_NONBLOCK: a FIFO planted in the tree cannot
/// hang a worker thread.
fn open_inside(root: &Path, rel: &Path) -> Result<(std::fs::File, u64), AppError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut dir = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    let (file, dirs) = parts.split_last().ok_or_else(not_found)?;
    for part in dirs {
        dir.push(part);
        let meta = std::fs::symlink_metadata(&dir).map_err(|_| not_found())?;
        if meta.file_type().is_symlink() {
            return Err(AppError::Forbidden("path leaves the media tree".into()));
        }
        if !meta.is_dir() {
            return Err(not_found());
        }
    }
    dir.push(file);
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&dir).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            AppError::Forbidden("path leaves the media tree".into())
        } else {
            not_found()
        }
    })?;
    let meta = f.metadata().map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(not_found());
    }
    Ok((f, meta.len()))
}

/// Serves one file of a video's media tree.
pub async fn serve(
    app: Arc<App>,
    token: String,
    tail: String,
    range: Option<String>,
    head_only: bool,
    query: &str,
) -> Result<warp::reply::Response, AppError> {
    let video_id = app.signer.verify(&token, now_unix())?;
    if app.config.metrics {
        app.metrics.viewer(&token);
    }
    let rel = safe_relative(&tail).ok_or_else(not_found)?;
    if rel == Path::new("hls").join("key") {
        return key_response(&app, video_id).await;
    }
    if app.is_deleted(&video_id) {
        return Err(not_found());
    }
    // A low-latency broadcast on air: its media playlists are rendered here (blocking until they
    // hold what is asked for), and a part named by a preload hint is awaited; then served below.
    if let Some(reply) = lowlatency::answer(&app, &video_id, &rel, query).await? {
        return Ok(reply);
    }
    let (mime, is_manifest) = media_type(&rel).ok_or_else(not_found)?;
    // Manifests need the record (their caching depends on whether the job is finished);
    // segments are immutable once published. A sled read on every segment GET cost about a
    // quarter of the throughput of 0.2 MB segments (9.4k vs 12.3k req/s here), so a deleted video
    // is recognised in memory instead; a segment GET reads the record only on a cache miss with
    // no job running, to learn whether the file may be cached (below).
    let finished = if is_manifest {
        let id = video_id.clone();
        match app.store.run(move |s| s.get(&id)).await {
            Ok(r) => Some(r.ok_or_else(not_found)?.status.is_final()),
            // The database cannot be reached (a restart): the manifest is served all the same,
            // as one that may change. Players go on; new ones need the database for the key.
            Err(crate::store::StoreError::Unavailable(_)) => Some(false),
            Err(e) => return Err(e.into()),
        }
    } else {
        // A deleted video was refused above, before the low-latency paths.
        None
    };
    // Segments (and init segments) of finished videos are answered from memory when they can be.
    let cacheable = matches!(mime, "video/mp2t" | "video/iso.segment" | "video/mp4");
    if cacheable {
        let cached = app.segments.get(&video_id, &rel);
        let counter = if cached.is_some() { &app.metrics.cache_hits } else { &app.metrics.cache_misses };
        counter.inc();
        if let Some(data) = cached {
            let len = data.len() as u64;
            let range = range_to_serve(range.as_deref(), len)?;
            let body = match range {
                _ if head_only => bytes::Bytes::new(),
                Some((s, e)) => data.slice(s as usize..=e as usize),
                None => data,
            };
            return respond(body, len, range, head_only, mime, is_manifest, finished);
        }
    }
    // Object storage: a node serves from its disk only what it is producing (progressive
    // playback, low-latency parts); everything else comes from the bucket.
    if app.storage.is_remote() && !app.serves_from_disk(&video_id) {
        let ask = Ask { range, head_only, mime, is_manifest, finished, cacheable };
        return from_bucket(&app, &video_id, rel, ask).await;
    }
    let root = app.media_dir(&video_id);
    let store = app.store.blocking();
    let app2 = app.clone();
    // Only a whole-file GET may fill the cache (a Range request reads just its range), and not
    // while a job of the video runs (no record read for those: progressive playback stays cheap).
    let may_cache = cacheable && range.is_none() && !head_only && !app.has_running_job(&video_id);
    let read = move || read_from_disk(&app2, &store, &root, rel, &video_id, range.as_deref(), head_only, may_cache);
    let (data, total, range_used) = tokio::task::spawn_blocking(read).await.map_err(|e| AppError::Internal(e.to_string()))??;
    respond(data, total, range_used, head_only, mime, is_manifest, finished)
}

/// What a media request asks for and what is known of its file.
struct Ask {
    range: Option<String>,
    head_only: bool,
    mime: &'static str,
    is_manifest: bool,
    finished: Option<bool>,
    cacheable: bool,
}

/// A file of the video's media tree from the object store: a presigned redirect for segments
/// and images when `CASCADE_STORAGE_REDIRECT` is on, else streamed through here (a whole
/// segment of a ready video also into the segment cache).
async fn from_bucket(app: &Arc<App>, video_id: &str, rel: PathBuf, ask: Ask) -> Result<warp::reply::Response, AppError> {
    if app.storage.redirects() && !ask.is_manifest {
        let url = app.storage.presigned_media_url(video_id, &rel).await?.ok_or_else(not_found)?;
        let mut r = warp::reply::Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::FOUND;
        let h = r.headers_mut();
        h.insert(header::LOCATION, HeaderValue::from_str(&url).map_err(|e| AppError::Internal(e.to_string()))?);
        // The URL expires: never reused from a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        return Ok(r);
    }
    // As from disk: the status is read before the object, so an object read once the video is
    // ready is final.
    let whole = ask.cacheable && ask.range.is_none() && !ask.head_only;
    let ready = if whole {
        let id = video_id.to_string();
        // Without the database (a restart) the segment is served, only not cached.
        match app.store.run(move |s| s.get(&id)).await {
            Ok(r) => r.is_some_and(|r| r.status == crate::model::Status::Ready),
            Err(crate::store::StoreError::Unavailable(_)) => false,
            Err(e) => return Err(e.into()),
        }
    } else {
        false
    };
    let data = app.storage.get_media(video_id, &rel).await?.ok_or_else(not_found)?;
    let len = data.len() as u64;
    if ready && app.segments.admits(len) {
        app.segments.insert(video_id, rel, data.clone());
        if app.is_deleted(video_id) {
            app.segments.forget(video_id);
        }
    }
    let range = range_to_serve(ask.range.as_deref(), len)?;
    let body = match range {
        _ if ask.head_only => bytes::Bytes::new(),
        Some((s, e)) => data.slice(s as usize..=e as usize),
        None => data,
    };
    respond(body, len, range, ask.head_only, ask.mime, ask.is_manifest, ask.finished)
}

/// The AES key of a video (never cached by anyone).
async fn key_response(app: &App, video_id: String) -> Result<warp::reply::Response, AppError> {
    let key = app.store.run(move |s| s.key(&video_id)).await?.ok_or_else(not_found)?;
    let mut r = warp::reply::Response::new(key.key.to_vec().into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(r)
}

/// A body read from disk, the file's length and the range served.
type FileRead = (bytes::Bytes, u64, Option<(u64, u64)>);

/// Reads a media file (its requested range, nothing for HEAD) on the blocking pool; a whole
/// segment of a ready video is also put in the segment cache. Returns the body, the file's
/// length and the range served.
#[allow(clippy::too_many_arguments)]
fn read_from_disk(
    app: &App,
    store: &crate::store::Store,
    root: &Path,
    rel: PathBuf,
    video_id: &str,
    range: Option<&str>,
    head_only: bool,
    may_cache: bool,
) -> Result<FileRead, AppError> {
    // The status is read before the file is opened: a file opened once the video is ready
    // is final (a retried job rewrites its files only before that).
    let ready = may_cache
        && match store.get(video_id) {
            Ok(r) => r.is_some_and(|r| r.status == crate::model::Status::Ready),
            // Without the database (a restart) the segment is served, only not cached.
            Err(crate::store::StoreError::Unavailable(_)) => false,
            Err(e) => return Err(e.into()),
        };
    let (mut f, len) = open_inside(root, &rel)?;
    let range = range_to_serve(range, len)?;
    use std::io::{Read, Seek, SeekFrom};
    if ready && app.segments.admits(len) {
        let mut buf = Vec::with_capacity(len as usize);
        (&mut f).take(len).read_to_end(&mut buf)?;
        if buf.len() as u64 != len {
            return Err(AppError::Internal("media file shrank while being read".into()));
        }
        let data = bytes::Bytes::from(buf);
        app.segments.insert(video_id, rel, data.clone());
        if app.is_deleted(video_id) {
            // Deleted meanwhile: the delete marks the video before it empties the cache,
            // so either it or this removes the entry.
            app.segments.forget(video_id);
        }
        return Ok((data, len, None));
    }
    let (start, end) = range.unwrap_or((0, len.saturating_sub(1)));
    let n = if len == 0 { 0 } else { end - start + 1 };
    // Read straight into spare capacity: zero-filling the buffer first was 14 % of the CPU
    // time of small-segment GETs.
    let mut buf = Vec::with_capacity(if head_only { 0 } else { n as usize });
    if !head_only {
        f.seek(SeekFrom::Start(start))?;
        (&mut f).take(n).read_to_end(&mut buf)?;
        if buf.len() as u64 != n {
            return Err(AppError::Internal("media file shrank while being read".into()));
        }
    }
    Ok((bytes::Bytes::from(buf), len, range))
}

/// The response for `body` (the requested range of a `total`-byte file, empty for HEAD).
fn respond(
    body: bytes::Bytes,
    total: u64,
    range_used: Option<(u64, u64)>,
    head_only: bool,
    mime: &'static str,
    is_manifest: bool,
    finished: Option<bool>,
) -> Result<warp::reply::Response, AppError> {
    let n = body.len() as u64;
    let mut r = warp::reply::Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let cache = if !is_manifest {
        "private, max-age=31536000, immutable"
    } else if finished == Some(true) {
        "private, max-age=300"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some((s, e)) = range_used {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        let cr = format!("bytes {s}-{e}/{total}");
        r.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).map_err(|e| AppError::Internal(e.to_string()))?);
    }
    let length = if head_only { range_used.map_or(total, |(s, e)| e - s + 1) } else { n };
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        assert_eq!(safe_relative("hls/720p/seg00001.ts"), Some(PathBuf::from("hls/720p/seg00001.ts")));
        for bad in
            ["../x", "hls/../../db", "%2e%2e/secret", "hls/%2E%2E/%2e%2e/db", "hls//x", "/etc/passwd", "hls/.hidden", "a\\b", "%00", ""]
        {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the URL tail, an accepted path is a plain relative path that stays inside
        /// the media dir: only normal components, none hidden, none `..`.
        #[test]
        fn any_tail_resolves_inside_or_not_at_all(tail in "(%2[eE]|%2[fF]|%5[cC]|%00|[./\\a-z0-9_-]){0,40}") {
            if let Some(p) = safe_relative(&tail) {
                let root = Path::new("/media/v");
                prop_assert!(root.join(&p).starts_with(root));
                // Every component a plain name, none hidden: so none is `.` or `..` ("A.." is a
                // plain name; proptest found it when this also refused any "..").
                prop_assert!(p.components().all(|c| matches!(c, Component::Normal(n) if !n.to_string_lossy().starts_with('.'))), "{p:?}");
            }
        }

        /// Paths of ordinary names are accepted as they are, also percent-encoded.
        #[test]
        fn ordinary_paths_resolve_to_themselves(parts in proptest::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,12}", 1..5)) {
            let joined = parts.join("/");
            prop_assert_eq!(safe_relative(&joined), Some(PathBuf::from(&joined)));
            let encoded: String = joined.bytes().map(|b| if b == b'/' { "/".to_string() } else { format!("%{b:02X}") }).collect();
            prop_assert_eq!(safe_relative(&encoded), Some(PathBuf::from(&joined)));
        }

        /// Any header: a part within the file, the whole file, or 416; never a panic.
        #[test]
        fn any_range_header_is_within_the_file(h in "(bytes|items)?=?[-0-9, ]{0,24}", len in 0u64..1_000_000) {
            if let RangeAsk::Part(start, end) = range_ask(Some(&h), len) {
                prop_assert!(start <= end && end < len, "{h} of {len}: {start}-{end}");
            }
        }

        /// `bytes=a-b` and `bytes=-n` mean what RFC 9110 says.
        #[test]
        fn single_ranges_are_clamped_to_the_file(a in 0u64..2_000, extra in 0u64..2_000, n in 0u64..3_000, len in 0u64..2_000) {
            let b = a + extra;
            let want = if a < len { RangeAsk::Part(a, b.min(len - 1)) } else { RangeAsk::Unsatisfiable };
            prop_assert_eq!(range_ask(Some(&format!("bytes={a}-{b}")), len), want);
            let suffix = range_ask(Some(&format!("bytes=-{n}")), len);
            match (n, len) {
                (0, _) => prop_assert_eq!(suffix, RangeAsk::Unsatisfiable),
                (_, 0) => prop_assert!(matches!(suffix, RangeAsk::Whole | RangeAsk::Unsatisfiable)),
                _ => prop_assert_eq!(suffix, RangeAsk::Part(len - n.min(len), len - 1)),
            }
        }
    }

    #[test]
    fn ranges() {
        use RangeAsk::*;
        for (h, want) in [
            (None, Whole),
            (Some("bytes=0-3"), Part(0, 3)),
            (Some("bytes=5-"), Part(5, 9)),
            (Some("bytes=-4"), Part(6, 9)),
            (Some("bytes=-100"), Part(0, 9)),
            (Some("bytes=8-100"), Part(8, 9)),
            (Some("bytes=10-"), Unsatisfiable),
            (Some("bytes=10-20"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            // Another unit is ignored (RFC 9110 §14.2), and so is a range set that is not valid.
            (Some("items=0-1"), Whole),
            (Some("bytes=abc"), Whole),
            (Some("bytes=4-2"), Whole),
            // Several ranges: the whole file.
            (Some("bytes=0-1,4-5"), Whole),
            (Some("bytes=0-1, 4-5"), Whole),
        ] {
            assert_eq!(range_ask(h, 10), want, "{h:?}");
        }
        assert_eq!(range_ask(Some("bytes=0-"), 0), Unsatisfiable);
    }

    /// The answers of a real media route to Range requests, the 416 through the error mapping.
    #[tokio::test]
    async fn range_requests_are_answered_as_rfc_9110_says() {
        use std::collections::HashMap;
        let dir = tempfile::tempdir().unwrap();
        let env: HashMap<String, String> = [("CASCADE_DATA_DIR".to_string(), dir.path().display().to_string())].into();
        let config = crate::config::Config::from_sources(&env, &[]).unwrap();
        let ladder = crate::ladder::Ladder::load(&config.ladder_path).unwrap();
        let app = Arc::new(App::open(config, ladder).unwrap());
        let seg = app.media_dir("v1").join("hls/720p/seg00000.ts");
        std::fs::create_dir_all(seg.parent().unwrap()).unwrap();
        std::fs::write(&seg, vec![7u8; 100]).unwrap();
        let token = app.signer.mint("v1", now_unix() + 60);
        let get = |range: &str| serve(app.clone(), token.clone(), "hls/720p/seg00000.ts".into(), Some(range.into()), false, "");

        let r = get("bytes=10-19").await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 10-19/100");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "10");
        for ignored in ["items=0-1", "bytes=0-1,5-6"] {
            let r = get(ignored).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{ignored}");
            assert_eq!(r.headers()[header::CONTENT_LENGTH], "100", "{ignored}");
            assert!(r.headers().get(header::CONTENT_RANGE).is_none(), "{ignored}");
        }
        let e = get("bytes=100-").await.unwrap_err();
        assert!(matches!(e, AppError::RangeNotSatisfiable(100)), "{e:?}");
        let r = crate::http::recover(warp::reject::custom(e)).await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */100");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
