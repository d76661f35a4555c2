//! One broadcast, from the publisher's first media to a finished video: `claim` checks the key
//! and takes a live slot (before the publisher is accepted), `start` records the video and starts
//! the live ladder on the feed, and the broadcast's task packages it as a normal video when the
//! feed ends (the publisher left, was kicked or was disconnected).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{info, warn, Instrument};

use super::{Entry, OnAir, Parked};
use crate::app::{remove_dir_off_executor, App};
use crate::config::BackendChoice;
use crate::error::AppError;
use crate::jobs::failure::JobFailure;
use crate::jobs::runner::{self, JobProgress, JobSpec, Limits};
use crate::jobs::worker;
use crate::model::{ErrorInfo, KeyMaterial, LiveStatus, LiveStream, Status, VideoRecord};
use crate::probe::MediaInfo;
use crate::transcode::gst::GstTranscoder;
use crate::transcode::{ArrivalClock, LiveInput};

/// FLV chunks queued between the publisher's connection and the pipeline (a tag each: about
/// 3 s of 30 fps video with its AAC audio). When it is full the encoder is behind.
const FEED_DEPTH: usize = 256;

/// Why a publisher is refused before anything is recorded.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("unknown stream key")]
    UnknownKey,
    #[error("the stream is already live")]
    AlreadyLive,
    #[error("no live slot is free (CASCADE_MAX_LIVE)")]
    NoSlot,
    #[error("the stream's owner is disabled")]
    OwnerDisabled,
    #[error("{0}")]
    Internal(String),
}

/// A publisher allowed on a stream.
pub enum Claim {
    /// A new broadcast, before it starts.
    New(NewBroadcast),
    /// The publisher of a broadcast in its reconnect window came back: its feed goes on.
    Resume { stream: LiveStream, parked: Parked, kick: Arc<tokio::sync::Notify> },
}

/// A new broadcast's stream, its live slot and its place on air.
pub struct NewBroadcast {
    pub stream: LiveStream,
    _slot: OwnedSemaphorePermit,
    pub air: OnAir,
}

/// Equal bytes, compared in constant time.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a stream key and takes the stream on air with a live slot (off the executor).
pub async fn claim(app: &Arc<App>, key: &str) -> Result<Claim, Refusal> {
    let (app2, key) = (app.clone(), key.to_string());
    tokio::task::spawn_blocking(move || claim_blocking(&app2, &key)).await.map_err(|e| Refusal::Internal(e.to_string()))?
}

/// `claim` for a thread that may block (the SRT listener's key check runs on libsrt's thread).
pub fn claim_blocking(app: &Arc<App>, key: &str) -> Result<Claim, Refusal> {
    let id = app.live.stream_for_key(key).ok_or(Refusal::UnknownKey)?;
    let store = app.store.blocking();
    let internal = |e: crate::store::StoreError| Refusal::Internal(e.to_string());
    let stream = store.live(&id).map_err(internal)?;
    let owner = match &stream {
        Some(l) => store.user(&l.owner).map_err(internal)?,
        None => None,
    };
    let stream = stream.filter(|s| ct_eq(s.key.as_bytes(), key.as_bytes())).ok_or(Refusal::UnknownKey)?;
    if owner.is_none_or(|u| u.disabled) {
        return Err(Refusal::OwnerDisabled);
    }
    match app.live.enter(&id) {
        Entry::Busy => Err(Refusal::AlreadyLive),
        Entry::Resume(parked, kick) => Ok(Claim::Resume { stream, parked, kick }),
        Entry::New(air) => {
            let slot = app.live.slots.clone().try_acquire_owned().map_err(|_| Refusal::NoSlot)?;
            Ok(Claim::New(NewBroadcast { stream, _slot: slot, air }))
        }
    }
}

/// The publisher of a broadcast left (closed, went silent, broke the protocol): the broadcast
/// waits its reconnect window (the stream's, else `CASCADE_LIVE_RECONNECT_S`) for it to come back
/// with the same key, then ends.
pub async fn park(app: &Arc<App>, stream_id: &str, feed: Feed, next_ts: u32) {
    let window = feed.reconnect;
    if window.is_zero() {
        return;
    }
    let Some(generation) = app.live.park(stream_id, feed, next_ts) else { return };
    set_status(app, stream_id, LiveStatus::Reconnecting).await;
    info!(stream_id, window_s = window.as_secs(), "the publisher left; the broadcast waits for it to come back");
    let (app, sid) = (app.clone(), stream_id.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(window).await;
        if app.live.expire(&sid, generation).is_some() {
            info!(stream_id = %sid, "the reconnect window is over; the broadcast ends");
        }
    });
}

/// Records a stream's status (live again after a reconnect, reconnecting).
pub async fn set_status(app: &Arc<App>, stream_id: &str, status: LiveStatus) {
    let sid = stream_id.to_string();
    let r = app
        .store
        .run(move |s| {
            s.update_live(&sid, |l| {
                // A broadcast that has ended meanwhile stays idle.
                if l.status != LiveStatus::Idle {
                    l.status = status;
                }
            })
        })
        .await;
    if let Err(e) = r {
        warn!(stream_id, error = %e, "cannot record the stream's status");
    }
}

/// The publisher's side of a running broadcast.
pub struct Feed {
    pub video_id: String,
    /// FLV bytes for the pipeline; closing it ends the broadcast.
    pub tx: mpsc::Sender<Bytes>,
    /// Told of every chunk sent (see `ArrivalClock`).
    pub clock: Arc<ArrivalClock>,
    /// Set before closing `tx` when the broadcast must fail instead of finishing.
    pub failure: Arc<std::sync::Mutex<Option<JobFailure>>>,
    /// How long the broadcast waits for its publisher to come back, as set when it started.
    pub reconnect: std::time::Duration,
}

/// The reconnect window of a stream's broadcasts: its own setting, else the server's.
pub fn reconnect_window(app: &App, stream: &LiveStream) -> std::time::Duration {
    stream.reconnect_window_s.map_or(app.config.live_reconnect, |s| std::time::Duration::from_secs(s.into()))
}

/// Records the broadcast's video, marks the stream live and starts the live ladder on a new feed.
/// `caps` are those of the bytes the feed will carry (`video/x-flv` from RTMP, `video/mpegts`
/// from SRT).
/// `first_media` is when the publisher's first media arrived.
pub async fn start(
    app: &Arc<App>,
    mut claim: NewBroadcast,
    media: MediaInfo,
    caps: &'static str,
    first_media: chrono::DateTime<chrono::Utc>,
) -> Result<Feed, AppError> {
    let stream = claim.stream.clone();
    let video_id = uuid::Uuid::new_v4().to_string();
    let rec = VideoRecord {
        status: Status::Processing,
        attempts: 1,
        owner: Some(stream.owner.clone()),
        visibility: stream.visibility,
        live: true,
        backend: Some("gstreamer".into()),
        source: media.source_info(),
        ..VideoRecord::new(&video_id, Some(stream.title.clone()), None, 0)
    };
    let key = KeyMaterial::generate();
    let (r2, k2, sid, vid) = (rec.clone(), key.clone(), stream.id.clone(), video_id.clone());
    let stream = app
        .store
        .run(move |s| {
            s.create_broadcast(&r2, &k2)?;
            let l = s.update_live(&sid, |l| {
                l.status = LiveStatus::Live;
                l.video_id = Some(vid.clone());
                l.last_error = None;
                l.dropped_renditions.clear();
            })?;
            s.flush()?;
            Ok::<_, AppError>(l)
        })
        .await?
        .unwrap_or(stream);
    // The broadcast's copy of its stream is the record as it went live (this broadcast's video,
    // no dropped renditions yet), for `live.ended` if the stream is deleted meanwhile.
    claim.stream = stream.clone();
    app.notify(&rec);
    crate::webhooks::emit(app, "video.created", &rec).await;
    crate::webhooks::emit_live(app, "live.started", &stream).await;
    info!(stream_id = %stream.id, video_id = %video_id, media = ?media.video, audio = media.audio.is_some(), "broadcast started");

    let reconnect = reconnect_window(app, &stream);
    let (tx, rx) = mpsc::channel(FEED_DEPTH);
    let clock = Arc::new(ArrivalClock::since(first_media));
    let spec = JobSpec {
        input: app.upload_dir(&video_id).join("live"),
        growing: None,
        live: Some(Arc::new(LiveInput { caps, rx: std::sync::Mutex::new(Some(rx)), first_media, clock: clock.clone() })),
        ll: stream.low_latency.unwrap_or(true).then(|| app.live.ll.open(&video_id)),
        out_dir: app.media_dir(&video_id),
        scratch_dir: app.upload_dir(&video_id).join("scratch"),
        ladder: app.ladder.for_live().capped(stream.max_height),
        key: Some(key),
        backend: BackendChoice::Gstreamer,
        // No data comes during a reconnect window: that is not a stall. The broadcast is ended at
        // CASCADE_LIVE_MAX_S by disconnecting its publisher (it is then packaged as a video); the
        // pipeline's own limit, which fails the job, is only a backstop behind that.
        limits: Limits {
            stall_timeout: app.config.stall_timeout + reconnect,
            wall_factor: 0.0,
            min_wall: app.config.live_max + reconnect + std::time::Duration::from_secs(600),
        },
        keep_work: false,
        utc_timing_url: "/api/time".into(),
        publish: app.storage.new_publisher(&video_id, &app.media_dir(&video_id)),
    };
    let failure = Arc::new(std::sync::Mutex::new(None));
    let span = tracing::info_span!("broadcast", stream_id = %stream.id, video_id = %video_id);
    tokio::spawn(run(app.clone(), claim, spec, media, video_id.clone(), failure.clone()).instrument(span));
    Ok(Feed { video_id, tx, clock, failure, reconnect })
}

/// Runs the live ladder until the feed ends, then records the video as ready (or failed) and the
/// stream as idle.
async fn run(
    app: Arc<App>,
    claim: NewBroadcast,
    spec: JobSpec,
    media: MediaInfo,
    id: String,
    failure: Arc<std::sync::Mutex<Option<JobFailure>>>,
) {
    app.metrics.live_streams.inc();
    // CASCADE_LIVE_MAX_S: the publisher is disconnected and the broadcast ends as a video.
    let limit = {
        let (kick, max) = (claim.air.kick.clone(), app.config.live_max);
        tokio::spawn(async move {
            tokio::time::sleep(max).await;
            info!(max_s = max.as_secs(), "the broadcast reached CASCADE_LIVE_MAX_S; it ends");
            kick.notify_one();
        })
    };
    let cancel = Arc::new(AtomicBool::new(false));
    if let Ok(mut r) = app.running.lock() {
        r.insert(id.clone(), cancel.clone());
    }
    let (ptx, prx) = mpsc::unbounded_channel::<JobProgress>();
    let (stx, srx) = mpsc::unbounded_channel::<LiveNote>();
    let publish = spec.publish.clone();
    let progress = tokio::spawn(worker::record_progress(app.clone(), id.clone(), prx, publish.clone()));
    let speed = tokio::spawn(record_live(app.clone(), claim.stream.id.clone(), srx).in_current_span());
    let result = tokio::task::spawn_blocking(move || {
        runner::execute(
            &spec,
            &media,
            &GstTranscoder,
            &mut |p| match p {
                JobProgress::Position(s) => {
                    let _ = stx.send(LiveNote::Position(s));
                }
                JobProgress::RungDropped { rung, renditions } => {
                    let _ = stx.send(LiveNote::Dropped(rung.clone()));
                    let _ = ptx.send(JobProgress::RungDropped { rung, renditions });
                }
                p => {
                    let _ = ptx.send(p);
                }
            },
            &cancel,
        )
    })
    .await;
    limit.abort();
    let _ = progress.await;
    let _ = speed.await;
    // Object storage: the video is ready when the bucket has all of it (a run without output
    // stops publishing first). Until then this node serves it from its disk, as a running job.
    let published = match (&publish, &result) {
        (Some(p), Ok(Ok(_))) => p.finish().await,
        (Some(p), _) => {
            p.stop().await;
            Ok(())
        }
        (None, _) => Ok(()),
    };
    // Its low-latency playlists are final now (on disk when the job succeeded); the waiters are
    // answered.
    app.live.ll.close(&id);
    if let Ok(mut r) = app.running.lock() {
        r.remove(&id);
    }
    let id2 = id.clone();
    let exists = app.store.run(move |s| s.get(&id2)).await.ok().flatten().is_some();
    let failed = failure.lock().ok().and_then(|mut f| f.take());
    let mut last_error = None;
    if !exists {
        info!("broadcast ended: its video was deleted");
        remove_dir_off_executor(app.media_dir(&id)).await;
        app.storage.remove_video(&id).await;
    } else {
        let outcome = match (failed, result) {
            (Some(f), _) => Err(f),
            (None, Ok(Ok(out))) => Ok(out),
            (None, Ok(Err(e))) => Err(e.into()),
            (None, Err(e)) => Err(JobFailure::Transcode(crate::transcode::TranscodeError::Runtime(format!("the live task failed: {e}")))),
        };
        // Object storage: the video is ready when the bucket has all of it.
        let outcome = match (outcome, published) {
            (Ok(_), Err(e)) => Err(JobFailure::Transcode(crate::transcode::TranscodeError::Storage(e))),
            (o, _) => o,
        };
        let done = match outcome {
            Ok(out) => {
                info!(duration_s = out.duration_s, "broadcast ended; the video is ready");
                worker::record_ready(&app, &id, "gstreamer", None, out).await
            }
            Err(f) => {
                warn!(code = f.code(), error = %f, "broadcast failed");
                last_error = Some(ErrorInfo { code: f.code().into(), message: f.to_string() });
                worker::fail(&app, &id, f).await
            }
        };
        if let Err(e) = done {
            warn!(error = %e, "cannot record the end of the broadcast");
        }
    }
    remove_dir_off_executor(app.upload_dir(&id)).await;
    // Off air in the metrics before the stream reads idle.
    app.metrics.live_streams.dec();
    let (sid, vid) = (claim.stream.id.clone(), id.clone());
    let stream = app
        .store
        .run(move |s| {
            s.end_broadcast(&vid)?;
            let l = s.update_live(&sid, |l| {
                l.status = LiveStatus::Idle;
                l.encoder_speed = None;
                if last_error.is_some() {
                    l.last_error = last_error.clone();
                }
            })?;
            s.flush()?;
            Ok::<_, AppError>(l)
        })
        .await;
    match stream {
        Ok(Some(l)) => crate::webhooks::emit_live(&app, "live.ended", &l).await,
        // The stream was deleted (which ended the broadcast): its owner still hears of the end.
        Ok(None) => {
            let l = LiveStream { status: LiveStatus::Idle, video_id: Some(id.clone()), encoder_speed: None, ..claim.stream.clone() };
            crate::webhooks::emit_live(&app, "live.ended", &l).await;
        }
        Err(e) => warn!(error = %e, "cannot record the stream as idle"),
    }
    drop(claim);
}

/// How often the stream's `encoder_speed` is refreshed.
const SPEED_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What the live ladder tells about the broadcast.
enum LiveNote {
    /// Seconds of media encoded.
    Position(f64),
    /// A rung dropped because the ladder could not keep up.
    Dropped(String),
}

/// Keeps the stream's `encoder_speed` (seconds of media encoded per second, over the last
/// `SPEED_EVERY`; 1.0 when the ladder keeps up with the publisher) and `dropped_renditions`
/// while the broadcast runs. During a reconnect window nothing is encoded: the speed drops to 0
/// there, which is true.
async fn record_live(app: Arc<App>, stream_id: String, mut rx: mpsc::UnboundedReceiver<LiveNote>) {
    let mut window: Option<(std::time::Instant, f64)> = None;
    while let Some(note) = rx.recv().await {
        let pos = match note {
            LiveNote::Position(pos) => pos,
            LiveNote::Dropped(rung) => {
                let sid = stream_id.clone();
                let r = app.store.run(move |s| s.update_live(&sid, |l| l.dropped_renditions.push(rung.clone()))).await;
                if let Err(e) = r {
                    warn!(error = %e, "cannot record the dropped rendition");
                }
                continue;
            }
        };
        let now = std::time::Instant::now();
        let Some((since, from)) = window else {
            window = Some((now, pos));
            continue;
        };
        let elapsed = now.duration_since(since);
        if elapsed < SPEED_EVERY {
            continue;
        }
        let speed = ((pos - from) / elapsed.as_secs_f64() * 100.0).round() / 100.0;
        window = Some((now, pos));
        let sid = stream_id.clone();
        let r = app.store.run(move |s| s.update_live(&sid, |l| l.encoder_speed = Some(speed))).await;
        if let Err(e) = r {
            warn!(error = %e, "cannot record the encoder speed");
        }
        if speed < 0.9 {
            warn!(speed, "the live ladder runs slower than real time");
        }
    }
}
