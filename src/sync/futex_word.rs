//! [`FutexWord`]: a 32-bit word that threads of any process can sleep on.
//!
//! Normal builds forward to [`crate::futex`], the one place that makes the
//! syscall. Under loom the word is emulated with a `Mutex` and a `Condvar`
//! with the kernel's contract: `wait` sleeps only while the word still equals
//! the expected value (checked under the lock the waker also takes), `wake`
//! may wake more sleepers than asked (spurious wake-ups are allowed), and a
//! timed wait returns [`Wake::TimedOut`] once the model calls
//! [`FutexWord::expire_timers`], so loom explores "the timer fired" against
//! every other step.

/// Why a [`FutexWord::wait`] returned. Callers re-check their condition in
/// every case: a wake-up is a hint, never a promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken, interrupted, or the word no longer held the expected value.
    Woken,
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
    use crate::sync::AtomicU32;
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
            crate::futex::wait(&self.0, expected, deadline)
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
    use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};
    use std::time::Instant;

    /// The loom stand-in for a futex word.
    #[derive(Debug)]
    pub(crate) struct FutexWord {
        word: AtomicU32,
        lock: Mutex<()>,
        sleepers: Condvar,
        expired: AtomicBool,
    }

    impl FutexWord {
        pub(crate) fn new(value: u32) -> Self {
            FutexWord {
                word: AtomicU32::new(value),
                lock: Mutex::new(()),
                sleepers: Condvar::new(),
                expired: AtomicBool::new(false),
            }
        }

        pub(crate) fn wait(&self, expected: u32, deadline: Option<Instant>) -> Wake {
            let guard = self.lock.lock().unwrap();
            // Checked under the lock `wake` takes: a waker that changed the
            // word before locking is seen here, one that locks later finds us
            // asleep on the condvar. That is the kernel's atomicity.
            if self.word.load(Ordering::Relaxed) != expected {
                return Wake::Woken;
            }
            if deadline.is_some() && self.expired.load(Ordering::Relaxed) {
                return Wake::TimedOut;
            }
            drop(self.sleepers.wait(guard).unwrap());
            if deadline.is_some() && self.expired.load(Ordering::Relaxed) {
                Wake::TimedOut
            } else {
                Wake::Woken
            }
        }

        pub(crate) fn wake(&self, n: u32) {
            let _guard = self.lock.lock().unwrap();
            if n == 1 {
                self.sleepers.notify_one();
            } else {
                self.sleepers.notify_all();
            }
        }

        /// Makes every timed wait on this word, current and future, time out.
        pub(crate) fn expire_timers(&self) {
            let _guard = self.lock.lock().unwrap();
            self.expired.store(true, Ordering::Relaxed);
            self.sleepers.notify_all();
        }
    }

    impl core::ops::Deref for FutexWord {
        type Target = AtomicU32;
        fn deref(&self) -> &AtomicU32 {
            &self.word
        }
    }
}
