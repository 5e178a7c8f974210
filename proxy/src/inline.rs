//! The carrier model inside a client process: no listener, no second socket. A client's
//! connector asks [`Proxy::connect_inline`] for a connection; the proxy opens the real one to
//! the server (after the model's SYN delay) and hands back an [`InlineStream`], an in-memory
//! pipe whose other end a flow relays through the same model, rules and trace as a proxied
//! connection's. A reset reaches the client as `ConnectionReset`, as a RST would.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use imlab_carrier::flow_seed;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::flow::{self, Endpoint};
use crate::proxy::Proxy;

/// Bytes the in-memory pipe buffers each way; past that its writer waits, as on a full
/// socket buffer. The model's own in-flight bound applies beyond it.
const PIPE_BYTES: usize = 64 * 1024;

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "reset by the carrier")
}

/// The client's end of an inline flow.
#[derive(Debug)]
pub struct InlineStream {
    pipe: DuplexStream,
    reset: Arc<AtomicBool>,
}

impl InlineStream {
    fn check(&self) -> io::Result<()> {
        if self.reset.load(Ordering::Acquire) {
            return Err(reset_error());
        }
        Ok(())
    }
}

impl AsyncRead for InlineStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        let filled = buf.filled().len();
        let polled = Pin::new(&mut self.pipe).poll_read(cx, buf);
        // An end of stream after a reset is the reset.
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() == filled
        {
            self.check()?;
        }
        polled
    }
}

impl AsyncWrite for InlineStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        match Pin::new(&mut self.pipe).poll_write(cx, buf) {
            Poll::Ready(Err(error)) => {
                self.check()?;
                Poll::Ready(Err(error))
            }
            polled => polled,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

/// The relay's end of an inline flow: the phone side of the model.
struct InlinePhone {
    pipe: DuplexStream,
    reset: Arc<AtomicBool>,
}

/// The relay's read half; it carries the reset flag for [`Endpoint::reset`].
struct PhoneRead {
    half: ReadHalf<DuplexStream>,
    reset: Arc<AtomicBool>,
}

impl AsyncRead for PhoneRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_read(cx, buf)
    }
}

/// An in-memory pipe has no readiness of its own: the relay's buffer waits in the read.
impl crate::flow::ReadSide for PhoneRead {}

impl Endpoint for InlinePhone {
    type Read = PhoneRead;
    type Write = WriteHalf<DuplexStream>;

    fn split(self) -> (PhoneRead, WriteHalf<DuplexStream>) {
        let (half, write) = tokio::io::split(self.pipe);
        (
            PhoneRead {
                half,
                reset: self.reset,
            },
            write,
        )
    }

    /// The client's next read or write fails with `ConnectionReset`.
    fn reset(read: PhoneRead, write: WriteHalf<DuplexStream>) {
        read.reset.store(true, Ordering::Release);
        drop((read, write));
    }
}

impl Proxy {
    /// Opens a flow for an in-process client: `identity` (say, the client's number and its
    /// count of connections) seeds the flow's RNG, so the same client's n-th connection
    /// draws the same NAT timeout and delays in every run with the same seed; `name` labels
    /// it in the control API and the trace. `connect` opens the real connection to the
    /// server; it runs once the model's SYN arrives. Fails as that connection fails, or at
    /// the proxy's `flows_max` bound.
    pub async fn connect_inline(
        &self,
        identity: &[u64],
        name: String,
        connect: impl Future<Output = io::Result<TcpStream>>,
    ) -> io::Result<InlineStream> {
        let shared = self.shared.clone();
        let Some((id, poke)) = shared.register_flow(name) else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the carrier model's flow limit is reached",
            ));
        };
        let seed = flow_seed(shared.seed, identity);
        let (model, upstream) = flow::open(&shared, id, seed, connect).await?;
        let (client, relay_end) = tokio::io::duplex(PIPE_BYTES);
        let reset = Arc::new(AtomicBool::new(false));
        let phone = InlinePhone {
            pipe: relay_end,
            reset: reset.clone(),
        };
        tokio::spawn(flow::relay(
            shared,
            id,
            model,
            phone,
            upstream,
            poke,
            bytes::Bytes::new(),
        ));
        Ok(InlineStream {
            pipe: client,
            reset,
        })
    }
}
