//! `Writer`: the producer endpoint SPDL's worker writes through.

use crate::buffer::{Keeper, Source, memoryview};
use crate::errors::{timeout, to_py};
use crate::pool::{Attached, Pool};
use pyo3::exceptions::{PyBufferError, PyRuntimeError};
use pyo3::prelude::*;
use segpool::{Error, UnitWriter};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one blocked wait lasts before the GIL is taken back to look for
/// signals: Ctrl-C interrupts a blocked `begin_unit` within this.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// Copies at least this big run with the GIL released.
const DETACHED_COPY: usize = 256 << 10;

/// The unit being written, shared with the loans `reserve` handed out: it is
/// aborted when the writer and every loan let go of it without a commit.
pub(crate) struct Lease {
    unit: Mutex<Option<UnitWriter>>,
    attached: Arc<Attached>,
}

impl Lease {
    fn with<T>(&self, f: impl FnOnce(&mut UnitWriter) -> T) -> T {
        let mut unit = self.unit.lock().unwrap_or_else(|e| e.into_inner());
        f(unit
            .as_mut()
            .expect("a lease holds its unit until committed"))
    }
}

/// A raw source pointer that may cross into a GIL-free closure: the buffer
/// export it points into outlives the closure (the `Source` stays on the
/// calling thread's stack).
struct SendPtr(*const u8);
// SAFETY: only read inside `Python::detach`, while the `Source` that keeps
// the memory exported is alive on the caller's stack.
unsafe impl Send for SendPtr {}

/// Writer endpoint: opens units, copies or lends binaries into them, and
/// publishes them in order. Use it from one thread.
#[pyclass(module = "segpool._segpool")]
pub struct Writer {
    pool: Py<Pool>,
    endpoint: Option<(Arc<Attached>, segpool::Writer)>,
    unit: Option<Arc<Lease>>,
}

impl Writer {
    pub(crate) fn new(pool: &Bound<'_, Pool>) -> PyResult<Writer> {
        let attached = pool.get().attached()?;
        let writer = attached.pool.open_writer();
        Ok(Writer {
            pool: pool.clone().unbind(),
            endpoint: Some((attached, writer)),
            unit: None,
        })
    }

    /// The crate writer for this process (a fresh one after a fork).
    fn endpoint(&mut self) -> PyResult<(Arc<Attached>, segpool::Writer)> {
        match &self.endpoint {
            Some((a, w)) if !a.is_inherited() => Ok((a.clone(), w.clone())),
            _ => {
                let attached = self.pool.get().attached()?;
                let writer = attached.pool.open_writer();
                self.endpoint = Some((attached.clone(), writer.clone()));
                Ok((attached, writer))
            }
        }
    }

    fn open(&self, what: &str) -> PyResult<Arc<Lease>> {
        self.unit.clone().ok_or_else(|| {
            PyRuntimeError::new_err(format!("{what} outside a unit: call begin_unit() first"))
        })
    }
}

/// Waits for a free segment in slices, checking for signals between them.
/// `secs` may be infinite (wait as long as it takes).
fn wait_for_segment(py: Python<'_>, writer: &segpool::Writer, secs: f64) -> PyResult<UnitWriter> {
    let deadline = Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| Instant::now().checked_add(d));
    loop {
        let slice = match deadline {
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(timeout(secs));
                }
                (deadline - now).min(WAIT_SLICE)
            }
            None => WAIT_SLICE,
        };
        match py.detach(|| writer.begin_unit_timeout(slice)) {
            Ok(unit) => return Ok(unit),
            Err(Error::Timeout(_)) => {}
            Err(e) => return Err(to_py(e)),
        }
        py.check_signals()?;
    }
}

#[pymethods]
impl Writer {
    /// Prepares for a new iteration: aborts a unit left open. Units already
    /// published stay queued, and restored views stay valid.
    fn reset(&mut self) {
        self.unit = None;
    }

    /// Claims a free segment for a new unit, waiting up to `acquire_timeout`
    /// (GIL released; Ctrl-C interrupts). `BufferError` if none can be had.
    fn begin_unit(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.unit.is_some() {
            return Err(PyRuntimeError::new_err(
                "begin_unit() while a unit is open: call commit_unit() or abort_unit() first",
            ));
        }
        let (attached, writer) = self.endpoint()?;
        let secs = self.pool.get().acquire_timeout();
        let unit = if secs == 0.0 {
            writer.begin_unit_timeout(Duration::ZERO).map_err(to_py)?
        } else {
            match writer.try_begin_unit().map_err(to_py)? {
                Some(unit) => unit,
                None => wait_for_segment(py, &writer, secs)?,
            }
        };
        self.unit = Some(Arc::new(Lease {
            unit: Mutex::new(Some(unit)),
            attached,
        }));
        Ok(())
    }

    /// Copies a contiguous bytes-like object into the unit at the next
    /// 64-byte-aligned offset; returns `(offset, nbytes)`.
    fn write_binary(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<(usize, usize)> {
        let lease = self.open("write_binary()")?;
        let src = Source::new(data)?;
        let n = src.len();
        let from = SendPtr(src.as_ptr());
        lease.with(|unit| {
            let (offset, dst) = unit.reserve(n).map_err(to_py)?;
            if n == 0 {
                return Ok((offset, 0));
            }
            let copy = move || {
                let from = from;
                // SAFETY: `from` points at `n` readable bytes (the `Source`
                // export lives until after this call); `dst` is `n` bytes of
                // the unit's segment, ours alone until commit. They may
                // overlap (the source can be a view of this very segment,
                // `pool._segment(i)`), so a memmove, not a memcpy.
                unsafe { std::ptr::copy(from.0, dst.as_mut_ptr(), n) }
            };
            if n >= DETACHED_COPY {
                py.detach(copy);
            } else {
                copy();
            }
            Ok((offset, n))
        })
    }

    /// The loan call: reserves `nbytes` at the next 64-byte-aligned offset
    /// and returns `(offset, memoryview)` to fill in place. Release the
    /// memoryview (and arrays made from it) before `commit_unit()`.
    fn reserve<'py>(
        &mut self,
        py: Python<'py>,
        nbytes: usize,
    ) -> PyResult<(usize, Bound<'py, PyAny>)> {
        let lease = self.open("reserve()")?;
        let (offset, seg) = lease.with(|unit| {
            let (offset, _) = unit.reserve(nbytes).map_err(to_py)?;
            Ok::<_, PyErr>((offset, unit.segment()))
        })?;
        let (base, _) = lease.attached.pool.segment_raw(seg).map_err(to_py)?;
        // SAFETY: `offset + nbytes <= segment_size` (the crate just reserved
        // it), so the range lies in segment `seg` of the mapping the lease's
        // attachment keeps alive; the segment is this unit's alone until
        // commit, which refuses while this loan lives.
        let ptr = unsafe { base.as_ptr().add(offset) };
        // SAFETY: as above; the keeper holds the lease, so the segment stays
        // this unit's for as long as the memoryview can be used.
        let view = unsafe { memoryview(py, Keeper::Loan(lease), ptr, nbytes)? };
        Ok((offset, view))
    }

    /// Publishes the unit; returns its span (the bytes it covers).
    fn commit_unit(&mut self) -> PyResult<usize> {
        let lease = self.open("commit_unit()")?;
        self.unit = None;
        match Arc::try_unwrap(lease) {
            Ok(lease) => {
                let unit = lease.unit.lock().unwrap_or_else(|e| e.into_inner()).take();
                unit.expect("a lease holds its unit until committed")
                    .commit_unit()
                    .map_err(to_py)
            }
            Err(lease) => {
                let loans = Arc::strong_count(&lease) - 1;
                self.unit = Some(lease);
                Err(PyBufferError::new_err(format!(
                    "{loans} memoryview(s) from reserve() still alive: release them (del them and \
                     any arrays made from them, or call .release()) before commit_unit(), so \
                     nothing can write the unit once it is published"
                )))
            }
        }
    }

    /// Discards the unit being written; its segment goes back to the pool
    /// (once loans from `reserve()`, if any, are released).
    fn abort_unit(&mut self) {
        self.unit = None;
    }

    /// Bytes the open unit spans so far (0 outside a unit).
    #[getter]
    fn unit_len(&self) -> usize {
        self.unit.as_ref().map_or(0, |l| l.with(|u| u.len()))
    }
}
