//! The participants' room: join, leave, and the recovery of the dead
//! (their segments back, their committed units delivered), and the scrub
//! that repairs the index after a death between two steps.

use super::control::Control;
use super::wait::notify;
use crate::error::{Error, Result};
use crate::layout::{Owner, epoch_of, pack, part, phase, phase_of};
use crate::ring::SLOT_EPOCH_MASK;
use crate::sync::{Mutex, Ordering};

/// What one recovery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Dead participants whose entries were recovered and freed.
    pub participants: usize,
    /// Segments that came back: uncommitted units of dead writers, and
    /// units dead readers held.
    pub freed: usize,
    /// Committed units of dead writers, left in the ring to be delivered.
    pub delivered: usize,
    /// Index bits set over free descriptors, cleared.
    pub scrubbed: usize,
}

impl std::ops::AddAssign for Recovered {
    fn add_assign(&mut self, o: Recovered) {
        self.participants += o.participants;
        self.freed += o.freed;
        self.delivered += o.delivered;
        self.scrubbed += o.scrubbed;
    }
}

impl Control<'_> {
    /// Claims a participant entry for this process. `try_lock(i)` must take
    /// the process-exclusive liveness witness of entry `i` (an OFD lock on
    /// a mapping, a flag on the heap) and say whether it got it: holding it
    /// is what makes the entry ours, so an entry left ALIVE by a dead
    /// process is recovered here before it is reused.
    ///
    /// A join bumps `roster` and wakes every sleeper, so that their
    /// processes' death watchers start watching the newcomer (`crate::watch`).
    pub fn join(
        &self,
        try_lock: &mut dyn FnMut(usize) -> bool,
        pid: u32,
        token: u64,
        pid_ino: u64,
    ) -> Result<Owner> {
        for (i, p) in self.parts.iter().enumerate() {
            if !try_lock(i) {
                continue;
            }
            // We hold the witness: whoever had this entry is dead.
            let mut st = p.state.load(Ordering::Acquire);
            for _ in 0..4 {
                if part::status(st) == part::ALIVE {
                    self.recover(i, part::incarnation(st));
                    st = p.state.load(Ordering::Acquire);
                    continue;
                }
                // Relaxed: monitors read these after the state's Acquire.
                p.pid.store(pid, Ordering::Relaxed);
                p.token.store(token, Ordering::Relaxed);
                p.pid_ino.store(pid_ino, Ordering::Relaxed);
                p.waiting_space.store(0, Ordering::Relaxed);
                p.waiting_data.store(0, Ordering::Relaxed);
                let inc = part::incarnation(st).wrapping_add(1) & (u64::MAX >> 2);
                // AcqRel: publishes pid and token to monitors; pairs with a
                // recoverer's CAS of the same word.
                match p.state.compare_exchange(
                    st,
                    part::pack(inc, part::ALIVE),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // Release pairs with a watcher's Acquire in `roster`:
                        // whoever sees the bump sees our entry ALIVE.
                        self.hdr.life.roster.fetch_add(1, Ordering::Release);
                        notify(&self.hdr.space);
                        notify(&self.hdr.data);
                        return Ok(Owner::new(i, inc));
                    }
                    Err(now) => st = now,
                }
            }
            return Err(Error::Corrupt(format!(
                "participant entry {i} keeps changing under its lock holder"
            )));
        }
        Err(Error::TooManyParticipants {
            max: self.parts.len(),
        })
    }

    /// Leaves the pool: hands this participant's committed units to the
    /// ring's care, frees anything else it still owns (nothing, when every
    /// lease and view was dropped) and frees its entry. The caller then
    /// drops the liveness witness.
    ///
    /// It acts on `me`'s own incarnation only: if the entry was wrongly
    /// recovered and joined again by another process meanwhile, the
    /// newcomer's segments are not ours to free.
    pub fn leave(&self, me: Owner) -> Recovered {
        let st = self.parts[me.index()].state.load(Ordering::Acquire);
        #[cfg(not(segpool_mutant = "leave_any_incarnation"))]
        if !me.is_entry(st) {
            // Not ours any more: whatever the entry holds now is someone
            // else's (the tag keeps 12 bits of the incarnation, so only
            // 4096 wrongful recoveries and joins in a row could alias).
            return Recovered::default();
        }
        #[cfg(segpool_mutant = "leave_any_incarnation")] // loom-tests mutant: v2's leave
        let _ = me.is_entry(st);
        self.recover(me.index(), part::incarnation(st))
    }

    /// `Err(WitnessLost)` if `me`'s entry is no longer `me`'s: someone
    /// recovered it, which only happens once the kernel dropped our
    /// liveness lock (a descriptor of ours was closed behind our back).
    #[inline]
    pub fn check_alive(&self, me: Owner) -> Result<()> {
        // Relaxed: a monitoring read of a line that only recovery writes;
        // recovery's effects on our segments are seen through their own
        // descriptors' CASes, never through this load.
        let Some(p) = self.parts.get(me.index()) else {
            return Err(Error::WitnessLost);
        };
        let st = p.state.load(Ordering::Relaxed);
        #[cfg(not(segpool_mutant = "alive_unchecked"))]
        if !me.is_entry(st) {
            return Err(Error::WitnessLost);
        }
        #[cfg(segpool_mutant = "alive_unchecked")]
        let _ = st;
        Ok(())
    }

    /// The roster count (joins so far).
    pub fn roster(&self) -> u64 {
        // Acquire pairs with `join`'s Release bump.
        self.hdr.life.roster.load(Ordering::Acquire)
    }

    /// Recovers every dead participant, then scrubs the index. Safe to run
    /// from any process, at any time, by many at once.
    ///
    /// `claim(i)` must take entry `i`'s liveness witness if nobody holds it,
    /// which is to say its process is dead (an OFD lock on a mapping, a flag
    /// on the heap), and say whether it did; it must refuse the caller's own
    /// entry. `unclaim(i)` drops it again. Recovering under the witness is
    /// what makes recovery exclusive: no process can join the entry, and no
    /// other recoverer can recover it, while we do; so a recoverer that was
    /// delayed between reading the entry and recovering it can never touch
    /// the segments of a live process that joined the entry meanwhile.
    ///
    /// A lock of the kernel's is held by an open file *description*, and
    /// every thread that uses the description holds it: two threads of one
    /// process could both "claim" entry `i`, one recover it and free it, a
    /// newcomer join it, and the other then recover the newcomer. So `turn`
    /// must be the one mutex of the caller's description: one thread per
    /// description recovers at a time (loom model m14).
    pub fn recover_dead(
        &self,
        turn: &Mutex<()>,
        claim: &mut dyn FnMut(usize) -> bool,
        unclaim: &mut dyn FnMut(usize),
    ) -> Recovered {
        #[cfg(not(segpool_mutant = "recover_unturned"))]
        let _turn = turn.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(segpool_mutant = "recover_unturned")] // loom-tests mutant
        let _ = turn;
        let mut total = Recovered::default();
        for (i, p) in self.parts.iter().enumerate() {
            if part::status(p.state.load(Ordering::Relaxed)) != part::ALIVE || !claim(i) {
                continue;
            }
            // Acquire pairs with `join`'s CAS: read under the witness, so
            // this is the incarnation of the dead holder, and stays so.
            let st = p.state.load(Ordering::Acquire);
            if part::status(st) == part::ALIVE {
                total += self.recover(i, part::incarnation(st));
            }
            unclaim(i);
        }
        total.scrubbed += self.scrub();
        total
    }

    /// Recovers participant `index` at `incarnation`, which must be dead
    /// and whose witness the caller holds (or be the caller, leaving with
    /// nothing in flight):
    /// - its uncommitted segments (WRITING, not in the ring) come back;
    /// - its committed units (WRITING, in the ring) become PUBLISHED with no
    ///   owner and are still delivered;
    /// - the segments it held as a reader come back (and count as reclaimed);
    /// - its entry is freed.
    ///
    /// Why reading the ring once decides "committed": the owner is dead, so
    /// no slot naming one of its claims is filled after this point; a slot
    /// that names it is emptied only after a consumer moved the descriptor
    /// out of WRITING (take: descriptor first, slot second), and then our
    /// CAS from WRITING fails. So a WRITING descriptor whose claim was not in
    /// the ring when we read it was never committed.
    pub fn recover(&self, index: usize, incarnation: u64) -> Recovered {
        let mut r = Recovered::default();
        let Some(p) = self.parts.get(index) else {
            return r;
        };
        let owner = Owner::new(index, incarnation);
        // Every (segment, slot epoch) the ring holds now: at most `capacity`.
        let mut in_ring: Vec<(usize, u64)> = Vec::new();
        self.ring
            .holds(&mut |seg, epoch| in_ring.push((seg, epoch)));
        in_ring.sort_unstable();
        #[cfg(segpool_mutant = "recover_ignores_ring")] // loom-tests mutant
        in_ring.clear();
        for (seg, d) in self.descs.iter().enumerate() {
            // Acquire pairs with the claim CAS (AcqRel): the owner in this
            // word is the claim's, in the same word as its epoch.
            let st = d.state.load(Ordering::Acquire);
            if !owner.owns(st) {
                continue;
            }
            match phase_of(st) {
                phase::WRITING => {
                    let key = (seg, epoch_of(st) & SLOT_EPOCH_MASK);
                    if in_ring.binary_search(&key).is_ok() {
                        // Relaxed: the payload reaches the consumer through
                        // the publisher's slot CAS (O1), not through us.
                        if d.state
                            .compare_exchange(
                                st,
                                pack(epoch_of(st), None, phase::PUBLISHED),
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                        {
                            r.delivered += 1;
                        }
                    } else if self.finish(seg, st, false) {
                        r.freed += 1;
                    }
                }
                phase::HELD if self.finish(seg, st, true) => r.freed += 1,
                _ => {}
            }
        }
        // Monitoring counts of the dead: nothing wakes on them.
        p.waiting_space.store(0, Ordering::Relaxed);
        p.waiting_data.store(0, Ordering::Relaxed);
        // AcqRel: pairs with `join`'s CAS. Fails if another recoverer or the
        // entry's next claimant got there first, which is as good.
        if p.state
            .compare_exchange(
                part::pack(incarnation, part::ALIVE),
                part::pack(incarnation, part::FREE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            r.participants += 1;
        }
        if r.participants > 0 {
            // A waker killed between the RMW that consumed a sleeper's flag
            // and its `FUTEX_WAKE` left that sleeper asleep with no flag:
            // wake everyone (each re-flags before it sleeps again).
            notify(&self.hdr.space);
            notify(&self.hdr.data);
        }
        // Relaxed: monitoring counters.
        let life = &self.hdr.life;
        life.recovered_participants
            .fetch_add(r.participants as u64, Ordering::Relaxed);
        life.recovered_segments
            .fetch_add(r.freed as u64, Ordering::Relaxed);
        r
    }

    /// Repairs the index from the descriptors: clears bits set over FREE
    /// descriptors (a claimer or releaser died between its two steps).
    /// Returns how many bits it cleared.
    ///
    /// A bit missing over an owned segment is left alone: the next claimer
    /// that sets it finds the descriptor owned and keeps it set
    /// (`start_writing`). Setting it here would race the owner's release
    /// (our descriptor load sees it owned, the release frees it and clears
    /// the bit, then our set lands) and leave a bit over a FREE descriptor
    /// that no producer can claim until the next scrub (loom models m9 and
    /// m10 found that).
    pub fn scrub(&self) -> usize {
        let mut n = 0;
        for (seg, d) in self.descs.iter().enumerate() {
            // Acquire pairs with `finish`'s Release CAS: a claimer that gets
            // the bit we clear sees the previous owner's accesses (through
            // us) as well as through the descriptor.
            let st = d.state.load(Ordering::Acquire);
            // A releaser or aborter killed before it recorded: record for it.
            self.settle_record(d, st);
            let owned = self.bitmap.is_owned(seg);
            if phase::is_free(phase_of(st)) && owned {
                if self.bitmap.release(seg) {
                    self.bitmap.disarm();
                    notify(&self.hdr.space);
                }
                n += 1;
            }
        }
        n
    }
}
