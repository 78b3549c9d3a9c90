//! `Reader`: the consumer endpoint SPDL's parent restores through.
//!
//! Envelopes reach the parent in the order units were committed, so the
//! reader takes the next unit from the publish ring on the first
//! `read_binary` or `end_unit` of each envelope, and checks the envelope
//! against it rather than pairing the wrong bytes.

use crate::buffer::{Keeper, memoryview};
use crate::errors::{ArenaDesyncError, to_py};
use crate::pool::{Attached, Held, Pool};
use pyo3::prelude::*;
use std::sync::Arc;

/// Reader endpoint: hands out zero-copy views of each unit's binaries.
#[pyclass(module = "segpool._segpool")]
pub struct Reader {
    pool: Py<Pool>,
    endpoint: Option<(Arc<Attached>, segpool::Reader)>,
    /// The unit of the envelope being restored.
    current: Option<Held>,
}

impl Reader {
    pub(crate) fn new(pool: &Bound<'_, Pool>) -> PyResult<Reader> {
        let attached = pool.get().attached()?;
        let reader = attached.pool.open_reader();
        Ok(Reader {
            pool: pool.clone().unbind(),
            endpoint: Some((attached, reader)),
            current: None,
        })
    }

    /// The unit of the current envelope, taken from the ring if not yet.
    fn current(&mut self) -> PyResult<&Held> {
        if self
            .current
            .as_ref()
            .is_some_and(|held| held.attached.is_inherited())
        {
            // A half-read unit inherited through fork is the parent's: never
            // hand out views of it here (dropping it frees nothing).
            self.current = None;
        }
        if self.current.is_none() {
            let (attached, reader) = match &self.endpoint {
                Some((a, r)) if !a.is_inherited() => (a.clone(), r.clone()),
                _ => {
                    let attached = self.pool.get().attached()?;
                    let reader = attached.pool.open_reader();
                    self.endpoint = Some((attached.clone(), reader.clone()));
                    (attached, reader)
                }
            };
            // The worker committed the unit before it sent the envelope, so
            // the unit is published by now: no wait.
            let unit = reader.try_recv().map_err(to_py)?.ok_or_else(|| {
                ArenaDesyncError::new_err(
                    "an envelope arrived but the pool has no published unit for it: envelopes \
                     and units are out of step (did another reader take units from this pool, \
                     or was the envelope produced by a different pool?)",
                )
            })?;
            self.current = Some(Held::new(unit, attached));
        }
        Ok(self.current.as_ref().expect("set above"))
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
    fn reset(&mut self) {
        self.current = None;
    }

    /// A writable memoryview of `nbytes` at `offset` in the current unit,
    /// aliasing shared memory. The unit's segment returns to the pool when
    /// the last view derived from it (slices, arrays, tensors) is collected.
    fn read_binary<'py>(
        &mut self,
        py: Python<'py>,
        offset: usize,
        nbytes: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let held = self.current()?;
        let view = held.unit.view(offset, nbytes).map_err(|_| {
            ArenaDesyncError::new_err(format!(
                "read_binary({offset}, {nbytes}) runs past the current unit (ticket {}, {} \
                 bytes): this envelope does not belong to that unit",
                held.unit.ticket(),
                held.unit.len()
            ))
        })?;
        let (base, _) = held
            .attached
            .pool
            .segment_raw(view.segment())
            .map_err(to_py)?;
        // SAFETY: a received unit starts at offset 0 of its segment and
        // `view` checked `offset + nbytes <= len <= segment_size`, so the
        // range lies inside the segment.
        let ptr = unsafe { base.as_ptr().add(offset) };
        let keeper = Keeper::Unit(Held::new(view, held.attached.clone()));
        // SAFETY: the keeper holds a view of the unit, so the segment stays
        // HELD (no writer is handed it) and mapped while the memoryview lives.
        unsafe { memoryview(py, keeper, ptr, nbytes) }
    }

    /// Ends the current envelope's unit (taking it from the ring if it had no
    /// read). The segment is reclaimed once no view of it is left; `pinned`
    /// is accepted for SPDL's protocol, the views themselves keep the unit.
    #[pyo3(signature = (span, pinned = None))]
    fn end_unit(&mut self, span: usize, pinned: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let _ = pinned;
        self.current()?;
        let held = self.current.take().expect("taken above");
        if held.unit.len() != span {
            return Err(ArenaDesyncError::new_err(format!(
                "the envelope says its unit spans {span} bytes, but the next published unit \
                 (ticket {}) spans {}: envelopes and units are out of step",
                held.unit.ticket(),
                held.unit.len()
            )));
        }
        Ok(())
    }
}
