//! Login timeout, idle reaping and the push-ack fallback, under paused tokio time over in-memory
//! pipes (real sockets and auto-advancing time do not mix). No real sleeps: time jumps.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{MemReader as Reader, MemWriter as Writer, mem_open as open};
use imlab_core::net::memory::MemoryConnector;
use imlab_core::proto::{self, Body, ErrorCode, Frame};
use imlab_core::server::{Server, ServerConfig};
use imlab_core::store::Store;
use tokio::time::Instant;

fn start_server() -> (MemoryConnector, Arc<Server>) {
    let (connector, server, _store) = common::memory_server(ServerConfig::default());
    (connector, server)
}

/// Reads frames until the server closes; returns them and when the close was seen.
async fn until_closed(reader: &mut Reader) -> (Vec<Body>, Instant) {
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = reader.next().await {
        frames.push(frame.body.unwrap());
    }
    (frames, Instant::now())
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_login_is_closed_after_the_login_timeout() {
    let (connector, _server) = start_server();
    let start = Instant::now();
    let (mut reader, _writer) = open(&connector).await;
    let (frames, closed_at) = until_closed(&mut reader).await;
    let waited = closed_at - start;
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "closed after {waited:?}"
    );
    assert!(
        matches!(frames.as_slice(), [Body::Error(e)] if e.code() == ErrorCode::LoginTimeout),
        "{frames:?}"
    );
}

async fn login(writer: &mut Writer, reader: &mut Reader, heartbeat_interval_max_s: u32) {
    let login = proto::Login {
        user: "bob".into(),
        device: "phone".into(),
        token: String::new(),
        heartbeat_interval_max_s,
        send_ack_is_copy: false,
    };
    writer.send(&Frame::new(Body::Login(login))).await.unwrap();
    let reply = reader.next().await.unwrap().unwrap();
    let Some(Body::LoginReply(reply)) = reply.body else {
        panic!("no login reply: {reply:?}")
    };
    // One and a half intervals: both callers log in with 60 s.
    assert_eq!(heartbeat_interval_max_s, 60);
    assert_eq!(reply.idle_timeout_s, 90);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_connection_and_silence_reaps_it_at_one_and_a_half_intervals() {
    let (connector, server) = start_server();
    let (mut reader, mut writer) = open(&connector).await;
    login(&mut writer, &mut reader, 60).await;

    // Pings every 80 s (inside the 90 s idle timeout) keep the connection for 10 minutes.
    for id in 0..8 {
        tokio::time::sleep(Duration::from_secs(80)).await;
        writer
            .send(&Frame::new(Body::Ping(proto::Ping { id })))
            .await
            .unwrap();
        let pong = reader.next().await.unwrap().unwrap();
        assert!(matches!(pong.body, Some(Body::Pong(proto::Pong { id: got, .. })) if got == id));
    }
    // Then silence: reaped 90 s after the last frame, not before.
    let last_frame_at = Instant::now();
    let (frames, closed_at) = until_closed(&mut reader).await;
    let silent = closed_at - last_frame_at;
    assert!(
        silent >= Duration::from_secs(90) && silent < Duration::from_secs(91),
        "reaped after {silent:?}"
    );
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(server.counters().reaped.load(Ordering::Relaxed), 1);
    assert_eq!(server.n_sessions(), 0);
}

/// A phone whose downlink is backed up (the server's writes to it wait) but whose heartbeats
/// still arrive is alive: the server reads its frames while its writes wait, so it is not
/// reaped, and everything queued for it arrives once it reads.
#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_connection_whose_downlink_is_backed_up() {
    let config = ServerConfig {
        send_rate_per_user: 0,
        ..ServerConfig::default()
    };
    let (connector, server, _store) = common::memory_server(config);
    let (mut reader, mut writer) = open(&connector).await;
    login(&mut writer, &mut reader, 60).await;
    // 20 messages of 30 KB: more than the pipe holds (256 KB), so the server's writes to bob
    // wait while bob does not read.
    let (mut alice_reader, mut alice) = common::mem_login(&connector, "alice", "phone").await;
    let body = "x".repeat(30_000);
    for n in 0..20 {
        let send = Frame::new(common::send_to_peer(&format!("big-{n}"), "bob", &body));
        alice.send(&send).await.unwrap();
        while alice_reader.next().await.unwrap().unwrap().kind() != "send_ack" {}
    }
    // Alice leaves, so the only connection the server could reap is bob's.
    drop((alice_reader, alice));
    // Bob pings every 80 s for 8 minutes (the idle timeout is 90 s) without reading.
    for id in 0..6 {
        tokio::time::sleep(Duration::from_secs(80)).await;
        writer
            .send(&Frame::new(Body::Ping(proto::Ping { id })))
            .await
            .unwrap();
    }
    assert_eq!(server.counters().reaped.load(Ordering::Relaxed), 0);
    // Then bob reads: the 20 messages, then the 6 pongs (among the Notify fallbacks for the
    // messages bob never acked), on the same connection.
    let mut kinds = Vec::new();
    while kinds.iter().filter(|k| **k == "pong").count() < 6 {
        kinds.push(reader.next().await.unwrap().unwrap().kind());
    }
    assert!(kinds[..20].iter().all(|k| *k == "notify_data"), "{kinds:?}");
    assert!(
        kinds[20..].iter().all(|k| *k == "pong" || *k == "notify"),
        "{kinds:?}"
    );
    assert_eq!(server.n_sessions(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_declared_interval_is_clamped_by_the_server_limits() {
    let (connector, _server) = start_server();
    let (mut reader, mut writer) = open(&connector).await;
    // 1 s is below the 5 s minimum: the server allows 7 s (1.5 x 5 s), not 1.5 s.
    let login = proto::Login {
        user: "bob".into(),
        device: "phone".into(),
        token: String::new(),
        heartbeat_interval_max_s: 1,
        send_ack_is_copy: false,
    };
    writer.send(&Frame::new(Body::Login(login))).await.unwrap();
    let Some(Body::LoginReply(reply)) = reader.next().await.unwrap().unwrap().body else {
        panic!("no login reply")
    };
    assert_eq!(reply.idle_timeout_s, 7);
}

#[tokio::test(start_paused = true)]
async fn a_shutting_down_server_refuses_new_connections_before_it_says_goodbye() {
    use imlab_core::net::Connector;
    use imlab_core::store::MemoryStore;

    let (listener, connector) = imlab_core::net::memory::pair(64);
    let server = Arc::new(Server::new(
        ServerConfig::default(),
        common::test_deps(Arc::new(MemoryStore::new())),
    ));
    let (shut, shutdown) = tokio::sync::oneshot::channel::<()>();
    let running = server.clone();
    let run = tokio::spawn(async move {
        running
            .run(listener, async {
                let _ = shutdown.await;
            })
            .await
    });
    // Bob reads nothing while Alice sends him more than his connection's pipe holds: the
    // server's goodbye to him cannot be flushed, so it waits (up to its close-flush timeout).
    let (_bob_reader, _bob_writer) = common::mem_login(&connector, "bob", "phone").await;
    let (mut reader, mut writer) = common::mem_login(&connector, "alice", "phone").await;
    for n in 0..12 {
        let send = Frame::new(Body::Send(proto::Send {
            client_msg_id: format!("m{n}"),
            to: Some(proto::send::To::PeerUser("bob".into())),
            body: bytes::Bytes::from(vec![b'x'; 32 * 1024]),
        }));
        writer.send(&send).await.unwrap();
        // Her own copy (her timeline holds what she sent) may come before the ack.
        loop {
            let frame = reader.next().await.unwrap().unwrap();
            match frame.kind() {
                "send_ack" => break,
                "notify_data" => {}
                other => panic!("alice got {other}"),
            }
        }
    }
    shut.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!run.is_finished(), "the goodbye to bob is still pending");
    // A client reconnecting now is refused at once rather than queued for a server that
    // will never accept it.
    let refused = connector.connect().await.map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    run.await.unwrap();
}

/// The next frame's body.
async fn next_body(reader: &mut Reader) -> Body {
    reader.next().await.unwrap().unwrap().body.unwrap()
}

/// `user`'s phone logged in with `send_ack_is_copy`: the server pushes it nothing of its own
/// sends.
async fn login_taking_copies(connector: &MemoryConnector, user: &str) -> (Reader, Writer) {
    let (mut reader, mut writer) = open(connector).await;
    let login = proto::Login {
        user: user.into(),
        device: "phone".into(),
        token: String::new(),
        heartbeat_interval_max_s: 60,
        send_ack_is_copy: true,
    };
    writer.send(&Frame::new(Body::Login(login))).await.unwrap();
    assert!(matches!(next_body(&mut reader).await, Body::LoginReply(_)));
    (reader, writer)
}

#[tokio::test(start_paused = true)]
async fn an_unacked_notify_data_falls_back_to_notify_once_and_sync_catches_up() {
    let notify_ack_timeout = Duration::from_millis(300);
    let config = ServerConfig {
        notify_ack_timeout,
        ..ServerConfig::default()
    };
    let (connector, server, store) = common::memory_server(config);
    let (mut bob_reader, mut bob) = common::mem_login(&connector, "bob", "phone").await;
    // Alice takes her SendAck as her copy: nothing is pushed to her, so every fallback the
    // server counts is bob's.
    let (mut alice_reader, mut alice) = login_taking_copies(&connector, "alice").await;
    alice
        .send(&Frame::new(common::send_to_peer(
            "phone-1",
            "bob",
            "are you there",
        )))
        .await
        .unwrap();
    assert!(matches!(
        next_body(&mut alice_reader).await,
        Body::SendAck(proto::SendAck { seq: 1, .. })
    ));

    let Body::NotifyData(data) = next_body(&mut bob_reader).await else {
        panic!("no notify_data")
    };
    let pushed_at = Instant::now();
    assert_eq!(data.message.as_ref().unwrap().seq, 1);
    // Bob does not ack: the Notify with the newest seq comes one timeout after the push.
    let Body::Notify(notify) = next_body(&mut bob_reader).await else {
        panic!("no notify fallback")
    };
    assert_eq!(Instant::now() - pushed_at, notify_ack_timeout);
    assert_eq!(notify.max_seq, 1);
    bob.send(&Frame::new(Body::SyncRequest(proto::SyncRequest {
        after_seq: 0,
        limit: 10,
        max_bytes: 0,
    })))
    .await
    .unwrap();
    let Body::SyncResponse(page) = next_body(&mut bob_reader).await else {
        panic!("no sync response")
    };
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].body, bytes::Bytes::from("are you there"));
    assert!(!page.has_more);
    bob.send(&Frame::new(Body::DeviceAck(proto::DeviceAck { seq: 1 })))
        .await
        .unwrap();
    // Acked, and a Notify is never repeated anyway: the next frame, two timeouts and more
    // later, is the Pong.
    tokio::time::sleep(notify_ack_timeout * 3).await;
    bob.send(&Frame::new(Body::Ping(proto::Ping { id: 9 })))
        .await
        .unwrap();
    assert!(matches!(
        next_body(&mut bob_reader).await,
        Body::Pong(proto::Pong { id: 9, .. })
    ));
    assert_eq!(store.cursor("bob", "phone").await.unwrap(), 1);
    assert_eq!(
        server.counters().notify_fallbacks.load(Ordering::Relaxed),
        1
    );
}

/// A device that never acks is told once per push that it has something new, not once per
/// `notify_ack_timeout`: TCP delivers the Notify or ends the connection. (Repeated, a
/// connection behind an expired NAT mapping drew a Notify every 10 s until it was reaped.)
#[tokio::test(start_paused = true)]
async fn an_unacked_push_draws_one_notify_not_one_per_timeout() {
    let notify_ack_timeout = Duration::from_millis(300);
    let config = ServerConfig {
        notify_ack_timeout,
        ..ServerConfig::default()
    };
    let (connector, server, _store) = common::memory_server(config);
    let (mut bob_reader, mut bob) = common::mem_login(&connector, "bob", "phone").await;
    // Alice takes her SendAck as her copy, so every fallback counted is bob's.
    let (mut alice_reader, mut alice) = login_taking_copies(&connector, "alice").await;
    for (n, text) in ["one", "two"].into_iter().enumerate() {
        let send = Frame::new(common::send_to_peer(&format!("m-{n}"), "bob", text));
        alice.send(&send).await.unwrap();
        while alice_reader.next().await.unwrap().unwrap().kind() != "send_ack" {}
        let Body::NotifyData(data) = next_body(&mut bob_reader).await else {
            panic!("no notify_data")
        };
        let seq = data.message.unwrap().seq;
        // Bob never acks. Five timeouts later he pings: between the push and the Pong there
        // is one Notify, for the push.
        tokio::time::sleep(notify_ack_timeout * 5).await;
        let id = n as u64;
        bob.send(&Frame::new(Body::Ping(proto::Ping { id })))
            .await
            .unwrap();
        let mut notifies = Vec::new();
        loop {
            match next_body(&mut bob_reader).await {
                Body::Notify(notify) => notifies.push(notify.max_seq),
                Body::Pong(pong) => {
                    assert_eq!(pong.id, id);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(notifies, vec![seq], "push {n}");
    }
    assert_eq!(
        server.counters().notify_fallbacks.load(Ordering::Relaxed),
        2
    );
}
