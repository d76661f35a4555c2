//! Live streams: stream keys, the RTMP listener, and the broadcast lifecycle. A broadcast is a
//! video whose source is a publisher instead of a file: it runs through the same ladder,
//! packaging and serving code, and when the publisher leaves the same record finishes as a normal
//! video (live-to-VOD, no second transcode).
//!
//! `Live` is the in-memory part: which key belongs to which stream (looked up without the store,
//! so the listener refuses a wrong key at once), which streams are on air, and the live slots.

pub mod broadcast;
pub mod flv;
pub mod rtmp;
pub mod srt;
pub mod whip;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::Notify;

use crate::auth::accounts::digest;
use crate::model::LiveStream;

/// Live state of the process.
pub struct Live {
    /// Stream ids by the SHA-256 of their key.
    keys: RwLock<HashMap<String, String>>,
    /// Streams on air: the signal that disconnects their publisher, and the feed of a broadcast
    /// whose publisher left and may come back.
    on_air: Mutex<HashMap<String, Air>>,
    /// One permit per broadcast at once (`CASCADE_MAX_LIVE`), apart from the upload slots.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Where the RTMP listener listens, once bound.
    rtmp_addr: OnceLock<SocketAddr>,
    /// Where the SRT listener listens.
    srt_addr: OnceLock<SocketAddr>,
    /// Low-latency HLS state of the broadcasts on air.
    pub ll: crate::packaging::llhls::Registry,
    /// WHIP sessions.
    pub whip: whip::Sessions,
}

impl Live {
    pub fn new(max_live: usize) -> Live {
        Live {
            keys: RwLock::new(HashMap::new()),
            on_air: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(max_live)),
            rtmp_addr: OnceLock::new(),
            ll: Default::default(),
            whip: Default::default(),
            srt_addr: OnceLock::new(),
        }
    }

    /// Indexes the keys of every stream (at start).
    pub fn load(&self, streams: &[LiveStream]) {
        if let Ok(mut keys) = self.keys.write() {
            for s in streams {
                keys.insert(digest(&s.key), s.id.clone());
            }
        }
    }

    /// Makes `key` the only key of the stream (a new stream, or a rotation: the old key stops
    /// working at once).
    pub fn set_key(&self, stream_id: &str, key: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.retain(|_, id| id != stream_id);
            keys.insert(digest(key), stream_id.to_string());
        }
    }

    /// Forgets a deleted stream's key.
    pub fn forget(&self, stream_id: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.retain(|_, id| id != stream_id);
        }
    }

    /// The stream a key belongs to.
    pub fn stream_for_key(&self, key: &str) -> Option<String> {
        self.keys.read().ok()?.get(&digest(key)).cloned()
    }

    /// A publisher arrives on a stream: a new broadcast, the return of the publisher of a
    /// broadcast waiting in its reconnect window, or a refusal (a publisher is on air already).
    pub fn enter(self: &Arc<Self>, stream_id: &str) -> Entry {
        let Ok(mut map) = self.on_air.lock() else { return Entry::Busy };
        match map.get_mut(stream_id) {
            None => {
                let kick = Arc::new(Notify::new());
                map.insert(stream_id.to_string(), Air { kick: kick.clone(), parked: None, generation: 0 });
                Entry::New(OnAir { live: self.clone(), stream_id: stream_id.to_string(), kick })
            }
            Some(air) => match air.parked.take() {
                Some(p) => Entry::Resume(p, air.kick.clone()),
                None => Entry::Busy,
            },
        }
    }

    /// Keeps the feed of a broadcast whose publisher left, for the reconnect window. Returns the
    /// parking's generation (for `expire`), or `None` when the broadcast is over already.
    pub fn park(&self, stream_id: &str, feed: broadcast::Feed, next_ts: u32) -> Option<u64> {
        let mut map = self.on_air.lock().ok()?;
        let air = map.get_mut(stream_id)?;
        air.generation += 1;
        air.parked = Some(Parked { feed, next_ts });
        Some(air.generation)
    }

    /// Ends the reconnect window of parking `generation`: its feed, if the publisher has not come
    /// back (and left again) since.
    pub fn expire(&self, stream_id: &str, generation: u64) -> Option<Parked> {
        let mut map = self.on_air.lock().ok()?;
        let air = map.get_mut(stream_id).filter(|a| a.generation == generation)?;
        air.parked.take()
    }

    /// Ends a stream's broadcast now (the stream was deleted): its publisher is disconnected, or
    /// its parked feed closed. Returns whether it was on air.
    pub fn kick(&self, stream_id: &str) -> bool {
        let parked = {
            let Ok(mut map) = self.on_air.lock() else { return false };
            let Some(air) = map.get_mut(stream_id) else { return false };
            air.kick.notify_one();
            air.parked.take()
        };
        drop(parked);
        true
    }

    /// Disconnects every publisher and ends every broadcast waiting for one (shutdown).
    pub fn kick_all(&self) {
        let parked: Vec<Parked> = match self.on_air.lock() {
            Ok(mut m) => m
                .values_mut()
                .filter_map(|a| {
                    a.kick.notify_one();
                    a.parked.take()
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        drop(parked);
    }

    pub fn set_rtmp_addr(&self, addr: SocketAddr) {
        let _ = self.rtmp_addr.set(addr);
    }

    /// The RTMP listener's address, once bound.
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.rtmp_addr.get().copied()
    }

    pub fn set_srt_addr(&self, addr: SocketAddr) {
        let _ = self.srt_addr.set(addr);
    }

    /// The SRT listener's address, when it runs.
    pub fn srt_addr(&self) -> Option<SocketAddr> {
        self.srt_addr.get().copied()
    }
}

/// A stream on air.
struct Air {
    kick: Arc<Notify>,
    parked: Option<Parked>,
    /// Counts parkings, so an old reconnect window cannot end a later one.
    generation: u64,
}

/// The feed of a broadcast whose publisher left, and the FLV timestamp its next tag takes.
pub struct Parked {
    pub feed: broadcast::Feed,
    pub next_ts: u32,
}

/// What a publisher arriving on a stream gets.
pub enum Entry {
    New(OnAir),
    Resume(Parked, Arc<Notify>),
    Busy,
}

/// A stream on air; dropping it takes the stream off air.
pub struct OnAir {
    live: Arc<Live>,
    pub stream_id: String,
    /// Notified when the publisher must be disconnected.
    pub kick: Arc<Notify>,
}

impl Drop for OnAir {
    fn drop(&mut self) {
        if let Ok(mut m) = self.live.on_air.lock() {
            m.remove(&self.stream_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Visibility;

    #[test]
    fn keys_rotate_and_one_publisher_is_on_air() {
        let live = Arc::new(Live::new(1));
        let s = LiveStream::new("s1", "u", "t".into(), Visibility::Public);
        assert_eq!(s.key.len(), 32, "128 bits as hex");
        assert_ne!(s.key, LiveStream::new("s2", "u", "t".into(), Visibility::Public).key);
        live.load(std::slice::from_ref(&s));
        assert_eq!(live.stream_for_key(&s.key).as_deref(), Some("s1"));
        assert_eq!(live.stream_for_key("nope"), None);
        live.set_key("s1", "newkey");
        assert_eq!(live.stream_for_key(&s.key), None, "the old key stops working at once");
        assert_eq!(live.stream_for_key("newkey").as_deref(), Some("s1"));
        let Entry::New(air) = live.enter("s1") else { panic!("a new broadcast") };
        assert!(matches!(live.enter("s1"), Entry::Busy), "a second publisher is refused");
        assert!(live.kick("s1"));
        drop(air);
        assert!(!live.kick("s1"));
        assert!(matches!(live.enter("s1"), Entry::New(_)));
        live.forget("s1");
        assert_eq!(live.stream_for_key("newkey"), None);
    }
}

#[cfg(test)]
mod reconnect_tests {
    use super::*;
    use std::time::Duration;

    fn feed() -> (broadcast::Feed, tokio::sync::mpsc::Receiver<bytes::Bytes>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let clock = std::sync::Arc::new(crate::transcode::ArrivalClock::since(chrono::Utc::now()));
        (broadcast::Feed { video_id: "v".into(), tx, clock, failure: Default::default(), reconnect: Duration::from_secs(60) }, rx)
    }

    #[test]
    fn a_parked_feed_resumes_once_or_expires() {
        let live = Arc::new(Live::new(1));
        let Entry::New(_air) = live.enter("s") else { panic!() };
        let (f, mut rx) = feed();
        let g1 = live.park("s", f, 1234).unwrap();
        let Entry::Resume(p, _) = live.enter("s") else { panic!("the publisher comes back") };
        assert_eq!(p.next_ts, 1234);
        assert!(matches!(live.enter("s"), Entry::Busy), "resumed: a second publisher is refused");
        let g2 = live.park("s", p.feed, 5678).unwrap();
        assert!(live.expire("s", g1).is_none(), "an old window does not end a later parking");
        assert!(rx.try_recv().is_err(), "the feed is still open");
        let p = live.expire("s", g2).expect("the window ends");
        drop(p);
        assert!(matches!(rx.try_recv(), Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)), "the feed is closed");
        // A kick closes a parked feed too.
        let (f, mut rx) = feed();
        live.park("s", f, 0).unwrap();
        assert!(live.kick("s"));
        assert!(matches!(rx.try_recv(), Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)));
        assert!(live.park("nope", feed().0, 0).is_none(), "no broadcast, no parking");
    }
}
