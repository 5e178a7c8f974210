//! The decoder never allocates in proportion to a declared length it has not validated, and
//! what it allocates for a frame is bounded by that frame's (validated) length.
//!
//! A counting global allocator records the largest live heap during each decode. Protobuf
//! decoding may legitimately expand bytes into structs (a 2-byte empty repeated Message becomes
//! one `Message` struct), so the bound is the limit times the largest such expansion.

mod counting_alloc;

use imlab_core::codec::{Decoded, LENGTH_PREFIX_BYTES, decode};
use imlab_core::proto;
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

/// Heap growth on this thread during one decode.
fn peak_during_decode(input: &[u8], max_frame_bytes: usize) -> (usize, bool) {
    let (decoded, _, peak) = counting_alloc::count(|| decode(input, max_frame_bytes));
    let is_frame = matches!(decoded, Ok(Decoded::Frame { .. }));
    (peak.max(0) as usize, is_frame)
}

/// Largest heap bytes protobuf can produce per encoded byte: an empty embedded message costs
/// 2 bytes on the wire and one struct (plus Vec doubling) in memory.
fn expansion_max() -> usize {
    std::mem::size_of::<proto::Message>()
        .max(std::mem::size_of::<String>())
        .max(std::mem::size_of::<proto::Frame>())
}

/// The meter itself: it sees a frame's decode allocate, so the zero and bound checks in this
/// file cannot pass on a meter that counts nothing.
#[test]
fn the_meter_sees_a_decode_allocate() {
    let login = proto::Login {
        user: "a".repeat(1_000),
        ..proto::Login::default()
    };
    let frame = proto::Frame::new(proto::Body::Login(login));
    let input = imlab_core::codec::encode_to_vec(&frame);
    let (peak, is_frame) = peak_during_decode(&input, 65_536);
    assert!(is_frame);
    assert!(peak >= 1_000, "measured {peak} bytes");
}

#[test]
fn a_huge_declared_length_allocates_nothing() {
    let input = [0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
    let (peak, _) = peak_during_decode(&input, 65_536);
    assert_eq!(peak, 0);
    let input = [0, 0, 0xff, 0xff];
    let (peak, _) = peak_during_decode(&input, 1 << 20);
    assert_eq!(peak, 0, "an incomplete frame allocates nothing");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_allocation_is_bounded_by_the_validated_length(
        payload in proptest::collection::vec(any::<u8>(), 0..4_096),
        declared_extra in 0u32..3,
        max_frame_bytes in 1usize..4_096,
    ) {
        let declared = payload.len() as u32 + declared_extra;
        let mut input = declared.to_be_bytes().to_vec();
        input.extend_from_slice(&payload);
        let (peak, is_frame) = peak_during_decode(&input, max_frame_bytes);
        let bound = (input.len().min(LENGTH_PREFIX_BYTES + max_frame_bytes)) * expansion_max();
        prop_assert!(peak <= bound, "peak {peak} > bound {bound} (frame: {is_frame})");
    }
}
