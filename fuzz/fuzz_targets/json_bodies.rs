//! Fuzz target: JSON bodies of the newer routes, sent to one running
//! server (`molecule::fuzzing::Server`; see fuzz/README.md).
#![no_main]

use std::sync::OnceLock;

static SERVER: OnceLock<molecule::fuzzing::Server> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    SERVER
        .get_or_init(molecule::fuzzing::Server::start)
        .send(data)
});
