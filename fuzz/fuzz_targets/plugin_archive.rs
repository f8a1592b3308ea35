//! Fuzz target: `molecule::fuzzing::plugin_archive` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| molecule::fuzzing::plugin_archive(data));
