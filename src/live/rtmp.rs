//! The RTMP listener (`CASCADE_RTMP_BIND`): publishers connect to app `live` and publish with
//! their stream key as the stream name. The protocol is rml_rtmp's `ServerSession`, which is
//! sans-IO: this file owns the socket, so every wait has a deadline and every byte is counted.
//!
//! A connection: handshake (5 s) → `connect` to app `live` → `publish` with a key, checked before
//! it is accepted (`broadcast::claim`; a wrong key, a stream already live or no free live slot is
//! rejected and the connection closed, nothing recorded) → media. The broadcast starts once the
//! stream's metadata (video size, frame rate) and its first video arrived; from then each audio
//! or video message goes to the pipeline as an FLV tag. The connection ends on unpublish, close,
//! 10 s without a byte, a bit rate over `CASCADE_LIVE_MAX_KBPS`, an encoder that stays behind,
//! a protocol error, or a kick (the stream was deleted); the broadcast then ends as a video.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::{info, warn, Instrument};

use super::broadcast::{self, Claim, Feed, NewBroadcast, Refusal};
use super::flv;
use crate::app::App;
use crate::jobs::failure::JobFailure;
use crate::probe::{AudioInfo, MediaInfo, VideoInfo};

/// The RTMP application publishers connect to.
pub const APP_NAME: &str = "live";
/// Connections at once (publishers, and whatever else connects).
const MAX_CONNECTIONS: usize = 64;
/// The handshake must be over within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection must have published within this.
const PUBLISH_WITHIN: Duration = Duration::from_secs(10);
/// A publisher that sends nothing this long is disconnected.
const SILENCE: Duration = Duration::from_secs(10);
/// A publisher whose first video has not come this long after publishing fails with `no_video`.
const VIDEO_WITHIN: Duration = Duration::from_secs(5);
/// How long a tag may wait for room in the pipeline's feed before the encoder counts as unable
/// to keep up.
const OVERLOAD_WAIT: Duration = Duration::from_secs(10);
/// Bytes held before the broadcast starts (the metadata and first video should come at once).
const MAX_PENDING_BYTES: usize = 8 << 20;
/// The window over which the bit rate cap is measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("the publisher closed the connection")]
    Eof,
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("refused: unknown application {0:?} (publish to rtmp://HOST:PORT/live/KEY)")]
    BadApp(String),
    #[error("did not publish within {} s", PUBLISH_WITHIN.as_secs())]
    NoPublish,
    #[error("silent for {} s", SILENCE.as_secs())]
    Silent,
    #[error("did not read what the server sent for {} s", SILENCE.as_secs())]
    NotReading,
    #[error("bit rate over CASCADE_LIVE_MAX_KBPS ({0} kbit/s)")]
    TooFast(u64),
    #[error("the encoder could not keep up for {} s", OVERLOAD_WAIT.as_secs())]
    Overloaded,
    #[error("the broadcast's pipeline ended")]
    PipelineEnded,
    #[error("the stream was deleted")]
    Kicked,
    #[error("no usable metadata (onMetaData with width and height) before the first video")]
    NoMetadata,
    #[error("the broadcast failed: {0}")]
    Failed(String),
    #[error("the broadcast could not start: {0}")]
    Start(String),
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds the listener (at start-up, so a taken port stops the service with a clear error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts publishers until the service stops.
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    let conns = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if app.is_shutting_down() {
            return;
        }
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            warn!(%peer, "RTMP connection refused: {MAX_CONNECTIONS} connections already open");
            continue;
        };
        let app = app.clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                let mut conn = Connection::new(app.clone());
                let result = conn.run(sock).await;
                let video_id = conn.feed.as_ref().map(|f| f.video_id.clone()).unwrap_or_default();
                match &result {
                    Ok(()) | Err(Closed::Eof) => info!(%video_id, "RTMP publisher left"),
                    Err(e) => warn!(%video_id, reason = %e, "RTMP connection closed"),
                }
                // A publisher that left may come back within the window; a deleted stream, a
                // failed broadcast or a dead pipeline end now.
                let ends_now = matches!(result, Err(Closed::Kicked | Closed::Failed(_) | Closed::PipelineEnded | Closed::Start(_)));
                if let (Some(feed), Some(sid)) = (conn.feed.take(), conn.stream_id.clone()) {
                    if !ends_now {
                        broadcast::park(&app, &sid, feed, conn.timeline.next()).await;
                    }
                }
            }
            .instrument(tracing::info_span!("rtmp", %peer)),
        );
    }
}

/// One connection's state.
struct Connection {
    app: Arc<App>,
    /// A new broadcast allowed to start, until it starts.
    claim: Option<NewBroadcast>,
    stream_id: Option<String>,
    /// Signals a kick while the stream is on air.
    kick: Option<Arc<Notify>>,
    published_at: Option<Instant>,
    metadata: Option<StreamMetadata>,
    /// Media that came before the broadcast could start: (tag type, publisher ms, body).
    pending: Vec<(u8, u32, Bytes)>,
    pending_bytes: usize,
    /// When the first media message arrived.
    first_media: Option<chrono::DateTime<chrono::Utc>>,
    feed: Option<Feed>,
    timeline: flv::Timeline,
    window: (Instant, u64),
}

impl Connection {
    fn new(app: Arc<App>) -> Connection {
        Connection {
            app,
            claim: None,
            stream_id: None,
            kick: None,
            published_at: None,
            metadata: None,
            pending: Vec::new(),
            pending_bytes: 0,
            first_media: None,
            feed: None,
            timeline: flv::Timeline::default(),
            window: (Instant::now(), 0),
        }
    }

    async fn run(&mut self, mut sock: TcpStream) -> Result<(), Closed> {
        let _ = sock.set_nodelay(true);
        let mut buf = vec![0u8; 64 * 1024];
        let rest = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut sock, &mut buf))
            .await
            .map_err(|_| Closed::Handshake(format!("not done within {} s", HANDSHAKE_TIMEOUT.as_secs())))??;
        let (mut session, init) = ServerSession::new(ServerSessionConfig::new()).map_err(|e| Closed::Protocol(e.to_string()))?;
        self.handle(&mut session, &mut sock, init).await?;
        let first = session.handle_input(&rest).map_err(|e| Closed::Protocol(e.to_string()))?;
        self.handle(&mut session, &mut sock, first).await?;
        let connected = Instant::now();
        loop {
            if self.published_at.is_none() && connected.elapsed() > PUBLISH_WITHIN {
                return Err(Closed::NoPublish);
            }
            let kick = self.kick.clone();
            let n = tokio::select! {
                r = tokio::time::timeout(SILENCE, sock.read(&mut buf)) => r.map_err(|_| Closed::Silent)??,
                _ = async { match kick { Some(k) => k.notified().await, None => std::future::pending().await } } => return Err(Closed::Kicked),
            };
            if n == 0 {
                return Err(Closed::Eof);
            }
            self.count(n)?;
            let results = session.handle_input(&buf[..n]).map_err(|e| Closed::Protocol(e.to_string()))?;
            if self.handle(&mut session, &mut sock, results).await? {
                return Ok(());
            }
            self.check_video_deadline().await?;
        }
    }

    /// Counts received bytes against the bit rate cap.
    fn count(&mut self, n: usize) -> Result<(), Closed> {
        if self.feed.is_some() {
            self.app.metrics.live_ingest_bytes.inc_by(n as u64);
        }
        if self.window.0.elapsed() >= RATE_WINDOW {
            self.window = (Instant::now(), 0);
        }
        self.window.1 += n as u64;
        let max = self.app.config.live_max_kbps;
        if self.window.1 > max * 125 * RATE_WINDOW.as_secs() {
            return Err(Closed::TooFast(max));
        }
        Ok(())
    }

    /// Acts on what the session produced: answers go out in order, events are handled (which may
    /// produce more answers). Returns true when the publisher unpublished.
    async fn handle(
        &mut self,
        session: &mut ServerSession,
        sock: &mut TcpStream,
        results: Vec<ServerSessionResult>,
    ) -> Result<bool, Closed> {
        let mut todo = std::collections::VecDeque::from(results);
        while let Some(r) = todo.pop_front() {
            let ServerSessionResult::RaisedEvent(ev) = r else {
                if let ServerSessionResult::OutboundResponse(p) = r {
                    // A peer that stops reading must not hold the connection (and its live slot).
                    tokio::time::timeout(SILENCE, sock.write_all(&p.bytes)).await.map_err(|_| Closed::NotReading)??;
                }
                continue;
            };
            let more = match ev {
                ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                    if app_name != APP_NAME {
                        return Err(Closed::BadApp(app_name));
                    }
                    session.accept_request(request_id).map_err(|e| Closed::Protocol(e.to_string()))?
                }
                ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                    if self.published_at.is_some() {
                        return Err(Closed::Protocol("a second publish on one connection".into()));
                    }
                    match broadcast::claim(&self.app, &stream_key).await {
                        Ok(Claim::New(claim)) => {
                            info!(stream_id = %claim.stream.id, "publisher accepted");
                            self.kick = Some(claim.air.kick.clone());
                            self.stream_id = Some(claim.stream.id.clone());
                            self.claim = Some(claim);
                            self.published_at = Some(Instant::now());
                            session.accept_request(request_id).map_err(|e| Closed::Protocol(e.to_string()))?
                        }
                        Ok(Claim::Resume { stream, parked, kick }) => {
                            info!(stream_id = %stream.id, video_id = %parked.feed.video_id, "the publisher came back: the broadcast goes on");
                            self.kick = Some(kick);
                            self.stream_id = Some(stream.id.clone());
                            self.timeline = flv::Timeline::resume(parked.next_ts);
                            self.feed = Some(parked.feed);
                            self.published_at = Some(Instant::now());
                            broadcast::set_status(&self.app, &stream.id, crate::model::LiveStatus::Live).await;
                            session.accept_request(request_id).map_err(|e| Closed::Protocol(e.to_string()))?
                        }
                        Err(refusal) => {
                            // Tell the publisher why (NetStream.Publish.BadName), then close.
                            if let Ok(out) = session.reject_request(request_id, "NetStream.Publish.BadName", &refusal.to_string()) {
                                for r in out {
                                    if let ServerSessionResult::OutboundResponse(p) = r {
                                        let _ = tokio::time::timeout(Duration::from_secs(2), sock.write_all(&p.bytes)).await;
                                    }
                                }
                            }
                            return Err(Closed::Refused(refusal));
                        }
                    }
                }
                ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                    if self.metadata.is_none() {
                        self.metadata = Some(metadata);
                    }
                    vec![]
                }
                ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                    self.media(flv::VIDEO, timestamp.value, data).await?;
                    vec![]
                }
                ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                    self.media(flv::AUDIO, timestamp.value, data).await?;
                    vec![]
                }
                ServerSessionEvent::PublishStreamFinished { .. } => return Ok(true),
                _ => vec![],
            };
            todo.extend(more);
        }
        Ok(false)
    }

    /// One audio or video message.
    async fn media(&mut self, kind: u8, ts: u32, body: Bytes) -> Result<(), Closed> {
        if self.claim.is_none() && self.feed.is_none() {
            return Err(Closed::Protocol("media before publish".into()));
        }
        self.first_media.get_or_insert_with(chrono::Utc::now);
        if kind == flv::VIDEO {
            if let Some(flv::VideoCodec::Other(id)) = flv::video_codec(&body) {
                let what = if id == 0x80 { "Enhanced RTMP (HEVC/AV1/VP9)".to_string() } else { format!("FLV video codec {id}") };
                return self.fail(JobFailure::LiveCodec(format!("the publisher sent {what}; live streams take H.264 video"))).await;
            }
        }
        if self.feed.is_none() {
            self.pending_bytes += body.len();
            self.pending.push((kind, ts, body));
            if self.pending_bytes > MAX_PENDING_BYTES {
                return Err(Closed::NoMetadata);
            }
            if kind == flv::VIDEO {
                self.start().await?;
            }
            return Ok(());
        }
        self.send(kind, ts, &body).await
    }

    /// Starts the broadcast with what the metadata says, then sends what was held.
    async fn start(&mut self) -> Result<(), Closed> {
        let has_audio =
            self.metadata.as_ref().is_some_and(|m| m.audio_codec_id.is_some()) || self.pending.iter().any(|(k, _, _)| *k == flv::AUDIO);
        let media = self.metadata.as_ref().and_then(|m| media_info(m, has_audio)).ok_or(Closed::NoMetadata)?;
        let claim = self.claim.take().ok_or_else(|| Closed::Protocol("no claim".into()))?;
        let feed = broadcast::start(&self.app, claim, media, "video/x-flv", self.first_media.unwrap_or_else(chrono::Utc::now))
            .await
            .map_err(|e| Closed::Start(e.to_string()))?;
        feed.tx.send(Bytes::copy_from_slice(&flv::header(has_audio))).await.map_err(|_| Closed::PipelineEnded)?;
        self.feed = Some(feed);
        for (kind, ts, body) in std::mem::take(&mut self.pending) {
            self.send(kind, ts, &body).await?;
        }
        self.pending_bytes = 0;
        Ok(())
    }

    /// One FLV tag into the pipeline.
    async fn send(&mut self, kind: u8, ts: u32, body: &[u8]) -> Result<(), Closed> {
        let Some(feed) = &self.feed else { return Ok(()) };
        let tag = flv::tag(kind, self.timeline.rebase(ts), body).ok_or_else(|| Closed::Protocol("a message over 16 MiB".into()))?;
        feed.clock.arrived();
        match tokio::time::timeout(OVERLOAD_WAIT, feed.tx.send(Bytes::from(tag))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Closed::PipelineEnded),
            Err(_) => Err(Closed::Overloaded),
        }
    }

    /// A publisher that published but sent no video in time: its broadcast fails with `no_video`.
    async fn check_video_deadline(&mut self) -> Result<(), Closed> {
        let late = self.published_at.is_some_and(|t| t.elapsed() > VIDEO_WITHIN);
        if late && self.feed.is_none() && !self.pending.iter().any(|(k, _, _)| *k == flv::VIDEO) {
            return self.fail(JobFailure::LiveNoVideo(format!("the publisher sent no video within {} s", VIDEO_WITHIN.as_secs()))).await;
        }
        Ok(())
    }

    /// Fails the broadcast (recording its video first if it has not started) and disconnects.
    async fn fail(&mut self, failure: JobFailure) -> Result<(), Closed> {
        let message = failure.to_string();
        if self.feed.is_none() {
            let Some(claim) = self.claim.take() else { return Err(Closed::Failed(message)) };
            let media = self.metadata.as_ref().and_then(|m| media_info(m, false)).unwrap_or(MediaInfo {
                duration_s: 0.0,
                container: Some("flv".into()),
                video: None,
                audio: None,
            });
            let feed = broadcast::start(&self.app, claim, media, "video/x-flv", self.first_media.unwrap_or_else(chrono::Utc::now))
                .await
                .map_err(|e| Closed::Start(e.to_string()))?;
            self.feed = Some(feed);
        }
        if let Some(feed) = self.feed.take() {
            if let Ok(mut f) = feed.failure.lock() {
                *f = Some(failure);
            }
        }
        Err(Closed::Failed(message))
    }
}

/// Runs the server side of the handshake; returns the bytes that followed it.
async fn handshake(sock: &mut TcpStream, buf: &mut [u8]) -> Result<Vec<u8>, Closed> {
    let mut hs = Handshake::new(PeerType::Server);
    loop {
        let n = sock.read(buf).await?;
        if n == 0 {
            return Err(Closed::Eof);
        }
        match hs.process_bytes(&buf[..n]).map_err(|e| Closed::Handshake(format!("{e:?}")))? {
            HandshakeProcessResult::InProgress { response_bytes } => sock.write_all(&response_bytes).await?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                sock.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// What the ladder needs to know of a publisher's stream, from its metadata (`onMetaData`, which
/// OBS and ffmpeg send before the media). `None` without a sane video size.
fn media_info(m: &StreamMetadata, has_audio: bool) -> Option<MediaInfo> {
    let (w, h) = (m.video_width?, m.video_height?);
    if !(16..=7680).contains(&w) || !(16..=7680).contains(&h) {
        return None;
    }
    let fps = m.video_frame_rate.filter(|f| f.is_finite() && (1.0..=240.0).contains(f)).unwrap_or(30.0) as f64;
    let (fps_num, fps_den) = fps_fraction(fps);
    Some(MediaInfo {
        duration_s: 0.0,
        container: Some("flv".into()),
        video: Some(VideoInfo {
            codec: "video/x-h264".into(),
            width: w,
            height: h,
            display_width: w,
            display_height: h,
            fps_num,
            fps_den,
            rotation: 0,
        }),
        audio: has_audio.then(|| AudioInfo {
            codec: "audio/mpeg".into(),
            channels: match (m.audio_channels, m.audio_is_stereo) {
                (Some(c), _) if (1..=8).contains(&c) => c,
                (_, Some(false)) => 1,
                _ => 2,
            },
            sample_rate: m.audio_sample_rate.filter(|r| (8000..=96_000).contains(r)).unwrap_or(48_000),
        }),
    })
}

/// A frame rate as a fraction: NTSC rates (29.97, 59.94, 23.976) as n×1000/1001, others rounded.
fn fps_fraction(fps: f64) -> (u32, u32) {
    let whole = fps.round();
    if (fps * 1001.0 / 1000.0 - whole).abs() < 0.01 && (fps - whole).abs() > 0.01 {
        return ((whole as u32) * 1000, 1001);
    }
    ((whole as u32).max(1), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rates_become_fractions() {
        assert_eq!(fps_fraction(30.0), (30, 1));
        assert_eq!(fps_fraction(29.97), (30000, 1001));
        assert_eq!(fps_fraction(59.94), (60000, 1001));
        assert_eq!(fps_fraction(25.0), (25, 1));
        assert_eq!(fps_fraction(24.9), (25, 1));
    }

    #[test]
    fn metadata_gives_the_media_or_nothing() {
        let mut m = StreamMetadata::new();
        assert!(media_info(&m, true).is_none());
        m.video_width = Some(640);
        m.video_height = Some(360);
        m.video_frame_rate = Some(30.0);
        let info = media_info(&m, true).unwrap();
        let v = info.video.unwrap();
        assert_eq!((v.width, v.height, v.fps_num, v.fps_den), (640, 360, 30, 1));
        assert_eq!(info.audio.unwrap().sample_rate, 48_000);
        assert!(media_info(&m, false).unwrap().audio.is_none());
        m.video_width = Some(100_000);
        assert!(media_info(&m, false).is_none());
    }
}
