//! Users, sessions and personal API tokens: passwords hashed with Argon2id, secrets (session ids,
//! tokens) of 256 random bits of which only the SHA-256 is stored, and the caller of a request
//! with what it may do.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::model::{ApiToken, Role, Scope, User, VideoRecord, Visibility};
use crate::store::Store;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cascade_session";
/// API tokens start with this, so that a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "cas_";
/// Longest user name and password accepted.
pub const MAX_NAME: usize = 64;
pub const MAX_PASSWORD: usize = 1024;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("a user name is 1–64 letters, digits, '.', '_' or '-'")]
    BadName,
    #[error("a password is 10–1024 characters")]
    BadPassword,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

impl Caller {
    /// The caller when it is a logged-in person (a session, not a script's token): account
    /// settings and tokens are managed from a session only, so a leaked token cannot mint more.
    pub fn person(&self) -> Result<&User, AppError> {
        match self {
            Caller::Anonymous => Err(AppError::Unauthorized("log in first".into())),
            Caller::User { via: Credential::Token(_), .. } => {
                Err(AppError::Forbidden("manage your account from a logged-in session, not with an API token".into()))
            }
            Caller::User { user, .. } => Ok(user),
        }
    }

    /// The caller when it may manage what it owns, such as webhooks (a session, or a token with
    /// the `manage` scope).
    pub fn manager(&self) -> Result<&User, AppError> {
        match self.user() {
            None => Err(AppError::Unauthorized("log in or send an API token".into())),
            Some(_) if !self.has_scope(Scope::Manage) => Err(AppError::Forbidden("this API token lacks the `manage` scope".into())),
            Some(u) => Ok(u),
        }
    }

    /// The caller when it is an admin (a session, or a token with the `manage` scope).
    pub fn admin(&self) -> Result<&User, AppError> {
        match self.user() {
            None => Err(AppError::Unauthorized("log in as an administrator".into())),
            Some(u) if u.role != Role::Admin => Err(AppError::Forbidden("only administrators may do this".into())),
            Some(_) if !self.has_scope(Scope::Manage) => Err(AppError::Forbidden("this API token lacks the `manage` scope".into())),
            Some(u) => Ok(u),
        }
    }
}

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane) and a random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` matches a stored hash. Without a user, a dummy hash is checked so that the
/// answer takes as long whether the user exists or not.
pub fn verify_password(hash: Option<&str>, password: &str) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("no user has this password").unwrap_or_default());
    let stored = hash.unwrap_or(dummy);
    let ok = PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
    ok && hash.is_some()
}

/// A new secret: 256 random bits, URL-safe base64.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What the store keeps of a secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Checks a user name.
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AccountError::BadName)
    }
}

/// Checks a new password.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    if (10..=MAX_PASSWORD).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(AccountError::BadPassword)
    }
}

/// A new user (not stored yet).
pub fn new_user(name: &str, password: &str, role: Role) -> Result<User, AccountError> {
    check_name(name)?;
    check_password(password)?;
    Ok(User {
        id: uuid::Uuid::new_v4().to_string(),
        username: name.to_string(),
        password_hash: hash_password(password)?,
        role,
        disabled: false,
        created_at: Utc::now(),
        quota_bytes: None,
        quota_videos: None,
        session_epoch: 0,
    })
}

/// A new API token for `user_id`: the secret to show once, and the record to store under its digest.
pub fn new_token(user_id: &str, name: &str, scopes: Vec<Scope>, expires_days: Option<u32>) -> (String, ApiToken) {
    let secret = format!("{TOKEN_PREFIX}{}", new_secret());
    let now = Utc::now();
    let token = ApiToken {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        name: name.to_string(),
        scopes,
        created_at: now,
        expires_at: expires_days.map(|d| now + chrono::Duration::days(i64::from(d))),
    };
    (secret, token)
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    /// The session cookie (subject to the CSRF check on state-changing requests).
    Session,
    /// A personal API token with these scopes.
    Token(Vec<Scope>),
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    User { user: User, via: Credential },
}

impl Caller {
    /// The user, if any.
    pub fn user(&self) -> Option<&User> {
        match self {
            Caller::User { user, .. } => Some(user),
            Caller::Anonymous => None,
        }
    }

    fn is_admin(&self) -> bool {
        self.user().is_some_and(|u| u.role == Role::Admin)
    }

    fn owns(&self, v: &VideoRecord) -> bool {
        self.user().is_some_and(|u| v.owner.as_deref() == Some(u.id.as_str()))
    }

    fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Caller::User { via: Credential::Token(scopes), .. } => scopes.contains(&scope),
            Caller::User { via: Credential::Session, .. } => true,
            Caller::Anonymous => false,
        }
    }

    /// Whether the video is listed for this caller: public ones, their own, all for admins.
    pub fn lists(&self, v: &VideoRecord) -> bool {
        v.visibility == Visibility::Public || self.owns(v) || self.is_admin()
    }

    /// Whether the caller may see and watch the video (unlisted ones with their link).
    pub fn may_watch(&self, v: &VideoRecord) -> bool {
        v.visibility != Visibility::Private || self.owns(v) || self.is_admin()
    }

    /// Edit or delete: the owner or an admin, and a token needs the `manage` scope. A video the
    /// caller may not see is "not found"; one they may see but not change is "forbidden".
    pub fn check_manage(&self, v: &VideoRecord) -> Result<(), AppError> {
        if !self.may_watch(v) {
            return Err(AppError::NotFound(format!("no video {}", v.id)));
        }
        match self {
            Caller::Anonymous => Err(AppError::Unauthorized("log in or send an API token to change a video".into())),
            _ if !(self.owns(v) || self.is_admin()) => Err(AppError::Forbidden("only the owner or an admin may change this video".into())),
            _ if !self.has_scope(Scope::Manage) => Err(AppError::Forbidden("this API token lacks the `manage` scope".into())),
            _ => Ok(()),
        }
    }

    /// Whether the caller may see a live stream: like a video (`may_watch`).
    pub fn may_watch_live(&self, l: &crate::model::LiveStream) -> bool {
        l.visibility != Visibility::Private || self.owns_live(l) || self.is_admin()
    }

    /// Whether the caller owns a live stream or is an admin.
    pub fn manages_live(&self, l: &crate::model::LiveStream) -> bool {
        self.owns_live(l) || self.is_admin()
    }

    /// Whether the caller owns a live stream (and so sees its key).
    pub fn owns_live(&self, l: &crate::model::LiveStream) -> bool {
        self.user().is_some_and(|u| u.id == l.owner)
    }

    /// Change, delete or rotate the key of a live stream: the rules of `check_manage`.
    pub fn check_manage_live(&self, l: &crate::model::LiveStream) -> Result<(), AppError> {
        if !self.may_watch_live(l) {
            return Err(AppError::NotFound(format!("no live stream {}", l.id)));
        }
        match self {
            Caller::Anonymous => Err(AppError::Unauthorized("log in or send an API token to change a live stream".into())),
            _ if !self.manages_live(l) => Err(AppError::Forbidden("only the owner or an admin may change this live stream".into())),
            _ if !self.has_scope(Scope::Manage) => Err(AppError::Forbidden("this API token lacks the `manage` scope".into())),
            _ => Ok(()),
        }
    }

    /// The user who may upload now, or why not.
    pub fn uploader(&self) -> Result<&User, AppError> {
        match self.user() {
            None => Err(AppError::Unauthorized("log in or send an API token to upload".into())),
            Some(_) if !self.has_scope(Scope::Upload) => Err(AppError::Forbidden("this API token lacks the `upload` scope".into())),
            Some(u) => Ok(u),
        }
    }
}

/// The value of the session cookie in a `Cookie` header.
pub fn session_cookie(cookie_header: &str) -> Option<&str> {
    cookie_header.split(';').filter_map(|c| c.trim().split_once('=')).find(|(k, _)| *k == SESSION_COOKIE).map(|(_, v)| v)
}

/// Identifies a caller from a request's `Authorization` and `Cookie` headers, and says until when
/// the credential is valid (none: no expiry). A bearer token that is unknown, expired or of a
/// disabled user is an error (401); a stale session cookie is simply no session. Blocking (store
/// reads): call through `AsyncStore::run`.
pub fn authenticate_until(
    store: &Store,
    authorization: Option<&str>,
    cookie: Option<&str>,
) -> Result<(Caller, Option<chrono::DateTime<Utc>>), AppError> {
    let now = Utc::now();
    if let Some(auth) = authorization {
        let secret = auth
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(|| AppError::Unauthorized("expected `Authorization: Bearer TOKEN`".into()))?;
        let invalid = || AppError::Unauthorized("invalid or expired API token".into());
        let token = store.token(&digest(secret))?.ok_or_else(invalid)?;
        if token.expires_at.is_some_and(|e| e <= now) {
            return Err(invalid());
        }
        let user = store.user(&token.user_id)?.filter(|u| !u.disabled).ok_or_else(invalid)?;
        return Ok((Caller::User { user, via: Credential::Token(token.scopes) }, token.expires_at));
    }
    let Some(secret) = cookie.and_then(session_cookie) else { return Ok((Caller::Anonymous, None)) };
    let d = digest(secret);
    match store.session(&d)? {
        Some(s) if s.expires_at > now => match store.user(&s.user_id)?.filter(|u| !u.disabled && u.session_epoch == s.epoch) {
            Some(user) => Ok((Caller::User { user, via: Credential::Session }, Some(s.expires_at))),
            None => Ok((Caller::Anonymous, None)),
        },
        Some(_) => {
            store.delete_session(&d)?;
            Ok((Caller::Anonymous, None))
        }
        None => Ok((Caller::Anonymous, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The session cookie is found among any others, in any order, and never made up.
        #[test]
        fn the_session_cookie_is_read_from_any_cookie_header(
            others in proptest::collection::vec(("[a-z_]{1,20}", "[!-:<-~]{0,30}"), 0..6),
            ours in "[A-Za-z0-9_-]{1,64}",
            at in any::<prop::sample::Index>(),
        ) {
            let mut pairs: Vec<String> = others.iter().filter(|(k, _)| k != SESSION_COOKIE).map(|(k, v)| format!("{k}={v}")).collect();
            let without = pairs.join("; ");
            prop_assert_eq!(session_cookie(&without), None);
            pairs.insert(at.index(pairs.len() + 1), format!("{SESSION_COOKIE}={ours}"));
            let header = pairs.join("; ");
            prop_assert_eq!(session_cookie(&header), Some(ours.as_str()));
        }

        /// Any `Authorization` header that is not a known token is a 401, never a panic, and
        /// never a caller.
        #[test]
        fn any_authorization_header_is_refused(h in "\\PC{0,120}") {
            static STORE: std::sync::OnceLock<(tempfile::TempDir, Store)> = std::sync::OnceLock::new();
            let (_, store) = STORE.get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path()).unwrap();
                (dir, store)
            });
            let r = authenticate_until(store, Some(&h), None);
            prop_assert_eq!(r.err().map(|e| e.status().as_u16()), Some(401));
        }
    }

    #[test]
    fn passwords_are_argon2id_and_verify_only_with_a_user() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(Some(&h), "correct horse battery"));
        assert!(!verify_password(Some(&h), "correct horse batterY"));
        assert!(!verify_password(None, "no user has this password"), "no user: never valid");
        assert!(!verify_password(Some("not a phc string"), "x"));
    }

    #[test]
    fn secrets_are_256_bits_and_stored_as_digests() {
        let s = new_secret();
        assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&s).unwrap().len(), 32);
        assert_ne!(s, new_secret());
        assert_eq!(digest(&s).len(), 64);
        assert_ne!(digest(&s), s);
        let (secret, t) = new_token("u", "ci", vec![Scope::Upload], Some(1));
        assert!(secret.starts_with(TOKEN_PREFIX) && t.expires_at.is_some());
    }

    #[test]
    fn names_passwords_and_cookies_are_checked() {
        assert!(check_name("alice.b-2_x").is_ok());
        for bad in ["", "a b", "ä", "x/y", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_password("short").is_err());
        assert_eq!(session_cookie("a=b; cascade_session=XYZ; c=d"), Some("XYZ"));
        assert_eq!(session_cookie("cascade_sessionx=1"), None);
    }

    #[test]
    fn who_may_do_what_with_a_video() {
        let mk = |role| User {
            id: uuid::Uuid::new_v4().to_string(),
            username: "u".into(),
            password_hash: String::new(),
            role,
            disabled: false,
            created_at: Utc::now(),
            quota_bytes: None,
            quota_videos: None,
            session_epoch: 0,
        };
        let (owner, other, admin) = (mk(Role::Uploader), mk(Role::Uploader), mk(Role::Admin));
        let mut v = VideoRecord::new("v", None, None, 1);
        v.owner = Some(owner.id.clone());
        let session = |u: &User| Caller::User { user: u.clone(), via: Credential::Session };
        let token = |u: &User, s: Vec<Scope>| Caller::User { user: u.clone(), via: Credential::Token(s) };
        for vis in [Visibility::Public, Visibility::Unlisted, Visibility::Private] {
            v.visibility = vis;
            let code = |c: &Caller| c.check_manage(&v).err().map(|e| e.status().as_u16());
            assert_eq!(code(&session(&owner)), None);
            assert_eq!(code(&session(&admin)), None);
            assert_eq!(code(&token(&owner, vec![Scope::Manage])), None);
            assert_eq!(code(&token(&owner, vec![Scope::Upload])), Some(403));
            let hidden = vis == Visibility::Private;
            assert_eq!(code(&session(&other)), Some(if hidden { 404 } else { 403 }), "{vis:?}");
            assert_eq!(code(&Caller::Anonymous), Some(if hidden { 404 } else { 401 }), "{vis:?}");
            assert_eq!(Caller::Anonymous.lists(&v), vis == Visibility::Public);
            assert!(session(&admin).lists(&v) && session(&owner).lists(&v));
        }
        assert_eq!(Caller::Anonymous.uploader().unwrap_err().status().as_u16(), 401);
        assert_eq!(token(&owner, vec![Scope::Manage]).uploader().unwrap_err().status().as_u16(), 403);
        assert!(token(&owner, vec![Scope::Upload]).uploader().is_ok());
    }
}
