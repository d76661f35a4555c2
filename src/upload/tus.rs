//! Resumable uploads, tus 1.0.0 (<https://tus.io/protocols/resumable-upload>) with the
//! `creation`, `creation-with-upload`, `termination`, `expiration` and `checksum` extensions.
//! The HTTP layer (`http/tus.rs`) parses headers and answers; here an upload is created, appended
//! to, ended or expired, feeding the same [`Intake`] as the multipart receiver, so a streamable
//! file is transcoded while it arrives here too.
//!
//! Durability: the offset `HEAD` answers is the one stored after an `fdatasync` of the file, so
//! after a crash it is never beyond what is on disk; bytes written after it are cut off when the
//! upload resumes. A `PATCH` syncs at its end and every [`SYNC_EVERY`] bytes (so a long one that
//! breaks off keeps most of what arrived), unless it carries a checksum: then nothing of it counts
//! until the whole chunk is checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Buf;
use chrono::Utc;
use futures_util::{Stream, StreamExt};
use sha1::Digest;
use tracing::{info, warn};

use super::body::SharedBody;
use super::multipart::{DRAIN_IDLE, DRAIN_MAX};
use super::{Intake, UploadMeta};
use crate::app::{remove_dir_off_executor, App};
use crate::error::AppError;
use crate::model::{KeyMaterial, Status, TusUpload, User, VideoRecord, Visibility, MAX_TITLE};

/// The protocol version spoken.
pub const VERSION: &str = "1.0.0";
/// The extensions supported.
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
/// The checksum algorithms supported.
pub const CHECKSUMS: &str = "sha1,sha256";
/// A `PATCH` without a checksum makes what it received durable this often.
pub const SYNC_EVERY: u64 = 64 << 20;
/// Longest `Upload-Metadata` header.
const MAX_METADATA: usize = 4096;

/// The per-upload lock (two `PATCH`es of one upload never interleave: the second gets `423`), and
/// the intake kept between requests while a transcode reads the file behind the upload.
type Slot = Arc<tokio::sync::Mutex<Option<Intake>>>;

/// Resumable uploads being appended to now.
#[derive(Default)]
pub struct Live(Mutex<HashMap<String, Slot>>);

impl Live {
    fn slot(&self, id: &str) -> Result<Slot, AppError> {
        let mut m = self.0.lock().map_err(|_| AppError::Internal("upload lock poisoned".into()))?;
        Ok(m.entry(id.to_string()).or_default().clone())
    }

    fn forget(&self, id: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(id);
        }
    }
}

/// A checksum algorithm of `Upload-Checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

/// `Upload-Checksum: ALGORITHM BASE64`.
pub fn parse_checksum(h: &str) -> Result<(Algorithm, Vec<u8>), AppError> {
    let bad = || AppError::BadRequest(format!("Upload-Checksum must be `sha1 BASE64` or `sha256 BASE64`, not {h:?}"));
    let (algo, value) = h.trim().split_once(' ').ok_or_else(bad)?;
    let algo = match algo {
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        _ => return Err(bad()),
    };
    let sum = base64::engine::general_purpose::STANDARD.decode(value.trim()).map_err(|_| bad())?;
    let want = if algo == Algorithm::Sha1 { 20 } else { 32 };
    if sum.len() != want {
        return Err(bad());
    }
    Ok((algo, sum))
}

/// The running checksum of a chunk.
enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(a: Algorithm) -> Hasher {
        match a {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent). Keys
/// are ASCII without spaces or commas and appear once.
pub fn parse_metadata(h: &str) -> Result<HashMap<String, Option<String>>, AppError> {
    let bad = |why: &str| AppError::BadRequest(format!("Upload-Metadata: {why}"));
    if h.len() > MAX_METADATA {
        return Err(bad("longer than 4096 bytes"));
    }
    let mut out = HashMap::new();
    for pair in h.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((k, v)) => (k, Some(v.trim())),
            None => (pair, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("a key is not printable ASCII"));
        }
        let value = match value {
            Some(v) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(v).map_err(|_| bad("a value is not base64"))?;
                Some(String::from_utf8(bytes).map_err(|_| bad("a value is not UTF-8"))?)
            }
            None => None,
        };
        if out.insert(key.to_string(), value).is_some() {
            return Err(bad("a key appears twice"));
        }
    }
    Ok(out)
}

/// An HTTP date (`Upload-Expires`).
pub fn http_date(t: chrono::DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// How long an upload lives without a chunk (`CASCADE_UPLOAD_EXPIRY_H`).
fn expiry(app: &App) -> chrono::Duration {
    chrono::Duration::from_std(app.config.upload_expiry).unwrap_or(chrono::Duration::MAX)
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound(format!("no upload {id}"))
}

/// The upload `id` of `owner`: someone else's is "not found", an expired one "gone".
pub async fn get(app: &App, owner: &User, id: &str) -> Result<TusUpload, AppError> {
    let i = id.to_string();
    let up = app.store.run(move |s| s.tus(&i)).await?.filter(|u| u.owner == owner.id).ok_or_else(|| not_found(id))?;
    if up.expires_at <= Utc::now() {
        return Err(AppError::Gone(format!("upload {id} expired; start again")));
    }
    Ok(up)
}

/// What a client asks for when it creates an upload.
#[derive(Debug, Default)]
pub struct Creation {
    pub length: u64,
    pub metadata: Option<String>,
}

/// Creates an upload (and its video record, status `uploading`) after the same checks as the
/// multipart path: size limit, the owner's quotas and concurrent uploads, free disk.
pub async fn create(app: &Arc<App>, owner: &User, c: Creation) -> Result<TusUpload, AppError> {
    if app.is_shutting_down() {
        return Err(AppError::ShuttingDown);
    }
    let limit = app.config.max_upload_bytes;
    if c.length > limit {
        return Err(AppError::TooLarge { limit });
    }
    let meta = match &c.metadata {
        Some(h) => parse_metadata(h)?,
        None => HashMap::new(),
    };
    let text = |k: &str| meta.get(k).cloned().flatten();
    let visibility = match text("visibility") {
        Some(v) => Some(
            <Visibility as clap::ValueEnum>::from_str(v.trim(), true)
                .map_err(|_| AppError::BadRequest(format!("visibility must be public, unlisted or private, not {v:?}")))?,
        ),
        None => None,
    };
    let mut um = UploadMeta::default();
    if let Some(t) = text("title") {
        um.set_title(&t);
    }
    let filename = text("filename").or_else(|| text("name")).map(|n| n.chars().take(MAX_TITLE).collect::<String>());
    let id2 = owner.id.clone();
    let used = app.store.run(move |s| s.usage().map(|mut u| u.remove(&id2).unwrap_or_default())).await?;
    // Checked now and counted from now on (usage counts an upload in progress at its full length).
    drop(app.quotas.reserve_exact(owner, used, c.length, &app.config)?);
    if let Some(free) = super::free_bytes(&app.config.data_dir) {
        if free < app.config.min_free_bytes + c.length {
            return Err(AppError::InsufficientStorage { free });
        }
    }
    let now = Utc::now();
    let id = uuid::Uuid::new_v4().to_string();
    let up = TusUpload {
        id: id.clone(),
        owner: owner.id.clone(),
        length: c.length,
        offset: 0,
        metadata: c.metadata,
        filename: filename.clone(),
        title: um.title.clone(),
        visibility,
        created_at: now,
        expires_at: now + expiry(app),
    };
    let meta = UploadMeta { title: um.title, original_name: filename, owner: Some(owner.id.clone()), visibility, ..Default::default() };
    let rec = VideoRecord { status: Status::Uploading, ..meta.record(&id, 0, app.config.default_visibility) };
    tokio::fs::create_dir_all(app.upload_dir(&id)).await?;
    tokio::fs::File::create(app.partial_source_path(&id)).await?;
    let (u2, r2) = (up.clone(), rec.clone());
    app.store.run(move |s| s.create_tus(&u2, &r2, &KeyMaterial::generate())).await?;
    app.store.flush().await?;
    app.notify(&rec);
    crate::webhooks::emit(app, "video.created", &rec).await;
    info!(video_id = %id, length = c.length, "resumable upload created");
    Ok(up)
}

/// What a `PATCH` brings besides its bytes.
#[derive(Debug, Default)]
pub struct Chunk {
    /// `Upload-Offset`: where the client says the bytes go.
    pub offset: u64,
    pub content_length: Option<u64>,
    pub checksum: Option<(Algorithm, Vec<u8>)>,
}

/// Appends a chunk to the upload `id` of `owner`; returns the upload as it stands after it (the
/// record of the finished video too when this was the last byte). A refused chunk that is small
/// is read to its end before the answer, so a client still sending gets the answer (`409`,
/// `423`…) rather than a reset connection.
pub async fn append<S, B, E>(
    app: &Arc<App>,
    owner: &User,
    id: &str,
    chunk: Chunk,
    body: S,
) -> Result<(TusUpload, Option<VideoRecord>), AppError>
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: Buf,
    E: std::fmt::Display,
{
    let body = SharedBody::new(body);
    let small = chunk.content_length.is_none_or(|n| n <= DRAIN_MAX);
    let result = append_chunk(app, owner, id, chunk, body.stream()).await;
    if result.is_err() && small {
        body.drain(DRAIN_MAX, DRAIN_IDLE).await;
    }
    result
}

/// Reads and drops a small body that is refused before it is looked at (a wrong version, content
/// type or credential), so that the client gets the answer rather than a connection closed under it.
pub async fn drain<S, B, E>(body: S, content_length: Option<u64>)
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: Buf,
    E: std::fmt::Display,
{
    if content_length.is_none_or(|n| n <= DRAIN_MAX) {
        SharedBody::new(body).drain(DRAIN_MAX, DRAIN_IDLE).await;
    }
}

async fn append_chunk<S, B, E>(
    app: &Arc<App>,
    owner: &User,
    id: &str,
    chunk: Chunk,
    body: S,
) -> Result<(TusUpload, Option<VideoRecord>), AppError>
where
    S: Stream<Item = Result<B, E>> + Send + Unpin,
    B: Buf,
    E: std::fmt::Display,
{
    get(app, owner, id).await?;
    let slot = app.tus.slot(id)?;
    let Ok(mut held) = slot.try_lock() else {
        return Err(AppError::Locked(format!("upload {id} is being appended to by another request")));
    };
    // The slot was taken: read the state again, the other request may have moved it.
    let mut up = get(app, owner, id).await.inspect_err(|_| app.tus.forget(id))?;
    if chunk.offset != up.offset {
        return Err(AppError::Conflict(format!("Upload-Offset is {}, but the upload has {} bytes", chunk.offset, up.offset)));
    }
    if chunk.content_length.is_some_and(|n| up.offset + n > up.length) {
        return Err(AppError::TooLarge { limit: up.length });
    }
    let _arriving = app.uploads.clone().try_acquire_owned().map_err(|_| AppError::TooManyUploads(app.config.max_uploads))?;
    let _mine = app.quotas.arriving_only(owner, &app.config)?;
    let mut intake = match held.take() {
        Some(i) => i,
        None => {
            let meta = UploadMeta {
                title: up.title.clone(),
                original_name: up.filename.clone(),
                owner: Some(up.owner.clone()),
                visibility: up.visibility,
                ..Default::default()
            };
            Intake::resume(app.clone(), id.to_string(), meta, up.offset).await?
        }
    };
    intake.hold(chunk.checksum.is_some());
    let started = up.offset;
    let received = receive(app, &mut intake, &mut up, chunk.checksum.as_ref().map(|(a, _)| *a), body).await;
    // What arrived, kept or not: the measure of what a resumed upload sends twice.
    info!(video_id = %id, offset = started, received = intake.bytes() - started, ok = received.is_ok(), "chunk received");
    let outcome = match received {
        Ok(sum) => match (&chunk.checksum, sum) {
            (Some((_, want)), Some(got)) if *want != got => Err(AppError::ChecksumMismatch),
            _ => Ok(()),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {}
        Err(e @ AppError::UnsupportedInput(_)) => {
            // Not a media file: the upload ends here, with nothing left of it.
            let _ = terminate_now(app, id).await;
            intake.abort(&e).await;
            return Err(e);
        }
        Err(e @ (AppError::ChecksumMismatch | AppError::TooLarge { .. })) => {
            // The chunk is discarded; the upload goes on from where it was.
            intake.rewind(started).await?;
            keep(&mut held, intake);
            return Err(e);
        }
        Err(e) => {
            // The connection broke off or stalled: what arrived counts, unless it was to be checked.
            if chunk.checksum.is_some() {
                intake.rewind(started).await?;
            } else if let Err(sync) = durable(app, &mut intake, &mut up).await {
                warn!(video_id = %id, error = %sync, "cannot keep what arrived of a broken-off chunk");
            }
            keep(&mut held, intake);
            return Err(e);
        }
    }
    if !durable(app, &mut intake, &mut up).await? {
        intake.abort(&not_found(id)).await;
        return Err(not_found(id));
    }
    if up.offset < up.length {
        keep(&mut held, intake);
        return Ok((up, None));
    }
    // The last byte: the same end as a multipart upload (the record is queued, or a streamed
    // transcode is told the file is complete).
    let rec = intake.finish().await?;
    let i = id.to_string();
    app.store.run(move |s| s.end_tus(&i)).await?;
    app.store.flush().await?;
    drop(held);
    app.tus.forget(id);
    Ok((up, Some(rec)))
}

/// Keeps the intake for the next chunk only while a transcode reads behind it (its buffers and
/// pipeline are worth keeping); otherwise the file is closed and reopened by the next chunk.
fn keep(held: &mut Option<Intake>, intake: Intake) {
    if intake.is_streaming() {
        *held = Some(intake);
    }
}

/// Makes what arrived durable and stores the new offset; false if the upload is gone.
async fn durable(app: &App, intake: &mut Intake, up: &mut TusUpload) -> Result<bool, AppError> {
    up.offset = intake.sync().await?;
    store_offset(app, up).await
}

/// Stores a durable offset (and a later expiry); false if the upload is gone.
async fn store_offset(app: &App, up: &mut TusUpload) -> Result<bool, AppError> {
    up.expires_at = Utc::now() + expiry(app);
    let u = up.clone();
    let alive = app.store.run(move |s| s.advance_tus(&u)).await?;
    app.store.flush().await?;
    Ok(alive)
}

/// Reads the body into the intake (bounded by the upload's length and the idle timeout); returns
/// the checksum of what arrived when one was asked for.
async fn receive<S, B, E>(
    app: &App,
    intake: &mut Intake,
    up: &mut TusUpload,
    algo: Option<Algorithm>,
    mut body: S,
) -> Result<Option<Vec<u8>>, AppError>
where
    S: Stream<Item = Result<B, E>> + Send + Unpin,
    B: Buf,
    E: std::fmt::Display,
{
    let mut hasher = algo.map(Hasher::new);
    let idle = app.config.body_idle_timeout;
    let mut since_sync = 0u64;
    loop {
        let next = tokio::time::timeout(idle, body.next())
            .await
            .map_err(|_| AppError::RequestTimeout(format!("no upload bytes arrived for {} s", idle.as_secs())))?;
        let Some(piece) = next else { break };
        let mut piece = piece.map_err(|e| AppError::BadRequest(format!("upload interrupted: {e}")))?;
        while piece.has_remaining() {
            let data = piece.chunk();
            let n = data.len();
            if intake.bytes() + n as u64 > up.length {
                return Err(AppError::TooLarge { limit: up.length });
            }
            if let Some(h) = hasher.as_mut() {
                h.update(data);
            }
            intake.push(data).await?;
            piece.advance(n);
            since_sync += n as u64;
        }
        if hasher.is_none() && since_sync >= SYNC_EVERY {
            since_sync = 0;
            // The whole buffers written so far; the one filling is made durable at the end.
            up.offset = intake.sync_written().await?;
            if !store_offset(app, up).await? {
                return Err(not_found(&up.id));
            }
        }
    }
    Ok(hasher.map(Hasher::finish))
}

/// Removes an upload: its record, partial file and any streamed transcode's output.
async fn terminate_now(app: &App, id: &str) -> Result<(), AppError> {
    let i = id.to_string();
    let rec = app.store.run(move |s| s.get(&i).and_then(|rec| s.delete(&i).map(|_| rec))).await?;
    app.store.flush().await?;
    if let Some(rec) = rec {
        crate::webhooks::emit(app, "video.deleted", &rec).await;
    }
    crate::jobs::cancel(app, id);
    if let Ok(mut d) = app.deleted.lock() {
        d.insert(id.to_string());
    }
    remove_dir_off_executor(app.upload_dir(id)).await;
    remove_dir_off_executor(app.media_dir(id)).await;
    app.storage.remove_video(id).await;
    app.tus.forget(id);
    Ok(())
}

/// `DELETE`: the owner ends an upload; `423` while a chunk is arriving.
pub async fn terminate(app: &Arc<App>, owner: &User, id: &str) -> Result<(), AppError> {
    match get(app, owner, id).await {
        Ok(_) | Err(AppError::Gone(_)) => {}
        Err(e) => return Err(e),
    }
    let slot = app.tus.slot(id)?;
    let Ok(mut held) = slot.try_lock() else {
        return Err(AppError::Locked(format!("upload {id} is being appended to; try again when that request ends")));
    };
    if let Some(intake) = held.take() {
        intake.abort(&AppError::Gone("terminated by its owner".into())).await;
    }
    terminate_now(app, id).await?;
    info!(video_id = %id, "resumable upload terminated");
    Ok(())
}

/// Removes uploads past their expiry (not while a chunk is arriving); returns how many.
pub async fn sweep_expired(app: &Arc<App>) -> Result<usize, AppError> {
    let now = Utc::now();
    let expired: Vec<TusUpload> = app.store.run(|s| s.tus_uploads()).await?.into_iter().filter(|u| u.expires_at <= now).collect();
    let mut n = 0;
    for u in expired {
        let slot = app.tus.slot(&u.id)?;
        let Ok(mut held) = slot.try_lock() else { continue };
        if let Some(intake) = held.take() {
            intake.abort(&AppError::Gone("expired".into())).await;
        }
        terminate_now(app, &u.id).await?;
        info!(video_id = %u.id, offset = u.offset, length = u.length, "resumable upload expired");
        n += 1;
    }
    Ok(n)
}

/// At start-up: uploads whose transcode had started while they arrived go back to waiting for
/// their last byte (the partial output is removed), and expired ones are removed. Then every
/// `every`, expired ones again.
pub async fn recover_and_sweep(app: Arc<App>, every: Duration) -> Result<tokio::task::JoinHandle<()>, AppError> {
    // An upload whose last byte was in (its file complete and recorded) when the process stopped,
    // before it was struck off the uploads in progress.
    for u in app.store.run(|s| s.tus_uploads()).await? {
        let complete = tokio::fs::try_exists(app.source_path(&u.id)).await.unwrap_or(false);
        if complete && !tokio::fs::try_exists(app.partial_source_path(&u.id)).await.unwrap_or(true) {
            let id = u.id.clone();
            app.store.run(move |s| s.end_tus(&id)).await?;
        }
    }
    let reset = app.store.run(|s| s.reset_tus_jobs()).await?;
    for id in &reset {
        remove_dir_off_executor(app.media_dir(id)).await;
        if let Err(e) = app.storage.remove_media(id).await {
            warn!(video_id = %id, error = %e, "cannot remove a job's published output from object storage");
        }
    }
    if !reset.is_empty() {
        warn!(ids = ?reset, "resumable uploads that were being transcoded while they arrived wait for their last byte again");
    }
    Ok(tokio::spawn(async move {
        loop {
            match sweep_expired(&app).await {
                Ok(0) => {}
                Ok(n) => info!(count = n, "expired resumable uploads removed"),
                Err(e) => warn!(error = %e, "cannot remove expired resumable uploads"),
            }
            tokio::time::sleep(every).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_checksums_are_read_as_the_spec_writes_them() {
        let m = parse_metadata("filename Y2xpcC5tcDQ=,title w6l0w6k=, is_confidential").unwrap();
        assert_eq!(m["filename"].as_deref(), Some("clip.mp4"));
        assert_eq!(m["title"].as_deref(), Some("été"));
        assert_eq!(m["is_confidential"], None);
        for bad in ["a !!!", "a YQ==,a Yg==", "k\u{7f} YQ==", &"x".repeat(5000)] {
            assert!(parse_metadata(bad).is_err(), "{bad}");
        }
        let (a, sum) = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!((a, sum.len()), (Algorithm::Sha1, 20));
        for bad in ["md5 AAAA", "sha1", "sha1 !!", "sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0="] {
            assert!(parse_checksum(bad).is_err(), "{bad}");
        }
        let mut h = Hasher::new(Algorithm::Sha1);
        h.update(b"hello world");
        assert_eq!(base64::engine::general_purpose::STANDARD.encode(h.finish()), "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        assert_eq!(http_date(chrono::DateTime::from_timestamp(0, 0).unwrap()), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
