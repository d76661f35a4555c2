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

    // Who before what: a body that is not a form is a 401 for nobody-in-particular, a 415 for a user.
    for (who, want) in [(&anonymous, 401), (&owner, 415)] {
        let r = plain_client().post(server.url("/api/videos")).headers(who.headers.clone()).body("not a form").send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{}: a text body", who.name);
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
    let db = server.stored_bytes().await;
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

/// A JSON request as a browser page of the site sends it (same-origin, with the session cookie).
async fn send(server: &Server, method: reqwest::Method, path: &str, cookie: Option<&str>, body: Option<Value>) -> (u16, Value, HeaderMap) {
    let mut req = plain_client().request(method, server.url(path)).header(ORIGIN, server.url(""));
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

/// The `cascade_session=…` pair a response sets.
fn session_of(headers: &HeaderMap) -> String {
    headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string()
}

/// A request with a bearer token.
async fn with_token(server: &Server, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client_with_token(token).request(method, server.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_setup_needs_the_code_from_the_log_and_works_once() {
    let server = Server::start_without_users(&[]).await;
    let config: Value = plain_client().get(server.url("/api/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["setup"], true, "{config}");
    let mut code = String::new();
    assert!(
        wait_until(Duration::from_secs(30), async || {
            code =
                server.log().split("setup_code=").nth(1).map(|r| r.split_whitespace().next().unwrap_or("").to_string()).unwrap_or_default();
            !code.is_empty()
        })
        .await,
        "no setup code in the log: {}",
        server.log()
    );
    let (status, page) = server.get_text(&server.url("/setup")).await;
    assert!(status == 200 && page.contains("setup.js"), "{status}");
    let form = |code: &str| json!({"code": code, "username": "root", "password": "first admin password"});
    let (status, body, _) = send(&server, reqwest::Method::POST, "/api/setup", None, Some(form("not the code"))).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let r = plain_client().post(server.url("/api/setup")).header(ORIGIN, "https://evil.example").json(&form(&code)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "another site cannot run the setup");
    let (status, body, _) = send(&server, reqwest::Method::POST, "/api/setup", None, Some(json!({"code": code}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "malformed: {body}");

    let (status, body, headers) = send(&server, reqwest::Method::POST, "/api/setup", None, Some(form(&code))).await;
    assert_eq!(status, 204, "{body}");
    let cookie = session_of(&headers);
    let (status, me, _) = send(&server, reqwest::Method::GET, "/api/me", Some(&cookie), None).await;
    assert_eq!((status, me["username"].as_str(), me["role"].as_str()), (200, Some("root"), Some("admin")), "{me}");
    // Once someone exists, the code is worthless and the setup is over.
    let again = json!({"code": code, "username": "second", "password": "second admin password"});
    let (status, body, _) = send(&server, reqwest::Method::POST, "/api/setup", None, Some(again)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let config: Value = plain_client().get(server.url("/api/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["setup"], false, "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_follows_the_mode_and_invitations_are_single_use() {
    let account = |name: &str| json!({"username": name, "password": "a good long password"});
    // closed (the default): nobody signs up, and an invitation could not be used.
    let closed = Server::start(&[]).await;
    let (status, body, _) = send(&closed, reqwest::Method::POST, "/api/signup", None, Some(account("walker"))).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, _) = with_token(&closed, &closed.token, reqwest::Method::POST, "/api/admin/invites", Some(json!({}))).await;
    assert_eq!(status, 409);
    drop(closed);

    let server = Server::start(&[("CASCADE_SIGNUP", "invite")]).await;
    let (status, _, _) = send(&server, reqwest::Method::POST, "/api/signup", None, Some(account("walker"))).await;
    assert_eq!(status, 403, "an invitation is needed");
    let invite = |server: &Server| {
        let token = server.token.clone();
        let url = server.url("/api/admin/invites");
        async move {
            let r = client_with_token(&token).post(url).json(&json!({"expires_days": 1})).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 201);
            let v: Value = r.json().await.unwrap();
            assert!(v["url"].as_str().unwrap().ends_with(&format!("/signup?invite={}", v["code"].as_str().unwrap())), "{v}");
            v["code"].as_str().unwrap().to_string()
        }
    };
    let code = invite(&server).await;
    let mut form = account("guest");
    form["invite"] = json!(code);
    let (status, body, headers) = send(&server, reqwest::Method::POST, "/api/signup", None, Some(form.clone())).await;
    assert_eq!(status, 204, "{body}");
    let (_, me, _) = send(&server, reqwest::Method::GET, "/api/me", Some(&session_of(&headers)), None).await;
    assert_eq!((me["username"].as_str(), me["role"].as_str()), (Some("guest"), Some("uploader")), "{me}");
    form["username"] = json!("guest2");
    let (status, _, _) = send(&server, reqwest::Method::POST, "/api/signup", None, Some(form)).await;
    assert_eq!(status, 403, "an invitation works once");
    // A taken name does not use up the invitation.
    let code = invite(&server).await;
    let mut taken = account("Guest");
    taken["invite"] = json!(code);
    let (status, body, _) = send(&server, reqwest::Method::POST, "/api/signup", None, Some(taken.clone())).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    taken["username"] = json!("guest3");
    assert_eq!(send(&server, reqwest::Method::POST, "/api/signup", None, Some(taken)).await.0, 204);
    // Only admins invite.
    let uploader = user_with_token(&server.data_dir, "plain", "plain password", false, "upload,manage");
    assert_eq!(with_token(&server, &uploader, reqwest::Method::POST, "/api/admin/invites", Some(json!({}))).await.0, 403);
    drop(server);

    let open = Server::start(&[("CASCADE_SIGNUP", "open")]).await;
    assert_eq!(send(&open, reqwest::Method::POST, "/api/signup", None, Some(account("anyone"))).await.0, 204);
    assert_eq!(send(&open, reqwest::Method::POST, "/api/signup", None, Some(account("ANYONE"))).await.0, 409);
    let (status, body, _) =
        send(&open, reqwest::Method::POST, "/api/signup", None, Some(json!({"username": "x y", "password": "a good long password"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_manage_their_tokens_and_password_from_a_session() {
    let server = Server::start(&[]).await;
    let password = "first password!";
    let script_token = user_with_token(&server.data_dir, "carol", password, false, "upload,manage");
    let cookie = login(&server, "carol", password).await;
    let other_cookie = login(&server, "carol", password).await;

    let (status, created, _) =
        send(&server, reqwest::Method::POST, "/api/tokens", Some(&cookie), Some(json!({"name": "laptop", "scopes": ["upload"]}))).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(with_token(&server, &secret, reqwest::Method::GET, "/api/me", None).await.0, 200);
    let (status, list, _) = send(&server, reqwest::Method::GET, "/api/tokens", Some(&cookie), None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["tokens"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"laptop") && names.contains(&"cli"), "{list}");
    assert!(!list.to_string().contains(&secret), "a token's secret is shown once: {list}");
    // A token cannot manage tokens (a leaked one cannot mint more), nor can another user revoke it.
    assert_eq!(with_token(&server, &script_token, reqwest::Method::GET, "/api/tokens", None).await.0, 403);
    let new = json!({"name": "more", "scopes": ["manage"]});
    assert_eq!(with_token(&server, &script_token, reqwest::Method::POST, "/api/tokens", Some(new)).await.0, 403);
    let intruder = login(&server, ADMIN, ADMIN_PASSWORD).await;
    let path = format!("/api/tokens/{id}");
    assert_eq!(send(&server, reqwest::Method::DELETE, &path, Some(&intruder), None).await.0, 404, "not the admin's token");
    let (status, body, _) =
        send(&server, reqwest::Method::POST, "/api/tokens", Some(&cookie), Some(json!({"name": "x", "scopes": []}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let r = plain_client().delete(server.url(&path)).header(COOKIE, &cookie).header(ORIGIN, "https://evil.example").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "cross-site revocation");
    // Used just before (so the server knows the caller), refused just after.
    assert_eq!(with_token(&server, &secret, reqwest::Method::GET, "/api/me", None).await.0, 200);
    assert_eq!(send(&server, reqwest::Method::DELETE, &path, Some(&cookie), None).await.0, 204);
    assert_eq!(with_token(&server, &secret, reqwest::Method::GET, "/api/me", None).await.0, 401, "revoked");

    // Changing the password needs the current one, and ends every other session.
    let change = |current: &str| json!({"current_password": current, "new_password": "second password!"});
    let (status, _, _) = send(&server, reqwest::Method::PUT, "/api/me/password", Some(&cookie), Some(change("wrong password"))).await;
    assert_eq!(status, 403);
    let (status, body, _) =
        send(&server, reqwest::Method::PUT, "/api/me/password", Some(&cookie), Some(json!({"current_password": password}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "malformed: {body}");
    for old in [&cookie, &other_cookie] {
        assert_eq!(send(&server, reqwest::Method::GET, "/api/me", Some(old), None).await.0, 200);
    }
    let (status, _, headers) = send(&server, reqwest::Method::PUT, "/api/me/password", Some(&cookie), Some(change(password))).await;
    assert_eq!(status, 204);
    let fresh = session_of(&headers);
    assert_eq!(send(&server, reqwest::Method::GET, "/api/me", Some(&fresh), None).await.0, 200);
    for old in [&cookie, &other_cookie] {
        assert_eq!(send(&server, reqwest::Method::GET, "/api/me", Some(old), None).await.0, 401, "a session from before the change");
    }
    login(&server, "carol", "second password!").await;
    let r = plain_client().post(server.url("/api/session")).json(&json!({"username": "carol", "password": password})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "the old password");
    assert_eq!(with_token(&server, &script_token, reqwest::Method::GET, "/api/me", None).await.0, 200, "tokens are not sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_quotas_hold() {
    let server = Server::start(&[("CASCADE_MAX_UPLOADS_PER_USER", "1")]).await;
    let admin = server.token.clone();
    let (status, created) =
        with_token(&server, &admin, reqwest::Method::POST, "/api/admin/users", Some(json!({"username": "dave", "role": "uploader"}))).await;
    assert_eq!(status, 201, "{created}");
    let dave_id = created["user"]["id"].as_str().unwrap().to_string();
    let generated = created["password"].as_str().unwrap().to_string();
    let dave_cookie = login(&server, "dave", &generated).await;
    let dave = user_with_token(&server.data_dir, "dave", "not used here", false, "upload,manage");
    assert_eq!(with_token(&server, &dave, reqwest::Method::GET, "/api/admin/users", None).await.0, 403, "not an admin");
    assert_eq!(status_of(&server, &with("anonymous", &[]), reqwest::Method::GET, "/api/admin/users", None).await, 401);
    let again = json!({"username": "DAVE"});
    assert_eq!(with_token(&server, &admin, reqwest::Method::POST, "/api/admin/users", Some(again)).await.0, 409);
    let user_path = format!("/api/admin/users/{dave_id}");
    let dave_as = with("dave", &[(AUTHORIZATION, format!("Bearer {dave}"))]);

    // Bytes: an upload larger than what is left is refused (413) and leaves nothing behind.
    let small = clip("quota.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let len = std::fs::metadata(&small).unwrap().len();
    let set = |q: Value| with_token(&server, &admin, reqwest::Method::PATCH, &user_path, Some(q));
    assert_eq!(set(json!({"quota_bytes": len / 2})).await.0, 200);
    let (status, body) = upload_as(&server, &dave_as, &small, "public").await;
    assert_eq!((status, body["code"].as_str()), (413, Some("over_quota")), "{body}");
    assert!(files_under(&server.data_dir.join("uploads")).is_empty(), "a refused upload leaves no file");
    assert_eq!(set(json!({"quota_bytes": len})).await.0, 200);
    let (status, first) = upload_as(&server, &dave_as, &small, "public").await;
    assert_eq!(status, 201, "{first}");
    let (status, body) = upload_as(&server, &dave_as, &small, "public").await;
    assert_eq!((status, body["code"].as_str()), (507, Some("quota_exceeded")), "{body}");
    // Videos: with the byte quota back to the default (none), the count holds.
    let (status, changed) = set(json!({"quota_bytes": null, "quota_videos": 1})).await;
    assert_eq!(
        (status, changed["storage"]["quota_bytes"].is_null(), changed["storage"]["videos"].as_u64()),
        (200, true, Some(1)),
        "{changed}"
    );
    let (status, body) = upload_as(&server, &dave_as, &small, "public").await;
    assert_eq!((status, body["code"].as_str()), (507, Some("quota_exceeded")), "{body}");
    let first_path = format!("/api/videos/{}", first["id"].as_str().unwrap());
    assert_eq!(with_token(&server, &dave, reqwest::Method::DELETE, &first_path, None).await.0, 204);
    let (status, second) = upload_as(&server, &dave_as, &small, "public").await;
    assert_eq!(status, 201, "deleting frees the quota: {second}");
    let (_, users) = with_token(&server, &admin, reqwest::Method::GET, "/api/admin/users", None).await;
    let row = users["users"].as_array().unwrap().iter().find(|u| u["username"] == "dave").unwrap().clone();
    assert_eq!((row["storage"]["bytes"].as_u64(), row["storage"]["videos"].as_u64()), (Some(len), Some(1)), "{row}");
    assert_eq!(set(json!({"quota_videos": null})).await.0, 200);

    // One upload at a time per user here: a second one of dave's waits (429), the admin's does not.
    let to = Endpoint { port: server.port, token: dave.clone() };
    let held = clip("held.mp4", "testsrc2=size=160x120:rate=10", None, 2.0, &["-movflags", "+faststart"]).await;
    let slow = tokio::spawn(async move { throttled_upload(&to, &held, "held upload", 40, Duration::from_millis(250), None).await });
    let arriving = wait_until(Duration::from_secs(30), async || {
        let (_, me) = with_token(&server, &dave, reqwest::Method::GET, "/api/me", None).await;
        me["storage"]["uploads_arriving"] == 1
    })
    .await;
    assert!(arriving, "the slow upload never started: {:?}", slow.await.unwrap());
    let (status, body) = upload_as(&server, &dave_as, &small, "public").await;
    assert_eq!((status, body["code"].as_str()), (429, Some("too_many_uploads")), "{body}");
    let (status, body) = server.upload(&small, "admin meanwhile").await;
    assert_eq!(status, 201, "{body}");
    let (status, text) = slow.await.unwrap();
    assert_eq!(status, 201, "{text}");

    // Disabled: tokens and sessions stop working at once; enabled again, they work.
    assert_eq!(with_token(&server, &dave, reqwest::Method::GET, "/api/me", None).await.0, 200);
    assert_eq!(send(&server, reqwest::Method::GET, "/api/me", Some(&dave_cookie), None).await.0, 200);
    assert_eq!(set(json!({"disabled": true})).await.0, 200);
    assert_eq!(with_token(&server, &dave, reqwest::Method::GET, "/api/me", None).await.0, 401);
    assert_eq!(send(&server, reqwest::Method::GET, "/api/me", Some(&dave_cookie), None).await.0, 401);
    assert_eq!(set(json!({"disabled": false, "role": "admin"})).await.0, 200);
    assert_eq!(with_token(&server, &dave, reqwest::Method::GET, "/api/admin/users", None).await.0, 200, "promoted");
    // The last active admin stays one: demote dave again, then the admin cannot demote itself.
    assert_eq!(set(json!({"role": "uploader"})).await.0, 200);
    let (_, me) = with_token(&server, &admin, reqwest::Method::GET, "/api/me", None).await;
    let own = format!("/api/admin/users/{}", me["id"].as_str().unwrap());
    let (status, body) = with_token(&server, &admin, reqwest::Method::PATCH, &own, Some(json!({"role": "uploader"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body) = with_token(&server, &admin, reqwest::Method::PATCH, &own, Some(json!({"colour": "red"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_no_session() {
    // Sessions of 18 s: long enough to be used once on a loaded machine, short enough to wait for.
    let server = Server::start(&[("CASCADE_SESSION_TTL_HOURS", "0.005")]).await;
    let owner = user_with_token(&server.data_dir, "erin", "erin's password", false, "upload,manage");
    let owner_as = with("erin", &[(AUTHORIZATION, format!("Bearer {owner}"))]);
    let clip = clip("expiry.mp4", "testsrc2=size=160x120:rate=10", None, 1.0, &[]).await;
    let mut ids = vec![];
    for vis in ["public", "private"] {
        let (status, v) = upload_as(&server, &owner_as, &clip, vis).await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let cookie = login(&server, "erin", "erin's password").await;
    let expired = with("expired session", &[(COOKIE, cookie.clone()), (ORIGIN, server.url(""))]);
    assert!(
        wait_until(Duration::from_secs(90), async || status_of(&server, &expired, reqwest::Method::GET, "/api/me", None).await == 401)
            .await,
        "the session never expired"
    );
    // The same answers as for anonymous callers (the access table's first row).
    let (public, private) = (format!("/api/videos/{}", ids[0]), format!("/api/videos/{}", ids[1]));
    let edit = || Some(json!({"title": "changed"}));
    assert_eq!(status_of(&server, &expired, reqwest::Method::GET, &public, None).await, 200);
    assert_eq!(status_of(&server, &expired, reqwest::Method::GET, &private, None).await, 404);
    assert_eq!(status_of(&server, &expired, reqwest::Method::PATCH, &public, edit()).await, 401);
    assert_eq!(status_of(&server, &expired, reqwest::Method::PATCH, &private, edit()).await, 404);
    assert_eq!(status_of(&server, &expired, reqwest::Method::DELETE, &public, None).await, 401);
    assert_eq!(status_of(&server, &expired, reqwest::Method::GET, "/api/tokens", None).await, 401);
    let (status, body) = upload_as(&server, &expired, &clip, "public").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    assert_eq!(listed(&server, &expired).await, vec![ids[0].clone()]);
}
