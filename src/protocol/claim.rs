//! The producer's room: claim a free segment (`begin`), publish it
//! (`commit`) or give it back (`abort`).

use super::control::Control;
use super::unit::Lease;
use super::wait::{Budget, Side, Wait, notify};
use crate::error::{Error, Result};
use crate::layout::{Owner, epoch_of, pack, phase, phase_of};
use crate::sync::{Ordering, prefetch_write};
use std::time::Instant;

impl Control<'_> {
    /// Claims a free segment for writing, without waiting.
    /// `Ok(None)`: none free. `Err(Shutdown)` after `shutdown`.
    #[inline(always)]
    pub fn try_begin(&self, me: Owner) -> Result<Option<Lease>> {
        match self.claim_first(me) {
            Some(lease) => Ok(Some(lease)),
            None => self.try_begin_again(me),
        }
    }

    /// The whole of `try_begin`, for when its first try did not do.
    #[cold]
    #[inline(never)]
    fn try_begin_again(&self, me: Owner) -> Result<Option<Lease>> {
        self.try_begin_in(me, self.generation(), None)
    }

    /// The common case of a claim in straight-line code, small enough to
    /// inline into an endpoint: not shut down, a free bit set in the index,
    /// and the descriptor CAS won. `None` sends the caller to
    /// `try_begin_in`, which takes the same steps in its loop and sorts out
    /// every other case: nothing was changed, or a bit was set over a
    /// segment whose descriptor is owned after all, which is right for it
    /// (see `start_writing`).
    #[inline(always)]
    pub fn claim_first(&self, me: Owner) -> Option<Lease> {
        let generation = self.generation();
        if self.is_shutdown() {
            return None;
        }
        // The bitmap CAS writes the word a consumer's release wrote last.
        self.bitmap.prefetch_claim();
        let seg = self.bitmap.try_claim()?;
        self.start_writing(seg, me, generation)
    }

    /// Claims a free segment, waiting for one as `wait` allows. The lease
    /// belongs to the generation current when `begin` was *called*: a
    /// producer that waited across a `reset` gets `Stale` at commit rather
    /// than slipping a unit of the old pass into the new one.
    pub fn begin(&self, me: Owner, wait: &Wait<'_>) -> Result<Lease> {
        let generation = self.generation();
        self.wait_for(Side::Space, me, wait, || {
            self.try_begin_in(me, generation, wait.deadline)
        })
    }

    #[inline(always)]
    fn try_begin_in(
        &self,
        me: Owner,
        generation: u32,
        deadline: Option<Instant>,
    ) -> Result<Option<Lease>> {
        if self.is_shutdown() {
            return Err(Error::Shutdown);
        }
        // Bounded: each failed descriptor CAS leaves the bit set over an
        // owned segment, so the scan moves on; `count` rounds, and the
        // caller's deadline, bound a peer that frees and re-takes behind
        // our back.
        let mut budget = Budget::new(deadline);
        let mut rounds = 0;
        loop {
            let Some(seg) = self.bitmap.try_claim() else {
                return Ok(None);
            };
            if let Some(lease) = self.start_writing(seg, me, generation) {
                return Ok(Some(lease));
            }
            // Only a retry pays for the bookkeeping: `count + 1` rounds.
            rounds += 1;
            if rounds > self.count() || budget.spent() {
                return Ok(None);
            }
        }
    }

    /// Takes the descriptor of `seg`, whose bit we just set. `None` if the
    /// descriptor is owned after all (the index lagged): the bit stays set,
    /// which is right for an owned segment.
    #[inline(always)]
    fn start_writing(&self, seg: usize, me: Owner, generation: u32) -> Option<Lease> {
        let d = &self.descs[seg];
        // Relaxed: the bitmap CAS acquired the release that freed it; a
        // stale value only makes the CAS below fail.
        // The claim CAS below writes the line a consumer wrote last.
        prefetch_write(&d.state);
        let st = d.state.load(Ordering::Relaxed);
        if !phase::is_free(phase_of(st)) {
            return None;
        }
        // The last end's record, made here if its releaser (or aborter) has
        // not (yet, or ever: killed), before this claim can end in turn.
        self.settle_record(d, st);
        let epoch = epoch_of(st).wrapping_add(1);
        let writing = pack(epoch, Some(me), phase::WRITING);
        // AcqRel: Acquire pairs with `finish`'s Release (O2: the previous
        // owner's accesses happen-before ours, whichever way we found the
        // segment); Release gives recoverers and consumers this epoch's owner.
        d.state
            .compare_exchange(st, writing, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        // Relaxed: consumers read it after the commit's Release slot CAS.
        d.generation.store(generation, Ordering::Relaxed);
        Some(Lease {
            seg,
            generation,
            owner: me,
            state: writing,
        })
    }

    /// Publishes a written unit of `len` bytes; returns its ticket.
    ///
    /// On `Shutdown` or `Stale` (a `reset` since `begin`, or the lease was
    /// taken back) the segment goes back to the pool and nothing is
    /// published.
    #[inline]
    pub fn commit(&self, lease: Lease, len: usize) -> Result<u64> {
        debug_assert!(len <= self.segment_size);
        if self.is_shutdown() {
            return Err(self.refuse(lease, Error::Shutdown));
        }
        if lease.generation != self.generation() {
            return Err(self.refuse(lease, Error::Stale));
        }
        let d = &self.descs[lease.seg];
        // Relaxed: only a recoverer that took us for dead changes our
        // descriptor; this spares the consumer a stale slot in that case.
        if d.state.load(Ordering::Relaxed) != lease.state() {
            return Err(self.taken_back(lease.owner));
        }
        // Our liveness lock is gone if our entry was recovered: stop here
        // rather than publish from a process the others think dead.
        self.check_alive(lease.owner)?;
        // Relaxed: published by the Release of the slot CAS in `Ring::push`.
        d.len.store(len as u64, Ordering::Relaxed);
        let (ticket, flagged) = match self.ring.push(lease.seg, lease.epoch()) {
            Ok(pushed) => pushed,
            // A corrupt ring: nothing was published, the segment is ours.
            Err(e) => return Err(self.refuse(lease, e)),
        };
        if flagged {
            notify(&self.hdr.data);
        }
        Ok(ticket)
    }

    /// A commit that cannot publish: the segment goes back, `why` is said.
    #[cold]
    #[inline(never)]
    fn refuse(&self, lease: Lease, why: Error) -> Error {
        self.abort(lease);
        why
    }

    /// A commit whose descriptor is no longer ours: `WitnessLost` if we
    /// were taken for dead, `Stale` otherwise.
    #[cold]
    #[inline(never)]
    fn taken_back(&self, owner: Owner) -> Error {
        match self.check_alive(owner) {
            Err(e) => e,
            Ok(()) => Error::Stale,
        }
    }

    /// Gives a claimed, uncommitted segment back. Returns false if the lease
    /// was stale (the segment was reset or recovered meanwhile).
    pub fn abort(&self, lease: Lease) -> bool {
        self.finish(lease.seg, lease.state(), false)
    }
}
