//! The radio hop: an in-memory byte pipe between a phone and its carrier's host.
//!
//! The carrier proxy decides when and whether every chunk crosses the radio link
//! (imlab-carrier's `FlowModel`), so the hop between a phone and its carrier needs no network
//! of its own: a turmoil connection there only cost a socket pair, segment channels and
//! timer-wheel work per chunk. A [`pipe`] is two queues of chunks, one each way; each end
//! reads one and writes the other, wakes the peer's reader when it writes, and closes on
//! drop like a socket: the peer reads the end of the stream, and its writes fail with
//! `BrokenPipe`.
//!
//! Both ends are polled from turmoil hosts' runtimes on one thread; the wakers cross
//! runtimes, which turmoil's fixed host order keeps deterministic.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes one direction queues at most; a writer then waits for the reader.
pub const PIPE_BYTES_MAX: usize = 256 * 1024;

/// Which queue: from the phone, or to it.
const UP: usize = 0;
const DOWN: usize = 1;

/// One direction.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// The writer shut down or dropped its end: the reader gets the end of the stream.
    writer_closed: bool,
    /// The reader dropped its end: writes fail.
    reader_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Queue {
    fn close_writer(&mut self) {
        self.writer_closed = true;
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    fn close_reader(&mut self) {
        self.reader_closed = true;
        self.chunks.clear();
        self.bytes = 0;
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

type Queues = Arc<Mutex<[Queue; 2]>>;

/// One end of a [`pipe`]: reads one queue, writes the other.
pub struct PipeEnd {
    queues: Queues,
    reads: usize,
}

/// A new pipe: (the phone's end, the carrier's end).
pub fn pipe() -> (PipeEnd, PipeEnd) {
    let queues: Queues = Arc::default();
    (
        PipeEnd {
            queues: queues.clone(),
            reads: DOWN,
        },
        PipeEnd { queues, reads: UP },
    )
}

impl PipeEnd {
    fn lock(&self) -> MutexGuard<'_, [Queue; 2]> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writes(&self) -> usize {
        1 - self.reads
    }

    /// The next chunk of at most `max` bytes, as written (no copy when it fits); `None` at
    /// the end of the stream.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Option<Bytes>> {
        let reads = self.reads;
        let mut queues = self.lock();
        let queue = &mut queues[reads];
        let Some(front) = queue.chunks.front_mut() else {
            if queue.writer_closed {
                return Poll::Ready(None);
            }
            queue.reader = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let chunk = if front.len() <= max {
            queue.chunks.pop_front().expect("a front chunk")
        } else {
            front.split_to(max)
        };
        queue.bytes -= chunk.len();
        if let Some(waker) = queue.writer.take() {
            waker.wake();
        }
        Poll::Ready(Some(chunk))
    }

    /// The other end was dropped: it reads nothing more (what is queued toward it is gone,
    /// what it wrote before can still be read here).
    pub fn peer_dropped(&self) -> bool {
        self.lock()[self.writes()].reader_closed
    }

    fn poll_write_bytes(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let writes = self.writes();
        let mut queues = self.lock();
        let queue = &mut queues[writes];
        if queue.reader_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if queue.writer_closed {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        }
        if bytes.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = PIPE_BYTES_MAX.saturating_sub(queue.bytes);
        if room == 0 {
            queue.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = bytes.len().min(room);
        queue.chunks.push_back(Bytes::copy_from_slice(&bytes[..n]));
        queue.bytes += n;
        if let Some(waker) = queue.reader.take() {
            waker.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let (reads, writes) = (self.reads, self.writes());
        let mut queues = self.lock();
        queues[reads].close_reader();
        queues[writes].close_writer();
    }
}

impl AsyncRead for PipeEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let reads = self.reads;
        let mut queues = self.lock();
        let queue = &mut queues[reads];
        if queue.chunks.is_empty() {
            if queue.writer_closed {
                return Poll::Ready(Ok(()));
            }
            queue.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        while buf.remaining() > 0 {
            let Some(front) = queue.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            queue.bytes -= n;
            if front.is_empty() {
                queue.chunks.pop_front();
            }
        }
        if let Some(waker) = queue.writer.take() {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bytes(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let writes = self.writes();
        self.lock()[writes].close_writer();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_dropped_end_closes_the_stream() {
        let (mut phone, mut carrier) = pipe();
        phone.write_all(b"hello").await.unwrap();
        phone.write_all(b" world").await.unwrap();
        let chunk = std::future::poll_fn(|cx| carrier.poll_chunk(cx, 3)).await;
        assert_eq!(chunk.as_deref(), Some(&b"hel"[..]));
        let chunk = std::future::poll_fn(|cx| carrier.poll_chunk(cx, 100)).await;
        assert_eq!(
            chunk.as_deref(),
            Some(&b"lo"[..]),
            "one written chunk at a time"
        );
        carrier.write_all(b"pong").await.unwrap();
        let mut read = [0u8; 16];
        let n = phone.read(&mut read).await.unwrap();
        assert_eq!(&read[..n], b"pong");

        phone.shutdown().await.unwrap();
        let chunk = std::future::poll_fn(|cx| carrier.poll_chunk(cx, 100)).await;
        assert_eq!(
            chunk.as_deref(),
            Some(&b" world"[..]),
            "queued bytes before the end"
        );
        assert_eq!(
            std::future::poll_fn(|cx| carrier.poll_chunk(cx, 100)).await,
            None
        );

        let error = phone.write_all(b"late").await.unwrap_err();
        assert_eq!(
            error.kind(),
            io::ErrorKind::NotConnected,
            "written after shutdown"
        );

        drop(carrier);
        assert_eq!(phone.read(&mut read).await.unwrap(), 0, "end of stream");
    }

    #[tokio::test]
    async fn a_writer_waits_at_the_bound_until_the_reader_takes_bytes() {
        let (mut phone, mut carrier) = pipe();
        let big = vec![7u8; PIPE_BYTES_MAX + 10];
        let written = phone.write(&big).await.unwrap();
        assert_eq!(
            written, PIPE_BYTES_MAX,
            "a write fills the pipe and no more"
        );
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut phone).poll_write(&mut cx, b"x").is_pending());
        let chunk = std::future::poll_fn(|cx| carrier.poll_chunk(cx, 1_000)).await;
        assert_eq!(chunk.map(|c| c.len()), Some(1_000));
        assert_eq!(
            phone.write(&big).await.unwrap(),
            1_000,
            "room again after a read"
        );
        drop(carrier);
        let error = phone.write(b"x").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
