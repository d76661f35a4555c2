//! The SRT listener (`CASCADE_SRT_BIND`): callers send MPEG-TS (H.264 or HEVC video, AAC or Opus
//! audio) with their stream key as the SRT `streamid` (`srt://HOST:8890?streamid=KEY`).
//!
//! GStreamer 1.22's `srtsrc` in listener mode is the server. The key is checked in its
//! `caller-connecting` signal, inside libsrt's handshake, so a wrong key, a stream already live or
//! no free live slot is rejected before any data is accepted. In 1.22 one `srtsrc` serves one
//! caller at a time (its listener thread reads only the first caller), so Cascade takes one SRT
//! publisher at a time and rejects a second while one is connected; `keep-listening` re-opens the
//! port when the caller leaves.
//!
//! MPEG-TS carries no metadata block like RTMP's: the first bytes are held until the probe
//! (GStreamer's discoverer, as for uploads) has seen the streams, then the broadcast starts on
//! them and the rest follows. An SRT broadcast ends when its caller leaves (the reconnect window
//! is RTMP's: a new MPEG-TS caller starts its own clock, which the FLV rebasing cannot join).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gio::prelude::*;
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

use super::broadcast::{self, Claim, Feed, NewBroadcast};
use crate::app::App;
use crate::jobs::failure::JobFailure;
use crate::probe::{self, init_gstreamer, MediaInfo};

/// MPEG-TS held for the probe: enough for the demuxer to see every stream and a keyframe.
const PROBE_BYTES: usize = 1 << 20;
/// At most this long after the first byte before probing what has come.
const PROBE_WAIT: Duration = Duration::from_secs(3);
/// A caller that sends nothing this long is disconnected.
const SILENCE: Duration = Duration::from_secs(10);
/// How long a chunk may wait for room in the pipeline's feed.
const OVERLOAD_WAIT: Duration = Duration::from_secs(10);
/// Chunks between the listener and a session (appsink samples of 4 KiB and up).
const SESSION_DEPTH: usize = 1024;

/// What a byte-stream publisher sends: a container the broadcast's pipeline demuxes, probed
/// before the broadcast starts.
pub(super) struct Container {
    /// The caps of the bytes (the pipeline's `appsrc`).
    pub caps: &'static str,
    /// The container's name for a record whose probe failed.
    pub name: &'static str,
    /// Who sends it, for messages ("the SRT caller").
    pub who: &'static str,
    /// How long before its first byte arrived its first media was captured.
    pub lead: Duration,
}

/// MPEG-TS from an SRT caller.
const MPEG_TS: Container =
    Container { caps: "video/mpegts,systemstream=true", name: "mpegts", who: "the SRT caller", lead: Duration::ZERO };

/// The listener's shared state: the session receiving data now, and a request to drop the caller.
struct Lobby {
    session: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Set to disconnect the caller (kick, failure, flood): the listener restarts.
    restart: AtomicBool,
}

/// Starts the listener on its own thread; Err when GStreamer lacks `srtsrc` or cannot listen.
pub fn serve(app: Arc<App>, addr: SocketAddr) -> Result<(), String> {
    init_gstreamer()?;
    let rt = tokio::runtime::Handle::current();
    let lobby = Arc::new(Lobby { session: Mutex::new(None), restart: AtomicBool::new(false) });
    let pipeline = build(&app, &rt, &lobby, addr)?;
    pipeline.set_state(gst::State::Playing).map_err(|e| format!("the SRT listener did not start: {e}"))?;
    std::thread::Builder::new().name("srt-listener".into()).spawn(move || watch(app, pipeline, lobby)).map_err(|e| e.to_string())?;
    Ok(())
}

fn build(app: &Arc<App>, rt: &tokio::runtime::Handle, lobby: &Arc<Lobby>, addr: SocketAddr) -> Result<gst::Pipeline, String> {
    let src = gst::ElementFactory::make("srtsrc")
        .property_from_str("mode", "listener")
        .property("localaddress", addr.ip().to_string())
        .property("localport", u32::from(addr.port()))
        .property("keep-listening", true)
        .property("authentication", true)
        .build()
        .map_err(|e| format!("srtsrc (gst-plugins-bad) is missing: {e}"))?;
    let sink = gst_app::AppSink::builder().sync(false).max_buffers(256).build();
    let p = gst::Pipeline::with_name("cascade-srt");
    p.add_many([&src, sink.upcast_ref()]).map_err(|e| e.to_string())?;
    src.link(&sink).map_err(|e| e.to_string())?;

    // The key check, on libsrt's thread during the handshake: no await, no data yet.
    let (app2, rt2, lobby2) = (app.clone(), rt.clone(), lobby.clone());
    src.connect("caller-connecting", false, move |args| {
        let peer = args
            .get(1)
            .and_then(|a| a.get::<gio::SocketAddress>().ok())
            .and_then(|a| a.downcast::<gio::InetSocketAddress>().ok())
            .map(|a| format!("{}:{}", a.address(), a.port()));
        let key = args.get(2).and_then(|a| a.get::<Option<String>>().ok()).flatten().unwrap_or_default();
        let accepted = admit(&app2, &rt2, &lobby2, &key, peer.as_deref().unwrap_or("?"));
        Some(accepted.to_value())
    });
    let lobby3 = lobby.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else { return Ok(gst::FlowSuccess::Ok) };
                let Ok(map) = buffer.map_readable() else { return Ok(gst::FlowSuccess::Ok) };
                let tx = lobby3.session.lock().ok().and_then(|s| s.clone());
                if let Some(tx) = tx {
                    // Back-pressure: the session's feed is bounded; a session that has ended drops
                    // its receiver and this returns at once.
                    if tx.blocking_send(Bytes::copy_from_slice(map.as_slice())).is_err() {
                        lobby3.restart.store(true, Ordering::SeqCst);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(p)
}

/// Decides on a caller: a known key of a stream that is not on air, with a free live slot, and
/// no other SRT caller connected. On yes, its session starts.
fn admit(app: &Arc<App>, rt: &tokio::runtime::Handle, lobby: &Arc<Lobby>, key: &str, peer: &str) -> bool {
    let Ok(mut current) = lobby.session.lock() else { return false };
    if current.as_ref().is_some_and(|tx| !tx.is_closed()) {
        warn!(peer, "SRT caller rejected: one SRT publisher at a time (GStreamer 1.22's srtsrc)");
        return false;
    }
    let claim = match broadcast::claim_blocking(app, key) {
        Ok(Claim::New(c)) => c,
        Ok(Claim::Resume { stream, parked, .. }) => {
            // An RTMP broadcast waiting for its publisher: an SRT caller cannot continue its FLV
            // timeline. That broadcast ends; the caller may connect again once it has.
            drop(parked);
            warn!(peer, stream_id = %stream.id, "SRT caller rejected: the stream's RTMP broadcast is ending; connect again");
            return false;
        }
        Err(refusal) => {
            warn!(peer, reason = %refusal, "SRT caller rejected");
            return false;
        }
    };
    info!(peer, stream_id = %claim.stream.id, "SRT caller accepted");
    let (tx, rx) = mpsc::channel(SESSION_DEPTH);
    *current = Some(tx);
    lobby.restart.store(false, Ordering::SeqCst);
    let span = tracing::info_span!("srt", peer = %peer, stream_id = %claim.stream.id);
    rt.spawn(session(app.clone(), lobby.clone(), claim, rx).instrument(span));
    true
}

/// Watches the listener: a caller that left ends its session; a restart request drops the caller.
fn watch(app: Arc<App>, pipeline: gst::Pipeline, lobby: Arc<Lobby>) {
    let Some(bus) = pipeline.bus() else { return };
    while !app.is_shutting_down() {
        if lobby.restart.swap(false, Ordering::SeqCst) {
            end_session(&lobby);
            let _ = pipeline.set_state(gst::State::Null);
            if let Err(e) = pipeline.set_state(gst::State::Playing) {
                warn!(error = %e, "the SRT listener did not restart");
            }
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else { continue };
        match msg.view() {
            gst::MessageView::Element(e) if e.structure().is_some_and(|s| s.name() == "connection-removed") => {
                info!("SRT caller left");
                end_session(&lobby);
            }
            gst::MessageView::Eos(_) => {
                end_session(&lobby);
                let _ = pipeline.set_state(gst::State::Null);
                let _ = pipeline.set_state(gst::State::Playing);
            }
            gst::MessageView::Error(e) => {
                warn!(error = %e.error(), debug = ?e.debug(), "SRT listener error; restarting it");
                end_session(&lobby);
                let _ = pipeline.set_state(gst::State::Null);
                std::thread::sleep(Duration::from_millis(500));
                let _ = pipeline.set_state(gst::State::Playing);
            }
            _ => {}
        }
    }
    end_session(&lobby);
    let _ = pipeline.set_state(gst::State::Null);
}

fn end_session(lobby: &Lobby) {
    if let Ok(mut s) = lobby.session.lock() {
        s.take();
    }
}

/// One caller: probe, start the broadcast, feed it until the caller leaves or must go.
async fn session(app: Arc<App>, lobby: Arc<Lobby>, claim: NewBroadcast, mut rx: mpsc::Receiver<Bytes>) {
    let kick = claim.air.kick.clone();
    let result = tokio::select! {
        r = feed(&app, claim, &mut rx, &MPEG_TS) => r,
        _ = kick.notified() => Err("the stream was deleted".to_string()),
    };
    match result {
        Ok(()) => info!("SRT broadcast ends: the caller left"),
        Err(e) => {
            warn!(reason = %e, "SRT caller disconnected");
            lobby.restart.store(true, Ordering::SeqCst);
        }
    }
}

/// Probes the first bytes, starts the broadcast, and forwards the rest. `Ok` when the publisher
/// left (its channel closed).
pub(super) async fn feed(app: &Arc<App>, claim: NewBroadcast, rx: &mut mpsc::Receiver<Bytes>, c: &Container) -> Result<(), String> {
    let mut held: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    let mut first: Option<Instant> = None;
    while size < PROBE_BYTES && first.is_none_or(|t| t.elapsed() < PROBE_WAIT) {
        match tokio::time::timeout(SILENCE, rx.recv()).await {
            Ok(Some(b)) => {
                first.get_or_insert_with(Instant::now);
                size += b.len();
                held.push(b);
            }
            Ok(None) if held.is_empty() => return Ok(()),
            Ok(None) => break,
            Err(_) => return Err(format!("silent for {} s", SILENCE.as_secs())),
        }
    }
    let media = probe_held(app, &held).await;
    let (media, failure) = match media {
        Ok(m) if m.video.is_some() => (m, None),
        Ok(m) => (m, Some(JobFailure::LiveNoVideo(format!("{} sent no video", c.who)))),
        Err(e) => (
            MediaInfo { duration_s: 0.0, container: Some(c.name.into()), video: None, audio: None },
            Some(JobFailure::LiveCodec(format!("{}'s stream cannot be decoded: {e}", c.who))),
        ),
    };
    let media = MediaInfo { duration_s: 0.0, ..media };
    let since_first = first.map_or(Duration::ZERO, |t| t.elapsed()) + c.lead;
    let first_media = chrono::Utc::now() - chrono::Duration::from_std(since_first).unwrap_or_default();
    let feed = broadcast::start(app, claim, media, c.caps, first_media).await.map_err(|e| e.to_string())?;
    if let Some(f) = failure {
        let message = f.to_string();
        if let Ok(mut slot) = feed.failure.lock() {
            *slot = Some(f);
        }
        return Err(message);
    }
    let max = app.config.live_max_kbps * 125 * 5;
    let mut window = (Instant::now(), 0u64);
    for b in held {
        send(app, &feed, b, &mut window, max).await?;
    }
    loop {
        match tokio::time::timeout(SILENCE, rx.recv()).await {
            Ok(Some(b)) => send(app, &feed, b, &mut window, max).await?,
            Ok(None) => return Ok(()),
            Err(_) => return Err(format!("silent for {} s", SILENCE.as_secs())),
        }
    }
}

/// One chunk into the pipeline, counted against the bit rate cap.
async fn send(app: &App, feed: &Feed, b: Bytes, window: &mut (Instant, u64), max: u64) -> Result<(), String> {
    app.metrics.live_ingest_bytes.inc_by(b.len() as u64);
    if window.0.elapsed() >= Duration::from_secs(5) {
        *window = (Instant::now(), 0);
    }
    window.1 += b.len() as u64;
    if window.1 > max {
        return Err(format!("bit rate over CASCADE_LIVE_MAX_KBPS ({} kbit/s)", app.config.live_max_kbps));
    }
    feed.clock.arrived();
    match tokio::time::timeout(OVERLOAD_WAIT, feed.tx.send(b)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the broadcast's pipeline ended".into()),
        Err(_) => Err(format!("the encoder could not keep up for {} s", OVERLOAD_WAIT.as_secs())),
    }
}

/// What the held MPEG-TS contains, from a scratch file probed as uploads are.
async fn probe_held(app: &App, held: &[Bytes]) -> Result<MediaInfo, String> {
    let dir = app.config.data_dir.join("uploads");
    let path = dir.join(format!("srt-probe-{}.ts", uuid::Uuid::new_v4()));
    let data: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
    tokio::task::spawn_blocking(move || {
        let r =
            std::fs::write(&path, &data).map_err(|e| e.to_string()).and_then(|_| probe::probe_file(&path, 10).map_err(|e| e.to_string()));
        let _ = std::fs::remove_file(&path);
        r
    })
    .await
    .map_err(|e| e.to_string())?
}
