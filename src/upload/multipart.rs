//! `multipart/form-data` uploads (the upload page, the no-JavaScript form, scripts with curl):
//! the `file` part is streamed into an [`Intake`]; `title` is kept in memory (bounded); other
//! parts are drained and ignored.

use std::sync::Arc;

use bytes::Buf;
use futures_util::{StreamExt, TryStreamExt};
use warp::multipart::{FormData, Part};

use super::{Intake, UploadMeta};
use crate::app::App;
use crate::error::AppError;
use crate::model::{VideoRecord, MAX_TITLE};

fn interrupted(e: warp::Error) -> AppError {
    AppError::BadRequest(format!("upload interrupted: {e}"))
}

/// Receives a whole form; returns the new video's record once its file is durably on disk.
pub async fn receive(app: Arc<App>, mut form: FormData, client_ref: Option<String>) -> Result<VideoRecord, AppError> {
    let mut meta = UploadMeta { client_ref, ..Default::default() };
    let mut intake: Option<Intake> = None;
    let result = read_parts(&app, &mut form, &mut meta, &mut intake).await;
    match (result, intake) {
        (Ok(()), Some(mut intake)) => {
            // A title part that came after the file still names the video.
            intake.meta.title = meta.title.or(intake.meta.title.take());
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

async fn read_parts(app: &Arc<App>, form: &mut FormData, meta: &mut UploadMeta, intake: &mut Option<Intake>) -> Result<(), AppError> {
    while let Some(part) = form.try_next().await.map_err(|e| AppError::BadRequest(format!("malformed upload: {e}")))? {
        match part.name() {
            "file" if intake.is_none() => {
                meta.original_name = part.filename().map(|s| s.chars().take(MAX_TITLE).collect());
                let started = intake.insert(Intake::create(app.clone(), meta.clone()).await?);
                copy_file(part, started).await?;
            }
            "title" => meta.set_title(&read_small(part, 4 * MAX_TITLE).await?),
            _ => drain(part).await?,
        }
    }
    Ok(())
}

/// Streams a part into the intake. Body chunks are small (tens of KiB); the intake stages them
/// and writes large blocks.
async fn copy_file(part: Part, intake: &mut Intake) -> Result<(), AppError> {
    let mut stream = part.stream();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(interrupted)?;
        while chunk.has_remaining() {
            let data = chunk.chunk();
            let n = data.len();
            intake.push(data).await?;
            chunk.advance(n);
        }
    }
    Ok(())
}

/// A text part, of which at most `limit` bytes are kept (the rest is read and dropped).
async fn read_small(part: Part, limit: usize) -> Result<String, AppError> {
    let mut text = Vec::new();
    let mut stream = part.stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(interrupted)?;
        let room = limit.saturating_sub(text.len());
        let data = chunk.chunk();
        text.extend_from_slice(&data[..data.len().min(room)]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

async fn drain(part: Part) -> Result<(), AppError> {
    let mut stream = part.stream();
    while let Some(chunk) = stream.next().await {
        chunk.map_err(interrupted)?;
    }
    Ok(())
}
