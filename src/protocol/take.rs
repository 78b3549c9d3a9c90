//! The consumer's room: take the next unit (`take`), give its segment back
//! (`release`), and count each release exactly once (the reclaim record).

use super::control::Control;
use super::unit::Taken;
use super::wait::{Budget, Side, Wait, notify};
use crate::error::{Error, Result};
use crate::layout::{Owner, RECLAIM_EPOCH_BITS, SegmentDesc, epoch_of, pack, phase, phase_of};
use crate::ring::{Peeked, SLOT_EPOCH_MASK};
use crate::sync::{Ordering, prefetch_write};
use std::time::Instant;

impl Control<'_> {
    /// Takes the next unit of this generation without waiting.
    /// `Ok(None)`: nothing published. `Err(Shutdown)`: nothing published and
    /// the pool is shut down (units published before shutdown still come out).
    #[inline(always)]
    pub fn try_take(&self, me: Owner) -> Result<Option<Taken>> {
        match self.take_first(me) {
            Some(taken) => taken.map(Some),
            None => self.try_take_again(me),
        }
    }

    /// The whole of `try_take`, for when its first try did not do.
    #[cold]
    #[inline(never)]
    fn try_take_again(&self, me: Owner) -> Result<Option<Taken>> {
        self.try_take_until(me, None)
    }

    /// The common case of a take in straight-line code, small enough to
    /// inline into an endpoint: we are alive, the head slot holds a unit,
    /// its descriptor CAS wins, and the unit is sound and of this
    /// generation. `None` sends the caller to `try_take_until`, which takes
    /// the same steps in its loops and sorts out every other case: nothing
    /// was changed, or a unit claimed before a `reset` was released, as the
    /// loop does with it. `Some(Err)`: a unit whose descriptor a peer
    /// garbled (released, as the loop does).
    #[inline(always)]
    pub fn take_first(&self, me: Owner) -> Option<Result<Taken>> {
        self.check_alive(me).ok()?;
        let p = self.ring.peek_first()?;
        let d = self.descs.get(p.seg)?;
        // The descriptor CAS writes the line its publisher wrote last.
        prefetch_write(&d.state);
        let t = self.take_desc(me, d, &p).ok()??;
        self.ring.consume(&p);
        if !self.sound(&t) {
            return Some(Err(self.unsound(&t)));
        }
        if t.generation != self.generation() {
            // Claimed before a reset: never delivered.
            self.release(&t);
            return None;
        }
        Some(Ok(t))
    }

    #[inline(always)]
    pub(crate) fn try_take_until(
        &self,
        me: Owner,
        deadline: Option<Instant>,
    ) -> Result<Option<Taken>> {
        // A consumer the others took for dead must not hold new units.
        self.check_alive(me)?;
        // Bounded: honestly at most `count` stale units are queued; a peer
        // that feeds more only gets this attempt reported empty, at the
        // latest when the caller's deadline passes.
        let mut budget = Budget::new(deadline);
        let mut rounds = 0;
        loop {
            match self.pop_before(me, None, &mut budget)? {
                None if self.is_shutdown() => return Err(Error::Shutdown),
                None => return Ok(None),
                Some(t) if t.generation != self.generation() => {
                    // Claimed before a reset: never delivered.
                    self.release(&t);
                }
                Some(t) => return Ok(Some(t)),
            }
            // Only a retry pays for the bookkeeping: `count + 1` rounds.
            rounds += 1;
            if rounds > self.count() || budget.spent() {
                return Ok(None);
            }
        }
    }

    /// Takes the next unit, waiting as `wait` allows.
    pub fn take(&self, me: Owner, wait: &Wait<'_>) -> Result<Taken> {
        self.wait_for(Side::Data, me, wait, || {
            self.try_take_until(me, wait.deadline)
        })
    }

    /// Takes the descriptor of the next ticket below `end` (WRITING or
    /// PUBLISHED -> HELD(me)), then empties its slot. Slots whose claim is
    /// gone (stale) are emptied and stepped over.
    #[inline(always)]
    pub(super) fn pop_before(
        &self,
        me: Owner,
        end: Option<u64>,
        budget: &mut Budget,
    ) -> Result<Option<Taken>> {
        // Honest rings hold at most `count` stale slots.
        let mut rounds = 0;
        loop {
            let Some(p) = self.ring.peek(end)? else {
                return Ok(None);
            };
            let Some(d) = self.descs.get(p.seg) else {
                return Err(Error::corrupt(format_args!(
                    "ticket {} names segment {} of {}",
                    p.ticket,
                    p.seg,
                    self.count()
                )));
            };
            if let Some(t) = self.take_desc(me, d, &p)? {
                self.ring.consume(&p);
                return self.checked(t).map(Some);
            }
            // Stale: its claim was taken by another consumer that has not
            // emptied the slot yet, or left by a consumer that died there.
            self.ring.consume(&p);
            // `2 * count + 1` rounds in all.
            rounds += 1;
            if rounds > 2 * self.count() {
                return Err(Error::corrupt(format_args!(
                    "the publish ring holds more stale tickets than segments"
                )));
            }
            if budget.spent() {
                return Ok(None);
            }
        }
    }

    /// The descriptor CAS of a take; `None` if the slot is stale.
    #[inline(always)]
    fn take_desc(&self, me: Owner, d: &SegmentDesc, p: &Peeked) -> Result<Option<Taken>> {
        // Relaxed: `peek` acquired the slot (O1), so the publisher's claim
        // and everything it wrote before its slot CAS is visible.
        let mut st = d.state.load(Ordering::Relaxed);
        // Only a lost CAS counts: the first try pays for no bookkeeping.
        let mut lost = 0;
        while lost < 64 {
            let ph = phase_of(st);
            let live = (ph == phase::WRITING || ph == phase::PUBLISHED)
                && epoch_of(st) & SLOT_EPOCH_MASK == p.epoch;
            #[cfg(segpool_mutant = "stale_slot_taken")] // loom-tests mutant: no epoch check
            let live = ph == phase::WRITING || ph == phase::PUBLISHED;
            if !live {
                return Ok(None);
            }
            let epoch = epoch_of(st);
            // Relaxed: the payload is ordered by O1; a recoverer's CAS only
            // changes who is accountable.
            match d.state.compare_exchange(
                st,
                pack(epoch, Some(me), phase::HELD),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Some(Taken {
                        ticket: p.ticket,
                        seg: p.seg,
                        epoch,
                        // Relaxed: as for the state load above.
                        len: d.len.load(Ordering::Relaxed) as usize,
                        generation: d.generation.load(Ordering::Relaxed),
                        owner: me,
                    }));
                }
                Err(now) => st = now,
            }
            lost += 1;
        }
        Err(Error::corrupt(format_args!(
            "segment {}'s descriptor never settles",
            p.seg
        )))
    }

    /// Bounds-checks what a peer wrote in a taken unit's descriptor.
    #[inline(always)]
    fn checked(&self, t: Taken) -> Result<Taken> {
        if self.sound(&t) {
            return Ok(t);
        }
        Err(self.unsound(&t))
    }

    /// Whether the span a peer wrote in `t`'s descriptor fits the segment.
    #[inline(always)]
    fn sound(&self, t: &Taken) -> bool {
        t.len <= self.segment_size && (t.len as u64) < (1 << 63)
    }

    /// Releases a taken unit that is not [`sound`](Self::sound) and says why.
    #[cold]
    #[inline(never)]
    fn unsound(&self, t: &Taken) -> Error {
        self.release(t);
        Error::corrupt(format_args!(
            "ticket {} claims {} bytes in a {}-byte segment",
            t.ticket, t.len, self.segment_size
        ))
    }

    /// Returns a taken unit's segment to the pool (its last view dropped).
    /// Returns false, and does nothing, for a stale unit.
    #[inline]
    pub fn release(&self, t: &Taken) -> bool {
        self.finish(t.seg, pack(t.epoch, Some(t.owner), phase::HELD), true)
    }

    /// Moves `seg` from exactly `from` to FREE and frees its bit, waking
    /// sleeping producers if one flagged the bitmap.
    #[inline(always)]
    pub(super) fn finish(&self, seg: usize, from: u64, counted: bool) -> bool {
        let Some(d) = self.descs.get(seg) else {
            return false;
        };
        #[cfg(not(segpool_mutant = "relaxed_release"))]
        let order = Ordering::Release;
        #[cfg(segpool_mutant = "relaxed_release")] // loom-tests mutant
        let order = Ordering::Relaxed;
        // Release pairs with the claim CAS's Acquire (O2): everything this
        // owner did with the bytes happens-before the next owner's access.
        let to = if counted {
            phase::RECLAIMED
        } else {
            phase::FREE
        };
        if d.state
            .compare_exchange(
                from,
                pack(epoch_of(from), None, to),
                order,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // Before the bit is freed, so a producer that finds the segment
        // through the bitmap sees the record (loom model m6); one that finds
        // it another way settles it itself (`start_writing`).
        if counted {
            self.count_reclaim(d, epoch_of(from));
        } else {
            self.record(d, epoch_of(from), 0);
        }
        if self.bitmap.release(seg) {
            // One wake-up for every sleeper: the other words' flags go too.
            self.bitmap.disarm();
            notify(&self.hdr.space);
        }
        true
    }

    /// Units whose segments came back so far: the sum of the segments'
    /// counts. Monotonic across calls (each count only grows).
    pub fn reclaimed(&self) -> u64 {
        // Acquire pairs with `count_reclaim`'s Release CAS (O7): a monitor
        // that sees a count sees the segment free.
        self.reclaimed_with(Ordering::Acquire)
    }

    fn reclaimed_with(&self, order: Ordering) -> u64 {
        self.descs
            .iter()
            .map(|d| d.reclaims.load(order) >> RECLAIM_EPOCH_BITS)
            .fold(0u64, u64::wrapping_add)
    }

    /// Counts the release that made `d` RECLAIMED at `epoch`, unless it is
    /// counted already (by us, by the releaser, or by anyone who saw the
    /// same RECLAIMED state). The CAS only moves the recorded epoch
    /// forward, so a late call for an older epoch counts nothing.
    #[inline]
    pub(super) fn count_reclaim(&self, d: &SegmentDesc, epoch: u64) {
        self.record(d, epoch, 1);
    }

    /// Brings the reclaim record of `d` up to `st`, the free state a claim
    /// is about to leave: counts a RECLAIMED state's release, and moves the
    /// record past a FREE state (an uncounted end: abort, `Stale`,
    /// recovery of a writer) without counting.
    ///
    /// Claimers settle *before* their claim CAS and uncounted ends settle
    /// right after theirs, so the record trails the descriptor's epoch by
    /// at most the claim in progress: the 24 epoch bits it keeps can never
    /// fall 2^23 claims behind, however many claims end uncounted. Only a
    /// caller stalled between its load and its CAS while its segment goes
    /// through 2^23 more claims could count twice.
    #[inline]
    pub(super) fn settle_record(&self, d: &SegmentDesc, st: u64) {
        match phase_of(st) {
            phase::RECLAIMED => self.record(d, epoch_of(st), 1),
            phase::FREE => self.record(d, epoch_of(st), 0),
            _ => {}
        }
    }

    /// Moves `d`'s reclaim record to `epoch`, adding `count`, if `epoch` is
    /// ahead of what it records.
    #[inline]
    pub(super) fn record(&self, d: &SegmentDesc, epoch: u64, count: u64) {
        const MASK: u64 = (1 << RECLAIM_EPOCH_BITS) - 1;
        let mut cur = d.reclaims.load(Ordering::Relaxed);
        // Bounded: only a peer rewriting the word forever makes it fail
        // 64 times. Only a lost CAS counts, so the first try pays nothing.
        let mut lost = 0;
        while lost < 64 {
            let ahead = (epoch.wrapping_sub(cur)) & MASK;
            if ahead == 0 || ahead > MASK / 2 {
                return; // recorded, or a newer end is recorded already
            }
            let next = ((cur >> RECLAIM_EPOCH_BITS).wrapping_add(count) << RECLAIM_EPOCH_BITS)
                | (epoch & MASK);
            // Release pairs with the Acquire loads in `reclaimed` (O7).
            match d
                .reclaims
                .compare_exchange(cur, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
            lost += 1;
        }
    }
}
