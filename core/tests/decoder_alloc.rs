//! The decoder never allocates in proportion to a declared length it has not validated, and
//! what it allocates for a frame is bounded by that frame's (validated) length.
//!
//! A counting global allocator records the largest live heap during each decode. Protobuf
//! decoding may legitimately expand bytes into structs (a 2-byte empty repeated Message becomes
//! one `Message` struct), so the bound is the limit times the largest such expansion.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use imlab_core::codec::{Decoded, LENGTH_PREFIX_BYTES, decode};
use imlab_core::proto;
use proptest::prelude::*;

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator and only adds counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK_BYTES.fetch_max(live, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap growth during one decode (this test binary runs its cases on one thread).
fn peak_during_decode(input: &[u8], max_frame_bytes: usize) -> (usize, bool) {
    let base = LIVE_BYTES.load(Ordering::SeqCst);
    PEAK_BYTES.store(base, Ordering::SeqCst);
    let decoded = decode(input, max_frame_bytes);
    let is_frame = matches!(decoded, Ok(Decoded::Frame { .. }));
    let peak = PEAK_BYTES.load(Ordering::SeqCst);
    drop(decoded);
    (peak - base, is_frame)
}

/// Largest heap bytes protobuf can produce per encoded byte: an empty embedded message costs
/// 2 bytes on the wire and one struct (plus Vec doubling) in memory.
fn expansion_max() -> usize {
    std::mem::size_of::<proto::Message>()
        .max(std::mem::size_of::<String>())
        .max(std::mem::size_of::<proto::Frame>())
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
