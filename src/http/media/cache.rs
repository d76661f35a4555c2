//! Segments of finished videos kept in memory, bounded in bytes, least recently used out first.
//!
//! A segment GET served from the file system costs a hand-off to the blocking pool, an open, a
//! path walk and a copy out of the page cache; from here it is a map lookup and a reference count.
//! Only segments of videos whose status is `ready` are admitted: their files never change again
//! (a retried job removes and rewrites its media, so segments of a video still processing could
//! be replaced). A deleted video's entries are dropped, and deleted videos are refused before the
//! cache is asked.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

struct Entry {
    data: Bytes,
    used: u64,
}

#[derive(Default)]
struct Inner {
    /// Video id → media path → bytes.
    videos: HashMap<String, HashMap<PathBuf, Entry>>,
    /// Last use → entry, oldest first: eviction takes from the front without a scan.
    order: BTreeMap<u64, (String, PathBuf)>,
    bytes: usize,
    tick: u64,
}

impl Inner {
    fn remove(&mut self, id: &str, rel: &Path) {
        let Some(files) = self.videos.get_mut(id) else { return };
        if let Some(e) = files.remove(rel) {
            self.order.remove(&e.used);
            self.bytes -= e.data.len();
        }
        if files.is_empty() {
            self.videos.remove(id);
        }
    }
}

/// The cache; `capacity` 0 turns it off.
pub struct SegmentCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl SegmentCache {
    pub fn new(capacity: usize) -> SegmentCache {
        SegmentCache { capacity, inner: Mutex::new(Inner::default()) }
    }

    /// Whether a file of `len` bytes may be admitted: one file takes at most an eighth of the
    /// cache, so a few big files cannot push out every segment of the videos being watched.
    pub fn admits(&self, len: u64) -> bool {
        len > 0 && len <= (self.capacity / 8) as u64
    }

    pub fn get(&self, id: &str, rel: &Path) -> Option<Bytes> {
        if self.capacity == 0 {
            return None;
        }
        let mut g = self.inner.lock().ok()?;
        g.tick += 1;
        let tick = g.tick;
        let e = g.videos.get_mut(id)?.get_mut(rel)?;
        let (old, data) = (std::mem::replace(&mut e.used, tick), e.data.clone());
        let key = g.order.remove(&old).unwrap_or_else(|| (id.to_string(), rel.to_path_buf()));
        g.order.insert(tick, key);
        Some(data)
    }

    /// Adds a file, evicting the least recently used ones until everything fits.
    pub fn insert(&self, id: &str, rel: PathBuf, data: Bytes) {
        if !self.admits(data.len() as u64) {
            return;
        }
        let Ok(mut g) = self.inner.lock() else { return };
        g.remove(id, &rel);
        g.tick += 1;
        let tick = g.tick;
        g.bytes += data.len();
        g.order.insert(tick, (id.to_string(), rel.clone()));
        g.videos.entry(id.to_string()).or_default().insert(rel, Entry { data, used: tick });
        while g.bytes > self.capacity {
            let Some((_, (v, p))) = g.order.pop_first() else { break };
            g.remove(&v, &p);
        }
    }

    /// Drops every entry of a video.
    pub fn forget(&self, id: &str) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(files) = g.videos.remove(id) {
                for e in files.values() {
                    g.order.remove(&e.used);
                    g.bytes -= e.data.len();
                }
            }
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize, v: u8) -> Bytes {
        Bytes::from(vec![v; n])
    }

    #[test]
    fn least_recently_used_goes_first_and_bytes_stay_bounded() {
        let c = SegmentCache::new(800);
        c.insert("a", "s1".into(), b(100, 1));
        c.insert("a", "s2".into(), b(100, 2));
        c.insert("b", "s1".into(), b(100, 3));
        assert_eq!(c.get("a", Path::new("s1")).unwrap()[0], 1); // s1 of a is now the newest
        for i in 0..5 {
            c.insert("c", format!("x{i}").into(), b(100, 9));
        }
        // 8 x 100 bytes fit; one more evicts the oldest (a/s2), then the next b/s1.
        assert_eq!(c.bytes(), 800);
        c.insert("c", "x5".into(), b(100, 9));
        assert!(c.get("a", Path::new("s2")).is_none());
        assert!(c.get("a", Path::new("s1")).is_some());
        assert!(c.get("b", Path::new("s1")).is_some());
        c.insert("c", "x6".into(), b(100, 9));
        assert!(c.get("c", Path::new("x0")).is_none(), "x0 was the least recently used");
        assert_eq!(c.bytes(), 800);
    }

    #[test]
    fn too_big_empty_and_disabled_are_not_kept() {
        let c = SegmentCache::new(800);
        c.insert("a", "big".into(), b(101, 1));
        c.insert("a", "empty".into(), Bytes::new());
        assert_eq!(c.bytes(), 0);
        let off = SegmentCache::new(0);
        off.insert("a", "s".into(), b(1, 1));
        assert!(off.get("a", Path::new("s")).is_none());
    }

    #[test]
    fn forget_drops_a_video_and_replacing_counts_once() {
        let c = SegmentCache::new(800);
        c.insert("a", "s1".into(), b(50, 1));
        c.insert("a", "s1".into(), b(60, 2));
        c.insert("b", "s1".into(), b(70, 3));
        assert_eq!(c.bytes(), 130);
        c.forget("a");
        assert_eq!(c.bytes(), 70);
        assert!(c.get("a", Path::new("s1")).is_none());
        assert_eq!(c.get("b", Path::new("s1")).unwrap().len(), 70);
    }
}
