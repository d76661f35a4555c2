//! Live streams in the store, by id. Their keys are looked up in memory
//! (`crate::live::Keys`), loaded from here at start.

use chrono::Utc;

use super::records::{dec, enc};
use super::{Store, StoreError};
use crate::model::{KeyMaterial, LiveStream, VideoRecord};

impl Store {
    pub fn add_live(&self, l: &LiveStream) -> Result<(), StoreError> {
        self.live.insert(l.id.as_bytes(), enc(l)?)?;
        Ok(())
    }

    pub fn live(&self, id: &str) -> Result<Option<LiveStream>, StoreError> {
        self.live.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Every stream (`owner`: one user's only), oldest first.
    pub fn lives(&self, owner: Option<&str>) -> Result<Vec<LiveStream>, StoreError> {
        let mut out: Vec<LiveStream> = self.live.values()?.iter().map(|v| dec(v)).collect::<Result<_, _>>()?;
        out.retain(|l| owner.is_none_or(|o| l.owner == o));
        out.sort_by_key(|l| l.created_at);
        Ok(out)
    }

    /// Applies `f` to a stream atomically (compare-and-swap); `None` when it does not exist.
    pub fn update_live(&self, id: &str, mut f: impl FnMut(&mut LiveStream)) -> Result<Option<LiveStream>, StoreError> {
        loop {
            let Some(old) = self.live.get(id.as_bytes())? else { return Ok(None) };
            let mut l: LiveStream = dec(&old)?;
            f(&mut l);
            l.updated_at = Utc::now();
            if self.live.compare_and_swap(id.as_bytes(), Some(&old), Some(&enc(&l)?))? {
                return Ok(Some(l));
            }
        }
    }

    pub fn delete_live(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.live.remove(id.as_bytes())?.is_some())
    }

    /// After a crash: broadcasts left on air are failed (`broadcast_interrupted`; their pipeline
    /// state is gone) and every stream is idle. Returns the failed videos' ids.
    pub fn recover_live(&self) -> Result<Vec<String>, StoreError> {
        let mut failed = Vec::new();
        for v in self.list()? {
            if v.live && v.status == crate::model::Status::Processing {
                let f = crate::jobs::failure::JobFailure::LiveInterrupted;
                self.update(&v.id, |r| {
                    r.status = crate::model::Status::Failed;
                    r.playable = false;
                    r.error = Some(crate::model::ErrorInfo { code: f.code().into(), message: f.to_string() });
                })?;
                failed.push(v.id);
            }
        }
        for l in self.lives(None)? {
            if l.status != crate::model::LiveStatus::Idle {
                self.update_live(&l.id, |l| l.status = crate::model::LiveStatus::Idle)?;
            }
        }
        Ok(failed)
    }

    /// Inserts the video of a broadcast with its key and no job: the broadcast's own task runs
    /// it, no worker may claim it.
    pub fn create_broadcast(&self, video: &VideoRecord, key: &KeyMaterial) -> Result<(), StoreError> {
        let (v, k) = (enc(video)?, enc(key)?);
        super::kv::transaction(&[self.videos_tree(), self.keys_tree()], |t| {
            t[0].insert(video.id.as_bytes(), v.clone())?;
            t[1].insert(video.id.as_bytes(), k.clone())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LiveStatus, Visibility};

    #[test]
    fn streams_are_kept_listed_updated_and_removed() {
        for s in crate::store::testing::each_engine() {
            eprintln!("engine: {}", s.engine());
            let a = LiveStream::new("a", "u1", "A".into(), Visibility::Public);
            let b = LiveStream::new("b", "u2", "B".into(), Visibility::Private);
            s.add_live(&a).unwrap();
            s.add_live(&b).unwrap();
            assert_eq!(s.live("a").unwrap(), Some(a.clone()));
            assert_eq!(s.lives(None).unwrap().len(), 2);
            assert_eq!(s.lives(Some("u2")).unwrap(), vec![b]);
            let l = s.update_live("a", |l| l.status = LiveStatus::Live).unwrap().unwrap();
            assert_eq!(s.live("a").unwrap().unwrap().status, LiveStatus::Live);
            assert_eq!(l.key, a.key);
            assert!(s.update_live("zz", |_| {}).unwrap().is_none());
            assert!(s.delete_live("a").unwrap());
            assert!(!s.delete_live("a").unwrap());
            let v = VideoRecord { live: true, ..VideoRecord::new("v", None, None, 0) };
            s.create_broadcast(&v, &KeyMaterial::generate()).unwrap();
            assert!(s.get("v").unwrap().unwrap().live);
            assert!(s.key("v").unwrap().is_some());
            assert!(s.jobs().unwrap().is_empty(), "no worker may claim a broadcast");
        }
    }
}
