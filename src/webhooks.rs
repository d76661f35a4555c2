//! Webhooks out: the events of a user's videos, delivered to the endpoints they registered. Each
//! event becomes one delivery per subscribed endpoint, written to the store's outbox before
//! anything else happens (a restart loses none); a background task sends them, signed, one at a
//! time per endpoint, and retries failures with exponential back-off for 24 h. The pipeline only
//! ever writes to the outbox: a slow or dead endpoint never delays it.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::{info, warn};

use crate::app::App;
use crate::error::AppError;
use crate::model::{Delivery, DeliveryState, VideoRecord, Webhook};

/// The events an endpoint may ask for.
pub const EVENTS: [&str; 7] =
    ["video.created", "video.playable", "video.ready", "video.failed", "video.deleted", "live.started", "live.ended"];
/// Endpoints one user may register.
pub const MAX_PER_USER: usize = 20;
/// Deliveries kept in an endpoint's log (finished ones beyond this are removed, oldest first).
pub const KEEP_DELIVERIES: usize = 1000;
/// Longest endpoint URL.
pub const MAX_URL: usize = 2048;
/// One attempt's limit (connect, send, status line).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry comes this long after a failure; each next one twice as long after, at most
/// `MAX_BACKOFF`, until `GIVE_UP_AFTER` from the event.
const FIRST_RETRY: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Deliveries in flight at once (each to a different endpoint).
const MAX_PARALLEL: usize = 8;

/// The wait before the next attempt after `attempts` failed ones.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF)
}

/// The `Cascade-Signature` header: `t={unix seconds},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether an address is one a webhook may not reach without `CASCADE_WEBHOOK_ALLOW_PRIVATE`:
/// loopback, private, link-local (cloud metadata), shared, unspecified, multicast, reserved.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                // NAT64 and the old IPv4-compatible form carry an IPv4 address: judge that.
                || (s[0] == 0x64 && s[1] == 0xff9b && is_private(IpAddr::V4(std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))))
                || (s[..6].iter().all(|x| *x == 0))
        }
    }
}

/// Why an endpoint URL is refused.
fn refuse(why: impl Into<String>) -> AppError {
    AppError::BadRequest(why.into())
}

/// Checks an endpoint URL and resolves its host: the host name and the addresses to connect to
/// (all of them acceptable, so that a name resolving to a private address cannot slip through).
pub async fn resolve(url: &str, allow_private: bool) -> Result<(reqwest::Url, Vec<SocketAddr>), AppError> {
    if url.len() > MAX_URL {
        return Err(refuse(format!("the URL is longer than {MAX_URL} characters")));
    }
    let u = reqwest::Url::parse(url).map_err(|e| refuse(format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() || u.password().is_some() {
        return Err(refuse("the URL must be http:// or https://, without a user name or password"));
    }
    let host = u.host_str().ok_or_else(|| refuse("the URL has no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = u.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| refuse(format!("{host} did not resolve within 5 s")))?
            .map_err(|e| refuse(format!("{host} does not resolve: {e}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(refuse(format!("{host} has no address")));
    }
    if !allow_private {
        if let Some(a) = addrs.iter().find(|a| is_private(a.ip())) {
            return Err(AppError::BadRequest(format!(
                "{host} resolves to {}, a loopback, private or link-local address: refused unless an admin sets CASCADE_WEBHOOK_ALLOW_PRIVATE",
                a.ip()
            )));
        }
    }
    Ok((u, addrs))
}

/// The outbox's sender: wakes when deliveries are added.
#[derive(Default)]
pub struct Outbox {
    wake: tokio::sync::Notify,
    /// Endpoints with a delivery in flight (one at a time each, so they arrive in order).
    busy: Mutex<HashSet<String>>,
}

/// Adds a delivery of `event` about `rec` for each endpoint of its owner that asked for it, and
/// wakes the sender. Never fails the caller (a store error is logged).
pub async fn emit(app: &App, event: &'static str, rec: &VideoRecord) {
    let Some(owner) = rec.owner.clone() else { return };
    let now = Utc::now();
    let body = serde_json::json!({ "type": event, "created_at": now, "video": rec }).to_string();
    queue(app, event, owner, now, body, &rec.id).await
}

/// Queues a live stream's event (`live.started`, `live.ended`) for its owner's endpoints. The
/// body carries the stream as its owner sees it, without its key.
pub async fn emit_live(app: &App, event: &'static str, stream: &crate::model::LiveStream) {
    let now = Utc::now();
    let view = crate::http::live::view(stream, false, false, &app.config, app.live.rtmp_addr(), app.live.srt_addr());
    let body = serde_json::json!({ "type": event, "created_at": now, "stream": view }).to_string();
    queue(app, event, stream.owner.clone(), now, body, &stream.id).await
}

/// Writes one event's deliveries to the outbox of every endpoint of `owner` that takes it.
async fn queue(app: &App, event: &'static str, owner: String, now: chrono::DateTime<Utc>, body: String, subject: &str) {
    let added = app
        .store
        .run(move |s| {
            let hooks = s.webhooks(Some(&owner))?;
            // A disabled user's integrations stop with their sessions and tokens.
            if hooks.is_empty() || s.user(&owner)?.is_none_or(|u| u.disabled) {
                return Ok(0);
            }
            let mut list = Vec::new();
            for w in hooks.into_iter().filter(|w| w.events.iter().any(|e| e == event)) {
                list.push(Delivery {
                    id: format!("{}/{:020}", w.id, s.next_delivery_seq()?),
                    webhook_id: w.id,
                    event: event.to_string(),
                    body: body.clone(),
                    created_at: now,
                    state: DeliveryState::Pending,
                    attempts: 0,
                    next_at: now,
                    last_status: None,
                    last_error: None,
                    delivered_at: None,
                });
            }
            if !list.is_empty() {
                s.enqueue_deliveries(&list)?;
                s.flush()?;
                for d in &list {
                    s.prune_deliveries(&d.webhook_id, KEEP_DELIVERIES)?;
                }
            }
            Ok::<_, AppError>(list.len())
        })
        .await;
    match added {
        Ok(0) => {}
        Ok(_) => app.outbox.wake.notify_one(),
        Err(e) => warn!(subject, event, error = %e, "cannot queue webhook deliveries"),
    }
}

/// Sends what is due, until the app shuts down.
pub async fn run(app: Arc<App>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL));
    while !app.is_shutting_down() {
        let now = Utc::now().timestamp_millis();
        match app.store.run(move |s| s.due_deliveries(now, 256)).await {
            Ok(due) => {
                for d in due {
                    let taken = app.outbox.busy.lock().map(|mut b| b.insert(d.webhook_id.clone())).unwrap_or(false);
                    if !taken {
                        continue;
                    }
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        app.outbox.busy.lock().map(|mut b| b.remove(&d.webhook_id)).ok();
                        break;
                    };
                    let app = app.clone();
                    tokio::spawn(async move {
                        let hook = d.webhook_id.clone();
                        attempt(&app, d).await;
                        drop(permit);
                        app.outbox.busy.lock().map(|mut b| b.remove(&hook)).ok();
                        app.outbox.wake.notify_one();
                    });
                }
            }
            Err(e) => warn!(error = %e, "cannot read the webhook outbox"),
        }
        // Until the next due delivery, a new one, or a finished attempt (what is due now is in
        // flight or waits for a free permit: a finished attempt wakes this loop).
        let next = app.store.run(|s| s.next_due_ms()).await.ok().flatten();
        let wait = match next.map(|t| t - Utc::now().timestamp_millis()) {
            None => 60_000,
            Some(ms) if ms <= 0 => 1_000,
            Some(ms) => ms.min(60_000),
        };
        let wait = Duration::from_millis(wait as u64);
        let _ = tokio::time::timeout(wait, app.outbox.wake.notified()).await;
    }
}

/// One attempt of one delivery, and its outcome recorded.
async fn attempt(app: &App, d: Delivery) {
    let id = d.webhook_id.clone();
    let hook = match app.store.run(move |s| s.webhook(&id)).await {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => return warn!(error = %e, "cannot read a webhook"),
    };
    let result = send(app, &hook, &d).await;
    let now = Utc::now();
    let mut after = d.clone();
    after.attempts += 1;
    let label = match result {
        Ok(status) if (200..300).contains(&status) => {
            after.state = DeliveryState::Delivered;
            after.delivered_at = Some(now);
            after.last_status = Some(status);
            after.last_error = None;
            "delivered"
        }
        other => {
            match other {
                Ok(status) => {
                    after.last_status = Some(status);
                    after.last_error = Some(format!("the endpoint answered {status}"));
                }
                Err(e) => {
                    after.last_status = None;
                    after.last_error = Some(e);
                }
            }
            let next = now + chrono::Duration::from_std(backoff(after.attempts)).unwrap_or_default();
            if next > d.created_at + chrono::Duration::from_std(GIVE_UP_AFTER).unwrap_or_default() {
                after.state = DeliveryState::Failed;
                warn!(delivery = %d.id, url = %hook.url, attempts = after.attempts, "webhook delivery given up after 24 h");
                "given_up"
            } else {
                after.next_at = next;
                info!(delivery = %d.id, url = %hook.url, error = ?after.last_error, retry_at = %next, "webhook delivery failed; will retry");
                "failed_attempt"
            }
        }
    };
    app.metrics.webhook_deliveries.get_or_create(&crate::metrics::StatusLabels { status: label }).inc();
    let saved = app.store.run(move |s| s.update_delivery(&d, &after).and_then(|_| s.flush())).await;
    if let Err(e) = saved {
        warn!(error = %e, "cannot record a webhook delivery");
    }
}

/// Sends a delivery's body to its endpoint, connecting only to addresses that were checked.
async fn send(app: &App, hook: &Webhook, d: &Delivery) -> Result<u16, String> {
    let (url, addrs) = resolve(&hook.url, app.config.webhook_allow_private).await.map_err(|e| e.to_string())?;
    let mut client = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).redirect(reqwest::redirect::Policy::none());
    if let Some(host) = url.host_str() {
        client = client.resolve_to_addrs(host, &addrs);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let t = Utc::now().timestamp();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "Cascade-Webhooks/1")
        .header("cascade-event", &d.event)
        .header("cascade-delivery", &d.id)
        .header("cascade-signature", signature(&hook.secret, t, &d.body))
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    Ok(r.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn retries_back_off_from_ten_seconds_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(5), Duration::from_secs(160));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_and_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        let s = signature("whsec_test", 1_700_000_000, r#"{"a":1}"#);
        assert_eq!(s, "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789");
    }

    #[tokio::test]
    async fn endpoint_urls_are_checked() {
        for bad in [
            "ftp://example.com/x",
            "http://user:pw@example.com/",
            "not a url",
            "http://127.0.0.1:9/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://localhost/",
        ] {
            assert!(resolve(bad, false).await.is_err(), "{bad}");
        }
        assert!(resolve("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(resolve(&format!("http://a.example/{}", "x".repeat(MAX_URL)), true).await.is_err());
    }
}
