//! The frame codec: a 4-byte big-endian length, then one protobuf-encoded [`Frame`].
//!
//! Decoding is pure (`&[u8]` in, [`Decoded`] or a typed [`CodecError`] out) and checks the
//! declared length against the limit before anything is allocated, so a hostile length prefix
//! costs nothing. `crate::framed` runs it over async streams.

use bytes::BufMut;
use prost::Message as _;

use crate::proto::Frame;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Default maximum length of one frame's protobuf payload.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Why bytes could not become a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length prefix declared more bytes than the limit allows.
    #[error("frame length {declared_bytes} exceeds the limit of {max_frame_bytes} bytes")]
    FrameTooLarge {
        /// What the prefix declared.
        declared_bytes: usize,
        /// The limit in force.
        max_frame_bytes: usize,
    },
    /// The payload was not a valid protobuf `Frame`.
    #[error("frame of {length_bytes} bytes is not a valid protobuf Frame: {reason}")]
    Malformed {
        /// Declared length of the bad frame.
        length_bytes: usize,
        /// What prost reported.
        reason: String,
    },
    /// A valid `Frame` with no body set.
    #[error("frame has no body")]
    EmptyFrame,
}

/// The result of looking at the front of a byte buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Not enough bytes yet; at least this many more are needed.
    Incomplete {
        /// Bytes still missing for the next step.
        needed_bytes: usize,
    },
    /// One frame, and how many bytes of the input it used.
    Frame {
        /// The decoded frame.
        frame: Frame,
        /// Bytes consumed, prefix included.
        consumed_bytes: usize,
    },
}

/// Decodes the frame at the front of `input`, if it is all there.
///
/// Never allocates more than `max_frame_bytes` (plus the decoded message's own fields, which
/// are bounded by the payload length).
pub fn decode(input: &[u8], max_frame_bytes: usize) -> Result<Decoded, CodecError> {
    if input.len() < LENGTH_PREFIX_BYTES {
        return Ok(Decoded::Incomplete {
            needed_bytes: LENGTH_PREFIX_BYTES - input.len(),
        });
    }
    let declared_bytes = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    if declared_bytes > max_frame_bytes {
        return Err(CodecError::FrameTooLarge {
            declared_bytes,
            max_frame_bytes,
        });
    }
    let total_bytes = LENGTH_PREFIX_BYTES + declared_bytes;
    if input.len() < total_bytes {
        return Ok(Decoded::Incomplete {
            needed_bytes: total_bytes - input.len(),
        });
    }
    let payload = &input[LENGTH_PREFIX_BYTES..total_bytes];
    let frame = Frame::decode(payload).map_err(|error| CodecError::Malformed {
        length_bytes: declared_bytes,
        reason: error.to_string(),
    })?;
    if frame.body.is_none() {
        return Err(CodecError::EmptyFrame);
    }
    Ok(Decoded::Frame {
        frame,
        consumed_bytes: total_bytes,
    })
}

/// Appends `frame`, length prefix first, to `out`.
///
/// Panics if the encoded frame exceeds `u32::MAX` bytes, which no bounded body can reach.
pub fn encode(frame: &Frame, out: &mut impl BufMut) {
    let length_bytes = frame.encoded_len();
    let prefix = u32::try_from(length_bytes).expect("frame length fits in u32");
    out.put_u32(prefix);
    frame
        .encode(out)
        .expect("BufMut grows to fit the encoded frame");
}

/// Encodes `frame` into a fresh buffer.
pub fn encode_to_vec(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(LENGTH_PREFIX_BYTES + frame.encoded_len());
    encode(frame, &mut out);
    out
}

/// A message's protobuf encoding without its seq, for [`encode_notify_data`]: every field but
/// `seq`, which proto3 leaves out at 0. Encoded once per stored message and shared by all its
/// deliveries (a group's members, the sender's other devices), each of which has a seq of its
/// own.
pub fn encode_message_without_seq(message: &crate::store::StoredMessage) -> bytes::Bytes {
    message.to_proto(0).encode_to_vec().into()
}

/// Frame tag of `notify_data` (Frame field 7) and of NotifyData's `message` (field 1), and the
/// key of Message's `seq` (field 1): the wire keys [`encode_notify_data`] writes by hand.
const NOTIFY_DATA_FIELD: u32 = 7;
const NOTIFY_DATA_MESSAGE_FIELD: u32 = 1;
const MESSAGE_SEQ_FIELD: u32 = 1;

/// Bytes of the Frame (length prefix excluded) that [`encode_notify_data`] writes.
pub fn notify_data_len(seq: u64, message_without_seq: &[u8]) -> usize {
    NotifyDataLens::new(seq, message_without_seq.len()).frame
}

/// The nested lengths of a NotifyData frame: Message, NotifyData, Frame.
struct NotifyDataLens {
    message: usize,
    notify: usize,
    frame: usize,
}

impl NotifyDataLens {
    fn new(seq: u64, message_without_seq: usize) -> NotifyDataLens {
        use prost::encoding::{encoded_len_varint, key_len};
        // Message's seq field: none at 0 (proto3's default).
        let seq_len = if seq == 0 {
            0
        } else {
            key_len(MESSAGE_SEQ_FIELD) + encoded_len_varint(seq)
        };
        let message = seq_len + message_without_seq;
        let notify =
            key_len(NOTIFY_DATA_MESSAGE_FIELD) + encoded_len_varint(message as u64) + message;
        let frame = key_len(NOTIFY_DATA_FIELD) + encoded_len_varint(notify as u64) + notify;
        NotifyDataLens {
            message,
            notify,
            frame,
        }
    }
}

/// Encodes a NotifyData frame, length prefix first, from a seq and the message's encoding
/// without it: the same bytes as [`encode`] of the Frame (Message's `seq` is its first field,
/// and prost writes fields in field order), without building the message again per delivery.
pub fn encode_notify_data(seq: u64, message_without_seq: &[u8], out: &mut impl BufMut) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let lens = NotifyDataLens::new(seq, message_without_seq.len());
    out.put_u32(u32::try_from(lens.frame).expect("frame length fits in u32"));
    encode_key(NOTIFY_DATA_FIELD, WireType::LengthDelimited, out);
    encode_varint(lens.notify as u64, out);
    encode_key(NOTIFY_DATA_MESSAGE_FIELD, WireType::LengthDelimited, out);
    encode_varint(lens.message as u64, out);
    if seq != 0 {
        encode_key(MESSAGE_SEQ_FIELD, WireType::Varint, out);
        encode_varint(seq, out);
    }
    out.put_slice(message_without_seq);
}

/// Errors of the async codec: a bad frame or the socket's own error.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The peer sent bytes that are not a frame.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn message(seq: u64) -> Message {
        Message {
            seq,
            msg_id: 77,
            from_user: "alice".into(),
            from_device: "phone".into(),
            client_msg_id: "phone-3".into(),
            to: Some(message::To::GroupId("team".into())),
            body: Bytes::from_static(b"hello"),
            server_time_ms: 1_700_000_000_123,
        }
    }

    /// One frame of every kind, with every field set to something other than its default.
    fn every_kind() -> Vec<Body> {
        vec![
            Body::Login(Login {
                user: "alice".into(),
                device: "phone".into(),
                token: "v1.alice.9.ab".into(),
                heartbeat_interval_max_s: 285,
                send_ack_is_copy: true,
            }),
            Body::LoginReply(LoginReply {
                max_seq: 12,
                server_time_ms: 5,
                idle_timeout_s: 427,
                connection_id: 3,
                inbox_epoch: 1_700_000_000_000,
            }),
            Body::Ping(Ping { id: 4 }),
            Body::Pong(Pong {
                id: 4,
                server_time_ms: 6,
            }),
            Body::Send(Send {
                client_msg_id: "phone-1".into(),
                to: Some(send::To::PeerUser("bob".into())),
                body: Bytes::from(vec![0u8, 1, 2, 255]),
            }),
            Body::SendAck(SendAck {
                client_msg_id: "phone-1".into(),
                seq: 9,
                server_time_ms: 10,
                msg_id: 11,
            }),
            Body::NotifyData(NotifyData {
                message: Some(message(2)),
            }),
            Body::Notify(Notify { max_seq: 13 }),
            Body::DeviceAck(DeviceAck { seq: 13 }),
            Body::SyncRequest(SyncRequest {
                after_seq: 1,
                limit: 50,
                max_bytes: 0,
            }),
            Body::SyncResponse(SyncResponse {
                messages: vec![message(2), message(3)],
                has_more: true,
                max_seq: 40,
            }),
            Body::GroupCreate(GroupCreate {
                request_id: 1,
                group_id: "team".into(),
                members: vec!["bob".into(), "carol".into()],
            }),
            Body::GroupJoin(GroupJoin {
                request_id: 2,
                group_id: "team".into(),
            }),
            Body::GroupLeave(GroupLeave {
                request_id: 3,
                group_id: "team".into(),
            }),
            Body::GroupReply(GroupReply {
                request_id: 3,
                group_id: "team".into(),
                members: vec!["alice".into()],
            }),
            Body::Kick(Kick {
                reason: KickReason::Replaced as i32,
                text: "bye".into(),
            }),
            Body::Error(Error {
                code: ErrorCode::Overloaded as i32,
                text: "busy".into(),
                client_msg_id: "phone-1".into(),
                request_id: 8,
            }),
        ]
    }

    #[test]
    fn every_message_kind_round_trips() {
        let bodies = every_kind();
        let kinds: std::collections::BTreeSet<&str> = bodies.iter().map(Body::kind).collect();
        assert_eq!(kinds.len(), 17, "one of each kind");
        let mut stream = Vec::new();
        for body in &bodies {
            encode(&Frame::new(body.clone()), &mut stream);
        }
        // Decode the concatenation, then each prefix: a frame appears only once complete.
        let mut rest = &stream[..];
        for body in &bodies {
            let Ok(Decoded::Frame {
                frame,
                consumed_bytes,
            }) = decode(rest, DEFAULT_MAX_FRAME_BYTES)
            else {
                panic!("expected a frame")
            };
            assert_eq!(frame.body.as_ref(), Some(body));
            for cut in 0..consumed_bytes {
                assert!(matches!(
                    decode(&rest[..cut], DEFAULT_MAX_FRAME_BYTES),
                    Ok(Decoded::Incomplete { .. })
                ));
            }
            rest = &rest[consumed_bytes..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn limits_and_malformed_input_are_typed_errors() {
        assert_eq!(
            decode(&[0, 1, 0, 1], DEFAULT_MAX_FRAME_BYTES),
            Err(CodecError::FrameTooLarge {
                declared_bytes: 65_537,
                max_frame_bytes: 65_536
            })
        );
        assert!(matches!(
            decode(&[0, 0, 0, 2, 0xff, 0xff], 100),
            Err(CodecError::Malformed {
                length_bytes: 2,
                ..
            })
        ));
        assert_eq!(decode(&[0, 0, 0, 0], 100), Err(CodecError::EmptyFrame));
        assert_eq!(
            decode(&[0, 0], 100),
            Ok(Decoded::Incomplete { needed_bytes: 2 })
        );
        assert_eq!(
            decode(&[0, 0, 0, 9, 1], 100),
            Ok(Decoded::Incomplete { needed_bytes: 8 })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_respect_the_limit(
            input in proptest::collection::vec(any::<u8>(), 0..2_048),
            max_frame_bytes in 0usize..1_024,
        ) {
            match decode(&input, max_frame_bytes) {
                Ok(Decoded::Incomplete { needed_bytes }) => {
                    prop_assert!(input.len() + needed_bytes <= LENGTH_PREFIX_BYTES + max_frame_bytes);
                }
                Ok(Decoded::Frame { consumed_bytes, .. }) => {
                    prop_assert!(consumed_bytes <= LENGTH_PREFIX_BYTES + max_frame_bytes);
                    prop_assert!(consumed_bytes <= input.len());
                }
                Err(CodecError::FrameTooLarge { declared_bytes, .. }) => {
                    prop_assert!(declared_bytes > max_frame_bytes);
                }
                Err(_) => {}
            }
        }

        #[test]
        fn notify_data_from_a_message_encoded_without_its_seq_is_the_frame_prost_writes(
            msg_id in any::<u64>(),
            from_user in "[a-z]{0,20}",
            from_device in "[a-z0-9]{0,12}",
            client_msg_id in "[a-z0-9-]{0,30}",
            group in any::<bool>(),
            to in "[a-z]{0,12}",
            // Across the varint boundaries of the lengths (128 and 16,384 bytes).
            body in proptest::collection::vec(any::<u8>(), 0..20_000),
            seq in prop_oneof![Just(0u64), 1u64..300, any::<u64>()],
            server_time_ms in any::<u64>(),
        ) {
            let stored = crate::store::StoredMessage {
                msg_id,
                from_user,
                from_device,
                client_msg_id,
                to: if group { Target::Group(to) } else { Target::Peer(to) },
                body: body.into(),
                server_time_ms,
            };
            let expected = encode_to_vec(&Frame::new(Body::NotifyData(NotifyData {
                message: Some(stored.to_proto(seq)),
            })));
            let without_seq = encode_message_without_seq(&stored);
            let mut got = Vec::new();
            encode_notify_data(seq, &without_seq, &mut got);
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(LENGTH_PREFIX_BYTES + notify_data_len(seq, &without_seq), expected.len());
        }

        #[test]
        fn valid_frames_with_arbitrary_fields_round_trip(
            user in "[a-z]{1,20}",
            body in proptest::collection::vec(any::<u8>(), 0..512),
            seq in any::<u64>(),
        ) {
            let frame = Frame::new(Body::NotifyData(NotifyData {
                message: Some(Message { seq, from_user: user, body: body.into(), ..message(1) }),
            }));
            let bytes = encode_to_vec(&frame);
            let decoded = decode(&bytes, DEFAULT_MAX_FRAME_BYTES);
            prop_assert_eq!(decoded, Ok(Decoded::Frame { frame, consumed_bytes: bytes.len() }));
        }
    }
}
