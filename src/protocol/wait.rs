//! Waiting: spin, then sleep on a futex word with a flag in the word the
//! waker touches anyway (the handshake is in the protocol's module docs),
//! the budget that bounds every retry loop, and `notify`, the waker's half.

use super::control::Control;
use crate::error::{Error, Result};
use crate::layout::Owner;
use crate::sync::{AtomicU32, Backoff, FutexWord, Ordering, Wake};
use std::time::{Duration, Instant};

/// One step of a futex word's sequence.
const SEQ: u32 = 1;
/// `FUTEX_WAKE` count that means "everyone".
const ALL: u32 = i32::MAX as u32;

/// What a blocked call runs before each sleep: its error ends the wait;
/// its value is the longest the next sleep may last (`None`: until woken
/// or the deadline).
pub type BeforeSleep<'p> = &'p (dyn Fn() -> Result<Option<Duration>> + Sync);

/// How long and how a blocking call may wait.
#[derive(Clone, Copy)]
pub struct Wait<'p> {
    /// When to give up; `None` waits until the condition or shutdown.
    pub deadline: Option<Instant>,
    /// The timeout the deadline came from, for the error message.
    pub timeout: Duration,
    /// Run after a failed attempt, before each sleep (see `BeforeSleep`):
    /// how a process notices dead peers without sleeping in slices.
    pub before_sleep: Option<BeforeSleep<'p>>,
    /// Spin (with `Backoff`) before sleeping; `false` sleeps on the futex
    /// after one failed attempt (lower CPU, higher latency).
    pub spin: bool,
    /// With `spin`, how long to keep trying (busy, between attempts) once
    /// the `Backoff` is done, before the first sleep: what
    /// keeps a ping-pong whose partner answers within tens of µs off the
    /// futex. Zero: sleep as soon as the `Backoff` is done.
    pub spin_for: Duration,
    /// End the wait with [`Error::Interrupted`] when a signal interrupts a
    /// sleep (a binding then runs its signal handlers and calls again);
    /// otherwise an interrupted sleep is resumed.
    pub interruptible: bool,
}

impl Wait<'_> {
    /// Waits up to `timeout` (None: forever), with nothing run between
    /// sleeps.
    pub fn timeout(timeout: Option<Duration>) -> Wait<'static> {
        let now = Instant::now();
        Wait {
            deadline: timeout.and_then(|t| now.checked_add(t)),
            timeout: timeout.unwrap_or(Duration::MAX),
            before_sleep: None,
            spin: true,
            spin_for: Duration::ZERO,
            interruptible: false,
        }
    }

    /// After the `Backoff`: whether to try again (after a short busy spin)
    /// rather than sleep. `until` starts the `spin_for` period at the first
    /// call.
    #[cfg(not(loom))]
    fn keep_spinning(&self, until: &mut Option<Instant>) -> bool {
        if self.spin_for.is_zero() {
            return false;
        }
        let now = Instant::now();
        let end = *until.get_or_insert_with(|| now.checked_add(self.spin_for).unwrap_or(now));
        if now >= end || self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        // A busy spin, not a yield: on a loaded machine a yield hands the
        // CPU to whoever else is runnable, for a whole time slice.
        for _ in 0..32 {
            core::hint::spin_loop();
        }
        true
    }

    /// Never under loom: spinning only multiplies interleavings.
    #[cfg(loom)]
    fn keep_spinning(&self, _until: &mut Option<Instant>) -> bool {
        false
    }

    /// Whether the deadline has passed.
    #[inline]
    pub(super) fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Which futex word a wait sleeps on.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Space,
    Data,
}

impl Control<'_> {
    /// Runs `attempt` until it yields a value or an error: spinning briefly,
    /// then sleeping on the side's futex word (see the module docs for the
    /// handshake).
    pub(super) fn wait_for<T>(
        &self,
        side: Side,
        me: Owner,
        wait: &Wait<'_>,
        mut attempt: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let backoff = Backoff::new();
        let mut spin_until = None;
        loop {
            if let Some(v) = attempt()? {
                return Ok(v);
            }
            if !wait.spin {
                break;
            }
            if !backoff.is_completed() {
                backoff.snooze();
            } else if !wait.keep_spinning(&mut spin_until) {
                break;
            }
        }
        let (word, count) = match side {
            Side::Space => (&self.hdr.space, &self.parts[me.index()].waiting_space),
            Side::Data => (&self.hdr.data, &self.parts[me.index()].waiting_data),
        };
        // For monitors only (nothing wakes on it); the guard takes it back on
        // every way out, and recovery zeroes a dead process's.
        let _counted = Counted::new(count);
        // Rounds in a row whose flag found the condition changed: bounded,
        // so a peer that keeps the words moving gets us to the probe and a
        // sleep slice instead of a spin.
        let mut changed_rounds = 0u32;
        let outcome = loop {
            // Acquire: pairs with `notify`'s Release bump, so the condition a
            // waker changed before its bump is visible to the attempt below.
            let seen = word.load(Ordering::Acquire);
            // The flag: after the sequence read (program order), so a waker
            // whose RMW reads our flag bumps the word after our read.
            let changed = match side {
                Side::Space => self.bitmap.arm(),
                Side::Data => self.ring.arm(),
            };
            #[cfg(segpool_mutant = "skip_recheck")] // loom-tests mutant: sleep before re-checking
            let _ = (changed, word.wait(seen, wait.deadline));
            match attempt() {
                Ok(None) => {}
                done => break done,
            }
            if changed && changed_rounds < 64 {
                // The condition changed under our flag but someone else got
                // there first: flag again, unless the deadline passed.
                changed_rounds += 1;
                if wait.expired() {
                    break attempt();
                }
                continue;
            }
            changed_rounds = 0;
            // Only after an attempt failed: a waiter woken for a unit or a
            // segment takes it before an error from here can end its wait.
            let slice = match wait.before_sleep.map(|f| f()) {
                Some(Err(e)) => break Err(e),
                Some(Ok(slice)) => slice,
                None => None,
            };
            let (until, last) = match (slice, wait.deadline) {
                (None, d) => (d, true),
                // checked_add: a huge slice means "no slices".
                (Some(slice), d) => match Instant::now().checked_add(slice) {
                    Some(end) if d.is_none_or(|d| end < d) => (Some(end), false),
                    _ => (d, true),
                },
            };
            match word.wait(seen, until) {
                Wake::TimedOut if last => {
                    // One last look: a wake meant for us may have raced the timer.
                    #[cfg(segpool_mutant = "no_final_attempt")] // loom-tests mutant
                    break Ok(None);
                    #[cfg_attr(segpool_mutant = "no_final_attempt", allow(unreachable_code))]
                    break attempt();
                }
                Wake::Interrupted if wait.interruptible => {
                    break match attempt() {
                        Ok(None) => Err(Error::Interrupted),
                        done => done,
                    };
                }
                _ => {}
            }
        };
        match outcome {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Error::Timeout(wait.timeout)),
            Err(e) => Err(e),
        }
    }
}

/// The time an attempt may spend retrying against contention, or against
/// a peer that keeps rewriting the words it reads: until the caller's
/// deadline, or [`Budget::TRY`] for calls that do not wait. The clock is
/// read only from the second round of a loop on, never on the fast path.
#[cfg_attr(loom, allow(dead_code))]
pub(super) struct Budget {
    deadline: Option<Instant>,
    /// The deadline was computed (from `TRY`) or given.
    fixed: bool,
}

impl Budget {
    /// How long a call that does not wait may retry.
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) const TRY: Duration = Duration::from_millis(10);

    pub(super) fn new(deadline: Option<Instant>) -> Budget {
        Budget {
            deadline,
            fixed: deadline.is_some(),
        }
    }

    /// Whether the time is up. Never under loom, which models no clock:
    /// the round counts bound its loops.
    #[cfg(loom)]
    pub(super) fn spent(&mut self) -> bool {
        false
    }

    /// Whether the time is up.
    #[cfg(not(loom))]
    pub(super) fn spent(&mut self) -> bool {
        let now = Instant::now();
        if !self.fixed {
            self.fixed = true;
            self.deadline = now.checked_add(Self::TRY);
        }
        self.deadline.is_some_and(|d| now >= d)
    }
}

/// A sleeper counted in its participant entry; dropping it takes the count back.
struct Counted<'w>(&'w AtomicU32);

impl<'w> Counted<'w> {
    fn new(count: &'w AtomicU32) -> Self {
        // Relaxed: monitoring only.
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        // Relaxed: monitoring only. Saturating: recovery may have zeroed it
        // (a peer wrongly recovering us would be a bug elsewhere).
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
    }
}

/// Wakes every sleeper on `word` after the caller changed their condition
/// and found a sleeper's flag.
#[inline]
pub(super) fn notify(word: &FutexWord) {
    // Release pairs with the sleeper's Acquire load of the word after it
    // wakes (O3): the condition changed before this call is visible to it.
    #[cfg(not(segpool_mutant = "notify_load"))]
    word.fetch_add(SEQ, Ordering::Release);
    #[cfg(segpool_mutant = "notify_load")] // loom-tests mutant: no sequence bump
    let _ = (word.load(Ordering::Relaxed), SEQ);
    word.wake(ALL);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The budget reads the clock only when asked, and a call that does
    /// not wait gets `Budget::TRY` from its first check.
    #[test]
    fn a_budget_without_a_deadline_allows_try_then_ends() {
        let mut b = Budget::new(None);
        assert!(!b.spent(), "the first check starts the TRY period");
        std::thread::sleep(Budget::TRY + Duration::from_millis(2));
        assert!(b.spent());
    }
}
