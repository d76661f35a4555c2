//! What the API shows of a record: the record itself (flattened) plus what only a request can
//! add: a fresh playback token with its URLs, image URLs under it, the queue position.

use serde::Serialize;

use crate::app::{now_unix, App};
use crate::model::{Status, VideoRecord};
use crate::packaging::images as im;
use crate::packaging::{DASH_MPD, HLS_MASTER};

/// Playback URLs with a fresh token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Playback {
    pub hls: String,
    pub dash: String,
    /// Low-Latency HLS (fMP4 parts, blocking playlist reload) of a broadcast on air that has it,
    /// or of an upload still processing; play it with a low-latency player (hls.js
    /// `lowLatencyMode`). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls_low_latency: Option<String>,
    /// Low-latency DASH (chunks announced with availabilityTimeOffset and sent while written) of
    /// the same broadcast; play it with dash.js's low-latency mode. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dash_low_latency: Option<String>,
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// URLs of a video's pictures.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct Images {
    pub poster: Option<String>,
    pub thumbnail: Option<String>,
    /// WebVTT mapping time ranges to `storyboard.jpg#xywh=…`.
    pub storyboard: Option<String>,
}

/// A video as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VideoView {
    #[serde(flatten)]
    pub video: VideoRecord,
    /// 1-based position in the queue while queued.
    pub queue_position: Option<usize>,
    /// Present once the video is playable.
    pub playback: Option<Playback>,
    /// Poster, thumbnail and storyboard URLs (behind the playback token), once they exist.
    pub images: Option<Images>,
}

/// A fresh playback token and its URLs (`base` is e.g. `http://host:port`, or empty).
pub fn playback(app: &App, id: &str, base: &str) -> Playback {
    let exp = now_unix() + app.config.token_ttl.as_secs();
    let token = app.signer.mint(id, exp);
    // Low latency: a broadcast on air (LL-HLS and LL-DASH) or an upload being processed (LL-HLS).
    let ll = app.live.ll.get(id).and_then(|s| s.configured());
    Playback {
        hls: format!("{base}/play/{token}/{HLS_MASTER}"),
        dash: format!("{base}/play/{token}/{DASH_MPD}"),
        hls_low_latency: ll.map(|_| format!("{base}/play/{token}/{}", crate::packaging::llhls::LL_MASTER)),
        dash_low_latency: ll.filter(|live| *live).map(|_| format!("{base}/play/{token}/{}", crate::packaging::LL_MPD)),
        expires_at: chrono::DateTime::from_timestamp(exp as i64, 0).unwrap_or_default(),
        token,
    }
}

/// The API view of a record.
pub fn view(app: &App, rec: VideoRecord, queue_position: Option<usize>, base: &str) -> VideoView {
    let playback = (rec.playable || !rec.images.is_empty()).then(|| playback(app, &rec.id, base));
    let images = playback.as_ref().filter(|_| !rec.images.is_empty()).map(|p| {
        let url = |name: &str| rec.images.iter().any(|n| n == name).then(|| format!("{base}/play/{}/{}/{name}", p.token, im::DIR));
        Images {
            poster: url(im::POSTER),
            thumbnail: url(im::THUMBNAIL),
            storyboard: url(im::SPRITE).map(|u| u.replace(im::SPRITE, im::VTT)),
        }
    });
    VideoView {
        images,
        queue_position: queue_position.filter(|_| rec.status == Status::Queued),
        playback: playback.filter(|_| rec.playable),
        video: rec,
    }
}
