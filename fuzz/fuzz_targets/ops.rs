//! `cargo +nightly fuzz run ops`: see `segpool_fuzz::ops` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| segpool_fuzz::ops::run(data));
