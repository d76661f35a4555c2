//! A file that is still being uploaded, as its reader (a streamed transcode) sees it. The upload
//! keeps writing the file to disk; the pipeline reads the same file behind it, so memory stays
//! bounded whatever the size and a slow pipeline never holds the upload back.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

// State 0 (the default) is "writing".
const DONE: u8 = 1;
const ABORTED: u8 = 2;

/// How far an upload has got, shared between the upload handler and the pipeline's reader.
#[derive(Debug)]
pub struct Growing {
    written: AtomicU64,
    state: AtomicU8,
    lock: Mutex<()>,
    changed: Condvar,
    /// How long the reader may starve (see `STARVED_BYTES`) before it gives up.
    idle: Duration,
}

/// A reader that got fewer new bytes than this during the idle timeout is starving: the upload
/// trickles, and the transcode gives its slot back instead of waiting on it.
pub const STARVED_BYTES: u64 = 64 * 1024;

/// What the reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Writing,
    Done,
    Aborted,
}

impl Growing {
    /// A new upload, nothing written yet; its reader may starve for `idle` at most.
    pub fn new(idle: Duration) -> Growing {
        Growing { written: AtomicU64::new(0), state: AtomicU8::new(0), lock: Mutex::new(()), changed: Condvar::new(), idle }
    }

    /// How long a reader may get fewer than `STARVED_BYTES` new bytes before it gives up.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    fn set(&self, f: impl FnOnce()) {
        let _g = self.lock.lock();
        f();
        self.changed.notify_all();
    }

    /// The first `n` bytes are on disk.
    pub fn written_up_to(&self, n: u64) {
        self.set(|| {
            self.written.fetch_max(n, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_file_wakes_its_reader() {
        let g = std::sync::Arc::new(Growing::new(Duration::from_secs(60)));
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_beyond(0, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        g.written_up_to(10);
        assert_eq!(t.join().unwrap(), (10, UploadState::Writing));
        g.finish();
        assert_eq!(g.wait_beyond(10, Duration::from_secs(10)), (10, UploadState::Done));
    }
}
