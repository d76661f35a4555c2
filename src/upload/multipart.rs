//! `multipart/form-data` uploads (the upload page, the no-JavaScript form, scripts with curl):
//! the body is parsed by multer through [`Form`] (framing and idle limits); the `file` part
//! is streamed into an [`Intake`]; `title` is kept in memory (bounded); other parts are drained
//! and ignored.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;

use super::body::{BodyError, BodyLimits, Form, SharedBody};
use super::{Intake, UploadMeta};
use crate::app::App;
use crate::error::AppError;
use crate::model::{User, VideoRecord, Visibility, MAX_TITLE};

/// Longest multipart preamble, part header block or epilogue.
pub const MAX_FRAMING_BYTES: usize = 8 * 1024;

/// The boundary of a `multipart/form-data` content type; anything else is a 415.
pub fn boundary(content_type: Option<&str>) -> Result<String, AppError> {
    let ct = content_type.ok_or_else(|| AppError::UnsupportedMediaType("the upload has no Content-Type".into()))?;
    multer::parse_boundary(ct).map_err(|e| AppError::UnsupportedMediaType(format!("expected multipart/form-data with a boundary: {e}")))
}

/// What a multer error means for the client: the limits of `body` keep their own status.
fn body_error(e: multer::Error) -> AppError {
    let inner = match &e {
        multer::Error::StreamReadFailed(inner) => inner.downcast_ref::<BodyError>().cloned(),
        _ => None,
    };
    match inner {
        Some(BodyError::Idle(s)) => AppError::RequestTimeout(format!("no upload bytes arrived for {s} s")),
        Some(e @ BodyError::FramingTooLong(_)) => AppError::BadRequest(format!("malformed upload: {e}")),
        Some(e @ BodyError::Read(_)) => AppError::BadRequest(format!("upload interrupted: {e}")),
        None => AppError::BadRequest(format!("malformed upload: {e}")),
    }
}

/// Receives a whole form; returns the new video's record once its file is durably on disk.
async fn receive(app: Arc<App>, mut form: Form, mut meta: UploadMeta) -> Result<VideoRecord, AppError> {
    let mut intake: Option<Intake> = None;
    let result = read_parts(&app, &mut form, &mut meta, &mut intake).await;
    match (result, intake) {
        (Ok(()), Some(mut intake)) => {
            // A title or visibility part that came after the file still counts.
            intake.meta.title = meta.title.or(intake.meta.title.take());
            intake.meta.visibility = meta.visibility.or(intake.meta.visibility);
            intake.finish().await
        }
        (Ok(()), None) => Err(AppError::BadRequest("the form has no `file` field".into())),
        (Err(e), Some(intake)) => {
            intake.abort(&e).await;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// A refused upload reads at most this much of the rest of its body before answering.
pub(super) const DRAIN_MAX: u64 = 8 << 20;
/// ...and waits this long at most for each piece of it.
pub(super) const DRAIN_IDLE: Duration = Duration::from_secs(5);

/// Receives a `multipart/form-data` request: checks its content type, admits it, and receives
/// the form. A refusal (not a media file, too large, too many uploads…) reads the rest of a small
/// body first, so that a client still sending gets the answer rather than a reset connection;
/// a malformed or stalled body is not read any further.
pub async fn receive_request<S, B, E>(
    app: Arc<App>,
    owner: Result<User, AppError>,
    content_type: Option<&str>,
    declared_len: Option<u64>,
    body: S,
    client_ref: Option<String>,
) -> Result<VideoRecord, AppError>
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: bytes::Buf,
    E: std::fmt::Display,
{
    let body = SharedBody::new(body);
    let limits = BodyLimits { idle: app.config.body_idle_timeout, framing: MAX_FRAMING_BYTES };
    // Who first (401/403), then what (415), then whether there is room (429/413/507).
    let admitted = match owner.and_then(|owner| boundary(content_type).map(|b| (owner, b))) {
        Ok((owner, boundary)) => admit(&app, &owner, declared_len).await.map(|permits| (owner, boundary, permits)),
        Err(e) => Err(e),
    };
    let result = match admitted {
        Ok((owner, boundary, (_arriving, quota))) => {
            let meta = UploadMeta { client_ref, owner: Some(owner.id), quota_left: quota.left, ..Default::default() };
            receive(app, Form::new(body.clone(), boundary, limits), meta).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        let small = declared_len.is_none_or(|n| n <= DRAIN_MAX);
        if small && !matches!(e, AppError::BadRequest(_) | AppError::RequestTimeout(_)) {
            body.drain(DRAIN_MAX, DRAIN_IDLE).await;
        }
    }
    result
}

/// The server's limits ([`super::admit`]), then the owner's ([`super::quota`]).
async fn admit(
    app: &Arc<App>,
    owner: &User,
    declared_len: Option<u64>,
) -> Result<(tokio::sync::OwnedSemaphorePermit, super::quota::Reservation), AppError> {
    let arriving = super::admit(app, declared_len).await?;
    let id = owner.id.clone();
    let used = app.store.run(move |s| s.usage().map(|mut u| u.remove(&id).unwrap_or_default())).await?;
    let quota = app.quotas.reserve(owner, used, declared_len, &app.config)?;
    Ok((arriving, quota))
}

async fn read_parts(app: &Arc<App>, form: &mut Form, meta: &mut UploadMeta, intake: &mut Option<Intake>) -> Result<(), AppError> {
    while let Some(mut field) = form.next_field().await.map_err(body_error)? {
        match field.name() {
            Some("file") if intake.is_none() => {
                meta.original_name = field.file_name().map(|s| s.chars().take(MAX_TITLE).collect());
                let started = intake.insert(Intake::create(app.clone(), meta.clone()).await?);
                while let Some(chunk) = form.chunk(&mut field).await.map_err(body_error)? {
                    started.push(&chunk).await?;
                }
            }
            Some("title") => meta.set_title(&read_small(form, field, 4 * MAX_TITLE).await?),
            Some("visibility") => {
                let v = read_small(form, field, 32).await?;
                let parsed = <Visibility as clap::ValueEnum>::from_str(v.trim(), true);
                meta.visibility =
                    Some(parsed.map_err(|_| AppError::BadRequest(format!("visibility must be public, unlisted or private, not {v:?}")))?);
            }
            _ => while form.chunk(&mut field).await.map_err(body_error)?.is_some() {},
        }
    }
    Ok(())
}

/// A text part, of which at most `limit` bytes are kept (the rest is read and dropped).
async fn read_small(form: &Form, mut field: multer::Field<'static>, limit: usize) -> Result<String, AppError> {
    let mut text = Vec::new();
    while let Some(chunk) = form.chunk(&mut field).await.map_err(body_error)? {
        let room = limit.saturating_sub(text.len());
        text.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}
