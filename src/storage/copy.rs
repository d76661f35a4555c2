//! `cascade migrate media-to-s3`: copies an embedded installation's sources and media from its
//! data dir into the bucket of a scaled set-up, in the layout the servers read
//! (`sources/{id}`, `media/{id}/…`). Files before manifests (a manifest is never in the bucket
//! before what it lists); an object already there with the file's size is left as it is, so an
//! interrupted copy is run again. Then every video's objects are listed and compared with its
//! files.

use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::ObjectStore;

use super::{storage_error, Remote, Storage};
use crate::error::AppError;

/// Objects put at once.
const IN_FLIGHT: usize = 8;

/// What a copy did.
#[derive(Debug, Default)]
pub struct Copied {
    /// Sources and media files put.
    pub sources: usize,
    pub files: usize,
    /// Bytes put.
    pub bytes: u64,
    /// Objects that were in the bucket already with the file's size.
    pub present: usize,
    /// Videos whose media was copied (and compared).
    pub videos: usize,
}

/// A name the servers could have given a directory of `uploads/` or `media/` (nothing else in
/// those dirs is copied: a stray file or `..` never becomes a key).
fn plausible_id(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The directories of `dir` with plausible video ids as names, sorted.
fn video_dirs(dir: &Path) -> Result<Vec<String>, AppError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && plausible_id(&name) {
            ids.push(name);
        }
    }
    ids.sort();
    Ok(ids)
}

impl Storage {
    /// Copies the sources (`uploads/{id}/source`: complete uploads only) and media trees
    /// (`media/{id}/`) of `data_dir` into the bucket. The servers on `data_dir` must be stopped.
    pub async fn copy_data_dir(&self, data_dir: &Path) -> Result<Copied, AppError> {
        let r = self.remote.as_ref().ok_or_else(|| AppError::BadRequest("no object storage is set (CASCADE_STORAGE_URL)".into()))?;
        let (uploads, media) = (data_dir.join("uploads"), data_dir.join("media"));
        let (source_ids, media_ids) = tokio::task::spawn_blocking(move || Ok::<_, AppError>((video_dirs(&uploads)?, video_dirs(&media)?)))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??;
        let mut copied = Copied::default();

        // Sources and every file but the manifests first, then the manifests.
        let mut first: Vec<(Key, PathBuf, bool)> = Vec::new();
        for id in &source_ids {
            let file = data_dir.join("uploads").join(id).join("source");
            if tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file()) {
                first.push((r.source_key(id), file, true));
            }
        }
        let mut trees = Vec::new();
        for id in &media_ids {
            let dir = data_dir.join("media").join(id);
            let d2 = dir.clone();
            let files = tokio::task::spawn_blocking(move || super::publish::list_files(&d2))
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?
                .map_err(AppError::Internal)?;
            trees.push((id.clone(), dir, files));
        }
        let mut manifests = Vec::new();
        for (id, dir, files) in &trees {
            for rel in files {
                let item = (r.media_key(id, Path::new(rel)), dir.join(rel), false);
                if super::publish::is_manifest(rel) {
                    manifests.push(item);
                } else {
                    first.push(item);
                }
            }
        }
        for batch in [first, manifests] {
            let mut puts = futures_util::stream::iter(
                batch.into_iter().map(|(key, file, source)| async move { copy_one(r, &key, &file).await.map(|put| (put, source)) }),
            )
            .buffer_unordered(IN_FLIGHT);
            while let Some(done) = puts.next().await {
                match done? {
                    (Some(bytes), source) => {
                        copied.bytes += bytes;
                        if source {
                            copied.sources += 1;
                        } else {
                            copied.files += 1;
                        }
                    }
                    (None, _) => copied.present += 1,
                }
            }
        }

        // What the bucket has of each video is what its data dir has.
        for (id, dir, files) in &trees {
            let prefix = r.media_dir_key(id);
            let listed: std::collections::BTreeMap<String, u64> =
                r.s3.list(Some(&prefix))
                    .map_ok(|m| (m.location.as_ref()[prefix.as_ref().len() + 1..].to_string(), m.size))
                    .try_collect()
                    .await
                    .map_err(storage_error)?;
            for rel in files {
                let len = tokio::fs::metadata(dir.join(rel)).await?.len();
                if listed.get(rel) != Some(&len) {
                    return Err(AppError::Unavailable(format!(
                        "media/{id}/{rel}: the bucket does not hold the file's {len} bytes after the copy"
                    )));
                }
            }
            copied.videos += 1;
        }
        Ok(copied)
    }
}

/// Puts `file` under `key` unless an object of its size is there; the bytes put, or `None`.
async fn copy_one(r: &Remote, key: &Key, file: &Path) -> Result<Option<u64>, AppError> {
    let len = tokio::fs::metadata(file).await?.len();
    match r.s3.head(key).await {
        Ok(meta) if meta.size == len => return Ok(None),
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(storage_error(e)),
    }
    r.put_file(key, file).await.map_err(|e| match e {
        AppError::Unavailable(m) => AppError::Unavailable(format!("{}: {m}", file.display())),
        other => other,
    })?;
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_ids_are_copied() {
        assert!(plausible_id("0190c3e1-7a2b-7c3d-9e4f-a1b2c3d4e5f6"));
        for bad in ["", "..", ".", "a/b", "a b", ".hidden", &"x".repeat(65)] {
            assert!(!plausible_id(bad), "{bad}");
        }
    }
}
