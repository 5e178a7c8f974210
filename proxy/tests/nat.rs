//! NAT idle expiry through the proxy, with imlab-core's real server and client cores on
//! loopback sockets. Every duration is in model time and runs at `--time-scale 2`: the
//! clients' own timers are divided by the same factor, so the test is the 2-second-NAT story
//! played twice as fast.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Seen, client, nat_profile, position, proxy, server, wait_flow, wait_trace};
use imlab_carrier::OnExpiry;
use imlab_core::proto::Target;

const TIME_SCALE: f64 = 2.0;

/// A model duration in wall time.
fn scaled(model: Duration) -> Duration {
    model.div_f64(TIME_SCALE)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_expiry_silences_a_slow_heartbeat_and_a_fast_one_keeps_its_mapping() {
    let server = server().await;
    let trace_file = tempfile::NamedTempFile::new().unwrap();
    let proxy = proxy(
        server.addr,
        nat_profile(secs(2), OnExpiry::Drop),
        TIME_SCALE,
        Some(trace_file.path().to_path_buf()),
    )
    .await;
    let sender = client(server.addr, "bob", "b1", secs(60), secs(20));
    // Heartbeat every 5 s through a 2 s NAT: flow 1.
    let slow = client(proxy.addr, "alice", "a1", scaled(secs(5)), scaled(secs(2)));
    slow.wait_for("slow connected", |seen| seen.contains(&Seen::Connected))
        .await;
    // Heartbeat every 1 s: flow 2.
    let fast = client(proxy.addr, "carol", "c1", scaled(secs(1)), scaled(secs(2)));
    fast.wait_for("fast connected", |seen| seen.contains(&Seen::Connected))
        .await;
    sender
        .wait_for("sender connected", |seen| seen.contains(&Seen::Connected))
        .await;

    // The slow client's mapping expires while its connection still looks fine to both ends.
    wait_flow(
        &proxy.control,
        "is flow 1 with an expired mapping",
        |flow| flow["id"] == 1 && flow["nat"] == "expired",
    )
    .await;
    assert!(
        !slow
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::Disconnected(_))),
        "{:?}",
        slow.seen()
    );
    // A message for it is stored and acked, but cannot reach it until it reconnects.
    let id = sender
        .handle
        .send(
            Target::Peer("alice".into()),
            Bytes::from_static(b"to-alice"),
        )
        .unwrap();
    sender
        .wait_for("the send acked", |seen| {
            seen.contains(&Seen::Acked(id.clone()))
        })
        .await;
    slow.wait_for("the message after a reconnect", |seen| {
        seen.contains(&Seen::Message("to-alice".into()))
    })
    .await;
    let seen = slow.seen();
    assert_eq!(
        &seen[..4],
        &[
            Seen::Connected,
            Seen::Disconnected("HeartbeatTimeout".into()),
            Seen::Connected,
            Seen::Message("to-alice".into()),
        ],
        "{seen:#?}"
    );
    // The trace explains flow 1: its mapping expired, the push was lost into it, the Ping
    // was dropped, the phone's FIN never reached the server, whose side stayed open until the
    // device logged in again (flow 3) and the server replaced the session.
    let lines = wait_trace(trace_file.path(), "flow 1's story is complete", |lines| {
        position(lines, 1, "phone_closed", Some("unseen")).is_some()
            && position(lines, 1, "server_closed", None).is_some()
    })
    .await;
    let expired = position(&lines, 1, "nat_expired", None).unwrap();
    let lost = position(&lines, 1, "server_sent", Some("lost")).unwrap();
    let dropped = position(&lines, 1, "phone_sent", Some("drop")).unwrap();
    assert!(expired < lost && expired < dropped, "{lines:#?}");
    assert!(
        !lines[expired..]
            .iter()
            .any(|line| line["flow"] == 1 && line["decision"] == "deliver"),
        "flow 1 delivered after its mapping expired: {lines:#?}"
    );
    let server_closed = position(&lines, 1, "server_closed", None).unwrap();
    let reconnect = position(&lines, 3, "opened", None).unwrap();
    assert!(server_closed > reconnect, "{lines:#?}");

    // The fast client never lost its connection, and a message reaches it at once.
    let id = sender
        .handle
        .send(
            Target::Peer("carol".into()),
            Bytes::from_static(b"to-carol"),
        )
        .unwrap();
    fast.wait_for("the message on the same connection", |seen| {
        seen.contains(&Seen::Message("to-carol".into()))
    })
    .await;
    sender
        .wait_for("the send acked", |seen| {
            seen.contains(&Seen::Acked(id.clone()))
        })
        .await;
    assert_eq!(
        fast.seen(),
        vec![Seen::Connected, Seen::Message("to-carol".into())]
    );
    let flow = wait_flow(&proxy.control, "is flow 2", |flow| flow["id"] == 2).await;
    assert_eq!(flow["nat"], "alive", "{flow:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_expiry_resets_the_phone_at_its_next_send() {
    let server = server().await;
    let trace_file = tempfile::NamedTempFile::new().unwrap();
    let proxy = proxy(
        server.addr,
        nat_profile(secs(2), OnExpiry::Rst),
        TIME_SCALE,
        Some(trace_file.path().to_path_buf()),
    )
    .await;
    let phone = client(proxy.addr, "dave", "d1", scaled(secs(5)), scaled(secs(20)));
    phone
        .wait_for("connected", |seen| seen.contains(&Seen::Connected))
        .await;
    wait_flow(
        &proxy.control,
        "is flow 1 with an expired mapping",
        |flow| flow["id"] == 1 && flow["nat"] == "expired",
    )
    .await;
    // Its next Ping is answered with a RST, which the client core sees as a reset.
    phone
        .wait_for("a reconnect", |seen| {
            seen.iter().filter(|s| **s == Seen::Connected).count() == 2
        })
        .await;
    let seen = phone.seen();
    let Seen::Disconnected(cause) = &seen[1] else {
        panic!("{seen:#?}");
    };
    assert!(
        cause.starts_with("ConnectionLost") && cause.to_lowercase().contains("reset"),
        "{cause}"
    );
    // The trace: flow 1's Ping got the reset; the server's side was not closed by it, only
    // when the device logged in again (flow 2) and the server replaced the session.
    let lines = wait_trace(
        trace_file.path(),
        "flow 1 was reset and its server side closed",
        |lines| {
            position(lines, 1, "phone_sent", Some("reset")).is_some()
                && position(lines, 1, "server_closed", None).is_some()
        },
    )
    .await;
    let reset = position(&lines, 1, "phone_sent", Some("reset")).unwrap();
    assert!(position(&lines, 1, "nat_expired", None).unwrap() < reset);
    let server_closed = position(&lines, 1, "server_closed", None).unwrap();
    let reconnect = position(&lines, 2, "opened", None).unwrap();
    assert!(server_closed > reconnect, "{lines:#?}");
}
