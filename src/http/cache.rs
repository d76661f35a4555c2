//! Segments of finished videos kept in memory, bounded in bytes, least recently used out first.
//!
//! A segment GET served from the file system costs a hand-off to the blocking pool, an open, a
//! path walk and a copy out of the page cache; from here it is a map lookup and a reference count.
//! Only segments of videos whose status is `ready` are admitted: their files never change again
//! (a retried job removes and rewrites its media, so segments of a video still processing could
//! be replaced). A deleted video's entries are dropped, and deleted videos are refused before the
//! cache is asked.

use std::collections::HashMap;
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
    bytes: usize,
    tick: u64,
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
        e.used = tick;
        Some(e.data.clone())
    }

    /// Adds a file, evicting the least recently used ones until everything fits.
    pub fn insert(&self, id: &str, rel: PathBuf, data: Bytes) {
        if !self.admits(data.len() as u64) {
            return;
        }
        let Ok(mut g) = self.inner.lock() else { return };
        g.tick += 1;
        let tick = g.tick;
        let len = data.len();
        let old = g.videos.entry(id.to_string()).or_default().insert(rel, Entry { data, used: tick });
        g.bytes = g.bytes + len - old.map_or(0, |o| o.data.len());
        while g.bytes > self.capacity {
            // A linear scan: at most capacity / smallest segment entries (a few hundred), and
            // only on a miss.
            let oldest = g
                .videos
                .iter()
                .flat_map(|(v, files)| files.iter().map(move |(p, e)| (e.used, v, p)))
                .min_by_key(|(used, _, _)| *used)
                .map(|(_, v, p)| (v.clone(), p.clone()));
            let Some((v, p)) = oldest else { break };
            let files = g.videos.get_mut(&v).expect("found above");
            let gone = files.remove(&p).map_or(0, |e| e.data.len());
            if files.is_empty() {
                g.videos.remove(&v);
            }
            g.bytes -= gone;
        }
    }

    /// Drops every entry of a video.
    pub fn forget(&self, id: &str) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(files) = g.videos.remove(id) {
                g.bytes -= files.values().map(|e| e.data.len()).sum::<usize>();
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
