//! Accounts in the embedded store: users, sessions, API tokens, and the adoption of videos from
//! before accounts by the first admin.

use std::collections::HashMap;

use super::records::{dec, enc};
use super::{Store, StoreError};
use crate::model::{ApiToken, Invite, Role, Session, User, VideoRecord};

/// What a user keeps: bytes of uploads and videos.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub bytes: u64,
    pub videos: u64,
}

impl Store {
    /// Counts a write to users, sessions or tokens (after it is made): callers identified before
    /// it are identified again (`http::session::identify` caches them by this count).
    fn accounts_changed(&self) {
        self.accounts_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many writes to users, sessions or tokens this process has made.
    pub fn accounts_generation(&self) -> u64 {
        self.accounts_generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Creates a user; the name is unique without regard to case. The first admin adopts every
    /// video without an owner (videos uploaded before accounts existed); returns how many.
    pub fn create_user(&self, user: &User) -> Result<usize, StoreError> {
        let _one_at_a_time = self.accounts_lock.lock().map_err(|_| StoreError::Task("account lock poisoned".into()))?;
        self.create_user_locked(user)
    }

    /// Creates `user` only if no user exists yet (the `/setup` page); returns whether it did.
    pub fn create_first_user(&self, user: &User) -> Result<bool, StoreError> {
        let _one_at_a_time = self.accounts_lock.lock().map_err(|_| StoreError::Task("account lock poisoned".into()))?;
        if !self.users.is_empty()? {
            return Ok(false);
        }
        self.create_user_locked(user).map(|_| true)
    }

    /// Whether no user exists.
    pub fn no_users(&self) -> Result<bool, StoreError> {
        self.users.is_empty()
    }

    fn create_user_locked(&self, user: &User) -> Result<usize, StoreError> {
        let key = user.username.to_lowercase();
        let first_admin = user.role == Role::Admin && !self.users()?.iter().any(|u| u.role == Role::Admin);
        if !self.usernames.compare_and_swap(key.as_bytes(), None, Some(user.id.as_bytes()))? {
            return Err(StoreError::NameTaken(user.username.clone()));
        }
        self.users.insert(user.id.as_bytes(), enc(user)?)?;
        self.accounts_changed();
        if first_admin {
            self.adopt_unowned(&user.id)
        } else {
            Ok(0)
        }
    }

    /// Gives every video without an owner to `owner`; returns how many.
    pub fn adopt_unowned(&self, owner: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for (k, v) in self.videos_tree().entries()? {
            let mut rec: VideoRecord = dec(&v)?;
            if rec.owner.is_none() {
                rec.owner = Some(owner.to_string());
                self.videos_tree().insert(k, enc(&rec)?)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.users.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// A user by name (any case).
    pub fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        match self.usernames.get(name.to_lowercase().as_bytes())? {
            Some(id) => self.user(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Every user.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.users.values()?.iter().map(|v| dec(v)).collect()
    }

    /// Replaces a user's record (role, disabled, quotas, password); the name does not change.
    pub fn put_user(&self, user: &User) -> Result<(), StoreError> {
        self.users.insert(user.id.as_bytes(), enc(user)?)?;
        self.accounts_changed();
        Ok(())
    }

    /// What each owner keeps (one pass over the videos).
    pub fn usage(&self) -> Result<HashMap<String, Usage>, StoreError> {
        let mut out: HashMap<String, Usage> = HashMap::new();
        for v in self.videos_tree().values()? {
            let rec: VideoRecord = dec(&v)?;
            if let Some(owner) = rec.owner {
                // A resumable upload in progress counts with all it said it will bring.
                let bytes = match rec.status {
                    crate::model::Status::Uploading => self.tus(&rec.id)?.map_or(rec.upload_bytes, |t| t.length.max(rec.upload_bytes)),
                    _ => rec.upload_bytes,
                };
                let u = out.entry(owner).or_default();
                u.bytes += bytes;
                u.videos += 1;
            }
        }
        Ok(out)
    }

    /// Keeps a session under the digest of its secret.
    pub fn put_session(&self, digest: &str, session: &Session) -> Result<(), StoreError> {
        self.sessions.insert(digest.as_bytes(), enc(session)?)?;
        self.accounts_changed();
        Ok(())
    }

    /// The session with this digest.
    pub fn session(&self, digest: &str) -> Result<Option<Session>, StoreError> {
        self.sessions.get(digest.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Ends a session.
    pub fn delete_session(&self, digest: &str) -> Result<(), StoreError> {
        self.sessions.remove(digest.as_bytes())?;
        self.accounts_changed();
        Ok(())
    }

    /// Keeps an API token under the digest of its secret.
    pub fn put_token(&self, digest: &str, token: &ApiToken) -> Result<(), StoreError> {
        self.tokens.insert(digest.as_bytes(), enc(token)?)?;
        self.accounts_changed();
        Ok(())
    }

    /// The API token with this digest.
    pub fn token(&self, digest: &str) -> Result<Option<ApiToken>, StoreError> {
        self.tokens.get(digest.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// A user's API tokens (never their secrets: the store does not have them).
    pub fn tokens_of(&self, user_id: &str) -> Result<Vec<ApiToken>, StoreError> {
        let mut out = vec![];
        for v in self.tokens.values()? {
            let t: ApiToken = dec(&v)?;
            if t.user_id == user_id {
                out.push(t);
            }
        }
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    /// Revokes the token `id` of `user_id`; returns whether there was one.
    pub fn delete_token(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        for (k, v) in self.tokens.entries()? {
            let t: ApiToken = dec(&v)?;
            if t.user_id == user_id && t.id == id {
                self.tokens.remove(k)?;
                self.accounts_changed();
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Keeps an invitation under the digest of its code.
    pub fn put_invite(&self, digest: &str, invite: &Invite) -> Result<(), StoreError> {
        self.invites.insert(digest.as_bytes(), enc(invite)?)?;
        Ok(())
    }

    /// Uses up the invitation with this digest: it is removed whether or not it is still valid,
    /// and returned only once however many requests race for it.
    pub fn take_invite(&self, digest: &str) -> Result<Option<Invite>, StoreError> {
        self.invites.remove(digest.as_bytes())?.map(|b| dec(&b)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyMaterial, VideoRecord};

    fn user(name: &str, role: Role) -> User {
        User {
            id: uuid::Uuid::new_v4().to_string(),
            username: name.into(),
            password_hash: "x".into(),
            role,
            disabled: false,
            created_at: chrono::Utc::now(),
            quota_bytes: None,
            quota_videos: None,
            session_epoch: 0,
        }
    }

    #[test]
    fn names_are_unique_and_the_first_admin_adopts_videos_from_before_accounts() {
        for s in crate::store::testing::each_engine() {
            eprintln!("engine: {}", s.engine());
            let old = VideoRecord::new("old", Some("from before accounts".into()), None, 1);
            s.create(&old, &KeyMaterial::generate()).unwrap();
            let up = user("Alice", Role::Uploader);
            assert_eq!(s.create_user(&up).unwrap(), 0, "an uploader adopts nothing");
            assert!(matches!(s.create_user(&user("alice", Role::Admin)), Err(StoreError::NameTaken(_))));
            let admin = user("root", Role::Admin);
            assert_eq!(s.create_user(&admin).unwrap(), 1);
            assert_eq!(s.get("old").unwrap().unwrap().owner.as_deref(), Some(admin.id.as_str()));
            assert_eq!(s.create_user(&user("second", Role::Admin)).unwrap(), 0, "only the first admin adopts");
            assert_eq!(s.user_by_name("ALICE").unwrap().unwrap().id, up.id);
            assert_eq!(s.users().unwrap().len(), 3);
            assert!(!s.create_first_user(&user("late", Role::Admin)).unwrap(), "setup only while nobody exists");
            assert_eq!(s.usage().unwrap()[&admin.id], Usage { bytes: 1, videos: 1 });
        }
    }

    #[test]
    fn invites_are_single_use_and_tokens_are_revoked_by_their_owner_only() {
        for s in crate::store::testing::each_engine() {
            eprintln!("engine: {}", s.engine());
            let inv = Invite { created_by: "a".into(), expires_at: chrono::Utc::now() };
            s.put_invite("d", &inv).unwrap();
            assert!(s.take_invite("d").unwrap().is_some());
            assert!(s.take_invite("d").unwrap().is_none());
            let (_, t) = crate::auth::accounts::new_token("u1", "ci", vec![], None);
            s.put_token("x", &t).unwrap();
            assert_eq!(s.tokens_of("u1").unwrap().len(), 1);
            assert!(!s.delete_token("u2", &t.id).unwrap(), "another user's token");
            assert!(s.delete_token("u1", &t.id).unwrap());
            assert!(s.token("x").unwrap().is_none());
        }
    }
}
