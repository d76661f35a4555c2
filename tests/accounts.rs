//! Accounts, ownership and visibility through the API: who may do what with whose video, as a
//! table; logins, logout, rate limits and CSRF; and the admin commands while the server runs.

mod common;

use std::time::Duration;

use common::*;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, COOKIE, ORIGIN};
use serde_json::{json, Value};

/// How a request authenticates.
#[derive(Clone)]
struct As {
    name: &'static str,
    headers: HeaderMap,
}

fn with(name: &'static str, pairs: &[(reqwest::header::HeaderName, String)]) -> As {
    let mut headers = HeaderMap::new();
    for (k, v) in pairs {
        headers.insert(k.clone(), HeaderValue::from_str(v).unwrap());
    }
    As { name, headers }
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Logs in; returns the `cascade_session=…` pair of the cookie.
async fn login(server: &Server, user: &str, password: &str) -> String {
    let r = plain_client()
        .post(server.url("/api/session"))
        .header(ORIGIN, server.url(""))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax"), "{set}");
    set.split(';').next().unwrap().to_string()
}

async fn upload_as(server: &Server, who: &As, path: &std::path::Path, visibility: &str) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .text("title", format!("{visibility} video"))
        .text("visibility", visibility.to_string())
        .part("file", reqwest::multipart::Part::bytes(std::fs::read(path).unwrap()).file_name("clip.mp4"));
    let r = plain_client().post(server.url("/api/videos")).headers(who.headers.clone()).multipart(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn status_of(server: &Server, who: &As, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
    let mut req = plain_client().request(method, server.url(path)).headers(who.headers.clone());
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn listed(server: &Server, who: &As) -> Vec<String> {
    let v: Value = plain_client().get(server.url("/api/videos")).headers(who.headers.clone()).send().await.unwrap().json().await.unwrap();
    v["videos"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_do_what_with_whose_video() {
    // Every row opens event streams from 127.0.0.1: no per-address cap in the way here.
    let server = Server::start(&[("CASCADE_MAX_SUBSCRIBERS_PER_IP", "1000")]).await;
    let dir = server.data_dir.clone();
    // Made while the server runs: through its admin socket.
    let owner_pw = "owner password 1";
    let owner_token = user_with_token(&dir, "owner", owner_pw, false, "upload,manage");
    let owner_upload_only = user_with_token(&dir, "owner", owner_pw, false, "upload");
    let other_token = user_with_token(&dir, "other", "other password 1", false, "upload,manage");
    let owner_cookie = login(&server, "owner", owner_pw).await;
    let stale_cookie = login(&server, "owner", owner_pw).await;
    let r = plain_client()
        .delete(server.url("/api/session"))
        .header(COOKIE, &stale_cookie)
        .header(ORIGIN, server.url(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    let bearer = |t: &str| format!("Bearer {t}");
    let anonymous = with("anonymous", &[]);
    let owner = with("owner token", &[(AUTHORIZATION, bearer(&owner_token))]);
    let owner_no_manage = with("owner token without manage", &[(AUTHORIZATION, bearer(&owner_upload_only))]);
    let other = with("other uploader", &[(AUTHORIZATION, bearer(&other_token))]);
    let admin = with("admin", &[(AUTHORIZATION, bearer(&server.token))]);
    let session = with("owner session", &[(COOKIE, owner_cookie.clone()), (ORIGIN, server.url(""))]);
    let cross_site = with("owner session, cross-site", &[(COOKIE, owner_cookie.clone()), (ORIGIN, "https://evil.example".into())]);
    let logged_out = with("logged-out session", &[(COOKIE, stale_cookie.clone()), (ORIGIN, server.url(""))]);
    let bogus = with("invalid token", &[(AUTHORIZATION, "Bearer cas_not_a_token".into())]);

    let clip = clip("access.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let mut ids = std::collections::HashMap::new();
    for vis in ["public", "unlisted", "private"] {
        let (status, v) = upload_as(&server, &owner, &clip, vis).await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["visibility"], vis, "{v}");
        ids.insert(vis, v["id"].as_str().unwrap().to_string());
    }

    // caller → expected status for GET, PATCH and DELETE of (public, unlisted, private), upload, /api/me.
    type Row<'a> = (&'a As, [u16; 3], [u16; 3], u16, u16);
    let table: Vec<Row> = vec![
        (&anonymous, [200, 200, 404], [401, 401, 404], 401, 401),
        (&other, [200, 200, 404], [403, 403, 404], 201, 200),
        (&owner, [200, 200, 200], [200, 200, 200], 201, 200),
        (&owner_no_manage, [200, 200, 200], [403, 403, 403], 201, 200),
        (&admin, [200, 200, 200], [200, 200, 200], 201, 200),
        (&session, [200, 200, 200], [200, 200, 200], 201, 200),
        (&cross_site, [200, 200, 200], [403, 403, 403], 403, 200),
        (&logged_out, [200, 200, 404], [401, 401, 404], 401, 401),
        (&bogus, [401, 401, 401], [401, 401, 401], 401, 401),
    ];
    let tiny = bytes_file("not_uploaded.mp4", b"");
    for (who, get, patch, upload, me) in &table {
        for (i, vis) in ["public", "unlisted", "private"].iter().enumerate() {
            let id = &ids[vis];
            let path = format!("/api/videos/{id}");
            assert_eq!(status_of(&server, who, reqwest::Method::GET, &path, None).await, get[i], "{}: GET {vis}", who.name);
            let events = status_of(&server, who, reqwest::Method::GET, &format!("{path}/events"), None).await;
            assert_eq!(events, get[i], "{}: events of {vis}", who.name);
            let edit = json!({"title": format!("{vis} video")});
            assert_eq!(status_of(&server, who, reqwest::Method::PATCH, &path, Some(edit)).await, patch[i], "{}: PATCH {vis}", who.name);
            // DELETE is refused like PATCH; the allowed ones are tried at the end.
            if patch[i] != 200 {
                assert_eq!(status_of(&server, who, reqwest::Method::DELETE, &path, None).await, patch[i], "{}: DELETE {vis}", who.name);
            }
        }
        // An upload: the refused ones are refused before the body is looked at (an empty file
        // would be a 415 for the allowed ones, so those send a real clip).
        let file = if *upload == 201 { clip.as_path() } else { tiny.as_path() };
        let (status, body) = upload_as(&server, who, file, "private").await;
        assert_eq!(status, *upload, "{}: upload: {body}", who.name);
        assert_eq!(status_of(&server, who, reqwest::Method::GET, "/api/me", None).await, *me, "{}: /api/me", who.name);
    }

    // Lists: public videos and one's own; admins see all; nobody sees a private video of another.
    let anon_list = listed(&server, &anonymous).await;
    assert_eq!(anon_list, vec![ids["public"].clone()], "{anon_list:?}");
    let other_list = listed(&server, &other).await;
    assert!(
        other_list.contains(&ids["public"]) && !other_list.contains(&ids["unlisted"]) && !other_list.contains(&ids["private"]),
        "{other_list:?}"
    );
    assert_eq!(other_list.len(), 2, "the public video and other's own upload: {other_list:?}");
    for who in [&owner, &admin] {
        let l = listed(&server, who).await;
        assert!(ids.values().all(|id| l.contains(id)), "{}: {l:?}", who.name);
    }
    // Playback tokens only for what the caller may watch: the private one's is never shown to others.
    let v: Value = plain_client().get(server.url(&format!("/api/videos/{}", ids["private"]))).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["code"], "not_found", "{v}");

    // Making a video private hides it from the public at once.
    let r = status_of(
        &server,
        &session,
        reqwest::Method::PATCH,
        &format!("/api/videos/{}", ids["public"]),
        Some(json!({"visibility": "private"})),
    )
    .await;
    assert_eq!(r, 200);
    assert_eq!(status_of(&server, &anonymous, reqwest::Method::GET, &format!("/api/videos/{}", ids["public"]), None).await, 404);
    assert!(listed(&server, &anonymous).await.is_empty());

    // Pagination: a page at a time, each video once.
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let url = match &cursor {
            Some(c) => server.url(&format!("/api/videos?limit=2&cursor={c}")),
            None => server.url("/api/videos?limit=2"),
        };
        let page: Value = server.client.get(url).send().await.unwrap().json().await.unwrap();
        let videos = page["videos"].as_array().unwrap();
        assert!(videos.len() <= 2);
        seen.extend(videos.iter().map(|v| v["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let all: Value = server.client.get(server.url("/api/videos?limit=200")).send().await.unwrap().json().await.unwrap();
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (all["videos"].as_array().unwrap().len(), seen.len()), "{seen:?}");

    // Deleting: the owner's session from this site may; the video is gone for everyone.
    let path = format!("/api/videos/{}", ids["unlisted"]);
    assert_eq!(status_of(&server, &session, reqwest::Method::DELETE, &path, None).await, 204);
    assert_eq!(status_of(&server, &admin, reqwest::Method::GET, &path, None).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited_and_never_tell_who_exists() {
    let server = Server::start(&[]).await;
    let attempt = |user: &'static str, password: &'static str| {
        let server = &server;
        async move {
            let r = plain_client()
                .post(server.url("/api/session"))
                .json(&json!({"username": user, "password": password}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s1, wrong_password) = attempt(ADMIN, "not the password").await;
    let (s2, no_such_user) = attempt("nobody", "not the password").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong_password, no_such_user, "the answer does not say whether the user exists");
    for _ in 0..4 {
        attempt(ADMIN, "still wrong").await;
    }
    let (status, body) = attempt(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("too_many_attempts")), "even the right password waits: {body}");
    // Another account from the same address is not locked by that.
    user_with_token(&server.data_dir, "second", "second password", false, "upload");
    let cookie = login(&server, "second", "second password").await;
    let me: Value = plain_client().get(server.url("/api/me")).header(COOKIE, &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!((me["username"].as_str(), me["role"].as_str()), (Some("second"), Some("uploader")), "{me}");
    // Logout ends the session on the server, not only in the browser.
    let r = plain_client().delete(server.url("/api/session")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(plain_client().get(server.url("/api/me")).header(COOKIE, &cookie).send().await.unwrap().status().as_u16(), 401);
    // Passwords are stored as Argon2id hashes and tokens as digests: neither appears in the database.
    let db = files_under(&server.data_dir.join("db")).into_iter().map(|f| std::fs::read(f).unwrap()).collect::<Vec<_>>().concat();
    let find = |needle: &str| db.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!find("second password") && !find(ADMIN_PASSWORD) && !find(&server.token), "a secret is stored in clear");
    assert!(find("$argon2id$"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_with_the_session_cookie_is_refused() {
    let server = Server::start(&[]).await;
    let cookie = login(&server, ADMIN, ADMIN_PASSWORD).await;
    let clip = clip("csrf.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let form =
        || reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(std::fs::read(&clip).unwrap()).file_name("c.mp4"));
    // What a form on another site makes the browser send: the cookie, and that site's origin.
    for (origin, site) in [(Some("https://evil.example"), Some("cross-site")), (None, None)] {
        let mut req = plain_client().post(server.url("/api/videos")).header(COOKIE, &cookie).multipart(form());
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "origin {origin:?}: {body}");
    }
    let list: Value = server.client.get(server.url("/api/videos")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["videos"].as_array().unwrap().len(), 0, "{list}");
    // The same request from the site itself passes.
    let r = plain_client()
        .post(server.url("/api/videos"))
        .header(COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}
