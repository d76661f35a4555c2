//! Low-latency requests of a broadcast on air. LL-HLS (RFC 8216bis §6.2.5–6.2.6): its media
//! playlists, rendered from the broadcast's state, with blocking reload (`_HLS_msn`, `_HLS_part`)
//! and delta updates (`_HLS_skip=YES`); and the part a preload hint names, held until it is
//! written. Low-latency DASH: a segment still being written is sent chunk by chunk as cmafmux
//! finishes them (chunked transfer). Everything else, and every request once the broadcast has
//! ended, is served from disk by `media::serve`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use warp::http::{header, HeaderValue};
use warp::Reply;

use crate::app::App;
use crate::error::AppError;
use crate::packaging::llhls::{LlStream, Progress, Wait, LL_DIR};

/// The delivery directives of a playlist request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    msn: Option<u64>,
    part: Option<usize>,
    skip: bool,
}

fn bad(m: &str) -> AppError {
    AppError::BadRequest(m.to_string())
}

/// Reads `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query string; other parameters are
/// left alone (a CDN's or the player's own).
fn directives(query: &str) -> Result<Directives, AppError> {
    let mut d = Directives::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "_HLS_msn" => d.msn = Some(v.parse().map_err(|_| bad("_HLS_msn must be a media sequence number"))?),
            "_HLS_part" => d.part = Some(v.parse().map_err(|_| bad("_HLS_part must be a part index"))?),
            "_HLS_skip" => {
                d.skip = match v {
                    "YES" | "v2" => true,
                    _ => return Err(bad("_HLS_skip must be YES or v2")),
                }
            }
            _ => {}
        }
    }
    if d.part.is_some() && d.msn.is_none() {
        return Err(bad("_HLS_part needs _HLS_msn"));
    }
    Ok(d)
}

/// `segNNNNN.P.m4s` → (N, P).
fn part_name(file: &str) -> Option<(u64, usize)> {
    let (seg, part) = file.strip_prefix("seg")?.strip_suffix(".m4s")?.split_once('.')?;
    Some((seg.parse().ok()?, part.parse().ok()?))
}

/// Answers a low-latency request of a broadcast on air; `None`: not one, serve it from disk
/// (a part once it exists, too).
pub async fn answer(app: &App, video_id: &str, rel: &Path, query: &str) -> Result<Option<warp::reply::Response>, AppError> {
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    if !matches!(parts.first(), Some(&LL_DIR) | Some(&"dash")) {
        return Ok(None);
    }
    let Some(stream) = app.live.ll.get(video_id) else { return Ok(None) };
    if let ["dash", rep, file] = parts.as_slice() {
        return match segment_name(file) {
            Some(n) => Ok(growing_segment(stream, app.media_dir(video_id).join("dash").join(rep), rep, n)),
            None => Ok(None),
        };
    }
    match parts.as_slice() {
        [_, file] => match file.strip_suffix(".m3u8") {
            Some(rep) if rep != "master" => playlist(&stream, rep, query).await.map(Some),
            _ => Ok(None),
        },
        [_, rep, file] => {
            if let Some((segment, part)) = part_name(file) {
                // Ready or not coming: the file is served, or not found, from disk.
                wait(&stream, rep, |s| s.part_state(rep, segment, part)).await?;
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// `segNNNNN.m4s` → N.
fn segment_name(file: &str) -> Option<u64> {
    file.strip_prefix("seg")?.strip_suffix(".m4s")?.parse().ok()
}

/// A DASH segment of `rep` that is being written (or is one of the next two): its chunks as they
/// are written, then the end of the body once it is complete. `None`: complete (or not coming), to be
/// served from disk.
fn growing_segment(stream: Arc<LlStream>, dir: PathBuf, rep: &str, number: u64) -> Option<warp::reply::Response> {
    if !matches!(stream.progress(rep, number), Progress::Writing(_) | Progress::Next) {
        return None;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    let rep = rep.to_string();
    tokio::spawn(async move {
        if let Err(e) = send_growing(&stream, &dir, &rep, number, &tx).await {
            tracing::debug!(%rep, number, error = %e, "a growing segment's response ended early");
            let _ = tx.send(Err(e)).await;
        }
    });
    let mut r = warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/iso.segment"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

/// The clear segment file: under its final name once complete, else its `.part` (an open file
/// stays readable when it is renamed).
fn open_segment(dir: &Path, number: u64) -> std::io::Result<std::fs::File> {
    let done = dir.join(format!("seg{number:05}.m4s"));
    std::fs::File::open(&done)
        .or_else(|_| std::fs::File::open(dir.join(format!("seg{number:05}.m4s.part"))))
        .or_else(|_| std::fs::File::open(&done))
}

async fn send_growing(
    stream: &LlStream,
    dir: &Path,
    rep: &str,
    number: u64,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
) -> std::io::Result<()> {
    let mut changes = stream.subscribe(rep);
    let mut sent = 0u64;
    let mut file: Option<std::fs::File> = None;
    loop {
        let (written, complete) = match stream.progress(rep, number) {
            Progress::Complete(b) => (b, true),
            Progress::Writing(b) => (b, false),
            Progress::Next => (0, false),
            Progress::Unknown => return Err(std::io::Error::other("the segment is no longer being written")),
        };
        if written > sent {
            let mut f = match file.take() {
                Some(f) => f,
                None => open_segment(dir, number)?,
            };
            let (f, chunk) = tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity((written - sent) as usize);
                f.seek(SeekFrom::Start(sent))?;
                (&mut f).take(written - sent).read_to_end(&mut buf)?;
                Ok::<_, std::io::Error>((f, buf))
            })
            .await
            .map_err(std::io::Error::other)??;
            if chunk.len() as u64 != written - sent {
                return Err(std::io::Error::other("the segment is shorter than its chunks"));
            }
            file = Some(f);
            if tx.send(Ok(bytes::Bytes::from(chunk))).await.is_err() {
                return Ok(()); // the client went away
            }
            sent = written;
        }
        if complete {
            return Ok(());
        }
        match tokio::time::timeout(stream.block_timeout(), changes.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(std::io::Error::other("the segment stopped growing")),
        }
    }
}

async fn playlist(stream: &LlStream, rep: &str, query: &str) -> Result<warp::reply::Response, AppError> {
    let d = directives(query)?;
    if let Some(msn) = d.msn {
        match wait(stream, rep, |s| s.wait_state(rep, msn, d.part)).await? {
            Wait::TooFar => return Err(AppError::BadRequest(format!("_HLS_msn={msn} is more than two segments past the playlist's last"))),
            Wait::Unknown => return Err(AppError::NotFound("no such playlist".into())),
            Wait::Ready | Wait::Pending => {}
        }
    }
    let body = stream.render_shared(rep, d.skip).ok_or_else(|| AppError::NotFound("no such playlist".into()))?;
    let mut r = warp::reply::Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// Waits until `check` is no longer `Pending`, for three target durations at most (then 503, as
/// the spec asks). Woken by the playlist's changes only.
async fn wait(stream: &LlStream, rep: &str, check: impl Fn(&LlStream) -> Wait) -> Result<Wait, AppError> {
    // Subscribed before the first look: a change between the look and the wait still wakes it.
    let mut rx = stream.subscribe(rep);
    let deadline = tokio::time::Instant::now() + stream.block_timeout();
    loop {
        let w = check(stream);
        if w != Wait::Pending {
            return Ok(w);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ok(Wait::Unknown),
            Err(_) => {
                return Err(AppError::Unavailable(format!(
                    "{rep}: what was asked for did not arrive within {} s; ask again",
                    stream.block_timeout().as_secs()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_and_checked() {
        assert_eq!(directives("").unwrap(), Directives::default());
        assert_eq!(directives("_HLS_msn=12&_HLS_part=3&x=1").unwrap(), Directives { msn: Some(12), part: Some(3), skip: false });
        assert_eq!(directives("_HLS_msn=4&_HLS_skip=YES").unwrap(), Directives { msn: Some(4), part: None, skip: true });
        for bad in ["_HLS_part=1", "_HLS_msn=-1", "_HLS_msn=x", "_HLS_msn=1&_HLS_part=", "_HLS_skip=NO", "_HLS_msn=99999999999999999999"] {
            assert!(matches!(directives(bad), Err(AppError::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_name("seg00012.m4s"), Some(12));
        assert_eq!(segment_name("seg00012.3.m4s"), None);
        assert_eq!(segment_name("init00000.mp4"), None);
    }

    #[test]
    fn part_names() {
        assert_eq!(part_name("seg00012.3.m4s"), Some((12, 3)));
        assert_eq!(part_name("seg00012.m4s"), None);
        assert_eq!(part_name("init00000.mp4"), None);
        assert_eq!(part_name("seg0001x.1.m4s"), None);
    }
}
