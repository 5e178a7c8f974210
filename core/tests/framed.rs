//! Syscalls per frame: the reader reads a frame that arrives whole in one read, the writer
//! writes frames queued together in one write, and the server answers a burst of requests
//! with one write. Counted through wrapping streams, never timed.

mod common;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use imlab_core::codec::{self, DEFAULT_MAX_FRAME_BYTES};
use imlab_core::framed::{FrameReader, FrameWriter};
use imlab_core::net::memory::{self, MemoryListener};
use imlab_core::net::{Listener, NoHandshake, no_handshake};
use imlab_core::proto::{self, Body, Frame};
use imlab_core::server::{Server, ServerConfig};
use imlab_core::store::MemoryStore;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A stream that counts the reads and writes that moved bytes.
struct Counting<S> {
    inner: S,
    reads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
}

impl<S> Counting<S> {
    fn new(inner: S) -> Counting<S> {
        Counting {
            inner,
            reads: Arc::default(),
            writes: Arc::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A Send with a 200-byte body, as the load generator sends.
fn send_frame(n: usize) -> Frame {
    Frame::new(common::send_to_peer(
        &format!("m{n}"),
        "bob",
        &"x".repeat(200),
    ))
}

#[tokio::test]
async fn frames_fed_together_leave_in_one_write() {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let counting = Counting::new(client);
    let writes = counting.writes.clone();
    let mut writer = FrameWriter::new(counting, DEFAULT_MAX_FRAME_BYTES);
    for n in 0..10 {
        writer.feed(&send_frame(n)).unwrap();
    }
    writer.flush().await.unwrap();
    assert_eq!(writes.load(Ordering::Relaxed), 1);

    let mut bytes = Vec::new();
    drop(writer);
    tokio::io::AsyncReadExt::read_to_end(&mut server, &mut bytes)
        .await
        .unwrap();
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while let codec::Decoded::Frame {
        frame,
        consumed_bytes,
    } = codec::decode(rest, DEFAULT_MAX_FRAME_BYTES).unwrap()
    {
        frames.push(frame);
        rest = &rest[consumed_bytes..];
    }
    assert_eq!(frames, (0..10).map(send_frame).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_frame_that_arrives_whole_takes_one_read_and_a_burst_one_read() {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let counting = Counting::new(server);
    let reads = counting.reads.clone();
    let mut reader = FrameReader::new(counting, DEFAULT_MAX_FRAME_BYTES);
    let mut bytes = bytes::BytesMut::new();

    // Frames one at a time: each is read whole in one read.
    for n in 0..5 {
        codec::encode(&send_frame(n), &mut bytes);
        tokio::io::AsyncWriteExt::write_all(&mut client, &bytes.split())
            .await
            .unwrap();
        assert_eq!(reader.next().await.unwrap(), Some(send_frame(n)));
    }
    assert_eq!(reads.load(Ordering::Relaxed), 5);

    // Twenty frames in one go: one read, then every frame from the buffer.
    for n in 0..20 {
        codec::encode(&send_frame(n), &mut bytes);
    }
    tokio::io::AsyncWriteExt::write_all(&mut client, &bytes.split())
        .await
        .unwrap();
    assert_eq!(reader.next().await.unwrap(), Some(send_frame(0)));
    for n in 1..20 {
        assert_eq!(reader.next_buffered().unwrap(), Some(send_frame(n)));
    }
    assert_eq!(reader.next_buffered().unwrap(), None);
    assert_eq!(reads.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn a_frame_larger_than_a_read_still_arrives_whole() {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let mut reader = FrameReader::new(server, DEFAULT_MAX_FRAME_BYTES);
    let big = Frame::new(common::send_to_peer("big", "bob", &"y".repeat(60_000)));
    let mut bytes = bytes::BytesMut::new();
    codec::encode(&big, &mut bytes);
    let writing = tokio::spawn(async move {
        // In pieces smaller than the scratch read, so the frame spans several reads.
        for piece in bytes.chunks(5_000) {
            tokio::io::AsyncWriteExt::write_all(&mut client, piece)
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        client
    });
    assert_eq!(reader.next().await.unwrap(), Some(big));
    drop(writing.await.unwrap());
    assert_eq!(reader.next().await.unwrap(), None);
}

/// A listener whose accepted pipes count their writes.
struct CountingListener {
    inner: MemoryListener,
    writes: Arc<AtomicUsize>,
}

impl Listener for CountingListener {
    type Stream = Counting<DuplexStream>;
    type Handshake = NoHandshake<Counting<DuplexStream>>;

    async fn accept(&mut self) -> io::Result<(Self::Handshake, SocketAddr)> {
        let (handshake, peer) = self.inner.accept().await?;
        let mut stream = Counting::new(handshake.await?);
        stream.writes = self.writes.clone();
        Ok((no_handshake(stream), peer))
    }
}

#[tokio::test]
async fn the_server_answers_a_burst_of_requests_in_one_write() {
    let (listener, connector) = memory::pair(4);
    let writes = Arc::new(AtomicUsize::new(0));
    let server = Arc::new(Server::new(
        ServerConfig::default(),
        common::test_deps(Arc::new(MemoryStore::new())),
    ));
    let running = server.clone();
    let listener = CountingListener {
        inner: listener,
        writes: writes.clone(),
    };
    tokio::spawn(async move { running.run(listener, std::future::pending()).await });

    let (mut reader, mut writer) = common::mem_open(&connector).await;
    writer
        .send(&Frame::new(common::login("alice", "phone", "")))
        .await
        .unwrap();
    let reply = reader.next().await.unwrap().unwrap();
    assert!(matches!(reply.body, Some(Body::LoginReply(_))), "{reply:?}");
    assert_eq!(writes.load(Ordering::Relaxed), 1, "the login reply");

    // Thirty pings in one write: thirty pongs in one write.
    for id in 0..30 {
        writer
            .feed(&Frame::new(Body::Ping(proto::Ping { id })))
            .unwrap();
    }
    writer.flush().await.unwrap();
    for id in 0..30 {
        let frame = reader.next().await.unwrap().unwrap();
        assert!(
            matches!(frame.body, Some(Body::Pong(ref pong)) if pong.id == id),
            "{frame:?}"
        );
    }
    assert_eq!(
        writes.load(Ordering::Relaxed),
        2,
        "the login reply, then one for the pongs"
    );
}
