//! The store's records: trees `videos`, `jobs` and `keys` of JSON records here, the others in
//! `accounts.rs`, `tus.rs`, `webhooks.rs` and `live.rs`; on sled or PostgreSQL (`kv.rs`).
//! Synchronous: async code reaches it through [`super::AsyncStore`].

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::kv::{locking_transaction, transaction, Engine, Tree, TxError};
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
    /// Live streams by id, and the leases of broadcasts on air by video id (`live.rs`).
    pub(super) live: Tree,
    pub(super) broadcasts: Tree,
    /// Writes to users, sessions and tokens so far (`accounts.rs`).
    pub(super) accounts_generation: std::sync::atomic::AtomicU64,
    /// Held while a user is created, so that "the first admin" and "no user yet" are decided once.
    pub(super) accounts_lock: std::sync::Mutex<()>,
    /// This process's id as a job holder, and how long its claims stand without a heartbeat.
    node: String,
    lease: chrono::Duration,
}

/// How long a claim on a job stands without a heartbeat unless set (`Store::with_lease`).
const DEFAULT_LEASE: chrono::Duration = chrono::Duration::seconds(30);

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

/// A process's id as a job holder and as the name of its database connections.
fn new_node() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Store {
    /// Opens (or creates) the embedded database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::on(Engine::Sled(sled::Config::new().path(path).open()?), new_node())
    }

    /// Connects to the PostgreSQL database at `url` (created if missing, migrated).
    pub fn connect(url: &str) -> Result<Store, StoreError> {
        let node = new_node();
        Store::on(Engine::Postgres(std::sync::Arc::new(super::postgres::PgKv::connect(url, &node)?)), node)
    }

    /// The store of a server: PostgreSQL at `database_url` if there is one, else the embedded
    /// database in `data_dir/db`.
    pub fn open_configured(data_dir: &Path, database_url: Option<&str>) -> Result<Store, StoreError> {
        match database_url {
            Some(url) => Store::connect(url),
            None => Store::open(&data_dir.join("db")),
        }
    }

    fn on(db: Engine, node: String) -> Result<Store, StoreError> {
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
            broadcasts: db.tree("broadcasts")?,
            accounts_lock: std::sync::Mutex::new(()),
            accounts_generation: Default::default(),
            node,
            lease: DEFAULT_LEASE,
            db,
        })
    }

    /// Claims on jobs stand for `lease` without a heartbeat.
    pub fn with_lease(self, lease: std::time::Duration) -> Store {
        Store { lease: chrono::Duration::from_std(lease).unwrap_or(DEFAULT_LEASE), ..self }
    }

    /// This process's id as a job holder.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// When a lease taken or renewed now ends.
    pub(super) fn lease_from_now(&self) -> chrono::DateTime<Utc> {
        Utc::now() + self.lease
    }

    /// Whether other processes may share the jobs (PostgreSQL): then claims are leases that
    /// expire, and a running job is only taken back from a holder whose lease has expired. On
    /// sled only one process opens the database, so whatever ran before it started is over.
    pub fn shares_jobs(&self) -> bool {
        matches!(self.db, Engine::Postgres(_))
    }

    /// A running job of another holder whose lease has expired (on a shared database).
    fn expired(&self, job: &JobRecord, now: chrono::DateTime<Utc>) -> bool {
        self.shares_jobs()
            && job.state == JobState::Running
            && job.holder.as_deref() != Some(&self.node)
            && job.lease_until.is_none_or(|t| t < now)
    }

    /// On a shared database, what other processes change, as it happens (`None` on sled: no
    /// other process opens it).
    pub fn listen_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<super::Change>>, StoreError> {
        match &self.db {
            Engine::Postgres(pg) => pg.listen(&self.node).map(Some),
            Engine::Sled(_) => Ok(None),
        }
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
        let now = Utc::now();
        let running = state == JobState::Running;
        let job = JobRecord {
            video_id: video.id.clone(),
            state,
            seq,
            enqueued_at: now,
            holder: running.then(|| self.node.clone()),
            lease_until: running.then(|| now + self.lease),
        };
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

    /// Claims the oldest queued job, or on a shared database a running one whose holder's lease
    /// has expired (its process died or lost the database): the claim is a transaction that
    /// finds the job as it was read, so two workers never get the same one.
    ///
    /// The job turns `running` under this process's lease and its video `processing` (a new
    /// attempt, everything of an earlier run cleared) in one transaction, so no reader ever sees
    /// a queued video without a queued job. A job whose video is gone is dropped.
    pub fn claim_next(&self) -> Result<Option<(JobRecord, VideoRecord)>, StoreError> {
        let now = Utc::now();
        for job in self.jobs()? {
            if job.state != JobState::Queued && !self.expired(&job, now) {
                continue;
            }
            let key = job.video_id.clone();
            let claimed =
                JobRecord { state: JobState::Running, holder: Some(self.node.clone()), lease_until: Some(now + self.lease), ..job.clone() };
            let claimed_bytes = enc(&claimed)?;
            // On PostgreSQL: `FOR UPDATE SKIP LOCKED` on the job, so a job another process is
            // claiming is passed over at once (no waiting, no serialization failure to retry),
            // and the job's row and its video's stay locked until the claim commits.
            let result = locking_transaction(&[&self.jobs, &self.videos], |t| {
                let (jobs, videos) = (&t[0], &t[1]);
                let Some(cur) = jobs.lock_or_skip(key.as_bytes())? else { return Ok(None) };
                let cur: JobRecord = tx_dec(&cur)?;
                if cur != job {
                    return Ok(None);
                }
                let Some(v) = videos.lock(key.as_bytes())? else {
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
                if job.state == JobState::Running {
                    tracing::warn!(video_id = %key, holder = ?job.holder, "took over a job whose holder's lease expired");
                }
                return Ok(Some((claimed, v)));
            }
        }
        Ok(None)
    }

    /// Puts a job back in the queue (at the front: it keeps its sequence number).
    pub fn requeue(&self, id: &str) -> Result<(), StoreError> {
        if let Some(b) = self.jobs.get(id.as_bytes())? {
            let job: JobRecord = dec(&b)?;
            self.jobs.insert(id.as_bytes(), enc(&JobRecord { state: JobState::Queued, holder: None, lease_until: None, ..job })?)?;
        }
        Ok(())
    }

    /// Removes a finished job.
    pub fn finish_job(&self, id: &str) -> Result<(), StoreError> {
        self.jobs.remove(id.as_bytes())?;
        Ok(())
    }

    /// The heartbeat: renews the lease of every job this process holds. Returns those of
    /// `mine` (the jobs this process runs) that another process holds now, or that went back to
    /// the queue: their lease was lost, and they must stop here.
    pub fn renew_leases(&self, mine: &[String]) -> Result<Vec<String>, StoreError> {
        let mut lost = Vec::new();
        for (k, seen) in self.jobs.entries()? {
            let job: JobRecord = dec(&seen)?;
            let held = job.state == JobState::Running && job.holder.as_deref() == Some(&self.node);
            if !held {
                if mine.contains(&job.video_id) {
                    lost.push(job.video_id);
                }
                continue;
            }
            let renewed = enc(&JobRecord { lease_until: Some(Utc::now() + self.lease), ..job.clone() })?;
            // A claim by another process between the read and this write wins.
            if !self.jobs.compare_and_swap(&k, Some(&seen), Some(&renewed))? && mine.contains(&job.video_id) {
                lost.push(job.video_id);
            }
        }
        // Broadcasts on air here (they have no job) are in `mine` too.
        self.renew_broadcasts(mine)?;
        Ok(lost)
    }

    /// Jobs a previous process left running: back to queued. Returns their ids. On a shared
    /// database only those whose lease has expired: the others are running elsewhere.
    pub fn recover_running(&self) -> Result<Vec<String>, StoreError> {
        let (mut ids, now) = (Vec::new(), Utc::now());
        for job in self.jobs()? {
            if job.state == JobState::Running && (!self.shares_jobs() || self.expired(&job, now)) {
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
            if s.shares_jobs() {
                // On a shared database this process's live leases are not a previous run's left-overs.
                assert!(s.recover_running().unwrap().is_empty());
                s.requeue("a").unwrap();
                s.requeue("b").unwrap();
            } else {
                assert_eq!(s.recover_running().unwrap(), vec!["a".to_string(), "b".to_string()]);
            }
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

    /// On a shared database a process hears at once of the videos and jobs another one
    /// changes, and not of its own changes.
    #[test]
    fn another_process_hears_of_videos_and_jobs_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let next = |rx: &mut tokio::sync::mpsc::Receiver<crate::store::Change>| {
            rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await })
                .expect("a change within 10 s")
                .expect("the listener runs")
        };
        for s in crate::store::testing::each_engine() {
            eprintln!("engine: {}", s.engine());
            let Some(url) = s.url() else {
                assert!(s.listen_changes().unwrap().is_none());
                continue;
            };
            let other = Store::connect(&url).unwrap();
            let (mut mine, mut theirs) = (s.listen_changes().unwrap().unwrap(), other.listen_changes().unwrap().unwrap());
            // Each listener says when it listens.
            assert_eq!(next(&mut mine), crate::store::Change::Resync);
            assert_eq!(next(&mut theirs), crate::store::Change::Resync);
            s.create(&video("a"), &KeyMaterial::generate()).unwrap();
            let mut heard = vec![next(&mut theirs), next(&mut theirs)];
            heard.sort_by_key(|c| format!("{c:?}"));
            assert_eq!(heard, vec![crate::store::Change::Job, crate::store::Change::Video("a".into())]);
            // This process's own creation of "a" came first, but it hears only the other's of "b".
            other.create(&video("b"), &KeyMaterial::generate()).unwrap();
            let mut heard = vec![next(&mut mine), next(&mut mine)];
            heard.sort_by_key(|c| format!("{c:?}"));
            assert_eq!(heard, vec![crate::store::Change::Job, crate::store::Change::Video("b".into())]);
            assert!(mine.try_recv().is_err(), "nothing else: its own changes are skipped");
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

    /// On PostgreSQL a claim passes over a job whose row another transaction holds (another
    /// process in the middle of claiming it) at once, and takes the next job (`SKIP LOCKED`); the
    /// `SERIALIZABLE` claim before it waited for that transaction to end.
    #[test]
    fn a_claim_passes_over_a_job_another_claim_holds() {
        use sqlx::Connection;
        let engines = crate::store::testing::each_engine();
        let url = engines[1].url().unwrap();
        let s = Store::connect(&url).unwrap();
        for id in ["first", "second"] {
            s.create(&video(id), &KeyMaterial::generate()).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut holder = rt.block_on(sqlx::PgConnection::connect(&url)).unwrap();
        rt.block_on(async {
            sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
            sqlx::query("SELECT v FROM cascade_kv WHERE tree = 'jobs' AND k = $1 FOR UPDATE")
                .bind(b"first".to_vec())
                .fetch_one(&mut holder)
                .await
                .unwrap();
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _ = tx.send(s.claim_next().map(|c| c.map(|(job, _)| job.video_id)));
            });
            // Bounded: the holder is released below whatever the claim does, so the scope ends.
            let got = rx.recv_timeout(std::time::Duration::from_secs(10));
            rt.block_on(async { sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap() });
            let got = got.expect("the claim waited for the other transaction");
            assert_eq!(got.unwrap().as_deref(), Some("second"));
        });
        // Released: the first job is claimable again.
        assert_eq!(s.claim_next().unwrap().map(|(job, _)| job.video_id).as_deref(), Some("first"));
    }

    /// Two processes on one PostgreSQL database: a running job is not taken from a holder whose
    /// lease stands, is taken once it has expired (a new attempt), and the old holder's heartbeat
    /// then reports it lost. On sled (one process) nothing is taken back while running.
    #[test]
    fn an_expired_lease_lets_another_process_take_the_job_over() {
        let dir = tempfile::tempdir().unwrap();
        let sled = Store::open(&dir.path().join("db")).unwrap().with_lease(std::time::Duration::ZERO);
        sled.create(&video("s"), &KeyMaterial::generate()).unwrap();
        assert!(!sled.shares_jobs());
        assert!(sled.claim_next().unwrap().is_some());
        assert!(sled.claim_next().unwrap().is_none(), "sled: a running job stays with its process");
        let engines = crate::store::testing::each_engine();

        let url = engines[1].url().unwrap();
        let long = Store::connect(&url).unwrap().with_lease(std::time::Duration::from_secs(3600));
        let other = Store::connect(&url).unwrap();
        assert!(long.shares_jobs() && long.node() != other.node());
        long.create(&video("a"), &KeyMaterial::generate()).unwrap();
        let (job, _) = long.claim_next().unwrap().unwrap();
        assert_eq!(job.holder.as_deref(), Some(long.node()));
        assert!(other.claim_next().unwrap().is_none(), "the lease stands");
        assert!(other.recover_running().unwrap().is_empty(), "a start elsewhere leaves it running");
        assert!(long.renew_leases(&["a".into()]).unwrap().is_empty());

        // A holder whose lease is already over (as if it had sent no heartbeat for a lease).
        let dead = Store::connect(&url).unwrap().with_lease(std::time::Duration::ZERO);
        dead.create(&video("b"), &KeyMaterial::generate()).unwrap();
        let (b, _) = dead.claim_next().unwrap().unwrap();
        assert_eq!(b.video_id, "b");
        let (taken, v) = other.claim_next().unwrap().expect("an expired lease is taken over");
        assert_eq!((taken.video_id.as_str(), taken.holder.as_deref(), v.attempts), ("b", Some(other.node()), 2));
        assert!(long.claim_next().unwrap().is_none(), "taken once");
        assert_eq!(dead.renew_leases(&["b".into()]).unwrap(), vec!["b".to_string()], "the old holder learns it lost the job");
        assert!(other.renew_leases(&["b".into()]).unwrap().is_empty());
    }
}
