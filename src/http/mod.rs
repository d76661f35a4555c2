//! HTTP: routes, and the one place where errors become JSON `{code, message}` with a status.

pub mod account;
pub mod api;
pub mod cors;
pub mod embed;
pub mod headers;
pub mod limits;
pub mod live;
pub mod media;
pub mod metrics;
pub mod mime;
pub mod openapi;
pub mod pages;
pub mod server;
pub mod session;
pub mod tus;
pub mod views;
pub mod webhooks;

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::error::AppError;

/// Every error answer: a stable machine-readable `code` and a message for people.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code; each response of the description names the codes it can carry.
    #[schema(example = "not_found")]
    pub code: &'static str,
    pub message: String,
}

fn with_app(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// The start of playback URLs: `CASCADE_PUBLIC_URL`, or empty (relative URLs). Never the
/// request's `Host` header, which the client chooses.
fn base(app: &Arc<App>) -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    let base = app.config.public_url.clone().unwrap_or_default();
    warp::any().map(move || base.clone())
}

/// `GET`, and `HEAD` wherever `GET` works (hyper sends no body for `HEAD`).
pub fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// A header as text, when present. A value that is not visible ASCII is kept as `"\u{FFFD}"` (which
/// matches nothing: no origin, credential or range is ever that) instead of rejecting the request,
/// which warp would report as another route's `405`.
pub fn header_text(name: &'static str) -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::optional::<String>(name).or(warp::any().map(|| Some("\u{FFFD}".to_string()))).unify()
}

/// The peer address of the connection, when the server put it into the request.
fn client_ip() -> impl Filter<Extract = (Option<std::net::IpAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<limits::ClientAddr>().map(|a: Option<limits::ClientAddr>| a.map(|a| a.0.ip()))
}

/// Largest JSON body of the API.
const MAX_JSON: usize = 16 * 1024;

/// A small JSON body (≤ 16 KiB, within 30 s), parsed by the handler: malformed JSON is a `400`,
/// and a larger body a `413`, answered after the caller's credentials were checked, never a
/// routing error. A body without `Content-Length` (chunked, or none at all) is read the same way.
fn json_body<T: serde::de::DeserializeOwned + Send>() -> impl Filter<Extract = (Result<T, AppError>,), Error = Rejection> + Clone {
    warp::body::stream().then(|body| async move {
        let bytes = tokio::time::timeout(std::time::Duration::from_secs(30), read_limited(body, MAX_JSON))
            .await
            .map_err(|_| AppError::RequestTimeout("the JSON body did not arrive within 30 s".into()))??;
        serde_json::from_slice::<T>(&bytes).map_err(|e| AppError::BadRequest(format!("invalid JSON body: {e}")))
    })
}

/// A whole body of at most `limit` bytes.
pub(crate) async fn read_limited<S, B>(body: S, limit: usize) -> Result<bytes::Bytes, AppError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut all = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| AppError::BadRequest(format!("the body could not be read: {e}")))?;
        if all.len() + chunk.remaining() > limit {
            return Err(AppError::BodyTooLarge { limit: limit as u64 });
        }
        while chunk.has_remaining() {
            let n = chunk.chunk().len();
            all.extend_from_slice(chunk.chunk());
            chunk.advance(n);
        }
    }
    Ok(all.freeze())
}

/// The query string, parsed by the handler: a malformed one is a `400` answered after the
/// caller's credentials were checked, never a routing error (which warp would report as another
/// route's `405`).
fn query<T: serde::de::DeserializeOwned + Send>() -> impl Filter<Extract = (Result<T, AppError>,), Error = Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|q: String| serde_urlencoded::from_str::<T>(&q).map_err(|e| AppError::BadRequest(format!("invalid query: {e}"))))
}

fn reject(e: AppError) -> Rejection {
    warp::reject::custom(e)
}

/// Every route of the service.
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let healthz = warp::path!("healthz").and(get_or_head()).map(|| warp::reply::json(&openapi::Health { status: "ok" }));
    let origin = || header_text("origin");
    let cors = app.config.cors_origins.clone();
    let time = warp::path!("api" / "time").and(get_or_head()).and(origin()).map(move |origin: Option<String>| {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        cors::apply(&cors, origin.as_deref(), warp::reply::with_header(now, "cache-control", "no-store"))
    });

    let upload = warp::path!("api" / "videos")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(session::credentials())
        .and(session::request_origin())
        .and(warp::header::optional::<u64>("content-length"))
        .and(query::<api::UploadQuery>())
        .and(base(&app))
        // Any content type, so that a wrong one gets a 415 rather than a routing error.
        .and(header_text("content-type"))
        .and(warp::body::stream())
        .and_then(|app: Arc<App>, creds, origin, len, q: Result<api::UploadQuery, AppError>, base, content_type: Option<String>, body| async move {
            let (q, caller) = match q {
                Ok(q) => (q, session::identify(&app, creds).await),
                Err(e) => (Default::default(), Err(e)),
            };
            let redirect = q.redirect.is_some_and(|r| r == "1" || r == "true");
            let upload = api::Upload { content_length: len, content_type, redirect, reference: q.client_ref };
            // Even a refused caller's body goes through the upload path, which answers after
            // reading the rest of a small body.
            api::upload(app, caller, origin, upload, base, body).await.map_err(reject)
        });
    let list = warp::path!("api" / "videos")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .and(session::credentials())
        .and(query::<api::ListQuery>())
        .and(base(&app))
        .and_then(|app: Arc<App>, creds, q: Result<api::ListQuery, AppError>, base| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            api::list(app, caller, q.map_err(reject)?, base).await.map_err(reject)
        });
    let get = warp::path!("api" / "videos" / String)
        .and(get_or_head())
        .and(with_app(app.clone()))
        .and(session::credentials())
        .and(base(&app))
        .and_then(|id, app: Arc<App>, creds, base| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            api::get(app, caller, id, base).await.map_err(reject)
        });
    let events = warp::path!("api" / "videos" / String / "events")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .and(session::credentials())
        .and(base(&app))
        .and(client_ip())
        .and_then(|id, app: Arc<App>, creds, base, ip| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            api::events(app, caller, id, base, ip).await.map_err(reject)
        });
    let edit = warp::path!("api" / "videos" / String)
        .and(warp::patch())
        .and(with_app(app.clone()))
        .and(session::credentials())
        .and(session::request_origin())
        .and(base(&app))
        .and(json_body())
        .and_then(|id, app: Arc<App>, creds, origin, base, edit| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            api::edit(app, caller, origin, id, edit, base).await.map_err(reject)
        });
    let delete = warp::path!("api" / "videos" / String)
        .and(warp::delete())
        .and(with_app(app.clone()))
        .and(session::credentials())
        .and(session::request_origin())
        .and_then(|id, app: Arc<App>, creds, origin| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            api::delete(app, caller, origin, id).await.map_err(reject)
        });
    let login = warp::path!("api" / "session")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(session::request_origin())
        .and(client_ip())
        .and(json_body())
        .and_then(|app, origin, ip, login| async move { session::login(app, origin, ip, login).await.map_err(reject) });
    let logout = warp::path!("api" / "session")
        .and(warp::delete())
        .and(with_app(app.clone()))
        .and(header_text("cookie"))
        .and_then(|app, cookie| async move { session::logout(app, cookie).await.map_err(reject) });
    let me = warp::path!("api" / "me").and(get_or_head()).and(with_app(app.clone())).and(session::credentials()).and_then(
        |app: Arc<App>, creds| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            session::me(app, caller).await.map_err(reject)
        },
    );
    let accounts = account_routes(&app);
    // Playback URLs answer errors here rather than through `recover`, so that a page on another
    // origin can read them too.
    let play = warp::path("play")
        .and(warp::path::param::<String>())
        .and(warp::path::tail())
        .and(warp::get().map(|| false).or(warp::head().map(|| true)).unify())
        .and(with_app(app.clone()))
        .and(header_text("range"))
        .and(origin())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .then(|token: String, tail: warp::path::Tail, head, app: Arc<App>, range, origin: Option<String>, query: String| async move {
            let reply =
                media::serve(app.clone(), token, tail.as_str().to_string(), range, head, &query).await.unwrap_or_else(|e| error_reply(&e));
            cors::apply(&app.config.cors_origins, origin.as_deref(), reply)
        });
    let cors = app.config.cors_origins.clone();
    // Any other method is "not found" here, never "method not allowed" (which would outrank the
    // not-found answers of every other route).
    let preflight = warp::path("play")
        .or(warp::path!("api" / "time"))
        .unify()
        .and(warp::method())
        .and_then(|m: warp::http::Method| async move {
            if m == warp::http::Method::OPTIONS {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(origin())
        .map(move |origin: Option<String>| cors::preflight(&cors, origin.as_deref()));

    let a = app.clone();
    let config = warp::path!("api" / "config").and(get_or_head()).map(move || {
        warp::reply::json(&openapi::ServerConfig {
            max_upload_bytes: a.config.max_upload_bytes,
            segment_seconds: a.ladder.segment_seconds,
            signup: a.config.signup,
            default_visibility: a.config.default_visibility,
            setup: a.setup_code.lock().is_ok_and(|c| c.is_some()),
        })
    });
    let videos = upload.or(list).or(events).or(get).or(edit).or(delete);
    let api = healthz
        .or(time)
        .or(config)
        .or(login)
        .or(logout)
        .or(me)
        .or(accounts)
        .or(tus::routes(&app))
        .or(videos)
        .or(play)
        .or(preflight)
        .or(embed::routes(&app))
        .or(metrics::route(&app))
        .or(webhooks::routes(&app))
        .or(live::routes(&app))
        .or(openapi::routes(&app));
    let policy = headers::SecurityHeaders::new(&app.config);
    let counted = app.config.metrics.then(|| app.clone());
    api.or(pages::routes(app))
        .recover(recover)
        .map(move |reply| policy.apply(reply))
        .with(warp::log::custom(move |info| {
            if let Some(app) = &counted {
                let route = metrics::route_label(info.path());
                app.metrics.request(route, metrics::method_label(info.method()), info.status().as_u16(), info.elapsed());
            }
        }))
        .with(warp::trace(|info| tracing::info_span!("request", method = %info.method(), path = %headers::redact(info.path()))))
}

/// Setup, sign-up, password, API tokens and administration (`account.rs`).
fn account_routes(app: &Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let setup = warp::path!("api" / "setup")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(session::request_origin())
        .and(client_ip())
        .and(json_body())
        .and_then(|app, origin, ip, form| async move { account::setup(app, origin, ip, form).await.map_err(reject) });
    let signup = warp::path!("api" / "signup")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(session::request_origin())
        .and(client_ip())
        .and(json_body())
        .and_then(|app, origin, ip, form| async move { account::signup(app, origin, ip, form).await.map_err(reject) });
    // Every route below identifies its caller first: a bad credential is a 401 before anything else.
    let who = || with_app(app.clone()).and(session::credentials());
    let password = warp::path!("api" / "me" / "password")
        .and(warp::put())
        .and(who())
        .and(session::request_origin())
        .and(client_ip())
        .and(json_body())
        .and_then(|app: Arc<App>, creds, origin, ip, form| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            account::change_password(app, caller, origin, ip, form).await.map_err(reject)
        });
    let tokens = warp::path!("api" / "tokens").and(get_or_head()).and(who()).and_then(|app: Arc<App>, creds| async move {
        let caller = session::identify(&app, creds).await.map_err(reject)?;
        account::list_tokens(app, caller).await.map_err(reject)
    });
    let new_token = warp::path!("api" / "tokens").and(warp::post()).and(who()).and(session::request_origin()).and(json_body()).and_then(
        |app: Arc<App>, creds, origin, form| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            account::create_token(app, caller, origin, form).await.map_err(reject)
        },
    );
    let revoke = warp::path!("api" / "tokens" / String).and(warp::delete()).and(who()).and(session::request_origin()).and_then(
        |id, app: Arc<App>, creds, origin| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            account::delete_token(app, caller, origin, id).await.map_err(reject)
        },
    );
    let users = warp::path!("api" / "admin" / "users").and(get_or_head()).and(who()).and_then(|app: Arc<App>, creds| async move {
        let caller = session::identify(&app, creds).await.map_err(reject)?;
        account::list_users(app, caller).await.map_err(reject)
    });
    let new_user =
        warp::path!("api" / "admin" / "users").and(warp::post()).and(who()).and(session::request_origin()).and(json_body()).and_then(
            |app: Arc<App>, creds, origin, form| async move {
                let caller = session::identify(&app, creds).await.map_err(reject)?;
                account::create_user(app, caller, origin, form).await.map_err(reject)
            },
        );
    let change_user = warp::path!("api" / "admin" / "users" / String)
        .and(warp::patch())
        .and(who())
        .and(session::request_origin())
        .and(json_body())
        .and_then(|id, app: Arc<App>, creds, origin, form| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            account::update_user(app, caller, origin, id, form).await.map_err(reject)
        });
    let invite =
        warp::path!("api" / "admin" / "invites").and(warp::post()).and(who()).and(session::request_origin()).and(json_body()).and_then(
            |app: Arc<App>, creds, origin, form| async move {
                let caller = session::identify(&app, creds).await.map_err(reject)?;
                account::create_invite(app, caller, origin, form).await.map_err(reject)
            },
        );
    setup.or(signup).or(password).or(tokens).or(new_token).or(revoke).or(users).or(new_user).or(change_user).or(invite)
}

/// An error as the JSON answer every route gives.
pub(crate) fn error_reply(e: &AppError) -> warp::reply::Response {
    let body = warp::reply::json(&ErrorBody { code: e.code(), message: e.to_string() });
    let mut response = warp::reply::with_status(body, e.status()).into_response();
    if let AppError::RangeNotSatisfiable(len) = e {
        // RFC 9110 §15.5.17: a 416 tells the client the current length.
        if let Ok(v) = warp::http::HeaderValue::from_str(&format!("bytes */{len}")) {
            response.headers_mut().insert(warp::http::header::CONTENT_RANGE, v);
        }
    }
    response
}

/// Maps every rejection to a JSON error with the right status.
pub(crate) async fn recover(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = r.find::<AppError>() {
        return Ok(error_reply(e));
    }
    let (status, code, message) = if r.is_not_found() {
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
    Ok(warp::reply::with_status(body, status).into_response())
}
