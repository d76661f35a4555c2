//! Pages and static assets from the web dir; the player libraries come from `web/node_modules`
//! (installed from the lock file), served by Cascade itself so nothing loads from another origin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use warp::{Filter, Rejection, Reply};

use crate::app::App;

/// Served when `web/upload.html` is missing: an upload form that works without JavaScript.
const FALLBACK_UPLOAD: &str = r#"<!doctype html><html lang="en"><meta charset="utf-8"><title>Upload · Cascade</title>
<h1>Upload a video</h1><form method="post" action="/api/videos?redirect=1" enctype="multipart/form-data">
<p><label>Title <input name="title"></label></p><p><input type="file" name="file" accept="video/*" required></p>
<p><button>Upload</button></p></form></html>"#;

/// The player page; it loads every file of `PLAYERS`.
const WATCH_PAGE: &str = "watch.html";

/// The player libraries: the name under `/vendor/` and the file under `WEB_DIR/node_modules`.
const PLAYERS: [(&str, &str); 2] =
    [("dash.all.min.js", "dashjs/dist/modern/umd/dash.all.min.js"), ("hls.min.js", "hls.js/dist/hls.min.js")];

/// Other libraries the pages load, served the same way: the resumable-upload client, and Swagger
/// UI for `/api/docs`.
const LIBRARIES: [(&str, &str); 3] = [
    ("tus.min.js", "tus-js-client/dist/tus.min.js"),
    ("swagger-ui-bundle.js", "swagger-ui-dist/swagger-ui-bundle.js"),
    ("swagger-ui.css", "swagger-ui-dist/swagger-ui.css"),
];

/// A web dir whose watch page would load player libraries that are not installed.
#[derive(Debug, thiserror::Error)]
#[error("{} has a player page but not the player libraries it loads ({}); install them with ./scripts/setup.sh", .web_dir.display(), .missing.join(", "))]
pub struct PlayersMissing {
    web_dir: PathBuf,
    missing: Vec<String>,
}

/// Refuses to serve a watch page without its players: it would fail in the browser with
/// `dashjs is not defined`. A web dir without a watch page needs none.
pub fn check_players(web_dir: &Path) -> Result<(), PlayersMissing> {
    if !web_dir.join(WATCH_PAGE).exists() {
        return Ok(());
    }
    let missing: Vec<String> = PLAYERS
        .iter()
        .map(|(_, file)| Path::new("node_modules").join(file))
        .filter(|f| !web_dir.join(f).is_file())
        .map(|f| f.display().to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PlayersMissing { web_dir: web_dir.to_path_buf(), missing })
    }
}

fn mime_for(name: &str) -> &'static str {
    super::mime::lookup(name).map_or("application/octet-stream", |(mime, _)| mime)
}

pub(super) async fn file_reply(path: PathBuf, cache: &'static str) -> Result<warp::reply::Response, Rejection> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut r = warp::reply::Response::new(bytes.into());
            r.headers_mut().insert("content-type", warp::http::HeaderValue::from_static(mime_for(&name)));
            r.headers_mut().insert("cache-control", warp::http::HeaderValue::from_static(cache));
            Ok(r)
        }
        Err(_) => Err(warp::reject::not_found()),
    }
}

/// Pages at `/NAME`, from `NAME.html`.
const ACCOUNT_PAGES: [&str; 5] = ["setup", "signup", "account", "admin", "live"];

fn page(app: &Arc<App>, name: &str) -> PathBuf {
    app.config.web_dir.join(name)
}

/// The page and asset routes.
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let a = app.clone();
    let index = warp::path::end().and(super::get_or_head()).and_then(move || file_reply(page(&a, "index.html"), "no-cache"));
    let a = app.clone();
    let upload = warp::path!("upload").and(super::get_or_head()).and_then(move || {
        let path = page(&a, "upload.html");
        async move {
            match file_reply(path, "no-cache").await {
                Ok(r) => Ok::<_, Rejection>(r),
                Err(_) => Ok(warp::reply::html(FALLBACK_UPLOAD).into_response()),
            }
        }
    });
    let a = app.clone();
    let login = warp::path!("login").and(super::get_or_head()).and_then(move || file_reply(page(&a, "login.html"), "no-cache"));
    let a = app.clone();
    let account = warp::path!(String).and(super::get_or_head()).and_then(move |name: String| {
        let file = ACCOUNT_PAGES.iter().find(|p| **p == name).map(|p| page(&a, &format!("{p}.html")));
        async move {
            match file {
                Some(f) => file_reply(f, "no-cache").await,
                None => Err(warp::reject::not_found()),
            }
        }
    });
    let a = app.clone();
    let watch = warp::path!("watch" / String).and(super::get_or_head()).and_then(move |id: String| {
        let (path, public_url) = (page(&a, WATCH_PAGE), a.config.public_url.clone());
        async move {
            // With the service's address known, the page names its oEmbed URL.
            let Some(base) = public_url else { return file_reply(path, "no-cache").await };
            let text = tokio::fs::read_to_string(&path).await.map_err(|_| warp::reject::not_found())?;
            let page = super::embed::with_discovery(&text, Some(&base), &id).unwrap_or(text);
            Ok(warp::reply::with_header(warp::reply::html(page), "cache-control", "no-cache").into_response())
        }
    });
    let a = app.clone();
    let assets = warp::path!("assets" / String).and(super::get_or_head()).and_then(move |name: String| {
        let ok = !name.starts_with('.') && !name.contains('/') && !name.contains('\\') && !name.contains("..");
        let path = a.config.web_dir.join(&name);
        async move {
            if !ok {
                return Err(warp::reject::not_found());
            }
            file_reply(path, "public, max-age=300").await
        }
    });
    let a = app.clone();
    let vendor = warp::path!("vendor" / String).and(super::get_or_head()).and_then(move |name: String| {
        let path = PLAYERS
            .iter()
            .chain(LIBRARIES.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, file)| a.config.web_dir.join("node_modules").join(file));
        async move {
            match path {
                Some(p) => file_reply(p, "public, max-age=86400").await,
                None => Err(warp::reject::not_found()),
            }
        }
    });
    index.or(upload).or(login).or(account).or(watch).or(assets).or(vendor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_page_needs_its_players() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path();
        assert!(check_players(web).is_ok(), "no watch page, no players needed");
        std::fs::write(web.join(WATCH_PAGE), "<script src=/vendor/dash.all.min.js></script>").unwrap();
        let msg = check_players(web).unwrap_err().to_string();
        assert!(msg.contains("./scripts/setup.sh") && msg.contains("dash.all.min.js") && msg.contains("hls.min.js"), "{msg}");
        for (_, file) in PLAYERS {
            let f = web.join("node_modules").join(file);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "//").unwrap();
        }
        assert!(check_players(web).is_ok());
    }
}
