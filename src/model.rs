//! Record types shared by the store, the job runner, packaging and the HTTP layer. This module
//! depends on none of them: a record knows nothing of where it is kept or how it is shown.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Longest title kept.
pub const MAX_TITLE: usize = 200;

/// Lifecycle of a video.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A resumable upload whose last byte has not arrived (`upload_bytes` says how far it is).
    Uploading,
    Queued,
    Processing,
    Ready,
    Failed,
}

impl Status {
    /// Whether the video will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Ready | Status::Failed)
    }
}

/// Why a video failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// The source as shown to users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SourceInfo {
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub rotation: u32,
    pub video_codec: String,
    pub audio_codec: Option<String>,
    pub container: Option<String>,
}

/// A rendition as reported in the video record once packaged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RenditionSummary {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Peak bits per second (HLS BANDWIDTH), measured once finished.
    pub bandwidth: u64,
    /// Average bits per second.
    pub average_bandwidth: u64,
    pub codecs: String,
}

/// One uploaded video. Serialized as it is into the store and, flattened, into the API view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct VideoRecord {
    pub id: String,
    pub title: String,
    pub original_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: Status,
    pub progress: f64,
    pub playable: bool,
    pub error: Option<ErrorInfo>,
    /// `gstreamer` or `ffmpeg`: the back end that produced (or last tried) the output.
    pub backend: Option<String>,
    /// Why an earlier back end failed when another one ran after it.
    pub fallback_reason: Option<String>,
    pub source: Option<SourceInfo>,
    pub renditions: Vec<RenditionSummary>,
    pub upload_bytes: u64,
    /// Runs of the job so far (a crash mid-run counts).
    pub attempts: u32,
    /// Images available under `images/` (file names). Named `image_files` so the API view can
    /// flatten the record beside its `images` URLs; older records said `images`.
    #[serde(default, rename = "image_files", alias = "images")]
    pub images: Vec<String>,
    /// Transcoding started while the upload was still arriving.
    #[serde(default)]
    pub streamed: bool,
    /// The uploading client's own reference (`?ref=`), to find the record during the upload.
    #[serde(default)]
    pub client_ref: Option<String>,
    /// The id of the user who uploaded it (none for videos from before accounts, until the first
    /// admin adopts them).
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub visibility: Visibility,
    /// A live broadcast: its source is a publisher (RTMP), not a file. Its status stays
    /// `processing` while it is on air and becomes `ready` (a normal video) when it ends.
    #[serde(default)]
    pub live: bool,
}

impl VideoRecord {
    /// A new queued video. The title is the given one, else the file name without its extension.
    pub fn new(id: &str, title: Option<String>, original_name: Option<String>, upload_bytes: u64) -> VideoRecord {
        let now = Utc::now();
        let title = title
            .or_else(|| original_name.as_ref().map(|n| n.rsplit_once('.').map_or(n.as_str(), |(a, _)| a).to_string()))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "Untitled video".into());
        VideoRecord {
            id: id.to_string(),
            title,
            original_name,
            created_at: now,
            updated_at: now,
            status: Status::Queued,
            progress: 0.0,
            playable: false,
            error: None,
            backend: None,
            fallback_reason: None,
            source: None,
            renditions: vec![],
            upload_bytes,
            attempts: 0,
            images: vec![],
            streamed: false,
            client_ref: None,
            owner: None,
            visibility: Visibility::Public,
            live: false,
        }
    }

    /// Forgets everything an earlier run of the job produced (a new run starts from scratch).
    pub fn reset_output(&mut self) {
        self.progress = 0.0;
        self.playable = false;
        self.error = None;
        self.renditions.clear();
        self.images.clear();
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
}

/// A transcode job; exists while the video is queued or processing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub video_id: String,
    pub state: JobState,
    /// Queue order (monotonic).
    pub seq: u64,
    pub enqueued_at: DateTime<Utc>,
    /// The process running it (a fresh id per start), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Until when the holder's claim stands without a heartbeat. On a shared database (several
    /// processes) another process takes over a running job whose lease has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
}

/// One video's AES-128 key and IV. The IV is random per video and written explicitly in
/// `#EXT-X-KEY` (so it does not depend on media sequence numbers, which differ between back ends).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyMaterial {
    pub key: [u8; 16],
    pub iv: [u8; 16],
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

impl KeyMaterial {
    /// Fresh key and IV from the operating system's CSPRNG.
    pub fn generate() -> KeyMaterial {
        let mut key = [0u8; 16];
        let mut iv = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut key);
        rand::rngs::OsRng.fill_bytes(&mut iv);
        KeyMaterial { key, iv }
    }

    /// The IV as written in a playlist: `0x` and 32 hex digits.
    pub fn iv_hex(&self) -> String {
        format!("0x{}", hex::encode(self.iv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_record_titles() {
        assert_eq!(VideoRecord::new("a", Some("T".into()), Some("x.mp4".into()), 1).title, "T");
        assert_eq!(VideoRecord::new("a", None, Some("clip.final.mp4".into()), 1).title, "clip.final");
        assert_eq!(VideoRecord::new("a", None, Some("noext".into()), 1).title, "noext");
        assert_eq!(VideoRecord::new("a", None, None, 1).title, "Untitled video");
        assert_eq!(VideoRecord::new("a", None, Some(".mp4".into()), 1).title, "Untitled video");
    }

    /// Records written before `manifests` was dropped (and with unknown fields) still load.
    #[test]
    fn old_records_load() {
        let mut v = serde_json::to_value(VideoRecord::new("a", None, None, 0)).unwrap();
        v["manifests"] = serde_json::json!({"hls": "hls/master.m3u8", "dash": "dash/manifest.mpd"});
        v.as_object_mut().unwrap().remove("image_files");
        v["images"] = serde_json::json!(["poster.jpg"]);
        let back: VideoRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back.id, "a");
        assert_eq!(back.images, ["poster.jpg"]);
    }
}

/// Who may watch a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Listed; anyone may watch.
    #[default]
    Public,
    /// Not listed; whoever has the watch link may watch.
    Unlisted,
    /// The owner and admins only.
    Private,
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, on every video and user.
    Admin,
    /// Upload, and manage their own videos.
    Uploader,
}

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    /// Argon2id PHC string; never leaves the store.
    pub password_hash: String,
    pub role: Role,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    /// Most bytes of uploads this user may keep; none: the server's default (`CASCADE_QUOTA_BYTES`).
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// Most videos this user may keep; none: the server's default (`CASCADE_QUOTA_VIDEOS`).
    #[serde(default)]
    pub quota_videos: Option<u64>,
    /// Sessions made before the last password change carry an older number and are no longer valid.
    #[serde(default)]
    pub session_epoch: u64,
}

/// A login session; stored under the SHA-256 of its secret id (the cookie), never the id itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    pub expires_at: DateTime<Utc>,
    /// The user's `session_epoch` when the session was made.
    #[serde(default)]
    pub epoch: u64,
}

/// A resumable (tus) upload that has not received its last byte; its video record exists with
/// status `uploading`. Stored by video id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TusUpload {
    pub id: String,
    pub owner: String,
    /// `Upload-Length`.
    pub length: u64,
    /// Bytes durably on disk (fsynced before this was stored): what `HEAD` answers.
    pub offset: u64,
    /// `Upload-Metadata` as the client sent it, answered back on `HEAD`.
    pub metadata: Option<String>,
    pub filename: Option<String>,
    pub title: Option<String>,
    pub visibility: Option<Visibility>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A single-use sign-up invitation made by an admin; stored under the SHA-256 of its code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invite {
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
}

/// What a personal API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Upload videos.
    Upload,
    /// Edit and delete videos.
    Manage,
}

/// A personal API token; stored under the SHA-256 of its secret, shown to its owner once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// An endpoint a user registered for events (`/api/webhooks`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub owner: String,
    pub url: String,
    /// The events it receives (`video.ready`, …).
    pub events: Vec<String>,
    /// The HMAC key of its signatures: shown once, when it is created.
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_at`.
    Pending,
    Delivered,
    /// Given up (refused for 24 h, or the endpoint became unacceptable).
    Failed,
}

/// One event for one endpoint, kept until delivered or given up (the durable outbox), and shown
/// in the endpoint's delivery log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// `{webhook id}/{sequence}`: the store key, also sent as `Cascade-Delivery`.
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    /// The JSON body, exactly as signed and sent on every attempt.
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_at: DateTime<Utc>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Where a live stream is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LiveStatus {
    /// No publisher.
    Idle,
    /// A publisher is sending; `video_id` is the broadcast.
    Live,
    /// The publisher left; the broadcast waits for it to come back.
    Reconnecting,
}

/// A live stream: a stream key a publisher (OBS, ffmpeg) sends to, owned by a user. Each time a
/// publisher goes live, a video (`live: true`) is made of the broadcast.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveStream {
    pub id: String,
    pub owner: String,
    pub title: String,
    pub visibility: Visibility,
    /// The secret stream key (32 hex digits, 128 bits).
    pub key: String,
    pub status: LiveStatus,
    /// The broadcast on air now, else the last one.
    pub video_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why the last broadcast ended early or was refused, if it did.
    #[serde(default)]
    pub last_error: Option<ErrorInfo>,
    /// Encoder speed of the broadcast on air (× real time), refreshed every few seconds.
    #[serde(default)]
    pub encoder_speed: Option<f64>,
    /// Renditions dropped from the current (or last) broadcast because the live ladder could not
    /// keep up with the publisher, tallest first.
    #[serde(default)]
    pub dropped_renditions: Vec<String>,
    /// How long a broadcast waits for its publisher to come back (seconds); `None`: the server's
    /// `CASCADE_LIVE_RECONNECT_S`.
    #[serde(default)]
    pub reconnect_window_s: Option<u32>,
    /// The tallest rendition (short side in pixels) its broadcasts get; `None`: the whole ladder.
    #[serde(default)]
    pub max_height: Option<u32>,
    /// Low-latency HLS parts for its broadcasts (`None`: on, the default).
    #[serde(default)]
    pub low_latency: Option<bool>,
}

/// The longest reconnect window a stream may set (an hour).
pub const MAX_RECONNECT_WINDOW_S: u32 = 3600;

impl LiveStream {
    /// A new idle stream with a fresh key.
    pub fn new(id: &str, owner: &str, title: String, visibility: Visibility) -> LiveStream {
        let now = Utc::now();
        LiveStream {
            id: id.to_string(),
            owner: owner.to_string(),
            title,
            visibility,
            key: new_stream_key(),
            status: LiveStatus::Idle,
            video_id: None,
            created_at: now,
            updated_at: now,
            last_error: None,
            encoder_speed: None,
            dropped_renditions: Vec::new(),
            reconnect_window_s: None,
            max_height: None,
            low_latency: None,
        }
    }
}

/// A random stream key: 128 bits from the OS, as 32 hex digits.
pub fn new_stream_key() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}
