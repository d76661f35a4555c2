//! The sled store: typed records for videos, jobs and keys. `Store` is synchronous;
//! `AsyncStore` runs every call on the blocking pool so sled never blocks the executor.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::error::AppError;
use crate::packaging::crypto::KeyMaterial;
use crate::packaging::RenditionSummary;
use crate::probe::MediaInfo;

/// Lifecycle of a video.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Processing,
    Ready,
    Failed,
}

impl Status {
    /// Whether the video will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Ready | Status::Failed)
    }
}

/// Why a video failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// The source as shown to users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub rotation: u32,
    pub video_codec: String,
    pub audio_codec: Option<String>,
    pub container: Option<String>,
}

impl SourceInfo {
    /// Summary of a probe result (display size, after rotation).
    pub fn from_media(m: &MediaInfo) -> Option<SourceInfo> {
        let v = m.video.as_ref()?;
        Some(SourceInfo {
            duration_s: m.duration_s,
            width: v.display_width,
            height: v.display_height,
            fps: if v.fps_den > 0 { v.fps_num as f64 / v.fps_den as f64 } else { 0.0 },
            rotation: v.rotation,
            video_codec: v.codec.clone(),
            audio_codec: m.audio.as_ref().map(|a| a.codec.clone()),
            container: m.container.clone(),
        })
    }
}

/// One uploaded video.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VideoRecord {
    pub id: String,
    pub title: String,
    pub original_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: Status,
    pub progress: f64,
    pub playable: bool,
    pub error: Option<ErrorInfo>,
    /// `gstreamer` or `ffmpeg`: the back end that produced (or last tried) the output.
    pub backend: Option<String>,
    /// Why the first back end failed when another one produced the output.
    pub fallback_reason: Option<String>,
    pub source: Option<SourceInfo>,
    pub renditions: Vec<RenditionSummary>,
    /// Manifest paths relative to the video's media dir, once published.
    pub manifests: Option<Manifests>,
    pub upload_bytes: u64,
    /// Runs of the job so far (a crash mid-run counts).
    pub attempts: u32,
    /// Images available under `images/` (file names).
    #[serde(default)]
    pub images: Vec<String>,
    /// Transcoding started while the upload was still arriving.
    #[serde(default)]
    pub streamed: bool,
    /// The uploading client's own reference (`?ref=`), to find the record during the upload.
    #[serde(default)]
    pub client_ref: Option<String>,
}

/// Manifest paths relative to the video's media directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifests {
    pub hls: String,
    pub dash: String,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
}

/// A transcode job; exists while the video is queued or processing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub video_id: String,
    pub state: JobState,
    /// Queue order (monotonic).
    pub seq: u64,
    pub enqueued_at: DateTime<Utc>,
}

/// The synchronous store.
pub struct Store {
    db: sled::Db,
    videos: sled::Tree,
    jobs: sled::Tree,
    keys: sled::Tree,
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, AppError> {
    serde_json::to_vec(v).map_err(|e| AppError::Internal(e.to_string()))
}

fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(b).map_err(|e| AppError::Store(format!("corrupt record: {e}")))
}

fn tx_err(e: TransactionError<AppError>) -> AppError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, AppError> {
        let db = sled::Config::new().path(path).open()?;
        Ok(Store { videos: db.open_tree("videos")?, jobs: db.open_tree("jobs")?, keys: db.open_tree("keys")?, db })
    }

    /// Inserts a new video with its queued job and key, atomically.
    pub fn create(&self, video: &VideoRecord, key: &KeyMaterial) -> Result<JobRecord, AppError> {
        self.create_with(video, key, JobState::Queued)
    }

    /// Inserts a new video, its key and its job in `state` (running: a streaming ingest owns it).
    pub fn create_with(&self, video: &VideoRecord, key: &KeyMaterial, state: JobState) -> Result<JobRecord, AppError> {
        let seq = self.db.generate_id()?;
        let job = JobRecord { video_id: video.id.clone(), state, seq, enqueued_at: Utc::now() };
        let (v, j, k) = (enc(video)?, enc(&job)?, enc(key)?);
        (&self.videos, &self.jobs, &self.keys)
            .transaction(|(videos, jobs, keys)| {
                videos.insert(video.id.as_bytes(), v.clone())?;
                jobs.insert(video.id.as_bytes(), j.clone())?;
                keys.insert(video.id.as_bytes(), k.clone())?;
                Ok::<_, ConflictableTransactionError<AppError>>(())
            })
            .map_err(tx_err)?;
        Ok(job)
    }

    /// A video by id.
    pub fn get(&self, id: &str) -> Result<Option<VideoRecord>, AppError> {
        self.videos.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Every video, newest first.
    pub fn list(&self) -> Result<Vec<VideoRecord>, AppError> {
        let mut out = self.videos.iter().values().map(|r| dec::<VideoRecord>(&r?)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
    }

    /// Records (all, newest first, or the one with `only`) with the 1-based queue position of each
    /// queued one. Records and jobs are separate trees: a record read just before its job was
    /// claimed would look queued without a position, so such a record is read again after the jobs
    /// (the claim updates both in one transaction).
    pub fn with_positions(&self, only: Option<&str>) -> Result<Vec<(VideoRecord, Option<usize>)>, AppError> {
        let recs = match only {
            Some(id) => self.get(id)?.into_iter().collect(),
            None => self.list()?,
        };
        let positions: std::collections::HashMap<String, usize> =
            self.jobs()?.into_iter().filter(|j| j.state == JobState::Queued).enumerate().map(|(i, j)| (j.video_id, i + 1)).collect();
        recs.into_iter()
            .map(|r| {
                let pos = positions.get(&r.id).copied();
                if r.status == Status::Queued && pos.is_none() {
                    let fresh = self.get(&r.id)?.unwrap_or(r);
                    return Ok((fresh, None));
                }
                Ok((r, pos))
            })
            .collect()
    }

    /// Applies `f` to a video atomically (compare-and-swap); `None` when it does not exist.
    pub fn update(&self, id: &str, mut f: impl FnMut(&mut VideoRecord)) -> Result<Option<VideoRecord>, AppError> {
        loop {
            let Some(old) = self.videos.get(id.as_bytes())? else { return Ok(None) };
            let mut rec: VideoRecord = dec(&old)?;
            f(&mut rec);
            rec.updated_at = Utc::now();
            let new = enc(&rec)?;
            match self.videos.compare_and_swap(id.as_bytes(), Some(old), Some(new))? {
                Ok(()) => return Ok(Some(rec)),
                Err(_) => continue,
            }
        }
    }

    /// Removes a video, its job and its key, atomically. Returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool, AppError> {
        (&self.videos, &self.jobs, &self.keys)
            .transaction(|(videos, jobs, keys)| {
                let existed = videos.remove(id.as_bytes())?.is_some();
                jobs.remove(id.as_bytes())?;
                keys.remove(id.as_bytes())?;
                Ok::<_, ConflictableTransactionError<AppError>>(existed)
            })
            .map_err(tx_err)
    }

    /// The key of a video.
    pub fn key(&self, id: &str) -> Result<Option<KeyMaterial>, AppError> {
        self.keys.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Every job, in queue order.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, AppError> {
        let mut out = self.jobs.iter().values().map(|r| dec::<JobRecord>(&r?)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|j| j.seq);
        Ok(out)
    }

    /// Claims the oldest queued job (compare-and-swap, so two workers never get the same one).
    ///
    /// The job turns `running` and its video `processing` (a new attempt, everything of an earlier
    /// run cleared) in one transaction, so no reader ever sees a queued video without a queued job.
    /// A job whose video is gone is dropped.
    pub fn claim_next(&self) -> Result<Option<(JobRecord, VideoRecord)>, AppError> {
        for job in self.jobs()? {
            if job.state != JobState::Queued {
                continue;
            }
            let key = job.video_id.clone();
            let claimed = JobRecord { state: JobState::Running, ..job.clone() };
            let claimed_bytes = enc(&claimed)?;
            let result = (&self.jobs, &self.videos)
                .transaction(|(jobs, videos)| {
                    let Some(cur) = jobs.get(key.as_bytes())? else { return Ok(None) };
                    let cur: JobRecord = dec(&cur).map_err(ConflictableTransactionError::Abort)?;
                    if cur.state != JobState::Queued {
                        return Ok(None);
                    }
                    let Some(v) = videos.get(key.as_bytes())? else {
                        jobs.remove(key.as_bytes())?;
                        return Ok(None);
                    };
                    let mut v: VideoRecord = dec(&v).map_err(ConflictableTransactionError::Abort)?;
                    v.status = Status::Processing;
                    v.attempts += 1;
                    v.progress = 0.0;
                    v.playable = false;
                    v.error = None;
                    v.renditions.clear();
                    v.images.clear();
                    v.manifests = None;
                    v.updated_at = Utc::now();
                    jobs.insert(key.as_bytes(), claimed_bytes.clone())?;
                    videos.insert(key.as_bytes(), enc(&v).map_err(ConflictableTransactionError::Abort)?)?;
                    Ok(Some(v))
                })
                .map_err(tx_err)?;
            if let Some(v) = result {
                return Ok(Some((claimed, v)));
            }
        }
        Ok(None)
    }

    /// Puts a job back in the queue (at the front: it keeps its sequence number).
    pub fn requeue(&self, id: &str) -> Result<(), AppError> {
        if let Some(b) = self.jobs.get(id.as_bytes())? {
            let job: JobRecord = dec(&b)?;
            self.jobs.insert(id.as_bytes(), enc(&JobRecord { state: JobState::Queued, ..job })?)?;
        }
        Ok(())
    }

    /// Removes a finished job.
    pub fn finish_job(&self, id: &str) -> Result<(), AppError> {
        self.jobs.remove(id.as_bytes())?;
        Ok(())
    }

    /// Jobs a previous process left running: back to queued. Returns their ids.
    pub fn recover_running(&self) -> Result<Vec<String>, AppError> {
        let mut ids = Vec::new();
        for job in self.jobs()? {
            if job.state == JobState::Running {
                self.requeue(&job.video_id)?;
                ids.push(job.video_id);
            }
        }
        Ok(ids)
    }
}

/// The store for async code: every call runs on the blocking pool.
#[derive(Clone)]
pub struct AsyncStore(Arc<Store>);

impl AsyncStore {
    /// Wraps a store.
    pub fn new(store: Store) -> AsyncStore {
        AsyncStore(Arc::new(store))
    }

    /// Runs `f` with the store off the async executor.
    pub async fn run<R: Send + 'static>(&self, f: impl FnOnce(&Store) -> Result<R, AppError> + Send + 'static) -> Result<R, AppError> {
        let s = self.0.clone();
        tokio::task::spawn_blocking(move || f(&s)).await.map_err(|e| AppError::Internal(format!("store task failed: {e}")))?
    }

    /// The store itself, for code already on the blocking pool.
    pub fn blocking(&self) -> Arc<Store> {
        self.0.clone()
    }

    /// Flushes sled's log (awaited): call before acknowledging what must survive a crash.
    pub async fn flush(&self) -> Result<(), AppError> {
        self.0.db.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn video(id: &str) -> VideoRecord {
        VideoRecord {
            id: id.into(),
            title: "t".into(),
            original_name: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            status: Status::Queued,
            progress: 0.0,
            playable: false,
            error: None,
            backend: None,
            fallback_reason: None,
            source: None,
            renditions: vec![],
            manifests: None,
            upload_bytes: 0,
            attempts: 0,
            images: vec![],
            streamed: false,
            client_ref: None,
        }
    }

    #[test]
    fn create_claim_recover_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let key = KeyMaterial::generate();
        s.create(&video("a"), &key).unwrap();
        s.create(&video("b"), &KeyMaterial::generate()).unwrap();
        assert_eq!(s.key("a").unwrap(), Some(key));
        let (j, v) = s.claim_next().unwrap().unwrap();
        assert_eq!(j.video_id, "a");
        assert_eq!((v.status, v.attempts), (Status::Processing, 1));
        assert_eq!(s.get("a").unwrap().unwrap().status, Status::Processing);
        assert_eq!(s.claim_next().unwrap().unwrap().0.video_id, "b");
        assert!(s.claim_next().unwrap().is_none());
        assert_eq!(s.recover_running().unwrap(), vec!["a".to_string(), "b".to_string()]);
        let (j, v) = s.claim_next().unwrap().unwrap();
        assert_eq!((j.video_id.as_str(), v.attempts), ("a", 2));
        let r = s.update("a", |v| v.status = Status::Processing).unwrap().unwrap();
        assert_eq!(r.status, Status::Processing);
        assert!(s.update("zzz", |_| {}).unwrap().is_none());
        assert!(s.delete("a").unwrap());
        assert!(!s.delete("a").unwrap());
        assert!(s.key("a").unwrap().is_none());
        assert_eq!(s.jobs().unwrap().len(), 1);
    }
}
