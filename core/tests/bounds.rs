//! What happens at each bound: the fan-out queue, a connection's outbox, the connection limit.
//! In-memory pipes under paused tokio time on a current-thread runtime, so the interleaving is
//! the same on every run.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use imlab_core::client::{ClientConfig, ClientState};
use imlab_core::proto::{self, Body, ErrorCode, Frame, Target};
use imlab_core::server::ServerConfig;
use imlab_core::store::Store;

fn group_send(client_msg_id: &str, body: &str) -> Frame {
    Frame::new(Body::Send(proto::Send {
        client_msg_id: client_msg_id.into(),
        to: Some(proto::send::To::GroupId("team".into())),
        body: Bytes::from(body.to_string()),
    }))
}

#[tokio::test(start_paused = true)]
async fn a_full_fanout_queue_refuses_group_sends_before_storing_and_keeps_send_order() {
    let config = ServerConfig {
        fanout_queue_len_max: 1,
        fanout_workers: 1,
        ..ServerConfig::default()
    };
    let (connector, server, store) = memory_server(config);
    let (mut reader, mut writer) = mem_login(&connector, "alice", "phone").await;
    let create = Frame::new(Body::GroupCreate(proto::GroupCreate {
        request_id: 1,
        group_id: "team".into(),
        members: vec!["bob".into()],
    }));
    writer.send(&create).await.unwrap();
    assert_eq!(reader.next().await.unwrap().unwrap().kind(), "group_reply");

    // Three sends in one write: the first takes the only queue slot; the fan-out worker gets
    // no turn before the next two are read, so they are refused, and nothing is stored.
    for (id, body) in [("phone-1", "a"), ("phone-2", "b"), ("phone-3", "c")] {
        writer.feed(&group_send(id, body)).unwrap();
    }
    writer.flush().await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 3 {
        match reader.next().await.unwrap().unwrap().body.unwrap() {
            Body::SendAck(ack) => answers.push((ack.client_msg_id, None)),
            Body::Error(error) => answers.push((error.client_msg_id.clone(), Some(error.code()))),
            _ => {}
        }
    }
    assert_eq!(
        answers,
        vec![
            ("phone-1".to_string(), None),
            ("phone-2".to_string(), Some(ErrorCode::Overloaded)),
            ("phone-3".to_string(), Some(ErrorCode::Overloaded)),
        ]
    );
    assert_eq!(store.n_messages(), 1);
    assert_eq!(
        server.counters().overloaded_sends.load(Ordering::Relaxed),
        1
    );

    // The barrier: phone-3 is refused again until phone-2 is retried, then both go through.
    writer.send(&group_send("phone-3", "c")).await.unwrap();
    let refused = loop {
        let frame = reader.next().await.unwrap().unwrap();
        if frame.kind() != "notify_data" {
            break frame;
        }
    };
    assert!(
        matches!(&refused.body, Some(Body::Error(e)) if e.text.contains("retry it first")),
        "{refused:?}"
    );
    // On paused time the sleep runs every ready task first: the fan-out worker empties the
    // queue.
    tokio::time::sleep(Duration::from_millis(10)).await;
    for (id, body) in [("phone-2", "b"), ("phone-3", "c")] {
        writer.send(&group_send(id, body)).await.unwrap();
        let answer = loop {
            let frame = reader.next().await.unwrap().unwrap();
            if frame.kind() != "notify_data" {
                break frame;
            }
        };
        assert!(
            matches!(&answer.body, Some(Body::SendAck(ack)) if ack.client_msg_id == id),
            "{answer:?}"
        );
    }
    let page = store.sync("bob", 0, 10).await.unwrap();
    let bodies: Vec<Bytes> = page.entries.iter().map(|(_, m)| m.body.clone()).collect();
    assert_eq!(
        bodies,
        vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]
    );
}

#[tokio::test(start_paused = true)]
async fn the_client_core_retries_overloaded_sends_in_order() {
    let config = ServerConfig {
        fanout_queue_len_max: 1,
        fanout_workers: 1,
        ..ServerConfig::default()
    };
    let (connector, server, store) = memory_server(config);
    // With one queue slot and no worker turn between pipelined frames, each round gets one
    // message through; a short retry delay keeps the test's virtual time small.
    let alice = TestClient::start_on(
        connector.clone(),
        ClientState::new("alice", "phone").shared(),
        ClientConfig {
            retry_delay: Duration::from_millis(100),
            ..ClientConfig::default()
        },
    );
    let bob = TestClient::start_on(
        connector.clone(),
        ClientState::new("bob", "phone").shared(),
        ClientConfig::default(),
    );
    alice.wait_connected().await;
    bob.wait_connected().await;
    alice
        .handle
        .create_group("team", vec!["bob".into()])
        .unwrap();
    alice
        .wait_for("group", |seen| {
            seen.iter().any(|s| matches!(s, Seen::GroupReply(_)))
        })
        .await;
    let sent: Vec<String> = (0..20).map(|n| format!("g{n}")).collect();
    for body in &sent {
        alice
            .handle
            .send(Target::Group("team".into()), Bytes::from(body.clone()))
            .unwrap();
    }
    assert_eq!(bob.wait_bodies(20).await, sent);
    assert!(
        server.counters().overloaded_sends.load(Ordering::Relaxed) > 0,
        "the bound was hit"
    );
    assert_eq!(store.n_messages(), 20);
    assert!(alice.state.lock().unwrap().outgoing.is_empty());
}

/// Bob logs in and never reads; Alice sends him 40 messages of 30,000 bytes, each acked. Bob
/// is kicked as a slow consumer once, the store has all 40, and Bob back with a client that
/// reads gets all 40. Returns after how many of Alice's sends the kick had come.
async fn a_peer_that_never_reads_is_kicked_and_syncs_everything(config: ServerConfig) -> u32 {
    let (connector, server, store) = memory_server(config);
    let (bob_reader, _bob_writer) = mem_login(&connector, "bob", "phone").await;
    let (mut alice_reader, mut alice_writer) = mem_login(&connector, "alice", "phone").await;
    let body = "x".repeat(30_000);
    let mut kicked_after = None;
    for n in 0..40 {
        let send = Frame::new(send_to_peer(&format!("phone-{n}"), "bob", &body));
        alice_writer.send(&send).await.unwrap();
        loop {
            let frame = alice_reader.next().await.unwrap().unwrap();
            if frame.kind() == "send_ack" {
                break;
            }
        }
        if kicked_after.is_none() && server.n_slow_consumer_kicks() == 1 {
            kicked_after = Some(n + 1);
        }
    }
    assert_eq!(server.n_slow_consumer_kicks(), 1);
    assert_eq!(store.max_seq("bob").await.unwrap(), 40);
    drop(bob_reader);

    let bob = TestClient::start_on(
        connector.clone(),
        ClientState::new("bob", "phone").shared(),
        ClientConfig::default(),
    );
    assert_eq!(bob.wait_bodies(40).await.len(), 40);
    assert_eq!(bob.state.lock().unwrap().last_seq, 40);
    kicked_after.expect("counted above")
}

#[tokio::test(start_paused = true)]
async fn a_full_outbox_disconnects_the_slow_consumer_and_sync_recovers_everything() {
    let config = ServerConfig {
        outbox_len_max: 4,
        ..ServerConfig::default()
    };
    a_peer_that_never_reads_is_kicked_and_syncs_everything(config).await;
}

/// The bytes waiting to be written are bounded as well as the frames: a peer that reads
/// nothing is kicked once its buffer holds `write_buffer_bytes_max`, long before its frames
/// reach `outbox_len_max` (each push here is a 30,000-byte body).
#[tokio::test(start_paused = true)]
async fn a_slow_consumer_is_kicked_at_the_byte_bound_before_the_frame_bound() {
    let config = ServerConfig {
        outbox_len_max: 1_024,
        write_buffer_bytes_max: 256 * 1024,
        send_rate_per_user: 0,
        ..ServerConfig::default()
    };
    let kicked_after = a_peer_that_never_reads_is_kicked_and_syncs_everything(config).await;
    // What the in-memory pipe takes (256 KiB, `net::memory`) and then the bound's 256 KiB:
    // 17 pushes, 19 with a frame over the bound and the one whose buffering tripped it; the
    // frame bound alone would have waited for 1,024, past the 40 sent (never kicked).
    assert!(kicked_after <= 19, "kicked after {kicked_after} pushes");
}

/// A burst of requests written at once gets its replies (and the sender's own echoes) though
/// the outbox and the bound on unwritten frames are far smaller than the burst: the connection
/// writes as it goes, so a client that reads is never taken for a slow consumer.
#[tokio::test(start_paused = true)]
async fn a_burst_of_requests_larger_than_the_outbox_is_answered_without_a_kick() {
    let config = ServerConfig {
        outbox_len_max: 4,
        send_rate_per_user: 0,
        ..ServerConfig::default()
    };
    let (connector, server, _store) = memory_server(config);
    let (mut alice, mut alice_out) = mem_login(&connector, "alice", "phone").await;
    let ids: Vec<String> = (0..40).map(|n| format!("burst-{n}")).collect();
    for id in &ids {
        alice_out.feed(&peer_send(id)).unwrap();
    }
    alice_out
        .feed(&Frame::new(Body::SyncRequest(proto::SyncRequest {
            after_seq: 0,
            limit: 100,
            max_bytes: 0,
        })))
        .unwrap();
    alice_out.flush().await.unwrap();
    let answers = send_answers(&mut alice, ids.len()).await;
    let acked: Vec<String> = answers
        .into_iter()
        .filter_map(|(id, error)| error.is_none().then_some(id))
        .collect();
    assert_eq!(acked, ids);
    assert_eq!(server.n_slow_consumer_kicks(), 0);
    // The echoes went through the outbox (the replies are written directly), never more than
    // it holds at once.
    let high_water = server
        .counters()
        .outbox_high_water
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=4).contains(&high_water), "{high_water}");
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_limit_are_refused_with_overloaded() {
    let config = ServerConfig {
        connections_max: 2,
        ..ServerConfig::default()
    };
    let (connector, _server, _store) = memory_server(config);
    let _first = mem_login(&connector, "a", "phone").await;
    let _second = mem_login(&connector, "b", "phone").await;
    let (mut reader, _writer) = mem_open(&connector).await;
    let frame = reader.next().await.unwrap().unwrap();
    assert!(matches!(frame.body, Some(Body::Error(e)) if e.code() == ErrorCode::Overloaded));
    assert!(
        reader.next().await.unwrap().is_none(),
        "closed after the error"
    );
}

#[tokio::test(start_paused = true)]
async fn a_replaced_store_resets_the_clients_seq_through_the_inbox_epoch() {
    // Before: three messages, the device processed seq 3.
    let (before, _server, _store) = memory_server(ServerConfig::default());
    let state = ClientState::new("bob", "phone").shared();
    let bob = TestClient::start_on(before.clone(), state.clone(), ClientConfig::default());
    let (_r, mut alice) = mem_login(&before, "alice", "phone").await;
    for n in 0..3 {
        alice
            .send(&Frame::new(send_to_peer(
                &format!("phone-{n}"),
                "bob",
                "old",
            )))
            .await
            .unwrap();
    }
    assert_eq!(bob.wait_bodies(3).await.len(), 3);
    bob.stop().await;
    assert_eq!(state.lock().unwrap().last_seq, 3);

    // The server lost its in-memory store: a new generation with one new message at seq 1.
    let (after, _server, store) = memory_server_with(
        ServerConfig::default(),
        imlab_core::store::MemoryStore::new().with_epoch(2),
    );
    let (_r, mut alice) = mem_login(&after, "alice", "phone").await;
    alice
        .send(&Frame::new(send_to_peer("phone-9", "bob", "new")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(store.max_seq("bob").await.unwrap(), 1);
    let bob = TestClient::start_on(after.clone(), state.clone(), ClientConfig::default());
    // Without the epoch, seq 1 <= 3 would be dropped as a duplicate.
    assert_eq!(bob.wait_bodies(1).await, vec!["new"]);
    assert_eq!(state.lock().unwrap().last_seq, 1);
}

fn peer_send(client_msg_id: &str) -> Frame {
    Frame::new(Body::Send(proto::Send {
        client_msg_id: client_msg_id.into(),
        to: Some(proto::send::To::PeerUser("bob".into())),
        body: Bytes::from_static(b"hi"),
    }))
}

/// Reads until `n` answers to sends (acks or errors) arrived, as (id, error code).
async fn send_answers(reader: &mut MemReader, n: usize) -> Vec<(String, Option<ErrorCode>)> {
    let mut answers = Vec::new();
    while answers.len() < n {
        match reader.next().await.unwrap().unwrap().body.unwrap() {
            Body::SendAck(ack) => answers.push((ack.client_msg_id, None)),
            Body::Error(error) => answers.push((error.client_msg_id.clone(), Some(error.code()))),
            _ => {}
        }
    }
    answers
}

#[tokio::test(start_paused = true)]
async fn a_user_over_its_send_rate_is_refused_across_devices_and_refilled_in_time() {
    let config = ServerConfig {
        send_rate_per_user: 4,
        ..ServerConfig::default()
    };
    let (connector, server, store) = memory_server(config);
    let (mut phone, mut phone_out) = mem_login(&connector, "alice", "phone").await;
    let (mut laptop, mut laptop_out) = mem_login(&connector, "alice", "laptop").await;

    // The budget is the user's: three from the phone and two from the laptop spend four.
    for id in ["p1", "p2", "p3"] {
        phone_out.feed(&peer_send(id)).unwrap();
    }
    phone_out.flush().await.unwrap();
    assert!(
        send_answers(&mut phone, 3)
            .await
            .iter()
            .all(|(_, e)| e.is_none())
    );
    laptop_out.feed(&peer_send("l1")).unwrap();
    laptop_out.feed(&peer_send("l2")).unwrap();
    laptop_out.flush().await.unwrap();
    assert_eq!(
        send_answers(&mut laptop, 2).await,
        vec![
            ("l1".to_string(), None),
            ("l2".to_string(), Some(ErrorCode::RateLimited)),
        ]
    );
    assert_eq!(store.n_messages(), 4, "the refused send stored nothing");
    assert_eq!(
        server.counters().rate_limited_sends.load(Ordering::Relaxed),
        1
    );

    // A quarter second refills one send: the retry goes through.
    tokio::time::advance(Duration::from_millis(250)).await;
    laptop_out.send(&peer_send("l2")).await.unwrap();
    assert_eq!(
        send_answers(&mut laptop, 1).await,
        vec![("l2".to_string(), None)]
    );
    assert_eq!(store.n_messages(), 5);
}

/// Alice's phone's client core on an in-memory server (kept alive by the third value), not
/// running yet.
fn alice_phone() -> (
    imlab_core::client::Client<impl imlab_core::net::Connector>,
    imlab_core::client::ClientHandle,
    impl Sized,
) {
    let (connector, server, store) = memory_server(ServerConfig::default());
    let (core, handle) = imlab_core::client::Client::new(
        connector,
        ClientConfig::default(),
        ClientState::new("alice", "phone").shared(),
        Box::new(imlab_core::heartbeat::Fixed {
            interval: Duration::from_secs(60),
        }),
        std::sync::Arc::new(Recorder::default()),
        7,
    );
    (core, handle, (server, store))
}

#[tokio::test(start_paused = true)]
async fn a_client_cores_command_queue_holds_64_across_the_handles_clones() {
    use imlab_core::client::{ClientError, ClientExit};
    use imlab_core::heartbeat::AppState;

    let (core, handle, _server) = alice_phone();
    // Not running yet: nothing drains the queue. The clones share its one bound.
    let clone = handle.clone();
    for i in 0..64 {
        let which = if i % 2 == 0 { &handle } else { &clone };
        which.set_app_state(AppState::Foreground).unwrap();
    }
    assert_eq!(
        handle.set_app_state(AppState::Background),
        Err(ClientError::Busy)
    );
    assert_eq!(clone.go_offline(), Err(ClientError::Busy));

    // Running, the core drains the queue and takes commands again.
    let task = tokio::spawn(core.run());
    let mut taken = false;
    for _ in 0..1_000 {
        if handle.shutdown().is_ok() {
            taken = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(taken, "the running core never took a command");
    assert_eq!(task.await.unwrap(), ClientExit::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn a_client_core_stops_when_its_last_handle_is_dropped() {
    use imlab_core::client::ClientExit;

    let (core, handle, _server) = alice_phone();
    let task = tokio::spawn(core.run());
    let clone = handle.clone();
    drop(handle);
    // One clone left: the core keeps running and taking commands.
    assert_eq!(clone.go_online(), Ok(()));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(!task.is_finished());
    drop(clone);
    // The drop itself must wake the core: yielding keeps the paused clock still, so no timer
    // of the core's can poll it instead.
    for _ in 0..1_000 {
        if task.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        task.is_finished(),
        "the core did not stop when its last handle was dropped"
    );
    assert_eq!(task.await.unwrap(), ClientExit::Shutdown);
}
