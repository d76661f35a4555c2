//! The store's records: trees `videos`, `jobs` and `keys` of JSON records here, the others in
//! `accounts.rs`, `tus.rs`, `webhooks.rs` and `live.rs`; on sled or PostgreSQL (`kv.rs`).
//! Synchronous: async code reaches it through [`super::AsyncStore`].

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::kv::{transaction, Engine, Tree, TxError};
use super::StoreError;
use crate::model::{JobRecord, JobState, KeyMaterial, Status, VideoRecord};

/// The synchronous store.
pub struct Store {
    pub(super) db: Engine,
    videos: Tree,
    jobs: Tree,
    keys: Tree,
    /// Accounts (`accounts.rs`): users by id, user ids by lower-case name, sessions and API
    /// tokens by the SHA-256 of their secret.
    pub(super) users: Tree,
    pub(super) usernames: Tree,
    pub(super) sessions: Tree,
    pub(super) tokens: Tree,
    /// Sign-up invitations by the SHA-256 of their code.
    pub(super) invites: Tree,
    /// Resumable uploads in progress, by video id (`tus.rs`).
    pub(super) tus: Tree,
    /// Webhook endpoints by id, their deliveries by `{webhook id}/{sequence}`, and the pending
    /// deliveries by `{due time}/{delivery key}` (`webhooks.rs`).
    pub(super) webhooks: Tree,
    pub(super) deliveries: Tree,
    pub(super) due: Tree,
    /// Live streams by id (`live.rs`).
    pub(super) live: Tree,
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

/// [`dec`] inside a transaction.
pub(super) fn tx_dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, TxError> {
    dec(b).map_err(ConflictableTransactionError::Abort)
}

/// [`enc`] inside a transaction.
pub(super) fn tx_enc<T: Serialize>(v: &T) -> Result<Vec<u8>, TxError> {
    enc(v).map_err(ConflictableTransactionError::Abort)
}

pub(super) fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl Store {
    /// Opens (or creates) the embedded database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::on(Engine::Sled(sled::Config::new().path(path).open()?))
    }

    /// Connects to the PostgreSQL database at `url` (created if missing, migrated).
    pub fn connect(url: &str) -> Result<Store, StoreError> {
        Store::on(Engine::Postgres(std::sync::Arc::new(super::postgres::PgKv::connect(url)?)))
    }

    /// The store of a server: PostgreSQL at `database_url` if there is one, else the embedded
    /// database in `data_dir/db`.
    pub fn open_configured(data_dir: &Path, database_url: Option<&str>) -> Result<Store, StoreError> {
        match database_url {
            Some(url) => Store::connect(url),
            None => Store::open(&data_dir.join("db")),
        }
    }

    fn on(db: Engine) -> Result<Store, StoreError> {
        Ok(Store {
            videos: db.tree("videos")?,
            jobs: db.tree("jobs")?,
            keys: db.tree("keys")?,
            users: db.tree("users")?,
            usernames: db.tree("usernames")?,
            sessions: db.tree("sessions")?,
            tokens: db.tree("tokens")?,
            invites: db.tree("invites")?,
            tus: db.tree("tus")?,
            webhooks: db.tree("webhooks")?,
            deliveries: db.tree("webhook_deliveries")?,
            due: db.tree("webhook_due")?,
            live: db.tree("live")?,
            accounts_lock: std::sync::Mutex::new(()),
            accounts_generation: Default::default(),
            db,
        })
    }

    /// "sled" or "postgres".
    pub fn engine(&self) -> &'static str {
        self.db.name()
    }

    /// The videos tree, for the other parts of the store.
    pub(super) fn videos_tree(&self) -> &Tree {
        &self.videos
    }

    pub(super) fn keys_tree(&self) -> &Tree {
        &self.keys
    }

    pub(super) fn jobs_tree(&self) -> &Tree {
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
        transaction(&[&self.videos, &self.jobs, &self.keys], |t| {
            t[0].insert(video.id.as_bytes(), v.clone())?;
            t[1].insert(video.id.as_bytes(), j.clone())?;
            t[2].insert(video.id.as_bytes(), k.clone())?;
            Ok(())
        })?;
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
        for r in self.videos.values()? {
            *counts.entry(dec::<StatusOnly>(&r)?.status).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Every video, newest first.
    pub fn list(&self) -> Result<Vec<VideoRecord>, StoreError> {
        let mut out = self.videos.values()?.iter().map(|r| dec::<VideoRecord>(r)).collect::<Result<Vec<_>, _>>()?;
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
            if self.videos.compare_and_swap(id.as_bytes(), Some(&old), Some(&new))? {
                return Ok(Some(rec));
            }
        }
    }

    /// Removes a video, its job and its key, atomically. Returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        transaction(&[&self.videos, &self.jobs, &self.keys, &self.tus], |t| {
            let existed = t[0].remove(id.as_bytes())?;
            t[1].remove(id.as_bytes())?;
            t[2].remove(id.as_bytes())?;
            t[3].remove(id.as_bytes())?;
            Ok(existed)
        })
    }

    /// The key of a video.
    pub fn key(&self, id: &str) -> Result<Option<KeyMaterial>, StoreError> {
        self.keys.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Every job, in queue order.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = self.jobs.values()?.iter().map(|r| dec::<JobRecord>(r)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|j| j.seq);
        Ok(out)
    }

    /// 1-based positions of the queued jobs, by video id.
    pub fn queue_positions(&self) -> Result<HashMap<String, usize>, StoreError> {
        Ok(self.jobs()?.into_iter().filter(|j| j.state == JobState::Queued).enumerate().map(|(i, j)| (j.video_id, i + 1)).collect())
    }

    /// Makes every write so far durable (sled's log is flushed; PostgreSQL's commits are):
    /// call before acknowledging what must survive a crash.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()
    }

    /// [`Store::flush`] without blocking the executor.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db.flush_async().await
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
            let result = transaction(&[&self.jobs, &self.videos], |t| {
                let (jobs, videos) = (&t[0], &t[1]);
                let Some(cur) = jobs.get(key.as_bytes())? else { return Ok(None) };
                let cur: JobRecord = tx_dec(&cur)?;
                if cur.state != JobState::Queued {
                    return Ok(None);
                }
                let Some(v) = videos.get(key.as_bytes())? else {
                    jobs.remove(key.as_bytes())?;
                    return Ok(None);
                };
                let mut v: VideoRecord = tx_dec(&v)?;
                v.status = Status::Processing;
                v.attempts += 1;
                v.reset_output();
                v.updated_at = Utc::now();
                jobs.insert(key.as_bytes(), claimed_bytes.clone())?;
                videos.insert(key.as_bytes(), tx_enc(&v)?)?;
                Ok(Some(v))
            })?;
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
        for s in crate::store::testing::each_engine() {
            eprintln!("engine: {}", s.engine());
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

    /// Workers racing for the queue (threads here, processes sharing PostgreSQL in a scaled
    /// set-up) each get a different job, and every job is claimed once.
    #[test]
    fn racing_claims_take_each_job_once() {
        for s in crate::store::testing::each_engine() {
            eprintln!("engine: {}", s.engine());
            let ids: Vec<String> = (0..12).map(|i| format!("v{i:02}")).collect();
            for id in &ids {
                s.create(&video(id), &KeyMaterial::generate()).unwrap();
            }
            let claimed = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| {
                        while let Some((job, video)) = s.claim_next().unwrap() {
                            assert_eq!(video.status, Status::Processing);
                            claimed.lock().unwrap().push(job.video_id);
                        }
                    });
                }
            });
            let mut claimed = claimed.into_inner().unwrap();
            claimed.sort();
            assert_eq!(claimed, ids, "{}: each job once", s.engine());
            assert!(s.jobs().unwrap().iter().all(|j| j.state == JobState::Running));
        }
    }
}
