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
use crate::protocol::Taken;
use crate::region::Region;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A consumer endpoint: receives units in publish order.
#[derive(Clone)]
pub struct Reader {
    region: Arc<Region>,
    policy: WaitPolicy,
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

    /// The next unit, waiting as long as it takes. [`Error::Shutdown`] once
    /// the pool is shut down and every unit published before was received.
    pub fn recv(&self) -> Result<Unit> {
        self.wait(None)
    }

    /// The next unit, waiting at most `timeout` ([`Error::Timeout`] after).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Unit> {
        self.wait(Some(timeout))
    }

    /// The next unit if one is published now: `Ok(None)` if not.
    pub fn try_recv(&self) -> Result<Option<Unit>> {
        Ok(self.region.control().try_take()?.map(|t| self.unit(t)))
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Unit> {
        // Fast path: a unit is there, so no deadline to compute (no clock read).
        if let Some(taken) = self.region.control().try_take()? {
            return Ok(self.unit(taken));
        }
        let taken = self.region.control().take(&self.policy.wait(timeout))?;
        Ok(self.unit(taken))
    }

    fn unit(&self, taken: Taken) -> Unit {
        self.region
            .holders(taken.seg)
            .fetch_add(1, Ordering::Relaxed);
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

impl Clone for Unit {
    fn clone(&self) -> Unit {
        // Relaxed, as in `Arc::clone`: a new reference is made from an
        // existing one, which keeps the segment held meanwhile.
        self.region
            .holders(self.taken.seg)
            .fetch_add(1, Ordering::Relaxed);
        Unit {
            region: self.region.clone(),
            taken: self.taken,
            start: self.start,
            len: self.len,
        }
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        // Release/Acquire as in `Arc::drop`: every clone's reads of the
        // bytes happen-before the release that lets a writer reuse them.
        if self
            .region
            .holders(self.taken.seg)
            .fetch_sub(1, Ordering::Release)
            == 1
        {
            std::sync::atomic::fence(Ordering::Acquire);
            self.region
                .control()
                .release(self.taken.seg, self.taken.epoch);
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
        let ptr = self.region.segment_ptr(self.taken.seg);
        // SAFETY: `taken.seg < count` and `taken.len <= segment_size` were
        // checked by the protocol when the unit was taken, and every view
        // satisfies `start + len <= taken.len`, so the range lies inside the
        // segment, inside the mapping that `self.region` keeps alive. The
        // segment is HELD at our epoch until the last unit over it drops
        // (the region's holder count for it is at least 1), so no writer this
        // protocol knows of is handed it (see the module docs for peers
        // that break the protocol).
        unsafe { std::slice::from_raw_parts(ptr.add(self.start), self.len) }
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

    /// Index of the segment holding the unit.
    pub fn segment(&self) -> usize {
        self.taken.seg
    }

    /// Generation (iteration) the unit was written in.
    pub fn generation(&self) -> u32 {
        self.taken.generation
    }
}

impl std::ops::Deref for Unit {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Unit {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}
