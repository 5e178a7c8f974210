//! An in-memory byte pipe with a socket's manners, for the hop between a phone and its
//! carrier where the carrier model already decides when each chunk crosses:
//!
//! - the simulator's radio hop (imlab-sim), between a device and its carrier's host: a turmoil
//!   connection there only cost a socket pair, segment channels and timer-wheel work per chunk;
//! - `imlab load --carrier` ([`Proxy::connect_inline`](crate::Proxy::connect_inline)), between
//!   a client and the flow that relays it.
//!
//! A [`pipe`] is two queues of chunks, one each way; each end reads one and writes the other,
//! wakes the peer's reader when it writes, and closes on drop like a socket: the peer reads
//! the end of the stream once what was written before is read, and its writes fail with
//! `BrokenPipe`. Each direction holds at most the pipe's bound in bytes; past that its writer
//! waits, as on a full socket buffer. What a flow needs of it besides:
//!
//! - **Chunks as written.** [`PipeEnd::poll_chunk`] takes the next written chunk without a
//!   copy (the simulator's carrier reads so).
//! - **Readiness.** [`PipeEnd::poll_ready`] waits for bytes or the end without a buffer, so a
//!   relay makes its read buffer only once bytes wait, as it does for a TCP socket.
//! - **Nothing held while idle.** A chunk is let go once read, and an emptied queue lets its
//!   slots go: an idle pipe is its one shared allocation (192 bytes). tokio's `DuplexStream`
//!   kept each direction's largest burst allocated.
//! - **A reset.** [`PipeEnd::reset`] drops what is queued toward the peer, whose next read or
//!   write fails with `ConnectionReset`, as after a RST.
//! - **Halves.** [`PipeEnd::split`] gives a read half and a write half, each closing only its
//!   own direction when dropped.
//!
//! The simulator polls both ends from turmoil hosts' runtimes on one thread; the wakers cross
//! runtimes, which turmoil's fixed host order keeps deterministic.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which queue: toward the first end of [`pipe`]'s pair, or toward the second.
const TO_FIRST: u8 = 0;
const TO_SECOND: u8 = 1;

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
        self.chunks = VecDeque::new();
        self.bytes = 0;
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    /// After a read: the writer may go on, and an emptied queue lets its slots go (four at
    /// least, 128 bytes; keeping them cost `scale-10k` 4.6 MB at 2 simulated hours and
    /// nothing measurable in CPU).
    fn taken(&mut self) {
        if self.chunks.is_empty() && self.chunks.capacity() > 0 {
            self.chunks = VecDeque::new();
        }
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

struct State {
    queues: [Queue; 2],
    /// Bytes a queue holds at most. Four bytes, which with `reset` fit one word: the shared
    /// allocation then stays in jemalloc's 192-byte class (a word more took the simulator's
    /// `scale-10k` 1.9 MB higher).
    max: u32,
    /// One end reset the pipe: the other's reads and writes fail with `ConnectionReset`.
    reset: bool,
}

/// What an end may do: read its queue, write the other, or both.
const READS: u8 = 1;
const WRITES: u8 = 2;

/// One end of a [`pipe`] (or a half of one, after [`split`](PipeEnd::split)): reads one
/// queue, writes the other.
pub struct PipeEnd {
    state: Arc<Mutex<State>>,
    /// The queue it reads ([`TO_FIRST`] or [`TO_SECOND`]); it writes the other. A byte, so
    /// an end is two words: the simulator's flow task holds one, at the edge of its cell.
    reads: u8,
    can: u8,
}

impl std::fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeEnd")
            .field("reads", &self.reads)
            .field("can", &self.can)
            .finish_non_exhaustive()
    }
}

/// A new pipe whose directions each hold at most `max` bytes (up to 4 GiB): (the first end,
/// the second).
pub fn pipe(max: usize) -> (PipeEnd, PipeEnd) {
    let state = Arc::new(Mutex::new(State {
        queues: Default::default(),
        max: u32::try_from(max).unwrap_or(u32::MAX),
        reset: false,
    }));
    (
        PipeEnd {
            state: state.clone(),
            reads: TO_FIRST,
            can: READS | WRITES,
        },
        PipeEnd {
            state,
            reads: TO_SECOND,
            can: READS | WRITES,
        },
    )
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "reset by the carrier")
}

impl PipeEnd {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No method panics between its changes, so a poisoned lock's state is whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reads(&self) -> usize {
        usize::from(self.reads)
    }

    fn writes(&self) -> usize {
        1 - self.reads()
    }

    /// This end as two halves: one that only reads and one that only writes. Dropping the
    /// read half closes the reading direction (the peer's writes fail), dropping the write
    /// half the writing one (the peer reads the end of the stream).
    pub fn split(mut self) -> (PipeEnd, PipeEnd) {
        let read = PipeEnd {
            state: self.state.clone(),
            reads: self.reads,
            can: self.can & READS,
        };
        let write = PipeEnd {
            state: self.state.clone(),
            reads: self.reads,
            can: self.can & WRITES,
        };
        // This handle closes nothing when it goes.
        self.can = 0;
        (read, write)
    }

    /// Resets the pipe, as a RST: what is queued toward the peer is dropped, and the peer's
    /// next read or write fails with `ConnectionReset`. `other` is this end's other half, if
    /// it was split; both go.
    pub fn reset(self, other: Option<PipeEnd>) {
        {
            let writes = self.writes();
            let mut state = self.lock();
            state.reset = true;
            let toward_peer = &mut state.queues[writes];
            toward_peer.chunks = VecDeque::new();
            toward_peer.bytes = 0;
            if let Some(waker) = toward_peer.reader.take() {
                waker.wake();
            }
            if let Some(waker) = state.queues[self.reads()].writer.take() {
                waker.wake();
            }
        }
        drop((self, other));
    }

    /// The next chunk of at most `max` bytes, as written (no copy when it fits); `None` at
    /// the end of the stream. The carrier's side reads so, and it is the side that resets: a
    /// reset is not looked for here (a peer that reset has dropped its end, which reads as the
    /// end).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Option<Bytes>> {
        let reads = self.reads();
        let mut state = self.lock();
        let queue = &mut state.queues[reads];
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
        queue.taken();
        Poll::Ready(Some(chunk))
    }

    /// Ready once a read would not wait: bytes, the end of the stream, or a reset.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        if state.reset {
            return Poll::Ready(Err(reset_error()));
        }
        let queue = &mut state.queues[usize::from(self.reads)];
        if !queue.chunks.is_empty() || queue.writer_closed {
            return Poll::Ready(Ok(()));
        }
        queue.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The other end was dropped: it reads nothing more (what is queued toward it is gone,
    /// what it wrote before can still be read here).
    pub fn peer_dropped(&self) -> bool {
        self.lock().queues[self.writes()].reader_closed
    }

    fn poll_write_bytes(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let writes = self.writes();
        let mut state = self.lock();
        if state.reset {
            return Poll::Ready(Err(reset_error()));
        }
        let max = state.max as usize;
        let queue = &mut state.queues[writes];
        if queue.reader_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if queue.writer_closed {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        }
        if bytes.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = max.saturating_sub(queue.bytes);
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
        if self.can == 0 {
            return;
        }
        let (reads, writes) = (self.reads(), self.writes());
        let mut state = self.lock();
        if self.can & READS != 0 {
            state.queues[reads].close_reader();
        }
        if self.can & WRITES != 0 {
            state.queues[writes].close_writer();
        }
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
        let reads = self.reads();
        let mut state = self.lock();
        if state.reset {
            return Poll::Ready(Err(reset_error()));
        }
        let queue = &mut state.queues[reads];
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
        queue.taken();
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
        self.lock().queues[writes].close_writer();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MAX: usize = 256 * 1024;

    fn poll_ready_now(end: &PipeEnd) -> Poll<io::Result<()>> {
        end.poll_ready(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_pipes_shared_state_fits_192_bytes() {
        // The `Arc`'s counts and the mutex around the state: jemalloc's class for up to 192
        // bytes. Every device of a simulation holds at least one pipe.
        let size = 16 + std::mem::size_of::<Mutex<State>>();
        assert!(size <= 192, "a pipe's shared allocation is {size} bytes");
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_dropped_end_closes_the_stream() {
        let (mut phone, mut carrier) = pipe(MAX);
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
        let (mut phone, mut carrier) = pipe(MAX);
        let big = vec![7u8; MAX + 10];
        let written = phone.write(&big).await.unwrap();
        assert_eq!(written, MAX, "a write fills the pipe and no more");
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

    #[tokio::test]
    async fn readiness_waits_for_bytes_or_the_end() {
        let (mut client, relay) = pipe(MAX);
        assert!(poll_ready_now(&relay).is_pending(), "nothing written yet");
        client.write_all(b"x").await.unwrap();
        assert!(poll_ready_now(&relay).is_ready());
        let (client, relay) = pipe(MAX);
        assert!(poll_ready_now(&relay).is_pending());
        drop(client);
        assert!(
            poll_ready_now(&relay).is_ready(),
            "the end of the stream is ready"
        );
    }

    #[tokio::test]
    async fn an_emptied_queue_gives_its_slots_back() {
        let (mut client, mut relay) = pipe(MAX);
        let slots = |end: &PipeEnd| end.lock().queues[end.reads()].chunks.capacity();
        for _ in 0..100 {
            client.write_all(b"burst").await.unwrap();
        }
        assert!(slots(&relay) >= 100);
        let mut all = vec![0u8; 500];
        relay.read_exact(&mut all).await.unwrap();
        assert_eq!(slots(&relay), 0, "an idle queue keeps no slots");
        client.write_all(b"one").await.unwrap();
        let chunk = std::future::poll_fn(|cx| relay.poll_chunk(cx, 100)).await;
        assert_eq!(chunk.as_deref(), Some(&b"one"[..]));
        assert_eq!(slots(&relay), 0, "nor after a chunk is taken");
    }

    #[tokio::test]
    async fn a_reset_fails_the_peers_read_and_write_and_drops_what_was_queued_for_it() {
        let (mut client, relay) = pipe(MAX);
        let (read, mut write) = relay.split();
        write.write_all(b"unread").await.unwrap();
        read.reset(Some(write));
        assert!(matches!(poll_ready_now(&client), Poll::Ready(Err(_))));
        let mut got = [0u8; 8];
        let error = client.read(&mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        let error = client.write_all(b"x").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn a_half_closes_only_its_own_direction() {
        let (mut client, relay) = pipe(MAX);
        let (mut read, write) = relay.split();
        drop(write);
        let mut got = [0u8; 4];
        assert_eq!(client.read(&mut got).await.unwrap(), 0, "the end, that way");
        client.write_all(b"ping").await.unwrap();
        read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping", "the other way still carries bytes");
        drop(read);
        let error = client.write_all(b"x").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
