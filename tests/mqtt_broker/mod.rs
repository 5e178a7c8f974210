//! A real MQTT broker for the tests: rumqttd embedded in the test process on loopback, behind
//! a relay the test steers. The relay carries bytes both ways unchanged, except that it can
//! swallow the broker's PUBACKs (a broker or link that never acknowledges), cut every
//! connection at once (a broker restart, seen from the clients), and send new connections to
//! a fresh broker (a restart that lost every session, as rumqttd keeps none on disk).

#![allow(dead_code)] // each test binary uses its own subset

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A free loopback port (bound, then released for the broker to take).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts a rumqttd broker with one MQTT 3.1.1 and one MQTT 5 listener; returns their
/// addresses once both accept connections. Its threads live as long as the test process.
pub fn start_broker() -> (SocketAddr, SocketAddr) {
    let (v4, v5) = (free_port(), free_port());
    let server = |name: &str, addr: SocketAddr| {
        serde_json::json!({ "1": {
            "name": name,
            "listen": addr.to_string(),
            "next_connection_delay_ms": 0,
            "connections": {
                "connection_timeout_ms": 10000,
                "max_payload_size": 65536,
                "max_inflight_count": 200,
                "dynamic_filters": true
            }
        }})
    };
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 10010,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 104857600,
            "max_segment_count": 10
        },
        "v4": server("v4", v4),
        "v5": server("v5", v5),
    }))
    .unwrap();
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(config).start();
    });
    for addr in [v4, v5] {
        wait_accepting(addr);
    }
    (v4, v5)
}

/// The same broker with a third address: MQTT over WebSocket, as a WebSocket front (or a
/// broker's own WebSocket listener) serves it: the client must offer the `mqtt` subprotocol
/// and is answered with it, MQTT's bytes travel in binary messages, a text message closes the
/// connection. tungstenite's server side does the RFC 6455 work (the handshake, masked client
/// frames); the front relays the bytes to the broker's MQTT 3.1.1 listener. rumqttd's own
/// WebSocket listener (its `websocket` feature) did the same, at 34 more crates and 96
/// CPU-seconds of every CI build (`cargo build --timings`).
pub fn start_broker_with_ws() -> (SocketAddr, SocketAddr, SocketAddr) {
    let (v4, v5) = start_broker();
    let (runtime, listener) = runtime_and_listener();
    let ws = listener.local_addr().unwrap();
    runtime.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(ws_carry(client, v4));
        }
    });
    // Its threads live as long as the test process, as the broker's do.
    std::mem::forget(runtime);
    (v4, v5, ws)
}

/// One WebSocket connection, relayed to the broker at `to`.
async fn ws_carry(client: tokio::net::TcpStream, to: SocketAddr) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

    #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
    let answer = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let offers_mqtt = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|offered| offered.trim() == "mqtt");
        if !offers_mqtt {
            let mut refusal = ErrorResponse::new(Some("offer the mqtt subprotocol".into()));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            return Err(refusal);
        }
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async(client, answer).await else {
        return;
    };
    let Ok(broker) = tokio::net::TcpStream::connect(to).await else {
        return;
    };
    let (mut to_client, mut from_client) = socket.split();
    let (mut broker_read, mut broker_write) = broker.into_split();
    let up = async {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(bytes) => {
                    if broker_write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Message::Close(_) | Message::Text(_) => return,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    };
    let down = async {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match broker_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let message = Message::binary(chunk[..n].to_vec());
                    if to_client.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// A one-thread runtime for a front or relay, and a listener on a fresh loopback port.
fn runtime_and_listener() -> (tokio::runtime::Runtime, tokio::net::TcpListener) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    (runtime, listener)
}

/// Waits (bounded) until `addr` accepts a TCP connection.
fn wait_accepting(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The relay in front of a broker.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    swallow_pubacks: Arc<AtomicBool>,
    /// Bumped to cut every connection open now.
    cut: watch::Sender<u64>,
    /// PUBACKs swallowed so far.
    pub swallowed: Arc<Count>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
    /// PUBLISH packets carried to clients so far.
    pub published: Arc<Count>,
    _runtime: tokio::runtime::Runtime,
}

impl Relay {
    /// A relay to `upstream` on a fresh loopback port.
    pub fn new(upstream: SocketAddr) -> Relay {
        let (runtime, listener) = runtime_and_listener();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(0u64);
        let relay = Relay {
            addr,
            upstream: Arc::new(Mutex::new(upstream)),
            swallow_pubacks: Arc::new(AtomicBool::new(false)),
            cut,
            swallowed: Arc::default(),
            accepted: Arc::new(AtomicU64::new(0)),
            published: Arc::default(),
            _runtime: runtime,
        };
        let (upstream, accepted, cut) = (
            relay.upstream.clone(),
            relay.accepted.clone(),
            relay.cut.clone(),
        );
        let counters = Counters {
            swallow: relay.swallow_pubacks.clone(),
            swallowed: relay.swallowed.clone(),
            published: relay.published.clone(),
        };
        relay._runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                let to = *upstream.lock().unwrap();
                let cut = cut.subscribe();
                tokio::spawn(carry(client, to, cut, counters.clone()));
            }
        });
        relay
    }

    /// From now on, the broker's PUBACKs never reach the clients.
    pub fn swallow_pubacks(&self) {
        self.swallow_pubacks.store(true, Ordering::Relaxed);
    }

    /// From now on, the broker's PUBACKs reach the clients again.
    pub fn pass_pubacks(&self) {
        self.swallow_pubacks.store(false, Ordering::Relaxed);
    }

    /// Waits (bounded) until `n` PUBACKs have been swallowed.
    pub fn wait_swallowed(&self, n: u64) {
        self.swallowed.wait_for(n, "PUBACKs swallowed");
    }

    /// Waits (bounded) until `n` PUBLISH packets have reached clients.
    pub fn wait_published(&self, n: u64) {
        self.published.wait_for(n, "publishes");
    }

    /// Cuts every open connection (a restart, as the clients see it); new connections go
    /// to `upstream` (the same broker: sessions kept; a fresh one: sessions lost).
    pub fn restart_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
        self.cut.send_modify(|n| *n += 1);
    }
}

/// A count the relay's connections add to, which a test reads or waits on (woken at each
/// addition, not polling).
#[derive(Default)]
pub struct Count {
    n: Mutex<u64>,
    changed: Condvar,
}

impl Count {
    fn add(&self) {
        *self.n.lock().unwrap() += 1;
        self.changed.notify_all();
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        *self.n.lock().unwrap()
    }

    /// Waits until the count reaches `n`, failing the test after 30 s.
    fn wait_for(&self, n: u64, what: &str) {
        let (count, waited) = self
            .changed
            .wait_timeout_while(self.n.lock().unwrap(), Duration::from_secs(30), |count| {
                *count < n
            })
            .unwrap();
        assert!(!waited.timed_out(), "{} of {n} {what} in 30 s", *count);
    }
}

/// What the relay's connections share.
#[derive(Clone)]
struct Counters {
    swallow: Arc<AtomicBool>,
    swallowed: Arc<Count>,
    published: Arc<Count>,
}

/// One connection: client to broker unchanged; broker to client packet by packet.
async fn carry(
    mut client: tokio::net::TcpStream,
    to: SocketAddr,
    mut cut: watch::Receiver<u64>,
    counters: Counters,
) {
    let Ok(mut broker) = tokio::net::TcpStream::connect(to).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut broker_read, mut broker_write) = broker.split();
    let up = tokio::io::copy(&mut client_read, &mut broker_write);
    let down = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = broker_read.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut forward = Vec::new();
            while let Some(len) = packet_len(&buf) {
                let packet: Vec<u8> = buf.drain(..len).collect();
                // PUBLISH is packet type 3, PUBACK 4.
                if packet[0] >> 4 == 3 {
                    counters.published.add();
                }
                if packet[0] >> 4 == 4 && counters.swallow.load(Ordering::Relaxed) {
                    counters.swallowed.add();
                    continue;
                }
                forward.extend_from_slice(&packet);
            }
            client_write.write_all(&forward).await?;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

/// The length of the first whole MQTT packet in `buf`, if it is all there.
fn packet_len(buf: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for (i, byte) in buf.iter().enumerate().skip(1).take(4) {
        remaining |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let total = i + 1 + remaining;
            return (buf.len() >= total).then_some(total);
        }
    }
    None
}

/// A TLS front for a broker: accepts TLS with `cert`/`key` (imlab-core's rustls listener,
/// the one `imlab serve --tls-cert` uses) and relays the plain bytes to `broker`.
pub struct TlsFront {
    /// Where clients connect.
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    pub fn new(cert: &std::path::Path, key: &std::path::Path, broker: SocketAddr) -> TlsFront {
        use imlab_core::net::Listener;
        let (runtime, tcp) = runtime_and_listener();
        let config = imlab_core::tls::server_config_from_files(cert, key).unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = imlab_core::tls::TlsListener::new(tcp, config);
        runtime.spawn(async move {
            while let Ok((handshake, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut client) = handshake.await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(broker).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        TlsFront {
            addr,
            _runtime: runtime,
        }
    }
}
