//! Login, logout and "who am I", the caller of a request, and the CSRF rule: a state-changing
//! request that relies on the session cookie must come from this origin.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use warp::http::{header, HeaderValue, StatusCode};
use warp::Filter;

use super::api::json_response;
use super::ErrorBody;
use crate::app::App;
use crate::auth::accounts::{self, Caller, Credential, SESSION_COOKIE};
use crate::error::AppError;
use crate::model::{Role, Session, User};
use crate::store::Usage;

/// A request's credentials, as sent (checked by [`identify`] inside the handler, so that a bad
/// one answers 401 rather than falling through to another route).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    authorization: Option<String>,
    cookie: Option<String>,
}

/// The `Authorization` and `Cookie` headers.
pub fn credentials() -> impl Filter<Extract = (Credentials,), Error = std::convert::Infallible> + Clone {
    super::header_text("authorization").and(super::header_text("cookie")).map(|authorization, cookie| Credentials { authorization, cookie })
}

/// The caller of a request; a bad bearer token is a 401.
pub async fn identify(app: &App, c: Credentials) -> Result<Caller, AppError> {
    let key = match (&c.authorization, c.cookie.as_deref().and_then(accounts::session_cookie)) {
        (Some(a), _) => format!("a:{}", accounts::digest(a)),
        (None, Some(s)) => format!("s:{}", accounts::digest(s)),
        (None, None) => return Ok(Caller::Anonymous),
    };
    // A caller identified before is taken from memory while no user, session or token was
    // written since, its credential has not expired, and for at most a minute (the bound on
    // what another process's writes could leave stale).
    let generation = app.store.blocking().accounts_generation();
    let now = Utc::now();
    if let Some(hit) = app.callers.get(&key) {
        if hit.generation == generation && hit.until > now {
            return Ok(hit.caller);
        }
    }
    let (caller, expires) =
        app.store.run(move |s| accounts::authenticate_until(s, c.authorization.as_deref(), c.cookie.as_deref())).await?;
    if matches!(caller, Caller::User { .. }) {
        let until = expires.map_or(now + CALLER_TTL, |e| e.min(now + CALLER_TTL));
        app.callers.insert(key, CachedCaller { caller: caller.clone(), generation, until });
    }
    Ok(caller)
}

/// How long an identified caller is kept at most.
const CALLER_TTL: chrono::Duration = chrono::Duration::seconds(60);

/// A caller identified before, and what it depends on.
#[derive(Clone)]
pub struct CachedCaller {
    caller: Caller,
    /// The store's count of accounts writes when it was identified.
    generation: u64,
    until: chrono::DateTime<Utc>,
}

/// Callers by the digest of their credential (bounded).
pub type CallerCache = quick_cache::sync::Cache<String, CachedCaller>;

/// Where a request says it comes from.
#[derive(Debug, Clone, Default)]
pub struct RequestOrigin {
    origin: Option<String>,
    sec_fetch_site: Option<String>,
    host: Option<String>,
}

/// The headers the CSRF rule looks at.
pub fn request_origin() -> impl Filter<Extract = (RequestOrigin,), Error = std::convert::Infallible> + Clone {
    super::header_text("origin")
        .and(super::header_text("sec-fetch-site"))
        .and(super::header_text("host"))
        .map(|origin, sec_fetch_site, host| RequestOrigin { origin, sec_fetch_site, host })
}

impl RequestOrigin {
    /// Whether the request comes from a page of this service: `Sec-Fetch-Site: same-origin`, or
    /// an `Origin` whose host is the request's own host or the public URL's.
    fn same_origin(&self, public_url: Option<&str>) -> bool {
        if self.sec_fetch_site.as_deref() == Some("same-origin") {
            return true;
        }
        let Some(origin) = self.origin.as_deref().map(|o| o.trim_end_matches('/')) else { return false };
        // The public URL's origin: its scheme and host. The Host header has no scheme (TLS may end
        // at a proxy), so either scheme matches it.
        let public_origin = public_url.map(|u| {
            let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
            format!("{scheme}://{}", rest.split('/').next().unwrap_or(""))
        });
        let same_host =
            origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")).is_some_and(|h| Some(h) == self.host.as_deref());
        same_host || public_origin.as_deref() == Some(origin)
    }

    /// Forms that start a session (login, setup, sign-up) have no session yet; a browser that says
    /// where the request comes from must say this site, so another site cannot log a visitor in.
    pub fn check_form(&self, app: &App) -> Result<(), AppError> {
        if self.origin.is_some() && !self.same_origin(app.config.public_url.as_deref()) {
            return Err(AppError::Forbidden("cross-site request refused".into()));
        }
        Ok(())
    }

    /// The CSRF rule: a caller authenticated by the session cookie must be same-origin. Token
    /// callers and anonymous ones are exempt (a browser cannot attach a token by itself).
    pub fn check(&self, caller: &Caller, app: &App) -> Result<(), AppError> {
        match caller {
            Caller::User { via: Credential::Session, .. } if !self.same_origin(app.config.public_url.as_deref()) => {
                Err(AppError::Forbidden("cross-site request refused: send it from this site or with an API token".into()))
            }
            _ => Ok(()),
        }
    }
}

/// `POST /api/session` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// `GET /api/me`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub storage: Storage,
}

/// What a user keeps and may keep.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Storage {
    pub bytes: u64,
    pub videos: u64,
    /// None: no limit.
    pub quota_bytes: Option<u64>,
    pub quota_videos: Option<u64>,
    /// Uploads of the user arriving now.
    pub uploads_arriving: usize,
}

impl Storage {
    pub fn of(user: &User, used: Usage, app: &App) -> Storage {
        let (quota_bytes, quota_videos) = crate::upload::quota::limits(user, &app.config);
        let uploads_arriving = app.quotas.arriving(&user.id);
        Storage { bytes: used.bytes, videos: used.videos, quota_bytes, quota_videos, uploads_arriving }
    }
}

fn cookie(app: &App, value: &str, max_age: u64) -> Result<HeaderValue, AppError> {
    let secure = if app.config.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"))
        .map_err(|e| AppError::Internal(e.to_string()))
}

pub fn no_content() -> warp::reply::Response {
    let mut r = warp::reply::Response::new(Vec::new().into());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[utoipa::path(post, path = "/api/session", tag = "accounts", request_body = Login,
    responses(
        (status = 204, description = "Logged in: the session cookie is set", headers(("set-cookie" = String, description = "`cascade_session=…; HttpOnly; SameSite=Lax`"))),
        (status = 400, description = "`bad_request`: invalid JSON", body = ErrorBody),
        (status = 401, description = "`unauthorized`: wrong user name or password (the same answer whether the user exists or not)", body = ErrorBody),
        (status = 403, description = "`forbidden`: a cross-site form", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: too many failed logins for this user or address", body = ErrorBody),
    ),
    security(()))]
/// `POST /api/session`: checks the password (rate-limited per account and per address; the answer
/// never says whether the user exists) and sets the session cookie.
pub async fn login(
    app: Arc<App>,
    origin: RequestOrigin,
    ip: Option<IpAddr>,
    login: Result<Login, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check_form(&app)?;
    let login = login?;
    let name = login.username.trim().to_string();
    if name.len() > accounts::MAX_NAME || login.password.len() > accounts::MAX_PASSWORD {
        return Err(AppError::Unauthorized("wrong user name or password".into()));
    }
    if !app.logins.allowed(&name, ip) {
        return Err(AppError::TooManyAttempts);
    }
    let n2 = name.clone();
    let user = app.store.run(move |s| s.user_by_name(&n2)).await?;
    let hash = user.as_ref().filter(|u| !u.disabled).map(|u| u.password_hash.clone());
    let password = login.password;
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(hash.as_deref(), &password))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let Some(user) = user.filter(|_| ok) else {
        app.logins.failed(&name, ip);
        return Err(AppError::Unauthorized("wrong user name or password".into()));
    };
    app.logins.succeeded(&name);
    tracing::info!(user = %user.username, "logged in");
    start_session(&app, &user).await
}

/// A new session for `user`: `204` with its cookie.
pub async fn start_session(app: &App, user: &User) -> Result<warp::reply::Response, AppError> {
    let secret = accounts::new_secret();
    let ttl = app.config.session_ttl;
    let expires_at = Utc::now() + chrono::Duration::milliseconds(ttl.as_millis().min(i64::MAX as u128) as i64);
    let session = Session { user_id: user.id.clone(), expires_at, epoch: user.session_epoch };
    let d = accounts::digest(&secret);
    app.store.run(move |s| s.put_session(&d, &session)).await?;
    app.store.flush().await?;
    let mut r = no_content();
    r.headers_mut().insert(header::SET_COOKIE, cookie(app, &secret, ttl.as_secs())?);
    Ok(r)
}

#[utoipa::path(delete, path = "/api/session", tag = "accounts",
    responses((status = 204, description = "The session (if any) is ended and the cookie cleared", headers(("set-cookie" = String, description = "`cascade_session=…; HttpOnly; SameSite=Lax`")))),
    security((), ("session" = [])))]
/// `DELETE /api/session`: ends the session of the cookie, if any, and clears the cookie.
pub async fn logout(app: Arc<App>, cookie_header: Option<String>) -> Result<warp::reply::Response, AppError> {
    if let Some(secret) = cookie_header.as_deref().and_then(accounts::session_cookie) {
        let d = accounts::digest(secret);
        app.store.run(move |s| s.delete_session(&d)).await?;
        app.store.flush().await?;
    }
    let mut r = no_content();
    r.headers_mut().insert(header::SET_COOKIE, cookie(&app, "", 0)?);
    Ok(r)
}

#[utoipa::path(get, path = "/api/me", tag = "accounts",
    responses(
        (status = 200, description = "The caller and their storage", body = Me),
        (status = 401, description = "`unauthorized`: not logged in", body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])))]
/// `GET /api/me`: who the caller is and what they keep.
pub async fn me(app: Arc<App>, caller: Caller) -> Result<warp::reply::Response, AppError> {
    let u = caller.user().ok_or_else(|| AppError::Unauthorized("not logged in".into()))?.clone();
    let id = u.id.clone();
    let used = app.store.run(move |s| s.usage().map(|mut m| m.remove(&id).unwrap_or_default())).await?;
    let storage = Storage::of(&u, used, &app);
    Ok(json_response(&Me { id: u.id, username: u.username, role: u.role, storage }, StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(origin: Option<&str>, site: Option<&str>, host: &str) -> RequestOrigin {
        RequestOrigin { origin: origin.map(Into::into), sec_fetch_site: site.map(Into::into), host: Some(host.into()) }
    }

    #[test]
    fn same_origin_is_told_by_the_browser_headers() {
        assert!(o(Some("http://127.0.0.1:8000"), None, "127.0.0.1:8000").same_origin(None));
        assert!(o(None, Some("same-origin"), "x").same_origin(None));
        assert!(!o(Some("https://evil.example"), Some("cross-site"), "127.0.0.1:8000").same_origin(None));
        assert!(!o(None, None, "127.0.0.1:8000").same_origin(None), "no header: not proven");
        assert!(o(Some("https://video.example.com"), None, "10.0.0.5:8000").same_origin(Some("https://video.example.com")));
        assert!(!o(Some("https://video.example.com.evil"), None, "x").same_origin(Some("https://video.example.com")));
        assert!(!o(Some("http://video.example.com"), None, "x").same_origin(Some("https://video.example.com")), "another scheme");
        assert!(o(Some("https://video.example.com/"), None, "x").same_origin(Some("https://video.example.com/sub")));
        assert!(!o(Some("null"), None, "null").same_origin(None), "an opaque origin is never this site");
    }
}
