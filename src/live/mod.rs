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
    /// Streams on air, with the signal that disconnects their publisher.
    on_air: Mutex<HashMap<String, Arc<Notify>>>,
    /// One permit per broadcast at once (`CASCADE_MAX_LIVE`), apart from the upload slots.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Where the RTMP listener listens, once bound.
    rtmp_addr: OnceLock<SocketAddr>,
}

impl Live {
    pub fn new(max_live: usize) -> Live {
        Live {
            keys: RwLock::new(HashMap::new()),
            on_air: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(max_live)),
            rtmp_addr: OnceLock::new(),
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

    /// Marks a stream on air; `None` when it already is (a second publisher is refused).
    pub fn go_on_air(self: &Arc<Self>, stream_id: &str) -> Option<OnAir> {
        let mut map = self.on_air.lock().ok()?;
        if map.contains_key(stream_id) {
            return None;
        }
        let kick = Arc::new(Notify::new());
        map.insert(stream_id.to_string(), kick.clone());
        Some(OnAir { live: self.clone(), stream_id: stream_id.to_string(), kick })
    }

    /// Disconnects the publisher of a stream on air (the stream was deleted). Returns whether one was.
    pub fn kick(&self, stream_id: &str) -> bool {
        let kick = self.on_air.lock().ok().and_then(|m| m.get(stream_id).cloned());
        kick.map(|k| k.notify_one()).is_some()
    }

    /// Disconnects every publisher (shutdown).
    pub fn kick_all(&self) {
        if let Ok(m) = self.on_air.lock() {
            m.values().for_each(|k| k.notify_one());
        }
    }

    pub fn set_rtmp_addr(&self, addr: SocketAddr) {
        let _ = self.rtmp_addr.set(addr);
    }

    /// The RTMP listener's address, once bound.
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.rtmp_addr.get().copied()
    }
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
        let air = live.go_on_air("s1").unwrap();
        assert!(live.go_on_air("s1").is_none(), "a second publisher is refused");
        assert!(live.kick("s1"));
        drop(air);
        assert!(!live.kick("s1"));
        assert!(live.go_on_air("s1").is_some());
        live.forget("s1");
        assert_eq!(live.stream_for_key("newkey"), None);
    }
}
