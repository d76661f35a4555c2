//! The worker pool: claims queued jobs from sled, runs them, records the outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, instrument, warn, Instrument};

use super::execute::{execute, JobProgress, Limits};
use crate::app::{remove_dir, remove_dir_off_executor, App};
use crate::config::BackendChoice;
use crate::error::AppError;
use crate::ingest::{Growing, UploadState};
use crate::packaging::{DASH_MPD, HLS_MASTER};
use crate::probe::{self, probe_any, ProbeError};
use crate::store::{ErrorInfo, JobRecord, Manifests, SourceInfo, Status, VideoRecord};
use crate::transcode::ffmpeg::FfmpegTranscoder;
use crate::transcode::gst::GstTranscoder;
use crate::transcode::{TranscodeError, Transcoder};

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
        // A transcode slot first (streaming ingests take them too), then a job.
        let Ok(_permit) = app.slots.clone().acquire_owned().await else { break };
        // The slot may have been freed by a job cancelled for shutdown: claim nothing new then.
        if app.is_shutting_down() {
            break;
        }
        let claimed = app.store.run(|s| s.claim_next()).await;
        match claimed {
            Ok(Some((job, rec))) => {
                app.notify(&rec);
                if let Err(e) = run_job(&app, &job, rec, None).await {
                    error!(video_id = %job.video_id, error = %e, "job bookkeeping failed");
                }
            }
            Ok(None) => {
                drop(_permit);
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

/// Marks a video failed and removes its job.
async fn fail(app: &App, id: &str, code: &str, message: String) -> Result<(), AppError> {
    warn!(video_id = %id, code, %message, "job failed");
    let (code, id2) = (code.to_string(), id.to_string());
    let rec = app
        .store
        .run(move |s| {
            let r = s.update(&id2, |v| {
                v.status = Status::Failed;
                v.playable = false;
                v.error = Some(ErrorInfo { code: code.clone(), message: message.clone() });
            })?;
            s.finish_job(&id2)?;
            Ok(r)
        })
        .await?;
    app.store.flush().await?;
    // Nothing half-made stays published for a failed video.
    remove_dir_off_executor(app.media_dir(id)).await;
    if let Some(r) = rec {
        app.notify(&r);
    }
    Ok(())
}

/// The back ends to try, in order, for a setting.
pub fn backends(choice: BackendChoice) -> Vec<Box<dyn Transcoder>> {
    match choice {
        BackendChoice::Gstreamer => vec![Box::new(GstTranscoder)],
        BackendChoice::Ffmpeg => vec![Box::new(FfmpegTranscoder)],
        BackendChoice::Auto => vec![Box::new(GstTranscoder), Box::new(FfmpegTranscoder)],
    }
}

/// Waits (off the executor) until a streaming upload has `bytes` on disk or has ended.
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

/// A streaming ingest could not finish on its own: once the upload is complete, the job goes
/// through the normal queue from the file on disk. An aborted upload is cleaned up by its handler.
async fn fall_back_to_file(app: &App, id: &str, growing: &Arc<Growing>, why: &str) -> Result<(), AppError> {
    warn!(reason = why, "streaming ingest failed; the job will run from the file once the upload completes");
    if wait_upload(growing, u64::MAX, Duration::from_secs(24 * 3600)).await == UploadState::Done {
        requeue(app, id, true).await?;
        app.wake.notify_waiters();
    }
    Ok(())
}

/// Runs one job; `growing` is set for a streaming ingest (the upload is still arriving).
#[instrument(skip_all, fields(video_id = %job.video_id))]
pub async fn run_job(app: &Arc<App>, job: &JobRecord, rec: VideoRecord, growing: Option<Arc<Growing>>) -> Result<(), AppError> {
    let id = job.video_id.clone();
    let max_attempts = app.config.max_attempts;
    if rec.attempts > max_attempts {
        return fail(app, &id, "too_many_attempts", format!("the job was interrupted {} times; giving up", rec.attempts - 1)).await;
    }
    // A previous run (crash, restart) may have left partial output: start from scratch (and
    // nothing of it stays in the segment cache).
    app.segments.forget(&id);
    let media_dir = app.media_dir(&id);
    let dir2 = media_dir.clone();
    tokio::task::spawn_blocking(move || {
        remove_dir(&dir2)?;
        std::fs::create_dir_all(&dir2)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))??;

    let source = if growing.is_some() { app.upload_dir(&id).join("source.part") } else { app.source_path(&id) };
    if growing.is_none() && !tokio::fs::try_exists(&source).await.unwrap_or(false) {
        // A streamed upload cut off by a shutdown or crash: its record exists, its file never completed.
        remove_dir_off_executor(app.upload_dir(&id)).await;
        return fail(
            app,
            &id,
            "upload_incomplete",
            "the upload did not complete (the server stopped while it was arriving); upload the file again".into(),
        )
        .await;
    }
    if let Some(g) = &growing {
        // Enough of the file for the demuxer to see every stream's header.
        if wait_upload(g, 4 << 20, Duration::from_secs(120)).await == UploadState::Aborted {
            return Ok(());
        }
    }
    let probe_src = source.clone();
    let streaming = growing.is_some();
    let probed = tokio::task::spawn_blocking(move || if streaming { probe::probe_file(&probe_src, 30) } else { probe_any(&probe_src, 30) })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let media = match probed {
        Ok(m) => m,
        Err(e) if growing.is_some() => {
            return fall_back_to_file(app, &id, growing.as_ref().expect("checked"), &e.to_string()).await;
        }
        Err(e) => {
            let code = if matches!(e, ProbeError::Internal(_)) { "probe_failed" } else { e.code() };
            return fail(app, &id, code, e.to_string()).await;
        }
    };
    info!(duration_s = media.duration_s, video = ?media.video, audio = media.audio.is_some(), "probed");
    let (id2, src_info) = (id.clone(), SourceInfo::from_media(&media));
    if let Some(r) = app.store.run(move |s| s.update(&id2, |v| v.source = src_info.clone())).await? {
        app.notify(&r);
    }
    let id2 = id.clone();
    let Some(key) = app.store.run(move |s| s.key(&id2)).await? else {
        return fail(app, &id, "internal_error", "the video's key is missing".into()).await;
    };

    let cancel = Arc::new(AtomicBool::new(false));
    app.running.lock().map_err(|_| AppError::Internal("lock poisoned".into()))?.insert(id.clone(), cancel.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<JobProgress>();
    // Progress reaches the store (and SSE listeners) from here, off the transcoding thread.
    let progress_task = {
        let app = app.clone();
        let id = id.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let id2 = id.clone();
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
                            JobProgress::Playable { renditions } => {
                                v.playable = true;
                                v.renditions = renditions.clone();
                                v.manifests = Some(Manifests { hls: HLS_MASTER.into(), dash: DASH_MPD.into() });
                            }
                        })
                    })
                    .await;
                if let Ok(Some(r)) = res {
                    app.notify(&r);
                }
            }
        })
    };

    let limits =
        Limits { stall_timeout: app.config.stall_timeout, wall_factor: app.config.job_timeout_factor, min_wall: Duration::from_secs(300) };
    let ladder = app.ladder.clone();
    // Streaming ingest is GStreamer-only (the FFmpeg back end reads files).
    let choice = if growing.is_some() { BackendChoice::Gstreamer } else { app.config.backend };
    let growing2 = growing.clone();
    let (src2, dir2, cancel2) = (source.clone(), media_dir.clone(), cancel.clone());
    let scratch = app.upload_dir(&id).join("scratch");
    let outcome = tokio::task::spawn_blocking(move || {
        let mut first_error: Option<TranscodeError> = None;
        let mut last = None;
        for backend in backends(choice) {
            if first_error.is_some() {
                let _ = remove_dir(&dir2);
                let _ = std::fs::create_dir_all(&dir2);
            }
            let mut on_progress = |p: JobProgress| {
                let _ = tx.send(p);
            };
            let res = execute(
                &src2,
                growing2.clone(),
                &dir2,
                &scratch,
                &media,
                &ladder,
                Some(&key),
                backend.as_ref(),
                &limits,
                "/api/time",
                &mut on_progress,
                &cancel2,
            );
            match res {
                Ok(out) => return (backend.name(), Ok(out), first_error),
                Err(e @ TranscodeError::Cancelled) => return (backend.name(), Err(e), first_error),
                Err(e) => {
                    warn!(backend = backend.name(), error = %e, "back end failed");
                    last = Some(backend.name());
                    if first_error.is_none() {
                        first_error = Some(e.clone());
                    }
                    if choice != BackendChoice::Auto {
                        return (backend.name(), Err(e), None);
                    }
                }
            }
        }
        let e = first_error.clone().unwrap_or(TranscodeError::Build("no back end".into()));
        (last.unwrap_or("gstreamer"), Err(e), None)
    })
    .await
    .map_err(|e| AppError::Internal(format!("transcode task panicked: {e}")));
    let _ = progress_task.await;
    app.running.lock().map_err(|_| AppError::Internal("lock poisoned".into()))?.remove(&id);
    let (backend_name, result, fallback) = outcome?;

    let id2 = id.clone();
    let exists = app.store.run(move |s| s.get(&id2)).await?.is_some();
    if !exists {
        // Deleted while running: make sure nothing the pipeline wrote after the delete remains.
        remove_dir_off_executor(media_dir).await;
        remove_dir_off_executor(app.upload_dir(&id)).await;
        return Ok(());
    }
    match result {
        Ok(out) => {
            let id2 = id.clone();
            let reason = fallback.map(|e| e.to_string());
            let rec = app
                .store
                .run(move |s| {
                    let r = s.update(&id2, |v| {
                        v.status = Status::Ready;
                        v.progress = 1.0;
                        v.playable = true;
                        v.renditions = out.renditions.clone();
                        v.manifests = Some(Manifests { hls: HLS_MASTER.into(), dash: DASH_MPD.into() });
                        v.backend = Some(backend_name.to_string());
                        v.fallback_reason = reason.clone();
                        if let Some(src) = v.source.as_mut() {
                            if src.duration_s <= 0.0 {
                                src.duration_s = out.duration_s;
                            }
                        }
                    })?;
                    s.finish_job(&id2)?;
                    Ok(r)
                })
                .await?;
            app.store.flush().await?;
            info!("job ready");
            if let Some(r) = rec {
                app.notify(&r);
            }
            Ok(())
        }
        Err(e) if growing.is_some() && !matches!(e, TranscodeError::Cancelled) => {
            fall_back_to_file(app, &id, growing.as_ref().expect("checked"), &e.to_string()).await
        }
        Err(TranscodeError::Cancelled) => {
            // Shutdown: the job goes back to the queue and runs again from scratch on restart;
            // the interrupted run does not count as an attempt.
            info!("job cancelled; re-queueing it");
            requeue(app, &id, true).await
        }
        Err(e) if e.is_transient() && rec.attempts < max_attempts => {
            // Not the input's fault (killed, stalled): run it again, a bounded number of times.
            warn!(error = %e, attempt = rec.attempts, "transient failure; re-queueing the job");
            requeue(app, &id, false).await
        }
        Err(e) => {
            let id2 = id.clone();
            let b = backend_name.to_string();
            app.store.run(move |s| s.update(&id2, |v| v.backend = Some(b.clone()))).await?;
            fail(app, &id, e.code(), e.to_string()).await
        }
    }
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
                v.progress = 0.0;
                v.playable = false;
                v.images.clear();
                if forgive_attempt {
                    v.attempts = v.attempts.saturating_sub(1);
                }
            })
        })
        .await?;
    app.store.flush().await?;
    app.segments.forget(id);
    remove_dir_off_executor(app.media_dir(id)).await;
    if let Some(r) = rec {
        app.notify(&r);
    }
    Ok(())
}

/// Cancels a running job (delete, shutdown). Returns whether one was running.
pub fn cancel(app: &App, id: &str) -> bool {
    match app.running.lock() {
        Ok(map) => map.get(id).map(|c| c.store(true, Ordering::SeqCst)).is_some(),
        Err(_) => false,
    }
}
