//! `cascade check`: what a scaled set-up needs of its object store, tried for real before the
//! first upload (the bucket exists, the credentials may write, read and delete in it, and, when
//! players are redirected to it, its CORS rule lets the site's pages read from it).

use std::time::Duration;

use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};
use serde::Serialize;

use super::Storage;

/// One finding.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn found(name: &'static str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check { name, ok: true, detail },
        Err(detail) => Check { name, ok: false, detail },
    }
}

/// Says what an S3 error means for the operator.
fn explain(e: &object_store::Error) -> String {
    let text = e.to_string();
    // Most specific first: an S3 error code, then a request that never got an answer; never a
    // bare number (a request id or object name may hold any digits).
    let why = if text.contains("NoSuchBucket") {
        "the bucket does not exist"
    } else if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "AccessDenied", "403 Forbidden"]
        .iter()
        .any(|w| text.contains(w))
    {
        "the credentials are refused (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    } else if ["error sending request", "onnect", "dns error", "timed out"].iter().any(|w| text.contains(w)) {
        "the endpoint cannot be reached (AWS_ENDPOINT_URL)"
    } else {
        "the store refused the request"
    };
    format!("{why}: {text}")
}

/// Runs the checks; `origin` is the site's origin (`CASCADE_PUBLIC_URL`) for the CORS check.
pub async fn check(storage: &Storage, origin: &str) -> Vec<Check> {
    let Some(r) = storage.remote() else {
        return vec![Check { name: "storage", ok: true, detail: "media in the data dir (no CASCADE_STORAGE_URL)".into() }];
    };
    let s3 = r.s3();
    let key = r.key(&format!(".cascade-check/{}", uuid::Uuid::new_v4()));
    let body = b"cascade check";
    let mut out = Vec::new();
    let write = s3.put(&key, PutPayload::from_static(body)).await.map_err(|e| explain(&e));
    out.push(found("write", write.as_ref().map(|_| format!("put {key} in bucket {}", r.bucket())).map_err(Clone::clone)));
    if write.is_err() {
        return out;
    }
    let read = match s3.get(&key).await {
        Ok(g) => match g.bytes().await {
            Ok(b) if b.as_ref() == body => Ok("read it back".to_string()),
            Ok(_) => Err("read back something else than was written".to_string()),
            Err(e) => Err(explain(&e)),
        },
        Err(e) => Err(explain(&e)),
    };
    out.push(found("read", read));
    if storage.redirects() {
        out.push(found("cors", cors_rule(storage, &key, origin).await));
    } else {
        out.push(Check {
            name: "cors",
            ok: true,
            detail: "not needed: media is streamed through Cascade (CASCADE_STORAGE_REDIRECT off)".into(),
        });
    }
    out.push(found("delete", s3.delete(&key).await.map(|_| "deleted it".to_string()).map_err(|e| explain(&e))));
    out
}

/// Whether the bucket's CORS configuration (GetBucketCors, signed as object_store signs its own
/// requests) has a rule letting a page of `origin` GET with a Range header. A store that does not
/// implement the call is asked with a real preflight instead.
async fn cors_rule(storage: &Storage, key: &Key, origin: &str) -> Result<String, String> {
    let r = storage.remote().ok_or("no bucket")?;
    let credential = r.s3().credentials().get_credential().await.map_err(|e| explain(&e))?;
    let url = r.bucket_url("cors");
    let mut req = object_store::client::HttpRequest::new(Vec::<u8>::new().into());
    *req.uri_mut() = url.parse().map_err(|e| format!("{url}: {e}"))?;
    object_store::aws::AwsAuthorizer::new(&credential, "s3", r.region()).authorize(&mut req, None);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().map_err(|e| e.to_string())?;
    let mut get = client.get(&url);
    for (name, value) in req.headers().iter().filter(|(n, _)| *n != http::header::HOST) {
        get = get.header(name.as_str(), value.as_bytes());
    }
    let resp = get.send().await.map_err(|e| format!("GetBucketCors failed: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    match status.as_u16() {
        200 => {
            let allows = body.split("<CORSRule>").skip(1).any(|rule| {
                let origin_ok =
                    rule.contains("<AllowedOrigin>*</AllowedOrigin>") || rule.contains(&format!("<AllowedOrigin>{origin}</AllowedOrigin>"));
                let header_ok = rule.contains("<AllowedHeader>*</AllowedHeader>")
                    || rule.to_ascii_lowercase().contains("<allowedheader>range</allowedheader>");
                origin_ok && header_ok && rule.contains("<AllowedMethod>GET</AllowedMethod>")
            });
            if allows {
                Ok(format!("a CORS rule lets pages of {origin} GET media with a Range header"))
            } else {
                Err(format!("no CORS rule of the bucket allows GET with a Range header from {origin} (or *): players redirected to it cannot load media"))
            }
        }
        404 if body.contains("NoSuchCORSConfiguration") => {
            Err(format!("the bucket has no CORS configuration: players on {origin} redirected to it cannot load media"))
        }
        403 => Err(format!("GetBucketCors refused ({status}): the credentials may not read the bucket's CORS rules")),
        _ => cors(storage, key, origin).await,
    }
}

/// A browser's CORS preflight for a presigned GET of the probe object from `origin`, as hls.js
/// and dash.js send it (with a Range header).
async fn cors(storage: &Storage, key: &Key, origin: &str) -> Result<String, String> {
    use object_store::signer::Signer;
    let r = storage.remote().ok_or("no bucket")?;
    let url = r.s3().signed_url(http::Method::GET, key, Duration::from_secs(60)).await.map_err(|e| explain(&e))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().map_err(|e| e.to_string())?;
    let resp = client
        .request(reqwest::Method::OPTIONS, url.as_str())
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await
        .map_err(|e| format!("the preflight request failed: {e}"))?;
    let allowed = resp.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()).map(str::to_string);
    match allowed {
        Some(a) if resp.status().is_success() && (a == "*" || a == origin) => {
            Ok(format!("a page of {origin} may read from the bucket (Access-Control-Allow-Origin: {a})"))
        }
        _ => Err(format!(
            "the bucket has no CORS rule allowing GET with a Range header from {origin} (preflight answered {}): players redirected to it cannot load media",
            resp.status()
        )),
    }
}
