//! The checking code behind segpool's fuzz targets, shared with the test
//! suite: each target is `fuzz_target!(|data| <module>::run(data))`, and
//! `tests/fuzz_corpus.rs` replays every file of `fuzz/corpus/<target>/`
//! through the same `run`, so a fixed crash stays fixed without the fuzzer.
//! `tests/model.rs` drives [`model`] from proptest.
//!
//! | target         | input                                        | must hold |
//! |----------------|----------------------------------------------|-----------|
//! | `ops`          | a geometry and a sequence of [`model::Op`]    | the pool agrees with [`model::Model`] after every step |
//! | `attach`       | a control area (patched real one) and a size | `attach` errs with a type, or gives a pool that works |
//! | `hostile_peer` | operations interleaved with writes over the control area | every call returns, normally or with an error |
//! | `handle`       | a string                                     | `PoolHandle` parses or errs; what parses prints back the same |
//!
//! Every call the targets make is bounded (zero or millisecond timeouts), so
//! a hang is a finding (libFuzzer's `-timeout`), not a property of a target.

pub mod attach;
pub mod handle;
pub mod hostile_peer;
pub mod model;
pub mod ops;
pub mod peer;
