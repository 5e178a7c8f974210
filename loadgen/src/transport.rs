//! Transports under every protocol, in layers: TCP from a chosen source address, then the
//! carrier model (`--carrier`), then TLS, then WebSocket (with the protocol's subprotocol), each
//! device's connector built the same way whatever the protocol speaks. Under them all, the
//! target's addresses are dealt round the devices ([`SourceConnector`]).
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
use crate::source::{SourceConnector, TargetAddresses};

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

/// Connectors shared by devices without a carrier at most, one per (source address, target
/// address) pair; past it each device builds its own (about 96 bytes a device).
const SHARED_CONNECTORS_MAX: usize = 4_096;

/// How devices reach the target.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The target's addresses, dealt round the devices, with their connect counts.
    pub targets: Arc<TargetAddresses>,
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

    /// The target's first address (the one alone, for most targets).
    pub fn first_target(&self) -> SocketAddr {
        self.targets.addresses()[0]
    }

    /// The connectors of a run's devices, built once: see [`Connectors::connector`].
    pub fn connectors(&self) -> Connectors<'_> {
        let sources = self.source_ips.len().max(1);
        let addresses = self.targets.addresses().len();
        let shared = (sources.saturating_mul(addresses) <= SHARED_CONNECTORS_MAX).then(|| {
            (0..sources * addresses)
                .map(|k| self.layered(self.source(k / addresses, k % addresses), None))
                .collect()
        });
        Connectors {
            transport: self,
            shared,
        }
    }

    /// TCP from source address `source` (an index of `source_ips`), to target address
    /// `first` first.
    fn source(&self, source: usize, first: usize) -> SourceConnector {
        SourceConnector {
            targets: self.targets.clone(),
            first,
            source: (!self.source_ips.is_empty()).then(|| self.source_ips[source]),
        }
    }

    /// Device `client`'s source address (`client % source_ips.len()`) and the target address
    /// it tries first (`client % addresses`), as indexes.
    fn pair_of(&self, client: u32) -> (usize, usize) {
        (
            client as usize % self.source_ips.len().max(1),
            self.targets.first_of(client),
        )
    }

    /// Device `client`'s TCP, from and to its [`Transport::pair_of`].
    fn source_of(&self, client: u32) -> SourceConnector {
        let (source, first) = self.pair_of(client);
        self.source(source, first)
    }

    /// Device `client`'s connector, layer on layer: TCP from its source address to its
    /// target address (so `--source-ips` and the spread apply under everything), then its
    /// carrier's model if the run has carriers (`local` is the client's index among this
    /// process's clients), then TLS if asked for, then WebSocket if asked for (`wss` is
    /// WebSocket over TLS).
    pub fn connector(&self, client: u32, carrier: Option<(&Carriers, usize)>) -> DynConnector {
        self.layered(self.source_of(client), carrier)
    }

    fn layered(
        &self,
        source: SourceConnector,
        carrier: Option<(&Carriers, usize)>,
    ) -> DynConnector {
        // TLS and WebSocket name the address tried first (a certificate for an IP address,
        // errors); TLS's name comes from `--tls-server-name` or the target's host name.
        let target = source.target();
        let mut connector = match carrier {
            None => DynConnector::new(source),
            Some((carriers, local)) => DynConnector::new(carriers.connector(local, source)),
        };
        if let Some(tls) = &self.tls {
            connector = DynConnector::new(TlsConnector::new(connector, target, tls));
        }
        if let Some(ws) = &self.ws {
            connector = DynConnector::new(WsConnector::new(
                connector,
                target,
                ws,
                DEFAULT_MAX_FRAME_BYTES,
            ));
        }
        connector
    }
}

/// The connectors of a run's devices: one per (source address, target address) shared by
/// the devices without a carrier (unless there are more pairs than
/// `SHARED_CONNECTORS_MAX`), one of its own for each device with one (its carrier model is
/// per device).
#[derive(Debug)]
pub struct Connectors<'a> {
    transport: &'a Transport,
    /// By source address, then target address, as [`Transport::connector`] picks them.
    shared: Option<Vec<DynConnector>>,
}

impl Connectors<'_> {
    /// Device `client`'s connector, the same as [`Transport::connector`] builds.
    pub fn connector(&self, client: u32, carrier: Option<(&Carriers, usize)>) -> DynConnector {
        match (carrier, &self.shared) {
            (None, Some(shared)) => {
                // Laid out as `Transport::connectors` builds them: by source, then address.
                let (source, first) = self.transport.pair_of(client);
                shared[source * self.transport.targets.addresses().len() + first].clone()
            }
            (carrier, _) => self.transport.connector(client, carrier),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shared_connectors_connect_each_device_from_its_own_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let transport = plain(
            vec![listener.local_addr().unwrap()],
            &["127.0.0.2", "127.0.0.3", "127.0.0.4"],
            Duration::from_secs(20),
        );
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

    /// Plain TCP to `addresses` from `sources` (none: the kernel's choice).
    fn plain(addresses: Vec<SocketAddr>, sources: &[&str], connect_timeout: Duration) -> Transport {
        Transport {
            targets: TargetAddresses::new(addresses, connect_timeout),
            source_ips: sources.iter().map(|ip| ip.parse().unwrap()).collect(),
            tls: None,
            ws: None,
        }
    }

    /// A port on `ip` that nothing listens on: bound, then closed.
    async fn closed_on(ip: &str) -> SocketAddr {
        let socket = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        socket.local_addr().unwrap()
    }

    #[tokio::test]
    async fn devices_are_dealt_round_the_target_s_addresses_and_move_on_when_one_refuses() {
        let listeners = [
            tokio::net::TcpListener::bind("127.0.0.5:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.6:0").await.unwrap(),
        ];
        let refusing = closed_on("127.0.0.7").await;
        let addresses = vec![
            listeners[0].local_addr().unwrap(),
            refusing,
            listeners[1].local_addr().unwrap(),
        ];
        let transport = plain(
            addresses.clone(),
            &["127.0.0.2", "127.0.0.3"],
            Duration::from_secs(20),
        );
        let connectors = transport.connectors();
        // Client c tries address c % 3 first, from source c % 2; the refusing address's
        // clients (1, 4, 7) land on the address after it.
        for client in 0_u32..9 {
            let landed = match client % 3 {
                0 => 0,
                _ => 1,
            };
            let connector = connectors.connector(client, None);
            let connecting = tokio::spawn(async move { connector.connect().await.map(drop) });
            let (_stream, peer) =
                tokio::time::timeout(Duration::from_secs(10), listeners[landed].accept())
                    .await
                    .unwrap_or_else(|_| panic!("client {client} did not reach address {landed}"))
                    .unwrap();
            connecting.await.unwrap().unwrap();
            assert_eq!(
                peer.ip(),
                transport.source_ips[client as usize % 2],
                "client {client}"
            );
        }
        let counts = transport.targets.counts();
        let by_address: Vec<(SocketAddr, u64, u64)> = counts
            .iter()
            .map(|c| (c.address, c.connects, c.failures))
            .collect();
        assert_eq!(
            by_address,
            vec![
                (addresses[0], 3, 0),
                (addresses[1], 0, 3),
                (addresses[2], 6, 0)
            ]
        );
        // Per-device connectors (a carrier's devices build their own) deal the same way.
        let own = transport.connector(5, None);
        let connecting = tokio::spawn(async move { own.connect().await.map(drop) });
        let (_stream, _) = listeners[1].accept().await.unwrap();
        connecting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_connect_every_address_refuses_keeps_the_refusal_and_names_them() {
        let addresses = vec![closed_on("127.0.0.1").await, closed_on("127.0.0.8").await];
        let transport = plain(addresses.clone(), &[], Duration::from_secs(20));
        let error = transport
            .connector(1, None)
            .connect()
            .await
            .map(drop)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
        let text = error.to_string();
        assert!(
            text.contains(&format!("({}, {})", addresses[1], addresses[0])),
            "tried from client 1's first address on: {text}"
        );
        let failures: Vec<u64> = transport
            .targets
            .counts()
            .iter()
            .map(|c| c.failures)
            .collect();
        assert_eq!(failures, vec![1, 1]);
    }

    #[tokio::test]
    async fn an_address_that_never_answers_gets_its_share_of_the_connect_timeout() {
        // A listener that accepts nothing, its queue full: the kernel drops further SYNs, as
        // a blackholed address does.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
        let silent = socket.listen(1).unwrap();
        let silent_address = silent.local_addr().unwrap();
        let mut queued = Vec::new();
        for _ in 0..2 {
            queued.push(std::net::TcpStream::connect(silent_address).unwrap());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addresses = vec![silent_address, listener.local_addr().unwrap()];
        let transport = plain(addresses, &[], Duration::from_secs(4));
        let connector = transport.connector(0, None);
        let started = std::time::Instant::now();
        let connecting = tokio::spawn(async move { connector.connect().await.map(drop) });
        let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
        assert!(accepted.is_ok(), "never moved on from the silent address");
        connecting.await.unwrap().unwrap();
        let waited = started.elapsed();
        // Its share is 2 s of the 4; the whole timeout would have left no time for the next.
        assert!(
            waited >= Duration::from_millis(1_900) && waited < Duration::from_millis(3_500),
            "the silent address had about its two seconds: {waited:?}"
        );
        let counts: Vec<(u64, u64)> = transport
            .targets
            .counts()
            .iter()
            .map(|c| (c.connects, c.failures))
            .collect();
        assert_eq!(counts, vec![(0, 1), (1, 0)]);
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
