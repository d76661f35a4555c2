//! Shared state of the running service and the paths of its data directory. Nothing here
//! decides anything: the subsystems (`upload`, `jobs`, `http`) hold the logic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, Notify};

use crate::auth::token::TokenSigner;
use crate::config::Config;
use crate::error::AppError;
use crate::ladder::Ladder;
use crate::model::VideoRecord;
use crate::store::{AsyncStore, Store};

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
    /// Publishers of running jobs whose output goes to object storage, by video id.
    pub publishing: Mutex<HashMap<String, crate::storage::Publisher>>,
    /// Videos deleted by this process: their media is refused at once, before (and even if not)
    /// their files are gone. Ids are never reused; after a restart the orphan sweep has removed
    /// the files of records that no longer exist.
    pub deleted: Mutex<std::collections::HashSet<String>>,
    /// Jobs this process ran whose lease another process took over (shared database): their
    /// run ends without touching the record, the queue or the output, which are the new
    /// holder's now.
    pub lost_leases: Mutex<std::collections::HashSet<String>>,
    pub shutting_down: AtomicBool,
    /// Segments of finished videos served from memory (owned by media serving).
    pub segments: crate::http::media::cache::SegmentCache,
    /// One permit per transcode allowed at once, shared by the workers and streaming ingests.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// One permit per upload arriving at once (`CASCADE_MAX_UPLOADS`).
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Open event streams (SSE), in all and by client address.
    pub subscribers: crate::http::limits::Subscribers,
    /// Failed logins, per account and per address.
    pub logins: crate::auth::limits::LoginLimiter,
    /// Uploads arriving now, per user (for their quotas and their cap).
    pub quotas: crate::upload::quota::Quotas,
    /// Resumable uploads being appended to.
    pub tus: crate::upload::tus::Live,
    /// The one-time code of the `/setup` page, while no user exists.
    pub setup_code: Mutex<Option<String>>,
    /// What the service counts, for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The webhook sender's wake-up and its endpoints in flight.
    pub outbox: crate::webhooks::Outbox,
    /// Callers identified recently (`http::session::identify`).
    pub callers: crate::http::session::CallerCache,
    /// Stream keys, streams on air and the live slots.
    pub live: Arc<crate::live::Live>,
    /// Where media lives besides the data dir (`CASCADE_STORAGE_URL`).
    pub storage: crate::storage::Storage,
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
        let store = Store::open_configured(&config.data_dir, config.database_url.as_deref())?.with_lease(config.job_lease);
        let secret = load_secret(&config)?;
        let setup_code = store.no_users()?.then(crate::auth::accounts::new_secret);
        Ok(App {
            signer: TokenSigner::new(&secret),
            ladder,
            store: AsyncStore::new(store),
            events: broadcast::channel(1024).0,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            publishing: Mutex::new(HashMap::new()),
            deleted: Mutex::new(Default::default()),
            lost_leases: Mutex::new(Default::default()),
            shutting_down: AtomicBool::new(false),
            segments: crate::http::media::cache::SegmentCache::new(config.segment_cache_bytes),
            slots: Arc::new(tokio::sync::Semaphore::new(config.workers)),
            uploads: Arc::new(tokio::sync::Semaphore::new(config.max_uploads)),
            subscribers: crate::http::limits::Subscribers::new(config.max_subscribers, config.max_subscribers_per_ip),
            logins: Default::default(),
            quotas: Default::default(),
            tus: Default::default(),
            setup_code: Mutex::new(setup_code),
            metrics: Default::default(),
            outbox: Default::default(),
            callers: quick_cache::sync::Cache::new(10_000),
            live: Arc::new(crate::live::Live::new(config.max_live)),
            storage: crate::storage::Storage::from_config(&config)?,
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

    /// The source file while its upload is arriving (renamed to `source_path` once complete).
    pub fn partial_source_path(&self, id: &str) -> PathBuf {
        self.upload_dir(id).join("source.part")
    }

    /// Directory of a video's served media.
    pub fn media_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("media").join(id)
    }

    /// Whether a job of the video is running in this process.
    pub fn has_running_job(&self, id: &str) -> bool {
        self.running.lock().map_or(true, |r| r.contains_key(id))
    }

    /// Whether this process serves the video's media from its disk: a job of it runs here, and
    /// (in object storage) the bucket has that run's manifests, not an earlier run's that list
    /// more than it has made yet.
    pub fn serves_from_disk(&self, id: &str) -> bool {
        self.has_running_job(id) && self.publishing.lock().map_or(true, |p| p.get(id).is_none_or(|p| p.caught_up()))
    }

    /// Whether another process took over this process's job of the video; clears the mark.
    pub fn take_lost_lease(&self, id: &str) -> bool {
        self.lost_leases.lock().is_ok_and(|mut l| l.remove(id))
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
