//! How a blocking endpoint waits: spin first or not, and a liveness probe.
//! Shared by [`Writer`](crate::Writer) and [`Reader`](crate::Reader).

use crate::error::Result;
use crate::protocol::Wait;
use std::sync::Arc;
use std::time::Duration;

/// A liveness check run while a call is blocked: its error ends the wait.
pub type Probe = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// Longest sleep of a blocked call between two sweeps for dead participants
/// (whose segments then come back, or whose flags get cleared). Bounds the
/// cost of a lost wake-up of any kind to one slice.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// An endpoint's waiting settings.
#[derive(Clone)]
pub(crate) struct WaitPolicy {
    probe: Option<Probe>,
    probe_every: Duration,
    spin: bool,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            probe: None,
            probe_every: Duration::from_millis(50),
            spin: true,
        }
    }
}

impl std::fmt::Debug for WaitPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitPolicy")
            .field("probe", &self.probe.as_ref().map(|_| self.probe_every))
            .field("spin", &self.spin)
            .finish()
    }
}

impl WaitPolicy {
    pub(crate) fn set_spin(&mut self, spin: bool) {
        self.spin = spin;
    }

    pub(crate) fn set_probe(&mut self, every: Duration, probe: Probe) {
        self.probe = Some(probe);
        // At least 1 ms: a zero period would spin on the probe.
        self.probe_every = every.max(Duration::from_millis(1));
    }

    /// The protocol's view of a wait of at most `timeout` (None: forever)
    /// that runs `check` between sleeps: the endpoint's sweep for dead
    /// participants, then [`probe`](Self::probe). Sleeps are at most
    /// [`SWEEP_EVERY`] long (or the probe's period, if shorter).
    pub(crate) fn wait<'p>(
        &self,
        timeout: Option<Duration>,
        check: &'p (dyn Fn() -> Result<()> + Sync),
    ) -> Wait<'p> {
        let mut wait = Wait::timeout(timeout);
        wait.probe = Some(check);
        wait.probe_every = match self.probe {
            Some(_) => self.probe_every.min(SWEEP_EVERY),
            None => SWEEP_EVERY,
        };
        wait.spin = self.spin;
        wait
    }

    /// Runs the user's probe, if any.
    pub(crate) fn probe(&self) -> Result<()> {
        match &self.probe {
            Some(p) => p(),
            None => Ok(()),
        }
    }
}
