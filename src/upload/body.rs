//! A request body with limits, before the multipart parser sees it. The parser (multer) buffers
//! the preamble until the first boundary and a part's headers until their blank line, without a
//! bound of its own; it also waits for the next bytes as long as the client likes. This stream
//! follows the multipart framing (boundaries and header blocks, not the file bytes) and fails
//! when the preamble, a part's headers or the epilogue grow beyond a few KiB, or when no byte
//! arrives for the idle timeout. File data passes through untouched, chunk by chunk.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use memchr::memmem;

/// Limits on a multipart body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Longest wait for the next bytes.
    pub idle: Duration,
    /// Longest preamble, part header block or epilogue, in bytes.
    pub framing: usize,
}

/// Why a body was cut off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("no upload bytes arrived for {0} s")]
    Idle(u64),
    #[error("the multipart preamble, a part's headers or the epilogue exceed {0} bytes")]
    FramingTooLong(usize),
    #[error("the upload connection failed: {0}")]
    Read(String),
}

/// Finds a byte pattern in data that arrives in pieces.
struct Finder {
    pattern: Vec<u8>,
    /// The end of the data seen so far that could still begin a match.
    carry: Vec<u8>,
}

impl Finder {
    fn new(pattern: Vec<u8>) -> Finder {
        Finder { pattern, carry: Vec::new() }
    }

    /// The index in `data` just after the first match that ends in it, if any.
    fn find(&mut self, data: &[u8]) -> Option<usize> {
        let p = self.pattern.len();
        if !self.carry.is_empty() {
            // A match that starts in the carried bytes ends within the first `p - 1` bytes of `data`.
            let carried = self.carry.len();
            self.carry.extend_from_slice(&data[..data.len().min(p - 1)]);
            if let Some(i) = memmem::find(&self.carry, &self.pattern) {
                self.carry.clear();
                return Some(i + p - carried);
            }
            if data.len() < p - 1 {
                // Everything is still carried: keep its last `p - 1` bytes.
                let excess = self.carry.len().saturating_sub(p - 1);
                self.carry.drain(..excess);
                return None;
            }
            self.carry.clear();
        }
        if let Some(i) = memmem::find(data, &self.pattern) {
            return Some(i + p);
        }
        let keep = data.len().min(p - 1);
        self.carry.extend_from_slice(&data[data.len() - keep..]);
        None
    }
}

/// Where in the multipart framing the bytes seen so far end.
enum Section {
    /// Before the first boundary, or after the last (`used` bytes of it so far).
    Preamble { used: usize },
    /// A part's header block.
    Headers { used: usize },
    /// A part's content: unbounded, passed through.
    Content,
}

/// Follows the framing of a multipart body and checks its limits.
struct Framing {
    section: Section,
    first: Finder,
    header_end: Finder,
    delimiter: Finder,
    limit: usize,
}

impl Framing {
    fn new(boundary: &str, limit: usize) -> Framing {
        Framing {
            section: Section::Preamble { used: 0 },
            first: Finder::new(format!("--{boundary}").into_bytes()),
            header_end: Finder::new(b"\r\n\r\n".to_vec()),
            delimiter: Finder::new(format!("\r\n--{boundary}").into_bytes()),
            limit,
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), BodyError> {
        while !data.is_empty() {
            let (finder, used) = match &mut self.section {
                Section::Preamble { used } => (&mut self.first, Some(used)),
                Section::Headers { used } => (&mut self.header_end, Some(used)),
                Section::Content => (&mut self.delimiter, None),
            };
            let found = finder.find(data);
            let consumed = found.unwrap_or(data.len());
            if let Some(used) = used {
                *used += consumed;
                if *used > self.limit {
                    return Err(BodyError::FramingTooLong(self.limit));
                }
            }
            data = &data[consumed..];
            if found.is_some() {
                // After a boundary come headers (or, after the closing one, the epilogue, which
                // the same limit bounds); after headers, content.
                self.section = match self.section {
                    Section::Preamble { .. } | Section::Content => Section::Headers { used: 0 },
                    Section::Headers { .. } => Section::Content,
                };
            }
        }
        Ok(())
    }
}

type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// A request body that the multipart parser reads and that is still there after the parser has
/// given up: a refused upload reads (and drops) the rest of a small body before it answers, so
/// the client, still sending, gets the answer instead of a reset connection.
#[derive(Clone)]
pub struct SharedBody(Arc<tokio::sync::Mutex<Chunks>>);

impl SharedBody {
    /// Wraps a body stream.
    pub fn new<S, B, E>(body: S) -> SharedBody
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: Buf,
        E: std::fmt::Display,
    {
        let chunks: Chunks = Box::pin(body.map(|r| r.map(|mut b| b.copy_to_bytes(b.remaining())).map_err(|e| e.to_string())));
        SharedBody(Arc::new(tokio::sync::Mutex::new(chunks)))
    }

    async fn next(&self) -> Option<Result<Bytes, String>> {
        self.0.lock().await.next().await
    }

    /// The body's chunks, read through this shared handle (what is not read stays for `drain`).
    pub fn stream(&self) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin + 'static {
        Box::pin(futures_util::stream::unfold(self.clone(), |body| async move { body.next().await.map(|item| (item, body)) }))
    }

    /// Reads and drops what is left, up to `max` bytes, while bytes keep coming within `idle`.
    /// Returns whether the body ended.
    pub async fn drain(&self, max: u64, idle: Duration) -> bool {
        let mut read = 0u64;
        while read <= max {
            match tokio::time::timeout(idle, self.next()).await {
                Ok(Some(Ok(chunk))) => read += chunk.len() as u64,
                Ok(None) => return true,
                Ok(Some(Err(_))) | Err(_) => return false,
            }
        }
        false
    }
}

/// The body as a stream of chunks that ends with an error when a limit is crossed.
pub fn bounded(body: SharedBody, boundary: &str, limits: BodyLimits) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
    let state = (body, Framing::new(boundary, limits.framing), false);
    futures_util::stream::unfold(state, move |(body, mut framing, failed)| async move {
        if failed {
            return None;
        }
        let item = match tokio::time::timeout(limits.idle, body.next()).await {
            Err(_) => Err(BodyError::Idle(limits.idle.as_secs())),
            Ok(None) => return None,
            Ok(Some(Err(e))) => Err(BodyError::Read(e)),
            Ok(Some(Ok(chunk))) => framing.feed(&chunk).map(|()| chunk),
        };
        let failed = item.is_err();
        Some((item, (body, framing, failed)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_in_pieces(body: &[u8], piece: usize, limit: usize) -> Result<(), BodyError> {
        let mut f = Framing::new("XyZ", limit);
        body.chunks(piece).try_for_each(|c| f.feed(c))
    }

    fn form(preamble: &str, headers: &str, content: &[u8]) -> Vec<u8> {
        let mut v = format!("{preamble}--XyZ\r\n{headers}\r\n\r\n").into_bytes();
        v.extend_from_slice(content);
        v.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ--\r\n");
        v
    }

    #[test]
    fn a_normal_form_passes_in_pieces_of_any_size() {
        // Content far larger than the limit, with bytes that look like parts of a boundary.
        let content: Vec<u8> =
            (0..100_000u32).flat_map(|i| if i % 7 == 0 { b"\r\n--Xy".to_vec() } else { vec![b'a' + (i % 20) as u8] }).collect();
        let body = form("", "Content-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"", &content);
        for piece in [1, 2, 3, 5, 64, 4096, body.len()] {
            assert_eq!(feed_in_pieces(&body, piece, 1024), Ok(()), "pieces of {piece}");
        }
    }

    #[test]
    fn a_body_without_a_boundary_is_cut_off() {
        let body = vec![b'a'; 100_000];
        assert_eq!(feed_in_pieces(&body, 4096, 8192), Err(BodyError::FramingTooLong(8192)));
        // A boundary of another form does not count.
        let body = [b"--OtherBoundary\r\n".as_slice(), &vec![b'a'; 20_000]].concat();
        assert!(feed_in_pieces(&body, 100, 8192).is_err());
    }

    #[test]
    fn endless_part_headers_are_cut_off() {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Pad: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', 50_000));
        assert_eq!(feed_in_pieces(&body, 1000, 8192), Err(BodyError::FramingTooLong(8192)));
        // Many short header lines are as bad as one long one.
        let lines = "X-A: b\r\n".repeat(5000);
        let body = form("", &lines, b"data");
        assert_eq!(feed_in_pieces(&body, 777, 8192), Err(BodyError::FramingTooLong(8192)));
        // The same headers in a second part are counted again from zero, and a long epilogue is refused.
        let mut body = form("", "Content-Disposition: form-data; name=\"file\"", b"data");
        assert_eq!(feed_in_pieces(&body, 10, 8192), Ok(()));
        body.extend(std::iter::repeat_n(b'z', 10_000));
        assert!(feed_in_pieces(&body, 10, 8192).is_err());
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let body =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"--XyZ\r\n"))]).chain(futures_util::stream::pending());
        let limits = BodyLimits { idle: Duration::from_millis(50), framing: 8192 };
        let got: Vec<_> = bounded(SharedBody::new(body), "XyZ", limits).collect().await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err(BodyError::Idle(0)));
    }

    #[tokio::test]
    async fn what_the_parser_left_can_be_drained_within_bounds() {
        let chunks = || (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1000])));
        let body = SharedBody::new(futures_util::stream::iter(chunks()));
        assert!(body.drain(20_000, Duration::from_secs(5)).await, "a small rest is read to its end");
        let body = SharedBody::new(futures_util::stream::iter(chunks()));
        assert!(!body.drain(3_000, Duration::from_secs(5)).await, "a large rest is not");
        let body = SharedBody::new(futures_util::stream::iter(chunks()).chain(futures_util::stream::pending()));
        assert!(!body.drain(1 << 20, Duration::from_millis(50)).await, "a silent client is not waited for");
    }
}
