//! The fork guard: handles a process inherited through `fork` are inert.
//!
//! `fork` copies every `Unit`, `UnitWriter` and pool of the parent into the
//! child, but not the parent's ownership of their segments: the parent still
//! reads its views and writes its leases. If the child's copies acted on the
//! pool (a drop releasing a view, a drop aborting a lease), the parent's
//! segments would go back to the pool under live borrows.
//!
//! So every process keeps a *fork generation*: 0 in a process that never
//! forked without `exec`, and bumped by a `pthread_atfork` child handler in
//! every child. A region records the generation it was created or attached
//! in; a handle whose region's generation differs from the process's is
//! inherited, and everything it would do to the pool becomes a no-op or an
//! [`Error::Forked`](crate::Error::Forked). The check costs one relaxed load
//! of a process-local word on the paths that act on the pool.
//!
//! The handler is registered once, when the first region is made. A child
//! made by a raw `clone` syscall that skips `pthread_atfork` handlers is not
//! covered; `fork()` from libc, Rust's `Command`, Python's `os.fork` and
//! `multiprocessing` all run them.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped in the child of every `fork` (see the module docs).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

/// Runs in the child right after `fork`, before `fork` returns there: only
/// async-signal-safe work is allowed, and one atomic add is.
extern "C" fn in_child() {
    // Relaxed: the child is single-threaded here, and every later load in it
    // is sequenced after this store.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    crate::liveness::forget_after_fork();
}

/// The current process's fork generation, registering the handler first.
pub(crate) fn generation_at_birth() -> u64 {
    REGISTER.call_once(|| {
        // SAFETY: `in_child` is an `extern "C" fn()` with static lifetime
        // that only does async-signal-safe work (an atomic add, and `close`
        // of the fds in `liveness`); the other two handlers are null, which
        // pthread_atfork allows.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        // ENOMEM is its only error; without the handler a forked child's
        // handles would not be inert, so refuse to go on silently.
        assert_eq!(rc, 0, "pthread_atfork failed: {rc}");
    });
    current()
}

/// The fork generation now (one relaxed load).
#[inline]
pub(crate) fn current() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}
