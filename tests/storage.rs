//! Media in S3-compatible storage, one process: `cascade check` against the tests' S3 server, and
//! playback through presigned redirects. (The multi-process scenario is `tests/scale_s3.rs`.)
//! These tests use the S3 server whatever `TEST_STORAGE` says.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Runs `cascade check` with the tests' S3 server and `env` on top; (succeeded, stdout).
async fn check(data_dir: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
            .arg("check")
            .current_dir(repo())
            .env_remove("CASCADE_DATABASE_URL")
            .env("CASCADE_DATA_DIR", data_dir)
            .envs(s3().env())
            .envs(env.iter().copied())
            .output(),
    )
    .await
    .expect("cascade check answers within 150 s")
    .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `cascade check` tries the object store for real before the first upload and names what is
/// wrong: a bucket that does not exist, credentials the store refuses, an endpoint that does not
/// answer, and a bucket without the CORS rule players need when they are redirected to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_what_is_wrong_with_the_object_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out) = check(d, &[("CASCADE_STORAGE_URL", "s3://cascade-test/check")]).await;
    assert!(ok, "{out}");
    for line in ["ok   write", "ok   read", "ok   delete", "ok   cors     not needed"] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let redirect = ("CASCADE_STORAGE_REDIRECT", "true");
    let (ok, out) = check(d, &[("CASCADE_STORAGE_URL", "s3://cascade-test/check"), redirect]).await;
    assert!(ok && out.contains("ok   cors     a CORS rule lets pages of"), "{out}");

    let (ok, out) = check(d, &[("CASCADE_STORAGE_URL", "s3://cascade-nocors/check"), redirect]).await;
    assert!(!ok && out.contains("FAIL cors") && out.contains("no CORS configuration"), "{out}");
    let (ok, out) = check(d, &[("CASCADE_STORAGE_URL", "s3://cascade-missing/check")]).await;
    assert!(!ok && out.contains("FAIL write") && out.contains("the bucket does not exist"), "{out}");
    for wrong in [("AWS_SECRET_ACCESS_KEY", "not-the-secret"), ("AWS_ACCESS_KEY_ID", "AKIANOTAKEY")] {
        let (ok, out) = check(d, &[("CASCADE_STORAGE_URL", "s3://cascade-test/check"), wrong]).await;
        assert!(!ok && out.contains("FAIL write") && out.contains("the credentials are refused"), "{}: {out}", wrong.0);
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let endpoint = format!("http://{closed}");
    let (ok, out) = check(d, &[("CASCADE_STORAGE_URL", "s3://cascade-test/check"), ("AWS_ENDPOINT_URL", &endpoint)]).await;
    assert!(!ok && out.contains("FAIL write") && out.contains("the endpoint cannot be reached"), "{out}");
    // Nothing of the checks stays in the bucket.
    assert!(objects_under(&bucket_client("cascade-test"), "check").await.is_empty());
}

/// With `CASCADE_STORAGE_REDIRECT`, a segment or image GET is answered, after its token check, by
/// a redirect to a presigned URL of the object; manifests and the key still come from Cascade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_redirect_to_presigned_urls_after_the_token_check() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("redirect-{}", std::process::id());
    let url = format!("s3://cascade-test/{prefix}");
    let mut env: Vec<(&str, String)> = s3().env();
    env.extend([("CASCADE_STORAGE_URL", url), ("CASCADE_STORAGE_REDIRECT", "true".into())]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_in(dir.path(), &env).await;
    let src = clip("redirect.mp4", "testsrc2=size=640x360:rate=25", Some("sine"), 6.0, &[]).await;
    let id = server.upload_ok(&src, "redirected").await;
    let v = server.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", server.log());
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let stored = objects_under(&bucket_client("cascade-test"), &format!("{prefix}/media/{id}")).await;

    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let seg = sibling(&hls, "360p/seg00001.ts");
    let r = no_follow.get(&seg).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&s3().endpoint) && location.contains("X-Amz-Signature="), "{location}");
    // Used after the second it was signed in, as a player may (the signature covers its
    // X-Amz-Date, not the time of the GET).
    let signed_at = location.split("X-Amz-Date=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let signed_at = chrono::NaiveDateTime::parse_from_str(&signed_at, "%Y%m%dT%H%M%SZ").unwrap().and_utc();
    while chrono::Utc::now() < signed_at + chrono::Duration::seconds(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = no_follow.get(&location).send().await.unwrap();
    let status = r.status();
    let body = r.bytes().await.unwrap();
    let want = &stored.iter().find(|(n, _)| n == "hls/360p/seg00001.ts").expect("the segment is in the bucket").1;
    assert!(
        status == 200 && body.as_ref() == want.as_slice(),
        "{status} {location}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    // Manifests and the key are answered by Cascade itself.
    for rel in ["master.m3u8", "360p/index.m3u8", "key"] {
        let r = no_follow.get(sibling(&hls, rel)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{rel}");
    }
    // A bad token gets no URL.
    let token = hls.split("/play/").nth(1).unwrap().split('/').next().unwrap().to_string();
    let mut altered = token.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let bad = seg.replace(&token, &altered);
    let r = no_follow.get(&bad).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("location").is_none());
    // A player follows the redirects.
    ffmpeg_decode(&hls).await.unwrap_or_else(|e| panic!("HLS through redirects: {e}"));
}
