//! Shared state of the running service and the paths of its data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, Notify};

use crate::config::Config;
use crate::error::AppError;
use crate::ladder::Ladder;
use crate::packaging::token::TokenSigner;
use crate::packaging::RenditionSummary;
use crate::packaging::{DASH_MPD, HLS_MASTER};
use crate::store::{AsyncStore, ErrorInfo, SourceInfo, Status, Store, VideoRecord};

/// The service's shared state.
pub struct App {
    pub config: Config,
    pub ladder: Ladder,
    pub store: AsyncStore,
    pub signer: TokenSigner,
    /// Every change of a video record.
    pub events: broadcast::Sender<VideoRecord>,
    /// Wakes idle workers when a job is queued.
    pub wake: Notify,
    /// Cancel flags of running jobs, by video id.
    pub running: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Videos deleted by this process: their media is refused at once, before (and even if not)
    /// their files are gone. Ids are never reused; after a restart the orphan sweep has removed
    /// the files of records that no longer exist.
    pub deleted: Mutex<std::collections::HashSet<String>>,
    pub shutting_down: AtomicBool,
    /// Segments of finished videos served from memory.
    pub segments: crate::http::cache::SegmentCache,
    /// One permit per transcode allowed at once, shared by the workers and streaming ingests.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// Playback URLs with a fresh token.
#[derive(Debug, Clone, Serialize)]
pub struct Playback {
    pub hls: String,
    pub dash: String,
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A video as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VideoView {
    pub id: String,
    pub title: String,
    pub original_name: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub status: Status,
    pub progress: f64,
    pub playable: bool,
    pub queue_position: Option<usize>,
    pub error: Option<ErrorInfo>,
    pub backend: Option<String>,
    pub fallback_reason: Option<String>,
    pub source: Option<SourceInfo>,
    pub renditions: Vec<RenditionSummary>,
    pub upload_bytes: u64,
    pub attempts: u32,
    /// Transcoding started while the upload was still arriving.
    pub streamed: bool,
    pub playback: Option<Playback>,
    /// Poster, thumbnail and storyboard URLs (behind the playback token), once they exist.
    pub images: Option<Images>,
}

/// URLs of a video's pictures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Images {
    pub poster: Option<String>,
    pub thumbnail: Option<String>,
    /// WebVTT mapping time ranges to `storyboard.jpg#xywh=…`.
    pub storyboard: Option<String>,
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Loads `CASCADE_SECRET` or the secret kept in the data dir, generating it on first start.
fn load_secret(config: &Config) -> Result<Vec<u8>, AppError> {
    if let Some(s) = &config.secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = config.data_dir.join("secret");
    match std::fs::read(&path) {
        Ok(b) if b.len() >= 32 => Ok(b),
        _ => {
            use rand::RngCore;
            let mut b = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let tmp = config.data_dir.join("secret.tmp");
            std::fs::write(&tmp, &b)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            }
            std::fs::rename(&tmp, &path)?;
            Ok(b)
        }
    }
}

impl App {
    /// Opens the data dir and the store. Blocking: call before the server starts.
    pub fn open(config: Config, ladder: Ladder) -> Result<App, AppError> {
        for d in [config.data_dir.clone(), config.data_dir.join("uploads"), config.data_dir.join("media")] {
            std::fs::create_dir_all(&d).map_err(|e| AppError::Internal(format!("cannot create {}: {e}", d.display())))?;
        }
        let store = Store::open(&config.data_dir.join("db"))?;
        let secret = load_secret(&config)?;
        Ok(App {
            signer: TokenSigner::new(&secret),
            ladder,
            store: AsyncStore::new(store),
            events: broadcast::channel(1024).0,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            deleted: Mutex::new(Default::default()),
            shutting_down: AtomicBool::new(false),
            segments: crate::http::cache::SegmentCache::new(config.segment_cache_bytes),
            slots: Arc::new(tokio::sync::Semaphore::new(config.workers)),
            config,
        })
    }

    /// Directory of a video's upload.
    pub fn upload_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("uploads").join(id)
    }

    /// The uploaded source file.
    pub fn source_path(&self, id: &str) -> PathBuf {
        self.upload_dir(id).join("source")
    }

    /// Directory of a video's served media.
    pub fn media_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("media").join(id)
    }

    /// Whether a job of the video is running in this process.
    pub fn has_running_job(&self, id: &str) -> bool {
        self.running.lock().map_or(true, |r| r.contains_key(id))
    }

    /// Whether this process deleted the video.
    pub fn is_deleted(&self, id: &str) -> bool {
        self.deleted.lock().map_or(true, |d| d.contains(id))
    }

    /// The media root.
    pub fn media_root(&self) -> PathBuf {
        self.config.data_dir.join("media")
    }

    /// Whether the service is stopping.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Tells SSE listeners about a record.
    pub fn notify(&self, rec: &VideoRecord) {
        let _ = self.events.send(rec.clone());
    }

    /// A fresh playback token and its URLs (`base` is e.g. `http://host:port`, or empty).
    pub fn playback(&self, id: &str, base: &str) -> Playback {
        let exp = now_unix() + self.config.token_ttl.as_secs();
        let token = self.signer.mint(id, exp);
        Playback {
            hls: format!("{base}/play/{token}/{HLS_MASTER}"),
            dash: format!("{base}/play/{token}/{DASH_MPD}"),
            expires_at: chrono::DateTime::from_timestamp(exp as i64, 0).unwrap_or_default(),
            token,
        }
    }

    /// The API view of a record.
    pub fn view(&self, rec: VideoRecord, queue_position: Option<usize>, base: &str) -> VideoView {
        let playback = (rec.playable || !rec.images.is_empty()).then(|| self.playback(&rec.id, base));
        let images = playback.as_ref().filter(|_| !rec.images.is_empty()).map(|p| {
            use crate::packaging::images as im;
            let url = |name: &str| rec.images.iter().any(|n| n == name).then(|| format!("{base}/play/{}/{}/{name}", p.token, im::DIR));
            Images {
                poster: url(im::POSTER),
                thumbnail: url(im::THUMBNAIL),
                storyboard: url(im::SPRITE).map(|u| u.replace(im::SPRITE, im::VTT)),
            }
        });
        let playback = playback.filter(|_| rec.playable);
        VideoView {
            images,
            queue_position: if rec.status == Status::Queued { queue_position } else { None },
            playback,
            id: rec.id,
            title: rec.title,
            original_name: rec.original_name,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            status: rec.status,
            progress: rec.progress,
            playable: rec.playable,
            error: rec.error,
            backend: rec.backend,
            fallback_reason: rec.fallback_reason,
            source: rec.source,
            renditions: rec.renditions,
            upload_bytes: rec.upload_bytes,
            attempts: rec.attempts,
            streamed: rec.streamed,
        }
    }

    /// 1-based positions of queued jobs, by video id.
    pub async fn queue_positions(&self) -> Result<HashMap<String, usize>, AppError> {
        let jobs = self.store.run(|s| s.jobs()).await?;
        Ok(jobs.into_iter().filter(|j| j.state == crate::store::JobState::Queued).enumerate().map(|(i, j)| (j.video_id, i + 1)).collect())
    }
}

impl App {
    /// Removes upload and media directories that belong to no record (a crash between writing an
    /// upload and recording it, or during a delete). Blocking; returns the ids removed.
    pub fn sweep_orphans(&self, store: &Store) -> Result<Vec<String>, AppError> {
        let mut removed = Vec::new();
        for root in [self.config.data_dir.join("uploads"), self.media_root()] {
            for entry in std::fs::read_dir(&root)?.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if store.get(&name)?.is_none() {
                    remove_dir(&entry.path())?;
                    removed.push(name);
                }
            }
        }
        Ok(removed)
    }
}

/// Removes a directory tree on the blocking pool; failures are logged (callers are cleaning up).
pub async fn remove_dir_off_executor(path: PathBuf) {
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || remove_dir(&path)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(path = %shown, error = %e, "cannot remove directory"),
        Err(e) => tracing::warn!(path = %shown, error = %e, "removal task failed"),
    }
}

/// Removes a directory tree if it exists.
pub fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
