//! This process's attachment to a pool, and the one place that attaches
//! again after `fork`.
//!
//! A [`Link`] is what a Python pool and every writer and reader opened from
//! it share. A process forked from the one that made the current attachment
//! does not use it (the crate makes everything made through it inert
//! there): [`Link::attached`], on first use in the child, attaches again
//! through the memfd the child inherited (same fd number), so the child's
//! writers and readers are recorded as the child's. The attachment sits in
//! a [`GilCell`], not a lock, so a thread busy with the pool when another
//! one forks cannot leave the child stuck.

use crate::cell::GilCell;
use crate::errors::{closed, to_py};
use pyo3::prelude::*;
use segpool::SegmentPool;
use std::sync::Arc;

/// One process's attachment to the pool, with the crate endpoints every
/// Python writer and reader of it share.
pub(crate) struct Attached {
    pub(crate) pool: SegmentPool,
    /// The crate writer of this attachment (a crate writer serves any
    /// number of threads and units at once).
    pub(crate) writer: segpool::Writer,
    /// The one crate reader of this attachment: every Python `Reader` of it
    /// shares its set of units taken on the way to another unit's id.
    pub(crate) reader: segpool::Reader,
}

impl Attached {
    pub(crate) fn new(pool: SegmentPool) -> Arc<Attached> {
        // Interruptible: a blocked `begin_unit` or `recv` returns on a
        // signal, runs the handlers and waits again. The writer sleeps at
        // once (no spin) while the pool is full.
        let writer = pool.open_writer().interruptible(true).spin(false);
        let reader = pool.open_reader().interruptible(true);
        Arc::new(Attached {
            pool,
            writer,
            reader,
        })
    }

    /// Whether this process inherited the attachment through `fork`: then
    /// the crate makes everything made through it inert (its units and
    /// unit writers free nothing when dropped) and this process attaches
    /// again.
    pub(crate) fn is_inherited(&self) -> bool {
        self.pool.is_inherited()
    }
}

/// What a Python pool and its writers and readers share: the attachment
/// (`None` once the pool is closed in this process) and the pool's settings.
pub(crate) struct Link {
    state: GilCell<Option<Arc<Attached>>>,
    segment_size: usize,
    count: usize,
    acquire_timeout: f64,
}

impl Link {
    pub(crate) fn new(attached: Arc<Attached>, acquire_timeout: f64) -> Arc<Link> {
        Arc::new(Link {
            segment_size: attached.pool.segment_size(),
            count: attached.pool.count(),
            state: GilCell::new(Some(attached)),
            acquire_timeout,
        })
    }

    /// This process's attachment: attaches again first if this process was
    /// forked from the one holding the current attachment. `what` names the
    /// call for the error on a closed pool.
    pub(crate) fn attached(&self, py: Python<'_>, what: &str) -> PyResult<Arc<Attached>> {
        let current = self.state.get(py).ok_or_else(|| closed(what))?;
        if !current.is_inherited() {
            return Ok(current);
        }
        // The child inherited the memfd under the same number: attach again
        // through it, without the GIL (it maps the pool). The inherited
        // attachment stays alive for units and views still holding it,
        // which are inert here.
        let handle = current.pool.handle();
        let fresh = Attached::new(py.detach(|| SegmentPool::attach(&handle)).map_err(to_py)?);
        // Another thread may have attached (or closed) meanwhile: the first
        // attachment stored wins, and the others are dropped outside.
        let (kept, spare) = self.state.with(py, |state| match state {
            Some(now) if Arc::ptr_eq(now, &current) => {
                let old = state.replace(fresh.clone());
                (Some(fresh), old)
            }
            Some(now) if !now.is_inherited() => (Some(now.clone()), Some(fresh)),
            _ => (None, Some(fresh)),
        });
        drop(spare);
        kept.ok_or_else(|| closed(what))
    }

    /// Closes the pool in this process; returns the attachment to drop
    /// (outside the cell).
    pub(crate) fn close(&self, py: Python<'_>) -> Option<Arc<Attached>> {
        self.state.replace(py, None)
    }

    /// The attachment as it is, without attaching again (`None`: closed).
    pub(crate) fn current(&self, py: Python<'_>) -> Option<Arc<Attached>> {
        self.state.get(py)
    }

    /// Whether `close()` was called in this process.
    pub(crate) fn is_closed(&self, py: Python<'_>) -> bool {
        self.state.with(py, |s| s.is_none())
    }

    pub(crate) fn segment_size(&self) -> usize {
        self.segment_size
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The configured timeout, in seconds.
    pub(crate) fn acquire_timeout(&self) -> f64 {
        self.acquire_timeout
    }

    /// How the pool shows in the reprs of its endpoints.
    pub(crate) fn describe(&self) -> String {
        format!(
            "SharedMemorySegmentPool(segment_size={}, count={})",
            self.segment_size, self.count
        )
    }
}
