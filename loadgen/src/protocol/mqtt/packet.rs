//! MQTT 3.1.1 and 5 packets as the adapter needs them, over rumqttc's `mqttbytes` codecs:
//! one small set of outbound packets and one of inbound ones whatever the version, so the
//! session code is written once. Pure: bytes in, packets or a typed error out.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes as m4;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5;

/// The protocol version spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.
    V5,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Version, String> {
        match text {
            "3.1.1" | "4" => Ok(Version::V311),
            "5" | "5.0" => Ok(Version::V5),
            _ => Err(format!("--mqtt-version {text:?}: use 3.1.1 or 5")),
        }
    }
}

/// Quality of service, MQTT's delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    /// At most once: no ack, loss allowed.
    AtMostOnce = 0,
    /// At least once: PUBACK, redelivery allowed.
    AtLeastOnce = 1,
    /// Exactly once: PUBREC, PUBREL, PUBCOMP.
    ExactlyOnce = 2,
}

impl std::str::FromStr for Qos {
    type Err = String;

    fn from_str(text: &str) -> Result<Qos, String> {
        match text {
            "0" => Ok(Qos::AtMostOnce),
            "1" => Ok(Qos::AtLeastOnce),
            "2" => Ok(Qos::ExactlyOnce),
            _ => Err(format!("--qos {text:?}: use 0, 1 or 2")),
        }
    }
}

impl Qos {
    fn v4(self) -> m4::QoS {
        match self {
            Qos::AtMostOnce => m4::QoS::AtMostOnce,
            Qos::AtLeastOnce => m4::QoS::AtLeastOnce,
            Qos::ExactlyOnce => m4::QoS::ExactlyOnce,
        }
    }

    fn v5(self) -> m5::QoS {
        match self {
            Qos::AtMostOnce => m5::QoS::AtMostOnce,
            Qos::AtLeastOnce => m5::QoS::AtLeastOnce,
            Qos::ExactlyOnce => m5::QoS::ExactlyOnce,
        }
    }

    fn from_v4(qos: m4::QoS) -> Qos {
        match qos {
            m4::QoS::AtMostOnce => Qos::AtMostOnce,
            m4::QoS::AtLeastOnce => Qos::AtLeastOnce,
            m4::QoS::ExactlyOnce => Qos::ExactlyOnce,
        }
    }

    fn from_v5(qos: m5::QoS) -> Qos {
        match qos {
            m5::QoS::AtMostOnce => Qos::AtMostOnce,
            m5::QoS::AtLeastOnce => Qos::AtLeastOnce,
            m5::QoS::ExactlyOnce => Qos::ExactlyOnce,
        }
    }
}

/// What CONNECT says.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Client identifier.
    pub client_id: String,
    /// Keepalive the broker enforces (1.5 times this of silence ends the connection).
    pub keep_alive_s: u16,
    /// Clean session (3.1.1) / clean start (5).
    pub clean_start: bool,
    /// MQTT 5's session expiry interval.
    pub session_expiry_s: Option<u32>,
    /// User name and password.
    pub login: Option<(String, String)>,
}

/// A packet the device sends.
#[derive(Debug, Clone)]
pub enum Outbound<'a> {
    /// Log in.
    Connect(&'a Connect),
    /// Subscribe to `topics` at `qos`.
    Subscribe {
        /// Packet identifier.
        pkid: u16,
        /// Topic filters.
        topics: &'a [String],
        /// Requested QoS.
        qos: Qos,
    },
    /// A message.
    Publish {
        /// Topic.
        topic: &'a str,
        /// QoS.
        qos: Qos,
        /// Packet identifier (0 for QoS 0).
        pkid: u16,
        /// A resend of an unacknowledged publish.
        dup: bool,
        /// Body.
        payload: Bytes,
    },
    /// QoS 1 acknowledgement of a received publish.
    PubAck(u16),
    /// QoS 2, step 1 of the receiver.
    PubRec(u16),
    /// QoS 2, step 2 of the sender.
    PubRel(u16),
    /// QoS 2, step 3 of the receiver.
    PubComp(u16),
    /// Heartbeat.
    PingReq,
    /// Normal close.
    Disconnect,
}

/// A packet the broker sent, reduced to what the adapter acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// The login's answer.
    ConnAck {
        /// Accepted.
        accepted: bool,
        /// The return or reason code, for errors.
        code: String,
        /// The broker kept a session for this client id.
        session_present: bool,
        /// MQTT 5: most unacknowledged QoS 1/2 publishes the broker takes at once.
        receive_maximum: Option<u16>,
    },
    /// A message.
    Publish {
        /// Topic.
        topic: Bytes,
        /// QoS it arrived with.
        qos: Qos,
        /// Packet identifier.
        pkid: u16,
        /// The broker marks it a resend.
        dup: bool,
        /// Body.
        payload: Bytes,
    },
    /// QoS 1 ack; `accepted` false for an MQTT 5 error reason.
    PubAck {
        /// Packet identifier.
        pkid: u16,
        /// Not refused.
        accepted: bool,
    },
    /// QoS 2 step 1; `accepted` as for PubAck.
    PubRec {
        /// Packet identifier.
        pkid: u16,
        /// Not refused.
        accepted: bool,
    },
    /// QoS 2 step 2.
    PubRel(u16),
    /// QoS 2 step 3.
    PubComp(u16),
    /// Subscription answer; `granted` false if any filter was refused.
    SubAck {
        /// Packet identifier.
        pkid: u16,
        /// Every filter granted.
        granted: bool,
    },
    /// Heartbeat answer.
    PingResp,
    /// MQTT 5: the broker closes, with a reason.
    Disconnect(String),
    /// A packet a client never expects (CONNECT, SUBSCRIBE...).
    Unexpected(&'static str),
}

/// Why bytes were not a packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an MQTT {version} packet: {detail}")]
pub struct PacketError {
    /// The version expected.
    pub version: &'static str,
    /// The codec's complaint.
    pub detail: String,
}

impl Version {
    /// As written on the command line and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5",
        }
    }

    /// Appends `packet` to `out`.
    pub fn write(self, packet: Outbound<'_>, out: &mut BytesMut) {
        // Packets are built here from bounded inputs (topics, a body of --body-bytes), so
        // the codec's size limit is not in the way: usize::MAX / None.
        match self {
            Version::V311 => {
                v4_packet(packet)
                    .write(out, usize::MAX)
                    .expect("outbound MQTT 3.1.1 packets are well formed");
            }
            Version::V5 => {
                v5_packet(packet)
                    .write(out, None)
                    .expect("outbound MQTT 5 packets are well formed");
            }
        }
    }

    /// Takes one packet off the front of `buf`: `Ok(None)` when more bytes are needed.
    /// `max_bytes` bounds the packet before anything is allocated for it.
    pub fn read(
        self,
        buf: &mut BytesMut,
        max_bytes: usize,
    ) -> Result<Option<Inbound>, PacketError> {
        let error = |detail: String| PacketError {
            version: self.name(),
            detail,
        };
        match self {
            Version::V311 => match v4::Packet::read(buf, max_bytes) {
                Ok(packet) => Ok(Some(from_v4(packet))),
                Err(m4::Error::InsufficientBytes(_)) => Ok(None),
                Err(e) => Err(error(e.to_string())),
            },
            Version::V5 => match v5::Packet::read(buf, Some(max_bytes as u32)) {
                Ok(packet) => Ok(Some(from_v5(packet))),
                Err(m5::Error::InsufficientBytes(_)) => Ok(None),
                Err(e) => Err(error(e.to_string())),
            },
        }
    }
}

fn v4_packet(packet: Outbound<'_>) -> v4::Packet {
    match packet {
        Outbound::Connect(c) => {
            let mut connect = v4::Connect::new(c.client_id.clone());
            connect.keep_alive = c.keep_alive_s;
            connect.clean_session = c.clean_start;
            connect.login = c
                .login
                .as_ref()
                .map(|(user, pass)| v4::Login::new(user.clone(), pass.clone()));
            v4::Packet::Connect(connect)
        }
        Outbound::Subscribe { pkid, topics, qos } => {
            let mut subscribe = v4::Subscribe::new_many(
                topics
                    .iter()
                    .map(|t| v4::SubscribeFilter::new(t.clone(), qos.v4())),
            );
            subscribe.pkid = pkid;
            v4::Packet::Subscribe(subscribe)
        }
        Outbound::Publish {
            topic,
            qos,
            pkid,
            dup,
            payload,
        } => v4::Packet::Publish(v4::Publish {
            dup,
            qos: qos.v4(),
            retain: false,
            topic: topic.to_string(),
            pkid,
            payload,
        }),
        Outbound::PubAck(pkid) => v4::Packet::PubAck(v4::PubAck::new(pkid)),
        Outbound::PubRec(pkid) => v4::Packet::PubRec(v4::PubRec::new(pkid)),
        Outbound::PubRel(pkid) => v4::Packet::PubRel(v4::PubRel::new(pkid)),
        Outbound::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(pkid)),
        Outbound::PingReq => v4::Packet::PingReq,
        Outbound::Disconnect => v4::Packet::Disconnect,
    }
}

fn v5_packet(packet: Outbound<'_>) -> v5::Packet {
    match packet {
        Outbound::Connect(c) => {
            let properties = c.session_expiry_s.map(|s| v5::ConnectProperties {
                session_expiry_interval: Some(s),
                ..v5::ConnectProperties::new()
            });
            let connect = v5::Connect {
                keep_alive: c.keep_alive_s,
                client_id: c.client_id.clone(),
                clean_start: c.clean_start,
                properties,
            };
            let login = c
                .login
                .as_ref()
                .map(|(user, pass)| v5::Login::new(user.clone(), pass.clone()));
            v5::Packet::Connect(connect, None, login)
        }
        Outbound::Subscribe { pkid, topics, qos } => v5::Packet::Subscribe(v5::Subscribe {
            pkid,
            filters: topics
                .iter()
                .map(|t| v5::Filter::new(t.clone(), qos.v5()))
                .collect(),
            properties: None,
        }),
        Outbound::Publish {
            topic,
            qos,
            pkid,
            dup,
            payload,
        } => {
            let mut publish = v5::Publish::new(topic, qos.v5(), payload, None);
            publish.pkid = pkid;
            publish.dup = dup;
            v5::Packet::Publish(publish)
        }
        Outbound::PubAck(pkid) => v5::Packet::PubAck(v5::PubAck::new(pkid, None)),
        Outbound::PubRec(pkid) => v5::Packet::PubRec(v5::PubRec::new(pkid, None)),
        Outbound::PubRel(pkid) => v5::Packet::PubRel(v5::PubRel::new(pkid, None)),
        Outbound::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
        Outbound::PingReq => v5::Packet::PingReq(v5::PingReq),
        Outbound::Disconnect => v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )),
    }
}

fn from_v4(packet: v4::Packet) -> Inbound {
    match packet {
        v4::Packet::ConnAck(ack) => Inbound::ConnAck {
            accepted: ack.code == v4::ConnectReturnCode::Success,
            code: format!("{:?}", ack.code),
            session_present: ack.session_present,
            receive_maximum: None,
        },
        v4::Packet::Publish(p) => Inbound::Publish {
            topic: Bytes::from(p.topic.into_bytes()),
            qos: Qos::from_v4(p.qos),
            pkid: p.pkid,
            dup: p.dup,
            payload: p.payload,
        },
        v4::Packet::PubAck(ack) => Inbound::PubAck {
            pkid: ack.pkid,
            accepted: true,
        },
        v4::Packet::PubRec(rec) => Inbound::PubRec {
            pkid: rec.pkid,
            accepted: true,
        },
        v4::Packet::PubRel(rel) => Inbound::PubRel(rel.pkid),
        v4::Packet::PubComp(comp) => Inbound::PubComp(comp.pkid),
        v4::Packet::SubAck(ack) => Inbound::SubAck {
            pkid: ack.pkid,
            granted: ack
                .return_codes
                .iter()
                .all(|c| matches!(c, v4::SubscribeReasonCode::Success(_))),
        },
        v4::Packet::PingResp => Inbound::PingResp,
        v4::Packet::Connect(_) => Inbound::Unexpected("CONNECT"),
        v4::Packet::Subscribe(_) => Inbound::Unexpected("SUBSCRIBE"),
        v4::Packet::Unsubscribe(_) => Inbound::Unexpected("UNSUBSCRIBE"),
        v4::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v4::Packet::PingReq => Inbound::Unexpected("PINGREQ"),
        v4::Packet::Disconnect => Inbound::Unexpected("DISCONNECT"),
    }
}

fn from_v5(packet: v5::Packet) -> Inbound {
    match packet {
        v5::Packet::ConnAck(ack) => Inbound::ConnAck {
            accepted: ack.code == v5::ConnectReturnCode::Success,
            code: format!("{:?}", ack.code),
            session_present: ack.session_present,
            receive_maximum: ack.properties.and_then(|p| p.receive_max),
        },
        v5::Packet::Publish(p) => Inbound::Publish {
            topic: p.topic,
            qos: Qos::from_v5(p.qos),
            pkid: p.pkid,
            dup: p.dup,
            payload: p.payload,
        },
        v5::Packet::PubAck(ack) => Inbound::PubAck {
            pkid: ack.pkid,
            accepted: matches!(
                ack.reason,
                v5::PubAckReason::Success | v5::PubAckReason::NoMatchingSubscribers
            ),
        },
        v5::Packet::PubRec(rec) => Inbound::PubRec {
            pkid: rec.pkid,
            accepted: matches!(
                rec.reason,
                v5::PubRecReason::Success | v5::PubRecReason::NoMatchingSubscribers
            ),
        },
        v5::Packet::PubRel(rel) => Inbound::PubRel(rel.pkid),
        v5::Packet::PubComp(comp) => Inbound::PubComp(comp.pkid),
        v5::Packet::SubAck(ack) => Inbound::SubAck {
            pkid: ack.pkid,
            granted: ack
                .return_codes
                .iter()
                .all(|c| matches!(c, v5::SubscribeReasonCode::Success(_))),
        },
        v5::Packet::PingResp(_) => Inbound::PingResp,
        v5::Packet::Disconnect(d) => Inbound::Disconnect(format!("{:?}", d.reason_code)),
        v5::Packet::Auth(_) => Inbound::Unexpected("AUTH"),
        v5::Packet::Connect(..) => Inbound::Unexpected("CONNECT"),
        v5::Packet::Subscribe(_) => Inbound::Unexpected("SUBSCRIBE"),
        v5::Packet::Unsubscribe(_) => Inbound::Unexpected("UNSUBSCRIBE"),
        v5::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::PingReq(_) => Inbound::Unexpected("PINGREQ"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publish written by one version reads back the same, and a packet split anywhere
    /// reads as "more bytes needed" until it is whole.
    #[test]
    fn publish_round_trips_and_a_partial_packet_waits() {
        for version in [Version::V311, Version::V5] {
            let mut out = BytesMut::new();
            version.write(
                Outbound::Publish {
                    topic: "imlab/r1/u/7",
                    qos: Qos::ExactlyOnce,
                    pkid: 9,
                    dup: true,
                    payload: Bytes::from_static(b"body"),
                },
                &mut out,
            );
            let whole = out.clone();
            for cut in 0..whole.len() {
                let mut part = BytesMut::from(&whole[..cut]);
                assert_eq!(
                    version.read(&mut part, 1024),
                    Ok(None),
                    "{version:?} cut {cut}"
                );
            }
            let packet = version.read(&mut out, 1024).unwrap().unwrap();
            assert_eq!(
                packet,
                Inbound::Publish {
                    topic: Bytes::from_static(b"imlab/r1/u/7"),
                    qos: Qos::ExactlyOnce,
                    pkid: 9,
                    dup: true,
                    payload: Bytes::from_static(b"body"),
                }
            );
            assert!(out.is_empty());
        }
    }

    /// An imlab frame (a length prefix, then protobuf) is no MQTT packet: the error says so
    /// instead of waiting for bytes that never come.
    #[test]
    fn bytes_of_another_protocol_are_an_error_not_a_wait() {
        let mut imlab_frame = BytesMut::from(&[0u8, 0, 0, 12, 0x0a, 0x04, b'u', b'1'][..]);
        let error = Version::V311.read(&mut imlab_frame, 1024).unwrap_err();
        assert!(
            error.to_string().starts_with("not an MQTT 3.1.1 packet"),
            "{error}"
        );
    }

    /// A packet declaring more than the bound is refused before its bytes arrive.
    #[test]
    fn a_packet_over_the_bound_is_refused_from_its_header() {
        for version in [Version::V311, Version::V5] {
            let mut out = BytesMut::new();
            version.write(
                Outbound::Publish {
                    topic: "t",
                    qos: Qos::AtMostOnce,
                    pkid: 0,
                    dup: false,
                    payload: Bytes::from(vec![0u8; 2000]),
                },
                &mut out,
            );
            let mut header_only = BytesMut::from(&out[..4]);
            assert!(version.read(&mut header_only, 1024).is_err(), "{version:?}");
        }
    }
}
