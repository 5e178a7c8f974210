//! Arbitrary client bytes against the real server over an in-memory pipe under paused time;
//! see `imlab_core::fuzzing::login` for the input layout and the checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    imlab_core::fuzzing::login(input);
});
