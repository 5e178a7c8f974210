//! The two seams between the cores and a network: [`Listener`] for the server and
//! [`Connector`] for the client.
//!
//! Tokio's sockets implement them here; the simulator wraps turmoil's sockets, and tests use
//! [`memory`] pipes. Nothing else in `imlab-core` touches a socket type.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the cores can speak the protocol over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Accepts connections for the server.
pub trait Listener: Send + 'static {
    /// The accepted streams.
    type Stream: Stream;

    /// Waits for the next connection and returns it with the peer's address.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
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

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Small request/ack exchanges: Nagle plus delayed ACKs would add ~40 ms.
        stream.set_nodelay(true)?;
        Ok((stream, peer))
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

        async fn accept(&mut self) -> io::Result<(DuplexStream, SocketAddr)> {
            let stream = self.incoming.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::ConnectionAborted, "all connectors dropped")
            })?;
            self.n_accepted = self.n_accepted.wrapping_add(1);
            Ok((stream, SocketAddr::from(([10, 0, 0, 1], self.n_accepted))))
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
