//! Bad input: each bad connection gets a typed error frame (where one can still be sent) and
//! is closed alone; other connections and stored messages are untouched.

mod common;

use bytes::Bytes;
use common::*;
use imlab_core::auth::{Authenticator, mint_token};
use imlab_core::proto::{self, Body, ErrorCode};
use imlab_core::server::ServerConfig;
use imlab_core::store::Store;

/// A server where alice has sent bob one message, and both are still connected.
async fn established(
    auth: Authenticator,
    alice_token: &str,
    bob_token: &str,
) -> (TestServer, RawConn, RawConn) {
    let server = TestServer::start_with(ServerConfig::default(), auth).await;
    let mut alice = RawConn::connect(server.addr).await;
    alice.send(login("alice", "phone", alice_token)).await;
    assert!(matches!(alice.recv().await, Some(Body::LoginReply(_))));
    let mut bob = RawConn::connect(server.addr).await;
    bob.send(login("bob", "phone", bob_token)).await;
    assert!(matches!(bob.recv().await, Some(Body::LoginReply(_))));
    alice.send(send_to_peer("phone-1", "bob", "before")).await;
    let mut pushes = Vec::new();
    assert!(matches!(
        alice.recv_reply(&mut pushes).await,
        Some(Body::SendAck(_))
    ));
    assert!(matches!(bob.recv().await, Some(Body::NotifyData(_))));
    (server, alice, bob)
}

/// After the bad connection: alice can still send, bob still receives, and the earlier
/// message is still in bob's inbox.
async fn still_healthy(server: &TestServer, alice: &mut RawConn, bob: &mut RawConn) {
    alice.send(send_to_peer("phone-2", "bob", "after")).await;
    let mut pushes = Vec::new();
    assert!(matches!(alice.recv_reply(&mut pushes).await, Some(Body::SendAck(a)) if a.seq == 2));
    let Some(Body::NotifyData(data)) = bob.recv().await else {
        panic!("bob got nothing")
    };
    assert_eq!(data.message.unwrap().body, Bytes::from("after"));
    bob.send(Body::SyncRequest(proto::SyncRequest {
        after_seq: 0,
        limit: 10,
        max_bytes: 0,
    }))
    .await;
    let Some(Body::SyncResponse(page)) = bob.recv_reply(&mut pushes).await else {
        panic!("no page")
    };
    let bodies: Vec<Bytes> = page.messages.into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, vec![Bytes::from("before"), Bytes::from("after")]);
    assert_eq!(server.store.n_messages(), 2);
}

/// Runs `bad` against an established server and checks the error it got and the aftermath.
async fn check(bytes: &[u8], expected: ErrorCode) {
    let (server, mut alice, mut bob) = established(Authenticator::Dev, "", "").await;
    let mut bad = garbage_conn(server.addr, bytes).await;
    let frames = bad.expect_closed().await;
    assert!(
        matches!(frames.as_slice(), [Body::Error(e)] if e.code() == expected),
        "for {bytes:?} expected {expected:?}, got {frames:?}"
    );
    still_healthy(&server, &mut alice, &mut bob).await;
    server.stop().await;
}

fn frame_bytes(body: Body) -> Vec<u8> {
    imlab_core::codec::encode_to_vec(&proto::Frame::new(body))
}

#[tokio::test]
async fn garbage_bytes_get_bad_frame() {
    check(&[0, 0, 0, 3, 0xff, 0xff, 0xff], ErrorCode::BadFrame).await;
}

#[tokio::test]
async fn a_length_prefix_over_the_limit_gets_frame_too_large() {
    check(&[0x7f, 0xff, 0xff, 0xff], ErrorCode::FrameTooLarge).await;
    check(&[0, 1, 0, 1], ErrorCode::FrameTooLarge).await;
}

#[tokio::test]
async fn a_frame_before_login_gets_not_logged_in() {
    check(
        &frame_bytes(Body::Ping(proto::Ping { id: 1 })),
        ErrorCode::NotLoggedIn,
    )
    .await;
    check(
        &frame_bytes(send_to_peer("x-1", "bob", "sneaky")),
        ErrorCode::NotLoggedIn,
    )
    .await;
}

#[tokio::test]
async fn a_login_with_a_bad_id_gets_invalid_request() {
    check(
        &frame_bytes(login("al ice", "phone", "")),
        ErrorCode::InvalidRequest,
    )
    .await;
}

#[tokio::test]
async fn garbage_after_login_closes_only_that_connection() {
    let (server, mut alice, mut bob) = established(Authenticator::Dev, "", "").await;
    let mut mallory = garbage_conn(server.addr, &frame_bytes(login("mallory", "phone", ""))).await;
    assert!(matches!(mallory.recv().await, Some(Body::LoginReply(_))));
    drop(mallory);
    let mut bytes = frame_bytes(login("mallory", "laptop", ""));
    bytes.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xff]);
    let mut mallory = garbage_conn(server.addr, &bytes).await;
    let frames = mallory.expect_closed().await;
    assert!(
        matches!(frames.as_slice(), [Body::LoginReply(_), Body::Error(e)] if e.code() == ErrorCode::BadFrame),
        "{frames:?}"
    );
    still_healthy(&server, &mut alice, &mut bob).await;
    server.stop().await;
}

#[tokio::test]
async fn expired_and_forged_tokens_are_refused() {
    let secret = "s3cret";
    let far = 4_000_000_000;
    let alice_token = mint_token(secret, "alice", far).unwrap();
    let bob_token = mint_token(secret, "bob", far).unwrap();
    let (server, mut alice, mut bob) = established(
        Authenticator::from_secret(Some(secret)),
        &alice_token,
        &bob_token,
    )
    .await;
    let cases = [
        (
            mint_token(secret, "mallory", 1_000).unwrap(),
            ErrorCode::TokenExpired,
        ),
        (
            mint_token("guess", "mallory", far).unwrap(),
            ErrorCode::AuthFailed,
        ),
        (
            alice_token.replace("alice", "mallory"),
            ErrorCode::AuthFailed,
        ),
        (alice_token.clone(), ErrorCode::AuthFailed),
        ("".to_string(), ErrorCode::AuthFailed),
    ];
    for (token, expected) in cases {
        let mut conn =
            garbage_conn(server.addr, &frame_bytes(login("mallory", "phone", &token))).await;
        let frames = conn.expect_closed().await;
        assert!(
            matches!(frames.as_slice(), [Body::Error(e)] if e.code() == expected),
            "token {token:?}: expected {expected:?}, got {frames:?}"
        );
    }
    still_healthy(&server, &mut alice, &mut bob).await;
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_group_is_a_typed_error_and_the_connection_stays() {
    let (server, mut alice, mut bob) = established(Authenticator::Dev, "", "").await;
    alice
        .send(Body::Send(proto::Send {
            client_msg_id: "phone-9".into(),
            to: Some(proto::send::To::GroupId("nope".into())),
            body: Bytes::from("hello?"),
        }))
        .await;
    let mut pushes = Vec::new();
    let Some(Body::Error(error)) = alice.recv_reply(&mut pushes).await else {
        panic!("no error")
    };
    assert_eq!(
        (error.code(), error.client_msg_id.as_str()),
        (ErrorCode::UnknownGroup, "phone-9")
    );
    alice
        .send(Body::GroupJoin(proto::GroupJoin {
            request_id: 5,
            group_id: "nope".into(),
        }))
        .await;
    let Some(Body::Error(error)) = alice.recv_reply(&mut pushes).await else {
        panic!("no error")
    };
    assert_eq!(
        (error.code(), error.request_id),
        (ErrorCode::UnknownGroup, 5)
    );
    // Server-only frames sent by a client are refused without closing the connection.
    alice.send(Body::Notify(proto::Notify { max_seq: 1 })).await;
    let Some(Body::Error(error)) = alice.recv_reply(&mut pushes).await else {
        panic!("no error")
    };
    assert_eq!(error.code(), ErrorCode::InvalidRequest);
    still_healthy(&server, &mut alice, &mut bob).await;
    assert_eq!(server.store.max_seq("alice").await.unwrap(), 2);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_nothing_is_stored() {
    let (server, mut alice, mut bob) = established(Authenticator::Dev, "", "").await;
    let body = vec![b'x'; ServerConfig::default().max_body_bytes() + 1];
    alice
        .send(Body::Send(proto::Send {
            client_msg_id: "phone-big".into(),
            to: Some(proto::send::To::PeerUser("bob".into())),
            body: body.into(),
        }))
        .await;
    let mut pushes = Vec::new();
    let Some(Body::Error(error)) = alice.recv_reply(&mut pushes).await else {
        panic!("no error")
    };
    assert_eq!(error.code(), ErrorCode::InvalidRequest);
    assert!(error.text.contains("exceeds"), "{}", error.text);
    still_healthy(&server, &mut alice, &mut bob).await;
    server.stop().await;
}
