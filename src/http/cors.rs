//! Cross-origin reads of playback URLs (manifests, segments, keys, images) and `/api/time`, so
//! that pages on other sites can play Cascade's streams in their own hls.js, dash.js, Shaka or
//! video.js. The playback token in the path is the credential, so no cookie is ever allowed
//! (`Access-Control-Allow-Credentials` is never sent); which origins may read is
//! `CASCADE_CORS_ORIGINS` (default `*`).

use warp::http::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, VARY};
use warp::http::StatusCode;
use warp::Reply;

use crate::config::CorsOrigins;

/// Request headers a player may send (a preflight asks for them by name).
const ALLOW_HEADERS: &str = "Range, If-None-Match, If-Modified-Since, Cache-Control, Pragma";
/// Response headers a player may read besides the CORS-safelisted ones.
const EXPOSE_HEADERS: &str = "Content-Length, Content-Range, Accept-Ranges, Date";

/// The response with the CORS headers for a request from `origin`.
pub fn apply(origins: &CorsOrigins, origin: Option<&str>, reply: impl Reply) -> warp::reply::Response {
    let mut r = reply.into_response();
    add(origins, origin, r.headers_mut());
    r
}

fn add(origins: &CorsOrigins, origin: Option<&str>, headers: &mut warp::http::HeaderMap) {
    if matches!(origins, CorsOrigins::Only(_)) {
        // The answer depends on who asks: caches must keep one per origin.
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
    let allowed = match origins {
        // Every segment GET passes here: no allocation for the default.
        CorsOrigins::Any => HeaderValue::from_static("*"),
        CorsOrigins::Only(_) => match origins.allow(origin).and_then(|o| HeaderValue::from_str(&o).ok()) {
            Some(v) => v,
            None => return,
        },
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    headers.insert("access-control-expose-headers", HeaderValue::from_static(EXPOSE_HEADERS));
}

/// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`): `204` with the
/// methods and headers allowed, or `204` without them for an origin that is not allowed (the
/// browser then refuses the request).
pub fn preflight(origins: &CorsOrigins, origin: Option<&str>) -> warp::reply::Response {
    let mut r = warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response();
    add(origins, origin, r.headers_mut());
    if r.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN) {
        let h = r.headers_mut();
        h.insert("access-control-allow-methods", HeaderValue::from_static("GET, HEAD, OPTIONS"));
        h.insert("access-control-allow-headers", HeaderValue::from_static(ALLOW_HEADERS));
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_origins_may_read() {
        let any = CorsOrigins::Any;
        let r = apply(&any, Some("https://x.example"), warp::reply());
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!r.headers().contains_key(VARY));
        let only = CorsOrigins::Only(vec!["https://blog.example".into()]);
        let r = apply(&only, Some("https://blog.example"), warp::reply());
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "https://blog.example");
        assert_eq!(r.headers()[VARY], "Origin");
        let r = apply(&only, Some("https://evil.example"), warp::reply());
        assert!(!r.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let r = preflight(&only, Some("https://evil.example"));
        assert!(!r.headers().contains_key("access-control-allow-methods"));
        let r = preflight(&only, Some("https://blog.example"));
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.headers()["access-control-allow-headers"].to_str().unwrap().contains("Range"));
        assert!(!r.headers().contains_key("access-control-allow-credentials"));
    }
}
