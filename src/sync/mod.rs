//! The loom seam: the only module that names `std` or `loom` atomics
//! (`futex_word`, inside it, takes `core`'s `AtomicU32` for the real word).
//!
//! Every other module of the protocol (`bitmap`, `ring`, `protocol`) takes its
//! atomics, its futex word and its spin policy from here, so the same code
//! runs on real shared memory and under loom's model checker.
//!
//! | item         | normal build                          | `--cfg loom`                                  |
//! |--------------|---------------------------------------|-----------------------------------------------|
//! | `AtomicU32/64` | `core::sync::atomic`                | `loom::sync::atomic`                          |
//! | [`FutexWord`]  | an `AtomicU32` + shared Linux futex | an `AtomicU32` + loom `Mutex`/`Condvar` emulation |
//! | [`Backoff`]    | `crossbeam_utils::Backoff`          | completes at once (spinning only bloats the model) |
//! | `Mutex`        | `std::sync::Mutex`                  | `loom::sync::Mutex` (one recoverer per description) |
//! | [`prefetch_write`] | x86's `PREFETCHW` (a cache hint) | nothing                                     |

#[cfg(not(loom))]
mod imp {
    pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    pub(crate) use crossbeam_utils::Backoff;
    pub(crate) use std::sync::Mutex;
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::Mutex;
    pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    /// Under loom a spin phase only multiplies interleavings without adding
    /// any: the protocol must be correct when it goes straight to the futex.
    pub(crate) struct Backoff;

    impl Backoff {
        pub(crate) fn new() -> Self {
            Backoff
        }
        pub(crate) fn snooze(&self) {}
        pub(crate) fn is_completed(&self) -> bool {
            true
        }
    }
}

mod futex_word;
mod prefetch;

pub(crate) use futex_word::{FutexWord, Wake};
pub(crate) use imp::{AtomicU32, AtomicU64, Backoff, Mutex, Ordering};
pub(crate) use prefetch::prefetch_write;
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use prefetch::prefetch_write_at;
