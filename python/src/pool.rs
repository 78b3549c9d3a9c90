//! `Pool`: the native half of `segpool.SharedMemorySegmentPool`.
//!
//! It owns this process's attachment to the pool ([`Attached`]). A process
//! forked from the one that made the attachment does not use it: on first
//! use there, the pool attaches again through the memfd the child inherited
//! (same fd number), so the child's writers are recorded as the child's.
//! The attachment sits in a [`GilCell`], not a lock, so a thread busy with
//! the pool when another one forks cannot leave the child stuck.

use crate::buffer::{Keeper, memoryview};
use crate::cell::GilCell;
use crate::errors::{closed, size_arg, to_py};
use crate::reader::Reader;
use crate::writer::Writer;
use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use segpool::{Error, PoolHandle, SegmentPool, Unit};
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

/// One process's attachment to the pool.
pub(crate) struct Attached {
    pub(crate) pool: SegmentPool,
    /// The one crate reader of this attachment: every Python `Reader` of it
    /// shares its set of units taken on the way to another unit's id.
    pub(crate) reader: segpool::Reader,
}

impl Attached {
    fn new(pool: SegmentPool) -> Arc<Attached> {
        // Interruptible: a blocked `Reader.recv` returns on a signal, runs
        // the handlers and waits again (`recv_id` never waits).
        let reader = pool.open_reader().interruptible(true);
        Arc::new(Attached { pool, reader })
    }

    /// Whether this process inherited the attachment through `fork`: then
    /// the crate makes everything made through it inert (its units and
    /// unit writers free nothing when dropped) and this process attaches
    /// again.
    pub(crate) fn is_inherited(&self) -> bool {
        self.pool.is_inherited()
    }
}

/// A received unit (or a view of one) with the attachment it came through.
/// Dropping it releases the segment (the crate keeps a unit inherited
/// through fork from releasing anything).
pub(crate) struct Held {
    pub(crate) unit: Unit,
    pub(crate) attached: Arc<Attached>,
}

impl Held {
    pub(crate) fn new(unit: Unit, attached: Arc<Attached>) -> Held {
        Held { unit, attached }
    }
}

/// The fd number in a memfd handle's text (`segpool/1 fd=7 len=...`).
fn handle_fd(handle: &PoolHandle) -> PyResult<i32> {
    handle
        .to_string()
        .split(' ')
        .find_map(|w| w.strip_prefix("fd="))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| PyRuntimeError::new_err(format!("pool handle {handle} names no fd")))
}

/// Seconds (Python float) as a `Duration`, refusing what is not a timeout.
/// Infinity (and anything too long for a `Duration`) waits forever.
pub(crate) fn timeout_from_secs(secs: f64) -> PyResult<Duration> {
    if secs >= 0.0 && Duration::try_from_secs_f64(secs).is_err() {
        return Ok(Duration::MAX);
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!(
            "acquire_timeout must be a non-negative number of seconds (0 = never wait), got {secs}"
        ))
    })
}

/// The error for a pool that could not be created: a size the machine
/// cannot back or map at all is a `ValueError` that says what to change.
fn creation_error(e: Error, segment_size: usize, count: usize) -> PyErr {
    match e {
        Error::Io { op, source }
            if matches!(
                source.kind(),
                ErrorKind::OutOfMemory | ErrorKind::FileTooLarge | ErrorKind::InvalidInput
            ) =>
        {
            PyValueError::new_err(format!(
                "invalid SharedMemorySegmentPool configuration: {count} segments of \
                 {segment_size} bytes cannot be mapped in this process ({op}: {source}); make \
                 segment_size or count smaller"
            ))
        }
        other => to_py(other),
    }
}

/// The native pool. `segpool.SharedMemorySegmentPool` wraps it and adds
/// pickling.
#[pyclass(module = "segpool._segpool", frozen)]
pub struct Pool {
    /// `None` once closed.
    state: GilCell<Option<Arc<Attached>>>,
    segment_size: usize,
    count: usize,
    acquire_timeout: f64,
}

impl Pool {
    fn with_attached(attached: Arc<Attached>, acquire_timeout: f64) -> Pool {
        Pool {
            segment_size: attached.pool.segment_size(),
            count: attached.pool.count(),
            state: GilCell::new(Some(attached)),
            acquire_timeout,
        }
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

    /// Whether `close()` was called in this process.
    pub(crate) fn is_closed(&self, py: Python<'_>) -> bool {
        self.state.with(py, |s| s.is_none())
    }

    /// The configured timeout.
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

#[pymethods]
impl Pool {
    /// Creates a pool of `count` segments of `segment_size` bytes.
    #[new]
    #[pyo3(signature = (segment_size, count, acquire_timeout = 60.0, prefault = false))]
    fn new(
        py: Python<'_>,
        segment_size: &Bound<'_, PyAny>,
        count: &Bound<'_, PyAny>,
        acquire_timeout: f64,
        prefault: bool,
    ) -> PyResult<Pool> {
        let segment_size = size_arg(segment_size, "segment_size")?;
        let count = size_arg(count, "count")?;
        if segment_size == 0 {
            return Err(PyValueError::new_err(
                "segment_size must be positive (the bytes of the largest unit), got 0",
            ));
        }
        if count == 0 {
            return Err(PyValueError::new_err(
                "count must be positive (how many units may be in flight), got 0",
            ));
        }
        let timeout = timeout_from_secs(acquire_timeout)?;
        let builder = SegmentPool::builder(segment_size, count)
            .acquire_timeout(timeout)
            .prefault(prefault);
        // Without the GIL: prefaulting touches every page (about 0.6 s per
        // GiB), and other threads should run meanwhile.
        let pool = py
            .detach(|| builder.build())
            .map_err(|e| creation_error(e, segment_size, count))?;
        Ok(Pool::with_attached(Attached::new(pool), acquire_timeout))
    }

    /// Attaches to a pool through `fd`, a descriptor of its memfd that this
    /// process received (the caller keeps ownership of `fd`). `total_len` is
    /// the handle's `len`; the geometry must match what the pool says.
    #[staticmethod]
    fn _attach(
        py: Python<'_>,
        fd: i32,
        segment_size: usize,
        count: usize,
        acquire_timeout: f64,
        total_len: u64,
    ) -> PyResult<Pool> {
        let timeout = timeout_from_secs(acquire_timeout)?;
        let text = format!(
            "segpool/1 fd={fd} len={total_len} timeout_ms={}",
            timeout.as_millis().min(u128::from(u64::MAX))
        );
        let handle: PoolHandle = text.parse().map_err(to_py)?;
        let pool = py.detach(|| SegmentPool::attach(&handle)).map_err(to_py)?;
        if (pool.segment_size(), pool.count()) != (segment_size, count) {
            return Err(PyRuntimeError::new_err(format!(
                "fd {fd} holds a pool of {} segments of {} bytes, not {count} of {segment_size}",
                pool.count(),
                pool.segment_size()
            )));
        }
        Ok(Pool::with_attached(Attached::new(pool), acquire_timeout))
    }

    /// The memfd's descriptor number in this process (for pickling).
    fn _fd(&self, py: Python<'_>) -> PyResult<i32> {
        handle_fd(&self.attached(py, "pickling")?.pool.handle())
    }

    /// Bytes of the whole shared object (the handle's `len`).
    #[getter]
    fn _total_len(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.attached(py, "pickling")?.pool.handle().len())
    }

    #[getter]
    fn segment_size(&self) -> usize {
        self.segment_size
    }

    #[getter]
    fn count(&self) -> usize {
        self.count
    }

    #[getter(acquire_timeout)]
    fn get_acquire_timeout(&self) -> f64 {
        self.acquire_timeout
    }

    #[getter]
    fn published(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.attached(py, "published")?.pool.published())
    }

    #[getter]
    fn reclaimed(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.attached(py, "reclaimed")?.pool.reclaimed())
    }

    #[getter]
    fn generation(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.attached(py, "generation")?.pool.generation())
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        self.is_closed(py)
    }

    #[getter]
    fn is_shutdown(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.attached(py, "is_shutdown")?.pool.is_shutdown())
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.attached(py, "stats()")?.pool.stats();
        let d = PyDict::new(py);
        d.set_item("published", s.published)?;
        d.set_item("reclaimed", s.reclaimed)?;
        d.set_item("free", s.free)?;
        d.set_item("writing", s.writing)?;
        d.set_item("queued", s.queued)?;
        d.set_item("held", s.held)?;
        d.set_item("waiting_producers", s.waiting_producers)?;
        d.set_item("waiting_consumers", s.waiting_consumers)?;
        d.set_item("generation", s.generation)?;
        d.set_item("shutdown", s.shutdown)?;
        Ok(d)
    }

    fn shutdown_arena(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_closed(py) {
            return Ok(());
        }
        self.attached(py, "shutdown_arena()")?.pool.shutdown_arena();
        Ok(())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.shutdown_arena(py)?;
        // Views, writers and readers still alive keep the mapping.
        drop(self.state.replace(py, None));
        Ok(())
    }

    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        // A memfd has no name: nothing to remove. Kept for named pools.
        match self.state.get(py) {
            Some(a) => a.pool.unlink().map_err(to_py),
            None => Ok(()),
        }
    }

    fn open_writer(slf: &Bound<'_, Self>) -> PyResult<Writer> {
        Writer::new(slf)
    }

    fn open_reader(slf: &Bound<'_, Self>) -> PyResult<Reader> {
        Reader::new(slf)
    }

    /// A writable memoryview over the whole of segment `index`.
    fn _segment<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyAny>> {
        let attached = self.attached(py, "_segment()")?;
        let (ptr, len) = attached.pool.segment_raw(index).map_err(|_| {
            PyIndexError::new_err(format!(
                "segment index {index} out of range: the pool has {} segments",
                self.count
            ))
        })?;
        // SAFETY: the segment lies inside the mapping, which the keeper's
        // `Arc<Attached>` keeps mapped. Writing it is outside the protocol:
        // this is a test and debugging hook, documented as such.
        unsafe { memoryview(py, Keeper::Mapping(attached), ptr.as_ptr(), len) }
    }
}
