//! Streaming ingest: transcoding an upload while it is still arriving. The upload keeps writing
//! the file to disk; the pipeline reads the same file behind it (a [`Growing`] file), so memory
//! stays bounded whatever the size and a slow pipeline never holds the upload back.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

// State 0 (the default) is "writing".
const DONE: u8 = 1;
const ABORTED: u8 = 2;

/// How far an upload has got, shared between the upload handler and the pipeline's reader.
#[derive(Debug, Default)]
pub struct Growing {
    written: AtomicU64,
    state: AtomicU8,
    lock: Mutex<()>,
    changed: Condvar,
}

/// What the reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Writing,
    Done,
    Aborted,
}

impl Growing {
    /// A new upload, nothing written yet.
    pub fn new() -> Growing {
        Growing::default()
    }

    fn set(&self, f: impl FnOnce()) {
        let _g = self.lock.lock();
        f();
        self.changed.notify_all();
    }

    /// `n` more bytes are on disk.
    pub fn wrote(&self, n: u64) {
        self.set(|| {
            self.written.fetch_add(n, Ordering::SeqCst);
        });
    }

    /// The upload completed.
    pub fn finish(&self) {
        self.set(|| self.state.store(DONE, Ordering::SeqCst));
    }

    /// The upload broke off.
    pub fn abort(&self) {
        self.set(|| self.state.store(ABORTED, Ordering::SeqCst));
    }

    /// Bytes on disk and the state now.
    pub fn now(&self) -> (u64, UploadState) {
        let s = match self.state.load(Ordering::SeqCst) {
            DONE => UploadState::Done,
            ABORTED => UploadState::Aborted,
            _ => UploadState::Writing,
        };
        (self.written.load(Ordering::SeqCst), s)
    }

    /// Blocks until more than `have` bytes are written, the upload ends, or `timeout` passes.
    pub fn wait_beyond(&self, have: u64, timeout: Duration) -> (u64, UploadState) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(guard, timeout, |_| {
                let (n, s) = self.now();
                n <= have && s == UploadState::Writing
            })
            .map(|(g, _)| drop(g));
        self.now()
    }
}

/// Whether a file with this beginning can be demuxed while it is still arriving: Matroska/WebM,
/// MPEG-TS, and MP4/MOV whose `moov` comes before `mdat` (faststart, or fragmented). `None` when
/// the bytes seen so far do not tell yet.
pub fn streamable(prefix: &[u8]) -> Option<bool> {
    if prefix.len() < 12 {
        return None;
    }
    if prefix.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(true);
    }
    if prefix[0] == 0x47 && prefix.len() >= 377 && prefix[188] == 0x47 && prefix[376] == 0x47 {
        return Some(true);
    }
    if &prefix[4..8] == b"ftyp" {
        // Walk the top-level boxes: moov first is streamable, mdat first is not.
        let mut pos = 0usize;
        while pos + 8 <= prefix.len() {
            let size32 = u32::from_be_bytes([prefix[pos], prefix[pos + 1], prefix[pos + 2], prefix[pos + 3]]) as u64;
            let kind = &prefix[pos + 4..pos + 8];
            match kind {
                b"moov" | b"moof" => return Some(true),
                b"mdat" => return Some(false),
                _ => {}
            }
            let size = match size32 {
                0 => return Some(false),
                1 => {
                    if pos + 16 > prefix.len() {
                        return None;
                    }
                    u64::from_be_bytes(prefix[pos + 8..pos + 16].try_into().ok()?)
                }
                n => n,
            };
            if size < 8 {
                return Some(false);
            }
            pos = pos.checked_add(size as usize)?;
        }
        return None;
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut v = ((body + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend(std::iter::repeat_n(0u8, body));
        v
    }

    #[test]
    fn detects_streamable_containers() {
        let mut mkv = vec![0x1A, 0x45, 0xDF, 0xA3];
        mkv.extend([0u8; 20]);
        assert_eq!(streamable(&mkv), Some(true));
        let mut ts = vec![0u8; 564];
        ts[0] = 0x47;
        ts[188] = 0x47;
        ts[376] = 0x47;
        assert_eq!(streamable(&ts), Some(true));
        let faststart = [bx(b"ftyp", 16), bx(b"moov", 100), bx(b"mdat", 50)].concat();
        assert_eq!(streamable(&faststart), Some(true));
        let fragmented = [bx(b"ftyp", 16), bx(b"moov", 10), bx(b"moof", 10)].concat();
        assert_eq!(streamable(&fragmented), Some(true));
        let moov_at_end = [bx(b"ftyp", 16), bx(b"free", 8), bx(b"mdat", 5000), bx(b"moov", 100)].concat();
        assert_eq!(streamable(&moov_at_end[..200]), Some(false));
        // Not enough bytes to see past a big box yet.
        let big_first = [bx(b"ftyp", 16), bx(b"uuid", 100_000)].concat();
        assert_eq!(streamable(&big_first[..1000]), None);
        assert_eq!(streamable(b"short"), None);
        assert_eq!(streamable(b"plain text that is no video at all"), Some(false));
    }

    #[test]
    fn growing_file_wakes_its_reader() {
        let g = std::sync::Arc::new(Growing::new());
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_beyond(0, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        g.wrote(10);
        assert_eq!(t.join().unwrap(), (10, UploadState::Writing));
        g.finish();
        assert_eq!(g.wait_beyond(10, Duration::from_secs(10)), (10, UploadState::Done));
    }
}
