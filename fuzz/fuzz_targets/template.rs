//! Fuzz target: `molecule::fuzzing::template` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| molecule::fuzzing::template(data));
