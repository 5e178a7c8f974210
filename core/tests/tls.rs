//! TLS over loopback sockets: the server core on a `TlsListener`, client cores on a
//! `TlsConnector`, with rcgen certificates written to PEM files.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use imlab_core::auth::Authenticator;
use imlab_core::client::{ClientConfig, ClientState};
use imlab_core::clock::SystemClock;
use imlab_core::codec::DEFAULT_MAX_FRAME_BYTES;
use imlab_core::framed::FrameReader;
use imlab_core::net::{Connector, TcpConnector};
use imlab_core::proto::{Body, ErrorCode, Target};
use imlab_core::server::{Server, ServerConfig, ServerDeps};
use imlab_core::store::MemoryStore;
use imlab_core::tls::{self, TlsClient, TlsConnector, TlsError, TlsListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files.
struct Identity {
    /// Holds the directory the files are in, when the identity made it.
    _dir: Option<tempfile::TempDir>,
    cert: PathBuf,
    key: PathBuf,
}

/// A fresh identity in its own temporary directory.
fn new_identity(name: &str) -> Identity {
    let dir = tempfile::Builder::new()
        .prefix(&format!("imlab-core-tls-{name}-"))
        .tempdir()
        .unwrap();
    let identity = identity_in(dir.path(), "server");
    Identity {
        _dir: Some(dir),
        ..identity
    }
}

/// Asserts `result` failed with a message containing every one of `parts`.
fn check<T>(result: Result<T, TlsError>, parts: &[&str]) {
    let text = result.map(|_| ()).unwrap_err().to_string();
    for part in parts {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
}

fn identity_in(dir: &std::path::Path, name: &str) -> Identity {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let identity = Identity {
        _dir: None,
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&identity.cert, generated.cert.pem()).unwrap();
    std::fs::write(&identity.key, generated.signing_key.serialize_pem()).unwrap();
    identity
}

/// A server core on a TLS listener on 127.0.0.1 with an ephemeral port.
struct TlsServer {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    async fn start(identity: &Identity, config: ServerConfig) -> TlsServer {
        let tls = tls::server_config_from_files(&identity.cert, &identity.key).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TlsListener::new(tcp, tls);
        let addr = listener.local_addr().unwrap();
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
        TlsServer {
            addr,
            server,
            stop: Some(stop),
            task,
        }
    }

    fn connector(&self, tls: &TlsClient) -> TlsConnector<TcpConnector> {
        TlsConnector::new(TcpConnector { target: self.addr }, self.addr, tls)
    }

    fn client(&self, tls: &TlsClient, user: &str) -> TestClient {
        TestClient::start_on(
            self.connector(tls),
            ClientState::new(user, "phone").shared(),
            client_config(),
        )
    }

    fn handshakes_failed(&self) -> u64 {
        self.server
            .counters()
            .handshakes_failed
            .load(Ordering::Relaxed)
    }

    /// Waits until the server has counted `n` failed handshakes; panics after [`WAIT`].
    async fn wait_handshakes_failed(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.handshakes_failed() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} handshake failures counted, waited for {n}",
                self.handshakes_failed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// Retries come quickly, so a refused client shows its error more than once within WAIT.
fn client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn trusting(identity: &Identity, server_name: Option<&str>) -> TlsClient {
    TlsClient::from_ca_file(&identity.cert, server_name).unwrap()
}

/// Waits until `client` reports a disconnect whose text contains every one of `parts`.
async fn wait_refused(client: &TestClient, parts: &[&str]) {
    client
        .wait_for(&format!("a disconnect saying {parts:?}"), |seen| {
            seen.iter().any(|seen| {
                matches!(seen, Seen::Disconnected(text) if parts.iter().all(|p| text.contains(p)))
            })
        })
        .await;
    assert!(
        !client.seen().contains(&Seen::Connected),
        "{:?}",
        client.seen()
    );
}

#[tokio::test]
async fn clients_trusting_the_certificate_log_in_send_and_receive_over_tls() {
    let identity = new_identity("deliver");
    let server = TlsServer::start(&identity, ServerConfig::default()).await;
    // One verifies the certificate's IP address (the default), one its DNS name.
    let alice = server.client(&trusting(&identity, None), "alice");
    let bob = server.client(&trusting(&identity, Some("localhost")), "bob");
    alice.wait_connected().await;
    bob.wait_connected().await;

    let id = alice
        .handle
        .send(Target::Peer("bob".into()), Bytes::from("hi bob, privately"))
        .unwrap();
    assert_eq!(bob.wait_bodies(1).await, vec!["hi bob, privately"]);
    alice
        .wait_for("ack", |seen| {
            seen.contains(&Seen::Acked {
                client_msg_id: id.clone(),
                seq: 1,
            })
        })
        .await;
    assert_eq!(server.handshakes_failed(), 0);
    server.stop().await;
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_fails_the_handshake_and_others_still_get_in() {
    let identity = new_identity("trust");
    let stranger = new_identity("stranger");
    let server = TlsServer::start(&identity, ServerConfig::default()).await;
    let handshake_failed = format!("TLS handshake with {} failed", server.addr);

    let untrusting = server.client(&trusting(&stranger, None), "mallory");
    wait_refused(
        &untrusting,
        &[&handshake_failed, "invalid peer certificate"],
    )
    .await;
    let misnamed = server.client(&trusting(&identity, Some("example.com")), "eve");
    wait_refused(
        &misnamed,
        &[&handshake_failed, "certificate not valid for name"],
    )
    .await;

    // The server saw the failures and keeps serving everyone else.
    let good = server.client(&trusting(&identity, None), "alice");
    good.wait_connected().await;
    server.wait_handshakes_failed(2).await;
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_at_the_login_timeout_without_holding_up_accepts() {
    let identity = new_identity("stall");
    // Long enough for a TLS client to log in on a busy machine while the others wait.
    let login_timeout = Duration::from_secs(3);
    let config = ServerConfig {
        login_timeout,
        ..ServerConfig::default()
    };
    let server = TlsServer::start(&identity, config).await;
    let started = tokio::time::Instant::now();
    // One client says nothing at all; one starts a TLS record and stops.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();

    // Meanwhile the accept loop takes and serves new clients: the stalled handshakes are
    // waited for in their own tasks, so both are still open when this client is in.
    let alice = server.client(&trusting(&identity, None), "alice");
    alice.wait_connected().await;
    for stream in [&silent, &stalled] {
        let mut buf = [0u8; 64];
        let read = stream.try_read(&mut buf);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "closed before a later client got in: {read:?}"
        );
    }

    for stream in [&mut silent, &mut stalled] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("the server closes a stalled handshake");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let waited = started.elapsed();
    assert!(waited >= login_timeout, "closed after {waited:?}");
    server.wait_handshakes_failed(2).await;
    assert_eq!(server.handshakes_failed(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_finished_handshake_without_login_gets_the_login_timeout_error_over_tls() {
    let identity = new_identity("nologin");
    let config = ServerConfig {
        login_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = TlsServer::start(&identity, config).await;
    let stream = server
        .connector(&trusting(&identity, None))
        .connect()
        .await
        .unwrap();
    let mut reader = FrameReader::new(stream, DEFAULT_MAX_FRAME_BYTES);
    let frame = tokio::time::timeout(WAIT, reader.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&frame.body, Some(Body::Error(e)) if e.code() == ErrorCode::LoginTimeout),
        "{frame:?}"
    );
    assert_eq!(server.handshakes_failed(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_to_a_tls_server_is_told_to_use_tls() {
    let identity = new_identity("plain-to-tls");
    let server = TlsServer::start(&identity, ServerConfig::default()).await;
    let plain = TestClient::start(
        server.addr,
        ClientState::new("alice", "phone").shared(),
        client_config(),
    );
    wait_refused(&plain, &["LoginFailed(BadFrame", tls::PLAINTEXT_REFUSAL]).await;
    server.wait_handshakes_failed(1).await;
    // Still serving TLS clients.
    let good = server.client(&trusting(&identity, None), "bob");
    good.wait_connected().await;
    server.stop().await;
}

#[tokio::test]
async fn a_tls_client_to_a_plaintext_server_fails_clearly_on_both_ends() {
    let identity = new_identity("tls-to-plain");
    let server = TestServer::start().await;
    let tls_client = TestClient::start_on(
        TlsConnector::new(
            TcpConnector {
                target: server.addr,
            },
            server.addr,
            &trusting(&identity, None),
        ),
        ClientState::new("alice", "phone").shared(),
        client_config(),
    );
    wait_refused(
        &tls_client,
        &[&format!("TLS handshake with {} failed", server.addr)],
    )
    .await;

    // The server's side: the start of a ClientHello is refused with a message that says so.
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    hello.resize(5 + 0x40, 0);
    let mut conn = garbage_conn(server.addr, &hello).await;
    let frames = conn.expect_closed().await;
    assert!(
        matches!(frames.as_slice(), [Body::Error(e)]
            if e.code() == ErrorCode::FrameTooLarge && e.text.contains("plaintext, not TLS")),
        "{frames:?}"
    );
    server.stop().await;
}

#[test]
fn bad_pem_inputs_name_the_file_and_what_is_missing() {
    let identity = new_identity("bad-pem");
    let dir = identity.cert.parent().unwrap().to_path_buf();
    let missing = dir.join("missing.pem");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no PEM blocks here\n").unwrap();

    let (cert, key) = (identity.cert.as_path(), identity.key.as_path());
    let path = |p: &std::path::Path| p.display().to_string();
    check(
        tls::server_config_from_files(&missing, key),
        &["reading", &path(&missing)],
    );
    check(
        tls::server_config_from_files(cert, &missing),
        &["reading", &path(&missing)],
    );
    check(
        tls::server_config_from_files(&empty, key),
        &[&path(&empty), "no certificate"],
    );
    // A certificate file holds no key.
    check(
        tls::server_config_from_files(cert, cert),
        &[&path(cert), "no private key"],
    );
    check(
        TlsClient::from_ca_file(&empty, None),
        &[&path(&empty), "no certificate"],
    );
    check(
        TlsClient::from_ca_file(cert, Some("not a name!")),
        &["not a name!", "neither a DNS name nor an IP"],
    );
    // A key that is not the certificate's.
    let other = identity_in(&dir, "other");
    check(
        tls::server_config_from_files(cert, &other.key),
        &[&path(cert), &path(&other.key), "not a usable TLS identity"],
    );
}
