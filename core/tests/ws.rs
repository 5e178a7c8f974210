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
        connector(self.addr, subprotocol)
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

/// A WebSocket server written by hand on 127.0.0.1: it reads one upgrade request and answers
/// with what `answer` makes of the request's `Sec-WebSocket-Key`, in one write per piece, and
/// then closes its side. Returns its address and its task, which ends once the client has
/// closed.
async fn hand_written_server(
    answer: impl FnOnce(&str) -> Vec<Vec<u8>> + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = tcp.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            request.push(byte[0]);
        }
        let request = String::from_utf8(request).unwrap();
        let key = request
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .expect("the request has a key");
        for piece in answer(key) {
            stream.write_all(&piece).await.unwrap();
            stream.flush().await.unwrap();
        }
        // The answer is all the server sends; it reads on until the client goes.
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    (addr, task)
}

/// A connector to `addr` on `/imlab`, offering `subprotocol`.
fn connector(addr: SocketAddr, subprotocol: Option<&str>) -> WsConnector<TcpConnector> {
    let client = WsClient::new("127.0.0.1", addr, "/imlab", subprotocol).unwrap();
    WsConnector::new(
        TcpConnector { target: addr },
        addr,
        &client,
        DEFAULT_MAX_FRAME_BYTES,
    )
}

fn switching(key: &str, protocol: Option<&str>) -> String {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let protocol = protocol
        .map(|name| format!("Sec-WebSocket-Protocol: {name}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    )
}

/// Connects to a hand-written server answering with `answer` and reads the first frame: one
/// binary message of 5 bytes, `hello`.
async fn first_frame(
    subprotocol: Option<&str>,
    answer: impl FnOnce(&str) -> Vec<Vec<u8>> + Send + 'static,
) -> [u8; 9] {
    let (addr, task) = hand_written_server(answer).await;
    let mut stream = connector(addr, subprotocol).connect().await.unwrap();
    let mut got = [0u8; 9];
    tokio::time::timeout(WAIT, stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    drop(stream);
    task.await.unwrap();
    got
}

#[tokio::test]
async fn the_client_reads_frames_that_came_with_the_servers_answer_and_an_answer_in_pieces() {
    // One binary message (unmasked, as a server sends) with a frame's 5 bytes.
    const MESSAGE: &[u8] = b"\x82\x05hello";
    // The answer and the first message in one write: the bytes after the head are the
    // connection's first.
    let got = first_frame(Some("imlab"), |key| {
        vec![[switching(key, Some("imlab")).as_bytes(), MESSAGE].concat()]
    })
    .await;
    assert_eq!(&got, b"\0\0\0\x05hello");
    // The answer a few bytes a write, the message split across writes.
    let got = first_frame(None, |key| {
        let all = [switching(key, None).as_bytes(), MESSAGE].concat();
        all.chunks(7).map(<[u8]>::to_vec).collect()
    })
    .await;
    assert_eq!(&got, b"\0\0\0\x05hello");
}

#[tokio::test]
async fn the_client_refuses_a_wrong_answer_and_shows_a_refusals_body() {
    async fn fails(
        subprotocol: Option<&str>,
        answer: impl FnOnce(&str) -> Vec<Vec<u8>> + Send + 'static,
    ) -> String {
        let (addr, task) = hand_written_server(answer).await;
        let error = connector(addr, subprotocol).connect().await.unwrap_err();
        task.await.unwrap();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("WebSocket upgrade with {addr} (ws://127.0.0.1:")),
            "{text}"
        );
        text
    }
    let text = fails(None, |_| {
        vec![switching("not the key sent", None).into_bytes()]
    })
    .await;
    assert!(
        text.contains("Sec-WebSocket-Accept") && text.contains("not the one for the key sent"),
        "{text}"
    );
    let text = fails(Some("imlab"), |key| vec![switching(key, None).into_bytes()]).await;
    assert!(
        text.contains("the server chose no subprotocol; the client offered only \"imlab\""),
        "{text}"
    );
    let text = fails(Some("imlab"), |key| {
        vec![switching(key, Some("mqtt")).into_bytes()]
    })
    .await;
    assert!(
        text.contains("the server chose the subprotocol \"mqtt\"; the client offered \"imlab\""),
        "{text}"
    );
    let text = fails(None, |key| {
        vec![
            switching(key, None)
                .replace("Upgrade: websocket", "Upgrade: h2c")
                .into_bytes(),
        ]
    })
    .await;
    assert!(text.contains("upgrades to Some(\"h2c\")"), "{text}");
    // A refusal's body is shown whole, read on to its length: 3,000 bytes, longer than the
    // reads the answer's head comes in (1 KiB), so most of it is still unread when the head
    // is whole.
    let body = format!("{}no token, no socket", "-".repeat(2_981));
    let answer = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let text = fails(None, move |_| vec![answer.into_bytes()]).await;
    assert!(
        text.ends_with(&format!(
            "refused the upgrade with HTTP 403 Forbidden: {body}"
        )),
        "{text}"
    );
    // Not HTTP at all, and a server that closes before answering.
    let text = fails(None, |_| vec![b"\0\0\0\x07garbage\r\n\r\n".to_vec()]).await;
    assert!(
        text.contains("did not answer in HTTP") && text.contains("not a WebSocket port"),
        "{text}"
    );
    let text = fails(None, |_| Vec::new()).await;
    assert!(
        text.contains("closed the connection during the upgrade"),
        "{text}"
    );
}
