//! Headers every response carries (content security policy, no MIME sniffing, no referrer,
//! framing rules) and the redaction of playback tokens in request logs.

use warp::http::header::{HeaderName, HeaderValue};
use warp::Reply;

use crate::config::Config;

/// The security headers of every response, built once from the settings.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The content security policy: scripts, styles and everything else from this origin only (no
/// inline script or style); players may use `blob:` media and workers (MSE); `frame_ancestors`
/// comes from the settings; `public_origin` is the origin of `CASCADE_PUBLIC_URL`, where the
/// playback URLs point.
pub fn content_security_policy(frame_ancestors: &str, public_origin: Option<&str>) -> String {
    let extra = public_origin.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{extra}; \
         media-src 'self' blob:{extra}; worker-src 'self' blob:; connect-src 'self'{extra}; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors {frame_ancestors}"
    )
}

/// `scheme://host[:port]` of a URL.
pub(crate) fn origin(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..].find('/').map_or(url.len(), |i| after_scheme + i);
    Some(&url[..end])
}

impl SecurityHeaders {
    /// The headers for these settings (validated by `config`, so they are valid header values).
    pub fn new(config: &Config) -> SecurityHeaders {
        let csp = content_security_policy(&config.frame_ancestors, config.public_url.as_deref().and_then(origin));
        let mut headers = vec![
            (HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff")),
            (HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer")),
        ];
        if let Ok(v) = HeaderValue::from_str(&csp) {
            headers.push((HeaderName::from_static("content-security-policy"), v));
        }
        // Older browsers know only X-Frame-Options; it can say "same origin" and "nowhere".
        match config.frame_ancestors.as_str() {
            "'self'" => headers.push((HeaderName::from_static("x-frame-options"), HeaderValue::from_static("SAMEORIGIN"))),
            "'none'" => headers.push((HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"))),
            _ => {}
        }
        SecurityHeaders { headers }
    }

    /// The response with the headers added (a handler's own value wins; a handler's own content
    /// security policy also says who may frame it, so `X-Frame-Options` is left out then).
    pub fn apply(&self, reply: impl Reply) -> warp::reply::Response {
        let mut r = reply.into_response();
        let own_policy = r.headers().contains_key("content-security-policy");
        for (name, value) in &self.headers {
            if own_policy && name == "x-frame-options" {
                continue;
            }
            if !r.headers().contains_key(name) {
                r.headers_mut().insert(name.clone(), value.clone());
            }
        }
        r
    }
}

/// A request path as logged: the playback token in `/play/{token}/…` replaced, so logs never
/// hold a credential.
pub fn redact(path: &str) -> String {
    match path.strip_prefix("/play/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, tail)) => format!("/play/[token]/{tail}"),
            None => "/play/[token]".to_string(),
        },
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_reach_the_log() {
        assert_eq!(redact("/play/abc.def/hls/720p/index.m3u8"), "/play/[token]/hls/720p/index.m3u8");
        assert_eq!(redact("/play/abc.def"), "/play/[token]");
        assert_eq!(redact("/api/videos"), "/api/videos");
    }

    #[test]
    fn the_policy_allows_no_inline_script_and_the_configured_framing() {
        let csp = content_security_policy("'self' https://blog.example", Some("https://video.example"));
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.ends_with("frame-ancestors 'self' https://blog.example"), "{csp}");
        assert!(csp.contains("connect-src 'self' https://video.example;"), "{csp}");
        assert_eq!(origin("https://video.example:8443/base/path"), Some("https://video.example:8443"));
        assert_eq!(origin("http://h"), Some("http://h"));
    }
}
