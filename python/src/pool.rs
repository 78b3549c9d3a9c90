//! `Pool`: the native half of `segpool.SharedMemorySegmentPool`.
//!
//! It holds the [`Link`] its writers and readers share: this process's
//! attachment, which `Link::attached` makes again after a fork.

use crate::attach::{Attached, Link};
use crate::buffer::{Keeper, memoryview};
use crate::errors::{size_arg, to_py};
use crate::reader::Reader;
use crate::writer::Writer;
use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use segpool::{Error, PoolHandle, SegmentPool};
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

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
    link: Arc<Link>,
}

impl Pool {
    fn new_attached(attached: Arc<Attached>, acquire_timeout: f64) -> Pool {
        Pool {
            link: Link::new(attached, acquire_timeout),
        }
    }

    /// The link the pool's endpoints share (`ItemWriter`, `ItemReader`).
    pub(crate) fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    /// This process's attachment (see [`Link::attached`]).
    fn attached(&self, py: Python<'_>, what: &str) -> PyResult<Arc<Attached>> {
        self.link.attached(py, what)
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
        Ok(Pool::new_attached(Attached::new(pool), acquire_timeout))
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
        if fd < 0 {
            return Err(PyValueError::new_err(format!(
                "fd must be an open file descriptor (>= 0), got {fd}"
            )));
        }
        // SAFETY: `fd` is open for the whole call: the package's loader
        // (`_attached` in segpool/__init__.py) opened it and closes it only
        // after this returns. The borrow is only duplicated, at once (the
        // copy is what the handle owns); a number that is not open there
        // (a hand-made call of this private method) fails that `dup` with
        // EBADF, and a wrong open file fails `from_fd`'s checks.
        let own = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| {
                to_py(Error::Io {
                    op: "dup (pool fd)",
                    source: e,
                })
            })?;
        let handle = PoolHandle::from_fd(own, timeout).map_err(to_py)?;
        if handle.len() != total_len {
            return Err(PyRuntimeError::new_err(format!(
                "fd {fd} holds a pool of {} bytes, not {total_len}",
                handle.len()
            )));
        }
        let pool = py.detach(|| SegmentPool::attach(&handle)).map_err(to_py)?;
        if (pool.segment_size(), pool.count()) != (segment_size, count) {
            return Err(PyRuntimeError::new_err(format!(
                "fd {fd} holds a pool of {} segments of {} bytes, not {count} of {segment_size}",
                pool.count(),
                pool.segment_size()
            )));
        }
        Ok(Pool::new_attached(Attached::new(pool), acquire_timeout))
    }

    /// The memfd's descriptor number in this process (for pickling).
    fn _fd(&self, py: Python<'_>) -> PyResult<i32> {
        Ok(self.attached(py, "pickling")?.pool.as_fd().as_raw_fd())
    }

    /// Bytes of the whole shared object (the handle's `len`).
    #[getter]
    fn _total_len(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.attached(py, "pickling")?.pool.handle().len())
    }

    #[getter]
    fn segment_size(&self) -> usize {
        self.link.segment_size()
    }

    #[getter]
    fn count(&self) -> usize {
        self.link.count()
    }

    #[getter(acquire_timeout)]
    fn get_acquire_timeout(&self) -> f64 {
        self.link.acquire_timeout()
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
        self.link.is_closed(py)
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
        if self.link.is_closed(py) {
            return Ok(());
        }
        self.attached(py, "shutdown_arena()")?.pool.shutdown_arena();
        Ok(())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.shutdown_arena(py)?;
        // Views, writers and readers still alive keep the mapping.
        drop(self.link.close(py));
        Ok(())
    }

    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        // A memfd has no name: nothing to remove. Kept for named pools.
        match self.link.current(py) {
            Some(a) => a.pool.unlink().map_err(to_py),
            None => Ok(()),
        }
    }

    fn open_writer(&self, py: Python<'_>) -> PyResult<Writer> {
        Writer::new(py, self.link.clone())
    }

    fn open_reader(&self, py: Python<'_>) -> PyResult<Reader> {
        Reader::new(py, self.link.clone())
    }

    /// A writable memoryview over the whole of segment `index`: a test and
    /// debugging hook (`SharedMemorySegmentPool._segment`, as SPDL's pool
    /// has), outside the protocol, so it uses the crate's debugging aid,
    /// `segment_raw`, and nothing else here does. It must be the same
    /// mapping as the units' views (not a mapping of its own through the
    /// fd): SPDL-style tests check that a view's address lies inside it.
    fn _segment<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyAny>> {
        let attached = self.attached(py, "_segment()")?;
        let (ptr, len) = attached.pool.segment_raw(index).map_err(|_| {
            PyIndexError::new_err(format!(
                "segment index {index} out of range: the pool has {} segments",
                self.link.count()
            ))
        })?;
        // SAFETY: the segment lies inside the mapping, which the keeper's
        // `Arc<Attached>` keeps mapped. Writing it is outside the protocol:
        // this is a test and debugging hook, documented as such.
        unsafe { memoryview(py, Keeper::new(attached), ptr.as_ptr(), len) }
    }
}
