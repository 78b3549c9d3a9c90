//! # segpool v1, frozen
//!
//! The segpool library as it stood before the protocol-v2 rewrite (commit
//! `5acaaa0`), kept so that `benches/peers` can measure v1 and the live
//! crate side by side in one run. Only what the benchmark drives is here:
//! the pool, its writer and reader, and the futex counter. The worker
//! supervision (`subprocess`) and the test-only heap control block are
//! left out, and so are what only they or the `bytes`/`bytemuck` features
//! used (`Control::writer_of`, `Unit::into_bytes`, `Unit::cast_slice`;
//! `Bitmap::free_count` is test-only here). Every other line is v1's.
//!
//! Not for use outside the benchmark: it gets no fixes. A v1 pool and a
//! live pool never meet, since each pool is its own memfd and the benchmark
//! attaches each child with the crate that made its pool; once the live
//! layout's `VERSION` moves past 1, attaching across crates also fails.
//!
//! Where things live: `protocol` holds every state transition and wait;
//! `bitmap` and `ring` are its two lock-free structures; `layout` is the
//! control page; `sync` is the loom seam; `futex` makes the one syscall;
//! `region` maps memory.
#![cfg(target_os = "linux")]
#![deny(missing_docs)]

mod bitmap;
mod error;
mod layout;
mod protocol;
mod ring;
mod sync;

#[cfg(not(loom))]
mod futex;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod policy;
#[cfg(not(loom))]
mod pool;
#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
mod writer;

pub use error::{Error, Result};
pub use layout::MAX_COUNT;
pub use protocol::Stats;

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
