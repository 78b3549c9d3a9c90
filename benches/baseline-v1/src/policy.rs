//! How a blocking endpoint waits: spin first or not, and a liveness probe.
//! Shared by [`Writer`](crate::Writer) and [`Reader`](crate::Reader).

use crate::error::Result;
use crate::protocol::Wait;
use std::sync::Arc;
use std::time::Duration;

/// A liveness check run while a call is blocked: its error ends the wait.
pub type Probe = Arc<dyn Fn() -> Result<()> + Send + Sync>;

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

    /// The protocol's view of a wait of at most `timeout` (None: forever).
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Wait<'_> {
        let mut wait = Wait::timeout(timeout);
        wait.probe = self
            .probe
            .as_deref()
            .map(|p| p as &(dyn Fn() -> Result<()> + Sync));
        wait.probe_every = self.probe_every;
        wait.spin = self.spin;
        wait
    }
}
