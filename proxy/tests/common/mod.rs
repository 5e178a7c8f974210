//! Test harness: imlab-core's real server on 127.0.0.1, a proxy in front of it, client cores
//! with a recording observer, and the control API.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imlab_carrier::CarrierProfile;
use imlab_core::auth::Authenticator;
use imlab_core::client::{
    BackoffConfig, Client, ClientConfig, ClientEvent, ClientHandle, ClientObserver, ClientState,
};
use imlab_core::clock::SystemClock;
use imlab_core::heartbeat::Fixed;
use imlab_core::net::TcpConnector;
use imlab_core::server::{LoggingPushProvider, Server, ServerConfig, ServerDeps};
use imlab_core::store::{MemoryStore, Store};
use imlab_proxy::{Proxy, ProxyConfig};
use tokio::sync::oneshot;

/// Generous bound for anything that should happen soon on loopback.
pub const WAIT: Duration = Duration::from_secs(15);

/// The IM server on an ephemeral port; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub async fn server() -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(Server::new(
        ServerConfig::default(),
        ServerDeps {
            store: Arc::new(MemoryStore::new()) as Arc<dyn Store>,
            clock: Arc::new(SystemClock),
            push: Arc::new(LoggingPushProvider),
            auth: Authenticator::Dev,
        },
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .run(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    TestServer { addr, _stop: stop }
}

/// A proxy in front of `upstream`; stopped when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub control: String,
    _stop: oneshot::Sender<()>,
}

pub async fn proxy(
    upstream: SocketAddr,
    profile: CarrierProfile,
    time_scale: f64,
    trace: Option<PathBuf>,
) -> TestProxy {
    let proxy = Proxy::new(ProxyConfig {
        upstream,
        profile,
        seed: 7,
        time_scale,
        flows_max: 1_000,
        trace,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let control_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = control_listener.local_addr().unwrap().to_string();
    proxy.spawn_control(control_listener);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(proxy.run(listener, async {
        let _ = stopped.await;
    }));
    TestProxy {
        addr,
        control,
        _stop: stop,
    }
}

/// A profile with a fixed NAT timeout and a short, lossless link.
pub fn nat_profile(nat_timeout: Duration, on_expiry: imlab_carrier::OnExpiry) -> CarrierProfile {
    let mut profile = imlab_carrier::preset("us-lte").unwrap();
    profile.name = "test-nat".into();
    profile.nat_timeout_min = nat_timeout;
    profile.nat_timeout_max = nat_timeout;
    profile.on_expiry = on_expiry;
    profile.loss = 0.0;
    profile.rtt_median = Duration::from_millis(4);
    profile.rtt_p99 = Duration::from_millis(8);
    profile
}

/// What a client core reported, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Connected,
    Disconnected(String),
    Message(String),
    Acked(String),
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
            ClientEvent::Message(message) => {
                Seen::Message(String::from_utf8_lossy(&message.body).into_owned())
            }
            ClientEvent::SendAcked { client_msg_id, .. } => Seen::Acked(client_msg_id.to_string()),
            _ => return,
        };
        self.seen.lock().unwrap().push(seen);
        self.changed.notify_waiters();
    }
}

/// A running client core; stopped when dropped.
pub struct TestClient {
    pub handle: ClientHandle,
    pub recorder: Arc<Recorder>,
    task: tokio::task::JoinHandle<imlab_core::client::ClientExit>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client core for `user`/`device` connecting to `addr`, heartbeating every `heartbeat`,
/// declaring a Ping dead after `heartbeat_timeout`, reconnecting after 100-200 ms.
pub fn client(
    addr: SocketAddr,
    user: &str,
    device: &str,
    heartbeat: Duration,
    heartbeat_timeout: Duration,
) -> TestClient {
    let recorder = Arc::new(Recorder::default());
    let config = ClientConfig {
        heartbeat_timeout,
        connect_timeout: Duration::from_secs(5),
        backoff: BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(200),
            jitter_max: Duration::ZERO,
        },
        ..ClientConfig::default()
    };
    let (client, handle) = Client::new(
        TcpConnector { target: addr },
        config,
        ClientState::new(user, device).shared(),
        Box::new(Fixed {
            interval: heartbeat,
        }),
        recorder.clone(),
        7,
    );
    let task = tokio::spawn(client.run());
    TestClient {
        handle,
        recorder,
        task,
    }
}

impl TestClient {
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
}

/// The control API's flow listing.
pub async fn flows(control: &str) -> Vec<serde_json::Value> {
    let listing = imlab_proxy::control::request(control, "GET", "/flows", b"")
        .await
        .unwrap();
    listing["flows"].as_array().unwrap().clone()
}

/// Polls the control API until a flow satisfies `condition`; panics after [`WAIT`]. Polling
/// (every 20 ms) is the only way to watch another process's state; the deadline bounds it.
pub async fn wait_flow(
    control: &str,
    what: &str,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let flows = flows(control).await;
        if let Some(flow) = flows.iter().find(|flow| condition(flow)) {
            return flow.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for a flow that {what}; flows: {flows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the trace file's lines satisfy `condition`; returns them. The writer flushes
/// whenever its queue runs empty, so lines appear soon after the decisions.
pub async fn wait_trace(
    file: &std::path::Path,
    what: &str,
    condition: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(file).unwrap();
        // The last line may be half-written: parse whole lines only.
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        if condition(&lines) {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for a trace where {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Position of the first trace line of `flow` with `event` (and `decision`, if given).
pub fn position(
    lines: &[serde_json::Value],
    flow: u64,
    event: &str,
    decision: Option<&str>,
) -> Option<usize> {
    lines.iter().position(|line| {
        line["flow"] == flow
            && line["event"] == event
            && decision.is_none_or(|d| line["decision"] == d)
    })
}

/// An upstream that echoes every byte, each connection in a task with a 1 KiB buffer.
pub async fn echo_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}
