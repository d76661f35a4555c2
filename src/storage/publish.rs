//! Puts a job's output in the bucket as it is finished, in an order that keeps progressive
//! playback correct from any node: a manifest is put only after every file reported before it
//! (the segments it lists) is stored. Segments go up a few at a time; of several versions of a
//! manifest waiting, only the last is put. The packager, on a blocking thread, only queues.
//!
//! A run that finds an earlier run's output in the bucket (a job taken over from a worker that
//! died, or retried) leaves it in place for the players on it: its own segments replace the old
//! ones of the same names as they come (the same source, ladder and key give the same segments),
//! and its manifests are held back until it has reported every file the old run had published,
//! so a manifest in the bucket never lists less than players have already seen. At the end,
//! whatever of the old run this run did not replace is removed.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Files being put at once per job.
const FILES_IN_FLIGHT: usize = 4;

enum Op {
    /// A finished file of the media tree (a segment, an init segment, an image): read and put.
    File(String),
    /// A manifest's content as it was written.
    Manifest(String, Bytes),
    /// A back end starts over: what is published goes.
    Reset,
    /// Everything under the dir not put yet, then every manifest as it is on disk; answers with
    /// the first failure of the job's publication, if any.
    Finish(oneshot::Sender<Result<(), String>>),
    /// Answers once everything queued before it is stored.
    Barrier(oneshot::Sender<()>),
    /// The job ended without output: what is being put completes, nothing more is put.
    Stop(oneshot::Sender<()>),
}

/// The queue of one job's publication.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Op>,
    /// Whether manifests are held back (an earlier run's are in the bucket, with more listed).
    holding: Arc<AtomicBool>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

/// Whether a path of the media tree is a manifest (rewritten as a job goes; put last).
pub(super) fn is_manifest(rel: &str) -> bool {
    rel.ends_with(".m3u8") || rel.ends_with(".mpd")
}

impl Publisher {
    /// `earlier`: what the bucket holds under `root` already (paths relative to it).
    pub(super) fn start(s3: Arc<AmazonS3>, root: Key, dir: PathBuf, earlier: HashSet<String>) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        // Nothing to hold back for if no manifest of the earlier run was published: no player
        // can be on it.
        let unseen: HashSet<String> = if earlier.iter().any(|f| is_manifest(f)) {
            earlier.iter().filter(|f| !is_manifest(f)).cloned().collect()
        } else {
            HashSet::new()
        };
        let holding = Arc::new(AtomicBool::new(!unseen.is_empty()));
        let task = Task {
            s3,
            root,
            dir,
            published: HashSet::new(),
            inflight: JoinSet::new(),
            failure: None,
            earlier,
            unseen,
            holding: holding.clone(),
        };
        tokio::spawn(task.run(rx));
        Publisher { tx, holding }
    }

    /// Whether the bucket has this run's manifests (rather than an earlier run's, which list more
    /// than this run has made so far): until then the node running the job serves the video
    /// from the bucket too, not from its disk.
    pub fn caught_up(&self) -> bool {
        !self.holding.load(Ordering::Acquire)
    }

    /// A file under the media dir is complete (`rel`: its path there).
    pub fn file(&self, rel: &Path) {
        let _ = self.tx.send(Op::File(rel.to_string_lossy().into_owned()));
    }

    /// A manifest was written with `data`.
    pub fn manifest(&self, rel: &Path, data: &[u8]) {
        let _ = self.tx.send(Op::Manifest(rel.to_string_lossy().into_owned(), Bytes::copy_from_slice(data)));
    }

    /// The output is emptied for another run.
    pub fn reset(&self) {
        let _ = self.tx.send(Op::Reset);
    }

    /// Waits until everything queued so far is stored (or failed): a record may then say what
    /// the bucket holds (playable, an image).
    pub async fn stored(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops publishing (the job failed, was cancelled or deleted) and waits until nothing is
    /// being put, so a removal after this leaves nothing behind.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Puts what the job left on disk and waits until everything is stored. `Err`: what failed.
    pub async fn finish(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Finish(tx)).map_err(|_| "the publisher stopped".to_string())?;
        rx.await.map_err(|_| "the publisher stopped".to_string())?
    }
}

struct Task {
    s3: Arc<AmazonS3>,
    root: Key,
    dir: PathBuf,
    /// Files put (not manifests).
    published: HashSet<String>,
    inflight: JoinSet<Result<String, String>>,
    /// The first failure: nothing is put after it (a manifest could list what is missing).
    failure: Option<String>,
    /// What an earlier run left in the bucket and this run has not replaced (yet).
    earlier: HashSet<String>,
    /// The earlier run's files (not manifests) this run has not reported yet: while there are
    /// any, manifests are held back.
    unseen: HashSet<String>,
    holding: Arc<AtomicBool>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut pending: VecDeque<Op> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(op) => pending.push_back(op),
                    None => break,
                }
            }
            while let Ok(op) = rx.try_recv() {
                pending.push_back(op);
            }
            let Some(op) = pending.pop_front() else { continue };
            match op {
                Op::File(rel) => {
                    // A manifest queued after the earlier run's last file lists everything the
                    // earlier run's manifest did (the packager reports a file before it writes a
                    // playlist that lists it).
                    if self.unseen.remove(&rel) && self.unseen.is_empty() {
                        self.holding.store(false, Ordering::Release);
                    }
                    self.put_file(rel).await
                }
                Op::Manifest(rel, data) => {
                    // A later version replaces this one, unless someone waits for this one.
                    let newer =
                        pending.iter().take_while(|o| !matches!(o, Op::Barrier(_))).any(|o| matches!(o, Op::Manifest(r, _) if *r == rel));
                    // Held back: a later version (or the final sweep) is put instead.
                    if !newer && self.unseen.is_empty() {
                        self.drain().await;
                        self.put_bytes(&rel, data).await;
                    }
                }
                Op::Reset => {
                    self.drain().await;
                    self.published.clear();
                    self.failure = None;
                    self.earlier.clear();
                    self.unseen.clear();
                    self.holding.store(false, Ordering::Release);
                    let prefix = self.root.clone();
                    if let Err(e) = super::remove_prefix(&self.s3, &prefix).await {
                        let e = e.to_string();
                        self.failure = Some(e);
                    }
                }
                Op::Finish(answer) => {
                    // What is in flight is recorded as put first, or the sweep would put it again.
                    self.drain().await;
                    self.sweep().await;
                    self.drain().await;
                    self.remove_earlier().await;
                    let _ = answer.send(self.failure.clone().map_or(Ok(()), Err));
                }
                Op::Barrier(answer) => {
                    self.drain().await;
                    let _ = answer.send(());
                }
                Op::Stop(answer) => {
                    self.drain().await;
                    let _ = answer.send(());
                    break;
                }
            }
        }
        self.drain().await;
    }

    async fn put_file(&mut self, rel: String) {
        if self.failure.is_some() || self.published.contains(&rel) {
            return;
        }
        while self.inflight.len() >= FILES_IN_FLIGHT {
            self.collect_one().await;
        }
        let (s3, key, file) = (self.s3.clone(), self.key(&rel), self.dir.join(&rel));
        self.inflight.spawn(async move {
            // Removed since it was reported (a rung a live broadcast dropped, its files removed
            // at the end): no manifest lists it any more, and there is nothing to put.
            if matches!(tokio::fs::symlink_metadata(&file).await, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                return Ok(rel);
            }
            super::put_file(&s3, &key, &file).await.map(|_| rel.clone()).map_err(|e| format!("{rel}: {e}"))
        });
    }

    async fn put_bytes(&mut self, rel: &str, data: Bytes) {
        if self.failure.is_some() {
            return;
        }
        match self.s3.put(&self.key(rel), PutPayload::from(data)).await {
            Ok(_) => {
                self.earlier.remove(rel);
            }
            Err(e) => self.failure = Some(format!("{rel}: {e}")),
        }
    }

    /// After the final manifests: what is left of an earlier run (files this run did not make,
    /// which no manifest lists any more).
    async fn remove_earlier(&mut self) {
        if self.failure.is_some() {
            return;
        }
        for rel in std::mem::take(&mut self.earlier) {
            match self.s3.delete(&self.key(&rel)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    self.failure.get_or_insert(format!("{rel}: {e}"));
                }
            }
        }
    }

    async fn collect_one(&mut self) {
        match self.inflight.join_next().await {
            Some(Ok(Ok(rel))) => {
                self.earlier.remove(&rel);
                self.published.insert(rel);
            }
            Some(Ok(Err(e))) => {
                self.failure.get_or_insert(e);
            }
            Some(Err(e)) => {
                self.failure.get_or_insert(e.to_string());
            }
            None => {}
        }
    }

    async fn drain(&mut self) {
        while !self.inflight.is_empty() {
            self.collect_one().await;
        }
    }

    /// Files the job wrote without reporting them (a broadcast's final playlists, the FFmpeg
    /// back end's extras), then every manifest in its final form.
    async fn sweep(&mut self) {
        let dir = self.dir.clone();
        let files = tokio::task::spawn_blocking(move || list_files(&dir)).await.unwrap_or_else(|e| Err(e.to_string()));
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                self.failure.get_or_insert(e);
                return;
            }
        };
        let (manifests, others): (Vec<String>, Vec<String>) = files.into_iter().partition(|f| is_manifest(f));
        for rel in others {
            self.put_file(rel).await;
        }
        self.drain().await;
        for rel in manifests {
            match tokio::fs::read(self.dir.join(&rel)).await {
                Ok(data) => self.put_bytes(&rel, data.into()).await,
                Err(e) => {
                    self.failure.get_or_insert(format!("{rel}: {e}"));
                }
            }
        }
    }

    fn key(&self, rel: &str) -> Key {
        Key::from(format!("{}/{rel}", self.root))
    }
}

/// Every regular file under `dir` (relative, `/`-separated), skipping temporary (`*.tmp`) and
/// hidden files.
pub(super) fn list_files(dir: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = match std::fs::read_dir(dir.join(&rel)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.to_string()),
        };
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with(".tmp") {
                continue;
            }
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            let path = rel.join(&name);
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push(path.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}
