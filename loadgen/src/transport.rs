//! Transports under every protocol, in layers: TCP from a chosen source address, then the
//! carrier model (`--carrier`), then TLS, then WebSocket (with the protocol's subprotocol), each
//! device's connector built the same way whatever the protocol speaks.
//!
//! [`DynConnector`] erases the connector's type so that a protocol adapter is written once,
//! not once per stack of transports; it costs one allocation per connect. Devices without a
//! carrier share their connector (one per source address): a connector of their own cost 96
//! bytes per device (`bench/conn-memory.sh`).

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use imlab_core::codec::DEFAULT_MAX_FRAME_BYTES;
use imlab_core::net::{Connector, Stream};
use imlab_core::tls::{TlsClient, TlsConnector};
use imlab_core::ws::{WsClient, WsConnector};
use tokio_util::either::Either;

use crate::carrier::Carriers;
use crate::source::SourceConnector;

/// Any opened stream: a plain TCP stream kept inline (`Left`), anything else (TLS,
/// WebSocket, a carrier's shaped stream) boxed (`Right`). A box per connection cost an idle
/// client of `imlab load` 32 bytes (`bench/conn-memory.sh`); the inline stream costs the
/// client core's future 24 bytes, inside its 448-byte box (the size test in
/// `protocol/imlab.rs`). MQTT's session boxes it again ([`into_boxed`]): its future has no
/// room left.
pub type AnyStream = Either<tokio::net::TcpStream, Box<dyn Stream>>;

/// `stream` as a [`AnyStream`]: inline when it is a [`tokio::net::TcpStream`].
pub fn any_stream<S: Stream>(stream: S) -> AnyStream {
    let mut slot = Some(stream);
    if let Some(tcp) = (&mut slot as &mut dyn Any).downcast_mut::<Option<tokio::net::TcpStream>>() {
        return Either::Left(tcp.take().expect("the slot was just filled"));
    }
    Either::Right(Box::new(slot.expect("the slot was not taken")))
}

/// The stream behind one pointer, for a holder that keeps it in a few bytes.
pub fn into_boxed(stream: AnyStream) -> Box<dyn Stream> {
    match stream {
        Either::Left(tcp) => Box::new(tcp),
        Either::Right(other) => other,
    }
}

type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<AnyStream>> + Send + 'a>>;

/// A connector whose stream type is erased.
trait ErasedConnector: Send + Sync {
    fn connect_boxed(&self) -> ConnectFuture<'_>;
}

impl<C: Connector> ErasedConnector for C {
    fn connect_boxed(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = self.connect().await?;
            Ok(any_stream(stream))
        })
    }
}

/// A connector of any type, behind one pointer (shared by its clones). A thin one: the
/// trait object's box is inside the `Arc`, so every client core holds 8 bytes for its
/// connector, not 16, for an allocation more per connector (one per source address, or per
/// device with a carrier model).
#[derive(Clone)]
#[allow(
    clippy::redundant_allocation,
    reason = "the inner box makes the outer pointer thin: 8 bytes in every client's task"
)]
pub struct DynConnector {
    connector: Arc<Box<dyn ErasedConnector>>,
}

impl std::fmt::Debug for DynConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynConnector")
    }
}

impl DynConnector {
    /// Erases `connector`'s type.
    pub fn new<C: Connector>(connector: C) -> DynConnector {
        DynConnector {
            connector: Arc::new(Box::new(connector)),
        }
    }
}

impl Connector for DynConnector {
    type Stream = AnyStream;

    fn connect(&self) -> impl Future<Output = io::Result<AnyStream>> + Send {
        self.connector.connect_boxed()
    }
}

/// How devices reach the target.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The target's address.
    pub target: SocketAddr,
    /// Local addresses to spread connections over (empty: the kernel's choice).
    pub source_ips: Vec<std::net::IpAddr>,
    /// TLS over every connection (`None`: plaintext).
    pub tls: Option<TlsClient>,
    /// WebSocket over TCP or TLS (`None`: the protocol's bytes go straight onto the stream).
    pub ws: Option<WsClient>,
}

impl Transport {
    /// The word results use for it.
    pub fn name(&self) -> &'static str {
        match (self.tls.is_some(), self.ws.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }

    /// The connectors of a run's devices, built once: see [`Connectors::connector`].
    pub fn connectors(&self) -> Connectors<'_> {
        let sources = self.source_ips.len().max(1);
        Connectors {
            transport: self,
            shared: (0..sources)
                .map(|source| self.connector(source as u32, None))
                .collect(),
        }
    }

    /// Device `client`'s connector, layer on layer: TCP from its source address (so
    /// `--source-ips` applies under everything), then its carrier's model if the run has
    /// carriers (`local` is the client's index among this process's clients), then TLS if
    /// asked for, then WebSocket if asked for (`wss` is WebSocket over TLS).
    pub fn connector(&self, client: u32, carrier: Option<(&Carriers, usize)>) -> DynConnector {
        let source = SourceConnector {
            target: self.target,
            source: (!self.source_ips.is_empty())
                .then(|| self.source_ips[client as usize % self.source_ips.len()]),
        };
        let mut connector = match carrier {
            None => DynConnector::new(source),
            Some((carriers, local)) => DynConnector::new(carriers.connector(local, source)),
        };
        if let Some(tls) = &self.tls {
            connector = DynConnector::new(TlsConnector::new(connector, self.target, tls));
        }
        if let Some(ws) = &self.ws {
            connector = DynConnector::new(WsConnector::new(
                connector,
                self.target,
                ws,
                DEFAULT_MAX_FRAME_BYTES,
            ));
        }
        connector
    }
}

/// The connectors of a run's devices: one per source address shared by the devices without
/// a carrier, one of its own for each device with one (its carrier model is per device).
#[derive(Debug)]
pub struct Connectors<'a> {
    transport: &'a Transport,
    /// By source address, as [`Transport::connector`] picks it (`client % source_ips.len()`).
    shared: Vec<DynConnector>,
}

impl Connectors<'_> {
    /// Device `client`'s connector, the same as [`Transport::connector`] builds.
    pub fn connector(&self, client: u32, carrier: Option<(&Carriers, usize)>) -> DynConnector {
        match carrier {
            None => self.shared[client as usize % self.shared.len()].clone(),
            Some(carrier) => self.transport.connector(client, Some(carrier)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_connectors_connect_each_device_from_its_own_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let transport = Transport {
            target: listener.local_addr().unwrap(),
            source_ips: ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
                .iter()
                .map(|ip| ip.parse().unwrap())
                .collect(),
            tls: None,
            ws: None,
        };
        let connectors = transport.connectors();
        for client in [0_u32, 1, 2, 3, 4, 7, 11] {
            let connector = connectors.connector(client, None);
            let connecting = tokio::spawn(async move { connector.connect().await.map(drop) });
            let (_stream, peer) = listener.accept().await.unwrap();
            connecting.await.unwrap().unwrap();
            let expected = transport.source_ips[client as usize % 3];
            assert_eq!(peer.ip(), expected, "client {client}");
        }
    }

    #[tokio::test]
    async fn a_tcp_stream_is_kept_inline_and_any_other_boxed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (connected, accepted) = tokio::join!(
            tokio::net::TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let mut client = any_stream(connected.unwrap());
        assert!(matches!(client, Either::Left(_)), "no box for TCP");
        let (mut server, _) = accepted.unwrap();
        client.write_all(b"ping").await.unwrap();
        client.flush().await.unwrap();
        let mut bytes = [0; 4];
        server.read_exact(&mut bytes).await.unwrap();
        assert_eq!(&bytes, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut bytes).await.unwrap();
        assert_eq!(&bytes, b"pong");
        client.shutdown().await.unwrap();
        assert_eq!(
            server.read(&mut bytes).await.unwrap(),
            0,
            "the shutdown reached the peer"
        );

        let (near, mut far) = tokio::io::duplex(64);
        let mut other = any_stream(near);
        assert!(matches!(other, Either::Right(_)));
        other.write_all(b"x").await.unwrap();
        far.read_exact(&mut bytes[..1]).await.unwrap();
        assert_eq!(bytes[0], b'x');
    }
}
