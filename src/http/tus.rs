//! tus 1.0.0 at `/api/uploads`: headers in, headers out. Every answer but `OPTIONS` carries
//! `Tus-Resumable`; errors are the service's JSON errors with the status tus asks for (`409` wrong
//! offset, `412` wrong version, `415` wrong content type, `460` checksum mismatch, `423` a chunk
//! already arriving, `410` expired). The work is `crate::upload::tus`'s.

use std::sync::Arc;

use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::{Filter, Rejection, Reply};

use super::session::{self, RequestOrigin};
use super::{error_reply, with_app};
use crate::app::App;
use crate::auth::accounts::Caller;
use crate::error::AppError;
use crate::model::{TusUpload, User};
use crate::upload::tus::{self, Chunk, Creation};

/// The content type of a chunk.
const CHUNK_TYPE: &str = "application/offset+octet-stream";

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn number(h: &HeaderMap, name: &str) -> Result<Option<u64>, AppError> {
    header(h, name)
        .map(|v| v.trim().parse::<u64>().map_err(|_| AppError::BadRequest(format!("{name} must be a number of bytes"))))
        .transpose()
}

/// A response with tus's headers.
fn reply(status: StatusCode, headers: &[(&str, String)]) -> warp::reply::Response {
    let mut r = warp::reply::Response::new(Vec::new().into());
    *r.status_mut() = status;
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (warp::http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            r.headers_mut().insert(name, value);
        }
    }
    r
}

fn with_version(mut r: warp::reply::Response) -> warp::reply::Response {
    r.headers_mut().insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
    r
}

/// The uploader behind a request: the version is checked first (`412`), then the credential, the
/// CSRF rule for a session, and the `upload` scope for a token.
async fn uploader(app: &App, h: &HeaderMap, creds: session::Credentials, origin: Option<&RequestOrigin>) -> Result<User, AppError> {
    if header(h, "tus-resumable") != Some(tus::VERSION) {
        return Err(AppError::TusVersion);
    }
    let caller: Caller = session::identify(app, creds).await?;
    // `HEAD` changes nothing: no CSRF check (a browser sends no Origin with it).
    if let Some(origin) = origin {
        origin.check(&caller, app)?;
    }
    caller.uploader().cloned()
}

fn state_headers(up: &TusUpload) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("upload-offset", up.offset.to_string()),
        ("upload-length", up.length.to_string()),
        ("upload-expires", tus::http_date(up.expires_at)),
        ("cache-control", "no-store".to_string()),
        ("cascade-video-id", up.id.clone()),
    ];
    if let Some(m) = &up.metadata {
        h.push(("upload-metadata", m.clone()));
    }
    h
}

fn location(app: &App, id: &str) -> String {
    format!("{}/api/uploads/{id}", app.config.public_url.as_deref().unwrap_or(""))
}

async fn options(app: Arc<App>) -> warp::reply::Response {
    reply(
        StatusCode::NO_CONTENT,
        &[
            ("tus-resumable", tus::VERSION.to_string()),
            ("tus-version", tus::VERSION.to_string()),
            ("tus-extension", tus::EXTENSIONS.to_string()),
            ("tus-max-size", app.config.max_upload_bytes.to_string()),
            ("tus-checksum-algorithm", tus::CHECKSUMS.to_string()),
        ],
    )
}

/// Chunk fields from a request's headers.
fn chunk(h: &HeaderMap, offset: Option<u64>) -> Result<Chunk, AppError> {
    let offset = offset.ok_or_else(|| AppError::BadRequest("Upload-Offset is missing".into()))?;
    let checksum = header(h, "upload-checksum").map(tus::parse_checksum).transpose()?;
    Ok(Chunk { offset, content_length: number(h, "content-length")?, checksum })
}

fn is_chunk(h: &HeaderMap) -> bool {
    header(h, "content-type").is_some_and(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(CHUNK_TYPE))
}

type Body = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, warp::Error>> + Send>>;

fn body_stream() -> impl Filter<Extract = (Body,), Error = Rejection> + Clone {
    warp::body::stream().map(boxed)
}

fn boxed<S, B>(s: S) -> Body
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    Box::pin(s.map(|r| r.map(|mut b| b.copy_to_bytes(b.remaining()))))
}

async fn create(
    app: Arc<App>,
    h: HeaderMap,
    creds: session::Credentials,
    origin: RequestOrigin,
    body: Body,
) -> Result<warp::reply::Response, AppError> {
    let checked = async {
        let owner = uploader(&app, &h, creds, Some(&origin)).await?;
        if header(&h, "upload-defer-length").is_some() {
            return Err(AppError::BadRequest("Upload-Defer-Length is not supported: send Upload-Length".into()));
        }
        let length = number(&h, "upload-length")?.ok_or_else(|| AppError::BadRequest("Upload-Length is missing".into()))?;
        let up = tus::create(&app, &owner, Creation { length, metadata: header(&h, "upload-metadata").map(str::to_string) }).await?;
        Ok((owner, length, up))
    };
    let (owner, length, up) = match checked.await {
        Ok(v) => v,
        Err(e) => {
            tus::drain(body, number(&h, "content-length").ok().flatten()).await;
            return Err(e);
        }
    };
    let mut headers = state_headers(&up);
    headers.push(("location", location(&app, &up.id)));
    // creation-with-upload: the first chunk in the same request.
    if is_chunk(&h) && number(&h, "content-length")?.unwrap_or(1) > 0 {
        let first = chunk(&h, Some(0))?;
        if let Err(e) = tus::append(&app, &owner, &up.id, first, body).await {
            if matches!(e, AppError::UnsupportedInput(_)) {
                return Err(e);
            }
            // The upload exists: Upload-Offset tells the client what of the chunk was kept.
            tracing::warn!(video_id = %up.id, error = %e, "the first chunk of a new upload was not kept whole");
        }
        let id = up.id.clone();
        let (offset, expires) = match app.store.run(move |s| s.tus(&id)).await? {
            Some(now) => (now.offset, Some(now.expires_at)),
            // Gone from the uploads in progress: that chunk was the whole file.
            None => (length, None),
        };
        headers.retain(|(k, _)| *k != "upload-offset" && *k != "upload-expires");
        headers.push(("upload-offset", offset.to_string()));
        if let Some(e) = expires {
            headers.push(("upload-expires", tus::http_date(e)));
        }
    }
    Ok(reply(StatusCode::CREATED, &headers))
}

async fn head(app: Arc<App>, id: String, h: HeaderMap, creds: session::Credentials) -> Result<warp::reply::Response, AppError> {
    let owner = uploader(&app, &h, creds, None).await?;
    let up = tus::get(&app, &owner, &id).await?;
    Ok(reply(StatusCode::OK, &state_headers(&up)))
}

async fn patch(
    app: Arc<App>,
    id: String,
    h: HeaderMap,
    creds: session::Credentials,
    origin: RequestOrigin,
    body: Body,
) -> Result<warp::reply::Response, AppError> {
    let checked = async {
        let owner = uploader(&app, &h, creds, Some(&origin)).await?;
        if !is_chunk(&h) {
            return Err(AppError::UnsupportedMediaType(format!("a chunk is sent as Content-Type: {CHUNK_TYPE}")));
        }
        Ok((owner, chunk(&h, number(&h, "upload-offset")?)?))
    };
    let (owner, chunk) = match checked.await {
        Ok(v) => v,
        Err(e) => {
            tus::drain(body, number(&h, "content-length").ok().flatten()).await;
            return Err(e);
        }
    };
    let (up, _done) = tus::append(&app, &owner, &id, chunk, body).await?;
    Ok(reply(StatusCode::NO_CONTENT, &[("upload-offset", up.offset.to_string()), ("upload-expires", tus::http_date(up.expires_at))]))
}

async fn delete(
    app: Arc<App>,
    id: String,
    h: HeaderMap,
    creds: session::Credentials,
    origin: RequestOrigin,
) -> Result<warp::reply::Response, AppError> {
    let owner = uploader(&app, &h, creds, Some(&origin)).await?;
    tus::terminate(&app, &owner, &id).await?;
    Ok(reply(StatusCode::NO_CONTENT, &[]))
}

/// The tus routes. Handlers answer every error themselves, with `Tus-Resumable`.
pub fn routes(app: &Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    fn answer(r: Result<warp::reply::Response, AppError>) -> warp::reply::Response {
        with_version(r.unwrap_or_else(|e| error_reply(&e)))
    }
    let collection = || warp::path!("api" / "uploads");
    let one = || warp::path!("api" / "uploads" / String);
    let opts = warp::path("api")
        .and(warp::path("uploads"))
        .and(warp::path::tail())
        .and(warp::options())
        .and(with_app(app.clone()))
        .then(|_tail, app| options(app));
    let post = collection()
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(warp::header::headers_cloned())
        .and(session::credentials())
        .and(session::request_origin())
        .and(body_stream())
        .then(create)
        .map(answer);
    let head_ = one()
        .and(warp::head())
        .and(with_app(app.clone()))
        .and(warp::header::headers_cloned())
        .and(session::credentials())
        .then(|id, app, h, creds| head(app, id, h, creds))
        .map(answer);
    let patch_ = one()
        .and(warp::patch())
        .and(with_app(app.clone()))
        .and(warp::header::headers_cloned())
        .and(session::credentials())
        .and(session::request_origin())
        .and(body_stream())
        .then(|id, app, h, creds, origin, body| patch(app, id, h, creds, origin, body))
        .map(answer);
    let delete_ = one()
        .and(warp::delete())
        .and(with_app(app.clone()))
        .and(warp::header::headers_cloned())
        .and(session::credentials())
        .and(session::request_origin())
        .then(|id, app, h, creds, origin| delete(app, id, h, creds, origin))
        .map(answer);
    opts.or(post).or(head_).or(patch_).or(delete_)
}
