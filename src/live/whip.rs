//! WHIP ingest (RFC 9725): going live with WebRTC, from Cascade's own Go live page or any WHIP
//! client (OBS ≥ 30). `POST /api/live/{id}/whip` takes the SDP offer with the stream key as the
//! bearer token and answers `201` with the SDP answer and the session's `Location`; `DELETE` on
//! that URL ends the broadcast (which then becomes a video like any other).
//!
//! The WebRTC side is GStreamer 1.22's `webrtcbin` (gst-plugins-bad; ICE by libnice from
//! `gstreamer1.0-nice`), one pipeline per session. gst-plugins-rs' `whipserversrc` was not taken:
//! its crate (`gst-plugin-webrtc`) targets newer GStreamer than Debian 12's 1.22 and pulls in a
//! signalling stack Cascade does not need; WHIP without trickle ICE is one offer and one answer,
//! which `webrtcbin`'s own signals do. The offer is cut down to what Cascade takes before
//! `webrtcbin` sees it (H.264 with packetization-mode 1 or VP8 video, Opus audio; no RTX, RED or
//! FEC payloads), so the answer names nothing else. The media are depayloaded, given timestamps
//! from 0, muxed into streamable Matroska and fed to the same live ladder as RTMP and SRT (Opus
//! becomes AAC there).
//!
//! Candidates: libnice gathers the host's addresses; `CASCADE_WEBRTC_PUBLIC_IP` adds, for each
//! host candidate, one with that address and the same port (a host behind 1:1 NAT). Browsers that
//! hide their addresses behind mDNS names still connect: the server learns their address from
//! their connectivity checks (peer-reflexive candidates).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn, Instrument};

use super::broadcast::{self, Claim, NewBroadcast};
use super::srt::{self, Container};
use crate::app::App;
use crate::error::AppError;

/// The largest SDP offer taken (a browser's is 5–10 KiB).
pub const MAX_OFFER: usize = 64 * 1024;
/// How long webrtcbin may take to take the offer, make the answer, or take it.
const PROMISE_WAIT: Duration = Duration::from_secs(5);
/// How long ICE gathering may take before the answer is sent with what was gathered.
const GATHER_WAIT: Duration = Duration::from_secs(5);
/// webrtcbin's jitter buffer latency (its default): media leave it this much after arrival.
const JITTER_MS: u32 = 200;
/// Matroska chunks between the session's pipeline and its broadcast.
const SESSION_DEPTH: usize = 1024;

/// Matroska from a WHIP session.
const MATROSKA: Container =
    Container { caps: "video/x-matroska", name: "matroska", who: "the WHIP publisher", lead: Duration::from_millis(JITTER_MS as u64) };

/// The WHIP sessions of this process.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

struct Session {
    stream_id: String,
    stop: Arc<Notify>,
}

impl Sessions {
    fn insert(&self, id: &str, s: Session) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(id.to_string(), s);
        }
    }

    /// Ends session `id` of stream `stream_id`; false when there is no such session.
    fn end(&self, stream_id: &str, id: &str) -> bool {
        let s =
            self.map.lock().ok().and_then(|mut m| if m.get(id).is_some_and(|s| s.stream_id == stream_id) { m.remove(id) } else { None });
        match s {
            Some(s) => {
                // The session's feed closes: the broadcast ends as a video.
                s.stop.notify_one();
                true
            }
            None => false,
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(id);
        }
    }
}

/// What the offer asks for, once cut down to what Cascade takes.
#[derive(Debug, PartialEq)]
pub struct Offer {
    /// The SDP to give `webrtcbin`.
    pub sdp: String,
    pub video: bool,
    pub audio: bool,
}

/// Payload types of one m-section that Cascade takes: H.264 (packetization-mode 1) or VP8
/// video, Opus audio.
fn taken(kind: &str, rtpmap: &HashMap<String, String>, fmtp: &HashMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (pt, codec) in rtpmap {
        let name = codec.split('/').next().unwrap_or_default().to_ascii_uppercase();
        let ok = match (kind, name.as_str()) {
            ("video", "VP8") => true,
            ("video", "H264") => fmtp.get(pt).is_some_and(|f| f.contains("packetization-mode=1")),
            ("audio", "OPUS") => true,
            _ => false,
        };
        if ok {
            out.push(pt.clone());
        }
    }
    out
}

/// Reads and cuts down an SDP offer: each audio or video m-section keeps only the payload types
/// Cascade takes (and their `rtpmap`, `fmtp` and `rtcp-fb` lines), in the offer's order.
/// `Err(400)` for a malformed offer, `Err(422)` for one without video Cascade can take.
pub fn read_offer(text: &str) -> Result<Offer, AppError> {
    crate::probe::init_gstreamer().map_err(AppError::Internal)?;
    let bad = |m: &str| AppError::BadRequest(format!("malformed SDP offer: {m}"));
    if !text.starts_with("v=0") {
        return Err(bad("it does not start with v=0"));
    }
    let parsed = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).map_err(|e| bad(&e.to_string()))?;
    if parsed.medias_len() == 0 {
        return Err(bad("no media section"));
    }
    // Sections: the session part, then one per m= line.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        sections.last_mut().expect("never empty").push(line);
    }
    let (mut video, mut audio) = (false, false);
    let mut out: Vec<String> = sections[0].iter().map(|l| l.to_string()).collect();
    for section in &sections[1..] {
        let m: Vec<&str> = section[0][2..].split(' ').collect();
        if m.len() < 4 {
            return Err(bad(&format!("bad media line {}", section[0])));
        }
        let kind = m[0];
        let pts: Vec<&str> = m[3..].to_vec();
        let attr = |name: &str| -> HashMap<String, String> {
            section
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("a={name}:")))
                .filter_map(|v| v.split_once(' ').map(|(pt, rest)| (pt.to_string(), rest.to_string())))
                .collect()
        };
        let (rtpmap, fmtp) = (attr("rtpmap"), attr("fmtp"));
        let keep_set = taken(kind, &rtpmap, &fmtp);
        let keep: Vec<&str> = pts.iter().copied().filter(|pt| keep_set.iter().any(|k| k == pt)).collect();
        if !matches!(kind, "audio" | "video") || keep.is_empty() {
            // Refused (port 0), as RFC 3264 asks of a section an answerer does not take.
            out.push(format!("m={} 0 {} {}", kind, m[2], pts.first().copied().unwrap_or("0")));
            out.extend(section[1..].iter().filter(|l| l.starts_with("a=mid:")).map(|l| l.to_string()));
            continue;
        }
        video |= kind == "video";
        audio |= kind == "audio";
        out.push(format!("m={} {} {} {}", kind, m[1], m[2], keep.join(" ")));
        for line in &section[1..] {
            let pt_of =
                ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().find_map(|p| line.strip_prefix(p)).map(|v| v.split(' ').next().unwrap_or(""));
            match pt_of {
                Some(pt) if pt != "*" && !keep.contains(&pt) => {}
                _ => out.push(line.to_string()),
            }
        }
    }
    if !video {
        return Err(AppError::Unprocessable("the offer has no video Cascade can take (H.264 with packetization-mode=1, or VP8)".into()));
    }
    let mut sdp = out.join("\r\n");
    sdp.push_str("\r\n");
    Ok(Offer { sdp, video, audio })
}

/// Adds, for each host candidate of an answer, one with `public` as its address (1:1 NAT).
fn with_public_ip(answer: &str, public: Option<IpAddr>) -> String {
    let Some(public) = public else { return answer.to_string() };
    let mut out = Vec::new();
    for line in answer.lines() {
        out.push(line.to_string());
        if let Some(c) = line.strip_prefix("a=candidate:") {
            let f: Vec<&str> = c.split(' ').collect();
            if f.len() >= 8 && f[6] == "typ" && f[7] == "host" && f[4] != public.to_string() {
                let mut g: Vec<String> = f.iter().map(|s| s.to_string()).collect();
                g[0] = format!("{}9", g[0]);
                g[4] = public.to_string();
                out.push(format!("a=candidate:{}", g.join(" ")));
            }
        }
    }
    let mut s = out.join("\r\n");
    s.push_str("\r\n");
    s
}

/// `POST /api/live/{id}/whip`: the offer in, the answer out (201 with `Location`).
pub async fn offer(
    app: Arc<App>,
    stream_id: String,
    key: Option<String>,
    content_type: Option<String>,
    body: Bytes,
) -> Result<warp::reply::Response, AppError> {
    let key = key.ok_or_else(|| AppError::Unauthorized("WHIP needs the stream key as a bearer token".into()))?;
    if !content_type.as_deref().is_some_and(|c| c.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))) {
        return Err(AppError::UnsupportedMediaType("a WHIP offer is application/sdp".into()));
    }
    let text = std::str::from_utf8(&body).map_err(|_| AppError::BadRequest("the SDP offer is not UTF-8".into()))?;
    let offer = read_offer(text)?;
    let claim = match broadcast::claim(&app, &key).await {
        Ok(Claim::New(c)) if c.stream.id == stream_id => c,
        Ok(Claim::New(_)) => return Err(AppError::Forbidden("that key is not this stream's".into())),
        Ok(Claim::Resume { stream, parked, .. }) => {
            // An RTMP broadcast waiting for its publisher: WebRTC cannot continue its timeline.
            drop(parked);
            return Err(AppError::Conflict(format!("the stream {}'s RTMP broadcast is ending; try again", stream.id)));
        }
        Err(broadcast::Refusal::UnknownKey) | Err(broadcast::Refusal::OwnerDisabled) => {
            return Err(AppError::Forbidden("wrong stream key".into()))
        }
        Err(broadcast::Refusal::AlreadyLive) => return Err(AppError::Conflict("the stream is already live".into())),
        Err(broadcast::Refusal::NoSlot) => return Err(AppError::Unavailable("no live slot is free (CASCADE_MAX_LIVE)".into())),
        Err(broadcast::Refusal::Internal(e)) => return Err(AppError::Internal(e)),
    };
    let session_id = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = mpsc::channel::<Bytes>(SESSION_DEPTH);
    let has_audio = offer.audio;
    let sdp = offer.sdp;
    let built = tokio::task::spawn_blocking(move || answer(&sdp, has_audio, tx)).await.map_err(|e| AppError::Internal(e.to_string()))?;
    let (pipeline, answer) = match built {
        Ok(x) => x,
        Err(e) => {
            warn!(stream_id = %stream_id, error = %e, "WHIP offer not answered");
            return Err(AppError::BadRequest(format!("the offer cannot be answered: {e}")));
        }
    };
    let answer = with_public_ip(&answer, app.config.webrtc_public_ip);
    let stop = Arc::new(Notify::new());
    app.live.whip.insert(&session_id, Session { stream_id: stream_id.clone(), stop: stop.clone() });
    info!(stream_id = %stream_id, session = %session_id, audio = has_audio, "WHIP publisher answered");
    let span = tracing::info_span!("whip", stream_id = %stream_id, session = %session_id);
    tokio::spawn(run(app.clone(), claim, session_id.clone(), pipeline, stop, rx).instrument(span));
    let location = format!("/api/live/{stream_id}/whip/{session_id}");
    let mut r = warp::reply::Response::new(answer.into());
    *r.status_mut() = warp::http::StatusCode::CREATED;
    let h = r.headers_mut();
    h.insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/sdp"));
    h.insert(warp::http::header::LOCATION, warp::http::HeaderValue::from_str(&location).map_err(|e| AppError::Internal(e.to_string()))?);
    Ok(r)
}

/// `DELETE /api/live/{id}/whip/{session}`: the publisher ends its broadcast.
pub async fn end(app: Arc<App>, stream_id: String, session_id: String, key: Option<String>) -> Result<warp::reply::Response, AppError> {
    let key = key.ok_or_else(|| AppError::Unauthorized("WHIP needs the stream key as a bearer token".into()))?;
    if app.live.stream_for_key(&key).as_deref() != Some(stream_id.as_str()) {
        return Err(AppError::Forbidden("wrong stream key".into()));
    }
    if !app.live.whip.end(&stream_id, &session_id) {
        return Err(AppError::NotFound("no such WHIP session".into()));
    }
    info!(stream_id = %stream_id, session = %session_id, "WHIP publisher ended its broadcast");
    Ok(warp::reply::Response::new(Default::default()))
}

/// The session's pipeline: `webrtcbin` answering `sdp`, its media into a streamable Matroska
/// muxer whose bytes go to `tx`. Returns the pipeline (playing) and the SDP answer.
fn answer(sdp: &str, has_audio: bool, tx: mpsc::Sender<Bytes>) -> Result<(gst::Pipeline, String), String> {
    crate::probe::init_gstreamer()?;
    let pipeline = gst::Pipeline::with_name("cascade-whip");
    let webrtc = gst::ElementFactory::make("webrtcbin")
        .property_from_str("bundle-policy", "max-bundle")
        .property("latency", JITTER_MS)
        .build()
        .map_err(|_| "webrtcbin (gst-plugins-bad) is missing".to_string())?;
    let mux = gst::ElementFactory::make("matroskamux").property("streamable", true).build().map_err(|e| e.to_string())?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline.add_many([&webrtc, &mux, sink.upcast_ref()]).map_err(|e| e.to_string())?;
    mux.link(&sink).map_err(|e| e.to_string())?;
    let video_pad = mux.request_pad_simple("video_%u").ok_or("matroskamux has no video pad")?;
    let audio_pad = if has_audio { Some(mux.request_pad_simple("audio_%u").ok_or("matroskamux has no audio pad")?) } else { None };
    // Media time 0 is the first buffer either track brings; earlier ones are dropped.
    let base = Arc::new(AtomicU64::new(u64::MAX));
    for pad in [Some(&video_pad), audio_pad.as_ref()].into_iter().flatten() {
        let base = base.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buf) = info.buffer_mut() else { return gst::PadProbeReturn::Ok };
            let Some(pts) = buf.pts() else { return gst::PadProbeReturn::Drop };
            let b = match base.compare_exchange(u64::MAX, pts.nseconds(), Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => pts.nseconds(),
                Err(b) => b,
            };
            if pts.nseconds() < b {
                return gst::PadProbeReturn::Drop;
            }
            let buf = buf.make_mut();
            buf.set_pts(gst::ClockTime::from_nseconds(pts.nseconds() - b));
            if let Some(dts) = buf.dts() {
                buf.set_dts(gst::ClockTime::from_nseconds(dts.nseconds().saturating_sub(b)));
            }
            gst::PadProbeReturn::Ok
        });
    }
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else { return Ok(gst::FlowSuccess::Ok) };
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                // The broadcast has ended (its receiver dropped): stop.
                tx.blocking_send(Bytes::copy_from_slice(map.as_slice())).map_err(|_| gst::FlowError::Eos)?;
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(|_| {})
            .build(),
    );
    // Each incoming stream: depayload (and parse) into its muxer pad.
    let weak = pipeline.downgrade();
    webrtc.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else { return };
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        let encoding = s.get::<&str>("encoding-name").unwrap_or_default().to_ascii_uppercase();
        let chain: &[&str] = match encoding.as_str() {
            "H264" => &["rtph264depay", "h264parse"],
            "VP8" => &["rtpvp8depay"],
            "OPUS" => &["rtpopusdepay", "opusparse"],
            other => {
                warn!(encoding = other, "WHIP: a stream Cascade does not take; ignored");
                return;
            }
        };
        info!(%encoding, "WHIP: receiving");
        let target = if encoding == "OPUS" { audio_pad.clone() } else { Some(video_pad.clone()) };
        let Some(target) = target else { return };
        if target.is_linked() {
            return;
        }
        let elements: Vec<gst::Element> = chain.iter().filter_map(|f| gst::ElementFactory::make(f).build().ok()).collect();
        if elements.len() != chain.len() || pipeline.add_many(&elements).is_err() || gst::Element::link_many(&elements).is_err() {
            warn!(%encoding, "WHIP: cannot depayload the stream");
            return;
        }
        for e in &elements {
            let _ = e.sync_state_with_parent();
        }
        let (Some(first), Some(last)) =
            (elements.first().and_then(|e| e.static_pad("sink")), elements.last().and_then(|e| e.static_pad("src")))
        else {
            return;
        };
        if pad.link(&first).is_err() || last.link(&target).is_err() {
            warn!(%encoding, "WHIP: cannot link the stream");
        }
    });
    pipeline.set_state(gst::State::Playing).map_err(|e| format!("the WebRTC pipeline did not start: {e}"))?;

    let offer = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).map_err(|e| e.to_string())?;
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
    let fail = |m: String| {
        let _ = pipeline.set_state(gst::State::Null);
        m
    };
    let (promise, reply) = new_promise();
    webrtc.emit_by_name::<()>("set-remote-description", &[&offer, &promise]);
    wait(&promise, &reply).map_err(|e| fail(format!("the offer was not taken: {e}")))?;
    let (promise, reply) = new_promise();
    webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
    let answer = wait(&promise, &reply)
        .map_err(|e| fail(format!("no answer: {e}")))?
        .and_then(|r| r.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok())
        .ok_or_else(|| fail("webrtcbin made no answer".into()))?;
    let (promise, reply) = new_promise();
    webrtc.emit_by_name::<()>("set-local-description", &[&answer, &promise]);
    wait(&promise, &reply).map_err(|e| fail(format!("the answer was not taken: {e}")))?;
    // No trickle ICE: the answer carries every candidate gathered.
    let deadline = Instant::now() + GATHER_WAIT;
    while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state") != gst_webrtc::WebRTCICEGatheringState::Complete
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .ok_or_else(|| fail("no local description".into()))?;
    let text = local.sdp().as_text().map_err(|e| fail(e.to_string()))?;
    Ok((pipeline, text))
}

/// What a promise replied: its structure, if any, or why it did not.
type Reply = std::sync::mpsc::Receiver<Result<Option<gst::Structure>, String>>;

/// A promise of webrtcbin's whose reply comes through a channel (so waiting for it is bounded).
fn new_promise() -> (gst::Promise, Reply) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let p = gst::Promise::with_change_func(move |r| {
        let _ = tx.try_send(r.map(|s| s.map(|s| s.to_owned())).map_err(|e| format!("{e:?}")));
    });
    (p, rx)
}

/// Waits for a promise, `PROMISE_WAIT` at most; Err when it said an error or did not reply.
fn wait(promise: &gst::Promise, reply: &Reply) -> Result<Option<gst::Structure>, String> {
    match reply.recv_timeout(PROMISE_WAIT) {
        Ok(Ok(Some(r))) if r.has_field("error") => Err(format!("{:?}", r.value("error").ok())),
        Ok(r) => r,
        Err(_) => {
            promise.interrupt();
            Err(format!("webrtcbin did not reply within {} s", PROMISE_WAIT.as_secs()))
        }
    }
}

/// A session: its media feed the broadcast until the publisher ends it (DELETE), leaves (the
/// connection fails or closes, or it goes silent), or the stream is deleted.
async fn run(
    app: Arc<App>,
    claim: NewBroadcast,
    session_id: String,
    pipeline: gst::Pipeline,
    stop: Arc<Notify>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let kick = claim.air.kick.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (pipeline, done, stop) = (pipeline.clone(), done.clone(), stop.clone());
        std::thread::Builder::new().name("whip-bus".into()).spawn(move || watch(&pipeline, &done, &stop)).ok()
    };
    let result = tokio::select! {
        r = srt::feed(&app, claim, &mut rx, &MATROSKA) => r,
        _ = kick.notified() => Err("the stream was deleted".to_string()),
        _ = stop.notified() => Ok(()),
    };
    match result {
        Ok(()) => info!("WHIP broadcast ends: the publisher left"),
        Err(e) => warn!(reason = %e, "WHIP publisher disconnected"),
    }
    done.store(true, Ordering::SeqCst);
    app.live.whip.forget(&session_id);
    drop(rx);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
        if let Some(h) = watcher {
            let _ = h.join();
        }
    })
    .await;
}

/// Watches a session's bus until `done`: an error, EOS or a failed or closed connection ends the
/// session.
fn watch(pipeline: &gst::Pipeline, done: &std::sync::atomic::AtomicBool, stop: &Notify) {
    let Some(bus) = pipeline.bus() else { return };
    let webrtc = pipeline.children().into_iter().find(|e| e.factory().is_some_and(|f| f.name() == "webrtcbin"));
    while !done.load(Ordering::SeqCst) {
        if let Some(w) = &webrtc {
            let state = w.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
            if matches!(state, gst_webrtc::WebRTCPeerConnectionState::Failed | gst_webrtc::WebRTCPeerConnectionState::Closed) {
                info!(?state, "WHIP: the WebRTC connection ended");
                stop.notify_one();
                return;
            }
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else { continue };
        match msg.view() {
            gst::MessageView::Error(e) => {
                warn!(error = %e.error(), debug = ?e.debug(), "WHIP pipeline error");
                stop.notify_one();
                return;
            }
            gst::MessageView::Eos(_) => {
                stop.notify_one();
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 45\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:98 H264/90000\r\n\
a=fmtp:98 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\na=rtpmap:99 H264/90000\r\n\
a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:45 AV1/90000\r\n";

    #[test]
    fn an_offer_is_cut_down_to_what_cascade_takes() {
        let o = read_offer(CHROME_OFFER).unwrap();
        assert!(o.video && o.audio);
        let lines: Vec<&str> = o.sdp.lines().collect();
        assert!(lines.contains(&"m=audio 9 UDP/TLS/RTP/SAVPF 111"), "{}", o.sdp);
        assert!(lines.contains(&"m=video 9 UDP/TLS/RTP/SAVPF 96 99"), "{}", o.sdp);
        for gone in ["a=rtpmap:63", "a=fmtp:63", "a=rtpmap:9 ", "a=rtpmap:97", "a=fmtp:97", "a=rtpmap:98", "a=fmtp:98", "a=rtpmap:45"] {
            assert!(!o.sdp.contains(gone), "{gone} left in:\n{}", o.sdp);
        }
        for kept in [
            "a=rtpmap:111 opus/48000/2",
            "a=rtcp-fb:111 transport-cc",
            "a=rtcp-fb:96 nack",
            "a=fmtp:99 level-asymmetry-allowed=1",
            "a=mid:1",
        ] {
            assert!(o.sdp.contains(kept), "{kept} missing in:\n{}", o.sdp);
        }
        gst_sdp::SDPMessage::parse_buffer(o.sdp.as_bytes()).expect("still SDP");
    }

    #[test]
    fn offers_without_video_or_malformed_are_refused() {
        let audio_only = CHROME_OFFER.split("m=video").next().unwrap();
        assert!(matches!(read_offer(audio_only), Err(AppError::Unprocessable(_))));
        let av1_only = CHROME_OFFER.replace("VP8/90000", "VP9/90000").replace("packetization-mode=1", "packetization-mode=0");
        assert!(matches!(read_offer(&av1_only), Err(AppError::Unprocessable(_))));
        for bad in ["", "hello", "v=0\r\n", "v=0\r\nm=video\r\n"] {
            assert!(matches!(read_offer(bad), Err(AppError::BadRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_public_ip_is_added_to_host_candidates() {
        let answer = "v=0\r\na=candidate:1 1 UDP 2015363327 10.0.0.5 50000 typ host\r\na=candidate:2 1 TCP 1015021823 10.0.0.5 9 typ host tcptype active\r\n";
        let out = with_public_ip(answer, Some("203.0.113.7".parse().unwrap()));
        assert!(out.contains("a=candidate:19 1 UDP 2015363327 203.0.113.7 50000 typ host"), "{out}");
        assert_eq!(with_public_ip(answer, None), answer);
    }
}
