//! Media bytes. The data dir is always where pipelines write and uploads land; with
//! `CASCADE_STORAGE_URL=s3://bucket/prefix` every source and every finished output is also put in
//! S3-compatible object storage, and media is served from there by any node (through the segment
//! cache, or with a redirect to a presigned URL). The node that produces a video serves it from
//! its own disk while it does (progressive playback, low-latency parts), the bucket otherwise.
//!
//! Layout in the bucket: `{prefix}/sources/{id}` and `{prefix}/media/{id}/{path in the media tree}`.
//! AES keys stay in the database, never here.
//!
//! The client is `object_store`'s (Apache Arrow's, used by DataFusion, delta-rs and others): S3's
//! signing, multipart uploads, retries with back-off and presigned URLs, and the standard `AWS_*`
//! variables, without the AWS SDK's build.

mod check;
mod copy;
mod publish;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{ClientConfigKey, ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use tracing::{info, warn};

pub use check::{check, Check};
pub use publish::Publisher;

use crate::error::AppError;

/// Files up to this size are put in one request; larger ones (sources) in parts of this size.
const PART: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// How long a presigned URL stands.
const PRESIGNED_FOR: Duration = Duration::from_secs(600);

/// `s3://bucket[/prefix]` → (bucket, prefix without slashes at either end).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or("must be an s3://bucket/prefix URL")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket =
        (3..=63).contains(&bucket.len()) && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err("the bucket name must be 3–63 lower-case letters, digits, dots or hyphens".into());
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p.is_empty() && !prefix.is_empty() || p == "." || p == "..") {
        return Err("the prefix must be a plain path".into());
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// The object store of a scaled set-up.
pub struct Remote {
    s3: Arc<AmazonS3>,
    /// `AWS_ENDPOINT_URL` (else AWS itself) and the region, for `cascade check`'s own requests.
    endpoint: Option<String>,
    region: String,
    bucket: String,
    prefix: String,
    redirect: bool,
}

/// Where media lives besides the data dir: nowhere (the default) or a bucket.
pub struct Storage {
    remote: Option<Remote>,
}

fn storage_error(e: object_store::Error) -> AppError {
    AppError::Unavailable(format!("object storage: {e}"))
}

impl Storage {
    /// The data dir alone.
    pub fn local() -> Storage {
        Storage { remote: None }
    }

    /// The storage the settings ask for. Endpoint, region and credentials come from the `AWS_*`
    /// environment variables; nothing is contacted here (`cascade check` does that).
    pub fn from_config(config: &crate::config::Config) -> Result<Storage, AppError> {
        Storage::open(config.storage_url.as_deref(), config.storage_redirect)
    }

    /// The storage of `url` (`s3://bucket/prefix`, else the data dir alone); see `from_config`.
    pub fn open(url: Option<&str>, redirect: bool) -> Result<Storage, AppError> {
        let Some(url) = url else { return Ok(Storage::local()) };
        let (bucket, prefix) = parse_url(url).map_err(AppError::BadRequest)?;
        let builder = AmazonS3Builder::from_env();
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let region = builder.get_config_value(&AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let s3 = builder
            .with_bucket_name(&bucket)
            // As config keys: replacing the client options would drop the `AWS_*` ones (AWS_ALLOW_HTTP).
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "60s")
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "5s")
            // Bounded: a failing store fails the job (it is retried) instead of holding it.
            .with_retry(RetryConfig { max_retries: 4, retry_timeout: Duration::from_secs(60), ..Default::default() })
            .build()
            .map_err(|e| AppError::BadRequest(format!("CASCADE_STORAGE_URL: {e}")))?;
        info!(bucket, prefix, "media in object storage");
        Ok(Storage { remote: Some(Remote { s3: Arc::new(s3), endpoint, region, bucket, prefix, redirect }) })
    }

    /// Whether media is in a bucket.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Whether segments and images are answered with presigned redirects.
    pub fn redirects(&self) -> bool {
        self.remote.as_ref().is_some_and(|r| r.redirect)
    }

    pub(crate) fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// The source of a video is put in the bucket (before its upload is acknowledged), so any
    /// worker can transcode it. Nothing to do on local storage.
    pub async fn put_source(&self, id: &str, file: &Path) -> Result<(), AppError> {
        let Some(r) = &self.remote else { return Ok(()) };
        r.put_file(&r.source_key(id), file).await
    }

    /// Fetches a video's source from the bucket to `dest` (a worker that did not receive the
    /// upload). `false`: there is none (or no bucket).
    pub async fn fetch_source(&self, id: &str, dest: &Path) -> Result<bool, AppError> {
        let Some(r) = &self.remote else { return Ok(false) };
        let got = match r.s3.get(&r.source_key(id)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(storage_error(e)),
        };
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".fetch");
        let tmp = std::path::PathBuf::from(tmp);
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut body = got.into_stream();
        use tokio::io::AsyncWriteExt;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(storage_error)?).await?;
        }
        file.sync_all().await?;
        tokio::fs::rename(&tmp, dest).await?;
        info!(video_id = id, "source fetched from object storage");
        Ok(true)
    }

    /// A file of a video's media tree from the bucket; `None` if there is no such object.
    pub async fn get_media(&self, id: &str, rel: &Path) -> Result<Option<Bytes>, AppError> {
        let Some(r) = &self.remote else { return Ok(None) };
        match r.s3.get(&r.media_key(id, rel)).await {
            Ok(g) => Ok(Some(g.bytes().await.map_err(storage_error)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error(e)),
        }
    }

    /// A presigned GET URL of a file of a video's media tree (no existence check: a missing
    /// object is the store's 404).
    pub async fn presigned_media_url(&self, id: &str, rel: &Path) -> Result<Option<String>, AppError> {
        let Some(r) = &self.remote else { return Ok(None) };
        use object_store::signer::Signer;
        let url = r.s3.signed_url(http::Method::GET, &r.media_key(id, rel), PRESIGNED_FOR).await.map_err(storage_error)?;
        Ok(Some(url.to_string()))
    }

    /// Removes everything a video has in the bucket under `media/{id}/` (a retried job starts
    /// over, a failed or deleted video keeps nothing published).
    pub async fn remove_media(&self, id: &str) -> Result<(), AppError> {
        let Some(r) = &self.remote else { return Ok(()) };
        r.remove_prefix(&r.media_dir_key(id)).await
    }

    /// Removes a deleted video's source and media from the bucket; failures are logged (the
    /// record is gone already; what stays is listed in the log line).
    pub async fn remove_video(&self, id: &str) {
        let Some(r) = &self.remote else { return };
        let source = match r.s3.delete(&r.source_key(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage_error(e)),
        };
        let media = r.remove_prefix(&r.media_dir_key(id)).await;
        if let Err(e) = source.and(media) {
            warn!(video_id = id, error = %e, "cannot remove a deleted video's objects");
        }
    }

    /// A publisher of the files a job writes under `dir` (the video's media dir), or `None` on
    /// local storage. What an earlier run of the job left in the bucket stays for the players on
    /// it until this run replaces it (see `publish`).
    pub async fn publisher(&self, id: &str, dir: &Path) -> Result<Option<Publisher>, AppError> {
        let Some(r) = self.remote.as_ref() else { return Ok(None) };
        let root = r.media_dir_key(id);
        let skip = root.as_ref().len() + 1;
        let earlier =
            r.s3.list(Some(&root)).map_ok(|m| m.location.as_ref()[skip..].to_string()).try_collect().await.map_err(storage_error)?;
        Ok(Some(Publisher::start(r.s3.clone(), root, dir.to_path_buf(), earlier)))
    }

    /// `publisher` for a video that has nothing in the bucket yet (a new broadcast's).
    pub fn new_publisher(&self, id: &str, dir: &Path) -> Option<Publisher> {
        let r = self.remote.as_ref()?;
        Some(Publisher::start(r.s3.clone(), r.media_dir_key(id), dir.to_path_buf(), Default::default()))
    }
}

impl Remote {
    fn key(&self, tail: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(tail)
        } else {
            Key::from(format!("{}/{tail}", self.prefix))
        }
    }

    fn source_key(&self, id: &str) -> Key {
        self.key(&format!("sources/{id}"))
    }

    fn media_dir_key(&self, id: &str) -> Key {
        self.key(&format!("media/{id}"))
    }

    fn media_key(&self, id: &str, rel: &Path) -> Key {
        self.key(&format!("media/{id}/{}", rel.to_string_lossy()))
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(crate) fn s3(&self) -> &Arc<AmazonS3> {
        &self.s3
    }

    /// The URL of a bucket-level request (`?cors`), path-style on a custom endpoint.
    pub(crate) fn bucket_url(&self, query: &str) -> String {
        match &self.endpoint {
            Some(e) => format!("{}/{}?{query}", e.trim_end_matches('/'), self.bucket),
            None => format!("https://{}.s3.{}.amazonaws.com/?{query}", self.bucket, self.region),
        }
    }

    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    /// Puts a file: in one request up to `PART`, in parts above (a source of gigabytes is never
    /// held in memory).
    async fn put_file(&self, key: &Key, file: &Path) -> Result<(), AppError> {
        put_file(&self.s3, key, file).await
    }

    async fn remove_prefix(&self, prefix: &Key) -> Result<(), AppError> {
        remove_prefix(&self.s3, prefix).await
    }
}

/// Deletes every object under `prefix`.
pub(crate) async fn remove_prefix(s3: &AmazonS3, prefix: &Key) -> Result<(), AppError> {
    let listed = s3.list(Some(prefix)).map_ok(|m| m.location).boxed();
    let mut deleted = s3.delete_stream(listed);
    while let Some(r) = deleted.next().await {
        match r {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage_error(e)),
        }
    }
    Ok(())
}

/// Puts a file under `key` (see `Remote::put_file`).
pub(crate) async fn put_file(s3: &AmazonS3, key: &Key, file: &Path) -> Result<(), AppError> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(file).await?;
    let len = f.metadata().await?.len();
    if len <= PART as u64 {
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf).await?;
        s3.put(key, PutPayload::from(buf)).await.map_err(storage_error)?;
        return Ok(());
    }
    let upload = s3.put_multipart(key).await.map_err(storage_error)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut buf = vec![0u8; 1 << 20];
    let result = async {
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(storage_error)?;
            writer.write(&buf[..n]);
        }
        Ok::<_, AppError>(())
    }
    .await;
    match result {
        Ok(()) => writer.finish().await.map(|_| ()).map_err(storage_error),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("s3://media").unwrap(), ("media".into(), "".into()));
        assert_eq!(parse_url("s3://my-bucket.x/a/b/").unwrap(), ("my-bucket.x".into(), "a/b".into()));
        for bad in ["media", "s3://", "s3://ab", "s3://Upper", "s3://b_c/x", "s3://bucket/a//b", "s3://bucket/../x", "http://b/x"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
