//! Fuzz target: `molecule::fuzzing::multipart` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| molecule::fuzzing::multipart(data));
