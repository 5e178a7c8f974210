//! The identity every MQTT payload carries, so the ledger needs nothing from the broker: a
//! small binary header (magic, run tag, sender, the sender's count, planned send time),
//! padded to `--body-bytes`. Pure: encode to bytes, decode from bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::MsgId;

/// Marks a payload as one of ours.
const MAGIC: &[u8; 4] = b"IMLB";

/// Header length: magic 4, run 8, sender 4, number 8, planned 8 (big-endian).
pub const HEADER_BYTES: usize = 32;

/// What a payload says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The run's tag, hashed: another run's messages on shared topics are not ours.
    pub run: u64,
    /// Its identity.
    pub id: MsgId,
    /// Planned send time, µs since the run started.
    pub planned_us: u64,
}

/// A run tag's 64-bit form (FNV-1a, stable across builds and machines).
pub fn run_hash(tag: &str) -> u64 {
    tag.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Header {
    /// The payload: this header, then zero padding up to `body_bytes` (at least the header).
    pub fn payload(&self, body_bytes: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(body_bytes.max(HEADER_BYTES));
        out.put_slice(MAGIC);
        out.put_u64(self.run);
        out.put_u32(self.id.sender);
        out.put_u64(self.id.number);
        out.put_u64(self.planned_us);
        out.resize(body_bytes.max(HEADER_BYTES), 0);
        out.freeze()
    }

    /// The header of a payload, or None for one that is not ours.
    pub fn parse(payload: &[u8]) -> Option<Header> {
        if payload.len() < HEADER_BYTES || &payload[..4] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_be_bytes(payload[at..at + 8].try_into().expect("8"));
        Some(Header {
            run: u64_at(4),
            id: MsgId {
                sender: u32::from_be_bytes(payload[12..16].try_into().expect("4")),
                number: u64_at(16),
            },
            planned_us: u64_at(24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_identity_and_is_padded_to_the_body_size() {
        let header = Header {
            run: run_hash("r17w0"),
            id: MsgId {
                sender: 70_000,
                number: 5_000_000_000,
            },
            planned_us: 123_456_789,
        };
        let payload = header.payload(200);
        assert_eq!(payload.len(), 200);
        assert_eq!(Header::parse(&payload), Some(header));
        // A body smaller than the header still carries it whole.
        assert_eq!(header.payload(10).len(), HEADER_BYTES);
        assert_eq!(Header::parse(&header.payload(10)), Some(header));
        // Not ours: another's payload, or a cut one.
        assert_eq!(
            Header::parse(b"hello, this is some other app's payload"),
            None
        );
        assert_eq!(Header::parse(&payload[..HEADER_BYTES - 1]), None);
        assert_ne!(run_hash("r17w0"), run_hash("r17w1"));
    }
}
