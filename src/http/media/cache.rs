//! Segments of finished videos kept in memory, bounded in bytes.
//!
//! A segment GET served from the file system costs a hand-off to the blocking pool, an open, a
//! path walk and a copy out of the page cache; from here it is a map lookup and a reference count.
//! Only segments of videos whose status is `ready` are admitted: their files never change again
//! (a retried job removes and rewrites its media, so segments of a video still processing could
//! be replaced). A deleted video's entries are dropped, and deleted videos are refused before the
//! cache is asked.
//!
//! The store is `quick_cache`'s sharded cache, weighed in bytes. Its eviction (CLOCK-PRO, close to
//! S3-FIFO) keeps what is read again over what was read once, so one viewer seeking through a long
//! video does not push out the segments every viewer of a popular one reads; and a hit takes a
//! shard's read lock, not a lock every GET waits on.

use std::hash::Hash;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, Equivalent, OptionsBuilder, Weighter};

/// (video id, path in its media tree).
type Key = (String, PathBuf);

/// A key to look up without allocating one: it hashes exactly as `Key` does (a tuple and a
/// struct both hash their fields in order; `str`/`String` and `Path`/`PathBuf` hash alike).
#[derive(Hash)]
struct KeyRef<'a>(&'a str, &'a Path);

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// An entry weighs its bytes.
#[derive(Clone)]
struct ByLength;

impl Weighter<Key, Bytes> for ByLength {
    fn weight(&self, _key: &Key, data: &Bytes) -> u64 {
        data.len() as u64
    }
}

/// Files the cache is sized for: a 4 s segment of the middle rungs. Only a hint for the table
/// sizes (and the ghost list of recently evicted keys); the bound is in bytes.
const TYPICAL_FILE: usize = 256 << 10;

/// Shards: each holds a quarter of the bytes, so it fits a file of an eighth (the largest
/// admitted) twice over, and two GETs rarely meet on a lock.
const SHARDS: usize = 4;

/// The cache; `capacity` 0 turns it off.
pub struct SegmentCache {
    capacity: usize,
    files: Option<Cache<Key, Bytes, ByLength>>,
}

impl SegmentCache {
    pub fn new(capacity: usize) -> SegmentCache {
        let options = OptionsBuilder::new()
            .weight_capacity(capacity as u64)
            .estimated_items_capacity((capacity / TYPICAL_FILE).max(1))
            .shards(SHARDS)
            .build();
        let files = options
            .ok()
            .filter(|_| capacity > 0)
            .map(|o| Cache::with_options(o, ByLength, DefaultHashBuilder::default(), DefaultLifecycle::default()));
        SegmentCache { capacity, files }
    }

    /// Whether a file of `len` bytes may be admitted: one file takes at most an eighth of the
    /// cache, so a few big files cannot push out every segment of the videos being watched.
    pub fn admits(&self, len: u64) -> bool {
        len > 0 && len <= (self.capacity / 8) as u64
    }

    pub fn get(&self, id: &str, rel: &Path) -> Option<Bytes> {
        self.files.as_ref()?.get(&KeyRef(id, rel))
    }

    /// Adds a file, evicting others until everything fits.
    pub fn insert(&self, id: &str, rel: PathBuf, data: Bytes) {
        if let Some(files) = self.files.as_ref().filter(|_| self.admits(data.len() as u64)) {
            files.insert((id.to_string(), rel), data);
        }
    }

    /// Drops every entry of a video. A scan of the cache (a few hundred entries): videos are
    /// deleted rarely, and a per-video index would have to follow every eviction.
    pub fn forget(&self, id: &str) {
        if let Some(files) = &self.files {
            files.retain(|(video, _), _| video != id);
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.files.as_ref().map_or(0, |f| f.weight() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize, v: u8) -> Bytes {
        Bytes::from(vec![v; n])
    }

    #[test]
    fn bytes_stay_bounded_and_what_is_read_again_stays() {
        let c = SegmentCache::new(800);
        c.insert("a", "s1".into(), b(100, 1));
        c.insert("a", "s2".into(), b(100, 2));
        for _ in 0..3 {
            assert_eq!(c.get("a", Path::new("s1")).unwrap()[0], 1);
        }
        // A scan of files read once each, many times the capacity.
        for i in 0..100 {
            c.insert("scan", format!("x{i}").into(), b(100, 9));
            assert!(c.bytes() <= 800, "{} bytes after {i}", c.bytes());
        }
        assert!(c.bytes() >= 700, "the cache is used: {}", c.bytes());
        assert_eq!(c.get("a", Path::new("s1")).unwrap()[0], 1, "the file read again survived the scan");
        assert_eq!(c.get("scan", Path::new("x99")).unwrap()[0], 9, "the last one is there");
    }

    #[test]
    fn too_big_empty_and_disabled_are_not_kept() {
        let c = SegmentCache::new(800);
        assert!(c.admits(100) && !c.admits(101) && !c.admits(0));
        c.insert("a", "big".into(), b(101, 1));
        c.insert("a", "empty".into(), Bytes::new());
        assert_eq!(c.bytes(), 0);
        assert!(c.get("a", Path::new("big")).is_none());
        let off = SegmentCache::new(0);
        assert!(!off.admits(1));
        off.insert("a", "s".into(), b(1, 1));
        assert!(off.get("a", Path::new("s")).is_none());
        off.forget("a");
    }

    #[test]
    fn forget_drops_a_video_and_replacing_counts_once() {
        let c = SegmentCache::new(800);
        c.insert("a", "s1".into(), b(50, 1));
        c.insert("a", "s1".into(), b(60, 2));
        c.insert("a", "hls/720p/s2".into(), b(10, 2));
        c.insert("b", "s1".into(), b(70, 3));
        c.insert("ab", "s1".into(), b(5, 4));
        assert_eq!(c.bytes(), 145);
        assert_eq!(c.get("a", Path::new("s1")).unwrap().len(), 60);
        c.forget("a");
        assert_eq!(c.bytes(), 75);
        assert!(c.get("a", Path::new("s1")).is_none());
        assert!(c.get("a", Path::new("hls/720p/s2")).is_none());
        assert_eq!(c.get("b", Path::new("s1")).unwrap().len(), 70);
        assert_eq!(c.get("ab", Path::new("s1")).unwrap().len(), 5);
    }

    #[test]
    fn the_largest_admitted_file_fits_at_the_real_size() {
        let cap = 64 << 20;
        let c = SegmentCache::new(cap);
        let big = cap / 8;
        assert!(c.admits(big as u64));
        c.insert("a", "big".into(), b(big, 1));
        assert_eq!(c.get("a", Path::new("big")).map(|d| d.len()), Some(big));
    }
}
