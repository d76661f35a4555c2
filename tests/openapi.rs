//! The API description (#22) against the routes: every route the source defines is described,
//! every described operation is answered by a route, and no method the description lacks is
//! answered. The description's own validity and the answers' conformance are schemathesis's
//! (`tests/api/run.sh`).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::Value;

/// Routes whose path ends in a tail (any number of segments), which a `warp::path!` cannot say:
/// the prefix in the source, and the described paths that stand for it.
const TAIL_ROUTES: &[(&str, &[&str])] = &[("/play", &["/play/{token}/{path}"]), ("/api/uploads", &["/api/uploads", "/api/uploads/{id}"])];

/// Every `warp::path!(…)` of `src/http` as a template (`/api/videos/{}`), every `warp::path("x")`
/// that starts a route, and the root (`warp::path::end()` alone).
fn source_routes() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut templates = BTreeSet::new();
    let mut prefixes = BTreeSet::new();
    let mut files = files_under(&repo().join("src/http"));
    files.retain(|f| f.extension().is_some_and(|e| e == "rs"));
    assert!(files.len() > 5, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Tests are not routes; layout is not meaning.
        let text: String = text.split("#[cfg(test)]").next().unwrap().split_whitespace().collect();
        for part in text.split("warp::path!(").skip(1) {
            let inner = &part[..part.find(')').unwrap()];
            let segments: Vec<String> = inner
                .split('/')
                .map(|s| if let Some(lit) = s.strip_prefix('"') { lit.trim_end_matches('"').to_string() } else { "{}".to_string() })
                .collect();
            templates.insert(format!("/{}", segments.join("/")));
        }
        const START: &str = "warp::path(\"";
        for (i, _) in text.match_indices(START) {
            let after = &text[i + START.len()..];
            let name = &after[..after.find('"').unwrap()];
            // A chain `warp::path("api").and(warp::path("uploads"))` is one prefix.
            let next = after[name.len()..].strip_prefix("\").and(warp::path(\"");
            match next {
                Some(n) => prefixes.insert(format!("/{name}/{}", &n[..n.find('"').unwrap()])),
                None => prefixes.insert(format!("/{name}")),
            };
        }
        if text.contains("=warp::path::end().and(") {
            templates.insert("/".to_string());
        }
    }
    // `warp::path("uploads")` inside the chain above is not a route of its own.
    prefixes.retain(|p| p != "/uploads");
    (templates, prefixes)
}

/// Whether a source template (`{}` for a parameter) can match a described path.
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| a == b || *a == "{}" || b.starts_with('{'))
}

/// A described path with its parameters filled in with values that exist where it matters.
fn concrete(path: &str) -> String {
    path.replace("{file}", if path.starts_with("/assets") { "app.css" } else { "hls.min.js" })
        .replace("{path}", "hls/master.m3u8")
        .replace("{token}", "not-a-token")
        .replace("{id}", "some-id")
}

/// Whether an answer is warp's "no route here" (rather than a handler's, which names what it
/// did not find).
async fn unrouted(r: reqwest::Response) -> bool {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status == 404 && body["message"] == "no such page or resource") || (status == 405 && body["code"] == "method_not_allowed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_has_every_route_and_only_them() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let spec: Value = client.get(server.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1."), "{}", spec["openapi"]);
    let paths = spec["paths"].as_object().unwrap();

    // Source → description: each route the source defines is described.
    let (templates, prefixes) = source_routes();
    assert!(templates.len() > 25 && templates.contains("/api/videos/{}/events"), "{templates:?}");
    for t in &templates {
        assert!(paths.keys().any(|p| matches(t, p)), "the route {t} is not in /api/openapi.json");
    }
    let tails: BTreeSet<String> = TAIL_ROUTES.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(prefixes, tails, "a route with a tail must be listed in TAIL_ROUTES with the paths it stands for");
    // Description → source: each described path is a route of the source.
    for p in paths.keys() {
        let tail = TAIL_ROUTES.iter().any(|(_, described)| described.contains(&p.as_str()));
        assert!(tail || templates.iter().any(|t| matches(t, p)), "{p} is described but no route has it");
    }

    // Methods, by asking the server: a described operation is answered by a route, any other
    // method is "no route". HEAD goes with GET: where GET is described, HEAD gets GET's status.
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS, Method::HEAD];
    let mut probed = 0;
    for (path, ops) in paths {
        let described: BTreeSet<String> = ops.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        let url = server.url(&concrete(path));
        let mut get_status = None;
        for m in &methods {
            let r = client.request(m.clone(), &url).send().await.unwrap();
            let status = r.status().as_u16();
            if *m == Method::GET {
                get_status = Some(status);
            }
            if *m == Method::HEAD && !described.contains("HEAD") {
                // No body to tell a route's 404 from warp's: compare with GET.
                match described.contains("GET") {
                    true => assert_eq!(Some(status), get_status, "HEAD {path} ({url}) is not answered as GET is"),
                    false => assert!(status == 404 || status == 405, "HEAD {path} ({url}) answered {status}, but is not described"),
                }
            } else {
                let expected = described.contains(m.as_str());
                let routed = !unrouted(r).await;
                assert_eq!(routed, expected, "{m} {path} ({url}): answered {status}, described: {described:?}");
            }
            probed += 1;
        }
    }
    assert!(probed >= 7 * 35, "{probed}");
}

#[test]
fn templates_match_described_paths() {
    assert!(matches("/api/videos/{}", "/api/videos/{id}"));
    assert!(matches("/{}", "/admin"));
    assert!(!matches("/api/videos", "/api/videos/{id}"));
    assert!(!matches("/api/videos/{}/events", "/api/videos/{id}"));
}

/// What schemathesis found, kept fixed: a malformed query or header value is the route's own
/// answer (`400`, `401`, `412`), never warp's `405` of another route on the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_and_header_values_are_answered_by_their_route() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let odd = reqwest::header::HeaderValue::from_bytes(b"\x80\xff").unwrap();
    let body = |r: reqwest::Response| async move { (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null)["code"].clone()) };

    let r = client.get(server.url("/api/videos?limit=-1")).send().await.unwrap();
    assert_eq!(body(r).await, (400, Value::from("bad_request")));
    let r = client.get(server.url("/oembed?url=x&maxwidth=wide")).send().await.unwrap();
    assert_eq!(body(r).await, (400, Value::from("bad_request")));
    let r = client.get(server.url("/api/videos")).header("authorization", odd.clone()).send().await.unwrap();
    assert_eq!(body(r).await, (401, Value::from("unauthorized")));
    // A cookie that is not text is no session: anonymous.
    let r = client.get(server.url("/api/videos")).header("cookie", odd.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.head(server.url("/api/uploads/some-id")).header("cookie", odd.clone()).send().await.unwrap();
    assert_eq!(r.status(), 412, "tus's own answer to a request without Tus-Resumable");
    let r = client.patch(server.url("/api/videos/some-id")).header("origin", odd.clone()).body("{}").send().await.unwrap();
    assert_eq!(body(r).await, (404, Value::from("not_found")), "no such video (rather than warp's 405)");
    // A JSON body without Content-Length (chunked, or none) is read, and bounded, like any other.
    let chunked = |v: Vec<u8>| reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(v)]));
    let login = br#"{"username":"nobody","password":"wrong password"}"#.to_vec();
    let r = client.post(server.url("/api/session")).body(chunked(login)).send().await.unwrap();
    assert_eq!(body(r).await, (401, Value::from("unauthorized")));
    let r = client.post(server.url("/api/session")).body(chunked(vec![b' '; 20_000])).send().await.unwrap();
    assert_eq!(body(r).await, (413, Value::from("payload_too_large")));
    let r = client.post(server.url("/api/session")).send().await.unwrap();
    assert_eq!(body(r).await, (400, Value::from("bad_request")), "no body: invalid JSON");
    let r = client.get(server.url("/api/time")).header("origin", odd).send().await.unwrap();
    assert_eq!((r.status().as_u16(), &r.headers()["access-control-allow-origin"]), (200, &"*".parse().unwrap()), "the default: any origin");
}
