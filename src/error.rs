//! The one error type of the crate.

use std::time::Duration;

/// Everything that can go wrong, each with a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size or count that no pool can have (zero, too many, overflowing).
    #[error("invalid pool configuration: {0}")]
    InvalidConfig(String),

    /// A write that would run past the end of the segment. Nothing was written;
    /// the unit is still open and can be aborted or committed as it is.
    #[error(
        "unit too large: writing {requested} bytes at offset {offset} needs {needed} bytes, \
         but a segment holds {segment_size}; raise segment_size"
    )]
    TooLarge {
        /// Bytes the caller asked to write.
        requested: usize,
        /// Aligned offset the write would have started at.
        offset: usize,
        /// Bytes the unit would span after the write.
        needed: usize,
        /// Capacity of one segment.
        segment_size: usize,
    },

    /// Every segment is in use and `acquire_timeout` is zero (non-blocking mode).
    #[error("pool exhausted: all {count} segments are in use and acquire_timeout is 0")]
    Exhausted {
        /// Segments in the pool.
        count: usize,
    },

    /// Nothing became available within the timeout.
    #[error("timed out after {0:?} waiting for the pool")]
    Timeout(Duration),

    /// `shutdown_arena` was called; the pool accepts no new units.
    #[error("the pool was shut down")]
    Shutdown,

    /// A lease or unit from before a `reset` (or one the pool took back) was used.
    #[error("stale handle: the segment was reset or recovered since this unit began")]
    Stale,

    /// An offset/length outside a unit.
    #[error("out of bounds: {offset}+{len} exceeds the unit's {available} bytes")]
    OutOfBounds {
        /// Requested offset.
        offset: usize,
        /// Requested length.
        len: usize,
        /// Bytes available.
        available: usize,
    },

    /// A typed view whose start is not aligned for the element type.
    #[error("misaligned view: offset {offset} is not a multiple of {align}")]
    Misaligned {
        /// Requested offset.
        offset: usize,
        /// Alignment the element type needs.
        align: usize,
    },

    /// The shared control page holds values no correct peer writes.
    #[error("corrupt control page: {0}")]
    Corrupt(String),

    /// The shared object is not a segpool pool of this version.
    #[error("incompatible shared object: {0}")]
    Incompatible(String),

    /// A pool handle string that does not parse.
    #[error("bad pool handle: {0}")]
    BadHandle(String),

    /// The process on the other side exited or was killed.
    #[error("peer process {pid} is gone: {how}")]
    PeerGone {
        /// Its pid.
        pid: u32,
        /// How it ended (exit code or signal).
        how: String,
    },

    /// This handle was inherited through `fork`: it belongs to the parent,
    /// which still owns its segments, so it refuses to act here.
    #[error(
        "this pool handle was inherited through fork and is inert in the child; \
         attach again in the child (SegmentPool::attach with the parent's handle, \
         whose fd the child inherited)"
    )]
    Forked,

    /// A blocked call of an [`interruptible`](crate::Writer::interruptible)
    /// endpoint was interrupted by a signal: look at the signal (a Python
    /// binding runs its handlers), then call again with the time left.
    #[error("a blocked wait was interrupted by a signal; call again to keep waiting")]
    Interrupted,

    /// This process's liveness lock on the pool is gone: a descriptor the
    /// pool opened for itself was closed behind its back (`close_range`,
    /// Python's `os.closerange`, a `dup2` over it), so the kernel told every
    /// peer this process was dead, and they may have taken back its
    /// segments. Nothing more is written or read through this attachment.
    #[error(
        "this process's liveness lock on the pool was released (a descriptor the pool \
         opened was closed behind its back, e.g. by close_range, os.closerange or dup2), \
         so peers may have taken back its segments; attach the pool again, and do not \
         close descriptors you did not open"
    )]
    WitnessLost,

    /// Every entry of the participant table is taken by a live process.
    #[error(
        "too many processes have this pool open (at most {max}); close the pool in \
         processes that no longer use it"
    )]
    TooManyParticipants {
        /// Entries in the table.
        max: usize,
    },

    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result<T, segpool::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg_attr(loom, allow(dead_code))]
impl Error {
    pub(crate) fn io(op: &'static str, source: impl Into<std::io::Error>) -> Error {
        Error::Io {
            op,
            source: source.into(),
        }
    }

    /// An [`Error::Corrupt`], built out of line: the protocol's fast paths
    /// carry only the call, so the formatting stays out of their code.
    #[cold]
    #[inline(never)]
    pub(crate) fn corrupt(what: std::fmt::Arguments<'_>) -> Error {
        Error::Corrupt(what.to_string())
    }
}
