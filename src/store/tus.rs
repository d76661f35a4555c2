//! Resumable uploads in the store: the upload's state beside its video record (status
//! `uploading`), created, advanced and ended together.

use super::kv::transaction;
use super::records::{dec, enc, tx_dec, tx_enc};
use super::{Store, StoreError};
use crate::model::{KeyMaterial, Status, TusUpload, VideoRecord};

impl Store {
    /// Creates a resumable upload and its video record (no job yet: there is nothing to
    /// transcode until the last byte arrives).
    pub fn create_tus(&self, upload: &TusUpload, video: &VideoRecord, key: &KeyMaterial) -> Result<(), StoreError> {
        let (u, v, k) = (enc(upload)?, enc(video)?, enc(key)?);
        transaction(&[&self.tus, self.videos_tree(), self.keys_tree()], |t| {
            t[0].insert(upload.id.as_bytes(), u.clone())?;
            t[1].insert(upload.id.as_bytes(), v.clone())?;
            t[2].insert(upload.id.as_bytes(), k.clone())?;
            Ok(())
        })
    }

    /// A resumable upload by id.
    pub fn tus(&self, id: &str) -> Result<Option<TusUpload>, StoreError> {
        self.tus.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Every resumable upload in progress.
    pub fn tus_uploads(&self) -> Result<Vec<TusUpload>, StoreError> {
        self.tus.values()?.iter().map(|v| dec(v)).collect()
    }

    /// Stores the upload's new state (a durable offset, a later expiry) and shows the offset in
    /// its video record. False when the upload is gone (terminated, expired, deleted).
    pub fn advance_tus(&self, upload: &TusUpload) -> Result<bool, StoreError> {
        let u = enc(upload)?;
        let id = upload.id.as_bytes();
        transaction(&[&self.tus, self.videos_tree()], |t| {
            let (tus, videos) = (&t[0], &t[1]);
            if tus.get(id)?.is_none() {
                return Ok(false);
            }
            let Some(v) = videos.get(id)? else { return Ok(false) };
            let mut v: VideoRecord = tx_dec(&v)?;
            v.upload_bytes = upload.offset;
            v.updated_at = chrono::Utc::now();
            tus.insert(id, u.clone())?;
            videos.insert(id, tx_enc(&v)?)?;
            Ok(true)
        })
    }

    /// The upload is complete (its video is recorded for transcoding by the upload module).
    pub fn end_tus(&self, id: &str) -> Result<(), StoreError> {
        self.tus.remove(id.as_bytes())?;
        Ok(())
    }

    /// After a restart: a resumable upload whose transcode had started while it arrived goes back
    /// to `uploading` without a job (the transcode starts again from the file once the last byte
    /// is in). Returns the ids whose job was dropped (their partial output is to be removed). On
    /// a shared database, not those another process is transcoding (their lease stands).
    pub fn reset_tus_jobs(&self) -> Result<Vec<String>, StoreError> {
        let (mut reset, now) = (vec![], chrono::Utc::now());
        for u in self.tus_uploads()? {
            // On a shared database, an upload another process is transcoding while it arrives
            // (its job held under a lease that stands) is that process's.
            if self.shares_jobs() {
                let job: Option<crate::model::JobRecord> =
                    self.jobs_tree().get(u.id.as_bytes())?.map(|b| super::records::dec(&b)).transpose()?;
                if job.is_some_and(|j| {
                    j.state == crate::model::JobState::Running
                        && j.holder.as_deref() != Some(self.node())
                        && j.lease_until.is_some_and(|t| t > now)
                }) {
                    continue;
                }
            }
            let had_job = self.jobs_tree().remove(u.id.as_bytes())?.is_some();
            self.update(&u.id, |v| {
                v.status = Status::Uploading;
                v.upload_bytes = u.offset;
                v.streamed = false;
                v.reset_output();
            })?;
            if had_job {
                reset.push(u.id);
            }
        }
        Ok(reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobState;

    fn upload(id: &str) -> TusUpload {
        let now = chrono::Utc::now();
        TusUpload {
            id: id.into(),
            owner: "u".into(),
            length: 10,
            offset: 0,
            metadata: None,
            filename: None,
            title: None,
            visibility: None,
            created_at: now,
            expires_at: now,
        }
    }

    #[test]
    fn a_resumable_upload_lives_beside_its_record_and_goes_with_it() {
        for s in crate::store::testing::each_engine() {
            eprintln!("engine: {}", s.engine());
            let mut u = upload("a");
            let v = VideoRecord { status: Status::Uploading, ..VideoRecord::new("a", None, None, 0) };
            s.create_tus(&u, &v, &KeyMaterial::generate()).unwrap();
            assert!(s.jobs().unwrap().is_empty(), "nothing to transcode yet");
            u.offset = 4;
            assert!(s.advance_tus(&u).unwrap());
            assert_eq!(s.get("a").unwrap().unwrap().upload_bytes, 4);
            // A streamed transcode had started when the server died: back to uploading, no job.
            s.create_with(&VideoRecord { status: Status::Processing, ..v.clone() }, &KeyMaterial::generate(), JobState::Running).unwrap();
            assert_eq!(s.reset_tus_jobs().unwrap(), vec!["a".to_string()]);
            assert!(s.jobs().unwrap().is_empty());
            assert_eq!(s.get("a").unwrap().unwrap().status, Status::Uploading);
            assert!(s.delete("a").unwrap());
            assert!(s.tus("a").unwrap().is_none(), "deleting the video ends its upload");
            assert!(!s.advance_tus(&u).unwrap(), "a deleted upload does not come back");
            assert!(s.get("a").unwrap().is_none());
        }
    }

    /// On a shared database a process that starts leaves alone an upload another process is
    /// transcoding while it arrives, and resets one whose process stopped renewing its lease.
    #[test]
    fn a_starting_process_resets_only_the_streamed_uploads_of_processes_that_are_gone() {
        let engines = crate::store::testing::each_engine();
        let url = engines[1].url().unwrap();
        let here = Store::connect(&url).unwrap().with_lease(std::time::Duration::from_secs(3600));
        let dead = Store::connect(&url).unwrap().with_lease(std::time::Duration::ZERO);
        let starting = Store::connect(&url).unwrap();
        for (s, id) in [(&here, "h"), (&dead, "d")] {
            let v = VideoRecord { status: Status::Processing, ..VideoRecord::new(id, None, None, 0) };
            s.create_tus(&upload(id), &VideoRecord { status: Status::Uploading, ..v.clone() }, &KeyMaterial::generate()).unwrap();
            s.create_with(&v, &KeyMaterial::generate(), JobState::Running).unwrap();
        }
        assert_eq!(starting.reset_tus_jobs().unwrap(), vec!["d".to_string()]);
        assert_eq!(starting.get("h").unwrap().unwrap().status, Status::Processing);
        assert_eq!(starting.jobs().unwrap().len(), 1);
        assert_eq!(starting.get("d").unwrap().unwrap().status, Status::Uploading);
    }
}
