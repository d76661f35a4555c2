//! `/metrics`: the registry of [`crate::metrics`] in the Prometheus text format, for an admin on
//! the main address and for anyone on `CASCADE_METRICS_BIND` (a private network's scraper); and
//! the request counting every route goes through.

use std::sync::Arc;

use warp::http::HeaderValue;
use warp::{Filter, Rejection, Reply};

use super::{get_or_head, reject, session, with_app};
use crate::app::App;
use crate::error::AppError;
use crate::metrics::StatusLabels;
use crate::model::Status;

/// The content type of the text format prometheus-client writes (OpenMetrics 1.0 text, which
/// Prometheus scrapes natively).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route template a request path belongs to: the paths of the API description (which
/// `tests/openapi.rs` holds equal to the routes), so that ids and tokens never become label values
/// (each would be a series of its own). Playback paths are told apart by the kind of file.
pub fn route_label(path: &str) -> &'static str {
    let path = path.trim_matches('/');
    if let Some(rest) = path.strip_prefix("play/") {
        let file = rest.split_once('/').map_or("", |(_, f)| f);
        let last = file.rsplit('/').next().unwrap_or("");
        return if file == "hls/key" {
            "/play/{token}/key"
        } else if last.ends_with(".m3u8") || last.ends_with(".mpd") {
            "/play/{token}/manifest"
        } else if last.ends_with(".ts") || last.ends_with(".m4s") || last.ends_with(".mp4") {
            "/play/{token}/segment"
        } else if file.starts_with("images/") {
            "/play/{token}/image"
        } else {
            "/play/{token}/other"
        };
    }
    templates()
        .iter()
        .find(|(_, segments)| {
            let mut parts = path.split('/');
            segments.iter().all(|seg| parts.next().is_some_and(|p| seg.as_deref().is_none_or(|s| s == p))) && parts.next().is_none()
        })
        .map_or("other", |(label, _)| label.as_str())
}

/// The described paths, each with its segments (`None`: a parameter), literal ones first.
fn templates() -> &'static [(String, Vec<Option<String>>)] {
    static TEMPLATES: std::sync::OnceLock<Vec<(String, Vec<Option<String>>)>> = std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut list: Vec<(String, Vec<Option<String>>)> = super::openapi::doc()
            .paths
            .paths
            .keys()
            .filter(|p| !p.starts_with("/play/"))
            .map(|p| {
                let segments = p.trim_matches('/').split('/').map(|s| (!s.starts_with('{')).then(|| s.to_string())).collect();
                (p.clone(), segments)
            })
            .collect();
        list.sort_by_key(|(_, segments)| segments.iter().filter(|s| s.is_none()).count());
        list
    })
}

/// A method as a label (anything unusual is one value).
pub fn method_label(m: &warp::http::Method) -> &'static str {
    use warp::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_label(s: Status) -> &'static str {
    match s {
        Status::Uploading => "uploading",
        Status::Queued => "queued",
        Status::Processing => "processing",
        Status::Ready => "ready",
        Status::Failed => "failed",
    }
}

/// Reads the states (queue, videos, disk, viewers) and writes every metric.
pub async fn scrape(app: &Arc<App>) -> Result<warp::reply::Response, AppError> {
    let (jobs, counts) = app.store.run(|s| Ok::<_, AppError>((s.jobs()?, s.count_by_status()?))).await?;
    let m = &app.metrics;
    m.queue_depth.set(jobs.iter().filter(|j| j.state == crate::model::JobState::Queued).count() as i64);
    for s in [Status::Uploading, Status::Queued, Status::Processing, Status::Ready, Status::Failed] {
        m.videos.get_or_create(&StatusLabels { status: status_label(s) }).set(counts.get(&s).copied().unwrap_or(0) as i64);
    }
    m.jobs_running.set(app.running.lock().map_or(0, |r| r.len()) as i64);
    m.viewers_gauge.set(m.active_viewers() as i64);
    let dir = app.config.data_dir.clone();
    let free = tokio::task::spawn_blocking(move || crate::upload::free_bytes(&dir)).await.ok().flatten();
    m.disk_free.set(free.unwrap_or(0) as i64);
    let mut r = warp::reply::Response::new(m.encode().into());
    r.headers_mut().insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
    r.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /metrics` on the main address: admins only (`401` without a credential, `403` for others).
pub fn route(app: &Arc<App>) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("metrics").and(get_or_head()).and(with_app(app.clone())).and(session::credentials()).and_then(
        |app: Arc<App>, creds| async move {
            let caller = session::identify(&app, creds).await.map_err(reject)?;
            caller.admin().map_err(reject)?;
            scrape(&app).await.map_err(reject)
        },
    )
}

/// What `CASCADE_METRICS_BIND` serves: `/metrics` without a credential, `404` for anything else.
pub fn open_routes(app: Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    warp::path!("metrics")
        .and(get_or_head())
        .and(with_app(app))
        .and_then(|app: Arc<App>| async move { scrape(&app).await.map_err(reject) })
        .recover(super::recover)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_a_bounded_set_of_routes() {
        assert_eq!(route_label("/"), "/");
        assert_eq!(route_label("/api/videos/abc"), "/api/videos/{id}");
        assert_eq!(route_label("/api/videos/abc/events"), "/api/videos/{id}/events");
        assert_eq!(route_label("/play/tok.sig/hls/720p/seg00001.ts"), "/play/{token}/segment");
        assert_eq!(route_label("/play/tok.sig/dash/720p/init.mp4"), "/play/{token}/segment");
        assert_eq!(route_label("/play/tok.sig/dash/manifest.mpd"), "/play/{token}/manifest");
        assert_eq!(route_label("/play/tok.sig/hls/key"), "/play/{token}/key");
        assert_eq!(route_label("/play/tok.sig/images/poster.jpg"), "/play/{token}/image");
        assert_eq!(route_label("/no/such/thing/at/all"), "other");
        assert_eq!(route_label("/watch/x/y"), "other");
        assert_eq!(route_label("/"), "/");
        assert_eq!(route_label("/admin"), "/admin");
        assert_eq!(route_label("/api/openapi.json"), "/api/openapi.json");
        assert_eq!(route_label("/api/webhooks/w1/deliveries"), "/api/webhooks/{id}/deliveries");
        assert_eq!(route_label("/api/uploads/u1"), "/api/uploads/{id}");
        assert_eq!(route_label("/assets/app.css"), "/assets/{file}");
        assert_eq!(route_label("/api/videos/abc/"), "/api/videos/{id}");
        assert_eq!(route_label("/api/nothing"), "other");
    }
}
