//! `cargo +nightly fuzz run attach`: see `segpool_fuzz::attach` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| segpool_fuzz::attach::run(data));
