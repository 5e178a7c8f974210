//! The two seams between the cores and a network: [`Listener`] for the server and
//! [`Connector`] for the client.
//!
//! Tokio's sockets implement them here; the simulator wraps turmoil's sockets, tests use
//! [`memory`] pipes, `crate::tls` adds TLS over tokio's sockets and `crate::ws` WebSocket
//! over any of them; [`EitherListener`] serves two listeners at once (a TCP port and a
//! WebSocket port). Nothing else in `imlab-core` touches a socket type.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the cores can speak the protocol over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Accepts connections for the server.
///
/// Accepting is split in two so that no per-connection work runs in the server's accept
/// loop: `accept` only takes the next connection off the queue, and the [`Self::Handshake`]
/// it returns (a TLS handshake, say) is awaited by the server inside that connection's own
/// task, bounded by the login timeout. Listeners with nothing to negotiate return
/// [`no_handshake`].
pub trait Listener: Send + 'static {
    /// The streams the protocol runs over, once any handshake is done.
    type Stream: Stream;
    /// Turns an accepted connection into a [`Self::Stream`]; owns everything it needs.
    type Handshake: Future<Output = io::Result<Self::Stream>> + Send + 'static;

    /// Waits for the next connection and returns its pending handshake with the peer's
    /// address. Must not wait on the peer beyond the accept itself.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Handshake, SocketAddr)>> + Send;
}

/// The handshake of a stream that needs none: ready at once.
pub type NoHandshake<S> = std::future::Ready<io::Result<S>>;

/// Hands over an accepted `stream` as it is.
pub fn no_handshake<S>(stream: S) -> NoHandshake<S> {
    std::future::ready(Ok(stream))
}

/// Opens connections for the client.
pub trait Connector: Send + Sync + 'static {
    /// The opened streams.
    type Stream: Stream;

    /// Opens one connection to the server.
    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Handshake = NoHandshake<tokio::net::TcpStream>;

    async fn accept(&mut self) -> io::Result<(Self::Handshake, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Small request/ack exchanges: Nagle plus delayed ACKs would add ~40 ms.
        stream.set_nodelay(true)?;
        Ok((no_handshake(stream), peer))
    }
}

/// Connects over TCP to a fixed address, with TCP_NODELAY set.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    /// The server's address.
    pub target: SocketAddr,
}

impl Connector for TcpConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(self.target).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Two listeners as one, so one server serves both (`imlab serve --listen` and
/// `--ws-listen`). Accepts take turns in which listener is asked first, so neither starves.
/// Both listeners' `accept` must be cancel-safe (tokio's, TLS's and WebSocket's are: they
/// only take a connection off the queue).
pub struct EitherListener<A, B> {
    first: A,
    second: B,
    second_first: bool,
}

impl<A: Listener, B: Listener> EitherListener<A, B> {
    /// Serves `first` and `second`.
    pub fn new(first: A, second: B) -> EitherListener<A, B> {
        EitherListener {
            first,
            second,
            second_first: false,
        }
    }
}

/// The handshake of a connection accepted by an [`EitherListener`].
pub type EitherHandshake<A, B> =
    std::pin::Pin<Box<dyn Future<Output = io::Result<tokio_util::either::Either<A, B>>> + Send>>;

impl<A: Listener, B: Listener> Listener for EitherListener<A, B> {
    type Stream = tokio_util::either::Either<A::Stream, B::Stream>;
    type Handshake = EitherHandshake<A::Stream, B::Stream>;

    async fn accept(&mut self) -> io::Result<(Self::Handshake, SocketAddr)> {
        use tokio_util::either::Either;
        self.second_first = !self.second_first;
        let accepted = if self.second_first {
            tokio::select! {
                biased;
                b = self.second.accept() => Either::Right(b?),
                a = self.first.accept() => Either::Left(a?),
            }
        } else {
            tokio::select! {
                biased;
                a = self.first.accept() => Either::Left(a?),
                b = self.second.accept() => Either::Right(b?),
            }
        };
        Ok(match accepted {
            Either::Left((handshake, peer)) => {
                let handshake: Self::Handshake =
                    Box::pin(async move { Ok(Either::Left(handshake.await?)) });
                (handshake, peer)
            }
            Either::Right((handshake, peer)) => {
                let handshake: Self::Handshake =
                    Box::pin(async move { Ok(Either::Right(handshake.await?)) });
                (handshake, peer)
            }
        })
    }
}

pub mod memory {
    //! In-process pipes implementing [`Listener`] and [`Connector`], for tests under paused
    //! tokio time (real sockets and auto-advancing time do not mix).

    use super::*;
    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;

    /// Bytes buffered in each direction of a pipe.
    const PIPE_BUFFER_BYTES: usize = 256 * 1024;

    /// The server end: yields the pipes that [`MemoryConnector`]s open.
    pub struct MemoryListener {
        incoming: mpsc::Receiver<DuplexStream>,
        n_accepted: u16,
    }

    /// The client end.
    #[derive(Clone)]
    pub struct MemoryConnector {
        outgoing: mpsc::Sender<DuplexStream>,
    }

    /// A connected listener and connector; `backlog` pending connections at most.
    pub fn pair(backlog: usize) -> (MemoryListener, MemoryConnector) {
        let (outgoing, incoming) = mpsc::channel(backlog);
        (
            MemoryListener {
                incoming,
                n_accepted: 0,
            },
            MemoryConnector { outgoing },
        )
    }

    impl Listener for MemoryListener {
        type Stream = DuplexStream;
        type Handshake = NoHandshake<DuplexStream>;

        async fn accept(&mut self) -> io::Result<(Self::Handshake, SocketAddr)> {
            let stream = self.incoming.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::ConnectionAborted, "all connectors dropped")
            })?;
            self.n_accepted = self.n_accepted.wrapping_add(1);
            let peer = SocketAddr::from(([10, 0, 0, 1], self.n_accepted));
            Ok((no_handshake(stream), peer))
        }
    }

    impl Connector for MemoryConnector {
        type Stream = DuplexStream;

        async fn connect(&self) -> io::Result<DuplexStream> {
            let (client, server) = tokio::io::duplex(PIPE_BUFFER_BYTES);
            self.outgoing.send(server).await.map_err(|_| {
                io::Error::new(io::ErrorKind::ConnectionRefused, "listener dropped")
            })?;
            Ok(client)
        }
    }
}
