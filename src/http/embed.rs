//! Other sites show Cascade's videos: the embed player `/embed/{id}` (the watch page's player
//! without the site's chrome, framable by `CASCADE_EMBED_ORIGINS`), oEmbed (`/oembed?url=…`, so
//! CMSs and chat apps unfurl links) and its discovery link in the watch page.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warp::http::HeaderValue;
use warp::{Filter, Rejection, Reply};

use super::ErrorBody;
use super::{get_or_head, reject, with_app};
use crate::app::App;
use crate::auth::accounts::Caller;
use crate::error::AppError;
use crate::model::Visibility;
use crate::packaging::images as im;

/// The embed page's file in the web dir.
pub const EMBED_PAGE: &str = "embed.html";
/// Size of an embed when nothing else is known or asked.
const DEFAULT_WIDTH: u32 = 640;

/// `/embed/{id}` and `/oembed`.
pub fn routes(app: &Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let a = app.clone();
    let embed = warp::path!("embed" / String).and(get_or_head()).and_then(move |_id: String| {
        let a = a.clone();
        async move {
            let mut r = super::pages::file_reply(a.config.web_dir.join(EMBED_PAGE), "no-cache").await?;
            // Framable where the settings say, unlike every other page.
            let public_origin = a.config.public_url.as_deref().and_then(super::headers::origin);
            let csp = super::headers::content_security_policy(&a.config.embed_origins, public_origin);
            if let Ok(v) = HeaderValue::from_str(&csp) {
                r.headers_mut().insert("content-security-policy", v);
            }
            Ok::<_, Rejection>(r)
        }
    });
    let oembed = warp::path!("oembed").and(get_or_head()).and(with_app(app.clone())).and(super::query::<OEmbedQuery>()).and_then(
        |app: Arc<App>, q: Result<OEmbedQuery, AppError>| async move {
            let q = q.map_err(reject)?;
            let format = q.format().map_err(reject)?;
            let o = oembed(&app, q).await.map_err(reject)?;
            Ok::<_, Rejection>(match format {
                Format::Json => warp::reply::json(&o).into_response(),
                Format::Xml => warp::reply::with_header(o.xml(), "content-type", "text/xml; charset=utf-8").into_response(),
            })
        },
    );
    embed.or(oembed)
}

/// `GET /oembed` query (oEmbed 1.0, §2.2).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OEmbedQuery {
    /// A watch or embed page of this service (`…/watch/{id}`).
    pub url: String,
    pub maxwidth: Option<u32>,
    pub maxheight: Option<u32>,
    /// `json` (the default) or `xml`.
    #[param(value_type = Option<Format>)]
    pub format: Option<String>,
}

/// The formats of an oEmbed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Format {
    Json,
    Xml,
}

impl OEmbedQuery {
    /// The format asked for; an empty `format=` is the default.
    fn format(&self) -> Result<Format, AppError> {
        match self.format.as_deref() {
            None | Some("") | Some("json") => Ok(Format::Json),
            Some("xml") => Ok(Format::Xml),
            Some(other) => Err(AppError::BadRequest(format!("format is json or xml, not {other:?}"))),
        }
    }
}

/// An oEmbed `video` response (§2.3.4).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OEmbed {
    pub version: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub provider_name: &'static str,
    pub provider_url: String,
    pub html: String,
    pub width: u32,
    pub height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_height: Option<u32>,
}

/// A video id as ids are made: letters, digits, `-` and `_`.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The origin (`scheme://host[:port]`) and video id of a watch or embed URL of this service. With
/// `CASCADE_PUBLIC_URL` set, the URL must start with it; without, any host is taken to be this one
/// (the asker reached the page there).
fn parse_url<'a>(url: &'a str, public_url: Option<&str>) -> Option<(String, &'a str)> {
    let url = url.split(['?', '#']).next()?;
    let (base, path) = match public_url {
        Some(p) => (p.to_string(), url.strip_prefix(p)?),
        None => {
            let origin = super::headers::origin(url)?;
            (origin.to_string(), &url[origin.len()..])
        }
    };
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return None;
    }
    let id = path.strip_prefix("/watch/").or_else(|| path.strip_prefix("/embed/"))?.trim_end_matches('/');
    plausible_id(id).then_some((base, id))
}

/// The embed's size: the video's aspect ratio at the default width, within `maxwidth`/`maxheight`.
fn fit(src: Option<(u32, u32)>, maxwidth: Option<u32>, maxheight: Option<u32>) -> (u32, u32) {
    let (sw, sh) = src.filter(|(w, h)| *w > 0 && *h > 0).unwrap_or((16, 9));
    let mut w = DEFAULT_WIDTH.min(maxwidth.unwrap_or(u32::MAX)).max(1) as f64;
    let mut h = w * sh as f64 / sw as f64;
    if let Some(mh) = maxheight.filter(|mh| (*mh as f64) < h) {
        h = mh.max(1) as f64;
        w = h * sw as f64 / sh as f64;
    }
    ((w.round() as u32).max(1), (h.round() as u32).max(1))
}

/// `GET /oembed?url=…`: public and unlisted videos (an unlisted one is shown to whoever has its
/// link, which is what an unfurl is); a private one is `401`, as the spec says.
#[utoipa::path(get, path = "/oembed", tag = "embeds", params(OEmbedQuery),
    responses((status = 200, description = "An oEmbed `video` response", content(
            (OEmbed = "application/json"),
            (String = "text/xml", example = "<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?><oembed><version>1.0</version><type>video</type>…</oembed>"))),
        (status = 400, description = "`bad_request`: `url` is missing, or a query value is invalid", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the video is private", body = ErrorBody),
        (status = 404, description = "`not_found`: not a watch or embed URL of this service, or no such video", body = ErrorBody),
    ),
    security(()))]
pub async fn oembed(app: &App, q: OEmbedQuery) -> Result<OEmbed, AppError> {
    let (base, id) = parse_url(&q.url, app.config.public_url.as_deref())
        .ok_or_else(|| AppError::NotFound("not the URL of a video on this service (…/watch/{id})".into()))?;
    let id2 = id.to_string();
    let rec = app.store.run(move |s| s.get(&id2)).await?.ok_or_else(|| AppError::NotFound(format!("no video {id}")))?;
    if !Caller::Anonymous.may_watch(&rec) {
        return Err(AppError::Unauthorized("this video is private".into()));
    }
    debug_assert!(rec.visibility != Visibility::Private);
    let top = rec.renditions.iter().max_by_key(|r| r.height).map(|r| (r.width, r.height));
    let src = top.or(rec.source.as_ref().map(|s| (s.width, s.height)));
    let (width, height) = fit(src, q.maxwidth, q.maxheight);
    let view = super::views::view(app, rec, None, &base);
    let thumb = view.images.as_ref().and_then(|i| i.thumbnail.clone());
    let thumb_size = thumb.as_ref().and(top).map(|(w, h)| im::fit_width(w, h, im::THUMB_WIDTH));
    let title = view.video.title;
    let src = format!("{base}/embed/{id}");
    let html = format!(
        r#"<iframe src="{}" width="{width}" height="{height}" title="{}" frameborder="0" allow="autoplay; fullscreen; picture-in-picture" allowfullscreen></iframe>"#,
        escape(&src),
        escape(&title)
    );
    Ok(OEmbed {
        version: "1.0",
        kind: "video",
        title,
        provider_name: "Cascade",
        provider_url: format!("{base}/"),
        html,
        width,
        height,
        thumbnail_width: thumb_size.map(|s| s.0),
        thumbnail_height: thumb_size.map(|s| s.1),
        thumbnail_url: thumb.filter(|_| thumb_size.is_some()),
    })
}

impl OEmbed {
    /// The response as oEmbed's XML (§2.3.4): the same fields, each an element.
    pub fn xml(&self) -> String {
        let mut x = String::from(r#"<?xml version="1.0" encoding="utf-8" standalone="yes"?><oembed>"#);
        let mut field = |name: &str, value: &str| x.push_str(&format!("<{name}>{}</{name}>", escape(value)));
        field("version", self.version);
        field("type", self.kind);
        field("title", &self.title);
        field("provider_name", self.provider_name);
        field("provider_url", &self.provider_url);
        field("html", &self.html);
        field("width", &self.width.to_string());
        field("height", &self.height.to_string());
        if let (Some(u), Some(w), Some(h)) = (&self.thumbnail_url, self.thumbnail_width, self.thumbnail_height) {
            field("thumbnail_url", u);
            field("thumbnail_width", &w.to_string());
            field("thumbnail_height", &h.to_string());
        }
        x.push_str("</oembed>");
        x
    }
}

/// Text for an HTML attribute or element (XML's escapes too).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The watch page with its oEmbed discovery link, when `CASCADE_PUBLIC_URL` says where the service
/// is (a link must be absolute, and the request's `Host` is not trusted to say it).
pub fn with_discovery(page: &str, public_url: Option<&str>, id: &str) -> Option<String> {
    let base = public_url?;
    if !plausible_id(id) {
        return None;
    }
    let watch: String = percent_encoding::utf8_percent_encode(&format!("{base}/watch/{id}"), percent_encoding::NON_ALPHANUMERIC).collect();
    let link = format!(r#"<link rel="alternate" type="application/json+oembed" href="{}">"#, escape(&format!("{base}/oembed?url={watch}")));
    let at = page.find("</head>")?;
    Some(format!("{}{link}\n{}", &page[..at], &page[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_this_service_name_a_video() {
        let p = Some("https://video.example");
        assert_eq!(parse_url("https://video.example/watch/abc_1-2", p), Some(("https://video.example".into(), "abc_1-2")));
        assert_eq!(parse_url("https://video.example/embed/abc?t=3#x", p), Some(("https://video.example".into(), "abc")));
        assert_eq!(parse_url("https://evil.example/watch/abc", p), None);
        assert_eq!(parse_url("https://video.example/watch/a/../b", p), None);
        assert_eq!(parse_url("https://video.example/api/videos/abc", p), None);
        assert_eq!(parse_url("http://127.0.0.1:8000/watch/abc", None), Some(("http://127.0.0.1:8000".into(), "abc")));
        assert_eq!(parse_url("javascript:alert(1)//watch/abc", None), None);
        assert_eq!(parse_url("/watch/abc", None), None);
    }

    #[test]
    fn the_size_keeps_the_aspect_within_the_bounds() {
        assert_eq!(fit(Some((1920, 1080)), None, None), (640, 360));
        assert_eq!(fit(Some((1920, 1080)), Some(320), None), (320, 180));
        assert_eq!(fit(Some((1920, 1080)), None, Some(180)), (320, 180));
        assert_eq!(fit(Some((720, 1280)), None, Some(500)), (281, 500));
        let (w, h) = fit(None, Some(0), Some(0));
        assert!(w >= 1 && h >= 1);
    }

    #[test]
    fn the_discovery_link_is_escaped_and_absolute() {
        let page = "<html><head><title>x</title></head><body></body></html>";
        let out = with_discovery(page, Some("https://v.example"), "abc").unwrap();
        assert!(
            out.contains(r#"href="https://v.example/oembed?url=https%3A%2F%2Fv%2Eexample%2Fwatch%2Fabc"></head>"#)
                || out.contains("\n</head>"),
            "{out}"
        );
        assert!(out.contains("application/json+oembed"));
        assert_eq!(with_discovery(page, None, "abc"), None);
        assert_eq!(with_discovery(page, Some("https://v.example"), "a\"><script>"), None);
    }
}
