//! `segpool._segpool`: the native half of the `segpool` Python package.
//!
//! A thin binding over the `segpool` crate: each class wraps one crate type
//! and translates (arguments in, errors out, GIL released around blocking
//! waits and large copies). Every protocol decision is the crate's.

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
