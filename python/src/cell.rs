//! `GilCell`: binding state that needs no lock.
//!
//! Every access to the binding's mutable state happens with the GIL held,
//! inside one short Rust closure that neither calls Python nor releases the
//! GIL (this is a stable-ABI module, which free-threaded CPython does not
//! load, so there always is a GIL). Two threads are never inside at once,
//! so a lock would only add a way to hang: a `Mutex` that another thread
//! held when the process forked stays held forever in the child (issue 14,
//! finding 4b). A `GilCell` keeps a flag instead of a lock: entering it
//! while it is entered panics (a bug in this crate, never a wait), so it
//! stays sound even if that reasoning were broken.

use pyo3::Python;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// A value that threads holding the GIL take turns on, without a lock.
pub(crate) struct GilCell<T> {
    entered: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the only access to `value` is `with`, which first sets `entered`
// with an acquire swap and panics if it was already set, and clears it with
// a release store when done: at most one `&mut T` exists at a time, on one
// thread, and what it wrote happens-before the next `with` reads it. `T:
// Send` because successive calls may come from different threads.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub(crate) fn new(value: T) -> GilCell<T> {
        GilCell {
            entered: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` on the value. The token says the GIL is held, so no other
    /// thread is in here; `f` must stay plain Rust (no Python calls, no GIL
    /// release: it gets no token) and must not re-enter this cell.
    pub(crate) fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        struct Exit<'a>(&'a AtomicBool);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        assert!(
            !self.entered.swap(true, Ordering::Acquire),
            "segpool: binding state entered twice at once (a bug in segpool's binding)"
        );
        let _exit = Exit(&self.entered);
        // SAFETY: `entered` was clear and is now ours until `_exit` drops
        // after `f` returns (or unwinds), so this is the only reference to
        // the value (see the `Sync` impl).
        f(unsafe { &mut *self.value.get() })
    }

    /// A copy of the value.
    pub(crate) fn get(&self, py: Python<'_>) -> T
    where
        T: Clone,
    {
        self.with(py, |v| v.clone())
    }

    /// Puts `value` in and returns what was there (drop it outside).
    pub(crate) fn replace(&self, py: Python<'_>, value: T) -> T {
        self.with(py, |v| std::mem::replace(v, value))
    }
}
