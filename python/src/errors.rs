//! The one place a `segpool::Error` becomes a Python exception.
//!
//! What SPDL's users catch: `BufferError` when no segment can be had (Mode A,
//! timeout, shutdown) or a unit does not fit; `ValueError` for a
//! configuration no pool can have. Each message says what to change.

use pyo3::exceptions::{PyBufferError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use segpool::Error;

pyo3::create_exception!(
    _segpool,
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
            "segment pool shut down (shutdown_arena was called, e.g. by the consumer's \
             teardown): it accepts no new units",
        ),
        Error::Stale => PyBufferError::new_err(
            "the unit was taken back by the pool (reset or recovery) before it was committed",
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

/// The error for any use of a closed pool.
pub(crate) fn closed() -> PyErr {
    PyValueError::new_err(
        "the SharedMemorySegmentPool is closed in this process; views already restored stay \
         valid, but open a new pool for new units",
    )
}
