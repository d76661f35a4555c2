//! JSON API: upload, list, get, delete, and Server-Sent Events per video.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Buf;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tracing::{info, warn};
use warp::http::StatusCode;
use warp::multipart::FormData;

use crate::app::{remove_dir_off_executor, App, VideoView};
use crate::error::AppError;
use crate::ingest::{streamable, Growing};
use crate::jobs::worker::run_job;
use crate::packaging::crypto::KeyMaterial;
use crate::store::{JobState, Status, VideoRecord};

/// Longest title kept.
const MAX_TITLE: usize = 200;

/// Free bytes on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// `scheme://host` of the request, for absolute playback URLs.
pub fn base_url(host: Option<String>, forwarded_proto: Option<String>) -> String {
    match host {
        Some(h) if !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) => {
            let proto = forwarded_proto.filter(|p| p == "https" || p == "http").unwrap_or_else(|| "http".into());
            format!("{proto}://{h}")
        }
        _ => String::new(),
    }
}

/// What an upload request carried.
struct Received {
    bytes: u64,
    title: Option<String>,
    original_name: Option<String>,
}

/// Decides, from the first bytes of an upload, whether to transcode it while it arrives, and
/// starts that job (taking a transcode slot) when it can.
struct Ingest {
    app: Arc<App>,
    client_ref: Option<String>,
    id: String,
    growing: Arc<Growing>,
    prefix: Vec<u8>,
    decided: bool,
    started: bool,
}

/// Bytes looked at before giving up on recognising a streamable container.
const SNIFF_LIMIT: usize = 1 << 20;

impl Ingest {
    async fn on_chunk(&mut self, data: &[u8], got: &Received) -> Result<(), AppError> {
        self.growing.wrote(data.len() as u64);
        if self.decided {
            return Ok(());
        }
        let room = SNIFF_LIMIT.saturating_sub(self.prefix.len());
        self.prefix.extend_from_slice(&data[..data.len().min(room)]);
        match streamable(&self.prefix) {
            None if self.prefix.len() < SNIFF_LIMIT => Ok(()),
            Some(true) => {
                self.decided = true;
                self.start(got).await
            }
            _ => {
                self.decided = true;
                Ok(())
            }
        }
    }

    async fn start(&mut self, got: &Received) -> Result<(), AppError> {
        let Ok(permit) = self.app.slots.clone().try_acquire_owned() else {
            info!(video_id = %self.id, "streamable upload, but every transcode slot is busy: it will be queued");
            return Ok(());
        };
        let now = chrono::Utc::now();
        let rec = VideoRecord {
            status: Status::Processing,
            attempts: 1,
            streamed: true,
            client_ref: self.client_ref.clone(),
            ..new_record(&self.id, got, now)
        };
        let key = KeyMaterial::generate();
        let r2 = rec.clone();
        let job = self.app.store.run(move |s| s.create_with(&r2, &key, JobState::Running)).await?;
        self.app.store.flush().await?;
        self.app.notify(&rec);
        info!(video_id = %self.id, "streamable upload: transcoding while it arrives");
        let (app, growing) = (self.app.clone(), self.growing.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = run_job(&app, &job, rec, Some(growing)).await {
                tracing::error!(video_id = %job.video_id, error = %e, "streaming job bookkeeping failed");
            }
        });
        self.started = true;
        Ok(())
    }
}

fn new_record(id: &str, got: &Received, now: chrono::DateTime<chrono::Utc>) -> VideoRecord {
    let title = got
        .title
        .clone()
        .or_else(|| got.original_name.clone().map(|n| n.rsplit_once('.').map(|(a, _)| a.to_string()).unwrap_or(n)))
        .unwrap_or_else(|| "Untitled video".into());
    VideoRecord {
        id: id.to_string(),
        title,
        original_name: got.original_name.clone(),
        created_at: now,
        updated_at: now,
        status: Status::Queued,
        progress: 0.0,
        playable: false,
        error: None,
        backend: None,
        fallback_reason: None,
        source: None,
        renditions: vec![],
        manifests: None,
        upload_bytes: got.bytes,
        attempts: 0,
        images: vec![],
        streamed: false,
        client_ref: None,
    }
}

/// Upload bytes staged per write. Large `O_DIRECT` writes are what keep the disk busy: the
/// kernel splits one into requests of at most 1.25 MiB here (`max_sectors_kb`) and submits them
/// together, so the write size is the queue depth. 2 GiB uploads with curl, one write in flight
/// while the next buffer fills: 1 MiB 1.0–1.1 GB/s, 4 MiB 1.1–1.26, 8 MiB 1.33–1.36, 16 MiB
/// 1.47–1.58 (`cp` 1.4–1.8); without writing at all, the receiving side alone did 1.9–2.0 GB/s.
const WRITE_BATCH: usize = 16 << 20;

/// Uploads staging with `WRITE_BATCH` buffers at once (three each, so 192 MiB at most); the others
/// stage with `SMALL_BATCH`. A place is held until the last of its buffers is freed (writes in
/// flight included).
const BIG_STAGING_UPLOADS: usize = 4;
const SMALL_BATCH: usize = 1 << 20;
static BIG_STAGING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the `BIG_STAGING_UPLOADS` places, given back when dropped.
struct BigPlace;

impl BigPlace {
    fn take() -> Option<BigPlace> {
        use std::sync::atomic::Ordering;
        BIG_STAGING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < BIG_STAGING_UPLOADS).then_some(n + 1)).ok().map(|_| BigPlace)
    }
}

impl Drop for BigPlace {
    fn drop(&mut self) {
        BIG_STAGING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Block size for `O_DIRECT` writes: offsets, lengths and buffer addresses are multiples of it
/// (covers 512- and 4096-byte logical sectors).
const DIRECT_ALIGN: usize = 4096;

/// A staging buffer whose start is aligned for `O_DIRECT` (capacity a multiple of the block).
struct AlignedBuf {
    v: Vec<u8>,
    off: usize,
    len: usize,
    cap: usize,
}

impl AlignedBuf {
    fn new(cap: usize) -> Self {
        let cap = cap.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let v = vec![0u8; cap + DIRECT_ALIGN];
        let off = v.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf { v, off, len: 0, cap }
    }

    /// Copies as much of `data` as fits; returns how much.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        let at = self.off + self.len;
        self.v[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == self.cap
    }
}

/// The upload file and how it is written. Uploads are written with `O_DIRECT` where the file
/// system allows it: on this machine's disk a buffered `write()` + `fsync` of 2 GiB took 2–6 s
/// (`dd bs=1M conv=fsync`) against 1.2–1.8 s with `O_DIRECT` and 1.5 s for `cp` (which copies in
/// the kernel with `copy_file_range`); the copy into the page cache was the upload's largest cost
/// in perf. Bytes are staged in aligned buffers and written in whole blocks at their offsets
/// (`pwrite`, so writes in flight at once cannot reorder); the tail, and everything once
/// streaming ingest reads the file as it grows, goes through the page cache.
struct Sink {
    file: std::fs::File,
    direct: std::sync::atomic::AtomicBool,
}

impl Sink {
    /// Creates `dest`, with `O_DIRECT` if the file system supports it (tmpfs does not).
    fn create(dest: &Path) -> std::io::Result<Sink> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags| std::fs::OpenOptions::new().write(true).create(true).truncate(true).custom_flags(flags).open(dest);
        let (file, direct) = match open(libc::O_DIRECT) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
            Err(e) => return Err(e),
        };
        Ok(Sink { file, direct: direct.into() })
    }

    fn is_direct(&self) -> bool {
        self.direct.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Turns `O_DIRECT` off: for the tail, for streaming ingest, or when the file system refuses it.
    fn leave_direct(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.direct.store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Writes the staged bytes at `offset`. A buffer that is not a whole number of blocks (the
    /// tail, or a write-through for streaming ingest) ends `O_DIRECT`, and later writes go
    /// through the page cache. A file system that accepted `O_DIRECT` at open but refuses a write
    /// with EINVAL (e.g. a larger logical block) gets the rest through the page cache.
    fn write_at(&self, buf: &AlignedBuf, offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if buf.len % DIRECT_ALIGN != 0 && self.is_direct() {
            self.leave_direct()?;
        }
        let data = &buf.v[buf.off..buf.off + buf.len];
        let mut done = 0;
        while done < data.len() {
            // Whether this write went out with O_DIRECT: another write in flight may turn it off
            // meanwhile, and this one must then be retried, not failed.
            let was_direct = self.is_direct();
            match self.file.write_at(&data[done..], offset + done as u64) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if was_direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    if self.is_direct() {
                        self.leave_direct()?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Writes of a full staging buffer in flight at once, each on the blocking pool, while the next
/// buffer fills from the socket. Two keep the disk busier than one: `dd oflag=direct bs=16M` of
/// 2 GiB took 1.5–2.3 s alone and 1.1–1.4 s as two writers at once (`cp` 1.3 s).
const WRITES_IN_FLIGHT: usize = 2;

/// The upload file. Chunks are copied into the staging buffer as they arrive and dropped at
/// once, so the multipart parser reuses its buffer: holding them until their write (as this did
/// before) made it allocate fresh memory for every chunk, and the page faults on it were about
/// 30 % of the server's CPU in a 2 GiB upload. Memory stays bounded: one buffer filling, at most
/// `WRITES_IN_FLIGHT` being written.
struct UploadFile {
    /// One of the `BIG_STAGING_UPLOADS` places, shared with the writes in flight.
    big: Option<Arc<BigPlace>>,
    size: usize,
    sink: Arc<Sink>,
    fill: AlignedBuf,
    /// Empty buffers to fill next.
    spare: Vec<AlignedBuf>,
    /// Bytes handed to writes so far: the offset of the next one.
    offset: u64,
    pending: std::collections::VecDeque<tokio::task::JoinHandle<std::io::Result<AlignedBuf>>>,
}

impl UploadFile {
    async fn create(dest: &Path) -> Result<Self, AppError> {
        let dest = dest.to_path_buf();
        let sink = tokio::task::spawn_blocking(move || Sink::create(&dest)).await.map_err(|e| AppError::Internal(e.to_string()))??;
        let big = BigPlace::take().map(Arc::new);
        let size = if big.is_some() { WRITE_BATCH } else { SMALL_BATCH };
        Ok(UploadFile {
            big,
            size,
            sink: Arc::new(sink),
            fill: AlignedBuf::new(size),
            spare: Vec::new(),
            offset: 0,
            pending: Default::default(),
        })
    }

    /// Waits for the oldest write in flight and keeps its buffer.
    async fn finish_one(&mut self) -> Result<(), AppError> {
        if let Some(h) = self.pending.pop_front() {
            let mut buf = h.await.map_err(|e| AppError::Internal(e.to_string()))??;
            buf.len = 0;
            self.spare.push(buf);
        }
        Ok(())
    }

    /// Stages `data`, starting a write of each buffer that fills up.
    async fn push(&mut self, mut data: &[u8]) -> Result<(), AppError> {
        while !data.is_empty() {
            let n = self.fill.fill(data);
            data = &data[n..];
            if self.fill.is_full() {
                if self.pending.len() >= WRITES_IN_FLIGHT {
                    self.finish_one().await?;
                }
                let next = self.spare.pop().unwrap_or_else(|| AlignedBuf::new(self.size));
                let full = std::mem::replace(&mut self.fill, next);
                let (sink, offset, place) = (self.sink.clone(), self.offset, self.big.clone());
                self.offset += full.len as u64;
                self.pending.push_back(tokio::task::spawn_blocking(move || {
                    let _place = place;
                    sink.write_at(&full, offset).map(|()| full)
                }));
            }
        }
        Ok(())
    }

    /// Writes everything staged: once this returns, a reader of the file sees every byte pushed
    /// so far (writes go through the page cache from then on).
    async fn write_through(&mut self) -> Result<(), AppError> {
        while !self.pending.is_empty() {
            self.finish_one().await?;
        }
        if self.sink.is_direct() {
            // Whatever the buffer holds, O_DIRECT ends here (and stays off).
            self.sink.leave_direct()?;
        }
        let buf = std::mem::replace(&mut self.fill, self.spare.pop().unwrap_or_else(|| AlignedBuf::new(self.size)));
        let (sink, offset) = (self.sink.clone(), self.offset);
        let mut buf = tokio::task::spawn_blocking(move || sink.write_at(&buf, offset).map(|()| buf))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??;
        self.offset += buf.len as u64;
        buf.len = 0;
        self.spare.push(buf);
        Ok(())
    }

    /// The file, after `write_through`.
    async fn into_sink(mut self) -> Result<Arc<Sink>, AppError> {
        while !self.pending.is_empty() {
            self.finish_one().await?;
        }
        Ok(self.sink.clone())
    }
}

/// Streams the multipart body: `file` to `dest`, `title` into memory (bounded).
async fn receive(mut form: FormData, dest: &Path, limit: u64, ingest: &mut Ingest) -> Result<Received, AppError> {
    let mut got = Received { bytes: 0, title: None, original_name: None };
    let mut have_file = false;
    while let Some(part) = form.try_next().await.map_err(|e| AppError::BadRequest(format!("malformed upload: {e}")))? {
        match part.name() {
            "file" if !have_file => {
                have_file = true;
                got.original_name = part.filename().map(|s| s.chars().take(MAX_TITLE).collect());
                // Body chunks are small (tens of KiB) and every write is a trip to the blocking
                // pool, so chunks are staged and written together. Measured on a 2 GiB upload:
                // ×0.63 of `cp` with a tokio write per chunk.
                let mut file = UploadFile::create(dest).await?;
                let mut stream = part.stream();
                while let Some(chunk) = stream.next().await {
                    let mut chunk = chunk.map_err(|e| AppError::BadRequest(format!("upload interrupted: {e}")))?;
                    while chunk.has_remaining() {
                        let data = chunk.chunk();
                        let n = data.len();
                        got.bytes += n as u64;
                        if got.bytes > limit {
                            return Err(AppError::TooLarge { limit });
                        }
                        let was_started = ingest.started;
                        file.push(data).await?;
                        if was_started {
                            // Streaming ingest: the pipeline reads the file behind us, so every byte
                            // counted so far must be in it before it hears of them.
                            file.write_through().await?;
                        }
                        ingest.on_chunk(data, &got).await?;
                        if ingest.started && !was_started {
                            // Streaming ingest just began: everything received so far goes in now.
                            file.write_through().await?;
                        }
                        chunk.advance(n);
                    }
                }
                file.write_through().await?;
                let sink = file.into_sink().await?;
                tokio::task::spawn_blocking(move || sink.file.sync_all()).await.map_err(|e| AppError::Internal(e.to_string()))??;
            }
            "title" => {
                let mut text = Vec::new();
                let mut stream = part.stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| AppError::BadRequest(format!("upload interrupted: {e}")))?;
                    if text.len() < 4 * MAX_TITLE {
                        text.extend_from_slice(chunk.chunk());
                    }
                }
                let t: String = String::from_utf8_lossy(&text).trim().chars().take(MAX_TITLE).collect();
                got.title = Some(t).filter(|t| !t.is_empty());
            }
            _ => {
                // Unknown parts are drained and ignored.
                let mut stream = part.stream();
                while stream.next().await.is_some() {}
            }
        }
    }
    if !have_file {
        return Err(AppError::BadRequest("the form has no `file` field".into()));
    }
    Ok(got)
}

/// `POST /api/videos`.
pub async fn upload(
    app: Arc<App>,
    content_length: Option<u64>,
    redirect: bool,
    client_ref: Option<String>,
    base: String,
    form: FormData,
) -> Result<warp::reply::Response, AppError> {
    let client_ref = client_ref.filter(|r| !r.is_empty() && r.len() <= 64 && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if app.is_shutting_down() {
        return Err(AppError::ShuttingDown);
    }
    let limit = app.config.max_upload_bytes;
    if content_length.is_some_and(|n| n > limit + 64 * 1024) {
        return Err(AppError::TooLarge { limit });
    }
    let queued = app.store.run(|s| s.jobs()).await?.len();
    if queued >= app.config.max_queued {
        return Err(AppError::QueueFull(queued));
    }
    if let Some(free) = free_bytes(&app.config.data_dir) {
        if free < app.config.min_free_bytes + content_length.unwrap_or(0) {
            return Err(AppError::InsufficientStorage { free });
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let dir = app.upload_dir(&id);
    tokio::fs::create_dir_all(&dir).await?;
    let part = dir.join("source.part");
    let growing = Arc::new(Growing::new());
    let mut ingest = Ingest {
        app: app.clone(),
        client_ref: client_ref.clone(),
        id: id.clone(),
        growing: growing.clone(),
        prefix: Vec::new(),
        decided: !app.config.stream_ingest,
        started: false,
    };
    let received = match receive(form, &part, limit, &mut ingest).await {
        Ok(r) => {
            growing.finish();
            r
        }
        Err(e) => {
            growing.abort();
            if ingest.started {
                // The job that started on this upload is stopped and forgotten with it.
                let id2 = id.clone();
                let _ = app.store.run(move |s| s.delete(&id2)).await;
                let _ = app.store.flush().await;
                crate::jobs::worker::cancel(&app, &id);
                remove_dir_off_executor(app.media_dir(&id)).await;
            }
            // Nothing of a refused or broken upload stays behind.
            remove_dir_off_executor(dir).await;
            warn!(video_id = %id, error = %e, "upload refused");
            return Err(e);
        }
    };
    tokio::fs::rename(&part, app.source_path(&id)).await?;
    let now = chrono::Utc::now();
    if ingest.started {
        let (id2, got) = (id.clone(), received);
        let rec = app
            .store
            .run(move |s| {
                s.update(&id2, |v| {
                    v.upload_bytes = got.bytes;
                    if let Some(t) = &got.title {
                        v.title = t.clone();
                    }
                })
            })
            .await?
            .ok_or_else(|| AppError::NotFound(format!("video {id} was deleted during its upload")))?;
        app.store.flush().await?;
        info!(video_id = %id, bytes = rec.upload_bytes, "streamed upload complete");
        app.notify(&rec);
        return upload_reply(&app, rec, redirect, &base).await;
    }
    let rec = VideoRecord { client_ref, ..new_record(&id, &received, now) };
    let key = KeyMaterial::generate();
    let r2 = rec.clone();
    if let Err(e) = app.store.run(move |s| s.create(&r2, &key)).await {
        remove_dir_off_executor(dir).await;
        return Err(e);
    }
    // The upload is acknowledged only once sled has it on disk.
    app.store.flush().await?;
    info!(video_id = %id, bytes = received.bytes, "upload accepted");
    app.notify(&rec);
    app.wake.notify_waiters();
    upload_reply(&app, rec, redirect, &base).await
}

async fn upload_reply(app: &App, rec: VideoRecord, redirect: bool, base: &str) -> Result<warp::reply::Response, AppError> {
    let id = rec.id.clone();
    if redirect {
        let mut r = warp::reply::Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::SEE_OTHER;
        r.headers_mut().insert(
            warp::http::header::LOCATION,
            warp::http::HeaderValue::from_str(&format!("/watch/{id}")).map_err(|e| AppError::Internal(e.to_string()))?,
        );
        return Ok(r);
    }
    let id2 = id.clone();
    let view = match app.store.run(move |s| s.with_positions(Some(&id2))).await?.pop() {
        Some((r, pos)) => app.view(r, pos, base),
        None => app.view(rec, None, base),
    };
    Ok(json_response(&view, StatusCode::CREATED))
}

/// A JSON body with a status.
pub fn json_response<T: serde::Serialize>(v: &T, status: StatusCode) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

/// `GET /api/videos`.
pub async fn list(app: Arc<App>, client_ref: Option<String>, base: String) -> Result<warp::reply::Response, AppError> {
    let mut recs = app.store.run(|s| s.with_positions(None)).await?;
    if let Some(r) = client_ref {
        recs.retain(|(v, _)| v.client_ref.as_deref() == Some(r.as_str()));
    }
    let videos: Vec<VideoView> = recs.into_iter().map(|(r, pos)| app.view(r, pos, &base)).collect();
    Ok(json_response(&serde_json::json!({ "videos": videos }), StatusCode::OK))
}

async fn get_view(app: &App, id: &str, base: &str) -> Result<VideoView, AppError> {
    let id2 = id.to_string();
    let (rec, pos) =
        app.store.run(move |s| s.with_positions(Some(&id2))).await?.pop().ok_or_else(|| AppError::NotFound(format!("no video {id}")))?;
    Ok(app.view(rec, pos, base))
}

/// `GET /api/videos/{id}`.
pub async fn get(app: Arc<App>, id: String, base: String) -> Result<warp::reply::Response, AppError> {
    Ok(json_response(&get_view(&app, &id, &base).await?, StatusCode::OK))
}

/// `DELETE /api/videos/{id}`: cancels a running job and removes record, key, source and output.
pub async fn delete(app: Arc<App>, id: String) -> Result<warp::reply::Response, AppError> {
    let id2 = id.clone();
    let existed = app.store.run(move |s| s.delete(&id2)).await?;
    if !existed {
        return Err(AppError::NotFound(format!("no video {id}")));
    }
    // From now on no media of it is served, whatever the removal of its files below does.
    app.deleted.lock().map_err(|_| AppError::Internal("lock poisoned".into()))?.insert(id.clone());
    app.segments.forget(&id);
    app.store.flush().await?;
    crate::jobs::worker::cancel(&app, &id);
    remove_dir_off_executor(app.upload_dir(&id)).await;
    remove_dir_off_executor(app.media_dir(&id)).await;
    info!(video_id = %id, "video deleted");
    let mut r = warp::reply::Response::new(Vec::new().into());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

/// `GET /api/videos/{id}/events`: the record now, then on every change, until it is final.
pub async fn events(app: Arc<App>, id: String, base: String) -> Result<warp::reply::Response, AppError> {
    use warp::Reply;
    let mut updates = app.events.subscribe();
    let first = get_view(&app, &id, &base).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<VideoView>(16);
    tokio::spawn(async move {
        let mut fin = first.status.is_final();
        if tx.send(first).await.is_err() {
            return;
        }
        while !fin {
            let view = match updates.recv().await {
                Ok(rec) if rec.id == id => {
                    let pos = app.queue_positions().await.unwrap_or_default().get(&id).copied();
                    app.view(rec, pos, &base)
                }
                Ok(_) => continue,
                // Missed updates: send the current state instead.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => match get_view(&app, &id, &base).await {
                    Ok(v) => v,
                    Err(_) => return,
                },
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            fin = view.status.is_final();
            // A send error means the client went away.
            if tx.send(view).await.is_err() {
                return;
            }
        }
    });
    let events = sse_events(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks of awkward sizes through the O_DIRECT upload file, with whole buffers written
    /// behind the receiving, then everything written through (as streaming ingest does when it
    /// starts) and buffered writes after it: the file must be exactly the bytes in order. The
    /// directory is on the repository's file system (tmpfs, which has no O_DIRECT, would only
    /// test the fallback).
    #[test]
    fn upload_file_writes_every_byte_in_order() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let dest = dir.path().join("upload");
        let mut seed = 7u32;
        let mut chunk = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect()
        };
        let mut expected = Vec::new();
        rt.block_on(async {
            let mut file = UploadFile::create(&dest).await.unwrap();
            let batch = file.fill.cap;
            let before = [1usize, 4095, 4097, 65_536, 3, batch + 17, 100_000, 2 * batch, 511];
            let after = [10usize, 5000, batch + 1];
            if !file.sink.is_direct() {
                eprintln!("this file system has no O_DIRECT: only the buffered fallback is tested");
            }
            for n in before {
                let c = chunk(n);
                expected.extend_from_slice(&c);
                file.push(&c).await.unwrap();
            }
            file.write_through().await.unwrap();
            assert!(!file.sink.is_direct(), "after the tail, writes are buffered");
            assert_eq!(std::fs::metadata(&dest).unwrap().len(), expected.len() as u64, "written through");
            for n in after {
                let c = chunk(n);
                expected.extend_from_slice(&c);
                file.push(&c).await.unwrap();
                file.write_through().await.unwrap();
            }
            drop(file.into_sink().await.unwrap());
        });
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "file content differs from the bytes written");
    }
}
