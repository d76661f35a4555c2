//! The API behind the account pages: first-run setup (`/setup`, with the one-time code from the
//! server log), sign-up (`CASCADE_SIGNUP` = closed | invite | open), changing one's password,
//! personal API tokens, and the administration of users and invitations.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use tracing::info;
use warp::http::StatusCode;

use super::api::json_response;
use super::session::{no_content, start_session, RequestOrigin, Storage};
use super::ErrorBody;
use crate::app::App;
use crate::auth::accounts::{self, Caller};
use crate::config::Signup;
use crate::error::AppError;
use crate::model::{ApiToken, Invite, Role, Scope, User};
use crate::store::StoreError;

/// API tokens one user may hold.
const MAX_TOKENS: usize = 100;
/// Sign-ups allowed per client address in the login limiter's window.
const SIGNUPS_PER_IP: u32 = 10;
/// Longest life of an invitation, in days (default 7).
const MAX_INVITE_DAYS: u32 = 90;

fn name_taken(e: StoreError) -> AppError {
    match e {
        StoreError::NameTaken(n) => AppError::Conflict(format!("the user name {n} is taken")),
        other => other.into(),
    }
}

/// A new user, with the password hashed off the executor (Argon2id takes tens of milliseconds).
async fn hashed_user(name: String, password: String, role: Role) -> Result<User, AppError> {
    tokio::task::spawn_blocking(move || accounts::new_user(name.trim(), &password, role))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(AppError::from)
}

/// `POST /api/setup` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SetupForm {
    pub code: String,
    pub username: String,
    pub password: String,
}

/// `POST /api/setup`: creates the first admin, only while no user exists and only with the
/// one-time code the server printed in its log; logs them in.
#[utoipa::path(post, path = "/api/setup", tag = "accounts", request_body = SetupForm,
    responses(
        (status = 204, description = "The first admin exists and is logged in", headers(("set-cookie" = String, description = "`cascade_session=…; HttpOnly; SameSite=Lax`"))),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field or an invalid value", body = ErrorBody),
        (status = 403, description = "`forbidden`: a wrong setup code or a cross-site form", body = ErrorBody),
        (status = 404, description = "`not_found`: setup is finished", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody),
    ),
    security(()))]
pub async fn setup(
    app: Arc<App>,
    origin: RequestOrigin,
    ip: Option<IpAddr>,
    form: Result<SetupForm, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check_form(&app)?;
    let finished = || AppError::NotFound("setup is finished: an account exists; log in instead".into());
    let expected = app.setup_code.lock().map_err(|_| AppError::Internal("setup lock poisoned".into()))?.clone();
    let Some(expected) = expected else { return Err(finished()) };
    let form = form?;
    if !app.logins.allowed("setup", ip) {
        return Err(AppError::TooManyAttempts);
    }
    // Compared as digests: the time taken says nothing about how much of the code matched.
    if accounts::digest(form.code.trim()) != accounts::digest(&expected) {
        app.logins.failed("setup", ip);
        return Err(AppError::Forbidden("wrong setup code (the server printed it in its log)".into()));
    }
    let user = hashed_user(form.username, form.password, Role::Admin).await?;
    let u = user.clone();
    if !app.store.run(move |s| s.create_first_user(&u)).await.map_err(name_taken)? {
        return Err(finished());
    }
    if let Ok(mut code) = app.setup_code.lock() {
        *code = None;
    }
    info!(user = %user.username, "first admin created on the setup page");
    start_session(&app, &user).await
}

/// `POST /api/signup` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignupForm {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub invite: Option<String>,
}

/// `POST /api/signup`: a new uploader, if the server's sign-up mode lets this caller in; logs
/// them in. An invitation is used up by the first sign-up that presents it.
#[utoipa::path(post, path = "/api/signup", tag = "accounts", request_body = SignupForm,
    responses(
        (status = 204, description = "Signed up and logged in", headers(("set-cookie" = String, description = "`cascade_session=…; HttpOnly; SameSite=Lax`"))),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field or an invalid value", body = ErrorBody),
        (status = 403, description = "`forbidden`: sign-up is closed, the invitation is missing, used or expired, or a cross-site form", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: too many sign-ups from this address", body = ErrorBody),
    ),
    security(()))]
pub async fn signup(
    app: Arc<App>,
    origin: RequestOrigin,
    ip: Option<IpAddr>,
    form: Result<SignupForm, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check_form(&app)?;
    if app.config.signup == Signup::Closed {
        return Err(AppError::Forbidden("sign-up is closed on this server; ask an administrator for an account".into()));
    }
    let form = form?;
    if !app.logins.hit(&format!("signup:{}", ip.map(|i| i.to_string()).unwrap_or_default()), SIGNUPS_PER_IP) {
        return Err(AppError::TooManyAttempts);
    }
    let user = hashed_user(form.username, form.password, Role::Uploader).await?;
    let name = user.username.clone();
    if app.store.run(move |s| s.user_by_name(&name)).await?.is_some() {
        return Err(AppError::Conflict(format!("the user name {} is taken", user.username)));
    }
    let invite = match (app.config.signup, form.invite) {
        (Signup::Invite, None) => return Err(AppError::Forbidden("sign-up needs an invitation link from an administrator".into())),
        (Signup::Invite, Some(code)) => {
            let d = accounts::digest(code.trim());
            let taken = app.store.run(move |s| s.take_invite(&d)).await?;
            match taken.filter(|i| i.expires_at > Utc::now()) {
                Some(i) => Some((code, i)),
                None => return Err(AppError::Forbidden("this invitation is unknown, used or expired".into())),
            }
        }
        _ => None,
    };
    let u = user.clone();
    if let Err(e) = app.store.run(move |s| s.create_user(&u)).await {
        if let Some((code, i)) = invite {
            // Not used after all (the name was taken meanwhile): the invitation stays valid.
            let d = accounts::digest(code.trim());
            app.store.run(move |s| s.put_invite(&d, &i)).await?;
        }
        return Err(name_taken(e));
    }
    info!(user = %user.username, invited = app.config.signup == Signup::Invite, "signed up");
    start_session(&app, &user).await
}

/// `PUT /api/me/password` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// `PUT /api/me/password`: from a session, with the current password. Every other session of
/// the user ends; this one gets a new cookie.
#[utoipa::path(put, path = "/api/me/password", tag = "accounts", request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; a new session cookie replaces every other session", headers(("set-cookie" = String, description = "`cascade_session=…; HttpOnly; SameSite=Lax`"))),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field or an invalid value", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: the current password is wrong, an API token (log in), or a cross-site request", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody),
    ),
    security(("session" = [])))]
pub async fn change_password(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    ip: Option<IpAddr>,
    form: Result<PasswordChange, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    let user = caller.person()?.clone();
    let form = form?;
    accounts::check_password(&form.new_password)?;
    if !app.logins.allowed(&user.username, ip) {
        return Err(AppError::TooManyAttempts);
    }
    let (hash, current, new) = (user.password_hash.clone(), form.current_password, form.new_password);
    let new_hash = tokio::task::spawn_blocking(move || {
        if accounts::verify_password(Some(&hash), &current) {
            accounts::hash_password(&new).map(Some)
        } else {
            Ok(None)
        }
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))??;
    let Some(new_hash) = new_hash else {
        app.logins.failed(&user.username, ip);
        return Err(AppError::Forbidden("the current password is wrong".into()));
    };
    let id = user.id.clone();
    let changed = app
        .store
        .run(move |s| {
            let mut u = s.user(&id)?.ok_or_else(|| AppError::NotFound("no such user".into()))?;
            u.password_hash = new_hash;
            u.session_epoch += 1;
            s.put_user(&u)?;
            Ok::<_, AppError>(u)
        })
        .await?;
    info!(user = %changed.username, "password changed; other sessions ended");
    start_session(&app, &changed).await
}

/// An API token as its owner sees it (the secret is shown once, at creation).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> TokenView {
        TokenView { id: t.id, name: t.name, scopes: t.scopes, created_at: t.created_at, expires_at: t.expires_at }
    }
}

/// `GET /api/tokens`: the caller's API tokens.
#[utoipa::path(get, path = "/api/tokens", tag = "accounts",
    responses((status = 200, description = "The tokens", body = TokenList),
        (status = 403, description = "`forbidden`: an API token (tokens are managed from a logged-in session)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
    ),
    security(("session" = [])))]
pub async fn list_tokens(app: Arc<App>, caller: Caller) -> Result<warp::reply::Response, AppError> {
    let id = caller.person()?.id.clone();
    let tokens: Vec<TokenView> = app.store.run(move |s| s.tokens_of(&id)).await?.into_iter().map(Into::into).collect();
    Ok(json_response(&TokenList { tokens }, StatusCode::OK))
}

/// `GET /api/tokens`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// `POST /api/tokens`: the token and, this once, its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewTokenView {
    #[serde(flatten)]
    pub info: TokenView,
    /// The secret to send as `Authorization: Bearer …`; shown only here.
    pub token: String,
}

/// `POST /api/tokens` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub expires_days: Option<u32>,
}

/// `POST /api/tokens`: a new token of the caller; `201` with its secret, shown this once.
#[utoipa::path(post, path = "/api/tokens", tag = "accounts", request_body = NewToken,
    responses((status = 201, description = "The token, with its secret", body = NewTokenView),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field or an invalid value", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: an API token (log in), or a cross-site request", body = ErrorBody),
        (status = 409, description = "`conflict`: 100 tokens already", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
    ),
    security(("session" = [])))]
pub async fn create_token(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    form: Result<NewToken, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    let user = caller.person()?.clone();
    let form = form?;
    let name = form.name.trim().to_string();
    if name.is_empty() || name.chars().count() > accounts::MAX_NAME {
        return Err(AppError::BadRequest("a token's name is 1–64 characters".into()));
    }
    if form.scopes.is_empty() {
        return Err(AppError::BadRequest("a token needs at least one scope: upload, manage".into()));
    }
    if form.expires_days.is_some_and(|d| !(1..=3650).contains(&d)) {
        return Err(AppError::BadRequest("expires_days is 1–3650 (or none: never)".into()));
    }
    let mut scopes = form.scopes;
    scopes.sort_by_key(|s| *s as u8);
    scopes.dedup();
    let (secret, token) = accounts::new_token(&user.id, &name, scopes, form.expires_days);
    let t = token.clone();
    app.store
        .run(move |s| {
            if s.tokens_of(&t.user_id)?.len() >= MAX_TOKENS {
                return Err(AppError::Conflict(format!("you have {MAX_TOKENS} API tokens already; revoke some first")));
            }
            s.put_token(&accounts::digest(&secret), &t)?;
            Ok(secret)
        })
        .await
        .map(|secret| json_response(&NewTokenView { info: TokenView::from(token), token: secret }, StatusCode::CREATED))
}

/// `DELETE /api/tokens/{id}`: revokes one of the caller's tokens.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "accounts", params(("id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: an API token (log in), or a cross-site request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("session" = [])))]
pub async fn delete_token(app: Arc<App>, caller: Caller, origin: RequestOrigin, id: String) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    let user = caller.person()?.id.clone();
    let i = id.clone();
    if !app.store.run(move |s| s.delete_token(&user, &i)).await? {
        return Err(AppError::NotFound(format!("no API token {id}")));
    }
    app.store.flush().await?;
    Ok(no_content())
}

/// A user as admins see them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub storage: Storage,
}

fn user_view(app: &App, u: User, used: crate::store::Usage) -> UserView {
    let storage = Storage::of(&u, used, app);
    UserView { id: u.id, username: u.username, role: u.role, disabled: u.disabled, created_at: u.created_at, storage }
}

/// `GET /api/admin/users`: every user with what they keep.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin",
    responses((status = 200, description = "The users", body = UserList),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])))]
pub async fn list_users(app: Arc<App>, caller: Caller) -> Result<warp::reply::Response, AppError> {
    caller.admin()?;
    let (mut users, mut usage) = app.store.run(|s| Ok::<_, StoreError>((s.users()?, s.usage()?))).await?;
    users.sort_by_key(|u| u.username.to_lowercase());
    let views: Vec<UserView> = users
        .into_iter()
        .map(|u| {
            let used = usage.remove(&u.id).unwrap_or_default();
            user_view(&app, u, used)
        })
        .collect();
    Ok(json_response(&UserList { users: views }, StatusCode::OK))
}

/// `GET /api/admin/users`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

/// `POST /api/admin/users`: the user and the password made for them, if none was given.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    /// The generated password (shown only here); `null` when the request gave one.
    pub password: Option<String>,
}

/// `POST /api/admin/invites`: a one-time sign-up code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InviteView {
    pub code: String,
    /// The sign-up page with the code (relative without `CASCADE_PUBLIC_URL`).
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/admin/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    #[serde(default)]
    pub role: Option<Role>,
    /// None: the server makes one up and answers with it.
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST /api/admin/users`: `201` with the user, and the password when the server made it up.
#[utoipa::path(post, path = "/api/admin/users", tag = "admin", request_body = NewUser,
    responses((status = 201, description = "The user", body = CreatedUser),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field or an invalid value", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin, or a cross-site request with the session cookie", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])))]
pub async fn create_user(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    form: Result<NewUser, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    caller.admin()?;
    let form = form?;
    let generated = form.password.is_none().then(accounts::new_secret);
    let password = form.password.or(generated.clone()).unwrap_or_default();
    let user = hashed_user(form.username, password, form.role.unwrap_or(Role::Uploader)).await?;
    let u = user.clone();
    app.store.run(move |s| s.create_user(&u)).await.map_err(name_taken)?;
    app.store.flush().await?;
    info!(user = %user.username, role = ?user.role, by = %caller.user().map_or("", |u| u.username.as_str()), "user created");
    let view = user_view(&app, user, Default::default());
    Ok(json_response(&CreatedUser { user: view, password: generated }, StatusCode::CREATED))
}

/// A JSON field that may be absent (keep), `null` (clear) or a value (set).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /api/admin/users/{id}` body: only the fields given change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub disabled: Option<bool>,
    /// `null` goes back to the server's default.
    #[serde(default, deserialize_with = "present")]
    pub quota_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub quota_videos: Option<Option<u64>>,
}

/// `PATCH /api/admin/users/{id}`: role, disabled, quotas. The last active admin stays one.
#[utoipa::path(patch, path = "/api/admin/users/{id}", tag = "admin", params(("id" = String, Path, description = "The user's id")), request_body = UserChange,
    responses((status = 200, description = "The user", body = UserView),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field or an invalid value", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin, or a cross-site request with the session cookie", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the last active admin cannot be demoted or disabled", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])))]
pub async fn update_user(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    id: String,
    form: Result<UserChange, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    let by = caller.admin()?.username.clone();
    let change = form?;
    let (user, used) = app
        .store
        .run(move |s| {
            let users = s.users()?;
            let mut u = users.iter().find(|u| u.id == id).cloned().ok_or_else(|| AppError::NotFound(format!("no user {id}")))?;
            if let Some(r) = change.role {
                u.role = r;
            }
            if let Some(d) = change.disabled {
                u.disabled = d;
            }
            if let Some(q) = change.quota_bytes {
                u.quota_bytes = q;
            }
            if let Some(q) = change.quota_videos {
                u.quota_videos = q;
            }
            let active_admin = |x: &User| x.role == Role::Admin && !x.disabled;
            if !active_admin(&u) && !users.iter().any(|x| x.id != u.id && active_admin(x)) {
                return Err(AppError::Conflict("the last active admin cannot be demoted or disabled".into()));
            }
            s.put_user(&u)?;
            let used = s.usage()?.remove(&u.id).unwrap_or_default();
            Ok::<_, AppError>((u, used))
        })
        .await?;
    app.store.flush().await?;
    info!(user = %user.username, role = ?user.role, disabled = user.disabled, %by, "user changed");
    Ok(json_response(&user_view(&app, user, used), StatusCode::OK))
}

/// `POST /api/admin/invites` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    #[serde(default)]
    pub expires_days: Option<u32>,
}

/// `POST /api/admin/invites`: a single-use sign-up link; `201` with its code and URL.
#[utoipa::path(post, path = "/api/admin/invites", tag = "admin", request_body = NewInvite,
    responses((status = 201, description = "The invitation", body = InviteView),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown field or an invalid value", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin, or a cross-site request with the session cookie", body = ErrorBody),
        (status = 409, description = "`conflict`: sign-up is closed", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])))]
pub async fn create_invite(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    form: Result<NewInvite, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    let admin = caller.admin()?.clone();
    let form = form?;
    if app.config.signup == Signup::Closed {
        return Err(AppError::Conflict("sign-up is closed (CASCADE_SIGNUP=closed): an invitation could not be used".into()));
    }
    let days = form.expires_days.unwrap_or(7);
    if !(1..=MAX_INVITE_DAYS).contains(&days) {
        return Err(AppError::BadRequest(format!("expires_days is 1–{MAX_INVITE_DAYS}")));
    }
    let code = accounts::new_secret();
    let invite = Invite { created_by: admin.id.clone(), expires_at: Utc::now() + chrono::Duration::days(i64::from(days)) };
    let (d, i) = (accounts::digest(&code), invite.clone());
    app.store.run(move |s| s.put_invite(&d, &i)).await?;
    app.store.flush().await?;
    info!(by = %admin.username, days, "invitation created");
    let url = format!("{}/signup?invite={code}", app.config.public_url.as_deref().unwrap_or(""));
    Ok(json_response(&InviteView { code, url, expires_at: invite.expires_at }, StatusCode::CREATED))
}
