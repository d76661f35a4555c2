//! `/api/live`: live streams (a stream key publishers send to) with the access rules of videos.
//! The key is shown to the stream's owner (and admins) only. The ingest is `crate::live`.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::ErrorBody;
use super::{get_or_head, json_body, reject, session, with_app};
use crate::app::App;
use crate::auth::accounts::Caller;
use crate::config::Config;
use crate::error::AppError;
use crate::http::session::RequestOrigin;
use crate::model::{ErrorInfo, LiveStatus, LiveStream, Visibility, MAX_TITLE};

/// Streams one user may have.
pub const MAX_PER_USER: usize = 20;

/// `POST /api/live` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLive {
    /// The title of the stream and of each broadcast's video (default "Live stream").
    pub title: Option<String>,
    /// Who may watch its broadcasts (default: `CASCADE_DEFAULT_VISIBILITY`).
    pub visibility: Option<Visibility>,
    /// Seconds a broadcast waits for its publisher to come back with the same key before it ends
    /// as a video (0–3600; default: the server's `CASCADE_LIVE_RECONNECT_S`).
    #[schema(minimum = 0, maximum = 3600)]
    pub reconnect_window_s: Option<u32>,
    /// The tallest rendition its broadcasts get, as the short side in pixels (e.g. 720: no 1080p
    /// rung); 0 or absent: the whole ladder. At least the ladder's smallest rung, at most 4320.
    #[schema(minimum = 0, maximum = 4320)]
    pub max_height: Option<u32>,
    /// Low-latency HLS for its broadcasts (parts of 1/3 s with blocking playlist reload, played
    /// 1–2 s behind the publisher by hls.js in low-latency mode); default true.
    pub low_latency: Option<bool>,
}

/// `PATCH /api/live/{id}` body. Settings apply from the stream's next broadcast.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveEdit {
    pub title: Option<String>,
    pub visibility: Option<Visibility>,
    /// As in `NewLive`.
    #[schema(minimum = 0, maximum = 3600)]
    pub reconnect_window_s: Option<u32>,
    /// As in `NewLive`; 0 removes the cap.
    #[schema(minimum = 0, maximum = 4320)]
    pub max_height: Option<u32>,
    /// As in `NewLive`.
    pub low_latency: Option<bool>,
}

/// The largest `max_height` (8K's short side).
const MAX_HEIGHT: u32 = 4320;

/// A reconnect window as asked for, checked.
fn reconnect_window(s: u32) -> Result<u32, AppError> {
    if s > crate::model::MAX_RECONNECT_WINDOW_S {
        return Err(AppError::BadRequest(format!("reconnect_window_s must be 0–{}", crate::model::MAX_RECONNECT_WINDOW_S)));
    }
    Ok(s)
}

/// A rendition cap as asked for, checked (0: none).
fn max_height(app: &App, h: u32) -> Result<Option<u32>, AppError> {
    let smallest = app.ladder.smallest_rung_height();
    match h {
        0 => Ok(None),
        h if (smallest..=MAX_HEIGHT).contains(&h) => Ok(Some(h)),
        _ => Err(AppError::BadRequest(format!(
            "max_height must be 0 (no cap) or {smallest}–{MAX_HEIGHT} (the ladder's smallest rung is {smallest})"
        ))),
    }
}

/// A live stream as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LiveView {
    pub id: String,
    pub title: String,
    pub visibility: Visibility,
    pub status: LiveStatus,
    /// The stream key (its owner's view only, not even admins'): the stream name in OBS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The server URL for OBS (`rtmp://HOST:PORT/live`; the key is the stream name); absent when
    /// the RTMP listener is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_url: Option<String>,
    /// The SRT URL with the key as `streamid` (its owner's view only; MPEG-TS, e.g. `ffmpeg -f
    /// mpegts`); absent when the SRT listener is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_url: Option<String>,
    /// The broadcast on air now, else the last one.
    pub video_id: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Seconds of media the live ladder encodes per second (× real time, over the last 5 s) while
    /// a broadcast is on air; about 1.0 when it keeps up with the publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_speed: Option<f64>,
    /// Renditions dropped from the current (or last) broadcast, tallest first: when the live
    /// ladder cannot keep up with the publisher for 10 s, its tallest rung is stopped for the rest
    /// of the broadcast (and left out of its manifests and of the video) rather than falling
    /// further behind.
    pub dropped_renditions: Vec<String>,
    /// Why the last broadcast failed or its publisher was refused (owner and admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorInfo>,
    /// Seconds a broadcast waits for its publisher to come back (the stream's setting, else the
    /// server's default). Changes apply from the next broadcast.
    pub reconnect_window_s: u64,
    /// The tallest rendition its broadcasts get (short side in pixels); null: the whole ladder.
    pub max_height: Option<u32>,
    /// Whether its broadcasts are low-latency HLS (see `NewLive`).
    pub low_latency: bool,
}

/// The host publishers should connect to: `CASCADE_PUBLIC_URL`'s host, else the listener's own
/// address when it is a specific one, else `localhost`.
fn ingest_host(config: &Config, bound: SocketAddr) -> String {
    let from_public = config.public_url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()).and_then(|u| u.host_str().map(str::to_string));
    from_public.unwrap_or_else(|| {
        let ip = bound.ip();
        match ip {
            _ if ip.is_unspecified() => "localhost".to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        }
    })
}

/// The view of a stream; `owner_view` adds its key (and SRT URL), `manager_view` its last error.
pub fn view(
    l: &LiveStream,
    owner_view: bool,
    manager_view: bool,
    config: &Config,
    rtmp: Option<SocketAddr>,
    srt: Option<SocketAddr>,
) -> LiveView {
    LiveView {
        id: l.id.clone(),
        title: l.title.clone(),
        visibility: l.visibility,
        status: l.status,
        key: owner_view.then(|| l.key.clone()),
        rtmp_url: rtmp.map(|a| format!("rtmp://{}:{}/{}", ingest_host(config, a), a.port(), crate::live::rtmp::APP_NAME)),
        srt_url: srt.filter(|_| owner_view).map(|a| format!("srt://{}:{}?streamid={}", ingest_host(config, a), a.port(), l.key)),
        video_id: l.video_id.clone(),
        created_at: l.created_at,
        updated_at: l.updated_at,
        encoder_speed: l.encoder_speed,
        dropped_renditions: l.dropped_renditions.clone(),
        last_error: if manager_view { l.last_error.clone() } else { None },
        reconnect_window_s: l.reconnect_window_s.map_or(config.live_reconnect.as_secs(), u64::from),
        max_height: l.max_height,
        low_latency: l.low_latency.unwrap_or(true),
    }
}

fn json(v: &impl Serialize, status: StatusCode) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

fn show(app: &App, caller: &Caller, l: &LiveStream) -> LiveView {
    view(l, caller.owns_live(l), caller.manages_live(l), &app.config, app.live.rtmp_addr(), app.live.srt_addr())
}

/// A title as kept: trimmed, at most `MAX_TITLE` characters, not empty.
fn title(raw: &str) -> Result<String, AppError> {
    let t: String = raw.trim().chars().filter(|c| !c.is_control()).take(MAX_TITLE).collect();
    if t.is_empty() {
        return Err(AppError::BadRequest("a title cannot be empty".into()));
    }
    Ok(t)
}

/// A stream the caller may see; others are "not found".
async fn visible(app: &App, caller: &Caller, id: &str) -> Result<LiveStream, AppError> {
    let id2 = id.to_string();
    let l = app.store.run(move |s| s.live(&id2)).await?;
    l.filter(|l| caller.may_watch_live(l)).ok_or_else(|| AppError::NotFound(format!("no live stream {id}")))
}

/// A stream the caller may change.
async fn managed(app: &App, caller: &Caller, origin: &RequestOrigin, id: &str) -> Result<LiveStream, AppError> {
    origin.check(caller, app)?;
    let l = visible(app, caller, id).await?;
    caller.check_manage_live(&l)?;
    Ok(l)
}

/// `POST /api/live`: a new stream with a fresh key.
#[utoipa::path(post, path = "/api/live", tag = "live", request_body = NewLive,
    responses((status = 201, description = "The stream, with its key", body = LiveView),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field, an empty title or a setting out of range", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token without `upload`, or a cross-site request", body = ErrorBody),
        (status = 409, description = "`conflict`: too many streams", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
    ),
    security(("token" = ["upload"]), ("session" = [])))]
pub async fn create(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    form: Result<NewLive, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    let user = caller.uploader()?.clone();
    let form = form?;
    let title = match &form.title {
        Some(t) => title(t)?,
        None => "Live stream".to_string(),
    };
    let mut l =
        LiveStream::new(&uuid::Uuid::new_v4().to_string(), &user.id, title, form.visibility.unwrap_or(app.config.default_visibility));
    l.reconnect_window_s = form.reconnect_window_s.map(reconnect_window).transpose()?;
    l.max_height = form.max_height.map(|h| max_height(&app, h)).transpose()?.flatten();
    l.low_latency = form.low_latency;
    let l2 = l.clone();
    app.store
        .run(move |s| {
            if s.lives(Some(&l2.owner))?.len() >= MAX_PER_USER {
                return Err(AppError::Conflict(format!("at most {MAX_PER_USER} live streams per user: remove one first")));
            }
            s.add_live(&l2)?;
            s.flush()?;
            Ok(())
        })
        .await?;
    app.live.set_key(&l.id, &l.key);
    tracing::info!(stream_id = %l.id, "live stream created");
    Ok(json(&show(&app, &caller, &l), StatusCode::CREATED))
}

/// `GET /api/live`: the caller's streams (an admin's: everyone's).
#[utoipa::path(get, path = "/api/live", tag = "live",
    responses((status = 200, description = "The streams, oldest first", body = Vec<LiveView>),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])))]
pub async fn list(app: Arc<App>, caller: Caller) -> Result<warp::reply::Response, AppError> {
    let user = caller.user().ok_or_else(|| AppError::Unauthorized("log in or send an API token to list your live streams".into()))?.clone();
    let owner = (user.role != crate::model::Role::Admin).then_some(user.id);
    let list = app.store.run(move |s| s.lives(owner.as_deref())).await?;
    Ok(json(&list.iter().map(|l| show(&app, &caller, l)).collect::<Vec<_>>(), StatusCode::OK))
}

/// `GET /api/live/{id}`: anyone who may watch it; the key for its owner only.
#[utoipa::path(get, path = "/api/live/{id}", tag = "live", params(("id" = String, Path, description = "The stream's id")),
    responses((status = 200, description = "The stream", body = LiveView),
        (status = 404, description = "`not_found`: no such stream, or a private one of someone else", body = ErrorBody),
    ),
    security((), ("token" = []), ("session" = [])))]
pub async fn get(app: Arc<App>, caller: Caller, id: String) -> Result<warp::reply::Response, AppError> {
    let l = visible(&app, &caller, &id).await?;
    Ok(json(&show(&app, &caller, &l), StatusCode::OK))
}

/// `PATCH /api/live/{id}`: title, visibility and settings (for later broadcasts).
#[utoipa::path(patch, path = "/api/live/{id}", tag = "live", params(("id" = String, Path, description = "The stream's id")), request_body = LiveEdit,
    responses((status = 200, description = "The changed stream", body = LiveView),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field, an empty title or a setting out of range", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the owner or an admin, a token without `manage`, or a cross-site request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
pub async fn edit(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    id: String,
    e: Result<LiveEdit, AppError>,
) -> Result<warp::reply::Response, AppError> {
    managed(&app, &caller, &origin, &id).await?;
    let e = e?;
    let new_title = e.title.as_deref().map(title).transpose()?;
    let window = e.reconnect_window_s.map(reconnect_window).transpose()?;
    let cap = e.max_height.map(|h| max_height(&app, h)).transpose()?;
    let id2 = id.clone();
    let l = app
        .store
        .run(move |s| {
            let l = s.update_live(&id2, |l| {
                if let Some(t) = &new_title {
                    l.title = t.clone();
                }
                if let Some(v) = e.visibility {
                    l.visibility = v;
                }
                if window.is_some() {
                    l.reconnect_window_s = window;
                }
                if let Some(cap) = cap {
                    l.max_height = cap;
                }
                if e.low_latency.is_some() {
                    l.low_latency = e.low_latency;
                }
            })?;
            s.flush()?;
            Ok::<_, AppError>(l)
        })
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no live stream {id}")))?;
    Ok(json(&show(&app, &caller, &l), StatusCode::OK))
}

/// `DELETE /api/live/{id}`: removes the stream and its key; a broadcast on air ends (its video
/// is kept, as any finished broadcast).
#[utoipa::path(delete, path = "/api/live/{id}", tag = "live", params(("id" = String, Path, description = "The stream's id")),
    responses((status = 204, description = "Removed; its publisher, if any, is disconnected"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the owner or an admin, a token without `manage`, or a cross-site request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
pub async fn delete(app: Arc<App>, caller: Caller, origin: RequestOrigin, id: String) -> Result<warp::reply::Response, AppError> {
    let l = managed(&app, &caller, &origin, &id).await?;
    app.live.forget(&l.id);
    let id2 = l.id.clone();
    app.store.run(move |s| s.delete_live(&id2).and_then(|_| s.flush())).await?;
    if app.live.kick(&l.id) {
        tracing::info!(stream_id = %l.id, "live stream deleted while on air: its publisher is disconnected");
    }
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// `POST /api/live/{id}/key`: a new stream key; the old one stops working at once (a publisher
/// on air stays on air).
#[utoipa::path(post, path = "/api/live/{id}/key", tag = "live", params(("id" = String, Path, description = "The stream's id")),
    responses((status = 200, description = "The stream with its new key", body = LiveView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the owner or an admin, a token without `manage`, or a cross-site request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
pub async fn rotate(app: Arc<App>, caller: Caller, origin: RequestOrigin, id: String) -> Result<warp::reply::Response, AppError> {
    managed(&app, &caller, &origin, &id).await?;
    let key = crate::model::new_stream_key();
    let (id2, k2) = (id.clone(), key.clone());
    let l = app
        .store
        .run(move |s| {
            let l = s.update_live(&id2, |l| l.key = k2.clone())?;
            s.flush()?;
            Ok::<_, AppError>(l)
        })
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no live stream {id}")))?;
    app.live.set_key(&l.id, &key);
    tracing::info!(stream_id = %l.id, "stream key rotated");
    Ok(json(&show(&app, &caller, &l), StatusCode::OK))
}

/// The routes.
pub fn routes(app: &Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let who = || with_app(app.clone()).and(session::credentials());
    let create = warp::path!("api" / "live").and(warp::post()).and(who()).and(session::request_origin()).and(json_body()).and_then(
        |app: Arc<App>, creds, origin, form| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            create(app, caller, origin, form).await.map_err(reject)
        },
    );
    let list = warp::path!("api" / "live").and(get_or_head()).and(who()).and_then(|app: Arc<App>, creds| async move {
        let caller = session::identify(&app, creds).await.map_err(reject)?;
        list(app, caller).await.map_err(reject)
    });
    let one = warp::path!("api" / "live" / String).and(get_or_head()).and(who()).and_then(|id, app: Arc<App>, creds| async move {
        let caller = session::identify(&app, creds).await.map_err(reject)?;
        get(app, caller, id).await.map_err(reject)
    });
    let patch =
        warp::path!("api" / "live" / String).and(warp::patch()).and(who()).and(session::request_origin()).and(json_body()).and_then(
            |id, app: Arc<App>, creds, origin, e| async move {
                let caller = session::identify(&app, creds).await.map_err(reject)?;
                edit(app, caller, origin, id, e).await.map_err(reject)
            },
        );
    let remove = warp::path!("api" / "live" / String).and(warp::delete()).and(who()).and(session::request_origin()).and_then(
        |id, app: Arc<App>, creds, origin| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            delete(app, caller, origin, id).await.map_err(reject)
        },
    );
    let key = warp::path!("api" / "live" / String / "key").and(warp::post()).and(who()).and(session::request_origin()).and_then(
        |id, app: Arc<App>, creds, origin| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            rotate(app, caller, origin, id).await.map_err(reject)
        },
    );
    let bearer = || {
        super::header_text("authorization").map(|h: Option<String>| {
            h.and_then(|h| {
                let (scheme, value) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| value.trim().to_string())
            })
        })
    };
    let whip = warp::path!("api" / "live" / String / "whip")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(bearer())
        .and(super::header_text("content-type"))
        .and(warp::body::stream())
        .and_then(|id, app: Arc<App>, key, content_type, body| async move {
            let offer = tokio::time::timeout(std::time::Duration::from_secs(30), super::read_limited(body, crate::live::whip::MAX_OFFER))
                .await
                .map_err(|_| reject(AppError::RequestTimeout("the SDP offer did not arrive within 30 s".into())))?
                .map_err(reject)?;
            crate::live::whip::offer(app, id, key, content_type, offer).await.map_err(reject)
        });
    let whip_end = warp::path!("api" / "live" / String / "whip" / String)
        .and(warp::delete())
        .and(with_app(app.clone()))
        .and(bearer())
        .and_then(|id, session, app: Arc<App>, key| async move { crate::live::whip::end(app, id, session, key).await.map_err(reject) });
    create.or(list).or(key).or(whip).or(whip_end).or(one).or(patch).or(remove)
}

/// WHIP (RFC 9725): go live with WebRTC, from Cascade's Go live page or any WHIP client.
#[utoipa::path(post, path = "/api/live/{id}/whip", tag = "live", params(("id" = String, Path, description = "The stream's id")),
    request_body(content = String, content_type = "application/sdp", description = "The SDP offer (no trickle ICE): H.264 (packetization-mode 1) or VP8 video, Opus audio"),
    responses((status = 201, description = "The SDP answer; `Location` is the session, to DELETE to end the broadcast", body = String, content_type = "application/sdp"),
        (status = 400, description = "`bad_request`: a malformed SDP offer", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no stream key (send it as `Authorization: Bearer KEY`)", body = ErrorBody),
        (status = 403, description = "`forbidden`: not this stream's key", body = ErrorBody),
        (status = 409, description = "`conflict`: the stream is already live", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: an offer over 64 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/sdp`", body = ErrorBody),
        (status = 422, description = "`unprocessable`: no video Cascade can take (H.264 packetization-mode 1, or VP8)", body = ErrorBody),
        (status = 503, description = "`unavailable`: no live slot is free", body = ErrorBody)),
    security(()))]
#[allow(dead_code)]
pub(super) fn whip_offer() {}

/// Ends a WHIP broadcast (it becomes a video).
#[utoipa::path(delete, path = "/api/live/{id}/whip/{session}", tag = "live",
    params(("id" = String, Path, description = "The stream's id"), ("session" = String, Path, description = "The session, from the offer's `Location`")),
    responses((status = 200, description = "The broadcast ends"),
        (status = 401, description = "`unauthorized`: no stream key", body = ErrorBody),
        (status = 403, description = "`forbidden`: not this stream's key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such session", body = ErrorBody)),
    security(()))]
#[allow(dead_code)]
pub(super) fn whip_end() {}
