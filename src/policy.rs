//! How a blocking endpoint waits: spin first or not, and a liveness probe.
//! Shared by [`Writer`](crate::Writer) and [`Reader`](crate::Reader).

use crate::error::Result;
use crate::protocol::{BeforeSleep, Wait};
use crate::region::Region;
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
    interruptible: bool,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            probe: None,
            probe_every: Duration::MAX,
            spin: true,
            interruptible: false,
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
        wait.interruptible = self.interruptible;
        wait
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
