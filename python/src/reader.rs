//! `Reader`: the consumer endpoint SPDL's parent restores through.
//!
//! Each envelope names its unit: the offsets and the span in it are tokens
//! that carry the unit's id (see [`crate::token`]). So the reader takes
//! exactly that unit from the pool (the crate's `recv_id`), whatever order
//! units were committed and envelopes arrived in, from any number of
//! writers; anything that does not add up raises `ArenaDesyncError`.

use crate::attach::{Attached, Link};
use crate::buffer::{Keeper, memoryview};
use crate::cell::GilCell;
use crate::errors::{ArenaDesyncError, size_arg, to_py};
use crate::token;
use pyo3::exceptions::{PyTimeoutError, PyTypeError};
use pyo3::prelude::*;
use segpool::{Error, Unit, UnitId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A received unit with the attachment it came through (which says whether
/// this process inherited it through fork). Dropping it releases the
/// segment (the crate keeps a unit inherited through fork from releasing
/// anything).
#[derive(Clone)]
struct Held {
    unit: Unit,
    attached: Arc<Attached>,
}

/// The unit of the envelope being restored.
struct Current {
    id: UnitId,
    held: Held,
}

/// A writable memoryview of `unit`'s bytes, which keeps the unit (so its
/// segment stays HELD, and the mapping mapped) until Python collects the
/// last view derived from it.
fn unit_view<'py>(py: Python<'py>, unit: Unit) -> PyResult<Bound<'py, PyAny>> {
    let (ptr, len) = (unit.as_mut_ptr(), unit.len());
    // SAFETY: the crate's "Raw access" contract: `len` bytes at `ptr` are
    // the received unit's, mapped and handed to no writer while the unit
    // the keeper owns lives; they are this process's to read and write
    // meanwhile, and no Rust reference to them is made in this binding.
    unsafe { memoryview(py, Keeper::new(unit), ptr, len) }
}

/// Reader endpoint: hands out zero-copy views of each unit's binaries.
#[pyclass(module = "segpool", frozen)]
pub struct Reader {
    link: Arc<Link>,
    /// Changed only with the GIL held (see [`GilCell`]).
    current: GilCell<Option<Current>>,
}

impl Reader {
    pub(crate) fn new(py: Python<'_>, link: Arc<Link>) -> PyResult<Reader> {
        link.attached(py, "open_reader()")?;
        Ok(Reader {
            link,
            current: GilCell::new(None),
        })
    }

    /// The unit named `id` out of the pool, via this process's attachment.
    fn take(&self, py: Python<'_>, id: UnitId, what: &str) -> PyResult<Held> {
        let attached = self.link.attached(py, what)?;
        match attached.reader.recv_id(id).map_err(to_py)? {
            Some(unit) => Ok(Held { unit, attached }),
            None => Err(ArenaDesyncError::new_err(format!(
                "{what}: the pool has no committed unit {:#x} for this envelope: it was already \
                 ended (an envelope restored twice?), it belongs to another pool, or another \
                 process took it",
                id.to_bits()
            ))),
        }
    }

    /// Runs `f` on the unit `id`, making it the current one if it is not:
    /// `ArenaDesyncError` if another envelope's unit is open.
    fn with_unit<T>(
        &self,
        py: Python<'_>,
        id: UnitId,
        what: &str,
        f: impl FnOnce(&Held) -> PyResult<T>,
    ) -> PyResult<T> {
        let open = self.current.with(py, |c| match c {
            // A half-read unit inherited through fork is the parent's: never
            // hand out views of it here (dropping it frees nothing).
            Some(cur) if cur.held.attached.is_inherited() => (c.take(), None),
            Some(cur) => (None, Some(cur.id)),
            None => (None, None),
        });
        match open.1 {
            Some(open) if open != id => {
                return Err(ArenaDesyncError::new_err(format!(
                    "{what}: this envelope names unit {:#x}, but the envelope of unit {:#x} is \
                     still open (read_binary without end_unit): end it with end_unit(its span), \
                     or call reset() to drop it",
                    id.to_bits(),
                    open.to_bits()
                )));
            }
            Some(_) => {}
            None => {
                let held = self.take(py, id, what)?;
                self.current.with(py, |c| *c = Some(Current { id, held }));
            }
        }
        // The unit stays in the cell; a clone of its handle serves `f`.
        let held = self
            .current
            .with(py, |c| c.as_ref().map(|cur| cur.held.clone()));
        f(&held.expect("set above"))
    }
}

#[pymethods]
impl Reader {
    /// Always true: `read_binary` returns live views of shared memory.
    #[classattr]
    fn zero_copy() -> bool {
        true
    }

    /// Prepares for a new iteration: forgets a half-read unit. Views from
    /// earlier iterations stay valid; queued units are not dropped.
    fn reset(&self, py: Python<'_>) {
        let old = self.current.replace(py, None);
        drop(old);
    }

    /// A writable memoryview of `nbytes` at `offset` (a token from
    /// `write_binary`) in the unit it names, aliasing shared memory. The
    /// unit's segment returns to the pool when the last view derived from it
    /// (slices, arrays, tensors) is collected.
    fn read_binary<'py>(
        &self,
        py: Python<'py>,
        offset: &Bound<'py, PyAny>,
        nbytes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (id, offset) = token::parse_offset(offset)?;
        let nbytes = size_arg(nbytes, "nbytes")?;
        self.with_unit(py, id, "read_binary()", |held| {
            let view = held.unit.view(offset, nbytes).map_err(|_| {
                ArenaDesyncError::new_err(format!(
                    "read_binary(): {nbytes} bytes at offset {offset} run past unit {:#x} ({} \
                     bytes): this envelope does not describe that unit",
                    id.to_bits(),
                    held.unit.len()
                ))
            })?;
            unit_view(py, view)
        })
    }

    /// Ends the unit the span (a token from `commit_unit`) names, taking it
    /// from the pool if it had no read. Its segment is reclaimed once no view
    /// of it is left and every anchor in `pinned` has been collected.
    #[pyo3(signature = (span, pinned = None))]
    fn end_unit(
        &self,
        py: Python<'_>,
        span: &Bound<'_, PyAny>,
        pinned: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let id = token::parse_span(span)?;
        self.with_unit(py, id, "end_unit()", |_| Ok(()))?;
        let Current { held, .. } = self
            .current
            .replace(py, None)
            .expect("with_unit left the unit open");
        let Some(pinned) = pinned.filter(|p| !p.is_none()) else {
            return Ok(());
        };
        // SPDL's contract: the region stays reserved until every anchor is
        // released, even one that holds no view of ours (an array made over
        // the view's address). Each anchor gets a keeper of the unit that a
        // `weakref.finalize` lets go of when the anchor is collected.
        let finalize = py.import("weakref")?.getattr("finalize")?;
        for (i, anchor) in pinned.try_iter()?.enumerate() {
            let anchor = anchor?;
            // A zero-length view that keeps the unit: nothing is read or
            // written through it.
            let token = unit_view(py, held.unit.view(0, 0).map_err(to_py)?)?;
            finalize
                .call1((&anchor, token.getattr("release")?))
                .map_err(|e| {
                    if e.is_instance_of::<PyTypeError>(py) {
                        PyTypeError::new_err(format!(
                            "end_unit(): pinned[{i}], a {}, cannot be weakly referenced, so the \
                             pool cannot tell when it is released: pin the array or tensor \
                             that holds the view instead",
                            anchor
                                .get_type()
                                .name()
                                .map_or_else(|_| "?".to_string(), |n| n.to_string())
                        ))
                    } else {
                        e
                    }
                })?;
        }
        Ok(())
    }

    /// Waits for the next published unit, from any writer, and returns a
    /// writable memoryview over the whole of it (offset 0 is the unit's
    /// first byte). The wait spins briefly, then sleeps on the pool's futex
    /// with the GIL released; a signal runs Python's handlers (Ctrl-C raises
    /// `KeyboardInterrupt`) and the wait goes on with the time left.
    /// `timeout=None` waits for ever; `TimeoutError` when it runs out. The
    /// unit's segment returns to the pool when the last view derived from
    /// the memoryview (slices, arrays, tensors) is collected.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let attached = self.link.attached(py, "recv()")?;
        let deadline = match timeout {
            Some(t) if t.is_nan() || t < 0.0 => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "recv(): timeout must be None or a number >= 0, not {t}"
                )));
            }
            Some(t) => Duration::try_from_secs_f64(t)
                .ok()
                .and_then(|d| Instant::now().checked_add(d)),
            None => None,
        };
        let unit = loop {
            if let Some(unit) = attached.reader.try_recv().map_err(to_py)? {
                break unit;
            }
            // No deadline: no timeout, or one too large to add (for ever).
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(PyTimeoutError::new_err(format!(
                    "recv(): no unit was published within {}s",
                    timeout.unwrap_or(0.0)
                )));
            }
            let reader = &attached.reader;
            match py.detach(|| reader.recv_timeout(left)) {
                Ok(unit) => break unit,
                Err(Error::Interrupted) => py.check_signals()?,
                Err(Error::Timeout(_)) => continue,
                Err(e) => return Err(to_py(e)),
            }
        };
        unit_view(py, unit)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let pool = self.link.describe();
        let open = self
            .current
            .with(py, |c| c.as_ref().map(|cur| (cur.id, cur.held.unit.len())));
        match open {
            Some((id, len)) => format!(
                "<segpool.Reader of {pool}: restoring unit {:#x}, {len} bytes>",
                id.to_bits()
            ),
            None => format!("<segpool.Reader of {pool}: no unit open>"),
        }
    }
}
