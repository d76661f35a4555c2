//! Live streams in the store, by id. Their keys are looked up in memory
//! (`crate::live::Keys`), loaded from here at start.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::records::{dec, enc};
use super::{Store, StoreError};
use crate::model::{KeyMaterial, LiveStatus, LiveStream, Status, VideoRecord};

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

    /// Broadcasts left on air by a process that is gone are failed (`broadcast_interrupted`;
    /// their pipeline state is gone) and their streams idle. Returns the failed videos' ids.
    /// On sled (one process) that is every broadcast on air, at start-up; on a shared database
    /// only those whose lease has expired (their process died or lost the database for a whole
    /// lease): the others are on air in other processes, and serve nodes run this every lease.
    /// `all_videos`: look at every video (at start-up), else only at the broadcasts with a lease
    /// and those the streams name (the periodic look, which must not read the whole library).
    pub fn recover_live(&self, all_videos: bool) -> Result<Vec<String>, StoreError> {
        let now = Utc::now();
        let on_air = |id: &str| -> Result<bool, StoreError> {
            if !self.shares_jobs() {
                return Ok(false);
            }
            let lease: Option<OnAir> = self.broadcasts.get(id.as_bytes())?.map(|b| dec(&b)).transpose()?;
            Ok(lease.is_some_and(|l| l.lease_until > now))
        };
        let candidates: Vec<VideoRecord> = if all_videos {
            self.list()?
        } else {
            let mut ids: Vec<String> =
                self.broadcasts.entries()?.into_iter().map(|(k, _)| String::from_utf8_lossy(&k).into_owned()).collect();
            ids.extend(self.lives(None)?.into_iter().filter(|l| l.status != LiveStatus::Idle).filter_map(|l| l.video_id));
            ids.sort();
            ids.dedup();
            ids.iter().map(|id| self.get(id)).filter_map(Result::transpose).collect::<Result<_, _>>()?
        };
        let mut failed = Vec::new();
        for v in candidates {
            if v.live && v.status == Status::Processing && !on_air(&v.id)? {
                let f = crate::jobs::failure::JobFailure::LiveInterrupted;
                let mut changed = false;
                self.update(&v.id, |r| {
                    // Unless it ended meanwhile.
                    changed = r.status == Status::Processing;
                    if changed {
                        r.status = Status::Failed;
                        r.playable = false;
                        r.error = Some(crate::model::ErrorInfo { code: f.code().into(), message: f.to_string() });
                    }
                })?;
                self.broadcasts.remove(v.id.as_bytes())?;
                if changed {
                    failed.push(v.id);
                }
            }
        }
        for l in self.lives(None)? {
            let gone = match l.video_id.as_deref() {
                Some(id) => !on_air(id)?,
                None => true,
            };
            if l.status != LiveStatus::Idle && gone {
                self.update_live(&l.id, |x| {
                    if x.video_id == l.video_id {
                        x.status = LiveStatus::Idle;
                        x.encoder_speed = None;
                    }
                })?;
            }
        }
        Ok(failed)
    }

    /// Inserts the video of a broadcast with its key and no job (the broadcast's own task runs
    /// it, no worker may claim it), and its lease of being on air in this process.
    pub fn create_broadcast(&self, video: &VideoRecord, key: &KeyMaterial) -> Result<(), StoreError> {
        let (v, k) = (enc(video)?, enc(key)?);
        let lease = enc(&OnAir { holder: self.node().to_string(), lease_until: self.lease_from_now() })?;
        super::kv::transaction(&[self.videos_tree(), self.keys_tree(), &self.broadcasts], |t| {
            t[0].insert(video.id.as_bytes(), v.clone())?;
            t[1].insert(video.id.as_bytes(), k.clone())?;
            t[2].insert(video.id.as_bytes(), lease.clone())?;
            Ok(())
        })
    }

    /// The heartbeat of the broadcasts of `mine` this process has on air.
    pub(super) fn renew_broadcasts(&self, mine: &[String]) -> Result<(), StoreError> {
        for id in mine {
            let Some(seen) = self.broadcasts.get(id.as_bytes())? else { continue };
            let lease: OnAir = dec(&seen)?;
            if lease.holder == self.node() {
                let renewed = enc(&OnAir { lease_until: self.lease_from_now(), ..lease })?;
                self.broadcasts.compare_and_swap(id.as_bytes(), Some(&seen), Some(&renewed))?;
            }
        }
        Ok(())
    }

    /// A broadcast ended here: its lease goes.
    pub fn end_broadcast(&self, id: &str) -> Result<(), StoreError> {
        self.broadcasts.remove(id.as_bytes())?;
        Ok(())
    }
}

/// A broadcast's lease of being on air in a process (tree `broadcasts`, by video id), renewed
/// by that process's heartbeat with its job leases.
#[derive(Debug, Serialize, Deserialize)]
struct OnAir {
    holder: String,
    lease_until: chrono::DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Visibility;

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

    /// Puts a broadcast on air in `s`: its video (processing) and its stream (live).
    fn on_air(s: &Store, stream: &str, video: &str) {
        s.add_live(&LiveStream::new(stream, "u", "S".into(), Visibility::Public)).unwrap();
        let v = VideoRecord { live: true, status: Status::Processing, ..VideoRecord::new(video, None, None, 0) };
        s.create_broadcast(&v, &KeyMaterial::generate()).unwrap();
        s.update_live(stream, |l| {
            l.status = LiveStatus::Live;
            l.video_id = Some(video.into());
        })
        .unwrap();
    }

    fn state(s: &Store, stream: &str, video: &str) -> (Status, LiveStatus) {
        (s.get(video).unwrap().unwrap().status, s.live(stream).unwrap().unwrap().status)
    }

    /// On sled the process that starts is the only one: every broadcast on air is a previous
    /// process's. On a shared database a process starting (or its periodic check) fails only the
    /// broadcasts whose process stopped renewing their lease, never those on air elsewhere.
    #[test]
    fn only_broadcasts_whose_process_is_gone_are_failed() {
        let engines = crate::store::testing::each_engine();
        let sled = &engines[0];
        on_air(sled, "s", "sv");
        assert_eq!(sled.recover_live(true).unwrap(), vec!["sv".to_string()]);
        assert_eq!(state(sled, "s", "sv"), (Status::Failed, LiveStatus::Idle));

        let url = engines[1].url().unwrap();
        let here = Store::connect(&url).unwrap().with_lease(std::time::Duration::from_secs(3600));
        let starting = Store::connect(&url).unwrap();
        on_air(&here, "a", "av");
        assert!(starting.recover_live(false).unwrap().is_empty(), "a broadcast on air in another process stays on air");
        assert_eq!(state(&starting, "a", "av"), (Status::Processing, LiveStatus::Live));
        // A process that stopped renewing its lease (as if it had died a lease ago).
        let dead = Store::connect(&url).unwrap().with_lease(std::time::Duration::ZERO);
        on_air(&dead, "d", "dv");
        assert_eq!(starting.recover_live(false).unwrap(), vec!["dv".to_string()]);
        assert_eq!(state(&starting, "d", "dv"), (Status::Failed, LiveStatus::Idle));
        assert_eq!(state(&starting, "a", "av"), (Status::Processing, LiveStatus::Live));
        // The heartbeat renews the lease of a broadcast on air; its end removes it.
        here.renew_leases(&["av".into()]).unwrap();
        assert!(starting.recover_live(false).unwrap().is_empty());
        here.end_broadcast("av").unwrap();
        assert_eq!(starting.recover_live(false).unwrap(), vec!["av".to_string()], "no lease: nothing keeps it on air");
    }
}
