//! The pool protocol: every state change of a segment, and every wait.
//!
//! This is the one place the protocol lives. It works on a [`Control`], a
//! set of references into a control block, and knows nothing of where that
//! block is (a shared mapping, or the heap under loom and in property tests)
//! nor of payload bytes: callers move bytes, this module moves ownership.
//!
//! # A segment's life
//! ```text
//!            begin (bitmap CAS 0->1)          commit (state CAS + ring CAS)
//!   FREE ---------------------------> WRITING --------------------------> PUBLISHED
//!    ^  ^                                |                                     |
//!    |  +------ abort / drop / recover --+                        take (ring CAS,
//!    |                                                              state CAS)
//!    +------------ release: last view dropped (state CAS, bitmap clear) --- HELD
//! ```
//! Each arrow is a compare-and-swap from `(epoch, phase)` on the segment's
//! descriptor; `begin` starts a new epoch. A handle remembers its epoch, so a
//! stale handle can never move a segment it no longer owns.
//!
//! # Futex words
//! `space` (producers wait for a free segment) and `data` (consumers wait for
//! a published unit) share one format:
//! ```text
//!  31                 16 15                 0
//! +---------------------+-------------------+
//! | sequence (wrapping) | waiters           |
//! +---------------------+-------------------+
//! ```
//! A waiter announces itself with `fetch_add(WAITER)`, re-checks its
//! condition, then sleeps on the value it just produced. A waker changes the
//! condition, then `fetch_add(SEQ)`, and calls `FUTEX_WAKE` only if the value
//! it replaced counted a waiter. Both ends are read-modify-writes of one
//! word, so the word's modification order decides every race without
//! `SeqCst` (which loom cannot model): either the waker's RMW comes first and
//! the waiter's Acquire RMW sees the new condition, or the waiter's comes
//! first and the waker sees it counted and wakes it (the changed word makes a
//! late `FUTEX_WAIT` return at once). When nobody sleeps, no syscall is made.
//!
//! # Invariants (see `docs/protocol.md` for the loom model of each)
//! 1. Exclusivity: a segment is claimed only by the bitmap CAS that sets its
//!    bit; the bit is cleared only after the descriptor left the phase its
//!    owner held ([`Control::abort`], [`Control::release`]).
//! 2. No lost wake-up: every wait goes through [`Control::wait_for`], every
//!    condition change through `notify`.
//! 3. `reclaimed <= published`: a unit is reclaimed only after it was taken,
//!    and taking a ticket first moves `tail` past it.
//! 4. Order: consumers take tickets in order from the ring ([`crate::ring`]).
//! 5. Timeouts and shutdown: waits end at their deadline, and the sticky
//!    shutdown flag is checked by every attempt after the announce.
//! 6. Generations: a unit claimed before a `reset` is never delivered after it.

use crate::bitmap::Bitmap;
use crate::error::{Error, Result};
use crate::layout::{Header, Layout, SHUT_DOWN, SegmentDesc, epoch_of, pack, phase, phase_of};
use crate::ring::Ring;
use crate::sync::{AtomicU64, Backoff, FutexWord, Ordering, Wake};
use std::time::{Duration, Instant};

/// One waiter in a futex word's low half.
const WAITER: u32 = 1;
/// Mask of the waiter count.
const WAITERS: u32 = 0xffff;
/// One step of the sequence in the high half.
#[cfg_attr(segpool_mutant = "notify_load", allow(dead_code))]
const SEQ: u32 = 1 << 16;
/// `FUTEX_WAKE` count that means "everyone".
const ALL: u32 = i32::MAX as u32;

#[inline]
fn has_waiters(word: u32) -> bool {
    word & WAITERS != 0
}

/// Waiters counted in a futex word.
#[inline]
pub fn waiters(word: u32) -> u32 {
    word & WAITERS
}

/// Ownership of a segment being written: what `begin` hands out.
#[derive(Debug, PartialEq, Eq)]
pub struct Lease {
    /// Segment index (< count).
    pub seg: usize,
    /// Epoch of this claim.
    pub epoch: u64,
    /// Generation the claim belongs to.
    pub generation: u32,
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
}

/// How long and how a blocking call may wait.
#[derive(Clone, Copy)]
pub struct Wait<'p> {
    /// When to give up; `None` waits until the condition or shutdown.
    pub deadline: Option<Instant>,
    /// The timeout the deadline came from, for the error message.
    pub timeout: Duration,
    /// A liveness check run between futex sleeps (see `probe_every`): its
    /// error ends the wait. Used to notice a dead peer.
    pub probe: Option<&'p (dyn Fn() -> Result<()> + Sync)>,
    /// Longest single sleep when a probe is set.
    pub probe_every: Duration,
    /// Spin (with `Backoff`) before sleeping; `false` sleeps on the futex
    /// after one failed attempt (lower CPU, higher latency).
    pub spin: bool,
}

impl Wait<'_> {
    /// Waits up to `timeout` (None: forever), without a probe.
    pub fn timeout(timeout: Option<Duration>) -> Wait<'static> {
        let now = Instant::now();
        Wait {
            deadline: timeout.and_then(|t| now.checked_add(t)),
            timeout: timeout.unwrap_or(Duration::MAX),
            probe: None,
            probe_every: Duration::from_millis(50),
            spin: true,
        }
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
}

/// References to one control block. Cheap to copy; all methods take `&self`.
#[derive(Clone, Copy, Debug)]
pub struct Control<'a> {
    hdr: &'a Header,
    bitmap: Bitmap<'a>,
    descs: &'a [SegmentDesc],
    ring: Ring<'a>,
    segment_size: usize,
}

impl<'a> Control<'a> {
    /// A control over the given parts, which must match `layout`
    /// (`bitmap_words()` words, `count` descriptors, `ring_capacity` slots).
    pub fn new(
        hdr: &'a Header,
        bitmap: &'a [AtomicU64],
        descs: &'a [SegmentDesc],
        ring: &'a [AtomicU64],
        layout: &Layout,
    ) -> Self {
        assert_eq!(bitmap.len(), layout.bitmap_words());
        assert_eq!(descs.len(), layout.count);
        assert_eq!(ring.len(), layout.ring_capacity);
        Control {
            hdr,
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
            d.state.store(pack(0, phase::FREE), Ordering::Relaxed);
            d.len.store(0, Ordering::Relaxed);
        }
        self.hdr.reclaimed.store(0, Ordering::Relaxed);
        self.hdr.space.store(0, Ordering::Relaxed);
        self.hdr.data.store(0, Ordering::Relaxed);
        self.hdr.life.shutdown.store(0, Ordering::Relaxed);
        self.hdr.life.generation.store(0, Ordering::Relaxed);
    }

    /// Number of segments.
    pub fn count(&self) -> usize {
        self.descs.len()
    }

    /// Units published so far.
    pub fn published(&self) -> u64 {
        self.ring.published()
    }

    /// Units whose segments came back so far.
    pub fn reclaimed(&self) -> u64 {
        // Acquire pairs with the Release increment in `release`.
        self.hdr.reclaimed.load(Ordering::Acquire)
    }

    /// Whether `shutdown` ran (sticky).
    pub fn is_shutdown(&self) -> bool {
        // Acquire pairs with the Release store in `shutdown`.
        self.hdr.life.shutdown.load(Ordering::Acquire) == SHUT_DOWN
    }

    /// The current generation.
    pub fn generation(&self) -> u32 {
        self.hdr.life.generation.load(Ordering::Acquire)
    }

    // ----- producer side ---------------------------------------------------

    /// Claims a free segment for writing, without waiting.
    /// `Ok(None)`: none free. `Err(Shutdown)` after `shutdown`.
    #[inline]
    pub fn try_begin(&self, pid: u32) -> Result<Option<Lease>> {
        self.try_begin_in(pid, self.generation())
    }

    /// Claims a free segment, waiting for one as `wait` allows. The lease
    /// belongs to the generation current when `begin` was *called*: a
    /// producer that waited across a `reset` gets `Stale` at commit rather
    /// than slipping a unit of the old pass into the new one.
    pub fn begin(&self, pid: u32, wait: &Wait<'_>) -> Result<Lease> {
        let generation = self.generation();
        self.wait_for(&self.hdr.space, wait, || self.try_begin_in(pid, generation))
    }

    fn try_begin_in(&self, pid: u32, generation: u32) -> Result<Option<Lease>> {
        if self.is_shutdown() {
            return Err(Error::Shutdown);
        }
        Ok(self
            .bitmap
            .try_claim()
            .map(|seg| self.start_writing(seg, pid, generation)))
    }

    fn start_writing(&self, seg: usize, pid: u32, generation: u32) -> Lease {
        let d = &self.descs[seg];
        d.owner.store(pid, Ordering::Relaxed);
        d.generation.store(generation, Ordering::Relaxed);
        // Relaxed: we own the bit, so only stale handles race with us here,
        // and their compare-and-swaps fail against any new epoch. Consumers
        // see these fields through the Release of `commit`.
        let epoch = epoch_of(d.state.load(Ordering::Relaxed)).wrapping_add(1) & (u64::MAX >> 2);
        // Release pairs with the Acquire state load in `recover`: whoever
        // sees this epoch's WRITING sees this epoch's owner.
        d.state
            .store(pack(epoch, phase::WRITING), Ordering::Release);
        Lease {
            seg,
            epoch,
            generation,
        }
    }

    /// Publishes a written unit of `len` bytes; returns its ticket.
    ///
    /// On `Shutdown` or `Stale` (a `reset` since `begin`) the segment goes
    /// back to the pool and nothing is published.
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
        if d.state
            .compare_exchange(
                pack(lease.epoch, phase::WRITING),
                pack(lease.epoch, phase::PUBLISHED),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            // Recovered by someone else: the segment is no longer ours.
            return Err(Error::Stale);
        }
        // After the CAS: a stale lease must not overwrite the len of the
        // segment's next owner. Relaxed: the consumer reads it after its
        // Acquire of the ring slot, which the Release CAS in `Ring::push`
        // publishes.
        d.len.store(len as u64, Ordering::Relaxed);
        match self.ring.push(lease.seg) {
            Ok(ticket) => {
                notify(&self.hdr.data, 1);
                Ok(ticket)
            }
            Err(e) => {
                self.finish(lease.seg, lease.epoch, phase::PUBLISHED, false);
                Err(e)
            }
        }
    }

    /// Gives a claimed, uncommitted segment back. Returns false if the lease
    /// was stale (the segment was reset or recovered meanwhile).
    pub fn abort(&self, lease: Lease) -> bool {
        self.finish(lease.seg, lease.epoch, phase::WRITING, false)
    }

    // ----- consumer side ---------------------------------------------------

    /// Takes the next unit of this generation without waiting.
    /// `Ok(None)`: nothing published. `Err(Shutdown)`: nothing published and
    /// the pool is shut down (units published before shutdown still come out).
    #[inline]
    pub fn try_take(&self) -> Result<Option<Taken>> {
        // Bounded: honestly at most `count` stale units are queued; a peer
        // that feeds more only gets this attempt reported empty.
        for _ in 0..=self.count() {
            match self.pop()? {
                None if self.is_shutdown() => return Err(Error::Shutdown),
                None => return Ok(None),
                Some(t) if t.generation != self.generation() => {
                    // Claimed before a reset: never delivered.
                    self.release(t.seg, t.epoch);
                }
                Some(t) => return Ok(Some(t)),
            }
        }
        Ok(None)
    }

    /// Takes the next unit, waiting as `wait` allows.
    pub fn take(&self, wait: &Wait<'_>) -> Result<Taken> {
        self.wait_for(&self.hdr.data, wait, || self.try_take())
    }

    /// Pops the next ticket and moves its segment PUBLISHED -> HELD.
    fn pop(&self) -> Result<Option<Taken>> {
        self.pop_before(None)
    }

    /// [`pop`](Self::pop), only for tickets below `end` when given.
    fn pop_before(&self, end: Option<u64>) -> Result<Option<Taken>> {
        let Some((ticket, seg)) = self.ring.pop(end)? else {
            return Ok(None);
        };
        let Some(d) = self.descs.get(seg) else {
            return Err(Error::Corrupt(format!(
                "ticket {ticket} names segment {seg} of {}",
                self.count()
            )));
        };
        // Relaxed: the slot CAS in `Ring::pop` acquired the publisher's
        // push, so its PUBLISHED state, len, generation and bytes already
        // happen-before this load.
        let state = d.state.load(Ordering::Relaxed);
        let epoch = epoch_of(state);
        if phase_of(state) != phase::PUBLISHED
            || d.state
                .compare_exchange(
                    state,
                    pack(epoch, phase::HELD),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return Err(Error::Corrupt(format!(
                "ticket {ticket} names segment {seg}, which is not in the published phase"
            )));
        }
        let len = d.len.load(Ordering::Relaxed);
        let generation = d.generation.load(Ordering::Relaxed);
        match usize::try_from(len) {
            Ok(len) if len <= self.segment_size => Ok(Some(Taken {
                ticket,
                seg,
                epoch,
                len,
                generation,
            })),
            _ => {
                self.release(seg, epoch);
                Err(Error::Corrupt(format!(
                    "ticket {ticket} claims {len} bytes in a {}-byte segment",
                    self.segment_size
                )))
            }
        }
    }

    /// Returns a taken unit's segment to the pool (its last view dropped).
    /// Returns false, and does nothing, for a stale `(seg, epoch)`.
    #[inline]
    pub fn release(&self, seg: usize, epoch: u64) -> bool {
        self.finish(seg, epoch, phase::HELD, true)
    }

    /// Moves `seg` from `(epoch, from)` to FREE and frees its bit.
    fn finish(&self, seg: usize, epoch: u64, from: u64, counted: bool) -> bool {
        let Some(d) = self.descs.get(seg) else {
            return false;
        };
        // Relaxed: atomicity is all this CAS needs; the bytes are ordered by
        // the bitmap's Release below.
        if d.state
            .compare_exchange(
                pack(epoch, from),
                pack(epoch, phase::FREE),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        if counted {
            // Release pairs with the Acquire in `reclaimed` (a monitor that
            // sees the count sees the FREE state). Incremented before the bit
            // is freed, so the producer that gets the segment sees the count
            // through the bitmap's Release/Acquire (loom model m6).
            self.hdr.reclaimed.fetch_add(1, Ordering::Release);
        }
        self.bitmap.release(seg);
        notify(&self.hdr.space, 1);
        true
    }

    // ----- lifecycle ---------------------------------------------------------

    /// Sets the sticky shutdown flag and wakes every waiter on both words.
    pub fn shutdown(&self) {
        // Release pairs with the Acquire in `is_shutdown`, which every
        // attempt runs after its announce on the word `notify` bumps.
        self.hdr.life.shutdown.store(SHUT_DOWN, Ordering::Release);
        notify(&self.hdr.space, ALL);
        notify(&self.hdr.data, ALL);
    }

    /// Starts a new generation: units published and not yet taken are
    /// dropped, units being written will fail to commit with `Stale`, and
    /// views still held keep their segments until they drop. Returns the
    /// number of queued units dropped. Consumer side, between iterations.
    pub fn reset(&self) -> Result<u64> {
        // Tickets below `end` were claimed before the bump (O4: each claim
        // happens-before the tail advance this Acquire load reads), so all
        // are of an old generation. Later tickets may be of the new one and
        // must not be drained: `try_take` drops the old ones among them.
        let end = self.ring.published();
        self.hdr.life.generation.fetch_add(1, Ordering::AcqRel);
        let mut dropped = 0;
        // At most `count` units are queued: the bound only stops a peer.
        for _ in 0..self.count() {
            let Some(t) = self.pop_before(Some(end))? else {
                break;
            };
            self.release(t.seg, t.epoch);
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Frees every segment that process `pid` was writing: call it once the
    /// process is known dead. Returns how many segments came back.
    pub fn recover(&self, pid: u32) -> usize {
        let mut n = 0;
        for (seg, d) in self.descs.iter().enumerate() {
            // State first, then owner: Acquire pairs with the Release store
            // in `start_writing`, so the owner read belongs to this epoch (or
            // a later one, and then the CAS in `finish` fails). Read the other
            // way round, a live writer's fresh claim of a segment whose owner
            // field still names `pid` would be freed under it.
            let state = d.state.load(Ordering::Acquire);
            if phase_of(state) == phase::WRITING
                && d.owner.load(Ordering::Relaxed) == pid
                && self.finish(seg, epoch_of(state), phase::WRITING, false)
            {
                n += 1;
            }
        }
        n
    }

    /// A snapshot for monitoring.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            reclaimed: self.reclaimed(),
            published: self.published(),
            generation: self.generation(),
            shutdown: self.is_shutdown(),
            waiting_producers: waiters(self.hdr.space.load(Ordering::Relaxed)),
            waiting_consumers: waiters(self.hdr.data.load(Ordering::Relaxed)),
            ..Stats::default()
        };
        for (seg, d) in self.descs.iter().enumerate() {
            if !self.bitmap.is_owned(seg) {
                s.free += 1;
                continue;
            }
            match phase_of(d.state.load(Ordering::Relaxed)) {
                phase::WRITING => s.writing += 1,
                phase::PUBLISHED => s.queued += 1,
                phase::HELD => s.held += 1,
                _ => {} // between a claim and its descriptor store, or a release
            }
        }
        s
    }

    /// Makes every timed wait on this block time out (loom's clock).
    #[cfg(loom)]
    pub fn expire_timers(&self) {
        self.hdr.space.expire_timers();
        self.hdr.data.expire_timers();
    }

    // ----- waiting -------------------------------------------------------------

    /// Runs `attempt` until it yields a value or an error: spinning briefly,
    /// then sleeping on `word` (see the module docs for the handshake).
    fn wait_for<T>(
        &self,
        word: &FutexWord,
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
        // Acquire: if a waker's RMW precedes ours, the condition it changed
        // is visible to the attempt below.
        let mut seen = word
            .fetch_add(WAITER, Ordering::Acquire)
            .wrapping_add(WAITER);
        // Un-announces on every way out, a panicking probe included, so a
        // stale count never makes every later `notify` a syscall.
        let _announced = Announced(word);
        #[cfg(segpool_mutant = "skip_recheck")] // loom-tests mutant: sleep before re-checking
        let _ = word.wait(seen, wait.deadline);
        let outcome = loop {
            match attempt() {
                Ok(None) => {}
                done => break done,
            }
            // Probe only after an attempt failed: a waiter woken for a unit
            // or a segment takes it before a probe error can end its wait
            // (otherwise that wake-up is swallowed and the next sleeper
            // keeps sleeping with the condition true).
            if let Some(probe) = wait.probe {
                if let Err(e) = probe() {
                    break Err(e);
                }
            }
            let (until, last) = match (wait.probe, wait.deadline) {
                (None, d) => (d, true),
                // checked_add: a huge `probe_every` means "no slices".
                (Some(_), d) => match Instant::now().checked_add(wait.probe_every) {
                    Some(slice) if d.is_none_or(|d| slice < d) => (Some(slice), false),
                    _ => (d, true),
                },
            };
            if word.wait(seen, until) == Wake::TimedOut && last {
                // One last look: a wake meant for us may have raced the timer.
                #[cfg(segpool_mutant = "no_final_attempt")] // loom-tests mutant
                break Ok(None);
                #[cfg_attr(segpool_mutant = "no_final_attempt", allow(unreachable_code))]
                break attempt();
            }
            // Acquire: as above, for wakers that came while we slept.
            seen = word.load(Ordering::Acquire);
        };
        match outcome {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Error::Timeout(wait.timeout)),
            Err(e) => Err(e),
        }
    }
}

/// A waiter counted in a futex word; dropping it takes the count back.
struct Announced<'w>(&'w FutexWord);

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        // Relaxed: the count only decides whether wakers make a syscall.
        self.0.fetch_sub(WAITER, Ordering::Relaxed);
    }
}

/// Wakes up to `n` sleepers on `word` after the caller changed their condition.
#[inline]
fn notify(word: &FutexWord, n: u32) {
    // Release pairs with the waiter's Acquire RMW/load of the word: the
    // condition changed before this call is visible to its re-check.
    #[cfg(not(segpool_mutant = "notify_load"))]
    let prev = word.fetch_add(SEQ, Ordering::Release);
    #[cfg(segpool_mutant = "notify_load")] // loom-tests mutant: no sequence bump
    let prev = word.load(Ordering::Relaxed);
    if has_waiters(prev) {
        word.wake(n);
    }
}
