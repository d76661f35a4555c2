//! Accounts in the embedded store: users, sessions, API tokens, and the adoption of videos from
//! before accounts by the first admin.

use super::sled::{dec, enc};
use super::{Store, StoreError};
use crate::model::{ApiToken, Role, Session, User, VideoRecord};

impl Store {
    /// Creates a user; the name is unique without regard to case. The first admin adopts every
    /// video without an owner (videos uploaded before accounts existed); returns how many.
    pub fn create_user(&self, user: &User) -> Result<usize, StoreError> {
        let key = user.username.to_lowercase();
        let first_admin = user.role == Role::Admin && !self.users()?.iter().any(|u| u.role == Role::Admin);
        if self.usernames.compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(user.id.as_bytes()))?.is_err() {
            return Err(StoreError::NameTaken(user.username.clone()));
        }
        self.users.insert(user.id.as_bytes(), enc(user)?)?;
        if first_admin {
            self.adopt_unowned(&user.id)
        } else {
            Ok(0)
        }
    }

    /// Gives every video without an owner to `owner`; returns how many.
    pub fn adopt_unowned(&self, owner: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.videos_tree().iter() {
            let (k, v) = item?;
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
        self.users.iter().values().map(|v| dec(&v?)).collect()
    }

    /// Keeps a session under the digest of its secret.
    pub fn put_session(&self, digest: &str, session: &Session) -> Result<(), StoreError> {
        self.sessions.insert(digest.as_bytes(), enc(session)?)?;
        Ok(())
    }

    /// The session with this digest.
    pub fn session(&self, digest: &str) -> Result<Option<Session>, StoreError> {
        self.sessions.get(digest.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Ends a session.
    pub fn delete_session(&self, digest: &str) -> Result<(), StoreError> {
        self.sessions.remove(digest.as_bytes())?;
        Ok(())
    }

    /// Keeps an API token under the digest of its secret.
    pub fn put_token(&self, digest: &str, token: &ApiToken) -> Result<(), StoreError> {
        self.tokens.insert(digest.as_bytes(), enc(token)?)?;
        Ok(())
    }

    /// The API token with this digest.
    pub fn token(&self, digest: &str) -> Result<Option<ApiToken>, StoreError> {
        self.tokens.get(digest.as_bytes())?.map(|b| dec(&b)).transpose()
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
        }
    }

    #[test]
    fn names_are_unique_and_the_first_admin_adopts_videos_from_before_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
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
    }
}
