//! `segpool._segpool`: the native half of the `segpool` Python package.
//!
//! A thin binding over the `segpool` crate: each class wraps one crate type
//! and translates (arguments in, errors out, GIL released around blocking
//! waits and large copies). Every protocol decision is the crate's, and
//! the binding reaches it through public calls only (`PoolHandle::from_fd`,
//! `AsFd`, `Unit::as_ptr`, `UnitWriter::as_mut_ptr`; their safety contract
//! is the crate's "Raw access" section).
//!
//! | module | its one job | imports |
//! |---|---|---|
//! | `errors` | crate errors as the exceptions SPDL's users expect | nothing |
//! | `cell` | a value guarded by the GIL (no lock a `fork` could split) | nothing |
//! | `buffer` | the buffer protocol: views over pool memory, their keeper, exports of bytes-like objects | nothing |
//! | `token` | a unit's offset and span as opaque tokens | `errors` |
//! | `attach` | the attachment to a pool and the one re-attach after `fork` | `cell`, `errors` |
//! | `writer`, `reader` | `Writer` and `Reader` | `attach`, `buffer`, `cell`, `errors`, `token` |
//! | `pool` | `Pool`: creation, pickling, the endpoints | `attach`, `buffer`, `errors`, `reader`, `writer` |
//! | `item` | whole items for `iterate_in_subprocess`, one native call each way | `attach`, `buffer`, `cell`, `errors`, `pool`, `writer` |
//!
//! Imports run one way (down this table): there is no import circle.

mod attach;
mod buffer;
mod cell;
mod errors;
mod item;
mod pool;
mod reader;
mod token;
mod writer;

use pyo3::prelude::*;

#[pymodule]
fn _segpool(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<pool::Pool>()?;
    m.add_class::<writer::Writer>()?;
    m.add_class::<reader::Reader>()?;
    item::register(m)?;
    m.add("SegmentBuffer", buffer::init_type(py)?)?;
    m.add(
        "ArenaDesyncError",
        py.get_type::<errors::ArenaDesyncError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
