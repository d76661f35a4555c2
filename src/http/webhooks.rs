//! `/api/webhooks`: endpoints a user registers for the events of their videos, and each one's
//! delivery log. The sending is `crate::webhooks`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::ErrorBody;
use super::{get_or_head, json_body, reject, session, with_app};
use crate::app::App;
use crate::auth::accounts::Caller;
use crate::error::AppError;
use crate::http::session::RequestOrigin;
use crate::model::{Delivery, DeliveryState, Webhook};
use crate::webhooks::{self as hooks, EVENTS, MAX_PER_USER};

/// `POST /api/webhooks` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub url: String,
    /// The events to receive (all of them when absent).
    pub events: Option<Vec<String>>,
}

/// An endpoint as the API shows it: its secret only in the answer that created it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn view(w: Webhook, with_secret: bool) -> WebhookView {
    WebhookView { id: w.id, url: w.url, events: w.events, created_at: w.created_at, secret: with_secret.then_some(w.secret) }
}

/// A delivery in the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub event: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it is tried next (pending ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    pub body: serde_json::Value,
}

fn delivery_view(d: Delivery) -> DeliveryView {
    DeliveryView {
        next_at: (d.state == DeliveryState::Pending).then_some(d.next_at),
        body: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
        id: d.id,
        event: d.event,
        state: d.state,
        attempts: d.attempts,
        created_at: d.created_at,
        last_status: d.last_status,
        last_error: d.last_error,
        delivered_at: d.delivered_at,
    }
}

fn json(v: &impl Serialize, status: StatusCode) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

/// An endpoint the caller may see: their own (admins: any); others are "not found".
async fn owned(app: &App, caller: &Caller, id: &str) -> Result<Webhook, AppError> {
    let user = caller.manager()?.clone();
    let id2 = id.to_string();
    let w = app.store.run(move |s| s.webhook(&id2)).await?;
    w.filter(|w| w.owner == user.id || user.role == crate::model::Role::Admin).ok_or_else(|| AppError::NotFound(format!("no webhook {id}")))
}

/// `POST /api/webhooks`: registers an endpoint; its signing secret is in this answer only.
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, description = "The endpoint, with its secret", body = WebhookView),
        (status = 400, description = "`bad_request`: invalid JSON, an unknown event, a URL that is not http(s), does not resolve, or resolves to a private address", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token without `manage`, or a cross-site request", body = ErrorBody),
        (status = 409, description = "`conflict`: too many endpoints", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
pub async fn create(
    app: Arc<App>,
    caller: Caller,
    origin: RequestOrigin,
    form: Result<NewWebhook, AppError>,
) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    let user = caller.manager()?.clone();
    let form = form?;
    let events = match form.events {
        None => EVENTS.iter().map(|e| e.to_string()).collect(),
        Some(list) if list.is_empty() => return Err(AppError::BadRequest("events is empty: leave it out to receive every event".into())),
        Some(list) => {
            if let Some(bad) = list.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return Err(AppError::BadRequest(format!("unknown event {bad:?}; the events are {}", EVENTS.join(", "))));
            }
            let mut list = list;
            list.sort();
            list.dedup();
            list
        }
    };
    hooks::resolve(&form.url, app.config.webhook_allow_private).await?;
    let w = Webhook {
        id: uuid::Uuid::new_v4().to_string(),
        owner: user.id.clone(),
        url: form.url,
        events,
        secret: format!("whsec_{}", crate::auth::accounts::new_secret()),
        created_at: chrono::Utc::now(),
    };
    let w2 = w.clone();
    app.store
        .run(move |s| {
            if s.webhooks(Some(&w2.owner))?.len() >= MAX_PER_USER {
                return Err(AppError::Conflict(format!("at most {MAX_PER_USER} webhooks per user: remove one first")));
            }
            s.add_webhook(&w2)?;
            s.flush()?;
            Ok(())
        })
        .await?;
    Ok(json(&view(w, true), StatusCode::CREATED))
}

/// `GET /api/webhooks`: the caller's endpoints (without secrets).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses((status = 200, description = "The endpoints", body = Vec<WebhookView>),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token without `manage`", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
pub async fn list(app: Arc<App>, caller: Caller) -> Result<warp::reply::Response, AppError> {
    let user = caller.manager()?.clone();
    let list = app.store.run(move |s| s.webhooks(Some(&user.id))).await?;
    Ok(json(&list.into_iter().map(|w| view(w, false)).collect::<Vec<_>>(), StatusCode::OK))
}

/// `GET /api/webhooks/{id}`.
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = WebhookView),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token without `manage`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such endpoint of the caller's", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
pub async fn get(app: Arc<App>, caller: Caller, id: String) -> Result<warp::reply::Response, AppError> {
    Ok(json(&view(owned(&app, &caller, &id).await?, false), StatusCode::OK))
}

/// `DELETE /api/webhooks/{id}`: removes the endpoint and its deliveries.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Removed"),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token without `manage`, or a cross-site request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
pub async fn delete(app: Arc<App>, caller: Caller, origin: RequestOrigin, id: String) -> Result<warp::reply::Response, AppError> {
    origin.check(&caller, &app)?;
    let w = owned(&app, &caller, &id).await?;
    app.store.run(move |s| s.delete_webhook(&w.id).and_then(|_| s.flush())).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// The newest 100 deliveries of an endpoint.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The newest 100 deliveries, newest first", body = Vec<DeliveryView>),
        (status = 401, description = "`unauthorized`: not logged in, or a bad token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token without `manage`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("token" = ["manage"]), ("session" = [])))]
pub async fn deliveries(app: Arc<App>, caller: Caller, id: String) -> Result<warp::reply::Response, AppError> {
    let w = owned(&app, &caller, &id).await?;
    let list = app.store.run(move |s| s.deliveries(&w.id, 100)).await?;
    Ok(json(&list.into_iter().map(delivery_view).collect::<Vec<_>>(), StatusCode::OK))
}

/// The routes.
pub fn routes(app: &Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let who = || with_app(app.clone()).and(session::credentials());
    let create = warp::path!("api" / "webhooks").and(warp::post()).and(who()).and(session::request_origin()).and(json_body()).and_then(
        |app: Arc<App>, creds, origin, form| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            create(app, caller, origin, form).await.map_err(reject)
        },
    );
    let list = warp::path!("api" / "webhooks").and(get_or_head()).and(who()).and_then(|app: Arc<App>, creds| async move {
        let caller = session::identify(&app, creds).await.map_err(reject)?;
        list(app, caller).await.map_err(reject)
    });
    let one = warp::path!("api" / "webhooks" / String).and(get_or_head()).and(who()).and_then(|id, app: Arc<App>, creds| async move {
        let caller = session::identify(&app, creds).await.map_err(reject)?;
        get(app, caller, id).await.map_err(reject)
    });
    let remove = warp::path!("api" / "webhooks" / String).and(warp::delete()).and(who()).and(session::request_origin()).and_then(
        |id, app: Arc<App>, creds, origin| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            delete(app, caller, origin, id).await.map_err(reject)
        },
    );
    let log = warp::path!("api" / "webhooks" / String / "deliveries").and(get_or_head()).and(who()).and_then(
        |id, app: Arc<App>, creds| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            deliveries(app, caller, id).await.map_err(reject)
        },
    );
    create.or(list).or(log).or(one).or(remove)
}
