//! Settings: defaults, then environment (`CASCADE_*`), then command-line flags, declared once as
//! clap arguments. Each setting is a flag named after its variable without `CASCADE_`, lower-case,
//! `_` → `-` (`CASCADE_DATA_DIR` is `--data-dir`), and the `env` attribute of the flag is the one
//! place that spelling lives.
//!
//! The environment reaches clap as a plain map (`parse`): its `CASCADE_*` values are put in front
//! of the command line as the flags they name, so flags given by hand come later and win, and clap
//! never reads the process environment itself (its `env` lookup is switched off for parsing and
//! kept for `--help`). `main` hands over `std::env::vars_os()`, tests a map of their own, through
//! the same code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Args, Parser, ValueEnum};

/// `CASCADE_*` variables that are not settings of the binary but are allowed in its environment:
/// the log filter (read before parsing) and the log format of the tools around the binary.
const OTHER_VARIABLES: [&str; 2] = ["CASCADE_LOG", "CASCADE_LOG_FORMAT"];

/// Which transcoder runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The GStreamer pipeline.
    Gstreamer,
    /// One FFmpeg process.
    Ffmpeg,
    /// GStreamer, falling back to FFmpeg when GStreamer cannot build or run the pipeline.
    Auto,
}

/// Settings of one transcode job, shared by `serve` and `transcode`.
#[derive(Debug, Clone, Args)]
pub struct JobSettings {
    /// The ladder file (validated at start-up)
    #[arg(long, env = "CASCADE_LADDER", value_name = "FILE", default_value = "./pipelines/ladder.toml")]
    pub ladder: PathBuf,
    /// Seconds without progress before a transcode is stopped and failed
    #[arg(long, env = "CASCADE_STALL_TIMEOUT", value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// A job may take this many times the source duration (at least 300 s)
    #[arg(long, env = "CASCADE_JOB_TIMEOUT_FACTOR", value_name = "FACTOR", default_value_t = 20.0, value_parser = positive)]
    pub job_timeout_factor: f64,
    /// Keep the FFmpeg back end's scratch dir after a job, for debugging
    #[arg(long, env = "CASCADE_KEEP_WORK", value_name = "BOOL", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub keep_work: bool,
}

/// Every setting of the server: the flags of `cascade serve`.
#[derive(Debug, Clone, Parser)]
#[command(name = "cascade serve")]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "CASCADE_BIND", value_name = "ADDR", default_value = "0.0.0.0:8000")]
    pub bind: SocketAddr,
    /// Sled database (db/), uploads, media and the token secret
    #[arg(long, env = "CASCADE_DATA_DIR", value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Pages, and node_modules with the players (installed by ./scripts/setup.sh)
    #[arg(long, env = "CASCADE_WEB_DIR", value_name = "DIR", default_value = "./web")]
    pub web_dir: PathBuf,
    /// Larger uploads get 413
    #[arg(long, env = "CASCADE_MAX_UPLOAD_BYTES", value_name = "BYTES", default_value_t = 8 << 30)]
    pub max_upload_bytes: u64,
    /// Transcodes running at once (1–64)
    #[arg(long, env = "CASCADE_WORKERS", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=64))]
    pub workers: u8,
    /// More queued jobs than this: uploads get 429
    #[arg(long, env = "CASCADE_MAX_QUEUED", value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queued: u32,
    /// Uploads are refused (507) below this much free disk (plus the upload's size)
    #[arg(long, env = "CASCADE_MIN_FREE_BYTES", value_name = "BYTES", default_value_t = 1 << 30)]
    pub min_free_bytes: u64,
    /// Which back end transcodes
    #[arg(long, env = "CASCADE_BACKEND", value_name = "BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Playback token lifetime in seconds
    #[arg(long, env = "CASCADE_TOKEN_TTL", value_name = "SECONDS", default_value_t = 6 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub token_ttl: u64,
    /// Token signing secret (at least 16 characters); otherwise 32 random bytes kept in DATA_DIR/secret
    #[arg(long, env = "CASCADE_SECRET", value_name = "SECRET", value_parser = secret)]
    pub secret: Option<String>,
    /// Runs of a job interrupted by crashes before it is failed
    #[arg(long, env = "CASCADE_MAX_ATTEMPTS", value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// On SIGTERM/SIGINT a running transcode may finish for this many seconds; then it is re-queued
    #[arg(long, env = "CASCADE_SHUTDOWN_GRACE", value_name = "SECONDS", default_value_t = 20)]
    pub shutdown_grace: u64,
    /// With CASCADE_DATABASE_URL: a running job whose process sent no heartbeat for this many
    /// seconds is taken over by another process
    #[arg(long, env = "CASCADE_JOB_LEASE", value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub job_lease: u64,
    /// Run no queue workers here: `cascade worker` processes on the same database run the queue
    /// (uploads transcoded while they arrive, and live broadcasts, still run on the node that
    /// receives their bytes). Needs CASCADE_DATABASE_URL
    #[arg(long, env = "CASCADE_NO_WORKERS", value_name = "BOOL", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub no_workers: bool,
    /// Transcode streamable uploads while they arrive
    #[arg(long, env = "CASCADE_STREAM_INGEST", value_name = "BOOL", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub stream_ingest: bool,
    /// Write low-latency HLS parts of uploads while they are processing (an encrypted copy of
    /// the CMAF segments under the video's `ll/`)
    #[arg(long, env = "CASCADE_UPLOAD_LOW_LATENCY", value_name = "BOOL", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub upload_low_latency: bool,
    /// Memory for segments of ready videos in MiB (0 turns the cache off)
    #[arg(long, env = "CASCADE_SEGMENT_CACHE_MB", value_name = "MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub segment_cache_mb: u32,
    /// PostgreSQL for the records (`postgres://user:pass@host/db`; created if missing) instead of
    /// the embedded database in the data dir
    #[arg(long, env = "CASCADE_DATABASE_URL", value_name = "URL", value_parser = database_url)]
    pub database_url: Option<String>,
    /// With CASCADE_DATABASE_URL: hear other processes' changes at once (LISTEN/NOTIFY); `false`
    /// for a connection pooler that cannot LISTEN (PgBouncer in transaction mode): workers then
    /// find queued jobs by polling once a second, and watchers see other processes' progress late
    #[arg(long, env = "CASCADE_DATABASE_LISTEN", value_name = "BOOL", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub database_listen: bool,
    /// S3-compatible object storage for sources and media (`s3://bucket/prefix`) instead of the
    /// data dir alone; endpoint, region and credentials from the standard `AWS_*` variables
    #[arg(long, env = "CASCADE_STORAGE_URL", value_name = "URL", value_parser = storage_url)]
    pub storage_url: Option<String>,
    /// With CASCADE_STORAGE_URL: answer a segment or image GET (after its token check) with a
    /// redirect to a presigned URL of the object, instead of streaming it through Cascade
    #[arg(long, env = "CASCADE_STORAGE_REDIRECT", value_name = "BOOL", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub storage_redirect: bool,
    /// Absolute URL the service is reached at (`https://video.example.com`); playback URLs are built
    /// from it, else they are relative. Never taken from a request's Host header
    #[arg(long, env = "CASCADE_PUBLIC_URL", value_name = "URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// Seconds a client may take to send a request's headers
    #[arg(long, env = "CASCADE_HEADER_TIMEOUT", value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Seconds an upload may send no bytes before it is cut off; a streamed transcode waiting this
    /// long for bytes gives its slot back
    #[arg(long, env = "CASCADE_BODY_IDLE_TIMEOUT", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_idle_timeout: u64,
    /// Uploads arriving at once; more get 429
    #[arg(long, env = "CASCADE_MAX_UPLOADS", value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uploads: u32,
    /// Open event streams (SSE) at once; more get 429
    #[arg(long, env = "CASCADE_MAX_SUBSCRIBERS", value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_subscribers: u32,
    /// Open event streams (SSE) at once from one client address
    #[arg(long, env = "CASCADE_MAX_SUBSCRIBERS_PER_IP", value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_subscribers_per_ip: u32,
    /// Visibility of an upload that does not say (public, unlisted, private)
    #[arg(long, env = "CASCADE_DEFAULT_VISIBILITY", value_name = "VISIBILITY", value_enum, default_value_t = crate::model::Visibility::Public)]
    pub default_visibility: crate::model::Visibility,
    /// Hours a login session lasts (a fraction is allowed: 0.5 is 30 minutes)
    #[arg(long, env = "CASCADE_SESSION_TTL_HOURS", value_name = "HOURS", default_value_t = 14.0 * 24.0, value_parser = session_hours)]
    pub session_ttl_hours: f64,
    /// Who may create an account on the sign-up page: nobody (admins create users), whoever has
    /// an admin's invite link, or anyone
    #[arg(long, env = "CASCADE_SIGNUP", value_name = "MODE", value_enum, default_value_t = Signup::Closed)]
    pub signup: Signup,
    /// Uploads one user may send at once; more get 429
    #[arg(long, env = "CASCADE_MAX_UPLOADS_PER_USER", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uploads_per_user: u32,
    /// Bytes of uploads a user may keep unless an admin set their own quota (none: no limit;
    /// admins have no default quota)
    #[arg(long, env = "CASCADE_QUOTA_BYTES", value_name = "BYTES")]
    pub quota_bytes: Option<u64>,
    /// Hours a resumable upload lives without receiving a chunk; then it and its partial file
    /// are removed (a fraction is allowed)
    #[arg(long, env = "CASCADE_UPLOAD_EXPIRY_H", value_name = "HOURS", default_value_t = 24.0, value_parser = session_hours)]
    pub upload_expiry_h: f64,
    /// Videos a user may keep unless an admin set their own quota (none: no limit)
    #[arg(long, env = "CASCADE_QUOTA_VIDEOS", value_name = "N")]
    pub quota_videos: Option<u64>,
    /// Who may frame the pages (CSP frame-ancestors source list)
    #[arg(long, env = "CASCADE_FRAME_ANCESTORS", value_name = "SOURCES", default_value = "'self'", value_parser = frame_ancestors)]
    pub frame_ancestors: String,
    /// Who may frame the embed player `/embed/{id}` (CSP frame-ancestors source list)
    #[arg(long, env = "CASCADE_EMBED_ORIGINS", value_name = "SOURCES", default_value = "*", value_parser = frame_ancestors)]
    pub embed_origins: String,
    /// Origins whose pages may read playback URLs (manifests, segments, keys, images) and
    /// `/api/time` with CORS: `*`, or origins such as https://blog.example separated by spaces
    #[arg(long, env = "CASCADE_CORS_ORIGINS", value_name = "ORIGINS", default_value = "*", value_parser = cors_origins)]
    pub cors_origins: CorsOrigins,
    /// Count requests and track viewers for /metrics (off only to measure what that costs)
    #[arg(long, env = "CASCADE_METRICS", value_name = "BOOL", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub metrics: bool,
    /// Also serve /metrics here, without a credential (for a scraper on a private network)
    #[arg(long, env = "CASCADE_METRICS_BIND", value_name = "ADDR")]
    pub metrics_bind: Option<SocketAddr>,
    /// Let webhooks reach loopback, private and link-local addresses (refused by default)
    #[arg(long, env = "CASCADE_WEBHOOK_ALLOW_PRIVATE", value_name = "BOOL", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub webhook_allow_private: bool,
    /// Where publishers send live streams over RTMP (`rtmp://HOST:PORT/live/KEY`), or `off`
    #[arg(long, env = "CASCADE_RTMP_BIND", value_name = "ADDR|off", default_value = "0.0.0.0:1935", value_parser = optional_addr)]
    pub rtmp_bind: OptionalAddr,
    /// Where publishers send live streams over SRT (`srt://HOST:PORT?streamid=KEY`, MPEG-TS), or `off`
    #[arg(long, env = "CASCADE_SRT_BIND", value_name = "ADDR|off", default_value = "0.0.0.0:8890", value_parser = optional_addr)]
    pub srt_bind: OptionalAddr,
    /// The public address of this host for WebRTC (WHIP) publishers behind a 1:1 NAT: each of the
    /// server's host ICE candidates is also offered with this address
    #[arg(long, env = "CASCADE_WEBRTC_PUBLIC_IP", value_name = "IP")]
    pub webrtc_public_ip: Option<std::net::IpAddr>,
    /// Live broadcasts at once (each runs a live ladder; uploads have their own slots)
    #[arg(long, env = "CASCADE_MAX_LIVE", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_live: u32,
    /// A publisher sending more than this (kbit/s, averaged over 5 s) is disconnected
    #[arg(long, env = "CASCADE_LIVE_MAX_KBPS", value_name = "KBPS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub live_max_kbps: u64,
    /// Seconds a broadcast waits for its publisher to come back (same key: the same video goes
    /// on); 0 ends it when the publisher leaves
    #[arg(long, env = "CASCADE_LIVE_RECONNECT_S", value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub live_reconnect_s: u64,
    /// Longest broadcast in seconds; it ends (and is kept as a video) then
    #[arg(long, env = "CASCADE_LIVE_MAX_S", value_name = "SECONDS", default_value_t = 12 * 3600, value_parser = clap::value_parser!(u64).range(10..=172_800))]
    pub live_max_s: u64,
    #[command(flatten)]
    pub job: JobSettings,
}

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Signup {
    /// Only admins create users.
    Closed,
    /// Whoever has a single-use invite link from an admin.
    Invite,
    /// Anyone.
    Open,
}

/// Hours of a session: above 0, at most a year.
fn session_hours(s: &str) -> Result<f64, String> {
    match positive(s)? {
        h if h <= 24.0 * 365.0 => Ok(h),
        _ => Err("must be at most 8760 (a year)".into()),
    }
}

/// An absolute http(s) URL with a host and nothing after the path, kept without a trailing `/`.
fn public_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if s.is_empty() {
        // Empty means none (so a compose file can pass the variable through).
        return Ok(String::new());
    }
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).ok_or("must start with http:// or https://")?;
    let host = rest.split('/').next().unwrap_or("");
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._~/:[]%".contains(c);
    if host.is_empty() || host.contains('@') || !rest.chars().all(ok_char) {
        return Err("must be an absolute URL such as https://video.example.com (no user, query or fragment)".into());
    }
    Ok(s.to_string())
}

/// A CSP source list: no directive separators, nothing that could end the header.
fn frame_ancestors(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') || s.contains([';', ',']) {
        return Err("must be a CSP source list such as 'self' or 'self' https://example.com".into());
    }
    Ok(s.to_string())
}

/// Who may read playback URLs from another origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (the playback token in the URL is the credential).
    Any,
    /// Only these (`scheme://host[:port]`, as browsers send them in `Origin`).
    Only(Vec<String>),
}

impl CorsOrigins {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    pub fn allow(&self, origin: Option<&str>) -> Option<String> {
        match (self, origin) {
            (CorsOrigins::Any, _) => Some("*".into()),
            (CorsOrigins::Only(list), Some(o)) => list.iter().find(|x| x.as_str() == o).cloned(),
            (CorsOrigins::Only(_), None) => None,
        }
    }
}

/// `*`, or origins (`http(s)://host[:port]`, no path) separated by spaces or commas.
fn cors_origins(s: &str) -> Result<CorsOrigins, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut list = Vec::new();
    for o in s.split([' ', ',']).filter(|o| !o.is_empty()) {
        let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)));
        if !ok {
            return Err(format!("{o:?} is not an origin such as https://blog.example or http://localhost:3000 (or use *)"));
        }
        list.push(o.to_ascii_lowercase());
    }
    if list.is_empty() {
        return Err("must be * or a list of origins".into());
    }
    Ok(CorsOrigins::Only(list))
}

fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err("must be a number above 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A PostgreSQL URL (an empty one means none, so a compose file can pass it through).
fn database_url(s: &str) -> Result<String, String> {
    if !(s.is_empty() || s.starts_with("postgres://") || s.starts_with("postgresql://")) {
        return Err("must be a postgres:// URL".into());
    }
    Ok(s.to_string())
}

/// An object store URL, `s3://bucket` or `s3://bucket/prefix` (an empty one means none).
fn storage_url(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    crate::storage::parse_url(s).map(|_| s.to_string())
}

/// An empty secret means none (so a compose file can pass `CASCADE_SECRET=` through).
fn secret(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() < 16 {
        return Err("must be at least 16 characters".into());
    }
    Ok(s.to_string())
}

/// Every setting of the server, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// `CASCADE_BIND`: address to listen on.
    pub bind: SocketAddr,
    /// `CASCADE_DATA_DIR`: sled database, uploads and media.
    pub data_dir: PathBuf,
    /// `CASCADE_WEB_DIR`: pages and player assets.
    pub web_dir: PathBuf,
    /// `CASCADE_LADDER`: the ladder file.
    pub ladder_path: PathBuf,
    /// `CASCADE_MAX_UPLOAD_BYTES`: larger uploads get 413.
    pub max_upload_bytes: u64,
    /// `CASCADE_WORKERS`: transcodes running at once.
    pub workers: usize,
    /// `CASCADE_MAX_QUEUED`: jobs waiting at most; more uploads get 429.
    pub max_queued: usize,
    /// `CASCADE_MIN_FREE_BYTES`: uploads are refused (507) below this much free disk.
    pub min_free_bytes: u64,
    /// `CASCADE_BACKEND`: gstreamer | ffmpeg | auto.
    pub backend: BackendChoice,
    /// `CASCADE_TOKEN_TTL`: playback token lifetime.
    pub token_ttl: Duration,
    /// `CASCADE_SECRET`: token signing secret (otherwise generated once into the data dir).
    pub secret: Option<String>,
    /// `CASCADE_STALL_TIMEOUT`: seconds without progress before a transcode is killed.
    pub stall_timeout: Duration,
    /// `CASCADE_JOB_TIMEOUT_FACTOR`: wall-clock limit of a job as a multiple of the source duration.
    pub job_timeout_factor: f64,
    /// `CASCADE_MAX_ATTEMPTS`: runs of a job that failed for a transient reason.
    pub max_attempts: u32,
    /// `CASCADE_SHUTDOWN_GRACE`: seconds a running transcode may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// `CASCADE_JOB_LEASE`: how long a claim on a job stands without a heartbeat (shared database).
    pub job_lease: Duration,
    /// Not `CASCADE_NO_WORKERS`: this process runs the queue.
    pub queue_workers: bool,
    /// `CASCADE_STREAM_INGEST`: transcode streamable uploads while they arrive.
    pub stream_ingest: bool,
    /// `CASCADE_UPLOAD_LOW_LATENCY`: LL-HLS parts of uploads while they are processing.
    pub upload_low_latency: bool,
    /// `CASCADE_DATABASE_URL`: PostgreSQL for the records, instead of sled in the data dir.
    pub database_url: Option<String>,
    /// `CASCADE_DATABASE_LISTEN`: LISTEN/NOTIFY between processes on a shared database.
    pub database_listen: bool,
    /// `CASCADE_STORAGE_URL`: media in S3-compatible storage, besides the data dir.
    pub storage_url: Option<String>,
    /// `CASCADE_STORAGE_REDIRECT`: segments and images answered with presigned redirects.
    pub storage_redirect: bool,
    /// `CASCADE_SEGMENT_CACHE_MB`: memory for segments of finished videos (0: off).
    pub segment_cache_bytes: usize,
    /// `CASCADE_KEEP_WORK`: keep the FFmpeg back end's scratch dir, for debugging.
    pub keep_work: bool,
    /// `CASCADE_PUBLIC_URL`: where the service is reached (no trailing `/`); playback URLs are
    /// relative without it.
    pub public_url: Option<String>,
    /// `CASCADE_HEADER_TIMEOUT`: time to send a request's headers.
    pub header_timeout: Duration,
    /// `CASCADE_BODY_IDLE_TIMEOUT`: longest silence of an upload body.
    pub body_idle_timeout: Duration,
    /// `CASCADE_MAX_UPLOADS`: uploads arriving at once.
    pub max_uploads: usize,
    /// `CASCADE_MAX_SUBSCRIBERS`: open event streams at once.
    pub max_subscribers: usize,
    /// `CASCADE_MAX_SUBSCRIBERS_PER_IP`: open event streams at once per client address.
    pub max_subscribers_per_ip: usize,
    /// `CASCADE_FRAME_ANCESTORS`: the CSP frame-ancestors source list of the pages.
    pub frame_ancestors: String,
    /// `CASCADE_EMBED_ORIGINS`: the CSP frame-ancestors source list of the embed player.
    pub embed_origins: String,
    /// `CASCADE_CORS_ORIGINS`: who may read playback URLs from another origin.
    pub cors_origins: CorsOrigins,
    /// `CASCADE_METRICS`: count requests for `/metrics`.
    pub metrics: bool,
    /// `CASCADE_METRICS_BIND`: a second address serving only `/metrics`, without a credential.
    pub metrics_bind: Option<SocketAddr>,
    /// `CASCADE_WEBHOOK_ALLOW_PRIVATE`: webhooks may reach private addresses.
    pub webhook_allow_private: bool,
    /// `CASCADE_RTMP_BIND`: the RTMP listener, if any.
    pub rtmp_bind: Option<SocketAddr>,
    /// `CASCADE_SRT_BIND`: the SRT listener, if any.
    pub srt_bind: Option<SocketAddr>,
    /// `CASCADE_WEBRTC_PUBLIC_IP`: an address added to WHIP answers' host candidates.
    pub webrtc_public_ip: Option<std::net::IpAddr>,
    /// `CASCADE_MAX_LIVE`: broadcasts at once.
    pub max_live: usize,
    /// `CASCADE_LIVE_MAX_KBPS`: a publisher's bit rate cap.
    pub live_max_kbps: u64,
    /// `CASCADE_LIVE_MAX_S`: longest broadcast.
    pub live_max: Duration,
    /// `CASCADE_LIVE_RECONNECT_S`: the reconnect window.
    pub live_reconnect: Duration,
    /// `CASCADE_DEFAULT_VISIBILITY`: visibility of an upload that does not say.
    pub default_visibility: crate::model::Visibility,
    /// `CASCADE_SESSION_TTL_HOURS`: lifetime of a login session.
    pub session_ttl: Duration,
    /// `CASCADE_SIGNUP`: who may create an account.
    pub signup: Signup,
    /// `CASCADE_MAX_UPLOADS_PER_USER`: uploads one user may send at once.
    pub max_uploads_per_user: usize,
    /// `CASCADE_QUOTA_BYTES` / `CASCADE_QUOTA_VIDEOS`: default quotas of users who are not admins.
    pub quota_bytes: Option<u64>,
    pub quota_videos: Option<u64>,
    /// `CASCADE_UPLOAD_EXPIRY_H`: life of a resumable upload without a chunk.
    pub upload_expiry: Duration,
}

impl From<ServeArgs> for Config {
    fn from(a: ServeArgs) -> Config {
        Config {
            bind: a.bind,
            data_dir: a.data_dir,
            web_dir: a.web_dir,
            ladder_path: a.job.ladder,
            max_upload_bytes: a.max_upload_bytes,
            workers: a.workers.into(),
            max_queued: a.max_queued as usize,
            min_free_bytes: a.min_free_bytes,
            backend: a.backend,
            token_ttl: Duration::from_secs(a.token_ttl),
            secret: a.secret.filter(|s| !s.is_empty()),
            stall_timeout: Duration::from_secs(a.job.stall_timeout),
            job_timeout_factor: a.job.job_timeout_factor,
            max_attempts: a.max_attempts,
            shutdown_grace: Duration::from_secs(a.shutdown_grace),
            job_lease: Duration::from_secs(a.job_lease),
            queue_workers: !a.no_workers,
            stream_ingest: a.stream_ingest,
            upload_low_latency: a.upload_low_latency,
            segment_cache_bytes: (a.segment_cache_mb as usize) << 20,
            database_url: a.database_url.filter(|u| !u.is_empty()),
            database_listen: a.database_listen,
            storage_url: a.storage_url.filter(|u| !u.is_empty()),
            storage_redirect: a.storage_redirect,
            keep_work: a.job.keep_work,
            public_url: a.public_url.filter(|u| !u.is_empty()),
            header_timeout: Duration::from_secs(a.header_timeout),
            body_idle_timeout: Duration::from_secs(a.body_idle_timeout),
            max_uploads: a.max_uploads as usize,
            max_subscribers: a.max_subscribers as usize,
            max_subscribers_per_ip: a.max_subscribers_per_ip as usize,
            frame_ancestors: a.frame_ancestors,
            embed_origins: a.embed_origins,
            cors_origins: a.cors_origins,
            metrics: a.metrics,
            metrics_bind: a.metrics_bind,
            webhook_allow_private: a.webhook_allow_private,
            rtmp_bind: a.rtmp_bind.0,
            srt_bind: a.srt_bind.0,
            webrtc_public_ip: a.webrtc_public_ip,
            max_live: a.max_live as usize,
            live_max_kbps: a.live_max_kbps,
            live_max: Duration::from_secs(a.live_max_s),
            live_reconnect: Duration::from_secs(a.live_reconnect_s),
            default_visibility: a.default_visibility,
            session_ttl: Duration::from_secs_f64(a.session_ttl_hours * 3600.0),
            signup: a.signup,
            max_uploads_per_user: a.max_uploads_per_user as usize,
            quota_bytes: a.quota_bytes,
            quota_videos: a.quota_videos,
            upload_expiry: Duration::from_secs_f64(a.upload_expiry_h * 3600.0),
        }
    }
}

impl Config {
    /// The config of `cascade serve` with these variables and flags (`args` without `serve`).
    /// The binary parses its whole command line with `parse`; this is the short way for tests.
    #[cfg(test)]
    pub fn from_sources(env: &HashMap<String, String>, args: &[String]) -> Result<Config, ConfigError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse::<ServeArgs>(env, &args).map(Config::from)
    }
}

/// Why a command line and environment make no valid command.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A usage error, or `--help`/`--version`: clap prints it and chooses the exit code.
    #[error("{0}")]
    Usage(#[from] clap::Error),
    #[error("unknown setting {0} in the environment (`cascade serve --help` lists every CASCADE_* variable)")]
    UnknownVariable(String),
    #[error("{var} in the environment: {message}")]
    Variable { var: String, message: String },
    #[error("{0} in the environment is not UTF-8")]
    NotUnicode(String),
}

/// The `CASCADE_*` variables of the process, for `parse`.
pub fn process_env() -> Result<HashMap<String, String>, ConfigError> {
    let mut env = HashMap::new();
    for (k, v) in std::env::vars_os() {
        let Some(k) = k.to_str().filter(|k| k.starts_with("CASCADE_")) else { continue };
        let v = v.into_string().map_err(|_| ConfigError::NotUnicode(k.to_string()))?;
        env.insert(k.to_string(), v);
    }
    Ok(env)
}

/// Parses a command line (`args` without the program name) into `P`, with the `CASCADE_*`
/// variables of `env` standing in for the flags they name that are not given. A command that
/// reads settings refuses a `CASCADE_*` variable that no command knows: a typo must not be
/// silently ignored.
pub fn parse<P: Parser>(env: &HashMap<String, String>, args: &[OsString]) -> Result<P, ConfigError> {
    let documented = P::command().mut_args(|a| a.hide_env_values(true));
    // The command the arguments choose: its flags are the ones the environment may set.
    let sub = args.first().and_then(|a| documented.find_subcommand(a)).map(|s| s.get_name().to_string());
    let target = sub.as_deref().and_then(|s| documented.find_subcommand(s)).unwrap_or(&documented);
    let settings: BTreeMap<String, String> =
        target.get_arguments().filter_map(|a| Some((a.get_env()?.to_str()?.to_string(), a.get_long()?.to_string()))).collect();
    let mut argv: Vec<OsString> = vec!["cascade".into()];
    let rest = match &sub {
        Some(_) => {
            argv.push(args[0].clone());
            &args[1..]
        }
        None => args,
    };
    // `--name=value` keeps a value that starts with `-` a value. A flag given by hand replaces
    // its variable before clap sees it: clap checks every value it is given, so a bad variable
    // would otherwise fail a command line that overrides it.
    argv.extend(
        settings
            .iter()
            .filter(|(_, long)| !given_by_hand(rest, long))
            .filter_map(|(var, long)| Some(OsString::from(format!("--{long}={}", env.get(var)?)))),
    );
    argv.extend(rest.iter().cloned());

    let parser = without_env(P::command());
    let matches = match parser.try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) => {
            // Help comes from the command that still names the variables.
            let mut orig: Vec<OsString> = vec!["cascade".into()];
            orig.extend(args.iter().cloned());
            return Err(documented.try_get_matches_from(orig).err().unwrap_or(e).into());
        }
        Err(e) => return Err(blame_variable(e, &settings, env, rest)),
    };
    // After parsing, so that `--help` still answers with a typo in the environment.
    if !settings.is_empty() {
        let known = variables(&documented);
        let mut vars: Vec<&String> = env.keys().filter(|k| k.starts_with("CASCADE_")).collect();
        vars.sort();
        if let Some(v) = vars.into_iter().find(|v| !known.contains(v.as_str()) && !OTHER_VARIABLES.contains(&v.as_str())) {
            return Err(ConfigError::UnknownVariable(v.clone()));
        }
    }
    Ok(P::from_arg_matches(&matches)?)
}

/// Every variable a command or its subcommands read.
fn variables(cmd: &clap::Command) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = cmd.get_arguments().filter_map(|a| a.get_env().and_then(OsStr::to_str)).map(str::to_string).collect();
    for s in cmd.get_subcommands() {
        out.extend(variables(s));
    }
    out
}

/// The command with clap's own environment lookups switched off (`parse` supplies the values),
/// where a flag given twice keeps the last value (the environment's copy comes first).
fn without_env(cmd: clap::Command) -> clap::Command {
    let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    let mut cmd = cmd.args_override_self(true).mut_args(|a| a.env(None));
    for s in subs {
        cmd = cmd.mut_subcommand(s, without_env);
    }
    cmd
}

/// Whether `--long` is among the arguments (before a `--` that ends the flags).
fn given_by_hand(args: &[OsString], long: &str) -> bool {
    let flag = format!("--{long}");
    args.iter()
        .filter_map(|a| a.to_str())
        .take_while(|a| *a != "--")
        .any(|a| a == flag || a.strip_prefix(flag.as_str()).is_some_and(|rest| rest.starts_with('=')))
}

/// A bad value that came from a variable (not from a flag given by hand) is reported under the
/// variable's name: the user never typed the flag clap would name.
fn blame_variable(e: clap::Error, settings: &BTreeMap<String, String>, env: &HashMap<String, String>, given: &[OsString]) -> ConfigError {
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else { return e.into() };
    let long = arg.trim_start_matches('-').split([' ', '=']).next().unwrap_or("");
    let by_hand = given_by_hand(given, long);
    let var = settings.iter().find(|(_, l)| l.as_str() == long).map(|(v, _)| v);
    match var {
        Some(var) if !by_hand && env.contains_key(var) => {
            let rendered = e.render().to_string();
            let message = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
            ConfigError::Variable { var: var.clone(), message }
        }
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_env_then_flags() {
        let c = Config::from_sources(&HashMap::new(), &[]).unwrap();
        assert_eq!(c.bind.to_string(), "0.0.0.0:8000");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.ladder_path, PathBuf::from("./pipelines/ladder.toml"));
        assert_eq!(c.backend, BackendChoice::Auto);
        assert_eq!((c.workers, c.max_queued, c.max_attempts), (1, 100, 3));
        assert_eq!(c.max_upload_bytes, 8 << 30);
        assert_eq!(c.token_ttl, Duration::from_secs(6 * 3600));
        assert_eq!(c.stall_timeout, Duration::from_secs(120));
        assert_eq!(c.job_timeout_factor, 20.0);
        assert_eq!(c.segment_cache_bytes, 64 << 20);
        assert!(c.stream_ingest && !c.keep_work && c.secret.is_none() && !c.upload_low_latency);
        assert_eq!((c.header_timeout.as_secs(), c.body_idle_timeout.as_secs()), (30, 60));
        assert_eq!((c.public_url.as_deref(), c.frame_ancestors.as_str()), (None, "'self'"));
        assert_eq!((c.embed_origins.as_str(), &c.cors_origins), ("*", &CorsOrigins::Any));
        let c = Config::from_sources(&env(&[("CASCADE_PUBLIC_URL", "https://video.example.com/")]), &[]).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://video.example.com"));
        let c = Config::from_sources(&env(&[("CASCADE_CORS_ORIGINS", "https://Blog.example, http://127.0.0.1:3000")]), &[]).unwrap();
        assert_eq!(c.cors_origins.allow(Some("https://blog.example")).as_deref(), Some("https://blog.example"));
        assert_eq!(c.cors_origins.allow(Some("http://127.0.0.1:3000")).as_deref(), Some("http://127.0.0.1:3000"));
        assert_eq!(c.cors_origins.allow(Some("http://127.0.0.1:3001")), None);
        assert_eq!(c.cors_origins.allow(None), None);
        let c = Config::from_sources(
            &env(&[("CASCADE_BIND", "127.0.0.1:9000"), ("CASCADE_WORKERS", "2"), ("CASCADE_BACKEND", "gstreamer"), ("PATH", "/bin")]),
            &args(&["--workers", "3", "--backend=ffmpeg", "--segment-cache-mb", "0"]),
        )
        .unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:9000");
        assert_eq!(c.workers, 3);
        assert_eq!(c.backend, BackendChoice::Ffmpeg);
        assert_eq!(c.segment_cache_bytes, 0);
    }

    #[test]
    fn booleans_take_the_usual_spellings() {
        let c = Config::from_sources(&env(&[("CASCADE_KEEP_WORK", "1"), ("CASCADE_STREAM_INGEST", "false")]), &[]).unwrap();
        assert!(c.keep_work && !c.stream_ingest);
        let c = Config::from_sources(&env(&[("CASCADE_KEEP_WORK", "1")]), &args(&["--keep-work=no", "--stream-ingest"])).unwrap();
        assert!(!c.keep_work && c.stream_ingest);
        let c = Config::from_sources(&HashMap::new(), &args(&["--stream-ingest", "off", "--keep-work"])).unwrap();
        assert!(c.keep_work && !c.stream_ingest);
    }

    #[test]
    fn a_value_starting_with_a_dash_stays_a_value() {
        let secret = "-0123456789abcdef";
        let c = Config::from_sources(&env(&[("CASCADE_SECRET", secret)]), &[]).unwrap();
        assert_eq!(c.secret.as_deref(), Some(secret));
        let c = Config::from_sources(&env(&[("CASCADE_SECRET", "")]), &[]).unwrap();
        assert_eq!(c.secret, None, "an empty secret means none");
    }

    #[test]
    fn bad_values_are_errors() {
        for (var, value) in [
            ("CASCADE_WORKERS", "zero"),
            ("CASCADE_WORKERS", "0"),
            ("CASCADE_WORKERS", "65"),
            ("CASCADE_MAX_QUEUED", "0"),
            ("CASCADE_TOKEN_TTL", "0"),
            ("CASCADE_MAX_ATTEMPTS", "0"),
            ("CASCADE_BACKEND", "vlc"),
            ("CASCADE_SECRET", "short"),
            ("CASCADE_SEGMENT_CACHE_MB", "65537"),
            ("CASCADE_STALL_TIMEOUT", "0"),
            ("CASCADE_JOB_TIMEOUT_FACTOR", "-1"),
            ("CASCADE_STREAM_INGEST", "maybe"),
            ("CASCADE_BIND", "nowhere"),
            ("CASCADE_PUBLIC_URL", "video.example.com"),
            ("CASCADE_PUBLIC_URL", "https://user@evil.example"),
            ("CASCADE_PUBLIC_URL", "https://a.example/?q=1"),
            ("CASCADE_HEADER_TIMEOUT", "0"),
            ("CASCADE_BODY_IDLE_TIMEOUT", "0"),
            ("CASCADE_FRAME_ANCESTORS", "'self'; script-src *"),
            ("CASCADE_EMBED_ORIGINS", "* ; script-src *"),
            ("CASCADE_CORS_ORIGINS", "blog.example"),
            ("CASCADE_CORS_ORIGINS", "https://blog.example/path"),
            ("CASCADE_CORS_ORIGINS", " "),
            ("CASCADE_METRICS_BIND", "localhost"),
            ("CASCADE_METRICS", "sometimes"),
            ("CASCADE_MAX_UPLOADS", "0"),
        ] {
            match Config::from_sources(&env(&[(var, value)]), &[]) {
                Err(ConfigError::Variable { var: v, message }) => assert_eq!(v, var, "{message}"),
                other => panic!("{var}={value}: {other:?}"),
            }
        }
        // A flag given by hand is blamed as the flag, and wins over a bad variable.
        assert!(matches!(Config::from_sources(&HashMap::new(), &args(&["--workers", "0"])), Err(ConfigError::Usage(_))));
        assert!(Config::from_sources(&env(&[("CASCADE_WORKERS", "zero")]), &args(&["--workers", "2"])).is_ok());
        assert!(matches!(Config::from_sources(&HashMap::new(), &args(&["--workers"])), Err(ConfigError::Usage(_))));
        assert!(matches!(Config::from_sources(&HashMap::new(), &args(&["--no-such-flag", "1"])), Err(ConfigError::Usage(_))));
    }

    #[test]
    fn unknown_variables_are_refused_and_log_variables_allowed() {
        match Config::from_sources(&env(&[("CASCADE_TYPO", "1")]), &[]) {
            Err(ConfigError::UnknownVariable(v)) => assert_eq!(v, "CASCADE_TYPO"),
            other => panic!("{other:?}"),
        }
        assert!(Config::from_sources(&env(&[("CASCADE_LOG", "debug"), ("CASCADE_LOG_FORMAT", "json"), ("HOME", "/")]), &[]).is_ok());
    }

    #[test]
    fn every_setting_has_one_variable_named_after_its_flag() {
        let cmd = ServeArgs::command();
        cmd.clone().debug_assert();
        for a in cmd.get_arguments().filter(|a| a.get_long().is_some_and(|l| l != "help")) {
            let long = a.get_long().unwrap();
            let want = format!("CASCADE_{}", long.replace('-', "_").to_uppercase());
            assert_eq!(a.get_env().and_then(OsStr::to_str), Some(want.as_str()), "--{long}");
        }
    }
}

/// An address, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn optional_addr(s: &str) -> Result<OptionalAddr, String> {
    match s.trim() {
        "off" | "" => Ok(OptionalAddr(None)),
        a => a.parse().map(|a| OptionalAddr(Some(a))).map_err(|e| format!("{e}: give ADDR:PORT or `off`")),
    }
}
