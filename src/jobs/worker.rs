//! The server side of jobs: workers that claim queued jobs from the store, streamed transcodes
//! started by uploads, and the bookkeeping around the runner (progress into the record, the
//! outcome recorded, retries, cancellation). One job's steps: `prepare`, `probe`,
//! `transcode` (the runner's fallback loop), `record_outcome`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tracing::{error, info, instrument, warn, Instrument};

use super::failure::JobFailure;
use super::runner::{self, JobOutput, JobProgress, JobSpec, Limits, Outcome};
use crate::app::{remove_dir_off_executor, App};
use crate::error::AppError;
use crate::model::{ErrorInfo, JobRecord, JobState, KeyMaterial, Status, VideoRecord};
use crate::probe::MediaInfo;
use crate::transcode::TranscodeError;
use crate::upload::{Growing, UploadState};

/// Bytes of a streamed upload on disk before its probe: enough for the demuxer to see every
/// stream's header.
const STREAM_PROBE_BYTES: u64 = 4 << 20;
/// How long a streamed transcode waits for those bytes at most (and never longer than the
/// upload's idle timeout).
const STREAM_PROBE_WAIT: Duration = Duration::from_secs(120);

/// How long a worker waits before it re-queues a job the object store failed at the start.
const STORAGE_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// A transcode that reads an upload while it arrives, and the slot it holds.
pub struct Streamed {
    pub growing: Arc<Growing>,
    pub slot: OwnedSemaphorePermit,
}

/// Starts `config.workers` workers; they stop when the app shuts down.
pub fn spawn_workers(app: Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..app.config.workers)
        .map(|n| {
            let app = app.clone();
            tokio::spawn(async move { worker_loop(app, n).await }.instrument(tracing::info_span!("worker", n)))
        })
        .collect()
}

async fn worker_loop(app: Arc<App>, n: usize) {
    info!(n, "worker started");
    while !app.is_shutting_down() {
        // A transcode slot first (streamed transcodes take them too), then a job.
        let Ok(permit) = app.slots.clone().acquire_owned().await else { break };
        // The slot may have been freed by a job cancelled for shutdown: claim nothing new then.
        if app.is_shutting_down() {
            break;
        }
        match app.store.run(|s| s.claim_next()).await {
            Ok(Some((job, rec))) => {
                let waited = (chrono::Utc::now() - job.enqueued_at).to_std().unwrap_or_default();
                app.metrics.queue_wait.observe(waited.as_secs_f64());
                info!(video_id = %job.video_id, waited_ms = waited.as_millis() as u64, "claimed a job");
                app.notify(&rec);
                if let Err(e) = run_job(&app, &job, rec, None).await {
                    error!(video_id = %job.video_id, error = %e, "job bookkeeping failed");
                }
            }
            Ok(None) => {
                drop(permit);
                let _ = tokio::time::timeout(Duration::from_secs(1), app.wake.notified()).await;
            }
            Err(e) => {
                error!(error = %e, "cannot claim a job");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    info!(n, "worker stopped");
}

/// On a shared database (PostgreSQL), the heartbeat that keeps this process's claims on its
/// jobs: their leases are renewed five times per lease, and a job whose lease another process
/// took over (this one stalled or lost the database for a whole lease) is stopped here, so only
/// one process writes its output. `None` on sled, where no other process can take a job.
pub fn spawn_heartbeat(app: Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    if !app.store.blocking().shares_jobs() {
        return None;
    }
    let every = (app.config.job_lease / 5).max(Duration::from_millis(500));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Also while a shutdown lets running jobs finish: the server aborts it after them.
        loop {
            tick.tick().await;
            let mine: Vec<String> = app.running.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default();
            match app.store.run(move |s| s.renew_leases(&mine)).await {
                Ok(lost) => {
                    for id in lost {
                        error!(video_id = %id, "another process holds this job now (its lease expired here): stopping it");
                        if let Ok(mut l) = app.lost_leases.lock() {
                            l.insert(id.clone());
                        }
                        cancel(&app, &id);
                    }
                }
                Err(e) => warn!(error = %e, "cannot renew the leases of running jobs"),
            }
        }
    }))
}

/// On a shared database (PostgreSQL LISTEN/NOTIFY), what other processes change reaches this
/// one at once: a video's new state goes to this process's watchers (the SSE of
/// `/api/videos/{id}/events`), a job queued elsewhere wakes an idle worker here instead of its
/// next one-second poll. `None` on sled.
pub fn spawn_follower(app: Arc<App>) -> Result<Option<tokio::task::JoinHandle<()>>, AppError> {
    if !app.config.database_listen {
        info!("CASCADE_DATABASE_LISTEN is off: workers poll the queue once a second");
        return Ok(None);
    }
    let Some(mut changes) = app.store.blocking().listen_changes()? else { return Ok(None) };
    Ok(Some(tokio::spawn(async move {
        use crate::store::Change;
        while let Some(change) = changes.recv().await {
            match change {
                // Read only for a watcher: progress elsewhere is no work here otherwise.
                Change::Video(_) if app.events.receiver_count() == 0 => {}
                Change::Video(id) => {
                    if let Ok(Some(rec)) = app.store.run(move |s| s.get(&id)).await {
                        app.notify(&rec);
                    }
                }
                Change::Job | Change::Resync => app.wake.notify_waiters(),
            }
        }
    })))
}

/// A transcode slot, if one is free now.
pub fn try_take_slot(app: &App) -> Option<OwnedSemaphorePermit> {
    app.slots.clone().try_acquire_owned().ok()
}

/// Records a video whose upload is still arriving, with its job running, and starts transcoding
/// it from the growing file. The slot is held until the job ends.
pub async fn start_streamed(
    app: &Arc<App>,
    rec: VideoRecord,
    key: KeyMaterial,
    growing: Arc<Growing>,
    slot: OwnedSemaphorePermit,
) -> Result<(), AppError> {
    let rec = VideoRecord { status: Status::Processing, attempts: 1, ..rec };
    let r2 = rec.clone();
    let job = app.store.run(move |s| s.create_with(&r2, &key, JobState::Running)).await?;
    app.store.flush().await?;
    app.notify(&rec);
    crate::webhooks::emit(app, "video.created", &rec).await;
    info!(video_id = %rec.id, "streamable upload: transcoding while it arrives");
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = run_job(&app, &job, rec, Some(Streamed { growing, slot })).await {
            error!(video_id = %job.video_id, error = %e, "streamed job bookkeeping failed");
        }
    });
    Ok(())
}

/// Cancels a running job (delete, shutdown). Returns whether one was running.
pub fn cancel(app: &App, id: &str) -> bool {
    match app.running.lock() {
        Ok(map) => map.get(id).map(|c| c.store(true, Ordering::SeqCst)).is_some(),
        Err(_) => false,
    }
}

/// Why a job stops before (or instead of) recording output.
enum Stop {
    Failed(JobFailure),
    /// A streamed transcode could not go on: the job runs from the file once the upload is complete.
    FallBackToFile(String),
    /// The streamed upload broke off: its handler removes everything.
    UploadAborted,
    /// The object store could not be reached: the job goes back to the queue (no attempt
    /// counted) after a pause.
    Retry(String),
}

impl<E: Into<JobFailure>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.into())
    }
}

/// Runs one job; `streamed` is set for a transcode of an upload that is still arriving (a
/// worker's job holds its slot in the worker loop instead).
#[instrument(skip_all, fields(video_id = %job.video_id))]
pub async fn run_job(app: &Arc<App>, job: &JobRecord, rec: VideoRecord, streamed: Option<Streamed>) -> Result<(), AppError> {
    let id = job.video_id.as_str();
    let (growing, mut slot) = match streamed {
        Some(s) => (Some(s.growing), Some(s.slot)),
        None => (None, None),
    };
    let mut spec = match prepare(app, id, &rec, growing.clone()).await? {
        Ok(spec) => spec,
        Err(stop) => return stop_job(app, id, stop, growing, &mut slot).await,
    };
    let media = match probe(app, id, &spec).await? {
        Ok(media) => media,
        Err(stop) => return stop_job(app, id, stop, spec.growing, &mut slot).await,
    };
    // Low-latency parts while it is processing, listed until the transcode ends (then its
    // playlists are on disk, whole segments only).
    spec.ll = app.config.upload_low_latency.then(|| app.live.ll.open(id));
    let started = std::time::Instant::now();
    let outcome = transcode(app, id, spec.clone(), media).await;
    if spec.ll.is_some() {
        app.live.ll.close(id);
    }
    let outcome = outcome?;
    record_outcome(app, id, &rec, &spec, outcome, started.elapsed(), &mut slot).await
}

/// Checks the attempt count, empties the output, finds the source and the key. The inner `Err`
/// says why the job stops here.
async fn prepare(app: &Arc<App>, id: &str, rec: &VideoRecord, growing: Option<Arc<Growing>>) -> Result<Result<JobSpec, Stop>, AppError> {
    if rec.attempts > app.config.max_attempts {
        return Ok(Err(JobFailure::TooManyAttempts(rec.attempts - 1).into()));
    }
    // A previous run (crash, restart, a worker that died) may have left partial output: start
    // from scratch (and nothing of it stays in the segment cache). In object storage it stays
    // for the players on it until this run's output replaces it.
    app.segments.forget(id);
    let publish = match app.storage.publisher(id, &app.media_dir(id)).await {
        Ok(p) => p,
        Err(e) => {
            // A streamed upload's job cannot go to the queue before its file is complete.
            let why = e.to_string();
            return Ok(Err(if growing.is_some() { Stop::FallBackToFile(why) } else { Stop::Retry(why) }));
        }
    };
    let growing = match growing {
        // Enough of the file for the demuxer to see every stream's header; an upload that is
        // complete by then is transcoded from its file like any other.
        Some(g) => match wait_upload(&g, STREAM_PROBE_BYTES, STREAM_PROBE_WAIT.min(g.idle())).await {
            UploadState::Aborted => return Ok(Err(Stop::UploadAborted)),
            UploadState::Done => None,
            UploadState::Writing => Some(g),
        },
        None => None,
    };
    let input = if growing.is_some() { app.partial_source_path(id) } else { app.source_path(id) };
    // Object storage: a worker that did not receive the upload fetches its source.
    if growing.is_none() && app.storage.is_remote() && !tokio::fs::try_exists(&input).await.unwrap_or(false) {
        if let Err(e) = app.storage.fetch_source(id, &input).await {
            return Ok(Err(Stop::Retry(e.to_string())));
        }
    }
    if growing.is_none() && !tokio::fs::try_exists(&input).await.unwrap_or(false) {
        // A streamed upload cut off by a shutdown or crash: its record exists, its file never completed.
        remove_dir_off_executor(app.upload_dir(id)).await;
        return Ok(Err(JobFailure::UploadIncomplete.into()));
    }
    let id2 = id.to_string();
    let Some(key) = app.store.run(move |s| s.key(&id2)).await? else {
        return Ok(Err(JobFailure::KeyMissing.into()));
    };
    let spec = JobSpec {
        input,
        growing,
        live: None,
        // Opened by `run_job` for the transcode.
        ll: None,
        out_dir: app.media_dir(id),
        scratch_dir: app.upload_dir(id).join("scratch"),
        ladder: app.ladder.clone(),
        key: Some(key),
        backend: app.config.backend,
        limits: Limits::from_config(&app.config),
        keep_work: app.config.keep_work,
        utc_timing_url: "/api/time".into(),
        publish,
    };
    Ok(Ok(spec))
}

/// Probes the source and records what it is.
async fn probe(app: &Arc<App>, id: &str, spec: &JobSpec) -> Result<Result<MediaInfo, Stop>, AppError> {
    let s2 = spec.clone();
    let probed = tokio::task::spawn_blocking(move || runner::probe(&s2)).await.map_err(|e| AppError::Internal(e.to_string()))?;
    let media = match probed {
        Ok(m) => m,
        Err(e) if spec.growing.is_some() => return Ok(Err(Stop::FallBackToFile(e.to_string()))),
        Err(e) => return Ok(Err(e.into())),
    };
    info!(duration_s = media.duration_s, video = ?media.video, audio = media.audio.is_some(), "probed");
    let (id2, src_info) = (id.to_string(), media.source_info());
    if let Some(r) = app.store.run(move |s| s.update(&id2, |v| v.source = src_info.clone())).await? {
        app.notify(&r);
    }
    Ok(Ok(media))
}

/// Runs the runner's fallback loop off the executor; progress reaches the record (and SSE
/// listeners) as it comes. The job is cancellable while this runs.
async fn transcode(app: &Arc<App>, id: &str, spec: JobSpec, media: MediaInfo) -> Result<Outcome, AppError> {
    let cancel = Arc::new(AtomicBool::new(false));
    app.running.lock().map_err(|_| AppError::Internal("lock poisoned".into()))?.insert(id.to_string(), cancel.clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<JobProgress>();
    let publish = spec.publish.clone();
    if let (Some(p), Ok(mut m)) = (&publish, app.publishing.lock()) {
        m.insert(id.to_string(), p.clone());
    }
    let progress_task = tokio::spawn(record_progress(app.clone(), id.to_string(), rx, publish.clone()));
    let outcome = tokio::task::spawn_blocking(move || {
        runner::transcode_with_fallback(
            &spec,
            &media,
            &mut |p| {
                let _ = tx.send(p);
            },
            &cancel,
        )
    })
    .await
    .map_err(|e| AppError::Internal(format!("transcode task panicked: {e}")));
    let _ = progress_task.await;
    // Object storage: the job is done when the bucket has all of it; a run without output stops
    // publishing before anything of it is removed. Until then this node serves the video from
    // its disk (it is still a running job here): a player never meets a bucket behind its
    // playlist.
    let outcome = match (outcome, publish) {
        (Ok(mut o), Some(p)) => {
            match &o.result {
                Ok(_) => {
                    if let Err(e) = p.finish().await {
                        o.result = Err(TranscodeError::Storage(e));
                    }
                }
                Err(_) => p.stop().await,
            }
            Ok(o)
        }
        (outcome, _) => outcome,
    };
    if let Ok(mut m) = app.publishing.lock() {
        m.remove(id);
    }
    app.running.lock().map_err(|_| AppError::Internal("lock poisoned".into()))?.remove(id);
    outcome
}

/// Records a job's progress as it comes. With object storage, a record says the video is playable
/// (or has an image) only once the bucket has what that needs: any node may serve it then.
pub(crate) async fn record_progress(
    app: Arc<App>,
    id: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<JobProgress>,
    publish: Option<crate::storage::Publisher>,
) {
    while let Some(p) = rx.recv().await {
        let id2 = id.clone();
        let playable = matches!(p, JobProgress::Playable { .. });
        if let Some(publish) = publish.as_ref().filter(|_| matches!(p, JobProgress::Playable { .. } | JobProgress::Image(_))) {
            publish.stored().await;
        }
        let res = app
            .store
            .run(move |s| {
                s.update(&id2, |v| match &p {
                    JobProgress::Fraction(f) => v.progress = v.progress.max(*f),
                    JobProgress::Image(name) => {
                        if !v.images.contains(name) {
                            v.images.push(name.clone());
                        }
                    }
                    JobProgress::Position(_) => {}
                    JobProgress::RungDropped { renditions, .. } => v.renditions = renditions.clone(),
                    JobProgress::Playable { renditions } => {
                        v.playable = true;
                        v.renditions = renditions.clone();
                    }
                })
            })
            .await;
        if let Ok(Some(r)) = res {
            app.notify(&r);
            if playable {
                info!("recorded playable");
                crate::webhooks::emit(&app, "video.playable", &r).await;
            }
        }
    }
}

/// Records how the run ended: ready, re-queued, or failed.
async fn record_outcome(
    app: &Arc<App>,
    id: &str,
    rec: &VideoRecord,
    spec: &JobSpec,
    outcome: Outcome,
    took: Duration,
    slot: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), AppError> {
    let backend = outcome.backend;
    // Transcodes by back end and how they ended (`/metrics`).
    let count =
        |what: &'static str| app.metrics.transcodes.get_or_create(&crate::metrics::TranscodeLabels { backend, outcome: what }).inc();
    if app.take_lost_lease(id) {
        count("cancelled");
        warn!("job stopped: another process took it over; its record and output are that process's");
        return Ok(());
    }
    let id2 = id.to_string();
    if app.store.run(move |s| s.get(&id2)).await?.is_none() {
        // Deleted while running: make sure nothing the pipeline wrote after the delete remains.
        count("cancelled");
        info!("job stopped: the video was deleted");
        remove_dir_off_executor(app.media_dir(id)).await;
        remove_dir_off_executor(app.upload_dir(id)).await;
        app.storage.remove_video(id).await;
        return Ok(());
    }
    let fallback_reason = Some(outcome.earlier_failures.join("; ")).filter(|s| !s.is_empty());
    match outcome.result {
        Ok(out) => {
            count("ready");
            if took > Duration::ZERO && out.duration_s > 0.0 {
                app.metrics.encode_speed.observe(out.duration_s / took.as_secs_f64());
            }
            record_ready(app, id, backend, fallback_reason, out).await
        }
        Err(TranscodeError::Cancelled) => {
            // Shutdown: the job goes back to the queue and runs again from scratch on restart;
            // the interrupted run does not count as an attempt.
            count("cancelled");
            info!("job cancelled; re-queueing it");
            requeue(app, id, true).await
        }
        Err(e) if spec.growing.is_some() => {
            count("retried");
            stop_job(app, id, Stop::FallBackToFile(e.to_string()), spec.growing.clone(), slot).await
        }
        Err(e) if e.is_transient() && rec.attempts < app.config.max_attempts => {
            // Not the input's fault (killed, stalled): run it again, a bounded number of times.
            count("retried");
            warn!(error = %e, attempt = rec.attempts, "transient failure; re-queueing the job");
            requeue(app, id, false).await
        }
        Err(e) => {
            count("failed");
            let (id2, b) = (id.to_string(), backend.to_string());
            app.store
                .run(move |s| {
                    s.update(&id2, |v| {
                        v.backend = Some(b.clone());
                        v.fallback_reason = fallback_reason.clone();
                    })
                })
                .await?;
            fail(app, id, e.into()).await
        }
    }
}

pub(crate) async fn record_ready(
    app: &App,
    id: &str,
    backend: &str,
    fallback_reason: Option<String>,
    out: JobOutput,
) -> Result<(), AppError> {
    let (id2, backend) = (id.to_string(), backend.to_string());
    let rec = app
        .store
        .run(move |s| {
            let r = s.update(&id2, |v| {
                v.status = Status::Ready;
                v.progress = 1.0;
                v.playable = true;
                v.renditions = out.renditions.clone();
                v.backend = Some(backend.clone());
                v.fallback_reason = fallback_reason.clone();
                if let Some(src) = v.source.as_mut().filter(|s| s.duration_s <= 0.0) {
                    src.duration_s = out.duration_s;
                }
            })?;
            s.finish_job(&id2)?;
            Ok::<_, AppError>(r)
        })
        .await?;
    app.store.flush().await?;
    info!("job ready");
    if app.storage.is_remote() {
        // Served from the bucket from now on, by every node.
        remove_dir_off_executor(app.media_dir(id)).await;
    }
    if let Some(r) = rec {
        app.notify(&r);
        crate::webhooks::emit(app, "video.ready", &r).await;
    }
    Ok(())
}

/// Ends a job that stopped early; `growing` is the upload a streamed transcode was reading and
/// `slot` the transcode slot it holds.
async fn stop_job(
    app: &App,
    id: &str,
    stop: Stop,
    growing: Option<Arc<Growing>>,
    slot: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), AppError> {
    if app.take_lost_lease(id) {
        warn!("job stopped: another process took it over");
        return Ok(());
    }
    match stop {
        Stop::Failed(f) => fail(app, id, f).await,
        Stop::UploadAborted => Ok(()),
        Stop::Retry(why) => {
            // Not the video's fault: it waits in the queue (no attempt counted) until the store
            // answers; the pause keeps a dead store from spinning the workers.
            warn!(error = %why, "object storage failed; the job goes back to the queue");
            tokio::time::sleep(STORAGE_RETRY_PAUSE).await;
            requeue_now(app, id).await
        }
        Stop::FallBackToFile(why) => {
            // A streamed transcode could not finish on its own: once the upload is complete, the
            // job goes through the normal queue from the file on disk. Meanwhile the video waits
            // without output and the slot serves other jobs (a trickling upload must not hold
            // it). An aborted upload is cleaned up by its handler.
            warn!(reason = %why, "streamed transcode stopped; the job will run from the file once the upload completes");
            let Some(g) = growing else {
                return requeue_now(app, id).await;
            };
            drop(slot.take());
            app.wake.notify_waiters();
            wait_for_file(app, id).await?;
            if wait_upload(&g, u64::MAX, Duration::from_secs(24 * 3600)).await == UploadState::Done {
                requeue_now(app, id).await?;
            }
            Ok(())
        }
    }
}

/// Re-queues a job at once and wakes a worker for it.
async fn requeue_now(app: &App, id: &str) -> Result<(), AppError> {
    requeue(app, id, true).await?;
    app.wake.notify_waiters();
    Ok(())
}

/// Shows a streamed video that waits for the rest of its upload as queued, without output. Its
/// job stays claimed (no worker may take it before the file is complete).
async fn wait_for_file(app: &App, id: &str) -> Result<(), AppError> {
    let id2 = id.to_string();
    let rec = app
        .store
        .run(move |s| {
            s.update(&id2, |v| {
                v.status = Status::Queued;
                v.reset_output();
            })
        })
        .await?;
    app.segments.forget(id);
    remove_dir_off_executor(app.media_dir(id)).await;
    remove_published(app, id).await;
    if let Some(r) = rec {
        app.notify(&r);
    }
    Ok(())
}

/// Marks a video failed and removes its job.
pub(crate) async fn fail(app: &App, id: &str, failure: JobFailure) -> Result<(), AppError> {
    let code = failure.code();
    let message = failure.to_string();
    warn!(video_id = %id, code, %message, "job failed");
    let id2 = id.to_string();
    let rec = app
        .store
        .run(move |s| {
            let r = s.update(&id2, |v| {
                v.status = Status::Failed;
                v.playable = false;
                v.error = Some(ErrorInfo { code: code.to_string(), message: message.clone() });
            })?;
            s.finish_job(&id2)?;
            Ok::<_, AppError>(r)
        })
        .await?;
    app.store.flush().await?;
    // Nothing half-made stays published for a failed video.
    remove_dir_off_executor(app.media_dir(id)).await;
    remove_published(app, id).await;
    if let Some(r) = rec {
        app.notify(&r);
        crate::webhooks::emit(app, "video.failed", &r).await;
    }
    Ok(())
}

/// Waits (off the executor) until a streamed upload has `bytes` on disk or has ended.
async fn wait_upload(growing: &Arc<Growing>, bytes: u64, timeout: Duration) -> UploadState {
    let g = growing.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (n, state) = g.wait_beyond(bytes.saturating_sub(1), Duration::from_millis(500));
            if n >= bytes || state != UploadState::Writing || std::time::Instant::now() > deadline {
                return state;
            }
        }
    })
    .await
    .unwrap_or(UploadState::Aborted)
}

/// Puts a job back in the queue from scratch (its partial output removed).
async fn requeue(app: &App, id: &str, forgive_attempt: bool) -> Result<(), AppError> {
    let id2 = id.to_string();
    let rec = app
        .store
        .run(move |s| {
            s.requeue(&id2)?;
            s.update(&id2, |v| {
                v.status = Status::Queued;
                v.reset_output();
                if forgive_attempt {
                    v.attempts = v.attempts.saturating_sub(1);
                }
            })
        })
        .await?;
    app.store.flush().await?;
    app.segments.forget(id);
    remove_dir_off_executor(app.media_dir(id)).await;
    remove_published(app, id).await;
    if let Some(r) = rec {
        app.notify(&r);
    }
    Ok(())
}

/// Removes what a job put in the object store (a failed or re-queued job keeps nothing
/// published: another node would serve it). A failure is logged: the next run's start removes
/// it again before it publishes.
async fn remove_published(app: &App, id: &str) {
    if let Err(e) = app.storage.remove_media(id).await {
        warn!(video_id = %id, error = %e, "cannot remove a job's published output from object storage");
    }
}
