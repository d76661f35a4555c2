//! Receiving a file: everything between the first byte of an upload and its record. The HTTP
//! layer hands a protocol's body to a receiver here (`multipart` today; the resumable-upload
//! issue adds tus beside it); every receiver feeds an [`Intake`], which writes the file at disk
//! speed (`staging`), recognises from the first bytes whether the file can be transcoded while it
//! arrives (`sniff`), starts that streamed transcode (through `jobs`, reading a [`Growing`] file),
//! and records the video once the last byte is durably on disk.

mod body;
mod growing;
pub mod multipart;
pub mod quota;
mod sniff;
mod staging;
pub mod tus;

use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

pub use growing::{Growing, UploadState, STARVED_BYTES};

use crate::app::{remove_dir_off_executor, App};
use crate::error::AppError;
use crate::model::{KeyMaterial, VideoRecord, Visibility, MAX_TITLE};
use crate::probe::container::{self, Container, Verdict};
use staging::UploadFile;

/// Bytes looked at before giving up on recognising a streamable container.
const SNIFF_LIMIT: usize = 1 << 20;

/// Free bytes on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses an upload before any byte is read: the server is stopping, too many uploads are
/// arriving at once, the queue is full, the declared size is over the limit or would not fit on
/// the disk. The permit it returns counts the upload as arriving until it is dropped.
pub async fn admit(app: &App, declared_len: Option<u64>) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
    if app.is_shutting_down() {
        return Err(AppError::ShuttingDown);
    }
    let permit = app.uploads.clone().try_acquire_owned().map_err(|_| AppError::TooManyUploads(app.config.max_uploads))?;
    let limit = app.config.max_upload_bytes;
    // A multipart body carries a little more than the file: boundaries and part headers.
    if declared_len.is_some_and(|n| n > limit + 64 * 1024) {
        return Err(AppError::TooLarge { limit });
    }
    let queued = app.store.run(|s| s.jobs()).await?.len();
    if queued >= app.config.max_queued {
        return Err(AppError::QueueFull(queued));
    }
    if let Some(free) = free_bytes(&app.config.data_dir) {
        if free < app.config.min_free_bytes + declared_len.unwrap_or(0) {
            return Err(AppError::InsufficientStorage { free });
        }
    }
    Ok(permit)
}

/// What a client said about its upload besides the bytes, and whose it is.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub title: Option<String>,
    pub original_name: Option<String>,
    /// The client's own reference, to find the record while the body is still being sent.
    pub client_ref: Option<String>,
    /// The uploading user's id.
    pub owner: Option<String>,
    /// As the client asked; the setting's default otherwise.
    pub visibility: Option<Visibility>,
    /// Bytes the owner's quota leaves for this upload (none: no quota).
    pub quota_left: Option<u64>,
}

impl UploadMeta {
    /// Keeps a title the way records store it: trimmed, at most `MAX_TITLE` characters, none if empty.
    pub fn set_title(&mut self, raw: &str) {
        let t: String = raw.trim().chars().take(MAX_TITLE).collect();
        self.title = Some(t).filter(|t| !t.is_empty());
    }

    fn record(&self, id: &str, bytes: u64, default_visibility: Visibility) -> VideoRecord {
        VideoRecord {
            client_ref: self.client_ref.clone(),
            owner: self.owner.clone(),
            visibility: self.visibility.unwrap_or(default_visibility),
            ..VideoRecord::new(id, self.title.clone(), self.original_name.clone(), bytes)
        }
    }
}

/// How far the decision about transcoding while the upload arrives has got.
enum Streaming {
    /// Still reading the first bytes (kept here) to recognise the container.
    Sniffing(Vec<u8>),
    /// Not streamable, no slot was free, or streaming is off: the job is queued at the end.
    No,
    /// A transcode reads the file behind the upload.
    Running,
}

/// One upload being received, whatever the protocol.
pub struct Intake {
    app: Arc<App>,
    id: String,
    file: Option<UploadFile>,
    growing: Arc<Growing>,
    streaming: Streaming,
    /// The file's first bytes, until they tell its container.
    head: Vec<u8>,
    container: Option<Container>,
    bytes: u64,
    /// Bytes pushed are not handed to a streamed transcode until `sync` (they may be taken back:
    /// a resumable chunk is checked against its checksum first).
    hold: bool,
    pub meta: UploadMeta,
}

impl Intake {
    /// Starts receiving a new video's file.
    pub async fn create(app: Arc<App>, meta: UploadMeta) -> Result<Intake, AppError> {
        Intake::create_with_id(app, uuid::Uuid::new_v4().to_string(), meta).await
    }

    /// Starts receiving the file of the video `id` (whose record may exist already: a resumable upload).
    pub async fn create_with_id(app: Arc<App>, id: String, meta: UploadMeta) -> Result<Intake, AppError> {
        tokio::fs::create_dir_all(app.upload_dir(&id)).await?;
        let file = match UploadFile::create(&app.partial_source_path(&id)).await {
            Ok(f) => f,
            Err(e) => {
                remove_dir_off_executor(app.upload_dir(&id)).await;
                return Err(e);
            }
        };
        let streaming = if app.config.stream_ingest { Streaming::Sniffing(Vec::new()) } else { Streaming::No };
        let growing = Arc::new(Growing::new(app.config.body_idle_timeout));
        Ok(Intake { app, id, file: Some(file), growing, streaming, head: Vec::new(), container: None, bytes: 0, hold: false, meta })
    }

    /// Goes on receiving a file of which the first `offset` bytes are durably on disk (a resumed
    /// upload, also after a restart). It is transcoded once complete, not while it arrives.
    pub async fn resume(app: Arc<App>, id: String, meta: UploadMeta, offset: u64) -> Result<Intake, AppError> {
        if offset == 0 {
            return Intake::create_with_id(app, id, meta).await;
        }
        let path = app.partial_source_path(&id);
        // A scaled set-up: the bytes so far are in the data dir of the node that received them.
        // The client is told so (tus clients ask for the offset again and retry, which a load
        // balancer that routes uploads by their URL sends to that node).
        let here = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        if here < offset && app.store.blocking().shares_jobs() {
            return Err(AppError::Conflict(format!(
                "the first {offset} bytes of this upload are on the Cascade node that received them, not on this one: \
                 send the upload's requests to that node (route /api/uploads/{{id}} by its URL)"
            )));
        }
        let file = UploadFile::reopen(&path, offset).await?;
        let head_len = (container::ID_BYTES as u64).min(offset) as usize;
        let head = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::Read;
            let mut head = vec![0; head_len];
            std::fs::File::open(&path)?.read_exact(&mut head)?;
            Ok(head)
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))??;
        let growing = Arc::new(Growing::new(app.config.body_idle_timeout));
        let mut intake = Intake {
            app,
            id,
            file: Some(file),
            growing,
            streaming: Streaming::No,
            head,
            container: None,
            bytes: offset,
            hold: false,
            meta,
        };
        intake.identify(false)?;
        Ok(intake)
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a transcode reads the file while it arrives.
    pub fn is_streaming(&self) -> bool {
        matches!(self.streaming, Streaming::Running)
    }

    /// Holds back what is pushed from a streamed transcode until the next `sync`.
    pub fn hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Makes every byte received so far durable (`fdatasync`) and hands it to a streamed
    /// transcode; returns how many there are.
    pub async fn sync(&mut self) -> Result<u64, AppError> {
        let file = self.file.as_mut().ok_or_else(|| AppError::Internal("upload already finished".into()))?;
        file.sync().await?;
        if self.is_streaming() {
            self.growing.written_up_to(self.bytes);
        }
        Ok(self.bytes)
    }

    /// Makes durable what is written so far without writing the staging buffer out (so a fast
    /// upload keeps writing with `O_DIRECT`); returns how many bytes are durable (up to one
    /// staging buffer fewer than received). A transcode reading the file has been given every
    /// byte already, so this is only for an upload that is not streamed.
    pub async fn sync_written(&mut self) -> Result<u64, AppError> {
        if self.is_streaming() {
            return self.sync().await;
        }
        let file = self.file.as_mut().ok_or_else(|| AppError::Internal("upload already finished".into()))?;
        file.sync_written().await
    }

    /// Takes back every byte from `offset` on (held back from a streamed transcode, never synced).
    pub async fn rewind(&mut self, offset: u64) -> Result<(), AppError> {
        let file = self.file.as_mut().ok_or_else(|| AppError::Internal("upload already finished".into()))?;
        file.rewind(offset).await?;
        self.bytes = offset;
        Ok(())
    }

    /// Appends the next bytes of the file.
    pub async fn push(&mut self, data: &[u8]) -> Result<(), AppError> {
        let limit = self.app.config.max_upload_bytes;
        self.bytes += data.len() as u64;
        if self.bytes > limit {
            return Err(AppError::TooLarge { limit });
        }
        if let Some(left) = self.meta.quota_left.filter(|left| self.bytes > *left) {
            return Err(AppError::OverQuota { left });
        }
        if self.container.is_none() {
            let room = container::ID_BYTES.saturating_sub(self.head.len());
            self.head.extend_from_slice(&data[..data.len().min(room)]);
            self.identify(false)?;
        }
        let file = self.file.as_mut().ok_or_else(|| AppError::Internal("upload already finished".into()))?;
        file.push(data).await?;
        self.app.metrics.upload_bytes.inc_by(data.len() as u64);
        match &mut self.streaming {
            Streaming::Running if !self.hold => {
                // The pipeline reads the file behind us: every byte it hears of must be in it.
                file.write_through().await?;
                self.growing.written_up_to(self.bytes);
            }
            Streaming::Running => {}
            Streaming::Sniffing(prefix) => {
                let room = SNIFF_LIMIT.saturating_sub(prefix.len());
                prefix.extend_from_slice(&data[..data.len().min(room)]);
                match sniff::streamable(prefix) {
                    None if prefix.len() < SNIFF_LIMIT => {}
                    Some(true) => self.start_streaming().await?,
                    _ => self.streaming = Streaming::No,
                }
            }
            Streaming::No => {}
        }
        Ok(())
    }

    /// Decides the container from the first bytes once they tell: the file is refused before any
    /// demuxer sees it unless it is on the allowlist.
    fn identify(&mut self, complete: bool) -> Result<(), AppError> {
        match container::identify(&self.head, complete) {
            Verdict::Accepted(c) => {
                self.container = Some(c);
                self.head = Vec::new();
                Ok(())
            }
            Verdict::NeedMore => Ok(()),
            Verdict::Refused => Err(AppError::UnsupportedInput(container::ContainerError::Refused.to_string())),
        }
    }

    /// Starts transcoding while the upload arrives, if a transcode slot is free now.
    async fn start_streaming(&mut self) -> Result<(), AppError> {
        self.streaming = Streaming::No;
        let Some(slot) = crate::jobs::try_take_slot(&self.app) else {
            info!(video_id = %self.id, "streamable upload, but every transcode slot is busy: it will be queued");
            return Ok(());
        };
        // Everything received so far goes to disk before the pipeline hears of it.
        if let Some(file) = self.file.as_mut() {
            file.write_through().await?;
        }
        if !self.hold {
            self.growing.written_up_to(self.bytes);
        }
        let rec = VideoRecord { streamed: true, ..self.meta.record(&self.id, self.bytes, self.app.config.default_visibility) };
        crate::jobs::start_streamed(&self.app, rec, KeyMaterial::generate(), self.growing.clone(), slot).await?;
        self.streaming = Streaming::Running;
        Ok(())
    }

    /// The last byte arrived: makes the file durable and records the video (queueing its job, or
    /// completing the record of the streamed transcode already running).
    pub async fn finish(mut self) -> Result<VideoRecord, AppError> {
        match self.complete().await {
            Ok(rec) => Ok(rec),
            Err(e) => {
                self.abort(&e).await;
                Err(e)
            }
        }
    }

    async fn complete(&mut self) -> Result<VideoRecord, AppError> {
        if self.container.is_none() {
            self.identify(true)?;
        }
        if let Some(file) = self.file.take() {
            file.finish().await?;
        }
        tokio::fs::rename(self.app.partial_source_path(&self.id), self.app.source_path(&self.id)).await?;
        // Object storage: the source is in the bucket before the upload is acknowledged, so any
        // worker can run its job and no node's disk is the only copy; and before a streamed
        // transcode hears the upload is complete (one that gives up then re-queues the job for
        // any worker, which fetches the source).
        self.app.storage.put_source(&self.id, &self.app.source_path(&self.id)).await?;
        self.growing.finish();
        let app = &self.app;
        let id = self.id.clone();
        let mut new_record = false;
        let rec = if matches!(self.streaming, Streaming::Running) {
            let (bytes, title, visibility) = (self.bytes, self.meta.title.clone(), self.meta.visibility);
            let id2 = id.clone();
            app.store
                .run(move |s| {
                    s.update(&id2, |v| {
                        v.upload_bytes = bytes;
                        if let Some(t) = &title {
                            v.title = t.clone();
                        }
                        if let Some(vis) = visibility {
                            v.visibility = vis;
                        }
                    })
                })
                .await?
                .ok_or_else(|| AppError::NotFound(format!("video {id} was deleted during its upload")))?
        } else {
            let rec = self.meta.record(&id, self.bytes, app.config.default_visibility);
            let r2 = rec.clone();
            // A resumable upload's record exists since its creation (and its event was sent then).
            let existed = app
                .store
                .run(move |s| {
                    let existed = s.get(&r2.id)?.is_some();
                    s.create(&r2, &KeyMaterial::generate()).map(|_| existed)
                })
                .await?;
            new_record = !existed;
            rec
        };
        // The upload is acknowledged only once the store has it on disk.
        app.store.flush().await?;
        info!(video_id = %id, bytes = self.bytes, streamed = rec.streamed, "upload complete");
        app.notify(&rec);
        if new_record {
            crate::webhooks::emit(app, "video.created", &rec).await;
        }
        app.wake.notify_waiters();
        Ok(rec)
    }

    /// The upload broke off or was refused: nothing of it stays behind, and a streamed transcode
    /// of it is stopped and forgotten with it.
    pub async fn abort(mut self, why: &AppError) {
        self.growing.abort();
        self.file = None;
        if matches!(self.streaming, Streaming::Running) {
            let id = self.id.clone();
            let _ = self.app.store.run(move |s| s.delete(&id)).await;
            let _ = self.app.store.flush().await;
            crate::jobs::cancel(&self.app, &self.id);
            remove_dir_off_executor(self.app.media_dir(&self.id)).await;
            self.app.storage.remove_video(&self.id).await;
        }
        remove_dir_off_executor(self.app.upload_dir(&self.id)).await;
        warn!(video_id = %self.id, error = %why, "upload refused");
    }
}
