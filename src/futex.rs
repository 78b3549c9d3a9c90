//! The one place that makes the `futex` syscall.
//!
//! - **Shared, not private**: the words live in a mapping other processes
//!   share, so `FUTEX_PRIVATE_FLAG` (which keys the wait queue by the
//!   process's own address space) would never see their wakes.
//! - **Absolute deadline**: `FUTEX_WAIT_BITSET` takes an absolute
//!   `CLOCK_MONOTONIC` time, so a wait interrupted by a signal and retried by
//!   the caller never stretches the caller's timeout.
//! - **Errors are values**: `EAGAIN` (the word changed) reads as
//!   [`Ended::Woken`], `EINTR` as [`Ended::Interrupted`] (so a binding can
//!   run its signal handlers); the caller re-checks its condition either way.
//!
//! It answers in its own terms ([`Ended`]) and imports nothing of the crate:
//! `sync` calls it, never the other way round.
//!
//! Every call is counted (two relaxed increments next to a syscall), so
//! benchmarks can prove the steady state makes none: see [`futex_calls`].

use core::num::NonZeroU32;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use rustix::io::Errno;
use rustix::thread::futex;
use rustix::time::{ClockId, Timespec, clock_gettime};
use std::time::Instant;

static WAITS: AtomicU64 = AtomicU64::new(0);
static WAKES: AtomicU64 = AtomicU64::new(0);

/// How many futex syscalls this process has made through segpool: `(waits, wakes)`.
///
/// A diagnostic for benchmarks and tests: in steady state, when neither side
/// has to sleep, transfers make none.
pub fn futex_calls() -> (u64, u64) {
    (WAITS.load(Ordering::Relaxed), WAKES.load(Ordering::Relaxed))
}

/// How a [`wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Woken, or the word no longer held the expected value (`EAGAIN`).
    Woken,
    /// A signal interrupted the sleep (`EINTR`).
    Interrupted,
    /// The deadline passed (`ETIMEDOUT`).
    TimedOut,
}

/// `FUTEX_WAIT_BITSET` on a shared word: sleeps while `*word == expected`,
/// until woken or `deadline` (none: forever).
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Ended {
    let timeout = match deadline {
        None => None,
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Some(absolute(left)),
            _ => return Ended::TimedOut,
        },
    };
    WAITS.fetch_add(1, Ordering::Relaxed);
    let match_any = NonZeroU32::MAX;
    match futex::wait_bitset(
        word,
        futex::Flags::empty(),
        expected,
        timeout.as_ref(),
        match_any,
    ) {
        Err(Errno::TIMEDOUT) => Ended::TimedOut,
        Err(Errno::INTR) => Ended::Interrupted,
        // EAGAIN: the word moved on. Anything else cannot happen for a
        // valid, aligned word; the caller's loop re-checks.
        Ok(()) | Err(_) => Ended::Woken,
    }
}

/// `FUTEX_WAKE` on a shared word: wakes at most `n` sleepers in any process.
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    WAKES.fetch_add(1, Ordering::Relaxed);
    // The only failure is EFAULT, impossible for a live reference.
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

/// `CLOCK_MONOTONIC` now + `left`, the clock `Instant` reads on Linux.
fn absolute(left: std::time::Duration) -> Timespec {
    let now = clock_gettime(ClockId::Monotonic);
    let mut sec = now.tv_sec.saturating_add(left.as_secs() as i64);
    let mut nsec = now.tv_nsec + i64::from(left.subsec_nanos());
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wait_returns_at_once_when_the_word_differs() {
        let w = AtomicU32::new(1);
        assert_eq!(wait(&w, 0, None), Ended::Woken);
    }

    #[test]
    fn wait_times_out_at_the_deadline() {
        let w = AtomicU32::new(0);
        let start = Instant::now();
        let d = start + Duration::from_millis(30);
        assert_eq!(wait(&w, 0, Some(d)), Ended::TimedOut);
        assert!(Instant::now() >= d);
    }

    #[test]
    fn wake_releases_a_sleeper_in_another_thread() {
        let w = std::sync::Arc::new(AtomicU32::new(0));
        let sleeper = {
            let w = w.clone();
            std::thread::spawn(move || {
                while w.load(Ordering::Acquire) == 0 {
                    let far = Instant::now() + Duration::from_secs(30);
                    assert_eq!(wait(&w, 0, Some(far)), Ended::Woken);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, Ordering::Release);
        wake(&w, 1);
        sleeper.join().unwrap();
    }
}
