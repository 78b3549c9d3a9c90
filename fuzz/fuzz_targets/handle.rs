//! `cargo +nightly fuzz run handle`: see `segpool_fuzz::handle` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| segpool_fuzz::handle::run(data));
