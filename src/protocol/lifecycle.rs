//! Whole-pool events: shutdown, a new generation (`reset`), and wake-ups
//! asked for from outside the protocol.

use super::control::Control;
use super::wait::{Budget, notify};
use crate::error::Result;
use crate::layout::{Owner, SHUT_DOWN};
use crate::sync::Ordering;

impl Control<'_> {
    /// Wakes every consumer asleep on the pool (a reader whose clone
    /// stashed units for it: `Reader::recv_id`). Spurious for the others.
    pub fn wake_consumers(&self) {
        notify(&self.hdr.data);
    }

    /// Sets the sticky shutdown flag and wakes every sleeper on both words.
    pub fn shutdown(&self) {
        // Release pairs with the Acquire in `is_shutdown`, which every
        // attempt runs after its sequence read and flag.
        self.hdr.life.shutdown.store(SHUT_DOWN, Ordering::Release);
        notify(&self.hdr.space);
        notify(&self.hdr.data);
    }

    /// Starts a new generation: units published and not yet taken are
    /// dropped, units being written will fail to commit with `Stale`, and
    /// views still held keep their segments until they drop. Returns the
    /// number of queued units dropped. Consumer side, between iterations.
    pub fn reset(&self, me: Owner) -> Result<u64> {
        // Tickets below `end` were claimed before the bump (O4: each claim
        // happens-before the tail advance this Acquire load reads), so all
        // are of an old generation. Later tickets may be of the new one and
        // must not be drained: `try_take` drops the old ones among them.
        let end = self.ring.published();
        self.hdr.life.generation.fetch_add(1, Ordering::AcqRel);
        let mut dropped = 0;
        // At most `count` units are queued: the bound only stops a peer.
        for _ in 0..self.count() {
            let Some(t) = self.pop_before(me, Some(end), &mut Budget::new(None))? else {
                break;
            };
            self.release(&t);
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Makes every timed wait on this block time out (loom's clock).
    #[cfg(loom)]
    pub fn expire_timers(&self) {
        self.hdr.space.expire_timers();
        self.hdr.data.expire_timers();
    }
}
