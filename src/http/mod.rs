//! HTTP: routes, and the one place where errors become JSON `{code, message}` with a status.

pub mod api;
pub mod media;
pub mod mime;
pub mod pages;
pub mod views;

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::error::AppError;

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
}

fn with_app(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// `scheme://host` of the request.
fn base() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::header::optional::<String>("host").and(warp::header::optional::<String>("x-forwarded-proto")).map(api::base_url)
}

fn reject(e: AppError) -> Rejection {
    warp::reject::custom(e)
}

/// Every route of the service.
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let healthz = warp::path!("healthz").and(warp::get()).map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));
    let time = warp::path!("api" / "time").and(warp::get()).map(|| {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        warp::reply::with_header(now, "cache-control", "no-store")
    });

    #[derive(serde::Deserialize)]
    struct UploadQuery {
        redirect: Option<String>,
        /// A client's own reference for the upload, to find its record while the body is still
        /// being sent (a streamed upload is processing before its response arrives).
        #[serde(rename = "ref")]
        client_ref: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct ListQuery {
        #[serde(rename = "ref")]
        client_ref: Option<String>,
    }
    let upload = warp::path!("api" / "videos")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::query::<UploadQuery>())
        .and(base())
        .and(warp::multipart::form().max_length(None))
        .and_then(|app, len, q: UploadQuery, base, form| async move {
            let redirect = q.redirect.is_some_and(|r| r == "1" || r == "true");
            api::upload(app, len, redirect, q.client_ref, base, form).await.map_err(reject)
        });
    let list = warp::path!("api" / "videos")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(warp::query::<ListQuery>())
        .and(base())
        .and_then(|app, q: ListQuery, base| async move { api::list(app, q.client_ref, base).await.map_err(reject) });
    let get = warp::path!("api" / "videos" / String)
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(base())
        .and_then(|id, app, base| async move { api::get(app, id, base).await.map_err(reject) });
    let events = warp::path!("api" / "videos" / String / "events")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(base())
        .and_then(|id, app, base| async move { api::events(app, id, base).await.map_err(reject) });
    let delete = warp::path!("api" / "videos" / String)
        .and(warp::delete())
        .and(with_app(app.clone()))
        .and_then(|id, app| async move { api::delete(app, id).await.map_err(reject) });
    let play = warp::path("play")
        .and(warp::path::param::<String>())
        .and(warp::path::tail())
        .and(warp::get().map(|| false).or(warp::head().map(|| true)).unify())
        .and(with_app(app.clone()))
        .and(warp::header::optional::<String>("range"))
        .and_then(|token: String, tail: warp::path::Tail, head, app, range| async move {
            media::serve(app, token, tail.as_str().to_string(), range, head).await.map_err(reject)
        });

    let a = app.clone();
    let config = warp::path!("api" / "config").and(warp::get()).map(move || {
        warp::reply::json(&serde_json::json!({
            "max_upload_bytes": a.config.max_upload_bytes,
            "segment_seconds": a.ladder.segment_seconds,
        }))
    });
    let api = healthz.or(time).or(config).or(upload).or(list).or(events).or(get).or(delete).or(play);
    api.or(pages::routes(app)).recover(recover).with(warp::trace::request())
}

/// Maps every rejection to a JSON error with the right status.
async fn recover(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, code, message) = if let Some(e) = r.find::<AppError>() {
        (e.status(), e.code(), e.to_string())
    } else if r.is_not_found() {
        (StatusCode::NOT_FOUND, "not_found", "no such page or resource".to_string())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed".to_string())
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the upload is too large".to_string())
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "expected multipart/form-data with a `file` field".to_string())
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    } else {
        (StatusCode::BAD_REQUEST, "bad_request", format!("{r:?}"))
    };
    let body = warp::reply::json(&ErrorBody { code, message });
    let mut response = warp::reply::with_status(body, status).into_response();
    if let Some(AppError::RangeNotSatisfiable(len)) = r.find::<AppError>() {
        // RFC 9110 §15.5.17: a 416 tells the client the current length.
        if let Ok(v) = warp::http::HeaderValue::from_str(&format!("bytes */{len}")) {
            response.headers_mut().insert(warp::http::header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}
