//! What the server pushes of a new message to a device that does not hold the messages before
//! it (`ServerConfig::push_when_behind`): by default a `Notify`, so the device fetches it in
//! order rather than receive its bytes twice (once pushed, dropped as a gap, once in a page);
//! once the device's page has brought it level, whole messages again. Raw frames over an
//! in-memory pipe.

mod common;

use common::*;
use imlab_core::proto::{self, Body, Frame};
use imlab_core::server::{PushWhenBehind, ServerConfig};

/// Alice sends `id` to Bob and reads frames until its SendAck; returns the ack's seq.
async fn send(alice: &mut (MemReader, MemWriter), id: &str) -> u64 {
    let (reader, writer) = alice;
    writer
        .send(&Frame::new(send_to_peer(id, "bob", "hello")))
        .await
        .unwrap();
    loop {
        if let Some(Body::SendAck(ack)) = reader.next().await.unwrap().unwrap().body {
            return ack.seq;
        }
    }
}

/// The next frame's body.
async fn next_body(reader: &mut MemReader) -> Body {
    reader.next().await.unwrap().unwrap().body.unwrap()
}

/// Bob is away while Alice sends two messages, logs in, and is pushed Alice's third before he
/// syncs: what he is pushed, then his page, then what he is pushed after it.
async fn pushes_around_a_sync(push_when_behind: PushWhenBehind) -> Vec<(String, u64)> {
    let (connector, _server, _store) = memory_server(ServerConfig {
        push_when_behind,
        ..ServerConfig::default()
    });
    let mut alice = mem_login(&connector, "alice", "phone").await;
    send(&mut alice, "a1").await;
    send(&mut alice, "a2").await;
    let (mut bob, mut bob_writer) = mem_login(&connector, "bob", "phone").await;
    send(&mut alice, "a3").await;
    let mut seen = Vec::new();
    let describe = |body: &Body| match body {
        Body::NotifyData(push) => (
            "notify_data".to_string(),
            push.message.as_ref().unwrap().seq,
        ),
        Body::Notify(notify) => ("notify".to_string(), notify.max_seq),
        Body::SyncResponse(page) => (
            "page".to_string(),
            page.messages.last().map_or(0, |m| m.seq),
        ),
        other => (format!("{other:?}"), 0),
    };
    seen.push(describe(&next_body(&mut bob).await));
    bob_writer
        .send(&Frame::new(Body::SyncRequest(proto::SyncRequest {
            after_seq: 0,
            limit: 0,
            max_bytes: 0,
        })))
        .await
        .unwrap();
    seen.push(describe(&next_body(&mut bob).await));
    send(&mut alice, "a4").await;
    seen.push(describe(&next_body(&mut bob).await));
    seen
}

#[tokio::test(start_paused = true)]
async fn a_device_behind_is_pushed_a_notify_and_whole_messages_once_level() {
    assert_eq!(
        pushes_around_a_sync(PushWhenBehind::Notify).await,
        [
            ("notify".to_string(), 3),
            ("page".to_string(), 3),
            ("notify_data".to_string(), 4),
        ]
    );
}

/// The other policy, a server that pushes every message whole: Bob is pushed the message past
/// his gap, which he would drop and fetch again in his page.
#[tokio::test(start_paused = true)]
async fn the_message_policy_pushes_past_the_gap() {
    assert_eq!(
        pushes_around_a_sync(PushWhenBehind::Message).await,
        [
            ("notify_data".to_string(), 3),
            ("page".to_string(), 3),
            ("notify_data".to_string(), 4),
        ]
    );
}

/// A device's own send, taken as its copy (`send_ack_is_copy`), keeps it level: the message
/// after it is pushed whole.
#[tokio::test(start_paused = true)]
async fn a_device_level_after_its_own_send_is_pushed_whole_messages() {
    let (connector, _server, _store) = memory_server(ServerConfig::default());
    let (mut bob, mut bob_writer) = mem_open(&connector).await;
    bob_writer
        .send(&Frame::new(Body::Login(proto::Login {
            user: "bob".into(),
            device: "phone".into(),
            token: String::new(),
            heartbeat_interval_max_s: 60,
            send_ack_is_copy: true,
        })))
        .await
        .unwrap();
    assert_eq!(bob.next().await.unwrap().unwrap().kind(), "login_reply");
    bob_writer
        .send(&Frame::new(send_to_peer("b1", "alice", "hi")))
        .await
        .unwrap();
    let Body::SendAck(ack) = next_body(&mut bob).await else {
        panic!("expected bob's SendAck");
    };
    assert_eq!(ack.seq, 1);
    let mut alice = mem_login(&connector, "alice", "phone").await;
    assert_eq!(send(&mut alice, "a1").await, 2);
    let Body::NotifyData(push) = next_body(&mut bob).await else {
        panic!("a device level with its inbox is pushed the message itself");
    };
    assert_eq!(push.message.unwrap().seq, 2);
}

/// A group message is stored first and fanned out after (by a worker): Bob's sync, read in
/// between, holds it already, so its push is not sent. The next message is pushed whole: the
/// page left Bob level.
#[tokio::test(start_paused = true)]
async fn a_push_that_a_page_already_held_is_not_sent_again() {
    let (connector, server, _store) = memory_server(ServerConfig::default());
    let (mut alice, mut alice_writer) = mem_login(&connector, "alice", "phone").await;
    let (mut bob, mut bob_writer) = mem_login(&connector, "bob", "phone").await;
    alice_writer
        .send(&Frame::new(Body::GroupCreate(proto::GroupCreate {
            request_id: 1,
            group_id: "team".into(),
            members: vec!["bob".into()],
        })))
        .await
        .unwrap();
    assert_eq!(alice.next().await.unwrap().unwrap().kind(), "group_reply");
    let group_send = |id: &str| {
        Frame::new(Body::Send(proto::Send {
            client_msg_id: id.into(),
            to: Some(proto::send::To::GroupId("team".into())),
            body: b"hi".to_vec().into(),
        }))
    };
    // Alice's send reaches the server before Bob's sync: stored, then handed to a fan-out
    // worker, which runs after Bob's connection has read the page.
    alice_writer.feed(&group_send("g1")).unwrap();
    bob_writer
        .feed(&Frame::new(Body::SyncRequest(proto::SyncRequest {
            after_seq: 0,
            limit: 0,
            max_bytes: 0,
        })))
        .unwrap();
    alice_writer.flush().await.unwrap();
    bob_writer.flush().await.unwrap();
    let Body::SyncResponse(page) = next_body(&mut bob).await else {
        panic!("expected Bob's page first");
    };
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);
    alice_writer.send(&group_send("g2")).await.unwrap();
    let Body::NotifyData(push) = next_body(&mut bob).await else {
        panic!("expected the second message pushed whole");
    };
    assert_eq!(
        push.message.unwrap().seq,
        2,
        "the first was not pushed again"
    );
    let counters = server.counters();
    assert_eq!(
        counters
            .pushes_in_a_page
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
