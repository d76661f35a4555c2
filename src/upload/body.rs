//! A request body with limits, read by the multipart parser. The parser (multer) buffers the
//! preamble until the first boundary and a part's headers until their blank line, without a bound
//! of its own; it also waits for the next bytes as long as the client likes. [`Form`] hands it the
//! body one chunk at a time (the parser works through each chunk before it gets the next) and
//! counts the bytes it takes in without giving anything back: no new part, no content. More than a
//! few KiB of those (a preamble, a part's headers or an epilogue that does not end) cut the body
//! off, as does a client that sends nothing for the idle timeout. The parser alone searches the
//! file's bytes for the next boundary: this layer only counts, so a large upload pays for one
//! search, not two.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};

/// Limits on a multipart body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Longest wait for the next bytes.
    pub idle: Duration,
    /// Most bytes the parser may take in without yielding a part or content (a preamble, a
    /// part's header block or an epilogue; one read chunk more may be buffered).
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

/// A `multipart/form-data` body being parsed within [`BodyLimits`]. Read it through
/// [`Form::next_field`] and [`Form::chunk`]: they tell the limit that the parser made progress.
pub struct Form {
    parts: multer::Multipart<'static>,
    progress: Arc<AtomicU64>,
}

impl Form {
    /// Parses `body` as a form with this boundary.
    pub fn new(body: SharedBody, boundary: String, limits: BodyLimits) -> Form {
        let progress = Arc::new(AtomicU64::new(0));
        let stream = Bounded {
            body,
            guard: None,
            idle: Box::pin(tokio::time::sleep(limits.idle)),
            limits,
            progress: progress.clone(),
            seen: 0,
            since: 0,
            yielded: false,
            done: false,
        };
        Form { parts: multer::Multipart::new(stream, boundary), progress }
    }

    fn made_progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// The next part, if any.
    pub async fn next_field(&mut self) -> Result<Option<multer::Field<'static>>, multer::Error> {
        let field = self.parts.next_field().await?;
        self.made_progress();
        Ok(field)
    }

    /// The next piece of a part's content, if any.
    pub async fn chunk(&self, field: &mut multer::Field<'static>) -> Result<Option<Bytes>, multer::Error> {
        let chunk = field.chunk().await?;
        self.made_progress();
        Ok(chunk)
    }
}

/// The body as the parser reads it: one chunk per turn, cut off at the limits.
struct Bounded {
    body: SharedBody,
    /// The body's lock, held while the parser reads (taken at the first read).
    guard: Option<tokio::sync::OwnedMutexGuard<Chunks>>,
    idle: Pin<Box<tokio::time::Sleep>>,
    limits: BodyLimits,
    /// How often the reader of the parts has made progress, and what this stream last saw of it.
    progress: Arc<AtomicU64>,
    seen: u64,
    /// Bytes handed to the parser since it last made progress.
    since: u64,
    /// A chunk was just handed over: the parser works through it before the next one.
    yielded: bool,
    done: bool,
}

impl Bounded {
    fn end(&mut self, item: Option<Result<Bytes, BodyError>>) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.done = true;
        self.guard = None;
        Poll::Ready(item)
    }
}

impl Stream for Bounded {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.yielded {
            // multer reads its stream until it is pending before it parses: without this turn it
            // would take in every chunk that is ready, and the count below would mean nothing.
            this.yielded = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let progress = this.progress.load(Ordering::Relaxed);
        if progress != this.seen {
            this.seen = progress;
            this.since = 0;
        }
        if this.since > this.limits.framing as u64 {
            return this.end(Some(Err(BodyError::FramingTooLong(this.limits.framing))));
        }
        if this.guard.is_none() {
            match this.body.0.clone().try_lock_owned() {
                Ok(guard) => this.guard = Some(guard),
                Err(_) => return this.end(Some(Err(BodyError::Read("the body is already being read".into())))),
            }
        }
        let chunks = this.guard.as_mut().expect("taken above");
        match chunks.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.since += chunk.len() as u64;
                this.yielded = true;
                let deadline = tokio::time::Instant::now() + this.limits.idle;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => this.end(Some(Err(BodyError::Read(e)))),
            Poll::Ready(None) => this.end(None),
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => this.end(Some(Err(BodyError::Idle(this.limits.idle.as_secs())))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a form that arrives in pieces as the upload reader does; returns each part's name and
    /// content length, or the limit that cut the body off.
    async fn parse(body: Vec<Bytes>, limit: usize) -> Result<Vec<(String, usize)>, BodyError> {
        let stream = futures_util::stream::iter(body.into_iter().map(Ok::<_, std::io::Error>));
        let limits = BodyLimits { idle: Duration::from_secs(5), framing: limit };
        let mut form = Form::new(SharedBody::new(stream), "XyZ".into(), limits);
        let cut = |e: multer::Error| match &e {
            multer::Error::StreamReadFailed(inner) => inner.downcast_ref::<BodyError>().cloned().expect("a limit"),
            _ => BodyError::Read(e.to_string()),
        };
        let mut parts = Vec::new();
        while let Some(mut field) = form.next_field().await.map_err(cut)? {
            let mut len = 0;
            while let Some(chunk) = form.chunk(&mut field).await.map_err(cut)? {
                len += chunk.len();
            }
            parts.push((field.name().unwrap_or_default().to_string(), len));
        }
        Ok(parts)
    }

    async fn parse_in_pieces(body: &[u8], piece: usize, limit: usize) -> Result<Vec<(String, usize)>, BodyError> {
        parse(body.chunks(piece).map(Bytes::copy_from_slice).collect(), limit).await
    }

    fn form(preamble: &str, headers: &str, content: &[u8]) -> Vec<u8> {
        let mut v = format!("{preamble}--XyZ\r\n{headers}\r\n\r\n").into_bytes();
        v.extend_from_slice(content);
        v.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ--\r\n");
        v
    }

    #[tokio::test]
    async fn a_normal_form_passes_in_pieces_of_any_size() {
        // Content far larger than the limit, with bytes that look like parts of a boundary.
        let content: Vec<u8> =
            (0..100_000u32).flat_map(|i| if i % 7 == 0 { b"\r\n--Xy".to_vec() } else { vec![b'a' + (i % 20) as u8] }).collect();
        let body = form("", "Content-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"", &content);
        let want = vec![("file".to_string(), content.len()), ("title".to_string(), 5)];
        for piece in [1, 2, 3, 5, 64, 4096, 65_536, body.len()] {
            assert_eq!(parse_in_pieces(&body, piece, 1024).await, Ok(want.clone()), "pieces of {piece}");
        }
        // Many empty parts in a row: each one is progress.
        let mut body = "--XyZ\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n".repeat(200).into_bytes();
        body.extend_from_slice(&form("", "Content-Disposition: form-data; name=\"file\"", b"data"));
        let parts = parse_in_pieces(&body, 100, 1024).await.expect("empty parts pass");
        assert_eq!(parts.len(), 202);
    }

    #[tokio::test]
    async fn a_body_without_a_boundary_is_cut_off() {
        let body = vec![b'a'; 100_000];
        assert_eq!(parse_in_pieces(&body, 4096, 8192).await, Err(BodyError::FramingTooLong(8192)));
        // A boundary of another form does not count.
        let body = [b"--OtherBoundary\r\n".as_slice(), &vec![b'a'; 20_000]].concat();
        assert_eq!(parse_in_pieces(&body, 100, 8192).await, Err(BodyError::FramingTooLong(8192)));
    }

    #[tokio::test]
    async fn endless_part_headers_are_cut_off() {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Pad: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', 50_000));
        assert_eq!(parse_in_pieces(&body, 1000, 8192).await, Err(BodyError::FramingTooLong(8192)));
        // Many short header lines are as bad as one long one.
        let lines = "X-A: b\r\n".repeat(5000);
        let body = form("", &lines, b"data");
        assert_eq!(parse_in_pieces(&body, 777, 8192).await, Err(BodyError::FramingTooLong(8192)));
        // Endless headers in a second part, after a first part of any size, are cut off too.
        let mut body = form("", "Content-Disposition: form-data; name=\"file\"", &[b'x'; 100_000]);
        body.truncate(body.len() - b"--XyZ--\r\n".len());
        body.extend_from_slice(b"--XyZ\r\nX-Pad: ");
        body.extend(std::iter::repeat_n(b'a', 50_000));
        assert_eq!(parse_in_pieces(&body, 1000, 8192).await, Err(BodyError::FramingTooLong(8192)));
    }

    #[tokio::test]
    async fn at_most_one_chunk_beyond_the_limit_is_taken_in() {
        // However the client cuts its bytes, the parser is given at most the limit plus one chunk
        // without progress: count what this stream hands over before it refuses.
        for piece in [10, 1000, 8192, 20_000] {
            let body = vec![b'a'; 200_000];
            let chunks: Vec<Bytes> = body.chunks(piece).map(Bytes::copy_from_slice).collect();
            let handed = Arc::new(AtomicU64::new(0));
            let counted = handed.clone();
            let stream = futures_util::stream::iter(chunks).map(move |c| {
                counted.fetch_add(c.len() as u64, Ordering::Relaxed);
                Ok::<_, std::io::Error>(c)
            });
            let limits = BodyLimits { idle: Duration::from_secs(5), framing: 8192 };
            let mut form = Form::new(SharedBody::new(stream), "XyZ".into(), limits);
            assert!(form.next_field().await.is_err());
            let handed = handed.load(Ordering::Relaxed);
            assert!(handed <= 8192 + piece as u64, "pieces of {piece}: {handed} bytes taken in");
        }
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let body =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"--XyZ\r\n"))]).chain(futures_util::stream::pending());
        let limits = BodyLimits { idle: Duration::from_millis(50), framing: 8192 };
        let mut form = Form::new(SharedBody::new(body), "XyZ".into(), limits);
        let err = form.next_field().await.expect_err("cut off");
        let multer::Error::StreamReadFailed(inner) = &err else { panic!("{err:?}") };
        assert_eq!(inner.downcast_ref::<BodyError>(), Some(&BodyError::Idle(0)));
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
        // After the parser gave up, the rest of the body is still there to drain.
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 4096])));
        let shared = SharedBody::new(futures_util::stream::iter(chunks));
        let limits = BodyLimits { idle: Duration::from_secs(5), framing: 8192 };
        let mut form = Form::new(shared.clone(), "XyZ".into(), limits);
        assert!(form.next_field().await.is_err());
        drop(form);
        assert!(shared.drain(1 << 20, Duration::from_secs(5)).await);
    }
}
