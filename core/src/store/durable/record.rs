//! Value encoding of the durable store's records: messages, inbox entries, dedupe records,
//! cursors and the epoch.
//!
//! Every value starts with a format byte ([`RECORD_FORMAT`]) so a later layout can be told
//! apart. Decoding never panics and never trusts a length: a bad value is a [`RecordError`]
//! that names the partition, the key and what was wrong at which byte.

use bytes::Bytes;

use super::engine::Partition;
use crate::proto::Target;
use crate::store::StoredMessage;

/// The leading byte of every value written by this version.
pub const RECORD_FORMAT: u8 = 1;

const TARGET_PEER: u8 = 0;
const TARGET_GROUP: u8 = 1;

/// A stored value that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record {partition}/{key_hex}: {what}")]
pub struct RecordError {
    /// The partition's name.
    pub partition: &'static str,
    /// The key, in hex.
    pub key_hex: String,
    /// What was wrong.
    pub what: String,
}

impl RecordError {
    /// An error about the record at `key` of `partition`.
    pub fn new(partition: Partition, key: &[u8], what: impl Into<String>) -> RecordError {
        RecordError {
            partition: partition.name(),
            key_hex: hex::encode(key),
            what: what.into(),
        }
    }
}

/// The message record: everything of a [`StoredMessage`].
pub fn encode_message(message: &StoredMessage) -> Vec<u8> {
    let (tag, target) = match &message.to {
        Target::Peer(user) => (TARGET_PEER, user),
        Target::Group(group) => (TARGET_GROUP, group),
    };
    let mut out = Vec::with_capacity(
        1 + 8
            + 8
            + 1
            + 4 * 5
            + target.len()
            + message.from_user.len()
            + message.from_device.len()
            + message.client_msg_id.len()
            + message.body.len(),
    );
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&message.msg_id.to_be_bytes());
    out.extend_from_slice(&message.server_time_ms.to_be_bytes());
    out.push(tag);
    for text in [
        target,
        &message.from_user,
        &message.from_device,
        &message.client_msg_id,
    ] {
        push_bytes(&mut out, text.as_bytes());
    }
    push_bytes(&mut out, &message.body);
    out
}

/// Reads a message record stored at `key`.
pub fn decode_message(key: &[u8], value: &[u8]) -> Result<StoredMessage, RecordError> {
    let mut reader = Reader::new(Partition::Messages, key, value)?;
    let msg_id = reader.u64("msg_id")?;
    let server_time_ms = reader.u64("server_time_ms")?;
    let tag = reader.u8("target kind")?;
    let target = reader.string("target")?;
    let to = match tag {
        TARGET_PEER => Target::Peer(target),
        TARGET_GROUP => Target::Group(target),
        other => return Err(reader.error(format!("unknown target kind {other}"))),
    };
    let from_user = reader.string("from_user")?;
    let from_device = reader.string("from_device")?;
    let client_msg_id = reader.string("client_msg_id")?;
    let body = Bytes::copy_from_slice(reader.bytes("body")?);
    reader.finish()?;
    Ok(StoredMessage {
        msg_id,
        from_user,
        from_device,
        client_msg_id,
        to,
        body,
        server_time_ms,
    })
}

/// A value that is one number (inbox entry's msg_id, cursor, epoch).
pub fn encode_u64(value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&value.to_be_bytes());
    out
}

/// Reads a value written by [`encode_u64`]; `field` names it in errors.
pub fn decode_u64(
    partition: Partition,
    key: &[u8],
    value: &[u8],
    field: &str,
) -> Result<u64, RecordError> {
    let mut reader = Reader::new(partition, key, value)?;
    let number = reader.u64(field)?;
    reader.finish()?;
    Ok(number)
}

/// The dedupe record: the original message's id and its seq in the sender's inbox.
pub fn encode_dedupe(msg_id: u64, sender_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&msg_id.to_be_bytes());
    out.extend_from_slice(&sender_seq.to_be_bytes());
    out
}

/// Reads a dedupe record: (msg_id, sender_seq).
pub fn decode_dedupe(key: &[u8], value: &[u8]) -> Result<(u64, u64), RecordError> {
    let mut reader = Reader::new(Partition::Dedupe, key, value)?;
    let msg_id = reader.u64("msg_id")?;
    let sender_seq = reader.u64("sender_seq")?;
    reader.finish()?;
    Ok((msg_id, sender_seq))
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a stored field is under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over one value that turns every short read into a [`RecordError`].
struct Reader<'a> {
    partition: Partition,
    key: &'a [u8],
    value: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks the format byte.
    fn new(
        partition: Partition,
        key: &'a [u8],
        value: &'a [u8],
    ) -> Result<Reader<'a>, RecordError> {
        let mut reader = Reader {
            partition,
            key,
            value,
            pos: 0,
        };
        match reader.u8("format byte")? {
            RECORD_FORMAT => Ok(reader),
            other => Err(reader.error(format!(
                "format {other}, this build reads format {RECORD_FORMAT}"
            ))),
        }
    }

    fn error(&self, what: String) -> RecordError {
        RecordError::new(self.partition, self.key, what)
    }

    fn take(&mut self, n_bytes: usize, field: &str) -> Result<&'a [u8], RecordError> {
        let available = self.value.len() - self.pos;
        if n_bytes > available {
            return Err(self.error(format!(
                "truncated: {field} needs {n_bytes} bytes at byte {} of {}, {available} left",
                self.pos,
                self.value.len()
            )));
        }
        let bytes = &self.value[self.pos..self.pos + n_bytes];
        self.pos += n_bytes;
        Ok(bytes)
    }

    fn u8(&mut self, field: &str) -> Result<u8, RecordError> {
        Ok(self.take(1, field)?[0])
    }

    fn u64(&mut self, field: &str) -> Result<u64, RecordError> {
        let bytes = self.take(8, field)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    fn bytes(&mut self, field: &str) -> Result<&'a [u8], RecordError> {
        let len = self.take(4, field)?;
        let len = u32::from_be_bytes(len.try_into().expect("took 4 bytes")) as usize;
        self.take(len, field)
    }

    fn string(&mut self, field: &str) -> Result<String, RecordError> {
        let at = self.pos;
        let bytes = self.bytes(field)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.error(format!("{field} at byte {at} is not UTF-8")))
    }

    fn finish(self) -> Result<(), RecordError> {
        if self.pos == self.value.len() {
            Ok(())
        } else {
            Err(self.error(format!(
                "{} trailing bytes after byte {}",
                self.value.len() - self.pos,
                self.pos
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> StoredMessage {
        StoredMessage {
            msg_id: 42,
            from_user: "alice".into(),
            from_device: "phone".into(),
            client_msg_id: "c-1".into(),
            to: Target::Group("g".into()),
            body: Bytes::from_static(b"hello"),
            server_time_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn message_round_trips_and_every_truncation_is_an_error() {
        let encoded = encode_message(&message());
        assert_eq!(decode_message(b"k", &encoded), Ok(message()));
        for len in 0..encoded.len() {
            let error = decode_message(b"k", &encoded[..len]).unwrap_err();
            assert_eq!(
                (error.partition, error.key_hex.as_str()),
                ("messages", "6b")
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(
            decode_message(b"k", &longer)
                .unwrap_err()
                .what
                .contains("trailing")
        );
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        let mut encoded = encode_message(&message());
        encoded[0] = 9;
        assert_eq!(
            decode_message(&[1, 2], &encoded).unwrap_err().to_string(),
            "corrupt record messages/0102: format 9, this build reads format 1"
        );
        let mut encoded = encode_message(&message());
        encoded[17] = 7;
        assert!(
            decode_message(b"k", &encoded)
                .unwrap_err()
                .what
                .contains("unknown target kind 7")
        );
        // A length field claiming 4 GiB is refused without allocating it.
        let mut encoded = encode_message(&message());
        encoded[18..22].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            decode_message(b"k", &encoded)
                .unwrap_err()
                .what
                .starts_with("truncated: target needs 4294967295 bytes")
        );
        assert_eq!(
            decode_dedupe(b"k", &encode_dedupe(3, 4)),
            Ok((3, 4)),
            "dedupe round trip"
        );
        assert_eq!(
            decode_u64(Partition::Cursors, b"k", &encode_u64(5), "cursor"),
            Ok(5)
        );
        assert!(decode_u64(Partition::Cursors, b"k", &[1, 0], "cursor").is_err());
    }
}
