//! Other sites showing Cascade's videos (#22): the embed player, oEmbed with its discovery link,
//! and CORS on playback URLs, tried from the outside with the headers browsers send.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(300);
const BLOG: &str = "http://blog.example:3000";

async fn upload_with(server: &Server, path: &std::path::Path, title: &str, visibility: &str) -> String {
    let bytes = tokio::fs::read(path).await.unwrap();
    let form = reqwest::multipart::Form::new()
        .text("title", title.to_string())
        .text("visibility", visibility.to_string())
        .part("file", reqwest::multipart::Part::bytes(bytes).file_name("clip.mp4"));
    let r = server.client.post(server.url("/api/videos")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeds_oembed_and_cross_origin_playback() {
    let server = Server::start(&[("CASCADE_CORS_ORIGINS", BLOG), ("CASCADE_EMBED_ORIGINS", &format!("'self' {BLOG}"))]).await;
    let anon = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let src = clip("embed360.mp4", "testsrc2=size=640x360:rate=30", Some("sine=frequency=440:sample_rate=48000"), 4.0, &[]).await;
    let id = upload_with(&server, &src, "Embed <me> & \"you\"", "public").await;
    let private = upload_with(&server, &src, "Private one", "private").await;
    let v = server.wait_final(&id, T).await;
    assert_eq!(v["status"], "ready", "{v}");
    let pv = server.wait_final(&private, T).await;
    assert_eq!(pv["status"], "ready", "{pv}");

    // The embed player may be framed by the configured origins; no other page may.
    let r = anon.get(server.url(&format!("/embed/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.ends_with(&format!("frame-ancestors 'self' {BLOG}")), "{csp}");
    assert!(!r.headers().contains_key("x-frame-options"));
    assert!(r.text().await.unwrap().contains(r#"class="embed""#));
    let r = anon.get(server.url(&format!("/watch/{id}"))).send().await.unwrap();
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().ends_with("frame-ancestors 'self'"));
    let watch_url = server.url(&format!("/watch/{id}"));
    let page = r.text().await.unwrap();
    let discovery = format!(
        r#"<link rel="alternate" type="application/json+oembed" href="{}">"#,
        server.url(&format!("/oembed?url={}", enc(&watch_url)))
    );
    assert!(page.contains(&discovery), "{page}");

    // oEmbed: a video with an iframe of the embed player, sized to the video within the bounds.
    let oembed = |url: &str, extra: &str| anon.get(server.url(&format!("/oembed?url={}{extra}", enc(url)))).send();
    let r = oembed(&watch_url, "").await.unwrap();
    assert_eq!(r.status(), 200);
    let o: Value = r.json().await.unwrap();
    assert_eq!((o["version"].as_str(), o["type"].as_str()), (Some("1.0"), Some("video")), "{o}");
    assert_eq!(o["title"], "Embed <me> & \"you\"");
    assert_eq!((o["width"].as_u64(), o["height"].as_u64()), (Some(640), Some(360)));
    let html = o["html"].as_str().unwrap();
    assert!(html.starts_with(&format!(r#"<iframe src="{}""#, server.url(&format!("/embed/{id}")))), "{html}");
    assert!(html.contains(r#"title="Embed &lt;me&gt; &amp; &quot;you&quot;""#), "{html}");
    let thumb = o["thumbnail_url"].as_str().expect("a thumbnail");
    let r = anon.get(thumb).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, "image/jpeg"));
    assert_eq!(o["thumbnail_width"], 320);
    let o: Value = oembed(&server.url(&format!("/embed/{id}")), "&maxwidth=320&format=json").await.unwrap().json().await.unwrap();
    assert_eq!((o["width"].as_u64(), o["height"].as_u64()), (Some(320), Some(180)), "{o}");
    // The same as XML (oEmbed §2.3.4), every value escaped.
    let r = oembed(&watch_url, "&format=xml").await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, "text/xml; charset=utf-8"));
    let x = r.text().await.unwrap();
    assert!(
        x.starts_with(r#"<?xml version="1.0" encoding="utf-8" standalone="yes"?><oembed><version>1.0</version><type>video</type>"#),
        "{x}"
    );
    assert!(x.contains("<title>Embed &lt;me&gt; &amp; &quot;you&quot;</title>"), "{x}");
    assert!(x.contains("<html>&lt;iframe src=&quot;") && x.contains("<width>640</width><height>360</height>"), "{x}");
    assert!(x.ends_with("</oembed>") && !x.contains("<iframe"), "{x}");
    for (url, extra, status, code) in [
        (server.url(&format!("/watch/{private}")), "", 401, "unauthorized"),
        (watch_url.clone(), "&format=yaml", 400, "bad_request"),
        (watch_url.clone(), "&maxwidth=-1", 400, "bad_request"),
        (format!("https://elsewhere.example/watch/{id}"), "", 404, "not_found"),
        (server.url("/watch/nosuchvideo"), "", 404, "not_found"),
        (server.url(&format!("/api/videos/{id}")), "", 404, "not_found"),
    ] {
        let r = oembed(&url, extra).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{url}{extra}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], code, "{url}{extra}");
    }

    // CORS: the configured origin may read playback URLs (the owner's token opens a private
    // video's), preflights are answered, and errors carry the header too; another origin gets none.
    for video in [&v, &pv] {
        let hls = video["playback"]["hls"].as_str().unwrap();
        let r = anon.get(hls).header("origin", BLOG).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["access-control-allow-origin"], BLOG);
        assert_eq!(r.headers()["vary"], "Origin");
        assert!(r.headers()["access-control-expose-headers"].to_str().unwrap().contains("Content-Range"));
        let r = anon.get(hls).header("origin", "http://evil.example").send().await.unwrap();
        assert!(!r.headers().contains_key("access-control-allow-origin"));
        let r = anon
            .request(reqwest::Method::OPTIONS, hls)
            .header("origin", BLOG)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "range")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["access-control-allow-origin"], BLOG);
        assert!(r.headers()["access-control-allow-methods"].to_str().unwrap().contains("GET"));
        assert!(r.headers()["access-control-allow-headers"].to_str().unwrap().contains("Range"));
        assert!(!r.headers().contains_key("access-control-allow-credentials"));
    }
    let token = v["playback"]["token"].as_str().unwrap();
    let r = anon.get(server.url(&format!("/play/{token}x/hls/master.m3u8"))).header("origin", BLOG).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["access-control-allow-origin"], BLOG);
    let r = anon.get(server.url("/api/time")).header("origin", BLOG).send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], BLOG);
    // OPTIONS elsewhere is not a preflight of ours, and other routes still answer 404.
    let r = anon.request(reqwest::Method::OPTIONS, server.url("/api/videos")).header("origin", BLOG).send().await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    assert_eq!(anon.get(server.url("/no/such/page")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_any_origin_may_read_playback_urls() {
    let server = Server::start(&[]).await;
    let anon = reqwest::Client::new();
    let r = anon.get(server.url("/api/time")).header("origin", "https://anywhere.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("vary"));
    let r = anon.get(server.url("/embed/whatever")).send().await.unwrap();
    assert!(r.headers()["content-security-policy"].to_str().unwrap().ends_with("frame-ancestors *"));
}
