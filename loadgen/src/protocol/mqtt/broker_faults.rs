//! A scripted broker that breaks MQTT's QoS 2 rules the way rumqttd does across a reconnect
//! (it forgets which packet ids await their PUBREL, resends an unreleased message under a new
//! packet id and hands the old id to a new message): the device must deliver the new message,
//! count the resend as the duplicate an app would see, and name both violations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::header::{Header, run_hash};
use super::packet::Qos;
use super::{Mqtt, MqttOptions};
use crate::ledger::LoadLedger;
use crate::pool::ClientPool;
use crate::protocol::{DeviceEvents, MsgId, Protocol};
use crate::transport::Transport;

/// Reads one packet: its first byte and its body.
async fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let first = stream.read_u8().await.expect("a packet from the device");
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = stream.read_u8().await.expect("its length");
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.expect("its body");
    (first, body)
}

/// Reads packets until one of `kind` (the high nibble), answering PINGREQ on the way.
async fn expect(stream: &mut TcpStream, kind: u8) -> Vec<u8> {
    loop {
        let (first, body) = read_packet(stream).await;
        match first >> 4 {
            k if k == kind => return body,
            12 => stream.write_all(&[0xd0, 0]).await.expect("PINGRESP"),
            other => panic!("expected packet type {kind}, the device sent {other}"),
        }
    }
}

async fn connect_and_subscribe(stream: &mut TcpStream, session_present: bool) {
    expect(stream, 1).await;
    stream
        .write_all(&[0x20, 2, u8::from(session_present), 0])
        .await
        .unwrap();
    let subscribe = expect(stream, 8).await;
    stream
        .write_all(&[0x90, 3, subscribe[0], subscribe[1], 2])
        .await
        .unwrap();
}

/// A QoS 2 PUBLISH of `payload` as packet `pkid` (DUP clear, as rumqttd sends its resends).
async fn publish(stream: &mut TcpStream, pkid: u16, payload: &[u8]) {
    let topic = b"t";
    let len = 2 + topic.len() + 2 + payload.len();
    assert!(len < 128, "a one-byte remaining length");
    let mut packet = vec![0x34, len as u8, 0, topic.len() as u8];
    packet.extend_from_slice(topic);
    packet.extend_from_slice(&pkid.to_be_bytes());
    packet.extend_from_slice(payload);
    stream.write_all(&packet).await.unwrap();
    let pubrec = expect(stream, 5).await;
    assert_eq!(pubrec[..2], pkid.to_be_bytes(), "PUBREC of packet {pkid}");
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_resends_under_a_new_packet_id_then_reuses_the_old_loses_nothing() {
    // rumqttd's order: the resend first, which shows the old packet id is stale.
    let violations = forgetful_broker(true).await;
    assert_eq!(violations, [("qos2_resent_under_new_packet_id".into(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_reuses_a_packet_id_before_its_pubrel_loses_nothing() {
    // The new message first: its packet id still awaits the old message's PUBREL.
    let violations = forgetful_broker(false).await;
    assert_eq!(violations, [("packet_id_reused_before_pubrel".into(), 1)]);
}

/// Runs one device against the scripted broker (the resend of the unreleased message before
/// or after the new message that reuses its packet id); checks that both messages were
/// delivered, the resent one counted as a duplicate, and returns the violations counted.
async fn forgetful_broker(resend_first: bool) -> Vec<(String, u64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let mqtt = Mqtt {
        population: None,
        options: MqttOptions {
            qos: Qos::ExactlyOnce,
            clean_start: false,
            ..MqttOptions::default()
        },
        tag: "scripted".into(),
        heartbeat: "fixed:1h".into(),
        body_bytes: 0,
        seed: 1,
        backoff: imlab_core::client::BackoffConfig::default(),
        transport: "tcp",
    };
    let ledger = Arc::new(Mutex::new(LoadLedger::new(2)));
    let (first, second) = (
        MsgId {
            sender: 1,
            number: 0,
        },
        MsgId {
            sender: 1,
            number: 1,
        },
    );
    {
        let mut ledger = ledger.lock().unwrap();
        for (n, id) in [first, second].into_iter().enumerate() {
            ledger.planned(id, n as u64, vec![0]);
            ledger.acked(id);
        }
    }
    let payload = |id: MsgId| {
        Header {
            run: run_hash("scripted"),
            id,
            planned_us: 0,
        }
        .payload(0)
    };
    let transport = Transport {
        targets: crate::source::TargetAddresses::new(
            vec![target],
            std::time::Duration::from_secs(20),
        ),
        source_ips: Vec::new(),
        tls: None,
        ws: None,
    };
    let clients = ClientPool::new();
    let mut device = Arc::new(mqtt).devices(1);
    device.start(
        0,
        transport.connector(0, None),
        DeviceEvents::new(ledger.clone(), 0),
        &clients,
    );

    // The first connection: message `first` as packet 2, PUBREC sent, and the connection
    // ends before the PUBREL.
    let (mut stream, _) = listener.accept().await.unwrap();
    connect_and_subscribe(&mut stream, false).await;
    publish(&mut stream, 2, &payload(first)).await;
    drop(stream);

    // Back with its session present, the broker has forgotten packet 2: it resends `first`
    // as packet 1 and gives packet 2 to `second`, then releases both.
    let (mut stream, _) = listener.accept().await.unwrap();
    connect_and_subscribe(&mut stream, true).await;
    if resend_first {
        publish(&mut stream, 1, &payload(first)).await;
        publish(&mut stream, 2, &payload(second)).await;
    } else {
        publish(&mut stream, 2, &payload(second)).await;
        publish(&mut stream, 1, &payload(first)).await;
    }
    for pkid in [1u16, 2] {
        let [hi, lo] = pkid.to_be_bytes();
        stream.write_all(&[0x62, 2, hi, lo]).await.unwrap();
        assert_eq!(expect(&mut stream, 7).await[..2], pkid.to_be_bytes());
    }
    device.shutdown(0);
    tokio::time::timeout(Duration::from_secs(60), clients.join())
        .await
        .expect("the device ends after its shutdown");

    let ledger = ledger.lock().unwrap();
    let verdict = ledger.verdict(true);
    assert_eq!((verdict.delivered, verdict.lost), (2, 0), "{verdict:?}");
    // `first` reached the device twice: an app sees it twice, so it is a duplicate.
    assert_eq!(ledger.duplicated, 1);
    ledger
        .protocol_violations
        .iter()
        .map(|(what, n)| (what.clone(), *n))
        .collect()
}
