//! `Pool`: the native half of `segpool.SharedMemorySegmentPool`.
//!
//! It owns this process's attachment to the pool ([`Attached`]). A process
//! forked from the one that made the attachment does not use it: on first
//! use there, the pool attaches again through the memfd the child inherited
//! (same fd number), so the child's writers are recorded as the child's.

use crate::buffer::{Keeper, memoryview};
use crate::errors::{closed, to_py};
use crate::reader::Reader;
use crate::writer::Writer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use segpool::{PoolHandle, SegmentPool, Unit};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One process's attachment to the pool.
pub(crate) struct Attached {
    pub(crate) pool: SegmentPool,
}

impl Attached {
    fn new(pool: SegmentPool) -> Arc<Attached> {
        Arc::new(Attached { pool })
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

/// The native pool. `segpool.SharedMemorySegmentPool` wraps it and adds
/// pickling.
#[pyclass(module = "segpool._segpool", frozen)]
pub struct Pool {
    /// `None` once closed.
    state: Mutex<Option<Arc<Attached>>>,
    segment_size: usize,
    count: usize,
    acquire_timeout: f64,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<Attached>>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This process's attachment: attaches again first if this process was
    /// forked from the one holding the current attachment.
    pub(crate) fn attached(&self) -> PyResult<Arc<Attached>> {
        let mut state = self.lock();
        let current = state.as_ref().ok_or_else(closed)?;
        if !current.is_inherited() {
            return Ok(current.clone());
        }
        // The child inherited the memfd under the same number: attach again
        // through it. The inherited attachment stays alive for units and
        // views still holding it, which are inert here.
        let fresh = Attached::new(SegmentPool::attach(&current.pool.handle()).map_err(to_py)?);
        *state = Some(fresh.clone());
        Ok(fresh)
    }

    /// The configured timeout.
    pub(crate) fn acquire_timeout(&self) -> f64 {
        self.acquire_timeout
    }
}

#[pymethods]
impl Pool {
    /// Creates a pool of `count` segments of `segment_size` bytes.
    #[new]
    #[pyo3(signature = (segment_size, count, acquire_timeout = 60.0, prefault = false))]
    fn new(segment_size: i64, count: i64, acquire_timeout: f64, prefault: bool) -> PyResult<Pool> {
        if segment_size <= 0 {
            return Err(PyValueError::new_err(format!(
                "segment_size must be positive (the bytes of the largest unit), got {segment_size}"
            )));
        }
        if count <= 0 {
            return Err(PyValueError::new_err(format!(
                "count must be positive (how many units may be in flight), got {count}"
            )));
        }
        let timeout = timeout_from_secs(acquire_timeout)?;
        let (segment_size, count) = (segment_size as usize, count as usize);
        let pool = SegmentPool::builder(segment_size, count)
            .acquire_timeout(timeout)
            .prefault(prefault)
            .build()
            .map_err(to_py)?;
        Ok(Pool {
            state: Mutex::new(Some(Attached::new(pool))),
            segment_size,
            count,
            acquire_timeout,
        })
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
        Ok(Pool {
            state: Mutex::new(Some(Attached::new(pool))),
            segment_size,
            count,
            acquire_timeout,
        })
    }

    /// The memfd's descriptor number in this process (for pickling).
    fn _fd(&self) -> PyResult<i32> {
        handle_fd(&self.attached()?.pool.handle())
    }

    /// Bytes of the whole shared object (the handle's `len`).
    #[getter]
    fn _total_len(&self) -> PyResult<u64> {
        Ok(self.attached()?.pool.handle().len())
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
    fn published(&self) -> PyResult<u64> {
        Ok(self.attached()?.pool.published())
    }

    #[getter]
    fn reclaimed(&self) -> PyResult<u64> {
        Ok(self.attached()?.pool.reclaimed())
    }

    #[getter]
    fn generation(&self) -> PyResult<u32> {
        Ok(self.attached()?.pool.generation())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.lock().is_none()
    }

    #[getter]
    fn is_shutdown(&self) -> PyResult<bool> {
        Ok(self.attached()?.pool.is_shutdown())
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.attached()?.pool.stats();
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

    fn shutdown_arena(&self) -> PyResult<()> {
        if self.lock().is_none() {
            return Ok(());
        }
        self.attached()?.pool.shutdown_arena();
        Ok(())
    }

    fn close(&self) -> PyResult<()> {
        self.shutdown_arena()?;
        // Views, writers and readers still alive keep the mapping.
        drop(self.lock().take());
        Ok(())
    }

    fn unlink(&self) -> PyResult<()> {
        // A memfd has no name: nothing to remove. Kept for named pools.
        let attached = self.lock().clone();
        match attached {
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
        let attached = self.attached()?;
        let (ptr, len) = attached.pool.segment_raw(index).map_err(|_| {
            pyo3::exceptions::PyIndexError::new_err(format!(
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
