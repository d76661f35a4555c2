//! JSON API handlers: request → call → response. Uploads are received by `crate::upload`, jobs
//! run in `crate::jobs`; these functions only parse, call and answer.

use std::convert::Infallible;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tracing::info;
use warp::http::StatusCode;

use super::session::RequestOrigin;
use super::views::{view, VideoView};
use super::ErrorBody;
use crate::app::{remove_dir_off_executor, App};
use crate::auth::accounts::Caller;
use crate::error::AppError;
use crate::model::{VideoRecord, Visibility};

/// A client's own reference for an upload, if it is a sane one.
fn client_ref(r: Option<String>) -> Option<String> {
    r.filter(|r| !r.is_empty() && r.len() <= 64 && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// `POST /api/videos` query.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// `1` or `true`: answer `303 See Other` to the watch page (the form without JavaScript).
    pub redirect: Option<String>,
    /// A client's own reference for the upload (1–64 letters, digits or `-`), to find its record
    /// while the body is still being sent (a streamed upload is processing before its response
    /// arrives).
    #[serde(rename = "ref")]
    pub client_ref: Option<String>,
}

/// What an upload request says besides its body.
pub struct Upload {
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
    /// Answer with a redirect to the watch page (the no-JavaScript form).
    pub redirect: bool,
    pub reference: Option<String>,
}

#[utoipa::path(post, path = "/api/videos", tag = "videos", params(UploadQuery),
    request_body(content = super::openapi::UploadForm, content_type = "multipart/form-data",
        description = "The video in a `file` part (after `title` and `visibility`, if any). Any container and codec FFmpeg or GStreamer reads."),
    responses(
        (status = 201, description = "Received; transcoding runs (or has begun while the body arrived)", body = VideoView),
        (status = 303, description = "`?redirect=1`: to the watch page"),
        (status = 400, description = "`bad_request`: a malformed form or field", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token without the `upload` scope, or a cross-site request", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stopped arriving", body = ErrorBody),
        (status = 413, description = "`payload_too_large` / `over_quota`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type` (not multipart/form-data) / `unsupported_input` (not a video)", body = ErrorBody),
        (status = 429, description = "`queue_full` / `too_many_uploads`", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
        (status = 507, description = "`insufficient_storage` / `quota_exceeded`", body = ErrorBody),
    ),
    security(("token" = ["upload"]), ("session" = [])))]
/// `POST /api/videos`: a logged-in user (session from this site, or a token with `upload`).
pub async fn upload<S, B>(
    app: Arc<App>,
    caller: Result<Caller, AppError>,
    origin: RequestOrigin,
    req: Upload,
    base: String,
    body: S,
) -> Result<warp::reply::Response, AppError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: bytes::Buf,
{
    let (caller, owner) = match caller {
        Ok(c) => {
            let owner = origin.check(&c, &app).and_then(|()| c.uploader().cloned());
            (c, owner)
        }
        Err(e) => (Caller::Anonymous, Err(e)),
    };
    let rec = crate::upload::multipart::receive_request(
        app.clone(),
        owner,
        req.content_type.as_deref(),
        req.content_length,
        body,
        client_ref(req.reference),
    )
    .await?;
    if req.redirect {
        let mut r = warp::reply::Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::SEE_OTHER;
        let location = warp::http::HeaderValue::from_str(&format!("/watch/{}", rec.id)).map_err(|e| AppError::Internal(e.to_string()))?;
        r.headers_mut().insert(warp::http::header::LOCATION, location);
        return Ok(r);
    }
    let view = match find_view(&app, &caller, &rec.id, &base).await? {
        Some(v) => v,
        None => view(&app, rec, None, &base),
    };
    Ok(json_response(&view, StatusCode::CREATED))
}

/// A JSON body with a status.
pub fn json_response<T: serde::Serialize>(v: &T, status: StatusCode) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

/// `GET /api/videos` query.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// A client's own upload reference (see `POST /api/videos?ref=`).
    #[serde(rename = "ref")]
    pub client_ref: Option<String>,
    /// Videos per page (1–200, default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Where a page of the list ends: the creation time (ns) and id of its last video.
fn cursor_of(v: &VideoRecord) -> String {
    format!("{}.{}", v.created_at.timestamp_nanos_opt().unwrap_or(0), v.id)
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (t, id) = c.split_once('.')?;
    Some((t.parse().ok()?, id.to_string()))
}

#[utoipa::path(get, path = "/api/videos", tag = "videos", params(ListQuery),
    responses(
        (status = 200, description = "A page of videos, newest first", body = VideoList),
        (status = 400, description = "`bad_request`: an invalid cursor or query", body = ErrorBody),
        (status = 401, description = "`unauthorized`: a bad token or session", body = ErrorBody),
    ),
    security((), ("token" = []), ("session" = [])))]
/// `GET /api/videos`: public videos and the caller's own (all for admins), newest first, a page at
/// a time. Playback tokens are minted only for videos the caller may watch (these all are).
pub async fn list(app: Arc<App>, caller: Caller, q: ListQuery, base: String) -> Result<warp::reply::Response, AppError> {
    let after = match q.cursor.as_deref() {
        Some(c) => Some(parse_cursor(c).ok_or_else(|| AppError::BadRequest("invalid cursor".into()))?),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let mut recs = app.store.run(|s| s.with_positions(None)).await?;
    recs.retain(|(v, _)| caller.lists(v) && q.client_ref.as_ref().is_none_or(|r| v.client_ref.as_ref() == Some(r)));
    let key = |v: &VideoRecord| (v.created_at.timestamp_nanos_opt().unwrap_or(0), v.id.clone());
    recs.sort_by_key(|(v, _)| std::cmp::Reverse(key(v)));
    if let Some(after) = after {
        recs.retain(|(v, _)| key(v) < after);
    }
    let next_cursor = (recs.len() > limit).then(|| cursor_of(&recs[limit - 1].0));
    let videos: Vec<VideoView> = recs.into_iter().take(limit).map(|(r, pos)| view(&app, r, pos, &base)).collect();
    Ok(json_response(&VideoList { videos, next_cursor }, StatusCode::OK))
}

/// A page of `GET /api/videos`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct VideoList {
    pub videos: Vec<VideoView>,
    /// The `cursor` of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// A video the caller may watch, as a view; `None` when it does not exist or is hidden from them.
async fn find_view(app: &App, caller: &Caller, id: &str, base: &str) -> Result<Option<VideoView>, AppError> {
    let id2 = id.to_string();
    let found = app.store.run(move |s| s.with_positions(Some(&id2))).await?.pop();
    Ok(found.filter(|(rec, _)| caller.may_watch(rec)).map(|(rec, pos)| view(app, rec, pos, base)))
}

async fn get_view(app: &App, caller: &Caller, id: &str, base: &str) -> Result<VideoView, AppError> {
    find_view(app, caller, id, base).await?.ok_or_else(|| AppError::NotFound(format!("no video {id}")))
}

#[utoipa::path(get, path = "/api/videos/{id}", tag = "videos", params(super::openapi::VideoId),
    responses(
        (status = 200, description = "The video, with fresh playback URLs once it is playable", body = VideoView),
        (status = 401, description = "`unauthorized`: a bad token or session", body = ErrorBody),
        (status = 404, description = "`not_found`: no such video, or one the caller may not watch", body = ErrorBody),
    ),
    security((), ("token" = []), ("session" = [])))]
/// `GET /api/videos/{id}`.
pub async fn get(app: Arc<App>, caller: Caller, id: String, base: String) -> Result<warp::reply::Response, AppError> {
    Ok(json_response(&get_view(&app, &caller, &id, &base).await?, StatusCode::OK))
}

/// A video the caller may change (owner or admin, `manage` for tokens), or why not.
async fn managed(app: &App, caller: &Caller, origin: &RequestOrigin, id: &str) -> Result<VideoRecord, AppError> {
    origin.check(caller, app)?;
    let id2 = id.to_string();
    let rec = app.store.run(move |s| s.get(&id2)).await?.ok_or_else(|| AppError::NotFound(format!("no video {id}")))?;
    caller.check_manage(&rec)?;
    Ok(rec)
}

/// `PATCH /api/videos/{id}` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub title: Option<String>,
    pub visibility: Option<Visibility>,
}

#[utoipa::path(patch, path = "/api/videos/{id}", tag = "videos", params(super::openapi::VideoId), request_body = Edit,
    responses(
        (status = 200, description = "The changed video", body = VideoView),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field or an empty title", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the owner or an admin, a token without `manage`, or a cross-site request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
/// `PATCH /api/videos/{id}`: title and visibility, by the owner or an admin.
pub async fn edit(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    id: String,
    e: Result<Edit, AppError>,
    base: String,
) -> Result<warp::reply::Response, AppError> {
    managed(&app, &caller, &origin, &id).await?;
    let e = e?;
    let mut meta = crate::upload::UploadMeta::default();
    if let Some(t) = &e.title {
        meta.set_title(t);
        if meta.title.is_none() {
            return Err(AppError::BadRequest("a title cannot be empty".into()));
        }
    }
    let id2 = id.clone();
    let rec = app
        .store
        .run(move |s| {
            s.update(&id2, |v| {
                if let Some(t) = &meta.title {
                    v.title = t.clone();
                }
                if let Some(vis) = e.visibility {
                    v.visibility = vis;
                }
            })
        })
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no video {id}")))?;
    app.store.flush().await?;
    app.notify(&rec);
    info!(video_id = %id, "video edited");
    Ok(json_response(&get_view(&app, &caller, &id, &base).await?, StatusCode::OK))
}

#[utoipa::path(delete, path = "/api/videos/{id}", tag = "videos", params(super::openapi::VideoId),
    responses(
        (status = 204, description = "Deleted, with its files; a running job is cancelled"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the owner or an admin, a token without `manage`, or a cross-site request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
/// `DELETE /api/videos/{id}`: cancels a running job and removes record, key, source and output.
pub async fn delete(app: Arc<App>, caller: Caller, origin: RequestOrigin, id: String) -> Result<warp::reply::Response, AppError> {
    let rec = managed(&app, &caller, &origin, &id).await?;
    let id2 = id.clone();
    if !app.store.run(move |s| s.delete(&id2)).await? {
        return Err(AppError::NotFound(format!("no video {id}")));
    }
    crate::webhooks::emit(&app, "video.deleted", &rec).await;
    // From now on no media of it is served, whatever the removal of its files below does.
    app.deleted.lock().map_err(|_| AppError::Internal("lock poisoned".into()))?.insert(id.clone());
    app.segments.forget(&id);
    app.store.flush().await?;
    crate::jobs::cancel(&app, &id);
    remove_dir_off_executor(app.upload_dir(&id)).await;
    remove_dir_off_executor(app.media_dir(&id)).await;
    app.storage.remove_video(&id).await;
    info!(video_id = %id, "video deleted");
    let mut r = warp::reply::Response::new(Vec::new().into());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

#[utoipa::path(get, path = "/api/videos/{id}/events", tag = "videos", params(super::openapi::VideoId),
    responses(
        (status = 200, description = "Server-sent events named `video`, each a video as `GET /api/videos/{id}` shows it: now, then on every change until it is ready or failed",
            content_type = "text/event-stream", body = super::openapi::VideoEvent),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = "`too_many_subscribers`: too many open streams", body = ErrorBody),
    ),
    security((), ("token" = []), ("session" = [])))]
/// `GET /api/videos/{id}/events`: the record now, then on every change, until it is final.
/// Open streams are capped in all and per client address.
pub async fn events(
    app: Arc<App>,
    caller: Caller,
    id: String,
    base: String,
    client: Option<std::net::IpAddr>,
) -> Result<warp::reply::Response, AppError> {
    use warp::Reply;
    let updates = app.events.subscribe();
    let first = get_view(&app, &caller, &id, &base).await?;
    let subscription = app.subscribers.subscribe(client)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<VideoView>(16);
    tokio::spawn(async move {
        forward_updates(app, caller, id, base, first, updates, tx).await;
        drop(subscription);
    });
    let events = sse_events(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response())
}

/// Sends the first view, then a view per change of the record, until it is final or the client
/// goes away (a send error).
async fn forward_updates(
    app: Arc<App>,
    caller: Caller,
    id: String,
    base: String,
    first: VideoView,
    mut updates: tokio::sync::broadcast::Receiver<VideoRecord>,
    tx: tokio::sync::mpsc::Sender<VideoView>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut fin = first.video.status.is_final();
    if tx.send(first).await.is_err() {
        return;
    }
    while !fin {
        // A client that went away frees its place at once, not at the next change of the record.
        let update = tokio::select! {
            _ = tx.closed() => return,
            u = updates.recv() => u,
        };
        let next = match update {
            // A video made private while watched stops being sent to those who may no longer see it.
            Ok(rec) if rec.id == id && !caller.may_watch(&rec) => None,
            Ok(rec) if rec.id == id => {
                let pos = app.store.run(|s| s.queue_positions()).await.unwrap_or_default().get(&id).copied();
                Some(view(&app, rec, pos, &base))
            }
            Ok(_) => continue,
            // Missed updates: send the current state instead.
            Err(RecvError::Lagged(_)) => get_view(&app, &caller, &id, &base).await.ok(),
            Err(RecvError::Closed) => None,
        };
        let Some(v) = next else { return };
        fin = v.video.status.is_final();
        if tx.send(v).await.is_err() {
            return;
        }
    }
}

fn sse_events(
    s: impl Stream<Item = VideoView> + Send + 'static,
) -> impl Stream<Item = Result<warp::sse::Event, Infallible>> + Send + 'static {
    s.map(|v| {
        Ok(warp::sse::Event::default()
            .event("video")
            .json_data(&v)
            .unwrap_or_else(|_| warp::sse::Event::default().event("error").data("serialization failed")))
    })
}
