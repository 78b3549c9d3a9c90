//! [`FutexWord`]: a 32-bit word that threads of any process can sleep on.
//!
//! Normal builds forward to [`crate::futex`], the one place that makes the
//! syscall. Under loom the word is emulated with a `Mutex`, a `Condvar` and
//! an explicit wait queue, with the kernel's contract: `wait` sleeps only
//! while the word still equals the expected value (checked under the lock
//! the waker also takes), `wake(n)` dequeues at most `n` sleepers, oldest
//! first, and the others stay asleep; a timed wait returns
//! [`Wake::TimedOut`] once the model calls [`FutexWord::expire_timers`], so
//! loom explores "the timer fired" against every other step, and untimed
//! sleepers are not disturbed by it (waking them would hide lost wake-ups).
//! The emulation is stricter than the kernel in one way: a waiter that a
//! `wake` dequeued may still report `TimedOut` if the timer fired before it
//! ran, so the protocol must not lose such a wake-up (see `wait_for`).

/// Why a [`FutexWord::wait`] returned. Callers re-check their condition in
/// every case: a wake-up is a hint, never a promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken, or the word no longer held the expected value.
    Woken,
    /// A signal interrupted the sleep (`EINTR`; never under loom).
    #[cfg_attr(loom, allow(dead_code))]
    Interrupted,
    /// The deadline passed.
    TimedOut,
}

#[cfg(not(loom))]
pub(crate) use real::FutexWord;

#[cfg(loom)]
pub(crate) use emulated::FutexWord;

#[cfg(not(loom))]
mod real {
    use super::Wake;
    use crate::futex::Ended;
    use core::sync::atomic::AtomicU32;
    use std::time::Instant;

    /// An `AtomicU32` that lives in shared memory and doubles as a futex.
    ///
    /// `repr(transparent)`: its layout is that of the `u32` in the control page.
    #[repr(transparent)]
    #[derive(Debug)]
    pub(crate) struct FutexWord(AtomicU32);

    impl FutexWord {
        /// A word holding `value`.
        pub(crate) const fn new(value: u32) -> Self {
            FutexWord(AtomicU32::new(value))
        }

        /// Sleeps while the word equals `expected`, until `deadline`.
        #[inline]
        pub(crate) fn wait(&self, expected: u32, deadline: Option<Instant>) -> Wake {
            match crate::futex::wait(&self.0, expected, deadline) {
                Ended::Woken => Wake::Woken,
                Ended::Interrupted => Wake::Interrupted,
                Ended::TimedOut => Wake::TimedOut,
            }
        }

        /// Wakes at most `n` sleepers, in any process.
        #[inline]
        pub(crate) fn wake(&self, n: u32) {
            crate::futex::wake(&self.0, n);
        }
    }

    impl core::ops::Deref for FutexWord {
        type Target = AtomicU32;
        fn deref(&self) -> &AtomicU32 {
            &self.0
        }
    }
}

#[cfg(loom)]
mod emulated {
    use super::Wake;
    use loom::sync::atomic::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};
    use std::collections::VecDeque;
    use std::time::Instant;

    /// The kernel's wait queue for one word, kept under the emulation's lock.
    #[derive(Debug, Default)]
    struct Queue {
        /// Tickets of the sleepers, oldest first; `wake` dequeues from the front.
        sleepers: VecDeque<u64>,
        next: u64,
        /// Set by `expire_timers`: every timed wait has reached its deadline.
        expired: bool,
    }

    /// The loom stand-in for a futex word.
    #[derive(Debug)]
    pub(crate) struct FutexWord {
        word: AtomicU32,
        queue: Mutex<Queue>,
        changed: Condvar,
    }

    impl FutexWord {
        pub(crate) fn new(value: u32) -> Self {
            FutexWord {
                word: AtomicU32::new(value),
                queue: Mutex::new(Queue::default()),
                changed: Condvar::new(),
            }
        }

        pub(crate) fn wait(&self, expected: u32, deadline: Option<Instant>) -> Wake {
            let mut q = self.queue.lock().unwrap();
            // Checked under the lock `wake` takes: a waker that changed the
            // word before locking is seen here, one that locks later finds us
            // queued. That is the kernel's atomicity.
            if self.word.load(Ordering::Relaxed) != expected {
                return Wake::Woken;
            }
            let timed = deadline.is_some();
            if timed && q.expired {
                return Wake::TimedOut;
            }
            let me = q.next;
            q.next += 1;
            q.sleepers.push_back(me);
            loop {
                q = self.changed.wait(q).unwrap();
                let woken = !q.sleepers.contains(&me);
                if timed && q.expired {
                    // Even when a `wake` dequeued us too: loom then explores a
                    // wake-up that the timed-out waiter swallowed.
                    q.sleepers.retain(|&t| t != me);
                    return Wake::TimedOut;
                }
                if woken {
                    return Wake::Woken;
                }
                // Another sleeper was woken, or the timers fired and we have
                // none: stay asleep, as a kernel waiter that was not picked.
            }
        }

        pub(crate) fn wake(&self, n: u32) {
            let mut q = self.queue.lock().unwrap();
            let n = (n as usize).min(q.sleepers.len());
            if n > 0 {
                q.sleepers.drain(..n);
                self.changed.notify_all();
            }
        }

        /// Makes every timed wait on this word, current and future, time
        /// out. Untimed sleepers stay asleep.
        pub(crate) fn expire_timers(&self) {
            let mut q = self.queue.lock().unwrap();
            q.expired = true;
            self.changed.notify_all();
        }
    }

    impl core::ops::Deref for FutexWord {
        type Target = AtomicU32;
        fn deref(&self) -> &AtomicU32 {
            &self.word
        }
    }
}
