//! The producer side: [`Writer`] and the unit it is writing, [`UnitWriter`].

use crate::error::{Error, Result};
use crate::layout::UNIT_ALIGN;
use crate::policy::{Probe, WaitPolicy};
use crate::protocol::{Lease, UnitId};
use crate::region::Region;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A producer endpoint. Clone it freely; every clone may have units in flight.
#[derive(Clone)]
pub struct Writer {
    region: Arc<Region>,
    acquire_timeout: Duration,
    policy: WaitPolicy,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("acquire_timeout", &self.acquire_timeout)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Writer {
    pub(crate) fn new(region: Arc<Region>, acquire_timeout: Duration) -> Self {
        Writer {
            region,
            acquire_timeout,
            policy: WaitPolicy::default(),
        }
    }

    /// Whether `begin_unit` spins briefly before sleeping on the futex
    /// (default `true`). `false` sleeps at once: no CPU burnt while the pool
    /// is full, at the cost of a wake-up's latency on every wait.
    pub fn spin(mut self, spin: bool) -> Self {
        self.policy.set_spin(spin);
        self
    }

    /// Runs `probe` every `every` while `begin_unit` is blocked; its error
    /// ends the wait and is returned. Use it to notice a dead consumer
    /// (the [`subprocess`](crate::subprocess) module installs one).
    pub fn with_probe(mut self, every: Duration, probe: Probe) -> Self {
        self.policy.set_probe(every, probe);
        self
    }

    /// Whether a signal that interrupts a blocked `begin_unit` ends it with
    /// [`Error::Interrupted`] (default `false`: the wait goes on). A binding
    /// for a language with its own signal handlers (Python) sets it, runs
    /// them, and calls again with the time left: no periodic wake-up is
    /// needed to notice Ctrl-C.
    pub fn interruptible(mut self, yes: bool) -> Self {
        self.policy.set_interruptible(yes);
        self
    }

    /// The timeout `begin_unit` uses.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Claims a free segment, waiting up to `acquire_timeout` for one.
    ///
    /// [`Error::Exhausted`] at once if none is free and the timeout is zero,
    /// [`Error::Timeout`] after it, [`Error::Shutdown`] after
    /// `shutdown_arena`.
    #[inline]
    pub fn begin_unit(&self) -> Result<UnitWriter> {
        self.begin_unit_timeout(self.acquire_timeout)
    }

    /// [`begin_unit`](Self::begin_unit) with its own timeout.
    #[inline]
    pub fn begin_unit_timeout(&self, timeout: Duration) -> Result<UnitWriter> {
        // The common case inline (a free segment: no deadline to compute,
        // no clock read), the rest out of line.
        let lease = match self.claim_first() {
            Some(lease) => lease,
            None => self.begin_again(timeout)?,
        };
        Ok(self.unit_writer(lease))
    }

    /// The first try of every claim, inlined into it (the protocol's common
    /// case of a claim, which `try_begin` also starts with), where this
    /// writer may act (see [`Region::acting`]). `None`: the claim's whole
    /// way, out of line.
    #[inline(always)]
    fn claim_first(&self) -> Option<Lease> {
        if !self.region.acting() {
            return None;
        }
        self.region.control().claim_first(self.region.me())
    }

    #[inline(always)]
    fn unit_writer(&self, lease: Lease) -> UnitWriter {
        let unit = UnitWriter {
            region: self.region.clone(),
            offset: self.region.segment_offset(lease.seg),
            lease: Some(lease),
            cursor: 0,
        };
        // The unit's first bytes are written next, in a line a consumer
        // read last: ask for it writable now (a cache hint).
        crate::sync::prefetch_write_at(unit.as_mut_ptr());
        unit
    }

    /// The whole of `begin_unit`, for when its first try did not do.
    #[cold]
    #[inline(never)]
    fn begin_again(&self, timeout: Duration) -> Result<Lease> {
        self.region.check_not_inherited()?;
        let (ctl, me) = (self.region.control(), self.region.me());
        // A free segment after all.
        if let Some(lease) = ctl.try_begin(me)? {
            return Ok(lease);
        }
        if timeout.is_zero() {
            return Err(Error::Exhausted { count: ctl.count() });
        }
        let _sleeping = self.region.sleeping();
        let before_sleep = || self.policy.before_sleep(&self.region);
        let blocked_at = std::time::Instant::now();
        let lease = ctl.begin(me, &self.policy.wait(Some(timeout), &before_sleep));
        // Every way out counts: a side that only times out waits for real.
        self.policy.blocked_for(blocked_at.elapsed());
        lease
    }

    /// Claims a free segment if one is free now: `Ok(None)` if not.
    #[inline]
    pub fn try_begin_unit(&self) -> Result<Option<UnitWriter>> {
        self.region.check_not_inherited()?;
        let lease = self.region.control().try_begin(self.region.me())?;
        Ok(lease.map(|lease| self.unit_writer(lease)))
    }
}

/// A unit being written into one segment: the segment is this value's alone
/// until [`commit_unit`](Self::commit_unit) publishes it. Dropping it without
/// committing aborts it and frees the segment.
pub struct UnitWriter {
    /// Keeps the mapping alive while the unit is open.
    region: Arc<Region>,
    /// Where the lease's segment starts in the mapping (checked against the
    /// segment count once, at the claim).
    offset: usize,
    /// `None` once committed or aborted.
    lease: Option<Lease>,
    /// Bytes used so far (the span `commit_unit` publishes).
    cursor: usize,
}

impl fmt::Debug for UnitWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitWriter")
            .field("segment", &self.segment())
            .field("len", &self.cursor)
            .finish()
    }
}

impl UnitWriter {
    #[inline]
    fn lease(&self) -> &Lease {
        self.lease
            .as_ref()
            .expect("a UnitWriter holds its lease until consumed")
    }

    /// Index of the segment being written.
    pub fn segment(&self) -> usize {
        self.lease().seg
    }

    /// The unit's name: what [`Unit::id`](crate::Unit::id) returns for it
    /// once received, and what [`Reader::recv_id`](crate::Reader::recv_id)
    /// takes.
    pub fn id(&self) -> UnitId {
        self.lease().id()
    }

    /// Bytes this unit spans so far.
    pub fn len(&self) -> usize {
        self.cursor
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.cursor == 0
    }

    /// Capacity of the segment.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.region.layout().segment_size
    }

    /// The address of the unit's first byte (offset 0, where the segment
    /// starts) in this process's mapping: [`capacity`](Self::capacity)
    /// bytes. Every offset that [`write_binary`](Self::write_binary),
    /// [`reserve`](Self::reserve) and [`advance`](Self::advance) return is
    /// relative to it. For bindings that let another runtime fill the unit
    /// in place: claim the bytes with `advance` (which moves the cursor and
    /// lends no slice), then write them at this address plus the offset it
    /// returned, until the unit is committed or aborted. What the address
    /// promises is the crate's one [raw access](crate#raw-access) contract.
    #[inline]
    pub fn as_mut_ptr(&self) -> *mut u8 {
        // Wrapping: no promise is needed to form the address; it is inside
        // the mapping because `offset` is a checked segment's start.
        self.region.base().wrapping_add(self.offset)
    }

    /// The whole segment, writable. Only this unit can see it until commit.
    #[inline]
    fn range_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.capacity()),
            "range checked by claim_range / spare_mut"
        );
        let ptr = self.as_mut_ptr();
        // SAFETY: `offset + len <= segment_size` (asserted), so the range is
        // inside our segment, inside the mapping that `self.region` keeps
        // alive. Our lease owns the segment exclusively (our descriptor CAS
        // made it WRITING under our name at our epoch): no other writer is
        // handed it and no reader can take it before commit. `&mut self`
        // keeps this the only borrow made here; the slice covers only the
        // range asked for, never bytes lent out earlier by `reserve`, which
        // a binding may still be filling through raw pointers.
        unsafe { std::slice::from_raw_parts_mut(ptr.add(offset), len) }
    }

    /// Reserves `nbytes` at the next 64-byte-aligned offset; returns that
    /// offset. [`Error::TooLarge`] if they do not fit (nothing changes).
    #[inline]
    fn claim_range(&mut self, nbytes: usize) -> Result<usize> {
        // Inherited through fork: the segment is the parent's to write.
        self.region.check_not_inherited()?;
        let cap = self.capacity();
        let offset = self.cursor.next_multiple_of(UNIT_ALIGN);
        match offset.checked_add(nbytes) {
            Some(end) if offset <= cap && end <= cap => {
                self.cursor = end;
                Ok(offset)
            }
            _ => Err(Error::TooLarge {
                requested: nbytes,
                offset,
                needed: offset.saturating_add(nbytes),
                segment_size: cap,
            }),
        }
    }

    /// Copies `data` into the segment at the next 64-byte-aligned offset and
    /// returns `(offset, nbytes)`, the coordinates the reader passes to
    /// [`Unit::read_binary`](crate::Unit::read_binary).
    /// [`Error::TooLarge`] if it does not fit: nothing is written and the
    /// unit stays open.
    #[inline]
    pub fn write_binary(&mut self, data: &[u8]) -> Result<(usize, usize)> {
        let offset = self.claim_range(data.len())?;
        self.range_mut(offset, data.len()).copy_from_slice(data);
        Ok((offset, data.len()))
    }

    /// The loan API: reserves `nbytes` at the next 64-byte-aligned offset and
    /// lends them to you to fill in place (no copy). Returns the offset and
    /// the bytes, which hold whatever an earlier unit left there.
    ///
    /// ```
    /// # let pool = segpool::SegmentPool::new(4096, 1)?;
    /// # let writer = pool.open_writer();
    /// let mut unit = writer.begin_unit()?;
    /// let (offset, buf) = unit.reserve(4)?;
    /// buf.copy_from_slice(&7u32.to_le_bytes()); // or decode straight into it
    /// unit.commit_unit()?;
    /// # let u = pool.open_reader().recv()?;
    /// # assert_eq!(u.read_binary(offset, 4)?, &7u32.to_le_bytes());
    /// # Ok::<(), segpool::Error>(())
    /// ```
    #[inline]
    pub fn reserve(&mut self, nbytes: usize) -> Result<(usize, &mut [u8])> {
        let offset = self.claim_range(nbytes)?;
        Ok((offset, self.range_mut(offset, nbytes)))
    }

    /// Everything after the next aligned offset, to fill in place when the
    /// size is only known afterwards; then [`advance`](Self::advance) by the
    /// bytes used. Returns the offset and the bytes.
    pub fn spare_mut(&mut self) -> (usize, &mut [u8]) {
        let offset = self
            .cursor
            .next_multiple_of(UNIT_ALIGN)
            .min(self.capacity());
        if self.region.inherited() {
            // The parent's segment: lend nothing ([`advance`](Self::advance)
            // then says why).
            return (offset, &mut []);
        }
        let spare = self.capacity() - offset;
        (offset, self.range_mut(offset, spare))
    }

    /// Marks `nbytes` of [`spare_mut`](Self::spare_mut) as written; returns
    /// their offset. [`Error::TooLarge`] if they exceed the spare bytes.
    pub fn advance(&mut self, nbytes: usize) -> Result<usize> {
        self.claim_range(nbytes)
    }

    /// Publishes the unit and returns its span (bytes it covers, padding
    /// included). After [`Error::Shutdown`] or [`Error::Stale`] the segment
    /// is back in the pool and nothing was published.
    ///
    /// A commit that races `shutdown_arena` may still succeed after the
    /// consumer stopped receiving: `Ok` means "published", not "will be
    /// received". The unit's segment comes back when the pool is dropped.
    #[inline]
    pub fn commit_unit(mut self) -> Result<usize> {
        // Inherited through fork: the parent owns the segment (and `Drop`
        // leaves it alone).
        self.region.check_not_inherited()?;
        let lease = self.lease.take().expect("lease present until consumed");
        self.region.control().commit(lease, self.cursor)?;
        Ok(self.cursor)
    }

    /// Drops the unit and frees its segment (what dropping does, said aloud).
    pub fn abort_unit(mut self) {
        self.abort_now();
    }

    #[inline]
    fn abort_now(&mut self) {
        if let Some(lease) = self.lease.take() {
            // In a fork child the lease is the parent's, which still writes
            // through it: forget it.
            if !self.region.inherited() {
                self.region.control().abort(lease);
            }
        }
    }
}

impl Drop for UnitWriter {
    #[inline]
    fn drop(&mut self) {
        self.abort_now();
    }
}
