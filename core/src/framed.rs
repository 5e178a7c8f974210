//! Frame I/O over any async byte stream, with buffers that stay small on idle connections.
//!
//! A server holds many idle connections, so buffer memory per connection matters, and so does
//! the syscall per frame: the read buffer is released whenever it is empty, and the write
//! buffer after each flush, so an idle connection holds neither. A read that
//! starts with nothing buffered goes into a scratch buffer of the thread's
//! ([`SCRATCH_READ_BYTES`]), and only the bytes read are copied to the connection's buffer:
//! a whole frame, or several, costs one read syscall, and a connection waiting for its peer
//! holds no read buffer while it waits.
//! [`FrameReader::next`] is cancel-safe, so it can sit in a `select!`.
//!
//! [`FrameReader`] and [`FrameWriter`] each own a stream (two halves of a split one, say);
//! [`FrameIo`] is both over one stream, for a connection that one task reads and writes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::codec::{self, CodecError, Decoded, FrameIoError};
use crate::proto::Frame;

/// Bytes requested from the socket at least per read once a frame is under way.
const READ_CHUNK_BYTES: usize = 4 * 1024;

/// Bytes one read takes at most while no frame is under way (into the thread's scratch
/// buffer, not the connection's): a frame or a batch of frames in one syscall.
pub const SCRATCH_READ_BYTES: usize = 16 * 1024;

thread_local! {
    /// The reads' scratch buffer: one per thread, borrowed only inside one `poll_read`.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_READ_BYTES].into_boxed_slice());
}

/// One read from `stream` into the thread's scratch buffer ([`SCRATCH_READ_BYTES`]), the
/// bytes read appended to `buffer`: a connection waiting for its peer needs no buffer of its
/// own while it waits (the frame readers here, and the load generator's MQTT sessions). Nothing
/// is read unless the poll completes; `Ok(0)` is the end of the stream.
pub fn poll_read_appending<R: AsyncRead + Unpin>(
    stream: &mut R,
    buffer: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut read = ReadBuf::new(&mut scratch[..]);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        buffer.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
}

/// What a frame reader keeps between reads: the bytes of frames not yet whole, and a count.
/// Driven by [`FrameReader`] (a stream of its own) and [`FrameIo`] (a stream shared with the
/// writer), which lend it the stream.
#[derive(Debug, Default)]
struct ReadBuffer {
    buffer: BytesMut,
}

impl ReadBuffer {
    /// A frame when one is whole, reading from `inner` as much as it takes; `Pending` (with
    /// the task's waker registered) when the stream has nothing more yet.
    /// Every byte read is counted in `bytes_read`.
    fn poll_next<R: AsyncRead + Unpin>(
        &mut self,
        inner: &mut R,
        max_frame_bytes: usize,
        bytes_read: &mut u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, FrameIoError>> {
        loop {
            let want = match self.decode_buffered(max_frame_bytes)? {
                Ok(frame) => return Poll::Ready(Ok(Some(frame))),
                Err(want) => want,
            };
            let n_read = if self.buffer.is_empty() {
                ready!(self.poll_read_into_scratch(inner, cx))?
            } else {
                self.buffer.reserve(want);
                ready!(tokio_util::io::poll_read_buf(
                    Pin::new(&mut *inner),
                    cx,
                    &mut self.buffer
                ))?
            };
            if n_read == 0 {
                return Poll::Ready(self.ended());
            }
            *bytes_read += n_read as u64;
        }
    }

    /// One read into the thread's scratch buffer; what it read is appended to the (empty)
    /// buffer. Nothing is read unless the poll completes.
    fn poll_read_into_scratch<R: AsyncRead + Unpin>(
        &mut self,
        inner: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        poll_read_appending(inner, &mut self.buffer, cx)
    }

    /// A whole buffered frame, or how many bytes to read for the next one.
    fn decode_buffered(
        &mut self,
        max_frame_bytes: usize,
    ) -> Result<Result<Frame, usize>, CodecError> {
        match codec::decode(&self.buffer, max_frame_bytes)? {
            Decoded::Frame {
                frame,
                consumed_bytes,
            } => {
                self.buffer.advance(consumed_bytes);
                if self.buffer.is_empty() {
                    self.buffer = BytesMut::new();
                }
                Ok(Ok(frame))
            }
            // `needed_bytes` is bounded by the validated length prefix.
            Decoded::Incomplete { needed_bytes } => {
                Ok(Err(needed_bytes.max(READ_CHUNK_BYTES.min(max_frame_bytes))))
            }
        }
    }

    /// The stream ended: cleanly between frames, or inside one.
    fn ended(&self) -> Result<Option<Frame>, FrameIoError> {
        if self.buffer.is_empty() {
            return Ok(None);
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "stream ended inside a frame ({} bytes buffered)",
                self.buffer.len()
            ),
        )
        .into())
    }
}

/// What a frame writer keeps between writes: the frames buffered and not yet written.
#[derive(Debug, Default)]
struct WriteBuffer {
    buffer: BytesMut,
}

impl WriteBuffer {
    /// Buffers one frame. A frame over the limit is refused: it is a bug in the sender.
    fn feed(&mut self, frame: &Frame, max_frame_bytes: usize) -> Result<(), CodecError> {
        let length_bytes = prost::Message::encoded_len(frame);
        if length_bytes > max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                declared_bytes: length_bytes,
                max_frame_bytes,
            });
        }
        codec::encode(frame, &mut self.buffer);
        Ok(())
    }

    fn feed_notify_data(
        &mut self,
        seq: u64,
        message_without_seq: &[u8],
        max_frame_bytes: usize,
    ) -> Result<(), CodecError> {
        let length_bytes = codec::notify_data_len(seq, message_without_seq);
        if length_bytes > max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                declared_bytes: length_bytes,
                max_frame_bytes,
            });
        }
        codec::encode_notify_data(seq, message_without_seq, &mut self.buffer);
        Ok(())
    }

    /// Writes what `inner` takes now; `Ready` once everything buffered is written and the
    /// stream flushed (the buffer is then released).
    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        while !self.buffer.is_empty() {
            let n_written = ready!(Pin::new(&mut *inner).poll_write(cx, &self.buffer))?;
            if n_written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.buffer.advance(n_written);
        }
        ready!(Pin::new(&mut *inner).poll_flush(cx))?;
        self.buffer = BytesMut::new();
        Poll::Ready(Ok(()))
    }
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    read: ReadBuffer,
    bytes_read: u64,
    max_frame_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames of at most `max_frame_bytes` from `inner`.
    pub fn new(inner: R, max_frame_bytes: usize) -> FrameReader<R> {
        FrameReader {
            inner,
            read: ReadBuffer::default(),
            bytes_read: 0,
            max_frame_bytes,
        }
    }

    /// Bytes read from the stream so far, whole frames or not: proof that the peer and the
    /// path are alive even while a large frame is still arriving on a slow link.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    ///
    /// Cancel-safe: bytes read so far stay in the buffer for the next call.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameIoError> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`FrameReader::next`] for a hand-written future: a frame when one is whole, reading
    /// as much as it takes; `Pending` (with the task's waker registered) when the stream has
    /// nothing more yet. Bytes read stay in the buffer across calls.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, FrameIoError>> {
        self.read.poll_next(
            &mut self.inner,
            self.max_frame_bytes,
            &mut self.bytes_read,
            cx,
        )
    }

    /// The next frame if it is already whole in the buffer; never reads. For handling every
    /// frame of one read before writing the replies.
    pub fn next_buffered(&mut self) -> Result<Option<Frame>, CodecError> {
        Ok(self.read.decode_buffered(self.max_frame_bytes)?.ok())
    }
}

/// Writes frames to a byte stream; frames are buffered by [`FrameWriter::feed`] and written by
/// [`FrameWriter::flush`].
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    write: WriteBuffer,
    max_frame_bytes: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Writes frames of at most `max_frame_bytes` to `inner`.
    pub fn new(inner: W, max_frame_bytes: usize) -> FrameWriter<W> {
        FrameWriter {
            inner,
            write: WriteBuffer::default(),
            max_frame_bytes,
        }
    }

    /// Buffers one frame. A frame over the limit is refused: it is a bug in the sender.
    pub fn feed(&mut self, frame: &Frame) -> Result<(), CodecError> {
        self.write.feed(frame, self.max_frame_bytes)
    }

    /// Buffers a NotifyData frame from a seq and the message's encoding without it
    /// ([`codec::encode_message_without_seq`]): the bytes [`FrameWriter::feed`] would write for
    /// it, without rebuilding the message. Refused over the limit like any frame.
    pub fn feed_notify_data(
        &mut self,
        seq: u64,
        message_without_seq: &[u8],
    ) -> Result<(), CodecError> {
        self.write
            .feed_notify_data(seq, message_without_seq, self.max_frame_bytes)
    }

    /// Bytes buffered and not yet written.
    pub fn buffered_bytes(&self) -> usize {
        self.write.buffer.len()
    }

    /// Writes everything buffered and flushes the stream.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// [`FrameWriter::flush`] for a hand-written future: writes what the stream takes now;
    /// `Ready` once everything buffered is written and the stream flushed (the buffer is then
    /// released), `Pending` with the rest still buffered.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.write.poll_flush(&mut self.inner, cx)
    }

    /// Feeds and flushes one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), FrameIoError> {
        self.feed(frame)?;
        self.flush().await?;
        Ok(())
    }

    /// Shuts the write side down (TCP FIN).
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.inner.shutdown().await
    }
}

/// Frames both ways over one stream that one task drives: [`FrameReader`] and [`FrameWriter`]
/// in one value, without splitting the stream.
///
/// For a connection whose reads and writes happen in one task (the server's and the client
/// core's): a split stream (`tokio::io::split`) keeps the stream behind a lock in an
/// allocation of its own (64 bytes for a `TcpStream`, `-Zprint-type-sizes`) and each half
/// holds a pointer to it; here the stream sits inline and the limit is kept once.
/// Reading and writing behave exactly as [`FrameReader`]'s and [`FrameWriter`]'s: the same
/// buffers, released when empty, and the same scratch-buffer reads. The two buffers are one
/// allocation that exists only while either holds bytes: a connection between frames keeps
/// one pointer where two empty buffers took 64 bytes, in every task that holds one (a load
/// generator's client cores, tens of thousands).
#[derive(Debug)]
pub struct FrameIo<S> {
    stream: S,
    /// The bytes of frames not yet whole and of frames not yet written; `None` while both
    /// are empty.
    buffers: Option<Box<Buffers>>,
    bytes_read: u64,
    max_frame_bytes: usize,
}

/// A [`FrameIo`]'s buffers, while it has bytes in either.
#[derive(Debug, Default)]
struct Buffers {
    read: ReadBuffer,
    write: WriteBuffer,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameIo<S> {
    /// Frames of at most `max_frame_bytes` both ways over `stream`.
    pub fn new(stream: S, max_frame_bytes: usize) -> FrameIo<S> {
        FrameIo {
            stream,
            buffers: None,
            bytes_read: 0,
            max_frame_bytes,
        }
    }

    /// Frees the buffers once neither holds a byte.
    fn release_if_empty(&mut self) {
        if self.buffers.as_ref().is_some_and(|buffers| {
            buffers.read.buffer.is_empty() && buffers.write.buffer.is_empty()
        }) {
            self.buffers = None;
        }
    }

    /// As [`FrameReader::bytes_read`].
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// As [`FrameReader::next`]; cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameIoError> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// As [`FrameReader::poll_next`]. With nothing buffered, the first read goes into the
    /// thread's scratch buffer and the buffers are made only if it brings bytes, so a
    /// connection waiting for its peer allocates nothing.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, FrameIoError>> {
        let buffers = match &mut self.buffers {
            Some(buffers) => buffers,
            None => {
                let mut read = ReadBuffer::default();
                let n_read = ready!(read.poll_read_into_scratch(&mut self.stream, cx))?;
                if n_read == 0 {
                    return Poll::Ready(Ok(None));
                }
                self.bytes_read += n_read as u64;
                self.buffers.insert(Box::new(Buffers {
                    read,
                    write: WriteBuffer::default(),
                }))
            }
        };
        let next = buffers.read.poll_next(
            &mut self.stream,
            self.max_frame_bytes,
            &mut self.bytes_read,
            cx,
        );
        self.release_if_empty();
        next
    }

    /// As [`FrameReader::next_buffered`].
    pub fn next_buffered(&mut self) -> Result<Option<Frame>, CodecError> {
        let Some(buffers) = &mut self.buffers else {
            return Ok(None);
        };
        let frame = buffers.read.decode_buffered(self.max_frame_bytes)?.ok();
        self.release_if_empty();
        Ok(frame)
    }

    /// As [`FrameWriter::feed`].
    pub fn feed(&mut self, frame: &Frame) -> Result<(), CodecError> {
        let fed = self
            .buffers
            .get_or_insert_default()
            .write
            .feed(frame, self.max_frame_bytes);
        self.release_if_empty();
        fed
    }

    /// As [`FrameWriter::feed_notify_data`].
    pub fn feed_notify_data(
        &mut self,
        seq: u64,
        message_without_seq: &[u8],
    ) -> Result<(), CodecError> {
        let fed = self.buffers.get_or_insert_default().write.feed_notify_data(
            seq,
            message_without_seq,
            self.max_frame_bytes,
        );
        self.release_if_empty();
        fed
    }

    /// As [`FrameWriter::buffered_bytes`].
    pub fn buffered_bytes(&self) -> usize {
        self.buffers
            .as_ref()
            .map_or(0, |buffers| buffers.write.buffer.len())
    }

    /// As [`FrameWriter::flush`].
    pub async fn flush(&mut self) -> std::io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// As [`FrameWriter::poll_flush`].
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(buffers) = &mut self.buffers else {
            return Pin::new(&mut self.stream).poll_flush(cx);
        };
        let flushed = ready!(buffers.write.poll_flush(&mut self.stream, cx));
        self.release_if_empty();
        Poll::Ready(flushed)
    }

    /// As [`FrameWriter::send`].
    pub async fn send(&mut self, frame: &Frame) -> Result<(), FrameIoError> {
        self.feed(frame)?;
        self.flush().await?;
        Ok(())
    }

    /// As [`FrameWriter::shutdown`].
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Body, Ping};
    use tokio::io::AsyncWriteExt;

    fn ping(id: u64) -> Frame {
        Frame::new(Body::Ping(Ping { id }))
    }

    /// `FrameIo`'s buffers exist only while bytes wait in either, and a frame split across
    /// reads survives a write in between.
    #[tokio::test]
    async fn frame_io_holds_buffers_only_while_bytes_wait() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut io = FrameIo::new(near, 4096);
        assert!(io.buffers.is_none(), "a new connection holds no buffers");

        let bytes = codec::encode_to_vec(&ping(7));
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        far.write_all(head).await.unwrap();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(io.poll_next(&mut cx).is_pending());
        assert!(io.buffers.is_some(), "half a frame is kept");

        // A write while half a frame waits: the write goes out, the half stays.
        io.feed(&ping(8)).unwrap();
        assert!(io.buffered_bytes() > 0);
        io.flush().await.unwrap();
        assert_eq!(io.buffered_bytes(), 0);
        assert!(io.buffers.is_some(), "the half frame is still kept");

        far.write_all(tail).await.unwrap();
        let frame = io.next().await.unwrap().expect("the frame, whole");
        assert_eq!(frame, ping(7));
        assert!(io.buffers.is_none(), "nothing waits: the buffers are gone");
        assert_eq!(io.bytes_read(), bytes.len() as u64);

        // Two frames in one read: the second stays buffered until taken.
        let mut two = codec::encode_to_vec(&ping(9));
        two.extend(codec::encode_to_vec(&ping(10)));
        far.write_all(&two).await.unwrap();
        assert_eq!(io.next().await.unwrap(), Some(ping(9)));
        assert!(io.buffers.is_some());
        assert_eq!(io.next_buffered().unwrap(), Some(ping(10)));
        assert!(io.buffers.is_none());
        assert_eq!(io.next_buffered().unwrap(), None);

        // What the far end read: the ping written in between, whole.
        let mut reader = FrameReader::new(far, 4096);
        assert_eq!(reader.next().await.unwrap(), Some(ping(8)));
        drop(io);
        assert_eq!(
            reader.next().await.unwrap(),
            None,
            "a clean end between frames"
        );
    }
}
