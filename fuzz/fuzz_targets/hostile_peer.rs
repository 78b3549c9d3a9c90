//! `cargo +nightly fuzz run hostile_peer`: see `segpool_fuzz::hostile_peer` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| segpool_fuzz::hostile_peer::run(data));
