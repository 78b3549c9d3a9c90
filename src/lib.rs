//! # segpool
//!
//! A pool of fixed-size shared-memory segments that moves large payloads
//! (decoded images, tensors, byte blobs) from producer processes to a
//! consumer process without copying them on the read side, nor, with the
//! loan API ([`UnitWriter::reserve`]), on the write side.
//!
//! It is the Rust counterpart of SPDL's `SharedMemorySegmentPool`, with the
//! same names (`begin_unit`, `write_binary`, `commit_unit`, `published`,
//! `reclaimed`, `shutdown_arena`, ...) on a different mechanism:
//! - any free segment is claimed from an **atomic bitmap**, and a segment is
//!   reclaimed the moment its last view drops, out of order: one held unit
//!   never stalls the others;
//! - producers and consumers block on **futex words** in the shared control
//!   page; a sleeper flags the word its waker must touch anyway, so the fast
//!   path makes no syscall, and a sleeper burns no CPU: deaths of peers
//!   reach it as events, not through periodic sweeps;
//! - a **publish ring** in the control page carries tickets in order: the
//!   pool is the whole transport, no side channel;
//! - any number of writers, in any processes;
//! - memory is one **sealed memfd** by default: nothing to leak in
//!   `/dev/shm`, no SIGBUS from a peer that truncates it.
//!
//! Linux only (memfd, futex, `/proc/self/fd`).
//!
//! ```
//! use segpool::SegmentPool;
//! use std::time::Duration;
//!
//! let pool = SegmentPool::builder(1 << 20, 8)
//!     .acquire_timeout(Duration::from_secs(5))
//!     .build()?;
//! let writer = pool.open_writer();
//! let reader = pool.open_reader();
//!
//! std::thread::scope(|s| {
//!     s.spawn(|| {
//!         for i in 0..100u32 {
//!             let mut unit = writer.begin_unit()?;
//!             unit.write_binary(&i.to_le_bytes())?;
//!             unit.commit_unit()?;
//!         }
//!         Ok::<_, segpool::Error>(())
//!     });
//!     for i in 0..100u32 {
//!         let unit = reader.recv()?;           // zero-copy view
//!         assert_eq!(unit.read_binary(0, 4)?, i.to_le_bytes());
//!     }                                        // dropped: segment reclaimed
//!     Ok::<_, segpool::Error>(())
//! })?;
//! # Ok::<(), segpool::Error>(())
//! ```
//!
//! # Raw access
//! [`Unit::as_ptr`], [`Unit::as_mut_ptr`] and [`UnitWriter::as_mut_ptr`]
//! give the address of a unit's bytes in this process's mapping, for a
//! binding that hands them to another runtime without a copy (a Python
//! memoryview, a DLPack tensor). This is the one contract for all three:
//! - **How long the memory is there.** The mapping stays while anything of
//!   the pool lives in this process: the [`SegmentPool`], a [`Writer`],
//!   [`Reader`], [`Unit`] or [`UnitWriter`] of it. Keep one of them beside
//!   the address (the unit itself, typically) and the address stays valid
//!   memory, whatever happens to the unit.
//! - **A received unit's bytes** ([`Unit::len`] of them) are the committed
//!   unit's, and no writer the protocol knows of is handed the segment until
//!   the last clone or view of the unit drops. Read them while you hold one.
//!   They are this process's while it does: writing them is allowed, as
//!   with any buffer its threads share, as long as no Rust reference to them
//!   ([`Unit::as_bytes`], [`Unit::read_binary`], deref of any clone) is alive
//!   meanwhile and no other thread reads or writes them at the same time.
//!   After the last view drops, the address names another unit's bytes:
//!   neither read nor write it.
//! - **A unit being written** is its [`UnitWriter`]'s alone until
//!   [`commit_unit`](UnitWriter::commit_unit) or an abort (which dropping
//!   is): write the ranges that [`UnitWriter::advance`] (or `write_binary`,
//!   `reserve`) returned an offset for, at the address plus that offset, and
//!   nothing past [`UnitWriter::capacity`]. Once the unit is committed, its
//!   bytes are the reader's and then another unit's: the address is still
//!   mapped, but write nothing more through it.
//! - **After `fork`** a unit or unit writer inherited by the child stays
//!   the parent's: the child must not write its bytes (`advance` refuses
//!   there).
//! - A peer that breaks the protocol can still write any byte of the pool:
//!   see the trust boundary below.
//!
//! # Trust boundary
//! The other process may be buggy or hostile. Nothing read from the control
//! page (a segment index, a length, a ticket, a header field) is used
//! before it is checked; a corrupt value gives [`Error::Corrupt`], never an
//! out-of-bounds access, a panic or a hang: every retry loop and every wait
//! is bounded. What no shared-memory transport can prevent is a peer
//! writing payload bytes you are reading (or forging a unit over a segment
//! you are writing): see [`Reader`] for what views promise, and share pools
//! only with processes you would trust with your address space's data.
//!
//! # Where things live
//! `protocol/` holds every state transition and wait, one room per concern
//! (claim, take, recover, lifecycle, census, wait); `bitmap` and `ring`
//! are its two lock-free structures; `layout` is the control page and the
//! one carving of its bytes; `sync` is the loom seam; `futex` makes the
//! one syscall; `mapping` maps memory and `region` is this process's
//! membership in it; `liveness` holds the kernel's witness of each
//! process, `watch` turns deaths into wake-ups, and `fork` keeps all of it
//! whole across `fork`; [`subprocess`] runs worker processes on top of all
//! that. `docs/map.md` gives each file's job and the direction of its
//! imports.

#![cfg(target_os = "linux")]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bitmap;
mod error;
mod heap;
mod layout;
mod protocol;
mod ring;
mod sync;

#[cfg(not(loom))]
mod fork;
#[cfg(not(loom))]
mod futex;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
pub mod inspect;
#[cfg(not(loom))]
mod liveness;
#[cfg(not(loom))]
mod mapping;
#[cfg(not(loom))]
mod policy;
#[cfg(not(loom))]
mod pool;
#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
pub mod subprocess;
#[cfg(not(loom))]
mod watch;
#[cfg(not(loom))]
mod writer;

pub use error::{Error, Result};
pub use layout::{MAX_COUNT, MAX_PARTICIPANTS};
pub use protocol::{ParticipantView, Recovered, Stats, UnitId};

#[cfg(not(loom))]
pub use futex::futex_calls;
#[cfg(not(loom))]
pub use handle::{ENV_VAR, PoolHandle};
#[cfg(not(loom))]
pub use policy::Probe;
#[cfg(not(loom))]
pub use pool::{DEFAULT_ACQUIRE_TIMEOUT, PoolBuilder, SegmentPool};
#[cfg(not(loom))]
pub use reader::{Reader, Unit};
#[cfg(not(loom))]
pub use writer::{UnitWriter, Writer};

/// The protocol's internals, for the loom models, property tests and fuzz
/// targets in this repository. Not a stable API: no semver promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::bitmap::Bitmap;
    pub use crate::heap::{Description, HeapControl};
    pub use crate::layout::{Header, Ident, Layout, Owner, SegmentDesc};
    pub use crate::protocol::{Control, Lease, Taken, Wait};
}
