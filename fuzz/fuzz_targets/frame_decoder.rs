//! Arbitrary bytes, in arbitrary chunkings, through the frame decoder and `FrameReader`; see
//! `imlab_core::fuzzing::frame_decoder` for the input layout and the checks.

#![no_main]

use imlab_fuzz::{CountingAllocator, ThreadHeapMeter};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fuzz_target!(|input: &[u8]| {
    imlab_core::fuzzing::frame_decoder(input, Some(&ThreadHeapMeter));
});
