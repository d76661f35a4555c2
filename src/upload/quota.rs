//! Per-user limits on uploads: how many one user may send at once (`CASCADE_MAX_UPLOADS_PER_USER`,
//! 429) and what they may keep (quotas of bytes and videos: `507 quota_exceeded` when full, `413
//! over_quota` when one upload would not fit in what is left). Uploads still arriving count: each
//! holds a [`Reservation`] of the bytes it declared (or of all that is left when it did not say),
//! given back when the upload ends, so two uploads at once cannot both take the last gigabyte.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::error::AppError;
use crate::model::{Role, User};
use crate::store::Usage;

/// A user's quotas, after the server's defaults (admins have none unless set on them).
pub fn limits(user: &User, config: &Config) -> (Option<u64>, Option<u64>) {
    let default = |d: Option<u64>| if user.role == Role::Admin { None } else { d };
    (user.quota_bytes.or(default(config.quota_bytes)), user.quota_videos.or(default(config.quota_videos)))
}

#[derive(Debug, Default, Clone, Copy)]
struct Arriving {
    uploads: usize,
    reserved: u64,
}

/// Uploads arriving now, per user.
#[derive(Debug, Default, Clone)]
pub struct Quotas(Arc<Mutex<HashMap<String, Arriving>>>);

/// One upload's place in its user's limits, held until the upload ends.
#[derive(Debug)]
pub struct Reservation {
    quotas: Quotas,
    user: String,
    bytes: u64,
    /// Bytes this upload may still bring (none: no byte quota).
    pub left: Option<u64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut m) = self.quotas.0.lock() {
            if let Some(a) = m.get_mut(&self.user) {
                a.uploads = a.uploads.saturating_sub(1);
                a.reserved = a.reserved.saturating_sub(self.bytes);
                if a.uploads == 0 {
                    m.remove(&self.user);
                }
            }
        }
    }
}

/// Slack for the multipart framing around a file.
const FRAMING: u64 = 64 * 1024;

impl Quotas {
    /// Uploads of `user_id` arriving now.
    pub fn arriving(&self, user_id: &str) -> usize {
        self.0.lock().map_or(0, |m| m.get(user_id).map_or(0, |a| a.uploads))
    }

    /// Counts one more upload of `user` arriving now against the cap of uploads at once only (a
    /// chunk of a resumable upload: its quota was checked when it was created).
    pub fn arriving_only(&self, user: &User, config: &Config) -> Result<Reservation, AppError> {
        let mut m = self.0.lock().map_err(|_| AppError::Internal("quota lock poisoned".into()))?;
        let e = m.entry(user.id.clone()).or_default();
        if e.uploads >= config.max_uploads_per_user {
            return Err(AppError::TooManyUploads(config.max_uploads_per_user));
        }
        e.uploads += 1;
        Ok(Reservation { quotas: self.clone(), user: user.id.clone(), bytes: 0, left: None })
    }

    /// Admits one more upload of `user`, who keeps `used` now and declares `declared` bytes of a
    /// multipart body (the file and a little framing).
    pub fn reserve(&self, user: &User, used: Usage, declared: Option<u64>, config: &Config) -> Result<Reservation, AppError> {
        self.reserve_with(user, used, declared, FRAMING, config)
    }

    /// The same for a file of exactly `length` bytes (a resumable upload).
    pub fn reserve_exact(&self, user: &User, used: Usage, length: u64, config: &Config) -> Result<Reservation, AppError> {
        self.reserve_with(user, used, Some(length), 0, config)
    }

    fn reserve_with(&self, user: &User, used: Usage, declared: Option<u64>, slack: u64, config: &Config) -> Result<Reservation, AppError> {
        let (quota_bytes, quota_videos) = limits(user, config);
        let mut m = self.0.lock().map_err(|_| AppError::Internal("quota lock poisoned".into()))?;
        let a = m.get(&user.id).copied().unwrap_or_default();
        if a.uploads >= config.max_uploads_per_user {
            return Err(AppError::TooManyUploads(config.max_uploads_per_user));
        }
        if quota_videos.is_some_and(|q| used.videos + a.uploads as u64 >= q) {
            return Err(AppError::QuotaFull(format!(
                "your quota of {} videos is used up; delete some to upload more",
                quota_videos.unwrap_or(0)
            )));
        }
        let left = quota_bytes.map(|q| q.saturating_sub(used.bytes).saturating_sub(a.reserved));
        if left == Some(0) {
            return Err(AppError::QuotaFull("your storage quota is used up; delete some videos to upload more".into()));
        }
        if let (Some(left), Some(n)) = (left, declared) {
            if n > left + slack {
                return Err(AppError::OverQuota { left });
            }
        }
        let bytes = match (left, declared) {
            (Some(left), Some(n)) => n.min(left),
            (Some(left), None) => left,
            (None, _) => 0,
        };
        let e = m.entry(user.id.clone()).or_default();
        e.uploads += 1;
        e.reserved += bytes;
        Ok(Reservation { quotas: self.clone(), user: user.id.clone(), bytes, left })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, quota_bytes: Option<u64>, quota_videos: Option<u64>) -> User {
        let mut u = crate::auth::accounts::new_user("u", "long enough password", role).unwrap();
        u.quota_bytes = quota_bytes;
        u.quota_videos = quota_videos;
        u
    }

    fn config(per_user: usize) -> Config {
        let env = HashMap::from([("CASCADE_MAX_UPLOADS_PER_USER".to_string(), per_user.to_string())]);
        Config::from_sources(&env, &[]).unwrap()
    }

    fn code(r: Result<Reservation, AppError>) -> Option<u16> {
        r.err().map(|e| e.status().as_u16())
    }

    #[test]
    fn quotas_count_what_is_kept_and_what_is_arriving() {
        let q = Quotas::default();
        let c = config(3);
        let u = user(Role::Uploader, Some(1_000_000), Some(3));
        let used = Usage { bytes: 400_000, videos: 1 };
        assert_eq!(code(q.reserve(&u, used, Some(700_000), &c)), Some(413), "does not fit in what is left");
        let first = q.reserve(&u, used, Some(500_000), &c).unwrap();
        assert_eq!(first.left, Some(600_000));
        let second = q.reserve(&u, used, None, &c).unwrap();
        assert_eq!(second.left, Some(100_000), "the first upload's bytes are reserved");
        assert_eq!(code(q.reserve(&u, used, Some(1), &c)), Some(507), "bytes used up by arriving uploads");
        drop(second);
        assert_eq!(code(q.reserve(&u, Usage { bytes: 0, videos: 2 }, None, &c)), Some(507), "2 kept + 1 arriving = 3 videos");
        drop(first);
        assert!(q.0.lock().unwrap().is_empty(), "everything given back");
    }

    #[test]
    fn uploads_at_once_are_capped_per_user_and_admins_skip_default_quotas() {
        let q = Quotas::default();
        let c = config(2);
        let u = user(Role::Uploader, None, None);
        let _a = q.reserve(&u, Usage::default(), None, &c).unwrap();
        let _b = q.reserve(&u, Usage::default(), None, &c).unwrap();
        assert_eq!(code(q.reserve(&u, Usage::default(), None, &c)), Some(429));
        let other = user(Role::Uploader, None, None);
        assert!(q.reserve(&other, Usage::default(), None, &c).is_ok(), "another user is not affected");
        let mut c = c;
        c.quota_videos = Some(1);
        let admin = user(Role::Admin, None, None);
        assert!(q.reserve(&admin, Usage { bytes: 0, videos: 9 }, None, &c).is_ok());
        assert_eq!(limits(&other, &c), (None, Some(1)));
    }
}
