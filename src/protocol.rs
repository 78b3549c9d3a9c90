//! The pool protocol: every state change of a segment and of a participant,
//! and every wait.
//!
//! This is the one place the protocol lives. It works on a [`Control`], a
//! set of references into a control block, and knows nothing of where that
//! block is (a shared mapping, or the heap under loom and in property tests),
//! of how a dead process is noticed (the caller passes a liveness oracle),
//! nor of payload bytes: callers move bytes, this module moves ownership.
//!
//! # Owners
//! Every process that uses a pool first *joins* it: it claims an entry of
//! the participant table ([`Control::join`]) and gets an [`Owner`] tag (the
//! entry and its incarnation). A segment is owned exactly when its
//! descriptor is not FREE, and its state word names the owner in the same
//! atomic word as its phase and epoch, so there is no instant at which a
//! segment is owned and nobody is accountable for it:
//!
//! ```text
//!                claim: bitmap CAS, then               commit: ring slot CAS
//!                descriptor CAS FREE -> WRITING(me)    EMPTY(t) -> FULL(t, s, e)
//!   FREE(e) ----------------------------------> WRITING(me, e+1) ------------.
//!    ^  ^                                          |      (still WRITING: the  |
//!    |  +-------- abort / drop / recover ----------+       slot says committed) |
//!    |           (not in the ring)                                             | take: descriptor CAS
//!    |                                  recover (in the ring)                  | WRITING|PUBLISHED
//!    |                       WRITING(dead) -----------------> PUBLISHED(-)     | -> HELD(me), then
//!    |                                                          |              | slot CAS, head on
//!    +--- release: last view dropped, or recover(dead) --- HELD(me) <----------+
//!         (to RECLAIMED(e): a free phase whose release is counted once)
//! ```
//!
//! The commit is the ring slot's compare-and-swap, made while the
//! descriptor stays WRITING: a consumer takes the descriptor first and
//! empties the slot second. So a dead writer's segment is committed exactly
//! when the ring still holds its `(segment, epoch)` or a consumer took it;
//! recovery reads the ring after the death and decides (see
//! [`Control::recover`]). A dead consumer's segments are HELD under its
//! name and come back.
//!
//! A release (or the recovery of a view) leaves the descriptor RECLAIMED
//! rather than FREE: free to claim, and "this epoch's release is counted
//! in `reclaimed`". The count lives in the descriptor too
//! ([`SegmentDesc::reclaims`]) and is made by a compare-and-swap keyed by
//! the epoch, so the releaser, the next claimer or a scrub can each make it
//! and it happens exactly once, even if the releaser is killed between the
//! two steps.
//!
//! # Futex words and flags
//! `space` (producers sleep for a free segment) and `data` (consumers sleep
//! for a published unit) are plain 32-bit sequences. A sleeper does not
//! count itself in them; it sets a flag in the word its waker must touch
//! anyway, and sleeps on the sequence value it read *before* the flag:
//!
//! | sleeper | flag | the waker's read-modify-write that sees it |
//! |---|---|---|
//! | producer | `WAITER` in every bitmap word ([`Bitmap::arm`]) | the `fetch_and` that frees a segment's bit |
//! | consumer | `WAITER` in the head slot ([`Ring::arm`]) | the publisher's slot CAS |
//!
//! A waker that finds the flag bumps the sequence and wakes every sleeper
//! on it (the flag is one bit for all of them); one that does not makes no
//! further access at all. Flag and wake-up are read-modify-writes of one
//! word, so that word's modification order decides every race without
//! `SeqCst` (which loom cannot model): either the waker's RMW comes first
//! and the sleeper's flag RMW sees the freed bit or filled slot, or the
//! flag comes first and the waker sees it; then the sleeper's sequence read
//! (sequenced before its flag) happens-before the bump, so its
//! `FUTEX_WAIT` returns at once or is woken.
//!
//! A sleeper that dies leaves its flag behind: the next waker makes one
//! spurious `FUTEX_WAKE` and clears it. Nothing counts dead sleepers. The
//! sequence is bumped only for flagged wake-ups, joins, recoveries and
//! shutdown. A wait's `before_sleep` bounds each sleep (the pool's
//! endpoints bound it to 10 s, `crate::watch`), so a sequence that wraps
//! around between a sleeper's read and its `FUTEX_WAIT` costs at most one
//! such sleep; a bare `Wait::timeout(None)` (the models) has no bound.
//!
//! # Invariants (see `docs/protocol.md` for the loom model of each)
//! 1. Exclusivity: a segment is claimed only by the descriptor CAS from
//!    FREE; a bitmap bit only says where to look.
//! 2. No lost wake-up: every wait goes through [`Control::wait_for`]; every
//!    waker reads the flag in the RMW that changes the condition.
//! 3. `reclaimed <= published`: a unit is reclaimed only after it was taken,
//!    and `published` counts taken tickets.
//! 4. Order: consumers take tickets in order from the ring ([`crate::ring`]).
//! 5. Timeouts and shutdown: waits end at their deadline, and the sticky
//!    shutdown flag is checked by every attempt after the flag is set.
//! 6. Generations: a unit claimed before a `reset` is never delivered after it.
//! 7. Accountability: each owned segment names its owner in its state word;
//!    recovery of a dead owner delivers its committed units and frees the
//!    rest, idempotently, and racing recoverers are safe.

use crate::bitmap::Bitmap;
use crate::error::{Error, Result};
use crate::layout::{
    EPOCH_MASK, Header, Layout, Owner, Participant, RECLAIM_EPOCH_BITS, SHUT_DOWN, SegmentDesc,
    epoch_of, owner_of, pack, part, phase, phase_of,
};
use crate::ring::{Peeked, Ring, SLOT_EPOCH_MASK};
use crate::sync::{AtomicU32, AtomicU64, Backoff, FutexWord, Mutex, Ordering, Wake};
use std::time::{Duration, Instant};

/// One step of a futex word's sequence.
const SEQ: u32 = 1;
/// `FUTEX_WAKE` count that means "everyone".
const ALL: u32 = i32::MAX as u32;

/// Ownership of a segment being written: what `begin` hands out.
#[derive(Debug, PartialEq, Eq)]
pub struct Lease {
    /// Segment index (< count).
    pub seg: usize,
    /// Epoch of this claim.
    pub epoch: u64,
    /// Generation the claim belongs to.
    pub generation: u32,
    /// Who claimed it.
    pub owner: Owner,
}

impl Lease {
    /// The name of the unit this lease writes.
    pub fn id(&self) -> UnitId {
        UnitId::new(self.seg, self.epoch)
    }

    fn state(&self) -> u64 {
        pack(self.epoch, Some(self.owner), phase::WRITING)
    }
}

/// The name of one unit: its segment and the epoch of the claim that wrote
/// it. Every claim of a segment has a new epoch, so no two units of a pool
/// share a name (until a segment's 2^41 claims wrap around).
///
/// Opaque: a producer can send it beside the unit (an envelope through
/// another channel), and a consumer takes exactly that unit with
/// [`Reader::recv_id`](crate::Reader::recv_id), whatever order units were
/// committed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnitId(u64);

impl UnitId {
    const SEG_BITS: u32 = 16;

    fn new(seg: usize, epoch: u64) -> UnitId {
        const _: () = assert!(crate::layout::MAX_COUNT <= 1 << UnitId::SEG_BITS);
        UnitId(((epoch & EPOCH_MASK) << Self::SEG_BITS) | seg as u64)
    }

    /// The id as 64 bits (to send it somewhere).
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// An id from [`to_bits`](Self::to_bits). Any value is accepted; one no
    /// unit has simply names nothing.
    pub fn from_bits(bits: u64) -> UnitId {
        UnitId(bits)
    }
}

/// A unit a consumer took: the segment is HELD until [`Control::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Publish ticket (0, 1, 2, ... in publish order).
    pub ticket: u64,
    /// Segment index (bounds-checked).
    pub seg: usize,
    /// Epoch the release must present.
    pub epoch: u64,
    /// Committed span in bytes (bounds-checked against `segment_size`).
    pub len: usize,
    /// Generation it was written in.
    pub generation: u32,
    /// Who holds it.
    pub owner: Owner,
}

/// What a blocked call runs before each sleep: its error ends the wait;
/// its value is the longest the next sleep may last (`None`: until woken
/// or the deadline).
pub type BeforeSleep<'p> = &'p (dyn Fn() -> Result<Option<Duration>> + Sync);

impl Taken {
    /// The name of the unit (the one its writer's lease had).
    pub fn id(&self) -> UnitId {
        UnitId::new(self.seg, self.epoch)
    }
}

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
            interruptible: false,
        }
    }

    /// Whether the deadline has passed.
    #[inline]
    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// A snapshot of the pool's state, for monitoring. Fields are read one by
/// one while the pool runs, so they need not add up exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Units published since creation.
    pub published: u64,
    /// Units whose segments came back since creation.
    pub reclaimed: u64,
    /// Segments free.
    pub free: usize,
    /// Segments being written.
    pub writing: usize,
    /// Segments published and not yet received.
    pub queued: usize,
    /// Segments received and still held by views.
    pub held: usize,
    /// Producers asleep waiting for space.
    pub waiting_producers: u32,
    /// Consumers asleep waiting for data.
    pub waiting_consumers: u32,
    /// Current generation (number of resets).
    pub generation: u32,
    /// Whether `shutdown_arena` was called.
    pub shutdown: bool,
    /// Processes that have the pool open (participant entries in use; a
    /// dead one counts until it is recovered).
    pub participants: usize,
    /// Dead participants recovered since the pool was created.
    pub recovered_participants: u64,
    /// Segments recovery gave back since the pool was created.
    pub recovered_segments: u64,
}

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

/// One participant entry as seen by a monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParticipantView {
    /// Entry index.
    pub index: usize,
    /// Incarnation of the entry.
    pub incarnation: u64,
    /// Pid the process recorded.
    pub pid: u32,
    /// Its random token.
    pub token: u64,
    /// The inode of its pidfd, as it recorded it (0: none).
    pub pid_ino: u64,
    /// Segments its state words name it as owner of.
    pub segments: usize,
    /// Its threads asleep for space / for data.
    pub waiting: (u32, u32),
}

/// Which futex word a wait sleeps on.
#[derive(Clone, Copy)]
enum Side {
    Space,
    Data,
}

/// References to one control block. Cheap to copy; all methods take `&self`.
#[derive(Clone, Copy, Debug)]
pub struct Control<'a> {
    hdr: &'a Header,
    parts: &'a [Participant],
    bitmap: Bitmap<'a>,
    descs: &'a [SegmentDesc],
    ring: Ring<'a>,
    segment_size: usize,
}

impl<'a> Control<'a> {
    /// A control over the given parts, which must match `layout`
    /// (`MAX_PARTICIPANTS` entries, `bitmap_words()` words, `count`
    /// descriptors, `ring_capacity` slots).
    pub fn new(
        hdr: &'a Header,
        parts: &'a [Participant],
        bitmap: &'a [AtomicU64],
        descs: &'a [SegmentDesc],
        ring: &'a [AtomicU64],
        layout: &Layout,
    ) -> Self {
        // Debug only: this runs on every operation, and a mismatch costs
        // no safety (every index below is bounds-checked or masked), only
        // correctness, which the layout's one computation guarantees.
        debug_assert_eq!(parts.len(), crate::layout::MAX_PARTICIPANTS);
        debug_assert_eq!(bitmap.len(), layout.bitmap_words());
        debug_assert_eq!(descs.len(), layout.count);
        debug_assert_eq!(ring.len(), layout.ring_capacity);
        Control {
            hdr,
            parts,
            bitmap: Bitmap::new(bitmap, layout.count),
            descs,
            ring: Ring::new(ring, &hdr.tail, &hdr.head),
            segment_size: layout.segment_size,
        }
    }

    /// Puts a fresh control block in its initial state. Creator only, before
    /// the block is shared.
    pub fn init(&self) {
        self.bitmap.init();
        self.ring.init();
        for d in self.descs {
            d.state.store(pack(0, None, phase::FREE), Ordering::Relaxed);
            d.len.store(0, Ordering::Relaxed);
            d.reclaims.store(0, Ordering::Relaxed);
        }
        for p in self.parts {
            p.state.store(part::pack(0, part::FREE), Ordering::Relaxed);
        }
        self.hdr.space.store(0, Ordering::Relaxed);
        self.hdr.data.store(0, Ordering::Relaxed);
        self.hdr.life.shutdown.store(0, Ordering::Relaxed);
        self.hdr.life.generation.store(0, Ordering::Relaxed);
        self.hdr
            .life
            .recovered_participants
            .store(0, Ordering::Relaxed);
        self.hdr.life.recovered_segments.store(0, Ordering::Relaxed);
    }

    /// Number of segments.
    pub fn count(&self) -> usize {
        self.descs.len()
    }

    /// Units published so far.
    pub fn published(&self) -> u64 {
        self.ring.published()
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
    fn count_reclaim(&self, d: &SegmentDesc, epoch: u64) {
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
    fn settle_record(&self, d: &SegmentDesc, st: u64) {
        match phase_of(st) {
            phase::RECLAIMED => self.record(d, epoch_of(st), 1),
            phase::FREE => self.record(d, epoch_of(st), 0),
            _ => {}
        }
    }

    /// Moves `d`'s reclaim record to `epoch`, adding `count`, if `epoch` is
    /// ahead of what it records.
    fn record(&self, d: &SegmentDesc, epoch: u64, count: u64) {
        const MASK: u64 = (1 << RECLAIM_EPOCH_BITS) - 1;
        let mut cur = d.reclaims.load(Ordering::Relaxed);
        // Bounded: only a peer rewriting the word forever makes it fail
        // 64 times.
        for _ in 0..64 {
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
        }
    }

    /// Whether `shutdown` ran (sticky).
    pub fn is_shutdown(&self) -> bool {
        // Acquire pairs with the Release store in `shutdown` (O8).
        self.hdr.life.shutdown.load(Ordering::Acquire) == SHUT_DOWN
    }

    /// The current generation.
    pub fn generation(&self) -> u32 {
        // Acquire pairs with the AcqRel bump in `reset` (O9).
        self.hdr.life.generation.load(Ordering::Acquire)
    }

    // ----- participants ----------------------------------------------------

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

    /// Monitors' view of the participant entries in use (`Relaxed` loads
    /// only, as [`stats`](Self::stats)).
    pub fn participants(&self) -> Vec<ParticipantView> {
        let mut out: Vec<ParticipantView> = self
            .parts
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                let st = p.state.load(Ordering::Relaxed);
                (part::status(st) == part::ALIVE).then(|| ParticipantView {
                    index,
                    incarnation: part::incarnation(st),
                    pid: p.pid.load(Ordering::Relaxed),
                    token: p.token.load(Ordering::Relaxed),
                    pid_ino: p.pid_ino.load(Ordering::Relaxed),
                    segments: 0,
                    waiting: (
                        p.waiting_space.load(Ordering::Relaxed),
                        p.waiting_data.load(Ordering::Relaxed),
                    ),
                })
            })
            .collect();
        for d in self.descs {
            if let Some(o) = owner_of(d.state.load(Ordering::Relaxed)) {
                if let Some(v) = out
                    .iter_mut()
                    .find(|v| v.index == o.index() && Owner::new(v.index, v.incarnation) == o)
                {
                    v.segments += 1;
                }
            }
        }
        out
    }

    /// The owners of the units being written now (WRITING and not yet in
    /// the ring), one entry per segment: for monitors. Loads only.
    pub fn writers(&self) -> Vec<Owner> {
        let mut in_ring: Vec<(usize, u64)> = Vec::new();
        self.ring
            .holds(&mut |seg, epoch| in_ring.push((seg, epoch)));
        in_ring.sort_unstable();
        self.descs
            .iter()
            .enumerate()
            .filter_map(|(seg, d)| {
                let st = d.state.load(Ordering::Relaxed);
                let key = (seg, epoch_of(st) & SLOT_EPOCH_MASK);
                (phase_of(st) == phase::WRITING && in_ring.binary_search(&key).is_err())
                    .then(|| owner_of(st))
                    .flatten()
            })
            .collect()
    }

    // ----- producer side ---------------------------------------------------

    /// Claims a free segment for writing, without waiting.
    /// `Ok(None)`: none free. `Err(Shutdown)` after `shutdown`.
    #[inline]
    pub fn try_begin(&self, me: Owner) -> Result<Option<Lease>> {
        self.try_begin_in(me, self.generation(), None)
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
        for round in 0..=self.count() {
            if round > 0 && budget.spent() {
                return Ok(None);
            }
            let Some(seg) = self.bitmap.try_claim() else {
                return Ok(None);
            };
            if let Some(lease) = self.start_writing(seg, me, generation) {
                return Ok(Some(lease));
            }
        }
        Ok(None)
    }

    /// Takes the descriptor of `seg`, whose bit we just set. `None` if the
    /// descriptor is owned after all (the index lagged): the bit stays set,
    /// which is right for an owned segment.
    #[inline]
    fn start_writing(&self, seg: usize, me: Owner, generation: u32) -> Option<Lease> {
        let d = &self.descs[seg];
        // Relaxed: the bitmap CAS acquired the release that freed it; a
        // stale value only makes the CAS below fail.
        let st = d.state.load(Ordering::Relaxed);
        if !phase::is_free(phase_of(st)) {
            return None;
        }
        // The last end's record, made here if its releaser (or aborter) has
        // not (yet, or ever: killed), before this claim can end in turn.
        self.settle_record(d, st);
        let epoch = epoch_of(st).wrapping_add(1);
        // AcqRel: Acquire pairs with `finish`'s Release (O2: the previous
        // owner's accesses happen-before ours, whichever way we found the
        // segment); Release gives recoverers and consumers this epoch's owner.
        d.state
            .compare_exchange(
                st,
                pack(epoch, Some(me), phase::WRITING),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        // Relaxed: consumers read it after the commit's Release slot CAS.
        d.generation.store(generation, Ordering::Relaxed);
        Some(Lease {
            seg,
            epoch: epoch & EPOCH_MASK,
            generation,
            owner: me,
        })
    }

    /// Publishes a written unit of `len` bytes; returns its ticket.
    ///
    /// On `Shutdown` or `Stale` (a `reset` since `begin`, or the lease was
    /// taken back) the segment goes back to the pool and nothing is
    /// published.
    pub fn commit(&self, lease: Lease, len: usize) -> Result<u64> {
        debug_assert!(len <= self.segment_size);
        if self.is_shutdown() {
            self.abort(lease);
            return Err(Error::Shutdown);
        }
        if lease.generation != self.generation() {
            self.abort(lease);
            return Err(Error::Stale);
        }
        let d = &self.descs[lease.seg];
        // Relaxed: only a recoverer that took us for dead changes our
        // descriptor; this spares the consumer a stale slot in that case.
        if d.state.load(Ordering::Relaxed) != lease.state() {
            self.check_alive(lease.owner)?;
            return Err(Error::Stale);
        }
        // Our liveness lock is gone if our entry was recovered: stop here
        // rather than publish from a process the others think dead.
        self.check_alive(lease.owner)?;
        // Relaxed: published by the Release of the slot CAS in `Ring::push`.
        d.len.store(len as u64, Ordering::Relaxed);
        let (ticket, flagged) = match self.ring.push(lease.seg, lease.epoch) {
            Ok(pushed) => pushed,
            Err(e) => {
                // A corrupt ring: nothing was published, the segment is ours.
                self.abort(lease);
                return Err(e);
            }
        };
        if flagged {
            notify(&self.hdr.data);
        }
        Ok(ticket)
    }

    /// Gives a claimed, uncommitted segment back. Returns false if the lease
    /// was stale (the segment was reset or recovered meanwhile).
    pub fn abort(&self, lease: Lease) -> bool {
        self.finish(lease.seg, lease.state(), false)
    }

    // ----- consumer side ---------------------------------------------------

    /// Takes the next unit of this generation without waiting.
    /// `Ok(None)`: nothing published. `Err(Shutdown)`: nothing published and
    /// the pool is shut down (units published before shutdown still come out).
    #[inline]
    pub fn try_take(&self, me: Owner) -> Result<Option<Taken>> {
        self.try_take_until(me, None)
    }

    #[inline(always)]
    fn try_take_until(&self, me: Owner, deadline: Option<Instant>) -> Result<Option<Taken>> {
        // A consumer the others took for dead must not hold new units.
        self.check_alive(me)?;
        // Bounded: honestly at most `count` stale units are queued; a peer
        // that feeds more only gets this attempt reported empty, at the
        // latest when the caller's deadline passes.
        let mut budget = Budget::new(deadline);
        for round in 0..=self.count() {
            if round > 0 && budget.spent() {
                return Ok(None);
            }
            match self.pop_before(me, None, &mut budget)? {
                None if self.is_shutdown() => return Err(Error::Shutdown),
                None => return Ok(None),
                Some(t) if t.generation != self.generation() => {
                    // Claimed before a reset: never delivered.
                    self.release(&t);
                }
                Some(t) => return Ok(Some(t)),
            }
        }
        Ok(None)
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
    fn pop_before(
        &self,
        me: Owner,
        end: Option<u64>,
        budget: &mut Budget,
    ) -> Result<Option<Taken>> {
        // Honest rings hold at most `count` stale slots.
        for round in 0..=2 * self.count() {
            if round > 0 && budget.spent() {
                return Ok(None);
            }
            let Some(p) = self.ring.peek(end)? else {
                return Ok(None);
            };
            let Some(d) = self.descs.get(p.seg) else {
                return Err(Error::Corrupt(format!(
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
        }
        Err(Error::Corrupt(
            "the publish ring holds more stale tickets than segments".into(),
        ))
    }

    /// The descriptor CAS of a take; `None` if the slot is stale.
    #[inline]
    fn take_desc(&self, me: Owner, d: &SegmentDesc, p: &Peeked) -> Result<Option<Taken>> {
        // Relaxed: `peek` acquired the slot (O1), so the publisher's claim
        // and everything it wrote before its slot CAS is visible.
        let mut st = d.state.load(Ordering::Relaxed);
        for _ in 0..64 {
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
        }
        Err(Error::Corrupt(format!(
            "segment {}'s descriptor never settles",
            p.seg
        )))
    }

    /// Bounds-checks what a peer wrote in a taken unit's descriptor.
    fn checked(&self, t: Taken) -> Result<Taken> {
        if t.len <= self.segment_size && (t.len as u64) < (1 << 63) {
            return Ok(t);
        }
        self.release(&t);
        Err(Error::Corrupt(format!(
            "ticket {} claims {} bytes in a {}-byte segment",
            t.ticket, t.len, self.segment_size
        )))
    }

    /// Returns a taken unit's segment to the pool (its last view dropped).
    /// Returns false, and does nothing, for a stale unit.
    #[inline]
    pub fn release(&self, t: &Taken) -> bool {
        self.finish(t.seg, pack(t.epoch, Some(t.owner), phase::HELD), true)
    }

    /// Moves `seg` from exactly `from` to FREE and frees its bit, waking
    /// sleeping producers if one flagged the bitmap.
    fn finish(&self, seg: usize, from: u64, counted: bool) -> bool {
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

    // ----- lifecycle ---------------------------------------------------------

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

    /// A snapshot for monitoring. Only `Relaxed` loads, so a read-only
    /// mapping of the control area can be inspected with it (`inspect`).
    pub fn stats(&self) -> Stats {
        let life = &self.hdr.life;
        let (published, head) = self.ring.published_with(Ordering::Relaxed);
        let mut s = Stats {
            published,
            reclaimed: self.reclaimed_with(Ordering::Relaxed),
            generation: life.generation.load(Ordering::Relaxed),
            shutdown: life.shutdown.load(Ordering::Relaxed) == SHUT_DOWN,
            recovered_participants: life.recovered_participants.load(Ordering::Relaxed),
            recovered_segments: life.recovered_segments.load(Ordering::Relaxed),
            ..Stats::default()
        };
        let (mut writing, mut published_phase) = (0, 0);
        for d in self.descs {
            match phase_of(d.state.load(Ordering::Relaxed)) {
                phase::WRITING => writing += 1,
                phase::PUBLISHED => published_phase += 1,
                phase::HELD => s.held += 1,
                _ => s.free += 1,
            }
        }
        // Committed units stay WRITING until taken: the ring says how many.
        let in_ring = published.saturating_sub(head) as usize;
        s.queued = in_ring.min(writing + published_phase);
        s.writing = writing + published_phase - s.queued;
        for p in self.parts {
            if part::status(p.state.load(Ordering::Relaxed)) == part::ALIVE {
                s.participants += 1;
                s.waiting_producers = s
                    .waiting_producers
                    .saturating_add(p.waiting_space.load(Ordering::Relaxed));
                s.waiting_consumers = s
                    .waiting_consumers
                    .saturating_add(p.waiting_data.load(Ordering::Relaxed));
            }
        }
        s
    }

    /// Whether a sleeper's flag is set on each side (space, data): a
    /// snapshot that also shows flags dead sleepers left.
    pub fn flags(&self) -> (bool, bool) {
        (self.bitmap.armed(), self.ring.armed())
    }

    /// Makes every timed wait on this block time out (loom's clock).
    #[cfg(loom)]
    pub fn expire_timers(&self) {
        self.hdr.space.expire_timers();
        self.hdr.data.expire_timers();
    }

    // ----- waiting -------------------------------------------------------------

    /// Runs `attempt` until it yields a value or an error: spinning briefly,
    /// then sleeping on the side's futex word (see the module docs for the
    /// handshake).
    fn wait_for<T>(
        &self,
        side: Side,
        me: Owner,
        wait: &Wait<'_>,
        mut attempt: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let backoff = Backoff::new();
        loop {
            if let Some(v) = attempt()? {
                return Ok(v);
            }
            if !wait.spin || backoff.is_completed() {
                break;
            }
            backoff.snooze();
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
struct Budget {
    deadline: Option<Instant>,
    /// The deadline was computed (from `TRY`) or given.
    fixed: bool,
}

impl Budget {
    /// How long a call that does not wait may retry.
    #[cfg_attr(loom, allow(dead_code))]
    const TRY: Duration = Duration::from_millis(10);

    fn new(deadline: Option<Instant>) -> Budget {
        Budget {
            deadline,
            fixed: deadline.is_some(),
        }
    }

    /// Whether the time is up. Never under loom, which models no clock:
    /// the round counts bound its loops.
    #[cfg(loom)]
    fn spent(&mut self) -> bool {
        false
    }

    /// Whether the time is up.
    #[cfg(not(loom))]
    fn spent(&mut self) -> bool {
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
fn notify(word: &FutexWord) {
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
    use crate::heap::HeapControl;

    /// Finding 6 of the v2 review: nested retry budgets never looked at the
    /// caller's deadline. Three stale slots at the head: a take whose
    /// deadline has passed steps over one and stops, where one without a
    /// deadline steps over all three.
    #[test]
    fn finding_6_a_passed_deadline_stops_a_take_among_stale_slots() {
        let block = HeapControl::new(64, 4).unwrap();
        let ctl = block.control();
        let me = block.join();
        for _ in 0..3 {
            let lease = ctl.try_begin(me).unwrap().unwrap();
            let (seg, epoch) = (lease.seg, lease.epoch);
            ctl.commit(lease, 8).unwrap();
            // What a hostile peer (or a dead consumer) leaves: the slot
            // names a claim the descriptor no longer has.
            ctl.descs[seg]
                .state
                .store(pack(epoch, None, phase::FREE), Ordering::Relaxed);
        }
        let past = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        assert!(ctl.try_take_until(me, Some(past)).unwrap().is_none());
        let left = ctl.ring.published_with(Ordering::Relaxed);
        assert_eq!(
            left,
            (3, 1),
            "one stale slot stepped over, then the deadline"
        );
        assert!(ctl.try_take(me).unwrap().is_none());
        assert_eq!(ctl.ring.published_with(Ordering::Relaxed), (3, 3));
    }

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
