//! `Writer`: the producer endpoint SPDL's worker writes through.

use crate::attach::{Attached, Link};
use crate::buffer::{Keeper, Source, memoryview};
use crate::cell::GilCell;
use crate::errors::{closed, size_arg, timeout, to_py};
use crate::token;
use pyo3::exceptions::{PyBufferError, PyRuntimeError};
use pyo3::prelude::*;
use segpool::{Error, UnitId, UnitWriter};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Copies at least this big run with the GIL released.
const DETACHED_COPY: usize = 256 << 10;

/// The unit being written, shared with the loans `reserve` handed out: it is
/// aborted when the writer and every loan let go of it without a commit.
struct Lease {
    unit: GilCell<Option<UnitWriter>>,
    id: UnitId,
    attached: Arc<Attached>,
}

impl Lease {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mut UnitWriter) -> T) -> T {
        self.unit.with(py, |unit| {
            f(unit
                .as_mut()
                .expect("a lease holds its unit until committed"))
        })
    }
}

/// A raw pointer that may cross into a GIL-free closure.
struct SendPtr<T>(*mut T);
// SAFETY: only dereferenced inside `Python::detach` by the copy below, while
// what it points into is kept alive and unaliased by the caller (see there).
unsafe impl<T> Send for SendPtr<T> {}

/// A call that is using the writer, and from which process (a writer that a
/// thread was using when another thread forked is not in use in the child).
#[derive(Clone, Copy)]
struct Busy {
    pid: u32,
    what: &'static str,
}

/// The writer's state, changed only with the GIL held (see [`GilCell`]).
#[derive(Default)]
struct State {
    unit: Option<Arc<Lease>>,
    /// Set while a call runs (some of them without the GIL).
    busy: Option<Busy>,
}

/// Writer endpoint: opens units, copies or lends binaries into them, and
/// publishes them. Use it from one thread at a time.
#[pyclass(module = "segpool", frozen)]
pub struct Writer {
    link: Arc<Link>,
    state: GilCell<State>,
}

/// Marks the writer busy for the length of one call.
struct Call<'a, 'py> {
    writer: &'a Writer,
    py: Python<'py>,
}

impl Drop for Call<'_, '_> {
    fn drop(&mut self) {
        self.writer.state.with(self.py, |s| s.busy = None);
    }
}

impl Writer {
    pub(crate) fn new(py: Python<'_>, link: Arc<Link>) -> PyResult<Writer> {
        link.attached(py, "open_writer()")?;
        Ok(Writer {
            link,
            state: GilCell::new(State::default()),
        })
    }

    /// Starts call `what`: refuses while another thread is in a call on this
    /// writer, and forgets what a fork left behind (the unit being written
    /// belongs to the parent: the crate keeps it inert here).
    fn enter<'a, 'py>(&'a self, py: Python<'py>, what: &'static str) -> PyResult<Call<'a, 'py>> {
        let pid = std::process::id();
        let (inherited, refused) = self.state.with(py, |s| {
            if let Some(busy) = s.busy.filter(|b| b.pid == pid) {
                return (None, Some(busy));
            }
            let forked =
                s.busy.is_some() || s.unit.as_ref().is_some_and(|l| l.attached.is_inherited());
            let inherited = forked.then(|| std::mem::take(s));
            s.busy = Some(Busy { pid, what });
            (inherited, None)
        });
        drop(inherited);
        if let Some(busy) = refused {
            return Err(PyRuntimeError::new_err(format!(
                "{what}: this Writer is in use by another thread (in {}): a Writer serves one \
                 thread at a time. Give each thread its own writer (pool.open_writer()), or \
                 serialize the calls with a lock",
                busy.what
            )));
        }
        Ok(Call { writer: self, py })
    }

    /// Refuses if the pool was closed in this process.
    fn check_open(&self, py: Python<'_>, what: &str) -> PyResult<()> {
        if self.link.is_closed(py) {
            return Err(closed(what));
        }
        Ok(())
    }

    /// The open unit; `RuntimeError` outside one.
    fn lease(&self, py: Python<'_>, what: &str) -> PyResult<Arc<Lease>> {
        self.state.with(py, |s| s.unit.clone()).ok_or_else(|| {
            PyRuntimeError::new_err(format!(
                "{what} outside a unit: call begin_unit() first (a unit begun before this \
                 process forked belongs to the parent)"
            ))
        })
    }

    /// Reserves `nbytes` in the open unit: the offset in the segment, and
    /// the address of those bytes in this process.
    fn claim(&self, py: Python<'_>, lease: &Lease, nbytes: usize) -> PyResult<(usize, *mut u8)> {
        // `advance` moves the unit's cursor past the bytes without lending
        // them as a slice: the copy and the loans use the unit's address
        // (the crate's raw access contract, "Raw access" in its docs).
        lease.with(py, |unit| {
            let offset = unit.advance(nbytes).map_err(to_py)?;
            // In bounds: `advance` checked `offset + nbytes <= capacity`.
            Ok((offset, unit.as_mut_ptr().wrapping_add(offset)))
        })
    }
}

/// Waits for a free segment with the GIL released, for `secs` (may be
/// infinite). The wait sleeps until a segment comes free, the deadline, or
/// a signal: a signal ends the crate's wait with `Interrupted`, the handlers
/// run here (Ctrl-C raises `KeyboardInterrupt`), and the wait goes on with
/// the time left. Nothing wakes it periodically.
pub(crate) fn wait_for_segment(
    py: Python<'_>,
    writer: &segpool::Writer,
    secs: f64,
) -> PyResult<UnitWriter> {
    let deadline = Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| Instant::now().checked_add(d));
    loop {
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if left.is_zero() {
            // (A zero timeout would mean "do not wait" to the crate.)
            return Err(timeout(secs));
        }
        match py.detach(|| writer.begin_unit_timeout(left)) {
            Ok(unit) => return Ok(unit),
            Err(Error::Interrupted) => py.check_signals()?,
            Err(Error::Timeout(_)) => return Err(timeout(secs)),
            Err(e) => return Err(to_py(e)),
        }
    }
}

#[pymethods]
impl Writer {
    /// Prepares for a new iteration: aborts a unit left open. Units already
    /// published stay queued, and restored views stay valid.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        let _call = self.enter(py, "reset()")?;
        let old = self.state.with(py, |s| s.unit.take());
        drop(old);
        Ok(())
    }

    /// Claims a free segment for a new unit, waiting up to `acquire_timeout`
    /// (GIL released; Ctrl-C interrupts). `BufferError` if none can be had.
    fn begin_unit(&self, py: Python<'_>) -> PyResult<()> {
        let _call = self.enter(py, "begin_unit()")?;
        self.check_open(py, "begin_unit()")?;
        if self.state.with(py, |s| s.unit.is_some()) {
            return Err(PyRuntimeError::new_err(
                "begin_unit() while a unit is open: call commit_unit() or abort_unit() first",
            ));
        }
        let attached = self.link.attached(py, "begin_unit()")?;
        let writer = &attached.writer;
        let secs = self.link.acquire_timeout();
        let unit = if secs == 0.0 {
            writer.begin_unit_timeout(Duration::ZERO).map_err(to_py)?
        } else {
            match writer.try_begin_unit().map_err(to_py)? {
                Some(unit) => unit,
                None => wait_for_segment(py, writer, secs)?,
            }
        };
        let lease = Arc::new(Lease {
            id: unit.id(),
            unit: GilCell::new(Some(unit)),
            attached: attached.clone(),
        });
        self.state.with(py, |s| s.unit = Some(lease));
        Ok(())
    }

    /// Copies a contiguous bytes-like object into the unit at the next
    /// 64-byte-aligned offset; returns `(offset, nbytes)`, the offset being
    /// an opaque token that names the unit.
    fn write_binary(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<(u128, usize)> {
        let _call = self.enter(py, "write_binary()")?;
        self.check_open(py, "write_binary()")?;
        let lease = self.lease(py, "write_binary()")?;
        let src = Source::new(data)?;
        let n = src.len();
        let (offset, dst) = self.claim(py, &lease, n)?;
        let (from, to) = (SendPtr(src.as_ptr().cast_mut()), SendPtr(dst));
        let copy = move || {
            let (from, to) = (from, to);
            // SAFETY: `from` points at `n` readable bytes, exported by `src`
            // until it drops after this call; `to` at the `n` bytes the crate
            // just claimed in this unit, which are this unit's alone until
            // commit, and `lease`, held here, keeps the unit open and the
            // mapping alive (the crate's "Raw access" contract). Raw pointers only, and a memmove:
            // the source may be a view of this very segment
            // (`pool._segment(i)`), so the two ranges may overlap.
            unsafe { std::ptr::copy(from.0.cast_const(), to.0, n) }
        };
        if n >= DETACHED_COPY {
            py.detach(copy);
        } else {
            copy();
        }
        drop(src);
        Ok((token::offset(lease.id, offset), n))
    }

    /// The loan call: reserves `nbytes` at the next 64-byte-aligned offset
    /// and returns `(offset, memoryview)` to fill in place. Release the
    /// memoryview (and arrays made from it) before `commit_unit()`.
    fn reserve<'py>(
        &self,
        py: Python<'py>,
        nbytes: &Bound<'py, PyAny>,
    ) -> PyResult<(u128, Bound<'py, PyAny>)> {
        let _call = self.enter(py, "reserve()")?;
        self.check_open(py, "reserve()")?;
        let nbytes = size_arg(nbytes, "nbytes")?;
        let lease = self.lease(py, "reserve()")?;
        let (offset, ptr) = self.claim(py, &lease, nbytes)?;
        let id = lease.id;
        // SAFETY: `ptr` is the `nbytes` the crate just claimed in this unit;
        // the keeper holds the lease, whose unit writer and attachment keep
        // the mapping alive, and the bytes stay this unit's (commit refuses
        // while a loan lives, unless the caller promises with `lent=True`
        // to write no more) for as long as the memoryview can be used: the
        // crate's "Raw access" contract.
        let view = unsafe { memoryview(py, Keeper::new(lease), ptr, nbytes)? };
        Ok((token::offset(id, offset), view))
    }

    /// Publishes the unit; returns its span, an opaque token that names it.
    /// `lent=True` publishes it even while memoryviews from `reserve()` are
    /// alive: they stay valid memory, and the caller promises not to write
    /// through them any more (the reader may be reading the unit).
    #[pyo3(signature = (lent = false))]
    fn commit_unit(&self, py: Python<'_>, lent: bool) -> PyResult<u64> {
        let _call = self.enter(py, "commit_unit()")?;
        self.check_open(py, "commit_unit()")?;
        let lease = self.lease(py, "commit_unit()")?;
        let loans = Arc::strong_count(&lease) - 2; // ours and the state's
        if loans > 0 && !lent {
            return Err(PyBufferError::new_err(format!(
                "{loans} memoryview(s) from reserve() still alive: release them (del them and \
                 any arrays made from them, or call .release()) before commit_unit(), so \
                 nothing can write the unit once it is published"
            )));
        }
        let unit = lease.unit.replace(py, None);
        let old = self.state.with(py, |s| s.unit.take());
        drop(old);
        let unit = unit.expect("a lease holds its unit until committed");
        unit.commit_unit().map_err(to_py)?;
        Ok(token::span(lease.id))
    }

    /// Discards the unit being written; its segment goes back to the pool
    /// (once loans from `reserve()`, if any, are released).
    fn abort_unit(&self, py: Python<'_>) -> PyResult<()> {
        let _call = self.enter(py, "abort_unit()")?;
        let old = self.state.with(py, |s| s.unit.take());
        drop(old);
        Ok(())
    }

    /// Bytes the open unit spans so far (0 outside a unit).
    #[getter]
    fn unit_len(&self, py: Python<'_>) -> usize {
        let lease = self.state.with(py, |s| s.unit.clone());
        lease.map_or(0, |l| l.with(py, |u| u.len()))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let pool = self.link.describe();
        let lease = self.state.with(py, |s| s.unit.clone());
        match lease {
            Some(l) => {
                let (seg, len) = l.with(py, |u| (u.segment(), u.len()));
                format!("<segpool.Writer of {pool}: writing a unit in segment {seg}, {len} bytes>")
            }
            None => format!("<segpool.Writer of {pool}: no unit open>"),
        }
    }
}
