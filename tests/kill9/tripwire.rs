//! The self-kill timer: a one-shot POSIX timer that sends this process
//! `SIGKILL`, so a kill lands a chosen few microseconds from a chosen
//! point, wherever the process is by then.

use crate::rng::Rng;
use std::time::Duration;

/// A process-wide timer whose expiry is `SIGKILL`.
pub struct Tripwire(libc::timer_t);

impl Tripwire {
    pub fn new() -> Result<Tripwire, String> {
        // SAFETY: all-zero is a valid `sigevent` (a C struct of integers and
        // a union of an integer and a pointer).
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = libc::SIGKILL;
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `ev` and `id` are valid for the call; the kernel reads `ev`
        // and writes the new timer's id into `id`.
        let rc = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) };
        if rc != 0 {
            return Err(format!("timer_create: {}", std::io::Error::last_os_error()));
        }
        Ok(Tripwire(id))
    }

    /// Kills this process `after` from now.
    pub fn arm(&self, after: Duration) {
        self.arm_at(monotonic_ns() + after.as_nanos() as u64);
    }

    /// Kills this process at `at` on the monotonic clock (nanoseconds).
    fn arm_at(&self, at: u64) {
        /// `<time.h>`'s flag for an absolute expiry (libc has no Linux one).
        const TIMER_ABSTIME: libc::c_int = 1;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `self.0` is a timer `timer_create` made and nothing
        // deleted; `spec` is valid for the call; a null old value is allowed.
        let rc = unsafe { libc::timer_settime(self.0, TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "timer_settime failed");
    }

    /// Arms the kill 20 us from now and returns at a random moment around
    /// its expiry, so that what the caller does next (a commit, the release
    /// of a segment) is killed at a random point of itself much more often
    /// than a random delay would manage: the kill arrives some (unknown,
    /// roughly constant) time after the expiry.
    pub fn arm_around_next_step(&self, rng: &mut Rng) {
        let expiry = monotonic_ns() + 20_000;
        self.arm_at(expiry);
        let start = expiry - 1_000 + rng.below(4_000);
        while monotonic_ns() < start {
            std::hint::spin_loop();
        }
    }
}

/// The monotonic clock (the timer's) in nanoseconds.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
