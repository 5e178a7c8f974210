//! Test harness: a server on a loopback socket, raw-frame connections, and client cores with
//! a recording observer.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imlab_core::auth::Authenticator;
use imlab_core::client::{
    Client, ClientConfig, ClientEvent, ClientHandle, ClientObserver, ClientState, SharedClientState,
};
use imlab_core::clock::SystemClock;
use imlab_core::codec;
use imlab_core::framed::{FrameReader, FrameWriter};
use imlab_core::heartbeat::Fixed;
use imlab_core::net::memory::{self, MemoryConnector};
use imlab_core::net::{Connector, TcpConnector};
use imlab_core::proto::{self, Body, Frame};
use imlab_core::server::{PushNotice, PushProvider, Server, ServerConfig, ServerDeps};
use imlab_core::store::{MemoryStore, Store};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Generous bound for anything that should happen "at once" on loopback.
pub const WAIT: Duration = Duration::from_secs(10);

/// Pushes recorded by the test push provider.
#[derive(Default)]
pub struct RecordingPush {
    pub notices: Mutex<Vec<PushNotice>>,
}

impl PushProvider for RecordingPush {
    fn push(&self, notice: PushNotice) {
        self.notices.lock().unwrap().push(notice);
    }
}

/// A server on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<MemoryStore>,
    pub server: Arc<Server>,
    pub push: Arc<RecordingPush>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(ServerConfig::default(), Authenticator::Dev).await
    }

    pub async fn start_with(config: ServerConfig, auth: Authenticator) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(MemoryStore::new());
        let push = Arc::new(RecordingPush::default());
        let server = Arc::new(Server::new(
            config,
            ServerDeps {
                store: store.clone() as Arc<dyn Store>,
                clock: Arc::new(SystemClock),
                push: push.clone(),
                auth,
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
        TestServer {
            addr,
            store,
            server,
            push,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    /// A client core for `user`/`device` with a recording observer, already running.
    pub fn client(&self, user: &str, device: &str) -> TestClient {
        TestClient::start(
            self.addr,
            ClientState::new(user, device).shared(),
            ClientConfig::default(),
        )
    }

    pub async fn raw(&self) -> RawConn {
        RawConn::connect(self.addr).await
    }
}

/// A connection speaking raw frames.
pub struct RawConn {
    pub reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    pub writer: FrameWriter<tokio::net::tcp::OwnedWriteHalf>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        RawConn {
            reader: FrameReader::new(read, codec::DEFAULT_MAX_FRAME_BYTES),
            writer: FrameWriter::new(write, codec::DEFAULT_MAX_FRAME_BYTES),
        }
    }

    pub async fn send(&mut self, body: Body) {
        self.writer.send(&Frame::new(body)).await.unwrap();
    }

    /// The next frame, or None when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Body> {
        match tokio::time::timeout(WAIT, self.reader.next()).await {
            Err(_) => panic!("no frame from the server within {WAIT:?}"),
            Ok(Ok(Some(frame))) => Some(frame.body.unwrap()),
            Ok(Ok(None)) | Ok(Err(_)) => None,
        }
    }

    /// The next frame that is not a NotifyData/Notify (those are collected in `pushes`).
    pub async fn recv_reply(&mut self, pushes: &mut Vec<Body>) -> Option<Body> {
        loop {
            match self.recv().await? {
                body @ (Body::NotifyData(_) | Body::Notify(_)) => pushes.push(body),
                body => return Some(body),
            }
        }
    }

    pub async fn login(addr: SocketAddr, user: &str, device: &str) -> (RawConn, proto::LoginReply) {
        let mut conn = RawConn::connect(addr).await;
        conn.send(login(user, device, "")).await;
        match conn.recv().await {
            Some(Body::LoginReply(reply)) => (conn, reply),
            other => panic!("expected login_reply, got {other:?}"),
        }
    }

    /// Asserts the server closes the connection (after any frames, which are returned).
    pub async fn expect_closed(&mut self) -> Vec<Body> {
        let mut frames = Vec::new();
        while let Some(body) = self.recv().await {
            frames.push(body);
        }
        frames
    }
}

/// A plain TCP stream for writing bytes that are not frames.
pub async fn garbage_conn(addr: SocketAddr, bytes: &[u8]) -> RawConn {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let (read, write) = stream.into_split();
    RawConn {
        reader: FrameReader::new(read, codec::DEFAULT_MAX_FRAME_BYTES),
        writer: FrameWriter::new(write, codec::DEFAULT_MAX_FRAME_BYTES),
    }
}

pub fn login(user: &str, device: &str, token: &str) -> Body {
    Body::Login(proto::Login {
        user: user.into(),
        device: device.into(),
        token: token.into(),
        heartbeat_interval_max_s: 60,
        send_ack_is_copy: false,
    })
}

pub fn send_to_peer(client_msg_id: &str, peer: &str, body: &str) -> Body {
    Body::Send(proto::Send {
        client_msg_id: client_msg_id.into(),
        to: Some(proto::send::To::PeerUser(peer.into())),
        body: body.as_bytes().to_vec().into(),
    })
}

/// What a recording observer saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Connected,
    Disconnected(String),
    Message {
        seq: u64,
        from: String,
        body: String,
    },
    Duplicate(u64),
    Acked {
        client_msg_id: String,
        seq: u64,
    },
    SendFailed {
        client_msg_id: String,
        code: proto::ErrorCode,
    },
    GroupReply(Vec<String>),
    ServerError(proto::ErrorCode),
    Stopped(String),
}

#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<Seen>>,
    pub changed: tokio::sync::Notify,
}

impl ClientObserver for Recorder {
    fn on_event(&self, _state: &ClientState, event: &ClientEvent<'_>) {
        let seen = match event {
            ClientEvent::Connected { .. } => Seen::Connected,
            ClientEvent::Disconnected(cause) => Seen::Disconnected(format!("{cause:?}")),
            ClientEvent::Message(message) => Seen::Message {
                seq: message.seq,
                from: message.from_user.clone(),
                body: String::from_utf8_lossy(&message.body).into_owned(),
            },
            ClientEvent::DuplicateDropped { seq } => Seen::Duplicate(*seq),
            ClientEvent::SendAcked {
                client_msg_id, seq, ..
            } => Seen::Acked {
                client_msg_id: client_msg_id.to_string(),
                seq: *seq,
            },
            ClientEvent::SendFailed {
                client_msg_id,
                code,
                ..
            } => Seen::SendFailed {
                client_msg_id: client_msg_id.to_string(),
                code: *code,
            },
            ClientEvent::GroupReply(reply) => Seen::GroupReply(reply.members.clone()),
            ClientEvent::ServerError(error) => Seen::ServerError(error.code()),
            ClientEvent::Stopped(exit) => Seen::Stopped(format!("{exit:?}")),
            _ => return,
        };
        self.seen.lock().unwrap().push(seen);
        self.changed.notify_waiters();
    }
}

/// A running client core.
pub struct TestClient {
    pub handle: ClientHandle,
    pub recorder: Arc<Recorder>,
    pub state: SharedClientState,
    pub task: tokio::task::JoinHandle<imlab_core::client::ClientExit>,
}

impl TestClient {
    pub fn start(addr: SocketAddr, state: SharedClientState, config: ClientConfig) -> TestClient {
        TestClient::start_on(TcpConnector { target: addr }, state, config)
    }

    pub fn start_on<C: Connector>(
        connector: C,
        state: SharedClientState,
        config: ClientConfig,
    ) -> TestClient {
        let recorder = Arc::new(Recorder::default());
        let (client, handle) = Client::new(
            connector,
            config,
            state.clone(),
            Box::new(Fixed {
                interval: Duration::from_secs(60),
            }),
            recorder.clone(),
            7,
        );
        let task = tokio::spawn(client.run());
        TestClient {
            handle,
            recorder,
            state,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.recorder.seen.lock().unwrap().clone()
    }

    /// Waits until `condition` holds over what was seen; panics after [`WAIT`].
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&[Seen]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.recorder.changed.notified();
            if condition(&self.seen()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("timed out waiting for {what}; seen: {:#?}", self.seen());
            }
        }
    }

    pub async fn wait_connected(&self) {
        self.wait_for("connected", |seen| seen.contains(&Seen::Connected))
            .await;
    }

    /// Bodies of processed messages, in processing order.
    pub fn bodies(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Message { body, .. } => Some(body),
                _ => None,
            })
            .collect()
    }

    pub async fn wait_bodies(&self, n: usize) -> Vec<String> {
        self.wait_for(&format!("{n} messages"), |seen| {
            seen.iter()
                .filter(|s| matches!(s, Seen::Message { .. }))
                .count()
                >= n
        })
        .await;
        self.bodies()
    }

    pub async fn stop(self) -> imlab_core::client::ClientExit {
        self.handle.shutdown().unwrap();
        self.task.await.unwrap()
    }
}

/// A server on in-memory pipes, for tests under paused tokio time.
pub fn memory_server(config: ServerConfig) -> (MemoryConnector, Arc<Server>, Arc<MemoryStore>) {
    memory_server_with(config, MemoryStore::new())
}

/// [`memory_server`] on a given store.
pub fn memory_server_with(
    config: ServerConfig,
    store: MemoryStore,
) -> (MemoryConnector, Arc<Server>, Arc<MemoryStore>) {
    let (listener, connector) = memory::pair(64);
    let store = Arc::new(store);
    let server = Arc::new(Server::new(config, test_deps(store.clone())));
    let running = server.clone();
    tokio::spawn(async move { running.run(listener, std::future::pending()).await });
    (connector, server, store)
}

/// A test server's dependencies: `store`, paused-time clock, recorded pushes, dev auth.
pub fn test_deps(store: Arc<dyn Store>) -> ServerDeps {
    ServerDeps {
        store,
        clock: Arc::new(imlab_core::clock::TokioClock::new(1_700_000_000_000)),
        push: Arc::new(RecordingPush::default()),
        auth: Authenticator::Dev,
    }
}

pub type MemReader = FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>;
pub type MemWriter = FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>;

/// A raw-frame connection over an in-memory pipe.
pub async fn mem_open(connector: &MemoryConnector) -> (MemReader, MemWriter) {
    let (read, write) = tokio::io::split(connector.connect().await.unwrap());
    (
        FrameReader::new(read, codec::DEFAULT_MAX_FRAME_BYTES),
        FrameWriter::new(write, codec::DEFAULT_MAX_FRAME_BYTES),
    )
}

/// A logged-in raw-frame connection over an in-memory pipe.
pub async fn mem_login(
    connector: &MemoryConnector,
    user: &str,
    device: &str,
) -> (MemReader, MemWriter) {
    let (mut reader, mut writer) = mem_open(connector).await;
    writer
        .send(&Frame::new(login(user, device, "")))
        .await
        .unwrap();
    let reply = reader.next().await.unwrap().unwrap();
    assert_eq!(reply.kind(), "login_reply");
    (reader, writer)
}
