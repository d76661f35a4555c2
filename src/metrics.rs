//! What the service counts, for Prometheus: one registry of prometheus-client metrics (the
//! Prometheus project's own Rust client; its text output is what Prometheus scrapes) and the
//! handles the other modules record into. `http::metrics` serves it; values that are states
//! rather than events (queue depth, videos by status, disk free, viewers) are read at scrape time.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// A request's route (a template, never the raw path: ids and tokens would make a series each),
/// method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

/// How a transcode ended, and on which back end.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TranscodeLabels {
    pub backend: &'static str,
    /// `ready`, `failed`, `retried` (transient failure, queued again) or `cancelled`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A viewer is a playback token that fetched media within this long.
pub const VIEWER_WINDOW: Duration = Duration::from_secs(60);
/// Most viewers tracked at once (memory stays bounded whatever clients do).
const MAX_VIEWERS: usize = 100_000;

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: HistogramFamily<RequestLabels>,
    pub upload_bytes: Counter,
    pub queue_depth: Gauge,
    pub jobs_running: Gauge,
    pub queue_wait: Histogram,
    pub transcodes: Family<TranscodeLabels, Counter>,
    pub encode_speed: Histogram,
    pub videos: Family<StatusLabels, Gauge>,
    pub viewers_gauge: Gauge,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub disk_free: Gauge,
    pub webhook_deliveries: Family<StatusLabels, Counter>,
    pub live_streams: Gauge,
    pub live_ingest_bytes: Counter,
    /// Playback tokens (hashed) and when each last fetched media.
    viewers: Mutex<HashMap<u64, Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cascade");
        let requests: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register_with_unit(
            "http_request_duration",
            "HTTP requests by route, method and status, and how long they took to answer (the body of a streamed response may take longer)",
            Unit::Seconds,
            requests.clone(),
        );
        let upload_bytes = Counter::default();
        registry.register_with_unit("upload", "Upload bytes received (multipart and tus)", Unit::Bytes, upload_bytes.clone());
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Jobs waiting in the queue", queue_depth.clone());
        let jobs_running = Gauge::default();
        registry.register("jobs_running", "Jobs transcoding now", jobs_running.clone());
        let queue_wait = Histogram::new(exponential_buckets(0.01, 2.0, 18));
        registry.register_with_unit("queue_wait", "Time from upload to the start of its transcode", Unit::Seconds, queue_wait.clone());
        let transcodes = Family::<TranscodeLabels, Counter>::default();
        registry.register("transcodes", "Transcodes ended, by back end and outcome", transcodes.clone());
        let encode_speed = Histogram::new(exponential_buckets(0.125, 1.5, 16));
        registry.register(
            "encode_speed_ratio",
            "Encode speed of each finished job: seconds of video per second of transcoding (x real time)",
            encode_speed.clone(),
        );
        let videos = Family::<StatusLabels, Gauge>::default();
        registry.register("videos", "Videos by status", videos.clone());
        let viewers_gauge = Gauge::default();
        registry.register("active_viewers", "Playback tokens that fetched media in the last minute", viewers_gauge.clone());
        let cache_hits = Counter::default();
        registry.register("segment_cache_hits", "Segment GETs answered from memory", cache_hits.clone());
        let cache_misses = Counter::default();
        registry.register("segment_cache_misses", "Segment GETs read from disk", cache_misses.clone());
        let disk_free = Gauge::default();
        registry.register_with_unit("disk_free", "Free space where the data dir is", Unit::Bytes, disk_free.clone());
        let webhook_deliveries = Family::<StatusLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by result (delivered, failed_attempt, given_up)",
            webhook_deliveries.clone(),
        );
        let live_streams = Gauge::default();
        registry.register("live_streams", "Live broadcasts on air", live_streams.clone());
        let live_ingest_bytes = Counter::default();
        registry.register_with_unit(
            "live_ingest",
            "Bytes received from live publishers (RTMP); its rate × 8 is the ingest bit rate",
            Unit::Bytes,
            live_ingest_bytes.clone(),
        );
        Metrics {
            registry,
            live_streams,
            live_ingest_bytes,
            requests,
            upload_bytes,
            queue_depth,
            jobs_running,
            queue_wait,
            transcodes,
            encode_speed,
            videos,
            viewers_gauge,
            cache_hits,
            cache_misses,
            disk_free,
            webhook_deliveries,
            viewers: Mutex::new(HashMap::new()),
        }
    }

    /// A request answered.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        self.requests.get_or_create(&RequestLabels { route, method, status }).observe(took.as_secs_f64());
    }

    /// Media fetched with this playback token.
    pub fn viewer(&self, token: &str) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut h);
        let now = Instant::now();
        if let Ok(mut seen) = self.viewers.lock() {
            if seen.len() >= MAX_VIEWERS && !seen.contains_key(&h.finish()) {
                seen.retain(|_, t| now.duration_since(*t) < VIEWER_WINDOW);
                if seen.len() >= MAX_VIEWERS {
                    return;
                }
            }
            seen.insert(h.finish(), now);
        }
    }

    /// The viewers of the last minute (and those before it forgotten).
    pub fn active_viewers(&self) -> usize {
        let now = Instant::now();
        self.viewers.lock().map_or(0, |mut seen| {
            seen.retain(|_, t| now.duration_since(*t) < VIEWER_WINDOW);
            seen.len()
        })
    }

    /// The registry in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_recorded_is_exposed() {
        let m = Metrics::new();
        m.request("/api/videos/{id}", "GET", 200, Duration::from_millis(3));
        m.upload_bytes.inc_by(1234);
        m.transcodes.get_or_create(&TranscodeLabels { backend: "gstreamer", outcome: "ready" }).inc();
        m.viewer("a");
        m.viewer("a");
        m.viewer("b");
        assert_eq!(m.active_viewers(), 2);
        let text = m.encode();
        assert!(
            text.contains(r#"cascade_http_request_duration_seconds_count{route="/api/videos/{id}",method="GET",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("cascade_upload_bytes_total 1234"), "{text}");
        assert!(text.contains(r#"cascade_transcodes_total{backend="gstreamer",outcome="ready"} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
