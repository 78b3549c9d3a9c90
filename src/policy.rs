//! How a blocking endpoint waits: spin first or not, and a liveness probe.
//! Shared by [`Writer`](crate::Writer) and [`Reader`](crate::Reader).

use crate::error::Result;
use crate::protocol::{BeforeSleep, Wait};
use crate::region::Region;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a blocked call keeps trying (busy) before it sleeps, when its
/// endpoint's last blocked call was short.
const SPIN_FOR: Duration = Duration::from_micros(50);
/// A blocked call that ended within this is "short": the next one spins
/// for `SPIN_FOR`. A longer one (a side that waits for real) makes the next
/// one sleep at once after the `Backoff`, so a side asleep for seconds pays
/// the extra spin at most once.
const SHORT: Duration = Duration::from_micros(200);

/// A liveness check run while a call is blocked: its error ends the wait.
pub type Probe = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// An endpoint's waiting settings, and how long its last blocked call
/// took (adaptive spinning, as an adaptive mutex does).
pub(crate) struct WaitPolicy {
    probe: Option<Probe>,
    probe_every: Duration,
    spin: bool,
    interruptible: bool,
    /// Nanoseconds the last blocked call of this endpoint took (saturated).
    /// Relaxed: a hint, this endpoint's alone.
    last_blocked_ns: AtomicU64,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            probe: None,
            probe_every: Duration::MAX,
            spin: true,
            interruptible: false,
            // "Long" until a blocked call proves short: a side that only
            // ever sleeps never spins past the `Backoff`.
            last_blocked_ns: AtomicU64::new(u64::MAX),
        }
    }
}

impl Clone for WaitPolicy {
    fn clone(&self) -> Self {
        WaitPolicy {
            probe: self.probe.clone(),
            probe_every: self.probe_every,
            spin: self.spin,
            interruptible: self.interruptible,
            last_blocked_ns: AtomicU64::new(self.last_blocked_ns.load(Ordering::Relaxed)),
        }
    }
}

impl std::fmt::Debug for WaitPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitPolicy")
            .field("probe", &self.probe.as_ref().map(|_| self.probe_every))
            .field("spin", &self.spin)
            .field("interruptible", &self.interruptible)
            .finish()
    }
}

impl WaitPolicy {
    pub(crate) fn set_spin(&mut self, spin: bool) {
        self.spin = spin;
    }

    pub(crate) fn set_interruptible(&mut self, yes: bool) {
        self.interruptible = yes;
    }

    pub(crate) fn set_probe(&mut self, every: Duration, probe: Probe) {
        self.probe = Some(probe);
        // At least 1 ms: a zero period would spin on the probe.
        self.probe_every = every.max(Duration::from_millis(1));
    }

    /// The protocol's view of a wait of at most `timeout` (None: forever)
    /// that runs `before_sleep` before each sleep.
    pub(crate) fn wait<'p>(
        &self,
        timeout: Option<Duration>,
        before_sleep: BeforeSleep<'p>,
    ) -> Wait<'p> {
        let mut wait = Wait::timeout(timeout);
        wait.before_sleep = Some(before_sleep);
        wait.spin = self.spin;
        let last = Duration::from_nanos(self.last_blocked_ns.load(Ordering::Relaxed));
        if last <= SHORT {
            wait.spin_for = SPIN_FOR;
        }
        wait.interruptible = self.interruptible;
        wait
    }

    /// How long the next blocked call spins past the `Backoff`.
    #[cfg(test)]
    pub(crate) fn next_spin(&self) -> Duration {
        let before_sleep = || Ok(None);
        self.wait(None, &before_sleep).spin_for
    }

    /// Records how long a blocked call took (see `SPIN_FOR`).
    pub(crate) fn blocked_for(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.last_blocked_ns.store(ns, Ordering::Relaxed);
    }

    /// What a blocked endpoint runs before each sleep: the region's death
    /// watch, then the user's probe, if any. The sleep lasts at most the
    /// shorter of what the region and the probe's period allow.
    pub(crate) fn before_sleep(&self, region: &Arc<Region>) -> Result<Option<Duration>> {
        let slice = region.before_sleep()?;
        let Some(probe) = &self.probe else {
            return Ok(Some(slice));
        };
        probe()?;
        Ok(Some(slice.min(self.probe_every)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin_for(p: &WaitPolicy) -> Duration {
        let before_sleep = || Ok(None);
        p.wait(None, &before_sleep).spin_for
    }

    #[test]
    fn an_endpoint_spins_past_the_backoff_only_after_a_short_blocked_call() {
        let p = WaitPolicy::default();
        assert_eq!(spin_for(&p), Duration::ZERO, "a new endpoint never spun");
        p.blocked_for(Duration::from_micros(30));
        assert_eq!(spin_for(&p), SPIN_FOR, "a short wait: partner answers fast");
        p.blocked_for(Duration::from_millis(3));
        assert_eq!(spin_for(&p), Duration::ZERO, "a long wait: sleep at once");
        p.blocked_for(SHORT);
        assert_eq!(spin_for(&p), SPIN_FOR);
    }

    #[test]
    fn a_clone_starts_from_what_its_original_saw() {
        let p = WaitPolicy::default();
        p.blocked_for(Duration::from_micros(1));
        let q = p.clone();
        assert_eq!(spin_for(&q), SPIN_FOR);
        q.blocked_for(Duration::from_secs(1));
        assert_eq!(spin_for(&p), SPIN_FOR, "the original keeps its own");
    }
}
