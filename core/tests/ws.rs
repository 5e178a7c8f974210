//! imlab over WebSocket on loopback: the unchanged server core behind a `WsListener`,
//! clients through a `WsConnector` or a bare tungstenite client.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use imlab_core::auth::Authenticator;
use imlab_core::clock::SystemClock;
use imlab_core::codec::DEFAULT_MAX_FRAME_BYTES;
use imlab_core::framed::{FrameReader, FrameWriter};
use imlab_core::net::{Connector, TcpConnector};
use imlab_core::proto::{Body, Frame};
use imlab_core::server::{Server, ServerConfig, ServerDeps};
use imlab_core::store::MemoryStore;
use imlab_core::ws::{NOT_WEBSOCKET_REFUSAL, WsClient, WsConnector, WsListener};
use prost::Message as _;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// A server core on a WebSocket listener on 127.0.0.1 with an ephemeral port.
struct WsServer {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsServer {
    async fn start(config: ServerConfig) -> WsServer {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = WsListener::new(tcp, config.max_frame_bytes);
        let server = Arc::new(Server::new(
            config,
            ServerDeps {
                store: Arc::new(MemoryStore::new()),
                clock: Arc::new(SystemClock),
                push: Arc::new(RecordingPush::default()),
                auth: Authenticator::Dev,
            },
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let running = server.clone();
        let task = tokio::spawn(async move {
            running
                .run(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        WsServer {
            addr,
            server,
            stop: Some(stop),
            task,
        }
    }

    fn connector(&self, subprotocol: Option<&str>) -> WsConnector<TcpConnector> {
        let client = WsClient::new("127.0.0.1", self.addr, "/imlab", subprotocol).unwrap();
        WsConnector::new(
            TcpConnector { target: self.addr },
            self.addr,
            &client,
            DEFAULT_MAX_FRAME_BYTES,
        )
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// A bare WebSocket client (no imlab code on its side) at `addr`, offering `imlab`.
async fn bare_client(
    addr: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "imlab".parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "imlab");
    ws
}

/// The next message within [`WAIT`], or None once the server closed.
async fn next_message(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Option<Message> {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Err(_) => panic!("nothing from the server within {WAIT:?}"),
        Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => None,
        Ok(Some(Ok(message))) => Some(message),
    }
}

#[tokio::test]
async fn one_binary_message_carries_one_frame_without_its_length_prefix() {
    let server = WsServer::start(ServerConfig::default()).await;
    let mut ws = bare_client(server.addr).await;
    let login = Frame::new(login("alice", "phone", ""));
    ws.send(Message::Binary(login.encode_to_vec().into()))
        .await
        .unwrap();
    let Some(Message::Binary(payload)) = next_message(&mut ws).await else {
        panic!("expected a binary message");
    };
    let reply = Frame::decode(payload.as_ref()).unwrap();
    assert!(matches!(reply.body, Some(Body::LoginReply(_))), "{reply:?}");
    // A text message is not a frame: the server closes.
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(next_message(&mut ws).await, None);
    server.stop().await;
}

#[tokio::test]
async fn the_connector_speaks_frames_and_subprotocols_are_chosen_by_name() {
    let server = WsServer::start(ServerConfig::default()).await;
    for offered in [Some("imlab"), None] {
        let stream = server.connector(offered).connect().await.unwrap();
        let (read, write) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read, DEFAULT_MAX_FRAME_BYTES);
        let mut writer = FrameWriter::new(write, DEFAULT_MAX_FRAME_BYTES);
        writer
            .send(&Frame::new(login("bob", "phone", "")))
            .await
            .unwrap();
        let frame = tokio::time::timeout(WAIT, reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            matches!(frame.body, Some(Body::LoginReply(_))),
            "{offered:?}"
        );
    }
    // A client of another protocol over WebSocket is refused, and told why.
    let error = server.connector(Some("mqtt")).connect().await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(
            "refused the upgrade with HTTP 400 Bad Request: this server speaks the \
             WebSocket subprotocol \"imlab\"; the client offered mqtt"
        ),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_message_beyond_the_frame_limit_closes_the_connection() {
    let config = ServerConfig {
        max_frame_bytes: 4_096,
        ..ServerConfig::default()
    };
    let server = WsServer::start(config).await;
    let mut ws = bare_client(server.addr).await;
    ws.send(Message::Binary(vec![0u8; 4_097].into()))
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await, None);
    server.stop().await;
}

#[tokio::test]
async fn a_plain_client_is_answered_in_its_framing_and_a_silent_one_at_the_login_timeout() {
    let config = ServerConfig {
        login_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = WsServer::start(config).await;
    let mut plain = RawConn::connect(server.addr).await;
    plain.send(login("carol", "phone", "")).await;
    match plain.recv().await {
        Some(Body::Error(error)) => assert_eq!(error.text, NOT_WEBSOCKET_REFUSAL),
        other => panic!("expected an Error frame, got {other:?}"),
    }
    assert_eq!(plain.recv().await, None);
    // Connected, silent: closed at the login timeout, counted as a failed handshake.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let counters = server.server.counters();
    let deadline = tokio::time::Instant::now() + WAIT;
    while counters.handshakes_failed.load(Ordering::Relaxed) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "handshake failures not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counters.handshakes_failed.load(Ordering::Relaxed), 2);
    server.stop().await;
}
