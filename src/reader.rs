//! The consumer side: [`Reader`] and the zero-copy [`Unit`] it hands out.
//!
//! # What a view promises
//! A [`Unit`]'s bytes are the segment's bytes, in place. The protocol keeps
//! the segment out of every writer's reach while any view of it lives (it is
//! HELD until the last clone drops), so correct peers never change bytes you
//! are reading. A buggy or hostile peer with the same mapping can write them
//! anyway: shared memory has no way to forbid that. What segpool guarantees
//! even then is about *its own* behaviour: every index, offset and length it
//! reads from shared memory is checked before use, so a hostile peer can
//! garble payloads but cannot make segpool read out of bounds, panic or hang.
//! Treat payloads from untrusted peers as untrusted input, as you would
//! bytes from a socket.

use crate::error::{Error, Result};
use crate::policy::{Probe, WaitPolicy};
use crate::protocol::{Taken, UnitId};
use crate::region::Region;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A consumer endpoint: receives units in publish order.
#[derive(Clone)]
pub struct Reader {
    region: Arc<Region>,
    policy: WaitPolicy,
    pending: Arc<Pending>,
}

/// Units taken from the ring on the way to one that [`Reader::recv_id`]
/// looked for, kept (holding their segments) for their own `recv_id` or
/// the next `recv`. Shared by the clones of one reader.
struct Pending {
    /// `units.len()`, read without the lock on `recv`'s fast path.
    len: AtomicUsize,
    units: Mutex<VecDeque<Unit>>,
    /// The fork generation it was made in (see `Drop`).
    fork_generation: u64,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            len: AtomicUsize::new(0),
            units: Mutex::default(),
            fork_generation: crate::fork::current(),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if crate::fork::current() != self.fork_generation {
            // Inherited through fork: another thread of the parent may have
            // been changing the queue at the instant of the fork, so it is
            // not walked (its units would free nothing here anyway).
            let units = self.units.get_mut().unwrap_or_else(|e| e.into_inner());
            std::mem::forget(std::mem::take(units));
        }
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Unit>> {
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest pending unit, if any.
    #[inline]
    fn pop(&self) -> Option<Unit> {
        // Relaxed: a hint; the lock orders the units themselves.
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut units = self.lock();
        let u = units.pop_front();
        self.len.store(units.len(), Ordering::Relaxed);
        u
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Reader {
    pub(crate) fn new(region: Arc<Region>) -> Self {
        Reader {
            region,
            policy: WaitPolicy::default(),
            pending: Arc::default(),
        }
    }

    /// Whether `recv` spins briefly before sleeping on the futex (default
    /// `true`). `false` sleeps at once: no CPU burnt while waiting, at the
    /// cost of a wake-up's latency on every wait.
    pub fn spin(mut self, spin: bool) -> Self {
        self.policy.set_spin(spin);
        self
    }

    /// Runs `probe` every `every` while `recv` is blocked; its error ends
    /// the wait and is returned (to notice dead producers).
    pub fn with_probe(mut self, every: Duration, probe: Probe) -> Self {
        self.policy.set_probe(every, probe);
        self
    }

    /// Whether a signal that interrupts a blocked `recv` ends it with
    /// [`Error::Interrupted`] (default `false`: the wait goes on). A binding
    /// for a language with its own signal handlers (Python) sets it, runs
    /// them, and calls again with the time left: no periodic wake-up is
    /// needed to notice Ctrl-C.
    pub fn interruptible(mut self, yes: bool) -> Self {
        self.policy.set_interruptible(yes);
        self
    }

    /// The next unit, waiting as long as it takes. [`Error::Shutdown`] once
    /// the pool is shut down and every unit published before was received.
    #[inline]
    pub fn recv(&self) -> Result<Unit> {
        // The common case inline (a unit is there: no deadline to compute,
        // no clock read), the rest out of line.
        if let Some(taken) = self.take_first() {
            return taken.map(|t| self.unit(t));
        }
        self.wait(None)
    }

    /// The next unit, waiting at most `timeout` ([`Error::Timeout`] after).
    #[inline]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Unit> {
        if let Some(taken) = self.take_first() {
            return taken.map(|t| self.unit(t));
        }
        self.wait(Some(timeout))
    }

    /// The next unit if one is published now: `Ok(None)` if not.
    #[inline]
    pub fn try_recv(&self) -> Result<Option<Unit>> {
        if let Some(taken) = self.take_first() {
            return taken.map(|t| Some(self.unit(t)));
        }
        self.try_recv_again()
    }

    /// The first try of every receive, inlined into it (the protocol's
    /// common case of a take, which `try_take` also starts with), where
    /// this reader may act (see [`Region::acting`]) and no unit is pending
    /// (those come first). `None`: the receive's whole way, out of line.
    #[inline(always)]
    fn take_first(&self) -> Option<Result<Taken>> {
        // Relaxed: see `Pending::pop`.
        if !self.region.acting() || self.pending.len.load(Ordering::Relaxed) != 0 {
            return None;
        }
        self.region.control().take_first(self.region.me())
    }

    /// The whole of `try_recv`, for when its first try did not do.
    #[cold]
    #[inline(never)]
    fn try_recv_again(&self) -> Result<Option<Unit>> {
        self.region.check_not_inherited()?;
        if let Some(u) = self.pending.pop() {
            return Ok(Some(u));
        }
        let me = self.region.me();
        Ok(self.region.control().try_take(me)?.map(|t| self.unit(t)))
    }

    /// The committed unit named `id` (see [`UnitWriter::id`]), whatever
    /// order units were committed in: for producers that send each unit's
    /// id beside it through another channel, whose order need not be the
    /// pool's. Units published before it are taken too and kept pending,
    /// holding their segments, for their own `recv_id` (or the next
    /// `recv`, which returns pending units first). `Ok(None)`: no unit
    /// named `id` is published now. Does not wait.
    ///
    /// [`UnitWriter::id`]: crate::UnitWriter::id
    pub fn recv_id(&self, id: UnitId) -> Result<Option<Unit>> {
        self.region.check_not_inherited()?;
        let mut units = self.pending.lock();
        if let Some(i) = units.iter().position(|u| u.id() == id) {
            let found = units.remove(i);
            // Relaxed: see `Pending::pop`.
            self.pending.len.store(units.len(), Ordering::Relaxed);
            return Ok(found);
        }
        let (ctl, me) = (self.region.control(), self.region.me());
        let before = units.len();
        let mut outcome = Ok(None);
        // At most `count` units can be published at once.
        for _ in 0..ctl.count() {
            match ctl.try_take(me) {
                Ok(Some(taken)) => {
                    let unit = self.unit(taken);
                    if unit.id() == id {
                        outcome = Ok(Some(unit));
                        break;
                    }
                    units.push_back(unit);
                }
                Ok(None) => break,
                // Nothing more will be published: `id` is not there, and
                // what was stashed still comes out of `recv`.
                Err(Error::Shutdown) => break,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        // Relaxed: see `Pending::pop`. On every way out, so no stashed unit
        // is hidden from `recv`.
        self.pending.len.store(units.len(), Ordering::Relaxed);
        let stashed = units.len() > before;
        drop(units);
        if stashed {
            // A clone of this reader may be asleep in `recv` for a unit we
            // just stashed: wake the sleepers, which look at pending first.
            ctl.wake_consumers();
        }
        outcome
    }

    /// Units taken by [`recv_id`](Self::recv_id) on the way to another and
    /// not yet received.
    pub fn pending(&self) -> usize {
        self.pending.len.load(Ordering::Relaxed)
    }

    /// The whole of `recv`, for when its first try did not do.
    #[cold]
    #[inline(never)]
    fn wait(&self, timeout: Option<Duration>) -> Result<Unit> {
        self.region.check_not_inherited()?;
        if let Some(u) = self.pending.pop() {
            return Ok(u);
        }
        let (ctl, me) = (self.region.control(), self.region.me());
        // Fast path: a unit is there, so no deadline to compute (no clock read).
        if let Some(taken) = ctl.try_take(me)? {
            return Ok(self.unit(taken));
        }
        let _sleeping = self.region.sleeping();
        let blocked_at = Instant::now();
        let deadline = timeout.and_then(|t| blocked_at.checked_add(t));
        // Set when a sleep ended because a clone stashed units (`recv_id`).
        let stashed = AtomicBool::new(false);
        let before_sleep = || {
            // Relaxed: see `Pending::pop`; `recv_id` wakes us after storing.
            if self.pending.len.load(Ordering::Relaxed) > 0 {
                stashed.store(true, Ordering::Relaxed);
                return Err(Error::Interrupted);
            }
            self.policy.before_sleep(&self.region)
        };
        let out = loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match ctl.take(me, &self.policy.wait(left, &before_sleep)) {
                Ok(taken) => break Ok(self.unit(taken)),
                Err(Error::Interrupted) if stashed.swap(false, Ordering::Relaxed) => {
                    if let Some(u) = self.pending.pop() {
                        break Ok(u);
                    }
                }
                // The timeout the caller gave, not what was left of it.
                Err(Error::Timeout(_)) if timeout.is_some() => {
                    break Err(Error::Timeout(timeout.unwrap_or_default()));
                }
                Err(e) => break Err(e),
            }
        };
        // Every way out counts: a side that only times out waits for real.
        self.policy.blocked_for(blocked_at.elapsed());
        out
    }

    #[inline(always)]
    fn unit(&self, taken: Taken) -> Unit {
        // The first view: a plain store, not an increment. The segment was
        // free and is HELD by this take now, so with peers that keep the
        // protocol no view of it is alive in this process: the last one's
        // accesses to the count (a load or a decrement, then the release)
        // happen-before this store through the protocol (its release, the
        // next claim, commit, and our take). A peer that breaks it (re-
        // publishing a segment we hold) can make this count skip views of
        // the old unit; `Drop` then never decrements below zero, so the
        // cost is the garbled payload such a peer can cause anyway.
        // Relaxed: nothing else is published by the count itself.
        self.region.holders(taken.seg).store(1, Ordering::Relaxed);
        Unit {
            region: self.region.clone(),
            taken,
            start: 0,
            len: taken.len,
        }
    }

    /// Iterates over units until shutdown (which ends the iteration) or
    /// another error (which is yielded, then the iteration ends).
    pub fn iter(&self) -> impl Iterator<Item = Result<Unit>> + '_ {
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            match self.recv() {
                Ok(u) => Some(Ok(u)),
                Err(Error::Shutdown) => None,
                Err(e) => {
                    done = true;
                    Some(Err(e))
                }
            }
        })
    }
}

/// A received unit: a zero-copy view of the bytes a producer committed.
///
/// Cheap to clone and `Send + Sync`. The segment goes back to the pool when
/// the last clone, and the last view derived from it by
/// [`view`](Self::view), drops. Dereferences to `[u8]`.
///
/// The reference count lives in the region, one process-local counter per
/// segment, not in an allocation per unit: receiving a unit allocates
/// nothing.
pub struct Unit {
    region: Arc<Region>,
    taken: Taken,
    start: usize,
    len: usize,
}

/// Most views of one segment a process may hold at once: like `Arc`, a
/// count that would wrap aborts instead, since a wrapped count would free
/// the segment under live views.
const MAX_HOLDERS: u32 = u32::MAX >> 1;

/// Counts one more view of `seg` (a clone); aborts the process on overflow.
#[inline]
fn hold(region: &Region, seg: usize) {
    // Relaxed, as in `Arc::clone`: a new reference is made from an existing
    // one, which keeps the segment held meanwhile.
    if region.holders(seg).fetch_add(1, Ordering::Relaxed) > MAX_HOLDERS {
        // Only 2^31 leaked clones get here (`mem::forget` in a loop); the
        // count stays far from wrapping because every thread aborts first.
        std::process::abort();
    }
}

impl Clone for Unit {
    fn clone(&self) -> Unit {
        hold(&self.region, self.taken.seg);
        Unit {
            region: self.region.clone(),
            taken: self.taken,
            start: self.start,
            len: self.len,
        }
    }
}

impl Drop for Unit {
    #[inline]
    fn drop(&mut self) {
        if self.region.inherited() {
            // Inherited through fork: the parent still reads this segment.
            return;
        }
        let holders = self.region.holders(self.taken.seg);
        // The only view (the common case): nobody can clone it, since
        // cloning needs a reference and `drop` has the only one, and no new
        // view of a HELD segment can start elsewhere; so release it with a
        // load instead of a decrement, as `Arc::get_mut` tells uniqueness.
        // The count keeps its 1; the next take stores 1 anyway.
        // Acquire pairs with the Release decrements of clones dropped
        // before, so their reads of the bytes happen-before the release.
        if holders.load(Ordering::Acquire) == 1 {
            self.region.control().release(&self.taken);
            return;
        }
        // Release/Acquire as in `Arc::drop`: every clone's reads of the
        // bytes happen-before the release that lets a writer reuse them.
        // Never below zero (see `Reader::unit`): a count a broken peer made
        // skip views releases nothing more, and cannot wrap into the
        // overflow abort of `hold`.
        let was = holders.fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_sub(1));
        if was == Ok(1) {
            std::sync::atomic::fence(Ordering::Acquire);
            self.region.control().release(&self.taken);
        }
    }
}

impl fmt::Debug for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unit")
            .field("ticket", &self.ticket())
            .field("segment", &self.segment())
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl Unit {
    /// The bytes of this view.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `as_ptr` points at `len` bytes of the segment, inside the
        // mapping that `self.region` keeps alive. The segment is HELD at our
        // epoch until the last unit over it drops (the region's holder count
        // for it is at least 1), so no writer this protocol knows of is
        // handed it (see the module docs for peers that break the protocol),
        // and this crate never writes a received unit.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The address of this view's first byte in this process's mapping:
    /// [`len`](Self::len) bytes, to read for as long as this view (or any
    /// clone or view of the unit) lives. For bindings that hand the bytes to
    /// another runtime without a copy; what the address promises is the
    /// crate's one [raw access](crate#raw-access) contract.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.as_mut_ptr().cast_const()
    }

    /// [`as_ptr`](Self::as_ptr), writable: the received bytes are this
    /// process's until the last view of them drops, and a binding whose
    /// runtime hands out writable buffers (a Python memoryview) may let it
    /// write them, as the [raw access](crate#raw-access) contract says.
    #[inline]
    pub fn as_mut_ptr(&self) -> *mut u8 {
        // `taken.seg < count` and `taken.len <= segment_size` were checked
        // by the protocol when the unit was taken, and every view has
        // `start + len <= taken.len`: the address is inside the segment.
        self.region
            .segment_ptr(self.taken.seg)
            .wrapping_add(self.start)
    }

    /// Bytes in this view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, nbytes: usize) -> Result<()> {
        match offset.checked_add(nbytes) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len: nbytes,
                available: self.len,
            }),
        }
    }

    /// `nbytes` at `offset` (as `write_binary` returned them), bounds-checked.
    pub fn read_binary(&self, offset: usize, nbytes: usize) -> Result<&[u8]> {
        self.check(offset, nbytes)?;
        Ok(&self.as_bytes()[offset..offset + nbytes])
    }

    /// A view of `nbytes` at `offset` that keeps the segment alive on its own.
    pub fn view(&self, offset: usize, nbytes: usize) -> Result<Unit> {
        self.check(offset, nbytes)?;
        let mut view = self.clone();
        view.start += offset;
        view.len = nbytes;
        Ok(view)
    }

    /// Publish ticket: 0, 1, 2, ... in the order units were published.
    pub fn ticket(&self) -> u64 {
        self.taken.ticket
    }

    /// The unit's name, as its writer's [`UnitWriter::id`] gave it.
    ///
    /// [`UnitWriter::id`]: crate::UnitWriter::id
    pub fn id(&self) -> UnitId {
        self.taken.id()
    }

    /// Index of the segment holding the unit.
    pub fn segment(&self) -> usize {
        self.taken.seg
    }

    /// Generation (iteration) the unit was written in.
    pub fn generation(&self) -> u32 {
        self.taken.generation
    }

    /// The view as `bytes::Bytes`, without a copy; the segment stays held
    /// until the `Bytes` (and its clones and slices) drop.
    #[cfg(feature = "bytes")]
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }

    /// `count` elements of `T` at `offset`, in place. [`Error::Misaligned`]
    /// if the address is not aligned for `T` (segments are page-aligned and
    /// `write_binary` offsets 64-aligned, so written data always is),
    /// [`Error::OutOfBounds`] if they overrun the view.
    #[cfg(feature = "bytemuck")]
    pub fn cast_slice<T: bytemuck::Pod>(&self, offset: usize, count: usize) -> Result<&[T]> {
        let nbytes = count
            .checked_mul(core::mem::size_of::<T>())
            .ok_or(Error::OutOfBounds {
                offset,
                len: usize::MAX,
                available: self.len,
            })?;
        let bytes = self.read_binary(offset, nbytes)?;
        bytemuck::try_cast_slice(bytes).map_err(|_| Error::Misaligned {
            offset,
            align: core::mem::align_of::<T>(),
        })
    }
}

impl std::ops::Deref for Unit {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Unit {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use crate::SegmentPool;
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;

    /// A consumer that only ever times out waits for real: after a short
    /// blocked call taught it to spin, one timeout is enough to stop it
    /// spinning on every later call (review finding M1).
    #[test]
    fn a_timed_out_recv_stops_the_adaptive_spin() {
        let pool = SegmentPool::new(64, 1).unwrap();
        let r = pool.open_reader();
        r.policy.blocked_for(Duration::from_micros(5));
        assert!(!r.policy.next_spin().is_zero());
        assert!(matches!(
            r.recv_timeout(Duration::from_millis(2)),
            Err(crate::Error::Timeout(_))
        ));
        assert!(r.policy.next_spin().is_zero());
    }

    const CHILD: &str = "SEGPOOL_HOLDERS_OVERFLOW_CHILD";

    /// `Arc` aborts when its count would overflow; a `Unit` must too, or
    /// 2^32 leaked clones would wrap the count and the next clone-and-drop
    /// would free the segment under live views. Runs the overflow in a
    /// child process (this test binary, re-executed), which must die by
    /// SIGABRT.
    #[test]
    fn cloning_a_unit_past_the_holder_limit_aborts() {
        if std::env::var_os(CHILD).is_some() {
            let pool = SegmentPool::new(64, 1).unwrap();
            let w = pool.open_writer();
            w.begin_unit().unwrap().commit_unit().unwrap();
            let unit = pool.open_reader().recv().unwrap();
            // 2^31 leaked clones, without spending a minute on them.
            unit.region
                .holders(unit.segment())
                .store(super::MAX_HOLDERS + 1, std::sync::atomic::Ordering::Relaxed);
            let _ = unit.clone(); // must abort here
            std::process::exit(0);
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reader::tests::cloning_a_unit_past_the_holder_limit_aborts",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
    }
}
