//! The embedded store on sled: trees `videos`, `jobs` and `keys` of JSON records. Synchronous:
//! async code reaches it through [`super::AsyncStore`].

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::StoreError;
use crate::model::{JobRecord, JobState, KeyMaterial, Status, VideoRecord};

/// The synchronous store.
pub struct Store {
    pub(super) db: sled::Db,
    videos: sled::Tree,
    jobs: sled::Tree,
    keys: sled::Tree,
    /// Accounts (`accounts.rs`): users by id, user ids by lower-case name, sessions and API
    /// tokens by the SHA-256 of their secret.
    pub(super) users: sled::Tree,
    pub(super) usernames: sled::Tree,
    pub(super) sessions: sled::Tree,
    pub(super) tokens: sled::Tree,
    /// Sign-up invitations by the SHA-256 of their code.
    pub(super) invites: sled::Tree,
    /// Resumable uploads in progress, by video id (`tus.rs`).
    pub(super) tus: sled::Tree,
    /// Webhook endpoints by id, their deliveries by `{webhook id}/{sequence}`, and the pending
    /// deliveries by `{due time}/{delivery key}` (`webhooks.rs`).
    pub(super) webhooks: sled::Tree,
    pub(super) deliveries: sled::Tree,
    pub(super) due: sled::Tree,
    /// Live streams by id (`live.rs`).
    pub(super) live: sled::Tree,
    /// Writes to users, sessions and tokens so far (`accounts.rs`).
    pub(super) accounts_generation: std::sync::atomic::AtomicU64,
    /// Held while a user is created, so that "the first admin" and "no user yet" are decided once.
    pub(super) accounts_lock: std::sync::Mutex<()>,
}

pub(super) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Encode(e.to_string()))
}

pub(super) fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new().path(path).open()?;
        Ok(Store {
            videos: db.open_tree("videos")?,
            jobs: db.open_tree("jobs")?,
            keys: db.open_tree("keys")?,
            users: db.open_tree("users")?,
            usernames: db.open_tree("usernames")?,
            sessions: db.open_tree("sessions")?,
            tokens: db.open_tree("tokens")?,
            invites: db.open_tree("invites")?,
            tus: db.open_tree("tus")?,
            webhooks: db.open_tree("webhooks")?,
            deliveries: db.open_tree("webhook_deliveries")?,
            due: db.open_tree("webhook_due")?,
            live: db.open_tree("live")?,
            accounts_lock: std::sync::Mutex::new(()),
            accounts_generation: Default::default(),
            db,
        })
    }

    /// The videos tree, for the other parts of the store.
    pub(super) fn videos_tree(&self) -> &sled::Tree {
        &self.videos
    }

    pub(super) fn keys_tree(&self) -> &sled::Tree {
        &self.keys
    }

    pub(super) fn jobs_tree(&self) -> &sled::Tree {
        &self.jobs
    }

    /// Inserts a new video with its queued job and key, atomically.
    pub fn create(&self, video: &VideoRecord, key: &KeyMaterial) -> Result<JobRecord, StoreError> {
        self.create_with(video, key, JobState::Queued)
    }

    /// Inserts a new video, its key and its job in `state` (running: a streaming ingest owns it).
    pub fn create_with(&self, video: &VideoRecord, key: &KeyMaterial, state: JobState) -> Result<JobRecord, StoreError> {
        let seq = self.db.generate_id()?;
        let job = JobRecord { video_id: video.id.clone(), state, seq, enqueued_at: Utc::now() };
        let (v, j, k) = (enc(video)?, enc(&job)?, enc(key)?);
        (&self.videos, &self.jobs, &self.keys)
            .transaction(|(videos, jobs, keys)| {
                videos.insert(video.id.as_bytes(), v.clone())?;
                jobs.insert(video.id.as_bytes(), j.clone())?;
                keys.insert(video.id.as_bytes(), k.clone())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        Ok(job)
    }

    /// A video by id.
    pub fn get(&self, id: &str) -> Result<Option<VideoRecord>, StoreError> {
        self.videos.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// How many videos there are in each status (each record's status only is decoded).
    pub fn count_by_status(&self) -> Result<HashMap<Status, u64>, StoreError> {
        #[derive(Deserialize)]
        struct StatusOnly {
            status: Status,
        }
        let mut counts = HashMap::new();
        for r in self.videos.iter().values() {
            *counts.entry(dec::<StatusOnly>(&r?)?.status).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Every video, newest first.
    pub fn list(&self) -> Result<Vec<VideoRecord>, StoreError> {
        let mut out = self.videos.iter().values().map(|r| dec::<VideoRecord>(&r?)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|v| std::cmp::Reverse(v.created_at));
        Ok(out)
    }

    /// Records (all, newest first, or the one with `only`) with the 1-based queue position of each
    /// queued one. Records and jobs are separate trees: a record read just before its job was
    /// claimed would look queued without a position, so such a record is read again after the jobs
    /// (the claim updates both in one transaction).
    pub fn with_positions(&self, only: Option<&str>) -> Result<Vec<(VideoRecord, Option<usize>)>, StoreError> {
        let recs = match only {
            Some(id) => self.get(id)?.into_iter().collect(),
            None => self.list()?,
        };
        let positions = self.queue_positions()?;
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
    pub fn update(&self, id: &str, mut f: impl FnMut(&mut VideoRecord)) -> Result<Option<VideoRecord>, StoreError> {
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
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        (&self.videos, &self.jobs, &self.keys, &self.tus)
            .transaction(|(videos, jobs, keys, tus)| {
                let existed = videos.remove(id.as_bytes())?.is_some();
                jobs.remove(id.as_bytes())?;
                keys.remove(id.as_bytes())?;
                tus.remove(id.as_bytes())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(existed)
            })
            .map_err(tx_err)
    }

    /// The key of a video.
    pub fn key(&self, id: &str) -> Result<Option<KeyMaterial>, StoreError> {
        self.keys.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Every job, in queue order.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = self.jobs.iter().values().map(|r| dec::<JobRecord>(&r?)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|j| j.seq);
        Ok(out)
    }

    /// 1-based positions of the queued jobs, by video id.
    pub fn queue_positions(&self) -> Result<HashMap<String, usize>, StoreError> {
        Ok(self.jobs()?.into_iter().filter(|j| j.state == JobState::Queued).enumerate().map(|(i, j)| (j.video_id, i + 1)).collect())
    }

    /// Flushes sled's log: call before acknowledging what must survive a crash.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Flushes the log without blocking the executor.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Claims the oldest queued job (compare-and-swap, so two workers never get the same one).
    ///
    /// The job turns `running` and its video `processing` (a new attempt, everything of an earlier
    /// run cleared) in one transaction, so no reader ever sees a queued video without a queued job.
    /// A job whose video is gone is dropped.
    pub fn claim_next(&self) -> Result<Option<(JobRecord, VideoRecord)>, StoreError> {
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
                    v.reset_output();
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
    pub fn requeue(&self, id: &str) -> Result<(), StoreError> {
        if let Some(b) = self.jobs.get(id.as_bytes())? {
            let job: JobRecord = dec(&b)?;
            self.jobs.insert(id.as_bytes(), enc(&JobRecord { state: JobState::Queued, ..job })?)?;
        }
        Ok(())
    }

    /// Removes a finished job.
    pub fn finish_job(&self, id: &str) -> Result<(), StoreError> {
        self.jobs.remove(id.as_bytes())?;
        Ok(())
    }

    /// Jobs a previous process left running: back to queued. Returns their ids.
    pub fn recover_running(&self) -> Result<Vec<String>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn video(id: &str) -> VideoRecord {
        VideoRecord::new(id, Some("t".into()), None, 0)
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
