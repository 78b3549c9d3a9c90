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
//! - **The liveness descriptors** (`crate::liveness`): a descriptor opened
//!   but not yet registered for the child handler would leak the parent's
//!   lock into the child for the child's whole life. Opening and
//!   registering, and unregistering and closing, are each one
//!   [`unsplit`] section.
//! - **The death watchers** (`crate::watch`): threads are not copied into a
//!   child, and a Python parent that forks with a native thread running gets
//!   CPython's "multi-threaded fork" warning. A second pair of handlers,
//!   registered when the first watcher starts ([`register_watch_handlers`]),
//!   stops every watcher before a `fork` and restarts, after it, those a
//!   sleeping thread still needs. Registered that late, its prepare handler
//!   runs before those of libraries registered earlier (handlers run in
//!   reverse order), such as an allocator that locks its arenas in its own:
//!   joining a thread there, which frees memory as it exits, would deadlock.
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// Before `fork`, in the forking thread: close the gate (the watchers were
/// stopped by `watch_prepare`, which runs first).
extern "C" fn prepare() {
    lock_gate();
}

/// After `fork`, in the parent: open the gate.
extern "C" fn in_parent() {
    unlock_gate();
}

/// 0: the watch handlers are not registered; 1: being registered; 2: done.
static WATCH_HANDLERS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Before `fork`, ahead of `prepare` and of every library registered
/// before the first watcher started: stop the watchers. Outside the gate:
/// a watcher may be dropping the last reference to a region, which enters
/// a section.
extern "C" fn watch_prepare() {
    crate::watch::stop_all_for_fork();
}

/// After `fork`, in the parent, after `in_parent` and the handlers of
/// libraries registered before: restart the watchers sleepers still need.
extern "C" fn watch_parent() {
    crate::watch::restart_after_fork();
}

/// In the child: the watchers are not there (threads are not copied).
extern "C" fn watch_child() {
    crate::watch::forget_after_fork();
}

/// Registers the watch handlers, once per process, outside any section
/// (glibc holds its handler-list lock across a whole `fork`, and our
/// prepare handler waits for the gate, so registering inside a section
/// could deadlock against a concurrent `fork`). `false` if it failed.
pub(crate) fn register_watch_handlers() -> bool {
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
    loop {
        match WATCH_HANDLERS.compare_exchange(0, 1, AcqRel, Acquire) {
            Ok(_) => {
                // SAFETY: three `extern "C" fn()` with static lifetime; the
                // child one does only atomic stores.
                let rc = unsafe {
                    libc::pthread_atfork(Some(watch_prepare), Some(watch_parent), Some(watch_child))
                };
                WATCH_HANDLERS.store(if rc == 0 { 2 } else { 0 }, Release);
                return rc == 0;
            }
            Err(2) => return true,
            // Another thread registers them right now.
            Err(_) => std::thread::yield_now(),
        }
    }
}

/// In the child, before `fork` returns there: only async-signal-safe work
/// (atomic stores and `close`).
extern "C" fn in_child() {
    // Relaxed: the child is single-threaded here, and every later load in it
    // is sequenced after this store.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // Watcher threads are not copied into the child; the inherited regions
    // whose watches they were are inert, so nothing of theirs runs here.
    crate::liveness::forget_after_fork();
    GATE.store(false, Ordering::Relaxed);
    // A registration another thread had begun did not happen in this copy
    // of the handler list (glibc's lock held it back): let the child
    // register its own.
    let _ = WATCH_HANDLERS.compare_exchange(1, 0, Ordering::Relaxed, Ordering::Relaxed);
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
