//! Worker processes that produce into a pool (SPDL's `iterate_in_subprocess`).
//!
//! (Being written: see issue 5.)
