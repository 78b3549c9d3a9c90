//! The fork guard: handles a process inherited through `fork` are inert,
//! and no lock or thread of segpool's is split by a `fork`.
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
//! # What `fork` may not split
//! - **Descriptors a child must not keep** ([`close_in_children`]): the
//!   liveness locks' descriptors (`crate::liveness`). The child handler
//!   closes every registered one. A descriptor opened but not yet
//!   registered would leak the parent's lock into the child for the child's
//!   whole life, so opening and registering, and unregistering and closing,
//!   are each one [`unsplit`] section.
//! - **Threads** (the death watchers of `crate::watch`): threads are not
//!   copied into a child, and a Python parent that forks with a native
//!   thread running gets CPython's "multi-threaded fork" warning. A second
//!   set of handlers, registered late ([`register_late`], when the first
//!   watcher starts), stops them before a `fork` and restarts, after it,
//!   those still needed. Registered that late, its prepare handler runs
//!   before those of libraries registered earlier (handlers run in reverse
//!   order), such as an allocator that locks its arenas in its own: joining
//!   a thread there, which frees memory as it exits, would deadlock.
//!
//! This module names no other module of the crate: the ones that need the
//! guard call it, and it calls them back only through what they registered.
//!
//! `unsplit` sections are guarded by [`GATE`], which the prepare handler
//! takes and the parent and child handlers release, so a `fork` from any
//! thread happens between sections, never inside one. Nothing else of
//! segpool's is locked across a `fork`: an inherited region is inert before
//! it takes any lock of its own.
//!
//! # Registration
//! The handlers are registered when the library is loaded (an ELF
//! constructor), not on first use: a `Once` that another thread is running
//! at the instant of a `fork` would stay "running" forever in the child.
//! A child made by a raw `clone` syscall that skips `pthread_atfork` handlers
//! is not covered; `fork()` from libc, Rust's `Command`, Python's `os.fork`
//! and `multiprocessing` all run them.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, Ordering};

/// Bumped in the child of every `fork` (see the module docs).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Whether the handlers are registered (the constructor ran and succeeded).
static REGISTERED: AtomicBool = AtomicBool::new(false);
/// Held by a thread inside an [`unsplit`] section, and by a forking thread
/// from the prepare handler until the parent or child handler.
static GATE: AtomicBool = AtomicBool::new(false);

fn lock_gate() {
    // Acquire pairs with `unlock_gate`'s Release: a section sees what the
    // previous one (or a fork handler) did. Sections are a few syscalls
    // long, so yielding is enough.
    while GATE
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn unlock_gate() {
    GATE.store(false, Ordering::Release);
}

/// Runs `f` so that no `fork` of this process happens while it runs.
/// `f` must not fork, nor enter another section.
pub(crate) fn unsplit<T>(f: impl FnOnce() -> T) -> T {
    struct Unlock;
    impl Drop for Unlock {
        fn drop(&mut self) {
            unlock_gate();
        }
    }
    lock_gate();
    let _unlock = Unlock;
    f()
}

/// Before `fork`, in the forking thread: close the gate (the late prepare
/// handler, which runs first, stopped the watchers).
extern "C" fn prepare() {
    lock_gate();
}

/// After `fork`, in the parent: open the gate.
extern "C" fn in_parent() {
    unlock_gate();
}

/// The late handlers' state: 0 none registered, 1 being registered, 2 done.
static LATE: AtomicU8 = AtomicU8::new(0);

/// Registers a second set of `pthread_atfork` handlers, once per process
/// (later calls return `true` and register nothing): the thread-stopping
/// handlers of the module docs. Call it outside any section (glibc holds
/// its handler-list lock across a whole `fork`, and our prepare handler
/// waits for the gate, so registering inside a section could deadlock
/// against a concurrent `fork`). `false` if it failed.
///
/// `prepare` runs outside the gate (it may drop the last reference to
/// something whose drop enters a section); `child` must be
/// async-signal-safe.
pub(crate) fn register_late(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> bool {
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
    loop {
        match LATE.compare_exchange(0, 1, AcqRel, Acquire) {
            Ok(_) => {
                // SAFETY: three `extern "C" fn()` with static lifetime, whose
                // contracts (above) the caller keeps.
                let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
                LATE.store(if rc == 0 { 2 } else { 0 }, Release);
                return rc == 0;
            }
            Err(2) => return true,
            // Another thread registers them right now.
            Err(_) => std::thread::yield_now(),
        }
    }
}

/// Descriptors every child closes (see [`close_in_children`]). A fixed
/// table, because the child handler may not allocate or lock. Written only
/// inside [`unsplit`] sections.
static CLOSE_IN_CHILD: [AtomicI32; 256] = [const { AtomicI32::new(-1) }; 256];

/// Registers `fd` to be closed in every child of a `fork`; returns its
/// slot for [`keep_in_children`], or `None` when the table is full (then a
/// child keeps the descriptor until it exits or `exec`s). Call it in the
/// [`unsplit`] section that opened `fd`.
pub(crate) fn close_in_children(fd: i32) -> Option<usize> {
    CLOSE_IN_CHILD.iter().position(|s| {
        // Relaxed: the table is only read by the child handler, in a child
        // whose memory is a copy taken at one instant, and written inside
        // `unsplit` sections, which no fork splits.
        s.compare_exchange(-1, fd, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    })
}

/// Takes a descriptor out of the table, in the [`unsplit`] section that
/// then closes it.
pub(crate) fn keep_in_children(slot: usize) {
    // Relaxed: see `close_in_children`.
    CLOSE_IN_CHILD[slot].store(-1, Ordering::Relaxed);
}

/// In the child, before `fork` returns there: only async-signal-safe work
/// (atomic stores and `close`).
extern "C" fn in_child() {
    // Relaxed: the child is single-threaded here, and every later load in it
    // is sequenced after this store.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    for slot in &CLOSE_IN_CHILD {
        // Relaxed: the child is single-threaded here.
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was registered by its owner (a liveness witness of
            // the parent), which in this child never closes it again (its
            // drop sees the fork generation changed and leaks the number).
            unsafe { libc::close(fd) };
        }
    }
    GATE.store(false, Ordering::Relaxed);
    // A late registration another thread had begun did not happen in this
    // copy of the handler list (glibc's lock held it back): let the child
    // register its own.
    let _ = LATE.compare_exchange(1, 0, Ordering::Relaxed, Ordering::Relaxed);
}

extern "C" fn register() {
    // SAFETY: the three handlers are `extern "C" fn()` with static lifetime.
    // `in_child` does only async-signal-safe work (atomics and `close`);
    // `prepare` and `in_parent` only take and drop the gate.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
    // ENOMEM is its only error: then every region refuses to be made
    // (`generation_at_birth`), rather than give a child live handles.
    REGISTERED.store(rc == 0, Ordering::Release);
}

/// Registers the handlers when the library is loaded: by the dynamic
/// loader for a shared object (the Python extension), before `main` for an
/// executable; single-threaded in both cases as far as segpool is concerned.
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER: extern "C" fn() = register;

/// The current process's fork generation, for a region being made;
/// `Err` if the fork handlers could not be registered.
pub(crate) fn generation_at_birth() -> crate::Result<u64> {
    // Acquire pairs with `register`'s Release.
    if !REGISTERED.load(Ordering::Acquire) {
        return Err(crate::Error::io(
            "pthread_atfork",
            std::io::Error::from_raw_os_error(libc::ENOMEM),
        ));
    }
    Ok(current())
}

/// The fork generation now (one relaxed load).
#[inline]
pub(crate) fn current() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}
