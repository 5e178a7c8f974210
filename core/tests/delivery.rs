//! Delivery over real loopback sockets, through the client core and through raw frames.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use imlab_core::auth::Authenticator;
use imlab_core::client::{ClientConfig, ClientState};
use imlab_core::proto::{self, Body, KickReason, Target};
use imlab_core::server::ServerConfig;
use imlab_core::store::Store;

#[tokio::test]
async fn one_to_one_delivery_online_with_ack_and_the_senders_own_copy() {
    let server = TestServer::start().await;
    let alice = server.client("alice", "phone");
    let bob = server.client("bob", "phone");
    alice.wait_connected().await;
    bob.wait_connected().await;

    let id = alice
        .handle
        .send(Target::Peer("bob".into()), Bytes::from("hi bob"))
        .unwrap();
    assert_eq!(bob.wait_bodies(1).await, vec!["hi bob"]);
    alice
        .wait_for("ack", |seen| {
            seen.contains(&Seen::Acked {
                client_msg_id: id.clone(),
                seq: 1,
            })
        })
        .await;
    // The sender's own device gets its message at its own seq 1 too, exactly once.
    assert_eq!(alice.wait_bodies(1).await, vec!["hi bob"]);
    assert_eq!(server.store.max_seq("bob").await.unwrap(), 1);
    assert!(
        ClientState::clone(&bob.state.lock().unwrap())
            .outgoing
            .is_empty()
    );
    assert_eq!(bob.state.lock().unwrap().last_seq, 1);
    server.stop().await;
}

#[tokio::test]
async fn offline_recipient_gets_a_push_then_the_message_by_sync_on_login() {
    let server = TestServer::start().await;
    let alice = server.client("alice", "phone");
    alice.wait_connected().await;
    for n in 0..3 {
        alice
            .handle
            .send(Target::Peer("bob".into()), Bytes::from(format!("m{n}")))
            .unwrap();
    }
    alice
        .wait_for("3 acks", |seen| {
            seen.iter()
                .filter(|s| matches!(s, Seen::Acked { .. }))
                .count()
                == 3
        })
        .await;
    // Every send acked: the queue is empty and has let its slots go.
    let outgoing = alice.state.lock().unwrap().outgoing.capacity();
    assert_eq!(outgoing, 0, "an emptied outgoing queue keeps no slots");
    let pushes = server.push.notices.lock().unwrap().clone();
    assert_eq!(
        pushes
            .iter()
            .filter(|p| p.user == "bob")
            .map(|p| p.seq)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    let bob = server.client("bob", "phone");
    assert_eq!(bob.wait_bodies(3).await, vec!["m0", "m1", "m2"]);
    server.stop().await;
}

#[tokio::test]
async fn the_senders_second_device_receives_the_sent_message() {
    let server = TestServer::start().await;
    let phone = server.client("alice", "phone");
    let laptop = server.client("alice", "laptop");
    let bob = server.client("bob", "phone");
    for client in [&phone, &laptop, &bob] {
        client.wait_connected().await;
    }
    phone
        .handle
        .send(Target::Peer("bob".into()), Bytes::from("from my phone"))
        .unwrap();
    assert_eq!(laptop.wait_bodies(1).await, vec!["from my phone"]);
    assert_eq!(bob.wait_bodies(1).await, vec!["from my phone"]);
    let laptop_seen = laptop.seen();
    assert!(laptop_seen.contains(&Seen::Message {
        seq: 1,
        from: "alice".into(),
        body: "from my phone".into()
    }));
    server.stop().await;
}

/// A client core asks (in its Login) to take each SendAck as its copy of what it sent: the
/// server pushes the message to the sender's other devices and the recipient, not back to the
/// sending device, which processes it once at the seq its ack names. A client that does not
/// ask (a raw connection here, as any client written from the .proto before the option) still
/// gets its own send pushed back.
#[tokio::test]
async fn the_sending_device_takes_its_ack_as_its_copy_and_is_not_pushed_its_own_send() {
    let server = TestServer::start().await;
    let phone = server.client("alice", "phone");
    phone.wait_connected().await;
    let (mut laptop, _) = RawConn::login(server.addr, "alice", "laptop").await;
    let (mut bob, _) = RawConn::login(server.addr, "bob", "phone").await;
    let pushed = || {
        server
            .server
            .counters()
            .notify_data_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    let id = phone
        .handle
        .send(Target::Peer("bob".into()), Bytes::from("from my phone"))
        .unwrap();
    phone
        .wait_for("the ack", |seen| {
            seen.contains(&Seen::Acked {
                client_msg_id: id.clone(),
                seq: 1,
            })
        })
        .await;
    // Counted before the ack is written: the laptop and bob, not the phone.
    assert_eq!(pushed(), 2);
    let own = Seen::Message {
        seq: 1,
        from: "alice".into(),
        body: "from my phone".into(),
    };
    assert_eq!(phone.wait_bodies(1).await, vec!["from my phone"]);
    assert!(phone.seen().contains(&own), "{:?}", phone.seen());
    for conn in [&mut laptop, &mut bob] {
        match conn.recv().await {
            Some(Body::NotifyData(notify)) => {
                assert_eq!(notify.message.unwrap().body, "from my phone".as_bytes());
            }
            other => panic!("expected the push, got {other:?}"),
        }
    }

    // Bob did not ask: his own send comes back to him, after its ack.
    bob.send(send_to_peer("b1", "alice", "from bob")).await;
    let mut pushes = Vec::new();
    assert!(matches!(
        bob.recv_reply(&mut pushes).await,
        Some(Body::SendAck(proto::SendAck { seq: 2, .. }))
    ));
    while pushes.is_empty() {
        match bob.recv().await {
            Some(body @ Body::NotifyData(_)) => pushes.push(body),
            other => panic!("expected bob's own send pushed back, got {other:?}"),
        }
    }
    // Alice's two devices, then bob's own: each counted.
    assert_eq!(
        phone.wait_bodies(2).await,
        vec!["from my phone", "from bob"]
    );
    assert_eq!(pushed(), 5);
    assert_eq!(phone.state.lock().unwrap().last_seq, 2);
    assert!(
        !phone.seen().iter().any(|s| matches!(s, Seen::Duplicate(_))),
        "{:?}",
        phone.seen()
    );
    server.stop().await;
}

/// The SendAck of a device's own message can name a seq past one it has not had yet (another
/// sender's message to it stored just before, its push still on the way). The client does
/// not process its copy out of order: it syncs, as for a push past a gap, and processes both
/// in seq order, each once. The server here is scripted to answer that way, and then to push
/// the device's own send back as a server without the option would.
#[tokio::test]
async fn an_own_copy_past_a_gap_waits_for_a_sync_that_brings_both_in_order() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let phone = TestClient::start(
        listener.local_addr().unwrap(),
        ClientState::new("alice", "phone").shared(),
        ClientConfig::default(),
    );
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the client connects")
        .unwrap();
    let (read, write) = stream.into_split();
    let mut server = RawConn {
        reader: imlab_core::framed::FrameReader::new(read, 65_536),
        writer: imlab_core::framed::FrameWriter::new(write, 65_536),
    };
    match server.recv().await {
        Some(Body::Login(login)) => assert!(login.send_ack_is_copy, "{login:?}"),
        other => panic!("expected a login, got {other:?}"),
    }
    server
        .send(Body::LoginReply(proto::LoginReply {
            inbox_epoch: 1,
            idle_timeout_s: 90,
            ..Default::default()
        }))
        .await;
    let sync = |messages: Vec<proto::Message>| {
        let max_seq = messages.last().map_or(0, |m| m.seq);
        Body::SyncResponse(proto::SyncResponse {
            messages,
            has_more: false,
            max_seq,
        })
    };
    match server.recv().await {
        Some(Body::SyncRequest(request)) => assert_eq!(request.after_seq, 0),
        other => panic!("expected the login sync, got {other:?}"),
    }
    server.send(sync(Vec::new())).await;
    phone.wait_connected().await;

    let id = phone
        .handle
        .send(Target::Peer("bob".into()), Bytes::from("mine"))
        .unwrap();
    let Some(Body::Send(send)) = server.recv().await else {
        panic!("expected the send");
    };
    server
        .send(Body::SendAck(proto::SendAck {
            client_msg_id: send.client_msg_id.clone(),
            seq: 2,
            server_time_ms: 5,
            msg_id: 20,
        }))
        .await;
    match server.recv().await {
        Some(Body::SyncRequest(request)) => assert_eq!(request.after_seq, 0),
        other => panic!("expected a sync for seq 1, got {other:?}"),
    }
    let message = |seq, msg_id, from: &str, body: &str, client_msg_id: &str| proto::Message {
        seq,
        msg_id,
        from_user: from.into(),
        from_device: "phone".into(),
        client_msg_id: client_msg_id.into(),
        to: Some(proto::message::To::PeerUser("bob".into())),
        body: body.as_bytes().to_vec().into(),
        server_time_ms: 5,
    };
    server
        .send(sync(vec![
            message(1, 10, "carol", "before mine", "c1"),
            message(2, 20, "alice", "mine", &send.client_msg_id),
        ]))
        .await;
    assert_eq!(phone.wait_bodies(2).await, vec!["before mine", "mine"]);
    assert!(phone.seen().contains(&Seen::Acked {
        client_msg_id: id,
        seq: 2
    }));
    assert!(
        !phone.seen().iter().any(|s| matches!(s, Seen::Duplicate(_))),
        "{:?}",
        phone.seen()
    );
    assert_eq!(phone.state.lock().unwrap().last_seq, 2);
    // The login sync's ack (of seq 0), then the second sync's.
    loop {
        match server.recv().await {
            Some(Body::DeviceAck(ack)) if ack.seq == 2 => break,
            Some(Body::DeviceAck(ack)) if ack.seq == 0 => {}
            other => panic!("expected the sync's ack, got {other:?}"),
        }
    }

    // A server that pushes the device's own send back anyway (one that ignores the option)
    // gets its push acked, not left to fall back to a Notify.
    server
        .send(Body::NotifyData(proto::NotifyData {
            message: Some(message(2, 20, "alice", "mine", &send.client_msg_id)),
        }))
        .await;
    match server.recv().await {
        Some(Body::DeviceAck(ack)) => assert_eq!(ack.seq, 2),
        other => panic!("expected the duplicate acked, got {other:?}"),
    }
    assert_eq!(phone.bodies(), vec!["before mine", "mine"]);
    phone.stop().await;
}

#[tokio::test]
async fn a_group_of_50_gets_each_message_exactly_once_per_device_in_order() {
    let server = TestServer::start().await;
    let members: Vec<String> = (0..50).map(|n| format!("u{n:02}")).collect();
    let clients: Vec<TestClient> = members
        .iter()
        .map(|user| server.client(user, "phone"))
        .collect();
    for client in &clients {
        client.wait_connected().await;
    }
    let creator = &clients[0];
    creator
        .handle
        .create_group("team", members[1..].to_vec())
        .unwrap();
    creator
        .wait_for("group reply", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::GroupReply(m) if m.len() == 50))
        })
        .await;
    let sent: Vec<String> = (0..5).map(|n| format!("g{n}")).collect();
    for body in &sent {
        clients[7]
            .handle
            .send(Target::Group("team".into()), Bytes::from(body.clone()))
            .unwrap();
    }
    for client in &clients {
        assert_eq!(client.wait_bodies(5).await, sent);
    }
    // A last message behind them on every connection, in order: a repeat of any of the five
    // pushed before it would be in an app log before it.
    clients[7]
        .handle
        .send(Target::Group("team".into()), Bytes::from("last"))
        .unwrap();
    let mut with_last = sent.clone();
    with_last.push("last".into());
    for client in &clients {
        assert_eq!(client.wait_bodies(6).await, with_last);
        assert_eq!(client.state.lock().unwrap().last_seq, 6);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_send_retried_after_a_lost_ack_is_stored_once() {
    let server = TestServer::start().await;
    let (mut first, _) = RawConn::login(server.addr, "alice", "phone").await;
    first.send(send_to_peer("phone-1", "bob", "once")).await;
    let mut pushes = Vec::new();
    let Some(Body::SendAck(ack)) = first.recv_reply(&mut pushes).await else {
        panic!("no ack")
    };
    // The ack is "lost": the client never saw it, reconnects and retries with the same id.
    drop(first);
    let (mut second, _) = RawConn::login(server.addr, "alice", "phone").await;
    second.send(send_to_peer("phone-1", "bob", "once")).await;
    let Some(Body::SendAck(retry_ack)) = second.recv_reply(&mut pushes).await else {
        panic!("no ack")
    };
    assert_eq!((retry_ack.seq, retry_ack.msg_id), (ack.seq, ack.msg_id));
    assert_eq!(server.store.n_messages(), 1);
    assert_eq!(server.store.max_seq("bob").await.unwrap(), 1);
    assert_eq!(
        server
            .server
            .counters()
            .duplicate_sends
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // The client core does the same on its own: an unacked send in the persistent state is
    // resent with its id after a restart, and stored once.
    let mut state = ClientState::new("carol", "phone");
    state
        .outgoing
        .push_back(imlab_core::client::OutgoingMessage {
            client_msg_id: "phone-1".into(),
            to: Target::Peer("bob".into()),
            body: Bytes::from("once"),
            n_attempts: 1,
        });
    let (mut raw, _) = RawConn::login(server.addr, "carol", "phone").await;
    raw.send(send_to_peer("phone-1", "bob", "once")).await;
    raw.recv_reply(&mut pushes).await;
    drop(raw);
    let carol = TestClient::start(server.addr, state.shared(), ClientConfig::default());
    carol
        .wait_for("ack", |seen| {
            seen.iter().any(|s| matches!(s, Seen::Acked { .. }))
        })
        .await;
    assert_eq!(server.store.n_messages(), 2);
    assert_eq!(server.store.max_seq("bob").await.unwrap(), 2);
    server.stop().await;
}

#[tokio::test]
async fn the_same_device_logging_in_twice_kicks_the_first_connection() {
    let server = TestServer::start().await;
    let (mut first, _) = RawConn::login(server.addr, "bob", "phone").await;
    let (mut second, _) = RawConn::login(server.addr, "bob", "phone").await;
    let frames = first.expect_closed().await;
    assert!(
        matches!(frames.as_slice(), [Body::Kick(kick)] if kick.reason() == KickReason::Replaced),
        "first connection got {frames:?}"
    );
    second.send(Body::Ping(proto::Ping { id: 1 })).await;
    assert!(matches!(second.recv().await, Some(Body::Pong(_))));
    assert_eq!(server.server.n_sessions(), 1);

    // A client core that is replaced (say by its own stale login, delayed in the network)
    // reconnects after its backoff and takes the session back. No jitter: the reconnect comes
    // after the 1 s backoff, not after a random draw of up to 19 s.
    let config = ClientConfig {
        backoff: imlab_core::client::BackoffConfig {
            jitter_max: Duration::ZERO,
            ..Default::default()
        },
        ..ClientConfig::default()
    };
    let core = TestClient::start(
        server.addr,
        ClientState::new("carol", "phone").shared(),
        config,
    );
    core.wait_connected().await;
    let (mut stale, _) = RawConn::login(server.addr, "carol", "phone").await;
    core.wait_for("reconnected", |seen| {
        seen.iter().filter(|s| **s == Seen::Connected).count() == 2
    })
    .await;
    assert!(
        core.seen()
            .contains(&Seen::Disconnected("Kicked(Replaced)".into())),
        "{:?}",
        core.seen()
    );
    let frames = stale.expect_closed().await;
    assert!(
        matches!(frames.as_slice(), [Body::Kick(kick)] if kick.reason() == KickReason::Replaced),
        "{frames:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn sync_is_paged_and_ordered() {
    // 250 sends in a burst: no per-user rate limit here.
    let config = ServerConfig {
        send_rate_per_user: 0,
        ..ServerConfig::default()
    };
    let server = TestServer::start_with(config, Authenticator::Dev).await;
    let (mut alice, _) = RawConn::login(server.addr, "alice", "phone").await;
    let mut pushes = Vec::new();
    for n in 0..250 {
        alice
            .send(send_to_peer(&format!("m{n}"), "bob", &format!("{n}")))
            .await;
        alice.recv_reply(&mut pushes).await;
    }
    let (mut bob, reply) = RawConn::login(server.addr, "bob", "phone").await;
    assert_eq!(reply.max_seq, 250);
    // (limit, max_bytes) -> pages needed for all 250. A byte budget below one message still
    // gets one message per page; messages here encode to 40-60 bytes, so a 200-byte budget
    // holds 3 or 4 of them and the 250 take 63 to 84 pages.
    let cases = [(100, 0, 3..=3), (100, 1, 250..=250), (100, 200, 63..=84)];
    for (limit, max_bytes, pages_expected) in cases {
        let (pages, page_bytes_max) = sync_all(&mut bob, limit, max_bytes).await;
        assert!(
            pages_expected.contains(&pages),
            "limit {limit}, max_bytes {max_bytes}: {pages} pages"
        );
        if max_bytes > 1 {
            assert!(page_bytes_max <= max_bytes as usize, "{page_bytes_max}");
        }
    }
    server.stop().await;
}

/// Syncs a whole inbox of messages whose bodies are their seq - 1; returns the pages it took
/// and the most message bytes in one page.
async fn sync_all(conn: &mut RawConn, limit: u32, max_bytes: u32) -> (u32, usize) {
    let mut after_seq = 0;
    let mut pages = 0;
    let mut page_bytes_max = 0;
    loop {
        conn.send(Body::SyncRequest(proto::SyncRequest {
            after_seq,
            limit,
            max_bytes,
        }))
        .await;
        let Some(Body::SyncResponse(page)) = conn.recv().await else {
            panic!("no page")
        };
        pages += 1;
        // The page's messages as the wire carries them (each with its field tag and length),
        // measured on the response itself rather than by the server's own accounting.
        let page_bytes = prost::Message::encoded_len(&proto::SyncResponse {
            messages: page.messages.clone(),
            ..Default::default()
        });
        page_bytes_max = page_bytes_max.max(page_bytes);
        for message in &page.messages {
            assert_eq!(message.seq, after_seq + 1);
            assert_eq!(message.body, Bytes::from(format!("{}", after_seq)));
            after_seq = message.seq;
        }
        if !page.has_more {
            break;
        }
    }
    assert_eq!(after_seq, 250);
    (pages, page_bytes_max)
}
