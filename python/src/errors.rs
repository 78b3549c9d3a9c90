//! The one place a `segpool::Error` becomes a Python exception, and the
//! binding's own argument errors.
//!
//! What SPDL's users catch: `BufferError` when no segment can be had (Mode A,
//! timeout, shutdown) or a unit does not fit; `ValueError` for a
//! configuration or argument no pool can take. Each message says what to
//! change.

use pyo3::exceptions::{PyBufferError, PyOSError, PyOverflowError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use segpool::Error;

pyo3::create_exception!(
    segpool,
    ArenaDesyncError,
    PyRuntimeError,
    "Envelopes and units are out of step: the reader refused to pair an envelope \
     with a unit that is not its own."
);

/// The exception for a crate error.
pub(crate) fn to_py(e: Error) -> PyErr {
    match e {
        Error::InvalidConfig(why) => PyValueError::new_err(format!(
            "invalid SharedMemorySegmentPool configuration: {why}"
        )),
        Error::TooLarge {
            requested,
            offset,
            needed,
            segment_size,
        } => PyBufferError::new_err(format!(
            "unit exceeds segment_size ({segment_size} bytes): writing {requested} bytes at \
             offset {offset} needs {needed}; nothing was written. Increase \
             SharedMemorySegmentPool segment_size to the largest unit (the sum of its binaries, \
             each 64-byte aligned)"
        )),
        Error::Exhausted { count } => PyBufferError::new_err(format!(
            "segment pool exhausted: all {count} segments are in use and acquire_timeout=0 \
             (non-blocking). Increase SharedMemorySegmentPool count, release restored views \
             sooner, or set acquire_timeout > 0 to wait for a segment"
        )),
        Error::Timeout(waited) => timeout(waited.as_secs_f64()),
        Error::Shutdown => PyBufferError::new_err(
            "segment pool shut down: shutdown_arena() or close() was called on it (in this or \
             another process, e.g. by the consumer's teardown), so it accepts no new units",
        ),
        Error::Stale => PyBufferError::new_err(
            "the unit was taken back by the pool (reset or recovery) before it was committed",
        ),
        Error::WitnessLost => PyRuntimeError::new_err(
            "segpool: this process's liveness descriptor for the pool was closed by someone \
             else (os.closerange, close_range or os.dup2 over it), so other processes may take \
             this one for dead and reuse its segments: the pool refuses to go on here. Keep \
             descriptors you did not open out of closerange/dup2, and attach the pool again \
             (a new SharedMemorySegmentPool, or pickle.loads(pickle.dumps(pool)))",
        ),
        // Only an interruptible wait returns it, and every such wait in this
        // binding handles it (runs the signal handlers and waits again).
        Error::Interrupted => PyRuntimeError::new_err(
            "segpool: an interrupted wait escaped the binding (a bug in segpool's binding)",
        ),
        Error::Io { op, source } => PyOSError::new_err(format!("segpool: {op}: {source}")),
        other => PyRuntimeError::new_err(format!("segpool: {other}")),
    }
}

/// `BufferError` for a `begin_unit` that waited `secs` in vain.
pub(crate) fn timeout(secs: f64) -> PyErr {
    PyBufferError::new_err(format!(
        "segment pool exhausted: no free segment after waiting {secs}s (acquire_timeout); \
         the consumer is releasing views too slowly or has stalled. Increase \
         SharedMemorySegmentPool count or acquire_timeout, or release restored views sooner"
    ))
}

/// The error for any use of a pool closed in this process.
pub(crate) fn closed(what: &str) -> PyErr {
    PyValueError::new_err(format!(
        "{what} on a closed pool: close() was called on this SharedMemorySegmentPool in this \
         process. Views already restored stay valid; open a new pool for new units"
    ))
}

/// A non-negative integer argument as `usize`. `ValueError` naming the
/// argument for a negative or too large value (where a plain conversion
/// would raise `OverflowError`), `TypeError` for what is not an integer.
pub(crate) fn size_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<usize> {
    match obj.extract::<usize>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            if obj.lt(0)? {
                Err(PyValueError::new_err(format!(
                    "{what} must be a non-negative integer, got {obj}"
                )))
            } else {
                Err(PyValueError::new_err(format!(
                    "{what}={obj} is too large: at most {} on this machine",
                    usize::MAX
                )))
            }
        }
        Err(e) => Err(e),
    }
}
