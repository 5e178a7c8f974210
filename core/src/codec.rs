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
