//! The in-memory pipe between an inline flow's client and its relay: two byte queues in one
//! allocation, with what tokio's `DuplexStream` lacks for a flow that is mostly idle.
//!
//! - **Readiness.** [`PipeRead::poll_ready`] waits for bytes (or the end) without a buffer,
//!   so the relay makes its read buffer only once bytes wait, as it does for a TCP side.
//! - **No memory while idle.** A queue that a read empties lets its allocation go; an idle
//!   pipe is one allocation of about 130 bytes. `DuplexStream` kept each direction's
//!   largest burst allocated, and the relay side split it into two more `Arc`s.
//! - **A reset.** [`PipeRead::reset`] (the relay's) makes the client's next read or write
//!   fail with `ConnectionReset`, as a RST would; the bytes still queued for it are dropped,
//!   as the kernel drops a reset socket's receive queue.
//!
//! Each direction holds at most `max` bytes; past that its writer waits, as on a full socket
//! buffer. Closing a write side (shutdown or drop) is an end of stream to its reader once the
//! bytes before it are read; writing to a direction whose reader is gone fails with
//! `BrokenPipe`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Makes a pipe whose directions each buffer at most `max` bytes: the client's end and the
/// relay's two halves.
pub(crate) fn pipe(max: usize) -> (PipeEnd, PipeRead, PipeWrite) {
    let shared = Arc::new(Shared {
        max,
        state: Mutex::new(State::default()),
    });
    let client = PipeEnd {
        read: Half {
            shared: shared.clone(),
            way: TO_CLIENT,
        },
        write: Half {
            shared: shared.clone(),
            way: TO_RELAY,
        },
    };
    let read = PipeRead(Half {
        shared: shared.clone(),
        way: TO_RELAY,
    });
    let write = PipeWrite(Half {
        shared,
        way: TO_CLIENT,
    });
    (client, read, write)
}

const TO_CLIENT: usize = 0;
const TO_RELAY: usize = 1;

struct Shared {
    max: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ways: [Way; 2],
    reset: bool,
}

/// One direction.
#[derive(Default)]
struct Way {
    bytes: BytesMut,
    /// The writer shut it or is gone: an end of stream once `bytes` are read.
    closed: bool,
    /// The reader is gone: writes fail.
    unread: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Way {
    fn wake_reader(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "reset by the carrier")
}

fn store(waker: &mut Option<Waker>, cx: &Context<'_>) {
    match waker {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *waker = Some(cx.waker().clone()),
    }
}

/// One end's access to one direction.
struct Half {
    shared: Arc<Shared>,
    way: usize,
}

impl Half {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left the queues consistent (no method panics
        // between its changes), so a poisoned lock is used as it is.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        let way = &mut state.ways[self.way];
        if !way.bytes.is_empty() || way.closed {
            return Poll::Ready(Ok(()));
        }
        store(&mut way.reader, cx);
        Poll::Pending
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let mut state = self.lock();
        let way = &mut state.ways[self.way];
        if !way.bytes.is_empty() {
            let n = way.bytes.len().min(buf.remaining());
            buf.put_slice(&way.bytes[..n]);
            way.bytes.advance(n);
            if way.bytes.is_empty() {
                // An idle direction holds no allocation.
                way.bytes = BytesMut::new();
            }
            if n > 0 {
                way.wake_writer();
                coop.made_progress();
            }
            return Poll::Ready(Ok(()));
        }
        if way.closed {
            coop.made_progress();
            return Poll::Ready(Ok(()));
        }
        store(&mut way.reader, cx);
        Poll::Pending
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let max = self.shared.max;
        let mut state = self.lock();
        let way = &mut state.ways[self.way];
        if way.unread || way.closed {
            coop.made_progress();
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = max - way.bytes.len().min(max);
        if room == 0 && !buf.is_empty() {
            store(&mut way.writer, cx);
            return Poll::Pending;
        }
        let n = buf.len().min(room);
        way.bytes.extend_from_slice(&buf[..n]);
        way.wake_reader();
        coop.made_progress();
        Poll::Ready(Ok(n))
    }

    fn close_write(&self) {
        let mut state = self.lock();
        let way = &mut state.ways[self.way];
        way.closed = true;
        way.wake_reader();
    }

    fn close_read(&self) {
        let mut state = self.lock();
        let way = &mut state.ways[self.way];
        way.unread = true;
        way.bytes = BytesMut::new();
        way.wake_writer();
    }

    fn is_reset(&self) -> bool {
        self.lock().reset
    }
}

/// The client's end: reads what the relay writes, writes what the relay reads.
pub struct PipeEnd {
    read: Half,
    write: Half,
}

impl std::fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeEnd")
            .field("reset", &self.read.is_reset())
            .finish_non_exhaustive()
    }
}

impl PipeEnd {
    fn check(&self) -> io::Result<()> {
        if self.read.is_reset() {
            return Err(reset_error());
        }
        Ok(())
    }
}

impl AsyncRead for PipeEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        let filled = buf.filled().len();
        let polled = self.read.poll_read(cx, buf);
        // An end of stream after a reset is the reset.
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() == filled
        {
            self.check()?;
        }
        polled
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        match self.write.poll_write(cx, buf) {
            Poll::Ready(Err(error)) => {
                self.check()?;
                Poll::Ready(Err(error))
            }
            polled => polled,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write.close_write();
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.write.close_write();
        self.read.close_read();
    }
}

/// The relay's read half: what the client writes.
pub(crate) struct PipeRead(Half);

impl PipeRead {
    /// Ready once a read would not wait: bytes, or the client's end of stream.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_ready(cx)
    }

    /// Resets the pipe: the client's next read or write fails with `ConnectionReset`.
    pub(crate) fn reset(self, write: PipeWrite) {
        {
            let mut state = self.0.lock();
            state.reset = true;
            let to_client = &mut state.ways[TO_CLIENT];
            to_client.bytes = BytesMut::new();
            to_client.wake_reader();
            to_client.wake_writer();
            state.ways[TO_RELAY].wake_writer();
        }
        drop((self, write));
    }
}

impl AsyncRead for PipeRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_read(cx, buf)
    }
}

impl Drop for PipeRead {
    fn drop(&mut self) {
        self.0.close_read();
    }
}

/// The relay's write half: what the client reads.
pub(crate) struct PipeWrite(Half);

impl AsyncWrite for PipeWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.close_write();
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeWrite {
    fn drop(&mut self) {
        self.0.close_write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn capacity(half: &Half) -> usize {
        half.lock().ways[half.way].bytes.capacity()
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_drained_direction_holds_no_allocation() {
        let (mut client, mut read, mut write) = pipe(64);
        client.write_all(b"login").await.unwrap();
        assert!(capacity(&read.0) > 0);
        let mut got = [0u8; 16];
        let n = read.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"login");
        assert_eq!(capacity(&read.0), 0, "a drained direction let its bytes go");

        write.write_all(b"welcome").await.unwrap();
        let n = client.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"welcome");
        assert_eq!(capacity(&write.0), 0);
    }

    #[tokio::test]
    async fn readiness_waits_for_bytes_or_the_end() {
        let (mut client, read, _write) = pipe(64);
        let ready = |read: &PipeRead| {
            let waker = futures_noop_waker();
            let mut cx = Context::from_waker(&waker);
            read.poll_ready(&mut cx).is_ready()
        };
        assert!(!ready(&read), "nothing written: not ready");
        client.write_all(b"x").await.unwrap();
        assert!(ready(&read));
        let (client2, read2, _write2) = pipe(64);
        assert!(!ready(&read2));
        drop(client2);
        assert!(ready(&read2), "the client's end is an end of stream");
        drop(client);
    }

    #[tokio::test]
    async fn a_full_direction_makes_its_writer_wait_until_read() {
        let (mut client, mut read, _write) = pipe(4);
        let writing = tokio::spawn(async move {
            client.write_all(b"abcdefgh").await.unwrap();
            client
        });
        let mut got = Vec::new();
        while got.len() < 8 {
            let mut chunk = [0u8; 8];
            let n = read.read(&mut chunk).await.unwrap();
            assert!(n <= 4, "a direction holds at most its bound");
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, b"abcdefgh");
        writing.await.unwrap();
    }

    #[tokio::test]
    async fn a_reset_fails_the_clients_read_and_write_and_drops_what_was_queued() {
        let (mut client, read, mut write) = pipe(64);
        write.write_all(b"unread").await.unwrap();
        read.reset(write);
        let mut got = [0u8; 8];
        let error = client.read(&mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        let error = client.write_all(b"x").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn a_closed_side_is_an_end_of_stream_after_its_bytes_and_a_gone_reader_a_broken_pipe() {
        let (mut client, mut read, write) = pipe(64);
        client.write_all(b"bye").await.unwrap();
        client.shutdown().await.unwrap();
        let mut all = Vec::new();
        read.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"bye");
        drop(write);
        let mut got = [0u8; 4];
        assert_eq!(
            client.read(&mut got).await.unwrap(),
            0,
            "the relay's end closed"
        );
        drop(read);
        let (mut client, read, _write) = pipe(64);
        drop(read);
        let error = client.write_all(b"x").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    fn futures_noop_waker() -> Waker {
        Waker::noop().clone()
    }
}
