//! The client core's DeviceAck: when it is written, what it covers, what it rides along with.
//! The test plays the server over an in-memory pipe under paused tokio time, so every frame's
//! arrival time is exact.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use imlab_core::client::{ClientConfig, ClientState};
use imlab_core::codec;
use imlab_core::framed::{FrameReader, FrameWriter};
use imlab_core::net::{Listener, memory};
use imlab_core::proto::{self, Body, Frame, Target};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::time::Instant;

type Reader = FrameReader<ReadHalf<DuplexStream>>;
type Writer = FrameWriter<WriteHalf<DuplexStream>>;

/// A scripted server's end of one logged-in connection of `client`, after the client's first
/// sync (which finds nothing) and the ack of that sync.
async fn accept_logged_in(listener: &mut memory::MemoryListener) -> (Reader, Writer) {
    let (handshake, _) = listener.accept().await.unwrap();
    let stream = handshake.await.unwrap();
    let (read, write) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read, codec::DEFAULT_MAX_FRAME_BYTES);
    let mut writer = FrameWriter::new(write, codec::DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(next(&mut reader).await.kind(), "login");
    writer
        .send(&Frame::new(Body::LoginReply(proto::LoginReply {
            max_seq: 0,
            server_time_ms: 1_700_000_000_000,
            idle_timeout_s: 300,
            connection_id: 1,
            inbox_epoch: 1,
        })))
        .await
        .unwrap();
    let Body::SyncRequest(request) = next(&mut reader).await else {
        panic!("the client syncs after its login")
    };
    assert_eq!(request.after_seq, 0);
    writer
        .send(&Frame::new(Body::SyncResponse(proto::SyncResponse {
            messages: vec![],
            has_more: false,
            max_seq: 0,
        })))
        .await
        .unwrap();
    let Body::DeviceAck(ack) = next(&mut reader).await else {
        panic!("the sync is acked")
    };
    assert_eq!(ack.seq, 0);
    (reader, writer)
}

async fn next(reader: &mut Reader) -> Body {
    reader.next().await.unwrap().unwrap().body.unwrap()
}

async fn push(writer: &mut Writer, seq: u64) {
    let message = proto::Message {
        seq,
        msg_id: seq,
        from_user: "bob".into(),
        from_device: "phone".into(),
        client_msg_id: format!("b{seq}"),
        body: Bytes::from(format!("m{seq}")),
        server_time_ms: 1_700_000_000_000,
        to: Some(proto::message::To::PeerUser("alice".into())),
    };
    writer
        .send(&Frame::new(Body::NotifyData(proto::NotifyData {
            message: Some(message),
        })))
        .await
        .unwrap();
}

fn client_with_ack_delay(connector: memory::MemoryConnector, ack_delay: Duration) -> TestClient {
    TestClient::start_on(
        connector,
        ClientState::new("alice", "phone").shared(),
        ClientConfig {
            ack_delay,
            ..ClientConfig::default()
        },
    )
}

#[tokio::test(start_paused = true)]
async fn a_push_is_acked_after_the_ack_delay_once_for_all_pushes_before_it() {
    let ack_delay = Duration::from_millis(200);
    let (mut listener, connector) = memory::pair(4);
    let alice = client_with_ack_delay(connector, ack_delay);
    let (mut reader, mut writer) = accept_logged_in(&mut listener).await;

    push(&mut writer, 1).await;
    let pushed_at = Instant::now();
    let Body::DeviceAck(ack) = next(&mut reader).await else {
        panic!("a DeviceAck")
    };
    assert_eq!(ack.seq, 1);
    assert_eq!(
        Instant::now() - pushed_at,
        ack_delay,
        "acked when its delay ran out"
    );

    // Three pushes within the delay: one ack, of the last, the delay counted from the first.
    push(&mut writer, 2).await;
    let first_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    push(&mut writer, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    push(&mut writer, 4).await;
    let Body::DeviceAck(ack) = next(&mut reader).await else {
        panic!("a DeviceAck")
    };
    assert_eq!(ack.seq, 4);
    assert_eq!(Instant::now() - first_at, ack_delay);
    alice.wait_bodies(4).await;
    drop(alice);
}

#[tokio::test(start_paused = true)]
async fn a_due_ack_rides_along_with_the_next_send() {
    let (mut listener, connector) = memory::pair(4);
    let alice = client_with_ack_delay(connector, Duration::from_millis(200));
    let (mut reader, mut writer) = accept_logged_in(&mut listener).await;

    push(&mut writer, 1).await;
    alice.wait_bodies(1).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let sent_at = Instant::now();
    alice
        .handle
        .send(Target::Peer("bob".into()), Bytes::from("hi"))
        .unwrap();
    let Body::Send(send) = next(&mut reader).await else {
        panic!("the send")
    };
    assert_eq!(send.body, Bytes::from("hi"));
    let Body::DeviceAck(ack) = next(&mut reader).await else {
        panic!("the ack right behind the send")
    };
    assert_eq!(ack.seq, 1);
    assert_eq!(
        Instant::now(),
        sent_at,
        "written with the send, not after its delay"
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_ack_delay_every_push_is_acked_at_once() {
    let (mut listener, connector) = memory::pair(4);
    let _alice = client_with_ack_delay(connector, Duration::ZERO);
    let (mut reader, mut writer) = accept_logged_in(&mut listener).await;
    for seq in 1..=3 {
        push(&mut writer, seq).await;
        let pushed_at = Instant::now();
        let Body::DeviceAck(ack) = next(&mut reader).await else {
            panic!("a DeviceAck")
        };
        assert_eq!(ack.seq, seq);
        assert_eq!(Instant::now(), pushed_at);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
